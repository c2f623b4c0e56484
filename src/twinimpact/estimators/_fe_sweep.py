"""Compiled (numba) kernels of the weighted alternating projections used by PPML.

:class:`twinimpact.estimators._ppml_kernel.WeightedFE` calls these; its NumPy/SciPy path
(``backend="numpy"``) computes the same quantities with sparse products and is the oracle
the tests compare these kernels with.

Layout: the fixed-effect codes of all ``K`` sets are one C-ordered ``(K, n)`` int32 array;
the per-level quantities of all sets are one flat array, set ``k`` occupying
``offs[k]:offs[k+1]``. One sweep ``(I - P_K)...(I - P_1)`` is ``K + 1`` passes over the
rows: group sums of set 1, then for each set the subtraction of its weighted means fused
with the group sums of the next set. Nothing of size ``n`` is allocated inside a sweep.

Group sums are scatter-adds ``sums[code[i]] += v[i]``. When consecutive rows share a
level (data sorted by that set, e.g. exporter-year in a panel ordered by year, exporter,
importer) every add waits for the previous one; for such sets (``runs[k]``, decided from
the codes by :func:`run_sets`) the adds of a run are summed in a register and stored once
per run, which removes the dependency chain (about 7x faster on sorted codes, 20% slower
on shuffled ones, hence the per-set choice).

Why compiled: a sweep in NumPy/SciPy is, per set, a CSR product that gathers the column
through a row permutation, a ``take`` that scatters the means back and a subtraction --
four passes and two temporaries of size ``n`` per set; the fused loop reads each row once
per set. The speed claim is measured in ``benchmarks/run_table.py`` (case ``ppml``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["add_level_values", "col_absmax", "level_sums", "renumber_first_seen",
           "residualize_column", "run_sets", "sweep_into"]

#: a set whose consecutive rows share a level this often is summed run by run
RUN_SHARE = 0.3


def run_sets(codes: np.ndarray) -> np.ndarray:
    """``runs[k]``: rows of set ``k`` come in runs (share of ``codes[k, i] == codes[k, i-1]``
    at least :data:`RUN_SHARE`, judged on the first 100,000 rows)."""
    head = codes[:, :100_000]
    if head.shape[1] < 2:
        return np.zeros(codes.shape[0], dtype=np.bool_)
    return (head[:, 1:] == head[:, :-1]).mean(axis=1) >= RUN_SHARE


@njit(inline="always")
def _add(sums, run, g, val, gp, t):  # pragma: no cover - compiled
    """``sums[g] += val``; with ``run``, deferred while ``g`` stays the same level
    (``gp``, ``t`` = pending level and sum; flush the last one with ``sums[gp] += t``)."""
    if run:
        if g != gp:
            sums[gp] += t
            return g, val
        return gp, t + val
    sums[g] += val
    return gp, t


@njit(cache=True, nogil=True)
def level_sums(codes, offs, runs, w, out):  # pragma: no cover - compiled
    """``out[offs[k] + g] = sum of w over rows with codes[k] == g`` for every set ``k``."""
    out[:] = 0.0
    n_sets, n = codes.shape
    for k in range(n_sets):
        o = offs[k]
        c = codes[k]
        run = runs[k]
        gp, t = o, 0.0
        for i in range(n):
            gp, t = _add(out, run, o + c[i], w[i], gp, t)
        if run:
            out[gp] += t


@njit(cache=True, nogil=True)
def _acc_first(src, codes, offs, runs, w, sums):  # pragma: no cover - compiled
    """Zero the sums of set 1 and accumulate ``w src`` into them."""
    for g in range(offs[0], offs[1]):
        sums[g] = 0.0
    c0 = codes[0]
    run = runs[0]
    gp, t = 0, 0.0
    for i in range(src.shape[0]):
        gp, t = _add(sums, run, c0[i], w[i] * src[i], gp, t)
    if run:
        sums[gp] += t


@njit(cache=True, nogil=True)
def _pass_sub_acc(s, dst, ck, lo, cn, nlo, run, w, sums):  # pragma: no cover - compiled
    """``dst = s - means[ck]`` fused with the group sums of ``w dst`` over ``cn``."""
    gp, t = nlo, 0.0
    for i in range(s.shape[0]):
        v = s[i] - sums[lo + ck[i]]
        dst[i] = v
        gp, t = _add(sums, run, nlo + cn[i], w[i] * v, gp, t)
    if run:
        sums[gp] += t


@njit(cache=True, nogil=True)
def _pass_sub(s, dst, ck, lo, sums):  # pragma: no cover - compiled
    for i in range(s.shape[0]):
        dst[i] = s[i] - sums[lo + ck[i]]


@njit(cache=True, nogil=True)
def _pass_sub_reduce(s, dst, ck, lo, sums, x0, x1):  # pragma: no cover - compiled
    """``dst = s - means[ck]`` (= x2) fused with the Irons-Tuck reductions over
    ``(x0, x1, x2)``: ``(max|x1 - x2|, |d2 - d1|^2, d2.(d2 - d1))``."""
    change = 0.0
    den = 0.0
    num = 0.0
    for i in range(s.shape[0]):
        v = s[i] - sums[lo + ck[i]]
        dst[i] = v
        a = x0[i] - x1[i]           # -d1
        b = x1[i] - v               # -d2
        ab = abs(b)
        if ab > change:
            change = ab
        dd = a - b                  # d2 - d1
        den += dd * dd
        num -= b * dd               # d2 . (d2 - d1)
    return change, den, num


@njit(cache=True, nogil=True)
def _sweep_chained(src, dst, codes, offs, runs, w, inv, sums, tail,
                   cur):  # pragma: no cover - compiled
    """``dst = (I - P_K)...(I - P_1) src`` (``dst`` may be ``src``).

    Precondition: ``sums[offs[0]:offs[1]]`` holds the ``w``-weighted sums of ``src`` over
    the levels of set 1 (see :func:`_acc_first`). ``tail`` says what the last pass
    (subtracting set K) also does: 0 = nothing; 1 = accumulate the set-1 sums of ``dst``
    (for a next sweep; needs ``K >= 2``); 2 = the Irons-Tuck reductions over
    ``(cur, src, dst) = (x0, x1, x2)``, returned as
    ``(max|x1 - x2|, |d2 - d1|^2, d2.(d2 - d1))``.
    """
    n_sets = codes.shape[0]
    out = (0.0, 0.0, 0.0)
    for k in range(n_sets):
        lo = offs[k]
        for g in range(lo, offs[k + 1]):
            sums[g] *= inv[g]
        s = src if k == 0 else dst
        if k + 1 < n_sets or tail == 1:
            kn = k + 1 if k + 1 < n_sets else 0
            for g in range(offs[kn], offs[kn + 1]):
                sums[g] = 0.0
            _pass_sub_acc(s, dst, codes[k], lo, codes[kn], offs[kn], runs[kn], w, sums)
        elif tail == 0:
            _pass_sub(s, dst, codes[k], lo, sums)
        else:
            out = _pass_sub_reduce(s, dst, codes[k], lo, sums, cur, src)
    return out


@njit(cache=True, nogil=True)
def sweep_into(src, dst, codes, offs, runs, w, inv, sums):  # pragma: no cover - compiled
    """``dst = (I - P_K)...(I - P_1) src`` (``dst`` may be ``src``).

    ``P_k v`` replaces each row by the ``w``-weighted mean of ``v`` over its level of set
    ``k``; ``inv`` holds ``1 / sum(w)`` per level (0 for levels with no weight); ``sums``
    is scratch of the size of ``inv``.
    """
    _acc_first(src, codes, offs, runs, w, sums)
    _sweep_chained(src, dst, codes, offs, runs, w, inv, sums, 0, src)


@njit(cache=True, nogil=True)
def residualize_column(cur, codes, offs, runs, w, inv, scale, maxiter, x1, x2,
                       sums):  # pragma: no cover - compiled
    """Alternating projections with Irons & Tuck (1969) extrapolation on one column, in
    place: the iteration and stopping rule of ``WeightedFE._residualize_column_numpy``
    (two sweeps ``x1 = S x0``, ``x2 = S x1``; stop when ``max|x2 - x1| <= scale``, else
    ``x0 <- x2 - [d2.(d2 - d1) / |d2 - d1|^2] d2``), for ``K >= 2`` sets. The group sums
    of set 1 for the next sweep are accumulated in the pass that writes its input, and
    the reductions in the pass that writes ``x2``: 2K + 1 passes over the rows per pair
    of sweeps instead of 2K + 4. ``x1``, ``x2`` are scratch columns. Returns
    ``(sweeps, converged)``; a NaN anywhere never counts as converged."""
    n = cur.shape[0]
    c0 = codes[0]
    run = runs[0]
    _acc_first(cur, codes, offs, runs, w, sums)
    sweeps = 0
    while sweeps < maxiter:
        _sweep_chained(cur, x1, codes, offs, runs, w, inv, sums, 1, cur)
        change, den, num = _sweep_chained(x1, x2, codes, offs, runs, w, inv, sums, 2, cur)
        sweeps += 2
        if change <= scale and not np.isnan(den):
            cur[:] = x2
            return sweeps, True
        coef = num / den if den > 0 else 0.0
        for g in range(offs[0], offs[1]):
            sums[g] = 0.0
        gp, t = 0, 0.0
        for i in range(n):
            v = x2[i] + coef * (x1[i] - x2[i])   # x2 - coef d2
            cur[i] = v
            gp, t = _add(sums, run, c0[i], w[i] * v, gp, t)
        if run:
            sums[gp] += t
    return sweeps, False


@njit(cache=True, nogil=True)
def add_level_values(codes, offs, v, out):  # pragma: no cover - compiled
    """``out[i] += sum_k v[offs[k] + codes[k, i]]`` (the product ``D v`` of the stacked
    indicator matrices; the transpose is :func:`level_sums`)."""
    n_sets, n = codes.shape
    for k in range(n_sets):
        o = offs[k]
        c = codes[k]
        for i in range(n):
            out[i] += v[o + c[i]]


@njit(cache=True, nogil=True)
def col_absmax(x):  # pragma: no cover - compiled
    """Largest absolute value of each column of a 2-d array (NaN if the column has one)."""
    n, k = x.shape
    out = np.zeros(k)
    for j in range(k):
        m = 0.0
        for i in range(n):
            a = abs(x[i, j])
            if a > m or a != a:
                m = a
                if a != a:
                    break
        out[j] = m
    return out


@njit(cache=True, nogil=True)
def renumber_first_seen(codes, n_levels):  # pragma: no cover - compiled
    """Dense codes ``0..n_levels-1`` renumbered, in place, in order of first appearance.
    Used on the codes of a fit whose rows were put in the order of another set: the
    levels that those rows meet together get neighbouring numbers, so the per-level
    tables are read near where they were read last."""
    remap = np.full(n_levels, -1, dtype=np.int64)
    nxt = 0
    for i in range(codes.shape[0]):
        c = codes[i]
        r = remap[c]
        if r < 0:
            r = nxt
            remap[c] = r
            nxt += 1
        codes[i] = r
