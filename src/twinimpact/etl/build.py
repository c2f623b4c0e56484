"""Build the analysis panel: trade series joined with twinning dates (treatment timing).

Pipeline of :func:`build_panel`, with the row accounting kept in the manifest:

1. **Trade** (:func:`~twinimpact.etl.sources.read_trade` is applied to a raw frame): one
   row per reporter, partner, year. No trade row is dropped; missing values are kept as
   NaN and counted.
2. **Links** (:func:`~twinimpact.etl.sources.read_twinnings` is applied to a raw frame):
   every link is either *counted* or dropped for exactly one reason, tested in this order:
   ``relation not counted`` (per type), ``year established missing``, ``country missing``,
   ``same country on both sides`` (country level only), ``duplicate link`` (same two
   cities, countries, year and type), ``countries not in the trade data`` /
   ``city not in the trade data``. So ``n_in = n_out + sum(dropped)``.
3. **Timing** (``rule="first"``): a unit's ``first_link_year`` is the earliest
   ``established_year`` of its counted links; ``cohort`` is that year when it is within
   the trade series (``<=`` the last trade year), else missing: links dated after the
   series ends are counted with a :class:`~twinimpact.errors.DataWarning` and their units
   are never treated within the window. Units treated before their first observed year
   are kept and counted.

Units
-----
``level="country_pair"``: a unit is a (reporter, partner) country pair of the trade
data, ``unit_id = "<reporter>-<partner>"``. Links are undirected: a link between a city of
A and a city of B counts for the units A-B and B-A (those present in the trade data).
Domestic trade rows (reporter == partner, e.g. the gravity panel's diagonal) are units
that are never treated.

``level="city_partner"``: a unit is a city's trade with a partner country (trade
``reporter`` = city id or city name, from a user-supplied city series read with
``read_trade(..., reporter_type="city")``). A link between city X (country A) and city Y
(country B) counts for the units (X, B) and (Y, A). A trade reporter is matched to a link's
city by GeoNames id (``city_id``, when the reporter is a number or a digit string), or by
name (the registry's spelling or the gazetteer name, case/accents ignored).

Columns of ``Panel.frame``
--------------------------
``unit_id, reporter, partner, year, value`` (+ extra trade columns), ``cohort`` (Int64,
first treated year; NA = never treated within the data), ``first_link_year`` (Int64,
earliest counted link even after the window), ``n_twinnings`` (counted links active in
``year``: established up to and including ``year`` and not ended by it), ``rel_time``
(``year - cohort``, NA when never treated), ``treated`` (0/1: ``year >= cohort``, absorbing)
and ``twinned`` (0/1: ``n_twinnings > 0``, switches off when every link of the unit has
ended).

Links that end
--------------
A registry read with an end date (``read_twinnings(..., ended=...)``) gives ``ended_year``:
the first year a link no longer counts (a link is active in ``established_year <= year <
ended_year``). ``n_twinnings`` then falls when links end and ``twinned`` can go back to 0:
a non-absorbing, non-binary treatment for :func:`~twinimpact.did_multiplegt`. ``cohort``,
``treated`` and ``rel_time`` stay those of the first link (the absorbing designs). The
manifest counts ended links (``steps.links.n_ended``, ``n_ended_within_window`` for those
that stop counting after the first trade year and by the last,
``n_ended_same_year`` for links that end in the year they start and so are never active)
and units whose treatment switches off (``steps.panel.n_units_switching_off``). Without
end dates every link stays active and nothing changes.

Mapping to other tools: ``cohort`` is R did's ``gname`` (with NA instead of 0 for
never-treated) and fixest ``sunab()``'s cohort; ``rel_time`` is the event time.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._version import __version__
from ..errors import (
    DataWarning,
    DroppedRowsWarning,
    InputError,
    SpecificationError,
    check_literal,
    format_message,
)
from ..panel import Panel
from ..provenance import frame_sha256
from .names import normalize_name
from .schema import RELATIONS
from .sources import read_trade, read_twinnings

__all__ = ["DEFAULT_RELATIONS", "build_panel"]

log = logging.getLogger("twinimpact")

#: Link types counted when ``relations=None``: formal twinnings only (German ``form = p``,
#: sister/twin city agreements). Friendship and contact links are weaker commitments and
#: the default study counts formal twinnings only; pass ``relations="all"`` or a tuple.
DEFAULT_RELATIONS: tuple[str, ...] = ("twinning",)
#: How many example rows the manifest keeps per drop reason (counts are always complete).
N_EXAMPLES = 20

_LINK_COLUMNS = ("source_row", "city", "country_iso3", "partner_city", "partner_iso3",
                 "established_year", "ended_year", "relation")


def _relations(relations: Any) -> tuple[str, ...]:
    if relations is None:
        return DEFAULT_RELATIONS
    if isinstance(relations, str):
        if relations == "all":
            return RELATIONS
        relations = (relations,)
    out = tuple(relations)
    for r in out:
        check_literal("relations", r, RELATIONS)
    if not out:
        raise SpecificationError(format_message(
            "relations is empty: no link would count", seen=relations,
            fix="pass e.g. relations=('twinning',) or relations='all'"))
    return out


def _examples(df: pd.DataFrame) -> list[dict[str, Any]]:
    cols = [c for c in _LINK_COLUMNS if c in df.columns]
    return df[cols].head(N_EXAMPLES).astype(object).where(df[cols].head(N_EXAMPLES).notna(),
                                                          None).to_dict(orient="records")


def _compact(df: pd.DataFrame) -> dict[str, Any]:
    return {"columns": list(df.columns),
            "data": df.astype(object).where(df.notna(), None).values.tolist()}


def _ensure_twinnings(twinnings: Any) -> pd.DataFrame:
    if isinstance(twinnings, pd.DataFrame) and {"partner_iso3", "country_iso3",
                                                "established_year", "relation"} \
            <= set(twinnings.columns):
        tw = twinnings.copy()
        tw.attrs = dict(twinnings.attrs)
        if "source_row" not in tw.columns:
            tw["source_row"] = np.arange(len(tw))
        if len(tw) == 0:
            raise InputError(format_message("twinnings is empty (0 rows)",
                                            fix="check the filters applied before"))
        return tw.reset_index(drop=True)
    return read_twinnings(twinnings)


def _ensure_trade(trade: Any, level: str) -> pd.DataFrame:
    reporter_type = "country" if level == "country_pair" else "city"
    if isinstance(trade, pd.DataFrame):
        extra = [c for c in trade.columns if c not in ("reporter", "partner", "year", "value")]
        out = read_trade(trade, reporter_type=reporter_type, extra=extra)
        out.attrs["source"] = {**out.attrs["source"],
                               **({"derived_from": trade.attrs["source"]}
                                  if trade.attrs.get("source") else {})}
        return out
    return read_trade(trade, reporter_type=reporter_type)


def build_panel(trade: Any, twinnings: Any, *,
                level: Literal["country_pair", "city_partner"] = "country_pair",
                rule: Literal["first"] = "first",
                relations: Sequence[str] | str | None = None) -> Panel:
    """Join trade series with twinning dates into an analysis panel.

    Parameters
    ----------
    trade : DataFrame or path
        Canonical trade table (``reporter, partner, year, value``), e.g. from
        :func:`~twinimpact.etl.read_trade` / :func:`~twinimpact.etl.load_tradhist`;
        other columns are kept. Validated again here (duplicates, negative values).
    twinnings : DataFrame or path
        Output of :func:`~twinimpact.etl.read_twinnings` (a frame with the canonical input
        columns is read with it first).
    level : {"country_pair", "city_partner"}
        Unit of the panel (see the module docstring).
    rule : {"first"}
        Treatment timing: the cohort is the year of the earliest counted link.
    relations : tuple of str, "all" or None
        Link types that count (vocabulary in :mod:`twinimpact.etl.schema`). Default
        ``None`` = :data:`DEFAULT_RELATIONS` (formal twinnings only).

    Returns
    -------
    Panel
        ``panel.frame`` sorted by ``unit_id, year`` (columns in the module docstring),
        ``panel.manifest`` with inputs, parameters, version, row counts per step and the
        dropped/altered rows with reasons.

    Examples
    --------
    >>> import pandas as pd
    >>> trade = pd.DataFrame({"reporter": "DEU", "partner": ["FRA"] * 3 + ["ITA"] * 3,
    ...                       "year": [2000, 2001, 2002] * 2, "value": 1.0})
    >>> twin = pd.DataFrame({"city": ["Köln"], "country": ["DEU"], "partner_city": ["Lille"],
    ...                      "partner_country": ["France"], "established": [2001],
    ...                      "relation": ["p"]})
    >>> p = build_panel(trade, twin)
    >>> p.frame[["unit_id", "year", "cohort", "n_twinnings", "rel_time"]].head(3)
       unit_id  year  cohort  n_twinnings  rel_time
    0  DEU-FRA  2000    2001            0        -1
    1  DEU-FRA  2001    2001            1         0
    2  DEU-FRA  2002    2001            1         1
    """
    check_literal("level", level, ("country_pair", "city_partner"))
    check_literal("rule", rule, ("first",))
    counted_types = _relations(relations)
    tr = _ensure_trade(trade, level)
    tw = _ensure_twinnings(twinnings)
    trade_source = dict(tr.attrs.get("source", {}))
    trade_unit = tr.attrs.get("unit")
    twin_source = dict(tw.attrs.get("source", {}))
    if not twin_source:  # an already-read frame without attrs
        twin_source = {"kind": "DataFrame", "frame_sha256": frame_sha256(twinnings)}
    trade_first, trade_last = int(tr["year"].min()), int(tr["year"].max())
    warn_msgs: list[str] = []

    # ------------------------------------------------------------------ units
    tr = tr.copy()
    tr["unit_id"] = tr["reporter"].astype(str) + "-" + tr["partner"].astype(str)
    units = set(tr["unit_id"].unique())

    # ------------------------------------------------------------------ links
    dropped: dict[str, int] = {}
    examples: dict[str, list[dict[str, Any]]] = {}
    links = tw.copy()
    n_links_in = len(links)

    def drop(mask: pd.Series | np.ndarray, reason: str) -> None:
        nonlocal links
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            dropped[reason] = dropped.get(reason, 0) + int(mask.sum())
            examples.setdefault(reason, []).extend(_examples(links[mask]))
            examples[reason] = examples[reason][:N_EXAMPLES]
            links = links[~mask]

    rel = links["relation"].astype("string").fillna("unknown")
    for r in sorted(set(rel) - set(counted_types)):
        drop((links["relation"].astype("string").fillna("unknown") == r).to_numpy(),
             f"relation '{r}' not counted")
    drop(links["established_year"].isna().to_numpy(), "year established missing")
    drop((links["country_iso3"].isna() | links["partner_iso3"].isna()).to_numpy(),
         "country missing")
    if level == "country_pair":
        drop((links["country_iso3"] == links["partner_iso3"]).fillna(False).to_numpy(),
             "same country on both sides")
    key_cols = ["city", "country_iso3", "partner_city", "partner_iso3", "established_year",
                "relation"]
    dup = links[key_cols].astype(str).duplicated(keep="first")
    drop(dup.to_numpy(), "duplicate link")

    # directed link sides: (reporter key, partner) -> year
    a = links.assign(link_year=links["established_year"].astype("int64"))
    end_of = (a["ended_year"] if "ended_year" in a.columns
              else pd.Series(pd.NA, index=a.index, dtype="Int64")).astype("Int64")
    end_by_link = pd.Series(end_of.to_numpy(), index=a["source_row"].to_numpy())
    if level == "country_pair":
        fwd = pd.DataFrame({"link": a["source_row"].to_numpy(),
                            "unit_id": (a["country_iso3"] + "-" + a["partner_iso3"]).to_numpy(),
                            "link_year": a["link_year"].to_numpy()})
        bwd = pd.DataFrame({"link": a["source_row"].to_numpy(),
                            "unit_id": (a["partner_iso3"] + "-" + a["country_iso3"]).to_numpy(),
                            "link_year": a["link_year"].to_numpy()})
        sides = pd.concat([fwd, bwd], ignore_index=True)
        miss_reason = "countries not in the trade data"
    else:
        sides = _city_sides(a, tr)
        miss_reason = "city not in the trade data"
    sides = sides[sides["unit_id"].isin(units)].drop_duplicates(["link", "unit_id"])
    drop(~links["source_row"].isin(sides["link"]).to_numpy(), miss_reason)
    n_counted = len(links)
    if n_links_in != n_counted + sum(dropped.values()):  # pragma: no cover - invariant
        raise RuntimeError("internal: link accounting does not add up")

    # ------------------------------------------------------------------ timing
    first = sides.groupby("unit_id")["link_year"].min()
    late_links = sides[sides["link_year"] > trade_last]
    late_units = sorted(set(first[first > trade_last].index))
    if len(late_links):
        msg = (f"build_panel: {late_links['link'].nunique()} counted link(s) were established "
               f"after the trade series ends ({trade_last}); {len(late_units)} unit(s) whose "
               f"first link is that late are never treated within the window (cohort "
               f"missing, first_link_year kept): {', '.join(late_units[:8])}"
               f"{'…' if len(late_units) > 8 else ''}")
        warnings.warn(msg, DataWarning, stacklevel=2)
        warn_msgs.append(msg)
    cohort = first.where(first <= trade_last)
    tr["first_link_year"] = tr["unit_id"].map(first).astype("Int64")
    tr["cohort"] = tr["unit_id"].map(cohort).astype("Int64")
    # n_twinnings: counted links active in the year (+1 when established, -1 when ended)
    sides = sides.assign(end_year=sides["link"].map(end_by_link).astype("Int64"))
    starts = sides[["unit_id", "link_year"]].assign(n=1)
    ends = sides.loc[sides["end_year"].notna(), ["unit_id", "end_year"]].rename(
        columns={"end_year": "link_year"}).assign(n=-1)
    ev = (pd.concat([starts, ends.astype({"link_year": "int64"})], ignore_index=True)
          .groupby(["unit_id", "link_year"])["n"].sum().reset_index())
    ev["cum"] = ev.groupby("unit_id")["n"].cumsum()
    tr = tr.sort_values(["unit_id", "year"], kind="mergesort").reset_index(drop=True)
    if len(ev):
        look = tr[["unit_id", "year"]].reset_index().sort_values("year", kind="mergesort")
        ev = ev.sort_values("link_year", kind="mergesort").rename(columns={"link_year": "year"})
        merged = pd.merge_asof(look, ev[["unit_id", "year", "cum"]], on="year",
                               by="unit_id", direction="backward")
        n_tw = pd.Series(merged["cum"].to_numpy(), index=merged["index"].to_numpy())
        tr["n_twinnings"] = n_tw.sort_index().fillna(0).astype("int64").to_numpy()
    else:
        tr["n_twinnings"] = np.zeros(len(tr), dtype="int64")
    tr["rel_time"] = (tr["year"].astype("Int64") - tr["cohort"]).astype("Int64")
    tr["treated"] = (tr["rel_time"] >= 0).fillna(False).astype("int8")
    tr["twinned"] = (tr["n_twinnings"] > 0).astype("int8")
    prev = tr.groupby("unit_id")["twinned"].shift(1)
    switch_off = sorted(tr.loc[(prev == 1) & (tr["twinned"] == 0), "unit_id"].unique())
    ended_links = links[links["source_row"].map(end_by_link).notna()]
    ended_year = ended_links["source_row"].map(end_by_link).astype("int64")
    ended_info = {
        "n_ended": len(ended_links),
        "n_ended_within_window": int(((ended_year > trade_first)
                                      & (ended_year <= trade_last)).sum()),
        "n_ended_same_year": int((ended_year == ended_links["established_year"]
                                  .astype("int64")).sum()),
        "examples_ended": _examples(ended_links.assign(ended_year=ended_year)),
    }
    first_obs = tr.groupby("unit_id")["year"].min()
    before = sorted(u for u, g in cohort.dropna().items() if g < first_obs.get(u, g))
    if before:
        log.info("build_panel: %d unit(s) are treated before their first observed year",
                 len(before))
    extra = [c for c in tr.columns if c not in
             ("unit_id", "reporter", "partner", "year", "value", "cohort", "first_link_year",
              "n_twinnings", "rel_time", "treated", "twinned")]
    tr = tr[["unit_id", "reporter", "partner", "year", "value", "cohort", "rel_time",
             "n_twinnings", "treated", "twinned", "first_link_year", *extra]]
    tr.attrs = {}

    not_counted = {k: v for k, v in dropped.items() if not k.startswith("relation ")}
    if not_counted:
        msg = (f"build_panel: {sum(not_counted.values())} of {n_links_in} links not used "
               "(other than by link type): "
               + "; ".join(f"{k}: {v}" for k, v in not_counted.items())
               + ". Counts and examples are in panel.manifest['steps']['links'].")
        warnings.warn(msg, DroppedRowsWarning, stacklevel=2)
        warn_msgs.append(msg)

    # ------------------------------------------------------------------ manifest
    unit_cohort = tr.groupby("unit_id")["cohort"].first()
    manifest: dict[str, Any] = {
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "package": {"name": "twinimpact", "version": __version__},
        "parameters": {"level": level, "rule": rule, "relations": list(counted_types),
                       "trade_years": [trade_first, trade_last]},
        "inputs": {
            "trade": {**trade_source, "unit": trade_unit},
            "twinnings": twin_source,
        },
        "steps": {
            "trade": {"n_in": int(trade_source.get("rows", len(tr))), "n_out": len(tr),
                      "dropped": {},
                      "n_missing_value": int(tr["value"].isna().sum())},
            "links": {"n_in": n_links_in, "n_out": n_counted, "dropped": dropped,
                      "examples": examples, **ended_info},
            "panel": {"n_rows": len(tr), "n_units": int(tr["unit_id"].nunique()),
                      "n_treated_units": int(unit_cohort.notna().sum()),
                      "n_never_treated_units": int(unit_cohort.isna().sum()),
                      "n_cohorts": int(unit_cohort.dropna().nunique()),
                      "n_units_switching_off": len(switch_off)},
        },
        "units": {"first_link_after_window": late_units,
                  "switching_off": switch_off,
                  "treated_before_first_observed_year": before},
        "altered": _altered(tw),
        "unmatched_cities": _unmatched(tw),
        "warnings": warn_msgs,
    }
    return Panel(tr, manifest, outcome="value", unit="unit_id", time="year", cohort="cohort")


def _city_sides(a: pd.DataFrame, tr: pd.DataFrame) -> pd.DataFrame:
    """Directed (city -> partner country) sides of links, keyed to trade reporters."""
    lookup: dict[str, Any] = {}
    for rep in pd.unique(tr["reporter"]):
        s = str(rep).strip()
        if s.isdigit():
            lookup.setdefault("id:" + str(int(s)), rep)
        lookup.setdefault("name:" + normalize_name(s), rep)
    rows = []
    for rec in a.itertuples(index=False):
        for city, cid, mname, other in (
                (rec.city, rec.city_id, rec.city_matched_name, rec.partner_iso3),
                (rec.partner_city, rec.partner_city_id, rec.partner_city_matched_name,
                 rec.country_iso3)):
            rep = None
            if cid is not None and not pd.isna(cid):
                rep = lookup.get(f"id:{int(cid)}")
            if rep is None and city is not None and not pd.isna(city):
                rep = lookup.get("name:" + normalize_name(city))
            if rep is None and mname is not None and not pd.isna(mname):
                rep = lookup.get("name:" + normalize_name(mname))
            if rep is not None:
                rows.append((rec.source_row, f"{rep}-{other}", rec.link_year))
    return pd.DataFrame(rows, columns=["link", "unit_id", "link_year"]).astype(
        {"link": "int64", "link_year": "int64"})


def _altered(tw: pd.DataFrame) -> dict[str, Any]:
    """Values changed on the way in: country names -> ISO3, link types, city corrections."""
    out: dict[str, Any] = {}
    for raw, iso in (("country", "country_iso3"), ("partner_country", "partner_iso3")):
        if raw in tw.columns and iso in tw.columns:
            m = tw[[raw, iso]].dropna()
            m = m[m[raw].astype(str) != m[iso].astype(str)]
            if len(m):
                g = m.groupby([raw, iso]).size().rename("rows").reset_index()
                out[f"{raw}_to_iso3"] = _compact(g)
    if "relation_raw" in tw.columns:
        g = (tw.assign(relation_raw=tw["relation_raw"].astype(object).where(
            tw["relation_raw"].notna(), "<missing>"))
             .groupby(["relation_raw", "relation"]).size().rename("rows").reset_index())
        out["relation"] = _compact(g)
    corr = []
    for side in ("city", "partner_city"):
        if f"{side}_match" not in tw.columns:
            continue
        iso = "country_iso3" if side == "city" else "partner_iso3"
        m = tw[tw[f"{side}_match"].isin(["fuzzy", "alias"])]
        m = m[m[side].astype(str) != m[f"{side}_matched_name"].astype(str)]
        if len(m):
            cols = ["source_row", side, iso, f"{side}_matched_name", f"{side}_id",
                    f"{side}_match", f"{side}_match_score"]
            part = m[cols].copy()
            part.columns = ["source_row", "name", "country_iso3", "matched_name", "city_id",
                            "match", "score"]
            part.insert(1, "side", side)
            corr.append(part)
    if corr:
        c = pd.concat(corr, ignore_index=True)
        out["city_names_corrected"] = {"count": len(c), **_compact(c)}
    return out


def _unmatched(tw: pd.DataFrame) -> dict[str, Any]:
    """Unique unmatched city names with the number of rows and the reason."""
    parts = []
    for side, iso in (("city", "country_iso3"), ("partner_city", "partner_iso3")):
        if f"{side}_match" not in tw.columns:
            continue
        m = tw[tw[f"{side}_match"] == "unmatched"]
        if len(m):
            note = m.get(f"{side}_match_note", pd.Series("", index=m.index))
            parts.append(pd.DataFrame({"side": side, "name": m[side].astype(str),
                                       "country_iso3": m[iso].astype(object),
                                       "note": note.astype(object)}))
    if not parts:
        return {"rows": 0, "unique": 0, "columns": [], "data": []}
    u = pd.concat(parts, ignore_index=True)
    g = (u.fillna({"country_iso3": "<missing>", "note": ""})
         .groupby(["side", "name", "country_iso3", "note"]).size().rename("rows")
         .reset_index().sort_values(["side", "rows", "name"], ascending=[True, False, True]))
    return {"rows": len(u), "unique": len(g), **_compact(g)}
