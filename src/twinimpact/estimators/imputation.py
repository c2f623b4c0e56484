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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from ..core import rowblocks
from ..core.fe import factorize, fit_fe_ols
from ..core.rowblocks import codes_present, row_blocks
from ..core.threads import blas_single_thread
from ..core.two_stage import (
    ColumnSolver,
    FittedClusterSums,
    NormalSystem,
    build_normal_system,
    two_stage_rows,
    untreated_residuals,
)
from ..core.validation import as_frame, prepare_panel
from ..errors import (
    COUNTS_POINTER,
    DroppedRowsWarning,
    NotComputableWarning,
    SpecificationError,
    check_alpha,
    format_message,
    format_values,
)
from ..results import (
    NAN_WARNING_PATTERN,
    ATTDefinition,
    EstimationResult,
    PretrendTest,
    VcovSpec,
    make_result,
    variance_scale,
    wald_pretrend_test,
)

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


def imputation_variance(system: NormalSystem, wtr: Any, treated: np.ndarray,
                        resid: np.ndarray, cell: np.ndarray, cluster: np.ndarray,
                        weights: np.ndarray | None = None,
                        include_never: bool = True,
                        never: np.ndarray | None = None) -> ImputationVariance:
    """Clustered conservative variance (BJS 2024, Theorem 3 / eqs. 6, 8, 10 of the draft).

    Parameters
    ----------
    system : normal equations of the first stage on untreated rows.
    wtr : (n, k) estimand weights ``w_it`` (read on treated rows), columns sum to 1; a
        scipy sparse matrix (each column stores only its treated rows) or a dense array.
    treated : (n,) bool.
    resid : (n,) ``Y - Y^(0)``: ``tau^_it`` on treated rows, first-stage residual otherwise.
    cell : (n,) int codes of cohort x event-time cells (read on treated rows).
    cluster : (n,) int cluster codes.
    include_never : include never-treated rows in the cluster sums (BJS Theorem 3). R
        ``didimputation`` >= 0.3 sums only rows with a finite event time (``never`` mask).

    Notes
    -----
    One estimand at a time, and each touches only its own treated rows: the right-hand
    side ``Z_1' w_1`` is a ``bincount`` over them, the cell averages and the treated part
    of the cluster sums too. The untreated part, ``-sum_cluster w_it (Z b)_it eps_it``
    with ``b = (Z_0'W_0Z_0)^{-1} Z_1' w_1`` (the imputation weights ``v`` of eq. 6 times
    the residuals), comes from :class:`~twinimpact.core.two_stage.FittedClusterSums`:
    level sums formed once when clusters contain whole units. No n x k array is formed.
    """
    wtr = sparse.csc_matrix(wtr)
    ncell = int(cell.max()) + 1 if wtr.shape[0] else 0
    sums = _imputation_sums(system, wtr.indptr, wtr.indices,
                            lambda j, a, b, r: wtr.data[a:b], treated, resid,
                            lambda r: cell[r], ncell, cluster, weights, include_never, never)
    return ImputationVariance(vcov=sums.T @ sums, cluster_sums=sums,
                              n_clusters=int(cluster.max()) + 1)


