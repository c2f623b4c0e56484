"""HonestDiD Delta^RM early stops against the full scan (issue 13, fuzz).

``accepted_range`` (cheap ``eta`` decisions, the least-favourable bound, scanning each
piece from the grid edges inwards in growing chunks and stopping at its first
acceptance) must give the extreme accepted grid points of the full scan with the
reference engine (one LP per grid point and per least-favourable draw), and the
``"auto"`` engine's full scan must equal the LP one. Forced chunks of 1 and 3 points.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinimpact.inference import honest_did as hd


def _case(seed: int, num_pre: int, num_post: int, weights: bool):
    rng = np.random.default_rng(seed)
    k = num_pre + num_post
    a = rng.normal(size=(k, k))
    sig = 0.01 * (a @ a.T / k + 0.2 * np.eye(k))
    beta = rng.multivariate_normal(np.zeros(k), sig)
    beta[num_pre:] += 0.05 * rng.normal()
    lv = (rng.dirichlet(np.ones(num_post)) if weights
          else np.eye(num_post)[int(rng.integers(0, num_post))])
    return beta, sig, lv


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10**6), num_pre=st.integers(1, 4), num_post=st.integers(1, 4),
       mbar=st.sampled_from([0.0, 0.3, 1.0, 2.5]), hybrid=st.sampled_from(["LF", "ARP"]),
       weights=st.booleans(), chunk=st.sampled_from([1, 3, 16]))
def test_accepted_range_equals_full_lp_scan(seed, num_pre, num_post, mbar, hybrid, weights,
                                            chunk):
    beta, sig, lv = _case(seed, num_pre, num_post, weights)
    grid = np.linspace(-1.0, 1.0, 31)
    kw = {"alpha": 0.05, "hybrid": hybrid, "kappa": 0.005, "post_moments_only": True,
          "lf_sims": 200, "seed": 0}
    full = hd.relative_magnitudes_cs(beta, sig, num_pre, num_post, lv, mbar, grid=grid,
                                     engine="lp", **kw)
    auto = hd.relative_magnitudes_cs(beta, sig, num_pre, num_post, lv, mbar, grid=grid,
                                     engine="auto", **kw)
    np.testing.assert_array_equal(auto, full)
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(hd, "_SCAN_CHUNK", chunk)
        got = hd.accepted_range(hd._rm_problems(beta, sig, num_pre, num_post, lv, mbar,
                                                engine="auto", pool=[], **kw), grid)
    finally:
        mp.undo()
    acc = np.flatnonzero(full)
    assert got == (None if not len(acc) else (int(acc[0]), int(acc[-1])))
