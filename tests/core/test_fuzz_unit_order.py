"""Fuzz radix's ``prepare_panel(order_by_unit=True)`` (28831c6) against the plain path
(fuzz2 helper, session 2026-12-01).

The ordering only runs on large shuffled panels; ``TWINIMPACT_ORDER_BY_UNIT=always``
forces it on small ones, ``never`` turns it off, ``TWINIMPACT_UNITORDER_KERNEL=numpy``
takes the NumPy fallback of the compiled kernels (also taken when the extension is absent:
simulated by an empty ctypes cache).  On messy panels (see
``tests.test_fuzz_row_order.messy_panel``), shuffled, with ids relabelled (int, sparse
int64, float, short / zero-padded / long / non-ASCII strings as Arrow or object columns,
Categorical; some with missing ids) and optionally broken
(negative or zero weights, a cohort varying within a unit, a duplicated row, a non 0/1
treatment, missing outcomes and covariates, ``ref`` outside the window), every estimator
that orders (twfe, event study, imputation, did2s, Sun-Abraham) must give with ordering
exactly what it gives without: params and vcov to 1e-10 of the largest entry (to
cond(X'WX) x eps where the design is worse conditioned than that allows), terms,
nobs, diagnostics, the warnings' texts, the error's class and text (the first bad row
named in the caller's order), and ``with_vcov(cluster=<row-level column>, data=frame)``
(the stored scores paired with the caller's rows).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import twinimpact as ti
from twinimpact.core import unitorder, validation
from twinimpact.errors import NotComputableWarning, TwinImpactError

from ..test_fuzz_row_order import RELABEL, _str_label, messy_panel, reshuffle

TOL = 1e-10
C = {"outcome": "y", "unit": "u", "time": "t", "cohort": "g"}
def _some_missing(s: pd.Series) -> pd.Series:
    """Every 13th row's id missing (dropped and counted as a missing unit)."""
    return s.where(np.arange(len(s)) % 13 != 5)


LABELS = {**RELABEL,
          "short_obj": lambda u: u.map(lambda k: f"u{k}").astype(object),
          "short_arrow": lambda u: u.map(lambda k: f"é{k}").astype("string[pyarrow]"),
          "long_arrow_na": lambda u: _some_missing(u.map(_str_label)).astype("str"),
          "obj_na": lambda u: _some_missing(u.map(_str_label).astype(object)),
          # two units per text, one str and one bytes ("u3" and b"u3"): distinct units to
          # pandas.factorize, so never read as Arrow strings (which would merge them)
          "obj_bytes": lambda u: u.map(lambda k: f"u{k // 2}" if k % 2 else
                                       f"u{k // 2}".encode()).astype(object),
          "float": lambda u: u / 4.0,
          "float_na": lambda u: _some_missing(u.astype(float)),
          "cat_na": lambda u: pd.Categorical(_some_missing(u.map(_str_label)))}

CALLS = {
    "twfe": lambda d: ti.twfe(d, **C),
    "twfe_wx": lambda d: ti.twfe(d, **C, weights="w", covariates=["x"], cluster="region"),
    "twfe_treat_hetero": lambda d: ti.twfe(d, outcome="y", unit="u", time="t",
                                           treatment="d", vcov="hetero"),
    "twfe_dk": lambda d: ti.twfe(d, **C, vcov="driscoll_kraay"),
    "es": lambda d: ti.event_study(d, **C, weights="w", covariates=["x"]),
    "es_window": lambda d: ti.event_study(d, **C, leads=1, lags=1, bin_endpoints=False,
                                          cluster=["u", "t"]),
    "es_ref": lambda d: ti.event_study(d, **C, ref=(-1, -2), leads=3, lags=2),
    "es_dk": lambda d: ti.event_study(d, **C, vcov="driscoll_kraay"),
    "imputation": lambda d: ti.imputation(d, **C, cluster="region"),
    "imputation_h": lambda d: ti.imputation(d, **C, horizons=[0, 1, 2], pretrends=2),
    "did2s": lambda d: ti.did2s(d, **C),
    "did2s_es": lambda d: ti.did2s(d, **C, event_study=True),
    "sun_abraham": lambda d: ti.sun_abraham(d, **C, covariates=["x"]),
    "sun_abraham_agg": lambda d: ti.sun_abraham(d, **C).aggregate("cohort"),
    "es_sa": lambda d: ti.event_study(d, **C, method="sun_abraham", leads=2, lags=2),
    "es_imputation": lambda d: ti.event_study(d, **C, method="imputation"),
    "es_did2s": lambda d: ti.event_study(d, **C, method="did2s", leads=2),
}

