"""Plain-language headline: which estimate to quote and how to say it.

"German exports to a partner country were 12.3% higher, 95% CI [4.1%, 21.2%], on average
over the 21 years after the first twinning."

The horizon is the one the quoted estimate averages over, never the window of the event-study
plot: an overall ATT that averages the event-time coefficients (TWFE event study,
Callaway-Sant'Anna dynamic aggregation) covers those rows (the last one pooling all later
years when endpoints are binned); an ATT that averages every treated observation
(imputation, two-stage DiD, static estimators) covers every treated year in the data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Headline", "conflicting_signs", "headline_sentence", "other_estimates",
           "pick_headline"]

#: preference when the study does not name its headline estimate: heterogeneity-robust first
PREFERENCE = ("callaway_santanna", "imputation", "did2s", "sun_abraham", "synthetic_did",
              "poisson_event_study", "ppml", "event_study", "twfe")


@dataclass(frozen=True)
class Headline:
    label: str
    result: Any
    estimate: float
    ci_lower: float
    ci_upper: float
    p_value: float
    n_post: int | None
    term: str = "ATT"
    #: the ATT averages the event-time rows (True), every treated observation (False)
    rows_based: bool = False
    #: the last event-time row pools all later periods (binned endpoint)
    pooled_tail: bool = False


def _att_row(result: Any, alpha: float, term: str = "ATT"):
    f = result.to_frame(alpha)
    rows = f[f["term"] == term]
    return None if rows.empty else (f, rows.iloc[0])


def pick_headline(results: dict[str, Any], study: Any) -> Headline | None:
    """The estimate to quote: the study's ``[output] headline`` or the most robust one."""
    alpha = study.alpha
    term = getattr(study, "headline_term", "ATT")
    labels = list(results)
    if getattr(study, "headline", None) in results:
        labels = [study.headline] + [k for k in labels if k != study.headline]
    else:
        rank = {n: i for i, n in enumerate(PREFERENCE)}
        labels.sort(key=lambda k: rank.get(str(getattr(results[k], "estimator", "")).split(
            "/")[0], len(rank)))
    for k in labels:
        got = _att_row(results[k], alpha, term)
        if got is None:
            continue
        f, row = got
        if not math.isfinite(row["estimate"]):
            continue
        n_post = None
        rows_based = pooled = False
        if term == "ATT" and "rel_time" in f.columns:
            n_post = int((f["rel_time"] >= 0).sum()) or None
            rows_based = _att_averages_rows(results[k])
            spec = getattr(results[k], "spec", {}) or {}
            pooled = rows_based and bool(spec.get("bin_endpoints")) \
                and spec.get("lags") is not None
        return Headline(k, results[k], float(row["estimate"]), float(row["ci_lower"]),
                        float(row["ci_upper"]), float(row["p_value"]), n_post, term,
                        rows_based, pooled)
    return None


def _att_averages_rows(result: Any) -> bool:
    """True when the result's ATT is a mean of its own rel_time >= 0 rows (so the number
    of those rows is its horizon); False when it averages every treated observation."""
    att = getattr(result, "att_definition", None)  # the typed results.ATTDefinition
    return att is not None and att.weighting == "equal_weighted_post_periods"


#: how a per-unit effect of a continuous treatment is said
PER_TERM = {"n_twinnings": "per additional twinning",
            "twinned": "with a twinning in force (vs none)"}


def _p(x: float) -> str:
    """Percent with enough digits to be informative (2 significant below 1%)."""
    if not math.isfinite(x):
        return "n/a"
    return f"{x:.1f}%" if abs(x) >= 1 else f"{x:.2g}%"


def _pct(b: float) -> float:
    return 100.0 * (math.exp(b) - 1.0)


_PREPOSITIONS = frozenset({"between", "to", "from", "of", "in", "with", "for", "by", "at"})


def _verb(subject: str) -> str:
    """'were' when the subject's head noun (its last word before a preposition) is a
    plural in -s ("German exports to ...", "Trade flows between ..."), else 'was'
    ("The outcome")."""
    head = ""
    for word in subject.split():
        if word.lower() in _PREPOSITIONS:
            break
        head = word.lower().strip(",;:")
    return "were" if head.endswith("s") and not head.endswith("ss") else "was"


