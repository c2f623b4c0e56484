"""Fixed-effect kernels: the balanced two-way fast path against slow, obviously correct
oracles (alternating projections on the dense design, explicit per-cluster loops), the
shared normal-equation solver, FE degrees of freedom, dense codes and the sandwich with
per-cluster score sums."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinimpact.core import fe as _fe
from twinimpact.core.fe import (
    demean,
    fe_dof,
    is_balanced_twoway,
    ols,
    ols_twoway_balanced,
    solve_normal,
)
from twinimpact.core.validation import dense_codes, prepare_panel
from twinimpact.core.vcov import _intersection_codes, sandwich
from twinimpact.errors import InputError

#: fast path vs dense oracle: both are exact projections; only the order of floating-point
#: sums differs, so agreement is at rounding level relative to the largest entry
RTOL = 1e-12
#: alternating projections stop when a sweep changes a column by < 1e-10 of its scale;
#: on a balanced panel one sweep is exact, the second only adds rounding
MAP_TOL = 1e-14


def _panel(n_units: int, n_periods: int, p: int, q: int, seed: int, *, shuffle: bool = True,
           absorbed: bool = False):
    """Balanced panel in random row order with indicator codes, dense columns, outcome."""
    rng = np.random.default_rng(seed)
    u = np.repeat(np.arange(n_units), n_periods)
    t = np.tile(np.arange(n_periods), n_units)
    onehot = rng.integers(-1, p, size=len(u))
    if absorbed and p > 1:
        # indicator p-1 is "unit < 2": a unit fixed effect, so it must be dropped
        onehot = np.where(onehot == p - 1, -1, onehot)
        onehot = np.where(u < 2, p - 1, onehot)
    z = rng.normal(size=(len(u), q)) + 3.0 * rng.normal(size=n_units)[u][:, None]
    y = (rng.normal(size=n_units)[u] + rng.normal(size=n_periods)[t]
         + 0.5 * (onehot >= 0) + z.sum(axis=1) + rng.normal(size=len(u)))
    if shuffle:
        perm = rng.permutation(len(u))
        u, t, onehot, z, y = u[perm], t[perm], onehot[perm], z[perm], y[perm]
    return u, t, onehot, z, y


def _dense_design(onehot: np.ndarray, p: int, z: np.ndarray) -> np.ndarray:
    x = np.zeros((len(onehot), p + z.shape[1]))
    rows = np.flatnonzero(onehot >= 0)
    x[rows, onehot[rows]] = 1.0
    x[:, p:] = z
    return x


def _map_demean(v: np.ndarray, u: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Alternating projections (a third, constant FE set forces the iterative path)."""
    return demean(v, [u, t, np.zeros_like(u)], tol=MAP_TOL).x


def _oracle(y, u, t, onehot, p, z):
    """Dense design, MAP-demeaned, least squares by lstsq on the kept columns."""
    x = _dense_design(onehot, p, z)
    xd = _map_demean(x, u, t)
    yd = _map_demean(y, u, t)
    n = len(y)
    ref_ss = np.einsum("ij,ij->j", x, x) - n * x.mean(axis=0) ** 2
    fit = ols(xd, yd, ref_ss=ref_ss)
    kept = fit.kept
    coef = np.full(x.shape[1], np.nan)
    coef[kept] = np.linalg.lstsq(xd[:, kept], yd, rcond=None)[0]
    resid = yd - xd[:, kept] @ coef[kept]
    return coef, resid, kept, xd[:, kept] * resid[:, None], np.linalg.inv(
        xd[:, kept].T @ xd[:, kept]), float(yd @ yd)


def _loop_cluster_sums(scores: np.ndarray, codes: np.ndarray) -> np.ndarray:
    out = np.zeros((int(codes.max()) + 1, scores.shape[1]))
    for g in np.unique(codes):
        out[g] = scores[codes == g].sum(axis=0)
    return out


def _close(a, b, rtol=RTOL):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    scale = max(1.0, float(np.nanmax(np.abs(b)))) if np.isfinite(b).any() else 1.0
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(np.nan_to_num(a), np.nan_to_num(b), rtol=0, atol=rtol * scale)


