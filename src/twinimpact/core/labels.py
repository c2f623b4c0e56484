"""Dense codes of many string labels, hashed partition by partition.

:func:`pandas.factorize` of an Arrow string column (Arrow's ``dictionary_encode``) probes
one hash table per row and compares the row's string with the stored one. When the
distinct labels are many (~1e6 unit ids) and the rows come in no particular order, the
table (tens of MB with its strings) no longer fits in cache and every row costs two cache
misses: 0.06 s at 1e6 rows (1e5 ids) but 2.1 s at 1e7 rows (1e6 ids) on this project's
benchmark machine, the superlinear part of the fits on string-keyed panels.

:func:`partitioned_string_codes` splits the rows by a cheap hash of each string's last
eight bytes and its length into ``P`` partitions (equal strings land in the same one),
gathers each partition's strings together (rows kept in their order) and hashes each
partition on its own, so that each table holds ~1/P of the labels and stays in cache.
The partitions' codes are then renumbered so that the result is *exactly*
``pandas.factorize``'s: codes in order of first appearance in the rows, ``-1`` for a
missing label. The per-partition order of first appearance is the global one restricted
to the partition, so the renumbering ranks the first row of every label (a running
count over the rows marked as some label's first).

Strings of at most eight bytes (zero-padded ids such as "u0001234", FIPS or ISO codes)
are first turned into one exact uint64 each (:func:`short_string_keys`: the bytes, and the
length when they are shorter than eight), equal exactly when the strings are; those keys
are coded the same way (:func:`partitioned_key_codes`, or one :func:`pandas.factorize` of
the integers), without the gather of the strings or Arrow's string hashing -- the same
codes, about 30% less CPU at 1e7 rows of 1e6 ids.

Its fixed costs (the key pass, a stable sort of the small keys, one gather of the strings)
pay only when the table would fall out of cache: :func:`string_codes` decides from two
samples of 65,536 rows (how many distinct labels a spread-out sample has, and how many the
first rows have) and otherwise calls :func:`pandas.factorize` itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from .rowblocks import row_blocks

__all__ = ["partitioned_key_codes", "partitioned_string_codes", "short_string_keys",
           "string_buffers",
           "string_codes"]

#: rows below which one hash table is used whatever the labels (the table fits in cache)
MIN_ROWS = 1 << 22
#: rows per partition aimed at (so ~1/16 of the rows' labels per table at 1e7 rows)
ROWS_PER_PARTITION = 1 << 20
#: rows of each sample of the decision
SAMPLE = 1 << 16
#: Fibonacci hashing multiplier (2**64 / golden ratio), spreads the key bits
_MULT = np.uint64(0x9E3779B97F4A7C15)


def _arrow_strings(values: Any) -> Any | None:
    """The ``pyarrow.ChunkedArray`` of an Arrow-backed string array (pandas' ``str`` /
    ``string[pyarrow]`` dtypes) of type string or large_string, else None."""
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pandas' Arrow strings need pyarrow
        return None
    data = getattr(values, "_pa_array", None)
    if not isinstance(data, pa.ChunkedArray):
        return None
    if not (pa.types.is_string(data.type) or pa.types.is_large_string(data.type)):
        return None
    return data


def string_buffers(arr: Any) -> tuple[np.ndarray, np.ndarray]:
    """The offsets of one Arrow (large_)string array's rows (``n + 1`` of them, from its
    first row: int32, or int64 for large_string) and its data bytes (uint8, empty when
    the array has no data buffer), as views of its buffers (no copy)."""
    import pyarrow as pa

    bufs = arr.buffers()
    off_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(bufs[1], dtype=off_type,
                            count=len(arr) + 1 + arr.offset)[arr.offset:]
    data = (np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None
            else np.zeros(0, dtype=np.uint8))
    return offsets, data


def _tail_words(arr: Any) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """Block by block (``row_blocks``), the rows' slice, each string's last (up to) eight
    bytes as a little-endian uint64 ``w`` (a string of ``L < 8`` bytes in the low ``L``
    bytes, the rest zero: shorter strings are exactly their ``w``) and its length in bytes
    (int64), of one Arrow (large_)string array. Null rows get whatever their (empty) slot
    gives."""
    n = len(arr)
    offsets, data = string_buffers(arr)
    if len(data) < 8:
        data = np.concatenate([data, np.zeros(8, dtype=np.uint8)])
    # the eight bytes starting at each byte (an overlapping strided view, no copy)
    words = np.ndarray(shape=(len(data) - 7,), dtype="<u8", buffer=data, strides=(1,))
    for sl in row_blocks(n):
        end = offsets[sl.start + 1:sl.stop + 1].astype(np.int64)
        length = end - offsets[sl.start:sl.stop]
        lo = end - 8
        w = words[np.maximum(lo, 0)]
        head = lo < 0
        if head.any():  # the first strings: bytes before the buffer count as zero
            w[head] <<= (8 * -lo[head]).astype(np.uint64)
        short = length < 8
        if short.any():  # keep the string's own bytes (the top `length` bytes)
            w[short] >>= (8 * (8 - length[short])).astype(np.uint64)
        yield sl, w, length


def _partition_keys(arr: Any, nbits: int, out: np.ndarray) -> None:
    """The partition (``0 .. 2**nbits - 1``) of each row of one Arrow (large_)string array,
    written into ``out`` (uint16): the top bits of ``(w ^ length) * _MULT``, ``w`` the
    string's last (up to) eight bytes as a little-endian integer. Depends on the string
    only, so equal strings share a partition. Nulls (any key) are coded -1 later."""
    shift = np.uint64(64 - nbits)
    for sl, w, length in _tail_words(arr):
        w ^= length.astype(np.uint64)
        w *= _MULT
        w >>= shift
        out[sl] = w


def short_string_keys(data: Any) -> np.ndarray | None:
    """One uint64 per row that is equal for two rows exactly when their strings are, for a
    ``pyarrow.ChunkedArray`` of strings without nulls whose strings are all at most 7
    bytes long (the bytes, and the length in the top byte) or all 8 bytes long (the
    bytes); None otherwise (a null, a longer string, or 8-byte strings beside shorter
    ones). Zero-padded ids ("u0001234", FIPS codes, "USA-FRA") are such strings: their
    codes are then hashed as integers, with no gather of the strings themselves."""
    if data.null_count:
        return None
    keys = np.empty(len(data), dtype=np.uint64)
    lo_len, hi_len = 8, 0
    start = 0
    for chunk in data.chunks:
        for sl, w, length in _tail_words(chunk):
            if len(length) == 0:
                continue
            lo_len = min(lo_len, int(length.min()))
            hi_len = max(hi_len, int(length.max()))
            if hi_len > 8 or (hi_len == 8 and lo_len < 8):
                return None
            if hi_len < 8:
                w |= length.astype(np.uint64) << np.uint64(56)
            keys[start + sl.start:start + sl.stop] = w
        start += len(chunk)
    return keys


def partitioned_string_codes(data: Any, partitions: int) -> tuple[np.ndarray, int]:
    """``pandas.factorize`` codes (first appearance, ``-1`` = missing) and the number of
    distinct labels of a ``pyarrow.ChunkedArray`` of strings, hashed in ``partitions``
    (a power of two, 1 to 2**16) separate tables; see the module docstring."""
    import pyarrow as pa

    nbits = int(partitions).bit_length() - 1
    if partitions < 1 or 1 << nbits != partitions or nbits > 16:
        raise ValueError(f"partitions must be a power of two in 1..65536, got {partitions}")
    n = len(data)
    key = np.zeros(n, dtype=np.uint16)
    if nbits:
        start = 0
        for chunk in data.chunks:
            _partition_keys(chunk, nbits, key[start:start + len(chunk)])
            start += len(chunk)
    # rows grouped by partition, each partition's rows in their order (radix sort)
    perm, counts = _group_rows(key, partitions)
    del key
    source = data.chunk(0) if data.num_chunks == 1 else data
    grouped = source.take(pa.array(perm))
    if isinstance(grouped, pa.ChunkedArray):
        grouped = grouped.combine_chunks()
    held = [grouped]  # (emptied before the renumbering: the strings are not held through it)
    del grouped

    def encode(start: int, c: int) -> tuple[np.ndarray, int]:
        enc = held[0].slice(start, c).dictionary_encode()
        idx = enc.indices
        if idx.null_count:
            idx = idx.fill_null(-1)
        return idx.to_numpy(zero_copy_only=False), len(enc.dictionary)

    parts = _encode_partitions(perm, counts, encode)
    held.clear()
    return _renumber(perm, counts, *parts)


def _group_rows(key: np.ndarray, partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows grouped by partition, each partition's rows in their order (a stable radix
    sort of the uint16 keys; int32 positions below 2**31 rows), and the partition sizes."""
    index_type = np.int32 if len(key) < 2**31 else np.int64
    perm = np.argsort(key, kind="stable").astype(index_type, copy=False)
    return perm, np.bincount(key, minlength=partitions)


