"""One child of the CS singular pre-test A/B (RESULTS.md, "cssvd").

A Callaway-Sant'Anna fit (+ dynamic and simple aggregations) on
``staggered_panel(rows, n_periods=periods, n_cohorts=cohorts, miss_random=0.05)``; after a
warm-up, ``reps`` timed fits; one JSON line with the medians, the pre-test numbers and the
load. The code measured is the one on PYTHONPATH; the environment variable CODE labels it.

    CODE=new PYTHONPATH=src python benchmarks/cs_pretest_ab.py 1e5 40 50 3
"""

import json
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import panels

import twinimpact as ti


def main() -> None:
    warnings.simplefilter("ignore")
    rows, nc, periods, reps = (float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                               int(sys.argv[4]))
    d = panels.staggered_panel(rows, n_periods=periods, n_cohorts=nc, miss_random=0.05)
    kw = dict(outcome="y", unit="unit", time="year", cohort="cohort",
              allow_unbalanced_panel=True)

    def fit():
        r = ti.callaway_santanna(d, **kw)
        r.aggregate("dynamic")
        r.aggregate("simple")
        return r

    r = fit()
    cpu, wall = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fit()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    pt = r.pretrend_test
    print(json.dumps({
        "code": os.environ.get("CODE", ""), "rows": rows, "n_rows_actual": len(d),
        "cohorts": nc, "periods": periods, "n_units": r.diagnostics["n_units"],
        "pre_cells": pt.n_coefficients, "singular": not pt.computed, "rank": pt.rank,
        "ext_stat": None if pt.extension is None else pt.extension["statistic"],
        "stat": pt.statistic if pt.computed else None,
        "wall_med": statistics.median(wall), "cpu_med": statistics.median(cpu),
        "wall": wall, "cpu": cpu, "load": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
