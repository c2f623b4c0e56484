"""Shared fixtures. Tests read only files inside the repository; nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
from hypothesis import settings

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")

# Property tests: on CI (CI set, as .ci/run's callers do) the examples are derived from
# each test's name (derandomize), so a CI run is reproducible and a red run can be re-run
# as it was; local runs draw new random examples every time, which is where the fuzz
# tests keep finding things (a failure there is saved in .hypothesis/ and replayed).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
REFERENCE = TESTS / "reference"


@pytest.fixture(scope="session")
def mpdta() -> pd.DataFrame:
    """R did's mpdta (500 counties x 2003-2007); see tests/data/mpdta/SOURCE.md."""
    return pd.read_csv(DATA / "mpdta" / "mpdta.csv")
