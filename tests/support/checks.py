"""Leakage check reports for tests that register models without running the checks."""

from __future__ import annotations

from datetime import datetime

from trader.research.leakage import ALL_CHECKS, CheckReport, CheckResult


def all_passed(at: datetime | None = None, *, failed: dict[str, str] | None = None) -> CheckReport:
    """A report of every check the release gate asks for: passed, except those in ``failed``
    (name -> detail)."""
    failed = failed or {}
    results = tuple(CheckResult(name, name not in failed, failed.get(name, "fine")) for name in ALL_CHECKS)
    return CheckReport(results) if at is None else CheckReport(results, at)
