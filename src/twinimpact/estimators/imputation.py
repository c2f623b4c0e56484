"""Imputation estimator of Borusyak, Jaravel & Spiess (2024), "Revisiting Event-Study
Designs: Robust and Efficient Estimation", Review of Economic Studies 91(6).

Pipeline (the paper's Theorem 1 and Section 4):

1. fit the model for untreated potential outcomes ``Y_it(0) = a_i + l_t + e_it`` by OLS on
   the untreated observations ``Omega_0`` (never treated and not yet treated);
2. impute ``Y_it(0)`` for every treated observation and take ``tau_it = Y_it - Y^_it(0)``;
3. the estimand is a weighted sum ``tau_w = sum_{it in Omega_1} w_it tau_it`` with weights
   ``w_1`` (all treated observations equally for the static ATT; the observations at event
   time ``h`` for horizon ``h``);
4. variance: the conservative clustered estimator of Theorem 3,
   ``V = sum_clusters (sum_{it} v_it (Y_it - ... - tau^_it))^2`` with the imputation
   weights ``v_it = w_it`` on treated rows and ``v = -Z_0 (Z_0'Z_0)^{-1} Z_1' w_1`` on
   untreated rows (eq. 6), and ``tau^_it`` replaced by its ``v^2``-weighted average within
   cohort x event-time cells, as R ``didimputation`` does (eq. 10 of the 2021 draft).

The first stage (fixed effects and covariates fitted on untreated rows by an exact
Schur-complement solve) is the kernel shared with :mod:`.did2s`, in
:mod:`twinimpact.core.two_stage`.

Keyword mapping to R ``didimputation::did_imputation``: ``outcome`` = ``yname``,
``unit`` = ``idname``, ``time`` = ``tname``, ``cohort`` = ``gname``, ``horizons`` =
``horizon``, ``pretrends=k`` = ``pretrends = -k:-1``, ``cluster`` = ``cluster_var``,
``weights`` = ``wname``. Stata: ``did_imputation Y i t Ei, horizons() pretrends()``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..core.fe import factorize, fit_fe_ols
from ..core.threads import blas_single_thread
from ..core.two_stage import (
    NormalSystem,
    build_normal_system,
    fit_untreated,
    solve_normal,
    system_rhs,
    two_stage_rows,
)
from ..core.validation import as_frame, prepare_panel
from ..errors import (
    DroppedRowsWarning,
    NotComputableWarning,
    SpecificationError,
    check_alpha,
    format_message,
)
from ..results import EstimationResult, VcovSpec, make_result

__all__ = ["ImputationVariance", "imputation", "imputation_variance"]

# ----------------------------------------------------------------------------- variance
@dataclass(frozen=True)
class ImputationVariance:
    """Conservative variance of BJS Theorem 3 for k estimands.

    ``vcov`` (k, k); ``cluster_sums`` (G, k) the per-cluster sums of ``v_it eps_it``;
    ``n_clusters``.
    """

    vcov: np.ndarray
    cluster_sums: np.ndarray
    n_clusters: int


def imputation_variance(system: NormalSystem, wtr: np.ndarray, treated: np.ndarray,
                        resid: np.ndarray, cell: np.ndarray, cluster: np.ndarray,
                        weights: np.ndarray | None = None,
                        include_never: bool = True,
                        never: np.ndarray | None = None) -> ImputationVariance:
    """Clustered conservative variance (BJS 2024, Theorem 3 / eqs. 6, 8, 10 of the draft).

    Parameters
    ----------
    system : normal equations of the first stage on untreated rows.
    wtr : (n, k) estimand weights ``w_it`` (zero on untreated rows), columns sum to 1.
    treated : (n,) bool.
    resid : (n,) ``Y - Y^(0)``: ``tau^_it`` on treated rows, first-stage residual otherwise.
    cell : (n,) int codes of cohort x event-time cells (used on treated rows).
    cluster : (n,) int cluster codes.
    include_never : include never-treated rows in the cluster sums (BJS Theorem 3). R
        ``didimputation`` >= 0.3 sums only rows with a finite event time (``never`` mask).

    Notes
    -----
    One estimand at a time: the imputation weights ``v``, the cell averages and the
    residuals of each column are n-vectors that live only while its cluster sums are
    formed, so the working memory is a few n-vectors instead of eight n x k arrays
    (1e7 rows x 11 horizons: 7 GB). Same arithmetic per column as all columns at once.
    """
    n, k = wtr.shape
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    ncell = int(cell.max()) + 1 if n else 0
    g = int(cluster.max()) + 1
    resid_tr = np.where(treated, resid, 0.0)
    drop = never if (not include_never and never is not None) else None
    sums = np.empty((g, k))
    for j in range(k):
        wj = wtr[:, j]
        # v* = -W_0 Z_0 (Z_0'W_0Z_0)^{-1} Z_1' w_1 on untreated rows, w_1 on treated rows
        u = np.where(treated, wj, 0.0)[:, None]
        b_d, b_m = solve_normal(system, *system_rhs(system, u))
        h = b_d[system.code_d, 0] + np.asarray(system.m @ b_m)[:, 0]
        v = np.where(treated, wj, -w * h)
        # tau-bar: v^2-weighted average of tau^ within cohort x event-time cells
        v2 = np.where(treated, v**2, 0.0)
        num = np.bincount(cell, weights=v2 * resid_tr, minlength=ncell)
        den = np.bincount(cell, weights=v2, minlength=ncell)
        tau_bar = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        contrib = v * (resid - np.where(treated, tau_bar[cell], 0.0))
        if drop is not None:
            contrib[drop] = 0.0
        sums[:, j] = np.bincount(cluster, weights=contrib, minlength=g)
    return ImputationVariance(vcov=sums.T @ sums, cluster_sums=sums, n_clusters=g)


# ----------------------------------------------------------------------------- public
def _as_horizons(horizons: Any, available: np.ndarray) -> list[int] | None:
    if horizons is None or horizons is False:
        return None
    if horizons is True:
        return sorted(int(e) for e in available if e >= 0)
    hs = [horizons] if np.isscalar(horizons) else list(horizons)
    out = []
    for h in hs:
        if isinstance(h, bool) or not float(h).is_integer() or h < 0:
            raise SpecificationError(format_message(
                "horizons must be True or non-negative integers (event times >= 0)", seen=h,
                fix="pass e.g. horizons=[0, 1, 2], or pretrends=k for pre-periods"))
        out.append(int(h))
    return sorted(set(out))


def _as_pretrends(pretrends: Any, available: np.ndarray) -> list[int]:
    if pretrends is None or pretrends is False:
        return []
    if pretrends is True:
        return sorted(int(e) for e in available if e < 0)
    if isinstance(pretrends, bool) or not float(pretrends).is_integer() or pretrends < 1:
        raise SpecificationError(format_message(
            "pretrends must be a positive integer k (estimates relative periods -k..-1) or True",
            seen=pretrends, fix="pass e.g. pretrends=5"))
    return list(range(-int(pretrends), 0))


@blas_single_thread
def imputation(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
               horizons: bool | int | Sequence[int] | None = None,
               pretrends: bool | int | None = None, cluster: str | None = None,
               weights: str | None = None, alpha: float = 0.05) -> EstimationResult:
    """Imputation DiD estimator of Borusyak, Jaravel & Spiess (2024).

    Fits unit and time fixed effects on the untreated observations (never treated and not
    yet treated), imputes ``Y_it(0)`` for every treated observation, and averages
    ``tau_it = Y_it - Y^_it(0)``.

    Parameters
    ----------
    data : DataFrame
        Long panel, one row per unit x period.
    outcome, unit, time : str
        Column names (didimputation ``yname``, ``idname``, ``tname``).
    cohort : str
        First treated period (``gname``); never treated = NaN, 0 or a value after the
        last period.
    horizons : None, True, int or list of int
        None: the static ATT (term ``"ATT"``). True: every event time ``h >= 0``; a list:
        those horizons (terms ``"rel_time=h"``), plus the overall ``"ATT"``. A horizon
        without treated observations is NaN with a :class:`NotComputableWarning`.
    pretrends : int or True, optional
        ``k`` adds pre-trend coefficients for relative periods ``-k..-1`` (terms
        ``"rel_time=-j"``), estimated as in BJS Test 1 / didimputation: OLS of the outcome
        on those event-time dummies plus the fixed effects on the untreated sample, CRV1
        (fixest defaults) by ``cluster``. Their joint Wald test is in
        ``diagnostics["pretrend_test"]``. The covariance between pre-trend and
        post-treatment estimates is not computed (NaN in ``vcov``).
    cluster : str, optional
        Cluster variable (default ``unit``, as didimputation's ``cluster_var``).
    weights : str, optional
        Observation weights (``wname``): WLS first stage and weighted averages of
        ``tau_it``. (R didimputation applies the weights squared in its variance weights;
        we use the estimator's exact linear weights, so weighted SEs differ from R.)
    alpha : float
        Default level for intervals.

    Returns
    -------
    EstimationResult
        Terms ``"ATT"`` and, with horizons/pretrends, ``"rel_time=e"`` (term_info
        ``rel_time``). Standard errors: BJS Theorem 3 conservative clustered variance,
        normal reference distribution (as didimputation's 1.96 intervals).

    Examples
    --------
    >>> from twinimpact.estimators.twfe import _example_panel
    >>> from twinimpact.estimators.imputation import imputation
    >>> r = imputation(_example_panel(), outcome="y", unit="id", time="year", cohort="g",
    ...                horizons=[0, 1, 2])
    >>> [round(float(v), 2) for v in r.params[["rel_time=0", "rel_time=1", "rel_time=2"]]]
    [1.0, 2.0, 3.0]
    """
    data = as_frame(data, what="imputation: data")
    check_alpha(alpha)
    est = "imputation"
    clus = unit if cluster is None else cluster
    if not isinstance(clus, str):
        raise SpecificationError(format_message(
            "imputation: cluster must be one column name", seen=cluster,
            fix="pass cluster='state' (one-way clustering as in didimputation)"))
    extra = [c for c in (clus,) if c not in (unit, time)]
    pdata = prepare_panel(data, outcome=outcome, unit=unit, time=time, cohort=cohort,
                          extra=extra, numeric_extra=[weights] if weights else [],
                          estimator=est)
    f = pdata.frame
    dropped = dict(pdata.dropped)
    y, t, g, never, treated, w = two_stage_rows(f, cohort, weights, "imputation")
    untreated = ~treated
    unit_codes, _ = factorize(f["unit"].to_numpy())
    time_codes, _ = factorize(t)
    fit = fit_untreated(y, [unit_codes, time_codes], untreated, weights=w)
    resid = y - fit.y0_hat
    bad = treated & np.isnan(resid)
    if bad.any():
        dropped["treated rows whose Y(0) cannot be imputed (unit or period without "
                "untreated observations)"] = int(bad.sum())
        warnings.warn(
            f"imputation: {int(bad.sum())} treated row(s) dropped because their unit or "
            "period has no untreated observation, so Y(0) cannot be imputed (e.g. units "
            "treated from the first period). Counted in diagnostics['dropped_rows'].",
            DroppedRowsWarning, stacklevel=2)
    keep = ~bad & ~(untreated & np.isnan(resid))
    rel = np.where(never, np.nan, t - g)
    # ---- estimand weights
    hs = _as_horizons(horizons, np.unique(rel[treated]))
    wvec = np.ones(len(f)) if w is None else w
    cols, names, rel_of = [], [], []
    base = np.where(treated & keep, wvec, 0.0)
    empty = []
    if hs is not None:
        for h in hs:
            col = np.where(rel == h, base, 0.0)
            if col.sum() <= 0:
                empty.append(h)
            cols.append(col)
            names.append(f"rel_time={h}")
            rel_of.append(float(h))
    cols.append(base)
    names.append("ATT")
    rel_of.append(np.nan)
    wtr = np.column_stack(cols)
    tot = wtr.sum(axis=0)
    wtr = np.divide(wtr, tot, out=np.zeros_like(wtr), where=tot > 0)
    est_vals = np.where(tot > 0, wtr.T @ np.where(keep, np.nan_to_num(resid), 0.0), np.nan)
    # ---- variance (on kept rows)
    cl_col = f["unit"] if clus == unit else (f["time"] if clus == time else f[clus])
    cl_codes, _ = factorize(cl_col.to_numpy())
    cohort_key = np.where(never, -1.0, g)
    cell_codes = np.unique(np.column_stack([cohort_key, np.nan_to_num(rel, nan=-1e18)]),
                           axis=0, return_inverse=True)[1].reshape(-1)
    sub = keep
    sys_k = fit.system if sub.all() else build_normal_system(
        [factorize(unit_codes[sub])[0], factorize(time_codes[sub])[0]], None,
        untreated[sub], None if w is None else w[sub])
    var = imputation_variance(sys_k, wtr[sub], treated[sub], resid[sub],
                              factorize(cell_codes[sub])[0], factorize(cl_codes[sub])[0],
                              weights=None if w is None else w[sub])
    vc = var.vcov
    for j in range(len(names)):
        if tot[j] <= 0:
            vc[j, :] = vc[:, j] = np.nan
    # ---- pre-trends (BJS Test 1 as didimputation: FE regression on untreated rows)
    pre_terms: list[str] = []
    pre_coef = np.zeros(0)
    pre_cov = np.zeros((0, 0))
    pre_test: dict[str, Any] = {}
    pre = _as_pretrends(pretrends, np.unique(rel[untreated & ~never]))
    if pre:
        pre_terms, pre_coef, pre_cov, pre_test = _pretrend_fit(
            f, untreated & keep, rel, pre, clus, unit, time, w)
    if empty:
        warnings.warn(f"imputation: horizon(s) {empty} have no treated observations; their "
                      "estimates are NaN.", NotComputableWarning, stacklevel=2)
    # ---- assemble
    all_names = pre_terms + names
    k1, k0 = len(names), len(pre_terms)
    coef = np.concatenate([pre_coef, est_vals])
    cov = np.full((k0 + k1, k0 + k1), np.nan)
    cov[:k0, :k0] = pre_cov
    cov[k0:, k0:] = vc
    rel_all = [float(e) for e in pre] + rel_of
    term_info = pd.DataFrame({"rel_time": rel_all}, index=all_names)
    vspec = VcovSpec(
        "imputation_conservative", cluster=(clus,), n_clusters=(var.n_clusters,),
        small_sample={}, df=None,
        description=("BJS (2024) Theorem 3 conservative clustered variance, tau-bar by "
                     "cohort x event time (didimputation); no small-sample factor; normal "
                     "reference" + ("; pre-trend rows: CRV1 fixest defaults on the untreated"
                                    " sample" if k0 else "")))
    n_nt = int(f.loc[never, "unit"].nunique())
    diag = {**pdata.diagnostics(), "dropped_rows": dropped,
            "n_treated_obs": int((treated & keep).sum()),
            "n_untreated_obs": int(untreated.sum()), "n_units": int(f["unit"].nunique()),
            "n_never_treated_units": n_nt, "n_periods": int(f["time"].nunique()),
            "notes": ([f"horizons {empty} have no treated observations"] if empty else [])
            + (["pre-trend and post-treatment estimates: cross-covariance not computed "
                "(NaN)"] if k0 else [])}
    if pre_test:
        diag["pretrend_test"] = pre_test
    spec = {"outcome": outcome, "unit": unit, "time": time, "cohort": cohort,
            "horizons": None if hs is None else tuple(hs), "pretrends": tuple(pre),
            "cluster": (clus,), "weights": weights, "alpha": alpha,
            "fixed_effects": (unit, time), "ref": ()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotComputableWarning)
        res = make_result(est, pd.Series(coef, index=all_names), cov, vspec,
                          int(keep.sum()), spec=spec, diagnostics=diag, term_info=term_info)
    return res


def _pretrend_fit(f: pd.DataFrame, rows: np.ndarray, rel: np.ndarray, pre: list[int],
                  clus: str, unit: str, time: str, w: np.ndarray | None
                  ) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, Any]]:
    """Pre-trend coefficients: OLS on untreated rows of y on 1[rel = e], e in ``pre``,
    plus unit and time FE; CRV1 with fixest small-sample defaults."""

    sub = f.loc[rows]
    r = rel[rows]
    x = np.column_stack([(r == e).astype(float) for e in pre])
    names = [f"rel_time={e}" for e in pre]
    present = x.sum(axis=0) > 0
    cl = sub["unit"] if clus == unit else (sub["time"] if clus == time else sub[clus])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotComputableWarning)
        params, v, vspec, _info = fit_fe_ols(
            sub["y"].to_numpy(), x, names, [sub["unit"].to_numpy(), sub["time"].to_numpy()],
            vcov="cluster", clusters=[cl.to_numpy()], cluster_names=(clus,),
            weights=None if w is None else w[rows], estimator="imputation")
    coef = params.to_numpy()
    ok = np.isfinite(coef) & present
    test: dict[str, Any] = {"terms": tuple(n for n, o in zip(names, ok, strict=True) if o)}
    if ok.any():
        b = coef[ok]
        vv = v[np.ix_(ok, ok)]
        try:
            stat = float(b @ np.linalg.solve(vv, b))
        except np.linalg.LinAlgError:
            stat = float(b @ np.linalg.pinv(vv) @ b)
        q = int(ok.sum())
        df2 = vspec.df
        test.update({"statistic_chi2": stat, "df": q,
                     "p_value_chi2": float(stats.chi2.sf(stat, q)),
                     "statistic_F": stat / q, "df_denominator": df2,
                     "p_value_F": float(stats.f.sf(stat / q, q, df2)) if df2 else np.nan,
                     "description": "joint Wald test that the pre-trend coefficients are 0 "
                                    "(BJS 2024 Test 1), CRV1 vcov; F version as fixest::wald"})
    else:
        test.update({"statistic_chi2": np.nan, "df": 0, "p_value_chi2": np.nan})
    return names, coef, v, test
