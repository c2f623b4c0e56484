"""Run a study end to end: ETL -> analysis panel -> estimates -> tables, figures, report.

``run_study`` is what ``twinimpact run`` calls. Every step logs its progress (logger
``twinimpact``) with its duration; every dropped row is counted in the panel manifest or
in the run diagnostics; outputs are written atomically, and a rerun replaces the study's
own outputs and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._io import atomic_path, atomic_write_text
from ._paths import find_repo_root
from .errors import InputError, TwinImpactError, TwinImpactWarning, format_message
from .study import Study, load_study

__all__ = ["StudyRun", "run_study"]

log = logging.getLogger("twinimpact")


@dataclass
class StudyRun:
    """What a study run produced."""

    study: Study
    panel: Any
    analysis_frame: pd.DataFrame
    results: dict[str, Any]
    failures: dict[str, str]
    outputs: dict[str, Path]
    diagnostics: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _step(label: str, i: int, n: int) -> Iterator[None]:
    log.info("[%d/%d] %s ...", i, n, label)
    t0 = time.perf_counter()
    yield
    log.info("[%d/%d] %s done (%.1f s)", i, n, label, time.perf_counter() - t0)


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
            dropped[f"{value} <= 0 (log undefined; use transform='log1p'/'asinh' or PPML)"] = \
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


def _load_inputs(study: Study) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    from .etl import read_trade, read_twinnings

    tw = study.twinnings
    twin = read_twinnings(study.resolve(tw["path"]), **tw.get("columns", {}),
                          **tw.get("options", {}))
    tr = study.trade
    trade = read_trade(study.resolve(tr["path"]), **tr.get("columns", {}),
                       **tr.get("options", {}))
    filters: dict[str, Any] = {"trade_rows_read": len(trade)}
    if tr.get("reporters"):
        keep = trade["reporter"].isin(tr["reporters"])
        filters["trade_rows_outside_reporters"] = int((~keep).sum())
        trade = trade[keep]
    if tr.get("years"):
        lo, hi = tr["years"]
        keep = trade["year"].between(lo, hi)
        filters["trade_rows_outside_years"] = int((~keep).sum())
        trade = trade[keep]
    filters["trade_rows_kept"] = len(trade)
    if len(trade) == 0:
        raise InputError(format_message(
            "no trade rows left after the study's reporter/year filters",
            where=f"study {study.name}", seen={"reporters": tr.get("reporters"),
                                               "years": tr.get("years")},
            fix="check [trade] reporters and years"))
    return twin, trade, filters


def _estimate(study: Study, frame: pd.DataFrame, roles: dict[str, str]
              ) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    from .estimators.registry import call_with_supported, get_estimator

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
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", TwinImpactWarning)
                res = call_with_supported(get_estimator(spec.estimator), frame, common, opts)
                if aggregate is not None:
                    agg = dict(aggregate) if isinstance(aggregate, dict) else {"type": aggregate}
                    kind = agg.pop("type")
                    res = res.aggregate(kind, **agg)
            for w in caught:
                if issubclass(w.category, TwinImpactWarning):
                    messages.append(f"{spec.label}: {w.message}")
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            results[spec.label] = res
            log.info("    %s done (%.1f s)", spec.label, time.perf_counter() - t0)
        except TwinImpactError as exc:
            failures[spec.label] = str(exc)
            log.warning("    %s failed: %s", spec.label, exc)
    return results, failures, messages


def run_study(study: Study | str | Path, out: str | Path | None = None, *,
              write_report: bool = True) -> StudyRun:
    """Run a study and write its outputs.

    Parameters
    ----------
    study : Study or path to a study TOML file
    out : folder, optional
        Root for outputs (default: the repository root). The panel goes to
        ``<out>/data/processed/<name>/`` and tables, figures and the report to
        ``<out>/reports/<name>/``.
    write_report : bool
        Also write the self-contained HTML report (when ``[output] report = true``).
    """
    if not isinstance(study, Study):
        study = load_study(study)
    root = Path(out) if out is not None else find_repo_root()
    processed = root / "data" / "processed" / study.name
    reports = root / "reports" / study.name
    n_steps = 5
    with _step("Reading twinnings and trade", 1, n_steps):
        twin, trade, filters = _load_inputs(study)
    with _step("Building the analysis panel", 2, n_steps):
        from .etl import build_panel

        tw = study.twinnings
        panel = build_panel(trade, twin, level=study.level, rule=tw.get("rule", "first"),
                            relations=tw.get("relations"))
        panel.manifest.setdefault("study", {}).update({"name": study.name,
                                                      "file": str(study.path or ""),
                                                      "filters": filters})
        panel_path = panel.to_parquet(processed / "panel.parquet")
    roles = {"unit": "unit_id", "time": "year", "cohort": "cohort"}
    with _step("Preparing the outcome", 3, n_steps):
        frame, dropped = transform_outcome(panel.frame, study.transform)
        frame = frame.assign(cohort=frame["cohort"].astype("Float64").astype(float))
    with _step(f"Estimating ({len(study.estimates)} estimators)", 4, n_steps):
        results, failures, messages = _estimate(study, frame, roles)
    outputs: dict[str, Path] = {"panel": Path(panel_path)}
    run = StudyRun(study=study, panel=panel, analysis_frame=frame, results=results,
                   failures=failures, outputs=outputs,
                   diagnostics={"outcome_dropped_rows": dropped, "filters": filters,
                                "n_analysis_rows": len(frame)},
                   warnings=messages)
    with _step("Writing tables, figures and report", 5, n_steps):
        _write_outputs(run, reports, write_report=write_report)
    return run


def _write_outputs(run: StudyRun, folder: Path, *, write_report: bool) -> None:
    from .report import plot_event_study, table

    study = run.study
    folder.mkdir(parents=True, exist_ok=True)
    produced: set[Path] = set()
    if run.results:
        ext = {"markdown": "md", "html": "html", "latex": "tex", "xlsx": "xlsx"}
        for fmt in study.tables:
            p = folder / f"results.{ext[fmt]}"
            table(run.results, format=fmt, path=p, alpha=study.alpha)
            run.outputs[f"table_{fmt}"] = p
            produced.add(p)
        dynamic = {k: r for k, r in run.results.items()
                   if "rel_time" in r.to_frame().columns
                   and r.to_frame()["rel_time"].notna().any()}
        if dynamic:
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(8, 4.5))
            plot_event_study(dynamic, ax=ax, alpha=study.alpha,
                             ylabel=f"Effect on {study.outcome_label}")
            fig.tight_layout()
            for fmt in study.figures:
                p = folder / f"event_study.{fmt}"
                with atomic_path(p) as tmp:
                    fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
                run.outputs[f"figure_{fmt}"] = p
                produced.add(p)
            plt.close(fig)
    summary = {
        "study": study.name, "title": study.title, "simulated": study.simulated,
        "failures": run.failures, "warnings": run.warnings, "diagnostics": run.diagnostics,
        "estimates": {k: r.to_frame(study.alpha).to_dict(orient="records")
                      for k, r in run.results.items()},
    }
    p = folder / "summary.json"
    atomic_write_text(p, json.dumps(summary, indent=1, default=_jsonable))
    run.outputs["summary"] = p
    produced.add(p)
    if write_report and study.report:
        try:
            from .report.html import write_report as _write_html
        except ImportError:
            _write_html = None
        if _write_html is not None:
            p = _write_html(run, folder / "report.html")
            run.outputs["report"] = p
            produced.add(p)
    # a rerun replaces this study's outputs and nothing else: remove our stale files
    known = {"results.md", "results.html", "results.tex", "results.xlsx", "event_study.png",
             "event_study.svg", "summary.json", "report.html"}
    for f in folder.iterdir():
        if f.name in known and f not in produced:
            f.unlink()


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.integer | np.floating):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, float) and np.isnan(o):
        return None
    return str(o)
