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
* :func:`simplex_separation` finds separation by the regressors given the fixed effects
  (section 4.2; a linear program on the regressors' null space over the ``y > 0`` rows).
* :func:`relu_separation` is the iterative rectifier ("ReLU") check of Correia,
  Guimarães & Zylkin (2021, section 4.3) for separation by regressors and fixed effects
  jointly (weighted least squares by LSMR, as ppmlhdfe; candidate certificates verified).
* :func:`lp_separation` is the definition as one linear program (exact; the fallback when
  the ReLU iterations do not finish on a modest sample).
* :func:`find_separation` runs them in ppmlhdfe's order (``separation(fe simplex relu)``).
* :func:`irls_poisson` is the IRLS loop of Correia, Guimarães & Zylkin (2020, "Fast
  Poisson estimation with high-dimensional fixed effects", Stata Journal 20(1)), with the
  deviance-change stopping rule of fixest / ppmlhdfe and step-halving.

References
----------
Correia, S., Guimarães, P., & Zylkin, T. (2020). Fast Poisson estimation with
high-dimensional fixed effects. *Stata Journal*, 20(1), 95-115.
Correia, S., Guimarães, P., & Zylkin, T. (2021). Verifying the existence of maximum
likelihood estimates for generalized linear models. arXiv:1903.01633.
Fong, D. C.-L., & Saunders, M. (2011). LSMR: an iterative algorithm for sparse
least-squares problems. *SIAM J. Sci. Comput.* 33(5), 2950-2971.
Gaure, S. (2013). OLS with multiple high dimensional category variables. *CSDA* 66, 8-18.
Van Loan, C. (1985). On the method of weighting for equality-constrained least-squares
problems. *SIAM J. Numer. Anal.* 22(5), 851-864.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import optimize, sparse
from scipy.sparse.linalg import LinearOperator, lsmr

from ..core.unitorder import gather, should_order, sort_codes, wide_enough


def _kernels():
    """The compiled kernels (:mod:`._fe_sweep`), imported on first use: importing numba
    costs ~57 MB of RSS and a fraction of a second, which a process that never fits a
    Poisson model with fixed effects should not pay."""
    from . import _fe_sweep

    return _fe_sweep

__all__ = [
    "PoissonFit",
    "ReluCheck",
    "SeparationCheck",
    "WeightedFE",
    "collinearity_reference",
    "drop_singletons_and_fe_separation",
    "find_separation",
    "fit_order",
    "irls_poisson",
    "lp_separation",
    "permute_rows",
    "poisson_deviance",
    "relu_separation",
    "simplex_separation",
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
        self.runs = _kernels().run_sets(self.code_array)
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
            _kernels().level_sums(self.code_array, self.offs, self.runs, self._w, wsum)
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
        sweeps, ok = self.residualize_inplace(cur, _kernels().col_absmax(np.asfortranarray(x)),
                                              tol=tol, maxiter=maxiter)
        return np.ascontiguousarray(cur), sweeps, ok

    def residualize_inplace(self, cur: np.ndarray, absmax: np.ndarray, *, tol: float,
                            maxiter: int, scratch: tuple[np.ndarray, np.ndarray] | None = None
                            ) -> tuple[int, bool]:
        """:meth:`residualize` on a Fortran-ordered (n, k) array ``cur`` holding the start,
        overwritten by the result; ``absmax`` = ``max|x|`` per column of the input ``x``
        (the scale of the stopping rule). ``scratch``: two contiguous float (n,) arrays
        the compiled path may overwrite (its two sweep columns), none of them ``cur``'s
        columns or the weights; without them two are allocated per call -- at 1e7 rows
        two fresh 80 MB mappings per IRLS iteration (glibc maps anything above 32 MB anew
        and the kernel zeroes its pages). Returns ``(sweeps, converged)``."""
        if self.n_sets == 1:
            for j in range(cur.shape[1]):
                self._sweep_vector(cur[:, j])
            return 1, True
        scale = tol * (1.0 + absmax)
        sweeps_max = 0
        all_ok = True
        if self.backend == "numba":
            x1, x2 = (np.empty(self.n), np.empty(self.n)) if scratch is None else scratch
        for j in range(cur.shape[1]):
            col = cur[:, j]
            if self.backend == "numba":
                sweeps, ok = _kernels().residualize_column(
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
            _kernels().sweep_into(v, v, self.code_array, self.offs, self.runs, self._w,
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


#: ``always`` / ``never`` overrides :func:`fit_order`'s choice (tests, A/B runs)
ORDER_ENV = "TWINIMPACT_PPML_ORDER"
#: fewest rows for which :func:`fit_order` orders the fit's rows
ORDER_MIN_ROWS = 1 << 18
#: fewest levels of the largest fixed-effect set for which it does. Measured on the
#: gravity spot-check panels (benchmarks/RESULTS.md "PPML's rows in pair order", run PO5:
#: CPU of the whole ``ppml`` call ordered / not, child processes): exporter-year,
#: importer-year and pair sets: 9,900 pairs (1.9e5 rows) 1.10, 14,280 (2.6e5) 1.01,
#: 22,350 (4.1e5) 0.93, 52,670 (9.8e5) 0.84; importer-year and pair: 22,350 pairs 0.94,
#: 52,670 0.86
ORDER_MIN_LEVELS = 1 << 14


def fit_order(code_array: np.ndarray) -> tuple[np.ndarray, int, np.ndarray] | None:
    """The order in which the projections should read the rows, or None (keep theirs).

    Every sweep gathers each row's level mean and adds the row into its level's sum, for
    every set. With rows in random order and a set of many levels (the pairs of a
    gravity panel: 4 MB of sums at 5e5 pairs) each of those is a cache miss. Sorting the
    rows by the codes of the set with the most levels (a stable counting sort,
    :func:`~twinimpact.core.unitorder.sort_codes`) makes that set's reads sequential;
    :func:`permute_rows` then numbers the other sets' levels in order of first
    appearance, so that the levels a run of rows meets (a pair's exporter-years) sit
    next to each other in their tables. Done when there are two sets or more, the
    largest has at least :data:`ORDER_MIN_LEVELS` levels, the fit at least
    :data:`ORDER_MIN_ROWS` rows, and its codes fall often between neighbouring rows
    (:func:`~twinimpact.core.unitorder.should_order`: rows sorted by that set, or by
    period then pair, are left as they are). :data:`ORDER_ENV` overrides.

    ``code_array``: (K, n) dense codes. Returns ``(perm, k, sorted_codes)``: row ``i``
    of the ordered fit is row ``perm[i]`` (int32) of the given one, ``k`` the set
    ordered by, ``sorted_codes`` (int64) its codes in the new order."""
    n_sets, n = code_array.shape
    if n_sets == 0 or n == 0 or n >= 2**31:
        return None
    force = os.environ.get(ORDER_ENV, "").strip().lower() == "always"
    if n_sets == 1 and not force:
        # one set: its projection is exact in one sweep, a few passes per iteration,
        # about what the sort, the gathers and the fitted means' return cost (whole call
        # 1.00 / 1.02 at 4.1e5 / 1.9e6 rows, pairs only, run PO5)
        return None
    sizes = [int(c.max()) + 1 for c in code_array]
    k = int(np.argmax(sizes))
    if not (should_order(code_array[k], env=ORDER_ENV, min_rows=ORDER_MIN_ROWS)
            and wide_enough(sizes[k], env=ORDER_ENV, min_units=ORDER_MIN_LEVELS)):
        return None
    perm, sorted_codes, _ = sort_codes(code_array[k].astype(np.int64), sizes[k])
    return perm, k, sorted_codes


def permute_rows(order: tuple[np.ndarray, int, np.ndarray], code_array: np.ndarray,
                 columns: Sequence[np.ndarray], out: Sequence[np.ndarray]) -> np.ndarray:
    """The rows of a fit in the order :func:`fit_order` gave: ``columns`` (1-d arrays of
    n rows, any stride) gathered into ``out`` (contiguous, not the inputs) and the
    codes of the other sets in one pass (:func:`~twinimpact.core.unitorder.gather`:
    random reads overlap, a third of the time of one gather per array), the ordered
    set's codes from the sort. Returns the new (K, n) codes, every set renumbered in
    order of first appearance (the ordered set's codes, already rising, keep their
    numbers): the same partition of the rows into levels, so the same fit, with the
    per-level tables stored in another order."""
    perm, k, sorted_codes = order
    new = np.empty_like(code_array)
    others = [m for m in range(code_array.shape[0]) if m != k]
    gather(perm, [*columns, *(code_array[m] for m in others)],
           [*out, *(new[m] for m in others)])
    np.copyto(new[k], sorted_codes, casting="unsafe")
    for m in others:
        _kernels().renumber_first_seen(new[m], int(new[m].max()) + 1)
    return new


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
    # per set and level, the kept rows (cnt) and kept positive rows (npos): counted once
    # over all rows, then the rows of each drop are subtracted. Integer counts, the same
    # as counting the kept rows afresh each round, without its n-row temporaries (the
    # gathered codes, float weights and per-row counts: five fresh mappings per set and
    # round at 1e7 rows); per row only boolean masks remain.
    sizes = [int(c.max()) + 1 for c in fe_codes]
    cnt = [np.bincount(c, minlength=g) for c, g in zip(fe_codes, sizes, strict=True)]
    npos = [np.bincount(c[pos], minlength=g) for c, g in zip(fe_codes, sizes, strict=True)] \
        if separation else []

    def drop(mask: np.ndarray) -> None:
        keep[mask] = False
        mpos = mask & pos if separation else None
        for k, (c, g) in enumerate(zip(fe_codes, sizes, strict=True)):
            cnt[k] -= np.bincount(c[mask], minlength=g)
            if separation:
                npos[k] -= np.bincount(c[mpos], minlength=g)

    changed = True
    while changed and rounds < maxiter:
        rounds += 1
        changed = False
        if separation:
            sep = np.zeros(n, dtype=bool)
            for c, npk in zip(fe_codes, npos, strict=True):
                sep |= (npk == 0)[c]
            sep &= keep
            if sep.any():
                n_sep += int(sep.sum())
                drop(sep)
                changed = True
        if singletons:
            single = np.zeros(n, dtype=bool)
            for c, ck in zip(fe_codes, cnt, strict=True):
                single |= (ck == 1)[c]
            single &= keep
            if single.any():
                n_single += int(single.sum())
                drop(single)
                changed = True
    return keep, n_single, n_sep, rounds


#: Weight of the ``y > 0`` rows in the ReLU regressions (the "method of weighting" for least
#: squares with equality constraints): ``ceil(eps ** -1/2)``, Van Loan's (1985) rule of thumb,
#: the value ppmlhdfe uses (``solve_lse`` in ppmlhdfe_functions.mata).
RELU_WEIGHT = float(np.ceil(np.finfo(float).eps ** -0.5))


@dataclass(frozen=True)
class ReluCheck:
    """Result of :func:`relu_separation`.

    separated : (n,) bool mask; iterations : int; converged : bool (a stopping rule was met
    and every least-squares solve converged); stop : the rule that ended the loop
    (``"no negative fitted value"``, ``"no negative residual"``, ``"maxiter"``,
    ``"no zero outcome"`` or ``"least squares not converged"``); delta : the last zero
    band; lsmr_iterations : total LSMR iterations.
    """

    separated: np.ndarray
    iterations: int
    converged: bool
    stop: str
    delta: float
    lsmr_iterations: int


class _ScaledDesign(LinearOperator):
    """``diag(sqrt(w)) [X, D_1, ..., D_K] diag(1/c)`` as a matrix-free operator (``D_k`` the
    indicator matrix of fixed-effect set ``k``, ``c`` the weighted column norms: the Jacobi
    preconditioner). Products are one compiled pass per set (gather, resp. group sums) --
    no sparse copy of the design, so memory stays O(n)."""

    def __init__(self, x: np.ndarray, codes: Sequence[np.ndarray], w: np.ndarray) -> None:
        n = len(w)
        self.x = x
        self.k = x.shape[1]
        sizes = [int(np.max(c)) + 1 if n else 0 for c in codes]
        self.offs = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self.offs[1:])
        ctype = np.int32 if max(sizes, default=0) < 2**31 - 1 else np.int64
        self.codes = np.empty((len(sizes), n), dtype=ctype)
        for k, c in enumerate(codes):
            self.codes[k] = c
        self.runs = _kernels().run_sets(self.codes)
        self._sums = np.empty(int(self.offs[-1]))
        super().__init__(dtype=np.float64, shape=(n, self.k + int(self.offs[-1])))
        self._weigh(w)

    def _weigh(self, w: np.ndarray) -> None:
        self.sw = np.sqrt(w)
        x = self.x
        cx = np.sqrt(np.einsum("i,ij,ij->j", w, x, x)) if self.k else np.zeros(0)
        _kernels().level_sums(self.codes, self.offs, self.runs,
                             np.ascontiguousarray(w, dtype=float), self._sums)
        norms = np.concatenate([cx, np.sqrt(self._sums)])
        self.inv = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)

    def reweighted(self, w: np.ndarray) -> _ScaledDesign:
        """The same design under weights ``w`` (the codes are shared, not copied)."""
        out = copy.copy(self)
        out._sums = np.empty_like(self._sums)
        out._weigh(w)
        return out

    def design(self, v: np.ndarray) -> np.ndarray:
        """``[X, D] diag(1/c) v`` (unweighted fitted values)."""
        v = np.asarray(v).reshape(-1) * self.inv
        out = self.x @ v[:self.k] if self.k else np.zeros(self.shape[0])
        if len(self.codes):
            _kernels().add_level_values(self.codes, self.offs, v[self.k:], out)
        return out

    def _matvec(self, v: np.ndarray) -> np.ndarray:
        return self.sw * self.design(v)

    def _rmatvec(self, r: np.ndarray) -> np.ndarray:
        rs = self.sw * np.asarray(r).reshape(-1)
        out = np.empty(self.shape[1])
        if self.k:
            out[:self.k] = self.x.T @ rs
        _kernels().level_sums(self.codes, self.offs, self.runs, rs, self._sums)
        out[self.k:] = self._sums
        return out * self.inv


def _is_certificate(op: _ScaledDesign, c: np.ndarray, delta: float, tol: float,
                    maxiter: int) -> tuple[bool, int]:
    """Is ``c`` (>= 0, 0 on the ``y > 0`` rows) a combination of the regressors and fixed
    effects, to within ``delta * max(c)``? Unweighted least squares of ``c`` on the design
    (well conditioned). Returns ``(holds, lsmr iterations)``; an all-zero ``c`` holds."""
    top = float(c.max(initial=0.0))
    if top <= 0:
        return True, 0
    sol, istop, itn = lsmr(op, op.sw * c, atol=tol, btol=tol, conlim=1e16,
                           maxiter=maxiter)[:3]
    gap = float(np.max(np.abs(c - op.design(sol))))
    return istop != 7 and gap <= delta * top, int(itn)


def relu_separation(y: np.ndarray, x: np.ndarray, fe_codes: Sequence[np.ndarray], *,
                    tol: float = 1e-4, zero_tol: float = 1e-8, maxiter: int = 100,
                    lsmr_tol: float = 1e-10, lsmr_maxiter: int = 10_000,
                    weight: float = RELU_WEIGHT) -> ReluCheck:
    """Iterative rectifier check for separation (Correia, Guimarães & Zylkin 2021, s. 4.3).

    Looks for ``z = X g + D a`` with ``z_i = 0`` where ``y_i > 0`` and ``z_i >= 0`` where
    ``y_i = 0``; zero-outcome rows with ``z_i > 0`` are separated (their mean is 0 at the
    pseudo-MLE). Start from ``u = 1[y = 0]``; each iteration regresses ``u`` on ``X`` and
    the fixed effects by least squares with weight ``weight`` on the ``y > 0`` rows and 1
    on the others (equality constraints by the method of weighting), giving fitted values
    ``f``; then, as ppmlhdfe's ``relu_fix_separation``:

    * the zero band is ``delta = tol + eps`` with ``eps = max(u'u / weight * r^2, 1e-8)``
      the error the finite weight allows (``r`` = ratio of the 1-norms of ``X`` on the
      zero and positive rows, at least 1); ``f`` is set to 0 on the ``y > 0`` rows and
      where ``-0.1 delta <= f <= delta`` -- stricter below zero, so that a small negative
      value is not taken for 0 while non-separated rows still carry positive values;
    * stop if every ``f >= 0`` on the zero rows: rows with ``f > 0`` are separated;
    * stop if no residual ``u - f`` is negative on the zero rows (after setting
      ``|residual| < zero_tol`` to 0): by the normal equations ``z'e = 0`` for any
      certificate ``z``, so rows with a positive residual (``> delta``) cannot be
      separated and the other rows with ``f > 0`` are;
    * otherwise ``u = max(f, 0)`` on the zero rows and repeat (``maxiter`` times).

    Before either stop flags a row, the candidate certificate (``f``, resp. ``max(f, 0)``
    without the positive-residual rows) is checked to be a combination of the regressors
    and fixed effects to within ``delta`` (unweighted least squares); if it is not, the
    iterations go on. ppmlhdfe stops without this check, and its second rule then
    flags rows that are not separated on some small random designs (residual zero is
    necessary for separation, not sufficient): the certificates it rejects miss the span
    by 0.2-0.5, the valid ones by less than 1e-5.

    The weighted least squares are solved by LSMR (Fong & Saunders 2011) on the
    column-scaled design, warm-started from the previous iteration, as ppmlhdfe does
    ("LSMR ... works better for ill-conditioned matrices"): the weights span eight orders
    of magnitude, and alternating projections then stall far from the solution (their
    per-sweep change falls below any tolerance long before they converge).

    Parameters
    ----------
    y : (n,) outcome; x : (n, k) regressors (k may be 0); fe_codes : dense codes of each
    fixed-effect set on the same rows (a model with an intercept and no fixed effects
    passes one all-zero code array). Defaults are ppmlhdfe's: ``relu_tol(1e-4)``,
    ``relu_zero_tol(1e-8)``, ``relu_maxiter(100)``.
    """
    n = len(y)
    zero = y <= 0
    none = np.zeros(n, dtype=bool)
    if not zero.any():
        return ReluCheck(none, 0, True, "no zero outcome", tol, 0)
    x = np.asarray(x, dtype=float).reshape(n, -1)
    k = x.shape[1]
    if k == 0 and not fe_codes:
        return ReluCheck(none, 0, True, "no regressor", tol, 0)
    ratio = 1.0
    if k and (~zero).any():
        a_pos = float(np.abs(x[~zero]).sum(axis=0).max())
        a_zero = float(np.abs(x[zero]).sum(axis=0).max())
        ratio = max(a_zero / a_pos, 1.0) if a_pos > 0 else 1.0
    op = _ScaledDesign(x, fe_codes, np.where(zero, 1.0, weight))
    plain: list[_ScaledDesign] = []  # unweighted design, built on the first check

    def is_certificate(c: np.ndarray) -> tuple[bool, int]:
        if not (c > 0).any():
            return True, 0
        if not plain:
            plain.append(op.reweighted(np.ones(n)))
        return _is_certificate(plain[0], c, delta, lsmr_tol, lsmr_maxiter)
    u = zero.astype(float)
    sol = None
    total = 0
    delta = tol
    for it in range(1, maxiter + 1):
        sol, istop, itn = lsmr(op, op.sw * u, atol=lsmr_tol, btol=lsmr_tol, conlim=1e16,
                               maxiter=lsmr_maxiter, x0=sol)[:3]
        total += int(itn)
        if istop == 7:  # iteration limit
            return ReluCheck(none, it, False, "least squares not converged", delta, total)
        fitted = op.design(sol)
        resid = u - fitted
        eps = max(float(u @ u) / weight * ratio**2, 1e-8)
        delta = eps + tol
        fitted[~zero] = 0.0
        fitted[(fitted >= -0.1 * delta) & (fitted <= delta)] = 0.0
        if (fitted >= 0).all():
            ok, n_ls = is_certificate(fitted)
            total += n_ls
            if ok:
                return ReluCheck(zero & (fitted > 0), it, True, "no negative fitted value",
                                 delta, total)
        resid[np.abs(resid) < zero_tol] = 0.0
        if resid[zero].min() >= 0:
            cert = np.where(zero & (resid <= delta), np.maximum(fitted, 0.0), 0.0)
            ok, n_ls = is_certificate(cert)
            total += n_ls
            if ok:
                return ReluCheck(zero & (cert > 0), it, True, "no negative residual", delta,
                                 total)
        u = np.where(zero, np.maximum(fitted, 0.0), 0.0)
    return ReluCheck(none, maxiter, False, "maxiter", delta, total)


def simplex_separation(y: np.ndarray, x: np.ndarray, fe_codes: Sequence[np.ndarray], *,
                       collin_tol: float = 1e-10, zero_tol: float = 1e-9,
                       fe_tol: float = 1e-12) -> tuple[np.ndarray, bool]:
    """Separation by the regressors (given the fixed effects): the "simplex" check of
    Correia, Guimarães & Zylkin (2021, section 4.2) and ppmlhdfe's
    ``simplex_fix_separation``.

    Sweep the fixed effects out of ``X`` using only the ``y > 0`` rows (weights
    ``1[y > 0]``; every level has such rows once the fixed-effect check has run), giving
    ``X~`` on all rows. If ``X~`` has full column rank on the ``y > 0`` rows there is no
    separation of this kind (the usual, cheap exit: one sweep and a k x k Gram matrix).
    Otherwise, with ``N`` a basis of the null space of ``X~`` on those rows, any
    ``z = X~ N d`` is a combination of regressors and fixed effects that is 0 on every
    ``y > 0`` row; separated rows are the zero-outcome rows where some such ``z >= 0`` is
    positive. The largest such set solves the linear program ``max sum t`` subject to
    ``0 <= t_i <= (Z d)_i``, ``t_i <= 1`` (``Z`` = ``X~ N`` on the zero rows; the cone of
    certificates is closed under sums and scaling, so ``t_i = 1`` exactly on that set),
    solved by the HiGHS simplex solver instead of ppmlhdfe's hand-written tableau.

    Returns ``(separated, ok)`` (``ok`` False if the linear program failed; nothing
    flagged then).
    """
    n = len(y)
    none = np.zeros(n, dtype=bool)
    x = np.asarray(x, dtype=float).reshape(n, -1)
    k = x.shape[1]
    pos = y > 0
    if k == 0 or pos.all() or not pos.any():
        return none, True
    if fe_codes:
        fe = WeightedFE(fe_codes)
        fe.set_weights(pos.astype(float))
        xt, _, ok = fe.residualize(x, tol=fe_tol)
        if not ok:
            return none, False
    else:
        xt = x
    scale = np.sqrt(np.einsum("ij,ij->j", x[pos], x[pos]))
    scale = np.where(scale > 0, scale, 1.0)
    xs = xt / scale
    gram = xs[pos].T @ xs[pos]
    evals, evecs = np.linalg.eigh(gram)
    null = evecs[:, evals <= collin_tol * max(1.0, float(evals.max(initial=0.0)))]
    if null.shape[1] == 0:
        return none, True
    z = xs[~pos] @ null
    zmax = np.abs(z).max(axis=0)
    keep_cols = zmax > zero_tol
    if not keep_cols.any():
        return none, True
    z = z[:, keep_cols] / zmax[keep_cols]
    z[np.abs(z) < zero_tol] = 0.0
    rows = np.flatnonzero((z != 0).any(axis=1))
    if len(rows) == 0:
        return none, True
    zr = z[rows]
    m, nr = zr.shape[1], len(rows)
    a_ub = sparse.hstack([sparse.csr_matrix(-zr), sparse.identity(nr, format="csr")],
                         format="csr")
    res = optimize.linprog(np.r_[np.zeros(m), -np.ones(nr)], A_ub=a_ub, b_ub=np.zeros(nr),
                           bounds=[(None, None)] * m + [(0.0, 1.0)] * nr, method="highs")
    if res.status != 0:
        return none, False
    sep_rows = rows[res.x[m:] > 0.5]
    out = none.copy()
    out[np.flatnonzero(~pos)[sep_rows]] = True
    return out, True


def lp_separation(y: np.ndarray, x: np.ndarray, fe_codes: Sequence[np.ndarray]
                  ) -> tuple[np.ndarray, bool]:
    """Separated rows as the exact solution of one linear program (the definition itself,
    Correia, Guimarães & Zylkin 2021, section 3): with ``A = [X, D]`` (sparse indicator
    columns), ``max sum t`` subject to ``A_+ g = 0``, ``0 <= t_i <= (A_0 g)_i``,
    ``t_i <= 1`` on the zero rows; the certificates form a cone closed under sums, so
    ``t_i = 1`` exactly on the separated rows. Exact but a full LP in ``n`` rows: the
    fallback when the ReLU iterations do not finish on a modest sample.

    Returns ``(separated, ok)``.
    """
    n = len(y)
    x = np.asarray(x, dtype=float).reshape(n, -1)
    blocks = [sparse.csr_matrix(x)] if x.shape[1] else []
    for c in fe_codes:
        c = np.asarray(c, dtype=np.intp)
        blocks.append(sparse.csr_matrix((np.ones(n), (np.arange(n), c)),
                                        shape=(n, int(c.max()) + 1)))
    a = sparse.hstack(blocks, format="csr")
    # column scaling keeps the LP well conditioned
    norms = np.sqrt(np.asarray(a.multiply(a).sum(axis=0)).ravel())
    a = a @ sparse.diags(np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0))
    pos = y > 0
    zero_idx = np.flatnonzero(~pos)
    p, n0 = a.shape[1], len(zero_idx)
    out = np.zeros(n, dtype=bool)
    if n0 == 0:
        return out, True
    a_ub = sparse.hstack([-a[zero_idx], sparse.identity(n0, format="csr")], format="csr")
    a_eq = sparse.hstack([a[np.flatnonzero(pos)], sparse.csr_matrix((int(pos.sum()), n0))],
                         format="csr") if pos.any() else None
    res = optimize.linprog(np.r_[np.zeros(p), -np.ones(n0)], A_ub=a_ub, b_ub=np.zeros(n0),
                           A_eq=a_eq, b_eq=None if a_eq is None else np.zeros(a_eq.shape[0]),
                           bounds=[(None, None)] * p + [(0.0, 1.0)] * n0, method="highs")
    if res.status != 0:
        return out, False
    out[zero_idx[res.x[p:] > 0.5]] = True
    return out, True


@dataclass(frozen=True)
class SeparationCheck:
    """Result of :func:`find_separation`: ``keep`` (n,) bool; ``counts`` with keys
    ``singleton``, ``fe``, ``simplex``, ``relu``, ``lp`` (rows dropped by each step); ``relu`` the
    last :class:`ReluCheck` (None when not run); ``simplex_ok`` False if its LP failed;
    ``relu_rounds`` how many times the ReLU check ran."""

    keep: np.ndarray
    counts: dict
    relu: ReluCheck | None
    simplex_ok: bool
    relu_rounds: int = 0


def find_separation(y: np.ndarray, x: np.ndarray, fe_codes: Sequence[np.ndarray], *,
                    singletons: bool = True, methods: Sequence[str] = ("fe", "simplex", "relu"),
                    relu_tol: float = 1e-4, relu_maxiter: int = 100,
                    relu_rounds: int = 10, lp_max_rows: int = 20_000) -> SeparationCheck:
    """Singletons and separated rows, in ppmlhdfe's order (``separation(fe simplex relu)``,
    its default): (1) singletons and fixed-effect levels whose outcomes are all zero,
    iteratively; (2) :func:`simplex_separation`; (3) :func:`relu_separation`; after (2) and
    (3) the new singletons are trimmed (ppmlhdfe's ``trim_separated_obs``). Dropping
    zero-outcome rows cannot create an all-zero level, and a singleton's own level leaves
    its row unconstrained, so the fixed-effect and simplex checks need no second pass.
    The ReLU check is repeated on the rows left until it finds nothing (at most
    ``relu_rounds`` times): a row whose certificate value falls inside the zero band next
    to rows with large values is found once those are gone (ppmlhdfe runs it once).
    If the ReLU iterations do not finish (``relu_maxiter``) on at most ``lp_max_rows``
    rows, :func:`lp_separation` decides instead (counted as ``lp``); on more rows the
    caller warns that separation may remain.
    """
    n = len(y)
    x = np.asarray(x, dtype=float).reshape(n, -1)
    keep = np.ones(n, dtype=bool)
    counts = {"singleton": 0, "fe": 0, "simplex": 0, "relu": 0, "lp": 0}
    use_fe = "fe" in methods

    def trim() -> None:
        if not fe_codes or not (singletons or use_fe):
            return
        full = keep.all()
        k2, ns, nsep, _ = drop_singletons_and_fe_separation(
            y if full else y[keep], fe_codes if full else [c[keep] for c in fe_codes],
            singletons=singletons, separation=use_fe)
        counts["singleton"] += ns
        counts["fe"] += nsep
        keep[np.flatnonzero(keep)[~k2]] = False

    def dense(c: np.ndarray) -> np.ndarray:  # codes of the levels left, 0..G'-1
        present = np.bincount(c, minlength=int(c.max()) + 1 if len(c) else 0) > 0
        return c if present.all() else (np.cumsum(present) - 1).astype(np.intp).take(c)

    def sample() -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """The rows left (the caller's arrays themselves while none is dropped)."""
        if keep.all():
            return y, x, [dense(c) for c in fe_codes]
        return y[keep], x[keep], [dense(c[keep]) for c in fe_codes]

    trim()
    simplex_ok = True
    if "simplex" in methods and x.shape[1] and (y[keep] <= 0).any():
        sep, simplex_ok = simplex_separation(*sample())
        if sep.any():
            counts["simplex"] += int(sep.sum())
            keep[np.flatnonzero(keep)[sep]] = False
            trim()
    relu = None
    rounds = 0
    while "relu" in methods and (y[keep] <= 0).any() and rounds < relu_rounds:
        rounds += 1
        relu = relu_separation(*sample(), tol=relu_tol, maxiter=relu_maxiter)
        sep = relu.separated
        if not relu.converged and keep.sum() <= lp_max_rows:
            sep, lp_ok = lp_separation(*sample())
            if lp_ok:
                counts["lp"] += int(sep.sum())
                keep[np.flatnonzero(keep)[sep]] = False
                trim()
                relu = dataclasses.replace(relu, converged=True,
                                           stop=relu.stop + "; exact linear program used")
            break
        if not sep.any():
            break
        counts["relu"] += int(sep.sum())
        keep[np.flatnonzero(keep)[sep]] = False
        trim()
    return SeparationCheck(keep, counts, relu, simplex_ok, rounds)


def poisson_deviance(y: np.ndarray, mu: np.ndarray, w: np.ndarray | None,
                     out: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """``2 sum w [y log(y/mu) - (y - mu)]`` (the y log y term is 0 at y = 0; ``w`` None =
    equal weights). ``out``: two float (n,) arrays to compute in (overwritten), else two
    are allocated; the same terms, operations and sum either way."""
    t, d = (np.empty(len(y)), np.empty(len(y))) if out is None else out
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(y, mu, out=t)
        np.log(t, out=t)
        t *= y
    np.copyto(t, 0.0, where=~(y > 0))
    t -= np.subtract(y, mu, out=d)
    if w is not None:
        t *= w
    return float(2.0 * np.sum(t))


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


def collinearity_reference(x: np.ndarray, w: np.ndarray, floor: float = 1e-8) -> np.ndarray:
    """Per column, the weighted sum of squares a column's residual is compared with in the
    collinearity checks: about its weighted mean, but at least ``floor`` times the sum of
    squares about zero. Without the floor a constant column (in the span of any fixed
    effect) had reference 0 -- or rounding noise -- and was kept, and its swept column of
    zeros made the IRLS normal equations singular."""
    x = np.asarray(x, dtype=float)
    xm = x - (w @ x) / w.sum()
    centred = np.einsum("i,ij,ij->j", w, xm, xm)
    raw = np.einsum("i,ij,ij->j", w, x, x)
    return np.maximum(centred, floor * raw)


#: the IRLS screens for collinearity again each time the sweeps' tolerance has fallen this
#: factor below the one of the last check (and judges it exactly once it reaches ``fe_tol``)
_RECHECK_FACTOR = 1e-2
#: the screen (:func:`_gram_flags`) sends a column to the exact check when its residual on
#: the earlier columns, from the normal equations, is at most this share of its reference
#: sum of squares (the decision's share is ``collin_tol``, 1e-10)
_SCREEN_SHARE = 1e-4


def _gram_flags(xtx: np.ndarray, ref_ss: np.ndarray) -> bool:
    """Whether a column may be collinear with the earlier ones and the fixed effects: the
    squared diagonal of the Cholesky factor of ``xtx`` (the swept columns' weighted Gram
    matrix, already made for the normal equations) -- each column's residual sum of squares
    on the earlier ones -- at most :data:`_SCREEN_SHARE` of ``ref_ss`` (the start-of-fit
    references), or ``xtx`` not positive definite. A screen, not a decision: from the Gram
    matrix the residuals are exact only down to ~``k eps`` of the swept sums of squares
    (about 1e8 times the references at most: a swept sum of squares is at most the raw
    one, a reference at least 1e-8 of it, at the start's weights; the IRLS moves the
    weights' sums by factors far inside the screen's margin of 1e6 over ``collin_tol``),
    far below the screen's share for any k below 4,000; a column it flags is judged by
    :func:`_collinear`. A column the screen misses is still judged exactly once the sweeps
    reach ``fe_tol``, as before the screen. No pass over the rows."""
    if xtx.shape[0] == 0:
        return False
    try:
        chol = np.linalg.cholesky(xtx)
    except np.linalg.LinAlgError:
        return True
    return bool((np.diag(chol) ** 2 <= _SCREEN_SHARE * ref_ss).any()) or \
        not np.isfinite(chol).all()


#: rows per block of the collinearity check's QR (memory O(block x k), not O(n x k))
_QR_BLOCK_ROWS = 65_536


def _collinear(xt: np.ndarray, w: np.ndarray, ref_ss: np.ndarray, tol: float) -> np.ndarray:
    """Sequential check: keep a column unless it is a combination of the earlier ones or of
    the fixed effects -- its weighted residual sum of squares after both is below ``tol``
    times ``ref_ss`` (:func:`collinearity_reference`). The residual sums of squares are the
    squared diagonal of a Householder QR of ``sqrt(w) X~`` (by row blocks, each block's
    QR stacked under the previous R -- the same R): exact to rounding of the data,
    where subtracting from the Gram matrix loses everything below ``eps * ||X||^2`` (a
    constant column next to regressors that sum to it was then kept, and the IRLS normal
    equations were singular)."""
    k = xt.shape[1]
    if k == 0:
        return np.ones(0, dtype=bool)
    r = np.zeros((0, k))
    step = max(_QR_BLOCK_ROWS, k)
    for lo in range(0, xt.shape[0], step):  # tall-skinny QR by row blocks: O(block x k)
        block = xt[lo:lo + step] * np.sqrt(w[lo:lo + step])[:, None]
        r = np.linalg.qr(np.vstack([r, block]), mode="r")
    rss = np.zeros(k)  # more columns than rows: the ones past the rank are combinations
    rss[:min(r.shape)] = np.diag(r) ** 2
    return rss > tol * np.maximum(ref_ss, 1e-300)


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
    # (residual, FE part), + 1 with weights (w mu); no n x k temporaries except the
    # returned scores. Nothing of size n is allocated per iteration: the projector's two
    # scratch columns are ``tmp`` and ``mu_next`` (both free while it runs). Above glibc's
    # 32 MB mmap ceiling every n-row temporary is a fresh mapping whose pages the kernel
    # zeroes (system time growing with n; three per iteration before).
    mu = np.add(y, ybar)
    mu *= 0.5
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
    final_check = False  # collinearity judged again once the sweeps reach fe_tol
    checked_tol = np.inf  # the inner tolerance of the last collinearity check
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
    wmu = None if w is None else np.empty(n)
    cur = np.empty((n, 1 + k), order="F")
    fe_part = np.empty((n, 1 + k), order="F") if has_fe else None
    x_absmax = np.array([np.max(np.abs(x[:, j])) for j in range(k)])

    def x_kept() -> np.ndarray:
        """The regressors still in the model (``x`` itself while none was dropped: no
        n-row copy)."""
        return x if len(cols) == k else x[:, cols]

    def judged(xt_: np.ndarray) -> np.ndarray:
        """The exact collinearity check (:func:`_collinear`) of the swept regressors
        ``xt_`` at this iteration's weights, against the kept regressors' references."""
        return _collinear(xt_, big_w, collinearity_reference(x_kept(), big_w), collin_tol)

    def drop_columns(still: np.ndarray) -> None:
        """Take the regressors flagged False in ``still`` (over the columns still in the
        model) out of the model and of the sweep buffers."""
        nonlocal cols, x_absmax, cur, fe_part
        kept[cols[~still]] = False
        sel = np.r_[True, still]
        cols = cols[still]
        x_absmax = x_absmax[still]
        cur = np.asfortranarray(cur[:, sel])
        if fe_part is not None:
            fe_part = np.asfortranarray(fe_part[:, sel])
    # ppmlhdfe-style adaptive inner tolerance: loose while the deviance still moves, never
    # looser than 1e-4 nor tighter than fe_tol; convergence is only declared at fe_tol.
    inner_tol = max(fe_tol, 1e-4)
    for it in range(1, maxiter + 1):
        np.divide(y, mu, out=z)          # z = eta - o + (y - mu) / mu
        z -= 1.0
        z += eta
        if off is not None:
            z -= off
        big_w = mu if w is None else np.multiply(w, mu, out=wmu)
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
            # max|z| without an n-row |z|: NaN when z has one, as np.max(np.abs(z))
            absmax = np.concatenate([[max(float(z.max()), -float(z.min()))], x_absmax])
            # scratch: mu_next (the previous mu, or unused) is rewritten only after the
            # projections, tmp only in the normal equations; neither is big_w nor cur
            sweeps, ok = fe.residualize_inplace(cur, absmax, tol=inner_tol,
                                                maxiter=fe_maxiter, scratch=(tmp, mu_next))
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
            # collinearity with the FE / other regressors, judged at the start
            ref_start = collinearity_reference(x, big_w)
            still = _collinear(cur[:, 1:], big_w, ref_start, collin_tol)
            checked_tol = inner_tol
            if not still.all():
                drop_columns(still)
        screen = False
        if has_fe and it > 1 and cur.shape[1] > 1:
            if not final_check and inner_tol <= fe_tol:
                # the first iteration whose sweeps reached fe_tol: judge collinearity
                # again, exactly, before the solve
                final_check = True
                checked_tol = inner_tol
                still = judged(cur[:, 1:])
                if not still.all():
                    drop_columns(still)
                    # the previous deviance is that of the larger model: no step halving
                    # towards it, and no convergence declared against it
                    dev_old = np.inf
            elif inner_tol <= checked_tol * _RECHECK_FACTOR:
                # In between, each time the sweeps' tolerance has fallen a hundredfold
                # since the last check: screened on the normal equations below, judged
                # exactly where the screen flags a column. The first check ran on
                # columns swept to the loose inner tolerance (1e-4), where a column
                # absorbed by the fixed effects can leave a residual ~1e-8 of its sum of
                # squares and pass; kept, its residue shrinks with the tolerance, and from
                # ~1e-7 on it gets coefficients of 1e1-1e16 and acts as a regressor of
                # noise: the step fails, the deviance wanders and the IRLS never reaches
                # fe_tol, so the check there came too late (which rows came first decided
                # whether the first check caught the column). A check on sweeps short of
                # fe_tol never drops a column the converged check would keep with the
                # same weights: the swept column differs from x by an element of the
                # fixed effects' span, so its residual is at least the exact one.
                checked_tol = inner_tol
                screen = True
        singular_dropped = False
        while True:
            zt, xt = cur[:, 0], cur[:, 1:]
            kk = xt.shape[1]
            xtx = np.empty((kk, kk))
            xtz = np.empty(kk)
            for a_ in range(kk):             # X~'W X~ and X~'W z~ one column at a time
                np.multiply(xt[:, a_], big_w, out=tmp)
                xtx[a_] = tmp @ xt
                xtz[a_] = tmp @ zt
            if screen:
                screen = False
                if _gram_flags(xtx, ref_start[cols]):
                    still = judged(xt)
                    if not still.all():
                        drop_columns(still)
                        dev_old = np.inf  # the previous deviance: the larger model's
                        continue
            try:
                b = np.linalg.solve(xtx, xtz) if kk else np.zeros(0)
                break
            except np.linalg.LinAlgError:
                # exactly singular before the sweeps reached fe_tol: a column kept by
                # the start-of-fit check (judged at the loose inner tolerance) is a
                # combination of the others and the fixed effects at this iterate; judge
                # collinearity again now, on these columns and weights, and drop it
                still = judged(xt)
                if still.all() or singular_dropped:
                    from ..errors import EstimationError, format_message

                    raise EstimationError(format_message(
                        "Poisson IRLS: the weighted normal equations of the regressors "
                        "are singular although no regressor is collinear with the others "
                        "and the fixed effects by the collinearity check",
                        where=f"IRLS iteration {it}", seen=f"{kk} regressors",
                        fix="drop regressors that are (nearly) combinations of the others "
                            "or of the fixed effects")) from None
                drop_columns(still)
                singular_dropped = True
                dev_old = np.inf  # the previous deviance is that of the larger model
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
    del fe_part
    e = np.subtract(cur[:, 0], xt @ b if xt.shape[1] else 0.0, out=tmp)
    e *= big_w
    scores = xt * e[:, None]
    del cur, xt, zt, e
    dev_old = poisson_deviance(y, mu, w, out=(z, tmp))  # reported, with logs
    del z, tmp
    return PoissonFit(coef=coef, kept=kept, bread=bread, scores=scores, mu=mu, eta=eta,
                      deviance=float(dev_old), iterations=it, converged=converged,
                      crit=float(crit), demean_sweeps=total_sweeps, demean_converged=dm_ok)
