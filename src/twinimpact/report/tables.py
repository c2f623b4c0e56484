"""Regression tables: several results side by side in Markdown, HTML, LaTeX, Excel or a frame.

Tables consume only the tidy frame of the results protocol
(:meth:`~twinimpact.results.EstimationResult.to_frame`), so a new estimator never needs
changes here. Every string that comes from data or results is escaped for the target
format (HTML entities, LaTeX specials, Markdown pipes).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._io import atomic_path, atomic_write_text
from ..errors import SpecificationError, check_literal, format_message
from ..results import is_honest_frame, result_label, tidy

__all__ = ["TABLE_FORMATS", "coef_frame", "table"]

TABLE_FORMATS = ("markdown", "html", "latex", "xlsx", "frame")
TableFormat = Literal["markdown", "html", "latex", "xlsx", "frame"]
STARS = ((0.01, "***"), (0.05, "**"), (0.10, "*"))


def _expand(name: str, r: Any) -> list[tuple[str, Any]]:
    """A container of results (``.results`` mapping, e.g. a case study) becomes one column
    per component; anything else stays one column."""
    comps = getattr(r, "results", None)
    if isinstance(comps, Mapping) and not isinstance(r, pd.DataFrame) and comps:
        return [(f"{name}: {k}", v) for k, v in comps.items()]
    return [(name, r)]


def _named_results(results: Any, expand: bool = True) -> list[tuple[str, Any]]:
    if isinstance(results, Mapping):
        items = [(str(k), v) for k, v in results.items()]
    elif (isinstance(results, Sequence) and not isinstance(results, str | bytes)):
        items = [(result_label(r, f"model {i + 1}"), r) for i, r in enumerate(results)]
    else:
        items = [(result_label(results, "model 1"), results)]
    if not items:
        raise SpecificationError("table() needs at least one result.")
    if expand:
        items = [pair for name, r in items for pair in _expand(name, r)]
    for name, r in items:
        if not (is_honest_frame(r) or (callable(getattr(r, "to_frame", None))
                                       and not isinstance(r, pd.DataFrame | pd.Series))):
            raise SpecificationError(format_message(
                "table() takes objects returned by twinimpact (estimation results, "
                "bootstrap / randomization results, case or gravity studies, HonestDiD "
                "frames)", where=f"entry {name!r}", seen=type(r).__name__,
                fix="pass results returned by ti.twfe, ti.event_study, ti.callaway_santanna, "
                    "ti.wild_cluster_bootstrap, ti.honest_did, ..."))
    seen: dict[str, int] = {}
    out = []
    for name, r in items:
        seen[name] = seen.get(name, 0) + 1
        out.append((name if seen[name] == 1 else f"{name} ({seen[name]})", r))
    return out


def _term_sort_key(term: str, rel: float) -> tuple:
    if term == "ATT":
        return (2, 0.0, term)
    if not (isinstance(rel, float) and math.isnan(rel)):
        return (1, float(rel), term)
    return (0, 0.0, term)


def coef_frame(results: Any, alpha: float | None = None) -> pd.DataFrame:
    """Numeric side-by-side frame: index ``term``, columns ``(model, statistic)``."""
    items = _named_results(results)
    frames = []
    order: dict[str, tuple] = {}
    for name, r in items:
        t = tidy(r, alpha).copy()
        if t["term"].duplicated().any():
            raise SpecificationError(format_message(
                "a table column needs one row per term", where=f"model {name!r}",
                seen=sorted(set(t.loc[t["term"].duplicated(), "term"])),
                fix="pass the components separately, e.g. {name: result.results[...]}"))
        rel = t["rel_time"] if "rel_time" in t.columns else pd.Series(np.nan, index=t.index)
        for term, e in zip(t["term"], rel, strict=True):
            order.setdefault(term, _term_sort_key(term, float(e)))
        t = t.set_index("term")[["estimate", "std_error", "p_value", "ci_lower", "ci_upper"]]
        t.columns = pd.MultiIndex.from_product([[name], t.columns])
        frames.append(t)
    first_seen = {t: i for i, t in enumerate(order)}
    terms = sorted(order, key=lambda t: (order[t][0], order[t][1], first_seen[t]))
    wide = pd.concat(frames, axis=1).reindex(terms)
    wide.index.name = "term"
    return wide


def _fmt(v: float, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.{digits}f}".replace("-", "\u2212")


def _stars(p: float) -> str:
    if p is None or math.isnan(p):
        return ""
    for cut, s in STARS:
        if p < cut:
            return s
    return ""


#: how standard errors were computed, in words (``VcovSpec.kind``)
VCOV_WORDS = {
    "iid": "classical (homoskedastic)", "hetero": "robust to heteroskedasticity",
    "cluster": "clustered", "twoway_cluster": "clustered two ways",
    "influence_function": "from the influence function", "bootstrap": "bootstrap",
    "placebo": "placebo", "jackknife": "jackknife",
    "imputation_conservative": "conservative (Borusyak, Jaravel & Spiess)",
    "two_stage": "two-stage (Gardner)", "none": "not computed",
    "driscoll_kraay": "Driscoll-Kraay (robust to common shocks)",
}


def plain_vcov_label(vs: Any) -> str:
    """How a variance was computed, for readers: ``cluster (pair: 744)`` ->
    ``"clustered by pair (744 clusters)"``, ``influence_function`` -> ``"from the influence
    function"``."""
    kind = str(getattr(vs, "kind", "") or "")
    words = VCOV_WORDS.get(kind, kind.replace("_", " "))
    cluster = tuple(getattr(vs, "cluster", ()) or ())
    if cluster:
        groups = tuple(getattr(vs, "n_clusters", ()) or ())
        by = " and ".join(
            f"{re.sub(r'_id$', '', c).replace('_', ' ')}" + (f" ({g:,} clusters)" if g else "")
            for c, g in zip(cluster, groups + (0,) * len(cluster), strict=False))
        words += (" by " if kind == "cluster" else ", clustered by ") + by
    return words


