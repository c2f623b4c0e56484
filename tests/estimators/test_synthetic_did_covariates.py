"""Synthetic DiD with covariates (Stata sdid ``covariates(x, optimized|projected)``) and the
event-study synthetic DiD (Stata ``sdid_event``): published numbers on the quota example,
oracles for the projection and the event contrasts, bad input, replications."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from hypothesis import given, settings
from hypothesis import strategies as st

from twinimpact.errors import DroppedRowsWarning, InputError, SpecificationError
from twinimpact.estimators._sdid_covariates import project_beta, sdid_fit_covariates
from twinimpact.estimators._sdid_inference import aggregate
from twinimpact.estimators._sdid_solver import default_options
from twinimpact.estimators.synthetic_did import _build_design, synthetic_did
from twinimpact.estimators.synthetic_did_event import synthetic_did_event

from ..conftest import DATA, REFERENCE

REF = json.loads((REFERENCE / "synthetic_did" / "quota_covariates.json").read_text())
#: Stata and synthdid.py print 6-8 significant digits; our Frank-Wolfe iterates are the
#: same, so only the printed rounding separates the numbers.
PRINTED = 6e-6
#: Projection oracle (dense dummy-variable OLS) vs the Frisch-Waugh kernel.
EXACT = 1e-9


@pytest.fixture(scope="module")
def quota() -> pd.DataFrame:
    return pd.read_csv(DATA / "sdid_quota" / "quota_example.csv.gz")


@pytest.fixture(scope="module")
def quota_stata(quota) -> pd.DataFrame:
    """The data as Stata holds them: ``womparl`` and ``lngdp`` are storage type float
    (single precision). The CSV's 7-digit decimals round to exactly the .dta's floats."""
    return quota.assign(**{c: quota[c].astype(np.float32).astype(np.float64)
                           for c in ("womparl", "lngdp")})


def _printed(v: float) -> float:
    """Half a unit in the last digit of a number as printed (``repr`` of the JSON value)."""
    digits = repr(abs(v)).split(".")[1] if "." in repr(v) else ""
    return 0.5 * 10.0 ** -len(digits) + 1e-12


def _fit(df: pd.DataFrame, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DroppedRowsWarning)
        return synthetic_did(df, outcome="womparl", unit="country", time="year",
                             treated="quota", covariates="lngdp", **kw)


def _event(df: pd.DataFrame, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DroppedRowsWarning)
        return synthetic_did_event(df, outcome="womparl", unit="country", time="year",
                                   treated="quota", **kw)


# ---------------------------------------------------------------- published numbers
def test_projected_matches_kranz_projection_every_cohort(quota):
    res = _fit(quota, covariate_method="projected", se=None)
    ref = REF["synthdid_py_projected"]
    assert res.params["ATT"] == pytest.approx(ref["att"], abs=1e-5)
    for c, v in ref["cohorts"].items():
        assert res.params[f"cohort={c}"] == pytest.approx(v, abs=PRINTED)
    assert res.diagnostics["dropped_rows"] == {"missing_covariates": 104}
    assert len(res.diagnostics["units_removed_missing_covariates"]) == 4
    assert res.diagnostics["n_units"] == 115
    # Stata's 8.059266 needs its single-precision womparl (next test): 2.3e-4 away here.
    assert abs(res.params["ATT"] - REF["stata_sdid_projected"]["att"]) > 1e-4


def test_projected_matches_stata_sdid_on_its_float_data(quota_stata):
    """sdid.ado's projected(): OLS on the never-treated rows with year and unit dummies,
    once, then SDID on Y - X beta. Stata ran it on single-precision womparl; the decimal
    values give synthdid.py's README number instead (cohort 2000's unit weights stop at
    10,000 iterations and move by 1e-3 when the outcome moves by 1e-7)."""
    res = _fit(quota_stata, covariate_method="projected", se=None)
    att = REF["stata_sdid_projected"]["att"]
    assert res.params["ATT"] == pytest.approx(att, abs=_printed(att))
    assert res.spec["projection_sample"] == "never_treated"
    ref = REF["synthdid_py_projected_dta"]
    assert res.params["ATT"] == pytest.approx(ref["att"], abs=_printed(ref["att"]))
    for c, v in ref["cohorts"].items():
        assert res.params[f"cohort={c}"] == pytest.approx(v, abs=_printed(v)), c


def test_no_covariates_matches_stata_e_tau_to_every_printed_digit(quota_stata):
    res = synthetic_did(quota_stata, outcome="womparl", unit="country", time="year",
                        treated="quota", se=None)
    ref = REF["stata_sdid_no_covariates"]
    assert res.params["ATT"] == pytest.approx(ref["att"], abs=_printed(ref["att"]))
    for c, v in ref["tau"].items():
        assert res.params[f"cohort={c}"] == pytest.approx(v, abs=_printed(v)), c


@pytest.mark.slow
def test_optimized_matches_stata_sdid(quota_stata):
    res = _fit(quota_stata, se=None)
    assert res.params["ATT"] == pytest.approx(REF["stata_sdid_optimized"]["att"], abs=PRINTED)
    assert res.spec["covariate_method"] == "optimized"
    assert res.diagnostics["covariates"]["standardized"] is True


@pytest.mark.slow
def test_optimized_kernel_reproduces_synthdid_py_with_its_two_choices(quota):
    """synthdid.py does not standardise and steps beta by 1/(t+1): with those two choices
    our kernel gives its seven cohort estimates and ATT to the printed digits."""
    d = quota.dropna(subset=["lngdp"])
    des = _build_design(d, "womparl", "country", "year", "quota", None, "sdid")
    X = d.pivot(index="country", columns="year", values="lngdp").loc[des.Y.index]
    Y, Xa, N0 = des.Y.to_numpy(), X.to_numpy()[:, :, None], des.N0
    taus, n1, t1 = [], [], []
    for g in des.groups:
        rows = np.concatenate([np.arange(N0), g.rows])
        opts, _ = default_options("sdid", Y[rows], N0, g.a)
        f = sdid_fit_covariates(Y[rows], Xa[rows], N0, g.a, opts, step_offset=1)
        taus.append(f.tau), n1.append(f.N1), t1.append(f.T1)
    ref = REF["synthdid_py_optimized"]
    for (c, v), tau in zip(ref["cohorts"].items(), taus, strict=True):
        assert tau == pytest.approx(v, abs=PRINTED), c
    assert aggregate(np.array(taus), n1, t1)[0] == pytest.approx(ref["att"], abs=1e-5)


def test_event_study_single_cohort_matches_stata_sdid_event(quota_stata):
    quota = quota_stata
    first = quota[quota.quota == 1].groupby("country").year.min()
    qy = quota.country.map(first)
    d = quota[(qy == 2002) | qy.isna()]
    res = _event(d, placebo="all", covariates="lngdp", se=None)
    ref = REF["stata_sdid_event_2002_cohort"]
    assert res.params["ATT"] == pytest.approx(ref["ATT"], abs=PRINTED)
    for ell, v in enumerate(ref["effects"]):
        assert res.params[f"rel_time={ell}"] == pytest.approx(v, abs=PRINTED)
    for ell, v in enumerate(ref["placebos"], start=1):
        assert res.params[f"rel_time={-ell}"] == pytest.approx(v, abs=PRINTED)
    assert res.spec["projection_sample"] == "not_yet_treated"


def test_event_study_staggered_effects_match_stata_sdid_event(quota_stata):
    quota = quota_stata
    res = _event(quota, effects=8, placebo=5, covariates="lngdp", se=None)
    ref = REF["stata_sdid_event_full_panel"]
    assert res.params["ATT"] == pytest.approx(ref["ATT"], abs=PRINTED)
    for ell, v in enumerate(ref["effects"]):
        assert res.params[f"rel_time={ell}"] == pytest.approx(v, abs=PRINTED)
    frame = res.to_frame()
    assert list(frame["rel_time"].dropna()) == [-5, -4, -3, -2, -1, *range(8)]
    # The rows Stata printed as Placebo_1..5 are its Effect_9..13 (see the reference note).
    full = _event(quota, covariates="lngdp", se=None)
    for ell, v in enumerate(ref["placebos_printed_not_reproduced"], start=8):
        assert full.params[f"rel_time={ell}"] == pytest.approx(v, abs=PRINTED)
    assert frame["term"].iloc[-1] == "ATT"


# ---------------------------------------------------------------- oracles
def test_event_rows_equal_the_synthdid_effect_curve_and_att(quota):
    """Without covariates, each cohort's effects are R synthdid's effect curve and the ATT
    row is synthetic_did's ATT (same weights, same aggregation)."""
    first = quota[quota.quota == 1].groupby("country").year.min()
    qy = quota.country.map(first)
    d = quota[(qy == 2003) | qy.isna()]
    sd = synthetic_did(d, outcome="womparl", unit="country", time="year", treated="quota",
                       se=None)
    ev = synthetic_did_event(d, outcome="womparl", unit="country", time="year",
                             treated="quota", se=None)
    curve = sd.effect_curve().to_numpy()
    got = np.array([ev.params[f"rel_time={k}"] for k in range(len(curve))])
    np.testing.assert_allclose(got, curve, rtol=0, atol=1e-10)
    assert ev.params["ATT"] == pytest.approx(sd.params["ATT"], abs=1e-10)
    assert ev.params["ATT"] == pytest.approx(curve.mean(), abs=1e-10)
    staggered = synthetic_did(quota, outcome="womparl", unit="country", time="year",
                              treated="quota", se=None)
    ev_all = synthetic_did_event(quota, outcome="womparl", unit="country", time="year",
                                 treated="quota", se=None)
    assert ev_all.params["ATT"] == pytest.approx(staggered.params["ATT"], abs=1e-10)
    per = ev_all.diagnostics["cohort_estimates"]
    # rel_time=0 combines the cohorts by their treated units N1_g
    n1 = staggered.cohorts.set_index("cohort")["n_treated"]
    assert ev_all.params["rel_time=0"] == pytest.approx(
        float((per["rel_time=0"] * n1).sum() / n1.sum()), abs=1e-10)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.3, 1.0))
