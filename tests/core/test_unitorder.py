"""Rows put in unit order at preparation (core.unitorder, prepare_panel(order_by_unit=True)).

* the kernels: the compiled sort / gather / mixed-radix keys give the bytes of NumPy's
  stable argsort, take and the NumPy path (both run here when the extension is built);
* sortable_values is one-to-one with the labels (equal numbers exactly for equal labels);
* prepare_panel with the rows ordered holds the caller's rows at ``rows``, the same
  dropped counts, codes that match the labels, and the same errors as without ordering;
* the four estimators that order (event study / twfe, imputation, did2s, Sun-Abraham)
  give the same numbers (1e-10) ordered and not, on shuffled string and integer ids, with
  weights, covariates, another cluster column and Driscoll-Kraay, whatever the row order.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import twinimpact as ti
from twinimpact.core import unitorder
from twinimpact.core.validation import prepare_panel
from twinimpact.errors import InputError

KERNELS = ["compiled", "numpy"]


@pytest.fixture(params=KERNELS)
def kernel(request, monkeypatch):
    if request.param == "compiled":
        unitorder._LIB.clear()
        if unitorder._compiled() is None:
            pytest.skip("the _unitorder extension is not built")
    else:
        monkeypatch.setenv(unitorder.KERNEL_ENV, "numpy")
    unitorder._LIB.clear()
    yield request.param
    unitorder._LIB.clear()


def _arrow_str(values) -> pd.api.extensions.ExtensionArray:
    arr = pa.chunked_array([pa.array(list(values), type=pa.large_string())])
    return pd.arrays.ArrowStringArray(arr, dtype=pd.StringDtype("pyarrow", na_value=np.nan))


def _check_sort(v: np.ndarray, span: int) -> None:
    ref_perm = np.argsort(v, kind="stable")
    sv = v[ref_perm]
    ref_codes = np.unique(sv, return_inverse=True)[1] if len(v) else sv
    perm, codes, g = unitorder.sort_values(v.copy(), span)
    assert perm.dtype == np.int32
    np.testing.assert_array_equal(perm, ref_perm)
    np.testing.assert_array_equal(codes, ref_codes)
    assert g == len(np.unique(v))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 3000), st.integers(1, 5000), st.integers(0, 2**31))
def test_sort_values_is_a_stable_argsort(kernel, n, span, seed):
    rng = np.random.default_rng(seed)
    v = rng.integers(0, span, n).astype(np.int64)
    _check_sort(v, span)


@pytest.mark.parametrize("lo_bits", [1, 4, 11])
def test_sort_values_two_passes(kernel, monkeypatch, lo_bits):
    monkeypatch.setattr(unitorder, "LO_BITS", lo_bits)
    rng = np.random.default_rng(lo_bits)
    for span in (1, 2, 17, 300, 70_000):
        _check_sort(rng.integers(0, span, 20_000).astype(np.int64), span)
    _check_sort(np.arange(5000, dtype=np.int64)[::-1].copy(), 5000)


def test_sort_values_refuses_values_out_of_range():
    unitorder._LIB.clear()
    if unitorder._compiled() is None:
        pytest.skip("the _unitorder extension is not built")
    with pytest.raises(ValueError, match="outside"):
        unitorder.sort_values(np.array([0, 5, 1], dtype=np.int64), 3)


def test_gather_every_item_size(kernel):
    rng = np.random.default_rng(3)
    n = 4_001
    perm = rng.permutation(n).astype(np.int32)
    block = rng.normal(size=(3, n))
    arrays = [rng.normal(size=n), rng.integers(-9, 9, n), rng.integers(0, 9, n).astype(np.int32),
              rng.integers(0, 9, n).astype(np.int16), rng.random(n) < 0.5,
              rng.integers(0, 255, n).astype(np.uint8), block[1], block[:, 0].repeat(n)[:n],
              np.arange(2 * n, dtype=np.float64)[::2], np.array(["a"] * n, dtype=object),
              _arrow_str(str(i) for i in range(n)), pd.Categorical(rng.integers(0, 5, n))]
    for p in (perm, perm.astype(np.int64)):
        out = unitorder.gather(p, arrays)
        for a, b in zip(arrays, out, strict=True):
            ref = a[p] if isinstance(a, np.ndarray) else a.take(p)
            if isinstance(a, np.ndarray):
                assert b.dtype == a.dtype
                np.testing.assert_array_equal(b, ref)
            else:
                assert list(b) == list(ref)
    # a given output buffer is filled (the sort's scratch reused by prepare_panel)
    buf = np.empty(n)
    res = unitorder.gather(perm, [arrays[0]], [buf])
    assert res[0] is buf
    np.testing.assert_array_equal(buf, arrays[0][perm])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet="ab0123456789-x", min_size=0, max_size=8), min_size=1,
                max_size=200))
def test_sortable_values_one_to_one_on_short_strings(kernel, labels):
    got = unitorder.sortable_values(_arrow_str(labels))
    if got is None:  # 8-byte strings beside shorter ones, or too wide a range
        return
    v, span = got
    assert v.dtype == np.int64 and v.min() >= 0 and v.max() < span
    assert span <= 4 * len(labels) + 1000
    ref = pd.factorize(np.array(labels, dtype=object))[0]
    # equal numbers exactly for equal labels
    pairs = set(zip(ref.tolist(), v.tolist(), strict=True))
    assert len(pairs) == len(set(ref.tolist())) == len(set(v.tolist()))


def test_sortable_values_kinds(kernel):
    ids = np.array([5, 3, 5, 1000], dtype=np.int64)
    v, span = unitorder.sortable_values(ids)
    np.testing.assert_array_equal(v, ids - 3)
    assert span == 998
    assert unitorder.sortable_values(ids.astype(float)) is None
    assert unitorder.sortable_values(np.array([0, 10**9])) is None  # range >> rows
    assert unitorder.sortable_values(_arrow_str(["a" * 9, "b"])) is None  # long strings
    s = _arrow_str(["u07", "u01", "u07", "u10"])
    v, _span = unitorder.sortable_values(s)
    assert v[0] == v[2] and len(set(v.tolist())) == 3
    assert v[1] < v[0] < v[3]  # one length: the label order
    nulls = pd.array(["a", None], dtype=pd.StringDtype("pyarrow", na_value=np.nan))
    assert unitorder.sortable_values(nulls) is None


def _sorted_factorize(values) -> tuple[np.ndarray, np.ndarray, int]:
    """The oracle of group_strings / sort_codes: the rows that have a label in stable
    order of their pandas.factorize code (first appearance), those codes, their count."""
    codes, uniques = pd.factorize(values)
    has = np.flatnonzero(codes >= 0)
    perm = has[np.argsort(codes[has], kind="stable")]
    return perm.astype(np.int32), codes[perm].astype(np.int64), len(uniques)


# short and long strings, shared prefixes and suffixes, NUL bytes, multi-byte UTF-8, the
# empty string and missing labels
_label = st.one_of(
    st.none(),
    st.sampled_from(["", "a", "a\0", "\0a", "ab", "ba", "u0000001", "x" * 8, "x" * 9,
                     "Zürich 000012", "Zürich 000021", "city_0001_long_name"]),
    st.text(alphabet="ab\0é", max_size=20),
)


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(vals=st.lists(_label, min_size=1, max_size=120), bits=st.sampled_from([0, 1, 3]),
       large=st.booleans(), cut=st.integers(0, 5), chunks=st.booleans())
def test_group_strings_is_the_sorted_factorize(kernel, monkeypatch, vals, bits, large, cut,
                                               chunks):
    """Exact groups (distinct strings never share a code, however alike their hashes:
    one or a few buckets force every string into a shared one), in order of first
    appearance, rows in their order, missing labels left out; string and large_string,
    a sliced chunk (buffer offsets, validity bits from an offset) and two chunks."""
    if bits:
        monkeypatch.setattr(unitorder, "_bucket_bits", lambda n: bits)
    typ = pa.large_string() if large else pa.string()
    whole = pa.array([None] * cut + vals, type=typ).slice(cut)
    if chunks and len(vals) > 1:
        k = len(vals) // 2
        data = pa.chunked_array([whole.slice(0, k), whole.slice(k)])
    else:
        data = pa.chunked_array([whole])
    labels = pd.arrays.ArrowStringArray(data, dtype=pd.StringDtype("pyarrow", na_value=np.nan))
    perm, codes, g = unitorder.group_strings(labels)
    want = _sorted_factorize(np.array(vals, dtype=object))
    np.testing.assert_array_equal(perm, want[0])
    assert perm.dtype == np.int32
    np.testing.assert_array_equal(codes, want[1])
    assert g == want[2]


_object_label = st.one_of(_label, st.sampled_from([float("nan"), pd.NA, pd.NaT]))


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(vals=st.lists(_object_label, min_size=1, max_size=120))
def test_object_str_grouped_as_arrow_is_the_sorted_factorize(kernel, vals):
    """An object column of str (None, NaN, pd.NA, NaT missing) grouped through Arrow
    (validation._object_strings + group_strings): pandas.factorize's codes of the objects."""
    from twinimpact.core.validation import _group_units

    labels = np.array(vals, dtype=object)
    n_missing = int(pd.isna(labels).sum())
    if n_missing == len(vals):
        return  # no string: not Arrow strings (prepare_panel has refused such a panel)
    perm, codes, g, _ = _group_units(labels, np.empty(len(vals)), n_missing)
    want = _sorted_factorize(labels)
    np.testing.assert_array_equal(perm, want[0])
    np.testing.assert_array_equal(codes, want[1])
    assert g == want[2]


