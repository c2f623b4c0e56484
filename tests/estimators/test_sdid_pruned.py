"""Synthetic DiD's pruned Frank-Wolfe loop (``_sdid_fw.c``, ``ti_fw_prune_one``): in data
form beyond ~8,000 controls a step brings up to date only the coordinates whose lower
bound on the half-gradient does not rule them out as the next vertex, replaying the
updates they missed in the full loop's order. It must give the full loop's numbers to
the bit -- weights, iterations, convergence flags, bootstrap draws (control-design and
per-draw forms: repeated controls, padded coordinates), placebo replicates (masked
coordinates) -- whatever the renewal rule (``alpha``) and through rescales of the lazy
scale factor; and it must actually prune (coordinates brought up to date per step well
below all of them)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinimpact.estimators import _sdid_inference, _sdid_solver
from twinimpact.estimators._sdid_inference import (
    Group,
    bootstrap_replicates,
    fit_design,
    placebo_replicates,
)

from .test_sdid_data_form import _block_panel, _force_data_form, _strip


def _fn():
    if _sdid_solver.fw_loop() != "compiled":
        pytest.skip("the compiled extension is not built")
    return _sdid_solver._compiled_fw()


def _stats(fn) -> np.ndarray:
    out = np.zeros(6, dtype=np.int64)
    fn.prune_stats(out.ctypes.data)
    # steps, candidates, renewals, catch-ups of all, steps replayed, handed to the full loop
    return out


def _runs(Y, N0, groups, n_reps, fn, min_m, alpha=1.0, rescale=1e-100, giveup=1e9):
    """Fits, bootstrap draws and placebo replicates with the pruned loop from ``min_m``
    columns (-1: never) and renewal rule ``alpha``; returns (arrays, pruning stats)."""
    default_min = fn.prune(-2, 0.0)
    fn.prune(min_m, alpha)
    fn.rescale(rescale)
    default_giveup = fn.prune_giveup(-1.0)      # (a negative share reads it)
    fn.prune_giveup(giveup)
    try:
        fits, _ = fit_design(Y, np.arange(N0), groups, "sdid")
        boot = bootstrap_replicates(Y, N0, groups, fits, n_reps, np.random.default_rng(1))[0]
        plac = placebo_replicates(Y, N0, groups, fits, n_reps, np.random.default_rng(2))
        stats = _stats(fn)
    finally:
        fn.prune(default_min, 1.0)
        fn.rescale(1e-100)
        fn.prune_giveup(default_giveup)
    arrays = [f.omega for f in fits] + [f.lam for f in fits] + [boot, plac]
    iters = [_strip(f.iterations) for f in fits]
    return arrays, iters, stats


def _same(a, b):
    for x, y in zip(a[0], b[0], strict=True):
        assert np.array_equal(x, y)
    assert a[1] == b[1]


@pytest.mark.parametrize("form", ["design", "draw"])
@pytest.mark.parametrize("alpha", [1.0, 1e-3, 1e6])
def test_pruned_loop_gives_the_full_loops_numbers(form, alpha, monkeypatch):
    """Forced data form and pruning on a block panel: the same weights, iteration counts,
    bootstrap draws and placebo replicates as the full loop, bit for bit, for a renewal
    rule renewing every step (1e-3), the default and one never renewing (1e6); the loop
    pruned (candidates per step far below the coordinates) and renewed its bound."""
    fn = _fn()
    _force_data_form(monkeypatch)
    monkeypatch.setattr(_sdid_inference, "_DESIGN_ELEMS", 2**40 if form == "design" else 0)
    Y, N0, groups = _block_panel(5, N=160, N0=120)
    ref = _runs(Y, N0, groups, 4, fn, -1)
    assert ref[2][0] == 0                           # (the full loop: no pruned steps)
    got = _runs(Y, N0, groups, 4, fn, 0, alpha)
    _same(got, ref)
    steps, cands, renewals = got[2][:3]
    assert steps > 10_000
    if alpha <= 1.0:                                # pruned: most coordinates skipped
        assert cands < 0.5 * steps * N0, (cands / steps, N0)
    if alpha < 1.0:
        assert renewals > steps / 10
    elif alpha > 1e3:                               # (the bound from step 0: loose)
        assert renewals == 0


def test_pruned_loop_through_rescales(monkeypatch):
    """With the rescale threshold raised (the lazy scale factor folded back whenever it
    drops below 0.9: every eighth step or so), the pruned loop brings every coordinate up to
    date and restarts its bound at each rescale: the numbers of the full loop with the
    same threshold, bit for bit (and those differ from the default threshold's, so the
    rescales did happen)."""
    fn = _fn()
    _force_data_form(monkeypatch)
    Y, N0, groups = _block_panel(8, N=150, N0=110)
    ref = _runs(Y, N0, groups, 3, fn, -1, rescale=0.9)
    got = _runs(Y, N0, groups, 3, fn, 0, rescale=0.9)
    _same(got, ref)
    assert got[2][3] > 50                          # rescales: every coordinate caught up
    plain = _runs(Y, N0, groups, 3, fn, -1)
    assert any(not np.array_equal(a, b) for a, b in zip(plain[0], ref[0], strict=True))


def test_pruning_is_the_default_beyond_its_threshold():
    """The pruned loop runs by default from 8,192 columns (below, the row cache serves
    most steps; RESULTS.md "Pruned Frank-Wolfe steps")."""
    fn = _fn()
    assert fn.prune(-2, 0.0) == 8192


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n0=st.integers(30, 120), t=st.integers(8, 18),
       alpha=st.sampled_from([1e-2, 0.3, 1.0, 10.0]),
       form=st.sampled_from(["design", "draw"]), dup=st.booleans())
def test_pruned_loop_on_random_panels(seed, n0, t, alpha, form, dup):
    """Random block panels (controls, periods, renewal rule, bootstrap form drawn; with
    ``dup`` every control appears twice, so that coordinates tie exactly): pruned and full
    loops give the same numbers, bit for bit."""
    fn = _fn()
    Y, N0, groups = _block_panel(seed, N=n0 + 20, N0=n0, T=t)
    if dup:
        Y = np.concatenate([Y[:N0], Y[:N0], Y[N0:]])
        groups = [Group(a=g.a, rows=g.rows + N0) for g in groups]
        N0 = 2 * N0
    groups = [Group(a=t - 3, rows=g.rows) for g in groups]
    with pytest.MonkeyPatch.context() as mp:
        _force_data_form(mp)
        mp.setattr(_sdid_inference, "_DESIGN_ELEMS", 2**40 if form == "design" else 0)
        ref = _runs(Y, N0, groups, 3, fn, -1)
        got = _runs(Y, N0, groups, 3, fn, 0, alpha)
    _same(got, ref)


@pytest.mark.parametrize("form", ["design", "draw"])
def test_pruned_loop_handed_to_the_full_loop(form, monkeypatch):
    """A problem whose pruned steps cost more than a share of the full loop's (here any:
    share 0) goes on with the full loop from step 256, every coordinate brought up to
    date first: the full loop's numbers, bit for bit, with and without a row cache."""
    fn = _fn()
    _force_data_form(monkeypatch)
    monkeypatch.setattr(_sdid_inference, "_DESIGN_ELEMS", 2**40 if form == "design" else 0)
    Y, N0, groups = _block_panel(9, N=150, N0=110)
    for cache in (None, 0):
        if cache is not None:
            monkeypatch.setattr(_sdid_solver, "_ROW_CACHE_ELEMS", cache)
        ref = _runs(Y, N0, groups, 3, fn, -1)
        got = _runs(Y, N0, groups, 3, fn, 0, giveup=0.0)
        _same(got, ref)
        assert got[2][5] > 0


