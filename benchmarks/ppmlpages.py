"""PPML's fresh memory pages at 1e7 rows: user / system CPU and minor faults of
``ti.ppml(..., fixed_effects=["exp_year", "imp_year", "pair"], cluster="pair")`` on the
gravity spot-check panels (``gravity_spotcheck.py gen``), two source trees A/B interleaved.

Each child process reads one panel, fits once (warm-up, not measured), then fits
``--fits`` times and records each fit's user / system CPU and minor faults
(``getrusage(RUSAGE_SELF)`` differences in the child), one BLAS / numba thread. Children
of the two trees alternate (the first tree of each repeat swaps), each under
``flock LOCK`` when given.

    python benchmarks/ppmlpages.py run --trees base=/tmp/base/src new=src \\
        --panels /tmp/mygrav/g320.parquet /tmp/mygrav/g710.parquet --repeats 3 \\
        --lock /work/bench.lock --out benchmarks/results_ppmlpages.jsonl --run-id PP1
    python benchmarks/ppmlpages.py table benchmarks/results_ppmlpages.jsonl PP1

A tree may carry environment settings (``name=src:VAR=value,VAR2=value``), e.g. the same
source with ``TWINIMPACT_PPML_ORDER=never`` / ``always`` (ppml's row order forced), and
``--fes`` picks the fixed-effect sets (default ``exp_year,imp_year,pair``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time

FES = "exp_year,imp_year,pair"


def child(src: str, panel: str, sep: str, fits: int, fes: str = FES) -> None:
    import resource
    import warnings

    sys.path.insert(0, src)
    import pandas as pd

    import twinimpact as ti

    warnings.simplefilter("ignore")
    d = pd.read_parquet(panel)

    def fit():
        return ti.ppml(d, outcome="trade", regressors=["rta"],
                       fixed_effects=fes.split(","), cluster="pair",
                       separation=True if sep == "all" else sep)

    fit()
    rows = []
    for _ in range(fits):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        r = fit()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        rows.append({"user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime,
                     "minflt": r1.ru_minflt - r0.ru_minflt})
    print(json.dumps({"src": ti.__file__, "rows": r.nobs, "coef": float(r.params["rta"]),
                      "se": float(r.std_errors["rta"]), "fits": rows,
                      "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                       / 1024)}))


def run(a: argparse.Namespace) -> None:
    trees = []
    for t in a.trees:
        name, spec = t.split("=", 1)
        src, _, sets = spec.partition(":")
        trees.append((name, src, dict(kv.split("=", 1) for kv in sets.split(",") if kv)))
    base_env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
                "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    base_env.pop("PYTHONPATH", None)
    for panel in a.panels:
        for rep in range(a.repeats):
            order = trees if rep % 2 == 0 else trees[::-1]
            for name, src, extra_env in order:
                env = {**base_env, **extra_env}
                cmd = [sys.executable, __file__, "child", src, panel, a.sep, str(a.fits),
                       a.fes]
                if a.lock:
                    cmd = ["flock", a.lock, *cmd]
                load0 = os.getloadavg()[0]
                t0 = time.time()
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                rec = json.loads(out.stdout.strip().splitlines()[-1])
                rec.update({"run": a.run_id, "tree": name, "panel": os.path.basename(panel),
                            "sep": a.sep, "env": extra_env, "fes": a.fes, "repeat": rep,
                            "load_before": round(load0, 2),
                            "load_after": round(os.getloadavg()[0], 2),
                            "utc": time.strftime("%H:%M:%S", time.gmtime(t0))})
                print(json.dumps(rec), flush=True)
                with open(a.out, "a") as f:
                    f.write(json.dumps(rec) + "\n")


def table(path: str, run_id: str) -> None:
    recs = [json.loads(x) for x in open(path) if json.loads(x)["run"] == run_id]
    cells: dict = {}
    for r in recs:
        cells.setdefault((r["panel"], r["tree"]), []).append(r)
    # peak: the median of the children's (the first child of a fresh snapshot compiles
    # the numba kernels: +280 MB at 1.9e6 rows in run PK3)
    print("panel | tree | rows | CPU s | user | sys | minor faults | coef | se | peak MB | load")
    meds = {}
    for (panel, tree), rs in cells.items():
        fits = [f for r in rs for f in r["fits"]]
        med = {k: statistics.median(f[k] for f in fits) for k in ("user", "sys", "minflt")}
        cpu = statistics.median(f["user"] + f["sys"] for f in fits)
        meds[(panel, tree)] = (rs[0]["rows"], cpu, med["user"])
        print(f"{panel} | {tree} | {rs[0]['rows']} | {cpu:.3f} | {med['user']:.3f} | "
              f"{med['sys']:.3f} | {med['minflt']:.0f} | {rs[0]['coef']!r} | "
              f"{rs[0]['se']!r} | {statistics.median(r['peak_mb'] for r in rs):.0f} | "
              f"{min(r['load_before'] for r in rs)}-{max(r['load_after'] for r in rs)}")
    # exponents in rows (log of the CPU ratio over log of the rows ratio), per tree and
    # panel kind, between neighbouring sizes and from the smallest to the largest (the
    # letters after g<countries> in the file name: "s" rows sorted by pair, "i" the keys
    # as integers, none the shuffled rows with string keys)
    kinds = {"": "shuffled", "s": "sorted", "i": "integer keys"}
    print("tree | panel kind | from -> to rows | CPU exponent (user)")
    groups: dict = {}
    for (panel, tree), v in meds.items():
        kind = re.sub(r"^g\d+", "", panel.removesuffix(".parquet"))
        groups.setdefault((tree, kinds.get(kind, kind)), []).append(v)
    for (tree, kind), vs in sorted(groups.items()):
        vs.sort()
        ends = [(vs[0], vs[-1])] if len(vs) > 2 else []
        for (r0, c0, u0), (r1, c1, u1) in [*itertools.pairwise(vs), *ends]:
            lr = math.log(r1 / r0)
            print(f"{tree} | {kind} | {r0} -> {r1} | "
                  f"{math.log(c1 / c0) / lr:.3f} ({math.log(u1 / u0) / lr:.3f})")


if __name__ == "__main__":
    if sys.argv[1] == "child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), *sys.argv[6:7])
    elif sys.argv[1] == "table":
        table(sys.argv[2], sys.argv[3])
    else:
        p = argparse.ArgumentParser()
        p.add_argument("mode")
        p.add_argument("--trees", nargs="+", required=True)
        p.add_argument("--panels", nargs="+", required=True)
        p.add_argument("--repeats", type=int, default=3)
        p.add_argument("--fits", type=int, default=3)
        p.add_argument("--sep", default="fe")
        p.add_argument("--fes", default=FES)
        p.add_argument("--lock", default=None)
        p.add_argument("--out", required=True)
        p.add_argument("--run-id", required=True)
        run(p.parse_args())
