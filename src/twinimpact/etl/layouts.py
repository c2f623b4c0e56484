"""Readers for the layouts trade sources publish: ``read_trade(path, format=...)``.

Each reader knows one published layout, maps its code system to ISO3, drops aggregate
rows ("World", regions, totals) and codes it cannot map -- **counting** both -- and returns
the canonical trade frame ``reporter, partner, year, value, n_records`` (one row per
reporter-partner-year; ``n_records`` = source rows summed into it). A sub-national
reporter keeps its region code: ``USA-CA`` (Census), ``AUS-WA`` (ABS), ``GBR-NE`` (HMRC).

``frame.attrs`` records the format, the source file(s) and hashes, the unit, the flow and
``dropped`` (``{reason: rows}``) with the unmapped codes and their row counts, so a user
can see exactly what did not make it into the frame.

========================  ============================================================
format                    layout (documentation followed: tests/data/<fixture>/SOURCE.md)
========================  ============================================================
``"baci"``                CEPII BACI ``t,i,j,k,v,q`` CSV(s) + ``country_codes_V*.csv``
``"comtrade"``            UN Comtrade API/bulk records (``refYear, reporterISO,
                          partnerISO, flowCode, cmdCode, primaryValue, ...``), CSV/JSON
``"census_statehs"``      US Census intltrade API JSON (header row + rows: ``STATE,
                          CTY_CODE, ALL_VAL_YR|ALL_VAL_MO, time``)
``"abs_merch"``           ABS Data API SDMX-CSV of ``MERCH_EXP`` / ``MERCH_IMP``
``"hmrc_rts"``            HMRC uktradeinfo ``RTS`` records (``MonthId, FlowTypeId,
                          GovRegionId, CountryId, Value``) with their lookups
========================  ============================================================

Years: monthly or quarterly sources are summed to calendar years; a year with missing
months (a partial latest year) is dropped and counted, because its sum is not an annual
flow.
"""

from __future__ import annotations

import csv
import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..errors import (
    ColumnError,
    InputError,
    SpecificationError,
    check_literal,
    format_message,
    suggest,
)
from ..provenance import file_sha256
from .countries import iso3_codes

__all__ = ["FORMATS", "census_schedule_c", "read_layout"]

FORMATS = ("baci", "comtrade", "census_statehs", "abs_merch", "hmrc_rts")
Flow = Literal["X", "M"]


# ---------------------------------------------------------------------------- code tables
@functools.lru_cache(maxsize=1)
def census_schedule_c() -> dict[str, str]:
    """Census Schedule C country code → ISO3 (``twinimpact/data/census_schedule_c.csv``)."""
    with resources.files("twinimpact").joinpath("data/census_schedule_c.csv").open(
            encoding="utf-8") as fh:
        return {r["code"]: r["iso3"] for r in csv.DictReader(fh)}


@functools.lru_cache(maxsize=1)
def _iso2_to_iso3() -> dict[str, str]:
    import pycountry

    out = {c.alpha_2: c.alpha_3 for c in pycountry.countries}
    out["XK"] = "XKX"  # Kosovo, user-assigned (as twinimpact's country table)
    return out


@functools.lru_cache(maxsize=1)
def _numeric_to_iso3() -> dict[str, str]:
    import pycountry

    return {str(int(c.numeric)): c.alpha_3 for c in pycountry.countries}


#: ABS state codes (ASGS state/territory codes 1-9 and their abbreviations).
_ABS_STATES = {"1": "NSW", "2": "VIC", "3": "QLD", "4": "SA", "5": "WA", "6": "TAS",
               "7": "NT", "8": "ACT", "9": "OT"}
#: HMRC RTS regions (ITL1): GovRegionGroupCodeAlpha codes.
_HMRC_REGIONS = ("NE", "NW", "YH", "EM", "WM", "EE", "LO", "SE", "SW", "WA", "SC", "NI")
_TOTAL_CODES = {"-", "-1", "TOT", "TOTAL", "T", "_T", "ALL", "0", "00", "000", "W00", "WLD"}


# ---------------------------------------------------------------------------- helpers
class _Drops:
    """Counts every row a reader drops, by reason (and by code for unmapped codes)."""

    def __init__(self) -> None:
        self.reasons: dict[str, int] = {}
        self.codes: dict[str, dict[str, int]] = {}

    def add(self, reason: str, mask: pd.Series, codes: pd.Series | None = None,
            weight: pd.Series | None = None) -> None:
        n = int(weight[mask].sum()) if weight is not None else int(mask.sum())
        if not n:
            return
        self.reasons[reason] = self.reasons.get(reason, 0) + n
        if codes is not None:
            w = weight[mask] if weight is not None else pd.Series(1, index=mask[mask].index)
            counts = w.groupby(codes[mask].astype(str)).sum()
            d = self.codes.setdefault(reason, {})
            for k, v in counts.items():
                d[str(k)] = d.get(str(k), 0) + int(v)

    def as_dict(self) -> dict[str, Any]:
        return {"rows": dict(self.reasons), "codes": {k: dict(v) for k, v in self.codes.items()},
                "total": int(sum(self.reasons.values()))}