def _imputation_sums(system: NormalSystem, indptr: np.ndarray, indices: np.ndarray,
                     vals: Callable[[int, int, int, np.ndarray], Any], treated: np.ndarray,
                     resid: np.ndarray, cell_of: Callable[[np.ndarray], np.ndarray],
                     ncell: int, cluster: np.ndarray, weights: np.ndarray | None,
                     include_never: bool, never: np.ndarray | None) -> np.ndarray:
    """(G, k) cluster sums of :func:`imputation_variance` for estimand weights given as
    CSC columns: ``vals(j, a, b, r)`` the weights of column ``j`` at its positions
    ``a:b`` (rows ``r``; an array, or one number for all), ``cell_of(r)`` the cell codes
    (< ``ncell``) of rows ``r``. Each column is read in blocks of rows into reused
    buffers (:class:`ColumnSolver`, :meth:`FittedClusterSums.into`): the same sums, added
    in the same order, as whole-column ``np.bincount`` passes."""
    k = len(indptr) - 1
    g = int(cluster.max()) + 1
    rows_u = ~treated if include_never or never is None else ~treated & ~never
    untreated_sums = FittedClusterSums(system, resid, rows_u, cluster, g, weights=weights)
    del rows_u
    solver = ColumnSolver(system)
    sums = np.empty((g, k))
    own, fs = np.empty(g), np.empty(g)
    num, den = np.empty(ncell), np.empty(ncell)

    def chunks(j: int) -> Any:  # (rows, weights) of column j on treated rows, in blocks
        lo, hi = int(indptr[j]), int(indptr[j + 1])
        for a in range(lo, hi, rowblocks.BLOCK):
            b = min(hi, a + rowblocks.BLOCK)
            r = indices[a:b]
            v = vals(j, a, b, r)
            on = treated[r]
            if not on.all():
                r = r[on]
                v = v[on] if np.ndim(v) else v
            if len(r):
                yield r, v

    for j in range(k):
        solver.start()
        num.fill(0.0)
        den.fill(0.0)
        n_j = 0
        for r, v in chunks(j):
            n_j += len(r)
            # v* = w_1 on treated rows; -W_0 Z_0 (Z_0'W_0Z_0)^{-1} Z_1' w_1 on untreated
            solver.add(r, v)
            # tau-bar: v^2-weighted average of tau^ within cohort x event-time cells
            cr = cell_of(r)
            v2 = v**2 if np.ndim(v) else v * v  # (a number: x * x, as numpy squares)
            np.add.at(num, cr, v2 * resid[r])
            np.add.at(den, cr, v2)
        if not n_j:  # an estimand without treated rows: zero weights everywhere
            sums[:, j] = 0.0
            continue
        b_d, b_m = solver.solve()
        tau_bar = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        own.fill(0.0)
        for r, v in chunks(j):
            cr = cell_of(r)
            np.add.at(own, cluster[r], v * (resid[r] - tau_bar[cr]))
        np.subtract(own, untreated_sums.into(fs, b_d, b_m), out=sums[:, j])
    return sums


