"""The bootstrap's unit-weight Gram matrix gathered from the Gram matrix of all controls
(``_sdid_solver.ControlGram``) gives the numbers of the per-draw ``A.T @ A`` -- entries,
weights and replicates -- with the compiled gather and with NumPy's; the per-draw product
written into a reused buffer (``_sdid_solver.DrawGram``) gives them to the bit.

Bit for bit when the BLAS computes each entry of ``A.T @ A`` independently of where it sits
in the product (OpenBLAS's Haswell kernels on the Intel machine these were written on);
some kernels round an entry differently by its position (edge tiles: OpenBLAS on the AMD
EPYC machine of 2026-11-30, ~1% of entries 1 ulp apart), and then the gathered entries agree
to a few ulps and the replicates to ~1e-12 (measured max 4e-12 on these panels; asserted to
1e-10, the project's bar). :func:`_blas_entries_position_free` tells which case holds; the
arrangement itself (which entry goes where) is checked exactly in both cases."""
import functools

import numpy as np
import pytest

from twinimpact.estimators import _sdid_solver
from twinimpact.estimators._sdid_inference import (
    BootstrapSampler,
    Group,
    aggregate,
    bootstrap_replicates,
    fit_design,
)
from twinimpact.estimators._sdid_solver import (
    collapsed_form,
    control_gram,
    sdid_fit,
    sum_normalize,
    weight_problem,
)


@functools.cache
def _blas_entries_position_free() -> bool:
    """Whether this BLAS's ``A.T @ A`` entries depend only on the two columns (not on
    their positions): the gathered / distinct-column Gram matrices then equal the draw's
    own product to the bit."""
    rng = np.random.default_rng(0)
    for T0, N0 in ((9, 52), (12, 40), (6, 301), (17, 120), (30, 900)):
        A = rng.normal(size=(T0, N0)).cumsum(axis=0)
        A -= A.mean(axis=0)
        idx = np.sort(rng.integers(0, N0, N0 + 3))
        B = A[:, idx]
        if not np.array_equal(B.T @ B, (A.T @ A)[idx][:, idx]):
            return False
    return True


def _assert_same(got, ref, *, scale=None):
    """``got == ref`` to the bit when the BLAS is position-free, else within rounding:
    Gram entries (``scale`` given: the matrix's largest magnitude) to 64 ulps of it,
    replicates to 1e-10 relative."""
    if _blas_entries_position_free():
        assert np.array_equal(got, ref)
    elif scale is not None:
        assert np.abs(got - ref).max() <= 64 * np.finfo(float).eps * scale
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())


def _panel(seed, N=70, N0=52, T=14):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(N, 2)) @ rng.normal(size=(2, T))
    Y = f + rng.normal(scale=0.5, size=(N, T)) + rng.normal(size=(N, 1))
    groups = [Group(a=9, rows=np.arange(N0, N0 + 10)), Group(a=11, rows=np.arange(N0 + 10, N))]
    return Y, N0, groups


def _reference(Y, N0, groups, fits, n_reps, rng):
    """bootstrap_replicates as before the gathered Gram: each draw's A.T @ A."""
    N, T = Y.shape
    out = np.empty((n_reps, 1 + len(groups)))
    for count, (ctrl, tr) in enumerate(BootstrapSampler(N, N0, groups, n_reps, rng)):
        taus = np.array([sdid_fit(Y[np.concatenate([ctrl, tr[g]])], len(ctrl), grp.a,
                                  fit.options, omega=sum_normalize(fit.omega[ctrl]),
                                  lam=fit.lam).tau
                         for g, (grp, fit) in enumerate(zip(groups, fits, strict=True))])
        out[count, 0] = aggregate(taus, [len(r) for r in tr], [T - g.a for g in groups])[0]
        out[count, 1:] = taus
    return out


@pytest.mark.parametrize("kernel", ["compiled", "numpy"])
@pytest.mark.parametrize("intercept", [True, False])
def test_gathered_gram_equals_per_draw_gram(kernel, intercept, monkeypatch):
    if kernel == "numpy":
        monkeypatch.setenv(_sdid_solver.KERNEL_ENV, "numpy")
    Y, N0, groups = _panel(1)
    T0 = groups[0].a
    cg = control_gram(Y, N0, T0, intercept)
    rng = np.random.default_rng(5)
    for _ in range(8):
        ind = np.sort(rng.integers(0, len(Y), len(Y)))
        ctrl = ind[ind < N0]
        Yg = Y[np.concatenate([ctrl, groups[0].rows])]
        Yw = collapsed_form(Yg, len(ctrl), T0)[:, :T0].T
        P = weight_problem(Yw, 0.37, intercept, None)
        Q = weight_problem(Yw, 0.37, intercept, None, (cg, ctrl))
        expect = cg.G[ctrl][:, ctrl]                    # the arrangement, exactly
        expect[np.diag_indices(len(ctrl))] += P.n * 0.37**2
        assert np.array_equal(Q.bank, expect)
        _assert_same(Q.bank, P.bank, scale=np.abs(P.bank).max())
        assert np.array_equal(P.Atb, Q.Atb) and np.array_equal(P.bb, Q.bb)