def _cluster_variants(u, t, seed):
    rng = np.random.default_rng(seed + 1)
    n_units = int(u.max()) + 1
    state = dense_codes((np.arange(n_units) // 3)[u])[0]          # nests units
    random_cl = rng.integers(0, 7, size=len(u))                   # crosses units and periods
    return {"unit": u, "time": t, "state": state,
            "random": dense_codes(random_cl)[0], "obs": None}


@pytest.mark.parametrize("shape", [(30, 6, 5, 0), (25, 4, 3, 2), (12, 9, 8, 1), (40, 2, 1, 0)])
def test_balanced_fast_path_equals_dense_map_oracle(shape):
    n_units, n_periods, p, q = shape
    u, t, onehot, z, y = _panel(n_units, n_periods, p, q, seed=sum(shape))
    fit = ols_twoway_balanced(y, u, t, onehot=onehot, n_onehot=p, z=z)
    coef, resid, kept, scores, bread, yd_ss = _oracle(y, u, t, onehot, p, z)
    np.testing.assert_array_equal(fit.kept, kept)
    _close(fit.coef, coef)
    _close(fit.resid, resid)
    _close(fit.bread[np.ix_(kept, kept)], bread)
    assert fit.yd_ss == pytest.approx(yd_ss, rel=RTOL)
    for codes in _cluster_variants(u, t, sum(shape)).values():
        want = scores if codes is None else _loop_cluster_sums(scores, codes)
        _close(fit.cluster_sums(codes), want)


def test_rounding_left_in_the_fe_space_does_not_leak_into_the_normal_equations():
    # large unit/period levels (y ~ 1e6 + noise): the demeaning must not subtract raw
    # period means of that size, and its rounding residue in the FE space must not enter
    # D'My (as (MD)'My would annihilate it); with either mistake coefficients lose ~5
    # digits (seen: 7e-11 instead of 7e-16 off a long-double solution)
    u, t, onehot, z, y = _panel(30, 6, 5, 1, seed=21)
    y = y + 1e6 * (1 + u) + 3e5 * t
    fit = ols_twoway_balanced(y, u, t, onehot=onehot, n_onehot=5, z=z)
    coef, *_ = _oracle(y, u, t, onehot, 5, z)
    _close(fit.coef, coef, rtol=1e-13)


def test_indicator_absorbed_by_unit_fe_is_dropped():
    u, t, onehot, z, y = _panel(20, 5, 4, 1, seed=3, absorbed=True)
    fit = ols_twoway_balanced(y, u, t, onehot=onehot, n_onehot=4, z=z)
    coef, _, kept, scores, _, _ = _oracle(y, u, t, onehot, 4, z)
    assert not fit.kept[3] and not kept[3]
    assert np.isnan(fit.coef[3])
    _close(fit.coef, coef)
    _close(fit.cluster_sums(u), _loop_cluster_sums(scores, u))
    assert fit.cluster_sums(u).shape == (20, 4)


def test_sparse_count_tables_give_the_same_fit(monkeypatch):
    u, t, onehot, z, y = _panel(15, 6, 5, 1, seed=11)
    dense_fit = ols_twoway_balanced(y, u, t, onehot=onehot, n_onehot=5, z=z)
    monkeypatch.setattr(_fe, "_DENSE_CELLS_MAX", 0)
    # 2 * n cells still fit densely; a long indicator list does not
    sparse_fit = ols_twoway_balanced(y, u, t, onehot=onehot, n_onehot=5, z=z)
    _close(sparse_fit.coef, dense_fit.coef, rtol=1e-13)
    many = np.where(onehot >= 0, onehot + 5 * (u % 40), -1)  # up to 200 indicator codes
    p = int(many.max()) + 1
    fit = ols_twoway_balanced(y, u, t, onehot=many, n_onehot=p, z=z)
    assert hasattr(fit.unit_counts, "toarray")
    coef, _, kept, scores, _, _ = _oracle(y, u, t, many, p, z)
    np.testing.assert_array_equal(fit.kept, kept)
    _close(fit.coef, coef)
    whole = []
    # clusters = units, crossed, nesting units, rows (one array each: keyed by position, as
    # id() of a fresh `u // 3` in each loop was sometimes another object's: KeyError)
    kinds = (u, t, u // 3, None)
    for codes in kinds:
        want = scores if codes is None else _loop_cluster_sums(scores, codes)
        whole.append(fit.cluster_sums(codes))
        _close(whole[-1], want)
    # the sparse unit part subtracted a few rows at a time: the same numbers to the bit
    monkeypatch.setattr(_fe, "_SPARSE_BLOCK_CELLS", 7)
    for codes, before in zip(kinds, whole, strict=True):
        np.testing.assert_array_equal(fit.cluster_sums(codes), before)


@settings(max_examples=25, deadline=None)
@given(n_units=st.integers(2, 25), n_periods=st.integers(2, 8), p=st.integers(1, 6),
       q=st.integers(0, 2), seed=st.integers(0, 10_000))
def test_fast_path_property(n_units, n_periods, p, q, seed):
    u, t, onehot, z, y = _panel(n_units, n_periods, p, q, seed)
    fit = ols_twoway_balanced(y, u, t, onehot=onehot, n_onehot=p, z=z)
    coef, resid, kept, scores, _, _ = _oracle(y, u, t, onehot, p, z)
    np.testing.assert_array_equal(fit.kept, kept)
    _close(fit.coef, coef, rtol=1e-9)  # tiny random panels can be ill-conditioned
    _close(fit.resid, resid, rtol=1e-9)
    for codes in (u, t):
        _close(fit.cluster_sums(codes), _loop_cluster_sums(scores, codes), rtol=1e-9)


def test_closed_form_demean_equals_alternating_projections():
    u, t, onehot, z, y = _panel(30, 7, 4, 3, seed=5)
    x = np.column_stack([y, _dense_design(onehot, 4, z)])
    closed = demean(x, [u, t])
    assert closed.iterations == 1
    _close(closed.x, _map_demean(x, u, t), rtol=1e-12)
    _close(_fe._twoway_project(y, u, t, 30, 7), closed.x[:, 0], rtol=1e-12)


def test_is_balanced_twoway():
    u, t = np.repeat(np.arange(3), 2), np.tile(np.arange(2), 3)
    assert is_balanced_twoway(u, t, 3, 2)
    assert not is_balanced_twoway(u[:-1], t[:-1], 3, 2)          # a missing cell
    t2 = t.copy()
    t2[1] = 0                                                    # a duplicated cell
    assert not is_balanced_twoway(u, t2, 3, 2)


def test_fe_dof_balanced_shortcut_is_exact():
    u, t, *_ = _panel(10, 4, 1, 0, seed=1)
    state = dense_codes((np.arange(10) // 3)[u])[0]
    for cl in ((), (u,), (t,), (state,), (u, t)):
        assert fe_dof([u, t], cl, balanced=True) == fe_dof([u, t], cl)


def test_solve_normal_matches_ols_and_lstsq():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 4))
    x[:, 3] = x[:, 0] - 2 * x[:, 1]                             # collinear
    y = x[:, :3] @ [1.0, -0.5, 2.0] + rng.normal(size=200)
    fit = ols(x, y)
    coef, bread, kept = solve_normal(x.T @ x, x.T @ y)
    np.testing.assert_array_equal(kept, [True, True, True, False])
    np.testing.assert_array_equal(fit.kept, kept)
    _close(coef, fit.coef, rtol=1e-14)
    _close(coef[:3], np.linalg.lstsq(x[:, :3], y, rcond=None)[0], rtol=1e-12)
    _close(bread[:3, :3], np.linalg.inv(x[:, :3].T @ x[:, :3]), rtol=1e-12)


def test_sandwich_with_cluster_sums_equals_scores():
    u, t, onehot, z, y = _panel(20, 5, 3, 1, seed=8)
    fit = ols_twoway_balanced(y, u, t, onehot=onehot, n_onehot=3, z=z)
    _, _, kept, scores, _, _ = _oracle(y, u, t, onehot, 3, z)
    bread = fit.bread[np.ix_(kept, kept)]
    kw = dict(n=len(y), k=30, k_nested=19)
    for kind, codes in (("cluster", [u]), ("cluster", [u, t]), ("hetero", [])):
        v1, s1 = sandwich(scores, bread, kind=kind, cluster_codes=codes, **kw)
        v2, s2 = sandwich(None, bread, kind=kind, cluster_codes=codes,
                          cluster_sums=fit.cluster_sums, **kw)
        _close(v2, v1)
        assert s1 == s2
    with pytest.raises(ValueError, match="scores or cluster_sums"):
        sandwich(None, bread, kind="cluster", cluster_codes=[u], **kw)


@pytest.mark.parametrize("values", [
    np.array([5, 3, 5, 9, 3]),
    np.array([2001.0, 2003.0, 2001.0, 2002.0]),
    np.array([1.5, 2.0, 1.5]),
    np.array(["b", "a", "b", None], dtype=object),
    np.array([-(2**62), 2**62, 0, 2**62]),
    np.array([10**9, 7, 10**9], dtype=np.int64),
])
def test_dense_codes_partition_equals_factorize(values):
    codes, n = dense_codes(values)
    ref, uniq = pd.factorize(values)
    assert n == len(uniq) and codes.max() == n - 1
    np.testing.assert_array_equal(codes < 0, ref < 0)
    ok = ref >= 0
    # same partition: the pairs (code, ref) are one-to-one
    pairs = set(zip(codes[ok].tolist(), ref[ok].tolist(), strict=True))
    assert len(pairs) == n == len({a for a, _ in pairs}) == len({b for _, b in pairs})


def test_prepare_panel_codes_match_frame_and_errors():
    d = pd.DataFrame({"id": ["b", "a", "b", "a", "c", "c"], "year": [2, 1, 1, 2, 1, 2],
                      "y": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0], "g": [0, 2, 0, 2, 0, 0]})
    with pytest.warns(Warning, match="dropped 1 row"):
        p = prepare_panel(d, outcome="y", unit="id", time="year", cohort="g")
    f = p.frame
    assert len(f) == 5
    for col, codes in (("unit", p.unit_codes), ("time", p.time_codes)):
        assert codes.max() + 1 == f[col].nunique()
        for lab in f[col].unique():
            assert len(set(codes[(f[col] == lab).to_numpy()])) == 1
    dup = pd.concat([d, d.iloc[[1]]]).fillna(0.0)
    with pytest.raises(InputError, match="2 rows share a id x year pair"):
        prepare_panel(dup, outcome="y", unit="id", time="year")
    bad = d.fillna(0.0).assign(g=[0, 2, 0, 1, 0, 0])
    with pytest.raises(InputError, match=r"varies within unit \(1 unit"):
        prepare_panel(bad, outcome="y", unit="id", time="year", cohort="g")


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=2, max_size=3), n=st.integers(1, 300),
       seed=st.integers(0, 10_000))
