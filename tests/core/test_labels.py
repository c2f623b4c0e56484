"""The partitioned string coder (core.labels) against its oracle, ``pandas.factorize``:
the same codes to the element (first appearance, -1 = missing) and the same label count,
whatever the partition count, chunking, slicing, missing values and string contents."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinimpact.core import labels, unitorder
from twinimpact.core.labels import partitioned_string_codes, string_codes
from twinimpact.core.validation import dense_codes

# short and long strings, shared prefixes and suffixes, NUL bytes, multi-byte UTF-8,
# the empty string and missing values: equal strings must share a partition, distinct
# strings that hash alike must still get distinct codes
_label = st.one_of(
    st.none(),
    st.sampled_from(["", "a", "a\0", "\0a", "ab", "ba", "u0000001", "u0000010", "x" * 8,
                     "x" * 9, "é", "éé", "city_0001_long_name", "city_0002_long_name"]),
    st.text(alphabet="ab\0é", max_size=12),
)


def _oracle(values: pd.api.extensions.ExtensionArray) -> tuple[np.ndarray, int]:
    codes, uniques = pd.factorize(values)
    return codes, len(uniques)


@settings(max_examples=150, deadline=None)
@given(vals=st.lists(_label, max_size=80), nbits=st.integers(0, 6),
       cut=st.integers(0, 80), skip=st.integers(0, 5))
def test_partitioned_codes_equal_factorize(vals, nbits, cut, skip):
    whole = pd.array(vals, dtype="str")._pa_array.combine_chunks()
    # a sliced chunk (non-zero offset into the buffers) and a second chunk
    cut = min(cut, len(vals))
    data = pa.chunked_array([whole.slice(min(skip, cut), cut - min(skip, cut)),
                             whole.slice(cut)], type=whole.type)
    arr = pd.arrays.ArrowStringArray(data)
    ref, n_ref = _oracle(arr)
    got, n_got = partitioned_string_codes(data, 1 << nbits)
    np.testing.assert_array_equal(got, ref)
    assert n_got == n_ref
    assert got.dtype == np.intp


@pytest.mark.parametrize("string_type", [pa.string(), pa.large_string()])
def test_many_shuffled_labels_take_the_partitioned_path(monkeypatch, string_type):
    # the decision on small thresholds: a shuffled panel of many ids is partitioned, a
    # sorted one or one of few ids is not; codes equal pandas.factorize's every time
    monkeypatch.setattr(labels, "MIN_ROWS", 1 << 10)
    monkeypatch.setattr(labels, "SAMPLE", 1 << 8)
    monkeypatch.setattr(labels, "ROWS_PER_PARTITION", 1 << 8)
    rng = np.random.default_rng(0)
    ids = np.array([f"u{i:05d}" for i in range(3000)], dtype=object)
    rows = np.repeat(ids, 4)
    cases = {"shuffled": rows[rng.permutation(len(rows))], "sorted": rows,
             "few": ids[rng.integers(0, 20, len(rows))]}
    cases["shuffled"][::97] = None
    expect = {"shuffled": 64, "sorted": 1, "few": 1}  # 12,000 rows / 256 -> 64
    _check_decision(cases, labels._partitions_for, expect, string_type)


def _check_decision(cases: dict[str, np.ndarray], decide, expect: dict[str, object],
                    string_type: pa.DataType) -> None:
    """Each case's labels (object array) as Arrow strings: ``decide`` gives ``expect``,
    and string_codes / dense_codes give pandas.factorize's codes and count."""
    for name, v in cases.items():
        arr = pd.arrays.ArrowStringArray(pa.chunked_array([pa.array(v, type=string_type)]))
        assert decide(arr._pa_array) == expect[name], name
        ref, n_ref = _oracle(arr)
        for coded in (string_codes(arr), unitorder.code_strings(arr), dense_codes(arr)):
            np.testing.assert_array_equal(coded[0], ref)
            assert coded[1] == n_ref


def test_partitions_must_be_a_power_of_two():
    data = pa.chunked_array([pa.array(["a", "b"])])
    for bad in (0, 3, 1 << 17):
        with pytest.raises(ValueError, match="power of two"):
            partitioned_string_codes(data, bad)


