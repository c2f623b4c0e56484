"""The command line fails loudly (issue 16): never a traceback for a user error (``--debug``
shows it), exit codes 0 success / 2 bad input / 3 no estimate / 130 interrupted, and an
interrupted run leaves no partial output. Every case runs a tiny study on the ETL test
files (city matching off, so each run takes well under a second)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from twinimpact.cli import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_NO_ESTIMATE, main

from .conftest import DATA

pytestmark = pytest.mark.filterwarnings("ignore::twinimpact.errors.TwinImpactWarning")

BASE = """
[study]
name = "small"
title = "Small study"
{study}
[twinnings]
path = "{twinnings}"
{twinnings_extra}
[twinnings.options]
match_cities = false
{twinnings_options}
[trade]
path = "{trade}"
{trade_extra}
[trade.options]
{trade_options}
{sections}
[[estimate]]
label = "TWFE"
estimator = "twfe"
{estimate_options}
[output]
tables = {tables}
figures = ["svg"]
report = false
"""


def _write_study(folder: Path, **over: str) -> Path:
    fields = {"study": "", "twinnings": "twinnings.csv", "twinnings_extra": "",
              "twinnings_options": "", "trade": "trade.csv", "trade_extra": "",
              "trade_options": "", "sections": "", "estimate_options": "",
              "tables": '["markdown", "xlsx"]'}
    fields.update(over)
    p = folder / "study.toml"
    p.write_text(BASE.format(**fields), encoding="utf-8")
    return p


@pytest.fixture
def study_dir(tmp_path):
    shutil.copy(DATA / "etl" / "twinnings_small.csv", tmp_path / "twinnings.csv")
    shutil.copy(DATA / "etl" / "trade_small.csv", tmp_path / "trade.csv")
    return tmp_path


def _run(capsys, study: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    rc = main(["run", str(study), "--out", str(out), "-q", *extra])
    got = capsys.readouterr()
    assert "Traceback" not in got.err
    return rc, got.out, got.err


def test_success_exit_zero_and_strict_json(study_dir, capsys):
    out = study_dir / "out"
    rc, stdout, _ = _run(capsys, _write_study(study_dir), out)
    assert rc == 0 and "finished" in stdout
    text = (out / "reports" / "small" / "summary.json").read_text()

    def refuse(const):
        raise AssertionError(f"summary.json holds {const}")

    summary = json.loads(text, parse_constant=refuse)
    assert summary["estimates"]["TWFE"][0]["term"] == "ATT"


@pytest.mark.parametrize("case, over, fragment", [
    ("twinnings option typo", {"twinnings_options": 'home_countri = "DEU"'},
     "did you mean 'home_country'"),
    ("unknown estimator option", {"estimate_options": 'options = { levels = 3 }'},
     "unknown option 'levels'"),
    ("years as a string", {"trade_extra": 'years = "1980-2010"'},
     "years must be two years"),
    ("caveats a number", {"study": "caveats = 5"}, "caveats must be"),
    ("leads a boolean", {"sections": "[window]\nleads = true"},
     "window.leads must be a non-negative integer"),
    ("missing cluster column", {"sections": '[inference]\ncluster = "region"'},
     "'region'"),
    ("missing data file", {"trade": "nope.csv"}, "not found"),
])
def test_bad_input_exit_2_without_traceback(study_dir, capsys, case, over, fragment):
    rc, stdout, err = _run(capsys, _write_study(study_dir, **over), study_dir / "out")
    assert rc == EXIT_BAD_INPUT, (case, err)
    assert fragment in err and "twinimpact: error:" in err
    assert "finished" not in stdout


def test_one_element_values_accepted(study_dir, capsys):
    study = _write_study(study_dir, trade_extra='reporters = "DEU"', tables='"markdown"')
    rc, _, err = _run(capsys, study, study_dir / "out")
    assert rc == 0, err
    assert (study_dir / "out" / "reports" / "small" / "results.md").exists()


def test_text_encoding_and_delimiters(study_dir, capsys):
    trade = (study_dir / "trade.csv").read_text(encoding="utf-8")
    (study_dir / "trade.csv").write_text(trade.replace(",", ";"), encoding="utf-8")
    rc, _, err = _run(capsys, _write_study(study_dir), study_dir / "out")
    assert rc == EXIT_BAD_INPUT and 'sep = ";"' in err and "[trade.options]" in err
    rc, _, err = _run(capsys, _write_study(study_dir, trade_options='sep = ";"'),
                      study_dir / "out")
    assert rc == 0, err
    tw = (study_dir / "twinnings.csv").read_text(encoding="utf-8")
    (study_dir / "twinnings.csv").write_bytes(tw.encode("latin-1"))
    rc, _, err = _run(capsys, _write_study(study_dir, trade_options='sep = ";"'),
                      study_dir / "out")
    assert rc == EXIT_BAD_INPUT and 'encoding = "latin-1"' in err
    (study_dir / "empty.csv").write_text("")
    rc, _, err = _run(capsys, _write_study(study_dir, trade="empty.csv",
                                           twinnings_options='encoding = "latin-1"'),
                      study_dir / "out")
    assert rc == EXIT_BAD_INPUT and "empty" in err


def test_no_estimate_exit_3(study_dir, capsys):
    # twinnings whose partners never appear in the trade data: no treated unit anywhere
    (study_dir / "tw_other.csv").write_text(
        "city,country,partner_city,partner_country,established,relation\n"
        "Köln,DEU,Kyoto,JPN,2002,twinning\n", encoding="utf-8")
    rc, stdout, err = _run(capsys, _write_study(study_dir, twinnings="tw_other.csv"),
                           study_dir / "out")
    assert rc == EXIT_NO_ESTIMATE, err
    assert "no estimate" in err and "TWFE" in err and "finished" not in stdout


def test_all_zero_trade_with_log_outcome(study_dir, capsys):
    lines = (study_dir / "trade.csv").read_text().splitlines()
    zero = [lines[0]] + [",".join([*ln.split(",")[:3], "0"]) for ln in lines[1:]]
    (study_dir / "trade.csv").write_text("\n".join(zero) + "\n")
    rc, _, err = _run(capsys, _write_study(study_dir), study_dir / "out")
    assert rc in (EXIT_BAD_INPUT, EXIT_NO_ESTIMATE)
    assert "log" in err and ("asinh" in err or "PPML" in err)


def test_out_pointing_at_a_file(study_dir, capsys):
    target = study_dir / "not_a_folder"
    target.write_text("x")
    rc, _, err = _run(capsys, _write_study(study_dir), target)
    assert rc == EXIT_BAD_INPUT and "--out" in err and "folder" in err
    assert target.read_text() == "x"


def test_ctrl_c_leaves_no_partial_output(study_dir, capsys, monkeypatch):
    import twinimpact.studies.runner as runner

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    # Ctrl-C after the panel and the markdown table were written (to the staging folder)
    monkeypatch.setattr(runner, "event_study_figure", interrupted)
    study = _write_study(study_dir, estimate_options="", sections="",
                         tables='["markdown"]').read_text()
    study = study.replace('estimator = "twfe"', 'estimator = "event_study"')
    (study_dir / "study.toml").write_text(study)
    out = study_dir / "out"
    rc, _, err = _run(capsys, study_dir / "study.toml", out)
    assert rc == EXIT_INTERRUPTED and "interrupted" in err
    left = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert left == []


def test_internal_error_no_traceback_unless_debug(study_dir, capsys, monkeypatch):
    import twinimpact.estimators.twfe as twfe_mod

    def boom(*a, **k):
        raise ZeroDivisionError("kaboom")

    monkeypatch.setattr(twfe_mod, "twfe", boom)
    study = _write_study(study_dir)
    rc, _, err = _run(capsys, study, study_dir / "out")
    assert rc == 1 and "kaboom" in err and "--debug" in err
    with pytest.raises(ZeroDivisionError):
        main(["run", str(study), "--out", str(study_dir / "out"), "-q", "--debug"])


def test_headline_failure_exit_3_other_estimates_kept(study_dir, capsys):
    text = _write_study(study_dir).read_text()
    text = text.replace('[output]', '[[estimate]]\nlabel = "bad"\nestimator = "twfe"\n'
                        'options = { vcov = "robust" }\n\n[output]\nheadline = "bad"')
    (study_dir / "study.toml").write_text(text)
    rc, _stdout, err = _run(capsys, study_dir / "study.toml", study_dir / "out")
    assert rc == EXIT_NO_ESTIMATE and "headline estimate 'bad'" in err
    summary = json.loads((study_dir / "out" / "reports" / "small" / "summary.json").read_text())
    assert "TWFE" in summary["estimates"] and "bad" in summary["failures"]


def test_summary_json_carries_the_typed_pretrend_test(study_dir, capsys):
    text = _write_study(study_dir).read_text()
    text = text.replace('[output]', '[[estimate]]\nlabel = "ES"\nestimator = "event_study"\n\n'
                        '[output]')
    (study_dir / "study.toml").write_text(text)
    rc, _stdout, _err = _run(capsys, study_dir / "study.toml", study_dir / "out")
    assert rc == 0
    summary = json.loads((study_dir / "out" / "reports" / "small" / "summary.json").read_text())
    assert "TWFE" not in summary["pretrend_tests"]  # a static fit has no pre-trend test
    pt = summary["pretrend_tests"]["ES"]
    assert pt["kind"] in ("Wald chi2", "F")
    assert pt["df"] == pt["n_coefficients"] == len(pt["terms"]) >= 1
    assert 0.0 <= pt["p_value"] <= 1.0 and pt["statistic"] >= 0.0
    assert all(t.startswith("rel_time") or "-" in t for t in pt["terms"])
