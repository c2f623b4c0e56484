"""Synthetic DiD's weight problems in data form (``_sdid_solver.DataProblems``: no k x k
Gram matrix, each Frank-Wolfe step computing the one Gram row it needs from the design),
the path beyond ``_sdid_solver.gram_fits``' memory budget.

Forced on small panels (both budget knobs set to 0), it must give the Gram form's numbers
to 1e-10 -- estimates, weights, every placebo / bootstrap / jackknife replicate, SEs --
and the same solver diagnostics (iterations, convergence flags, problems stopped at
``max_iter``); its compiled variants must equal its NumPy loop to the bit; and above the
budget no k x k object may be allocated (tracemalloc)."""
from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinimpact.estimators import _sdid_inference, _sdid_solver
from twinimpact.estimators._sdid_inference import (
    Group,
    bootstrap_replicates,
    fit_design,
    jackknife_pseudovalues,
    placebo_replicates,
)
from twinimpact.estimators._sdid_solver import (
    DataProblems,
    GramProblems,
    SDIDOptions,
    gram_fits,
    sdid_fit,
    weight_problem,
)
from twinimpact.estimators.synthetic_did import synthetic_did

from ..conftest import DATA

#: the two forms differ only in the rounding of the Gram entries (BLAS product vs a fixed
#: summation order); measured up to ~2e-12 relative on these panels
TOL = 1e-10


def _force_data_form(monkeypatch):
    monkeypatch.setattr(_sdid_solver, "_GRAM_MAX_ELEMS", 0)
    monkeypatch.setattr(_sdid_solver, "_GRAM_DATA_MULT", 0)


def _data_loop_placebo(monkeypatch):
    """A placebo's unit weights through the data-form loop (as before the screened form,
    ``fw_screened``, took them: tests/estimators/test_sdid_screen.py), for the tests that
    compare the loop's variants with the NumPy loop bit for bit."""
    monkeypatch.setattr(_sdid_solver, "SCREEN_MIN_ELEMS", 2**62)


def _count_forms(monkeypatch) -> dict:
    """Count the problem sets fw_gram_sets receives, by form."""
    seen = {"gram": 0, "data": 0}
    orig = _sdid_solver.fw_gram_sets

    def wrapped(sets, **kw):
        for P in sets:
            seen["data" if isinstance(P, DataProblems) else "gram"] += 1
        return orig(sets, **kw)

    monkeypatch.setattr(_sdid_solver, "fw_gram_sets", wrapped)
    return seen


def _close(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape
    assert np.array_equal(np.isnan(a), np.isnan(b))
    ok = ~np.isnan(a)
    scale = max(1.0, float(np.abs(b[ok]).max())) if ok.any() else 1.0
    assert np.abs(a[ok] - b[ok]).max(initial=0.0) <= TOL * scale


def _strip(d):
    """Diagnostics without the objective values (equal only to rounding)."""
    if isinstance(d, dict) or hasattr(d, "items"):
        return {k: _strip(v) for k, v in d.items()
                if not (isinstance(k, str) and k.endswith("objective"))
                and k not in ("noise_level", "eta_omega", "zeta_omega", "zeta_lambda",
                              "min_decrease", "effective_N0", "effective_T0")}
    return d


def _block_panel(seed, N=70, N0=52, T=14):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(N, 2)) @ rng.normal(size=(2, T))
    Y = f + rng.normal(scale=0.5, size=(N, T)) + rng.normal(size=(N, 1))
    groups = [Group(a=9, rows=np.arange(N0, N0 + 10)), Group(a=11, rows=np.arange(N0 + 10, N))]
    return Y, N0, groups


