"""Progress bars: drawn on a terminal once a loop is slow, silent otherwise (issue 16)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from twinimpact.core import progress as prog


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_silent_when_not_a_terminal(monkeypatch):
    monkeypatch.delenv("TWINIMPACT_PROGRESS", raising=False)
    buf = io.StringIO()
    monkeypatch.setattr(prog, "DELAY", 0.0)
    with prog.progress(5, "draws", stream=buf) as bar:
        for _ in range(5):
            bar.update()
    assert buf.getvalue() == "" and bar.count == 5


def test_drawn_on_a_terminal_after_the_delay(monkeypatch):
    monkeypatch.delenv("TWINIMPACT_PROGRESS", raising=False)
    monkeypatch.setattr(prog, "DELAY", 0.0)
    tty = _Tty()
    with prog.progress(4, "placebo", stream=tty) as bar:
        for _ in range(4):
            bar.update()
    out = tty.getvalue()
    assert "placebo: [" in out and "4/4" in out and out.endswith("\n")
    # a quick loop (under DELAY) prints nothing even on a terminal
    monkeypatch.setattr(prog, "DELAY", 60.0)
    quick = _Tty()
    with prog.progress(4, "x", stream=quick) as bar:
        bar.update(4)
    assert quick.getvalue() == ""


@pytest.mark.parametrize("flag, shown", [("0", False), ("1", True)])
def test_environment_switch(monkeypatch, flag, shown):
    monkeypatch.setenv("TWINIMPACT_PROGRESS", flag)
    monkeypatch.setattr(prog, "DELAY", 0.0)
    buf = _Tty() if not shown else io.StringIO()  # the switch beats isatty either way
    with prog.progress(2, "d", stream=buf) as bar:
        bar.update(2)
    assert (buf.getvalue() != "") is shown


def test_bootstrap_loop_reports_its_draws(monkeypatch):
    from twinimpact.estimators import _cs_numerics as num

    seen = []

    class Spy(prog.progress):
        def update(self, n: int = 1) -> None:
            seen.append(n)
            super().update(n)

    monkeypatch.setattr(num, "progress", Spy)
    psi = np.random.default_rng(0).normal(size=(50, 2))
    num.mammen_bootstrap(psi, 999, np.random.default_rng(1), chunk_elems=5000)
    assert sum(seen) == 999 and len(seen) > 1
