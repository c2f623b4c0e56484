"""Randomization inference: enumeration, the refit oracle, size under no effect, inputs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from twinimpact.errors import InputError, SpecificationError
from twinimpact.estimators.twfe import twfe
from twinimpact.inference.randomization import randomization_inference


def _panel(n_units=12, n_periods=6, treated=(0,), start=3, effect=0.0, seed=0):
    rng = np.random.default_rng(seed)
    d = pd.DataFrame({"u": np.repeat(np.arange(n_units), n_periods),
                      "t": np.tile(np.arange(n_periods), n_units)})
    d["g"] = np.where(d["u"].isin(treated), start, 0)
    d["y"] = (rng.normal(size=n_units)[d["u"]] + 0.3 * d["t"]
              + rng.normal(size=len(d)) + effect * ((d["g"] > 0) & (d["t"] >= d["g"])))
    return d


def test_exact_enumeration_counts_and_p_value():
    d = _panel(treated=(0, 1))
    r = randomization_inference(d, outcome="y", unit="u", time="t", cohort="g")
    assert r.exact and r.n_assignments == math.comb(12, 2) == r.n_perms
    assert r.p_value * r.n_perms == pytest.approx(round(r.p_value * r.n_perms))
    # the observed assignment is one of the enumerated ones
    assert np.any(np.isclose(r.placebo, r.observed, rtol=1e-12))
    # the same for any seed
    r2 = randomization_inference(d, outcome="y", unit="u", time="t", cohort="g", seed=99)
    assert r2.p_value == r.p_value


def test_staggered_cohorts_multinomial_count():
    d = _panel(n_units=8, treated=(0, 1))
    d.loc[d["u"] == 1, "g"] = 4
    r = randomization_inference(d, outcome="y", unit="u", time="t", cohort="g")
    assert r.n_assignments == 8 * 7  # two distinct cohorts among 8 units


def test_fast_twfe_equals_refit_oracle():
    d = _panel(treated=(0,), effect=1.0)
    before = d.copy()

    def refit(x):
        return twfe(x, outcome="y", unit="u", time="t", cohort="g")

    for stat in ("estimate", "t"):
        fast = randomization_inference(d, outcome="y", unit="u", time="t", cohort="g",
                                       statistic=stat)
        slow = randomization_inference(d, outcome="y", unit="u", time="t", cohort="g",
                                       estimator=refit, statistic=stat)
        assert fast.observed == pytest.approx(slow.observed, rel=1e-9)
        np.testing.assert_allclose(np.sort(fast.placebo), np.sort(slow.placebo), rtol=1e-8)
        assert fast.p_value == slow.p_value
    assert fast.observed == pytest.approx(refit(d).tstats["ATT"], rel=1e-9)
    pd.testing.assert_frame_equal(d, before)


def test_monte_carlo_plus_one_and_seed():
    d = _panel(n_units=20, treated=(0, 1, 2, 3), effect=0.0)
    a = randomization_inference(d, outcome="y", unit="u", time="t", cohort="g",
                                n_reps=199, seed=5)
    b = randomization_inference(d, outcome="y", unit="u", time="t", cohort="g",
                                n_reps=199, seed=5)
    assert not a.exact and a.n_perms == 199
    assert a.p_value == b.p_value
    extreme = np.sum(np.abs(a.placebo) >= abs(a.observed) * (1 - 1e-10))
    assert a.p_value == pytest.approx((1 + extreme) / 200)
    assert 1 / 200 <= a.p_value <= 1
    frame = a.to_frame()
    assert frame.loc[0, "exact"] == np.False_ and frame.loc[0, "n_perms"] == 199


def test_detects_a_large_effect():
    d = _panel(n_units=15, treated=(0, 1), effect=5.0)
    r = randomization_inference(d, outcome="y", unit="u", time="t", cohort="g")
    assert r.p_value <= 1 / r.n_assignments + 1e-12


@pytest.mark.slow
def test_size_with_no_effect():
    """One treated unit among 20: the exact test rejects at 5% in 1 of 20 assignments."""
    rej, n_sim = 0, 300
    for s in range(n_sim):
        d = _panel(n_units=20, n_periods=5, treated=(s % 20,), effect=0.0, seed=s)
        r = randomization_inference(d, outcome="y", unit="u", time="t", cohort="g")
        rej += r.p_value <= 0.05
    # binomial(300, 0.05) = 15 +/- 3.8; allow 4 sd
    assert 1 <= rej <= 30


def test_bad_inputs():
    d = _panel()
    with pytest.raises(SpecificationError, match="statistic"):
        randomization_inference(d, outcome="y", unit="u", time="t", cohort="g",
                                statistic="z")
    with pytest.raises(SpecificationError, match="estimator"):
        randomization_inference(d, outcome="y", unit="u", time="t", cohort="g",
                                estimator="sdid")
    with pytest.raises(InputError, match="treated"):
        randomization_inference(d.assign(g=0), outcome="y", unit="u", time="t",
                                cohort="g")
    with pytest.raises(SpecificationError, match="n_reps"):
        randomization_inference(d, outcome="y", unit="u", time="t", cohort="g", n_reps=0)
