"""One doubly robust ATT(g, t) with a covariate by hand: which normalisation is R's?

On a balanced panel with a covariate twinimpact's and diff-diff 3.13's DR ATT(g, t) differ
(~1e-5). R DRDID ``drdid_panel`` (what R did's ``est_method = "dr"`` calls on a panel)
normalises both terms by the mean of their weights:

    eta.treat = mean(w.treat * (dy - out)) / mean(w.treat)
    eta.cont  = mean(w.cont  * (dy - out)) / mean(w.cont),  w.cont = ps (1 - D) / (1 - ps)

diff-diff's ``CallawaySantAnna._doubly_robust`` divides the control term by the number of
treated units instead (``sum(w_c * (m - dy)) / n_t``). This script computes the cell both
ways from the harness's panel (logit by Newton, OLS of the comparison units' change on the
covariate), and twinimpact's and diff-diff's value of the same cell, each package in its
own interpreter. Run from the repository root::

    PYTHONPATH=src python benchmarks/cs_dr_oracle.py --kind balanced --rows 1e5 --cell 2005 2007
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


def by_hand(kind: str, rows: float, g: int, t: int) -> dict:
    import numpy as np
    import run_table

    d = run_table._panel("cs_x_dr", kind, rows)
    base = g - 1 if t >= g else t - 1  # varying base period
    w = d.pivot(index="unit", columns="year", values="y")
    coh = d.groupby("unit")["cohort"].first().reindex(w.index).to_numpy()
    x = d[d["year"] == min(base, t)].set_index("unit")["x"].reindex(w.index).to_numpy()
    keep = (coh == g) | (coh == 0)
    dy = (w[t] - w[base]).to_numpy()[keep]
    D = (coh[keep] == g).astype(float)
    X = np.column_stack([np.ones(keep.sum()), x[keep]])
    b = np.zeros(2)
    for _ in range(50):  # logit MLE
        p = 1 / (1 + np.exp(-X @ b))
        b += np.linalg.solve(X.T @ (X * (p * (1 - p))[:, None]), X.T @ (D - p))
    p = 1 / (1 + np.exp(-X @ b))
    c = D == 0
    out = X @ np.linalg.lstsq(X[c], dy[c], rcond=None)[0]
    w_t, w_c = D, (1 - D) * p / (1 - p)
    r_att = np.mean(w_t * (dy - out)) / np.mean(w_t) - np.mean(w_c * (dy - out)) / np.mean(w_c)
    nt_att = np.mean((dy - out)[D == 1]) + np.sum(w_c[c] * (out - dy)[c]) / D.sum()
    return {"R drdid_panel (Hajek control mean)": float(r_att),
            "control term over n_treated": float(nt_att),
            "propensity score range": [float(p.min()), float(p.max())]}


def package(kind: str, rows: float, g: int, t: int, pkg: str) -> float:
    import run_table
    warnings.simplefilter("ignore")
    d = run_table._panel("cs_x_dr", kind, rows)
    if pkg == "twinimpact":
        import twinimpact as ti
        f = ti.callaway_santanna(d, outcome="y", unit="unit", time="year", cohort="cohort",
                                 covariates=["x"]).to_frame()
        return float(f.loc[(f["cohort"] == g) & (f["time"] == t), "estimate"].iloc[0])
    import diff_diff as dd
    r = dd.CallawaySantAnna(estimation_method="dr").fit(
        d, outcome="y", unit="unit", time="year", first_treat="cohort", covariates=["x"])
    return float(r.group_time_effects[(g, t)]["effect"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", default="balanced")
    ap.add_argument("--rows", type=float, default=1e5)
    ap.add_argument("--cell", nargs=2, type=int, default=[2005, 2007])
    ap.add_argument("--peer-python", default="/tmp/venv-peers/bin/python")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    sys.path.insert(0, str(HERE))
    g, t = a.cell
    if a.child:
        print(json.dumps(package(a.kind, a.rows, g, t, a.child)))
        return
    out = by_hand(a.kind, a.rows, g, t)
    out["twinimpact"] = package(a.kind, a.rows, g, t, "twinimpact")
    p = subprocess.run([a.peer_python, __file__, "--kind", a.kind, "--rows", repr(a.rows),
                        "--cell", str(g), str(t), "--child", "diff-diff"], check=True,
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    out["diff-diff"] = json.loads(p.stdout.strip().splitlines()[-1])
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
