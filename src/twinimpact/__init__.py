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
from .estimators.twfe import event_study, twfe
from .report import plot_event_study, table
from .results import EstimationResult, VcovSpec

__all__ = [
    "EstimationResult",
    "VcovSpec",
    "__version__",
    "errors",
    "event_study",
    "plot_event_study",
    "table",
    "twfe",
]
