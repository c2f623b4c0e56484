"""Tests of callaway_santanna's fast paths against its general paths.

The fast paths (counting-pass unit/time codes for integer labels, the complete panel
sorted by unit and time read by reshaping, per-cohort gathers of the no-covariate cells)
must give the same numbers as the general paths (hashed labels, shuffled rows, scattered
wide matrices), which the R references in test_callaway_santanna.py pin down; and the
helpers must agree with the pandas/numpy functions they replace.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from twinimpact.core.unitorder import sortable_values
from twinimpact.errors import EstimationError, InputError
from twinimpact.estimators.callaway_santanna import (
    _factorize_sorted,
    _few_byte_values,
    _time_codes,
    callaway_santanna,
)

ROOT = Path(__file__).resolve().parents[1]
MPDTA = ROOT / "data" / "mpdta" / "mpdta.csv"
KW = dict(outcome="lemp", unit="countyreal", time="year", cohort="first.treat")
#: Fast and general paths sum the same numbers in a different order (pairwise sums over
#: contiguous cohort blocks instead of masked sums): agreement to rounding, ~1e-15 seen.
ROUNDING = 1e-12


@pytest.fixture(scope="module")
def mpdta() -> pd.DataFrame:
    return pd.read_csv(MPDTA)


def _fit(df: pd.DataFrame, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = callaway_santanna(df, **{**KW, **kw})
        return res, res.aggregate("dynamic")


def _same(a, b, tol: float = ROUNDING) -> None:
    for ra, rb in zip(a, b, strict=True):
        np.testing.assert_allclose(ra.params.to_numpy(), rb.params.to_numpy(), rtol=0,
                                   atol=tol)
        np.testing.assert_allclose(np.asarray(ra.vcov), np.asarray(rb.vcov), rtol=tol,
                                   atol=tol**2)
        assert list(ra.terms) == list(rb.terms)
        assert ra.diagnostics["dropped_rows"] == rb.diagnostics["dropped_rows"]


@pytest.mark.parametrize("control_group", ["never_treated", "not_yet_treated"])
@pytest.mark.parametrize("covariates", [None, ["lpop"]])
def test_sorted_panel_equals_shuffled_and_string_units(mpdta, control_group, covariates):
    """Sorted rows + integer units (fast path) == shuffled rows + string units (general)."""
    sorted_df = mpdta.sort_values(["countyreal", "year"]).reset_index(drop=True)
    shuffled = sorted_df.sample(frac=1.0, random_state=7).reset_index(drop=True)
    shuffled["countyreal"] = "c" + shuffled["countyreal"].astype(str).str.zfill(6)
    a = _fit(sorted_df, control_group=control_group, covariates=covariates)
    b = _fit(shuffled, control_group=control_group, covariates=covariates)
    _same(a, b)
    # influence rows follow the sorted unit labels in both cases
    np.testing.assert_allclose(np.asarray(a[0].influence), np.asarray(b[0].influence),
                               rtol=0, atol=ROUNDING)


def test_fast_path_leaves_the_callers_frame_alone(mpdta):
    df = mpdta.sort_values(["countyreal", "year"]).reset_index(drop=True)
    before = df.copy(deep=True)
    res, _ = _fit(df)
    pd.testing.assert_frame_equal(df, before)
    assert not np.shares_memory(np.asarray(res.influence), df["lemp"].to_numpy())


def test_sorted_panel_with_missing_outcome_takes_the_general_path(mpdta):
    """A dropped row breaks the complete-panel shortcut; the unit is dropped and counted
    exactly as on shuffled rows."""
    df = mpdta.sort_values(["countyreal", "year"]).reset_index(drop=True)
    df.loc[3, "lemp"] = np.nan
    a = _fit(df)
    b = _fit(df.sample(frac=1.0, random_state=1))
    _same(a, b)
    assert a[0].diagnostics["dropped_rows"]["missing outcome (lemp)"] == 1


def test_duplicate_rows_still_rejected_when_sorted(mpdta):
    df = mpdta.sort_values(["countyreal", "year"]).reset_index(drop=True)
    dup = pd.concat([df.iloc[:1], df]).reset_index(drop=True)
    with pytest.raises(InputError, match="share a"):
        callaway_santanna(dup, **KW)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(-120, 120), min_size=1, max_size=40),
       st.sampled_from(["int8", "int16", "int64", "uint8"]))
def test_factorize_sorted_matches_pandas(values, dtype):
    if dtype.startswith("u"):
        values = [abs(v) for v in values]
    s = pd.Series(np.array(values).astype(dtype))
    codes, labels = _factorize_sorted(s)
    codes0, labels0 = pd.factorize(s, sort=True)
    np.testing.assert_array_equal(codes, codes0)
    assert labels.equals(labels0) and labels.dtype == labels0.dtype


_WIDE_NUMBER = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 0.5, 1e300]),
    st.floats(allow_nan=True, allow_infinity=True),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(_WIDE_NUMBER, min_size=1, max_size=60),
       st.sampled_from(["int64", "uint64", "int32", "float64", "float32"]))
# the label of a group is its first row's: 0.0 / -0.0 seen first, then the other
@example([0.0, 0.0, -0.0, 1.5], "float64")
@example([-0.0, 0.0, 0.0, 1.5], "float32")
def test_factorize_sorted_grouped_numbers_match_pandas(values, dtype):
    """Many numbers of a wide range grouped by their bytes (unitorder.group_fixed, its
    thresholds off), the labels sorted and the rows given their ranks: pandas'
    factorize(sort=True) codes and labels (NaN -> -1; of -0.0 and 0.0 the one seen
    first, as pandas keeps it)."""
    import unittest.mock

    from twinimpact.core import unitorder

    if dtype[0] == "f":
        with np.errstate(over="ignore"):
            arr = np.array([float(v) for v in values]).astype(dtype)
    else:
        info = np.iinfo(dtype)
        arr = np.array([int(v) % (info.max - info.min + 1) + info.min for v in values
                        if not isinstance(v, float)] or [0]).astype(dtype)
    s = pd.Series(arr)
    with unittest.mock.patch.multiple(unitorder, FIXED_MIN_ROWS=0, FIXED_MIN_LABELS=0):
        codes, labels = _factorize_sorted(s)
    codes0, labels0 = pd.factorize(s, sort=True)
    np.testing.assert_array_equal(codes, codes0)
    assert labels.equals(labels0) and labels.dtype == labels0.dtype
    np.testing.assert_array_equal(np.signbit(labels.to_numpy()), np.signbit(labels0.to_numpy()))


@pytest.mark.parametrize("ids", ["float", "float_na", "sparse"])
def test_wide_numeric_ids_grouped_give_the_same_fit(mpdta, ids):
    """callaway_santanna on float / sparse int64 unit ids: the same numbers bit for bit
    whether the ids are grouped by their bytes or hashed."""
    import unittest.mock

    from twinimpact.core import unitorder

    d = mpdta.iloc[np.random.default_rng(0).permutation(len(mpdta))].reset_index(drop=True)
    u = d["countyreal"].to_numpy()
    d["countyreal"] = {"float": u / 3.0, "float_na": np.where(u % 41 == 0, np.nan, u / 3.0),
                       "sparse": u.astype(np.int64) * 1_000_003_577 + 2**40}[ids]
    from twinimpact.estimators import callaway_santanna as cs_module

    out, used = [], []
    spied = cs_module.group_fixed
    for on in (False, True):
        patch = dict(FIXED_MIN_ROWS=0, FIXED_MIN_LABELS=0) if on else \
            dict(FIXED_MIN_ROWS=1 << 40)
        with unittest.mock.patch.multiple(unitorder, **patch), \
                unittest.mock.patch.object(cs_module, "group_fixed",
                                           lambda a: used.append(spied(a)) or used[-1]), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = callaway_santanna(d, **KW, allow_unbalanced_panel=ids == "float_na")
            dyn = r.aggregate("dynamic")
        out.append(np.r_[r.params.to_numpy(), np.ravel(r.vcov), dyn.params.to_numpy(),
                         dyn.std_errors.to_numpy()])
    assert [u is not None for u in used] == [False, True]  # hashed, then grouped
    np.testing.assert_array_equal(out[0], out[1])


#: labels whose byte order and naive orders could differ: prefixes, a NUL byte ("a" vs
#: "a\\0" pad alike), DEL, multi-byte UTF-8 (above "z" in byte and code point order), eight
#: bytes beside shorter ones, longer than eight bytes (Arrow's sort)
_TRICKY = ["a", "b", "B", "ab", "", "é", "z1", "z10", "z2", "unit_07", "unit_7", "a\0",
           "a\0b", "\0", "\x7f", "zé", "中", "😀", "u0000123", "u000012é", "abcdefgh",
           "abcdefg\0", "abcdefghi", "city-of-somewhere-u0000123"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.sampled_from(_TRICKY)), min_size=1, max_size=40),
       st.sampled_from([1, 4]), st.integers(0, 3))
def test_factorize_sorted_strings_match_pandas(values, partitions, skip):
    """Arrow strings (pandas' ``str``): string_codes (one table or forced partitions) and
    the sorted labels (through byte-order keys or Arrow's sort) give
    pandas.factorize(sort=True)'s codes and labels, missing -> -1; also on a slice (an
    Arrow array with an offset) and on two chunks."""
    import unittest.mock

    from twinimpact.core import labels as core_labels

    full = pd.Series(values, dtype="str")
    for s in (full, full.iloc[min(skip, len(full) - 1):], pd.concat([full, full.iloc[:2]])):
        with unittest.mock.patch.object(core_labels, "_partitions_for",
                                        lambda data: partitions):
            codes, labels = _factorize_sorted(s)
        codes0, labels0 = pd.factorize(s, sort=True)
        np.testing.assert_array_equal(codes, codes0)
        assert labels.equals(labels0) and labels.dtype == labels0.dtype


#: characters whose byte order and naive orders could differ: NUL (a zero-padded "a" and
#: "a\\0" would tie), \\x01, DEL, multi-byte UTF-8 (above "z" in byte and code point order)
_ID_CHARS = ["a", "b", "z", "0", "\0", "\x01", "\x7f", "é", "ÿ", "中", "😀"]


def _small_mpdta(mpdta: pd.DataFrame, per_cohort: int = 10) -> pd.DataFrame:
    """``per_cohort`` counties of each cohort of mpdta (all their years)."""
    first = mpdta.groupby("countyreal")["first.treat"].first()
    pick = first.groupby(first).head(per_cohort).index
    return mpdta[mpdta["countyreal"].isin(pick)].reset_index(drop=True)


def _id_lists(chars: list[str], min_size: int, max_size: int) -> st.SearchStrategy:
    return st.lists(st.text(st.sampled_from(chars), min_size=min_size, max_size=max_size),
                    min_size=40, max_size=40, unique=True)


_ASCII = [c for c in _ID_CHARS if len(c.encode()) == 1]
#: ids of every kind: free (longer than eight bytes, eight beside shorter: Arrow's sort),
#: at most seven bytes (byte-order keys, NUL bytes and prefixes), exactly eight bytes (the
#: same), three of four digits (few byte values: dense values by counting)
_ID_KINDS = st.one_of(_id_lists(_ID_CHARS, 0, 9), _id_lists(_ID_CHARS, 0, 3),
                      _id_lists(_ASCII, 0, 7), _id_lists(_ASCII, 8, 8),
                      _id_lists(list("0123"), 3, 3))


@settings(max_examples=60, deadline=None)
@given(_ID_KINDS, st.integers(0, 2**32 - 1), st.booleans())
def test_string_unit_ids_of_any_kind_give_the_object_ids_results(mpdta, labels, seed,
                                                                  unbalanced):
    """What users see on Arrow string unit ids of any kind (empty, NUL bytes, prefixes,
    multi-byte UTF-8, eight bytes beside shorter or longer ones) in shuffled rows with
    rows missing: the units in Python's sorted order and every number -- ATT(g,t), vcov,
    influence function, dynamic aggregation -- bit-identical to the same ids as Python
    objects (pandas.factorize(sort=True), the plain path). The ids take whichever path
    they qualify for: dense values by counting, byte-order keys of the labels, Arrow's
    sort."""
    df = _small_mpdta(mpdta)
    rng = np.random.default_rng(seed)
    counties = np.unique(df["countyreal"])
    ids = dict(zip(counties, rng.permutation(np.asarray(labels, dtype=object)),
                   strict=True))
    df = df.sample(frac=1.0, random_state=rng.integers(2**31)).iloc[
        rng.random(len(df)) > 0.05].reset_index(drop=True)
    df["countyreal"] = df["countyreal"].map(ids).astype(object)
    strs = df.astype({"countyreal": "str"})
    try:
        a = _fit(df, allow_unbalanced_panel=unbalanced)
    except EstimationError:  # (too few units left in some cohort: both paths refuse)
        with pytest.raises(EstimationError):
            _fit(strs, allow_unbalanced_panel=unbalanced)
        return
    b = _fit(strs, allow_unbalanced_panel=unbalanced)
    assert list(a[0].units) == list(b[0].units) == sorted(a[0].units)
    for ra, rb in zip(a, b, strict=True):
        np.testing.assert_array_equal(ra.params.to_numpy(), rb.params.to_numpy())
        np.testing.assert_array_equal(np.asarray(ra.vcov), np.asarray(rb.vcov))
    np.testing.assert_array_equal(np.asarray(a[0].influence), np.asarray(b[0].influence))


@pytest.mark.parametrize("ids", ["short", "eight", "nonascii", "long"])
def test_string_units_in_any_row_order_equal_object_units(mpdta, ids):
    """Arrow string unit ids (labels sorted through byte-order keys when short, by Arrow
    when not) and the same ids as Python objects (pandas.factorize(sort=True)), rows
    shuffled: the same unit order (result.units, influence rows) and the same numbers,
    bit for bit."""
    make = {"short": lambda u: "c" + u.astype(str),
            "eight": lambda u: "u" + u.astype(str).str.zfill(7),
            "nonascii": lambda u: np.where(u % 3 == 0, "é", np.where(u % 3 == 1, "z", "e"))
            + u.astype(str),
            "long": lambda u: "city-of-somewhere-" + u.astype(str)}[ids]
    df = mpdta.sample(frac=1.0, random_state=11).reset_index(drop=True)
    df["countyreal"] = pd.Series(np.asarray(make(df["countyreal"]), dtype=object))
    objs = df.astype({"countyreal": object})
    strs = df.astype({"countyreal": "str"})
    a, b = _fit(objs), _fit(strs)
    assert list(a[0].units) == list(b[0].units) == sorted(set(df["countyreal"]))
    for ra, rb in zip(a, b, strict=True):
        np.testing.assert_array_equal(ra.params.to_numpy(), rb.params.to_numpy())
        np.testing.assert_array_equal(np.asarray(ra.vcov), np.asarray(rb.vcov))
    np.testing.assert_array_equal(np.asarray(a[0].influence), np.asarray(b[0].influence))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.one_of(st.integers(-50, 3000), st.sampled_from([0.5, 1e17, -2.25])),
                min_size=1, max_size=40))
def test_time_codes_match_unique_searchsorted(values):
    t = np.array(values, dtype=float)
    periods, codes = _time_codes(t)
    expected = np.unique(t)
    np.testing.assert_array_equal(periods, expected)
    np.testing.assert_array_equal(codes, np.searchsorted(expected, t))


def test_cohort_varying_within_unit_still_rejected_when_complete_and_sorted(mpdta):
    """A complete panel sorted by unit and time reads each unit's cohort from its first
    row after one check; a cohort that varies within a unit still gets
    cohort_per_unit's error (the same as on the shuffled rows)."""
    df = mpdta.sort_values(["countyreal", "year"]).reset_index(drop=True)
    bad = df.copy()
    bad.loc[7, "first.treat"] = 2006 if bad.loc[7, "first.treat"] != 2006 else 2007
    with pytest.raises(InputError, match="varies within unit") as sorted_err:
        callaway_santanna(bad, **KW)
    with pytest.raises(InputError, match="varies within unit") as shuffled_err:
        callaway_santanna(bad.sample(frac=1.0, random_state=3), **KW)
    assert str(sorted_err.value) == str(shuffled_err.value)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.lists(st.integers(1990, 2010), min_size=1, max_size=6,
                                   unique=True),
       st.sampled_from(["complete", "swap", "duplicate", "short"]))
