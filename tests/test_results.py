"""The results protocol: immutability, labelled views, tidy schema, NaN handling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from twinimpact.errors import NotComputableWarning, SpecificationError
from twinimpact.results import TIDY_COLUMNS, VcovSpec, make_result


def _result(df=None):
    params = pd.Series({"ATT": 1.0, "x": -2.0})
    v = np.array([[0.25, 0.01], [0.01, 1.0]])
    return make_result("demo", params, v, VcovSpec("cluster", ("id",), (30,), df=df), 100,
                       spec={"outcome": "y", "covariates": ["x"]},
                       diagnostics={"dropped_rows": {"missing y": 2}})


def test_labelled_views_and_inference():
    r = _result()
    assert list(r.params.index) == ["ATT", "x"]
    assert r.std_errors["ATT"] == pytest.approx(0.5)
    assert r.tstats["x"] == pytest.approx(-2.0)
    assert r.pvalues["ATT"] == pytest.approx(2 * stats.norm.sf(2.0))
    ci = r.conf_int(0.10)
    assert ci.loc["ATT", "lower"] == pytest.approx(1 - stats.norm.ppf(0.95) * 0.5)


def test_t_reference_distribution():
    r = _result(df=29)
    assert r.pvalues["ATT"] == pytest.approx(2 * stats.t.sf(2.0, 29))
    assert r.to_frame()["ci_kind"].iloc[0] == "t(29)"


def test_immutable():
    r = _result()
    p = r.params
    p["ATT"] = 99.0
    assert r.params["ATT"] == 1.0
    with pytest.raises((AttributeError, TypeError)):
        r.nobs = 5  # type: ignore[misc]
    with pytest.raises(ValueError):
        r.coef[0] = 3.0
    with pytest.raises(TypeError):
        r.diagnostics["new"] = 1  # type: ignore[index]
    r2 = r.replace(nobs=5)
    assert r2.nobs == 5 and r.nobs == 100


def test_tidy_schema():
    f = _result().to_frame()
    assert list(f.columns) == [c for c in TIDY_COLUMNS if c in f.columns]
    for c in ("estimator", "term", "estimate", "std_error", "statistic", "p_value",
              "ci_lower", "ci_upper", "ci_kind"):
        assert c in f.columns


def test_nan_is_warned_not_zero():
    with pytest.warns(NotComputableWarning, match="b"):
        r = make_result("demo", pd.Series({"a": 1.0, "b": np.nan}),
                        np.diag([1.0, np.nan]), VcovSpec("iid"), 10)
    assert np.isnan(r.params["b"]) and np.isnan(r.std_errors["b"])


def test_bad_alpha_and_shapes():
    with pytest.raises(SpecificationError, match="alpha"):
        _result().conf_int(alpha=1.5)
    with pytest.raises(SpecificationError):
        make_result("demo", pd.Series({"a": 1.0}), np.eye(2), VcovSpec("iid"), 10)


def test_summary_mentions_vcov_and_terms():
    s = _result().summary()
    assert "cluster by id (30 clusters)" in s and "ATT" in s and "Observations: 100" in s


# ----------------------------------------------------------------------------- typed fields
def test_pretrend_test_wald_chi2_and_f_by_hand():
    from twinimpact.results import PretrendTest, wald_pretrend_test

    b = np.array([0.2, -0.1])
    v = np.array([[0.04, 0.01], [0.01, 0.09]])
    w = float(b @ np.linalg.inv(v) @ b)  # the textbook formula, independently
    chi = wald_pretrend_test(["a", "b"], b, v)
    assert isinstance(chi, PretrendTest) and chi.kind == "Wald chi2"
    assert chi.statistic == pytest.approx(w, rel=1e-12)
    assert chi.p_value == pytest.approx(stats.chi2.sf(w, 2), rel=1e-12)
    assert (chi.df, chi.n_coefficients, chi.rank, chi.terms) == (2, 2, 2, ("a", "b"))
    f = wald_pretrend_test(["a", "b"], b, v, df_denominator=29)
    assert f.kind == "F" and f.statistic == pytest.approx(w / 2, rel=1e-12)
    assert f.p_value == pytest.approx(stats.f.sf(w / 2, 2, 29), rel=1e-12)
    assert "F(2, 29)" in f.summary()
    with pytest.raises(AttributeError):
        f.statistic = 0.0  # type: ignore[misc]


def test_pretrend_test_not_computable_is_nan_with_reason():
    from twinimpact.results import wald_pretrend_test

    with pytest.warns(NotComputableWarning, match="singular"):
        t = wald_pretrend_test(["a", "b"], [1.0, 1.0], [[1.0, 1.0], [1.0, 1.0]])
    assert np.isnan(t.statistic) and np.isnan(t.p_value) and t.rank == 1
    assert "singular" in t.note and "not computed" in t.summary()
    with pytest.warns(NotComputableWarning, match="NaN"):
        t = wald_pretrend_test(["a"], [np.nan], [[1.0]])
    assert np.isnan(t.statistic)
    empty = wald_pretrend_test([], [], np.zeros((0, 0)))
    assert np.isnan(empty.statistic) and empty.n_coefficients == 0


def test_att_definition_and_ci_kind_are_typed():
    from twinimpact.results import ATT_WEIGHTINGS, ATTDefinition

    d = ATTDefinition("cell_size_weighted", "fixest agg = 'att'")
    assert d.description.startswith(ATT_WEIGHTINGS["cell_size_weighted"])
    with pytest.raises(SpecificationError):
        ATTDefinition("average")
    assert VcovSpec("bootstrap", interval="uniform").ci_kind.startswith("uniform")
    with pytest.raises(SpecificationError):
        VcovSpec("iid", interval="simultaneous")


def test_diagnostics_keys_filled_and_with_vcov_refused_without_scores():
    r = _result()
    assert r.diagnostics["n_used_rows"] == 100 and r.diagnostics["notes"] == ()
    with pytest.raises(SpecificationError, match="with_vcov is not available"):
        r.with_vcov("hetero")


def test_wald_pretrend_numerically_singular_or_negative_is_nan():
    """rcond <= q eps counts as singular (a rank-1-in-rounding V gave F ~ 1e16); a
    well-conditioned V gives b' V^-1 b; a negative quadratic form is refused."""
    import warnings as _w

    from twinimpact.results import wald_pretrend_test

    u = np.array([1.0, 2.0]) / np.sqrt(5.0)
    v = 6.1e-3 * np.outer(u, u) + 1.7e-18 * np.eye(2)
    b = np.array([0.3, -0.2])
    with _w.catch_warnings(record=True) as rec:
        _w.simplefilter("always")
        t = wald_pretrend_test(["a", "b"], b, v, df_denominator=50)
    assert np.isnan(t.statistic) and t.rank == 1 and any("rank 1" in str(x.message) for x in rec)
    good = np.array([[2.0, 0.3], [0.3, 1.0]])
    t = wald_pretrend_test(["a", "b"], b, good)
    assert t.statistic == pytest.approx(float(b @ np.linalg.solve(good, b)), rel=1e-14)
    neg = np.array([[1.0, 0.0], [0.0, -1.0]])  # not a covariance: rounding stand-in
    with _w.catch_warnings():
        _w.simplefilter("ignore")
        t = wald_pretrend_test(["a", "b"], np.array([0.1, 1.0]), neg)
    assert np.isnan(t.statistic) and "not positive definite" in t.note


