"""``result.with_vcov(...)`` equals fitting again with that variance (fixest
``summary(est, vcov = ...)``; R did re-clustering from the influence function)."""

from __future__ import annotations

import numpy as np
import pytest

import twinimpact as ti
from twinimpact.errors import SpecificationError

from .contract_cases import panel

pytestmark = pytest.mark.filterwarnings("ignore::twinimpact.errors.TwinImpactWarning")

#: with_vcov and the refit compute the same sums in the same order; only BLAS rounding
#: may differ.
RTOL = 1e-10


def _same(a, b):
    assert a.vcov_spec == b.vcov_spec
    np.testing.assert_allclose(a.cov, b.cov, rtol=RTOL, atol=0)
    np.testing.assert_array_equal(a.coef, b.coef)
    pd_a, pd_b = a.to_frame(), b.to_frame()
    np.testing.assert_allclose(pd_a["ci_lower"], pd_b["ci_lower"], rtol=RTOL)
    if a.pretrend_test is not None:
        assert a.pretrend_test.statistic == pytest.approx(b.pretrend_test.statistic,
                                                          rel=RTOL, nan_ok=True)
        assert a.pretrend_test.computed == b.pretrend_test.computed
        if b.pretrend_test.computed:  # a singular re-clustered CS pre-test has no extension
            assert a.pretrend_test.note == b.pretrend_test.note


@pytest.mark.parametrize("aggregation", [None, "simple", "dynamic", "group"])
def test_callaway_santanna_recluster_equals_refit(aggregation):
    d = panel()
    kw = dict(outcome="y", unit="unit", time="year", cohort="g")
    base = ti.callaway_santanna(d, **kw)
    refit = ti.callaway_santanna(d, **kw, cluster="state")
    if aggregation:
        base, refit = base.aggregate(aggregation), refit.aggregate(aggregation)
    new = base.with_vcov("cluster", cluster="state", data=d)
    _same(new, refit)
    assert base.vcov_spec.cluster == ()          # the original is untouched
    back = new.with_vcov("cluster", cluster="unit")
    np.testing.assert_allclose(back.cov, base.cov, rtol=RTOL)


def test_callaway_santanna_refuses_what_the_influence_function_cannot_give():
    d = panel()
    r = ti.callaway_santanna(d, outcome="y", unit="unit", time="year", cohort="g")
    with pytest.raises(SpecificationError, match="only vcov='cluster'"):
        r.with_vcov("hetero")
    with pytest.raises(SpecificationError, match="needs the data"):
        r.with_vcov("cluster", cluster="state")
    d2 = d.assign(state=np.arange(len(d)) % 3)
    with pytest.raises(SpecificationError, match="varies within unit"):
        r.with_vcov("cluster", cluster="state", data=d2)


PPML_KW = dict(outcome="counts", regressors=["D", "x"], fixed_effects=("unit", "year"))


@pytest.mark.parametrize("vcov, cluster", [("iid", None), ("hetero", None),
                                           ("cluster", "unit"), ("cluster", "state"),
                                           ("cluster", ("unit", "year"))])
def test_ppml_with_vcov_equals_refit(vcov, cluster):
    d = panel()
    base = ti.ppml(d, **PPML_KW)                     # iid by default (fixest >= 0.13)
    refit = ti.ppml(d, **PPML_KW, vcov=vcov, cluster=cluster)
    _same(base.with_vcov(vcov, cluster=cluster, data=d), refit)
    # and back from a clustered fit
    clustered = ti.ppml(d, **PPML_KW, cluster="state")
    _same(clustered.with_vcov(vcov, cluster=cluster, data=d), refit)


def test_sandwich_with_vcov_errors_name_the_fix():
    d = panel()
    r = ti.ppml(d, **PPML_KW)
    with pytest.raises(SpecificationError, match="needs cluster="):
        r.with_vcov("cluster")
    with pytest.raises(SpecificationError, match="needs the data"):
        r.with_vcov("cluster", cluster="state")
    with pytest.raises(SpecificationError, match="fitted on"):
        r.with_vcov("cluster", cluster="state", data=d.iloc[:10])
    d2 = d.assign(state=d["state"].where(d.index != 5))
    with pytest.raises(SpecificationError, match="cannot drop rows"):
        r.with_vcov("cluster", cluster="state", data=d2)
    with pytest.raises(SpecificationError, match="with_vcov is not available"):
        r.lincom(["D"]).with_vcov("iid")


TWFE_KW = dict(outcome="y", unit="unit", time="year", cohort="g")


@pytest.mark.parametrize("fn", ["twfe", "event_study"])
@pytest.mark.parametrize("vcov, cluster", [("iid", None), ("hetero", None),
                                           ("cluster", "state"), ("cluster", "year"),
                                           ("cluster", ("unit", "year"))])
def test_twfe_with_vcov_equals_refit(fn, vcov, cluster):
    d = panel()
    est = getattr(ti, fn)
    base = est(d, **TWFE_KW, covariates=["x"])      # clustered by unit (the default)
    refit = est(d, **TWFE_KW, covariates=["x"], vcov=vcov, cluster=cluster)
    _same(base.with_vcov(vcov, cluster=cluster, data=d), refit)


def test_event_study_with_vcov_on_the_dense_path_and_dropped_rows():
    # an unbalanced panel with a missing outcome and bin_endpoints=False: the general
    # (alternating projections) path and rows dropped before the fit
    d = panel().iloc[3:].reset_index(drop=True)
    d.loc[7, "y"] = np.nan
    kw = dict(TWFE_KW, leads=3, lags=2, bin_endpoints=False)
    base = ti.event_study(d, **kw)
    refit = ti.event_study(d, **kw, cluster="state")
    _same(base.with_vcov("cluster", cluster="state", data=d), refit)
