"""Where a fit grows faster than its rows (issue 13 item 3, run EX1): the cost of every
function of one ``run_table.py`` case at two sizes, and what exceeds linear growth.

``python benchmarks/excess_phases.py CASE PANEL [--sizes 1e6 1e7] [--repeats 3]``

In one process (one BLAS / numba thread): a warm-up fit on a 1e5-row panel of the same
kind, then for each size the panel of ``run_table._panel`` and ``--repeats`` plain fits of
``run_table._fit_fn`` (CPU from ``time.process_time``, user / system time and minor / major
page faults from ``getrusage``, and the system-wide huge-page faults and direct compaction
stalls of ``/proc/vmstat`` around each fit; medians, with min / max) and one fit under cProfile with a
process-time clock. For every function the script reports its own (exclusive) CPU at each
size and its *excess over linear*: ``own(large) - own(small) * rows(large) / rows(small)``
-- the seconds by which it grew faster than the rows (negative: slower). The excesses add
up to the whole call's excess, so the functions at the top of the list are where a
top-decade exponent above 1 comes from. Appends one JSON line per run to
``benchmarks/results_excess_phases.jsonl`` (``--jsonl``) and prints the table.

Run from the repository root with ``PYTHONPATH=<source tree>``; from 1e6 rows under
``flock /work/bench.lock``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import statistics
import sys
import time
from pathlib import Path

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_v] = "1"

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run_table  # noqa: E402


def _usage() -> tuple[float, float, float, int, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.process_time(), r.ru_utime, r.ru_stime, r.ru_minflt, r.ru_majflt


#: system-wide kernel counters read around each plain fit (other jobs add to them too):
#: transparent huge pages faulted in, and direct compactions the faulting task stalled on
VMSTAT = ("thp_fault_alloc", "compact_stall", "compact_success", "compact_fail")


def _vmstat() -> list[int]:
    try:
        kv = dict(line.split() for line in open("/proc/vmstat"))
    except OSError:
        return [0] * len(VMSTAT)
    return [int(kv.get(k, 0)) for k in VMSTAT]


def measure(case: str, kind: str, size: float, repeats: int) -> dict:
    d = run_table._panel(case, kind, size)
    fit = run_table._fit_fn(case, "twinimpact", d)
    fits, vm = [], []
    for _ in range(repeats):
        v0 = _vmstat()
        a = _usage()
        fit()
        b = _usage()
        vm.append([y - x for x, y in zip(v0, _vmstat(), strict=True)])
        fits.append([y - x for x, y in zip(a, b, strict=True)])
    pr = cProfile.Profile(time.process_time)
    pr.enable()
    fit()
    pr.disable()
    own: dict[str, float] = {}
    cum: dict[str, float] = {}
    for (fn, ln, name), (_cc, _nc, tt, ct, _callers) in pstats.Stats(pr).stats.items():
        key = f"{Path(fn).name}:{ln}:{name}" if fn != "~" else name
        own[key] = own.get(key, 0.0) + tt
        cum[key] = max(cum.get(key, 0.0), ct)
    cols = ("cpu", "user", "sys", "minflt", "majflt")
    med = {c: statistics.median(f[i] for f in fits) for i, c in enumerate(cols)}
    spread = {c: [min(f[i] for f in fits), max(f[i] for f in fits)] for i, c in enumerate(cols)}
    return {"rows": len(d), "fits": fits, "vmstat": dict(zip(VMSTAT, zip(*vm, strict=True), strict=True)),
            "median": med, "spread": spread, "own": own,
            "cum": cum}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case")
    ap.add_argument("panel")
    ap.add_argument("--sizes", nargs=2, type=float, default=[1e6, 1e7])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--run-id", default="")
    ap.add_argument("--jsonl", default=str(HERE / "results_excess_phases.jsonl"))
    a = ap.parse_args()
    run_table._fit_fn(a.case, "twinimpact", run_table._panel(a.case, a.panel, 1e5))()
    load0 = os.getloadavg()
    lo, hi = (measure(a.case, a.panel, s, a.repeats) for s in a.sizes)
    k = hi["rows"] / lo["rows"]
    keys = set(lo["own"]) | set(hi["own"])
    excess = {f: hi["own"].get(f, 0.0) - k * lo["own"].get(f, 0.0) for f in keys}
    top = sorted(keys, key=lambda f: -abs(excess[f]))[: a.top]
    import numpy as np

    def b(c):
        return float(np.log(hi["median"][c] / lo["median"][c]) / np.log(k)) \
            if lo["median"][c] > 0 and hi["median"][c] > 0 else None

    import twinimpact
    out = {"script": "excess_phases", "run": a.run_id, "case": a.case, "panel": a.panel,
           "src": str(Path(twinimpact.__file__).parents[1]),
           "rows": [lo["rows"], hi["rows"]], "repeats": a.repeats,
           "median": [lo["median"], hi["median"]], "spread": [lo["spread"], hi["spread"]],
           "fits": [lo["fits"], hi["fits"]], "vmstat": [lo["vmstat"], hi["vmstat"]],
           "exponent": {c: b(c) for c in ("cpu", "user", "sys", "minflt")},
           "excess_total_cpu": hi["median"]["cpu"] - k * lo["median"]["cpu"],
           "top": [[f, round(lo["own"].get(f, 0.0), 4), round(hi["own"].get(f, 0.0), 4),
                    round(excess[f], 4), round(lo["cum"].get(f, 0.0), 4),
                    round(hi["cum"].get(f, 0.0), 4)] for f in top],
           "loadavg": [list(load0), list(os.getloadavg())],
           "utc": time.strftime("%H:%M:%S", time.gmtime())}
    with open(a.jsonl, "a") as fh:
        fh.write(json.dumps(out) + "\n")
    m0, m1 = lo["median"], hi["median"]
    print(f"{a.case} {a.panel} {lo['rows']:,} -> {hi['rows']:,} rows, load "
          f"{load0[0]:.2f}-{os.getloadavg()[0]:.2f}")
    for c in ("cpu", "user", "sys", "minflt", "majflt"):
        print(f"  {c:7s} {m0[c]:12.4g} -> {m1[c]:12.4g}  exponent "
              f"{b(c) if b(c) is not None else float('nan'):.3f}  "
              f"(spread at the large size {hi['spread'][c][0]:.4g}-{hi['spread'][c][1]:.4g})")
    for lab, m in (("small", lo), ("large", hi)):
        print(f"  per fit at the {lab} size: CPU " + " ".join(f"{f[0]:.3f}" for f in m["fits"])
              + " | sys " + " ".join(f"{f[2]:.3f}" for f in m["fits"])
              + " | minflt " + " ".join(str(f[3]) for f in m["fits"])
              + " | " + ", ".join(f"{k} {list(v)}" for k, v in m["vmstat"].items()))
    print(f"  CPU in excess of linear: {out['excess_total_cpu']:.3f} s; by function "
          "(own CPU small -> large, excess, cumulative small -> large):")
    for f, s0, s1, e, c0, c1 in out["top"]:
        print(f"    {e:+8.3f}  own {s0:7.3f} -> {s1:7.3f}  cum {c0:7.3f} -> {c1:7.3f}  {f}")


if __name__ == "__main__":
    main()
