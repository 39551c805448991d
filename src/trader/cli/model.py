"""``trader model``: the model registry with release gates (list, show, promote, roll back)."""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from trader.cli.output import console, key_value_table
from trader.config import load_settings
from trader.errors import UsageError

if TYPE_CHECKING:
    from trader.research.registry import ModelRegistry, RegistryEntry
    from trader.strategies.config import PromotionThresholds

app = typer.Typer(
    help=(
        "Model registry: list versions, promote one to production through the release gates (leakage "
        "checks and metric thresholds), roll back. DATABASE_URL says where the registry is."
    ),
    no_args_is_help=True,
)

ByOption = Annotated[
    str | None, typer.Option("--by", help="Who approves (recorded in the registry); default: the OS user.")
]


def _registry() -> ModelRegistry:
    from trader.research.registry import ModelRegistry
    from trader.store.db import make_engine

    return ModelRegistry(make_engine(load_settings().database_url))


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no passwd entry (containers) and no LOGNAME/USER
        return os.environ.get("USER") or "unknown"


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.1f}%" if pct else f"{value:.3f}"


def _checks_text(entry: RegistryEntry) -> str:
    passed = entry.checks_passed
    return "none" if passed is None else ("passed" if passed else "FAILED")


def _out() -> Console:
    """The console; a wide one when printing to a pipe or a file, which has no width to fit (rich
    would squeeze tables into 80 columns and cut paths and versions)."""
    return console if console.is_terminal else Console(highlight=False, width=200)


def _when(entry: RegistryEntry) -> str:
    if entry.approved_at is None:
        return "-"
    return f"{entry.approved_by} {entry.approved_at:%Y-%m-%d %H:%M}"


