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
  their bytes. Anything else (longer strings, missing ids, floats): None.
* :func:`sort_values`: a stable two-pass LSD counting sort of those integers (each pass
  streams), giving the permutation and the dense unit code of every sorted row (codes in
  value order; equal ids share a code, as with any other coding).
* every other kind of id (strings longer than eight bytes or of mixed lengths, object
  columns, floats, Categoricals, a wide integer range, ids with missing values) is
  grouped by its codes as without ordering (first appearance; a Categorical's own
  codes): :func:`group_strings` groups Arrow strings without a hash table (a radix sort
  by some bits of a hash of each string's bytes, then the strings of each bucket compared
  byte for byte, so that codes are exact), :func:`group_fixed` does the same for many
  distinct numbers of a wide range (the bytes of each value), :func:`sort_codes` sorts
  given codes (the rows of a missing id are left out: prepare_panel has dropped and
  counted them).
* :func:`gather`: every column the estimator uses, gathered once into the new order.

Beside the ordering, the same kernels code labels without a hash table where a direct
table is exact and cheaper (``core.fe.factorize``, :func:`code_strings`): numbers in a
narrow range (:func:`first_seen`, :func:`code_numbers`) and short strings whose bytes vary
little (:func:`string_first_seen`: "C027x_1995" read as one number of its varying bytes)
get ``pandas.factorize``'s codes, in order of first appearance, from one table indexed by
the value; :data:`DIRECT_ENV` switches that off.

The caller's frame is untouched: the prepared panel's ``rows`` (positions in the caller's
frame) say where each row came from. :func:`should_order` and :func:`wide_enough` decide
(sampled windows of the rows showing ids that fall often -- a panel already sorted by
unit, or by period and unit, is left alone -- and a range of ids, or a number of
distinct ids, beyond the L2 cache).

The compiled kernels (``_unitorder.c``; optional, loaded with ctypes) give the same bytes
as NumPy's stable ``argsort`` and ``take`` (and :func:`group_strings` those of
:func:`~twinimpact.core.labels.string_codes` and :func:`sort_codes`), which run when the
extension was not built or :data:`KERNEL_ENV` is ``numpy`` (the tests compare the two).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from .rowblocks import row_blocks

__all__ = ["DIRECT_ENV", "KERNEL_ENV", "ORDER_ENV", "code_numbers", "code_strings",
           "first_rows", "first_seen", "gather", "group_fixed", "group_strings", "should_order",
           "sort_codes", "sort_values", "sortable_values", "string_first_seen", "ungroup_codes",
           "wide_enough"]

#: set to ``numpy`` to use the NumPy path even when the compiled kernels were built
KERNEL_ENV = "TWINIMPACT_UNITORDER_KERNEL"
#: set to ``hash`` to make :func:`code_numbers` and :func:`string_first_seen` decline
#: (labels hashed or grouped as before them, to the same codes; tests and A/B runs)
DIRECT_ENV = "TWINIMPACT_DIRECT_CODES"
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

#: rows from which :func:`code_strings` may group the rows instead of hashing them
GROUP_MIN_ROWS = 1 << 18
#: rows of the spread-out sample of that decision (0.3-0.8 ms at 5e5-1e7 rows)
GROUP_SAMPLE = 1 << 13
#: fewest distinct labels for which the grouping is taken. Measured (one process, CPU,
#: medians of 3; benchmarks/RESULTS.md "PPML's string keys"): grouping / one hash table
#: 0.87-0.96 at 1e5 labels and 1-2e6 rows of uniform synthetic ids ("C00001x_Z0001"),
#: 1.12-1.59 at 4e6-1e7 rows, 1.4-2.0 at 5-6e4 labels, 0.3-0.7 from 2e5 labels; 0.42 for
#: the gravity panel's 102,080 pairs at 1.9e6 rows, 1.7 for its 52,670 at 1e6
GROUP_MIN_LABELS = 75_000

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
            lib.ti_group_strings.restype = i64
            lib.ti_group_strings.argtypes = [i64, p, p, p, i64, p, i64, ctypes.c_int, p, p,
                                             p, ctypes.c_int, p]
            lib.ti_first_seen.restype = i64
            lib.ti_first_seen.argtypes = [i64, p, i64, ctypes.c_int, ctypes.c_int,
                                          ctypes.c_uint64, ctypes.c_double, i64, p, p]
            lib.ti_string_ranges.restype = i64
            lib.ti_string_ranges.argtypes = [i64, p, p, p, i64, p, p]
            lib.ti_string_first_seen.restype = i64
            lib.ti_string_first_seen.argtypes = [i64, p, p, p, i64, i64, p, p, p, i64, p,
                                                 i64, p]
            lib.ti_gather.restype = ctypes.c_int
            lib.ti_gather.argtypes = [i64, p, p, i64, p, p, p, p]
        except (ImportError, OSError, AttributeError):
            lib = None
        _LIB.append(lib)
    return _LIB[0]


