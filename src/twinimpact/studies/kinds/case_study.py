"""Study kind ``"case_study"``: one or two treated cities against donor cities (SDID, SC and
DID with placebo inference, :func:`twinimpact.case_study`), on user data or a clearly
labelled simulated series."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ...errors import InputError, SpecificationError, format_message
from ...etl import read_table
from ..base import StudyKind, StudyRun, caught, file_input, read_twinnings_cfg, step, write_data
from ..casestudy import SIMULATED_NOTE, case_study, simulated_city_exports

if TYPE_CHECKING:
    from ..spec import Study

__all__ = ["KIND"]


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


def run_case_study(study: Study, processed: Path) -> StudyRun:
    case = study.case
    messages: list[str] = []
    with step("Reading twinning dates and the city series", 1, 4):
        twin = caught(lambda: read_twinnings_cfg(study), "twinnings", messages)
        dates = _case_dates(study, twin)
        if case.get("series"):
            spath = study.resolve(case["series"])
            series = read_table(spath, what="[case] series")
            source = file_input(spath)
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
    colmap = {"unit": cols.get("city", "city"), "partner_col": cols.get("partner", "partner"),
              "time": cols.get("year", "year"), "outcome": cols.get("exports", "exports")}
    with step("Estimating SDID, SC and DID with placebo inference", 2, 4):
        cs = caught(lambda: case_study(
            series, treated_city=list(dates), treated_from=dates, partner=case["partner"],
            transform=case.get("transform", "log"), se=case.get("se", "placebo"),
            n_reps=int(case.get("n_reps", 200)), seed=case.get("seed"), alpha=study.alpha,
            honest=case.get("honest", False), honest_options=case.get("honest_options"),
            **colmap), "case study", messages)
    labels = {"sdid": "Synthetic DiD", "sc": "Synthetic control", "did": "DiD"}
    results = {labels[k]: r for k, r in cs.results.items()}
    with step("Writing the analysis data", 3, 4):
        manifest = {"study": {"name": study.name, "file": str(study.path or ""),
                              "kind": "case_study", "simulated": study.simulated},
                    "inputs": {"series": {**source, "rows": len(series)},
                               "twinnings": {**file_input(study.resolve(
                                   study.twinnings["path"])), "rows": len(twin)}},
                    "parameters": {"treated_from": dates, "partner": case["partner"]},
                    "steps": {"series": {"n_in": len(series), "n_out": len(cs.panel),
                                         "dropped": {"other partners": int(
                                             len(series) - len(cs.panel))}}}}
        frame = cs.panel
        if source.get("kind") == "simulated":
            frame = frame.assign(note=SIMULATED_NOTE)
        panel, path = write_data(frame, manifest, processed, "case_panel.parquet")
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




def check_case(doc: dict[str, Any]) -> None:
    """A case study names its treated city (or cities) and the partner country."""
    case = doc.get("case", {})
    if not case.get("treated_city") or not case.get("partner"):
        raise SpecificationError(format_message(
            "a case study needs [case] treated_city and partner",
            where="study key [case.treated_city]",
            seen={k: case.get(k) for k in ("treated_city", "partner")},
            fix='treated_city = ["Qingdao"], partner = "GBR"'))


KIND = StudyKind(name="case_study", run=run_case_study, n_steps=4, paths=("twinnings",),
                 description="one or two treated cities vs donor cities (SDID, SC, DID)",
                 check=check_case)
