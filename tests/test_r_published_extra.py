"""Published R numbers beyond the per-estimator reference tests.

Every number here was printed by R (pkgdown example output, README output, an issue
comment, or an R log) on a data set shipped in ``tests/data``; sources, calls and the
diagnosis of every disagreement are in ``tests/reference/<estimator>/r_published_extra.json``.
Values are kept as the printed strings, and the tolerance is half a unit in the last printed
digit unless a case documents why it needs more (grid-based or simulated R quantities).
Known disagreements are ``xfail(strict=True)`` next to a passing test of the explanation.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from twinimpact.estimators.did2s import did2s
from twinimpact.estimators.imputation import imputation
from twinimpact.estimators.sun_abraham import sun_abraham
from twinimpact.estimators.synthetic_did import synthetic_did
from twinimpact.inference.honest_did import honest_did

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
REFERENCE = TESTS / "reference"

#: floating-point slack added to every printed-precision comparison
FP = 1e-12


def _ref(estimator: str) -> dict:
    return json.loads((REFERENCE / estimator / "r_published_extra.json").read_text())


def half_unit(printed: str) -> float:
    """Half a unit in the last printed digit of ``printed`` ('0.0790' -> 5e-5,
    '2.666655e-13' -> 5e-20, '2' -> 0.5)."""
    mant, _, exp = printed.strip().lower().partition("e")
    decimals = len(mant.split(".")[1]) if "." in mant else 0
    return 0.5 * 10.0 ** (-decimals) * 10.0 ** (int(exp) if exp else 0)


def fixest_etable_format(x: float, digits: int = 4) -> str:
    """fixest etable's number formatting (R/MiscFuns.R, format_nber_single, digits = 4):
    signif(x, 4) first, then 4 decimals below 1 or ``digits - 1 - exponent`` decimals
    (at least 1) above -- two roundings, so compare strings, not half-units."""
    x = round(x, 1) if abs(x) >= 10 ** (digits - 1) else float(f"{x:.{digits - 1}e}")
    e = math.floor(math.log10(abs(x)))
    if e >= 10 or e <= -5:
        raise NotImplementedError("scientific notation branch not needed here")
    if e >= 0:
        return f"{x:.{max(-(e + 1 - digits), 1)}f}"
    if abs(x) > 10.0 ** -digits:
        return f"{x:.{digits}f}"
    return f"{x:.{abs(e)}f}"


def assert_etable(got: float, printed: str, what: str = "") -> None:
    assert fixest_etable_format(got) == printed, f"{what}: ours {got!r} vs R {printed}"


def assert_printed(got: float, printed: str, extra: float = 0.0, what: str = "") -> None:
    want = float(printed)
    tol = half_unit(printed) + extra + FP * max(1.0, abs(want))
    assert abs(got - want) <= tol, f"{what}: ours {got!r} vs R {printed} (tol {tol:.3g})"


# ------------------------------------------------------------------ fixest sunab
@pytest.fixture(scope="module")
def sunab_x1():
    d = pd.read_csv(DATA / "fixest_sunab" / "base_stagg.csv")
    return sun_abraham(d, outcome="y", unit="id", time="year", cohort="year_treated",
                       covariates=["x1"])


def test_sunab_cohort_aggregation_matches_fixest(sunab_x1):
    case = _ref("sun_abraham")["cases"]["cohort_aggregation_x1"]
    f = sunab_x1.aggregate("cohort").to_frame().set_index("term")
    assert len(case["rows"]) == 9
    for g, est, se, t, p in case["rows"]:
        row = f.loc[f"cohort={g}"]
        assert_printed(row["estimate"], est, what=f"cohort {g} estimate")
        assert_printed(row["std_error"], se, what=f"cohort {g} se")
        assert_printed(row["statistic"], t, what=f"cohort {g} t")
        assert_printed(row["p_value"], p, what=f"cohort {g} p")


def test_sunab_event_times_and_vcov_match_fixest_issue_295(sunab_x1):
    case = _ref("sun_abraham")["cases"]["event_time_x1_issue295"]
    for e, est, se in case["rows"]:
        term = f"rel_time={e}"
        assert_printed(sunab_x1.params[term], est, what=f"{term} estimate")
        assert_printed(sunab_x1.std_errors[term], se, what=f"{term} se")
    vc = sunab_x1.vcov
    n = 0
    for col, entries in case["vcov_columns"].items():
        for row, printed in entries.items():
            assert_printed(vc.loc[f"rel_time={row}", f"rel_time={col}"], printed,
                           what=f"cov({row}, {col})")
            n += 1
    assert n == 42


def test_sunab_event_times_match_fixest_etable(sunab_x1):
    case = _ref("sun_abraham")["cases"]["event_time_x1_etable"]
    for e, est, se in case["rows"]:
        term = f"rel_time={e}"
        assert_etable(sunab_x1.params[term], est, what=f"{term} estimate")
        assert_etable(sunab_x1.std_errors[term], se, what=f"{term} se")
    assert_etable(sunab_x1.params["x1"], case["x1"][0], what="x1")
    assert_etable(sunab_x1.std_errors["x1"], case["x1"][1], what="x1 se")
    assert sunab_x1.nobs == 950


# ------------------------------------------------------------------ did2s
@pytest.fixture(scope="module")
def df_hom() -> pd.DataFrame:
    return pd.read_parquet(DATA / "did2s" / "df_hom.parquet")


DID2S_KW = dict(outcome="dep_var", unit="unit", time="year", cohort="g", cluster="state")


def test_did2s_df_hom_static_matches_r(df_hom):
    case = _ref("did2s")["cases"]["df_hom_static_unit_year"]
    r = did2s(df_hom, **DID2S_KW)
    assert_etable(r.params["ATT"], case["estimate"], what="ATT")
    assert_etable(r.std_errors["ATT"], case["std_error"], what="ATT se")
    assert r.nobs == case["nobs"]


def test_did2s_df_hom_event_study_matches_r(df_hom):
    case = _ref("did2s")["cases"]["df_hom_event_study_unit_year"]
    r = did2s(df_hom, **DID2S_KW, event_study=True)
    rel = [t for t in r.terms if t.startswith("rel_time=")]
    assert rel == [f"rel_time={e}" for e, *_ in case["rows"]]
    for e, est, se in case["rows"]:
        term = f"rel_time={e}"
        assert_etable(r.params[term], est, what=f"{term} estimate")
        assert_etable(r.std_errors[term], se, what=f"{term} se")


def test_etable_double_rounding_explains_rel_year_minus_9_se():
    """0.0241458 prints as 0.0242 (signif -> 0.02415 -> '%.4f'), not 0.0241."""
    assert fixest_etable_format(0.0241458) == "0.0242"
    assert f"{0.0241458:.4f}" == "0.0241"
    assert fixest_etable_format(-0.0790091) == "-0.0790"
    assert fixest_etable_format(1.970799) == "1.971"
    assert fixest_etable_format(2.050335) == "2.050"


# ------------------------------------------------------------------ didimputation
@pytest.fixture(scope="module")
def imp_df_het() -> pd.DataFrame:
    return pd.read_parquet(DATA / "didimputation" / "df_het.parquet")


@pytest.fixture(scope="module")
def imp_es(imp_df_het):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return imputation(imp_df_het, outcome="dep_var", unit="unit", time="year",
                          cohort="g", horizons=True, pretrends=5)


IMP_CASE = "event_study_readme_full_precision"
#: R's first stage (fixest, iterative fixed effects, fixef.tol = 1e-6) puts its imputed Y(0)
#: ~1e-8 off the exact solve; observed: ours higher by 1.1e-8..2.4e-8 on every horizon
R_FIRST_STAGE_PRECISION = 3e-8


def test_imputation_horizons_match_readme_full_precision(imp_es):
    case = _ref("imputation")["cases"][IMP_CASE]
    assert len(case["horizons"]) == 21
    for e, est, se in case["horizons"]:
        term = f"rel_time={e}"
        assert_printed(imp_es.params[term], est, R_FIRST_STAGE_PRECISION, f"{term} estimate")
        assert_printed(imp_es.std_errors[term], se, what=f"{term} se")


def test_imputation_pretrend_estimates_match_readme(imp_es):
    case = _ref("imputation")["cases"][IMP_CASE]
    for e, est, _ in case["pretrends"]:
        assert_printed(imp_es.params[f"rel_time={e}"], est, what=f"pre {e} estimate")


@pytest.mark.xfail(strict=True, reason="R README prints iid pre-trend SEs (fixest default "
                   "vcov at render time); twinimpact clusters by unit like the 2021 README. "
                   "See diagnosis_pretrend_se in tests/reference/imputation/"
                   "r_published_extra.json")
def test_imputation_pretrend_se_match_readme(imp_es):
    case = _ref("imputation")["cases"][IMP_CASE]
    for e, _, se in case["pretrends"]:
        assert_printed(imp_es.std_errors[f"rel_time={e}"], se, what=f"pre {e} se")


def _within(v: np.ndarray, groups: list[np.ndarray], tol: float = 1e-13) -> np.ndarray:
    """Residual of v after unit and year fixed effects (alternating projections)."""
    v = v.astype(float).copy()
    codes = [pd.factorize(g)[0] for g in groups]
    counts = [np.bincount(c) for c in codes]
    for _ in range(10_000):
        old = v.copy()
        for c, n in zip(codes, counts, strict=True):
            v -= (np.bincount(c, weights=v) / n)[c]
        if np.max(np.abs(v - old)) < tol:
            return v
    raise AssertionError("alternating projections did not converge")


def test_imputation_readme_pretrend_se_are_iid_ols(imp_df_het):
    """Diagnosis of the xfail above: the README's 0.07634962 are iid OLS SEs of the
    pre-trend regression on the untreated rows (fixest iid dof n - K)."""
    case = _ref("imputation")["cases"][IMP_CASE]
    d = imp_df_het
    untreated = ~((d["g"] > 0) & (d["year"] >= d["g"])).to_numpy()
    u = d[untreated]
    rel = np.where(u["g"] > 0, u["year"] - u["g"], -999)
    groups = [u["unit"].to_numpy(), u["year"].to_numpy()]
    x = np.column_stack([_within((rel == k).astype(float), groups) for k in range(-5, 0)])
    y = _within(u["dep_var"].to_numpy(), groups)
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ beta
    n = len(y)
    k = 5 + u["unit"].nunique() + u["year"].nunique() - 1
    assert (n, k) == (20_747, 1_035)
    se = np.sqrt(np.diag(resid @ resid / (n - k) * np.linalg.inv(x.T @ x)))
    for (e, est, se_r), b, s in zip(case["pretrends"], beta, se, strict=True):
        assert_printed(b, est, what=f"pre {e} estimate (oracle)")
        assert_printed(s, se_r, what=f"pre {e} iid se (oracle)")


# ------------------------------------------------------------------ synthdid
def _xtable_2dp(w: float) -> str:
    """R: xtable(round(w, 3)) -> formatC(., format = 'f', digits = 2)."""
    return f"{round(float(w), 3):.2f}"


def test_synthdid_table7_8_weights_match_paper_results():
    case = _ref("synthetic_did")["cases"]["table7_8_unit_time_weights"]
    d = pd.read_csv(DATA / "synthdid_prop99" / "california_prop99.csv", sep=";")
    printed_units = {r[0]: r[1:] for r in case["unit_weights"]}
    printed_times = {int(r[0]): r[1:] for r in case["time_weights"]}
    assert len(printed_units) == 38 and len(printed_times) == 19
    for j, method in enumerate(["did", "sc", "sdid"]):
        r = synthetic_did(d, outcome="PacksPerCapita", unit="State", time="Year",
                          treated="treated", method=method, se=None)
        omega, lam = r.extras["unit_weights"], r.extras["time_weights"]
        assert set(omega.index) == set(printed_units)
        assert set(int(t) for t in lam.index) == set(printed_times)
        bad = [(s, float(w), printed_units[s][j]) for s, w in omega.items()
               if _xtable_2dp(w) != printed_units[s][j]]
        bad += [(t, float(w), printed_times[int(t)][j]) for t, w in lam.items()
                if _xtable_2dp(w) != printed_times[int(t)][j]]
        assert not bad, f"{method}: {bad}"
        for s, w in omega.items():  # the same check without the double rounding
            assert abs(float(w) - float(printed_units[s][j])) <= 0.0055


# ------------------------------------------------------------------ HonestDiD
def _honest_inputs(case: dict) -> tuple[np.ndarray, np.ndarray, list[float]]:
    name = {"BC": "BCdata_EventStudy.json", "LW": "LWdata_EventStudy.json"}[case["data"]]
    raw = json.loads((DATA / "honestdid" / name).read_text())
    b, s = np.array(raw["betahat"]), np.array(raw["sigma"])
    npost = case["num_post"]
    lv = case["l_vec"]
    if lv == "first":
        lv = [1.0] + [0.0] * (npost - 1)
    elif lv == "average":
        lv = [1.0 / npost] * npost
    elif lv == "basis16":
        lv = [0.0] * npost
        lv[15] = 1.0
    return b, s, [float(x) for x in lv]


def _honest_run(case: dict, method: str) -> pd.DataFrame:
    b, s, lv = _honest_inputs(case)
    # R's theta grid as R uses it: some of R's printed bounds are the edge of its default
    # +/- 20 sd grid (the adaptive default widens it: tests/inference/test_honest_did_targets)
    kw = {"grid": "r"}
    if "grid" in case:
        lo, hi, n = case["grid"]
        kw = {"grid_lb": lo, "grid_ub": hi, "grid_points": n}
    m_values = None if case.get("m_default") else [float(m) for m in case["m"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = honest_did(b, s, num_pre=case["num_pre"], num_post=case["num_post"],
                         restriction=case["restriction"], method=method, l_vec=lv,
                         m_values=m_values, **kw)
    rob = out.iloc[1:].reset_index(drop=True)
    assert len(rob) == len(case["m"])
    for got, printed in zip(rob["m"], case["m"], strict=True):
        assert_printed(got, printed, what="M")
    return rob


def _extra_tol(case: dict, rob: pd.DataFrame, i: int) -> float:
    if case["name"] == "bc_rm_clf_default":  # 2 steps of R's default +/- 20 sd grid
        _, s, _ = _honest_inputs(case)
        return 2 * 40 * math.sqrt(s[case["num_pre"], case["num_pre"]]) / 999
    if case["name"] == "lw_flci_default":  # R's approximate FLCI optimum
        return 0.005 * (float(case["ub"][i]) - float(case["lb"][i]))
    return 0.0


_HD = _ref("honest_did")["cases"]
_HD_MATCH = [(c, m) for c in _HD if not c["status"].startswith("MISMATCH")
             for m in (c["method"] if isinstance(c["method"], list) else [c["method"]])]
_HD_CENTRE = [c for c in _HD if c["status"].startswith("MISMATCH")]


@pytest.mark.parametrize(("case", "method"), _HD_MATCH,
                         ids=[f"{c['name']}-{m}" for c, m in _HD_MATCH])
def test_honest_did_matches_r_log(case, method):
    rob = _honest_run(case, method)
    for i in range(len(rob)):
        extra = _extra_tol(case, rob, i)
        assert_printed(rob.loc[i, "lb"], case["lb"][i], extra, f"lb M={case['m'][i]}")
        assert_printed(rob.loc[i, "ub"], case["ub"][i], extra, f"ub M={case['m'][i]}")


@pytest.mark.parametrize("case", _HD_CENTRE, ids=[c["name"] for c in _HD_CENTRE])
def test_honest_did_flci_length_matches_r(case):
    """Where R's FLCI centre differs (see the JSON diagnosis), its length still agrees."""
    rob = _honest_run(case, case["method"])
    for i in range(len(rob)):
        lb, ub = case["lb"][i], case["ub"][i]
        want = float(ub) - float(lb)
        tol = half_unit(lb) + half_unit(ub) + FP
        got = rob.loc[i, "ub"] - rob.loc[i, "lb"]
        assert abs(got - want) <= tol, f"M={case['m'][i]}: width {got} vs R {want}"