def test_complete_sorted_equals_time_codes_or_declines(n_units, years, how):
    """_complete_sorted returns the periods of _time_codes(tt) on every unit x every
    period sorted by unit and time (whose time codes are then row % T, as the caller
    assumes without making them), and None when rows are out of order, duplicated or
    missing."""
    from twinimpact.estimators.callaway_santanna import _complete_sorted

    years = sorted(years)
    u = np.repeat(np.arange(n_units), len(years))
    t = np.tile(np.array(years, dtype=float), n_units)
    if how == "swap" and len(years) > 1:
        t[[0, 1]] = t[[1, 0]]
    elif how == "duplicate" and len(years) > 1:
        t[1] = t[0]
    elif how == "short" and len(t) > 1:
        u, t = u[:-1], t[:-1]
    got = _complete_sorted(u, t, n_units)
    uniq = np.unique(t)
    complete = (len(t) == n_units * len(uniq)
                and np.array_equal(u, np.repeat(np.arange(n_units), len(uniq)))
                and np.array_equal(t, np.tile(uniq, n_units)))
    assert complete or how != "complete"
    if complete:
        periods, codes = _time_codes(t)
        assert got is not None
        np.testing.assert_array_equal(got, periods)
        np.testing.assert_array_equal(np.arange(len(t)) % len(got), codes)
    else:
        assert got is None


