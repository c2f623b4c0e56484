"""HTML for the "Can we trust this?" section (checks: :mod:`twinimpact.diagnostics.credibility`).

Every row carries ``data-verdict`` and the numbers its verdict rests on as ``data-*``
attributes, so a test (or a reader's script) can check that verdicts agree with numbers.
"""

from __future__ import annotations

import html
import json
import math
from types import SimpleNamespace
from typing import Any

HOLDS, WEAK, FAILS, NA = "holds", "weak", "fails", "not applicable"

__all__ = ["TRUST_CSS", "appendix_html", "trust_line_html", "trust_section_html"]

e = html.escape

TRUST_CSS = """
.verdict{display:inline-block;min-width:6.5rem;text-align:center;border-radius:3px;
padding:0 .4rem;font-weight:600;font-size:.85rem}
.v-holds{background:#e3f1e6;color:#1d5e2c}.v-weak{background:#fff3d6;color:#7a5200}
.v-fails{background:#fbe3e3;color:#8a1c1c}.v-na{background:#eee;color:#555}
#trust-line{font-size:1.02rem;margin:.4rem 0 .8rem}
table.trust td,table.trust th{text-align:left;vertical-align:top}
table.trust td.words{max-width:38rem}
.scroll{overflow-x:auto;max-width:100%}
table.appendix-checks td,table.appendix-checks th{vertical-align:top}
table.appendix-checks td:nth-child(-n+4),table.appendix-checks th:nth-child(-n+4){
text-align:left}
table.appendix-checks td:nth-child(2){min-width:11rem}
table.appendix-checks td:nth-child(4){min-width:24rem}
"""

_CLASS = {HOLDS: "v-holds", WEAK: "v-weak", FAILS: "v-fails", NA: "v-na"}


def _badge(verdict: str) -> str:
    return f'<span class="verdict {_CLASS.get(verdict, "v-na")}">{e(verdict)}</span>'


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, int | float | str | bool) or v is None:
        return v
    return str(v)


def trust_line_html(cred: Any) -> str:
    """The one-line overall verdict placed beside the headline."""
    return (f'<p id="trust-line" data-verdict="{e(cred.overall)}"><strong>Can we trust '
            f"this?</strong> {_badge(cred.overall)} {e(cred.overall_sentence)} "
            '<a href="#trust">What the checks say</a></p>')


def trust_section_html(cred: Any) -> str:
    """The section: one row per estimator and check, verdict badge, sentence."""
    rows = []
    for c in cred.checks:
        data = e(json.dumps({k: _jsonable(v) for k, v in c.detail.items()}))
        rows.append(
            f'<tr class="check" data-estimator="{e(c.estimator)}" data-check="{e(c.name)}" '
            f'data-verdict="{e(c.verdict)}" data-detail="{data}">'
            f"<th scope=\"row\">{e(c.estimator)}</th><td>{e(c.name)}</td>"
            f"<td>{_badge(c.verdict)}</td><td class=\"words\">{e(c.sentence)}"
            f'<br><span class="small">Rests on: {e(c.rests_on)}</span></td></tr>')
    intro = ("Each method is checked the way a referee would: were treated and comparison "
             "partners on parallel paths before twinning, could the pre-trend test have "
             "seen a drift that matters, how large a violation of parallel trends the "
             "conclusion survives, which comparisons the estimate rests on, and whether "
             "there are enough independent treated units. Verdicts: <em>holds</em>, "
             "<em>weak</em>, <em>fails</em>; thresholds in the technical appendix.")
    return (f'<section id="trust"><h2>Can we trust this?</h2>'
            f'<p id="overall-verdict" data-verdict="{e(cred.overall)}">'
            f"{_badge(cred.overall)} {e(cred.overall_sentence)}</p>"
            f'<p class="small">{intro}</p>'
            '<table class="trust"><thead><tr><th>Method</th><th>Check</th><th>Verdict</th>'
            "<th>In plain words</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table></section>")


