"""PPML's fit on rows put in the order of its largest fixed-effect set (``fit_order`` /
``permute_rows`` in ``estimators._ppml_kernel``; ``TWINIMPACT_PPML_ORDER`` forces the
choice): the same fit as on the caller's order, with every per-row output given back in
the caller's order (``rows_used`` ascending, ``fitted`` aligned with it) and the variance
source's rows matching its scores (``with_vcov`` clustering on a column of the data)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import twinimpact as ti
from twinimpact.errors import TwinImpactError
from twinimpact.estimators import _fe_sweep, _ppml_kernel
from twinimpact.estimators._ppml_kernel import ORDER_ENV, fit_order, permute_rows

from ..gravity_cases import gravity_base

#: ordered vs unordered fit on hypothesis' small draws, relative to the largest entry.
#: Both converge the IRLS to tol=1e-11 and the projections to fe_tol=1e-13, but a tiny
#: panel can be ill-determined: on main, merely shuffling the rows of the draw
#: (seed=248, n_c=6, n_y=5, zeros=0.2, missing=0.3, weights, cluster by exporter: 18 IRLS
#: iterations, 6 clusters) moves the vcov by 0.75-2.1e-9. A fit paired with the wrong rows
#: is off by O(1) (the mutations of the ordered path fail by far more than this)
ORDER_TOL = 1e-7
#: the same on a well-determined panel (~1,000 rows, 7-8 IRLS iterations): observed
#: <= 3.5e-15 for params and 2.5e-15 for the vcov, seeds 0-3
TIGHT_TOL = 1e-12


def gravity(seed: int, n_c: int, n_y: int, zeros: float, missing: float,
            weights: bool) -> pd.DataFrame:
    """A small gravity panel with string keys (exporter_importer, exporter_year, ...),
    rows shuffled, some missing, some zero flows, an all-zero exporter-year (separated
    rows) and, with luck, singletons."""
    d = gravity_base(seed, n_c, n_y, zeros=zeros, missing=missing, weights=weights)
    names = np.array([f"C{i:02d}" for i in range(n_c)])
    d["exporter"], d["importer"] = names[d["exporter"]], names[d["importer"]]
    d["pair"] = d["exporter"] + "_" + d["importer"]
    d["exp_year"] = d["exporter"] + "_" + d["year"].astype(str)
    d["imp_year"] = d["importer"] + "_" + d["year"].astype(str)
    return d


def _fit(d: pd.DataFrame, mode: str, monkeypatch, **kw) -> ti.EstimationResult:
    with monkeypatch.context() as mp:
        mp.setenv(ORDER_ENV, mode)
        calls = []
        real = _ppml_kernel.permute_rows

        def counted(*a, **k):
            calls.append(1)
            return real(*a, **k)

        mp.setattr("twinimpact.estimators.ppml.permute_rows", counted)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = ti.ppml(d, outcome="trade", tol=1e-11, fe_tol=1e-13, **kw)
    assert bool(calls) == (mode == "always"), (mode, calls)
    return r


def _close(a, b, what: str, tol: float = ORDER_TOL) -> None:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape, what
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=what)
    ok = ~np.isnan(b)
    scale = max(np.abs(b[ok]).max(initial=0.0), 1e-300)
    err = np.abs(a[ok] - b[ok]).max(initial=0.0) / scale
    assert err <= tol, (what, err)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**6), n_c=st.integers(5, 14), n_y=st.integers(3, 7),
       zeros=st.sampled_from([0.0, 0.2, 0.5]), missing=st.sampled_from([0.0, 0.1, 0.3]),
       weights=st.booleans(), fes=st.sampled_from(["3", "2", "inter"]),
       vcov=st.sampled_from(["pair", "exporter", "twoway", "hetero"]))
def test_ordered_fit_is_the_fit_in_the_callers_order(monkeypatch, seed, n_c, n_y, zeros,
                                                     missing, weights, fes, vcov):
    d = gravity(seed, n_c, n_y, zeros, missing, weights)
    fixed = {"3": ["exp_year", "imp_year", "pair"], "2": ["imp_year", "pair"],
             "inter": [("exporter", "year"), ("importer", "year"), "pair"]}[fes]
    kw = {"regressors": ["rta", "x2"], "fixed_effects": fixed,
          "weights": "w" if weights else None}
    kw.update({"pair": {"cluster": "pair"}, "exporter": {"cluster": "exporter"},
               "twoway": {"cluster": ("exporter", "importer")},
               "hetero": {"vcov": "hetero"}}[vcov])
    try:
        want = _fit(d, "never", monkeypatch, **kw)
    except TwinImpactError as exc:  # nothing left to fit / one cluster: the same refusal
        with pytest.raises(type(exc)) as other:
            _fit(d, "always", monkeypatch, **kw)
        # (the values seen may differ: on a draw with more parameters than rows the
        # collinearity check judges rounding noise, and main itself reports K = 44 or 45
        # by row order -- seed=5, n_c=5, n_y=5, zeros=0.5, missing=0, weights)
        assert str(other.value).split(" Seen:")[0] == str(exc).split(" Seen:")[0]
        return
    got = _fit(d, "always", monkeypatch, **kw)
    assert got.terms == want.terms and got.nobs == want.nobs
    assert got.diagnostics["dropped_rows"] == want.diagnostics["dropped_rows"]
    assert got.diagnostics["n_fe_levels"] == want.diagnostics["n_fe_levels"]
    np.testing.assert_array_equal(got.extras["rows_used"], want.extras["rows_used"])
    if not (want.diagnostics["converged"] and got.diagnostics["converged"]):
        # a tiny draw with separation left undetected or a regressor on the edge of
        # collinearity: the IRLS drifts for 100 iterations in some row orders and not in
        # others, on main too (seed=470, n_c=5, n_y=7, zeros=0.5, missing=0.1, weights:
        # the caller's order drops rta as collinear and converges, five shuffles of it
        # do not converge) -- only the rows are compared
        assert np.isnan(got.coef).all() or got.diagnostics["converged"]
        return
    assert got.diagnostics["k_fe"] == want.diagnostics["k_fe"]
    assert got.diagnostics["collinear"] == want.diagnostics["collinear"]
    _close(got.coef, want.coef, "params")
    _close(got.cov, want.cov, "vcov")
    for key in ("deviance", "log_likelihood"):
        _close(got.diagnostics[key], want.diagnostics[key], key)
    # per-row outputs in the caller's order: the same rows, ascending, the same means
    rows = np.asarray(got.extras["rows_used"])
    np.testing.assert_array_equal(rows, np.asarray(want.extras["rows_used"]))
    assert (np.diff(rows) > 0).all()
    _close(got.extras["fitted"], want.extras["fitted"], "fitted")
    # the variance source keeps the fit's order: its rows must follow its scores
    def again(r, kind, cl):
        try:
            return r.with_vcov(kind, cluster=cl, data=d).cov if cl else r.with_vcov(kind).cov
        except TwinImpactError as exc:  # e.g. one importer left: the same refusal
            return str(exc)

    for kind, cl in (("cluster", ("year",)), ("cluster", ("exporter", "importer")),
                     ("hetero", ()), ("iid", ())):
        a, b = again(got, kind, cl), again(want, kind, cl)
        if isinstance(b, str):
            assert a == b
        else:
            _close(a, b, f"with_vcov {kind} {cl}")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ordered_fit_within_rounding_on_a_well_determined_panel(monkeypatch, seed):
    d = gravity(seed, 14, 6, 0.2, 0.05, True)
    kw = {"regressors": ["rta", "x2"], "fixed_effects": ["exp_year", "imp_year", "pair"],
          "cluster": "pair", "weights": "w"}
    want = _fit(d, "never", monkeypatch, **kw)
    got = _fit(d, "always", monkeypatch, **kw)
    assert got.diagnostics["iterations"] == want.diagnostics["iterations"]
    _close(got.coef, want.coef, "params", TIGHT_TOL)
    _close(got.cov, want.cov, "vcov", TIGHT_TOL)
    _close(got.extras["fitted"], want.extras["fitted"], "fitted", TIGHT_TOL)


def test_fitted_means_belong_to_their_rows(monkeypatch):
    """The fitted mean of each used row equals ``exp`` of its linear predictor rebuilt
    from the caller's row (a dummy-variable Poisson GLM of the same sample): a fitted
    vector left in the fit's order would pair means with the wrong rows."""
    import statsmodels.api as sm

    d = gravity(3, 8, 4, 0.2, 0.1, False)
    r = _fit(d, "always", monkeypatch, regressors=["rta", "x2"],
             fixed_effects=["exp_year", "imp_year", "pair"], cluster="pair")
    rows = np.asarray(r.extras["rows_used"])
    s = d.iloc[rows]
    dummies = pd.get_dummies(s[["exp_year", "imp_year", "pair"]], drop_first=True,
                             dtype=float)
    design = np.column_stack([np.ones(len(s)), s[["rta", "x2"]].to_numpy(), dummies])
    glm = sm.GLM(s["trade"].to_numpy(), design, family=sm.families.Poisson()).fit(
        tol=1e-13, maxiter=200)
    np.testing.assert_allclose(np.asarray(r.extras["fitted"]), glm.fittedvalues,
                               rtol=1e-6)
    np.testing.assert_allclose(r.coef, glm.params[1:3], rtol=1e-6)