# ------------------------------------------------------------- aggregation, dense oracle
def _dense_aggregate(res, type: str) -> tuple[np.ndarray, np.ndarray]:
    """R did ``aggte`` written out with the dense matrices (slow, obviously correct):
    per row, ``psi = IF[:, keepers] @ w + wif @ att[keepers]`` with R's ``wif`` built as
    the (n, m) matrices ``if1 - if2``; the overall rows as R (cohort shares for "group",
    the mean of the post rows for "dynamic", of all rows for "calendar")."""
    info = res.term_info
    att = res.coef
    group, t = info["cohort"].to_numpy(float), info["time"].to_numpy(float)
    inf = np.asarray(res.influence)
    G = np.asarray(res.unit_cohort)
    glist = np.unique(group)
    pg_g = np.array([np.mean(G == g) for g in glist])
    pg = pg_g[np.searchsorted(glist, group)]

    def wif(keepers, pgk, attk):
        # if1[:, j] = (1{G = g_j} - pg_j) / sum(pg); if2 = rowSums(1{G = g_j} - pg_j) pg'/s^2
        ind = (G[:, None] == glist[np.searchsorted(glist, keepers)][None, :]).astype(float)
        s = pgk.sum()
        if1 = (ind - pgk) / s
        if2 = np.outer((ind - pgk).sum(axis=1), pgk / s**2)
        return (if1 - if2) @ attk

    def row(which, with_wif=True):
        w = pg[which] / pg[which].sum()
        psi = inf[:, which] @ w
        if with_wif:
            psi = psi + wif(group[which], pg[which], att[which])
        return att[which] @ w, psi

    rows = []
    if type == "simple":
        rows.append(row(np.flatnonzero(group <= t)))
    elif type == "dynamic":
        e_all = t - group
        eseq = np.unique(e_all)
        rows = [row(np.flatnonzero(e_all == e)) for e in eseq]
        post = [r for e, r in zip(eseq, rows, strict=True) if e >= 0]
        rows.append((np.mean([r[0] for r in post]), np.mean([r[1] for r in post], axis=0)))
    elif type == "calendar":
        tcal = np.unique(t[t >= group.min()])
        rows = [row(np.flatnonzero((t == t1) & (group <= t))) for t1 in tcal]
        rows.append((np.mean([r[0] for r in rows]), np.mean([r[1] for r in rows], axis=0)))
    else:  # group
        rows = [row(np.flatnonzero((group == g) & (g <= t)), with_wif=False) for g in glist]
        att_g = np.array([r[0] for r in rows])
        share = pg_g / pg_g.sum()
        psi = np.column_stack([r[1] for r in rows]) @ share + wif(glist, pg_g, att_g)
        rows.append((att_g @ share, psi))
    return np.array([r[0] for r in rows]), np.column_stack([r[1] for r in rows])


