"""Restricted wild cluster bootstrap (WCR) for one regression coefficient.

Roodman, D., MacKinnon, J. G., Nielsen, M. Ø. & Webb, M. D. (2019), "Fast and wild:
Bootstrap inference in Stata using boottest", *Stata Journal* 19(1), 4-60 (the algorithm of
Stata ``boottest``, Julia ``WildBootTests.jl`` and R ``fwildclusterboot``).

For ``H0: beta_j = beta0`` the null is imposed: ``y`` is regressed on the other regressors
(``y - x_j beta0`` on ``X_{-j}``), giving restricted fitted values and residuals ``u~``.
Bootstrap samples ``y*_b = X beta~ + u~ * v_{g(i), b}`` use one weight per cluster and draw.
Nothing is refitted per draw: because the statistic is linear in the weights, the
numerator and the ``G`` cluster scores of every draw are ``G x G`` matrices times the
``G x B`` weight matrix ("Fast and wild", Section 3), so the cost is ``O(G^2 B)`` after two
passes over the data (a row-blocked QR, then one sweep of per-cluster sums). Fixed effects
are projected out first (Frisch-Waugh-Lovell); the bootstrap regressions keep them, which
enters through the fixed-effect projection of cluster-wise columns (those of
``a = X (X'X)^-1 e_j``, a few clusters at a time; the projection is symmetric).

The statistic is the CRV1 t statistic with fixest / Stata small-sample factors
``G/(G-1) * (N-1)/(N-K)`` (fixed effects nested in the cluster variable are not counted in
``K``). p-values are symmetric two-sided (boottest's default ``ptype(symmetric)``):
``P = #{|t*_b| > |t|} / B`` with a strict inequality, as boottest / WildBootTests.jl and
fwildclusterboot count. Ties matter because they are exact, not rare: a weight vector
that is constant across clusters (``v = c``) reproduces ``t* = sign(c) t``; with Mammen
weights and ``G = 8`` the all-``(1 - sqrt5)/2`` vector alone has probability
``0.7236^8 = 7.5%``, and with Rademacher enumeration ``v = +-1`` are 2 of the ``2^G``
draws. Counting ties as extreme gave p = 0.18 on boottest's ``collapsed`` example where
boottest reports 0.104. A draw within a relative ``1e-9`` of ``|t|`` is a tie (rounding
must not decide). With Rademacher weights and ``2^G <= n_reps`` all ``2^G``
sign vectors are enumerated (``enumerated=True``): the p-value is then exact and does not
depend on the seed. The confidence interval inverts the test: its ends are where the
bootstrap p-value function crosses ``alpha`` (the same weight draws for every null).

Keyword mapping: fwildclusterboot ``boottest(fit, param=term, clustid=cluster, B=n_reps,
r=null, type=weight_type, impose_null=impose_null, sign_level=alpha)``; Stata
``boottest term=null, reps(n_reps) weight(weight_type)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import optimize

from ..core import rowblocks
from ..core.fe import demean, factorize, fe_dof
from ..core.rowblocks import row_blocks
from ..core.threads import blas_single_thread
from ..core.validation import as_frame, as_tuple, require_columns, require_frame
from ..errors import (
    InputError,
    SpecificationError,
    check_alpha,
    check_literal,
    format_message,
    renamed_keyword,
)
from ..results import SE_ROUNDING_SHARE

__all__ = [
    "WEIGHT_TYPES",
    "WildBootstrapResult",
    "draw_weights",
    "wcr_statistics",
    "wild_cluster_bootstrap",
    "wild_cluster_bootstrap_result",
]

WEIGHT_TYPES = ("rademacher", "webb", "mammen", "normal")
#: the outcome's residual norm (after the regressors and fixed effects) at or below this
#: share of its norm is an exact fit: rounding, not residual variation
EXACT_FIT_SHARE = 1e-10
_TIE_RTOL = 1e-9  # |t*| equal to |t| up to rounding is a tie, and ties are not counted


@dataclass(frozen=True)
class WildBootstrapResult:
    """Result of :func:`wild_cluster_bootstrap` (immutable).

    Attributes
    ----------
    term, null : the hypothesis ``term == null``.
    estimate, std_error : OLS estimate and its CRV1 standard error.
    statistic : CRV1 t statistic ``(estimate - null) / std_error``.
    p_value : symmetric bootstrap p-value.
    conf_int : (lower, upper) by test inversion at level ``1 - alpha``; ``(nan, nan)`` when
        the call asked for the p-value only (``conf_int=False``).
    n_reps : number of bootstrap draws actually used (``2^G`` when enumerated).
    weights : weight type; enumerated : all Rademacher sign vectors used.
    t_boot : bootstrap t statistics (read-only array, length ``n_reps``).
    n_clusters, nobs, alpha, impose_null, small_sample : details.
    """

    term: str
    null: float
    estimate: float
    std_error: float
    statistic: float
    p_value: float
    conf_int: tuple[float, float]
    n_reps: int
    weights: str
    enumerated: bool
    t_boot: np.ndarray = field(repr=False)
    n_clusters: int = 0
    nobs: int = 0
    alpha: float = 0.05
    impose_null: bool = True
    small_sample: float = 1.0

    def __post_init__(self) -> None:
        t = np.array(self.t_boot, dtype=float)
        t.setflags(write=False)
        object.__setattr__(self, "t_boot", t)
        object.__setattr__(self, "conf_int", tuple(float(v) for v in self.conf_int))

    #: Name in tables and the tidy frame.
    estimator = "wild_cluster_bootstrap"

    @property
    def ci_kind(self) -> str:
        """Interval label: bootstrap test inversion, weights and draws."""
        how = "all sign vectors" if self.enumerated else f"B={self.n_reps}"
        return f"wild cluster bootstrap, test inversion ({self.weights}, {how})"

    def to_frame(self, alpha: float | None = None) -> pd.DataFrame:
        """One tidy row (``estimator, term, estimate, std_error, statistic, p_value,
        ci_lower, ci_upper, ci_kind``): the CRV1 estimate, standard error and t statistic,
        the bootstrap p-value and the test-inversion interval.

        The interval exists only at the level the bootstrap was run at (``self.alpha``);
        another ``alpha`` raises :class:`~twinimpact.errors.SpecificationError`.
        """
        if alpha is not None and not math.isclose(alpha, self.alpha):
            raise SpecificationError(format_message(
                "the wild bootstrap interval was computed by test inversion at one level",
                where="WildBootstrapResult.to_frame",
                seen={"alpha asked": alpha, "alpha computed": self.alpha},
                fix=f"pass alpha={self.alpha} (or None), or rerun wild_cluster_bootstrap(..., "
                    f"alpha={alpha})"))
        return pd.DataFrame([{
            "estimator": self.estimator, "term": self.term, "estimate": self.estimate,
            "std_error": self.std_error, "statistic": self.statistic,
            "p_value": self.p_value, "ci_lower": self.conf_int[0],
            "ci_upper": self.conf_int[1], "ci_kind": self.ci_kind}])

    def summary(self) -> str:
        """Plain-text summary: hypothesis, CRV1 statistic, bootstrap p-value and interval."""
        level = 100 * (1 - self.alpha)
        draws = (f"all {self.n_reps} Rademacher sign vectors (exact)" if self.enumerated
                 else f"{self.n_reps} draws of {self.weights} weights")
        return "\n".join([
            "twinimpact · wild_cluster_bootstrap (restricted, WCR)",
            f"Hypothesis: {self.term} = {self.null:g}   Observations: {self.nobs:,}   "
            f"Clusters: {self.n_clusters}",
            f"Estimate {self.estimate:.6g}, CRV1 standard error {self.std_error:.6g}, "
            f"t = {self.statistic:.4g}",
            f"Bootstrap p-value {self.p_value:.4g} ({draws}; null imposed: "
            f"{'yes' if self.impose_null else 'no'})",
            f"{level:g}% interval by test inversion: [{self.conf_int[0]:.6g}, "
            f"{self.conf_int[1]:.6g}]",
        ])


# ----------------------------------------------------------------------------- numerics
def draw_weights(kind: str, n_clusters: int, n_reps: int,
                 rng: np.random.Generator) -> np.ndarray:
    """``(G, B)`` matrix of cluster weights with mean 0 and variance 1.

    Rademacher ``+-1``; Webb's six points ``+-sqrt(1/2), +-1, +-sqrt(3/2)``; Mammen's two
    points ``(1 -+ sqrt5)/2`` with probabilities ``(sqrt5 +- 1)/(2 sqrt5)``; standard normal.
    """
    g, b = n_clusters, n_reps
    if kind == "rademacher":
        return rng.choice(np.array([-1.0, 1.0]), size=(g, b))
    if kind == "webb":
        pts = np.array([-math.sqrt(1.5), -1.0, -math.sqrt(0.5), math.sqrt(0.5), 1.0,
                        math.sqrt(1.5)])
        return rng.choice(pts, size=(g, b))
    if kind == "mammen":
        s5 = math.sqrt(5.0)
        lo, hi = (1 - s5) / 2, (1 + s5) / 2
        p_lo = (s5 + 1) / (2 * s5)
        return np.where(rng.random((g, b)) < p_lo, lo, hi)
    return rng.standard_normal((g, b))


def _enumerate_rademacher(g: int) -> np.ndarray:
    """All ``2^G`` sign vectors as a ``(G, 2^G)`` matrix (first column all +1)."""
    idx = np.arange(2**g)
    bits = (idx[None, :] >> np.arange(g)[:, None]) & 1
    return 1.0 - 2.0 * bits


@dataclass(frozen=True)
class _Design:
    """Data after the fixed effects are swept out (shapes: n obs, k regressors, G)."""

    y: np.ndarray          # (n,)
    x: np.ndarray          # (n, k)
    cl: np.ndarray         # (n,) cluster codes 0..G-1
    g: int
    j: int                 # column of the tested coefficient
    fe: tuple              # FE codes (for projecting bootstrap residual columns)
    small: float           # G/(G-1) * (n-1)/(n-K)


def _crv1_t(d: _Design, beta0: float) -> tuple[float, float, float]:
    """CRV1 estimate, standard error and t statistic computed directly on the rows (the
    oracle of :meth:`_Moments.crv1`)."""
    xtx_inv = np.linalg.inv(d.x.T @ d.x)
    beta = xtx_inv @ (d.x.T @ d.y)
    resid = d.y - d.x @ beta
    a_j = d.x @ xtx_inv[:, d.j]
    scores = np.bincount(d.cl, weights=a_j * resid, minlength=d.g)
    se = math.sqrt(d.small * float(scores @ scores))
    return float(beta[d.j]), se, (float(beta[d.j]) - beta0) / se


def _residual_parts(d: _Design, u: np.ndarray, xtx_inv: np.ndarray, a_j: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(s, K)`` of the bootstrap statistic for the resampled residuals ``u``.

    ``s`` (G,): numerator weights, ``beta*_j - centre = s @ v``; ``K`` (G, G): the cluster
    scores of a draw are ``K @ v``. Both are linear in ``u``.
    """
    x, cl, g = d.x, d.cl, d.g
    # numerator: beta*_j - centre = sum_g v_g s_g, s_g = sum_{i in g} a_ji u_i
    s = np.bincount(cl, weights=a_j * u, minlength=g)
    # cluster scores of the bootstrap residuals: (F - C) v
    # F_hg = sum_{i in h} a_ji [M_D (u 1_g)]_i ; without FE M_D = I so F = diag(s)
    if d.fe:
        ucols = np.zeros((len(u), g))
        ucols[np.arange(len(u)), cl] = u
        mu = demean(ucols, list(d.fe)).x
        f = np.zeros((g, g))
        np.add.at(f, cl, a_j[:, None] * mu)
    else:
        f = np.diag(s)
    # C_hg = (sum_{i in h} a_ji x_i)' (X'X)^-1 (X_g' u_g)
    ax = np.column_stack([np.bincount(cl, weights=a_j * x[:, c], minlength=g)
                          for c in range(x.shape[1])])
    xu = np.column_stack([np.bincount(cl, weights=x[:, c] * u, minlength=g)
                          for c in range(x.shape[1])])
    return s, f - ax @ xtx_inv @ xu.T


