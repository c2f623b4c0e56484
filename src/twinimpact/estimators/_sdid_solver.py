"""Numerical kernels of synthetic difference-in-differences (pure functions, arrays in).

Arkhangelsky, Athey, Hirshberg, Imbens & Wager (2021), "Synthetic Difference-in-
Differences", *American Economic Review* 111(12), 4088-4118, Algorithm 1; the numerical
choices (Frank-Wolfe with exact line search, the stopping rule, the sparsification
step, the default regularisation) follow the reference R package ``synthdid``
(synth-inference/synthdid, ``R/solver.R`` and ``R/synthdid.R``), so that estimates agree
with it to numerical precision.

Notation (the paper's): ``Y`` is an ``(N, T)`` outcome matrix whose first ``N0`` rows are
control units and whose first ``T0`` columns are pre-treatment periods; ``N1 = N - N0``
treated units, ``T1 = T - T0`` post periods.  ``omega`` (length ``N0``) are unit weights,
``lambda`` (length ``T0``) time weights, both on the unit simplex.  The estimate is

    tau = (-omega, 1/N1 ... 1/N1)' Y (-lambda, 1/T1 ... 1/T1).

The weights solve the ridge-penalised simplex least squares problems

    omega = argmin_{w in simplex} zeta_omega^2 ||w||^2
            + (1/T0) sum_t (omega_0 + sum_i w_i Y_it - mean_{treated} Y_t)^2,
    lambda = argmin_{l in simplex} zeta_lambda^2 ||l||^2
            + (1/N0) sum_i (lambda_0 + sum_t l_t Y_it - mean_{post} Y_i)^2,

the intercepts ``omega_0`` / ``lambda_0`` being profiled out by centring when requested.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ControlGram",
    "DataProblems",
    "DrawGram",
    "FWResult",
    "GramProblems",
    "SDIDFit",
    "SDIDOptions",
    "collapsed_form",
    "control_gram",
    "fw_gram_rows",
    "fw_gram_sets",
    "fw_gram_sets_numpy",
    "fw_loop",
    "fw_objective",
    "gram_blocks",
    "gram_fits",
    "noise_level",
    "row_cache_scope",
    "sc_weight_fw",
    "sc_weight_fw_batch",
    "sc_weight_fw_reference",
    "sdid_fit",
    "solve_gram_sets",
    "sparsify",
    "sparsify_rows",
    "weight_problem",
]


@dataclass(frozen=True)
class FWResult:
    """Output of :func:`sc_weight_fw`.

    Attributes
    ----------
    weights : ndarray, shape (k,)
        Solution on the unit simplex.
    values : ndarray, shape (n_iter,)
        Penalised objective after each iteration.
    n_iter : int
        Iterations run.
    converged : bool
        True when the stopping rule (decrease <= ``min_decrease**2``) ended the loop,
        False when ``max_iter`` was reached first.
    """

    weights: np.ndarray
    values: np.ndarray
    n_iter: int
    converged: bool


def fw_objective(Y: np.ndarray, w: np.ndarray, zeta: float, intercept: bool) -> float:
    """Penalised objective ``zeta^2 ||w||^2 + ||A w - b||^2 / n`` of :func:`sc_weight_fw`.

    ``Y`` has shape ``(n, k + 1)``: ``A = Y[:, :k]``, ``b = Y[:, k]`` (both column-centred
    when ``intercept``).
    """
    Y = np.asarray(Y, dtype=float)
    if intercept:
        Y = Y - Y.mean(axis=0)
    err = Y[:, :-1] @ w - Y[:, -1]
    return float(zeta**2 * (w @ w) + (err @ err) / Y.shape[0])


def sc_weight_fw_reference(Y: np.ndarray, zeta: float, *, intercept: bool = True,
                           init: np.ndarray | None = None, min_decrease: float = 1e-3,
                           max_iter: int = 1000, visits: list | None = None) -> FWResult:
    """Frank-Wolfe with exact line search for simplex-constrained ridge regression.

    Minimises ``zeta^2 ||x||^2 + ||A x - b||^2 / n`` over the unit simplex, where
    ``A = Y[:, :k]`` and ``b = Y[:, k]`` (``Y`` of shape ``(n, k + 1)``; columns centred
    first when ``intercept``), as R synthdid's ``sc.weight.fw``: start at ``init``
    (uniform by default); each step moves towards the vertex with the smallest partial
    derivative with the exactly optimal step length; stop after ``max_iter`` steps or
    once an iteration (from the second on) decreases the objective by no more than
    ``min_decrease**2``.

    This is the literal transcription (residuals recomputed every step); the fast path
    :func:`sc_weight_fw` gives the same iterates and is tested against it. ``visits``
    (a list) receives each step's vertex, for measurements of the iterates
    (``benchmarks/sdid_fw_visits.py``).
    """
    Y = np.asarray(Y, dtype=float)
    n, k1 = Y.shape
    k = k1 - 1
    if intercept:
        Y = Y - Y.mean(axis=0)
    A = np.ascontiguousarray(Y[:, :k])
    AT = np.ascontiguousarray(A.T)
    b = Y[:, k].copy()
    x = np.full(k, 1.0 / k) if init is None else np.array(init, dtype=float)
    eta = n * zeta**2
    min_dec2 = min_decrease**2
    vals = np.empty(max_iter)
    t = 0
    converged = False
    err = A @ x - b
    while t < max_iter:
        if t >= 2 and not (vals[t - 2] - vals[t - 1] > min_dec2):
            converged = True
            break
        half_grad = AT @ err + eta * x
        i = int(np.argmin(half_grad))
        if visits is not None:
            visits.append(i)
        d_x = -x
        d_x[i] = 1.0 - x[i]
        if np.any(d_x != 0):
            d_err = A[:, i] - b - err          # A[:, i] - A x
            den = float(d_err @ d_err + eta * (d_x @ d_x))
            step = -float(half_grad @ d_x) / den if den > 0 else 0.0
            step = min(1.0, max(0.0, step))
            x = x + step * d_x
        err = A @ x - b
        vals[t] = zeta**2 * float(x @ x) + float(err @ err) / n
        t += 1
    if not converged and t >= 2 and not (vals[t - 2] - vals[t - 1] > min_dec2):
        converged = True
    return FWResult(weights=x, values=vals[:t].copy(), n_iter=t, converged=converged)


def _design(Y: np.ndarray, intercept: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(A, b)`` of a weight problem ``Y`` of shape ``(n, k + 1)``: its first ``k`` columns
    and its last, both column-centred when ``intercept`` (views of one centred copy)."""
    Y = np.asarray(Y, dtype=float)
    if intercept:
        Y = Y - Y.mean(axis=0)
    return Y[:, :-1], Y[:, -1]


def sc_weight_fw(Y: np.ndarray, zeta: float, *, intercept: bool = True,
                 init: np.ndarray | None = None, min_decrease: float = 1e-3,
                 max_iter: int = 1000) -> FWResult:
    """Fast path of :func:`sc_weight_fw_reference` (same problem, same iterates).

    Works in Gram form: with ``G = A'A``, ``q = G x``, ``c = x'Gx``, ``p = x'A'b`` and
    ``|x|^2`` all updated in O(k) per step (a Frank-Wolfe step is the convex combination
    ``x <- (1 - s) x + s e_i``), so no step touches the ``n x k`` data again.
    """
    A, b = _design(Y, intercept)
    n, k = A.shape
    G = A.T @ A
    # rows of G' (columns of G); G is symmetric to the bit when BLAS computes it as such,
    # then no k x k copy is needed (26 MB at 1,800 controls)
    GT = G if (G == G.T).all() else np.ascontiguousarray(G.T)
    Atb = A.T @ b
    bb = float(b @ b)
    Gd = np.diag(G).tolist()
    Atb_l = Atb.tolist()
    x = np.full(k, 1.0 / k) if init is None else np.array(init, dtype=float)
    eta = n * zeta**2
    z2 = zeta**2
    md2 = min_decrease**2
    q = G @ x
    c = float(x @ q)
    p = float(x @ Atb)
    xx = float(x @ x)
    vals = np.empty(max_iter)
    t = 0
    converged = False
    while t < max_iter:
        if t >= 2 and not (vals[t - 2] - vals[t - 1] > md2):
            converged = True
            break
        hg = q - Atb
        hg += eta * x
        i = int(hg.argmin())
        xi = float(x[i])
        dxx = xx - 2.0 * xi + 1.0                      # |d_x|^2, d_x = e_i - x
        if dxx > 0:
            qi = float(q[i])
            num = float(hg[i]) - float(hg @ x)         # half_grad . d_x
            den = (Gd[i] - 2.0 * qi + c) + eta * dxx   # |A d_x|^2 + eta |d_x|^2
            s = -num / den if den > 0 else 0.0
            s = 1.0 if s > 1.0 else (0.0 if s < 0.0 else s)
            if s > 0.0:
                u = 1.0 - s
                c = u * u * c + 2.0 * s * u * qi + s * s * Gd[i]
                p = u * p + s * Atb_l[i]
                xx = u * u * xx + 2.0 * s * u * xi + s * s
                x *= u
                x[i] += s
                q *= u
                q += s * GT[i]
        vals[t] = z2 * xx + max(c - 2.0 * p + bb, 0.0) / n
        t += 1
    if not converged and t >= 2 and not (vals[t - 2] - vals[t - 1] > md2):
        converged = True
    return FWResult(weights=x, values=vals[:t].copy(), n_iter=t, converged=converged)