@pytest.mark.parametrize("type", ["simple", "dynamic", "group", "calendar"])
@pytest.mark.parametrize("unbalanced", [False, True])
def test_aggregate_column_sums_equal_dense_oracle(mpdta, type, unbalanced):
    """The aggregation writes each row's influence function as a sum of the cells'
    columns (BLAS axpy) plus the per-cohort estimated-weights term gathered per unit;
    the dense R formulas (IF[:, keepers] @ w + (if1 - if2) @ att) give the same estimates,
    influence functions and vcov = psi'psi / n^2 to rounding, balanced and unbalanced."""
    df = mpdta
    if unbalanced:
        df = df[np.random.default_rng(4).random(len(df)) > 0.15]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = callaway_santanna(df, **KW, allow_unbalanced_panel=unbalanced)
        agg = res.aggregate(type)
    est, psi = _dense_aggregate(res, type)
    n = psi.shape[0]
    np.testing.assert_allclose(agg.coef, est, rtol=ROUNDING, atol=1e-14)
    np.testing.assert_allclose(np.asarray(agg.influence), psi, rtol=1e-10,
                               atol=ROUNDING * np.abs(psi).max())
    np.testing.assert_allclose(agg.cov, psi.T @ psi / n**2, rtol=1e-10,
                               atol=ROUNDING * np.abs(agg.cov).max())


