"""Per-phase CPU profile of one TWFE event study on the ``strkey_unbal`` panel (strid2, issue
13 item 3): ``python benchmarks/strkey_phases.py SIZE [str|intshuf|strsorted|cat]``
(``intshuf``: the unit ids replaced by integers in the same shuffled row order). A 1e5
warm-up, one fit under cProfile with a process-time clock, one plain fit; appends the 60
largest cumulative and 40 largest own times to benchmarks/results_strid2_phases.jsonl. Run
from the repository root with PYTHONPATH=src; under ``flock /work/bench.lock`` from 1e6 rows."""

import cProfile
import json
import os
import pstats
import resource
import sys
import time

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import panels  # noqa: E402

import twinimpact as ti  # noqa: E402

KW = dict(outcome="y", unit="unit", time="year", cohort="cohort")


def make(size: float, variant: str) -> pd.DataFrame:
    d = panels.make("strkey_unbal", size)
    if variant == "intshuf":  # same row order, integer keys
        d["unit"] = pd.factorize(d["unit"])[0].astype(np.int64) * 7 + 3
    elif variant == "strsorted":
        d = d.sort_values(["unit", "year"], kind="stable").reset_index(drop=True)
    elif variant == "cat":
        d["unit"] = d["unit"].astype("category")
    return d


def main() -> None:
    size = float(sys.argv[1])
    variant = sys.argv[2] if len(sys.argv) > 2 else "str"
    ti.event_study(make(1e5, variant), **KW)
    d = make(size, variant)
    pr = cProfile.Profile(time.process_time)
    c0 = time.process_time()
    pr.enable()
    res = ti.event_study(d, **KW)
    pr.disable()
    cpu = time.process_time() - c0
    c1, r2 = time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
    ti.event_study(d, **KW)  # plain re-run without the profiler
    cpu2, r3 = time.process_time() - c1, resource.getrusage(resource.RUSAGE_SELF)
    rows = [(ct, tt, nc, f"{os.path.basename(fn)}:{ln}:{name}")
            for (fn, ln, name), (_cc, nc, tt, ct, _callers) in pstats.Stats(pr).stats.items()]
    out = {"size": size, "variant": variant, "rows": len(d), "cpu_prof": cpu, "cpu": cpu2,
           "user": r3.ru_utime - r2.ru_utime, "sys": r3.ru_stime - r2.ru_stime,
           "load": os.getloadavg()[0], "params0": float(res.params.iloc[0]),
           "cum": sorted([(round(c, 4), round(t, 4), n, k) for c, t, n, k in rows],
                         reverse=True)[:60],
           "tot": sorted([(round(t, 4), round(c, 4), n, k) for c, t, n, k in rows],
                         reverse=True)[:40],
           "script": "strkey_phases"}
    print(json.dumps({k: out[k] for k in ("size", "variant", "rows", "cpu_prof", "cpu",
                                          "user", "sys", "load")}))
    with open("benchmarks/results_strid2_phases.jsonl", "a") as fh:
        fh.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
