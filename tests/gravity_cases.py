"""The small gravity panel shared by the PPML tests (tests/estimators/test_ppml_order.py,
tests/core/test_direct_codes.py): every ordered pair of ``n_c`` countries over ``n_y``
years, exporter / importer year effects, an RTA switching on at random years, a
covariate, Poisson flows with a share of zeros and an all-zero exporter-year (separated
rows), weights, and a share of the rows dropped at random (``DataFrame.sample``: the rows
come shuffled). Keys are integer codes (``exporter``, ``importer``) and calendar years;
each test makes its own key columns from them."""

from __future__ import annotations

import numpy as np
import pandas as pd


def gravity_base(seed: int, n_c: int, n_y: int, *, zeros: float, missing: float,
                 weights: bool) -> pd.DataFrame:
    """Columns exporter, importer (0 .. n_c - 1), year (from 1990), trade, rta, x2, w
    (uniform 0.5-2, or 1.0 without ``weights``); ``1 - missing`` of the rows, shuffled."""
    rng = np.random.default_rng(seed)
    ex, im, yr = (a.ravel() for a in np.meshgrid(np.arange(n_c), np.arange(n_c),
                                                  np.arange(n_y), indexing="ij"))
    keep = ex != im
    ex, im, yr = ex[keep], im[keep], yr[keep]
    g = rng.normal(0, 1, (n_c, n_y)).cumsum(1) * 0.1 + rng.normal(0, 1, (n_c, 1))
    rta = ((rng.uniform(size=(n_c, n_c)) < 0.3)[ex, im]
           & (yr >= rng.integers(0, n_y, (n_c, n_c))[ex, im])).astype(float)
    x2 = rng.normal(size=len(ex))
    mu = np.exp(1 + g[ex, yr] + g[im, yr] + 0.3 * rta + 0.1 * x2)
    y = rng.poisson(mu).astype(float)
    y[rng.uniform(size=len(y)) < zeros] = 0.0
    y[(ex == 1) & (yr == 0)] = 0.0                 # an all-zero exporter-year: separated
    d = pd.DataFrame({"exporter": ex, "importer": im, "year": 1990 + yr, "trade": y,
                      "rta": rta, "x2": x2,
                      "w": rng.uniform(0.5, 2.0, len(y)) if weights else 1.0})
    return d.sample(frac=1 - missing, random_state=seed).reset_index(drop=True)
