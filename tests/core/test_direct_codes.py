"""Labels coded through a direct table instead of a hash table (core.unitorder
``first_seen`` / ``code_numbers`` for numbers, ``string_first_seen`` for short strings whose
bytes vary little), as ``core.fe.factorize`` and ``unitorder.code_strings`` use them:

* the codes are ``pandas.factorize``'s (order of first appearance, ``-0.0`` is ``0.0``),
  on every integer and float dtype, narrow and wide ranges, strided views, strings of
  0-18 bytes with NUL bytes and non-ASCII, chunked, sliced, string and large_string;
  the paths decline (None) exactly where they must (NaN, missing strings, a string
  longer than 16 bytes, a wide range);
* ``fe.factorize`` and PPML's fixed-effect codes give the same result with the direct
  paths on and off (``TWINIMPACT_DIRECT_CODES=hash``), and a PPML fit is the same to the
  bit (params, vcov, fitted means, diagnostics) on string, integer and interacted keys.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import twinimpact as ti
from twinimpact.core import fe, unitorder
from twinimpact.estimators import ppml as ppml_mod

from ..gravity_cases import gravity_base

pytestmark = pytest.mark.skipif(unitorder._compiled() is None,
                                reason="the _unitorder extension is not built")

DTYPES = ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f4", "f8"]


def _numbers(draw_vals, dtype: str, offset: int) -> np.ndarray:
    if dtype[0] == "f":
        return np.array(draw_vals, dtype=float).astype(dtype)
    info = np.iinfo(dtype)
    width = info.max - info.min + 1
    return np.array([(int(v) + offset - info.min) % width + info.min for v in draw_vals],
                    dtype=dtype)


_value = st.one_of(st.integers(-40, 40), st.sampled_from([0.0, -0.0, 0.5, 2.0**53,
                                                           2.0**60, -1e300, float("nan"),
                                                           float("inf")]))


@seed(3930)
@settings(max_examples=300, deadline=None)
@given(vals=st.lists(_value, min_size=1, max_size=200),
       dtype=st.sampled_from(DTYPES), offset=st.sampled_from([0, 2**31, 2**62, -(2**63)]),
       step=st.sampled_from([1, 2, 3]))
def test_code_numbers_is_pandas_factorize(vals, dtype, offset, step):
    """Direct-table codes equal pandas.factorize's; declined (None) only where the
    caller must hash (NaN) -- never for integers in a narrow range."""
    with np.errstate(all="ignore"):
        if dtype[0] != "f":
            vals = [v for v in vals if isinstance(v, int)]
        x = _numbers(vals, dtype, offset)
    if not len(x):
        return
    x = np.repeat(x, step)[::step] if step > 1 else x     # a strided view
    got = unitorder.code_numbers(x)
    want_codes, want_uniques = pd.factorize(x, use_na_sentinel=False)
    with np.errstate(all="ignore"):
        exact = dtype[0] != "f" or bool(np.isfinite(x).all() and (np.abs(x) < 2.0**53).all()
                                        and (x == np.round(x)).all())
    narrow = exact and int(x.max()) - int(x.min()) + 1 <= 4 * len(x) + 1000
    if got is None:
        assert not narrow   # (a wide range of few labels: hashed)
    else:
        assert got[0].dtype == np.intp
        np.testing.assert_array_equal(got[0], want_codes)
        assert got[1] == len(want_uniques)
    codes, g = fe.factorize(x)
    np.testing.assert_array_equal(codes, want_codes)
    assert g == len(want_uniques)


@seed(3931)
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_labels=st.integers(1, 3000), rows=st.integers(1, 5000),
       scale=st.sampled_from([1, 7, 2**20, 2**40]), floats=st.booleans(),
       data=st.data())
def test_code_numbers_wide_and_grouped(monkeypatch, n_labels, rows, scale, floats, data):
    """Wide ranges: the byte grouping (group_fixed, thresholds off) put back at the rows,
    or hashing; either way pandas.factorize's codes."""
    monkeypatch.setattr(unitorder, "FIXED_MIN_ROWS", 0)
    monkeypatch.setattr(unitorder, "FIXED_MIN_LABELS", 0)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.integers(-n_labels, n_labels, n_labels)[rng.integers(0, n_labels, rows)] * scale
    x = x.astype(float) if floats else x
    got = unitorder.code_numbers(x)
    want = pd.factorize(x)
    assert got is not None
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1] == len(want[1])