def _require(df: pd.DataFrame, cols: Sequence[str], where: str, fmt: str) -> None:
    for c in cols:
        if c not in df.columns:
            close = suggest(c, [str(x) for x in df.columns])
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ColumnError(format_message(
                f"{fmt} layout needs a column {c!r}",
                where=f"{where}; columns present: {', '.join(map(str, df.columns[:25]))}",
                fix=hint + f"check that the file is a {fmt} download (see "
                           "twinimpact.etl.layouts) or read it with read_trade(..., "
                           "reporter=, partner=, year=, value=)"))


def _number(s: pd.Series, *, column: str, where: str) -> pd.Series:
    """Numeric values; non-numeric → InputError naming file, column and row."""
    x = pd.to_numeric(s, errors="coerce")
    bad = x.isna() & s.notna() & (s.astype("string").str.strip() != "")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(format_message(
            f"trade value is not a number ({int(bad.sum())} row(s))",
            where=f"{where}, column {column!r}, row {i}", seen=s.iloc[i],
            fix="convert the values to numbers (a suppression mark or thousands separator "
                "in the column?)"))
    neg = x < 0
    if neg.any():
        i = int(np.flatnonzero(neg.to_numpy())[0])
        raise InputError(format_message(
            f"negative trade values ({int(neg.sum())} row(s))",
            where=f"{where}, column {column!r}, row {i}", seen=float(x.iloc[i]),
            fix="trade flows are >= 0; check the sign or the column"))
    return x.astype(float)


def _source_meta(paths: Sequence[Path]) -> dict[str, Any]:
    return {"kind": "file" if len(paths) == 1 else "files",
            "files": [{"path": str(p.resolve()), "sha256": file_sha256(p)} for p in paths]}


def _one_file(path: Any, fmt: str) -> Path:
    if isinstance(path, pd.DataFrame):
        raise InputError(format_message(
            f"format={fmt!r} reads a downloaded file, not a DataFrame",
            fix="pass the path of the file as published, or read_trade(frame, reporter=..)"))
    p = Path(os.fspath(path))
    if not p.is_file():
        raise InputError(format_message(
            f"{fmt} file not found", where=str(p.resolve()),
            fix="check the path (relative paths are read from the current directory)"))
    return p


def _read_table(p: Path) -> pd.DataFrame:
    """CSV/TSV/Parquet/JSON records as text columns (codes keep leading zeros)."""
    name = p.name.lower()
    if name.endswith((".parquet", ".pq")):
        return pd.read_parquet(p)
    if name.endswith(".json"):
        with p.open(encoding="utf-8-sig") as fh:
            doc = json.load(fh)
        if isinstance(doc, dict):
            for key in ("data", "value", "dataset"):
                if isinstance(doc.get(key), list):
                    doc = doc[key]
                    break
        if not isinstance(doc, list):
            raise InputError(format_message(
                "JSON file is not a list of records", where=str(p),
                fix="pass the API response ({'data': [...]} or {'value': [...]})"))
        return pd.DataFrame(doc).astype(object).where(lambda d: d.notna(), None).astype(
            "string")
    sep = "\t" if name.endswith((".tsv", ".txt")) else ","
    return pd.read_csv(p, sep=sep, dtype=str, keep_default_na=False, na_values=[""],
                       encoding="utf-8-sig")


def _annual(df: pd.DataFrame, keys: list[str], drops: _Drops, where: str) -> pd.DataFrame:
    """Sum sub-annual periods (``period`` = 1-12 month or quarter start) to years.

    Columns in: ``keys`` (incl. year), ``period``, ``value``, ``n_records``. A year whose
    periods are not all present (12 months; 4 quarters when every period is a quarter
    start 1/4/7/10) is dropped and counted.
    """
    per = df["period"].astype(int)
    quarterly = bool(per.isin([1, 4, 7, 10]).all()) and per.nunique() > 1
    expected = 4 if quarterly else 12
    g = df.groupby(keys, dropna=False, sort=False)
    n_periods = g["period"].transform("nunique")
    incomplete = n_periods < expected
    drops.add(f"incomplete year (fewer than {expected} {'quarters' if quarterly else 'months'})",
              incomplete, df["year"], weight=df["n_records"])
    df = df[~incomplete]
    return df.groupby(keys, dropna=False, sort=False).agg(
        value=("value", "sum"), n_records=("n_records", "sum")).reset_index()


