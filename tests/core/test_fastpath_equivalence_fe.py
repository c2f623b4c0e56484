"""core.fe.fit_fe_codes: its size-gated two-way paths against the plain dense path
(issue 13, fuzz).

The same random design (indicator codes with rows of no indicator, dense covariates,
some absorbed by the unit effects or collinear, optional weights) on random two-way
panels -- balanced, random holes, entry and exit, singletons and disconnected units,
more periods than units (the projector's small set is then the units), codes not in
first-seen order, rows shuffled -- is fitted three ways: the default paths (balanced
closed form / small-period Schur path), the same with every chunk knob tiny (lazy unit
part, 5-cell Gram blocks, 3-cell sparse blocks, 7-cell meat blocks, 7-row row blocks),
and the plain path (dense design, demean, ols, explicit scores). Coefficients, vcov
(cluster by unit / period / a unit-level group / a row-level group / two-way, hetero,
iid), dropped columns and the fixed-effect counts must agree.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from twinimpact.core import fe as _fe
from twinimpact.core import rowblocks


def _panel(rng):
    kind = int(rng.integers(0, 6))
    n_u, n_t = int(rng.integers(2, 30)), int(rng.integers(2, 10))
    if kind == 5:  # more periods than units
        n_u, n_t = int(rng.integers(2, 6)), int(rng.integers(6, 25))
    u = np.repeat(np.arange(n_u), n_t)
    t = np.tile(np.arange(n_t), n_u)
    if kind in (1, 2, 3, 5):
        keep = rng.random(len(u)) >= rng.choice([0.05, 0.2, 0.5])
        if kind == 2:  # entry and exit
            enter = rng.integers(0, n_t, n_u)
            leave = enter + rng.integers(1, n_t + 1, n_u)
            keep &= (t >= enter[u]) & (t < leave[u])
        keep[0] = True
        u, t = u[keep], t[keep]
    if kind == 4:  # singleton units
        u = np.r_[u, n_u + np.arange(3)]
        t = np.r_[t, rng.integers(0, n_t, 3)]
    u = np.unique(rng.permutation(u.max() + 1)[u], return_inverse=True)[1]
    t = np.unique(rng.permutation(t.max() + 1)[t], return_inverse=True)[1]
    order = rng.permutation(len(u)) if rng.random() < 0.5 else np.arange(len(u))
    return u[order], t[order]


def _fits(seed: int, mode: str, monkeypatch):
    rng = np.random.default_rng(seed)
    u, t = _panel(rng)
    n = len(u)
    p, q = int(rng.integers(1, 6)), int(rng.integers(0, 3))
    onehot = np.where(rng.random(n) < 0.6, rng.integers(0, p, n), -1)
    if rng.random() < 0.3:
        onehot = np.where(u == 0, 0, onehot)  # an indicator absorbed by a unit effect
    z = rng.normal(size=(n, q))
    if q == 2 and rng.random() < 0.3:
        z[:, 1] = 2 * z[:, 0]
    if q and rng.random() < 0.2:
        z[:, 0] = u % 3
    y = rng.normal(size=n) + 0.3 * (onehot == 0) + 0.1 * u
    w = rng.uniform(0.2, 3.0, n) if rng.random() < 0.3 else None
    names = [f"d{j}" for j in range(p)] + [f"z{j}" for j in range(q)]
    group = rng.integers(0, 5, u.max() + 1)[u]
    specs = [("cluster", [u]), ("cluster", [t]), ("cluster", [group]),
             ("cluster", [rng.integers(0, 4, n)]), ("cluster", [u, t]),
             ("hetero", []), ("iid", [])]
    with monkeypatch.context() as mp:
        if mode == "plain":
            mp.setattr(_fe, "two_way_projector", lambda *a, **k: None)
            mp.setattr(_fe, "is_balanced_twoway", lambda *a, **k: False)
        elif mode == "tiny":
            for name, val in (("_DENSE_UNIT_PART_MAX", 0), ("_MEAT_BLOCK_CELLS", 7),
                              ("_GRAM_BLOCK_CELLS", 5), ("_SPARSE_BLOCK_CELLS", 3),
                              ("_GATHER_ROWS", 7), ("_COUNT_BLOCK_CELLS", 5)):
                mp.setattr(_fe, name, val)
            mp.setattr(rowblocks, "BLOCK", 7)
        out = []
        for kind, cl in specs:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # n = K (tiny saturated draws): NaN variance on every path
                params, v, _, info = _fe.fit_fe_codes(
                    y, z, names, [u, t], cl, vcov=kind,
                    cluster_names=[f"c{i}" for i in range(len(cl))], weights=w,
                    onehot=onehot)
            out.append((params.to_numpy(), v, info["collinear"], info["k_fe"],
                        info["k_fe_nested_in_cluster"]))
    return out


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6))
@example(seed=32346)   # an indicator on every row of a saturated panel (4 rows, 4 FE levels)
def test_fast_paths_equal_plain_path(seed):
    mp = pytest.MonkeyPatch()
    try:
        plain = _fits(seed, "plain", mp)
        for mode in ("default", "tiny"):
            for got, want in zip(_fits(seed, mode, mp), plain, strict=True):
                assert got[2:] == want[2:]
                for a, b in zip(got[:2], want[:2], strict=True):
                    scale = np.nanmax(np.abs(b), initial=0.0)
                    np.testing.assert_allclose(a, b, rtol=0,
                                               atol=max(1e-9 * scale, 1e-20))
    finally:
        mp.undo()


@pytest.mark.parametrize("level", [1.7, 0.1, 3e5])
@pytest.mark.parametrize("weighted", [False, True])
def test_a_constant_covariate_is_absorbed_on_every_path(level, weighted):
    """A covariate constant on every row lies in the span of any fixed effects: every path
    (the dense one, the exact balanced and small-time ones with an indicator block)
    reports it collinear with a NaN estimate. Its centred sum of squares is 0, so the
    collinearity rule used to compare its swept residue (rounding) with itself: on an
    unbalanced panel with indicators it was kept with an estimate of 8.9e13."""
    rng = np.random.default_rng(7)
    for n_u, n_t, miss in ((7, 5, 0.0), (9, 6, 0.2), (40, 3, 0.1), (12, 4, 0.3)):
        u = np.repeat(np.arange(n_u), n_t)
        t = np.tile(np.arange(n_t), n_u)
        keep = rng.random(len(u)) >= miss
        keep[0] = True
        u, t = u[keep], t[keep]
        n = len(u)
        y = rng.normal(size=n)
        z = np.column_stack([np.full(n, level), rng.normal(size=n)])
        w = rng.uniform(0.5, 2.0, n) if weighted else None
        for onehot in (np.where(rng.random(n) < 0.5, 0, -1), None):
            names = (["d0"] if onehot is not None else []) + ["z0", "z1"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                params, _, _, info = _fe.fit_fe_codes(
                    y, z, names, [u, t], [u], vcov="cluster", cluster_names=["u"],
                    weights=w, onehot=onehot)
            assert info["collinear"] == ["z0"], (n_u, n_t, miss, onehot is not None)
            assert np.isnan(params["z0"]) and np.isfinite(params["z1"])