def _span_ok(span: int, n: int) -> bool:
    """Whether a dense table of ``span`` values is small enough beside ``n`` rows."""
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


def _window_falls(labels: Any, start: int, stop: int) -> int | None:
    """How many consecutive labels fall (``label[i + 1] < label[i]``) among rows
    ``start..stop``, None when the labels are not compared here. Integer and short string
    labels as :func:`_window_keys`; float labels as numbers (a NaN never falls); a
    Categorical by its codes (the categories' order); other Arrow strings and object
    columns of str by their UTF-8 bytes (Arrow's comparison; a missing label never falls;
    any other object: None)."""
    w = _window_keys(labels, start, stop)
    if w is None and isinstance(labels, np.ndarray) and labels.dtype.kind == "f":
        w = labels[start:stop]
    elif w is None and isinstance(labels, pd.Categorical):
        w = labels.codes[start:stop]
    if w is not None:
        return int(np.count_nonzero(w[1:] < w[:-1]))
    data = _string_window(labels, start, stop)
    if data is None:
        return None
    import pyarrow.compute as pc

    falls = pc.less(data.slice(1), data.slice(0, len(data) - 1))
    return int(pc.sum(falls.fill_null(False)).as_py() or 0)


def _string_window(labels: Any, start: int, stop: int) -> Any | None:
    """Rows ``start..stop`` of Arrow string labels, or of an object column holding only
    str (and missing values), as an Arrow string array; None otherwise."""
    import pyarrow as pa

    from .labels import _arrow_strings

    data = _arrow_strings(labels)
    if data is not None:
        return data.slice(start, stop - start)
    if not (isinstance(labels, np.ndarray) and labels.dtype == object):
        return None
    try:
        arr = pa.array(labels[start:stop], from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError):
        return None
    return arr if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) \
        else None


def should_order(labels: Any, *, env: str = ORDER_ENV, min_rows: int | None = None) -> bool:
    """Whether sorting the rows by unit pays: at least :data:`MIN_ROWS` rows, and more
    than :data:`MIN_DESCENTS` of consecutive labels falling (in :data:`WINDOWS` windows
    spread over the rows; a panel sorted by unit, or by period and unit, is left alone).
    Integer, float, Categorical and string labels (:func:`_window_falls`; :data:`MIN_UNITS`
    is checked on the range of :func:`sortable_values`, or on the number of distinct
    labels of the others). :data:`ORDER_ENV` (``always`` / ``never``) overrides. Another
    caller (``ppml``'s ordering of the fit's rows) passes its own override variable
    ``env`` and row threshold ``min_rows`` (default :data:`MIN_ROWS`)."""
    force = os.environ.get(env, "").strip().lower()
    if force in ("always", "never"):
        return force == "always"
    n = len(labels)
    if n < max(MIN_ROWS if min_rows is None else min_rows, WINDOW * WINDOWS):
        return False
    step = (n - WINDOW) // (WINDOWS - 1)
    falls = 0
    for k in range(WINDOWS):
        f = _window_falls(labels, k * step, k * step + WINDOW)
        if f is None:
            return False
        falls += f
    return falls > MIN_DESCENTS * WINDOWS * (WINDOW - 1)


def wide_enough(span: int, *, env: str = ORDER_ENV, min_units: int | None = None) -> bool:
    """Whether an id range of ``span`` values (:func:`sortable_values`) is wide enough
    for ordering to pay (:data:`MIN_UNITS`; :data:`ORDER_ENV` ``always`` overrides; ``env``
    and ``min_units`` as for :func:`should_order`)."""
    force = os.environ.get(env, "").strip().lower()
    return force == "always" or span >= (MIN_UNITS if min_units is None else min_units)


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


