"""Tables and plots: content checked against the results they came from."""

from __future__ import annotations

import html

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import twinimpact as ti
from twinimpact.errors import SpecificationError
from twinimpact.results import VcovSpec, make_result

KW = dict(outcome="lemp", unit="countyreal", time="year", cohort="first.treat")


@pytest.fixture(scope="module")
def fits(mpdta):
    return {"Static": ti.twfe(mpdta, **KW), "Dynamic": ti.event_study(mpdta, **KW)}


def test_frame_matches_results(fits):
    wide = ti.table(fits, format="frame")
    for name, r in fits.items():
        tidy = r.to_frame().set_index("term")
        for term in tidy.index:
            assert wide.loc[term, (name, "estimate")] == tidy.loc[term, "estimate"]
            assert wide.loc[term, (name, "std_error")] == tidy.loc[term, "std_error"]
    # event-time rows sorted by rel_time, ATT last
    assert list(wide.index)[-1] == "ATT"
    assert list(wide.index)[:3] == ["rel_time=-4", "rel_time=-3", "rel_time=-2"]


def test_markdown_content(fits):
    md = ti.table(fits)
    att = fits["Static"].params["ATT"]
    se = fits["Static"].std_errors["ATT"]
    assert f"{att:.4f}".replace("-", "\u2212") + "***" in md
    assert f"({se:.4f})" in md
    assert "| Observations | 2,500 | 2,500 |" in md


def test_latex_and_html_escape():
    r = make_result("x", pd.Series({"<script>alert(1)</script>": 1.0, "a_b & c%": 2.0}),
                    np.eye(2), VcovSpec("iid"), 10)
    h = ti.table({"<b>m</b>": r}, format="html")
    assert "<script>" not in h and html.escape("<script>alert(1)</script>") in h
    assert "&lt;b&gt;m&lt;/b&gt;" in h
    tex = ti.table(r, format="latex")
    assert r"a\_b \& c\%" in tex


def test_xlsx_written_atomically(tmp_path, fits):
    path = tmp_path / "out" / "t.xlsx"
    ti.table(fits, format="xlsx", path=path)
    sheets = pd.read_excel(path, sheet_name=None)
    assert set(sheets) == {"table", "estimates", "notes"}
    est = sheets["estimates"].set_index("term")
    assert est.loc["ATT", "Static | estimate"] == pytest.approx(fits["Static"].params["ATT"])
    assert not any(p.name.endswith(".tmp") for p in path.parent.iterdir())


def test_text_written_to_path(tmp_path, fits):
    p = tmp_path / "t.md"
    text = ti.table(fits, format="markdown", path=p)
    assert p.read_text() == text


def test_bad_format_and_inputs(fits):
    with pytest.raises(SpecificationError, match="format: expected one of"):
        ti.table(fits, format="docx")
    with pytest.raises(SpecificationError, match="needs a file"):
        ti.table(fits, format="xlsx")
    with pytest.raises(SpecificationError, match="estimation results"):
        ti.table({"a": 1.0})


def test_plot_event_study_overlays(fits):
    fig, ax = plt.subplots()
    out = ti.plot_event_study({"TWFE": fits["Dynamic"], "again": fits["Dynamic"]}, ax=ax)
    assert out is ax
    assert len(ax.get_legend().get_texts()) == 2
    plt.close(fig)
    with pytest.raises(SpecificationError, match="event-time"):
        ti.plot_event_study(fits["Static"])


def test_plain_labels():
    from twinimpact.report.tables import plain_term

    assert plain_term("rel_time=-2") == "2 years before"
    assert plain_term("rel_time=1") == "1 year after"
    assert plain_term("rel_time=0") == "Year of twinning"
    assert plain_term("ATT") == "Average effect after twinning"
    assert plain_term("cohort=2004") == "Twinned in 2004"
    assert plain_term("lpop") == "lpop"


def test_plain_table_for_readers(fits):
    """plain_labels: the standard-error row in words, rows no result estimates left out,
    regressor names in words; the default table keeps the tidy names economists use."""
    from twinimpact.report.tables import plain_regressor, plain_vcov_label

    with pytest.warns(ti.errors.NotComputableWarning, match="x_gap"):
        nan = make_result("twfe", {"ATT": 0.1, "x_gap": np.nan},
                          [[0.01, np.nan], [np.nan, np.nan]], VcovSpec("influence_function"), 10)
    md = ti.table({**fits, "Gap": nan}, plain_labels=True)
    assert "clustered by countyreal (500 clusters)" in md and "from the influence function" in md
    assert "cluster (countyreal: 500)" not in md and "influence_function" not in md
    assert "x_gap" not in md and "X gap" not in md  # no method estimates it: not shown
    assert "years that no method could estimate are not shown" in md
    raw = ti.table({**fits, "Gap": nan})
    assert "cluster (countyreal: 500)" in raw and "| x_gap |" in raw
    assert plain_vcov_label(VcovSpec("imputation_conservative", cluster=("pair_id",),
                                     n_clusters=(744,))) == \
        "conservative (Borusyak, Jaravel & Spiess), clustered by pair (744 clusters)"
    assert plain_regressor("intl_border_1986") == "International border \u00d7 1986"
    assert plain_regressor("n_twinnings") == "Number of twinnings"
    assert plain_regressor("Effect_3") == "Effect, period 3 since the change"


def test_message_helpers_write_words_not_reprs():
    from twinimpact.errors import format_counts, format_values

    assert format_values([21, 22, 23, 25, 30, 31]) == "21-23, 25, 30, 31"
    assert format_values(["1994", "1996"]) == "1994, 1996"
    assert format_values(range(100), limit=3) == "0-99"
    assert format_values([1.5, "a"]) == "1.5, a"
    assert format_values(list(range(0, 40, 2)), limit=3) == "0, 2, 4, ... (20 in all)"
    assert format_counts({"missing y": 1459, "x": 1}) == "1,459 rows: missing y; 1 row: x"
    assert format_counts({"u": 2}, noun="unit") == "2 units: u"


def test_study_run_is_tabled_and_plotted_by_its_results(fits, mpdta):
    """ti.run_study returns a StudyRun: ti.table shows one column per result and
    ti.plot_event_study draws its event-study results (a named error when it has none)."""
    from twinimpact.studies.runner import StudyRun

    run = StudyRun(study=None, panel=None, analysis_frame=mpdta, results=dict(fits),
                   failures={}, outputs={})
    wide = ti.table({"run": run}, "frame")
    assert set(wide.columns.get_level_values(0)) == {"run: Static", "run: Dynamic"}
    ax = ti.plot_event_study({"run": run})
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["run: Dynamic"]
    plt.close(ax.figure)
    static_only = StudyRun(study=None, panel=None, analysis_frame=mpdta,
                           results={"Static": fits["Static"]}, failures={}, outputs={})
    with pytest.raises(SpecificationError, match="none of the results in this StudyRun"):
        ti.plot_event_study(static_only)
