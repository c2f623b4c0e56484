"""Imputation estimator (Borusyak, Jaravel & Spiess 2024): R didimputation references, a
dense dummy-variable oracle for the estimate and the Theorem 3 variance, invariances, a
coverage check and bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinimpact.errors import (
    DroppedRowsWarning,
    EstimationError,
    FewClustersWarning,
    InputError,
    NotComputableWarning,
    SpecificationError,
)
from twinimpact.estimators.imputation import imputation

from ..conftest import DATA, REFERENCE

#: the exact first-stage solve against a dense pseudo-inverse: floating-point noise only
ORACLE_TOL = 1e-9
#: R reference printed with 7 significant digits (half a unit in the last place)
R_ATT_TOL = 5e-7
R_SE_TOL = 5e-9

KW = dict(outcome="dep_var", unit="unit", time="year", cohort="g")


def simulate_panel(n_units: int = 60, n_periods: int = 8, effect: float = 1.0,
                   seed: int = 0, cohorts: tuple[int, ...] = (3, 5, 0),
                   dynamic: float = 0.0, noise: float = 1.0) -> pd.DataFrame:
    """Balanced staggered panel: y = a_i + l_t + (effect + dynamic * e) 1[t >= g] + noise.
    Cohort 0 = never treated. Used by the Sun-Abraham and did2s tests too."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(n_units), n_periods)
    per = np.tile(np.arange(1, n_periods + 1), n_units)
    g_of = np.asarray(cohorts)[np.arange(n_units) % len(cohorts)]
    g = g_of[ids]
    a = rng.normal(0, 1, n_units)[ids]
    lam = rng.normal(0, 1, n_periods)[per - 1]
    treated = (g > 0) & (per >= g)
    rel = np.where(g > 0, per - g, 0)
    y = a + lam + np.where(treated, effect + dynamic * rel, 0.0) + rng.normal(0, noise,
                                                                                len(ids))
    return pd.DataFrame({"id": ids, "year": per + 2000, "g": np.where(g > 0, g + 2000, 0),
                         "y": y, "state": ids % 7})


SIM = dict(outcome="y", unit="id", time="year", cohort="g")


@pytest.fixture(scope="module")
def df_het() -> pd.DataFrame:
    return pd.read_parquet(DATA / "didimputation" / "df_het.parquet")


@pytest.fixture(scope="module")
def ref() -> dict:
    return json.loads((REFERENCE / "imputation" / "df_het_didimputation.json").read_text())


# ----------------------------------------------------------------------- R references
def test_static_matches_r_didimputation(df_het, ref):
    r = imputation(df_het, **KW)
    exp = ref["cases"]["static"]
    assert r.params["ATT"] == pytest.approx(exp["estimate"], abs=R_ATT_TOL)
    assert r.std_errors["ATT"] == pytest.approx(exp["std_error"], abs=R_SE_TOL)
    assert r.vcov_spec.cluster == ("unit",) and r.vcov_spec.n_clusters == (1000,)
    assert r.nobs == 31_000


@pytest.mark.slow
def test_event_study_matches_didimputation_readme(df_het, ref):
    r = imputation(df_het, **KW, horizons=True, pretrends=5)
    f = r.to_frame().set_index("rel_time")
    es = ref["cases"]["event_study"]
    for row in es["pretrends"] + es["horizons"]:
        got = f.loc[float(row["rel_time"])]
        # printed with 3 significant digits: compare at half a unit of the last digit
        assert got["estimate"] == pytest.approx(row["estimate"], abs=_half_ulp(row["estimate"]))
        if "std_error" in row:
            assert got["std_error"] == pytest.approx(row["std_error"],
                                                     abs=_half_ulp(row["std_error"]))
    # horizons 0..20 after treatment exist for the 2000 cohort; pretrends are -5..-1
    assert set(f.index.dropna()) == set(range(-5, 21))
    assert r.pretrend_test.df == 5 and r.pretrend_test.kind == "F"
    assert 0 < r.pretrend_test.p_value < 1
    # static ATT is carried along as the "ATT" row
    assert r.params["ATT"] == pytest.approx(ref["cases"]["static"]["estimate"], abs=R_ATT_TOL)