def _issue13_panel(n_units=160, T=16, seed=1) -> pd.DataFrame:
    """Issue 13's SDID panel in small: 10% of the units treated in the last quarter."""
    rng = np.random.default_rng(seed)
    ue = rng.normal(size=n_units)
    te = np.cumsum(rng.normal(scale=0.3, size=T))
    n_tr = max(2, n_units // 10)
    g = (3 * T) // 4
    unit = np.repeat(np.arange(n_units), T)
    year = np.tile(np.arange(2000, 2000 + T), n_units)
    tr = ((unit >= n_units - n_tr) & (year >= 2000 + g)).astype(int)
    y = ue[unit] + te[year - 2000] + rng.normal(size=len(unit)) + 0.5 * tr
    return pd.DataFrame({"unit": unit, "year": year, "y": y, "treated": tr})


def _prop99() -> pd.DataFrame:
    return pd.read_csv(DATA / "synthdid_prop99" / "california_prop99.csv", sep=";")


def _quota() -> pd.DataFrame:
    return pd.read_csv(DATA / "sdid_quota" / "quota_example.csv.gz")


def _api_cases():
    p99 = dict(outcome="PacksPerCapita", unit="State", time="Year", treated="treated")
    i13 = dict(outcome="y", unit="unit", time="year", treated="treated")
    quota = dict(outcome="womparl", unit="country", time="year", treated="quota")
    cases = []
    for method in ("sdid", "sc"):
        for se in ("placebo", "jackknife"):
            cases.append(pytest.param("prop99", p99, dict(method=method, se=se),
                                      id=f"prop99-{method}-{se}"))
        for se in ("placebo", "bootstrap", "jackknife"):
            cases.append(pytest.param("issue13", i13, dict(method=method, se=se),
                                      id=f"issue13-{method}-{se}"))
    for se in ("placebo", "bootstrap", "jackknife"):
        cases.append(pytest.param("quota", quota, dict(se=se), id=f"quota-staggered-{se}"))
        cases.append(pytest.param("quota", quota, dict(se=se, covariates="lngdp",
                                                      covariate_method="projected"),
                                  id=f"quota-projected-{se}"))
    return cases


@pytest.mark.parametrize("data, cols, kw", _api_cases())
def test_forced_data_form_gives_the_gram_forms_numbers(data, cols, kw, monkeypatch):
    d = {"prop99": _prop99, "issue13": _issue13_panel, "quota": _quota}[data]()

    def fit():
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            r = synthetic_did(d, **cols, **kw, n_reps=12, seed=4)
        return r, sorted((type(x.message).__name__, str(x.message)) for x in w)

    ref, ref_warn = fit()
    seen = _count_forms(monkeypatch)
    _force_data_form(monkeypatch)
    got, got_warn = fit()
    # the data form did run (the placebo's time-weight problems, T0 x T0 blocks one per
    # replicate, stay in Gram form: nothing there grows with the units)
    assert seen["data"] > 0
    _close(got.params, ref.params)
    _close(got.std_errors, ref.std_errors)
    _close(got.replicates, ref.replicates)
    _close(got.unit_weights, ref.unit_weights)
    _close(got.time_weights, ref.time_weights)
    assert _strip(dict(got.diagnostics)) == _strip(dict(ref.diagnostics))
    assert got_warn == ref_warn


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("method", ["sdid", "sc", "did"])
def test_forced_data_form_replicates_on_block_designs(seed, method, monkeypatch):
    """The kernels directly: fits (weights, iterations, flags), every replicate of the
    three variance estimators, two cohorts."""
    Y, N0, groups = _block_panel(seed)

    def run():
        fits, _ = fit_design(Y, np.arange(N0), groups, method)
        stats: dict = {}
        return (fits,
                bootstrap_replicates(Y, N0, groups, fits, 15, np.random.default_rng(1))[0],
                placebo_replicates(Y, N0, groups, fits, 15, np.random.default_rng(2), stats),
                jackknife_pseudovalues(Y, N0, groups, fits), stats)

    ref = run()
    _force_data_form(monkeypatch)
    got = run()
    for fg, fr in zip(got[0], ref[0], strict=True):
        _close(fg.tau, fr.tau)
        _close(fg.omega, fr.omega)
        _close(fg.lam, fr.lam)
        assert _strip(fg.iterations) == _strip(fr.iterations)
    for a, b in zip(got[1:4], ref[1:4], strict=True):
        _close(a, b)
    assert got[4] == ref[4]


def test_diagnostics_of_a_solve_stopped_at_max_iter(monkeypatch):
    """A weight problem cut short by max_iter: the same iteration counts and flags."""
    Y, N0, groups = _block_panel(3)
    opts = SDIDOptions(zeta_omega=0.01, zeta_lambda=1e-6, min_decrease=1e-12, max_iter=37,
                       max_iter_pre_sparsify=5)
    Yg = Y[np.r_[np.arange(N0), groups[0].rows]]
    ref = sdid_fit(Yg, N0, groups[0].a, opts)
    _force_data_form(monkeypatch)
    got = sdid_fit(Yg, N0, groups[0].a, opts)
    assert _strip(got.iterations) == _strip(ref.iterations)
    assert got.iterations["omega_pass2"] == {"iterations": 37, "converged": False}
    _close(got.omega, ref.omega)
    _close(got.tau, ref.tau)


@pytest.mark.parametrize("design", [True, False])
def test_compiled_data_form_variants_equal_the_numpy_loop(design, monkeypatch):
    """Every variant of the compiled data-form loop (AVX / SSE2 / scalar rows; two
    problems' rows in one pass or one by one) and the NumPy loop: the same numbers to the
    bit (same summation order per entry); the bootstrap's draws in the control-design
    form or each on its own distinct controls (the same form for both loops)."""
    if _sdid_solver.fw_loop() != "compiled":
        pytest.skip("the compiled extension is not built")
    _force_data_form(monkeypatch)
    _data_loop_placebo(monkeypatch)
    monkeypatch.setattr(_sdid_inference, "_design_form_ok", lambda: design)
    Y, N0, groups = _block_panel(5, N=120, N0=90)     # > 32 distinct controls: all tails

    def run():
        fits, _ = fit_design(Y, np.arange(N0), groups, "sdid")
        return np.concatenate(
            [np.concatenate([f.omega for f in fits]),
             bootstrap_replicates(Y, N0, groups, fits, 6, np.random.default_rng(1))[0].ravel(),
             placebo_replicates(Y, N0, groups, fits, 6, np.random.default_rng(2)).ravel()])

    fn = _sdid_solver._compiled_fw()
    out = {}
    try:
        for name, which, pair in (("fastest", -1, 1), ("fastest-one-by-one", -1, 0),
                                  ("sse2", 1, 1), ("scalar", 0, 1)):
            fn.select(which, pair)
            out[name] = run()
    finally:
        fn.select(-1, 1)
    monkeypatch.setenv(_sdid_solver.KERNEL_ENV, "numpy")
    ref = run()
    for name, v in out.items():
        assert np.array_equal(v, ref), name


@pytest.mark.parametrize("cache_elems", [None, 0, 90 * 7])
def test_rows_of_several_problems_in_one_pass_equal_the_numpy_loop(cache_elems, monkeypatch):
    """The compiled data-form loop with the rows 2-4 problems miss computed in one pass
    over the blocked design (``ti_fw_rows``: the R = 2 kernel, and groups of four rows on
    each block, the last padded with spare rows: R = 3, 4, 5, 8, 11 (every live problem
    in one pass) and 16; rounds over 11 live placebo problems; a column two
    problems ask in one round computed once; rows kept in a full, no or a filling cache)
    equals the loop computing each row alone (``ti_fw_rows(1)``, the scheme before) to the
    bit, and the placebo equals the NumPy loop; so do bootstrap draws solved five in one
    call in the control-design form (one coordinate map per problem: they alternate, the
    side-by-side loop is for shared coordinates). (The NumPy loop
    solves design draws one by one at ~1.8 s a draw here: compared once, in
    test_compiled_data_form_variants_equal_the_numpy_loop.)"""
    if _sdid_solver.fw_loop() != "compiled":
        pytest.skip("the compiled extension is not built")
    _force_data_form(monkeypatch)
    _data_loop_placebo(monkeypatch)
    if cache_elems is not None:
        monkeypatch.setattr(_sdid_solver, "_ROW_CACHE_ELEMS", cache_elems)
    monkeypatch.setattr(_sdid_inference, "_design_form_ok", lambda: True)
    monkeypatch.setattr(_sdid_inference, "_PAIR_DRAWS", 5)
    Y, N0, groups = _block_panel(6, N=120, N0=90)     # 90 controls: 2 blocks + a tail

    fits, _ = fit_design(Y, np.arange(N0), groups, "sdid")

    def placebo():
        return placebo_replicates(Y, N0, groups, fits, 11, np.random.default_rng(4))

    def boot():
        return bootstrap_replicates(Y, N0, groups, fits, 7, np.random.default_rng(5))[0]

    fn = _sdid_solver._compiled_fw()
    out = {}
    default = fn.rows(0)                               # (0: read, not set)
    default_wide = fn.rows_wide(0, -1)
    try:
        for w in (1, 2, 3, 4, 5, 8, 11, 16):
            assert fn.rows(w) == w and fn.rows_wide(w, -1) == w
            out[w] = placebo(), boot()
    finally:
        fn.rows(default)
        fn.rows_wide(default_wide, -1)
    for w in (2, 3, 4, 5, 8, 11, 16):
        assert np.array_equal(out[w][0], out[1][0]), w
        assert np.array_equal(out[w][1], out[1][1]), w
    monkeypatch.setenv(_sdid_solver.KERNEL_ENV, "numpy")
    assert np.array_equal(placebo(), out[4][0])


def _placebo_calls(monkeypatch, seed):
    """A block panel's fit in forced data form, one placebo replicate a chunk, and the list
    of problem counts of the compiled calls that follow (skips without the compiled
    loop)."""
    if _sdid_solver.fw_loop() != "compiled":
        pytest.skip("the compiled extension is not built")
    _force_data_form(monkeypatch)
    _data_loop_placebo(monkeypatch)
    Y, N0, groups = _block_panel(seed, N=120, N0=90)
    fits, _ = fit_design(Y, np.arange(N0), groups, "sdid")
    monkeypatch.setattr(_sdid_inference, "_BATCH_ELEMS", 1)      # one replicate a chunk
    calls = []
    orig = _sdid_solver._fw_data_sets_c
    monkeypatch.setattr(_sdid_solver, "_fw_data_sets_c",
                        lambda fn, sets, *a, **k: calls.append(len(sets)) or orig(fn, sets, *a, **k))
    return Y, N0, groups, fits, calls


def test_placebo_chunks_grouped_in_one_call_give_the_same_replicates(monkeypatch):
    """A placebo's chunks of replicates (here one replicate each) in data form are solved
    in calls of at least ``_SIDE_REPS`` problems, each chunk's state computed alone: the
    same replicates to the bit as one call per chunk, with fewer calls."""
    Y, N0, groups, fits, calls = _placebo_calls(monkeypatch, 7)
    out = {}
    for side in (1, 4, 5):
        monkeypatch.setattr(_sdid_inference, "_SIDE_REPS", side)
        calls.clear()
        out[side] = placebo_replicates(Y, N0, groups, fits, 9, np.random.default_rng(8))
        # two cohorts x two passes; 9 chunks each in groups of `side` chunks
        assert sorted(set(calls)) == sorted({min(side, 9), 9 % side or side})
    assert np.array_equal(out[4], out[1]) and np.array_equal(out[5], out[1])


def test_the_budget_decides_the_form(monkeypatch):
    assert gram_fits(2_896, 30) and not gram_fits(2_897, 30)     # 64 MB
    assert gram_fits(3_200, 50) and not gram_fits(3_201, 50)     # 64 x the design
    assert gram_fits(4_096, 150) and not gram_fits(4_097, 150)   # ... at most 128 MB
    assert not gram_fits(6_400, 100)
    rng = np.random.default_rng(0)
    Yw = rng.normal(size=(6, 41))
    assert isinstance(weight_problem(Yw, 0.1, True, None), GramProblems)
    monkeypatch.setattr(_sdid_solver, "_GRAM_MAX_ELEMS", 40 * 40 - 1)
    monkeypatch.setattr(_sdid_solver, "_GRAM_DATA_MULT", 1)
    P = weight_problem(Yw, 0.1, True, None)
    assert isinstance(P, DataProblems) and P.D.shape == (6, 40) and P.cmap is None
    # a bootstrap draw: its repeated controls are one column of D
    idx = np.sort(rng.integers(0, 30, 40))
    Yd = rng.normal(size=(6, 31))[:, np.r_[idx, 30]]
    cg = _sdid_solver.DrawGram()
    P = weight_problem(Yd, 0.1, True, None, (cg, idx))
    assert isinstance(P, DataProblems)
    assert P.D.shape == (6, len(np.unique(idx)))
    A = Yd[:, :40] - Yd[:, :40].mean(axis=0)
    assert np.array_equal(P.D[:, P.cmap], A)
    assert cg.buf.size == 0                               # no draw buffer either


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_no_k_by_k_object_above_the_budget(monkeypatch):
    """1,200 controls x 6 pre-periods: the Gram matrix is 11.5 MB, the design 58 KB. With
    a tiny budget the point fit, placebo and bootstrap stay far below one k x k matrix
    (traced peak); within the budget the same calls do allocate it (the test can fail)."""
    if _sdid_solver.fw_loop() != "compiled":
        pytest.skip("the compiled extension is not built (the NumPy loop would be slow)")
    rng = np.random.default_rng(7)
    N0, N1, T, a = 1_200, 40, 8, 6
    N = N0 + N1
    Y = rng.normal(size=(N, T)) + rng.normal(size=(N, 1))
    groups = [Group(a=a, rows=np.arange(N0, N))]
    kk = N0 * N0 * 8
    fits = fit_design(Y, np.arange(N0), groups, "sdid")[0]

    def all_paths():
        f = fit_design(Y, np.arange(N0), groups, "sdid")[0]
        placebo_replicates(Y, N0, groups, f, 2, np.random.default_rng(1))
        bootstrap_replicates(Y, N0, groups, fits, 2, np.random.default_rng(2))

    monkeypatch.setattr(_sdid_inference, "_GRAM_KEEP_ELEMS", 0)
    within = _peak(all_paths)
    assert within > kk
    # the data-form loop's row cache has its own budget, at most the Gram form's (so in
    # use always below one k x k matrix: the data form runs only beyond that budget);
    # scaled down with it here
    assert _sdid_solver._ROW_CACHE_ELEMS <= _sdid_solver._GRAM_MAX_ELEMS
    monkeypatch.setattr(_sdid_solver, "_GRAM_MAX_ELEMS", 1_000)
    monkeypatch.setattr(_sdid_solver, "_GRAM_DATA_MULT", 1)
    monkeypatch.setattr(_sdid_solver, "_ROW_CACHE_ELEMS", 1_000)
    seen = _count_forms(monkeypatch)
    above = _peak(all_paths)
    assert seen["data"] > 0
    assert above < kk / 4, (above, kk)


@pytest.mark.parametrize("elems", [2**23, 600])
def test_row_cache_gives_the_same_numbers_to_the_bit(elems, monkeypatch):
    """The compiled data-form loop's row cache (rows kept from a vertex's second visit,
    read again after; all of them, or a few dozen rows so that it fills up): fits,
    bootstrap draws (repeated controls, a column map; a fresh cache per draw) and placebo
    replicates (several problems sharing one design, hence one cache, kept from chunk to
    chunk: two replicates a chunk here) equal the loop without it, bit for bit; and the
    cache was in use."""
    if _sdid_solver.fw_loop() != "compiled":
        pytest.skip("the compiled extension is not built")
    Y, N0, groups = _block_panel(3)
    _force_data_form(monkeypatch)

    def run(cache_elems):
        monkeypatch.setattr(_sdid_solver, "_ROW_CACHE_ELEMS", cache_elems)
        fits, _ = fit_design(Y, np.arange(N0), groups, "sdid")
        monkeypatch.setattr(_sdid_inference, "_BATCH_ELEMS", 2 * 10 * N0)
        return (fits,
                bootstrap_replicates(Y, N0, groups, fits, 6, np.random.default_rng(1))[0],
                placebo_replicates(Y, N0, groups, fits, 6, np.random.default_rng(2), {}))

    ref = run(0)
    used = []
    orig = _sdid_solver._row_cache

    def counted(D):
        out = orig(D)
        used.append(0 if out is None else out.rows)
        return out

    monkeypatch.setattr(_sdid_solver, "_row_cache", counted)
    got = run(elems)
    for fg, fr in zip(got[0], ref[0], strict=True):
        assert fg.tau == fr.tau
        assert np.array_equal(fg.omega, fr.omega) and np.array_equal(fg.lam, fr.lam)
        assert _strip(fg.iterations) == _strip(fr.iterations)
    assert np.array_equal(got[1], ref[1])
    assert np.array_equal(got[2], ref[2])
    assert used and min(used) > 0 and (elems > 600 or max(used) < N0)   # (600: it fills)


def _ring_runs(monkeypatch, Y, N0, groups, cache_rows, form, n_reps=5):
    """Fits, bootstrap (``form``: "design" or "draw") and placebo replicates in forced data
    form with a row cache of ``cache_rows`` rows of the controls' length, for ring sizes
    0 (none), 1 and 32 and without any cache; returns the runs and the ring rows read."""
    fn = _sdid_solver._compiled_fw()
    _force_data_form(monkeypatch)
    monkeypatch.setattr(_sdid_inference, "_DESIGN_ELEMS", 2**40 if form == "design" else 0)

    def run(cache_elems, ring):
        monkeypatch.setattr(_sdid_solver, "_ROW_CACHE_ELEMS", cache_elems)
        fn.ring(ring)
        fits, _ = fit_design(Y, np.arange(N0), groups, "sdid")
        boot = bootstrap_replicates(Y, N0, groups, fits, n_reps, np.random.default_rng(1))[0]
        plac = placebo_replicates(Y, N0, groups, fits, n_reps, np.random.default_rng(2))
        return [f.omega for f in fits] + [f.lam for f in fits] + [boot, plac], fn.ring_hits()

    try:
        out = {ring: run(cache_rows * N0, ring) for ring in (0, 1, 32)}
        out["none"] = run(0, 0)
    finally:
        fn.ring(32)
    return out


@pytest.mark.parametrize("form", ["design", "draw"])
def test_row_cache_ring_changes_no_bit(form, monkeypatch):
    """The row cache's ring (``ti_fw_ring``: the rows computed last without a slot of
    their own, each overwriting the oldest) on a cache of 12 rows (a ring of 3 places,
    overwritten every few steps): weights, bootstrap draws (in the control-design form,
    two draws alternating on one cache; or per draw, a cache per draw's design) and
    placebo replicates equal the loop without a ring and without any cache, bit for bit,
    and rows were read from the ring (a ring place read after its column moved on, or a
    column left pointing at a reused place, changes the numbers)."""
    if _sdid_solver.fw_loop() != "compiled":
        pytest.skip("the compiled extension is not built")
    Y, N0, groups = _block_panel(11)
    out = _ring_runs(monkeypatch, Y, N0, groups, 12, form)
    assert out[0][1] == 0 and out[1][1] > 0 and out[32][1] > 0
    for key in (1, 32, "none"):
        for a, b in zip(out[key][0], out[0][0], strict=True):
            assert np.array_equal(a, b), key


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), n0=st.integers(30, 90), t=st.integers(8, 16),
       rows=st.integers(4, 40), form=st.sampled_from(["design", "draw"]))
