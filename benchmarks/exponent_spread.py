"""Fitted exponents with their spread from run_table.py JSON lines (issue 13 item 3, run EX1).

``python benchmarks/exponent_spread.py benchmarks/results_exprun.jsonl [--run EX1]``

Per (case, panel), twinimpact rows only, one line per size (the last one kept): the exponent
b of ``CPU ~ rows^b`` by least squares on logs over all sizes and over the top decade (the
largest two sizes), both from the children's median CPU time (``cpu_s``), and the top
decade's spread: from the fits' minimum / maximum CPU (``cpu_times``), the lowest exponent
is ``log(min large / max small)``, the highest ``log(max large / min small)``. Also the
top-decade exponent of the median wall time, user CPU and system CPU, the median CPU, user
and system seconds and minor page faults at the largest size, and the 1-minute load at the
start of each child (largest size's child last). Prints a Markdown table.

``--pool EX1 EX1-2``: several complete passes over the same rows; per pass the top-decade
exponent from its medians, then the exponents from the median of every timed fit of all
passes at each size (see :func:`pooled`).
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def rows_of(paths: list[str], run: str | None) -> dict:
    series: dict = {}
    for p in paths:
        for line in open(p):
            if not line.strip():
                continue
            r = json.loads(line)
            if r.get("pkg") != "twinimpact" or isinstance(r.get("error"), str):
                continue
            if run and r.get("run") != run:
                continue
            series.setdefault((r["case"], r["panel"]), {})[r["size"]] = r
    return series


def _b(x0, x1, y0, y1):
    return float(np.log(y1 / y0) / np.log(x1 / x0)) if y0 > 0 and y1 > 0 else float("nan")


def table(series: dict) -> str:
    out = ["| case | panel | CPU s at 1e5 / 1e6 / 1e7 | exponent all sizes (CPU) "
           "| top decade (CPU median) | top decade spread (min-max) | top decade wall "
           "| top decade user / system | user / system s at 1e7 | minor faults at 1e7 "
           "| fits at 1e7 | load at the start (1e5 / 1e6 / 1e7) |",
           "|" + "---|" * 12]
    for (case, panel), by in series.items():
        sz = sorted(by)
        if len(sz) < 2:
            continue
        rs = [by[s] for s in sz]
        n = np.array([r["rows"] for r in rs], float)
        cpu = np.array([r["cpu_s"] for r in rs], float)
        ball = float(np.polyfit(np.log(n), np.log(cpu), 1)[0])
        lo, hi = rs[-2], rs[-1]
        x0, x1 = lo["rows"], hi["rows"]
        top = _b(x0, x1, lo["cpu_s"], hi["cpu_s"])
        c0, c1 = lo.get("cpu_times") or [lo["cpu_s"]], hi.get("cpu_times") or [hi["cpu_s"]]
        smin, smax = _b(x0, x1, max(c0), min(c1)), _b(x0, x1, min(c0), max(c1))
        wall = _b(x0, x1, lo["median_s"], hi["median_s"])
        us = f"{_b(x0, x1, lo['user_s'], hi['user_s']):.2f} / " \
             f"{_b(x0, x1, lo['sys_s'], hi['sys_s']):.2f}"
        loads = " / ".join(r["load"].split("-")[0] for r in rs)
        out.append(f"| {case} | {panel} | {' / '.join(f'{v:.3g}' for v in cpu)} | {ball:.2f} "
                   f"| {top:.2f} | {smin:.2f}-{smax:.2f} | {wall:.2f} | {us} "
                   f"| {hi['user_s']:.3g} / {hi['sys_s']:.3g} | {hi.get('minflt', 0):,.0f} "
                   f"| {len(c1)} | {loads} |")
    return "\n".join(out)


def pooled(paths: list[str], runs: list[str]) -> str:
    """Markdown: the same series from several passes (``runs``, each a complete run of the
    same rows): per pass the top-decade exponent from its medians, then the exponents
    from the median over every timed fit of all passes at each size (all sizes, top
    decade, the top decade's spread from the fits' min / max), and the top-decade
    exponents of the pooled user and system CPU medians."""
    per = {r: rows_of(paths, r) for r in runs}
    # the series every pass completed (the same sizes, at least two)
    keys = [k for k in per[runs[0]] if len(per[runs[0]][k]) >= 2
            and all(k in per[r] and set(per[r][k]) == set(per[runs[0]][k]) for r in runs)]
    out = ["| case | panel | " + " | ".join(f"top decade {r}" for r in runs)
           + " | CPU s at 1e5 / 1e6 / 1e7 (pooled medians) | exponent all sizes "
           "| top decade | top decade spread (min-max) | top decade user / system "
           "| user / system s at 1e7 | load at the starts |",
           "|" + "---|" * (8 + len(runs))]
    for key in keys:
        tops, cpu, user, sys_, rows, lo_hi, loads = [], [], [], [], [], [], []
        for r in runs:
            by = per[r][key]
            sz = sorted(by)
            a, b = by[sz[-2]], by[sz[-1]]
            tops.append(f"{_b(a['rows'], b['rows'], a['cpu_s'], b['cpu_s']):.2f}")
        sizes = sorted(per[runs[0]][key])
        for s in sizes:
            ch = [per[r][key][s] for r in runs if s in per[r][key]]
            allc = [v for c in ch for v in (c.get("cpu_times") or [c["cpu_s"]])]
            cpu.append(float(np.median(allc)))
            lo_hi.append((min(allc), max(allc)))
            user.append(float(np.median([v for c in ch for v in c.get("user_times", [])])))
            sys_.append(float(np.median([v for c in ch for v in c.get("sys_times", [])])))
            rows.append(float(np.mean([c["rows"] for c in ch])))
            loads.append("/".join(c["load"].split("-")[0] for c in ch))
        n = np.array(rows)
        ball = float(np.polyfit(np.log(n), np.log(cpu), 1)[0])
        x0, x1 = n[-2], n[-1]
        top = _b(x0, x1, cpu[-2], cpu[-1])
        smin, smax = _b(x0, x1, lo_hi[-2][1], lo_hi[-1][0]), _b(x0, x1, lo_hi[-2][0], lo_hi[-1][1])
        out.append(f"| {key[0]} | {key[1]} | {' | '.join(tops)} "
                   f"| {' / '.join(f'{v:.3g}' for v in cpu)} | {ball:.2f} | {top:.2f} "
                   f"| {smin:.2f}-{smax:.2f} | {_b(x0, x1, user[-2], user[-1]):.2f} / "
                   f"{_b(x0, x1, sys_[-2], sys_[-1]):.2f} | {user[-1]:.3g} / {sys_[-1]:.3g} "
                   f"| {' ; '.join(loads)} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("jsonl", nargs="+")
    ap.add_argument("--run")
    ap.add_argument("--pool", nargs="+", metavar="RUN",
                    help="passes of the same rows: per-pass and pooled exponents")
    a = ap.parse_args()
    print(pooled(a.jsonl, a.pool) if a.pool else table(rows_of(a.jsonl, a.run)))


if __name__ == "__main__":
    main()
