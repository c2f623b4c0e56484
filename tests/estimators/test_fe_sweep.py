"""The compiled fixed-effect sweeps of PPML against their NumPy/SciPy oracle and against a
dense least-squares projection."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinimpact.estimators._ppml_kernel import WeightedFE, irls_poisson

#: one sweep is the same arithmetic in another summation order: rounding only
SWEEP_RTOL = 1e-12
#: two converged solves (tol 1e-14) of the same fixed point, each within ~1e-14 of it
SOLVE_ATOL = 1e-11


def _problem(seed: int, n: int = 3000, sizes=(40, 25, 300)):
    rng = np.random.default_rng(seed)
    codes = [rng.integers(0, g, n) for g in sizes]
    codes = [np.unique(c, return_inverse=True)[1] for c in codes]  # dense 0..G-1
    w = rng.exponential(size=n)
    x = rng.normal(size=(n, 3)) + 0.5 * codes[0][:, None] % 7
    return codes, w, x


def _dense_projection(codes, w, x):
    """W-weighted least-squares residual of x on all fixed-effect dummies."""
    d = np.column_stack([np.eye(int(c.max()) + 1)[c] for c in codes])
    sw = np.sqrt(w)
    beta = np.linalg.lstsq(d * sw[:, None], x * sw[:, None], rcond=None)[0]
    return x - d @ beta


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_sweep_matches_numpy_oracle(seed):
    codes, w, x = _problem(seed)
    out = {}
    for backend in ("numba", "numpy"):
        fe = WeightedFE(codes, backend=backend)
        fe.set_weights(w)
        out[backend] = fe.sweep(x)
        np.testing.assert_allclose(np.concatenate(fe.inv_wsum),
                                   np.concatenate([1 / np.bincount(c, weights=w)
                                                   for c in codes]), rtol=1e-13)
    np.testing.assert_allclose(out["numba"], out["numpy"], rtol=SWEEP_RTOL, atol=1e-13)


@pytest.mark.parametrize("sort_by", [0, 2])
def test_sorted_rows_take_the_run_path_and_match(sort_by):
    """Rows sorted by one set: that set's group sums go run by run (``runs``)."""
    codes, w, x = _problem(3)
    order = np.argsort(codes[sort_by], kind="stable")
    codes, w, x = [c[order] for c in codes], w[order], x[order]
    out = {}
    for backend in ("numba", "numpy"):
        fe = WeightedFE(codes, backend=backend)
        fe.set_weights(w)
        out[backend] = (fe.sweep(x), fe.residualize(x, tol=1e-14)[0],
                        np.concatenate(fe.inv_wsum))
    assert WeightedFE(codes).runs.tolist() == [k == sort_by for k in range(3)]
    for a, b in zip(out["numba"], out["numpy"], strict=True):
        np.testing.assert_allclose(a, b, rtol=SWEEP_RTOL, atol=SOLVE_ATOL)


@pytest.mark.parametrize("n_sets", [1, 2, 3, 4])
def test_residualize_matches_oracle_and_dense_projection(n_sets):
    codes, w, x = _problem(10 + n_sets, sizes=(40, 25, 300, 7)[:n_sets])
    res = {}
    for backend in ("numba", "numpy"):
        fe = WeightedFE(codes, backend=backend)
        fe.set_weights(w)
        xt, sweeps, ok = fe.residualize(x, tol=1e-14)
        assert ok
        res[backend] = (xt, sweeps)
    assert res["numba"][1] == pytest.approx(res["numpy"][1], abs=2)
    np.testing.assert_allclose(res["numba"][0], res["numpy"][0], atol=SOLVE_ATOL)
    np.testing.assert_allclose(res["numba"][0], _dense_projection(codes, w, x),
                               atol=SOLVE_ATOL)


def test_warm_start_reaches_the_same_limit():
    codes, w, x = _problem(5)
    fe = WeightedFE(codes)
    fe.set_weights(w)
    cold = fe.residualize(x, tol=1e-14)[0]
    shift = np.column_stack([np.random.default_rng(0).normal(size=int(c.max()) + 1)[c]
                             for c in codes]).sum(axis=1)
    warm = fe.residualize(x, x - shift[:, None], tol=1e-14)[0]
    np.testing.assert_allclose(warm, cold, atol=SOLVE_ATOL)


def test_nan_column_is_never_converged():
    codes, w, x = _problem(6)
    x[5, 1] = np.nan
    fe = WeightedFE(codes)
    fe.set_weights(w)
    _, sweeps, ok = fe.residualize(x, maxiter=20)
    assert not ok and sweeps == 20


def test_zero_weight_level_gets_zero_inverse():
    codes, w, _ = _problem(7)
    w = w.copy()
    w[codes[0] == 3] = 0.0
    for backend in ("numba", "numpy"):
        fe = WeightedFE(codes, backend=backend)
        fe.set_weights(w)
        assert fe.inv_wsum[0][3] == 0.0


def test_bad_backend_is_refused():
    with pytest.raises(ValueError, match="backend"):
        WeightedFE([np.zeros(3, dtype=int)], backend="cuda")


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n_sets=st.integers(2, 3))
def test_irls_same_fit_with_either_backend(seed, n_sets):
    rng = np.random.default_rng(seed)
    n = 600
    codes = [np.unique(rng.integers(0, g, n), return_inverse=True)[1]
             for g in (15, 12, 40)[:n_sets]]
    x = rng.normal(size=(n, 2))
    eta = 0.3 * x[:, 0] - 0.2 * x[:, 1] + sum(rng.normal(size=int(c.max()) + 1)[c]
                                              for c in codes)
    y = rng.poisson(np.exp(eta)).astype(float)
    y[y == 0] = 0.5  # no zeros: no separation to handle here
    fits = [irls_poisson(y, x, WeightedFE(codes, backend=b), tol=1e-10)
            for b in ("numba", "numpy")]
    assert fits[0].converged and fits[1].converged
    np.testing.assert_allclose(fits[0].coef, fits[1].coef, rtol=1e-8)
    np.testing.assert_allclose(fits[0].bread, fits[1].bread, rtol=1e-7)