def _footer(items: list[tuple[str, Any]], plain: bool = False) -> list[tuple[str, list[str]]]:
    nobs = []
    for _, r in items:
        n = getattr(r, "nobs", None)
        nobs.append(f"{int(n):,}" if isinstance(n, int | np.integer) and n > 0 else "")
    rows = [("Observations", nobs)]
    kinds = []
    for _, r in items:
        vs = getattr(r, "vcov_spec", None)
        if vs is not None:
            kinds.append(plain_vcov_label(vs) if plain else vs.label())
            continue
        t = tidy(r)
        kind = str(t["ci_kind"].iloc[0]) if len(t) else ""
        kinds.append(kind.replace("_", " ") if plain else kind)
    rows.append(("Std. errors", kinds))
    return rows


def plain_term(term: str) -> str:
    """Reader-friendly label: ``rel_time=-2`` -> "2 years before", ``ATT`` -> "Average
    effect after twinning", ``cohort=2004`` -> "Cohort 2004"."""
    if term == "ATT":
        return "Average effect after twinning"
    key, sep, val = term.partition("=")
    if not sep:
        return term
    try:
        num = float(val)
    except ValueError:
        return term
    if key == "rel_time":
        e = int(num) if num.is_integer() else num
        if e == 0:
            return "Year of twinning"
        unit = "year" if abs(e) == 1 else "years"
        return f"{abs(e)} {unit} " + ("before" if e < 0 else "after")
    if key == "cohort":
        return f"Twinned in {val}"
    if key == "time":
        return f"In {val}"
    return term


#: regressors of the twinning gravity models in words (plain_labels tables)
TERM_WORDS = {"n_twinnings": "Number of twinnings",
              "log1p_twinnings": "Log of 1 + number of twinnings",
              "any_twinning": "Twinned (0/1)", "rta": "Regional trade agreement",
              "D": "Treated (0/1)"}


