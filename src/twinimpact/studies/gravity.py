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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..core.validation import as_frame, require_columns, require_frame
from ..errors import InputError, check_alpha, check_literal, format_message
from ..estimators.ppml import PPMLResult, ppml
from ..results import EstimationResult

__all__ = [
    "BOOK_YEARS",
    "PANEL_ISO3",
    "GravityStudy",
    "build_gravity_data",
    "gravity_intensity",
    "gravity_study",
    "intensity_sentence",
    "twinning_counts",
]

#: Years of the Advanced Guide applications (4-year intervals to let trade adjust).
BOOK_YEARS = tuple(range(1986, 2007, 4))
#: ISO3 codes used in the gravity panel where they differ from today's registry codes.
PANEL_ISO3: Mapping[str, str] = {"ROU": "ROM"}
#: the shipped panel (``data/raw``), used when ``panel=None``
PANEL_SOURCE = ("trade_gravity_tpa69", "gravity_tpa69_1986_2006.parquet")
GRAVITY_COLUMNS = ("exporter", "importer", "year", "trade", "pair_id", "dist", "cntg",
                   "lang", "clny", "rta")
Intensity = Literal["n_twinnings", "log1p_twinnings"]


def twinning_counts(twinnings: pd.DataFrame, *, years: Sequence[int],
                    relations: Sequence[str] | None = ("twinning",),
                    country_map: Mapping[str, str] = PANEL_ISO3) -> pd.DataFrame:
    """Cumulative number of twinnings per partner country and year.

    Parameters
    ----------
    twinnings : DataFrame
        Columns ``partner_iso3``, ``established_year`` and ``relation`` (the output of
        ``ti.read_twinnings`` / ``load_german_twinnings``). Links without a year or a
        partner country are left out and counted.
    years : sequence of int
        Years at which to count links established in or before that year.
    relations : sequence of str or None
        Link types to count (default formal twinnings only); None counts every type.
    country_map : mapping
        Recode partner ISO3 codes to the panel's (``ROU`` -> ``ROM``).

    Returns
    -------
    DataFrame with columns ``partner_iso3, year, n_twinnings`` (every partner x year),
    and ``attrs["dropped"]`` (reason -> count).
    """
    twinnings = require_frame(twinnings, what="twinnings")
    require_columns(twinnings, ["partner_iso3", "established_year", "relation"],
                    what="twinnings")
    t = twinnings[["partner_iso3", "established_year", "relation"]].copy()
    dropped: dict[str, int] = {}
    if relations is not None:
        rel = t["relation"].astype("string")
        keep = rel.isin(list(relations)).fillna(False).to_numpy(dtype=bool)
        if (~keep).any():
            dropped["relation not counted"] = int((~keep).sum())
        t = t.loc[keep]
    yr = pd.to_numeric(t["established_year"], errors="coerce")
    iso = t["partner_iso3"].astype("string")
    bad_year = yr.isna().to_numpy()
    bad_iso = iso.isna().to_numpy() & ~bad_year
    if bad_year.any():
        dropped["missing established_year"] = int(bad_year.sum())
    if bad_iso.any():
        dropped["missing partner_iso3"] = int(bad_iso.sum())
    ok = ~(bad_year | bad_iso)
    iso = iso[ok].map(lambda c: country_map.get(str(c).upper(), str(c).upper()))
    yr = yr[ok].to_numpy(dtype=float)
    years = sorted(int(y) for y in years)
    partners = sorted(set(iso))
    rows = []
    for p in partners:
        est = np.sort(yr[(iso == p).to_numpy()])
        counts = np.searchsorted(est, np.asarray(years, dtype=float), side="right")
        rows.append(pd.DataFrame({"partner_iso3": p, "year": years, "n_twinnings": counts}))
    out = (pd.concat(rows, ignore_index=True) if rows else
           pd.DataFrame({"partner_iso3": pd.Series(dtype=str), "year": pd.Series(dtype=int),
                         "n_twinnings": pd.Series(dtype=int)}))
    out.attrs["dropped"] = dropped
    return out


def _standardise_panel(panel: pd.DataFrame) -> pd.DataFrame:
    """Lower-case the gravity covariates (the shipped file spells them ``DIST``...)."""
    panel = require_frame(panel, what="panel")
    ren = {c: c.lower() for c in panel.columns if c.lower() in GRAVITY_COLUMNS}
    p = panel.rename(columns=ren)
    require_columns(p, GRAVITY_COLUMNS, what="gravity panel")
    return p[list(GRAVITY_COLUMNS)].copy()


def _load_shipped_panel() -> pd.DataFrame:
    from .._paths import find_repo_root

    path = find_repo_root().joinpath("data", "raw", *PANEL_SOURCE)
    if not path.exists():
        raise InputError(format_message("the shipped gravity panel is missing",
                                        where=str(path), fix="pass panel= explicitly"))
    return pd.read_parquet(path)


