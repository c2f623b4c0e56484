"""PPML with high-dimensional fixed effects: Advanced Guide (Yotov et al. 2016) published
numbers, pyfixest ``fepois`` references, a dummy-variable Poisson GLM oracle (statsmodels),
separation / singleton handling, invariances and bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st

import twinimpact as ti
from twinimpact.errors import (
    ColumnError,
    ConvergenceWarning,
    DroppedRowsWarning,
    InputError,
    NotComputableWarning,
    SpecificationError,
)
from twinimpact.estimators.ppml import lincom, ppml

from ..conftest import DATA, REFERENCE

#: estimates vs pyfixest (both run to deviance change 1e-8 or tighter; observed ~1e-14)
PEER_COEF_TOL = 1e-6
#: standard errors vs pyfixest once the K convention is aligned (observed ~1e-9)
PEER_SE_RTOL = 1e-6
#: published numbers are printed with 4 decimals: half a unit of the last digit (+ float slack)
PUBLISHED_TOL = 5.01e-5
#: two-way clustered SEs vs pyfixest: same K (fixest default) and the same meat
TWOWAY_K_RTOL = PEER_SE_RTOL
#: fast FE path vs the dummy-variable GLM on the same sample (both converged to 1e-10)
ORACLE_TOL = 1e-6

PUB = json.loads((REFERENCE / "ppml" / "yotov_2016_app3_published.json").read_text())["models"]
PEER = json.loads((REFERENCE / "ppml" / "yotov_pyfixest.json").read_text())["models"]
FE_XT = [("exporter", "year"), ("importer", "year")]
FE_PAIR = [*FE_XT, "pair_id_2"]
BORDERS = [f"intl_border_{y}" for y in range(1986, 2003, 4)]
LAGS = ["rta", "rta_lag4", "rta_lag8", "rta_lag12"]


@pytest.fixture(scope="module")
def app3() -> pd.DataFrame:
    """Chapter 1 Application 3 sample, prepared as tradepolicy does (see the reference
    files): 4-year intervals, one pair level shared by all domestic pairs."""
    d = pd.read_parquet(DATA / "gravity_yotov" / "agtpa_applications.parquet")
    d = d[d["year"].isin(range(1986, 2007, 4))].copy()
    d["log_dist"] = np.log(d["dist"])
    intra = d["exporter"] == d["importer"]
    d["pair_id_2"] = np.where(intra, -1, d["pair_id"])
    d["intl_brdr"] = np.where(intra, d["pair_id"], -1)
    for y in range(1986, 2007, 4):
        d[f"intl_border_{y}"] = ((~intra) & (d["year"] == y)).astype(float)
    d["sum_trade"] = d.groupby("pair_id")["trade"].transform("sum")
    return d.reset_index(drop=True)


def _check_published(r, name, total=None):
    pub = PUB[name]
    assert r.nobs == pub["nobs"]
    for t, v in pub["coef"].items():
        assert abs(r.params[t] - v) <= PUBLISHED_TOL, t
    for t, v in pub["se"].items():
        assert abs(r.std_errors[t] - v) <= PUBLISHED_TOL, t
    if total:
        tot = r.lincom(pub["total"]["terms"])
        assert abs(tot.params.iloc[0] - pub["total"]["estimate"]) <= PUBLISHED_TOL
        assert abs(tot.std_errors.iloc[0] - pub["total"]["se"]) <= PUBLISHED_TOL


def _check_peer(r, name, vname="cluster_pair"):
    """Same K as pyfixest and R fixest's default: n_sets - 1 redundancies
    (``ssc(fixef.force_exact = FALSE)``), even when the two FE sets are not connected."""
    peer = PEER[name]
    assert r.nobs == peer["nobs"]
    for t, v in peer["coef"].items():
        assert abs(r.params[t] - v) <= PEER_COEF_TOL, t
    for t, v in peer["vcov"][vname]["se"].items():
        assert r.std_errors[t] == pytest.approx(v, rel=PEER_SE_RTOL), t


def test_international_flows_published_and_pyfixest(app3):
    """(a) log distance, contiguity, language, colony, RTA with exporter-year and
    importer-year FE; international flows only (zeros kept: 28,152 rows)."""
    d = app3[app3["exporter"] != app3["importer"]]
    regs = ["log_dist", "cntg", "lang", "clny", "rta"]
    r = ppml(d, outcome="trade", regressors=regs, fixed_effects=FE_XT, cluster="pair_id",
             ssc_adj=False)
    _check_published(r, "ppml_international")
    # fixest's default K (fixef.force_exact = FALSE): 414 + 414 levels minus one per extra
    # FE set -- not the 6 connected components (one per year) an exact count finds
    assert r.diagnostics["k_fe"] == 827
    r = ppml(d, outcome="trade", regressors=regs, fixed_effects=FE_XT, cluster="pair_id")
    _check_peer(r, "ppml_international")
    assert r.diagnostics["converged"] and r.diagnostics["n_zero_outcome"] > 0
    for vname in ("iid", "hetero"):
        rv = ppml(d, outcome="trade", regressors=regs, fixed_effects=FE_XT, vcov=vname)
        _check_peer(rv, "ppml_international", vname)


def test_vcov_cluster_alone_clusters_by_the_first_fixed_effect(app3):
    """``vcov="cluster"`` without ``cluster=``: the first FE set (here the exporter-year
    cells), fixest's pre-0.13 default; peer value is pyfixest ``vcov={"CRV1": "exp_year"}``.
    With nothing given the default is iid, as fixest >= 0.13 and pyfixest 0.60."""
    d = app3[app3["exporter"] != app3["importer"]]
    regs = ["log_dist", "cntg", "lang", "clny", "rta"]
    assert ppml(d, outcome="trade", regressors=regs,
                fixed_effects=FE_XT).vcov_spec.kind == "iid"
    r = ppml(d, outcome="trade", regressors=regs, fixed_effects=FE_XT, vcov="cluster")
    assert r.vcov_spec.kind == "cluster"
    assert r.vcov_spec.cluster == ("exporter^year",) and r.vcov_spec.n_clusters == (414,)
    _check_peer(r, "ppml_international", "cluster_first_fe")
    explicit = ppml(d.assign(ey=d["exporter"] + d["year"].astype(str)), outcome="trade",
                    regressors=regs, fixed_effects=FE_XT, cluster="ey")
    np.testing.assert_allclose(r.std_errors, explicit.std_errors, rtol=1e-12)


def test_international_flows_twoway_cluster(app3):
    d = app3[app3["exporter"] != app3["importer"]]
    regs = ["log_dist", "cntg", "lang", "clny", "rta"]
    r = ppml(d, outcome="trade", regressors=regs, fixed_effects=FE_XT,
             cluster=("exporter", "importer"))
    assert r.vcov_spec.kind == "twoway_cluster"
    assert r.vcov_spec.n_clusters == (69, 69)
    # Both FE sets are nested in a cluster variable (fixest fixef.K = "nested").
    peer = PEER["ppml_international"]["vcov"]["twoway_exporter_importer"]["se"]
    for t, v in peer.items():
        assert r.std_errors[t] == pytest.approx(v, rel=TWOWAY_K_RTOL), t


def test_pair_fe_rta_published_and_pyfixest(app3):
    """(b) RTA only with exporter-year, importer-year and pair FE (domestic pairs share
    one pair level), pairs with positive total trade."""
    d = app3[app3["sum_trade"] > 0]
    r = ppml(d, outcome="trade", regressors=["rta"], fixed_effects=FE_PAIR, cluster="pair_id",
             ssc_adj=False)
    _check_published(r, "endogeneity")
    assert r.diagnostics["n_fe_levels"]["pair_id_2"] == 2340
    r = ppml(d, outcome="trade", regressors=["rta"], fixed_effects=FE_PAIR, cluster="pair_id")
    _check_peer(r, "endogeneity")


def test_lead_and_phasing_in_with_total_effect(app3):
    """(c) RTA with a 4-year lead, and RTA with 4/8/12-year lags plus the delta-method
    total effect (sum of rta and its lags)."""
    d = app3[app3["sum_trade"] > 0]
    for name, regs in (("reverse_causality", ["rta", "rta_lead4"]), ("phasing_in", LAGS)):
        r = ppml(d, outcome="trade", regressors=regs, fixed_effects=FE_PAIR,
                 cluster="pair_id", ssc_adj=False)
        _check_published(r, name, total=True)
        r = ppml(d, outcome="trade", regressors=regs, fixed_effects=FE_PAIR,
                 cluster="pair_id")
        _check_peer(r, name)


@pytest.mark.slow
def test_globalization_published_and_pyfixest(app3):
    """(d) (c) plus international-border x year dummies."""
    d = app3[app3["sum_trade"] > 0]
    r = ppml(d, outcome="trade", regressors=LAGS + BORDERS, fixed_effects=FE_PAIR,
             cluster="pair_id", ssc_adj=False)
    _check_published(r, "globalization", total=True)
    adj = r.vcov_spec.small_sample
    assert adj["adj"] == 1.0 and adj["cluster_adj"] > 1
    r = ppml(d, outcome="trade", regressors=LAGS + BORDERS, fixed_effects=FE_PAIR,
             cluster="pair_id")
    _check_peer(r, "globalization")


@pytest.mark.slow
def test_trade_diversion_published(app3):
    r = ppml(app3, outcome="trade", regressors=["log_dist", "cntg", "lang", "clny", "rta"],
             fixed_effects=[*FE_XT, "intl_brdr"], cluster="pair_id", ssc_adj=False)
    _check_published(r, "trade_diversion")


@pytest.mark.slow
def test_equals_dummy_variable_glm_oracle(app3):
    """Slow, obviously correct path: statsmodels Poisson GLM with explicit exporter-year
    and importer-year dummies on an 8-country subset."""
    keep = sorted(app3["exporter"].unique())[:8]
    d = app3[app3["exporter"].isin(keep) & app3["importer"].isin(keep)
             & (app3["exporter"] != app3["importer"])].reset_index(drop=True)
    regs = ["log_dist", "cntg", "lang", "rta"]
    r = ppml(d, outcome="trade", regressors=regs, fixed_effects=FE_XT, cluster="pair_id",
             fe_tol=1e-12, tol=1e-12)
    ex = d["exporter"] + d["year"].astype(str)
    im = d["importer"] + d["year"].astype(str)
    dummies = pd.concat([pd.get_dummies(ex, prefix="e", dtype=float),
                         pd.get_dummies(im, prefix="i", dtype=float)], axis=1)
    # drop one importer dummy per year (each year is one connected component)
    drop = [f"i_{keep[0]}{y}" for y in sorted(d["year"].unique())]
    exog = pd.concat([d[regs], dummies.drop(columns=drop)], axis=1)
    # CRV1 with (n-1)/(n-K) and G/(G-1), K = all GLM columns: statsmodels' default correction
    # (QR least squares: one fit, no SVD, which is slow under BLAS thread contention)
    glm = sm.GLM(d["trade"], exog, family=sm.families.Poisson()).fit(
        tol=1e-13, maxiter=200, wls_method="qr", cov_type="cluster",
        cov_kwds={"groups": pd.factorize(d["pair_id"])[0]})
    n_years = d["year"].nunique()
    # the GLM's K counts the dummies it estimates (exact: one reference per year); ours is
    # fixest's default (one reference per extra FE set): rescale the (n-1)/(n-K) factor
    assert exog.shape[1] == len(regs) + r.diagnostics["k_fe"] - (n_years - 1)
    n = len(d)
    k_ours = r.vcov_spec.small_sample["K"]
    factor = np.sqrt((n - k_ours) / (n - exog.shape[1]))
    for t in regs:
        assert abs(r.params[t] - glm.params[t]) < ORACLE_TOL
        assert r.std_errors[t] * factor == pytest.approx(glm.bse[t], rel=1e-5)


# ------------------------------------------------------------------ synthetic data
def _panel(n_i: int = 30, n_t: int = 6, seed: int = 0, zeros: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    d = pd.DataFrame({"i": np.repeat(np.arange(n_i), n_t), "t": np.tile(np.arange(n_t), n_i)})
    d["x1"] = rng.normal(size=len(d))
    d["x2"] = rng.binomial(1, 0.4, size=len(d)).astype(float)
    mu = np.exp(0.3 * d["x1"] - 0.5 * d["x2"] + 0.2 * (d["i"] % 5) + 0.1 * d["t"])
    d["y"] = rng.poisson(mu * (1.0 if zeros else 20.0)).astype(float)
    d["g"] = d["i"] % 7
    return d


KW = dict(outcome="y", regressors=["x1", "x2"], fixed_effects=["i", "t"])


def test_scaling_outcome_leaves_slopes_unchanged():
    d = _panel()
    r = ppml(d, **KW, cluster="i")
    d2 = d.assign(y=d["y"] * 1234.5)
    r2 = ppml(d2, **KW, cluster="i")
    np.testing.assert_allclose(r2.params, r.params, atol=1e-8)
    np.testing.assert_allclose(r2.std_errors, r.std_errors, rtol=1e-6)


def test_zeros_are_kept_unless_separated():
    d = _panel()
    assert (d["y"] == 0).sum() > 20
    # every unit and period has a positive outcome somewhere: nothing is separated
    assert d.groupby("i")["y"].sum().min() > 0
    r = ppml(d, **KW)
    assert r.nobs == len(d)
    assert r.diagnostics["dropped_rows"] == {}
    assert r.diagnostics["n_zero_outcome"] == int((d["y"] == 0).sum())


def test_fixed_effect_level_with_all_zero_outcomes_is_dropped():
    d = _panel(zeros=False)
    d.loc[d["i"] == 3, "y"] = 0.0
    d.loc[d["i"] == 8, "y"] = 0.0
    with pytest.warns(DroppedRowsWarning, match="separated"):
        r = ppml(d, **KW)
    assert r.diagnostics["dropped_rows"] == {
        "separated (fixed effect with all-zero outcomes)": 12}
    assert r.nobs == len(d) - 12
    # same estimates as fitting without those units
    r2 = ppml(d[~d["i"].isin([3, 8])], **KW)
    np.testing.assert_allclose(r.params, r2.params, atol=1e-10)
    assert set(r.extras["rows_used"]) == set(np.flatnonzero(~d["i"].isin([3, 8])))


@pytest.mark.parametrize("separation, key", [
    (True, "separated (simplex check)"), ("fe+relu", "separated (ReLU check)"),
    ("relu", "separated (ReLU check)")])
def test_separation_by_a_regressor_found_by_simplex_or_relu(separation, key):
    """x3 > 0 only on zero-outcome rows: the MLE of its coefficient is -inf and those rows
    are separated (Correia, Guimarães & Zylkin 2021, example of section 2). The default
    (ppmlhdfe's fe, simplex, relu) finds them in the simplex step; ReLU alone too."""
    d = _panel(zeros=True, seed=3)
    zero_rows = np.flatnonzero(d["y"].to_numpy() == 0)[:5]
    d["x3"] = 0.0
    d.loc[zero_rows, "x3"] = np.arange(1, 6, dtype=float)
    with pytest.warns(DroppedRowsWarning, match="dropped 5 separated"), \
            pytest.warns(NotComputableWarning, match="x3"):
        r = ppml(d, outcome="y", regressors=["x1", "x3"], fixed_effects=["i", "t"],
                 separation=separation)
    assert r.diagnostics["dropped_rows"] == {key: 5}
    assert not set(zero_rows) & set(r.extras["rows_used"])
    # x3 is then all zero: not identified, reported as NaN (never 0)
    assert np.isnan(r.params["x3"])
    # without the check IRLS drifts toward -inf for x3 instead
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r_fe = ppml(d, outcome="y", regressors=["x1", "x3"], fixed_effects=["i", "t"],
                    separation="fe", maxiter=30)
    assert r_fe.params["x3"] < -5


def test_singletons_counted_and_dropped_without_changing_slopes():
    d = _panel(zeros=False)
    extra = pd.DataFrame({"i": [100, 101], "t": [0, 1], "x1": [0.3, -1.0], "x2": [1.0, 0.0],
                          "y": [4.0, 7.0], "g": [0, 0]})
    d2 = pd.concat([d, extra], ignore_index=True)
    r = ppml(d2, **KW)
    assert r.diagnostics["dropped_rows"] == {"singleton": 2}
    r_keep = ppml(d2, **KW, drop_singletons=False)
    assert r_keep.nobs == len(d2)
    np.testing.assert_allclose(r.params, r_keep.params, atol=1e-7)


def test_non_convergence_warns_with_criterion():
    d = _panel()
    with pytest.warns(ConvergenceWarning, match=r"estimates are NaN.*dev_old.*Seen"):
        r = ppml(d, **KW, maxiter=2)
    assert r.diagnostics["converged"] is False
    assert r.diagnostics["crit"] > 1e-8
    # a solve that did not converge is not an estimate: NaN, last iterate in diagnostics
    assert r.params.isna().all() and np.isnan(r.vcov.to_numpy()).all()
    assert set(r.diagnostics["last_iterate"]) == set(r.params.index)
    assert all(np.isfinite(list(r.diagnostics["last_iterate"].values())))


def test_frequency_weights_equal_duplicated_rows():
    d = _panel(zeros=False, n_i=15)
    rng = np.random.default_rng(5)
    d["w"] = rng.integers(1, 4, size=len(d)).astype(float)
    r = ppml(d, **KW, weights="w")
    dup = d.loc[d.index.repeat(d["w"].astype(int))]
    r2 = ppml(dup, **KW)
    np.testing.assert_allclose(r.params, r2.params, atol=1e-8)


def test_offset_shifts_the_coefficient():
    d = _panel(zeros=False)
    r = ppml(d, **KW)
    d["o"] = 0.7 * d["x1"]
    r2 = ppml(d, **KW, offset="o")
    assert r2.params["x1"] == pytest.approx(r.params["x1"] - 0.7, abs=1e-8)
    assert r2.params["x2"] == pytest.approx(r.params["x2"], abs=1e-8)


def test_three_fixed_effects_and_interactions():
    d = _panel(n_i=40, zeros=False)
    r = ppml(d, outcome="y", regressors=["x1", "x2"], fixed_effects=["i", "t", ("g", "t")],
             cluster=("i", "t"))
    assert r.diagnostics["n_fe_levels"]["g^t"] == 7 * 6
    assert np.all(np.isfinite(r.std_errors))
    assert r.spec["fixed_effects"] == ("i", "t", "g^t")


def test_collinear_regressor_is_nan_with_warning():
    d = _panel(zeros=False)
    d["unit_level"] = d["i"] * 0.5
    with pytest.warns(NotComputableWarning, match="unit_level"):
        r = ppml(d, outcome="y", regressors=["x1", "unit_level"], fixed_effects=["i", "t"])
    assert np.isnan(r.params["unit_level"])
    assert tuple(r.diagnostics["collinear"]) == ("unit_level",)
    assert np.isfinite(r.params["x1"])


def _gravity(n: int, t: int, seed: int) -> pd.DataFrame:
    """Dense exporter x importer x year flows with a pair-level regressor ``dist``."""
    rng = np.random.default_rng(seed)
    e, i, y = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(n), np.arange(t),
                                               indexing="ij"))
    pair = e * n + i
    treat = ((rng.random(n * n)[pair] < 0.3) & (y >= t // 2)).astype(float)
    eta = (1 + rng.normal(size=(n, t))[e, y] + rng.normal(size=(n, t))[i, y]
           + rng.normal(size=n * n)[pair] + 0.2 * treat)
    trade = rng.poisson(np.exp(eta)) * (rng.random(len(e)) > 0.2)
    return pd.DataFrame({"trade": trade.astype(float), "treat": treat,
                         "dist": rng.normal(size=n * n)[pair], "ey": e * 1000 + y,
                         "iy": i * 1000 + y, "pair": pair})


@pytest.mark.parametrize(("n", "t", "seed"), [(12, 10, 0), (12, 10, 2), (15, 15, 0),
                                              (25, 12, 1)])
def test_regressor_absorbed_by_three_way_fe_is_nan(n, t, seed):
    """A pair-level regressor is absorbed by the pair FE. The collinearity check used to run
    only on the first IRLS iteration, on columns swept to the loose inner tolerance (1e-4),
    and on these panels let the column through with a coefficient of -3e5 .. 6e4 and K one
    too large (found by benchmarks/crosscheck.py vs pyfixest). It is judged again on the
    columns swept to fe_tol: NaN with a warning, the other slope and its SE unchanged.
    The SE to 1e-6 (as against R): it is built from the weights of the last IRLS
    iteration, which trail the estimate by one step, and the two fits reach the estimate
    along different paths (the absorbed column is dropped at the first hundredfold
    tightening of the sweeps' tolerance, before they reach fe_tol): 2.3e-7 apart at crit
    4.7e-13."""
    d = _gravity(n, t, seed)
    kw = dict(outcome="trade", fixed_effects=("ey", "iy", "pair"), cluster="pair")
    with pytest.warns(NotComputableWarning, match="dist"):
        r = ppml(d, regressors=["treat", "dist"], **kw)
    alone = ppml(d, regressors=["treat"], **kw)
    assert np.isnan(r.params["dist"]) and tuple(r.diagnostics["collinear"]) == ("dist",)
    assert r.params["treat"] == pytest.approx(alone.params["treat"], rel=1e-9)
    assert r.std_errors["treat"] == pytest.approx(alone.std_errors["treat"], rel=1e-6)
    assert r.vcov_spec.small_sample["K"] == alone.vcov_spec.small_sample["K"]


def test_no_fixed_effects_equals_glm():
    d = _panel(zeros=False)
    d["const"] = 1.0
    r = ppml(d, outcome="y", regressors=["x1", "x2"], vcov="hetero")  # + "(Intercept)"
    glm = sm.GLM(d["y"], d[["const", "x1", "x2"]], family=sm.families.Poisson()).fit(
        cov_type="HC0")
    np.testing.assert_allclose(r.params, glm.params, atol=1e-7)
    n = len(d)  # HC1 = HC0 x n / (n - K), K = 3
    np.testing.assert_allclose(r.std_errors, glm.bse * np.sqrt(n / (n - 3)), rtol=1e-5)


def test_lincom_and_proportional():
    d = _panel(zeros=False)
    r = ppml(d, **KW, cluster="i")
    tot = r.lincom(["x1", "x2"])
    v = r.vcov.to_numpy()
    assert tot.params.iloc[0] == pytest.approx(r.params.sum())
    assert tot.std_errors.iloc[0] == pytest.approx(np.sqrt(v.sum()))
    diff = lincom(r, ["x1", "x2"], [1, -1], name="x1 - x2")
    assert diff.terms == ("x1 - x2",)
    p = r.proportional()
    assert p.loc[p["term"] == "x1", "effect"].iloc[0] == pytest.approx(np.expm1(r.params["x1"]))
    with pytest.raises(SpecificationError, match="not in the result"):
        r.lincom(["nope"])


def test_result_protocol():
    r = ppml(_panel(), **KW, cluster="i")
    f = r.to_frame()
    assert list(f["term"]) == ["x1", "x2"]
    assert r.vcov_spec.ci_kind == "normal"
    assert {"iterations", "deviance", "converged", "dropped_rows"} <= set(r.diagnostics)
    assert r.spec["cluster"] == ("i",) and r.spec["vcov"] == "cluster"
    assert "ppml" in r.summary()


def test_caller_frame_unchanged():
    d = _panel()
    d.loc[0, "x1"] = np.nan
    before = d.copy(deep=True)
    with pytest.warns(DroppedRowsWarning):
        ppml(d, **KW, cluster="i")
    pd.testing.assert_frame_equal(d, before)


# ------------------------------------------------------------------ bad input
def test_negative_outcome_names_row_and_value():
    d = _panel()
    d.index = d.index + 1000
    d.loc[1007, "y"] = -3.0
    with pytest.raises(InputError, match=r"non-negative.*row 1007.*-3\.0"):
        ppml(d, **KW)


def test_missing_column_and_non_numeric_regressor():
    d = _panel()
    with pytest.raises(ColumnError, match="x9"):
        ppml(d, outcome="y", regressors=["x9"], fixed_effects=["i"])
    d["txt"] = ["a", "b"] * (len(d) // 2)
    with pytest.raises(InputError, match=r"txt.*numeric"):
        ppml(d, outcome="y", regressors=["txt"], fixed_effects=["i"])


@pytest.mark.parametrize("kw, match", [
    (dict(vcov="robust"), "vcov: expected one of"),
    (dict(vcov="iid", cluster="i"), "conflicts"),
    (dict(tol=0), "tol"),
    (dict(maxiter=0), "maxiter"),
    (dict(separation="mu"), "separation"),
    (dict(separation="fe+fe"), "separation"),
    (dict(separation=1), "separation"),
    (dict(cluster=("i", "t", "g")), "at most two"),
])
def test_bad_options(kw, match):
    with pytest.raises(SpecificationError, match=match):
        ppml(_panel(), **KW, **kw)


def test_vcov_cluster_without_cluster_or_fixed_effects_is_refused():
    kw = {k: v for k, v in KW.items() if k != "fixed_effects"}
    with pytest.raises(SpecificationError, match="needs cluster"):
        ppml(_panel(), **kw, vcov="cluster")
    # with fixed effects, vcov="cluster" alone clusters by the first one (fixest)
    r = ppml(_panel(), **KW, vcov="cluster")
    assert r.vcov_spec.cluster == (KW["fixed_effects"][0],)


def test_bad_data():
    with pytest.raises(InputError, match="DataFrame"):
        ppml([1, 2, 3], **KW)
    d = _panel()
    d["w"] = -1.0
    with pytest.raises(InputError, match="weights"):
        ppml(d, **KW, weights="w")
    with pytest.raises(SpecificationError, match="at least one regressor"):
        ppml(d, outcome="y", regressors=[], fixed_effects=["i"])


# ------------------------------------------------------------------ properties
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 1000))
def test_invariances(seed, scale):
    """Shuffling rows and relabelling FE levels leave the fit unchanged; multiplying the
    outcome by a constant changes only the fixed effects."""
    d = _panel(n_i=12, n_t=5, seed=seed % 50, zeros=False)
    r = ppml(d, **KW, cluster="i")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(d))
    d2 = d.iloc[perm].copy()
    d2["i"] = d2["i"].map(dict(zip(range(12), rng.permutation(12) + 100, strict=True)))
    d2["y"] = d2["y"] * scale
    r2 = ppml(d2, **KW, cluster="i")
    np.testing.assert_allclose(r2.params, r.params, atol=1e-7)
    np.testing.assert_allclose(r2.std_errors, r.std_errors, rtol=1e-5)


