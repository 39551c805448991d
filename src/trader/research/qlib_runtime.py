"""Initialise Qlib on an export, offline and without side effects we do not want.

``qlib.init`` with its defaults is China-centric and expects things this platform does not have:
region ``cn`` (lots of 100 shares, ±9.5 % price limits), MLflow tracking in ``./mlruns`` (which
MLflow 3 refuses), one worker on two CPUs. :func:`init_qlib` sets what works here (see
``shared/reference/qlib-offline.md``): region ``us``, every cache off (Qlib's caches need Redis),
an explicit MLflow tracking URI, as many workers as CPUs, Qlib's chatty INFO logging off. It never
downloads anything: the provider is a local folder written by
:class:`~trader.research.qlib_export.QlibExporter`.

Qlib keeps one global configuration per process, so this is idempotent: the same arguments again
cost nothing, different ones re-initialise Qlib.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from trader.errors import TraderError
from trader.research.qlib_export import FREQ, MARKET

#: The arguments of the last successful :func:`init_qlib` in this process.
_current: tuple[Any, ...] | None = None


class QlibNotReadyError(TraderError):
    """There is no Qlib export at the given folder."""


def init_qlib(
    provider_uri: Path,
    *,
    mlflow_uri: str | None = None,
    kernels: int | None = None,
    logging_level: int = logging.WARNING,
) -> None:
    """Point Qlib at the export in ``provider_uri`` (region ``us``, no Redis, no downloads).

    ``mlflow_uri`` is where Qlib's recorder (``qlib.workflow.R``) tracks runs; by default the
    platform's ``MLFLOW_TRACKING_URI`` (SQLite under ``var/``). Nothing is created there until a
    run is recorded. ``kernels`` is Qlib's worker count for computing expressions (default: every
    CPU; on 2 CPUs 2 workers were 1.7x faster than Qlib's default of 1).

    Raises :class:`QlibNotReadyError` when ``provider_uri`` holds no export.
    """
    global _current
    root = provider_uri.expanduser().resolve()
    for needed in (Path("calendars") / f"{FREQ}.txt", Path("instruments") / f"{MARKET}.txt"):
        if not (root / needed).is_file():
            raise QlibNotReadyError(
                f"no Qlib export at {root} ({needed} is missing); run 'trader research export' first"
            )
    if mlflow_uri is None:
        from trader.config import load_settings

        mlflow_uri = load_settings().mlflow_tracking_uri
    workers = kernels if kernels is not None else max(1, os.cpu_count() or 1)
    wanted = (root, mlflow_uri, workers, logging_level)
    if wanted == _current:
        return

    import qlib
    from qlib.constant import REG_US

    qlib.init(
        provider_uri=str(root),
        region=REG_US,  # trade unit 1 share, no price limits, deal at the close
        # Qlib's expression and dataset caches are disk caches guarded by Redis locks: off, so no
        # Redis is needed and nothing is written next to the data.
        expression_cache=None,
        dataset_cache=None,
        calendar_cache=None,
        kernels=workers,
        logging_level=logging_level,
        exp_manager={
            "class": "MLflowExpManager",
            "module_path": "qlib.workflow.expm",
            "kwargs": {"uri": mlflow_uri, "default_exp_name": "trader"},
        },
    )
    _current = wanted


def reset_qlib_state() -> None:
    """Forget the last initialisation, so the next :func:`init_qlib` runs ``qlib.init`` again (tests)."""
    global _current
    _current = None