BREAKS = ["none", "none", "neg_weight", "zero_weights", "cohort_varies", "duplicate",
          "treat_2", "missing", "inf_x"]


def broken(d: pd.DataFrame, kind: str, rng: np.random.Generator) -> pd.DataFrame:
    d = d.copy()
    rows = d.index[rng.permutation(len(d))[:3]]
    if kind == "neg_weight":
        d.loc[rows, "w"] = -1.0
    elif kind == "zero_weights":
        d["w"] = 0.0
    elif kind == "cohort_varies":
        d.loc[rows[:2], "g"] = 2003.0
    elif kind == "duplicate":
        d = pd.concat([d, d.loc[rows[:2]]], ignore_index=True)
        d = d.iloc[rng.permutation(len(d))].reset_index(drop=True)
    elif kind == "treat_2":
        d.loc[rows[:2], "d"] = 2
    elif kind == "missing":
        d.loc[rows[:2], "y"] = np.nan
        d.loc[rows[2:], "x"] = np.nan
    elif kind == "inf_x":
        d.loc[rows[:1], "x"] = np.inf
    return d


def _run(fn, d, monkeypatch, order: str, kernel: str, counter: list):
    orig = validation._order_rows

    def counted(*a, **k):
        counter.append(1)
        return orig(*a, **k)

    with monkeypatch.context() as mp:
        mp.setenv(unitorder.ORDER_ENV, order)
        if kernel == "absent":  # the extension not built: _compiled() finds nothing
            mp.setattr(unitorder, "_LIB", [None])
        else:
            mp.setenv(unitorder.KERNEL_ENV, kernel)
        mp.setattr(validation, "_order_rows", counted)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                res = fn(d)
                out = ("ok", res)
                if hasattr(res, "vcov_source") and res.vcov_source is not None \
                        and not isinstance(res.vcov_source, str):
                    try:
                        out = ("ok", res, res.with_vcov("cluster", cluster="rowgroup",
                                                        data=d))
                    except TwinImpactError as exc:
                        out = ("ok", res, (type(exc), str(exc)))
            except TwinImpactError as exc:
                out = ("error", type(exc), str(exc))
    return out, sorted((w.category.__name__, str(w.message)) for w in caught)


def _solve_tol(res) -> float:
    """TOL, or the accuracy the fit's normal equations allow when that is coarser: the
    solve of ``X'WX b = X'Wy`` has a relative error of about cond(X'WX) x eps (Higham,
    *Accuracy and Stability*, 2002, ch. 7/20), so two row orders (two summation orders of
    ``X'WX``) may round that far apart -- 1.7e-10 on a 16-row exactly identified design
    with cond_1 = 1.06e7 (seed 121552, "missing"; every id kind alike). From the stored
    bread ``(X'WX)^-1`` where the result has one."""
    bread = getattr(getattr(res, "vcov_source", None), "bread", None)
    if not isinstance(bread, np.ndarray) or bread.ndim != 2 or not bread.size:
        return TOL
    kept = np.isfinite(np.diag(bread))
    b = bread[np.ix_(kept, kept)]
    if not len(b) or not np.isfinite(b).all():
        return TOL
    cond = np.linalg.cond(np.linalg.inv(b), 1)
    return max(TOL, float(cond) * np.finfo(float).eps) if np.isfinite(cond) else TOL


def _close(a, b, what, tol=TOL):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape, what
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=what)
    ok = ~np.isnan(b)
    # (a variance at rounding level, ~1e-31, on degenerate draws: noise either way)
    scale = max(np.abs(b[ok]).max(initial=0.0), 1e-14)
    np.testing.assert_allclose(a[ok], b[ok], rtol=0, atol=tol * scale, err_msg=what)