def test_projection_equals_dummy_variable_ols(seed, keep):
    rng = np.random.default_rng(seed)
    N, T = 7, 6
    Y = rng.normal(size=(N, T))
    X = rng.normal(size=(N, T, 2))
    mask = rng.random((N, T)) < keep
    mask[:, :2] = True          # every unit and period observed at least twice
    mask[:2, :] = True
    rows, cols = np.nonzero(mask)
    df = pd.DataFrame({"y": Y[rows, cols], "x1": X[rows, cols, 0], "x2": X[rows, cols, 1],
                       "u": rows, "t": cols})
    ols = smf.ols("y ~ x1 + x2 + C(u) + C(t)", data=df).fit().params
    np.testing.assert_allclose(project_beta(Y, X, mask), ols[["x1", "x2"]].to_numpy(),
                               rtol=0, atol=EXACT)


def test_projected_equals_sdid_on_the_residualised_outcome(quota):
    d = quota.dropna(subset=["lngdp"])
    ever = d.country.isin(d.loc[d.quota == 1, "country"])
    beta = smf.ols("womparl ~ lngdp + C(country) + C(year)", data=d[~ever]).fit().params
    adj = d.assign(y=d.womparl - beta["lngdp"] * d.lngdp)
    manual = synthetic_did(adj, outcome="y", unit="country", time="year", treated="quota",
                           se=None)
    res = _fit(quota, covariate_method="projected", se=None)
    np.testing.assert_allclose(res.params.to_numpy(), manual.params.to_numpy(), atol=1e-9)
    assert res.diagnostics["covariates"]["beta"]["lngdp"] == pytest.approx(beta["lngdp"],
                                                                            abs=EXACT)


