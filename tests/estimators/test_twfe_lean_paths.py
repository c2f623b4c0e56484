"""Weighted and Driscoll-Kraay TWFE fits without the dense (n, k) design.

Weighted fits (any variance) and Driscoll-Kraay fits take the small-period-set path of
``core.fe`` (event dummies never demeaned; Driscoll-Kraay from the score sums by period).
Oracles: the dense-design path of ``fit_fe_codes`` (the path these fits took before), the
dense Driscoll-Kraay of linearmodels on the within-transformed design
(``core.vcov.driscoll_kraay``), and a dummy-variable WLS. Panels: unbalanced (rows missing
at random, entry and exit), string unit ids, staggered cohorts with never-treated units.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import twinimpact as ti
import twinimpact.core.fe as fe_mod
from twinimpact.core.fe import demean, ols
from twinimpact.core.vcov import driscoll_kraay, driscoll_kraay_from_sums
from twinimpact.errors import InputError, SpecificationError

from .test_twfe import _assert_same_fit, _staggered

#: same projections, same formulas; only the order of floating-point sums differs
SAME = 1e-12

pytestmark = pytest.mark.filterwarnings("ignore::twinimpact.errors.TwinImpactWarning")


def _panel(seed: int, n_units: int = 60, n_periods: int = 9, drop: float = 0.12
           ) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = np.array([f"city-{i:03d}" for i in rng.permutation(n_units)])
    d = pd.DataFrame({"id": np.repeat(ids, n_periods),
                      "year": np.tile(np.arange(2001, 2001 + n_periods), n_units)})
    cohort = rng.choice([0, 2004, 2005, 2007], size=n_units)
    d["g"] = np.repeat(cohort, n_periods)
    # entry and exit: some units start late or stop early; then rows missing at random
    first = np.repeat(rng.integers(0, 3, n_units), n_periods)
    last = np.repeat(n_periods - rng.integers(1, 3, n_units), n_periods)
    k = d["year"].to_numpy() - 2001
    keep = (k >= first) & (k <= last) & (rng.random(len(d)) > drop)
    d = d.loc[keep].reset_index(drop=True)
    d["x"] = rng.normal(size=len(d)) + 0.05 * (d["year"] - 2004)
    d["w"] = rng.uniform(0.2, 3.0, len(d))
    d["region"] = d["id"].str[-1]
    post = (d["g"] > 0) & (d["year"] >= d["g"])
    d["y"] = (0.3 * d["x"] + 0.5 * post * (1 + d["year"] - d["g"])
              + rng.normal(size=len(d)) + d["id"].str[-2:].astype(int) * 0.01)
    return d.sample(frac=1.0, random_state=seed).reset_index(drop=True)


KW = dict(outcome="y", unit="id", time="year")


def _dense(monkeypatch) -> None:
    """The dense-design path of fit_fe_codes (the exact two-way demean stays on)."""
    monkeypatch.setattr(fe_mod, "two_way_projector", lambda *a, **k: None)


def _same(fast, slow, tol=SAME) -> None:
    """Same terms, estimates, vcov (to ``tol`` of the largest entry), spec, diagnostics."""
    _assert_same_fit(fast, slow, tol)


_CASES = [
    {"weights": "w"},
    {"weights": "w", "vcov": "hetero"},
    {"weights": "w", "vcov": "iid"},
    {"weights": "w", "cluster": ["id", "year"]},
    {"weights": "w", "cluster": "region", "covariates": ["x"]},
    {"weights": "w", "leads": 2, "lags": 2, "bin_endpoints": False},
    {"vcov": "driscoll_kraay"},
    {"vcov": "driscoll_kraay", "bandwidth": 3, "covariates": ["x"]},
    {"vcov": "driscoll_kraay", "bandwidth": 0, "leads": 3, "lags": 2},
    {"vcov": "driscoll_kraay", "bandwidth": 2, "weights": "w", "covariates": ["x"]},
]


@pytest.mark.parametrize("estimator, kwargs", [
    *(("event_study", kw) for kw in _CASES),
    *(("twfe", kw) for kw in _CASES if not {"leads"} & set(kw)),
])
@pytest.mark.parametrize("seed", [0, 1])
def test_lean_path_equals_dense_path(monkeypatch, estimator, kwargs, seed):
    d = _panel(seed)
    fn = getattr(ti, estimator)
    calls = []
    real = fe_mod.ols_twoway_small_time
    monkeypatch.setattr(fe_mod, "ols_twoway_small_time",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    fast = fn(d, **KW, cohort="g", **kwargs)
    assert calls == [1]                                       # really the lean path
    assert fast.vcov_source.scores is None                   # no (n, k) score matrix
    _dense(monkeypatch)
    slow = fn(d, **KW, cohort="g", **kwargs)
    assert calls == [1]
    assert slow.vcov_source.scores is not None
    _same(fast, slow)


def _dense_dk(d: pd.DataFrame, bandwidth: float | None, weights: bool = False):
    """Old path: dummy columns, both FE swept out, OLS, linearmodels' DriscollKraay."""
    u = pd.factorize(d["id"])[0]
    t = pd.factorize(d["year"], sort=True)[0]
    g = d["g"].to_numpy()
    rel = np.where(g > 0, d["year"] - g, np.nan)
    cols = sorted(int(e) for e in np.unique(rel[~np.isnan(rel)]) if e != -1)
    x = np.column_stack([(rel == e).astype(float) for e in cols] + [d["x"].to_numpy()])
    dm = demean(np.column_stack([d["y"].to_numpy(), x]), [u, t])
    fit = ols(dm.x[:, 1:], dm.x[:, 0])
    v, spec = driscoll_kraay(dm.x[:, 1:], fit.resid, t, u,
                             k_absorbed=int(u.max()) + int(t.max()) + 1, bandwidth=bandwidth)
    names = [f"rel_time={e}" for e in cols] + ["x"]
    return pd.Series(fit.coef, index=names), pd.DataFrame(v, index=names, columns=names), spec


