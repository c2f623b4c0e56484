"""Extended TWFE (``ti.etwfe``): R etwfe 0.6.2 / emfx and Stata jwdid reference numbers on
mpdta, the imputation equivalence (Wooldridge 2021), dummy-variable OLS / Poisson GLM
oracles (three-way gravity fixed effects included), a finite-difference Jacobian oracle for
the delta-method SEs of the aggregations, invariances and bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

import twinimpact as ti
from twinimpact.errors import (
    EstimationError,
    InputError,
    NotComputableWarning,
    SpecificationError,
)
from twinimpact.estimators.etwfe import etwfe

from ..conftest import DATA

REF = json.loads((DATA / "etwfe_r" / "etwfe_mpdta_reference.json").read_text())
#: R prints 15 significant digits; the fixed point is the same (OLS closed form)
R_EST_TOL = 1e-9
#: Poisson / alternating-projection tolerances (IRLS deviance criterion 1e-8)
R_GLM_TOL = 1e-6
#: SEs: same formula; fixest counts the cohort dummies of R's Poisson fit (fe = "none") in
#: K while our absorbed cohort FE nested in the county cluster are not counted:
#: (n-1)/(n-K) differs by (2500-30)/(2500-27) -> 6e-4 relative in the SE
R_POIS_SE_TOL = 1e-3
#: oracle fits: same likelihood / least squares, solver tolerances only
ORACLE_TOL = 1e-6
KW = dict(outcome="lemp", unit="countyreal", time="year", cohort="first.treat",
          cluster="countyreal")
POOLED = ("first.treat", "year")  # R etwfe's default fixed effects (ivar = NULL)


def _cells(r_terms: list[str]) -> list[str]:
    out = []
    for t in r_terms:
        parts = t.split(":")
        out.append(f"ATT({parts[3]},{parts[6]})")
    return out


@pytest.fixture(scope="module")
def mp(mpdta: pd.DataFrame) -> pd.DataFrame:
    d = mpdta.copy()
    d["emp"] = np.exp(d["lemp"])
    d["gls"] = d["countyreal"].astype(str).str[:2].astype(int).isin(
        [17, 18, 26, 27, 36, 39, 42, 55])
    return d


# ----------------------------------------------------------------- R etwfe coefficients
@pytest.mark.parametrize("name, kw", [
    ("m1_known", {}),
    ("m2_known", {"control_group": "never_treated"}),
])
def test_cells_match_r_etwfe_without_covariates(mp, name, kw):
    r = etwfe(mp, **KW, fixed_effects=POOLED, **kw)
    ref = REF[name]
    terms = _cells(ref["terms"])
    assert list(r.params.index) == terms
    np.testing.assert_allclose(r.params.to_numpy(), ref["estimate"], rtol=R_EST_TOL)
    np.testing.assert_allclose(r.std_errors.to_numpy(), ref["std_error"], rtol=1e-7)
    assert list(r.to_frame()["cohort"]) == [float(t[4:8]) for t in terms]


def test_cell_matches_stata_jwdid_with_unit_fixed_effects(mp):
    # jwdid lemp, ivar(countyreal) tvar(year) gvar(first_treat): unit + year FE (default)
    r = etwfe(mp, **KW)
    assert r.params["ATT(2004,2004)"] == pytest.approx(-0.019372363675909551, rel=1e-10)
    assert r.spec["fixed_effects"] == ("countyreal", "year")


def test_covariate_model_matches_r_etwfe_m3(mp):
    r = etwfe(mp, **KW, covariates=["lpop"], fixed_effects=POOLED)
    ref = REF["m3_known"]
    full = r.extras["full"]
    for term, est in zip(ref["terms"], ref["estimate"], strict=True):
        if term.startswith(".Dtreat"):
            p = term.split(":")
            ours = f"ATT({p[3]},{p[6]})" + (":lpop" if term.endswith("lpop_dm") else "")
        elif term == "lpop":
            ours = "lpop"
        else:  # first.treat::2004:lpop / year::2004:lpop
            kind, val = term.split(":")[0], term.split(":")[2]
            ours = f"lpop:{'cohort' if kind == 'first.treat' else 'time'}={val}"
        assert full[ours] == pytest.approx(est, rel=1e-7, abs=1e-12), term


def test_poisson_model_matches_r_etwfe_m3p(mp):
    r = etwfe(mp, **{**KW, "outcome": "emp"}, covariates=["lpop"], family="poisson",
              fixed_effects=POOLED)
    ref = REF["m3p_known"]
    idx = [i for i, t in enumerate(ref["terms"]) if t.startswith(".Dtreat")
           and not t.endswith("lpop_dm")]
    np.testing.assert_allclose(r.params.to_numpy(), np.array(ref["estimate"])[idx],
                               rtol=R_GLM_TOL)
    np.testing.assert_allclose(r.std_errors.to_numpy(), np.array(ref["std_error"])[idx],
                               rtol=R_POIS_SE_TOL)


# ----------------------------------------------------------------- R emfx aggregations
@pytest.mark.parametrize("fes, se_tol", [(POOLED, 1e-7), (None, 3e-3)])
def test_emfx_simple_and_event_match_r(mp, fes, se_tol):
    # issue 10: simple -0.0506 (0.0125); event -0.0332 (0.0134) ... -0.1095 (0.0323).
    # With unit FE (fes=None) the estimates are identical (balanced panel, time-constant
    # covariate); SEs differ by fixest's K (22 vs 26 parameters not nested in clusters).
    r = etwfe(mp, **KW, covariates=["lpop"], fixed_effects=fes)
    s = r.aggregate("simple")
    assert list(s.terms) == ["ATT"]
    assert s.params["ATT"] == pytest.approx(REF["simple_known"]["estimate"][0], rel=1e-8)
    assert s.std_errors["ATT"] == pytest.approx(REF["simple_known"]["std.error"][0],
                                                rel=se_tol)
    e = r.aggregate("event").to_frame()
    e = e[e["term"] != "ATT"]
    assert list(e["rel_time"]) == REF["event_known"]["event"]
    np.testing.assert_allclose(e["estimate"], REF["event_known"]["estimate"], rtol=1e-8)
    np.testing.assert_allclose(e["std_error"], REF["event_known"]["std.error"], rtol=se_tol)
    lo, hi = REF["event_known"]["conf.low"], REF["event_known"]["conf.high"]
    if fes is not None:
        np.testing.assert_allclose(e["ci_lower"], lo, rtol=1e-6)
        np.testing.assert_allclose(e["ci_upper"], hi, rtol=1e-6)


@pytest.mark.parametrize("type, key, ref", [
    ("group", "cohort", "group_known"), ("calendar", "time", "calendar_known")])
def test_emfx_group_and_calendar_match_r(mp, type, key, ref):
    r = etwfe(mp, **KW, covariates=["lpop"], fixed_effects=POOLED)
    f = r.aggregate(type).to_frame()
    att = f[f["term"] == "ATT"]
    f = f[f["term"] != "ATT"]
    np.testing.assert_allclose(f["estimate"], REF[ref]["estimate"], rtol=1e-8)
    np.testing.assert_allclose(f["std_error"], REF[ref]["std.error"], rtol=1e-6)
    assert att["estimate"].iloc[0] == pytest.approx(REF["simple_known"]["estimate"][0])


def test_emfx_never_treated_event_with_placebos_matches_r(mp):
    r = etwfe(mp, **KW, covariates=["lpop"], fixed_effects=POOLED,
              control_group="never_treated")
    a = r.aggregate("dynamic")
    f = a.to_frame().set_index("rel_time")
    ref = REF["event_never_window_known"]
    for e, est, se in zip(ref["event"], ref["estimate"], ref["std.error"], strict=True):
        if e == -1:  # the reference period: omitted (R prints 0 with NA SE)
            assert -1.0 not in f.index
            continue
        assert f.loc[e, "estimate"] == pytest.approx(est, rel=1e-7)
        assert f.loc[e, "std_error"] == pytest.approx(se, rel=1e-6)
    assert {-4.0, -3.0} <= set(f.index.dropna())
    pt = a.pretrend_test
    assert pt.kind == "Wald chi2" and pt.df == 3 and pt.n_coefficients == 3
    pre = f.loc[[-4.0, -3.0, -2.0]]
    v = a.vcov.loc[pre["term"], pre["term"]].to_numpy()
    b = pre["estimate"].to_numpy()
    assert pt.statistic == pytest.approx(float(b @ np.linalg.solve(v, b)), rel=1e-8)


def test_emfx_poisson_response_and_link_match_r(mp):
    r = etwfe(mp, **{**KW, "outcome": "emp"}, covariates=["lpop"], family="poisson",
              fixed_effects=POOLED)
    for scale, ref in (("response", "event_pois_known"), ("link", "event_pois_link_known")):
        f = r.aggregate("event", scale=scale).to_frame()
        f = f[f["term"] != "ATT"]
        np.testing.assert_allclose(f["estimate"], REF[ref]["estimate"], rtol=R_GLM_TOL)
        np.testing.assert_allclose(f["std_error"], REF[ref]["std.error"],
                                   rtol=R_POIS_SE_TOL)


def test_emfx_by_xvar_matches_r(mp):
    r = etwfe(mp, **KW, covariates=["lpop"], fixed_effects=POOLED, xvar="gls")
    f = r.aggregate("simple", by_xvar=True).to_frame()
    assert list(f["xvar"]) == [0.0, 1.0]
    ref = REF["hmod_att_known"]
    np.testing.assert_allclose(f["estimate"], ref["estimate"], rtol=1e-7)
    np.testing.assert_allclose(f["std_error"], ref["std.error"], rtol=1e-6)
    # a string-coded xvar gives the same effects (dummies of its levels)
    d = mp.assign(region=np.where(mp["gls"], "lakes", "other"))
    f2 = etwfe(d, **KW, covariates=["lpop"], fixed_effects=POOLED, xvar="region") \
        .aggregate("simple", by_xvar=True).to_frame()
    assert list(f2["xvar"]) == ["lakes", "other"]
    np.testing.assert_allclose(f2["estimate"], ref["estimate"][::-1], rtol=1e-7)


# ----------------------------------------------------------------- equivalences, oracles
def test_linear_not_yet_treated_equals_imputation(mp):
    """Wooldridge (2021): with not-yet-treated controls and no covariates, ETWFE averages
    equal the imputation estimator (Borusyak, Jaravel & Spiess) with the same weights."""
    kw = {k: v for k, v in KW.items() if k != "cluster"}
    r = etwfe(mp, **KW)
    imp = ti.imputation(mp, **kw, horizons=[0, 1, 2, 3])
    ev = r.aggregate("event").to_frame().set_index("term")
    for h in range(4):
        assert ev.loc[f"rel_time={h}", "estimate"] == pytest.approx(
            float(imp.params[imp.to_frame().set_index("rel_time").loc[h, "term"]]), rel=1e-9)
    static = ti.imputation(mp, **kw)
    assert r.aggregate("simple").params["ATT"] == pytest.approx(
        float(static.params["ATT"]), rel=1e-9)


def _dummies(frame: pd.DataFrame, col: str, drop_first: bool) -> pd.DataFrame:
    return pd.get_dummies(frame[col].astype(str), prefix=col, drop_first=drop_first,
                          dtype=float)


def _cell_dummies(d: pd.DataFrame, g: str, t: str) -> pd.DataFrame:
    cells = sorted({(a, b) for a, b in zip(d[g], d[t], strict=True) if a > 0 and b >= a})
    return pd.DataFrame({f"ATT({a},{b})": ((d[g] == a) & (d[t] == b)).astype(float)
                         for a, b in cells}, index=d.index)


def _cluster_vcov(z: np.ndarray, u: np.ndarray, w: np.ndarray, cl: np.ndarray
                  ) -> np.ndarray:
    bread = np.linalg.pinv((z * w[:, None]).T @ z)
    s = pd.DataFrame(z * u[:, None]).groupby(cl).sum().to_numpy()
    return bread @ (s.T @ s) @ bread


def test_linear_equals_dummy_variable_ols(mp):
    r = etwfe(mp, **KW)
    cells = _cell_dummies(mp, "first.treat", "year")
    z = pd.concat([cells, _dummies(mp, "countyreal", False),
                   _dummies(mp, "year", True)], axis=1)
    fit = sm.OLS(mp["lemp"].to_numpy(), z.to_numpy()).fit()
    np.testing.assert_allclose(r.params.to_numpy(), fit.params[:cells.shape[1]],
                               rtol=ORACLE_TOL)
    v = _cluster_vcov(z.to_numpy(), fit.resid, np.ones(len(mp)), mp["countyreal"].to_numpy())
    ss = r.vcov_spec.small_sample
    factor = ss["adj"] * ss["cluster_adj"]
    k = cells.shape[1]
    np.testing.assert_allclose(r.cov, factor * v[:k, :k], rtol=1e-6, atol=1e-12)


def _full_rank(z: pd.DataFrame) -> pd.DataFrame:
    """Drop dummy columns that are combinations of earlier ones (the cell columns come
    first and stay): statsmodels' IRLS does not converge on a rank-deficient design."""
    r = np.linalg.qr(z.to_numpy(), mode="r")
    return z.loc[:, np.abs(np.diag(r)) > 1e-8]


