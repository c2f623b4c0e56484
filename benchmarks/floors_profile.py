"""Where a fit's CPU goes, function by function, on two id kinds side by side (``floors``).

``python benchmarks/floors_profile.py SIZE KIND [KIND ...] [--op event_study|imputation|prepare]``

For each kind (:data:`floors.KINDS`, e.g. ``strlong`` against ``strlongmiss``: the same
panel with 1% of the unit ids missing) a child process makes the panel, warms the op up on
a 1e5-row panel of the same kind, then runs it ``--repeats`` times (default 1) under
``cProfile`` with a CPU clock (``time.process_time``). Printed: each kind's total and the
functions with the largest own (tottime) CPU, the kinds' columns side by side, so that a
phase that grows on one kind and not on the other shows. One BLAS thread; run from the
repository root with PYTHONPATH=src, from 1e6 rows under ``flock /work/bench.lock``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(size: float, kind: str, op: str, repeats: int) -> None:
    import cProfile
    import pstats
    import time

    sys.path.insert(0, str(HERE))
    import floors

    fn = floors._op(op, floors.make(kind, 1e5, "/tmp/floors-data"))
    fn()
    d = floors.make(kind, size, "/tmp/floors-data")
    fn = floors._op(op, d)
    prof = cProfile.Profile(time.process_time)
    c0 = time.process_time()
    for _ in range(repeats):
        prof.runcall(fn)
    total = (time.process_time() - c0) / repeats
    st = pstats.Stats(prof)
    rows = {}
    for (file, line, name), (_cc, nc, tt, ct, _callers) in st.stats.items():
        key = f"{Path(file).name}:{line}({name})"
        rows[key] = (tt / repeats, ct / repeats, nc // repeats)
    print(json.dumps({"kind": kind, "total": total, "rows": len(d), "funcs": rows}))


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(float(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("size", type=float)
    ap.add_argument("kinds", nargs="+")
    ap.add_argument("--op", default="event_study")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    res = []
    for kind in a.kinds:
        p = subprocess.run([sys.executable, __file__, "--child", repr(a.size), kind, a.op,
                            str(a.repeats)], capture_output=True, text=True, env=env)
        if p.returncode:
            sys.exit(p.stderr)
        res.append(json.loads(p.stdout.strip().splitlines()[-1]))
    keys = sorted({k for r in res for k in r["funcs"]},
                  key=lambda k: -max(r["funcs"].get(k, (0,))[0] for r in res))[:a.top]
    print(f"{a.op} at {a.size:.0e}: " + ", ".join(
        f"{r['kind']} {r['total']:.3f} s CPU ({r['rows']:,} rows)" for r in res)
        + f"; load {os.getloadavg()[0]:.1f}")
    print("own CPU s (cumulative s, calls) per kind | function")
    for k in keys:
        cells = []
        for r in res:
            tt, ct, nc = r["funcs"].get(k, (0.0, 0.0, 0))
            cells.append(f"{tt:7.3f} ({ct:6.3f}, {nc:>4})")
        print(" | ".join(cells) + " | " + k)


if __name__ == "__main__":
    main()
