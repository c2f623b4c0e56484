"""Fixtures for the ETL tests: hand-made CSVs in tests/data/etl (see its README.md)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

ETL_DATA = Path(__file__).resolve().parents[1] / "data" / "etl"


@pytest.fixture
def etl_data() -> Path:
    return ETL_DATA


@pytest.fixture
def trade_small() -> pd.DataFrame:
    return pd.read_csv(ETL_DATA / "trade_small.csv")


@pytest.fixture
def twinnings_small() -> pd.DataFrame:
    return pd.read_csv(ETL_DATA / "twinnings_small.csv")
