"""Wide numeric unit ids hashed or grouped by their bytes, in one process (run GFI).

One panel (``panels.staggered_panel(size, miss_random=0.05, key=..., shuffle=True)``),
the same fit timed with ``unitorder.FIXED_MIN_ROWS`` switched between its value (the
byte grouping of :func:`twinimpact.core.unitorder.group_fixed`) and ``1 << 40``
(``pandas.factorize``, as before it), alternating, ``--repeats`` times each; CPU time
(``time.process_time``) medians after a warm-up call and whether the two modes returned the same numbers.
Kinds: ``sparsekey`` (sparse int64 ids), ``floatkey`` (0.5 x unit), ``floatmiss`` (the
same with 1% missing ids), ``intkey`` (a control: integer ids take neither path).

    PYTHONPATH=src python benchmarks/group_fixed_ab.py floatkey 1e7 --op prepare event_study cs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import panels

KEYS = {"sparsekey": "sparse", "floatkey": "float", "floatmiss": "float", "intkey": "int"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("kind", choices=sorted(KEYS))
    ap.add_argument("size", type=float)
    ap.add_argument("--op", nargs="+", default=["prepare", "event_study", "cs"],
                    choices=["prepare", "event_study", "cs"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--run-id", default="GFI")
    ap.add_argument("--jsonl", default=None, help="append one JSON line per op here")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    import twinimpact as ti
    from twinimpact.core import unitorder
    from twinimpact.core.validation import prepare_panel

    d = panels.staggered_panel(a.size, miss_random=0.05, key=KEYS[a.kind], shuffle=True)
    if a.kind == "floatmiss":
        u = d["unit"].to_numpy().copy()
        u[np.random.default_rng(1).random(len(u)) < 0.01] = np.nan
        d["unit"] = u
    kw = dict(outcome="y", unit="unit", time="year", cohort="cohort")

    def prepare():
        return prepare_panel(d, **kw, estimator="t", order_by_unit=True).unit_codes

    def event_study():
        return ti.event_study(d, **kw).params.to_numpy()

    def cs():
        r = ti.callaway_santanna(d, **kw, allow_unbalanced_panel=True)
        r.aggregate("dynamic")
        return r.aggregate("simple").params.to_numpy()

    on = unitorder.FIXED_MIN_ROWS
    for name in a.op:
        fn = {"prepare": prepare, "event_study": event_study, "cs": cs}[name]
        times: dict[str, list[float]] = {"hashed": [], "bytes": []}
        out: dict[str, np.ndarray] = {}
        fn()  # warm-up (compiled kernels, imports)
        for rep in range(a.repeats):
            for mode in ("hashed", "bytes") if rep % 2 == 0 else ("bytes", "hashed"):
                unitorder.FIXED_MIN_ROWS = on if mode == "bytes" else 1 << 40
                t = time.process_time()
                out[mode] = fn()
                times[mode].append(time.process_time() - t)
        unitorder.FIXED_MIN_ROWS = on
        line = {"run": a.run_id, "kind": a.kind, "size": a.size, "op": name,
                "hashed_cpu_s": statistics.median(times["hashed"]),
                "bytes_cpu_s": statistics.median(times["bytes"]),
                "same": bool(np.array_equal(out["hashed"], out["bytes"])),
                "rows": len(d), "utc": time.strftime("%H:%M", time.gmtime())}
        print(json.dumps(line), flush=True)
        if a.jsonl:
            with open(a.jsonl, "a") as f:
                f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