def _finish(df: pd.DataFrame, *, fmt: str, unit: str, flow: str | None,
            drops: _Drops, source: dict[str, Any], extra: Mapping[str, Any] | None = None
            ) -> pd.DataFrame:
    out = df.groupby(["reporter", "partner", "year"], sort=True).agg(
        value=("value", "sum"), n_records=("n_records", "sum")).reset_index()
    out["reporter"] = out["reporter"].astype("string")
    out["partner"] = out["partner"].astype("string")
    out["year"] = out["year"].astype("int64")
    out["value"] = out["value"].astype(float)
    out["n_records"] = out["n_records"].astype("int64")
    if out.empty:
        raise InputError(format_message(
            f"no {fmt} row is left after dropping aggregates and unmapped codes",
            where=str(source.get("files", [{}])[0].get("path", "")),
            seen=drops.as_dict()["rows"],
            fix="check the flow= and the file (does it hold country detail?)"))
    out.attrs = {"kind": "trade", "format": fmt, "source": source, "unit": unit,
                 "flow": flow, "dropped": drops.as_dict(),
                 "reporter_type": "region" if out["reporter"].str.contains("-").any()
                 else "country", "n_records": int(out["n_records"].sum()),
                 **(dict(extra) if extra else {})}
    return out


def _pick_flow(values: pd.Series, flow: str | None, mapping: Mapping[str, str],
               where: str, column: str) -> tuple[str, pd.Series]:
    """Which rows carry the chosen flow; an ambiguous file needs flow=."""
    if flow is not None:
        check_literal("flow", flow, ("X", "M"))
    f = values.astype("string").map(lambda v: mapping.get(str(v).strip()))
    present = sorted({x for x in f.dropna().unique()})
    if flow is None:
        if len(present) > 1:
            raise SpecificationError(format_message(
                "the file holds both exports and imports", where=f"{where}, column {column!r}",
                seen=present, fix="pass flow='X' (exports) or flow='M' (imports)"))
        if not present:
            raise InputError(format_message(
                "no export or import rows", where=f"{where}, column {column!r}",
                seen=sorted(map(str, values.dropna().unique()))[:10],
                fix="check the file's flow codes"))
        flow = present[0]
    return flow, (f == flow).fillna(False).astype(bool)


# ---------------------------------------------------------------------------- BACI
def _baci_files(path: Any) -> tuple[list[Path], Path | None]:
    from .scan import resolve_files

    items = [path] if isinstance(path, str | os.PathLike) else list(path)
    if len(items) == 1 and Path(os.fspath(items[0])).is_dir():
        folder = Path(os.fspath(items[0]))
        data = sorted(folder.glob("BACI_*.csv"))
        if not data:
            raise InputError(format_message(
                "the folder holds no BACI_*.csv file", where=str(folder.resolve()),
                fix="point to the unzipped BACI folder or pass a glob of its CSV files"))
    else:
        data, _ = resolve_files(items)
    codes = [p for p in data if p.name.lower().startswith("country_codes")]
    data = [p for p in data if p not in codes]
    if not codes:
        codes = sorted({q for p in data for q in p.parent.glob("country_codes*.csv")})
    return data, (codes[-1] if codes else None)


def _baci_country_table(path: Path) -> dict[str, str | None]:
    t = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""],
                    encoding="utf-8-sig")
    code = "country_code"
    iso3 = next((c for c in ("country_iso3", "iso_3digit_alpha") if c in t.columns), None)
    if code not in t.columns or iso3 is None:
        raise ColumnError(format_message(
            "BACI country-code file needs country_code and country_iso3 (or "
            "iso_3digit_alpha)", where=f"{path}; columns: {', '.join(t.columns)}",
            fix="pass countries= the country_codes_V*.csv file shipped with BACI"))
    known = iso3_codes()
    out: dict[str, str | None] = {}
    for c, i in zip(t[code], t[iso3], strict=True):
        i = None if i is None or (isinstance(i, float)) else str(i).strip().upper()
        out[str(int(c))] = i if i in known else None
    return out


def read_baci(path: Any, *, countries: Any = None, flow: Flow | None = None,
              filters: Mapping[str, Any] | None = None, unit: str | None = None,
              engine: str = "duckdb", **scan_options: Any) -> pd.DataFrame:
    """CEPII BACI (``t, i, j, k, v, q``) → exporter × importer × year, USD thousands.

    ``i`` exporter and ``j`` importer are BACI country codes (ISO 3166 numeric, with
    BACI's own codes for a few territories), mapped to ISO3 with the country-code file
    published in the same archive (``country_codes_V*.csv``; found next to the data, or
    ``countries=``). The HS6 rows ``k`` are summed out of core with
    :func:`~twinimpact.etl.scan.scan_trade` (``filters=`` on ``k`` selects products, e.g.
    ``{"k": slice(840000, 859999)}``). ``flow="X"`` (default): reporter = exporter;
    ``flow="M"``: reporter = importer, partner = exporter (the same flows seen from the
    importer). Codes without an ISO3 in the country file (e.g. "Other Asia, nes") are
    dropped and counted. ``unit`` overrides BACI's "USD thousands current" (for data
    written in BACI layout from another source).
    """
    from .scan import scan_trade

    check_literal("flow", flow or "X", ("X", "M"))
    data, code_file = _baci_files(path)
    if countries is not None:
        code_file = Path(os.fspath(countries))
    if code_file is None or not code_file.is_file():
        raise InputError(format_message(
            "BACI country-code file not found", where=str(data[0].parent),
            fix="pass countries='country_codes_V202401b.csv' (shipped in the BACI archive)"))
    table = _baci_country_table(code_file)
    rep, par = ("i", "j") if (flow or "X") == "X" else ("j", "i")
    agg = scan_trade(data, reporter=rep, partner=par, year="t", value="v", filters=filters,
                     engine=engine, normalize=False, **scan_options)
    drops = _Drops()
    df = agg.rename(columns={})[["reporter", "partner", "year", "value", "n_records"]].copy()
    for role in ("reporter", "partner"):
        codes = df[role].astype(str).str.replace(r"\.0$", "", regex=True)
        mapped = codes.map(table)
        unknown = mapped.isna()
        drops.add("country code without ISO3 in the BACI country file", unknown, codes,
                  weight=df["n_records"])
        df[role] = mapped
        df = df[~unknown]
    meta = _source_meta([*data, code_file])
    meta["scan"] = agg.attrs.get("source")
    return _finish(df, fmt="baci", unit=unit or "USD thousands current", flow=flow or "X",
                   drops=drops, source=meta,
                   extra={"n_missing_value": agg.attrs.get("n_missing_value", 0)})


