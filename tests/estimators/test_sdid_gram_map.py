"""The bootstrap's unit-weight Gram matrix gathered from the Gram matrix of all controls
(``_sdid_solver.ControlGram``) gives the numbers of the per-draw ``A.T @ A`` -- entries,
weights and replicates bit for bit -- with the compiled gather and with NumPy's."""
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
        assert np.array_equal(P.bank, Q.bank)
        assert np.array_equal(P.Atb, Q.Atb) and np.array_equal(P.bb, Q.bb)


@pytest.mark.parametrize("kernel", ["compiled", "numpy"])
@pytest.mark.parametrize("method", ["sdid", "sc"])
def test_bootstrap_replicates_bit_identical_to_per_draw_gram(kernel, method, monkeypatch):
    if kernel == "numpy":
        monkeypatch.setenv(_sdid_solver.KERNEL_ENV, "numpy")
    elif _sdid_solver.fw_loop() != "compiled":
        pytest.skip("compiled Frank-Wolfe loop not built")
    Y, N0, groups = _panel(2)
    fits, _ = fit_design(Y, np.arange(N0), groups, method)
    got, _ = bootstrap_replicates(Y, N0, groups, fits, 12, np.random.default_rng(3))
    ref = _reference(Y, N0, groups, fits, 12, np.random.default_rng(3))
    assert np.isfinite(ref).all()
    assert np.array_equal(got, ref)


@pytest.mark.parametrize("keep_elems", [0, 2**40])
def test_gram_kept_only_within_its_memory_budget(keep_elems, monkeypatch):
    """The controls' Gram matrices are kept (and gathered from) only while they fit in
    ``_GRAM_KEEP_ELEMS``; over budget each draw builds its own -- same replicates to the
    bit either way, and the kept path is taken exactly when it fits."""
    from twinimpact.estimators import _sdid_inference

    Y, N0, groups = _panel(2)
    fits, _ = fit_design(Y, np.arange(N0), groups, "sdid")
    ref, _ = bootstrap_replicates(Y, N0, groups, fits, 8, np.random.default_rng(5))
    seen = []
    real = _sdid_inference.control_gram
    monkeypatch.setattr(_sdid_inference, "control_gram",
                        lambda *a, **k: seen.append(1) or real(*a, **k))
    monkeypatch.setattr(_sdid_inference, "_GRAM_KEEP_ELEMS", keep_elems)
    got, _ = bootstrap_replicates(Y, N0, groups, fits, 8, np.random.default_rng(5))
    assert np.array_equal(got, ref)
    assert len(seen) == (0 if keep_elems == 0 else len(groups))
