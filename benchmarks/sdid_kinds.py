"""One synthetic DiD fit in this process on a variant of issue 13's SDID panel
(benchmarks/panels.SDID_KINDS) at N units x 40, from the tree given (its src/); prints
one JSON line (CPU of the fit, SE as repr, peak RSS). Run PK (sdidprune):

    for kind in tr1 tr20 post50_noisy strkey; do for se in jackknife bootstrap; do
      for tree in <snapshot of the change> <snapshot of main>; do
        OPENBLAS_NUM_THREADS=1 python benchmarks/sdid_kinds.py $tree $kind $se 25000 20
    done; done; done
"""
from __future__ import annotations

import json
import resource
import sys
from pathlib import Path


def main() -> None:
    tree, kind, se = sys.argv[1], sys.argv[2], sys.argv[3]
    units, reps = int(sys.argv[4]), int(sys.argv[5])
    sys.path.insert(0, tree + "/src")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import panels

    import twinimpact as ti

    d = panels.sdid_panel(units, 40, **panels.SDID_KINDS[kind])
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    r = ti.synthetic_did(d, outcome="y", unit="unit", time="year", treated="treated",
                         se=se, n_reps=reps, seed=0)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"tree": tree, "kind": kind, "se": se, "units": units,
                      "cpu": r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime,
                      "se_value": repr(float(r.std_errors.iloc[0])),
                      "peak_mb": r1.ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
