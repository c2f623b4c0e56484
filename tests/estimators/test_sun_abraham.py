"""Sun & Abraham (fixest sunab): fixest references on base_stagg, dummy-variable OLS
oracle (statsmodels), single cohort = TWFE event study, last-treated control, aggregations,
invariances, coverage and bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from hypothesis import given, settings
from hypothesis import strategies as st

from twinimpact.errors import (
    DroppedRowsWarning,
    EstimationError,
    InputError,
    SpecificationError,
)
from twinimpact.estimators.sun_abraham import sun_abraham

from ..conftest import DATA, REFERENCE
from .test_imputation import SIM, simulate_panel

#: fixest prints 6 decimals: half a unit in the last place (plus float noise)
PRINT_TOL = 5e-7 + 1e-12
#: the task's ATT SE is given to 7 significant digits
ATT_SE_TOL = 5e-8
#: FE sweep vs dummy-variable OLS: floating-point noise only
ORACLE_TOL = 1e-8

KW = dict(outcome="y", unit="id", time="year", cohort="year_treated")


@pytest.fixture(scope="module")
def stagg() -> pd.DataFrame:
    return pd.read_csv(DATA / "fixest_sunab" / "base_stagg.csv")


@pytest.fixture(scope="module")
def ref() -> dict:
    return json.loads((REFERENCE / "sun_abraham" / "base_stagg_fixest.json").read_text())[
        "cases"]


def test_att_and_covariate_match_fixest(stagg, ref):
    r = sun_abraham(stagg, **KW, covariates=["x1"])
    exp = ref["with_x1"]
    att = r.aggregate("simple")
    assert att.terms == ("ATT",)
    assert att.params["ATT"] == pytest.approx(exp["ATT"]["estimate"], abs=PRINT_TOL)
    assert att.std_errors["ATT"] == pytest.approx(exp["ATT"]["std_error"], abs=ATT_SE_TOL)
    assert att.pvalues["ATT"] == pytest.approx(exp["ATT"]["p_value"], rel=1e-3)
    assert r.params["ATT"] == att.params["ATT"]
    assert r.params["x1"] == pytest.approx(exp["x1"]["estimate"], abs=PRINT_TOL)
    assert r.std_errors["x1"] == pytest.approx(exp["x1"]["std_error"], abs=PRINT_TOL)
    assert r.vcov_spec.ci_kind == "t(94)"


def test_cohort_period_cells_match_fixest(stagg, ref):
    r = sun_abraham(stagg, **KW, covariates=["x1"])
    cells = r.interactions.set_index(["cohort", "rel_time"])
    for c in ref["with_x1"]["cells"]:
        got = cells.loc[(c["cohort"], c["rel_time"])]
        assert got["estimate"] == pytest.approx(c["estimate"], abs=PRINT_TOL)
        assert got["std_error"] == pytest.approx(c["std_error"], abs=PRINT_TOL)
    # every treated cohort x observed relative period except -1: 9 cohorts x 9 periods
    assert len(cells) == 81 and (cells["n_obs"] == 5).all()
    assert r.extras["interactions"].shape == (81, 5)


def test_event_time_estimates_match_fixest_issue_287(stagg, ref):
    f = sun_abraham(stagg, **KW).to_frame().set_index("rel_time")
    for row in ref["no_covariate"]["rel_time"]:
        got = f.loc[float(row["rel_time"])]
        assert got["estimate"] == pytest.approx(row["estimate"], abs=PRINT_TOL)
        assert got["std_error"] == pytest.approx(row["std_error"], abs=PRINT_TOL)
        assert got["p_value"] == pytest.approx(row["p_value"], abs=PRINT_TOL)
    assert f.index.dropna().tolist() == [e for e in range(-9, 9) if e != -1]


# ----------------------------------------------------------------------- oracle
def _dummy_design(d: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[int, int, str]]]:
    d = d.copy()
    g = d["g"].to_numpy()
    rel = np.where(g > 0, d["year"] - g, -999)
    cells = []
    for gv in sorted(set(g[g > 0])):
        for e in sorted(set(rel[g == gv])):
            if e == -1:
                continue
            name = f"c{gv}_{'m' if e < 0 else ''}{abs(e)}"
            d[name] = ((g == gv) & (rel == e)).astype(float)
            cells.append((gv, e, name))
    return d, cells


def test_cells_and_clustered_se_equal_dummy_variable_ols():
    d = simulate_panel(n_units=30, n_periods=6, seed=2, cohorts=(3, 5, 0), dynamic=0.5)
    r = sun_abraham(d, **SIM)
    dd, cells = _dummy_design(d)
    fit = smf.ols("y ~ " + " + ".join(n for *_, n in cells) + " + C(id) + C(year)", dd).fit()
    vc = fit.get_robustcov_results("cluster", groups=dd["id"], use_correction=False)
    names = list(fit.params.index)
    # fixest small sample: K = cells + (T - 1) year FE + 1 (unit FE nested in clusters)
    n, gcl, k = len(d), 30, len(cells) + 6
    factor = gcl / (gcl - 1) * (n - 1) / (n - k)
    got = r.interactions.set_index(["cohort", "rel_time"])
    for gv, e, name in cells:
        assert got.loc[(gv, e), "estimate"] == pytest.approx(fit.params[name], abs=ORACLE_TOL)
        j = names.index(name)
        se = np.sqrt(vc.cov_params()[j, j] * factor)
        assert got.loc[(gv, e), "std_error"] == pytest.approx(se, rel=1e-8)


def test_unit_without_own_pre_rows_stays_as_in_fixest():
    """fixest's always-treated rule is per cohort (``sunab`` sees no unit id): a unit whose
    pre-treatment rows are missing stays when its cohort has pre-treatment rows. Dropping
    it (our old per-unit rule) moved the harness's unbalanced-panel ATT by 5e-5 relative
    vs diff-diff, which keeps it too (benchmarks/RESULTS.md). Oracle: dummy-variable OLS
    on every row; ATT = post-treatment cells weighted by their row counts."""
    d = simulate_panel(n_units=30, n_periods=6, seed=5, cohorts=(3, 5, 0), dynamic=0.5)
    # unit 0 (cohort 2003) loses 2001-02, unit 1 (cohort 2005) 2001-04: no own pre row
    d = d[~(((d["id"] == 0) & (d["year"] < 2003)) | ((d["id"] == 1) & (d["year"] < 2005)))]
    d = d.reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = sun_abraham(d, **SIM)
    assert r.nobs == len(d)
    assert not any("always" in k for k in r.diagnostics["dropped_rows"])
    dd, cells = _dummy_design(d)
    fit = smf.ols("y ~ " + " + ".join(n for *_, n in cells) + " + C(id) + C(year)", dd).fit()
    got = r.interactions.set_index(["cohort", "rel_time"])
    for gv, e, name in cells:
        assert got.loc[(gv, e), "estimate"] == pytest.approx(fit.params[name], abs=ORACLE_TOL)
    rel = np.where(d["g"] > 0, d["year"] - d["g"], -1)
    post = [(gv, e, name) for gv, e, name in cells if e >= 0]
    n_cell = np.array([np.sum((d["g"] == gv) & (rel == e)) for gv, e, _ in post], float)
    att = np.sum(n_cell * np.array([fit.params[n] for *_, n in post])) / n_cell.sum()
    assert float(r.aggregate("simple").params["ATT"]) == pytest.approx(att, abs=ORACLE_TOL)
    # the rows of a cohort none of which is before its treatment are still dropped
    d2 = pd.concat([d, d[d["id"] == 0].assign(id=99, g=2001)], ignore_index=True)
    with pytest.warns(Warning, match="always-treated"):
        r2 = sun_abraham(d2, **SIM)
    assert r2.nobs == len(d)


def test_cohort_without_a_row_at_the_reference_period_is_dropped():
    """A treated cohort with no row at rel_time -1 (its rows there missing) has dummies
    that add up to its own indicator, absorbed by the unit effects: identified only up
    to a constant. fixest drops one collinear dummy, i.e. silently normalises that
    cohort on another period (verify helper, run U: few treated units with 5% of rows
    missing moved the simple ATT by 28% vs diff-diff, which drops yet another dummy).
    Such a cohort's rows are dropped, counted and warned; the result equals the fit
    without them, and a cohort that still has a row at the reference period stays."""
    d = simulate_panel(n_units=30, n_periods=6, seed=5, cohorts=(3, 5, 0), dynamic=0.5)
    g5 = d.loc[d["g"] == 2005, "id"].unique()
    # cohort 2005 loses its 2004 rows (rel_time -1) in every unit
    d1 = d[~((d["g"] == 2005) & (d["year"] == 2004))].reset_index(drop=True)
    with pytest.warns(Warning, match="no row at the reference period") as rec:
        r = sun_abraham(d1, **SIM)
    assert not any("collinear" in str(w.message) for w in rec)
    key = [k for k in r.diagnostics["dropped_rows"] if "reference period" in k]
    assert len(key) == 1 and "2005" in key[0]
    assert r.diagnostics["dropped_rows"][key[0]] == int((d1["g"] == 2005).sum())
    assert r.nobs == int((d1["g"] != 2005).sum())
    with warnings.catch_warnings():
        warnings.simplefilter("error", DroppedRowsWarning)
        want = sun_abraham(d1[d1["g"] != 2005], **SIM)
    assert r.interactions["cohort"].unique().tolist() == [2003.0]
    np.testing.assert_allclose(r.coef, want.coef, rtol=1e-12, atol=0)
    np.testing.assert_allclose(r.cov, want.cov, rtol=1e-12, atol=0)
    assert float(r.aggregate("simple").params["ATT"]) == pytest.approx(
        float(want.aggregate("simple").params["ATT"]), rel=1e-12)
    # one unit of the cohort keeps its rel_time -1 row: identified, nothing dropped
    d2 = d[~((d["g"] == 2005) & (d["year"] == 2004) & (d["id"] != g5[0]))]
    r2 = sun_abraham(d2.reset_index(drop=True), **SIM)
    assert not any("reference period" in k for k in r2.diagnostics["dropped_rows"])
    assert 2005.0 in r2.interactions["cohort"].tolist()
    # with ref=(-1, -3) a row at rel_time -3 is enough
    r3 = sun_abraham(d1, **SIM, ref=(-1, -3))
    assert not any("reference period" in k for k in r3.diagnostics["dropped_rows"])
    assert 2005.0 in r3.interactions["cohort"].tolist()


def test_single_cohort_equals_twfe_event_study():
    from twinimpact.estimators.twfe import event_study

    d = simulate_panel(n_units=40, n_periods=8, seed=4, cohorts=(4, 0), dynamic=0.3)
    sa = sun_abraham(d, **SIM)
    es = event_study(d, **SIM)
    for t in sa.terms:
        if t.startswith("rel_time="):
            assert sa.params[t] == pytest.approx(es.params[t], abs=ORACLE_TOL)
            assert sa.std_errors[t] == pytest.approx(es.std_errors[t], rel=1e-8)


def test_last_treated_control_equals_recoded_never_treated():
    d = simulate_panel(n_units=30, n_periods=8, seed=7, cohorts=(3, 5, 7))
    with pytest.warns(Warning, match="last-treated"):
        r = sun_abraham(d, **SIM, control_group="last_treated")
    manual = d[d["year"] < 2007].assign(g=lambda x: np.where(x["g"] == 2007, 0, x["g"]))
    m = sun_abraham(manual, **SIM)
    np.testing.assert_allclose(r.coef, m.coef, atol=1e-10)
    np.testing.assert_allclose(r.std_errors, m.std_errors, atol=1e-10)
    assert sum(r.diagnostics["dropped_rows"].values()) == int((d["year"] >= 2007).sum())
    assert r.diagnostics["control_cohort"] == "cohort 2007"


def test_cohort_aggregation_weights():
    d = simulate_panel(n_units=30, n_periods=6, seed=8, dynamic=1.0)
    r = sun_abraham(d, **SIM)
    agg = r.aggregate("cohort")
    cells = r.interactions
    for gv in (2003, 2005):
        post = cells[(cells["cohort"] == gv) & (cells["rel_time"] >= 0)]
        exp = np.average(post["estimate"], weights=post["n_obs"])
        assert agg.params[f"cohort={gv}"] == pytest.approx(exp, abs=1e-12)
    assert agg.params["ATT"] == pytest.approx(r.params["ATT"], abs=1e-12)
    assert agg.to_frame().set_index("term").loc["cohort=2003", "cohort"] == 2003
    assert r.aggregate("dynamic") is r
    with pytest.raises(SpecificationError):
        r.aggregate("calendar")


# ----------------------------------------------------------------------- invariances
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), shift=st.integers(-50, 50),
       const=st.floats(-100, 100), scale=st.floats(0.1, 10) | st.floats(-10, -0.1))
def test_invariances(seed, shift, const, scale):
    d = simulate_panel(n_units=24, n_periods=6, seed=seed)
    base = sun_abraham(d, **SIM)
    moved = d.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    moved["id"] = "u" + moved["id"].astype(str)
    moved["year"] += shift
    moved["g"] = np.where(moved["g"] > 0, moved["g"] + shift, 0)
    r = sun_abraham(moved, **SIM)
    np.testing.assert_allclose(r.coef, base.coef, atol=1e-8)
    np.testing.assert_allclose(r.std_errors, base.std_errors, atol=1e-8)
    rc = sun_abraham(d.assign(y=d["y"] + const), **SIM)
    np.testing.assert_allclose(rc.coef, base.coef, atol=1e-7)
    rs = sun_abraham(d.assign(y=d["y"] * scale), **SIM)
    np.testing.assert_allclose(rs.coef, base.coef * scale, atol=1e-8 * abs(scale))
    np.testing.assert_allclose(rs.std_errors, base.std_errors * abs(scale),
                               atol=1e-8 * abs(scale))


def test_ci_covers_known_homogeneous_effect():
    d = simulate_panel(n_units=300, n_periods=8, effect=2.0, seed=13)
    f = sun_abraham(d, **SIM).to_frame(0.01)
    post = f[(f["rel_time"] >= 0) | (f["term"] == "ATT")]
    assert ((post["ci_lower"] <= 2.0) & (post["ci_upper"] >= 2.0)).all()


# ----------------------------------------------------------------------- bad input
def test_no_never_treated_suggests_last_treated():
    with pytest.raises(EstimationError, match="last_treated"):
        sun_abraham(simulate_panel(cohorts=(3, 5)), **SIM)


def test_cohort_varying_within_unit_is_rejected():
    d = simulate_panel()
    d.loc[d.index[1], "g"] = 2004
    with pytest.raises(InputError, match="varies within unit"):
        sun_abraham(d, **SIM)


def test_bad_control_literal():
    with pytest.raises(SpecificationError, match="never_treated"):
        sun_abraham(simulate_panel(), **SIM, control_group="nevertreated")


def test_always_treated_dropped_and_caller_frame_unchanged(stagg):
    d = simulate_panel(cohorts=(1, 4, 0))
    before = d.copy(deep=True)
    with pytest.warns(Warning, match="always-treated"):
        r = sun_abraham(d, **SIM)
    pd.testing.assert_frame_equal(d, before)
    assert sum(r.diagnostics["dropped_rows"].values()) == int((d["g"] == 2001).sum())
    s0 = stagg.copy(deep=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sun_abraham(stagg, **KW, covariates=["x1"], ref=(-1, -2))
    pd.testing.assert_frame_equal(stagg, s0)


def test_first_seen_codes_equal_pandas_factorize_of_the_labels():
    """The fit's unit / period codes come from the validation's integer codes renumbered
    in order of first appearance: exactly pd.factorize's codes of the labels (so the sums
    run in the same order as on the labels), levels absent after a row drop left out."""
    from twinimpact.estimators.sun_abraham import _first_seen_codes

    rng = np.random.default_rng(4)
    for n, levels in [(1, 1), (50, 7), (2000, 300), (5000, 5000)]:
        labels = rng.choice(np.array([f"u{i}" for i in range(levels)], dtype=object), n)
        all_codes = pd.factorize(np.sort(labels))[0]  # some other numbering of the levels
        lab_sorted = np.sort(labels)
        lookup = dict(zip(lab_sorted, all_codes, strict=True))
        codes = np.array([lookup[v] for v in labels], dtype=np.intp)
        keep = rng.random(n) < 0.7
        keep[0] = True
        got, n_present = _first_seen_codes(codes[keep], levels)
        want, uniques = pd.factorize(labels[keep])
        np.testing.assert_array_equal(got, want)
        assert n_present == len(uniques)


def test_no_residual_degrees_of_freedom_is_said_not_read_as_zero_variance():
    """A saturated fit (9 rows, 9 parameters): every cell variance is NaN. The event-time
    and aggregated variances are NaN with the reason (no residual degrees of freedom) in
    a warning -- they were silent in the event-time result and, in the aggregation, the
    NaN cells were read as 0 and reported as "zero up to rounding"."""
    import warnings

    from twinimpact.errors import NotComputableWarning

    d = pd.DataFrame({"u": np.repeat([0, 1, 2], 3), "t": np.tile([1, 2, 3], 3),
                      "g": np.repeat([2.0, 3.0, np.nan], 3)})
    d["y"] = np.random.default_rng(0).normal(size=len(d))
    for agg in (None, "simple", "cohort"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = sun_abraham(d, outcome="y", unit="u", time="t", cohort="g")
            r = r if agg is None else r.aggregate(agg)
        msgs = [str(w.message) for w in caught if issubclass(w.category,
                                                             NotComputableWarning)]
        assert np.isfinite(r.coef).all() and np.isnan(np.diag(r.cov)).all(), agg
        assert any("no residual degrees of freedom" in m for m in msgs), (agg, msgs)
        assert not any("zero up to rounding" in m for m in msgs), (agg, msgs)


def test_aggregates_of_cells_with_variances_are_unchanged_by_a_nan_elsewhere():
    """combine_vcov: only the combinations that weigh a cell whose variance is NaN are
    NaN; a cell without an estimate (weight 0) is left out as before."""
    from twinimpact.results import combine_vcov

    coef = np.array([1.0, 2.0, np.nan, 4.0])
    v = np.array([[1.0, 0.1, np.nan, 0.0], [0.1, 2.0, np.nan, 0.0],
                  [np.nan] * 4, [0.0, 0.0, np.nan, np.nan]])
    a = np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.5, 0.0, 0.0, 0.5]])
    out = combine_vcov(a, coef, v)
    assert out[0, 0] == pytest.approx(0.25 * (1 + 2 + 0.2))
    assert np.isnan(out[1]).all() and np.isnan(out[2]).all() and np.isnan(out[:, 1]).all()
    same = combine_vcov(a[:1], coef, v, zero=np.array([False, False, False, True]))
    assert same[0, 0] == pytest.approx(out[0, 0])
