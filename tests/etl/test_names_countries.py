"""Country crosswalk (pycountry + shipped alias table) and name normalisation."""

from __future__ import annotations

import pandas as pd
import pytest

from twinimpact.errors import InputError
from twinimpact.etl.countries import country_aliases, lookup_country, to_iso3, to_iso3_series
from twinimpact.etl.names import is_district, name_variants, normalize_name


@pytest.mark.parametrize(("value", "iso3"), [
    # English, German, codes
    ("France", "FRA"), ("Frankreich", "FRA"), ("FR", "FRA"), ("fra", "FRA"),
    ("United Kingdom", "GBR"), ("Vereinigtes Königreich", "GBR"), ("UK", "GBR"),
    ("England", "GBR"), ("England, United Kingdom", "GBR"),
    ("United States", "USA"), ("USA", "USA"), ("Vereinigte Staaten", "USA"),
    ("Czech Republic", "CZE"), ("Tschechien", "CZE"), ("Tschech. Republik", "CZE"),
    ("South Korea", "KOR"), ("Korea, Republic of", "KOR"), ("Republic of Korea", "KOR"),
    ("Russia", "RUS"), ("Russland", "RUS"), ("Ivory Coast", "CIV"),
    ("Macedonia", "MKD"), ("Kosovo", "XKX"), ("Palestine", "PSE"), ("Taiwan", "TWN"),
    ("Congo", "COG"), ("Polen", "POL"), ("Witebsk (Belarus)", "BLR"),
    # historical names and codes (documented choices)
    ("ROM", "ROU"), ("West Germany", "DEU"), ("BRD", "DEU"), ("FRG", "DEU"),
    ("East Germany", "DDR"), ("USSR", "SUN"), ("Soviet Union", "SUN"),
    ("Yugoslavia", "YUG"), ("YUG", "YUG"), ("Czechoslovakia", "CSK"), ("Zaire", "COD"),
    ("ANT", "ANT"), ("HWI", "HWI"),
])
def test_to_iso3_known(value: str, iso3: str) -> None:
    assert to_iso3(value) == iso3


def test_every_code_in_the_shipped_trade_data_resolves() -> None:
    codes = ["ABW", "ANT", "CUW", "HWI", "ROM", "YAR", "YMD", "YUG", "SRB", "TWN", "MAC"]
    assert [lookup_country(c) for c in codes] == [
        "ABW", "ANT", "CUW", "HWI", "ROU", "YAR", "YMD", "YUG", "SRB", "TWN", "MAC"]


def test_unknown_country_names_value_where_and_suggestion() -> None:
    with pytest.raises(InputError) as exc:
        to_iso3_series(pd.Series(["France", "Frnace"], index=[10, 11]), column="land")
    msg = str(exc.value)
    assert "'Frnace'" in msg and "column 'land'" in msg and "row 11" in msg
    assert "did you mean 'France'" in msg


def test_missing_country_stays_missing() -> None:
    out = to_iso3_series(pd.Series(["France", None]), column="c")
    assert out.iloc[0] == "FRA" and pd.isna(out.iloc[1])


def test_user_aliases_take_precedence() -> None:
    assert to_iso3("Narnia", aliases={"Narnia": "GBR"}) == "GBR"
    assert to_iso3("Frankreich", aliases={"frankreich": "BEL"}) == "BEL"


def test_alias_table_targets_are_valid_codes() -> None:
    import pycountry

    table = country_aliases()
    valid = {c.alpha_3 for c in pycountry.countries} | {
        c.alpha_3 for c in pycountry.historic_countries} | {"XKX", "HWI", "YAR"}
    assert set(table["iso3"]) <= valid
    assert not table["alias"].duplicated().any()


def test_normalize_name_and_variants() -> None:
    assert normalize_name("Saint-Étienne") == normalize_name("saint etienne")
    assert normalize_name("Groß-Gerau") == "gross gerau"
    assert name_variants("Vratimov (Rattimau)") == ["vratimov rattimau", "vratimov",
                                                    "rattimau"]
    assert name_variants("Qianjiang (Provinz Hubei)")[1] == "qianjiang"
    assert "saint brieuc" in name_variants("St. Brieuc")
    assert is_district("Borken (Kreis)") and is_district("Alb-Donau-Kreis")
    assert not is_district("Kreischa")
