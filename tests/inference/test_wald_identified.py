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
from twinimpact.inference.wald import wald_identified


def _many_cells_panel(seed: int = 0) -> pd.DataFrame:
    """40 units x 30 years, 4 cohorts of 8 (2020-2023) + 8 never treated: 82 universal-base
    pre-treatment cells from 40 units -> singular covariance."""
    rng = np.random.default_rng(seed)
    n, t = 40, 30
    d = pd.DataFrame({"u": np.repeat(np.arange(n), t), "t": np.tile(np.arange(2000, 2000 + t), n)})
    d["g"] = (2020 + d["u"] // 8).where(d["u"] < 32).astype(float)
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
