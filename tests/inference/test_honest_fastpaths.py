"""HonestDiD relative magnitudes: fast paths against their slow oracles.

* the least-favourable critical value's draw-only upper bound (``lf_cv_upper``) is never
  below the critical value itself (same draws), so skipping ``lf_cv`` for values above the
  bound cannot change a decision; ``honest_did`` gives the same bounds with the bound
  switched off;
* the stacked screening of offered bases (``WarmEta.seed``) keeps the same bases, in the
  same order, with the same inverses and check matrices as one support at a time
  (``WarmEta._seed_loop``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinimpact.inference import _honest_arp as arp
from twinimpact.inference.honest_did import (
    _arp_setup,
    _rm_problems,
    accepted_range,
    constraints_relative_magnitudes,
    honest_did,
)


def _event_study(num_pre: int, num_post: int, seed: int):
    rng = np.random.default_rng(seed)
    k = num_pre + num_post
    a = rng.normal(size=(k, k))
    sig = 0.01 * (a @ a.T / k + 0.2 * np.eye(k))
    beta = rng.multivariate_normal(np.zeros(k), sig)
    beta[num_pre:] += 0.05 * rng.normal()
    return beta, sig


def _piece(num_pre, num_post, mbar, s, sign, seed):
    beta, sig = _event_study(num_pre, num_post, seed)
    a_mat = constraints_relative_magnitudes(num_pre, num_post, mbar, s, sign)
    y, a_th, x, sig_y = _arp_setup(beta, sig, a_mat, num_pre, num_post,
                                   np.eye(num_post)[0], True)
    return y, a_th, arp._independent_columns(x), sig_y


# ------------------------------------------------------------------ LF upper bound
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), num_pre=st.integers(2, 4), num_post=st.integers(1, 6),
       mbar=st.sampled_from([0.0, 0.4, 1.0, 3.0]), sign=st.booleans(),
       kappa=st.sampled_from([0.005, 0.05, 0.2]), sims=st.sampled_from([7, 200, 1000]))
def test_lf_cv_upper_bounds_lf_cv(seed, num_pre, num_post, mbar, sign, kappa, sims):
    """Same draws: the bound from the largest standardised moment of each draw is at
    least the LF critical value (vertex and warm-LP engines)."""
    s = -(seed % num_pre)
    _y, _a, x, sig = _piece(num_pre, num_post, mbar, s, sign, seed)
    sd = np.sqrt(np.diag(sig))
    xi = arp.lf_draws(sig, sims, seed)
    np.testing.assert_array_equal(
        xi, arp._standard_normal(seed, sims, len(sd)) @ arp._psd_sqrt(sig).T)
    bound = arp.lf_cv_upper(xi, sd, kappa)
    warm = arp.least_favorable_cv(None, sig, kappa, sd=sd, x=x, sims=sims, seed=seed,
                                  solver=arp.WarmEta(sd, x))
    assert warm <= bound
    if arp.n_supports(len(sd), x.shape[1]) <= 2_000:
        verts = arp.dual_vertices(sd, x)
        cv = arp.least_favorable_cv(verts, sig, kappa, sd=sd, x=x, sims=sims, seed=seed)
        assert cv <= bound
        assert cv == pytest.approx(warm, rel=1e-9, abs=1e-12)
    # passing the draws is the same as drawing them
    assert arp.least_favorable_cv(None, sig, kappa, sd=sd, x=x, sims=sims, seed=seed,
                                  solver=arp.WarmEta(sd, x), xi=xi) == warm


def test_lf_cv_upper_is_an_order_statistic_bound():
    """Hand case: no nuisance, identity covariance -> eta is the largest moment, so the
    bound's order statistic is the quantile's upper neighbour."""
    xi = np.arange(12.0).reshape(6, 2)  # row maxima 1, 3, ..., 11
    sd = np.ones(2)
    # (n - 1)(1 - kappa) = 5 * 0.7 = 3.5 -> order statistics 3 and 4 (values 7, 9)
    b = arp.lf_cv_upper(xi, sd, 0.3)
    assert b == pytest.approx(9.0, abs=1e-8) and b >= 9.0
    assert np.quantile(xi.max(axis=1), 0.7) <= b


def test_problem_bound_is_cv_once_known_and_inf_for_conditional():
    y, a, x, sig = _piece(3, 4, 1.0, 0, True, seed=3)
    kw = {"engine": "lp_warm", "alpha": 0.05, "kappa": 0.005, "lf_sims": 300, "seed": 0}
    p = arp.ArpProblem(y, a, sig, x, hybrid="LF", **kw)
    bound = p.lf_cv_bound
    assert p._lf_cv is None  # the bound alone solves no LP for the draws
    cv = p.lf_cv
    assert cv <= bound and p.lf_cv_bound == cv
    q = arp.ArpProblem(y, a, sig, x, hybrid="ARP", **kw)
    assert q.lf_cv_bound == np.inf and q.lf_cv == np.inf


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("method", ["C-LF", "Conditional"])
def test_honest_did_same_bounds_without_the_bound(monkeypatch, seed, method):
    """5 pre + 10 post (the benchmark shape): the bounds with the LF upper bound pruning
    equal those with the exact critical value everywhere (the bound replaced by lf_cv),
    and the pruning skips most exact critical values."""
    beta, sig = _event_study(5, 10, seed)
    mv = [0.0, 0.5, 1.0, 2.0]
    calls = {"n": 0}
    cv = arp.least_favorable_cv

    def counting(*a, **k):
        calls["n"] += 1
        return cv(*a, **k)

    monkeypatch.setattr(arp, "least_favorable_cv", counting)
    fast = honest_did(beta, sig, num_pre=5, num_post=10, m_values=mv, method=method,
                      grid_points=300)
    n_fast = calls["n"]
    monkeypatch.setattr(arp.ArpProblem, "lf_cv_bound", property(lambda p: p.lf_cv))
    calls["n"] = 0
    slow = honest_did(beta, sig, num_pre=5, num_post=10, m_values=mv, method=method,
                      grid_points=300)
    pd_equal = np.array_equal(fast[["lb", "ub"]].to_numpy(), slow[["lb", "ub"]].to_numpy(),
                              equal_nan=True)
    assert pd_equal
    if method == "C-LF":
        assert n_fast < calls["n"]
    else:
        assert n_fast == calls["n"] == 0


# ------------------------------------------------------------------ stacked seeding
def _solvers_from_pool(num_pre, num_post, seed):
    """Warm solvers of every piece at two Mbar values (the pool honest_did builds)."""
    beta, sig = _event_study(num_pre, num_post, seed)
    lv = np.eye(num_post)[0]
    pool: list = []
    kw = {"alpha": 0.05, "hybrid": "LF", "kappa": 0.005, "post_moments_only": True,
          "lf_sims": 200, "seed": 0, "engine": "lp_warm"}
    grid = np.linspace(-1.5, 1.5, 41)
    for mbar in (0.3, 1.2):
        accepted_range(_rm_problems(beta, sig, num_pre, num_post, lv, mbar, pool=pool,
                                    **kw), grid)
    probs = _rm_problems(beta, sig, num_pre, num_post, lv, 0.8, pool=None, **kw)
    return pool, probs


def _state(w: arp.WarmEta):
    return (w._supp, w._winv, w._bgamma, w.vertices, np.array(w._check), w.n_seeded)


@pytest.mark.parametrize("seed", [0, 4])
def test_stacked_seed_equals_one_at_a_time(seed):
    pool, probs = _solvers_from_pool(4, 5, seed)
    offered = np.vstack([s.supports for s in pool])
    k1 = offered.shape[1]
    # duplicates, an out-of-range index and a repeated moment are offered too
    junk = np.array([offered[0], [0] * k1, [*range(k1 - 1), 10_000]])
    offered = np.vstack([offered, junk, offered[::-1]])
    assert len(offered) > 10
    n_kept = []
    for p in probs:
        fast, slow = arp.WarmEta(p.sd, p.x), arp.WarmEta(p.sd, p.x)
        kf, ks = fast.seed(offered), slow._seed_loop(offered)
        assert kf == ks
        for a, b in zip(_state(fast), _state(slow), strict=True):
            np.testing.assert_array_equal(a, b)
        ys = p.moments(np.linspace(-1, 1, 50))
        ef, gf = fast.solve(ys)
        es, gs = slow.solve(ys)
        np.testing.assert_array_equal(ef, es)
        np.testing.assert_array_equal(gf, gs)
        n_kept.append(kf)
    assert max(n_kept) > 0  # something was kept, and
    assert min(n_kept) < len({tuple(r) for r in offered.tolist()})  # something rejected


def test_seed_of_nothing_keeps_state():
    _pool, probs = _solvers_from_pool(2, 3, 0)
    p = probs[0]
    w = arp.WarmEta(p.sd, p.x)
    assert w.seed(np.zeros((0, p.x.shape[1] + 1), dtype=int)) == 0
    assert w.n_seeded == 0 and len(w.supports) == 0


# ------------------------------------------------------------------ breakdown's test of one value
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), num_pre=st.integers(2, 4), num_post=st.integers(1, 6),
       mbar=st.sampled_from([0.0, 0.2, 0.7, 2.0]), theta=st.floats(-0.6, 0.6),
       hybrid=st.sampled_from(["LF", "ARP"]))
def test_rejects_everywhere_equals_accepted_range(seed, num_pre, num_post, mbar, theta,
                                                  hybrid):
    """breakdown_value's early-exit test of one value gives the decision of the full
    accepted_range on that value (fresh pieces for each, so neither sees the other's
    bases)."""
    from twinimpact.inference.honest_did import _rejects_everywhere

    beta, sig = _event_study(num_pre, num_post, seed)
    lv = np.eye(num_post)[0]
    kw = {"alpha": 0.05, "hybrid": hybrid, "kappa": 0.005, "post_moments_only": True,
          "lf_sims": 200, "seed": 0, "engine": "auto"}

    def pieces():
        return _rm_problems(beta, sig, num_pre, num_post, lv, mbar, pool=[], **kw)
    want = accepted_range(pieces(), np.array([theta])) is None
    assert _rejects_everywhere(pieces(), theta) == want
