"""Diagnostic figures: pre-trend power lines and their slopes."""

from __future__ import annotations

import json

import numpy as np
import pytest

import twinimpact as ti
from twinimpact.estimators.twfe import _example_panel
from twinimpact.inference.pretrend_power import power_against_att_se

from ..conftest import DATA

HW = json.loads((DATA / "pretrends" / "he_wang_2017_fig2c.json").read_text())


def test_plot_pretrend_power_draws_the_50_and_80_percent_trends():
    b, s, t = np.array(HW["beta"]), np.array(HW["sigma"]), HW["tVec"]
    ax = ti.plot_pretrend_power(b, s, rel_times=t)
    s50 = ti.slope_for_power(s, target_power=0.5, rel_times=t)
    s80 = ti.slope_for_power(s, target_power=0.8, rel_times=t)
    lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 50]
    slopes = sorted({round(float(np.polyfit(ln.get_xdata(), ln.get_ydata(), 1)[0]), 10)
                     for ln in lines})
    assert slopes == pytest.approx(sorted([s50, s80]), rel=1e-8)
    assert s80 > s50
    for ln in lines:  # every trend passes through the reference period at zero
        x, y = ln.get_xdata(), ln.get_ydata()
        assert np.interp(-1, x, y) == pytest.approx(0.0, abs=1e-12)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("50% of the time" in lab for lab in labels)


def test_power_against_att_se():
    r = ti.event_study(_example_panel(), outcome="y", unit="id", time="year", cohort="g",
                       leads=3, lags=2)
    out = power_against_att_se(r)
    # equal weights over rel_time 0,1,2: lever = mean(e + 1) = 2
    assert out["weights"] == pytest.approx({"rel_time=0": 1 / 3, "rel_time=1": 1 / 3,
                                            "rel_time=2": 1 / 3})
    assert out["slope"] == pytest.approx(out["att_se"] / 2.0, rel=1e-12)
    p = ti.pretrend_power(r, delta_true=out["slope"])
    assert out["power"] == pytest.approx(p.power, abs=1e-15)
    assert out["size"] < out["power"] < 1