# ---------------------------------------------------------------- replications
def _small(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(16):
        a = 7 if u < 2 else (8 if u < 4 else None)
        for t in range(10):
            x = rng.normal() + 0.1 * t
            y = u % 4 + 0.3 * t + 0.8 * x + rng.normal(0, 0.1)
            w = int(a is not None and t >= a)
            rows.append((f"c{u:02d}", 2000 + t, y + 1.5 * w, w, x))
    return pd.DataFrame(rows, columns=["city", "year", "y", "w", "x"])


@pytest.mark.parametrize("how, se", [
    ("projected", "placebo"), ("projected", "bootstrap"), ("projected", "jackknife"),
    ("optimized", "jackknife"),
    pytest.param("optimized", "placebo", marks=pytest.mark.slow),
    pytest.param("optimized", "bootstrap", marks=pytest.mark.slow),
])
def test_covariate_standard_errors_are_finite_and_seeded(how, se):
    d = _small()
    n_reps = 8 if how == "projected" else 3
    kw = dict(outcome="y", unit="city", time="year", treated="w", covariates="x",
              covariate_method=how, se=se, n_reps=n_reps, seed=3)
    a, b = synthetic_did(d, **kw), synthetic_did(d, **kw)
    assert np.isfinite(a.std_errors["ATT"]) and a.std_errors["ATT"] > 0
    assert a.std_errors["ATT"] == b.std_errors["ATT"]
    assert abs(a.params["ATT"] - 1.5) < 0.5       # the covariate is adjusted for
    assert a.replicates.shape[0] == (16 if se == "jackknife" else n_reps)


@pytest.mark.parametrize("se", ["placebo", "bootstrap"])
def test_event_study_standard_errors_and_placebo_test(se):
    d = _small(1)
    res = synthetic_did_event(d, outcome="y", unit="city", time="year", treated="w",
                              placebo=3, covariates="x", se=se, n_reps=10, seed=2)
    assert np.isfinite(res.std_errors).all()
    pt = res.pretrend_test
    assert pt.df == 3 and 0 <= pt.p_value <= 1 and pt.kind == "Wald chi2"
    assert res.vcov_spec.kind == se


# ---------------------------------------------------------------- bad input
def test_missing_covariates_dropped_counted_and_warned(quota):
    with pytest.warns(DroppedRowsWarning, match="104 row"):
        synthetic_did(quota, outcome="womparl", unit="country", time="year",
                      treated="quota", covariates="lngdp", covariate_method="projected",
                      se=None)


def test_partly_missing_covariate_leaves_an_unbalanced_panel_refused(quota):
    d = quota.copy()
    d.loc[d.index[5], "lngdp"] = np.nan    # one year of Albania
    with pytest.raises(InputError, match="unbalanced"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DroppedRowsWarning)
        synthetic_did(d, outcome="womparl", unit="country", time="year", treated="quota",
                      covariates="lngdp", se=None)


@pytest.mark.parametrize("bad, match", [
    ("const", "constant"), ("text", "numeric"), ("quota", "both a covariate"),
])
def test_bad_covariates(quota, bad, match):
    d = quota.dropna(subset=["lngdp"]).assign(const=1.0, text="a")
    with pytest.raises((InputError, SpecificationError), match=match):
        synthetic_did(d, outcome="womparl", unit="country", time="year", treated="quota",
                      covariates=bad, se=None)


def test_bad_options(quota):
    with pytest.raises(SpecificationError, match="covariate_method"):
        synthetic_did(quota, outcome="womparl", unit="country", time="year",
                      treated="quota", covariates="lngdp", covariate_method="kranz")
    with pytest.raises(SpecificationError, match="effects"):
        synthetic_did_event(quota, outcome="womparl", unit="country", time="year",
                            treated="quota", effects=0, se=None)
    with pytest.raises(SpecificationError, match="se"):
        synthetic_did_event(quota, outcome="womparl", unit="country", time="year",
                            treated="quota", se="jackknife")


def test_caller_frame_untouched(quota):
    before = quota.copy()
    _fit(quota, covariate_method="projected", se=None)
    _event(quota, covariates="lngdp", se=None)
    pd.testing.assert_frame_equal(quota, before)
