"""Power of pre-trend tests against hypothesised violations of parallel trends.

Roth, J. (2022), "Pretest with Caution: Event-Study Estimates after Testing for Parallel
Trends", *American Economic Review: Insights* 4(3), 305-322; R package ``pretrends``
(jonathandroth/pretrends) and the Stata port ``pretrends`` (mcaceresb/stata-pretrends).

The pre-test studied is the one applied researchers use: "no pre-period coefficient is
individually significant", i.e. ``|betahat_t / se_t| <= c`` for every pre-period ``t``
(``c = z_{1 - alpha/2}``). With ``betahat ~ N(delta, Sigma)``:

* **power** against ``delta_true`` -- ``1 - P(pass)``, a multivariate normal rectangle
  probability (:mod:`twinimpact.inference._mvn_rect`: exact iterated quadrature for up to
  three pre-periods, seeded quasi-Monte-Carlo with absolute error about 1e-5 beyond);
* **Bayes factor** -- ``P(pass | delta_true) / P(pass | delta = 0)``;
* **likelihood ratio** -- density of the observed pre-period coefficients under
  ``delta_true`` over that under ``delta = 0``;
* **mean after pre-testing** -- ``E[betahat | pass]`` when ``delta_true`` holds: the
  truncated-normal mean for the pre-periods and, for post-periods,
  ``delta_post + Sigma_post,pre Sigma_pre^-1 (E[betahat_pre | pass] - delta_pre)``.

Keyword mapping to R ``pretrends``: ``sigma`` = ``sigma``, ``rel_times`` = ``tVec``,
``ref`` = ``referencePeriod``, ``target_power`` = ``targetPower``, ``delta_true`` =
``deltatrue``; pre-periods are ``rel_times < ref`` and post-periods ``rel_times > ref``
(R's defaults). R hard-codes the critical value 1.96; here it is ``z_{1 - alpha/2}``
(1.959964 for ``alpha = 0.05``) unless ``critical_value=`` is given. R's numbers carry
Monte-Carlo error (``mvtnorm::pmvnorm`` with its default absolute error 1e-3) and
``slope_for_power`` solves with ``uniroot``'s default tolerance (about 1.2e-4); ours are
deterministic and solved to 1e-10.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from ..errors import InputError, SpecificationError, check_alpha, format_message
from ._mvn_rect import EXACT_MAX_DIM, QMC_ABSEPS, rect_prob, truncated_mean

__all__ = ["PretrendPower", "event_study_inputs", "pretrend_power", "slope_for_power"]


# ----------------------------------------------------------------------------- inputs
def event_study_inputs(result: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """``(betahat, sigma, rel_times, terms)`` of the event-time terms of a result, sorted by
    relative time (terms without a finite ``rel_time``, e.g. ``ATT``, are left out).

    Refuses results whose pre-period coefficients are not relative to one reference
    period (Callaway-Sant'Anna with ``base_period="varying"``), naming the fix.
    """
    spec = dict(getattr(result, "spec", {}) or {})
    if spec.get("base_period") == "varying":
        raise SpecificationError(format_message(
            "this result uses base_period='varying': its pre-period coefficients compare "
            "each period with the one before (short differences), not with one reference "
            "period, so a hypothesised trend delta_t = slope * (t - ref) does not describe "
            "them (R HonestDiD / pretrends guidance: use a universal base period)",
            where=f"result of {getattr(result, 'estimator', '?')}", seen="varying",
            fix="re-estimate with base_period='universal', e.g. ti.callaway_santanna(..., "
                "base_period='universal').aggregate('dynamic')"))
    if str(getattr(result, "estimator", "")).startswith("imputation"):
        raise SpecificationError(format_message(
            "the imputation estimator's pre-trend coefficients (BJS Test 1) are measured "
            "against the periods before the first lead, not against period -1, so a trend "
            "delta_t = slope * (t - ref) does not describe them",
            where=f"result of {result.estimator}", seen=spec.get("ref"),
            fix="use ti.did2s(..., event_study=True) (the same post-period estimates, leads "
                "relative to -1) or pass betahat, sigma and rel_times"))
    info = getattr(result, "term_info", None)
    if info is None or "rel_time" not in info.columns:
        raise SpecificationError(format_message(
            "the result has no event-time terms (term_info['rel_time'])",
            where=f"result of {getattr(result, 'estimator', '?')}",
            fix="pass an event-study result (ti.event_study, .aggregate('dynamic'), "
                "ti.sun_abraham, ti.imputation(..., horizons=..., pretrends=k), "
                "ti.did2s(..., event_study=True)) or betahat and sigma"))
    rel = info["rel_time"].to_numpy(dtype=float)
    terms = np.array(result.terms)
    ok = np.isfinite(rel)
    order = np.argsort(rel[ok], kind="stable")
    rel, names = rel[ok][order], list(terms[ok][order])
    beta = result.params[names].to_numpy(dtype=float)
    sig = result.vcov.loc[names, names].to_numpy(dtype=float)
    return beta, sig, rel, names


def _check_cov(sigma: Any, k: int, what: str = "sigma") -> np.ndarray:
    s = np.asarray(sigma, dtype=float)
    if s.ndim != 2 or s.shape != (k, k):
        raise InputError(format_message(f"{what} must be a {k} x {k} matrix", seen=s.shape,
                                        fix="pass the covariance of the event-study "
                                            "coefficients, in the order of rel_times"))
    if not np.all(np.isfinite(s)):
        raise InputError(format_message(f"{what} has non-finite entries",
                                        fix="drop event times whose variance is NaN"))
    if not np.allclose(s, s.T, rtol=1e-8, atol=1e-14 * max(np.abs(s).max(), 1e-300)):
        raise InputError(format_message(f"{what} is not symmetric",
                                        fix="pass a covariance matrix"))
    return (s + s.T) / 2


def _pre_indices(rel: np.ndarray, ref: float) -> np.ndarray:
    pre = np.flatnonzero(rel < ref)
    if len(pre) == 0:
        raise SpecificationError(format_message(
            "no pre-treatment coefficient: every relative time is at or after the "
            "reference period", seen={"rel_times": rel.tolist(), "ref": ref},
            fix="include leads (e.g. ti.event_study(..., leads=4)) or set ref="))
    return pre


def _crit(alpha: float, critical_value: float | None) -> float:
    if critical_value is not None:
        if not (np.isfinite(critical_value) and critical_value > 0):
            raise SpecificationError(f"critical_value must be positive; got {critical_value!r}.")
        return float(critical_value)
    check_alpha(alpha)
    return float(stats.norm.ppf(1 - alpha / 2))


def _resolve(betahat: Any, sigma: Any, rel_times: Any, need_beta: bool
             ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, list[str] | None]:
    """Arrays from a result or from (betahat, sigma, rel_times)."""
    if hasattr(betahat, "terms") and hasattr(betahat, "vcov"):
        if sigma is not None or rel_times is not None:
            raise SpecificationError(format_message(
                "sigma / rel_times must not be given together with a result (they are read "
                "from it)", fix="pass the result alone, or betahat, sigma and rel_times"))
        return event_study_inputs(betahat)
    if rel_times is None:
        raise SpecificationError(format_message(
            "rel_times is required with array inputs (R: tVec)",
            fix="pass rel_times=[-4, -3, -2, 0, 1, 2, 3] -- one relative time per coefficient"))
    rel = np.asarray(rel_times, dtype=float).reshape(-1)
    if len(np.unique(rel)) != len(rel) or not np.all(np.isfinite(rel)):
        raise InputError(format_message("rel_times must be distinct finite numbers",
                                        seen=rel.tolist()))
    sig = _check_cov(sigma, len(rel))
    beta = None
    if need_beta:
        beta = np.asarray(betahat, dtype=float).reshape(-1)
        if len(beta) != len(rel) or not np.all(np.isfinite(beta)):
            raise InputError(format_message(
                "betahat must have one finite entry per relative time",
                seen={"len(betahat)": len(beta), "len(rel_times)": len(rel)}))
    return beta, sig, rel, None


# ----------------------------------------------------------------------------- power
def _pass_prob(delta_pre: np.ndarray, sig_pre: np.ndarray, c: float) -> float:
    ub = c * np.sqrt(np.diag(sig_pre))
    return rect_prob(delta_pre, sig_pre, -ub, ub)


def slope_for_power(sigma: Any, *, target_power: float, rel_times: Any = None,
                    ref: float = -1, alpha: float = 0.05,
                    critical_value: float | None = None) -> float:
    """Slope of the linear trend ``delta_t = slope * (t - ref)`` that the pre-test detects
    with probability ``target_power`` (Roth 2022; R ``pretrends::slope_for_power``).

    Parameters
    ----------
    sigma : array-like or event-study result
        Covariance of the event-study coefficients (R ``sigma``), or a result, whose
        event-time terms and vcov are used.
    target_power : float
        In ``(alpha_pretest, 1)`` where ``alpha_pretest`` is the pre-test's size (R
        ``targetPower``).
    rel_times : array-like
        Relative time of each coefficient (R ``tVec``); read from a result.
    ref : float
        Reference period (R ``referencePeriod``); pre-periods are ``rel_times < ref``.
    alpha, critical_value : the pre-test rejects when some ``|t| > z_{1-alpha/2}``
        (R: 1.96, pass ``critical_value=1.96`` to reproduce R exactly).

    Returns
    -------
    float
        The (positive) slope.

    Examples
    --------
    >>> import numpy as np, twinimpact as ti
    >>> s = ti.slope_for_power(np.eye(3) * 0.01, target_power=0.5, rel_times=[-3, -2, 0])
    >>> round(s, 4)
    0.0876
    """
    if hasattr(sigma, "terms") and hasattr(sigma, "vcov"):
        _, sig, rel, _ = _resolve(sigma, None, rel_times, need_beta=False)
    else:
        _, sig, rel, _ = _resolve(None, sigma, rel_times, need_beta=False)
    pre = _pre_indices(rel, ref)
    c = _crit(alpha, critical_value)
    sp = sig[np.ix_(pre, pre)]
    x = rel[pre] - ref
    size = 1.0 - _pass_prob(np.zeros(len(pre)), sp, c)
    if not (isinstance(target_power, int | float) and size < target_power < 1):
        raise SpecificationError(format_message(
            "target_power must lie between the pre-test's size and 1",
            seen={"target_power": target_power, "size": round(size, 6)},
            fix="e.g. target_power=0.5 or 0.8"))

    def gap(s: float) -> float:
        return 1.0 - _pass_prob(s * x, sp, c) - target_power

    hi = 8.0 * float(np.sqrt(np.diag(sp)).max())  # R's search interval
    while gap(hi) < 0:
        hi *= 2.0
    return float(optimize.brentq(gap, 0.0, hi, xtol=1e-12, rtol=1e-10))


@dataclass(frozen=True, eq=False)
class PretrendPower:
    """Result of :func:`pretrend_power` (R ``pretrends()``'s ``df_power`` and
    ``df_eventplot``).

    Attributes
    ----------
    power, bayes_factor, likelihood_ratio : float
        See the module docstring.
    size : float
        Rejection probability of the pre-test when parallel trends hold (``delta = 0``).
    frame : DataFrame
        One row per relative time, the reference period included (zeros, as R):
        ``rel_time, estimate, std_error, delta_true, mean_after_pretest, period``
        (``"pre"``, ``"reference"``, ``"post"``).
    critical_value : float
    method : str
        How the rectangle probabilities were computed.
    """

    power: float
    bayes_factor: float
    likelihood_ratio: float
    size: float
    _frame: pd.DataFrame = field(repr=False)
    critical_value: float = 1.959963984540054
    method: str = ""
    slope: float | None = None
    spec: Any = field(default_factory=dict, repr=False)

    #: label of the object in tables and plot legends
    estimator = "pretrend_power"

    def __post_init__(self) -> None:
        object.__setattr__(self, "spec", MappingProxyType(dict(self.spec)))

    @property
    def frame(self) -> pd.DataFrame:
        return self._frame.copy()

    def to_frame(self, alpha: float | None = None) -> pd.DataFrame:
        """The event-study coefficients the power was computed for, in the shared tidy
        schema (so ``ti.table`` and ``ti.plot_event_study`` take this object): one row per
        relative time except the reference period, ``term`` (the result's own names, else
        ``rel_time=k``), ``estimate``, ``std_error``, ``statistic`` (z), ``p_value``,
        ``ci_lower``, ``ci_upper`` (normal reference, at ``alpha``; default: the level of
        the pre-test), ``ci_kind``, ``rel_time``, plus ``delta_true``,
        ``mean_after_pretest`` and ``period``. The power, Bayes factor and likelihood ratio
        are attributes (and in :meth:`summary`)."""
        a = check_alpha(self.spec.get("alpha", 0.05) if alpha is None else alpha)
        f = self._frame[self._frame["period"] != "reference"].reset_index(drop=True)
        est = f["estimate"].to_numpy(dtype=float)
        se = f["std_error"].to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(se > 0, est / se, np.nan)
        crit = float(stats.norm.ppf(1 - a / 2))
        terms = (f["term"].astype(str) if "term" in f.columns
                 else f["rel_time"].map(lambda r: f"rel_time={float(r):g}"))
        return pd.DataFrame({
            "estimator": self.estimator, "term": terms.to_numpy(), "estimate": est,
            "std_error": se, "statistic": z, "p_value": 2 * stats.norm.sf(np.abs(z)),
            "ci_lower": est - crit * se, "ci_upper": est + crit * se, "ci_kind": "normal",
            "rel_time": f["rel_time"].to_numpy(dtype=float),
            "delta_true": f["delta_true"].to_numpy(dtype=float),
            "mean_after_pretest": f["mean_after_pretest"].to_numpy(dtype=float),
            "period": f["period"].to_numpy()})

    def summary(self) -> str:
        lines = ["twinimpact · pre-trend power (Roth 2022)",
                 f"Power of the pre-test against the hypothesised trend: {self.power:.4f} "
                 f"(size under parallel trends {self.size:.4f})",
                 f"Bayes factor P(pass | trend) / P(pass | parallel): {self.bayes_factor:.4g}",
                 f"Likelihood ratio of the observed pre-period estimates: "
                 f"{self.likelihood_ratio:.4g}"]
        with pd.option_context("display.float_format", lambda v: f"{v:.5g}"):
            lines.append(self._frame.to_string(index=False))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def pretrend_power(betahat: Any, sigma: Any = None, *, rel_times: Any = None,
                   ref: float = -1, delta_true: Any, alpha: float = 0.05,
                   critical_value: float | None = None) -> PretrendPower:
    """Power, Bayes factor, likelihood ratio and means after pre-testing for a hypothesised
    violation of parallel trends (Roth 2022; R ``pretrends::pretrends``).

    Parameters
    ----------
    betahat : array-like or event-study result
        Event-study coefficients (R ``betahat``), reference period excluded; or a result
        (then ``sigma`` and ``rel_times`` come from it).
    sigma : array-like
        Their covariance (R ``sigma``).
    rel_times : array-like
        Relative time of each coefficient (R ``tVec``).
    ref : float
        Reference period (R ``referencePeriod``).
    delta_true : array-like or float
        Hypothesised bias per coefficient (R ``deltatrue``), or a number: the slope of the
        linear trend ``delta_t = slope * (t - ref)``.
    alpha, critical_value : as :func:`slope_for_power`.

    Returns
    -------
    PretrendPower

    Examples
    --------
    >>> import numpy as np, twinimpact as ti
    >>> sig = np.eye(3) * 0.01
    >>> s = ti.slope_for_power(sig, target_power=0.5, rel_times=[-3, -2, 0])
    >>> p = ti.pretrend_power(np.zeros(3), sig, rel_times=[-3, -2, 0], delta_true=s)
    >>> round(p.power, 6), round(p.bayes_factor, 4)
    (0.5, 0.554)
    """
    beta, sig, rel, names = _resolve(betahat, sigma, rel_times, need_beta=True)
    assert beta is not None
    pre = _pre_indices(rel, ref)
    post = np.flatnonzero(rel > ref)
    c = _crit(alpha, critical_value)
    slope = None
    if np.ndim(delta_true) == 0:
        slope = float(delta_true)
        delta = slope * (rel - ref)
    else:
        delta = np.asarray(delta_true, dtype=float).reshape(-1)
        if len(delta) != len(rel):
            raise InputError(format_message(
                "delta_true must have one entry per coefficient (or be a slope)",
                seen={"len(delta_true)": len(delta), "coefficients": len(rel)},
                fix="pass delta_true=slope * (rel_times - ref) or a number"))
    if not np.all(np.isfinite(delta)):
        raise InputError("delta_true must be finite.")
    sp = sig[np.ix_(pre, pre)]
    se = np.sqrt(np.diag(sig))
    ub = c * np.sqrt(np.diag(sp))
    p_pass = rect_prob(delta[pre], sp, -ub, ub)
    p_pass0 = rect_prob(np.zeros(len(pre)), sp, -ub, ub)
    dist_alt = stats.multivariate_normal(delta[pre], sp)
    dist_0 = stats.multivariate_normal(np.zeros(len(pre)), sp)
    lr = float(np.exp(dist_alt.logpdf(beta[pre]) - dist_0.logpdf(beta[pre])))
    mean_pre = truncated_mean(delta[pre], sp, -ub, ub)
    mean_all = np.full(len(rel), np.nan)
    mean_all[pre] = mean_pre
    if len(post):
        s12 = sig[np.ix_(post, pre)]
        mean_all[post] = delta[post] + s12 @ np.linalg.solve(sp, mean_pre - delta[pre])
    frame = pd.DataFrame({"rel_time": rel, "estimate": beta, "std_error": se,
                          "delta_true": delta, "mean_after_pretest": mean_all,
                          "period": np.where(rel < ref, "pre", "post")})
    if ref not in set(rel):
        frame = pd.concat([frame, pd.DataFrame({
            "rel_time": [float(ref)], "estimate": [0.0], "std_error": [0.0],
            "delta_true": [0.0], "mean_after_pretest": [0.0], "period": ["reference"]})],
            ignore_index=True).sort_values("rel_time", kind="stable").reset_index(drop=True)
    if names is not None:
        frame.insert(0, "term", frame["rel_time"].map(dict(zip(rel, names, strict=True))))
    k = len(pre)
    method = ("exact iterated Gauss-Legendre quadrature" if k <= EXACT_MAX_DIM else
              f"seeded quasi-Monte-Carlo (Genz; absolute error target {QMC_ABSEPS:g})")
    return PretrendPower(power=1.0 - p_pass, bayes_factor=p_pass / p_pass0,
                         likelihood_ratio=lr, size=1.0 - p_pass0, _frame=frame,
                         critical_value=c, method=method, slope=slope,
                         spec={"ref": ref, "alpha": alpha, "n_pre": k,
                               "terms": tuple(names) if names else None})


def power_against_att_se(result: Any, *, ref: float = -1, alpha: float = 0.05,
                         l_vec: Any = None) -> dict[str, Any]:
    """Power of the pre-test against the linear trend that would bias the result's overall
    ATT by one of its own standard errors.

    With the ATT ``= l' beta_post`` (weights from the result itself, see
    :func:`twinimpact.inference.honest_did.overall_weights`), a trend
    ``delta_t = s (t - ref)`` biases it by ``s * sum_e l_e (e - ref)``; the slope
    ``s* = SE(ATT) / sum_e l_e (e - ref)`` is the smallest trend that matters at the
    precision of the estimate. Low power against it (say below 50%) means a passed
    pre-test says little. ``l_vec`` (weights over the post-period coefficients) replaces
    the ATT by ``l_vec' beta_post``. Returns ``{"slope", "power", "att", "att_se",
    "weights", "size"}``.
    """
    from .honest_did import overall_weights

    _, sig, rel, names = event_study_inputs(result)
    post = [i for i, r in enumerate(rel) if r > ref and r >= 0]
    post_names = [names[i] for i in post]
    if l_vec is None:
        w = overall_weights(result, post_names)
        att_se = float(result.std_errors["ATT"])
        att = float(result.params["ATT"])
    else:
        w = np.asarray(l_vec, dtype=float).reshape(-1)
        if len(w) != len(post):
            raise InputError(format_message("l_vec needs one weight per post-period term",
                                            seen={"len(l_vec)": len(w), "post": len(post)}))
        sp_post = sig[np.ix_(post, post)]
        att_se = float(np.sqrt(w @ sp_post @ w))
        att = float(w @ result.params[post_names].to_numpy(dtype=float))
    lever = float(w @ (rel[post] - ref))
    slope = att_se / lever
    pre = _pre_indices(rel, ref)
    sp = sig[np.ix_(pre, pre)]
    c = _crit(alpha, None)
    power = 1.0 - _pass_prob(slope * (rel[pre] - ref), sp, c)
    size = 1.0 - _pass_prob(np.zeros(len(pre)), sp, c)
    return {"slope": slope, "power": power, "att": att,
            "att_se": att_se, "weights": dict(zip(post_names, w.tolist(), strict=True)),
            "size": size}