def wcr_statistics(d: _Design, beta0: float, v: np.ndarray, impose_null: bool = True
                   ) -> np.ndarray:
    """Bootstrap t statistics for ``H0: beta_j = beta0`` for all weight columns of ``v``.

    ``v`` is ``(G, B)``. Returns ``(B,)``: ``(beta*_j - beta0) / se*`` with restricted
    residuals (WCR); with ``impose_null=False`` the unrestricted residuals are resampled
    and the statistics are ``(beta*_j - betahat_j) / se*`` (WCU). One pass over the data
    per call: the slow, direct form that :class:`_WCRPath` is tested against.
    """
    x, y, j = d.x, d.y, d.j
    xtx_inv = np.linalg.inv(x.T @ x)
    if impose_null:
        others = [c for c in range(x.shape[1]) if c != j]
        yr = y - x[:, j] * beta0
        if others:
            xo = x[:, others]
            br = np.linalg.lstsq(xo, yr, rcond=None)[0]
            u = yr - xo @ br
        else:
            u = yr
    else:
        u = y - x @ (xtx_inv @ (x.T @ y))
    a_j = x @ xtx_inv[:, j]                       # (n,) row j of (X'X)^-1 X'
    s, k_mat = _residual_parts(d, u, xtx_inv, a_j)
    num = s @ v
    scores = k_mat @ v
    var = d.small * np.einsum("gb,gb->b", scores, scores)
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / np.sqrt(var)


