"""The blocked influence function of callaway_santanna against dense oracles.

The fit stores its (units x cells) influence function as the nonzero blocks (each cohort,
and the never-treated, x the cells it takes part in): :class:`BlockedInfluence`. Every
operation the estimator runs on it (IF'IF, cluster sums, the bootstrap product, the
aggregations' weighted column sums) must equal the same operation on the dense matrix,
and the dense matrix ``result.influence`` (made on first access) must be what the
estimator computed before: the slow 2x2-means oracle per cell, and ``vcov = IF'IF / n^2``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.linalg import blas

from twinimpact.estimators import _cs_numerics as num
from twinimpact.estimators.callaway_santanna import callaway_santanna

from .blocked_cases import random_blocked

#: the blocked operations sum the same products in another order (per block, then across
#: blocks; pairwise sums over shorter vectors): agreement to rounding (~1e-15 seen)
ROUNDING = 1e-12


def _random_blocked(rng: np.random.Generator, n: int, K: int, n_groups: int,
                    with_nan: bool) -> num.BlockedInfluence:
    group = rng.integers(0, n_groups, n)
    rows, cols, vals = [], [], []
    for j in range(n_groups):
        r = np.flatnonzero(group == j)
        c = np.flatnonzero(rng.random(K) < 0.5)
        if j == 0:  # one group in every cell (the never-treated)
            c = np.arange(K)
        rows.append(r)
        cols.append(c)
        vals.append(np.asfortranarray(rng.normal(size=(len(r), len(c)))))
    nan_cols = rng.random(K) < (0.2 if with_nan else 0.0)
    return num.BlockedInfluence(n, K, tuple(rows), tuple(cols), tuple(vals),
                                nan_cols).freeze()


def _dense_loop(b: num.BlockedInfluence) -> np.ndarray:
    """The (n, K) matrix entry by entry (oracle of ``dense``)."""
    out = np.zeros((b.n, b.K))
    for r, c, v in zip(b.rows, b.cols, b.values, strict=True):
        for a, i in enumerate(r):
            for bb, k in enumerate(c):
                out[i, k] = v[a, bb]
    out[:, b.nan_cols] = np.nan
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 40), K=st.integers(1, 9),
       n_groups=st.integers(1, 5), with_nan=st.booleans(), G=st.integers(1, 6))
def test_blocked_operations_equal_dense(seed, n, K, n_groups, with_nan, G):
    rng = np.random.default_rng(seed)
    b = _random_blocked(rng, n, K, n_groups, with_nan)
    d = _dense_loop(b)
    np.testing.assert_array_equal(b.dense(), d)
    sel = rng.permutation(K)[: max(1, K // 2)]
    np.testing.assert_array_equal(b.dense(sel), d[:, sel])
    np.testing.assert_array_equal(b.nan_mask(), np.isnan(d).any(axis=0))
    # IF'IF: NaN exactly in the rows / columns of the NaN cells
    g, want = b.gram(), d.T @ d
    np.testing.assert_array_equal(np.isnan(g), np.isnan(want))
    np.testing.assert_allclose(g, want, rtol=ROUNDING, atol=ROUNDING)
    # cluster sums (plain and NaN as 0) and the bootstrap product
    codes = rng.integers(0, G, n)
    agg = np.zeros((G, n))
    agg[codes, np.arange(n)] = 1.0
    np.testing.assert_allclose(b.cluster_sums(codes, G), agg @ d, rtol=ROUNDING,
                               atol=ROUNDING)
    np.testing.assert_allclose(b.cluster_sums(codes, G, nan_to_zero=True),
                               agg @ np.nan_to_num(d), rtol=ROUNDING, atol=ROUNDING)
    w = rng.normal(size=(3, n))
    np.testing.assert_allclose(b.left_matmul(w, nan_to_zero=True), w @ np.nan_to_num(d),
                               rtol=ROUNDING, atol=ROUNDING)
    np.testing.assert_allclose(b.left_matmul(w), w @ d, rtol=ROUNDING, atol=ROUNDING)
    # weighted column sums in a given order (the aggregations), onto a start vector
    ks = rng.choice(K, size=min(K, 4), replace=False)
    ws = rng.normal(size=len(ks))
    start = rng.normal(size=n)
    got = start.copy()
    b.add_columns(ks, ws, got)
    want = start.copy()
    for k, wk in zip(ks, ws, strict=True):
        want = blas.daxpy(np.ascontiguousarray(d[:, k]), want, a=float(wk))
    np.testing.assert_allclose(got, want, rtol=ROUNDING, atol=ROUNDING)
    # the bootstrap draws: same generator, same weights, same draws to rounding
    a1 = num.mammen_bootstrap(b, 7, np.random.default_rng(seed), chunk_elems=50)
    a2 = num.mammen_bootstrap(np.nan_to_num(d), 7, np.random.default_rng(seed),
                              chunk_elems=50)
    np.testing.assert_allclose(a1, a2, rtol=ROUNDING, atol=ROUNDING)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(4, 30), T=st.integers(2, 5),
       n_ctrl_groups=st.integers(1, 3), method=st.sampled_from(["dr", "ipw", "reg"]),
       miss=st.floats(0.0, 0.6))
def test_rc_group_kernel_equals_full_length_kernel(seed, n, T, n_ctrl_groups, method,
                                                   miss):
    """The repeated-cross-section 2x2 on the cell's groups only equals the full-length
    masked kernel (every unit of the panel, the cohort and comparison masks)."""
    rng = np.random.default_rng(seed)
    Y = rng.normal(size=(n, T)) * 3 + 10
    present = rng.random((n, T)) >= miss
    Y[~present] = np.nan
    group = rng.integers(-1, n_ctrl_groups + 1, n)  # -1: in no group of the cell
    treat, ctrl = group == 0, group >= 1
    cur, base = int(rng.integers(0, T)), int(rng.integers(0, T))
    full = np.zeros(n)
    want = num.cell_closed_form_rc(Y, present, cur, base, treat, ctrl, n, method, full)
    rows = [np.flatnonzero(group == j) for j in range(n_ctrl_groups + 1)]
    outs = [np.full(len(r), -7.0) for r in rows]
    got = num.cell_closed_form_rc_groups([np.asfortranarray(Y[r]) for r in rows],
                                         [np.asfortranarray(present[r]) for r in rows],
                                         cur, base, n, method, outs)
    assert got.reason == want.reason
    if np.isnan(want.att):
        assert np.isnan(got.att)
        assert all((o == -7.0).all() for o in outs)  # nothing written
        return
    np.testing.assert_allclose(got.att, want.att, rtol=ROUNDING, atol=ROUNDING)
    back = np.zeros(n)
    for r, o in zip(rows, outs, strict=True):
        back[r] = o
    np.testing.assert_allclose(back, full, rtol=ROUNDING, atol=ROUNDING)


def _panel(n_units: int = 240, T: int = 7, seed: int = 0, miss: float = 0.0
           ) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    u, t = np.meshgrid(np.arange(n_units), np.arange(2001, 2001 + T), indexing="ij")
    df = pd.DataFrame({"id": u.ravel(), "year": t.ravel()})
    g_unit = rng.choice([0, 2003, 2004, 2005, 2006], size=n_units)
    df["g"] = g_unit[df["id"]]
    df["region"] = df["id"] % 13
    df["y"] = (rng.normal(size=len(df)) + 0.3 * (df["year"] - 2000)
               + ((df["g"] > 0) & (df["year"] >= df["g"])))
    if miss:
        df = df[rng.random(len(df)) >= miss].reset_index(drop=True)
    return df


def _two_by_two_psi(df, g, t, base, ctrl_mask_fn, units):
    """Slow oracle: the 2x2 DiD influence function of one cell (balanced panel),
    ``n [D (dy - m1)/N1 - (1-D)(dy - m0)/N0]``, zero outside the cell."""
    wide = df.pivot(index="id", columns="year", values="y").loc[units]
    coh = df.groupby("id")["g"].first().loc[units].to_numpy()
    dy = (wide[t] - wide[base]).to_numpy()
    tr, cc = coh == g, ctrl_mask_fn(coh)
    n = len(units)
    psi = np.zeros(n)
    psi[tr] = (dy[tr] - dy[tr].mean()) * n / tr.sum()
    psi[cc] = -(dy[cc] - dy[cc].mean()) * n / cc.sum()
    return psi


@pytest.mark.parametrize("base_period", ["varying", "universal"])
@pytest.mark.parametrize("control_group", ["never_treated", "not_yet_treated"])
def test_fit_influence_is_lazy_blocked_and_equals_the_cell_oracle(control_group,
                                                                  base_period):
    df = _panel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = callaway_santanna(df, outcome="y", unit="id", time="year", cohort="g",
                                control_group=control_group, base_period=base_period)
        agg = res.aggregate("dynamic")
    src = res.influence_source
    assert isinstance(src, num.BlockedInfluence)
    n, K = src.shape
    assert "influence" not in res.__dict__  # not densified by the fit or aggregate
    assert src.nbytes < 0.8 * n * K * 8  # the blocks hold fewer than the n*K entries
    psi = res.influence
    assert "influence" in res.__dict__ and res.influence is psi  # cached
    assert psi.shape == (n, K) and not psi.flags.writeable
    units = np.asarray(res.units)
    info = res.term_info
    for j in range(K):
        g, t, base = (info["cohort"].iloc[j], info["time"].iloc[j], info["base"].iloc[j])
        if control_group == "never_treated":
            def ctrl(c):
                return c == 0
        else:
            cut = max(t, base)

            def ctrl(c, cut=cut, g=g):
                return ((c == 0) | (c > cut)) & (c != g)
        np.testing.assert_allclose(psi[:, j], _two_by_two_psi(df, g, t, base, ctrl, units),
                                   rtol=ROUNDING, atol=1e-10)
    np.testing.assert_allclose(res.cov, psi.T @ psi / n**2, rtol=ROUNDING, atol=1e-15)
    np.testing.assert_allclose(agg.cov, agg.influence.T @ agg.influence / n**2,
                               rtol=ROUNDING, atol=1e-15)
    # re-clustering from the blocks = the dense cluster sums
    r2 = res.with_vcov("cluster", cluster="region", data=df)
    reg = df.groupby("id")["region"].first().loc[units].to_numpy()
    s = np.stack([psi[reg == c].sum(axis=0) for c in np.unique(reg)])
    np.testing.assert_allclose(r2.cov, s.T @ s / n**2, rtol=ROUNDING, atol=1e-15)


@pytest.mark.parametrize("unbalanced", [False, True])
def test_aggregates_and_bootstrap_equal_a_dense_influence(unbalanced):
    """The same result with the influence function stored dense gives the same
    aggregates (estimates, vcov, influence functions) and bootstrap draws."""
    df = _panel(seed=1, miss=0.08 if unbalanced else 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = callaway_santanna(df, outcome="y", unit="id", time="year", cohort="g",
                                allow_unbalanced_panel=unbalanced, n_reps=99, seed=3,
                                cluster="region")
        dense = res.replace(influence_source=np.asarray(res.influence).copy())
        for typ in ("simple", "dynamic", "group", "calendar"):
            a, b = res.aggregate(typ), dense.aggregate(typ)
            np.testing.assert_allclose(a.coef, b.coef, rtol=ROUNDING, atol=1e-14)
            np.testing.assert_allclose(a.cov, b.cov, rtol=ROUNDING, atol=1e-14)
            np.testing.assert_allclose(a.influence, b.influence, rtol=ROUNDING, atol=1e-12)
            if a.sup_t is not None:
                np.testing.assert_allclose(a.sup_t, b.sup_t, rtol=ROUNDING)


@pytest.mark.parametrize("control_group", ["never_treated", "not_yet_treated"])
@pytest.mark.parametrize("base_period", ["varying", "universal"])
@pytest.mark.parametrize("covariate", [False, True])
def test_cohort_whose_units_are_all_dropped_has_no_estimate(control_group, base_period,
                                                            covariate):
    """A cohort of the data whose every unit is dropped (here: each misses a year, and
    the balanced-panel estimator drops units not seen in every period) keeps its cells,
    with no estimate ("no treated ... units") -- never the next cohort's units taken as
    its treated group -- and the other cells are those of the data without its units."""
    rng = np.random.default_rng(3)
    n_u, years = 90, np.arange(2000, 2010)
    unit = np.repeat(np.arange(n_u), len(years))
    year = np.tile(years, n_u)
    cohort = np.array([0, 2004, 2006, 2007])[unit % 4]
    eff = ((cohort > 0) & (year >= cohort)) * (1.0 + 0.1 * (year - cohort))
    d = pd.DataFrame({"unit": unit, "year": year, "cohort": cohort,
                      "y": rng.normal(size=n_u)[unit] + 0.1 * (year - 2000) + eff
                      + rng.normal(size=len(unit)), "x": rng.normal(size=len(unit))})
    gone = d["cohort"] == 2006
    hole = gone & (d["year"] == 2002)
    kw = dict(outcome="y", unit="unit", time="year", cohort="cohort",
              control_group=control_group, base_period=base_period,
              covariates=["x"] if covariate else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = callaway_santanna(d[~hole], **kw)
        ref = callaway_santanna(d[~gone], **kw)
    p = r.params
    own = [t for t in p.index if t.startswith("ATT(2006,")]
    assert own and len(p) == len(ref.params) + len(own)
    # every cell of the vanished cohort NaN, but the universal base period's (0 by
    # normalisation)
    assert p[own].isna().sum() == len(own) - (base_period == "universal")
    assert (p[own].dropna() == 0.0).all()
    others = p.drop(own)
    np.testing.assert_allclose(others.to_numpy(), ref.params.loc[others.index].to_numpy(),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(r.std_errors.drop(own).to_numpy(),
                               ref.std_errors.loc[others.index].to_numpy(),
                               rtol=1e-10, atol=1e-14)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), n_units=st.integers(3, 60), T=st.integers(3, 8),
       control_group=st.sampled_from(["never_treated", "not_yet_treated"]),
       base_period=st.sampled_from(["varying", "universal"]),
       method=st.sampled_from(["dr", "ipw", "reg"]), anticipation=st.integers(0, 1))
def test_closed_cells_equal_the_cell_by_cell_form(seed, n_units, T, control_group,
                                                  base_period, method, anticipation):
    """All cells of a complete panel without covariates at once are, bit for bit, the
    cell-by-cell form: ``cell_closed_form_groups`` on each cell's cohort and its
    comparison groups (ascending cohorts, the never-treated last; units ascending)."""
    rng = np.random.default_rng(seed)
    g_unit = rng.choice([0, *range(2002, 2000 + T + 1)], size=n_units)
    assume((g_unit == 0).any() or control_group == "not_yet_treated")
    df = pd.DataFrame({"id": np.repeat(np.arange(n_units), T),
                       "year": np.tile(np.arange(2001, 2001 + T), n_units)})
    df["g"] = g_unit[df["id"]]
    df["y"] = rng.normal(size=len(df)) * 10 ** rng.integers(0, 4)
    kw = dict(outcome="y", unit="id", time="year", cohort="g", method=method,
              control_group=control_group, base_period=base_period,
              anticipation=anticipation)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = callaway_santanna(df, **kw)
        except Exception:  # (no usable cohort, or no comparison group: refused as R)
            assume(False)
    units = np.asarray(res.units)
    wide = df.pivot(index="id", columns="year", values="y").loc[units].to_numpy()
    coh = g_unit[units].astype(float)
    key = np.where(coh == 0, np.inf, coh)
    values = np.unique(key)
    psi = res.influence
    info = res.term_info
    years = np.arange(2001, 2001 + T)
    for k in range(len(res.coef)):
        g, t, base = info["cohort"].iloc[k], info["time"].iloc[k], info["base"].iloc[k]
        if not np.isfinite(base) or t == base:
            continue  # (no pre-treatment period / the universal base's reference cell)
        cur, b = int(np.searchsorted(years, t)), int(np.searchsorted(years, base))
        if control_group == "never_treated":
            ctrl_vals = [v for v in values if np.isinf(v)]
        else:
            cut = max(t, base) + anticipation
            ctrl_vals = [v for v in values if v > cut and v != g]
        dy = wide[:, cur] - wide[:, b]
        dy1 = dy[key == g].copy()
        dy0 = [dy[key == v].copy() for v in ctrl_vals]
        if not len(dy1) or not sum(len(d) for d in dy0):
            assert np.isnan(res.coef[k])
            continue
        fit = num.cell_closed_form_groups(dy1, dy0, len(units), method)
        if np.isnan(fit.att):
            assert np.isnan(res.coef[k])
            continue
        assert res.coef[k] == fit.att
        want = np.zeros(len(units))
        want[key == g] = dy1
        for v, d in zip(ctrl_vals, dy0, strict=True):
            want[key == v] = d
        np.testing.assert_array_equal(psi[:, k], want)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 9000), K=st.integers(1, 12),
       n_groups=st.integers(1, 4), rank=st.integers(1, 12))
def test_r_factor_is_the_dense_qr_factor(seed, n, K, n_groups, rank):
    """The TSQR factor over the blocks (row slices of each block, stacked) has the dense
    matrix's Gram ``R' R = D' D`` and its singular values, for any selection of columns,
    blocks of low rank and blocks left out; no rows: an empty factor."""
    rng = np.random.default_rng(seed)
    b = random_blocked(rng, n, K, n_groups, p_col=0.7, rank=rank, p_nan_col=0.0)
    sel = np.sort(rng.choice(K, size=int(rng.integers(1, K + 1)), replace=False))
    R = b.r_factor(sel)
    D = b.dense(sel)
    scale = max(1.0, float(np.abs(D.T @ D).max()))
    np.testing.assert_allclose(R.T @ R, D.T @ D, rtol=0, atol=1e-12 * scale)
    sv_r = np.linalg.svd(R, compute_uv=False) if R.size else np.zeros(0)
    sv_d = np.linalg.svd(D, compute_uv=False)
    m = min(len(sv_r), len(sv_d))
    np.testing.assert_allclose(sv_r[:m], sv_d[:m], rtol=0, atol=1e-12 * np.sqrt(scale))
    tiny = 1e-12 * np.sqrt(scale)
    assert np.all(sv_d[m:] <= tiny) and np.all(sv_r[m:] <= tiny)


def _reg_did_panel(dy, D, X, n_total):
    """DRDID ``reg_did_panel`` as written there (weighted full-length vectors): the oracle
    of the split form."""
    n1 = len(D)
    w = D.astype(float)
    ctrl = ~D.astype(bool)
    Xc = X[ctrl]
    xtx = Xc.T @ Xc
    beta = np.linalg.solve(xtx, Xc.T @ dy[ctrl])
    out = X @ beta
    e_ols = np.where(ctrl, dy - out, 0.0)
    mw = w.mean()
    eta_t = np.mean(w * dy) / mw
    eta_c = np.mean(w * out) / mw
    M1 = X.T @ w / n1
    ols = e_ols * (X @ np.linalg.solve(xtx / n1, M1))
    inf = w * (dy - eta_t) / mw - (w * (out - eta_c) + ols) / mw
    return eta_t - eta_c, inf * (n_total / n1)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), n1=st.integers(6, 400), k=st.integers(1, 4),
       share=st.floats(0.01, 0.9), cached=st.booleans())
def test_reg_cell_split_equals_reg_did_panel(seed, n1, k, share, cached):
    """The split form of ``reg`` (treated and comparison units apart; the comparison split
    and X_c'X_c kept for the next cell of the cohort) gives DRDID's estimate and
    influence function to rounding, for any share of treated units; the kept split is
    reused for a second outcome change."""
    rng = np.random.default_rng(seed)
    D = rng.random(n1) < share
    assume(1 <= D.sum() and (~D).sum() > k + 1)
    X = np.column_stack([np.ones(n1)] + [rng.normal(size=n1) for _ in range(k - 1)])
    cache = {} if cached else None
    for _ in range(2):
        dy = rng.normal(size=n1) + 0.5 * D + X @ rng.normal(size=k)
        fit = num.cell_estimate(dy, D, X, 10 * n1, "reg", cache=cache)
        att, inf = _reg_did_panel(dy, D, X, 10 * n1)
        assert fit.att == pytest.approx(att, rel=1e-11, abs=1e-12)
        np.testing.assert_allclose(fit.inf, inf, rtol=1e-10, atol=1e-10 * np.abs(inf).max())
    if cached:
        assert "reg_split" in cache


def test_affine_factor_gives_the_blocks_gram():
    """A block ``a (Y_t - Y_b) + c`` per column, on outcomes with large unit and period
    levels: the factor from the double-centred outcomes' triangular factor gives ``V' V``
    to rounding; a wrong coefficient matrix is refused (the check of the columns' sums
    of squares), and so is a block not wider than its periods."""
    from twinimpact.estimators.callaway_santanna import _double_centred

    rng = np.random.default_rng(3)
    n, T, k = 500, 8, 30
    Y = (1e6 * rng.normal(size=(n, 1)) + 1e3 * np.arange(T) + rng.normal(size=(n, T)))
    M = np.zeros((T, k))
    cur, base = rng.integers(1, T, k), rng.integers(0, T - 1, k)
    base = np.where(base == cur, cur - 1, base)
    a, c = rng.normal(size=k), rng.normal(size=k)
    V = np.empty((n, k), order="F")
    for j in range(k):
        M[cur[j], j], M[base[j], j] = a[j], -a[j]
        d = Y[:, cur[j]] - Y[:, base[j]]
        V[:, j] = a[j] * (d - d.mean()) + c[j]
    R = np.linalg.qr(_double_centred(np.array(Y, order="F")), mode="r")
    f = num._affine_factor(V, R, M)
    direct = V.T @ V
    assert f is not None and f.shape == (T + 1, k)
    np.testing.assert_allclose(f.T @ f, direct, rtol=0, atol=1e-12 * np.abs(direct).max())
    wrong = M.copy()
    wrong[:, 0] *= 1.01
    assert num._affine_factor(V, R, wrong) is None
    assert num._affine_factor(V[:, :T], R, M[:, :T]) is None
    # without the double centring the unit levels (1e6) swamp the differences: the
    # factor of the raw outcomes is refused or, if accepted, still equal
    raw = num._affine_factor(V, np.linalg.qr(Y, mode="r"), M)
    assert raw is None or np.allclose(raw.T @ raw, direct, rtol=0,
                                      atol=1e-12 * np.abs(direct).max())


@pytest.mark.parametrize("opts", [{}, {"control_group": "not_yet_treated"},
                                  {"base_period": "universal"}])
def test_fit_vcov_with_and_without_the_affine_gram(monkeypatch, opts):
    """A complete panel with many cohorts (blocks of >= 3 cells per period carry their
    affine form): the analytic vcov, pre-test and aggregations equal those of the plain
    Gram (affine form switched off) to rounding."""
    import twinimpact.estimators.callaway_santanna as cs

    rng = np.random.default_rng(0)
    n_units, T = 600, 12
    g = rng.choice([0, 4, 5, 6, 7, 8, 9, 10, 11], size=n_units)
    unit, year = np.repeat(np.arange(n_units), T), np.tile(np.arange(1, T + 1), n_units)
    y = (100 * rng.normal(size=n_units)[unit] + year + rng.normal(size=n_units * T)
         + np.where((g[unit] > 0) & (year >= g[unit]), 1.0, 0.0))
    d = pd.DataFrame({"unit": unit, "year": year, "g": g[unit], "y": y})
    kw = dict(outcome="y", unit="unit", time="year", cohort="g", **opts)
    with_affine = callaway_santanna(d, **kw)
    assert with_affine.influence_source.affine is not None
    assert any(a is not None for a in with_affine.influence_source.affine)
    monkeypatch.setattr(cs, "AFFINE_MIN_CELLS_PER_PERIOD", 10**9)
    plain = callaway_santanna(d, **kw)
    assert not any(a is not None for a in plain.influence_source.affine)
    v1, v0 = with_affine.vcov.to_numpy(), plain.vcov.to_numpy()
    np.testing.assert_allclose(v1, v0, rtol=0, atol=1e-12 * np.nanmax(np.abs(v0)))
    assert with_affine.pretrend_test.statistic == pytest.approx(
        plain.pretrend_test.statistic, rel=1e-10, nan_ok=True)
    for agg in ("simple", "dynamic", "group"):
        np.testing.assert_allclose(with_affine.aggregate(agg).std_errors.to_numpy(),
                                   plain.aggregate(agg).std_errors.to_numpy(), rtol=1e-12)


def test_affine_form_is_read_only_with_the_result():
    """The blocks' affine form travels with the (immutable) result: read-only like the
    blocks."""
    d = pd.DataFrame({"unit": np.repeat(np.arange(300), 8), "year": np.tile(np.arange(8), 300)})
    g = np.random.default_rng(1).choice([0, 3, 4, 5, 6, 7], size=300)
    d["g"] = g[d["unit"]]
    d["y"] = np.random.default_rng(2).normal(size=len(d)) + 0.3 * (d["year"] >= d["g"]) * (d["g"] > 0)
    r = callaway_santanna(d, outcome="y", unit="unit", time="year", cohort="g")
    forms = [af for af in r.influence_source.affine if af is not None]
    assert forms
    for r_, m in forms:
        assert r_.shape == (8, 8) and m.shape[0] == 8  # (periods x periods: no unit rows)
        assert not r_.flags.writeable and not m.flags.writeable


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 40), K=st.integers(1, 9),
       n_groups=st.integers(1, 5), m=st.integers(1, 6), with_nan=st.booleans(),
       cover=st.booleans())
def test_add_columns_many_equals_dense_sums(seed, n, K, n_groups, m, with_nan, cover):
    """The aggregations' batched column sums: for each job ``(col, ks, ws)`` (cells in any
    order, some weights 0, columns shared by jobs or untouched) ``out[:, col]`` gains
    ``sum ws[i] dense[:, ks[i]]`` (a zero weight adds nothing, even on a NaN; a NaN
    cell makes the column NaN), with ``out``'s rows in the block order."""
    rng = np.random.default_rng(seed)
    b = random_blocked(rng, n, K, n_groups, with_nan=with_nan, cover=cover).freeze()
    d = b.dense()
    jobs = []
    for col in rng.choice(m, size=rng.integers(0, m + 1), replace=False):
        ks = rng.choice(K, size=rng.integers(1, K + 1), replace=False)
        ws = rng.normal(size=len(ks)) * (rng.random(len(ks)) > 0.2)
        jobs.append((int(col), ks, ws))
    start = np.asfortranarray(rng.normal(size=(n, m)))
    want = start.copy()
    for col, ks, ws in jobs:
        for k, w in zip(ks, ws, strict=True):
            if w != 0:
                want[:, col] += w * d[:, k]
        if b.nan_cols[ks].any():
            want[:, col] = np.nan
    order = b.block_order()
    assert np.array_equal(np.sort(order), np.arange(n))
    got = np.asfortranarray(start[order])
    b.add_columns_many(jobs, got)
    want = want[order]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=ROUNDING, atol=ROUNDING)


