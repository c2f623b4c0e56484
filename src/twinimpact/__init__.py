"""twinimpact: econometric impact evaluation of city twinning (sister-city agreements).

>>> import twinimpact as ti
>>> ti.__version__
'0.1.0'
"""

from __future__ import annotations

from . import errors
from ._version import __version__
from .results import EstimationResult, VcovSpec

__all__ = ["EstimationResult", "VcovSpec", "__version__", "errors"]
