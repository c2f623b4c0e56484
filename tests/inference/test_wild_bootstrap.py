"""Restricted wild cluster bootstrap: boottest / fwildclusterboot references, a per-draw
refit oracle, enumeration, size under the null, validation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from twinimpact.errors import InputError, SpecificationError
from twinimpact.inference import wild_bootstrap as wb
from twinimpact.inference.wild_bootstrap import (
    draw_weights,
    wild_cluster_bootstrap,
    wild_cluster_bootstrap_result,
)

TESTS = Path(__file__).resolve().parents[1]
REF = TESTS / "reference" / "wild_bootstrap"
DATA = TESTS / "data" / "wildboot"

#: Monte Carlo tolerance for a p-value: this many combined standard errors.
MC_SD = 4.0


def _mc_tol(p: float, b_ours: int, b_ref: int) -> float:
    return MC_SD * math.sqrt(p * (1 - p) * (1 / b_ours + 1 / b_ref))


@pytest.fixture(scope="module")
def collapsed():
    return pd.read_csv(DATA / "collapsed.csv")


def _run(d, **kw):
    return wild_cluster_bootstrap(d, outcome="hasinsurance",
                                  regressors=["selfemployed", "post", "post_self"],
                                  cluster="year", term="post_self", null=0.04, **kw)


def test_collapsed_statistic_and_mc_p_values(collapsed):
    ref = json.loads((REF / "collapsed_boottest.json").read_text())
    cases = [c for c in ref["cases"] if "conf_int" not in c]
    assert {c["weights"] for c in cases} == {"webb", "normal", "mammen"}
    for case in cases:
        b = 99_999
        r = _run(collapsed, weight_type=case["weights"], n_reps=b, seed=11)
        assert r.statistic == pytest.approx(ref["statistic"], abs=5e-5)
        assert abs(r.p_value - case["p_value"]) <= _mc_tol(case["p_value"], b, case["reps"])
        assert not r.enumerated and r.n_reps == b


def test_ties_with_the_observed_statistic_are_not_counted(collapsed):
    """boottest's rule: p = #{|t*| > |t|} / B. Constant weight vectors reproduce +-t exactly;
    under Rademacher enumeration those are v = +1 and v = -1 (2 of 256 draws)."""
    r = _run(collapsed, weight_type="rademacher", n_reps=999)
    t, tb = r.statistic, np.asarray(r.t_boot)
    ties = np.isclose(np.abs(tb), abs(t), rtol=1e-9, atol=0)
    assert ties.sum() >= 2
    assert tb[0] == pytest.approx(t, rel=1e-12)  # first enumerated vector is all +1
    assert r.p_value * 256 == (np.abs(tb[~ties]) > abs(t)).sum()
    # Mammen: the all-(1 - sqrt5)/2 vector has probability 0.7236^8 and gives exactly -t
    m = _run(collapsed, weight_type="mammen", n_reps=20_000, seed=2)
    tbm = np.asarray(m.t_boot)
    at_minus_t = np.isclose(tbm, -t, rtol=1e-9, atol=0).mean()
    assert at_minus_t == pytest.approx(((1 + 5**0.5) / (2 * 5**0.5)) ** 8, abs=0.01)
    assert m.p_value == pytest.approx((np.abs(tbm) > abs(t) * (1 + 1e-9)).mean(), abs=0)


def test_p_value_ignores_infeasible_draws():
    """boottest's BFeas: undefined statistics leave the denominator."""
    tb = np.array([3.0, -2.5, np.nan, 0.5, np.nan, 1.0])
    assert wb._p_value(2.0, tb) == pytest.approx(2 / 4)
    assert math.isnan(wb._p_value(2.0, np.array([np.nan, np.nan])))


def test_collapsed_webb_ci_within_mc_error(collapsed):
    cases = json.loads((REF / "collapsed_boottest.json").read_text())["cases"]
    ref = next(c for c in cases if "conf_int" in c)
    r = _run(collapsed, weight_type="webb", n_reps=9999, seed=3)
    # the CI ends move with the draws; boottest used 999 draws
    assert r.conf_int[0] == pytest.approx(ref["conf_int"][0], abs=2e-3)
    assert r.conf_int[1] == pytest.approx(ref["conf_int"][1], abs=2e-3)


