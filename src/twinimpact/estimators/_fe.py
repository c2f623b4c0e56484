"""Numerical kernels for linear models with high-dimensional fixed effects.

Pure functions on NumPy arrays; no pandas, no validation (callers validate).

* :func:`factorize` turns label arrays into dense integer codes.
* :func:`demean` sweeps out any number of fixed-effect sets by alternating projections
  (the method of alternating projections, Gaure 2013, as in fixest / lfe / pyfixest),
  optionally weighted. Balanced two-way panels converge in one sweep.
* :func:`fe_dof` counts the fixed-effect parameters the way fixest does for its
  small-sample correction (``fixef.K = "nested"``).
* :func:`ols` solves the demeaned normal equations and returns coefficients, residuals
  and the bread ``(X'WX)^{-1}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["DemeanResult", "OLSFit", "demean", "factorize", "fe_dof", "ols"]


def factorize(values: object) -> tuple[np.ndarray, int]:
    """Dense integer codes 0..G-1 for any label array (NaN labels get their own code)."""
    codes, uniques = pd.factorize(np.asarray(values), use_na_sentinel=False)
    return codes.astype(np.intp, copy=False), len(uniques)


@dataclass(frozen=True)
class DemeanResult:
    """``X`` with all fixed effects swept out.

    Attributes
    ----------
    x : ndarray, shape (n, k)
    converged : bool
    iterations : int
    """

    x: np.ndarray
    converged: bool
    iterations: int


class _Projector:
    """Weighted group-mean projection for one fixed-effect set.

    Group sums of all columns at once are a sparse (G x n) @ dense (n x k) product, and
    the means are broadcast back with one row gather: both vectorised over columns.
    """

    def __init__(self, codes: np.ndarray, weights: np.ndarray | None) -> None:
        from scipy import sparse

        self.codes = np.asarray(codes, dtype=np.intp)
        n = len(self.codes)
        self.n_groups = int(self.codes.max()) + 1 if n else 0
        data = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
        self.mat = sparse.csr_matrix((data, (self.codes, np.arange(n))),
                                     shape=(self.n_groups, n))
        wsum = np.asarray(self.mat.sum(axis=1)).reshape(-1)
        wsum[wsum == 0] = 1.0
        self.inv_wsum = 1.0 / wsum

    def means(self, x: np.ndarray) -> np.ndarray:
        return (self.mat @ x) * self.inv_wsum[:, None]

    def subtract(self, x: np.ndarray) -> np.ndarray:
        return x - self.means(x)[self.codes]


def _is_balanced(p0: _Projector, p1: _Projector, n: int, weights: np.ndarray | None) -> bool:
    """Every (level of FE 1) x (level of FE 2) cell observed exactly once, equal weights."""
    if weights is not None and not np.all(weights == weights[0]):
        return False
    if p0.n_groups * p1.n_groups != n:
        return False
    key = p0.codes * p1.n_groups + p1.codes
    return bool(np.bincount(key, minlength=n).max() == 1)


def demean(x: np.ndarray, fe_codes: Sequence[np.ndarray], *, weights: np.ndarray | None = None,
           tol: float = 1e-10, maxiter: int = 10_000) -> DemeanResult:
    """Sweep fixed effects out of the columns of ``x`` by alternating projections.

    Parameters
    ----------
    x : ndarray, shape (n,) or (n, k)
    fe_codes : sequence of int arrays of shape (n,)
        Dense codes (see :func:`factorize`), one array per fixed-effect set.
    weights : ndarray, shape (n,), optional
        Observation weights (weighted projections, as in WLS / IRLS for PPML).
    tol : float
        Stop when the largest absolute change of any column in a full sweep is below
        ``tol`` times (1 + the column's scale).
    maxiter : int
        Maximum number of full sweeps.

    Notes
    -----
    One fixed-effect set is a single exact projection. Two sets on a balanced panel
    (every cell once, equal weights) use the closed form
    ``x - mean_i - mean_t + mean`` (one pass). Otherwise the method of alternating
    projections runs until the change per sweep is below ``tol``.
    """
    x = np.asarray(x, dtype=float)
    squeeze = x.ndim == 1
    x2 = np.ascontiguousarray(x.reshape(len(x), -1), dtype=float)
    if not fe_codes:
        out = x2.copy()
        return DemeanResult(out[:, 0] if squeeze else out, True, 0)
    w = None if weights is None else np.asarray(weights, dtype=float)
    projs = [_Projector(c, w) for c in fe_codes]
    if len(projs) == 1:
        res = projs[0].subtract(x2)
        return DemeanResult(res[:, 0] if squeeze else res, True, 1)
    if len(projs) == 2 and _is_balanced(projs[0], projs[1], len(x2), w):
        m0 = projs[0].means(x2)
        m1 = projs[1].means(x2)
        res = x2 - m0[projs[0].codes] - m1[projs[1].codes] + x2.mean(axis=0)
        return DemeanResult(res[:, 0] if squeeze else res, True, 1)
    scale = 1.0 + (np.max(np.abs(x2), axis=0) if len(x2) else np.zeros(x2.shape[1]))
    it = 0
    active = np.arange(x2.shape[1])
    while it < maxiter and len(active):
        it += 1
        prev = x2[:, active]
        cur = prev
        for p in projs:
            cur = p.subtract(cur)
        x2[:, active] = cur
        change = np.max(np.abs(cur - prev), axis=0) / scale[active]
        active = active[change > tol]
    converged = len(active) == 0
    return DemeanResult(x2[:, 0] if squeeze else x2, converged, it)


def _n_components(a: np.ndarray, b: np.ndarray, na: int, nb: int) -> int:
    """Connected components of the bipartite graph of two FE sets (fixest's redundancy)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = na + nb
    m = coo_matrix((np.ones(len(a)), (a, b + na)), shape=(n, n))
    return int(connected_components(m, directed=False)[0])


def fe_dof(fe_codes: Sequence[np.ndarray], cluster_codes: Sequence[np.ndarray] = (),
           nested: bool = True) -> tuple[int, int]:
    """Number of fixed-effect parameters, fixest style.

    Returns ``(k_fe, k_fe_nested)``: ``k_fe`` counts the levels of every FE set minus
    redundancies (one per extra FE set; for exactly two sets the number of connected
    components, as fixest does); ``k_fe_nested`` is what fixest ``fixef.K = "nested"``
    removes from K: for each FE set nested in a cluster variable, its number of levels
    minus one (the set still absorbs one intercept-like parameter, so
    ``K = k + k_fe - k_fe_nested``, as in fixest and pyfixest's ``n_fe_fully_nested``).
    """
    sizes = [int(c.max()) + 1 for c in fe_codes]
    if not sizes:
        return 0, 0
    if len(sizes) == 2:
        redundant = _n_components(fe_codes[0], fe_codes[1], sizes[0], sizes[1])
    else:
        redundant = len(sizes) - 1
    k_fe = sum(sizes) - (redundant if len(sizes) == 2 else len(sizes) - 1)
    k_nested = 0
    if nested and cluster_codes:
        for i, c in enumerate(fe_codes):
            for cl in cluster_codes:
                # FE nested in cluster: each FE level maps to exactly one cluster.
                # O(n) check: write each row's cluster into its FE level (the last write
                # wins) and compare back; all rows agree iff the level has one cluster.
                owner = np.empty(sizes[i], dtype=np.asarray(cl).dtype)
                owner[c] = cl
                if np.array_equal(owner[c], cl):
                    k_nested += sizes[i] - 1
                    break
    return k_fe, k_nested


@dataclass(frozen=True)
class OLSFit:
    """Least-squares fit on (already demeaned) data.

    ``coef`` (k,), ``resid`` (n,), ``bread`` = (X'WX)^{-1} (k, k), ``rank`` and the
    boolean mask ``kept`` of columns that were not collinear.
    """

    coef: np.ndarray
    resid: np.ndarray
    bread: np.ndarray
    rank: int
    kept: np.ndarray


def ols(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None,
        collin_tol: float = 1e-10, ref_ss: np.ndarray | None = None) -> OLSFit:
    """OLS/WLS via the normal equations with pivoted collinearity detection.

    Columns that are (numerically) linear combinations of earlier columns are dropped
    (``kept`` is False, coefficient NaN), as fixest does. A column is collinear when its
    residual sum of squares (after the earlier kept columns) is below ``collin_tol``
    times ``ref_ss`` -- pass the sum of squares of the column *before* the fixed effects
    were swept out, so that a regressor absorbed by the fixed effects is detected
    (default: the column's own sum of squares).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    k = x.shape[1]
    xw = x if weights is None else x * weights[:, None]
    xtx = xw.T @ x
    xty = xw.T @ y
    # sequential collinearity check on the Cholesky diagonal (like fixest's cpp_cholesky)
    kept = np.ones(k, dtype=bool)
    diag = np.diag(xtx).copy()
    for j in range(k):
        idx = np.flatnonzero(kept[:j])
        if diag[j] <= 0:
            kept[j] = False
            continue
        if len(idx):
            a = xtx[np.ix_(idx, idx)]
            b = xtx[idx, j]
            try:
                sol = np.linalg.solve(a, b)
            except np.linalg.LinAlgError:
                sol = np.linalg.lstsq(a, b, rcond=None)[0]
            resid_var = xtx[j, j] - b @ sol
        else:
            resid_var = xtx[j, j]
        scale = diag[j] if ref_ss is None else max(ref_ss[j], diag[j])
        if resid_var <= collin_tol * max(scale, 1e-300):
            kept[j] = False
    coef = np.full(k, np.nan)
    bread = np.full((k, k), np.nan)
    ki = np.flatnonzero(kept)
    if len(ki):
        sub = xtx[np.ix_(ki, ki)]
        inv = np.linalg.inv(sub)
        coef[ki] = inv @ xty[ki]
        bread[np.ix_(ki, ki)] = inv
        resid = y - x[:, ki] @ coef[ki]
    else:
        resid = y.copy()
    return OLSFit(coef=coef, resid=resid, bread=bread, rank=len(ki), kept=kept)
