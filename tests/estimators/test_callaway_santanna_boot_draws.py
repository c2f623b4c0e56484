"""The multiplier bootstrap of callaway_santanna: its weights, and the fit's draws reused
by the aggregations.

``mammen_bootstrap`` writes the weights over its uniforms by their bit patterns; they must
be R ``BMisc::multiplier_bootstrap``'s two values exactly, from the same stream as
``rng.random((b, n))``. With an integer seed an aggregation draws the fit's weights again,
so its draws are computed from the fit's kept draws (``_BootDraws``): the same numbers as
drawing afresh, up to the order of the sums.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

from twinimpact.estimators import _cs_numerics as num
from twinimpact.estimators.callaway_santanna import callaway_santanna

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
    """The weights summed per category of blocks (from the products' own gathers) equal
    the sparse-indicator sums, and the draws are those without sums, bit for bit."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, n_groups, n)
    rows, cols, vals = [], [], []
    for j in range(n_groups):
        r = np.flatnonzero(group == j)
        c = np.flatnonzero(rng.random(K) < 0.6)
        rows.append(r)
        cols.append(c)
        v = rng.normal(size=(len(r), len(c)))
        if with_nan and v.size:
            v[0, 0] = np.nan
        vals.append(np.asfortranarray(v))
    b = num.BlockedInfluence(n, K, tuple(rows), tuple(cols), tuple(vals),
                             rng.random(K) < 0.2).freeze()
    cat = rng.integers(0, 3, n_groups)  # several blocks may share a category
    unit_cat = cat[group]
    ind = sparse.csr_matrix((np.ones(n), (np.arange(n), unit_cat)), shape=(n, 3))
    d1, s1 = num.mammen_bootstrap(b, n_draws, np.random.default_rng(seed), chunk_elems=chunk,
                                  block_cat=cat, n_cat=3)
    d2, s2 = num.mammen_bootstrap(b, n_draws, np.random.default_rng(seed), chunk_elems=chunk,
                                  extra=ind)
    d3 = num.mammen_bootstrap(b, n_draws, np.random.default_rng(seed), chunk_elems=chunk)
    assert np.array_equal(d1, d3) and np.array_equal(d2, d3)
    np.testing.assert_allclose(s1, s2, rtol=ROUNDING, atol=ROUNDING)
