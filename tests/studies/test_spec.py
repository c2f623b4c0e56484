"""Study files: validation errors name the key and the fix; bundled studies parse."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from twinimpact.cli import bundled_studies, main
from twinimpact.errors import SpecificationError
from twinimpact.studies.spec import load_study, parse_study

ROOT = Path(__file__).resolve().parents[1]


def _doc(**over):
    doc = {
        "study": {"name": "s1", "title": "T"},
        "twinnings": {"path": "a.csv"},
        "trade": {"path": "b.csv"},
        "estimate": [{"label": "TWFE", "estimator": "twfe"}],
    }
    for k, v in over.items():
        doc[k] = v
    return doc


def test_minimal_defaults():
    s = parse_study(_doc())
    assert s.level == "country_pair" and s.transform == "log" and s.alpha == 0.05
    assert s.tables == ("markdown", "xlsx") and s.estimates[0].estimator == "twfe"


@pytest.mark.parametrize("over, fragment", [
    ({"studyy": {}}, "unknown section [studyy]"),
    ({"panel": {"levle": "x"}}, "did you mean 'level'?"),
    ({"panel": {"level": "city"}}, "panel.level: expected one of"),
    ({"outcome": {"transform": "logg"}}, "use 'log'"),
    ({"estimate": [{"estimator": "twfee"}]}, "did you mean 'twfe'?"),
    ({"estimate": []}, "at least one [[estimate]]"),
    ({"estimate": [{"estimator": "twfe"}, {"estimator": "twfe"}]}, "duplicate estimate label"),
    ({"window": {"leads": -1}}, "window.leads must be a non-negative integer"),
    ({"inference": {"alpha": 5}}, "inference.alpha: expected a number in (0, 1)"),
    ({"study": {"name": "bad name!", "title": "T"}}, "study.name must be letters"),
    ({"study": {"name": "x"}}, "study.title is required"),
    ({"trade": {}}, "[trade] needs a path"),
    ({"output": {"headline": "nope"}}, "headline must be the label"),
])
def test_validation_errors_name_key_and_fix(over, fragment):
    with pytest.raises(SpecificationError) as info:
        parse_study(_doc(**over))
    assert fragment in str(info.value)
    assert "Where: study key [" in str(info.value)


def test_bad_toml_and_missing_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[study\nname=1")
    with pytest.raises(SpecificationError, match="not valid TOML"):
        load_study(p)
    with pytest.raises(SpecificationError, match="study file not found"):
        load_study(tmp_path / "nope.toml")


def test_bundled_studies_parse():
    studies = bundled_studies()
    assert "de_exports" in studies
    for path in studies.values():
        s = load_study(path)
        assert s.name == path.stem
        tomllib.loads(path.read_text())


def test_cli_list(capsys):
    assert main(["list"]) == 0
    assert "de_exports" in capsys.readouterr().out


def test_cli_unknown_study(capsys):
    assert main(["run", "no_such_study", "-q"]) == 2
    assert "no study file 'no_such_study'" in capsys.readouterr().err
