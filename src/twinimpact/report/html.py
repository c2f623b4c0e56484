"""The study report: one self-contained HTML file policy staff can read.

No remote scripts, fonts or images: figures are embedded (PNG as data URIs), styles are
inline. Every string that comes from data, results or the study file is escaped.

Structure: (simulated-data banner) · title · plain-language headline · how sure we are ·
estimator comparison table · event-study figure · diagnostics (pre-trend tests, dropped
rows, failures, warnings, sensitivity) · data sources and caveats · methods appendix.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .._io import atomic_write_text
from .figures import drawing_figure, event_study_figure, figure_png_base64
from .headline import conflicting_signs, headline_sentence, other_estimates, pick_headline
from .plain import plain_warning, report_warning
from .tables import plain_vcov_label, table
from .trust_html import TRUST_CSS, appendix_html, trust_line_html, trust_section_html

__all__ = ["METHOD_NOTES", "render_report", "write_report"]

e = html.escape

METHOD_NOTES: dict[str, str] = {
    "twfe": "Two-way fixed effects (static): compares treated and untreated units before and "
            "after treatment, with unit and year fixed effects. With staggered timing and "
            "effects that change over time it can be biased (Goodman-Bacon 2021).",
    "event_study": "Event study with two-way fixed effects: one coefficient per year relative "
                   "to the first twinning (the year before is the reference). Pre-twinning "
                   "coefficients near zero support the parallel-trends assumption. The "
                   "'Average effect after twinning' row averages the post-twinning "
                   "coefficients.",
    "callaway_santanna": "Callaway & Sant'Anna (2021): compares each cohort of newly twinned "
                         "units with units not (yet) twinned, year by year, then averages; "
                         "robust to effects that differ across cohorts and over time.",
    "sun_abraham": "Sun & Abraham (2021): interaction-weighted event study, robust to "
                   "heterogeneous effects across cohorts.",
    "imputation": "Borusyak, Jaravel & Spiess (2024): imputes what untreated outcomes would "
                  "have been from a fixed-effects model fitted on untreated observations.",
    "did2s": "Gardner (2021) two-stage DiD: removes unit and year effects estimated on "
             "untreated observations, then regresses on treatment.",
    "synthetic_did": "Synthetic difference-in-differences (Arkhangelsky et al. 2021): "
                     "reweights control units and pre-periods to match the treated unit.",
    "synthetic_control": "Synthetic control (Abadie, Diamond & Hainmueller 2010, as in "
                         "R synthdid's synthetic-control estimate): a weighted mix of donor units that tracks "
                         "the treated unit before treatment; no time weights or intercept.",
    "did": "Plain difference-in-differences with equal weights on every donor unit and "
           "pre-period (R synthdid's difference-in-differences estimate).",
    "ppml": "Poisson pseudo-maximum likelihood (Santos Silva & Tenreyro 2006) with fixed "
            "effects: the standard gravity estimator; keeps zero trade flows.",
    "poisson_event_study": "Poisson event study: effects in proportional terms, keeping zero "
                           "trade flows.",
}

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;max-width:60rem;
margin:2rem auto;padding:0 1rem;color:#1b1b1b;line-height:1.5}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;
border-bottom:1px solid #ddd}
.banner{background:#b00020;color:#fff;padding:.6rem 1rem;font-weight:700;border-radius:4px}
.headline{font-size:1.15rem;background:#f3f6fa;border-left:4px solid #2f5f98;padding:.8rem 1rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
td,th{padding:.2rem .6rem;text-align:right}th[scope=row]{text-align:left;font-weight:400}
thead th{border-bottom:1px solid #999}tfoot td,tfoot th{border-top:1px solid #ccc;
font-size:.8rem}tr.se td{color:#555;font-size:.85rem}
figure{margin:1rem 0}figure img{max-width:100%}figcaption{font-size:.85rem;color:#444}
.small{font-size:.85rem;color:#444}code{background:#f4f4f4;padding:0 .2rem}
"""


def _fig_png(run: Any) -> str | None:
    fig = event_study_figure(run.results, alpha=run.study.alpha,
                             ylabel=f"Effect on {run.study.outcome_label}")
    return None if fig is None else figure_png_base64(fig, dpi=110)


def _draw_png(draw: Any, size: tuple[float, float] | None = None) -> str:
    return figure_png_base64(drawing_figure(draw, size=size), dpi=100)


def _list(items: list[str]) -> str:
    if not items:
        return "<p>None.</p>"
    return "<ul>" + "".join(f"<li>{e(str(i))}</li>" for i in items) + "</ul>"


