"""de Chaisemartin & D'Haultfœuille event-study DID for treatments that switch on and off.

The estimators of de Chaisemartin & D'Haultfœuille (2024, *REStat*, "Difference-in-
differences estimators of intertemporal treatment effects") as the R/Stata command
``did_multiplegt_dyn`` computes them: each switcher is compared, ``l`` periods after its
first treatment change, with the groups that had the same treatment at the start and have
not changed it yet. Treatments may be binary or not, and may go up (switchers in) or down
(switchers out). The numerics are in :mod:`twinimpact.estimators._dcdh_numerics`.

Keyword mapping to R ``did_multiplegt_dyn(df, outcome, group, time, treatment, ...)``:
``unit`` = ``group``; ``switchers=None`` = ``switchers = ""``; every other keyword has the
R name. Not offered: ``predict_het``, ``by``, ``by_path``, ``bootstrap``, ``design``,
``date_first_switch``, ``less_conservative_se``, ``same_switchers_pl``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..core.validation import _numeric, require_columns, require_frame, warn_dropped_missing
from ..errors import (
    DataWarning,
    EstimationError,
    InputError,
    NotComputableWarning,
    SpecificationError,
    check_alpha,
    check_literal,
    format_message,
)
from ..results import EstimationResult, VcovSpec, make_result
from ._dcdh_numerics import _NoEffect, _NotNested, fit_dcdh, prepare_design

__all__ = ["did_multiplegt"]

_EST = "did_multiplegt"


def _as_list(x: str | Sequence[str] | None, name: str) -> list[str]:
    if x is None:
        return []
    if isinstance(x, str):
        return [x]
    out = list(x)
    if not all(isinstance(v, str) for v in out):
        raise SpecificationError(format_message(
            f"{name} must be a column name or a list of column names", seen=x,
            fix=f"pass e.g. {name}=['state']"))
    return out


def _int_opt(name: str, v: Any, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
        raise SpecificationError(format_message(
            f"{name} must be an integer >= {lo}", seen=v, fix=f"pass e.g. {name}={max(lo, 1)}"))
    return int(v)


def _numeric_col(df: pd.DataFrame, col: str, role: str) -> np.ndarray:
    s = df[col]
    if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
        bad = s[pd.to_numeric(s, errors="coerce").isna() & s.notna()]
        raise InputError(format_message(
            f"{role} column {col!r} must be numeric", where=f"e.g. row {bad.index[0]!r}"
            if len(bad) else None, seen=bad.iloc[0] if len(bad) else str(s.dtype),
            fix=f"convert {col!r} to numbers (pandas.to_numeric)"))
    return _numeric(df, col, role)  # the shared check: infinite values refused


def did_multiplegt(data: pd.DataFrame, *, outcome: str, unit: str, time: str, treatment: str,
                   effects: int = 1, placebo: int = 0, normalized: bool = False,
                   controls: str | Sequence[str] | None = None,
                   trends_nonparam: str | Sequence[str] | None = None,
                   trends_lin: bool = False, continuous: int = 0, weight: str | None = None,
                   cluster: str | None = None, same_switchers: bool = False,
                   only_never_switchers: bool = False, switchers: str | None = None,
                   effects_equal: bool = False, alpha: float = 0.05) -> EstimationResult:
    """Event-study DID of de Chaisemartin & D'Haultfœuille (R/Stata ``did_multiplegt_dyn``).

    Parameters
    ----------
    data : DataFrame
        Long panel: one row per unit (``group`` in the paper) and period. Units may be
        strings; periods must be sortable (they are ranked; gaps in calendar time are not
        periods). Rows with a missing unit or period are dropped and counted.
    outcome, unit, time, treatment : str
        Column names. ``treatment`` may be binary or take any numeric values and may go up
        and down (a unit whose treatment ends up both above and below its first value is
        kept until the period it has been on both sides, as in the reference).
    effects : int
        Number of dynamic effects ``Effect_1..Effect_effects`` (``l`` periods after the
        first treatment change, ``Effect_1`` being the period of the change).
    placebo : int
        Number of placebos ``Placebo_1..`` (reported with ``rel_time`` ``-1, -2, ...``;
        the pre-period outcome change of the same switchers against the same controls).
    normalized : bool
        Divide each effect by the average cumulated treatment change of its switchers
        (effect per unit of treatment per period of exposure).
    controls : column name(s)
        Time-varying covariates: each switcher-control comparison is adjusted by the
        covariates' change times coefficients estimated, within status-quo level, on the
        first differences of the not-yet-switched (web appendix), with the estimation error
        of those coefficients in the variance. Rows with a missing control are dropped and
        counted (``diagnostics["dropped_rows"]``).
    trends_nonparam : column name(s)
        Only compare units with the same value of these (time-invariant) columns, e.g. a
        state: group-specific time effects as in the reference.
    trends_lin : bool
        Group-specific linear trends: the outcome is first-differenced (units switching at
        the second period are dropped), effect ``l`` sums the first ``l`` horizons for the
        same switchers, as the reference does. The average total effect is not computed
        (NaN, as in the reference).
    continuous : int
        For a status quo that takes many values: compare every switcher with every
        not-yet-switched unit, adjusting for a polynomial of this degree in the status quo
        interacted with period effects (as the reference; its authors recommend bootstrap
        standard errors then, which are not offered: the analytic ones may be liberal).
    weight : str
        Column of cell weights (e.g. population); missing weights count as 0.
    cluster : str
        Cluster the standard errors by this column (units must be nested in clusters).
        Default: by unit. Rows with a missing cluster are dropped and counted.
    same_switchers : bool
        Use, for every effect, only the switchers observed for all ``effects`` horizons.
    only_never_switchers : bool
        Use only units whose treatment never changes as controls (not the not-yet
        switchers).
    switchers : None, "in" or "out"
        Restrict to switchers whose treatment goes up ("in") or down ("out").
    effects_equal : bool
        Also test that all effects are equal (``diagnostics["effects_equal_test"]``).
    alpha : float
        Level for confidence intervals in ``summary()`` (``to_frame(alpha)`` overrides).

    Returns
    -------
    EstimationResult
        Terms ``Effect_l`` (``rel_time = l``), ``Placebo_l`` (``rel_time = -l``) and
        ``ATT``, the average total effect per unit of treatment (R's
        ``Average_Total_Effect``). ``vcov`` is the full covariance of effects and placebos
        (the ``ATT`` row/column is its variance only: the reference gives no covariance
        for it). ``diagnostics`` holds ``effects_joint_test``, ``placebo_test`` (also as
        ``pretrend_test``), ``effects_equal_test`` (each a dict with ``statistic``,
        ``df``, ``p_value``, ``kind``, ``n_coefficients``; the placebo test needs at least
        two placebos, as in the reference), per-term numbers of switchers and of cells
        used, ``avg_periods_effect_accumulated`` (the reference's "average number of time
        periods over which a treatment effect is accumulated", which the ATT averages
        over) and every dropped row and group with its reason.

    Notes
    -----
    The variance is the analytic one of the reference (version 2): influence functions with
    each long difference demeaned within its cohort (switchers by status quo, first-switch
    period and treatment at that period; controls by status quo and period) and
    degrees-of-freedom factors ``sqrt(n / (n - 1))`` where ``n`` counts units (or clusters)
    in the cohort; no further small-sample factor; normal reference distribution.

    Examples
    --------
    >>> import pandas as pd, twinimpact as ti
    >>> rows = [(g, t, int(t >= 3 and g < 3) + (t >= 4 and g == 0), 0.1 * t + g)
    ...         for g in range(6) for t in range(1, 7)]
    >>> df = pd.DataFrame(rows, columns=["unit", "year", "twinned", "y"])
    >>> res = ti.did_multiplegt(df, outcome="y", unit="unit", time="year",
    ...                         treatment="twinned", effects=2, placebo=1)
    >>> res.to_frame()["term"].tolist()
    ['Effect_1', 'Effect_2', 'Placebo_1', 'ATT']
    """
    check_alpha(alpha)
    df = require_frame(data)
    effects = _int_opt("effects", effects, 1)
    placebo = _int_opt("placebo", placebo, 0)
    continuous = _int_opt("continuous", continuous, 0)
    check_literal("switchers", switchers, (None, "in", "out"))
    ctrls = _as_list(controls, "controls")
    trends = _as_list(trends_nonparam, "trends_nonparam")
    for name, flag in (("normalized", normalized), ("trends_lin", trends_lin),
                       ("same_switchers", same_switchers),
                       ("only_never_switchers", only_never_switchers),
                       ("effects_equal", effects_equal)):
        if not isinstance(flag, bool | np.bool_):
            raise SpecificationError(format_message(f"{name} must be True or False",
                                                    seen=flag, fix=f"pass {name}=True"))
    require_columns(df, [outcome, unit, time, treatment, weight, cluster, *ctrls, *trends])

    y = _numeric_col(df, outcome, "outcome")
    d = _numeric_col(df, treatment, "treatment")
    w = None if weight is None else _numeric_col(df, weight, "weight")
    if w is not None and np.nanmin(np.where(np.isnan(w), 0.0, w)) < 0:
        i = int(np.flatnonzero(np.nan_to_num(w) < 0)[0])
        raise InputError(format_message(
            f"weights in {weight!r} must be >= 0", where=f"row {df.index[i]!r}", seen=w[i],
            fix="pass non-negative weights (e.g. population)"))
    t_raw = df[time]
    if not (pd.api.types.is_numeric_dtype(t_raw) or pd.api.types.is_datetime64_any_dtype(t_raw)):
        raise InputError(format_message(
            f"time column {time!r} must be numeric or dates", seen=str(t_raw.dtype),
            fix=f"convert {time!r} to integers (e.g. years)"))
    t_num = pd.Series(pd.factorize(t_raw, sort=True)[0], index=df.index).where(t_raw.notna())
    g_codes, _ = pd.factorize(df[unit], sort=True)
    keep = (g_codes >= 0) & t_num.notna().to_numpy()
    dropped: dict[str, int] = {}
    if (~keep).any():
        dropped["missing unit or period"] = int((~keep).sum())
    cl_codes = None
    if cluster is not None and cluster != unit:
        cc, _ = pd.factorize(df[cluster], sort=True)
        miss = keep & (cc < 0)
        if miss.any():
            dropped[f"missing cluster ({cluster})"] = int(miss.sum())
        keep &= cc >= 0
        cl_codes = cc.astype(float)
    x_arrays = [_numeric_col(df, c, "control") for c in ctrls]
    for c, xa in zip(ctrls, x_arrays, strict=True):
        miss = keep & np.isnan(xa)
        if miss.any():
            dropped[f"missing control ({c})"] = int(miss.sum())
        keep &= ~np.isnan(xa)
    tr_arrays = []
    for c in trends:
        tc, _ = pd.factorize(df[c], sort=True)
        tr_arrays.append(np.where(tc < 0, np.nan, tc).astype(float))
    if dropped:
        warn_dropped_missing(_EST, dropped, stacklevel=2)
    idx = np.flatnonzero(keep)
    gk, tk = g_codes[idx], t_num.to_numpy()[idx].astype(float)
    yk, dk = y[idx], d[idx]
    wk = None if w is None else w[idx]
    clk = None if cl_codes is None else cl_codes[idx]
    trk = [a[idx] for a in tr_arrays]
    xk = [a[idx] for a in x_arrays]

    # several rows per (unit, period): collapse to weighted means (the reference does)
    pair = pd.DataFrame({"g": gk, "t": tk})
    if pair.duplicated().any():
        n_dup = int(pair.duplicated().sum())
        warnings.warn(f"{_EST}: {n_dup} row(s) share a (unit, period) with another row; "
                      "they are collapsed to weighted means per (unit, period) as in the "
                      "reference.", DataWarning, stacklevel=2)
        dropped["collapsed into another row of the same (unit, period)"] = n_dup
        gk, tk, yk, dk, wk, clk, trk = _collapse(gk, tk, yk, dk, wk, clk, trk + xk)
        trk, xk = trk[:len(tr_arrays)], trk[len(tr_arrays):]

    # bad input the reference would only report as "Design Restriction 1"
    _check_treatment_varies(gk, dk, treatment, unit, df.index[idx] if len(idx) else None)
    if only_never_switchers:
        _check_never_switchers(gk, tk, dk, unit, treatment)

    try:
        ds = prepare_design(gk, tk, yk, dk, wk, clk, trk, trends_lin=trends_lin,
                            controls=tuple(xk), continuous=continuous)
        fit = fit_dcdh(ds, effects=effects, placebo=placebo, normalized=normalized,
                       switchers=switchers, only_never_switchers=only_never_switchers,
                       same_switchers=same_switchers, effects_equal=effects_equal,
                       trends_lin=trends_lin)
    except _NoEffect as exc:
        raise EstimationError(format_message(
            f"{_EST}: no treatment effect can be estimated: {exc}",
            seen={"switchers": switchers, "only_never_switchers": only_never_switchers},
            fix="check that some units change treatment while others with the same "
                "initial treatment have not changed yet; relax switchers= or "
                "only_never_switchers=")) from None
    except _NotNested as exc:
        raise InputError(format_message(
            f"{_EST}: units must be nested in clusters: {exc}", where=f"cluster={cluster!r}",
            fix="cluster by a variable that is constant within each unit (e.g. a state)"))\
            from None
    for note in fit.notes:
        warnings.warn(f"{_EST}: {note}.", NotComputableWarning, stacklevel=2)
    for k, v in ds.dropped.items():
        dropped[k] = v

    names = [("ATT" if n == "ATE" else n) for n in fit.names]
    term_info = pd.DataFrame({"rel_time": list(fit.rel_time)}, index=names)
    term_info["n_switchers"] = fit.n_switchers_dw
    term_info["n_switchers_weighted"] = fit.n_switchers
    term_info["n_obs"] = fit.n_obs_dw
    term_info["n_obs_weighted"] = fit.n_obs
    n_cl = fit.n_clusters
    vspec = VcovSpec(
        "influence_function", cluster=(cluster if cluster is not None else unit,),
        n_clusters=(n_cl,), small_sample={}, df=None,
        description=("de Chaisemartin & D'Haultfoeuille (2024) analytic variance as "
                     "did_multiplegt_dyn 2.x: cohort-demeaned influence functions with "
                     "sqrt(n/(n-1)) cohort factors, summed by cluster, / G^2; normal "
                     "reference; ATT covariance with other terms not computed (NaN)"))
    tests = fit.tests
    diag: dict[str, Any] = {
        "dropped_rows": dropped,
        "n_groups": ds.n_groups,
        "n_switchers": dict(zip(names, fit.n_switchers_dw.tolist(), strict=True)),
        "n_obs": dict(zip(names, fit.n_obs_dw.tolist(), strict=True)),
        "n_effects": fit.n_effects, "n_placebos": fit.n_placebos,
        "effects_joint_test": tests.get("effects_joint"),
        "placebo_test": tests.get("placebo_joint"),
        "pretrend_test": tests.get("placebo_joint"),
        "effects_equal_test": tests.get("effects_equal"),
        "notes": list(fit.notes),
        "avg_periods_effect_accumulated": fit.avg_accumulation,
    }
    if normalized:
        diag["delta"] = dict(zip(names, fit.delta.tolist(), strict=True))
    spec = {"outcome": outcome, "unit": unit, "time": time, "treatment": treatment,
            "effects": effects, "placebo": placebo, "normalized": normalized,
            "controls": tuple(ctrls), "trends_nonparam": tuple(trends),
            "trends_lin": trends_lin, "continuous": continuous, "weight": weight,
            "cluster": cluster, "same_switchers": same_switchers,
            "only_never_switchers": only_never_switchers, "switchers": switchers,
            "effects_equal": effects_equal, "alpha": alpha}
    cov = fit.vcov.copy()
    k = len(names) - 1
    cov[k, :k] = np.nan
    cov[:k, k] = np.nan
    nobs = int(np.nanmax(fit.n_obs_dw)) if len(fit.n_obs_dw) else 0
    return make_result(_EST, pd.Series(fit.estimate, index=names), cov, vspec, nobs,
                       spec=spec, diagnostics=diag, term_info=term_info,
                       nan_reason="no switcher or no control for this horizon"
                       + ("; with trends_lin the ATT is not computed (as in the reference)"
                          if trends_lin else ""))


def _check_treatment_varies(g: np.ndarray, d: np.ndarray, treatment: str, unit: str,
                            index: Any) -> None:
    s = pd.Series(d).groupby(g)
    changes = (s.max() - s.min()).fillna(0)
    if not (changes > 0).any():
        vals = pd.unique(d[~np.isnan(d)])
        raise EstimationError(format_message(
            f"{_EST}: the treatment {treatment!r} never changes within any {unit!r}",
            seen=f"values {sorted(vals.tolist())[:5]}", fix="nothing to estimate: the "
            "estimator compares units whose treatment changes with units whose treatment "
            "has not changed yet; check the treatment column"))


def _check_never_switchers(g: np.ndarray, t: np.ndarray, d: np.ndarray, unit: str,
                           treatment: str) -> None:
    """only_never_switchers needs, for each switcher, a unit with the same initial treatment
    that never changes it: none at all is an error, some switchers without one a warning."""
    frame = pd.DataFrame({"g": g, "t": t, "d": d}).dropna(subset=["d"]).sort_values(["g", "t"])
    first = frame.groupby("g")["d"].first()
    stayed = (frame["d"] == frame.groupby("g")["d"].transform("first")).groupby(
        frame["g"]).all()
    if not stayed.any():
        raise EstimationError(format_message(
            f"{_EST}: only_never_switchers=True needs units whose {treatment!r} never "
            f"changes from its first value, and every {unit!r} changes it",
            seen=f"{len(stayed)} units, 0 never-switchers",
            fix="set only_never_switchers=False to use not-yet-switchers as controls"))
    base_never = set(first[stayed].tolist())
    lonely = first[~stayed & ~first.isin(base_never)]
    if len(lonely) == (~stayed).sum():
        raise EstimationError(format_message(
            f"{_EST}: only_never_switchers=True, but no unit that never changes its "
            f"{treatment!r} starts from the same value as a unit that changes it",
            seen={"initial values of switchers": sorted(set(lonely.tolist()))[:5],
                  "initial values of never-switchers": sorted(base_never)[:5]},
            fix="set only_never_switchers=False to use not-yet-switchers as controls"))
    if len(lonely):
        warnings.warn(
            f"{_EST}: only_never_switchers=True: {len(lonely)} switching {unit!r}(s) have no "
            f"never-switcher with the same initial {treatment!r} "
            f"({sorted(set(lonely.tolist()))[:5]}); they cannot be compared and are not used.",
            DataWarning, stacklevel=3)


def _collapse(g, t, y, d, w, cl, trs):  # type: ignore[no-untyped-def]
    """Weighted means per (unit, period), as the reference collapses repeated rows:
    weights are 0 where the treatment is missing; the mean's numerator skips missing values
    but its denominator is the (unit, period) weight total."""
    w0 = np.ones(len(g)) if w is None else np.nan_to_num(w, nan=0.0)
    w0 = np.where(np.isnan(d), 0.0, w0)
    fr = pd.DataFrame({"g": g, "t": t, "w": w0})
    cols = {"y": y, "d": d}
    for i, a in enumerate(trs):
        cols[f"tr{i}"] = a
    for k, v in cols.items():
        fr[k + "_n"] = np.where(np.isnan(v), 0.0, v * w0)
        fr[k + "_has"] = ~np.isnan(v)
    if cl is not None:
        fr["cl"] = cl
    agg = fr.groupby(["g", "t"], sort=True)
    wsum = agg["w"].sum()
    out = {}
    for k in cols:
        num = agg[k + "_n"].sum()
        has = agg[k + "_has"].any()
        val = np.where((wsum > 0) & has, num / wsum.where(wsum > 0), np.nan)
        out[k] = np.asarray(val, dtype=float)
    gi = wsum.index.get_level_values(0).to_numpy()
    ti = wsum.index.get_level_values(1).to_numpy(dtype=float)
    clo = None if cl is None else agg["cl"].first().to_numpy(dtype=float)
    return (gi, ti, out["y"], out["d"], wsum.to_numpy(dtype=float), clo,
            [out[f"tr{i}"] for i in range(len(trs))])