@pytest.mark.parametrize("base_period", ["varying", "universal"])
@pytest.mark.parametrize("method", ["dr", "ipw"])
def test_block_vcov_equals_dense_influence_cross_product(base_period, method):
    """Never-treated comparisons on a balanced panel without covariates: the vcov comes
    from the nonzero blocks of the influence function (never-treated x all cells, plus
    each cohort x its own cells) instead of IF'IF over all units; it equals the dense
    IF'IF / n^2 of the returned influence function, including the normalised cells
    (universal base period) and cells a guard leaves NaN (ipw: one cohort of 1,000
    units against 5 never-treated units has every comparison unit trimmed)."""
    rng = np.random.default_rng(2)
    coh = np.r_[np.zeros(5), np.full(1000, 2004), np.full(40, 2006)]
    n, years = len(coh), np.arange(2000, 2009)
    df = pd.DataFrame({"id": np.repeat(np.arange(n), len(years)),
                       "year": np.tile(years, n), "g": np.repeat(coh, len(years))})
    df["y"] = rng.normal(size=len(df)) + np.repeat(rng.normal(size=n), len(years)) \
        + ((df.g > 0) & (df.year >= df.g))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = callaway_santanna(df, outcome="y", unit="id", time="year", cohort="g",
                                base_period=base_period, method=method)
    inf = np.asarray(res.influence)
    dense = inf.T @ inf / inf.shape[0] ** 2
    bad = np.isnan(inf).any(axis=0)
    assert bad.any() == (method == "ipw")
    normalised = np.asarray(res.term_info["base"] == res.term_info["time"])
    assert normalised.any() == (base_period == "universal")
    # NaN rows / columns for the NaN cells, except against a normalised cell (0, as main)
    assert np.isnan(res.cov[np.ix_(bad, ~normalised)]).all()
    ok = np.ix_(~bad, ~bad)
    np.testing.assert_allclose(res.cov[ok], dense[ok], rtol=1e-12,
                               atol=1e-14 * np.abs(dense[ok]).max())
    assert (res.cov[:, normalised] == 0).all()


