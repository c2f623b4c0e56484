"""Gravity study data: cumulative twinning counts per partner and year, merged onto the
structural gravity panel (recipe in :mod:`twinimpact.studies.gravity`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..core.validation import require_columns, require_frame
from ..errors import InputError, format_message

__all__ = [
    "BOOK_YEARS",
    "GRAVITY_COLUMNS",
    "PANEL_ISO3",
    "PANEL_SOURCE",
    "build_gravity_data",
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
        dropped["partner country missing"] = int(bad_iso.sum())
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
