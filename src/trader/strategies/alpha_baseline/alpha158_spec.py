"""The Alpha158 feature list: names and Qlib expressions in Qlib's order, and its version.

This transcribes ``qlib.contrib.data.loader.Alpha158DL.get_feature_config()`` with Alpha158's default
configuration (pyqlib 0.9.7): the nine k-bar features, the prices ``OPEN0 HIGH0 LOW0 VWAP0``, and 29
rolling operators over the windows 5, 10, 20, 30 and 60 sessions. The unit tests check it against
the installed Qlib, so a Qlib upgrade that changes a formula fails loudly instead of drifting.

:data:`ALPHA158_VERSION` numbers our implementation of these formulas; :data:`ALPHA158_DIGEST` is a
digest of the version and every (name, expression) pair. A signal records both with each score, so a
score can always be traced to the exact feature code that produced it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

#: Bump when the computed values change (a fix, a new semantic), even if the feature list does not.
ALPHA158_VERSION = 1
#: The rolling windows of Alpha158, in sessions.
WINDOWS: tuple[int, ...] = (5, 10, 20, 30, 60)
#: Sessions a row's features depend on: 60-session windows of a one-session change (``Ref($x, 1)``).
HISTORY_SESSIONS = max(WINDOWS) + 1

_KBAR: tuple[tuple[str, str], ...] = (
    ("KMID", "($close-$open)/$open"),
    ("KLEN", "($high-$low)/$open"),
    ("KMID2", "($close-$open)/($high-$low+1e-12)"),
    ("KUP", "($high-Greater($open, $close))/$open"),
    ("KUP2", "($high-Greater($open, $close))/($high-$low+1e-12)"),
    ("KLOW", "(Less($open, $close)-$low)/$open"),
    ("KLOW2", "(Less($open, $close)-$low)/($high-$low+1e-12)"),
    ("KSFT", "(2*$close-$high-$low)/$open"),
    ("KSFT2", "(2*$close-$high-$low)/($high-$low+1e-12)"),
)

_PRICE: tuple[tuple[str, str], ...] = tuple(
    (f"{field}0", f"${field.lower()}/$close") for field in ("OPEN", "HIGH", "LOW", "VWAP")
)

# One template per rolling operator, in Qlib's order; ``{d}`` is the window.
_ROLLING: tuple[tuple[str, str], ...] = (
    ("ROC", "Ref($close, {d})/$close"),
    ("MA", "Mean($close, {d})/$close"),
    ("STD", "Std($close, {d})/$close"),
    ("BETA", "Slope($close, {d})/$close"),
    ("RSQR", "Rsquare($close, {d})"),
    ("RESI", "Resi($close, {d})/$close"),
    ("MAX", "Max($high, {d})/$close"),
    ("MIN", "Min($low, {d})/$close"),
    ("QTLU", "Quantile($close, {d}, 0.8)/$close"),
    ("QTLD", "Quantile($close, {d}, 0.2)/$close"),
    ("RANK", "Rank($close, {d})"),
    ("RSV", "($close-Min($low, {d}))/(Max($high, {d})-Min($low, {d})+1e-12)"),
    ("IMAX", "IdxMax($high, {d})/{d}"),
    ("IMIN", "IdxMin($low, {d})/{d}"),
    ("IMXD", "(IdxMax($high, {d})-IdxMin($low, {d}))/{d}"),
    ("CORR", "Corr($close, Log($volume+1), {d})"),
    ("CORD", "Corr($close/Ref($close,1), Log($volume/Ref($volume, 1)+1), {d})"),
    ("CNTP", "Mean($close>Ref($close, 1), {d})"),
    ("CNTN", "Mean($close<Ref($close, 1), {d})"),
    ("CNTD", "Mean($close>Ref($close, 1), {d})-Mean($close<Ref($close, 1), {d})"),
    ("SUMP", "Sum(Greater($close-Ref($close, 1), 0), {d})/(Sum(Abs($close-Ref($close, 1)), {d})+1e-12)"),
    ("SUMN", "Sum(Greater(Ref($close, 1)-$close, 0), {d})/(Sum(Abs($close-Ref($close, 1)), {d})+1e-12)"),
    (
        "SUMD",
        "(Sum(Greater($close-Ref($close, 1), 0), {d})-Sum(Greater(Ref($close, 1)-$close, 0), {d}))"
        "/(Sum(Abs($close-Ref($close, 1)), {d})+1e-12)",
    ),
    ("VMA", "Mean($volume, {d})/($volume+1e-12)"),
    ("VSTD", "Std($volume, {d})/($volume+1e-12)"),
    (
        "WVMA",
        "Std(Abs($close/Ref($close, 1)-1)*$volume, {d})"
        "/(Mean(Abs($close/Ref($close, 1)-1)*$volume, {d})+1e-12)",
    ),
    (
        "VSUMP",
        "Sum(Greater($volume-Ref($volume, 1), 0), {d})/(Sum(Abs($volume-Ref($volume, 1)), {d})+1e-12)",
    ),
    (
        "VSUMN",
        "Sum(Greater(Ref($volume, 1)-$volume, 0), {d})/(Sum(Abs($volume-Ref($volume, 1)), {d})+1e-12)",
    ),
    (
        "VSUMD",
        "(Sum(Greater($volume-Ref($volume, 1), 0), {d})-Sum(Greater(Ref($volume, 1)-$volume, 0), {d}))"
        "/(Sum(Abs($volume-Ref($volume, 1)), {d})+1e-12)",
    ),
)

#: ``(name, Qlib expression)`` of every Alpha158 feature, in Qlib's column order.
ALPHA158_EXPRESSIONS: tuple[tuple[str, str], ...] = (
    *_KBAR,
    *_PRICE,
    *((f"{name}{d}", template.format(d=d)) for name, template in _ROLLING for d in WINDOWS),
)
#: The 158 feature names, in Qlib's column order (``KMID`` ... ``VSUMD60``).
FEATURE_NAMES: tuple[str, ...] = tuple(name for name, _ in ALPHA158_EXPRESSIONS)


def _digest() -> str:
    document = {"set": "alpha158", "version": ALPHA158_VERSION, "features": ALPHA158_EXPRESSIONS}
    return hashlib.sha256(json.dumps(document, separators=(",", ":")).encode()).hexdigest()[:16]


#: Digest of the version and the feature list (16 hex digits).
ALPHA158_DIGEST = _digest()


@dataclass(frozen=True)
class FeatureSetVersion:
    """What a score records about the features it was computed from."""

    name: str
    version: int
    digest: str
    features: tuple[str, ...]

    @property
    def tag(self) -> str:
        """``alpha158-v1-<digest>``: one string for a log line or a database column."""
        return f"{self.name}-v{self.version}-{self.digest}"


#: The feature set computed by :mod:`trader.strategies.alpha_baseline.alpha158_polars`.
ALPHA158 = FeatureSetVersion("alpha158", ALPHA158_VERSION, ALPHA158_DIGEST, FEATURE_NAMES)
