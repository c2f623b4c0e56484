"""One table of bad inputs -> (exception or warning class, message fragment)."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

from twinimpact.errors import (
    ColumnError,
    DataWarning,
    DroppedRowsWarning,
    InputError,
    SpecificationError,
)
from twinimpact.etl.build import build_panel
from twinimpact.etl.sources import read_trade, read_twinnings

TRADE = pd.DataFrame({"reporter": ["DEU", "DEU"], "partner": ["FRA", "FRA"],
                      "year": [2000, 2001], "value": [1.0, 2.0]})
TWIN = pd.DataFrame({"city": ["Köln"], "country": ["DEU"], "partner_city": ["Lille"],
                     "partner_country": ["France"], "established": ["2000"],
                     "relation": ["p"]})


def _tw(**change):
    return TWIN.assign(**change)


def _tr(**change):
    return TRADE.assign(**change)


CASES = [
    ("twinnings missing column", lambda: read_twinnings(TWIN.drop(columns="partner_country")),
     ColumnError, "no column 'partner_country'"),
    ("mapped column absent", lambda: read_twinnings(TWIN, established="seit"),
     ColumnError, "'seit'"),
    ("trade missing column", lambda: read_trade(TRADE.drop(columns="value")),
     ColumnError, "no column 'value'"),
    ("misspelled column name suggests", lambda: read_trade(TRADE, value="valeu"),
     ColumnError, "did you mean 'value'"),
    ("negative trade value", lambda: read_trade(_tr(value=[1.0, -2.0])),
     InputError, "negative trade values (1 row(s)). Where: column 'value', row 1"),
    ("duplicate reporter-partner-year", lambda: read_trade(_tr(year=[2000, 2000])),
     InputError, "share a reporter-partner-year"),
    ("duplicate after normalising codes",
     lambda: read_trade(_tr(partner=["ROM", "ROU"], year=[2000, 2000])),
     InputError, "two spellings of one country"),
    ("non-numeric trade value", lambda: read_trade(_tr(value=["1", "lots"])),
     InputError, "trade value is not a number"),
    ("fractional year", lambda: read_trade(_tr(year=[2000.5, 2001])),
     InputError, "year must be a whole number"),
    ("unknown country in twinnings", lambda: read_twinnings(_tw(partner_country=["Frnace"])),
     InputError, "Seen: 'Frnace'. Fix: did you mean 'France'"),
    ("unknown country names column and row",
     lambda: read_twinnings(_tw(partner_country=["Frnace"])),
     InputError, "column 'partner_country', row 0"),
    ("unknown country in trade", lambda: read_trade(_tr(partner=["FRA", "Atlantis"])),
     InputError, "Seen: 'Atlantis'"),
    ("unparseable date", lambda: read_twinnings(_tw(established=["sometime in 1990"])),
     InputError, "cannot parse the date"),
    ("implausible year", lambda: read_twinnings(_tw(established=[20001])),
     InputError, "implausible year"),
    ("unknown link type", lambda: read_twinnings(_tw(relation=["partnerstadt"])),
     InputError, "unknown link type"),
    ("empty twinnings", lambda: read_twinnings(TWIN.iloc[:0]), InputError, "empty"),
    ("empty trade", lambda: read_trade(TRADE.iloc[:0]), InputError, "empty"),
    ("not a frame", lambda: read_trade(42), InputError, "path or a pandas DataFrame"),
    ("missing file", lambda: read_trade("/nonexistent/trade.csv"), InputError, "not found"),
    ("bad level", lambda: build_panel(TRADE, TWIN, level="city"),
     SpecificationError, "level: expected one of"),
    ("bad rule", lambda: build_panel(TRADE, TWIN, rule="last"),
     SpecificationError, "rule: expected one of"),
    ("bad relation filter", lambda: build_panel(TRADE, TWIN, relations=("twining",)),
     SpecificationError, "Did you mean 'twinning'"),
    ("twinning after the series ends", lambda: build_panel(TRADE, _tw(established=[2010])),
     DataWarning, "after the trade series ends (2001)"),
    ("link countries not in trade",
     lambda: build_panel(TRADE, _tw(partner_country=["Italy"])),
     DroppedRowsWarning, "countries not in the trade data: 1"),
    ("link with missing year", lambda: build_panel(TRADE, _tw(established=[None])),
     DroppedRowsWarning, "year established missing: 1"),
]


@pytest.mark.parametrize(("case", "call", "kind", "fragment"), CASES,
                         ids=[c[0] for c in CASES])
def test_bad_input(case, call, kind, fragment) -> None:
    if issubclass(kind, Warning):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # other warnings of the same call
            with pytest.warns(kind) as rec:
                call()
        assert any(fragment in str(w.message) for w in rec if issubclass(w.category, kind)), \
            [str(w.message) for w in rec]
    else:
        with pytest.raises(kind) as exc:
            call()
        assert fragment in str(exc.value), str(exc.value)
