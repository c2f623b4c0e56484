"""Rows of a shuffled panel put in unit order once, at data preparation.

When the rows of a long panel come in no particular order (shuffled rows; string ids
hashed to codes in order of first appearance) every pass that adds a row into a per-unit
table -- the preparation's checks, the fit's scatters, the cluster sums of the variance --
touches that table at a random place. With ~1e6 units the table outgrows the caches and
each row costs a miss: the top-decade CPU exponent of the event study was 1.22 on such
panels against 0.95-1.02 on panels sorted by unit. :func:`prepare_panel
<twinimpact.core.validation.prepare_panel>` (with ``order_by_unit=True``) therefore sorts
the rows by unit once, before any other pass, and codes the units from the sorted keys
instead of hashing them:

* :func:`sortable_values` turns the unit ids into exact integers in a dense range: integer
  ids spanning at most ``4 n + 1000`` values as ``id - min``; string ids of at most eight
  bytes (:func:`~twinimpact.core.labels.short_string_keys`) whose bytes vary little
  (zero-padded ids such as "u0001234": ten values per digit) as one mixed-radix number of
  their bytes. Anything else (longer strings, missing ids, floats): None, the plain path.
* :func:`sort_values`: a stable two-pass LSD counting sort of those integers (each pass
  streams), giving the permutation and the dense unit code of every sorted row (codes in
  value order; equal ids share a code, as with any other coding).
* :func:`gather`: every column the estimator uses, gathered once into the new order.

The caller's frame is untouched: the prepared panel's ``rows`` (positions in the caller's
frame) say where each row came from. :func:`should_order` and :func:`wide_enough` decide
(sampled windows of the rows showing ids that fall often -- a panel already sorted by
unit, or by period and unit, is left alone -- and a range of ids beyond the L2 cache).

The compiled kernels (``_unitorder.c``; optional, loaded with ctypes) give the same bytes
as NumPy's stable ``argsort`` and ``take``, which run when the extension was not built or
:data:`KERNEL_ENV` is ``numpy`` (the tests compare the two).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .rowblocks import row_blocks

__all__ = ["KERNEL_ENV", "ORDER_ENV", "gather", "should_order", "sort_values",
           "sortable_values", "wide_enough"]

#: set to ``numpy`` to use the NumPy path even when the compiled kernels were built
KERNEL_ENV = "TWINIMPACT_UNITORDER_KERNEL"
#: ``always`` / ``never`` overrides :func:`should_order` (tests and A/B runs)
ORDER_ENV = "TWINIMPACT_ORDER_BY_UNIT"
#: smallest id range for which ordering pays (a float64 per-unit table of 512 KB)
MIN_UNITS = 1 << 16
#: fewest rows
MIN_ROWS = 1 << 18
#: rows of each sampled window and the number of windows
WINDOW = 1 << 13
WINDOWS = 8
#: share of falling ids in the windows above which the rows count as shuffled
MIN_DESCENTS = 1 / 16
#: low bits of the first pass of the two-pass radix sort
LO_BITS = 11

_LIB: list = []


def _compiled() -> Any:
    """The ctypes library of ``_unitorder.c``, or None (not built, or :data:`KERNEL_ENV`
    is ``numpy``)."""
    if os.environ.get(KERNEL_ENV, "").strip().lower() == "numpy":
        return None
    if not _LIB:
        lib = None
        try:
            import ctypes

            from . import _unitorder  # the built extension module (file located, not called)
            lib = ctypes.CDLL(_unitorder.__file__)
            p, i64 = ctypes.c_void_p, ctypes.c_int64
            lib.ti_byte_ranges.restype = None
            lib.ti_byte_ranges.argtypes = [i64, p, p, p]
            lib.ti_mixed_radix.restype = None
            lib.ti_mixed_radix.argtypes = [i64, p, p, p, p]
            lib.ti_sort_values.restype = i64
            lib.ti_sort_values.argtypes = [i64, p, i64, p, p, ctypes.c_int]
            lib.ti_gather.restype = ctypes.c_int
            lib.ti_gather.argtypes = [i64, p, p, i64, p, p, p, p]
        except (ImportError, OSError, AttributeError):
            lib = None
        _LIB.append(lib)
    return _LIB[0]


def _span_ok(span: int, n: int) -> bool:
    return span <= 4 * n + 1000 and span < 2**32


def sortable_values(labels: Any) -> tuple[np.ndarray, int] | None:
    """``(v, R)``: one int64 per row in ``0..R-1``, equal for two rows exactly when their
    labels are (integer labels as ``label - min``; short string labels as a mixed-radix
    number of their bytes), with ``R <= 4 n + 1000``; None when the labels are not such
    (floats, missing labels, long strings, a wide range). ``v`` is a new array."""
    n = len(labels)
    if n == 0 or n >= 2**31:
        return None
    if isinstance(labels, np.ndarray):
        if labels.dtype.kind not in "iu":
            return None
        lo, hi = labels.min().item(), labels.max().item()
        if not _span_ok(hi - lo + 1, n):
            return None
        v = np.empty(n, dtype=np.int64)
        for sl in row_blocks(n):
            np.subtract(labels[sl], lo, out=v[sl], casting="unsafe")
        return v, int(hi - lo + 1)
    from .labels import _arrow_strings, short_string_keys

    data = _arrow_strings(labels)
    if data is None:
        return None
    keys = short_string_keys(data)
    if keys is None:
        return None
    lib = _compiled()
    mins = np.empty(8, dtype=np.int64)
    maxs = np.empty(8, dtype=np.int64)
    if lib is not None:
        lib.ti_byte_ranges(n, keys.ctypes.data, mins.ctypes.data, maxs.ctypes.data)
    else:
        b = keys.view(np.uint8).reshape(n, 8)  # little-endian: column j = bits 8j..8j+7
        mins[:] = b.min(axis=0)
        maxs[:] = b.max(axis=0)
    # the string's first byte (bits 0-7) most significant: sorted strings of one length
    # give increasing numbers (a panel sorted by unit is seen as such)
    span, mults = 1, np.zeros(8, dtype=np.int64)
    for j in range(7, -1, -1):
        mults[j] = span
        span *= int(maxs[j] - mins[j] + 1)
    if not _span_ok(span, n):
        return None
    v = keys.view(np.int64)
    if lib is not None:
        lib.ti_mixed_radix(n, keys.ctypes.data, mins.ctypes.data, mults.ctypes.data,
                           v.ctypes.data)
    else:
        b = keys.view(np.uint8).reshape(n, 8)
        for sl in row_blocks(n):
            part = (b[sl].astype(np.int64) - mins) @ mults
            v[sl] = part
    return v, span


def _window_keys(labels: Any, start: int, stop: int) -> np.ndarray | None:
    """Integers ordered as the labels of rows ``start..stop`` (integer labels themselves;
    short strings as their bytes read big-endian), None for other labels."""
    if isinstance(labels, np.ndarray):
        return labels[start:stop] if labels.dtype.kind in "iu" else None
    from .labels import _arrow_strings, short_string_keys

    data = _arrow_strings(labels)
    if data is None:
        return None
    keys = short_string_keys(data.slice(start, stop - start))
    return None if keys is None else keys.byteswap()


def should_order(labels: Any) -> bool:
    """Whether sorting the rows by unit pays: at least :data:`MIN_ROWS` rows, and more
    than :data:`MIN_DESCENTS` of consecutive labels falling (in :data:`WINDOWS` windows
    spread over the rows; a panel sorted by unit, or by period and unit, is left alone).
    Integer or short string labels only (:func:`sortable_values` says whether the labels
    qualify; :data:`MIN_UNITS` is checked on its range). :data:`ORDER_ENV` (``always`` /
    ``never``) overrides."""
    force = os.environ.get(ORDER_ENV, "").strip().lower()
    if force in ("always", "never"):
        return force == "always"
    n = len(labels)
    if n < MIN_ROWS:
        return False
    step = (n - WINDOW) // (WINDOWS - 1)
    falls = 0
    for k in range(WINDOWS):
        w = _window_keys(labels, k * step, k * step + WINDOW)
        if w is None:
            return False
        falls += int(np.count_nonzero(w[1:] < w[:-1]))
    return falls > MIN_DESCENTS * WINDOWS * (WINDOW - 1)


def wide_enough(span: int) -> bool:
    """Whether an id range of ``span`` values (:func:`sortable_values`) is wide enough
    for ordering to pay (:data:`MIN_UNITS`; :data:`ORDER_ENV` ``always`` overrides)."""
    force = os.environ.get(ORDER_ENV, "").strip().lower()
    return force == "always" or span >= MIN_UNITS


def sort_values(v: np.ndarray, span: int, tmp: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, int]:
    """``(perm, codes, G)``: ``perm = np.argsort(v, kind="stable")`` (int32), ``codes``
    the dense rank of each sorted row's value among the ``G`` distinct values (written
    into ``v``'s memory: ``v`` is consumed). ``v`` from :func:`sortable_values` (values in
    ``0..span-1``, fewer than 2**31 rows); ``tmp``: optional scratch of n 8-byte items
    (e.g. an output buffer that is filled later)."""
    n = len(v)
    lib = _compiled()
    if lib is not None:
        perm = np.empty(n, dtype=np.int32)
        if tmp is None or tmp.nbytes < 8 * n or not tmp.flags.c_contiguous:
            tmp = np.empty(n, dtype=np.uint64)
        g = int(lib.ti_sort_values(n, v.ctypes.data, span, perm.ctypes.data,
                                   tmp.ctypes.data, LO_BITS))
        if g >= 0:
            return perm, v, g
        if g == -1:
            raise ValueError("sort_values: a value outside 0..span-1")
    perm = np.argsort(v, kind="stable").astype(np.int32, copy=False)
    codes = v
    sv = v[perm]
    if n:
        codes[0] = 0
        np.not_equal(sv[1:], sv[:-1], out=codes[1:], casting="unsafe")
        np.cumsum(codes, out=codes)
    return perm, codes, int(codes[-1]) + 1 if n else 0


def gather(perm: np.ndarray, arrays: list[Any], out: list[np.ndarray | None] | None = None
           ) -> list[Any]:
    """``[a[perm] for a in arrays]`` (new arrays, or ``out[k]`` when given: a contiguous
    array of ``a``'s dtype and length, not ``a`` itself; the inputs are not modified) for
    a permutation ``perm`` of the arrays' rows (:func:`sort_values`; not checked): numpy
    arrays of 1-, 2-, 4- or 8-byte items (numbers, booleans, datetimes; one dimension, any
    stride) in one compiled pass, anything else (object arrays, pandas extension arrays)
    by its own ``take``."""
    res: list[Any] = [None] * len(arrays)
    out = list(out) if out is not None else [None] * len(arrays)
    fused: list[int] = []
    n = len(perm)
    for k, a in enumerate(arrays):
        if (isinstance(a, np.ndarray) and a.ndim == 1 and a.dtype.kind in "biufcmM"
                and a.dtype.itemsize in (1, 2, 4, 8)):
            if len(a) != n:
                raise ValueError("gather: perm must be a permutation of the arrays' rows")
            fused.append(k)
            if out[k] is None:
                out[k] = np.empty(n, dtype=a.dtype)
        elif isinstance(a, np.ndarray):
            res[k] = a[perm]
        else:
            res[k] = a.take(perm)
    lib = _compiled()
    if lib is None or not fused:
        for k in fused:
            np.take(arrays[k], perm, out=out[k])
            res[k] = out[k]
        return res
    import ctypes

    perm = np.ascontiguousarray(perm)
    if perm.dtype not in (np.int32, np.int64):
        perm = perm.astype(np.int64)
    m = len(fused)
    srcs = (ctypes.c_void_p * m)()
    dsts = (ctypes.c_void_p * m)()
    strides = np.empty(m, dtype=np.int64)
    sizes = np.empty(m, dtype=np.int64)
    for i, k in enumerate(fused):
        a = arrays[k]
        srcs[i] = a.ctypes.data
        dsts[i] = out[k].ctypes.data
        strides[i] = a.strides[0]
        sizes[i] = a.dtype.itemsize
        res[k] = out[k]
    p32 = perm.ctypes.data if perm.dtype == np.int32 else None
    p64 = perm.ctypes.data if perm.dtype == np.int64 else None
    rc = lib.ti_gather(n, p32, p64, m, ctypes.cast(srcs, ctypes.c_void_p),
                       strides.ctypes.data, sizes.ctypes.data,
                       ctypes.cast(dsts, ctypes.c_void_p))
    if rc != 0:  # pragma: no cover - the item sizes were checked above
        raise RuntimeError("gather: unsupported item size")
    return res
