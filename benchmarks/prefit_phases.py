"""Phase-by-phase cost of everything between an estimator call and its fit (issue 13 item
3, ``shuf2``): ``python benchmarks/prefit_phases.py SIZE VARIANT [ESTIMATOR ...]``.

VARIANT: ``str`` (the ``strkey_unbal`` panel: 1e6 string unit ids at 1e7 rows, shuffled
rows, 5% missing), ``intshuf`` (the same rows with integer unit ids, the control),
``strsorted`` (the string panel sorted by unit, year) or ``cat`` (Categorical ids).
ESTIMATOR: any of ``event_study imputation sun_abraham callaway_santanna`` (default all).

The functions of the preparation (``core.validation``, ``core.labels`` and the estimators'
own prep helpers) are wrapped where they are looked up, and each phase is charged the
*exclusive* CPU (``time.process_time``; user / system from ``getrusage``, whose split the
kernel samples at ticks) and minor page faults spent inside it;
whatever the estimator does itself before its fit is ``<estimator> body``. The boundary
is the fit: ``core.fe.fit_fe_codes`` (event study, Sun-Abraham), ``fit_untreated``
(imputation), the end of ``_prepare`` (Callaway-Sant'Anna); the fit itself is one phase.
A 1e5 warm-up of each estimator, then REPEATS fits (env, default 2); each phase's minimum
over the repeats is written. Appends one JSON line per estimator to
``benchmarks/results_prefit_phases.jsonl``. Run from the repository root with
PYTHONPATH=src; under ``flock /work/bench.lock`` from 1e6 rows."""

from __future__ import annotations

import functools
import json
import os
import resource
import subprocess
import sys
import time

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strkey_phases import make  # noqa: E402  (the same panel variants)

import twinimpact as ti  # noqa: E402
from twinimpact.core import validation as V  # noqa: E402
from twinimpact.estimators import callaway_santanna as CS  # noqa: E402
from twinimpact.estimators import imputation as IM  # noqa: E402
from twinimpact.estimators import sun_abraham as SA  # noqa: E402
from twinimpact.estimators import twfe as TW  # noqa: E402

KW = dict(outcome="y", unit="unit", time="year", cohort="cohort")
ESTIMATORS = ("event_study", "imputation", "sun_abraham", "callaway_santanna")


