"""Row-blocked passes over long arrays.

An n-row temporary (76 MB of float64 at 1e7 rows) is larger than glibc's mmap threshold
(at most 32 MB), so every such array is a fresh mapping whose pages the kernel faults in
and zeroes, and unmaps when it is freed: at 1e7 rows that system time, not the arithmetic,
made the two-stage estimators' cost grow faster than the rows. Passes that run block by
block over ``BLOCK`` rows keep their temporaries (2 MB per float column) in reused heap
memory. Results are the same numbers, in the same order of operations, as the
whole-array expressions they replace.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["BLOCK", "code_sums", "codes_present", "pair_sums", "row_blocks"]

#: rows per block
BLOCK = 1 << 18


def row_blocks(n: int) -> Iterator[slice]:
    """Slices ``[0, B), [B, 2B), ...`` covering ``range(n)`` (``B = BLOCK``)."""
    return (slice(i, min(n, i + BLOCK)) for i in range(0, n, BLOCK))


def codes_present(codes: np.ndarray, where: np.ndarray, n_levels: int) -> int:
    """How many of the codes ``0..n_levels-1`` occur on the rows where ``where`` is True
    (``np.count_nonzero(np.bincount(codes[where]))`` without the gather of those rows'
    codes: one byte per level, marked block by block)."""
    seen = np.zeros(n_levels, dtype=bool)
    for sl in row_blocks(len(codes)):
        seen[codes[sl][where[sl]]] = True
    return int(np.count_nonzero(seen))


def code_sums(codes: np.ndarray, n_levels: int, weights: np.ndarray | None = None, *,
              shift: int = 0, dtype: type = np.float64) -> np.ndarray:
    """``np.bincount(codes + shift, weights, minlength=n_levels)`` as ``dtype``: the same
    sums added in the same (row) order, by ``np.add.at`` block by block into one table,
    so that no n-row temporary is made (bincount converts int32 codes and non-contiguous
    weights to n-row copies, and allocates its output twice). ``weights=None`` counts."""
    out = np.zeros(n_levels, dtype=dtype)
    one = out.dtype.type(1)  # a scalar of the table's type: numpy's fast path of add.at
    for sl in row_blocks(len(codes)):
        key = codes[sl].astype(np.intp)
        if shift:
            key += shift
        np.add.at(out, key, one if weights is None else weights[sl])
    return out


def pair_sums(code_a: np.ndarray, n_a: int, code_b: np.ndarray, n_b: int,
              weights: np.ndarray | None, *, shift_b: int = 0,
              dtype: type | None = None, skip_negative_b: bool = False) -> np.ndarray:
    """``(n_a, n_b)`` table of the sums of ``weights`` over the rows of each pair of codes
    ``(code_a, code_b + shift_b)``: ``np.bincount(code_a * n_b + code_b + shift_b,
    weights, n_a * n_b)``, the same sums added in the same (row) order, without the n-row
    pair-code array or bincount's n-row intermediates (``np.add.at`` block by block into
    one table). ``weights=None``: the row counts, as int32 unless ``dtype`` says otherwise
    (per block at most ``BLOCK`` are added to a cell; int64 from 2**31 rows); float64
    counts are exact (integers below 2**53). ``skip_negative_b``: rows whose ``code_b``
    is negative are left out (as if they were counted in a dropped column)."""
    if dtype is None:
        dtype = np.float64 if weights is not None else (
            np.int64 if len(code_a) >= 2**31 else np.int32)
    out = np.zeros(n_a * n_b, dtype=dtype)
    one = out.dtype.type(1)  # a scalar of the table's type: numpy's fast path of add.at
    for sl in row_blocks(len(code_a)):
        a, b = code_a[sl], code_b[sl]
        wb = None if weights is None else weights[sl]
        if skip_negative_b:
            on = b >= 0
            if not on.all():
                a, b = a[on], b[on]
                wb = None if wb is None else wb[on]
        key = a.astype(np.intp) * n_b
        key += b
        if shift_b:
            key += shift_b
        np.add.at(out, key, one if wb is None else wb)
    return out.reshape(n_a, n_b)
