"""Numerical kernels for Poisson pseudo-maximum likelihood with high-dimensional fixed effects.

Pure functions and small classes on NumPy arrays; no pandas objects, no input validation
(:func:`twinimpact.estimators.ppml.ppml` validates and orchestrates).

* :class:`WeightedFE` sweeps any number of fixed-effect sets out of the columns of a matrix
  by weighted alternating projections (Gaure 2013), accelerated by Irons & Tuck (1969)
  extrapolation (as in fixest) and warm-started from the previous solution (as in
  ppmlhdfe: the fixed-effect component of the last IRLS iteration is the starting point).
  The sparse group-sum matrices are built once; only their weights change between calls.
* :func:`drop_singletons_and_fe_separation` removes, iteratively, singleton observations
  and observations whose zero outcome is perfectly predicted by a fixed-effect level whose
  outcomes are all zero (Correia, Guimarães & Zylkin 2021, section 4.1).
* :func:`relu_separation` is the iterative rectifier ("ReLU") check of Correia,
  Guimarães & Zylkin (2021, section 4.3) for separation by regressors and fixed effects
  jointly.
* :func:`irls_poisson` is the IRLS loop of Correia, Guimarães & Zylkin (2020, "Fast
  Poisson estimation with high-dimensional fixed effects", Stata Journal 20(1)), with the
  deviance-change stopping rule of fixest / ppmlhdfe and step-halving.

References
----------
Correia, S., Guimarães, P., & Zylkin, T. (2020). Fast Poisson estimation with
high-dimensional fixed effects. *Stata Journal*, 20(1), 95-115.
Correia, S., Guimarães, P., & Zylkin, T. (2021). Verifying the existence of maximum
likelihood estimates for generalized linear models. arXiv:1903.01633.
Gaure, S. (2013). OLS with multiple high dimensional category variables. *CSDA* 66, 8-18.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import sparse

from . import _fe_sweep

__all__ = [
    "PoissonFit",
    "WeightedFE",
    "drop_singletons_and_fe_separation",
    "irls_poisson",
    "poisson_deviance",
    "relu_separation",
]

#: Bounds on the linear predictor: exp(+-700) is the float64 range.
ETA_MAX = 700.0


class WeightedFE:
    """Weighted projections onto the complement of the fixed-effect space.

    Parameters
    ----------
    fe_codes : sequence of int arrays, each shape (n,), or one (K, n) array
        Dense codes 0..G-1, one array (row) per fixed-effect set. A C-contiguous (K, n)
        int32 array is used without a copy.
    backend : {"numba", "numpy"}
        ``"numba"`` (default): fused compiled sweeps (:mod:`._fe_sweep`). ``"numpy"``: the
        same iteration with SciPy sparse group-sum products -- the slow, obviously correct
        path the tests compare the compiled kernels with.

    Notes
    -----
    For set ``k`` with group matrix ``D_k`` (n x G_k) the weighted projection is
    ``P_k x = D_k (D_k' W D_k)^{-1} D_k' W x``; one sweep applies ``(I - P_K)...(I - P_1)``.
    Repeated sweeps converge to the W-orthogonal projection onto the complement of the span
    of all sets; starting from ``x - D a`` for any ``a`` gives the same limit, which is what
    makes warm starts exact.
    """

    def __init__(self, fe_codes: Sequence[np.ndarray] | np.ndarray, *,
                 backend: Literal["numba", "numpy"] = "numba") -> None:
        if backend not in ("numba", "numpy"):
            raise ValueError(f"backend must be 'numba' or 'numpy', got {backend!r}")
        self.backend = backend
        self.n = len(fe_codes[0]) if len(fe_codes) else 0
        sizes = [int(np.max(c)) + 1 if self.n else 0 for c in fe_codes]
        self.offs = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self.offs[1:])
        # all sets in one (K, n) array; int32 halves the bytes read per sweep. A (K, n)
        # C-contiguous int32 array is used as it is (not copied).
        ctype = np.int32 if max(sizes, default=0) < 2**31 - 1 else np.int64
        if isinstance(fe_codes, np.ndarray) and fe_codes.ndim == 2 \
                and fe_codes.dtype == ctype and fe_codes.flags.c_contiguous:
            self.code_array = fe_codes
        else:
            self.code_array = np.empty((len(sizes), self.n), dtype=ctype)
            for k, c in enumerate(fe_codes):
                self.code_array[k] = c
        self.runs = _fe_sweep.run_sets(self.code_array)
        self.inv_wsum_flat = np.ones(int(self.offs[-1]))
        self._sums = np.empty(int(self.offs[-1]))
        self.mats: list[sparse.csr_matrix] = []
        self.orders: list[np.ndarray] = []
        if backend == "numpy":
            for c, g in zip(fe_codes, sizes, strict=True):
                c = np.asarray(c, dtype=np.intp)
                order = np.argsort(c, kind="stable")
                indptr = np.zeros(g + 1, dtype=np.int64)
                np.cumsum(np.bincount(c, minlength=g), out=indptr[1:])
                self.mats.append(sparse.csr_matrix((np.ones(self.n), order, indptr),
                                                   shape=(g, self.n)))
                self.orders.append(order)
        self.set_weights(None)

    @property
    def n_sets(self) -> int:
        return self.code_array.shape[0]

    @property
    def codes(self) -> list[np.ndarray]:
        """The codes of each set (views of one (K, n) array)."""
        return list(self.code_array)

    @property
    def inv_wsum(self) -> list[np.ndarray]:
        """``1 / sum(w)`` per level of each set (0 for levels without weight)."""
        return [self.inv_wsum_flat[self.offs[k]:self.offs[k + 1]] for k in range(self.n_sets)]

    def set_weights(self, w: np.ndarray | None) -> None:
        """Use observation weights ``w`` (shape (n,); None = equal weights)."""
        self._w = np.ones(self.n) if w is None else np.ascontiguousarray(w, dtype=float)
        wsum = self._sums
        if self.backend == "numba":
            _fe_sweep.level_sums(self.code_array, self.offs, self.runs, self._w, wsum)
        else:
            for k, (mat, order) in enumerate(zip(self.mats, self.orders, strict=True)):
                mat.data = self._w[order]
                wsum[self.offs[k]:self.offs[k + 1]] = np.asarray(mat.sum(axis=1)).reshape(-1)
        pos = wsum > 0
        self.inv_wsum_flat = np.zeros_like(wsum)
        np.divide(1.0, wsum, out=self.inv_wsum_flat, where=pos)

    def sweep(self, x: np.ndarray, *, inplace: bool = False) -> np.ndarray:
        """One pass of ``(I - P_K)...(I - P_1)`` over the columns of ``x`` (n, k)."""
        if not inplace:
            x = np.array(x, dtype=float, order="F", copy=True)
        for j in range(x.shape[1]):
            col = np.ascontiguousarray(x[:, j])
            self._sweep_vector(col)
            x[:, j] = col
        return x

    def residualize(self, x: np.ndarray, start: np.ndarray | None = None, *,
                    tol: float = 1e-10, maxiter: int = 10_000) -> tuple[np.ndarray, int, bool]:
        """Sweep the fixed effects out of ``x`` (n, k).

        ``start`` is a point ``x - D a`` to start from (warm start), e.g. ``x`` minus the
        fixed-effect component found in a previous call. Stops when, for every column, the
        largest absolute change of a sweep is below ``tol * (1 + max|x|)``.

        Returns ``(x_tilde, sweeps, converged)``.
        """
        x = np.asarray(x, dtype=float)
        if self.n_sets == 0:
            return x.copy(), 0, True
        cur = np.array(x if start is None else start, dtype=float, order="F", copy=True)
        sweeps, ok = self.residualize_inplace(cur, _fe_sweep.col_absmax(np.asfortranarray(x)),
                                              tol=tol, maxiter=maxiter)
        return np.ascontiguousarray(cur), sweeps, ok

    def residualize_inplace(self, cur: np.ndarray, absmax: np.ndarray, *, tol: float,
                            maxiter: int) -> tuple[int, bool]:
        """:meth:`residualize` on a Fortran-ordered (n, k) array ``cur`` holding the start,
        overwritten by the result; ``absmax`` = ``max|x|`` per column of the input ``x``
        (the scale of the stopping rule). Returns ``(sweeps, converged)``."""
        if self.n_sets == 1:
            for j in range(cur.shape[1]):
                self._sweep_vector(cur[:, j])
            return 1, True
        scale = tol * (1.0 + absmax)
        sweeps_max = 0
        all_ok = True
        if self.backend == "numba":
            x1 = np.empty(self.n)
            x2 = np.empty(self.n)
        for j in range(cur.shape[1]):
            col = cur[:, j]
            if self.backend == "numba":
                sweeps, ok = _fe_sweep.residualize_column(
                    col, self.code_array, self.offs, self.runs, self._w, self.inv_wsum_flat,
                    float(scale[j]), int(maxiter), x1, x2, self._sums)
            else:
                sweeps, ok = self._residualize_column_numpy(col, float(scale[j]), maxiter)
            sweeps_max = max(sweeps_max, int(sweeps))
            all_ok &= bool(ok)
        return sweeps_max, all_ok

    def _sweep_vector(self, v: np.ndarray) -> None:
        """One pass of ``(I - P_K)...(I - P_1)`` over one contiguous vector, in place."""
        if self.backend == "numba":
            _fe_sweep.sweep_into(v, v, self.code_array, self.offs, self.runs, self._w,
                                 self.inv_wsum_flat, self._sums)
            return
        for k, mat in enumerate(self.mats):
            means = mat @ v
            means *= self.inv_wsum_flat[self.offs[k]:self.offs[k + 1]]
            v -= means.take(self.code_array[k])

    def _residualize_column_numpy(self, cur: np.ndarray, scale: float, maxiter: int
                                  ) -> tuple[int, bool]:
        """Alternating projections with Irons & Tuck extrapolation on one column, in
        place (``cur`` is a contiguous view). Returns ``(sweeps, converged)``.

        One column at a time: each column is its own fixed-point problem (its own
        extrapolation coefficient and stopping rule). The oracle of
        :func:`._fe_sweep.residualize_column`."""
        x1 = np.empty_like(cur)
        x2 = np.empty_like(cur)
        sweeps = 0
        while sweeps < maxiter:
            x1[:] = cur
            self._sweep_vector(x1)
            x2[:] = x1
            self._sweep_vector(x2)
            sweeps += 2
            cur -= x1                       # cur <- x0 - x1 = -d1
            x1 -= x2                        # x1 <- x1 - x2 = -d2
            change = float(np.max(np.abs(x1)))
            if change <= scale:
                cur[:] = x2
                return sweeps, True
            cur -= x1                       # cur <- d2 - d1 = dd
            den = float(cur @ cur)
            num = -float(x1 @ cur)          # d2 . dd
            coef = num / den if den > 0 else 0.0
            x1 *= coef                      # -coef d2
            np.add(x2, x1, out=cur)         # x2 - coef d2
        return sweeps, False


def _singleton_mask(codes: Sequence[np.ndarray], keep: np.ndarray) -> np.ndarray:
    """Observations (among ``keep``) that are alone in a level of some FE set."""
    single = np.zeros(len(keep), dtype=bool)
    for c in codes:
        cnt = np.bincount(c[keep], minlength=int(c.max()) + 1)
        single |= keep & (cnt[c] == 1)
    return single


def drop_singletons_and_fe_separation(
    y: np.ndarray, fe_codes: Sequence[np.ndarray], *, singletons: bool = True,
    separation: bool = True, maxiter: int = 1000,
) -> tuple[np.ndarray, int, int, int]:
    """Iteratively flag singletons and FE-separated observations.

    An observation is *FE-separated* when some fixed-effect level containing it has only
    zero outcomes: the Poisson MLE of that level's effect is minus infinity and its
    observations carry no information about the slopes (Correia, Guimarães & Zylkin 2021,
    section 4.1). Removing rows can create new singletons / all-zero levels, so both
    checks repeat until nothing changes.

    Returns ``(keep, n_singleton, n_separated, rounds)`` with ``keep`` a boolean (n,) mask.
    """
    n = len(y)
    keep = np.ones(n, dtype=bool)
    n_single = n_sep = 0
    rounds = 0
    if not fe_codes:
        return keep, 0, 0, 0
    pos = y > 0
    changed = True
    while changed and rounds < maxiter:
        rounds += 1
        changed = False
        if separation:
            sep = np.zeros(n, dtype=bool)
            for c in fe_codes:
                g = int(c.max()) + 1
                n_pos = np.bincount(c[keep], weights=pos[keep].astype(float), minlength=g)
                sep |= keep & (n_pos[c] == 0)
            if sep.any():
                n_sep += int(sep.sum())
                keep &= ~sep
                changed = True
        if singletons:
            single = _singleton_mask(fe_codes, keep)
            if single.any():
                n_single += int(single.sum())
                keep &= ~single
                changed = True
    return keep, n_single, n_sep, rounds


def relu_separation(y: np.ndarray, x: np.ndarray, fe: WeightedFE | None, *,
                    tol: float = 1e-5, maxiter: int = 100,
                    fe_tol: float = 1e-10) -> tuple[np.ndarray, int, bool]:
    """Iterative rectifier check for separation (Correia, Guimarães & Zylkin 2021, s. 4.3).

    Find a linear combination ``z = X g + D a`` with ``z_i = 0`` where ``y_i > 0`` and
    ``z_i >= 0`` where ``y_i = 0``; observations with ``z_i > 0`` are separated (their
    conditional mean is zero at the pseudo-MLE). Algorithm: start from ``u = 1[y = 0]``,
    regress ``u`` on ``X`` and the fixed effects by least squares with weight ``M`` (large)
    on the ``y > 0`` rows and 1 on the others, set fitted values within ``tol`` of zero to
    zero, stop when all are ``>= 0``, else replace ``u`` by ``max(fitted, 0)`` on the
    ``y = 0`` rows and repeat.

    Parameters
    ----------
    y : (n,) outcome; x : (n, k) regressors (k may be 0); fe : projector on the same rows.

    Returns
    -------
    (separated, iterations, converged) with ``separated`` a boolean (n,) mask.
    """
    n = len(y)
    zero = y <= 0
    if not zero.any():
        return np.zeros(n, dtype=bool), 0, True
    n_pos = int((~zero).sum())
    big = max(n_pos, 1) / tol**2 if n_pos else 1.0
    omega = np.where(zero, 1.0, big)
    if fe is not None and fe.n_sets:
        fe.set_weights(omega)
    k = x.shape[1] if x.ndim == 2 else 0
    xt = x.reshape(n, k)
    if fe is not None and fe.n_sets and k:
        xt, _, _ = fe.residualize(xt, tol=fe_tol)
    xw = xt * omega[:, None]
    xtx = xw.T @ xt if k else np.zeros((0, 0))
    pinv = np.linalg.pinv(xtx) if k else xtx
    u = zero.astype(float)
    fe_part = None
    for it in range(1, maxiter + 1):
        if fe is not None and fe.n_sets:
            start = None if fe_part is None else (u - fe_part)[:, None]
            ut, _, _ = fe.residualize(u[:, None], start, tol=fe_tol)
            ut = ut[:, 0]
            fe_part = u - ut
        else:
            ut = u
        if k:
            b = pinv @ (xw.T @ ut)
            resid = ut - xt @ b
        else:
            resid = ut
        fitted = u - resid
        fitted[~zero] = 0.0
        fitted[np.abs(fitted) < tol] = 0.0
        if (fitted >= 0).all():
            return zero & (fitted > 0), it, True
        u = np.where(zero, np.maximum(fitted, 0.0), 0.0)
    return np.zeros(n, dtype=bool), maxiter, False


def poisson_deviance(y: np.ndarray, mu: np.ndarray, w: np.ndarray) -> float:
    """``2 sum w [y log(y/mu) - (y - mu)]`` (the y log y term is 0 at y = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(y > 0, y * np.log(y / mu), 0.0)
    return float(2.0 * np.sum(w * (t - (y - mu))))


@dataclass(frozen=True)
class PoissonFit:
    """Result of :func:`irls_poisson`.

    Attributes
    ----------
    coef : (k,) slopes (NaN for columns collinear with the fixed effects / each other)
    kept : (k,) bool, columns estimated
    bread : (r, r) ``(X~' W X~)^{-1}`` for the kept columns (r = kept.sum())
    scores : (n, r) ``X~_i w_i (y_i - mu_i)`` for the kept columns
    mu : (n,) fitted means; eta : (n,) linear predictor incl. offset
    deviance : float; iterations : int; converged : bool; crit : float (last deviance change)
    demean_sweeps : int, total alternating-projection sweeps; demean_converged : bool
    """

    coef: np.ndarray
    kept: np.ndarray
    bread: np.ndarray
    scores: np.ndarray
    mu: np.ndarray
    eta: np.ndarray
    deviance: float
    iterations: int
    converged: bool
    crit: float
    demean_sweeps: int
    demean_converged: bool


def _collinear(xt: np.ndarray, w: np.ndarray, ref_ss: np.ndarray, tol: float) -> np.ndarray:
    """Sequential (Cholesky-style) check: keep a column unless it is a combination of the
    earlier kept ones or of the fixed effects (its weighted residual sum of squares after
    both is below ``tol`` times its sum of squares before the FE sweep)."""
    k = xt.shape[1]
    xtx = (xt * w[:, None]).T @ xt
    kept = np.ones(k, dtype=bool)
    for j in range(k):
        idx = np.flatnonzero(kept[:j])
        rss = xtx[j, j]
        if len(idx):
            a = xtx[np.ix_(idx, idx)]
            b = xtx[idx, j]
            rss = rss - b @ np.linalg.lstsq(a, b, rcond=None)[0]
        if not rss > tol * max(ref_ss[j], 1e-300):
            kept[j] = False
    return kept


def irls_poisson(y: np.ndarray, x: np.ndarray, fe: WeightedFE | None, *,
                 weights: np.ndarray | None = None, offset: np.ndarray | None = None,
                 tol: float = 1e-8, maxiter: int = 100, fe_tol: float = 1e-10,
                 fe_maxiter: int = 10_000, collin_tol: float = 1e-10) -> PoissonFit:
    """Poisson pseudo-maximum likelihood by iteratively reweighted least squares.

    Model ``E[y_i | x_i, d_i] = exp(o_i + x_i'b + d_i'a)`` with fixed effects ``d_i'a``.
    Each iteration (Correia, Guimarães & Zylkin 2020, eqs. 8-10): working response
    ``z = eta - o + (y - mu)/mu``, weights ``W = w mu``; sweep the fixed effects out of
    ``[z, X]`` with weights ``W`` (warm-started); weighted least squares of ``z~`` on
    ``X~`` gives ``b`` and residual ``e``; the new linear predictor is ``z - e + o``.
    Stops when ``|dev - dev_old| / (0.1 + |dev|) < tol`` (fixest ``glm.tol``, ppmlhdfe
    ``tolerance``). If the deviance is not finite or rises, the step is halved (up to
    ten times).

    Shapes: ``y`` (n,), ``x`` (n, k) (k may be 0), ``weights``/``offset`` (n,).
    """
    n = len(y)
    k = x.shape[1]
    w = None if weights is None else np.asarray(weights, dtype=float)
    off = None if offset is None else np.asarray(offset, dtype=float)
    has_fe = fe is not None and fe.n_sets > 0
    ybar = float(np.mean(y) if w is None else np.sum(w * y) / np.sum(w))
    # Memory: besides y and x, seven vectors of size n (eta, mu and their next values,
    # the z column with its FE residual and FE part, one scratch) + 2 per regressor
    # (residual, FE part) + the projector's two scratch columns; no n x k temporaries
    # except the returned scores.
    mu = 0.5 * (y + ybar)
    eta = np.log(mu)  # starting linear predictor (incl. offset by construction)
    # deviance without logs: log(mu) = eta, and sum w [y log y - y] is a constant, so
    # dev = 2 (c0 - wy'eta + w'mu) -- two dot products per evaluation
    wy = y if w is None else w * y
    pos = y > 0
    c0 = float(np.dot(wy[pos], np.log(y[pos])) - np.sum(wy))
    del pos

    def deviance(eta_: np.ndarray, mu_: np.ndarray) -> float:
        return 2.0 * (c0 - float(wy @ eta_) + float(mu_.sum() if w is None else w @ mu_))

    dev_old = deviance(eta, mu)
    kept = np.ones(k, dtype=bool)
    cols = np.arange(k)                 # the regressors still in the model
    coef = np.full(k, np.nan)
    total_sweeps = 0
    dm_ok = True
    converged = False
    crit = np.inf
    bread = np.zeros((0, 0))
    b = np.zeros(0)
    big_w = mu
    it = 0
    # buffers reused across iterations (Fortran order: each column contiguous):
    # cur = [z, X] with the fixed effects swept out; fe_part = [z, X] - cur (warm start)
    z = np.empty(n)
    mu_next = np.empty(n)
    tmp = np.empty(n)
    cur = np.empty((n, 1 + k), order="F")
    fe_part = np.empty((n, 1 + k), order="F") if has_fe else None
    x_absmax = np.array([np.max(np.abs(x[:, j])) for j in range(k)])
    # ppmlhdfe-style adaptive inner tolerance: loose while the deviance still moves, never
    # looser than 1e-4 nor tighter than fe_tol; convergence is only declared at fe_tol.
    inner_tol = max(fe_tol, 1e-4)
    for it in range(1, maxiter + 1):
        np.divide(y, mu, out=z)          # z = eta - o + (y - mu) / mu
        z -= 1.0
        z += eta
        if off is not None:
            z -= off
        big_w = mu if w is None else w * mu
        if has_fe:
            fe.set_weights(big_w)
            if it == 1:
                cur[:, 0] = z
                for jj, j in enumerate(cols):
                    cur[:, 1 + jj] = x[:, j]
            else:
                np.subtract(z, fe_part[:, 0], out=cur[:, 0])
                for jj, j in enumerate(cols):
                    np.subtract(x[:, j], fe_part[:, 1 + jj], out=cur[:, 1 + jj])
            absmax = np.concatenate([[np.max(np.abs(z))], x_absmax])
            sweeps, ok = fe.residualize_inplace(cur, absmax, tol=inner_tol,
                                                maxiter=fe_maxiter)
            total_sweeps += sweeps
            dm_ok &= ok
            np.subtract(z, cur[:, 0], out=fe_part[:, 0])
            for jj, j in enumerate(cols):
                np.subtract(x[:, j], cur[:, 1 + jj], out=fe_part[:, 1 + jj])
        else:
            cur[:, 0] = z
            for jj, j in enumerate(cols):
                cur[:, 1 + jj] = x[:, j]
        if it == 1 and k:
            # collinearity with the FE / other regressors, judged once at the start
            xm = x - (x.mean(axis=0) if w is None else (w @ x) / w.sum())
            ref_ss = np.einsum("i,ij,ij->j", big_w, xm, xm)
            del xm
            kept = _collinear(cur[:, 1:], big_w, ref_ss, collin_tol)
            if not kept.all():
                sel = np.r_[True, kept]
                cols = cols[kept]
                x_absmax = x_absmax[kept]
                cur = np.asfortranarray(cur[:, sel])
                if fe_part is not None:
                    fe_part = np.asfortranarray(fe_part[:, sel])
        zt, xt = cur[:, 0], cur[:, 1:]
        kk = xt.shape[1]
        xtx = np.empty((kk, kk))
        xtz = np.empty(kk)
        for a_ in range(kk):             # X~'W X~ and X~'W z~ one column at a time
            np.multiply(xt[:, a_], big_w, out=tmp)
            xtx[a_] = tmp @ xt
            xtz[a_] = tmp @ zt
        b = np.linalg.solve(xtx, xtz) if kk else np.zeros(0)
        eta_new = z                      # z - e with e = zt - xt b, in z's buffer
        eta_new -= zt
        for a_ in range(kk):
            np.multiply(xt[:, a_], b[a_], out=tmp)
            eta_new += tmp
        if off is not None:
            eta_new += off
        np.clip(eta_new, -ETA_MAX, ETA_MAX, out=eta_new)
        mu_new = np.exp(eta_new, out=mu_next)
        dev = deviance(eta_new, mu_new)
        halvings = 0
        while (not np.isfinite(dev) or dev > dev_old * (1 + 1e-8) + 1e-12) and it > 1 \
                and halvings < 10:
            halvings += 1
            eta_new += eta
            eta_new *= 0.5
            np.exp(eta_new, out=mu_new)
            dev = deviance(eta_new, mu_new)
        crit = abs(dev - dev_old) / (0.1 + abs(dev))
        # rotate buffers: the old eta becomes next z; the old mu (= this iteration's
        # weights when unweighted, needed for the scores) becomes next mu_new
        z, eta = eta, eta_new
        mu_next, mu = mu, mu_new
        dev_old = dev
        coef = np.full(k, np.nan)
        coef[kept] = b
        bread = np.linalg.inv(xtx) if kk else xtx
        if crit < tol and (inner_tol <= fe_tol or not has_fe):
            converged = True
            break
        inner_tol = max(fe_tol, min(inner_tol, 0.01 * crit))
    # residual of the last weighted least squares and scores with the weights of the last
    # iteration (as fixest / pyfixest); big_w still holds them (mu_next when unweighted)
    del z, fe_part
    e = np.subtract(cur[:, 0], xt @ b if xt.shape[1] else 0.0, out=tmp)
    e *= big_w
    scores = xt * e[:, None]
    del cur, xt, zt, tmp, e
    dev_old = poisson_deviance(y, mu, np.ones(n) if w is None else w)  # reported, with logs
    return PoissonFit(coef=coef, kept=kept, bread=bread, scores=scores, mu=mu, eta=eta,
                      deviance=float(dev_old), iterations=it, converged=converged,
                      crit=float(crit), demean_sweeps=total_sweeps, demean_converged=dm_ok)
