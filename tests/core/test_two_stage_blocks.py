"""The row-blocked two-stage passes (core.two_stage, did2s, imputation) give the numbers
of the whole-array expressions they replace, bit for bit: the first-stage tables and
residuals, the column solver and the first-stage cluster sums against ``solve_normal`` /
``FittedClusterSums.__call__``, the CSC columns of the second stage / the estimands
against direct constructions, and whole fits with blocks of a few rows (many blocks,
ragged last block) against the default block size, on paths the shared tiny-block test
does not take (zero-weight refit, static ATT, pre-trends, an absent horizon)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import twinimpact as ti
from twinimpact.core import rowblocks
from twinimpact.core.two_stage import (
    ColumnSolver,
    FittedClusterSums,
    build_normal_system,
    fit_untreated,
    solve_normal,
    system_rhs,
    untreated_residuals,
)


def _panel(seed: int = 2, n_u: int = 40, n_t: int = 9) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    d = pd.DataFrame({"id": np.repeat(np.arange(n_u), n_t) * 5 + 3,
                      "year": np.tile(np.arange(2000, 2000 + n_t), n_u)})
    d["g"] = np.repeat(rng.choice([0, 2003, 2004, 2006, 2007], size=n_u), n_t)
    d = d[rng.random(len(d)) > 0.12].reset_index(drop=True)
    d["y"] = rng.normal(size=len(d)) + (d["g"] > 0) * (d["year"] >= d["g"]) * 1.2
    d["x"] = rng.normal(size=len(d))
    d["w"] = rng.uniform(0.5, 2.0, len(d))
    wz = d["w"].to_numpy().copy()
    wz[d["id"].to_numpy() == 3 + 5 * 7] = 0.0  # one unit with zero weights: refit path
    d["wz"] = wz
    d["state"] = d["id"] % 6
    return d


def _arrays(seed: int = 0, weighted: bool = True, three: bool = False):
    rng = np.random.default_rng(seed)
    n_u, n_t = 25, 7
    u = np.repeat(np.arange(n_u), n_t)
    t = np.tile(np.arange(n_t), n_u)
    on = rng.random(len(u)) > 0.15
    u, t = u[on], t[on]
    g = rng.choice([0, 3, 4, 5], size=n_u)[u]
    treated = (g > 0) & (t >= g)
    codes = [u, t] + ([t % 3] if three else [])  # a third set: the M x M pair table
    w = rng.uniform(0.5, 2.0, len(u)) if weighted else None
    y = rng.normal(size=len(u)) + treated
    return codes, treated, w, y, u, t


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("three", [True, False])
def test_first_stage_tables_and_residuals_equal_whole_array_forms(monkeypatch, weighted,
                                                                   three):
    codes, treated, w, y, _, _ = _arrays(1, weighted, three)
    untreated = ~treated
    want = fit_untreated(y, codes, untreated, None, w)
    sys_w = want.system
    monkeypatch.setattr(rowblocks, "BLOCK", 5)
    got = build_normal_system(codes, None, untreated, w)
    for name in ("s", "n_fit", "c", "s_inv", "row_ok"):
        np.testing.assert_array_equal(getattr(got, name), getattr(sys_w, name))
    resid, fit = untreated_residuals(y, codes, untreated, None, w)
    assert fit.y0_hat is None
    np.testing.assert_array_equal(resid, y - want.y0_hat)
    # against the plain bincount forms of the tables
    w0 = np.where(untreated, 1.0 if w is None else w, 0.0)
    np.testing.assert_array_equal(got.s, np.bincount(got.code_d, weights=w0))
    (codes_m, k), *_ = got.fe_m
    np.testing.assert_array_equal(
        got.c[:, :k], np.bincount(got.code_d * k + codes_m, weights=w0,
                                  minlength=got.n_d * k).reshape(got.n_d, k))


@pytest.mark.parametrize("nested", [True, False])
def test_column_solver_and_cluster_sums_into_equal_the_whole_column_forms(monkeypatch,
                                                                          nested):
    codes, treated, w, y, u, t = _arrays(3)
    untreated = ~treated
    system = fit_untreated(y, codes, untreated, None, w).system
    cluster = u // 3 if nested else t
    rng = np.random.default_rng(4)
    e1 = rng.normal(size=len(u))
    fs = FittedClusterSums(system, w * e1, untreated, cluster, int(cluster.max()) + 1)
    fs_w = FittedClusterSums(system, e1, untreated, cluster, int(cluster.max()) + 1,
                             weights=w)
    assert fs.nested == fs_w.nested == nested
    monkeypatch.setattr(rowblocks, "BLOCK", 4)
    solver = ColumnSolver(system)
    out = np.empty(int(cluster.max()) + 1)
    for h in range(3):
        r = np.flatnonzero(treated & (u % 3 == h))
        v = w[r] * (1 + h)
        b_d, b_m = solve_normal(system, *system_rhs(system, v[:, None], rows=r))
        solver.start()
        for a in range(0, len(r), 4):
            solver.add(r[a:a + 4], v[a:a + 4])
        g_d, g_m = solver.solve()
        np.testing.assert_array_equal(g_d, b_d)
        np.testing.assert_array_equal(g_m, b_m)
        np.testing.assert_array_equal(fs_w.into(out, g_d, g_m), fs(b_d, b_m)[:, 0])


def _fit(kind: str, d: pd.DataFrame):
    kw = dict(outcome="y", unit="id", time="year", cohort="g")
    return {
        "did2s_att_wz": lambda: ti.did2s(d, **kw, weights="wz"),
        "did2s_es_wz_state": lambda: ti.did2s(d, **kw, event_study=True, weights="wz",
                                              cluster="state"),
        "did2s_es_ref2_x": lambda: ti.did2s(d, **kw, event_study=True, ref=(-1, -3),
                                            covariates=["x"]),
        "did2s_fs_state": lambda: ti.did2s(d, **kw, event_study=True,
                                           first_stage=("state", "year"), cluster="state"),
        "imp_att": lambda: ti.imputation(d, **kw),
        "imp_wz": lambda: ti.imputation(d, **kw, horizons=True, weights="wz"),
        "imp_pre_year": lambda: ti.imputation(d, **kw, horizons=[0, 2, 40], pretrends=2,
                                              cluster="year"),
    }[kind]()


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("kind", ["did2s_att_wz", "did2s_es_wz_state", "did2s_es_ref2_x",
                                  "did2s_fs_state", "imp_att", "imp_wz", "imp_pre_year"])
def test_fits_equal_with_tiny_blocks(monkeypatch, kind):
    d = _panel()
    want = _fit(kind, d)
    monkeypatch.setattr(rowblocks, "BLOCK", 7)
    got = _fit(kind, d)
    assert got.terms == want.terms
    np.testing.assert_array_equal(got.params.to_numpy(), want.params.to_numpy())
    np.testing.assert_array_equal(np.asarray(got.vcov), np.asarray(want.vcov))
    assert got.diagnostics["n_treated_obs"] == want.diagnostics["n_treated_obs"]


@pytest.mark.parametrize("event_study", [True, False])
def test_second_stage_columns_are_the_rows_of_each_dummy(monkeypatch, event_study):
    from twinimpact.estimators.did2s import _second_stage_columns

    monkeypatch.setattr(rowblocks, "BLOCK", 6)
    rng = np.random.default_rng(8)
    n = 200
    t = rng.integers(0, 9, n)
    g = rng.choice([np.nan, 3.0, 5.0, 7.0], n)
    never = np.isnan(g)
    treated = ~never & (t >= g)
    keep = rng.random(n) > 0.1
    w = rng.uniform(0.5, 2.0, n)
    adj = rng.normal(size=n)
    names, indptr, indices, xtx, xty, _ = _second_stage_columns(
        t, g, keep, never, treated, event_study, (-1,), w, adj)
    if event_study:
        rel = np.where(never, 10**6, t - np.nan_to_num(g)).astype(np.int64)
        periods = [int(n_.split("=")[1]) for n_ in names]
        assert periods == sorted(set(rel[keep & ~never].tolist()) - {-1})
        cols = [np.flatnonzero(keep & ~never & (rel == e)) for e in periods]
    else:
        assert names == ["ATT"]
        cols = [np.flatnonzero(treated & keep)]
    for j, want in enumerate(cols):
        np.testing.assert_array_equal(indices[indptr[j]:indptr[j + 1]], want)
        assert xtx[j, j] == np.bincount(np.zeros(len(want), dtype=int), weights=w[want])[0]
        assert xty[j] == np.bincount(np.zeros(len(want), dtype=int),
                                     weights=w[want] * adj[want])[0]


@pytest.mark.parametrize("integral", [True, False])
def test_estimand_columns_and_cells(monkeypatch, integral):
    """Integral event times (lookup tables) and others (binary search) alike."""
    from twinimpact.estimators.imputation import _EstimandColumns

    monkeypatch.setattr(rowblocks, "BLOCK", 5)
    rng = np.random.default_rng(9)
    n = 150
    t = rng.integers(0, 9, n).astype(float)
    if not integral:
        t[100:] += 0.5  # not integral from the 21st block on
    g = rng.choice([np.nan, 3.0, 5.0, 7.0], n)
    treated = ~np.isnan(g) & (t >= g)
    keep = rng.random(n) > 0.1
    cols = _EstimandColumns(t, g, treated, keep, [0, 2, 30])
    assert cols.horizons == [0, 2, 30]
    assert cols.names == ["rel_time=0", "rel_time=2", "rel_time=30", "ATT"]
    rel = t - g
    rows = np.flatnonzero(treated & keep)
    want = [rows[rel[rows] == h] for h in (0, 2, 30)] + [rows]
    for j, r in enumerate(want):
        np.testing.assert_array_equal(cols.indices[cols.indptr[j]:cols.indptr[j + 1]], r)
    # cells: the same groups as (cohort, event time) pairs
    pairs = list(zip(g[rows], rel[rows], strict=True))
    code = cols.cell_of(rows)
    assert len(set(pairs)) == len(set(code.tolist()))
    assert all(code[i] == code[j] for i in range(len(rows)) for j in range(len(rows))
               if pairs[i] == pairs[j])
    assert code.max() < cols.n_cells
