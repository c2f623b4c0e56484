"""The plain-language check of a study report (used by the report and end-to-end tests).

Policy staff read everything above the technical appendix: there, no Python reprs or dict
dumps, no code (``name='value'`` options, ``result.diagnostics``), no internal labels
(``snake_case`` names such as ``p_value``, ``influence_function``). The technical appendix
(``<section id="appendix...">``) may name options and tests, but shows no reprs and no
pointers into Python objects either.
"""

from __future__ import annotations

import html
import re

#: Python reprs and dict/list dumps: never anywhere in a report
REPRS = [
    (re.compile(r"\{'|\{\""), "dict dump"),
    (re.compile(r"\['|\[\""), "list of strings dump"),
    (re.compile(r"<[\w.]+ object at"), "object repr"),
    (re.compile(r"\bnp\.\w+\("), "numpy repr"),
    (re.compile(r"\barray\(|mappingproxy|dtype:"), "numpy/pandas repr"),
    (re.compile(r"\bresult\.\w+|\bdiagnostics\["), "pointer into a Python object"),
]
#: code and internal labels: not in the policy part
CODE = [
    (re.compile(r"\b\w+=['\"]"), "option assignment"),
    (re.compile(r"\b\w+=\w*[\d.]+\b(?!%)"), "keyword assignment"),
    (re.compile(r"\bNaN\b"), "NaN"),
    (re.compile(r"\b[a-z_]\w*(?:\.[a-z_]\w*){2,}\b"), "dotted Python path"),
    (re.compile(r"ATT\(g,\s*t\)|ATT\(\d+,\s*\d+\)"), "ATT(g,t) label"),
    (re.compile(r"\bATT\b(?!\()"), "ATT label (tables say 'Average effect after twinning')"),
    (re.compile(r"(?<![\w./-])[a-z][a-z0-9]*(?:_[a-z0-9]+)+(?![\w/-]|\.[a-z]{2,7}\b)"),
     "snake_case identifier"),
]

_APPENDIX = re.compile(r'<section id="appendix')


def visible_text(fragment: str) -> str:
    """What a reader sees: text and alt text, without styles, scripts and tags."""
    t = re.sub(r"<(style|script)\b.*?</\1>", " ", fragment, flags=re.S)
    t = re.sub(r'src="data:[^"]*"', "", t)
    t = re.sub(r'<img\b[^>]*\balt="([^"]*)"[^>]*>', r" \1 ", t)
    t = re.sub(r"<[^>]+>", " ", t)
    return re.sub(r"\s+", " ", html.unescape(t))


def split_report(page: str) -> tuple[str, str]:
    """(policy part, technical appendix) of a report page, as visible text."""
    m = _APPENDIX.search(page)
    cut = m.start() if m else len(page)
    return visible_text(page[:cut]), visible_text(page[cut:])


def problems(page: str, allow: tuple[str, ...] = ()) -> list[str]:
    """Every offending token with its context; ``allow``: names a reader is expected to
    type (bundled study names, e.g. ``de_exports``)."""
    policy, appendix = split_report(page)
    out = []
    for part, text, rules in (("policy", policy, REPRS + CODE), ("appendix", appendix, REPRS)):
        for pat, what in rules:
            for m in pat.finditer(text):
                if m.group(0) in allow:
                    continue
                ctx = text[max(0, m.start() - 60):m.end() + 60]
                out.append(f"{part}: {what} {m.group(0)!r} in ...{ctx}...")
    return out
