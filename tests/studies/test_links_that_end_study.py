"""A study whose registry has end dates: the panel kind maps ``ended``, the number of
twinnings falls, and did_multiplegt uses it as an intensity treatment (switchers out)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twinimpact.studies.runner import run_study
from twinimpact.studies.spec import load_study

from ..conftest import DATA

pytestmark = pytest.mark.filterwarnings("ignore::twinimpact.errors.TwinImpactWarning")


def test_study_with_links_that_end(tmp_path):
    rng = np.random.default_rng(1)
    partners = ["DEU", "FRA", "CHN", "USA", "POL", "NLD", "ITA"]
    fe = {p: rng.normal() for p in partners}
    trade = pd.DataFrame([("GBR", p, y) for p in partners for y in range(2000, 2015)],
                         columns=["reporter", "partner", "year"])
    trade.to_csv(tmp_path / "trade.csv", index=False)
    toml = f"""
[study]
name = "ended_links"
title = "Links that end"
[twinnings]
path = "{(DATA / 'etl' / 'twinnings_ended.csv').as_posix()}"
relations = ["twinning"]
[twinnings.columns]
city = "town"
country = "nation"
partner_city = "partner"
partner_country = "partner_nation"
established = "since"
ended = "until"
relation = "type"
[twinnings.options]
match_cities = false
[trade]
path = "trade.csv"
[outcome]
transform = "log"
[[estimate]]
label = "dCDH"
estimator = "did_multiplegt"
options = {{ treatment = "n_twinnings", effects = 2, switchers = "out" }}
[output]
tables = ["markdown"]
figures = []
report = false
"""
    (tmp_path / "s.toml").write_text(toml)
    # log outcome = unit effect + common trend + 0.4 per active link (no noise), so the
    # effect of losing the only link is exactly 0.4 (switchers out are signed as the
    # effect of the treatment, as in the reference)
    study = load_study(tmp_path / "s.toml")
    from twinimpact.etl import build_panel, read_trade, read_twinnings

    tw = read_twinnings(DATA / "etl" / "twinnings_ended.csv", **study.twinnings["columns"],
                        match_cities=False)
    frame = build_panel(read_trade(trade.assign(value=1.0)), tw).frame
    frame = frame.assign(value=np.exp(frame["partner"].map(fe) + 0.01 * (frame["year"] - 2000)
                                      + 0.4 * frame["n_twinnings"]))
    frame[["reporter", "partner", "year", "value"]].to_csv(tmp_path / "trade.csv",
                                                           index=False)
    run = run_study(study, out=tmp_path)
    assert not run.failures
    assert run.panel.manifest["steps"]["links"]["n_ended"] == 6
    assert run.panel.manifest["steps"]["panel"]["n_units_switching_off"] == 4
    r = run.results["dCDH"]
    assert r.term_info.loc["Effect_1", "n_switchers"] == 3
    assert r.params["Effect_1"] == pytest.approx(0.4, abs=1e-9)
    assert r.params["ATT"] == pytest.approx(0.4, abs=1e-9)
