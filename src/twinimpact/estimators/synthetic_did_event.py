"""Event-study synthetic difference-in-differences (Stata ``sdid_event``).

Ciccia (2024), "A short note on event-study synthetic difference-in-differences
estimators" (arXiv 2407.09565), as implemented by the Stata command ``sdid_event``
(Ciccia, Clarke & Pailañir): each adoption cohort is fitted as a synthetic-DiD block
against the never-treated units (:func:`~twinimpact.synthetic_did`, with the same
weights and covariate adjustment), and its per-period gap ``d_t`` (treated mean minus the
omega-weighted controls) is compared with the lambda-weighted pre-period gap:

* effect ``l`` periods after adoption (Stata ``Effect_{l+1}``; our ``rel_time = l``):
  ``d_{a+l} - sum_s lambda_s d_s``;
* placebo ``l`` periods before adoption (``Placebo_l``; ``rel_time = -l``):
  ``d_{a-l} - sum_s lambda_s d_s``.

Cohorts are combined with weights proportional to their treated units ``N1_g`` among the
cohorts observed at that horizon; the ``ATT`` row is the ``N1_g T1_g``-weighted average of
the cohort estimates, identical to :func:`~twinimpact.synthetic_did`'s. Standard errors are
the standard deviation of bootstrap (units resampled) or placebo (treatment paths
reassigned to controls) replications, with the ``B - 1`` divisor as ``sdid_event``;
as there, every replication re-estimates the weights from scratch on its own sample (new
noise level and regularisation), unlike :func:`~twinimpact.synthetic_did`'s replications,
which start from the original weights as R ``synthdid``.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..core.validation import require_frame
from ..errors import (
    EstimationError,
    NotComputableWarning,
    SpecificationError,
    check_literal,
    format_message,
)
from ..results import (
    ATTDefinition,
    EstimationResult,
    VcovSpec,
    make_result,
    variance_scale,
    wald_pretrend_test,
)
from ._sdid_blocks import event_contrasts
from .synthetic_did import (
    COVARIATE_METHODS,
    PROJECTION_SAMPLES,
    SDID_METHODS,
    BlockFitter,
    _build_design,
    _check_options,
    _covariate_array,
    _covariate_list,
    _drop_missing_covariates,
)

__all__ = ["synthetic_did_event"]

EVENT_SE = ("bootstrap", "placebo", None)


def _combine(rows: np.ndarray, n1: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """Combine per-cohort contrasts ``(G, 1 + E + P)``: ATT by ``N1 T1``, the rest by
    ``N1`` over the cohorts where the horizon exists (NaN where none has it)."""
    out = np.full(rows.shape[1], np.nan)
    w0 = n1 * t1
    out[0] = float(w0 @ rows[:, 0] / w0.sum())
    for j in range(1, rows.shape[1]):
        ok = ~np.isnan(rows[:, j])
        if ok.any():
            out[j] = float(n1[ok] @ rows[ok, j] / n1[ok].sum())
    return out


def synthetic_did_event(data: pd.DataFrame, *, outcome: str, unit: str, time: str,
                        treated: str | None = None, cohort: str | None = None,
                        method: Literal["sdid", "sc", "did"] = "sdid",
                        effects: int | None = None, placebo: int | Literal["all"] = 0,
                        covariates: str | list[str] | None = None,
                        covariate_method: Literal["optimized", "projected"] = "projected",
                        projection_sample: Literal["never_treated", "not_yet_treated"]
                        = "not_yet_treated",
                        se: Literal["bootstrap", "placebo"] | None = "bootstrap",
                        n_reps: int = 50, seed: int | np.random.Generator | None = None,
                        alpha: float = 0.05) -> EstimationResult:
    """Event study by relative time from synthetic-DiD cohort blocks (Stata ``sdid_event``).

    Parameters
    ----------
    data, outcome, unit, time, treated, cohort, method, covariates
        As :func:`~twinimpact.synthetic_did` (balanced panel, absorbing treatment).
    covariate_method, projection_sample
        As :func:`~twinimpact.synthetic_did`, but the defaults are what ``sdid_event``
        does with ``covariates(x)``: residualise the outcome on the covariates with unit
        and period fixed effects on every untreated unit-period (``"projected"``,
        ``"not_yet_treated"``) — this reproduces its published output (see the tests).
    effects : int, optional
        Number of post-adoption horizons ``rel_time = 0 .. effects - 1`` (``sdid_event``'s
        ``effects()``; default: every horizon some cohort reaches).
    placebo : int or "all"
        Number of pre-adoption placebos ``rel_time = -1 .. -placebo`` (``placebo()``;
        ``"all"``: every pre-period the latest cohort has).
    se : {"bootstrap", "placebo", None}
        ``vce()`` of ``sdid_event``; ``n_reps`` replications (``brep()``, default 50).
    seed, alpha
        Random seed; level of the normal intervals.

    Returns
    -------
    EstimationResult
        Rows ``rel_time=<l>`` (effects and placebos) and ``ATT``; ``pretrend_test`` in the
        diagnostics is the joint Wald test that every placebo is zero (replication
        covariance); ``diagnostics["cohort_estimates"]`` holds the per-cohort rows
        (``sdid_event``'s ``disag``).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(1)
    >>> rows = [(u, t, u % 5 + 0.2 * t + rng.normal(0, 0.05)
    ...          + (1.0 + 0.5 * (t - 6) if u < 3 and t >= 6 else 0.0), int(u < 3 and t >= 6))
    ...         for u in range(20) for t in range(10)]
    >>> d = pd.DataFrame(rows, columns=["city", "year", "y", "w"])
    >>> es = synthetic_did_event(d, outcome="y", unit="city", time="year", treated="w",
    ...                          placebo=2, se=None)
    >>> [round(float(es.params[f"rel_time={k}"]), 1) for k in (0, 1, 2)]
    [1.0, 1.5, 2.0]
    """
    _check_options(method, None, max(n_reps, 2), seed, alpha)
    check_literal("se", se, EVENT_SE)
    check_literal("method", method, SDID_METHODS)
    check_literal("covariate_method", covariate_method, COVARIATE_METHODS)
    check_literal("projection_sample", projection_sample, PROJECTION_SAMPLES)
    data = require_frame(data, what="synthetic_did_event: data")
    if (treated is None) == (cohort is None):
        raise SpecificationError(format_message(
            "synthetic_did_event: give exactly one of treated= (0/1 column) or cohort= "
            "(first treated period)", seen={"treated": treated, "cohort": cohort},
            fix="e.g. treated='quota' as in Stata sdid_event"))
    covs = _covariate_list(covariates)
    data, cov_drop = _drop_missing_covariates(data, covs, unit, time, outcome, treated, cohort)
    design = _build_design(data, outcome, unit, time, treated, cohort, method)
    Y = design.Y.to_numpy()
    N, T = Y.shape
    X = _covariate_array(data, design, covs, unit, time) if covs else None
    fitter = BlockFitter(Y, X, design.N0, design.groups, method,
                         covariate_method if covs else None, projection_sample,
                         warm_start=False)
    fitter.fit_all()
    max_eff = max(T - g.a for g in design.groups)
    max_pl = max(g.a for g in design.groups)
    n_eff = _count("effects", effects, max_eff)
    n_pl = max_pl if placebo == "all" else _count("placebo", placebo, max_pl, allow_zero=True)

    def stat(blocks) -> np.ndarray:
        ok = [b for b in blocks if b is not None]
        rows = np.array([event_contrasts(b, n_eff, n_pl) for b in ok])
        n1 = np.array([b.n1 for b in ok], dtype=float)
        t1 = np.array([T - b.a for b in ok], dtype=float)
        return _combine(rows, n1, t1)

    est = stat(fitter.blocks)
    per_cohort = np.array([event_contrasts(b, n_eff, n_pl) for b in fitter.blocks])
    terms = (["ATT"] + [f"rel_time={ell}" for ell in range(n_eff)]
             + [f"rel_time={-ell}" for ell in range(1, n_pl + 1)])
    rel = [np.nan] + list(range(n_eff)) + [-ell for ell in range(1, n_pl + 1)]
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    k = len(terms)
    cov = np.full((k, k), np.nan)
    n1_tot = sum(len(g.rows) for g in design.groups)
    diag: dict[str, Any] = {"n_input_rows": len(data),
                            "dropped_rows": dict(cov_drop["dropped_rows"]),
                            "n_units": N, "n_periods": T, "N0": design.N0, "N1": n1_tot,
                            "n_cohorts": len(design.groups)}
    if se is not None:
        if se == "placebo" and design.N0 <= n1_tot:
            raise EstimationError(format_message(
                f"synthetic_did_event: placebo standard errors need more control units "
                f"than treated units; got {design.N0} control(s) and {n1_tot} treated",
                fix="use se='bootstrap' or add never-treated units"))
        if se == "bootstrap" and n1_tot == 1:
            warnings.warn(format_message(
                "synthetic_did_event: the bootstrap is undefined with a single treated "
                "unit; standard errors are NaN", fix="use se='placebo'"),
                NotComputableWarning, stacklevel=2)
        else:
            reps, rejected = fitter.replicates(se, n_reps, rng)
            R = np.array([stat(b) for b in reps])
            good = ~np.isnan(R).any(axis=0)
            if good.any():
                sub = np.cov(R[:, good], rowvar=False, ddof=1).reshape(good.sum(), good.sum())
                idx = np.flatnonzero(good)
                cov[np.ix_(idx, idx)] = sub
            diag["n_reps"] = n_reps
            if se == "bootstrap":
                diag["bootstrap_rejected_draws"] = rejected
    # report order as the other event studies: placebos (earliest first), effects, ATT
    order = (list(range(len(terms) - 1, n_eff, -1)) + list(range(1, n_eff + 1)) + [0])
    terms = [terms[i] for i in order]
    rel = [rel[i] for i in order]
    est = est[order]
    cov = cov[np.ix_(order, order)]
    pl_idx = [i for i, r in enumerate(rel) if isinstance(r, int) and r < 0]
    pretrend = (wald_pretrend_test(
        [terms[i] for i in pl_idx], est[pl_idx], cov[np.ix_(pl_idx, pl_idx)],
        warn=se is not None, estimator="synthetic_did_event", scale=variance_scale(cov),
        what="joint Wald chi2 test that every placebo is zero (replication covariance)")
        if pl_idx else None)
    diag["cohort_estimates"] = pd.DataFrame(
        per_cohort[:, order], index=pd.Index(design.cohorts, name="cohort"), columns=terms)
    att_def = ATTDefinition("treated_units_times_post_periods",
                            "each rel_time: cohorts observed at that horizon weighted by "
                            "their treated units N1_g (Stata sdid_event)")
    desc = {None: "no standard errors requested (se=None)",
            "bootstrap": f"bootstrap standard deviation over {n_reps} unit resamples "
                         "(B-1 divisor, as sdid_event)",
            "placebo": f"placebo standard deviation over {n_reps} reassignments of the "
                       "treatment paths to control units (B-1 divisor, as sdid_event)"}[se]
    vspec = VcovSpec(kind=se or "none", cluster=(unit,) if se else (),
                     n_clusters=(N,) if se else (), df=None, description=desc)
    spec = {"outcome": outcome, "unit": unit, "time": time, "treated": treated,
            "cohort": cohort, "method": method, "effects": n_eff, "placebo": n_pl,
            "covariates": list(covs), "covariate_method": covariate_method if covs else None,
            "projection_sample": projection_sample
            if covs and covariate_method == "projected" else None, "se": se, "n_reps": n_reps,
            "seed": seed if not isinstance(seed, np.random.Generator) else "Generator",
            "alpha": alpha}
    term_info = pd.DataFrame({"rel_time": rel}, index=terms)
    with warnings.catch_warnings():
        if se is None:
            warnings.simplefilter("ignore", NotComputableWarning)
        return make_result("synthetic_did_event", pd.Series(est, index=terms), cov, vspec,
                           nobs=N * T, spec=spec, diagnostics=diag, term_info=term_info,
                           nan_reason="no cohort is observed at that horizon, or the "
                                      "replications could not estimate it",
                           pretrend_test=pretrend, att_definition=att_def)


def _count(name: str, value: Any, maximum: int, allow_zero: bool = False) -> int:
    if value is None:
        return maximum
    lo = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < lo:
        raise SpecificationError(format_message(
            f"synthetic_did_event: {name}= must be an integer >= {lo}", seen=value,
            fix=f"pass e.g. {name}=3" + (" or placebo='all'" if name == "placebo" else "")))
    if value > maximum:
        warnings.warn(format_message(
            f"synthetic_did_event: {value} {name} requested but the panel supports at most "
            f"{maximum}; using {maximum}", fix=f"pass {name}={maximum} or fewer"),
            NotComputableWarning, stacklevel=3)
        return maximum
    return int(value)
