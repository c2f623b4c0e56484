"""The two-stage kernel shared by the imputation (Borusyak, Jaravel & Spiess 2024) and
two-stage DiD (Gardner 2022) estimators.

The first stage fits fixed effects and covariates on untreated rows by an exact
Schur-complement solve of the normal equations (the largest fixed-effect set is eliminated in
closed form, the rest solved as a small dense system), so that imputed values and the
variance weights are exact to floating-point precision rather than to an iteration
tolerance: :func:`build_normal_system`, :func:`solve_normal`, :func:`predict`,
:func:`fit_untreated`. :func:`two_stage_rows` derives the row arrays of a prepared panel
and runs the checks both estimators share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import sparse

from ..errors import EstimationError, InputError, format_message
from .rowblocks import pair_sums, row_blocks

__all__ = [
    "ColumnSolver",
    "FittedClusterSums",
    "NormalSystem",
    "TwoStageRows",
    "UntreatedFit",
    "build_normal_system",
    "fit_untreated",
    "predict",
    "solve_normal",
    "system_rhs",
    "two_stage_rows",
    "untreated_residuals",
]

#: relative eigenvalue below which a direction of the (Jacobi-scaled) Schur complement is
#: treated as the redundancy between fixed-effect sets (exactly 0 in exact arithmetic)
_EIG_TOL = 1e-10
#: largest dense Schur complement we are willing to form (levels of the smaller FE sets)
_MAX_DENSE = 20_000

# ----------------------------------------------------------------------------- kernel
@dataclass(frozen=True)
class NormalSystem:
    """Normal equations ``Z_0' W_0 Z_0 b = r`` of a fixed-effect design on a row subset.

    ``Z = [D | M]``: ``D`` is the one-hot matrix of the largest fixed-effect set (eliminated
    in closed form), ``M`` the one-hots of the other sets followed by the covariates. Only
    the rows flagged in ``fit_rows`` (with weights ``w``) enter ``Z_0' W_0 Z_0``. ``M`` is
    kept as integer codes (one array per set) and a dense covariate block, never as an
    (n, m) matrix: products with it are gathers and ``bincount`` passes.

    Attributes
    ----------
    code_d : (n,) int codes of the eliminated fixed-effect set (all rows)
    fe_m : the other sets, ``((codes (n,), levels), ...)``
    cov : (n, p) covariates or None
    s : (G_D,) weighted counts of fit rows per level of ``D`` (0 = level not identified)
    n_fit : (G_D,) unweighted counts of fit rows per level of ``D``
    c : (G_D, m) dense ``D_0' W_0 M_0``
    s_inv : (m, m) pseudo-inverse of the Schur complement ``M_0'W_0M_0 - C' diag(1/s) C``
    row_ok : (n,) bool, rows whose every fixed-effect level is present among the fit rows
    """

    code_d: np.ndarray
    n_d: int
    fe_m: tuple[tuple[np.ndarray, int], ...]
    cov: np.ndarray | None
    s: np.ndarray
    n_fit: np.ndarray
    c: np.ndarray
    s_inv: np.ndarray
    row_ok: np.ndarray

    @property
    def n_m(self) -> int:
        """Number of columns of ``M``."""
        return sum(k for _, k in self.fe_m) + (0 if self.cov is None else self.cov.shape[1])

    @property
    def m(self) -> Any:
        """``M`` as a sparse (n, m) matrix (built on demand: oracles and tests)."""
        n = len(self.code_d)
        blocks = [sparse.csr_matrix((np.ones(n), (np.arange(n), codes)), shape=(n, k))
                  for codes, k in self.fe_m]
        if self.cov is not None:
            blocks.append(sparse.csr_matrix(self.cov))
        return sparse.hstack(blocks, format="csr") if blocks else sparse.csr_matrix((n, 0))

    def m_dot(self, b_m: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """``M b`` for ``b`` (m, k): (n, k), or (len(rows), k) on the rows given.

        Computed in row blocks into one output array (the same sums, in the same order,
        as the whole-array expression; no n-row temporary besides the result)."""
        n_out = len(self.code_d) if rows is None else len(rows)
        out = np.empty((n_out, b_m.shape[1]))
        for sl in row_blocks(n_out):
            out[sl] = self._m_dot_block(b_m, sl if rows is None else rows[sl])
        return out

    def _m_dot_block(self, b_m: np.ndarray, sel: Any) -> np.ndarray:
        """``(M b)[sel]`` for a slice or int positions ``sel`` (a block of rows)."""
        parts = []
        start = 0
        for codes, k in self.fe_m:
            parts.append(b_m[start:start + k][codes[sel]])
            start += k
        if self.cov is not None:
            parts.append(self.cov[sel] @ b_m[start:])
        if not parts:
            return np.zeros((len(self.code_d[sel]), b_m.shape[1]))
        out = parts[0]  # a fresh array (gather or product): summed into in place
        for part in parts[1:]:
            out += part
        return out

    def m_tdot(self, u: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """``M' u`` for ``u`` (n, k), or for values ``u`` (len(rows), k) on ``rows``."""
        parts = []
        for codes, k in self.fe_m:
            cd = codes if rows is None else codes[rows]
            parts.append(np.stack([np.bincount(cd, weights=u[:, j], minlength=k)
                                   for j in range(u.shape[1])], axis=1))
        if self.cov is not None:
            parts.append((self.cov if rows is None else self.cov[rows]).T @ u)
        return np.concatenate(parts, axis=0) if parts else np.zeros((0, u.shape[1]))

    def cross(self, q: np.ndarray) -> np.ndarray:
        """``D' diag(q) M``, dense (G_D, m), for row weights ``q`` (n,)."""
        return _cross(self.code_d, self.n_d, self.fe_m, self.cov, q)


