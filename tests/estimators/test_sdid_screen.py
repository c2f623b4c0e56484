"""Synthetic DiD's placebo unit-weight problems in the screened residual form
(``_sdid_solver.fw_screened``, ``ti_fw_screen`` in ``_sdid_fw.c``).

Each step screens every coordinate's half-gradient in single precision and computes in
double precision only those the proven error bound cannot rule out. So:

- the screened loop must equal its exhaustive variant (every coordinate in double
  precision) bit for bit -- weights, iterations, convergence flags -- with every screen
  kernel (AVX-512, AVX2 + FMA, plain C), any number of live problems, on data of any
  scale, with exact ties and with near-ties far inside the bound;
- it must follow R synthdid's literal transcription (``sc_weight_fw_reference``) to
  rounding, with the same number of steps;
- a placebo through it must give the Gram form's replicates to 1e-10.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinimpact.estimators import _sdid_inference, _sdid_solver
from twinimpact.estimators._sdid_inference import fit_design, placebo_replicates
from twinimpact.estimators._sdid_solver import fw_screened, sc_weight_fw_reference

from .test_sdid_data_form import _block_panel

pytestmark = pytest.mark.skipif(_sdid_solver.fw_loop() != "compiled",
                                reason="the compiled extension is not built")


def _kernels() -> list[int]:
    """The screen kernels this processor can run (0 plain C, 1 AVX2 + FMA, 2 AVX-512;
    asking for 2 sets the best it has: callers restore the kernel, ``default_kernel``)."""
    return list(range(_sdid_solver._compiled_fw().screen_kernel(2) + 1))


def _set_kernel(which: int) -> int:
    return _sdid_solver._compiled_fw().screen_kernel(which)


@pytest.fixture
def default_kernel():
    fn = _sdid_solver._compiled_fw()
    before = fn.screen_kernel(-1)
    yield
    fn.screen_kernel(before)


def _problems(seed, n=9, k=70, B=5, scale=1.0, masked=6, dup=False, near=0.0,
              factors=2):
    """``B`` placebo-like problems on one centred design: a replicate's pseudo-treated
    columns masked, its target their mean. ``dup``: every column twice (exact ties);
    ``near``: columns that are copies of the first ten perturbed by ``near`` (relative)."""
    rng = np.random.default_rng(seed)
    Y = rng.normal(size=(n, factors)) @ rng.normal(size=(factors, k)) \
        + rng.normal(scale=0.7, size=(n, k))
    if dup:
        Y = np.repeat(Y[:, : k // 2], 2, axis=1)
    if near:
        Y[:, 10:] = Y[:, rng.integers(0, 10, k - 10)] * (1 + near * rng.normal(size=(n, k - 10)))
    A = (Y - Y.mean(axis=0)) * scale
    keep = np.ones((B, A.shape[1]), dtype=bool)
    for b in range(B):
        keep[b, rng.choice(A.shape[1], masked, replace=False)] = False
    tgt = np.stack([A[:, ~keep[b]].mean(axis=1) if masked else A.mean(axis=1) + 0.1 * scale
                    for b in range(B)])
    x0 = keep / keep.sum(axis=1, keepdims=True)
    return A, tgt, keep, x0


def _run(A, tgt, keep, x0, zeta, max_iter, **kw):
    return fw_screened(A, tgt, keep, x0, zeta, min_decrease=1e-9 * max(1.0, np.abs(A).max()),
                       max_iter=max_iter, **kw)


def _same(a, b):
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize("case", [
    dict(),
    dict(scale=1e-30), dict(scale=1e30), dict(scale=3e-160), dict(scale=2e150),
    dict(dup=True), dict(near=1e-9), dict(near=1e-13),
    dict(n=1, k=40), dict(n=40, k=33), dict(k=1, masked=0), dict(k=17, masked=16),
    dict(factors=0), dict(k=130, B=21),
])
@pytest.mark.parametrize("zeta", [0.0, 0.4, 50.0])
def test_screened_equals_exhaustive_bit_for_bit(case, zeta, default_kernel):
    """Every kernel, one or several live problems, the screened steps: the exhaustive
    loop's weights, iterations and flags to the bit -- on tiny and huge data (the scaling
    into float's range), exact ties (every column twice: the first index wins in both),
    columns equal to 1e-9 / 1e-13 (far inside the bound: many candidates), a zero
    penalty (zeta 0), one observation, one coordinate, one kept coordinate."""
    A, tgt, keep, x0 = _problems(5, **case)
    z = zeta * case.get("scale", 1.0)                 # the penalty in the data's scale
    ref = _run(A, tgt, keep, x0, z, 400, exhaustive=True)
    before = _sdid_solver.SCREEN_STATS.copy()
    for kern in _kernels():
        assert _set_kernel(kern) == kern
        for width in (1, 3, 16):
            _same(_run(A, tgt, keep, x0, z, 400, width=width), ref)
    steps, cands, exh = _sdid_solver.SCREEN_STATS - before
    assert steps > 0 and exh == 0                     # the screen decided every step
    assert cands >= steps                             # at least the vertex, each step


def test_near_ties_make_candidates_and_keep_the_vertex(default_kernel):
    """Columns equal to 1e-13 (relative) have half-gradients closer than the screen's
    bound: many candidates a step, all computed in double precision, and still the
    exhaustive loop's vertex."""
    A, tgt, keep, x0 = _problems(11, k=200, near=1e-13)
    before = _sdid_solver.SCREEN_STATS.copy()
    got = _run(A, tgt, keep, x0, 0.3, 300)
    steps, cands, _ = _sdid_solver.SCREEN_STATS - before
    assert cands > 3 * steps
    _same(got, _run(A, tgt, keep, x0, 0.3, 300, exhaustive=True))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("max_iter", [1, 2, 3, 100, 2000])
