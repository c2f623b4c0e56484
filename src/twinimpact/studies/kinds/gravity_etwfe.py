"""Study kind ``"gravity_etwfe"``: staggered twinning in structural gravity -- Poisson
ETWFE with exporter-year, importer-year and pair fixed effects, and log-linear ETWFE,
Callaway-Sant'Anna and imputation beside it (:mod:`twinimpact.studies.gravity_etwfe`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import InputError, SpecificationError, format_message
from ..base import StudyKind, StudyRun, caught, file_input, read_twinnings_cfg, step, write_data
from ..gravity_etwfe import (
    GRAVITY_FE,
    design_sentence,
    estimate_gravity_etwfe,
    first_twinning_year,
    gravity_etwfe_panel,
    load_flows,
)

if TYPE_CHECKING:
    from ..spec import Study

__all__ = ["KIND"]


def run_gravity_etwfe(study: Study, processed: Path) -> StudyRun:
    """Study kind ``"gravity_etwfe"``: read the flows and the registry, build the pair
    panel, run :func:`estimate_gravity_etwfe`, write the estimation data."""
    cfg = study.raw.get("gravity_etwfe", {})
    messages: list[str] = []
    with step("Reading twinnings and trade flows", 1, 4):
        twin = caught(lambda: read_twinnings_cfg(study), "twinnings", messages)
        flows, info = caught(lambda: load_flows(study), "trade", messages)
    years = tuple(cfg.get("years", (int(flows["year"].min()), int(flows["year"].max()))))
    home = cfg.get("home", "DEU")
    first = first_twinning_year(twin, relations=study.twinnings.get("relations",
                                                                    ("twinning",)),
                                country_map=cfg.get("country_map"))
    panel = gravity_etwfe_panel(flows, first, home=home, years=years)
    unit_label = cfg.get("unit_label", info.get("unit", ""))

    def run(label: str, fn: Any) -> Any:
        return caught(fn, label, messages)

    with step("Estimating Poisson ETWFE with gravity fixed effects (and comparisons)",
               2, 4):
        est = estimate_gravity_etwfe(panel, subject=study.headline_subject,
                                     unit_label=unit_label, alpha=study.alpha,
                                     comparisons=bool(cfg.get("comparisons", True)),
                                     placebo=bool(cfg.get("placebo", True)), run=run)
    if not est.results:
        raise InputError(format_message("no gravity ETWFE specification could be estimated",
                                        seen=est.failures, fix="see the messages above"))
    treated = panel[panel["treated_pair"]]
    cohorts = treated.groupby("cohort")["pair"].nunique()
    in_window = cohorts[(cohorts.index > years[0]) & (cohorts.index <= years[1])]
    notes = list(est.sentences)
    notes.insert(0, design_sentence(panel, home, years, in_window))
    with step("Writing the estimation data", 3, 4):
        manifest = {
            "study": {"name": study.name, "file": str(study.path or ""),
                      "kind": "gravity_etwfe"},
            "inputs": {"trade_flows": {"kind": "file", "path": info["path"],
                                       "sha256": info["sha256"], "rows": info["rows"],
                                       "unit": info.get("unit", "")},
                       "twinnings": {**file_input(study.resolve(study.twinnings["path"])),
                                     "rows": len(twin)}},
            "parameters": {"years": list(years), "home": home,
                           "fixed_effects": list(GRAVITY_FE), "cluster": "pair"},
            "steps": {"flows": {"n_in": info["rows"], "n_out": len(panel),
                                "dropped": {**info["dropped"],
                                            **panel.attrs.get("dropped", {})}}},
        }
        out_panel, path = write_data(panel, manifest, processed, "gravity_pairs.parquet")
    diag = {"sentences": notes,
            "cohorts_in_window": {str(int(k)): int(v) for k, v in in_window.items()},
            "poisson_dropped_rows": {k: dict(v.diagnostics.get("dropped_rows", {}))
                                     for k, v in est.poisson.items()}}
    return StudyRun(study=study, panel=out_panel, analysis_frame=panel,
                    results=est.results, failures=est.failures,
                    outputs={"panel": Path(path)}, diagnostics=diag, warnings=messages)



def check(doc: dict[str, Any]) -> None:
    """``[gravity_etwfe]``: ``source`` one of tradhist / gravity_panel, ``years`` a pair."""
    cfg = doc.get("gravity_etwfe", {})
    if cfg.get("source", "tradhist") not in ("tradhist", "gravity_panel"):
        raise SpecificationError(format_message(
            "gravity_etwfe.source: expected one of 'tradhist', 'gravity_panel'",
            where="study key [gravity_etwfe.source]", seen=cfg.get("source"),
            fix='source = "tradhist"'))
    years = cfg.get("years")
    if years is not None and (not isinstance(years, list) or len(years) != 2
                              or not all(isinstance(y, int) for y in years)
                              or years[0] >= years[1]):
        raise SpecificationError(format_message(
            "gravity_etwfe.years must be [first, last] years", where="study key "
            "[gravity_etwfe.years]", seen=years, fix="years = [1991, 2014]"))


KIND = StudyKind(name="gravity_etwfe", run=run_gravity_etwfe, n_steps=4,
                 paths=("twinnings", "trade"), check=check,
                 description="staggered twinning in gravity: Poisson ETWFE with exporter-year, "
                             "importer-year and pair fixed effects")