def _half_ulp(x: float) -> float:
    """Half a unit in the last printed place of a 3-significant-digit number."""
    exp = int(np.floor(np.log10(abs(x))))
    return 0.5 * 10.0 ** (exp - 2) + 1e-12


# ----------------------------------------------------------------------- dense oracle
def _oracle(d: pd.DataFrame, horizon: int | None = None) -> tuple[float, float]:
    """BJS by brute force: dummy-variable OLS on untreated rows, dense pseudo-inverse for
    v* = -Z0 (Z0'Z0)^+ Z1'w1, tau-bar by cohort x event time, sums by unit cluster."""
    g = d["g"].to_numpy(float)
    t = d["year"].to_numpy(float)
    treated = (g > 0) & (t >= g)
    units = np.unique(d["id"])
    years = np.unique(d["year"])
    z = np.column_stack([(d["id"].to_numpy() == u).astype(float) for u in units]
                        + [(d["year"].to_numpy() == s).astype(float) for s in years])
    y = d["y"].to_numpy()
    z0 = z[~treated]
    beta = np.linalg.pinv(z0) @ y[~treated]
    tau = y - z @ beta
    rel = np.where(g > 0, t - g, -99)
    w = treated & ((rel == horizon) if horizon is not None else True)
    w = w / w.sum()
    att = float(w @ tau)
    vstar = -z0 @ np.linalg.pinv(z0.T @ z0) @ (z[treated].T @ w[treated])
    v = np.zeros(len(d))
    v[treated] = w[treated]
    v[~treated] = vstar
    eps = tau.copy()
    cells = pd.Series(list(zip(g, rel, strict=True)))
    for _, idx in cells[treated].groupby(cells[treated]).groups.items():
        i = np.asarray(idx)
        if (v[i] ** 2).sum() > 0:
            eps[i] = tau[i] - (v[i] ** 2 @ tau[i]) / (v[i] ** 2).sum()
    s = pd.Series(v * eps).groupby(d["id"].to_numpy()).sum().to_numpy()
    return att, float(np.sqrt(s @ s))


@pytest.mark.parametrize("seed", [0, 1])
def test_static_equals_dense_oracle(seed):
    d = simulate_panel(n_units=30, n_periods=7, seed=seed, dynamic=0.3)
    r = imputation(d, **SIM)
    att, se = _oracle(d)
    assert r.params["ATT"] == pytest.approx(att, abs=ORACLE_TOL)
    assert r.std_errors["ATT"] == pytest.approx(se, abs=ORACLE_TOL)


def test_horizon_equals_dense_oracle():
    d = simulate_panel(n_units=30, n_periods=7, seed=3, dynamic=0.5)
    r = imputation(d, **SIM, horizons=[0, 2])
    for h in (0, 2):
        att, se = _oracle(d, horizon=h)
        assert r.params[f"rel_time={h}"] == pytest.approx(att, abs=ORACLE_TOL)
        assert r.std_errors[f"rel_time={h}"] == pytest.approx(se, abs=ORACLE_TOL)


def test_unbalanced_panel_equals_oracle():
    d = simulate_panel(n_units=30, n_periods=7, seed=4).sample(frac=0.85, random_state=1)
    d = d.reset_index(drop=True)
    r = imputation(d, **SIM)
    att, se = _oracle(d)
    assert r.params["ATT"] == pytest.approx(att, abs=ORACLE_TOL)
    assert r.std_errors["ATT"] == pytest.approx(se, abs=ORACLE_TOL)


# ----------------------------------------------------------------------- invariances
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), shift=st.integers(-50, 50),
       const=st.floats(-100, 100), scale=st.floats(0.1, 10) | st.floats(-10, -0.1))
