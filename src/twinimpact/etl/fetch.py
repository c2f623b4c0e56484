"""Thin downloaders for the published trade layouts (for users with internet).

Each function downloads one source **as published** into a local file and returns its
path; :func:`~twinimpact.etl.sources.read_trade` with the matching ``format=`` reads it.
Nothing here is called by the library itself or by the tests (which mock the network).

* :func:`fetch_comtrade` -- UN Comtrade through the ``comtradeapicall`` client (the
  ``[comtrade]`` extra). That client prints its errors and returns ``None``; here that
  becomes a :class:`~twinimpact.errors.FetchError` carrying what it printed.
* :func:`fetch_census_statehs`, :func:`fetch_abs_merch`, :func:`fetch_hmrc_rts`,
  :func:`fetch_baci` -- plain HTTPS (``urllib``).

Every failure -- offline, a refused key, an HTTP error, an empty answer -- raises
:class:`~twinimpact.errors.FetchError` saying which source, which URL or query, and what
came back.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from ..errors import FetchError, SpecificationError, check_literal, format_message

__all__ = ["fetch_abs_merch", "fetch_baci", "fetch_census_statehs", "fetch_comtrade",
           "fetch_hmrc_lookup", "fetch_hmrc_rts"]

CENSUS_API = "https://api.census.gov/data/timeseries/intltrade"
ABS_API = "https://data.api.abs.gov.au/rest/data"
HMRC_API = "https://api.uktradeinfo.com"
BACI_URL = "https://www.cepii.fr/DATA_DOWNLOAD/baci/data"
#: Comtrade reporter codes that differ from ISO 3166 numeric (UN Comtrade reference list).
_COMTRADE_CODES = {"FRA": 251, "USA": 842, "IND": 699, "CHE": 757, "NOR": 579}
TIMEOUT = 60


def _http_get(url: str, headers: Mapping[str, str] | None = None,
              timeout: float = TIMEOUT) -> bytes:
    """GET ``url``; any network or HTTP failure becomes a FetchError naming the URL."""
    req = urllib.request.Request(url, headers={"User-Agent": "twinimpact", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()[:300].decode("utf-8", "replace") if exc.fp else ""
        raise FetchError(format_message(
            f"the server answered HTTP {exc.code} {exc.reason}", where=url, seen=body or None,
            fix="check the parameters (and the API key where one is needed)")) from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(format_message(
            "could not reach the server (offline, a proxy, or the host is down)",
            where=url, seen=str(reason),
            fix="check the internet connection; or download the file by hand and read it "
                "with read_trade(path, format=...)")) from exc


def _write(path: str | os.PathLike[str], data: bytes) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, p)
    return p


def _years(years: int | Sequence[int]) -> list[int]:
    ys = [years] if isinstance(years, int) else list(years)
    if not ys or not all(isinstance(y, int) for y in ys):
        raise SpecificationError(format_message(
            "years must be an int or a list of ints", seen=years, fix="e.g. years=[2021, 2022]"))
    return ys


# ---------------------------------------------------------------------------- Comtrade
def _comtrade_code(country: str | int) -> str:
    if isinstance(country, int) or str(country).isdigit():
        return str(int(country))
    from .countries import to_iso3

    iso = to_iso3(country, column="reporter")
    if iso in _COMTRADE_CODES:
        return str(_COMTRADE_CODES[iso])
    import pycountry

    c = pycountry.countries.get(alpha_3=iso)
    if c is None:
        raise SpecificationError(format_message(
            "no UN Comtrade code for this country", seen=country,
            fix="pass the Comtrade numeric code (reporterCode) instead"))
    return str(int(c.numeric))


def fetch_comtrade(path: str | os.PathLike[str], *, reporter: str | int,
                   years: int | Sequence[int], flow: Literal["X", "M"] = "X",
                   partner: str | int | None = None, commodity: str = "TOTAL",
                   subscription_key: str | None = None, max_records: int = 250_000
                   ) -> Path:
    """UN Comtrade annual goods trade (HS) of one reporter → CSV at ``path``.

    With ``subscription_key`` (``$COMTRADE_KEY`` if not given) this calls
    ``comtradeapicall.getFinalData``; without a key, ``previewFinalData`` (at most 500
    records). ``reporter``/``partner``: ISO3 codes or names (mapped to Comtrade's numeric
    codes) or Comtrade codes. Read the file with ``read_trade(path, format="comtrade",
    flow=flow)``.

    Raises
    ------
    FetchError
        ``comtradeapicall`` is not installed, or it returned nothing (it prints the
        reason -- a refused key, a bad parameter, no connection; the message includes it).
    """
    check_literal("flow", flow, ("X", "M"))
    try:
        import comtradeapicall
    except ImportError as exc:
        raise FetchError(format_message(
            "fetch_comtrade needs the comtradeapicall package",
            fix="pip install 'twinimpact[comtrade]'")) from exc
    key = subscription_key or os.environ.get("COMTRADE_KEY")
    params: dict[str, Any] = dict(
        typeCode="C", freqCode="A", clCode="HS",
        period=",".join(str(y) for y in _years(years)),
        reporterCode=_comtrade_code(reporter), cmdCode=commodity, flowCode=flow,
        partnerCode=None if partner is None else _comtrade_code(partner),
        partner2Code=None, customsCode=None, motCode=None)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            if key:
                df = comtradeapicall.getFinalData(key, **params, maxRecords=max_records,
                                                  format_output="JSON", aggregateBy=None,
                                                  breakdownMode="classic", countOnly=None,
                                                  includeDesc=True)
            else:
                df = comtradeapicall.previewFinalData(**params, maxRecords=500,
                                                      format_output="JSON",
                                                      aggregateBy=None,
                                                      breakdownMode="classic",
                                                      countOnly=None, includeDesc=True)
    except Exception as exc:  # the client raises on some network errors
        raise FetchError(format_message(
            "UN Comtrade request failed", where=_describe(params),
            seen=f"{type(exc).__name__}: {exc}; printed: {printed.getvalue().strip()!r}",
            fix="check the internet connection and the parameters")) from exc
    if df is None or not isinstance(df, pd.DataFrame):
        raise FetchError(format_message(
            "UN Comtrade returned nothing (comtradeapicall returned None)",
            where=_describe(params), seen=printed.getvalue().strip() or None,
            fix="read the message above: a refused or missing subscription key "
                "(subscription_key= or $COMTRADE_KEY), a parameter Comtrade rejects, or no "
                "internet connection"))
    if df.empty:
        raise FetchError(format_message(
            "UN Comtrade has no records for this query", where=_describe(params),
            fix="check the reporter, years and flow (recent years may not be reported yet)"))
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return _write(path, buf.getvalue().encode("utf-8"))


def _describe(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items() if v is not None)


# ---------------------------------------------------------------------------- Census
def census_statehs_url(*, year: int, flow: Literal["X", "M"] = "X", state: str | None = None,
                       key: str | None = None) -> str:
    """The intltrade ``statehs`` query for one calendar year (all months, all countries)."""
    check_literal("flow", flow, ("X", "M"))
    ds, val = ("exports", "ALL_VAL") if flow == "X" else ("imports", "GEN_VAL")
    q = {"get": f"STATE,CTY_CODE,CTY_NAME,{val}_MO,{val}_YR",
         "time": f"from {year}-01 to {year}-12"}
    if state:
        q["STATE"] = state
    if key:
        q["key"] = key
    return f"{CENSUS_API}/{ds}/statehs?" + urllib.parse.urlencode(q)


def fetch_census_statehs(path: str | os.PathLike[str], *, year: int,
                         flow: Literal["X", "M"] = "X", state: str | None = None,
                         key: str | None = None) -> Path:
    """US state exports (or imports) by country for one year → the API's JSON at ``path``.

    ``key``: a Census API key (``$CENSUS_API_KEY`` if not given). Read with
    ``read_trade(path, format="census_statehs")``.
    """
    url = census_statehs_url(year=year, flow=flow, state=state,
                             key=key or os.environ.get("CENSUS_API_KEY"))
    body = _http_get(url)
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as exc:
        raise FetchError(format_message(
            "the Census API did not answer with JSON", where=url,
            seen=body[:200].decode("utf-8", "replace"),
            fix="check the key and the parameters (the API answers errors as text)")) from exc
    if not (isinstance(doc, list) and len(doc) > 1):
        raise FetchError(format_message("the Census API returned no rows", where=url,
                                        fix="check the year and state"))
    return _write(path, body)


# ---------------------------------------------------------------------------- ABS
def abs_merch_url(*, flow: Literal["X", "M"] = "X", start: str, end: str) -> str:
    check_literal("flow", flow, ("X", "M"))
    flowid = "MERCH_EXP" if flow == "X" else "MERCH_IMP"
    q = urllib.parse.urlencode({"startPeriod": start, "endPeriod": end})
    return f"{ABS_API}/ABS,{flowid},1.0.0/all?{q}"


def fetch_abs_merch(path: str | os.PathLike[str], *, start: str, end: str,
                    flow: Literal["X", "M"] = "X") -> Path:
    """ABS merchandise exports (MERCH_EXP) or imports (MERCH_IMP) → SDMX-CSV at ``path``.

    ``start``/``end``: periods such as ``"2022-01"``. Read with
    ``read_trade(path, format="abs_merch")``.
    """
    url = abs_merch_url(flow=flow, start=start, end=end)
    body = _http_get(url, headers={"Accept": "application/vnd.sdmx.data+csv"})
    if not body.strip() or b"OBS_VALUE" not in body.split(b"\n", 1)[0]:
        raise FetchError(format_message(
            "the ABS Data API did not return SDMX-CSV", where=url,
            seen=body[:200].decode("utf-8", "replace"), fix="check the periods"))
    return _write(path, body)


# ---------------------------------------------------------------------------- HMRC
def fetch_hmrc_rts(path: str | os.PathLike[str], *, first_month: int, last_month: int,
                   max_pages: int = 200) -> Path:
    """HMRC Regional Trade Statistics records for ``MonthId`` first..last → JSON at ``path``.

    Follows the OData ``@odata.nextLink`` pages and writes ``{"value": [...]}``. The
    region and country lookups (``/Region``, ``/Country``) are fetched with
    ``fetch_hmrc_lookup``; read with ``read_trade(path, format="hmrc_rts", regions=...,
    countries=...)``.
    """
    flt = f"MonthId ge {int(first_month)} and MonthId le {int(last_month)}"
    url: str | None = f"{HMRC_API}/RTS?" + urllib.parse.urlencode({"$filter": flt})
    records: list[Any] = []
    for _ in range(max_pages):
        if url is None:
            break
        page = _json(url)
        records.extend(page.get("value", []))
        url = page.get("@odata.nextLink")
    else:
        raise FetchError(format_message(
            f"more than {max_pages} pages", where=flt, fix="fetch a shorter period"))
    if not records:
        raise FetchError(format_message("HMRC returned no RTS records", where=flt,
                                        fix="check the months (YYYYMM)"))
    return _write(path, json.dumps({"value": records}).encode("utf-8"))


def fetch_hmrc_lookup(path: str | os.PathLike[str], *,
                      endpoint: Literal["Region", "Country"]) -> Path:
    """An HMRC uktradeinfo lookup table (``Region`` or ``Country``) → JSON at ``path``."""
    check_literal("endpoint", endpoint, ("Region", "Country"))
    return _write(path, json.dumps(_json(f"{HMRC_API}/{endpoint}")).encode("utf-8"))


def _json(url: str) -> dict[str, Any]:
    body = _http_get(url)
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as exc:
        raise FetchError(format_message("the server did not answer with JSON", where=url,
                                        seen=body[:200].decode("utf-8", "replace"))) from exc
    if not isinstance(doc, dict):
        raise FetchError(format_message("unexpected JSON", where=url, seen=str(doc)[:200]))
    return doc


# ---------------------------------------------------------------------------- BACI
def fetch_baci(path: str | os.PathLike[str], *, release: str = "202401b",
               classification: str = "HS92") -> Path:
    """The BACI archive (zip, ~2 GB) of one release and HS classification → ``path``.

    Unzip it and read the folder with ``read_trade(folder, format="baci")``. The archive
    holds one CSV per year and the ``country_codes_V<release>.csv`` table.
    """
    if not release.replace("b", "").isdigit():
        raise SpecificationError(format_message(
            "release looks like 202401b", seen=release, fix="see the BACI page on cepii.fr"))
    url = f"{BACI_URL}/BACI_{classification}_V{release}.zip"
    body = _http_get(url, timeout=600)
    if not body.startswith(b"PK"):
        raise FetchError(format_message("the BACI download is not a zip archive", where=url,
                                        seen=body[:120].decode("utf-8", "replace"),
                                        fix="check release= and classification="))
    return _write(path, body)
