"""One vocabulary: every renamed keyword still works for one release, warns with a
TwinImpactDeprecationWarning that names the new keyword, and gives the same numbers; the
synonyms ("group"/"cohort", treated/treatment) give the same results without a warning;
alpha and Literal options are checked with one wording."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import twinimpact as ti
from twinimpact.errors import (
    SpecificationError,
    TwinImpactDeprecationWarning,
    TwinImpactWarning,
    check_alpha,
    check_literal,
)
from twinimpact.estimators.twfe import _example_panel

KW = dict(outcome="y", unit="id", time="year", cohort="g")


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return _example_panel(n_units=30, n_years=8, seed=3)


def _same(a, b) -> None:
    fa, fb = a.to_frame(), b.to_frame()
    pd.testing.assert_frame_equal(fa, fb)


def _no_warning(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error", TwinImpactDeprecationWarning)
        return fn()


def test_deprecation_warning_class():
    assert issubclass(TwinImpactDeprecationWarning, TwinImpactWarning)
    # shown to end users by default, as pandas' deprecations
    assert issubclass(TwinImpactDeprecationWarning, FutureWarning)
    assert ti.errors.TwinImpactDeprecationWarning is TwinImpactDeprecationWarning


def test_sun_abraham_control_is_control_group(panel):
    new = _no_warning(lambda: ti.sun_abraham(panel, **KW, control_group="last_treated"))
    with pytest.warns(TwinImpactDeprecationWarning, match="use control_group="):
        old = ti.sun_abraham(panel, **KW, control="last_treated")
    _same(new, old)
    assert old.spec["control_group"] == "last_treated"
    with pytest.raises(SpecificationError, match="same option"):
        ti.sun_abraham(panel, **KW, control="never_treated", control_group="last_treated")


def test_group_and_cohort_aggregations_are_synonyms(panel):
    sa = ti.sun_abraham(panel, **KW)
    a, b = sa.aggregate("cohort"), _no_warning(lambda: sa.aggregate("group"))
    _same(a, b)
    assert any(t.startswith("cohort=") for t in a.terms)
    cs = ti.callaway_santanna(panel, **KW)
    a, b = cs.aggregate("group"), _no_warning(lambda: cs.aggregate("cohort"))
    _same(a, b)
    with pytest.raises(SpecificationError, match="type: expected one of"):
        cs.aggregate("cohorts")


def test_callaway_santanna_bootstrap_is_n_reps(panel):
    new = _no_warning(lambda: ti.callaway_santanna(panel, **KW, n_reps=99, seed=4))
    with pytest.warns(TwinImpactDeprecationWarning, match="use n_reps="):
        old = ti.callaway_santanna(panel, **KW, bootstrap=99, seed=4)
    _same(new, old)
    assert "bootstrap" in new.vcov_spec.kind
    agg_new = new.aggregate("dynamic", n_reps=49)
    with pytest.warns(TwinImpactDeprecationWarning, match="use n_reps="):
        agg_old = new.aggregate("dynamic", bootstrap=49)
    _same(agg_new, agg_old)
    with pytest.raises(SpecificationError, match="same option"):
        ti.callaway_santanna(panel, **KW, n_reps=9, bootstrap=9)


def test_randomization_n_perms_is_n_reps(panel):
    d = _example_panel(n_units=14, n_years=6, seed=1)
    kw = dict(KW, seed=2)
    new = _no_warning(lambda: ti.randomization_inference(d, **kw, n_reps=40))
    with pytest.warns(TwinImpactDeprecationWarning, match="n_perms= is deprecated"):
        old = ti.randomization_inference(d, **kw, n_perms=40)
    assert not new.exact and new.n_perms == old.n_perms == 40
    np.testing.assert_array_equal(new.placebo, old.placebo)
    assert new.p_value == old.p_value


def test_honest_did_lf_sims_is_n_reps():
    b = np.array([0.1, -0.05, 0.3, 0.4])
    s = np.diag([0.01, 0.01, 0.02, 0.02])
    kw = dict(num_pre=2, num_post=2, m_values=[0.5], grid_points=60)
    new = _no_warning(lambda: ti.honest_did(b, s, **kw, n_reps=150))
    with pytest.warns(TwinImpactDeprecationWarning, match="use n_reps="):
        old = ti.honest_did(b, s, **kw, lf_sims=150)
    pd.testing.assert_frame_equal(new, old)


@pytest.fixture(scope="module")
def clustered() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    d = pd.DataFrame({"g": np.repeat(np.arange(8), 15), "x": rng.normal(size=120)})
    d["y"] = 0.3 * d["x"] + rng.normal(size=8)[d["g"]] + rng.normal(size=120)
    return d


def test_wild_bootstrap_weights_is_weight_type(clustered):
    kw = dict(outcome="y", regressors=["x"], cluster="g", term="x", n_reps=199, seed=5)
    new = _no_warning(lambda: ti.wild_cluster_bootstrap(clustered, **kw, weight_type="webb"))
    with pytest.warns(TwinImpactDeprecationWarning, match="use weight_type="):
        old = ti.wild_cluster_bootstrap(clustered, **kw, weights="webb")
    assert (new.p_value, new.statistic, new.weights) == (old.p_value, old.statistic, "webb")
    np.testing.assert_array_equal(new.conf_int, old.conf_int)
    # weights= means observation weights elsewhere: a column name is refused, not misread
    with pytest.raises(SpecificationError, match="observation weights"):
        ti.wild_cluster_bootstrap(clustered, **kw, weights="x")


def test_case_study_takes_unit_time_outcome():
    series = ti.simulated_city_exports(n_donors=6, start=2004, end=2015).rename(
        columns={"city": "c", "year": "yr", "exports": "x"})
    kw = dict(treated_city="Qingdao", partner="GBR", treated_from=2011, se=None)
    new = _no_warning(lambda: ti.case_study(series, unit="c", time="yr", outcome="x", **kw))
    with pytest.warns(TwinImpactDeprecationWarning) as rec:
        old = ti.case_study(series, city="c", year="yr", exports="x", **kw)
    said = " ".join(str(w.message) for w in rec)
    assert "use unit=" in said and "use time=" in said and "use outcome=" in said
    pd.testing.assert_frame_equal(new.table, old.table)


def test_synthetic_did_treatment_and_treated_are_synonyms():
    d = _example_panel(n_units=20, n_years=8, seed=2)
    d = d[d["g"].isin([0, 2005])].assign(w=lambda f: ((f["g"] > 0) & (f["year"] >= f["g"]))
                                         .astype(int))
    kw = dict(outcome="y", unit="id", time="year", se=None)
    a = _no_warning(lambda: ti.synthetic_did(d, **kw, treated="w"))
    b = _no_warning(lambda: ti.synthetic_did(d, **kw, treatment="w"))
    _same(a, b)
    with pytest.raises(SpecificationError, match="same column"):
        ti.synthetic_did(d, **kw, treated="w", treatment="g")


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, float("nan"), "0.05", True, None])
def test_alpha_one_check_one_wording(bad, panel):
    with pytest.raises(SpecificationError, match=r"alpha: expected a number in \(0, 1\)"):
        check_alpha(bad)
    # the estimators and the result methods use it
    with pytest.raises(SpecificationError, match=r"alpha: expected a number in \(0, 1\)"):
        ti.twfe(panel, **KW, alpha=bad)
    assert check_alpha(0.1) == 0.1 and check_alpha(np.float32(0.5)) == 0.5


def test_literal_one_wording():
    with pytest.raises(SpecificationError) as info:
        check_literal("vcov", "robus", ("iid", "hetero", "cluster", "robust"))
    assert str(info.value) == ("vcov: expected one of 'iid', 'hetero', 'cluster', 'robust', "
                               "got 'robus'. Did you mean 'robust'?")
    with pytest.raises(SpecificationError, match="se: expected one of"):
        check_literal("se", ["placebo"], ("placebo", None))     # unhashable value
