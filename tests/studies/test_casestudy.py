"""Tests of the one-treated-city case-study template and its simulated example series."""

from __future__ import annotations

import importlib
import sys
import types

import matplotlib
import numpy as np
import pandas as pd
import pytest

from twinimpact.errors import InputError, SpecificationError
from twinimpact.estimators.synthetic_did import synthetic_did
from twinimpact.studies.casestudy import (
    SIMULATED_NOTE,
    CaseStudyResult,
    case_study,
    simulated_city_exports,
)

matplotlib.use("Agg")

#: the simulated effect is 0.15 log points; with 14 donors, 11 pre-years and AR(1) noise
#: of sd ~0.046 the SDID estimate of the default series lies within 0.05 of it.
EFFECT = 0.15
EFFECT_TOL = 0.05
N_REPS = 30   # placebo replications in tests (SEs are only checked for being finite)


@pytest.fixture(scope="module")
def series() -> pd.DataFrame:
    return simulated_city_exports()


@pytest.fixture(scope="module")
def cs(series) -> CaseStudyResult:
    return case_study(series, treated_city="Qingdao", partner="GBR", treated_from=2011,
                      n_reps=N_REPS, seed=3)


def test_simulated_series_is_labelled(series):
    assert (series["note"] == SIMULATED_NOTE).all()
    assert "SIMULATED" in series.attrs["note"]
    assert series["source"].str.contains("simulated_city_exports").all()
    assert list(series.columns[:4]) == ["city", "partner", "year", "exports"]
    assert not series.duplicated(["city", "partner", "year"]).any()
    pd.testing.assert_frame_equal(series, simulated_city_exports())   # deterministic


def test_case_study_recovers_simulated_effect(cs):
    assert list(cs.table.index) == ["sdid", "sc", "did"]
    est = cs.table.loc["sdid", "estimate"]
    assert abs(est - EFFECT) < EFFECT_TOL
    assert cs.table.loc["sdid", "effect_pct"] == pytest.approx(100 * np.expm1(est))
    assert np.isfinite(cs.table["std_error"]).all()
    assert cs.weights["sdid"].sum() == pytest.approx(1.0)
    assert cs.weights["sc"].sum() == pytest.approx(1.0)
    assert "Qingdao" not in cs.weights.index and len(cs.weights) == 14
    assert list(cs.effect_curves.index) == list(range(2011, 2020))
    assert (cs.table["pre_rmse"] >= 0).all()
    text = cs.summary()
    assert "SIMULATED" in text and "Qingdao" in text and "placebo" in text


def test_case_study_equals_direct_synthetic_did(cs, series):
    d = series.assign(y=np.log(series["exports"]),
                      d=((series["city"] == "Qingdao") & (series["year"] >= 2011)).astype(int))
    direct = synthetic_did(d, outcome="y", unit="city", time="year", treated="d", se=None)
    assert float(cs.sdid.params["ATT"]) == pytest.approx(float(direct.params["ATT"]),
                                                         rel=1e-12)


def test_caller_frame_unchanged_and_seeded(series):
    before = series.copy(deep=True)
    a = case_study(series, treated_city="Qingdao", partner="GBR", treated_from=2011,
                   n_reps=10, seed=5, transform="level")
    pd.testing.assert_frame_equal(series, before)
    b = case_study(series, treated_city="Qingdao", partner="GBR", treated_from=2011,
                   n_reps=10, seed=5, transform="level")
    pd.testing.assert_frame_equal(a.table, b.table)
    assert "effect_pct" not in a.table.columns


def test_two_treated_cities(series):
    both = case_study(series, treated_city=["Qingdao", "Dalian"], partner="GBR",
                      treated_from=2011, se=None)
    assert both.sdid.diagnostics["N1"] == 2
    stag = case_study(series, treated_city=["Qingdao", "Dalian"], partner="GBR",
                      treated_from={"Qingdao": 2011, "Dalian": 2014}, se=None)
    assert list(stag.sdid.cohorts["cohort"]) == [2011, 2014]
    assert "cohort=2014" in stag.sdid.params.index


def test_bad_input(series):
    with pytest.raises(InputError, match="did you mean 'Qingdao'"):
        case_study(series, treated_city="Qingdan", partner="GBR", treated_from=2011)
    two = pd.concat([series, series.assign(partner="DEU")])
    with pytest.raises(InputError, match="partner="):
        case_study(two, treated_city="Qingdao", treated_from=2011)
    with pytest.raises(InputError, match="not found"):
        case_study(series, treated_city="Qingdao", partner="FRA", treated_from=2011)
    zero = series.copy()
    zero.loc[zero.index[3], "exports"] = 0.0
    with pytest.raises(InputError, match="transform='level'"):
        case_study(zero, treated_city="Qingdao", partner="GBR", treated_from=2011)
    with pytest.raises(SpecificationError, match="one year per treated city"):
        case_study(series, treated_city=["Qingdao", "Dalian"], partner="GBR",
                   treated_from={"Qingdao": 2011})
    with pytest.raises(SpecificationError, match="transform"):
        case_study(series, treated_city="Qingdao", partner="GBR", treated_from=2011,
                   transform="ln")


def test_honest_did_step_runs(series):
    pytest.importorskip("twinimpact.inference.honest_did")
    cs = case_study(series, treated_city="Qingdao", partner="GBR", treated_from=2011,
                    se=None, honest=True, honest_pre_periods=3,
                    honest_options={"restriction": "smoothness", "m_values": [0.0, 0.05]})
    assert cs.honest is not None and {"m", "lb", "ub", "method"} <= set(cs.honest.columns)
    es_terms = cs.event_study.to_frame()
    assert es_terms["rel_time"].min() == -4        # 3 pre coefficients + reference -1
    assert any("HonestDiD" in n for n in cs.notes)


def test_honest_did_hook_when_module_missing(series, monkeypatch):
    real = importlib.import_module

    def fake_import(name, *a, **k):
        if name == "twinimpact.inference.honest_did":
            raise ImportError("not installed")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    with pytest.raises(SpecificationError, match="honest=False"):
        case_study(series, treated_city="Qingdao", partner="GBR", treated_from=2011,
                   se=None, honest=True)
    cs = case_study(series, treated_city="Qingdao", partner="GBR", treated_from=2011,
                    se=None, honest="auto")
    assert cs.honest is None and any("skipped" in n for n in cs.notes)


def test_honest_did_hook_passes_event_study(series, monkeypatch):
    seen = {}

    def stub(betahat, sigma, *, num_pre, num_post, **kw):
        seen.update(n=len(betahat), shape=np.shape(sigma), num_pre=num_pre,
                    num_post=num_post, kw=kw)
        return pd.DataFrame({"m": [0.0], "lb": [0.0], "ub": [1.0], "method": ["stub"]})

    mod = types.ModuleType("twinimpact.inference.honest_did")
    mod.honest_did = stub
    monkeypatch.setitem(sys.modules, "twinimpact.inference.honest_did", mod)
    cs = case_study(series, treated_city="Qingdao", partner="GBR", treated_from=2011,
                    se=None, honest=True, honest_pre_periods=2,
                    honest_options={"m_values": [0, 1]})
    assert seen["num_pre"] == 2 and seen["num_post"] == 9 and seen["n"] == 11
    assert seen["shape"] == (11, 11) and seen["kw"]["m_values"] == [0, 1]
    assert cs.honest["method"].tolist() == ["stub"]


def test_plot(cs):
    import matplotlib.pyplot as plt

    axes = cs.plot()
    assert len(axes) == 2
    plt.close("all")
