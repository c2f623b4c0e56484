"""A fit with no residual degrees of freedom (n <= K, every residual zero) has no
variance estimate: NaN with the reason, never a standard error of 0 or a
ZeroDivisionError, for every variance kind; one degree of freedom more gives numbers."""

import warnings

import numpy as np
import pandas as pd
import pytest

import twinimpact as ti
from twinimpact.core.vcov import sandwich
from twinimpact.errors import NotComputableWarning

SATURATED = pd.DataFrame({"unit": [1, 1, 2, 2], "year": [1, 2, 1, 2],
                          "treated": [0, 1, 0, 0], "y": [1.0, 2.0, 3.0, 3.5]})
VCOVS = [{}, {"vcov": "hetero"}, {"vcov": "iid"}, {"cluster": ["unit", "year"]},
         {"vcov": "driscoll_kraay"}]


@pytest.mark.parametrize("opts", VCOVS, ids=["cluster", "hetero", "iid", "twoway", "dk"])
def test_saturated_twfe_gives_nan_se_with_reason(opts):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        r = ti.twfe(SATURATED, outcome="y", unit="unit", time="year",
                    treatment="treated", **opts)
    assert r.coef[0] == pytest.approx(0.5)  # the estimate is exact and reported
    assert np.isnan(r.cov).all()
    assert r.vcov_spec.description.startswith("not estimable: no residual degrees")
    msgs = [str(w.message) for w in rec if issubclass(w.category, NotComputableWarning)]
    assert len(msgs) == 1 and "standard error" in msgs[0] \
        and "no residual degrees of freedom (4 observations, 4 parameters" in msgs[0]
    assert "collinear" not in msgs[0]  # the estimate was computed: not "could not be"


ONE_MORE = pd.concat([SATURATED, pd.DataFrame({"unit": [3, 3], "year": [1, 2],
                                               "treated": [0, 0], "y": [2.0, 2.2]})])
#: ... and a third period (Driscoll-Kraay needs it: see below)
THIRD_PERIOD = pd.concat([ONE_MORE, pd.DataFrame({"unit": [1, 2, 3], "year": [3, 3, 3],
                                                  "treated": [1, 0, 0],
                                                  "y": [2.5, 3.1, 2.9]})])


@pytest.mark.parametrize("opts", VCOVS, ids=["cluster", "hetero", "iid", "twoway", "dk"])
def test_one_more_observation_gives_finite_positive_se(opts):
    d = THIRD_PERIOD if opts.get("vcov") == "driscoll_kraay" else ONE_MORE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = ti.twfe(d, outcome="y", unit="unit", time="year", treatment="treated", **opts)
    assert np.isfinite(r.cov).all() and r.cov[0, 0] > 0


def test_driscoll_kraay_over_two_periods_has_no_standard_error():
    """With period fixed effects and two periods, each period's sum of scores is zero by
    construction, so the Driscoll-Kraay variance is zero: it came out as 3.1e-32 (an SE
    of 1.8e-16 beside an estimate of 0.65, p ~ 0) and is now NaN with a warning and a
    note that say why; a third period gives a number (test above)."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        r = ti.twfe(ONE_MORE, outcome="y", unit="unit", time="year", treatment="treated",
                    vcov="driscoll_kraay")
    assert r.coef[0] == pytest.approx(0.65) and np.isnan(r.cov).all()
    assert any("no standard error for ATT: the variance is zero up to rounding"
               in str(w.message) for w in rec if issubclass(w.category, NotComputableWarning))
    assert any(n.startswith("no standard error for ATT") for n in r.diagnostics["notes"])


@pytest.mark.parametrize("kind", ["iid", "hetero", "cluster"])
@pytest.mark.parametrize("n", [3, 4])
def test_sandwich_n_at_most_k(kind, n):
    scores = np.zeros((n, 1))
    v, spec = sandwich(scores, np.eye(1), kind=kind, n=n, k=4,
                       cluster_codes=[np.arange(n) % 2] if kind == "cluster" else (),
                       cluster_names=["c"] if kind == "cluster" else (), sigma2=np.nan)
    assert np.isnan(v).all() and spec.small_sample["df_resid"] == n - 4
    assert spec.kind == kind and "not estimable" in spec.description