def test_intersection_codes_equal_row_unique(sizes, n, seed):
    rng = np.random.default_rng(seed)
    codes = [rng.integers(0, s, size=n) for s in sizes]
    want = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)[1].reshape(-1)
    np.testing.assert_array_equal(_intersection_codes(codes), want)


# ------------------------------------------- unbalanced panels: exact small-time projection
def _unbalanced(seed: int, n_units: int = 60, n_periods: int = 9, drop: float = 0.15):
    """Unbalanced panel: random rows dropped, some units entering late / leaving early."""
    rng = np.random.default_rng(seed)
    u = np.repeat(np.arange(n_units), n_periods)
    t = np.tile(np.arange(n_periods), n_units)
    first = rng.integers(0, 3, n_units)
    last = n_periods - 1 - rng.integers(0, 3, n_units)
    keep = (rng.random(len(u)) > drop) & (t >= first[u]) & (t <= last[u])
    u, t = u[keep], t[keep]
    u = pd.factorize(u)[0]
    return u, t, rng


def _dummy_residuals(v, u, t, w=None):
    """Slow oracle: residuals of a regression on all unit and period dummies."""
    n_u, n_t = u.max() + 1, t.max() + 1
    x = np.zeros((len(u), n_u + n_t))
    x[np.arange(len(u)), u] = 1.0
    x[np.arange(len(u)), n_u + t] = 1.0
    sw = np.ones(len(u)) if w is None else np.sqrt(w)
    beta = np.linalg.lstsq(x * sw[:, None], v * sw.reshape(-1, *([1] * (v.ndim - 1))),
                           rcond=None)[0]
    return v - x @ beta


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_small_set_projection_equals_dummy_regression(seed, weighted):
    u, t, rng = _unbalanced(seed)
    x = rng.normal(size=(len(u), 3)) * [1.0, 100.0, 1e-3] + [0.0, 5e3, 0.0]
    w = rng.uniform(0.2, 3.0, len(u)) if weighted else None
    proj = _fe.two_way_projector([u, t], w)
    assert proj is not None and proj.ok and proj.n_null == 1
    oracle = _dummy_residuals(x, u, t, w)
    got = demean(x, [u, t], weights=w)
    assert got.iterations == 1 and got.converged
    np.testing.assert_allclose(got.x, oracle, rtol=0, atol=1e-10 * np.abs(x).max())
    slow = demean(x, [u, t], weights=w, exact_two_way=False)
    assert slow.iterations > 1
    np.testing.assert_allclose(got.x, slow.x, rtol=0, atol=1e-8 * np.abs(x).max())


