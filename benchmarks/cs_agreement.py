"""Callaway-Sant'Anna: our estimates against diff-diff's, cell by cell.

``run_table.py --cases cs`` compares one number (the simple ATT). This script compares
every ATT(g, t) and its analytic standard error, every event-study (dynamic) effect and
its standard error, and the overall ATT / SE, on the harness's panels (``panels.make``),
for both base periods; options as in the harness (doubly robust, never-treated
comparisons, no covariate, analytic influence-function SEs clustered by unit, R did's
unbalanced-panel path when rows are missing).

diff-diff runs in its own interpreter (``--peer-python``); its numbers come back as JSON.

``--cases`` compares the options of ``run_table.CS_OPTION_CASES`` instead (a covariate
under dr / ipw / reg, not-yet-treated comparisons, the multiplier bootstrap), on that
case's panel (``run_table._panel``: with the covariate ``x``); the bootstrap's standard
errors are random draws on both sides (compared as a ratio, not an agreement).

    python benchmarks/cs_agreement.py --sizes 1e5 1e6 --jsonl benchmarks/cs_agreement.jsonl
    python benchmarks/cs_agreement.py --cases cs_x_dr cs_x_ipw cs_x_reg cs_nyt cs_boot \
        --sizes 1e5 --bases varying universal --jsonl benchmarks/cs_agreement_opts.jsonl
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
KINDS = ["balanced", "unbalanced", "gaps", "entry_exit", "strkey_unbal", "cohorts20"]


def _unbalanced(d) -> bool:
    return len(d) != d["unit"].nunique() * d["year"].nunique()


def _data(kind: str, size: float, case: str | None):
    """The harness's panel: ``panels.make`` or, for an option case, ``run_table``'s."""
    if case is None:
        import panels
        return panels.make(kind, size), {}
    import run_table
    return run_table._panel(case, kind, size), dict(run_table.CS_OPTION_CASES[case])


def peer(kind: str, size: float, base: str, case: str | None = None) -> dict:
    """diff-diff's cells, event study and overall ATT (run in the peer interpreter)."""
    import diff_diff as dd
    warnings.simplefilter("ignore")
    d, opt = _data(kind, size, case)
    boot = ({"n_bootstrap": opt["n_reps"], "bootstrap_weights": "mammen",
             "seed": opt["seed"]} if "n_reps" in opt else {})
    r = dd.CallawaySantAnna(control_group=opt.get("control_group", "never_treated"),
                            estimation_method=opt.get("method", "dr"),
                            base_period=base, allow_unbalanced_panel=_unbalanced(d),
                            **boot).fit(
        d, outcome="y", unit="unit", time="year", first_treat="cohort",
        covariates=opt.get("covariates"), aggregate="event_study")
    cells = [[float(g), float(t), float(v["effect"]), float(v["se"])]
             for (g, t), v in r.group_time_effects.items()]
    es = [[float(e), float(v["effect"]), float(v["se"])]
          for e, v in (r.event_study_effects or {}).items()]
    return {"cells": cells, "es": es, "att": float(r.overall_att),
            "se": float(r.overall_se)}


def ours(kind: str, size: float, base: str, case: str | None = None) -> dict:
    import twinimpact as ti
    warnings.simplefilter("ignore")
    d, opt = _data(kind, size, case)
    r = ti.callaway_santanna(d, outcome="y", unit="unit", time="year", cohort="cohort",
                             base_period=base, allow_unbalanced_panel=_unbalanced(d),
                             **opt)
    f = r.to_frame()
    cells = f[["cohort", "time", "estimate", "std_error"]].to_numpy(float).tolist()
    e = r.aggregate("dynamic").to_frame()
    e = e[e["term"] != "ATT"]
    es = e[["rel_time", "estimate", "std_error"]].to_numpy(float).tolist()
    s = r.aggregate("simple").to_frame().iloc[0]
    return {"cells": cells, "es": es, "att": float(s["estimate"]),
            "se": float(s["std_error"]), "rows": len(d), "units": len(r.units)}


def compare(o: dict, p: dict) -> dict:
    """Max abs / rel differences over the keys both report (cells matched on (g, t),
    event times on e); NaN SEs (diff-diff's universal-base reference cell) must match
    our zero-variance normalisation: those are counted, not compared."""
    import numpy as np
    out = {}
    for name, key_len in (("cells", 2), ("es", 1)):
        po = {tuple(r[:key_len]): r[key_len:] for r in o[name]}
        pp = {tuple(r[:key_len]): r[key_len:] for r in p[name]}
        common = sorted(set(po) & set(pp))
        out[f"{name}_n"] = [len(po), len(pp), len(common)]
        for j, what in enumerate(("est", "se")):
            a = np.array([po[k][j] for k in common], float)
            b = np.array([pp[k][j] for k in common], float)
            ok = np.isfinite(a) & np.isfinite(b) & ~((a == 0) & (what == "se"))
            out[f"{name}_{what}_skipped"] = int((~ok).sum())
            a, b = a[ok], b[ok]
            ad = np.abs(a - b)
            out[f"{name}_{what}_abs"] = float(ad.max()) if len(ad) else 0.0
            out[f"{name}_{what}_rel"] = float((ad / np.maximum(np.abs(b), 1e-300)).max()) \
                if len(ad) else 0.0
            if what == "se" and len(ad):
                # diff-diff's SE / ours, against 1 and against sqrt(G / (G - 1)), G units
                # (diff-diff clusters R did's unbalanced-panel path by a synthesized
                # survey design with PSU = unit, whose variance carries G / (G - 1))
                ratio = b / a
                g = o["units"]
                out[f"{name}_se_ratio_range"] = [float(ratio.min()), float(ratio.max())]
                out[f"{name}_se_ratio_vs_g_correction"] = float(
                    np.abs(ratio - np.sqrt(g / (g - 1))).max())
    for what in ("att", "se"):
        out[f"overall_{what}_abs"] = abs(o[what] - p[what])
        out[f"overall_{what}_rel"] = abs(o[what] - p[what]) / max(abs(p[what]), 1e-300)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e5])
    ap.add_argument("--panels", nargs="+", default=KINDS)
    ap.add_argument("--bases", nargs="+", default=["varying", "universal"])
    ap.add_argument("--peer-python", default="/tmp/venv-peers/bin/python")
    ap.add_argument("--jsonl", default=None)
    ap.add_argument("--cases", nargs="+", default=[None],
                    help="run_table.CS_OPTION_CASES names (default: the plain fit)")
    ap.add_argument("--peer", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    sys.path.insert(0, str(HERE))
    if a.peer:
        case = None if a.peer[3] == "-" else a.peer[3]
        print(json.dumps(peer(a.peer[0], float(a.peer[1]), a.peer[2], case)))
        return
    for case, kind, size, base in itertools.product(a.cases, a.panels, a.sizes, a.bases):
        p = subprocess.run([a.peer_python, __file__, "--peer", kind, repr(size), base,
                            case or "-"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""},
                           check=True)
        pr = json.loads(p.stdout.strip().splitlines()[-1])
        o = ours(kind, size, base, case)
        row = {**({"case": case} if case else {}), "panel": kind, "size": size,
               "rows": o["rows"], "base": base, **compare(o, pr)}
        print(json.dumps(row), flush=True)
        if a.jsonl:
            with open(a.jsonl, "a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