def sc_weight_fw_batch(Y: np.ndarray, zeta: float, *, intercept: bool = True,
                       init: np.ndarray | None = None, min_decrease: float = 1e-3,
                       max_iter: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`sc_weight_fw` on a stack of ``B`` same-sized problems at once.

    ``Y`` has shape ``(B, n, k + 1)``, ``init`` ``(B, k)``; returns ``(weights (B, k),
    n_iter (B,), converged (B,))``. Each problem follows exactly its own iterates and
    stopping rule; batching only removes interpreter overhead (:func:`fw_gram_rows`).
    """
    Y = np.asarray(Y, dtype=float)
    B, n, k1 = Y.shape
    bank, base, Atb, bb = gram_blocks(Y, zeta, intercept)
    x0 = np.full((B, k1 - 1), 1.0 / (k1 - 1)) if init is None else init
    return fw_gram_rows(bank, base, Atb, bb, x0, n=n, zeta=zeta,
                        min_decrease=min_decrease, max_iter=max_iter)


#: value of ``A'b`` on a coordinate a problem may not use (see :func:`fw_gram_rows`): its
#: half-gradient is then ~1e200, never the smallest, and stays finite under the lazy
#: scaling below (rescaled before the scale factor drops under 1e-100)
_MASKED = -1e200
_RESCALE_BELOW = 1e-100
#: largest step: a full step (x = e_i) would zero the lazy scale factor; stopping one
#: rounding unit short of it changes x by <= 2^-53 (R's iterate, to rounding)
_STEP_MAX = 1.0 - 2.0**-53


@dataclass(frozen=True)
class GramProblems:
    """``B`` weight problems of one size ``k`` in Gram form (:func:`fw_gram_sets`).

    Problem ``b``'s matrix ``G_b + eta I`` (``G_b = A_b'A_b``, ``eta = n zeta^2``) is rows
    ``base[b] .. base[b] + k - 1`` of ``bank`` (shape ``(m k, k)``, ``base`` multiples of
    ``k``: one shared matrix with ``base = 0``, or one block per problem);
    ``Atb[b] = A_b'b_b``, ``bb[b] = b_b'b_b``, ``x0[b]`` the start on the simplex. A
    coordinate with ``Atb = _MASKED`` (and ``x0 = 0``) is never chosen: the problems of
    placebo replicates live in the coordinates of all controls and mask the units they
    leave out.
    """

    bank: np.ndarray
    base: np.ndarray | int
    Atb: np.ndarray
    bb: np.ndarray
    x0: np.ndarray
    n: int
    zeta: float


#: The weight problems' ``k x k`` Gram matrix (``A'A + eta I``, ``k`` controls, ``A``
#: the ``n x k`` centred design: ``n`` pre-periods for the unit weights) is formed only
#: while it holds at most ``max(_GRAM_MAX_ELEMS, _GRAM_DATA_MULT * n * k)`` numbers:
#: 64 MB (2,896 controls) or 64 times the design itself, whichever is larger (issue 13
#: item 2: no dense object growing faster than the data). Beyond it the problems are
#: solved in data form (:class:`DataProblems`): the same Frank-Wolfe loop, each step
#: computing the one Gram row it needs from the design (O(n k) a step instead of O(k),
#: but no O(k^2 n) build and no k x k memory: memory linear in units). The two forms
#: give the same iterates up to the rounding of the Gram entries (a BLAS product there,
#: a fixed summation order here): the tests force the data form on small panels and
#: compare (tests/estimators/test_sdid_data_form.py). The multiple of the design keeps
#: long pre-periods (where a data-form step costs n times a Gram step) in Gram form
#: longer. Private knobs: the tests set both to 0 to force the data form.
#: The multiple is capped at ``_GRAM_CAP_ELEMS`` (128 MB, 4,096 controls): with 150
#: pre-periods it allowed 9,600 controls, a 737 MB matrix -- at 8,000 units x 200 periods
#: the bootstrap peaked at 749 MB against diff-diff's 563 (RESULTS.md, run SW); our peak
#: and diff-diff's both grow ~220-240 bytes a panel row, ~75-100 MB apart, so no k x k
#: object much above 64 MB fits under diff-diff's at any size.
_GRAM_MAX_ELEMS = 2**23
_GRAM_DATA_MULT = 64
_GRAM_CAP_ELEMS = 2**24


def gram_fits(k: int, n: int) -> bool:
    """Whether weight problems of ``k`` coordinates and ``n`` observations are solved in
    Gram form (their ``k x k`` matrix within the budget of :data:`_GRAM_MAX_ELEMS`)."""
    return k * k <= max(_GRAM_MAX_ELEMS, min(_GRAM_DATA_MULT * n * k, _GRAM_CAP_ELEMS))


@dataclass(frozen=True)
class DataProblems:
    """``B`` weight problems of one size ``k`` in data form (no ``k x k`` object), for
    :func:`fw_gram_sets` beyond :func:`gram_fits`.

    The problems share one design: ``D`` (``n x m``, C order) holds the distinct centred
    columns of ``A``, coordinate ``j`` being column ``cmap[j]`` of ``D`` (``cmap`` None:
    the identity, ``k == m``; a bootstrap draw's repeated controls share a column), so
    ``G = A'A`` has entries ``D[:, cmap[i]] . D[:, cmap[j]]``. ``Atb``, ``bb``, ``x0``,
    ``n``, ``zeta`` as in :class:`GramProblems` (masked coordinates likewise).
    """

    D: np.ndarray
    cmap: np.ndarray | None
    Atb: np.ndarray
    bb: np.ndarray
    x0: np.ndarray
    n: int
    zeta: float
    #: the :class:`RowCache` to use (None: :func:`row_cache_scope`'s, or a fresh one)
    cache: RowCache | None = None


def _col_sq(D: np.ndarray) -> np.ndarray:
    """Sum of squares of each column of ``D``, over its rows in order with separate
    roundings (the order of :func:`_data_rows` and of ``ti_data_row`` in C, so that a
    row's diagonal entry equals it to the bit)."""
    out = D[0] * D[0]
    for t in range(1, D.shape[0]):
        out += D[t] * D[t]
    return out


def _data_rows(D: np.ndarray, cmap: np.ndarray | None, i: np.ndarray, eta: float,
               out: np.ndarray) -> None:
    """Rows ``i`` (one per problem) of ``G + eta I`` in data form into ``out``
    (``(len(i), k)``): ``r = a' D`` with ``a`` column ``cmap[i]`` of ``D``, summed over the
    rows of ``D`` in order (``((D_0 a_0 + D_1 a_1) + ...)``, separate roundings: the
    compiled ``ti_data_row``'s operations), spread to the coordinates, eta added on
    entry ``i``."""
    u = i if cmap is None else cmap[i]
    a = D[:, u]                                         # (n, B')
    r = np.multiply.outer(a[0], D[0])
    for t in range(1, D.shape[0]):
        r += np.multiply.outer(a[t], D[t])
    if cmap is None:
        out[...] = r
    else:
        np.take(r, cmap, axis=1, out=out)
    out[np.arange(len(i)), i] += eta


class _Set:
    """Mutable per-set state of :func:`fw_gram_sets` (rows still iterating)."""

    D: np.ndarray | None = None

    def __init__(self, P: GramProblems | DataProblems) -> None:
        if isinstance(P, DataProblems):
            self._init_data(P)
            return
        self.bank = np.ascontiguousarray(P.bank, dtype=float)
        k = self.k = self.bank.shape[1]
        self.Atb = np.array(P.Atb, dtype=float, order="C")   # flat indexing: C order
        B = self.B = self.Atb.shape[0]
        self.base = np.broadcast_to(np.asarray(P.base, dtype=np.intp), (B,)).copy()
        r = np.arange(self.bank.shape[0])
        self.gd = self.bank[r, r % k]                  # diagonal entry of each bank row
        self.y = np.array(P.x0, dtype=float, order="C")
        self.h = np.empty((B, k))
        for b0 in range(0, B, 256):                    # (G + eta I) x, in small pieces
            sl = slice(b0, min(B, b0 + 256))
            bs = self.base[sl]
            if np.all(bs == bs[0]):
                self.h[sl] = self.y[sl] @ self.bank[bs[0]:bs[0] + k]
            else:
                self.h[sl] = np.einsum("bkl,bl->bk", self.bank.reshape(-1, k, k)[bs // k],
                                       self.y[sl])
        self.cp = np.einsum("bk,bk->b", self.y, self.h)     # x'(G + eta I)x
        self.xx = np.einsum("bk,bk->b", self.y, self.y)
        self._init_common()

    def _init_data(self, P: DataProblems) -> None:
        """The state of :meth:`__init__` for problems in data form: ``(G + eta I) x`` as
        ``A'(A x) + eta x`` and ``x'(G + eta I)x`` as ``|A x|^2 + eta |x|^2`` (O(B n k))."""
        D = self.D = np.ascontiguousarray(P.D, dtype=float)
        m = D.shape[1]
        self.cmap = None if P.cmap is None else np.ascontiguousarray(P.cmap, dtype=np.intp)
        self.eta = P.n * P.zeta**2
        self.Atb = np.array(P.Atb, dtype=float, order="C")
        B, k = self.Atb.shape
        self.B, self.k = B, k
        self.bank = None
        self.base = np.zeros(B, dtype=np.intp)
        if P.cache is not None:
            if P.cache.colsq is None:
                P.cache.colsq = _col_sq(D)
            dd = P.cache.colsq
        else:
            dd = _col_sq(D)
        self.gd = (dd if self.cmap is None else dd[self.cmap]) + self.eta
        self.y = np.array(P.x0, dtype=float, order="C")
        if self.cmap is None:
            ym = self.y
        else:                                           # x summed over repeated columns
            ym = np.zeros((B, m))
            for b in range(B):
                ym[b] = np.bincount(self.cmap, weights=self.y[b], minlength=m)
        V = ym @ D.T                                    # (B, n): A x
        h = V @ D
        self.h = h if self.cmap is None else h[:, self.cmap]
        self.xx = np.einsum("bk,bk->b", self.y, self.y)
        self.cp = np.einsum("bt,bt->b", V, V) + self.eta * self.xx
        self.h += self.eta * self.y
        self._init_common()

    def _init_common(self) -> None:
        """State both forms share once ``y``, ``h = (G + eta I) x`` and ``Atb`` are set:
        the gradient, ``x'A'b``, the row bookkeeping and the work buffers."""
        B, k = self.B, self.k
        self.h -= self.Atb
        self.p = np.einsum("bk,bk->b", self.y, np.where(self.Atb == _MASKED, 0.0, self.Atb))
        self.orig = np.arange(B)
        self.flat = self.orig * k
        self.R = np.empty((B, k))
        self.out = np.empty((B, k))
        self.n_iter = np.zeros(B, dtype=int)
        self.conv = np.zeros(B, dtype=bool)

    def rows(self, bi: np.ndarray, out: np.ndarray) -> None:
        """Rows ``bi`` of the bank (Gram form) or computed from the design (data form)."""
        if self.D is None:
            self.bank.take(bi, axis=0, out=out, mode="clip")
        else:
            _data_rows(self.D, self.cmap, bi, self.eta, out)

    def keep(self, keep: np.ndarray) -> None:
        self.orig, self.y, self.h = self.orig[keep], self.y[keep], self.h[keep]
        self.Atb, self.base = self.Atb[keep], self.base[keep]
        self.flat = np.arange(len(self.orig)) * self.k


#: a data-form design (pre-periods x controls) of this many numbers or more (16 MB: out of
#: the caches) has the rows its problems miss computed up to sixteen in one pass (the
#: compiled loop's ``ti_fw_rows_wide``, set from here when it is loaded) and a placebo's
#: replicates grouped sixteen to a call (``_sdid_inference._SIDE_REPS_WIDE``): the design
#: read from memory once for sixteen problem steps. Placebo at 250,000 units x 40, 16
#: replicates, 247 -> 132 s CPU; at 25,000 units (a 5.4 MB design, in L3) no change; at
#: 4,000 (in L2) +9% with sixteen (RESULTS.md, run PL). (A placebo's replicates reach this
#: loop only with :data:`SCREEN_MIN_ELEMS` raised above their design.)
WIDE_ELEMS = 2**21
#: a placebo's unit-weight problems in data form (compiled) on a design of this many
#: numbers or more run the screened residual form (:func:`fw_screened`) instead of the
#: data-form loop: every such design. The screen was faster at every size measured
#: (4,000 units: 1.7x; 25,000: 3.8x; 250,000: 5.1x, RESULTS.md run SP1). The data-form
#: loop stays reachable by raising it (its bit-for-bit tests against the NumPy loop do)
SCREEN_MIN_ELEMS = 0

#: set to ``numpy`` to run :func:`fw_gram_sets` with the NumPy loop even when the compiled
#: one (``_sdid_fw.c``) was built (the tests compare the two)
KERNEL_ENV = "TWINIMPACT_SDID_KERNEL"
_FW_C: list = []


def _compiled_fw():
    """The compiled loop ``ti_fw_gram`` of ``_sdid_fw.c`` as a ctypes function, or None
    when the optional extension was not built (no C compiler at install) or
    :data:`KERNEL_ENV` is ``numpy``."""
    if os.environ.get(KERNEL_ENV, "").strip().lower() == "numpy":
        return None
    if not _FW_C:
        fn = None
        try:
            import ctypes

            from . import _sdid_fw  # the built extension module (file located, not called)
            lib = ctypes.CDLL(_sdid_fw.__file__)
            i64, dbl, ptr = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p
            fn = lib.ti_fw_gram
            fn.restype = None
            fn.argtypes = [i64] * 2 + [ptr] * 7 + [i64] + [ptr] * 7
            # the other entry points: attribute, symbol, result type, argument types
            for attr, sym, res, args in (
                    ("select", "ti_fw_select", ctypes.c_int, [ctypes.c_int] * 2),
                    ("data", "ti_fw_data", None,
                     [i64] * 4 + [ptr] * 8 + [i64] + [ptr] * 10 + [i64] + [ptr] * 2 + [i64]),
                    ("rows", "ti_fw_rows", ctypes.c_int, [ctypes.c_int]),
                    ("rows_wide", "ti_fw_rows_wide", ctypes.c_int, [ctypes.c_int, i64]),
                    ("ring", "ti_fw_ring", ctypes.c_int, [ctypes.c_int]),
                    ("ring_hits", "ti_fw_ring_hits", i64, []),
                    ("prune", "ti_fw_prune", i64, [i64, dbl]),
                    ("prune_stats", "ti_fw_prune_stats", None, [ptr]),
                    ("prune_giveup", "ti_fw_prune_giveup", dbl, [dbl]),
                    ("rescale", "ti_fw_rescale", dbl, [dbl]),
                    ("gather", "ti_gather_gram", None, [i64, ptr, i64, ptr, dbl, ptr]),
                    ("screen", "ti_fw_screen", i64,
                     [i64] * 3 + [ptr] * 5 + [i64] + [ptr] * 3 + [i64, ctypes.c_int, ptr]),
                    ("screen_kernel", "ti_fw_screen_kernel", ctypes.c_int, [ctypes.c_int])):
                f = getattr(lib, sym)
                f.restype = res
                f.argtypes = args
                setattr(fn, attr, f)
            fn.select(-1, 1)
            fn.rows_wide(0, WIDE_ELEMS)
        except (ImportError, OSError, AttributeError):
            fn = None
        _FW_C.append(fn)
    return _FW_C[0]


def _fw_select(vector: bool = True, pair: bool = True) -> str | None:
    """Variant of the compiled loop (for the tests; the default is the fastest): the
    update vectorised (SSE2 on x86-64) or scalar, two problems in alternation or one by
    one. Every variant does the same operations per problem (same numbers). Returns the
    update now in use (``"sse2"`` / ``"scalar"``), None without the compiled loop."""
    fn = _compiled_fw()
    if fn is None:
        return None
    return ("scalar", "sse2")[fn.select(-1 if vector else 0, int(pair))]


def fw_loop() -> str:
    """Which loop :func:`fw_gram_sets` runs: ``"compiled"`` or ``"numpy"``."""
    return "numpy" if _compiled_fw() is None else "compiled"


def fw_gram_sets(sets: list[GramProblems], *, min_decrease: float, max_iter: int
                 ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Frank-Wolfe of :func:`sc_weight_fw` on several sets of problems.

    Returns per set ``(weights (B, k), n_iter (B,), converged (B,))``. The loop of
    :func:`fw_gram_sets_numpy` (see there), run in C when the optional extension
    ``_sdid_fw`` is built: same initial state (computed here by :class:`_Set`), same
    operations in the same order per problem, so the same iterates; the one difference is
    when the lazy scale factor is folded back (per problem there, per batch in NumPy), a
    change of rounding only (none on a set of one problem). A NumPy step costs ~60 calls
    (~40 us) whatever the batch width and the batch runs as many steps as its slowest
    problem (10,100 in synthdid's placebo); the compiled loop costs ~1 ns per coordinate
    and step: the update of the half-gradient and the next step's argmin in one SSE2 pass,
    two problems in alternation so that the Gram row one needs next is prefetched while
    the other computes (the row fetch from memory dominates once the Gram matrix outgrows
    the cache, ~2,000 controls). In data form, sets sharing one design (a placebo's
    chunks, when :data:`SCREEN_MIN_ELEMS` keeps them from the screened form
    :func:`fw_screened` that a placebo runs in data form by default) run in one call
    (:func:`_shared_design_groups`), whose problems have the rows they miss computed four
    in one pass over the design. From 8,192 columns of the design a
    point fit's problem and the bootstrap draws' run the pruned loop instead
    (``ti_fw_prune_one``): no Gram row is computed, only the coordinates a lower bound does
    not rule out as the next vertex are brought up to date, by replaying the updates they
    missed in the full loop's order -- the same numbers to the bit
    (tests/estimators/test_sdid_pruned.py); a problem where that costs more than the full
    loop (a placebo's target, the mean of controls) is handed over to it. Used by the
    placebo batch (Gram form; data form without the compiled loop), the point fit and
    every bootstrap refit (:func:`sdid_fit`).
    """
    fn = _compiled_fw()
    if fn is None:
        return fw_gram_sets_numpy(sets, min_decrease=min_decrease, max_iter=max_iter)
    md2 = min_decrease**2
    if len(sets) > 1 and all(_is_design_draw(P) for P in sets) and all(
            P.D is sets[0].D and P.cache is sets[0].cache for P in sets):
        return _fw_design_draws_c(fn, sets, md2, max_iter)
    out: list = [None] * len(sets)
    for group in _shared_design_groups(sets):
        if len(group) > 1:                  # one call: their missed rows share passes
            for j, r in zip(group, _fw_data_sets_c(fn, [sets[j] for j in group], md2,
                                                    max_iter), strict=True):
                out[j] = r
            continue
        P = sets[group[0]]
        st = _Set(P)
        B, k = st.B, st.k
        if B and st.D is not None:
            out[group[0]] = _fw_data_sets_c(fn, [P], md2, max_iter, [st])[0]
            continue
        n_iter = np.zeros(B, dtype=np.int64)
        conv = np.zeros(B, dtype=np.uint8)
        y = st.y
        if B:
            bank = np.ascontiguousarray(st.bank, dtype=np.float64)
            base = np.ascontiguousarray(st.base, dtype=np.int64)
            gd = np.ascontiguousarray(st.gd, dtype=np.float64)
            Atb = np.ascontiguousarray(st.Atb, dtype=np.float64)
            h = np.ascontiguousarray(st.h, dtype=np.float64)
            y = np.ascontiguousarray(y, dtype=np.float64)
            bb = np.ascontiguousarray(np.broadcast_to(np.asarray(P.bb, dtype=np.float64), (B,)))
            eta = np.full(B, P.n * P.zeta**2)
            md2n = np.full(B, md2 * P.n)
            cp, xx, p = (np.ascontiguousarray(v, dtype=np.float64) for v in (st.cp, st.xx, st.p))
            fn(B, k, bank.ctypes.data, base.ctypes.data, gd.ctypes.data, Atb.ctypes.data,
               bb.ctypes.data, eta.ctypes.data, md2n.ctypes.data, int(max_iter),
               h.ctypes.data, y.ctypes.data, cp.ctypes.data, xx.ctypes.data, p.ctypes.data,
               n_iter.ctypes.data, conv.ctypes.data)
        out[group[0]] = (y, n_iter.astype(int), conv.astype(bool))
    return out


#: counts of the compiled screened loop (``ti_fw_screen``) in this process: steps,
#: coordinates computed in double precision after the screen, steps computed exhaustively
#: (for measurements and the tests; :func:`fw_screened` adds to it)
SCREEN_STATS = np.zeros(3, dtype=np.int64)


def fw_screened(A: np.ndarray, b: np.ndarray, keep: np.ndarray, x0: np.ndarray,
                zeta: float, *, min_decrease: float, max_iter: int,
                exhaustive: bool = False, width: int = 16
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frank-Wolfe of :func:`sc_weight_fw_reference` on ``B`` problems sharing one design,
    in the compiled residual form with a single-precision screen (``ti_fw_screen`` in
    ``_sdid_fw.c``, whose comment gives the method and the error bound).

    ``A`` (``n x k``) holds the centred columns; problem ``b`` regresses its centred
    target ``b[b]`` (``n``) on the columns ``keep[b]`` (boolean ``(B, k)``: a placebo
    replicate's controls), from ``x0[b]`` (on the simplex, 0 off ``keep[b]``). Each step
    finds its vertex as R's ``which.min`` of the half-gradient ``A'(Ax - b) + eta x``
    computed in double precision for the coordinates a single-precision pass over the
    design cannot rule out (one or two a step on a placebo's problems) -- the vertex of
    the exhaustive loop (``exhaustive=True``: every coordinate in double precision; the
    same numbers, tested bit for bit). No ``h`` or Gram row is stored: a step costs one
    single-precision pass over the design shared by ``width`` (1-16) live problems,
    about a fifth of a data-form step's cost at 22,500-225,000 controls (RESULTS.md,
    "Synthetic DiD placebo: a single-precision screen"). Returns ``(weights (B, k),
    n_iter (B,), converged (B,))`` as :func:`fw_gram_sets`. Needs the compiled
    extension."""
    fn = _compiled_fw()
    if fn is None:
        raise RuntimeError("fw_screened needs the compiled extension _sdid_fw")
    A = np.ascontiguousarray(A, dtype=np.float64)
    n, k = A.shape
    keep = np.ascontiguousarray(keep, dtype=np.uint8)
    B = keep.shape[0]
    bt = np.ascontiguousarray(np.broadcast_to(b, (B, n)), dtype=np.float64)
    y = np.array(x0, dtype=np.float64, order="C")
    if y.shape != (B, k) or keep.shape != (B, k):
        raise ValueError(f"fw_screened: x0 {y.shape} and keep {keep.shape} must both be "
                         f"({B}, {k})")
    if np.any(y[keep == 0] != 0):
        raise ValueError("fw_screened: x0 has weight on a coordinate keep leaves out")
    eta = np.full(B, n * zeta**2)
    md2n = np.full(B, min_decrease**2 * n)
    n_iter = np.zeros(B, dtype=np.int64)
    conv = np.zeros(B, dtype=np.uint8)
    if B and k:
        rc = fn.screen(B, k, n, A.ctypes.data, bt.ctypes.data, keep.ctypes.data,
                       eta.ctypes.data, md2n.ctypes.data, int(max_iter), y.ctypes.data,
                       n_iter.ctypes.data, conv.ctypes.data, int(width), int(exhaustive),
                       SCREEN_STATS.ctypes.data)
        if rc:
            raise MemoryError(f"fw_screened: out of memory for {B} problems of {k} "
                              f"coordinates and {n} observations")
    return y, n_iter.astype(int), conv.astype(bool)


def _shared_design_groups(sets: list) -> list[list[int]]:
    """Indices of ``sets`` in groups solved by one compiled call: the data-form sets on
    the same design object with no coordinate map and the same ``n`` and ``zeta`` (the
    unit-weight problems of a placebo's chunks of replicates, :func:`._sdid_inference.
    _placebo_taus`) form one group; every other set is a group of its own."""
    groups: list[list[int]] = []
    key_of: dict = {}
    for j, P in enumerate(sets):
        if isinstance(P, DataProblems) and P.cmap is None and P.cache is None:
            key = (id(P.D), P.n, P.zeta)
            if key in key_of:
                groups[key_of[key]].append(j)
                continue
            key_of[key] = len(groups)
        groups.append([j])
    return groups


def _fw_data_sets_c(fn, sets: list[DataProblems], md2: float, max_iter: int,
                    sts: list[_Set] | None = None
                    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The compiled loop (``ti_fw_data``) on sets in data form sharing one design and
    coordinates (one set, or a group of :func:`_shared_design_groups`) in one call, so
    that the compiled loop computes the rows several problems miss in one pass over the
    design. Each set's state is computed alone (:class:`_Set`, as for a call of its own)
    and stacked: every problem runs its own operations, the same numbers as one call per
    set (tested bit for bit). Returns ``(weights, n_iter, converged)`` per set."""
    sts = [_Set(P) for P in sets] if sts is None else sts
    st0, P0 = sts[0], sets[0]
    Bs = [st.B for st in sts]
    B, k = sum(Bs), st0.k
    D = st0.D
    n, m = D.shape
    cmap = None if st0.cmap is None else np.ascontiguousarray(st0.cmap, dtype=np.int64)
    base = np.zeros(B, dtype=np.int64)
    gd = np.ascontiguousarray(st0.gd, dtype=np.float64)
    y, h, Atb = (np.ascontiguousarray(np.concatenate([getattr(st, a) for st in sts]),
                                      dtype=np.float64) for a in ("y", "h", "Atb"))
    bb = np.concatenate([np.broadcast_to(np.asarray(P.bb, dtype=np.float64), (st.B,))
                         for P, st in zip(sets, sts, strict=True)])
    eta = np.concatenate([np.full(st.B, st.eta) for st in sts])
    md2n = np.concatenate([np.full(st.B, md2 * P.n) for P, st in zip(sets, sts, strict=True)])
    cp, xx, p = (np.ascontiguousarray(np.concatenate([getattr(st, a) for st in sts]),
                                      dtype=np.float64) for a in ("cp", "xx", "p"))
    n_iter = np.zeros(B, dtype=np.int64)
    conv = np.zeros(B, dtype=np.uint8)
    rbuf = np.empty(m + n)
    gbuf = np.empty(k if cmap is not None else 0)
    rc = P0.cache if P0.cache is not None else _row_cache(D)
    cache, rows, slot, used = ((np.empty(0), 0, None, None) if rc is None
                               else (rc.buffer(), rc.rows, rc.slot, rc.used))
    fn.data(B, k, n, m, D.ctypes.data, None if cmap is None else cmap.ctypes.data,
            base.ctypes.data, gd.ctypes.data, Atb.ctypes.data, bb.ctypes.data,
            eta.ctypes.data, md2n.ctypes.data, int(max_iter), h.ctypes.data,
            y.ctypes.data, cp.ctypes.data, xx.ctypes.data, p.ctypes.data,
            n_iter.ctypes.data, conv.ctypes.data, rbuf.ctypes.data,
            gbuf.ctypes.data if gbuf.size else None,
            cache.ctypes.data if rows else None, rows,
            slot.ctypes.data if rows and slot is not None else None,
            used.ctypes.data if rows and slot is not None else None, 0)
    edges = np.cumsum([0, *Bs])
    return [(y[lo:hi], n_iter[lo:hi].astype(int), conv[lo:hi].astype(bool))
            for lo, hi in itertools.pairwise(edges)]


def _is_design_draw(P) -> bool:
    """A bootstrap draw's one problem in the control-design form (:class:`ControlDesign`:
    a coordinate map into the shared design, the shared row cache)."""
    return (isinstance(P, DataProblems) and P.cache is not None and P.cmap is not None
            and np.ndim(P.cmap) == 1 and np.shape(P.x0)[0] == 1)


def _fw_design_draws_c(fn, sets: list[DataProblems], md2: float, max_iter: int
                       ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Several draws' problems on one control design in one compiled call, two in
    alternation (``ti_fw_data`` with one coordinate map per problem: while one updates,
    the cached row the other needs next is prefetched). Each problem's state is computed
    alone (:class:`_Set`, as for a set of one) and padded to the largest ``k`` with masked
    coordinates (``Atb = _MASKED``, ``x = 0``: never chosen, as a placebo's left-out
    units), so every problem runs its own operations: the same numbers as one call each
    (tested bit for bit)."""
    sts = [_Set(P) for P in sets]
    B = len(sets)
    ks = [st.k for st in sts]
    k = max(ks)
    D = sts[0].D
    n, m = D.shape
    cmap = np.zeros((B, k), dtype=np.int64)
    gd = np.ones((B, k))
    Atb = np.full((B, k), _MASKED)
    h = np.full((B, k), -_MASKED)
    y = np.zeros((B, k))
    for b, st in enumerate(sts):
        kb = ks[b]
        cmap[b, :kb] = st.cmap
        gd[b, :kb] = st.gd
        Atb[b, :kb] = st.Atb[0]
        h[b, :kb] = st.h[0]
        y[b, :kb] = st.y[0]
    bb = np.array([float(np.asarray(P.bb, dtype=np.float64).ravel()[0]) for P in sets])
    eta = np.array([st.eta for st in sts])
    md2n = np.array([md2 * P.n for P in sets])
    cp = np.array([float(st.cp[0]) for st in sts])
    xx = np.array([float(st.xx[0]) for st in sts])
    p = np.array([float(st.p[0]) for st in sts])
    base = np.arange(B, dtype=np.int64) * k
    n_iter = np.zeros(B, dtype=np.int64)
    conv = np.zeros(B, dtype=np.uint8)
    rbuf = np.empty(m + n)
    gbuf = np.empty(k)
    rc = sets[0].cache
    cache = rc.buffer()
    fn.data(B, k, n, m, D.ctypes.data, cmap.ctypes.data, base.ctypes.data, gd.ctypes.data,
            Atb.ctypes.data, bb.ctypes.data, eta.ctypes.data, md2n.ctypes.data,
            int(max_iter), h.ctypes.data, y.ctypes.data, cp.ctypes.data, xx.ctypes.data,
            p.ctypes.data, n_iter.ctypes.data, conv.ctypes.data, rbuf.ctypes.data,
            gbuf.ctypes.data, cache.ctypes.data if rc.rows else None, rc.rows,
            rc.slot.ctypes.data if rc.rows else None,
            rc.used.ctypes.data if rc.rows else None, 1)
    return [(y[b:b + 1, :ks[b]].copy(), n_iter[b:b + 1].astype(int),
             conv[b:b + 1].astype(bool)) for b in range(B)]


class RowCache:
    """The compiled data-form loop's row cache on one design ``D`` (``n x m``): a buffer
    of ``rows`` raw Gram rows (``m`` numbers each), the slot of each column of ``D``
    (-1 never requested, -2 requested once, else its slot) and the fill count, kept from
    one solve to the next on that design (``ti_fw_data``). The buffer is allocated when
    first used, its pages touched only as rows are stored."""

    def __init__(self, m: int, elems: int | None = None) -> None:
        elems = _ROW_CACHE_ELEMS if elems is None else elems
        self.m = m
        self.rows = min(m, elems // m) if m > 0 else 0
        self.buf = np.empty(0)
        self.slot = np.full(m, -1, dtype=np.int64)
        self.used = np.zeros(1, dtype=np.int64)
        self.colsq: np.ndarray | None = None             # _col_sq of the design, once

    def buffer(self) -> np.ndarray:
        if self.buf.size < self.rows * self.m:
            self.buf = np.empty(self.rows * self.m)
        return self.buf


class ControlDesign:
    """The unit-weight problem's centred design over ALL ``N0`` controls (``T0 x N0``),
    built once for the bootstrap (:func:`control_design`), with a row cache kept across
    the draws: a draw's problem is in data form on it (:class:`DataProblems` with
    ``cmap`` = the draw's controls), so a Gram row computed for one draw serves every
    later draw visiting that control (the entries are the same dot products of the same
    two centred columns). Costs per draw O(T0 N0) to start plus the Frank-Wolfe steps
    (O(k) each with the row cached), no ``k x k`` object, and the rows of the controls
    visited, each computed about once over the whole bootstrap while the cache holds
    them (``N0^2`` numbers within :data:`_ROW_CACHE_ELEMS`: up to 2,896 controls)."""

    def __init__(self, D: np.ndarray, cache_elems: int | None = None) -> None:
        self.D = np.ascontiguousarray(D, dtype=float)
        self.cache = RowCache(self.D.shape[1], cache_elems)


def control_design(Y: np.ndarray, N0: int, T0: int, intercept: bool,
                   cache_elems: int | None = None) -> ControlDesign:
    """:class:`ControlDesign` of the unit-weight problem over all ``N0`` controls (built as
    :func:`sdid_fit` builds a draw's design: collapsed form, transposed, centred)."""
    A, _ = _design(collapsed_form(Y, N0, T0)[:, :T0].T, intercept)
    return ControlDesign(A, cache_elems)


#: the compiled data-form loop's row cache (``ti_fw_data``): the row of ``G`` computed for
#: a Frank-Wolfe vertex is kept from the vertex's second visit and read again after (a
#: bootstrap draw's pass 2: 10,000 steps over ~0.7 of its distinct controls), in at most
#: this many float64 numbers (64 MB; 0: no cache). At most the Gram form's budget
#: (:data:`_GRAM_MAX_ELEMS`), so smaller than the k x k matrix the data form avoids. The
#: same numbers with or without it (the same rows, computed once by the same code; tested
#: bit for bit). Issue 13's panel, 50 draws, fresh processes (RESULTS.md, SDID section):
#: bootstrap 4,000 units 5.24 -> 2.85 s CPU, 10,000 units 13.66 -> 9.15 s; placebo
#: 6.33 -> 3.62 s and 16.57 -> 15.26 s; peak +33 to +53 MB, still below diff-diff's.
#: With fewer rows than columns, its last 32 rows are a ring of the rows computed last
#: without a place of their own (``ti_fw_ring``; the one-row-at-a-time loops): a
#: bootstrap draw returns to a vertex within 32 steps at a third of its steps, long
#: after the other rows are taken, so the ring serves those returns (rows found 5% -> 45%
#: of the requests at 20,000 units; RESULTS.md, run SBT)
_ROW_CACHE_ELEMS = 2**23
_ROW_SCOPE = threading.local()


@contextmanager
def row_cache_scope():
    """Reuse one row-cache buffer for every data-form solve inside (a bootstrap's draws, a
    placebo's chunks) instead of a fresh one per solve (whose pages are faulted in each
    time), and keep the cached rows from one solve to the next on the same design (a
    placebo's chunks of replicates share it); per thread, released on exit."""
    prev = getattr(_ROW_SCOPE, "state", None)
    _ROW_SCOPE.state = {"D": None, "cache": None}
    try:
        yield
    finally:
        _ROW_SCOPE.state = prev


def _row_cache(D: np.ndarray) -> RowCache | None:
    """The :class:`RowCache` of a data-form solve on design ``D`` (``n x m``) without one
    of its own (None: no room for a row): a fresh one, or inside
    :func:`row_cache_scope` the scope's, kept while the design is the same object (held
    here so that it stays alive); a new design starts a fresh slot table on the scope's
    buffer."""
    rc = RowCache(D.shape[1])
    if rc.rows < 1:
        return None
    st = getattr(_ROW_SCOPE, "state", None)
    if st is None:
        return rc
    old = st["cache"]
    if st["D"] is not D or old is None or old.rows != rc.rows:
        if old is not None:
            rc.buf = old.buf  # (grown by buffer() when it is too small)
        st.update(D=D, cache=rc)
    return st["cache"]


def _fw_one_numpy(P: GramProblems | DataProblems, md2: float, max_iter: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`fw_gram_sets_numpy` on a set of one problem (the point fit, a bootstrap
    refit), with Python floats for the scalars: the batch loop's operations on arrays of
    length one, in the same order (so the same numbers), at ~5 NumPy calls per step
    instead of ~60."""
    st = _Set(P)
    k = st.k
    h, y, Atb = st.h[0], st.y[0], st.Atb[0]
    base = int(st.base[0])
    bank, gd = st.bank, st.gd
    cp, xx, p = float(st.cp[0]), float(st.xx[0]), float(st.p[0])
    bb = float(np.asarray(P.bb, dtype=float).ravel()[0])
    eta = P.n * P.zeta**2
    md2n = md2 * P.n
    sigma, vprev, t, done = 1.0, float("inf"), 0, False
    Ra = np.empty(k)
    while True:
        i = int(h.argmin())
        hv = float(h[i]) * sigma
        xi = float(y[i]) * sigma
        a = float(Atb[i])
        g = float(gd[base + i])
        q = hv + a                                      # ((G + eta I) x)_i
        pa = (p + a) * 0.5
        den = cp - 2.0 * q
        den += g
        s = cp - p
        s -= hv
        if den > 0.0:
            s /= den                                    # -hg'(e_i - x) / den
            s = s if s > 0.0 else 0.0                   # np.fmax(s, 0): NaN -> 0
            s = s if s < _STEP_MAX else _STEP_MAX
        else:
            s = 0.0                                     # the batch's s *= (den > 0)
        u = 1.0 - s
        s2, ss = 2.0 * s, s * s
        tc, tx, tp = cp * u, xx * u, p * u
        tc += q * s2
        tx += xi * s2
        tp += pa * s2
        tc *= u
        tx *= u
        tp *= u
        tc += g * ss
        tx += 1.0 * ss
        tp += a * ss
        cp, xx, p = tc, tx, tp
        sigma *= u
        c = s / sigma
        if bank is None:                               # data form: the row computed
            st.rows(np.array([i]), Ra[None, :])
            Ra -= Atb
        else:
            np.subtract(bank[base + i], Atb, out=Ra)
        y[i] += c
        Ra *= c
        h += Ra
        e = eta * xx
        val = cp - e
        val -= p
        val -= p
        val += bb
        val = val if not val < 0.0 else 0.0            # np.maximum(val, 0)
        val += e
        t += 1
        if t % 8 == 0 and sigma < _RESCALE_BELOW:
            y *= sigma
            h *= sigma
            sigma = 1.0
        if t < 2:
            if t < max_iter:
                vprev = val
                continue
            done = False
            break
        cont = (vprev - val) > md2n
        if t < max_iter and cont:
            vprev = val
            continue
        done = not cont
        break
    return (y * sigma)[None, :], np.array([t]), np.array([done])


def fw_gram_sets_numpy(sets: list[GramProblems], *, min_decrease: float, max_iter: int
                       ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Frank-Wolfe of :func:`sc_weight_fw` on several sets of problems at once (NumPy).

    Returns per set ``(weights (B, k), n_iter (B,), converged (B,))``. Each problem
    follows its own iterates and stopping rule (those of :func:`sc_weight_fw_reference`,
    in another floating-point order). Per step and problem the work is O(k): the
    half-gradient ``hg = (G + eta I) x - A'b`` moves to ``(1 - s) hg + s (row_i - A'b)``;
    ``x'(G + eta I)x``, ``|x|^2`` and ``x'A'b`` are scalars updated in O(1) (one stacked
    update ``u (u S + 2 s V) + s^2 C``, ``u = 1 - s``); ``x`` and ``hg`` are kept as
    ``sigma y`` and ``sigma h`` so that the ``(1 - s)`` scaling is O(1) too. Problems that
    stop leave the batch. Sets of different sizes (the time- and unit-weight problems of
    placebo replicates) share the interpreter overhead of each step.
    """
    md2 = min_decrease**2
    if len(sets) == 1 and np.shape(sets[0].x0)[0] == 1:
        return [_fw_one_numpy(sets[0], md2, max_iter)]
    if all(_is_design_draw(P) for P in sets):      # several draws: each alone, as compiled
        return [_fw_one_numpy(P, md2, max_iter) for P in sets]
    S = [_Set(P) for P in sets]
    # per-problem scalars, concatenated over the sets: S3 = [x'(G+eta I)x, |x|^2, x'A'b]
    S3 = np.concatenate([np.stack([st.cp, st.xx, st.p]) for st in S], axis=1)
    bb = np.concatenate([np.asarray(P.bb, dtype=float) for P in sets])
    eta = np.concatenate([np.full(st.B, P.n * P.zeta**2)
                          for st, P in zip(S, sets, strict=True)])
    # the objective is compared times n: zeta^2 |x|^2 n + |Ax - b|^2 vs min_decrease^2 n
    md2n = np.concatenate([np.full(st.B, md2 * P.n) for st, P in zip(S, sets, strict=True)])
    sigma = np.ones(len(bb))
    vprev = np.full(len(bb), np.inf)
    t = 0
    views = None
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        while True:
            if views is None:                          # (re)build after rows left
                m = len(bb)
                hv = np.empty(m)
                V = np.empty((3, m))                   # [q_i, x_i, (x'A'b + A'b_i) / 2]
                C = np.empty((3, m))                   # [G_ii + eta, 1, A'b_i]
                views, off = [], 0
                for st in S:
                    if not len(st.orig):
                        continue
                    sl = slice(off, off + len(st.orig))
                    off = sl.stop
                    views.append((st, sl, st.h, st.y.ravel(), st.Atb, st.gd, st.bank,
                                  st.R[:len(st.orig)], st.flat, st.base,
                                  bool((st.base == 0).all()), hv[sl], V[1, sl], C[2, sl],
                                  C[0, sl]))
                idx = []
            idx.clear()
            for (_, _, h, yf, Atb, gd, _, _, flat, base, shared, hv_s, x_s, a_s,
                 g_s) in views:
                i = h.argmin(axis=1)
                fi = flat + i
                bi = i if shared else base + i
                h.take(fi, out=hv_s, mode="clip")
                yf.take(fi, out=x_s, mode="clip")
                Atb.take(fi, out=a_s, mode="clip")
                gd.take(bi, out=g_s, mode="clip")
                idx.append((fi, bi))
            cp, xx, p = S3
            hv *= sigma                                 # hg_i
            V[1] *= sigma                               # x_i
            np.add(hv, C[2], out=V[0])                  # q_i = ((G + eta I) x)_i
            np.add(p, C[2], out=V[2])
            V[2] *= 0.5
            den = cp - 2.0 * V[0]
            den += C[0]                                 # (e_i - x)'(G + eta I)(e_i - x)
            s = cp - p
            s -= hv
            s /= den                                    # -hg'(e_i - x) / den
            np.fmax(s, 0.0, out=s)                      # (NaN -> 0)
            np.fmin(s, _STEP_MAX, out=s)
            s *= den > 0
            u = 1.0 - s
            C[1] = 1.0
            T3 = S3 * u
            V *= 2.0 * s
            T3 += V
            T3 *= u
            C *= s * s
            T3 += C
            S3 = T3                                     # u (u S + 2 s V) + s^2 C
            sigma *= u
            s /= sigma
            for (st, sl, h, yf, Atb, _, bank, Ra, _, _, _, _, _, _, _), (fi, bi) in zip(
                    views, idx, strict=True):
                if bank is None:                        # data form: rows computed
                    st.rows(bi, Ra)
                else:
                    bank.take(bi, axis=0, out=Ra, mode="clip")
                Ra -= Atb
                sv = s[sl]
                yf[fi] += sv
                Ra *= sv[:, None]
                h += Ra
            cp, xx, p = S3
            e = eta * xx
            val = cp - e
            val -= p
            val -= p
            val += bb
            np.maximum(val, 0.0, out=val)
            val += e                                    # n (zeta^2 |x|^2 + |A x - b|^2 / n)
            t += 1
            if t % 8 == 0 and np.minimum.reduce(sigma) < _RESCALE_BELOW:
                for st, sl, *_ in views:
                    st.y *= sigma[sl, None]
                    st.h *= sigma[sl, None]
                sigma[:] = 1.0
            if t < 2:
                if t < max_iter:
                    vprev = val
                    continue
                stop = np.ones(m, dtype=bool)
                done = np.zeros(m, dtype=bool)
            else:
                cont = (vprev - val) > md2n
                if t < max_iter and np.logical_and.reduce(cont):   # (C, not _methods)
                    vprev = val
                    continue
                done = ~cont
                stop = done if t < max_iter else np.ones(m, dtype=bool)
            for st, sl, *_ in views:
                stp = stop[sl]
                if not stp.any():
                    continue
                o = st.orig[stp]
                st.out[o] = st.y[stp] * sigma[sl][stp, None]
                st.n_iter[o] = t
                st.conv[o] = done[sl][stp]
                st.keep(~stp)
            keep = ~stop
            if not keep.any():
                break
            S3, bb, eta, md2n = S3[:, keep], bb[keep], eta[keep], md2n[keep]
            sigma, vprev = sigma[keep], val[keep]
            views = None
    return [(st.out, st.n_iter, st.conv) for st in S]


def fw_gram_rows(bank: np.ndarray, base: np.ndarray | int, Atb: np.ndarray,
                 bb: np.ndarray, x0: np.ndarray, *, n: int, zeta: float,
                 min_decrease: float, max_iter: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`fw_gram_sets` on one :class:`GramProblems` set."""
    return fw_gram_sets([GramProblems(bank, base, Atb, bb, x0, n, zeta)],
                        min_decrease=min_decrease, max_iter=max_iter)[0]


def sparsify(v: np.ndarray) -> np.ndarray:
    """R synthdid's ``sparsify_function``: zero weights ``<= max/4``, renormalise."""
    v = np.array(v, dtype=float)
    v[v <= v.max() / 4] = 0.0
    return v / v.sum()


def sum_normalize(x: np.ndarray) -> np.ndarray:
    """``x / sum(x)``, or uniform weights when ``x`` sums to zero (R ``sum_normalize``)."""
    x = np.asarray(x, dtype=float)
    s = x.sum()
    if s != 0:
        return x / s
    return np.full(len(x), 1.0 / len(x))


def collapsed_form(Y: np.ndarray, N0: int, T0: int) -> np.ndarray:
    """``(N0 + 1, T0 + 1)`` matrix: treated rows and post columns replaced by their means."""
    out = np.empty((N0 + 1, T0 + 1))
    out[:N0, :T0] = Y[:N0, :T0]
    out[:N0, T0] = Y[:N0, T0:].mean(axis=1)
    out[N0, :T0] = Y[N0:, :T0].mean(axis=0)
    out[N0, T0] = Y[N0:, T0:].mean()
    return out


def noise_level(Y: np.ndarray, N0: int, T0: int) -> float:
    """Sample standard deviation of the first differences of control pre-period outcomes.

    R: ``sd(apply(Y[1:N0, 1:T0], 1, diff))``; NaN when fewer than two differences exist.
    """
    d = np.diff(Y[:N0, :T0], axis=1).ravel()
    if d.size < 2:
        return float("nan")
    return float(np.std(d, ddof=1))


@dataclass(frozen=True)
class SDIDOptions:
    """Tuning of one weight problem set (what R keeps in ``attr(estimate, 'opts')``).

    ``zeta_*`` are the ridge penalties, ``*_intercept`` whether the weights' regressions
    have an intercept, ``update_*`` whether the weights are estimated (else fixed at the
    initial values), ``min_decrease``/``max_iter`` the Frank-Wolfe stopping rule, and
    ``sparsify``/``max_iter_pre_sparsify`` the two-pass sparsification.
    """

    zeta_omega: float
    zeta_lambda: float
    omega_intercept: bool = True
    lambda_intercept: bool = True
    update_omega: bool = True
    update_lambda: bool = True
    min_decrease: float = 1e-3
    max_iter: int = 10_000
    sparsify: bool = True
    max_iter_pre_sparsify: int = 100


@dataclass(frozen=True)
class SDIDFit:
    """One simultaneous-adoption fit (Algorithm 1).

    Attributes
    ----------
    tau : float
        The estimate.
    omega : ndarray, shape (N0,)
        Unit weights of the control rows.
    lam : ndarray, shape (T0,)
        Time weights of the pre-period columns (all zero for SC).
    N0, T0, N1, T1 : int
        Block sizes.
    options : SDIDOptions
        The options used (reused by placebo / bootstrap / jackknife replications).
    iterations : dict
        Frank-Wolfe iterations and convergence per pass (``omega_pass1``, ...).
    beta : ndarray or None
        Covariate coefficients of the "optimized" covariate adjustment (None without).
    """

    tau: float
    omega: np.ndarray
    lam: np.ndarray
    N0: int
    T0: int
    N1: int
    T1: int
    options: SDIDOptions
    iterations: dict = field(default_factory=dict)
    beta: np.ndarray | None = None


def weight_problem(Yw: np.ndarray, zeta: float, intercept: bool,
                   init: np.ndarray | None,
                   gram: tuple[ControlGram, np.ndarray] | None = None
                   ) -> GramProblems | DataProblems:
    """One weight problem of :func:`sc_weight_fw` (``Yw`` of shape ``(n, k + 1)``) for
    :func:`fw_gram_sets`, in data form (:class:`DataProblems`, the design's distinct
    columns: a draw's repeated controls ``gram[1]`` once) when its Gram matrix exceeds
    :func:`gram_fits`' budget, else in Gram form: ``A'A + n zeta^2 I`` (``A`` the first ``k``
    columns, centred when ``intercept``; NumPy's ``A.T @ A``, symmetric), ``A'b``,
    ``b'b``, start ``init`` (uniform by default). ``gram = (cg, index)``: a bootstrap
    draw's ``A'A`` read from the :class:`ControlGram` ``cg`` (the same matrix; see there
    on rounding) or written by the :class:`DrawGram` ``cg`` into its reused buffer (the
    same numbers)."""
    A, b = _design(Yw, intercept)
    n, k = A.shape
    x0 = np.full(k, 1.0 / k) if init is None else np.asarray(init, dtype=float)
    if gram is not None and isinstance(gram[0], ControlDesign):
        cd = gram[0]                                    # data form on all the controls
        return DataProblems(cd.D, np.ascontiguousarray(gram[1], dtype=np.intp),
                            (A.T @ b)[None, :], np.array([float(b @ b)]), x0[None, :],
                            n, zeta, cd.cache)
    if not gram_fits(k, n):                             # data form: no k x k object
        D, cmap = A, None
        if gram is not None:                            # a draw: repeated controls share
            _, first, cmap = np.unique(gram[1], return_index=True, return_inverse=True)
            D = A[:, first]
        return DataProblems(np.ascontiguousarray(D), cmap, (A.T @ b)[None, :],
                            np.array([float(b @ b)]), x0[None, :], n, zeta)
    if gram is None:
        bank = A.T @ A
        bank[np.diag_indices(k)] += n * zeta**2
    else:
        bank = gram[0].draw(gram[1], n * zeta**2, A)
    return GramProblems(bank, 0, (A.T @ b)[None, :], np.array([float(b @ b)]),
                        x0[None, :], n, zeta)


class _SquareBuffer:
    """One float64 buffer reused by every bootstrap draw for its ``k x k`` Gram matrix."""

    buf: np.ndarray

    def _square(self, k: int, spare: int = 0) -> np.ndarray:
        """A ``(k, k)`` view of the buffer, grown (by ``spare`` more numbers) when short."""
        if self.buf.size < k * k:
            self.buf = np.empty(0)                     # released first: one buffer live
            self.buf = np.empty(k * k + spare)
        return self.buf[:k * k].reshape(k, k)


class ControlGram(_SquareBuffer):
    """The unit-weight problem's Gram matrix over ALL ``N0`` controls, built once for
    the bootstrap (:func:`control_gram`), and a scratch buffer for the draws' matrices.

    A draw's controls are rows ``index`` (sorted, repeats) of that control set: column
    ``j`` of its ``A`` is column ``index[j]`` of the full ``A`` (the same numbers: the
    collapsed form and the centring of a column use that unit's row only), so its
    ``A'A`` is ``G[index][:, index]``. Each entry is the BLAS's dot product of the same two
    columns: the same to the bit where the BLAS rounds an entry of ``A.T @ A`` the same
    wherever it sits in the product (OpenBLAS's Haswell kernels on the machine this was
    written on); some kernels round edge tiles differently (OpenBLAS on an AMD EPYC: ~1%
    of entries 1 ulp apart), and then the replicates agree to ~1e-12 (both cases tested in
    tests/estimators/test_sdid_gram_map.py). The
    draw's ``k x k`` matrix is gathered into the reused buffer (compiled gather when the
    extension is built) instead of being multiplied out (``k^2 T0`` flops) in a fresh
    array.
    """

    def __init__(self, G: np.ndarray) -> None:
        self.G = np.ascontiguousarray(G, dtype=float)
        self.buf = np.empty(self.G.size)

    def draw(self, index: np.ndarray, eta: float, A: np.ndarray | None = None
             ) -> np.ndarray:
        """``G[index][:, index] + eta I`` (a view of the buffer: valid until the next
        call; ``A``, the draw's design, is not needed here)."""
        idx = np.ascontiguousarray(index, dtype=np.int64)
        k = len(idx)
        out = self._square(k)                          # (a draw may hold more than N0)
        fn = _compiled_fw()
        if fn is not None:
            fn.gather(k, self.G.ctypes.data, self.G.shape[1], idx.ctypes.data, eta,
                      out.ctypes.data)
        else:
            np.take(self.G.take(idx, axis=0), idx, axis=1, out=out)
            out[np.diag_indices(k)] += eta
        return out


class DrawGram(_SquareBuffer):
    """A bootstrap draw's unit-weight Gram matrix ``A.T @ A + eta I`` written into one
    buffer reused from draw to draw (the path when the controls' :class:`ControlGram` is
    too large to keep).

    The product is the same BLAS call as :func:`weight_problem`'s own ``A.T @ A`` (NumPy
    ``matmul`` with ``out=``: the same routine on the same operands), so the same numbers
    on every machine (tests/estimators/test_sdid_gram_map.py); what changes is that no
    fresh ``k x k`` array is allocated per draw -- its page faults were the draw's system
    time (1.2 s of 11 s CPU at 3,000 units, 4.9 s of 34 s at 6,000; run BL). Building the
    matrix over the draw's distinct controls instead (``~0.4`` of the flops, then spread
    to the draw's coordinates; ce3461b) was measured and dropped: with 30 pre-periods the
    build is bound by writing the ``k x k`` matrix, not by flops -- per draw 11.0 / 28.6 /
    95 ms against 10.0 / 22.4 / 105 ms for this product at 1,800 / 2,700 / 5,400
    controls, and only to rounding where the BLAS rounds by position (RESULTS.md, SDID
    section).
    """

    def __init__(self) -> None:
        self.buf = np.empty(0)

    def draw(self, index: np.ndarray, eta: float, A: np.ndarray | None = None
             ) -> np.ndarray:
        """``A.T @ A + eta I`` of the draw's design ``A`` (``T0 x k``; ``index``, its
        controls, is not needed here), a view of the buffer valid until the next call."""
        if A is None:  # pragma: no cover - internal misuse
            raise ValueError("DrawGram.draw needs the draw's design A")
        k = A.shape[1]
        out = self._square(k, spare=8 * k)             # room for a few more controls
        np.matmul(A.T, A, out=out)
        out[np.diag_indices(k)] += eta
        return out


def control_gram(Y: np.ndarray, N0: int, T0: int, intercept: bool) -> ControlGram:
    """:class:`ControlGram` of the unit-weight problem over all ``N0`` controls (``Y``'s
    first rows), built as :func:`sdid_fit` builds a draw's (collapsed form, transposed,
    centred when ``intercept``, ``A.T @ A``)."""
    A, _ = _design(collapsed_form(Y, N0, T0)[:, :T0].T, intercept)
    return ControlGram(A.T @ A)


def _solve(Yw: np.ndarray, zeta: float, intercept: bool, init: np.ndarray | None,
           opts: SDIDOptions, tag: str, info: dict,
           gram: tuple[ControlGram, np.ndarray] | None = None) -> np.ndarray:
    """synthdid's two passes on one weight problem with :func:`fw_gram_sets` (the
    compiled loop when built, else the NumPy one: same iterates)."""
    P = weight_problem(Yw, zeta, intercept, init, gram)
    first_iter = opts.max_iter_pre_sparsify if opts.sparsify else opts.max_iter
    w, it, cv = fw_gram_sets([P], min_decrease=opts.min_decrease, max_iter=first_iter)[0]
    info[f"{tag}_pass1"] = {"iterations": int(it[0]), "converged": bool(cv[0])}
    if opts.sparsify:
        P = dataclasses.replace(P, x0=sparsify_rows(w))
        w, it, cv = fw_gram_sets([P], min_decrease=opts.min_decrease,
                                 max_iter=opts.max_iter)[0]
        info[f"{tag}_pass2"] = {"iterations": int(it[0]), "converged": bool(cv[0])}
    info[f"{tag}_objective"] = (fw_objective(Yw, w[0], zeta, intercept) if it[0]
                                else float("nan"))
    return w[0]


def sdid_fit(Y: np.ndarray, N0: int, T0: int, opts: SDIDOptions, *,
             omega: np.ndarray | None = None, lam: np.ndarray | None = None,
             omega_gram: tuple[ControlGram, np.ndarray] | None = None) -> SDIDFit:
    """Weights and estimate for one treated block (R ``synthdid_estimate`` without X).

    ``omega``/``lam`` are initial values when the corresponding ``update_*`` option is
    True, and the fixed weights otherwise (then they are required). ``omega_gram``
    ``(cg, index)``: the controls are rows ``index`` of the control set of the
    :class:`ControlGram` ``cg`` (a bootstrap draw): the unit-weight Gram matrix is
    gathered from it (the same matrix, :func:`weight_problem`).
    """
    Y = np.asarray(Y, dtype=float)
    N, T = Y.shape
    info: dict = {}
    Yc = collapsed_form(Y, N0, T0)
    lam = time_weights(Yc, N0, opts, lam, info)
    if opts.update_omega:
        omega = _solve(Yc[:, :T0].T, opts.zeta_omega, opts.omega_intercept, omega, opts,
                       "omega", info, omega_gram)
    if omega is None or lam is None:  # pragma: no cover - internal misuse
        raise ValueError("fixed weights must be given when update_* is False")
    omega = np.asarray(omega, dtype=float)
    lam = np.asarray(lam, dtype=float)
    return SDIDFit(tau=contrast(Y, N0, T0, omega, lam), omega=omega, lam=lam, N0=N0, T0=T0,
                   N1=N - N0, T1=T - T0, options=opts, iterations=info)


def time_weights(Yc: np.ndarray, N0: int, opts: SDIDOptions, lam: np.ndarray | None,
                 info: dict) -> np.ndarray | None:
    """:func:`sdid_fit`'s first phase: the time weights on the collapsed form ``Yc``
    (solved from ``lam`` when ``opts.update_lambda``, else ``lam`` itself)."""
    if opts.update_lambda:
        lam = _solve(Yc[:N0, :], opts.zeta_lambda, opts.lambda_intercept, lam, opts,
                     "lambda", info)
    return lam


def contrast(Y: np.ndarray, N0: int, T0: int, omega: np.ndarray, lam: np.ndarray) -> float:
    """:func:`sdid_fit`'s last phase: ``tau = (-omega, 1/N1)' Y (-lambda, 1/T1)``."""
    N, T = Y.shape
    row = np.concatenate([-omega, np.full(N - N0, 1.0 / (N - N0))])
    col = np.concatenate([-lam, np.full(T - T0, 1.0 / (T - T0))])
    return float(row @ Y @ col)


def default_options(method: str, Y: np.ndarray, N0: int, T0: int) -> tuple[SDIDOptions, dict]:
    """synthdid's defaults for ``method`` in {"sdid", "sc", "did"}; returns (options, info).

    sdid: ``sigma`` = :func:`noise_level`, ``eta_omega = (N1 T1)^(1/4)``,
    ``zeta_omega = eta_omega sigma``, ``zeta_lambda = 1e-6 sigma``,
    ``min_decrease = 1e-5 sigma``, intercepts on both weights.  sc (``sc_estimate``):
    ``eta_omega = 1e-6``, no omega intercept, lambda fixed at zero.  did
    (``did_estimate``): uniform weights, nothing estimated.
    """
    N, T = Y.shape
    N1, T1 = N - N0, T - T0
    sigma = noise_level(Y, N0, T0)
    eta_omega = 1e-6 if method == "sc" else float((N1 * T1) ** 0.25)
    eta_lambda = 1e-6
    opts = SDIDOptions(
        zeta_omega=eta_omega * sigma, zeta_lambda=eta_lambda * sigma,
        omega_intercept=method != "sc", lambda_intercept=True,
        update_omega=method != "did", update_lambda=method == "sdid",
        min_decrease=1e-5 * sigma, max_iter=10_000,
    )
    return opts, {"noise_level": sigma, "eta_omega": eta_omega, "eta_lambda": eta_lambda}


def fixed_weights(method: str, N0: int, T0: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Initial/fixed (omega, lambda) of ``method``: did uniform, sc lambda = 0."""
    if method == "did":
        return np.full(N0, 1.0 / N0), np.full(T0, 1.0 / T0)
    if method == "sc":
        return None, np.zeros(T0)
    return None, None


def sparsify_rows(x: np.ndarray) -> np.ndarray:
    """:func:`sparsify` applied to each row of ``x``."""
    x = np.array(x, dtype=float)
    x[x <= x.max(axis=1, keepdims=True) / 4] = 0.0
    return x / x.sum(axis=1, keepdims=True)


def solve_gram_sets(sets: list[GramProblems], opts: SDIDOptions
                    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """synthdid's two passes (``max_iter_pre_sparsify`` steps, sparsify, then up to
    ``max_iter``) of :func:`fw_gram_sets`; returns the weights of each set and, per set,
    whether the last pass met the stopping rule before ``max_iter`` (per problem)."""
    first = opts.max_iter_pre_sparsify if opts.sparsify else opts.max_iter
    res = fw_gram_sets(sets, min_decrease=opts.min_decrease, max_iter=first)
    if opts.sparsify:
        sets = [dataclasses.replace(P, x0=sparsify_rows(r[0])) for P, r in
                zip(sets, res, strict=True)]
        res = fw_gram_sets(sets, min_decrease=opts.min_decrease, max_iter=opts.max_iter)
    return [r[0] for r in res], [r[2] for r in res]


def solve_screened(A: np.ndarray, b: np.ndarray, keep: np.ndarray, x0: np.ndarray,
                   opts: SDIDOptions) -> tuple[np.ndarray, np.ndarray]:
    """synthdid's two passes of the unit-weight problems (as :func:`solve_gram_sets`)
    with :func:`fw_screened`; returns the weights ``(B, k)`` and, per problem, whether the
    last pass met the stopping rule before ``max_iter``."""
    first = opts.max_iter_pre_sparsify if opts.sparsify else opts.max_iter
    y, _, conv = fw_screened(A, b, keep, x0, opts.zeta_omega,
                             min_decrease=opts.min_decrease, max_iter=first)
    if opts.sparsify:
        y, _, conv = fw_screened(A, b, keep, sparsify_rows(y), opts.zeta_omega,
                                 min_decrease=opts.min_decrease, max_iter=opts.max_iter)
    return y, conv


def gram_blocks(Yw: np.ndarray, zeta: float, intercept: bool
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gram form of a stack of weight problems ``Yw`` ``(B, n, k + 1)`` (as
    :func:`sc_weight_fw`): ``bank`` ``(B k, k)`` holding ``A_b'A_b + n zeta^2 I``,
    ``base``, ``A_b'b_b`` and ``b_b'b_b``."""
    Yw = np.asarray(Yw, dtype=float)
    B, n, k1 = Yw.shape
    k = k1 - 1
    if intercept:
        Yw = Yw - Yw.mean(axis=1, keepdims=True)
    gram = np.matmul(np.swapaxes(Yw, 1, 2), Yw)          # (B, k + 1, k + 1)
    bank = np.ascontiguousarray(gram[:, :k, :k])
    bank[:, np.arange(k), np.arange(k)] += n * zeta**2
    return (bank.reshape(B * k, k), np.arange(B) * k, gram[:, :k, k].copy(),
            gram[:, k, k].copy())
