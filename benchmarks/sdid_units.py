"""Synthetic DiD's placebo / bootstrap / jackknife SE in units, beyond the Gram budget
(sdidbig; the jackknife: sdidjk).

One fresh process per fit (so ``ru_maxrss`` is that fit's peak): issue 13's SDID panel
(``run_table._panel("sdid_boot", "balanced", N * 1000 + T)``: 10% of the units treated in
the last quarter of T periods), then one timed fit -- no warm-up fit (run_table's sdid
cases run a full warm-up fit first, which at 20,000 units costs minutes per package);
imports happen before the clock starts. Reports CPU (user + sys of the fit), wall, peak
RSS of the whole process (panel and interpreter included), the SE; with ``--se jackknife``
also the CPU of ``jackknife_pseudovalues`` alone (ours).

    PYTHONPATH=src python benchmarks/sdid_units.py --pkg twinimpact --se bootstrap \
        --units 3000 10000 --reps 200 [--jsonl benchmarks/results_sdidbig.jsonl]
    ... --pkg diff-diff --peer-python /tmp/venv-peers/bin/python
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(pkg: str, se: str, units: int, periods: int, reps: int, force: str = "",
          screen_kernel: int = -1) -> dict:
    sys.path.insert(0, str(HERE))
    import numpy as np
    import run_table

    d = run_table._panel("sdid_boot", "balanced", units * 1000 + periods)
    if pkg == "twinimpact":
        import twinimpact as ti
        from twinimpact.estimators import _sdid_solver as S
        if force:                                 # sdidrows: the data form everywhere
            S._GRAM_MAX_ELEMS = 0                 # (no k x k Gram object: the placebo's
            S._GRAM_DATA_MULT = 0                 # bank, the kept / per-draw Gram)
        if force == "data-nocache":
            S._ROW_CACHE_ELEMS = 0                # ... and no row cache: every row recomputed
        if screen_kernel >= 0 and S._compiled_fw() is not None:   # the placebo's screen
            S._compiled_fw().screen_kernel(screen_kernel)

        def fit():
            r = ti.synthetic_did(d, outcome="y", unit="unit", time="year",
                                 treated="treated", se=se, n_reps=reps, seed=0)
            return float(r.std_errors.iloc[0]), float(r.params.iloc[0])
        import twinimpact.estimators.synthetic_did as SD
        jk = {"cpu_s": 0.0}
        if se == "jackknife":                     # the pseudo-value step alone, timed
            inner = SD.jackknife_pseudovalues

            def timed(*a, **k):
                t = time.process_time()
                out = inner(*a, **k)
                jk["cpu_s"] += time.process_time() - t
                jk["args"] = a
                return out
            SD.jackknife_pseudovalues = timed
        fits = getattr(S, "gram_fits", None)      # (absent before sdidbig: Gram form)
        extra = {"gram_form": fits is None or fits(units - max(2, units // 10),
                                                   (3 * periods) // 4),
                 "loop": S.fw_loop(), "jk": jk}
    else:
        import diff_diff as dd
        post = sorted(d.loc[d["treated"] == 1, "year"].unique().tolist())
        d_block = d.assign(ever=(d["cohort"] > 0).astype(int))

        def fit():
            r = dd.SyntheticDiD(variance_method=se, n_bootstrap=reps, seed=0).fit(
                d_block, outcome="y", treatment="ever", unit="unit", time="year",
                post_periods=post)
            return float(r.se), float(r.att)
        extra = {"version": dd.__version__}
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    se_val, att = fit()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    del np
    if "jk" in extra:
        jk = extra.pop("jk")
        extra["jackknife_step_cpu_s"] = jk["cpu_s"]
        if "args" in jk:                          # again, 5 times: the median
            again = []
            for _ in range(5):
                t = time.process_time()
                inner(*jk["args"])
                again.append(time.process_time() - t)
            extra["jackknife_step_cpu_s_median5"] = sorted(again)[2]
    return {"pkg": pkg, "se": se, "units": units, "periods": periods, "reps": reps,
            "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
            "user_s": r1.ru_utime - r0.ru_utime, "sys_s": r1.ru_stime - r0.ru_stime,
            "wall_s": wall, "peak_mb": r1.ru_maxrss / 1024, "se_value": se_val,
            "att": att, "load": os.getloadavg()[0], "force": force,
            "screen_kernel": screen_kernel, **extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pkg", choices=["twinimpact", "diff-diff"], required=True)
    ap.add_argument("--se", choices=["placebo", "bootstrap", "jackknife"], required=True)
    ap.add_argument("--units", type=int, nargs="+", required=True)
    ap.add_argument("--periods", type=int, default=40)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--peer-python", default="/tmp/venv-peers/bin/python")
    ap.add_argument("--jsonl", default=None)
    ap.add_argument("--run-id", default="")
    ap.add_argument("--force", choices=["", "data", "data-nocache"], default="",
                    help="ours only: the data form everywhere (both Gram knobs 0), "
                         "optionally without the row cache")
    ap.add_argument("--screen-kernel", type=int, default=-1,
                    help="ours only: the placebo screen's kernel (2 AVX-512, 1 AVX2 + FMA, "
                         "0 plain C; -1 the best the processor has)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.pkg, a.se, a.units[0], a.periods, a.reps, a.force,
                               a.screen_kernel)))
        return
    py = sys.executable if a.pkg == "twinimpact" else a.peer_python
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    for n in a.units:
        cmd = [py, __file__, "--child", "--pkg", a.pkg, "--se", a.se, "--units", str(n),
               "--periods", str(a.periods), "--reps", str(a.reps), "--force", a.force,
               "--screen-kernel", str(a.screen_kernel)]
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if p.returncode:
            print(p.stderr[-2000:], file=sys.stderr)
            continue
        rec = json.loads(p.stdout.strip().splitlines()[-1])
        rec["run_id"] = a.run_id
        print(json.dumps(rec), flush=True)
        if a.jsonl:
            with open(a.jsonl, "a") as f:
                f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