def test_string_codes_declines_other_arrays():
    assert string_codes(pd.array([1, 2], dtype="Int64")) is None
    assert string_codes(pd.Categorical(["a", "b"])) is None
    assert string_codes(np.array(["a", "b"], dtype=object)) is None


@settings(max_examples=60, deadline=None)
@given(vals=st.lists(st.one_of(st.none(), st.sampled_from(["b", "a", "c", "é", ""])),
                     max_size=40),
       kind=st.sampled_from(["object", "categorical", "str", "ints", "floats"]))
def test_dense_codes_equal_factorize_on_every_input_kind(vals, kind):
    # the codes downstream relies on: pandas.factorize's (first appearance) for labels
    # that are hashed, label order for integers coded by counting; same partition always
    if kind == "object":
        values = np.array(vals, dtype=object)
    elif kind == "categorical":
        values = pd.Categorical(vals, categories=["c", "b", "a", "é", ""])
    elif kind == "str":
        values = pd.array(vals, dtype="str")
    else:
        nums = [None if v is None else "abcé".find(v) + 10 for v in vals]
        values = (np.array([v for v in nums if v is not None], dtype=np.int64)
                  if kind == "ints" else np.array(nums, dtype=float))
    codes, n = dense_codes(values)
    ref, uniq = pd.factorize(values)
    assert n == len(uniq)
    if kind in ("object", "categorical", "str") or (ref < 0).any():
        np.testing.assert_array_equal(codes, ref)  # hashed (a NaN label is hashed too)
    else:  # counting pass: label order, the same partition of the rows
        order = np.argsort(np.asarray(uniq))
        rank = np.full(len(order) + 1, -1, dtype=np.intp)  # the last entry: missing
        rank[order] = np.arange(len(order))
        np.testing.assert_array_equal(codes, rank[np.where(ref < 0, len(order), ref)])


@settings(max_examples=100, deadline=None)
@given(vals=st.lists(_label, min_size=0, max_size=60), many=st.booleans(),
       as_index=st.booleans())
def test_fe_factorize_of_arrow_strings_equals_the_object_path(vals, many, as_index):
    """core.fe.factorize on a pandas string Series / Index (coded on its Arrow data, no
    object array) gives exactly the codes and count of the general path
    (``pd.factorize`` of the object array, missing labels with their own code), with one
    hash table or with partitions (``many``: the size rule forced)."""
    from twinimpact.core import fe

    s = pd.Series(vals, dtype="str")
    col = pd.Index(s) if as_index else s
    with pytest.MonkeyPatch.context() as mp:
        if many:
            mp.setattr(labels, "_partitions_for", lambda data: 4)
        codes, g = fe.factorize(col)
    want, uniques = pd.factorize(np.asarray(s.to_numpy()), use_na_sentinel=False)
    np.testing.assert_array_equal(codes, want)
    assert g == len(uniques)
    assert codes.dtype == np.intp


def test_fe_factorize_other_columns_unchanged():
    """Non-string columns (ints, categoricals, nullable ints with NA, datetimes) keep the
    general path's codes."""
    from twinimpact.core import fe

    cols = [pd.Series([3, 1, 3, 2]), pd.Series(pd.Categorical(["b", "a", "b", None])),
            pd.Series([1, None, 1, 2], dtype="Int64"),
            pd.Series(pd.to_datetime(["2001", "2000", "2001", "2003"])),
            pd.Series(["x", None, "x", "y"], dtype=object)]
    for c in cols:
        codes, g = fe.factorize(c)
        want, uniques = pd.factorize(np.asarray(c.to_numpy()), use_na_sentinel=False)
        np.testing.assert_array_equal(codes, want)
        assert g == len(uniques)


# labels of at most 8 bytes: all one length (zero-padded ids, with NUL and multi-byte
# characters) or mixed lengths up to 7 bytes -- exactly the strings short_string_keys
# turns into integers -- and, to check the refusals, an 8-byte label beside shorter ones
_short = st.sampled_from(["", "a", "a\0", "\0a", "\0", "ab", "ba", "é", "éa", "aé", "abcdefg",
                          "\0\0\0\0\0\0\0", "gfedcba"])
_eight = st.sampled_from(["u0000001", "u0000010", "\0" * 8, "a\0" * 4, "é" * 4, "abcdefgh",
                          "hgfedcba", "éabcdef"])


