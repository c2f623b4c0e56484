"""Gardner two-stage DiD: R did2s static reference, pyfixest 0.60 event-study cross-check,
two-explicit-regressions oracle (estimate and dense GMM variance), invariances, coverage
and bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinimpact.errors import EstimationError, FewClustersWarning, InputError
from twinimpact.estimators.did2s import did2s

from ..conftest import DATA, REFERENCE
from .test_imputation import SIM, simulate_panel

#: R did2s reference given to 16 digits; our solve is exact, differences are rounding
R_TOL = 1e-10
#: pyfixest demeans iteratively (tolerance ~1e-8 relative), so its event-study numbers agree
#: with the exact solve to a few 1e-6
PEER_TOL = 1e-5
#: brute-force dense oracle vs the Schur-complement path: floating-point noise only
ORACLE_TOL = 1e-9

KW = dict(outcome="dep_var", unit="unit", time="year", cohort="g")


@pytest.fixture(scope="module")
def df_het() -> pd.DataFrame:
    return pd.read_parquet(DATA / "did2s" / "df_het.parquet")


@pytest.fixture(scope="module")
def ref() -> dict:
    return json.loads((REFERENCE / "did2s" / "df_het.json").read_text())["cases"]


def test_static_matches_r_did2s(df_het, ref):
    r = did2s(df_het, **KW, first_stage=("state", "year"), cluster="state")
    assert r.params["ATT"] == pytest.approx(ref["static_state_year"]["estimate"], abs=R_TOL)
    assert r.std_errors["ATT"] == pytest.approx(ref["static_state_year"]["std_error"],
                                                abs=R_TOL)
    assert r.vcov_spec.kind == "two_stage" and r.vcov_spec.n_clusters == (40,)
    assert r.nobs == 46_500


def test_static_unit_year_matches_pyfixest(df_het, ref):
    r = did2s(df_het, **KW)
    assert r.params["ATT"] == pytest.approx(ref["static_unit_year"]["estimate"], abs=PEER_TOL)
    assert r.std_errors["ATT"] == pytest.approx(ref["static_unit_year"]["std_error"],
                                                rel=PEER_TOL)


@pytest.mark.slow
def test_event_study_matches_pyfixest(df_het, ref):
    r = did2s(df_het, **KW, first_stage=("state", "year"), cluster="state", event_study=True)
    exp = ref["es_state_year"]
    terms = [t for t in r.terms if t.startswith("rel_time=")]
    assert sorted(int(t.split("=")[1]) for t in terms) == sorted(int(e) for e in exp)
    for e, row in exp.items():
        assert r.params[f"rel_time={e}"] == pytest.approx(row["estimate"], abs=PEER_TOL)
        assert r.std_errors[f"rel_time={e}"] == pytest.approx(row["std_error"], rel=PEER_TOL)
    # the observation-weighted post average equals the static estimate
    assert r.params["ATT"] == pytest.approx(ref["static_state_year"]["estimate"], abs=1e-9)
    assert r.spec["ref"] == (-1,)


# ----------------------------------------------------------------------- oracle
def _dummies(values: np.ndarray) -> np.ndarray:
    return np.column_stack([(values == u).astype(float) for u in np.unique(values)])


def _oracle(d: pd.DataFrame, fe: tuple[str, str], cluster: str, event: bool
            ) -> tuple[np.ndarray, np.ndarray]:
    """The two explicit regressions, and Gardner's GMM variance with dense matrices."""
    g = d["g"].to_numpy(float)
    t = d["year"].to_numpy(float)
    treated = (g > 0) & (t >= g)
    x1 = np.column_stack([_dummies(d[c].to_numpy()) for c in fe])
    y = d["y"].to_numpy()
    b1 = np.linalg.pinv(x1[~treated]) @ y[~treated]
    adj = y - x1 @ b1
    if event:
        rel = np.where(g > 0, t - g, np.nan)
        es = sorted(e for e in np.unique(rel[~np.isnan(rel)]) if e != -1)
        x2 = np.column_stack([(rel == e).astype(float) for e in es])
    else:
        x2 = treated.astype(float)[:, None]
    b2 = np.linalg.lstsq(x2, adj, rcond=None)[0]
    e2 = adj - x2 @ b2
    e1 = np.where(treated, 0.0, adj)
    x10 = np.where(treated[:, None], 0.0, x1)
    v = x2.T @ x1 @ np.linalg.pinv(x10.T @ x10)
    meat = np.zeros((x2.shape[1],) * 2)
    for c in np.unique(d[cluster]):
        m = d[cluster].to_numpy() == c
        wg = x2[m].T @ e2[m] - v @ (x10[m].T @ e1[m])
        meat += np.outer(wg, wg)
    bread = np.linalg.inv(x2.T @ x2)
    return b2, bread @ meat @ bread