def test_small_set_projection_with_disconnected_blocks():
    """Two groups of units observed in disjoint periods: two null directions of S."""
    u = np.r_[np.repeat(np.arange(5), 4), np.repeat(np.arange(5, 9), 3)]
    t = np.r_[np.tile(np.arange(4), 5), np.tile(np.arange(4, 7), 4)]
    y = np.random.default_rng(3).normal(size=len(u))
    proj = _fe.two_way_projector([u, t])
    assert proj.n_null == 2
    np.testing.assert_allclose(demean(y, [u, t]).x, _dummy_residuals(y, u, t), atol=1e-12)


@pytest.mark.parametrize("mode", ["dense", "lean", "weighted"])
@pytest.mark.parametrize(("seed", "way"), [(0, None), (4, None), (1, True), (2, False)])
def test_small_time_ols_equals_dense_projection_path(monkeypatch, seed, way, mode):
    """ols_twoway_small_time (indicators never demeaned) = dense design + alternating
    projections + ols; cluster score sums = explicit per-cluster sums of the dense scores.
    ``way``: the products with the unit x period table forced through small dense blocks
    of units (True) or scipy's sparse kernels (False); None: the size rule. ``mode``: the
    dense unit table, the lean one (CSR counts, lazy H), or weighted (WLS)."""
    if way is not None:
        monkeypatch.setattr(_fe, "_GRAM_BLOCK_CELLS", 40)
        monkeypatch.setattr(_fe, "_dense_cells", lambda c: way)
    if mode == "lean":
        monkeypatch.setattr(_fe, "_DENSE_UNIT_PART_MAX", 0)
    u, t, rng = _unbalanced(seed, n_units=80)
    n, p = len(u), 6
    onehot = np.where(rng.random(n) < 0.6, rng.integers(0, p, n), -1)
    z = rng.normal(size=(n, 2)) + 0.1 * t[:, None]
    y = rng.normal(size=n) + 0.5 * (onehot == 2) + 0.2 * u
    w = rng.uniform(0.2, 3.0, n) if mode == "weighted" else None
    proj = _fe.two_way_projector([u, t], weights=w)
    fit = _fe.ols_twoway_small_time(y, u, t, proj, onehot=onehot, n_onehot=p, z=z,
                                    weights=w)
    assert isinstance(fit.unit_part, _fe._UnitPart) is (mode == "lean")
    dense = np.zeros((n, p))
    rows = np.flatnonzero(onehot >= 0)
    dense[rows, onehot[rows]] = 1.0
    xx = np.column_stack([dense, z])
    dm = demean(np.column_stack([y, xx]), [u, t], weights=w, tol=1e-14,
                exact_two_way=False)
    ref = ols(dm.x[:, 1:], dm.x[:, 0], weights=w)
    np.testing.assert_array_equal(fit.kept, ref.kept)
    np.testing.assert_allclose(fit.coef, ref.coef, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fit.resid, ref.resid, atol=1e-10)
    np.testing.assert_allclose(fit.bread, ref.bread, rtol=1e-10, atol=1e-14)
    scores = dm.x[:, 1:] * (ref.resid if w is None else w * ref.resid)[:, None]
    coarse = rng.integers(0, 7, u.max() + 1)[u]
    for codes in (u, coarse, None):
        g = np.arange(n) if codes is None else codes
        expect = np.zeros((g.max() + 1, scores.shape[1]))
        for j in range(scores.shape[1]):
            expect[:, j] = np.bincount(g, weights=scores[:, j], minlength=g.max() + 1)
        np.testing.assert_allclose(fit.cluster_sums(codes), expect, atol=1e-10)