class _WCRPath:
    """WCR bootstrap statistics for every null ``beta0`` after two passes over the data.

    The restricted residuals are affine in the null, ``u(b0) = u0 - b0 u1`` with
    ``u0 = M_o y`` and ``u1 = M_o x_j`` (``M_o`` the residual maker of the other
    regressors), and ``s`` and ``K`` are linear in ``u``; so the numerators
    ``s(b0) @ v = n0 - b0 n1`` and the cluster scores ``K(b0) v = S0 - b0 S1`` of all
    draws are fixed ``(B,)`` and ``(G, B)`` arrays combined per null (Roodman et al. 2019,
    Section 3: the test inversion never revisits the data).

    The data are read twice, block by block (:func:`_cluster_moments`): a row-blocked QR
    of ``[X_o, x_j, y]`` (the restricted and unrestricted fits, the rank and
    ``(X'X)^-1``), then one sweep that forms the per-cluster sums ``X_g' u0_g``,
    ``X_g' u1_g`` and ``X_g' a_g`` (``a = X (X'X)^-1 e_j``); everything after is
    ``G``-sized. The CRV1 estimate and standard error come from the same sums (the
    unrestricted residual is ``u(betahat_j) = u0 - betahat_j u1``). Same numbers as
    :func:`wcr_statistics` (the direct form, ``lstsq`` and one pass per null) up to
    rounding (tested).
    """

    def __init__(self, d: _Design, v: np.ndarray, moments: _Moments | None = None) -> None:
        m = _cluster_moments(d) if moments is None else moments
        # numerator weights s_g = sum_{i in g} a_i u_i = w' X_g' u_g
        s0, s1 = m.xu0 @ m.w, m.xu1 @ m.w
        # C_hg = (X_h' a_h)' (X'X)^-1 (X_g' u_g); F = diag(s) without fixed effects
        ca = m.xa @ m.xtx_inv
        k0, k1 = -(ca @ m.xu0.T), -(ca @ m.xu1.T)
        if d.fe:
            f0, f1 = _fe_score_parts(d, m)
            k0 += f0
            k1 += f1
        else:
            k0[np.diag_indices_from(k0)] += s0
            k1[np.diag_indices_from(k1)] += s1
        self.n0, self.n1 = s0 @ v, s1 @ v
        self.s0, self.s1 = k0 @ v, k1 @ v
        # sum_g (S0 - b0 S1)^2 = q00 - 2 b0 q01 + b0^2 q11 per draw
        self.q00 = np.einsum("gb,gb->b", self.s0, self.s0)
        self.q01 = np.einsum("gb,gb->b", self.s0, self.s1)
        self.q11 = np.einsum("gb,gb->b", self.s1, self.s1)
        self.small = d.small

    def statistics(self, beta0: float, exact: bool = True) -> np.ndarray:
        """``(B,)`` bootstrap t statistics for ``H0: beta_j = beta0``.

        ``exact=True`` sums the squared cluster scores (``O(G B)``); ``exact=False`` uses
        the quadratic form in ``beta0`` (``O(B)``, for the many trial nulls of the test
        inversion; it differs by rounding, which only decides draws within the tie
        tolerance of ``|t|``)."""
        if exact:
            scores = self.s0 - beta0 * self.s1
            var = np.einsum("gb,gb->b", scores, scores)
        else:
            var = np.maximum(self.q00 - 2.0 * beta0 * self.q01 + beta0 * beta0 * self.q11,
                             0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self.n0 - beta0 * self.n1) / np.sqrt(self.small * var)


