"""Synthetic staggered-adoption panels for benchmarking (units x years, long format).

Several cohorts including never treated, dynamic heterogeneous effects (grow with
exposure, differ by cohort), unit and year effects, a time-invariant covariate that
shifts both adoption and trends (so conditional parallel trends hold given ``x``).

Usage::

    python benchmarks/generate.py --rows 1e6 --out /tmp/panel_1e6.parquet

or, from Python, ``make_panel(n_rows, n_periods=10, seed=0)``.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

__all__ = ["make_panel"]


def make_panel(n_rows: float, *, n_periods: int = 10, first_year: int = 2001,
               seed: int = 0) -> pd.DataFrame:
    """A balanced panel with about ``n_rows`` rows: columns ``unit, year, cohort
    (0 = never treated), y, x``."""
    n_units = max(20, round(float(n_rows) / n_periods))
    rng = np.random.default_rng(seed)
    years = np.arange(first_year, first_year + n_periods, dtype=np.int64)
    x = rng.normal(size=n_units)
    # adoption depends on x: higher x -> earlier adoption
    cohorts = years[[3, 5, 7]]
    score = x + rng.logistic(size=n_units)
    cut = np.quantile(score, [0.4, 0.6, 0.8])
    cohort = np.select([score > cut[2], score > cut[1], score > cut[0]],
                       [cohorts[0], cohorts[1], cohorts[2]], 0).astype(np.int64)
    unit = np.repeat(np.arange(n_units, dtype=np.int64), n_periods)
    year = np.tile(years, n_units)
    g = cohort[unit]
    e = year - g
    treated = (g > 0) & (e >= 0)
    effect = np.where(treated, (1.0 + 0.5 * e) * (1.0 + (g - cohorts[0]) / 10.0), 0.0)
    alpha = rng.normal(size=n_units)[unit]
    trend = 0.05 * (year - first_year) * (1.0 + 0.5 * x[unit])
    y = alpha + trend + effect + rng.normal(size=len(unit))
    return pd.DataFrame({"unit": unit, "year": year, "cohort": g, "y": y, "x": x[unit]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=float, default=1e5)
    ap.add_argument("--periods", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help=".parquet or .csv path")
    a = ap.parse_args()
    df = make_panel(a.rows, n_periods=a.periods, seed=a.seed)
    if a.out.endswith(".csv"):
        df.to_csv(a.out, index=False)
    else:
        df.to_parquet(a.out, index=False)


if __name__ == "__main__":
    main()