@pytest.mark.parametrize("event", [False, True])
@pytest.mark.parametrize("fe, cluster", [(("id", "year"), "id"), (("state", "year"), "state")])
def test_equals_two_explicit_regressions(event, fe, cluster):
    d = simulate_panel(n_units=28, n_periods=7, seed=5, dynamic=0.4)
    r = did2s(d, **SIM, first_stage=fe, cluster=cluster, event_study=event)
    b, v = _oracle(d, fe, cluster, event)
    names = [t for t in r.terms if t.startswith("rel_time=")] if event else ["ATT"]
    idx = [r.terms.index(n) for n in names]
    np.testing.assert_allclose(r.coef[idx], b, atol=ORACLE_TOL)
    np.testing.assert_allclose(r.cov[np.ix_(idx, idx)], v, atol=ORACLE_TOL)


def test_covariate_in_first_stage_equals_oracle():
    d = simulate_panel(n_units=28, n_periods=7, seed=6)
    rng = np.random.default_rng(0)
    d["x"] = rng.normal(size=len(d))
    d["y"] += 0.7 * d["x"]
    r = did2s(d, **SIM, covariates=["x"])
    g = d["g"].to_numpy(float)
    t = d["year"].to_numpy(float)
    treated = (g > 0) & (t >= g)
    x1 = np.column_stack([_dummies(d["id"].to_numpy()), _dummies(d["year"].to_numpy()),
                          d["x"].to_numpy()])
    b1 = np.linalg.pinv(x1[~treated]) @ d["y"].to_numpy()[~treated]
    adj = d["y"].to_numpy() - x1 @ b1
    assert r.params["ATT"] == pytest.approx(adj[treated].mean(), abs=ORACLE_TOL)
    assert r.diagnostics["first_stage_covariates"]["x"] == pytest.approx(b1[-1], abs=1e-9)


# ----------------------------------------------------------------------- invariances
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), shift=st.integers(-50, 50),
       const=st.floats(-100, 100), scale=st.floats(0.1, 10) | st.floats(-10, -0.1))
def test_invariances(seed, shift, const, scale):
    d = simulate_panel(n_units=24, n_periods=6, seed=seed)
    base = did2s(d, **SIM, event_study=True)
    moved = d.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    moved["id"] = moved["id"] * 7 + 3
    moved["year"] += shift
    moved["g"] = np.where(moved["g"] > 0, moved["g"] + shift, 0)
    r = did2s(moved, **SIM, event_study=True)
    np.testing.assert_allclose(r.coef, base.coef, atol=1e-9)
    np.testing.assert_allclose(r.std_errors, base.std_errors, atol=1e-9)
    rc = did2s(d.assign(y=d["y"] + const), **SIM, event_study=True)
    np.testing.assert_allclose(rc.coef, base.coef, atol=1e-7)
    rs = did2s(d.assign(y=d["y"] * scale), **SIM, event_study=True)
    np.testing.assert_allclose(rs.coef, base.coef * scale, atol=1e-8 * abs(scale))
    np.testing.assert_allclose(rs.std_errors, base.std_errors * abs(scale),
                               atol=1e-8 * abs(scale))


def test_ci_covers_known_homogeneous_effect():
    d = simulate_panel(n_units=400, n_periods=8, effect=2.0, seed=12)
    r = did2s(d, **SIM, event_study=True)
    post = r.to_frame(0.01).query("rel_time >= 0")
    assert ((post["ci_lower"] <= 2.0) & (post["ci_upper"] >= 2.0)).all()
    pre = r.to_frame(0.01).query("rel_time < 0")
    assert ((pre["ci_lower"] <= 0.0) & (pre["ci_upper"] >= 0.0)).all()


# ----------------------------------------------------------------------- bad input
def test_cohort_varying_within_unit_is_rejected():
    d = simulate_panel()
    d.loc[d.index[3], "g"] = 2002
    with pytest.raises(InputError, match="varies within unit"):
        did2s(d, **SIM)


def test_no_untreated_observations():
    with pytest.raises(EstimationError, match="no untreated"):
        did2s(simulate_panel(cohorts=(1,)), **SIM)


def test_missing_first_stage_column():
    with pytest.raises(InputError, match="county"):
        did2s(simulate_panel(), **SIM, first_stage=("county", "year"))


