"""Study kind ``"gravity"``: PPML structural gravity with twinning intensity
(:func:`twinimpact.gravity_study`), one specification per intensity measure."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import InputError, TwinImpactError, format_message
from ...etl import read_table
from ..base import StudyKind, StudyRun, caught, file_input, read_twinnings_cfg, step, write_data
from ..gravity import BOOK_YEARS, gravity_study

if TYPE_CHECKING:
    from ..spec import Study

__all__ = ["KIND"]


def run_gravity(study: Study, processed: Path) -> StudyRun:
    g = study.gravity
    messages: list[str] = []
    with step("Reading twinnings and the gravity panel", 1, 4):
        twin = caught(lambda: read_twinnings_cfg(study), "twinnings", messages)
        panel_path = study.resolve(study.trade["path"])
        text_opts = {k: v for k, v in study.trade.get("options", {}).items()
                      if k in ("sep", "encoding")}
        gpanel = read_table(panel_path, what="gravity panel", **text_opts)
    years = g.get("years", list(BOOK_YEARS))
    intensities = g.get("intensity", "n_twinnings")
    intensities = [intensities] if isinstance(intensities, str) else list(intensities)
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    sentences: list[str] = []
    data = None
    dropped_tw: dict[str, int] = {}
    with step(f"Estimating PPML gravity ({len(intensities)} specifications)", 2, 4):
        for inten in intensities:
            label = f"PPML gravity ({INTENSITY_WORDS.get(inten, inten)})"
            try:
                gs = caught(lambda inten=inten: gravity_study(
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
    with step("Writing the estimation data", 3, 4):
        manifest = {
            "study": {"name": study.name, "file": str(study.path or ""), "kind": "gravity"},
            "inputs": {"gravity_panel": {**file_input(panel_path), "rows": len(gpanel)},
                       "twinnings": {**file_input(study.resolve(study.twinnings["path"])),
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
        panel, path = write_data(data, manifest, processed, "gravity_data.parquet")
    return StudyRun(study=study, panel=panel, analysis_frame=data, results=results,
                    failures=failures, outputs={"panel": Path(path)},
                    diagnostics={"sentences": sentences}, warnings=messages)




#: the intensity measures in words (result labels are read by policy staff)
INTENSITY_WORDS = {"n_twinnings": "number of twinnings",
                   "log1p_twinnings": "log of 1 + number of twinnings"}


KIND = StudyKind(name="gravity", run=run_gravity, n_steps=4, paths=("twinnings", "trade"),
                 description="PPML structural gravity with twinning intensity")
