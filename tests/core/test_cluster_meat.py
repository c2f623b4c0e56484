"""The clustered meat ``S'S`` accumulated over blocks of clusters
(:meth:`TwoWayOLSFit.cluster_meat`, which never forms the (clusters x columns) table of
score sums) against a slow, obviously correct oracle: the dense design swept by
alternating projections, least squares, per-observation scores, an explicit loop over the
clusters and ``S'S`` of the whole table. Balanced and unbalanced panels, weights, sorted
and shuffled rows, dense and sparse unit parts, clusters equal to, nesting, or crossing
the units, and the intersection clusters of two-way clustering."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import twinimpact as ti
from twinimpact.core import fe as _fe
from twinimpact.core.vcov import _intersection_codes

#: the blocked meat adds the clusters' outer products in another order than ``S'S`` of
#: the whole table (and than the oracle's dense scores): equal to rounding, relative to
#: the largest entry
RTOL = 1e-12


def _panel(n_units: int, n_periods: int, seed: int, *, drop: float = 0.0,
           shuffle: bool = False, weighted: bool = False, q: int = 1):
    """Staggered panel: cohort x relative-period indicator codes (the Sun-Abraham design),
    ``q`` dense columns, optional missing rows (and units entering late), row order and
    weights."""
    rng = np.random.default_rng(seed)
    u = np.repeat(np.arange(n_units), n_periods)
    t = np.tile(np.arange(n_periods), n_units)
    keep = rng.random(len(u)) >= drop
    if drop:
        keep &= t >= rng.integers(0, 2, n_units)[u]
    assume(keep.any())  # (a drawn panel may lose every row: nothing to test there)
    u, t = pd.factorize(u[keep])[0], pd.factorize(t[keep], sort=True)[0]
    n_units = int(u.max()) + 1
    cohort = rng.integers(1, n_periods + 2, n_units)  # n_periods + 1: never treated
    g = cohort[u]
    rel = t - g
    cell = np.where((g <= n_periods) & (rel != -1), g * (2 * n_periods + 2) + rel, -1)
    levels, pos = np.unique(cell[cell >= 0], return_inverse=True)
    onehot = np.full(len(u), -1, dtype=np.intp)
    onehot[cell >= 0] = pos
    z = rng.normal(size=(len(u), q)) + rng.normal(size=n_units)[u][:, None]
    y = (rng.normal(size=n_units)[u] + 0.3 * t + 0.5 * (onehot >= 0)
         + z.sum(axis=1) + rng.normal(size=len(u)))
    w = rng.uniform(0.5, 2.0, len(u)) if weighted else None
    if shuffle:
        o = rng.permutation(len(u))
        u, t, onehot, z, y = u[o], t[o], onehot[o], z[o], y[o]
        w = None if w is None else w[o]
    return y, u, t, onehot, len(levels), z, w


def _fit(y, u, t, onehot, p, z, w):
    n_u, n_t = int(u.max()) + 1, int(t.max()) + 1
    if w is None and _fe.is_balanced_twoway(u, t, n_u, n_t):
        return _fe.ols_twoway_balanced(y, u, t, onehot=onehot, n_onehot=p, z=z)
    proj = _fe.two_way_projector([u, t], w)  # its large set plays the units
    assume(proj is not None)  # (else the fit takes the dense design, no cluster_meat)
    return _fe.ols_twoway_small_time(y, proj.big.codes, proj.small.codes, proj,
                                     onehot=onehot, n_onehot=p, z=z, weights=w)


def _dense_scores(y, u, t, onehot, p, z, w, kept):
    """Oracle scores ``(M x_i) w_i e_i`` of the kept columns: dense design, alternating
    projections (a constant third FE set forces the iterative path), weighted least
    squares by lstsq."""
    n = len(y)
    x = np.zeros((n, p + z.shape[1]))
    rows = np.flatnonzero(onehot >= 0)
    x[rows, onehot[rows]] = 1.0
    x[:, p:] = z
    x = x[:, kept]
    fes = [u, t, np.zeros_like(u)]
    xd = _fe.demean(x, fes, weights=w, tol=1e-14, maxiter=100_000).x
    yd = _fe.demean(y, fes, weights=w, tol=1e-14, maxiter=100_000).x
    sw = np.ones(n) if w is None else np.sqrt(w)
    b = np.linalg.lstsq(xd * sw[:, None], yd * sw, rcond=None)[0]
    e = yd - xd @ b
    return xd * ((np.ones(n) if w is None else w) * e)[:, None]


def _loop_meat(scores, codes):
    """``sum_g s_g s_g'`` with ``s_g`` summed over the rows of cluster g, one by one."""
    meat = np.zeros((scores.shape[1], scores.shape[1]))
    for c in np.unique(codes):
        s = scores[codes == c].sum(axis=0)
        meat += np.outer(s, s)
    return meat


