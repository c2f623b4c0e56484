"""Links that end: read_twinnings(ended=...), n_twinnings that falls, a treatment that
switches off, the manifest's count of ended links, and did_multiplegt on the result."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import twinimpact as ti
from twinimpact.errors import InputError


def _read(etl_data):
    return ti.read_twinnings(etl_data / "twinnings_ended.csv", city="town", country="nation",
                             partner_city="partner", partner_country="partner_nation",
                             established="since", ended="until", relation="type",
                             match_cities=False)


def _trade() -> pd.DataFrame:
    partners = ["DEU", "FRA", "CHN", "USA", "POL", "NLD", "ITA"]
    years = range(2000, 2015)
    return pd.DataFrame([("GBR", p, y, 100.0 + y - 2000) for p in partners for y in years],
                        columns=["reporter", "partner", "year", "value"])


def test_read_twinnings_parses_end_dates(etl_data):
    tw = _read(etl_data)
    assert tw["ended_year"].tolist()[:5] == [2009] * 5
    assert tw["ended_date"].iloc[1] == pd.Timestamp("2009-06-30")
    assert tw["ended_year"].isna().tolist()[5:7] == [True, True]
    # without an end column nothing changes: the columns exist and are missing
    plain = ti.read_twinnings(etl_data / "twinnings_small.csv", match_cities=False)
    assert plain["ended_year"].isna().all() and "ended_date" in plain.columns


def test_end_before_start_is_a_named_error(etl_data):
    raw = pd.read_csv(etl_data / "twinnings_ended.csv")
    raw.loc[0, "until"] = "1980"
    with pytest.raises(InputError, match=r"end before they were established.*'until'"):
        ti.read_twinnings(raw, city="town", country="nation", partner_city="partner",
                          partner_country="partner_nation", established="since",
                          ended="until", relation="type", match_cities=False)
    raw.loc[0, "until"] = "last spring"
    with pytest.raises(InputError, match="cannot parse the date a twinning was ended"):
        ti.read_twinnings(raw, city="town", country="nation", partner_city="partner",
                          partner_country="partner_nation", established="since",
                          ended="until", relation="type", match_cities=False)


def test_build_panel_links_that_end(etl_data):
    p = ti.build_panel(_trade(), _read(etl_data), relations="all")
    f = p.frame.set_index(["unit_id", "year"])
    # Germany: Herten 1986-2008 and Bochum (never ended): falls from 2 to 1 in 2009
    assert f.loc[("GBR-DEU", 2008), "n_twinnings"] == 2
    assert f.loc[("GBR-DEU", 2009), "n_twinnings"] == 1
    assert f.loc[("GBR-DEU", 2009), "twinned"] == 1
    # China: Dandong only -> the treatment switches off in 2009
    cn = p.frame[p.frame["unit_id"] == "GBR-CHN"].set_index("year")
    assert cn.loc[2008, ["n_twinnings", "twinned", "treated"]].tolist() == [1, 1, 1]
    assert cn.loc[2009, ["n_twinnings", "twinned", "treated"]].tolist() == [0, 0, 1]
    assert cn.loc[2014, "twinned"] == 0 and cn["cohort"].iloc[0] == 1997
    # France: Avion ends 2009 (a date in 2009), Lille starts 2011 -> 1, 0, 0, 1
    fr = p.frame[p.frame["unit_id"] == "GBR-FRA"].set_index("year")["n_twinnings"]
    assert [fr[y] for y in (2008, 2009, 2010, 2011)] == [1, 0, 0, 1]
    # a link that ends in the year it starts is never active
    assert (p.frame.loc[p.frame["unit_id"] == "GBR-NLD", "n_twinnings"] == 0).all()
    links = p.manifest["steps"]["links"]
    assert links["n_ended"] == 6 and links["n_ended_within_window"] == 5
    assert links["n_ended_same_year"] == 1
    assert links["n_in"] == links["n_out"] + sum(links["dropped"].values())
    panel = p.manifest["steps"]["panel"]
    assert panel["n_units_switching_off"] == 4          # CHN, USA, POL (to 0), FRA (2009)
    assert p.manifest["units"]["switching_off"] == ["GBR-CHN", "GBR-FRA", "GBR-POL",
                                                    "GBR-USA"]


def test_without_end_dates_nothing_changes(etl_data):
    tw = _read(etl_data)
    tw = tw.assign(ended_year=pd.array([pd.NA] * len(tw), dtype="Int64"))
    p = ti.build_panel(_trade(), tw, relations="all")
    assert (p.frame["twinned"] == p.frame["treated"]).all()
    assert p.manifest["steps"]["links"]["n_ended"] == 0
    assert p.manifest["steps"]["panel"]["n_units_switching_off"] == 0


@pytest.mark.filterwarnings("ignore::twinimpact.errors.TwinImpactWarning")  # 6 clusters
def test_did_multiplegt_on_links_that_end(etl_data):
    """n_twinnings as an intensity treatment that falls: switchers out (CHN, USA, FRA lose
    their only link in 2009; ITA keeps one; POL starts at 0 in 2000, so it is a switcher
    in) recover a known effect per link."""
    rng = np.random.default_rng(0)
    frame = ti.build_panel(_trade(), _read(etl_data), relations="all").frame
    unit_fe = frame["unit_id"].map({u: rng.normal() for u in frame["unit_id"].unique()})
    frame = frame.assign(lv=unit_fe + 0.02 * (frame["year"] - 2000)
                         + 0.3 * frame["n_twinnings"] + rng.normal(0, 0.01, len(frame)))
    r = ti.did_multiplegt(frame, outcome="lv", unit="unit_id", time="year",
                          treatment="n_twinnings", effects=2, switchers="out")
    assert r.term_info.loc["Effect_1", "n_switchers"] == 3
    assert r.params["Effect_1"] == pytest.approx(0.3, abs=0.03)
    assert r.params["ATT"] == pytest.approx(0.3, abs=0.03)


def test_city_level_links_that_end(etl_data):
    trade = pd.DataFrame([("Doncaster", p, y, 1.0) for p in ("DEU", "CHN", "ITA")
                          for y in range(2006, 2013)],
                         columns=["reporter", "partner", "year", "value"])
    with pytest.warns(ti.errors.DroppedRowsWarning, match="city not in the trade data: 7"):
        p = ti.build_panel(trade, _read(etl_data), level="city_partner", relations="all")
    f = p.frame.set_index(["unit_id", "year"])["n_twinnings"]
    assert [f["Doncaster-DEU", y] for y in (2008, 2009)] == [1, 0]
    assert [f["Doncaster-CHN", y] for y in (2008, 2009)] == [1, 0]
    assert (p.frame.loc[p.frame["unit_id"] == "Doncaster-ITA", "twinned"] == 0).all()
    assert p.manifest["steps"]["panel"]["n_units_switching_off"] == 2