def test_rademacher_enumeration_is_exact_and_seed_free(collapsed):
    a = _run(collapsed, weight_type="rademacher", n_reps=999, seed=1)
    b = _run(collapsed, weight_type="rademacher", n_reps=9999, seed=12345)
    assert a.enumerated and b.enumerated and a.n_reps == b.n_reps == 256
    assert a.p_value == b.p_value
    assert a.conf_int == b.conf_int
    assert (a.p_value * 256) == pytest.approx(round(a.p_value * 256))
    assert a.conf_int[0] < 0.04 + (a.estimate - 0.04) < a.conf_int[1]


def _refit_t(y, x, cl, j, b0, small):
    beta = np.linalg.lstsq(x, y, rcond=None)[0]
    e = y - x @ beta
    inv = np.linalg.inv(x.T @ x)
    g = cl.max() + 1
    sc = np.zeros((g, x.shape[1]))
    np.add.at(sc, cl, x * e[:, None])
    v = small * inv @ sc.T @ sc @ inv
    return (beta[j] - b0) / math.sqrt(v[j, j])


@pytest.mark.parametrize("kind", ["rademacher", "webb", "mammen", "normal"])
def test_fast_statistics_equal_per_draw_refit(collapsed, kind):
    """Oracle: refit OLS on every bootstrap sample y* = X b~ + u~ v."""
    d = collapsed
    y = d["hasinsurance"].to_numpy()
    x = np.column_stack([np.ones(len(d)), d[["selfemployed", "post", "post_self"]]])
    cl = pd.factorize(d["year"])[0]
    g, (n, k) = cl.max() + 1, x.shape
    small = g / (g - 1) * (n - 1) / (n - k)
    b0 = 0.04
    xr, yr = x[:, :3], y - x[:, 3] * b0
    u = yr - xr @ np.linalg.lstsq(xr, yr, rcond=None)[0]
    v = draw_weights(kind, g, 50, np.random.default_rng(0))
    slow = np.array([_refit_t(y - u + u * v[cl, b], x, cl, 3, b0, small)
                     for b in range(v.shape[1])])
    design = wb._Design(y=y, x=x, cl=cl, g=g, j=3, fe=(), small=small)
    np.testing.assert_allclose(wb.wcr_statistics(design, b0, v), slow, rtol=1e-9)


def test_fixed_effects_path_equals_dummies():
    v = pd.read_csv(DATA / "voters.csv")
    q1 = pd.get_dummies(v["Q1_immigration"], prefix="q1", drop_first=True, dtype=float)
    q2 = pd.get_dummies(v["Q2_defense"], prefix="q2", drop_first=True, dtype=float)
    vv = pd.concat([v, q1, q2], axis=1)
    before = vv.copy()
    dummies = wild_cluster_bootstrap(vv, outcome="proposition_vote",
                                     regressors=["treatment", "log_income", *q1, *q2],
                                     cluster="group_id1", term="treatment", n_reps=999,
                                     seed=4)
    fe = wild_cluster_bootstrap(vv, outcome="proposition_vote",
                                regressors=["treatment", "log_income"],
                                fixed_effects=["Q1_immigration", "Q2_defense"],
                                cluster="group_id1", term="treatment", n_reps=999, seed=4)
    assert fe.statistic == pytest.approx(dummies.statistic, rel=1e-9)
    np.testing.assert_allclose(fe.t_boot, dummies.t_boot, rtol=1e-8)
    assert fe.p_value == dummies.p_value
    pd.testing.assert_frame_equal(vv, before)  # caller's frame untouched


def test_voters_fwildclusterboot_readme():
    ref = json.loads((REF / "voters_fwildclusterboot.json").read_text())
    v = pd.read_csv(DATA / "voters.csv")
    r = wild_cluster_bootstrap(v, outcome="proposition_vote",
                               regressors=["treatment", "log_income"],
                               fixed_effects=["Q1_immigration", "Q2_defense"],
                               cluster="group_id1", term="treatment", n_reps=9999, seed=7)
    assert r.estimate == pytest.approx(ref["estimate"], abs=5e-4)
    assert r.statistic == pytest.approx(ref["statistic"], abs=5e-4)
    assert abs(r.p_value - ref["p_value"]) <= 0.0005 + _mc_tol(0.001, 9999, 9999)
    for ours, theirs in zip(r.conf_int, ref["conf_int"], strict=True):
        assert abs(ours - theirs) <= 2e-3  # 3-decimal rounding + Monte Carlo error
    row = r.to_frame().iloc[0]
    assert row["term"] == "treatment" and row["ci_lower"] == r.conf_int[0]


