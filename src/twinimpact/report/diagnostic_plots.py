"""Figures of the credibility diagnostics: Goodman-Bacon scatter, pre-trend power.

Each function takes the diagnostic's result object and returns a matplotlib Axes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError, format_message

__all__ = ["plot_bacon", "plot_pretrend_power"]

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


def plot_pretrend_power(result: Any, sigma: Any = None, *, rel_times: Any = None,
                        ref: float = -1, powers: tuple[float, ...] = (0.5, 0.8),
                        alpha: float = 0.05, ax: Any = None, title: str | None = None,
                        sign: float | None = None) -> Any:
    """Event study with the linear trends that the pre-test detects with the given
    probabilities (Roth 2022), drawn through the reference period.

    A reader sees at once whether a trend the pre-test would usually *miss* could produce
    the post-period estimates. Each line is ``delta_t = slope_p * (t - ref)`` with
    ``slope_p = ti.slope_for_power(..., target_power=p)``; solid over the pre-period (where
    the test looks), dotted after.

    Parameters
    ----------
    result : event-study result, or the coefficient vector ``betahat``
        With a vector pass ``sigma`` and ``rel_times`` (as :func:`ti.pretrend_power`).
    powers : target powers of the drawn trends (default 50% and 80%).
    sign : +1 or -1, optional
        Direction of the drawn trends; default the sign of the mean post-period estimate
        (the direction in which a trend would have to run to explain the estimates).

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import numpy as np, twinimpact as ti
    >>> ax = ti.plot_pretrend_power(np.array([0.01, -0.02, 0.1, 0.2]), np.eye(4) * 0.01,
    ...                             rel_times=[-3, -2, 0, 1])
    >>> len(ax.get_lines()) >= 4
    True
    """
    import matplotlib.pyplot as plt
    from scipy import stats

    from ..inference.pretrend_power import _resolve, slope_for_power

    beta, sig, rel, _ = _resolve(result, sigma, rel_times, need_beta=True)
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4.2))
    z = float(stats.norm.ppf(1 - alpha / 2))
    se = np.sqrt(np.clip(np.diag(sig), 0, None))
    x = np.append(rel, ref)
    y = np.append(beta, 0.0)
    e = np.append(se, 0.0)
    order = np.argsort(x)
    ax.errorbar(x[order], y[order], yerr=z * e[order], fmt="o", color="0.15", capsize=3,
                ms=4, label=f"Estimates, {1 - alpha:.0%} CI")
    if sign is None:
        post_mean = float(np.mean(beta[rel > ref])) if np.any(rel > ref) else 1.0
        sign = -1.0 if post_mean < 0 else 1.0
    pre_x = np.linspace(min(x.min(), ref), ref, 50)
    post_x = np.linspace(ref, max(x.max(), ref), 50)
    for i, p in enumerate(powers):
        s = np.sign(sign) * slope_for_power(sig, target_power=p, rel_times=rel, ref=ref,
                                            alpha=alpha)
        color = f"C{i + 1}"
        ax.plot(pre_x, s * (pre_x - ref), color=color, lw=1.8,
                label=f"Trend the pre-test detects {p:.0%} of the time (slope {s:.3g})")
        ax.plot(post_x, s * (post_x - ref), color=color, lw=1.2, ls=":")
    ax.axhline(0.0, color="0.6", lw=0.8, ls="--")
    ax.axvline(ref + 0.5, color="0.8", lw=0.8)
    ax.set_xlabel("Periods relative to treatment")
    ax.set_ylabel("Estimate")
    ax.set_title(title or "How large a pre-trend could the pre-test miss?")
    ax.legend(frameon=False, fontsize="small")
    return ax
