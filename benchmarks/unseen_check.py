"""Estimates on the unseen panel kinds (:mod:`unseen_panels`): twinimpact against the peers,
the same quantities, and twinimpact against itself on the integer-id twin of each panel.

For each kind, one child per side (ours with ``PYTHONPATH=src``; pyfixest / diff-diff in
``--peer-python``) fits the panel and prints estimates and standard errors by label:

* TWFE event study: ours vs ``pyfixest.feols("y ~ i(rel_time, ref=-1) | unit + year",
  vcov={"CRV1": "unit"})`` (coefficients and SEs);
* imputation (BJS): overall ATT and horizons vs ``diff_diff.ImputationDiD(cluster="unit")``;
* did2s: event study vs ``diff_diff.TwoStageDiD(cluster="unit")``;
* Callaway-Sant'Anna (DR, never treated): every ATT(g,t), the dynamic aggregation and the
  simple ATT vs ``diff_diff.CallawaySantAnna``;
* Sun-Abraham (never treated, unit clusters): dynamic aggregation and simple ATT vs
  ``diff_diff.SunAbraham``.

Where the labels are relative periods the two sides are matched in sorted order (on
"step2" panels ours counts relative time in years, the panel's ``rel_time`` in periods).
Ours is also fitted on the twin panel with integer ids and integer years (same draws):
the estimates must agree to rounding. Differences reported: max |a - b| / max(|b|, 1e-12)
over the matched labels, for estimates and SEs separately.

    PYTHONPATH=src python benchmarks/unseen_check.py --size 2e4 [--kinds strlong step2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

KW = dict(outcome="y", unit="unit", time="year", cohort="cohort")


def _panel(kind: str, size: float, twin: bool = False):
    import panels
    from unseen_panels import UNSEEN_KINDS
    kw = dict(UNSEEN_KINDS[kind])
    if twin:
        kw.update(key="int", time="int")
    return panels.staggered_panel(size, **kw)


def _num(label) -> float:
    """The relative period of a label like 'rel_time=-3', 'C(rel_time)[T.-3.0]', -3."""
    import re
    if isinstance(label, int | float):
        return float(label)
    m = re.findall(r"-?\d+(?:\.\d+)?", str(label))
    return float(m[-1])


def _res(r, drop=("ATT",)):
    p, s = r.params, r.std_errors
    keep = [t for t in p.index if t not in drop]
    return {"labels": [str(t) for t in keep], "est": p[keep].tolist(), "se": s[keep].tolist()}


def ours(kind: str, size: float, twin: bool = False) -> dict:
    import twinimpact as ti
    warnings.simplefilter("ignore")
    d = _panel(kind, size, twin)
    out = {"rows": len(d), "units": int(d["unit"].nunique()),
           "unbalanced": bool(len(d) != d["unit"].nunique() * d["year"].nunique())}

    def run(name, f):
        try:
            out.update(f())
        except Exception as e:  # report, do not stop
            out[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
    run("es", lambda: {"es": _res(ti.event_study(d, **KW))})
    run("imp", lambda: {"imp_overall": _res(ti.imputation(d, **KW), drop=()),
                        "imp_h": _res(ti.imputation(d, **KW, horizons=True))})
    run("did2s", lambda: {"did2s": _res(ti.did2s(d, **KW, event_study=True))})

    def cs():
        c = ti.callaway_santanna(d, **KW, allow_unbalanced_panel=len(d) != d["unit"].nunique()
                                 * d["year"].nunique())
        gt = _res(c, drop=())
        return {"cs_gt": gt, "cs_dyn": _res(c.aggregate("dynamic")),
                "cs_simple": _res(c.aggregate("simple"), drop=())}
    run("cs_gt", cs)

    def sa():
        s = ti.sun_abraham(d, **KW, cluster="unit")
        return {"sa_dyn": _res(s.aggregate("dynamic")),
                "sa_simple": _res(s.aggregate("simple"), drop=())}
    run("sa_dyn", sa)
    return out


def peers(kind: str, size: float) -> dict:
    warnings.simplefilter("ignore")
    d = _panel(kind, size)
    out = {"rows": len(d)}

    def run(name, f):
        try:
            out.update(f())
        except Exception as e:
            out[name] = {"error": f"{type(e).__name__}: {e}"[:300]}

    def es():
        import pyfixest as pf
        r = pf.feols("y ~ i(rel_time, ref=-1) | unit + year", data=d, vcov={"CRV1": "unit"})
        return {"es": {"labels": list(r.coef().index), "est": r.coef().tolist(),
                       "se": r.se().tolist()}}
    run("es", es)
    import diff_diff as dd
    fk = dict(outcome="y", unit="unit", time="year", first_treat="cohort")

    def effects(eff, pos_only=False):
        keys = [k for k, v in eff.items() if v.get("n_obs", 1) != 0
                and not (v["se"] == 0 and v["effect"] == 0) and (k >= 0 or not pos_only)]
        return {"labels": [str(k) for k in keys],
                "est": [float(eff[k]["effect"]) for k in keys],
                "se": [float(eff[k]["se"]) for k in keys]}

    def imp():
        r = dd.ImputationDiD(cluster="unit").fit(d, **fk, aggregate="event_study")
        return {"imp_overall": {"labels": ["ATT"], "est": [float(r.overall_att)],
                                "se": [float(r.overall_se)]},
                "imp_h": effects(r.event_study_effects, pos_only=True)}
    run("imp", imp)
    if d["unit"].nunique() <= 5000:  # TwoStageDiD builds units x units
        run("did2s", lambda: {"did2s": effects(dd.TwoStageDiD(cluster="unit").fit(
            d, **fk, aggregate="event_study").event_study_effects)})

    def cs():
        unb = len(d) != d["unit"].nunique() * d["year"].nunique()
        r = dd.CallawaySantAnna(control_group="never_treated", estimation_method="dr",
                                allow_unbalanced_panel=unb).fit(d, **fk, aggregate="event_study")
        gt = r.group_time_effects
        keys = sorted(gt)
        return {"cs_gt": {"labels": [f"ATT({int(g)},{int(t)})" for g, t in keys],
                          "est": [float(gt[k]["effect"]) for k in keys],
                          "se": [float(gt[k]["se"]) for k in keys]},
                "cs_dyn": effects(r.event_study_effects),
                "cs_simple": {"labels": ["ATT"], "est": [float(r.overall_att)],
                              "se": [float(r.overall_se)]}}
    run("cs_gt", cs)

    def sa():
        r = dd.SunAbraham(control_group="never_treated", cluster="unit").fit(d, **fk)
        return {"sa_dyn": effects(r.event_study_effects),
                "sa_simple": {"labels": ["ATT"], "est": [float(r.overall_att)],
                              "se": [float(r.overall_se)]}}
    run("sa_dyn", sa)
    return out


def _match(a: dict, b: dict, by_rank: bool):
    import numpy as np
    if by_rank:
        ia = np.argsort([_num(x) for x in a["labels"]], kind="stable")
        ib = np.argsort([_num(x) for x in b["labels"]], kind="stable")
        if len(ia) != len(ib):
            return None
        pairs = list(zip(ia, ib, strict=True))
    else:
        pos = {lab: i for i, lab in enumerate(b["labels"])}
        pairs = [(i, pos[lab]) for i, lab in enumerate(a["labels"]) if lab in pos]
        if len(pairs) != len(a["labels"]) or len(pairs) != len(b["labels"]):
            return None
    out = []
    for key in ("est", "se"):
        x = np.array([a[key][i] for i, _ in pairs], float)
        y = np.array([b[key][j] for _, j in pairs], float)
        rel = np.abs(x - y) / np.maximum(np.abs(y), 1e-12)
        out.append(float(np.nanmax(rel)) if np.isfinite(rel).any() else 0.0)
        if np.isnan(x).sum() != np.isnan(y).sum():
            out[-1] = float("inf")
    return out


def _post(v: dict) -> dict:
    keep = [i for i, lab in enumerate(v["labels"]) if _num(lab) >= 0]
    return {k: [v[k][i] for i in keep] for k in ("labels", "est", "se")}


def compare(a: dict, b: dict, peer: bool = True) -> dict:
    """Max relative differences by quantity. Against diff-diff's Callaway-Sant'Anna on a
    panel with missing rows the peer's SEs are first divided by sqrt(G / (G - 1)), G =
    units (its documented survey-variance factor, RESULTS.md); did2s: horizons >= 0 only
    (diff-diff reports no pre-periods)."""
    import math
    res = {}
    for q, va in a.items():
        if not isinstance(va, dict) or q not in b:
            continue
        vb = b[q]
        if "error" in va or "error" in vb:
            res[q] = {"ours_error" if "error" in va else "peer_error":
                      (va if "error" in va else vb)["error"]}
            continue
        if q == "did2s" and peer:
            va, vb = _post(va), _post(vb)
        if q.startswith("cs_") and peer and a.get("unbalanced"):
            f = math.sqrt((a["units"] - 1) / a["units"])
            vb = {**vb, "se": [x * f for x in vb["se"]]}
        m = _match(va, vb, by_rank=q not in ("cs_gt", "imp_overall", "cs_simple", "sa_simple"))
        res[q] = ({"label_mismatch": [len(va["labels"]), len(vb["labels"])]} if m is None
                  else {"est": m[0], "se": m[1], "n": len(va["labels"])})
    return res


def _child(side: str, kind: str, size: float, py: str, twin: bool = False) -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT / "src") if side == "ours" else ""
    cmd = [py, __file__, "--child", side, kind, repr(size)] + (["--twin"] if twin else [])
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if p.returncode:
        return {"child_error": (p.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    from unseen_panels import UNSEEN_KINDS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", nargs="+", default=list(UNSEEN_KINDS))
    ap.add_argument("--size", type=float, default=2e4)
    ap.add_argument("--peer-python", default="/tmp/venv-peers/bin/python")
    ap.add_argument("--jsonl", default=str(HERE / "results_unseen_check.jsonl"))
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--twin", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        side, kind, size = a.child
        f = ours if side == "ours" else peers
        args = (kind, float(size)) + ((True,) if a.twin else ())
        print(json.dumps(f(*args)))
        return
    for kind in a.kinds:
        o = _child("ours", kind, a.size, sys.executable)
        p = _child("peers", kind, a.size, a.peer_python)
        twin_kind = UNSEEN_KINDS[kind].get("key", "int") != "int" or \
            UNSEEN_KINDS[kind].get("time") == "float"
        row = {"kind": kind, "size": a.size, "rows": o.get("rows"),
               "vs_peer": compare(o, p) if "child_error" not in o and "child_error" not in p
               else {"child_error": o.get("child_error") or p.get("child_error")}}
        if twin_kind:
            t = _child("ours", kind, a.size, sys.executable, twin=True)
            row["vs_int_twin"] = compare(o, t, peer=False) if "child_error" not in t else t
        with open(a.jsonl, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