@pytest.mark.slow
def test_size_under_the_null():
    """WCR rejects a true null at about the nominal rate with 10 clusters."""
    rng = np.random.default_rng(2024)
    n_sim, rej = 200, 0
    for _ in range(n_sim):
        g = 10
        cl = np.repeat(np.arange(g), 30)
        x = rng.normal(size=g)[cl] + rng.normal(size=len(cl))
        y = 1.0 + rng.normal(size=g)[cl] + rng.normal(size=len(cl)) * (1 + np.abs(x))
        d = pd.DataFrame({"y": y, "x": x, "c": cl})
        r = wild_cluster_bootstrap(d, outcome="y", regressors=["x"], cluster="c", term="x",
                                   n_reps=399, weight_type="webb",
                                   seed=int(rng.integers(1 << 31)))
        rej += r.p_value < 0.05
    # binomial(200, 0.05): 4 sd band around 10 rejections
    assert 1 <= rej <= 22


def test_from_event_study_result():
    from twinimpact.estimators.twfe import _example_panel, event_study, twfe

    d = _example_panel(n_units=30, n_years=6)
    r = event_study(d, outcome="y", unit="id", time="year", cohort="g")
    w = wild_cluster_bootstrap_result(r, term="rel_time=0", data=d, n_reps=99, seed=1)
    assert w.estimate == pytest.approx(r.params["rel_time=0"], rel=1e-8)
    assert w.std_error == pytest.approx(r.std_errors["rel_time=0"], rel=1e-6)
    s = twfe(d, outcome="y", unit="id", time="year", cohort="g")
    ws = wild_cluster_bootstrap_result(s, term="ATT", data=d, n_reps=99, seed=1)
    assert ws.estimate == pytest.approx(s.params["ATT"], rel=1e-8)
    assert ws.std_error == pytest.approx(s.std_errors["ATT"], rel=1e-6)


def test_bad_inputs(collapsed):
    with pytest.raises(SpecificationError, match="not among the regressors"):
        wild_cluster_bootstrap(collapsed, outcome="hasinsurance", regressors=["post"],
                               cluster="year", term="post_self")
    one = collapsed.assign(c=1)
    with pytest.raises(InputError, match="at least 2 clusters"):
        wild_cluster_bootstrap(one, outcome="hasinsurance", regressors=["post"],
                               cluster="c", term="post")
    with pytest.raises(SpecificationError, match="weight_type"):
        _run(collapsed, weight_type="gauss")
    with pytest.raises(SpecificationError, match="n_reps"):
        _run(collapsed, n_reps=0)


# --------------------------------------------------------------- fast path vs direct form
def _design_for(d, fes):
    """A ``_Design`` built exactly as wild_cluster_bootstrap builds it (x, z; cluster g)."""
    from twinimpact.core.fe import demean, factorize

    y = d["y"].to_numpy(float)
    x = d[["x", "z"]].to_numpy(float)
    if not fes:
        x = np.column_stack([np.ones(len(y)), x])
    # clusters in sorted label order (wildboottest's np.unique; boottest sorts by cluster)
    labels, cl = np.unique(d["g"].to_numpy(), return_inverse=True)
    g = len(labels)
    codes = tuple(factorize(d[f].to_numpy())[0] for f in fes)
    if codes:
        dm = demean(np.column_stack([y, x]), list(codes))
        y, x = dm.x[:, 0], dm.x[:, 1:]
    return wb._Design(y=y, x=x, cl=cl, g=g, j=x.shape[1] - 2, fe=codes, small=1.1)


