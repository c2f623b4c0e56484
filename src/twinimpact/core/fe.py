"""Numerical kernels for linear models with high-dimensional fixed effects.

Pure functions on NumPy arrays; no pandas, no validation (callers validate).

* :func:`factorize` turns label arrays into dense integer codes.
* :func:`demean` sweeps out any number of fixed-effect sets by alternating projections
  (the method of alternating projections, Gaure 2013, as in fixest / lfe / pyfixest),
  optionally weighted. Balanced two-way panels converge in one sweep.
* :func:`fe_dof` counts the fixed-effect parameters the way fixest does for its
  small-sample correction (``fixef.K = "nested"``).
* :func:`ols` solves the demeaned normal equations and returns coefficients, residuals
  and the bread ``(X'WX)^{-1}``; :func:`solve_normal` is its solver on given cross-products.
* :func:`ols_twoway_balanced` is the fast path for a balanced unit x time panel whose
  design is a block of 0/1 indicators of one categorical code (event-time dummies, a
  treatment dummy) plus dense columns: the indicator block is never demeaned; its
  cross-products and cluster score sums come from group counts and sums in O(n).
* :func:`fit_fe_ols` (labels) / :func:`fit_fe_codes` (dense codes) put these together: OLS
  with fixed effects and a sandwich vcov (:func:`twinimpact.core.vcov.sandwich`), taking
  the balanced fast path when it applies; they return labelled params (pandas).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import SpecificationError, check_literal, format_message
from ..results import VcovSpec
from .rowblocks import BLOCK, code_sums, pair_sums, row_blocks
from .unitorder import code_numbers, code_strings
from .vcov import VCOV_KINDS, sandwich

__all__ = [
    "DemeanResult",
    "OLSFit",
    "SandwichVcov",
    "TwoWayOLSFit",
    "demean",
    "factorize",
    "fe_dof",
    "fit_fe_codes",
    "fit_fe_ols",
    "is_balanced_twoway",
    "ols",
    "ols_twoway_balanced",
    "solve_normal",
]


def factorize(values: object) -> tuple[np.ndarray, int]:
    """Dense integer codes 0..G-1 for any label array (NaN labels get their own code), in
    order of first appearance.

    A pandas Series (or array) of Arrow strings -- pandas' default string dtype -- is coded
    on its Arrow data by :func:`~twinimpact.core.unitorder.code_strings` (the same codes):
    ``np.asarray`` of it would first build one Python string object per row (at 1e7 rows
    ~0.9 s and ~0.5 GB before any hashing). A column with missing labels takes the general
    path, where they get their own code. Numbers are coded by
    :func:`~twinimpact.core.unitorder.code_numbers` where that pays (a narrow range
    through a direct table, many labels of a wide range grouped by their bytes): the same
    codes without a hash table.
    """
    if isinstance(values, pd.Series | pd.Index):
        values = values.array
    coded = code_strings(values)
    if coded is not None and (coded[0].size == 0 or coded[0].min() >= 0):
        return coded
    values = np.asarray(values)
    coded = code_numbers(values)
    if coded is not None:
        return coded
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
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

    Group sums of a few columns are ``bincount`` passes; of many columns at once a sparse
    (G x n) @ dense (n x k) product (built on first use). The means are broadcast back
    with one row gather.
    """

    #: up to this many columns, group sums are one bincount per column
    BINCOUNT_COLS = 4

    def __init__(self, codes: np.ndarray, weights: np.ndarray | None) -> None:
        self.codes = np.asarray(codes, dtype=np.intp)
        n = len(self.codes)
        self.n_groups = int(self.codes.max()) + 1 if n else 0
        self.weights = None if weights is None else np.asarray(weights, dtype=float)
        self.wsum = np.bincount(self.codes, weights=self.weights,
                                minlength=self.n_groups).astype(float)
        wsum = self.wsum.copy()
        wsum[wsum == 0] = 1.0
        self.inv_wsum = 1.0 / wsum
        self._mat = None

    @property
    def mat(self):
        """Sparse (G x n) matrix of the weights by group (``mat @ x``: weighted sums)."""
        if self._mat is None:
            from scipy import sparse

            n = len(self.codes)
            data = np.ones(n) if self.weights is None else self.weights
            self._mat = sparse.csr_matrix((data, (self.codes, np.arange(n))),
                                          shape=(self.n_groups, n))
        return self._mat

    def sums(self, x: np.ndarray) -> np.ndarray:
        """Weighted group sums of the columns of ``x`` (n, k) -> (G, k)."""
        if x.shape[1] > self.BINCOUNT_COLS:
            return self.mat @ x
        out = np.empty((self.n_groups, x.shape[1]))
        for j in range(x.shape[1]):
            v = x[:, j] if self.weights is None else self.weights * x[:, j]
            # = np.bincount(codes, weights=v): the same sums in the same order, without
            # bincount's doubled (G,) output or a copy of a strided column
            out[:, j] = code_sums(self.codes, self.n_groups, v)
        return out

    def means(self, x: np.ndarray) -> np.ndarray:
        out = self.sums(x)
        out *= self.inv_wsum[:, None]
        return out

    def subtract(self, x: np.ndarray, *, overwrite: bool = False) -> np.ndarray:
        """``x`` minus its group means; ``overwrite=True``: in ``x`` itself (a float64
        array the caller no longer needs), no copy."""
        if overwrite and isinstance(x, np.ndarray) and x.dtype == np.float64 \
                and x.flags.writeable:
            out = x
        else:
            out = np.array(x, dtype=float, copy=True)
        _gather_update(out, self.means(x), self.codes, np.subtract)
        return out


#: rows per block of a blocked gather (a few MB of temporaries whatever n is)
_GATHER_ROWS = 1 << 16


