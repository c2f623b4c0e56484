"""Sun-Abraham's lean unbalanced path (issue 13 item 3): the cohort x period cells counted
on integer keys, and the unbalanced fit's unit part ``H`` made row by row when read
(core.fe._UnitPart) instead of a dense (units x cells) table.

Oracles: the cells of a pandas ``value_counts`` over the used rows (the previous path) and
a dense dummy-variable least-squares fit; the dense ``H`` path of
``ols_twoway_small_time`` (bit for bit)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinimpact.core import fe
from twinimpact.estimators.sun_abraham import sun_abraham

KW = dict(outcome="y", unit="id", time="year", cohort="g")


def _panel(seed: int, n_units: int = 40, n_periods: int = 7, drop: float = 0.15,
           cohorts: tuple[int, ...] = (0, 3, 5, 6), gap: int | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(n_units), n_periods)
    year = np.tile(2001 + np.arange(n_periods), n_units)
    g_unit = np.array([0 if c == 0 else 2000 + c for c in cohorts])[
        rng.integers(0, len(cohorts), n_units)]
    g_unit[:2] = 0  # never-treated units exist
    g = g_unit[ids]
    y = (rng.normal(size=n_units)[ids] + 0.1 * (year - 2000)
         + np.where((g > 0) & (year >= g), 1.0 + 0.3 * (year - g), 0.0)
         + rng.normal(size=len(ids)))
    d = pd.DataFrame({"id": ids, "year": year, "g": g, "y": y,
                      "x1": rng.normal(size=len(ids)), "region": ids % 5})
    keep = rng.random(len(d)) >= drop
    if gap is not None:
        keep &= d["year"].to_numpy() != gap
    return d[keep].reset_index(drop=True)


def _used_rows(d: pd.DataFrame, control: str, refs: tuple[int, ...] = (-1,)) -> pd.DataFrame:
    """The rows sun_abraham fits: always-treated cohorts (no row before the cohort's first
    treated period) dropped; with last-treated control, rows from its date on dropped;
    then treated cohorts (not the control cohort) with no row at any reference period."""
    g = d["g"].where(d["g"] > 0)
    first = d.groupby(g)["year"].min()
    always = g.map(lambda v: np.isfinite(v) and first.get(v, np.inf) >= v).astype(bool)
    d = d[~always]
    g = g[~always]
    last = np.nan
    if control == "last_treated":
        last = g.max()
        d = d[d["year"] < last]
        g = g[d.index]
    at_ref = (d["year"] - g).isin(refs)
    has_ref = set(g[at_ref].dropna().tolist())
    unref = g.notna() & (g != last) & ~g.isin(has_ref)
    return d[~unref].reset_index(drop=True)


def _cells_value_counts(d: pd.DataFrame, control: str, refs: tuple[int, ...]) -> pd.DataFrame:
    """The previous path: pandas value_counts of (cohort, rel_time) over the dummy rows."""
    g = d["g"].where(d["g"] > 0).to_numpy(float)
    ref_cohort = np.nanmax(g) if control == "last_treated" else np.nan
    dummy = ~np.isnan(g) & (g != ref_cohort)
    rel = np.where(dummy, d["year"].to_numpy(float) - g, np.nan)
    rows = dummy & ~np.isin(np.nan_to_num(rel, nan=np.inf), refs)
    return (pd.DataFrame({"cohort": g[rows], "rel_time": rel[rows]})
            .value_counts().rename("n_obs").reset_index()
            .sort_values(["rel_time", "cohort"]).reset_index(drop=True))


def _dummy_lstsq(d: pd.DataFrame, cells: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Cell coefficients of a dense dummy-variable least-squares fit (units, years, cells)
    and which of them are identified (``e_j`` in the row space of the design)."""
    g = d["g"].to_numpy(float)
    rel = d["year"].to_numpy(float) - g
    cols = [((g == c) & (rel == e)).astype(float)
            for c, e in zip(cells["cohort"], cells["rel_time"], strict=True)]
    x = np.column_stack([*cols, pd.get_dummies(d["id"]).to_numpy(float),
                         pd.get_dummies(d["year"]).to_numpy(float)[:, 1:]])
    k = len(cols)
    pinv = np.linalg.pinv(x)
    ident = np.abs(np.einsum("ij,ji->i", pinv[:k], x[:, :k]) - 1.0) < 1e-8
    return (pinv @ d["y"].to_numpy())[:k], ident


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), drop=st.sampled_from([0.0, 0.1, 0.3]),
       control=st.sampled_from(["never_treated", "last_treated"]),
       refs=st.sampled_from([(-1,), (-1, -2), (-2,)]),
       cohorts=st.sampled_from([(0, 3, 5, 6), (0, 1, 4, 6), (0, 2, 3, 4, 5, 6, 7)]))
