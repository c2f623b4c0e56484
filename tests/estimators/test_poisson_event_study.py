"""Poisson event study (Wooldridge 2023 ETWFE and dynamic Poisson TWFE): explicit-dummy
PPML oracle, hand-computed aggregation, recovery of known proportional effects, unit vs
cohort fixed effects (Wooldridge's equivalence), zeros kept, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st

from twinimpact.errors import ColumnError, DroppedRowsWarning, InputError, SpecificationError
from twinimpact.estimators.poisson_event_study import poisson_event_study
from twinimpact.estimators.ppml import ppml

#: same Poisson likelihood, same fixed point: only IRLS / projection tolerances differ
ORACLE_TOL = 1e-7
#: Wooldridge (2023): unit FE and cohort FE give the same tau in a balanced panel
EQUIV_TOL = 1e-8
#: recovery of the true log effects with outcome means around e^5 and 600 units: the
#: sampling SE of each event-time estimate is about 0.01, so 0.05 is ~5 SE
RECOVERY_TOL = 0.05

KW = dict(outcome="y", unit="id", time="year", cohort="g")


def _panel(n_units: int = 150, seed: int = 0, base: float = 1.0, effect: float = 0.1,
           never: bool = True) -> pd.DataFrame:
    """Staggered panel 2000-2007, cohorts 2003/2005 (+ never treated), log effect
    ``effect * (e + 1)`` at event time e >= 0."""
    rng = np.random.default_rng(seed)
    d = pd.DataFrame({"id": np.repeat(np.arange(n_units), 8),
                      "year": np.tile(np.arange(2000, 2008), n_units)})
    cohorts = np.array([2003, 2005, 0]) if never else np.array([2003, 2005])
    d["g"] = cohorts[d["id"] % len(cohorts)]
    rel = np.where(d["g"] > 0, d["year"] - d["g"], -99)
    eff = np.where(rel >= 0, effect * (rel + 1), 0.0)
    unit_fe = rng.normal(0, 0.5, n_units)[d["id"]]
    d["y"] = rng.poisson(np.exp(base + unit_fe + 0.05 * (d["year"] - 2000) + eff)).astype(float)
    return d


def test_cells_equal_explicit_dummy_ppml_and_aggregation_by_hand():
    d = _panel()
    r = poisson_event_study(d, **KW)
    cells = r.extras["cells"]
    # oracle: the same regression written out by hand
    dd = d.copy()
    names = []
    for g in (2003, 2005):
        for t in range(2000, 2008):
            if t - g == -1:
                continue
            c = f"c_{g}_{t}"
            dd[c] = ((dd["g"] == g) & (dd["year"] == t)).astype(float)
            names.append((c, f"ATT({g},{t})"))
    o = ppml(dd, outcome="y", regressors=[c for c, _ in names], fixed_effects=["id", "year"],
             cluster="id")
    for c, term in names:
        assert abs(cells.params[term] - o.params[c]) < ORACLE_TOL, term
        assert cells.std_errors[term] == pytest.approx(o.std_errors[c], rel=1e-6)
    # aggregation: observation-weighted means of the cells at each event time
    info = cells.term_info
    n = {term: int(((d["g"] == info.loc[term, "cohort"])
                    & (d["year"] == info.loc[term, "time"])).sum()) for term in cells.terms}
    for e in (-4, 0, 2):
        terms = [t for t in cells.terms if info.loc[t, "rel_time"] == e]
        w = np.array([n[t] for t in terms], dtype=float)
        w /= w.sum()
        est = w @ cells.params[terms].to_numpy()
        se = np.sqrt(w @ cells.vcov.loc[terms, terms].to_numpy() @ w)
        assert r.params[f"rel_time={e}"] == pytest.approx(est, abs=1e-12)
        assert r.std_errors[f"rel_time={e}"] == pytest.approx(se, rel=1e-10)
    post = [t for t in cells.terms if info.loc[t, "rel_time"] >= 0]
    w = np.array([n[t] for t in post], dtype=float)
    assert r.params["ATT"] == pytest.approx(w @ cells.params[post].to_numpy() / w.sum())


def test_cells_equal_statsmodels_dummy_glm():
    """Slow, obviously correct: every unit, year and cell as an explicit GLM dummy."""
    d = _panel(n_units=45, seed=4, base=2.0)
    r = poisson_event_study(d, **KW)
    x = pd.concat([pd.get_dummies(d["id"], prefix="u", dtype=float),
                   pd.get_dummies(d["year"], prefix="t", dtype=float).iloc[:, 1:]], axis=1)
    for g in (2003, 2005):
        for t in range(2000, 2008):
            if t != g - 1:
                x[f"ATT({g},{t})"] = ((d["g"] == g) & (d["year"] == t)).astype(float)
    glm = sm.GLM(d["y"], x, family=sm.families.Poisson()).fit(tol=1e-12, maxiter=100)
    cells = r.extras["cells"]
    for term in cells.terms:
        assert abs(cells.params[term] - glm.params[term]) < 1e-6, term


def test_unit_and_cohort_fixed_effects_coincide_in_a_balanced_panel():
    d = _panel(seed=2)
    r_u = poisson_event_study(d, **KW)
    r_c = poisson_event_study(d, **KW, fixed_effects="cohort")
    np.testing.assert_allclose(r_u.params, r_c.params, atol=EQUIV_TOL)


def test_recovers_known_proportional_effects():
    d = _panel(n_units=600, seed=1, base=5.0, effect=0.1)
    r = poisson_event_study(d, **KW)
    for e in range(0, 5):
        assert abs(r.params[f"rel_time={e}"] - 0.1 * (e + 1)) < RECOVERY_TOL
    for e in (-5, -4, -3, -2):
        assert abs(r.params[f"rel_time={e}"]) < RECOVERY_TOL
    # dynamic TWFE: homogeneous effects across cohorts, so it is consistent too
    r_dyn = poisson_event_study(d, **KW, method="dynamic")
    for e in range(0, 4):
        assert abs(r_dyn.params[f"rel_time={e}"] - 0.1 * (e + 1)) < RECOVERY_TOL


def test_result_protocol_and_window():
    d = _panel()
    r = poisson_event_study(d, **KW, leads=3, lags=2)
    f = r.to_frame()
    assert list(f["term"]) == ["rel_time=-3", "rel_time=-2", "rel_time=0", "rel_time=1",
                               "rel_time=2", "ATT"]
    assert list(f["rel_time"].iloc[:-1]) == [-3, -2, 0, 1, 2]
    assert r.spec["ref"] == (-1,) and r.spec["window"] == (-3, 2)
    # cells after lags still have their own dummies and enter the ATT
    assert "ATT(2003,2006)" in r.extras["cells"].terms
    assert {"dropped_rows", "iterations", "converged", "deviance"} <= set(r.diagnostics)
    assert r.spec["cluster"] == ("id",)


def test_zeros_are_kept():
    d = _panel(base=-1.0, seed=5)
    assert (d["y"] == 0).mean() > 0.2
    # units whose outcomes are all zero are separated (counted), the other zeros stay
    with pytest.warns(DroppedRowsWarning, match="separated"):
        r = poisson_event_study(d, **KW)
    assert r.nobs == len(d) - sum(r.diagnostics["dropped_rows"].values())
    assert r.diagnostics["n_zero_outcome"] > 0
    assert np.isfinite(r.params["ATT"])


def test_without_never_treated_the_last_cohort_is_the_control():
    d = _panel(never=False)
    r = poisson_event_study(d, **KW)
    assert r.spec["control_group"].startswith("last_treated")
    assert "periods from the last cohort's adoption on" in next(iter(r.diagnostics["dropped_rows"]))
    assert all(r.extras["cells"].term_info["cohort"] == 2003)


def test_never_treated_conventions_agree():
    d = _panel()
    r0 = poisson_event_study(d, **KW)
    d2 = d.assign(g=d["g"].replace(0, np.nan))
    d3 = d.assign(g=d["g"].replace(0, 10_000))
    for dd in (d2, d3):
        np.testing.assert_allclose(poisson_event_study(dd, **KW).params, r0.params, atol=1e-12)


def test_caller_frame_unchanged():
    d = _panel()
    before = d.copy(deep=True)
    poisson_event_study(d, **KW)
    poisson_event_study(d, **KW, method="dynamic")
    pd.testing.assert_frame_equal(d, before)


def test_bad_input():
    d = _panel()
    with pytest.raises(SpecificationError, match="method"):
        poisson_event_study(d, **KW, method="sunab")
    with pytest.raises(SpecificationError, match="reference period"):
        poisson_event_study(d, **KW, leads=2, ref=-4)
    with pytest.raises(ColumnError, match="cohrt"):
        poisson_event_study(d, outcome="y", unit="id", time="year", cohort="cohrt")
    with pytest.raises(InputError, match="no treated unit"):
        poisson_event_study(d.assign(g=0), **KW)
    bad = d.copy()
    bad.loc[5, "y"] = -1.0
    with pytest.raises(InputError, match="non-negative"):
        poisson_event_study(bad, **KW)
    with pytest.raises(SpecificationError, match="leads"):
        poisson_event_study(d, **KW, leads=-1)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1000), shift=st.integers(-50, 50))
def test_invariant_to_row_order_and_calendar_shift(seed, shift):
    d = _panel(n_units=30, seed=seed % 20, base=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = poisson_event_study(d, **KW)
        d2 = d.sample(frac=1.0, random_state=seed).assign(
            year=lambda x: x["year"] + shift, g=lambda x: np.where(x["g"] > 0, x["g"] + shift, 0))
        r2 = poisson_event_study(d2, **KW)
    np.testing.assert_allclose(r2.params, r.params, atol=1e-8)


def test_one_cell_without_a_variance_leaves_the_other_aggregates_alone():
    """A cell whose variance is NaN with a finite estimate poisons only the aggregates
    that weigh it; a cell whose variance is rounding of zero counts as 0 (fuzz seed 300:
    one row order blanked that cell's variance, 2.9e-17, inside the fit and every
    aggregate became NaN; the other kept it and reported them all)."""
    from twinimpact.estimators.poisson_event_study import _combined_vcov
    from twinimpact.results import ROUNDING_ZERO_KEY

    coef = np.array([0.1, 0.2, 0.3, np.nan])
    v = np.diag([0.01, np.nan, 0.04, np.nan])
    v[0, 2] = v[2, 0] = 0.005
    a = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0], [0.5, 0.0, 0.5, 0.0]])
    names = ["c0", "c1", "c2", "c3"]
    out = _combined_vcov(a, coef, v, names, {})
    assert out[0, 0] == pytest.approx(0.01) and out[2, 2] == pytest.approx(0.015)
    assert np.isnan(out[1]).all() and np.isnan(out[:, 1]).all()
    assert out[0, 2] == pytest.approx(0.0075)
    zero = _combined_vcov(a, coef, v, names, {ROUNDING_ZERO_KEY: ("c1",)})
    assert zero[1, 1] == pytest.approx(0.01) and np.isfinite(zero).all()


def test_same_variances_in_both_row_orders_when_a_cell_variance_is_rounding():
    """The panel of fuzz seed 300: cell ATT(1998,2001) has a variance that is rounding
    of zero (rel_time=3 is that cell alone). Both row orders report every other
    aggregate, the same to 1e-8, and rel_time=3 without a standard error."""
    from ..test_fuzz_row_order import messy_panel, reshuffle

    d = messy_panel(300)
    e, _ = reshuffle(d, 300, "arrow_str")
    out = []
    for frame in (d, e):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.append(poisson_event_study(frame, outcome="yp", unit="u", time="t",
                                           cohort="g"))
    se = [r.std_errors for r in out]
    assert np.isnan(se[0]["rel_time=3"]) and np.isnan(se[1]["rel_time=3"])
    rest = se[0].drop("rel_time=3")
    assert rest.notna().all() and len(rest) == 10
    np.testing.assert_allclose(se[1].drop("rel_time=3"), rest, rtol=1e-8)


def test_aggregate_cells_leaves_groups_without_the_nan_cell_alone():
    """aggregate_cells (public): the group of a cell whose variance is NaN has a NaN
    variance; the other group keeps its delta-method variance (it read NaN * 0 before)."""
    from twinimpact.estimators.poisson_event_study import aggregate_cells

    coef = np.array([0.1, 0.2, 0.3])
    v = np.diag([0.01, 0.04, np.nan])
    est, cov, _a, keys = aggregate_cells(coef, v, np.array([0.0, 0.0, 1.0]),
                                        np.array([1.0, 3.0, 2.0]))
    assert keys == [0.0, 1.0]
    assert est == pytest.approx([0.175, 0.3])
    assert cov[0, 0] == pytest.approx(0.0625 * 0.01 + 0.5625 * 0.04)
    assert np.isnan(cov[1]).all() and np.isnan(cov[:, 1]).all()