def build_gravity_data(twinnings: pd.DataFrame, panel: pd.DataFrame | None = None, *,
                       home: str = "DEU", years: Sequence[int] | None = BOOK_YEARS,
                       relations: Sequence[str] | None = ("twinning",),
                       country_map: Mapping[str, str] = PANEL_ISO3) -> pd.DataFrame:
    """The gravity panel with twinning counts on the ``home`` country's pairs.

    Parameters
    ----------
    twinnings : DataFrame
        ``home``'s twinnings: columns ``partner_iso3, established_year, relation``.
    panel : DataFrame, optional
        Bilateral panel with ``exporter, importer, year, trade, pair_id`` and the
        covariates ``dist, cntg, lang, clny, rta`` (any case). Default: the shipped
        69-country panel (Yotov et al. 2016), ``data/raw/trade_gravity_tpa69``.
    home : str
        ISO3 code of the twinning country in the panel (default ``"DEU"``).
    years : sequence of int or None
        Years kept (default 1986, 1990, ..., 2006 as in the book); None keeps all.
    relations : sequence of str or None
        Link types counted (default formal twinnings).

    Returns
    -------
    DataFrame: the panel columns (lower case) plus ``log_dist``, ``domestic`` (bool),
    ``pair_fe`` (pair id; all domestic pairs share the level ``-1``), ``n_twinnings``
    (both directions of each ``home`` pair; 0 elsewhere), ``log1p_twinnings``,
    ``intl_border_<year>`` dummies and ``sum_trade`` (pair total). ``attrs["dropped"]``
    counts twinnings not used (partner not in the panel, missing year, other relation).

    Examples
    --------
    >>> import pandas as pd
    >>> from twinimpact.studies.gravity import build_gravity_data
    >>> panel = pd.DataFrame({"exporter": ["DEU", "FRA", "DEU", "FRA"],
    ...     "importer": ["FRA", "DEU", "DEU", "FRA"], "year": 1990, "trade": [5., 4., 50., 40.],
    ...     "pair_id": [1, 1, 2, 3], "dist": [500., 500., 100., 120.], "cntg": 1, "lang": 0,
    ...     "clny": 0, "rta": 1})
    >>> tw = pd.DataFrame({"partner_iso3": ["FRA", "FRA"], "established_year": [1962, 1995],
    ...     "relation": "twinning"})
    >>> build_gravity_data(tw, panel, years=None)["n_twinnings"].tolist()
    [1, 1, 0, 0]
    """
    p = _standardise_panel(_load_shipped_panel() if panel is None else panel)
    if years is not None:
        p = p[p["year"].isin(list(years))]
        if p.empty:
            raise InputError(format_message("no panel rows in the requested years",
                                            seen=list(years), fix="check years="))
    p = p.reset_index(drop=True)
    p["year"] = p["year"].astype(int)
    if home not in set(p["exporter"]) | set(p["importer"]):
        raise InputError(format_message(f"home country {home!r} is not in the panel",
                                        fix="pass the panel's ISO3 code, e.g. home='DEU'"))
    counts = twinning_counts(twinnings, years=sorted(p["year"].unique()),
                             relations=relations, country_map=country_map)
    dropped = dict(counts.attrs.get("dropped", {}))
    countries = set(p["exporter"]) | set(p["importer"])
    outside = ~counts["partner_iso3"].isin(countries - {home})
    if outside.any():
        # count links (not partner x year rows): the last year's cumulative count
        last = counts.loc[outside].groupby("partner_iso3")["n_twinnings"].max()
        dropped["partner not in the panel (or the home country itself)"] = int(last.sum())
    counts = counts.loc[~outside]
    lookup = counts.set_index(["partner_iso3", "year"])["n_twinnings"]
    partner = np.where(p["exporter"] == home, p["importer"],
                       np.where(p["importer"] == home, p["exporter"], None))
    is_home_pair = pd.notna(partner) & (p["exporter"] != p["importer"]).to_numpy()
    key = pd.MultiIndex.from_arrays([np.where(is_home_pair, partner, ""), p["year"]])
    n = lookup.reindex(key).to_numpy(dtype=float, na_value=np.nan)
    p["n_twinnings"] = np.where(is_home_pair & np.isfinite(n), n, 0.0).astype(np.int64)
    p["log1p_twinnings"] = np.log1p(p["n_twinnings"])
    p["domestic"] = (p["exporter"] == p["importer"]).to_numpy()
    p["log_dist"] = np.log(p["dist"].astype(float))
    p["pair_fe"] = np.where(p["domestic"], -1, p["pair_id"].astype("int64"))
    for y in sorted(p["year"].unique()):
        p[f"intl_border_{y}"] = ((~p["domestic"]) & (p["year"] == y)).astype(float)
    p["sum_trade"] = p.groupby("pair_id")["trade"].transform("sum")
    p.attrs["dropped"] = dropped
    p.attrs["home"] = home
    return p


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


def intensity_sentence(result: EstimationResult, term: str = "n_twinnings",
                       alpha: float = 0.05, *, outcome: str = "trade") -> str:
    """Plain-language reading of a PPML intensity coefficient.

    ``n_twinnings``: "each additional twinning is associated with x% higher trade, 95% CI
    [a%, b%]" with ``x = 100 (exp(b) - 1)`` (the CI endpoints transformed the same way).
    ``log1p_twinnings`` (an elasticity): the change for doubling ``1 + n_twinnings``,
    ``100 (2^b - 1)``.
    """
    row = result.to_frame(alpha).set_index("term").loc[term]
    level = f"{100 * (1 - alpha):g}%"
    b, lo, hi = float(row["estimate"]), float(row["ci_lower"]), float(row["ci_upper"])
    if not all(map(math.isfinite, (b, lo, hi))):
        return f"The association of {term} with {outcome} could not be estimated."
    if term.startswith("log1p"):
        f = [100 * (2.0**v - 1) for v in (b, lo, hi)]
        what = "doubling one plus the number of twinnings is"
    else:
        f = [100 * math.expm1(v) for v in (b, lo, hi)]
        what = "each additional twinning is"
    word = "higher" if f[0] >= 0 else "lower"
    nd = 1 if max(abs(v) for v in f) >= 1 else 3  # small per-link effects need more digits
    return (f"{what[0].upper()}{what[1:]} associated with {abs(f[0]):.{nd}f}% {word} "
            f"{outcome}, {level} CI [{f[1]:.{nd}f}%, {f[2]:.{nd}f}%].")


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
