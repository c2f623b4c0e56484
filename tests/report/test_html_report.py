"""The HTML study report: self-contained, escaped, headline/tables/figures present, and
rendered in headless Chromium with nothing failing to load."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import twinimpact as ti
from twinimpact.report.headline import headline_sentence, pick_headline
from twinimpact.report.html import render_report, write_report
from twinimpact.studies.runner import StudyRun, credibility_of_run
from twinimpact.studies.spec import parse_study

KW = dict(outcome="lemp", unit="countyreal", time="year", cohort="first.treat")
EVIL = "<script>alert(1)</script>"


def _study(**over):
    doc = {"study": {"name": "t", "title": f"Report {EVIL}", "description": EVIL,
                     "caveats": [f"caveat {EVIL}"], **over},
           "twinnings": {"path": "a.csv"}, "trade": {"path": "b.csv"},
           "estimate": [{"label": "TWFE (static)", "estimator": "twfe"},
                        {"label": "Event study", "estimator": "event_study"}],
           "output": {"headline": "Event study",
                      "headline_subject": "Teen employment in a county"}}
    return parse_study(doc)


@pytest.fixture(scope="module")
def run(mpdta):
    results = {"TWFE (static)": ti.twfe(mpdta, **KW),
               "Event study": ti.event_study(mpdta, **KW)}
    panel = SimpleNamespace(manifest={
        "steps": {"trade": {"n_in": 2510, "n_out": 2500, "dropped": {f"bad {EVIL}": 10}}},
        "inputs": {"trade": {"kind": "file", "path": f"/x/{EVIL}.csv", "rows": 2510,
                             "sha256": "ab" * 32}}})
    run = StudyRun(study=_study(), panel=panel, analysis_frame=mpdta, results=results,
                   failures={"Callaway": f"failed {EVIL}"}, outputs={},
                   diagnostics={"outcome_dropped_rows": {"value <= 0": 4}},
                   warnings=[f"warn {EVIL}"])
    run.credibility = credibility_of_run(run)  # as run_study does
    return run


def test_headline_numbers_come_from_the_result(run):
    h = pick_headline(run.results, run.study)
    assert h.label == "Event study"
    row = run.results["Event study"].to_frame().set_index("term").loc["ATT"]
    assert h.estimate == row["estimate"]
    sentence, sure = headline_sentence(h, run.study)
    pct = 100 * (np.exp(row["estimate"]) - 1)
    assert f"{abs(pct):.1f}% lower" in sentence
    assert f"[{100 * (np.exp(row['ci_lower']) - 1):.1f}%" in sentence
    assert "on average over the 4 years after the first twinning" in sentence
    assert "excludes no change" in sure


def test_self_contained_and_escaped(run):
    page = render_report(run)
    assert EVIL not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script" not in page.lower()
    # the event study plus the trust section's pictures (pre-trend power, HonestDiD), all
    # embedded
    assert page.count('src="data:image/png;base64,') == page.count("<img ") == 3
    for fid in ("event-study", "pretrend-power-figure", "honest-did-figure"):
        assert f'id="{fid}"' in page
    assert "trade: 2,510 rows in, 2,500 used" in page
    assert "not used: bad &lt;script&gt;" in page
    tidy = run.results["TWFE (static)"].to_frame().set_index("term")
    assert f"{tidy.loc['ATT', 'estimate']:.4f}".replace("-", "\u2212") in page


#: warnings and a failure as the estimators raise them: dict dumps, option names, pointers
#: into result objects (the report must turn them into plain words)
RAW_WARNINGS = [
    "Poisson ETWFE: etwfe: dropped 1,459 row(s) without a comparison: 1,459 rows: treated in "
    "or before the first period 1991 (no pre-treatment period). Counts per reason: "
    "result.diagnostics['dropped_rows'].",
    "Callaway-Sant'Anna: callaway_santanna: some cohorts are small (fewer than 5 units = "
    "number of covariates + 5, R did's threshold): 1994 (1 unit), 1996 (3 units). Their "
    "ATT(g,t) may be imprecise or not computable.",
    "Callaway-Sant'Anna: callaway_santanna: 23 ATT(g,t) could not be computed and are NaN: "
    "ATT(1999,1992): no observations of the cohort in period t…. Aggregate with na_rm=True "
    "to drop them.",
    "Imputation: imputation: horizon(s) 21-69, 71-101 have no treated observations; their "
    "estimates are NaN.",
    "ETWFE: etwfe: 1 term(s) could not be computed and are NaN (ATT(1999,2009)): cell "
    "without a comparison. Fix: the reasons are in result.diagnostics['notes'] and "
    "result.diagnostics['dropped_rows'].",
    "Other: some_estimator: an unknown warning {'a': 1} with base_period='varying' and "
    "['x', 'y'] (e.g. this). Second sentence with result.vcov.",
]


def test_policy_part_is_plain_language(run):
    """No Python reprs, dict dumps, option names or internal labels above the technical
    appendix; the appendix has the warnings in full but no reprs or pointers into Python
    objects (tests/report/plain_language.py)."""
    from .plain_language import problems, split_report

    messy = StudyRun(**{**run.__dict__, "warnings": [*run.warnings, *RAW_WARNINGS],
                        "failures": {"bad": "vcov: expected one of 'iid', 'hetero', "
                                            "'cluster', got 'robust'. Fix: pass "
                                            "vcov='cluster'."}})
    page = render_report(messy)
    assert problems(page) == []
    policy, appendix = split_report(page)
    # what the reader gets instead
    assert "1,459 rows were left out because nothing could be compared with them: 1,459 " \
           "twinned in or before 1991" in policy
    assert "Years after twinning 21-69, 71-101 have no twinned observations" in policy
    assert "Rests on:" in policy and "clustered by countyreal (500 clusters)" in policy
    # the technical appendix keeps the technical words, without pointers into objects
    assert "1994 (1 unit), 1996 (3 units)" in appendix and "base_period" in appendix
    assert "vcov='cluster'" in appendix
    assert "result.diagnostics" not in page and "Counts per reason" not in page
    # the check itself fails on what it is meant to catch
    bad = ("<html><body><p>Seen: {'x': 1} p_value influence_function base_period='varying' "
           "result.diagnostics NaN ATT(g,t) twinimpact.report.html</p>"
           "<section id=\"appendix\"><p>[' "
           "&lt;Foo object at 0x1&gt; np.float64(1.0)</p></section></body></html>")
    found = " | ".join(problems(bad))
    for what in ("dict dump", "'p_value'", "'influence_function'", "option assignment",
                 "pointer into a Python object", "NaN", "ATT(g,t) label",
                 "appendix: list of strings dump", "appendix: object repr",
                 "appendix: numpy repr", "dotted Python path"):
        assert what in found, what
    assert problems("<p>read data/raw/twin_towns_de.csv and study de_exports</p>",
                    allow=("de_exports",)) == []


def test_simulated_banner_first(run, tmp_path):
    sim = StudyRun(**{**run.__dict__, "study": _study(simulated=True)})
    page = render_report(sim)
    body = page.split("<body>", 1)[1]
    assert body.lstrip().startswith('<p class="banner" id="simulated">SIMULATED DATA')


_ORDER = {"holds": 0, "weak": 1, "fails": 2}


def _assert_verdict_matches(c: dict) -> None:
    """The verdict shown follows from the numbers shown, by the documented thresholds."""
    from twinimpact.diagnostics import credibility as cr

    def grade(v, holds, weak, higher=True):
        if higher:
            return "holds" if v >= holds else "weak" if v >= weak else "fails"
        return "holds" if v < holds else "weak" if v < weak else "fails"

    d, v = c["detail"], c["verdict"]
    if v == "not applicable":
        return
    if c["check"] == "Pre-trend test":
        assert v == grade(d.get("extension_p_value", d["p_value"]), cr.PRETEST_P_HOLDS,
                          cr.PRETEST_P_WEAK), c
    elif c["check"] == "Power of the pre-trend test":
        assert v == grade(d["power"], cr.POWER_HOLDS, cr.POWER_WEAK), c
    elif c["check"].startswith("Sensitivity"):
        assert v == grade(d["breakdown_mbar"], cr.BREAKDOWN_HOLDS, cr.BREAKDOWN_WEAK), c
    elif c["check"].startswith("Comparisons with already-twinned"):
        assert v == grade(d["forbidden_share"], cr.FORBIDDEN_HOLDS, cr.FORBIDDEN_WEAK,
                          higher=False), c


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or \
        shutil.which("google-chrome")


@pytest.mark.browser
@pytest.mark.slow
def test_renders_in_headless_chromium(run, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("Chromium not installed (.ci/run installs Debian's chromium)")
    report = write_report(run, tmp_path / "report.html")
    # a copy with an inspection script: did every image load, which headings are visible
    probe = tmp_path / "probe.html"
    probe_js = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const checks = [...document.querySelectorAll('#trust tr.check')].map(r => ({
      estimator: r.dataset.estimator, check: r.dataset.check, verdict: r.dataset.verdict,
      detail: JSON.parse(r.dataset.detail), visible: r.offsetHeight > 0}));
  const line = document.getElementById('trust-line');
  const out = {n_img: imgs.length, checks: checks,
               trust_line: line ? line.innerText : '',
               trust_line_verdict: line ? line.dataset.verdict : '',
               trust_after_headline: !!(line && line.previousElementSibling &&
                                        line.previousElementSibling.id === 'headline'),
               overall: (document.getElementById('overall-verdict') || {dataset: {}}).dataset.verdict,
               broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length,
               headline: (document.getElementById('headline') || {}).innerText || '',
               tables: document.querySelectorAll('table').length,
               rows: document.querySelectorAll('#estimates tbody tr').length,
               scripts_injected: document.querySelectorAll('script').length - 1};
  const pre = document.createElement('pre'); pre.id = 'probe-result';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>"""
    probe.write_text(report.read_text().replace("</body>", probe_js + "</body>"))
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="probe-result">(.*?)</pre>', proc.stdout, re.S)
    assert m, proc.stderr[-2000:]
    got = json.loads(m.group(1).replace("&quot;", '"'))
    assert got["n_img"] == 3 and got["broken"] == 0
    # "Can we trust this?": beside the headline, and every verdict agrees with its numbers
    assert got["trust_after_headline"] and "Can we trust this?" in got["trust_line"]
    assert got["trust_line_verdict"] == got["overall"]
    checks = got["checks"]
    assert checks and all(c["visible"] for c in checks)
    assert {c["check"] for c in checks} >= {"Pre-trend test", "Power of the pre-trend test",
                                            "Agreement across methods"}
    for c in checks:
        _assert_verdict_matches(c)
    worst = max((c["verdict"] for c in checks if c["estimator"] in ("Event study",
                                                                       "all methods")
                 and c["verdict"] in _ORDER), key=_ORDER.get)
    assert got["overall"] == worst
    assert "Teen employment in a county" in got["headline"]
    assert got["tables"] >= 1 and got["rows"] >= 2
    assert got["scripts_injected"] == 0
    shot = tmp_path / "shot.png"
    subprocess.run([*cmd[:-2], f"--screenshot={shot}", "--window-size=1200,2400",
                    report.as_uri()], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000
    Path("/tmp/twinimpact_report_shot.png").write_bytes(shot.read_bytes())


def test_disagreement_is_flagged(run):
    from twinimpact.report.headline import conflicting_signs, other_estimates
    from twinimpact.results import VcovSpec, make_result

    h = pick_headline(run.results, run.study)
    assert not conflicting_signs(run.results, run.study, h)
    assert 'id="disagreement"' not in render_report(run)
    opposite = make_result("twfe", {"ATT": 0.5}, [[0.01]], VcovSpec("iid"), 10)
    res = {**run.results, "Other": opposite}
    assert conflicting_signs(res, run.study, h)
    lines = other_estimates(res, run.study, h)
    assert any(line.startswith("Other: 64.9%") for line in lines)
    page = render_report(StudyRun(**{**run.__dict__, "results": res}))
    assert 'id="disagreement"' in page


@pytest.mark.parametrize("subject, verb", [
    ("The outcome", "was"), ("German exports to a partner country", "were"),
    ("Trade flows between Germany and a newly twinned partner country", "were"),
    ("Simulated Australian imports from the twinned cities", "were"),
    ("Trade between Germany and its partners", "was"), ("Gross output", "was")])
def test_headline_verb_agrees_with_subject(subject, verb):
    from twinimpact.report.headline import _verb
    assert _verb(subject) == verb



def _pre_run(estimator, coef, cov, alpha=0.05):
    """A run with one result-shaped object: pre-twinning rows (normal p-values) and the
    package's own joint Wald test of them."""
    import math

    import pandas as pd

    from twinimpact.results import wald_pretrend_test
    se = np.sqrt(np.diag(cov))
    p = [math.erfc(abs(b / s) / math.sqrt(2)) for b, s in zip(coef, se, strict=True)]
    frame = pd.DataFrame({"term": [f"pre{k}" for k in range(len(coef))],
                          "rel_time": -np.arange(len(coef), 0, -1), "estimate": coef,
                          "std_error": se, "p_value": p})
    test = wald_pretrend_test(list(frame["term"]), np.asarray(coef), cov,
                              estimator=estimator)
    res = SimpleNamespace(estimator=estimator, pretrend_test=test, to_frame=lambda: frame)
    return SimpleNamespace(results={"M": res}, study=SimpleNamespace(alpha=alpha)), test


@pytest.mark.parametrize("estimator", ["imputation", "event_study"])
def test_pretrend_count_points_to_the_joint_test_when_they_disagree(estimator):
    """de_exports_baci: 8 of 8 imputation leads differ from zero one by one while the joint
    test gives p = 0.24 -- possible only when the estimates move together. The line must say
    so and send the reader to the joint test, not leave two contradicting statements."""
    from twinimpact.report.html import _p, _pretests
    k, s, rho = 8, 0.155, 0.97
    cov = s**2 * (rho * np.ones((k, k)) + (1 - rho) * np.eye(k))
    run, test = _pre_run(estimator, np.full(k, 0.37), cov)
    assert test.p_value > 0.05
    count = next(x for x in _pretests(run) if "of 8 pre-twinning" in x)
    assert "8 of 8" in count and "each tested on its own" in count
    assert "the joint test takes that into account and is the one to read" in count
    assert f"(joint test above, p-value {_p(test.p_value)})" in count
    assert ("same earlier baseline" in count) == (estimator == "imputation")
    # independent estimates that are individually and jointly significant: no such remark
    run, test = _pre_run(estimator, np.full(k, 0.37), s**2 * np.eye(k))
    assert test.p_value < 0.05
    count = next(x for x in _pretests(run) if "of 8 pre-twinning" in x)
    assert "8 of 8" in count and "is the one to read" not in count
