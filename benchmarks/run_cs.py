"""Benchmark: twinimpact ``callaway_santanna`` + dynamic aggregation against peers.

Each (package, size, covariates) case runs in a fresh subprocess that builds the panel
with :func:`generate.make_panel`, records its resident memory, runs the estimator once to
warm up, then times ``--repeats`` runs (median reported) and reports the peak resident
set size (``ru_maxrss``) and the peak increment over the loaded data. All packages run in
the same invocation, on the same data and machine. Peers are optional: a missing one is
reported as "not installed".

Run (peers live in a throwaway venv, never in the system Python)::

    python -m venv /tmp/venv-cs
    /tmp/venv-cs/bin/pip install "diff-diff==3.13.*" pandas pyarrow
    /tmp/venv-cs/bin/pip install -e /work/main
    /tmp/venv-cs/bin/python benchmarks/run_cs.py            # 1e4, 1e5, 1e6 rows
    /tmp/venv-cs/bin/python benchmarks/run_cs.py --with-1e7 # adds 1e7 rows (~8 GB peak)

and writes ``benchmarks/results_cs.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGES = ("twinimpact", "diff-diff")
THREADS: int | None = None  # --threads: same thread caps for every package
SHUFFLE = False  # --shuffle: rows in random order (not sorted by unit, then year)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _run_twinimpact(df, cov):
    from twinimpact.estimators.callaway_santanna import callaway_santanna

    res = callaway_santanna(df, outcome="y", unit="unit", time="year", cohort="cohort",
                            covariates=cov)
    dyn = res.aggregate("dynamic")
    return res, dyn


def _summ_twinimpact(out):
    res, dyn = out
    return {"simple_att": float(res.aggregate("simple").params["ATT"]),
            "e0": float(dyn.params["rel_time=0"])}


def _run_diffdiff(df, cov):
    import diff_diff as dd

    res = dd.CallawaySantAnna(control_group="never_treated", estimation_method="dr",
                              n_bootstrap=0).fit(df, outcome="y", unit="unit", time="year",
                                                 first_treat="cohort", covariates=cov)
    dyn = res.aggregate("event_study")
    return res, dyn


def _summ_diffdiff(out):
    res, dyn = out
    e = list(dyn.event_time)
    return {"simple_att": float(res.overall_att), "e0": float(dyn.att[e.index(0)])}


def worker(pkg: str, rows: float, cov: bool, repeats: int) -> dict:
    sys.path.insert(0, str(HERE))
    from generate import make_panel

    warnings.simplefilter("ignore")
    covs = ["x"] if cov else None
    if pkg == "twinimpact":
        import twinimpact.estimators.callaway_santanna  # noqa: F401 - import before baseline

        run, summ = _run_twinimpact, _summ_twinimpact
    else:
        try:
            import diff_diff
        except ImportError:
            return {"error": "not installed"}
        run, summ = _run_diffdiff, _summ_diffdiff
        pkg = f"diff-diff {diff_diff.__version__}"
    df = make_panel(rows)
    if os.environ.get("CS_BENCH_SHUFFLE") == "1":
        df = df.sample(frac=1.0, random_state=0).reset_index(drop=True)
    base = _rss_mb()
    out = run(df, covs)  # warm-up (imports, caches)
    info = summ(out)
    del out
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = run(df, covs)
        times.append(time.perf_counter() - t0)
        del out
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"package": pkg, "rows": len(df), "covariates": cov,
            "median_s": statistics.median(times), "times_s": times,
            "peak_rss_mb": peak, "data_rss_mb": base, "peak_over_data_mb": peak - base,
            **info}


def _spawn(pkg: str, rows: float, cov: bool, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", pkg, str(rows), str(int(cov)),
           str(repeats)]
    env = dict(os.environ)
    env["CS_BENCH_SHUFFLE"] = "1" if SHUFFLE else "0"
    if THREADS:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "RAYON_NUM_THREADS", "POLARS_MAX_THREADS"):
            env[var] = str(THREADS)
    r = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description="Benchmark callaway_santanna against peers")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--sizes", nargs="*", type=float, default=[1e4, 1e5, 1e6])
    ap.add_argument("--with-1e7", action="store_true", help="also run 1e7 rows (memory!)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-covariates-only", action="store_true",
                    help="skip the runs with a covariate")
    ap.add_argument("--threads", type=int, default=None,
                    help="cap BLAS/OpenMP/Rayon/Polars threads in every worker")
    ap.add_argument("--shuffle", action="store_true",
                    help="shuffle the rows (same order for every package): timings without "
                         "the sorted-panel fast path")
    ap.add_argument("--out", default=str(HERE / "results_cs.md"))
    a = ap.parse_args()
    global THREADS, SHUFFLE
    THREADS, SHUFFLE = a.threads, a.shuffle
    if a.worker:
        pkg, rows, cov, rep = a.worker
        print(json.dumps(worker(pkg, float(rows), bool(int(cov)), int(rep))))
        return
    sizes = list(a.sizes) + ([1e7] if a.with_1e7 else [])
    covs = [False] if a.no_covariates_only else [False, True]
    results = []
    for rows in sizes:
        for cov in covs:
            reps = a.repeats if rows < 5e6 else 1
            pair = {}
            for pkg in PACKAGES:
                r = _spawn(pkg, rows, cov, reps)
                pair[pkg] = r
                print(pkg, rows, cov, r, file=sys.stderr)
            results.append((rows, cov, pair))
    _write(a, results)


def _fmt_row(rows, cov, pair) -> str:
    ti, dd = pair["twinimpact"], pair["diff-diff"]
    if "error" in dd:
        return (f"| {rows:.0e} | {'x' if cov else '-'} | {ti['median_s']:.3f} | "
                f"{ti['peak_over_data_mb']:.0f} ({ti['peak_rss_mb']:.0f}) | {dd['error']} "
                "| | | | |")
    speed = dd["median_s"] / ti["median_s"]
    mem = dd["peak_over_data_mb"] / max(ti["peak_over_data_mb"], 1e-9)
    agree = max(abs(ti["simple_att"] - dd["simple_att"]), abs(ti["e0"] - dd["e0"]))
    return (f"| {rows:.0e} | {'x' if cov else '-'} | {ti['median_s']:.3f} | "
            f"{ti['peak_over_data_mb']:.0f} ({ti['peak_rss_mb']:.0f}) | {dd['median_s']:.3f} | "
            f"{dd['peak_over_data_mb']:.0f} ({dd['peak_rss_mb']:.0f}) | {speed:.1f}x | "
            f"{mem:.1f}x | {agree:.1e} |")


def _write(a, results) -> None:
    cmd = " ".join([Path(sys.executable).as_posix(), "benchmarks/run_cs.py",
                    *sys.argv[1:]])
    dd_version = next((p["diff-diff"].get("package") for _, _, p in results
                       if "package" in p["diff-diff"]), "diff-diff (not installed)")
    lines = [
        "# Callaway-Sant'Anna benchmark",
        "",
        f"Command: `{cmd}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), Python "
        f"{platform.python_version()}; peers: {dd_version}; thread cap: "
        f"{a.threads or 'none (library defaults)'}.  ",
        "Task: ATT(g,t) (never-treated controls, doubly robust, varying base period, "
        "analytic SEs) + dynamic (event-study) aggregation, on `benchmarks/generate.py` "
        "panels (10 years, cohorts at years 4/6/8 + never treated, one covariate `x`)"
        + ("; rows shuffled (`--shuffle`)." if a.shuffle else
           ", rows sorted by unit, then year."),
        f"Times: median of {a.repeats} warm runs (1 run at 1e7), seconds. Memory: peak RSS "
        "increment over the loaded data in MB (total peak RSS in parentheses), each case "
        "in a fresh subprocess.  ",
        "`speedup` = diff-diff time / twinimpact time; `memory ratio` = diff-diff peak "
        "increment / twinimpact peak increment; `max |diff|` compares the simple ATT and "
        "the event-time-0 effect of the two packages.",
        "",
        "| rows | covariate | twinimpact s | twinimpact MB | diff-diff s | diff-diff MB | "
        "speedup | memory ratio | max abs diff |",
        "|---:|:-:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [_fmt_row(r, c, p) for r, c, p in results]
    lines += ["", "Raw results (JSON):", "", "```json",
              json.dumps([{"rows": r, "covariates": c, **{k: v for k, v in p.items()}}
                          for r, c, p in results], indent=1), "```", ""]
    Path(a.out).write_text("\n".join(lines))


if __name__ == "__main__":
    main()