def _gather_update(out: np.ndarray, table: np.ndarray, codes: np.ndarray, op) -> None:
    """``out = op(out, table[codes])`` (``op`` a ufunc such as ``np.subtract``) in blocks of
    rows, without the n x k temporary ``table[codes]``; same numbers."""
    n = len(codes)
    rows = max(1, _GATHER_ROWS // max(1, out.shape[1] if out.ndim == 2 else 1))
    if n <= rows:
        op(out, np.take(table, codes, axis=0), out=out)
        return
    for start in range(0, n, rows):
        b = slice(start, start + rows)
        op(out[b], np.take(table, codes[b], axis=0), out=out[b])


def is_balanced_twoway(codes_a: np.ndarray, codes_b: np.ndarray, n_a: int, n_b: int) -> bool:
    """Every (level of FE a) x (level of FE b) cell observed exactly once.

    ``codes_a``, ``codes_b`` are dense codes (see :func:`factorize`) with ``n_a``, ``n_b``
    levels.
    """
    n = len(codes_a)
    if n == 0 or n_a * n_b != n:
        return False
    key = np.asarray(codes_a, dtype=np.intp) * n_b + codes_b
    return bool(np.bincount(key, minlength=n).max() == 1)


def _is_balanced(p0: _Projector, p1: _Projector, n: int, weights: np.ndarray | None) -> bool:
    """Every (level of FE 1) x (level of FE 2) cell observed exactly once, equal weights."""
    if weights is not None and not np.all(weights == weights[0]):
        return False
    return is_balanced_twoway(p0.codes, p1.codes, p0.n_groups, p1.n_groups)


#: largest number of levels of the smaller fixed-effect set for the exact two-way
#: projection (its T x T Schur complement is formed densely and eigendecomposed)
SMALL_SET_MAX = 2000
#: the Schur complement costs sum over big-set levels of (cells per level)^2; allow this
#: many multiples of n
_SCHUR_WORK_MAX = 64


def _known_null_space(lam: np.ndarray, n_comp: int) -> tuple[np.ndarray, bool]:
    """Null space of a PSD matrix whose null dimension ``n_comp`` is known, from its
    ascending eigenvalues ``lam``: the ``n_comp`` smallest, accepted (``ok``) when they are
    numerically zero (<= 1e-8 of the largest) and a clean gap -- four orders of magnitude,
    and the next eigenvalue above 1e-9 of the largest -- separates them from the rest.
    Returns ``(null mask, ok)``."""
    null = np.zeros(len(lam), dtype=bool)
    null[:n_comp] = True
    top = max(float(lam.max()), 1e-300) if len(lam) else 1.0
    rest = lam[n_comp:]
    noise = float(np.max(np.abs(lam[:n_comp]))) if n_comp else 0.0
    ok = n_comp >= 1 and noise <= top * 1e-8 and (
        not len(rest) or (float(rest.min()) > top * 1e-9 and noise <= 1e-4 * float(rest.min())))
    return null, bool(ok)


def _count_cells(big: np.ndarray, n_big: int, small: np.ndarray, n_small: int, *,
                 skip_negative: bool = False, fallback: bool = True) -> Any:
    """Row counts per (big, small) level pair as a canonical scipy CSR matrix (sorted
    indices, no duplicates, no explicit zeros): the matrix of
    ``csr_matrix((ones(n), (big, small))).sum_duplicates()``, built from a dense count
    table counted block by block, the CSR arrays filled table block by table block
    (no n-row ones, coordinate copies or conversion temporaries). The table's integers
    are as narrow as the most rows of a big level allow (one byte up to 255 rows). Falls
    back to the COO conversion when the dense table would be much larger than the rows
    (``fallback=False``: returns None instead). ``skip_negative``: rows whose ``small``
    code is negative are left out."""
    from scipy import sparse

    n = len(big)
    top = int(np.bincount(big, minlength=n_big).max()) if n else 0  # bounds every count
    dtype = next(d for d in (np.uint8, np.uint16, np.int32, np.int64)
                 if top <= np.iinfo(d).max)
    if n_big * n_small * np.dtype(dtype).itemsize > 16 * n + 4_000_000:
        if not fallback:
            return None
        if skip_negative:
            on = small >= 0
            big, small = big[on], small[on]
        m = sparse.csr_matrix((np.ones(len(big)), (big, small)), shape=(n_big, n_small))
        m.sum_duplicates()
        return m
    tab = pair_sums(big, n_big, small, n_small, None, dtype=dtype,
                    skip_negative_b=skip_negative)
    per_row = np.zeros(n_big, dtype=np.int64)
    rows = max(1, BLOCK // max(1, n_small))
    for i in range(0, n_big, rows):
        per_row[i:i + rows] = np.count_nonzero(tab[i:i + rows], axis=1)
    nnz = int(per_row.sum())
    idx_t = np.int32 if max(nnz, n_big, n_small) < 2**31 else np.int64
    indptr = np.zeros(n_big + 1, dtype=idx_t)
    np.cumsum(per_row, out=indptr[1:])
    indices = np.empty(nnz, dtype=idx_t)
    data = np.empty(nnz)
    for i in range(0, n_big, rows):
        blk = tab[i:i + rows]
        r, c = np.nonzero(blk)  # row-major: sorted columns within each row
        start = int(indptr[i])
        indices[start:start + len(c)] = c
        data[start:start + len(c)] = blk[r, c]
    del tab
    m = sparse.csr_matrix((data, indices, indptr), shape=(n_big, n_small))
    m.has_sorted_indices = True
    return m


#: cells per dense block of a unit x period table (1 MB of float64: cache-sized)
_GRAM_BLOCK_CELLS = 1 << 17


def _csr_rows_view(m: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` (``0 <= start <= stop <= rows``) of a CSR matrix as a CSR
    matrix on views of its stored arrays (``m[start:stop]`` copies the block's indices and
    data first)."""
    from scipy import sparse

    lo, hi = int(m.indptr[start]), int(m.indptr[stop])
    return sparse.csr_matrix((m.data[lo:hi], m.indices[lo:hi], m.indptr[start:stop + 1] - lo),
                             shape=(stop - start, m.shape[1]), copy=False)


def _csr_rows_dense(m: Any, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of a CSR matrix as a dense array (:func:`_csr_rows_view`)."""
    return _csr_rows_view(m, start, stop).toarray()


def _csr_dense_blocks(m: Any, width: int = 0) -> Iterator[tuple[slice, np.ndarray]]:
    """``(rows, m[rows] dense)`` for blocks of rows of a CSR matrix of about
    ``_GRAM_BLOCK_CELLS`` cells each (cells of ``max(width, columns)`` per row: the rows
    of a wider table that go with the block)."""
    n_rows = m.shape[0]
    step = max(1, _GRAM_BLOCK_CELLS // max(1, m.shape[1], width))
    for start in range(0, n_rows, step):
        stop = min(n_rows, start + step)
        yield slice(start, stop), _csr_rows_dense(m, start, stop)


def _dense_cells(cells: Any) -> bool:
    """Whether products with the (N, T) CSR table ``cells`` go through dense blocks of
    rows (BLAS) rather than scipy's sparse kernels: when ``N T^2`` multiply-adds at BLAS
    speed cost less than about ``sum_u nnz_u^2`` scattered sparse updates (the rule of
    :func:`_unit_counts_csr`) -- nearly full unit x period tables; not a long period
    span of which each unit has a few periods (entry and exit)."""
    n_big, n_small = cells.shape
    nnz_u = np.diff(cells.indptr).astype(np.float64)
    return n_big * n_small * n_small <= _SYRK_OVER_SPARSE * float(nnz_u @ nnz_u)


def _scaled_gram(cells: Any, inv: np.ndarray, *, dense: bool | None = None) -> np.ndarray:
    """``B' diag(inv) B`` (T, T) dense, for ``B = cells`` (N, T) a canonical scipy CSR
    matrix (the unit x period counts or weight sums of :class:`SmallSetProjector`).

    Cost linear in the units either way: from dense blocks of units (BLAS) when
    ``dense`` (default :func:`_dense_cells`), else scipy's sparse-sparse product (about
    ``sum_u nnz_u^2`` scattered updates, twice: it counts the output first; on nearly
    full tables it was most of the projector's setup time at 1e7 rows, 0.7 of 3 s, where
    the blocks take 0.06 s). Both form the products ``B[u, s] (B[u, t] inv[u])``; they
    differ only in the order of the sums over units (rounding)."""
    n_small = cells.shape[1]
    if dense is None:
        dense = _dense_cells(cells)
    if dense:
        out = np.zeros((n_small, n_small))
        for r, f in _csr_dense_blocks(cells):
            out += f.T @ (f * inv[r, None])
        return out
    return _dense(cells.T @ _row_scaled_csr(cells, inv))


def _row_scaled_csr(m: Any, inv: np.ndarray) -> Any:
    """``diag(inv) m`` for a CSR matrix ``m``: each stored entry times its row's factor
    (the numbers of scipy's diagonal product, without its format conversions), on ``m``'s
    own index arrays, the factors array becoming the scaled data in place."""
    from scipy import sparse

    factors = np.repeat(inv, np.diff(m.indptr))
    np.multiply(m.data, factors, out=factors)
    return sparse.csr_matrix((factors, m.indices, m.indptr), shape=m.shape, copy=False)


class SmallSetProjector:
    """Exact two-way (weighted) within projection when one fixed-effect set is small.

    With ``A`` the indicators of the large set (units), ``D`` those of the small set
    (periods, ``T`` levels) and weights ``W``, the residual maker of ``[A, D]`` is
    (Frisch-Waugh-Lovell; the Schur complement of the unit block)

    ``M = M_A - M_A D S^+ D' W M_A``,  ``S = D' W M_A D = diag(w_t) - B' diag(1/w_u) B``,

    with ``B`` (N x T) the weight sums per unit x period cell and ``M_A`` the weighted
    within-unit projection. ``S`` is T x T, positive semi-definite with one null
    direction per connected component of the unit-period graph (the constant within a
    component); its pseudo-inverse gives one solution, and ``M_A D g`` is the same for
    all. A projection is two group-sum passes and three gathers: exact, no iteration
    (the alternating projections of :func:`demean` converge to the same point;
    tested to 1e-12 against dummy-variable regressions).

    ``ok`` is False (use alternating projections) when the eigenvalues do not separate
    the null space cleanly (numerically ill-conditioned ``S``: a period linked to the
    rest by a sliver of weight).
    """

    def __init__(self, big: _Projector, small: _Projector, weights: np.ndarray | None
                 ) -> None:
        from scipy import sparse

        self.big, self.small = big, small
        if weights is None:
            self.cells = _count_cells(big.codes, big.n_groups, small.codes, small.n_groups)
        else:
            self.cells = sparse.csr_matrix((weights, (big.codes, small.codes)),
                                           shape=(big.n_groups, small.n_groups))
            self.cells.sum_duplicates()
        w_t = small.wsum
        #: products with B through dense blocks of units (see _dense_cells)
        self.dense_cells = _dense_cells(self.cells)
        linked = _scaled_gram(self.cells, big.inv_wsum, dense=self.dense_cells)
        s = np.diag(w_t) - linked
        s = 0.5 * (s + s.T)
        lam, vec = np.linalg.eigh(s)
        # The null space is known exactly: one direction (the indicator of its periods) per
        # connected component of the unit-period graph, i.e. of the period graph linked by
        # a common unit. Its computed eigenvalues are rounding noise that grows with the
        # number of rows summed into S (about 1.5e-12 x top at 1e6 rows, 3.4e-12 at 1e7),
        # so the null space is the n_comp smallest eigenvalues, accepted when a clean gap
        # separates them from the rest of the spectrum (no period linked to the others by
        # a mere sliver of weight); otherwise alternating projections are used.
        from scipy.sparse.csgraph import connected_components

        # (two periods are linked when a unit has rows in both: a positive entry of B'B)
        n_comp = int(connected_components(sparse.csr_matrix(linked != 0),
                                          directed=False)[0])
        null, self.ok = _known_null_space(lam, n_comp)
        self.n_null = n_comp
        keep = ~null
        self.s_pinv = (vec[:, keep] / lam[keep]) @ vec[:, keep].T

    @staticmethod
    def applicable(big: _Projector, small: _Projector) -> bool:
        """Small enough for a dense Schur complement, cheap enough to form it."""
        if small.n_groups > SMALL_SET_MAX or small.n_groups < 2:
            return False
        per_level = np.bincount(big.codes, minlength=big.n_groups).astype(float)
        # rows per big level bound its cells; sum of squares bounds the work of B'B
        return float(np.sum(np.minimum(per_level, small.n_groups) ** 2)) <= (
            _SCHUR_WORK_MAX * max(len(big.codes), 1))

    def subtract(self, x: np.ndarray, *, overwrite: bool = False) -> np.ndarray:
        """``M x`` for ``x`` (n, k): the residual of the two-way projection
        (``overwrite=True``: computed in ``x`` itself when it is a writable float64
        array the caller no longer needs)."""
        r = self.big.subtract(x, overwrite=overwrite)
        g = self.s_pinv @ self.small.sums(r)
        _gather_update(r, g, self.small.codes, np.subtract)
        back = self.cells @ g
        back *= self.big.inv_wsum[:, None]
        _gather_update(r, back, self.big.codes, np.add)
        return r


def two_way_projector(fe_codes: Sequence[np.ndarray], weights: np.ndarray | None = None
                      ) -> SmallSetProjector | None:
    """:class:`SmallSetProjector` for two FE sets when one is small, else None."""
    if len(fe_codes) != 2 or len(fe_codes[0]) == 0:
        return None
    w = None if weights is None else np.asarray(weights, dtype=float)
    p0, p1 = (_Projector(c, w) for c in fe_codes)
    big, small = (p0, p1) if p1.n_groups <= p0.n_groups else (p1, p0)
    if not SmallSetProjector.applicable(big, small):
        return None
    proj = SmallSetProjector(big, small, w)
    return proj if proj.ok else None


def demean(x: np.ndarray, fe_codes: Sequence[np.ndarray], *, weights: np.ndarray | None = None,
           tol: float = 1e-10, maxiter: int = 10_000,
           exact_two_way: bool = True) -> DemeanResult:
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
    exact_two_way : bool
        Two sets, one of them small (at most :data:`SMALL_SET_MAX` levels, e.g. periods):
        project exactly with :class:`SmallSetProjector` (default). False forces the
        alternating projections (the slow oracle of the exact path).

    Notes
    -----
    One fixed-effect set is a single exact projection. Two sets on a balanced panel
    (every cell once, equal weights) need one sequential sweep (exact). Two sets of which
    one is small (unbalanced panels: gaps, entry and exit) are projected exactly through
    the Schur complement of the large set (:class:`SmallSetProjector`). Otherwise the
    method of alternating projections runs until the change per sweep is below ``tol``;
    ``converged`` / ``iterations`` report how it ended (``iterations`` is 1 for the
    exact paths).
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
        # one sequential sweep is the exact two-way projection on a balanced panel, and
        # it keeps full precision when the levels are large (x - m_i - m_t + m loses
        # digits to cancellation)
        res = projs[1].subtract(projs[0].subtract(x2))
        return DemeanResult(res[:, 0] if squeeze else res, True, 1)
    if len(projs) == 2 and exact_two_way:
        big, small = ((projs[0], projs[1]) if projs[1].n_groups <= projs[0].n_groups
                      else (projs[1], projs[0]))
        if SmallSetProjector.applicable(big, small):
            proj = SmallSetProjector(big, small, w)
            if proj.ok:
                res = proj.subtract(x2)
                return DemeanResult(res[:, 0] if squeeze else res, True, 1)
    if np.shares_memory(x2, x):
        # the sweeps below write into x2: never into the caller's array (a contiguous
        # float x is x2 itself; the test oracle's design was demeaned in place by this)
        x2 = x2.copy()
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
    from scipy.sparse import coo_matrix, csr_matrix
    from scipy.sparse.csgraph import connected_components

    if nb > na:
        a, b, na, nb = b, a, nb, na
    if nb * nb <= max(4 * len(a), 1 << 20):
        # the components of the bipartite graph are those of the graph on the smaller set
        # that links each level of the larger set's first-seen partner to its others:
        # one n-sized temporary and a (nb x nb) adjacency instead of an (na+nb)^2 graph
        partner = np.empty(na, dtype=np.intp)
        partner[a] = b
        key = partner[a]
        key *= nb
        key += b
        adj = np.bincount(key, minlength=nb * nb).reshape(nb, nb)
        del key
        return int(connected_components(csr_matrix(adj), directed=False)[0])
    n = na + nb
    m = coo_matrix((np.ones(len(a)), (a, b + na)), shape=(n, n))
    return int(connected_components(m, directed=False)[0])


def _agrees(table: np.ndarray, codes: np.ndarray, values: np.ndarray) -> bool:
    """``np.array_equal(table[codes], values)`` in row blocks (no n-row gather)."""
    codes, values = np.asarray(codes), np.asarray(values)
    if codes.shape != values.shape or codes.ndim != 1:
        return False
    return all(np.array_equal(table[codes[sl]], values[sl]) for sl in row_blocks(len(codes)))


def fe_dof(fe_codes: Sequence[np.ndarray], cluster_codes: Sequence[np.ndarray] = (),
           nested: bool = True, *, balanced: bool = False,
           exact: bool = False, n_obs: int | None = None,
           n_slopes: int = 0) -> tuple[int, int]:
    """Number of fixed-effect parameters, fixest style.

    Returns ``(k_fe, k_fe_nested)``: ``k_fe`` counts the levels of every FE set minus one
    redundancy per extra FE set -- R fixest's default (``nparams = k + sum(fixef_sizes - 1)
    + 1``, ``ssc(fixef.force_exact = FALSE)``) and pyfixest's. ``exact=True`` counts the
    redundancies of exactly two sets exactly, as the number of connected components of
    their bipartite graph (fixest ``fixef.force_exact = TRUE``, reghdfe/ppmlhdfe's first
    pair): it differs from the default when the two sets are not connected, e.g.
    exporter-year and importer-year fixed effects (one component per year).
    ``k_fe_nested`` is what fixest ``fixef.K = "nested"`` removes from K: for each FE set
    nested in a cluster variable, its number of levels minus one (the set still absorbs
    one intercept-like parameter, so ``K = k + k_fe - k_fe_nested``, as in fixest and
    pyfixest's ``n_fe_fully_nested``).

    ``balanced=True`` tells that two FE sets are a balanced panel (every cell observed,
    :func:`is_balanced_twoway`): their bipartite graph is then connected (one component)
    and the graph search of ``exact=True`` is skipped. ``n_obs`` and ``n_slopes``: when the
    default count leaves no residual degree of freedom (``n_obs <= n_slopes + k_fe``, tiny
    designs with disconnected sets, where fixest's ``(n-1)/(n-K)`` turns negative) the exact
    count is used instead.
    """
    sizes = [int(c.max()) + 1 for c in fe_codes]
    if not sizes:
        return 0, 0
    redundant = len(sizes) - 1
    if len(sizes) == 2 and not balanced and (
            exact or (n_obs is not None and n_obs <= n_slopes + sum(sizes) - redundant)):
        redundant = _n_components(fe_codes[0], fe_codes[1], sizes[0], sizes[1])
    k_fe = sum(sizes) - redundant
    k_nested = 0
    if nested and cluster_codes:
        for i, c in enumerate(fe_codes):
            for cl in cluster_codes:
                # FE nested in cluster: each FE level maps to exactly one cluster.
                # O(n) check: write each row's cluster into its FE level (the last write
                # wins) and compare back; all rows agree iff the level has one cluster.
                owner = np.empty(sizes[i], dtype=np.asarray(cl).dtype)
                owner[c] = cl
                if _agrees(owner, c, cl):
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


def centred_ss(x: np.ndarray, weights: np.ndarray | None = None, *,
               absorbed_constant: bool = True) -> np.ndarray:
    """The collinearity rule's reference for each column of ``x`` (``ref_ss`` of
    :func:`solve_normal`): its (weighted) sum of squares about its mean, before the fixed
    effects are swept out. With ``absorbed_constant`` (fixed effects present) a constant
    column gets an infinite reference: any set of fixed effects absorbs it, and with its
    centred sum of squares of 0 the rule compared its swept residue (rounding, ~1e-16 of
    its level) with itself and kept it, with an estimate made of rounding -- an indicator
    set on every row of a saturated panel got -0.47 on the dense path, a constant
    covariate beside indicators on an unbalanced panel 8.9e13 on the exact two-way path,
    where the other paths report NaN (tests/core/test_fastpath_equivalence_fe.py)."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    if weights is None:
        mean = x.mean(axis=0)
        ss = np.einsum("ij,ij->j", x, x) - n * mean**2
    else:
        wsum = weights.sum()
        mean = weights @ x / wsum
        ss = np.einsum("i,ij,ij->j", weights, x, x) - wsum * mean**2
    if absorbed_constant and n:
        ss = np.where(np.ptp(x, axis=0) == 0, np.inf, ss)
    return ss


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
    xw = x if weights is None else x * weights[:, None]
    xtx = xw.T @ x
    xty = xw.T @ y
    coef, bread, kept = solve_normal(xtx, xty, collin_tol=collin_tol, ref_ss=ref_ss)
    ki = np.flatnonzero(kept)
    if len(ki):
        resid = y - x[:, ki] @ coef[ki]
    else:
        resid = y.copy()
    return OLSFit(coef=coef, resid=resid, bread=bread, rank=len(ki), kept=kept)


def solve_normal(xtx: np.ndarray, xty: np.ndarray, *, collin_tol: float = 1e-10,
                 ref_ss: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solve the normal equations ``X'X b = X'y`` with sequential collinearity detection.

    Parameters
    ----------
    xtx : ndarray, shape (k, k)
        Cross-product ``X'WX`` of the (demeaned) regressors.
    xty : ndarray, shape (k,)
        ``X'Wy``.
    collin_tol, ref_ss
        As in :func:`ols`.

    Returns
    -------
    coef : ndarray, shape (k,)
        NaN for dropped (collinear) columns.
    bread : ndarray, shape (k, k)
        ``(X'WX)^{-1}`` on the kept columns, NaN elsewhere.
    kept : ndarray of bool, shape (k,)
    """
    from scipy.linalg import solve_triangular

    k = xtx.shape[0]
    # sequential collinearity check on the Cholesky diagonal (like fixest's cpp_cholesky):
    # column j's residual variance given the kept columns before it is
    # ``x_jj - b' A^{-1} b = x_jj - |L^{-1} b|^2`` with ``A = L L'`` the kept block, whose
    # Cholesky factor grows by one row per kept column (O(k^3) in all; a fresh solve of
    # the kept block per column was O(k^4): 2 s at k = 700 cohort x period cells)
    # scipy's own finiteness check of the m x m block in every solve cost O(k^3) in all
    # (two thirds of the loop at k = 1,760 cohort x period cells): the same check is made
    # here on what is new each step -- the right-hand side, and each new row of the factor
    # when it is written (the error scipy raised, under the same conditions)
    kept = np.ones(k, dtype=bool)
    diag = np.diag(xtx).copy()
    chol = np.zeros((k, k))
    chol_finite = True
    idx: list[int] = []
    for j in range(k):
        if diag[j] <= 0:
            kept[j] = False
            continue
        m = len(idx)
        if m:
            b = xtx[idx, j]
            if not (chol_finite and np.isfinite(b).all()):
                raise ValueError("array must not contain infs or NaNs")
            w = solve_triangular(chol[:m, :m], b, lower=True, check_finite=False)
        resid_var = xtx[j, j] - (w @ w if m else 0.0)
        scale = diag[j] if ref_ss is None else max(ref_ss[j], diag[j])
        if resid_var <= collin_tol * max(scale, 1e-300):
            kept[j] = False
            continue
        if m:
            chol[m, :m] = w
            chol_finite = chol_finite and bool(np.isfinite(w).all())
        chol[m, m] = np.sqrt(resid_var)
        chol_finite = chol_finite and bool(np.isfinite(chol[m, m]))
        idx.append(j)
    coef = np.full(k, np.nan)
    bread = np.full((k, k), np.nan)
    ki = np.flatnonzero(kept)
    if len(ki):
        sub = xtx[np.ix_(ki, ki)]
        inv = np.linalg.inv(sub)
        coef[ki] = inv @ xty[ki]
        bread[np.ix_(ki, ki)] = inv
    return coef, bread, kept


def _twoway_project(v: np.ndarray, u: np.ndarray, t: np.ndarray, n_u: int,
                    n_t: int, *, overwrite: bool = False) -> np.ndarray:
    """``M v = v - vbar_unit - vbar_time + vbar`` for one vector on a balanced panel.

    The exact two-way within projection when every unit x time cell is observed once,
    computed as one sweep of alternating projections (unit means out, then the period
    means of the result), which is exact on a balanced panel. Taking the period means
    after the unit means keeps the intermediate numbers small: the one-line formula
    subtracts raw period means of the size of ``v`` and loses digits when ``v`` has large
    levels (e.g. 1e6 + noise). ``overwrite=True``: in ``v`` itself (a writable float64
    array the caller no longer needs), no copy.
    """
    if overwrite and v.dtype == np.float64 and v.flags.writeable:
        out = v
    else:
        out = np.array(v, dtype=float, copy=True)
    # unit means (code_sums = np.bincount's sums, without its doubled output), divided in
    # place, are taken before ``out`` (possibly ``v`` itself) is updated
    unit_mean = code_sums(u, n_u, v)
    unit_mean /= n_t
    _gather_update(out, unit_mean, u, np.subtract)
    del unit_mean
    _gather_update(out, np.bincount(t, weights=out, minlength=n_t) / n_u, t, np.subtract)
    return out


def _dense(a: object) -> np.ndarray:
    return a.toarray() if hasattr(a, "toarray") else np.asarray(a)


def _row_block(n_cols: int) -> int:
    """Rows per block of a blocked product: small enough that OpenBLAS runs it on one
    thread (on a loaded machine its thread hand-off made a (1e5 x 10) @ (10 x 15)
    product 20x slower than the single-threaded one: 32 ms vs 1.4 ms measured) and that
    the block's temporaries stay small (a few MB whatever the number of rows)."""
    return max(64, 131_072 // max(1, n_cols))


def _matmul_rowblocks(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for a tall ``a`` (m, k) and a small ``b`` (k, p), in row blocks."""
    m = a.shape[0]
    rows = _row_block(a.shape[1] * b.shape[1])
    if m <= rows:
        return a @ b
    out = np.empty((m, b.shape[1]))
    for start in range(0, m, rows):
        np.matmul(a[start:start + rows], b, out=out[start:start + rows])
    return out


def _sub_rowblocks(out: np.ndarray, part: Callable[[slice], Any], *,
                   rows: int | None = None) -> None:
    """``out -= P`` for a tall ``P`` given block by block (``part(rows)`` is ``P[rows]``,
    dense or scipy sparse), so that no temporary of the size of ``out`` is made.
    ``rows``: rows per block (default: :func:`_row_block`'s, sized for BLAS; a sparse
    ``P`` wants fewer, larger blocks, e.g. :func:`_sparse_block_rows` -- a CSR product
    computes each row on its own, so blocks give the same numbers as the whole product)."""
    m = out.shape[0]
    if rows is None:
        rows = _row_block(out.shape[1] * 16)
    for start in range(0, m, rows):
        r = slice(start, start + rows)
        out[r] -= _dense(part(r))


#: cells per dense block of a sparse part in :func:`_sub_rowblocks` (8 MB of float64)
_SPARSE_BLOCK_CELLS = 1 << 20


def _sparse_block_rows(n_cols: int) -> int:
    """Rows per block when the blocks of :func:`_sub_rowblocks` are sparse products
    (about ``_SPARSE_BLOCK_CELLS`` cells each: few calls into scipy)."""
    return max(1, _SPARSE_BLOCK_CELLS // max(1, n_cols))


#: cells (score columns + periods) of one block of clusters in
#: :meth:`TwoWayOLSFit.cluster_meat` (8 MB of float64 whatever the number of clusters)
_MEAT_BLOCK_CELLS = 1 << 20


#: largest number of cells of a dense unit x indicator count table (else scipy sparse):
#: about two n-vectors of memory at n = 1e6
_DENSE_CELLS_MAX = 2**21


def _cell_counts(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int,
                 weights: np.ndarray | None = None) -> object:
    """Counts (or ``weights`` sums) of (row, col) code pairs as an (n_rows, n_cols) float
    table.

    Dense (``rowblocks.pair_sums``) when the table is small compared with the data, else a
    scipy CSR matrix with the same entries.
    """
    if n_rows * n_cols <= max(_DENSE_CELLS_MAX, 2 * len(rows)):
        # summed in float64 (counts exact), block by block: no n-row pair codes
        return pair_sums(rows, n_rows, cols, n_cols, weights, dtype=np.float64)
    from scipy import sparse

    data = np.ones(len(rows)) if weights is None else weights
    return sparse.csr_matrix((data, (rows, cols)), shape=(n_rows, n_cols))


@dataclass(frozen=True)
class TwoWayOLSFit(OLSFit):
    """:class:`OLSFit` of :func:`ols_twoway_balanced` / :func:`ols_twoway_small_time`, with
    what the scores need.

    Extra attributes (n rows, N units, T periods, p indicator columns, q dense columns):
    ``yd_ss`` the sum of squares of the demeaned outcome; ``unit_codes`` (n,),
    ``time_codes`` (n,), ``onehot`` (n,) indicator codes (-1 = no indicator);
    ``counts`` (p,) rows per indicator; ``unit_counts`` (N, p, dense or scipy sparse;
    None when the dense (N, p) table became ``unit_part`` in place, to keep one such
    table in memory)
    and ``time_counts`` (T, p) indicator counts per unit / period; ``mz`` (n, q) the
    demeaned dense columns. ``unit_part`` (N, p, dense or sparse), ``time_part`` (T, p)
    and ``grand`` (p,) give the demeaned indicators row by row:
    ``(M D)_i = D_i - unit_part[u_i] - time_part[t_i] + grand`` (balanced panel:
    ``A_u / T``, ``A_t / N``, ``c / n``). ``weights`` (n,) the observation weights of a
    weighted fit (None: unweighted); the scores are then ``(M x_i) w_i e_i``.
    """

    yd_ss: float
    unit_codes: np.ndarray
    time_codes: np.ndarray
    onehot: np.ndarray
    counts: np.ndarray
    unit_counts: object
    time_counts: np.ndarray
    mz: np.ndarray
    unit_part: object = None
    time_part: np.ndarray | None = None
    grand: np.ndarray | None = None
    weights: np.ndarray | None = None

    def _score_resid(self) -> np.ndarray:
        """``w_i e_i``: the residual factor of row i's score (``e`` without weights)."""
        return self.resid if self.weights is None else self.weights * self.resid

    @property
    def ssr(self) -> float:
        """Weighted sum of squared residuals ``sum_i w_i e_i^2``."""
        return float(np.dot(self._score_resid(), self.resid))

    def score_meat(self) -> np.ndarray:
        """``S'S`` for the (n, rank) per-observation scores ``S = cluster_sums(None)``,
        accumulated over blocks of rows: the heteroskedasticity-robust meat without an
        n x k array (row i's score is ``((M D)_i, (M Z)_i) w_i e_i``, see :meth:`cluster_sums`)."""
        from scipy import sparse

        e_all = self._score_resid()
        n = len(e_all)
        p = self.unit_part.shape[1]
        q = self.mz.shape[1]
        k = p + q
        meat = np.zeros((k, k))
        rows = max(1, _GATHER_ROWS // max(1, k))
        for start in range(0, n, rows):
            r = slice(start, min(n, start + rows))
            e = e_all[r]
            s = np.zeros((len(e), k))
            if p:
                c = self.onehot[r]
                hit = np.flatnonzero(c >= 0)
                s[hit, c[hit]] = 1.0
                u_part = self.unit_part[self.unit_codes[r]]
                s[:, :p] -= u_part.toarray() if sparse.issparse(u_part) else u_part
                s[:, :p] -= self.time_part[self.time_codes[r]]
                if self.grand is not None:
                    s[:, :p] += self.grand
            if q:
                s[:, p:] = self.mz[r]
            s *= e[:, None]
            meat += s.T @ s
        return meat if self.kept.all() else meat[np.ix_(self.kept, self.kept)]

    def cluster_sums(self, codes: np.ndarray | None) -> np.ndarray:
        """Per-cluster score sums ``s_g = sum_{i in g} (M x_i) w_i e_i`` of the kept columns
        (``w_i = 1`` without weights).

        Parameters
        ----------
        codes : ndarray of int, shape (n,), or None
            Dense cluster codes; ``None`` = one cluster per observation (the HC scores).

        Returns
        -------
        ndarray, shape (G, rank)

        Notes
        -----
        With ``(M D)_i = D_i - U[u_i] - V[t_i] + m`` (``U = unit_part``, ``V =
        time_part``, ``m = grand``) and ``D`` the indicator block,
        ``s_g = C'(D o e) - E_gu U - F_gt V + E_g m'``, where ``E_gu`` (``F_gt``) sums the
        residuals over cluster x unit (cluster x time) cells. When clusters nest units,
        ``E_gu`` has one entry per unit. Dense columns use their demeaned values.
        :meth:`cluster_meat` gives ``S'S`` of this table without forming it.
        """
        n = len(self.resid)
        g = np.arange(n) if codes is None else np.asarray(codes, dtype=np.intp)
        n_g = int(g.max()) + 1
        # a column view of the table (no copy; BLAS takes the stride)
        out = self._block_sums(slice(None), g, n_g, 0, self._unit_link(g, n_g))[:, 1:]
        return out if self.kept.all() else out[:, self.kept]

    def cluster_meat(self, codes: np.ndarray) -> np.ndarray:
        """``S'S`` (rank, rank) for ``S = cluster_sums(codes)``, accumulated over blocks of
        clusters so that the (G, rank) table never exists (at 1e6 units and 63 cells it is
        512 MB, and the kernel's first touch of its fresh pages was most of the cost).

        The rows are grouped by block of clusters once (nothing to do when the codes are
        already in blocks, e.g. units of a panel sorted by unit; else a stable radix sort of
        the 16-bit block numbers, O(n)); each block's score sums are the same numbers as
        the rows of :meth:`cluster_sums` (the same sums, added in the same row order), and
        the block products ``S_b'S_b`` are summed into the meat (a different summation
        order from ``S'S`` of the whole table: equal to rounding, tested to 1e-12).
        """
        g = np.asarray(codes, dtype=np.intp)
        n = len(g)
        n_g = int(g.max()) + 1
        p = self.unit_part.shape[1]
        cols = p + 1 + self.mz.shape[1]  # columns of a block's table
        width = cols + self.time_counts.shape[0]  # + its cluster x period sums
        per = max(1, _MEAT_BLOCK_CELLS // width, -(-n_g // 65535))  # clusters per block
        link = self._unit_link(g, n_g)
        ki = np.flatnonzero(self.kept)
        if not len(ki):
            return np.zeros((0, 0))
        if n_g <= per:  # one block: the whole table, as S'S always was
            s = self._block_sums(slice(None), g, n_g, 0, link)[:, 1:]
            s = s if self.kept.all() else s[:, self.kept]
            return s.T @ s
        n_b = -(-n_g // per)
        bid = np.empty(n, dtype=np.uint16)
        grouped = True
        for sl in row_blocks(n):
            bid[sl] = g[sl] // per
            lo = max(0, sl.start - 1)  # the row before the block too
            grouped = grouped and bool(np.all(bid[lo + 1:sl.stop] >= bid[lo:sl.stop - 1]))
        if grouped:  # rows already in blocks: each block is a range of rows
            at = np.append(np.searchsorted(bid, np.arange(n_b, dtype=np.uint16)), n)
            blocks = [(slice(int(at[b]), int(at[b + 1])), b * per) for b in range(n_b)]
        else:
            order = np.argsort(bid, kind="stable")  # radix sort: O(n)
            at = np.append(0, np.cumsum(code_sums(bid, n_b, dtype=np.intp)))
            blocks = [(order[at[b]:at[b + 1]], b * per) for b in range(n_b)]
        del bid
        meat = np.zeros((cols, cols))
        for rows, g0 in blocks:
            m = min(per, n_g - g0)
            gl = g[rows]
            if g0:
                gl = gl - g0
            if len(gl) == 0:
                continue
            s = self._block_sums(rows, gl, m, g0, link, small=True)
            # S_b'S_b over every column of the block (column 0 is dropped below): numpy
            # takes ``a.T @ a`` to BLAS syrk, half the flops, exactly symmetric
            meat += s.T @ s
        return meat[np.ix_(ki + 1, ki + 1)]

    def _unit_link(self, g: np.ndarray, n_g: int) -> tuple[str, object]:
        """How the clusters ``g`` relate to the units, for the ``E_gu U`` term of the score
        sums: ``("unit", None)`` clusters are the units; ``("nested", E)`` each unit in one
        cluster, ``E`` the (G, N) sparse residual sums (one entry per unit);
        ``("general", None)`` any other clustering (``E_gu`` made block by block)."""
        from scipy import sparse

        u = self.unit_codes
        n_u = self.unit_part.shape[0]
        if g is u or (n_g == n_u and np.array_equal(g, u)):
            return "unit", None
        owner = np.zeros(n_u, dtype=np.intp)  # a unit level without rows: cluster 0
        owner[u] = g
        if _agrees(owner, u, g):  # clusters nest units: one cell per unit
            e_u = np.bincount(u, weights=self._score_resid(), minlength=n_u)
            return "nested", sparse.csr_matrix((e_u, (owner, np.arange(n_u))),
                                               shape=(n_g, n_u))
        return "general", None

    def _block_sums(self, rows: slice | np.ndarray, g: np.ndarray, n_g: int, g0: int,
                    link: tuple[str, object], *, small: bool = False) -> np.ndarray:
        """The (n_g, 1 + p + q) table whose columns ``1 ..`` are the score sums (all
        columns, kept or not) of the clusters ``g0 .. g0 + n_g - 1`` (column 0: not a
        score) from the rows ``rows`` (a slice or row positions: every row of those
        clusters, in their order) whose cluster codes minus ``g0`` are ``g``; ``link``
        from :meth:`_unit_link`. The formula of :meth:`cluster_sums`. ``small``: the table
        is a small block, its elementwise terms are taken in one piece (the same numbers
        as row block by row block)."""
        from scipy import sparse

        e = self._score_resid()[rows]
        n = len(e)
        t = self.time_codes[rows]
        n_u, p = self.unit_part.shape
        n_t = self.time_counts.shape[0]
        q = self.mz.shape[1]
        # residual sums per cluster x indicator cell (column 0: rows without indicator)
        if p:
            full = pair_sums(g, n_g, self.onehot[rows], p + 1, e, shift_b=1)
            if q:
                full = np.concatenate([full, np.empty((n_g, q))], axis=1)
        else:
            full = np.zeros((n_g, 1 + q))
        out = full[:, 1:]
        whole = n_g if small else None  # rows per piece of the elementwise terms
        if p:
            sd = out[:, :p]
            u_part = self.unit_part
            kind, e_gu = link
            # - E_gu U: residual sums over cluster x unit cells
            if kind == "unit":  # clusters = units: rows g0 .. of U
                e_u = np.bincount(g, weights=e, minlength=n_g)
                if sparse.issparse(u_part) and small:  # the block's stored entries only
                    u_blk = u_part.tocsr()[g0:g0 + n_g]
                    u_blk.sum_duplicates()  # one stored entry per cell (no-op if so)
                    at = np.repeat(np.arange(n_g), np.diff(u_blk.indptr))
                    sd[at, u_blk.indices] -= e_u[at] * u_blk.data
                elif sparse.issparse(u_part):  # unit blocks: no dense (units x p) temporary
                    u_part = u_part.tocsr()
                    _sub_rowblocks(sd, lambda r: sparse.diags(e_u[r]) @ u_part[
                        g0 + r.start:g0 + min(r.stop, n_g)], rows=_sparse_block_rows(p))
                else:
                    _sub_rowblocks(sd, lambda r: e_u[r, None] * u_part[
                        g0 + r.start:g0 + min(r.stop, n_g)], rows=whole)
            else:
                if kind == "general":
                    e_gu = sparse.csr_matrix((e, (g, self.unit_codes[rows])),
                                             shape=(n_g, n_u))
                    g_off = 0
                else:  # nested: the block's rows of the whole (G, N) table
                    g_off = g0
                _sub_rowblocks(sd, lambda r: _times_unit_part(
                    e_gu[g_off + r.start:g_off + min(r.stop, n_g)], u_part),
                    rows=_sparse_block_rows(p))
            # - F_gt V: residual sums over cluster x period cells
            if n_g * n_t <= 4 * n:
                f_gt = pair_sums(g, n_g, t, n_t, e)
                _sub_rowblocks(sd, lambda r: f_gt[r] @ self.time_part)
                del f_gt
            else:
                sd -= sparse.csr_matrix((e, (g, t)), shape=(n_g, n_t)) @ self.time_part
            # + E_g m'
            if self.grand is not None:  # row blocks: no (G, p) temporary
                e_g = np.bincount(g, weights=e, minlength=n_g)
                grand = self.grand
                _sub_rowblocks(sd, lambda r: -(e_g[r, None] * grand), rows=whole)
        for j in range(q):
            out[:, p + j] = np.bincount(g, weights=self.mz[rows, j] * e, minlength=n_g)
        return full


def _indicator_tables(c: np.ndarray, u: np.ndarray, t: np.ndarray, n_u: int, n_t: int,
                      p: int, w: np.ndarray | None = None, *, dense: bool = False
                      ) -> tuple[np.ndarray, np.ndarray, object, np.ndarray, np.ndarray | None]:
    """Counts of the ``p`` indicator columns coded ``c`` (-1 = none) by the two-way
    panel's fixed effects, shared by the balanced and small-period-set fits: ``c1 = c + 1``
    (0 = no indicator), the column totals, the (units x p) and (periods x p) counts
    (with weights ``w``: the sums of the weights instead of the counts), and ``A_u'A_u``
    (p, p) when it came with a sparse unit table (else None). ``dense=True``: the unit
    table dense whatever its size (the caller makes a dense (units x p) table of it)."""
    c1 = c + 1
    # float64 sums (counts exact) block by block: no n-row pair codes or intp copies
    cnt = code_sums(c1, p + 1, w)[1:]
    ata = None
    if dense or n_u * (p + 1) <= max(_DENSE_CELLS_MAX, 2 * len(u)):  # as _cell_counts
        # dense and C-contiguous (rows without an indicator skipped, not counted in a
        # column dropped afterwards): scipy's products take it without a copy
        a_u = pair_sums(u, n_u, c, p, w, dtype=np.float64, skip_negative_b=True)
    else:
        lean = None if w is not None else _unit_counts_csr(u, c, n_u, p)
        if lean is None:
            a_u = _cell_counts(u, c1, n_u, p + 1, w)[:, 1:]
        else:
            a_u, ata = lean
    a_t = pair_sums(t, n_t, c1, p + 1, w, dtype=np.float64)
    return c1, cnt, a_u, np.ascontiguousarray(a_t[:, 1:]), ata


#: cells (units x p) per block of :func:`_unit_counts_csr`
_COUNT_BLOCK_CELLS = 1 << 20
#: :func:`_unit_counts_csr` takes ``A_u'A_u`` from dense blocks when ``units x p^2`` is at
#: most this many times ``sum_u nnz_u^2`` (BLAS syrk against scipy's sparse product)
_SYRK_OVER_SPARSE = 200.0


def _unit_counts_csr(u: np.ndarray, c: np.ndarray, n_u: int, p: int
                     ) -> tuple[object, np.ndarray] | None:
    """The (units x p) counts of the indicator codes ``c`` (-1 = none) as a canonical CSR
    matrix (float64 counts) from :func:`_count_cells`' narrow dense table, with
    ``A_u'A_u`` (p, p); None when that table would be too large.

    The same matrix as the n-entry COO build of :func:`_cell_counts` (which made n-row
    index and value arrays and sorted them: most of the setup time at 1e7 rows).
    ``A_u'A_u`` is exact (integer sums below 2**53), so it equals the sparse product; it
    is taken from dense blocks of units (BLAS syrk) when that costs less than the sparse
    product, else from the sparse product."""
    a_u = _count_cells(u, n_u, c, p, skip_negative=True, fallback=False)
    if a_u is None or p == 0:
        return None
    nnz_u = np.diff(a_u.indptr).astype(np.float64)
    # dense syrk: n_u p^2 / 2 multiply-adds at BLAS speed; the sparse product: about
    # sum_u nnz_u^2 scattered updates, twice (scipy counts the output first)
    if n_u * p * p <= _SYRK_OVER_SPARSE * float(nnz_u @ nnz_u):
        ata = np.zeros((p, p))
        rows = max(1, _COUNT_BLOCK_CELLS // p)
        for start in range(0, n_u, rows):
            f = a_u[start:start + rows].toarray()
            ata += f.T @ f
    else:
        ata = _dense(a_u.T @ a_u)
    return a_u, ata


def _onehot_codes(onehot: np.ndarray | None, n: int) -> np.ndarray:
    """The indicator codes as an integer array (-1 = no indicator), kept in their own
    integer type when it is at least 32 bits (an event study passes int32 codes: 4 bytes a
    row instead of 8, and so is every derived array)."""
    if onehot is None:
        return np.full(n, -1, dtype=np.int32)
    c = np.asarray(onehot)
    if c.dtype.kind not in "iu" or c.dtype.itemsize < 4:
        c = c.astype(np.intp)
    return c


def _solve_indicator_system(xtx: np.ndarray, xty: np.ndarray, dt, mz: np.ndarray,
                            yd: np.ndarray, cnt: np.ndarray, zz: np.ndarray,
                            collin_tol: float, w: np.ndarray | None = None):
    """Finish and solve the normal equations of an indicator block plus covariates after a
    fixed-effect sweep. ``xtx[:p, :p]`` (the indicator block) is filled by the caller;
    ``dt(v)`` is ``D'W M v`` for a demeaned ``v``; ``mz``/``yd`` the demeaned covariates
    and outcome; ``cnt`` the indicator counts (weight sums) and ``zz`` the raw covariates
    (their centred sums of squares scale the collinearity check); ``w`` the observation
    weights (None: all one). Returns ``coef, bread, kept`` of :func:`solve_normal` and
    ``b`` (coefficients with dropped ones set to 0)."""
    p = len(cnt)
    n = len(yd)
    q = mz.shape[1]
    for j in range(q):
        xtx[:p, p + j] = dt(mz[:, j])
    xtx[p:, :p] = xtx[:p, p:].T
    if w is None:
        xtx[p:, p:] = mz.T @ mz
        xty[p:] = mz.T @ yd
    else:  # one weighted column at a time: no second n x q array
        for j in range(q):
            wm = w * mz[:, j]
            xtx[p + j, p:] = wm @ mz
            xty[p + j] = wm @ yd
    xty[:p] = dt(yd)
    # sum of squares of the centred regressors before the FE sweep (collinearity scale)
    ref_ss = np.empty(len(xty))
    wsum = float(n) if w is None else float(w.sum())
    ref_ss[:p] = cnt - wsum * (cnt / wsum) ** 2
    ref_ss[p:] = centred_ss(zz, w)
    coef, bread, kept = solve_normal(xtx, xty, collin_tol=collin_tol, ref_ss=ref_ss)
    return coef, bread, kept, np.where(kept, coef, 0.0)


def ols_twoway_balanced(y: np.ndarray, unit_codes: np.ndarray, time_codes: np.ndarray, *,
                        onehot: np.ndarray | None = None, n_onehot: int = 0,
                        z: np.ndarray | None = None,
                        collin_tol: float = 1e-10) -> TwoWayOLSFit:
    """OLS with unit and time fixed effects on a balanced panel, indicators not demeaned.

    The design is ``X = [D | Z]``: ``D`` (n, p) the 0/1 indicators of one categorical
    code (row i has a 1 in column ``onehot[i]``, none when ``onehot[i] == -1``) and ``Z``
    (n, q) dense columns. With the two-way within projector of a balanced panel
    (Wooldridge 2010, sec. 10.5; Baltagi 2021, ch. 3)
    ``M = I - P_unit - P_time + P_1``,

    ``D'MD = diag(c) - A_u'A_u / T - A_t'A_t / N + c c' / n``,

    where ``c`` (p,) counts the rows of each indicator and ``A_u`` (N, p), ``A_t``
    (T, p) count them per unit and per period; ``D'My`` and ``D'MZ`` are per-indicator
    sums of ``My`` and ``MZ``. Only ``y``, ``Z`` and the fitted indicator part are
    demeaned (closed form), so the cost is O(n (1 + q)) instead of O(n p).
    Same numbers as :func:`demean` + :func:`ols` (up to rounding).

    Parameters
    ----------
    y : ndarray, shape (n,)
    unit_codes, time_codes : ndarray of int, shape (n,)
        Dense codes; every unit x time cell exactly once (:func:`is_balanced_twoway`).
    onehot : ndarray of int, shape (n,), optional
        Indicator codes in ``-1 .. n_onehot - 1``.
    n_onehot : int
        Number of indicator columns ``p`` (columns ``0 .. p-1`` of the result).
    z : ndarray, shape (n, q), optional
        Dense regressors (columns ``p .. p+q-1``).
    collin_tol : float
        As in :func:`ols` (the reference sum of squares is that of the centred column).

    Returns
    -------
    TwoWayOLSFit
        Coefficients, residuals ``e = M(y - X b)``, bread, kept columns, and
        :meth:`TwoWayOLSFit.cluster_sums` for the sandwich meat.

    Examples
    --------
    >>> import numpy as np
    >>> u, t = np.repeat(np.arange(4), 3), np.tile(np.arange(3), 4)
    >>> d = np.where((u < 2) & (t == 2), 0, -1)          # units 0, 1 treated in t = 2
    >>> y = 1.0 * u + 0.5 * t + 2.0 * (d == 0)
    >>> fit = ols_twoway_balanced(y, u, t, onehot=d, n_onehot=1)
    >>> round(float(fit.coef[0]), 10)
    2.0
    """
    from scipy import sparse

    y = np.asarray(y, dtype=float)
    n = len(y)
    u = np.asarray(unit_codes, dtype=np.intp)
    t = np.asarray(time_codes, dtype=np.intp)
    n_u, n_t = int(u.max()) + 1, int(t.max()) + 1
    p = int(n_onehot)
    c = _onehot_codes(onehot, n)
    zz = np.empty((n, 0)) if z is None else np.asarray(z, dtype=float).reshape(n, -1)
    q = zz.shape[1]
    k = p + q
    c1, cnt, a_u, a_t, ata = _indicator_tables(c, u, t, n_u, n_t, p)
    yd = _twoway_project(y, u, t, n_u, n_t)
    mz = np.empty((n, q), order="F")
    for j in range(q):
        mz[:, j] = _twoway_project(np.ascontiguousarray(zz[:, j]), u, t, n_u, n_t)
    xtx = np.empty((k, k))
    xty = np.empty(k)
    if ata is None:
        ata = _dense(a_u.T @ a_u)
    xtx[:p, :p] = (np.diag(cnt) - ata / n_t - (a_t.T @ a_t) / n_u + np.outer(cnt, cnt) / n)

    def dt_m(v: np.ndarray) -> np.ndarray:
        """``D'M v`` for an already demeaned ``v``: ``D'v`` minus the part of ``v`` in the
        FE space (rounding residue of the demeaning, which ``(MD)'`` would annihilate)."""
        out = code_sums(c1, p + 1, v)[1:]
        out -= _dense(a_u.T @ np.bincount(u, weights=v, minlength=n_u)).reshape(-1) / n_t
        out -= a_t.T @ np.bincount(t, weights=v, minlength=n_t) / n_u
        out += cnt * (v.sum() / n)
        return out

    coef, bread, kept, b = _solve_indicator_system(xtx, xty, dt_m, mz, yd, cnt, zz,
                                                   collin_tol)
    fitted_d = np.concatenate([[0.0], b[:p]])[c1]
    resid = _twoway_project(fitted_d, u, t, n_u, n_t, overwrite=True)  # no copy
    del fitted_d
    np.subtract(yd, resid, out=resid)
    if q:
        resid -= mz @ b[p:]
    yd_ss = float(np.dot(yd, yd))
    del yd
    if sparse.issparse(a_u):
        unit_counts, unit_part = a_u, a_u / n_t
    else:  # the (N, p) counts become A_u / T in place: one such table in memory
        unit_counts, unit_part = None, a_u
        unit_part /= n_t
    return TwoWayOLSFit(coef=coef, resid=resid, bread=bread, rank=int(kept.sum()), kept=kept,
                        yd_ss=yd_ss, unit_codes=u, time_codes=t, onehot=c,
                        counts=cnt, unit_counts=unit_counts, time_counts=a_t, mz=mz,
                        unit_part=unit_part, time_part=a_t / n_u, grand=cnt / n)


#: up to this many cells (units x indicators), :func:`ols_twoway_small_time` keeps the
#: dense ``H`` table (8 MB); above, ``H`` is :class:`_UnitPart` (rows made when read)
_DENSE_UNIT_PART_MAX = 1 << 20


class _UnitPart:
    """``H = diag(1/n_u) (A_u - B G)`` of :func:`ols_twoway_small_time` (N, p) without the
    dense table: rows are made when read, from the (units x indicators) counts ``A_u`` and
    the (units x periods) counts ``B`` (both CSR) and ``G`` (T, p).

    Row ``i`` is ``A_u[i] / n_i - (B[i] G) / n_i``, the operations (and so the numbers) of
    the dense table, which was ``A_u diag(1/n_u)`` minus the CSR product ``B G`` times
    ``1/n_u`` row block by row block (a CSR product computes each row on its own). At 1e7
    rows, 1e6 units and 63 cohort x period cells the table was 504 MB whose first touch
    alone cost ~1 s of system time; the variance reads each row once or twice."""

    def __init__(self, a_u: Any, cells: Any, gam: np.ndarray, inv_nu: np.ndarray) -> None:
        self.a_u, self.cells, self.gam, self.inv_nu = a_u, cells, gam, inv_nu
        self.shape = (a_u.shape[0], gam.shape[1])

    def __getitem__(self, rows: slice | np.ndarray) -> np.ndarray:
        """Dense rows ``H[rows]`` (a slice or an integer array of rows)."""
        inv = self.inv_nu[rows, None]
        if isinstance(rows, slice) and rows.step in (None, 1):
            # views of the stored arrays, no copies (the same rows, the same products)
            start, stop, _ = rows.indices(self.shape[0])
            stop = max(start, stop)
            a_u, cells = (_csr_rows_view(m, start, stop) for m in (self.a_u, self.cells))
        else:
            a_u, cells = self.a_u[rows], self.cells[rows]
        h = a_u.toarray()
        h *= inv
        h -= _dense(cells @ self.gam) * inv
        return h

    def rmatmul(self, e: Any) -> np.ndarray:
        """``e @ H`` for a scipy sparse ``e`` (m, N): the product with the rows of ``H``
        that ``e`` reaches (its columns renumbered in order, so each output row adds the
        same terms in the same order as the product with the whole table)."""
        from scipy import sparse

        e = sparse.csr_matrix(e)
        if e.nnz == 0:
            return np.zeros((e.shape[0], self.shape[1]))
        cols = np.unique(e.indices)
        remap = np.empty(self.shape[0], dtype=e.indices.dtype)
        remap[cols] = np.arange(len(cols), dtype=e.indices.dtype)
        sub = sparse.csr_matrix((e.data, remap[e.indices], e.indptr),
                                shape=(e.shape[0], len(cols)))
        return _dense(sub @ self[cols])


def _times_unit_part(e: Any, u_part: Any) -> np.ndarray:
    """``e @ U`` for a sparse ``e`` and a unit part ``U`` (dense, sparse or lazy)."""
    if isinstance(u_part, _UnitPart):
        return u_part.rmatmul(e)
    return e @ u_part


def _period_unit_product(proj: SmallSetProjector, a_t: np.ndarray,
                         rows_of: Callable[[slice], np.ndarray] | None,
                         a_u_sc: Any) -> np.ndarray:
    """``Q = A_t - B' (diag(1/n_u) A_u)`` (T, p) of :func:`ols_twoway_small_time`, ``B =
    proj.cells`` (N, T). When ``proj.dense_cells`` (nearly full unit x period table:
    :func:`_dense_cells`), from dense blocks of units (BLAS), ``rows_of(r)`` giving the
    dense rows ``r`` of ``diag(1/n_u) A_u``: the same blocks, and so the same numbers,
    whether ``A_u`` is held dense (:func:`_small_time_dense`) or as CSR counts
    (:func:`_small_time_lean`; a block of ``N_b x max(T, p)`` cells, ~1 MB, at a time).
    Else scipy's product with ``a_u_sc`` (dense: CSC x dense; CSR: sparse-sparse, the
    same nonzero terms in the same unit order). At 1e7 rows (24 cohorts, 1e6 units, 63
    cells) the blocks took 0.075 s where the CSC x dense product took 0.14 s."""
    cells = proj.cells
    if not proj.dense_cells:
        return a_t - _dense(cells.T @ a_u_sc)
    q_mat = a_t.copy()
    for r, f in _csr_dense_blocks(cells, width=a_t.shape[1]):
        q_mat -= f.T @ rows_of(r)
    return q_mat


def _scaled_self_gram(a_u: Any, inv_nu: np.ndarray) -> np.ndarray:
    """``A_u' diag(1/n_u) A_u`` (p, p) of :func:`ols_twoway_small_time`, summed over row
    blocks of ``_row_block(p * p)`` units by BLAS. ``A_u`` (N, p) dense (its rows read
    as views), or CSR counts densified in chunks of about ``_SPARSE_BLOCK_CELLS`` cells
    cut into the same blocks: the same products in the same order, so the same sums
    either way."""
    n_u, p = a_u.shape
    out = np.zeros((p, p))
    rows = _row_block(p * p)
    dense = isinstance(a_u, np.ndarray)
    chunk = max(n_u, 1) if dense else rows * max(1, _SPARSE_BLOCK_CELLS // max(1, rows * p))
    for c0 in range(0, n_u, chunk):
        c1 = min(n_u, c0 + chunk)
        dense_chunk = a_u[c0:c1] if dense else _csr_rows_dense(a_u, c0, c1)
        for start in range(c0, c1, rows):
            blk = dense_chunk[start - c0:start - c0 + rows]
            out += blk.T @ (blk * inv_nu[start:start + rows, None])
        del dense_chunk
    return out


def _small_time_dense(c: np.ndarray, u: np.ndarray, t: np.ndarray, n_u: int, n_t: int,
                      p: int, w: np.ndarray | None, proj: SmallSetProjector):
    """The indicator tables of :func:`ols_twoway_small_time` with a dense ``H``: returns
    ``c1, cnt, A_t, A_u' diag(1/n_u) A_u, Q, G, H``."""
    # the unit table dense whatever its size: H below is a dense (units x p) table, made
    # in the unit table's own buffer (a sparse one was kept beside H, and its COO build
    # and sparse products were most of the setup time at 1e7 rows)
    c1, cnt, a_u, a_t, _ = _indicator_tables(c, u, t, n_u, n_t, p, w, dense=True)
    inv_nu = proj.big.inv_wsum
    # A_u' diag(1/n_u) A_u by row blocks, then A_u diag(1/n_u) in A_u's own buffer:
    # one (N, p) table in all, which becomes H below
    a_u_t_a_u_sc = _scaled_self_gram(a_u, inv_nu)
    a_u *= inv_nu[:, None]
    a_u_sc = h = a_u
    del a_u
    q_mat = _period_unit_product(proj, a_t, lambda r: h[r], a_u_sc)
    gam = proj.s_pinv @ q_mat
    del a_u_sc
    # H = diag(1/n_u) (A_u - B G), row block by row block
    cells = proj.cells
    if w is not None and proj.dense_cells:
        # weighted (no lazy twin): B G from dense blocks of units (BLAS; 0.09 s where the
        # CSR product took 0.21 s at 1e7 rows, 1e6 units and 63 cells)
        for r, f in _csr_dense_blocks(cells, width=p):
            part = f @ gam
            part *= inv_nu[r, None]
            h[r] -= part
    else:
        # unweighted: each row by scipy's CSR product, as the rows of _small_time_lean's
        # lazy H are made (bit-identical tables); a CSR product computes each row on its
        # own, so few, large blocks give the same numbers
        _sub_rowblocks(h, lambda r: _dense(cells[r] @ gam) * inv_nu[r, None],
                       rows=_sparse_block_rows(p))
    return c1, cnt, a_t, a_u_t_a_u_sc, q_mat, gam, h


def _small_time_lean(c: np.ndarray, u: np.ndarray, t: np.ndarray, n_u: int, n_t: int,
                     p: int, proj: SmallSetProjector):
    """:func:`_small_time_dense` (unweighted) with ``A_u`` kept as a CSR matrix of counts
    and ``H`` a :class:`_UnitPart`.

    The same numbers: ``A_u' diag(1/n_u) A_u`` from the same dense row blocks;
    ``B' diag(1/n_u) A_u`` from the same dense blocks of units (:func:`_period_unit_product`)
    or else a sparse-sparse product that adds, for each (period, indicator) entry, the
    same nonzero terms in the same (unit) order as the CSC x dense product (the zero terms
    it skips added 0); the rows of ``H`` by the same CSR products."""
    # canonical CSR (sorted, summed) from a narrow dense table, or the COO build when that
    # table would be much larger than the rows
    a_u = _count_cells(u, n_u, c, p, skip_negative=True)
    c1 = c + 1
    cnt = code_sums(c1, p + 1, None)[1:]
    a_t = np.ascontiguousarray(pair_sums(t, n_t, c1, p + 1, None, dtype=np.float64)[:, 1:])
    inv_nu = proj.big.inv_wsum
    # the same BLAS products on the same row blocks as the dense path (so the same sums),
    # the blocks cut from dense chunks of ~8 MB (one densified CSR slice per chunk)
    a_u_t_a_u_sc = _scaled_self_gram(a_u, inv_nu)
    if proj.dense_cells:
        # the dense blocks: A_u[r] diag(1/n_u), the entries of _small_time_dense's table
        q_mat = _period_unit_product(
            proj, a_t, lambda r: _csr_rows_dense(a_u, r.start, r.stop) * inv_nu[r, None],
            None)
    else:
        q_mat = _period_unit_product(proj, a_t, None, _row_scaled_csr(a_u, inv_nu))
    gam = proj.s_pinv @ q_mat
    return c1, cnt, a_t, a_u_t_a_u_sc, q_mat, gam, _UnitPart(a_u, proj.cells, gam, inv_nu)


def ols_twoway_small_time(y: np.ndarray, unit_codes: np.ndarray, time_codes: np.ndarray,
                          proj: SmallSetProjector, *, onehot: np.ndarray | None = None,
                          n_onehot: int = 0, z: np.ndarray | None = None,
                          weights: np.ndarray | None = None,
                          collin_tol: float = 1e-10) -> TwoWayOLSFit:
    """:func:`ols_twoway_balanced` for an unbalanced panel (gaps, entry and exit) whose
    time set is small, optionally weighted (WLS): the indicator block is never demeaned.

    With ``M`` the exact two-way projector of ``proj`` (:class:`SmallSetProjector`, unit
    set ``A``, period set ``T``, built with the same ``weights``), ``A_u`` (N, p) /
    ``A_t`` (T, p) the indicator counts per unit / period, ``B`` (N, T) the unit x period
    counts and ``n_u`` the rows per unit -- with weights, every count is the sum of the
    weights of those rows:

    ``Q = A_t - B' diag(1/n_u) A_u`` (= ``D_T' W M_A D``), ``G = S^+ Q``,
    ``D'WMD = diag(c) - A_u' diag(1/n_u) A_u - Q'G``,
    ``(MD)_i = D_i - H[u_i] - G[t_i]`` with ``H = diag(1/n_u) (A_u - B G)``.

    ``D'WMy`` and ``D'WMZ`` are per-indicator sums of ``w My``, ``w MZ``; the residual
    is ``M(y - D b_D) - MZ b_Z``. Cost O(n (1 + q)) plus O(N p) for ``H``; no n x p array.
    Same numbers as :func:`demean` + :func:`ols` (tested to 1e-12).
    """
    y = np.asarray(y, dtype=float)
    n = len(y)
    u = np.asarray(unit_codes, dtype=np.intp)
    t = np.asarray(time_codes, dtype=np.intp)
    if proj.big.codes is not u and not np.array_equal(proj.big.codes, u):
        raise ValueError("proj must have the units as its large set")
    w = None if weights is None else np.asarray(weights, dtype=float)
    if (w is None) != (proj.big.weights is None) or (
            w is not None and proj.big.weights is not w
            and not np.array_equal(proj.big.weights, w)):
        raise ValueError("proj must be built with the same weights")
    n_u, n_t = proj.big.n_groups, proj.small.n_groups
    p = int(n_onehot)
    c = _onehot_codes(onehot, n)
    zz = np.empty((n, 0)) if z is None else np.asarray(z, dtype=float).reshape(n, -1)
    q = zz.shape[1]
    k = p + q
    if w is None and n_u * p > _DENSE_UNIT_PART_MAX:
        c1, cnt, a_t, a_u_t_a_u_sc, q_mat, gam, h = _small_time_lean(
            c, u, t, n_u, n_t, p, proj)
    else:
        c1, cnt, a_t, a_u_t_a_u_sc, q_mat, gam, h = _small_time_dense(
            c, u, t, n_u, n_t, p, w, proj)
    yd = proj.subtract(y.reshape(n, 1))[:, 0]
    mz = np.empty((n, q), order="F")
    for j in range(q):
        mz[:, j] = proj.subtract(zz[:, j].reshape(n, 1))[:, 0]
    xtx = np.empty((k, k))
    xty = np.empty(k)
    xtx[:p, :p] = np.diag(cnt) - a_u_t_a_u_sc - q_mat.T @ gam

    def dt(v: np.ndarray) -> np.ndarray:
        return code_sums(c1, p + 1, v if w is None else w * v)[1:]

    coef, bread, kept, b = _solve_indicator_system(xtx, xty, dt, mz, yd, cnt, zz,
                                                   collin_tol, w)
    fitted_d = np.concatenate([[0.0], b[:p]])[c1]
    resid = proj.subtract(fitted_d.reshape(n, 1), overwrite=True)[:, 0]  # no copy
    del fitted_d
    np.subtract(yd, resid, out=resid)      # M(y - D b_D)
    if q:
        resid -= mz @ b[p:]
    yd_ss = float(np.dot(yd, yd) if w is None else np.dot(w * yd, yd))
    del yd
    return TwoWayOLSFit(coef=coef, resid=resid, bread=bread, rank=int(kept.sum()), kept=kept,
                        yd_ss=yd_ss, unit_codes=u, time_codes=t, onehot=c,
                        counts=cnt, unit_counts=None, time_counts=a_t, mz=mz,
                        unit_part=h, time_part=gam, grand=None, weights=w)


# --- OLS with fixed effects and a sandwich vcov (used by twfe, sun_abraham, imputation) ---

def fit_fe_ols(y: np.ndarray, x: np.ndarray, names: Sequence[str], fe: Sequence[np.ndarray],
               *, vcov: str, clusters: Sequence[np.ndarray] = (),
               cluster_names: Sequence[str] = (), weights: np.ndarray | None = None,
               estimator: str = "feols", onehot: np.ndarray | None = None,
               return_source: bool = False
               ) -> tuple[pd.Series, np.ndarray, Any, dict[str, Any]]:
    """OLS of ``y`` on ``x`` with fixed effects ``fe`` (label arrays) and a sandwich vcov.

    Returns ``(params, vcov, vcov_spec, info)``; collinear columns get NaN estimates and
    are listed in ``info["collinear"]``.

    ``onehot`` (optional, int array of shape (n,)): the design is then
    ``[indicators of onehot | x]`` -- row i has a 1 in indicator column ``onehot[i]``
    (none when -1), ``len(names) - x.shape[1]`` indicator columns first, and ``x`` holds
    only the dense columns. Event-time or cohort x period dummies passed this way are
    fitted in O(n) on balanced unit x time panels (same numbers as the dense design).
    """
    fe_codes = [factorize(f)[0] for f in fe]
    cl_codes = [factorize(c)[0] for c in clusters]
    return fit_fe_codes(y, x, names, fe_codes, cl_codes, vcov=vcov, cluster_names=cluster_names,
                      weights=weights, onehot=onehot, return_source=return_source)


def fit_fe_codes(y: np.ndarray, x: np.ndarray, names: Sequence[str],
               fe_codes: Sequence[np.ndarray], cl_codes: Sequence[np.ndarray], *, vcov: str,
               cluster_names: Sequence[str] = (), weights: np.ndarray | None = None,
               onehot: np.ndarray | None = None, return_source: bool = False
               ) -> tuple[pd.Series, np.ndarray, Any, dict[str, Any]]:
    """:func:`fit_fe_ols` on dense FE / cluster codes, with an optional indicator block.

    ``return_source=True`` adds ``info["vcov_source"]``, a :class:`SandwichVcov` holding
    the scores and bread (its ``rows``, ``n_input`` and ``columns`` are for the caller to
    fill) so that the result's ``with_vcov`` can give another variance.

    With ``onehot`` (n,) the design is ``[indicators of onehot | x]`` (``onehot[i] = -1``:
    no indicator in row i; ``len(names) - x.shape[1]`` indicator columns). On a balanced
    unit x time panel without weights that design is fitted by
    :func:`ols_twoway_balanced` (indicators never demeaned,
    cluster score sums from group sums), on an unbalanced or weighted one whose time set
    is small by :func:`ols_twoway_small_time` (same, through the exact two-way projection;
    memory O(n (1 + q)) + O(units x p)). Otherwise -- more or fewer than two fixed-effect
    sets, both sets larger than :data:`SMALL_SET_MAX` levels or too costly a Schur
    complement, or a period linked to the rest by a sliver of weight
    (:func:`two_way_projector` gives None) -- the dense (n, k) design goes through
    :func:`demean`, which gives the same numbers.
    """
    n = len(y)
    x = np.asarray(x, dtype=float).reshape(n, -1)
    p = len(names) - x.shape[1] if onehot is not None else 0
    if (onehot is not None and weights is None and len(fe_codes) == 2
            and is_balanced_twoway(fe_codes[0], fe_codes[1], int(fe_codes[0].max()) + 1,
                                   int(fe_codes[1].max()) + 1)):
        fit = ols_twoway_balanced(y, fe_codes[0], fe_codes[1], onehot=onehot, n_onehot=p, z=x)
        return _fit_fe_twoway(fit, names, fe_codes, cl_codes, vcov=vcov,
                              cluster_names=cluster_names, balanced=True,
                              return_source=return_source)
    if onehot is not None and len(fe_codes) == 2:
        proj = two_way_projector(fe_codes, weights)
        if proj is not None:  # unbalanced or weighted, one small set: exact, indicators
            # not demeaned
            fit = ols_twoway_small_time(y, proj.big.codes, proj.small.codes, proj,
                                        onehot=onehot, n_onehot=p, z=x, weights=weights)
            del proj  # (the fit keeps its unit x period counts only if H reads them)
            return _fit_fe_twoway(fit, names, fe_codes, cl_codes, vcov=vcov,
                                  cluster_names=cluster_names, balanced=False,
                                  return_source=return_source)
    if onehot is not None:
        dense = np.zeros((n, len(names)))
        rows = np.flatnonzero(onehot >= 0)
        dense[rows, onehot[rows]] = 1.0
        dense[:, p:] = x
        x = dense
    k = x.shape[1]
    yx = np.empty((n, k + 1))
    yx[:, 0] = y
    yx[:, 1:] = x
    dm = demean(yx, fe_codes, weights=weights)
    yd, xd = dm.x[:, 0], dm.x[:, 1:]
    # sum of squares of the centred regressors before the FE sweep (collinearity scale)
    fit = ols(xd, yd, weights, ref_ss=centred_ss(x, weights, absorbed_constant=bool(fe_codes)))
    kept = fit.kept
    k_fe, k_nested = fe_dof(fe_codes, cl_codes, n_obs=n, n_slopes=fit.rank)
    k_total = fit.rank + k_fe
    xk = xd[:, kept]
    bread = fit.bread[np.ix_(kept, kept)]
    w = np.ones(n) if weights is None else weights
    scores = xk * (w * fit.resid)[:, None]
    sigma2 = float(np.sum(w * fit.resid**2) / (n - k_total)) if n > k_total else np.nan
    v_sub, spec = sandwich(scores, bread, kind=vcov, n=n, k=k_total, cluster_codes=cl_codes,
                           cluster_names=cluster_names, k_nested=k_nested, sigma2=sigma2)
    v = np.full((k, k), np.nan)
    v[np.ix_(kept, kept)] = v_sub
    params = pd.Series(fit.coef, index=list(names))
    if not dm.converged:  # a projection that did not converge gives no estimate
        import warnings

        from ..errors import ConvergenceWarning, format_message

        warnings.warn(format_message(
            f"the fixed-effect projections did not converge in {dm.iterations} sweeps; "
            "the estimates are NaN", where="alternating projections (demean)",
            seen=f"tol={1e-10:g}", fix="check for nearly disconnected fixed-effect levels"),
            ConvergenceWarning, stacklevel=3)
        params[:] = np.nan
        v[:] = np.nan
    info = {
        "collinear": [nm for nm, kp in zip(names, kept, strict=True) if not kp],
        "demean_converged": dm.converged,
        "demean_iterations": dm.iterations,
        "k_fe": k_fe,
        "k_fe_nested_in_cluster": k_nested,
        "r2_within": float(1 - np.sum(w * fit.resid**2) / np.sum(w * yd**2))
        if np.sum(yd**2) > 0 else np.nan,
    }
    if return_source:
        info["vcov_source"] = SandwichVcov(
            "feols", bread=bread, kept=kept, n=n, fe_codes=tuple(fe_codes),
            rows=_arange_rows(n), n_input=n, columns={}, scores=scores,
            ssr=float(np.sum(w * fit.resid**2)))
    return params, v, spec, info


def _fit_fe_twoway(fit: TwoWayOLSFit, names: Sequence[str], fe_codes: Sequence[np.ndarray],
                   cl_codes: Sequence[np.ndarray], *, vcov: str,
                   cluster_names: Sequence[str], balanced: bool,
                   return_source: bool = False
                   ) -> tuple[pd.Series, np.ndarray, Any, dict[str, Any]]:
    """The outputs of :func:`fit_fe_codes` from a fit of its two-way fast paths: a
    balanced panel (:func:`ols_twoway_balanced`, ``balanced=True``) or an unbalanced
    panel with a small time set (:func:`ols_twoway_small_time`)."""
    n = len(fit.resid)
    k = len(names)
    kept = fit.kept
    k_fe, k_nested = fe_dof(fe_codes, cl_codes, balanced=balanced, n_obs=n,
                            n_slopes=fit.rank)
    k_total = fit.rank + k_fe
    bread = fit.bread[np.ix_(kept, kept)]
    ssr = fit.ssr
    sigma2 = ssr / (n - k_total) if n > k_total else np.nan
    v_sub, spec = sandwich(None, bread, kind=vcov, n=n, k=k_total, cluster_codes=cl_codes,
                           cluster_names=cluster_names, k_nested=k_nested, sigma2=sigma2,
                           cluster_sums=fit.cluster_sums, score_meat=fit.score_meat,
                           cluster_meat=fit.cluster_meat)
    v = np.full((k, k), np.nan)
    v[np.ix_(kept, kept)] = v_sub
    params = pd.Series(fit.coef, index=list(names))
    info = {
        "collinear": [nm for nm, kp in zip(names, kept, strict=True) if not kp],
        "demean_converged": True,
        "demean_iterations": 1,
        "k_fe": k_fe,
        "k_fe_nested_in_cluster": k_nested,
        "r2_within": float(1 - ssr / fit.yd_ss) if fit.yd_ss > 0 else np.nan,
    }
    if return_source:
        info["vcov_source"] = SandwichVcov(
            "feols", bread=bread, kept=kept, n=n, fe_codes=tuple(fe_codes),
            rows=_arange_rows(n), n_input=n, columns={}, cluster_sums=fit.cluster_sums,
            score_meat=fit.score_meat, cluster_meat=fit.cluster_meat,
            ssr=ssr, balanced=balanced)
    return params, v, spec, info


def _arange_rows(n: int) -> np.ndarray:
    """Row positions ``0..n-1`` as int32 when they fit (4 bytes a row, not 8)."""
    return np.arange(n, dtype=np.int32 if n < 2**31 else np.intp)


@dataclass(frozen=True, eq=False)
class SandwichVcov:
    """What a regression result keeps so that ``result.with_vcov(...)`` can give another
    sandwich variance without refitting (fixest ``summary(est, vcov = ...)``).

    The arguments of :func:`sandwich` that do not depend on the variance asked for:
    ``scores`` (n, r) of the kept columns (or ``cluster_sums``, the fast path of
    :class:`~twinimpact.core.fe.TwoWayOLSFit`), ``bread`` (r, r), ``kept`` (k,) the
    estimated columns, the fixed-effect codes (to count fixed effects nested in the new
    clusters, fixest ``fixef.K = "nested"``), ``ssr`` for the iid variance of OLS
    (``glm=True``: Poisson dispersion 1, as :func:`~twinimpact.estimators.ppml.ppml`),
    ``rows`` (positions of the used rows in the caller's frame of ``n_input`` rows) and
    ``columns``: values, on the used rows, of columns that may be clustered on without
    passing ``data`` (the unit, the time, the fit's cluster columns). ``finish`` maps the
    (k, k) coefficient variance and the spec to the result's terms (e.g. adds an
    event study's ``ATT`` row; makes a GLM's reference normal).
    """

    estimator: str
    bread: np.ndarray
    kept: np.ndarray
    n: int
    fe_codes: tuple[np.ndarray, ...]
    rows: np.ndarray
    n_input: int
    columns: Mapping[str, np.ndarray]
    scores: np.ndarray | None = None
    cluster_sums: Callable[[np.ndarray | None], np.ndarray] | None = None
    score_meat: Callable[[], np.ndarray] | None = None
    cluster_meat: Callable[[np.ndarray], np.ndarray] | None = None
    ssr: float | None = None
    glm: bool = False
    adj: bool = True
    balanced: bool = False
    finish: Callable[[np.ndarray, VcovSpec, int], tuple[np.ndarray, VcovSpec]] | None = None

    def _codes(self, name: str, data: pd.DataFrame | None) -> np.ndarray:
        if name in self.columns:
            return factorize(np.asarray(self.columns[name]))[0]
        if data is None or name not in data.columns:
            raise SpecificationError(format_message(
                f"{self.estimator}: clustering by {name!r} needs the data the result was "
                "fitted on", seen=None if data is None else list(data.columns)[:8],
                fix=f"pass data=<the frame> with column {name!r} (or one of "
                    f"{sorted(self.columns)})"))
        if len(data) != self.n_input:
            raise SpecificationError(format_message(
                f"{self.estimator}: data= must be the frame the result was fitted on",
                seen=f"{len(data)} rows", fix=f"pass the {self.n_input}-row frame"))
        vals = data[name].to_numpy()[self.rows]
        miss = pd.isna(vals)
        if miss.any():
            raise SpecificationError(format_message(
                f"{self.estimator}: cluster column {name!r} is missing on {int(miss.sum())} "
                "row(s) of the estimation sample; with_vcov cannot drop rows",
                fix=f"re-estimate with cluster={name!r} (the rows are then dropped and "
                    "counted)"))
        return factorize(vals)[0]

    def vcov(self, kind: str, *, cluster: tuple[str, ...] = (),
             data: pd.DataFrame | None = None) -> tuple[np.ndarray, VcovSpec]:
        """The (k, k) variance and its spec for ``kind`` and ``cluster``."""
        check_literal("vcov", kind, VCOV_KINDS)
        if kind == "cluster" and not cluster:
            raise SpecificationError(format_message(
                "vcov='cluster' needs cluster= (one or two columns)",
                fix=f"pass e.g. cluster={sorted(self.columns)[:1] or ['<column>']}"))
        if kind != "cluster" and cluster:
            raise SpecificationError(format_message(
                f"cluster= is only used with vcov='cluster' (got vcov={kind!r})",
                seen=cluster, fix="drop cluster= or pass vcov='cluster'"))
        cl_codes = [self._codes(c, data) for c in cluster]
        if self.fe_codes:
            k_fe, k_nested = fe_dof(self.fe_codes, cl_codes, balanced=self.balanced,
                                    n_obs=self.n, n_slopes=int(np.count_nonzero(self.kept)))
        else:
            k_fe, k_nested = 0, 0
        rank = int(np.count_nonzero(self.kept))
        k_total = rank + k_fe
        n = self.n
        if self.glm:
            sigma2 = ((n - 1) / (n - k_total) if n > k_total else np.nan) if self.adj else 1.0
        else:
            sigma2 = float(self.ssr / (n - k_total)) if n > k_total else np.nan
        v_sub, spec = sandwich(self.scores, self.bread, kind=kind, n=n, k=k_total,
                               cluster_codes=cl_codes, cluster_names=cluster,
                               k_nested=k_nested, sigma2=sigma2, adj=self.adj,
                               cluster_sums=self.cluster_sums, score_meat=self.score_meat,
                               cluster_meat=self.cluster_meat)
        k = len(self.kept)
        v = np.full((k, k), np.nan)
        v[np.ix_(self.kept, self.kept)] = v_sub
        if self.finish is not None:
            v, spec = self.finish(v, spec, k_total)
        return v, spec