def test_permute_rows_keeps_the_partition_and_gathers_the_columns():
    rng = np.random.default_rng(0)
    n = 5000
    codes = np.stack([rng.integers(0, 40, n), rng.integers(0, 700, n),
                      rng.integers(0, 15, n)]).astype(np.int32)
    for c in codes:  # dense, first-appearance codes as ppml makes them
        _, first, inv = np.unique(c, return_index=True, return_inverse=True)
        c[:] = np.argsort(np.argsort(first))[inv]
    y, x = rng.normal(size=n), rng.normal(size=(n, 2))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ORDER_ENV, "always")
        order = fit_order(codes)
    perm, k, sorted_codes = order
    assert k == 1  # the set with the most levels
    np.testing.assert_array_equal(perm, np.argsort(codes[1], kind="stable"))
    np.testing.assert_array_equal(sorted_codes, codes[1][perm])
    out = [np.empty(n), np.empty(n), np.empty(n)]
    new = permute_rows(order, codes, [y, x[:, 0], x[:, 1]], out)
    np.testing.assert_array_equal(out[0], y[perm])
    np.testing.assert_array_equal(np.column_stack(out[1:]), x[perm])
    np.testing.assert_array_equal(new[1], codes[1][perm])  # rising: its own numbers
    assert (np.diff(new[1]) >= 0).all()
    for m in (0, 2):
        # the same levels (a one-to-one relabelling of codes[m][perm]) ...
        pairs = np.unique(np.stack([codes[m][perm], new[m]]), axis=1)
        assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
        # ... numbered in order of first appearance
        _, first = np.unique(new[m], return_index=True)
        assert (np.diff(first) > 0).all()
    assert codes.dtype == new.dtype and new.flags.c_contiguous


