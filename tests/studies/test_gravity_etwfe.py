"""Study kind ``gravity_etwfe``: the directed-pair panel (cohorts on both directions of the
home country's pairs, every dropped row counted), the estimators beside each other, the
plain-words report, and the default study end to end (slow)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from twinimpact.cli import DEFAULT_STUDY, bundled_studies
from twinimpact.studies.gravity_etwfe import (
    GRAVITY_FE,
    estimate_gravity_etwfe,
    first_twinning_year,
    gravity_etwfe_panel,
)
from twinimpact.studies.runner import run_study
from twinimpact.studies.spec import load_study


def _flows(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cs = ["DEU", "FRA", "USA", "AAA", "BBB", "CCC", "DDD"]
    rows = [(i, j, t) for i in cs for j in cs for t in range(2000, 2012)]
    d = pd.DataFrame(rows, columns=["exporter", "importer", "year"])
    ex = d["exporter"].map({c: k for k, c in enumerate(cs)})
    im = d["importer"].map({c: k for k, c in enumerate(cs)})
    d["trade"] = rng.poisson(np.exp(2 + 0.1 * ex + 0.05 * im)).astype(float)
    return d


def _twinnings() -> pd.DataFrame:
    return pd.DataFrame({"partner_iso3": ["FRA", "AAA", "AAA", "BBB", "XXX", "ccc"],
                         "established_year": [1950, 2004, 2001, 2007, 2003, 2009],
                         "relation": ["twinning", "twinning", "friendship", "twinning",
                                      "twinning", "twinning"]})


def test_panel_cohorts_both_directions_and_counts():
    first = first_twinning_year(_twinnings())
    assert first.to_dict() == {"AAA": 2004.0, "BBB": 2007.0, "CCC": 2009.0, "FRA": 1950.0,
                               "XXX": 2003.0}  # friendships do not count; codes upper-cased
    flows = _flows()
    flows.loc[17, "trade"] = np.nan   # DEU -> FRA, 2005
    p = gravity_etwfe_panel(flows, first, home="DEU", years=(2001, 2011))
    g = p.set_index("pair")["cohort"].groupby(level=0).first()
    assert g["DEU>AAA"] == g["AAA>DEU"] == 2004 and g["BBB>DEU"] == 2007
    assert g["DEU>FRA"] == 1950 and g["FRA>AAA"] == 0 and g["USA>DEU"] == 0
    d = p.attrs["dropped"]
    n = len(flows)
    assert d["outside the window 2001-2011"] == n // 12
    assert d["domestic flow (exporter = importer)"] == 7 * 11
    assert d["missing flow"] == 1
    assert len(p) == n - sum(d.values())
    assert {"pair", "exp_year", "imp_year"} <= set(p.columns)


def test_estimates_side_by_side_with_sentences():
    flows = _flows(1)
    first = first_twinning_year(_twinnings())
    p = gravity_etwfe_panel(flows, first, home="DEU", years=(2001, 2011))
    p.loc[p["treated_pair"] & (p["year"] >= p["cohort"]) & (p["cohort"] > 2001),
          "trade"] *= 1.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = estimate_gravity_etwfe(p, subject="Trade", alpha=0.05)
    assert not out.failures
    head = out.results["Poisson ETWFE (gravity FE)"]
    f = head.to_frame().set_index("term")
    # a 50% rise on the treated flows: the log ratio is near log(1.5)
    assert f.loc["ATT", "ci_lower"] < np.log(1.5) < f.loc["ATT", "ci_upper"]
    prop = out.poisson["not_yet_treated"].proportional().set_index("term")
    assert np.exp(f.loc["ATT", "estimate"]) - 1 == pytest.approx(prop.loc["ATT", "effect"])
    placebo = out.results["Poisson ETWFE, never-twinned controls (placebo leads)"]
    assert (placebo.to_frame()["rel_time"] < 0).any()
    assert placebo.pretrend_test.df >= 1
    assert {"Log-linear ETWFE (gravity FE, positive flows)",
            "Callaway-Sant'Anna (pair + year, positive flows)",
            "Imputation (pair + year, positive flows)"} <= set(out.results)
    assert any("% higher" in s or "% lower" in s for s in out.sentences)
    assert out.results["Log-linear ETWFE (gravity FE, positive flows)"].spec[
        "fixed_effects"] == GRAVITY_FE


def test_default_study_is_the_gravity_etwfe_design():
    assert DEFAULT_STUDY == "de_gravity_etwfe"
    s = load_study(bundled_studies()[DEFAULT_STUDY])
    assert s.kind == "gravity_etwfe" and s.headline == "Poisson ETWFE (gravity FE)"
    assert "replaces the single-exporter panel" in s.description
    assert "de_exports" in bundled_studies()


@pytest.mark.slow
def test_default_study_end_to_end(tmp_path):
    run = run_study(bundled_studies()[DEFAULT_STUDY], out=tmp_path)
    assert not run.failures
    page = (tmp_path / "reports" / DEFAULT_STUDY / "report.html").read_text()
    assert 'id="headline"' in page and "What is compared with what" in page
    assert "single-exporter panel" in page and "joint test" in page
    from .test_runner import assert_plain

    assert_plain(page)
    r = run.results["Poisson ETWFE (gravity FE)"]
    assert r.vcov_spec.cluster == ("pair",) and "ATT" in r.params.index
    man = run.panel.manifest
    assert man["steps"]["flows"]["dropped"]["outside the window 1991-2014"] > 0
