"""Random blocked influence functions for the tests of ``_cs_numerics.BlockedInfluence``
(blocks over disjoint unit sets, each with a random subset of the columns)."""

from __future__ import annotations

import numpy as np

from twinimpact.estimators import _cs_numerics as num


def random_blocked(rng: np.random.Generator, n: int, K: int, n_groups: int, *,
                   p_col: float = 0.6, rank: int | None = None, with_nan: bool = False,
                   cover: bool = True, p_nan_col: float = 0.2) -> num.BlockedInfluence:
    """``n_groups`` blocks over the units (every unit in one, or with ``cover=False`` some
    in none), each with the columns drawn with probability ``p_col``; values normal, of
    rank at most ``rank`` if given, one NaN per block with ``with_nan``; ``nan_cols``
    drawn with probability ``p_nan_col``."""
    group = rng.integers(0, n_groups + (0 if cover else 1), n)  # n_groups: in no block
    rows, cols, vals = [], [], []
    for j in range(n_groups):
        r = np.flatnonzero(group == j)
        c = np.flatnonzero(rng.random(K) < p_col)
        if rank is None:
            v = rng.normal(size=(len(r), len(c)))
        else:
            q = min(rank, max(len(c), 1))
            v = rng.normal(size=(len(r), q)) @ rng.normal(size=(q, len(c)))
        if with_nan and v.size:
            v[0, 0] = np.nan
        rows.append(r)
        cols.append(c)
        vals.append(np.asfortranarray(v))
    return num.BlockedInfluence(n, K, tuple(rows), tuple(cols), tuple(vals),
                                rng.random(K) < p_nan_col)