def _poisson_oracle(d: pd.DataFrame, z: pd.DataFrame, y: str, cl: str):
    glm = sm.GLM(d[y].to_numpy(), z.to_numpy(), family=sm.families.Poisson())
    fit = glm.fit(tol=1e-13, maxiter=200)
    mu = fit.mu
    v = _cluster_vcov(z.to_numpy(), d[y].to_numpy() - mu, mu, d[cl].to_numpy())
    return fit.params, v


def _fd_gradient(f, theta: np.ndarray, h: float = 1e-6) -> np.ndarray:
    g = np.empty_like(theta)
    for j in range(len(theta)):
        e = np.zeros_like(theta)
        e[j] = h
        g[j] = (f(theta + e) - f(theta - e)) / (2 * h)
    return g


def test_poisson_aggregation_delta_method_equals_finite_difference_oracle(mp):
    """The response-scale delta method through the full Poisson vcov (fixed effects
    included) equals J' V J with V from an explicit-dummy GLM and J by finite
    differences of the averaged effect."""
    d = mp
    r = etwfe(d, **{**KW, "outcome": "emp"}, family="poisson", fixed_effects=POOLED)
    cells = _cell_dummies(d, "first.treat", "year")
    z = pd.concat([cells, _dummies(d, "first.treat", False), _dummies(d, "year", True)],
                  axis=1)
    theta, v = _poisson_oracle(d, z, "emp", "countyreal")
    k = cells.shape[1]
    np.testing.assert_allclose(r.params.to_numpy(), theta[:k], rtol=ORACLE_TOL)
    zz = z.to_numpy()
    treated = cells.to_numpy().sum(axis=1) > 0
    z0 = zz.copy()
    z0[:, :k] = 0.0
    ss = r.vcov_spec.small_sample
    factor = ss["adj"] * ss["cluster_adj"]
    agg = r.aggregate("event")
    prop = agg.proportional().set_index("term")
    e = (d["year"] - d["first.treat"]).to_numpy()
    for h in range(4):
        rows = treated & (e == h)

        def att(th, rows=rows):
            return float(np.mean(np.exp(zz[rows] @ th) - np.exp(z0[rows] @ th)))

        def ratio(th, rows=rows):
            return float(np.exp(zz[rows] @ th).sum() / np.exp(z0[rows] @ th).sum() - 1)

        for fn, est, se in (
                (att, agg.params[f"rel_time={h}"], agg.std_errors[f"rel_time={h}"]),
                (ratio, prop.loc[f"rel_time={h}", "effect"],
                 prop.loc[f"rel_time={h}", "std_error"])):
            jac = _fd_gradient(fn, theta)
            assert est == pytest.approx(fn(theta), rel=ORACLE_TOL)
            assert se == pytest.approx(np.sqrt(factor * jac @ v @ jac), rel=1e-5)


