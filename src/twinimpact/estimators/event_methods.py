"""``event_study(method=...)``: one call, any heterogeneity-robust event-study estimator.

Maps the common event-study keywords onto each estimator:

=====================  ===========================================================
method                 what runs
=====================  ===========================================================
``callaway_santanna``  ``callaway_santanna(...)`` then ``.aggregate("dynamic",
                       min_e=-leads, max_e=lags)`` (R did ``aggte(type="dynamic")``);
                       ``na_rm`` and ``balance_e`` go to the aggregation
``sun_abraham``        ``sun_abraham(...)``; rows outside ``[-leads, lags]`` are
                       estimated (fixest ``sunab`` uses all periods) but not shown
``imputation``         ``imputation(..., horizons=0..lags, pretrends=leads)``
``did2s``              ``did2s(..., event_study=True)``
``poisson``            ``poisson_event_study(..., leads, lags, ref)`` (log-scale
                       effects in levels, zeros kept; its own ``method`` is passed as
                       ``poisson_method="etwfe"|"dynamic"``)
=====================  ===========================================================

Extra keywords are passed to the estimator unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import SpecificationError, format_message
from ..results import variance_scale, wald_pretrend_test
from .registry import get_estimator

__all__ = ["run_event_method"]


def _window_filter(result: Any, leads: int | None, lags: int | None) -> Any:
    """Keep rel_time rows inside the window (and non-event rows such as ATT)."""
    if (leads is None and lags is None) or result.term_info is None \
            or "rel_time" not in result.term_info.columns:
        return result
    rel = result.term_info["rel_time"].to_numpy(dtype=float)
    lo = -np.inf if leads is None else -leads
    hi = np.inf if lags is None else lags
    keep = np.isnan(rel) | ((rel >= lo) & (rel <= hi))
    if keep.all():
        return result
    idx = np.flatnonzero(keep)
    terms = tuple(result.terms[i] for i in idx)
    coef, cov = result.coef[idx], result.cov[np.ix_(idx, idx)]
    changes: dict[str, Any] = {}
    pt = result.pretrend_test
    if pt is not None and pt.terms:
        # the pre-trend test covers the pre-treatment coefficients the result reports:
        # those inside the window (a test over every lead of a long panel -- 124 of them
        # with 193 clusters in the de_exports study -- is not the test the reader sees)
        pos = {t: i for i, t in enumerate(terms)}
        kept = [t for t in pt.terms if t in pos]
        if len(kept) != len(pt.terms):
            sub = [pos[t] for t in kept]
            changes["pretrend_test"] = wald_pretrend_test(
                kept, coef[sub], cov[np.ix_(sub, sub)],
                df_denominator=result.vcov_spec.df, estimator=result.estimator,
                scale=variance_scale(result.cov),
                what=(f"{pt.note} -- over the {len(kept)} pre-treatment coefficients "
                      f"inside the event window (rel_time >= {lo:g})"))
    return result.replace(terms=terms, coef=coef, cov=cov,
                          term_info=result.term_info.iloc[idx], **changes)


def run_event_method(method: str, data: pd.DataFrame, *, outcome: str, unit: str, time: str,
                     cohort: str, leads: int | None, lags: int | None,
                     ref: int | Sequence[int], covariates: Sequence[str] | None,
                     cluster: Any, alpha: float, **options: Any) -> Any:
    """Run ``method`` as an event study (see the module docstring)."""
    fn = get_estimator("poisson_event_study" if method == "poisson" else method)
    base = dict(outcome=outcome, unit=unit, time=time, cohort=cohort)
    if covariates:
        if "covariates" not in inspect.signature(fn).parameters:
            raise SpecificationError(format_message(
                f"event_study(method={method!r}) does not take covariates", seen=covariates,
                fix="drop covariates=, or use method='twfe', 'callaway_santanna', "
                    "'sun_abraham' or 'did2s'"))
        base["covariates"] = list(covariates)
    if cluster is not None:
        base["cluster"] = cluster
    if method == "callaway_santanna":
        agg = {k: options.pop(k) for k in ("na_rm", "balance_e") if k in options}
        res = fn(data, **base, alpha=alpha, **options)
        return res.aggregate("dynamic", min_e=None if leads is None else -int(leads),
                             max_e=None if lags is None else int(lags), **agg)
    if method == "sun_abraham":
        if ref not in (-1, (-1,), [-1]):
            options.setdefault("ref", ref)
        return _window_filter(fn(data, **base, alpha=alpha, **options), leads, lags)
    if method == "imputation":
        horizons = True if lags is None else list(range(int(lags) + 1))
        options.setdefault("horizons", horizons)
        if leads:
            options.setdefault("pretrends", int(leads))
        return fn(data, **base, alpha=alpha, **options)
    if method == "did2s":
        options.setdefault("event_study", True)
        return _window_filter(fn(data, **base, alpha=alpha, **options), leads, lags)
    if method == "poisson":
        if "poisson_method" in options:
            options["method"] = options.pop("poisson_method")
        return fn(data, **base, leads=leads, lags=lags, ref=ref, alpha=alpha, **options)
    raise SpecificationError(format_message("unknown event-study method", seen=method,
                                            fix="see ti.event_study's docstring"))
