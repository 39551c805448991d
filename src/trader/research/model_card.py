"""MODEL_CARD.md: what a trained model is, how it was tested and whether it may trade.

:func:`render_model_card` turns a :class:`ModelCardData` into Markdown with these sections: the
model (name, version, MLflow run id, artifact), data and segments (train / valid / test ranges,
label horizon), test-segment metrics (annualized return, Sharpe, information ratio, max drawdown,
turnover, IC, Rank IC, ICIR, benchmark), cost scenarios, cost assumption (commission, fees,
slippage), features (the list and the top-N importance), drift notes (test IC against valid IC,
the score distribution, the data fingerprint), the leakage and validity checks, and the promotion
decision with its reason (pending, approved or refused).

:func:`write_model_card` writes ``MODEL_CARD.md`` atomically and, next to it, ``model_card.json`` (the
card's data), so that :func:`record_decision` can re-render the card when the registry promotes or
refuses the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trader.data.store import write_atomic
from trader.errors import TraderError
from trader.research.leakage import CheckReport
from trader.strategies.config import Costs, Segments

MODEL_CARD_FILE = "MODEL_CARD.md"
MODEL_CARD_DATA_FILE = "model_card.json"

#: Test IC below this fraction of the valid IC is called out as a degradation in the drift notes.
IC_DEGRADATION = 0.5

#: The metrics the card shows first, in this order, with their labels and formats (``pct``: a
#: fraction shown as a percentage). Other metrics in the data follow in name order.
KNOWN_METRICS: tuple[tuple[str, str, str], ...] = (
    ("annualized_return", "Annualized return", "pct"),
    ("annualized_return_before_costs", "Annualized return before costs", "pct"),
    ("total_return", "Total return", "pct"),
    ("benchmark_annualized_return", "Benchmark annualized return", "pct"),
    ("excess_annualized_return", "Excess annualized return", "pct"),
    ("sharpe", "Sharpe ratio", "num"),
    ("benchmark_sharpe", "Benchmark Sharpe ratio", "num"),
    ("information_ratio", "Information ratio", "num"),
    ("max_drawdown", "Max drawdown", "pct"),
    ("turnover", "Turnover (mean daily)", "pct"),
    ("mean_daily_turnover", "Turnover (mean daily)", "pct"),
    ("ic", "IC (mean daily)", "ic"),
    ("rank_ic", "Rank IC (mean daily)", "ic"),
    ("icir", "ICIR", "num"),
    ("rank_icir", "Rank ICIR", "num"),
)


class ModelCardError(TraderError):
    """A model card cannot be read or written."""


class DecisionStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REFUSED = "refused"
    #: Was in production, then rolled back.
    ROLLED_BACK = "rolled_back"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PromotionDecision(_Frozen):
    """Whether the model may go to production, and why; ``pending`` until someone asks."""

    status: DecisionStatus = DecisionStatus.PENDING
    reason: str = "not yet reviewed: promote with 'trader model promote NAME VERSION --to production'"
    decided_by: str | None = None
    decided_at: datetime | None = None


class Scenario(_Frozen):
    """One backtest scenario (e.g. ``base``, ``slippage x3``, ``fees x2``) and its metrics."""

    name: str
    metrics: dict[str, float | None]


class ScoreStats(_Frozen):
    """The distribution of the model's scores on the test segment."""

    count: int
    missing: int
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    p05: float | None = None
    median: float | None = None
    p95: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, scores: npt.ArrayLike) -> ScoreStats:
        """The statistics of ``scores``; NaN and infinite values count as missing."""
        values = np.asarray(scores, dtype=np.float64)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return cls(count=0, missing=int(values.size))
        q05, q50, q95 = (float(q) for q in np.quantile(finite, [0.05, 0.5, 0.95]))
        return cls(
            count=int(finite.size),
            missing=int(values.size - finite.size),
            mean=float(finite.mean()),
            std=float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
            min=float(finite.min()),
            p05=q05,
            median=q50,
            p95=q95,
            max=float(finite.max()),
        )


class DriftNotes(_Frozen):
    """What to watch once the model trades: IC out of sample against in validation, the score
    distribution it produced, and which data it was trained on."""

    valid_ic: float | None = None
    test_ic: float | None = None
    scores: ScoreStats | None = None
    data_fingerprint: str | None = None
    notes: list[str] = Field(default_factory=list)


