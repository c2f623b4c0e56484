"""The multiplier bootstrap of callaway_santanna: its weights, and the fit's draws reused
by the aggregations.

``mammen_bootstrap`` writes the weights over its uniforms by their bit patterns; they must
be R ``BMisc::multiplier_bootstrap``'s two values exactly, from the same stream as
``rng.random((b, n))``. With an integer seed an aggregation draws the fit's weights again,
so its draws are computed from the fit's kept draws (``_BootDraws``): the same numbers as
drawing afresh, up to the order of the sums.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

from twinimpact.estimators import _cs_numerics as num
from twinimpact.estimators.callaway_santanna import callaway_santanna

from .blocked_cases import random_blocked

#: kept draws against new ones: the same products summed in another order (seen <= 9e-15)
ROUNDING = 1e-12
KW = dict(outcome="lemp", unit="countyreal", time="year", cohort="first.treat")


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 60), k=st.integers(1, 5),
       n_draws=st.integers(1, 40), chunk=st.integers(1, 300), m=st.integers(1, 4))
def test_mammen_weights_exactly_r_values(seed, n, k, n_draws, chunk, m):
    """Draws bit for bit ``np.where(u < p, low, high) @ psi / sqrt(n)`` with the uniforms
    of one ``rng.random`` call, in chunks of any size; ``extra`` gets the same weights."""
    rng = np.random.default_rng(seed)
    psi = rng.normal(size=(n, k))
    codes = rng.integers(0, m, n)
    ind = sparse.csr_matrix((np.ones(n), (np.arange(n), codes)), shape=(n, m))
    got, ext = num.mammen_bootstrap(psi, n_draws, np.random.default_rng(seed + 1),
                                    chunk_elems=chunk, extra=ind)
    u = np.random.default_rng(seed + 1).random((n_draws, n))
    v = np.where(u < num.MAMMEN_P_LOW, num.MAMMEN_LOW, num.MAMMEN_HIGH)
    step = max(1, min(n_draws, chunk // n))
    want = np.vstack([v[s:s + step] @ psi for s in range(0, n_draws, step)]) / np.sqrt(n)
    assert np.array_equal(got, want)
    sums = np.column_stack([v[:, codes == j].sum(axis=1) for j in range(m)]) / np.sqrt(n)
    np.testing.assert_allclose(ext, sums, rtol=ROUNDING, atol=ROUNDING)


@pytest.fixture(scope="module")
def mpdta() -> pd.DataFrame:
    from pathlib import Path
    d = pd.read_csv(Path(__file__).resolve().parents[1] / "data" / "mpdta" / "mpdta.csv")
    d["state"] = d["countyreal"] // 1000
    return d


def _compare(a, b) -> None:
    np.testing.assert_array_equal(a.params.to_numpy(), b.params.to_numpy())
    np.testing.assert_allclose(a.vcov.to_numpy(), b.vcov.to_numpy(), rtol=ROUNDING,
                               atol=0)
    if a.sup_t is None:
        assert b.sup_t is None
    else:
        np.testing.assert_allclose(a.sup_t, b.sup_t, rtol=ROUNDING, atol=0)


@pytest.mark.parametrize("opts", [
    {},
    {"cluster": "state"},
    {"covariates": ["lpop"], "control_group": "not_yet_treated"},
    {"base_period": "universal"},
])
@pytest.mark.parametrize("agg", ["simple", "dynamic", "group", "calendar"])
def test_kept_draws_equal_new_draws(mpdta, opts, agg):
    """Every aggregation from the kept draws equals the one that draws the weights again
    (the same result without its kept draws)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = callaway_santanna(mpdta, **KW, **opts, n_reps=199, seed=11)
        assert r.boot_draws is not None
        fresh = r.replace(boot_draws=None)
        _compare(r.aggregate(agg), fresh.aggregate(agg))
        if agg == "dynamic":  # a window: fewer cells, the same draws
            _compare(r.aggregate(agg, min_e=-2, max_e=2), fresh.aggregate(agg, min_e=-2,
                                                                          max_e=2))


