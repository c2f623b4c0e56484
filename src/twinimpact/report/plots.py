"""Event-study figures and the HonestDiD sensitivity plot (matplotlib). Consumes only the
tidy frame of the results protocol (or the frame of :func:`twinimpact.honest_did`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError, SpecificationError, format_message
from ..results import is_honest_frame, result_label, tidy
from .tables import _named_results

__all__ = ["plot_event_study", "plot_honest_did"]


def _kind(r: Any) -> str:
    if is_honest_frame(r):
        return "HonestDiD frame"
    return f"{getattr(r, 'estimator', type(r).__name__)} result"


def _alternative(r: Any) -> str:
    """Where to look instead, by kind of object."""
    if is_honest_frame(r):
        return "plot robust confidence sets with ti.plot_honest_did(frame)"
    name = type(r).__name__
    if name == "CaseStudyResult":
        return "plot the trajectories with result.plot() (or ti.plot_synthetic(result.sdid))"
    if name == "SyntheticDIDResult":
        return "plot the trajectories with ti.plot_synthetic(result)"
    if name in ("WildBootstrapResult", "RandomizationResult", "GravityStudy"):
        return "it holds one effect, not an event study: report it with ti.table(...)"
    return ("use ti.event_study(...), .aggregate('dynamic') for Callaway-Sant'Anna, or "
            "imputation/did2s with horizons/event_study=True")


def _has_event_time(r: Any) -> bool:
    try:
        f = tidy(r)
    except (SpecificationError, KeyError, TypeError, ValueError):
        return False
    return "rel_time" in f.columns and bool(f["rel_time"].notna().any())


def _event_time_items(results: Any) -> dict[str, Any] | list[Any]:
    """The objects to draw: a container without a tidy frame of its own (a study run,
    ``.results`` = label -> result) stands for its components that have event-time
    estimates; one with none is refused, naming it."""
    if isinstance(results, Mapping):
        pairs = [(str(k), v) for k, v in results.items()]
    elif isinstance(results, Sequence) and not isinstance(results, str | bytes):
        pairs = [(result_label(r, f"model {i + 1}"), r) for i, r in enumerate(results)]
    else:
        pairs = [(result_label(results, "model 1"), results)]
    if not any(_is_container(r) for _, r in pairs):
        return results if isinstance(results, Mapping | Sequence) and not isinstance(
            results, str) else [results]
    out: dict[str, Any] = {}
    for label, r in pairs:
        if not _is_container(r):
            out[label] = r
            continue
        keep = {f"{label}: {k}": v for k, v in r.results.items() if _has_event_time(v)}
        if not keep:
            raise SpecificationError(format_message(
                "plot_event_study needs event-time estimates (rows with rel_time); none of "
                f"the results in this {type(r).__name__} has them",
                where=f"entry {label!r} ({type(r).__name__})", seen=list(r.results),
                fix="add an event-study estimator to the study, or plot a result directly"))
        out.update(keep)
    return out


def _is_container(r: Any) -> bool:
    comps = getattr(r, "results", None)
    return (isinstance(comps, Mapping) and bool(comps) and not isinstance(r, pd.DataFrame)
            and not callable(getattr(r, "to_frame", None)))


def plot_event_study(results: Any, ax: Any = None, *, alpha: float | None = None,
                     title: str | None = None, xlabel: str = "Years relative to first twinning",
                     ylabel: str | None = None, dodge: float = 0.12) -> Any:
    """Plot event-time estimates with confidence intervals; several results are overlaid.

    Parameters
    ----------
    results : result, list of results or dict ``{label: result}``
        Results whose tidy frame has ``rel_time`` rows (TWFE event study, Callaway-Sant'Anna
        dynamic aggregation, Sun-Abraham, imputation, did2s, Poisson event study, pre-trend
        power, ...). A study run (``ti.run_study``) stands for its event-study results.
    ax : matplotlib Axes, optional
        Draw into this Axes (default: a new figure).
    alpha : float, optional
        Interval level (uniform bands where the result provides them); default 0.05.
    dodge : float
        Horizontal offset between overlaid methods.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import twinimpact as ti
    >>> from twinimpact.estimators.twfe import _example_panel
    >>> r = ti.event_study(_example_panel(), outcome="y", unit="id", time="year", cohort="g")
    >>> ax = ti.plot_event_study(r)
    >>> ax.get_xlabel()
    'Years relative to first twinning'
    """
    import matplotlib.pyplot as plt

    items = _named_results(_event_time_items(results), expand=False)
    n = len(items)
    plotted = 0
    frames = []
    for label, r in items:
        f = tidy(r, alpha)
        if "rel_time" not in f.columns or f["rel_time"].notna().sum() == 0:
            raise SpecificationError(format_message(
                "plot_event_study needs event-time estimates (rows with rel_time); this "
                f"{_kind(r)} has none",
                where=f"result {label!r} ({type(r).__name__})",
                fix=_alternative(r)))
        frames.append(f)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for i, ((label, r), f) in enumerate(zip(items, frames, strict=True)):
        f = f[f["rel_time"].notna()].sort_values("rel_time")
        x = f["rel_time"].to_numpy(dtype=float) + (i - (n - 1) / 2) * dodge
        y = f["estimate"].to_numpy(dtype=float)
        lo = f["ci_lower"].to_numpy(dtype=float)
        hi = f["ci_upper"].to_numpy(dtype=float)
        yerr = np.vstack([y - lo, hi - y])
        cont = ax.errorbar(x, y, yerr=yerr, fmt="o", ms=4, capsize=2, lw=1,
                           label=f"{label}")
        spec = getattr(r, "spec", None)
        refs = spec.get("ref") if isinstance(spec, Mapping) else None
        if refs is not None and np.size(refs):
            ax.plot(np.atleast_1d(np.asarray(refs, dtype=float)) + (i - (n - 1) / 2) * dodge,
                    np.zeros(np.size(refs)), marker="o", ms=4, ls="none", mfc="white",
                    color=cont[0].get_color())
        plotted += 1
    ax.axhline(0, color="0.4", lw=0.8)
    ax.axvline(-0.5, color="0.6", lw=0.8, ls="--")
    ax.set_xlabel(xlabel)
    if ylabel is None:
        outcomes = {r.spec.get("outcome") for _, r in items
                    if isinstance(getattr(r, "spec", None), Mapping)} - {None}
        ylabel = "Effect on " + ", ".join(sorted(outcomes)) if outcomes else "Effect"
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if plotted > 1 or title is None:
        ax.legend(frameon=False, fontsize=8)
    level = 100 * (1 - (0.05 if alpha is None else alpha))
    ax.annotate(f"{level:g}% confidence intervals; hollow marker = reference period",
                xy=(0, -0.18), xycoords="axes fraction", fontsize=7, color="0.35")
    return ax


def plot_honest_did(frame: pd.DataFrame, ax: Any = None, *,
                    breakdown: float | None = None) -> Any:
    """Sensitivity plot: robust intervals against ``m``, the original interval at the left.

    Parameters
    ----------
    frame : DataFrame from :func:`twinimpact.honest_did`.
    ax : matplotlib Axes, optional
    breakdown : float, optional
        The breakdown value (:func:`twinimpact.inference.honest_did.breakdown_value`),
        marked by a dotted vertical line: the largest ``m`` at which the robust interval
        still excludes zero.

    Returns
    -------
    matplotlib Axes
    """
    import matplotlib.pyplot as plt

    need = {"m", "lb", "ub", "method"}
    if not isinstance(frame, pd.DataFrame) or not need <= set(frame.columns):
        raise InputError(format_message("plot_honest_did needs the frame of honest_did",
                                        seen=list(getattr(frame, "columns", []))[:8],
                                        fix="pass ti.honest_did(...)"))
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    robust = frame[frame["method"] != "Original"]
    orig = frame[frame["method"] == "Original"]
    ms = robust["m"].to_numpy(dtype=float)
    step = float(np.min(np.diff(np.unique(ms)))) if len(np.unique(ms)) > 1 else 1.0
    x0 = (ms.min() if len(ms) else 0.0) - step
    if len(orig):
        lo, hi = float(orig["lb"].iloc[0]), float(orig["ub"].iloc[0])
        ax.errorbar([x0], [(lo + hi) / 2], yerr=[[(hi - lo) / 2]], fmt="none", capsize=4,
                    color="0.3", label="Original")
    if len(robust):
        lo = robust["lb"].to_numpy(dtype=float)
        hi = robust["ub"].to_numpy(dtype=float)
        ax.errorbar(ms, (lo + hi) / 2, yerr=[(hi - lo) / 2, (hi - lo) / 2], fmt="none",
                    capsize=4, color="C0", label=str(robust["method"].iloc[0]))
    ax.axhline(0.0, color="0.6", lw=0.8, ls="--")
    if breakdown is not None and np.isfinite(breakdown):
        ax.axvline(float(breakdown), color="C3", lw=1.2, ls=":",
                   label=f"breakdown value {breakdown:.3g}")
    restriction = frame.attrs.get("restriction", "")
    ax.set_xlabel("Mbar" if restriction == "relative_magnitudes" else "M")
    ax.set_ylabel("confidence set for theta")
    ax.legend(frameon=False)
    return ax
