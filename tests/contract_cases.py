"""THE registry of public result types checked by the contract test (tests/test_contract.py).

Every object a public twinimpact function returns -- estimator results and their
aggregations, bootstrap / randomization results, case and gravity studies, HonestDiD frames --
has one entry in :data:`CASES`. The contract test runs every check over every entry
(statsmodels' ``test_generic_methods`` / scikit-learn's ``check_estimator`` in spirit):

* ``ti.table`` in every format (markdown, html, latex, xlsx, frame) and the round trip
  "frame values == the object's tidy frame";
* ``ti.plot_event_study`` draws it when ``event_time=True`` and otherwise raises a
  ``SpecificationError`` naming the object;
* ``summary()`` is a non-empty string without Python reprs;
* for estimation results: ``vcov`` labelled, symmetric and PSD, ``std_errors ==
  sqrt(diag(vcov))``, ``ci_kind`` derived from ``vcov_spec``, the fixed diagnostics keys,
  a typed ``pretrend_test`` (required when ``pretrend=True``), a typed ``att_definition``
  whenever there is an ``ATT`` row;
* identical results when fitted twice; immutability (arrays read-only, attributes cannot be
  set); the caller's frame untouched;
* the true effect of the simulated panel inside the interval of ``effect_term``
  (``truth=True``).

To plug in a new estimator or result type, add ONE ``Case`` below, e.g.::

    Case("etwfe[dynamic]",
         lambda d: ti.etwfe(d, outcome="y", unit="unit", time="year",
                            cohort="g").aggregate("dynamic"),
         estimator="etwfe", event_time=True, pretrend=True),

``fit`` receives the shared simulated panel (:func:`panel`: 40 units x 10 years, cohorts
2004 / 2006 / never, constant effect :data:`EFFECT` on ``y``; ``counts`` is Poisson with a
proportional effect; ``x`` a covariate; ``D`` the 0/1 treatment indicator) and returns the
object. Cases that need other data (case study, gravity) build it from the panel or from
shipped test data inside ``fit``. ``estimator`` names the entry of
``twinimpact.estimators.registry.ESTIMATORS`` the case covers: every registered estimator
must be covered at least once (test_every_registered_estimator_is_covered).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import twinimpact as ti

#: True effect in the simulated panel (additive on ``y``; log-scale on ``counts``).
EFFECT = 0.5
DATA = Path(__file__).resolve().parent / "data"


def panel(seed: int = 3) -> pd.DataFrame:
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
                         "x": rng.normal(size=n * t), "D": treated.astype(int),
                         "state": unit // 4})


@dataclass(frozen=True)
class Case:
    """One public result type.

    name : unique id (test ids).
    fit : panel -> the object.
    estimator : the ESTIMATORS entry it covers, if any.
    event_time : ``ti.plot_event_study`` must draw it (else it must raise clearly).
    pretrend : it is an event-study result, so ``pretrend_test`` must be a PretrendTest.
    truth : the interval of ``effect_term`` must cover the true effect.
    effect_term : the term holding the effect.
    """

    name: str
    fit: Callable[[pd.DataFrame], Any]
    estimator: str | None = None
    event_time: bool = False
    pretrend: bool = False
    truth: bool = False
    effect_term: str = "ATT"


_COMMON = dict(outcome="y", unit="unit", time="year", cohort="g")


def _cs(d: pd.DataFrame, **kw: Any) -> Any:
    return ti.callaway_santanna(d, **_COMMON, **kw)


def _gravity(d: pd.DataFrame) -> Any:
    trade = pd.read_parquet(DATA / "gravity_yotov" / "agtpa_applications.parquet")
    tw = pd.DataFrame({"partner_iso3": ["FRA", "FRA", "USA", "ROU", "GBR", "DEU"],
                       "established_year": [1962, 1989, 1993, 1991, 2004, 1990],
                       "relation": ["twinning"] * 6})
    return ti.gravity_study(tw, trade, intensity="log1p_twinnings", border_year=False)


def _event_study_for_honest(d: pd.DataFrame) -> Any:
    return ti.event_study(d, **_COMMON, leads=3, lags=2)


CASES: list[Case] = [
    # ---- TWFE
    Case("twfe", lambda d: ti.twfe(d, **_COMMON), estimator="twfe", truth=True),
    Case("twfe[covariate,state cluster]",
         lambda d: ti.twfe(d, **_COMMON, covariates=["x"], cluster="state")),
    Case("event_study", lambda d: ti.event_study(d, **_COMMON), estimator="event_study",
         event_time=True, pretrend=True, truth=True),
    # ---- Callaway & Sant'Anna
    Case("callaway_santanna[att_gt]", lambda d: _cs(d), estimator="callaway_santanna",
         event_time=True, pretrend=True, effect_term=""),
    Case("callaway_santanna[simple]", lambda d: _cs(d).aggregate("simple"), truth=True),
    Case("callaway_santanna[dynamic]", lambda d: _cs(d).aggregate("dynamic"),
         event_time=True, pretrend=True, truth=True),
    Case("callaway_santanna[group]", lambda d: _cs(d).aggregate("group"), truth=True),
    Case("callaway_santanna[calendar]", lambda d: _cs(d).aggregate("calendar"), truth=True),
    Case("callaway_santanna[dynamic,bootstrap band]",
         lambda d: _cs(d, bootstrap=99, seed=1, cband=True).aggregate("dynamic"),
         event_time=True, pretrend=True),
    # ---- Sun & Abraham
    Case("sun_abraham", lambda d: ti.sun_abraham(d, **_COMMON), estimator="sun_abraham",
         event_time=True, pretrend=True, truth=True),
    Case("sun_abraham[simple]", lambda d: ti.sun_abraham(d, **_COMMON).aggregate("simple"),
         truth=True),
    Case("sun_abraham[cohort]", lambda d: ti.sun_abraham(d, **_COMMON).aggregate("cohort"),
         truth=True),
    # ---- imputation and two-stage DiD
    Case("imputation", lambda d: ti.imputation(d, **_COMMON), estimator="imputation",
         truth=True),
    Case("imputation[horizons,pretrends]",
         lambda d: ti.imputation(d, **_COMMON, horizons=[0, 1, 2], pretrends=3),
         event_time=True, pretrend=True, truth=True),
    Case("did2s", lambda d: ti.did2s(d, **_COMMON), estimator="did2s", truth=True),
    Case("did2s[event_study]", lambda d: ti.did2s(d, **_COMMON, event_study=True),
         event_time=True, pretrend=True, truth=True),
    # ---- extended TWFE (Wooldridge)
    Case("etwfe", lambda d: ti.etwfe(d, **_COMMON), estimator="etwfe"),
    Case("etwfe[simple]", lambda d: ti.etwfe(d, **_COMMON).aggregate("simple"), truth=True),
    Case("etwfe[dynamic]", lambda d: ti.etwfe(d, **_COMMON).aggregate("dynamic"),
         event_time=True, truth=True),
    Case("etwfe[dynamic,never treated]", lambda d: ti.etwfe(
        d, **_COMMON, control_group="never_treated").aggregate("dynamic"),
         event_time=True, pretrend=True),
    # ---- de Chaisemartin & D'Haultfoeuille
    Case("did_multiplegt", lambda d: ti.did_multiplegt(
        d, outcome="y", unit="unit", time="year", treatment="D", effects=3, placebo=2),
         estimator="did_multiplegt", event_time=True, pretrend=True),
    # ---- synthetic DiD
    Case("synthetic_did", lambda d: ti.synthetic_did(
        d[(d["g"] == 0) | (d["g"] == 2006)], outcome="y", unit="unit", time="year",
        treated="D", se="placebo", n_reps=50, seed=1), estimator="synthetic_did",
        truth=True),
    Case("synthetic_did_event", lambda d: ti.synthetic_did_event(
        d, outcome="y", unit="unit", time="year", treated="D", placebo=2, se="bootstrap",
        n_reps=20, seed=1), estimator="synthetic_did_event", event_time=True, pretrend=True,
         truth=True),
    Case("synthetic_did[staggered,sc]", lambda d: ti.synthetic_did(
        d, outcome="y", unit="unit", time="year", treated="D", method="sc",
        se="jackknife")),
    # ---- Poisson
    Case("ppml", lambda d: ti.ppml(d, outcome="counts", regressors=["D"],
                                   fixed_effects=("unit", "year"), cluster="unit"),
         estimator="ppml", truth=True, effect_term="D"),
    Case("ppml[iid default]", lambda d: ti.ppml(d, outcome="counts", regressors=["D", "x"],
                                                fixed_effects=("unit", "year"))),
    Case("ppml[lincom]", lambda d: ti.ppml(
        d, outcome="counts", regressors=["D", "x"], fixed_effects=("unit", "year"),
        cluster="unit").lincom(["D", "x"], [1.0, 0.0], name="D only"),
         truth=True, effect_term="D only"),
    Case("poisson_event_study", lambda d: ti.poisson_event_study(
        d, outcome="counts", unit="unit", time="year", cohort="g", cluster="unit"),
         estimator="poisson_event_study", event_time=True, pretrend=True, truth=True),
    Case("poisson_event_study[dynamic]", lambda d: ti.event_study(
        d, outcome="counts", unit="unit", time="year", cohort="g", method="poisson"),
         event_time=True, pretrend=True),
    # ---- inference objects
    Case("wild_cluster_bootstrap", lambda d: ti.wild_cluster_bootstrap(
        d, outcome="y", regressors=["D"], cluster="unit", term="D",
        fixed_effects=("unit", "year"), n_reps=199, seed=1), truth=True, effect_term="D"),
    Case("wild_cluster_bootstrap_result", lambda d: ti.wild_cluster_bootstrap_result(
        ti.twfe(d, **_COMMON), term="ATT", data=d, n_reps=199, seed=1)),
    Case("randomization_inference", lambda d: ti.randomization_inference(
        d, **_COMMON, n_perms=99, seed=1)),
    Case("honest_did", lambda d: ti.honest_did(
        _event_study_for_honest(d), restriction="smoothness", m_values=[0.0, 0.05])),
    Case("pretrend_power", lambda d: ti.pretrend_power(
        _event_study_for_honest(d), delta_true=0.02), event_time=True),
    # ---- diagnostics
    Case("bacon_decomposition", lambda d: ti.bacon_decomposition(d, **_COMMON)),
    # ---- studies
    Case("case_study", lambda d: ti.case_study(
        ti.simulated_city_exports(n_donors=6, start=2004, end=2015),
        treated_city="Qingdao", partner="GBR", treated_from=2011, se=None)),
    Case("gravity_study", _gravity),
    Case("gravity_intensity", lambda d: ti.gravity_intensity(_gravity(d).data,
                                                             intensity="log1p_twinnings")),
]

#: every function of ``ti.__all__`` that returns a result object -> the cases above that
#: cover what it returns (tests/test_contract.py::test_every_public_result_is_covered)
PUBLIC_RESULTS: dict[str, tuple[str, ...]] = {
    "twfe": ("twfe", "twfe[covariate,state cluster]"),
    "event_study": ("event_study", "poisson_event_study[dynamic]"),
    "callaway_santanna": ("callaway_santanna[att_gt]", "callaway_santanna[dynamic]"),
    "sun_abraham": ("sun_abraham", "sun_abraham[cohort]"),
    "imputation": ("imputation", "imputation[horizons,pretrends]"),
    "did2s": ("did2s", "did2s[event_study]"),
    "etwfe": ("etwfe", "etwfe[dynamic]"),
    "did_multiplegt": ("did_multiplegt",),
    "synthetic_did": ("synthetic_did", "synthetic_did[staggered,sc]"),
    "synthetic_did_event": ("synthetic_did_event",),
    "ppml": ("ppml", "ppml[iid default]"),
    "lincom": ("ppml[lincom]",),
    "poisson_event_study": ("poisson_event_study",),
    "wild_cluster_bootstrap": ("wild_cluster_bootstrap",),
    "wild_cluster_bootstrap_result": ("wild_cluster_bootstrap_result",),
    "randomization_inference": ("randomization_inference",),
    "honest_did": ("honest_did",),
    "pretrend_power": ("pretrend_power",),
    "bacon_decomposition": ("bacon_decomposition",),
    "case_study": ("case_study",),
    "gravity_study": ("gravity_study",),
    "gravity_intensity": ("gravity_intensity",),
}

#: functions of ``ti.__all__`` that return no result object, and what they return
NOT_RESULTS: dict[str, str] = {
    "read_twinnings": "a registry frame", "read_trade": "a trade frame",
    "scan_trade": "a trade frame", "build_panel": "a Panel (data, not estimates)",
    "to_iso3": "country codes", "load_cn_key_pairs": "a frame",
    "load_german_twinnings": "a frame", "load_gravity_panel": "a frame",
    "load_tradhist": "a frame", "load_wikipedia_twinnings": "a frame",
    "build_gravity_data": "a frame", "simulated_city_exports": "a frame",
    "slope_for_power": "a number (the slope)", "table": "a table",
    "plot_event_study": "Axes", "plot_bacon": "Axes", "plot_honest_did": "Axes",
    "plot_pretrend_power": "Axes", "plot_synthetic": "Axes", "plot_weights": "Axes",
    "run_study": "a StudyRun (files written; its .results are the results above)",
    "assess_credibility": "a Credibility (verdicts on the results above; ti.table and "
                          "its summary are checked in tests/report/test_credibility.py)",
}
