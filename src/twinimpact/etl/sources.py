"""Validated readers for twinning registries and trade series, and loaders of shipped data.

This is the only module that knows raw formats. :func:`read_twinnings` and
:func:`read_trade` take a path (CSV, TSV or parquet) or a DataFrame plus keywords that map
the source's column names to the canonical ones, validate, normalise names to ids and
return a **new** frame (the caller's frame is never modified). Provenance (file path and
sha256, or the frame's hash) is kept in ``df.attrs``.

The default study, step by step::

    from twinimpact.etl import load_german_twinnings, load_tradhist, build_panel
    twin = load_german_twinnings()          # read_twinnings(..., country="DEU",
                                            #   relation="form", established="seit", ...)
    trade = load_tradhist()                 # reporter, partner, year, value (GBP current)
    trade = trade[(trade.reporter == "DEU") & trade.year.between(1871, 2014)]
    panel = build_panel(trade, twin, level="country_pair", relations=("twinning",))
    panel.to_parquet("data/processed/de_exports/panel.parquet")

Shipped data (``data/raw``) are located by walking up from the current directory and
from this file (an editable install or a clone), after ``$TWINIMPACT_HOME`` if set; run
from a clone of the repository (``pip install .`` inside it works too, because the
current directory is searched). The error names every folder searched.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
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
from ..provenance import file_sha256, frame_sha256
from .cities import Gazetteer, default_gazetteer
from .countries import to_iso3_series
from .names import row_label
from .schema import normalize_relations, parse_established

__all__ = [
    "find_raw_file",
    "load_cn_key_pairs",
    "load_german_twinnings",
    "load_gravity_panel",
    "load_tradhist",
    "load_wikipedia_twinnings",
    "read_table",
    "read_trade",
    "read_twinnings",
]

_UNSET: Any = object()

#: Output columns of :func:`read_twinnings`, in order.
TWINNING_OUTPUT = (
    "source_row", "city", "country", "partner_city", "partner_country", "established",
    "established_year", "established_date", "ended", "ended_year", "ended_date", "relation", "relation_raw", "country_iso3",
    "partner_iso3", "city_id", "city_match", "city_matched_name", "city_match_score",
    "partner_city_id", "partner_city_match", "partner_city_matched_name",
    "partner_city_match_score",
)


# ---------------------------------------------------------------------------- reading
def _read(path_or_frame: Any, what: str, *, sep: str | None = None,
          encoding: str = "utf-8") -> tuple[pd.DataFrame, dict[str, Any]]:
    """A private copy of the input and its provenance. ``sep`` / ``encoding`` apply to
    text files (default: comma, tab for ``.tsv``; UTF-8)."""
    if not isinstance(path_or_frame, pd.DataFrame | str | os.PathLike):
        from .._io import as_frame

        path_or_frame = as_frame(path_or_frame, what=what, also="a path")
    if isinstance(path_or_frame, pd.DataFrame):
        df = path_or_frame.copy(deep=True)
        df.attrs = {}
        source = {"kind": "DataFrame", "frame_sha256": frame_sha256(path_or_frame)}
        inherited = dict(path_or_frame.attrs.get("source", {})) if path_or_frame.attrs else {}
        if inherited:
            source["derived_from"] = inherited
    elif isinstance(path_or_frame, str | os.PathLike):
        p = Path(path_or_frame)
        if not p.is_file():
            raise InputError(format_message(f"{what} file not found", where=str(p.resolve()),
                                            fix="check the path (relative paths are read "
                                                "from the current directory)"))
        suffix = p.suffix.lower()
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        elif suffix in (".csv", ".tsv", ".txt"):
            # keep_default_na=False: "NA" is Namibia's ISO2 code, not a missing value
            df = _read_text(p, what, sep=sep or ("\t" if suffix == ".tsv" else ","),
                            sep_given=sep is not None, encoding=encoding)
        else:
            raise InputError(format_message(f"unsupported {what} file type", where=str(p),
                                            seen=suffix, fix="use .csv, .tsv or .parquet"))
        source = {"kind": "file", "path": str(p.resolve()), "sha256": file_sha256(p)}
    else:
        raise InputError(format_message(
            f"{what} must be a path or a pandas DataFrame", seen=type(path_or_frame).__name__,
            fix="pass a file path (CSV/parquet) or a DataFrame"))
    if len(df) == 0:
        raise InputError(format_message(f"{what} input is empty (0 rows)",
                                        where=source.get("path", "DataFrame"),
                                        fix="check the file or the filters applied before"))
    source["rows"] = len(df)
    return df, source


def _read_text(p: Path, what: str, *, sep: str, sep_given: bool,
               encoding: str) -> pd.DataFrame:
    """Read a delimited text file; undecodable, empty or wrongly delimited files get an
    :class:`InputError` that names the option to set (also from a study file)."""
    opt = f"[{what}.options]" if what in ("trade", "twinnings") else "the reader's options"
    try:
        # keep_default_na=False: "NA" is Namibia's ISO2 code, not a missing value
        df = pd.read_csv(p, sep=sep, keep_default_na=False, na_values=[""],
                         encoding=encoding)
    except UnicodeDecodeError as exc:
        raise InputError(format_message(
            f"{what} file is not {encoding} text", where=f"{p}, byte {exc.start}",
            seen=exc.object[max(exc.start - 10, 0):exc.end + 10],
            fix=f"save the file as UTF-8, or pass encoding='latin-1' (or the file's "
                f"encoding; in a study file: {opt} encoding = \"latin-1\")")) from None
    except pd.errors.EmptyDataError:
        raise InputError(format_message(f"{what} file is empty (no header, no rows)",
                                        where=str(p), fix="check the file")) from None
    except pd.errors.ParserError as exc:
        raise InputError(format_message(
            f"{what} file is not a well-formed delimited table", where=str(p),
            seen=str(exc).strip()[:160],
            fix=f"check the delimiter (sep={sep!r} was used; in a study file: {opt} "
                "sep = \";\") and quoting")) from None
    if not sep_given and df.shape[1] == 1:
        header = str(df.columns[0])
        for cand in (";", "\t", "|"):
            if cand in header:
                shown = "\\t" if cand == "\t" else cand
                raise InputError(format_message(
                    f"{what} file has one column only: it looks {shown!r}-separated, not "
                    f"{sep!r}-separated", where=str(p), seen=header[:120],
                    fix=f"pass sep={shown!r} (in a study file: {opt} sep = \"{shown}\")"))
    return df


def read_table(path: str | os.PathLike[str], *, what: str = "data", sep: str | None = None,
               encoding: str = "utf-8") -> pd.DataFrame:
    """A CSV/TSV/parquet file as a DataFrame, with the checks of :func:`read_trade`: a
    missing, empty, undecodable or wrongly delimited file is an :class:`InputError` that
    names the option to set."""
    return _read(os.fspath(path), what, sep=sep, encoding=encoding)[0]


def _column(df: pd.DataFrame, role: str, name: Any, what: str) -> str:
    if not isinstance(name, str) or name not in df.columns:
        close = suggest(name, [str(c) for c in df.columns])
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ColumnError(format_message(
            f"{what} has no column {name!r} for {role!r}",
            where="columns present: " + ", ".join(map(str, df.columns[:25])),
            fix=hint + f"pass {role}='<column name>' to map the source's column"))
    return name


# ---------------------------------------------------------------------------- twinnings
def read_twinnings(path_or_frame: Any, *, city: str = "city", country: str = "country",
                   partner_city: str = "partner_city",
                   partner_country: str = "partner_country",
                   established: str | None = _UNSET, relation: str | None = _UNSET,
                   ended: str | None = _UNSET, home_country: str | None = None,
                   country_aliases: Mapping[str, str] | None = None,
                   relation_map: Mapping[str, str] | None = None,
                   city_aliases: Mapping[tuple[str, str], str] | None = None,
                   match_cities: bool = True,
                   gazetteer: Gazetteer | None = None,
                   date_format: str | None = None,
                   sep: str | None = None, encoding: str = "utf-8") -> pd.DataFrame:
    """Read and validate a twinning registry (one row per link between two cities).

    Parameters
    ----------
    path_or_frame : path or DataFrame
        CSV/TSV/parquet file or a DataFrame (never modified).
    city, country, partner_city, partner_country, established, relation : str
        Column names in the source for the canonical roles. ``established`` and
        ``relation`` are optional: when the default name is absent they are left missing
        (``relation = "unknown"``); a name passed explicitly must exist.
    ended : str, optional
        Column with the date a link ended (lapsed, suspended or cancelled: Doncaster ended
        all five of its links in 2009), parsed like ``established``; missing = still
        active. Optional like ``established``: used when a column ``ended`` exists or a
        name is passed. ``ended_year`` is the first calendar year the link no longer
        counts (a link is active in ``established_year <= year < ended_year``).
    home_country : str, optional
        One country for every ``city`` (the German registry has no home-country column:
        ``home_country="DEU"``). Equivalently ``country="DEU"``: a ``country=`` value
        that is not a column but is a country name/code is used as a constant (a column
        of that name wins).
    country_aliases : mapping, optional
        Extra ``{"name": "ISO3"}`` country spellings (take precedence).
    relation_map : mapping, optional
        Extra ``{"raw": "twinning" | "friendship" | ...}`` link-type spellings.
    city_aliases : mapping, optional
        Extra ``{("ISO3", "name"): "gazetteer name"}`` city corrections.
    match_cities : bool
        Match city names to GeoNames ids (default). ``False`` leaves ids missing.
    date_format : str, optional
        ``strftime`` format of ``established`` dates written with slashes or dots, e.g.
        ``"%d/%m/%Y"``. Without it the day/month order is taken from the column (a value
        with a first number above 12 means day first, a second number above 12 month
        first); a column where it cannot be told ("03/10/1983" only) is refused.
    sep, encoding : str, optional
        Delimiter and encoding of a text file (default: comma, tab for ``.tsv``; UTF-8).

    Returns
    -------
    DataFrame
        One row per input row (none dropped), columns :data:`TWINNING_OUTPUT`:
        the canonical columns as given; ``source_row`` (0-based input row);
        ``established_year`` (Int64: the calendar year of the date, the first treated year
        with annual data) and ``established_date`` (full date or NaT); ``relation`` in the
        vocabulary of :mod:`twinimpact.etl.schema` and ``relation_raw``;
        ``country_iso3``/``partner_iso3``; ``city_id``/``partner_city_id`` (GeoNames ids,
        missing when unmatched) with ``*_match`` (exact|alias|fuzzy|unmatched),
        ``*_matched_name`` and ``*_match_score``. ``df.attrs["source"]`` holds the file
        path and sha256 (or the input frame's hash).

    Raises
    ------
    ColumnError
        A required column is missing (named, with the closest existing column).
    InputError
        Empty input; an unknown country (named with column, row and the closest known
        name); an unparseable date; an unknown link type.

    Notes
    -----
    Missing countries or years are kept as missing (the panel builder counts and drops
    those links). Unmatched cities keep a missing id and are listed in the panel manifest.

    Examples
    --------
    >>> import pandas as pd
    >>> raw = pd.DataFrame({"municipality": ["Köln"], "partnergemeinde": ["Peking"],
    ...                     "land": ["China"], "seit": [1987], "form": ["p"]})
    >>> tw = read_twinnings(raw, city="municipality", country="DEU",
    ...                     partner_city="partnergemeinde", partner_country="land",
    ...                     established="seit", relation="form")
    >>> row = tw.iloc[0]
    >>> row["partner_iso3"], row["relation"], int(row["established_year"])
    ('CHN', 'twinning', 1987)
    >>> row["partner_city_matched_name"], row["partner_city_match"]
    ('Beijing', 'alias')
    """
    df, source = _read(path_or_frame, "twinnings", sep=sep, encoding=encoding)
    what = "twinnings"
    n = len(df)
    out = pd.DataFrame(index=pd.RangeIndex(n))
    out["source_row"] = np.arange(n, dtype="int64")
    # home country: explicit constant, or a country= value that is not a column
    constant = home_country
    if constant is None and isinstance(country, str) and country not in df.columns:
        from .countries import lookup_country

        if lookup_country(country, country_aliases) is not None:
            constant = country
    cols: dict[str, str] = {}
    cols["city"] = _column(df, "city", city, what)
    cols["partner_city"] = _column(df, "partner_city", partner_city, what)
    cols["partner_country"] = _column(df, "partner_country", partner_country, what)
    if constant is None:
        cols["country"] = _column(df, "country", country, what)
    for role, name, default in (("established", established, "established"),
                                ("relation", relation, "relation"),
                                ("ended", ended, "ended")):
        if name is _UNSET:
            if default in df.columns:
                cols[role] = default
        elif name is not None:
            cols[role] = _column(df, role, name, what)
    data = df.reset_index(drop=True)
    out["city"] = data[cols["city"]].astype("string")
    out["country"] = (pd.Series([str(constant)] * n, dtype="string") if constant is not None
                      else data[cols["country"]].astype("string"))
    out["partner_city"] = data[cols["partner_city"]].astype("string")
    out["partner_country"] = data[cols["partner_country"]].astype("string")
    if "established" in cols:
        raw_est = data[cols["established"]]
        year, date = parse_established(raw_est, column=cols["established"],
                                       date_format=date_format)
        out["established"] = raw_est.astype("string")
    else:
        year = pd.Series(pd.array([pd.NA] * n, dtype="Int64"))
        date = pd.Series(np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]"))
        out["established"] = pd.Series([pd.NA] * n, dtype="string")
    out["established_year"] = year.to_numpy()
    out["established_date"] = date.to_numpy()
    if "ended" in cols:
        raw_end = data[cols["ended"]]
        e_year, e_date = parse_established(raw_end, column=cols["ended"], event="ended",
                                           date_format=date_format)
        out["ended"] = raw_end.astype("string")
        bad = (e_year < year).fillna(False).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(format_message(
                f"{int(bad.sum())} link(s) end before they were established",
                where=f"column {cols['ended']!r}, row {row_label(df.index[i])!r} "
                      f"(established {int(year.iloc[i])})", seen=raw_end.iloc[i],
                fix="check the end and start dates of these links (swap or blank them)"))
    else:
        e_year = pd.Series(pd.array([pd.NA] * n, dtype="Int64"))
        e_date = pd.Series(np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]"))
        out["ended"] = pd.Series([pd.NA] * n, dtype="string")
    out["ended_year"] = e_year.to_numpy()
    out["ended_date"] = e_date.to_numpy()
    if "relation" in cols:
        raw_rel = data[cols["relation"]]
        out["relation"] = normalize_relations(raw_rel, column=cols["relation"],
                                              relation_map=relation_map).to_numpy()
        out["relation_raw"] = raw_rel.astype("string").to_numpy()
    else:
        out["relation"] = pd.Series(["unknown"] * n, dtype="string")
        out["relation_raw"] = pd.Series([pd.NA] * n, dtype="string")
    out["relation"] = out["relation"].astype("string")
    if constant is not None:
        from .countries import to_iso3

        iso_home = to_iso3(constant, aliases=country_aliases, column="home_country")
        out["country_iso3"] = pd.Series([iso_home] * n, dtype="string")
    else:
        out["country_iso3"] = to_iso3_series(data[cols["country"]], column=cols["country"],
                                             aliases=country_aliases).to_numpy()
    out["partner_iso3"] = to_iso3_series(data[cols["partner_country"]],
                                         column=cols["partner_country"],
                                         aliases=country_aliases).to_numpy()
    for col in ("country_iso3", "partner_iso3"):
        out[col] = out[col].astype("string")
    gz = gazetteer or (Gazetteer(city_aliases) if city_aliases else default_gazetteer())
    for side, name_col, iso_col in (("city", "city", "country_iso3"),
                                    ("partner_city", "partner_city", "partner_iso3")):
        if match_cities:
            m = gz.match_frame(out[name_col], out[iso_col])
        else:
            m = pd.DataFrame({
                "id": pd.array([pd.NA] * n, dtype="Int64"),
                "matched_name": pd.array([pd.NA] * n, dtype="string"),
                "match": pd.array(["unmatched"] * n, dtype="string"),
                "score": np.full(n, np.nan),
                "note": pd.array(["matching switched off"] * n, dtype="string")})
        out[f"{side}_id"] = m["id"].to_numpy()
        out[f"{side}_match"] = m["match"].to_numpy()
        out[f"{side}_matched_name"] = m["matched_name"].to_numpy()
        out[f"{side}_match_score"] = m["score"].to_numpy(dtype=float)
        out[f"{side}_match_note"] = m["note"].to_numpy()
    for side in ("city", "partner_city"):
        out[f"{side}_id"] = out[f"{side}_id"].astype("Int64")
        for c in ("match", "matched_name", "match_note"):
            out[f"{side}_{c}"] = out[f"{side}_{c}"].astype("string")
    out = out[[*TWINNING_OUTPUT, "city_match_note", "partner_city_match_note"]]
    out.attrs = {"kind": "twinnings", "source": source,
                 "columns": {**cols, **({"home_country": constant} if constant else {})}}
    return out


# ---------------------------------------------------------------------------- trade
def read_trade(path_or_frame: Any, *, reporter: str = "reporter", partner: str = "partner",
               year: str = "year", value: str = "value", unit: str | None = None,
               reporter_type: Literal["country", "city"] = "country",
               extra: Sequence[str] = (),
               country_aliases: Mapping[str, str] | None = None,
               sep: str | None = None, encoding: str = "utf-8",
               format: str | None = None, **layout: Any) -> pd.DataFrame:
    """Read and validate a bilateral trade table (one row per reporter, partner, year).

    Parameters
    ----------
    path_or_frame : path or DataFrame
        CSV/TSV/parquet file or a DataFrame (never modified).
    format : {"baci", "comtrade", "census_statehs", "abs_merch", "hmrc_rts"}, optional
        Read a layout as a source publishes it (codes mapped to ISO3, aggregates and
        unmapped codes counted and dropped, ``flow="X"|"M"``); further keywords go to the
        reader (:mod:`twinimpact.etl.layouts`). The column keywords are not used then.
    reporter, partner, year, value : str
        Source column names of the exporter (reporter), the destination (partner), the
        calendar year and the trade value. E.g. TRADHIST: ``reporter="origin_country_code",
        partner="destination_country_code", value="exports"``.
    unit : str, optional
        Currency/unit of ``value``, kept as ``df.attrs["unit"]`` (e.g. ``"GBP current"``
        for TRADHIST, ``"USD millions current"`` for the gravity panel). A unit already in
        the input frame's ``attrs`` is kept when not given.
    reporter_type : {"country", "city"}
        ``"country"``: reporters are country names/codes, normalised to ISO3 like
        partners. ``"city"``: reporters are city ids or names, kept as given (city-level
        series for ``build_panel(level="city_partner")``).
    extra : sequence of str
        Further columns to keep unchanged (e.g. gravity covariates ``("DIST", "RTA")``).
    sep, encoding : str, optional
        Delimiter and encoding of a text file (default: comma, tab for ``.tsv``; UTF-8),
        e.g. ``sep=";"`` for a semicolon CSV.

    Returns
    -------
    DataFrame
        Columns ``reporter, partner, year, value`` (+ ``extra``), ``year`` as int64 and
        ``value`` as float (missing values kept as NaN). Country names and historical codes
        are normalised to ISO3 (``ROM`` → ``ROU``; see :mod:`twinimpact.etl.countries`).

    Raises
    ------
    ColumnError
        A required column is missing.
    InputError
        Empty input; unknown country; non-numeric or missing year/value type errors;
        negative trade values; duplicate reporter–partner–year rows (after normalisation).

    Examples
    --------
    >>> import pandas as pd
    >>> raw = pd.DataFrame({"exporter": ["DEU", "DEU"], "importer": ["ROM", "Frankreich"],
    ...                     "yr": [2000, 2000], "trade": [1.5, 2.0]})
    >>> t = read_trade(raw, reporter="exporter", partner="importer", year="yr",
    ...                value="trade", unit="USD millions current")
    >>> t["partner"].tolist(), t.attrs["unit"]
    (['ROU', 'FRA'], 'USD millions current')
    """
    if format is not None:
        from .layouts import read_layout

        if unit is not None:  # read_trade's own keyword; BACI takes it as an override
            layout["unit"] = unit
        return read_layout(path_or_frame, format=format, **layout)
    if layout:
        raise SpecificationError(format_message(
            "unexpected keyword(s) for read_trade", seen=sorted(layout),
            fix="layout options (flow=, countries=, ...) need format=; column roles are "
                "reporter=, partner=, year=, value="))
    check_literal("reporter_type", reporter_type, ("country", "city"))
    inherited_unit = (path_or_frame.attrs.get("unit")
                      if isinstance(path_or_frame, pd.DataFrame) else None)
    df, source = _read(path_or_frame, "trade", sep=sep, encoding=encoding)
    what = "trade"
    cols = {role: _column(df, role, name, what) for role, name in
            (("reporter", reporter), ("partner", partner), ("year", year), ("value", value))}
    for e in extra:
        _column(df, "extra", e, what)
    data = df.reset_index(drop=True)
    out = pd.DataFrame(index=data.index)
    for role in ("reporter", "partner"):
        s = data[cols[role]]
        if s.isna().any():
            row = int(np.flatnonzero(s.isna().to_numpy())[0])
            raise InputError(format_message(
                f"missing {role} in the trade data", where=f"column {cols[role]!r}, row {row}",
                fix=f"fill in or drop rows without a {role}"))
    if reporter_type == "country":
        out["reporter"] = to_iso3_series(data[cols["reporter"]], column=cols["reporter"],
                                         aliases=country_aliases)
    else:
        out["reporter"] = data[cols["reporter"]]
    out["partner"] = to_iso3_series(data[cols["partner"]], column=cols["partner"],
                                    aliases=country_aliases)
    y = pd.to_numeric(data[cols["year"]], errors="coerce")
    bad = y.isna() | (y.notna() & (y.fillna(0) % 1 != 0))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(format_message(
            "year must be a whole number", where=f"column {cols['year']!r}, row {row}",
            seen=data[cols["year"]].iloc[row], fix="use calendar years such as 1990"))
    _check_trade_years(y, data[cols["year"]], cols["year"])
    out["year"] = y.astype("int64")
    v = pd.to_numeric(data[cols["value"]], errors="coerce")
    nonnum = v.isna() & data[cols["value"]].notna()
    if nonnum.any():
        row = int(np.flatnonzero(nonnum.to_numpy())[0])
        raise InputError(format_message(
            "trade value is not a number", where=f"column {cols['value']!r}, row {row}",
            seen=data[cols["value"]].iloc[row], fix="convert the values to numbers"))
    inf = np.isinf(v.to_numpy(dtype=float, na_value=np.nan))
    if inf.any():
        row = int(np.flatnonzero(inf)[0])
        raise InputError(format_message(
            f"infinite trade values ({int(inf.sum())} row(s))",
            where=f"column {cols['value']!r}, row {row}", seen=float(v.iloc[row]),
            fix="a trade flow is a finite amount; fix the source or blank the value "
                "(missing values are kept as NaN and counted)"))
    neg = v < 0
    if neg.any():
        row = int(np.flatnonzero(neg.to_numpy())[0])
        raise InputError(format_message(
            f"negative trade values ({int(neg.sum())} row(s))",
            where=f"column {cols['value']!r}, row {row}", seen=float(v.iloc[row]),
            fix="trade flows are >= 0; check the sign or the column (net trade is not "
                "a flow)"))
    out["value"] = v.astype(float)
    for e in extra:
        out[e] = data[e].to_numpy()
    dup = out.duplicated(["reporter", "partner", "year"], keep=False)
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        r = out.iloc[row]
        raise InputError(format_message(
            f"{int(dup.sum())} trade rows share a reporter-partner-year "
            "(after normalising country names)",
            where=f"row {row}: reporter {r['reporter']!r}, partner {r['partner']!r}, "
                  f"year {int(r['year'])}",
            fix="aggregate duplicates first (groupby([reporter, partner, year]).sum()) or "
                "check for two spellings of one country (e.g. ROM and ROU)"))
    out["reporter"] = out["reporter"].astype("string") if reporter_type == "country" \
        else out["reporter"]
    out["partner"] = out["partner"].astype("string")
    out.attrs = {"kind": "trade", "source": source, "unit": unit or inherited_unit,
                 "reporter_type": reporter_type, "columns": cols,
                 "n_missing_value": int(out["value"].isna().sum())}
    return out


#: Earliest year accepted in trade data (TRADHIST, the longest series, starts in 1827).
FIRST_TRADE_YEAR = 1700


def _check_trade_years(y: pd.Series, raw: pd.Series, column: str) -> None:
    """Refuse years no trade statistic can have: two-digit years, years before
    :data:`FIRST_TRADE_YEAR` or after next year."""
    import datetime

    last = datetime.date.today().year + 1
    bad = (y < FIRST_TRADE_YEAR) | (y > last)
    if not bad.any():
        return
    row = int(np.flatnonzero(bad.to_numpy())[0])
    two_digit = bool((y.abs() < 100).any())
    raise InputError(format_message(
        f"implausible trade year ({int(bad.sum())} row(s) outside {FIRST_TRADE_YEAR}-{last})",
        where=f"column {column!r}, row {row}", seen=raw.iloc[row],
        fix=("write 4-digit calendar years (1985, not 85)" if two_digit else
             "check the year column (a typo, a placeholder such as 9999, or the wrong "
             "column)")))


# ---------------------------------------------------------------------------- shipped data
def _search_roots() -> list[Path]:
    roots: list[Path] = []
    env = os.environ.get("TWINIMPACT_HOME")
    if env:
        roots.append(Path(env))
    cwd = Path.cwd().resolve()
    roots.extend([cwd, *cwd.parents])
    roots.extend(Path(__file__).resolve().parents)
    seen: set[Path] = set()
    return [r for r in roots if not (r in seen or seen.add(r))]


def find_raw_file(source: str, filename: str) -> Path:
    """Path of ``data/raw/<source>/<filename>`` in the repository.

    Searched in order: ``$TWINIMPACT_HOME``, the current directory and its parents, the
    folders above this module. Raises :class:`~twinimpact.errors.InputError` naming every
    folder searched when the file is not found.
    """
    tried = []
    for root in _search_roots():
        p = root / "data" / "raw" / source / filename
        if p.is_file():
            return p
        tried.append(str(root))
    raise InputError(format_message(
        f"shipped data file data/raw/{source}/{filename} not found",
        where="searched under: " + ", ".join(tried),
        fix="run from a clone of the twinimpact repository (the data live in its data/raw "
            "folder, not in the wheel) or set TWINIMPACT_HOME to the clone"))


def load_german_twinnings(**options: Any) -> pd.DataFrame:
    """German municipalities' twinnings (5,881 links, 1913–2014), via :func:`read_twinnings`.

    Column mapping: ``city="municipality", country="DEU", partner_city="partnergemeinde",
    partner_country="country", established="seit", relation="form"`` (``form`` p/f/k →
    twinning/friendship/contact, missing → unknown). Source and caveats:
    ``data/raw/SOURCES.md`` (twin_de_rgre).
    """
    path = find_raw_file("twin_de_rgre", "twin_towns_de.csv")
    kw: dict[str, Any] = dict(city="municipality", home_country="DEU",
                              partner_city="partnergemeinde", partner_country="country",
                              established="seit", relation="form")
    kw.update(options)
    return read_twinnings(path, **kw)


def load_cn_key_pairs(**options: Any) -> pd.DataFrame:
    """Hand-curated dated China–UK/AU/US twinnings (32 rows) via :func:`read_twinnings`.

    ``city="cn_unit", country="CHN", partner_city="partner",
    partner_country="partner_iso3", established="year", relation="relation"``; the
    ``year`` column is used (``alt_year`` and ``date`` stay in the raw file).
    """
    path = find_raw_file("twin_cn_key_pairs_curated", "twin_cn_key_pairs_curated.csv")
    kw: dict[str, Any] = dict(city="cn_unit", home_country="CHN", partner_city="partner",
                              partner_country="partner_iso3", established="year",
                              relation="relation")
    kw.update(options)
    return read_twinnings(path, **kw)


def load_wikipedia_twinnings(**options: Any) -> pd.DataFrame:
    """Worldwide twin-town pairs from Wikipedia (26,114 directed rows, **no dates**).

    CC BY-SA 4.0: attribute Wikipedia and share alike (``data/raw/SOURCES.md``).
    ``city="city1", country="country1", partner_city="city2", partner_country="country2"``;
    ``established_year`` is missing and ``relation`` is ``"unknown"`` for every row.
    """
    path = find_raw_file("twin_wikipedia_hekman", "twin_cities_raw.csv")
    kw: dict[str, Any] = dict(city="city1", country="country1", partner_city="city2",
                              partner_country="country2", established=None, relation=None)
    kw.update(options)
    return read_twinnings(path, **kw)


def load_tradhist(flow: Literal["exports", "imports"] = "exports", **options: Any
                  ) -> pd.DataFrame:
    """TRADHIST trade of GBR, USA, FRA, DEU with all partners 1870–2014, **current GBP**.

    ``flow="exports"``: ``value`` = exports reporter → partner (``imports``: partner →
    reporter as reported on the reporter's side). ``attrs["unit"] == "GBP current"``.
    Germany before 1991 is West Germany (coded DEU); ``ROM`` becomes ``ROU``.
    """
    check_literal("flow", flow, ("exports", "imports"))
    path = find_raw_file("trade_tradhist_4rep", "tradhist_gbr_usa_fra_deu_1870_2014.csv")
    kw: dict[str, Any] = dict(reporter="origin_country_code",
                              partner="destination_country_code", year="year", value=flow,
                              unit="GBP current")
    kw.update(options)
    return read_trade(path, **kw)


def load_gravity_panel(**options: Any) -> pd.DataFrame:
    """69-country manufacturing trade panel 1986–2006 (Yotov et al. 2016), USD millions.

    ``reporter`` = exporter, ``partner`` = importer, ``value`` = ``trade``; the gravity
    covariates ``DIST, CNTG, LANG, CLNY, RTA`` and ``pair_id`` are kept. Domestic flows
    (reporter == partner) are included, as structural gravity needs them.
    """
    path = find_raw_file("trade_gravity_tpa69", "gravity_tpa69_1986_2006.parquet")
    kw: dict[str, Any] = dict(reporter="exporter", partner="importer", year="year",
                              value="trade", unit="USD millions current",
                              extra=("pair_id", "DIST", "CNTG", "LANG", "CLNY", "RTA"))
    kw.update(options)
    return read_trade(path, **kw)
