"""Canonical columns, the link-type vocabulary and date parsing (pure helpers).

Link types (``relation``)
-------------------------
=================== ==========================================================================
``twinning``        formal twinning / sister-city / town partnership agreement. German
                    registry ``form = p`` (Partnerschaft); curated table ``sister_city``,
                    ``twin_city``; also "partnership", "jumelage", "Städtepartnerschaft".
``friendship``      friendship link / friendship city (German ``f``, Freundschaft; curated
                    ``friendship_city``, Chinese 友好交流城市 "friendly (cooperative) city").
``contact``         looser contact (German ``k``, Kontakt).
``sister_state``    region/state/province-level agreement (curated ``sister_state``).
``letter_of_intent`` letter of intent or memorandum before a formal agreement.
``unknown``         the source gives no type (missing value).
=================== ==========================================================================

Other spellings raise an error naming the value; pass ``relation_map={"raw": "twinning"}``
to :func:`~twinimpact.etl.sources.read_twinnings` to add them.

Dates (``established``)
-----------------------
A year (``1983``, ``"1983"``, ``1983.0``), a month (``"1983-10"``) or a full date
(``"1983-10-03"``, a ``datetime``). ``established_year`` is the **calendar year** of the
date: a twinning signed on 3 October 1983 has ``established_year = 1983``, and with annual
data 1983 is its unit's first treated year (the year of signing counts as treated even
though only part of it follows the signing). ``established_date`` keeps the full date
where one was given (``NaT`` for a bare year).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..errors import InputError, format_message, suggest
from .names import row_label

__all__ = [
    "RELATIONS",
    "RELATION_SYNONYMS",
    "TRADE_COLUMNS",
    "TWINNING_COLUMNS",
    "normalize_relations",
    "parse_established",
]

#: Canonical input columns of a twinning registry (``established``/``relation`` optional).
TWINNING_COLUMNS = ("city", "country", "partner_city", "partner_country", "established",
                    "relation")
#: Canonical columns of a trade table.
TRADE_COLUMNS = ("reporter", "partner", "year", "value")

#: The link-type vocabulary (see the module docstring).
RELATIONS = ("twinning", "friendship", "contact", "sister_state", "letter_of_intent",
             "unknown")

#: Raw spellings (case-insensitive, spaces/underscores/hyphens ignored) -> vocabulary.
RELATION_SYNONYMS: dict[str, str] = {
    # formal twinning
    "p": "twinning", "partnerschaft": "twinning", "stadtepartnerschaft": "twinning",
    "stadtpartnerschaft": "twinning", "partnership": "twinning", "twinning": "twinning",
    "twin": "twinning", "twincity": "twinning", "twintown": "twinning",
    "sistercity": "twinning", "sistercities": "twinning", "jumelage": "twinning",
    "formal": "twinning",
    # friendship
    "f": "friendship", "freundschaft": "friendship", "friendship": "friendship",
    "friendshipcity": "friendship", "friendlycity": "friendship",
    "friendlycooperativecity": "friendship", "friendshiplink": "friendship",
    # contact
    "k": "contact", "kontakt": "contact", "contact": "contact",
    # state level
    "sisterstate": "sister_state", "sisterprovince": "sister_state",
    "sisterregion": "sister_state",
    # pre-agreement
    "letterofintent": "letter_of_intent", "loi": "letter_of_intent",
    "memorandumofunderstanding": "letter_of_intent", "mou": "letter_of_intent",
    # missing
    "unknown": "unknown",
}


def _relation_key(v: object) -> str:
    s = str(v).strip().casefold()
    s = s.replace("ä", "a").replace("ö", "o").replace("ü", "u")
    return re.sub(r"[\s_\-]+", "", s)


def normalize_relations(values: pd.Series, *, column: str,
                        relation_map: Mapping[str, str] | None = None) -> pd.Series:
    """Map raw link types to :data:`RELATIONS` (missing → ``"unknown"``).

    Raises :class:`~twinimpact.errors.InputError` naming the first unknown value and its
    row, with the closest known spelling.

    >>> normalize_relations(pd.Series(["p", "f", "k", None, "sister_city"]), column="form").tolist()
    ['twinning', 'friendship', 'contact', 'unknown', 'twinning']
    """
    table = dict(RELATION_SYNONYMS)
    for k, v in (relation_map or {}).items():
        if v not in RELATIONS:
            raise InputError(format_message(
                "relation_map maps to a value outside the vocabulary", where=f"key {k!r}",
                seen=v, fix=f"map to one of {', '.join(RELATIONS)}"))
        table[_relation_key(k)] = v
    out: dict[object, str] = {}
    for u in pd.unique(values.dropna()):
        key = _relation_key(u)
        if key not in table:
            row = values.index[(values == u).to_numpy()][0]
            close = suggest(key, table, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InputError(format_message(
                "unknown link type", where=f"column {column!r}, row {row_label(row)!r}", seen=u,
                fix=hint + "pass relation_map={'<raw>': '<one of "
                    + ", ".join(RELATIONS) + ">'}"))
        out[u] = table[key]
    return values.map(out).fillna("unknown").astype("string")


_YEAR = re.compile(r"^\s*(\d{4})(?:\.0+)?\s*$")
_MONTH = re.compile(r"^\s*(\d{4})-(\d{1,2})\s*$")


_DMY = re.compile(r"^\s*(\d{1,2})[./-](\d{1,2})[./-](\d{2}|\d{4})\s*$")


def _day_first(values: pd.Series, column: str) -> bool | None:
    """Day/month order of the column's ``nn/nn/yyyy`` dates: True (day first), False
    (month first) or None (no such dates). A column in which the order cannot be told (no
    first or second number above 12 anywhere, "03/10/1983") or which mixes both orders is
    refused: reading "03/10/1983" as 10 March or 3 October is a guess."""
    first_big = second_big = None
    ambiguous = None
    for i, v in enumerate(values.tolist()):
        m = _DMY.match(v) if isinstance(v, str) else None
        if not m:
            continue
        a, b = int(m.group(1)), int(m.group(2))
        if a > 12 and first_big is None:
            first_big = i
        elif b > 12 and second_big is None:
            second_big = i
        elif a <= 12 and b <= 12 and a != b and ambiguous is None:
            ambiguous = i
    if first_big is not None and second_big is not None:
        raise InputError(format_message(
            "dates mix day-first and month-first order", where=f"column {column!r}, rows "
            f"{row_label(values.index[first_big])!r} and {row_label(values.index[second_big])!r}",
            seen=[values.iloc[first_big], values.iloc[second_big]],
            fix="write ISO dates (1983-10-03) or fix the inconsistent rows"))
    if first_big is not None:
        return True
    if second_big is not None:
        return False
    if ambiguous is not None:
        raise InputError(format_message(
            "ambiguous date: day and month order cannot be told",
            where=f"column {column!r}, row {row_label(values.index[ambiguous])!r}",
            seen=values.iloc[ambiguous],
            fix="pass date_format='%d/%m/%Y' (day first) or '%m/%d/%Y' (month first) -- in "
                "a study file [twinnings.options] date_format = \"%d/%m/%Y\" -- or write ISO "
                "dates (1983-10-03)"))
    return None


def parse_established(values: pd.Series, *, column: str, event: str = "established",
                      date_format: str | None = None
                      ) -> tuple[pd.Series, pd.Series]:
    """Parse years or dates into (``established_year`` Int64, ``established_date``).

    Missing stays missing. A value that is neither a 4-digit year nor a date raises
    :class:`~twinimpact.errors.InputError` naming the column, row and value. ``event``
    names the date in messages (``"established"`` or ``"ended"``; end dates are parsed
    the same way). Dates written ``nn/nn/yyyy`` (or with dots/dashes) are read with
    ``date_format`` when given, else in the day/month order the column shows; a column
    where the order cannot be told is refused (see :func:`_day_first`).

    >>> y, d = parse_established(pd.Series([1983, "1998", "2004-09-04", "2016-10", None]),
    ...                          column="established")
    >>> y.tolist()
    [1983, 1998, 2004, 2016, <NA>]
    >>> d.dt.strftime("%Y-%m-%d").tolist()[2]
    '2004-09-04'
    """
    years = pd.array([pd.NA] * len(values), dtype="Int64")
    dates = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[ns]")
    if pd.api.types.is_datetime64_any_dtype(values):
        dt = pd.to_datetime(values)
        return (pd.Series(dt.dt.year.astype("Int64").to_numpy(), index=values.index),
                pd.Series(dt.to_numpy(dtype="datetime64[ns]"), index=values.index))
    day_first = None if date_format else _day_first(values, column)
    for i, v in enumerate(values.tolist()):
        if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
            continue
        if isinstance(v, int | np.integer) or (isinstance(v, float | np.floating)
                                               and float(v).is_integer()):
            y = int(v)
        else:
            s = str(v)
            m = _YEAR.match(s)
            mm = _MONTH.match(s)
            if m:
                y = int(m.group(1))
            elif mm:
                y = int(mm.group(1))
                dates[i] = np.datetime64(f"{y:04d}-{int(mm.group(2)):02d}-01", "ns")
            else:
                try:
                    if date_format:
                        ts = pd.to_datetime(s.strip(), format=date_format)
                    elif day_first is not None and _DMY.match(s):
                        ts = pd.to_datetime(s.strip(), dayfirst=day_first)
                    else:
                        ts = pd.Timestamp(s)
                except (ValueError, TypeError):
                    ts = None
                if ts is None or ts is pd.NaT:
                    raise InputError(format_message(
                        f"cannot parse the date a twinning was {event}",
                        where=f"column {column!r}, row {row_label(values.index[i])!r}", seen=v,
                        fix="use a 4-digit year (1983) or an ISO date (1983-10-03); fix or "
                            "blank the value" + (f" (date_format={date_format!r} was given)"
                                                 if date_format else "")))
                y = ts.year
                dates[i] = np.datetime64(ts.to_datetime64(), "ns")
        if not 1000 <= y <= 2200:
            raise InputError(format_message(
                "implausible year for a twinning", where=f"column {column!r}, "
                f"row {row_label(values.index[i])!r}", seen=v, fix="use a 4-digit calendar year"))
        years[i] = y
    return pd.Series(years, index=values.index), pd.Series(dates, index=values.index)