def test_invariances(seed, shift, const, scale):
    d = simulate_panel(n_units=24, n_periods=6, seed=seed)
    base = imputation(d, **SIM, horizons=[0, 1])
    rng = np.random.default_rng(seed)
    moved = d.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    moved["id"] = moved["id"].map(dict(zip(np.unique(d["id"]),
                                           rng.permutation(1000 + np.arange(24)), strict=True)))
    moved["year"] += shift
    moved["g"] = np.where(moved["g"] > 0, moved["g"] + shift, 0)
    r = imputation(moved, **SIM, horizons=[0, 1])
    np.testing.assert_allclose(r.coef, base.coef, atol=1e-9)
    np.testing.assert_allclose(r.std_errors, base.std_errors, atol=1e-9)
    c = d.assign(y=d["y"] + const)
    rc = imputation(c, **SIM, horizons=[0, 1])
    np.testing.assert_allclose(rc.coef, base.coef, atol=1e-7)
    s = d.assign(y=d["y"] * scale)
    rs = imputation(s, **SIM, horizons=[0, 1])
    np.testing.assert_allclose(rs.coef, base.coef * scale, atol=1e-8 * abs(scale))
    np.testing.assert_allclose(rs.std_errors, base.std_errors * abs(scale),
                               atol=1e-8 * abs(scale))


def test_ci_covers_known_homogeneous_effect():
    d = simulate_panel(n_units=400, n_periods=8, effect=2.0, seed=11)
    r = imputation(d, **SIM, horizons=True)
    ci = r.conf_int(0.01)
    assert ((ci["lower"] <= 2.0) & (ci["upper"] >= 2.0)).all()
    assert r.params["ATT"] == pytest.approx(2.0, abs=4 * r.std_errors["ATT"])


# ----------------------------------------------------------------------- bad input
def test_cohort_varying_within_unit_is_rejected():
    d = simulate_panel()
    d.loc[d.index[0], "g"] = 2004
    with pytest.raises(InputError, match="varies within unit"):
        imputation(d, **SIM)


def test_no_untreated_observations():
    d = simulate_panel(cohorts=(1,))
    with pytest.raises(EstimationError, match="no untreated"):
        imputation(d, **SIM)


def test_horizon_without_observations_is_nan_with_warning():
    d = simulate_panel(n_periods=6)
    with pytest.warns(NotComputableWarning, match=r"horizon\(s\) 40 have no treated"):
        r = imputation(d, **SIM, horizons=[0, 40])
    assert np.isnan(r.params["rel_time=40"]) and np.isnan(r.std_errors["rel_time=40"])
    assert np.isfinite(r.params["rel_time=0"])


def test_always_treated_rows_are_dropped_and_counted():
    d = simulate_panel(cohorts=(1, 4, 0))
    with pytest.warns(DroppedRowsWarning):
        r = imputation(d, **SIM)
    (n,) = r.diagnostics["dropped_rows"].values()
    assert n == int(((d["g"] == 2001)).sum())
    assert np.isfinite(r.params["ATT"])


@pytest.mark.parametrize("bad", [{"horizons": [-1]}, {"pretrends": 0}, {"cluster": ["a"]}])
def test_bad_options(bad):
    with pytest.raises(SpecificationError):
        imputation(simulate_panel(), **SIM, **bad)


