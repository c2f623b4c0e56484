"""Row-blocked passes (core.rowblocks) give the numbers of the whole-array expressions
they replace: the pair-code tables against ``np.bincount``, and the two-stage estimators,
the panel checks and the dense codes with blocks of a few rows (many blocks, ragged last
block) against the default block size."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import twinimpact as ti
from twinimpact.core import fe, rowblocks
from twinimpact.core.validation import cohort_per_unit, dense_codes, refuse_duplicate_pairs
from twinimpact.errors import InputError


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Blocks of 7 rows everywhere the row-blocked passes run."""
    monkeypatch.setattr(rowblocks, "BLOCK", 7)  # core.validation's passes use row_blocks
    monkeypatch.setattr(fe, "BLOCK", 7)


def test_row_blocks_cover_the_rows_once(tiny_blocks):
    for n in (0, 1, 7, 8, 50):
        idx = np.concatenate([np.arange(n)[sl] for sl in rowblocks.row_blocks(n)] or [[]])
        assert idx.tolist() == list(range(n))


@pytest.mark.parametrize("weighted", [True, False])
def test_pair_sums_equal_bincount_on_pair_codes(tiny_blocks, weighted):
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 13, 200), rng.integers(0, 5, 200).astype(np.int32)
    w = rng.normal(size=200) if weighted else None
    want = np.bincount(a * 5 + b, weights=w, minlength=13 * 5).reshape(13, 5)
    got = rowblocks.pair_sums(a, 13, b, 5, w)
    assert got.shape == (13, 5)
    # the same additions in the same order: equal, not merely close
    np.testing.assert_array_equal(got, want)
    assert got.dtype == (np.float64 if weighted else np.int32)


@pytest.mark.parametrize("weighted", [True, False])
def test_code_sums_and_shifted_pairs_equal_bincount(tiny_blocks, weighted):
    rng = np.random.default_rng(2)
    c = rng.integers(-1, 6, 100).astype(np.int32)  # -1 = no indicator, as event codes
    g = rng.integers(0, 9, 100)
    w = rng.normal(size=100) if weighted else None
    np.testing.assert_array_equal(rowblocks.code_sums(c, 7, w, shift=1),
                                  np.bincount(c + 1, weights=w, minlength=7))
    want = np.bincount(g * 7 + c + 1, weights=w, minlength=9 * 7).reshape(9, 7)
    np.testing.assert_array_equal(
        rowblocks.pair_sums(g, 9, c, 7, w, shift_b=1, dtype=np.float64), want)


def test_pair_sums_skipping_negative_codes(tiny_blocks):
    """Rows without an indicator (code -1) left out: the table of the shifted codes
    without its first column, contiguous."""
    rng = np.random.default_rng(4)
    a, c = rng.integers(0, 11, 120), rng.integers(-1, 4, 120).astype(np.int32)
    w = rng.normal(size=120)
    for weights in (None, w):
        want = np.bincount(a * 5 + c + 1, weights=weights, minlength=55).reshape(11, 5)[:, 1:]
        got = rowblocks.pair_sums(a, 11, c, 4, weights, dtype=np.float64, skip_negative_b=True)
        np.testing.assert_array_equal(got, want)
        assert got.flags.c_contiguous