@pytest.mark.parametrize("vals", [
    ["x", b"x", "y"],  # str beside bytes: factorize keeps "x" and b"x" apart
    ["x", 1, "y"], ["x", 1.5, None], ["x", True], ["x", "\udc80"],  # not str / not UTF-8
    ["x", np.float32("nan")], ["x", np.datetime64("NaT")],  # missing to pandas only
])
def test_object_labels_arrow_does_not_read_alike_stay_factorized(vals):
    """Objects Arrow would read otherwise than pandas.factorize (bytes as text, numbers,
    surrogates, missing values Arrow does not know) are not converted; prepare_panel
    then codes them as before (factorize), equal codes ordered and not."""
    from twinimpact.core.validation import _object_strings

    labels = np.array(vals * 4, dtype=object)
    assert _object_strings(labels, int(pd.isna(labels).sum())) is None
    assert _object_strings(np.array(["x", None], dtype=object), 0) is None  # count differs


_number = st.one_of(
    st.integers(-(2**62), 2**62),
    st.sampled_from([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 0.5, 1.5, 2.0,
                     1e300, -1e-300, 2.0**53, 2.0**53 + 2]),
    st.floats(allow_nan=True, allow_infinity=True),
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(vals=st.lists(_number, min_size=1, max_size=150),
       dtype=st.sampled_from(["i8", "i4", "u8", "f8", "f4"]), step=st.sampled_from([1, 2]),
       repeat=st.integers(1, 3))
def test_group_fixed_is_the_sorted_factorize(kernel, monkeypatch, vals, dtype, step, repeat):
    """Numbers grouped as the bytes of their values (thresholds off): pandas.factorize's
    groups (-0.0 and 0.0 one label, NaN missing and left out, every other value its own),
    in order of first appearance, rows in their order (a strided view too); None exactly
    where dense_codes may count instead (a narrow range of integers or of floats a whole
    number apart) or without the compiled kernel."""
    from twinimpact.core.validation import dense_codes

    monkeypatch.setattr(unitorder, "FIXED_MIN_ROWS", 0)
    monkeypatch.setattr(unitorder, "FIXED_MIN_LABELS", 0)
    with np.errstate(all="ignore"):
        if dtype[0] == "f":
            x = np.array(vals * repeat, dtype=float).astype(dtype)
        else:
            info = np.iinfo(dtype)
            x = np.array([int(v) % (info.max - info.min + 1) + info.min
                          for v in vals if isinstance(v, int)] * repeat, dtype=dtype)
    if not len(x):
        return
    x = np.repeat(x, step)[::step] if step > 1 else x   # a strided view when step > 1
    got = unitorder.group_fixed(x)
    if kernel == "numpy":
        assert got is None
        return
    if got is None:
        assert unitorder._may_be_counted(x, x)
        return
    want = _sorted_factorize(x)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[2] == want[2]
    # what prepare_panel's path without it gives (dense_codes hashes these labels)
    plain = unitorder.sort_codes(*dense_codes(x))
    np.testing.assert_array_equal(got[0], plain[0])
    np.testing.assert_array_equal(got[1], plain[1])


def test_group_fixed_thresholds():
    """Below the row or label thresholds, and for labels dense_codes counts, the hashing
    path is left to run (None)."""
    rng = np.random.default_rng(0)
    n = unitorder.FIXED_MIN_ROWS
    wide = rng.integers(0, 2**62, n // 2)[rng.integers(0, n // 2, n)]
    if unitorder._compiled() is None:
        pytest.skip("the _unitorder extension is not built")
    got = unitorder.group_fixed(wide)
    assert got is not None and got[2] == len(pd.unique(wide))
    assert unitorder.group_fixed(wide[:-1]) is None              # one row short
    few = rng.integers(0, 2**62, 1000)[rng.integers(0, 1000, n)]
    assert unitorder.group_fixed(few) is None                    # few labels
    narrow = rng.integers(0, n, n).astype(float) + 0.25          # counted by dense_codes
    assert unitorder.group_fixed(narrow) is None
    assert unitorder.group_fixed(narrow * 0.5) is not None        # 0.125 apart: hashed
    assert unitorder.group_fixed(wide.astype(object)) is None


def test_group_strings_other_labels():
    assert unitorder.group_strings(np.array(["a", "b"], dtype=object)) is None
    assert unitorder.group_strings(np.arange(3)) is None
    assert unitorder.group_strings(pd.Categorical(["a", "b"])) is None


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(codes=st.lists(st.integers(-1, 20), min_size=1, max_size=200))
def test_sort_codes_is_a_stable_argsort_without_missing(kernel, codes):
    c = np.array(codes, dtype=np.intp)
    levels = int(c.max()) + 1
    present = np.unique(c[c >= 0])
    dense = np.searchsorted(present, c)
    dense[c < 0] = -1  # dense codes, as dense_codes gives them
    has = np.flatnonzero(dense >= 0)
    ref = has[np.argsort(dense[has], kind="stable")]
    perm, sc, g = unitorder.sort_codes(dense.copy(), len(present))
    np.testing.assert_array_equal(perm, ref)
    np.testing.assert_array_equal(sc, dense[ref])
    assert g == len(present) and levels >= g
    # codes with gaps (a Categorical's, some categories unused): their dense rank
    perm, sc, g = unitorder.sort_codes(c.astype(np.int64), levels)
    np.testing.assert_array_equal(perm, ref)
    np.testing.assert_array_equal(sc, dense[ref])
    assert g == len(present)


def test_should_order(monkeypatch):
    monkeypatch.setattr(unitorder, "MIN_ROWS", 1000)
    monkeypatch.setattr(unitorder, "WINDOW", 256)
    monkeypatch.delenv(unitorder.ORDER_ENV, raising=False)
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(2000), 5)
    assert not unitorder.should_order(ids)                       # sorted by unit
    assert not unitorder.should_order(np.tile(np.arange(2000), 5))  # by period, unit
    assert unitorder.should_order(rng.permutation(ids))
    labels = np.char.add("u", np.char.zfill(ids.astype(str), 5))
    assert not unitorder.should_order(_arrow_str(labels))
    assert unitorder.should_order(_arrow_str(rng.permutation(labels)))
    # float, Categorical, object and long string labels are compared too
    for kind in (lambda x: x.astype(float) / 2,
                 lambda x: pd.Categorical(x),
                 lambda x: np.char.add("unit number ", x.astype(str)).astype(object),
                 lambda x: _arrow_str(np.char.add("unit number ", np.char.zfill(x.astype(str), 5)))):
        assert not unitorder.should_order(kind(ids)), kind
        assert not unitorder.should_order(kind(np.tile(np.arange(2000), 5))), kind
        assert unitorder.should_order(kind(rng.permutation(ids))), kind
    mixed = rng.permutation(ids).astype(object)
    mixed[::2] = "s"  # str beside int: not compared
    assert not unitorder.should_order(mixed)
    monkeypatch.setenv(unitorder.ORDER_ENV, "never")
    assert not unitorder.should_order(rng.permutation(ids))
    monkeypatch.setenv(unitorder.ORDER_ENV, "always")
    assert unitorder.should_order(ids)


def _panel(n_units=300, t=6, *, seed=0, strings=True, shuffle=True, holes=0.1):
    rng = np.random.default_rng(seed)
    u = np.repeat(np.arange(n_units), t)
    year = np.tile(np.arange(2001, 2001 + t), n_units)
    g_u = np.where(rng.random(n_units) < 0.3, 0, rng.integers(2003, 2001 + t, n_units))
    keep = rng.random(len(u)) >= holes
    u, year = u[keep], year[keep]
    g = g_u[u]
    post = (g > 0) & (year >= g)
    y = rng.normal(size=n_units)[u] + 0.3 * (year - 2000) + post * (1 + 0.2 * (year - g)) \
        + rng.normal(size=len(u))
    d = pd.DataFrame({"unit": u * 7 + 11, "year": year, "cohort": g, "y": y,
                      "w": rng.uniform(0.5, 2, len(u)), "x": rng.normal(size=len(u)),
                      "state": u % 13})
    if strings:
        d["unit"] = _arrow_str(np.char.add("id", np.char.zfill((u * 7 + 11).astype(str), 6)))
    if shuffle:
        d = d.iloc[rng.permutation(len(d))].reset_index(drop=True)
    return d


@pytest.mark.parametrize("floats", [False, True])
@pytest.mark.parametrize("strings", [True, False])
def test_prepare_panel_ordered_holds_the_callers_rows(kernel, monkeypatch, strings, floats):
    d = _panel(strings=strings)
    d.loc[d.index[::17], "y"] = np.nan          # dropped rows: counted the same
    d.loc[d.index[5::23], "x"] = np.nan
    if floats:  # float time / cohort / weights: views of the caller's data, not recycled
        d = d.astype({"year": float, "cohort": float})
    else:       # integer weights: a converted column, its buffer recycled
        d["w"] = np.arange(len(d)) % 5 + 1
    before = d.copy(deep=True)
    kw = dict(outcome="y", unit="unit", time="year", cohort="cohort", extra=["state"],
              numeric_extra=["x", "w"], estimator="t", order_by_unit=True)
    monkeypatch.setenv(unitorder.ORDER_ENV, "never")
    with pytest.warns(Warning):
        plain = prepare_panel(d, **kw)
    monkeypatch.setenv(unitorder.ORDER_ENV, "always")
    with pytest.warns(Warning):
        ordered = prepare_panel(d, **kw)
    pd.testing.assert_frame_equal(d, before)     # the caller's frame untouched
    rows = ordered.rows
    assert not np.all(np.diff(rows) > 0)         # the path under test did reorder
    np.testing.assert_array_equal(np.sort(rows), plain.rows)
    assert ordered.dropped == plain.dropped and ordered.n_input == plain.n_input
    f = ordered.frame
    for col, src in (("y", "y"), ("time", "year"), ("x", "x"), ("w", "w"), ("state", "state")):
        np.testing.assert_array_equal(np.asarray(f[col], dtype=float),
                                      d[src].to_numpy(dtype=float)[rows])
    np.testing.assert_array_equal(f["cohort"].to_numpy(),
                                  plain.frame["cohort"].to_numpy()[np.argsort(np.argsort(rows))])
    assert list(np.asarray(f["unit"], dtype=object)) == list(np.asarray(d["unit"],
                                                                         dtype=object)[rows])
    codes = ordered.unit_codes
    assert np.all(np.diff(codes) >= 0)            # grouped by unit
    lab = pd.factorize(np.asarray(d["unit"], dtype=object)[rows])[0]
    assert len(set(zip(codes.tolist(), lab.tolist(), strict=True))) == codes.max() + 1 \
        == lab.max() + 1
    np.testing.assert_array_equal(ordered.time_codes,
                                  plain.time_codes[np.argsort(np.argsort(rows))])



@pytest.mark.parametrize("ids", ["int", "uint32", "strings", "long_na"])
@pytest.mark.parametrize("missing_time", [False, True])
def test_prepare_panel_ordered_keeps_the_same_rows(kernel, monkeypatch, ids, missing_time):
    """The rows kept before ordering (a missing time drops a row before it, a missing unit
    leaves it out of the order) are the same ordered or not, and integer ids come back as
    the caller's labels of those rows (each unit's label from its first row), in the
    caller's dtype."""
    d = _panel(strings=ids == "strings", n_units=400)
    if ids == "uint32":
        d["unit"] = d["unit"].astype(np.uint32)
    elif ids == "long_na":
        d = _relabel(d, "long_na")
    if missing_time:
        d["year"] = d["year"].astype(float)
        d.loc[d.index[3::11], "year"] = np.nan
    kw = dict(outcome="y", unit="unit", time="year", cohort="cohort", estimator="t",
              order_by_unit=True)
    monkeypatch.setenv(unitorder.ORDER_ENV, "never")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = prepare_panel(d, **kw)
    monkeypatch.setenv(unitorder.ORDER_ENV, "always")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ordered = prepare_panel(d, **kw)
    rows = ordered.rows
    assert not np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(np.sort(rows), plain.rows)
    assert ordered.dropped == plain.dropped
    assert (sum(v for k, v in ordered.dropped.items() if k.startswith("missing time"))
            == int((d["year"].isna() & d["unit"].notna()).sum()))  # (unit first)
    f = ordered.frame
    assert len(f) == len(rows)
    np.testing.assert_array_equal(f["time"].to_numpy(), d["year"].to_numpy(dtype=float)[rows])
    np.testing.assert_array_equal(f["y"].to_numpy(), d["y"].to_numpy()[rows])
    unit = d["unit"].to_numpy()[rows] if ids in ("int", "uint32") else None
    if unit is not None:
        assert f["unit"].dtype == d["unit"].dtype
        np.testing.assert_array_equal(f["unit"].to_numpy(), unit)
    else:
        assert list(np.asarray(f["unit"], dtype=object)) == list(
            np.asarray(d["unit"], dtype=object)[rows])


def _relabel(d: pd.DataFrame, ids: str, seed: int = 0) -> pd.DataFrame:
    """``d`` with its (integer) unit ids as another kind of label; ``*_na``: a few
    missing (those rows are dropped and counted as a missing unit)."""
    u = d["unit"].to_numpy()
    long_ = np.char.add("Zürich, Kreis ", u.astype(str)).astype(object)
    miss = np.random.default_rng(seed).random(len(u)) < 0.03
    e = d.copy()
    if ids == "long":
        e["unit"] = _arrow_str(long_)
    elif ids == "long_na":
        e["unit"] = _arrow_str(np.where(miss, None, long_))
    elif ids == "object":
        e["unit"] = pd.Series(long_, dtype=object)
    elif ids == "object_na":
        e["unit"] = pd.Series(np.where(miss, None, long_), dtype=object)
    elif ids == "cat":
        e["unit"] = pd.Categorical(long_)
    elif ids == "cat_na":
        e["unit"] = pd.Categorical(np.where(miss, None, long_))
    elif ids == "float":
        e["unit"] = u / 4.0
    elif ids == "float_na":
        e["unit"] = np.where(miss, np.nan, u / 4.0)
    elif ids == "sparse":
        e["unit"] = u.astype(np.int64) * 1_000_003_577 + 2**40
    return e


OTHER_IDS = ["long", "long_na", "object", "object_na", "cat", "cat_na", "float", "float_na",
             "sparse"]


@pytest.mark.parametrize("as_bytes", [False, True])
@pytest.mark.parametrize("ids", OTHER_IDS)
def test_prepare_panel_orders_other_ids(kernel, monkeypatch, ids, as_bytes):
    """Ids that are not sortable integers (long strings, object, Categorical, floats, a
    wide integer range, missing ids) are ordered by their codes: the caller's rows, the
    same dropped counts (a missing unit dropped and counted as before), codes that match
    the labels, in order of first appearance as without ordering, units in a Categorical
    (object and extension labels) or gathered (numbers). ``as_bytes``: numbers grouped
    by unitorder.group_fixed (its thresholds off)."""
    from twinimpact.core import validation

    if as_bytes:
        monkeypatch.setattr(unitorder, "FIXED_MIN_ROWS", 0)
        monkeypatch.setattr(unitorder, "FIXED_MIN_LABELS", 0)
    used = []
    spied = validation.group_fixed
    monkeypatch.setattr(validation, "group_fixed",
                        lambda *a: used.append(spied(*a)) or used[-1])
    d = _relabel(_panel(strings=False), ids)
    d.loc[d.index[::17], "y"] = np.nan
    before = d.copy(deep=True)
    kw = dict(outcome="y", unit="unit", time="year", cohort="cohort", extra=["state"],
              numeric_extra=["x", "w"], estimator="t", order_by_unit=True)
    monkeypatch.setenv(unitorder.ORDER_ENV, "never")
    with pytest.warns(Warning) as w_plain:
        plain = prepare_panel(d, **kw)
    monkeypatch.setenv(unitorder.ORDER_ENV, "always")
    with pytest.warns(Warning) as w_ordered:
        ordered = prepare_panel(d, **kw)
    assert [str(w.message) for w in w_plain] == [str(w.message) for w in w_ordered]
    pd.testing.assert_frame_equal(d, before)
    rows = ordered.rows
    assert not np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(np.sort(rows), plain.rows)
    assert ordered.dropped == plain.dropped and ordered.n_input == plain.n_input
    if ids.endswith("_na"):
        assert any(k.startswith("missing unit") for k in ordered.dropped)
    f = ordered.frame
    for col, src in (("y", "y"), ("time", "year"), ("x", "x"), ("w", "w")):
        np.testing.assert_array_equal(np.asarray(f[col], dtype=float),
                                      d[src].to_numpy(dtype=float)[rows])
    labels = np.asarray(d["unit"], dtype=object)[rows]
    assert list(np.asarray(f["unit"], dtype=object)) == list(labels)
    if ids.startswith(("long", "object", "cat")):
        assert isinstance(f["unit"].dtype, pd.CategoricalDtype)
    codes = ordered.unit_codes
    assert np.all(np.diff(codes) >= 0)
    # the plain path's codes, rows grouped by them (a Categorical's units in the order
    # of its categories)
    order = np.argsort(np.argsort(rows))
    if ids.startswith("cat"):
        pairs = set(zip(codes.tolist(), plain.unit_codes[order].tolist(), strict=True))
        assert len(pairs) == codes.max() + 1 == plain.unit_codes.max() + 1
        cats = d["unit"].cat.codes.to_numpy()[rows]
        assert np.all(np.diff(cats) >= 0)
    else:
        np.testing.assert_array_equal(codes, plain.unit_codes[order])
    np.testing.assert_array_equal(ordered.time_codes, plain.time_codes[order])
    grouped_as_bytes = any(u is not None for u in used)
    assert grouped_as_bytes == (as_bytes and kernel == "compiled"
                                and ids in ("float", "float_na", "sparse"))


@pytest.mark.parametrize("strings", [True, False])
def test_prepare_panel_ordered_errors_are_the_same(monkeypatch, strings):
    d = _panel(strings=strings)
    bad = d.copy()
    u0 = bad["unit"].iloc[10]
    rows_u0 = np.flatnonzero(np.asarray(bad["unit"] == u0))
    bad.loc[rows_u0[-1], "cohort"] = 2099 if bad["cohort"].iloc[rows_u0[0]] == 0 else 0
    dup = pd.concat([d, d.iloc[[40, 7]]], ignore_index=True)
    kw = dict(outcome="y", unit="unit", time="year", cohort="cohort", estimator="t",
              order_by_unit=True)
    for frame in (bad, dup):
        msgs = []
        for mode in ("never", "always"):
            monkeypatch.setenv(unitorder.ORDER_ENV, mode)
            with pytest.raises(InputError) as e:
                prepare_panel(frame, **kw)
            msgs.append(str(e.value))
        assert msgs[0] == msgs[1]


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert np.array_equal(np.isfinite(a), np.isfinite(b))
    ok = np.isfinite(a)
    return float(np.abs(a[ok] - b[ok]).max() / max(np.abs(b[ok]).max(), 1e-300)) if ok.any() \
        else 0.0


KW = dict(outcome="y", unit="unit", time="year", cohort="cohort")
FITS = {
    "event_study": lambda d: ti.event_study(d, **KW),
    "event_study_w_x_state": lambda d: ti.event_study(d, **KW, weights="w", covariates=["x"],
                                                     cluster="state"),
    "event_study_dk": lambda d: ti.event_study(d, **KW, vcov="driscoll_kraay"),
    "twfe_w": lambda d: ti.twfe(d, **KW, weights="w", cluster="state"),
    "imputation": lambda d: ti.imputation(d, **KW, horizons=True, weights="w"),
    "imputation_state": lambda d: ti.imputation(d, **KW, horizons=True, cluster="state"),
    "did2s": lambda d: ti.did2s(d, **KW, event_study=True, covariates=["x"], cluster="state"),
    "sun_abraham": lambda d: ti.sun_abraham(d, **KW, cluster="unit", covariates=["x"]),
}


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", list(FITS))
@pytest.mark.parametrize("strings", [True, False])
def test_estimators_same_numbers_ordered_or_not(kernel, monkeypatch, name, strings):
    d = _panel(strings=strings, seed=len(name))
    res = {}
    for mode in ("never", "always"):
        monkeypatch.setenv(unitorder.ORDER_ENV, mode)
        res[mode] = FITS[name](d)
    a, b = res["always"], res["never"]
    assert a.nobs == b.nobs
    assert list(a.params.index) == list(b.params.index)
    assert _rel(a.params, b.params) < 1e-10
    assert _rel(a.vcov, b.vcov) < 1e-10
    # and the same numbers on the rows in another order (permutation invariance)
    perm = np.random.default_rng(7).permutation(len(d))
    c = FITS[name](d.iloc[perm].reset_index(drop=True))
    assert _rel(c.params, b.params) < 1e-10 and _rel(c.vcov, b.vcov) < 1e-10


@pytest.mark.filterwarnings("ignore")
def test_with_vcov_on_ordered_rows(monkeypatch):
    """with_vcov(data=caller's frame) reads new cluster columns at the fit's rows."""
    d = _panel(strings=True, seed=3)
    d["region"] = np.random.default_rng(1).integers(0, 20, len(d))
    res = {}
    for mode in ("never", "always"):
        monkeypatch.setenv(unitorder.ORDER_ENV, mode)
        r = ti.event_study(d, **KW)
        res[mode] = r.with_vcov("cluster", cluster="region", data=d)
    assert _rel(res["always"].vcov, res["never"].vcov) < 1e-10