@pytest.mark.parametrize("fes", [(), ("f",), ("f", "h")])
def test_null_path_equals_direct_statistics_at_every_null(fes):
    """_WCRPath (residuals affine in the null, two passes over the data) gives the
    statistics of wcr_statistics (one pass per null) for any null, exact and quadratic."""
    rng = np.random.default_rng(7)
    n, n_cl = 600, 11
    g = rng.integers(0, n_cl, n)
    d = pd.DataFrame({"g": g, "x": rng.normal(size=n) + rng.normal(size=n_cl)[g],
                      "z": rng.normal(size=n), "f": rng.integers(0, 6, n),
                      "h": rng.integers(0, 4, n)})
    d["y"] = 0.2 * d["x"] + d["z"] + rng.normal(size=n_cl)[g] + rng.normal(size=n)
    design = _design_for(d, fes)
    v = draw_weights("webb", n_cl, 300, np.random.default_rng(1))
    path = wb._WCRPath(design, v)
    for b0 in (-3.0, -0.1, 0.0, 0.2, 1.7, 25.0):
        slow = wb.wcr_statistics(design, b0, v)
        np.testing.assert_allclose(path.statistics(b0), slow, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(path.statistics(b0, exact=False), slow, rtol=1e-9)


@pytest.mark.parametrize("block", [7, 64, 1 << 18])
def test_row_blocked_qr_matches_one_qr_and_matrix_rank(monkeypatch, block):
    """_tall_r (QR block by block) has the R of one Householder QR up to row signs,
    _rank_tall equals np.linalg.matrix_rank (full rank, rank-deficient, one column), and
    _WCRPath on many blocks equals the lstsq oracle wcr_statistics."""
    from twinimpact.core import rowblocks

    monkeypatch.setattr(rowblocks, "BLOCK", block)
    rng = np.random.default_rng(5)
    n = 500
    x = np.column_stack([np.ones(n), rng.normal(size=(n, 3)) * [1.0, 1e3, 1e-3]])
    r = wb._tall_r(x[:, :2], x[:, 2], x[:, 3:])
    r1 = np.linalg.qr(x, mode="r")
    np.testing.assert_allclose(np.abs(r), np.abs(r1), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(r.T @ r, x.T @ x, rtol=1e-12)
    assert wb._rank_tall(x) == np.linalg.matrix_rank(x) == 4
    deficient = np.column_stack([x, x[:, 1] - 2.0 * x[:, 2]])
    assert wb._rank_tall(deficient) == np.linalg.matrix_rank(deficient) == 4
    assert wb._rank_tall(np.zeros((n, 1))) == np.linalg.matrix_rank(np.zeros((n, 1))) == 0
    g = rng.integers(0, 9, n)
    d = pd.DataFrame({"g": g, "x": x[:, 1] + rng.normal(size=9)[g], "z": x[:, 2],
                      "f": rng.integers(0, 5, n), "h": rng.integers(0, 3, n)})
    d["y"] = 0.3 * d["x"] + rng.normal(size=9)[g] + rng.normal(size=n)
    design = _design_for(d, ())
    v = draw_weights("rademacher", 9, 200, np.random.default_rng(2))
    path = wb._WCRPath(design, v)
    for b0 in (-1.0, 0.0, 0.4):
        np.testing.assert_allclose(path.statistics(b0), wb.wcr_statistics(design, b0, v),
                                   rtol=1e-10, atol=1e-12)


def test_p_value_only_skips_the_interval_and_keeps_the_p_value():
    rng = np.random.default_rng(3)
    n, n_cl = 2000, 30
    g = rng.integers(0, n_cl, n)
    d = pd.DataFrame({"g": g, "x": rng.normal(size=n), "z": rng.normal(size=n)})
    d["y"] = 0.05 * d["x"] + rng.normal(size=n_cl)[g] + rng.normal(size=n)
    kw = dict(outcome="y", regressors=["x", "z"], cluster="g", term="x", n_reps=999, seed=4)
    full = wild_cluster_bootstrap(d, **kw)
    p_only = wild_cluster_bootstrap(d, **kw, conf_int=False)
    assert p_only.p_value == full.p_value and p_only.statistic == full.statistic
    np.testing.assert_array_equal(p_only.t_boot, full.t_boot)
    assert all(math.isnan(c) for c in p_only.conf_int)
    assert np.isfinite(full.conf_int).all()
    # the interval from the quadratic-form path equals inverting the direct statistics
    base = _design_for(d, ())
    design = wb._Design(y=base.y, x=base.x, cl=base.cl, g=base.g, j=1, fe=(),
                        small=full.small_sample)
    v = draw_weights("rademacher", n_cl, 999, np.random.default_rng(4))

    def slow_p(b0):
        return wb._p_value((full.estimate - b0) / full.std_error,
                           wb.wcr_statistics(design, b0, v))

    lo, hi = wb._invert(slow_p, full.estimate, full.std_error, 0.05)
    assert full.conf_int[0] == pytest.approx(lo, abs=1e-10)
    assert full.conf_int[1] == pytest.approx(hi, abs=1e-10)


@pytest.mark.parametrize("fes", [(), ("f",)])
@pytest.mark.parametrize("block", [13, 1 << 18])
def test_cluster_moments_equal_direct_forms_on_unequal_clusters(monkeypatch, block, fes):
    """The fast path (one QR sweep, then one sweep of per-cluster sums X_g'u0, X_g'u1,
    X_g'a; everything after is G-sized) against the direct forms on clusters of very
    unequal size (one holds half the rows, some hold 2), a badly scaled year-like regressor
    and many row blocks: CRV1 estimate / se / t equal the direct n-row computation
    (_crv1_t) and a dummy-free lstsq refit; WCR statistics at several nulls and the WCU
    statistics (impose_null=False, routed through the same sums) equal wcr_statistics."""
    from twinimpact.core import rowblocks

    monkeypatch.setattr(rowblocks, "BLOCK", block)
    rng = np.random.default_rng(11)
    sizes = np.r_[400, 2, 2, 3, 7, 40, 90, 150, 5, 60, 41]
    g = np.repeat(np.arange(len(sizes)), sizes)
    rng.shuffle(g)
    n, n_cl = len(g), len(sizes)
    d = pd.DataFrame({"g": g, "x": rng.normal(size=n) + rng.normal(size=n_cl)[g],
                      "z": 2000.0 + rng.integers(0, 20, n), "f": rng.integers(0, 7, n)})
    d["y"] = 50.0 + 0.2 * d["x"] + 0.01 * d["z"] + rng.normal(size=n_cl)[g] \
        + rng.normal(size=n)
    small = n_cl / (n_cl - 1) * (n - 1) / (n - 3)

    def design_of(frame):
        b = _design_for(frame, fes)
        return wb._Design(y=b.y, x=b.x, cl=b.cl, g=b.g, j=b.j, fe=b.fe, small=small)

    # the oracle (normal equations) runs on the centred panel: the same regression
    # (intercept or fixed effects absorb the shifts) without the year's conditioning
    design, centred = design_of(d), design_of(d.assign(z=d["z"] - 2000.0, y=d["y"] - 50.0))
    m = wb._cluster_moments(design)
    assert m.rank == design.x.shape[1]
    np.testing.assert_allclose(m.crv1(design, 0.1), wb._crv1_t(centred, 0.1), rtol=1e-10)
    if not fes:
        beta = np.linalg.lstsq(centred.x, centred.y, rcond=None)[0]
        assert m.beta[design.j] == pytest.approx(beta[design.j], rel=1e-10)
        assert m.crv1(design, 0.1)[2] == pytest.approx(
            _refit_t(centred.y, centred.x, centred.cl, centred.j, 0.1, small), rel=1e-10)
    v = draw_weights("mammen", n_cl, 400, np.random.default_rng(3))
    path = wb._WCRPath(design, v, m)
    for b0 in (-2.0, 0.0, 0.2, 3.5):
        np.testing.assert_allclose(path.statistics(b0), wb.wcr_statistics(centred, b0, v),
                                   rtol=1e-9, atol=1e-10)
    # the same on the centred panel itself, tighter (both well conditioned)
    path_c = wb._WCRPath(centred, v)
    for b0 in (-2.0, 0.2):
        np.testing.assert_allclose(path_c.statistics(b0), wb.wcr_statistics(centred, b0, v),
                                   rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(path.statistics(m.beta[design.j]),
                               wb.wcr_statistics(centred, 0.0, v, impose_null=False),
                               rtol=1e-9, atol=1e-10)


def test_wcu_public_result_equals_direct_statistics():
    """impose_null=False through the public function: t_boot equals the direct WCU form."""
    rng = np.random.default_rng(4)
    n, n_cl = 900, 13
    g = rng.integers(0, n_cl, n)
    d = pd.DataFrame({"g": g, "x": rng.normal(size=n), "z": rng.normal(size=n)})
    d["y"] = 0.1 * d["x"] + rng.normal(size=n_cl)[g] + rng.normal(size=n)
    r = wild_cluster_bootstrap(d, outcome="y", regressors=["x", "z"], cluster="g",
                               term="x", n_reps=499, seed=8, impose_null=False)
    base = _design_for(d, ())
    design = wb._Design(y=base.y, x=base.x, cl=base.cl, g=base.g, j=1, fe=(),
                        small=r.small_sample)
    v = draw_weights("rademacher", n_cl, 499, np.random.default_rng(8))
    np.testing.assert_allclose(r.t_boot, wb.wcr_statistics(design, 0.0, v,
                                                            impose_null=False),
                               rtol=1e-10, atol=1e-12)
    assert r.p_value == wb._p_value(r.statistic, r.t_boot)


# --------------------------------------------------------------- cluster codes, sorted
@pytest.mark.parametrize("block", [5, 1 << 18])
@pytest.mark.parametrize("kind", ["int", "str", "float", "object", "late", "sorted"])
def test_sorted_codes_equal_np_unique_inverse(monkeypatch, block, kind):
    """_sorted_codes (factorize, one row per cluster found block by block, codes renumbered
    in place block by block) gives np.unique's inverse (clusters in sorted label order)
    on shuffled, string, float and object labels, on a cluster first seen in the last row
    (past the first blocks of the search) and on rows sorted by cluster (kept as is)."""
    from twinimpact.core import rowblocks

    monkeypatch.setattr(rowblocks, "BLOCK", block)
    rng = np.random.default_rng(3)
    n = 20_000
    lab = rng.integers(0, 37, n) * 7 - 100
    if kind == "late":  # the largest code appears once, in the last row
        lab[-1] = -1_000
    if kind == "sorted":
        lab = np.sort(lab)
    col = {"int": pd.Series(lab), "late": pd.Series(lab), "sorted": pd.Series(lab),
           "str": pd.Series([f"c{v:+05d}" for v in lab], dtype="str"),
           "float": pd.Series(lab / 4.0),
           "object": pd.Series([f"c{v:+05d}" for v in lab], dtype=object)}[kind]
    codes, g = wb._sorted_codes(col)
    labels, inverse = np.unique(col.to_numpy(dtype=object if kind in ("str", "object")
                                             else None), return_inverse=True)
    assert g == len(labels)
    np.testing.assert_array_equal(codes, inverse)


def test_sorted_codes_keep_first_appearance_for_unsortable_labels():
    """Mixed-type object labels cannot be sorted: the codes stay in first appearance."""
    col = pd.Series(["b", 3, "a", 3, "b", 1.5], dtype=object)
    codes, g = wb._sorted_codes(col)
    assert g == 4
    np.testing.assert_array_equal(codes, [0, 1, 2, 1, 0, 3])


def test_sorted_codes_make_no_row_sized_array_beyond_factorize(monkeypatch):
    """Renumbering costs no n-row temporary: with factorize's codes made beforehand, the
    traced peak of _sorted_codes is below a quarter of the codes (the whole-array
    np.arange(n) scatter and rank[codes] gather it replaced made two full copies)."""
    import tracemalloc

    from twinimpact.core.fe import factorize

    rng = np.random.default_rng(0)
    n = 2_000_000  # codes 16 MB, rowblocks.BLOCK's buffer 2 MB
    col = pd.Series(rng.integers(0, 50, n))
    codes_fa, g = factorize(col)
    given = codes_fa.copy()
    monkeypatch.setattr(wb, "factorize", lambda c: (given, g))
    tracemalloc.start()
    try:
        codes, g2 = wb._sorted_codes(col)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert g2 == g
    assert not np.array_equal(codes, codes_fa)  # the renumbering ran (shuffled labels)
    np.testing.assert_array_equal(codes, np.unique(col.to_numpy(), return_inverse=True)[1])
    assert peak < 0.25 * codes.nbytes
