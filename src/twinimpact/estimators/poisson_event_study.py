"""Poisson event studies for staggered adoption (twinning as a staggered treatment).

Two estimators, both Poisson pseudo-maximum likelihood (so zero outcomes are kept and
effects are proportional), both fitted with :func:`twinimpact.estimators.ppml.ppml`:

``method="etwfe"`` (default)
    Wooldridge's (2023) extended two-way fixed effects for the exponential mean:
    ``E[y_it] = exp(a_i + l_t + sum_{g,s} tau_{gs} 1[G_i = g, t = s])`` with one dummy per
    treated cohort x period cell (a "fully saturated" cohort-by-period design; with
    ``ref=-1`` the cells at relative period ``t - g = -1`` are the omitted baseline, and
    pre-period cells give placebo leads). Never-treated units are the control group; without
    any, the last-treated cohort is the control and the periods from its adoption on are
    dropped (counted). ``fixed_effects="cohort"`` replaces unit by cohort dummies
    (Wooldridge's pooled variant). Cell estimates ``tau_gs`` are aggregated to event time
    ``e`` with weights proportional to the number of observations of each cell, and to an
    overall ``ATT`` over all post-treatment cells; standard errors by the delta method
    (the aggregation is linear in ``tau``: ``V_agg = A V A'``).

``method="dynamic"``
    The simple dynamic Poisson TWFE: ``exp(a_i + l_t + sum_{e != ref} b_e 1[t - G_i = e])``
    with end points binned. Under heterogeneous effects across cohorts it inherits the
    weighting problems of linear dynamic TWFE (Sun & Abraham 2021); use it as a benchmark.

Scale: every estimate is on the log scale. ``exp(b) - 1`` is the proportional change of
the outcome's mean (e.g. trade) relative to the untreated counterfactual; the ``ATT`` row
of ``etwfe`` is the cell-size weighted mean of the post-treatment log effects (not the
ratio of the average levels, which Wooldridge 2023 also discusses).

Keyword mapping: R ``etwfe::etwfe(fml = y ~ 0, tvar = year, gvar = first_treat,
family = "poisson")`` then ``emfx(type = "event")`` (which reports level effects);
Stata ``jwdid y, ivar(id) tvar(year) gvar(first_treat) method(poisson)``.

References
----------
Wooldridge, J. M. (2023). Simple approaches to nonlinear difference-in-differences with
panel data. *The Econometrics Journal*, 26(3), C31-C66.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..core.validation import as_frame, gap_aware_refs, prepare_panel, require_columns
from ..errors import (
    InputError,
    NotComputableWarning,
    SpecificationError,
    check_alpha,
    check_literal,
    format_message,
)
from ..results import (
    ROUNDING_ZERO_KEY,
    ATTDefinition,
    EstimationResult,
    combine_vcov,
    event_pretrend_test,
    make_result,
)
from .ppml import ppml

__all__ = ["POISSON_EVENT_METHODS", "aggregate_cells", "poisson_event_study"]

POISSON_EVENT_METHODS = ("etwfe", "dynamic")


def aggregate_cells(coef: np.ndarray, vcov: np.ndarray, groups: np.ndarray,
                    weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Weighted averages of cell estimates within groups, with the delta-method vcov.

    Parameters
    ----------
    coef : (m,) cell estimates (NaN cells are left out of every average)
    vcov : (m, m) their variance
    groups : (m,) group key of each cell (NaN = in no group)
    weights : (m,) non-negative cell weights (e.g. observations per cell)

    Returns
    -------
    (estimates (q,), vcov (q, q), A (q, m), keys) with ``A`` the aggregation matrix; a
    group that weighs a cell whose variance is NaN has a NaN variance, and only that group
    (:func:`~twinimpact.results.combine_vcov`).
    """
    ok = np.isfinite(coef)
    keys = sorted({k for k, o in zip(groups, ok, strict=True) if o and k == k})
    a = np.zeros((len(keys), len(coef)))
    for r, key in enumerate(keys):
        sel = ok & (groups == key)
        a[r, sel] = weights[sel] / weights[sel].sum()
    c = np.where(ok, coef, 0.0)
    return a @ c, combine_vcov(a, coef, vcov), a, keys