def _cross(code_d: np.ndarray, n_d: int, fe_m: Sequence[tuple[np.ndarray, int]],
           cov: np.ndarray | None, q: np.ndarray) -> np.ndarray:
    """``D' diag(q) M`` by one ``bincount`` per block on the pair code ``d * k + m``."""
    parts = []
    for codes, k in fe_m:
        parts.append(pair_sums(code_d, n_d, codes, k, q))
    if cov is not None:
        parts.append(np.stack([np.bincount(code_d, weights=q * cov[:, j], minlength=n_d)
                               for j in range(cov.shape[1])], axis=1))
    if len(parts) == 1:  # one set: the bincount's own array, not a copy of it
        return parts[0]
    return np.concatenate(parts, axis=1) if parts else np.zeros((n_d, 0))


def _mtm(fe_m: Sequence[tuple[np.ndarray, int]], cov: np.ndarray | None,
         q: np.ndarray) -> np.ndarray:
    """``M' diag(q) M``, dense (m, m), block by block (``bincount`` on pair codes)."""
    cols: list[tuple[np.ndarray, int]] = list(fe_m)  # (codes, levels) or (values, 0)
    if cov is not None:
        cols += [(cov[:, j], 0) for j in range(cov.shape[1])]
    sizes = [max(k, 1) for _, k in cols]
    offs = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    out = np.zeros((offs[-1], offs[-1]))
    for a, (va, ka) in enumerate(cols):
        for b in range(a, len(cols)):
            vb, kb = cols[b]
            if ka and kb:
                if a == b:
                    blk = np.diag(np.bincount(va, weights=q, minlength=ka))
                else:
                    blk = pair_sums(va, ka, vb, kb, q)
            elif ka:
                blk = np.bincount(va, weights=q * vb, minlength=ka)[:, None]
            else:
                blk = np.array([[np.dot(q * va, vb)]])
            out[offs[a]:offs[a + 1], offs[b]:offs[b + 1]] = blk
            out[offs[b]:offs[b + 1], offs[a]:offs[a + 1]] = blk.T
    return out