@dataclass(frozen=True)
class _Moments:
    """What the bootstrap needs from the rows, all ``G``- or ``k``-sized (columns of
    ``X`` in their original order).

    beta : (k,) OLS coefficients; w : (k,) ``(X'X)^-1 e_j``; xtx_inv : (k, k);
    coef_y, coef_j : restricted fits of ``y`` and ``x_j`` on the other regressors
    (``(k-1,)``); xu0, xu1, xa : (G, k) per-cluster ``X_g' u0_g``, ``X_g' u1_g``,
    ``X_g' a_g``; rank : rank of ``X`` (``np.linalg.matrix_rank``'s tolerance);
    resid_share : the norm of ``y``'s residual on ``X`` over the norm of ``y`` (``|R_yy| /
    ||R_.y||``; NaN when ``X`` is collinear).
    """

    beta: np.ndarray
    w: np.ndarray
    xtx_inv: np.ndarray
    coef_y: np.ndarray
    coef_j: np.ndarray
    xu0: np.ndarray
    xu1: np.ndarray
    xa: np.ndarray
    rank: int
    resid_share: float = math.nan

    def crv1(self, d: _Design, beta0: float) -> tuple[float, float, float]:
        """CRV1 estimate, standard error and t statistic: the unrestricted residual is
        ``u0 - betahat_j u1``, so its cluster scores are ``w' X_g' (u0 - betahat_j u1)``."""
        est = float(self.beta[d.j])
        scores = (self.xu0 - est * self.xu1) @ self.w
        se = math.sqrt(d.small * float(scores @ scores))
        return est, se, (est - beta0) / se


def _tall_fit(d: _Design) -> tuple[np.ndarray, list[int]]:
    """``R`` of ``[X_o, x_j, y]`` (row-blocked QR) and the column order ``o + [j]``."""
    k = d.x.shape[1]
    order = [c for c in range(k) if c != d.j] + [d.j]
    return _tall_r(*(d.x[:, c] for c in order), d.y), order


def _rank_of_r(r: np.ndarray, n: int) -> int:
    """Rank of the ``(n, k)`` matrix whose ``R`` factor is ``r`` (``matrix_rank``'s rule)."""
    k = r.shape[1]
    if k == 0:
        return 0
    sv = np.linalg.svd(r, compute_uv=False)
    tol = sv.max(initial=0.0) * max(n, k) * np.finfo(float).eps
    return int(np.count_nonzero(sv > tol))


def _cluster_moments(d: _Design, tall: tuple[np.ndarray, list[int]] | None = None
                     ) -> _Moments:
    """Fits from the ``R`` factor, then one row-blocked sweep for the per-cluster sums.

    ``X'X = R'R`` so ``(X'X)^-1 e_j = R^-1 e_k / R_kk`` with ``x_j`` ordered last; the
    restricted coefficients solve with the leading block of ``R`` (least squares by
    QR, as ``lstsq``). A collinear ``X`` gives ``rank < k`` and NaN fits (the caller
    raises before using them).
    """
    from scipy.linalg import solve_triangular

    x, y, cl, g, j = d.x, d.y, d.cl, d.g, d.j
    n, k = x.shape
    r, order = _tall_fit(d) if tall is None else tall
    rx = r[:k, :k]
    rank = _rank_of_r(rx, n)
    nan_k = np.full(k, np.nan)
    if rank < k:
        empty = np.full((g, k), np.nan)
        return _Moments(beta=nan_k, w=nan_k, xtx_inv=np.full((k, k), np.nan),
                        coef_y=nan_k[1:], coef_j=nan_k[1:], xu0=empty, xu1=empty, xa=empty,
                        rank=rank)
    inv_order = np.argsort(order)
    beta = solve_triangular(rx, r[:k, k])[inv_order]
    rinv = solve_triangular(rx, np.eye(k))
    xtx_inv = (rinv @ rinv.T)[np.ix_(inv_order, inv_order)]
    w = rinv[:, k - 1][inv_order] / rx[k - 1, k - 1]
    others = order[:-1]
    ko = k - 1
    if ko:
        coef = solve_triangular(r[:ko, :ko], r[:ko, ko:])  # columns: x_j, y
        coef_j, coef_y = coef[:, 0], coef[:, 1]
    else:
        coef_j = coef_y = np.zeros(0)
    # u0 = y - X g0, u1 = X g1, a = X w: one product per block gives all three
    gam = np.zeros((3, k))
    gam[0, others], gam[1, others] = coef_y, -coef_j
    gam[1, j], gam[2] = 1.0, w
    xu0, xu1, xa = (np.zeros((g, k)) for _ in range(3))
    for sl in row_blocks(n):
        xb, cb = x[sl], cl[sl]
        ut = gam @ xb.T                                 # (3, rows): rows contiguous
        u0 = y[sl] - ut[0]
        for c in range(k):
            xc = xb[:, c]
            xu0[:, c] += np.bincount(cb, weights=xc * u0, minlength=g)
            xu1[:, c] += np.bincount(cb, weights=xc * ut[1], minlength=g)
            xa[:, c] += np.bincount(cb, weights=xc * ut[2], minlength=g)
    y_norm = float(np.linalg.norm(r[:, k]))
    return _Moments(beta=beta, w=w, xtx_inv=xtx_inv, coef_y=coef_y, coef_j=coef_j,
                    xu0=xu0, xu1=xu1, xa=xa, rank=rank,
                    resid_share=abs(float(r[k, k])) / y_norm if y_norm > 0 else 0.0)