# ---------------------------------------------------------------------------- Comtrade
def read_comtrade(path: Any, *, flow: Flow | None = None) -> pd.DataFrame:
    """UN Comtrade records (API ``getFinalData`` / bulk CSV or JSON) → annual flows, USD.

    Rows kept: ``flowCode`` = the chosen flow (``X`` exports, ``M`` imports; re-exports
    and re-imports are counted as another flow); totals of the breakdowns
    (``partner2Code`` = 0, ``motCode`` = 0, ``customsCode`` = C00 where those columns
    exist); the coarsest commodity level present per reporter-partner-period
    (``cmdCode`` TOTAL before HS2 before HS4 ..., so levels are never added up);
    partners other than World (``partnerCode`` 0 / ``W00``). ``reporterISO`` and
    ``partnerISO`` must be ISO3 codes; areas such as "Areas, nes" (``_X``) are counted
    as unmapped. Monthly records (``freqCode`` M) are summed over complete years.
    """
    p = _one_file(path, "comtrade")
    df = _read_table(p)
    where = str(p)
    _require(df, ["refYear", "reporterISO", "partnerISO", "flowCode", "cmdCode",
                  "primaryValue"], where, "comtrade")
    df = df.reset_index(drop=True)
    drops = _Drops()
    flow, keep = _pick_flow(df["flowCode"], flow, {"X": "X", "M": "M"}, where, "flowCode")
    drops.add(f"other flow than {flow}", ~keep, df["flowCode"])
    df = df[keep]
    for col, total in (("partner2Code", "0"), ("motCode", "0"), ("customsCode", "C00")):
        if col in df.columns:
            breakdown = df[col].astype("string").str.strip().fillna(total) != total
            drops.add(f"breakdown by {col} (the total row is kept)", breakdown)
            df = df[~breakdown]
    value = _number(df["primaryValue"], column="primaryValue", where=where)
    monthly = "freqCode" in df.columns and (df["freqCode"].astype("string") == "M").any()
    period = (pd.to_numeric(df["refMonth"], errors="coerce") if monthly and "refMonth"
              in df.columns else pd.Series(12, index=df.index))
    cmd = df["cmdCode"].astype("string").str.strip()
    if "aggrLevel" in df.columns:
        level = pd.to_numeric(df["aggrLevel"], errors="coerce").fillna(99)
    else:
        level = cmd.map(lambda c: 0 if c == "TOTAL" else len(c or "")).astype(float)
    work = pd.DataFrame({"reporter": df["reporterISO"].astype("string").str.strip(),
                         "partner": df["partnerISO"].astype("string").str.strip(),
                         "partner_code": df.get("partnerCode", pd.Series(pd.NA, index=df.index)
                                                ).astype("string"),
                         "year": pd.to_numeric(df["refYear"], errors="coerce"),
                         "period": period, "level": level, "value": value, "n_records": 1})
    finest = work.groupby(["reporter", "partner", "year", "period"], dropna=False)[
        "level"].transform("min")
    finer = work["level"] > finest
    drops.add("finer commodity level than one present for the same flow (not added twice)",
              finer, cmd)
    work = work[~finer]
    world = work["partner"].isin(["W00", "WLD"]) | (work["partner_code"] == "0")
    drops.add("aggregate partner (World)", world, work["partner"])
    work = work[~world]
    known = iso3_codes()
    for role in ("reporter", "partner"):
        bad = ~work[role].str.upper().isin(known).fillna(False).astype(bool)
        drops.add(f"{role} code not an ISO3 country (area nes, group)", bad, work[role])
        work = work[~bad]
        work[role] = work[role].str.upper()
    if work["year"].isna().any():
        raise InputError(format_message("refYear is not a year", where=f"{where}, column "
                                        "'refYear'", fix="check the file"))
    work = work.groupby(["reporter", "partner", "year", "period"], as_index=False).agg(
        value=("value", "sum"), n_records=("n_records", "sum"))
    if monthly:
        work = _annual(work, ["reporter", "partner", "year"], drops, where)
    return _finish(work, fmt="comtrade", unit="USD current", flow=flow, drops=drops,
                   source=_source_meta([p]))


