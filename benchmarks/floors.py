"""Our fits against the input's own floor, per kind of unit id (issue 13 item 3, ``floors``).

The question: where a fit's CPU grows faster than the rows on some kind of unit id, is it
our code, or does merely *reading* that input grow as fast? For each id kind this times,
in one child process per (kind, size) and in the same run:

* ours: ``ti.event_study(..., cohort=...)``, ``ti.imputation(..., horizons=True)`` (the
  fits of ``run_table.py``; ``digest``: a hash of params and vcov, to compare two source
  trees bit for bit) and ``prepare_panel(..., order_by_unit=True)`` alone (the
  preparation every panel estimator runs first);
* the floor, the cheapest things any estimator must do with that input:
  ``factorize`` (``pandas.factorize`` of the unit column: grouping the ids once by
  hashing), ``isna`` (``pandas.isna`` of the column: one look at every row's id; for an
  object column a read of every row's object header), ``pa_array`` (object columns:
  ``pyarrow.array`` of the column, reading every str's bytes once), ``gather`` (``x[perm]``
  of one float column by a random permutation of the rows: the memory traffic of
  putting shuffled rows in unit order, or of any per-row access in unit order).

Each op: CPU time (``time.process_time``) and its user / system split (``getrusage``),
minor page faults; ``op_peak_mb``: the peak resident memory of one extra untimed call
above what the process held before it (``VmHWM`` after a reset of the peak mark); median
of ``--repeats`` (the fits: ``--big-repeats`` from 5e6 rows),
after a warm-up of every op on a 1e5-row panel of the same kind in the same child. One
BLAS / numba thread. ``--lock FILE`` takes that flock(2) lock around each child of at
least 1e6 rows (released between children). Load (1-minute average) at the start and
end of each child is stored with its lines.

Id kinds (:data:`KINDS`): ``panels.staggered_panel`` keywords (5% of rows missing at
random, rows shuffled), or ``objcsv``: the ``objkey`` panel's columns unit, year, cohort,
y written once to ``--data-dir`` as CSV and read back with ``dtype={"unit": object}``
(what a user reading a CSV into object ids gets; the write is not timed).

Run from the repository root (PYTHONPATH=src; >= 1e6 rows under the lock)::

    python benchmarks/floors.py --kinds objkey catkey --sizes 1e5 1e6 1e7 --repeats 3 \\
        --lock /work/bench.lock --run-id FL1
    python benchmarks/floors.py --table benchmarks/results_floors.jsonl   # exponents
    python benchmarks/floors.py --table benchmarks/results_floors.jsonl --side --runs FL1

Lines are appended to ``benchmarks/results_floors.jsonl`` (``--jsonl``). ``--table``
prints, per run and kind, the CPU exponent of ``cost ~ rows^b`` of every op over all
sizes and over the top decade (largest two sizes), user CPU in brackets.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMBA_NUM_THREADS")

_BASE = {"miss_random": 0.05, "shuffle": True}
#: id kind -> panels.staggered_panel keywords ("objcsv": see the module docstring)
KINDS: dict[str, dict] = {
    "intkey": {**_BASE},
    "objkey": {**_BASE, "key": "object"},
    "objrows": {**_BASE, "key": "object_rows"},
    "objcsv": {**_BASE, "key": "object"},
    "catkey": {**_BASE, "key": "cat"},
    "sparsekey": {**_BASE, "key": "sparse"},
    "floatkey": {**_BASE, "key": "float"},
    "floatmiss": {**_BASE, "key": "float", "miss_unit": 0.01},
    "strlong": {**_BASE, "key": "str_long"},
    "strlongmiss": {**_BASE, "key": "str_long", "miss_unit": 0.01},
    "objmiss": {**_BASE, "key": "object", "miss_unit": 0.01},
    "catmiss": {**_BASE, "key": "cat", "miss_unit": 0.01},
}
FITS = ("event_study", "imputation")
OPS = ("event_study", "imputation", "prepare", "factorize", "isna", "pa_array", "gather")
KW = dict(outcome="y", unit="unit", time="year", cohort="cohort")
BIG = 5e6


def make(kind: str, size: float, data_dir: str):
    sys.path.insert(0, str(HERE))
    import pandas as pd
    import panels

    d = panels.staggered_panel(size, **KINDS[kind])
    if kind != "objcsv":
        return d
    path = Path(data_dir) / f"objkey_{size:.0e}.csv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        d[["unit", "year", "cohort", "y"]].to_csv(tmp, index=False)
        tmp.rename(path)
    del d
    t0 = time.process_time()
    r = pd.read_csv(path, dtype={"unit": object})
    make.read_cpu_s = time.process_time() - t0
    return r


def _op(name: str, d):
    """A zero-argument callable doing ``name`` on panel ``d`` (None: not for this kind)."""
    import warnings

    import numpy as np
    import pandas as pd

    import twinimpact as ti
    from twinimpact.core import validation as V

    warnings.simplefilter("ignore")
    col = d["unit"]
    if name == "event_study":
        return lambda: ti.event_study(d, **KW)
    if name == "imputation":
        return lambda: ti.imputation(d, **KW, horizons=True)
    if name == "prepare":
        return lambda: V.prepare_panel(d, **KW, estimator="prepare", order_by_unit=True)
    if name == "factorize":
        return lambda: pd.factorize(col.array)
    if name == "isna":
        return lambda: pd.isna(col.array)
    if name == "pa_array":
        if col.dtype != object:
            return None
        import pyarrow as pa
        return lambda: pa.array(col.to_numpy(), from_pandas=True)
    if name == "gather":
        x = d["y"].to_numpy()
        perm = np.random.default_rng(3).permutation(len(x)).astype(np.int32)
        return lambda: x[perm]
    raise ValueError(name)


def _digest(res) -> str | None:
    """sha256 (first 16 hex digits) of a fit's params and vcov bytes: equal digests of
    two source trees = bit-identical numbers."""
    import hashlib

    if not hasattr(res, "params"):
        return None
    h = hashlib.sha256(res.params.to_numpy().tobytes())
    h.update(res.vcov.to_numpy().tobytes())
    return h.hexdigest()[:16]


def _rss_mb(field: str = "VmRSS:") -> float | None:
    """This process's resident memory (``VmRSS``) or its peak since the last reset of the
    peak mark (``VmHWM``), MB; None where /proc is missing."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """run_table's reset of the kernel's peak-RSS mark (``VmHWM``; False where
    unsupported), so that ``VmHWM`` is the peak of what follows."""
    sys.path.insert(0, str(HERE))
    from run_table import _reset_peak as reset

    return reset()


def _time(fn, repeats: int) -> dict:
    cpus, users, syss, flts = [], [], [], []
    digest = None
    rss0 = _rss_mb()
    peak = None
    if _reset_peak():  # the op's own peak above the memory held before it (first call)
        fn()
        hwm = _rss_mb("VmHWM:")
        peak = None if hwm is None or rss0 is None else hwm - rss0
    for _ in range(repeats):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        c0 = time.process_time()
        out = fn()
        cpus.append(time.process_time() - c0)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        digest = _digest(out)
        del out
        users.append(r1.ru_utime - r0.ru_utime)
        syss.append(r1.ru_stime - r0.ru_stime)
        flts.append(r1.ru_minflt - r0.ru_minflt)
    return {"cpu_s": statistics.median(cpus), "user_s": statistics.median(users),
            "sys_s": statistics.median(syss), "minflt": statistics.median(flts),
            "cpus": cpus, "digest": digest, "op_peak_mb": peak}


def child(kind: str, size: float, ops: list[str], repeats: int, big_repeats: int,
          data_dir: str) -> None:
    small = make(kind, 1e5, data_dir)
    for name in ops:  # warm-up: imports, numba, allocator
        fn = _op(name, small)
        if fn is not None:
            fn()
    del small
    c0 = time.process_time()
    d = make(kind, size, data_dir)
    gen = time.process_time() - c0
    for name in ops:
        fn = _op(name, d)
        if fn is None:
            continue
        reps = big_repeats if (name in FITS and size >= BIG) else repeats
        res = _time(fn, reps)
        print(json.dumps({"op": name, "rows": len(d), **res, "repeats": reps,
                          "gen_cpu_s": gen,
                          "read_cpu_s": getattr(make, "read_cpu_s", None)}), flush=True)


def run(a) -> None:
    import fcntl

    env = dict(os.environ)
    for v in THREAD_VARS:
        env[v] = "1"
    env["PYTHONPATH"] = a.ti_src
    commit = subprocess.run(["git", "-C", a.ti_src, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or None
    for size in a.sizes:
        for kind in a.kinds:
            fh = None
            if a.lock and size >= 1e6:
                fh = open(a.lock, "a")
                fcntl.flock(fh, fcntl.LOCK_EX)
            load0 = os.getloadavg()[0]
            t0 = time.time()
            p = subprocess.run([sys.executable, __file__, "--child", kind, repr(size),
                                ",".join(a.ops), str(a.repeats), str(a.big_repeats),
                                a.data_dir], capture_output=True, text=True, env=env)
            load1 = os.getloadavg()[0]
            if fh is not None:
                fh.close()
            common = {"run": a.run_id, "kind": kind, "size": size, "commit": commit,
                      "ti_src": a.ti_src, "load": f"{load0:.1f}-{load1:.1f}",
                      "utc": time.strftime("%H:%M", time.gmtime(t0)),
                      "wall_s": round(time.time() - t0, 1)}
            lines = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
            if p.returncode != 0:
                lines.append({"op": "error", "error": (p.stderr.strip().splitlines()
                                                       or ["?"])[-1][:200]})
            with open(a.jsonl, "a") as out:
                for r in lines:
                    out.write(json.dumps({**common, **r}) + "\n")
            print(f"{kind} {size:.0e} load {common['load']}: " + ", ".join(
                f"{r['op']} {r.get('cpu_s', float('nan')):.3f}" if "cpu_s" in r
                else f"{r['op']} {r.get('error')}" for r in lines), flush=True)


def _slope(x, y) -> float:
    import numpy as np
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def table(paths: list[str], runs: list[str] | None = None) -> str:
    """Markdown: per (run, kind), per op the CPU exponent all sizes / top decade (user
    CPU top decade), and the CPU seconds at each size; the newest line of each (run,
    kind, op, size) counts."""
    rows = [json.loads(x) for p in paths for x in open(p) if x.strip()]
    last: dict = {}
    for r in rows:
        if "cpu_s" in r and (not runs or r["run"] in runs):
            last[(r["run"], r["kind"], r["op"], r["size"])] = r
    groups: dict = {}
    for (run, kind, op, _size), r in last.items():
        groups.setdefault((run, kind, op), []).append(r)
    out = ["| run | kind | op | CPU exponent all / top decade (user top) | CPU s at each "
           "size | rows | load |", "|---|---|---|---|---|---|---|"]
    for (run, kind, op), rs in groups.items():
        rs.sort(key=lambda r: r["rows"])
        n = [r["rows"] for r in rs]
        c = [max(r["cpu_s"], 1e-6) for r in rs]
        u = [max(r["user_s"], 1e-6) for r in rs]
        if len(rs) >= 2:
            b_all, b_top = _slope(n, c), _slope(n[-2:], c[-2:])
            e = f"{b_all:.2f} / {b_top:.2f} ({_slope(n[-2:], u[-2:]):.2f})"
        else:
            e = "-"
        loads = ", ".join(r["load"] for r in rs)
        out.append(f"| {run} | {kind} | {op} | {e} | "
                   + " / ".join(f"{x:.3g}" for x in c)
                   + f" | {' / '.join(f'{x:.2g}' for x in n)} | {loads} |")
    return "\n".join(out)


def side_by_side(paths: list[str], runs: list[str] | None = None) -> str:
    """Markdown: one row per (run, kind): the top-decade CPU exponent (user CPU in
    brackets) of our fits and of the preparation next to the floor ops', and each one's
    *excess over linear* at the largest size, ``c(n2) - c(n1) * n2 / n1`` in seconds (what
    the superlinear part costs: a floor op with a high exponent but a small excess
    explains little of a fit's excess)."""
    rows = [json.loads(x) for p in paths for x in open(p) if x.strip()]
    last: dict = {}
    for r in rows:
        if "cpu_s" in r and (not runs or r["run"] in runs):
            last[(r["run"], r["kind"], r["op"], r["size"])] = r
    by: dict = {}
    for (run, kind, op, _size), r in last.items():
        by.setdefault((run, kind), {}).setdefault(op, []).append(r)
    cols = (*OPS, "event_study - prepare", "imputation - prepare")
    out = ["| run | kind | " + " | ".join(cols) + " | load at the top size |",
           "|---|---|" + "---|" * (len(cols) + 1)]
    for (run, kind), ops in by.items():
        for fit in FITS:  # the fit after its preparation (same child, separate calls)
            prep = {r["size"]: r for r in ops.get("prepare", [])}
            ops[f"{fit} - prepare"] = [
                {**r, "cpu_s": r["cpu_s"] - prep[r["size"]]["cpu_s"],
                 "user_s": r["user_s"] - prep[r["size"]]["user_s"]}
                for r in ops.get(fit, []) if r["size"] in prep]
        cells, load = [], ""
        for op in cols:
            rs = sorted(ops.get(op, []), key=lambda r: r["rows"])
            if len(rs) < 2:
                cells.append("-")
                continue
            a, b = rs[-2], rs[-1]
            k = b["rows"] / a["rows"]
            bc = _slope([a["rows"], b["rows"]], [max(a["cpu_s"], 1e-6), max(b["cpu_s"], 1e-6)])
            bu = _slope([a["rows"], b["rows"]], [max(a["user_s"], 1e-6), max(b["user_s"], 1e-6)])
            cells.append(f"{bc:.2f} ({bu:.2f}); {b['cpu_s']:.3g} s, +{b['cpu_s'] - k * a['cpu_s']:.2f}")
            load = b["load"]
        out.append(f"| {run} | {kind} | " + " | ".join(cells) + f" | {load} |")
    return "\n".join(out)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        kind, size, ops, rep, big, data_dir = sys.argv[2:8]
        child(kind, float(size), ops.split(","), int(rep), int(big), data_dir)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e5, 1e6, 1e7])
    ap.add_argument("--ops", nargs="+", default=list(OPS), choices=list(OPS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--big-repeats", type=int, default=1,
                    help="timed fits from 5e6 rows (after the 1e5 warm-up)")
    ap.add_argument("--lock", default=None, help="flock(2) this file around children >= 1e6 rows")
    ap.add_argument("--ti-src", default=str(HERE.parent / "src"))
    ap.add_argument("--data-dir", default="/tmp/floors-data",
                    help="where objcsv's CSV files are written once")
    ap.add_argument("--run-id", default=None)
    ap.add_argument("--jsonl", default=str(HERE / "results_floors.jsonl"))
    ap.add_argument("--table", nargs="*", default=None, metavar="JSONL",
                    help="print the exponent table of these JSON lines and exit")
    ap.add_argument("--runs", nargs="*", default=None, help="with --table: only these runs")
    ap.add_argument("--side", action="store_true",
                    help="with --table: one row per run and kind (see side_by_side)")
    a = ap.parse_args()
    if a.table is not None:
        print((side_by_side if a.side else table)(a.table or [a.jsonl], a.runs))
        return
    run(a)


if __name__ == "__main__":
    main()
