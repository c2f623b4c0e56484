"""Goodman-Bacon decomposition against R bacondecomp, the paper, and the package's own TWFE."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import twinimpact as ti
from twinimpact.errors import DroppedRowsWarning, InputError

from ..conftest import DATA

REF = json.loads((DATA / "bacondecomp" / "reference.json").read_text())
IDENTITY_TOL = 1e-10  # sum(w * est) vs the TWFE fit: both exact linear algebra
PRINTED_5DP = 0.5e-5 + 1e-12  # R printed 5 decimals: half a unit in the last place
PRINTED_8SIG = 1e-8  # README rows printed with 8 significant digits (values < 1)


@pytest.fixture(scope="module")
def castle() -> pd.DataFrame:
    return pd.read_csv(DATA / "bacondecomp" / "castle.csv")


@pytest.fixture(scope="module")
def castle_bacon(castle):
    return ti.bacon_decomposition(castle, outcome="l_homicide", unit="state", time="year",
                                  cohort="effyear")


def test_castle_twfe_and_types_match_r(castle_bacon):
    ref = REF["castle"]
    assert castle_bacon.twfe == pytest.approx(ref["twfe"], abs=1e-13)
    bt = castle_bacon.by_type
    for kind, row in ref["by_type_5dp"].items():
        assert abs(bt.loc[kind, "weight"] - row["weight"]) < PRINTED_5DP, kind
        assert abs(bt.loc[kind, "estimate"] - row["estimate"]) < PRINTED_5DP, kind
    assert list(bt.index) == ["earlier_vs_later", "later_vs_earlier", "treated_vs_never"]
    comp = castle_bacon.comparisons
    assert comp["weight"].sum() == pytest.approx(1.0, abs=1e-14)
    assert (comp["weight"] * comp["estimate"]).sum() == pytest.approx(ref["twfe"], abs=1e-13)
    # vignette: "one estimate has almost 60 percent of the weight: 2006 vs never treated"
    top = comp.loc[comp["weight"].idxmax()]
    assert (top["treated"], top["control"]) == (2006, "never")
    assert 0.55 < top["weight"] < 0.60
    assert castle_bacon.forbidden_share == bt.loc["later_vs_earlier", "weight"]


def test_castle_twfe_equals_package_twfe(castle, castle_bacon):
    r = ti.twfe(castle, outcome="l_homicide", unit="state", time="year", treatment="post")
    assert castle_bacon.twfe == pytest.approx(float(r.params["ATT"]), abs=1e-13)


def test_math_reform_rows_match_r_readme():
    m = pd.read_csv(DATA / "bacondecomp" / "math_reform.csv")
    b = ti.bacon_decomposition(m, outcome="incearn_ln", unit="state", time="class",
                               cohort="reformyr_math")
    comp = b.comparisons.set_index(["treated", "control"])
    ref = REF["math_reform"]
    for row in ref["rows_head"]:
        got = comp.loc[(row["treated"], row["control"])]
        assert got["estimate"] == pytest.approx(row["estimate"], abs=PRINTED_8SIG)
        assert got["weight"] == pytest.approx(row["weight"], abs=PRINTED_8SIG)
        assert got["type"] == row["type"]
    for kind, row in ref["by_type_5dp"].items():
        assert abs(b.by_type.loc[kind, "weight"] - row["weight"]) < PRINTED_5DP
        assert abs(b.by_type.loc[kind, "estimate"] - row["estimate"]) < PRINTED_5DP
    assert len(b.comparisons) == 16  # 4 cohorts: 4 x 3 timing pairs + 4 vs never


def test_goodman_bacon_figure2_weights():
    rng = np.random.default_rng(3)
    d = pd.DataFrame({"id": np.repeat([1, 2, 3], 100), "t": np.tile(np.arange(1, 101), 3)})
    d["g"] = d["id"].map({1: np.nan, 2: 34, 3: 85})
    d["y"] = rng.normal(size=len(d))
    comp = ti.bacon_decomposition(d, outcome="y", unit="id", time="t", cohort="g").comparisons
    w = {f"{a} vs {b}": v for a, b, v in zip(comp["treated"], comp["control"], comp["weight"],
                                              strict=True)}
    for key, ref in REF["goodman_bacon_figure2"]["weights_3dp"].items():
        assert abs(w[key] - ref) <= 0.0005 + 1e-12, key


def test_each_2x2_is_twfe_on_its_subsample(castle, castle_bacon):
    """Slow oracle: every 2x2 estimate is the TWFE coefficient on its two groups and window."""
    g = castle["effyear"]
    for _, row in castle_bacon.comparisons.iterrows():
        ctrl = g.isna() if row["control"] == "never" else g == row["control"]
        sub = castle[((g == row["treated"]) | ctrl)
                     & castle["year"].between(row["window_start"], row["window_end"])]
        r = ti.twfe(sub, outcome="l_homicide", unit="state", time="year", treatment="post",
                    vcov="iid")
        assert row["estimate"] == pytest.approx(float(r.params["ATT"]), abs=1e-12)


def _panel(cohorts, n_periods, values):
    n = len(cohorts)
    d = pd.DataFrame({"u": np.repeat([f"u{i}" for i in range(n)], n_periods),
                      "t": np.tile(2000 + np.arange(n_periods), n)})
    d["g"] = np.repeat(np.asarray(cohorts, dtype=float), n_periods)
    d["y"] = np.asarray(values[: n * n_periods], dtype=float)
    return d


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_periods=st.integers(2, 7), data=st.data())
def test_identity_on_random_staggered_panels(n_periods, data):
    """sum(weight * estimate) == the package's TWFE for any outcome (exact identity)."""
    n_units = data.draw(st.integers(2, 9))
    # cohort codes: NaN never, 1999 (before the window: always treated), a period, or 3000
    choices = [np.nan, 1999.0, 3000.0, *(2000.0 + np.arange(n_periods))]
    cohorts = data.draw(st.lists(st.sampled_from(choices), min_size=n_units, max_size=n_units))
    values = data.draw(st.lists(st.floats(-5, 5, allow_nan=False), min_size=n_units * n_periods,
                                max_size=n_units * n_periods))
    d = _panel(cohorts, n_periods, values)
    first = [2000.0 if c <= 2000 else c for c in cohorts if np.isfinite(c) and c < 2000 + n_periods]
    timing = {c for c in first if c > 2000}
    groups = {("never" if not (np.isfinite(c) and c < 2000 + n_periods) else
               min(max(c, 2000.0), 3000)) for c in cohorts}
    if not timing or len(groups) < 2:
        with pytest.raises(InputError):
            ti.bacon_decomposition(d, outcome="y", unit="u", time="t", cohort="g")
        return
    b = ti.bacon_decomposition(d, outcome="y", unit="u", time="t", cohort="g")
    ref = float(ti.twfe(d, outcome="y", unit="u", time="t", cohort="g", vcov="iid"
                        ).params["ATT"])
    comp = b.comparisons
    scale = 1.0 + abs(ref) + float(np.abs(comp["estimate"]).max())
    assert abs((comp["weight"] * comp["estimate"]).sum() - ref) < IDENTITY_TOL * scale
    assert b.twfe == pytest.approx(ref, abs=1e-12 * scale)
    assert comp["weight"].sum() == pytest.approx(1.0, abs=1e-12)
    assert b.by_type["weight"].sum() == pytest.approx(1.0, abs=1e-12)
    assert (comp["weight"] >= 0).all()
    # always-treated units are only ever a control group
    assert "always" not in set(comp["treated"])


