"""Two-way fixed-effects difference-in-differences: static (:func:`twfe`) and dynamic
(:func:`event_study`).

Both regress the outcome on treatment indicators (and optional covariates) with unit and
time fixed effects. The treatment / event dummies are never demeaned: their cross-products
and score sums come from counts per unit and period -- on a balanced unit x time panel
without weights in closed form (:func:`twinimpact.core.fe.ols_twoway_balanced`), on an
unbalanced or weighted one through the exact two-way projection
(:func:`twinimpact.core.fe.ols_twoway_small_time`); memory O(n) plus O(units x event
times), for every variance (cluster, two-way cluster, HC, iid, Driscoll-Kraay from the
score sums by period). Only when neither fixed-effect set is small (more than 2,000
periods and units) are the fixed effects swept out of the dense (n, k) design by
alternating projections (:func:`twinimpact.core.fe.demean`); all give the same numbers
(tested to 1e-12).
Standard errors follow R fixest's defaults
(see :mod:`twinimpact.core.vcov`): clustered by unit unless told otherwise,
small-sample factors ``(n-1)/(n-K)`` with fixed effects nested in the cluster not
counted in K, ``G/(G-1)``, and a t(G-1) reference distribution.

Keyword mapping to fixest: ``twfe(d, outcome="y", unit="id", time="year",
treatment="D")`` is ``feols(y ~ D | id + year, d)``; ``event_study(..., ref=-1)`` is
``feols(y ~ i(rel_time, ref=-1) | id + year)`` with never-treated units in the control
group (their event-time dummies are all zero).

With staggered adoption and heterogeneous effects these TWFE estimands are weighted
averages with possibly negative weights (Goodman-Bacon 2021; de Chaisemartin &
D'Haultfœuille 2020); use ``event_study(method=...)`` for the heterogeneity-robust
estimators.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..core.fe import SandwichVcov, factorize, fit_fe_codes
from ..core.threads import blas_single_thread
from ..core.validation import (
    as_frame,
    as_tuple,
    check_weights,
    dense_codes,
    first_in_caller_order,
    gap_aware_refs,
    prepare_panel,
    require_columns,
)
from ..core.vcov import driscoll_kraay_from_sums
from ..errors import (
    InputError,
    NotComputableWarning,
    SpecificationError,
    check_alpha,
    check_literal,
    format_message,
)
from ..results import ATTDefinition, EstimationResult, event_pretrend_test, make_result

__all__ = ["EVENT_STUDY_METHODS", "event_study", "twfe"]

VcovKind = Literal["iid", "hetero", "cluster", "driscoll_kraay"]
EVENT_STUDY_METHODS = ("twfe", "callaway_santanna", "sun_abraham", "imputation", "did2s",
                       "poisson")


def _cluster_codes(frame: pd.DataFrame, clus: Sequence[str], unit: str, time: str,
                   unit_codes: np.ndarray, time_codes: np.ndarray) -> list[np.ndarray]:
    """Dense cluster codes, reusing the unit / time codes of the validated panel."""
    out = []
    for c in clus:
        if c == unit:
            out.append(unit_codes)
        elif c == time:
            out.append(time_codes)
        else:
            out.append(factorize(frame[c])[0])
    return out


def _resolve_vcov(vcov: str | None, cluster: tuple[str, ...], unit: str) -> tuple[str, tuple]:
    if vcov is None:
        vcov = "cluster"
    check_literal("vcov", vcov, ("iid", "hetero", "cluster", "driscoll_kraay"))
    if vcov == "cluster" and not cluster:
        cluster = (unit,)
    if vcov != "cluster" and cluster:
        raise SpecificationError(format_message(
            f"vcov={vcov!r} conflicts with cluster={cluster!r}",
            fix="drop cluster= or use vcov='cluster'"))
    return vcov, cluster


@blas_single_thread
def twfe(data: pd.DataFrame, *, outcome: str, unit: str, time: str,
         treatment: str | None = None, cohort: str | None = None,
         covariates: Sequence[str] | None = None, cluster: str | Sequence[str] | None = None,
         vcov: VcovKind | None = None, weights: str | None = None,
         alpha: float = 0.05, bandwidth: float | None = None) -> EstimationResult:
    """Static two-way fixed-effects DiD: ``y_it = a_i + l_t + b D_it + X_it'g + e_it``.

    Parameters
    ----------
    data : DataFrame
        Long panel, one row per unit x period (unbalanced panels are fine).
    outcome, unit, time : str
        Column names (fixest: the left-hand side, the two fixed effects).
    treatment : str, optional
        0/1 column ``D_it`` that is 1 when the unit is treated in that period.
    cohort : str, optional
        Instead of ``treatment``: first treated period; never treated = NaN, 0 or a value
        after the last period. Then ``D_it = 1[time >= cohort]``.
    covariates : list of str, optional
        Time-varying controls (numeric).
    cluster : str or list of str, optional
        Cluster variable(s); default is ``unit`` (fixest's default before 0.13, the
        first fixed effect; fixest >= 0.13 defaults to iid, so compare with
        ``vcov = ~unit`` there). Two names give two-way clustering.
    vcov : {"cluster", "hetero", "iid", "driscoll_kraay"}, optional
        Default ``"cluster"``. ``"driscoll_kraay"``: Driscoll-Kraay standard errors,
        robust to shocks common to all units in a period and their persistence (trade
        panels), from linearmodels (``PanelOLS(..., entity_effects=True,
        time_effects=True).fit(cov_type="kernel", debiased=True)``; Stata ``xtscc``);
        with weights, the scores are ``w_it x_it e_it`` (linearmodels ``weights=``).
    weights : str, optional
        Column of observation weights (WLS; fixest ``weights = ~w``).
    alpha : float
        Default level for intervals in ``summary``/``to_frame`` (changeable there).
    bandwidth : float, optional
        Kernel lags for ``vcov="driscoll_kraay"`` (default ``floor(4 (T/100)^(2/9))``).

    Returns
    -------
    EstimationResult
        Term ``"ATT"`` is the coefficient of ``D``; covariates follow by name.

    Examples
    --------
    >>> import numpy as np, pandas as pd, twinimpact as ti
    >>> rng = np.random.default_rng(0)
    >>> d = pd.DataFrame({"id": np.repeat(np.arange(40), 6), "year": np.tile(np.arange(6), 40)})
    >>> d["g"] = np.where(d["id"] < 20, 3, 0)
    >>> d["y"] = 0.5 * ((d["g"] > 0) & (d["year"] >= d["g"])) + rng.normal(0, .01, len(d))
    >>> r = ti.twfe(d, outcome="y", unit="id", time="year", cohort="g")
    >>> round(float(r.params["ATT"]), 2)
    0.5
    """
    data = as_frame(data, what="twfe: data")
    check_alpha(alpha)
    if (treatment is None) == (cohort is None):
        raise SpecificationError(format_message(
            "twfe needs exactly one of treatment= (a 0/1 column) or cohort= (first treated "
            "period)", seen={"treatment": treatment, "cohort": cohort},
            fix="pass treatment='D' or cohort='first_treat'"))
    covariates = list(covariates or [])
    clus = as_tuple(cluster)
    vcov, clus = _resolve_vcov(vcov, clus, unit)
    extra = [c for c in clus if c not in (unit, time)]
    num_extra = [*covariates, *([treatment] if treatment else []), *([weights] if weights else [])]
    pdata = prepare_panel(data, outcome=outcome, unit=unit, time=time, cohort=cohort,
                          extra=extra, numeric_extra=num_extra, estimator="twfe",
                          order_by_unit=True)
    f = pdata.frame
    if treatment is not None:
        d = f[treatment].to_numpy(dtype=float)
        if not np.isin(d, (0.0, 1.0)).all():
            bad = d[first_in_caller_order(~np.isin(d, (0.0, 1.0)), pdata.rows)]
            raise InputError(format_message(
                f"treatment column {treatment!r} must be 0/1", seen=bad,
                fix="pass a 0/1 indicator, or cohort= with the first treated period"))
    else:
        g = f["cohort"].to_numpy()
        d = (~np.isnan(g) & (f["time"].to_numpy() >= g)).astype(float)
    if d.min() == d.max():
        raise InputError(format_message(
            "the treatment indicator does not vary (all rows " + ("treated" if d[0] else
                                                                  "untreated") + ")",
            fix="check the treatment/cohort column and the sample window"))
    # design: the treatment dummy as a one-column indicator block, then the covariates
    z = np.empty((len(f), len(covariates)))
    for j, c in enumerate(covariates):
        z[:, j] = f[c].to_numpy(dtype=float)
    names = ["ATT", *covariates]
    w = f[weights].to_numpy(dtype=float) if weights else None
    if w is not None:
        check_weights(w, f, column=weights, estimator="twfe", unit=unit, time=time,
                      rows=pdata.rows)
    u_codes, t_codes = pdata.unit_codes, pdata.time_codes
    onehot = np.where(d == 1.0, 0, -1)
    params, v, vspec, info = fit_fe_codes(
        f["y"].to_numpy(), z, names, [u_codes, t_codes], _cluster_codes(
            f, clus, unit, time, u_codes, t_codes),
        vcov="iid" if vcov == "driscoll_kraay" else vcov, cluster_names=clus, weights=w,
        onehot=onehot, return_source=True)
    source = _complete_source(info.pop("vcov_source"), "twfe", pdata, f, pdata.rows,
                              unit, time, u_codes, t_codes, extra)
    if vcov == "driscoll_kraay":
        v, vspec = _with_driscoll_kraay(source, u_codes, t_codes, bandwidth)
    spec = {"outcome": outcome, "unit": unit, "time": time, "treatment": treatment,
            "cohort": cohort, "covariates": tuple(covariates), "cluster": clus, "vcov": vcov,
            "weights": weights, "alpha": alpha, "fixed_effects": (unit, time),
            "bandwidth": bandwidth}
    diag = {**pdata.diagnostics(), **info, "n_units": int(u_codes.max()) + 1,
            "n_periods": int(t_codes.max()) + 1, "n_treated_obs": int(d.sum())}
    return make_result("twfe", params, v, vspec, len(f), spec=spec, diagnostics=diag,
                       nan_reason="collinear with the fixed effects", vcov_source=source,
                       att_definition=ATTDefinition(
                           "regression_coefficient",
                           "two-way fixed-effects coefficient on the treatment indicator"))


def _complete_source(src: SandwichVcov, estimator: str, pdata: Any, f: pd.DataFrame,
                     rows: np.ndarray, unit: str, time: str, u_codes: np.ndarray,
                     t_codes: np.ndarray, extra: Sequence[str]) -> SandwichVcov:
    """The fit's :class:`SandwichVcov` with what ``with_vcov`` needs from the panel: the
    positions of the used rows in the caller's frame and the columns one may cluster on
    without passing ``data`` (unit, time, the fit's cluster columns)."""
    cols = {unit: u_codes, time: t_codes, **{c: f[c].to_numpy() for c in extra}}
    return dataclasses.replace(src, estimator=estimator, rows=np.asarray(rows),
                               n_input=pdata.n_input, columns=cols)


def _with_att_row(v: np.ndarray, vspec: Any, k_total: int, *,
                  a: np.ndarray) -> tuple[np.ndarray, Any]:
    """Append the ``ATT`` row (``a @ coef``) to the coefficients' vcov."""
    k = len(a)
    post = a > 0
    big = np.full((k + 1, k + 1), np.nan)
    big[:k, :k] = v
    with np.errstate(invalid="ignore"):
        big[k, :k] = big[:k, k] = v @ a if post.any() else np.nan
        big[k, k] = a @ v @ a if post.any() else np.nan
    return big, vspec


def _with_driscoll_kraay(source: SandwichVcov, u_codes: np.ndarray, t_codes: np.ndarray,
                         bandwidth: float | None) -> tuple[np.ndarray, Any]:
    """Driscoll-Kraay vcov of a two-way fixed-effects fit (see
    core.vcov.driscoll_kraay_from_sums) from the fit's scores summed by period: the
    fast paths give those sums without the (n, k) design (``cluster_sums`` by period);
    the dense fallback sums its score matrix. Same numbers as linearmodels' DriscollKraay
    on the within-transformed design (tested)."""
    n_t = int(t_codes.max()) + 1
    if source.cluster_sums is not None:
        sums = source.cluster_sums(t_codes)
    else:
        sc = source.scores
        sums = np.empty((n_t, sc.shape[1]))
        for j in range(sc.shape[1]):
            sums[:, j] = np.bincount(t_codes, weights=sc[:, j], minlength=n_t)
    k_fe = int(u_codes.max()) + n_t     # N + T - 1 absorbed
    v_ok, vspec = driscoll_kraay_from_sums(sums, source.bread, n=source.n, k_absorbed=k_fe,
                                           bandwidth=bandwidth)
    k = len(source.kept)
    v = np.full((k, k), np.nan)
    v[np.ix_(source.kept, source.kept)] = v_ok
    return v, vspec


def _ref_outside_window(refs: tuple[int, ...], lo: int, hi: int, leads: int | None,
                        lags: int | None, rel: np.ndarray, treated: np.ndarray,
                        data: pd.DataFrame, rows: np.ndarray, units: pd.Series, *, unit: str,
                        time: str, cohort: str) -> Exception:
    """The error for a reference period outside the event window ``[lo, hi]``, naming the
    real cause: no pre-treatment period in the data (treated units all treated from their
    first observed period, or before the panel starts), fewer observed leads/lags than
    ``ref`` needs, or a window (``leads``/``lags``) that excludes ``ref``."""
    below = [r for r in refs if r < lo]
    above = [r for r in refs if r > hi]
    n_treated = int(np.count_nonzero(np.bincount(pd.factorize(units[treated])[0])))
    n_never = int(np.count_nonzero(np.bincount(pd.factorize(units[~treated])[0]))) \
        if (~treated).any() else 0
    if below and leads is None:
        # a treated row at the earliest relative period (the first in the caller's rows)
        i = first_in_caller_order(rel == np.nanmin(rel), rows)
        def plain(v: Any) -> Any:
            return v.item() if isinstance(v, np.generic) else v

        example = (f"e.g. {unit} = {plain(units.iloc[i])!r}: {cohort} = "
                   f"{plain(data[cohort].iloc[rows[i]])!r}, first observed {time} = "
                   f"{plain(data[time].iloc[rows[i]])!r}")
        if lo >= 0:
            return InputError(format_message(
                f"event_study: no treated unit is observed before its first treated period, "
                f"so the reference period ref={below[0]} (the period the event-time effects "
                f"are measured against) does not exist in the data",
                where=f"column {cohort!r}: all {n_treated} treated unit(s) are treated from "
                      f"their first observed period or earlier ({example}); "
                      f"{n_never} never-treated unit(s)",
                seen={"ref": refs, "earliest relative period observed": lo},
                fix=f"include periods before the earliest treatment in the data, or drop the "
                    f"units treated from their first observed period (always treated); check "
                    f"that {cohort!r} holds the first treated period (NaN/0 = never)"))
        return SpecificationError(format_message(
            f"event_study: reference period ref={below[0]} is not observed: treated units are "
            f"observed at most {-lo} period(s) before their treatment",
            where=f"column {cohort!r} ({example})",
            seen={"ref": refs, "relative periods observed": (lo, hi)},
            fix=f"choose ref between {lo} and -1 (default -1)"))
    if above and lags is None:
        return SpecificationError(format_message(
            f"event_study: reference period ref={above[0]} is not observed: treated units are "
            f"observed at most {hi} period(s) after their first treated period",
            where=f"column {cohort!r}", seen={"ref": refs, "relative periods observed": (lo, hi)},
            fix=f"choose ref between {lo} and {hi} (default -1)"))
    return SpecificationError(format_message(
        "event_study: reference period outside the event window",
        where=f"leads={leads}, lags={lags}",
        seen={"ref": refs, "window": (lo, hi)},
        fix="choose ref inside [-leads, lags] (default -1), or widen leads=/lags="))


def _window_of(rel: np.ndarray, leads: int | None, lags: int | None) -> tuple[int, int]:
    """The event window ``(lo, hi)``: ``-leads .. lags``, or the relative periods observed
    (``rel`` NaN on untreated rows; reductions only, no copy of ``rel``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo = int(np.nanmin(rel)) if leads is None else -int(leads)
        hi = int(np.nanmax(rel)) if lags is None else int(lags)
    return lo, hi


@blas_single_thread
def event_study(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
                leads: int | None = None, lags: int | None = None,
                ref: int | Sequence[int] = -1, bin_endpoints: bool = True,
                covariates: Sequence[str] | None = None,
                cluster: str | Sequence[str] | None = None, vcov: VcovKind | None = None,
                weights: str | None = None, method: str = "twfe", alpha: float = 0.05,
                bandwidth: float | None = None, **method_options: Any) -> EstimationResult:
    """Dynamic event study: effects by period relative to the first treated period.

    With ``method="twfe"`` (default) this is the dynamic TWFE regression
    ``y_it = a_i + l_t + sum_{e != ref} b_e 1[t - G_i = e] + X_it'g + e_it``; never-treated
    units (cohort NaN/0/after the panel) have all event dummies zero. Other methods run the
    heterogeneity-robust estimators with the same window: ``"callaway_santanna"`` (dynamic
    aggregation), ``"sun_abraham"``, ``"imputation"`` (BJS horizons and pre-trends) and
    ``"did2s"``; extra keywords go to that estimator.

    Parameters
    ----------
    leads, lags : int, optional
        Number of pre-treatment periods (``-leads .. -1``) and post-treatment periods
        (``0 .. lags``) to estimate; default: every relative period observed.
    ref : int or sequence of int
        Omitted relative period(s) (fixest ``i(rel_time, ref=-1)``). Default -1.
    bin_endpoints : bool
        True (default): relative periods beyond the window are binned into the end points
        (``<= -leads`` and ``>= lags``). False: observations of treated units outside the
        window are dropped (counted in ``diagnostics["dropped_rows"]``).
    covariates, cluster, vcov, weights, alpha, bandwidth
        As in :func:`twfe` (``vcov="driscoll_kraay"`` for common period shocks).
    method : str
        One of ``"twfe"``, ``"callaway_santanna"``, ``"sun_abraham"``, ``"imputation"``,
        ``"did2s"``, ``"poisson"`` (see :mod:`twinimpact.estimators.event_methods`).

    Returns
    -------
    EstimationResult
        Terms ``"rel_time=e"`` (``term_info["rel_time"] = e``), covariates by name, and
        ``"ATT"``: the equally weighted mean of the post-treatment (e >= 0) coefficients
        with its delta-method standard error. ``spec["ref"]`` holds the omitted periods.

    Examples
    --------
    >>> import twinimpact as ti
    >>> from twinimpact.estimators.twfe import _example_panel
    >>> r = ti.event_study(_example_panel(), outcome="y", unit="id", time="year",
    ...                    cohort="g")
    >>> [round(float(v), 1) for v in r.params[["rel_time=0", "rel_time=2"]]]
    [1.0, 3.0]
    """
    data = as_frame(data, what="event_study: data")
    check_alpha(alpha)
    check_literal("method", method, EVENT_STUDY_METHODS)
    for nm, v in (("leads", leads), ("lags", lags)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | np.integer)
                              or v < 0):
            raise SpecificationError(format_message(f"{nm} must be a non-negative integer",
                                                    seen=v, fix=f"pass e.g. {nm}=5"))
    if method != "twfe":
        from .event_methods import run_event_method

        if bandwidth is not None:
            method_options["bandwidth"] = bandwidth
        return run_event_method(method, data, outcome=outcome, unit=unit, time=time,
                                cohort=cohort, leads=leads, lags=lags, ref=ref,
                                covariates=covariates, cluster=cluster, alpha=alpha,
                                **method_options)
    if method_options:
        raise SpecificationError(format_message(
            "unknown keyword(s) for the TWFE event study", seen=sorted(method_options),
            fix="remove them, or choose method= for estimator-specific options"))
    refs = tuple(int(r) for r in ((ref,) if np.isscalar(ref) else ref))
    covariates = list(covariates or [])
    clus = as_tuple(cluster)
    vcov, clus = _resolve_vcov(vcov, clus, unit)
    require_columns(data, [cohort])
    extra = [c for c in clus if c not in (unit, time)]
    num_extra = [*covariates, *([weights] if weights else [])]
    pdata = prepare_panel(data, outcome=outcome, unit=unit, time=time, cohort=cohort,
                          extra=extra, numeric_extra=num_extra, estimator="event_study",
                          order_by_unit=True)
    f = pdata.frame
    dropped = dict(pdata.dropped)
    u_codes, t_codes = pdata.unit_codes, pdata.time_codes
    used_rows = pdata.rows
    g = f["cohort"].to_numpy()
    treated = ~np.isnan(g)
    if not treated.any():
        raise InputError(format_message(
            f"no treated unit: every value of {cohort!r} means 'never treated'",
            seen=sorted(pd.unique(data[cohort].dropna()))[:5],
            fix="cohort is the first treated period (NaN/0/after the panel = never)"))
    refs, gap_note = gap_aware_refs(refs, f["time"].to_numpy(), g, estimator="event_study",
                                    time_name=time)
    # relative time of the treated rows, then their event-time slot, in one float buffer
    # (no further n-sized temporaries: at 1e8 rows each costs 0.8 GB)
    rel = f["time"].to_numpy() - g          # NaN on never-treated rows
    del g
    # from here on the fit needs the outcome and the columns asked for, not the periods
    # and cohorts (16 bytes a row: 1.6 GB at 1e8 rows)
    keep_cols = list(dict.fromkeys(["y", "unit", *covariates, *extra,
                                    *([weights, "time"] if weights else [])]))
    f = f[keep_cols]
    pdata = dataclasses.replace(pdata, frame=f)
    lo, hi = _window_of(rel, leads, lags)
    if any(r < lo or r > hi for r in refs):
        raise _ref_outside_window(refs, lo, hi, leads, lags, rel, treated, data, used_rows,
                                  f["unit"], unit=unit, time=time, cohort=cohort)
    if bin_endpoints:
        np.clip(rel, lo, hi, out=rel)
    else:
        outside = treated & ((rel < lo) | (rel > hi))
        if outside.any():
            dropped["treated rows outside the event window"] = int(outside.sum())
            inside = ~outside
            used_rows = used_rows[inside]
            f = f.loc[inside].reset_index(drop=True)
            rel = rel[inside]
            treated = treated[inside]
            u_codes = dense_codes(u_codes[inside])[0]
            t_codes = dense_codes(t_codes[inside])[0]
        del outside
    # event-time indicator codes: slot 0 = untreated row, slot e - lo + 1 = event time e
    n_slots = hi - lo + 3
    rel -= lo - 1
    np.copyto(rel, 0.0, where=~treated)
    slot = rel.astype(np.int32)
    del rel
    seen = np.bincount(slot, minlength=n_slots)
    present = {e for e in range(lo, hi + 1) if seen[e - lo + 1] > 0}
    periods = [e for e in range(lo, hi + 1) if e not in refs]
    missing = [e for e in periods if e not in present]
    if missing:
        periods = [e for e in periods if e in present]
    lookup = np.full(n_slots, -1, dtype=np.int32)
    for j, e in enumerate(periods):
        lookup[e - lo + 1] = j
    col = lookup[slot]
    del slot
    names = [f"rel_time={e}" for e in periods] + covariates
    z = np.empty((len(f), len(covariates)))
    for j, c in enumerate(covariates):
        z[:, j] = f[c].to_numpy(dtype=float)
    w = f[weights].to_numpy(dtype=float) if weights else None
    if w is not None:
        check_weights(w, f, column=weights, estimator="event_study", unit=unit, time=time,
                      rows=used_rows)
    params, v, vspec, info = fit_fe_codes(
        f["y"].to_numpy(), z, names, [u_codes, t_codes], _cluster_codes(
            f, clus, unit, time, u_codes, t_codes),
        vcov="iid" if vcov == "driscoll_kraay" else vcov, cluster_names=clus, weights=w,
        onehot=col, return_source=True)
    if vcov == "driscoll_kraay":
        v, vspec = _with_driscoll_kraay(info["vcov_source"], u_codes, t_codes, bandwidth)
    # overall ATT: equally weighted mean of post-treatment coefficients
    post = np.array([n.startswith("rel_time=") and int(n.split("=")[1]) >= 0 for n in names])
    a = post / post.sum() if post.any() else post.astype(float)
    coef = params.to_numpy()
    att = float(a[post] @ coef[post]) if post.any() else np.nan
    full_names = [*names, "ATT"]
    big, _ = _with_att_row(v, vspec, 0, a=a)
    source = dataclasses.replace(
        _complete_source(info.pop("vcov_source"), "event_study", pdata, f, used_rows, unit,
                         time, u_codes, t_codes, extra),
        finish=partial(_with_att_row, a=a))
    all_params = pd.Series([*coef, att], index=full_names)
    term_info = pd.DataFrame(
        {"rel_time": [float(n.split("=")[1]) if n.startswith("rel_time=") else np.nan
                      for n in full_names]}, index=full_names)
    notes = [gap_note] if gap_note else []
    if missing:
        shown = [f"{m:g}" for m in missing]
        shown_txt = f"[{', '.join(shown)}]"
        if len(shown) > 8:  # (a long calendar can leave thousands: keep the note short)
            shown_txt = (f"[{', '.join(shown[:4])}, …, {', '.join(shown[-2:])}] "
                         f"({len(missing):,} periods)")
        notes.append(f"relative periods {shown_txt} have no observations and are not "
                     "estimated")
        if not gap_note:  # on a spaced calendar the off-grid periods cannot exist
            warnings.warn(f"event_study: relative periods {shown_txt} have no observations "
                          "in the window and are left out.", NotComputableWarning,
                          stacklevel=2)
    spec = {"outcome": outcome, "unit": unit, "time": time, "cohort": cohort,
            "leads": leads, "lags": lags, "window": (lo, hi), "ref": refs,
            "bin_endpoints": bin_endpoints, "covariates": tuple(covariates), "cluster": clus,
            "vcov": vcov, "weights": weights, "alpha": alpha, "method": "twfe",
            "fixed_effects": (unit, time), "bandwidth": bandwidth}
    n_units = int(u_codes.max()) + 1
    n_treated_units = int(np.count_nonzero(np.bincount(u_codes[treated], minlength=n_units)))
    diag = {**pdata.diagnostics(), "dropped_rows": dropped, **info,
            "n_units": n_units, "n_periods": int(t_codes.max()) + 1,
            # treatment status is constant within unit (prepare_panel checks the cohort)
            "n_treated_units": n_treated_units,
            "n_never_treated_units": n_units - n_treated_units,
            "notes": notes}
    return make_result("event_study", all_params, big, vspec, len(f), spec=spec,
                       diagnostics=diag, term_info=term_info,
                       nan_reason="collinear with the fixed effects or no variation",
                       vcov_source=source, pretrend_test=event_pretrend_test(
                           full_names, all_params.to_numpy(), big,
                           term_info["rel_time"].to_numpy(), vspec, estimator="event_study"),
                       att_definition=ATTDefinition(
                           "equal_weighted_post_periods",
                           "mean of the rel_time >= 0 coefficients"))


def _example_panel(n_units: int = 60, n_years: int = 10, seed: int = 0) -> pd.DataFrame:
    """Small staggered panel with effect ``e + 1`` at event time e >= 0 (for examples)."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(n_units), n_years)
    years = np.tile(np.arange(2000, 2000 + n_years), n_units)
    cohort_of = rng.choice([2003, 2005, 0], size=n_units)
    g = cohort_of[ids]
    rel = np.where(g > 0, years - g, -99)
    effect = np.where(rel >= 0, rel + 1.0, 0.0)
    y = ids * 0.1 + (years - 2000) * 0.2 + effect + rng.normal(0, 0.01, len(ids))
    return pd.DataFrame({"id": ids, "year": years, "g": g, "y": y})
