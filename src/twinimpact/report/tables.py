"""Regression tables: several results side by side in Markdown, HTML, LaTeX, Excel or a frame.

Tables consume only the tidy frame of the results protocol
(:meth:`~twinimpact.results.EstimationResult.to_frame`), so a new estimator never needs
changes here. Every string that comes from data or results is escaped for the target
format (HTML entities, LaTeX specials, Markdown pipes).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._io import atomic_path, atomic_write_text
from ..errors import SpecificationError, check_literal, format_message

__all__ = ["TABLE_FORMATS", "coef_frame", "table"]

TABLE_FORMATS = ("markdown", "html", "latex", "xlsx", "frame")
TableFormat = Literal["markdown", "html", "latex", "xlsx", "frame"]
STARS = ((0.01, "***"), (0.05, "**"), (0.10, "*"))


def _named_results(results: Any) -> list[tuple[str, Any]]:
    if isinstance(results, Mapping):
        items = [(str(k), v) for k, v in results.items()]
    elif isinstance(results, Sequence) and not isinstance(results, str | bytes):
        items = [(getattr(r, "estimator", f"model {i + 1}"), r) for i, r in enumerate(results)]
    else:
        items = [(getattr(results, "estimator", "model 1"), results)]
    if not items:
        raise SpecificationError("table() needs at least one result.")
    for name, r in items:
        if not hasattr(r, "to_frame"):
            raise SpecificationError(format_message(
                "table() takes estimation results (objects with .to_frame())",
                where=f"entry {name!r}", seen=type(r).__name__,
                fix="pass results returned by ti.twfe, ti.event_study, ti.callaway_santanna, ..."))
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


def coef_frame(results: Any, alpha: float = 0.05) -> pd.DataFrame:
    """Numeric side-by-side frame: index ``term``, columns ``(model, statistic)``."""
    items = _named_results(results)
    frames = []
    order: dict[str, tuple] = {}
    for name, r in items:
        t = r.to_frame(alpha).copy()
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


def _footer(items: list[tuple[str, Any]]) -> list[tuple[str, list[str]]]:
    rows = [("Observations", [f"{int(r.nobs):,}" for _, r in items])]
    kinds = []
    for _, r in items:
        vs = getattr(r, "vcov_spec", None)
        if vs is None:
            kinds.append("")
            continue
        k = vs.kind
        if vs.cluster:
            k += " (" + ", ".join(f"{c}: {g}" for c, g in
                                  zip(vs.cluster, vs.n_clusters, strict=False)) + ")"
        kinds.append(k)
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


def _text_cells(results: Any, alpha: float, digits: int, stars: bool, plain: bool = False
                ) -> tuple[list[str], list[tuple[str, list[str], list[str]]],
                           list[tuple[str, list[str]]]]:
    items = _named_results(results)
    wide = coef_frame(dict(items), alpha)
    names = [n for n, _ in items]
    body = []
    for term in wide.index:
        est, se = [], []
        for n in names:
            e = wide.loc[term, (n, "estimate")]
            s = wide.loc[term, (n, "std_error")]
            p = wide.loc[term, (n, "p_value")]
            est.append(_fmt(e, digits) + (_stars(p) if stars else ""))
            se.append(f"({_fmt(s, digits)})" if not (isinstance(s, float) and math.isnan(s))
                      else "")
        body.append((plain_term(str(term)) if plain else str(term), est, se))
    return names, body, _footer(items)


def _note(alpha: float, stars: bool) -> str:
    n = f"Standard errors in parentheses; {100 * (1 - alpha):g}% intervals in the frame output."
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


def table(results: Any, format: TableFormat = "markdown", path: str | Path | None = None, *,
          alpha: float = 0.05, digits: int = 4, stars: bool = True,
          plain_labels: bool = False) -> str | pd.DataFrame:
    """Several results side by side.

    Parameters
    ----------
    results : result, list of results, or dict ``{column name: result}``
        Any objects following the results protocol.
    format : {"markdown", "html", "latex", "xlsx", "frame"}
        Text formats return a string; ``"frame"`` returns the numeric frame (index
        ``term``, columns ``(model, statistic)``); ``"xlsx"`` writes a workbook (sheet
        ``table`` with the formatted table, ``estimates`` with the numbers, ``notes``) and
        returns the numeric frame.
    path : str or Path, optional
        Where to write (atomically); required for ``"xlsx"``.
    alpha : float
        Interval level for the numeric columns (``ci_lower``, ``ci_upper``).
    digits : int
        Decimals shown in text formats.
    stars : bool
        Significance stars (p < .10, .05, .01) in text formats.
    plain_labels : bool
        Text formats: label terms for non-specialists ("2 years before", "Year of
        twinning", "Average effect after twinning") instead of ``rel_time=-2``, ``ATT``.

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
            notes = pd.DataFrame({"note": [_note(alpha, stars)]})
            with atomic_path(path) as tmp:
                with pd.ExcelWriter(tmp, engine="openpyxl") as xw:
                    shown.to_excel(xw, sheet_name="table", index=False)
                    flat.to_excel(xw, sheet_name="estimates")
                    notes.to_excel(xw, sheet_name="notes", index=False)
                    _cells_as_text(xw.book)
        return wide
    names, body, footer = _text_cells(results, alpha, digits, stars, plain_labels)
    note = _note(alpha, stars)
    render = {"markdown": _markdown, "html": _html, "latex": _latex}[format]
    text = render(names, body, footer, note)
    if path is not None:
        atomic_write_text(path, text)
    return text
