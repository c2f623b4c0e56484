"""Warnings in plain words, and the credibility sheet of the Excel output.

The credibility checks themselves are computed in :mod:`twinimpact.diagnostics.credibility`
(the report floor only renders them).
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from ..errors import format_values

__all__ = ["add_sheet", "plain_warning", "report_warning"]


_DICT = re.compile(r"\{[^{}]*\}")
_N = r"(\d[\d,]*)"


def _no_comparison(counts: str) -> str:
    """The reasons of etwfe's "without a comparison" warning in words."""
    out = []
    for part in counts.split("; "):
        m = re.match(r"([\d,]+) rows?: treated in or before the first period (\S+)", part)
        if m:
            out.append(f"{m.group(1)} twinned in or before {m.group(2)}, the first year of the "
                       "data, so with no year before twinning")
            continue
        m = re.match(r"([\d,]+) rows?: period on or after the last cohort (\S+)", part)
        if m:
            out.append(f"{m.group(1)} from {m.group(2)} on, when no partner was left "
                       "untwinned to compare with")
            continue
        out.append(part)
    return "; ".join(out)


_PLAIN_RULES: list[tuple[re.Pattern[str], Any]] = [
    (re.compile(rf"dropped {_N} row\(s\) with missing values"),
     "{0} rows with missing values were left out."),
    (re.compile(rf"dropped {_N} row\(s\) without a comparison: ([^.]*(?:\.\d[^.]*)*)"),
     lambda m: f"{m.group(1)} rows were left out because nothing could be compared with "
               f"them: {_no_comparison(m.group(2))}."),
    (re.compile(rf"dropped {_N} separated observation"),
     "{0} observations with zero trade that the model predicts exactly were left out; "
     "they carry no information about the effect."),
    (re.compile(rf"dropped {_N} unit\(s\) already treated in the first period \(([^)]*)\)"),
     "{0} units twinned in or before the first year ({1}) were left out: they have no year "
     "before twinning to compare with."),
    (re.compile(rf"{_N} treated row\(s\) dropped because their unit or period has no "
                r"untreated observation"),
     "{0} twinned rows were left out: without an untwinned year of the same unit and period "
     "the method cannot predict what would have happened without twinning."),
    (re.compile(rf"{_N} row\(s\) dropped: a first-stage fixed-effect level has no "
                r"untreated observation"),
     "{0} rows were left out: without untwinned observations of the same unit or year the "
     "method cannot predict what would have happened without twinning."),
    (re.compile(r"horizon\(s\) (.+?) have no treated observations"),
     "Years after twinning {0} have no twinned observations and are not estimated."),
    (re.compile(r"some cohorts are small"),
     "Some groups of partners twinned in the same year are very small, so their "
     "year-by-year effects are imprecise."),
    (re.compile(rf"{_N} ATT\(g,t\) could not be computed"),
     "{0} cohort-year effects could not be computed (no comparison partners in those "
     "years) and are left out of the averages."),
    (re.compile(rf"{_N} term\(s\) could not be computed"),
     "{0} estimates could not be computed (nothing to compare them with) and are left "
     "blank."),
    (re.compile(rf"{_N} treated observation\(s\) are left out of the averages"),
     "{0} twinned observations are left out of the averages because nothing could be "
     "compared with them."),
    (re.compile(r"pre-(?:test|trend) Wald statistic not computed"),
     "The usual joint pre-trend test is undefined for this method here (more pre-twinning "
     "estimates than independent observations); an alternative test is reported."),
    (re.compile(r"relative periods \[.*\](?: \([\d,]+ periods\))? have no observations"),
     "Some years around twinning have no observations and are not estimated."),
]

#: sentences meant for Python users of the library: where to look in a result object
_POINTER = re.compile(r"(?:^|(?<=[.!?;])\s+)[^.!?;]*?(?:result\.|diagnostics\[|\.diagnostics\b|"
                      r"na_rm=)[^!?;]*?(?:\.(?=\s|$)|$)")