def headline_sentence(h: Headline, study: Any, *, max_rel_time: float | None = None
                      ) -> tuple[str, str]:
    """(headline, how-sure sentence) in plain words. ``max_rel_time``: the latest period
    after treatment among the treated observations analysed (the horizon of an ATT that
    averages every treated observation)."""
    level = 100 * (1 - study.alpha)
    subject = getattr(study, "headline_subject", "The outcome")
    treatment = (h.result.spec.get("treatment")
                 if getattr(h.result, "estimator", "") == "did_multiplegt" else None)
    if h.term != "ATT":
        when = PER_TERM.get(h.term, f"per one-unit increase in {h.term}")
    elif treatment is not None:
        # de Chaisemartin-D'Haultfoeuille: the ATT is an average total effect per unit of a
        # treatment that may vary in intensity (and switch off)
        when = PER_TERM.get(treatment, f"per one-unit increase in {treatment}")
        if h.n_post:
            when += f", averaged over the {h.n_post} years after the first change"
    elif h.rows_based and h.n_post:
        when = f"on average over the {h.n_post} years after the first twinning"
        if h.pooled_tail:
            when += " (the last of them pooling all later years)"
    elif max_rel_time is not None and max_rel_time >= 0:
        when = ("on average over every treated year in the data (from the year of the "
                f"first twinning to {max_rel_time:g} years after it)")
    else:
        when = "on average over the treated years after the first twinning"
    proportional = study.transform in ("log", "log1p", "asinh") or any(
        s in str(getattr(h.result, "estimator", "")) for s in ("ppml", "poisson"))
    if proportional:
        x, lo, hi = _pct(h.estimate), _pct(h.ci_lower), _pct(h.ci_upper)
        word = "higher" if x >= 0 else "lower"
        head = (f"{subject} {_verb(subject)} {_p(abs(x))} {word}, {level:g}% CI "
                f"[{_p(lo)}, {_p(hi)}], "
                f"{when} (estimate: {h.label}).")
    else:
        word = "higher" if h.estimate >= 0 else "lower"
        head = (f"{subject} {_verb(subject)} {abs(h.estimate):.3g} {word}, {level:g}% CI "
                f"[{h.ci_lower:.3g}, {h.ci_upper:.3g}], {when} (estimate: {h.label}).")
    covers_zero = h.ci_lower <= 0 <= h.ci_upper
    if covers_zero:
        sure = (f"How sure are we? Not very: the {level:g}% confidence interval includes no "
                "change at all, so the data cannot rule out that twinning made no difference "
                f"(p-value {h.p_value:.2f}).")
    else:
        sure = (f"How sure are we? The {level:g}% confidence interval excludes no change "
                f"(p-value {'below 0.001' if h.p_value < 0.001 else f'{h.p_value:.3f}'}), so "
                "chance alone is an unlikely explanation. It "
                "does not by itself show that twinning caused the change: see the pre-trend "
                "checks and caveats below.")
    return head, sure


def _other_rows(results: dict[str, Any], study: Any, head: Headline
                ) -> Iterator[tuple[str, float, float, float]]:
    """(label, estimate, ci_lower, ci_upper) of every other result with the headline's
    term and a finite estimate."""
    for label, r in results.items():
        if label == head.label:
            continue
        got = _att_row(r, study.alpha, head.term)
        if got is None:
            continue
        _, row = got
        b = float(row["estimate"])
        if math.isfinite(b):
            yield label, b, float(row["ci_lower"]), float(row["ci_upper"])


def other_estimates(results: dict[str, Any], study: Any, head: Headline) -> list[str]:
    """One line per other result with the headline's term: estimate and interval, in the
    headline's units (percent for log outcomes)."""
    proportional = study.transform in ("log", "log1p", "asinh")
    level = 100 * (1 - study.alpha)
    lines = []
    for label, b, lo, hi in _other_rows(results, study, head):
        if proportional:
            lines.append(f"{label}: {_p(_pct(b))} ({level:g}% CI [{_p(_pct(lo))}, "
                         f"{_p(_pct(hi))}])")
        else:
            lines.append(f"{label}: {b:.3g} ({level:g}% CI [{lo:.3g}, {hi:.3g}])")
    return lines


def conflicting_signs(results: dict[str, Any], study: Any, head: Headline) -> bool:
    """True when another result's interval for the same term lies entirely on the other
    side of zero from the headline estimate."""
    return any((head.estimate < 0 and lo > 0) or (head.estimate > 0 and hi < 0)
               for _, _, lo, hi in _other_rows(results, study, head))