@pytest.mark.parametrize("bandwidth", [None, 0, 2, 5])
def test_driscoll_kraay_from_period_sums_equals_linearmodels_dense(bandwidth):
    d = _panel(3, n_units=50, n_periods=8)
    params, v, spec = _dense_dk(d, bandwidth)
    r = ti.event_study(d, **KW, cohort="g", covariates=["x"], vcov="driscoll_kraay",
                       bandwidth=bandwidth)
    names = list(params.index)
    np.testing.assert_allclose(r.params[names], params, rtol=0,
                               atol=SAME * np.abs(params).max())
    np.testing.assert_allclose(r.vcov.loc[names, names], v, rtol=0,
                               atol=SAME * np.abs(v.to_numpy()).max())
    assert r.vcov_spec.small_sample == pytest.approx(spec.small_sample, rel=1e-14)
    assert r.vcov_spec.df == spec.df


def test_driscoll_kraay_from_sums_kernels_and_no_dof():
    rng = np.random.default_rng(5)
    n, k, n_t = 200, 3, 10
    x = rng.normal(size=(n, k))
    e = rng.normal(size=n)
    t = np.sort(rng.integers(0, n_t, n))
    u = rng.integers(0, 20, n)
    sums = np.stack([np.bincount(t, weights=x[:, j] * e, minlength=n_t) for j in range(k)], 1)
    bread = np.linalg.inv(x.T @ x)
    for kernel in ("bartlett", "parzen", "qs"):
        a, _ = driscoll_kraay(x, e, t, u, k_absorbed=25, bandwidth=3, kernel=kernel)
        b, _ = driscoll_kraay_from_sums(sums, bread, n=n, k_absorbed=25, bandwidth=3,
                                        kernel=kernel)
        np.testing.assert_allclose(b, a, rtol=0, atol=SAME * np.abs(a).max())
    # no residual degree of freedom: NaN, and the spec says why (the result built from it
    # warns, quoting the spec: tests/core/test_vcov_saturated.py)
    v, vspec = driscoll_kraay_from_sums(sums, bread, n=n, k_absorbed=n, bandwidth=3)
    assert np.isnan(v).all() and vspec.small_sample["df_resid"] <= 0
    assert vspec.description.startswith("not estimable: no residual degrees of freedom")
    with pytest.raises(SpecificationError, match="bandwidth"):
        driscoll_kraay_from_sums(sums, bread, n=n, k_absorbed=5, bandwidth=n_t)


def test_weighted_event_study_equals_dummy_variable_wls():
    import statsmodels.api as sm

    d = _panel(4, n_units=30, n_periods=7)
    r = ti.event_study(d, **KW, cohort="g", weights="w", covariates=["x"], vcov="hetero")
    g = d["g"].to_numpy()
    rel = np.where(g > 0, d["year"] - g, np.nan)
    names = [n for n in r.terms if n.startswith("rel_time=")]
    x = pd.DataFrame({n: (rel == int(n.split("=")[1])).astype(float) for n in names})
    x["x"] = d["x"]
    dummies = pd.get_dummies(d[["id", "year"]].astype(str), drop_first=True, dtype=float)
    xx = pd.concat([x, dummies], axis=1).assign(const=1.0)
    oracle = sm.WLS(d["y"], xx, weights=d["w"]).fit(cov_type="HC1")
    cols = [*names, "x"]
    np.testing.assert_allclose(r.params[cols], oracle.params[cols], rtol=0, atol=1e-9)
    # HC1: statsmodels counts every dummy in K, as fixest does for hetero
    np.testing.assert_allclose(r.vcov.loc[cols, cols], oracle.cov_params().loc[cols, cols],
                               rtol=1e-8, atol=1e-14)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), n_units=st.integers(8, 40), n_periods=st.integers(4, 9),
       drop=st.sampled_from([0.0, 0.1, 0.3]),
       opts=st.sampled_from([{"weights": "w"}, {"weights": "w", "covariates": ["x"]},
                             {"vcov": "driscoll_kraay"},
                             {"vcov": "driscoll_kraay", "bandwidth": 1},
                             {"vcov": "driscoll_kraay", "weights": "w"}]))