def test_pruning_hands_a_placebo_like_problem_to_the_full_loop():
    """The default share (0.75): a problem whose target is the mean of random controls
    (a placebo's: half-gradients close together, most coordinates pass the bound) is
    handed to the full loop; the point fit of a panel whose treated units differ keeps
    pruning."""
    fn = _fn()
    assert fn.prune_giveup(-1.0) == 0.75
    rng = np.random.default_rng(3)
    n, m = 20, 600
    D = rng.normal(size=(n, m)) + rng.normal(size=(n, 1))
    D -= D.mean(axis=0)
    stats = {}
    for name, b in (("placebo-like", D[:, :60].mean(axis=1)),
                    ("treated apart", D[:, :60].mean(axis=1) + 3.0 * np.linspace(-1, 1, n))):
        P = _sdid_solver.DataProblems(D=np.ascontiguousarray(D), cmap=None,
                                      Atb=(D.T @ b)[None, :], bb=np.array([b @ b]),
                                      x0=np.full((1, m), 1.0 / m), n=n, zeta=0.05)
        out = {}
        for min_m in (-1, 0):
            default_min = fn.prune(-2, 0.0)
            fn.prune(min_m, 1.0)
            try:
                out[min_m] = _sdid_solver.fw_gram_sets([P], min_decrease=1e-9, max_iter=3000)[0]
                stats[name, min_m] = _stats(fn)
            finally:
                fn.prune(default_min, 1.0)
        assert np.array_equal(out[0][0], out[-1][0]) and out[0][1] == out[-1][1], name
    assert stats["placebo-like", 0][5] == 1
    assert stats["treated apart", 0][5] == 0 and stats["treated apart", 0][0] > 2000


def test_placebo_replicates_keep_the_full_loop(monkeypatch):
    """A placebo's problems (masked coordinates, one replicate per call or several) are
    not pruned: their half-gradients lie close together, where pruning costs more than
    the full loop's rows computed four in a pass and cached."""
    fn = _fn()
    _force_data_form(monkeypatch)
    Y, N0, groups = _block_panel(5, N=160, N0=120)
    fits, _ = fit_design(Y, np.arange(N0), groups, "sdid")
    for batch in (None, 1):
        if batch is not None:
            monkeypatch.setattr(_sdid_inference, "_BATCH_ELEMS", batch)
            monkeypatch.setattr(_sdid_inference, "_SIDE_REPS", 1)
        default_min = fn.prune(-2, 0.0)
        fn.prune(0, 1.0)
        try:
            placebo_replicates(Y, N0, groups, fits, 3, np.random.default_rng(2))
            assert _stats(fn)[0] == 0
        finally:
            fn.prune(default_min, 1.0)