def test_cells_equal_value_counts_and_dummy_fit(seed, drop, control, refs, cohorts):
    d = _panel(seed, drop=drop, cohorts=cohorts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            r = sun_abraham(d, **KW, control_group=control, ref=refs)
        except Exception as exc:  # a degenerate draw: the same refusal as before
            pytest.skip(f"not estimable: {exc}")
    used = _used_rows(d, control, refs)
    want = _cells_value_counts(used, control, refs)
    got = r.cells[["cohort", "rel_time", "n_obs"]]
    pd.testing.assert_frame_equal(got, want)
    assert r.nobs == len(used)
    est = r.cells["estimate"].to_numpy()
    oracle, ident = _dummy_lstsq(used, want)
    ok = np.isfinite(est) & ident
    assert ok.sum() >= ident.sum() - 1
    # a cell the data do not identify (a singleton unit's only row: seed 65, drop 0.3) is
    # NaN, and so is every cell of a cohort identified only up to a constant
    assert not np.isfinite(est[~ident]).any(), (est[~ident], r.diagnostics["notes"])
    np.testing.assert_allclose(est[ok], oracle[ok], rtol=1e-7, atol=1e-8)


def test_biennial_calendar_reference_moves_as_before():
    """Every other year observed, cohorts on that grid: rel_time -1 never exists, so the
    default reference becomes -2 (gap_aware_refs on the period and cohort levels), with a
    note; a cohort off the grid is refused as before."""
    d = _panel(7, n_units=60, drop=0.0, cohorts=(0, 3, 5))
    d = d[d["year"] % 2 == 1].reset_index(drop=True)
    with pytest.warns(Warning, match="rel_time -2"):
        r = sun_abraham(d, **KW)
    assert r.spec["ref"] == (-2,) and r.diagnostics["notes"]
    pd.testing.assert_frame_equal(r.cells[["cohort", "rel_time", "n_obs"]],
                                  _cells_value_counts(d, "never_treated", (-2,)))
    d.loc[d["g"] == 2005, "g"] = 2004
    with pytest.raises(Exception, match="is not in the data for 1 cohort"):
        sun_abraham(d, **KW)


def _fit_both(d: pd.DataFrame, monkeypatch, **kw):
    """sun_abraham with the dense H table and with the lazy one."""
    out = []
    for cap in (10**12, 0):
        monkeypatch.setattr(fe, "_DENSE_UNIT_PART_MAX", cap)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = sun_abraham(d, **KW, **kw)
        out.append((r.params.to_numpy(), np.asarray(r.vcov), r.cell_cov))
    return out


@pytest.mark.parametrize("cluster", ["id", "region", ["id", "year"]])
@pytest.mark.parametrize("covariates", [[], ["x1"]])
def test_lazy_unit_part_bit_identical_to_dense(monkeypatch, cluster, covariates):
    d = _panel(11, n_units=300, n_periods=9, drop=0.2, cohorts=(0, 3, 5, 7))
    (p0, v0, c0), (p1, v1, c1) = _fit_both(d, monkeypatch, cluster=cluster,
                                           covariates=covariates)
    np.testing.assert_array_equal(p1, p0)
    np.testing.assert_array_equal(v1, v0)
    np.testing.assert_array_equal(c1, c0)


@pytest.mark.parametrize("block_rows, chunk_cells", [(16, 1), (16, 16 * 30 * 3 + 5),
                                                    (64, 1 << 20)])
def test_lean_gram_from_dense_chunks_bit_identical(monkeypatch, block_rows, chunk_cells):
    """The lean path's A_u' diag(1/n_u) A_u, its row blocks cut from dense chunks of
    A_u (one block per chunk, several with a ragged last chunk, one chunk), adds the same
    BLAS products as the dense path: the fit is bit-identical to the dense table's."""
    monkeypatch.setattr(fe, "_row_block", lambda n_cols: block_rows)
    monkeypatch.setattr(fe, "_SPARSE_BLOCK_CELLS", chunk_cells)
    d = _panel(5, n_units=301, n_periods=9, drop=0.2, cohorts=(0, 3, 5, 7))
    (p0, v0, c0), (p1, v1, c1) = _fit_both(d, monkeypatch, cluster="id")
    np.testing.assert_array_equal(p1, p0)
    np.testing.assert_array_equal(v1, v0)
    np.testing.assert_array_equal(c1, c0)


def test_unit_part_rows_and_products_equal_the_dense_table(monkeypatch):
    """_UnitPart's rows (slices, repeated rows) and ``e @ H`` equal the dense table's."""
    from scipy import sparse

    d = _panel(3, n_units=200, n_periods=8, drop=0.25)
    u, n_u = fe.factorize(d["id"].to_numpy())
    t, _ = fe.factorize(d["year"].to_numpy())
    g = d["g"].to_numpy()
    rel = d["year"].to_numpy() - g
    cell = np.where((g > 0) & (rel != -1), (g % 10) * 20 + rel + 10, -1)
    _, onehot = np.unique(cell, return_inverse=True)
    onehot = onehot - (1 if (cell == -1).any() else 0)
    p = int(onehot.max()) + 1
    y = d["y"].to_numpy()
    proj = fe.two_way_projector([u, t])
    monkeypatch.setattr(fe, "_DENSE_UNIT_PART_MAX", 10**12)
    dense = fe.ols_twoway_small_time(y, u, t, proj, onehot=onehot, n_onehot=p)
    monkeypatch.setattr(fe, "_DENSE_UNIT_PART_MAX", 0)
    lazy = fe.ols_twoway_small_time(y, u, t, proj, onehot=onehot, n_onehot=p)
    h = dense.unit_part
    assert isinstance(lazy.unit_part, fe._UnitPart) and lazy.unit_part.shape == h.shape
    np.testing.assert_array_equal(lazy.coef, dense.coef)
    np.testing.assert_array_equal(lazy.time_part, dense.time_part)
    np.testing.assert_array_equal(lazy.unit_part[0:n_u], h)
    np.testing.assert_array_equal(lazy.unit_part[slice(5, 37)], h[5:37])
    rows = np.array([3, 3, 0, n_u - 1, 17])
    np.testing.assert_array_equal(lazy.unit_part[rows], h[rows])
    rng = np.random.default_rng(0)
    e = sparse.random(9, n_u, density=0.05, random_state=1, format="csr")
    e.data = rng.normal(size=e.nnz)
    np.testing.assert_array_equal(lazy.unit_part.rmatmul(e), e @ h)
    np.testing.assert_array_equal(lazy.unit_part.rmatmul(sparse.csr_matrix((4, n_u))),
                                  np.zeros((4, p)))
    np.testing.assert_array_equal(lazy.score_meat(), dense.score_meat())


@settings(max_examples=60, deadline=None)
@given(codes=st.lists(st.integers(0, 9), min_size=1, max_size=300),
       extra_levels=st.integers(0, 2), in_place=st.booleans())
def test_first_seen_codes_equal_factorize(codes, extra_levels, in_place):
    """_first_seen_codes numbers the levels in order of first appearance (pd.factorize's
    codes) whether it returns the input (already so numbered), renumbers it in place or
    makes a new array; the input is left alone unless in_place."""
    from twinimpact.estimators.sun_abraham import _first_seen_codes

    arr = np.asarray(codes, dtype=np.intp)
    before = arr.copy()
    n_levels = int(arr.max()) + 1 + extra_levels
    want, uniq = pd.factorize(before)
    got, n_present = _first_seen_codes(arr, n_levels, in_place=in_place)
    np.testing.assert_array_equal(got, want)
    assert n_present == len(uniq)
    if not in_place and got is not arr:
        np.testing.assert_array_equal(arr, before)
    if np.array_equal(want, before) and extra_levels == 0:
        assert got is arr  # already first-seen order: no copy


def test_shuffled_rows_and_dropped_rows_same_fit_as_labels():
    """Row order and dropped rows (last-treated control) reach the renumbering paths
    (identity, in place, copy): the cells and estimates equal the fit on relabelled
    string ids, whose codes pandas numbers in order of first appearance."""
    d = _panel(9, n_units=80, n_periods=8, drop=0.2, cohorts=(0, 3, 5, 7))
    d = d.sample(frac=1.0, random_state=2).reset_index(drop=True)
    for control in ("never_treated", "last_treated"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = sun_abraham(d, **KW, control_group=control)
            b = sun_abraham(d.assign(id="u" + d["id"].astype(str),
                                     year=d["year"].astype(float)), **KW,
                            control_group=control)
        np.testing.assert_array_equal(a.params.to_numpy(), b.params.to_numpy())
        np.testing.assert_array_equal(np.asarray(a.vcov), np.asarray(b.vcov))
        pd.testing.assert_frame_equal(a.cells, b.cells)