@pytest.mark.parametrize("covariates", [[], ["lpop"]])
def test_unbalanced_presence_mask_is_the_kept_rows(mpdta, covariates):
    """allow_unbalanced_panel: the presence mask (read off the wide outcome's NaN cells)
    marks exactly the unit x period cells of the kept rows (missing outcome and covariate
    rows dropped, a unit left with one row), on shuffled rows."""
    from twinimpact.estimators.callaway_santanna import _prepare

    df = mpdta.sample(frac=0.9, random_state=5).reset_index(drop=True)
    df.loc[::13, "lemp"] = np.nan
    df.loc[::17, "lpop"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = _prepare(df, outcome="lemp", unit="countyreal", time="year",
                     cohort="first.treat", covariates=covariates, cluster=None,
                     control_group="never_treated", anticipation=0, allow_unbalanced=True)
    kept = df.dropna(subset=["lemp", *covariates])
    expect = np.zeros((len(p.units), len(p.periods)), dtype=bool)
    expect[np.searchsorted(p.units, kept["countyreal"]),
           np.searchsorted(p.periods, kept["year"])] = True
    assert p.present is not None and p.present.flags.f_contiguous
    np.testing.assert_array_equal(p.present, expect)
    assert p.n_obs == len(kept) == int(p.present.sum())


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(st.text(st.sampled_from("0123"), min_size=1, max_size=2),
                          st.builds(lambda a, b: f"u{a}{b:03d}", st.sampled_from("xyz"),
                                    st.integers(0, 999)),
                          st.sampled_from(["", "é", "zé", "\x7f", "a\0"])),
                min_size=1, max_size=60), st.integers(0, 3))