#: reader labels of the columns of ``Credibility.to_frame()`` in the appendix table
APPENDIX_LABELS = {
    "estimator": "Method", "check": "Check", "verdict": "Verdict",
    "technical basis": "Technical basis", "statistic": "Test statistic",
    "df": "Degrees of freedom", "p_value": "p-value", "kind": "Test",
    "slope": "Trend slope per year", "power": "Power", "size": "Size (power with parallel "
    "trends)", "att": "Overall effect", "att_se": "Standard error of the overall effect",
    "breakdown_mbar": "Breakdown value (Mbar)", "spread": "Range of overall estimates",
    "median_se": "Median standard error", "forbidden_share": "Weight on already-twinned "
    "comparisons", "twfe_balanced": "Two-way fixed-effects estimate (balanced block)",
    "cluster": "Cluster column", "treated_clusters": "Treated clusters", "clusters": "Clusters",
    "wild_bootstrap_p": "Wild bootstrap p-value", "usual_p": "Usual p-value",
    "extension_statistic": "Extension: statistic", "extension_df": "Extension: degrees of "
    "freedom", "extension_wald_p_value": "Extension: Wald p-value", "extension_p_value":
    "Extension: p-value used", "extension_kind": "Extension: test",
    "n_units_balanced": "Units in the balanced block",
}
_COMPARISON_WORDS = {"earlier_vs_later": "earlier vs later twinned",
                     "later_vs_earlier": "later vs earlier twinned (already twinned as "
                                         "comparison)",
                     "treated_vs_never": "twinned vs never twinned"}


def appendix_label(column: str) -> str:
    """Reader label of an appendix column (no internal names such as ``p_value``)."""
    if column in APPENDIX_LABELS:
        return APPENDIX_LABELS[column]
    for prefix, word in (("weight_", "Weight"), ("estimate_", "Estimate")):
        if column.startswith(prefix):
            key = column[len(prefix):]
            return f"{word}: {_COMPARISON_WORDS.get(key, key.replace('_', ' '))}"
    text = column.replace("_", " ")
    return text[:1].upper() + text[1:]


def appendix_html(cred: Any, raw_warnings: list[str]) -> str:
    """Technical appendix: the numbers behind each verdict, thresholds, the warnings in
    full (without the pointers to Python objects meant for library users)."""
    from .plain import report_warning

    parts = ['<section id="appendix"><h2>Technical appendix</h2>']
    if cred is not None:
        c = SimpleNamespace(**cred.thresholds)
        frame = cred.to_frame().drop(columns=["in words", "rests on"], errors="ignore")
        frame = frame.rename(columns=appendix_label)
        parts.append("<h3>Credibility checks: numbers</h3><p class=\"small\">The verdicts "
                     "above in the terms an economist would use: the test behind each, the "
                     "option names of the methods, and the numbers.</p><div class=\"scroll\">"
                     + frame.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}",
                                     classes="appendix-checks", border=0) + "</div>")
        parts.append(
            "<h3>Thresholds</h3><ul>"
            f"<li>Pre-trend test: holds if p &ge; {c.PRETEST_P_HOLDS}, weak if p &ge; "
            f"{c.PRETEST_P_WEAK}, else fails.</li>"
            f"<li>Power against the trend that moves the ATT by one SE (Roth 2022): holds "
            f"&ge; {c.POWER_HOLDS:.0%}, weak &ge; {c.POWER_WEAK:.0%}.</li>"
            f"<li>HonestDiD breakdown Mbar (relative magnitudes, C-LF): holds &ge; "
            f"{c.BREAKDOWN_HOLDS}, weak &ge; {c.BREAKDOWN_WEAK}.</li>"
            f"<li>Goodman-Bacon weight on already-treated controls: holds &lt; "
            f"{c.FORBIDDEN_HOLDS:.0%}, weak &lt; {c.FORBIDDEN_WEAK:.0%}.</li>"
            f"<li>Treated clusters: holds &ge; {c.CLUSTERS_ENOUGH}; below, the wild cluster "
            f"bootstrap ({c.WCB_REPS} Rademacher draws) must agree with the usual p-value "
            f"and at least {c.CLUSTERS_FEW} clusters be treated.</li>"
            "<li>Agreement: fails with significant effects of opposite sign; weak when the "
            "estimates span more than two median standard errors.</li></ul>")
    if raw_warnings:
        full = list(dict.fromkeys(report_warning(w) for w in raw_warnings))
        parts.append("<h3>Warnings in full</h3><p class=\"small\">As the methods raised them "
                     "(the plain-language versions are under Diagnostics).</p><ul>"
                     + "".join(f"<li>{e(w)}</li>" for w in full) + "</ul>")
    parts.append("</section>")
    return "".join(parts)
