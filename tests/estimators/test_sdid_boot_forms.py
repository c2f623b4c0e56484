"""The bootstrap's three forms of the unit-weight problems (``_sdid_inference.bootstrap_forms``):
the controls' Gram matrix kept, the controls' design with a row cache shared by the draws
(``_sdid_solver.ControlDesign``), each draw's own problem.

The rule picks them by size (the tests move its knobs and check which form runs); every
form gives the per-draw ``A.T @ A`` path's replicates to 1e-10 (the forms differ only in
the rounding of the Gram entries: a BLAS product against a fixed summation order); in the
control-design form the row cache (all rows, a filling one, none) changes no bit, its
compiled loop equals the NumPy loop bit for bit, and no k x k object is allocated."""
import tracemalloc

import numpy as np
import pytest

from twinimpact.estimators import _sdid_inference, _sdid_solver
from twinimpact.estimators._sdid_inference import (
    Group,
    bootstrap_forms,
    bootstrap_replicates,
    fit_design,
)

# the bootstrap with each draw's own A.T @ A (no kept matrix, no shared design)
from .test_sdid_gram_map import _reference

TOL = 1e-10


def _panel(seed, N=70, N0=52, T=14, cohorts=2):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(N, 2)) @ rng.normal(size=(2, T))
    Y = f + rng.normal(scale=0.5, size=(N, T)) + rng.normal(size=(N, 1))
    if cohorts == 1:
        return Y, N0, [Group(a=T - 4, rows=np.arange(N0, N))]
    groups = [Group(a=9, rows=np.arange(N0, N0 + 10)), Group(a=11, rows=np.arange(N0 + 10, N))]
    return Y, N0, groups


def _close(a, b):
    scale = max(1.0, float(np.abs(b).max()))
    assert np.abs(np.asarray(a) - np.asarray(b)).max() <= TOL * scale


def _count_designs(monkeypatch) -> list:
    seen = []
    real = _sdid_inference.control_design
    monkeypatch.setattr(_sdid_inference, "control_design",
                        lambda *a, **k: seen.append(a[1]) or real(*a, **k))
    return seen


def _fits(Y, N0, groups, method="sdid"):
    return fit_design(Y, np.arange(N0), groups, method)[0]


def test_the_rule_picks_the_form_by_size(monkeypatch):
    """kept while (kept + 1) N0^2 fits _GRAM_KEEP_ELEMS, then the control design while
    cohorts x N0^2 fits _DESIGN_ELEMS (and the compiled loop runs), else per draw; a
    cohort whose omega is not estimated has none."""
    monkeypatch.setattr(_sdid_inference, "_design_form_ok", lambda: True)
    Y, N0, groups = _panel(0)
    fits = _fits(Y, N0, groups)
    assert bootstrap_forms(N0, groups, fits) == ["kept", "kept"]
    monkeypatch.setattr(_sdid_inference, "_GRAM_KEEP_ELEMS", 3 * N0 * N0 - 1)
    assert bootstrap_forms(N0, groups, fits) == ["design", "design"]
    monkeypatch.setattr(_sdid_inference, "_DESIGN_ELEMS", 2 * N0 * N0)
    assert bootstrap_forms(N0, groups, fits) == ["design", "design"]
    monkeypatch.setattr(_sdid_inference, "_DESIGN_ELEMS", 2 * N0 * N0 - 1)
    assert bootstrap_forms(N0, groups, fits) == ["draw", "draw"]
    assert bootstrap_forms(N0, groups[:1], fits[:1]) == ["kept"]     # one cohort: 2 N0^2
    monkeypatch.setattr(_sdid_inference, "_GRAM_KEEP_ELEMS", 2 * N0 * N0 - 1)
    assert bootstrap_forms(N0, groups[:1], fits[:1]) == ["design"]   # N0^2 <= 2 N0^2 - 1
    did = _fits(Y, N0, groups, "did")
    assert bootstrap_forms(N0, groups, did) == ["none", "none"]
    monkeypatch.setattr(_sdid_inference, "_design_form_ok", lambda: False)
    assert bootstrap_forms(N0, groups[:1], fits[:1]) == ["draw"]
    # the defaults: one cohort, 40 periods of issue 13's panel
    monkeypatch.undo()
    monkeypatch.setattr(_sdid_inference, "_design_form_ok", lambda: True)
    one = [Group(a=30, rows=np.arange(2))]
    big = [fits[0]]
    assert bootstrap_forms(1_448, one, big) == ["kept"]
    assert bootstrap_forms(1_449, one, big) == ["design"]
    assert bootstrap_forms(4_096, one, big) == ["design"]
    assert bootstrap_forms(4_097, one, big) == ["draw"]


def _force_design_form(kernel, monkeypatch):
    """The control-design form on these small panels, on the ``kernel`` loop (the
    compiled one skipped when not built)."""
    if kernel == "numpy":
        monkeypatch.setenv(_sdid_solver.KERNEL_ENV, "numpy")
    elif _sdid_solver.fw_loop() != "compiled":
        pytest.skip("compiled Frank-Wolfe loop not built")
    monkeypatch.setattr(_sdid_inference, "_design_form_ok", lambda: True)
    monkeypatch.setattr(_sdid_inference, "_GRAM_KEEP_ELEMS", 0)