def _sliced_chunks(vals: list, cut: int, skip: int, large: bool) -> pa.ChunkedArray:
    """``vals`` as Arrow (large_)strings in two chunks, the first a slice from row
    ``skip`` to ``cut`` (buffer and validity offsets), the second from ``cut`` on."""
    typ = pa.large_string() if large else pa.string()
    whole = pa.array(vals, type=typ)
    cut = min(cut, len(vals))
    return pa.chunked_array([whole.slice(min(skip, cut), cut - min(skip, cut)),
                             whole.slice(cut)], type=typ)


@settings(max_examples=200, deadline=None)
@given(vals=st.one_of(st.lists(_short, max_size=80), st.lists(_eight, max_size=80),
                      st.lists(st.one_of(_short, _eight), max_size=30),
                      st.lists(st.one_of(st.none(), _short), max_size=30)),
       nbits=st.integers(0, 6), cut=st.integers(0, 80), skip=st.integers(0, 5),
       large=st.booleans())
def test_short_string_keys_code_as_factorize(vals, nbits, cut, skip, large):
    # the integer keys of short strings are equal exactly when the strings are, so their
    # codes (one table or partitions) are pandas.factorize's of the strings; anything the
    # keys cannot represent (a null, 8 bytes beside fewer, longer strings) is declined
    data = _sliced_chunks(vals, cut, skip, large)
    arr = pd.arrays.ArrowStringArray(data)
    ref, n_ref = _oracle(arr)
    keys = labels.short_string_keys(data)
    rows = data.to_pylist()  # (the rows kept by the slicing)
    sizes = {len(v.encode()) for v in rows if v is not None}
    representable = None not in rows and (max(sizes, default=0) <= 7 or sizes == {8})
    assert (keys is not None) == representable
    if keys is None:
        return
    assert keys.dtype == np.uint64 and len(keys) == len(rows)
    got, n_got = labels.partitioned_key_codes(keys, 1 << nbits)
    np.testing.assert_array_equal(got, ref)
    assert n_got == n_ref and got.dtype == np.intp
    got2, n_got2 = string_codes(arr)  # the public entry takes the key path
    np.testing.assert_array_equal(got2, ref)
    assert n_got2 == n_ref


def test_short_string_keys_decline_long_strings_and_nulls():
    mk = lambda v: pa.chunked_array([pa.array(v, type=pa.large_string())])  # noqa: E731
    assert labels.short_string_keys(mk(["abcdefghi", "a"])) is None
    assert labels.short_string_keys(mk(["abcdefgh", "a"])) is None  # 8 beside fewer
    assert labels.short_string_keys(mk(["a", None])) is None
    assert labels.short_string_keys(mk([])) is not None
    with pytest.raises(ValueError, match="power of two"):
        labels.partitioned_key_codes(np.zeros(3, dtype=np.uint64), 3)


@pytest.mark.parametrize("width", [5, 7, 8])
def test_many_shuffled_short_ids_partitioned_on_keys(monkeypatch, width):
    # the panel-like case (a shuffled panel of many zero-padded ids) on small thresholds:
    # partitioned integer keys, the same codes as pandas.factorize
    monkeypatch.setattr(labels, "MIN_ROWS", 1 << 10)
    monkeypatch.setattr(labels, "SAMPLE", 1 << 8)
    monkeypatch.setattr(labels, "ROWS_PER_PARTITION", 1 << 8)
    rng = np.random.default_rng(1)
    ids = np.array([f"u{i:0{width - 1}d}" for i in range(3000)], dtype=object)
    rows = np.repeat(ids, 4)[rng.permutation(12_000)]
    arr = pd.arrays.ArrowStringArray(pa.chunked_array([pa.array(rows)]))
    assert labels._partitions_for(arr._pa_array) == 64
    assert labels.short_string_keys(arr._pa_array) is not None
    ref, n_ref = _oracle(arr)
    for coded in (string_codes(arr), dense_codes(arr)):
        np.testing.assert_array_equal(coded[0], ref)
        assert coded[1] == n_ref


def _needs_kernel() -> None:
    if unitorder._compiled() is None:  # (the grouping is only taken with the compiled kernel)
        pytest.skip("compiled unitorder kernel not built")


