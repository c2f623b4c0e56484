"""Benchmark: twinimpact ``ppml`` vs pyfixest ``fepois`` with three fixed-effect sets.

pyfixest is not a twinimpact dependency; run this with a throwaway venv::

    python -m venv /tmp/venv-ppml
    /tmp/venv-ppml/bin/pip install pyfixest pandas pyarrow
    /tmp/venv-ppml/bin/pip install -e /work/main
    /tmp/venv-ppml/bin/python benchmarks/run_ppml.py            # gravity + 200k synthetic
    /tmp/venv-ppml/bin/python benchmarks/run_ppml.py --large    # adds the ~1e6-row panel

Timings are warm medians: one untimed warm-up run per tool (numba compilation for
pyfixest), then the median of ``--repeats`` timed runs. Both tools use the same formula,
the same fixed-effect separation check ("fe") and clustering by pair; twinimpact's own
default (fe + ReLU separation check) is timed too. Writes a markdown table to stdout
(paste into benchmarks/results_ppml.md).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from twinimpact.estimators.ppml import ppml

ROOT = Path(__file__).resolve().parents[1]


def gravity_panel() -> pd.DataFrame:
    d = pd.read_parquet(ROOT / "tests" / "data" / "gravity_yotov" / "agtpa_applications.parquet")
    d = d[d["year"].isin(range(1986, 2007, 4))].copy()
    intra = d["exporter"] == d["importer"]
    d["pair_fe"] = np.where(intra, -1, d["pair_id"]).astype(int)
    d["exp_year"] = d["exporter"] + d["year"].astype(int).astype(str)
    d["imp_year"] = d["importer"] + d["year"].astype(int).astype(str)
    d["sum_trade"] = d.groupby("pair_id")["trade"].transform("sum")
    return d[d["sum_trade"] > 0].reset_index(drop=True)


def synthetic_panel(n_countries: int, n_years: int, seed: int = 0) -> pd.DataFrame:
    """Structural-gravity-like panel: exporter-year, importer-year and pair effects, an
    RTA dummy switching on over time, 3 lags; ~20% zero flows."""
    rng = np.random.default_rng(seed)
    c = n_countries
    i = np.repeat(np.arange(c), c)
    j = np.tile(np.arange(c), c)
    pair = i * c + j
    npair = c * c
    yrs = np.arange(n_years)
    ii = np.tile(i, n_years)
    jj = np.tile(j, n_years)
    pp = np.tile(pair, n_years)
    tt = np.repeat(yrs, npair)
    start = rng.integers(0, 2 * n_years, size=npair)  # many pairs never sign
    rta = (tt >= start[pp]).astype(float)
    lag1 = (tt - 4 >= start[pp]).astype(float)
    lag2 = (tt - 8 >= start[pp]).astype(float)
    a_it = rng.normal(0, 1, (c, n_years))[ii, tt]
    b_jt = rng.normal(0, 1, (c, n_years))[jj, tt]
    m_ij = rng.normal(0, 1.5, npair)[pp]
    eta = 1.0 + a_it + b_jt + m_ij + 0.3 * rta + 0.2 * lag1 + 0.1 * lag2
    y = rng.poisson(np.exp(eta)) * rng.lognormal(0, 0.3, len(eta))
    return pd.DataFrame({"exp_year": ii * 1000 + tt, "imp_year": jj * 1000 + tt,
                         "pair_fe": pp, "pair_id": pp, "trade": y, "rta": rta,
                         "rta_lag4": lag1, "rta_lag8": lag2})


def timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def run(name: str, d: pd.DataFrame, regs: list[str], repeats: int) -> list[str]:
    import pyfixest as pf

    fml = "trade ~ " + " + ".join(regs) + " | exp_year + imp_year + pair_fe"
    fe = ["exp_year", "imp_year", "pair_fe"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_pf, f_pf = timed(lambda: pf.fepois(fml, data=d, vcov={"CRV1": "pair_id"},
                                             separation_check=["fe"]), repeats)
        t_ti, r_ti = timed(lambda: ppml(d, outcome="trade", regressors=regs, fixed_effects=fe,
                                        cluster="pair_id", separation="fe"), repeats)
        t_ti2, _ = timed(lambda: ppml(d, outcome="trade", regressors=regs, fixed_effects=fe,
                                      cluster="pair_id"), repeats)
    diff = float(np.max(np.abs(r_ti.params.to_numpy() - f_pf.coef().to_numpy())))
    return [f"| {name} | {len(d):,} | {r_ti.nobs:,} | {t_pf:.2f} | {t_ti:.2f} | "
            f"{t_ti / t_pf:.2f} | {t_ti2:.2f} | {diff:.1e} | {r_ti.diagnostics['iterations']} |"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--large", action="store_true", help="add the ~1e6-row synthetic panel")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import pyfixest as pf

    lines = ["| data | rows | rows used | pyfixest fepois (s) | twinimpact ppml (s) | "
             "ratio | twinimpact, fe+ReLU (s) | max abs coef diff | IRLS iterations |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += run("gravity 69 countries, 1986-2006 every 4 y (Yotov et al. 2016)",
                 gravity_panel(), ["rta", "rta_lag4", "rta_lag8", "rta_lag12"], args.repeats)
    lines += run("synthetic 90 x 90 countries x 25 years", synthetic_panel(90, 25),
                 ["rta", "rta_lag4", "rta_lag8"], args.repeats)
    if args.large:
        lines += run("synthetic 200 x 200 countries x 25 years", synthetic_panel(200, 25),
                     ["rta", "rta_lag4", "rta_lag8"], max(1, args.repeats - 1))
    print(f"pyfixest {pf.__version__}, numpy {np.__version__}, pandas {pd.__version__}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