def test_caller_frame_unchanged_and_result_protocol():
    d = simulate_panel()
    before = d.copy(deep=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # 7 state clusters: flagged (diagnostics["few_clusters"]), not an error
        warnings.simplefilter("ignore", FewClustersWarning)
        r = imputation(d, **SIM, horizons=True, pretrends=2, cluster="state")
    pd.testing.assert_frame_equal(d, before)
    f = r.to_frame()
    assert {"term", "estimate", "std_error", "rel_time", "ci_lower"} <= set(f.columns)
    assert r.vcov_spec.cluster == ("state",) and r.vcov_spec.n_clusters == (7,)
    assert list(f["rel_time"].dropna()) == [-2, -1, 0, 1, 2, 3, 4, 5]
    assert np.isnan(r.cov[0, -1])  # pre/post cross-covariance not computed


def _variance_all_columns(system, wtr, treated, resid, cell, cluster, weights=None,
                          include_never=True, never=None):
    """Slow oracle: BJS Theorem 3 with every estimand's weights as one n x k matrix."""
    from scipy import sparse

    from twinimpact.core.two_stage import solve_normal, system_rhs

    n, k = wtr.shape
    w = np.ones(n) if weights is None else weights
    b_d, b_m = solve_normal(system, *system_rhs(system, np.where(treated[:, None], wtr, 0.0)))
    h = b_d[system.code_d] + np.asarray(system.m @ b_m)
    v = np.where(treated[:, None], wtr, -w[:, None] * h)
    ncell = int(cell.max()) + 1
    v2 = np.where(treated[:, None], v**2, 0.0)
    num = np.stack([np.bincount(cell, weights=v2[:, j] * np.where(treated, resid, 0.0),
                                minlength=ncell) for j in range(k)], axis=1)
    den = np.stack([np.bincount(cell, weights=v2[:, j], minlength=ncell)
                    for j in range(k)], axis=1)
    tau_bar = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    contrib = v * (resid[:, None] - np.where(treated[:, None], tau_bar[cell], 0.0))
    if not include_never and never is not None:
        contrib[never] = 0.0
    g = int(cluster.max()) + 1
    sums = np.asarray(sparse.csr_matrix((np.ones(n), (cluster, np.arange(n))),
                                        shape=(g, n)) @ contrib)
    return sums.T @ sums


@pytest.mark.parametrize("weighted, include_never, by", [
    (False, True, "units"), (True, False, "units"), (True, True, "periods")])
def test_variance_one_estimand_at_a_time_equals_all_at_once(weighted, include_never, by):
    """The streamed variance (sparse estimand columns, untreated cluster sums from unit
    level sums when clusters contain whole units, a pass over the rows otherwise) = the
    n x k matrix form."""
    from scipy import sparse

    from twinimpact.core.two_stage import build_normal_system
    from twinimpact.estimators.imputation import imputation_variance

    rng = np.random.default_rng(11)
    n_u, n_t = 60, 8
    u = np.repeat(np.arange(n_u), n_t)
    t = np.tile(np.arange(n_t), n_u)
    keep = rng.random(len(u)) > 0.1
    u, t = u[keep], t[keep]
    g = rng.choice([0, 3, 5, 6], size=n_u)[u]
    never = g == 0
    treated = ~never & (t >= g)
    rel = np.where(never, -99, t - g)
    w = rng.uniform(0.5, 2.0, len(u)) if weighted else None
    system = build_normal_system([u, t], None, ~treated, w)
    cols = [np.where(treated & (rel == h), 1.0, 0.0) for h in range(3)] + [treated * 1.0]
    wtr = np.column_stack(cols)
    wtr /= wtr.sum(axis=0)
    resid = rng.normal(size=len(u)) + treated
    cell = np.unique(np.column_stack([g, rel]), axis=0, return_inverse=True)[1].reshape(-1)
    cluster = u // 3 if by == "units" else t
    kw = dict(weights=w, include_never=include_never, never=never)
    fast = imputation_variance(system, sparse.csc_matrix(wtr), treated, resid, cell, cluster,
                               **kw)
    dense = imputation_variance(system, wtr, treated, resid, cell, cluster, **kw)
    slow = _variance_all_columns(system, wtr, treated, resid, cell, cluster, **kw)
    np.testing.assert_allclose(fast.vcov, slow, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dense.vcov, slow, rtol=1e-12, atol=1e-15)
