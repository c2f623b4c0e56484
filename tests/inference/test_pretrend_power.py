"""Pre-trend power (Roth 2022) against R pretrends' README and slow oracles."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

import twinimpact as ti
from twinimpact.errors import InputError, SpecificationError
from twinimpact.estimators.twfe import _example_panel
from twinimpact.inference._mvn_rect import rect_prob, truncated_mean

from ..conftest import DATA

HW = json.loads((DATA / "pretrends" / "he_wang_2017_fig2c.json").read_text())
REF = json.loads((DATA / "pretrends" / "reference.json").read_text())
BETA, SIGMA, TVEC = np.array(HW["beta"]), np.array(HW["sigma"]), HW["tVec"]
R_CRIT = 1.96  # R pretrends hard-codes thresholdTstat.Pretest = 1.96
# R's power / Bayes factor come from mvtnorm::pmvnorm (randomised Genz-Bretz, abseps 1e-3):
# measured gap to our exact value 8.6e-5 (power) and 1.2e-4 (Bayes factor).
R_PMVNORM_TOL = 2.5e-4
R_TMVNORM_TOL = 1e-5  # tmvtnorm::mtmvnorm truncated means: same MC source, measured 4e-6
R_UNIROOT_TOL = 1.3e-4  # uniroot's default tol .Machine$double.eps^0.25 on the slope
R_PRINTED_7 = 1e-7  # likelihood ratio printed to 7 significant digits (exact dmvnorm)


def test_he_wang_linear_trend_matches_r_readme():
    slope = ti.slope_for_power(SIGMA, target_power=0.5, rel_times=TVEC, critical_value=R_CRIT)
    assert slope == pytest.approx(REF["slope50"], abs=R_UNIROOT_TOL)
    # at R's own slope
    p = ti.pretrend_power(BETA, SIGMA, rel_times=TVEC, delta_true=REF["slope50"],
                          critical_value=R_CRIT)
    lin = REF["linear"]
    assert p.power == pytest.approx(lin["power"], abs=R_PMVNORM_TOL)
    assert p.bayes_factor == pytest.approx(lin["bayes_factor"], abs=R_PMVNORM_TOL)
    assert p.likelihood_ratio == pytest.approx(lin["likelihood_ratio"], abs=R_PRINTED_7)
    f = p.frame
    ev = lin["df_eventplot"]
    assert f["rel_time"].tolist() == ev["t"]
    np.testing.assert_allclose(f["estimate"], ev["betahat"], atol=1e-9)
    np.testing.assert_allclose(f["delta_true"], ev["deltatrue"], atol=1e-8)
    np.testing.assert_allclose(f["std_error"], ev["se"], atol=1e-8)
    np.testing.assert_allclose(f["mean_after_pretest"], ev["meanAfterPretesting"],
                               atol=R_TMVNORM_TOL)
    assert f.loc[f["rel_time"] == -1, "period"].item() == "reference"
    # at our own slope the power is 50% to solver precision
    q = ti.pretrend_power(BETA, SIGMA, rel_times=TVEC, delta_true=slope, critical_value=R_CRIT)
    assert q.power == pytest.approx(0.5, abs=1e-9)


def test_he_wang_quadratic_trend_matches_r_readme():
    delta = 0.024 * (np.array(TVEC) + 1.0) ** 2
    p = ti.pretrend_power(BETA, SIGMA, rel_times=TVEC, delta_true=delta, critical_value=R_CRIT)
    quad = REF["quadratic"]
    assert p.power == pytest.approx(quad["power"], abs=R_PMVNORM_TOL)
    assert p.bayes_factor == pytest.approx(quad["bayes_factor"], abs=R_PMVNORM_TOL)
    assert p.likelihood_ratio == pytest.approx(quad["likelihood_ratio"], abs=R_PRINTED_7)
    assert p.slope is None


def test_default_critical_value_is_the_normal_quantile():
    p = ti.pretrend_power(BETA, SIGMA, rel_times=TVEC, delta_true=0.0)
    assert p.critical_value == pytest.approx(stats.norm.ppf(0.975), abs=1e-15)
    assert p.power == pytest.approx(p.size, abs=1e-15)
    assert p.bayes_factor == pytest.approx(1.0, abs=1e-15)
    assert p.likelihood_ratio == pytest.approx(1.0, abs=1e-12)


@pytest.mark.slow
def test_rectangle_probability_against_quadrature_and_qmc():
    """Slow oracles: scipy's adaptive quadrature (d = 2) and high-precision QMC (d = 3)."""
    sp = SIGMA[:3, :3]
    se = np.sqrt(np.diag(sp))
    mu = np.array([-0.15, -0.1, -0.05])
    ub = 1.96 * se
    qmc = stats.multivariate_normal.cdf(ub, mean=mu, cov=sp, lower_limit=-ub, abseps=1e-9,
                                        releps=0, maxpts=5_000_000,
                                        rng=np.random.default_rng(7))
    assert rect_prob(mu, sp, -ub, ub) == pytest.approx(qmc, abs=1e-8)
    s2 = sp[:2, :2]
    m2, u2 = mu[:2], ub[:2]
    rho = s2[0, 1] / np.sqrt(s2[0, 0] * s2[1, 1])

    def inner(x1):
        z = (x1 - m2[0]) / np.sqrt(s2[0, 0])
        cm = m2[1] + rho * np.sqrt(s2[1, 1]) * z
        cs = np.sqrt(s2[1, 1] * (1 - rho ** 2))
        return stats.norm.pdf(x1, m2[0], np.sqrt(s2[0, 0])) * (
            stats.norm.cdf((u2[1] - cm) / cs) - stats.norm.cdf((-u2[1] - cm) / cs))

    oracle, _ = integrate.quad(inner, -u2[0], u2[0], epsabs=1e-14, epsrel=1e-13)
    assert rect_prob(m2, s2, -u2, u2) == pytest.approx(oracle, abs=1e-12)


