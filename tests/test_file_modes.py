"""Files the package writes respect the umask (0644 under 022, 0640 under 027) and are
still written atomically (no temporary file left beside them)."""

from __future__ import annotations

import os
import stat
from types import SimpleNamespace

import pytest

import twinimpact as ti
from twinimpact._io import atomic_path, atomic_write_text, current_umask, default_file_mode
from twinimpact.studies.runner import StudyRun, write_outputs
from twinimpact.studies.spec import parse_study

KW = dict(outcome="lemp", unit="countyreal", time="year", cohort="first.treat")


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(old)


def _mode(p) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077], ids=oct)
def test_atomic_write_mode_follows_umask(tmp_path, umask, mask):
    umask(mask)
    assert current_umask() == mask
    assert default_file_mode() == 0o666 & ~mask
    p = atomic_write_text(tmp_path / "a.txt", "x")
    assert _mode(p) == 0o666 & ~mask
    # same mode as a file created the ordinary way under the same umask
    (tmp_path / "plain.txt").write_text("x")
    assert _mode(p) == _mode(tmp_path / "plain.txt")


def test_atomic_write_leaves_no_temporary_and_keeps_old_file_on_failure(tmp_path, umask):
    umask(0o022)
    p = atomic_write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["a.txt"]


@pytest.fixture(scope="module")
def result(mpdta):
    small = mpdta[mpdta["countyreal"].isin(mpdta["countyreal"].unique()[:60])]
    return ti.event_study(small, **KW), small


@pytest.mark.parametrize("mask", [0o022, 0o027], ids=oct)
def test_panel_tables_and_figures_follow_umask(tmp_path, umask, result, mask):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from twinimpact.report.figures import save_figure

    umask(mask)
    res, frame = result
    data = ti.Panel(frame.head(50), {"study": {"name": "t"}}).to_parquet(
        tmp_path / "data" / "panel.parquet")
    for fmt, ext in (("markdown", "md"), ("xlsx", "xlsx"), ("html", "html"),
                     ("latex", "tex")):
        ti.table({"es": res}, format=fmt, path=tmp_path / f"results.{ext}")
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    save_figure(fig, tmp_path / "f.svg", "svg")
    plt.close(fig)
    files = sorted(tmp_path.iterdir()) + sorted(data.parent.iterdir())
    files = [f for f in files if f.is_file()]
    assert {f.name for f in files} == {"results.md", "results.xlsx", "results.html",
                                       "results.tex", "f.svg", "panel.parquet",
                                       "manifest.json"}
    want = oct(0o666 & ~mask)
    assert {f.name: oct(_mode(f)) for f in files} == {f.name: want for f in files}


@pytest.mark.slow
def test_every_study_output_follows_umask(tmp_path, umask, result):
    """A whole study's outputs (tables, figures, summary.json, report) under umask 027."""
    mask = 0o027
    umask(mask)
    res, frame = result
    doc = {"study": {"name": "t", "title": "Modes"},
           "twinnings": {"path": "a.csv"}, "trade": {"path": "b.csv"},
           "estimate": [{"label": "Event study", "estimator": "event_study"}],
           "output": {"tables": ["markdown", "xlsx", "html", "latex"],
                      "figures": ["png", "svg"], "report": True}}
    run = StudyRun(study=parse_study(doc), panel=SimpleNamespace(manifest={}),
                   analysis_frame=frame, results={"Event study": res}, failures={},
                   outputs={})
    write_outputs(run, tmp_path, write_report=True)
    files = sorted(tmp_path.iterdir())
    assert {f.name for f in files} == {"results.md", "results.xlsx", "results.html",
                                       "results.tex", "event_study.png", "event_study.svg",
                                       "summary.json", "report.html"}
    want = oct(0o666 & ~mask)
    assert {f.name: oct(_mode(f)) for f in files} == {f.name: want for f in files}
