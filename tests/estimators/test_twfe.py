"""TWFE / dynamic event study: dummy-variable oracle, fixest (via pyfixest) references,
invariances and bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from hypothesis import given, settings
from hypothesis import strategies as st

import twinimpact as ti
from twinimpact.errors import ColumnError, InputError, SpecificationError

from ..conftest import REFERENCE

#: the fast FE path must equal the dummy-variable OLS up to floating-point noise
ORACLE_TOL = 1e-8
#: pyfixest prints doubles; our sandwich uses the same formulas, so agreement is ~1e-10
PEER_TOL = 1e-8

KW = dict(outcome="lemp", unit="countyreal", time="year", cohort="first.treat")


def _with_d(mpdta: pd.DataFrame) -> pd.DataFrame:
    d = mpdta.copy()
    d["D"] = ((d["first.treat"] > 0) & (d["year"] >= d["first.treat"])).astype(float)
    return d


def test_static_equals_dummy_variable_ols(mpdta):
    r = ti.twfe(mpdta, **KW)
    oracle = smf.ols("lemp ~ D + C(countyreal) + C(year)", _with_d(mpdta)).fit()
    assert abs(r.params["ATT"] - oracle.params["D"]) < ORACLE_TOL
    # clustered SE from the oracle with fixest's factors: K = 1 + 4 year FE + 1 (nested unit FE)
    n, g, k = 2500, 500, 6
    v = oracle.get_robustcov_results("cluster", groups=mpdta["countyreal"], use_correction=False)
    se_raw = float(np.sqrt(v.cov_params()[list(oracle.params.index).index("D")][
        list(oracle.params.index).index("D")]))
    se = se_raw * np.sqrt(g / (g - 1) * (n - 1) / (n - k))
    assert abs(r.std_errors["ATT"] - se) < 1e-9


def test_dynamic_equals_dummy_variable_ols(mpdta):
    r = ti.event_study(mpdta, **KW)
    d = mpdta.copy()
    rel = np.where(d["first.treat"] > 0, d["year"] - d["first.treat"], np.nan)
    terms = []
    for e in (-4, -3, -2, 0, 1, 2, 3):
        name = f"e_{'m' if e < 0 else ''}{abs(e)}"
        d[name] = (rel == e).astype(float)
        terms.append((e, name))
    oracle = smf.ols("lemp ~ " + " + ".join(n for _, n in terms) + " + C(countyreal) + C(year)",
                     d).fit()
    for e, name in terms:
        assert abs(r.params[f"rel_time={e}"] - oracle.params[name]) < ORACLE_TOL


@pytest.mark.parametrize("case, kwargs", [
    ("static_crv1_unit", {}),
    ("static_hetero", {"vcov": "hetero"}),
    ("static_iid", {"vcov": "iid"}),
    ("static_twoway", {"cluster": ["countyreal", "year"]}),
])
def test_static_matches_fixest_defaults(mpdta, case, kwargs):
    ref = json.loads((REFERENCE / "twfe" / "mpdta_pyfixest.json").read_text())["cases"][case]["D"]
    r = ti.twfe(mpdta, **KW, **kwargs)
    f = r.to_frame().set_index("term").loc["ATT"]
    assert f["estimate"] == pytest.approx(ref["estimate"], abs=PEER_TOL)
    assert f["std_error"] == pytest.approx(ref["std_error"], rel=1e-7)
    assert f["p_value"] == pytest.approx(ref["p_value"], rel=1e-6)


def test_dynamic_matches_fixest(mpdta):
    ref = json.loads((REFERENCE / "twfe" / "mpdta_pyfixest.json").read_text())
    ref = ref["cases"]["dynamic_crv1_unit"]
    r = ti.event_study(mpdta, **KW).to_frame().set_index("term")
    for name, vals in ref.items():
        e = int(name.split("::")[1])
        assert r.loc[f"rel_time={e}", "estimate"] == pytest.approx(vals["estimate"], abs=PEER_TOL)
        assert r.loc[f"rel_time={e}", "std_error"] == pytest.approx(vals["std_error"], rel=1e-7)


def test_att_row_is_mean_of_post_coefficients(mpdta):
    r = ti.event_study(mpdta, **KW)
    post = [f"rel_time={e}" for e in range(4)]
    assert r.params["ATT"] == pytest.approx(r.params[post].mean(), abs=1e-12)
    a = np.full(4, 0.25)
    v = r.vcov.loc[post, post].to_numpy()
    assert r.std_errors["ATT"] == pytest.approx(np.sqrt(a @ v @ a), rel=1e-12)


def test_binned_endpoints_and_window(mpdta):
    r = ti.event_study(mpdta, **KW, leads=2, lags=1)
    assert set(r.to_frame()["rel_time"].dropna()) == {-2.0, 0.0, 1.0}
    binned = mpdta.copy()
    rel = np.where(binned["first.treat"] > 0, binned["year"] - binned["first.treat"], np.nan)
    assert r.diagnostics["n_used_rows"] == len(binned)
    r2 = ti.event_study(mpdta, **KW, leads=2, lags=1, bin_endpoints=False)
    n_out = int(np.sum((rel < -2) | (rel > 1)))
    assert r2.nobs == len(mpdta) - n_out
    assert r2.diagnostics["dropped_rows"]["treated rows outside the event window"] == n_out


def test_caller_frame_unchanged(mpdta):
    before = mpdta.copy(deep=True)
    ti.twfe(mpdta, **KW)
    ti.event_study(mpdta, **KW, leads=2, lags=2)
    pd.testing.assert_frame_equal(mpdta, before)


def test_collinear_covariate_is_nan_with_warning(mpdta):
    with pytest.warns(ti.errors.NotComputableWarning, match="lpop"):
        r = ti.twfe(mpdta, **KW, covariates=["lpop"])
    assert np.isnan(r.params["lpop"])
    assert r.params["ATT"] == pytest.approx(ti.twfe(mpdta, **KW).params["ATT"], abs=1e-12)


def test_never_treated_conventions_agree(mpdta):
    base = ti.twfe(mpdta, **KW).params["ATT"]
    for never in (np.nan, 10000):
        d = mpdta.copy()
        d.loc[d["first.treat"] == 0, "first.treat"] = never
        assert ti.twfe(d, **KW).params["ATT"] == pytest.approx(base, abs=1e-12)


@settings(max_examples=20, deadline=None)
@given(shift=st.integers(-50, 50), const=st.floats(-100, 100), scale=st.floats(0.1, 10),
       sign=st.sampled_from([-1, 1]), seed=st.integers(0, 1000))
def test_invariances(mpdta, shift, const, scale, sign, seed):
    base = ti.event_study(mpdta, **KW)
    d = mpdta.sample(frac=1.0, random_state=seed).copy()
    d["year"] = d["year"] + shift
    d["first.treat"] = np.where(d["first.treat"] > 0, d["first.treat"] + shift, 0)
    d["countyreal"] = d["countyreal"].map(lambda u: f"c{u}")
    d["lemp"] = sign * scale * d["lemp"] + const
    r = ti.event_study(d, **KW)
    np.testing.assert_allclose(r.params, sign * scale * base.params, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(r.std_errors, scale * base.std_errors, rtol=1e-7, atol=1e-9)


def test_recovers_known_dynamic_effects():
    from twinimpact.estimators.twfe import _example_panel

    r = ti.event_study(_example_panel(), outcome="y", unit="id", time="year", cohort="g")
    ci = r.conf_int()
    for e in range(0, 5):
        lo, hi = ci.loc[f"rel_time={e}"]
        assert lo <= e + 1 <= hi


@pytest.mark.parametrize("call, exc, fragment", [
    (lambda d: ti.twfe(d, outcome="lemp", unit="countyreal", time="yr", cohort="first.treat"),
     ColumnError, "'yr' (did you mean 'year'?)"),
    (lambda d: ti.twfe(d, outcome="lemp", unit="countyreal", time="year"),
     SpecificationError, "exactly one of treatment="),
    (lambda d: ti.twfe(d.iloc[:0], **KW), InputError, "empty"),
    (lambda d: ti.twfe(pd.concat([d, d.iloc[:1]]), **KW), InputError, "share a countyreal x year"),
    (lambda d: ti.twfe(d, **KW, vcov="robust"), SpecificationError, "vcov: expected one of"),
    (lambda d: ti.event_study(d, **KW, ref=-9, leads=2), SpecificationError, "reference period"),
    (lambda d: ti.event_study(d.assign(**{"first.treat": 0}), **KW), InputError, "no treated unit"),
    (lambda d: ti.twfe(d.assign(**{"first.treat": np.where(d.year == 2003, 2004, d["first.treat"])}),
                       **KW), InputError, "varies within unit"),
    (lambda d: ti.twfe(d.assign(lemp=d["lemp"].astype(str).where(d.index != 3, "n/a")), **KW),
     InputError, "must be numeric"),
])
def test_bad_input(mpdta, call, exc, fragment):
    with pytest.raises(exc, match=None) as info:
        call(mpdta)
    assert fragment in str(info.value)


def test_missing_outcome_rows_are_counted(mpdta):
    d = mpdta.copy()
    d.loc[d.index[:7], "lemp"] = np.nan
    with pytest.warns(ti.errors.DroppedRowsWarning, match="7 row"):
        r = ti.twfe(d, **KW)
    assert r.nobs == len(d) - 7
    assert r.diagnostics["dropped_rows"] == {"missing outcome (lemp)": 7}


# --- balanced two-way fast path vs the general alternating-projections path ------------

#: both paths are exact projections; only the order of floating-point sums differs
#: (largest difference seen on mpdta: 3e-14 of the largest entry)
FAST_VS_MAP_RTOL = 1e-12
#: unbalanced panels: the alternating projections stop when a sweep changes a column by
#: less than 1e-10 of its scale, so they sit about that far from the exact projection
EXACT_VS_MAP_RTOL = 1e-9


def _force_map(monkeypatch):
    """Make every panel look unbalanced with a large time set: dense design +
    alternating projections (the slow oracle of both fast paths)."""
    import twinimpact.core.fe as fe_mod

    monkeypatch.setattr(fe_mod, "is_balanced_twoway", lambda *a, **k: False)
    monkeypatch.setattr(fe_mod, "_is_balanced", lambda *a, **k: False)
    monkeypatch.setattr(fe_mod, "two_way_projector", lambda *a, **k: None)
    monkeypatch.setattr(fe_mod.SmallSetProjector, "applicable",
                        staticmethod(lambda *a, **k: False))


def _assert_same_fit(fast, slow, rtol):
    assert fast.terms == slow.terms and fast.nobs == slow.nobs
    for a, b in ((fast.coef, slow.coef), (fast.cov, slow.cov)):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        scale = np.nanmax(np.abs(b))
        np.testing.assert_allclose(np.nan_to_num(a), np.nan_to_num(b), rtol=0, atol=rtol * scale)
    assert fast.vcov_spec.kind == slow.vcov_spec.kind
    assert fast.vcov_spec.n_clusters == slow.vcov_spec.n_clusters
    assert fast.vcov_spec.small_sample == slow.vcov_spec.small_sample
    for key, val in slow.diagnostics.items():
        if key == "demean_iterations":  # 1: closed form; else unbalanced, MAP in both
            assert fast.diagnostics[key] in (1, val)
        elif key == "r2_within":
            assert fast.diagnostics[key] == pytest.approx(val, rel=1e-10)
        else:
            assert fast.diagnostics[key] == val, key


_FAST_CASES = [
    {},
    {"vcov": "hetero"},
    {"vcov": "iid"},
    {"cluster": ["countyreal", "year"]},
    {"cluster": "year"},
    {"cluster": "state"},
    {"covariates": ["lpop"]},                        # absorbed by the unit FE: NaN in both
    {"covariates": ["lpop_tv"]},                     # 99.99% absorbed: ill-conditioned
    {"leads": 2, "lags": 1},
    {"leads": 2, "lags": 1, "bin_endpoints": False},  # drops rows: unbalanced, MAP in both
    {"ref": [-1, -4]},
]


@pytest.mark.parametrize("estimator, kwargs", [
    *(("event_study", kw) for kw in _FAST_CASES),
    *(("twfe", kw) for kw in _FAST_CASES if not {"leads", "ref"} & set(kw)),
])
def test_fast_path_equals_map_path(mpdta, monkeypatch, estimator, kwargs):
    d = mpdta.sample(frac=1.0, random_state=1).assign(
        state=lambda x: x["countyreal"] // 1000,
        lpop_tv=lambda x: x["lpop"] + 0.01 * np.sin(x["year"] * x["countyreal"]))
    fn = getattr(ti, estimator)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the absorbed covariate warns in both paths
        fast = fn(d, **KW, **kwargs)
        _force_map(monkeypatch)
        slow = fn(d, **KW, **kwargs)
    assert slow.diagnostics["demean_iterations"] > 1          # really the iterative path
    unbalanced = kwargs.get("bin_endpoints") is False         # rows dropped
    _assert_same_fit(fast, slow, EXACT_VS_MAP_RTOL if unbalanced else FAST_VS_MAP_RTOL)


def test_fast_path_only_on_balanced_unweighted_panels(mpdta, monkeypatch):
    import twinimpact.core.fe as fe_mod

    calls = []
    real = fe_mod.ols_twoway_balanced
    monkeypatch.setattr(fe_mod, "ols_twoway_balanced",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    ti.event_study(mpdta, **KW)
    assert calls == [1]
    ti.event_study(mpdta.drop(index=[5, 6]), **KW)                              # unbalanced
    ti.event_study(mpdta.assign(w=1.0 + (mpdta["countyreal"] % 2)), **KW, weights="w")
    assert calls == [1]


@settings(max_examples=15, deadline=None)
@given(n_units=st.integers(6, 40), n_periods=st.integers(3, 9), seed=st.integers(0, 10_000),
       vcov=st.sampled_from(["cluster", "hetero", "iid"]))
def test_fast_path_property_on_random_staggered_panels(n_units, n_periods, seed, vcov):
    import twinimpact.core.fe as fe_mod

    rng = np.random.default_rng(seed)
    cohorts = rng.choice([0, *range(2001, 2000 + n_periods + 1)], size=n_units)
    cohorts[0] = 2002                                               # at least one treated
    d = pd.DataFrame({"id": np.repeat([f"u{i}" for i in range(n_units)], n_periods),
                      "year": np.tile(np.arange(2000, 2000 + n_periods), n_units),
                      "g": np.repeat(cohorts, n_periods)})
    d["y"] = rng.normal(size=len(d)) + (d["year"] >= d["g"]) * (d["g"] > 0)
    d = d.sample(frac=1.0, random_state=seed)
    kw = dict(outcome="y", unit="id", time="year", cohort="g", vcov=vcov)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = ti.event_study(d, **kw)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(fe_mod, "is_balanced_twoway", lambda *a, **k: False)
            mp.setattr(fe_mod, "_is_balanced", lambda *a, **k: False)
            slow = ti.event_study(d, **kw)
    # tiny random panels can be ill-conditioned (few units per event time)
    _assert_same_fit(fast, slow, 1e-9)


def test_unbalanced_panel_equals_dummy_variable_ols(mpdta):
    # 200 counties keep the dummy-variable fit quick (QR, not statsmodels' default pinv)
    d = mpdta[mpdta["countyreal"].isin(np.unique(mpdta["countyreal"])[:200])]
    d = d.drop(index=d.index[[3, 17, 400, 801]]).reset_index(drop=True)
    r = ti.event_study(d, **KW)
    assert r.diagnostics["demean_iterations"] == 1   # exact small-time-set projection
    rel = np.where(d["first.treat"] > 0, d["year"] - d["first.treat"], np.nan)
    terms = []
    for e in (-4, -3, -2, 0, 1, 2, 3):
        name = f"e_{'m' if e < 0 else ''}{abs(e)}"
        d[name] = (rel == e).astype(float)
        terms.append((e, name))
    oracle = smf.ols("lemp ~ " + " + ".join(n for _, n in terms) + " + C(countyreal) + C(year)",
                     d).fit(method="qr")
    for e, name in terms:
        assert abs(r.params[f"rel_time={e}"] - oracle.params[name]) < ORACLE_TOL


@settings(max_examples=12, deadline=None)
@given(n_units=st.integers(8, 40), n_periods=st.integers(4, 9), seed=st.integers(0, 10_000),
       drop=st.floats(0.02, 0.3), vcov=st.sampled_from(["cluster", "hetero", "iid"]))
def test_unbalanced_fast_path_property(n_units, n_periods, seed, drop, vcov):
    """Unbalanced panels (random gaps, string ids, shuffled rows): the exact small-time
    path equals the dense design + alternating projections."""

    rng = np.random.default_rng(seed)
    cohorts = rng.choice([0, *range(2001, 2000 + n_periods + 1)], size=n_units)
    cohorts[:2] = [2002, 0]
    d = pd.DataFrame({"id": np.repeat([f"u{i}" for i in range(n_units)], n_periods),
                      "year": np.tile(np.arange(2000, 2000 + n_periods), n_units),
                      "g": np.repeat(cohorts, n_periods)})
    d["y"] = rng.normal(size=len(d)) + (d["year"] >= d["g"]) * (d["g"] > 0)
    d = d[rng.random(len(d)) > drop].sample(frac=1.0, random_state=seed)
    kw = dict(outcome="y", unit="id", time="year", cohort="g", vcov=vcov)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = ti.event_study(d, **kw)
        with pytest.MonkeyPatch.context() as mp:
            _force_map(mp)
            slow = ti.event_study(d, **kw)
    _assert_same_fit(fast, slow, 1e-8)


def _staggered(n_units: int, n_periods: int = 10, miss: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    u = np.repeat(np.arange(n_units), n_periods)
    t = np.tile(np.arange(2001, 2001 + n_periods), n_units)
    g_u = np.where(rng.random(n_units) < 0.3, 0, rng.choice(np.arange(2003, 2010), n_units))
    keep = rng.random(len(u)) >= miss
    u, t = u[keep], t[keep]
    g = g_u[u]
    y = 0.1 * u + 0.2 * t + 1.0 * ((g > 0) & (t >= g)) + rng.normal(size=len(u))
    return pd.DataFrame({"unit": u, "year": t, "cohort": g, "y": y})


@pytest.mark.parametrize("miss", [0.0, 0.05])
def test_event_study_memory_is_linear_in_rows(miss):
    """Peak traced memory of one fit (the caller's frame excluded) per row stays flat from
    1e5 to 3e5 rows and below 110 bytes a row (was ~200 before issue 13: dense
    temporaries, duplicated columns). No n x k or n x n object: a dense n x 16 design would
    alone cost 128 bytes a row."""
    import tracemalloc

    per_row = []
    for n_units in (10_000, 30_000):
        d = _staggered(n_units, miss=miss)
        ti.event_study(d.iloc[:2000], outcome="y", unit="unit", time="year", cohort="cohort")
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            r = ti.event_study(d, outcome="y", unit="unit", time="year", cohort="cohort")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert len(r.params) == 16  # 15 event times + ATT
        per_row.append((peak - base) / len(d))
    assert max(per_row) < 110, per_row
    assert per_row[1] < 1.2 * per_row[0], per_row


def test_event_study_string_ids_arrow_object_and_int_agree():
    """Unit ids as pandas' Arrow-backed strings (coded without Python objects), as an
    object column and as integers give the same fit; the caller's frame is untouched."""
    d = _staggered(400, seed=3)
    labels = np.char.add("u", d["unit"].to_numpy().astype(str))
    arrow = d.assign(unit=pd.array(labels, dtype="str"))
    obj = d.assign(unit=pd.Series(labels, dtype=object))
    before = arrow.copy()
    kw = dict(outcome="y", unit="unit", time="year", cohort="cohort")
    r_int, r_arrow, r_obj = (ti.event_study(x, **kw) for x in (d, arrow, obj))
    pd.testing.assert_frame_equal(arrow, before)
    for r in (r_arrow, r_obj):
        np.testing.assert_allclose(r.params, r_int.params, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(r.std_errors, r_int.std_errors, rtol=1e-12)
        v = r.with_vcov("cluster", cluster="year")
        np.testing.assert_allclose(v.std_errors, r_int.with_vcov("cluster", cluster="year")
                                   .std_errors, rtol=1e-12)


def test_missing_relative_periods_note_is_short_and_plain():
    """A long calendar can leave thousands of relative periods without a row (verify
    helper: ~2,000 numbers in one note); the note and warning show the first four, the
    last two and the count, and the report's plain sentence still recognises it."""
    from twinimpact.report.plain import plain_warning

    rng = np.random.default_rng(0)
    rows = [(u, t, np.nan) for u in range(6) for t in range(2000, 2041)]
    rows += [(u, t, 2020.0) for u in (10, 11) for t in (2000, 2019, 2020, 2040)]
    d = pd.DataFrame(rows, columns=["u", "t", "g"])
    d["y"] = rng.normal(size=len(d))
    with pytest.warns(ti.errors.NotComputableWarning, match="no observations") as rec:
        r = ti.event_study(d, outcome="y", unit="u", time="t", cohort="g")
    msg = next(str(w.message) for w in rec if "no observations" in str(w.message))
    assert "[-19, -18, -17, -16, …, 18, 19] (37 periods)" in msg
    note = next(n for n in r.diagnostics["notes"] if "no observations" in n)
    assert len(note) < 120 and "(37 periods)" in note
    assert plain_warning(msg) == ("event_study: Some years around twinning have no "
                                  "observations and are not estimated.")
    assert set(r.term_info["rel_time"].dropna()) == {-20.0, 0.0, 20.0}
