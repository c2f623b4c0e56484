"""Figures of the credibility diagnostics: Goodman-Bacon scatter, pre-trend power.

Each function takes the diagnostic's result object and returns a matplotlib Axes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError, format_message

__all__ = ["plot_bacon"]

_TYPE_STYLE = {
    "treated_vs_never": ("o", "C0", "Treated vs never treated"),
    "earlier_vs_later": ("^", "C2", "Earlier vs later treated (later not yet treated)"),
    "later_vs_earlier": ("x", "C3", "Later vs earlier treated (control already treated)"),
}


def plot_bacon(result: Any, ax: Any = None, *, title: str | None = None) -> Any:
    """Goodman-Bacon scatter: each 2x2 DiD estimate against its weight, by comparison type.

    The horizontal line is the TWFE coefficient (the weighted average of the points).

    Parameters
    ----------
    result : BaconDecomposition
        From :func:`twinimpact.bacon_decomposition`.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import numpy as np, pandas as pd, twinimpact as ti
    >>> d = pd.DataFrame({"id": np.repeat(np.arange(30), 8), "t": np.tile(np.arange(8), 30)})
    >>> d["g"] = np.select([d["id"] < 10, d["id"] < 20], [3, 6], np.nan)
    >>> d["y"] = np.cos(d["id"] * d["t"]) + (d["t"] >= d["g"])
    >>> ax = ti.plot_bacon(ti.bacon_decomposition(d, outcome="y", unit="id", time="t", cohort="g"))
    >>> ax.get_xlabel()
    'Weight'
    """
    import matplotlib.pyplot as plt

    comp = getattr(result, "comparisons", None)
    if comp is None or not {"weight", "estimate", "type"} <= set(comp.columns):
        raise InputError(format_message(
            "plot_bacon needs the result of ti.bacon_decomposition", seen=type(result).__name__,
            fix="pass ti.bacon_decomposition(data, outcome=..., unit=..., time=..., cohort=...)"))
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4.2))
    for kind, (marker, color, label) in _TYPE_STYLE.items():
        sub = comp[comp["type"] == kind]
        if len(sub):
            share = sub["weight"].sum()
            ax.scatter(sub["weight"], sub["estimate"], marker=marker, color=color, s=36,
                       label=f"{label}: {share:.0%} of weight")
    ax.axhline(float(result.twfe), color="0.2", lw=1.0,
               label=f"TWFE = {result.twfe:.4g} (weighted average)")
    ax.axhline(0.0, color="0.6", lw=0.8, ls="--")
    ax.set_xlabel("Weight")
    ax.set_ylabel("2x2 DiD estimate")
    ax.set_xlim(left=0, right=max(float(np.nanmax(comp["weight"])) * 1.08, 1e-3))
    ax.set_title(title or "Which comparisons the two-way fixed-effects estimate averages")
    ax.legend(frameon=False, fontsize="small")
    return ax
