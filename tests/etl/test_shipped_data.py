"""The FULL shipped German registry joined to German TRADHIST exports (the default study).

The expected cohorts are computed independently with plain pandas and pycountry from the
raw CSV: for each partner country, the earliest ``seit`` among formal (``form == "p"``)
twinnings.
"""

from __future__ import annotations

import warnings

import pandas as pd
import pycountry
import pytest

from twinimpact.errors import TwinImpactWarning
from twinimpact.etl import build_panel, load_german_twinnings, load_tradhist
from twinimpact.etl.sources import find_raw_file, load_cn_key_pairs, load_gravity_panel

#: English country names in the registry that ISO 3166 spells differently (hand-checked).
_NAMES = {"Russia": "RUS", "South Korea": "KOR", "Macedonia": "MKD", "Kosovo": "XKX",
          "Palestine": "PSE", "Taiwan": "TWN", "Ivory Coast": "CIV", "Congo": "COG",
          "Czech Republic": "CZE", "Vietnam": "VNM", "Cape Verde": "CPV", "Bolivia": "BOL",
          "Moldova": "MDA", "Tanzania": "TZA", "Venezuela": "VEN", "Turkey": "TUR"}


def _iso3(name: str) -> str:
    return _NAMES.get(name) or pycountry.countries.lookup(name).alpha_3


@pytest.fixture(scope="module")
def de_panel():
    twin = load_german_twinnings()
    trade = load_tradhist()
    trade = trade[(trade["reporter"] == "DEU") & trade["year"].between(1871, 2014)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TwinImpactWarning)
        panel = build_panel(trade, twin, level="country_pair", relations=("twinning",))
    return twin, trade, panel


def test_registry_size_and_codes(de_panel) -> None:
    twin, trade, _ = de_panel
    assert len(twin) == 5881
    assert twin["relation"].value_counts().to_dict() == {
        "twinning": 4607, "contact": 805, "friendship": 461, "unknown": 8}
    assert twin["established_year"].between(1913, 2014).all()
    assert trade.attrs["unit"] == "GBP current"
    assert "ROM" not in set(trade["partner"]) and "ROU" in set(trade["partner"])


def test_cohort_is_earliest_formal_german_twinning(de_panel) -> None:
    _, trade, panel = de_panel
    raw = pd.read_csv(find_raw_file("twin_de_rgre", "twin_towns_de.csv"))
    formal = raw[(raw["form"] == "p") & raw["country"].notna()].copy()
    formal["iso3"] = formal["country"].map(_iso3)
    expected = formal.groupby("iso3")["seit"].min()
    cohorts = panel.frame.groupby("partner")["cohort"].first()
    partners = set(trade["partner"])
    twinned = sorted(set(expected.index) & partners)
    assert len(twinned) > 60
    for p in twinned:
        assert cohorts[p] == expected[p], p
    never = sorted(partners - set(expected.index))
    assert len(never) > 100
    assert cohorts[never].isna().all()
    assert panel.frame.loc[panel.frame["cohort"].isna(), "n_twinnings"].eq(0).all()
    # spot check from the registry: the earliest China link is Bremen-Dalian, 1985
    assert cohorts["CHN"] == 1985


def test_manifest_counts_add_up(de_panel) -> None:
    _, trade, panel = de_panel
    m = panel.manifest
    links = m["steps"]["links"]
    assert links["n_in"] == 5881
    assert links["n_in"] == links["n_out"] + sum(links["dropped"].values())
    assert links["dropped"]["relation 'friendship' not counted"] == 461
    assert links["dropped"]["relation 'contact' not counted"] == 805
    assert links["dropped"]["relation 'unknown' not counted"] == 8
    t = m["steps"]["trade"]
    assert t["n_in"] == len(trade) == t["n_out"] + sum(t["dropped"].values())
    assert m["steps"]["panel"]["n_rows"] == len(panel) == len(trade)
    un = m["unmatched_cities"]
    assert un["rows"] == sum(r[-1] for r in un["data"])          # listed, not dropped
    assert m["inputs"]["twinnings"]["sha256"] and m["inputs"]["trade"]["derived_from"]["sha256"]
    # Soviet/Czechoslovak-era links to today's countries: treated before their series start
    assert "DEU-RUS" in m["units"]["treated_before_first_observed_year"]


def test_other_loaders() -> None:
    cn = load_cn_key_pairs()
    assert len(cn) == 32 and (cn["country_iso3"] == "CHN").all()
    assert cn.loc[cn["city"] == "Qingdao", "city_id"].iloc[0] == 1797929
    g = load_gravity_panel()
    assert len(g) == 99981 and g.attrs["unit"] == "USD millions current"
    assert "ROU" in set(g["reporter"]) and {"DIST", "RTA"} <= set(g.columns)
