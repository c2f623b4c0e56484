"""One contract, run over every estimator: the shared results protocol (labelled params and
full vcov, tidy schema, conf_int, summary, spec, diagnostics, immutability), the caller's
frame untouched, and the truth covered on data with a known homogeneous effect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import twinimpact as ti
from twinimpact.estimators.registry import ESTIMATORS
from twinimpact.results import EstimationResult

pytestmark = pytest.mark.filterwarnings("ignore::twinimpact.errors.TwinImpactWarning")

EFFECT = 0.5


def _panel(seed: int = 3) -> pd.DataFrame:
    """40 units x 10 years, cohorts 2004/2006 and never; constant effect EFFECT."""
    rng = np.random.default_rng(seed)
    n, t = 40, 10
    unit = np.repeat(np.arange(n), t)
    year = np.tile(np.arange(2000, 2000 + t), n)
    g_of = np.where(np.arange(n) < 12, 2004, np.where(np.arange(n) < 24, 2006, 0))
    g = g_of[unit]
    treated = (g > 0) & (year >= g)
    y = (rng.normal(0, 1, n)[unit] + 0.1 * (year - 2000) + EFFECT * treated
         + rng.normal(0, 0.05, n * t))
    return pd.DataFrame({"unit": unit, "year": year, "g": g, "y": y,
                         "counts": rng.poisson(np.exp(1 + EFFECT * treated)),
                         "x": rng.normal(size=n * t), "D": treated.astype(int)})


CALLS = {
    "twfe": lambda d: ti.twfe(d, outcome="y", unit="unit", time="year", cohort="g"),
    "event_study": lambda d: ti.event_study(d, outcome="y", unit="unit", time="year",
                                            cohort="g"),
    "callaway_santanna": lambda d: ti.callaway_santanna(
        d, outcome="y", unit="unit", time="year", cohort="g").aggregate("simple"),
    "sun_abraham": lambda d: ti.sun_abraham(d, outcome="y", unit="unit", time="year",
                                            cohort="g").aggregate("simple"),
    "imputation": lambda d: ti.imputation(d, outcome="y", unit="unit", time="year", cohort="g"),
    "did2s": lambda d: ti.did2s(d, outcome="y", unit="unit", time="year", cohort="g"),
    "etwfe": lambda d: ti.etwfe(d, outcome="y", unit="unit", time="year",
                                cohort="g").aggregate("simple"),
    "synthetic_did": lambda d: ti.synthetic_did(
        d[(d["g"] == 0) | (d["g"] == 2006)], outcome="y", unit="unit", time="year",
        treated="D", se="placebo", n_reps=50, seed=1),
    "synthetic_did_event": lambda d: ti.synthetic_did_event(
        d, outcome="y", unit="unit", time="year", treated="D", placebo=2, se="bootstrap",
        n_reps=20, seed=1),
    "ppml": lambda d: ti.ppml(d, outcome="counts", regressors=["D"],
                              fixed_effects=("unit", "year"), cluster="unit"),
    "did_multiplegt": lambda d: ti.did_multiplegt(
        d, outcome="y", unit="unit", time="year", treatment="D", effects=3, placebo=2),
    "poisson_event_study": lambda d: ti.poisson_event_study(
        d, outcome="counts", unit="unit", time="year", cohort="g", cluster="unit"),
}
EFFECT_TERM = {"ppml": "D"}


def test_every_registered_estimator_is_covered():
    assert set(CALLS) == set(ESTIMATORS)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_results_protocol(name):
    d = _panel()
    before = d.copy(deep=True)
    r = CALLS[name](d)
    pd.testing.assert_frame_equal(d, before)            # caller's frame untouched
    assert isinstance(r, EstimationResult)
    k = len(r.params)
    assert r.vcov.shape == (k, k)
    assert list(r.vcov.index) == list(r.params.index) == list(r.vcov.columns)
    assert list(r.std_errors.index) == list(r.params.index)
    assert r.nobs > 0 and isinstance(r.spec, type(r.spec)) and len(r.spec) > 0
    assert r.vcov_spec.kind
    f = r.to_frame(alpha=0.1)
    for col in ("estimator", "term", "estimate", "std_error", "statistic", "p_value",
                "ci_lower", "ci_upper", "ci_kind"):
        assert col in f.columns, col
    ci = r.conf_int(0.1)
    np.testing.assert_allclose(ci["lower"].to_numpy(), f["ci_lower"].to_numpy())
    assert (f["ci_lower"] <= f["estimate"]).all() and (f["estimate"] <= f["ci_upper"]).all()
    assert isinstance(r.summary(), str) and r.estimator in r.summary()
    with pytest.raises((AttributeError, TypeError)):
        r.nobs = 0  # type: ignore[misc]
    p = r.params
    p.iloc[0] = 1e9
    assert r.params.iloc[0] != 1e9
    term = EFFECT_TERM.get(name, "ATT")
    assert term in set(f["term"])
    # every table and plot takes it without estimator-specific code
    assert isinstance(ti.table({name: r}), str)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_known_effect_is_covered(name):
    r = CALLS[name](_panel())
    f = r.to_frame().set_index("term")
    term = EFFECT_TERM.get(name, "ATT")
    lo, hi = f.loc[term, ["ci_lower", "ci_upper"]]
    assert lo <= EFFECT <= hi, (name, f.loc[term].to_dict())


@pytest.mark.parametrize("method", ["twfe", "callaway_santanna", "sun_abraham", "imputation",
                                    "did2s", "poisson"])
def test_event_study_methods_share_one_call(method):
    d = _panel()
    kw = {"outcome": "counts"} if method == "poisson" else {"outcome": "y"}
    r = ti.event_study(d, **kw, unit="unit", time="year", cohort="g", leads=3, lags=3,
                       method=method)
    f = r.to_frame()
    rel = f["rel_time"].dropna()
    assert len(rel) >= 4 and rel.min() >= -3 and rel.max() <= 3
    post = f[(f["rel_time"] >= 0)]
    truth = EFFECT
    assert ((post["ci_lower"] <= truth) & (truth <= post["ci_upper"])).mean() >= 0.75
    ax = ti.plot_event_study({method: r})
    assert ax is not None