def test_caller_frame_unchanged():
    d = simulate_panel()
    before = d.copy(deep=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # 7 state clusters: flagged (diagnostics["few_clusters"]), not an error
        warnings.simplefilter("ignore", FewClustersWarning)
        r = did2s(d, **SIM, event_study=True, ref=(-1, -2), cluster="state")
    pd.testing.assert_frame_equal(d, before)
    assert "rel_time=-2" not in r.terms and r.spec["ref"] == (-1, -2)
    assert r.to_frame()["rel_time"].notna().sum() == len(r.terms) - 1


@pytest.mark.parametrize("by", ["units", "periods"])
def test_gmm_vcov_one_regressor_at_a_time_equals_matrix_form(by):
    """two_stage_vcov streams the regressors (first-stage cluster sums from unit level sums
    when clusters contain whole units, a pass over the rows otherwise); the n x k matrix
    form is the slow oracle."""
    from twinimpact.core.two_stage import fit_untreated, predict, solve_normal, system_rhs
    from twinimpact.estimators.did2s import two_stage_vcov

    rng = np.random.default_rng(5)
    n_u, n_t = 50, 7
    u = np.repeat(np.arange(n_u), n_t)
    t = np.tile(np.arange(n_t), n_u)
    keep = rng.random(len(u)) > 0.1
    u, t = u[keep], t[keep]
    g = rng.choice([0, 3, 4], size=n_u)[u]
    treated = (g > 0) & (t >= g)
    untreated = ~treated
    w = rng.uniform(0.5, 2.0, len(u))
    y = rng.normal(size=len(u)) + treated
    system = fit_untreated(y, [u, t], untreated, None, w).system
    x2 = np.column_stack([treated & (t - g == h) for h in range(3)]).astype(float)
    e1 = rng.normal(size=len(u))
    e2 = rng.normal(size=len(u))
    cluster = u // 2 if by == "units" else t
    vc, bread = two_stage_vcov(system, x2, e1, e2, untreated, cluster, w)
    b_d, b_m = solve_normal(system, *system_rhs(system, w[:, None] * x2))
    h = predict(system, b_d, b_m)
    corr = np.where(untreated[:, None], (w * np.where(untreated, e1, 0.0))[:, None] * h, 0.0)
    score = (w * e2)[:, None] * x2 - corr
    sums = np.stack([np.bincount(cluster, weights=score[:, j]) for j in range(3)], axis=1)
    np.testing.assert_allclose(vc, bread @ (sums.T @ sums) @ bread, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("method", ["did2s", "sun_abraham"])
def test_event_window_pretrend_test_covers_the_window(method):
    """ti.event_study(method=..., leads=k) reports the pre-treatment coefficients inside the
    window; its pre-trend test is the Wald test over exactly those (not over every lead of
    the full fit), the F(q, df) of the kept block of the covariance."""
    import twinimpact as ti
    from twinimpact.results import wald_pretrend_test

    d = simulate_panel(n_units=90, n_periods=14, cohorts=(6, 9, 12, 0), seed=3)
    kw = dict(outcome="y", unit="id", time="year", cohort="g", method=method)
    full = ti.event_study(d, **kw)
    win = ti.event_study(d, **kw, leads=3, lags=2)
    pre_full = [t for t, r in zip(full.terms, full.term_info["rel_time"], strict=True) if r < 0]
    pre_win = [t for t, r in zip(win.terms, win.term_info["rel_time"], strict=True) if r < 0]
    assert len(pre_full) > len(pre_win) > 0
    assert full.pretrend_test.n_coefficients == len(pre_full)
    pt = win.pretrend_test
    assert pt.n_coefficients == len(pre_win) and set(pt.terms) == set(pre_win)
    idx = [win.terms.index(t) for t in pt.terms]
    direct = wald_pretrend_test(pt.terms, win.coef[idx], win.cov[np.ix_(idx, idx)],
                                df_denominator=win.vcov_spec.df)
    assert pt.statistic == pytest.approx(direct.statistic, rel=1e-12)
    assert pt.p_value == pytest.approx(direct.p_value, rel=1e-12)
    assert pt.statistic != pytest.approx(full.pretrend_test.statistic, rel=1e-6)
    assert "inside the event window" in pt.note


def test_reference_period_without_rows_is_said_not_silent():
    """On a calendar that skips the reference period (biennial data: relative periods
    -4, -2, 0, 2, ...) nothing is omitted. The fit is then the fit with no reference
    period at all, and a note says so; on the annual panel there is no such note."""
    d = simulate_panel(n_units=30, n_periods=10, seed=3, cohorts=(3, 5, 0), dynamic=0.3)
    odd = d[d["year"] % 2 == 1].reset_index(drop=True)
    r = did2s(odd, **SIM, event_study=True)
    r_none = did2s(odd, **SIM, event_study=True, ref=())
    assert r.terms == r_none.terms and "rel_time=-2" in r.terms
    np.testing.assert_array_equal(r.coef, r_none.coef)
    note = [n for n in r.diagnostics["notes"] if "reference period" in n]
    assert len(note) == 1 and "rel_time -1 has no rows" in note[0], r.diagnostics["notes"]
    assert not any("reference period" in n for n in r_none.diagnostics["notes"])
    annual = did2s(d, **SIM, event_study=True)
    assert "rel_time=-1" not in annual.terms
    assert not any("reference period" in n for n in annual.diagnostics["notes"])


def test_relative_period_without_weight_note_is_plain():
    """A relative period whose rows all have weight 0 is not estimated; the note lists the
    periods as numbers (no Python list of term labels) in the form the report's plain
    sentence recognises."""
    from twinimpact.report.plain import plain_warning

    d = simulate_panel(n_units=30, n_periods=8, seed=4, cohorts=(3, 5, 0))
    d["w"] = np.where((d["g"] > 0) & (d["year"] - d["g"] == 4), 0.0, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = did2s(d, **SIM, event_study=True, weights="w")
    note = [n for n in r.diagnostics["notes"] if "no observations" in n]
    assert note == ["relative periods [4] have no observations and are not estimated"]
    assert np.isnan(r.coef[r.terms.index("rel_time=4")])
    assert "not estimated" in plain_warning(f"did2s: {note[0]}")
    assert "'" not in plain_warning(f"did2s: {note[0]}")