@app.command("list")
def list_models(
    name: Annotated[str | None, typer.Option("--name", help="Only this model.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (every field) instead of a table.")
    ] = False,
) -> None:
    """List registered model versions: stage, key test metrics, whether the leakage checks passed."""
    entries = _registry().list(name)
    if as_json:
        print(json.dumps([entry.to_dict() for entry in entries], indent=2))
        return
    if not entries:
        console.print(f"no models registered{f' under {name!r}' if name else ''}")
        return
    table = Table(title="Model registry", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("name", "version", "stage"):
        table.add_column(column, no_wrap=True)
    for column in ("sharpe", "max DD", "IC", "ann. return"):
        table.add_column(column, justify="right", no_wrap=True)
    for column in ("checks", "created", "approved"):
        table.add_column(column, no_wrap=column != "approved")
    for e in entries:
        annual = e.metrics.get("annualized_return")
        table.add_row(
            e.model_name,
            e.version,
            e.stage.value,
            _fmt(e.metric("sharpe")),
            _fmt(e.metric("max_drawdown"), pct=True),
            _fmt(e.metric("ic")),
            _fmt(annual if isinstance(annual, float) else None, pct=True),
            _checks_text(e),
            f"{e.created_at:%Y-%m-%d %H:%M}",
            _when(e),
        )
    _out().print(table)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str, typer.Argument(help="Version.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show one version: stage, approval, decision reason, metrics, every check and its model card."""
    from trader.research.model_card import MODEL_CARD_FILE
    from trader.research.registry import artifact_path

    entry = _registry().get(name, version)
    card = _card_path(entry)
    if as_json:
        print(json.dumps({**entry.to_dict(), "model_card": str(card) if card else None}, indent=2))
        return
    rows = {
        "stage": entry.stage.value,
        "artifact": entry.artifact_uri,
        "MLflow run id": entry.mlflow_run_id or "-",
        "created": entry.created_at.isoformat(timespec="seconds"),
        "approved": _when(entry),
        "decision": entry.decision_reason or "-",
        "checks": entry.checks.get("summary", "none recorded") if entry.checks else "none recorded",
    }
    folder = artifact_path(entry.artifact_uri)
    out = _out()
    where = f"no {MODEL_CARD_FILE} in {folder}" if folder else "the artifact is not a local folder"
    rows["model card"] = str(card) if card else f"none ({where})"
    out.print(key_value_table(f"{entry.model_name} {entry.version}", rows))
    metrics = {key: str(value) for key, value in sorted(entry.metrics.items())}
    out.print(key_value_table("metrics", metrics) if metrics else "metrics: none recorded")
    checks = Table(title="checks", title_justify="left")
    for column in ("check", "result", "detail"):
        checks.add_column(column)
    for item in entry.checks.get("checks", []):
        checks.add_row(
            str(item.get("name")), "pass" if item.get("passed") else "FAIL", str(item.get("detail"))
        )
    if checks.row_count:
        out.print(checks)


def _card_path(entry: RegistryEntry) -> Path | None:
    from trader.research.model_card import MODEL_CARD_FILE
    from trader.research.registry import artifact_path

    folder = artifact_path(entry.artifact_uri)
    if folder is None or not (folder / MODEL_CARD_FILE).is_file():
        return None
    return folder / MODEL_CARD_FILE


def _thresholds(entry: RegistryEntry, config: str | None) -> tuple[PromotionThresholds, str]:
    """The thresholds of the gate and where they came from: ``--config``, the model's own
    ``strategy.yaml``, the built-in strategy of that name, or the defaults."""
    from trader.research.registry import artifact_path
    from trader.strategies.config import (
        BUILTIN_STRATEGIES,
        PromotionThresholds,
        StrategyConfigError,
        load_strategy_config,
    )

    if config is not None:
        try:
            return load_strategy_config(config).promotion, f"--config {config}"
        except StrategyConfigError as exc:
            raise UsageError(f"--config: {exc}") from None
    folder = artifact_path(entry.artifact_uri)
    if folder is not None and (folder / "strategy.yaml").is_file():
        return load_strategy_config(folder / "strategy.yaml").promotion, str(folder / "strategy.yaml")
    if entry.model_name in BUILTIN_STRATEGIES:
        return load_strategy_config(entry.model_name).promotion, f"built-in strategy {entry.model_name}"
    return PromotionThresholds(), "defaults"


def _record_on_card(entry: RegistryEntry, status: str, reason: str, by: str) -> None:
    """Re-render the model card with the decision, when the artifact has one (best effort)."""
    from datetime import UTC, datetime

    from trader.errors import TraderError
    from trader.research.model_card import DecisionStatus, PromotionDecision, record_decision

    card = _card_path(entry)
    if card is None:
        return
    decision = PromotionDecision(
        status=DecisionStatus(status), reason=reason, decided_by=by, decided_at=datetime.now(UTC)
    )
    try:
        record_decision(card, decision)
    except (TraderError, OSError) as exc:
        print(f"trader: warning: model card {card} not updated: {exc}", file=sys.stderr)


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str, typer.Argument(help="Version to promote.")],
    to: Annotated[str, typer.Option("--to", help="Target stage: production.")],
    by: ByOption = None,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            help="Strategy (built-in name or YAML path) whose promotion thresholds apply; default: the "
            "model's own strategy.yaml.",
        ),
    ] = None,
) -> None:
    """Promote a version to production if it passes the release gates; exit 1 with the reasons if not.

    The gates: every leakage check recorded and passed; Sharpe, |max drawdown|, IC (and turnover if
    limited) meet the strategy's promotion thresholds. The previous production version is archived.
    """
    from trader.research.registry import PromotionRefusedError

    approver = by or _os_user()
    registry = _registry()
    entry = registry.get(name, version)
    thresholds, source = _thresholds(entry, config)
    console.print(f"thresholds from {source}: {thresholds.model_dump_json()}")
    try:
        result = registry.promote(name, version, to=to, approved_by=approver, thresholds=thresholds)
    except PromotionRefusedError as refused:
        console.print(f"REFUSED: {name} {version} stays {entry.stage.value}")
        for reason in refused.reasons:
            console.print(f"  - {reason}")
        _record_on_card(entry, "refused", "; ".join(refused.reasons), approver)
        raise typer.Exit(1) from None
    replaced = f"; {result.replaced.version} archived" if result.replaced else ""
    console.print(f"APPROVED: {name} {version} is now in production{replaced}")
    console.print(f"  {result.reason}")
    _record_on_card(result.promoted, "approved", result.reason, approver)


@app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="Model name.")],
    by: ByOption = None,
) -> None:
    """Archive the production version and put the most recently approved earlier version back."""
    approver = by or _os_user()
    result = _registry().rollback(name, approved_by=approver)
    console.print(
        f"ROLLED BACK: {name} {result.restored.version} is in production again; "
        f"{result.retired.version} archived"
    )
    console.print(f"  {result.reason}")
    _record_on_card(result.retired, "rolled_back", result.retired.decision_reason or "rolled back", approver)
    _record_on_card(result.restored, "approved", result.reason, approver)