# ---------------------------------------------------------------------------- Census
def _census_rows(p: Path) -> pd.DataFrame:
    with p.open(encoding="utf-8-sig") as fh:
        try:
            doc = json.load(fh)
        except json.JSONDecodeError as exc:
            raise InputError(format_message(
                "Census API response is not JSON", where=str(p), seen=str(exc),
                fix="save the body of the api.census.gov response as it is")) from exc
    if not (isinstance(doc, list) and doc and isinstance(doc[0], list)):
        raise InputError(format_message(
            "Census API JSON must be a list of rows whose first row is the header",
            where=str(p), fix="save the body of the api.census.gov response as it is"))
    header = [str(h) for h in doc[0]]
    keep = [i for i, h in enumerate(header) if h not in header[:i]]  # a predicate repeats
    rows = [[r[i] for i in keep] for r in doc[1:]]
    return pd.DataFrame(rows, columns=[header[i] for i in keep], dtype="string")


def read_census_statehs(path: Any, *, flow: Flow | None = None) -> pd.DataFrame:
    """US Census intltrade ``exports/statehs`` (or ``imports/statehs``) JSON → state flows.

    Reporter ``USA-<state>`` (postal code), partner = ``CTY_CODE`` (Schedule C) → ISO3 via
    :func:`census_schedule_c`. Country groupings (``-`` total, ``0003`` EU, ``1XXX``
    North America, ...) are counted and dropped as aggregates; codes not in Schedule C as
    unmapped. Values: ``ALL_VAL_YR`` (exports) / ``GEN_VAL_YR`` (imports, general) is
    year-to-date, so the December row gives the year; without it, ``*_VAL_MO`` is summed
    over the 12 months. Years without December (or without 12 months) are dropped and
    counted. USD.
    """
    p = _one_file(path, "census_statehs")
    df = _census_rows(p)
    where = str(p)
    _require(df, ["STATE", "CTY_CODE", "time"], where, "census_statehs")
    exports = any(c.startswith("ALL_VAL_") for c in df.columns)
    imports = any(c.startswith("GEN_VAL_") for c in df.columns)
    if flow is None:
        if exports and imports:
            raise SpecificationError(format_message(
                "the file holds export (ALL_VAL_*) and import (GEN_VAL_*) values",
                where=where, fix="pass flow='X' or flow='M'"))
        flow = "M" if imports else "X"
    check_literal("flow", flow, ("X", "M"))
    stem = "ALL_VAL_" if flow == "X" else "GEN_VAL_"
    ytd, mo = f"{stem}YR", f"{stem}MO"
    if ytd not in df.columns and mo not in df.columns:
        raise ColumnError(format_message(
            f"census_statehs layout needs {ytd} or {mo} for flow={flow!r}",
            where=f"{where}; columns present: {', '.join(df.columns)}",
            fix="request get=...,ALL_VAL_YR (exports) or GEN_VAL_YR (imports)"))
    drops = _Drops()
    comm = next((c for c in ("E_COMMODITY", "I_COMMODITY") if c in df.columns), None)
    if comm is not None and "COMM_LVL" in df.columns:
        lvl = df["COMM_LVL"].astype("string")
        order = {"HS2": 2, "HS4": 4, "HS6": 6, "HS8": 8, "HS10": 10}
        rank = lvl.map(lambda x: order.get(str(x), 99))
        finer = rank > rank.min()
        drops.add("finer commodity level than one present (not added twice)", finer,
                  df[comm])
        df = df[~finer]
    t = df["time"].astype("string").str.extract(r"^(\d{4})-(\d{2})$")
    if t.isna().any().any():
        i = int(np.flatnonzero(t.isna().any(axis=1).to_numpy())[0])
        raise InputError(format_message("time must be 'YYYY-MM'", where=f"{where}, column "
                                        f"'time', row {i}", seen=df["time"].iloc[i],
                                        fix="request time=from YYYY-MM to YYYY-MM"))
    state = df["STATE"].astype("string").str.strip().str.upper()
    cty = df["CTY_CODE"].astype("string").str.strip()
    work = pd.DataFrame({"state": state, "cty": cty, "year": t[0].astype(int),
                         "month": t[1].astype(int), "n_records": 1})
    if ytd in df.columns:
        work["value"] = _number(df[ytd], column=ytd, where=where).to_numpy()
        last = work.groupby(["state", "cty", "year"])["month"].transform("max")
        partial = last < 12
        drops.add("incomplete year (year-to-date without December)", partial, work["year"])
        keep_dec = (work["month"] == 12) & ~partial
        drops.add("earlier months (December's year-to-date value is the year)",
                  ~keep_dec & ~partial)
        work = work[keep_dec].assign(period=12)
        work["n_records"] = 1
    else:
        work["value"] = _number(df[mo], column=mo, where=where).to_numpy()
        work = work.rename(columns={"month": "period"})
    us = _us_states()
    agg_state = ~work["state"].str.fullmatch(r"[A-Z]{2}").fillna(False).astype(bool)
    drops.add("aggregate reporter (all states)", agg_state, work["state"])
    work = work[~agg_state]
    bad_state = ~work["state"].isin(us)
    drops.add("state code not a US state or territory", bad_state, work["state"])
    work = work[~bad_state]
    sched = census_schedule_c()
    group = ~work["cty"].str.fullmatch(r"[1-9]\d{3}").fillna(False).astype(bool)
    drops.add("aggregate partner (Census country grouping or total)", group, work["cty"])
    work = work[~group]
    mapped = work["cty"].map(sched)
    drops.add("CTY_CODE not in Census Schedule C", mapped.isna(), work["cty"])
    work = work.assign(partner=mapped)[mapped.notna()]
    work["reporter"] = "USA-" + work["state"]
    keys = ["reporter", "partner", "year"]
    work = work.groupby([*keys, "period"], as_index=False).agg(
        value=("value", "sum"), n_records=("n_records", "sum"))
    if ytd not in df.columns:
        work = _annual(work, keys, drops, where)
    return _finish(work, fmt="census_statehs", unit="USD current", flow=flow, drops=drops,
                   source=_source_meta([p]))


