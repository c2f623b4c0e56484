"""Gravity study estimation: PPML of trade on the twinning intensity with exporter-year,
importer-year and pair fixed effects (recipe in :mod:`twinimpact.studies.gravity`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import pandas as pd

from ..core.validation import as_frame, require_columns
from ..errors import InputError, check_literal, format_message
from ..estimators.ppml import PPMLResult, ppml

__all__ = ["Intensity", "gravity_intensity"]

Intensity = Literal["n_twinnings", "log1p_twinnings"]


def gravity_intensity(frame: pd.DataFrame, *, intensity: Intensity = "n_twinnings",
                      controls: Sequence[str] = ("rta",), border_year: bool = True,
                      cluster: str | Sequence[str] = "pair_id",
                      **ppml_options: Any) -> PPMLResult:
    """PPML of trade on the twinning intensity with exporter-year, importer-year and pair FE.

    ``frame`` is the output of :func:`build_gravity_data`. Pairs with zero total trade are
    dropped first (they carry no information once pair effects are in, as in the book);
    with ``border_year`` the international-border x year dummies (all but the last year)
    absorb the common globalisation trend of international relative to domestic trade.
    Further keywords go to :func:`~twinimpact.estimators.ppml.ppml`.

    Equivalent R fixest call: ``fepois(trade ~ n_twinnings + rta + intl_border_1986 + ...
    | exporter^year + importer^year + pair_fe, cluster = ~pair_id,
    data = subset(frame, sum_trade > 0))``.
    """
    frame = as_frame(frame, what="gravity_intensity: frame")
    check_literal("intensity", intensity, ("n_twinnings", "log1p_twinnings"))
    require_columns(frame, ["exporter", "importer", "year", "trade", "pair_fe", "sum_trade",
                            intensity, *controls], what="gravity frame")
    d = frame[frame["sum_trade"] > 0]
    border = sorted(c for c in frame.columns if c.startswith("intl_border_"))[:-1] \
        if border_year else []
    regs = [intensity, *[c for c in controls if c != intensity], *border]
    if float(d[intensity].abs().sum()) == 0:
        raise InputError(format_message(
            f"the twinning intensity {intensity!r} is zero everywhere",
            fix="check the twinnings frame (partner_iso3, established_year, relation)"))
    return ppml(d, outcome="trade", regressors=regs,
                fixed_effects=[("exporter", "year"), ("importer", "year"), "pair_fe"],
                cluster=cluster, **ppml_options)
