"""Warnings in plain words, and the credibility sheet of the Excel output.

The credibility checks themselves are computed in :mod:`twinimpact.diagnostics.credibility`
(the report floor only renders them).
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

__all__ = ["add_sheet", "plain_warning"]


_DICT = re.compile(r"\{[^{}]*\}")
_PLAIN_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"dropped (\d[\d,]*) row\(s\) with missing values"),
     "{0} rows with missing values were left out."),
    (re.compile(r"some cohorts are small"),
     "Some groups of partners twinned in the same year are very small, so their "
     "year-by-year effects are imprecise."),
    (re.compile(r"(\d+) ATT\(g,t\) could not be computed"),
     "{0} cohort-year effects could not be computed (no comparison partners in those "
     "years) and are left out of the averages."),
    (re.compile(r"pre-test Wald statistic not computed"),
     "The usual joint pre-trend test is undefined for this method here (more pre-twinning "
     "estimates than independent observations); an alternative test is reported."),
    (re.compile(r"relative periods \[.*\] have no observations"),
     "Some years around twinning have no observations and are not estimated."),
]


def plain_warning(message: str) -> str:
    """A warning as a sentence a non-economist can read (the raw text goes to the
    appendix): known patterns are rephrased; otherwise dictionaries and lists of codes are
    cut and the first sentence kept."""
    label, sep, rest = message.partition(": ")
    text = rest if sep else message
    prefix = f"{label}: " if sep else ""
    for pat, tmpl in _PLAIN_RULES:
        m = pat.search(text)
        if m:
            return prefix + tmpl.format(*m.groups())
    text = _DICT.sub("(details in the appendix)", text)
    text = re.sub(r"\[[^\]]{40,}\]", "(details in the appendix)", text)
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    first = re.sub(r"^[a-z_]+(\[[^\]]*\])?: ", "", first)
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
