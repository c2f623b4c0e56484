"""Synthetic-control figures: trajectories with time weights (R ``synthdid_plot``), the
unit / time weights, and the two-panel case-study figure."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..errors import SpecificationError, format_message
from ..estimators.synthetic_did import METHOD_LABELS, SyntheticDIDResult

__all__ = ["plot_case_study", "plot_synthetic", "plot_weights"]


def plot_synthetic(result: SyntheticDIDResult, ax: Any = None, *, cohort: float | None = None,
                   treated_label: str = "treated", control_label: str = "synthetic control"
                   ) -> Any:
    """Treated vs synthetic trajectories with the time weights, as R ``synthdid_plot``.

    Draws the treated mean and the omega-weighted control trajectory, a vertical line at
    adoption, the lambda weights as a shaded area at the bottom, and the SDID diagram:
    the parallel (counterfactual) segment from the treated lambda-weighted pre-period
    average and an arrow from the counterfactual to the observed post-period average (the
    estimate). Returns the matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    if not isinstance(result, SyntheticDIDResult):
        raise SpecificationError(format_message(
            "plot_synthetic needs a synthetic_did result", seen=type(result).__name__))
    cf = result._cohort(cohort)
    tr = result.trajectories(cf.cohort)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    x = np.asarray(tr.index, dtype=float)
    T0 = cf.fit.T0
    ax.plot(x, tr["treated"], color="#b2182b", lw=1.6, label=treated_label)
    ax.plot(x, tr["synthetic"], color="#2166ac", lw=1.6, label=control_label)
    ax.axvline((x[T0 - 1] + x[T0]) / 2, color="black", alpha=0.4, lw=1)
    lam = cf.fit.lam
    lo = float(np.nanmin(tr[["treated", "synthetic"]].to_numpy()))
    hi = float(np.nanmax(tr[["treated", "synthetic"]].to_numpy()))
    height = (hi - lo) / 3 if hi > lo else 1.0
    bottom = lo - height
    if lam.any():
        ax.fill_between(x[:T0], bottom, bottom + height * lam / lam.max(), color="#2166ac",
                        alpha=0.35, step=None, label="time weights λ")
        pre_t = float(lam @ x[:T0])
        post_t = float(x[T0:].mean())
        tre_pre = float(lam @ tr["treated"].to_numpy()[:T0])
        con_pre = float(lam @ tr["synthetic"].to_numpy()[:T0])
        tre_post = float(tr["treated"].to_numpy()[T0:].mean())
        con_post = float(tr["synthetic"].to_numpy()[T0:].mean())
        cf_post = tre_pre + con_post - con_pre
        ax.plot([pre_t, post_t], [con_pre, con_post], color="#2166ac", lw=1, marker="o", ms=3)
        ax.plot([pre_t, post_t], [tre_pre, tre_post], color="#b2182b", lw=1, marker="o", ms=3)
        ax.plot([pre_t, post_t], [tre_pre, cf_post], color="black", lw=1, ls="--",
                label="counterfactual")
        ax.annotate("", xy=(post_t, tre_post), xytext=(post_t, cf_post),
                    arrowprops={"arrowstyle": "->", "color": "black"})
    else:
        post_t = float(x[T0:].mean())
        ax.annotate("", xy=(post_t, float(tr["treated"].to_numpy()[T0:].mean())),
                    xytext=(post_t, float(tr["synthetic"].to_numpy()[T0:].mean())),
                    arrowprops={"arrowstyle": "->", "color": "black"})
    est = float(cf.fit.tau)
    ax.set_title(f"{METHOD_LABELS[result.method]}: estimate {est:.3g}"
                 + (f" (cohort {cf.cohort})" if len(result.cohort_fits) > 1 else ""))
    ax.set_xlabel(str(result.spec.get("time", "time")))
    ax.set_ylabel(str(result.spec.get("outcome", "outcome")))
    ax.legend(loc="best", fontsize=8, frameon=False)
    return ax


def plot_weights(result: SyntheticDIDResult, ax: Any = None, *, cohort: float | None = None,
                 top: int | None = 15) -> Any:
    """Bar charts of the unit weights (largest ``top``) and the time weights.

    With ``ax=None`` makes a figure with two Axes and returns the array of Axes; with
    one ``ax`` draws the unit weights only and returns it.
    """
    import matplotlib.pyplot as plt

    if not isinstance(result, SyntheticDIDResult):
        raise SpecificationError(format_message(
            "plot_weights needs a synthetic_did result", seen=type(result).__name__))
    cf = result._cohort(cohort)
    omega = pd.Series(cf.fit.omega, index=result._control_units).sort_values(ascending=False)
    omega = omega[omega > 0]
    if top is not None:
        omega = omega.iloc[:top]
    if ax is None:
        _fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    else:
        axes = [ax]
    a0 = axes[0]
    a0.barh([str(u) for u in omega.index[::-1]], omega.to_numpy()[::-1], color="#2166ac")
    a0.set_xlabel("unit weight ω")
    a0.set_title("unit weights (non-zero" + (f", top {top})" if top else ")"))
    if len(axes) > 1:
        periods = list(result.outcome_matrix.columns[: cf.fit.T0])
        axes[1].bar([str(p) for p in periods], cf.fit.lam, color="#b2182b")
        axes[1].set_xlabel(str(result.spec.get("time", "time")))
        axes[1].set_title("time weights λ")
        axes[1].tick_params(axis="x", labelrotation=90)
        return axes
    return a0


def plot_case_study(case: Any, axes: Any = None) -> Any:
    """SDID and SC trajectory plots of a :class:`~twinimpact.CaseStudyResult` side by side;
    returns the Axes."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    plot_synthetic(case.sdid, ax=axes[0])
    plot_synthetic(case.sc, ax=axes[1])
    return axes
