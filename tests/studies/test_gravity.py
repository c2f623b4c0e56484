"""Gravity study helper: twinning counts, the DEU-pair join (both directions), the PPML
intensity model against a direct ppml call, and the interpretation sentence.

Uses tests/data/gravity_yotov/agtpa_applications.parquet (the same 69-country panel as the
shipped data/raw/trade_gravity_tpa69 file) and tiny hand-made twinnings frames."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from twinimpact.errors import ColumnError, InputError, SpecificationError
from twinimpact.estimators.ppml import ppml
from twinimpact.results import VcovSpec, make_result
from twinimpact.studies.gravity import (
    build_gravity_data,
    gravity_intensity,
    gravity_study,
    intensity_sentence,
    twinning_counts,
)

from ..conftest import DATA


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return pd.read_parquet(DATA / "gravity_yotov" / "agtpa_applications.parquet")


TW = pd.DataFrame({
    "partner_iso3": ["FRA", "FRA", "FRA", "USA", "ROU", "GBR", "XKX", "FRA", None, "DEU"],
    "established_year": [1962, 1989, 1999, 1993, 1991, 2004, 2000, None, 1980, 1990],
    "relation": ["twinning", "twinning", "twinning", "twinning", "twinning", "friendship",
                 "twinning", "twinning", "twinning", "twinning"],
})


def test_twinning_counts_cumulative_and_filtered():
    c = twinning_counts(TW, years=[1986, 1990, 2000])
    fra = c[c["partner_iso3"] == "FRA"].set_index("year")["n_twinnings"]
    assert fra.to_dict() == {1986: 1, 1990: 2, 2000: 3}
    assert "ROM" in set(c["partner_iso3"])  # recoded to the panel's code for Romania
    assert "GBR" not in set(c["partner_iso3"])  # friendship links are not counted
    assert c.attrs["dropped"] == {"relation not counted": 1, "missing established_year": 1,
                                  "partner country missing": 1}
    all_types = twinning_counts(TW, years=[2006], relations=None)
    assert all_types.set_index("partner_iso3").loc["GBR", "n_twinnings"] == 1


def test_counts_joined_to_both_directions_of_home_pairs(panel):
    d = build_gravity_data(TW, panel)
    assert sorted(d["year"].unique()) == list(range(1986, 2007, 4))
    for exp, imp in (("DEU", "FRA"), ("FRA", "DEU")):
        s = d[(d["exporter"] == exp) & (d["importer"] == imp)].set_index("year")["n_twinnings"]
        assert s.to_dict() == {1986: 1, 1990: 2, 1994: 2, 1998: 2, 2002: 3, 2006: 3}
    rom = d[(d["exporter"] == "ROM") & (d["importer"] == "DEU")].set_index("year")
    assert rom.loc[1990, "n_twinnings"] == 0 and rom.loc[1994, "n_twinnings"] == 1
    home = (d["exporter"] == "DEU") | (d["importer"] == "DEU")
    assert (d.loc[~home, "n_twinnings"] == 0).all()
    assert (d.loc[d["domestic"], "n_twinnings"] == 0).all()
    np.testing.assert_allclose(d["log1p_twinnings"], np.log1p(d["n_twinnings"]))
    # all domestic pairs share one pair level; international pairs keep theirs
    assert d.loc[d["domestic"], "pair_fe"].nunique() == 1
    assert d.loc[~d["domestic"], "pair_fe"].nunique() == d.loc[~d["domestic"], "pair_id"].nunique()
    # XKX is not in the panel, DEU-DEU is the home country itself
    assert d.attrs["dropped"]["partner not in the panel (or the home country itself)"] == 2


def test_shipped_panel_spelling_accepted(panel):
    upper = panel.rename(columns={c: c.upper() for c in ("dist", "cntg", "lang", "clny", "rta")})
    a = build_gravity_data(TW, panel)
    b = build_gravity_data(TW, upper)
    pd.testing.assert_frame_equal(a, b)


def test_intensity_model_equals_direct_ppml(panel):
    d = build_gravity_data(TW, panel)
    r = gravity_intensity(d)
    sub = d[d["sum_trade"] > 0]
    borders = [f"intl_border_{y}" for y in range(1986, 2003, 4)]
    o = ppml(sub, outcome="trade", regressors=["n_twinnings", "rta", *borders],
             fixed_effects=[("exporter", "year"), ("importer", "year"), "pair_fe"],
             cluster="pair_id")
    pd.testing.assert_series_equal(r.params, o.params)
    pd.testing.assert_series_equal(r.std_errors, o.std_errors)
    assert r.nobs == 28482  # the book's sample with pair fixed effects
    assert r.terms[0] == "n_twinnings"


def test_gravity_study_end_to_end(panel):
    s = gravity_study(TW, panel, intensity="log1p_twinnings", border_year=False)
    assert s.result.terms == ("log1p_twinnings", "rta")
    assert s.sentence.startswith("Doubling one plus the number of twinnings is associated")
    assert s.dropped_twinnings["relation not counted"] == 1


def test_sentence_numbers():
    r = make_result("ppml", {"n_twinnings": 0.05}, np.array([[0.01**2]]),
                    VcovSpec("cluster"), 100)
    s = intensity_sentence(r)
    lo, hi = 0.05 - 1.959964 * 0.01, 0.05 + 1.959964 * 0.01
    x = 100 * math.expm1(0.05)
    assert s == (f"Each additional twinning is associated with {x:.1f}% higher trade, 95% CI "
                 f"[{100 * math.expm1(lo):.1f}%, {100 * math.expm1(hi):.1f}%].")
    neg = make_result("ppml", {"n_twinnings": -0.0002}, np.array([[1e-8]]),
                      VcovSpec("cluster"), 100)
    assert "0.020% lower trade" in intensity_sentence(neg)


def test_inputs_unchanged_and_bad_input(panel):
    before_p, before_t = panel.copy(deep=True), TW.copy(deep=True)
    d = build_gravity_data(TW, panel)
    gravity_intensity(d, border_year=False)
    pd.testing.assert_frame_equal(panel, before_p)
    pd.testing.assert_frame_equal(TW, before_t)
    with pytest.raises(ColumnError, match="established_year"):
        build_gravity_data(TW.drop(columns="established_year"), panel)
    with pytest.raises(ColumnError, match="dist"):
        build_gravity_data(TW, panel.drop(columns="dist"))
    with pytest.raises(InputError, match="home country"):
        build_gravity_data(TW, panel, home="XXX")
    with pytest.raises(InputError, match="zero everywhere"):
        gravity_intensity(build_gravity_data(TW.assign(partner_iso3="XKX"), panel))
    with pytest.raises(SpecificationError, match="intensity"):
        gravity_intensity(d, intensity="count")
