"""Driscoll-Kraay standard errors for the two-way fixed-effects estimators, against
linearmodels' PanelOLS with entity and time effects (the same estimator, fitted by
linearmodels end to end), on balanced and unbalanced panels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from linearmodels.panel import PanelOLS

import twinimpact as ti
from twinimpact.errors import SpecificationError

#: Both sides compute the same closed form; only summation order differs.
EXACT = 1e-10

pytestmark = pytest.mark.filterwarnings("ignore::twinimpact.errors.TwinImpactWarning")


def _lm(d: pd.DataFrame, cols: list[str], **fit) -> object:
    p = d.set_index(["countyreal", "year"])
    return PanelOLS(p["lemp"], p[cols], entity_effects=True, time_effects=True).fit(
        cov_type="kernel", debiased=True, **fit)


def _with_d(m: pd.DataFrame) -> pd.DataFrame:
    g = m["first.treat"]
    return m.assign(D=((g > 0) & (m["year"] >= g)).astype(float))


@pytest.mark.parametrize("drop", [0.0, 0.15])
def test_twfe_driscoll_kraay_equals_linearmodels(mpdta, drop):
    m = _with_d(mpdta)
    m["x"] = np.random.default_rng(1).normal(size=len(m)) + 0.1 * (m["year"] - 2003)
    if drop:
        m = m.sample(frac=1 - drop, random_state=4).sort_values(["countyreal", "year"])
    r = ti.twfe(m, outcome="lemp", unit="countyreal", time="year", cohort="first.treat",
                covariates=["x"] if drop else None, vcov="driscoll_kraay")
    ref = _lm(m, ["D"] + (["x"] if drop else []))
    if drop:
        assert r.params["x"] == pytest.approx(ref.params["x"], abs=EXACT)
        assert r.std_errors["x"] == pytest.approx(ref.std_errors["x"], rel=EXACT)
    assert r.params["ATT"] == pytest.approx(ref.params["D"], abs=EXACT)
    assert r.std_errors["ATT"] == pytest.approx(ref.std_errors["D"], rel=EXACT)
    assert r.vcov_spec.kind == "driscoll_kraay"
    assert r.vcov_spec.small_sample["bandwidth"] == 2.0       # floor(4 (5/100)^(2/9))
    assert r.vcov_spec.df == 4.0


@pytest.mark.parametrize("bw", [1, 3])
def test_event_study_driscoll_kraay_equals_linearmodels(mpdta, bw):
    r = ti.event_study(mpdta, outcome="lemp", unit="countyreal", time="year",
                       cohort="first.treat", vcov="driscoll_kraay", bandwidth=bw)
    g = mpdta["first.treat"]
    rel = np.where(g > 0, mpdta["year"] - g, np.nan)
    cols = [f"rel_time={k}" for k in (-4, -3, -2, 0, 1, 2, 3)]
    m = mpdta.assign(**{c: (rel == int(c.split("=")[1])).astype(float) for c in cols})
    ref = _lm(m, cols, bandwidth=bw)
    np.testing.assert_allclose(r.params[cols], ref.params[cols], rtol=0, atol=EXACT)
    np.testing.assert_allclose(r.vcov.loc[cols, cols], ref.cov.loc[cols, cols], rtol=EXACT,
                               atol=1e-16)
    # the ATT row is the mean of the post coefficients with its delta-method variance
    post = [c for c in cols if int(c.split("=")[1]) >= 0]
    a = np.full(len(post), 1 / len(post))
    assert r.std_errors["ATT"] == pytest.approx(
        float(np.sqrt(a @ ref.cov.loc[post, post].to_numpy() @ a)), rel=EXACT)


@pytest.mark.parametrize("estimator", ["twfe", "event_study"])
def test_weighted_driscoll_kraay_equals_linearmodels(mpdta, estimator):
    """WLS with Driscoll-Kraay: linearmodels' PanelOLS(weights=...) sums the weighted
    scores w x e by period, as the fit's score sums do; unbalanced panel."""
    rng = np.random.default_rng(2)
    m = _with_d(mpdta).sample(frac=0.9, random_state=3).sort_values(["countyreal", "year"])
    m["w"] = rng.uniform(0.3, 3.0, len(m))
    kw = dict(outcome="lemp", unit="countyreal", time="year", cohort="first.treat",
              vcov="driscoll_kraay", weights="w", bandwidth=2)
    if estimator == "twfe":
        r = ti.twfe(m, **kw)
        cols, ours = ["D"], ["ATT"]
    else:
        r = ti.event_study(m, **kw)
        rel = np.where(m["first.treat"] > 0, m["year"] - m["first.treat"], np.nan)
        ours = [c for c in r.terms if c.startswith("rel_time=")]
        m = m.assign(**{c: (rel == int(c.split("=")[1])).astype(float) for c in ours})
        cols = ours
    p = m.set_index(["countyreal", "year"])
    ref = PanelOLS(p["lemp"], p[cols], entity_effects=True, time_effects=True,
                   weights=p["w"]).fit(cov_type="kernel", debiased=True, bandwidth=2)
    np.testing.assert_allclose(r.params[ours], ref.params[cols], rtol=0, atol=EXACT)
    np.testing.assert_allclose(r.vcov.loc[ours, ours], ref.cov.loc[cols, cols], rtol=EXACT,
                               atol=1e-16)


def test_driscoll_kraay_bad_input(mpdta):
    m = mpdta.assign(w=1.0)
    with pytest.raises(SpecificationError, match="conflicts"):
        ti.twfe(m, outcome="lemp", unit="countyreal", time="year", cohort="first.treat",
                vcov="driscoll_kraay", cluster="countyreal")
    with pytest.raises(SpecificationError, match="bandwidth"):
        ti.twfe(m, outcome="lemp", unit="countyreal", time="year", cohort="first.treat",
                vcov="driscoll_kraay", bandwidth=5)