def _encode_partitions(perm: np.ndarray, counts: np.ndarray, encode: Any
                       ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Each partition's own codes: ``encode(start, c)`` codes the grouped rows ``start ..
    start + c`` (first appearance within them, -1 = missing) and says how many labels
    they hold. Returns the codes of the grouped rows, the first row (position in the
    caller's rows) of every label, partition by partition, and the label counts."""
    n = len(perm)
    index_type = perm.dtype
    local = np.empty(n, dtype=np.int32 if n < 2**31 else np.int64)
    firsts: list[np.ndarray] = []
    n_labels: list[int] = []
    start = 0
    for c in counts.tolist():
        if not c:
            n_labels.append(0)
            continue
        codes, k = encode(start, c)
        local[start:start + c] = codes
        # a label's first row is where the running maximum of the codes grows
        run = np.maximum.accumulate(codes)
        new = np.empty(c, dtype=bool)
        new[0] = codes[0] >= 0
        np.greater(run[1:], run[:-1], out=new[1:])
        firsts.append(perm[start:start + c][new])
        n_labels.append(k)
        start += c
    first_rows = np.concatenate(firsts) if firsts else np.zeros(0, dtype=index_type)
    return local, first_rows, n_labels


def _renumber(perm: np.ndarray, counts: np.ndarray, local: np.ndarray,
              first_rows: np.ndarray, n_labels: list[int]) -> tuple[np.ndarray, int]:
    """The first-appearance codes of all rows from the partitions' own codes (see
    :func:`_encode_partitions`): a partition's order of first appearance is the global one
    restricted to it, so sorting every label's first row renumbers."""
    n = len(perm)
    # each label's rank among the first rows: how many first rows come before its own,
    # counted over the rows (a mark and a running count: no sort of the ~n/10 first rows)
    before = np.zeros(n, dtype=np.int32 if n < 2**31 else np.int64)
    before[first_rows] = 1
    np.cumsum(before, out=before)
    rank = before[first_rows].astype(np.intp)
    rank -= 1
    del before
    out = np.empty(n, dtype=np.intp)
    start = label0 = 0
    for c, k in zip(counts.tolist(), n_labels, strict=True):
        if c:
            loc = local[start:start + c]
            missing = loc < 0
            if not missing.any():
                g = rank[label0:label0 + k][loc]
            elif k:
                g = rank[label0:label0 + k][np.maximum(loc, 0)]
                g[missing] = -1
            else:  # a partition of missing labels only
                g = np.full(c, -1, dtype=np.intp)
            out[perm[start:start + c]] = g
        start += c
        label0 += k
    return out, len(first_rows)


def partitioned_key_codes(keys: np.ndarray, partitions: int) -> tuple[np.ndarray, int]:
    """``pandas.factorize(keys)`` codes (first appearance) and the number of distinct
    values of a uint64 array (:func:`short_string_keys`), hashed in ``partitions`` (a
    power of two, 1 to 2**16) separate tables by the top bits of ``key * _MULT``."""
    nbits = int(partitions).bit_length() - 1
    if partitions < 1 or 1 << nbits != partitions or nbits > 16:
        raise ValueError(f"partitions must be a power of two in 1..65536, got {partitions}")
    n = len(keys)
    if nbits == 0:
        codes, uniques = pd.factorize(keys, size_hint=min(n, SAMPLE))
        return codes.astype(np.intp, copy=False), len(uniques)
    part = np.empty(n, dtype=np.uint16)
    shift = np.uint64(64 - nbits)
    for sl in row_blocks(n):
        h = keys[sl] * _MULT
        h >>= shift
        part[sl] = h
    perm, counts = _group_rows(part, partitions)
    del part
    held = [keys[perm]]  # the keys grouped by partition (emptied before the renumbering)

    def encode(start: int, c: int) -> tuple[np.ndarray, int]:
        codes, uniques = pd.factorize(held[0][start:start + c], size_hint=min(c, SAMPLE))
        return codes, len(uniques)

    parts = _encode_partitions(perm, counts, encode)
    held.clear()
    return _renumber(perm, counts, *parts)


def spread_sample(data: Any, size: int) -> Any:
    """Rows ``0, step, 2 step, ...`` (``size`` of them, ``step = len(data) // size``) of
    a ``pyarrow.ChunkedArray``, taken chunk by chunk (``ChunkedArray.take`` first joins
    the chunks: at 1.9e6 rows of a 15-chunk string column read from parquet, 0.09 s and
    38 MB for 8,192 rows)."""
    import pyarrow as pa

    step = len(data) // size
    parts, start = [], 0
    for chunk in data.chunks:
        first = -start % step
        k = max(0, min(size * step - start - first, len(chunk) - first))
        if k > 0:
            parts.append(chunk.take(np.arange(first, first + k, step)))
        start += len(chunk)
    return pa.chunked_array(parts, type=data.type)


def _partitions_for(data: Any) -> int:
    """1 (one table) unless the labels are many and come in no order: a spread-out sample
    of ``SAMPLE`` rows is > 85% distinct (so ~2e5+ labels) and so are > 25% of the first
    ``SAMPLE`` rows (a panel sorted by unit hashes in cache already)."""
    n = len(data)
    if n < MIN_ROWS:
        return 1
    if len(spread_sample(data, SAMPLE).unique()) <= 0.85 * SAMPLE:
        return 1
    if len(data.slice(0, SAMPLE).unique()) <= 0.25 * SAMPLE:
        return 1
    p = 1
    while p * ROWS_PER_PARTITION < n and p < 1 << 12:
        p *= 2
    return p


def string_codes(values: Any) -> tuple[np.ndarray, int] | None:
    """``pandas.factorize(values)`` codes (as intp) and label count for an Arrow string
    array, hashed in partitions when that is faster (short strings as integer keys);
    None for anything else."""
    data = _arrow_strings(values)
    if data is None:
        return None
    p = _partitions_for(data)
    keys = short_string_keys(data)
    if keys is not None:
        return partitioned_key_codes(keys, p)
    if p == 1:
        codes, uniques = pd.factorize(values)
        return codes.astype(np.intp, copy=False), len(uniques)
    return partitioned_string_codes(data, p)