class Ledger:
    """Exclusive (user, system, minflt) per phase, by a stack of the open phases."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.acc: dict[str, np.ndarray] = {}
        self.calls: dict[str, int] = {}
        self.last = self._now()

    @staticmethod
    def _now() -> np.ndarray:
        # process_time: the precise CPU clock (the kernel's user / system split is
        # sampled at ticks and smoothed, unreliable for phases of a few ms)
        r = resource.getrusage(resource.RUSAGE_SELF)
        return np.array([time.process_time(), r.ru_utime, r.ru_stime, float(r.ru_minflt)])

    def _charge(self) -> None:
        now = self._now()
        if self.stack:
            k = self.stack[-1]
            self.acc[k] = self.acc.get(k, 0) + (now - self.last)
        self.last = now

    def enter(self, label: str) -> None:
        self._charge()
        self.stack.append(label)
        self.calls[label] = self.calls.get(label, 0) + 1

    def leave(self) -> None:
        self._charge()
        if self.stack.pop() == "fit" and self.stack:
            self.stack[0] = "after the fit"  # the body's rest is not preparation


LEDGER: Ledger | None = None


def wrap(module, name: str, label: str | None = None, *, attr_of=None) -> None:
    owner = attr_of if attr_of is not None else module
    fn = getattr(owner, name)
    lab = label or name

    @functools.wraps(fn)
    def inner(*a, **k):
        led = LEDGER
        if led is None or (led.stack and led.stack[-1] == "fit"):
            return fn(*a, **k)  # inside the fit: charged to the fit
        led.enter(lab)
        try:
            return fn(*a, **k)
        finally:
            led.leave()

    setattr(owner, name, inner)


def install() -> None:
    for nm in ("require_frame", "require_columns", "_numeric", "_labels", "dense_codes",
               "normalize_cohort", "cohort_per_unit", "_compress_codes",
               "refuse_duplicate_pairs", "_positions", "string_codes", "check_weights"):
        wrap(V, nm)
    wrap(V, "drop_missing", "RowFilter.drop_missing", attr_of=V.RowFilter)
    wrap(V, "prepare_panel", "prepare_panel (other)")
    for mod in (TW, IM, SA):
        wrap(mod, "prepare_panel", "prepare_panel (other)")
        if hasattr(mod, "gap_aware_refs"):
            wrap(mod, "gap_aware_refs")
        if hasattr(mod, "dense_codes"):
            wrap(mod, "dense_codes")
    wrap(TW, "fit_fe_codes", "fit")
    wrap(SA, "fit_fe_codes", "fit")
    wrap(IM, "fit_untreated", "fit")
    for nm in ("require_frame", "require_columns", "_numeric", "normalize_cohort",
               "cohort_per_unit", "refuse_duplicate_pairs", "string_codes"):
        wrap(CS, nm)
    for nm in ("_factorize_sorted", "_time_codes", "_complete_sorted"):
        wrap(CS, nm)
    wrap(CS, "_prepare", "CS _prepare (other)")


def run_one(name: str, d: pd.DataFrame):
    """One fit; the phases of its preparation (and its fit, after the boundary)."""
    global LEDGER
    led = Ledger()
    LEDGER = led
    fn = getattr(ti, name)
    kw = dict(KW)
    if name == "imputation":
        kw["horizons"] = True
    led.enter(f"{name} body")
    try:
        res = fn(d, **kw)
    finally:
        led.leave()
        LEDGER = None
    return res, {k: v.tolist() for k, v in led.acc.items()}


def main() -> None:
    size = float(sys.argv[1])
    variant = sys.argv[2] if len(sys.argv) > 2 else "str"
    names = sys.argv[3:] or list(ESTIMATORS)
    repeats = int(os.environ.get("REPEATS", "2"))
    install()
    small = make(1e5, variant)
    for nm in names:  # warm-up (imports, caches)
        run_one(nm, small)
    d = make(size, variant)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    for nm in names:
        runs = []
        for _ in range(repeats):
            res, acc = run_one(nm, d)
            if nm == "callaway_santanna":
                # boundary: the end of _prepare; the rest of the call is its fit
                acc["fit"] = acc.pop(f"{nm} body")
            runs.append(acc)
        calls = [sum(v[0] for v in r.values()) for r in runs]
        phases = sorted({k for r in runs for k in r})
        best = {k: [min(r.get(k, [0, 0, 0, 0])[j] for r in runs) for j in range(4)]
                for k in phases}
        per_run_prep = [sum(v[0] for k, v in r.items()
                            if k not in ("fit", "after the fit")) for r in runs]
        i_best = int(np.argmin(per_run_prep))  # the repeat whose preparation cost least
        tot = [sum(v[j] for k, v in runs[i_best].items()
                   if k not in ("fit", "after the fit")) for j in range(4)]
        out = {"script": "prefit_phases", "src": os.environ.get("TAG", commit),
               "commit": commit, "estimator": nm,
               "variant": variant, "size": size, "rows": len(d), "repeats": repeats,
               "load": os.getloadavg()[0], "utc": time.strftime("%H:%M:%S", time.gmtime()),
               "prep_cpu": tot[0], "prep_user": tot[1], "prep_sys": tot[2],
               "prep_minflt": tot[3], "prep_cpu_runs": per_run_prep,
               "call_cpu": min(calls), "call_cpu_runs": calls,
               "fit_cpu": best.get("fit", [0, 0, 0, 0])[0],
               # phase -> [cpu, user, system, minflt], each the minimum over the repeats
               "phases": {k: [round(v[0], 5), round(v[1], 4), round(v[2], 4), int(v[3])]
                          for k, v in sorted(best.items(), key=lambda kv: -kv[1][0])},
               "params_head": [float(x) for x in np.asarray(res.params)[:3]]}
        print(json.dumps({k: out[k] for k in ("src", "estimator", "variant", "rows",
                                              "prep_cpu", "prep_user", "prep_sys",
                                              "prep_minflt", "fit_cpu", "call_cpu",
                                              "load")}))
        if os.environ.get("PHASES"):
            for k, v in out["phases"].items():
                print(f"   {k:32s} cpu {v[0]:8.4f} user {v[1]:7.3f} sys {v[2]:6.3f} "
                      f"minflt {v[3]:9d}")
        with open("benchmarks/results_prefit_phases.jsonl", "a") as fh:
            fh.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