@pytest.mark.parametrize("kernel", ["compiled", "numpy"])
@pytest.mark.parametrize("method", ["sdid", "sc"])
@pytest.mark.parametrize("cohorts", [1, 2])
def test_control_design_gives_the_per_draw_numbers(kernel, method, cohorts, monkeypatch):
    _force_design_form(kernel, monkeypatch)
    Y, N0, groups = _panel(4 + cohorts, cohorts=cohorts)
    fits = _fits(Y, N0, groups, method)
    seen = _count_designs(monkeypatch)
    got, _ = bootstrap_replicates(Y, N0, groups, fits, 10, np.random.default_rng(8))
    assert len(seen) == len(groups)                       # the design form ran
    ref = _reference(Y, N0, groups, fits, 10, np.random.default_rng(8))
    assert np.isfinite(ref).all()
    _close(got, ref)


@pytest.mark.parametrize("elems", [0, 700, 2**23])
def test_control_design_row_cache_changes_no_bit(elems, monkeypatch):
    """No cache, a cache that fills after a dozen rows, one holding every row: the same
    replicates to the bit (rows kept across draws are the same numbers), and the
    compiled loop (every variant) equals the NumPy loop to the bit."""
    if _sdid_solver.fw_loop() != "compiled":
        pytest.skip("compiled Frank-Wolfe loop not built")
    monkeypatch.setattr(_sdid_inference, "_design_form_ok", lambda: True)
    monkeypatch.setattr(_sdid_inference, "_GRAM_KEEP_ELEMS", 0)
    Y, N0, groups = _panel(9, N=130, N0=100)             # > 32 controls: all row tails
    fits = _fits(Y, N0, groups)

    def run():
        return bootstrap_replicates(Y, N0, groups, fits, 6, np.random.default_rng(3))[0]

    monkeypatch.setattr(_sdid_solver, "_ROW_CACHE_ELEMS", 0)
    ref = run()
    monkeypatch.setattr(_sdid_solver, "_ROW_CACHE_ELEMS", elems)
    used = []
    real = _sdid_solver.RowCache.buffer
    monkeypatch.setattr(_sdid_solver.RowCache, "buffer",
                        lambda self: used.append((self.rows, int(self.used[0])))
                        or real(self))
    fn = _sdid_solver._compiled_fw()
    try:
        for which, pair in ((-1, 1), (1, 1), (0, 0)):
            fn.select(which, pair)
            used.clear()
            assert np.array_equal(run(), ref)
            if elems:                                     # the cache was used and kept
                assert max(u for _, u in used) > 0
                assert all(u <= r for r, u in used)
    finally:
        fn.select(-1, 1)
    monkeypatch.setenv(_sdid_solver.KERNEL_ENV, "numpy")
    assert np.array_equal(run(), ref)


def test_control_design_allocates_no_k_by_k_object(monkeypatch):
    """1,200 controls x 6 pre-periods (a k x k matrix: 11.5 MB): the design form's
    bootstrap with a small row cache stays far below one k x k matrix (traced peak);
    the per-draw form with the same draws allocates it (the test can fail)."""
    if _sdid_solver.fw_loop() != "compiled":
        pytest.skip("compiled Frank-Wolfe loop not built")
    rng = np.random.default_rng(7)
    N0, N1, T, a = 1_200, 40, 8, 6
    Y = rng.normal(size=(N0 + N1, T)) + rng.normal(size=(N0 + N1, 1))
    groups = [Group(a=a, rows=np.arange(N0, N0 + N1))]
    fits = _fits(Y, N0, groups)
    kk = N0 * N0 * 8
    monkeypatch.setattr(_sdid_inference, "_GRAM_KEEP_ELEMS", 0)

    def peak():
        tracemalloc.start()
        try:
            out = bootstrap_replicates(Y, N0, groups, fits, 2, np.random.default_rng(2))[0]
            return tracemalloc.get_traced_memory()[1], out
        finally:
            tracemalloc.stop()

    monkeypatch.setattr(_sdid_inference, "_DESIGN_ELEMS", 0)
    per_draw, ref = peak()
    assert per_draw > kk
    monkeypatch.setattr(_sdid_inference, "_DESIGN_ELEMS", 2**40)
    monkeypatch.setattr(_sdid_solver, "_ROW_CACHE_ELEMS", 50 * N0)
    seen = _count_designs(monkeypatch)
    design, got = peak()
    assert seen and design < kk / 4, (design, kk)
    _close(got, ref)


@pytest.mark.parametrize("kernel", ["compiled", "numpy"])
@pytest.mark.parametrize("cohorts, n_reps", [(1, 7), (2, 6)])
def test_draws_in_alternation_change_no_bit(kernel, cohorts, n_reps, monkeypatch):
    """The control-design form solves two draws' unit-weight problems in one compiled
    call (one coordinate map per problem, padded with masked coordinates): every
    replicate equals the draws solved one by one, to the bit (an odd count: the last draw
    alone); the paired path did run."""
    _force_design_form(kernel, monkeypatch)
    Y, N0, groups = _panel(11, N=130, N0=100, cohorts=cohorts)
    fits = _fits(Y, N0, groups)

    def run():
        return bootstrap_replicates(Y, N0, groups, fits, n_reps, np.random.default_rng(4))[0]

    monkeypatch.setattr(_sdid_inference, "_PAIR_DRAWS", 1)
    ref = run()
    calls = []
    real = _sdid_inference._design_draw_taus
    monkeypatch.setattr(_sdid_inference, "_design_draw_taus",
                        lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    monkeypatch.setattr(_sdid_inference, "_PAIR_DRAWS", 2)
    got = run()
    assert calls and max(calls) == 2
    assert np.array_equal(got, ref)