def _gravity_panel(seed: int = 3, n_c: int = 7, years: range = range(2000, 2010)
                   ) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_c):
        for j in range(n_c):
            if i == j:
                continue
            for t in years:
                rows.append((f"c{i}", f"c{j}", t))
    d = pd.DataFrame(rows, columns=["exporter", "importer", "year"])
    d["pair"] = d["exporter"] + "-" + d["importer"]
    d["exp_year"] = d["exporter"] + d["year"].astype(str)
    d["imp_year"] = d["importer"] + d["year"].astype(str)
    # pairs of c0 (both directions) treated at staggered dates; some never
    first = {1: 2003, 2: 2003, 3: 2005, 4: 2007}
    d["g"] = 0
    for j, g in first.items():
        d.loc[(d["pair"] == f"c0-c{j}") | (d["pair"] == f"c{j}-c0"), "g"] = g
    ex = d["exporter"].str[1:].astype(int)
    im = d["importer"].str[1:].astype(int)
    eta = (3 + 0.2 * ex - 0.1 * im + 0.05 * (d["year"] - 2000) * (ex % 2)
           + 0.3 * ((d["g"] > 0) & (d["year"] >= d["g"])))
    d["flow"] = rng.poisson(np.exp(eta)).astype(float)
    return d


def test_gravity_three_way_fe_equals_dummy_variable_poisson_glm():
    d = _gravity_panel()
    fes = ("exp_year", "imp_year", "pair")
    r = etwfe(d, outcome="flow", unit="pair", time="year", cohort="g", family="poisson",
              fixed_effects=fes, cluster="pair")
    cells = _cell_dummies(d, "g", "year")
    z = _full_rank(pd.concat([cells, _dummies(d, "exp_year", False),
                              _dummies(d, "imp_year", True), _dummies(d, "pair", True)],
                             axis=1))
    theta, v = _poisson_oracle(d, z, "flow", "pair")
    k = cells.shape[1]
    assert list(r.params.index) == list(cells.columns)
    np.testing.assert_allclose(r.params.to_numpy(), theta[:k], rtol=ORACLE_TOL,
                               atol=ORACLE_TOL)
    ss = r.vcov_spec.small_sample
    factor = ss["adj"] * ss["cluster_adj"]
    np.testing.assert_allclose(r.std_errors.to_numpy(), np.sqrt(factor * np.diag(v)[:k]),
                               rtol=1e-5)
    zz = z.to_numpy()
    treated = cells.to_numpy().sum(axis=1) > 0
    z0 = zz.copy()
    z0[:, :k] = 0.0
    s = r.aggregate("simple")

    def att(th):
        return float(np.mean(np.exp(zz[treated] @ th) - np.exp(z0[treated] @ th)))

    jac = _fd_gradient(att, theta)
    assert s.params["ATT"] == pytest.approx(att(theta), rel=ORACLE_TOL)
    assert s.std_errors["ATT"] == pytest.approx(np.sqrt(factor * jac @ v @ jac), rel=1e-5)
    ax = ti.plot_event_study(r.aggregate("dynamic"))
    assert ax.get_xlabel()