def _panel(seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_u, n_t = 30, 8
    d = pd.DataFrame({"id": np.repeat(np.arange(n_u), n_t) * 3 + 11,
                      "year": np.tile(np.arange(2000, 2000 + n_t), n_u)})
    g = rng.choice([0, 2003, 2004, 2006], size=n_u)
    d["g"] = np.repeat(g, n_t)
    d = d[rng.random(len(d)) > 0.1].reset_index(drop=True)
    d["y"] = rng.normal(size=len(d)) + (d["g"] > 0) * (d["year"] >= d["g"]) * 1.5
    d["x"] = rng.normal(size=len(d))
    d["w"] = rng.uniform(0.5, 2.0, len(d))
    d["state"] = d["id"] % 4
    return d


def _panel_balanced() -> pd.DataFrame:
    """The panel of :func:`_panel` without missing rows (the balanced closed form)."""
    rng = np.random.default_rng(3)
    d = pd.DataFrame({"id": np.repeat(np.arange(30), 8), "year": np.tile(np.arange(8), 30)})
    d["g"] = np.repeat(rng.choice([0, 3, 4, 6], size=30), 8)
    d["y"] = rng.normal(size=len(d)) + (d["g"] > 0) * (d["year"] >= d["g"]) * 1.5
    d["state"] = d["id"] % 4
    return d


CALLS = {
    "did2s_es": lambda d: ti.did2s(d, outcome="y", unit="id", time="year", cohort="g",
                                   event_study=True),
    "did2s_w_cov": lambda d: ti.did2s(d, outcome="y", unit="id", time="year", cohort="g",
                                      event_study=True, weights="w", covariates=["x"]),
    "did2s_state_year": lambda d: ti.did2s(d, outcome="y", unit="id", time="year",
                                           cohort="g", cluster="year",
                                           first_stage=("id", "year", "state")),
    "imputation": lambda d: ti.imputation(d, outcome="y", unit="id", time="year",
                                          cohort="g", horizons=True),
    "imputation_w_state": lambda d: ti.imputation(d, outcome="y", unit="id", time="year",
                                                  cohort="g", horizons=[0, 1],
                                                  weights="w", cluster="state"),
    "event_study": lambda d: ti.event_study(d, outcome="y", unit="id", time="year",
                                            cohort="g"),
    "event_study_balanced_state": lambda d: ti.event_study(
        _panel_balanced(), outcome="y", unit="id", time="year",
        cohort="g", cluster="state"),
    "event_study_cluster_year": lambda d: ti.event_study(d, outcome="y", unit="id",
                                                         time="year", cohort="g",
                                                         cluster="year"),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_estimators_equal_with_tiny_blocks(monkeypatch, name):
    d = _panel()
    want = CALLS[name](d)
    monkeypatch.setattr(rowblocks, "BLOCK", 7)  # core.validation's passes use row_blocks
    monkeypatch.setattr(fe, "BLOCK", 7)
    got = CALLS[name](d)
    np.testing.assert_array_equal(got.params.to_numpy(), want.params.to_numpy())
    np.testing.assert_array_equal(np.asarray(got.vcov), np.asarray(want.vcov))


def test_panel_checks_with_tiny_blocks(tiny_blocks):
    t = np.array([2001.0, 2003, 2002, 2003, 2001, 2005, 2002, 2004, 2001, 2002, 2003])
    codes, k = dense_codes(t)
    assert k == 5 and codes.tolist() == [0, 2, 1, 2, 0, 4, 1, 3, 0, 1, 2]
    codes, k = dense_codes(t + 0.5 * (np.arange(len(t)) == 9))  # not integral: hashed
    assert k == 6 and codes[9] == 5
    u = np.repeat(np.arange(4), 5)
    g = np.repeat([np.nan, 3.0, np.nan, 7.0], 5)
    first = cohort_per_unit(u, 4, g, raw=pd.Series(g), unit_values=u, estimator="est",
                            cohort_name="g", unit_name="id")
    np.testing.assert_array_equal(first, [np.nan, 3.0, np.nan, 7.0])
    g_bad = g.copy()
    g_bad[13] = 5.0  # unit 2, in the second block
    with pytest.raises(InputError, match=r"varies within unit \(1 unit\(s\)\).*id = 2"):
        cohort_per_unit(u, 4, g_bad, raw=pd.Series(g_bad), unit_values=u,
                        estimator="est", cohort_name="g", unit_name="id")
    tt = np.tile(np.arange(5), 4)
    refuse_duplicate_pairs(u, tt, 4, 5, label_row=None, estimator="est", unit_name="id",
                           time_name="year")
    tt[17] = 1  # unit 3 twice in period 1, rows 16 and 17 (third block)
    with pytest.raises(InputError, match=r"2 rows share a id x year pair.*id = 3, year = 1"):
        refuse_duplicate_pairs(u, tt, 4, 5, label_row=lambda i: (int(u[i]), float(tt[i])),
                               estimator="est", unit_name="id", time_name="year")


@pytest.mark.parametrize("seed", range(6))
def test_count_cells_is_the_scipy_matrix(tiny_blocks, seed):
    """The unit x period count matrix of the exact two-way projector: the same CSR
    arrays (sorted, duplicates summed, index types) as scipy's COO conversion."""
    rng = np.random.default_rng(seed)
    nb, ns, n = int(rng.integers(1, 40)), int(rng.integers(1, 9)), int(rng.integers(1, 300))
    b, t = rng.integers(0, nb, n), rng.integers(0, ns, n)
    want = sparse.csr_matrix((np.ones(n), (b, t)), shape=(nb, ns))
    want.sum_duplicates()
    got = fe._count_cells(b, nb, t, ns)
    for attr in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(got, attr), getattr(want, attr))
        assert getattr(got, attr).dtype == getattr(want, attr).dtype


def test_codes_present_counts_the_codes_of_the_marked_rows(monkeypatch):
    """codes_present equals bincount-then-count of the marked rows' codes, across block
    edges (tiny blocks), with no marked row, and with codes present only unmarked."""
    from twinimpact.core import rowblocks

    monkeypatch.setattr(rowblocks, "BLOCK", 7)
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 12, 100)
    for where in (rng.random(100) < 0.3, np.zeros(100, dtype=bool), codes % 2 == 0):
        want = int(np.count_nonzero(np.bincount(codes[where], minlength=12)))
        assert rowblocks.codes_present(codes, where, 12) == want
