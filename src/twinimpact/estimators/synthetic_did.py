"""Synthetic difference-in-differences, synthetic control and DiD for a treated block.

:func:`synthetic_did` implements Arkhangelsky, Athey, Hirshberg, Imbens & Wager (2021),
"Synthetic Difference-in-Differences", *AER* 111(12), Algorithm 1, and follows the
reference R package ``synthdid`` (synth-inference/synthdid) in every numerical choice,
so estimates agree with R to numerical precision (California Proposition 99: SDID
-15.6038, SC -19.6197, DID -27.3491, the values ``synthdid_estimate``, ``sc_estimate``
and ``did_estimate`` return).  SC and DID are the special cases synthdid exposes with
the same signature and output type.

Several treated units adopting at one date form one block.  With several adoption
dates each cohort is estimated as its own block against the never-treated units (all
periods, ``T0`` = the periods before that cohort's adoption) and the ATT is the average
of the cohort estimates weighted by their treated unit-periods ``N1_g * T1_g`` (as the
Stata ``sdid`` command of Clarke, Pailañir, Athey & Imbens 2023 does); the cohort
estimates are reported as terms ``"cohort=<g>"``.
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..core.threads import blas_single_thread
from ..core.validation import (
    _numeric,
    as_frame,
    cohort_per_unit,
    dense_codes,
    normalize_cohort,
    refuse_duplicate_pairs,
    require_columns,
    require_frame,
)
from ..errors import (
    DroppedRowsWarning,
    EstimationError,
    InputError,
    NotComputableWarning,
    SpecificationError,
    check_alpha,
    check_literal,
    format_message,
)
from ..results import ATTDefinition, EstimationResult, VcovSpec, make_result
from ._sdid_blocks import Block, Warm, event_contrasts, replicate_blocks
from ._sdid_covariates import project_beta, sdid_fit_covariates, standardize
from ._sdid_inference import (
    Group,
    aggregate,
    aggregate_rows,
    bootstrap_replicates,
    contrast_columns,
    fit_design,
    jackknife_pseudovalues,
    loo_contrasts,
    placebo_replicates,
    replicate_vcov,
)
from ._sdid_solver import (
    SDIDFit,
    default_options,
    fixed_weights,
    fw_loop,
    row_cache_scope,
    sdid_fit,
    sum_normalize,
)

__all__ = [
    "SDID_METHODS",
    "SDID_SE",
    "CohortFit",
    "SyntheticDIDResult",
    "synthetic_did",
]

SDID_METHODS = ("sdid", "sc", "did")
SDID_SE = ("placebo", "jackknife", "bootstrap", None)
COVARIATE_METHODS = ("optimized", "projected")
PROJECTION_SAMPLES = ("never_treated", "not_yet_treated")
_ESTIMATOR_NAME = {"sdid": "synthetic_did", "sc": "synthetic_control", "did": "did"}
METHOD_LABELS = {"sdid": "synthetic difference-in-differences",
                 "sc": "synthetic control", "did": "difference-in-differences"}


@dataclass(frozen=True)
class CohortFit:
    """One adoption cohort's block fit.

    Attributes
    ----------
    cohort : float
        First treated period (calendar value of ``time``).
    treated_units : tuple
        Labels of the cohort's treated units.
    fit : SDIDFit
        Weights (``omega`` over the control units, ``lam`` over the pre-periods), the
        estimate ``tau``, block sizes and the tuning used.
    weight : float
        Share of the cohort in the ATT (``N1_g T1_g / sum``).
    tuning : mapping
        ``noise_level``, ``eta_omega``, ``eta_lambda``, ``zeta_omega``, ``zeta_lambda``.
    """

    cohort: float
    treated_units: tuple
    fit: SDIDFit
    weight: float
    tuning: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, eq=False, repr=False)
class SyntheticDIDResult(EstimationResult):
    """Result of :func:`synthetic_did`: the shared protocol plus the weights.

    Extra attributes: :attr:`unit_weights`, :attr:`time_weights`, :attr:`cohorts`,
    :attr:`outcome_matrix`, :meth:`effect_curve`, :attr:`replicates`.
    """

    method: str = "sdid"
    cohort_fits: tuple = ()
    _Y: pd.DataFrame | None = None
    _control_units: tuple = ()
    _replicates: np.ndarray | None = None

    # ------------------------------------------------------------------ weights
    @property
    def unit_weights(self) -> pd.Series:
        """Unit weights omega of the control units (sum to one per cohort).

        One cohort: a Series indexed by unit.  Several cohorts: indexed by
        ``(cohort, unit)``.  DID's weights are uniform.
        """
        return self._weights("unit")

    @property
    def time_weights(self) -> pd.Series:
        """Time weights lambda of the pre-treatment periods (zero for SC; uniform for DID).

        One cohort: indexed by period; several cohorts: by ``(cohort, period)``.
        """
        return self._weights("time")

    def _weights(self, which: str) -> pd.Series:
        out = _weights_series(self.outcome_matrix, len(self._control_units),
                              list(self.cohort_fits), which)
        return out.rename("omega" if which == "unit" else "lambda")

    @property
    def cohorts(self) -> pd.DataFrame:
        """One row per adoption cohort: estimate, N1, T0, T1, weight in the ATT."""
        return pd.DataFrame({
            "cohort": [cf.cohort for cf in self.cohort_fits],
            "estimate": [cf.fit.tau for cf in self.cohort_fits],
            "n_treated": [cf.fit.N1 for cf in self.cohort_fits],
            "n_pre": [cf.fit.T0 for cf in self.cohort_fits],
            "n_post": [cf.fit.T1 for cf in self.cohort_fits],
            "weight": [cf.weight for cf in self.cohort_fits],
        })

    @property
    def outcome_matrix(self) -> pd.DataFrame:
        """The wide outcome matrix used (units x periods; controls first)."""
        return pd.DataFrame() if self._Y is None else self._Y.copy()

    @property
    def replicates(self) -> np.ndarray | None:
        """Placebo/bootstrap replicates or jackknife estimates (column 0: ATT)."""
        return None if self._replicates is None else self._replicates.copy()

    def trajectories(self, cohort: float | None = None) -> pd.DataFrame:
        """Treated mean and synthetic-control trajectories by period (R ``synthdid_plot``).

        Columns ``treated`` (mean of the cohort's treated units), ``synthetic``
        (omega-weighted controls), ``synthetic_shifted`` (synthetic plus the
        lambda-weighted pre-period gap, the curve SDID compares with; equal to
        ``synthetic`` for SC), ``lambda`` (time weights; NaN after adoption).
        """
        cf = self._cohort(cohort)
        Ydf = self.outcome_matrix
        Y = Ydf.to_numpy()
        ctrl = Y[: len(self._control_units)]
        tr = Ydf.loc[list(cf.treated_units)].to_numpy()
        treated = tr.mean(axis=0)
        synth = cf.fit.omega @ ctrl
        lam = cf.fit.lam
        offset = float((treated[: cf.fit.T0] - synth[: cf.fit.T0]) @ lam)
        lam_full = np.full(Y.shape[1], np.nan)
        lam_full[: cf.fit.T0] = lam
        return pd.DataFrame({"treated": treated, "synthetic": synth,
                             "synthetic_shifted": synth + offset, "lambda": lam_full},
                            index=pd.Index(Ydf.columns, name="time"))

    def effect_curve(self, cohort: float | None = None) -> pd.Series:
        """Per-post-period effects averaged into the estimate (R ``synthdid_effect_curve``).

        ``tau_t = (treated_t - synthetic_t) - sum_s lambda_s (treated_s - synthetic_s)``.
        """
        cf = self._cohort(cohort)
        tr = self.trajectories(cf.cohort)
        gap = (tr["treated"] - tr["synthetic"]).to_numpy()
        base = float(gap[: cf.fit.T0] @ cf.fit.lam)
        return pd.Series(gap[cf.fit.T0:] - base, index=tr.index[cf.fit.T0:],
                         name="effect")

    def _cohort(self, cohort: float | None) -> CohortFit:
        if cohort is None:
            return self.cohort_fits[0]
        for cf in self.cohort_fits:
            if cf.cohort == cohort:
                return cf
        raise SpecificationError(format_message(
            "no such cohort in this result", seen=cohort,
            fix=f"use one of {[cf.cohort for cf in self.cohort_fits]}"))


# ---------------------------------------------------------------------- validation
@dataclass(frozen=True)
class _Design:
    Y: pd.DataFrame          # units x periods, controls first then treated by cohort
    N0: int
    groups: list[Group]
    cohorts: list[float]
    treated_units: list[tuple]


def _build_design(data: pd.DataFrame, outcome: str, unit: str, time: str,
                  treated: str | None, cohort: str | None, method: str) -> _Design:
    cols = [outcome, unit, time, treated if treated is not None else cohort]
    require_columns(data, cols)
    df = data[cols].copy()
    df.columns = ["y", "unit", "time", "w"]
    for c, name in (("unit", unit), ("time", time)):
        if df[c].isna().any():
            i = df.index[df[c].isna()][0]
            raise InputError(format_message(
                f"synthetic_did: missing values in the {name!r} column", where=f"row {i!r}",
                fix=f"drop or fill the rows without a {name}"))
    # the shared column check: text refused, infinite values refused, dates as years
    df["y"] = _numeric(data, outcome, "outcome")
    tnum = pd.Series(_numeric(data, time, "time"), index=df.index)
    if tnum.isna().any():
        raise InputError(format_message(
            f"synthetic_did: time column {time!r} must be numeric (e.g. a year)",
            seen=df.loc[tnum.isna(), "time"].iloc[0], fix="convert it to numbers"))
    df["time"] = tnum.astype(float)
    ucodes, n_u = dense_codes(df["unit"].to_numpy())
    tcodes, n_t = dense_codes(df["time"].to_numpy())
    uv, tv = df["unit"].to_numpy(), df["time"].to_numpy()
    refuse_duplicate_pairs(ucodes, tcodes, n_u, n_t, label_row=lambda i: (uv[i], tv[i]),
                           estimator="synthetic_did", unit_name=unit, time_name=time)
    periods = np.sort(df["time"].unique())
    # treatment indicator
    if treated is not None:
        w = pd.to_numeric(df["w"], errors="coerce")
        if w.isna().any() or not w.isin([0, 1]).all():
            bad_v = df.loc[w.isna() | ~w.isin([0, 1]), "w"].iloc[0]
            raise InputError(format_message(
                f"synthetic_did: treated column {treated!r} must be 0/1 (1 for treated "
                "units in post-treatment periods)", seen=bad_v,
                fix=f"recode {treated!r} to 0/1 without missing values"))
        df["w"] = w.astype(float)
    else:
        g = normalize_cohort(_numeric(data, cohort, "cohort", allow_inf=True), periods[-1])
        cohort_per_unit(ucodes, n_u, g, raw=data[cohort], unit_values=uv,
                        estimator="synthetic_did", cohort_name=cohort, unit_name=unit)
        df["w"] = np.where(np.isnan(g), 0.0, (df["time"].to_numpy() >= g).astype(float))
    Y = df.pivot(index="unit", columns="time", values="y").reindex(columns=periods)
    W = df.pivot(index="unit", columns="time", values="w").reindex(columns=periods)
    # missing outcomes (a unit x period present with NaN outcome)
    miss_rows = df[df["y"].isna()]
    if len(miss_rows):
        u0 = miss_rows["unit"].iloc[0]
        is_tr = bool((W.loc[u0] == 1).any())
        yrs = sorted(miss_rows.loc[miss_rows["unit"] == u0, "time"].tolist())
        raise InputError(format_message(
            f"synthetic_did: {len(miss_rows)} missing value(s) in outcome {outcome!r}; "
            "synthetic DiD needs every unit observed in every period",
            where=f"{'treated' if is_tr else 'control'} {unit} = {u0!r}, "
                  f"{time} = {[f'{v:g}' for v in yrs[:6]]}",
            fix=("the treated unit cannot be dropped silently: impute the missing "
                 "periods or restrict the panel to periods where it is observed"
                 if is_tr else "drop that control unit or impute its missing periods")))
    if W.isna().any().any() or Y.isna().any().any():
        counts = Y.isna().sum(axis=1)
        u0 = counts.index[counts > 0][0]
        missing = [f"{v:g}" for v in Y.columns[Y.loc[u0].isna()][:6]]
        raise InputError(format_message(
            f"synthetic_did: unbalanced panel ({int((counts > 0).sum())} unit(s) lack some "
            f"of the {len(periods)} periods)", where=f"{unit} = {u0!r}, missing {time} = "
            f"{missing}", fix="keep only units observed in every period (a balanced panel), "
                              "or restrict the periods"))
    Wm = W.to_numpy()
    ever = Wm.max(axis=1) == 1
    if not ever.any():
        raise InputError(format_message(
            "synthetic_did: no treated unit-period (the treated indicator is never 1)",
            fix=f"mark treated units' post-treatment periods with 1 in {treated or cohort!r}"))
    if ever.all():
        raise InputError(format_message(
            "synthetic_did: every unit is treated at some point; there is no control unit",
            fix="keep never-treated units in the panel (they form the synthetic control)"))
    first = np.where(ever, np.argmax(Wm == 1, axis=1), -1)
    units = np.array([u.item() if isinstance(u, np.generic) else u for u in W.index],
                     dtype=object)
    for r in np.flatnonzero(ever):
        a = first[r]
        if not (Wm[r, a:] == 1).all() or (Wm[r, :a] != 0).any():
            raise InputError(format_message(
                "synthetic_did: treatment must be absorbing (0 before adoption, 1 in every "
                "period from adoption to the end of the panel)", where=f"{unit} = {units[r]!r}",
                seen=[int(v) for v in Wm[r]],
                fix="set the treated indicator to 1 in every period from the first treated "
                    "one on, or end the panel when treatment stops"))
        min_pre = 1 if method == "did" else 2
        if a < min_pre:
            raise InputError(format_message(
                f"synthetic_did: treated {unit} {units[r]!r} has {a} pre-treatment "
                f"period(s); {'DID' if method == 'did' else 'the weights'} need at least "
                f"{min_pre}", where=f"first treated {time} = {periods[a]:g}, first observed "
                f"{time} = {periods[0]:g}",
                fix="add earlier periods to the panel or drop units treated from the start"))
    ctrl_labels = sorted(units[~ever], key=_sort_key)
    adopts = sorted({int(first[r]) for r in np.flatnonzero(ever)})
    order = list(ctrl_labels)
    groups, tr_units = [], []
    for a in adopts:
        labs = sorted(units[ever & (first == a)], key=_sort_key)
        rows = np.arange(len(order), len(order) + len(labs))
        order.extend(labs)
        groups.append(Group(a=a, rows=rows))
        tr_units.append(tuple(labs))
    Y = Y.loc[order]
    Y.columns = pd.Index([_clean_period(v) for v in Y.columns], name=time)
    Y.index.name = unit
    return _Design(Y=Y, N0=len(ctrl_labels), groups=groups,
                   cohorts=[_clean_period(periods[a]) for a in adopts],
                   treated_units=tr_units)


def _sort_key(v: Any) -> tuple:
    return (0, v, "") if isinstance(v, numbers.Number) else (1, 0, str(v))


def _clean_period(v: float) -> float | int:
    return int(v) if float(v).is_integer() else float(v)


def _check_options(method: str, se: str | None, n_reps: Any, seed: Any, alpha: Any) -> None:
    check_literal("method", method, SDID_METHODS)
    check_literal("se", se, SDID_SE)
    if isinstance(n_reps, bool) or not isinstance(n_reps, numbers.Integral) or n_reps < 2:
        raise SpecificationError(format_message(
            "n_reps must be an integer >= 2", seen=n_reps,
            fix="pass e.g. n_reps=200 (R synthdid's default replications)"))
    if seed is not None and not isinstance(seed, numbers.Integral | np.random.Generator):
        raise SpecificationError(format_message(
            "seed must be None, an int or a numpy Generator", seen=seed,
            fix="pass e.g. seed=42"))
    check_alpha(alpha)


# ---------------------------------------------------------------------- public
@blas_single_thread
def synthetic_did(data: pd.DataFrame, *, outcome: str, unit: str, time: str,
                  treated: str | None = None, cohort: str | None = None,
                  method: Literal["sdid", "sc", "did"] = "sdid",
                  se: Literal["placebo", "jackknife", "bootstrap"] | None = "placebo",
                  n_reps: int = 200, seed: int | np.random.Generator | None = None,
                  alpha: float = 0.05, treatment: str | None = None,
                  covariates: str | list[str] | None = None,
                  covariate_method: Literal["optimized", "projected"] = "optimized",
                  projection_sample: Literal["never_treated", "not_yet_treated"] = "never_treated"
                  ) -> SyntheticDIDResult:
    """Synthetic difference-in-differences (or SC / DID) for a treated block.

    Arkhangelsky, Athey, Hirshberg, Imbens & Wager (2021), Algorithm 1, following R
    ``synthdid``: unit weights omega and time weights lambda are fitted by Frank-Wolfe
    on the regularised simplex least-squares problems, with noise level ``sigma`` = sd of
    the first differences of the control units' pre-period outcomes,
    ``zeta_omega = (N1 T1)^(1/4) sigma``, ``zeta_lambda = 1e-6 sigma``, stopping at a
    decrease below ``(1e-5 sigma)^2`` or 10,000 iterations, after a 100-iteration first
    pass and sparsification (weights <= max/4 set to zero).

    Comparing with Stata to the last printed digit: Stata holds ``float`` variables in
    single precision, and a weight problem that stops at 10,000 iterations can move a
    cohort estimate by 1e-3 for a 1e-7 change in the outcome. Pass the values Stata
    holds, e.g. ``df[c].astype("float32").astype("float64")`` for its ``float`` columns
    (the quota example: ``covariates(lngdp, projected)`` gives 8.059266 as Stata on its
    float data, 8.059035 on the same numbers read as 7-digit decimals).

    Parameters
    ----------
    data : DataFrame
        Balanced long panel, one row per unit x period, no missing outcomes. Not modified.
    outcome, unit, time : str
        Column names (``time`` numeric, e.g. a year).
    treated : str, optional
        0/1 column, 1 for treated units in post-treatment periods (R ``panel.matrices``'
        ``treatment``). Controls are never treated; treatment is absorbing.
        ``treatment=`` is the same option under the package-wide name of a treatment-status
        column (as in ``twfe``); both are accepted.
    cohort : str, optional
        Alternative to ``treated``: first treated period per unit (never treated =
        NaN, 0 or after the last period). Give exactly one of ``treated``/``cohort``.
    method : {"sdid", "sc", "did"}
        ``synthdid_estimate``, ``sc_estimate`` (no time weights, no intercept,
        ``eta_omega = 1e-6``) or ``did_estimate`` (uniform weights).
    se : {"placebo", "jackknife", "bootstrap", None}
        R ``vcov(est, method=...)``. Placebo is the only one defined with one treated
        unit and needs more controls than treated units; jackknife and bootstrap are NaN
        (with a warning) with one treated unit, as in R.
    n_reps : int
        Placebo/bootstrap replications (R ``replications``, default 200).
    seed : int or numpy Generator, optional
        Seeds ``numpy.random.default_rng`` for the replications.
    alpha : float
        Stored in ``spec``; intervals are normal, ``estimate +- z se`` as synthdid prints.
    covariates : str or list of str, optional
        Time-varying covariates adjusting the outcome (Stata ``sdid``'s
        ``covariates(varlist, method)``; R synthdid's ``X``). Rows with a missing
        covariate are dropped and counted (``diagnostics["dropped_rows"]``); the panel
        that remains must be balanced. A covariate constant over the sample is refused.
    covariate_method : {"optimized", "projected"}
        ``"optimized"`` (default, as Stata): Arkhangelsky et al. (2021) — ``beta`` found
        jointly with the weights (R ``sc.weight.fw.covariates``) on z-scored covariates,
        per cohort. ``"projected"``: Kranz (2022) — ``beta`` from OLS with unit and period
        fixed effects on the never-treated units, then SDID on ``Y - X beta``. Both are
        re-estimated inside every placebo, bootstrap and jackknife replication, as Stata.
    projection_sample : {"never_treated", "not_yet_treated"}
        Rows of the ``"projected"`` regression: the never-treated units (Stata ``sdid``'s
        default) or every untreated unit-period (``sdid``'s ``_not_yet``).

    Returns
    -------
    SyntheticDIDResult
        Term ``"ATT"`` (and ``"cohort=<g>"`` per adoption date when there are several),
        ``unit_weights``, ``time_weights``, ``cohorts``, ``trajectories()``,
        ``effect_curve()``; diagnostics ``N0, T0, N1, T1, noise_level, eta_omega,
        zeta_omega, zeta_lambda``, Frank-Wolfe iterations and convergence.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from twinimpact.estimators.synthetic_did import synthetic_did
    >>> rng = np.random.default_rng(0)
    >>> rows = [(u, t, u // 10 + 0.1 * t + rng.normal(0, 0.01) + (2.0 if u == 0 and t >= 8
    ...          else 0.0), int(u == 0 and t >= 8)) for u in range(12) for t in range(10)]
    >>> d = pd.DataFrame(rows, columns=["city", "year", "y", "w"])
    >>> res = synthetic_did(d, outcome="y", unit="city", time="year", treated="w",
    ...                     se=None)
    >>> round(float(res.params["ATT"]), 1)
    2.0
    """
    data = as_frame(data, what="synthetic_did: data")
    _check_options(method, se, n_reps, seed, alpha)
    data = require_frame(data)
    check_literal("covariate_method", covariate_method, COVARIATE_METHODS)
    if treatment is not None:
        if treated is not None and treated != treatment:
            raise SpecificationError(format_message(
                "synthetic_did: treated= and treatment= name the same column", seen={
                    "treated": treated, "treatment": treatment}, fix="pass one of them"))
        treated = treatment
    if (treated is None) == (cohort is None):
        raise SpecificationError(format_message(
            "synthetic_did: give exactly one of treated= (0/1 column) or cohort= (first "
            "treated period)", seen={"treated": treated, "cohort": cohort},
            fix="e.g. treated='treated' as in R synthdid's panel.matrices"))
    for name, val in (("outcome", outcome), ("unit", unit), ("time", time)):
        if not isinstance(val, str):
            raise SpecificationError(format_message(
                f"synthetic_did: {name}= must be a column name", seen=val,
                fix=f"pass {name}='<column>'"))
    covs = _covariate_list(covariates)
    data, cov_drop = _drop_missing_covariates(data, covs, unit, time, outcome, treated, cohort)
    design = _build_design(data, outcome, unit, time, treated, cohort, method)
    Yv = design.Y.to_numpy()
    N, T = Yv.shape
    N0 = design.N0
    ctrl = np.arange(N0)
    fitter = None
    if covs:
        fitter = BlockFitter(Yv, _covariate_array(data, design, covs, unit, time), N0,
                             design.groups, method, covariate_method, projection_sample)
        fits, infos = fitter.fit_all()
    else:
        fits, infos = fit_design(Yv, ctrl, design.groups, method)
    n1 = np.array([f.N1 for f in fits])
    t1 = np.array([f.T1 for f in fits])
    att, wts = aggregate(np.array([f.tau for f in fits]), n1, t1)
    G = len(fits)
    n1_tot = int(n1.sum())

    # ---------------------------------------------------------------- inference
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    k = 1 + (G if G > 1 else 0)
    cov = np.full((k, k), np.nan)
    reps = None
    notes: list[str] = []
    se_diag: dict[str, Any] = {}
    nan_reason = ""
    if se is None:
        kind = "none"
    elif se == "placebo":
        kind = "placebo"
        if N0 <= n1_tot:
            raise EstimationError(format_message(
                f"synthetic_did: placebo standard errors need more control units than "
                f"treated units (Arkhangelsky et al. 2021, Algorithm 4); got {N0} "
                f"control(s) and {n1_tot} treated", where=f"unit column {unit!r}",
                fix="add donor (never-treated) units, or use se='jackknife' / "
                    "se='bootstrap' (several treated units) or se=None"))
        if fitter is None:
            fw_stats: dict = {}
            reps = placebo_replicates(Yv, N0, design.groups, fits, n_reps, rng, fw_stats)
            if fw_stats:
                se_diag["placebo_weight_problems"] = {
                    **fw_stats, "max_iter": fits[0].options.max_iter,
                    "loop": fw_loop(),
                    "note": "Frank-Wolfe solves of the replicates' unit and time weights; "
                            "stopping at max_iter is R synthdid's behaviour too; loop: "
                            "the compiled one (_sdid_fw.c) or the NumPy one (same "
                            "iterates)"}
        else:
            reps = fitter.att_replicates("placebo", n_reps, rng)[0]
    elif se == "bootstrap":
        kind = "bootstrap"
        if n1_tot == 1:
            nan_reason = ("the bootstrap is undefined with a single treated unit (R "
                          "synthdid returns NA); use se='placebo'")
        else:
            try:
                reps, rejected = (
                    bootstrap_replicates(Yv, N0, design.groups, fits, n_reps, rng)
                    if fitter is None else fitter.att_replicates("bootstrap", n_reps, rng))
            except RuntimeError as exc:
                raise EstimationError(format_message(
                    f"synthetic_did: {exc}", fix="use se='placebo' or se='jackknife'")) from exc
            se_diag["bootstrap_rejected_draws"] = rejected
    else:
        kind = "jackknife"
        single = [cf for cf in fits if np.count_nonzero(cf.omega) == 1]
        if n1_tot == 1:
            nan_reason = ("the jackknife is undefined with a single treated unit (R "
                          "synthdid returns NA); use se='placebo'")
        elif single:
            nan_reason = ("the fixed-weights jackknife is undefined when only one control "
                          "unit has a non-zero weight (R synthdid returns NA); use "
                          "se='placebo' or se='bootstrap'")
        else:
            reps = (jackknife_pseudovalues(Yv, N0, design.groups, fits) if fitter is None
                    else fitter.att_replicates("jackknife", 0, None)[0])
    if reps is not None:
        full = replicate_vcov(reps, kind)
        cov = full if G > 1 else full[:1, :1]
        if G > 1 and np.isnan(np.diag(cov)[1:]).any():
            nan_reason = ("a cohort with a single treated unit has no leave-one-out "
                          "variance; its cohort term's standard error is NaN")
    if nan_reason:
        notes.append(nan_reason)

    # ---------------------------------------------------------------- result
    terms = ["ATT"]
    est = [att]
    info_rows = [{"cohort": np.nan}]
    if G > 1:
        for c, f in zip(design.cohorts, fits, strict=True):
            terms.append(f"cohort={c}")
            est.append(f.tau)
            info_rows.append({"cohort": c})
    params = pd.Series(est, index=terms, dtype=float)
    term_info = pd.DataFrame(info_rows, index=terms)
    cohort_fits = []
    for c, labs, f, w, info in zip(design.cohorts, design.treated_units, fits, wts, infos,
                                   strict=True):
        tuning = dict(info)
        tuning.update(zeta_omega=f.options.zeta_omega, zeta_lambda=f.options.zeta_lambda)
        cohort_fits.append(CohortFit(cohort=c, treated_units=labs, fit=f, weight=float(w),
                                     tuning=tuning))
    diag = _diagnostics(design, fits, infos, cohort_fits, se_diag, notes, n_reps, kind)
    diag["n_input_rows"] = len(data)
    if covs:
        diag["dropped_rows"] = dict(cov_drop["dropped_rows"])
        diag["covariates"] = fitter.describe(covs, design.cohorts)
        if cov_drop["units_removed"]:
            diag["units_removed_missing_covariates"] = list(cov_drop["units_removed"])
    desc = {
        "none": "no standard errors requested (se=None)",
        "placebo": f"placebo standard error (Arkhangelsky et al. 2021, Algorithm 4), "
                   f"{n_reps} permutations of the control units",
        "bootstrap": f"unit bootstrap standard error (Algorithm 2), {n_reps} replications",
        "jackknife": "fixed-weights unit jackknife standard error (Algorithm 3)",
    }[kind]
    vspec = VcovSpec(kind=kind, cluster=(unit,) if kind != "none" else (),
                     n_clusters=(N,) if kind != "none" else (), df=None, description=desc)
    spec = {"outcome": outcome, "unit": unit, "time": time, "treated": treated,
            "cohort": cohort, "method": method, "se": se, "n_reps": n_reps,
            "seed": seed if not isinstance(seed, np.random.Generator) else "Generator",
            "alpha": alpha, "aggregation": "treated unit-periods N1_g*T1_g",
            "covariates": list(covs), "covariate_method": covariate_method if covs else None,
            "projection_sample": projection_sample
            if covs and covariate_method == "projected" else None}
    uw = _weights_series(design.Y, N0, cohort_fits, "unit")
    tw = _weights_series(design.Y, N0, cohort_fits, "time")
    with warnings.catch_warnings():
        if kind == "none":
            warnings.simplefilter("ignore", NotComputableWarning)
        result = make_result(
            _ESTIMATOR_NAME[method], params, cov, vspec, nobs=N * T, spec=spec,
            diagnostics=diag, term_info=term_info,
            extras={"unit_weights": uw, "time_weights": tw,
                    "cohort_estimates": pd.Series([f.tau for f in fits],
                                                  index=design.cohorts, name="estimate")},
            cls=SyntheticDIDResult, nan_reason=nan_reason or "standard error not computed",
            att_definition=ATTDefinition(
                "treated_observation_weighted" if G == 1 else
                "treated_units_times_post_periods",
                f"method {method!r}: the weighted double difference of the treated units' "
                "post-treatment mean (Arkhangelsky et al. 2021)"),
            method=method, cohort_fits=tuple(cohort_fits), _Y=design.Y.copy(),
            _control_units=tuple(design.Y.index[:N0]),
            _replicates=None if reps is None else reps.copy())
    return result


# ---------------------------------------------------------------------- covariates
def _covariate_list(covariates: str | list[str] | None) -> list[str]:
    if covariates is None:
        return []
    covs = [covariates] if isinstance(covariates, str) else list(covariates)
    if not covs or not all(isinstance(c, str) for c in covs):
        raise SpecificationError(format_message(
            "synthetic_did: covariates= must be a column name or a list of column names",
            seen=covariates, fix="pass e.g. covariates=['lngdp']"))
    if len(set(covs)) != len(covs):
        raise SpecificationError(format_message(
            "synthetic_did: a covariate is listed twice", seen=covs,
            fix="list each covariate once"))
    return covs


def _drop_missing_covariates(data: pd.DataFrame, covs: list[str], unit: str, time: str,
                             outcome: str, treated: str | None, cohort: str | None
                             ) -> tuple[pd.DataFrame, dict]:
    """Rows with a missing covariate are dropped and counted (Stata refuses them; the
    documented recipe is ``drop if missing(x)``); numbers only; constants refused."""
    info: dict = {"dropped_rows": {}, "units_removed": []}
    if not covs:
        return data, info
    require_columns(data, covs)
    for c in (outcome, unit, time, treated or cohort):
        if c in covs:
            raise SpecificationError(format_message(
                f"synthetic_did: {c!r} cannot be both a covariate and a design column",
                seen=covs, fix=f"remove {c!r} from covariates"))
    vals = {}
    for c in covs:
        v = pd.to_numeric(data[c], errors="coerce")
        bad = v.isna() & data[c].notna()
        if bad.any():
            i = data.index[bad][0]
            raise InputError(format_message(
                f"synthetic_did: covariate {c!r} must be numeric", where=f"row {i!r}",
                seen=data.loc[i, c], fix=f"convert {c!r} to numbers"))
        if not np.isfinite(v.dropna().to_numpy(dtype=float)).all():
            raise InputError(format_message(
                f"synthetic_did: covariate {c!r} has infinite values",
                fix="replace them by finite numbers or missing values"))
        vals[c] = v
    miss = pd.concat(vals, axis=1).isna().any(axis=1)
    if miss.any():
        n = int(miss.sum())
        before = set(data.loc[:, unit].unique())
        data = data.loc[~miss]
        removed = sorted(before - set(data[unit].unique()), key=_sort_key)
        info["dropped_rows"] = {"missing_covariates": n}
        info["units_removed"] = removed
        warnings.warn(format_message(
            f"synthetic_did: dropped {n} row(s) with a missing covariate "
            f"({', '.join(covs)}); {len(removed)} unit(s) left the panel entirely",
            where=f"{unit} = {removed[:5]!r}" if removed else None,
            fix="impute the covariates to keep these rows"), DroppedRowsWarning,
            stacklevel=3)
    for c in covs:
        v = pd.to_numeric(data[c], errors="coerce")
        if len(v) and float(v.std(ddof=0)) == 0.0:
            raise InputError(format_message(
                f"synthetic_did: covariate {c!r} is constant in the estimation sample",
                seen=float(v.iloc[0]), fix=f"remove {c!r} from covariates"))
    return data, info


def _covariate_array(data: pd.DataFrame, design: _Design, covs: list[str], unit: str,
                     time: str) -> np.ndarray:
    """Covariates as an ``(N, T, K)`` array aligned with ``design.Y``."""
    tnum = pd.to_numeric(data[time], errors="coerce").astype(float)
    frame = data[[unit, *covs]].assign(_t=tnum.to_numpy())
    out = []
    for c in covs:
        wide = frame.pivot(index=unit, columns="_t", values=c)
        wide = wide.reindex(index=design.Y.index,
                            columns=[float(v) for v in design.Y.columns])
        out.append(pd.DataFrame(wide).apply(pd.to_numeric).to_numpy(dtype=float))
    return np.stack(out, axis=2)


class BlockFitter:
    """Fits every cohort block with or without covariates, originally and inside the
    placebo / bootstrap / jackknife replications (see :mod:`._sdid_blocks`)."""

    def __init__(self, Y: np.ndarray, X: np.ndarray | None, N0: int, groups: list[Group],
                 method: str, covariate_method: str | None,
                 projection_sample: str = "never_treated", warm_start: bool = True) -> None:
        self.Y, self.N0, self.groups, self.method = Y, N0, groups, method
        #: R synthdid / Stata sdid warm-start every replication at the original weights
        #: (and covariate coefficients) with the original tuning; Stata sdid_event reruns
        #: sdid from scratch on each replication's sample (new noise level, uniform start).
        self.warm_start = warm_start
        self.how = covariate_method if X is not None else None
        self.X = X
        self.projection_sample = projection_sample
        self.Z = None
        if self.how == "optimized":
            self.Z, self.x_mean, self.x_sd = standardize(X)
        self.fits: list[SDIDFit] = []
        self._proj: tuple[bytes, np.ndarray] | None = None
        self.beta_projected: np.ndarray | None = None

    def begin(self, ctrl: np.ndarray, treated: list[tuple[np.ndarray, int]]) -> None:
        """Re-estimate the projection for a sample: rows ``ctrl`` (all periods) and, with
        ``projection_sample="not_yet_treated"``, the treated rows' pre-adoption periods.
        Rows may repeat (bootstrap): the sample is stacked, as Stata's resampled data."""
        if self.how != "projected":
            return
        T = self.Y.shape[1]
        parts = [ctrl]
        masks = [np.ones((len(ctrl), T), dtype=bool)]
        if self.projection_sample == "not_yet_treated":
            for rows, a in treated:
                parts.append(rows)
                m = np.zeros((len(rows), T), dtype=bool)
                m[:, :a] = True
                masks.append(m)
        idx = np.concatenate(parts)
        beta = project_beta(self.Y[idx], self.X[idx], np.vstack(masks))
        self._proj = (b"", self.Y - self.X @ beta)
        if self.beta_projected is None:
            self.beta_projected = beta

    def _adjusted(self, ctrl: np.ndarray) -> np.ndarray:
        """``Y - X beta`` of the current sample (set by :meth:`begin`)."""
        return self._proj[1]

    def _fit(self, ctrl: np.ndarray, tr: np.ndarray, a: int, opts, omega, lam, beta):
        rows = np.concatenate([ctrl, tr])
        n0 = len(ctrl)
        if self.how == "optimized":
            Yr, Zr = self.Y[rows], self.Z[rows]
            if opts is None:
                opts, info = default_options(self.method, Yr, n0, a)
            else:
                info = {}
            f = sdid_fit_covariates(Yr, Zr, n0, a, opts, omega=omega, lam=lam, beta=beta)
            Yb = Yr - Zr @ f.beta
        else:
            Ya = self._adjusted(ctrl) if self.how == "projected" else self.Y
            Yb = Ya[rows]
            if opts is None:
                opts, info = default_options(self.method, Yb, n0, a)
            else:
                info = {}
            f = sdid_fit(Yb, n0, a, opts, omega=omega, lam=lam)
        return f, info, Block(Yb=Yb, n0=n0, a=a, omega=f.omega, lam=f.lam)

    def fit_all(self) -> tuple[list[SDIDFit], list[dict]]:
        ctrl = np.arange(self.N0)
        self.begin(ctrl, [(g.rows, g.a) for g in self.groups])
        fits, infos, self.blocks = [], [], []
        for grp in self.groups:
            om0, la0 = fixed_weights(self.method, self.N0, grp.a)
            f, info, b = self._fit(ctrl, grp.rows, grp.a, None, om0, la0, None)
            fits.append(f)
            infos.append(info)
            self.blocks.append(b)
        self.fits = fits
        return fits, infos

    def fit_block(self, ctrl: np.ndarray, tr: np.ndarray, g: int, warm: Warm) -> Block:
        a = self.groups[g].a
        if not self.warm_start:
            om0, la0 = fixed_weights(self.method, len(ctrl), a)
            return self._fit(ctrl, tr, a, None, om0, la0, None)[2]
        f0 = self.fits[g]
        opts = f0.options
        if warm.kind == "jackknife":
            opts = dataclasses.replace(opts, update_omega=False, update_lambda=False)
        omega = sum_normalize(f0.omega[warm.ctrl_pos])
        return self._fit(ctrl, tr, a, opts, omega, f0.lam, f0.beta)[2]

    def replicates(self, kind: str, n_reps: int, rng):
        with row_cache_scope():      # one row-cache buffer for every replication
            return replicate_blocks(kind, self.Y.shape[0], self.N0, self.groups,
                                    self.fit_block, n_reps, rng, begin=self.begin)

    def _jackknife_projected(self) -> np.ndarray | None:
        """The fixed-weights jackknife with the "projected" adjustment in O(N T p^2)
        (``p`` = covariates + used periods - 1) instead of a projection per left-out unit.

        The projection is OLS with unit and period fixed effects on the sample's rows;
        unit ``j`` left out removes its rows, whose contribution to the normal equations
        ``M = sum_i Z_i'Z_i``, ``r = sum_i Z_i'y_i`` (``Z_i``: its unit-demeaned
        covariates and period dummies, as :func:`project_beta`) is one unit's, so
        ``beta_(-j)`` solves ``(M - Z_j'Z_j) b = r - Z_j'y_j``. The estimate is linear in
        the adjusted outcome ``Y - X beta``: per group the contrasts of ``Y`` and of each
        covariate go through :func:`loo_contrasts` and combine as ``tau_Y - tau_X beta``.
        Returns None (the caller refits per unit) when the normal equations would not
        reproduce the least-squares projection: a collinear or near-collinear system
        (a Cholesky pivot below 1e-10 of its diagonal entry, for the full sample or any
        left-out unit), or the full-sample solve off ``project_beta``'s by more than 1e-9.
        """
        Y, X, N0, groups = self.Y, self.X, self.N0, self.groups
        N, T, K = X.shape
        mask = np.zeros((N, T), dtype=bool)
        mask[:N0] = True
        if self.projection_sample == "not_yet_treated":
            for grp in groups:
                mask[grp.rows, :grp.a] = True
        units = np.flatnonzero(mask.any(axis=1))
        used = np.flatnonzero(mask[units].any(axis=0))
        if N0 < 2 or len(used) < 2:
            return None
        p = K + len(used) - 1

        def parts(sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            u = units[sel]
            w = mask[u][:, used].astype(float)
            cnt = w.sum(axis=1)
            Yu, Xu = Y[u][:, used], X[u][:, used, :]
            yd = (Yu - (Yu * w).sum(axis=1, keepdims=True) / cnt[:, None]) * w
            xd = (Xu - ((Xu * w[:, :, None]).sum(axis=1) / cnt[:, None])[:, None, :]) \
                * w[:, :, None]
            dM = np.empty((len(u), p, p))
            dM[:, :K, :K] = np.einsum("itk,itl->ikl", xd, xd)
            dM[:, :K, K:] = xd[:, 1:, :].transpose(0, 2, 1)
            dM[:, K:, :K] = xd[:, 1:, :]
            w1 = w[:, 1:]
            dM[:, K:, K:] = -w1[:, :, None] * w1[:, None, :] / cnt[:, None, None]
            idx = np.arange(K, p)
            dM[:, idx, idx] += w1
            dr = np.concatenate([np.einsum("itk,it->ik", xd, yd), yd[:, 1:]], axis=1)
            return dM, dr

        def chol_ok(M: np.ndarray) -> bool:
            try:
                L = np.linalg.cholesky(M)
            except np.linalg.LinAlgError:
                return False
            d = np.diagonal(M, axis1=-2, axis2=-1)
            with np.errstate(divide="ignore", invalid="ignore"):
                piv = np.diagonal(L, axis1=-2, axis2=-1) ** 2 / d
            return bool(np.all(piv >= 1e-10))

        step = max(1, 2**19 // (2 * p * p + p * K))     # units per chunk: ~4 MB each
        chunks = [slice(i, min(i + step, len(units))) for i in range(0, len(units), step)]
        M = np.zeros((p, p))
        r = np.zeros(p)
        for sl in chunks:
            dM, dr = parts(np.arange(sl.start, sl.stop))
            M += dM.sum(axis=0)
            r += dr.sum(axis=0)
        base = np.asarray(self.beta_projected, dtype=float)
        if not chol_ok(M):
            return None
        b0 = np.linalg.solve(M, r)[:K]
        if np.abs(b0 - base).max() > 1e-9 * max(1.0, float(np.abs(base).max())):
            return None
        betas = np.tile(base, (N, 1))        # a unit outside the sample: the same beta
        for sl in chunks:
            dM, dr = parts(np.arange(sl.start, sl.stop))
            Mj = M - dM
            if not chol_ok(Mj):
                return None
            betas[units[sl]] = np.linalg.solve(Mj, (r - dr)[:, :, None])[:, :K, 0]
        cols = contrast_columns(T, groups, self.fits)
        C = np.concatenate([(Y @ cols)[:, :, None],
                            np.einsum("itk,tg->igk", X, cols)], axis=2)
        taus, n1 = loo_contrasts(C, N0, groups, self.fits)
        tau = taus[:, :, 0] - np.einsum("jgk,jk->jg", taus[:, :, 1:], betas)
        out = np.full((N, 1 + len(groups)), np.nan)
        out[:, 1:] = tau
        out[:, 0] = aggregate_rows(tau, n1, [T - grp.a for grp in groups])
        return out

    def att_replicates(self, kind: str, n_reps: int, rng) -> tuple[np.ndarray, int]:
        """``(n, 1 + G)`` replicate matrix (ATT, then per cohort) and rejected draws."""
        if kind == "jackknife" and self.how == "projected" and self.warm_start:
            fast = self._jackknife_projected()
            if fast is not None:
                return fast, 0
        reps, rejected = self.replicates(kind, n_reps, rng)
        T = self.Y.shape[1]
        out = np.full((len(reps), 1 + len(self.groups)), np.nan)
        for r, blocks in enumerate(reps):
            ok = [i for i, b in enumerate(blocks) if b is not None]
            taus = np.array([event_contrasts(blocks[i], 0, 0)[0] for i in ok])
            n1 = [blocks[i].n1 for i in ok]
            t1 = [T - blocks[i].a for i in ok]
            out[r, 0] = aggregate(taus, n1, t1)[0]
            out[r, 1 + np.array(ok, dtype=int)] = taus
        return out, rejected

    def describe(self, covs: list[str], cohorts: list) -> dict[str, Any]:
        """What the covariate adjustment did, for diagnostics."""
        if self.how == "projected":
            sample = ("never-treated units, all periods"
                      if self.projection_sample == "never_treated"
                      else "untreated unit-periods (never treated, and treated units "
                           "before adoption)")
            return {"method": "projected", "sample": sample,
                    "beta": dict(zip(covs, map(float, self.beta_projected), strict=True))}
        return {"method": "optimized", "standardized": True,
                "mean": dict(zip(covs, map(float, self.x_mean), strict=True)),
                "sd": dict(zip(covs, map(float, self.x_sd), strict=True)),
                "beta_by_cohort": {c: dict(zip(covs, map(float, f.beta), strict=True))
                                   for c, f in zip(cohorts, self.fits, strict=True)}}


def _weights_series(Y: pd.DataFrame, N0: int, cfs: list[CohortFit], which: str) -> pd.Series:
    periods = list(Y.columns)
    parts = []
    for cf in cfs:
        if which == "unit":
            parts.append(pd.Series(cf.fit.omega.copy(),
                                   index=pd.Index(Y.index[:N0], name="unit")))
        else:
            parts.append(pd.Series(cf.fit.lam.copy(),
                                   index=pd.Index(periods[:cf.fit.T0], name="time")))
    name = "omega" if which == "unit" else "lambda"
    if len(parts) == 1:
        return parts[0].rename(name)
    return pd.concat(parts, keys=[cf.cohort for cf in cfs],
                     names=["cohort", parts[0].index.name]).rename(name)


def _diagnostics(design: _Design, fits: list[SDIDFit], infos: list[dict],
                 cfs: list[CohortFit], se_diag: dict, notes: list[str], n_reps: int,
                 kind: str) -> dict[str, Any]:
    def one(f: SDIDFit, info: dict) -> dict[str, Any]:
        it = dict(f.iterations)
        conv = all(v.get("converged", True) for v in it.values() if isinstance(v, dict))
        return {
            "N0": f.N0, "T0": f.T0, "N1": f.N1, "T1": f.T1,
            "noise_level": info.get("noise_level", float("nan")),
            "eta_omega": info.get("eta_omega", float("nan")),
            "eta_lambda": info.get("eta_lambda", float("nan")),
            "zeta_omega": f.options.zeta_omega, "zeta_lambda": f.options.zeta_lambda,
            "min_decrease": f.options.min_decrease,
            "effective_N0": float(1.0 / np.sum(f.omega**2)) if f.omega.any() else np.nan,
            "effective_T0": float(1.0 / np.sum(f.lam**2)) if f.lam.any() else np.nan,
            "iterations": it, "converged": conv,
        }
    per = [one(f, i) for f, i in zip(fits, infos, strict=True)]
    diag: dict[str, Any] = {"dropped_rows": {}, "n_units": len(design.Y),
                            "n_periods": design.Y.shape[1], "n_cohorts": len(fits)}
    if len(fits) == 1:
        diag.update(per[0])
    else:
        diag["N0"] = design.N0
        diag["N1"] = int(sum(f.N1 for f in fits))
        diag["cohorts"] = {c.cohort: {**p, "weight": c.weight} for c, p in
                           zip(cfs, per, strict=True)}
        diag["converged"] = all(p["converged"] for p in per)
    if not diag["converged"]:
        diag["convergence_note"] = (
            "Frank-Wolfe stopped at max_iter=10000 before its decrease criterion, as R "
            "synthdid routinely does; the estimate equals R's for the same iterations")
    if kind in ("placebo", "bootstrap"):
        diag["n_reps"] = n_reps
    diag.update(se_diag)
    if notes:
        diag["notes"] = list(notes)
    return diag