def test_gravity_linear_three_way_fe_equals_dummy_variable_ols():
    d = _gravity_panel(seed=5)
    d["lflow"] = np.log1p(d["flow"])
    r = etwfe(d, outcome="lflow", unit="pair", time="year", cohort="g",
              fixed_effects=("exp_year", "imp_year", "pair"), cluster="pair")
    cells = _cell_dummies(d, "g", "year")
    z = _full_rank(pd.concat([cells, _dummies(d, "exp_year", False),
                              _dummies(d, "imp_year", True), _dummies(d, "pair", True)],
                             axis=1))
    fit = sm.OLS(d["lflow"].to_numpy(), z.to_numpy()).fit()
    np.testing.assert_allclose(r.params.to_numpy(), fit.params[:cells.shape[1]],
                               rtol=ORACLE_TOL, atol=1e-9)


# ----------------------------------------------------------------- separation, NaN cells
def test_separated_cell_is_nan_counted_and_left_out_of_averages():
    d = _gravity_panel(seed=7)
    # cohort 2007: every treated flow zero -> the cell indicators separate them
    late = (d["g"] == 2007) & (d["year"] >= 2007)
    d.loc[late, "flow"] = 0.0
    # one pair with all-zero flows: separated by its pair fixed effect
    d.loc[d["pair"] == "c5-c6", "flow"] = 0.0
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        r = etwfe(d, outcome="flow", unit="pair", time="year", cohort="g",
                  family="poisson", fixed_effects=("exp_year", "imp_year", "pair"),
                  cluster="pair")
    msgs = " ".join(str(w.message) for w in rec)
    assert "separated" in msgs
    dropped = r.diagnostics["dropped_rows"]
    assert sum(v for k, v in dropped.items() if "separated" in k) == int(late.sum()) + 10
    nan_cells = [t for t in r.terms if t.startswith("ATT(2007")]
    assert nan_cells and r.params[nan_cells].isna().all()
    assert r.diagnostics["n_cells_not_identified"] == len(nan_cells)
    assert any(issubclass(w.category, NotComputableWarning) and "etwfe" in str(w.message)
               for w in rec)
    with pytest.warns(NotComputableWarning, match="no comparison"):
        s = r.aggregate("simple")
    assert np.isfinite(s.params["ATT"])
    assert s.diagnostics["n_obs_lost_no_comparison"] == int(late.sum())


