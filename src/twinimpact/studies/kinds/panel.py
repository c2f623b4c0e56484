"""Study kind ``"panel"``: twinnings + trade -> analysis panel -> the listed estimators.

The trade rows are filtered to the study's reporters and years (counted), the outcome is
transformed (rows where it is undefined dropped and counted), and every ``[[estimate]]``
runs through the estimator registry; an estimator that fails is recorded, not fatal.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ...errors import InputError, TwinImpactError, format_message, suggest
from ...estimators.registry import call_with_supported, get_estimator
from ...etl import build_panel
from ...etl.inputs import read_trade_input
from ..base import StudyKind, StudyRun, caught, log, read_twinnings_cfg, step

if TYPE_CHECKING:
    from ..spec import Study

__all__ = ["KIND", "filter_trade", "transform_outcome"]


def transform_outcome(frame: pd.DataFrame, transform: str, value: str = "value"
                      ) -> tuple[pd.DataFrame, dict[str, int]]:
    """Add column ``outcome``; rows where it is undefined are dropped and counted."""
    v = frame[value].astype(float)
    dropped: dict[str, int] = {}
    if v.isna().any():
        dropped[f"missing {value}"] = int(v.isna().sum())
    if transform == "log":
        nonpos = (v <= 0) & v.notna()
        if nonpos.any():
            dropped[f"{value} <= 0 (log undefined; a log(1 + x) or asinh transform, or PPML, "
                    "keeps them)"] = \
                int(nonpos.sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.log(v.where(v > 0))
    elif transform == "log1p":
        y = np.log1p(v)
    elif transform == "asinh":
        y = np.arcsinh(v)
    else:
        y = v
    out = frame.assign(outcome=y)
    out = out[out["outcome"].notna()].reset_index(drop=True)
    return out, dropped


def filter_trade(trade: pd.DataFrame, reporters: Any = None, years: Any = None, *,
                 where: str = "study") -> tuple[pd.DataFrame, dict[str, Any]]:
    """Keep the trade rows of ``reporters`` (list) within ``years`` (inclusive ``[lo, hi]``);
    returns the rows kept and the counts of rows read, dropped by each filter and kept."""
    filters: dict[str, Any] = {"trade_rows_read": len(trade)}
    if reporters:
        keep = trade["reporter"].isin(reporters)
        filters["trade_rows_outside_reporters"] = int((~keep).sum())
        trade = trade[keep]
    if years:
        lo, hi = years
        keep = trade["year"].between(lo, hi)
        filters["trade_rows_outside_years"] = int((~keep).sum())
        trade = trade[keep]
    filters["trade_rows_kept"] = len(trade)
    if len(trade) == 0:
        raise InputError(format_message(
            "no trade rows left after the study's reporter/year filters",
            where=where, seen={"reporters": reporters, "years": years},
            fix="check [trade] reporters and years"))
    return trade, filters


def _load_inputs(study: Study) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    twin = read_twinnings_cfg(study)
    tr = study.trade
    # a published layout (format=), an out-of-core scan (engine=, folder, glob) or a file
    trade = read_trade_input(study.resolve(tr["path"]), columns=tr.get("columns"),
                             options=tr.get("options"), format=tr.get("format"),
                             engine=tr.get("engine"), filters=tr.get("filters"))
    trade, filters = filter_trade(trade, tr.get("reporters"), tr.get("years"),
                                  where=f"study {study.name}")
    return twin, trade, filters


def _estimate(study: Study, frame: pd.DataFrame, roles: dict[str, str]
              ) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    messages: list[str] = []
    common = {"outcome": "outcome", "unit": roles["unit"], "time": roles["time"],
              "cohort": roles["cohort"], "leads": study.leads, "lags": study.lags,
              "cluster": study.cluster, "alpha": study.alpha}
    for spec in study.estimates:
        opts = dict(spec.options)
        aggregate = opts.pop("aggregate", None)
        t0 = time.perf_counter()
        log.info("    estimating %s (%s) ...", spec.label, spec.estimator)

        def fit(spec: Any = spec, opts: dict[str, Any] = opts, aggregate: Any = aggregate
                ) -> Any:
            res = call_with_supported(get_estimator(spec.estimator), frame, common, opts)
            if aggregate is not None:
                agg = dict(aggregate) if isinstance(aggregate, dict) else {"type": aggregate}
                kind = agg.pop("type")
                res = res.aggregate(kind, **agg)
            return res

        try:
            results[spec.label] = caught(fit, spec.label, messages)
            log.info("    %s done (%.1f s)", spec.label, time.perf_counter() - t0)
        except TwinImpactError as exc:
            failures[spec.label] = str(exc)
            log.warning("    %s failed: %s", spec.label, exc)
    return results, failures, messages


def _check_analysis_frame(study: Study, panel: pd.DataFrame, frame: pd.DataFrame,
                          dropped: dict[str, int]) -> None:
    """Refuse, before any estimator runs, a study that cannot estimate anything: no rows
    left for the outcome, or an [inference] cluster column the panel does not have."""
    if len(frame) == 0:
        raise InputError(format_message(
            f"no rows left for the {study.transform!r} outcome: all {len(panel)} panel rows "
            "were dropped", where="[outcome] transform", seen=dropped,
            fix="zero trade cannot enter a log: use transform = \"asinh\" or \"log1p\", "
                "or a PPML gravity study (kind = \"gravity\") that keeps zeros; check that "
                "the trade values are not all missing"))
    if study.cluster is not None and study.cluster not in frame.columns:
        close = suggest(study.cluster, [str(c) for c in frame.columns])
        raise InputError(format_message(
            f"the cluster column {study.cluster!r} is not in the analysis panel",
            where="[inference] cluster", seen=study.cluster,
            fix=(f"did you mean {close[0]!r}? " if close else "")
            + f"columns: {', '.join(map(str, frame.columns))}"))


def run_panel(study: Study, processed: Path) -> StudyRun:
    n_steps = 5
    with step("Reading twinnings and trade", 1, n_steps):
        twin, trade, filters = _load_inputs(study)
    with step("Building the analysis panel", 2, n_steps):
        tw = study.twinnings
        panel = build_panel(trade, twin, level=study.level, rule=tw.get("rule", "first"),
                            relations=tw.get("relations"))
        panel.manifest.setdefault("study", {}).update({"name": study.name,
                                                      "file": str(study.path or ""),
                                                      "filters": filters})
        panel_path = panel.to_parquet(processed / "panel.parquet")
    roles = {"unit": "unit_id", "time": "year", "cohort": "cohort"}
    with step("Preparing the outcome", 3, n_steps):
        frame, dropped = transform_outcome(panel.frame, study.transform)
        _check_analysis_frame(study, panel.frame, frame, dropped)
        frame = frame.assign(cohort=frame["cohort"].astype("Float64").astype(float))
    with step(f"Estimating ({len(study.estimates)} estimators)", 4, n_steps):
        results, failures, messages = _estimate(study, frame, roles)
    return StudyRun(study=study, panel=panel, analysis_frame=frame, results=results,
                    failures=failures, outputs={"panel": Path(panel_path)},
                    diagnostics={"outcome_dropped_rows": dropped, "filters": filters,
                                 "n_analysis_rows": len(frame)},
                    warnings=messages)




KIND = StudyKind(name="panel", run=run_panel, n_steps=5, paths=("twinnings", "trade"),
                 description="ETL -> analysis panel -> the listed estimators")