#: code-ish tokens and what a reader sees instead
_JARGON: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"ATT\((\d+),(\d+)\)"), r"the effect for partners twinned in \1, in \2"),
    (re.compile(r"ATT\(g,t\)"), "cohort-year effects"),
    (re.compile(r"\bare NaN\b"), "are left blank"),
    (re.compile(r"\bNaN\b"), "not computed"),
    (re.compile(r"\b(\w+)=('[^']*'|\"[^\"]*\"|\S+)"),
     "an option of the method (named in the appendix)"),
]
#: sentence ends, not abbreviations ("e.g. units" does not end a sentence)
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<=[.!?])\s+(?=[A-Z(])")


_LITERAL = re.compile(r"\{[^{}\[\]]*\}|\[[^\[\]{}]*\]")


def _literal_words(m: re.Match[str]) -> str:
    """A dict or list literal as words: ``{'1994': 1}`` -> ``1994: 1``, ``['a', 'b']`` ->
    ``a, b``; anything that is not a literal is left as it is."""
    import ast

    try:
        value = ast.literal_eval(m.group(0))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return m.group(0)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return format_values(value)
    return m.group(0)


def _singular(sentence: str) -> str:
    """Grammar of a rephrased warning whose count is one: "1 rows were" -> "1 row was"."""
    m = re.match(r"1 ((?:[\w-]+ )?)(\w+?)s\b", sentence)
    if not m:
        return sentence
    out = f"1 {m.group(1)}{m.group(2)}" + sentence[m.end():]
    for plural, single in ((" were ", " was "), (" are ", " is "), (" them", " it")):
        out = out.replace(plural, single, 1)
    return out


def report_warning(message: str) -> str:
    """A warning as shown in the report's technical appendix: the text the method raised,
    without the sentences that point Python users to attributes of the result object
    (``result.diagnostics[...]``: the report itself lists the counts), and with dict or
    list dumps written as words."""
    text = _POINTER.sub("", message).strip() or message
    return _LITERAL.sub(_literal_words, text)


def plain_warning(message: str) -> str:
    """A warning as a sentence a non-economist can read (the full text goes to the
    appendix): known patterns are rephrased; otherwise pointers to Python objects,
    dictionaries, lists and option names are cut and the first sentence kept."""
    label, sep, rest = message.partition(": ")
    text = rest if sep else message
    prefix = f"{label}: " if sep else ""
    for pat, tmpl in _PLAIN_RULES:
        m = pat.search(text)
        if m:
            return prefix + _singular(tmpl(m) if callable(tmpl) else tmpl.format(*m.groups()))
    text = report_warning(text)
    text = _DICT.sub("(details in the appendix)", text)
    text = re.sub(r"\[[^\]]*\]", "(details in the appendix)", text)
    first = _SENTENCE_END.split(text, maxsplit=1)[0]
    first = re.sub(r"^[a-z_]+(\[[^\]]*\])?: ", "", first)
    for pat, repl in _JARGON:
        first = pat.sub(repl, first)
    return prefix + first[0].upper() + first[1:] if first else message


def add_sheet(path: Any, name: str, frame: pd.DataFrame) -> None:
    """Add (or replace) one sheet of an existing workbook, written atomically; text cells
    that a spreadsheet could read as formulas are stored as text."""
    import openpyxl

    from .._io import atomic_path
    from .tables import _cells_as_text

    wb = openpyxl.load_workbook(path)
    if name in wb.sheetnames:
        del wb[name]
    ws = wb.create_sheet(name)
    ws.append([str(c) for c in frame.columns])
    for row in frame.itertuples(index=False):
        ws.append([None if (isinstance(v, float) and v != v) else v for v in row])
    _cells_as_text(wb)
    with atomic_path(path) as tmp:
        wb.save(tmp)