def _fe_score_parts(d: _Design, m: _Moments) -> tuple[np.ndarray, np.ndarray]:
    """``F(u0), F(u1)`` with fixed effects: ``F_hg = sum_{i in h} a_i [M_D (u 1_g)]_i
    = sum_{i in g} u_i [M_D (a 1_h)]_i`` (``M_D`` symmetric), so one projection of the
    ``G`` cluster-wise columns of ``a`` serves both residual vectors."""
    x, y, cl, g, j = d.x, d.y, d.cl, d.g, d.j
    n, k = x.shape
    others = [c for c in range(k) if c != j]
    a = x @ m.w
    u0 = y - x[:, others] @ m.coef_y if others else y.copy()
    u1 = x[:, j] - x[:, others] @ m.coef_j if others else x[:, j].copy()
    from scipy import sparse

    # F(u)' = S_u @ [M_D (a 1_h)]_h with S_u (G x n) holding u_i at (g(i), i): one sparse
    # product per block of clusters h; the projected columns are made a few clusters
    # at a time (about 16M numbers), never the whole (n x G) matrix
    rows = np.arange(n)
    s0 = sparse.csr_matrix((u0, (cl, rows)), shape=(g, n))
    s1 = sparse.csr_matrix((u1, (cl, rows)), shape=(g, n))
    f0t, f1t = np.empty((g, g)), np.empty((g, g))
    step = max(4, (1 << 24) // max(n, 1))
    for h0 in range(0, g, step):
        m_h = min(step, g - h0)
        sel = np.flatnonzero((cl >= h0) & (cl < h0 + m_h))
        acols = np.zeros((n, m_h))
        acols[sel, cl[sel] - h0] = a[sel]
        ma = demean(acols, list(d.fe)).x
        f0t[:, h0:h0 + m_h] = s0 @ ma
        f1t[:, h0:h0 + m_h] = s1 @ ma
    return f0t.T.copy(), f1t.T.copy()


def _tall_r(*cols: np.ndarray) -> np.ndarray:
    """``R`` factor (``k x k``, upper triangular, up to the signs of its rows) of the tall
    matrix whose columns are ``cols`` (each ``(n,)`` or ``(n, m)``), by Householder QR
    block by block (``R`` of ``[R_prev; block]``, the sequential tall-skinny QR): the
    same backward stability as one QR of the whole matrix, with cost linear in the rows
    and no ``n x k`` copy (a block of ``rowblocks.BLOCK`` rows at a time)."""
    from scipy.linalg import lapack

    mats = [c[:, None] if c.ndim == 1 else c for c in cols]
    k = sum(m.shape[1] for m in mats)
    n = len(mats[0])
    r = np.zeros((0, k))
    buf = np.empty((min(n, rowblocks.BLOCK) + k, k), order="F")  # one reused Fortran-order block
    for sl in row_blocks(n):
        h = r.shape[0]
        blk = buf[:h + sl.stop - sl.start]
        blk[:h] = r
        c0 = 0
        for m in mats:
            blk[h:, c0:c0 + m.shape[1]] = m[sl]
            c0 += m.shape[1]
        qr, _, _, info = lapack.dgeqrf(blk, overwrite_a=True)
        if info != 0:  # pragma: no cover - LAPACK argument error
            raise RuntimeError(f"dgeqrf failed (info={info})")
        r = np.triu(qr[:min(k, len(blk))])
    return r


def _rank_tall(x: np.ndarray) -> int:
    """``np.linalg.matrix_rank(x)`` of a tall ``(n, k)`` matrix from the singular values of
    its ``R`` factor (the same singular values; the same tolerance,
    ``S.max() * max(n, k) * eps``), without an SVD of the tall matrix."""
    n, k = x.shape
    if n < k or n == 0:
        return int(np.linalg.matrix_rank(x))
    return _rank_of_r(_tall_r(x), n)


def _p_value(t: float, t_boot: np.ndarray) -> float:
    """Share of feasible draws with ``|t*| > |t|``; draws whose statistic is undefined
    (zero bootstrap variance) leave the denominator, as boottest's ``BFeas``."""
    a = np.abs(t_boot)
    feasible = np.isfinite(a)
    n = int(feasible.sum())
    if n == 0:
        return math.nan
    return float(np.count_nonzero(a[feasible] > abs(t) * (1 + _TIE_RTOL)) / n)


def _sorted_codes(col: pd.Series) -> tuple[np.ndarray, int]:
    """Cluster codes ``0..G-1`` in the sorted order of the cluster labels.

    The bootstrap weights are drawn cluster by cluster in code order, so the codes must
    not depend on the order of the rows: boottest (Stata sorts the data by cluster),
    fwildclusterboot (R factor levels) and wildboottest (``np.unique``) draw in the sorted
    order too, so a fixed seed gives their draws on any row order. Labels that cannot be
    sorted (mixed types in an object column) keep the order of first appearance.

    Beyond :func:`~twinimpact.core.fe.factorize` no n-row array is made: one row of each
    cluster is found block by block, stopping once every cluster has been seen (the
    first block for most panels), and the codes are renumbered in place, block by block
    (at 1e7 rows the whole-array ``np.arange(n)`` scatter and ``rank[codes]`` gather took
    0.035-0.11 s over factorize, with two fresh 80 MB mappings, where this takes 0.007 s:
    run WB in benchmarks/RESULTS.md)."""
    codes, g = factorize(col)
    rep = _one_row_each(codes, g)
    try:
        order = np.asarray(pd.Index(col.array.take(rep)).argsort())
    except TypeError:
        return codes, g
    if (order == np.arange(g)).all():
        return codes, g  # first appearance is already sorted (e.g. rows sorted by cluster)
    rank = np.empty(g, dtype=codes.dtype)
    rank[order] = np.arange(g)
    if not codes.flags.writeable:  # (factorize returns a new array: not expected)
        codes = codes.copy()
    buf = np.empty(min(len(codes), rowblocks.BLOCK), dtype=codes.dtype)
    for sl in row_blocks(len(codes)):
        out = buf[:sl.stop - sl.start]
        np.take(rank, codes[sl], out=out, mode="clip")  # (codes are 0..g-1: nothing clipped)
        codes[sl] = out
    return codes, g


def _one_row_each(codes: np.ndarray, g: int) -> np.ndarray:
    """The position of one row of each code ``0..g-1`` (every code occurs), reading the
    codes in blocks (4,096 rows, doubling up to ``rowblocks.BLOCK``) until all have been
    seen."""
    rep = np.full(g, -1, dtype=np.intp)
    n = len(codes)
    start, step = 0, 1 << 12
    while start < n:
        stop = min(n, start + step)
        cb = codes[start:stop]
        rep[cb] = np.arange(start, stop)
        # with first-appearance codes every code is seen once the largest is
        if cb.max() == g - 1 and (rep >= 0).all():
            break
        start, step = stop, min(2 * step, rowblocks.BLOCK)
    return rep


# ----------------------------------------------------------------------------- public
@blas_single_thread
def wild_cluster_bootstrap(data: pd.DataFrame, *, outcome: str, regressors: Sequence[str],
                           cluster: str, term: str, null: float = 0.0,
                           fixed_effects: str | Sequence[str] = (),
                           weight_type: Literal["rademacher", "webb", "mammen", "normal"] =
                           "rademacher", n_reps: int = 9999, seed: int | None = None,
                           alpha: float = 0.05, impose_null: bool = True,
                           conf_int: bool = True,
                           weights: str | None = None) -> WildBootstrapResult:
    """Restricted wild cluster bootstrap test and confidence interval for one coefficient.

    Parameters
    ----------
    data : DataFrame
        One row per observation; rows with a missing value in a used column are dropped.
    outcome : str
        Dependent variable.
    regressors : sequence of str
        Right-hand-side variables. An intercept ``"(Intercept)"`` is added when there are
        no fixed effects (as ``lm`` / ``feols``).
    cluster : str
        Cluster variable (one-way clustering; at least 2 clusters).
    term : str
        Regressor tested (fwildclusterboot ``param``).
    null : float
        Hypothesised value (fwildclusterboot ``r``, Stata ``term = null``).
    fixed_effects : str or sequence of str
        Columns whose fixed effects are swept out (fixest ``| fe1 + fe2``).
    weight_type : {"rademacher", "webb", "mammen", "normal"}
        Wild weight distribution (fwildclusterboot ``type``, boottest ``weight()``).
    weights : str, optional
        Deprecated old name of ``weight_type`` (still accepted, with a warning). In the
        rest of the package ``weights=`` names a column of observation weights, which
        this bootstrap does not take.
    n_reps : int
        Bootstrap draws (``B``). Rademacher with ``2^G <= n_reps`` enumerates all ``2^G``.
    seed : int, optional
        Seed of NumPy's generator for the draws.
    alpha : float
        Level of the confidence interval.
    impose_null : bool
        True (default): WCR, the null is imposed. False: WCU (unrestricted residuals; the
        bootstrap statistics are centred at the estimate).
    conf_int : bool
        True (default): also invert the test for the confidence interval. False: the
        p-value only (``conf_int`` of the result is ``(nan, nan)``); the interval needs
        one evaluation of the bootstrap distribution per trial null, the p-value one.

    Returns
    -------
    WildBootstrapResult

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from twinimpact.inference.wild_bootstrap import wild_cluster_bootstrap
    >>> rng = np.random.default_rng(0)
    >>> d = pd.DataFrame({"g": np.repeat(np.arange(8), 20), "x": rng.normal(size=160)})
    >>> d["y"] = 0.5 * d["x"] + rng.normal(size=8)[d["g"]] + rng.normal(size=160)
    >>> r = wild_cluster_bootstrap(d, outcome="y", regressors=["x"], cluster="g", term="x")
    >>> r.enumerated, r.n_reps
    (True, 256)
    """
    data = as_frame(data, what="wild_cluster_bootstrap: data")
    data = require_frame(data)
    if weights is not None and weights not in WEIGHT_TYPES:
        raise SpecificationError(format_message(
            "wild_cluster_bootstrap does not take observation weights", seen=weights,
            fix="for the wild weight distribution pass weight_type="
                + "|".join(map(repr, WEIGHT_TYPES))))
    weights = renamed_keyword("wild_cluster_bootstrap", "weights", "weight_type", weights,
                              weight_type, new_default="rademacher")
    check_literal("weight_type", weights, WEIGHT_TYPES)
    regressors = list(regressors)
    fes = as_tuple(fixed_effects)
    if not isinstance(cluster, str):
        raise SpecificationError(format_message(
            "cluster must be one column name (one-way clustering)", seen=cluster,
            fix="pass cluster='state'"))
    if term not in regressors:
        raise SpecificationError(format_message(
            f"term {term!r} is not among the regressors", seen=regressors,
            fix="test one of the regressors, e.g. term=regressors[0]"))
    if not isinstance(n_reps, int | np.integer) or n_reps < 1:
        raise SpecificationError(f"n_reps must be a positive integer; got {n_reps!r}.")
    check_alpha(alpha)
    require_columns(data, [outcome, *regressors, cluster, *fes])
    cols = list(dict.fromkeys([outcome, *regressors, cluster, *fes]))
    sub = data[cols]
    miss = sub.isna().any(axis=1).to_numpy()
    if miss.any():  # (no copy of the rows when none is missing)
        sub = sub.loc[~miss]
    if len(sub) == 0:
        raise InputError("wild_cluster_bootstrap: no complete rows.")
    try:
        y = sub[outcome].to_numpy(dtype=float)
        x = sub[regressors].to_numpy(dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(format_message("outcome and regressors must be numeric",
                                        seen=str(exc)[:80])) from exc
    names = list(regressors)
    if not fes:
        x = np.column_stack([np.ones(len(y)), x])
        names = ["(Intercept)", *names]
    cl, g = _sorted_codes(sub[cluster])
    if g < 2:
        raise InputError(format_message(
            "the wild cluster bootstrap needs at least 2 clusters", where=f"cluster={cluster!r}",
            seen=g, fix="cluster by a variable with several groups"))
    fe_codes = tuple(factorize(sub[f])[0] for f in fes)
    if fe_codes:
        dm = demean(np.column_stack([y, x]), list(fe_codes))
        y, x = dm.x[:, 0], dm.x[:, 1:]
    n, k = x.shape
    # (as the OLS fits' variance: the two sets' redundancies counted exactly where the
    # default count would leave no residual degree of freedom)
    k_fe, k_nested = (fe_dof(list(fe_codes), [cl], n_obs=n, n_slopes=k) if fe_codes
                      else (0, 0))
    j = names.index(term)
    fe_text = f", fixed effects {', '.join(map(repr, fes))}" if fes else ""

    def exact_fit(why: str) -> InputError:
        # every row fitted exactly: the CRV1 standard error is rounding (1e-15 or 1e-17
        # beside an estimate of 0.2-5 in saturated designs), its small-sample factor 1/0
        # or negative, its t statistic meaningless
        return InputError(format_message(
            f"the regressors and fixed effects fit the outcome exactly ({why}), so the "
            "standard error and the t statistic are not defined", where=f"term={term!r}",
            seen=f"{n} complete rows, {k} regressor(s){fe_text}",
            fix="use fewer regressors or fixed effects, or more rows"))

    if n <= k + k_fe:  # as core.vcov.sandwich: no residual degrees of freedom
        raise exact_fit(f"no residual degrees of freedom: {k + k_fe} parameters "
                        "including fixed effects, counted as fixest does")
    design = _Design(y=y, x=x, cl=cl, g=g, j=j, fe=fe_codes, small=math.nan)
    moments = _cluster_moments(design)
    if moments.rank < k:
        raise InputError(format_message(
            "the regressors are collinear (after the fixed effects)", seen=names,
            fix="drop redundant regressors"))
    if not moments.resid_share > EXACT_FIT_SHARE:
        raise exact_fit(f"no residual variation left: residual / outcome norm "
                        f"{moments.resid_share:.1e}")
    k_total = k + k_fe - k_nested
    small = g / (g - 1) * (n - 1) / (n - k_total)
    design = _Design(y=y, x=x, cl=cl, g=g, j=j, fe=fe_codes, small=small)

    enumerated = weights == "rademacher" and 2**g <= n_reps
    if enumerated:
        v = _enumerate_rademacher(g)
    else:
        v = draw_weights(weights, g, int(n_reps), np.random.default_rng(seed))
    est, se, t = moments.crv1(design, null)
    if est != 0.0 and se <= SE_ROUNDING_SHARE * abs(est):
        # the estimators' rule (results.rounding_variances): e.g. 2 clusters whose score
        # sums fixed effects nested in them make zero gave 6e-16 beside an estimate of 0.3
        raise InputError(format_message(
            "the cluster-robust standard error is zero up to rounding (below 1e-8 of the "
            "estimate): zero by construction in these data, not a measured precision, so "
            "the t statistic is not defined", where=f"term={term!r}",
            seen=f"estimate {est:.6g}, standard error {se:.2g}, {g} clusters{fe_text}",
            fix="cluster by a variable with more groups, or use fewer fixed effects "
                "nested in the clusters"))
    path = _WCRPath(design, v, moments)
    # WCU resamples the unrestricted residuals u(betahat_j) and centres at the estimate
    t_boot = path.statistics(null if impose_null else est)
    p = _p_value(t, t_boot)

    def pval(b0: float) -> float:
        # WCU statistics are centred at the estimate and do not depend on the null
        tb = path.statistics(b0, exact=False) if impose_null else t_boot
        return _p_value((est - b0) / se, tb)

    ci = _invert(pval, est, se, alpha) if conf_int else (math.nan, math.nan)
    t_boot = np.asarray(t_boot, dtype=float).copy()
    t_boot.setflags(write=False)
    return WildBootstrapResult(term=term, null=float(null), estimate=est, std_error=se,
                               statistic=t, p_value=p, conf_int=ci, n_reps=v.shape[1],
                               weights=weights, enumerated=enumerated, t_boot=t_boot,
                               n_clusters=g, nobs=n, alpha=alpha, impose_null=impose_null,
                               small_sample=small)


def _invert(pval, est: float, se: float, alpha: float) -> tuple[float, float]:
    """Ends of ``{b0 : p(b0) > alpha}`` around the estimate (bracket, then root finding)."""
    def f(b0: float) -> float:
        return pval(b0) - alpha

    out = []
    for direction in (-1.0, 1.0):
        inner = est
        if f(inner) <= 0:  # estimate itself rejected (degenerate): no interval
            return (math.nan, math.nan)
        step = 2.0 * se
        outer = est + direction * step
        it = 0
        while f(outer) > 0 and it < 60:
            inner = outer
            step *= 2.0
            outer = est + direction * step
            it += 1
        if it >= 60:
            out.append(direction * math.inf)
            continue
        root = optimize.brentq(f, min(inner, outer), max(inner, outer),
                               xtol=1e-10 * max(se, 1e-300), rtol=1e-12, maxiter=200)
        out.append(root)
    return (float(out[0]), float(out[1]))


def wild_cluster_bootstrap_result(result: Any, *, term: str, data: pd.DataFrame,
                                  null: float = 0.0, **kwargs: Any) -> WildBootstrapResult:
    """Wild cluster bootstrap for a term of a ``twfe`` or TWFE ``event_study`` result.

    The regression is rebuilt from ``data`` and the result's ``spec`` (outcome, unit and
    time fixed effects, the treatment / event-time dummies, covariates, first cluster
    variable); ``kwargs`` go to :func:`wild_cluster_bootstrap` (``weight_type``, ``n_reps``,
    ``seed``, ``alpha``, ``impose_null``).
    """
    spec = dict(result.spec)
    if result.estimator not in ("twfe", "event_study") or spec.get("method", "twfe") != "twfe":
        raise SpecificationError(format_message(
            "wild_cluster_bootstrap_result supports twfe and TWFE event_study results",
            seen=result.estimator,
            fix="call wild_cluster_bootstrap(data, outcome=..., regressors=..., ...) directly"))
    if spec.get("weights"):
        raise SpecificationError("weighted regressions are not supported by the bootstrap.")
    if term not in result.terms or (term == "ATT" and result.estimator == "event_study"):
        raise SpecificationError(format_message(
            f"term {term!r} is not a regressor of this result", seen=list(result.terms),
            fix="pick a coefficient term (not the derived ATT of an event study)"))
    clus = tuple(spec.get("cluster") or ())
    if len(clus) != 1:
        raise SpecificationError(format_message(
            "the bootstrap needs exactly one cluster variable", seen=clus,
            fix="re-estimate with one cluster= column"))
    unit, time, outcome = spec["unit"], spec["time"], spec["outcome"]
    d = data.copy()
    covs = list(spec.get("covariates") or ())
    if result.estimator == "twfe":
        if spec.get("treatment"):
            d["__D"] = d[spec["treatment"]].astype(float)
        else:
            from ..core.validation import _numeric, normalize_cohort

            tt = _numeric(d, time, "time")  # the estimator's own reading (dates as years)
            gg = normalize_cohort(_numeric(d, spec["cohort"], "cohort", allow_inf=True),
                                  np.nanmax(tt))
            d["__D"] = (~np.isnan(gg) & (tt >= gg)).astype(float)
        regs = {"ATT": "__D"}
    else:
        from ..core.validation import _numeric, normalize_cohort

        tt = _numeric(d, time, "time")  # the estimator's own reading (dates as years)
        gg = normalize_cohort(_numeric(d, spec["cohort"], "cohort", allow_inf=True),
                              np.nanmax(tt))
        lo, hi = spec["window"]
        rel = tt - gg
        if spec.get("bin_endpoints", True):
            rel = np.clip(rel, lo, hi)
        else:
            outside = ~np.isnan(rel) & ((rel < lo) | (rel > hi))
            d = d.loc[~outside].copy()
            rel = rel[~outside]
        regs = {}
        for nm in result.terms:
            if nm.startswith("rel_time="):
                e = float(nm.split("=")[1])
                col = f"__rel_{nm.split('=')[1]}"
                d[col] = (rel == e).astype(float)
                regs[nm] = col
    for c in covs:
        regs[c] = c
    return wild_cluster_bootstrap(d, outcome=outcome, regressors=list(regs.values()),
                                  cluster=clus[0], term=regs[term], null=null,
                                  fixed_effects=(unit, time), **kwargs)