def _dropped_lines(run: Any) -> list[str]:
    """Row accounting from the panel manifest (``steps``: n_in, n_out, dropped by reason)."""
    lines = []
    man = getattr(run.panel, "manifest", {}) or {}
    steps = man.get("steps", {})
    if isinstance(steps, dict):
        for step, info in steps.items():
            if not isinstance(info, dict) or "n_in" not in info:
                continue
            name = str(step).replace("_", " ")
            lines.append(f"{name}: {info['n_in']:,} rows in, {info.get('n_out', '?'):,} used")
            for reason, n in (info.get("dropped") or {}).items():
                lines.append(f"{name} — not used: {reason}: {n:,}")
    units = man.get("units", {})
    if isinstance(units, dict):
        for k, v in units.items():
            if v:
                shown = ", ".join(map(str, v[:12])) + ("…" if len(v) > 12 else "")
                lines.append(f"units {k.replace('_', ' ')}: {len(v)} ({shown})")
    unmatched = man.get("unmatched_cities")
    if isinstance(unmatched, list | dict) and len(unmatched):
        lines.append(f"city names not matched to the gazetteer (kept, id missing): "
                     f"{len(unmatched)}")
    for k, v in run.diagnostics.get("outcome_dropped_rows", {}).items():
        lines.append(f"not in the analysis sample — {k}: {v:,}")
    return lines


def _pretests(run: Any) -> list[str]:
    out = []
    for label, r in run.results.items():
        t = getattr(r, "pretrend_test", None)  # one typed object (results.PretrendTest)
        if t is not None:
            dist = (f"F({t.df}, {t.df_denominator:g})" if t.kind == "F" and
                    t.df_denominator is not None else f"chi2({t.df})")
            if t.computed:
                out.append(f"{label}: joint test that all pre-twinning effects are zero: "
                           f"{dist} statistic {_num(t.statistic)}, p-value {_p(t.p_value)}")
            else:
                out.append(f"{label}: joint pre-twinning test not computed (the reason is in "
                           "the technical appendix)")
            ext = t.extension
            if ext:
                out.append(f"{label}: instead, a variant of the test on the combinations of "
                           "pre-twinning effects the data can measure (an extension): "
                           f"statistic {_num(ext.get('statistic'))}, "
                           f"p-value {_p(ext.get('p_value'))}")
        f = r.to_frame()
        if "rel_time" in f.columns:
            pre = f[(f["rel_time"] < 0) & f["p_value"].notna()]
            if len(pre):
                n_sig = int((pre["p_value"] < run.study.alpha).sum())
                line = (f"{label}: {n_sig} of {len(pre)} pre-twinning coefficients differ "
                        f"from zero at the {100 * run.study.alpha:g}% level, each tested on "
                        "its own")
                joint_p = t.p_value if t is not None and t.computed else float("nan")
                if n_sig and joint_p >= run.study.alpha:
                    # Individually significant, jointly not: only possible when the
                    # estimates move together; say which test to read, and why.
                    line += (f"; taken together they do not (joint test above, p-value "
                             f"{_p(joint_p)}): the estimates move together")
                    if r.estimator == "imputation":
                        line += (", because each is measured against the same earlier "
                                 "baseline (the untwinned years outside this window)")
                    line += (", so one shared shift shows up in every estimate; the joint "
                             "test takes that into account and is the one to read")
                out.append(line)
    return out


def _isnan(v: Any) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return v is None