@functools.lru_cache(maxsize=1)
def _us_states() -> frozenset[str]:
    import pycountry

    codes = {s.code.split("-")[1] for s in pycountry.subdivisions.get(country_code="US")}
    return frozenset(codes | {"PR", "VI", "GU", "AS", "MP"})


# ---------------------------------------------------------------------------- ABS
def _strip_label(s: str) -> str:
    """'COUNTRY_DEST: Country of destination' → 'COUNTRY_DEST' (labelled SDMX-CSV)."""
    return str(s).split(": ", 1)[0].strip()


def read_abs_merch(path: Any, *, flow: Flow | None = None) -> pd.DataFrame:
    """ABS Data API SDMX-CSV of ``MERCH_EXP`` (exports) or ``MERCH_IMP`` → state flows.

    The flow comes from ``DATAFLOW`` (``ABS:MERCH_EXP(1.0.0)`` → X, ``MERCH_IMP`` → M).
    Dimensions are found by id: the country (``COUNTRY...``: destination for exports,
    origin for imports), the state (``STATE...`` or ``REGION``: ASGS codes 1-9 or
    abbreviations → ``AUS-NSW`` ... ``AUS-OT``; totals only → reporter ``AUS``) and the
    commodity (``COMMODITY...``/``SITC...``: the total is kept when present, else the
    coarsest level). ``TIME_PERIOD`` months are summed over complete years.
    ``OBS_VALUE`` is in AUD thousands. Country codes are ISO 3166 alpha-2 or alpha-3 (or
    labels); totals and regions are counted and dropped. Labelled files
    (``CODE: Label``) are accepted.
    """
    p = _one_file(path, "abs_merch")
    raw = _read_table(p)
    where = str(p)
    raw.columns = [_strip_label(c) for c in raw.columns]
    _require(raw, ["DATAFLOW", "TIME_PERIOD", "OBS_VALUE"], where, "abs_merch")
    df = raw.reset_index(drop=True)
    for c in df.columns:
        if c != "OBS_VALUE":
            df[c] = df[c].astype("string").map(lambda v: _strip_label(v) if v is not pd.NA
                                               else v)
    dfl = df["DATAFLOW"].astype("string")
    flows = {"X": dfl.str.contains("MERCH_EXP", regex=False).fillna(False),
             "M": dfl.str.contains("MERCH_IMP", regex=False).fillna(False)}
    present = [k for k, m in flows.items() if m.any()]
    if not present:
        raise InputError(format_message(
            "DATAFLOW is neither MERCH_EXP nor MERCH_IMP", where=f"{where}, column "
            "'DATAFLOW'", seen=str(dfl.iloc[0]), fix="download MERCH_EXP or MERCH_IMP"))
    if flow is None:
        if len(present) > 1:
            raise SpecificationError(format_message(
                "the file holds MERCH_EXP and MERCH_IMP rows", where=where,
                fix="pass flow='X' or flow='M'"))
        flow = present[0]  # type: ignore[assignment]
    check_literal("flow", flow, ("X", "M"))
    drops = _Drops()
    drops.add(f"other flow than {flow}", ~flows[flow], dfl)
    df = df[flows[flow]]
    cols = list(df.columns)
    country = next((c for c in cols if c.startswith("COUNTRY")), None)
    state = next((c for c in cols if c.startswith("STATE") or c == "REGION"), None)
    breakdowns = [c for c in cols if c.startswith(("COMMODITY", "SITC", "INDUSTRY", "HS"))]
    if country is None:
        raise ColumnError(format_message(
            "abs_merch layout needs a country dimension (COUNTRY...)",
            where=f"{where}; columns present: {', '.join(cols)}",
            fix="download MERCH_EXP/MERCH_IMP with the country dimension"))
    value = _number(df["OBS_VALUE"], column="OBS_VALUE", where=where)
    tp = df["TIME_PERIOD"].astype("string").str.extract(r"^(\d{4})(?:-(\d{2}))?$")
    if tp[0].isna().any():
        i = int(np.flatnonzero(tp[0].isna().to_numpy())[0])
        raise InputError(format_message(
            "TIME_PERIOD must be 'YYYY-MM' or 'YYYY'", where=f"{where}, row {i}",
            seen=df["TIME_PERIOD"].iloc[i], fix="download monthly or annual data"))
    monthly = tp[1].notna().any()
    work = pd.DataFrame({"country": df[country].astype("string").str.strip(),
                         "state": (df[state].astype("string").str.strip() if state
                                   else pd.Series("TOT", index=df.index, dtype="string")),
                         "year": tp[0].astype(int),
                         "period": tp[1].fillna("12").astype(int), "value": value,
                         "n_records": 1})
    for dim in breakdowns:  # never add a total to its own detail
        codes = df.loc[work.index, dim].astype("string").str.strip()
        is_total = codes.str.upper().isin(_TOTAL_CODES).fillna(False).astype(bool)
        if is_total.any():
            drop = ~is_total
            reason = f"{dim} detail (the {dim} total is kept)"
        else:
            ln = codes.str.len()
            drop = (ln > ln.min()).fillna(False).astype(bool)
            reason = f"finer {dim} level than one present (not added twice)"
        drops.add(reason, drop, codes)
        work = work[~drop]
    st = work["state"].str.upper()
    st_total = st.isin(_TOTAL_CODES | {"AUS", "AUST"})
    if st_total.all():
        work["reporter"] = "AUS"
    else:
        drops.add("aggregate reporter (Australia total)", st_total, work["state"])
        work = work[~st_total]
        code = work["state"].str.upper().map(lambda s: _ABS_STATES.get(s, s))
        bad = ~code.isin(set(_ABS_STATES.values()))
        drops.add("state code not an Australian state or territory", bad, work["state"])
        work = work[~bad].assign(reporter="AUS-" + code[~bad])
    partner = work["country"].map(_country_code)
    agg = work["country"].str.upper().isin(_TOTAL_CODES)
    drops.add("aggregate partner (total)", agg, work["country"])
    unm = partner.isna() & ~agg
    drops.add("country code not an ISO country (region or unknown)", unm, work["country"])
    work = work.assign(partner=partner)[partner.notna()]
    keys = ["reporter", "partner", "year"]
    work = work.groupby([*keys, "period"], as_index=False).agg(
        value=("value", "sum"), n_records=("n_records", "sum"))
    if monthly:
        work = _annual(work, keys, drops, where)
    unit = "AUD thousands current"
    if "UNIT_MULT" in df.columns:
        mult = set(df["UNIT_MULT"].dropna().astype(str).str.strip())
        names = {"0": "AUD current", "3": "AUD thousands current", "6": "AUD millions current"}
        if len(mult) == 1 and next(iter(mult)) in names:
            unit = names[next(iter(mult))]
    return _finish(work, fmt="abs_merch", unit=unit, flow=flow,
                   drops=drops, source=_source_meta([p]))


