"""twinimpact: econometric impact evaluation of city twinning (sister-city agreements).

Read twinning registries and trade series, build an analysis panel with treatment timing,
estimate event-study / difference-in-differences / gravity models, and write tables and
reports.

>>> import twinimpact as ti
>>> ti.__version__
'0.1.0'
"""

from __future__ import annotations

from . import errors
from ._version import __version__
from .diagnostics.bacon import BaconDecomposition, bacon_decomposition
from .estimators.callaway_santanna import (
    CallawaySantAnnaResult,
    CSAggregateResult,
    callaway_santanna,
)
from .estimators.did2s import did2s
from .estimators.did_multiplegt import did_multiplegt
from .estimators.etwfe import ETWFEAggregateResult, ETWFEResult, etwfe
from .estimators.imputation import imputation
from .estimators.poisson_event_study import poisson_event_study
from .estimators.ppml import PPMLResult, lincom, ppml
from .estimators.sun_abraham import SunAbrahamResult, sun_abraham
from .estimators.synthetic_did import (
    SyntheticDIDResult,
    synthetic_did,
)
from .estimators.synthetic_did_event import synthetic_did_event
from .estimators.twfe import event_study, twfe
from .etl import (
    RELATIONS,
    build_panel,
    load_cn_key_pairs,
    load_german_twinnings,
    load_gravity_panel,
    load_tradhist,
    load_wikipedia_twinnings,
    read_trade,
    read_twinnings,
    scan_trade,
    to_iso3,
)
from .inference.honest_did import honest_did
from .inference.pretrend_power import PretrendPower, pretrend_power, slope_for_power
from .inference.randomization import RandomizationResult, randomization_inference
from .inference.wild_bootstrap import (
    WildBootstrapResult,
    wild_cluster_bootstrap,
    wild_cluster_bootstrap_result,
)
from .panel import Panel
from .report import (
    plot_bacon,
    plot_event_study,
    plot_honest_did,
    plot_pretrend_power,
    plot_synthetic,
    plot_weights,
    table,
)
from .results import EstimationResult, VcovSpec
from .studies.casestudy import CaseStudyResult, case_study, simulated_city_exports
from .studies.gravity import GravityStudy, build_gravity_data, gravity_intensity, gravity_study
from .studies.runner import run_study

__all__ = [
    "RELATIONS",
    "BaconDecomposition",
    "CSAggregateResult",
    "CallawaySantAnnaResult",
    "CaseStudyResult",
    "ETWFEAggregateResult",
    "ETWFEResult",
    "EstimationResult",
    "GravityStudy",
    "PPMLResult",
    "Panel",
    "PretrendPower",
    "RandomizationResult",
    "SunAbrahamResult",
    "SyntheticDIDResult",
    "VcovSpec",
    "WildBootstrapResult",
    "__version__",
    "bacon_decomposition",
    "build_gravity_data",
    "build_panel",
    "callaway_santanna",
    "case_study",
    "did2s",
    "did_multiplegt",
    "errors",
    "etwfe",
    "event_study",
    "gravity_intensity",
    "gravity_study",
    "honest_did",
    "imputation",
    "lincom",
    "load_cn_key_pairs",
    "load_german_twinnings",
    "load_gravity_panel",
    "load_tradhist",
    "load_wikipedia_twinnings",
    "plot_bacon",
    "plot_event_study",
    "plot_honest_did",
    "plot_pretrend_power",
    "plot_synthetic",
    "plot_weights",
    "poisson_event_study",
    "ppml",
    "pretrend_power",
    "randomization_inference",
    "read_trade",
    "read_twinnings",
    "run_study",
    "scan_trade",
    "simulated_city_exports",
    "slope_for_power",
    "sun_abraham",
    "synthetic_did",
    "synthetic_did_event",
    "table",
    "to_iso3",
    "twfe",
    "wild_cluster_bootstrap",
    "wild_cluster_bootstrap_result",
]