def test_without_fixed_effects_a_constant_is_fitted_as_fixest_and_glm():
    """No fixed effect: the model has a constant ("(Intercept)", fixest's label); the
    estimates equal statsmodels' Poisson GLM with a constant, the iid SEs differ only by
    fixest's small-sample factor (n - 1) / (n - K)."""
    rng = np.random.default_rng(11)
    n = 400
    d = pd.DataFrame({"x": rng.normal(size=n), "z": rng.uniform(size=n)})
    d["y"] = rng.poisson(np.exp(1.2 + 0.4 * d["x"] - 0.5 * d["z"]))
    r = ti.ppml(d, outcome="y", regressors=["x", "z"])
    glm = sm.GLM(d["y"], sm.add_constant(d[["x", "z"]]), family=sm.families.Poisson()).fit(
        tol=1e-12)
    assert list(r.params.index) == ["(Intercept)", "x", "z"]
    np.testing.assert_allclose(r.params.to_numpy(), glm.params.to_numpy(), rtol=1e-7)
    np.testing.assert_allclose(r.std_errors.to_numpy(),
                               glm.bse.to_numpy() * np.sqrt((n - 1) / (n - 3)), rtol=1e-6)
    # a level shift of the outcome moves only the constant
    r3 = ti.ppml(d.assign(y=3 * d["y"]), outcome="y", regressors=["x", "z"])
    np.testing.assert_allclose(r3.params["(Intercept)"] - r.params["(Intercept)"], np.log(3),
                               rtol=1e-7)
    np.testing.assert_allclose(r3.params[["x", "z"]], r.params[["x", "z"]], rtol=1e-7)