def sort_codes(codes: np.ndarray, n_codes: int, tmp: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, int]:
    """``(perm, sorted_codes, G)`` for codes in ``0..n_codes-1`` with ``-1`` for a
    missing label (:func:`~twinimpact.core.validation.dense_codes`, a Categorical's
    codes): the rows that have a label, grouped by code (``perm``: int32, a stable
    argsort of the codes without the missing rows), their dense rank among the ``G``
    codes present in that order (the codes themselves when they are dense). ``codes``
    (int64) is consumed (its memory holds the result); ``tmp`` as for
    :func:`sort_values`."""
    n = len(codes)
    v = codes if codes.dtype == np.int64 else codes.astype(np.int64)
    n_missing = 0
    for sl in row_blocks(n):
        part = v[sl]
        miss = part < 0
        if miss.any():
            n_missing += int(np.count_nonzero(miss))
            part[miss] = n_codes  # after every label (stable: rows stay in order)
    perm, sorted_codes, g = sort_values(v, n_codes + (1 if n_missing else 0), tmp)
    if n_missing:
        perm, sorted_codes, g = perm[:n - n_missing], sorted_codes[:n - n_missing], g - 1
    return perm, sorted_codes, g


def _bucket_bits(n: int) -> int:
    """Hash bits of :func:`group_strings`' buckets: at least twice as many buckets as rows
    (so that few buckets hold two strings), within :func:`sort_values`' range."""
    return min(max(int(n).bit_length() + 1, 10), 31)


