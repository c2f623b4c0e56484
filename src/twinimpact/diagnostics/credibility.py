""""Can we trust this?": the credibility checks every study runs, with plain verdicts.

(Computation only; :mod:`twinimpact.report.trust_html` renders them and
:func:`twinimpact.studies.runner.run_study` runs them for every study.)

For each estimator of a study, :func:`assess_credibility` runs the diagnostics a referee
asks for and turns each into a verdict -- ``"holds"``, ``"weak"``, ``"fails"`` or
``"not applicable"`` (always with the reason) -- with one sentence a non-economist can read
and the numbers it rests on:

* **Pre-trend test** -- the estimator's joint test that every pre-treatment coefficient is
  zero (its typed ``pretrend_test``; for results without one, the Wald test on the
  pre-period coefficients and their covariance). p >= 0.10 holds, 0.05-0.10 weak, < 0.05
  fails. Where the covariance is singular the identified-directions Wald test is used and
  said to be an extension.
* **Power of that pre-test** (Roth 2022) against the linear trend that would move the
  estimator's own ATT by one standard error
  (:func:`twinimpact.inference.pretrend_power.power_against_att_se`): >= 80% holds,
  50-80% weak, < 50% fails (a passed pre-test then says little).
* **Sensitivity** (Rambachan & Roth 2023): the breakdown value of ``Mbar`` -- how large
  post-treatment violations of parallel trends, relative to the largest pre-treatment
  one, the conclusion "the effect is not zero" survives
  (:func:`twinimpact.inference.honest_did.breakdown_value`, relative magnitudes, C-LF, for
  the result's own overall ATT): >= 1 holds, 0.5-1 weak, < 0.5 fails.
* **Forbidden comparisons** (static TWFE, Goodman-Bacon 2021): the weight on 2x2
  comparisons whose control units were already treated: < 10% holds, 10-25% weak,
  >= 25% fails. Computed on the balanced part of the panel when the panel is unbalanced.
* **Number of treated clusters**: >= 30 holds (cluster-robust standard errors are
  reliable); below, the restricted wild cluster bootstrap p-value of the static TWFE
  effect (Roodman et al. 2019) is reported: the verdict is weak when it and the usual
  p-value fall on different sides of ``alpha``, holds otherwise; fewer than 10 treated
  clusters are at best weak.
* **Agreement across methods**: fails when two methods find significant effects of
  opposite sign, weak when their estimates differ by more than two median standard
  errors, holds otherwise; each method's comparison group is named, which is why they
  differ.

The overall verdict for the headline estimator is the worst of its checks and of the
agreement check ("not applicable" ignored). A headline with no pre-period estimates of its
own (ETWFE with not-yet-treated controls) is judged by the checks of the same estimator's
companion fit in the study that has them (never-treated controls with placebo leads), and
the verdict sentence says so. Thresholds are the named constants below.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["THRESHOLDS", "Check", "Credibility", "assess_credibility"]

HOLDS, WEAK, FAILS, NA = "holds", "weak", "fails", "not applicable"
_RANK = {HOLDS: 0, WEAK: 1, FAILS: 2}

PRETEST_P_HOLDS = 0.10
PRETEST_P_WEAK = 0.05
POWER_HOLDS = 0.80
POWER_WEAK = 0.50
BREAKDOWN_HOLDS = 1.0
BREAKDOWN_WEAK = 0.5
FORBIDDEN_HOLDS = 0.10
FORBIDDEN_WEAK = 0.25
CLUSTERS_ENOUGH = 30
CLUSTERS_FEW = 10
WCB_REPS = 999
#: the thresholds above, carried by every Credibility (the report prints them)
THRESHOLDS = {"PRETEST_P_HOLDS": PRETEST_P_HOLDS, "PRETEST_P_WEAK": PRETEST_P_WEAK,
              "POWER_HOLDS": POWER_HOLDS, "POWER_WEAK": POWER_WEAK,
              "BREAKDOWN_HOLDS": BREAKDOWN_HOLDS, "BREAKDOWN_WEAK": BREAKDOWN_WEAK,
              "FORBIDDEN_HOLDS": FORBIDDEN_HOLDS, "FORBIDDEN_WEAK": FORBIDDEN_WEAK,
              "CLUSTERS_ENOUGH": CLUSTERS_ENOUGH, "CLUSTERS_FEW": CLUSTERS_FEW,
              "WCB_REPS": WCB_REPS}

#: the comparisons each estimator family uses (why they differ)
COMPARISONS = {
    "twfe": "every pair of groups, including partners already twinned used as the comparison "
            "for partners twinned later",
    "event_study": "every pair of groups in a regression with one coefficient per year around "
                   "twinning; already-twinned partners can serve as comparisons",
    "callaway_santanna": "each twinning cohort against partners not twinned at the time "
                         "(never or not yet), year by year",
    "sun_abraham": "each twinning cohort against never-twinned (or last-twinned) partners",
    "imputation": "the untwinned years of all partners, used to predict what twinned partners "
                  "would have traded without twinning",
    "did2s": "the untwinned years of all partners, used to remove partner and year effects "
             "before comparing",
    "etwfe": "each cohort-year cell against not-yet (or never) twinned partners",
    "synthetic_did": "a weighted mix of untwinned partners that tracks the twinned ones "
                     "before twinning",
}


@dataclass(frozen=True)
class Check:
    """One credibility check of one estimator.

    ``sentence`` and ``rests_on`` are plain words for readers of the report (what the
    verdict says and the evidence it rests on); ``technical`` is the same basis for an
    economist, with the names of tests, options and the error text of a check that could
    not run (the report's technical appendix shows it). ``detail`` holds the numbers."""

    estimator: str
    name: str
    verdict: str
    sentence: str
    rests_on: str
    detail: dict[str, Any] = field(default_factory=dict)
    technical: str = ""


@dataclass(frozen=True)
class Credibility:
    """All checks, and the one-line overall verdict for the headline estimator."""

    checks: tuple[Check, ...]
    headline: str | None
    overall: str
    overall_sentence: str
    #: objects for the figures: the Bacon decomposition, (label, result) for the pre-trend
    #: power picture, (label, honest_did frame, breakdown) for the sensitivity picture
    bacon: Any = None
    power_result: tuple[str, Any] | None = None
    sensitivity: tuple[str, pd.DataFrame, float] | None = None
    thresholds: dict[str, float] = field(default_factory=lambda: dict(THRESHOLDS))

    def for_estimator(self, label: str) -> list[Check]:
        return [c for c in self.checks if c.estimator == label]

    def table_frame(self) -> pd.DataFrame:
        """The checks as a table for readers (what ``ti.table`` shows): method, check,
        verdict, the sentence and what it rests on."""
        return pd.DataFrame(
            [{"Method": c.estimator, "Check": c.name, "Verdict": c.verdict,
              "In plain words": c.sentence, "Rests on": c.rests_on} for c in self.checks],
            columns=["Method", "Check", "Verdict", "In plain words", "Rests on"])

    def summary(self) -> str:
        """Plain-text summary: the overall verdict, then one line per check."""
        lines = [f"twinimpact · credibility checks (headline: {self.headline or 'none'})",
                 f"Overall: {self.overall}. {self.overall_sentence}"]
        lines += [f"- {c.estimator} · {c.name}: {c.verdict}. {c.sentence} Rests on: "
                  f"{c.rests_on}." for c in self.checks]
        return "\n".join(lines)

    def to_frame(self) -> pd.DataFrame:
        """One row per check, technical detail flattened (for the appendix / Excel)."""
        rows = []
        for c in self.checks:
            row = {"estimator": c.estimator, "check": c.name, "verdict": c.verdict,
                   "in words": c.sentence, "rests on": c.rests_on,
                   "technical basis": c.technical or c.rests_on}
            for k, v in c.detail.items():
                row[k] = v if isinstance(v, int | float | str | bool) or v is None else str(v)
            rows.append(row)
        return pd.DataFrame(rows)


def _p_words(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3g}"


def _not_available(exc: Exception) -> tuple[str, str, str]:
    """(plain sentence, plain basis, technical reason) for a check a method does not
    support; the technical reason (option names, the error text) goes to the appendix."""
    why = str(exc).split(" Where:")[0].split(" Fix:")[0].rstrip(".")
    low = why.lower()
    if "imputation" in low:
        plain = ("Not available for this method: its before-twinning estimates are measured "
                 "against an earlier baseline, not the year before twinning. The two-stage "
                 "DiD estimates the same effects and supports this check.")
        basis = ("how this method measures its before-twinning estimates (against an "
                 "earlier baseline)")
    elif "varying" in low:
        plain = ("Not available for this method as run: its before-twinning estimates "
                 "compare each year with the year before. Re-running it with one common "
                 "reference year for all before-twinning estimates (an option of the method, "
                 "named in the technical appendix) makes this check possible.")
        basis = ("how this method was run: each before-twinning estimate compares a year with "
                 "the year before, not with one common reference year")
        why += ". Fix: re-run with base_period='universal'"
    elif "no pre-treatment" in low or "no event-time" in low:
        plain = "Not available: this method reports no years before twinning."
        basis = "the method reports no years before twinning"
    else:
        plain = "Not available for this method (the technical reason is in the appendix)."
        basis = "what this method reports does not support the check"
    return plain, basis, why


def _grade(value: float, holds: float, weak: float, *, higher_is_better: bool = True) -> str:
    if higher_is_better:
        return HOLDS if value >= holds else WEAK if value >= weak else FAILS
    return HOLDS if value < holds else WEAK if value < weak else FAILS


def _family(result: Any) -> str:
    est = str(getattr(result, "estimator", ""))
    for key in ("callaway_santanna", "sun_abraham", "imputation", "did2s", "etwfe",
                "synthetic_did", "event_study", "twfe"):
        if key in est:
            return key
    return est.split("[")[0].split("/")[0]


def _pre_terms(result: Any) -> list[str]:
    info = getattr(result, "term_info", None)
    if info is None or "rel_time" not in info.columns:
        return []
    rel = info["rel_time"]
    return [t for t in result.terms if np.isfinite(rel.get(t, np.nan)) and rel[t] < 0]


def _pretrend_numbers(result: Any) -> dict[str, Any] | None:
    """statistic, df, p_value, kind (and note) of the result's joint pre-trend test."""
    typed = getattr(result, "pretrend_test", None)
    if typed is not None and hasattr(typed, "p_value"):
        out = {k: getattr(typed, k, None) for k in ("statistic", "df", "p_value", "kind",
                                                      "n_coefficients")}
        for k in ("reason", "note", "extension"):
            if getattr(typed, k, None):
                out[k] = getattr(typed, k)
        terms = [t for t in (getattr(typed, "terms", ()) or ()) if t in result.terms]
        p = out.get("p_value")
        if (p is None or not np.isfinite(float(p))) and "extension" not in out and terms:
            out["extension"] = _identified_extension(result, terms)
        return out
    pre = _pre_terms(result)
    if not pre:
        return None
    from ..inference.wald import wald_identified

    b = result.params[pre].to_numpy(dtype=float)
    v = result.vcov.loc[pre, pre].to_numpy(dtype=float)
    if not (np.all(np.isfinite(b)) and np.all(np.isfinite(v))):
        return None
    w = wald_identified(b, v)
    out = {"statistic": w["statistic"], "df": w["df"], "p_value": w["p_value"],
           "kind": "Wald chi2 on the pre-period coefficients", "n_coefficients": len(pre)}
    if w["rank"] < len(pre):
        out["kind"] = w["kind"]
        out["note"] = (f"covariance of the {len(pre)} pre-period coefficients is singular "
                       f"(rank {w['rank']}); pseudo-inverse Wald on the identified directions")
    return out


def _identified_extension(result: Any, terms: list[str]) -> dict[str, Any] | None:
    """Pseudo-inverse Wald and Bonferroni max-|t| tests of the given pre-period terms
    (used when the result's own joint test is undefined)."""
    from ..inference.wald import bonferroni_max_t, wald_identified

    b = result.params[terms].to_numpy(dtype=float)
    v = result.vcov.loc[terms, terms].to_numpy(dtype=float)
    keep = np.isfinite(b) & np.isfinite(np.diag(v))
    if not keep.any():
        return None
    b, v = b[keep], v[np.ix_(keep, keep)]
    if not np.all(np.isfinite(v)):
        return None
    return {**wald_identified(b, v), "bonferroni": bonferroni_max_t(b, v)}


def _pretest_check(label: str, result: Any, alpha: float) -> Check:
    name = "Pre-trend test"
    t = _pretrend_numbers(result)
    if t is None:
        return Check(label, name, NA, "This method reports no years before twinning, so "
                     "there is nothing to test.", "the method reports no years before "
                     "twinning", {}, technical="no pre-treatment coefficients")
    p = t.get("p_value")
    detail = {k: t.get(k) for k in ("statistic", "df", "p_value", "kind")}
    ext = t.get("extension")
    rests = f"{t.get('kind') or 'joint test'}"
    n_pre = t.get("n_coefficients")
    years = f"the {n_pre} before-twinning estimates" if n_pre else "the before-twinning estimates"
    plain = f"the joint test that {years} are all zero"
    if p is None or not np.isfinite(float(p)):
        bon = (ext or {}).get("bonferroni")
        if ext and np.isfinite(float(ext.get("p_value", np.nan))):
            detail.update(extension_statistic=ext.get("statistic"), extension_df=ext.get("df"),
                          extension_wald_p_value=float(ext["p_value"]))
        if bon and np.isfinite(float(bon.get("p_value", np.nan))):
            # the max-|t| Bonferroni test is valid whatever the rank; the pseudo-inverse
            # Wald can explode on nearly-null directions, so it is reported, not graded
            p = float(bon["p_value"])
            detail.update(extension_p_value=p, extension_kind=bon.get("kind"))
            rests = (f"{t.get('note') or 'the usual test is undefined'}; graded instead on "
                     f"the {bon.get('kind')} over {bon.get('n_coefficients')} coefficients "
                     "(an extension)")
            plain = (f"the usual joint test cannot be computed here, so the largest of "
                     f"{years} relative to its standard error is tested instead, allowing for "
                     f"the number of years tested")
        elif ext and np.isfinite(float(ext.get("p_value", np.nan))):
            p = float(ext["p_value"])
            detail.update(extension_p_value=p)
            rests = (f"{t.get('note') or 'the usual test is undefined'}; used instead: "
                     f"{ext.get('kind')}, df {ext.get('df')} (an extension)")
            plain = (f"the usual joint test cannot be computed here, so a variant that uses "
                     f"only the combinations of {years} the data can measure is used")
        else:
            why = t.get("note") or t.get("reason") or "the test statistic is undefined"
            return Check(label, name, NA, "The pre-trend test cannot be computed for this "
                         "method here (the technical reason is in the appendix).",
                         f"{plain}, which is undefined on these data", detail,
                         technical=why)
    p = float(p)
    v = _grade(p, PRETEST_P_HOLDS, PRETEST_P_WEAK)
    words = {HOLDS: "Before twinning, twinned and comparison partners moved in parallel "
                    "(the years before twinning show no significant differences)",
             WEAK: "Before twinning, the paths of twinned and comparison partners differ "
                   "somewhat (borderline significant)",
             FAILS: "Before twinning, twinned and comparison partners were already on "
                    "different paths; the estimate may partly reflect that"}[v]
    return Check(label, name, v, f"{words} ({_p_words(p)}).",
                 f"{plain} ({_p_words(p)})", detail, technical=f"{rests}, {_p_words(p)}")


def _target(result: Any) -> tuple[Any, str]:
    """``target`` for HonestDiD / power: the result's own overall ATT when it is a weighted
    sum of the event-time coefficients, else the equal-weighted average of the post-period
    coefficients (said so)."""
    from ..errors import SpecificationError
    from ..inference.honest_did import overall_weights

    post = [t for t in result.terms if t.startswith("rel_time=")
            and float(result.term_info.loc[t, "rel_time"]) >= 0]
    if not post:
        raise SpecificationError(
            "this result has no post-period event-time estimates named rel_time=..., so "
            "there is no effect to measure the pre-trend test's power against")
    try:
        overall_weights(result, post)
        return "overall", "the overall effect"
    except SpecificationError:
        return np.full(len(post), 1.0 / len(post)), (
            f"the average of the {len(post)} year-by-year effects (this method's overall "
            "effect also averages years outside the event window)")


def _power_check(label: str, result: Any, alpha: float) -> Check:
    name = "Power of the pre-trend test"
    from ..errors import TwinImpactError
    from ..inference.pretrend_power import power_against_att_se

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            target, what = _target(result)
            out = power_against_att_se(result, alpha=alpha,
                                       l_vec=None if isinstance(target, str) else target)
    except TwinImpactError as exc:
        plain, basis, why = _not_available(exc)
        return Check(label, name, NA, plain, basis, {}, technical=why)
    pw = out["power"]
    v = _grade(pw, POWER_HOLDS, POWER_WEAK)
    s = (f"A steady drift big enough to move {what} by one standard error "
         f"({out['att_se']:.3g}) would have been caught by the pre-trend test {pw:.0%} of "
         "the time")
    s += {HOLDS: ", so a passed test is informative.",
          WEAK: ", so a passed test is only moderately reassuring.",
          FAILS: ", so a passed test says little about such a drift."}[v]
    return Check(label, name, v, s,
                 f"the chance that no before-twinning estimate comes out significant if the "
                 f"paths drifted apart in a straight line by {out['slope']:.3g} a year "
                 "(Roth 2022)",
                 {"slope": out["slope"], "power": pw, "size": out["size"],
                  "att": out["att"], "att_se": out["att_se"]},
                 technical=f"Roth (2022) power of 'no pre-period coefficient significant' "
                           f"against a linear trend of slope {out['slope']:.3g} per period")


def _honest_check(label: str, result: Any, alpha: float) -> Check:
    name = "Sensitivity to violations of parallel trends (HonestDiD)"
    from ..errors import TwinImpactError
    from ..inference.honest_did import breakdown_value

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            target, what = _target(result)
            kw = ({"target": target} if isinstance(target, str) else {"l_vec": target})
            bd = breakdown_value(result, alpha=alpha, n_reps=500, rtol=1e-2, **kw)
    except TwinImpactError as exc:
        plain, basis, why = _not_available(exc)
        return Check(label, name, NA, plain, basis, {}, technical=why)
    if not np.isfinite(bd) and np.isnan(bd):
        # name what is tested: for some methods it is the average of the year-by-year
        # effects in the window, not the overall estimate the reader sees elsewhere
        return Check(label, name, NA, f"{what[0].upper()}{what[1:]} is not distinguishable "
                     "from zero even if trends were exactly parallel, so there is no "
                     "conclusion to stress-test.",
                     f"the confidence interval for {what} includes zero even when the "
                     "paths after twinning are assumed exactly parallel (Rambachan & Roth "
                     "2023)", {"breakdown_mbar": bd},
                     technical=f"robust confidence set for {what} contains zero at Mbar = 0")
    v = _grade(bd, BREAKDOWN_HOLDS, BREAKDOWN_WEAK)
    s = (f"The conclusion that there is an effect ({what}) survives if after twinning the "
         "paths "
         f"diverge by up to {bd:.3g} times the largest divergence seen before twinning")
    s += {HOLDS: ".", WEAK: "; larger divergences would overturn it.",
          FAILS: "; a divergence smaller than those already seen would overturn it."}[v]
    return Check(label, name, v, s,
                 "the largest divergence after twinning, as a multiple of the largest one "
                 f"before, at which the interval for the effect still excludes zero: {bd:.3g} "
                 "(Rambachan & Roth 2023)", {"breakdown_mbar": bd},
                 technical="breakdown value of Mbar (relative magnitudes, C-LF, Rambachan & "
                           f"Roth 2023) for {what}: {bd:.3g}")


def _bacon_check(label: str, frame: pd.DataFrame, roles: dict[str, str]
                 ) -> tuple[Check, Any]:
    name = "Comparisons with already-twinned partners (Goodman-Bacon)"
    from ..diagnostics.bacon import bacon_decomposition
    from ..errors import TwinImpactError

    unit, time, cohort = roles["unit"], roles["time"], roles["cohort"]
    y = roles.get("outcome", "outcome")
    d = frame[[unit, time, cohort, y]].dropna(subset=[y])
    sub, start, end = _balanced_window(d, unit, time, cohort)
    n_all = d[unit].nunique()
    n_sub = sub[unit].nunique()
    note = ""
    if len(sub) < len(d):
        note = (f" (computed on the {n_sub} of {n_all} units observed in every period "
                f"{start:g}-{end:g}, the largest balanced block; the decomposition needs a "
                "balanced panel)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            b = bacon_decomposition(sub, outcome=y, unit=unit, time=time, cohort=cohort)
    except TwinImpactError as exc:
        why = str(exc).split(". ")[0]
        return Check(label, name, NA, "The decomposition could not be computed on these data "
                     f"(the technical reason is in the appendix){note}.",
                     "the Goodman-Bacon (2021) split of the two-way fixed-effects estimate, "
                     "which could not be computed", {"n_units_balanced": n_sub},
                     technical=why + note), None
    share = b.forbidden_share
    v = _grade(share, FORBIDDEN_HOLDS, FORBIDDEN_WEAK, higher_is_better=False)
    s = (f"{share:.0%} of this estimate's weight comes from comparing partners twinned later "
         "with partners twinned earlier (already affected), which can distort it when "
         "effects change over time")
    s += {HOLDS: "; that share is small", WEAK: "; read it with care",
          FAILS: "; prefer the heterogeneity-robust methods"}[v]
    bt = b.by_type
    return Check(label, name, v, s + note + ".",
                 "the Goodman-Bacon (2021) split of the two-way fixed-effects estimate "
                 f"({b.twfe:.4g}) into the comparisons it averages",
                 {"forbidden_share": share, "twfe_balanced": b.twfe,
                  **{f"weight_{k}": float(bt.loc[k, 'weight']) for k in bt.index},
                  **{f"estimate_{k}": float(bt.loc[k, 'estimate']) for k in bt.index}},
                 technical=f"Goodman-Bacon (2021) decomposition of TWFE = {b.twfe:.4g}{note}"
                 ), b


def _balanced_window(d: pd.DataFrame, unit: str, time: str, cohort: str
                     ) -> tuple[pd.DataFrame, float, float]:
    """Largest balanced block ``units x [start, end]`` (by units x periods) among windows
    ending at the last period or starting at the first, in which some unit switches into
    treatment; the whole frame when it is balanced."""
    periods = np.sort(d[time].unique())
    present = pd.crosstab(d[unit], d[time]).reindex(columns=periods, fill_value=0) > 0
    g = d.groupby(unit)[cohort].first().reindex(present.index)
    best = (d, periods[0], periods[-1], -1)
    if present.to_numpy().all():
        return best[:3]
    windows = [(periods[i], periods[-1]) for i in range(len(periods) - 1)]
    windows += [(periods[0], periods[j]) for j in range(1, len(periods))]
    for start, end in windows:
        cols = (periods >= start) & (periods <= end)
        full = present.index[present.loc[:, cols].to_numpy().all(axis=1)]
        gi = g.loc[full]
        switch = ((gi > start) & (gi <= end)).any()
        score = len(full) * int(cols.sum())
        if switch and score > best[3]:
            best = (d[d[unit].isin(full) & d[time].between(start, end)], start, end, score)
    return best[:3]


def _clusters_check(label: str, result: Any, frame: pd.DataFrame | None,
                    roles: dict[str, str], alpha: float, seed: int) -> Check:
    name = "Number of treated clusters"
    vs = getattr(result, "vcov_spec", None)
    unit, time, cohort = roles["unit"], roles["time"], roles["cohort"]
    cl = (vs.cluster[0] if vs is not None and vs.cluster else unit)
    # the cluster in words: one unit of the panel, or the column name as words
    cl_words = "each a unit of the panel" if cl == unit else f"by {cl.replace('_', ' ')}"
    if frame is None or cl not in frame.columns or cohort not in frame.columns:
        return Check(label, name, NA, "The data are not available to count clusters.",
                     "the analysis data were not passed to the check", {},
                     technical="no analysis frame")
    treated = frame.loc[frame[cohort].notna() & (frame[cohort] > 0), cl].nunique()
    total = frame[cl].nunique()
    detail: dict[str, Any] = {"cluster": cl, "treated_clusters": int(treated),
                              "clusters": int(total)}
    if treated >= CLUSTERS_ENOUGH:
        return Check(label, name, HOLDS, f"{treated} of {total} clusters ({cl_words}) are "
                     "treated, enough for the usual cluster-robust standard errors.",
                     f"the count of treated clusters, {treated}, against the {CLUSTERS_ENOUGH} "
                     "usually needed", detail,
                     technical=f"{treated} treated clusters (column {cl}) >= {CLUSTERS_ENOUGH}")
    from ..errors import TwinImpactError
    from ..inference.wild_bootstrap import wild_cluster_bootstrap

    y = roles.get("outcome", "outcome")
    d = frame[[unit, time, cohort, y] + ([cl] if cl not in (unit, time) else [])].dropna(
        subset=[y]).copy()
    d["_D"] = (d[cohort].notna() & (d[time] >= d[cohort])).astype(float)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wb = wild_cluster_bootstrap(d, outcome=y, regressors=["_D"], cluster=cl, term="_D",
                                        fixed_effects=(unit, time), n_reps=WCB_REPS, seed=seed)
    except TwinImpactError as exc:
        why = str(exc).split(". ")[0]
        return Check(label, name, WEAK, f"Only {treated} treated clusters; the wild cluster "
                     "bootstrap, the usual remedy, could not run (the technical reason is in "
                     "the appendix).", f"the count of treated clusters, {treated}, against the "
                     f"{CLUSTERS_ENOUGH} usually needed", detail, technical=why)
    p_usual = float(result.pvalues.get("ATT", np.nan)) if "ATT" in result.terms else np.nan
    detail.update(wild_bootstrap_p=float(wb.p_value), usual_p=p_usual)
    agree = (np.isnan(p_usual) or (wb.p_value < alpha) == (p_usual < alpha))
    v = HOLDS if agree and treated >= CLUSTERS_FEW else WEAK
    s = (f"Only {treated} of {total} clusters ({cl_words}) are treated, too few for the usual "
         f"standard errors to be trusted; the wild cluster bootstrap gives p = "
         f"{wb.p_value:.3g}")
    s += (" and agrees with the usual p-value." if agree else
          f", which disagrees with the usual p = {p_usual:.3g}.")
    return Check(label, name, v, s, f"a wild cluster bootstrap ({WCB_REPS:,} draws) of the "
                 "two-way fixed-effects effect, which stays reliable with few clusters "
                 "(Roodman et al. 2019)", detail,
                 technical=f"restricted wild cluster bootstrap (Rademacher, {WCB_REPS} draws) "
                           f"of the static TWFE effect, cluster column {cl}")


def _agreement_check(results: dict[str, Any], alpha: float) -> Check:
    name = "Agreement across methods"
    rows = []
    for label, r in results.items():
        f = r.to_frame(alpha)
        att = f[f["term"] == "ATT"]
        if len(att) and np.isfinite(att["estimate"].iloc[0]):
            a = att.iloc[0]
            rows.append((label, float(a["estimate"]), float(a["std_error"]),
                         float(a["ci_lower"]), float(a["ci_upper"]), _family(r)))
    if len(rows) < 2:
        return Check("all methods", name, NA, "Only one method produced an overall effect.",
                     "the overall effects of the methods: fewer than two", {},
                     technical="fewer than two ATT estimates")
    sig_pos = [r for r in rows if r[3] > 0]
    sig_neg = [r for r in rows if r[4] < 0]
    ests = np.array([r[1] for r in rows])
    ses = np.array([r[2] for r in rows])
    spread = float(ests.max() - ests.min())
    med_se = float(np.nanmedian(ses))
    uses = "; ".join(f"{r[0]} compares {COMPARISONS.get(r[5], 'its own comparison group')}"
                     for r in rows)
    if sig_pos and sig_neg:
        v = FAILS
        s = ("The methods disagree on the direction: "
             f"{', '.join(r[0] for r in sig_pos)} find a significant increase, "
             f"{', '.join(r[0] for r in sig_neg)} a significant decrease.")
    elif spread > 2 * med_se:
        v = WEAK
        s = (f"The methods agree on the direction but their estimates range from "
             f"{ests.min():.3g} to {ests.max():.3g}, more than twice a typical standard "
             f"error ({med_se:.3g}).")
    else:
        v = HOLDS
        s = "The methods give similar answers (within about two standard errors)."
    return Check("all methods", name, v, s + " Why they can differ: " + uses + ".",
                 f"the gap between the largest and the smallest overall estimate "
                 f"({spread:.3g}) against a typical standard error ({med_se:.3g})",
                 {"spread": spread, "median_se": med_se},
                 technical=f"range of the overall estimates {spread:.3g} vs median SE "
                           f"{med_se:.3g}")


def _roles_from_specs(results: dict[str, Any]) -> dict[str, str]:
    """Column roles named by the results' own specifications, over the panel defaults."""
    roles = {"outcome": "outcome", "unit": "unit_id", "time": "year", "cohort": "cohort"}
    found: dict[str, str] = {}
    for r in results.values():
        spec = getattr(r, "spec", None) or {}
        for key in roles:
            val = spec.get(key)
            if key not in found and isinstance(val, str) and val:
                found[key] = val
    return {**roles, **found}


def assess_credibility(results: dict[str, Any], *, frame: pd.DataFrame | None = None,
                       roles: dict[str, str] | None = None, headline: str | None = None,
                       alpha: float = 0.05, seed: int = 0, honest: bool = True
                       ) -> Credibility:
    """Run the credibility checks (see the module docstring) for every result.

    Parameters
    ----------
    results : dict label -> result (as a study run holds them).
    frame : the analysis frame (for the Bacon decomposition and the cluster counts).
    roles : column names ``{"outcome", "unit", "time", "cohort"}`` in ``frame``. Those not
        given are taken from the first result whose specification names them (a result
        of ``ti.twfe(frame, outcome=..., unit=..., ...)`` knows its columns), then from
        the analysis panel's names (``outcome``, ``unit_id``, ``year``, ``cohort``).
    headline : label of the headline estimate (the overall verdict is about it).
    honest : run the HonestDiD breakdown search (the slowest check).

    Examples
    --------
    >>> import warnings
    >>> import twinimpact as ti
    >>> from twinimpact.estimators.twfe import _example_panel
    >>> d = _example_panel()
    >>> kw = dict(outcome="y", unit="id", time="year", cohort="g")
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     res = {"TWFE": ti.twfe(d, **kw), "Event study": ti.event_study(d, **kw)}
    ...     checks = ti.assess_credibility(res, frame=d, headline="Event study",
    ...                                    honest=False)
    >>> [c.name for c in checks.checks][:3]
    ['Comparisons with already-twinned partners (Goodman-Bacon)', 'Number of treated clusters', 'Pre-trend test']
    """
    roles = {**_roles_from_specs(results), **(roles or {})}
    checks: list[Check] = []
    bacon = None
    for label, r in results.items():
        fam = _family(r)
        if fam == "twfe" and frame is not None:
            chk, b = _bacon_check(label, frame, roles)
            checks.append(chk)
            bacon = bacon if bacon is not None else b
            checks.append(_clusters_check(label, r, frame, roles, alpha, seed))
            continue
        if not _pre_terms(r):
            continue
        checks.append(_pretest_check(label, r, alpha))
        checks.append(_power_check(label, r, alpha))
        if honest:
            checks.append(_honest_check(label, r, alpha))
    agreement = _agreement_check(results, alpha)
    checks.append(agreement)
    order = [headline] + [k for k in results if k != headline]
    power_result = sensitivity = None
    for lab in order:
        ok = {c.name for c in checks if c.estimator == lab and c.verdict != NA}
        if power_result is None and "Power of the pre-trend test" in ok:
            power_result = (lab, results[lab])
        hd = next((c for c in checks if c.estimator == lab and c.verdict != NA
                   and c.name.startswith("Sensitivity")), None)
        if sensitivity is None and hd is not None and honest:
            sensitivity = _sensitivity_frame(lab, results[lab], hd.detail["breakdown_mbar"],
                                             alpha)
    mine = [c for c in checks if c.estimator == headline]
    stand_in = None
    if headline in results and not any(c.verdict in _RANK for c in mine):
        # A headline without pre-period terms (e.g. ETWFE with not-yet-treated controls has
        # no leads) is judged by the checks of the same estimator's companion fit that has
        # them (the same design with never-treated controls and placebo leads).
        def kin(r: Any) -> tuple:
            spec = getattr(r, "spec", None) or {}
            return (str(getattr(r, "estimator", "")).split("/")[0], spec.get("family"))

        head_kin = kin(results[headline])
        for lab, r in results.items():
            if lab != headline and kin(r) == head_kin:
                comp = [c for c in checks if c.estimator == lab and c.verdict in _RANK]
                if comp:
                    mine, stand_in = comp, lab
                    break
    mine = [*mine, agreement]
    graded = [c for c in mine if c.verdict in _RANK]
    if not graded:
        overall, sentence = NA, "No credibility check applies to the headline estimate."
    else:
        worst = max(graded, key=lambda c: _RANK[c.verdict])
        overall = worst.verdict
        lead = {HOLDS: "Yes, as far as the standard checks can tell",
                WEAK: "With caution", FAILS: "Not on its own"}[overall]
        reasons = [c.name.split(" (")[0].lower() for c in graded if c.verdict == overall]
        if overall == HOLDS:
            sentence = f"{lead}: every check below holds for the headline estimate."
        else:
            sentence = (f"{lead}: " + ", ".join(reasons)
                        + (" is" if len(reasons) == 1 else " are")
                        + f" {'weak' if overall == WEAK else 'failing'} (details below).")
        if stand_in is not None:
            sentence += (f" The headline method has no before-twinning estimates of its own; "
                         f"its pre-trend checks are those of {stand_in}, the same method "
                         "with before-twinning (placebo) estimates.")
    return Credibility(tuple(checks), headline, overall, sentence, bacon=bacon,
                       power_result=power_result, sensitivity=sensitivity)


SENSITIVITY_POINTS = 6


def _sensitivity_frame(label: str, result: Any, bd: float, alpha: float):
    """honest_did frame over Mbar in [0, max(2, 1.5 x breakdown)] for the picture."""
    from ..errors import TwinImpactError
    from ..inference.honest_did import honest_did

    top = max(2.0, 1.5 * bd) if np.isfinite(bd) else 2.0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            target, _ = _target(result)
            kw = ({"target": target} if isinstance(target, str) else {"l_vec": target})
            frame = honest_did(result, alpha=alpha, n_reps=500, **kw,
                               m_values=np.linspace(0.0, top, SENSITIVITY_POINTS),
                               grid_points=400)
    except TwinImpactError:
        return None
    return (label, frame, bd)
