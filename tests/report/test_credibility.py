"""Credibility checks: verdicts follow from the numbers, by the documented thresholds."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import twinimpact as ti
from twinimpact.diagnostics import credibility as cr
from twinimpact.report.plain import plain_warning

KW = {"outcome": "lemp", "unit": "countyreal", "time": "year", "cohort": "first.treat"}
ROLES = {"outcome": "lemp", "unit": "countyreal", "time": "year", "cohort": "first.treat"}


@pytest.fixture(scope="module")
def assessed(mpdta):
    frame = mpdta.assign(**{"first.treat": mpdta["first.treat"].where(
        mpdta["first.treat"] > 0)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = {
            "TWFE (static)": ti.twfe(frame, **KW),
            "TWFE event study": ti.event_study(frame, **KW, leads=3, lags=3),
            "CS (universal)": ti.callaway_santanna(frame, **KW, base_period="universal"
                                                   ).aggregate("dynamic"),
            "CS (varying)": ti.callaway_santanna(frame, **KW).aggregate("dynamic"),
        }
        cred = cr.assess_credibility(results, frame=frame, roles=ROLES,
                                     headline="CS (universal)", honest=False)
    return results, cred


@pytest.fixture(scope="module")
def assessed_honest(assessed, mpdta):
    results, _ = assessed
    frame = results_frame(mpdta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cred = cr.assess_credibility(results, frame=frame, roles=ROLES,
                                     headline="CS (universal)", honest=True)
    return results, cred


def _grade(value, holds, weak, higher=True):
    if higher:
        return "holds" if value >= holds else "weak" if value >= weak else "fails"
    return "holds" if value < holds else "weak" if value < weak else "fails"


def test_every_verdict_agrees_with_its_numbers(assessed):
    _, cred = assessed
    seen = set()
    for c in cred.checks:
        seen.add(c.name)
        d = c.detail
        assert c.verdict in {"holds", "weak", "fails", "not applicable"}
        assert c.sentence and c.rests_on
        if c.verdict == "not applicable":
            continue
        if c.name == "Pre-trend test":
            p = d.get("extension_p_value", d["p_value"])
            assert c.verdict == _grade(p, cr.PRETEST_P_HOLDS, cr.PRETEST_P_WEAK)
        elif c.name == "Power of the pre-trend test":
            assert c.verdict == _grade(d["power"], cr.POWER_HOLDS, cr.POWER_WEAK)
            assert f"{d['power']:.0%}" in c.sentence
        elif c.name.startswith("Sensitivity"):
            assert c.verdict == _grade(d["breakdown_mbar"], cr.BREAKDOWN_HOLDS,
                                       cr.BREAKDOWN_WEAK)
        elif c.name.startswith("Comparisons with already-twinned"):
            assert c.verdict == _grade(d["forbidden_share"], cr.FORBIDDEN_HOLDS,
                                       cr.FORBIDDEN_WEAK, higher=False)
        elif c.name == "Number of treated clusters":
            assert d["treated_clusters"] == 191  # mpdta: 191 treated counties
            assert c.verdict == "holds"
    assert {"Pre-trend test", "Power of the pre-trend test", "Agreement across methods",
            "Number of treated clusters"} <= seen


def test_numbers_are_the_diagnostics_themselves(assessed, mpdta):
    results, cred = assessed
    cs = results["CS (universal)"]
    power = next(c for c in cred.for_estimator("CS (universal)")
                 if c.name == "Power of the pre-trend test")
    from twinimpact.inference.pretrend_power import power_against_att_se

    assert power.detail["power"] == pytest.approx(power_against_att_se(cs)["power"])
    bacon = next(c for c in cred.for_estimator("TWFE (static)") if c.name.startswith("Comp"))
    b = ti.bacon_decomposition(results_frame(mpdta), **KW)
    assert bacon.detail["forbidden_share"] == pytest.approx(b.forbidden_share)
    assert bacon.detail["twfe_balanced"] == pytest.approx(
        float(results["TWFE (static)"].params["ATT"]))  # mpdta is balanced


def results_frame(mpdta):
    return mpdta.assign(**{"first.treat": mpdta["first.treat"].where(mpdta["first.treat"] > 0)})


@pytest.mark.slow
def test_sensitivity_verdicts_and_reasons(assessed_honest):
    _, cred = assessed_honest
    test_every_verdict_agrees_with_its_numbers(assessed_honest)
    test_overall_is_the_worst_headline_check(assessed_honest)
    assert cred.sensitivity is not None and cred.sensitivity[0] == "CS (universal)"
    hd = next(c for c in cred.for_estimator("CS (varying)") if c.name.startswith("Sensitivity"))
    assert hd.verdict == "not applicable"
    assert "base_period='varying'" in hd.technical and "base_period" not in hd.rests_on
    assert "one common reference year" in hd.sentence and "=" not in hd.sentence


def test_overall_is_the_worst_headline_check(assessed):
    _, cred = assessed
    mine = [c for c in cred.checks if c.estimator in ("CS (universal)", "all methods")
            and c.verdict in ("holds", "weak", "fails")]
    order = {"holds": 0, "weak": 1, "fails": 2}
    assert cred.overall == max((c.verdict for c in mine), key=order.get)
    assert cred.overall_sentence
    frame = cred.to_frame()
    assert {"estimator", "check", "verdict", "in words", "rests on"} <= set(frame.columns)


def test_plain_warnings():
    raw = ("Callaway-Sant'Anna: callaway_santanna: 3 ATT(g,t) could not be computed and are "
           "NaN: ATT(1913,1872): no observations of the cohort in period t / ...")
    assert plain_warning(raw) == (
        "Callaway-Sant'Anna: 3 cohort-year effects could not be computed (no comparison "
        "partners in those years) and are left out of the averages.")
    raw2 = "Imputation: imputation: cohorts {'1913': 1, '1920': 1} have one unit. More text."
    out = plain_warning(raw2)
    assert "{" not in out and "More text" not in out and out.startswith("Imputation: ")
    assert np.isfinite(len(out))


def test_few_treated_clusters_get_the_wild_bootstrap():
    rng = np.random.default_rng(5)
    n, t = 24, 8
    import pandas as pd

    d = pd.DataFrame({"u": np.repeat(np.arange(n), t), "year": np.tile(np.arange(2000, 2008), n)})
    d["g"] = np.where(d["u"] < 12, 2004.0, np.nan)
    d["y"] = rng.normal(size=len(d)) + 0.8 * (d["year"] >= d["g"])
    roles = {"outcome": "y", "unit": "u", "time": "year", "cohort": "g"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = ti.twfe(d, outcome="y", unit="u", time="year", cohort="g")
        chk = cr._clusters_check("TWFE", r, d, roles, 0.05, 0)
        wb = ti.wild_cluster_bootstrap(d.assign(_D=(d["year"] >= d["g"]).astype(float)),
                                       outcome="y", regressors=["_D"], cluster="u", term="_D",
                                       fixed_effects=("u", "year"), n_reps=cr.WCB_REPS, seed=0)
    assert chk.detail["treated_clusters"] == 12 and chk.detail["clusters"] == 24
    assert chk.detail["wild_bootstrap_p"] == pytest.approx(wb.p_value)
    agree = (wb.p_value < 0.05) == (chk.detail["usual_p"] < 0.05)
    assert chk.verdict == ("holds" if agree else "weak")
    assert f"p = {wb.p_value:.3g}" in chk.sentence


def test_typed_pretrend_test_without_statistic_is_graded_on_the_extension(assessed):
    """A result whose typed pre-trend test is undefined (singular covariance) is graded on
    the Bonferroni max-|t| test of the same terms, computed from the result itself."""
    from types import SimpleNamespace

    results, _ = assessed
    es = results["TWFE event study"]
    pre = [t for t in es.terms if t.startswith("rel_time=-")]
    typed = SimpleNamespace(statistic=np.nan, df=len(pre), p_value=np.nan, kind="Wald chi2",
                            n_coefficients=len(pre), terms=tuple(pre),
                            note="not computed: singular covariance")
    fake = SimpleNamespace(pretrend_test=typed, params=es.params, vcov=es.vcov,
                           terms=es.terms, term_info=es.term_info, diagnostics={})
    chk = cr._pretest_check("fake", fake, 0.05)
    from twinimpact.inference.wald import bonferroni_max_t

    b = es.params[pre].to_numpy()
    v = es.vcov.loc[pre, pre].to_numpy()
    p = bonferroni_max_t(b, v)["p_value"]
    assert chk.detail["extension_p_value"] == pytest.approx(p)
    assert chk.verdict == _grade(p, cr.PRETEST_P_HOLDS, cr.PRETEST_P_WEAK)
    assert "not computed: singular covariance" in chk.technical   # the appendix's words
    assert "the largest of the 2 before-twinning estimates" in chk.rests_on  # the reader's


def test_headline_without_leads_is_judged_by_its_companion_fit(mpdta):
    """ETWFE with not-yet-treated controls has no leads: the overall verdict uses the
    pre-trend checks of the same estimator fitted with never-treated controls (placebo
    leads), and says so."""
    frame = mpdta.assign(**{"first.treat": mpdta["first.treat"].where(
        mpdta["first.treat"] > 0)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = {
            "ETWFE": ti.etwfe(frame, **KW).aggregate("dynamic"),
            "ETWFE, never treated": ti.etwfe(frame, **KW, control_group="never_treated"
                                             ).aggregate("dynamic"),
        }
        cred = cr.assess_credibility(results, frame=frame, roles=ROLES, headline="ETWFE",
                                     honest=False)
    own = [c for c in cred.checks if c.estimator == "ETWFE" and c.verdict in cr._RANK]
    assert own == []
    companion = [c for c in cred.checks
                 if c.estimator == "ETWFE, never treated" and c.verdict in cr._RANK]
    assert companion
    ranks = [cr._RANK[c.verdict] for c in companion]
    agreement = next(c for c in cred.checks if c.estimator == "all methods")
    if agreement.verdict in cr._RANK:
        ranks.append(cr._RANK[agreement.verdict])
    assert cr._RANK[cred.overall] == max(ranks)
    assert "ETWFE, never treated" in cred.overall_sentence


def test_table_and_plot_take_the_checks(assessed, tmp_path):
    """ti.table renders the checks (a table of verdicts) in every format; mixing them with
    estimates, or plotting them as an event study, is refused with a named error."""
    from twinimpact.errors import SpecificationError

    results, cred = assessed
    frame = ti.table(cred, "frame")
    assert list(frame.columns) == ["Method", "Check", "Verdict", "In plain words", "Rests on"]
    assert len(frame) == len(cred.checks)
    assert list(frame["Verdict"]) == [c.verdict for c in cred.checks]
    md = ti.table(cred, "markdown")
    assert md.splitlines()[0].startswith("| Method | Check | Verdict |")
    assert len(md.splitlines()) == 2 + len(cred.checks)
    assert "<td>" + cred.checks[0].estimator in ti.table(cred, "html")
    assert r"\begin{tabular}{lllll}" in ti.table(cred, "latex")
    out = ti.table({"mpdta": cred}, "xlsx", path=tmp_path / "checks.xlsx")
    import pandas as pd

    back = pd.read_excel(tmp_path / "checks.xlsx", sheet_name="checks")
    assert list(back["Check"]) == list(out["Check"])
    assert "Overall: " in cred.summary() and "{'" not in cred.summary()
    with pytest.raises(SpecificationError, match="credibility checks"):
        ti.table({"checks": cred, "TWFE": results["TWFE (static)"]})
    with pytest.raises(SpecificationError, match=r"event-time.*Credibility"):
        ti.plot_event_study(cred)


def test_sensitivity_not_applicable_names_what_it_tests(assessed, monkeypatch):
    """When HonestDiD's interval contains zero at Mbar = 0, the sentence names the quantity
    it tested (for an event study without an overall weighting: the average of the
    year-by-year effects in the window), not 'the estimate' the reader sees elsewhere."""
    import twinimpact.inference.honest_did as honest

    results, _ = assessed
    monkeypatch.setattr(honest, "breakdown_value", lambda *a, **k: float("nan"))
    res = results["TWFE event study"]
    c = cr._honest_check("TWFE event study", res, 0.05)
    _, what = cr._target(res)
    assert c.verdict == "not applicable"
    assert c.sentence.startswith(what[0].upper() + what[1:] + " is not distinguishable")
    assert what in c.rests_on and what in c.technical


def test_public_entry_point_reads_the_columns_from_the_results(assessed, mpdta):
    """``ti.assess_credibility`` is public; without ``roles`` it takes the column names from
    the results' specifications, so a library user on their own frame (here mpdta, whose
    columns are not the panel's ``unit_id`` / ``year``) gets the same checks as with
    ``roles`` spelled out."""
    results, cred = assessed
    assert "assess_credibility" in ti.__all__ and "Credibility" in ti.__all__
    frame = mpdta.assign(**{"first.treat": mpdta["first.treat"].where(
        mpdta["first.treat"] > 0)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mine = ti.assess_credibility(results, frame=frame, headline="CS (universal)",
                                     honest=False)
    assert isinstance(mine, ti.Credibility)
    assert mine.to_frame().equals(cred.to_frame())
    names = {c.name for c in mine.checks}
    assert any("Goodman-Bacon" in n for n in names)  # needs the unit/time/cohort columns
    assert mine.overall == cred.overall
    assert cr._roles_from_specs({}) == {"outcome": "outcome", "unit": "unit_id",
                                        "time": "year", "cohort": "cohort"}
