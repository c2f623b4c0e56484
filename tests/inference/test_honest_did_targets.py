"""HonestDiD on every event-study result: target="overall", refusals, adaptive grid,
breakdown value."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import twinimpact as ti
from twinimpact.errors import NotComputableWarning, SpecificationError
from twinimpact.inference.honest_did import breakdown_value, honest_did, overall_weights

KW = {"outcome": "lemp", "unit": "countyreal", "time": "year", "cohort": "first.treat"}


def _post_terms(r):
    return [n for n in r.terms if n.startswith("rel_time=") and int(n.split("=")[1]) >= 0]


@pytest.fixture(scope="module")
def results(mpdta):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "event_study": ti.event_study(mpdta, **KW, leads=4, lags=3),
            "cs_dynamic": ti.callaway_santanna(mpdta, **KW, base_period="universal"
                                               ).aggregate("dynamic"),
            "sun_abraham": ti.sun_abraham(mpdta, **KW),
            "did2s": ti.did2s(mpdta, **KW, event_study=True),
            "etwfe_dynamic": ti.etwfe(mpdta, **KW, control_group="never_treated"
                                      ).aggregate("dynamic"),
        }


def test_overall_weights_are_each_results_own(results, mpdta):
    eq = np.full(4, 0.25)
    np.testing.assert_allclose(overall_weights(results["event_study"],
                                               _post_terms(results["event_study"])), eq,
                               atol=1e-10)
    np.testing.assert_allclose(overall_weights(results["cs_dynamic"],
                                               _post_terms(results["cs_dynamic"])), eq,
                               atol=1e-10)
    # Sun-Abraham: post cells weighted by their number of observations (fixest agg="att")
    sa = results["sun_abraham"]
    cells = sa.interactions
    post = cells[cells["rel_time"] >= 0]
    n_e = post.groupby("rel_time")["n_obs"].sum()
    np.testing.assert_allclose(overall_weights(sa, _post_terms(sa)),
                               (n_e / n_e.sum()).to_numpy(), atol=1e-10)
    # etwfe (never-treated controls): R emfx's simple ATT weights post cells by size
    et = results["etwfe_dynamic"]
    np.testing.assert_allclose(overall_weights(et, _post_terms(et)),
                               (n_e / n_e.sum()).to_numpy(), atol=1e-10)
    # did2s: the static ATT averages treated observations; mpdta: the same cell shares
    d2 = results["did2s"]
    treated = mpdta[(mpdta["first.treat"] > 0) & (mpdta["year"] >= mpdta["first.treat"])]
    share = (treated["year"] - treated["first.treat"]).value_counts(normalize=True).sort_index()
    np.testing.assert_allclose(overall_weights(d2, _post_terms(d2)), share.to_numpy(),
                               atol=1e-10)


@pytest.mark.parametrize("name", ["event_study", "cs_dynamic", "sun_abraham", "did2s",
                                  "etwfe_dynamic"])
def test_target_overall_original_row_is_the_att(results, name):
    r = results[name]
    out = honest_did(r, target="overall", m_values=[0.0, 1.0])
    se = float(r.std_errors["ATT"])
    att = float(r.params["ATT"])
    assert out.attrs["estimate"] == pytest.approx(att, abs=1e-10)
    assert out.attrs["std_error"] == pytest.approx(se, rel=1e-8)
    orig = out.iloc[0]
    assert orig["lb"] == pytest.approx(att - 1.959963984540054 * se, rel=1e-8)
    # robust sets widen with Mbar
    assert out.iloc[2]["lb"] <= out.iloc[1]["lb"] and out.iloc[2]["ub"] >= out.iloc[1]["ub"]


def test_target_rel_time_equals_basis_l_vec(results):
    r = results["event_study"]
    a = honest_did(r, target=2, m_values=[0.5])
    b = honest_did(r, l_vec=[0, 0, 1, 0], m_values=[0.5])
    np.testing.assert_allclose(a[["lb", "ub"]], b[["lb", "ub"]])
    with pytest.raises(SpecificationError, match="post-treatment relative period"):
        honest_did(r, target=7)
    with pytest.raises(SpecificationError, match="not both"):
        honest_did(r, target=0, l_vec=[1, 0, 0, 0])


def test_overall_refused_when_att_uses_dropped_periods(results):
    with pytest.raises(SpecificationError, match="not a weighted sum"):
        honest_did(results["event_study"], target="overall", num_post=2)


def test_varying_base_and_imputation_are_refused_with_reason(mpdta):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cs = ti.callaway_santanna(mpdta, **KW).aggregate("dynamic")
        imp = ti.imputation(mpdta, **KW, horizons=[0, 1, 2, 3], pretrends=3)
    with pytest.raises(SpecificationError, match=r"short differences|base_period='varying'"):
        honest_did(cs, target="overall")
    with pytest.raises(SpecificationError, match=r"did2s\(\.\.\., event_study=True\)"):
        honest_did(imp, target="overall")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        et = ti.etwfe(mpdta, **KW).aggregate("dynamic")  # not-yet-treated controls
    with pytest.raises(SpecificationError, match="no pre-treatment coefficients"):
        honest_did(et, target="overall")


def test_hook_declared_att_weights(results):
    """A result may declare its ATT weights (extras['att_weights']; etwfe hook)."""
    r = results["event_study"]
    names = _post_terms(r)
    declared = r.replace(extras={"att_weights": dict.fromkeys(names, 0.25)})
    np.testing.assert_allclose(overall_weights(declared, names), 0.25)
    wrong = r.replace(extras={"att_weights": {names[0]: 1.0}})
    with pytest.raises(SpecificationError, match="not a weighted sum"):
        overall_weights(wrong, names)


# ---------------------------------------------------------------- adaptive grid (t ~ 39)
BIG_T = (np.array([0.02, -0.03, 0.01, 3.9, 4.1]), np.diag([0.01] * 5))  # t = 3.9/0.1 = 39


def test_r_grid_gives_nan_at_t39_adaptive_gives_finite_bounds():
    b, s = BIG_T
    with pytest.warns(NotComputableWarning, match="empty"):
        r_like = honest_did(b, s, num_pre=3, num_post=2, grid="r", m_values=[0.0, 1.0])
    assert r_like.iloc[1:][["lb", "ub"]].isna().all().all()  # R HonestDiD's behaviour
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotComputableWarning)
        ours = honest_did(b, s, num_pre=3, num_post=2, m_values=[0.0, 1.0])
    rob = ours.iloc[1:]
    assert np.isfinite(rob[["lb", "ub"]].to_numpy()).all()
    assert (rob["lb"] < 3.9).all() and (rob["ub"] > 3.9).all()
    # at Mbar = 0 with no pre-trend the robust set is close to the original interval
    assert rob.iloc[0]["lb"] == pytest.approx(3.9 - 1.96 * 0.1, abs=0.02)
    grids = ours.attrs["grids"]
    assert all(lo > 0 for _, lo, _ in grids)  # re-centred on the estimate


def test_adaptive_equals_r_grid_when_r_grid_works(results):
    r = results["event_study"]
    a = honest_did(r, target="overall", m_values=[0.0, 0.5])
    b = honest_did(r, target="overall", m_values=[0.0, 0.5], grid="r")
    pd.testing.assert_frame_equal(a, b)


# ---------------------------------------------------------------- breakdown value
def _brute_force_last_excluding(frame):
    rob = frame.iloc[1:]
    ex = (rob["lb"] > 0) | (rob["ub"] < 0)
    ms = rob["m"].to_numpy()
    return ms[ex.to_numpy()].max() if ex.any() else np.nan, ms


@pytest.mark.slow
def test_breakdown_relative_magnitudes_matches_brute_force_grid(results):
    r = results["did2s"]
    bd = breakdown_value(r, target="overall")
    grid_m = np.linspace(0.0, 2 * bd, 21)
    frame = honest_did(r, target="overall", m_values=grid_m, grid_points=2001)
    last, ms = _brute_force_last_excluding(frame)
    step = ms[1] - ms[0]
    assert last <= bd + 1e-9 and bd < last + step + 1e-9


@pytest.mark.slow
def test_breakdown_smoothness_matches_brute_force_grid(results):
    r = results["event_study"]
    bd = breakdown_value(r, target="overall", restriction="smoothness")
    grid_m = np.linspace(0.0, 2 * bd, 21)
    frame = honest_did(r, target="overall", m_values=grid_m, restriction="smoothness")
    last, ms = _brute_force_last_excluding(frame)
    step = ms[1] - ms[0]
    assert last <= bd + 1e-12 and bd < last + step
    # and right at the breakdown value the FLCI's nearer bound is at zero
    at = honest_did(r, target="overall", m_values=[bd], restriction="smoothness").iloc[1]
    assert min(abs(at["lb"]), abs(at["ub"])) < 1e-3 * (at["ub"] - at["lb"])


@pytest.mark.slow
def test_breakdown_edge_cases():
    b, s = BIG_T
    bd = breakdown_value(b, s, num_pre=3, num_post=2)
    assert np.isfinite(bd) and bd > 2
    # just below the breakdown value the set excludes zero, just above it does not
    near = honest_did(b, s, num_pre=3, num_post=2, m_values=[0.99 * bd, 1.01 * bd])
    assert near.iloc[1]["lb"] > 0 and near.iloc[2]["lb"] <= 0
    flat = np.array([0.02, -0.03, 0.01, 0.05, 0.0])  # not significant even at m = 0
    with pytest.warns(NotComputableWarning, match="no breakdown value"):
        assert np.isnan(breakdown_value(flat, s, num_pre=3, num_post=2,
                                        restriction="smoothness"))


def test_plot_marks_the_breakdown_value():
    b, s = BIG_T
    frame = honest_did(b, s, num_pre=3, num_post=2, m_values=[0.0, 1.0, 2.0])
    ax = ti.plot_honest_did(frame, breakdown=1.5)
    marks = [ln for ln in ax.get_lines() if list(ln.get_xdata()) == [1.5, 1.5]]
    assert len(marks) == 1 and "breakdown value 1.5" in ax.get_legend_handles_labels()[1]
