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
    out = np.zeros(5, dtype=np.int64)
    fn.prune_stats(out.ctypes.data)
    return out      # steps, candidates, renewals, catch-ups of all, steps replayed


def _runs(Y, N0, groups, n_reps, fn, min_m, alpha=1.0, rescale=1e-100):
    """Fits, bootstrap draws and placebo replicates with the pruned loop from ``min_m``
    columns (-1: never) and renewal rule ``alpha``; returns (arrays, pruning stats)."""
    default_min = fn.prune(-2, 0.0)
    fn.prune(min_m, alpha)
    fn.rescale(rescale)
    try:
        fits, _ = fit_design(Y, np.arange(N0), groups, "sdid")
        boot = bootstrap_replicates(Y, N0, groups, fits, n_reps, np.random.default_rng(1))[0]
        plac = placebo_replicates(Y, N0, groups, fits, n_reps, np.random.default_rng(2))
        stats = _stats(fn)
    finally:
        fn.prune(default_min, 1.0)
        fn.rescale(1e-100)
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
    # a placebo replicate per call: pruned too (masked coordinates); by default the
    # placebo's calls of several replicates are not pruned
    monkeypatch.setattr(_sdid_inference, "_BATCH_ELEMS", 1)
    monkeypatch.setattr(_sdid_inference, "_SIDE_REPS", 1)
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