@pytest.mark.parametrize("opts", [{}, {"control_group": "not_yet_treated"},
                                  {"control_group": "not_yet_treated",
                                   "base_period": "universal"}])
def test_closed_cells_product_and_loop_paths_agree(monkeypatch, opts):
    """Complete panel without covariates: the cells' outcome changes made by the product
    with the +1/-1 matrix or by one subtraction per cell are the same numbers (bit for
    bit: the zeros add nothing)."""
    import twinimpact.estimators.callaway_santanna as cs

    df = _panel(seed=2)
    kw = dict(outcome="y", unit="id", time="year", cohort="g", **opts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monkeypatch.setattr(cs, "_DIFF_GEMM_MAX", 10**12)
        prod = callaway_santanna(df, **kw)
        monkeypatch.setattr(cs, "_DIFF_GEMM_MAX", -1)
        loop = callaway_santanna(df, **kw)
    np.testing.assert_array_equal(prod.coef, loop.coef)
    np.testing.assert_array_equal(prod.influence, loop.influence)


@pytest.mark.parametrize("cluster", [None, "region"])
def test_aggregations_in_block_order_equal_unit_order(monkeypatch, cluster):
    """The aggregated influence functions made in the blocks' unit order (many blocks
    for the units) and put back equal those made column by column in unit order."""
    import twinimpact.estimators.callaway_santanna as cs

    df = _panel(seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = callaway_santanna(df, outcome="y", unit="id", time="year", cohort="g",
                                control_group="not_yet_treated", cluster=cluster)
        out = {}
        for units in (10**9, 0):  # always, never in block order
            monkeypatch.setattr(cs, "BLOCK_ORDER_UNITS", units)
            out[units] = {t: res.aggregate(t) for t in ("simple", "dynamic", "group",
                                                         "calendar")}
    for t in ("simple", "dynamic", "group", "calendar"):
        a, b = out[10**9][t], out[0][t]
        np.testing.assert_array_equal(a.coef, b.coef)
        np.testing.assert_allclose(a.influence, b.influence, rtol=ROUNDING, atol=1e-13)
        np.testing.assert_allclose(a.cov, b.cov, rtol=ROUNDING, atol=1e-15)


@pytest.mark.parametrize("p_col", [0.02, 0.3, 1.0])
def test_gram_stacked_and_scattered_factors_equal_dense(p_col):
    """Blocks of few rows are their own factor: stacked when they cover enough of the K
    columns, else their product scattered (GRAM_STACK_RATIO); either way the Gram is the
    dense one to rounding."""
    rng = np.random.default_rng(7)
    b = random_blocked(rng, 80, 300, 25, p_col=p_col, p_nan_col=0.0).freeze()
    d = b.dense()
    want = d.T @ d
    np.testing.assert_allclose(b.gram(), want, rtol=0, atol=ROUNDING * np.abs(want).max())
    small = [len(r) <= num.GRAM_STACK_ROWS and len(c) > len(r)
             for r, c in zip(b.rows, b.cols, strict=True)]
    assert any(small)