def _country_code(v: Any) -> str | None:
    """ISO2/ISO3/ISO numeric code → ISO3 (strict: names are not guessed)."""
    if v is None or v is pd.NA:
        return None
    s = str(v).strip().upper()
    if len(s) == 2:
        return _iso2_to_iso3().get(s)
    if len(s) == 3 and s.isalpha():
        return s if s in iso3_codes() else None
    if s.isdigit():
        return _numeric_to_iso3().get(str(int(s)))
    return None


# ---------------------------------------------------------------------------- HMRC RTS
def _lookup_table(obj: Any, key: str, code: str, what: str) -> dict[str, str]:
    t = obj if isinstance(obj, pd.DataFrame) else _read_table(_one_file(obj, "hmrc_rts"))
    _require(t, [key, code], f"the {what} lookup", "hmrc_rts")
    return {str(k).strip(): str(c).strip() for k, c in zip(t[key], t[code], strict=True)
            if c is not None and c is not pd.NA}


def _hmrc_codes(df: pd.DataFrame, key: str, code: str, lookup: Any, keyword: str,
                endpoint: str, where: str) -> pd.Series:
    """Codes joined in the records, or looked up by id in an API lookup table."""
    if code in df.columns:
        return df[code].astype("string").str.strip()
    if lookup is not None and key in df.columns:
        return df[key].astype("string").str.strip().map(
            _lookup_table(lookup, key, code, endpoint))
    raise ColumnError(format_message(
        f"hmrc_rts needs {code}, or {key} with {keyword}=",
        where=f"{where}; columns present: {', '.join(df.columns)}",
        fix=f"pass {keyword}= the uktradeinfo {endpoint} lookup ({key}, {code})"))


