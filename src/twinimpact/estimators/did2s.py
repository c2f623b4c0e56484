"""Two-stage difference-in-differences of Gardner (2022), "Two-stage differences in
differences", arXiv:2207.05943, as implemented in R ``did2s`` (Butts & Gardner 2022, The R
Journal 14(3)).

Stage 1: fit the fixed effects (default unit and time; any set, e.g. state and year) and
optional covariates by OLS on the untreated observations (``D_it = 0``) and residualise
the outcome for every observation, ``y~_it = y_it - a^_i - l^_t``.
Stage 2: regress ``y~`` on the treatment indicator (static, term ``"ATT"``) or on
relative-time dummies (event study, terms ``"rel_time=e"``), without intercept.

Standard errors: Gardner's GMM correction for the generated outcome (did2s's analytic
variance, no small-sample factor)::

    V = (X2'X2)^{-1} [ sum_g W_g W_g' ] (X2'X2)^{-1},
    W_g = X2_g' e2_g - (X2'X1)(X10'X10)^{-1} X10_g' e1_g

where ``X1`` is the first-stage design, ``X10`` its untreated rows (treated rows zeroed),
``e1`` the first-stage residuals (0 on treated rows), ``e2`` the second-stage residuals,
and ``g`` the clusters. ``(X10'X10)^{-1} X1'X2`` is computed exactly with the first-stage
kernel of :mod:`.imputation` (Schur-complement solve of the normal equations).

Keyword mapping to R ``did2s::did2s``: ``outcome`` = ``yname``; ``first_stage=("state",
"year")`` = ``first_stage = ~ 0 | state + year`` (``covariates`` add ``~ x1 + x2 | ...``);
``event_study=False`` = ``second_stage = ~ i(treat, ref = FALSE)``;
``event_study=True, ref=-1`` = ``second_stage = ~ i(rel_year, ref = c(-1, Inf))``;
``cluster`` = ``cluster_var``; the treatment indicator is ``time >= cohort`` (did2s
``treatment``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from ..core import rowblocks
from ..core.fe import factorize
from ..core.rowblocks import row_blocks
from ..core.threads import blas_single_thread
from ..core.two_stage import (
    ColumnSolver,
    FittedClusterSums,
    fit_untreated,
    two_stage_rows,
    untreated_residuals,
)
from ..core.validation import as_frame, as_tuple, prepare_panel, require_columns
from ..errors import (
    COUNTS_POINTER,
    DroppedRowsWarning,
    NotComputableWarning,
    SpecificationError,
    check_alpha,
    format_message,
)
from ..results import (
    NAN_WARNING_PATTERN,
    ATTDefinition,
    EstimationResult,
    VcovSpec,
    event_pretrend_test,
    make_result,
    rounding_floor,
    variance_scale,
)

__all__ = ["did2s", "two_stage_vcov"]


def two_stage_vcov(system: Any, x2: Any, e1: np.ndarray, e2: np.ndarray,
                   untreated: np.ndarray, cluster: np.ndarray,
                   weights: np.ndarray | None = None, xtwx: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Gardner (2022) GMM variance of the second-stage coefficients (R did2s analytic SE).

    Parameters
    ----------
    system : first-stage :class:`~twinimpact.core.two_stage.NormalSystem` (fitted on
        the untreated rows).
    x2 : (n, k) second-stage regressors, a scipy sparse matrix (event-time dummies store
        only their own rows) or a dense array.
    e1 : (n,) first-stage residuals (ignored on treated rows).
    e2 : (n,) second-stage residuals (read where ``x2`` is non-zero).
    untreated : (n,) bool.
    cluster : (n,) int cluster codes.
    xtwx : (k, k) ``X2'WX2`` when the caller has it (formed from ``x2`` otherwise).

    Returns
    -------
    vcov : (k, k); bread : (k, k) ``(X2'WX2)^{-1}``.

    Notes
    -----
    One regressor at a time: ``b_k = (X10'WX10)^{-1} X1'W x2_k`` from a right-hand side
    supported on the rows of ``x2_k``; the cluster sums of the score
    ``w e2 x2_k - w e1 (X1 b_k)`` are a ``bincount`` over those rows minus the
    first-stage part from :class:`~twinimpact.core.two_stage.FittedClusterSums` (level
    sums formed once when clusters contain whole units). No n x k array is formed.
    """
    x2 = sparse.csc_matrix(x2)
    w = None if weights is None else np.asarray(weights, dtype=float)
    sums = _gmm_cluster_sums(system, x2.indptr, x2.indices, x2.data, e1,
                             lambda j, r: e2[r], untreated, cluster, w)
    if xtwx is None:
        x2w = x2.copy()
        if w is not None:
            x2w.data *= w[x2.indices]
        xtwx = (x2.T @ x2w).toarray()
    bread = np.linalg.pinv(xtwx)
    return bread @ (sums.T @ sums) @ bread, bread


