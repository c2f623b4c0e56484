"""callaway_santanna against numbers that R did itself printed for mpdta.

The numbers are in tests/reference/callaway_santanna/r_did_published.json. They come from
the did repository's rendered reference pages (att_gt, aggte), the did-basics vignette and
the README, and the JSON records where each one was printed. R printed them rounded:
round(x, 4) for estimates and round(p, 5) for the pre-test p-value. So each check allows
half a unit in the last rounded decimal and nothing more. Standard errors are not checked
here: every published call used R's default multiplier bootstrap.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from twinimpact.estimators.callaway_santanna import callaway_santanna

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "reference" / "callaway_santanna" / "r_did_published.json"
MPDTA = ROOT / "data" / "mpdta" / "mpdta.csv"
KW = dict(outcome="lemp", unit="countyreal", time="year", cohort="first.treat")

_DATA = json.loads(REF.read_text())
CASES = _DATA["cases"]
EST = _DATA["estimate_precision"]
PRE = _DATA["pretest_precision"]


@pytest.fixture(scope="module")
def fit():
    """One fit per distinct option set, shared by the cases (4 fits for 6 cases)."""
    data = pd.read_csv(MPDTA)
    cache: dict[str, object] = {}

    def get(options: dict):
        key = json.dumps(options, sort_keys=True)
        if key not in cache:
            cache[key] = callaway_santanna(data, **KW, **options)
        return cache[key]

    return get


def _decimals(printed: str) -> int:
    exp = Decimal(printed).as_tuple().exponent
    return -exp if exp < 0 else 0


def _check(ours: float, printed: str, tol: float, label: str) -> None:
    diff = abs(ours - float(printed))
    assert diff <= tol, (f"{label}: ours {ours:.8f} vs R printed {printed} "
                         f"(|diff| {diff:.2e} > {tol})")


def test_reference_file_is_well_formed():
    assert _DATA["provenance"]["package"].startswith("R did")
    for prec in (EST, PRE):
        assert prec["tolerance"] == pytest.approx(0.5 * 10.0 ** -prec["decimals"], rel=1e-12)
    for name, case in CASES.items():
        src = case["source"]
        assert src["repo"] == "bcallaway11/did" and len(src["commit"]) == 40, name
        assert src["path"] and src["url"], name
        printed = list(case.get("att_gt", {}).values())
        for block in case.get("aggregate", []):
            printed += list(block["values"].values())
        assert printed, name
        # R printed round(x, 4); print() may drop trailing zeros, never add digits
        assert all(_decimals(v) <= EST["decimals"] for v in printed), name
        if "pretest_p_value" in case:
            assert _decimals(case["pretest_p_value"]) <= PRE["decimals"], name


_ATT_GT = [n for n, c in CASES.items() if "att_gt" in c]
_PRETEST = [n for n, c in CASES.items() if "pretest_p_value" in c]
_AGG = [(n, i) for n, c in CASES.items() for i in range(len(c.get("aggregate", [])))]


@pytest.mark.parametrize("name", _ATT_GT)
def test_att_gt_estimates(fit, name):
    case = CASES[name]
    res = fit(case["options"])
    published = case["att_gt"]
    assert set(res.terms) == set(published), name  # the same 12 (g, t) cells
    for term, printed in published.items():
        _check(res.params[term], printed, EST["tolerance"], f"{name} {term}")


@pytest.mark.parametrize("name", _PRETEST)
def test_pretest_p_value(fit, name):
    case = CASES[name]
    p = fit(case["options"]).pretrend_test.p_value
    _check(p, case["pretest_p_value"], PRE["tolerance"], f"{name} pre-test p-value")


@pytest.mark.parametrize(("name", "i"), _AGG,
                         ids=[f"{n}-{CASES[n]['aggregate'][i]['type']}"
                              + "".join(f"-{k}{v}" for k, v in
                                        CASES[n]["aggregate"][i]["options"].items())
                              for n, i in _AGG])
def test_aggregates(fit, name, i):
    case = CASES[name]
    block = case["aggregate"][i]
    agg = fit(case["options"]).aggregate(block["type"], **block["options"])
    published = block["values"]
    assert set(agg.terms) == set(published), (name, block["type"])  # R printed every row
    for term, printed in published.items():
        _check(agg.params[term], printed, EST["tolerance"],
               f"{name} {block['type']} {block['options']} {term}")
