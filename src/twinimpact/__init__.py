"""twinimpact: econometric impact evaluation of city twinning (sister-city agreements).

Read twinning registries and trade series, build an analysis panel with treatment timing,
estimate event-study / difference-in-differences / gravity models, and write tables and
reports.

>>> import twinimpact as ti
>>> ti.__version__
'0.1.0'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from . import errors
    from .diagnostics.bacon import BaconDecomposition, bacon_decomposition
    from .diagnostics.credibility import Credibility, assess_credibility
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

#: public name -> submodule (relative to the package) that defines it. The public API is
#: imported on first use (PEP 562), so ``import twinimpact`` -- and every process that only
#: needs one estimator -- does not pay for the others' imports (numba, statsmodels,
#: matplotlib, DuckDB: about 60 MB of resident memory and seconds of start-up).
_LAZY: dict[str, str] = {
    "__version__": "_version",
    "BaconDecomposition": "diagnostics.bacon",
    "bacon_decomposition": "diagnostics.bacon",
    "Credibility": "diagnostics.credibility",
    "assess_credibility": "diagnostics.credibility",
    "errors": "errors",
    "CSAggregateResult": "estimators.callaway_santanna",
    "CallawaySantAnnaResult": "estimators.callaway_santanna",
    "callaway_santanna": "estimators.callaway_santanna",
    "did2s": "estimators.did2s",
    "did_multiplegt": "estimators.did_multiplegt",
    "ETWFEAggregateResult": "estimators.etwfe",
    "ETWFEResult": "estimators.etwfe",
    "etwfe": "estimators.etwfe",
    "imputation": "estimators.imputation",
    "poisson_event_study": "estimators.poisson_event_study",
    "PPMLResult": "estimators.ppml",
    "lincom": "estimators.ppml",
    "ppml": "estimators.ppml",
    "SunAbrahamResult": "estimators.sun_abraham",
    "sun_abraham": "estimators.sun_abraham",
    "SyntheticDIDResult": "estimators.synthetic_did",
    "synthetic_did": "estimators.synthetic_did",
    "synthetic_did_event": "estimators.synthetic_did_event",
    "event_study": "estimators.twfe",
    "twfe": "estimators.twfe",
    "RELATIONS": "etl",
    "build_panel": "etl",
    "load_cn_key_pairs": "etl",
    "load_german_twinnings": "etl",
    "load_gravity_panel": "etl",
    "load_tradhist": "etl",
    "load_wikipedia_twinnings": "etl",
    "read_trade": "etl",
    "read_twinnings": "etl",
    "scan_trade": "etl",
    "to_iso3": "etl",
    "honest_did": "inference.honest_did",
    "PretrendPower": "inference.pretrend_power",
    "pretrend_power": "inference.pretrend_power",
    "slope_for_power": "inference.pretrend_power",
    "RandomizationResult": "inference.randomization",
    "randomization_inference": "inference.randomization",
    "WildBootstrapResult": "inference.wild_bootstrap",
    "wild_cluster_bootstrap": "inference.wild_bootstrap",
    "wild_cluster_bootstrap_result": "inference.wild_bootstrap",
    "Panel": "panel",
    "plot_bacon": "report",
    "plot_event_study": "report",
    "plot_honest_did": "report",
    "plot_pretrend_power": "report",
    "plot_synthetic": "report",
    "plot_weights": "report",
    "table": "report",
    "EstimationResult": "results",
    "VcovSpec": "results",
    "CaseStudyResult": "studies.casestudy",
    "case_study": "studies.casestudy",
    "simulated_city_exports": "studies.casestudy",
    "GravityStudy": "studies.gravity",
    "build_gravity_data": "studies.gravity",
    "gravity_intensity": "studies.gravity",
    "gravity_study": "studies.gravity",
    "run_study": "studies.runner",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'twinimpact' has no attribute {name!r}")
    module = importlib.import_module(f".{mod}", __name__)
    value = module if name == mod else getattr(module, name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "RELATIONS",
    "BaconDecomposition",
    "CSAggregateResult",
    "CallawaySantAnnaResult",
    "CaseStudyResult",
    "Credibility",
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
    "assess_credibility",
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