def build_normal_system(fe_codes: Sequence[np.ndarray], covariates: np.ndarray | None,
                        fit_rows: np.ndarray, weights: np.ndarray | None = None
                        ) -> NormalSystem:
    """Assemble and factor the normal equations of FE (+ covariates) on ``fit_rows``.

    Parameters
    ----------
    fe_codes : sequence of (n,) int arrays (dense codes over all n rows), at least one.
    covariates : (n, p) array or None.
    fit_rows : (n,) bool, the rows the model is fitted on (untreated observations).
    weights : (n,) array or None (observation weights).
    """
    n = len(fit_rows)
    sizes = [int(c.max()) + 1 for c in fe_codes]
    j = int(np.argmax(sizes))
    code_d, n_d = np.asarray(fe_codes[j], dtype=np.intp), sizes[j]
    fe_m = [(np.asarray(codes, dtype=np.intp), sizes[i]) for i, codes in enumerate(fe_codes)
            if i != j]
    cov = None
    if covariates is not None and covariates.size:
        cov = np.asarray(covariates, dtype=float).reshape(n, -1)
    m_cols = sum(k for _, k in fe_m) + (0 if cov is None else cov.shape[1])
    if m_cols > _MAX_DENSE:
        raise EstimationError(format_message(
            "the first stage has too many fixed-effect levels outside the largest set for "
            "the exact solver", seen=m_cols,
            fix="put the fixed effect with most levels first or use fewer/coarser sets"))
    if cov is None:  # fixed effects only: every table in one pass of row blocks
        cnt_d, cnt_m, s, c, mtwm = _fe_tables(code_d, n_d, fe_m, fit_rows, weights)
    else:
        fit_f = fit_rows.astype(float)  # 0/1: the counts, and the weights if unweighted
        w0 = fit_f if weights is None else np.where(
            fit_rows, np.asarray(weights, dtype=float), 0.0)
        # counts of fit rows per level: sums of the 0/1 indicator (exact in float64)
        cnt_d = np.bincount(code_d, weights=fit_f, minlength=n_d).astype(np.intp)
        cnt_m = [np.bincount(codes, weights=fit_f, minlength=k) for codes, k in fe_m]
        del fit_f
        s = np.bincount(code_d, weights=w0, minlength=n_d)
        c = _cross(code_d, n_d, fe_m, cov, w0)
        mtwm = _mtm(fe_m, cov, w0)
        del w0
    # row_ok gathers from the (levels,) tables of "present" flags (one byte a row), in row
    # blocks (no n-row temporary besides the result)
    present_d = cnt_d > 0
    present_m = [cnt > 0 for cnt in cnt_m]
    row_ok = np.empty(n, dtype=bool)
    for sl in row_blocks(n):
        blk = present_d[code_d[sl]]
        for (codes, _), pres in zip(fe_m, present_m, strict=True):
            blk &= pres[codes[sl]]
        row_ok[sl] = blk
    inv_s = np.divide(1.0, s, out=np.zeros_like(s), where=s > 0)
    schur = mtwm - c.T @ (c * inv_s[:, None])
    return NormalSystem(code_d=code_d, n_d=n_d, fe_m=tuple(fe_m), cov=cov, s=s,
                        n_fit=cnt_d, c=c, s_inv=_pinv_psd(schur), row_ok=row_ok)


def _fit_weights(fit_rows: np.ndarray, weights: np.ndarray | None, sl: slice) -> np.ndarray:
    """The first-stage weights ``w0`` on the rows of block ``sl``: the 0/1 indicator of
    the fit rows, or the weights on them and 0 elsewhere (the same numbers as the
    whole-array expressions)."""
    if weights is None:
        return fit_rows[sl].astype(float)
    return np.where(fit_rows[sl], weights[sl], 0.0)


