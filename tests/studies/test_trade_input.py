"""[trade] format / engine / globs in study files (twinimpact.etl.inputs.read_trade_input)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from twinimpact.errors import InputError, SpecificationError
from twinimpact.etl import load_tradhist
from twinimpact.etl.inputs import read_trade_input
from twinimpact.studies.spec import parse_study

from .test_spec import _doc  # the minimal valid study document

ROOT = Path(__file__).resolve().parents[2]


def test_baci_sample_reads_back_the_shipped_tradhist_flows():
    """The bundled BACI-layout sample holds exactly the TRADHIST flows it was built from."""
    baci = read_trade_input(ROOT / "data/raw/trade_baci_sample", format="baci",
                            options={"unit": "GBP current"}, engine="duckdb")
    th = load_tradhist()
    th = th[(th.reporter == "DEU") & th.year.between(1960, 2014) & th.value.notna()]
    a = baci[["reporter", "partner", "year", "value"]].reset_index(drop=True)
    b = th[["reporter", "partner", "year", "value"]].sort_values(
        ["reporter", "partner", "year"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    assert baci.attrs["unit"] == "GBP current" and baci.attrs["dropped"]["total"] == 0


def test_glob_and_engine_route_to_scan_trade(tmp_path):
    rec = pd.DataFrame({"o": ["DEU", "DEU", "DEU"], "d": ["FRA", "FRA", "CHN"],
                        "y": [2000, 2000, 2001], "v": [1.0, 2.0, 4.0], "f": ["X", "X", "M"]})
    for i in range(3):
        rec.iloc[[i]].to_parquet(tmp_path / f"r{i}.parquet")
    cols = {"reporter": "o", "partner": "d", "year": "y", "value": "v"}
    t = read_trade_input(str(tmp_path / "*.parquet"), columns=cols, filters={"f": "X"})
    assert t[["partner", "value", "n_records"]].values.tolist() == [["FRA", 3.0, 2]]
    t2 = read_trade_input(tmp_path, columns=cols, engine="pandas")
    assert t2["value"].sum() == 7.0
    with pytest.raises(SpecificationError, match="apply to BACI"):
        read_trade_input(tmp_path, format="comtrade", engine="duckdb")


@pytest.mark.parametrize("key, value, message", [
    ("format", "bacci", "trade.format: expected one of .* use .baci."),
    ("engine", "polars", "trade.engine: expected one of"),
    ("filters", "flow=X", "filters must be a table"),
])
def test_study_schema_checks_trade_format_engine_filters(key, value, message):
    doc = _doc()
    doc["trade"][key] = value
    with pytest.raises(SpecificationError, match=message):
        parse_study(doc)


def test_study_glob_that_matches_nothing(tmp_path):
    from twinimpact._paths import resolve_data_path

    with pytest.raises(InputError, match="the glob matches no file"):
        resolve_data_path("nothing/*.parquet", tmp_path)