def plain_regressor(term: str) -> str:
    """A regressor name for readers: known names in words, ``intl_border_1986`` ->
    "International border × 1986", otherwise underscores as spaces."""
    if term in TERM_WORDS:
        return TERM_WORDS[term]
    m = re.fullmatch(r"intl_border_(\d+)", term)
    if m:
        return f"International border \u00d7 {m.group(1)}"
    m = re.fullmatch(r"(Effect|Placebo)_(\d+)", term)  # did_multiplegt
    if m:
        side = "since" if m.group(1) == "Effect" else "before"
        return f"{m.group(1)}, period {int(m.group(2))} {side} the change"
    text = term.replace("_", " ")
    return text[:1].upper() + text[1:]


def _text_cells(results: Any, alpha: float | None, digits: int, stars: bool, plain: bool = False
                ) -> tuple[list[str], list[tuple[str, list[str], list[str]]],
                           list[tuple[str, list[str]]]]:
    items = _named_results(results)
    wide = coef_frame(dict(items), alpha)
    if plain:  # readers: a row no method could estimate is noise (it stays in the frame)
        wide = wide[wide.notna().any(axis=1)]
    names = [n for n, _ in items]
    body = []
    for term in wide.index:
        est, se = [], []
        for n in names:
            e = wide.loc[term, (n, "estimate")]
            s = wide.loc[term, (n, "std_error")]
            p = wide.loc[term, (n, "p_value")]
            lo = wide.loc[term, (n, "ci_lower")]
            hi = wide.loc[term, (n, "ci_upper")]
            est.append(_fmt(e, digits) + (_stars(p) if stars else ""))
            if not (isinstance(s, float) and math.isnan(s)):
                se.append(f"({_fmt(s, digits)})")
            elif not (math.isnan(lo) and math.isnan(hi)):  # an interval without an SE
                se.append(f"[{_fmt(lo, digits)}, {_fmt(hi, digits)}]")
            else:
                se.append("")
        label = plain_term(str(term)) if plain else str(term)
        if plain and label == str(term) and "=" not in label:
            label = plain_regressor(label)
        body.append((label, est, se))
    return names, body, _footer(items, plain)


def _note(alpha: float | None, stars: bool, plain: bool = False) -> str:
    level = (f"{100 * (1 - alpha):g}% intervals" if alpha is not None
             else "intervals at each model's level (95% unless set at estimation)")
    if plain:
        n = ("Standard errors in parentheses (intervals in brackets where a method gives no "
             "standard error); years that no method could estimate are not shown.")
    else:
        n = (f"Standard errors in parentheses (intervals in brackets where a method gives no "
             f"standard error); {level} in the frame output.")
    if stars:
        n += " * p<0.10, ** p<0.05, *** p<0.01."
    return n


def _markdown(names, body, footer, note) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    lines = ["| | " + " | ".join(esc(n) for n in names) + " |",
             "|---|" + "---:|" * len(names)]
    for term, est, se in body:
        lines.append(f"| {esc(term)} | " + " | ".join(est) + " |")
        lines.append("| | " + " | ".join(se) + " |")
    for lab, vals in footer:
        lines.append(f"| {esc(lab)} | " + " | ".join(esc(v) for v in vals) + " |")
    lines.append("")
    lines.append(esc(note))
    return "\n".join(lines) + "\n"


def _html(names, body, footer, note) -> str:
    e = html.escape
    out = ['<table class="twinimpact-table">', "<thead><tr><th></th>"
           + "".join(f"<th>{e(n)}</th>" for n in names) + "</tr></thead>", "<tbody>"]
    for term, est, se in body:
        out.append(f"<tr><th scope=\"row\">{e(term)}</th>"
                   + "".join(f"<td>{e(v)}</td>" for v in est) + "</tr>")
        out.append('<tr class="se"><th></th>' + "".join(f"<td>{e(v)}</td>" for v in se)
                   + "</tr>")
    out.append("</tbody><tfoot>")
    for lab, vals in footer:
        out.append(f"<tr><th scope=\"row\">{e(lab)}</th>"
                   + "".join(f"<td>{e(v)}</td>" for v in vals) + "</tr>")
    out.append(f'<tr><td colspan="{len(names) + 1}">{e(note)}</td></tr>')
    out.append("</tfoot></table>")
    return "\n".join(out) + "\n"


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                  "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "\\": r"\textbackslash{}", "<": r"\textless{}", ">": r"\textgreater{}",
                  "\u2212": "$-$"}