def test_draws_kept_only_when_an_aggregation_would_draw_them_again(mpdta):
    """No kept draws without an integer seed; another seed or number of draws in the
    aggregation, or other clusters, draws anew (and gives what a fresh result gives)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert callaway_santanna(mpdta, **KW, n_reps=50).boot_draws is None
        assert callaway_santanna(mpdta, **KW, n_reps=50,
                                 seed=np.random.default_rng(1)).boot_draws is None
        assert callaway_santanna(mpdta, **KW).boot_draws is None
        r = callaway_santanna(mpdta, **KW, n_reps=99, seed=3)
        bd = r.boot_draws
        assert not bd.usable(r, 98, 3) and not bd.usable(r, 99, 4)
        assert not bd.usable(r, 99, None) and bd.usable(r, 99, 3)
        other = r.replace(cluster_codes=np.zeros(len(r.units), dtype=np.intp))
        assert not bd.usable(other, 99, 3)
        fresh = r.replace(boot_draws=None)
        for kw in ({"n_reps": 98}, {"seed": 4}):
            a, b = r.aggregate("dynamic", **kw), fresh.aggregate("dynamic", **kw)
            np.testing.assert_array_equal(a.vcov.to_numpy(), b.vcov.to_numpy())


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 50), K=st.integers(1, 6),
       n_groups=st.integers(1, 5), n_draws=st.integers(1, 30), chunk=st.integers(1, 200),
       with_nan=st.booleans())
def test_block_sums_equal_sparse_sums(seed, n, K, n_groups, n_draws, chunk, with_nan):
    """The weights summed per category of blocks (from the products' own gathers, or the
    compiled kernel's counts) equal the sparse-indicator sums, and the draws are those
    without sums, bit for bit (the sparse ``extra`` path draws with NumPy's gathers: the
    same weights, products to rounding)."""
    rng = np.random.default_rng(seed)
    b = random_blocked(rng, n, K, n_groups, with_nan=with_nan).freeze()
    group = np.zeros(n, dtype=np.intp)
    for j, r in enumerate(b.rows):
        group[r] = j
    cat = rng.integers(0, 3, n_groups)  # several blocks may share a category
    unit_cat = cat[group]
    ind = sparse.csr_matrix((np.ones(n), (np.arange(n), unit_cat)), shape=(n, 3))
    d1, s1 = num.mammen_bootstrap(b, n_draws, np.random.default_rng(seed), chunk_elems=chunk,
                                  block_cat=cat, n_cat=3)
    d2, s2 = num.mammen_bootstrap(b, n_draws, np.random.default_rng(seed), chunk_elems=chunk,
                                  extra=ind)
    d3 = num.mammen_bootstrap(b, n_draws, np.random.default_rng(seed), chunk_elems=chunk)
    assert np.array_equal(d1, d3)
    np.testing.assert_allclose(d2, d3, rtol=ROUNDING, atol=ROUNDING)
    np.testing.assert_allclose(s1, s2, rtol=ROUNDING, atol=ROUNDING)


@contextlib.contextmanager
def _kernel_mode(mode: str):
    """``TWINIMPACT_CSBOOT_KERNEL`` set to ``mode`` ("" = the compiled kernel drawing its
    own uniforms) for the block, then restored."""
    old = os.environ.get(num.KERNEL_ENV)
    os.environ[num.KERNEL_ENV] = mode
    try:
        yield
    finally:
        if old is None:
            del os.environ[num.KERNEL_ENV]
        else:
            os.environ[num.KERNEL_ENV] = old


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 70), K=st.integers(1, 6),
       n_groups=st.integers(1, 5), n_draws=st.integers(1, 30), chunk=st.integers(1, 400),
       with_nan=st.booleans(), cover=st.booleans(),
       gen=st.sampled_from(["pcg64", "mt19937"]))
def test_compiled_weights_are_numpy_weights(seed, n, K, n_groups, n_draws, chunk, with_nan,
                                            cover, gen):
    """The compiled split (uniforms from NumPy, or drawn in the kernel from the PCG64
    state) gives the weights of ``np.where(rng.random((B, n)) < p, low, high)``: draws
    equal to the dense product to rounding, the kernel's own uniforms bit for bit those
    of NumPy (same draws as the split of NumPy's uniforms), and the generator left where
    ``rng.random`` leaves it."""
    rng = np.random.default_rng(seed)
    b = random_blocked(rng, n, K, n_groups, with_nan=with_nan, cover=cover).freeze()
    cat = np.arange(len(b.rows))

    def make_rng():
        return (np.random.default_rng(seed + 1) if gen == "pcg64"
                else np.random.Generator(np.random.MT19937(seed + 1)))

    got = {}
    for mode in ("", "nopcg", "numpy"):
        with _kernel_mode(mode):
            r = make_rng()
            draws, sums = num.mammen_bootstrap(b, n_draws, r, chunk_elems=chunk,
                                               block_cat=cat, n_cat=len(cat))
            got[mode] = (draws, sums, r.random(3))
    assert np.array_equal(got[""][0], got["nopcg"][0])
    assert np.array_equal(got[""][1], got["nopcg"][1])
    r = make_rng()
    u = r.random((n_draws, n))
    after = r.random(3)
    w = np.where(u < num.MAMMEN_P_LOW, num.MAMMEN_LOW, num.MAMMEN_HIGH)
    want = w @ np.nan_to_num(b.dense()) / np.sqrt(n)
    want[:, b.nan_cols] = 0.0
    want_sums = np.column_stack([w[:, rows].sum(axis=1) for rows in b.rows]) / np.sqrt(n)
    for mode, (draws, sums, nxt) in got.items():
        np.testing.assert_allclose(draws, want, rtol=ROUNDING, atol=ROUNDING, err_msg=mode)
        np.testing.assert_allclose(sums, want_sums, rtol=ROUNDING, atol=ROUNDING,
                                   err_msg=mode)
        assert np.array_equal(nxt, after), mode


def test_compiled_kernel_is_built_and_draws_numpys_stream():
    """The extension is built wherever the package was installed with a C compiler (else
    the tests above compare NumPy with itself), and the PCG64 uniforms it draws are
    NumPy's bit for bit, over lengths that are not multiples of its four lanes."""
    kernel = num._split_kernel()
    if kernel is None:  # no C compiler at install: the NumPy path is the package's
        pytest.skip("twinimpact.estimators._cs_boot was not built")
    assert kernel.pcg is not None  # GCC, Clang: a 128-bit integer type
    for n, draws in ((1, 1), (3, 5), (7, 3), (1001, 2)):
        b = num.BlockedInfluence(n, 1, (np.arange(n),), (np.array([0]),),
                                 (np.ones((n, 1), order="F"),), np.zeros(1, dtype=bool))
        r = np.random.default_rng(n)
        d, s = num.mammen_bootstrap(b, draws, r, block_cat=np.array([0]), n_cat=1)
        u = np.random.default_rng(n).random((draws, n))
        lows = (u < num.MAMMEN_P_LOW).sum(axis=1)
        # the one block's weight sum: high for each unit, less (high - low) per low one
        exact = (num.MAMMEN_HIGH * n + (num.MAMMEN_LOW - num.MAMMEN_HIGH) * lows)
        np.testing.assert_allclose(s[:, 0], exact / np.sqrt(n), rtol=1e-14, atol=1e-14)
        # the draws: the same weights summed by the product (rounding of n terms ~1.6)
        np.testing.assert_allclose(d[:, 0], exact / np.sqrt(n), rtol=0, atol=ROUNDING)


def test_low_rank_blocks():
    """A block spanned by few of its columns is multiplied through its basis (products
    equal to rounding); a full-rank block, a block whose extra direction is small but
    real (1e-9 of it), an all-zero block and a narrow block are multiplied as they are."""
    rng = np.random.default_rng(5)
    n, k, r = 400, 24, 3
    low = rng.normal(size=(n, r)) @ rng.normal(size=(r, k))
    f = num._low_rank_factor(low, num.LOW_RANK_TOL)
    assert f is not None and f[0].shape == (n, r) and f[1].shape == (r, k)
    w = rng.normal(size=(9, n))
    np.testing.assert_allclose((w @ f[0]) @ f[1], w @ low, rtol=1e-12, atol=1e-12)
    assert num._low_rank_factor(rng.normal(size=(n, k)), num.LOW_RANK_TOL) is None
    tiny = low + 1e-9 * np.abs(low).max() * rng.normal(size=(n, 1)) * rng.normal(size=k)
    assert num._low_rank_factor(tiny, num.LOW_RANK_TOL) is None
    assert num._low_rank_factor(np.zeros((n, k)), num.LOW_RANK_TOL) is None
    b = num.BlockedInfluence(n, k + 4, (np.arange(n // 2), np.arange(n // 2, n)),
                             (np.arange(k), np.arange(k, k + 4)),
                             (np.asfortranarray(low[:n // 2]),
                              np.asfortranarray(rng.normal(size=(n - n // 2, 4)))),
                             np.zeros(k + 4, dtype=bool))
    fs = b.low_rank()
    assert fs[0] is not None and fs[1] is None  # 4 columns: below LOW_RANK_MIN_COLS
    wide = rng.normal(size=(5, n))
    np.testing.assert_allclose(b.parts_matmul(5, lambda j: wide[:, b.rows[j]], factors=fs),
                               wide @ b.dense(), rtol=1e-12, atol=1e-12)


def _staggered(n_units=1000, T=12, seed=0) -> pd.DataFrame:
    """A complete panel, 4 cohorts and never-treated units, effects growing with time."""
    rng = np.random.default_rng(seed)
    g = rng.choice([0, 4, 6, 8, 10], size=n_units)
    unit = np.repeat(np.arange(n_units), T)
    year = np.tile(np.arange(1, T + 1), n_units)
    gu = g[unit]
    y = (rng.normal(size=n_units)[unit] + 0.1 * year + rng.normal(size=n_units * T)
         + np.where((gu > 0) & (year >= gu), 0.5 + 0.1 * (year - gu), 0.0))
    return pd.DataFrame({"unit": unit, "year": year, "g": gu, "y": y})


def test_never_treated_block_is_low_rank():
    """Without covariates a cell's influence function on the never-treated units is a
    combination of their outcomes and a constant: that block is used through its basis
    (rank <= periods + 1, not its 44 cells), and the bootstrap SEs of the fit and its
    aggregations equal those of the plain products (NumPy path) to rounding."""
    from twinimpact.estimators import callaway_santanna as cs_mod

    d = _staggered()
    kw = dict(outcome="y", unit="unit", time="year", cohort="g", n_reps=199, seed=2)
    seen = []
    real = num.mammen_bootstrap

    def spy(psi, *a, **k):
        if isinstance(psi, num.BlockedInfluence):
            b = psi.nan_to_num()
            seen.extend((V.shape[1], None if f is None else f[0].shape[1])
                        for V, f in zip(b.values, b.low_rank(), strict=True))
        return real(psi, *a, **k)

    cs_mod.num.mammen_bootstrap = spy
    try:
        fit = callaway_santanna(d, **kw)
    finally:
        cs_mod.num.mammen_bootstrap = real
    assert (44, None) not in seen and any(c == 44 and r <= 13 for c, r in seen), seen
    with _kernel_mode("numpy"):
        plain = callaway_santanna(d, **kw)
    for a, b in [(fit, plain)] + [(fit.aggregate(t), plain.aggregate(t))
                                  for t in ("simple", "dynamic", "group")]:
        np.testing.assert_allclose(a.std_errors.to_numpy(), b.std_errors.to_numpy(),
                                   rtol=1e-10, atol=0)