def test_lean_path_property(seed, n_units, n_periods, drop, opts):
    d = _panel(seed, n_units=n_units, n_periods=n_periods, drop=drop)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fast = ti.event_study(d, **KW, cohort="g", **opts)
        except (InputError, SpecificationError):
            return                     # e.g. a draw without a treated unit or pre-period
        real = fe_mod.two_way_projector
        fe_mod.two_way_projector = lambda *a, **k: None
        try:
            slow = ti.event_study(d, **KW, cohort="g", **opts)
        finally:
            fe_mod.two_way_projector = real
    vc = np.abs(np.asarray(slow.vcov, dtype=float))
    if np.isfinite(vc).any() and np.nanmax(vc) < 1e-20 * max(
            1.0, float(np.nanmax(np.abs(slow.params.to_numpy())))) ** 2:
        # a saturated draw (e.g. 8 units x 4 periods, 30% dropped, weights): no residual
        # variation, both variances are rounding noise (~1e-30) that no tolerance compares
        np.testing.assert_allclose(fast.params, slow.params, rtol=1e-9, atol=1e-9)
        return
    _same(fast, slow, tol=1e-11)


# --- the reference period when the data have no pre-treatment period ----------------------

def _no_pre(always: bool) -> pd.DataFrame:
    d = pd.DataFrame({"id": np.repeat([f"c{i}" for i in range(20)], 6),
                      "year": np.tile(np.arange(2000, 2006), 20)})
    d["g"] = 2000 if always else np.where(d.index < 60, 2000, 0)
    d["y"] = np.random.default_rng(0).normal(size=len(d))
    return d


@pytest.mark.parametrize("always", [False, True])
def test_no_pre_period_names_the_cause(always):
    with pytest.raises(InputError) as exc:
        ti.event_study(_no_pre(always), **KW, cohort="g")
    msg = str(exc.value)
    assert "no treated unit is observed before its first treated period" in msg
    assert "'c0'" in msg and "g = 2000" in msg and "first observed year = 2000" in msg
    assert f"{0 if always else 10} never-treated" in msg
    assert "earliest relative period observed': 0" in msg
    assert "Fix: include periods before the earliest treatment" in msg


def test_reference_beyond_the_observed_leads_or_window():
    d = _no_pre(False).assign(g=lambda x: np.where(x.index < 60, 2002, 0))
    with pytest.raises(SpecificationError, match=r"ref=-3 is not observed.*at most 2 period"):
        ti.event_study(d, **KW, cohort="g", ref=-3)
    with pytest.raises(SpecificationError, match=r"ref=4 is not observed.*at most 3 period"):
        ti.event_study(d, **KW, cohort="g", ref=4)
    with pytest.raises(SpecificationError, match=r"outside the event window.*leads=2"):
        ti.event_study(d, **KW, cohort="g", ref=-3, leads=2)


@pytest.mark.parametrize("vcov, cluster", [("hetero", None), ("iid", None),
                                           ("cluster", "year"), ("cluster", ["id", "year"])])
def test_weighted_with_vcov_equals_refit(vcov, cluster):
    """The weighted fit's stored score sums give the same variance as a refit."""
    d = _panel(6)
    base = ti.event_study(d, **KW, cohort="g", weights="w", covariates=["x"])
    new = base.with_vcov(vcov, cluster=cluster)
    refit = ti.event_study(d, **KW, cohort="g", weights="w", covariates=["x"], vcov=vcov,
                           cluster=cluster)
    np.testing.assert_allclose(new.cov, refit.cov, rtol=0,
                               atol=SAME * np.nanmax(np.abs(refit.cov)))
    assert new.vcov_spec.kind == refit.vcov_spec.kind


@pytest.mark.parametrize("opts, bound", [({"weights": "w"}, 120),
                                         ({"vcov": "driscoll_kraay"}, 110)])
def test_weighted_and_driscoll_kraay_memory_is_linear_in_rows(opts, bound):
    """Peak traced memory of one fit per row stays flat from 1e5 to 3e5 rows and below
    ``bound`` bytes a row (measured ~99 weighted, ~83 Driscoll-Kraay; the dense path took
    855 and 660-780 at 1e6 rows)."""
    import tracemalloc

    per_row = []
    for n_units in (10_000, 30_000):
        d = _staggered(n_units)
        d["w"] = np.random.default_rng(1).uniform(0.5, 1.5, len(d))
        kw = dict(outcome="y", unit="unit", time="year", cohort="cohort", **opts)
        ti.event_study(d.iloc[:2000], **kw)
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            r = ti.event_study(d, **kw)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert len(r.params) == 16
        per_row.append((peak - base) / len(d))
    assert max(per_row) < bound, per_row
    assert per_row[1] < 1.2 * per_row[0], per_row