def _same_value(a, b, what):
    if isinstance(b, float | np.floating) and isinstance(a, float | np.floating):
        if np.isnan(b):
            assert np.isnan(a), what
        else:
            assert a == pytest.approx(b, rel=1e-9, abs=1e-12), what
    elif isinstance(b, np.ndarray):
        if b.dtype.kind in "fc":
            _close(a, b, what)
        else:
            np.testing.assert_array_equal(a, b, err_msg=what)
    elif isinstance(b, dict):
        assert set(a) == set(b), what
        for k in b:
            _same_value(a[k], b[k], f"{what}[{k}]")
    elif isinstance(b, list | tuple) and not isinstance(b, str):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same_value(x, y, f"{what}[{i}]")
    else:
        assert a == b, f"{what}: {a!r} vs {b!r}"


def _same_result(got, want, name):
    assert got.terms == want.terms, name
    assert got.nobs == want.nobs, name
    tol = _solve_tol(want)
    _close(got.coef, want.coef, f"{name} params", tol)
    _close(got.cov, want.cov, f"{name} vcov", tol)
    _same_value(dict(got.diagnostics), dict(want.diagnostics), f"{name} diagnostics")
    if want.pretrend_test is not None:
        assert got.pretrend_test is not None, name
        pre = [want.terms.index(t) for t in want.pretrend_test.terms]
        v = want.cov[np.ix_(pre, pre)]
        # (a numerically singular V that passes the rcond > eps check gives a statistic
        # of rounding noise, ~1e16 of either sign: see the xfail test below)
        # (a V at rounding level, ~1e-31 entries, gave ~1e30 of either size across row
        # orders -- did2s seed 486706 "missing": a period the first stage fits exactly --
        # and is now NaN: see test_a_coefficient_fixed_by_construction_is_not_reported)
        if pre and np.isfinite(v).all() and 1 / np.linalg.cond(v, 1) > 1e-12:
            _same_value(got.pretrend_test.statistic, want.pretrend_test.statistic,
                        f"{name} pretrend")
    if hasattr(want, "cells") and isinstance(want.cells, pd.DataFrame):
        pd.testing.assert_frame_equal(got.cells, want.cells, rtol=1e-9, atol=1e-12)


def assert_same(got, want, name):
    (g, gw), (w, ww) = got, want
    assert gw == ww, f"{name}: warnings differ\n{gw}\n{ww}"
    assert g[0] == w[0], f"{name}: {g} vs {w}"
    if w[0] == "error":
        assert g[1:] == w[1:], f"{name}: error differs"
        return
    _same_result(g[1], w[1], name)
    if len(w) > 2:
        if isinstance(w[2], tuple):
            assert g[2] == w[2], name
        else:
            _same_result(g[2], w[2], f"{name} with_vcov")


@pytest.mark.parametrize("name", sorted(CALLS))
@settings(max_examples=15, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**6), relabel=st.sampled_from(sorted(LABELS)),
       brk=st.sampled_from(BREAKS))
def test_ordered_path_equals_plain_path(name, seed, relabel, brk, monkeypatch):
    rng = np.random.default_rng(seed)
    d, _ = reshuffle(messy_panel(seed), seed, "int")
    d["u"] = LABELS[relabel](d["u"])
    d["rowgroup"] = rng.integers(0, 5, len(d))
    d = broken(d, brk, rng)
    fn = CALLS[name]
    n_plain: list = []
    want = _run(fn, d, monkeypatch, "never", "", n_plain)
    assert not n_plain
    for kernel in ("", "numpy", "absent"):
        n_ordered: list = []
        got = _run(fn, d, monkeypatch, "always", kernel, n_ordered)
        assert_same(got, want, f"{name} {relabel} {brk} kernel={kernel or 'C'} seed={seed}")


def test_the_forced_path_orders_small_panels(monkeypatch):
    """The knob reaches the ordering on these panels (else the fuzz above is vacuous):
    every kind of id is ordered (dense ints and short Arrow strings sorted as numbers,
    the others by their codes)."""
    d, _ = reshuffle(messy_panel(1), 1, "int")
    for relabel in LABELS:
        e = d.assign(u=LABELS[relabel](d["u"]), rowgroup=0)
        n: list = []
        _run(CALLS["twfe"], e, monkeypatch, "always", "", n)
        assert n, relabel


ORDERED_LABELS = ["int", "padded", "short_arrow", "str", "arrow_str", "sparse", "cat",
                  "long_arrow_na", "obj_na", "float_na"]
