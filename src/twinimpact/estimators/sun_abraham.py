"""Interaction-weighted event-study estimator of Sun & Abraham (2021), "Estimating dynamic
treatment effects in event studies with heterogeneous treatment effects", Journal of
Econometrics 225(2), as implemented by R fixest ``sunab()``.

Regression (SA 2021, eq. 15) with unit and time fixed effects and one dummy per treated
cohort ``g`` x relative period ``e = t - g`` (``e`` not in ``ref``)::

    y_it = a_i + l_t + sum_g sum_{e != ref} delta_{g,e} 1[G_i = g] 1[t - g = e] + X_it'b + u_it

The control cohort has no dummies: the never treated (``control_group="never_treated"``,
fixest's default reference cohort) or the last-treated cohort
(``control_group="last_treated"``, SA 2021 Section 4.1: periods from its treatment onwards
are dropped, so it is a clean control).
Always-treated cohorts (no row of the cohort before its first treated period) are dropped,
as fixest does; the rule is per cohort, as in fixest (``sunab`` sees no unit id): on an
unbalanced panel a unit whose own pre-treatment rows are missing stays in the sample.

Event-time estimates are the interaction-weighted averages (SA 2021, eq. 16)
``beta_e = sum_g Pr(G = g | e) delta_{g,e}`` with the cohort shares estimated by the number
of observations in each cohort x period cell (fixest ``aggregate``), and the delta-method
variance ``A V A'`` (fixest; SA's extra term for estimated shares is not added). The
overall ``"ATT"`` weights every post-treatment cell (``e >= 0``) by its size (fixest
``summary(x, agg = "att")``).

Keyword mapping to fixest: ``sun_abraham(d, outcome="y", unit="id", time="year",
cohort="year_treated", covariates=["x1"])`` is ``feols(y ~ x1 + sunab(year_treated, year) |
id + year, d)``; ``ref`` = ``ref.p``; ``control_group="last_treated"`` ~ ``ref.c`` = the last
cohort (with its treated periods dropped); ``cluster`` = ``cluster`` (default: the unit,
the first fixed effect, which fixest clustered by default before 0.13; fixest >= 0.13
defaults to iid, so pass ``cluster = ~id`` there). Stata: ``eventstudyinteract``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from ..core.fe import factorize, fit_fe_codes
from ..core.rowblocks import row_blocks
from ..core.threads import blas_single_thread
from ..core.validation import as_frame, gap_aware_refs, prepare_panel
from ..errors import (
    COUNTS_POINTER,
    DroppedRowsWarning,
    EstimationError,
    InputError,
    NotComputableWarning,
    SpecificationError,
    check_alpha,
    check_literal,
    format_counts,
    format_message,
    renamed_keyword,
)
from ..results import (
    ATTDefinition,
    EstimationResult,
    combine_vcov,
    event_pretrend_test,
    make_result,
)

__all__ = ["SunAbrahamResult", "sun_abraham"]

Control = Literal["never_treated", "last_treated"]
AGGREGATIONS = ("dynamic", "simple", "cohort")
#: other names accepted for an aggregation ("group" is R did's / Callaway-Sant'Anna's name)
AGGREGATION_SYNONYMS = {"group": "cohort"}
_ATT_DEF = ATTDefinition("cell_size_weighted",
                         "post-treatment (e >= 0) cohort x period cells weighted by their "
                         "number of observations (fixest agg = 'att')")


@dataclass(frozen=True, eq=False, repr=False)
class SunAbrahamResult(EstimationResult):
    """Sun–Abraham event-time result; keeps the cohort x period coefficients.

    ``cells`` is a frame with one row per cohort x relative-period interaction
    (``cohort``, ``rel_time``, ``n_obs``, ``estimate``, ``std_error``) and ``cell_cov``
    their full vcov (covariates follow in ``cov_names``); :meth:`aggregate` re-weights them
    without refitting.
    """

    cells: pd.DataFrame = field(default_factory=pd.DataFrame)
    cell_cov: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    cov_names: tuple[str, ...] = ()

    @property
    def interactions(self) -> pd.DataFrame:
        """The cohort x relative-period coefficient table (a copy)."""
        return self.cells.copy()

    def aggregate(self, type: str = "simple") -> EstimationResult:
        """Re-aggregate the cohort x period coefficients.

        ``"simple"``: the ATT alone (fixest ``summary(x, agg = "att")``); ``"cohort"`` (or
        its synonym ``"group"``, R did's name, accepted by every estimator): one row per
        cohort (average over its post-treatment periods weighted by cell
        size, fixest ``agg = "cohort"``) and the ATT; ``"dynamic"``: the event-time
        estimates (this result).
        """
        type = AGGREGATION_SYNONYMS.get(type, type)
        check_literal("type", type, (*AGGREGATIONS, *AGGREGATION_SYNONYMS))
        if type == "dynamic":
            return self
        names, lmat, info = _aggregation_matrix(self.cells, type)
        k = len(self.cells)
        est = self.cells["estimate"].to_numpy()
        coef = lmat @ np.nan_to_num(est)
        cov = combine_vcov(lmat, est, self.cell_cov[:k, :k])
        empty = lmat.sum(axis=1) == 0
        coef[empty] = np.nan
        cov[empty, :] = cov[:, empty] = np.nan
        term_info = pd.DataFrame(info, index=names)
        return make_result(f"sun_abraham[{type}]", pd.Series(coef, index=names), cov,
                           self.vcov_spec, self.nobs, spec={**self.spec, "aggregation": type},
                           diagnostics=dict(self.diagnostics), term_info=term_info,
                           nan_reason="no post-treatment cell estimated for this cohort",
                           att_definition=_ATT_DEF)


def _aggregation_matrix(cells: pd.DataFrame, kind: str
                        ) -> tuple[list[str], np.ndarray, dict[str, list[float]]]:
    """Rows: output terms; columns: cells. Weights are cell sizes among estimated cells."""
    g = cells["cohort"].to_numpy(dtype=float)
    e = cells["rel_time"].to_numpy(dtype=float)
    n = np.where(np.isfinite(cells["estimate"].to_numpy()), cells["n_obs"].to_numpy(float), 0)
    rows, names, rel, coh = [], [], [], []
    if kind == "dynamic":
        for ev in np.unique(e):
            rows.append(np.where(e == ev, n, 0.0))
            names.append(f"rel_time={int(ev)}")
            rel.append(float(ev))
            coh.append(np.nan)
    elif kind == "cohort":
        for gv in np.unique(g):
            rows.append(np.where((g == gv) & (e >= 0), n, 0.0))
            names.append(f"cohort={gv:g}")
            coh.append(float(gv))
            rel.append(np.nan)
    rows.append(np.where(e >= 0, n, 0.0))
    names.append("ATT")
    rel.append(np.nan)
    coh.append(np.nan)
    lmat = np.array(rows, dtype=float).reshape(len(rows), len(cells))
    s = lmat.sum(axis=1, keepdims=True)
    lmat = np.divide(lmat, s, out=np.zeros_like(lmat), where=s > 0)
    info = {"dynamic": {"rel_time": rel}, "cohort": {"cohort": coh}}.get(kind, {})
    return names, lmat, info


@blas_single_thread
def sun_abraham(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
                covariates: Sequence[str] | None = None,
                cluster: str | Sequence[str] | None = None,
                control_group: Control = "never_treated", ref: int | Sequence[int] = -1,
                alpha: float = 0.05, control: Control | None = None) -> SunAbrahamResult:
    """Sun & Abraham (2021) interaction-weighted event study (fixest ``sunab``).

    Parameters
    ----------
    data : DataFrame
        Long panel, one row per unit x period.
    outcome, unit, time : str
        Column names (fixest: left-hand side and the two fixed effects).
    cohort : str
        First treated period (fixest ``sunab(cohort, period)``); never treated = NaN, 0 or
        a value after the last period (e.g. 10000).
    covariates : list of str, optional
        Time-varying controls; reported as terms named by the column.
    cluster : str or list of str, optional
        Cluster variable(s); default the unit (fixest's default before 0.13: the first
        fixed effect; fixest >= 0.13 defaults to iid).
        CRV1 with fixest's small-sample factors, t(G - 1) reference.
    control_group : {"never_treated", "last_treated"}
        Control cohort (``control=`` is its deprecated old name). ``"never_treated"``
        (default; fixest's reference cohort) needs never-treated units. ``"last_treated"``: the last-treated cohort serves as control
        (SA 2021 when no unit is never treated); every row from its first treated period
        on is dropped (counted in ``diagnostics["dropped_rows"]``); never-treated units,
        if any, stay in the control group.
    ref : int or sequence of int
        Omitted relative period(s) (fixest ``ref.p``), default -1. A treated cohort with
        no row at any of them (e.g. one treated unit whose year before treatment is
        missing) has effects identified only up to a constant: its rows are dropped,
        counted in ``diagnostics["dropped_rows"]`` and warned about. (fixest keeps it and
        drops one collinear dummy instead, i.e. measures that cohort relative to another
        period; the cells of the other cohorts are the same.)
    alpha : float
        Default level for intervals.

    Returns
    -------
    SunAbrahamResult
        Terms ``"rel_time=e"`` (every relative period observed, term_info ``rel_time``),
        covariates by name, and ``"ATT"``. ``spec["ref"]`` holds the omitted periods.
        ``.aggregate("simple")`` → the ATT, ``.aggregate("cohort")`` → per-cohort ATTs;
        ``.interactions`` → the cohort x period coefficient table.

    Examples
    --------
    >>> from twinimpact.estimators.twfe import _example_panel
    >>> from twinimpact.estimators.sun_abraham import sun_abraham
    >>> r = sun_abraham(_example_panel(), outcome="y", unit="id", time="year", cohort="g")
    >>> [round(float(v), 2) for v in r.params[["rel_time=0", "rel_time=2"]]]
    [1.0, 3.0]
    >>> round(float(r.aggregate("simple").params["ATT"]), 1) > 0
    True
    """
    data = as_frame(data, what="sun_abraham: data")

    check_alpha(alpha)
    est = "sun_abraham"
    control = renamed_keyword("sun_abraham", "control", "control_group", control,
                              control_group, new_default="never_treated")
    check_literal("control_group", control, ("never_treated", "last_treated"))
    covariates = list(covariates or [])
    clus = (unit,) if cluster is None else ((cluster,) if isinstance(cluster, str)
                                            else tuple(cluster))
    refs = tuple(int(r) for r in ((ref,) if np.isscalar(ref) else ref))
    if not refs:
        raise SpecificationError(format_message(
            "ref must name at least one relative period", seen=ref, fix="pass ref=-1"))
    extra = [c for c in clus if c not in (unit, time)]
    pdata = prepare_panel(data, outcome=outcome, unit=unit, time=time, cohort=cohort,
                          extra=extra, numeric_extra=covariates, estimator=est, order_by_unit=True)
    f = pdata.frame
    dropped = dict(pdata.dropped)
    g = f["cohort"].to_numpy()
    t = f["time"].to_numpy()
    never = np.isnan(g)
    if never.all():
        raise InputError(format_message(
            f"no treated unit: every value of {cohort!r} means 'never treated'",
            fix="cohort is the first treated period (NaN/0/after the panel = never)"))
    # always-treated cohorts are excluded, as in fixest: fixest's ``sunab`` sees no unit
    # id and drops a cohort none of whose rows is before its treatment (R
    # ``cpp_find_never_always_treated``). A unit whose own rows are all post-treatment
    # (its pre-treatment rows missing) stays when its cohort has pre-treatment rows: it
    # identifies differences between its cohort's post-treatment effects.
    # First observed period of each unit on the validation's dense unit codes (a groupby
    # on the labels hashed every row again: cache misses at 1e6+ units), then of each
    # cohort over its units (the cohort is constant within a unit).
    uc, n_u = pdata.unit_codes, int(pdata.unit_codes.max()) + 1
    first = np.full(n_u, np.inf)
    np.minimum.at(first, uc, t)
    unit_g = np.full(n_u, -np.inf)
    unit_g[uc] = g  # (the cohort is constant within a unit; no n-row np.where temporary)
    unit_g[np.isnan(unit_g)] = -np.inf
    seen = np.isfinite(first)
    gvals, ginv = np.unique(unit_g[seen], return_inverse=True)
    first_g = np.full(len(gvals), np.inf)
    np.minimum.at(first_g, ginv, first[seen])
    cohort_always = np.zeros(n_u, dtype=bool)
    cohort_always[seen] = np.isfinite(gvals[ginv]) & (first_g[ginv] >= gvals[ginv])
    always = cohort_always[uc]
    if always.any():
        dropped["always-treated cohorts (no row before the cohort's first treated "
                "period)"] = int(always.sum())
    keep = ~always
    ref_cohort = np.nan
    if control == "never_treated":
        if not (never & keep).any():
            raise EstimationError(format_message(
                "sun_abraham: no never-treated units to serve as the control cohort",
                where=f"column {cohort!r}",
                fix="pass control_group='last_treated' to use the last-treated cohort as "
                    "control"))
    else:
        cohorts = np.unique(g[keep & ~never])
        if len(cohorts) < 2 and not (never & keep).any():
            raise EstimationError(format_message(
                "sun_abraham: control_group='last_treated' needs at least two treated cohorts",
                seen=cohorts.tolist(), fix="add never-treated units or more cohorts"))
        ref_cohort = float(cohorts.max())
        late = keep & (t >= ref_cohort)
        if late.any():
            dropped["rows from the last-treated (control) cohort's first treated period "
                    "on"] = int(late.sum())
        keep &= ~late
    n_t0 = int(pdata.time_codes.max()) + 1
    unit_gc = np.zeros(n_u, dtype=np.int32)
    unit_gc[seen] = ginv
    refs0 = refs
    for attempt in range(2):
        # the kept rows (no copy when every row is kept: the common case)
        every = bool(keep.all())

        def kept(a: np.ndarray, every: bool = every, keep: np.ndarray = keep) -> np.ndarray:
            return a if every else a[keep]

        g, t = kept(f["cohort"].to_numpy()), kept(f["time"].to_numpy())
        uc0, tc0 = kept(uc), kept(pdata.time_codes)
        n_obs = len(g)
        # cohort x period cells on integer keys: the row's cohort level (``gvals``, through
        # its unit) x its period code, counted in a (cohorts x periods) table; no n-row
        # float keys or hashing (pandas value_counts on (cohort, rel_time) pairs cost
        # ~0.4 s at 1e7 rows)
        tvals = np.full(n_t0, np.nan)
        tvals[tc0] = t
        # the row's cohort level taken block by block (no n-row cohort code array): the
        # same integer counts as pair_sums on it
        counts = np.zeros(len(gvals) * n_t0, dtype=np.int64)
        one = np.int64(1)
        for sl in row_blocks(n_obs):
            key = unit_gc[uc0[sl]].astype(np.intp)
            key *= n_t0
            key += tc0[sl]
            np.add.at(counts, key, one)
        counts = counts.reshape(len(gvals), n_t0)
        has_g, has_t = counts.any(axis=1), counts.any(axis=0)
        never_kept = np.isneginf(gvals) & has_g
        treated_g = np.isfinite(gvals) & (gvals != ref_cohort)  # cohorts with dummies
        refs, gap_note = gap_aware_refs(refs0, tvals[has_t], gvals[treated_g & has_g],
                                        estimator=est, time_name=time)
        rel_tab = tvals[None, :] - gvals[:, None]  # t - g of each cohort x period
        is_ref = np.isin(np.nan_to_num(rel_tab, nan=np.inf), refs)
        # A treated cohort with no row at any reference period: its cohort x period
        # dummies add up to its own indicator, which the unit effects absorb, so its
        # effects are identified only up to a constant (fixest drops one collinear dummy
        # and normalises the cohort on that period instead: effects relative to another
        # period, silently). Its rows go, counted, as the always-treated cohorts' do.
        unref = treated_g & has_g & ~(is_ref & (counts > 0)).any(axis=1)
        if attempt or not unref.any():
            break
        bad = unref[unit_gc][uc] & keep
        dropped["treated cohorts with no row at the reference period (rel_time "
                f"{', '.join(f'{r:g}' for r in refs)}; cohort(s) "
                f"{', '.join(f'{v:g}' for v in gvals[unref][:6])}"
                f"{', …' if unref.sum() > 6 else ''}): effects not identified relative "
                "to it"] = int(bad.sum())
        keep &= ~bad
    if len(dropped) > len(pdata.dropped):
        warnings.warn("sun_abraham: dropped rows: "
                      + format_counts({k: v for k, v in dropped.items()
                                       if k not in pdata.dropped})
                      + f". {COUNTS_POINTER}", DroppedRowsWarning, stacklevel=2)
    is_cell = (treated_g[:, None] & (counts > 0)
               & ~np.isin(np.nan_to_num(rel_tab, nan=np.inf), refs))
    ci, ti = np.nonzero(is_cell)
    cg, crel, cn = gvals[ci], rel_tab[ci, ti], counts[ci, ti]
    order = np.lexsort((cg, crel))  # by relative period, then cohort
    ci, ti = ci[order], ti[order]
    cells = pd.DataFrame({"cohort": cg[order], "rel_time": crel[order],
                          "n_obs": cn[order]})
    if cells.empty:
        raise EstimationError(format_message(
            "sun_abraham: no cohort x relative-period cell to estimate",
            fix="check the cohort column and ref"))
    pos_tab = np.full((len(gvals), n_t0), -1, dtype=np.int32)
    pos_tab[ci, ti] = np.arange(len(ci), dtype=np.int32)
    pos = np.empty(n_obs, dtype=np.int32)
    for sl in row_blocks(n_obs):
        pos[sl] = pos_tab[unit_gc[uc0[sl]], tc0[sl]]
    # unit and period codes numbered in order of first appearance, in the validation's
    # own (fresh) code arrays, which are read no more
    uc, n_units = _first_seen_codes(uc0, n_u, in_place=True)
    tc, n_periods = _first_seen_codes(tc0, n_t0, in_place=True)
    del uc0, tc0
    kc = len(cells)
    # the cohort x period dummies go in as codes (``onehot``): fitted in O(n) on balanced
    # panels, materialised only where the projection path needs them
    x = np.empty((n_obs, len(covariates)))
    for j, c in enumerate(covariates):
        x[:, j] = kept(f[c].to_numpy(dtype=float))
    cell_names = [f"cohort={gv:g}:rel_time={int(ev)}" for gv, ev in
                  zip(cells["cohort"], cells["rel_time"], strict=True)]
    cl_codes = [uc if c == unit else tc if c == time else factorize(kept(f[c].array))[0]
                for c in clus]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotComputableWarning)
        params, v, vspec, info = fit_fe_codes(
            kept(f["y"].to_numpy()), x, [*cell_names, *covariates], [uc, tc], cl_codes,
            vcov="cluster", cluster_names=clus, onehot=pos)
    b = params.to_numpy()
    cells["estimate"] = b[:kc]
    cells["std_error"] = np.sqrt(np.clip(np.diag(v)[:kc], 0, None))
    # event-time aggregation (+ covariates passed through, + ATT)
    names_e, l_e, _ = _aggregation_matrix(cells, "dynamic")
    ke = len(names_e)
    p = len(covariates)
    lmat = np.zeros((ke + p, kc + p))
    lmat[:ke - 1, :kc] = l_e[:-1]
    lmat[ke - 1 + np.arange(p), kc + np.arange(p)] = 1.0
    lmat[ke + p - 1, :kc] = l_e[-1]
    out_names = [*names_e[:-1], *covariates, "ATT"]
    coef = lmat @ np.nan_to_num(b)
    cov = combine_vcov(lmat, b, v)
    empty = lmat.sum(axis=1) == 0
    for j in range(p):
        if not np.isfinite(b[kc + j]):
            empty[ke - 1 + j] = True
    coef[empty] = np.nan
    cov[empty, :] = cov[:, empty] = np.nan
    rel_out = [float(n.split("=")[1]) if n.startswith("rel_time=") else np.nan
               for n in out_names]
    term_info = pd.DataFrame({"rel_time": rel_out}, index=out_names)
    collinear = list(info["collinear"])
    notes = [gap_note] if gap_note else []
    if collinear:
        notes.append(f"{len(collinear)} interaction(s) collinear with the fixed effects and "
                     f"left out of the aggregation: {collinear[:6]}")
    spec = {"outcome": outcome, "unit": unit, "time": time, "cohort": cohort,
            "covariates": tuple(covariates), "cluster": clus, "control_group": control,
            "ref": refs, "alpha": alpha, "fixed_effects": (unit, time), "vcov": "cluster"}
    diag = {**pdata.diagnostics(), "dropped_rows": dropped, **info,
            "n_units": n_units, "n_periods": n_periods,
            "n_cells": kc, "control_cohort": "never treated" if control == "never_treated"
            else f"cohort {ref_cohort:g}" + (" and never treated" if never_kept.any() else ""),
            "notes": notes}
    return make_result(
        est, pd.Series(coef, index=out_names), cov, vspec, n_obs, spec=spec,
        diagnostics=diag, term_info=term_info, cls=SunAbrahamResult,
        nan_reason="every cohort x period cell of this relative period is collinear",
        extras={"interactions": cells.copy()}, cells=cells, cell_cov=_ro(v),
        cov_names=tuple(covariates), att_definition=_ATT_DEF,
        pretrend_test=event_pretrend_test(out_names, coef, cov, rel_out, vspec,
                                          estimator=est))


def _first_seen_codes(codes: np.ndarray, n_levels: int, *, in_place: bool = False
                      ) -> tuple[np.ndarray, int]:
    """Codes ``0..G-1`` of the levels present in ``codes`` (non-negative, below
    ``n_levels``), numbered in order of first appearance: the codes ``pd.factorize`` gives
    the labels, so the fit adds its sums in the same order as on the labels, found from
    the integer codes in O(n + levels log levels) without hashing the rows. ``codes``
    itself when already so numbered; ``in_place``: renumbered in ``codes`` (an intp
    array the caller no longer needs) instead of a new array."""
    first = np.full(n_levels, len(codes), dtype=np.intp)
    for sl in row_blocks(len(codes)):  # no n-row arange (fresh pages at 1e7 rows)
        np.minimum.at(first, codes[sl], np.arange(sl.start, sl.stop, dtype=np.intp))
    order = np.argsort(first, kind="stable")
    n_present = int(np.count_nonzero(first < len(codes)))
    if (n_present == n_levels and codes.dtype == np.intp
            and np.array_equal(order, np.arange(n_levels))):
        return codes, n_present  # already in that order (no n-row remapped copy)
    remap = np.empty(n_levels, dtype=np.intp)
    remap[order] = np.arange(n_levels, dtype=np.intp)
    if in_place and codes.dtype == np.intp and codes.flags.writeable:
        for sl in row_blocks(len(codes)):
            codes[sl] = remap[codes[sl]]
        return codes, n_present
    return remap[codes], n_present


def _ro(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=float)
    a.setflags(write=False)
    return a