# ----------------------------------------------------------------------------- public
def _distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (hashing, O(n): no sort of the rows)."""
    return np.sort(pd.unique(values))


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


class _EstimandColumns:
    """The rows of each estimand as CSC columns (``indptr``, ``indices``: each column's
    rows in row order): one per horizon in ``horizons`` (the kept treated rows at that
    event time), then ``"ATT"`` (every kept treated row); and the cohort x event-time
    cell of a treated row (``cell_of``, codes < ``n_cells``). Built in row blocks (the
    rows of a block put in place by a stable sort of their column codes): no n-row array
    besides ``indices`` and the (n,) cell codes (the smallest integer type: one or two
    bytes a row)."""

    def __init__(self, t: np.ndarray, g: np.ndarray, treated: np.ndarray, keep: np.ndarray,
                 horizons: Any) -> None:
        n = len(t)
        blocks = list(row_blocks(n))

        def rows_rel(sl: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            r = np.flatnonzero(treated[sl] & keep[sl])
            r += sl.start
            gr = g[r]
            return r, gr, t[r] - gr

        # pass 1: the cohorts of the kept treated rows, their event times (counted per
        # value when integral: the usual case), the event times of dropped treated rows
        g_lv, r_drop, parts = [], [], []
        integral = True
        for sl in blocks:
            drop = treated[sl] & ~keep[sl]
            if drop.any():
                r_drop.append(pd.unique(t[sl][drop] - g[sl][drop]))
            r, gr, rel = rows_rel(sl)
            if not len(r):
                continue
            g_lv.append(pd.unique(gr))
            if integral:
                b_lo, b_hi = rel.min(), rel.max()
                integral = bool(np.isfinite(b_lo) and np.isfinite(b_hi)
                                and b_hi - b_lo <= 4 * n + 1000)
                if integral:
                    ri = rel.astype(np.int64)
                    integral = bool((ri == rel).all())
                    ri -= int(b_lo)
                    parts.append((int(b_lo), np.bincount(ri)))
        g_lv = np.unique(np.concatenate(g_lv)) if g_lv else np.zeros(0)
        if integral:
            lo = min((b for b, _ in parts), default=0)
            hi = max((b + len(c) - 1 for b, c in parts), default=-1)
            cnt_rel = np.zeros(hi - lo + 1, dtype=np.intp)
            for b, c in parts:
                cnt_rel[b - lo:b - lo + len(c)] += c
            r_lv = (np.flatnonzero(cnt_rel) + lo).astype(float)
        else:
            r_lv = np.unique(np.concatenate(
                [pd.unique(rows_rel(sl)[2]) for sl in blocks] or [np.zeros(0)]))
        del parts
        # the horizons: among the event times of every treated row, as
        # _distinct(t[treated] - g[treated])
        hs = _as_horizons(horizons, _distinct(np.concatenate([r_lv, *r_drop])))
        self.horizons = hs
        self.names = [f"rel_time={h}" for h in hs or ()] + ["ATT"]
        n_h = len(hs or ())
        if integral:  # codes by lookup tables over the event-time range
            n_rel = hi - lo + 1
            pos = np.full(n_rel, -1, dtype=np.intp)
            for j, h in enumerate(hs or ()):
                if lo <= h <= hi:
                    pos[h - lo] = j

            def block(sl: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
                r, gr, rel = rows_rel(sl)
                ri = rel.astype(np.int64)
                ri -= lo
                cell = np.searchsorted(g_lv, gr) * n_rel
                cell += ri
                return r, pos[ri], cell

            cnt = np.zeros(n_h + 1, dtype=np.intp)
            on = pos >= 0
            cnt[pos[on]] = cnt_rel[on]
            cnt[n_h] = cnt_rel.sum()
        else:  # event times by binary search among the distinct values
            n_rel = len(r_lv)
            h_arr = np.asarray(hs or [], dtype=float)

            def block(sl: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
                r, gr, rel = rows_rel(sl)
                if n_h:
                    code = np.searchsorted(h_arr, rel)
                    np.minimum(code, n_h - 1, out=code)
                    code[h_arr[code] != rel] = -1  # the same rows as rel == h
                else:
                    code = np.full(len(r), -1, dtype=np.intp)
                cell = np.searchsorted(g_lv, gr) * n_rel
                cell += np.searchsorted(r_lv, rel)
                return r, code, cell

            cnt = np.zeros(n_h + 1, dtype=np.intp)
            for sl in blocks:
                _, code, _ = block(sl)
                cnt[:n_h] += np.bincount(code[code >= 0], minlength=n_h)
                cnt[n_h] += len(code)
        self.n_treated = int(cnt[n_h])
        self.n_cells = len(g_lv) * n_rel
        self.indptr = np.concatenate([[0], np.cumsum(cnt)]).astype(np.intp)
        self.indices = np.empty(int(self.indptr[-1]), dtype=np.int32 if n < 2**31 else np.intp)
        # the cell of each kept treated row (0 elsewhere), in the smallest integer type
        self.cell = np.zeros(n, dtype=np.min_scalar_type(max(self.n_cells - 1, 0)))
        cursor = self.indptr[:-1].copy()
        for sl in blocks:  # pass 2: each block's rows put in place
            r, code, cell = block(sl)
            if not len(r):
                continue
            self.cell[r] = cell
            del cell
            self.indices[cursor[n_h]:cursor[n_h] + len(r)] = r
            cursor[n_h] += len(r)
            if not n_h:
                continue
            on = code >= 0
            r, code = r[on], code[on]
            order = np.argsort(code, kind="stable")
            cs = code[order]
            cb = np.bincount(code, minlength=n_h)
            dest = np.arange(len(cs)) - (np.cumsum(cb) - cb)[cs]
            dest += cursor[cs]
            self.indices[dest] = r[order]
            cursor[:n_h] += cb

    def cell_of(self, r: np.ndarray) -> np.ndarray:
        """Cohort x event-time cell codes of the kept treated rows ``r``."""
        return self.cell[r]


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
        ``pretrend_test`` (a typed PretrendTest). The covariance between pre-trend and
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
                          estimator=est, order_by_unit=True)
    f = pdata.frame
    dropped = dict(pdata.dropped)
    y, t, g, never, treated, w = two_stage_rows(f, cohort, weights, "imputation")
    untreated = ~treated
    unit_codes, time_codes = pdata.unit_codes, pdata.time_codes
    resid, fit = untreated_residuals(y, [unit_codes, time_codes], untreated, weights=w)
    del y
    nan_resid = np.isnan(resid)
    bad = treated & nan_resid
    if bad.any():
        dropped["treated rows whose Y(0) cannot be imputed (unit or period without "
                "untreated observations)"] = int(bad.sum())
        warnings.warn(
            f"imputation: {int(bad.sum()):,} treated row(s) dropped because their unit or "
            "period has no untreated observation, so Y(0) cannot be imputed (for example "
            f"units treated from the first period). {COUNTS_POINTER}",
            DroppedRowsWarning, stacklevel=2)
    keep = ~nan_resid  # untreated rows: finite unless their unit has zero total weight
    del nan_resid, bad
    # ---- estimand weights: each a CSC column on its treated rows (horizons, then ATT)
    cols = _EstimandColumns(t, g, treated, keep, horizons)
    hs, names, indptr, indices = cols.horizons, cols.names, cols.indptr, cols.indices
    rel_of = [float(h) for h in hs or ()] + [np.nan]
    n_tr = cols.n_treated
    k = len(names)
    tot = np.empty(k)
    est_vals = np.empty(k)
    for j in range(k):  # one column at a time: its weights, their total and the estimate
        r = indices[indptr[j]:indptr[j + 1]]
        v = np.ones(len(r)) if w is None else w[r]
        tot[j] = s = v.sum()
        if s > 0:  # v / s in place (the same quotients): one column-long temporary less
            est_vals[j] = float(np.divide(v, s, out=v) @ resid[r])
        else:
            est_vals[j] = np.nan
    del r, v
    empty = [h for h, s in zip(hs or (), tot, strict=False) if s <= 0]
    ones = w is None

    def vals(j: int, a: int, b: int, r: np.ndarray) -> Any:  # v / tot on rows r
        if tot[j] <= 0:
            return 0.0
        return 1.0 / tot[j] if ones else w[r] / tot[j]

    # ---- variance (on kept rows): cells = cohort x event time of the treated rows
    cl_codes = (unit_codes if clus == unit else time_codes if clus == time
                else factorize(f[clus])[0])
    n_clusters = codes_present(cl_codes, keep, int(cl_codes.max()) + 1)
    if all(keep[sl][untreated[sl]].all() for sl in row_blocks(len(keep))):
        sums = _imputation_sums(fit.system, indptr, indices, vals, treated, resid,
                                cols.cell_of, cols.n_cells, cl_codes, w, True, None)
        var = ImputationVariance(vcov=sums.T @ sums, cluster_sums=sums,
                                 n_clusters=int(cl_codes.max()) + 1)
    else:  # untreated rows without a fitted Y(0) (zero weights): refit without them
        data = np.concatenate([np.broadcast_to(
            vals(j, indptr[j], indptr[j + 1], indices[indptr[j]:indptr[j + 1]]),
            (int(indptr[j + 1] - indptr[j]),)) for j in range(k)]) if k else np.zeros(0)
        wtr = sparse.csc_matrix((data, indices, indptr), shape=(len(f), k))
        cell = cols.cell.astype(np.intp)
        sub = keep
        sys_k = build_normal_system(
            [factorize(unit_codes[sub])[0], factorize(time_codes[sub])[0]], None,
            untreated[sub], None if w is None else w[sub])
        var = imputation_variance(sys_k, wtr[sub], treated[sub], resid[sub], cell[sub],
                                  factorize(cl_codes[sub])[0],
                                  weights=None if w is None else w[sub])
    vc = var.vcov
    for j in range(len(names)):
        if tot[j] <= 0:
            vc[j, :] = vc[:, j] = np.nan
    # ---- pre-trends (BJS Test 1 as didimputation: FE regression on untreated rows)
    pre_terms: list[str] = []
    pre_coef = np.zeros(0)
    pre_cov = np.zeros((0, 0))
    pre_test: PretrendTest | None = None
    rel = None if pretrends is None or pretrends is False else np.where(never, np.nan, t - g)
    pre = [] if rel is None else _as_pretrends(pretrends, np.unique(rel[untreated & ~never]))
    if pre:
        pre_terms, pre_coef, pre_cov, pre_test = _pretrend_fit(
            f, untreated & keep, rel, pre, clus, unit, time, w)
    if empty:
        warnings.warn(f"imputation: horizon(s) {format_values(empty)} have no treated "
                      "observations; their estimates are NaN.", NotComputableWarning,
                      stacklevel=2)
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
        "imputation_conservative", cluster=(clus,), n_clusters=(n_clusters,),
        small_sample={}, df=None,
        description=("BJS (2024) Theorem 3 conservative clustered variance, tau-bar by "
                     "cohort x event time (didimputation); no small-sample factor; normal "
                     "reference" + ("; pre-trend rows: CRV1 fixest defaults on the untreated"
                                    " sample" if k0 else "")))
    n_units = int(unit_codes.max()) + 1
    n_nt = codes_present(unit_codes, never, n_units)  # units with a never-treated row
    diag = {**pdata.diagnostics(), "dropped_rows": dropped,
            "n_treated_obs": n_tr,
            "n_untreated_obs": int(untreated.sum()), "n_units": n_units,
            "n_never_treated_units": n_nt, "n_periods": int(time_codes.max()) + 1,
            "notes": ([f"horizons {format_values(empty)} have no treated observations"] if empty else [])
            + (["pre-trend and post-treatment estimates: cross-covariance not computed "
                "(NaN)"] if k0 else [])}
    spec = {"outcome": outcome, "unit": unit, "time": time, "cohort": cohort,
            "horizons": None if hs is None else tuple(hs), "pretrends": tuple(pre),
            "cluster": (clus,), "weights": weights, "alpha": alpha,
            "fixed_effects": (unit, time), "ref": ()}
    with warnings.catch_warnings():
        # make_result's NaN warnings repeat the empty-horizon warning above (a variance
        # that is rounding of zero still warns: results.rounding_variances)
        warnings.filterwarnings("ignore", category=NotComputableWarning,
                                message=NAN_WARNING_PATTERN)
        res = make_result(est, pd.Series(coef, index=all_names), cov, vspec,
                          int(keep.sum()), spec=spec, diagnostics=diag, term_info=term_info,
                          pretrend_test=pre_test, att_definition=ATTDefinition(
                              "treated_observation_weighted",
                              "BJS (2024) tau-bar over every treated observation (with "
                              "observation weights when given), as didimputation"))
    return res


def _pretrend_fit(f: pd.DataFrame, rows: np.ndarray, rel: np.ndarray, pre: list[int],
                  clus: str, unit: str, time: str, w: np.ndarray | None
                  ) -> tuple[list[str], np.ndarray, np.ndarray, PretrendTest]:
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
    test = wald_pretrend_test(
        [n for n, o in zip(names, ok, strict=True) if o], coef[ok], v[np.ix_(ok, ok)],
        df_denominator=vspec.df, estimator="imputation", scale=variance_scale(v),
        what="joint Wald test that the pre-trend coefficients are 0 (BJS 2024 Test 1), CRV1 "
             "vcov on the untreated sample; F form as fixest::wald / Stata test")
    return names, coef, v, test
