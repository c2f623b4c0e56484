"""Unit ordering at preparation (``radix``, issue 13 item 3): equality and A/B.

``python benchmarks/unitorder_ab.py eq SIZE`` -- params and vcov of the event study,
imputation (horizons), did2s (event study) and Sun-Abraham with the rows put in unit order
(``TWINIMPACT_ORDER_BY_UNIT=always``) against the plain path (``never``) on string / integer
ids, shuffled / sorted rows, with weights, a covariate, a cluster column other than the
unit, Driscoll-Kraay; prints the max relative differences (one JSON line per config).

``python benchmarks/unitorder_ab.py ab SIZE PANEL CASE PAIRS`` -- in one process, fits
alternating the plain path (``never``: main's path) and the default decision (``auto``:
ordered when :func:`should_order` says so) (PAIRS pairs, after one warm-up each); CPU
(process_time), user / system, the max RSS growth; one JSON line with the medians appended
to ``benchmarks/results_unitorder.jsonl``. PANEL: ``str`` (strkey_unbal), ``intshuf``
(same rows, integer ids), ``balanced`` / ``unbalanced`` (sorted integer panels).
Run from the repository root with PYTHONPATH=src; under ``flock /work/bench.lock`` from
1e6 rows.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import panels  # noqa: E402

import twinimpact as ti  # noqa: E402
from twinimpact.core import unitorder  # noqa: E402

KW = dict(outcome="y", unit="unit", time="year", cohort="cohort")


def panel(kind: str, size: float) -> pd.DataFrame:
    if kind in ("str", "intshuf", "strsorted", "intsorted"):
        d = panels.make("strkey_unbal", size)
        if kind.startswith("int"):
            d["unit"] = pd.factorize(d["unit"])[0].astype(np.int64) * 7 + 3
        if kind.endswith("sorted"):
            d = d.sort_values(["unit", "year"], kind="stable").reset_index(drop=True)
        return d
    return panels.make(kind, size)


def cases(d: pd.DataFrame) -> dict:
    rng = np.random.default_rng(1)
    d = d.copy()
    d["w"] = rng.uniform(0.5, 2.0, len(d))
    d["x"] = rng.normal(size=len(d)) + 0.1 * d["year"].to_numpy()
    d["state"] = pd.factorize(d["unit"])[0] % 37
    es = ti.event_study
    return {
        "event_study": lambda: es(d, **KW),
        "event_study_w_x_state": lambda: es(d, **KW, weights="w", covariates=["x"],
                                            cluster="state"),
        "event_study_dk": lambda: es(d, **KW, vcov="driscoll_kraay"),
        "event_study_hetero": lambda: es(d, **KW, vcov="hetero", covariates=["x"]),
        "twfe": lambda: ti.twfe(d, **KW),
        "twfe_w_state": lambda: ti.twfe(d, **KW, weights="w", cluster="state"),
        "imputation": lambda: ti.imputation(d, **KW, horizons=True),
        "imputation_w_state": lambda: ti.imputation(d, **KW, horizons=True, weights="w",
                                                    cluster="state"),
        "did2s": lambda: ti.did2s(d, **KW, event_study=True),
        "did2s_w_x_state": lambda: ti.did2s(d, **KW, event_study=True, weights="w",
                                            covariates=["x"], cluster="state"),
        "sun_abraham": lambda: ti.sun_abraham(d, **KW, cluster="unit"),
        "sun_abraham_x": lambda: ti.sun_abraham(d, **KW, covariates=["x"]),
    }


def rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if not np.array_equal(np.isfinite(a), np.isfinite(b)):
        return np.inf
    if not ok.any():
        return 0.0
    scale = max(np.abs(b[ok]).max(), 1e-300)
    return float(np.abs(a[ok] - b[ok]).max() / scale)


def run(mode: str, fn):
    if mode == "auto":  # the default decision (should_order)
        os.environ.pop(unitorder.ORDER_ENV, None)
        return fn()
    os.environ[unitorder.ORDER_ENV] = mode
    try:
        return fn()
    finally:
        os.environ.pop(unitorder.ORDER_ENV, None)


def eq(size: float) -> None:
    for kind in ("str", "intshuf", "strsorted", "unbalanced"):
        d = panel(kind, size)
        for name, fn in cases(d).items():
            a, b = run("never", fn), run("always", fn)
            print(json.dumps({"panel": kind, "case": name, "rows": len(d),
                              "params": rel(b.params, a.params), "vcov": rel(b.vcov, a.vcov),
                              "nobs": [int(a.nobs), int(b.nobs)]}), flush=True)


def ab(size: float, kind: str, case: str, pairs: int) -> None:
    d = panel(kind, size)
    fn = cases(d)[case]
    out: dict = {"never": [], "auto": []}
    for mode in ("never", "auto"):
        run(mode, fn)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = {}
    for _ in range(pairs):
        for mode in ("never", "auto"):
            r0, c0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
            res[mode] = run(mode, fn)
            c1, r1 = time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
            out[mode].append((c1 - c0, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime))
    line = {"size": size, "rows": len(d), "panel": kind, "case": case, "pairs": pairs,
            "load": os.getloadavg()[0], "maxrss_mb": rss0 / 1024,
            "params_rel": rel(res["auto"].params, res["never"].params),
            "vcov_rel": rel(res["auto"].vcov, res["never"].vcov)}
    for mode, v in out.items():
        line[mode] = {k: statistics.median(x[i] for x in v)
                      for i, k in enumerate(("cpu", "user", "sys"))}
    print(json.dumps(line), flush=True)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results_unitorder.jsonl")
    with open(path, "a") as fh:
        fh.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    if sys.argv[1] == "eq":
        eq(float(sys.argv[2]))
    else:
        ab(float(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]))
