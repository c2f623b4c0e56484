"""read_trade(path, format=...) on fixtures in the published layouts (tests/data/*/SOURCE.md).

Expected frames are worked out by hand from the fixture rows (each SOURCE.md says which
rows are aggregates, breakdowns or unmapped codes); every dropped row must be counted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

import twinimpact as ti
from twinimpact.errors import ColumnError, InputError, SpecificationError
from twinimpact.etl.layouts import census_schedule_c

DATA = Path(__file__).resolve().parents[1] / "data"


def _rows(frame: pd.DataFrame) -> list[tuple]:
    return [(r.reporter, r.partner, int(r.year), float(r.value), int(r.n_records))
            for r in frame.itertuples()]


def _dropped_total(frame: pd.DataFrame) -> int:
    return frame.attrs["dropped"]["total"]


# ---------------------------------------------------------------------------- BACI
def test_baci_folder_sums_hs6_and_maps_codes_with_its_country_file():
    t = ti.read_trade(DATA / "baci_sample", format="baci")
    assert _rows(t) == [("DEU", "CHN", 2020, 150.75, 2), ("DEU", "CHN", 2021, 115.5, 2),
                        ("DEU", "USA", 2020, 10.0, 1), ("FRA", "DEU", 2020, 7.0, 1),
                        ("FRA", "DEU", 2021, 8.0, 1), ("USA", "CAN", 2020, 20.0, 1),
                        ("USA", "CAN", 2021, 25.0, 1)]
    d = t.attrs["dropped"]
    assert d["codes"]["country code without ISO3 in the BACI country file"] == {"490": 1}
    # every source row is either summed or counted as dropped
    assert t["n_records"].sum() + _dropped_total(t) == 10
    assert t.attrs["unit"] == "USD thousands current" and t.attrs["format"] == "baci"
    assert len(t.attrs["source"]["files"]) == 3  # two years + country file, hashed


def test_baci_glob_product_filter_and_import_view():
    glob = str(DATA / "baci_sample" / "BACI_*_Y2020_*.csv")
    t = ti.read_trade(glob, format="baci", filters={"k": slice(840000, 849999)})
    assert _rows(t) == [("DEU", "CHN", 2020, 100.5, 1), ("DEU", "USA", 2020, 10.0, 1),
                        ("FRA", "DEU", 2020, 7.0, 1)]
    assert t.attrs["dropped"]["rows"] == {
        "country code without ISO3 in the BACI country file": 1}
    p = ti.read_trade(glob, format="baci", filters={"k": "85*"})
    assert _rows(p) == [("DEU", "CHN", 2020, 50.25, 1), ("USA", "CAN", 2020, 20.0, 1)]
    m = ti.read_trade(glob, format="baci", flow="M")
    assert ("CHN", "DEU", 2020, 150.75, 2) in _rows(m)  # reporter = importer


def test_baci_pandas_engine_agrees_with_duckdb():
    a = ti.read_trade(DATA / "baci_sample", format="baci")
    b = ti.read_trade(DATA / "baci_sample", format="baci", engine="pandas")
    pd.testing.assert_frame_equal(a, b, check_like=True)


def test_baci_without_country_file_is_a_named_error(tmp_path):
    shutil.copy(DATA / "baci_sample" / "BACI_HS92_Y2020_V202401b.csv", tmp_path)
    with pytest.raises(InputError, match="country-code file not found"):
        ti.read_trade(tmp_path, format="baci")


# ---------------------------------------------------------------------------- Comtrade
def test_comtrade_keeps_totals_of_the_chosen_flow_and_counts_the_rest():
    t = ti.read_trade(DATA / "comtrade_sample" / "comtrade_final_data_DEU.csv",
                      format="comtrade", flow="X")
    assert _rows(t) == [("DEU", "CHN", 2021, 1000.0, 1), ("DEU", "CHN", 2022, 1100.0, 1),
                        ("DEU", "FRA", 2021, 500.0, 1)]
    rows = t.attrs["dropped"]["rows"]
    assert rows == {"other flow than X": 2,
                    "breakdown by motCode (the total row is kept)": 1,
                    "finer commodity level than one present for the same flow "
                    "(not added twice)": 1,
                    "aggregate partner (World)": 1,
                    "partner code not an ISO3 country (area nes, group)": 1}
    assert t["n_records"].sum() + _dropped_total(t) == 9
    m = ti.read_trade(DATA / "comtrade_sample" / "comtrade_final_data_DEU.csv",
                      format="comtrade", flow="M")
    assert _rows(m) == [("DEU", "CHN", 2021, 800.0, 1), ("DEU", "CHN", 2022, 850.0, 1)]


def test_comtrade_with_both_flows_needs_flow():
    with pytest.raises(SpecificationError, match="both exports and imports"):
        ti.read_trade(DATA / "comtrade_sample" / "comtrade_final_data_DEU.csv",
                      format="comtrade")


def test_comtrade_api_json_and_monthly_records(tmp_path):
    src = pd.read_csv(DATA / "comtrade_sample" / "comtrade_final_data_DEU.csv", dtype=str)
    one = src[(src.flowCode == "X") & (src.partnerISO == "CHN") & (src.cmdCode == "TOTAL")
              & (src.refYear == "2021")].iloc[0]
    recs = []
    for month in range(1, 13):  # 2021 complete
        recs.append({**one.to_dict(), "freqCode": "M", "refMonth": str(month),
                     "primaryValue": str(10 * month)})
    recs.append({**one.to_dict(), "freqCode": "M", "refYear": "2022", "refMonth": "1",
                 "primaryValue": "5"})
    p = tmp_path / "comtrade.json"
    p.write_text(json.dumps({"elapsedTime": "0.1 secs", "count": len(recs), "data": recs}))
    t = ti.read_trade(p, format="comtrade")
    assert _rows(t) == [("DEU", "CHN", 2021, 780.0, 12)]
    assert t.attrs["dropped"]["rows"] == {"incomplete year (fewer than 12 months)": 1}


# ---------------------------------------------------------------------------- Census
def test_census_statehs_december_ytd_state_reporters_schedule_c():
    t = ti.read_trade(DATA / "census_statehs" / "statehs_exports_2022-11_2023-03.json",
                      format="census_statehs")
    assert _rows(t) == [("USA-CA", "CAN", 2022, 6000.0, 1), ("USA-CA", "CHN", 2022, 12000.0, 1),
                        ("USA-WA", "JPN", 2022, 4000.0, 1), ("USA-WA", "TWN", 2022, 1500.0, 1)]
    d = t.attrs["dropped"]
    assert d["codes"]["aggregate partner (Census country grouping or total)"] == {
        "-": 1, "0003": 1, "5XXX": 1}
    assert d["rows"]["incomplete year (year-to-date without December)"] == 1
    assert t["n_records"].sum() + _dropped_total(t) == 9
    assert t.attrs["flow"] == "X" and t.attrs["unit"] == "USD current"


def test_census_monthly_values_summed_and_unmapped_code_counted(tmp_path):
    rows = [["STATE", "CTY_CODE", "CTY_NAME", "ALL_VAL_MO", "time"]]
    rows += [["OR", "5800", "KOREA, SOUTH", str(m), f"2021-{m:02d}"] for m in range(1, 13)]
    rows += [["OR", "8888", "NOT A SCHEDULE C CODE", "7", "2021-01"]]
    p = tmp_path / "statehs.json"
    p.write_text(json.dumps(rows))
    t = ti.read_trade(p, format="census_statehs")
    assert _rows(t) == [("USA-OR", "KOR", 2021, 78.0, 12)]
    assert t.attrs["dropped"]["codes"]["CTY_CODE not in Census Schedule C"] == {"8888": 1}


def test_census_non_numeric_value_names_file_column_and_row(tmp_path):
    rows = [["STATE", "CTY_CODE", "ALL_VAL_YR", "time"], ["CA", "5700", "(D)", "2022-12"]]
    p = tmp_path / "statehs.json"
    p.write_text(json.dumps(rows))
    with pytest.raises(InputError, match=r"not a number.*statehs.json, column 'ALL_VAL_YR'"):
        ti.read_trade(p, format="census_statehs")


def test_schedule_c_table_is_complete_for_the_main_partners():
    sc = census_schedule_c()
    assert len(sc) >= 235
    assert {sc["5700"], sc["1220"], sc["2010"], sc["4280"], sc["5880"], sc["4120"],
            sc["5830"], sc["6021"], sc["4803"]} == {"CHN", "CAN", "MEX", "DEU", "JPN", "GBR",
                                                    "TWN", "AUS", "XKX"}
    # ISO codes are unique except the two Palestinian territories
    iso = pd.Series(list(sc.values()))
    assert iso[iso.duplicated()].tolist() == ["PSE"]


# ---------------------------------------------------------------------------- ABS
def test_abs_merch_state_reporters_complete_years():
    t = ti.read_trade(DATA / "abs_merch" / "MERCH_EXP_2022-01_2023-03.csv",
                      format="abs_merch")
    wa = sum(1000 + m for m in range(1, 13))
    assert _rows(t) == [("AUS-NSW", "JPN", 2022, 1200.0, 12), ("AUS-WA", "CHN", 2022,
                                                                float(wa), 12)]
    assert t.attrs["dropped"]["rows"] == {"aggregate reporter (Australia total)": 12,
                                          "aggregate partner (total)": 12,
                                          "incomplete year (fewer than 12 months)": 3}
    assert t["n_records"].sum() + _dropped_total(t) == 51
    assert t.attrs["unit"] == "AUD thousands current"


def test_abs_merch_labelled_csv_and_national_total(tmp_path):
    src = pd.read_csv(DATA / "abs_merch" / "MERCH_EXP_2022-01_2023-03.csv", dtype=str,
                      keep_default_na=False)
    nat = src[(src.REGION == "-") & (src.COUNTRY == "CN")].drop(columns="REGION")
    nat = nat.rename(columns={"COUNTRY": "COUNTRY: Country of Destination"})
    nat["COUNTRY: Country of Destination"] = "CN: China"
    p = tmp_path / "labelled.csv"
    nat.to_csv(p, index=False)
    t = ti.read_trade(p, format="abs_merch")
    assert _rows(t) == [("AUS", "CHN", 2022, 60000.0, 12)]


# ---------------------------------------------------------------------------- HMRC
def test_hmrc_rts_regions_quarters_and_lookups():
    d = DATA / "hmrc_rts"
    t = ti.read_trade(d / "rts_2022-01_2023-01.json", format="hmrc_rts", flow="X",
                      regions=d / "region_lookup.json", countries=d / "country_lookup.json")
    assert _rows(t) == [("GBR-NE", "CHN", 2022, 5000.0, 8), ("GBR-SC", "FRA", 2022, 1200.0, 4)]
    assert t.attrs["dropped"]["rows"] == {
        "other flow than X": 4,
        "trade not allocated to a UK region (or unknown region code)": 4,
        "incomplete year (fewer than 4 quarters)": 1}
    assert t["n_records"].sum() + _dropped_total(t) == 21
    m = ti.read_trade(d / "rts_2022-01_2023-01.json", format="hmrc_rts", flow="M",
                      regions=d / "region_lookup.json", countries=d / "country_lookup.json")
    assert _rows(m) == [("GBR-NE", "CHN", 2022, 2800.0, 4)]


def test_hmrc_rts_without_lookups_is_a_column_error():
    with pytest.raises(ColumnError, match="GovRegionGroupCodeAlpha"):
        ti.read_trade(DATA / "hmrc_rts" / "rts_2022-01_2023-01.json", format="hmrc_rts",
                      flow="X")


# ---------------------------------------------------------------------------- dispatch
def test_unknown_format_suggests_the_closest():
    with pytest.raises(SpecificationError, match="did you mean 'comtrade'"):
        ti.read_trade(DATA / "baci_sample", format="comtrad")


def test_layout_option_without_format_and_unused_option_are_errors():
    with pytest.raises(SpecificationError, match="need format="):
        ti.read_trade(DATA / "etl" / "trade_small.csv", flow="X")
    with pytest.raises(SpecificationError, match="not used by format='comtrade'"):
        ti.read_trade(DATA / "comtrade_sample" / "comtrade_final_data_DEU.csv",
                      format="comtrade", countries="x.csv")
