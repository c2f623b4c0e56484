"""read_twinnings / read_trade: column mapping, vocabularies, dates, metadata, no mutation."""

from __future__ import annotations

import pandas as pd
import pytest

from twinimpact.errors import ColumnError
from twinimpact.etl.schema import RELATIONS
from twinimpact.etl.sources import TWINNING_OUTPUT, read_trade, read_twinnings


def test_german_style_columns_and_form_codes(etl_data) -> None:
    tw = read_twinnings(etl_data / "german_style.csv", city="municipality", country="DEU",
                        partner_city="partnergemeinde", partner_country="land",
                        established="seit", relation="form")
    assert list(tw.columns[:len(TWINNING_OUTPUT)]) == list(TWINNING_OUTPUT)
    assert tw["relation"].tolist() == ["twinning", "friendship", "twinning", "contact",
                                       "unknown", "twinning"]
    assert tw["relation_raw"].iloc[1] == "f" and pd.isna(tw["relation_raw"].iloc[4])
    assert (tw["country_iso3"] == "DEU").all()           # constant home country
    assert tw["partner_iso3"].tolist() == ["FRA", "FRA", "CHN", "CZE", "CHN", "CHN"]
    assert tw["established_year"].tolist() == [1967, 1960, 1987, 1994, 1997, 2001]
    assert tw.loc[2, "partner_city_matched_name"] == "Beijing"      # exonym
    assert tw.loc[5, "partner_city_matched_name"] == "Qianjiang"    # bracketed extra
    assert tw.loc[5, "city_match"] == "unmatched"                   # district: not a city
    assert tw["source_row"].tolist() == list(range(6))
    assert tw.attrs["source"]["kind"] == "file" and len(tw.attrs["source"]["sha256"]) == 64


def test_home_country_keyword_equals_country_constant(etl_data) -> None:
    kw = dict(city="municipality", partner_city="partnergemeinde", partner_country="country",
              established="seit", relation="form")
    a = read_twinnings(etl_data / "german_style.csv", country="DEU", **kw)
    b = read_twinnings(etl_data / "german_style.csv", home_country="Germany", **kw)
    pd.testing.assert_frame_equal(a.drop(columns="country"), b.drop(columns="country"))


def test_curated_vocabulary_and_dates(etl_data) -> None:
    tw = read_twinnings(etl_data / "curated_style.csv", city="cn_unit", country="CHN",
                        partner_city="partner", partner_country="partner_iso3",
                        established="date", relation="relation")
    assert tw["relation"].tolist() == ["twinning", "twinning", "friendship", "sister_state",
                                       "letter_of_intent"]
    # a full date maps to its calendar year; missing dates stay missing
    assert tw["established_year"].iloc[0] == 1983
    assert tw["established_date"].iloc[0] == pd.Timestamp("1983-10-03")
    assert pd.isna(tw["established_year"].iloc[1])
    assert set(tw["relation"]) <= set(RELATIONS)


def test_mid_year_date_is_cohort_of_its_calendar_year(twinnings_small) -> None:
    tw = read_twinnings(twinnings_small, match_cities=False)
    row = tw[tw["city"] == "Bonn"].iloc[0]
    assert row["established_year"] == 2003
    assert row["established_date"] == pd.Timestamp("2003-06-15")


def test_optional_columns_absent() -> None:
    raw = pd.DataFrame({"city": ["Berat"], "country": ["Albania"], "partner_city": ["Fermo"],
                        "partner_country": ["Italy"]})
    tw = read_twinnings(raw)
    assert pd.isna(tw.loc[0, "established_year"]) and tw.loc[0, "relation"] == "unknown"
    with pytest.raises(ColumnError, match="'seit'"):
        read_twinnings(raw, established="seit")


def test_relation_map_extends_vocabulary() -> None:
    raw = pd.DataFrame({"city": ["Lyon"], "country": ["FRA"], "partner_city": ["Beijing"],
                        "partner_country": ["CHN"], "relation": ["jumelage officiel"]})
    tw = read_twinnings(raw, relation_map={"jumelage officiel": "twinning"})
    assert tw.loc[0, "relation"] == "twinning"


def test_read_trade_mapping_unit_and_codes() -> None:
    raw = pd.DataFrame({"o": ["DEU", "DEU", "DEU"], "d": ["ROM", "Frankreich", "GB"],
                        "yr": [1990, 1990, 1990.0], "x": [1.0, None, 3.0],
                        "DIST": [1, 2, 3]})
    tr = read_trade(raw, reporter="o", partner="d", year="yr", value="x",
                    unit="GBP current", extra=("DIST",))
    assert list(tr.columns) == ["reporter", "partner", "year", "value", "DIST"]
    assert tr["partner"].tolist() == ["ROU", "FRA", "GBR"]
    assert tr["year"].dtype == "int64" and pd.isna(tr["value"].iloc[1])
    assert tr.attrs["unit"] == "GBP current" and tr.attrs["n_missing_value"] == 1


def test_readers_never_modify_the_caller_frame(twinnings_small, trade_small) -> None:
    tw0, tr0 = twinnings_small.copy(deep=True), trade_small.copy(deep=True)
    read_twinnings(twinnings_small)
    read_trade(trade_small, unit="x")
    pd.testing.assert_frame_equal(twinnings_small, tw0)
    pd.testing.assert_frame_equal(trade_small, tr0)
    assert twinnings_small.attrs == {} and trade_small.attrs == {}