ERROR_CASES = [("neg_weight", "twfe_wx"), ("neg_weight", "es"), ("treat_2", "twfe_treat_hetero"),
               ("cohort_varies", "imputation"), ("cohort_varies", "sun_abraham"),
               ("duplicate", "did2s"), ("duplicate", "es_window"), ("missing", "es")]


@pytest.mark.parametrize("brk,name", ERROR_CASES, ids=[f"{b}-{n}" for b, n in ERROR_CASES])
@settings(max_examples=10, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**6), relabel=st.sampled_from(ORDERED_LABELS))
def test_errors_and_warnings_name_the_callers_rows(brk, name, seed, relabel, monkeypatch):
    """The broken inputs on ids that are ordered: the same error / warning text (the first
    bad row in the caller's order) with and without ordering."""
    rng = np.random.default_rng(seed)
    d, _ = reshuffle(messy_panel(seed), seed, "int")
    d["u"] = LABELS[relabel](d["u"])
    d["rowgroup"] = rng.integers(0, 5, len(d))
    d = broken(d, brk, rng)
    want = _run(CALLS[name], d, monkeypatch, "never", "", [])
    n: list = []
    got = _run(CALLS[name], d, monkeypatch, "always", "", n)
    assert n, "not ordered"
    assert_same(got, want, f"{name} {relabel} {brk} seed={seed}")