def _rounded_to_zero(v: np.ndarray, names: Sequence[str], diagnostics: Mapping[str, Any]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The fit's ``v`` with the terms it reported as rounding of zero
    (``ROUNDING_ZERO_KEY``; NaN in ``v``) given variance and covariances 0, and their
    mask: what they are, up to the rounding that left the same term just above the bound
    in another row order."""
    zero = np.isin(np.asarray(names, dtype=object),
                   list(diagnostics.get(ROUNDING_ZERO_KEY, ())))
    if zero.any():
        v = v.copy()
        v[zero, :] = 0.0
        v[:, zero] = 0.0
    return v, zero


def _combined_vcov(a: np.ndarray, coef: np.ndarray, v: np.ndarray, names: Sequence[str],
                   diagnostics: Mapping[str, Any]) -> np.ndarray:
    """:func:`~twinimpact.results.combine_vcov`, the terms the fit reported as rounding
    of zero counted as 0 (:func:`_rounded_to_zero`)."""
    v, zero = _rounded_to_zero(v, names, diagnostics)
    return combine_vcov(a, coef, v, zero)


def poisson_event_study(data: pd.DataFrame, *, outcome: str, unit: str, time: str,
                        cohort: str, leads: int | None = None, lags: int | None = None,
                        ref: int | Sequence[int] = -1,
                        method: Literal["etwfe", "dynamic"] = "etwfe",
                        fixed_effects: Literal["unit", "cohort"] = "unit",
                        cluster: str | Sequence[str] | None = None,
                        vcov: Literal["iid", "hetero", "cluster"] | None = None,
                        weights: str | None = None, alpha: float = 0.05,
                        **ppml_options: Any) -> EstimationResult:
    """Poisson event study: log-scale effects by period relative to the first treated period.

    Parameters
    ----------
    data : DataFrame
        Long panel, one row per unit x period; the outcome is non-negative (zeros kept).
    outcome, unit, time, cohort : str
        Column names. ``cohort`` = first treated period; never treated = NaN, 0 or a value
        after the last period (R did's convention, fixest ``sunab``'s ``cohort``).
    leads, lags : int, optional
        Report relative periods ``-leads .. lags`` (default: all observed). For
        ``"etwfe"``, cells earlier than ``-leads`` get no dummy (they join the baseline,
        i.e. no anticipation is assumed there); cells later than ``lags`` keep their own
        dummies (they still enter the ``ATT``) but are not reported by event time. For
        ``"dynamic"`` the end points are binned.
    ref : int or sequence of int
        Omitted relative period(s), default -1 (stored in ``spec["ref"]``).
    method : {"etwfe", "dynamic"}
        See the module docstring.
    fixed_effects : {"unit", "cohort"}
        ``etwfe`` only: unit + time fixed effects (default) or cohort + time.
    cluster, vcov, weights
        As in :func:`~twinimpact.estimators.ppml.ppml`; default: clustered by ``unit``.
    alpha : float
        Default interval level.
    **ppml_options
        Passed to :func:`~twinimpact.estimators.ppml.ppml` (``tol``, ``maxiter``,
        ``separation``, ``drop_singletons``, ``ssc_adj``).

    Returns
    -------
    EstimationResult
        Terms ``"rel_time=e"`` (``term_info["rel_time"]``) and ``"ATT"``. For ``etwfe``,
        ``extras["cells"]`` is the PPML result with one term ``"ATT(g,t)"`` per cohort x
        period cell (``term_info`` ``cohort``, ``time``, ``rel_time``) and
        ``extras["aggregation"]`` the matrix mapping cells to the reported rows.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from twinimpact.estimators.poisson_event_study import poisson_event_study
    >>> rng = np.random.default_rng(0)
    >>> d = pd.DataFrame({"id": np.repeat(np.arange(90), 8), "year": np.tile(np.arange(2000, 2008), 90)})
    >>> d["g"] = np.array([2003, 2005, 0])[d["id"] % 3]
    >>> treated = (d["g"] > 0) & (d["year"] >= d["g"])
    >>> d["y"] = rng.poisson(np.exp(3 + 0.01 * d["id"] + 0.3 * treated))
    >>> r = poisson_event_study(d, outcome="y", unit="id", time="year", cohort="g")
    >>> round(float(r.params["ATT"]), 1)
    0.3
    """
    data = as_frame(data, what="poisson_event_study: data")
    check_alpha(alpha)
    check_literal("method", method, POISSON_EVENT_METHODS)
    check_literal("fixed_effects", fixed_effects, ("unit", "cohort"))
    for nm, v in (("leads", leads), ("lags", lags)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | np.integer)
                              or v < 0):
            raise SpecificationError(format_message(f"{nm} must be a non-negative integer",
                                                    seen=v, fix=f"pass e.g. {nm}=4"))
    refs = tuple(int(r) for r in ((ref,) if np.isscalar(ref) else ref))
    clus = (unit,) if cluster is None and vcov in (None, "cluster") else (
        () if cluster is None else ((cluster,) if isinstance(cluster, str) else tuple(cluster)))
    require_columns(data, [outcome, unit, time, cohort, *clus, weights])
    extra = [c for c in clus if c not in (unit, time)]
    pdata = prepare_panel(data, outcome=outcome, unit=unit, time=time, cohort=cohort,
                          extra=extra, numeric_extra=[weights] if weights else [],
                          estimator="poisson_event_study")
    f = pdata.frame.copy()
    dropped = dict(pdata.dropped)
    neg = f["y"].to_numpy() < 0
    if neg.any():
        row = f.loc[neg].iloc[0]
        raise InputError(format_message(
            f"poisson_event_study: the outcome {outcome!r} must be non-negative",
            where=f"{unit} = {row['unit']!r}, {time} = {row['time']:g}", seen=float(row["y"]),
            fix="Poisson models a non-negative mean (trade flows, counts)"))
    g = f["cohort"].to_numpy()
    treated = np.isfinite(g)
    if not treated.any():
        raise InputError(format_message(
            f"no treated unit: every value of {cohort!r} means 'never treated'",
            fix="cohort is the first treated period (NaN/0/after the panel = never)"))
    notes: list[str] = []
    control = "never_treated"
    if treated.all():
        g_last = float(np.max(g))
        late = f["time"].to_numpy() >= g_last
        dropped["periods from the last cohort's adoption on (no never-treated units)"] = \
            int(late.sum())
        f = f.loc[~late].reset_index(drop=True)
        f.loc[f["cohort"] == g_last, "cohort"] = np.nan
        g = f["cohort"].to_numpy()
        treated = np.isfinite(g)
        control = f"last_treated ({g_last:g})"
        notes.append(f"no never-treated units: cohort {g_last:g} is the control group and "
                     f"periods >= {g_last:g} are dropped")
        if not treated.any():
            raise InputError(format_message(
                "a single adoption cohort and no never-treated units: no control group",
                fix="add never-treated units or use several adoption cohorts"))
    t = f["time"].to_numpy()
    refs, gap_note = gap_aware_refs(refs, t, g, estimator="poisson_event_study",
                                    time_name=time)
    if gap_note:
        notes.append(gap_note)
    rel = np.where(treated, t - g, np.nan)
    finite = rel[np.isfinite(rel)]
    lo = int(finite.min()) if leads is None else -int(leads)
    hi = int(finite.max()) if lags is None else int(lags)
    if any(r < lo or r > hi for r in refs):
        raise SpecificationError(format_message(
            "reference period outside the event window", seen={"ref": refs, "window": (lo, hi)},
            fix="choose ref inside [-leads, lags] (default -1)"))
    vcov_kw: dict[str, Any] = {"vcov": vcov} if vcov is not None else {}
    if clus:
        vcov_kw["cluster"] = clus
    design = pd.DataFrame({"y": f["y"].to_numpy(), "unit": f["unit"].to_numpy(),
                           "time": t, "cohort_fe": np.where(treated, g, -np.inf)})
    for c in extra:
        design[c] = f[c].to_numpy()
    if weights:
        design["w"] = f[weights].to_numpy()
    fe = [("unit" if (method == "dynamic" or fixed_effects == "unit") else "cohort_fe"),
          "time"]
    cl_map = {unit: "unit", time: "time"}
    vcov_kw = {k: (tuple(cl_map.get(c, c) for c in v) if k == "cluster" else v)
               for k, v in vcov_kw.items()}
    spec = {"outcome": outcome, "unit": unit, "time": time, "cohort": cohort, "leads": leads,
            "lags": lags, "window": (lo, hi), "ref": refs, "method": method,
            "fixed_effects": ((unit if fe[0] == "unit" else cohort), time), "cluster": clus,
            "vcov": vcov or ("cluster" if clus else "iid"), "weights": weights,
            "alpha": alpha, "control_group": control, **ppml_options}
    base_diag = {"n_input_rows": pdata.n_input, "n_units": int(f["unit"].nunique()),
                 "n_periods": int(np.unique(t).size),
                 "n_treated_units": int(f.loc[treated, "unit"].nunique()),
                 "n_never_treated_units": int(f.loc[~treated, "unit"].nunique())}
    if method == "dynamic":
        return _dynamic(design, rel, lo, hi, refs, fe, vcov_kw, weights, spec, base_diag,
                        dropped, notes, ppml_options)

    # ---- ETWFE: one dummy per (cohort, period) cell
    cell_rel = rel.copy()
    use = treated & ~np.isin(cell_rel, refs) & (cell_rel >= lo)
    cells = (pd.DataFrame({"g": g[use], "t": t[use]}).value_counts().sort_index()
             .rename("n").reset_index())
    if weights:
        wsum = pd.DataFrame({"g": g[use], "t": t[use], "w": design["w"].to_numpy()[use]}) \
            .groupby(["g", "t"])["w"].sum()
        cells["n"] = wsum.loc[list(zip(cells["g"], cells["t"], strict=True))].to_numpy()
    names = [f"ATT({gg:g},{tt:g})" for gg, tt in zip(cells["g"], cells["t"], strict=True)]
    cols = [f"_cell{j}" for j in range(len(cells))]
    key = pd.MultiIndex.from_arrays([g, t])
    pos = pd.MultiIndex.from_arrays([cells["g"], cells["t"]]).get_indexer(key)
    pos = np.where(use, pos, -1)
    dummies = np.zeros((len(design), len(cells)))
    rows = np.flatnonzero(pos >= 0)
    dummies[rows, pos[rows]] = 1.0
    design = pd.concat([design, pd.DataFrame(dummies, columns=cols)], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotComputableWarning)
        fit = ppml(design, outcome="y", regressors=cols, fixed_effects=fe,
                   weights="w" if weights else None, alpha=alpha, **vcov_kw, **ppml_options)
    # cells lost to separation / singletons: recount from the rows actually used
    used = np.zeros(len(design), dtype=bool)
    used[np.asarray(fit.extras["rows_used"])] = True
    n_cell = np.bincount(pos[used & (pos >= 0)], minlength=len(cells)).astype(float)
    if weights:
        n_cell = np.bincount(pos[used & (pos >= 0)],
                             weights=design["w"].to_numpy()[used & (pos >= 0)],
                             minlength=len(cells))
    coef, v = fit.coef, fit.cov
    cell_rel_t = (cells["t"] - cells["g"]).to_numpy()
    cell_info = pd.DataFrame({"cohort": cells["g"].to_numpy(), "time": cells["t"].to_numpy(),
                              "rel_time": cell_rel_t.astype(float)}, index=names)
    cells_res = make_result("poisson_event_study/cells", pd.Series(coef, index=names),
                            _rounded_to_zero(v, fit.terms, fit.diagnostics)[0],
                            fit.vcov_spec, fit.nobs, spec=spec, term_info=cell_info,
                            diagnostics=dict(fit.diagnostics),
                            nan_reason="cell not identified (no observations left or "
                                       "collinear with the fixed effects)")
    grp = np.where((cell_rel_t >= lo) & (cell_rel_t <= hi), cell_rel_t, np.nan)
    est, _, a, keys = aggregate_cells(coef, v, grp.astype(float), n_cell)
    post = (cell_rel_t >= 0).astype(float)
    est_att, _, a_att, _ = aggregate_cells(coef, v, np.where(post > 0, 0.0, np.nan),
                                           n_cell)
    a_all = np.vstack([a, a_att])
    c_all = np.concatenate([est, est_att])
    v_all = _combined_vcov(a_all, coef, v, fit.terms, fit.diagnostics)
    terms = [f"rel_time={int(k)}" for k in keys] + ["ATT"]
    if not len(est_att):
        c_all = np.append(c_all, np.nan)
        v_all = np.pad(v_all, ((0, 1), (0, 1)), constant_values=np.nan)
        a_all = np.vstack([a_all, np.zeros(len(coef))])
    term_info = pd.DataFrame({"rel_time": [float(k) for k in keys] + [np.nan]}, index=terms)
    missing = [e for e in range(lo, hi + 1) if e not in refs and e not in keys]
    if missing:
        notes.append(f"relative periods {missing} have no estimable cell and are not reported")
    diag = {**base_diag, **{k: v for k, v in fit.diagnostics.items()
                            if k not in ("notes", "dropped_rows")},
            "dropped_rows": {**dropped, **dict(fit.diagnostics["dropped_rows"])},
            "n_cells": len(cells), "n_cells_not_identified": int((~np.isfinite(coef)).sum()),
            "notes": notes,
            "aggregation_weights": "observations per cohort x period cell"}
    return make_result("poisson_event_study", pd.Series(c_all, index=terms), v_all,
                       fit.vcov_spec, fit.nobs, spec=spec, diagnostics=diag,
                       term_info=term_info,
                       att_definition=ATTDefinition(
                           "cell_size_weighted",
                           "post-treatment cell effects tau(g,t), t >= g, on the log scale"),
                       pretrend_test=event_pretrend_test(
                           terms, c_all, v_all, term_info["rel_time"].to_numpy(),
                           fit.vcov_spec, estimator="poisson_event_study"),
                       extras={"cells": cells_res,
                               "aggregation": pd.DataFrame(a_all, index=terms, columns=names)},
                       nan_reason="no estimable cohort x period cell")


def _dynamic(design: pd.DataFrame, rel: np.ndarray, lo: int, hi: int, refs: tuple[int, ...],
             fe: list[str], vcov_kw: dict[str, Any], weights: str | None,
             spec: dict[str, Any], base_diag: dict[str, Any], dropped: dict[str, int],
             notes: list[str], ppml_options: dict[str, Any]) -> EstimationResult:
    """Dynamic Poisson TWFE with binned end points (see the module docstring)."""
    rel_b = np.where(np.isfinite(rel), np.clip(rel, lo, hi), np.nan)
    periods = [e for e in range(lo, hi + 1)
               if e not in refs and np.any(rel_b == e)]
    names = [f"rel_time={e}" for e in periods]
    cols = [f"_rel{j}" for j in range(len(periods))]
    design = design.copy()
    for c, e in zip(cols, periods, strict=True):
        design[c] = (rel_b == e).astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotComputableWarning)
        fit = ppml(design, outcome="y", regressors=cols, fixed_effects=fe,
                   weights="w" if weights else None, **vcov_kw, **ppml_options)
    coef, v = fit.coef, fit.cov
    post = np.array([e >= 0 for e in periods]) & np.isfinite(coef)
    a = post / post.sum() if post.any() else post.astype(float)
    k = len(periods)
    big = np.full((k + 1, k + 1), np.nan)
    big[:k, :k] = v
    full = _combined_vcov(np.vstack([np.eye(k), a]), coef, v, fit.terms, fit.diagnostics)
    big[k, :] = big[:, k] = full[k]
    if not post.any():
        big[k, k] = np.nan
    att = float(a[post] @ coef[post]) if post.any() else np.nan
    terms = [*names, "ATT"]
    term_info = pd.DataFrame({"rel_time": [float(e) for e in periods] + [np.nan]}, index=terms)
    diag = {**base_diag, **{kk: vv for kk, vv in fit.diagnostics.items()
                            if kk not in ("notes", "dropped_rows")},
            "dropped_rows": {**dropped, **dict(fit.diagnostics["dropped_rows"])},
            "notes": notes, "bin_endpoints": True}
    return make_result("poisson_event_study", pd.Series([*coef, att], index=terms), big,
                       fit.vcov_spec, fit.nobs, spec=spec, diagnostics=diag,
                       term_info=term_info, nan_reason="collinear with the fixed effects",
                       att_definition=ATTDefinition(
                           "equal_weighted_post_periods",
                           "mean of the rel_time >= 0 coefficients, log scale"),
                       pretrend_test=event_pretrend_test(
                           terms, [*coef, att], big, term_info["rel_time"].to_numpy(),
                           fit.vcov_spec, estimator="poisson_event_study"))