def test_truncated_mean_against_monte_carlo():
    rng = np.random.default_rng(11)
    for d in (2, 3, 4):  # d = 4 uses the QMC path
        a = rng.normal(size=(d, d))
        cov = a @ a.T + d * np.eye(d)
        mu = rng.normal(size=d)
        ub = 1.5 * np.sqrt(np.diag(cov))
        draws = rng.multivariate_normal(mu, cov, size=400_000)
        ok = np.all(np.abs(draws) <= ub, axis=1)
        p_mc = ok.mean()
        assert rect_prob(mu, cov, -ub, ub) == pytest.approx(p_mc, abs=5 * np.sqrt(
            p_mc * (1 - p_mc) / len(draws)))
        m_mc = draws[ok].mean(axis=0)
        se_mc = draws[ok].std(axis=0) / np.sqrt(ok.sum())
        np.testing.assert_array_less(np.abs(truncated_mean(mu, cov, -ub, ub) - m_mc),
                                     5 * se_mc)


@settings(max_examples=15, deadline=None)
@given(target=st.floats(0.2, 0.95), scale=st.floats(0.01, 10.0))
def test_slope_for_power_inverts_power(target, scale):
    sig = SIGMA * scale ** 2
    s = ti.slope_for_power(sig, target_power=target, rel_times=TVEC)
    p = ti.pretrend_power(BETA, sig, rel_times=TVEC, delta_true=s)
    assert p.power == pytest.approx(target, abs=1e-8)
    assert s == pytest.approx(scale * ti.slope_for_power(SIGMA, target_power=target,
                                                         rel_times=TVEC), rel=1e-7)


def test_event_study_result_is_accepted():
    r = ti.event_study(_example_panel(), outcome="y", unit="id", time="year", cohort="g",
                       leads=3, lags=2)
    fr = r.to_frame().dropna(subset=["rel_time"])
    names = fr["term"].tolist()
    sig = r.vcov.loc[names, names].to_numpy()
    s_res = ti.slope_for_power(r, target_power=0.8)
    s_arr = ti.slope_for_power(sig, target_power=0.8, rel_times=fr["rel_time"].to_numpy())
    assert s_res == s_arr
    p = ti.pretrend_power(r, delta_true=s_res)
    assert p.power == pytest.approx(0.8, abs=1e-8)
    assert set(p.frame["term"].dropna()) == set(names)
    with pytest.raises(SpecificationError, match="together with a result"):
        ti.pretrend_power(r, sig, delta_true=0.1)
    # the tidy frame (ti.table, ti.plot_event_study): the result's own event-time rows,
    # reference period left out, normal intervals at the pre-test's level
    t = p.to_frame().set_index("term")
    own = fr.set_index("term")
    assert list(t.index) == names and "rel_time=-1" not in t.index
    np.testing.assert_allclose(t["estimate"], own["estimate"], rtol=1e-12)
    np.testing.assert_allclose(t["std_error"], own["std_error"], rtol=1e-12)
    z = stats.norm.ppf(0.975)
    np.testing.assert_allclose(t["ci_upper"] - t["estimate"], z * t["std_error"], rtol=1e-12)
    np.testing.assert_allclose(t["p_value"],
                               2 * stats.norm.sf(np.abs(t["estimate"] / t["std_error"])))
    t90 = p.to_frame(alpha=0.1).set_index("term")
    np.testing.assert_allclose(t90["ci_lower"],
                               t["estimate"] - stats.norm.ppf(0.95) * t["std_error"])
    delta = s_res * (t["rel_time"] + 1)
    np.testing.assert_allclose(t["delta_true"], delta, rtol=1e-12, atol=1e-15)


def test_bad_inputs_are_named_errors():
    with pytest.raises(SpecificationError, match="rel_times is required"):
        ti.slope_for_power(SIGMA, target_power=0.5)
    with pytest.raises(SpecificationError, match="between the pre-test's size and 1"):
        ti.slope_for_power(SIGMA, target_power=0.01, rel_times=TVEC)
    with pytest.raises(SpecificationError, match="no pre-treatment coefficient"):
        ti.slope_for_power(SIGMA, target_power=0.5, rel_times=TVEC, ref=-10)
    with pytest.raises(InputError, match="one entry per coefficient"):
        ti.pretrend_power(BETA, SIGMA, rel_times=TVEC, delta_true=[0.1, 0.2])
    with pytest.raises(InputError, match="7 x 7"):
        ti.pretrend_power(BETA, SIGMA[:6, :6], rel_times=TVEC, delta_true=0.1)


def test_imputation_leads_are_refused_with_the_reason(mpdta):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imp = ti.imputation(mpdta, outcome="lemp", unit="countyreal", time="year",
                            cohort="first.treat", horizons=[0, 1], pretrends=2)
    with pytest.raises(SpecificationError, match="before the first lead"):
        ti.pretrend_power(imp, delta_true=0.01)