def test_pretrend_wald_on_a_numerically_singular_vcov_is_nan():
    """A Driscoll-Kraay V of rank 1 in rounding (eigenvalues 1.7e-18, 6.1e-3: 1-norm rcond
    just above eps) gave F = 9.6e15 (p = 2e-24), and -9.6e15 under another row order
    (fuzz2); singular is now rcond <= q eps (numpy matrix_rank's size factor)."""
    seed = 3666
    rng = np.random.default_rng(seed)
    d, _ = reshuffle(messy_panel(seed), seed, "int")
    d["rowgroup"] = rng.integers(0, 5, len(d))
    d = broken(d, "missing", rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = ti.event_study(d, **C, vcov="driscoll_kraay")
    assert np.isnan(r.pretrend_test.statistic), r.pretrend_test.statistic


def _cat_na_panel(seed: int) -> pd.DataFrame:
    """The fuzz test's panel for ``seed`` with "cat_na" unit ids and no break."""
    rng = np.random.default_rng(seed)
    d, _ = reshuffle(messy_panel(seed), seed, "int")
    d["u"] = LABELS["cat_na"](d["u"])
    d["rowgroup"] = rng.integers(0, 5, len(d))
    return broken(d, "none", rng)


def test_a_fit_whose_only_term_is_fixed_by_construction_reports_nothing(monkeypatch):
    """did2s where the only estimable term is a pre-period the first stage fits exactly
    (cat_na ids, seed 2024: one term, 2.8e-16 / 3.3e-16 with a "variance" of 1.0e-31 /
    1.3e-31 under the two row orders, no post-treatment term): there is no other variance
    to judge it against, so it is judged against the first stage's residual scale. It is
    NaN with the note, the ATT and its variance are NaN, and the pre-trend test (0.756 /
    0.882 of rounding noise before) has nothing to test."""
    d = _cat_na_panel(2024)
    for mode in ("never", "always"):
        monkeypatch.setenv(unitorder.ORDER_ENV, mode)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = CALLS["es_did2s"](d)
        assert r.terms == ("rel_time=-2", "ATT"), r.terms
        assert np.isnan(r.coef).all() and np.isnan(r.cov).all(), (mode, r.coef, r.cov)
        assert any("[-2] are not reported" in n for n in r.diagnostics["notes"])
        assert np.isnan(r.pretrend_test.statistic) and r.pretrend_test.n_coefficients == 0


def test_a_coefficient_fixed_by_construction_is_not_reported(monkeypatch):
    """did2s with one treated unit whose rel_time = -2 row is the only row of its period:
    the first stage fits it exactly, so its coefficient was 0 by construction (-2.5e-16)
    with a "variance" of 6.3e-32 beside the effects' 1.1e-2, a standard error that is not
    one, and the pre-trend F on it was 0.998 (p 0.344) under one row order and 0.852 (p
    0.380) under another (cat_na ids, seed 3759). Now, under both orders: the term is NaN
    with a note and a warning that say why, the effects and ATT are unchanged, and the
    pre-trend test has nothing to test."""
    d = _cat_na_panel(3759)
    for mode in ("never", "always"):
        monkeypatch.setenv(unitorder.ORDER_ENV, mode)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = CALLS["es_did2s"](d)
        assert r.terms == ("rel_time=-2", "rel_time=0", "rel_time=1", "ATT"), r.terms
        assert np.isnan(r.coef[0]) and np.isnan(r.cov[0]).all(), (mode, r.coef, r.cov)
        np.testing.assert_allclose(r.coef[1:], [2.22231004, 3.33145816, 2.77688410],
                                   rtol=1e-8)
        np.testing.assert_allclose(np.diag(r.cov)[1:], 0.0105941950, rtol=1e-7)
        assert any("[-2] are not reported: the first stage fits each of their rows "
                   "exactly" in n for n in r.diagnostics["notes"]), r.diagnostics["notes"]
        assert any("(rel_time=-2): fitted exactly by the first stage" in str(w.message)
                   for w in caught), [str(w.message) for w in caught]
        assert np.isnan(r.pretrend_test.statistic) and r.pretrend_test.n_coefficients == 0


def test_pretrend_on_a_variance_at_rounding_level_is_not_computed():
    """The pre-trend rule on its own: a 1 x 1 V of 6.3e-32 is singular beside a fit whose
    largest variance is 1e-2 (not by the relative rule, blind in 1 x 1), and computable
    without that scale or beside a variance of the same size."""
    from twinimpact.results import wald_pretrend_test

    args = (["rel_time=-2"], np.array([-2.5e-16]), np.array([[6.3e-32]]))
    with pytest.warns(NotComputableWarning, match="rank 0"):
        t = wald_pretrend_test(*args, df_denominator=9.0, scale=1.06e-2)
    assert np.isnan(t.statistic) and t.rank == 0 and "singular" in t.note
    assert wald_pretrend_test(*args, df_denominator=9.0).statistic == pytest.approx(
        0.992, rel=1e-3)
    assert np.isfinite(wald_pretrend_test(*args, df_denominator=9.0,
                                          scale=6.3e-32).statistic)


@pytest.fixture(scope="module")
def big_shuffled():
    """266,075 rows (70,000 units x 4 periods, 5% holes), shuffled: above the natural
    gate of the ordering (>= 2**18 rows, >= 65,536 ids, falling ids)."""
    rng = np.random.default_rng(0)
    n_u, n_t = 70_000, 4
    u, t = np.repeat(np.arange(n_u), n_t), np.tile(np.arange(n_t), n_u)
    keep = rng.random(len(u)) > 0.05
    u, t = u[keep], t[keep]
    k = np.arange(n_u) % 3
    d = pd.DataFrame({"u": u, "t": t, "g": np.where(k == 0, 2, np.where(k == 1, 3, np.nan))[u]})
    d["x"] = rng.normal(size=len(d))
    d["y"] = rng.normal(size=len(d)) + (d["t"] >= d["g"]) + 1e-3 * d["u"] + 0.3 * d["x"]
    d["w"] = rng.uniform(0.5, 2, len(d))
    d["region"] = d["u"] % 50
    d["rowgroup"] = rng.integers(0, 7, len(d))
    return d.sample(frac=1, random_state=1).reset_index(drop=True)


BIG_CALLS = ["twfe_wx", "es", "imputation", "did2s_es", "sun_abraham"]


@pytest.mark.parametrize("ids", ["int", "padded_arrow"])
def test_natural_gate_orders_and_equals_the_plain_path(big_shuffled, ids, monkeypatch):
    d = big_shuffled
    if ids == "padded_arrow":
        d = d.assign(u=d["u"].map(lambda k: f"u{k:06d}").astype("string[pyarrow]"))
    for name in BIG_CALLS:
        want = _run(CALLS[name], d, monkeypatch, "never", "", [])
        n: list = []
        got = _run(CALLS[name], d, monkeypatch, "", "", n)
        assert n, f"{name}: the gate did not order"
        assert_same(got, want, f"{name} {ids} natural gate")
