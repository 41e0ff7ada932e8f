"""The progress line: cut to the terminal's width on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

import pytest

from bench.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_every_redraw_fits_the_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    out = Terminal()
    bar = Progress(3, "ipsbench", stream=out)
    for done in (1, 2, 3):
        bar.update(done, "lookback 12.34s  ips 1.23s and a long detail that would wrap")
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    redraws = text.rstrip("\n").split("\r")[1:]
    assert len(redraws) == 3
    assert {len(r) for r in redraws} == {39}
    assert redraws[-1].startswith("ipsbench [" + "#" * 24 + "] 3/3")


def test_elsewhere_one_plain_line_per_update() -> None:
    out = io.StringIO()
    bar = Progress(2, "ipsbench", stream=out)
    bar.update(1, "lookback 1.00s")
    bar.update(2, "")
    lines = out.getvalue().split("\n")
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("ipsbench [" + "#" * 12 + "." * 12 + "] 1/2") and lines[0].endswith("lookback 1.00s")
    assert lines[1].endswith("left") and lines[2] == ""


def test_disabled_writes_nothing() -> None:
    out = Terminal()
    Progress(2, "ipsbench", enabled=False, stream=out).update(1)
    assert out.getvalue() == ""


def test_the_time_left_follows_the_pace_of_the_last_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    # Five quick days (ingest only, as a warm-up's), then days of 10 s each.
    clock = iter([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 15.0, 25.0, 35.0])
    monkeypatch.setattr("bench.progress.time.perf_counter", lambda: next(clock))
    out = io.StringIO()
    bar = Progress(10, "ipsbench", stream=out)
    for done in range(1, 9):
        bar.update(done)
    lines = out.getvalue().splitlines()
    assert "~  5.0s left" in lines[4]  # after 5 of 10 at 1 s each
    assert "~ 20.0s left" in lines[7]  # 2 left at the last 3 days' 10 s each