# few distinct labels (drawn from a dozen) or many (random text, mostly distinct)
_few_or_many = st.one_of(st.lists(_label, max_size=150),
                         st.lists(st.one_of(st.none(), st.text(alphabet="abz\0éü中", max_size=9)),
                                  max_size=150))


@settings(max_examples=200, deadline=None)
@given(vals=_few_or_many, cut=st.integers(0, 150), skip=st.integers(0, 5),
       large=st.booleans())
def test_grouped_codes_equal_factorize(vals, cut, skip, large):
    # code_strings through group_strings (the decision forced): pandas.factorize's codes
    # to the element (first appearance, -1 = missing) and its label count, on string and
    # large_string, a sliced chunk (buffer and validity offsets) and a second chunk
    _needs_kernel()
    data = _sliced_chunks(vals, cut, skip, large)
    arr = pd.arrays.ArrowStringArray(data)
    ref, n_ref = _oracle(arr)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(unitorder, "_grouping_pays", lambda data: True)
        got, n_got = unitorder.code_strings(arr)
    np.testing.assert_array_equal(got, ref)
    assert n_got == n_ref and got.dtype == np.intp


@settings(max_examples=100, deadline=None)
@given(vals=_few_or_many, as_index=st.booleans())
def test_fe_factorize_grouped_equals_the_object_path(vals, as_index):
    """core.fe.factorize with the grouping forced: the general path's codes (missing
    labels with their own code, in order of first appearance) and count."""
    from twinimpact.core import fe

    _needs_kernel()
    s = pd.Series(vals, dtype="str")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(unitorder, "_grouping_pays", lambda data: True)
        codes, g = fe.factorize(pd.Index(s) if as_index else s)
    want, uniques = pd.factorize(np.asarray(s.to_numpy()), use_na_sentinel=False)
    np.testing.assert_array_equal(codes, want)
    assert g == len(uniques) and codes.dtype == np.intp


@pytest.mark.parametrize("string_type", [pa.string(), pa.large_string()])
def test_many_shuffled_labels_are_grouped(monkeypatch, string_type):
    # the decision on small thresholds: shuffled rows of many labels are grouped; sorted
    # rows, few labels, or too few rows are hashed; codes equal pandas.factorize's always
    _needs_kernel()
    monkeypatch.setattr(unitorder, "GROUP_MIN_ROWS", 1 << 10)
    monkeypatch.setattr(unitorder, "GROUP_SAMPLE", 1 << 8)
    monkeypatch.setattr(unitorder, "GROUP_MIN_LABELS", 1000)
    rng = np.random.default_rng(2)
    ids = np.array([f"C{i:03d}x_C{(7 * i) % 3000:03d}x" for i in range(3000)], dtype=object)
    rows = np.repeat(ids, 4)
    cases = {"shuffled": rows[rng.permutation(len(rows))], "sorted": rows,
             "few": ids[rng.integers(0, 600, len(rows))], "short": rows[rng.permutation(1000)]}
    cases["shuffled"][::97] = None
    expect = {"shuffled": True, "sorted": False, "few": False, "short": False}
    _check_decision(cases, unitorder._grouping_pays, expect, string_type)


def test_expected_distinct_share():
    # G (1 - exp(-S / G)) / S: all distinct when the labels far outnumber the sample,
    # G / S when the sample sees every label many times
    assert unitorder._expected_distinct(1e9, 100) == pytest.approx(1.0, abs=1e-6)
    assert unitorder._expected_distinct(10, 10_000) == pytest.approx(1e-3)
    assert unitorder._expected_distinct(75_000, 8192) == pytest.approx(0.9473, abs=1e-4)


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(0, 40), min_size=1, max_size=6), size=st.integers(1, 50))
def test_spread_sample_is_the_strided_take(sizes, size):
    # chunk by chunk, the same rows as one take of 0, step, 2 step, ... over the whole
    n = sum(sizes)
    if n < size:
        return
    starts = np.cumsum([0, *sizes[:-1]])
    data = pa.chunked_array([pa.array([f"r{i}" for i in range(s0, s0 + k)], type=pa.string())
                             for s0, k in zip(starts, sizes, strict=True)], type=pa.string())
    step = n // size
    want = data.take(np.arange(0, step * size, step)).to_pylist()
    assert labels.spread_sample(data, size).to_pylist() == want
