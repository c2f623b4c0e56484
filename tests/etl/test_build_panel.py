"""build_panel on hand-made inputs with hand-computed expected outputs; Panel I/O."""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pandas as pd
import pytest

from twinimpact.errors import DataWarning, DroppedRowsWarning
from twinimpact.etl.build import build_panel
from twinimpact.etl.sources import read_trade, read_twinnings
from twinimpact.panel import Panel

PANEL_COLUMNS = ["unit_id", "reporter", "partner", "year", "value", "cohort", "rel_time",
                 "n_twinnings", "treated", "first_link_year"]


def _build(trade: pd.DataFrame, twin: pd.DataFrame, **kw) -> Panel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return build_panel(trade, twin, **kw)


def test_small_panel_matches_hand_computed(etl_data, trade_small, twinnings_small) -> None:
    panel = _build(trade_small, twinnings_small)
    got = panel.frame[PANEL_COLUMNS]
    exp = pd.read_csv(etl_data / "expected_panel_small.csv")
    for c in ("cohort", "rel_time", "first_link_year"):
        exp[c] = exp[c].astype("Int64")
    pd.testing.assert_frame_equal(
        got.astype({"unit_id": object, "reporter": object, "partner": object}),
        exp.astype({"unit_id": object, "reporter": object, "partner": object,
                    "n_twinnings": "int64", "treated": "int8", "value": float}),
        check_dtype=True)


def test_link_accounting_adds_up(etl_data, trade_small, twinnings_small) -> None:
    panel = _build(trade_small, twinnings_small)
    links = panel.manifest["steps"]["links"]
    exp = json.loads((etl_data / "expected_links_small.json").read_text())
    assert links["n_in"] == exp["n_in"] and links["n_out"] == exp["n_out"]
    assert links["dropped"] == exp["dropped"]
    assert links["n_in"] == links["n_out"] + sum(links["dropped"].values())
    # each reason keeps its example rows (with the input row number)
    assert links["examples"]["duplicate link"][0]["source_row"] == 8
    trade = panel.manifest["steps"]["trade"]
    assert trade["n_in"] == trade["n_out"] + sum(trade["dropped"].values()) == 25
    assert trade["n_missing_value"] == 1


def test_warnings_are_counted(trade_small, twinnings_small) -> None:
    with pytest.warns(DataWarning, match=r"after the trade series ends \(2004\).*DEU-POL"):
        with pytest.warns(DroppedRowsWarning, match="links not used"):
            panel = build_panel(trade_small, twinnings_small)
    assert panel.manifest["units"]["first_link_after_window"] == ["DEU-POL"]
    assert len(panel.manifest["warnings"]) == 2


def test_relations_filter(trade_small, twinnings_small) -> None:
    allp = _build(trade_small, twinnings_small, relations="all")
    f = allp.frame
    # the 2001 friendship link Lyon-Frankfurt now starts DEU-FRA / FRA-DEU; contact starts ITA
    assert f.loc[f.unit_id == "DEU-FRA", "cohort"].iloc[0] == 2001
    assert f.loc[f.unit_id == "DEU-ITA", "cohort"].iloc[0] == 1998
    only_f = _build(trade_small, twinnings_small, relations=("friendship",))
    assert only_f.frame.groupby("unit_id")["cohort"].first().notna().sum() == 2


def test_manifest_inputs_parameters_version(trade_small, twinnings_small) -> None:
    from twinimpact import __version__

    m = _build(trade_small, twinnings_small).manifest
    assert m["package"]["version"] == __version__
    assert m["parameters"] == {"level": "country_pair", "rule": "first",
                               "relations": ["twinning"], "trade_years": [2000, 2004]}
    assert len(m["inputs"]["trade"]["frame_sha256"]) == 64
    assert len(m["inputs"]["twinnings"]["frame_sha256"]) == 64
    assert m["steps"]["panel"]["n_treated_units"] == 3
    assert m["steps"]["panel"]["n_never_treated_units"] == 2
    json.dumps(m)  # JSON-serialisable as is


def test_file_inputs_are_hashed(etl_data) -> None:
    p = _build(etl_data / "trade_small.csv", etl_data / "twinnings_small.csv")
    digest = hashlib.sha256((etl_data / "trade_small.csv").read_bytes()).hexdigest()
    assert p.manifest["inputs"]["trade"]["sha256"] == digest


