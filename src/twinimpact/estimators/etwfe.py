"""Wooldridge's extended two-way fixed effects (ETWFE), linear and Poisson.

``etwfe`` fits one coefficient per treated cohort x period cell ("saturated" TWFE;
Wooldridge 2021 for the linear model, 2023 for the exponential mean) and
:meth:`ETWFEResult.aggregate` averages the implied effects over treated observations
(R ``emfx``): ``"simple"``, ``"dynamic"`` (alias ``"event"``), ``"group"``, ``"calendar"``,
with delta-method standard errors. Under ``family="poisson"`` the averages are differences
in levels (response scale, as ``emfx``) and are also stated as proportional changes.
``fixed_effects`` replaces the unit and period fixed effects by any sets, which nests
ETWFE in structural gravity (exporter-year, importer-year and pair fixed effects with
the pair as the treated unit; Nagengast & Yotov 2025).

Keyword mapping
---------------
======================== ======================================= ==========================
twinimpact               R ``etwfe`` 0.6 / ``emfx``              Stata ``jwdid``
======================== ======================================= ==========================
``outcome``              ``fml`` left-hand side                  depvar
``covariates``           ``fml`` right-hand side (``y ~ x1+x2``) indepvars
``unit``                 ``ivar`` (unit FE)                      ``ivar()``
``time``, ``cohort``     ``tvar``, ``gvar``                      ``tvar()``, ``gvar()``
``control_group``        ``cgroup = "notyet" / "never"``         default / ``never``
``family``               ``family = NULL / "poisson"``           ``method(poisson)``
``fixed_effects``        ``ivar = NULL`` gives ``(gvar, tvar)``   ``ivar()`` / none
``xvar``                 ``xvar``                                --
``cluster``              ``vcov = ~id``                          ``cluster()``
``aggregate(type)``      ``emfx(type = ...)``                    ``estat simple/event/...``
``aggregate(scale=...)`` ``emfx(predict = "response"/"link")``   --
======================== ======================================= ==========================

By default the fixed effects are ``unit`` and ``time`` (``jwdid`` with ``ivar``, R
``etwfe(ivar = ...)``); R ``etwfe``'s default (cohort and period fixed effects, the
pooled form) is ``fixed_effects=(cohort, time)``. Both give the same linear estimates on
balanced panels with time-constant covariates; for the Poisson model the pooled form is
R's (``fe = "none"``: the dummies are estimated, which gives the same coefficients as
absorbing them).

References
----------
Wooldridge, J. M. (2021). Two-way fixed effects, the two-way Mundlak regression, and
difference-in-differences estimators. SSRN 3906345.
Wooldridge, J. M. (2023). Simple approaches to nonlinear difference-in-differences with
panel data. *The Econometrics Journal* 26(3), C31-C66.
Nagengast, A. J. & Yotov, Y. V. (2025). Staggered difference-in-differences in gravity
settings: revisiting the effects of trade agreements. *AEJ: Applied* 17(1), 271-296.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import linalg, stats

from ..core.fe import factorize, fit_fe_ols
from ..core.validation import as_tuple, prepare_panel, require_columns, require_frame
from ..core.vcov import _intersection_codes, sandwich
from ..errors import (
    COUNTS_POINTER,
    DroppedRowsWarning,
    EstimationError,
    FewClustersWarning,
    InputError,
    NotComputableWarning,
    SpecificationError,
    check_alpha,
    check_literal,
    format_counts,
    format_message,
)
from ..results import (
    ATTDefinition,
    EstimationResult,
    PretrendTest,
    VcovSpec,
    make_result,
)
from ._etwfe_numerics import (
    Design,
    SweptDesign,
    _fmt,
    build_design,
    cell_effect_rows,
    delta_method_poisson,
    design_block,
    group_demean,
    indicator_matrix,
)
from ._ppml_kernel import WeightedFE, collinearity_reference
from .ppml import _fe_columns as _fe_cols
from .ppml import _fe_name, fe_codes, ppml

__all__ = ["ETWFEAggregateResult", "ETWFEResult", "etwfe"]

ESTIMATOR = "etwfe"
CONTROL_GROUPS = ("not_yet_treated", "never_treated")
FAMILIES = ("gaussian", "poisson")
AGGREGATIONS = ("simple", "dynamic", "group", "calendar")
FixedEffect = str | Sequence[str]
#: IRLS deviance criterion: tighter than ppml's 1e-8 because the cell coefficients are
#: recovered by one FWL step at the converged weights (a deviance change of 1e-8 leaves
#: coefficients ~1e-5 from the optimum)
POISSON_TOL = 1e-12
#: memory budget of the Poisson FWL step and of the response-scale aggregation: the swept
#: design X~ (n x k) is kept whole only when it fits, otherwise it is handled in column
#: chunks of this many bytes of temporaries (O(n x chunk) memory; same estimates)
FWL_MEMORY_BYTES = 2**28
#: sweep tolerance of the chunked FWL step: its products X'W X~ and X'W z~ are linear in
#: the sweep error where the whole-X~ products X~'W X~, X~'W z~ are quadratic, so the
#: chunked columns are swept further to give the same estimates (to 1e-10)
FWL_CHUNK_TOL = 1e-13


# ============================================================================ results
@dataclass(frozen=True, eq=False, repr=False)
class ETWFEResult(EstimationResult):
    """Cell coefficients of :func:`etwfe` (terms ``ATT(g,t)``, ``term_info`` has
    ``cohort`` and ``time``); :meth:`aggregate` gives R ``emfx``'s averages."""

    def aggregate(self, type: Literal["simple", "dynamic", "event", "group", "calendar"]
                  = "simple", *, by_xvar: bool = False,
                  scale: Literal["response", "link"] = "response") -> ETWFEAggregateResult:
        """Average the cell effects over treated observations (R ``emfx``).

        Parameters
        ----------
        type : ``"simple"`` (one ``ATT`` row), ``"dynamic"`` / ``"event"`` (rows per
            ``rel_time = t - g``), ``"group"`` / ``"cohort"`` (per ``cohort``), ``"calendar"`` (per
            ``time``); every aggregation also has the ``ATT`` row (the simple average).
            Each treated observation has weight one, as ``emfx`` (without compression).
            With ``control_group="never_treated"`` the dynamic aggregation also has the
            pre-treatment event times (placebos; the reference ``-1`` is omitted) and a
            joint Wald pre-trend test in ``pretrend_test``; the other aggregations use the
            post-treatment cells only.
        by_xvar : one row per value of ``xvar`` for each key (column ``xvar``).
        scale : ``"response"`` (default; for Poisson: the average difference of the
            predicted means with and without the treatment, ``emfx(predict =
            "response")``) or ``"link"`` (average of the log-scale cell effects). For the
            linear model both are the same.

        Standard errors: delta method with the full variance of the fit. For the Poisson
        model the gradient includes the fixed effects (R ``emfx`` on ``etwfe(fe =
        "none")``), computed without forming their variance (see
        :func:`~twinimpact.estimators._etwfe_numerics.delta_method_poisson`). Intervals
        use the normal distribution (as ``emfx``).
        """
        return _aggregate(self, type, by_xvar=by_xvar, scale=scale)


