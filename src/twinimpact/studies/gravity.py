"""Twinning intensity in structural gravity: build the study data, estimate, interpret.

Recipe (the structural gravity benchmark of Yotov, Piermartini, Monteiro & Larch 2016,
Chapter 1 Application 3, with the twinning count as a continuous bilateral policy
variable):

``X_ij,t = exp(pi_i,t + chi_j,t + mu_ij + b * T_ij,t + g * RTA_ij,t + sum_y d_y BRDR_ij,y) e``

* ``X_ij,t``: trade from ``i`` to ``j`` in year ``t``, domestic flows (``i == j``) included;
* ``pi_i,t``, ``chi_j,t``: exporter-year and importer-year fixed effects (multilateral
  resistances and outputs / expenditures);
* ``mu_ij``: pair fixed effects (all time-invariant bilateral frictions; every domestic
  pair shares ONE level, as in the book and R tradepolicy's ``pair_id_2``);
* ``T_ij,t``: ``n_twinnings`` = number of formal twinnings between German municipalities
  and municipalities of the partner country established up to year ``t`` (set on both
  directions, DEU -> partner and partner -> DEU; zero for every other pair), or
  ``log1p_twinnings = log(1 + n_twinnings)``;
* ``RTA`` and international-border x year dummies (globalisation trend) as controls.

Estimated by :func:`twinimpact.estimators.ppml.ppml`, standard errors clustered by pair.
``exp(b) - 1`` is the proportional trade change per additional twinning. With pair fixed
effects, ``b`` is identified only from changes over time within German pairs: it is an
association, not a causal effect, unless twinnings are as good as random given the fixed
effects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..errors import check_alpha
from ..estimators.ppml import PPMLResult
from .gravity_data import (
    BOOK_YEARS,
    GRAVITY_COLUMNS,
    PANEL_ISO3,
    PANEL_SOURCE,
    build_gravity_data,
    twinning_counts,
)
from .gravity_estimation import Intensity, gravity_intensity
from .gravity_prose import intensity_sentence

# data preparation (gravity_data), estimation (gravity_estimation) and prose
# (gravity_prose) live in their own modules; this one composes them into the study
__all__ = [
    "BOOK_YEARS",
    "GRAVITY_COLUMNS",
    "PANEL_ISO3",
    "PANEL_SOURCE",
    "GravityStudy",
    "Intensity",
    "build_gravity_data",
    "gravity_intensity",
    "gravity_study",
    "intensity_sentence",
    "twinning_counts",
]


@dataclass(frozen=True)
class GravityStudy:
    """Output of :func:`gravity_study`: the estimation data, the PPML result and the
    sentence; ``dropped_twinnings`` counts links not used (and why)."""

    data: pd.DataFrame = field(repr=False)
    result: PPMLResult
    sentence: str
    dropped_twinnings: Mapping[str, int]


def gravity_study(twinnings: pd.DataFrame | None = None, panel: pd.DataFrame | None = None,
                  *, intensity: Intensity = "n_twinnings", home: str = "DEU",
                  years: Sequence[int] | None = BOOK_YEARS,
                  relations: Sequence[str] | None = ("twinning",), alpha: float = 0.05,
                  **options: Any) -> GravityStudy:
    """Build the data, estimate the intensity model and phrase the result.

    ``twinnings`` defaults to the shipped German registry
    (``twinimpact.etl.sources.load_german_twinnings``) and ``panel`` to the shipped
    69-country panel. ``options`` go to :func:`gravity_intensity` (``controls``,
    ``border_year``, ``cluster``, PPML options).
    """
    if twinnings is None:
        from ..etl.sources import load_german_twinnings

        twinnings = load_german_twinnings()
    check_alpha(alpha)
    data = build_gravity_data(twinnings, panel, home=home, years=years, relations=relations)
    res = gravity_intensity(data, intensity=intensity, alpha=alpha, **options)
    return GravityStudy(data=data, result=res,
                        sentence=intensity_sentence(res, intensity, alpha),
                        dropped_twinnings=dict(data.attrs.get("dropped", {})))