def test_dense_string_values_order_and_sorted_codes(values, skip):
    """Short string ids as dense mixed-radix values (core.unitorder.sortable_values, which
    _factorize_sorted counts as sorted codes): 0 <= v < R <= 4 n + 1000, ordered as the
    strings (Python order = UTF-8 byte order, NUL bytes and prefixes included) and equal
    exactly when they are; and _factorize_sorted gives pandas.factorize(sort=True)'s
    codes and labels (on a slice too)."""
    s = pd.Series(values, dtype="str").iloc[min(skip, len(values) - 1):]
    vals = list(s)
    got = sortable_values(s.array)
    if got is not None:
        v, span = got
        assert span <= 4 * len(vals) + 1000 and v.min() >= 0 and v.max() < span
        order = np.argsort(v, kind="stable")
        assert [vals[i] for i in order] == sorted(vals)
        for i in range(len(vals)):
            for j in range(len(vals)):
                assert (v[i] == v[j]) == (vals[i] == vals[j])
                assert (v[i] < v[j]) == (vals[i] < vals[j])
    if got is not None:  # the sample check never turns away ids sortable_values takes
        assert _few_byte_values(s.array)
    codes, labels = _factorize_sorted(s)
    codes0, labels0 = pd.factorize(s, sort=True)
    np.testing.assert_array_equal(codes, codes0)
    assert labels.equals(labels0) and labels.dtype == labels0.dtype


def test_dense_string_values_taken_for_zero_padded_ids():
    """The benchmark's kind of ids ("u0000123", shuffled, every label present) take the
    counting path, and its codes and labels are pandas.factorize(sort=True)'s."""
    rng = np.random.default_rng(3)
    ids = pd.Series([f"u{i:07d}" for i in rng.permutation(5000) % 1700], dtype="str")
    assert sortable_values(ids.array) is not None
    codes, labels = _factorize_sorted(ids)
    codes0, labels0 = pd.factorize(ids, sort=True)
    np.testing.assert_array_equal(codes, codes0)
    assert labels.equals(labels0) and labels.dtype == labels0.dtype


def test_wide_byte_ranges_skip_the_dense_values():
    """Random hex ids: the first rows' byte ranges already exceed the dense span, so
    sortable_values is not asked; codes and labels still pandas'."""
    rng = np.random.default_rng(4)
    ids = pd.Series([f"{x:08x}" for x in rng.integers(0, 2**32, 3000)], dtype="str")
    assert not _few_byte_values(ids.array)
    codes, labels = _factorize_sorted(ids)
    codes0, labels0 = pd.factorize(ids, sort=True)
    np.testing.assert_array_equal(codes, codes0)
    assert labels.equals(labels0)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 9), st.integers(2, 5), st.lists(st.sampled_from([0, 3, 4, 9]),
                                                     min_size=9, max_size=9),
       st.floats(0.0, 0.4), st.integers(0, 2**32 - 1), st.booleans())