@dataclass(frozen=True, eq=False, repr=False)
class ETWFEAggregateResult(EstimationResult):
    """Averaged ETWFE effects; for Poisson also :meth:`proportional`."""

    def to_frame(self, alpha: float = 0.05) -> pd.DataFrame:
        out = super().to_frame(alpha)
        if self.term_info is not None and "xvar" in self.term_info.columns:
            out.insert(2, "xvar", self.term_info["xvar"].to_numpy())
        return out

    tidy = to_frame

    def proportional(self, alpha: float = 0.05) -> pd.DataFrame:
        """Effects as proportional changes of the treated observations' mean outcome.

        ``effect = sum(mu1) / sum(mu0) - 1`` per row (mu1, mu0: predicted means with and
        without the treatment), its delta-method ``std_error`` and an interval from the
        log ratio transformed back (so it stays above -1). Poisson, response scale only.
        """
        prop = self.extras.get("proportional")
        if prop is None:
            raise SpecificationError(format_message(
                "proportional changes exist for family='poisson' aggregations on the "
                "response scale only", seen=self.spec.get("family"),
                fix="fit etwfe(..., family='poisson') and aggregate(scale='response')"))
        est, var_ratio, log_r, var_log = (np.asarray(prop[k]) for k in
                                          ("effect", "var", "log_ratio", "var_log"))
        crit = float(stats.norm.ppf(1 - alpha / 2))
        se_log = np.sqrt(np.clip(var_log, 0, None))
        out = pd.DataFrame({"term": list(self.terms), "effect": est,
                            "std_error": np.sqrt(np.clip(var_ratio, 0, None)),
                            "ci_lower": np.expm1(log_r - crit * se_log),
                            "ci_upper": np.expm1(log_r + crit * se_log)})
        if self.term_info is not None:
            for col in ("cohort", "time", "rel_time", "xvar"):
                if col in self.term_info.columns:
                    out[col] = self.term_info[col].to_numpy()
        return out


