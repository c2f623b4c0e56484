"""PPML on a gravity panel made by a generator of its own (not ``panels.py``): string
keys built the way users build them (``exporter + "_" + year``), a time-varying RTA
dummy, 30% of flows zeroed on top of the Poisson zeros, 5% of rows missing, shuffled.
Compares ``ti.ppml`` with pyfixest ``fepois`` under matching separation checks (ours
``separation="fe"`` / ``"fe+relu"`` / ``True`` = fe + simplex + relu, pyfixest
``separation_check=["fe"]`` (its default) / ``["fe", "ir"]``), each fit in its own
process, CPU time (median of 3 after a warm-up), peak RSS of the process.

    python benchmarks/gravity_spotcheck.py gen 230 20 2 /tmp/g230.parquet
    python benchmarks/gravity_spotcheck.py gen 320 20 3 /tmp/g320z20.parquet 0.2 0.95  # 20% zeroed
    python benchmarks/gravity_spotcheck.py gen 320 20 3 /tmp/g320m10.parquet 0.3 0.9   # 10% missing
    python benchmarks/gravity_spotcheck.py fit ti /tmp/g230.parquet fe+relu
    /tmp/venv-peers/bin/python benchmarks/gravity_spotcheck.py fit pf /tmp/g230.parquet fe+ir
"""

from __future__ import annotations

import json
import resource
import sys
import time
import warnings

import numpy as np
import pandas as pd


def generate(n_c: int, n_y: int, seed: int, path: str, zero_share: float = 0.3,
             kept: float = 0.95) -> None:
    """``zero_share`` of flows zeroed on top of the Poisson zeros, ``kept`` the share of
    rows kept (the rest missing); the defaults are the panels of the RESULTS sections."""
    rng = np.random.default_rng(seed)
    codes = np.array([f"C{i:03d}x" for i in range(n_c)])
    ex, im, yr = (a.ravel() for a in np.meshgrid(np.arange(n_c), np.arange(n_c),
                                                  np.arange(n_y), indexing="ij"))
    keep = ex != im
    ex, im, yr = ex[keep], im[keep], yr[keep]
    gdp = rng.normal(0, 1, (n_c, n_y)).cumsum(1) * 0.1 + rng.normal(0, 1, (n_c, 1))
    dist = rng.uniform(0.5, 3, (n_c, n_c))
    dist = (dist + dist.T) / 2
    rta = ((rng.uniform(size=(n_c, n_c)) < 0.2)[ex, im]
           & (yr >= rng.integers(0, n_y, (n_c, n_c))[ex, im]))
    mu = np.exp(1 + gdp[ex, yr] + gdp[im, yr] - 1.2 * np.log(dist[ex, im]) + 0.3 * rta)
    y = rng.poisson(mu * rng.gamma(2, 0.5, len(mu)))
    y = np.where(rng.uniform(size=len(y)) < zero_share, 0, y).astype(float)
    d = pd.DataFrame({"exporter": codes[ex], "importer": codes[im], "year": 1990 + yr,
                      "trade": y, "rta": rta.astype(float)})
    d = d.sample(frac=kept, random_state=seed).reset_index(drop=True)
    d["pair"] = d["exporter"] + "_" + d["importer"]
    d["exp_year"] = d["exporter"] + "_" + d["year"].astype(str)
    d["imp_year"] = d["importer"] + "_" + d["year"].astype(str)
    d.to_parquet(path)
    print(json.dumps({"rows": len(d), "zero_share": float((d["trade"] == 0).mean())}))


def fit(pkg: str, path: str, sep: str) -> None:
    d = pd.read_parquet(path)

    def run():
        if pkg == "ti":
            import twinimpact as ti
            r = ti.ppml(d, outcome="trade", regressors=["rta"],
                        fixed_effects=["exp_year", "imp_year", "pair"], cluster="pair",
                        separation=True if sep == "all" else sep)
            return float(r.params["rta"]), float(r.std_errors["rta"]), r.nobs
        import pyfixest as pf
        r = pf.fepois("trade ~ rta | exp_year + imp_year + pair", data=d,
                      vcov={"CRV1": "pair"}, separation_check=sep.split("+"))
        return float(r.coef()["rta"]), float(r.se()["rta"]), int(r._N)

    warnings.simplefilter("ignore")
    run()
    ts = []
    for _ in range(3):
        t0 = time.process_time()
        out = run()
        ts.append(time.process_time() - t0)
    print(json.dumps({"pkg": pkg, "panel": path, "separation": sep,
                      "cpu_s": round(sorted(ts)[1], 3), "coef": out[0], "se": out[1],
                      "nobs": out[2], "peak_mb": round(
                          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        generate(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5],
                 *(float(v) for v in sys.argv[6:8]))
    else:
        fit(sys.argv[2], sys.argv[3], sys.argv[4])