def read_hmrc_rts(path: Any, *, flow: Flow | None = None, regions: Any = None,
                  countries: Any = None) -> pd.DataFrame:
    """HMRC Regional Trade Statistics (uktradeinfo ``RTS`` endpoint) → UK region flows.

    Records: ``MonthId`` (YYYYMM), ``FlowTypeId`` (1 EU imports, 2 EU exports, 3 non-EU
    imports, 4 non-EU exports), ``GovRegionId``, ``CountryId``, ``Value`` (GBP), as the
    API returns them (JSON ``{"value": [...]}`` or CSV). Region and country codes come
    from columns joined from the API's lookups (``GovRegionGroupCodeAlpha``,
    ``CountryCodeAlpha``) or from the lookup tables passed as ``regions=`` /
    ``countries=`` (files or frames with ``GovRegionId, GovRegionGroupCodeAlpha`` and
    ``CountryId, CountryCodeAlpha``). Reporter ``GBR-<region>`` for the 12 ITL1 regions
    (``NE NW YH EM WM EE LO SE SW WA SC NI``); trade not allocated to a region is counted
    and dropped. Partners: ISO alpha-2 → ISO3; others counted as unmapped. Quarterly
    (or monthly) periods are summed over complete years.
    """
    p = _one_file(path, "hmrc_rts")
    df = _read_table(p).reset_index(drop=True)
    where = str(p)
    _require(df, ["MonthId", "FlowTypeId", "Value"], where, "hmrc_rts")
    drops = _Drops()
    flow, keep = _pick_flow(df["FlowTypeId"], flow, {"1": "M", "2": "X", "3": "M", "4": "X"},
                            where, "FlowTypeId")
    drops.add(f"other flow than {flow}", ~keep, df["FlowTypeId"])
    df = df[keep]
    region = _hmrc_codes(df, "GovRegionId", "GovRegionGroupCodeAlpha", regions, "regions",
                         "Region", where)
    ctry = _hmrc_codes(df, "CountryId", "CountryCodeAlpha", countries, "countries",
                       "Country", where)
    month = pd.to_numeric(df["MonthId"], errors="coerce")
    if month.isna().any() or not month.between(190001, 299912).all():
        i = int(np.flatnonzero((month.isna() | ~month.between(190001, 299912)).to_numpy())[0])
        raise InputError(format_message("MonthId must be YYYYMM", where=f"{where}, row {i}",
                                        seen=df["MonthId"].iloc[i], fix="check the file"))
    work = pd.DataFrame({"region": region, "country": ctry,
                         "year": (month // 100).astype(int), "period": (month % 100).astype(int),
                         "value": _number(df["Value"], column="Value", where=where),
                         "n_records": 1})
    unalloc = ~work["region"].isin(_HMRC_REGIONS).fillna(False).astype(bool)
    drops.add("trade not allocated to a UK region (or unknown region code)", unalloc,
              work["region"].fillna("<missing>"))
    work = work[~unalloc]
    partner = work["country"].map(_country_code)
    drops.add("country code not an ISO country (unknown or group)", partner.isna(),
              work["country"].fillna("<missing>"))
    work = work.assign(partner=partner, reporter="GBR-" + work["region"])[partner.notna()]
    keys = ["reporter", "partner", "year"]
    work = work.groupby([*keys, "period"], as_index=False).agg(
        value=("value", "sum"), n_records=("n_records", "sum"))
    work = _annual(work, keys, drops, where)
    return _finish(work, fmt="hmrc_rts", unit="GBP current", flow=flow, drops=drops,
                   source=_source_meta([p]))


# ---------------------------------------------------------------------------- dispatch
_READERS: dict[str, Callable[..., pd.DataFrame]] = {
    "baci": read_baci, "comtrade": read_comtrade, "census_statehs": read_census_statehs,
    "abs_merch": read_abs_merch, "hmrc_rts": read_hmrc_rts}


def read_layout(path: Any, *, format: str, **options: Any) -> pd.DataFrame:
    """Read a published layout (see the module docstring); ``options`` go to the reader."""
    if format not in _READERS:
        close = suggest(format, FORMATS)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SpecificationError(format_message(
            "unknown trade format", seen=format,
            fix=hint + f"use one of {', '.join(FORMATS)}, or read the file with "
                "read_trade(path, reporter=, partner=, year=, value=)"))
    reader = _READERS[format]
    import inspect

    allowed = set(inspect.signature(reader).parameters) - {"path"}
    if format == "baci":
        allowed |= {"memory_limit", "temp_directory", "threads", "spark", "chunksize"}
    extra = sorted(set(options) - allowed)
    if extra:
        raise SpecificationError(format_message(
            f"option(s) not used by format={format!r}", seen=extra,
            fix=f"format={format!r} takes {', '.join(sorted(allowed))}"))
    return reader(path, **options)