def latex_escape(s: str) -> str:
    """Escape LaTeX special characters in ``s``."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in s)


def _latex(names, body, footer, note) -> str:
    le = latex_escape
    out = [r"\begin{tabular}{l" + "c" * len(names) + "}", r"\toprule",
           " & " + " & ".join(le(n) for n in names) + r" \\", r"\midrule"]
    for term, est, se in body:
        out.append(le(term) + " & " + " & ".join(le(v) for v in est) + r" \\")
        out.append(" & " + " & ".join(le(v) for v in se) + r" \\")
    out.append(r"\midrule")
    for lab, vals in footer:
        out.append(le(lab) + " & " + " & ".join(le(v) for v in vals) + r" \\")
    out.append(r"\bottomrule")
    out.append(r"\multicolumn{" + str(len(names) + 1) + r"}{l}{\footnotesize " + le(note)
               + r"}\\")
    out.append(r"\end{tabular}")
    return "\n".join(out) + "\n"


#: first characters that make a spreadsheet read a cell as a formula (OWASP "CSV injection")
FORMULA_PREFIXES = ("=", "+", "-", "@")


def _cells_as_text(book: Any) -> None:
    """Store every text cell that a spreadsheet could take for a formula as text: openpyxl
    turns a string starting with "=" into a live formula, and Excel evaluates ``+ - @`` when
    a cell is edited. Labels and data are written as typed text (quote prefix)."""
    for ws in book.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                v = cell.value
                if isinstance(v, str) and v.startswith(FORMULA_PREFIXES):
                    cell.value = v
                    cell.data_type = "s"
                    cell.quotePrefix = True


def _verdict_tables(results: Any) -> pd.DataFrame | None:
    """Objects that are tables of verdicts rather than estimates (credibility checks: a
    ``table_frame()`` method) as one frame; None when ``results`` holds none. Mixing them
    with estimates in one table is refused."""
    if isinstance(results, Mapping):
        items = [(str(k), v) for k, v in results.items()]
    elif isinstance(results, Sequence) and not isinstance(results, str | bytes):
        items = [(f"checks {i + 1}", r) for i, r in enumerate(results)]
    else:
        items = [("checks", results)]
    kinds = [callable(getattr(r, "table_frame", None)) for _, r in items]
    if not any(kinds):
        return None
    if not all(kinds):
        raise SpecificationError(format_message(
            "table() cannot put credibility checks (verdicts) and estimates in one table",
            seen=[type(r).__name__ for _, r in items],
            fix="call ti.table(...) once for the estimates and once for the checks"))
    frames = [r.table_frame() for _, r in items]
    if len(frames) == 1:
        return frames[0]
    return pd.concat([f.assign(**{"Set": name}) [["Set", *f.columns]]
                      for (name, _), f in zip(items, frames, strict=True)],
                     ignore_index=True)


def _render_frame(frame: pd.DataFrame, format: str, path: str | Path | None
                  ) -> str | pd.DataFrame:
    """A table of text cells (verdict tables) in each format; "frame" returns it."""
    cols = [str(c) for c in frame.columns]
    rows = [[("" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
             for v in row] for row in frame.itertuples(index=False)]
    if format in ("frame", "xlsx"):
        if format == "xlsx":
            with atomic_path(path) as tmp:
                with pd.ExcelWriter(tmp, engine="openpyxl") as xw:
                    frame.to_excel(xw, sheet_name="checks", index=False)
                    _cells_as_text(xw.book)
        return frame.copy()
    if format == "markdown":
        def md(s: str) -> str:
            return s.replace("|", "\\|").replace("\n", " ")
        lines = ["| " + " | ".join(md(c) for c in cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(md(v) for v in r) + " |" for r in rows]
        text = "\n".join(lines) + "\n"
    elif format == "html":
        e = html.escape
        text = ('<table class="twinimpact-table"><thead><tr>'
                + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr></thead><tbody>"
                + "".join("<tr>" + "".join(f"<td>{e(v)}</td>" for v in r) + "</tr>"
                          for r in rows) + "</tbody></table>\n")
    else:
        le = latex_escape
        text = "\n".join([r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule",
                          " & ".join(le(c) for c in cols) + r" \\", r"\midrule",
                          *(" & ".join(le(v) for v in r) + r" \\" for r in rows),
                          r"\bottomrule", r"\end{tabular}"]) + "\n"
    if path is not None:
        atomic_write_text(path, text)
    return text


def table(results: Any, format: TableFormat = "markdown", path: str | Path | None = None, *,
          alpha: float | None = None, digits: int = 4, stars: bool = True,
          plain_labels: bool = False) -> str | pd.DataFrame:
    """Several results side by side.

    Parameters
    ----------
    results : result, list of results, or dict ``{column name: result}``
        Any object the package returns: estimation results, wild bootstrap and
        randomization results, gravity studies, HonestDiD frames (one row per ``m``), and
        containers such as a case study (one column per component result). Credibility
        checks (:func:`twinimpact.diagnostics.credibility.assess_credibility`) are a table
        of verdicts, one row per check; they are tabled on their own.
    format : {"markdown", "html", "latex", "xlsx", "frame"}
        Text formats return a string; ``"frame"`` returns the numeric frame (index
        ``term``, columns ``(model, statistic)``); ``"xlsx"`` writes a workbook (sheet
        ``table`` with the formatted table, ``estimates`` with the numbers, ``notes``) and
        returns the numeric frame.
    path : str or Path, optional
        Where to write (atomically); required for ``"xlsx"``.
    alpha : float, optional
        Interval level for the numeric columns (``ci_lower``, ``ci_upper``); default: each
        result's own level (0.05 for analytic intervals; the level a bootstrap or HonestDiD
        set was computed at).
    digits : int
        Decimals shown in text formats.
    stars : bool
        Significance stars (p < .10, .05, .01) in text formats.
    plain_labels : bool
        Text formats, for non-specialists: terms labelled "2 years before", "Year of
        twinning", "Average effect after twinning" instead of ``rel_time=-2``, ``ATT``;
        the standard-error row in words ("clustered by pair (744 clusters)" instead of
        ``cluster (pair: 744)``); rows that no result could estimate left out.

    Examples
    --------
    >>> import twinimpact as ti
    >>> from twinimpact.estimators.twfe import _example_panel
    >>> d = _example_panel()
    >>> r = ti.twfe(d, outcome="y", unit="id", time="year", cohort="g")
    >>> print(ti.table({"TWFE": r}).splitlines()[0])
    | | TWFE |
    """
    check_literal("format", format, TABLE_FORMATS)
    if format == "xlsx" and path is None:
        raise SpecificationError(format_message(
            "format='xlsx' needs a file", fix="pass path='results.xlsx'"))
    verdicts = _verdict_tables(results)
    if verdicts is not None:
        return _render_frame(verdicts, format, path)
    if format in ("frame", "xlsx"):
        wide = coef_frame(results, alpha)
        if format == "xlsx":
            names, body, footer = _text_cells(results, alpha, digits, stars, plain_labels)
            rows = []
            for term, est, se in body:
                rows.append([term, *est])
                rows.append(["", *se])
            for lab, vals in footer:
                rows.append([lab, *vals])
            shown = pd.DataFrame(rows, columns=["", *names])
            flat = wide.copy()
            flat.columns = [f"{m} | {s}" for m, s in flat.columns]
            notes = pd.DataFrame({"note": [_note(alpha, stars, plain_labels)]})
            with atomic_path(path) as tmp:
                with pd.ExcelWriter(tmp, engine="openpyxl") as xw:
                    shown.to_excel(xw, sheet_name="table", index=False)
                    flat.to_excel(xw, sheet_name="estimates")
                    notes.to_excel(xw, sheet_name="notes", index=False)
                    _cells_as_text(xw.book)
        return wide
    names, body, footer = _text_cells(results, alpha, digits, stars, plain_labels)
    note = _note(alpha, stars, plain_labels)
    render = {"markdown": _markdown, "html": _html, "latex": _latex}[format]
    text = render(names, body, footer, note)
    if path is not None:
        atomic_write_text(path, text)
    return text
