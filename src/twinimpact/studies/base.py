"""What every study kind shares: the run record (:class:`StudyRun`), the kind record
(:class:`StudyKind`), step logging, warning capture and input provenance."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import TwinImpactWarning
from ..etl import read_twinnings
from ..panel import Panel
from ..provenance import file_sha256

if TYPE_CHECKING:
    from .spec import Study

__all__ = ["StudyKind", "StudyRun", "caught", "file_input", "read_twinnings_cfg",
           "step", "write_data"]

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
    #: "Can we trust this?" checks (twinimpact.diagnostics.credibility.Credibility)
    credibility: Any = None


@dataclass(frozen=True)
class StudyKind:
    """One kind of study (``[study] kind = ...``): how it is validated and run.

    ``run(study, processed)`` builds the analysis data under ``processed`` and estimates;
    it returns a :class:`StudyRun` whose outputs the runner then writes. ``n_steps`` counts
    the logged steps including the final "writing outputs" step. ``paths`` lists the sections
    that must name a ``path``; ``check(doc)`` validates the kind's own sections and raises
    :class:`~twinimpact.errors.SpecificationError`.
    """

    name: str
    run: Callable[[Study, Path], StudyRun]
    n_steps: int
    paths: tuple[str, ...]
    description: str
    check: Callable[[dict[str, Any]], None] | None = None


@contextlib.contextmanager
def step(label: str, i: int, n: int) -> Iterator[None]:
    log.info("[%d/%d] %s ...", i, n, label)
    t0 = time.perf_counter()
    yield
    log.info("[%d/%d] %s done (%.1f s)", i, n, label, time.perf_counter() - t0)


def caught(fn: Any, label: str, messages: list[str]) -> Any:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TwinImpactWarning)
        out = fn()
    for w in caught:
        if issubclass(w.category, TwinImpactWarning):
            messages.append(f"{label}: {w.message}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return out


def file_input(path: Path) -> dict[str, Any]:
    return {"kind": "file", "path": str(path), "sha256": file_sha256(path)}


def read_twinnings_cfg(study: Study) -> pd.DataFrame:
    tw = study.twinnings
    return read_twinnings(study.resolve(tw["path"]), **tw.get("columns", {}),
                          **tw.get("options", {}))


def write_data(frame: pd.DataFrame, manifest: dict[str, Any], folder: Path,
                name: str) -> tuple[Any, Path]:
    """Write ``frame`` + ``manifest.json`` atomically; return a Panel-like holder and path."""
    panel = Panel(frame, manifest)
    return panel, panel.to_parquet(folder / name)
