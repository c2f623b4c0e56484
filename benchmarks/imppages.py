"""Fresh memory pages of the imputation estimator (issue 13 item 3, run IP*).

One imputation fit (``ti.imputation(..., horizons=True)``) per child process, after a
1e5-row warm-up fit in the same child: CPU, user and system time and minor page faults
(``getrusage``) of the whole fit and of its phases (``prepare_panel``, ``two_stage_rows``,
``untreated_residuals``, ``_EstimandColumns``, ``_imputation_sums``, the rest), and the
fit's peak resident memory above what the process held before it (``peak_mb``: ``VmHWM``
after a reset of the peak mark, minus ``rss0_mb``; ``hwm_mb`` the peak itself). ``--alloc``: instead, the n-row allocations of one fit, line by
line (``tracemalloc`` peak and net growth per executed line of the estimator's modules).
Environment of a child: ``IMPPAGES_FITS=k`` measures the k-th fit of the panel in the
process (the earlier ones unmeasured: a session's repeated fits); ``IMPPAGES_NOTHP=1``
disables transparent huge pages for the child (``prctl(PR_SET_THP_DISABLE)``); glibc's
``MALLOC_*`` variables pass through (``--env label:VAR=value``).

Commands (repository root)::

    python benchmarks/imppages.py --kinds unbalanced strkey_unbal --sizes 1e6 1e7 \\
        --repeats 3 --big-repeats 2 --trees base=/tmp/base/src new=src \\
        --lock /work/bench.lock --run-id IP1 --out benchmarks/results_imppages.jsonl
    python benchmarks/imppages.py --alloc --kinds unbalanced --sizes 1e6
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

_PHASES = ("prepare_panel", "two_stage_rows", "untreated_residuals", "_EstimandColumns",
           "_imputation_sums")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


def _ru() -> tuple[float, float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt


def _fit(ti, df, weights: str | None = None):
    return ti.imputation(df, outcome="y", unit="unit", time="year", cohort="cohort",
                         horizons=True, weights=weights)


def child(kind: str, n: float) -> dict:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__))))
    import panels

    import twinimpact as ti
    from twinimpact.estimators import imputation as imp

    acc = {p: [0.0, 0.0, 0] for p in _PHASES}

    def wrap(name):
        fn = getattr(imp, name)

        def inner(*a, **k):
            u0, s0, f0 = _ru()
            try:
                return fn(*a, **k)
            finally:
                u1, s1, f1 = _ru()
                c = acc[name]
                c[0] += u1 - u0
                c[1] += s1 - s0
                c[2] += f1 - f0
        return inner

    for p in _PHASES:
        setattr(imp, p, wrap(p))
    if os.environ.get("IMPPAGES_NOTHP"):  # this process without transparent huge pages
        import ctypes
        ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE
    _fit(ti, panels.make(kind, 1e5))  # warm-up
    df = panels.make(kind, n)
    for _ in range(int(os.environ.get("IMPPAGES_FITS", "1")) - 1):
        _fit(ti, df)  # earlier fits of the same panel in this process (not measured)
    for c in acc.values():
        c[:] = [0.0, 0.0, 0]
    rss0 = _status_mb("VmRSS:")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    u0, s0, f0 = _ru()
    c0 = time.process_time()
    res = _fit(ti, df)
    cpu = time.process_time() - c0
    u1, s1, f1 = _ru()
    peak = _status_mb("VmHWM:") - rss0
    phases = {p: {"user_s": round(c[0], 4), "sys_s": round(c[1], 4), "minflt": c[2]}
              for p, c in acc.items()}
    rest = {"user_s": round(u1 - u0 - sum(c[0] for c in acc.values()), 4),
            "sys_s": round(s1 - s0 - sum(c[1] for c in acc.values()), 4),
            "minflt": f1 - f0 - sum(c[2] for c in acc.values())}
    phases["rest"] = rest
    return {"kind": kind, "n_rows": len(df), "cpu_s": round(cpu, 4),
            "user_s": round(u1 - u0, 4), "sys_s": round(s1 - s0, 4), "minflt": f1 - f0,
            "peak_mb": round(peak, 1), "rss0_mb": round(rss0, 1),
            "hwm_mb": round(_status_mb("VmHWM:"), 1), "phases": phases,
            "params": [float(v) for v in res.params.to_numpy()[:3]]}


def alloc(kind: str, n: float, min_frac: float = 0.27) -> list[dict]:
    """Lines of the estimator's modules whose transient peak (or net growth) of traced
    memory is at least ``min_frac`` of an n-row float64 array."""
    import tracemalloc
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import panels

    import twinimpact as ti
    df = panels.make(kind, n)
    nbytes = len(df) * 8  # a float64 column
    hits: list[dict] = []
    last = {"where": None, "cur": 0}

    def tracer(frame, event, arg):
        # the traced memory between two successive events of the estimator's code is what
        # the line of the first one did (numpy's C calls raise no events of their own)
        fn = frame.f_code.co_filename
        if "twinimpact" not in fn:
            return tracer
        cur, peak = tracemalloc.get_traced_memory()
        if last["where"] is not None:
            cur0 = last["cur"]
            if peak - cur0 >= min_frac * nbytes or abs(cur - cur0) >= min_frac * nbytes:
                hits.append({"where": last["where"], "peak_mb": round((peak - cur0) / 2**20, 1),
                             "net_mb": round((cur - cur0) / 2**20, 1)})
        tracemalloc.reset_peak()
        last["where"] = f"{os.path.basename(fn)}:{frame.f_lineno}:{frame.f_code.co_name}"
        last["cur"] = cur
        return tracer

    tracemalloc.start()
    sys.settrace(tracer)
    _fit(ti, df)
    sys.settrace(None)
    tracemalloc.stop()
    return hits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", nargs="+", default=["unbalanced", "strkey_unbal"])
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e6, 1e7])
    ap.add_argument("--repeats", type=int, default=3, help="children per cell below 5e6 rows")
    ap.add_argument("--big-repeats", type=int, default=2, help="children per cell from 5e6")
    ap.add_argument("--trees", nargs="+", default=["new=src"],
                    help="label=path of a src directory; children alternate between them")
    ap.add_argument("--env", nargs="*", default=[],
                    help="label:VAR=value (an environment variable for that tree's children)")
    ap.add_argument("--lock", default=None, help="flock this file per child from 1e6 rows")
    ap.add_argument("--run-id", default="IP")
    ap.add_argument("--out", default=None)
    ap.add_argument("--alloc", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "N"))
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child[0], float(a.child[1]))))
        return
    if a.alloc:
        for kind in a.kinds:
            for n in a.sizes:
                for h in alloc(kind, n):
                    print(kind, int(n), h)
        return
    trees = [t.split("=", 1) for t in a.trees]
    extra_env: dict[str, dict[str, str]] = {}
    for e in a.env:
        lab, kv = e.split(":", 1)
        k, v = kv.split("=", 1)
        extra_env.setdefault(lab, {})[k] = v
    out = open(a.out, "a") if a.out else None
    for n in a.sizes:
        for kind in a.kinds:
            reps = a.repeats if n < 5e6 else a.big_repeats
            for rep in range(reps):
                for lab, src in trees:
                    env = {**os.environ, "PYTHONPATH": os.path.abspath(src),
                           "OPENBLAS_NUM_THREADS": "1", **extra_env.get(lab, {})}
                    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, str(n)]
                    if a.lock and n >= 1e6:
                        cmd = ["flock", a.lock, *cmd]
                    load = os.getloadavg()[0]
                    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
                    if p.returncode:
                        print(p.stderr, file=sys.stderr)
                        raise SystemExit(p.returncode)
                    rec = json.loads(p.stdout.strip().splitlines()[-1])
                    rec.update(run=a.run_id, tree=lab, rep=rep, size=n, load=round(load, 2),
                               env=extra_env.get(lab, {}),
                               utc=time.strftime("%H:%M:%S", time.gmtime()))
                    line = json.dumps(rec)
                    print(line, flush=True)
                    if out:
                        out.write(line + "\n")
                        out.flush()
    if out:
        out.close()


def table(path: str, run: str) -> None:  # pragma: no cover - a reading aid
    rows = [json.loads(x) for x in open(path) if json.loads(x).get("run") == run]
    keys = sorted({(r["kind"], r["size"], r["tree"]) for r in rows})
    for k in keys:
        rs = [r for r in rows if (r["kind"], r["size"], r["tree"]) == k]
        med = {f: statistics.median(r[f] for r in rs)
               for f in ("cpu_s", "user_s", "sys_s", "minflt", "peak_mb")}
        print(k, len(rs), med)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--table":
        table(sys.argv[2], sys.argv[3])
    else:
        main()
