"""solve_normal's sequential collinearity check through a growing Cholesky factor (O(k^3))
against the direct rule (a fresh solve of the kept block per column, O(k^4)): the same
kept columns, hence the same coefficients and bread."""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from twinimpact.core.fe import solve_normal


def _kept_direct(xtx: np.ndarray, collin_tol: float, ref_ss: np.ndarray | None,
                 ratios: list | None = None) -> np.ndarray:
    """The direct rule's kept columns (``ratios``: gets each judged column's residual
    variance / scale)."""
    k = xtx.shape[0]
    kept = np.ones(k, dtype=bool)
    for j in range(k):
        idx = np.flatnonzero(kept[:j])
        if xtx[j, j] <= 0:
            kept[j] = False
            continue
        resid = xtx[j, j]
        if len(idx):
            b = xtx[idx, j]
            resid = xtx[j, j] - b @ np.linalg.lstsq(xtx[np.ix_(idx, idx)], b, rcond=None)[0]
        scale = xtx[j, j] if ref_ss is None else max(ref_ss[j], xtx[j, j])
        kept[j] = resid > collin_tol * max(scale, 1e-300)
        if ratios is not None:
            ratios.append(resid / max(scale, 1e-300))
    return kept


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 25), n_dup=st.integers(0, 6),
       near=st.sampled_from([0.0, 1e-7, 1e-3]), zero_col=st.booleans(),
       use_ref=st.booleans())
def test_kept_columns_equal_the_direct_rule(seed, k, n_dup, near, zero_col, use_ref):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, k)) * rng.uniform(0.1, 100, k)
    for _ in range(n_dup):  # exact (or nearly exact) linear combinations of columns
        j, a, b = rng.integers(0, k, 3)
        x[:, j] = x[:, a] - 2.0 * x[:, b] + near * rng.normal(size=60)
    if zero_col:
        x[:, rng.integers(0, k)] = 0.0
    xtx = x.T @ x
    xty = x.T @ rng.normal(size=60)
    ref_ss = np.einsum("ij,ij->j", x, x) * 1.5 if use_ref else None
    coef, bread, kept = solve_normal(xtx, xty, ref_ss=ref_ss)
    ratios: list = []
    direct = _kept_direct(xtx, 1e-10, ref_ss, ratios)
    # the two rules compute a near-collinear column's residual variance in two ways whose
    # rounding differs by ~eps x scale x cond: a ratio within 10x of the threshold is a
    # coin toss between them (seed 3048, k 6, near 1e-7: 8.9e-11 direct, kept by the
    # Cholesky rule), not a disagreement of the rules
    assume(all(not 1e-11 < r < 1e-9 for r in ratios))
    np.testing.assert_array_equal(kept, direct)
    ki = np.flatnonzero(kept)
    if len(ki):
        inv = np.linalg.inv(xtx[np.ix_(ki, ki)])
        np.testing.assert_array_equal(coef[ki], inv @ xty[ki])
        np.testing.assert_array_equal(bread[np.ix_(ki, ki)], inv)
    assert np.isnan(coef[~kept]).all() and np.isnan(bread[~kept]).all()


def test_indicator_blocks_with_collinear_cells():
    """Dummy blocks: one cohort's cells span its unit effect (a collinear cell), many cells."""
    rng = np.random.default_rng(1)
    n, k = 400, 120
    codes = rng.integers(0, k, n)
    x = np.zeros((n, k + 1))
    x[np.arange(n), codes] = 1.0
    x[:, k] = x[:, :5].sum(axis=1)  # collinear with the first five
    x -= x.mean(axis=0)
    xtx = x.T @ x
    _, _, kept = solve_normal(xtx, x.T @ rng.normal(size=n))
    np.testing.assert_array_equal(kept, _kept_direct(xtx, 1e-10, None))
    assert kept.sum() == np.linalg.matrix_rank(x)  # one kept column per dimension


def _solve_normal_scipy_checked(xtx, xty, collin_tol=1e-10, ref_ss=None):
    """solve_normal as it was before the finiteness check moved out of scipy (scipy's
    check_finite on the whole kept block in every solve): the reference for results and
    for the ValueError on non-finite input."""
    from scipy.linalg import solve_triangular
    k = xtx.shape[0]
    kept = np.ones(k, dtype=bool)
    diag = np.diag(xtx).copy()
    chol = np.zeros((k, k))
    idx: list[int] = []
    for j in range(k):
        if diag[j] <= 0:
            kept[j] = False
            continue
        m = len(idx)
        w = solve_triangular(chol[:m, :m], xtx[idx, j], lower=True) if m else None
        resid_var = xtx[j, j] - (w @ w if m else 0.0)
        scale = diag[j] if ref_ss is None else max(ref_ss[j], diag[j])
        if resid_var <= collin_tol * max(scale, 1e-300):
            kept[j] = False
            continue
        if m:
            chol[m, :m] = w
        chol[m, m] = np.sqrt(resid_var)
        idx.append(j)
    coef = np.full(k, np.nan)
    bread = np.full((k, k), np.nan)
    ki = np.flatnonzero(kept)
    if len(ki):
        inv = np.linalg.inv(xtx[np.ix_(ki, ki)])
        coef[ki] = inv @ xty[ki]
        bread[np.ix_(ki, ki)] = inv
    return coef, bread, kept


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 12),
       bad=st.sampled_from([None, np.nan, np.inf, -np.inf]),
       where=st.sampled_from(["diag", "offdiag", "last"]))
def test_same_results_and_errors_as_scipy_checked_solves(seed, k, bad, where):
    """Bit-identical to the scipy-checked loop, and a ValueError under exactly the same
    non-finite inputs (NaN / inf on the diagonal, off it, or in the last column only)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, k))
    if k > 2:
        x[:, 1] = x[:, 0] + x[:, 2]
    xtx = x.T @ x
    xty = x.T @ rng.normal(size=40)
    if bad is not None:
        i = int(rng.integers(0, k))
        j = {"diag": i, "offdiag": int(rng.integers(0, k)), "last": k - 1}[where]
        if where == "last":
            i = int(rng.integers(0, k))
        xtx[i, j] = xtx[j, i] = bad
    try:
        want = _solve_normal_scipy_checked(xtx, xty)
    except ValueError:
        import pytest
        with pytest.raises(ValueError, match="infs or NaNs"):
            solve_normal(xtx, xty)
        return
    got = solve_normal(xtx, xty)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