@pytest.mark.parametrize("way", [True, False])
def test_small_time_lean_bit_identical_to_dense_both_ways(monkeypatch, way):
    """The lean unit table (CSR counts, lazy H) gives the dense table's numbers bit for
    bit with the products with the unit x period table through dense blocks of units
    (several, 40 cells each) or through scipy's kernels."""
    monkeypatch.setattr(_fe, "_GRAM_BLOCK_CELLS", 40)
    monkeypatch.setattr(_fe, "_dense_cells", lambda c: way)
    u, t, rng = _unbalanced(6, n_units=90)
    n, p = len(u), 7
    onehot = np.where(rng.random(n) < 0.6, rng.integers(0, p, n), -1)
    z = rng.normal(size=(n, 1))
    y = rng.normal(size=n) + 0.5 * (onehot == 2)
    proj = _fe.two_way_projector([u, t])
    fits = []
    for cap in (10**12, 0):
        monkeypatch.setattr(_fe, "_DENSE_UNIT_PART_MAX", cap)
        fits.append(_fe.ols_twoway_small_time(y, u, t, proj, onehot=onehot, n_onehot=p, z=z))
    dense, lean = fits
    assert isinstance(lean.unit_part, _fe._UnitPart)
    np.testing.assert_array_equal(lean.coef, dense.coef)
    np.testing.assert_array_equal(lean.bread, dense.bread)
    np.testing.assert_array_equal(lean.time_part, dense.time_part)
    np.testing.assert_array_equal(lean.unit_part[0:len(dense.unit_part)], dense.unit_part)
    for codes in (u, t):
        np.testing.assert_array_equal(lean.cluster_sums(codes), dense.cluster_sums(codes))