class ModelCardData(_Frozen):
    """Everything a model card says. Metrics are the test segment's, keyed as in :data:`KNOWN_METRICS`
    (others are shown too); fractions (returns, drawdown, turnover) are plain fractions."""

    model_name: str
    version: str
    mlflow_run_id: str | None = None
    artifact_uri: str | None = None
    created_at: datetime
    description: str = ""
    segments: Segments
    metrics: dict[str, float | None] = Field(default_factory=dict)
    benchmark: str = "equal_weight"
    scenarios: list[Scenario] = Field(default_factory=list)
    features: list[str] = Field(default_factory=list)
    importance: dict[str, float] = Field(default_factory=dict)
    top_n: int = Field(default=20, ge=1)
    costs: Costs = Costs()
    drift: DriftNotes = DriftNotes()
    checks: CheckReport | None = None
    decision: PromotionDecision = PromotionDecision()


# --------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def format_metric(value: float | None, kind: str = "num") -> str:
    """``12.34%`` for fractions, ``0.0312`` for ICs, ``1.234`` otherwise, ``n/a`` when missing."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if kind == "pct":
        return f"{value * 100:.2f}%"
    if kind == "ic":
        return f"{value:.4f}"
    return f"{value:.3f}"


def _cell(text: object) -> str:
    """A table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return lines


def _metric_rows(metrics: Mapping[str, float | None]) -> list[tuple[str, str]]:
    known = {key for key, _, _ in KNOWN_METRICS}
    rows = [
        (label, format_metric(metrics[key], kind)) for key, label, kind in KNOWN_METRICS if key in metrics
    ]
    rows += [(key, format_metric(metrics[key])) for key in sorted(metrics) if key not in known]
    return rows


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


def _header(card: ModelCardData) -> list[str]:
    lines = [f"# Model card: {card.model_name} version {card.version}", ""]
    if card.description:
        lines += [card.description, ""]
    lines += _table(
        ["", ""],
        [
            ("Model name", card.model_name),
            ("Version", card.version),
            ("MLflow run id", card.mlflow_run_id or "n/a (not tracked)"),
            ("Artifact", card.artifact_uri or "n/a"),
            ("Created", card.created_at.isoformat(timespec="seconds")),
            ("Decision", f"**{card.decision.status.value}**"),
        ],
    )
    return lines


def _segments(card: ModelCardData) -> list[str]:
    seg = card.segments
    lines = ["## Data and segments", ""]
    lines += _table(
        ["segment", "start", "end", "used for"],
        [
            ("train", seg.train.start, seg.train.end, "fitting the model"),
            ("valid", seg.valid.start, seg.valid.end, "early stopping, drift baseline"),
            ("test", seg.test.start, seg.test.end, "backtest and every metric below (out of sample)"),
        ],
    )
    lines += ["", f"Label horizon: {seg.label_horizon} sessions (the gap required between segments)."]
    return lines


def _metrics(card: ModelCardData) -> list[str]:
    lines = ["## Metrics (test segment)", ""]
    rows = _metric_rows(card.metrics)
    lines += _table(["metric", "value"], rows) if rows else ["No metrics recorded."]
    bench = card.metrics.get("benchmark_annualized_return")
    bench_text = f" (annualized return {format_metric(bench, 'pct')})" if _finite(bench) else ""
    lines += ["", f"Benchmark: {card.benchmark}{bench_text}."]
    return lines


def _scenarios(card: ModelCardData) -> list[str]:
    lines = ["## Cost scenarios", ""]
    if not card.scenarios:
        return [*lines, "No scenario runs recorded."]
    shown = [
        (key, label, kind)
        for key, label, kind in KNOWN_METRICS
        if any(key in s.metrics for s in card.scenarios)
    ]
    rows = [
        [s.name, *(format_metric(s.metrics.get(key), kind) for key, _, kind in shown)] for s in card.scenarios
    ]
    return lines + _table(["scenario", *(label for _, label, _ in shown)], rows)


def _costs(card: ModelCardData) -> list[str]:
    c = card.costs
    return [
        "## Cost assumption",
        "",
        *_table(
            ["cost", "value"],
            [
                ("Commission (both sides)", f"{c.commission_bps:g} bps"),
                ("Sell fees (SEC + FINRA TAF)", f"{c.sell_fee_bps:g} bps"),
                ("Minimum commission", f"${c.min_commission:g} per order"),
                ("Slippage (both sides, against the deal price)", f"{c.slippage_bps:g} bps"),
            ],
        ),
    ]