def test_caller_frames_unchanged(trade_small, twinnings_small) -> None:
    tr0, tw0 = trade_small.copy(deep=True), twinnings_small.copy(deep=True)
    read = read_twinnings(twinnings_small)
    read0 = read.copy(deep=True)
    _build(trade_small, read)
    pd.testing.assert_frame_equal(trade_small, tr0)
    pd.testing.assert_frame_equal(twinnings_small, tw0)
    pd.testing.assert_frame_equal(read, read0)


def test_panel_frame_is_a_copy(trade_small, twinnings_small) -> None:
    panel = _build(trade_small, twinnings_small)
    f = panel.frame
    f["value"] = 0.0
    assert panel.frame["value"].sum() > 0


def test_to_parquet_atomic_with_manifest(tmp_path, trade_small, twinnings_small) -> None:
    panel = _build(trade_small, twinnings_small)
    out = panel.to_parquet(tmp_path / "study" / "panel.parquet")
    files = sorted(p.name for p in out.parent.iterdir())
    assert files == ["manifest.json", "panel.parquet"]          # no temp files left
    man = json.loads((out.parent / "manifest.json").read_text())
    assert man["output"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert man["output"]["rows"] == len(panel)
    back = Panel.read_parquet(out)
    assert back.roles == panel.roles
    pd.testing.assert_frame_equal(back.frame, panel.frame, check_dtype=False)
    # a rewrite replaces both files
    panel.to_parquet(out)
    assert sorted(p.name for p in out.parent.iterdir()) == files


def test_gravity_style_domestic_flows_and_extra_columns() -> None:
    trade = pd.DataFrame({"reporter": ["DEU", "DEU", "FRA", "FRA"] * 2,
                          "partner": ["DEU", "FRA", "DEU", "FRA"] * 2,
                          "year": [2000] * 4 + [2001] * 4, "value": 1.0, "RTA": 0})
    twin = pd.DataFrame({"city": ["Köln"], "country": ["DEU"], "partner_city": ["Lille"],
                         "partner_country": ["FRA"], "established": [2001],
                         "relation": ["p"]})
    f = build_panel(trade, twin).frame
    assert "RTA" in f.columns
    coh = f.groupby("unit_id")["cohort"].first()
    assert coh["DEU-FRA"] == coh["FRA-DEU"] == 2001
    assert pd.isna(coh["DEU-DEU"]) and pd.isna(coh["FRA-FRA"])


def test_city_partner_level(etl_data) -> None:
    trade = read_trade(etl_data / "city_trade_small.csv", reporter="city", value="exports",
                       reporter_type="city", unit="USD (made up)")
    twin = pd.read_csv(etl_data / "seed_misspellings.csv")
    with pytest.warns(DroppedRowsWarning, match="city not in the trade data: 4"):
        panel = build_panel(trade, twin, level="city_partner", relations="all")
    coh = panel.frame.groupby("unit_id")["cohort"].first()
    # "Qingdan"-Southampton (1998) matches the trade reporter "Qingdao" through its id
    assert coh["Qingdao-GBR"] == 1998
    assert coh["Qingdao-USA"] == 1985
    assert pd.isna(coh["Jinan-GBR"])
    n = panel.frame.set_index(["unit_id", "year"])["n_twinnings"]
    assert n[("Qingdao-GBR", 1997)] == 0 and n[("Qingdao-GBR", 1998)] == 1
    links = panel.manifest["steps"]["links"]
    assert links["n_in"] == links["n_out"] + sum(links["dropped"].values())


def test_treated_before_first_observed_year_is_kept_and_listed() -> None:
    trade = pd.DataFrame({"reporter": "DEU", "partner": "CZE", "year": [1993, 1994],
                          "value": [1.0, 2.0]})
    twin = pd.DataFrame({"city": ["Jena"], "country": ["DEU"], "partner_city": ["Brno"],
                         "partner_country": ["CZE"], "established": [1988],
                         "relation": ["p"]})
    p = build_panel(trade, twin)
    assert p.frame["cohort"].tolist() == [1988, 1988]
    assert p.frame["rel_time"].tolist() == [5, 6]
    assert p.manifest["units"]["treated_before_first_observed_year"] == ["DEU-CZE"]
    assert np.all(p.frame["treated"] == 1)