def _arrow(vals: list, large: bool, chunks: int, cut: int) -> pd.api.extensions.ExtensionArray:
    typ = pa.large_string() if large else pa.string()
    full = pa.array(["pad"] * cut + vals, type=typ).slice(cut)  # a sliced array (offset)
    k = max(1, -(-len(vals) // chunks))
    parts = [full.slice(i, k) for i in range(0, len(vals), k)] or [full]
    return pd.arrays.ArrowStringArray(pa.chunked_array(parts, type=typ))


#: small alphabets (most draws then fall in a narrow range and take the direct table):
#: NUL against the zeros that pad a short string, non-ASCII, digits of ids
ALPHABETS = ["01", "\x00a", "0123456789", "CD_", "eé", "x", "\x00"]


@seed(3932)
@settings(max_examples=400, deadline=None)
@given(alphabet=st.sampled_from(ALPHABETS), prefix=st.sampled_from(["", "C0", "ab_"]),
       data=st.data(), large=st.booleans(), chunks=st.integers(1, 4),
       cut=st.integers(0, 3), repeat=st.integers(1, 3))
def test_string_first_seen_is_pandas_factorize(alphabet, prefix, data, large, chunks, cut,
                                               repeat):
    """Short strings read as numbers of their bytes: pandas.factorize's codes (the empty
    string, "a" and "a\\0", non-ASCII); None exactly for a string longer than 16 bytes or
    a range of numbers wider than 4 n + 1000."""
    vals = data.draw(st.lists(st.text(alphabet=st.sampled_from(list(alphabet)),
                                      max_size=data.draw(st.integers(0, 18))),
                              min_size=1, max_size=120))
    vals = [prefix + v for v in vals] * repeat
    arr = _arrow(vals, large, chunks, cut)
    got = unitorder.string_first_seen(arr)
    want_codes, want_uniques = pd.factorize(np.array(vals, dtype=object))
    if got is None:
        raw = [v.encode() for v in vals]
        long = max(len(b) for b in raw) > unitorder.SHORT_BYTES
        if not long:  # the span of the mixed-radix number
            span = len({len(b) for b in raw}) and (max(len(b) for b in raw)
                                                    - min(len(b) for b in raw) + 1)
            for j in range(unitorder.SHORT_BYTES):
                col = [b[j] if j < len(b) else 0 for b in raw]
                span *= max(col) - min(col) + 1
            assert span > 4 * len(vals) + 1000
        return
    np.testing.assert_array_equal(got[0], want_codes)
    assert got[1] == len(want_uniques)
    # and the callers: code_strings, fe.factorize
    for codes, g in (unitorder.code_strings(arr), fe.factorize(pd.Series(arr))):
        np.testing.assert_array_equal(codes, want_codes)
        assert g == len(want_uniques)


def test_string_first_seen_tells_lengths_apart():
    """Strings equal but for trailing NUL bytes (equal bytes once padded with zeros):
    told apart by their length."""
    a = pd.array(["", "\x00", "a", "a\x00", "a", "\x00\x00", ""], dtype="string[pyarrow]")
    got = unitorder.string_first_seen(a)
    np.testing.assert_array_equal(got[0], [0, 1, 2, 3, 2, 4, 0])
    assert got[1] == 5


def test_string_first_seen_declines():
    """Missing strings (fe.factorize gives them a code of their own), long strings,
    object columns, and the switch."""
    with_null = pd.array(["a", None, "b"], dtype="string[pyarrow]")
    assert unitorder.string_first_seen(with_null) is None
    np.testing.assert_array_equal(fe.factorize(pd.Series(with_null))[0], [0, 1, 2])
    assert unitorder.string_first_seen(pd.array(["x" * 17, "y"],
                                                dtype="string[pyarrow]")) is None
    assert unitorder.string_first_seen(np.array(["a", "b"], dtype=object)) is None
    short = pd.array(["C001x_1990", "C002x_1990"] * 10, dtype="string[pyarrow]")
    assert unitorder.string_first_seen(short)[1] == 2


def test_direct_paths_switch_off(monkeypatch):
    """TWINIMPACT_DIRECT_CODES=hash: both direct paths decline; fe.factorize the same."""
    x = np.array([5, 3, 5, 9])
    s = pd.array(["b", "a", "b"], dtype="string[pyarrow]")
    on = fe.factorize(x), fe.factorize(pd.Series(s))
    assert unitorder.code_numbers(x) is not None and unitorder.string_first_seen(s) is not None
    monkeypatch.setenv(unitorder.DIRECT_ENV, "hash")
    assert unitorder.code_numbers(x) is None and unitorder.string_first_seen(s) is None
    off = fe.factorize(x), fe.factorize(pd.Series(s))
    for a, b in zip(on, off, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1] == b[1]


@seed(3933)
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 300), k=st.integers(1, 3), data=st.data())
def test_interacted_codes_recoded_before_overflow(monkeypatch, n, k, data):
    """ppml.fe_codes of an interaction (a tuple of columns): pandas' codes of the tuples
    in order of first appearance, also when the product of the label counts is coded down
    on the way (the overflow guard, here at a tiny bound)."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    cols = {f"c{j}": rng.integers(0, data.draw(st.integers(1, 20)), n) for j in range(k)}
    cols["s"] = pd.array(rng.choice(["x", "yy", "z"], n), dtype="string[pyarrow]")
    frame = pd.DataFrame(cols)
    spec = tuple(frame.columns)
    want = frame.groupby(list(spec), sort=False).ngroup().to_numpy()
    np.testing.assert_array_equal(ppml_mod.fe_codes(frame, spec), want)
    monkeypatch.setattr(ppml_mod, "_COMBINED_MAX", 4)
    np.testing.assert_array_equal(ppml_mod.fe_codes(frame, spec), want)


def _gravity(seed_: int, n_c: int, n_y: int, ints: bool) -> pd.DataFrame:
    d = gravity_base(seed_, n_c, n_y, zeros=0.2, missing=0.1, weights=True)
    if ints:
        # numeric ids in a range narrow for these few rows (direct table)
        d["pair"] = d["exporter"] * 100 + d["importer"]
        d["exp_year"] = d["exporter"] * 100 + d["year"] - 1990
        d["imp_year"] = (d["importer"] * 100 + d["year"] - 1990).astype(float)
    else:
        for c in ("exporter", "importer"):
            d[c] = pd.array([f"C{v:03d}x" for v in d[c]], dtype="string[pyarrow]")
        d["pair"] = d["exporter"] + "_" + d["importer"]
        d["exp_year"] = d["exporter"] + "_" + d["year"].astype(str)
        d["imp_year"] = d["importer"] + "_" + d["year"].astype(str)
    return d


@pytest.mark.parametrize("ints", [False, True])
@pytest.mark.parametrize("fes", [["exp_year", "imp_year", "pair"],
                                 [("exporter", "year"), ("importer", "year"), "pair"]])
def test_ppml_direct_codes_on_or_off_same_fit_to_the_bit(monkeypatch, ints, fes):
    """PPML with the keys coded through the direct tables or hashed / grouped as before
    (TWINIMPACT_DIRECT_CODES=hash): the same codes, hence the same fit bit for bit."""
    d = _gravity(3930, 16, 6, ints)
    fits = {}
    for mode in ("", "hash"):
        with monkeypatch.context() as mp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (the all-zero exporter-year's rows)
            mp.setenv(unitorder.DIRECT_ENV, mode)
            fits[mode] = ti.ppml(d, outcome="trade", regressors=["rta", "x2"],
                                 fixed_effects=fes, cluster="pair", weights="w")
            direct = (unitorder.code_numbers(d["pair"].to_numpy()) if ints
                      else unitorder.string_first_seen(d["pair"].array))
            assert (direct is None) == (mode == "hash")      # the path switched
    a, b = fits[""], fits["hash"]
    assert np.array_equal(a.params.to_numpy(), b.params.to_numpy())
    assert np.array_equal(a.vcov.to_numpy(), b.vcov.to_numpy())
    assert np.array_equal(a.extras["fitted"], b.extras["fitted"])
    assert a.diagnostics == b.diagnostics
