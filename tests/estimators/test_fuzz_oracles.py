"""Fuzz oracles (fuzz2 helper, session 2026-12-01): TWFE and the TWFE event study on
random messy panels against a dense dummy-variable (W)LS solved with numpy lstsq, with
fixest's small-sample factors written out here; the synthetic DiD jackknife on random
block designs against the explicit leave-one-out refit with the weights held fixed.

Panels come from ``tests.test_fuzz_row_order.messy_panel`` (holes, entry / exit, a
singleton unit, few treated, a cohort with no row at rel_time -1, a cohort treated before
the panel, never treated coded NaN / 0 / 10000 / inf), rows shuffled and unit ids
relabelled.  Designs whose dense matrix is rank deficient (a disconnected panel, a dummy
absorbed by the fixed effects) are skipped: there the oracle's normalisation differs.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import twinimpact as ti

from ..test_fuzz_row_order import RELABEL, messy_panel, reshuffle

TOL = 1e-9
C = {"outcome": "y", "unit": "u", "time": "t", "cohort": "g"}


def _never(g: np.ndarray, last: float) -> np.ndarray:
    return np.isnan(g) | (g == 0) | (g > last)


def dense_fit(d: pd.DataFrame, z: np.ndarray, *, weights: np.ndarray | None,
              vcov: str, cluster: np.ndarray | None):
    """(coef, vcov) of ``z`` in y ~ z + unit dummies + time dummies, fixest small sample:
    K = k + (N-1) + (T-1) + 1 minus (levels-1) of each FE set nested in the cluster;
    CRV1 G/(G-1) (n-1)/(n-K); HC1 n/(n-K); iid RSS/(n-K)."""
    u = pd.factorize(d["u"])[0]
    t = pd.factorize(d["t"])[0]
    n, k = len(d), z.shape[1]
    n_u, n_t = u.max() + 1, t.max() + 1
    x = np.column_stack([z, np.eye(n_u)[u], np.eye(n_t)[t][:, 1:]])
    if np.linalg.matrix_rank(x) < x.shape[1]:
        return None
    w = np.ones(n) if weights is None else weights
    sw = np.sqrt(w)
    y = d["y"].to_numpy(dtype=float)
    beta = np.linalg.lstsq(x * sw[:, None], y * sw, rcond=None)[0]
    e = y - x @ beta
    bread = np.linalg.inv((x * w[:, None]).T @ x)
    big_k = k + n_u + n_t - 1
    if vcov == "cluster":
        cl = pd.factorize(pd.Series(cluster))[0]
        g = cl.max() + 1
        for codes, size in ((u, n_u), (t, n_t)):  # FE nested in the cluster
            if (pd.DataFrame({"f": codes, "c": cl}).groupby("f")["c"].nunique() == 1).all():
                big_k -= size - 1
        s = np.zeros((g, x.shape[1]))
        np.add.at(s, cl, x * (w * e)[:, None])
        v = bread @ (s.T @ s) @ bread * g / (g - 1) * (n - 1) / (n - big_k)
    elif vcov == "hetero":
        s = x * (w * e)[:, None]
        v = bread @ (s.T @ s) @ bread * n / (n - big_k)
    else:
        v = bread * (w * e * e).sum() / (n - big_k)
    return beta[:k], v[:k, :k]


def _close(a, b, what, tol=TOL):
    a, b = np.asarray(a, float), np.asarray(b, float)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=what)
    ok = ~np.isnan(b)
    scale = np.abs(b[ok]).max(initial=0.0)
    np.testing.assert_allclose(a[ok], b[ok], rtol=0, atol=tol * scale, err_msg=what)


VCOVS = [("cluster", "u"), ("cluster", "region"), ("cluster", "t"), ("hetero", None),
         ("iid", None)]


def _data(seed, relabel):
    d, _ = reshuffle(messy_panel(seed), seed, relabel)
    return d


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), relabel=st.sampled_from(sorted(RELABEL)),
       vc=st.sampled_from(VCOVS), weighted=st.booleans(), covariate=st.booleans())
def test_twfe_equals_dense_dummy_ols(seed, relabel, vc, weighted, covariate):
    d = _data(seed, relabel)
    g = d["g"].to_numpy(dtype=float)
    last = d["t"].max()
    dd = (~_never(g, last) & (d["t"].to_numpy() >= g)).astype(float)
    assume(0 < dd.sum() < len(d))
    cov = ["x"] if covariate else []
    z = np.column_stack([dd, *(d[c].to_numpy() for c in cov)])
    kind, clus = vc
    want = _dense_oracle(d, z, weighted, vc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = ti.twfe(d, **C, covariates=cov, weights="w" if weighted else None, vcov=kind,
                    cluster=clus)
    assert list(r.terms) == ["ATT", *cov]
    _close(r.coef, want[0], "coef")
    _close(r.cov, want[1], f"vcov {vc}")


def _dense_oracle(d: pd.DataFrame, z: np.ndarray, weighted: bool, vc) -> tuple:
    """The dense dummy-variable fit of ``z`` (weights ``w`` if ``weighted``; ``vc`` =
    (vcov kind, cluster column or None)); examples it cannot fit are skipped."""
    kind, clus = vc
    want = dense_fit(d, z, weights=d["w"].to_numpy() if weighted else None, vcov=kind,
                     cluster=None if clus is None else d[clus].to_numpy())
    assume(want is not None)
    return want


def _event_design(d: pd.DataFrame, ref: int = -1):
    g = d["g"].to_numpy(dtype=float)
    last = d["t"].max()
    treated = ~_never(g, last)
    rel = np.where(treated, d["t"].to_numpy() - np.where(treated, g, 0), np.nan)
    es = sorted({int(e) for e in rel[treated]} - {ref})
    z = np.column_stack([(rel == e).astype(float) for e in es])
    return es, z


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), relabel=st.sampled_from(sorted(RELABEL)),
       vc=st.sampled_from(VCOVS), weighted=st.booleans())
def test_event_study_equals_dense_dummy_ols(seed, relabel, vc, weighted):
    d = _data(seed, relabel)
    es, z = _event_design(d)
    kind, clus = vc
    want = _dense_oracle(d, z, weighted, vc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = ti.event_study(d, **C, weights="w" if weighted else None, vcov=kind,
                           cluster=clus)
    names = [f"rel_time={e}" for e in es]
    assert [t for t in r.terms if t != "ATT"] == names
    idx = [r.terms.index(t) for t in names]
    _close(r.coef[idx], want[0], "coef")
    post = np.array([e >= 0 for e in es], dtype=float) / sum(e >= 0 for e in es)
    j = r.terms.index("ATT")
    _close(r.coef[j], post @ want[0], "ATT")
    full = np.block([[want[1], (want[1] @ post)[:, None]],
                     [(post @ want[1])[None, :], np.array([[post @ want[1] @ post]])]])
    _close_rounding(r.cov[np.ix_([*idx, j], [*idx, j])], full,
                    np.append(want[0], post @ want[0]), f"vcov {vc}")


def _close_rounding(got, want, coef, what):
    """``_close`` on variances, where the package may report NaN for a variance the
    oracle computes as rounding of zero (its SE at most 1e-6 of the estimate or of the
    largest SE: clusters by period over few periods, seed 1238 -- an oracle variance of
    1.2e-29 beside an estimate of 1.8); everything else as ``_close``."""
    se = np.sqrt(np.abs(np.diag(want)))
    tiny = se <= 1e-6 * np.maximum(np.abs(coef), se.max(initial=0.0))
    blank = np.isnan(np.diag(got)) & ~np.isnan(np.diag(want))
    assert not (blank & ~tiny).any(), f"{what}: NaN where the oracle is not ~0: {se}"
    keep = ~blank
    _close(got[np.ix_(keep, keep)], want[np.ix_(keep, keep)], what)


# ------------------------------------------------------------ synthetic DiD jackknife
@st.composite
def _sdid_design(draw):
    seed = draw(st.integers(0, 10**6))
    n0 = draw(st.integers(2, 25))
    t = draw(st.integers(4, 12))
    n_groups = draw(st.integers(1, min(3, t - 2)))
    adopt = sorted(draw(st.lists(st.integers(2, t - 1), min_size=n_groups,
                                 max_size=n_groups, unique=True)))
    sizes = draw(st.lists(st.integers(1, 5), min_size=len(adopt), max_size=len(adopt)))
    return seed, n0, t, tuple(adopt), tuple(sizes)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(design=_sdid_design(), method=st.sampled_from(["sdid", "sc", "did"]),
       level=st.sampled_from([0.0, 1e4]))
def test_sdid_jackknife_equals_leave_one_out_refit_on_random_designs(design, method, level):
    from twinimpact.estimators._sdid_inference import (
        fit_design,
        jackknife_pseudovalues,
        replicate_vcov,
    )

    from .test_sdid_jackknife import _close as close_nan
    from .test_sdid_jackknife import _panel, _row_copy_jackknife

    seed, n0, t, adopt, sizes = design
    y, n0, groups = _panel(seed, n0, sizes, T=t, adopt=adopt)
    y = y + level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits, _ = fit_design(y, np.arange(n0), groups, method)
    ref = _row_copy_jackknife(y, n0, groups, fits)
    got = jackknife_pseudovalues(y, n0, groups, fits)
    close_nan(got, ref, tol=1e-10)
    if not np.isnan(ref[:, 0]).any():
        close_nan(np.diag(replicate_vcov(got, "jackknife")),
                  np.diag(replicate_vcov(ref, "jackknife")), tol=1e-10)


def _sdid_cov_panel(seed):
    rng = np.random.default_rng(seed)
    n, t = int(rng.integers(6, 20)), int(rng.integers(5, 10))
    adopt = rng.choice(np.arange(2, t), size=int(rng.integers(1, 3)), replace=False)
    first = np.full(n, np.inf)
    n_tr = int(rng.integers(1, max(2, n // 3)))
    first[rng.choice(n, n_tr, replace=False)] = rng.choice(adopt, n_tr)
    u, tt = np.repeat(np.arange(n), t), np.tile(np.arange(t), n)
    x = rng.normal(size=n * t) + 0.2 * tt * (u % 3)
    x2 = rng.normal(size=n * t)
    w = (tt >= first[u]).astype(int)
    y = u % 4 + 0.3 * tt + 0.8 * x - 0.5 * x2 + 1.5 * w + rng.normal(0, 0.3, n * t)
    d = pd.DataFrame({"city": [_u_label(k) for k in u], "year": 2000 + tt, "y": y, "w": w,
                      "x": x, "x2": x2})
    return d.sample(frac=1, random_state=seed).reset_index(drop=True)


def _u_label(k: int) -> str:
    return ["c", "city-with-a-long-name-", "ü"][k % 3] + str(k)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), method=st.sampled_from(["sdid", "sc", "did"]),
       covs=st.sampled_from([["x"], ["x", "x2"]]),
       sample=st.sampled_from(["never_treated", "not_yet_treated"]))
def test_sdid_projected_jackknife_equals_refit_on_random_panels(seed, method, covs, sample):
    import twinimpact.estimators.synthetic_did as sd_mod

    df = _sdid_cov_panel(seed)
    kw = dict(outcome="y", unit="city", time="year", treated="w", covariates=covs,
              covariate_method="projected", method=method, projection_sample=sample,
              se="jackknife")
    mp = pytest.MonkeyPatch()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fast = ti.synthetic_did(df, **kw)
            except ti.errors.TwinImpactError:
                return
            mp.setattr(sd_mod.BlockFitter, "_jackknife_projected", lambda self: None)
            ref = ti.synthetic_did(df, **kw)
    finally:
        mp.undo()
    assert float(fast.params["ATT"]) == float(ref.params["ATT"])
    assert (fast.replicates is None) == (ref.replicates is None)
    if ref.replicates is not None:
        _close(fast.replicates, ref.replicates, "pseudo-values", 1e-9)
    _close(fast.std_errors.to_numpy(), ref.std_errors.to_numpy(), "SE", 1e-9)


# ---------------------------------------------- Sun-Abraham: unreferenced cohorts (8355f82)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), relabel=st.sampled_from(sorted(RELABEL)),
       covariate=st.booleans())
def test_sun_abraham_equals_the_fit_without_unreferenced_cohorts(seed, relabel, covariate):
    """A treated cohort with no row at rel_time -1 is dropped: the result equals the fit on
    the data without that cohort's units (cells, vcov, aggregates), and the dropped rows
    are counted."""
    d = _data(seed, relabel)
    assume(d["t"].nunique() == d["t"].max() - d["t"].min() + 1)  # no period missing
    g = d["g"].to_numpy(dtype=float)
    last = d["t"].max()
    treated = ~_never(g, last)
    rel = d["t"].to_numpy() - g
    # cohorts with no row before their first treated period: always treated, dropped too
    cohorts = set(g[treated & (rel < 0)])
    has_ref = set(g[treated & (rel == -1)])
    unref = sorted(cohorts - has_ref)
    assume(unref and cohorts - set(unref))
    # the oracle drops the rows; that must not move the calendar's ends (a cohort after
    # the last period is never treated, so a shorter panel would recode later cohorts:
    # seed 1093, where the dropped unit alone had rows in the last year)
    rest = d["t"][~np.isin(g, unref)]
    assume(rest.min() == d["t"].min() and rest.max() == last)
    kw = {**C, "covariates": ["x"] if covariate else None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = ti.sun_abraham(d, **kw)
        sub = ti.sun_abraham(d[~np.isin(g, unref)], **kw)
    assert full.terms == sub.terms and full.nobs == sub.nobs
    _close(full.coef, sub.coef, "params")
    _close(full.cov, sub.cov, "vcov")
    for how in ("simple", "cohort"):
        a, b = full.aggregate(how), sub.aggregate(how)
        _close(a.coef, b.coef, how)
        _close(a.cov, b.cov, how)
    reason = [k for k in full.diagnostics["dropped_rows"] if "reference period" in k]
    # a cohort with no row before its treatment at all goes as always treated (counted
    # under that reason, first); the others without a rel_time -1 row under this one
    always = {c for c in unref if not (rel[g == c] < 0).any()}
    unref_only = [c for c in unref if c not in always]
    if unref_only:
        assert len(reason) == 1
        assert full.diagnostics["dropped_rows"][reason[0]] == int(np.isin(g, unref_only).sum())
    else:
        assert not reason


# ------------------------------------------------- no residual degrees of freedom (542295e)
def _tiny_panel(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_u, n_t = int(rng.integers(2, 5)), int(rng.integers(2, 4))
    d = pd.DataFrame({"u": np.repeat(np.arange(n_u), n_t), "t": np.tile(np.arange(n_t), n_u)})
    keep = rng.random(len(d)) > 0.15
    keep[: 2 * n_t] = True
    d = d[keep].reset_index(drop=True)
    g = np.full(n_u, np.nan)
    g[0] = n_t - 1
    d["g"] = g[d["u"]]
    d["y"] = rng.normal(size=len(d)) + (d["t"] >= d["g"])
    d["x"] = rng.normal(size=len(d))
    return d


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), vc=st.sampled_from([("cluster", "u"), ("hetero", None),
                                                       ("iid", None), ("cluster", "t")]),
       covariate=st.booleans())
def test_tiny_fits_have_nan_variance_exactly_when_no_residual_dof(seed, vc, covariate):
    """K = coefficients + FE levels - 1 (every set counted): n <= K leaves every residual
    zero -> every variance NaN whatever the kind (never 0, never finite); n > K -> finite
    (with fixest's nested K in the clustered factor, which is then positive too)."""
    d = _tiny_panel(seed)
    cov = ["x"] if covariate else []
    g = d["g"].to_numpy(dtype=float)
    dd = (~np.isnan(g) & (d["t"].to_numpy() >= g)).astype(float)
    z = np.column_stack([dd, *(d[c].to_numpy() for c in cov)])
    n_u, n_t = d["u"].nunique(), d["t"].nunique()
    x = np.column_stack([z, np.eye(n_u)[pd.factorize(d["u"])[0]],
                         np.eye(n_t)[pd.factorize(d["t"])[0]][:, 1:]])
    assume(np.linalg.matrix_rank(x) == x.shape[1])  # identified (else NaN for other reasons)
    kind, clus = vc
    k = z.shape[1] + n_u + n_t - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = ti.twfe(d, **C, covariates=cov, vcov=kind, cluster=clus)
    if len(d) <= k:
        assert np.isnan(r.cov).all(), (len(d), k, r.cov)
        return
    # n > K: a number -- unless the variance is zero by construction (two periods,
    # clustered by period: each period's score sum is zero, seeds 235 and 1), which the
    # oracle's own variance shows (statsmodels on the dummy design, same clusters; its
    # zero rounds to SE ~1e-7 of the estimate): then NaN, or an SE that small
    sm_kw = ({"cov_type": "cluster", "cov_kwds": {"groups": pd.factorize(d[clus])[0]}}
             if kind == "cluster" else {"cov_type": "HC1" if kind == "hetero" else
                                        "nonrobust"})
    fit = sm.OLS(d["y"].to_numpy(), x).fit(**sm_kw)
    p = z.shape[1]
    sm_se = np.sqrt(np.abs(np.diag(fit.cov_params())[:p]))
    # (or rounding beside the other coefficients' SEs: seed 100001, clustered by period,
    # the covariate's SE 1.0e-8 beside the effect's 0.90 is 1.27e-6 of its own small
    # estimate, -0.0081; the period effects make its period score sums zero)
    zero = ((sm_se <= 1e-6 * np.abs(fit.params[:p]))
            | (sm_se <= 1e-6 * np.nanmax(sm_se, initial=0.0)))
    if clus == "t" and n_t == 2 and (d.groupby("u")["t"].nunique() == 2).all():
        # zero by construction, whatever the oracle's rounding: with unit and period
        # effects on a balanced two-period panel, each unit's two demeaned regressors
        # and residuals are opposite, so both periods' score sums are equal, and they
        # add to zero (the normal equations). statsmodels' pinv rounds that zero to
        # SE 3.4e-6 of the estimate on a design with cond 1.2e3 (seed 10119)
        zero = np.ones(p, dtype=bool)
    se = np.sqrt(np.diag(r.cov))
    tiny = ~(se > 1e-6 * np.abs(r.coef))  # NaN or at most 1e-6 of the estimate
    np.testing.assert_array_equal(tiny, zero,
                                  err_msg=f"{len(d)} {k} {r.cov} {fit.cov_params()}")


# ------------------------------------------------------- imputation / did2s point estimates
def _imputed_effects(d: pd.DataFrame):
    """Borusyak-Jaravel-Spiess by hand: unit + period effects fitted by lstsq on the
    untreated rows, tau_it = y_it - yhat_it on the treated rows whose unit and period
    both have untreated rows (the others cannot be imputed)."""
    g = d["g"].to_numpy(dtype=float)
    t = d["t"].to_numpy()
    treated = ~_never(g, d["t"].max()) & (t >= g)
    u0, t0 = set(d["u"][~treated]), set(d["t"][~treated])
    ok = treated & d["u"].isin(u0).to_numpy() & d["t"].isin(t0).to_numpy()
    uc = pd.Categorical(d["u"], categories=list(dict.fromkeys(d["u"][~treated])))
    tc = pd.Categorical(d["t"], categories=sorted(t0))
    x = np.column_stack([np.eye(len(uc.categories))[uc.codes.clip(0)],
                         np.eye(len(tc.categories))[tc.codes.clip(0)][:, 1:]])
    y = d["y"].to_numpy(dtype=float)
    if np.linalg.matrix_rank(x[~treated]) < x.shape[1]:
        return None
    beta = np.linalg.lstsq(x[~treated], y[~treated], rcond=None)[0]
    tau = np.where(ok, y - x @ beta, np.nan)
    return tau, ok, t - np.where(treated, g, 0)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), relabel=st.sampled_from(sorted(RELABEL)))
def test_imputation_and_did2s_point_estimates_equal_the_hand_imputation(seed, relabel):
    d = _data(seed, relabel)
    out = _imputed_effects(d)
    assume(out is not None)
    tau, ok, rel = out
    assume(ok.any())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = ti.imputation(d, **C)
        rh = ti.imputation(d, **C, horizons=[0, 1])
        r2 = ti.did2s(d, **C)
    _close(r.params["ATT"], np.nanmean(tau[ok]), "imputation ATT")
    # Gardner's second stage y - yhat ~ 0 + D: the mean of tau over the imputed rows
    _close(r2.params["ATT"], np.nanmean(tau[ok]), "did2s ATT")
    for h in (0, 1):
        sel = ok & (rel == h)
        term = f"rel_time={h}"
        if sel.any():
            _close(rh.params[term], tau[sel].mean(), f"imputation horizon {h}")
        else:
            assert term not in rh.terms or np.isnan(rh.params[term])