def test_row_cache_ring_on_random_panels(seed, n0, t, rows, form):
    """As test_row_cache_ring_changes_no_bit on random block panels (controls, periods,
    cache rows, bootstrap form drawn): the ring of any size gives the numbers of no ring
    and of no cache, bit for bit."""
    if _sdid_solver.fw_loop() != "compiled":
        pytest.skip("the compiled extension is not built")
    Y, N0, groups = _block_panel(seed, N=n0 + 20, N0=n0, T=t)
    groups = [Group(a=t - 3, rows=g.rows) for g in groups]
    with pytest.MonkeyPatch.context() as mp:
        out = _ring_runs(mp, Y, N0, groups, rows, form, n_reps=3)
    # (whether the ring is read depends on the draw: a ring of one place, at 4 cache rows,
    # is read only by a return at the next request; test_row_cache_ring_changes_no_bit
    # checks that it is read)
    for key in (1, 32, "none"):
        for a, b in zip(out[key][0], out[0][0], strict=True):
            assert np.array_equal(a, b), key


def test_wide_designs_run_sixteen_problems_side_by_side(monkeypatch):
    """For a design of ``_sdid_solver.WIDE_ELEMS`` numbers or more (the threshold lowered
    here to this panel's, in Python and in the compiled loop) a placebo's replicates are
    grouped sixteen to a call and their missed rows computed up to sixteen in one pass
    over the design: the same replicates, bit for bit, as four to a call and four rows a
    pass; the calls were of sixteen."""
    Y, N0, groups, fits, calls = _placebo_calls(monkeypatch, 12)
    fn = _sdid_solver._compiled_fw()
    ref = placebo_replicates(Y, N0, groups, fits, 19, np.random.default_rng(3))
    assert max(calls) == 4
    calls.clear()
    wide_min = _sdid_solver.WIDE_ELEMS
    monkeypatch.setattr(_sdid_solver, "WIDE_ELEMS", 1)
    default_wide = fn.rows_wide(0, -1)
    fn.rows_wide(16, 0)
    try:
        got = placebo_replicates(Y, N0, groups, fits, 19, np.random.default_rng(3))
    finally:
        fn.rows_wide(default_wide, wide_min)
    assert max(calls) == 16
    assert np.array_equal(got, ref)