# ============================================================================ estimator
def etwfe(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
          covariates: Sequence[str] | None = None,
          control_group: Literal["not_yet_treated", "never_treated"] = "not_yet_treated",
          family: Literal["gaussian", "poisson"] = "gaussian",
          fixed_effects: Sequence[FixedEffect] | None = None, xvar: str | None = None,
          cluster: str | Sequence[str] | None = None,
          vcov: Literal["iid", "hetero", "cluster"] | None = None,
          alpha: float = 0.05) -> ETWFEResult:
    """Extended two-way fixed effects (Wooldridge 2021, 2023), R ``etwfe`` / Stata ``jwdid``.

    Model: ``E[y_it] = h(FE_it + sum_{g,s} tau_gs D_gs,it + covariate terms)`` with
    ``h`` the identity (``family="gaussian"``, OLS) or ``exp`` (``"poisson"``, PPML;
    zeros kept) and ``D_gs,it = 1`` when unit ``i`` belongs to cohort ``g`` and ``t = s``
    for every treated cell:

    * ``control_group="not_yet_treated"`` (default): cells ``t >= g``; untreated rows of
      every unit (never and not-yet treated) identify the counterfactual. Without
      never-treated units the last cohort is the control and periods from its adoption
      on are dropped (counted), as R ``etwfe``.
    * ``"never_treated"``: cells for every ``t != g - 1`` of every treated cohort (the
      pre-treatment cells are placebo estimates); only never-treated units are controls.

    Covariates (R etwfe): ``c`` enters raw, interacted with cohort dummies (all but the
    control cohort) and period dummies (all but the first period), and demeaned within
    cohort (``c_dm``) interacted with every cell; ``xvar`` (a heterogeneity variable) is
    demeaned within cohort x period and interacted with every cell and with the period
    dummies. Terms absorbed by the fixed effects are dropped as collinear.

    Parameters
    ----------
    data : DataFrame, long panel (one row per unit x period). Not modified.
    outcome, unit, time, cohort : column names. ``cohort`` is the first treated period
        (NaN / 0 / after the last period = never treated) and must be constant within
        ``unit``. Units treated in or before the first observed period have no
        pre-treatment period and are dropped (counted, with a warning).
    covariates : numeric columns.
    family : ``"gaussian"`` or ``"poisson"`` (non-negative outcome).
    fixed_effects : sequence of columns or tuples of columns (interactions) replacing the
        default ``(unit, time)``; e.g. ``("exp_year", "imp_year", "pair")`` for a gravity
        panel with ``unit="pair"`` (the treatment must be constant within pair x period).
    xvar : column with the heterogeneity variable (``aggregate(by_xvar=True)``).
    cluster : cluster column(s); default ``unit`` (the level at which treatment is
        assigned). ``vcov`` : ``"iid"`` / ``"hetero"`` / ``"cluster"`` (default
        ``"cluster"``).
    alpha : default interval level.

    Returns
    -------
    ETWFEResult
        Terms ``ATT(g,t)`` (``term_info``: ``cohort``, ``time``), the coefficients of the
        cells: log-points for Poisson. ``extras["full"]`` holds every coefficient of the
        fit (covariate terms too). Cells with no comparison (collinear with the fixed
        effects, or all their observations separated) are NaN with a warning that counts
        them. ``diagnostics["dropped_rows"]`` counts every dropped row and why.

    Examples
    --------
    >>> import numpy as np, pandas as pd, twinimpact as ti
    >>> rng = np.random.default_rng(0)
    >>> d = pd.DataFrame({"id": np.repeat(np.arange(90), 6), "t": np.tile(np.arange(6), 90)})
    >>> d["g"] = np.repeat(rng.choice([0, 3, 4], 90), 6)
    >>> d["y"] = d["id"] % 7 + 0.3 * d["t"] + ((d["g"] > 0) & (d["t"] >= d["g"])) \
+ rng.normal(0, 0.1, len(d))
    >>> r = ti.etwfe(d, outcome="y", unit="id", time="t", cohort="g")
    >>> round(float(r.aggregate("simple").params["ATT"]), 1)
    1.0
    """
    check_literal("control_group", control_group, CONTROL_GROUPS)
    check_literal("family", family, FAMILIES)
    check_alpha(alpha)
    ctrl_names = list(as_tuple(covariates))
    if fixed_effects is None:
        fes: list[FixedEffect] = [unit, time]
    else:
        fes = [fixed_effects] if isinstance(fixed_effects, str) else list(fixed_effects)
        if not fes:
            raise SpecificationError(format_message(
                "fixed_effects= is empty", fix=f"leave it None for ({unit!r}, {time!r}) or "
                "name the sets, e.g. ('exp_year', 'imp_year', 'pair')"))
    clus = as_tuple(cluster) or (unit,)
    if vcov is None:
        vcov = "cluster"
    check_literal("vcov", vcov, ("iid", "hetero", "cluster"))
    if xvar is not None and xvar in ctrl_names:
        raise SpecificationError(format_message(
            "xvar is also a covariate", seen=xvar, fix="list it in one of the two only"))
    # work on a renamed copy of the columns we need (role names cannot collide)
    fe_cols = list(dict.fromkeys(c for f in fes for c in _fe_cols(f)))
    aux = list(dict.fromkeys([*fe_cols, *clus]))
    data = require_frame(data)
    require_columns(data, [outcome, unit, time, cohort, *ctrl_names, xvar, *aux])
    work = pd.DataFrame({"__y": data[outcome].to_numpy(), "__u": data[unit].to_numpy(),
                         "__t": data[time].to_numpy(), "__g": data[cohort].to_numpy()},
                        index=data.index)
    num_extra = [f"__c{j}" for j in range(len(ctrl_names))]
    for j, c in enumerate(ctrl_names):
        work[num_extra[j]] = data[c].to_numpy()
    aux_map = {c: f"__a{j}" for j, c in enumerate(aux)}
    for c, a in aux_map.items():
        work[a] = data[c].to_numpy()
    if xvar is not None:
        work["__x"] = data[xvar].to_numpy()
    panel = prepare_panel(work, outcome="__y", unit="__u", time="__t", cohort="__g",
                          extra=list(aux_map.values()) + (["__x"] if xvar else []), numeric_extra=num_extra,
                          estimator=ESTIMATOR,
                          allow_duplicates=fixed_effects is not None)
    names_back = {"__y": outcome, "__u": unit, "__t": time, "__g": cohort}
    dropped = {_rename(k, names_back, aux_map, ctrl_names, xvar): v
               for k, v in panel.dropped.items()}
    f = panel.frame
    y = f["y"].to_numpy(dtype=float)
    t = f["time"].to_numpy(dtype=float)
    g = f["cohort"].to_numpy(dtype=float)
    if family == "poisson" and (y < 0).any():
        i = int(np.flatnonzero(y < 0)[0])
        raise InputError(format_message(
            f"{ESTIMATOR}: family='poisson' needs a non-negative outcome {outcome!r} "
            f"({int((y < 0).sum())} negative value(s))",
            where=f"{unit} = {f['unit'].iloc[i]!r}, {time} = {_fmt(t[i])}", seen=float(y[i]),
            fix="model the outcome in levels (trade flows, counts) or use family='gaussian'"))
    tmin = float(t.min())
    keep = np.ones(len(f), dtype=bool)
    always = np.isfinite(g) & (g <= tmin)
    if always.any():
        dropped[f"treated in or before the first period {_fmt(tmin)} (no pre-treatment "
                "period)"] = int(always.sum())
        keep &= ~always
    never = ~np.isfinite(g)
    ref_cohort = never.copy()
    if control_group == "never_treated":
        if not (never & keep).any():
            raise EstimationError(format_message(
                f"{ESTIMATOR}: control_group='never_treated' but no unit is never treated",
                where=f"column {cohort!r}", seen=sorted(set(g[keep].tolist()))[:10],
                fix="use control_group='not_yet_treated' (the last cohort then serves as "
                    "control)"))
    elif not (never & keep).any():
        glast = float(np.nanmax(g[keep]))
        ref_cohort = g == glast
        late = keep & (t >= glast)
        if late.any():
            dropped[f"period on or after the last cohort {_fmt(glast)} (no not-yet-treated "
                    "control left)"] = int(late.sum())
            keep &= ~late
    if dropped and any(k.startswith(("treated in", "period on")) for k in dropped):
        lost = {k: v for k, v in dropped.items() if k.startswith(("treated in", "period on"))}
        warnings.warn(
            f"{ESTIMATOR}: dropped {sum(lost.values()):,} row(s) without a comparison: "
            f"{format_counts(lost)}. {COUNTS_POINTER}", DroppedRowsWarning, stacklevel=2)
    # covariates demeaned on the rows passed (R: before etwfe drops the .Dtreat-NA rows)
    cohort_code = factorize(np.where(np.isfinite(g), g, -np.inf))[0]
    ctrls = f[[f"__c{j}" for j in range(len(ctrl_names))]].to_numpy(dtype=float) \
        if ctrl_names else None
    ctrls_dm = group_demean(ctrls, cohort_code) if ctrls is not None else None
    xv = f["__x"].to_numpy() if xvar is not None else None
    xvar_dm = None
    xvar_names: list[str] = []
    if xv is not None:
        xmat, xvar_names, xv = _xvar_matrix(xv, xvar)
        gt_code = factorize(cohort_code.astype(np.int64) * (len(t) + 1)
                            + factorize(t)[0])[0]
        xvar_dm = group_demean(xmat, gt_code)
    rows = np.flatnonzero(keep)
    g_k, t_k = g[rows], t[rows]
    treated_cohort = np.isfinite(g_k) & ~ref_cohort[rows]
    if control_group == "not_yet_treated":
        in_cell = treated_cohort & (t_k >= g_k)
    else:
        in_cell = treated_cohort & (t_k != g_k - 1)
    if not in_cell.any():
        raise EstimationError(format_message(
            f"{ESTIMATOR}: no treated cohort x period cell in the data",
            where=f"column {cohort!r}", seen=sorted(set(g[keep].tolist()))[:10],
            fix="check the cohort column (first treated period; NaN or 0 = never treated)"))
    design = build_design(
        g_k, t_k, in_cell, ctrls=None if ctrls is None else ctrls[rows],
        ctrl_names=ctrl_names, ctrls_dm=None if ctrls_dm is None else ctrls_dm[rows],
        xvar_dm=None if xvar_dm is None else xvar_dm[rows], xvar_names=xvar_names,
        ref_cohort_rows=ref_cohort[rows], tref=float(t_k.min()))
    sub = f.iloc[rows].reset_index(drop=True)
    fe_frame = pd.DataFrame({c: sub[aux_map[c]].to_numpy() for c in aux})
    if fixed_effects is None:
        fe_frame[unit] = sub["unit"].to_numpy()
        fe_frame[time] = sub["time"].to_numpy()
    if family == "gaussian":
        fit = _fit_linear(y[rows], design, fes, fe_frame, clus, vcov)
    else:
        fit = _fit_poisson(y[rows], design, fes, fe_frame, clus, vcov, dropped)
    full = fit["params"]
    n_cells = design.n_cells
    cell_names = list(design.names[:n_cells])
    coef = full.to_numpy()[:n_cells]
    cov = fit["vcov"][:n_cells, :n_cells]
    solved = fit.get("solved", True)
    if solved and not np.isfinite(coef).any():
        raise EstimationError(format_message(
            f"{ESTIMATOR}: no treated cell can be identified: every cohort x period "
            "indicator is collinear with the fixed effects (the treatment varies only "
            "across fixed-effect cells, or all treated observations were separated)",
            where=f"fixed effects {tuple(_fe_name(x) for x in fes)}",
            fix="use fixed effects coarser than unit x period (e.g. exporter-year, "
                "importer-year and pair with unit = pair)"))
    n_nan = int((~np.isfinite(coef)).sum())
    diag = {"n_input_rows": panel.n_input, "n_used_rows": int(fit["nobs"]),
            "dropped_rows": dropped, "n_cells": n_cells, "n_cells_not_identified": n_nan,
            "collinear": fit["collinear"], **fit.get("diag", {})}
    if not solved:
        diag.setdefault("notes", []).append(
            "the Poisson IRLS solve did not converge: every estimate is NaN")
    elif n_nan:
        bad = [c for c, b in zip(cell_names, coef, strict=True) if not np.isfinite(b)]
        diag.setdefault("notes", []).append(
            f"{n_nan} cell(s) without a comparison (collinear with the fixed effects or "
            f"all observations separated): {bad[:10]}")
    term_info = pd.DataFrame({"cohort": design.cells[:, 0], "time": design.cells[:, 1]},
                             index=cell_names)
    spec = {"outcome": outcome, "unit": unit, "time": time, "cohort": cohort,
            "covariates": tuple(ctrl_names), "control_group": control_group,
            "family": family, "fixed_effects": tuple(_fe_name(x) for x in fes),
            "xvar": xvar, "cluster": clus if vcov == "cluster" else (), "vcov": vcov,
            "alpha": alpha}
    state = {"design": design, "rows_fit": fit["rows_fit"], "full": full,
             "full_vcov": fit["vcov"], "in_cell": in_cell, "g": g_k, "t": t_k,
             "xvar_values": None if xv is None else xv[rows], "poisson": fit.get("poisson"),
             "control_group": control_group, "solved": solved}
    return make_result(ESTIMATOR, pd.Series(coef, index=cell_names), cov, fit["vcov_spec"],
                       int(fit["nobs"]), spec=spec, diagnostics=diag, term_info=term_info,
                       extras={"full": full, "state": state}, cls=ETWFEResult,
                       nan_reason="cell without a comparison (collinear with the fixed "
                                  "effects, or every observation of the cell separated)"
                       if solved else "the Poisson IRLS solve did not converge")