def test_a_standard_error_at_rounding_level_is_nan_with_a_note():
    """An SE below sqrt(eps) of its own estimate (t above 6.7e7) is rounding of a variance
    that is zero by construction: NaN, warned and noted; an SE that is merely small (t =
    1e6), a small SE of a coefficient in small units beside a large one, and a term fixed
    at exactly 0 with exactly 0 variance (a normalised reference period) are kept."""
    b = pd.Series({"a": 1.14, "b": 2.0, "dollars": 3e-9, "big": 5e6, "ref": 0.0})
    v = np.diag([1.7e-30, 4e-12, 1e-20, 1.0, 0.0])
    with pytest.warns(NotComputableWarning, match="no standard error for a: the variance "
                      "is zero up to rounding"):
        r = make_result("toy", b, v, VcovSpec("cluster"), 10)
    assert np.isnan(r.std_errors["a"]) and np.isnan(r.cov[0]).all()
    assert r.std_errors["b"] == pytest.approx(2e-6) and r.std_errors["ref"] == 0.0
    assert r.std_errors["dollars"] == pytest.approx(1e-10) and r.std_errors["big"] == 1.0
    assert r.params["a"] == 1.14  # the estimate itself stands
    assert any(n.startswith("no standard error for a:") for n in r.diagnostics["notes"])


