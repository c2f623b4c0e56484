"""End to end: every bundled study runs on the shipped data and its outputs agree with the
results they came from; reruns replace outputs; failures are reported, not hidden."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from twinimpact.cli import bundled_studies, main
from twinimpact.studies.kinds.panel import transform_outcome
from twinimpact.studies.runner import run_study

from ..report.plain_language import problems

pytestmark = pytest.mark.filterwarnings("ignore::twinimpact.errors.TwinImpactWarning")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return run_study(bundled_studies()["de_exports"], out=out), out


@pytest.mark.slow
def test_default_study_outputs(default_run):
    run, out = default_run
    processed = out / "data" / "processed" / "de_exports"
    reports = out / "reports" / "de_exports"
    panel = pd.read_parquet(processed / "panel.parquet")
    manifest = json.loads((processed / "manifest.json").read_text())
    for name in ("results.md", "results.xlsx", "results.html", "results.tex",
                 "event_study.png", "event_study.svg", "report.html", "summary.json"):
        assert (reports / name).stat().st_size > 100, name
    assert set(run.results) == {"TWFE (static)", "TWFE event study", "Imputation (BJS)",
                                "Two-stage DiD (Gardner)",
                                "Callaway-Sant'Anna (not yet twinned)"}
    assert not run.failures
    # the panel is German exports by partner country; cohort = first formal twinning
    assert set(panel["reporter"]) == {"DEU"}
    assert panel["year"].between(1871, 2014).all()
    links = manifest["steps"]["links"]
    assert links["n_in"] == links["n_out"] + sum(links["dropped"].values()) == 5881
    fra = panel.loc[panel["partner"] == "FRA", "cohort"].dropna().unique()
    assert len(fra) == 1 and 1913 <= fra[0] <= 1960
    # the analysis sample: log undefined rows counted, the rest used
    frame, dropped = transform_outcome(panel, "log")
    assert len(frame) + sum(dropped.values()) == len(panel)
    assert run.results["TWFE (static)"].nobs <= len(frame)
    # tables agree with the results
    xlsx = pd.read_excel(reports / "results.xlsx", sheet_name="estimates", index_col=0)
    for label, res in run.results.items():
        att = res.to_frame().set_index("term").loc["ATT", "estimate"]
        assert xlsx.loc["ATT", f"{label} | estimate"] == pytest.approx(att)
    md = (reports / "results.md").read_text()
    assert md.startswith("| | TWFE (static) | TWFE event study |")
    # the headline quotes the study's chosen estimate
    page = (reports / "report.html").read_text()
    imp = run.results["Imputation (BJS)"].to_frame().set_index("term").loc["ATT"]
    pct = 100 * (math.exp(imp["estimate"]) - 1)
    assert "German exports to a partner country were" in page
    assert f"{abs(pct):.1f}%" in page
    assert_plain(page)


def assert_plain(page: str) -> None:
    """The report reads as plain language (tests/report/plain_language.py); bundled study
    names are allowed: they are what a reader types after ``twinimpact run``."""
    found = problems(page, allow=tuple(bundled_studies()))
    assert not found, "\n".join(found[:20])


#: the end-to-end tests that build each bundled study's report and check its language
END_TO_END = {"de_exports": "test_default_study_outputs",
              "de_gravity_etwfe": "tests/studies/test_gravity_etwfe.py",
              "de_gravity_intensity": "test_other_bundled_studies",
              "cn_uk_case": "test_other_bundled_studies",
              "au_cn_case": "test_other_bundled_studies",
              "de_exports_intensity": "test_other_bundled_studies",
              "de_exports_baci": "test_other_bundled_studies",
              "de_gravity_etwfe_tpa69": "test_other_bundled_studies"}


def test_every_bundled_study_report_is_checked():
    """A new bundled study fails here until an end-to-end test builds its report (and so
    checks its plain language)."""
    assert set(bundled_studies()) == set(END_TO_END)


@pytest.mark.slow
def test_rerun_replaces_outputs_and_nothing_else(default_run, tmp_path):
    run, out = default_run
    reports = out / "reports" / "de_exports"
    keep = reports / "my_notes.txt"
    keep.write_text("mine")
    stale = reports / "results.tex"
    assert stale.exists()
    from dataclasses import replace

    study = replace(run.study, tables=("markdown", "xlsx"))
    run_study(study, out=out)
    assert keep.read_text() == "mine"          # not ours: untouched
    assert not stale.exists()                  # ours, no longer produced: removed
    assert (reports / "results.md").exists()
    assert not list(reports.glob("*.tmp")) and not list(reports.glob(".*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("name", [k for k, v in END_TO_END.items()
                                  if v == "test_other_bundled_studies"])
def test_other_bundled_studies(name, tmp_path):
    run = run_study(bundled_studies()[name], out=tmp_path)
    page = (tmp_path / "reports" / name / "report.html").read_text()
    assert run.results and not run.failures
    assert 'id="headline"' in page
    assert_plain(page)
    if run.study.simulated:
        body = page.split("<body>", 1)[1].lstrip()
        assert body.startswith('<p class="banner" id="simulated">SIMULATED DATA')
        assert "SIMULATED" in run.analysis_frame["note"].iloc[0]
    if name == "de_gravity_intensity":
        r = run.results["PPML gravity (number of twinnings)"]
        assert "n_twinnings" in r.params.index
        assert r.vcov_spec.cluster == ("pair_id",)
    if name == "de_exports_intensity":
        r = run.results["dCDH: number of twinnings"]
        f = r.to_frame().set_index("term")
        assert r.estimator == "did_multiplegt" and r.spec["treatment"] == "n_twinnings"
        assert f.loc["Effect_10", "rel_time"] == 10 and f.loc["Placebo_5", "rel_time"] == -5
        assert r.diagnostics["placebo_test"]["df"] == 5
        assert run.panel.manifest["steps"]["links"]["n_ended"] == 0   # no end dates shipped
        assert "has no end dates" in page and "per additional twinning" in page
    if name == "cn_uk_case":
        assert run.diagnostics["treated_from"] == {"Qingdao": 1998, "Jinan": 1983}
    if name == "de_exports_baci":  # trade read in BACI layout, aggregated on DuckDB
        assert run.panel.frame["year"].between(1960, 2014).all()
        assert "TWFE (static)" in run.results
    if name == "au_cn_case":
        assert run.diagnostics["treated_from"] == {"Jinan": 2004, "Qingdao": 2000}


def test_failures_are_reported_not_hidden(tmp_path):
    from dataclasses import replace

    from twinimpact.studies.spec import EstimateSpec, load_study

    study = load_study(bundled_studies()["de_exports"])
    study = replace(study, estimates=(EstimateSpec("TWFE", "twfe", {}),
                                      EstimateSpec("bad", "twfe", {"vcov": "robust"})),
                    tables=("markdown",), figures=(), report=False)
    run = run_study(study, out=tmp_path)
    assert "TWFE" in run.results
    assert "vcov: expected one of" in run.failures["bad"]
    summary = json.loads((tmp_path / "reports" / "de_exports" / "summary.json").read_text())
    assert "bad" in summary["failures"]


def test_cli_run_bad_study_file(tmp_path, capsys):
    p = tmp_path / "s.toml"
    p.write_text('[study]\nname = "x"\ntitle = "t"\n[twinnings]\npath = "nope.csv"\n'
                 '[trade]\npath = "nope.csv"\n[[estimate]]\nestimator = "twfe"\n')
    assert main(["run", str(p), "--out", str(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err
    assert "data file not found" in err and "nope.csv" in err


def test_transform_outcome_counts():
    f = pd.DataFrame({"value": [1.0, 0.0, -1.0, None, 10.0]})
    out, dropped = transform_outcome(f, "log")
    assert len(out) == 2 and sum(dropped.values()) == 3
    out, dropped = transform_outcome(f, "asinh")
    assert len(out) == 4 and dropped == {"missing value": 1}