def _kernel_strings(arr: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets, data)`` of an Arrow string array
    (:func:`~twinimpact.core.labels.string_buffers`) as the compiled kernels take them: an
    empty data buffer replaced by one zero byte (the kernels read through a valid
    pointer)."""
    from .labels import string_buffers

    offsets, data = string_buffers(arr)
    return offsets, data if len(data) else np.zeros(1, dtype=np.uint8)


def _offset_args(offsets: np.ndarray) -> tuple[int | None, int | None]:
    """The kernels' two offset arguments: the address of int32 offsets and None, or None
    and the address of int64 (large_string) offsets."""
    large = offsets.dtype == np.int64
    return (None, offsets.ctypes.data) if large else (offsets.ctypes.data, None)


def group_strings(labels: Any, tmp: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, int] | None:
    """:func:`sort_codes` of the labels' ``pandas.factorize`` codes (the rows that have a
    label grouped by label, in order of first appearance; each group's rows in their
    order), for Arrow string labels (pandas' ``str`` / ``string[pyarrow]``), None for
    any other labels. The compiled kernel groups the rows without a hash table: a radix
    sort by some bits of a hash of each string's bytes, each bucket's strings compared
    byte for byte (distinct strings never share a code), the groups put in order of
    first appearance; the NumPy path codes the strings with
    :func:`~twinimpact.core.labels.string_codes` and sorts the codes (the same bytes).
    ``tmp`` as for :func:`sort_values`."""
    from .labels import _arrow_strings, string_codes

    data = _arrow_strings(labels)
    n = len(labels)
    if data is None or n >= 2**31:
        return None
    lib = _compiled()
    if lib is None:
        codes, g = string_codes(labels)
        return sort_codes(codes, g, tmp)
    arr = data.combine_chunks() if data.num_chunks != 1 else data.chunk(0)
    offsets, data_buf = _kernel_strings(arr)
    validity = arr.buffers()[0]
    valid = (np.frombuffer(validity, dtype=np.uint8)
             if arr.null_count and validity is not None else None)
    return _group_bytes(lib, n, offsets, data_buf, valid, arr.offset, tmp)


def _group_bytes(lib: Any, n: int, offsets: np.ndarray, data_buf: np.ndarray,
                 valid: np.ndarray | None, valid_bit: int, tmp: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray, int]:
    """The compiled grouping of ``n`` byte strings (``offsets``: ``n + 1`` int32 or int64
    into ``data_buf``; ``valid``: Arrow's validity bits from bit ``valid_bit``, or None)
    for :func:`group_strings` and :func:`group_fixed`."""
    perm = np.empty(n, dtype=np.int32)
    codes = np.empty(n, dtype=np.int64)
    if tmp is None or tmp.nbytes < 8 * n or not tmp.flags.c_contiguous:
        tmp = np.empty(n, dtype=np.uint64)
    nbits = _bucket_bits(n)
    m = np.zeros(1, dtype=np.int64)
    g = int(lib.ti_group_strings(
        n, *_offset_args(offsets), data_buf.ctypes.data, len(data_buf), None if valid is None else valid.ctypes.data,
        valid_bit,
        nbits, perm.ctypes.data, codes.ctypes.data, tmp.ctypes.data, LO_BITS,
        m.ctypes.data))
    if g < 0:  # pragma: no cover - out of memory in the kernel
        raise MemoryError("group_strings: out of memory")
    k = int(m[0])
    return (perm, codes, g) if k == n else (perm[:k], codes[:k], g)


def ungroup_codes(perm: np.ndarray, codes: np.ndarray, n: int,
                  out: np.ndarray | None = None) -> np.ndarray:
    """The codes of :func:`sort_codes` / :func:`group_strings` (``codes[j]`` of row
    ``perm[j]``) back in the ``n`` rows' order (intp; ``-1`` at the rows left out: a
    missing label), in ``out`` when given (intp, ``n`` rows; e.g. the sort's ``tmp``
    viewed as intp, free once it returned)."""
    if out is None:
        out = np.empty(n, dtype=np.intp)
    if len(perm) < n:
        out.fill(-1)
    out[perm] = codes
    return out


def first_rows(perm: np.ndarray, codes: np.ndarray, k: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """``(first, counts)``: each group's first row (a position among the caller's rows)
    and its number of rows, for rows grouped by code as :func:`sort_values`,
    :func:`sort_codes`, :func:`group_strings` and :func:`group_fixed` give them
    (``codes[j]`` of row ``perm[j]``, ascending, each of the ``k`` codes present, a
    group's rows in their order)."""
    counts = np.bincount(codes, minlength=k)
    return perm[np.cumsum(counts) - counts], counts


def _expected_distinct(labels: float, rows: int) -> float:
    """Expected share of distinct labels among ``rows`` rows drawn from ``labels``
    equally frequent labels: ``labels (1 - exp(-rows / labels)) / rows``."""
    return labels * -np.expm1(-rows / labels) / rows


def _grouping_pays(data: Any) -> bool:
    """Whether :func:`code_strings` should group the rows (:func:`group_strings`)
    rather than hash them: at least :data:`GROUP_MIN_ROWS` rows, the compiled kernel
    built, a spread-out sample of :data:`GROUP_SAMPLE` rows as distinct as
    :data:`GROUP_MIN_LABELS` equally frequent labels would make it, and the first
    :data:`GROUP_SAMPLE` rows > 25% distinct (rows sorted by label hash in cache: one
    table it is)."""
    from .labels import spread_sample

    n, s = len(data), GROUP_SAMPLE
    if n < GROUP_MIN_ROWS or n >= 2**31 or _compiled() is None:
        return False
    if len(spread_sample(data, s).unique()) < _expected_distinct(GROUP_MIN_LABELS, s) * s:
        return False
    return len(data.slice(0, s).unique()) > 0.25 * s


#: longest strings that :func:`string_first_seen` reads as numbers (``TI_SHORT`` in C)
SHORT_BYTES = 16


def _direct_off() -> bool:
    return os.environ.get(DIRECT_ENV, "").strip().lower() == "hash"


def _string_ranges(lib: Any, chunks: list, mins: np.ndarray, maxs: np.ndarray) -> bool:
    """Update ``mins`` / ``maxs`` with the byte ranges of the chunks' strings
    (``ti_string_ranges``); False when a string is longer than :data:`SHORT_BYTES`."""
    for c in chunks:
        offsets, buf = _kernel_strings(c)
        if lib.ti_string_ranges(len(c), *_offset_args(offsets), buf.ctypes.data, len(buf),
                                mins.ctypes.data, maxs.ctypes.data) < 0:
            return False
    return True


def _radix(mins: np.ndarray, maxs: np.ndarray, limit: int
           ) -> tuple[np.ndarray, np.ndarray, int] | None:
    """The varying positions, their multipliers and the span of the mixed-radix number of
    :func:`string_first_seen`; None when the span exceeds ``limit``."""
    pos = np.flatnonzero(maxs > mins).astype(np.int32)
    mults = np.empty(len(pos), dtype=np.int64)
    span = 1
    for k, j in enumerate(pos):
        mults[k] = span
        span *= int(maxs[j] - mins[j] + 1)
        if span > limit:
            return None
    return pos, mults, span


def string_first_seen(labels: Any) -> tuple[np.ndarray, int] | None:
    """``pandas.factorize(labels)`` codes (intp) and the label count of Arrow string
    labels without missing values whose strings are at most :data:`SHORT_BYTES` bytes and
    vary little byte by byte (ids such as ``"C027x_1995"``, ``"DEU_FRA"``, zero-padded
    numbers): each string read as one exact number of its varying bytes and its length
    (a mixed radix of each position's range, distinct strings distinct numbers) in a
    range of at most ``4 n + 1000`` values, then coded by first appearance through a
    direct table (:func:`first_seen` for strings, ``ti_string_first_seen``): two streaming
    passes over the bytes and no hash table. None for other labels (a longer string, a
    missing value, a wide range -- checked first on a spread-out sample of
    :data:`GROUP_SAMPLE` rows), without the compiled kernel or with :data:`DIRECT_ENV`
    = ``hash``. Measured at 9.6e6 rows of the gravity panel: exporter-year keys (14,200)
    0.29 s hashed, pair keys (503,390) 0.79 s grouped (:func:`group_strings`), see
    benchmarks/RESULTS.md "PPML's numeric keys"."""
    from .labels import _arrow_strings, spread_sample

    data = _arrow_strings(labels)
    lib = _compiled()
    n = len(labels)
    if (data is None or lib is None or _direct_off() or data.null_count or n == 0
            or n >= 2**31 or np.intp is not np.int64):
        return None
    limit = min(4 * n + 1000, 2**31 - 1)
    chunks = [c for c in data.chunks if len(c)]

    def fresh() -> tuple[np.ndarray, np.ndarray]:
        mins = np.full(SHORT_BYTES + 1, 255, dtype=np.int64)
        mins[SHORT_BYTES] = 2**62
        return mins, np.zeros(SHORT_BYTES + 1, dtype=np.int64)

    if n > GROUP_SAMPLE:
        import pyarrow as pa

        sample = spread_sample(data, GROUP_SAMPLE)
        sample = sample.chunks if isinstance(sample, pa.ChunkedArray) else [sample]
        mins, maxs = fresh()
        if (not _string_ranges(lib, [c for c in sample if len(c)], mins, maxs)
                or _radix(mins, maxs, limit) is None):
            return None
    mins, maxs = fresh()
    if not _string_ranges(lib, chunks, mins, maxs):
        return None
    radix = _radix(mins, maxs, limit)
    if radix is None:
        return None
    pos, mults, span = radix
    table = np.full(span, -1, dtype=np.int32)
    out = np.empty(n, dtype=np.int64)
    g, start = 0, 0
    for c in chunks:
        offsets, buf = _kernel_strings(c)
        g = int(lib.ti_string_first_seen(
            len(c), *_offset_args(offsets), buf.ctypes.data, len(buf), len(pos),
            pos.ctypes.data, mins.ctypes.data, mults.ctypes.data, span, table.ctypes.data,
            g, out[start:].ctypes.data))
        if g < 0:  # pragma: no cover - the ranges were taken from these strings
            raise ValueError("string_first_seen: a string outside its ranges")
        start += len(c)
    return out, g


def code_strings(values: Any) -> tuple[np.ndarray, int] | None:
    """:func:`~twinimpact.core.labels.string_codes` (``pandas.factorize(values)`` codes
    as intp, ``-1`` = missing, and the label count of an Arrow string array; None for
    anything else): short strings whose bytes vary little by :func:`string_first_seen`
    (a direct table), else with many labels in no order (:func:`_grouping_pays`) grouped by
    :func:`group_strings` instead of hashed: the same codes (groups in order of first
    appearance), from a radix sort of string hashes without a hash table, each group's
    code then put back at its rows in the sort's scratch (no further n-row array)."""
    from .labels import _arrow_strings, string_codes

    data = _arrow_strings(values)
    if data is None:
        return None
    coded = string_first_seen(values)
    if coded is not None:
        return coded
    if not _grouping_pays(data):
        return string_codes(values)
    n = len(values)
    scratch = np.empty(n, dtype=np.int64)
    perm, codes, g = group_strings(values, scratch.view(np.uint64))
    return ungroup_codes(perm, codes, n, scratch if np.intp is np.int64 else None), g


#: numeric labels are grouped as bytes (:func:`group_fixed`) from this many rows ...
FIXED_MIN_ROWS = 1 << 21
#: ... and this many distinct labels (estimated): below it a hash table of the labels
#: stays in the caches and hashing them, then sorting the codes, is faster (measured at
#: 1e5-1e7 rows, 2-1,000 rows a label: the byte kernel's cost is ~45-60 ns a row at 1e7
#: whatever the labels; hashing plus sorting 12 ns a row with 1e4 labels, 25 with 1e5,
#: 75 with 1e6, 150 with 5e6)
FIXED_MIN_LABELS = 500_000
#: rows drawn (fixed seed) to estimate the number of distinct labels
FIXED_SAMPLE = 1 << 16


def _many_labels(sample: np.ndarray) -> bool:
    """Whether labels of which ``sample`` holds rows drawn at random likely hold at least
    :data:`FIXED_MIN_LABELS` distinct values: Chao's estimate ``d + f1^2 / (2 f2)`` (``d``
    distinct values in the sample, ``f1`` / ``f2`` of them seen once / twice). Only a
    speed choice: both groupings give the same result."""
    _, counts = np.unique(sample, return_counts=True)
    f1 = int(np.count_nonzero(counts == 1))
    f2 = int(np.count_nonzero(counts == 2))
    estimate = len(counts) + (f1 * f1 / (2 * f2) if f2 else (np.inf if f1 else 0.0))
    return estimate >= FIXED_MIN_LABELS


def _may_be_counted(labels: np.ndarray, sample: np.ndarray) -> bool:
    """Whether :func:`~.validation.dense_codes` may code ``labels`` by counting (codes in
    label order) rather than by hashing (first appearance): its own test -- a finite
    range of at most ``4 n + 1000`` values, integers or floats whose shifts from the
    minimum are all integral -- on the rows of ``sample`` for the last part. False means
    it hashes."""
    with np.errstate(invalid="ignore"):
        lo, hi = labels.min().item(), labels.max().item()
    if not (np.isfinite(lo) and np.isfinite(hi) and hi - lo <= 4 * len(labels) + 1000):
        return False
    if labels.dtype.kind in "iu":
        return True
    shifted = sample - lo
    return bool(np.array_equal(shifted.astype(np.intp), shifted))


def group_fixed(labels: Any, tmp: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, int] | None:
    """:func:`group_strings` for numeric labels (a NumPy array of 4- or 8-byte integers or
    floats), each row's value read as a string of its bytes: two rows share a code
    exactly when their values are equal (floats: ``-0.0`` is read as ``0.0``; NaN is a
    missing label, its rows left out), codes in order of first appearance -- the same
    ``(perm, codes, G)`` as :func:`sort_codes` of :func:`~.validation.dense_codes`'
    ``pandas.factorize`` codes. None when that path is the faster (fewer than
    :data:`FIXED_MIN_ROWS` rows or :data:`FIXED_MIN_LABELS` distinct labels), when
    ``dense_codes`` may code the labels by counting instead (label order; integers, or
    floats a whole number apart, in a narrow range), for other labels, or without the
    compiled kernel. ``pandas.factorize`` of ~1e6 distinct
    8-byte values in shuffled rows probes a hash table that has left the caches: with
    the codes' sort, 0.75 s at 1e7 rows against 0.56 s for this (1.5 s against 0.88 s
    with 5e6 labels)."""
    if not (isinstance(labels, np.ndarray) and labels.ndim == 1
            and labels.dtype.kind in "iuf" and labels.dtype.itemsize in (4, 8)):
        return None
    n = len(labels)
    lib = _compiled()
    if lib is None or n < FIXED_MIN_ROWS or n >= 2**31:
        return None
    sample = labels[np.random.default_rng(0).integers(0, n, FIXED_SAMPLE)]
    if _may_be_counted(labels, sample) or not _many_labels(sample):
        return None
    valid = None
    values = labels
    if labels.dtype.kind == "f":
        nan = np.isnan(labels)
        if nan.any():
            valid = np.packbits(~nan, bitorder="little")
        del nan
        if np.count_nonzero(labels == 0):  # -0.0 and 0.0 are one label
            values = labels + labels.dtype.type(0)
    values = np.ascontiguousarray(values)
    w = values.dtype.itemsize
    offsets = np.arange(0, w * n + 1, w, dtype=np.int32 if w * n < 2**31 else np.int64)
    return _group_bytes(lib, n, offsets, values.view(np.uint8), valid, 0, tmp)


def first_seen(labels: np.ndarray) -> tuple[np.ndarray, int] | None:
    """``pandas.factorize(labels)`` codes (intp, order of first appearance) and the label
    count of numbers in a narrow range -- integers spanning at most ``4 n + 1000``
    values, or floats that are all such integers of magnitude below 2**53 -- by one pass
    through a direct table of first-seen codes indexed by each value's offset from the
    minimum (``ti_first_seen``) instead of a hash table (``-0.0`` is ``0.0``, as for
    pandas). None for any other labels (NaN, infinities, fractions, a wide range, other
    dtypes) or without the compiled kernel. The table is 4 bytes a value of the range
    (at most ~16 bytes a row) and only the values present are touched: with 14,200
    exporter-year keys it stays in cache where ``pandas.factorize`` hashes every row."""
    if not (isinstance(labels, np.ndarray) and labels.ndim == 1
            and labels.dtype.kind in "iuf" and labels.dtype.itemsize in (1, 2, 4, 8)
            and not (labels.dtype.kind == "f" and labels.dtype.itemsize < 4)):
        return None
    n = len(labels)
    lib = _compiled()
    if lib is None or n == 0 or n >= 2**31 or np.intp is not np.int64:
        return None
    with np.errstate(invalid="ignore"):
        lo, hi = labels.min().item(), labels.max().item()  # Python numbers: no overflow
    if labels.dtype.kind == "f" and not (np.isfinite(lo) and np.isfinite(hi)
                                         and abs(lo) < 2.0**53 and abs(hi) < 2.0**53
                                         and lo == int(lo)):
        return None
    span = hi - lo + 1
    if not (span <= 4 * n + 1000 and span < 2**31):
        return None
    span = int(span)
    kind = {"i": 0, "u": 1, "f": 2}[labels.dtype.kind]
    lo_bits = 0 if kind == 2 else int(lo) % 2**64
    table = np.empty(span, dtype=np.int32)
    out = np.empty(n, dtype=np.int64)
    g = int(lib.ti_first_seen(n, labels.ctypes.data, labels.strides[0], kind,
                              labels.dtype.itemsize, lo_bits,
                              float(lo) if kind == 2 else 0.0, span, table.ctypes.data,
                              out.ctypes.data))
    if g == -1:  # pragma: no cover - the range was taken from the labels themselves
        raise ValueError("first_seen: a value outside the labels' range")
    return (out, g) if g >= 0 else None


def code_numbers(labels: Any) -> tuple[np.ndarray, int] | None:
    """``pandas.factorize(labels)`` codes (intp, order of first appearance) and the label
    count of a NumPy array of numbers, without ``pandas.factorize``'s hash table where
    that measurably pays: a narrow range by :func:`first_seen` (a direct table, any
    number of rows), many labels of a wide range by :func:`group_fixed` (the bytes of
    the values grouped, from :data:`FIXED_MIN_ROWS` rows and an estimated
    :data:`FIXED_MIN_LABELS` distinct values) with the codes put back at their rows.
    None otherwise -- NaN (``core.fe.factorize`` gives it a code of its own),
    infinities, few labels in a wide range, other dtypes, no compiled kernel, or
    :data:`DIRECT_ENV` = ``hash``: the caller hashes, to the same codes."""
    if _direct_off():
        return None
    if not (isinstance(labels, np.ndarray) and labels.ndim == 1
            and labels.dtype.kind in "iuf"):
        return None
    coded = first_seen(labels)
    if coded is not None:
        return coded
    if labels.dtype.kind == "f" and np.isnan(labels).any():
        return None
    n = len(labels)
    scratch = np.empty(n, dtype=np.int64) if n >= FIXED_MIN_ROWS else None
    grouped = group_fixed(labels, None if scratch is None else scratch.view(np.uint64))
    if grouped is None:
        return None
    perm, codes, g = grouped
    return ungroup_codes(perm, codes, n, scratch if np.intp is np.int64 else None), g


def gather(perm: np.ndarray, arrays: list[Any], out: list[np.ndarray | None] | None = None
           ) -> list[Any]:
    """``[a[perm] for a in arrays]`` (new arrays, or ``out[k]`` when given: a contiguous
    array of ``a``'s dtype and of ``perm``'s length, not ``a`` itself; the inputs are not
    modified) for positions ``perm`` of the arrays' rows (a permutation from
    :func:`sort_values`, or some rows of it from :func:`sort_codes`; not checked): numpy
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