def _close(a, b, rtol=RTOL):
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * np.max(np.abs(b)))


def _clusterings(u, t, seed):
    rng = np.random.default_rng(seed)
    n_u = int(u.max()) + 1
    return {
        "unit": u,
        "time": t,
        "state": pd.factorize((rng.permutation(n_u) // 3)[u])[0],      # nests units
        "random": pd.factorize(rng.integers(0, 40, len(u)))[0],        # crosses units
        "unit x time": _intersection_codes([u, t]),                    # two-way part
    }


@pytest.mark.parametrize("case", [
    dict(),                                            # balanced, rows sorted by unit
    dict(shuffle=True),                                # balanced, rows in random order
    dict(drop=0.15),                                   # unbalanced (gaps, late entry)
    dict(drop=0.15, shuffle=True, weighted=True),      # unbalanced, weighted, shuffled
    dict(weighted=True, q=0),                          # weighted balanced, no covariate
])
@pytest.mark.parametrize("sparse_unit_part", [False, True])
def test_blocked_meat_equals_dense_oracle(monkeypatch, case, sparse_unit_part):
    if sparse_unit_part:
        monkeypatch.setattr(_fe, "_DENSE_CELLS_MAX", 0)
    y, u, t, onehot, p, z, w = _panel(45, 6, seed=len(case) + 7 * sparse_unit_part, **case)
    fit = _fit(y, u, t, onehot, p, z, w)
    if sparse_unit_part and (w is not None or not _fe.is_balanced_twoway(
            u, t, int(u.max()) + 1, int(t.max()) + 1)):
        pass  # the small-period-set fit keeps its unit part dense
    elif sparse_unit_part:
        assert hasattr(fit.unit_part, "toarray")
    scores = _dense_scores(y, u, t, onehot, p, z, w, fit.kept)
    for name, codes in _clusterings(u, t, seed=3).items():
        want = _loop_meat(scores, codes)
        whole = fit.cluster_meat(codes)                 # one block: S'S of the table
        for cells in (1, 64, 1 << 20):                  # 1: one cluster per block
            monkeypatch.setattr(_fe, "_MEAT_BLOCK_CELLS", cells)
            got = fit.cluster_meat(codes)
            assert got.shape == want.shape, name
            np.testing.assert_array_equal(got, got.T)   # exactly symmetric
            _close(got, want)
            _close(got, whole)


@settings(max_examples=30, deadline=None)
@given(n_units=st.integers(2, 30), n_periods=st.integers(2, 7), n_cl=st.integers(1, 50),
       drop=st.sampled_from([0.0, 0.2]), shuffle=st.booleans(), weighted=st.booleans(),
       cells=st.integers(1, 300), seed=st.integers(0, 10_000))
def test_blocked_meat_property(n_units, n_periods, n_cl, drop, shuffle, weighted, cells,
                               seed):
    """Any block size, any clustering, any row order: the blocked meat is ``S'S`` of the
    whole table of cluster sums."""
    y, u, t, onehot, p, z, w = _panel(n_units, n_periods, seed, drop=drop, shuffle=shuffle,
                                      weighted=weighted)
    fit = _fit(y, u, t, onehot, p, z, w)
    rng = np.random.default_rng(seed)
    for codes in (u, pd.factorize(rng.integers(0, n_cl, len(u)))[0],
                  pd.factorize(rng.integers(0, n_cl, int(u.max()) + 1)[u])[0]):
        s = fit.cluster_sums(codes)
        want = s.T @ s
        old = _fe._MEAT_BLOCK_CELLS
        _fe._MEAT_BLOCK_CELLS = cells
        try:
            got = fit.cluster_meat(codes)
        finally:
            _fe._MEAT_BLOCK_CELLS = old
        if want.size:
            _close(got, want, rtol=1e-11)  # tiny random panels: small, cancelling entries
        else:
            assert got.shape == (0, 0)


def _staggered_frame(seed: int, *, strings: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_u, n_t = 60, 8
    unit = np.repeat(np.arange(n_u), n_t)
    year = np.tile(np.arange(2000, 2000 + n_t), n_u)
    cohort = rng.choice([2003.0, 2004.0, 2006.0, np.nan], n_u)[unit]
    keep = rng.random(len(unit)) > 0.1
    d = pd.DataFrame({"unit": unit, "year": year, "cohort": cohort,
                      "state": (unit % 7), "y": rng.normal(size=len(unit))
                      + 0.8 * (year >= np.nan_to_num(cohort, nan=1e9))})[keep]
    if strings:
        d["unit"] = "city-" + d["unit"].astype(str)
        d["state"] = "st-" + d["state"].astype(str)
    return d.sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.mark.parametrize("cluster", ["unit", "state", ("unit", "year"), ("state", "year")])
@pytest.mark.parametrize("strings", [False, True])
def test_estimators_same_variance_with_tiny_blocks(monkeypatch, cluster, strings):
    """Sun-Abraham and the TWFE event study, shuffled unbalanced panels with string or
    integer ids: the variance with one cluster per block equals the one-block variance."""
    d = _staggered_frame(4, strings=strings)
    kw = dict(outcome="y", unit="unit", time="year", cohort="cohort", cluster=cluster)

    def fits():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dropped rows, as the estimators say
            sa = ti.sun_abraham(d, **kw)
            es = ti.event_study(d, **kw)
        return sa.vcov.to_numpy(), es.vcov.to_numpy(), sa.params.to_numpy()

    monkeypatch.setattr(_fe, "_MEAT_BLOCK_CELLS", 1 << 30)
    one = fits()
    monkeypatch.setattr(_fe, "_MEAT_BLOCK_CELLS", 1)
    blocked = fits()
    np.testing.assert_array_equal(blocked[2], one[2])
    for a, b in zip(blocked[:2], one[:2], strict=True):
        ok = np.isfinite(b)
        np.testing.assert_array_equal(np.isfinite(a), ok)
        _close(a[ok], b[ok])



@pytest.mark.parametrize("syrk", [0.0, 1e12])  # A_u'A_u from the sparse product / syrk
@pytest.mark.parametrize("n_periods", [6, 300])  # one- and two-byte count tables
def test_lean_unit_count_table_is_the_coo_one(monkeypatch, syrk, n_periods):
    """The (units x cells) counts read from a small-integer table are the matrix the
    n-entry COO build gave, and ``A_u'A_u`` the same exact integers: the fit and the
    meat are bit-identical."""
    monkeypatch.setattr(_fe, "_DENSE_CELLS_MAX", 0)
    y, u, t, onehot, p, z, _ = _panel(40 if n_periods == 6 else 3, n_periods, seed=5)
    if n_periods == 300:  # many rows of a unit in one cell: counts above 255, and
        # many (mostly empty, dropped) columns so that the unit table is the sparse one
        onehot = np.where(onehot >= 0, onehot % 3, -1)
        p = 700
    monkeypatch.setattr(_fe, "_SYRK_OVER_SPARSE", syrk)
    monkeypatch.setattr(_fe, "_COUNT_BLOCK_CELLS", 37)
    lean = _fe.ols_twoway_balanced(y, u, t, onehot=onehot, n_onehot=p, z=z)
    assert lean.unit_part.nnz and hasattr(lean.unit_part, "toarray")
    monkeypatch.setattr(_fe, "_unit_counts_csr", lambda *a: None)
    coo = _fe.ols_twoway_balanced(y, u, t, onehot=onehot, n_onehot=p, z=z)
    assert (lean.unit_part != coo.unit_part).nnz == 0
    np.testing.assert_array_equal(lean.unit_part.indices, coo.unit_part.indices)
    np.testing.assert_array_equal(lean.unit_part.indptr, coo.unit_part.indptr)
    for a in ("coef", "bread", "resid"):
        np.testing.assert_array_equal(getattr(lean, a), getattr(coo, a))
    np.testing.assert_array_equal(lean.cluster_meat(u), coo.cluster_meat(u))
