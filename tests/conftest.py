"""Shared fixtures. Tests read only files inside the repository; nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
REFERENCE = TESTS / "reference"


@pytest.fixture(scope="session")
def mpdta() -> pd.DataFrame:
    """R did's mpdta (500 counties x 2003-2007); see tests/data/mpdta/SOURCE.md."""
    return pd.read_csv(DATA / "mpdta" / "mpdta.csv")