def test_shuffled_rows_prepare_like_sorted_rows(n_units, n_periods, cohorts, miss, seed,
                                                unbalanced):
    """Shuffled rows (the unit x period cells seen, the units' row counts from them, the
    wide matrices by flat scatter, the per-unit cohorts) give the panel of the same rows
    sorted by unit and time (checked by one pass, counted by bincount), bit for bit:
    outcome / presence matrices, cohorts, units, dropped counts -- whether units are
    dropped to balance it or kept unbalanced."""
    import unittest.mock

    from twinimpact.core import rowblocks
    from twinimpact.estimators.callaway_santanna import _prepare

    rng = np.random.default_rng(seed)
    u, t = np.divmod(np.arange(n_units * n_periods), n_periods)
    df = pd.DataFrame({"u": u * 7 + 3, "t": t + 1, "g": np.array(cohorts)[u],
                       "y": rng.normal(size=len(u))})
    df = df[rng.random(len(df)) >= miss]
    shuffled = df.sample(frac=1.0, random_state=int(rng.integers(2**31))).reset_index(
        drop=True)
    kw = dict(outcome="y", unit="u", time="t", cohort="g", covariates=[], cluster=None,
              control_group="not_yet_treated", anticipation=0,
              allow_unbalanced=unbalanced)
    out = []
    for frame in (df.reset_index(drop=True), shuffled):
        with warnings.catch_warnings(), unittest.mock.patch.object(rowblocks, "BLOCK", 3):
            warnings.simplefilter("ignore")
            try:
                out.append(_prepare(frame, **kw))
            except Exception as e:  # (the same refusal both ways)
                out.append(repr(e))
    a, b = out
    if isinstance(a, str) or isinstance(b, str):
        assert a == b
        return
    np.testing.assert_array_equal(a.Y, b.Y)
    assert (a.present is None) == (b.present is None)
    if a.present is not None:
        np.testing.assert_array_equal(a.present, b.present)
    np.testing.assert_array_equal(a.cohort.view(np.int64), b.cohort.view(np.int64))
    np.testing.assert_array_equal(a.units, b.units)
    g = df.groupby("u")["g"].first().loc[a.units].to_numpy(dtype=float)
    g[(g == 0) | (g > df["t"].max())] = np.nan  # each kept unit's own cohort
    np.testing.assert_array_equal(a.cohort, g)
    assert a.dropped_rows == b.dropped_rows and a.dropped_units == b.dropped_units
    assert (a.n_obs, a.balanced) == (b.n_obs, b.balanced)


def test_shuffled_duplicate_pair_named_as_in_row_order(mpdta):
    """A duplicated unit x year in shuffled rows is refused, naming the first duplicated
    row's pair in the caller's row order."""
    df = mpdta.sample(frac=1.0, random_state=5).reset_index(drop=True)
    df = pd.concat([df, df.iloc[[40]]], ignore_index=True)
    u, y = df.loc[40, "countyreal"], df.loc[40, "year"]
    with pytest.raises(InputError, match=f"countyreal = {u}, year = {y}"):
        _fit(df)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([2004.0, 2006.0, 2007.0, np.inf, -3.0]), min_size=1,
                max_size=50))
def test_row_groups_as_unique_and_stable_argsort(keys):
    """The cohorts' row groups = np.unique(return_inverse) and a stable argsort."""
    from twinimpact.estimators.callaway_santanna import _RowGroups

    k = np.array(keys)
    rg = _RowGroups(k)
    values, inverse = np.unique(k, return_inverse=True)
    np.testing.assert_array_equal(rg.values, values)
    np.testing.assert_array_equal(rg.unit_group, inverse)
    order = np.argsort(inverse, kind="stable")
    assert np.array_equal(np.concatenate(rg.rows), order)
    assert [len(r) for r in rg.rows] == np.bincount(inverse).tolist()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 30), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_rows_f_and_pairs_increasing(n, T, seed):
    """_rows_f = np.asfortranarray(m[rows]); _pairs_increasing = the keys' strict
    increase (across row blocks too)."""
    import unittest.mock

    from twinimpact.core import rowblocks
    from twinimpact.estimators.callaway_santanna import _pairs_increasing, _rows_f

    rng = np.random.default_rng(seed)
    m = np.asfortranarray(rng.normal(size=(n, T)))
    rows = np.flatnonzero(rng.random(n) < 0.6)
    got = _rows_f(m, rows)
    np.testing.assert_array_equal(got, np.asfortranarray(m[rows]))
    assert got.flags.f_contiguous
    np.testing.assert_array_equal(_rows_f(m > 0, rows), m[rows] > 0)
    uc = np.sort(rng.integers(0, 4, n))
    tc = rng.integers(0, T, n)
    if rng.random() < 0.5:  # often strictly increasing
        uc, tc = np.divmod(np.sort(rng.choice(4 * T, size=min(n, 4 * T), replace=False)),
                           T)
    key = uc.astype(np.int64) * T + tc
    with unittest.mock.patch.object(rowblocks, "BLOCK", 4):
        assert _pairs_increasing(uc, tc, T) == bool(len(key) < 2
                                                     or (key[1:] > key[:-1]).all())
