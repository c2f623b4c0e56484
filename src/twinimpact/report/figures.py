"""Figures of a study run: built here (matplotlib, Agg backend), saved atomically or embedded
as base64 PNG in the HTML report. The runner and the report share these helpers."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .._io import atomic_path
from .plots import plot_event_study

__all__ = ["close_figure", "drawing_figure", "dynamic_results", "event_study_figure",
           "figure_png_base64", "save_figure"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def dynamic_results(results: Mapping[str, Any]) -> dict[str, Any]:
    """The results with event-time estimates (a non-missing ``rel_time`` in ``to_frame()``)."""
    out = {}
    for k, r in results.items():
        frame = r.to_frame()
        if "rel_time" in frame.columns and frame["rel_time"].notna().any():
            out[k] = r
    return out


def event_study_figure(results: Mapping[str, Any], *, alpha: float, ylabel: str) -> Any:
    """One event-study figure of the dynamic results (``None`` when there are none)."""
    dynamic = dynamic_results(results)
    if not dynamic:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    plot_event_study(dynamic, ax=ax, alpha=alpha, ylabel=ylabel)
    fig.tight_layout()
    return fig


def drawing_figure(draw: Callable[[Any], None],
                   size: tuple[float, float] | None = None) -> Any:
    """A figure drawn by ``draw(fig)`` (default wide: 11 x 4.5 inches)."""
    plt = _pyplot()
    fig = plt.figure(figsize=size or (11, 4.5))
    draw(fig)
    fig.tight_layout()
    return fig


def save_figure(fig: Any, path: str | Path, fmt: str, *, dpi: int = 150) -> Path:
    """Write ``fig`` to ``path`` in format ``fmt`` (atomically)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
    return path


def figure_png_base64(fig: Any, *, dpi: int) -> str:
    """``fig`` as a base64 PNG (for embedding in HTML); closes the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    close_figure(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def close_figure(fig: Any) -> None:
    """Release a figure made here."""
    _pyplot().close(fig)
