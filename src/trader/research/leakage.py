"""Leakage and validity checks: the release gate a model must pass before it may reach production.

Four checks, each a :class:`CheckResult` (``name``, ``passed``, ``detail``), gathered into a
:class:`CheckReport` that is saved next to each backtest (``checks.json``) and stored in the model
registry row's ``checks`` column; :meth:`trader.research.registry.ModelRegistry.promote` refuses a
model whose report did not pass.

- :func:`segments_disjoint_with_gap`: train, valid and test do not overlap and at least as many
  sessions as the label looks ahead (read from the label expressions, and never fewer than the
  strategy's ``label_horizon``) separate one segment's end from the next one's start (a label on
  the last train day reads into the next segment otherwise).
- :func:`labels_not_in_features`: no label expression or name is a feature, and no feature reads a
  future value (``Ref($x, -k)``), by static inspection of the expressions.
- :func:`features_are_point_in_time`: the perturbation test. The export of a few symbols is copied,
  every value after a cutoff date t is altered, the features are computed with Qlib on the original
  and the altered data, and every value on a date <= t must be identical. A feature that changes
  reads the future; the check names it.
- :func:`universe_is_point_in_time`: every scored (date, symbol) lies inside one of the symbol's
  tradable listings, and the export's instrument ranges lie inside the listings.

:func:`run_checks` runs them all; a check that cannot run fails (a release gate fails closed).
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
import shutil
import tempfile
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from itertools import combinations, pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from trader.data.store import write_atomic
from trader.errors import TraderError
from trader.research.qlib_export import (
    FREQ,
    MARKET,
    decode_feature,
    encode_feature,
    feature_folder,
)
from trader.strategies.config import DateRange, Segments

if TYPE_CHECKING:
    import pandas as pd

#: Names of the checks, as they appear in reports and in the registry.
SEGMENTS_CHECK = "segments_disjoint_with_gap"
LABELS_CHECK = "labels_not_in_features"
FEATURES_CHECK = "features_point_in_time"
UNIVERSE_CHECK = "universe_point_in_time"
#: Every check a model must have passed before it may reach production (the release gate asks for
#: each by name, so a report that leaves one out does not pass).
ALL_CHECKS = (SEGMENTS_CHECK, LABELS_CHECK, FEATURES_CHECK, UNIVERSE_CHECK)

#: The perturbation test's defaults: symbols sampled, sessions compared before each cutoff, sessions
#: of altered data computed after it (so an operator that reads ahead has data to read).
SAMPLE_SYMBOLS = 3
WINDOW_SESSIONS = 120
AFTER_SESSIONS = 20
#: Suffix of the altered copy of a symbol in the perturbation test's temporary export.
_ALTERED = ".pit"
_SHOWN = 5  # examples listed in a detail message


class LeakageCheckError(TraderError):
    """A check cannot run on the inputs it was given (a missing export, an unknown symbol, ...)."""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: ``detail`` says what was checked and, on failure, what is wrong."""

    name: str
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True)
class CheckReport:
    """The results of a run of the checks. It passes when there is at least one result and all pass."""

    results: tuple[CheckResult, ...]
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(result.passed for result in self.results)

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(result for result in self.results if not result.passed)

    def summary(self) -> str:
        """One line: ``4/4 checks passed`` or ``3/4 checks passed; failed: features_point_in_time``."""
        good = sum(result.passed for result in self.results)
        text = f"{good}/{len(self.results)} checks passed"
        if self.failed:
            text += "; failed: " + ", ".join(result.name for result in self.failed)
        return text

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in ``checks.json`` and in the registry's ``checks`` column."""
        return {
            "passed": self.passed,
            "summary": self.summary(),
            "created_at": self.created_at.isoformat(),
            "checks": [result.to_dict() for result in self.results],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Any) -> CheckReport:
        """Read back :meth:`to_dict`; :class:`LeakageCheckError` when the shape is wrong."""
        try:
            results = tuple(
                CheckResult(name=str(item["name"]), passed=item["passed"] is True, detail=str(item["detail"]))
                for item in data["checks"]
            )
            created = datetime.fromisoformat(str(data["created_at"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise LeakageCheckError(f"not a check report ({type(exc).__name__}: {exc})") from None
        return cls(results, created if created.tzinfo else created.replace(tzinfo=UTC))

    def save(self, path: Path) -> None:
        """Write :meth:`to_json` to ``path`` atomically (temporary file, fsync, rename)."""
        write_atomic(path, (self.to_json() + "\n").encode())

    @classmethod
    def load(cls, path: Path) -> CheckReport:
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise LeakageCheckError(f"cannot read the check report {path}: {exc}") from None


# --------------------------------------------------------------------------------------------------
# Date segments
# --------------------------------------------------------------------------------------------------


def segments_disjoint_with_gap(
    segments: Segments, calendar_sessions: Sequence[date], label_exprs: Sequence[str] = ()
) -> CheckResult:
    """Train, valid and test do not overlap, come in this order, each holds a session, and at least
    as many sessions as the label looks ahead lie strictly between one segment's end and the next
    start: the larger of ``segments.label_horizon`` and what ``label_exprs`` read
    (:func:`label_horizon`), so a horizon set too short in a strategy file cannot pass.

    ``calendar_sessions`` must cover the segments (the export's ``calendars/day_future.txt``, or
    :func:`trader.data.calendar.trading_calendar`), or the gaps are undercounted.
    """
    sessions = sorted(set(calendar_sessions))
    if not sessions:
        raise LeakageCheckError("calendar_sessions is empty: pass the export's calendar")
    named = (("train", segments.train), ("valid", segments.valid), ("test", segments.test))
    horizon = max(segments.label_horizon, label_horizon(label_exprs))
    problems: list[str] = []
    for name, span in named:
        if _sessions_in(sessions, span.start, span.end) == 0:
            problems.append(f"{name} {_show(span)} holds no session of the calendar")
    for (a, first), (b, second) in combinations(named, 2):
        if first.start <= second.end and second.start <= first.end:
            problems.append(f"{a} {_show(first)} and {b} {_show(second)} overlap")
    for (a, first), (b, second) in pairwise(named):
        if second.end < first.start:
            problems.append(f"{b} {_show(second)} comes before {a} {_show(first)}")
        elif first.end < second.start:
            gap = _sessions_in(sessions, first.end, second.start, inclusive=False)
            if gap < horizon:
                problems.append(
                    f"only {gap} session(s) between {a} end {first.end} and {b} start {second.start}; "
                    f"the label looks {horizon} sessions ahead, so {b} must start on or after "
                    f"{_earliest_start(sessions, first.end, horizon)}"
                )
    if problems:
        return CheckResult(SEGMENTS_CHECK, False, "; ".join(problems))
    detail = (
        f"train {_show(segments.train)}, valid {_show(segments.valid)}, test {_show(segments.test)}: "
        f"disjoint, in order, at least {horizon} session(s) apart (label horizon {horizon})"
    )
    return CheckResult(SEGMENTS_CHECK, True, detail)


def _show(span: DateRange) -> str:
    return f"{span.start}..{span.end}"


def _sessions_in(sessions: Sequence[date], start: date, end: date, *, inclusive: bool = True) -> int:
    if inclusive:
        return max(0, bisect_right(sessions, end) - bisect_left(sessions, start))
    return max(0, bisect_left(sessions, end) - bisect_right(sessions, start))


def _earliest_start(sessions: Sequence[date], end: date, horizon: int) -> str:
    index = bisect_right(sessions, end) + horizon  # the first session after `horizon` free ones
    return sessions[index].isoformat() if index < len(sessions) else f"{horizon + 1} sessions after {end}"


# --------------------------------------------------------------------------------------------------
# Labels and look-ahead references (static)
# --------------------------------------------------------------------------------------------------

_FIELD = re.compile(r"\$\$?([A-Za-z_]\w*)")


def future_references(expression: str) -> list[str]:
    """The ``Ref(..., -k)`` calls (k > 0) in a Qlib expression: each reads a value k sessions ahead.

    Qlib expressions are Python syntax once the ``$field`` names are replaced, so this parses them
    with :mod:`ast` instead of pattern-matching (nested calls and spacing do not matter), and
    evaluates constant arithmetic in an offset (``Ref($close, 0-1)`` reads tomorrow too). A call
    whose offset is not a constant is listed as well: it cannot be shown to look back.
    Raises :class:`LeakageCheckError` when the expression does not parse.
    """
    tree = _parse(expression)
    found = []
    for node, offset in _ref_offsets(tree):
        if offset is None or offset < 0:
            shown = _FIELD_BACK.sub(r"$\1", ast.unparse(node))
            # An offset that is not a number cannot be proven to look back: it counts as a finding.
            found.append(shown if offset is not None else f"{shown} (offset is not a constant)")
    return found


def _parse(expression: str) -> ast.AST:
    source = _FIELD.sub(lambda m: f"__field_{m.group(1)}", expression)
    try:
        return ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise LeakageCheckError(f"cannot parse the expression {expression!r}: {exc.msg}") from None


def label_horizon(label_exprs: Sequence[str]) -> int:
    """How many sessions ahead the labels look: the largest ``k`` of their ``Ref(..., -k)`` calls.

    This, not a number a strategy file states, is the gap segments need: a label on a segment's
    last day reads the close ``k`` sessions later. Raises :class:`LeakageCheckError` for a label
    that does not parse or whose offset is not a constant.
    """
    horizon = 0
    for expression in label_exprs:
        tree = _parse(expression)
        for node, offset in _ref_offsets(tree):
            if offset is None:
                raise LeakageCheckError(
                    f"label {expression!r}: the offset of {ast.unparse(node)} is not a constant"
                )
            horizon = max(horizon, math.ceil(-offset))
    return horizon


def _ref_offsets(tree: ast.AST) -> Iterator[tuple[ast.Call, float | None]]:
    """Every ``Ref`` call with its offset (``None`` when it is not constant arithmetic)."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        if node.func.id == "Ref" and len(node.args) >= 2:
            yield node, _constant(node.args[1])


def _constant(node: ast.AST) -> float | None:
    """The value of constant arithmetic (``-2``, ``0-1``, ``-2+1``, ``2*-1``), else ``None``.

    Qlib evaluates an expression as Python, so ``Ref($close, 0-1)`` reads tomorrow like ``-1``.
    """
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return None if isinstance(node.value, bool) else float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        inner = _constant(node.operand)
        return None if inner is None else (-inner if isinstance(node.op, ast.USub) else inner)
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        left, right = _constant(node.left), _constant(node.right)
        if left is None or right is None:
            return None
        return _ARITHMETIC[type(node.op)](left, right)
    return None


_ARITHMETIC: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
}


_FIELD_BACK = re.compile(r"__field_(\w+)")


def _normal(expression: str) -> str:
    return "".join(expression.split())


def labels_not_in_features(
    feature_exprs: Sequence[str],
    feature_names: Sequence[str],
    label_exprs: Sequence[str],
    label_names: Sequence[str],
) -> CheckResult:
    """No label (by expression, ignoring spaces, or by name) is among the features, and no feature
    reads a future value through a negative ``Ref`` offset."""
    if len(feature_exprs) != len(feature_names):
        raise LeakageCheckError(
            f"feature_exprs ({len(feature_exprs)}) and feature_names ({len(feature_names)}) differ in length"
        )
    problems: list[str] = []
    by_expr = {_normal(expr): name for expr, name in zip(feature_exprs, feature_names, strict=True)}
    for label_expr, label_name in zip(label_exprs, label_names, strict=False):
        if _normal(label_expr) in by_expr:
            problems.append(
                f"feature {by_expr[_normal(label_expr)]} is the label {label_name} ({label_expr})"
            )
    for label_name in set(label_names) & set(feature_names):
        problems.append(f"the label name {label_name} is also a feature name")
    for expr, name in zip(feature_exprs, feature_names, strict=True):
        try:
            future = future_references(expr)
        except LeakageCheckError as exc:
            problems.append(f"feature {name}: {exc}")
            continue
        if future:
            problems.append(f"feature {name} = {expr} reads the future: {', '.join(future)}")
    if problems:
        return CheckResult(LABELS_CHECK, False, "; ".join(problems))
    detail = (
        f"{len(feature_exprs)} features: no label among them ({', '.join(label_names) or 'no labels'}) "
        "and no negative Ref offset"
    )
    return CheckResult(LABELS_CHECK, True, detail)


# --------------------------------------------------------------------------------------------------
# Perturbation test (Qlib)
# --------------------------------------------------------------------------------------------------


def read_calendar(provider_uri: Path, *, future: bool = False) -> list[date]:
    """The sessions of a Qlib export (``calendars/day.txt``; with ``future``, ``day_future.txt`` when
    it exists, which also holds the sessions after the last bar)."""
    folder = provider_uri / "calendars"
    path = folder / f"{FREQ}_future.txt" if future else folder / f"{FREQ}.txt"
    if future and not path.is_file():
        path = folder / f"{FREQ}.txt"
    try:
        lines = path.read_text(encoding="utf-8").split()
    except OSError as exc:
        raise LeakageCheckError(f"no Qlib export at {provider_uri} ({path.name}: {exc.strerror})") from None
    return [date.fromisoformat(line) for line in lines]


def read_instruments(provider_uri: Path, market: str = MARKET) -> pl.DataFrame:
    """``instruments/<market>.txt`` of an export as ``symbol, start, end`` (dates)."""
    path = provider_uri / "instruments" / f"{market}.txt"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LeakageCheckError(f"no Qlib export at {provider_uri} ({path.name}: {exc.strerror})") from None
    rows = [line.split("\t") for line in text.splitlines() if line.strip()]
    return pl.DataFrame(
        {
            "symbol": [row[0] for row in rows],
            "start": [date.fromisoformat(row[1]) for row in rows],
            "end": [date.fromisoformat(row[2]) for row in rows],
        },
        schema={"symbol": pl.String, "start": pl.Date, "end": pl.Date},
    )


@dataclass(frozen=True)
class _Plan:
    """What the perturbation test computes: symbols, cutoff session indices, the session range."""

    symbols: tuple[str, ...]
    cutoffs: tuple[int, ...]  # calendar indices
    first: int
    last: int
    window: int


def features_are_point_in_time(
    feature_exprs: Sequence[str],
    feature_names: Sequence[str],
    provider_uri: Path,
    sample_symbols: Sequence[str] | None = None,
    cutoff_dates: Sequence[date] | None = None,
    *,
    window: int = WINDOW_SESSIONS,
    after: int = AFTER_SESSIONS,
    seed: int = 0,
) -> CheckResult:
    """The perturbation test: features on dates <= t must not change when data after t is altered.

    For each cutoff t (default: two sessions, at a half and three quarters of the calendar) and each
    sampled symbol (default: :data:`SAMPLE_SYMBOLS` symbols listed over every window), an altered
    copy of the symbol is written to a temporary export in which every field's values after t are
    multiplied by random factors (a different factor per field and day). Qlib computes the features
    on the originals and the copies over ``window`` sessions up to t plus ``after`` sessions past
    it, and every value on a date <= t must be identical (NaN equal to NaN). The detail names each
    feature that differs.

    Qlib is re-initialised on the temporary export and, afterwards, back on the export that
    :func:`~trader.research.qlib_runtime.init_qlib` last initialised (if any).
    """
    if len(feature_exprs) != len(feature_names):
        raise LeakageCheckError(
            f"feature_exprs ({len(feature_exprs)}) and feature_names ({len(feature_names)}) differ in length"
        )
    if not feature_exprs:
        raise LeakageCheckError("no features to check")
    root = provider_uri.expanduser().resolve()
    calendar = read_calendar(root)
    plan = _plan(root, calendar, sample_symbols, cutoff_dates, window=window, after=after)
    with tempfile.TemporaryDirectory(prefix="trader-pit-") as tmp:
        work = Path(tmp)
        instruments = _write_altered_export(root, work, plan, calendar, seed)
        frame = _compute_features(work, instruments, feature_exprs, calendar[plan.first], calendar[plan.last])
    frame.columns = list(feature_names)
    leaks = _compare(frame, plan, calendar, feature_names)
    where = (
        f"{len(plan.symbols)} symbol(s) ({', '.join(plan.symbols)}), cutoff(s) "
        f"{', '.join(calendar[i].isoformat() for i in plan.cutoffs)}, {plan.window} sessions each"
    )
    if leaks:
        by_name = dict(zip(feature_names, feature_exprs, strict=True))
        shown = "; ".join(
            f"{name} = {by_name[name]} (first differs at {symbol} {day})"
            for name, symbol, day in leaks[:_SHOWN]
        )
        more = f"; and {len(leaks) - _SHOWN} more" if len(leaks) > _SHOWN else ""
        names = ", ".join(name for name, _, _ in leaks)
        detail = (
            f"{len(leaks)} feature(s) change on dates <= t when data after t is altered (they read "
            f"the future): {names}. {shown}{more} [{where}]"
        )
        return CheckResult(FEATURES_CHECK, False, detail)
    detail = f"{len(feature_exprs)} features unchanged on dates <= t when data after t is altered [{where}]"
    return CheckResult(FEATURES_CHECK, True, detail)


def _plan(
    root: Path,
    calendar: Sequence[date],
    sample_symbols: Sequence[str] | None,
    cutoff_dates: Sequence[date] | None,
    *,
    window: int,
    after: int,
) -> _Plan:
    if window < 1 or after < 1:
        raise LeakageCheckError(f"window ({window}) and after ({after}) must be at least 1 session")
    if len(calendar) < window + after + 1:
        raise LeakageCheckError(
            f"the export holds {len(calendar)} sessions; the perturbation test needs at least "
            f"{window + after + 1} (window {window} + after {after} + 1)"
        )
    if cutoff_dates:
        cutoffs = sorted({_session_index(calendar, day, window) for day in cutoff_dates})
    else:
        cutoffs = sorted({max(window - 1, len(calendar) // 2), max(window - 1, len(calendar) * 3 // 4)})
    first = cutoffs[0] - window + 1
    last = min(len(calendar) - 1, cutoffs[-1] + after)
    ranges = read_instruments(root)
    symbols = _sample(ranges, calendar, cutoffs, window, sample_symbols)
    for symbol in symbols:
        if not (root / "features" / feature_folder(symbol)).is_dir():
            raise LeakageCheckError(f"sample symbol {symbol} has no feature files in {root}")
    return _Plan(tuple(symbols), tuple(cutoffs), first, last, window)


def _session_index(calendar: Sequence[date], day: date, window: int) -> int:
    """Index of the last session on or before ``day``, with ``window`` sessions up to it."""
    index = bisect_right(calendar, day) - 1
    if index < window - 1 or index >= len(calendar) - 1:
        raise LeakageCheckError(
            f"cutoff date {day}: needs {window} sessions up to it and one after it inside the export "
            f"({calendar[0]}..{calendar[-1]}); pick a date between {calendar[window - 1]} and {calendar[-2]}"
        )
    return index


def _sample(
    ranges: pl.DataFrame,
    calendar: Sequence[date],
    cutoffs: Sequence[int],
    window: int,
    wanted: Sequence[str] | None,
) -> list[str]:
    if wanted:
        known = set(ranges.get_column("symbol").to_list())
        unknown = sorted(set(wanted) - known)
        if unknown:
            raise LeakageCheckError(f"sample symbols not in the export's instruments: {', '.join(unknown)}")
        return sorted(set(wanted))
    # Symbols listed over every window (so the comparison is not all NaN), spread over the list.
    need_from, need_to = calendar[cutoffs[0] - window + 1], calendar[cutoffs[-1]]
    covering = sorted(
        set(
            ranges.filter((pl.col("start") <= need_from) & (pl.col("end") >= need_to))
            .get_column("symbol")
            .to_list()
        )
    )
    if not covering:
        raise LeakageCheckError(
            f"no symbol is listed from {need_from} to {need_to}; pass sample_symbols or cutoff_dates"
        )
    if len(covering) <= SAMPLE_SYMBOLS:
        return covering
    step = len(covering) / SAMPLE_SYMBOLS
    return [covering[int(i * step)] for i in range(SAMPLE_SYMBOLS)]


def _altered_name(symbol: str, cutoff_number: int) -> str:
    return f"{symbol}{_ALTERED}{cutoff_number}"


def _write_altered_export(
    root: Path, work: Path, plan: _Plan, calendar: Sequence[date], seed: int
) -> list[str]:
    """Write the temporary export: the calendar, each sampled symbol as it is, and one altered copy
    of it per cutoff. Returns the instruments to compute."""
    shutil.copytree(root / "calendars", work / "calendars")
    rng = np.random.default_rng(seed)
    instruments: list[str] = []
    for symbol in plan.symbols:
        source = root / "features" / feature_folder(symbol)
        shutil.copytree(source, work / "features" / feature_folder(symbol))
        instruments.append(symbol)
        for number, cutoff in enumerate(plan.cutoffs):
            altered = _altered_name(symbol, number)
            for path in sorted(source.glob(f"*.{FREQ}.bin")):
                start, values = decode_feature(path.read_bytes())
                changed = values.copy()
                tail = max(0, cutoff + 1 - start)  # positions after the cutoff session
                if tail < changed.size:
                    factors = rng.uniform(1.1, 1.9, changed.size - tail)
                    # Up or down at random, a different factor per field and per day.
                    factors = np.where(rng.random(factors.size) < 0.5, factors, 1.0 / factors)
                    changed[tail:] = (changed[tail:] * factors).astype(np.float32)
                target = work / "features" / feature_folder(altered) / path.name
                write_atomic(target, encode_feature(start, changed))
            instruments.append(altered)
    lines = "".join(f"{name}\t{calendar[0]}\t{calendar[-1]}\n" for name in instruments)
    write_atomic(work / "instruments" / f"{MARKET}.txt", lines.encode())
    return instruments


def _compute_features(
    work: Path, instruments: list[str], feature_exprs: Sequence[str], start: date, end: date
) -> pd.DataFrame:
    """Qlib's values of ``feature_exprs`` on the temporary export; Qlib is put back afterwards."""
    from trader.research import qlib_runtime

    previous = qlib_runtime._current  # the export init_qlib last pointed Qlib at, if any
    try:
        qlib_runtime.reset_qlib_state()
        qlib_runtime.init_qlib(work, mlflow_uri=f"sqlite:///{work / 'mlflow.db'}")
        from qlib.data import D

        try:
            return D.features(instruments, list(feature_exprs), start.isoformat(), end.isoformat())
        except Exception as exc:
            raise LeakageCheckError(
                f"Qlib could not compute the features ({type(exc).__name__}: {exc})"
            ) from None
    finally:
        qlib_runtime.reset_qlib_state()
        if previous is not None:
            provider, mlflow_uri, kernels, level = previous
            qlib_runtime.init_qlib(provider, mlflow_uri=mlflow_uri, kernels=kernels, logging_level=level)


def _compare(
    frame: pd.DataFrame, plan: _Plan, calendar: Sequence[date], names: Sequence[str]
) -> list[tuple[str, str, date]]:
    """``(feature, symbol, first date)`` per feature whose values on dates <= a cutoff differ between
    the original and the altered copy, in the features' order."""
    import pandas as pd

    dates = pd.DatetimeIndex(frame.index.get_level_values("datetime")).date
    symbols = frame.index.get_level_values("instrument")
    values = frame.to_numpy(dtype=np.float64)
    differing: dict[str, list[tuple[str, date]]] = {}
    compared = 0
    for number, cutoff in enumerate(plan.cutoffs):
        lo, hi = calendar[cutoff - plan.window + 1], calendar[cutoff]
        for symbol in plan.symbols:
            original = _rows(values, symbols, dates, symbol, lo, hi)
            altered = _rows(values, symbols, dates, _altered_name(symbol, number), lo, hi)
            if original[0].shape != altered[0].shape or original[1] != altered[1]:
                raise LeakageCheckError(f"{symbol}: Qlib returned different dates for the altered copy")
            compared += original[0].shape[0]
            same = (original[0] == altered[0]) | (np.isnan(original[0]) & np.isnan(altered[0]))
            for column in np.flatnonzero(~same.all(axis=0)).tolist():
                row = int(np.flatnonzero(~same[:, column])[0])
                differing.setdefault(names[column], []).append((symbol, original[1][row]))
    if compared == 0:
        raise LeakageCheckError("Qlib returned no rows for the sampled symbols: nothing was compared")
    order = {name: i for i, name in enumerate(names)}
    return [
        (name, *min(hits, key=lambda hit: hit[1]))
        for name, hits in sorted(differing.items(), key=lambda item: order[item[0]])
    ]


def _rows(
    values: np.ndarray[Any, Any],
    symbols: pd.Index,
    dates: np.ndarray[Any, Any],
    symbol: str,
    lo: date,
    hi: date,
) -> tuple[np.ndarray[Any, Any], list[date]]:
    mask = (symbols == symbol) & (dates >= lo) & (dates <= hi)
    return values[mask], list(dates[mask])


# --------------------------------------------------------------------------------------------------
# Point-in-time universe
# --------------------------------------------------------------------------------------------------


def _as_scores(predictions: pl.DataFrame | pd.DataFrame) -> pl.DataFrame:
    """``date, symbol`` of a predictions table (Polars, or pandas with columns or a Qlib index)."""
    if not isinstance(predictions, pl.DataFrame):
        flat = predictions.reset_index() if "symbol" not in predictions.columns else predictions
        flat = flat.rename(columns={"datetime": "date", "instrument": "symbol"})
        predictions = pl.from_pandas(flat[["date", "symbol"]])
    missing = {"date", "symbol"} - set(predictions.columns)
    if missing:
        raise LeakageCheckError(f"predictions lack the column(s) {', '.join(sorted(missing))}")
    return predictions.select(pl.col("date").cast(pl.Date), pl.col("symbol").cast(pl.String)).unique()


def _listings(universe: pl.DataFrame) -> pl.DataFrame:
    missing = {"symbol", "start_date", "end_date"} - set(universe.columns)
    if missing:
        raise LeakageCheckError(f"the universe lacks the column(s) {', '.join(sorted(missing))}")
    tradable = pl.col("tradable").fill_null(True) if "tradable" in universe.columns else pl.lit(True)
    return universe.filter(tradable).select(
        pl.col("symbol").cast(pl.String), pl.col("start_date").cast(pl.Date), pl.col("end_date").cast(pl.Date)
    )


def _inside(frame: pl.DataFrame, listings: pl.DataFrame, first: str, last: str) -> pl.DataFrame:
    """Rows of ``frame`` whose [first, last] lies inside some listing of their symbol."""
    key = list(frame.columns)
    return (
        frame.join(listings, on="symbol", how="inner")
        .filter(
            (pl.col("start_date") <= pl.col(first))
            & (pl.col("end_date").is_null() | (pl.col(last) <= pl.col("end_date")))
        )
        .select(key)
        .unique()
    )


def universe_is_point_in_time(
    predictions: pl.DataFrame | pd.DataFrame,
    universe: pl.DataFrame,
    instruments: pl.DataFrame | None = None,
) -> CheckResult:
    """Every scored (date, symbol) lies inside one of the symbol's tradable listings in ``universe``
    (:data:`~trader.data.bars.LISTING_SCHEMA`, e.g. ``UniverseStore(paths).read()``; a null end date
    means still listed), and every range of ``instruments`` (``symbol, start, end``: the export's
    ``instruments/all.txt``, see :func:`read_instruments`) lies inside one of them too.

    A score outside a listing means the model was trained or tested on a symbol before it was
    listed or after it was delisted: knowledge of survivorship the live path does not have.
    """
    scores = _as_scores(predictions)
    listings = _listings(universe)
    problems: list[str] = []
    outside = scores.join(_inside(scores, listings, "date", "date"), on=["date", "symbol"], how="anti")
    if not outside.is_empty():
        examples = outside.sort("date", "symbol").head(_SHOWN)
        shown = ", ".join(f"{s} {d}" for d, s in examples.iter_rows())
        symbols = outside.get_column("symbol").n_unique()
        problems.append(
            f"{outside.height} of {scores.height} scored (date, symbol) pairs lie outside the symbol's "
            f"listings ({symbols} symbol(s)), e.g. {shown}"
        )
    checked = f"{scores.height} scored (date, symbol) pairs inside the listings"
    if instruments is not None:
        ranges = instruments.select("symbol", "start", "end").unique()
        bad = ranges.join(
            _inside(ranges, listings, "start", "end"), on=["symbol", "start", "end"], how="anti"
        )
        if not bad.is_empty():
            shown = ", ".join(f"{s} {a}..{b}" for s, a, b in bad.sort("symbol").head(_SHOWN).iter_rows())
            problems.append(
                f"{bad.height} instrument range(s) of the export lie outside the listings: {shown}"
            )
        checked += f"; {ranges.height} instrument ranges inside the listings"
    if problems:
        return CheckResult(UNIVERSE_CHECK, False, "; ".join(problems))
    return CheckResult(UNIVERSE_CHECK, True, checked)


# --------------------------------------------------------------------------------------------------
# All of them
# --------------------------------------------------------------------------------------------------


def run_checks(
    *,
    segments: Segments,
    feature_exprs: Sequence[str],
    feature_names: Sequence[str],
    label_exprs: Sequence[str],
    label_names: Sequence[str],
    provider_uri: Path,
    predictions: pl.DataFrame | pd.DataFrame,
    universe: pl.DataFrame,
    sample_symbols: Sequence[str] | None = None,
    cutoff_dates: Sequence[date] | None = None,
) -> CheckReport:
    """Run every check on one trained model and return the report.

    The calendar and instrument ranges come from the export at ``provider_uri`` (the sessions of
    ``day_future.txt``, so a test segment that ends after the last bar is still counted).
    A check that cannot run (bad input, a Qlib error) is a failed result saying why: a release
    gate fails closed.
    """
    checks: list[tuple[str, Callable[[], CheckResult]]] = [
        (
            SEGMENTS_CHECK,
            lambda: segments_disjoint_with_gap(
                segments, read_calendar(provider_uri, future=True), label_exprs
            ),
        ),
        (
            LABELS_CHECK,
            lambda: labels_not_in_features(feature_exprs, feature_names, label_exprs, label_names),
        ),
        (
            FEATURES_CHECK,
            lambda: features_are_point_in_time(
                feature_exprs, feature_names, provider_uri, sample_symbols, cutoff_dates
            ),
        ),
        (
            UNIVERSE_CHECK,
            lambda: universe_is_point_in_time(predictions, universe, read_instruments(provider_uri)),
        ),
    ]
    return CheckReport(tuple(_run_one(name, check) for name, check in checks))


def _run_one(name: str, check: Callable[[], CheckResult]) -> CheckResult:
    try:
        return check()
    except Exception as exc:  # fail closed, and say why
        return CheckResult(name, False, f"could not run: {type(exc).__name__}: {exc}")