def _features(card: ModelCardData) -> list[str]:
    lines = ["## Features", "", f"{len(card.features)} features."]
    if card.features:
        lines += ["", ", ".join(f"`{name}`" for name in card.features)]
    lines += ["", f"### Top {card.top_n} by importance", ""]
    if not card.importance:
        return [*lines, "No importance recorded."]
    total = sum(abs(v) for v in card.importance.values() if math.isfinite(v)) or 1.0
    top = sorted(card.importance.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[: card.top_n]
    rows = [
        (rank, name, f"{value:.6g}", f"{abs(value) / total * 100:.1f}%")
        for rank, (name, value) in enumerate(top, 1)
    ]
    return lines + _table(["rank", "feature", "importance", "share"], rows)


def drift_lines(drift: DriftNotes) -> list[str]:
    """The drift notes as sentences (also used by reports)."""
    lines = []
    if _finite(drift.valid_ic) and _finite(drift.test_ic):
        valid, test = float(drift.valid_ic), float(drift.test_ic)  # type: ignore[arg-type]
        change = f"{(test - valid) / abs(valid) * 100:+.0f}%" if valid else "n/a"
        verdict = "holds up out of sample"
        if valid > 0 and test < valid * IC_DEGRADATION:
            verdict = f"DEGRADED: below {IC_DEGRADATION:.0%} of the valid IC; expect weaker live results"
        lines.append(f"IC: valid {valid:.4f} -> test {test:.4f} ({change}); {verdict}.")
    else:
        lines.append("IC: valid or test IC not recorded, no comparison.")
    if drift.scores is not None:
        s = drift.scores
        lines.append(
            f"Scores (test): {s.count} values, {s.missing} missing; mean {format_metric(s.mean, 'ic')}, "
            f"std {format_metric(s.std, 'ic')}, min {format_metric(s.min, 'ic')}, "
            f"p05 {format_metric(s.p05, 'ic')}, median {format_metric(s.median, 'ic')}, "
            f"p95 {format_metric(s.p95, 'ic')}, max {format_metric(s.max, 'ic')}. Live scores far "
            "outside this range mean the inputs drifted."
        )
    lines.append(
        f"Data fingerprint: `{drift.data_fingerprint}`."
        if drift.data_fingerprint
        else "Data fingerprint: n/a."
    )
    lines += drift.notes
    return lines


def _drift(card: ModelCardData) -> list[str]:
    return ["## Drift notes", "", *(f"- {line}" for line in drift_lines(card.drift))]


def _checks(card: ModelCardData) -> list[str]:
    lines = ["## Leakage and validity checks", ""]
    if card.checks is None or not card.checks.results:
        return [*lines, "**No checks recorded**: the model cannot be promoted until they run."]
    verdict = "all passed" if card.checks.passed else "FAILED: promotion is blocked"
    lines += [f"{card.checks.summary()} ({verdict}).", ""]
    rows = [(r.name, "pass" if r.passed else "**FAIL**", r.detail) for r in card.checks.results]
    return lines + _table(["check", "result", "detail"], rows)


def _decision(card: ModelCardData) -> list[str]:
    d = card.decision
    lines = ["## Promotion decision", "", f"**{d.status.value}**: {d.reason}"]
    if d.decided_by or d.decided_at:
        when = d.decided_at.isoformat(timespec="seconds") if d.decided_at else "n/a"
        lines += ["", f"Decided by {d.decided_by or 'n/a'} at {when}."]
    return lines


def render_model_card(card: ModelCardData) -> str:
    """The card as Markdown (see the module docstring for its sections)."""
    sections = (_header, _segments, _metrics, _scenarios, _costs, _features, _drift, _checks, _decision)
    return "\n\n".join("\n".join(section(card)) for section in sections) + "\n"


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def _data_path(card_path: Path) -> Path:
    return card_path.with_name(MODEL_CARD_DATA_FILE)


def write_model_card(path: Path, card: ModelCardData) -> None:
    """Write the rendered card to ``path`` (``.../MODEL_CARD.md``) and its data to
    ``model_card.json`` beside it, each atomically (temporary file, fsync, rename)."""
    write_atomic(_data_path(path), (card.model_dump_json(indent=2) + "\n").encode())
    write_atomic(path, render_model_card(card).encode())


def read_model_card_data(path: Path) -> ModelCardData:
    """The data of the card at ``path`` (read from ``model_card.json`` beside it)."""
    source = _data_path(path)
    try:
        return ModelCardData.model_validate_json(source.read_bytes())
    except OSError as exc:
        raise ModelCardError(f"cannot read {source}: {exc.strerror or exc}") from None
    except ValidationError as exc:
        raise ModelCardError(f"{source} is not model card data: {exc.error_count()} error(s)") from None


def record_decision(path: Path, decision: PromotionDecision) -> ModelCardData:
    """Re-render the card at ``path`` with ``decision`` (after a promotion, refusal or rollback)."""
    card = read_model_card_data(path).model_copy(update={"decision": decision})
    write_model_card(path, card)
    return card
