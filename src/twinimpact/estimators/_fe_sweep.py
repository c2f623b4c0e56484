"""Compiled (numba) kernels of the weighted alternating projections used by PPML.

:class:`twinimpact.estimators._ppml_kernel.WeightedFE` calls these; its NumPy/SciPy path
(``backend="numpy"``) computes the same quantities with sparse products and is the oracle
the tests compare these kernels with.

Layout: the fixed-effect codes of all ``K`` sets are one C-ordered ``(K, n)`` int32 array;
the per-level quantities of all sets are one flat array, set ``k`` occupying
``offs[k]:offs[k+1]``. One sweep ``(I - P_K)...(I - P_1)`` is ``K + 1`` passes over the
rows: group sums of set 1, then for each set the subtraction of its weighted means fused
with the group sums of the next set. Nothing of size ``n`` is allocated inside a sweep.

Why compiled: a sweep in NumPy/SciPy is, per set, a CSR product that gathers the column
through a row permutation, a ``take`` that scatters the means back and a subtraction --
four passes and two temporaries of size ``n`` per set; the fused loop reads each row once
per set. The speed claim is measured in ``benchmarks/run_table.py`` (case ``ppml``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["level_sums", "residualize_column", "sweep_into"]


@njit(cache=True, nogil=True)
def level_sums(codes, offs, w, out):  # pragma: no cover - compiled
    """``out[offs[k] + g] = sum of w over rows with codes[k] == g`` for every set ``k``."""
    out[:] = 0.0
    n_sets, n = codes.shape
    for k in range(n_sets):
        o = offs[k]
        c = codes[k]
        for i in range(n):
            out[o + c[i]] += w[i]


@njit(cache=True, nogil=True)
def sweep_into(src, dst, codes, offs, w, inv, sums):  # pragma: no cover - compiled
    """``dst = (I - P_K)...(I - P_1) src`` (``dst`` may be ``src``).

    ``P_k v`` replaces each row by the ``w``-weighted mean of ``v`` over its level of set
    ``k``; ``inv`` holds ``1 / sum(w)`` per level (0 for levels with no weight); ``sums``
    is scratch of the size of ``inv``.
    """
    n_sets, n = codes.shape
    sums[:] = 0.0
    c = codes[0]
    for i in range(n):
        sums[c[i]] += w[i] * src[i]
    for k in range(n_sets):
        ok = offs[k]
        for g in range(ok, offs[k + 1]):
            sums[g] *= inv[g]
        ck = codes[k]
        if k + 1 < n_sets:
            cn = codes[k + 1]
            on = offs[k + 1]
            if k == 0:
                for i in range(n):
                    v = src[i] - sums[ok + ck[i]]
                    dst[i] = v
                    sums[on + cn[i]] += w[i] * v
            else:
                for i in range(n):
                    v = dst[i] - sums[ok + ck[i]]
                    dst[i] = v
                    sums[on + cn[i]] += w[i] * v
        elif k == 0:
            for i in range(n):
                dst[i] = src[i] - sums[ok + ck[i]]
        else:
            for i in range(n):
                dst[i] -= sums[ok + ck[i]]


@njit(cache=True, nogil=True)
def residualize_column(cur, codes, offs, w, inv, scale, maxiter, x1, x2,
                       sums):  # pragma: no cover - compiled
    """Alternating projections with Irons & Tuck (1969) extrapolation on one column, in
    place: the same iteration and stopping rule as
    ``WeightedFE._residualize_column_numpy`` (two sweeps, stop when the largest absolute
    change of the second is ``<= scale``, else extrapolate). ``x1``, ``x2`` are scratch
    columns. Returns ``(sweeps, converged)``; a NaN anywhere never counts as converged."""
    n = cur.shape[0]
    sweeps = 0
    while sweeps < maxiter:
        sweep_into(cur, x1, codes, offs, w, inv, sums)
        sweep_into(x1, x2, codes, offs, w, inv, sums)
        sweeps += 2
        change = 0.0
        den = 0.0
        num = 0.0
        for i in range(n):
            a = cur[i] - x1[i]          # -d1
            b = x1[i] - x2[i]           # -d2
            ab = abs(b)
            if ab > change:
                change = ab
            dd = a - b                  # d2 - d1
            den += dd * dd
            num -= b * dd               # d2 . (d2 - d1)
        if change <= scale and not np.isnan(den):
            cur[:] = x2
            return sweeps, True
        coef = num / den if den > 0 else 0.0
        for i in range(n):
            cur[i] = x2[i] + coef * (x1[i] - x2[i])   # x2 - coef d2
    return sweeps, False


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