def test_an_effect_variance_at_rounding_level_of_the_other_effects_is_nan():
    """Among effects by event time (one unit, the outcome's), a variance at or below
    1e3 eps of the largest effect variance is rounding of zero also beside a small
    estimate (Driscoll-Kraay, fuzz seed 11885: SE 1.05e-9 beside -0.050, 2.1e-8 of it,
    past the own-estimate bound in one row order only); a covariate with the same tiny
    variance (no event time: other units) and a normalised reference period (0 and 0)
    are kept, as is an effect whose SE is merely small (1e-5 of the largest) and one
    whose variance is tiny beside the others' but whose t-statistic is 1000."""
    terms = ["rel_time=-1", "rel_time=0", "rel_time=3", "rel_time=4", "rel_time=5", "x",
             "ATT"]
    b = pd.Series([0.0, 0.81, -0.050, 0.3, 3.2e-5, 2e-4, 0.5], index=terms)
    # rel_time=5: a variance 6e-14 of the largest but t = 1012 (an effect on a scale far
    # below the others', e.g. small exporters' flows in levels): a measured precision
    v = np.diag([0.0, 0.0163, 1.09e-18, 1.63e-12, 1e-15, 1.09e-18, 0.01])
    info = pd.DataFrame({"rel_time": [-1.0, 0.0, 3.0, 4.0, 5.0, np.nan, np.nan]},
                        index=terms)
    with pytest.warns(NotComputableWarning, match=r"no standard error for rel_time=3: the "
                      r"variance is zero up to rounding"):
        r = make_result("toy", b, v, VcovSpec("cluster"), 10, term_info=info)
    se = r.std_errors
    assert np.isnan(se["rel_time=3"]) and se["rel_time=-1"] == 0.0
    assert se["rel_time=4"] == pytest.approx(np.sqrt(1.63e-12))
    assert se["rel_time=5"] == pytest.approx(np.sqrt(1e-15))
    assert se["x"] == pytest.approx(np.sqrt(1.09e-18)) and se["ATT"] == pytest.approx(0.1)
    # without term_info nothing is known to share a unit: only the own-estimate rule
    r0 = make_result("toy", b, v, VcovSpec("cluster"), 10)
    assert np.isfinite(r0.std_errors["rel_time=3"])
    # with_vcov judges the new variance by the same rules
    from twinimpact.results import effect_terms
    # the ATT beside effects by event time is their average: in their unit
    assert effect_terms(terms, info).tolist() == [True] * 5 + [False, True]
    assert not effect_terms(["x", "ATT"], info.loc[["x", "ATT"]]).any()


