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

from .._io import atomic_path, atomic_write_text
from .._paths import find_repo_root
from ..errors import InputError, TwinImpactError, TwinImpactWarning, format_message
from .spec import Study, load_study

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
    sensitivity: Any = None
    case: Any = None
    #: extra figures for the report: (file stem, title, caption, draw(fig) -> None)
    figures: list[tuple[str, str, str, Any]] = field(default_factory=list)


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
    from ..etl import read_twinnings
    from ..etl.layouts import read_trade_input

    tw = study.twinnings
    twin = read_twinnings(study.resolve(tw["path"]), **tw.get("columns", {}),
                          **tw.get("options", {}))
    tr = study.trade
    trade = read_trade_input(study.resolve(tr["path"]), columns=tr.get("columns"),
                             options=tr.get("options"), format=tr.get("format"),
                             engine=tr.get("engine"), filters=tr.get("filters"))
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
    from ..estimators.registry import call_with_supported, get_estimator

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
        Root for outputs (default: the repository root). The analysis data go to
        ``<out>/data/processed/<name>/`` (parquet + ``manifest.json``) and tables,
        figures and the report to ``<out>/reports/<name>/``.
    write_report : bool
        Also write the self-contained HTML report (when ``[output] report = true``).

    Study kinds: ``"panel"`` (ETL -> panel -> the listed estimators), ``"gravity"``
    (PPML structural gravity with twinning intensity, :func:`twinimpact.gravity_study`)
    and ``"case_study"`` (one or two treated cities vs donors, :func:`twinimpact.case_study`).
    """
    if not isinstance(study, Study):
        study = load_study(study)
    root = Path(out) if out is not None else find_repo_root()
    processed = root / "data" / "processed" / study.name
    reports = root / "reports" / study.name
    runner = {"panel": _run_panel, "gravity": _run_gravity,
              "case_study": _run_case_study}[study.kind]
    run = runner(study, processed)
    n = 5 if study.kind == "panel" else 4
    with _step("Writing tables, figures and report", n, n):
        _write_outputs(run, reports, write_report=write_report)
    return run


def _run_panel(study: Study, processed: Path) -> StudyRun:
    n_steps = 5
    with _step("Reading twinnings and trade", 1, n_steps):
        twin, trade, filters = _load_inputs(study)
    with _step("Building the analysis panel", 2, n_steps):
        from ..etl import build_panel

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
    return StudyRun(study=study, panel=panel, analysis_frame=frame, results=results,
                    failures=failures, outputs={"panel": Path(panel_path)},
                    diagnostics={"outcome_dropped_rows": dropped, "filters": filters,
                                 "n_analysis_rows": len(frame)},
                    warnings=messages)


def _write_data(frame: pd.DataFrame, manifest: dict[str, Any], folder: Path,
                name: str) -> tuple[Any, Path]:
    """Write ``frame`` + ``manifest.json`` atomically; return a Panel-like holder and path."""
    from ..panel import Panel

    panel = Panel(frame, manifest)
    return panel, panel.to_parquet(folder / name)


def _file_input(path: Path) -> dict[str, Any]:
    from ..etl.provenance import file_sha256

    return {"kind": "file", "path": str(path), "sha256": file_sha256(path)}


def _read_twinnings_cfg(study: Study) -> pd.DataFrame:
    from ..etl import read_twinnings

    tw = study.twinnings
    return read_twinnings(study.resolve(tw["path"]), **tw.get("columns", {}),
                          **tw.get("options", {}))


def _caught(fn: Any, label: str, messages: list[str]) -> Any:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TwinImpactWarning)
        out = fn()
    for w in caught:
        if issubclass(w.category, TwinImpactWarning):
            messages.append(f"{label}: {w.message}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return out


def _run_gravity(study: Study, processed: Path) -> StudyRun:
    from .gravity import BOOK_YEARS, gravity_study

    g = study.gravity
    messages: list[str] = []
    with _step("Reading twinnings and the gravity panel", 1, 4):
        twin = _caught(lambda: _read_twinnings_cfg(study), "twinnings", messages)
        panel_path = study.resolve(study.trade["path"])
        gpanel = pd.read_parquet(panel_path) if panel_path.suffix == ".parquet" \
            else pd.read_csv(panel_path)
    years = g.get("years", list(BOOK_YEARS))
    intensities = g.get("intensity", "n_twinnings")
    intensities = [intensities] if isinstance(intensities, str) else list(intensities)
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    sentences: list[str] = []
    data = None
    dropped_tw: dict[str, int] = {}
    with _step(f"Estimating PPML gravity ({len(intensities)} specifications)", 2, 4):
        for inten in intensities:
            label = f"PPML gravity ({inten})"
            try:
                gs = _caught(lambda inten=inten: gravity_study(
                    twin, gpanel, intensity=inten, home=g.get("home", "DEU"), years=years,
                    relations=study.twinnings.get("relations", ("twinning",)),
                    alpha=study.alpha, **g.get("options", {})), label, messages)
            except TwinImpactError as exc:
                failures[label] = str(exc)
                continue
            results[label] = gs.result
            sentences.append(gs.sentence)
            data, dropped_tw = gs.data, dict(gs.dropped_twinnings)
    if data is None:
        raise InputError(format_message("no gravity specification could be estimated",
                                        seen=failures, fix="see the messages above"))
    with _step("Writing the estimation data", 3, 4):
        manifest = {
            "study": {"name": study.name, "file": str(study.path or ""), "kind": "gravity"},
            "inputs": {"gravity_panel": {**_file_input(panel_path), "rows": len(gpanel)},
                       "twinnings": {**_file_input(study.resolve(study.twinnings["path"])),
                                     "rows": len(twin)}},
            "parameters": {"years": list(years), "intensity": intensities,
                           "home": g.get("home", "DEU")},
            "steps": {"gravity_panel": {"n_in": len(gpanel), "n_out": len(data),
                                        "dropped": {"years not in the study":
                                                    int(len(gpanel) - len(data))}},
                      "twinnings": {"n_in": len(twin),
                                    "n_out": len(twin) - sum(dropped_tw.values()),
                                    "dropped": dropped_tw}},
        }
        panel, path = _write_data(data, manifest, processed, "gravity_data.parquet")
    return StudyRun(study=study, panel=panel, analysis_frame=data, results=results,
                    failures=failures, outputs={"panel": Path(path)},
                    diagnostics={"sentences": sentences}, warnings=messages)


def _case_dates(study: Study, twin: pd.DataFrame) -> dict[str, int]:
    case = study.case
    cities = case["treated_city"]
    cities = [cities] if isinstance(cities, str) else list(cities)
    rel = case.get("relations", ["twinning"])
    dates: dict[str, int] = {}
    for c in cities:
        m = twin[(twin["city"] == c) & (twin["partner_iso3"] == case["partner"])
                 & twin["relation"].isin(rel)]
        if len(m):
            dates[c] = int(m["established_year"].min())
    dates.update({str(k): int(v) for k, v in case.get("treated_from", {}).items()})
    missing = [c for c in cities if c not in dates]
    if missing:
        raise InputError(format_message(
            "no twinning date for the treated city in the registry", where="[case]",
            seen={"cities": missing, "partner": case["partner"], "relations": rel},
            fix="add the link to the registry, widen relations, or set [case] treated_from"))
    return dates


def _simulated_series(study: Study, dates: dict[str, int]) -> pd.DataFrame:
    from .casestudy import simulated_city_exports

    sim = dict(study.case.get("simulate", {}))
    seed = int(study.case.get("seed", 1))
    parts = []
    for i, (city, year) in enumerate(dates.items()):
        s = simulated_city_exports(seed + i, treated_city=city, partner=study.case["partner"],
                                   twinning_year=year, **sim)
        parts.append(s if i == 0 else s[s["city"] == city])
    out = pd.concat(parts, ignore_index=True)
    out.attrs["note"] = parts[0].attrs.get("note", "SIMULATED")
    return out


def _run_case_study(study: Study, processed: Path) -> StudyRun:
    from .casestudy import case_study

    case = study.case
    messages: list[str] = []
    with _step("Reading twinning dates and the city series", 1, 4):
        twin = _caught(lambda: _read_twinnings_cfg(study), "twinnings", messages)
        dates = _case_dates(study, twin)
        if case.get("series"):
            spath = study.resolve(case["series"])
            series = pd.read_parquet(spath) if spath.suffix == ".parquet" \
                else pd.read_csv(spath)
            source = _file_input(spath)
        else:
            if not study.simulated:
                raise InputError(format_message(
                    "a case study without [case] series runs on simulated data, but "
                    "[study] simulated is not true", where=str(study.path),
                    fix="set simulated = true (the report then says so on its first line) "
                        "or give [case] series = \"path/to/city_exports.csv\""))
            series = _simulated_series(study, dates)
            source = {"kind": "simulated", "note": series.attrs.get("note", "")}
    cols = dict(case.get("columns", {}))
    colmap = {"city": cols.get("city", "city"), "partner_col": cols.get("partner", "partner"),
              "year": cols.get("year", "year"), "exports": cols.get("exports", "exports")}
    with _step("Estimating SDID, SC and DID with placebo inference", 2, 4):
        cs = _caught(lambda: case_study(
            series, treated_city=list(dates), treated_from=dates, partner=case["partner"],
            transform=case.get("transform", "log"), se=case.get("se", "placebo"),
            n_reps=int(case.get("n_reps", 200)), seed=case.get("seed"), alpha=study.alpha,
            honest=case.get("honest", False), honest_options=case.get("honest_options"),
            **colmap), "case study", messages)
    labels = {"sdid": "Synthetic DiD", "sc": "Synthetic control", "did": "DiD"}
    results = {labels[k]: r for k, r in cs.results.items()}
    with _step("Writing the analysis data", 3, 4):
        manifest = {"study": {"name": study.name, "file": str(study.path or ""),
                              "kind": "case_study", "simulated": study.simulated},
                    "inputs": {"series": {**source, "rows": len(series)},
                               "twinnings": {**_file_input(study.resolve(
                                   study.twinnings["path"])), "rows": len(twin)}},
                    "parameters": {"treated_from": dates, "partner": case["partner"]},
                    "steps": {"series": {"n_in": len(series), "n_out": len(cs.panel),
                                         "dropped": {"other partners": int(
                                             len(series) - len(cs.panel))}}}}
        frame = cs.panel
        if source.get("kind") == "simulated":
            from .casestudy import SIMULATED_NOTE

            frame = frame.assign(note=SIMULATED_NOTE)
        panel, path = _write_data(frame, manifest, processed, "case_panel.parquet")
    run = StudyRun(study=study, panel=panel, analysis_frame=frame, results=results,
                   failures={}, outputs={"panel": Path(path)},
                   diagnostics={"treated_from": dates, "notes": list(cs.notes)},
                   warnings=messages)
    run.sensitivity = cs.honest
    run.case = cs

    def _draw(fig: Any) -> None:
        axes = fig.subplots(1, 2, sharey=True)
        cs.plot(axes)

    run.figures.append(("synthetic_trajectories", "The twinned cities and their synthetic "
                        "comparisons",
                        "Left: synthetic DiD; right: synthetic control. The comparison is a "
                        "weighted mix of donor cities chosen to track the twinned city before "
                        "the twinning; the gap after it is the estimated effect.", _draw))
    return run


def _write_outputs(run: StudyRun, folder: Path, *, write_report: bool) -> None:
    from ..report import plot_event_study, table

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
    for stem, _title, _caption, draw in run.figures:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(11, 4.5))
        draw(fig)
        fig.tight_layout()
        for fmt in study.figures:
            p = folder / f"{stem}.{fmt}"
            with atomic_path(p) as tmp:
                fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
            run.outputs[f"{stem}_{fmt}"] = p
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
            from ..report.html import write_report as _write_html
        except ImportError:
            _write_html = None
        if _write_html is not None:
            p = _write_html(run, folder / "report.html")
            run.outputs["report"] = p
            produced.add(p)
    # a rerun replaces this study's outputs and nothing else: remove our stale files
    known = {"results.md", "results.html", "results.tex", "results.xlsx", "event_study.png",
             "event_study.svg", "summary.json", "report.html",
             *(f"{stem}.{fmt}" for stem, *_ in run.figures for fmt in ("png", "svg")),
             "synthetic_trajectories.png", "synthetic_trajectories.svg"}
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
