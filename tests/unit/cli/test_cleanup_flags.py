"""``trader serve monitor`` (post-trade monitor and stale-order cleanup): numeric flags out of range are
usage errors (exit 2) naming the flag and its range, refused before any database or broker is used."""

from __future__ import annotations

import pytest

from trader.cli.main import run


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--interval", "nan"], "--interval: nan is out of range; use 1 to 3600 seconds"),
        (["--interval", "inf"], "--interval: inf is out of range; use 1 to 3600 seconds"),
        (["--interval", "0.5"], "--interval: 0.5 is out of range"),
        (["--interval", "1e300"], "--interval: 1e+300 is out of range"),
        (["--stale-minutes", "nan"], "--stale-minutes: nan is out of range; use 1 to 1440 minutes"),
        (["--stale-minutes", "1e300"], "--stale-minutes: 1e+300 is out of range; use 1 to 1440 minutes"),
        (["--stale-minutes", "-inf"], "--stale-minutes: -inf is out of range"),
        (["--stale-minutes", "0"], "--stale-minutes: 0 is out of range"),
    ],
)
def test_monitor_flags_out_of_range_exit_2(
    flags: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens here: were the flags accepted, the command would fail on the broker instead.
    monkeypatch.setenv("ALPACA_BASE_URL", "http://127.0.0.1:9")
    assert run(["serve", "monitor", "--once", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "internal error" not in err