def _p(v: Any) -> str:
    """A p-value for readers: "below 0.001" rather than 0 or 1e-12."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "below 0.001" if 0 <= x < 0.001 else _num(x)


def _num(v: Any) -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(x):
        return "undefined"
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:,.0f}"


def _credibility(run: Any, headline: str | None) -> Any:
    """The run's credibility checks, computed by the runner
    (:func:`twinimpact.studies.runner.credibility_of_run`); None: no section."""
    return getattr(run, "credibility", None)


def _trust_figures(run: Any, cred: Any) -> list[tuple[str, str, str, Any]]:
    """Pictures for the trust section: Bacon scatter, pre-trend power, HonestDiD."""
    figs: list[tuple[str, str, str, Any]] = []
    bacon = getattr(cred, "bacon", None)
    if bacon is not None:
        from .diagnostic_plots import plot_bacon

        figs.append(("bacon-figure", "What the two-way fixed-effects estimate averages",
                     "Each point is one comparison of a group of partners twinned in the "
                     "same year with another group; its height is the estimated effect and "
                     "its position to the right its weight. Crosses use already-twinned "
                     "partners as the comparison.",
                     lambda fig: plot_bacon(bacon, ax=fig.add_subplot(111))))
    power_for = getattr(cred, "power_result", None)
    if power_for is not None:
        from .diagnostic_plots import plot_pretrend_power

        label, res = power_for
        figs.append(("pretrend-power-figure", f"Pre-trends the test could miss ({label})",
                     "Year-by-year estimates with the straight-line drifts that the pre-trend "
                     "test would detect only half and 80% of the time. If such a line could "
                     "explain the estimates after twinning, a passed pre-trend test is not "
                     "reassuring.",
                     lambda fig: plot_pretrend_power(res, ax=fig.add_subplot(111),
                                                     alpha=run.study.alpha)))
    sens = getattr(cred, "sensitivity", None)
    if sens is not None:
        from .plots import plot_honest_did

        label, frame, bd = sens
        figs.append(("honest-did-figure", f"How robust is the conclusion? ({label})",
                     "Confidence intervals for the overall effect that stay valid if, after "
                     "twinning, the paths of twinned and comparison partners diverge by up "
                     "to Mbar times the largest divergence seen before twinning. The "
                     "dotted line marks the breakdown value: beyond it the interval "
                     "includes zero.",
                     lambda fig: plot_honest_did(frame, ax=fig.add_subplot(111),
                                                 breakdown=bd)))
    return figs


def _count(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else str(v)


def _technical_methods(run: Any) -> str:
    """The end of the technical appendix: how each standard error was computed (the
    formulas and package names), and the full error of each estimator that failed."""
    rows = []
    for label, r in run.results.items():
        vs = getattr(r, "vcov_spec", None)
        if vs is not None and vs.description:
            rows.append(f"{label}: {vs.description}")
    parts = []
    if rows:
        parts.append("<h3>Standard errors: how they were computed</h3>" + _list(rows))
    if run.failures:
        parts.append("<h3>Estimators that could not run: the errors</h3>"
                     + _list([f"{k}: {report_warning(str(v))}"
                              for k, v in run.failures.items()]))
    if not parts:
        return ""
    return '<section id="appendix-methods">' + "".join(parts) + "</section>"


def render_report(run: Any) -> str:
    """Return the report as one HTML string."""
    study = run.study
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width,initial-scale=1">',
             f"<title>{e(study.title)}</title><style>{_CSS}{TRUST_CSS}</style></head><body>"]
    if study.simulated:
        parts.append('<p class="banner" id="simulated">SIMULATED DATA — this report runs on '
                     "simulated series, not real trade data. Its numbers illustrate the method "
                     "only.</p>")
    parts.append(f"<h1>{e(study.title)}</h1>")
    if study.description:
        parts.append(f'<p class="small">{e(study.description)}</p>')
    head = pick_headline(run.results, study)
    parts.append("<h2>What changed</h2>")
    if head is not None:
        frame = getattr(run, "analysis_frame", None)
        max_rel = None
        if isinstance(frame, pd.DataFrame) and "rel_time" in frame.columns:
            post = pd.to_numeric(frame["rel_time"], errors="coerce")
            post = post[post >= 0]
            max_rel = float(post.max()) if len(post) else None
        sentence, sure = headline_sentence(head, study, max_rel_time=max_rel)
        parts.append(f'<p class="headline" id="headline">{e(sentence)}</p>')
        cred = _credibility(run, head.label)
        if cred is not None:
            parts.append(trust_line_html(cred))
        parts.append(f"<p>{e(sure)}</p>")
        others = other_estimates(run.results, study, head)
        if conflicting_signs(run.results, study, head):
            parts.append('<p id="disagreement"><strong>Caution: the methods disagree on the '
                         "direction of the change</strong> (at least one other method finds a "
                         "change of the opposite sign whose confidence interval excludes no "
                         "change). The headline number should not be read on its own; see "
                         "the list below, the year-by-year figure and the caveats.</p>")
        if others:
            parts.append("<p>The same quantity by the other methods in this study (they "
                         "weigh years and comparison units differently, so some "
                         "disagreement is expected; large disagreement is a warning "
                         "sign):</p>" + _list(others))
    else:
        cred = _credibility(run, None)
        parts.append('<p class="headline" id="headline">No estimate could be computed; see '
                     "the diagnostics below.</p>")
    if cred is not None:
        parts.append(trust_section_html(cred))
        for fid, title, caption, draw in _trust_figures(run, cred):
            png_t = _draw_png(draw, size=(7.5, 4.4))
            parts.append(f'<figure id="{e(fid)}"><img alt="{e(title)}" '
                         f'src="data:image/png;base64,{png_t}"><figcaption><strong>'
                         f"{e(title)}.</strong> {e(caption)}</figcaption></figure>")
    if run.results:
        parts.append("<h2>Estimates by method</h2>")
        parts.append('<p class="small">Each column is one estimator. Numbers are effects on '
                     f"{e(study.outcome_label)}; standard errors in parentheses. For a log "
                     "outcome, an effect b means roughly 100·(exp(b)−1)% higher.</p>")
        parts.append('<div id="estimates">' + str(table(run.results, format="html",
                                                          alpha=study.alpha,
                                                          plain_labels=True)) + "</div>")
    png = _fig_png(run)
    if png:
        parts.append("<h2>Year by year</h2>")
        parts.append('<figure id="event-study"><img alt="Event-study estimates by year '
                     f'relative to the first twinning" src="data:image/png;base64,{png}">'
                     "<figcaption>Estimated effect in each year before and after the first "
                     "twinning, with confidence intervals. Points before zero should be close "
                     "to zero if treated and comparison units were on parallel paths."
                     "</figcaption></figure>")
    for stem, title, caption, draw in getattr(run, "figures", []):
        png_x = _draw_png(draw)
        parts.append(f"<h2>{e(title)}</h2>")
        parts.append(f'<figure id="{e(stem)}"><img alt="{e(title)}" '
                     f'src="data:image/png;base64,{png_x}"><figcaption>{e(caption)}'
                     "</figcaption></figure>")
    notes = run.diagnostics.get("sentences", []) + run.diagnostics.get("notes", [])
    if notes:
        parts.append("<h2>In words</h2>" + _list(list(notes)))
    parts.append("<h2>Diagnostics</h2>")
    parts.append("<h3>Pre-trend checks</h3>" + _list(_pretests(run)))
    parts.append("<h3>Rows used and dropped</h3>" + _list(_dropped_lines(run)))
    if run.failures:
        parts.append("<h3>Estimators that could not run</h3>"
                     + _list([plain_warning(f"{k}: {v}") for k, v in run.failures.items()])
                     + '<p class="small">The full error messages are in the technical '
                       "appendix.</p>")
    if run.warnings:
        plain = list(dict.fromkeys(plain_warning(w) for w in run.warnings))
        parts.append("<h3>Warnings</h3>" + _list(plain)
                     + '<p class="small">The warnings in full, as the methods raised them, '
                       "are in the technical appendix.</p>")
    sens = getattr(run, "sensitivity", None)
    if sens is not None and len(sens):
        shown = sens.rename(columns={"m": "Mbar (allowed divergence)", "lb": "Lower bound",
                                     "ub": "Upper bound", "method": "Interval"})
        shown.columns = [str(c).replace("_", " ") for c in shown.columns]
        parts.append("<h3>Sensitivity (HonestDiD)</h3><p class=\"small\">Confidence intervals "
                     "for the effect that stay valid if, after twinning, the paths diverge by up "
                     "to Mbar times the largest divergence seen before.</p>"
                     + shown.to_html(index=False, float_format=lambda v: f"{v:.4g}",
                                     border=0))
    parts.append("<h2>Data and caveats</h2>")
    sources = []
    man = getattr(run.panel, "manifest", {}) or {}
    inputs = man.get("inputs", {})
    items = inputs.items() if isinstance(inputs, dict) else enumerate(inputs or [])
    for name, item in items:
        if isinstance(item, dict):
            src = item.get("derived_from", item)
            files = src.get("files") if isinstance(src.get("files"), list) else None
            if files:
                path = (f"{len(files)} files ({Path(str(files[0].get('path', ''))).name}"
                        + (f" … {Path(str(files[-1].get('path', ''))).name})"
                           if len(files) > 1 else ")"))
            else:
                path = Path(str(src.get("path", ""))).name or str(src.get("kind", ""))
            facts = ([f"{_count(src['rows'])} rows"] if src.get("rows") is not None else []) \
                + ([f"sha256 {str(src['sha256'])[:12]}…"] if src.get("sha256") else [])
            sources.append(f"{str(name).replace('_', ' ')}: {path}"
                           + (f" ({', '.join(facts)})" if facts else "")
                           + (f", unit {item['unit']}" if item.get("unit") else ""))
    sources.append("Attribution and licences: data/raw/SOURCES.md in the twinimpact "
                   "repository (Wikipedia-derived lists are CC BY-SA 4.0).")
    parts.append("<h3>Sources</h3>" + _list(sources))
    parts.append("<h3>Caveats</h3>" + _list(list(study.caveats)))
    parts.append("<h2>Methods</h2>")
    used = []
    for label, r in run.results.items():
        base = getattr(r, "estimator", "")
        note = METHOD_NOTES.get(base) or METHOD_NOTES.get(base.split("/")[0], "")
        vs = getattr(r, "vcov_spec", None)
        se = f" Standard errors: {plain_vcov_label(vs)}." if vs is not None else ""
        used.append(f"{label}: {note}{se}")
    parts.append(_list(used))
    parts.append(appendix_html(cred, list(run.warnings)))
    technical = _technical_methods(run)
    if technical:
        parts.append(technical)
    parts.append('<p class="small">Generated by twinimpact. Confidence intervals at the '
                 f"{100 * (1 - study.alpha):g}% level.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(run: Any, path: str | Path) -> Path:
    """Render the report and write it atomically to ``path``."""
    return atomic_write_text(path, render_report(run))