def test_an_att_or_effect_at_rounding_level_beside_effects_is_nan():
    """The ATT beside effects by event time is judged as an effect: a variance 2.9e-17 of
    the largest (two post cells whose variances cancel; Poisson event study, fuzz seed
    578292) beside an ATT of -0.006 (t 1.3e7, below the 1e-8 own-estimate bound in one
    row order only) is rounding of zero. So is an effect with t 7.9e5 (seed 267237: under
    the old own bound, t above 1e6, it was kept in one row order); one with t 1012 stays."""
    terms = ["rel_time=2", "rel_time=3", "rel_time=4", "rel_time=5", "ATT"]
    b = pd.Series([0.111, -0.123, -0.0013, 3.2e-5, -0.006], index=terms)
    v = np.diag([7.586e-3, 7.586e-3, 2.8e-18, 1e-15, 2.2e-19])
    info = pd.DataFrame({"rel_time": [2.0, 3.0, 4.0, 5.0, np.nan]}, index=terms)
    with pytest.warns(NotComputableWarning, match=r"no standard error for rel_time=4, ATT"):
        r = make_result("toy", b, v, VcovSpec("cluster"), 10, term_info=info)
    se = r.std_errors
    assert np.isnan(se["ATT"]) and np.isnan(se["rel_time=4"])
    assert r.diagnostics["variance_zero_up_to_rounding"] == ("rel_time=4", "ATT")
    assert se["rel_time=5"] == pytest.approx(np.sqrt(1e-15))
    assert se["rel_time=2"] == pytest.approx(np.sqrt(7.586e-3))
    # an ATT without effects beside it (a static fit) is judged by its own estimate only
    r1 = make_result("toy", b[["ATT"]], v[-1:, -1:], VcovSpec("cluster"), 10)
    assert r1.std_errors["ATT"] == pytest.approx(np.sqrt(2.2e-19))


def test_imputation_with_one_treated_row_per_cell_reports_no_standard_error():
    """BJS's conservative variance with one treated observation per cohort x horizon is
    zero by construction (tau-bar equals the observation's own effect): SE 1.3e-15 beside
    an ATT of 1.144, p = 0, and another value in another row order (fuzz seed 20731).
    Now NaN with a warning, the estimate unchanged, in both row orders."""
    import warnings

    import twinimpact as ti

    d = pd.DataFrame({
        "u": [0, 0, 0, 1, 1, 1, 3, 3, 4, 4, 5, 6, 6, 7, 7, 7, 7, 8],
        "t": [2000, 2001, 2002, 2000, 2001, 2003, 2002, 2003, 2002, 2003, 2002, 2002, 2003,
              2000, 2001, 2002, 2003, 2001],
        "g": [2002] * 3 + [2003] * 3 + [np.inf] * 12,
        "y": [0.323723, 0.467763, 0.877895, 0.501157, 0.270484, 2.162752, 2.333903,
              0.978321, 1.447556, 1.177427, 1.690257, 2.274823, 2.078573, 2.087676,
              2.476739, 2.087621, 2.447405, 3.008716]})
    for frame in (d, d.sample(frac=1, random_state=3)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = ti.event_study(frame, outcome="y", unit="u", time="t", cohort="g",
                               method="imputation")
        assert r.terms == ("rel_time=0", "ATT")
        assert np.isfinite(r.coef).all() and np.isnan(np.diag(r.cov)).all(), r.cov
        assert any("no standard error for rel_time=0, ATT" in str(w.message)
                   for w in caught), [str(w.message) for w in caught]


def test_a_pretrend_test_on_rounding_variances_is_made_again_on_the_reported_ones():
    """An estimator's pre-trend test made on variances that make_result then reports as
    rounding of zero (all of the fit at 1e-30 beside estimates of 1: no relative rule sees
    it, F ~ 1e30) is not left standing beside NaN standard errors: it is made again on the
    reported variances, hence not computed, with the warnings that say why."""
    from twinimpact.results import wald_pretrend_test

    b = pd.Series({"rel_time=-2": 1.0, "rel_time=0": 2.0})
    v = np.diag([1e-30, 2e-30])
    raw = wald_pretrend_test(["rel_time=-2"], b.to_numpy()[:1], v[:1, :1],
                             df_denominator=9.0, scale=2e-30)
    assert raw.statistic > 1e29  # what the estimator hands over
    with pytest.warns(NotComputableWarning) as rec:
        r = make_result("toy", b, v, VcovSpec("cluster", df=9.0), 10, pretrend_test=raw)
    assert np.isnan(r.std_errors).all()
    assert np.isnan(r.pretrend_test.statistic) and r.pretrend_test.terms == ("rel_time=-2",)
    assert r.pretrend_test.df_denominator == 9.0
    msgs = [str(w.message) for w in rec]
    assert any("no standard error for rel_time=-2, rel_time=0" in m for m in msgs), msgs
    assert any("pre-trend test not computed" in m for m in msgs), msgs