def test_renumber_first_seen_matches_numpy():
    rng = np.random.default_rng(1)
    c = rng.integers(0, 300, 4000).astype(np.int32)
    want = np.empty_like(c)
    _, first, inv = np.unique(c, return_index=True, return_inverse=True)
    want[:] = np.argsort(np.argsort(first))[inv]
    got = c.copy()
    _fe_sweep.renumber_first_seen(got, 300)
    np.testing.assert_array_equal(got, want)


def test_when_the_rows_are_ordered(monkeypatch):
    """Shuffled codes of a large enough set: ordered; the same codes sorted, or sorted by
    period then pair, one set only, or a set below the level threshold: left alone."""
    monkeypatch.delenv(ORDER_ENV, raising=False)
    monkeypatch.setattr(_ppml_kernel, "ORDER_MIN_ROWS", 1 << 14)
    monkeypatch.setattr(_ppml_kernel, "ORDER_MIN_LEVELS", 1000)
    rng = np.random.default_rng(2)
    n_pair, n_year = 2000, 40  # (should_order samples 8 windows of 8192 rows)
    pair = np.repeat(np.arange(n_pair), n_year)
    year = np.tile(np.arange(n_year), n_pair)
    p = rng.permutation(len(pair))
    shuffled = np.stack([year[p] + 0, year[p] + 0, pair[p]]).astype(np.int32)
    assert fit_order(shuffled) is not None
    assert fit_order(shuffled[[0, 2]]) is not None        # two sets
    assert fit_order(np.stack([year, year, pair]).astype(np.int32)) is None  # by pair
    by_year = np.argsort(year, kind="stable")
    assert fit_order(np.stack([year[by_year], year[by_year], pair[by_year]])
                     .astype(np.int32)) is None           # by period, then pair
    assert fit_order(shuffled[[2]]) is None               # one set
    monkeypatch.setattr(_ppml_kernel, "ORDER_MIN_LEVELS", 3000)
    assert fit_order(shuffled) is None                    # too few levels
    monkeypatch.setenv(ORDER_ENV, "always")
    assert fit_order(shuffled[[2]]) is not None
    monkeypatch.setenv(ORDER_ENV, "never")
    monkeypatch.setattr(_ppml_kernel, "ORDER_MIN_LEVELS", 1000)
    assert fit_order(shuffled) is None


@pytest.mark.parametrize("fes", [["exp_year", "imp_year", "pair"], [("exporter", "year"),
                                                                      "pair"]])
def test_string_keys_grouped_or_hashed_give_the_same_fit_to_the_bit(monkeypatch, fes):
    """The fixed-effect keys coded by core.unitorder.code_strings' grouping
    (group_strings, no hash table) or by hashing: the same codes, hence the same fit, bit for bit."""
    from twinimpact.core import unitorder

    if unitorder._compiled() is None:
        pytest.skip("compiled unitorder kernel not built")
    d = gravity(3, 14, 6, 0.2, 0.1, weights=True)
    fits = {}
    for grouped in (False, True):
        with monkeypatch.context() as mp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (the all-zero exporter-year's rows)
            mp.setattr(unitorder, "_grouping_pays", lambda data, g=grouped: g)
            fits[grouped] = ti.ppml(d, outcome="trade", regressors=["rta", "x2"],
                                    fixed_effects=fes, cluster="pair", weights="w")
    a, b = fits[False], fits[True]
    assert np.array_equal(a.params.to_numpy(), b.params.to_numpy())
    assert np.array_equal(a.vcov.to_numpy(), b.vcov.to_numpy())
    assert np.array_equal(a.extras["fitted"], b.extras["fitted"])
    assert a.diagnostics == b.diagnostics
