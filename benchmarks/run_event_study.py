"""Event-study benchmark: twinimpact ``event_study`` (dynamic TWFE) vs pyfixest ``feols``.

Both fit ``y ~ i(rel_time, ref=-1) | unit + year`` (never-treated units in the reference
group) with CRV1 standard errors clustered by unit on the same synthetic staggered panel.
Each (estimator, size) runs in its own child process so that the peak resident memory
(``ru_maxrss``) belongs to that estimator alone; the time reported is the median of warm
runs (one untimed warm-up first, so imports, numba JIT and caches are excluded).

Run with a Python that has both packages (pyfixest is NOT a twinimpact dependency; use a
throwaway venv)::

    python -m venv /tmp/venv-bench && /tmp/venv-bench/bin/pip install "pyfixest==0.60.*"
    /tmp/venv-bench/bin/pip install --no-deps -e /work/main
    /tmp/venv-bench/bin/python benchmarks/run_event_study.py            # 1e5 and 1e6 rows
    /tmp/venv-bench/bin/python benchmarks/run_event_study.py --robust   # + SA/BJS/did2s
    /tmp/venv-bench/bin/python benchmarks/run_event_study.py --sizes 1e5 --repeats 3 \
        --out /tmp/x.md

The results table is written to ``benchmarks/results_event_study.md`` (``--out``), with a
verdict line for the target (``event_study`` at least 2x faster than pyfixest at the
largest size, peak memory not higher) and the 1-minute load average around each child
(the machine is shared, so ratios move between runs). Hand-written notes below the line
``<!-- notes: kept by run_event_study.py -->`` in an existing output file are kept.
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
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def make_panel(n_rows: int, n_periods: int = 10, seed: int = 0) -> pd.DataFrame:
    """Balanced staggered panel with ``n_rows`` rows (``n_rows / n_periods`` units).

    Cohorts: first treated in periods 3..9 or never (about 30% never treated); outcome
    ``y = a_i + l_t + (1 + 0.2 e) 1[e >= 0] + N(0, 1)`` with ``e = t - cohort``.
    """
    rng = np.random.default_rng(seed)
    n_units = n_rows // n_periods
    unit = np.repeat(np.arange(n_units, dtype=np.int64), n_periods)
    year = np.tile(np.arange(2001, 2001 + n_periods, dtype=np.int64), n_units)
    choices = np.array([0, 0, 0, 2003, 2004, 2005, 2006, 2007, 2008, 2009])
    g_unit = rng.choice(choices, size=n_units)
    g = g_unit[unit]
    rel = np.where(g > 0, year - g, -1)  # never treated: reference period -1 (pyfixest)
    y = (rng.normal(size=n_units)[unit] + rng.normal(size=n_periods)[year - 2001]
         + np.where((g > 0) & (rel >= 0), 1 + 0.2 * rel, 0.0) + rng.normal(size=len(unit)))
    return pd.DataFrame({"unit": unit, "year": year, "g": g, "rel_time": rel, "y": y})


def _run_one(estimator: str, n_rows: int, repeats: int) -> dict:
    """Child process body: fit ``repeats`` + 1 times, return warm median and peak RSS."""
    data = make_panel(n_rows)
    if estimator == "pyfixest":
        import pyfixest as pf

        def fit():
            m = pf.feols("y ~ i(rel_time, ref=-1) | unit + year", data=data,
                         vcov={"CRV1": "unit"})
            return m.coef().to_numpy(), m.se().to_numpy()
    else:
        import twinimpact.estimators.twfe as twfe_mod

        kw = dict(outcome="y", unit="unit", time="year", cohort="g")
        if estimator == "event_study":
            def fit():
                r = twfe_mod.event_study(data, **kw)
                idx = [i for i, t in enumerate(r.terms) if t.startswith("rel_time=")]
                return r.coef[idx], np.sqrt(np.diag(r.cov))[idx]
        else:
            import importlib

            mod = importlib.import_module(f"twinimpact.estimators.{estimator}")
            fn = getattr(mod, estimator)
            opts = {"did2s": {"event_study": True}, "imputation": {"horizons": True}}
            def fit():
                r = fn(data, **kw, **opts.get(estimator, {}))
                return r.coef, np.sqrt(np.diag(r.cov))
    coef, se = fit()  # warm-up (imports, JIT, caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        coef, se = fit()
        times.append(time.perf_counter() - t0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"estimator": estimator, "rows": n_rows, "median_s": statistics.median(times),
            "times": times, "peak_rss_mb": peak_mb, "coef": np.asarray(coef).tolist(),
            "se": np.asarray(se).tolist()}


NOTES_MARKER = "<!-- notes: kept by run_event_study.py -->"
TARGET_SPEEDUP = 2.0


def _child(estimator: str, n_rows: int, repeats: int) -> dict:
    load_before = os.getloadavg()[0]
    out = subprocess.run([sys.executable, __file__, "--child", estimator, str(n_rows),
                          str(repeats)], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["load_1min"] = f"{load_before:.1f}-{os.getloadavg()[0]:.1f}"
    return res


def _verdict(table: pd.DataFrame) -> str:
    """One line: did event_study reach the target at the largest size?"""
    n = int(table["rows"].max())
    at_n = table[table["rows"] == n].set_index("estimator")
    ours, peer = at_n.loc["event_study"], at_n.loc["pyfixest"]
    speed_ok = ours["speedup_vs_pyfixest"] >= TARGET_SPEEDUP
    mem_ok = ours["peak_rss_mb"] <= peer["peak_rss_mb"]
    return (f"**Target ({TARGET_SPEEDUP:g}x faster than pyfixest at {n:,} rows, memory not "
            f"higher): {'met' if speed_ok and mem_ok else 'MISSED'}** -- event_study "
            f"{ours['median_s']:.3g} s vs pyfixest {peer['median_s']:.3g} s "
            f"({ours['speedup_vs_pyfixest']:.2f}x), peak RSS {ours['peak_rss_mb']:.0f} MB vs "
            f"{peer['peak_rss_mb']:.0f} MB.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["1e5", "1e6"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--robust", action="store_true",
                    help="also time sun_abraham, imputation and did2s (slower)")
    ap.add_argument("--out", default=str(HERE / "results_event_study.md"))
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        est, n, reps = args.child
        print(json.dumps(_run_one(est, int(n), int(reps))))
        return
    import pyfixest

    import twinimpact

    sizes = [int(float(s)) for s in args.sizes]
    ests = ["event_study", "pyfixest"] + (["sun_abraham", "imputation", "did2s"]
                                          if args.robust else [])
    rows = []
    for n in sizes:
        res = {e: _child(e, n, args.repeats) for e in ests}
        ours, peer = res["event_study"], res["pyfixest"]
        diff_b = float(np.max(np.abs(np.subtract(ours["coef"], peer["coef"]))))
        diff_se = float(np.max(np.abs(np.subtract(ours["se"], peer["se"]))))
        for e in ests:
            r = res[e]
            rows.append({"rows": n, "estimator": e, "median_s": r["median_s"],
                         "min_s": min(r["times"]), "max_s": max(r["times"]),
                         "peak_rss_mb": r["peak_rss_mb"],
                         "speedup_vs_pyfixest": peer["median_s"] / r["median_s"],
                         "max_abs_diff_coef_vs_pyfixest": diff_b if e == "event_study" else None,
                         "max_abs_diff_se_vs_pyfixest": diff_se if e == "event_study" else None,
                         "load_1min": r["load_1min"]})
        print(pd.DataFrame(rows[-len(ests):]).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    cmd = " ".join([sys.executable, "benchmarks/run_event_study.py", *sys.argv[1:]])
    lines = [
        "# Event-study benchmark: twinimpact `event_study` vs pyfixest `feols`", "",
        f"Command (from the repository root): `{cmd}` (a throwaway venv holding pyfixest, "
        "see the script docstring).", "",
        f"Machine: {platform.platform()}, Python {platform.python_version()}, "
        f"{_cpu_count()} CPU(s) (shared with other jobs). twinimpact {twinimpact.__version__}, "
        f"pyfixest {pyfixest.__version__}, numpy {np.__version__}, pandas {pd.__version__}.", "",
        "Model: `y ~ i(rel_time, ref=-1) | unit + year`, CRV1 by unit, balanced panel with 10 "
        "periods (rows/10 units), 7 cohorts + never treated (`make_panel` in the script). "
        f"Time = median of {args.repeats} warm runs after one warm-up, each estimator in its "
        "own process; memory = peak resident set size of that process (includes the data "
        "and the interpreter).", "",
        table.to_markdown(index=False, floatfmt=".4g"), "",
        "`speedup_vs_pyfixest` = pyfixest median time / this row's median time (> 1: faster "
        "than pyfixest). `max_abs_diff_*` compares our event-study coefficients and SEs with "
        "pyfixest's. `load_1min` = 1-minute load average before-after the child process "
        "(other jobs share the cores).", "", _verdict(table), "", NOTES_MARKER, ""]
    out = Path(args.out)
    if out.exists() and NOTES_MARKER in out.read_text():
        lines[-1] = out.read_text().split(NOTES_MARKER, 1)[1].lstrip("\n")
    out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    main()