def test_screened_follows_the_literal_transcription(seed, max_iter):
    """R synthdid's ``sc.weight.fw`` transcribed literally (residual recomputed every
    step): the same weights to 1e-12, the same number of steps and the same flag, from
    uniform weights and from a sparse start (pass 2 after sparsify)."""
    A, tgt, keep, x0 = _problems(seed, n=11, k=90, B=3)
    md = 1e-4
    for start in ("uniform", "sparse"):
        if start == "sparse":
            x0 = _sdid_solver.sparsify_rows(_run(A, tgt, keep, x0, 0.5, 100)[0])
        y, it, cv = fw_screened(A, tgt, keep, x0, 0.5, min_decrease=md, max_iter=max_iter)
        for b in range(len(tgt)):
            Yw = np.column_stack([A[:, keep[b]], tgt[b]])
            ref = sc_weight_fw_reference(Yw, 0.5, intercept=False, init=x0[b, keep[b]],
                                         min_decrease=md, max_iter=max_iter)
            assert it[b] == ref.n_iter and cv[b] == ref.converged
            np.testing.assert_allclose(y[b, keep[b]], ref.weights, rtol=0, atol=1e-12)
            assert np.all(y[b, ~keep[b]] == 0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 12), k=st.integers(2, 60),
       B=st.integers(1, 5), zeta=st.sampled_from([0.0, 1e-3, 0.5, 20.0]),
       log_scale=st.integers(-40, 40))
def test_screen_never_changes_a_vertex(seed, n, k, B, zeta, log_scale):
    """Random problems of any size and scale: screened equals exhaustive bit for bit."""
    A, tgt, keep, x0 = _problems(seed, n=n, k=k, B=B, scale=10.0 ** log_scale,
                                 masked=min(3, k - 1))
    z = zeta * 10.0 ** log_scale
    _same(_run(A, tgt, keep, x0, z, 150), _run(A, tgt, keep, x0, z, 150, exhaustive=True))


def test_bad_starts_are_refused():
    A, tgt, keep, x0 = _problems(1, B=2)
    x0 = x0.copy()
    x0[0, np.flatnonzero(~keep[0])[0]] = 0.1
    with pytest.raises(ValueError, match="keep leaves out"):
        _run(A, tgt, keep, x0, 0.5, 10)
    with pytest.raises(ValueError, match="must both be"):
        _run(A, tgt, keep, x0[:, :-1], 0.5, 10)


@pytest.mark.parametrize("seed", [3, 8])
def test_placebo_through_the_screen_equals_the_gram_form(seed, monkeypatch):
    """A placebo in data form runs its unit-weight problems through the screen (counted)
    and gives the Gram form's replicates to 1e-10; the old data-form loop
    (``SCREEN_MIN_ELEMS`` above the design) gives them too."""
    Y, N0, groups = _block_panel(seed, N=120, N0=90)
    fits, _ = fit_design(Y, np.arange(N0), groups, "sdid")
    ref = placebo_replicates(Y, N0, groups, fits, 13, np.random.default_rng(1))
    monkeypatch.setattr(_sdid_solver, "_GRAM_MAX_ELEMS", 0)
    monkeypatch.setattr(_sdid_solver, "_GRAM_DATA_MULT", 0)
    before = _sdid_solver.SCREEN_STATS.copy()
    stats: dict = {}
    got = placebo_replicates(Y, N0, groups, fits, 13, np.random.default_rng(1), stats)
    assert (_sdid_solver.SCREEN_STATS - before)[0] > 0
    assert stats["problems"] == 2 * 13 * 2            # 2 cohorts x 13 x (lambda, omega)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10 * np.abs(ref).max())
    monkeypatch.setattr(_sdid_solver, "SCREEN_MIN_ELEMS", 2**62)
    before = _sdid_solver.SCREEN_STATS.copy()
    old = placebo_replicates(Y, N0, groups, fits, 13, np.random.default_rng(1))
    assert (_sdid_solver.SCREEN_STATS - before)[0] == 0
    np.testing.assert_allclose(old, got, rtol=0, atol=1e-10 * np.abs(ref).max())


def test_placebo_groups_do_not_change_the_replicates(monkeypatch):
    """One replicate a chunk, grouped into screened calls of 1, 5 or 16: the same
    replicates to the bit (each problem's operations are its own)."""
    Y, N0, groups = _block_panel(4, N=120, N0=90)
    fits, _ = fit_design(Y, np.arange(N0), groups, "sdid")
    monkeypatch.setattr(_sdid_solver, "_GRAM_MAX_ELEMS", 0)
    monkeypatch.setattr(_sdid_solver, "_GRAM_DATA_MULT", 0)
    monkeypatch.setattr(_sdid_inference, "_BATCH_ELEMS", 1)
    out = {}
    for side in (1, 5, 16):
        monkeypatch.setattr(_sdid_inference, "_SIDE_REPS_WIDE", side)
        out[side] = placebo_replicates(Y, N0, groups, fits, 11, np.random.default_rng(2))
    assert np.array_equal(out[5], out[1]) and np.array_equal(out[16], out[1])