def _gmm_cluster_sums(system: Any, indptr: np.ndarray, indices: np.ndarray,
                      data: np.ndarray | None, e1: np.ndarray,
                      e2_on: Callable[[int, np.ndarray], np.ndarray],
                      untreated: np.ndarray, cluster: np.ndarray,
                      w: np.ndarray | None) -> np.ndarray:
    """(G, k) cluster sums of the GMM score of :func:`two_stage_vcov` for the regressors
    given as CSC columns (``data`` None: all ones); ``e2_on(j, r)`` the second-stage
    residuals on the rows ``r`` of column ``j``. Each column is read in blocks of rows
    and its sums go into reused (G_D,) / (G,) buffers (:class:`ColumnSolver`,
    :meth:`FittedClusterSums.into`): the same sums, added in the same order, as the
    whole-column ``np.bincount`` passes."""
    k = len(indptr) - 1
    g = int(cluster.max()) + 1
    # the first-stage score w e1 (FittedClusterSums reads it on the untreated rows only)
    first_stage = FittedClusterSums(system, e1, untreated, cluster, g, weights=w)
    solver = ColumnSolver(system)
    sums = np.empty((g, k))
    own, fs = np.empty(g), np.empty(g)
    for j in range(k):
        solver.start()
        own.fill(0.0)
        lo, hi = int(indptr[j]), int(indptr[j + 1])
        for a in range(lo, hi, rowblocks.BLOCK):
            b = min(hi, a + rowblocks.BLOCK)
            r = indices[a:b]
            if data is None:
                wx: Any = 1.0 if w is None else w[r]
            else:
                wx = data[a:b] if w is None else w[r] * data[a:b]
            solver.add(r, wx)
            score = e2_on(j, r)
            if not (data is None and w is None):  # (x_j = 1: 1 * e2 = e2)
                score = wx * score
            np.add.at(own, cluster[r], score)  # = bincount(cluster[r], wx * e2[r])
        b_d, b_m = solver.solve()
        np.subtract(own, first_stage.into(fs, b_d, b_m), out=sums[:, j])
    return sums


def _second_stage_columns(t: np.ndarray, g: np.ndarray, keep: np.ndarray,
                          never: np.ndarray, treated: np.ndarray, event_study: bool,
                          refs: tuple[int, ...], w: np.ndarray | None, adj: np.ndarray
                          ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray,
                                     np.ndarray, tuple[int, ...]]:
    """The second-stage design as CSC columns of ones: names, ``indptr``, ``indices``
    (the rows of each column in row order), ``X2'WX2`` (k, k) diagonal, ``X2'W adj``
    (k,) and the ``refs`` that had rows (those actually omitted). Event study: one column per relative period of the kept rows of treated units
    except ``refs``; static: one column of the kept treated rows. Built in row blocks
    (counts, then each block's rows put in place by a stable sort of its codes): no
    n-row array besides ``indices``; the sums are added in row order (the same as
    ``np.bincount`` over all the rows)."""
    n = len(t)
    blocks = list(row_blocks(n))

    def rel_rows(sl: slice) -> tuple[np.ndarray, np.ndarray]:
        r = np.flatnonzero(keep[sl] & ~never[sl])
        r += sl.start
        return r, (t[r] - g[r]).astype(np.int64)

    if event_study:
        lo, hi = 0, -1
        parts = []
        for sl in blocks:  # the range of relative periods, then their counts
            r, rel = rel_rows(sl)
            if len(r):
                b_lo, b_hi = int(rel.min()), int(rel.max())
                lo, hi = (b_lo, b_hi) if hi < lo else (min(lo, b_lo), max(hi, b_hi))
                parts.append((b_lo, np.bincount(rel - b_lo)))
        cnt = np.zeros(hi - lo + 1, dtype=np.intp)
        for b_lo, c in parts:
            cnt[b_lo - lo:b_lo - lo + len(c)] += c
        del parts
        present = np.flatnonzero(cnt) + lo
        periods = [int(e) for e in present if int(e) not in refs]
        omitted = tuple(r for r in refs if lo <= r <= hi and cnt[r - lo] > 0)
        names = [f"rel_time={e}" for e in periods]
        pos = np.full(hi - lo + 1, -1, dtype=np.intp)
        pos[np.asarray(periods, dtype=np.int64) - lo] = np.arange(len(periods))
        col_n = cnt[np.asarray(periods, dtype=np.int64) - lo]

        def rows_codes(sl: slice) -> tuple[np.ndarray, np.ndarray]:
            r, rel = rel_rows(sl)
            code = pos[rel - lo]
            on = code >= 0
            return r[on], code[on]
    else:
        names = ["ATT"]

        def rows_codes(sl: slice) -> tuple[np.ndarray, np.ndarray]:
            r = np.flatnonzero(treated[sl] & keep[sl])
            r += sl.start
            return r, np.zeros(len(r), dtype=np.intp)

        col_n = np.array([sum(int(np.count_nonzero(treated[sl] & keep[sl]))
                              for sl in blocks)], dtype=np.intp)
        omitted = ()
    k = len(names)
    indptr = np.concatenate([[0], np.cumsum(col_n)]).astype(np.intp)
    indices = np.empty(int(indptr[-1]), dtype=np.int32 if n < 2**31 else np.intp)
    cursor = indptr[:-1].copy()
    xtw, xty = np.zeros(k), np.zeros(k)
    for sl in blocks:
        r, code = rows_codes(sl)
        if not len(r):
            continue
        wv: Any = 1.0 if w is None else w[r]
        np.add.at(xtw, code, wv)
        np.add.at(xty, code, adj[r] if w is None else wv * adj[r])
        order = np.argsort(code, kind="stable")
        cs = code[order]
        cb = np.bincount(code, minlength=k)
        dest = np.arange(len(cs)) - (np.cumsum(cb) - cb)[cs]
        dest += cursor[cs]
        indices[dest] = r[order]
        cursor += cb
    return names, indptr, indices, np.diag(xtw), xty, omitted


