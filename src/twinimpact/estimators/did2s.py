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
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from ..core.fe import factorize
from ..core.rowblocks import row_blocks
from ..core.threads import blas_single_thread
from ..core.two_stage import (
    FittedClusterSums,
    fit_untreated,
    solve_normal,
    system_rhs,
    two_stage_rows,
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
    ATTDefinition,
    EstimationResult,
    VcovSpec,
    event_pretrend_test,
    make_result,
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
    k = x2.shape[1]
    w = None if weights is None else np.asarray(weights, dtype=float)
    g = int(cluster.max()) + 1
    # the first-stage score w e1 (FittedClusterSums reads it on the untreated rows only)
    first_stage = FittedClusterSums(system, e1 if w is None else w * e1, untreated,
                                    cluster, g)
    sums = np.empty((g, k))
    for j in range(k):
        r = x2.indices[x2.indptr[j]:x2.indptr[j + 1]]
        xj = x2.data[x2.indptr[j]:x2.indptr[j + 1]]
        wx = xj if w is None else w[r] * xj
        b_d, b_m = solve_normal(system, *system_rhs(system, wx[:, None], rows=r))
        sums[:, j] = (np.bincount(cluster[r], weights=wx * e2[r], minlength=g)
                      - first_stage(b_d, b_m)[:, 0])
    if xtwx is None:
        x2w = x2.copy()
        if w is not None:
            x2w.data *= w[x2.indices]
        xtwx = (x2.T @ x2w).toarray()
    bread = np.linalg.pinv(xtwx)
    return bread @ (sums.T @ sums) @ bread, bread


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
                          estimator=est)
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
    fit = fit_untreated(y, fe_codes, untreated, covariates=xcov, weights=w)
    adj = y - fit.y0_hat
    bad = np.isnan(adj)
    if bad.any():
        dropped["rows whose Y(0) cannot be predicted (a first-stage fixed-effect level "
                "has no untreated observation)"] = int(bad.sum())
        warnings.warn(
            f"did2s: {int(bad.sum()):,} row(s) dropped: a first-stage fixed-effect level has "
            "no untreated observation (for example units treated from the first period). "
            f"{COUNTS_POINTER}", DroppedRowsWarning, stacklevel=2)
    keep = ~bad
    # second-stage design: disjoint 0/1 columns, kept as (row, column) pairs
    if event_study:
        rows = np.flatnonzero(keep & ~never)
        # relative periods of those rows, in row blocks (two passes: range and levels
        # present, then the column codes): no n-row temporaries
        blocks = [rows[sl] for sl in row_blocks(len(rows))]

        def rel_of(r: np.ndarray) -> np.ndarray:
            return (t[r] - g[r]).astype(np.int64)
        lo = min(int(rel_of(r).min()) for r in blocks) if len(rows) else 0
        hi = max(int(rel_of(r).max()) for r in blocks) if len(rows) else -1
        cnt = np.zeros(hi - lo + 1, dtype=np.intp)
        for r in blocks:
            cnt += np.bincount(rel_of(r) - lo, minlength=hi - lo + 1)
        present = np.flatnonzero(cnt) + lo
        periods = [int(e) for e in present if int(e) not in refs]
        names = [f"rel_time={e}" for e in periods]
        pos = np.full(hi - lo + 1, -1, dtype=np.intp)
        pos[np.asarray(periods, dtype=np.int64) - lo] = np.arange(len(periods))
        code = np.empty(len(rows), dtype=np.intp)
        for sl, r in zip(row_blocks(len(rows)), blocks, strict=True):
            code[sl] = pos[rel_of(r) - lo]
        del blocks
        on = code >= 0
        rows, code = rows[on], code[on]
        del on
    else:
        names = ["ATT"]
        rows = np.flatnonzero(treated & keep)
        code = np.zeros(len(rows), dtype=np.intp)
    k = len(names)
    order = np.argsort(code.astype(np.int32 if k >= 2**15 else np.int16), kind="stable")
    x2 = sparse.csc_matrix((np.ones(len(rows)), rows[order],
                            np.concatenate([[0], np.cumsum(np.bincount(code, minlength=k))])),
                           shape=(len(f), k))
    del order
    wv = np.ones(len(rows)) if w is None else w[rows]
    xtx = np.diag(np.bincount(code, weights=wv, minlength=k))
    coef = np.linalg.pinv(xtx) @ np.bincount(code, weights=wv * adj[rows], minlength=k)
    e2 = adj.copy()
    for sl in row_blocks(len(rows)):  # row blocks: no n-row gathers
        e2[rows[sl]] -= coef[code[sl]]
    del rows, code, wv
    cl_codes = (pdata.unit_codes if clus == unit else pdata.time_codes if clus == time
                else factorize(col(clus))[0])
    n_cl = int(np.count_nonzero(np.bincount(cl_codes if keep.all() else cl_codes[keep])))
    if keep[untreated].all():
        vc, _ = two_stage_vcov(fit.system, x2, adj, e2, untreated, cl_codes, w, xtx)
    else:  # untreated rows without a fitted Y(0) (zero weights): refit without them
        sub = keep
        system = fit_untreated(y[sub], [factorize(c[sub])[0] for c in fe_codes],
                               untreated[sub], None if xcov is None else xcov[sub],
                               None if w is None else w[sub]).system
        vc, _ = two_stage_vcov(system, x2[sub], adj[sub], e2[sub], untreated[sub],
                               factorize(cl_codes[sub])[0], None if w is None else w[sub],
                               xtx)
    empty = np.diag(xtx) <= 0
    coef[empty] = np.nan
    vc[empty, :] = vc[:, empty] = np.nan
    params = pd.Series(coef, index=names)
    rel_of = [float(n.split("=")[1]) for n in names] if event_study else [np.nan]
    if event_study:
        post = np.array([r >= 0 for r in rel_of]) & ~empty
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
        big[:k, k][empty] = big[k, :k][empty] = np.nan
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
    if event_study and empty.any():
        notes.append(f"relative periods without observations: "
                     f"{[n for n, e in zip(names, empty, strict=True) if e]}")
    diag = {**pdata.diagnostics(), "dropped_rows": dropped,
            "n_treated_obs": int((treated & keep).sum()),
            "n_untreated_obs": int((untreated & keep).sum()),
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
    with warnings.catch_warnings():
        if not empty.any():
            warnings.simplefilter("ignore", NotComputableWarning)
        return make_result(est, params, vc, vspec, int(keep.sum()), spec=spec,
                           diagnostics=diag, term_info=term_info,
                           nan_reason="no observations at this relative period",
                           att_definition=att_def,
                           pretrend_test=event_pretrend_test(
                               list(params.index), params.to_numpy(), vc, rel_of, vspec,
                               estimator=est) if event_study else None)