def test_always_treated_are_controls_with_r_label():
    rng = np.random.default_rng(1)
    d = _panel([1990, 2002, 2004, np.nan, np.nan], 6, rng.normal(size=30))
    b = ti.bacon_decomposition(d, outcome="y", unit="u", time="t", cohort="g")
    comp = b.comparisons
    alw = comp[comp["control"] == "always"]
    assert set(alw["treated"]) == {2002, 2004}
    assert set(alw["type"]) == {"later_vs_earlier"}
    assert set(alw["r_type"]) == {"Later vs Always Treated"}
    assert b.diagnostics["n_always_treated"] == 1


def test_invariances(castle, castle_bacon):
    shuffled = castle.sample(frac=1.0, random_state=0).reset_index(drop=True)
    shuffled["state"] = "S_" + shuffled["state"].str[::-1]
    shuffled["l_homicide"] = 3.0 * shuffled["l_homicide"] + 7.0
    before = shuffled.copy()
    b = ti.bacon_decomposition(shuffled, outcome="l_homicide", unit="state", time="year",
                               cohort="effyear")
    pd.testing.assert_frame_equal(shuffled, before)  # caller's frame untouched
    assert b.twfe == pytest.approx(3.0 * castle_bacon.twfe, abs=1e-12)
    np.testing.assert_allclose(b.by_type["weight"], castle_bacon.by_type["weight"], atol=1e-14)


def test_unbalanced_panel_is_a_clear_error(castle):
    with pytest.raises(InputError, match=r"balanced panel.*1 of 50 units"):
        ti.bacon_decomposition(castle.iloc[1:], outcome="l_homicide", unit="state",
                               time="year", cohort="effyear")
    bad = castle.copy()
    bad.loc[5, "l_homicide"] = np.nan
    with pytest.warns(DroppedRowsWarning), pytest.raises(InputError, match="dropped for missing"):
        ti.bacon_decomposition(bad, outcome="l_homicide", unit="state", time="year",
                               cohort="effyear")


def test_no_switchers_is_a_clear_error(castle):
    d = castle.assign(effyear=np.nan)
    with pytest.raises(InputError, match="no unit switches"):
        ti.bacon_decomposition(d, outcome="l_homicide", unit="state", time="year",
                               cohort="effyear")


def test_table_and_plot(castle_bacon):
    md = ti.table({"Bacon": castle_bacon}, format="markdown")
    assert "| TWFE | 0.0818 |" in md and "| later_vs_earlier | 0.0703 |" in md
    frame = castle_bacon.to_frame()
    assert frame.loc[frame["term"] == "later_vs_earlier", "weight"].item() == pytest.approx(
        castle_bacon.forbidden_share)
    ax = ti.plot_bacon(castle_bacon)
    assert len(ax.collections) == 3  # one scatter per type
    assert ax.get_lines()[0].get_ydata()[0] == pytest.approx(castle_bacon.twfe)
    with pytest.raises(InputError):
        ti.plot_bacon(frame)