def _fe_tables(code_d: np.ndarray, n_d: int, fe_m: Sequence[tuple[np.ndarray, int]],
               fit_rows: np.ndarray, weights: Any
               ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Counts of fit rows per level, ``s = D'W_0 1``, ``C = D'W_0M`` and ``M'W_0M`` of a
    fixed-effects-only design, in one pass of row blocks (the weights ``w0`` of each block
    made on the fly: no n-row array). Each table adds its rows in row order, by
    ``np.add.at``: the same sums as ``np.bincount`` over the whole arrays."""
    n = len(fit_rows)
    w = None if weights is None else np.asarray(weights, dtype=float)
    one = np.intp(1)
    s = np.zeros(n_d)
    cnt_d = None if w is None else np.zeros(n_d, dtype=np.intp)
    cnt_m = [np.zeros(k, dtype=np.intp) for _, k in fe_m]
    cross = [np.zeros(n_d * k) for _, k in fe_m]
    diag = [np.zeros(k) for _, k in fe_m]
    pairs = {(a, b): np.zeros(fe_m[a][1] * fe_m[b][1])
             for a in range(len(fe_m)) for b in range(a + 1, len(fe_m))}
    for sl in row_blocks(n):
        on = fit_rows[sl]
        wb = _fit_weights(fit_rows, w, sl)
        d = code_d[sl]
        np.add.at(s, d, wb)
        if cnt_d is not None:
            np.add.at(cnt_d, d[on], one)
        blk = [codes[sl] for codes, _ in fe_m]
        for i, (ci, (_, k)) in enumerate(zip(blk, fe_m, strict=True)):
            np.add.at(cnt_m[i], ci[on], one)
            key = d * k
            key += ci
            np.add.at(cross[i], key, wb)
            np.add.at(diag[i], ci, wb)
        for (a, b), tab in pairs.items():
            key = blk[a] * fe_m[b][1]
            key += blk[b]
            np.add.at(tab, key, wb)
    if cnt_d is None:  # unweighted: s sums the 0/1 indicator, i.e. the counts
        cnt_d = s.astype(np.intp)
    c = (cross[0].reshape(n_d, fe_m[0][1]) if len(cross) == 1 else
         np.concatenate([t.reshape(n_d, k) for t, (_, k) in zip(cross, fe_m, strict=True)],
                        axis=1) if cross else np.zeros((n_d, 0)))
    offs = np.concatenate([[0], np.cumsum([k for _, k in fe_m])]).astype(int)
    mtwm = np.zeros((offs[-1], offs[-1]))
    for a in range(len(fe_m)):
        mtwm[offs[a]:offs[a + 1], offs[a]:offs[a + 1]] = np.diag(diag[a])
    for (a, b), tab in pairs.items():
        blk = tab.reshape(fe_m[a][1], fe_m[b][1])
        mtwm[offs[a]:offs[a + 1], offs[b]:offs[b + 1]] = blk
        mtwm[offs[b]:offs[b + 1], offs[a]:offs[a + 1]] = blk.T
    return cnt_d, cnt_m, s, c, mtwm


def _pinv_psd(a: np.ndarray) -> np.ndarray:
    """Pseudo-inverse of a PSD matrix after Jacobi scaling (drops the FE redundancies)."""
    if a.size == 0:
        return a.copy()
    a = (a + a.T) / 2
    d = np.sqrt(np.clip(np.diag(a), 0, None))
    d[d == 0] = 1.0
    sc = a / d[:, None] / d[None, :]
    lam, vec = np.linalg.eigh(sc)
    keep = lam > _EIG_TOL * max(lam.max(), 1e-300)
    inv = (vec[:, keep] / lam[keep]) @ vec[:, keep].T
    return inv / d[:, None] / d[None, :]


def system_rhs(system: NormalSystem, u: np.ndarray, rows: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """``Z' u`` split into its ``D`` and ``M`` parts. ``u`` is (n, k) (zero where unused),
    or, with ``rows`` (int positions), the (len(rows), k) values on those rows only (the
    other rows are 0): a right-hand side supported on a few rows costs O(len(rows))."""
    u = np.asarray(u, dtype=float)
    if u.ndim == 1:
        u = u[:, None]
    cd = system.code_d if rows is None else system.code_d[rows]
    r_d = np.stack([np.bincount(cd, weights=u[:, j], minlength=system.n_d)
                    for j in range(u.shape[1])], axis=1)
    return r_d, system.m_tdot(u, rows)


def solve_normal(system: NormalSystem, r_d: np.ndarray, r_m: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Solve ``Z_0'W_0Z_0 b = r`` (one solution; fitted values ``Z b`` are unique on rows
    whose levels are all identified). Levels of ``D`` absent from the fit rows get NaN."""
    inv_s = np.divide(1.0, system.s, out=np.full_like(system.s, np.nan), where=system.s > 0)
    b_m = system.s_inv @ (r_m - system.c.T @ (r_d * np.nan_to_num(inv_s)[:, None]))
    b_d = (r_d - system.c @ b_m) * inv_s[:, None]
    return b_d, b_m


def predict(system: NormalSystem, b_d: np.ndarray, b_m: np.ndarray) -> np.ndarray:
    """Fitted values ``Z b`` for every row, (n, k); NaN on rows not identified."""
    out = system.m_dot(b_m)
    for sl in row_blocks(len(out)):  # blocks: no n-row temporary
        blk = out[sl]
        blk += b_d[system.code_d[sl]]
        blk[~system.row_ok[sl]] = np.nan
    return out


class FittedClusterSums:
    """Per-cluster sums ``S_g(b) = sum_{i in rows, cluster(i) = g} q_i (Z b)_i`` for many
    solutions ``b`` of the normal equations (the correction terms of the BJS and Gardner
    variances).

    When every level of ``D`` lies inside one cluster (unit fixed effects clustered by
    unit or by anything coarser: the default), the row sums collapse to level sums
    ``b_D * (D'q) + (D' diag(q) M) b_M``, formed once, so each ``b`` costs
    O(G_D x m) instead of a pass over the rows; otherwise each ``b`` costs one pass over
    ``rows``. Both give the same sums (up to the order of floating-point additions).

    Parameters
    ----------
    system : the first-stage normal equations.
    q : (n,) row weights (read on ``rows`` only).
    rows : (n,) bool, the rows that enter the sums.
    cluster : (n,) int cluster codes; ``n_clusters`` their number.
    weights : (n,) or None: the row weights are ``weights * q`` (formed block by block;
        the same numbers as passing the product).
    """

    def __init__(self, system: NormalSystem, q: np.ndarray, rows: np.ndarray,
                 cluster: np.ndarray, n_clusters: int,
                 weights: np.ndarray | None = None) -> None:
        self.system, self.n_clusters = system, n_clusters
        code_d, n = system.code_d, len(system.code_d)
        small = system.n_d * max(system.n_m, 1) <= 2 * n + 1_000_000
        self.nested = small
        if small:
            # the cluster of each level (the last row's, in row order) and whether every
            # row agrees with it; in row blocks (no n-row temporary)
            d_cl = np.zeros(system.n_d, dtype=np.intp)
            has = np.zeros(system.n_d, dtype=bool)
            for sl in row_blocks(n):
                on = rows[sl]
                cd = code_d[sl][on]
                d_cl[cd] = cluster[sl][on]
                has[cd] = True
            for sl in row_blocks(n):
                on = rows[sl]
                if not np.array_equal(d_cl[code_d[sl][on]], cluster[sl][on]):
                    self.nested = False
                    break
        if self.nested:
            self._a, self._b = _level_tables(system, q, rows, weights)
            self._has = has
            self._d_cl = d_cl
            self._lev = np.empty((system.n_d, 1))
            self._tmp = np.empty((system.n_d, 1))
        else:
            idx = np.flatnonzero(rows)
            qi = q[idx] if weights is None else weights[idx] * q[idx]
            self._idx, self._q, self._cl = idx, qi, cluster[idx]

    def __call__(self, b_d: np.ndarray, b_m: np.ndarray) -> np.ndarray:
        """(n_clusters, k) sums for the k solutions ``(b_d (G_D, k), b_m (m, k))``."""
        g = self.n_clusters
        if self.nested:
            lev = np.where(self._has[:, None], b_d, 0.0)
            lev *= self._a[:, None]
            lev += self._b @ b_m
            return np.stack([np.bincount(self._d_cl, weights=lev[:, j], minlength=g)
                             for j in range(lev.shape[1])], axis=1)
        h = self.system.m_dot(b_m, self._idx)
        h += b_d[self.system.code_d[self._idx]]
        return np.stack([np.bincount(self._cl, weights=self._q * h[:, j], minlength=g)
                         for j in range(h.shape[1])], axis=1)

    def into(self, out: np.ndarray, b_d: np.ndarray, b_m: np.ndarray) -> np.ndarray:
        """``self(b_d, b_m)[:, 0]`` for one solution (``b_d`` (G_D, 1), ``b_m`` (m, 1))
        written into ``out`` (n_clusters,): the same operations as :meth:`__call__`, in
        buffers reused from call to call (no fresh (G_D,) or (n,) arrays per solution)."""
        out.fill(0.0)
        if self.nested:
            lev, tmp = self._lev, self._tmp
            lev.fill(0.0)
            np.copyto(lev, b_d, where=self._has[:, None])  # = np.where(has, b_d, 0.0)
            lev *= self._a[:, None]
            np.matmul(self._b, b_m, out=tmp)
            lev += tmp
            np.add.at(out, self._d_cl, lev[:, 0])  # = bincount (the same order of sums)
            return out
        system, idx = self.system, self._idx
        for sl in row_blocks(len(idx)):
            h = system._m_dot_block(b_m, idx[sl])
            h += b_d[system.code_d[idx[sl]]]
            h = h[:, 0]
            h *= self._q[sl]  # q * h (the product commutes exactly)
            np.add.at(out, self._cl[sl], h)
        return out


def _level_tables(system: NormalSystem, q: np.ndarray, rows: np.ndarray,
                  weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``D'q0`` and ``D' diag(q0) M`` for ``q0 = q`` (times ``weights``) on ``rows``, 0
    elsewhere: with fixed effects only in row blocks, each sum added in row order (the
    same sums as ``np.bincount`` / :func:`~.rowblocks.pair_sums` of the whole array)."""
    code_d, n_d, n = system.code_d, system.n_d, len(system.code_d)

    def q0(sl: slice) -> np.ndarray:
        qb = q[sl] if weights is None else weights[sl] * q[sl]
        return np.where(rows[sl], qb, 0.0)

    if system.cov is not None:
        qq = np.concatenate([q0(sl) for sl in row_blocks(n)]) if n else np.zeros(0)
        return np.bincount(code_d, weights=qq, minlength=n_d), system.cross(qq)
    a = np.zeros(n_d)
    cross = [np.zeros(n_d * k) for _, k in system.fe_m]
    for sl in row_blocks(n):
        qb = q0(sl)
        d = code_d[sl]
        np.add.at(a, d, qb)
        for (codes, k), tab in zip(system.fe_m, cross, strict=True):
            key = d * k
            key += codes[sl]
            np.add.at(tab, key, qb)
    b = (cross[0].reshape(n_d, system.fe_m[0][1]) if len(cross) == 1 else
         np.concatenate([t.reshape(n_d, k) for t, (_, k) in zip(cross, system.fe_m,
                                                                  strict=True)], axis=1)
         if cross else np.zeros((n_d, 0)))
    return a, b


class ColumnSolver:
    """Solutions ``b = (Z_0'W_0Z_0)^{-1} Z'u`` for right-hand sides ``u`` supported on a
    few rows, one at a time (the regressors / estimand weights of the two-stage
    variances), in (G_D,)-sized buffers reused from one right-hand side to the next: the
    same operations as ``solve_normal(system, *system_rhs(system, u, rows))``, each sum
    added in the same order (``np.add.at`` over the rows in order = ``np.bincount``)."""

    def __init__(self, system: NormalSystem) -> None:
        self.system = system
        s = system.s
        self.inv_s = np.divide(1.0, s, out=np.full_like(s, np.nan), where=s > 0)[:, None]
        self.inv_s0 = np.nan_to_num(self.inv_s)
        self.r_d = np.empty((system.n_d, 1))
        self.b_d = np.empty((system.n_d, 1))
        self.tmp = np.empty((system.n_d, 1))
        self.r_m = [np.empty(k) for _, k in system.fe_m]

    def start(self) -> None:
        """Zero the right-hand side (then :meth:`add` its row blocks in row order)."""
        self.r_d.fill(0.0)
        for t in self.r_m:
            t.fill(0.0)
        self._cov_parts: list[np.ndarray] = []

    def add(self, rows: np.ndarray, u: np.ndarray | float) -> None:
        """Add the values ``u`` (one per row, or one for all) on ``rows`` (positions)."""
        system = self.system
        np.add.at(self.r_d[:, 0], system.code_d[rows], u)
        for (codes, _), t in zip(system.fe_m, self.r_m, strict=True):
            np.add.at(t, codes[rows], u)
        if system.cov is not None:
            self._cov_parts.append((rows, u))

    def solve(self) -> tuple[np.ndarray, np.ndarray]:
        """``(b_d, b_m)`` of the right-hand side added (``b_d`` is a reused buffer: valid
        until the next :meth:`solve`)."""
        system = self.system
        parts = [t[:, None] for t in self.r_m]
        if system.cov is not None:  # cov' u over the whole support (one product, as before)
            rows = np.concatenate([r for r, _ in self._cov_parts])
            u = np.concatenate([np.broadcast_to(np.asarray(v, dtype=float), r.shape)
                                for r, v in self._cov_parts])
            parts.append(system.cov[rows].T @ u[:, None])
        r_m = np.concatenate(parts, axis=0) if parts else np.zeros((0, 1))
        tmp, b_d = self.tmp, self.b_d
        np.multiply(self.r_d, self.inv_s0, out=tmp)
        b_m = system.s_inv @ (r_m - system.c.T @ tmp)
        np.matmul(system.c, b_m, out=tmp)
        np.subtract(self.r_d, tmp, out=b_d)
        b_d *= self.inv_s
        return b_d, b_m


@dataclass(frozen=True)
class UntreatedFit:
    """First stage: the model for ``Y(0)`` fitted on untreated rows.

    ``y0_hat`` (n,) imputed untreated outcome for every row (NaN where a fixed-effect level
    has no untreated observation; None from :func:`untreated_residuals`); ``beta`` (p,)
    covariate coefficients; ``system`` the factored normal equations (reused for the
    variance weights).
    """

    y0_hat: np.ndarray | None
    beta: np.ndarray
    system: NormalSystem


def _first_stage_rhs(system: NormalSystem, y: np.ndarray, untreated: np.ndarray,
                     weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``Z' W_0 y_0`` (``y`` on the untreated rows, 0 elsewhere) split into its ``D`` and
    ``M`` parts; with fixed effects only, in row blocks (no n-row array), each level's sum
    added in row order by ``np.add.at`` (the same sums as ``np.bincount``)."""
    w = None if weights is None else np.asarray(weights, dtype=float)
    if system.cov is not None:
        u = np.where(untreated, y, 0.0)
        if w is not None:
            u *= w
        return system_rhs(system, u[:, None])
    r_d = np.zeros(system.n_d)
    r_m = [np.zeros(k) for _, k in system.fe_m]
    for sl in row_blocks(len(untreated)):
        u = np.where(untreated[sl], y[sl], 0.0)
        if w is not None:
            u *= w[sl]
        np.add.at(r_d, system.code_d[sl], u)
        for (codes, _), tab in zip(system.fe_m, r_m, strict=True):
            np.add.at(tab, codes[sl], u)
    return r_d[:, None], (np.concatenate(r_m)[:, None] if r_m else np.zeros((0, 1)))


def _fit_first_stage(y: np.ndarray, fe_codes: Sequence[np.ndarray], untreated: np.ndarray,
                     covariates: np.ndarray | None, weights: np.ndarray | None
                     ) -> tuple[NormalSystem, np.ndarray, np.ndarray, np.ndarray]:
    """The factored normal equations, the solution ``(b_d, b_m)`` and the covariate
    coefficients of the first stage."""
    system = build_normal_system(fe_codes, covariates, untreated, weights)
    b_d, b_m = solve_normal(system, *_first_stage_rhs(system, y, untreated, weights))
    p = 0 if covariates is None else covariates.shape[1]
    beta = b_m[b_m.shape[0] - p:, 0] if p else np.zeros(0)
    return system, b_d, b_m, beta


def fit_untreated(y: np.ndarray, fe_codes: Sequence[np.ndarray], untreated: np.ndarray,
                  covariates: np.ndarray | None = None,
                  weights: np.ndarray | None = None) -> UntreatedFit:
    """OLS/WLS of ``y`` on fixed effects (and covariates) over the untreated rows, and
    the fitted values for all rows (BJS 2024 Theorem 1 step 1; Gardner 2022 stage 1)."""
    system, b_d, b_m, beta = _fit_first_stage(y, fe_codes, untreated, covariates, weights)
    return UntreatedFit(y0_hat=predict(system, b_d, b_m)[:, 0], beta=beta, system=system)


def untreated_residuals(y: np.ndarray, fe_codes: Sequence[np.ndarray],
                        untreated: np.ndarray, covariates: np.ndarray | None = None,
                        weights: np.ndarray | None = None
                        ) -> tuple[np.ndarray, UntreatedFit]:
    """``y - y0_hat`` of :func:`fit_untreated` (NaN where ``Y(0)`` cannot be predicted)
    and the fit, whose ``y0_hat`` is None: the residuals are written over the fitted
    values (one n-row array instead of two; the same numbers)."""
    system, b_d, b_m, beta = _fit_first_stage(y, fe_codes, untreated, covariates, weights)
    resid = predict(system, b_d, b_m)[:, 0]
    np.subtract(y, resid, out=resid)
    return resid, UntreatedFit(y0_hat=None, beta=beta, system=system)


class TwoStageRows(NamedTuple):
    """Row arrays shared by the two-stage estimators (``never``: never-treated rows;
    ``treated``: ``time >= cohort``; ``w``: weights or None)."""

    y: np.ndarray
    t: np.ndarray
    g: np.ndarray
    never: np.ndarray
    treated: np.ndarray
    w: np.ndarray | None


def two_stage_rows(frame: pd.DataFrame, cohort: str, weights: str | None,
                   estimator: str) -> TwoStageRows:
    """Arrays of a prepared panel (columns ``y``, ``time``, ``cohort``) and the shared checks
    of the two-stage estimators (imputation, did2s): some treated and some untreated
    observations, non-negative weights."""
    y = frame["y"].to_numpy()
    t = frame["time"].to_numpy()
    g = frame["cohort"].to_numpy()
    never = np.isnan(g)
    treated = ~never & (t >= g)
    if not treated.any():
        raise InputError(format_message(
            f"{estimator}: no treated observation (time >= cohort)", seen=cohort,
            fix="check the cohort column: it is the first treated period"))
    if treated.all():
        raise EstimationError(format_message(
            f"{estimator}: no untreated observations for the first stage (the model of Y(0))",
            fix="the first stage needs never-treated or not-yet-treated rows"))
    w = frame[weights].to_numpy(dtype=float) if weights else None
    if w is not None and (w < 0).any():
        raise InputError(format_message("weights must be non-negative", seen=float(w.min()),
                                        fix=f"check the column {weights!r}"))
    return TwoStageRows(y, t, g, never, treated, w)
