"""callaway_santanna(..., allow_unbalanced_panel=True): R did's unbalanced-panel path.

Peer reference numbers (moderndid 0.2.0, R did's repeated-cross-section path, see
tests/reference/callaway_santanna/make_moderndid_unbalanced_reference.py), a slow oracle
from explicit group means and per-observation influence functions, invariances, units
observed once, the balanced-panel behaviour, inference options and bad input.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinimpact.errors import (
    DroppedRowsWarning,
    NotComputableWarning,
    SpecificationError,
)
from twinimpact.estimators.callaway_santanna import callaway_santanna

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "reference" / "callaway_santanna" / "moderndid_mpdta_unbalanced.json"
MPDTA = ROOT / "data" / "mpdta" / "mpdta.csv"
KW = dict(outcome="lemp", unit="countyreal", time="year", cohort="first.treat")
UKW = dict(KW, allow_unbalanced_panel=True)

#: Reference tolerances given in the brief (estimates 1e-8 absolute, SEs 1e-6 relative);
#: the peer ports the same formulas and agrees to ~1e-12 (logit converged to ~1e-12).
EST_TOL = 1e-8
SE_RTOL = 1e-6
#: Floating-point noise of exact algebraic identities (means of ~1e3 numbers).
EXACT = 1e-10
#: Invariance checks re-run the same arithmetic in another order.
REORDER = 1e-9
#: Multiplier bootstrap (999 draws) vs analytic standard errors: sampling noise of an IQR.
BOOT_RTOL = 0.15


def _load_ref() -> dict:
    return json.loads(REF.read_text())


def _options(opts: dict) -> dict:
    """moderndid/R option names -> ours."""
    out = {}
    for k, v in opts.items():
        if k == "xformla":
            out["covariates"] = [v.removeprefix("~")]
        elif k == "est_method":
            out["method"] = v
        elif k == "control_group":
            out["control_group"] = {"nevertreated": "never_treated",
                                    "notyettreated": "not_yet_treated"}[v]
        elif k == "base_period":
            out["base_period"] = v
        else:  # pragma: no cover - a new case in the reference file
            raise KeyError(k)
    return out


@pytest.fixture(scope="module")
def full() -> pd.DataFrame:
    return pd.read_csv(MPDTA)


@pytest.fixture(scope="module")
def unbal(full) -> pd.DataFrame:
    """mpdta minus the 250 (countyreal, year) rows listed in the reference file."""
    drop = pd.DataFrame(_load_ref()["dropped_pairs"], columns=["countyreal", "year"])
    flag = full.merge(drop.assign(_drop=1), how="left", on=["countyreal", "year"])["_drop"]
    return full[flag.isna().to_numpy()].reset_index(drop=True)


@pytest.fixture(scope="module")
def unbal_fit(unbal):
    return callaway_santanna(unbal, **UKW)


# ----------------------------------------------------------------------------- reference
# the "balanced*" cases are R's repeated-cross-section path on balanced data (R did < 2.3);
# R did >= 2.3 (and we) use the panel estimators there: see test_balanced_panel_uses_panel_path
@pytest.mark.parametrize("case", [c for c in _load_ref()["cases"]
                                  if not c.startswith("balanced")])
def test_moderndid_reference(case, full, unbal):
    ref = _load_ref()
    assert {"package", "version", "call", "source", "data"} <= set(ref["provenance"])
    c = ref["cases"][case]
    data = full if case.startswith("balanced") else unbal
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotComputableWarning)
        res = callaway_santanna(data, **UKW, **_options(c["options"]))
    assert res.diagnostics["n_units"] == c["n_units"]
    assert res.diagnostics["estimation_path"] == "repeated_cross_sections"
    info = res.term_info
    a = c["att_gt"]
    assert list(info["cohort"]) == a["group"] and list(info["time"]) == a["time"]
    np.testing.assert_allclose(res.coef, a["estimate"], rtol=0, atol=EST_TOL)
    se = res.std_errors.to_numpy()
    norm = np.array(a["std_error"]) > 0  # universal base: the normalised cell
    np.testing.assert_allclose(se[norm], np.array(a["std_error"])[norm], rtol=SE_RTOL)
    key_col = {"dynamic": "rel_time", "group": "cohort", "calendar": "time"}
    for kind, v in c["aggregate"].items():
        agg = res.aggregate(kind)
        assert agg.params["ATT"] == pytest.approx(v["estimate"], abs=EST_TOL), kind
        assert agg.std_errors["ATT"] == pytest.approx(v["std_error"], rel=SE_RTOL), kind
        if kind == "simple":
            continue
        fr = agg.to_frame()
        fr = fr[fr.term != "ATT"].set_index(key_col[kind])
        for key, e, s in zip(v["keys"], v["estimates"], v["std_errors"], strict=True):
            if key not in fr.index:  # universal base: reference period omitted (spec['ref'])
                assert kind == "dynamic" and agg.spec["ref"] == (key,) and e == 0
                continue
            assert fr.loc[key, "estimate"] == pytest.approx(e, abs=EST_TOL), (kind, key)
            assert fr.loc[key, "std_error"] == pytest.approx(s, rel=SE_RTOL), (kind, key)


# ----------------------------------------------------------------------------- oracle
def _oracle(df: pd.DataFrame, control: str = "never_treated") -> dict:
    """ATT(g,t) and per-unit influence functions from explicit group means of the rows
    observed in the two periods (no covariates, varying base period), one loop per cell:
    ATT = (mean y[g, t] - mean y[g, b]) - (mean y[C, t] - mean y[C, b]); the influence
    function of each row is +-(n_units / N_cell) (y - cell mean), summed by unit."""
    g_all = df["first.treat"]
    units = np.sort(df.countyreal.unique())
    n = len(units)
    periods = np.sort(df.year.unique())
    out = {}
    for g in sorted(g_all[g_all > 0].unique()):
        pre = periods[periods < g][-1]
        for i, t in enumerate(periods[1:], start=1):
            b = pre if g <= t else periods[i - 1]
            if control == "never_treated":
                is_c = g_all == 0
            else:
                is_c = (g_all == 0) | ((g_all > max(t, b)) & (g_all != g))
            cells = {
                ("T", 1): (g_all == g) & (df.year == t), ("T", 0): (g_all == g) & (df.year == b),
                ("C", 1): is_c & (df.year == t), ("C", 0): is_c & (df.year == b)}
            means = {k: df.loc[m, "lemp"].mean() for k, m in cells.items()}
            att = (means["T", 1] - means["T", 0]) - (means["C", 1] - means["C", 0])
            psi = pd.Series(0.0, index=units)
            for (grp, post), m in cells.items():
                sign = (1 if post else -1) * (1 if grp == "T" else -1)
                rows = df.loc[m]
                contrib = sign * n / len(rows) * (rows["lemp"] - means[grp, post])
                psi = psi.add(contrib.groupby(rows.countyreal.to_numpy()).sum(), fill_value=0)
            out[f"ATT({g},{t})"] = (att, psi.to_numpy())
    return out


@pytest.mark.parametrize("control", ["never_treated", "not_yet_treated"])
def test_slow_oracle_group_means(unbal, control):
    res = callaway_santanna(unbal, **UKW, control_group=control)
    orc = _oracle(unbal, control)
    assert set(orc) == set(res.terms)
    order = np.argsort(res.units)
    for j, term in enumerate(res.terms):
        att, psi = orc[term]
        assert res.params[term] == pytest.approx(att, abs=EXACT), term
        np.testing.assert_allclose(np.asarray(res.influence)[order, j], psi, atol=EXACT)
    n = len(res.units)
    se_oracle = [np.sqrt(np.sum(orc[t][1] ** 2)) / n for t in res.terms]
    np.testing.assert_allclose(res.std_errors.to_numpy(), se_oracle, rtol=1e-9)


def test_no_covariate_methods_agree(unbal, unbal_fit):
    """Without covariates drdid_rc, std_ipw_did_rc and reg_did_rc are one estimator."""
    for m in ("reg", "ipw"):
        r = callaway_santanna(unbal, **UKW, method=m)
        np.testing.assert_allclose(r.coef, unbal_fit.coef, atol=EXACT)
        np.testing.assert_allclose(r.cov, unbal_fit.cov, atol=EXACT)


# ----------------------------------------------------------------------------- invariances
def _fit_summary(res) -> tuple[np.ndarray, np.ndarray, float]:
    return res.coef, res.std_errors.to_numpy(), float(res.aggregate("simple").params["ATT"])


@pytest.mark.parametrize("covariates", [None, ["lpop"]])
def test_shuffle_relabel_shift(unbal, covariates):
    base = callaway_santanna(unbal, **UKW, covariates=covariates)
    b_coef, b_se, b_simple = _fit_summary(base)
    shuffled = unbal.sample(frac=1.0, random_state=7)
    ids = np.sort(unbal.countyreal.unique())
    new = dict(zip(ids, np.random.default_rng(3).permutation(len(ids)), strict=True))
    relabeled = unbal.assign(countyreal="c" + unbal.countyreal.map(new).astype(str))
    shift = 100
    shifted = unbal.assign(year=unbal.year + shift,
                           **{"first.treat": np.where(unbal["first.treat"] > 0,
                                                      unbal["first.treat"] + shift, 0)})
    for df in (shuffled, relabeled, shifted):
        r = callaway_santanna(df, **UKW, covariates=covariates)
        coef, se, simple = _fit_summary(r)
        np.testing.assert_allclose(coef, b_coef, atol=REORDER)
        np.testing.assert_allclose(se, b_se, rtol=REORDER)
        assert simple == pytest.approx(b_simple, abs=REORDER)
    info = callaway_santanna(shifted, **UKW, covariates=covariates).term_info
    assert list(info["time"]) == list(base.term_info["time"] + shift)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), shift=st.integers(-50, 50), scale=st.sampled_from(
    [0.5, 2.0, -1.0]), const=st.floats(-5, 5))
def test_property_affine_outcome_and_permutation(seed, shift, scale, const):
    """On a small random unbalanced panel: permuting rows and shifting years changes
    nothing; y -> a + b y scales every ATT(g,t) and standard error by b (|b|)."""
    rng = np.random.default_rng(seed)
    n, T = 40, 6
    g = rng.choice([0, 2003, 2004, 2005], size=n, p=[0.4, 0.2, 0.2, 0.2])
    g[:4] = 0
    g[4:8] = [2003, 2004, 2005, 2005]
    df = pd.DataFrame({"id": np.repeat(np.arange(n), T),
                       "year": np.tile(np.arange(2001, 2001 + T), n),
                       "g": np.repeat(g, T)})
    df["y"] = rng.normal(size=len(df)) + np.repeat(rng.normal(size=n), T)
    df = df[rng.random(len(df)) > 0.2].reset_index(drop=True)
    kw = dict(outcome="y", unit="id", time="year", cohort="g", allow_unbalanced_panel=True,
              method="reg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = callaway_santanna(df, **kw)
        moved = callaway_santanna(
            df.sample(frac=1.0, random_state=seed).assign(
                year=lambda d: d.year + shift, g=lambda d: np.where(d.g > 0, d.g + shift, 0),
                y=lambda d: const + scale * d.y), **kw)
    assert base.terms == moved.terms or list(base.term_info["time"] + shift) == list(
        moved.term_info["time"])
    np.testing.assert_allclose(moved.coef, scale * base.coef, atol=1e-8, equal_nan=True)
    np.testing.assert_allclose(moved.std_errors, abs(scale) * base.std_errors, rtol=1e-8,
                               atol=1e-12, equal_nan=True)


def test_caller_frame_unchanged(unbal):
    before = unbal.copy(deep=True)
    callaway_santanna(unbal, **UKW, covariates=["lpop"], control_group="not_yet_treated")
    pd.testing.assert_frame_equal(unbal, before)


# ----------------------------------------------------------------------------- units / rows
def test_unit_observed_once_is_kept_and_counted(unbal, unbal_fit):
    counts = unbal.groupby("countyreal").size()
    once = counts[counts == 1].index
    assert len(once) == 1  # the reference sample has one such county
    d = unbal_fit.diagnostics
    assert d["n_units"] == 500 and d["n_units_observed_once"] == 1
    assert d["units_by_periods_observed"] == {int(k): int(v)
                                              for k, v in counts.value_counts().items()}
    assert d["balanced_panel"] is False and d["dropped_units"] == {}
    assert unbal_fit.nobs == len(unbal) == d["n_used_rows"]
    # it enters every cell whose t or base period is its one year (and its group's cells)
    row = int(np.flatnonzero(np.asarray(unbal_fit.units) == once[0])[0])
    assert np.count_nonzero(np.asarray(unbal_fit.influence)[row]) > 0
    # R's default path drops it (and the other incomplete units), counted
    with pytest.warns(DroppedRowsWarning, match="allow_unbalanced_panel=True"):
        bal = callaway_santanna(unbal, **KW)
    assert bal.diagnostics["n_units"] == int((counts == 5).sum())


def test_missing_cell_is_nan_with_reason(full):
    """A cohort with no observation in its base period: those ATT(g,t) are NaN (R: "No
    units in group g in time period ..."), with a warning, and na_rm aggregates work."""
    df = full[~((full["first.treat"] == 2006) & (full.year == 2005))]
    with pytest.warns(NotComputableWarning, match="could not be computed"):
        res = callaway_santanna(df, **UKW)
    nan_terms = [t for t in res.terms if np.isnan(res.params[t])]
    assert nan_terms and all(t.startswith("ATT(2006,") for t in nan_terms)
    assert all("no observations" in res.diagnostics["cells_not_computed"][t]
               for t in nan_terms)
    agg = res.aggregate("group", na_rm=True)
    assert np.isfinite(agg.params["ATT"])


# ----------------------------------------------------------------------------- balanced
def test_balanced_panel_uses_panel_path(full):
    """allow_unbalanced_panel=True on a balanced panel gives exactly the panel estimators
    (R did >= 2.3.0 resets allow_unbalanced_panel to FALSE), with covariates too."""
    for kw in ({}, {"covariates": ["lpop"]}, {"covariates": ["lpop"], "method": "ipw"}):
        panel = callaway_santanna(full, **KW, **kw)
        both = callaway_santanna(full, **UKW, **kw)
        assert both.diagnostics["estimation_path"] == "panel"
        assert both.diagnostics["balanced_panel"] is True
        assert "R did >= 2.3.0" in both.diagnostics["notes"][0]
        np.testing.assert_array_equal(both.coef, panel.coef)
        np.testing.assert_array_equal(both.cov, panel.cov)


# ----------------------------------------------------------------------------- inference
def test_cluster_and_bootstrap_on_unbalanced(unbal, unbal_fit):
    df = unbal.assign(state=unbal.countyreal // 1000)
    cl = callaway_santanna(df, **UKW, cluster="state")
    psi = np.asarray(unbal_fit.influence)
    state = pd.Series(np.asarray(unbal_fit.units)).floordiv(1000).to_numpy()
    sums = pd.DataFrame(psi).groupby(state).sum().to_numpy()
    n = psi.shape[0]
    np.testing.assert_allclose(cl.cov, sums.T @ sums / n**2, rtol=1e-10, atol=1e-15)
    bs = callaway_santanna(unbal, **UKW, n_reps=999, seed=11)
    np.testing.assert_allclose(bs.std_errors, unbal_fit.std_errors, rtol=BOOT_RTOL)
    assert bs.ci_kind.startswith("uniform")
    dyn = bs.aggregate("dynamic")
    assert np.all(np.isfinite(dyn.std_errors))


def test_universal_base_and_anticipation_run(unbal):
    res = callaway_santanna(unbal, **UKW, base_period="universal", anticipation=1,
                            control_group="not_yet_treated", covariates=["lpop"])
    assert res.spec["allow_unbalanced_panel"] is True
    norm = res.diagnostics["normalized_cells"]
    assert norm and all(res.params[t] == 0 for t in norm)
    dyn = res.aggregate("dynamic", na_rm=True)
    assert dyn.spec["ref"] == (-2,)


def test_bad_option(unbal):
    with pytest.raises(SpecificationError, match="allow_unbalanced_panel"):
        callaway_santanna(unbal, **KW, allow_unbalanced_panel="yes")


# ----------------------------------------------------------------------------- scale
@pytest.mark.slow
def test_long_unbalanced_panel_runs_fast():
    """200 units x 144 years, ~60 cohorts, 30% of rows missing: ~9,000 ATT(g,t), ~3,700 of
    them before treatment. The cells take well under a second; most of the time is the
    9,000 x 9,000 vcov. The singular pre-test's rank and identified-direction Wald come from
    the SVD of the 200 x 3,700 influence sums (was an SVD and an eigh of the 3,700 x 3,700
    covariance: 29 of 36 s CPU); ~8 s CPU in all."""
    rng = np.random.default_rng(0)
    n, T = 200, 144
    years = np.arange(1870, 1870 + T)
    coh = np.where(rng.random(n) < 0.2, 0, rng.choice(years[3:-2][::2][:70], n))
    df = pd.DataFrame({"id": np.repeat(np.arange(n), T), "year": np.tile(years, n),
                       "g": np.repeat(coh, T)})
    df["y"] = rng.normal(size=len(df)) + ((df.g > 0) & (df.year >= df.g))
    df = df[rng.random(len(df)) > 0.3]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = callaway_santanna(df, outcome="y", unit="id", time="year", cohort="g",
                                allow_unbalanced_panel=True)
    elapsed = time.perf_counter() - t0
    assert len(res.terms) > 8000
    assert res.aggregate("simple", na_rm=True).params["ATT"] == pytest.approx(1.0, abs=0.2)
    assert elapsed < 60  # generous: a shared 2-core machine; ~5 s unloaded