def test_weighted_small_time_h_blocks_equal_sparse_products(monkeypatch):
    """Weighted fits: H from dense blocks of units equals H from scipy's CSR products to
    rounding (and the fit with it)."""
    u, t, rng = _unbalanced(7, n_units=70)
    n, p = len(u), 5
    onehot = np.where(rng.random(n) < 0.6, rng.integers(0, p, n), -1)
    y = rng.normal(size=n) + 0.5 * (onehot == 1)
    w = rng.uniform(0.2, 3.0, n)
    proj = _fe.two_way_projector([u, t], weights=w)
    monkeypatch.setattr(_fe, "_GRAM_BLOCK_CELLS", 30)
    fits = []
    for way in (True, False):
        proj.dense_cells = way
        fits.append(_fe.ols_twoway_small_time(y, u, t, proj, onehot=onehot, n_onehot=p,
                                              weights=w))
    blocks, csr = fits
    np.testing.assert_allclose(blocks.unit_part, csr.unit_part, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(blocks.coef, csr.coef, rtol=1e-12, atol=1e-14)


def test_non_converged_projection_warns_and_gives_no_estimate(monkeypatch):
    """Three FE sets stopped after one sweep: a ConvergenceWarning and NaN, not a number."""
    from twinimpact.errors import ConvergenceWarning

    rng = np.random.default_rng(0)
    n = 400
    fe = [rng.integers(0, 20, n), rng.integers(0, 15, n), rng.integers(0, 10, n)]
    x = rng.normal(size=(n, 1)) + 0.3 * fe[0][:, None]
    y = x[:, 0] + 0.1 * fe[1] + rng.normal(size=n)
    real = _fe.demean
    monkeypatch.setattr(_fe, "demean", lambda *a, **k: real(*a, **{**k, "maxiter": 1}))
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        params, v, _, info = _fe.fit_fe_ols(y, x, ["x"], fe, vcov="iid")
    assert info["demean_converged"] is False and info["demean_iterations"] == 1
    assert params.isna().all() and np.isnan(v).all()


@settings(max_examples=60, deadline=None)
@given(na=st.integers(1, 30), nb=st.integers(1, 9), n=st.integers(1, 60),
       seed=st.integers(0, 10_000))
def test_fe_components_equal_the_bipartite_graph(na, nb, n, seed):
    """fe_dof's redundancy count (components of the unit-period graph), computed on the
    smaller set's graph, equals the components of the full bipartite graph (scipy)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(seed)
    a = dense_codes(rng.integers(0, na, n))[0]
    b = dense_codes(rng.integers(0, nb, n))[0]
    ga, gb = int(a.max()) + 1, int(b.max()) + 1
    graph = coo_matrix((np.ones(n), (a, b + ga)), shape=(ga + gb, ga + gb))
    want = connected_components(graph, directed=False)[0]
    assert _fe._n_components(a, b, ga, gb) == want
    assert _fe._n_components(b, a, gb, ga) == want


def test_fe_dof_counts_like_fixest_default_not_the_components():
    """Exporter-year and importer-year FE: one connected component per year. R fixest's
    default K (``nparams = k + sum(fixef_sizes - 1) + 1``, ``fixef.force_exact = FALSE``)
    and pyfixest subtract one redundancy per extra set; ``exact=True`` subtracts the
    components (fixest ``fixef.force_exact = TRUE``). Found by benchmarks/crosscheck.py:
    ppml(..., fixed_effects=(("exporter", "year"), ("importer", "year"))) SEs were 5.7e-4
    off pyfixest's on a 30^3 gravity panel."""
    n_c, n_t = 5, 4
    e, i, t = (a.ravel() for a in np.meshgrid(np.arange(n_c), np.arange(n_c), np.arange(n_t),
                                               indexing="ij"))
    ey = dense_codes(e * 100 + t)[0]
    iy = dense_codes(i * 100 + t)[0]
    assert _fe.fe_dof([ey, iy]) == (2 * n_c * n_t - 1, 0)
    assert _fe.fe_dof([ey, iy], exact=True) == (2 * n_c * n_t - n_t, 0)
    # a connected pair (unit, period) and three sets: both conventions agree
    u, p = dense_codes(e * n_c + i)[0], dense_codes(t)[0]
    assert _fe.fe_dof([u, p]) == _fe.fe_dof([u, p], exact=True) == (n_c * n_c + n_t - 1, 0)
    assert _fe.fe_dof([ey, iy, u])[0] == 2 * n_c * n_t + n_c * n_c - 2
    # no residual degree of freedom left by the default count: the exact one is used
    assert _fe.fe_dof([ey, iy], n_obs=2 * n_c * n_t, n_slopes=1)[0] == 2 * n_c * n_t - n_t
    assert _fe.fe_dof([ey, iy], n_obs=len(ey), n_slopes=1)[0] == 2 * n_c * n_t - 1


@pytest.mark.parametrize("balanced", [True, False])
def test_blocked_kernels_give_the_same_fit(monkeypatch, balanced):
    """The row-blocked gathers and products (which keep the temporaries small at 1e8 rows)
    give bit-identical fits and cluster sums to one-block runs, and int32 indicator codes
    the same as int64 ones."""
    if balanced:
        u, t, onehot, z, y = _panel(30, 7, 5, 1, seed=5)
        p = 5
    else:
        u, t, rng = _unbalanced(2, n_units=60)
        p = 6
        onehot = np.where(rng.random(len(u)) < 0.6, rng.integers(0, p, len(u)), -1)
        z = rng.normal(size=(len(u), 1))
        y = rng.normal(size=len(u)) + 0.4 * (onehot == 1)

    def fit(codes):
        if balanced:
            return ols_twoway_balanced(y, u, t, onehot=codes, n_onehot=p, z=z)
        proj = _fe.two_way_projector([u, t])
        return _fe.ols_twoway_small_time(y, u, t, proj, onehot=codes, n_onehot=p, z=z)

    one = fit(onehot)
    sums_one = [one.cluster_sums(c) for c in (u, t)]
    monkeypatch.setattr(_fe, "_GATHER_ROWS", 7)
    monkeypatch.setattr(_fe, "_row_block", lambda n_cols: 3)
    blocked = fit(onehot.astype(np.int32))
    assert blocked.onehot.dtype == np.int32
    np.testing.assert_allclose(blocked.coef, one.coef, rtol=1e-13, atol=0)
    np.testing.assert_allclose(blocked.resid, one.resid, rtol=0, atol=1e-13)
    for c, want in zip((u, t), sums_one, strict=True):
        np.testing.assert_allclose(blocked.cluster_sums(c), want, rtol=0, atol=1e-13)
    # the HC meat accumulated block by block = S'S of the (n, k) per-observation scores
    scores = one.cluster_sums(None)
    np.testing.assert_allclose(blocked.score_meat(), scores.T @ scores, rtol=1e-12,
                               atol=1e-13)


def test_score_meat_with_sparse_unit_part_and_collinear_column(monkeypatch):
    monkeypatch.setattr(_fe, "_DENSE_CELLS_MAX", 0)
    u, t, onehot, z, y = _panel(20, 6, 4, 2, seed=8, absorbed=True)
    many = np.where(onehot >= 0, onehot + 4 * (u % 40), -1)
    fit = ols_twoway_balanced(y, u, t, onehot=many, n_onehot=int(many.max()) + 1, z=z)
    assert hasattr(fit.unit_part, "toarray") and not fit.kept.all()
    scores = fit.cluster_sums(None)
    np.testing.assert_allclose(fit.score_meat(), scores.T @ scores, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(("lam", "n_comp", "ok"), [
    ([3e-11, 0.4, 1.0], 1, True),          # rounding noise of a 1e8-row S: still the null
    ([-2e-11, 1e-12, 0.3, 1.0], 2, True),  # two components
    ([1e-12, 1e-10, 1.0], 1, False),       # a period hanging on a sliver of weight
    ([1e-12, 5e-9, 1.0], 1, False),        # gap of less than four orders of magnitude
    ([1e-6, 0.5, 1.0], 1, False),          # not numerically singular: S is not what we think
    ([0.0, 0.0], 2, True),                 # every period its own component
])
def test_known_null_space_rule(lam, n_comp, ok):
    null, got = _fe._known_null_space(np.asarray(lam), n_comp)
    assert got is ok
    assert null.sum() == n_comp and null[:n_comp].all()


def test_projector_null_dimension_is_the_number_of_components():
    """The null space is taken from the graph, not from an eigenvalue threshold."""
    u, t, _ = _unbalanced(0)
    proj = _fe.two_way_projector([u, t])
    assert proj.ok and proj.n_null == 1
    comps = _fe._n_components(u, t, int(u.max()) + 1, int(t.max()) + 1)
    assert proj.n_null == comps


# --- the Schur complement's B' diag(1/n_u) B from dense blocks of units (issue 13 item 3) ---

def _random_cells(n_big, n_small, density, weighted, seed):
    """A canonical CSR (n_big, n_small) table of counts (or positive weight sums), some
    rows empty, and positive row factors."""
    from scipy import sparse

    rng = np.random.default_rng(seed)
    on = rng.random((n_big, n_small)) < density
    vals = rng.uniform(0.1, 3.0, on.shape) if weighted else rng.integers(1, 4, on.shape)
    dense = np.where(on, vals, 0.0)
    return sparse.csr_matrix(dense), dense, rng.uniform(0.05, 1.0, n_big)


@settings(max_examples=40, deadline=None)
@given(n_big=st.integers(1, 60), n_small=st.integers(1, 12),
       density=st.floats(0.0, 1.0), weighted=st.booleans(), block=st.integers(1, 40),
       seed=st.integers(0, 2**16))
def test_scaled_gram_equals_dense_oracle(n_big, n_small, density, weighted, block, seed):
    """Both ways of ``_scaled_gram`` (dense blocks of any size, the sparse product) equal
    the obviously-correct dense ``B' diag(inv) B`` to rounding; structural zeros (periods
    no unit links) stay exact zeros, so the component count is the graph's."""
    m, dense, inv = _random_cells(n_big, n_small, density, weighted, seed)
    oracle = dense.T @ (dense * inv[:, None])
    scale = max(1.0, float(np.abs(oracle).max()))
    old = _fe._GRAM_BLOCK_CELLS
    try:
        _fe._GRAM_BLOCK_CELLS = block * n_small  # `block` units per dense block
        for way in (True, False):
            got = _fe._scaled_gram(m, inv, dense=way)
            assert got.shape == (n_small, n_small)
            np.testing.assert_allclose(got, oracle, rtol=0, atol=1e-13 * scale)
            np.testing.assert_array_equal(got != 0, (dense != 0).T.astype(int)
                                          @ (dense != 0).astype(int) != 0)
    finally:
        _fe._GRAM_BLOCK_CELLS = old


@given(n_big=st.integers(1, 30), n_small=st.integers(1, 8), start=st.integers(0, 30),
       length=st.integers(0, 30), seed=st.integers(0, 2**16))
def test_csr_rows_dense_equals_slice(n_big, n_small, start, length, seed):
    m, dense, _ = _random_cells(n_big, n_small, 0.4, True, seed)
    start = min(start, n_big)
    stop = min(n_big, start + length)
    np.testing.assert_array_equal(_fe._csr_rows_dense(m, start, stop), dense[start:stop])


@pytest.mark.parametrize("way", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_projector_gram_ways_and_blocks_equal_dummy_regression(monkeypatch, way, weighted):
    """The projector with the Gram from several small dense blocks, or from the sparse
    product, projects like the dummy-variable regression (multi-block path exercised at
    test size), connected and with two disconnected groups of periods."""
    monkeypatch.setattr(_fe, "_GRAM_BLOCK_CELLS", 50)
    monkeypatch.setattr(_fe, "_dense_cells", lambda c: way)
    u, t, rng = _unbalanced(5)
    w = rng.uniform(0.2, 3.0, len(u)) if weighted else None
    x = rng.normal(size=(len(u), 2)) * [1.0, 50.0]
    proj = _fe.two_way_projector([u, t], w)
    assert proj is not None and proj.ok and proj.n_null == 1
    np.testing.assert_allclose(proj.subtract(x), _dummy_residuals(x, u, t, w), rtol=0,
                               atol=1e-10 * np.abs(x).max())
    u2 = np.r_[np.repeat(np.arange(5), 4), np.repeat(np.arange(5, 9), 3)]
    t2 = np.r_[np.tile(np.arange(4), 5), np.tile(np.arange(4, 7), 4)]
    y = rng.normal(size=len(u2))
    assert _fe.two_way_projector([u2, t2]).n_null == 2
    np.testing.assert_allclose(demean(y, [u2, t2]).x, _dummy_residuals(y, u2, t2),
                               atol=1e-12)


@pytest.mark.parametrize("shape", [(9,), (9, 2)])
def test_demean_leaves_its_input_alone(shape):
    """The alternating projections (three sets: not an exact path) return new values and
    never write into the caller's array: a contiguous float input was demeaned in place,
    so the dense oracle of test_fast_path_property computed its reference sums of squares
    on the demeaned design (seed 1334: a column collinear with the period effects kept
    with a coefficient of 2.6e-48)."""
    u = np.array([1, 1, 1, 0, 0, 2, 2, 0, 2])
    t = np.array([0, 1, 2, 1, 0, 1, 2, 2, 0])
    x = np.random.default_rng(0).normal(size=shape)
    before = x.copy()
    res = demean(x, [u, t, np.zeros_like(u)], tol=1e-14)
    np.testing.assert_array_equal(x, before)
    assert not np.shares_memory(res.x, x)
    assert res.iterations >= 1