@pytest.mark.xfail(strict=True, reason="R's FLCI centre is off the exact optimum (same "
                   "length); see 'diagnosis' in tests/reference/honest_did/"
                   "r_published_extra.json")
@pytest.mark.parametrize("case", _HD_CENTRE, ids=[c["name"] for c in _HD_CENTRE])
def test_honest_did_flci_bounds_match_r(case):
    rob = _honest_run(case, case["method"])
    for i in range(len(rob)):
        assert_printed(rob.loc[i, "lb"], case["lb"][i], what=f"lb M={case['m'][i]}")
        assert_printed(rob.loc[i, "ub"], case["ub"][i], what=f"ub M={case['m'][i]}")


def test_lw_flci_average_m0_is_min_variance_unbiased_estimator():
    """Diagnosis for lw_flci_average: at M = 0 the FLCI is the unique minimum-variance
    estimator unbiased under linear trends; a closed-form solve gives our interval."""
    case = next(c for c in _HD if c["name"] == "lw_flci_average")
    b, s, lv = _honest_inputs(case)
    npre, npost = case["num_pre"], case["num_post"]
    t = np.r_[np.arange(-npre, 0), np.arange(1, npost + 1)].astype(float)
    lv = np.array(lv)
    kkt = np.block([[2 * s[:npre, :npre], t[:npre, None]], [t[None, :npre], np.zeros((1, 1))]])
    rhs = np.r_[-2 * s[:npre, npre:] @ lv, -(lv @ t[npre:])]
    v = np.r_[np.linalg.solve(kkt, rhs)[:npre], lv]
    centre, sd = v @ b, math.sqrt(v @ s @ v)
    z = 1.959963984540054
    rob = _honest_run({**case, "m": ["0"]}, "FLCI")
    np.testing.assert_allclose([rob.loc[0, "lb"], rob.loc[0, "ub"]],
                               [centre - z * sd, centre + z * sd], atol=1e-5)
    # R's printed interval has the same length but is not centred at this estimator
    assert abs((6.90 - 3.47) / 2 - z * sd) <= 0.005 + 1e-9
    assert abs((6.90 + 3.47) / 2 - centre) > 0.02