# ppmlhdfe's separation test datasets: tests/estimators/test_ppml_separation.py


# ----------------------------------------------------------------- invariances, input
def test_invariances_shuffle_relabel_shift_and_scale(mp):
    base = etwfe(mp, **KW, covariates=["lpop"]).aggregate("event")
    d = mp.sample(frac=1.0, random_state=1).reset_index(drop=True)
    d["countyreal"] = "c" + d["countyreal"].astype(str)
    d["year"] = d["year"] + 100
    d["first.treat"] = np.where(d["first.treat"] > 0, d["first.treat"] + 100, 0)
    d["lemp"] = d["lemp"] + 5.0
    moved = etwfe(d, **KW, covariates=["lpop"]).aggregate("event")
    np.testing.assert_allclose(moved.coef, base.coef, rtol=1e-8)
    np.testing.assert_allclose(moved.std_errors, base.std_errors, rtol=1e-8)
    p = etwfe(mp, **{**KW, "outcome": "emp"}, family="poisson")
    p3 = etwfe(mp.assign(emp=3 * mp["emp"]), **{**KW, "outcome": "emp"}, family="poisson")
    np.testing.assert_allclose(p3.coef, p.coef, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(p3.aggregate("simple").coef, 3 * p.aggregate("simple").coef,
                               rtol=1e-6)


def test_callers_frame_is_not_modified_and_result_is_immutable(mp):
    before = mp.copy()
    r = etwfe(mp, **KW, covariates=["lpop"], xvar="gls")
    pd.testing.assert_frame_equal(mp, before)
    with pytest.raises((AttributeError, TypeError)):
        r.coef = None  # type: ignore[misc]
    with pytest.raises(ValueError):
        r.coef[0] = 1.0


def test_bad_input_errors_name_the_problem(mp):
    d = mp.copy()
    d.loc[d.index[0], "first.treat"] = 2006   # county 8001 is cohort 2007 elsewhere
    with pytest.raises(InputError, match="varies within unit"):
        etwfe(d, **KW)
    d = mp.assign(emp=mp["emp"] - mp["emp"].median())
    with pytest.raises(InputError, match="non-negative"):
        etwfe(d, **{**KW, "outcome": "emp"}, family="poisson")
    # the treatment only varies across cells of the fixed effects: nothing identified
    d = mp.assign(gt=mp["first.treat"].astype(str) + "_" + mp["year"].astype(str))
    with pytest.raises(EstimationError, match="no treated cell can be identified"):
        etwfe(d, **KW, fixed_effects=("countyreal", "gt"))
    with pytest.raises(EstimationError, match="never treated"):
        etwfe(mp[mp["first.treat"] > 0], **KW, control_group="never_treated")
    with pytest.raises(SpecificationError, match="control_group"):
        etwfe(mp, **KW, control_group="never")
    with pytest.raises(SpecificationError, match="by_xvar"):
        etwfe(mp, **KW).aggregate("simple", by_xvar=True)
    with pytest.raises(SpecificationError, match="proportional"):
        etwfe(mp, **KW).aggregate("simple").proportional()


def test_without_never_treated_last_cohort_is_control_and_rows_are_counted(mp):
    d = mp[mp["first.treat"] > 0]
    with pytest.warns(Warning, match="without a comparison"):
        r = etwfe(d, **KW)
    assert set(r.to_frame()["cohort"]) == {2004.0, 2006.0}
    assert r.diagnostics["dropped_rows"] == {
        "period on or after the last cohort 2007 (no not-yet-treated control left)":
            int((d["year"] >= 2007).sum())}


# ----------------------------------------------------------------- chunked FWL step
def _poisson_numbers(r) -> dict[str, np.ndarray]:
    out = {"params": r.extras["full"].to_numpy(), "vcov": r.vcov.to_numpy()}
    for typ in ("simple", "event", "calendar"):
        for scale in ("response", "link"):
            a = r.aggregate(typ, scale=scale)
            out[f"{typ}_{scale}"] = a.params.to_numpy()
            out[f"{typ}_{scale}_vcov"] = a.vcov.to_numpy()
            if scale == "response":
                out[f"{typ}_prop"] = a.proportional()[["effect", "std_error"]].to_numpy()
    return out


@pytest.mark.parametrize("case", ["gravity_pair", "gravity_twoway_never", "mpdta_cov_iid"])
def test_poisson_chunked_fwl_equals_whole_design(mp, monkeypatch, case):
    # The Poisson FWL step and the response-scale aggregation keep the swept design X~
    # whole when it fits in FWL_MEMORY_BYTES and otherwise run column by column on the
    # indicator block (memory O(n x chunk)); a budget of one byte forces one column per
    # chunk. Both must give the same estimates, variances and aggregations.
    from twinimpact.estimators import etwfe as mod
    if case == "mpdta_cov_iid":
        d, kw = mp, dict(KW, outcome="emp", covariates=["lpop"], xvar="gls", vcov="iid")
    else:
        d = _gravity_panel(seed=5, n_c=8)
        d["flow"] = d["flow"].where(np.random.default_rng(1).random(len(d)) > 0.2, 0.0)
        d = d.sample(frac=0.9, random_state=2)  # unbalanced, shuffled
        kw = dict(outcome="flow", unit="pair", time="year", cohort="g",
                  fixed_effects=("exp_year", "imp_year", "pair"), cluster="pair")
        if case == "gravity_twoway_never":
            kw.update(cluster=["exporter", "importer"], control_group="never_treated")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = _poisson_numbers(etwfe(d, **kw, family="poisson"))
        monkeypatch.setattr(mod, "FWL_MEMORY_BYTES", 1)
        r = etwfe(d, **kw, family="poisson")
        assert r.extras["state"]["poisson"]["swept"].x_tilde is None  # chunked path taken
        chunked = _poisson_numbers(r)
    for key, ref in whole.items():
        got = chunked[key]
        assert got.shape == ref.shape, key
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=key)
        if key.endswith("vcov"):
            # standard errors to 2e-10, covariances to 1e-9: the whole-X~ path's own solver
            # error (sweeps to 1e-11 / 1e-12) is ~1e-10 here -- the chunked SEs move by
            # < 1e-13 between sweep tolerances 1e-13 and 1e-14
            np.testing.assert_allclose(np.sqrt(np.diag(got)), np.sqrt(np.diag(ref)),
                                       rtol=2e-10, err_msg=key)
            tol = 1e-9
        else:
            tol = 1e-10
        ok = np.isfinite(ref)
        scale = np.max(np.abs(ref[ok]))
        np.testing.assert_allclose(got[ok], ref[ok], rtol=0, atol=tol * scale, err_msg=key)


def test_poisson_few_clusters_warned_once_under_the_users_column(mp):
    """ppml's few-clusters warning (about its internal cluster column) is not passed on;
    the result warns once, naming the user's cluster column."""
    d = mp.assign(state=mp["countyreal"] % 12)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        etwfe(d, **{**KW, "outcome": "emp", "cluster": "state"}, family="poisson")
    few = [str(w.message) for w in rec if issubclass(w.category, ti.errors.FewClustersWarning)]
    assert len(few) == 1 and "only 12 clusters in 'state'" in few[0], few
