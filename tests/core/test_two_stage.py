"""The two-stage kernel (core.two_stage): the code-based products with M, the normal
equations and the fitted cluster sums against dense / sparse matrix oracles."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from twinimpact.core.two_stage import (
    FittedClusterSums,
    build_normal_system,
    predict,
    solve_normal,
    system_rhs,
)


def _design(seed: int = 0, covariate: bool = True):
    rng = np.random.default_rng(seed)
    n_u, n_t = 40, 6
    u = np.repeat(np.arange(n_u), n_t)
    t = np.tile(np.arange(n_t), n_u)
    keep = rng.random(len(u)) > 0.15
    u, t = u[keep], t[keep]
    region = u % 5  # a third set, nested in units (redundant with them)
    fit_rows = rng.random(len(u)) > 0.3
    w = rng.uniform(0.5, 2.0, len(u))
    x = rng.normal(size=(len(u), 2)) if covariate else None
    return u, t, region, fit_rows, w, x


def _dense_z(codes, x):
    cols = [np.eye(int(c.max()) + 1)[c] for c in codes]
    return np.column_stack(cols + ([] if x is None else [x]))


@pytest.mark.parametrize("covariate", [True, False])
def test_system_products_and_solution_equal_dense_oracle(covariate):
    u, t, region, fit_rows, w, x = _design(1, covariate)
    system = build_normal_system([u, t, region], x, fit_rows, w)
    m = system.m.toarray()  # sparse M built from the codes: the oracle's M
    assert m.shape[1] == system.n_m
    rng = np.random.default_rng(2)
    b = rng.normal(size=(system.n_m, 3))
    np.testing.assert_allclose(system.m_dot(b), m @ b, rtol=1e-13, atol=1e-13)
    rows = np.flatnonzero(rng.random(len(u)) > 0.5)
    np.testing.assert_allclose(system.m_dot(b, rows), (m @ b)[rows], rtol=1e-13, atol=1e-13)
    uu = rng.normal(size=(len(u), 2))
    np.testing.assert_allclose(system.m_tdot(uu), m.T @ uu, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(system.m_tdot(uu[rows], rows), m[rows].T @ uu[rows],
                               rtol=1e-12, atol=1e-12)
    d = np.eye(system.n_d)[system.code_d]
    q = rng.normal(size=len(u))
    np.testing.assert_allclose(system.cross(q), d.T @ (q[:, None] * m), rtol=1e-12,
                               atol=1e-12)
    # fitted values of a WLS on the fit rows = the dense least-squares fit
    y = rng.normal(size=len(u))
    r_d, r_m = system_rhs(system, np.where(fit_rows, w * y, 0.0)[:, None])
    fitted = predict(system, *solve_normal(system, r_d, r_m))[:, 0]
    z = _dense_z([u, t, region], x)
    sw = np.sqrt(w[fit_rows])
    coef = np.linalg.lstsq(z[fit_rows] * sw[:, None], y[fit_rows] * sw, rcond=None)[0]
    ok = system.row_ok
    np.testing.assert_allclose(fitted[ok], (z @ coef)[ok], rtol=1e-9, atol=1e-9)
    # the same right-hand side given on a few rows only
    r_d2, r_m2 = system_rhs(system, (w * y)[rows][:, None], rows=rows)
    full = np.zeros(len(u))
    full[rows] = (w * y)[rows]
    r_d3, r_m3 = system_rhs(system, full[:, None])
    np.testing.assert_allclose(r_d2, r_d3, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(r_m2, r_m3, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("clusters", ["units", "regions", "periods"])
def test_fitted_cluster_sums_equal_row_sums(clusters):
    """Level sums (clusters containing whole units) and the row pass give the row sums."""
    u, t, region, fit_rows, w, x = _design(3)
    system = build_normal_system([u, t], x, fit_rows, w)
    cl = {"units": u, "regions": region, "periods": t}[clusters]
    g = int(cl.max()) + 1
    rng = np.random.default_rng(4)
    q = rng.normal(size=len(u))
    sums = FittedClusterSums(system, q, fit_rows, cl, g)
    assert sums.nested == (clusters != "periods")
    b_d, b_m = rng.normal(size=(system.n_d, 2)), rng.normal(size=(system.n_m, 2))
    h = b_d[system.code_d] + system.m.toarray() @ b_m
    want = sparse.csr_matrix((np.ones(len(u)), (cl, np.arange(len(u)))), shape=(g, len(u))
                             ) @ (np.where(fit_rows, q, 0.0)[:, None] * h)
    np.testing.assert_allclose(sums(b_d, b_m), want, rtol=1e-12, atol=1e-12)