@blas_single_thread
def did2s(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
          first_stage: str | Sequence[str] | None = None, event_study: bool = False,
          covariates: Sequence[str] | None = None, cluster: str | None = None,
          ref: int | Sequence[int] = -1, weights: str | None = None,
          alpha: float = 0.05) -> EstimationResult:
    """Gardner (2022) two-stage DiD with the GMM-corrected clustered variance.

    Parameters
    ----------
    data : DataFrame
        Long panel, one row per unit x period.
    outcome, unit, time : str
        Column names.
    cohort : str
        First treated period; never treated = NaN, 0 or after the last period. The
        treatment indicator is ``time >= cohort`` (did2s ``treatment``).
    first_stage : str or sequence of str, optional
        Fixed effects of the first stage (default ``(unit, time)``), e.g.
        ``("state", "year")`` when treatment varies at a coarser level than ``unit``.
    event_study : bool
        False: static effect, term ``"ATT"``. True: one dummy per relative period of the
        treated units except ``ref`` (never-treated rows have none), terms
        ``"rel_time=e"``, plus ``"ATT"``: the average of the post-treatment coefficients
        weighted by their number of treated observations (= the static point estimate),
        with its delta-method standard error.
    covariates : list of str, optional
        Time-varying covariates added to the first stage (did2s ``first_stage = ~ x | fe``).
    cluster : str, optional
        Cluster variable (did2s ``cluster_var``); default ``unit``.
    ref : int or sequence of int
        Omitted relative period(s) in the event study (default -1).
    weights : str, optional
        Observation weights (did2s ``weights``) used in both stages.
    alpha : float
        Default level for intervals.

    Returns
    -------
    EstimationResult
        ``vcov_spec.kind == "two_stage"``: Gardner's GMM variance as in R did2s (no
        small-sample factor); intervals use t(G - 1).

    Examples
    --------
    >>> from twinimpact.estimators.twfe import _example_panel
    >>> from twinimpact.estimators.did2s import did2s
    >>> r = did2s(_example_panel(), outcome="y", unit="id", time="year", cohort="g",
    ...           event_study=True)
    >>> [round(float(v), 2) for v in r.params[["rel_time=-2", "rel_time=0", "rel_time=1"]]]
    [0.0, 1.0, 2.0]
    """
    data = as_frame(data, what="did2s: data")
    check_alpha(alpha)
    est = "did2s"
    fs = as_tuple(first_stage) or (unit, time)
    covariates = list(covariates or [])
    clus = unit if cluster is None else cluster
    if not isinstance(clus, str):
        raise SpecificationError(format_message(
            "did2s: cluster must be one column name", seen=cluster,
            fix="pass cluster='state'"))
    if not isinstance(event_study, bool):
        raise SpecificationError(format_message("event_study must be True or False",
                                                seen=event_study))
    refs = tuple(int(r) for r in ((ref,) if np.isscalar(ref) else ref))
    require_columns(data, fs)
    extra = [c for c in (*fs, clus) if c not in (unit, time)]
    extra = list(dict.fromkeys(extra))
    pdata = prepare_panel(data, outcome=outcome, unit=unit, time=time, cohort=cohort,
                          extra=extra, numeric_extra=[*covariates,
                                                      *([weights] if weights else [])],
                          estimator=est, order_by_unit=True)
    f = pdata.frame
    dropped = dict(pdata.dropped)

    def col(name: str) -> np.ndarray:
        return (f["unit"] if name == unit else f["time"] if name == time else f[name]
                ).to_numpy()

    y, t, g, never, treated, w = two_stage_rows(f, cohort, weights, "did2s")
    untreated = ~treated
    fe_codes = [pdata.unit_codes if c == unit else pdata.time_codes if c == time
                else factorize(col(c))[0] for c in fs]
    xcov = np.column_stack([f[c].to_numpy(dtype=float) for c in covariates]) \
        if covariates else None
    adj, fit = untreated_residuals(y, fe_codes, untreated, covariates=xcov, weights=w)
    bad = np.isnan(adj)
    if bad.any():
        dropped["rows whose Y(0) cannot be predicted (a first-stage fixed-effect level "
                "has no untreated observation)"] = int(bad.sum())
        warnings.warn(
            f"did2s: {int(bad.sum()):,} row(s) dropped: a first-stage fixed-effect level has "
            "no untreated observation (for example units treated from the first period). "
            f"{COUNTS_POINTER}", DroppedRowsWarning, stacklevel=2)
    keep = ~bad
    del bad
    # second-stage design: disjoint 0/1 columns, kept as CSC columns (rows per column)
    names, indptr, indices, xtx, xty, omitted = _second_stage_columns(
        t, g, keep, never, treated, event_study, refs, w, adj)
    k = len(names)
    coef = np.linalg.pinv(xtx) @ xty
    cl_codes = (pdata.unit_codes if clus == unit else pdata.time_codes if clus == time
                else factorize(col(clus))[0])
    n_cl = int(np.count_nonzero(np.bincount(cl_codes if keep.all() else cl_codes[keep])))
    if all(keep[sl][untreated[sl]].all() for sl in row_blocks(len(keep))):
        # e2 = adj - coef[column] on each column's rows (no n-row copy of adj)
        sums = _gmm_cluster_sums(fit.system, indptr, indices, None, adj,
                                 lambda j, r: adj[r] - coef[j], untreated, cl_codes, w)
        bread = np.linalg.pinv(xtx)
        vc = bread @ (sums.T @ sums) @ bread
    else:  # untreated rows without a fitted Y(0) (zero weights): refit without them
        x2 = sparse.csc_matrix((np.ones(len(indices)), indices, indptr), shape=(len(f), k))
        e2 = adj.copy()
        for j in range(k):
            e2[indices[indptr[j]:indptr[j + 1]]] -= coef[j]
        sub = keep
        system = fit_untreated(y[sub], [factorize(c[sub])[0] for c in fe_codes],
                               untreated[sub], None if xcov is None else xcov[sub],
                               None if w is None else w[sub]).system
        vc, _ = two_stage_vcov(system, x2[sub], adj[sub], e2[sub], untreated[sub],
                               factorize(cl_codes[sub])[0], None if w is None else w[sub],
                               xtx)
    empty = np.diag(xtx) <= 0
    # relative periods whose every row the first stage fits exactly (e.g. the only
    # untreated row of its period or unit): the estimate is 0 by construction and its
    # "variance" rounding of zero (6e-32 beside 1e-2) -- not evidence of no pre-trend.
    # Judged against the fit's largest variance and against the first stage's residual
    # scale (a mean of n residuals has a variance of at least about their mean square
    # / n, far above rounding), so that it is found also when every term is such a
    # period (one pre-period term of 1.0e-31, no other term: cat_na ids, seed 2024)
    var = np.diag(vc)
    if event_study:
        r = adj[keep & untreated]
        resid_scale = float(r @ r) / len(r) if len(r) else None
        floor = max(rounding_floor(variance_scale(vc[np.ix_(~empty, ~empty)]), k),
                    rounding_floor(resid_scale, k))
        exact = ~empty & (var <= floor)
    else:
        exact = np.zeros(k, dtype=bool)
    coef[empty | exact] = np.nan
    vc[empty | exact, :] = vc[:, empty | exact] = np.nan
    params = pd.Series(coef, index=names)
    rel_of = [float(n.split("=")[1]) for n in names] if event_study else [np.nan]
    if event_study:
        post = np.array([r >= 0 for r in rel_of]) & ~empty & ~exact
        cnt = np.diag(xtx)
        a = np.where(post, cnt, 0.0)
        a = a / a.sum() if a.sum() > 0 else a
        att = float(a @ np.nan_to_num(coef)) if post.any() else np.nan
        k = len(names)
        big = np.full((k + 1, k + 1), np.nan)
        big[:k, :k] = vc
        vz = np.nan_to_num(vc)
        big[k, :k] = big[:k, k] = vz @ a
        big[k, k] = a @ vz @ a
        big[:k, k][empty | exact] = big[k, :k][empty | exact] = np.nan
        if not post.any():  # (no post-treatment term: the ATT is NaN, so is its variance)
            big[k, :] = big[:, k] = np.nan
        params = pd.concat([params, pd.Series({"ATT": att})])
        vc = big
        rel_of = [*rel_of, np.nan]
    term_info = pd.DataFrame({"rel_time": rel_of}, index=list(params.index))
    vspec = VcovSpec(
        "two_stage", cluster=(clus,), n_clusters=(n_cl,), small_sample={},
        df=float(n_cl - 1),
        description=("Gardner (2022) GMM two-stage variance as in R did2s (first-stage "
                     f"estimation error accounted for), clustered by {clus}, no small-sample "
                     f"factor; t({n_cl - 1}) reference"))
    notes = []
    if event_study and refs and not omitted and names:
        notes.append(f"the reference period{'s' if len(refs) > 1 else ''} rel_time "
                     f"{', '.join(str(r) for r in refs)} ha{'ve' if len(refs) > 1 else 's'} "
                     "no rows of treated units (e.g. a calendar that skips years), so no "
                     "relative period is omitted: each coefficient is the mean gap to the "
                     "first stage's prediction at that relative period")
    if event_study and empty.any():
        shown = [f"{r:g}" for r, e in zip(rel_of, empty, strict=False) if e]
        notes.append(f"relative periods [{', '.join(shown)}] have no observations and "
                     "are not estimated")
    if exact.any():
        shown = [f"{r:g}" for r, e in zip(rel_of, exact, strict=False) if e]
        notes.append(f"relative periods [{', '.join(shown)}] are not reported: the first "
                     "stage fits each of their rows exactly (for instance the only untreated "
                     "row of its period or unit), so their estimate is zero by construction, "
                     "not evidence")
    diag = {**pdata.diagnostics(), "dropped_rows": dropped,
            "n_treated_obs": _count_both(treated, keep),
            "n_untreated_obs": _count_both(untreated, keep),
            "n_units": int(pdata.unit_codes.max()) + 1,
            "n_periods": int(pdata.time_codes.max()) + 1,
            "first_stage_covariates": dict(zip(covariates, fit.beta.tolist(), strict=True)),
            "notes": notes}
    att_def = ATTDefinition(
        "treated_observation_weighted",
        "post-treatment coefficients weighted by their number of treated observations "
        "(equals the static estimate)" if event_study else
        "second-stage coefficient on the treatment indicator, R did2s")
    spec = {"outcome": outcome, "unit": unit, "time": time, "cohort": cohort,
            "first_stage": fs, "covariates": tuple(covariates), "event_study": event_study,
            "cluster": (clus,), "ref": refs if event_study else (), "weights": weights,
            "alpha": alpha, "fixed_effects": fs}
    # over the pre-treatment periods that are estimated (not the empty or exactly fitted
    # ones, reported as NaN), outside the silenced block below: a pre-trend test that
    # cannot be computed says so
    pretrend = None
    if event_study:
        tested = [np.nan if m else r for r, m in
                  zip(rel_of, [*(empty | exact), False], strict=True)]
        pretrend = event_pretrend_test(list(params.index), params.to_numpy(), vc, tested,
                                       vspec, estimator=est)
    why = "; ".join(w for w, m in (("no observations at this relative period", empty),
                                     ("fitted exactly by the first stage (zero by "
                                      "construction)", exact)) if m.any())
    with warnings.catch_warnings():
        if not why:  # (a variance that is rounding of zero still warns)
            warnings.filterwarnings("ignore", category=NotComputableWarning,
                                    message=NAN_WARNING_PATTERN)
        return make_result(est, params, vc, vspec, int(keep.sum()), spec=spec,
                           diagnostics=diag, term_info=term_info,
                           nan_reason=why or "no observations at this relative period",
                           att_definition=att_def, pretrend_test=pretrend)


def _count_both(a: np.ndarray, b: np.ndarray) -> int:
    """``(a & b).sum()`` in row blocks (no n-row temporary)."""
    return sum(int(np.count_nonzero(a[sl] & b[sl])) for sl in row_blocks(len(a)))
