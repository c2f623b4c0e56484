"""Run a study end to end: ETL -> analysis panel -> estimates -> tables, figures, report.

``run_study`` is what ``twinimpact run`` calls. It only orchestrates: the study kind
(:mod:`twinimpact.studies.kinds`) builds the analysis data and estimates; this module writes
the tables, figures, ``summary.json`` and the report. Every step logs its progress (logger
``twinimpact``) with its duration; every dropped row is counted in the panel manifest or
in the run diagnostics; outputs are written atomically, and a rerun replaces the study's
own outputs and nothing else.

A run is all or nothing: the kind and the writers work in a staging folder beside the
outputs (``<out>/.twinimpact-<name>-*``), and only a run that produced estimates and wrote
every output moves its files into place (one ``os.replace`` each). An error or Ctrl-C
midway leaves the previous outputs as they were and no partial new ones; a run where
every estimator failed raises :class:`~twinimpact.errors.EstimationError` and writes
nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .._io import atomic_write_text
from .._paths import find_repo_root
from ..errors import EstimationError, SpecificationError, format_message
from ..provenance import jsonable
from ..report import table
from ..report.figures import close_figure, drawing_figure, event_study_figure, save_figure
from .base import StudyRun, step
from .kinds import get_kind
from .spec import Study, load_study

__all__ = ["StudyRun", "credibility_of_run", "run_study", "write_outputs"]

#: the columns a panel study's analysis frame uses (studies/kinds/panel.py)
RUN_ROLES = {"outcome": "outcome", "unit": "unit_id", "time": "year", "cohort": "cohort"}


def credibility_of_run(run: StudyRun, headline: str | None = None) -> Any:
    """The "Can we trust this?" checks of a run
    (:func:`twinimpact.diagnostics.credibility.assess_credibility` on its results, analysis
    frame and headline estimate); None when nothing was estimated."""
    from ..diagnostics.credibility import assess_credibility
    from ..report.headline import pick_headline

    if not run.results:
        return None
    if headline is None:
        head = pick_headline(run.results, run.study)
        headline = head.label if head is not None else None
    frame = run.analysis_frame
    if frame is None or not set(RUN_ROLES.values()) <= set(getattr(frame, "columns", [])):
        frame = None
    return assess_credibility(run.results, frame=frame, roles=RUN_ROLES, headline=headline,
                              alpha=run.study.alpha)


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
    if root.exists() and not root.is_dir():
        raise SpecificationError(format_message(
            "the output root must be a folder", where="out= (--out)", seen=str(root),
            fix="pass a folder (it is created when missing), not a file"))
    processed = root / "data" / "processed" / study.name
    reports = root / "reports" / study.name
    kind = get_kind(study.kind)
    root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".twinimpact-{study.name}-", dir=root))
    try:
        staged = {stage / "processed": processed, stage / "reports": reports}
        run = kind.run(study, stage / "processed")
        if not run.results:
            raise EstimationError(format_message(
                "no estimate could be produced: every estimator failed",
                where=f"study {study.name!r}", seen=dict(run.failures),
                fix="read each estimator's message; nothing was written"))
        with step("Writing tables, figures and report", kind.n_steps, kind.n_steps):
            write_outputs(run, stage / "reports", write_report=write_report)
        _commit(run, staged, reports)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return run


#: files the runner writes into ``reports/<name>/``: a rerun removes those it did not
#: produce this time (stale outputs), and nothing else
KNOWN_OUTPUTS = ("results.md", "results.html", "results.tex", "results.xlsx",
                 "event_study.png", "event_study.svg", "summary.json", "report.html",
                 "synthetic_trajectories.png", "synthetic_trajectories.svg")


def _commit(run: StudyRun, staged: dict[Path, Path], reports: Path) -> None:
    """Move every staged file into its final folder and point ``run.outputs`` there;
    remove the study's own stale report files (a rerun replaces outputs, nothing else)."""
    moved: dict[Path, Path] = {}
    for src, dst in staged.items():
        if not src.is_dir():
            continue
        dst.mkdir(parents=True, exist_ok=True)
        for f in sorted(src.iterdir()):
            target = dst / f.name
            if f.is_dir() and target.exists():
                shutil.rmtree(target)
            os.replace(f, target)
            moved[f] = target
    if reports.is_dir():
        known = {*KNOWN_OUTPUTS,
                 *(f"{stem}.{fmt}" for stem, *_ in run.figures for fmt in ("png", "svg"))}
        produced = {p.name for p in moved.values() if p.parent == reports}
        for f in reports.iterdir():
            if f.name in known and f.name not in produced:
                f.unlink()
    for key, p in list(run.outputs.items()):
        run.outputs[key] = moved.get(Path(p), Path(p))


def write_outputs(run: StudyRun, folder: Path, *, write_report: bool) -> None:
    """Write the run's tables, figures, ``summary.json`` and (optionally) the HTML report
    into ``folder``, each file atomically with the mode the umask gives a new file."""
    study = run.study
    folder.mkdir(parents=True, exist_ok=True)
    if run.results and run.credibility is None:
        with step("Credibility checks", 1, 1):
            run.credibility = credibility_of_run(run)
    if run.results:
        ext = {"markdown": "md", "html": "html", "latex": "tex", "xlsx": "xlsx"}
        for fmt in study.tables:
            p = folder / f"results.{ext[fmt]}"
            table(run.results, format=fmt, path=p, alpha=study.alpha)
            if fmt == "xlsx" and run.credibility is not None:
                from ..report.plain import add_sheet

                add_sheet(p, "Can we trust this", run.credibility.to_frame())
            run.outputs[f"table_{fmt}"] = p
        fig = event_study_figure(run.results, alpha=study.alpha,
                                 ylabel=f"Effect on {study.outcome_label}")
        if fig is not None:
            for fmt in study.figures:
                p = save_figure(fig, folder / f"event_study.{fmt}", fmt)
                run.outputs[f"figure_{fmt}"] = p
            close_figure(fig)
    for stem, _title, _caption, draw in run.figures:
        fig = drawing_figure(draw)
        for fmt in study.figures:
            p = save_figure(fig, folder / f"{stem}.{fmt}", fmt)
            run.outputs[f"{stem}_{fmt}"] = p
        close_figure(fig)
    summary = {
        "study": study.name, "title": study.title, "simulated": study.simulated,
        "failures": run.failures, "warnings": run.warnings, "diagnostics": run.diagnostics,
        "estimates": {k: r.to_frame(study.alpha).to_dict(orient="records")
                      for k, r in run.results.items()},
        # the typed joint pre-trend test of every event-study result (results.PretrendTest)
        "pretrend_tests": {k: getattr(r, "pretrend_test", None)
                           for k, r in run.results.items()
                           if getattr(r, "pretrend_test", None) is not None},
    }
    if run.credibility is not None:
        summary["credibility"] = {
            "overall": run.credibility.overall, "sentence": run.credibility.overall_sentence,
            "checks": run.credibility.to_frame().to_dict(orient="records")}
    p = folder / "summary.json"
    atomic_write_text(p, json.dumps(jsonable(summary), indent=1, allow_nan=False))
    run.outputs["summary"] = p
    if write_report and study.report:
        try:
            from ..report.html import write_report as _write_html
        except ImportError:
            _write_html = None
        if _write_html is not None:
            p = _write_html(run, folder / "report.html")
            run.outputs["report"] = p


