"""Pre-test where R did's statistic is undefined: the reason in words, and the labelled
pseudo-inverse Wald extension (checked against numpy's pinv)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import twinimpact as ti
from twinimpact.errors import NotComputableWarning
from twinimpact.inference.wald import RANK_RTOL, wald_identified


def _many_cells_panel(seed: int = 0, n: int = 40, per_cohort: int = 8) -> pd.DataFrame:
    """``n`` units x 30 years, 4 cohorts of ``per_cohort`` (2020-2023), the rest never
    treated: 82 universal-base pre-treatment cells -> singular covariance (default: 40
    units, 4 cohorts of 8 + 8 never treated)."""
    rng = np.random.default_rng(seed)
    t = 30
    d = pd.DataFrame({"u": np.repeat(np.arange(n), t), "t": np.tile(np.arange(2000, 2000 + t), n)})
    d["g"] = (2020 + d["u"] // per_cohort).where(d["u"] < 4 * per_cohort).astype(float)
    d["y"] = rng.normal(size=len(d))
    return d


def test_singular_pretest_says_why_and_offers_the_identified_wald():
    d = _many_cells_panel()
    with pytest.warns(NotComputableWarning, match="has rank 35"):
        r = ti.callaway_santanna(d, outcome="y", unit="u", time="t", cohort="g",
                                 base_period="universal")
    pt = r.pretrend_test
    assert np.isnan(pt.statistic) and pt.df == 82  # R did: undefined
    assert "82 pre-treatment ATT(g,t) carry only 35 independent pieces" in pt.note
    assert "singular: rank 35 < 82" in pt.note
    assert "40 units" in pt.note and "n/a" not in pt.note and pt.rank == 35
    ext = pt.extension
    assert ext["label"].startswith("extension, not in R did")
    # oracle: numpy's pseudo-inverse and matrix rank on the same pre-period block
    info = r.term_info
    pre = [t for t, g, tt in zip(r.terms, info["cohort"], info["time"], strict=True)
           if tt < g and np.isfinite(r.std_errors[t]) and r.std_errors[t] > 0]
    b = r.params[pre].to_numpy()
    v = r.vcov.loc[pre, pre].to_numpy()
    assert len(pre) == 82
    assert ext["rank"] == np.linalg.matrix_rank(v, rtol=1e-10) == ext["df"]
    # r.vcov may differ from the analytic pre-test covariance only through the bootstrap,
    # which is off here
    want = float(b @ np.linalg.pinv(v, rcond=1e-10, hermitian=True) @ b)
    assert ext["statistic"] == pytest.approx(want, rel=1e-8)
    assert ext["p_value"] == pytest.approx(stats.chi2.sf(want, ext["rank"]), rel=1e-8)
    bon = ext["bonferroni"]
    t = np.abs(b) / np.sqrt(np.diag(v))
    assert bon["statistic"] == pytest.approx(t.max(), rel=1e-10)
    assert bon["p_value"] == pytest.approx(min(1, 82 * 2 * stats.norm.sf(t.max())), rel=1e-8)


def test_wald_identified_full_rank_is_the_ordinary_wald():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(5, 5))
    v = a @ a.T + np.eye(5)
    b = rng.normal(size=5)
    out = wald_identified(b, v)
    assert out["rank"] == 5 and out["outside_share"] == pytest.approx(0.0, abs=1e-12)
    assert out["statistic"] == pytest.approx(float(b @ np.linalg.solve(v, b)), rel=1e-10)


def test_wald_identified_ignores_unidentified_directions():
    v = np.diag([1.0, 4.0, 0.0])
    out = wald_identified(np.array([1.0, 2.0, 5.0]), v)
    assert out["rank"] == 2 and out["statistic"] == pytest.approx(1.0 + 1.0)
    assert out["outside_share"] == pytest.approx(25.0 / 30.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = wald_identified(np.zeros(2), np.zeros((2, 2)))
    assert empty["rank"] == 0 and np.isnan(empty["statistic"])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("m, k", [(5, 40), (40, 40), (60, 12), (30, 300)])
def test_factor_path_is_the_dense_path(seed, m, k):
    """``factor=F`` (V = F'F, as the cluster sums of an influence function give it) reads
    the eigenpairs from F's thin SVD instead of eigh(V): same rank, statistic and outside
    share as the dense path (to the accuracy of eigh on V, whose small eigenvalues carry an
    absolute error ~ eps * max), and the pre-test's rank of a singular V by matrix_rank's
    rule on V."""
    from twinimpact.results import wald_pretrend_test

    rng = np.random.default_rng(seed)
    scale = np.exp(rng.normal(0, 2, size=k))        # uneven columns, as ATT(g,t) SEs are
    f = rng.normal(size=(m, k)) * scale / m
    if seed % 2:                                     # an exactly repeated column: rank < k
        f[:, -1] = f[:, 0]
    v = f.T @ f
    b = f.T @ rng.normal(size=m) + rng.normal(scale=1e-3, size=k) * scale / m
    dense, fast = wald_identified(b, v), wald_identified(b, None, factor=f)
    assert fast["rank"] == dense["rank"]
    assert fast["statistic"] == pytest.approx(dense["statistic"], rel=1e-7)
    assert fast["outside_share"] == pytest.approx(dense["outside_share"], rel=1e-7, abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotComputableWarning)
        t_dense = wald_pretrend_test([f"c{i}" for i in range(k)], b, v)
        t_fast = wald_pretrend_test([f"c{i}" for i in range(k)], b, v, factor=f)
    assert t_fast.rank == t_dense.rank
    assert t_fast.computed == t_dense.computed
    if t_dense.computed:
        assert t_fast.statistic == t_dense.statistic    # factor only used when singular


def test_factor_function_called_only_for_a_singular_covariance():
    """``factor`` may be a function (Callaway-Sant'Anna passes one: its F is a
    (clusters x pre-cells) copy of the influence function): called only when V is
    singular, and then giving the same rank as the array."""
    from twinimpact.results import wald_pretrend_test

    rng = np.random.default_rng(0)
    calls = []
    f = rng.normal(size=(30, 5))
    t = wald_pretrend_test(list("abcde"), rng.normal(size=5), f.T @ f,
                           factor=lambda: calls.append(1) or f)
    assert t.computed and calls == []
    g = rng.normal(size=(3, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotComputableWarning)
        lazy = wald_pretrend_test(list("abcde"), g.T @ rng.normal(size=3), g.T @ g,
                                  factor=lambda: calls.append(1) or g)
        eager = wald_pretrend_test(list("abcde"), g.T @ rng.normal(size=3), g.T @ g,
                                   factor=g)
    assert calls == [1] and lazy.rank == eager.rank == 3


@pytest.mark.parametrize("m, k", [(2000, 98), (180, 98), (179, 98), (98, 98), (40, 98)])
def test_factor_svd_is_the_thin_svd(m, k):
    """:func:`factor_svd` gives the values and right vectors of ``np.linalg.svd(F,
    full_matrices=False)`` -- on a tall F (m >= int(11 k / 6) = 179 here) through the QR
    step dgesdd itself takes, skipping the left vectors -- so the Wald test on the
    identified directions is unchanged (bit for bit with numpy 2 / OpenBLAS; 1e-12 here)."""
    from twinimpact.inference.wald import FactorSVD, factor_svd

    rng = np.random.default_rng(m)
    r = min(m, k) - 7                                    # rank-deficient, as in the CS case
    f = rng.normal(size=(m, r)) @ (rng.normal(size=(r, k)) * np.exp(rng.normal(0, 2, k))) / m
    _, s_old, vt_old = np.linalg.svd(f, full_matrices=False)
    dec = factor_svd(f)
    assert isinstance(dec, FactorSVD) and dec.vt.shape == vt_old.shape
    np.testing.assert_allclose(dec.values, s_old, rtol=0, atol=1e-12 * s_old[0])
    b = f.T @ rng.normal(size=m) + rng.normal(scale=1e-3, size=k)
    keep = s_old ** 2 > RANK_RTOL * s_old[0] ** 2
    proj = vt_old[keep] @ b
    old_stat = float(np.sum(proj ** 2 / s_old[keep] ** 2))
    for fac in (dec, f):
        out = wald_identified(b, None, factor=fac)
        assert out["rank"] == int(keep.sum())
        assert out["statistic"] == pytest.approx(old_stat, rel=1e-12)
        assert out["outside_share"] == pytest.approx(
            max(b @ b - proj @ proj, 0.0) / (b @ b), rel=1e-9, abs=1e-15)


def _tall_singular_panel(seed: int = 0) -> pd.DataFrame:
    """200 units x 30 years, 4 cohorts of 6 (2020-2023) + 176 never treated: 82
    universal-base pre-treatment cells, influence-function factor 200 x 82 (tall: the QR
    path of factor_svd), covariance of rank < 82 (6 units behind each cohort's ~20 cells)."""
    return _many_cells_panel(seed, n=200, per_cohort=6)


@pytest.mark.parametrize("panel", ["wide", "tall"])
def test_singular_pretest_decomposes_the_factor_once(monkeypatch, panel):
    """Callaway-Sant'Anna's singular pre-test: one SVD of the factor F serves both the
    rank of the pre-test and the Wald test on the identified directions (there were two:
    0.61 s of a 0.89 s fit with 40 cohorts), and every number is that of the former path
    (values-only SVD for the rank, thin SVD of F for the extension)."""
    import twinimpact.inference.wald as wald
    from twinimpact.results import wald_pretrend_test

    d = _many_cells_panel() if panel == "wide" else _tall_singular_panel()
    kw = dict(outcome="y", unit="u", time="t", cohort="g", base_period="universal")
    svd, seen = np.linalg.svd, []
    monkeypatch.setattr(np.linalg, "svd", lambda a, *x, **k: seen.append(np.shape(a))
                        or svd(a, *x, **k))
    factors = []
    real_factor_svd = wald.factor_svd
    monkeypatch.setattr(wald, "factor_svd", lambda f: factors.append(f) or real_factor_svd(f))
    import twinimpact.estimators.callaway_santanna as cs
    monkeypatch.setattr(cs, "factor_svd", wald.factor_svd)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = ti.callaway_santanna(d, **kw)
    monkeypatch.setattr(np.linalg, "svd", svd)
    assert len(factors) == 1
    f = factors[0]
    q = f.shape[1]
    # the factor is F's triangular factor R from the blocks (R' R = F' F), not the
    # (units x cells) F itself: one decomposition, of R
    assert q == 82 and f.shape[0] <= q
    assert len(seen) == 1 and seen[0] == f.shape
    pt = r.pretrend_test
    # the former path: the rank from F's values alone, the extension from F's thin SVD
    info = r.term_info
    pre = [t for t, g, tt in zip(r.terms, info["cohort"], info["time"], strict=True)
           if tt < g and np.isfinite(r.std_errors[t]) and r.std_errors[t] > 0]
    b = r.params[pre].to_numpy()
    v = r.vcov.loc[pre, pre].to_numpy()
    F = r.influence[:, [r.terms.index(t) for t in pre]] / r.influence.shape[0]
    assert F.shape[0] >= int(q * 11 / 6) if panel == "tall" else F.shape[0] < int(q * 11 / 6)
    np.testing.assert_allclose(f.T @ f, F.T @ F, rtol=0, atol=1e-12 * np.abs(F.T @ F).max())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotComputableWarning)
        old = wald_pretrend_test(pre, b, v, factor=F)  # the former path: F itself
    assert f"has rank {old.rank} (singular)" in " ".join(str(w.message) for w in caught)
    _, s, vt = svd(F, full_matrices=False)
    keep = s ** 2 > RANK_RTOL * (s ** 2).max()
    proj = vt[keep] @ b
    stat = float(np.sum(proj ** 2 / s[keep] ** 2))
    ext = pt.extension
    assert ext["rank"] == pt.rank == int(keep.sum()) < q
    assert ext["statistic"] == pytest.approx(stat, rel=1e-12)
    assert ext["p_value"] == pytest.approx(stats.chi2.sf(stat, int(keep.sum())), rel=1e-10)
    assert ext["outside_share"] == pytest.approx(
        max(b @ b - proj @ proj, 0.0) / (b @ b), rel=1e-9, abs=1e-15)