@pytest.mark.parametrize("kernel", ["compiled", "numpy"])
@pytest.mark.parametrize("method", ["sdid", "sc"])
def test_bootstrap_replicates_equal_per_draw_gram(kernel, method, monkeypatch):
    if kernel == "numpy":
        monkeypatch.setenv(_sdid_solver.KERNEL_ENV, "numpy")
    elif _sdid_solver.fw_loop() != "compiled":
        pytest.skip("compiled Frank-Wolfe loop not built")
    Y, N0, groups = _panel(2)
    fits, _ = fit_design(Y, np.arange(N0), groups, method)
    got, _ = bootstrap_replicates(Y, N0, groups, fits, 12, np.random.default_rng(3))
    ref = _reference(Y, N0, groups, fits, 12, np.random.default_rng(3))
    assert np.isfinite(ref).all()
    _assert_same(got, ref)


@pytest.mark.parametrize("keep_elems", [0, 2**40])
def test_gram_kept_only_within_its_memory_budget(keep_elems, monkeypatch):
    """The controls' Gram matrices are kept (and gathered from) only while they fit in
    ``_GRAM_KEEP_ELEMS``; over budget each draw builds its own -- same replicates either
    way (:func:`_assert_same`), and the kept path is taken exactly when it fits."""
    from twinimpact.estimators import _sdid_inference

    Y, N0, groups = _panel(2)
    fits, _ = fit_design(Y, np.arange(N0), groups, "sdid")
    ref, _ = bootstrap_replicates(Y, N0, groups, fits, 8, np.random.default_rng(5))
    seen = []
    real = _sdid_inference.control_gram
    monkeypatch.setattr(_sdid_inference, "control_gram",
                        lambda *a, **k: seen.append(1) or real(*a, **k))
    monkeypatch.setattr(_sdid_inference, "_GRAM_KEEP_ELEMS", keep_elems)
    monkeypatch.setattr(_sdid_inference, "_DESIGN_ELEMS", 0)   # not the design form
    got, _ = bootstrap_replicates(Y, N0, groups, fits, 8, np.random.default_rng(5))
    _assert_same(got, ref)
    assert len(seen) == (0 if keep_elems == 0 else len(groups))


def _draw_problem(rng, N0, T0, n_ctrl, intercept, scale=1.0):
    Y = rng.normal(size=(N0 + 3, T0 + 2)).cumsum(axis=1) * scale
    ctrl = np.sort(rng.integers(0, N0, n_ctrl))
    Yw = collapsed_form(Y[np.concatenate([ctrl, np.arange(N0, N0 + 3)])], len(ctrl),
                        T0)[:, :T0].T
    return Yw, ctrl


def test_draw_gram_equals_per_draw_gram():
    """DrawGram (the draw's ``A.T @ A + eta I`` written into one reused buffer) == the
    draw's own product, to the bit on any BLAS (the same routine on the same operands):
    draws of growing and shrinking size through one buffer, odd sizes, scales, with and
    without intercept, all controls the same unit, all distinct, one control."""
    rng = np.random.default_rng(11)
    dg = _sdid_solver.DrawGram()
    shapes = [(40, 6, 40), (7, 3, 9), (301, 17, 297), (120, 64, 131), (5, 2, 1), (300, 9, 305),
              (33, 5, 2)]
    for N0, T0, n_ctrl in shapes:
        for intercept in (True, False):
            for scale in (1e-3, 1.0, 1e5):
                Yw, ctrl = _draw_problem(rng, N0, T0, n_ctrl, intercept, scale)
                P = weight_problem(Yw, 0.37, intercept, None)
                Q = weight_problem(Yw, 0.37, intercept, None, (dg, ctrl))
                assert np.array_equal(P.bank, Q.bank)
                assert np.array_equal(P.Atb, Q.Atb) and np.array_equal(P.bb, Q.bb)
    for ctrl in (np.full(25, 3), np.arange(25)):              # one unit; no repeats
        Y = rng.normal(size=(30, 9)).cumsum(axis=1)
        Yw = collapsed_form(Y[np.concatenate([ctrl, [26, 27]])], len(ctrl), 6)[:, :6].T
        assert np.array_equal(weight_problem(Yw, 0.2, True, None).bank,
                              weight_problem(Yw, 0.2, True, None, (dg, ctrl)).bank)


@pytest.mark.parametrize("kernel", ["compiled", "numpy"])
@pytest.mark.parametrize("method", ["sdid", "sc"])
def test_bootstrap_over_budget_equals_per_draw_gram(kernel, method, monkeypatch):
    """Over the memory budget (no controls' Gram kept) the draws' matrices come from
    DrawGram: replicates equal the per-draw ``A.T @ A`` path's to the bit."""
    from twinimpact.estimators import _sdid_inference

    if kernel == "numpy":
        monkeypatch.setenv(_sdid_solver.KERNEL_ENV, "numpy")
    elif _sdid_solver.fw_loop() != "compiled":
        pytest.skip("compiled Frank-Wolfe loop not built")
    monkeypatch.setattr(_sdid_inference, "_GRAM_KEEP_ELEMS", 0)
    monkeypatch.setattr(_sdid_inference, "_DESIGN_ELEMS", 0)   # not the design form
    Y, N0, groups = _panel(4)
    fits, _ = fit_design(Y, np.arange(N0), groups, method)
    got, _ = bootstrap_replicates(Y, N0, groups, fits, 10, np.random.default_rng(8))
    ref = _reference(Y, N0, groups, fits, 10, np.random.default_rng(8))
    assert np.isfinite(ref).all()
    assert np.array_equal(got, ref)