def _xvar_matrix(values: np.ndarray, name: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    """A numeric / boolean ``xvar`` as one column; anything else (strings, categories)
    as dummies of every level but the first (R: a factor ``xvar``)."""
    s = pd.Series(values)
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        v = s.to_numpy(dtype=float)
        return v[:, None], [name], v
    levels = sorted(pd.unique(s), key=str)
    if len(levels) < 2:
        raise SpecificationError(format_message(
            f"xvar {name!r} takes a single value", seen=levels,
            fix="pass a variable that varies across units"))
    mat = np.column_stack([(s == lv).to_numpy(dtype=float) for lv in levels[1:]])
    return mat, [f"{name}={lv}" for lv in levels[1:]], s.astype(str).to_numpy()


def _rename(reason: str, names_back: dict[str, str], aux_map: dict[str, str],
            ctrl_names: list[str], xvar: str | None) -> str:
    for k, v in names_back.items():
        reason = reason.replace(f"({k})", f"({v})")
    for c, a in aux_map.items():
        reason = reason.replace(a, c)
    for j, c in enumerate(ctrl_names):
        reason = reason.replace(f"__c{j}", c)
    if xvar is not None:
        reason = reason.replace("__x", xvar)
    return reason


def _codes(fe_frame: pd.DataFrame, fes: Sequence[FixedEffect]) -> list[np.ndarray]:
    return [fe_codes(fe_frame, x) for x in fes]


def _fit_linear(y: np.ndarray, design: Design, fes: Sequence[FixedEffect],
                fe_frame: pd.DataFrame, clus: tuple[str, ...], vcov: str) -> dict[str, Any]:
    codes = _codes(fe_frame, fes)
    clusters = [fe_frame[c].to_numpy() for c in clus] if vcov == "cluster" else []
    params, v, vspec, info = fit_fe_ols(
        y, design.dense, design.names, codes, vcov=vcov, clusters=clusters,
        cluster_names=clus if vcov == "cluster" else (), onehot=design.onehot,
        estimator=ESTIMATOR)
    return {"params": params, "vcov": np.asarray(v), "vcov_spec": vspec, "nobs": len(y),
            "rows_fit": np.arange(len(y)), "collinear": list(info["collinear"]),
            "diag": {"k_fe": info["k_fe"]}}


def _fit_poisson(y: np.ndarray, design: Design, fes: Sequence[FixedEffect],
                 fe_frame: pd.DataFrame, clus: tuple[str, ...], vcov: str,
                 dropped: dict[str, int]) -> dict[str, Any]:
    """PPML with the cell indicators absorbed as one more fixed-effect set.

    The saturated cell dummies span the same space as a categorical ``cell`` (one level
    per cell, one level shared by every untreated row: that level is the constant the
    other fixed effects already contain), so ``ppml`` with ``fixed_effects = (*fes,
    cell)`` fits the same model while sweeping one column per IRLS iteration instead of
    one per cell. The cell coefficients and their variance then come from one weighted
    Frisch-Waugh-Lovell step at the converged weights: ``X~`` = cell indicators (and the
    covariate columns) with ``fes`` swept out, ``b = (X~'WX~)^{-1} X~'W z~`` with ``z`` the
    IRLS working response -- the coefficients of the dummy-variable fit, whose sandwich
    uses ppml's small-sample factors (same ``K``: the cell levels count as parameters).
    Singletons are kept (a cell may hold one flow; fixest keeps singletons too): they do
    not change any estimate.
    """
    n_cells = design.n_cells
    frame = pd.DataFrame({"__y": y})
    dense_names = [f"__x{j}" for j in range(design.dense.shape[1])]
    for j, nm in enumerate(dense_names):
        frame[nm] = design.dense[:, j]
    regs = dense_names or ["__treated"]
    if not dense_names:  # ppml needs a regressor: one the cell set absorbs (dropped)
        frame["__treated"] = (design.onehot >= 0).astype(float)
    fe_names = []
    for j, spec in enumerate(fes):
        nm = f"__fe{j}"
        frame[nm] = fe_codes(fe_frame, spec)
        fe_names.append(nm)
    frame["__cell"] = design.onehot
    cl_names = []
    if vcov == "cluster":
        for j, c in enumerate(clus):
            frame[f"__cl{j}"] = factorize(fe_frame[c])[0]
            cl_names.append(f"__cl{j}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = ppml(frame, outcome="__y", regressors=regs, fixed_effects=[*fe_names, "__cell"],
                 cluster=cl_names or None, vcov=vcov, drop_singletons=False,
                 tol=POISSON_TOL)
    for w in caught:  # re-emit ppml's warnings under our name
        if issubclass(w.category, NotComputableWarning):
            continue  # collinear columns: reported per cell below
        if issubclass(w.category, FewClustersWarning):
            continue  # said again by make_result, under the cluster column's own name
        warnings.warn(str(w.message).replace("ppml", ESTIMATOR, 1), w.category, stacklevel=3)
    for k, v in r.diagnostics["dropped_rows"].items():
        dropped[k] = dropped.get(k, 0) + int(v)
    rows_fit = np.asarray(r.extras["rows_used"])
    mu = np.asarray(r.extras["fitted"])
    yf = y[rows_fit]
    codes = [factorize(frame[c].array.take(rows_fit))[0] for c in fe_names]
    fe = WeightedFE(codes)
    fe.set_weights(mu)

    def sweep(v: np.ndarray, tol: float = 1e-11) -> np.ndarray:
        return fe.residualize(v, tol=tol)[0]

    vs = r.vcov_spec
    cl = [frame[c].to_numpy()[rows_fit] for c in cl_names]
    z = np.log(mu) + (yf - mu) / mu
    fwl = _fwl_step(design, rows_fit, mu, yf - mu, z, sweep, vs.kind, cl)
    kept = fwl["kept"]
    bread = np.linalg.inv(fwl["gram"][np.ix_(kept, kept)])
    coef = np.full(len(design.names), np.nan)
    coef[kept] = bread @ fwl["xwz"][kept]
    factor = float(vs.small_sample.get("adj", 1.0)) * float(vs.small_sample.get(
        "cluster_adj", 1.0))
    v_sub = factor * _meat_sandwich(fwl["scores"], bread, vs.kind, cl,
                                    cluster_sums=fwl["cluster_sums"])
    v = np.full((len(coef), len(coef)), np.nan)
    v[np.ix_(kept, kept)] = v_sub
    # an IRLS solve that did not converge is not an estimate (ppml's own params are NaN
    # then, and its warning, re-emitted above, says so): the FWL step at its last
    # weights is not one either
    solved = bool(r.diagnostics.get("converged", True)) and bool(
        r.diagnostics.get("demean_converged", True))
    if not solved:
        coef[:] = np.nan
        v[:] = np.nan
    vspec = VcovSpec(vs.kind, cluster=tuple(clus) if vcov == "cluster" else (),
                     n_clusters=vs.n_clusters, small_sample=dict(vs.small_sample),
                     df=None, description=vs.description)
    # the aggregation sweeps with its own WeightedFE (the fit's is not kept in the result)
    swept = SweptDesign(design, rows_fit, kept, mu, _no_sweep, fwl["x_tilde"])
    poisson = {"y": yf, "mu": mu, "swept": swept, "bread": bread, "kept": kept,
               "fe_codes": codes, "cluster_codes": cl, "factor": factor, "kind": vs.kind}
    collinear = [nm for nm, kp in zip(design.names, kept, strict=True) if not kp]
    diag = {k: r.diagnostics[k] for k in ("iterations", "converged", "deviance",
                                          "n_zero_outcome", "k_fe") if k in r.diagnostics}
    diag["n_cells_absorbed"] = n_cells
    return {"params": pd.Series(coef, index=list(design.names)), "vcov": v,
            "vcov_spec": vspec, "nobs": r.nobs, "rows_fit": rows_fit,
            "collinear": collinear, "poisson": poisson, "diag": diag, "solved": solved}


def _no_sweep(v: np.ndarray) -> np.ndarray:  # pragma: no cover - replaced before use
    raise RuntimeError("SweptDesign.sweep not set")


def _chunk_width(n: int, arrays: int) -> int:
    """Columns per chunk so that ``arrays`` float64 (n, width) temporaries stay within
    :data:`FWL_MEMORY_BYTES`."""
    return max(1, int(FWL_MEMORY_BYTES // (8 * max(n, 1) * arrays)))


def _cluster_code_sets(clusters: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The cluster codes :func:`~twinimpact.core.vcov.sandwich` sums scores over: each
    dimension, and for multiway clustering every intersection (same order)."""
    base = [factorize(c)[0] for c in clusters]
    out = list(base)
    for r_ in range(2, len(base) + 1):
        for combo in combinations(range(len(base)), r_):
            out.append(_intersection_codes([base[i] for i in combo]))
    return out


class _ClusterSums:
    """Per-cluster sums of scores accumulated column chunk by column chunk, served to
    :func:`~twinimpact.core.vcov.sandwich` as its ``cluster_sums`` callable."""

    def __init__(self, clusters: Sequence[np.ndarray], k: int) -> None:
        self.codes = _cluster_code_sets(clusters)
        self.aggs = [indicator_matrix(c, int(c.max()) + 1) for c in self.codes]
        self.sums = [np.zeros((a.shape[0], k)) for a in self.aggs]

    def add(self, scores: np.ndarray, cols: np.ndarray | slice) -> None:
        for agg, out in zip(self.aggs, self.sums, strict=True):
            out[:, cols] = agg @ scores

    def subset(self, cols: np.ndarray) -> _ClusterSums:
        sub = object.__new__(_ClusterSums)
        sub.codes, sub.aggs = self.codes, self.aggs
        sub.sums = [s_[:, cols] for s_ in self.sums]
        return sub

    def __call__(self, codes: np.ndarray | None) -> np.ndarray:
        for c, s_ in zip(self.codes, self.sums, strict=True):
            if codes is not None and len(c) == len(codes) and np.array_equal(c, codes):
                return s_
        raise ValueError("cluster codes not accumulated")  # pragma: no cover


def _fwl_step(design: Design, rows: np.ndarray, mu: np.ndarray, u: np.ndarray,
              z: np.ndarray, sweep: Any, kind: str, clusters: Sequence[np.ndarray]
              ) -> dict[str, Any]:
    """The weighted Frisch-Waugh-Lovell step at the converged weights, by column chunks.

    Sweeps the fixed effects out of the design columns a chunk at a time (memory
    O(n x chunk), never O(n x k): the cell block is an indicator matrix) and keeps only
    what the estimates need: the Gram matrix ``X'W X~`` (= ``X~'W X~``, symmetrised),
    ``X'W z~`` (= ``X~'W z~``), the centred weighted sums of squares of ``X`` (for the
    collinearity rule) and the per-cluster score sums ``sum_{i in g} x~_i u_i`` (the
    cluster meat needs G x k, not n x k). When ``X~`` fits in :data:`FWL_MEMORY_BYTES`
    (or ``kind == "hetero"``, whose meat needs every observation's score) it is kept
    whole and the products are the plain ``X~'W X~``, ``X~'W z~`` of the unchunked step.
    """
    n, k = len(rows), len(design.names)
    store = kind == "hetero" or 8 * n * k <= FWL_MEMORY_BYTES
    z_t = sweep(z[:, None])[:, 0] if store else sweep(z[:, None], tol=FWL_CHUNK_TOL)[:, 0]
    width = k if store else _chunk_width(n, 6)
    ind = indicator_matrix(design.onehot[rows], design.n_cells)
    dense = design.dense[rows] if design.dense.shape[1] else None
    gram = np.zeros((k, k))
    ref = np.zeros(k)
    csums = _ClusterSums(clusters, k) if kind not in ("iid", "hetero") else None
    x_tilde = np.empty((n, k)) if store else None
    for lo in range(0, k, width):
        cols = np.arange(lo, min(k, lo + width))
        x = design_block(design, rows, cols)
        ref[cols] = collinearity_reference(x, mu)
        x_t = sweep(x) if store else sweep(x, tol=FWL_CHUNK_TOL)
        del x
        if store:
            x_tilde[:, cols] = x_t
        else:
            wx = x_t * mu[:, None]
            gram[:design.n_cells, cols] = ind @ wx
            if dense is not None:
                gram[design.n_cells:, cols] = dense.T @ wx
            del wx
        if csums is not None:
            csums.add(x_t * u[:, None], cols)
        del x_t
    if store:
        gram = (x_tilde * mu[:, None]).T @ x_tilde
        xwz = (x_tilde * mu[:, None]).T @ z_t
    else:
        gram = (gram + gram.T) / 2
        wz = mu * z_t
        xwz = np.concatenate([ind @ wz, dense.T @ wz if dense is not None else []])
    kept = _kept_columns(gram, ref)
    scores = None
    if kind == "hetero":
        scores = x_tilde[:, kept] * u[:, None]
    return {"gram": gram, "xwz": xwz, "kept": kept, "scores": scores,
            "cluster_sums": None if csums is None else csums.subset(kept),
            "x_tilde": None if x_tilde is None else np.ascontiguousarray(x_tilde[:, kept])}


def _kept_columns(gram: np.ndarray, ref: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """Columns of ``X~`` (fixed effects swept out; ``gram = X~'WX~``) that are not
    combinations of earlier ones -- the sequential rule of ppml's kernel: column ``j``'s
    weighted residual sum of squares after the earlier kept columns, by an incremental
    Cholesky factor of the Gram matrix, must exceed ``tol`` times its sum of squares
    before the sweep (``ref``, from ``_ppml_kernel.collinearity_reference``)."""
    k = gram.shape[0]
    kept = np.zeros(k, dtype=bool)
    if k == 0:
        return kept
    chol = np.zeros((k, k))
    m = 0
    idx: list[int] = []
    for j in range(k):
        if m:
            lj = linalg.solve_triangular(chol[:m, :m], gram[idx, j], lower=True)
            rss = gram[j, j] - lj @ lj
        else:
            lj = np.zeros(0)
            rss = gram[j, j]
        if rss > tol * max(ref[j], 1e-300):
            chol[m, :m] = lj
            chol[m, m] = np.sqrt(rss)
            idx.append(j)
            kept[j] = True
            m += 1
    return kept


def _meat_sandwich(scores: np.ndarray | None, bread: np.ndarray, kind: str,
                   clusters: Sequence[np.ndarray], cluster_sums: Any = None) -> np.ndarray:
    """``B M B`` without small-sample factors (``kind`` as ppml's vcov spec); for
    clustered kinds ``cluster_sums`` (a :class:`_ClusterSums`) may replace ``scores``."""
    if kind == "iid":
        return bread
    if kind == "hetero":
        return bread @ (scores.T @ scores) @ bread
    v, _ = sandwich(scores, bread, kind="cluster", n=len(clusters[0]), k=0,
                    cluster_codes=[factorize(c)[0] for c in clusters], adj=False,
                    cluster_adj=False, cluster_sums=cluster_sums)
    return v


# ============================================================================ aggregation
def _aggregate(res: ETWFEResult, type: str, *, by_xvar: bool, scale: str
               ) -> ETWFEAggregateResult:
    type = {"event": "dynamic", "cohort": "group"}.get(type, type)
    check_literal("type", type, (*AGGREGATIONS, "event", "cohort"))
    check_literal("scale", scale, ("response", "link"))
    st = res.extras["state"]
    spec = dict(res.spec)
    if by_xvar and spec.get("xvar") is None:
        raise SpecificationError(format_message(
            "by_xvar=True needs a fit with xvar=", fix="refit etwfe(..., xvar='column')"))
    if not st.get("solved", True):
        raise EstimationError(format_message(
            f"{ESTIMATOR}: nothing to aggregate: the Poisson IRLS solve did not converge "
            "(every cell estimate is NaN)", where="etwfe(..., family='poisson')",
            fix="check for separation / extreme outcomes (diagnostics['dropped_rows'], "
                "diagnostics['iterations'])"))
    design: Design = st["design"]
    rows_fit = st["rows_fit"]
    full = st["full"].to_numpy()
    cell_ok = np.isfinite(full[:design.n_cells])

    def targets(g: np.ndarray, t: np.ndarray, onehot: np.ndarray) -> np.ndarray:
        m = onehot >= 0
        if type != "dynamic" or st["control_group"] == "not_yet_treated":
            m &= t >= g
        return m

    all_target = targets(st["g"], st["t"], design.onehot)
    g = st["g"][rows_fit]
    t = st["t"][rows_fit]
    onehot = design.onehot[rows_fit]
    target = targets(g, t, onehot) & cell_ok[np.where(onehot >= 0, onehot, 0)]
    n_lost = int(all_target.sum() - target.sum())
    if n_lost:
        warnings.warn(format_message(
            f"{ESTIMATOR}: {n_lost} treated observation(s) are left out of the averages: "
            "their cell has no comparison (NaN) or they were dropped from the fit "
            "(separated / singleton)",
            fix="the reasons are in result.diagnostics['notes'] and "
                "result.diagnostics['dropped_rows']"),
            NotComputableWarning, stacklevel=3)
    idx = np.flatnonzero(target)
    keys_by = {"simple": None, "dynamic": (t - g), "group": g, "calendar": t}[type]
    xv = st["xvar_values"][rows_fit] if by_xvar else None
    groups: list[tuple[str, dict[str, float], np.ndarray]] = []
    key_col = {"dynamic": "rel_time", "group": "cohort", "calendar": "time"}.get(type)
    xlevels = pd.unique(xv[idx]) if by_xvar else [None]
    if by_xvar:
        xlevels = sorted(xlevels, key=lambda v: (isinstance(v, str), v))
    for xl in xlevels:
        in_x = idx if xl is None else idx[xv[idx] == xl]
        label = xl if xl is None or isinstance(xl, str) else _fmt(xl)
        suffix = "" if xl is None else f"[{spec['xvar']}={label}]"
        extra = {} if xl is None else {"xvar": xl}
        if keys_by is not None:
            for kv in np.unique(keys_by[in_x]):
                members = in_x[keys_by[in_x] == kv]
                groups.append((f"{key_col}={_fmt(kv)}{suffix}", {key_col: float(kv), **extra},
                               members))
        att_rows = in_x[t[in_x] >= g[in_x]]
        groups.append((f"ATT{suffix}", dict(extra), att_rows))
    groups = [gr for gr in groups if len(gr[2])]
    dx = cell_effect_rows(design, rows_fit[idx])       # (m, k) on target rows
    b = np.where(np.isfinite(full), full, 0.0)
    lin = dx @ b                                       # link-scale effect per target row
    terms = [gr[0] for gr in groups]
    poisson = st["poisson"]
    extras: dict[str, Any] = {}
    if poisson is None or scale == "link":
        a_mat = np.zeros((len(groups), len(full)))
        for q, (_, _, members) in enumerate(groups):
            jj = np.searchsorted(idx, members)  # members are sorted subsets of idx
            a_mat[q] = np.asarray(dx[jj].mean(axis=0)).reshape(-1)
        est = a_mat @ b
        vfull = np.where(np.isfinite(st["full_vcov"]), st["full_vcov"], 0.0)
        v = a_mat @ vfull @ a_mat.T
    else:
        est, v, extras = _poisson_response(groups, idx, dx, lin, poisson)
    info = []
    for _, d, _ in groups:
        info.append({key_col: float(d.get(key_col, np.nan)), "xvar": d.get("xvar")}
                    if key_col else {"xvar": d.get("xvar")})
    tinfo = pd.DataFrame(info, index=terms)
    cols = ([key_col] if key_col else []) + (["xvar"] if by_xvar else [])
    tinfo = tinfo[cols] if cols else None
    vspec = VcovSpec(res.vcov_spec.kind, cluster=res.vcov_spec.cluster,
                     n_clusters=res.vcov_spec.n_clusters,
                     small_sample=dict(res.vcov_spec.small_sample), df=None,
                     description="delta method on the fit's variance"
                     + (" incl. fixed effects" if poisson is not None and scale == "response"
                        else "") + ", normal reference (as R emfx)")
    pre = None
    if type == "dynamic" and key_col and not by_xvar:
        pre_idx = [i for i, (_, d, _) in enumerate(groups)
                   if d.get("rel_time", 0) < 0]
        if pre_idx:
            bp = est[pre_idx]
            vp = v[np.ix_(pre_idx, pre_idx)]
            stat = float(bp @ np.linalg.pinv(vp) @ bp)
            dfp = int(np.linalg.matrix_rank(vp))
            pre = PretrendTest(
                stat, df=dfp, p_value=float(stats.chi2.sf(stat, dfp)) if dfp else np.nan,
                kind="Wald chi2", n_coefficients=len(pre_idx), rank=dfp,
                terms=[terms[i] for i in pre_idx],
                note="Wald test that the pre-treatment event-time effects are zero "
                     "(pseudo-inverse, df = rank of their covariance)")
    aspec = {**spec, "aggregation": type, "by_xvar": by_xvar, "scale": scale}
    diag = {"dropped_rows": dict(res.diagnostics.get("dropped_rows", {})),
            "n_input_rows": res.diagnostics.get("n_input_rows"),
            "n_used_rows": res.nobs, "n_treated_obs": len(idx), "n_obs_lost_no_comparison": n_lost,
            "n_per_row": {nm: len(m) for nm, _, m in groups}}
    return make_result(ESTIMATOR, pd.Series(est, index=terms), v, vspec, res.nobs,
                       spec=aspec, diagnostics=diag, term_info=tinfo,
                       extras=extras, cls=ETWFEAggregateResult,
                       nan_reason="no treated observation with an identified cell",
                       pretrend_test=pre, att_definition=ATTDefinition(
                           "treated_observation_weighted",
                           "R emfx: every treated observation weight one"
                           + (", response scale" if poisson is not None and
                              scale == "response" else "")))


def _poisson_response(groups: list, idx: np.ndarray, dx: Any, lin: np.ndarray,
                      p: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Response-scale averages ``mean(mu1 - mu0)`` and ratios ``sum mu1 / sum mu0 - 1``
    with the full-vcov delta method (:func:`delta_method_poisson`).

    The (n, q) influence weights are formed a chunk of rows ``q`` at a time
    (:data:`FWL_MEMORY_BYTES`); clustered variances keep only their per-cluster sums."""
    mu = p["mu"]
    n = len(mu)
    kept = p["kept"]
    mu1 = mu[idx]
    mu0 = mu1 * np.exp(-lin)
    dxk = dx[:, np.flatnonzero(kept)]
    q = len(groups)
    members = [np.searchsorted(idx, mem) for _, _, mem in groups]  # sorted subsets of idx
    # slope-only gradient part of M0 = mean mu0 (M1 = mean mu1 has none)
    r0 = np.zeros((int(kept.sum()), q))
    m1 = np.zeros(q)
    m0 = np.zeros(q)
    for j, jj in enumerate(members):
        r0[:, j] = -(dxk[jj].T @ mu0[jj]) / len(jj)
        m1[j] = mu1[jj].mean()
        m0[j] = mu0[jj].mean()
    fe = WeightedFE(p["fe_codes"]) if p["fe_codes"] else None
    if fe is not None:
        fe.set_weights(mu)

    # the implicit X~ products are linear in the sweep error (see FWL_CHUNK_TOL)
    tol = 1e-12 if p["swept"].x_tilde is not None else FWL_CHUNK_TOL

    def sweep(v: np.ndarray) -> np.ndarray:
        if fe is None:
            return v
        return fe.residualize(v, tol=tol)[0]

    bread = p["bread"]
    swept = dataclasses.replace(p["swept"], sweep=sweep)
    u = p["y"] - mu
    clustered = p["kind"] not in ("iid", "hetero")
    parts = ("diff", "ratio", "log")
    if clustered:
        acc = {nm: _ClusterSums(p["cluster_codes"], q) for nm in parts}
    else:
        acc = {nm: np.empty((n, q)) for nm in parts}
    width = q if swept.x_tilde is not None else _chunk_width(n, 10)
    for lo in range(0, q, width):
        cols = np.arange(lo, min(q, lo + width))
        c1 = np.zeros((n, len(cols)))
        c0 = np.zeros((n, len(cols)))
        for jc, j in enumerate(cols):
            jj = members[j]
            rows = idx[jj]
            c1[rows, jc] = mu1[jj] / len(jj)
            c0[rows, jc] = mu0[jj] / len(jj)
        a1 = delta_method_poisson(c1, np.zeros((r0.shape[0], len(cols))), mu=mu,
                                  swept=swept, bread=bread, sweep=sweep)
        del c1
        a0 = delta_method_poisson(c0, r0[:, cols], mu=mu, swept=swept, bread=bread,
                                  sweep=sweep)
        del c0
        a = {"diff": a1 - a0,
             "ratio": a1 / m0[None, cols] - a0 * (m1 / m0**2)[None, cols],
             "log": a1 / m1[None, cols] - a0 / m0[None, cols]}
        del a1, a0
        for nm in parts:
            if clustered:
                acc[nm].add(a[nm] * u[:, None], cols)
            else:
                acc[nm][:, cols] = a[nm]
        del a

    def var(nm: str) -> np.ndarray:
        if p["kind"] == "iid":
            a = acc[nm]
            return p["factor"] * (a * mu[:, None]).T @ a
        if p["kind"] == "hetero":
            s_ = acc[nm] * u[:, None]
            return p["factor"] * _meat_sandwich(s_, np.eye(q), "hetero", p["cluster_codes"])
        return p["factor"] * _meat_sandwich(None, np.eye(q), p["kind"], p["cluster_codes"],
                                            cluster_sums=acc[nm])

    v_diff = var("diff")
    v_log = var("log")
    extras = {"proportional": {"effect": m1 / m0 - 1, "var": np.diag(var("ratio")),
                               "log_ratio": np.log(m1 / m0), "var_log": np.diag(v_log),
                               "cov_log": v_log,
                               "mean_treated": m1, "mean_counterfactual": m0}}
    return m1 - m0, v_diff, extras
