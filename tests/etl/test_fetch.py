"""Fetchers with the network mocked: nothing is downloaded."""

from __future__ import annotations

import json
import sys
import types
import urllib.error
from pathlib import Path

import pandas as pd
import pytest

import twinimpact as ti
from twinimpact.errors import FetchError
from twinimpact.etl import fetch

DATA = Path(__file__).resolve().parents[1] / "data"


def test_offline_is_a_fetch_error_naming_the_url(monkeypatch, tmp_path):
    def offline(req, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(fetch.urllib.request, "urlopen", offline)
    with pytest.raises(FetchError, match=r"could not reach.*api.census.gov.*name resolution"):
        fetch.fetch_census_statehs(tmp_path / "x.json", year=2022)
    with pytest.raises(FetchError, match=r"data\.api\.abs\.gov\.au"):
        fetch.fetch_abs_merch(tmp_path / "x.csv", start="2022-01", end="2022-12")
    with pytest.raises(FetchError, match=r"cepii\.fr"):
        fetch.fetch_baci(tmp_path / "b.zip")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_census_fetch_writes_the_api_json_that_the_reader_reads(monkeypatch, tmp_path):
    body = (DATA / "census_statehs" / "statehs_exports_2022-11_2023-03.json").read_bytes()
    seen = {}

    def fake(url, headers=None, timeout=fetch.TIMEOUT):
        seen["url"] = url
        return body

    monkeypatch.setattr(fetch, "_http_get", fake)
    p = fetch.fetch_census_statehs(tmp_path / "ca.json", year=2022, key="k")
    assert "exports/statehs" in seen["url"] and "ALL_VAL_YR" in seen["url"]
    assert "time=from+2022-01+to+2022-12" in seen["url"]
    t = ti.read_trade(p, format="census_statehs")
    assert set(t["reporter"]) == {"USA-CA", "USA-WA"}


def test_http_error_and_non_json_answer(monkeypatch, tmp_path):
    monkeypatch.setattr(fetch, "_http_get", lambda url, headers=None, timeout=0:
                        b"error: unknown variable 'ALL_VAL_YRR'")
    with pytest.raises(FetchError, match="did not answer with JSON"):
        fetch.fetch_census_statehs(tmp_path / "x.json", year=2022)

    def http_500(req, timeout):
        raise urllib.error.HTTPError(req.full_url, 500, "Server Error", {}, None)

    monkeypatch.undo()
    monkeypatch.setattr(fetch.urllib.request, "urlopen", http_500)
    with pytest.raises(FetchError, match="HTTP 500"):
        fetch.fetch_hmrc_rts(tmp_path / "r.json", first_month=202201, last_month=202212)


def test_hmrc_pages_are_followed(monkeypatch, tmp_path):
    pages = {
        "first": {"value": [{"MonthId": 202201}], "@odata.nextLink": "https://x/next"},
        "https://x/next": {"value": [{"MonthId": 202204}]},
    }

    def fake(url, headers=None, timeout=0):
        key = url if url in pages else "first"
        return json.dumps(pages[key]).encode()

    monkeypatch.setattr(fetch, "_http_get", fake)
    p = fetch.fetch_hmrc_rts(tmp_path / "r.json", first_month=202201, last_month=202212)
    assert [r["MonthId"] for r in json.loads(p.read_text())["value"]] == [202201, 202204]


def _fake_comtrade(monkeypatch, result):
    mod = types.ModuleType("comtradeapicall")

    def call(*args, **kwargs):
        mod.calls.append(kwargs)
        print("Error: 401 Access denied due to invalid subscription key.")
        return result

    mod.calls = []
    mod.getFinalData = call
    mod.previewFinalData = call
    monkeypatch.setitem(sys.modules, "comtradeapicall", mod)
    return mod


def test_comtrade_none_becomes_an_exception_with_what_it_printed(monkeypatch, tmp_path):
    mod = _fake_comtrade(monkeypatch, None)
    with pytest.raises(FetchError, match=r"returned nothing.*invalid subscription key"):
        fetch.fetch_comtrade(tmp_path / "c.csv", reporter="DEU", years=[2021], flow="X",
                             subscription_key="bad")
    assert mod.calls[0]["reporterCode"] == "276" and mod.calls[0]["period"] == "2021"
    with pytest.raises(FetchError):
        fetch.fetch_comtrade(tmp_path / "c.csv", reporter="France", years=2021)
    assert mod.calls[1]["reporterCode"] == "251"


def test_comtrade_frame_is_written_and_readable(monkeypatch, tmp_path):
    rec = pd.read_csv(DATA / "comtrade_sample" / "comtrade_final_data_DEU.csv", dtype=str)
    _fake_comtrade(monkeypatch, rec[rec.flowCode == "X"])
    p = fetch.fetch_comtrade(tmp_path / "c.csv", reporter="DEU", years=[2021, 2022])
    t = ti.read_trade(p, format="comtrade")
    assert t.attrs["flow"] == "X" and len(t) == 3


def test_comtrade_missing_client_is_a_fetch_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "comtradeapicall", None)
    with pytest.raises(FetchError, match=r"twinimpact\[comtrade\]"):
        fetch.fetch_comtrade(tmp_path / "c.csv", reporter="DEU", years=2021)