def test_gram_screen_flags_what_the_exact_check_would_judge():
    """The in-between collinearity screen (``_gram_flags``) reads the normal equations'
    Gram matrix: a column whose residual on the earlier ones is 1e-12 of its reference
    (what an absorbed column leaves once the sweeps tighten) is flagged, and so is a Gram
    matrix that is not positive definite; well-separated columns, and a column whose
    residual is 1e-3 of its reference (above the 1e-4 share), are not. The screen only
    sends columns to the exact check (``_collinear``), which then decides."""
    from twinimpact.estimators._ppml_kernel import _SCREEN_SHARE, _collinear, _gram_flags

    rng = np.random.default_rng(5)
    n = 2_000
    w = rng.uniform(0.5, 2.0, n)
    a = rng.normal(size=n)
    for share, flagged in ((1e-12, True), (1e-3, False)):
        b = 2.0 * a + np.sqrt(share) * rng.normal(size=n)  # residual on a: ~share of b's
        x = np.column_stack([a, b])
        xtx = (x * w[:, None]).T @ x
        ref = np.einsum("i,ij,ij->j", w, x, x)
        assert _gram_flags(xtx, ref) is flagged, share
        # the exact check agrees where it matters: 1e-12 is collinear at collin_tol 1e-10
        assert _collinear(x, w, ref, 1e-10).tolist() == [True, not flagged]
    well = np.column_stack([a, rng.normal(size=n)])
    xtx = (well * w[:, None]).T @ well
    assert not _gram_flags(xtx, np.einsum("i,ij,ij->j", w, well, well))
    assert _gram_flags(np.array([[1.0, 2.0], [2.0, 1.0]]), np.ones(2))  # not PD
    assert not _gram_flags(np.zeros((0, 0)), np.zeros(0))
    assert 1e-10 < _SCREEN_SHARE < 1e-2
