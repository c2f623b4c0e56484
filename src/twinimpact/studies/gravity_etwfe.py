"""Staggered twinning in structural gravity: Poisson ETWFE with gravity fixed effects.

Design (Nagengast & Yotov 2025, *AEJ: Applied*; Wooldridge 2023): the unit is a directed
country pair ``i -> j`` and a German pair (``DEU -> j``, and ``j -> DEU`` where ``j``'s
exports are in the data) is treated from the year of the first formal twinning between a
German municipality and one of ``j``'s (German registry). Flows stay in levels with their
zeros and are modelled by Poisson (PPML) extended TWFE:

``E[X_ijt] = exp(pi_it + chi_jt + mu_ij + sum_{g,s} tau_gs D_gs,ijt)``

with exporter-year ``pi_it``, importer-year ``chi_jt`` and pair ``mu_ij`` fixed effects and
one ``tau_gs`` per twinning cohort ``g`` (first twinning year) and year ``s >= g``. What is
compared with what: ``DEU -> j`` after the twinning against (a) other exporters' flows to
the same ``j`` in the same year (importer-year effects) and (b) Germany's flows to partners
not (yet) twinned in the same year (exporter-year effects), each relative to the pair's own
average (pair effects). Aggregations are R ``emfx``'s (average differences in levels) and
proportional changes ``sum mu1 / sum mu0 - 1`` of the treated flows.

Functions here build the pair panel from the shipped files and run the estimators; the
study kind ``gravity_etwfe`` (:mod:`twinimpact.studies.kinds.gravity_etwfe`) runs them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..core.validation import require_columns, require_frame
from ..errors import InputError, format_message
from ..estimators.etwfe import ETWFEAggregateResult, etwfe
from ..results import EstimationResult, make_result

__all__ = ["GRAVITY_FE", "first_twinning_year", "gravity_etwfe_panel",
           "load_flows",
           "log_ratio_result", "proportional_sentence"]

#: exporter-year, importer-year and pair fixed effects (columns of the panel)
GRAVITY_FE = ("exp_year", "imp_year", "pair")


def first_twinning_year(twinnings: pd.DataFrame, *, relations: Sequence[str] | None =
                        ("twinning",), country_map: Mapping[str, str] | None = None
                        ) -> pd.Series:
    """Year of the first link per partner country (index: ISO3 as in the trade data)."""
    require_frame(twinnings, what="twinnings")
    require_columns(twinnings, ["partner_iso3", "established_year", "relation"],
                    what="twinnings")
    t = twinnings
    if relations is not None:
        t = t[t["relation"].isin(list(relations))]
    t = t.dropna(subset=["partner_iso3", "established_year"])
    iso = t["partner_iso3"].astype(str).str.upper()
    if country_map:
        iso = iso.map(lambda c: country_map.get(c, c))
    return t.groupby(iso.to_numpy())["established_year"].min().astype(float)


def gravity_etwfe_panel(flows: pd.DataFrame, first_year: pd.Series, *, home: str = "DEU",
                        years: tuple[int, int] | None = None) -> pd.DataFrame:
    """The directed-pair panel with the twinning cohort of every pair.

    Parameters
    ----------
    flows : DataFrame with ``exporter, importer, year, trade`` (levels; zeros kept; rows
        with a missing flow are dropped and counted; domestic flows ``i == i`` dropped).
    first_year : first twinning year per partner ISO3 (:func:`first_twinning_year`).
    home : the registry's country. ``home -> j`` and ``j -> home`` get ``j``'s year;
        every other pair is never treated (cohort 0).
    years : inclusive window.

    Returns
    -------
    DataFrame with ``exporter, importer, year, trade, pair, exp_year, imp_year, cohort,
    treated_pair`` and ``attrs["dropped"]`` (reason -> rows).
    """
    require_columns(flows, ["exporter", "importer", "year", "trade"], what="flows")
    d = flows[["exporter", "importer", "year", "trade"]].copy()
    dropped: dict[str, int] = {}
    if years is not None:
        out = ~d["year"].between(*years)
        if out.any():
            dropped[f"outside the window {years[0]}-{years[1]}"] = int(out.sum())
        d = d[~out]
    dom = d["exporter"] == d["importer"]
    if dom.any():
        dropped["domestic flow (exporter = importer)"] = int(dom.sum())
        d = d[~dom]
    miss = d["trade"].isna()
    if miss.any():
        dropped["missing flow"] = int(miss.sum())
        d = d[~miss]
    if (d["trade"] < 0).any():
        raise InputError(format_message("negative trade flows", seen=float(d["trade"].min()),
                                        fix="flows must be in levels (>= 0)"))
    if d.duplicated(["exporter", "importer", "year"]).any():
        raise InputError(format_message("duplicated exporter x importer x year rows",
                                        fix="aggregate the flows first"))
    d = d.reset_index(drop=True)
    d["year"] = d["year"].astype(int)
    d["pair"] = d["exporter"] + ">" + d["importer"]
    d["exp_year"] = d["exporter"] + ":" + d["year"].astype(str)
    d["imp_year"] = d["importer"] + ":" + d["year"].astype(str)
    partner = np.where(d["exporter"] == home, d["importer"],
                       np.where(d["importer"] == home, d["exporter"], ""))
    g = pd.Series(partner).map(first_year).to_numpy(dtype=float)
    d["treated_pair"] = np.isfinite(g)
    d["cohort"] = np.where(np.isfinite(g), g, 0.0)
    d.attrs["dropped"] = dropped
    d.attrs["home"] = home
    return d


def log_ratio_result(agg: ETWFEAggregateResult, label: str = "poisson") -> EstimationResult:
    """A Poisson ETWFE aggregation restated as log ratios ``log(sum mu1 / sum mu0)``.

    Same rows (``rel_time``, ``ATT``); estimates on the log scale so that tables, the
    headline (``exp(b) - 1``) and event-study plots read them like any log-point effect;
    the delta-method covariance is the one of the log ratios.
    """
    prop = agg.extras.get("proportional")
    if prop is None:
        raise InputError(format_message("log_ratio_result needs a Poisson aggregation on "
                                        "the response scale", seen=agg.spec.get("family")))
    return make_result(f"etwfe/{label}_log_ratio", pd.Series(prop["log_ratio"],
                                                             index=list(agg.terms)),
                       prop["cov_log"], agg.vcov_spec, agg.nobs,
                       spec={**dict(agg.spec), "scale": "log ratio"},
                       diagnostics=dict(agg.diagnostics), term_info=agg.term_info,
                       nan_reason="no treated flow with an identified cell")


def proportional_sentence(agg: ETWFEAggregateResult, subject: str, alpha: float = 0.05,
                          unit: str = "") -> str:
    """Plain words for the ``ATT`` row: proportional change and level difference."""
    prop = agg.proportional(alpha).set_index("term").loc["ATT"]
    lev = agg.to_frame(alpha).set_index("term").loc["ATT"]
    x, lo, hi = (100 * float(prop[k]) for k in ("effect", "ci_lower", "ci_upper"))
    if not all(map(math.isfinite, (x, lo, hi))):
        return f"{subject}: the average effect could not be computed."
    word = "higher" if x >= 0 else "lower"
    n = agg.diagnostics.get("n_per_row", {}).get("ATT")
    return (f"{subject} were {abs(x):.1f}% {word} than without the twinning "
            f"({100 * (1 - alpha):g}% CI [{lo:.1f}%, {hi:.1f}%]), averaged over "
            f"{n} twinned pair-years; in levels, {float(lev['estimate']):,.3g} {unit} per "
            f"pair-year (CI [{float(lev['ci_lower']):,.3g}, {float(lev['ci_upper']):,.3g}]).")


@dataclass
class GravityETWFERun:
    """Results of :func:`estimate_gravity_etwfe`."""

    panel: pd.DataFrame
    results: dict[str, EstimationResult] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    sentences: list[str] = field(default_factory=list)
    poisson: dict[str, ETWFEAggregateResult] = field(default_factory=dict)


def estimate_gravity_etwfe(panel: pd.DataFrame, *, subject: str, unit_label: str = "",
                           alpha: float = 0.05, comparisons: bool = True,
                           placebo: bool = True, run: Any = None) -> GravityETWFERun:
    """Poisson ETWFE (not-yet-treated; never-treated with placebo leads) with the gravity
    fixed effects, and beside it log-linear ETWFE (same fixed effects), Callaway-Sant'Anna
    and imputation (pair and year effects) on the positive flows.

    ``run(label, fn)`` wraps each call (the runner records warnings / failures).
    """
    from ..errors import TwinImpactError
    from ..estimators.callaway_santanna import callaway_santanna
    from ..estimators.imputation import imputation

    call = run or (lambda label, fn: fn())
    out = GravityETWFERun(panel=panel)
    kw = dict(outcome="trade", unit="pair", time="year", cohort="cohort",
              fixed_effects=GRAVITY_FE, cluster="pair", alpha=alpha)

    def attempt(label: str, fn: Any) -> Any:
        try:
            return call(label, fn)
        except TwinImpactError as exc:
            out.failures[label] = str(exc)
            return None

    fit = attempt("Poisson ETWFE", lambda: etwfe(panel, **kw, family="poisson"))
    if fit is not None:
        dyn = attempt("Poisson ETWFE", lambda: fit.aggregate("dynamic"))
        if dyn is not None:
            out.poisson["not_yet_treated"] = dyn
            out.results["Poisson ETWFE (gravity FE)"] = log_ratio_result(dyn)
            out.sentences.append(
                "Poisson ETWFE, not-yet-twinned comparisons: "
                + proportional_sentence(dyn, subject, alpha, unit_label))
    if placebo:
        fit_n = attempt("Poisson ETWFE, never-twinned controls",
                        lambda: etwfe(panel, **kw, family="poisson",
                                      control_group="never_treated"))
        if fit_n is not None:
            dyn_n = attempt("Poisson ETWFE, never-twinned controls",
                            lambda: fit_n.aggregate("dynamic"))
            if dyn_n is not None:
                out.poisson["never_treated"] = dyn_n
                out.results["Poisson ETWFE, never-twinned controls (placebo leads)"] = \
                    _with_pretest(log_ratio_result(dyn_n, "poisson_never"), dyn_n)
                out.sentences.append(
                    "Poisson ETWFE, never-twinned comparisons only: "
                    + proportional_sentence(dyn_n, subject, alpha, unit_label))
    if comparisons:
        pos = panel[panel["trade"] > 0].assign(log_trade=lambda f: np.log(f["trade"]))
        lkw = {**kw, "outcome": "log_trade"}
        lin = attempt("Log-linear ETWFE", lambda: etwfe(pos, **lkw))
        if lin is not None:
            out.results["Log-linear ETWFE (gravity FE, positive flows)"] = \
                lin.aggregate("dynamic")
        cs = attempt("Callaway-Sant'Anna", lambda: callaway_santanna(
            pos, outcome="log_trade", unit="pair", time="year", cohort="cohort",
            control_group="not_yet_treated", allow_unbalanced_panel=True)
            .aggregate("dynamic", na_rm=True))
        if cs is not None:
            out.results["Callaway-Sant'Anna (pair + year, positive flows)"] = cs
        imp = attempt("Imputation", lambda: imputation(
            pos, outcome="log_trade", unit="pair", time="year", cohort="cohort",
            horizons=True, cluster="pair"))
        if imp is not None:
            out.results["Imputation (pair + year, positive flows)"] = imp
    return out


def _with_pretest(res: EstimationResult, agg: ETWFEAggregateResult) -> EstimationResult:
    if agg.pretrend_test is None:
        return res
    p = agg.pretrend_test
    diag = {**dict(res.diagnostics),
            "pretrend_test": {"statistic": p.statistic, "df": p.df, "p_value": p.p_value,
                              "kind": p.kind + " (level differences, never-twinned "
                                               "comparisons)"}}
    return res.replace(diagnostics=diag)


# ============================================================================ study kind
#: keys of the ``[gravity_etwfe]`` study section
SECTION_KEYS = {"source", "home", "years", "exporters", "comparisons", "placebo",
                "country_map", "unit_label"}


def load_flows(study: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The flows named by ``[trade]``: ``source = "tradhist"`` (a ``read_trade`` frame whose
    reporters are the exporters) or ``"gravity_panel"`` (``exporter, importer, year,
    trade`` columns, any case)."""
    from ..etl import read_trade
    from ..provenance import file_sha256

    cfg = study.raw.get("gravity_etwfe", {})
    path = study.resolve(study.trade["path"])
    source = cfg.get("source", "tradhist")
    if source == "tradhist":
        tr = read_trade(path, **study.trade.get("columns", {}),
                        **study.trade.get("options", {}))
        flows = tr.rename(columns={"reporter": "exporter", "partner": "importer",
                                   "value": "trade"})
        unit = tr.attrs.get("unit", "")
    elif source == "gravity_panel":
        raw = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        flows = raw.rename(columns={c: c.lower() for c in raw.columns})
        unit = cfg.get("unit_label", "")
    else:
        raise InputError(format_message("[gravity_etwfe] source must be 'tradhist' or "
                                        "'gravity_panel'", seen=source))
    exporters = cfg.get("exporters")
    n_read = len(flows)
    dropped = {}
    if exporters:
        keep = flows["exporter"].isin(list(exporters))
        dropped["exporter not in the study"] = int((~keep).sum())
        flows = flows[keep]
    info = {"path": str(path), "sha256": file_sha256(path), "rows": n_read,
            "unit": unit, "dropped": dropped}
    return flows[["exporter", "importer", "year", "trade"]], info


def design_sentence(panel: pd.DataFrame, home: str, years: tuple[int, int],
                    cohorts: pd.Series) -> str:
    """What is compared with what, in plain words."""
    n_ex = panel["exporter"].nunique()
    n_pairs = panel["pair"].nunique()
    n_tr = int(cohorts.sum())
    return (f"What is compared with what: {n_tr} {home} pair(s) (flows {home} -> j and, where "
            f"j's own exports are in the data, j -> {home}) whose first formal {home} town "
            f"twinning with j falls inside {years[0]}-{years[1]} ({len(cohorts)} twinning "
            f"years) are compared, before and after the twinning, with (a) the flows of the "
            f"other exporters to the same partner j in the same year (importer-year effects) "
            f"and (b) {home}'s flows to partners not (yet) twinned in the same year "
            f"(exporter-year effects), each relative to the pair's own average level (pair "
            f"effects). {n_pairs} directed pairs of {n_ex} exporters enter; pairs twinned "
            f"before {years[0]} have no pre-twinning year and are left out (counted).")
