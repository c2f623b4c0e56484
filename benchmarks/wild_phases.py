"""CPU time of ``ti.wild_cluster_bootstrap`` by phase, for one source tree (run WB).

One process per (tree, panel, size): the run_table ``wild`` panel (balanced / unequal /
gaps_str, 50 clusters), a warm-up fit on the 1e5-row panel of the same kind, then
``--repeats`` fits of the big panel, each timed as a whole (``time.process_time``, user /
system from ``getrusage``, minor faults) and by phase: the phases are the module's own
functions, wrapped at module level (every call of them is timed, so the wrapping costs a
few microseconds per call, nothing per row). Phases that a tree lacks read 0.

Usage (the twinimpact imported is the one on PYTHONPATH)::

    PYTHONPATH=/tmp/wb_31b4e8b/src OPENBLAS_NUM_THREADS=1 \\
        python benchmarks/wild_phases.py --kind balanced --size 1e7 --repeats 3 --tag 31b4e8b

Prints one JSON line per run (``--out`` appends it to a file too).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: the module functions timed, in call order (``factorize`` is also called inside
#: ``_sorted_codes`` where that exists: its time is part of ``_sorted_codes``'s)
PHASES = ("as_frame", "require_frame", "_sorted_codes", "factorize", "_cluster_moments",
          "draw_weights", "_WCRPath.__init__", "_WCRPath.statistics", "_p_value", "_invert")


def _wrap(obj, name: str, acc: dict, key: str) -> None:
    fn = getattr(obj, name)

    def timed(*a, **kw):
        c0 = time.process_time()
        try:
            return fn(*a, **kw)
        finally:
            acc[key] = acc.get(key, 0.0) + time.process_time() - c0
    setattr(obj, name, timed)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", default="balanced")
    ap.add_argument("--size", type=float, default=1e6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--p-only", action="store_true", help="conf_int=False (the wild_p case)")
    ap.add_argument("--no-phases", action="store_true", help="no wrapping (whole call only)")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    import numpy as np
    import run_table

    import twinimpact as ti
    from twinimpact.inference import wild_bootstrap as wb

    acc: dict = {}
    if not a.no_phases:
        for name in PHASES:
            if "." in name:
                cls, meth = name.split(".")
                if hasattr(wb, cls):
                    _wrap(getattr(wb, cls), meth, acc, name)
            elif hasattr(wb, name):
                _wrap(wb, name, acc, name)

    extra = {"conf_int": False} if a.p_only else {}

    def fit(d):
        r = ti.wild_cluster_bootstrap(d, outcome="y", regressors=["x"], cluster="g", term="x",
                                      n_reps=9999, seed=0, **extra)
        return [r.p_value, *r.conf_int, r.statistic]

    fit(run_table._panel("wild", a.kind, 1e5))  # warm-up (imports, caches)
    d = run_table._panel("wild", a.kind, a.size)
    rows = []
    for _ in range(a.repeats):
        acc.clear()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        c0 = time.process_time()
        out = fit(d)
        cpu = time.process_time() - c0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        rows.append({"cpu_s": cpu, "user_s": r1.ru_utime - r0.ru_utime,
                     "sys_s": r1.ru_stime - r0.ru_stime,
                     "minflt": r1.ru_minflt - r0.ru_minflt,
                     "phases": {k: round(v, 5) for k, v in acc.items()}})
    med = statistics.median(r["cpu_s"] for r in rows)
    line = {"run": "WB", "tag": a.tag, "src": os.environ.get("PYTHONPATH", ""),
            "kind": a.kind, "size": a.size, "rows": len(d), "p_only": a.p_only,
            "phases_wrapped": not a.no_phases, "cpu_s": med,
            "cpu_all": [round(r["cpu_s"], 4) for r in rows],
            "user_all": [round(r["user_s"], 4) for r in rows],
            "sys_all": [round(r["sys_s"], 4) for r in rows],
            "minflt_all": [r["minflt"] for r in rows],
            "phases_all": [r["phases"] for r in rows],
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "values": [float(v) for v in np.asarray(out)],
            "load": os.getloadavg()[0], "utc": time.strftime("%H:%M", time.gmtime())}
    s = json.dumps(line)
    print(s)
    if a.out:
        with open(a.out, "a") as f:
            f.write(s + "\n")


if __name__ == "__main__":
    main()
