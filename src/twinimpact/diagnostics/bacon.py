"""Goodman-Bacon decomposition of the static two-way fixed-effects DiD estimate.

Goodman-Bacon, A. (2021), "Difference-in-differences with variation in treatment timing",
*Journal of Econometrics* 225(2), 254-277, Theorem 1.

In a balanced panel with staggered adoption the TWFE coefficient of ``D_it = 1[t >= g_i]``
is a weighted average of every two-group, two-window ("2x2") DiD that can be formed from
the timing groups:

* ``treated_vs_never`` -- group ``k`` against the never-treated units, all periods;
* ``earlier_vs_later`` -- an earlier group ``k`` against a later group ``l`` in the
  periods before ``l`` is treated (``l`` is a valid, not-yet-treated control);
* ``later_vs_earlier`` -- a later group ``l`` against an earlier group ``k`` in the
  periods from ``k``'s adoption on: the control group is already treated, so a treatment
  effect that changes over time biases this comparison (the "forbidden" comparison).

Each 2x2 estimate is the DiD of group-by-period means in its window (equal to the TWFE
fit on that subsample). Its weight is proportional to
``N_a * N_b * T_s**2 * D (1 - D)``: the numbers of units of the two groups, the window
length and the share ``D`` of the window in which the switching group is treated -- the
variance of the treatment dummy in that 2x2 (Theorem 1 with sample shares; identical to
R ``bacondecomp::bacon``'s ``calculate_weights`` computed on the subsample). Weights are
scaled to sum to one, and ``sum(weight * estimate)`` equals the TWFE coefficient.

Conventions (those of R ``bacondecomp`` 0.1.x, stated here because they decide numbers):

* Units treated in the first observed period ("always treated", cohort at or before the
  first period) are never a treated group; they are a control group for every later group
  over the whole window. R labels these rows ``"Later vs Always Treated"``; their
  ``type`` here is ``"later_vs_earlier"`` (the control is already treated) with
  ``control == "always"``, and ``r_type`` keeps R's label.
* A cohort between observed periods is treated from the first observed period at or
  after it (the timing group is the first period in which ``D == 1``, as in R, which
  reads the 0/1 treatment column).
* The panel must be balanced: with unbalanced panels the weights of Theorem 1 do not
  reproduce the TWFE coefficient (R does not check and silently returns weights that do
  not add up); here an unbalanced panel is an :class:`~twinimpact.errors.InputError`.
* Without covariates only (R's controlled decomposition is not implemented).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from ..core.validation import prepare_panel
from ..errors import InputError, format_message

__all__ = ["BACON_TYPES", "BaconDecomposition", "bacon_decomposition"]

BACON_TYPES = ("earlier_vs_later", "later_vs_earlier", "treated_vs_never")
_R_TYPES = {"treated_vs_never": "Treated vs Untreated",
            "earlier_vs_later": "Earlier vs Later Treated",
            "later_vs_earlier": "Later vs Earlier Treated",
            "later_vs_always": "Later vs Always Treated"}
NEVER = "never"
ALWAYS = "always"


@dataclass(frozen=True, eq=False)
class BaconDecomposition:
    """Result of :func:`bacon_decomposition` (immutable; frames are copies on access).

    Attributes
    ----------
    twfe : float
        The TWFE coefficient decomposed (``ti.twfe(..., cohort=...)``'s ``ATT``).
    comparisons : DataFrame
        One row per 2x2 comparison: ``treated`` (timing group, first treated period),
        ``control`` (timing group, ``"never"`` or ``"always"``), ``type``, ``estimate``,
        ``weight``, ``window_start``, ``window_end`` (periods used), ``n_treated``,
        ``n_control`` (units), ``r_type`` (R bacondecomp's label).
    by_type : DataFrame
        Indexed by ``type`` (all three of :data:`BACON_TYPES`): ``weight`` (sum) and
        ``estimate`` (weight-averaged 2x2 estimate; NaN for a type with no comparison,
        whose weight is 0), ``n_comparisons``.
    nobs : int
        Rows used.
    """

    twfe: float
    _comparisons: pd.DataFrame = field(repr=False)
    _by_type: pd.DataFrame = field(repr=False)
    nobs: int = 0
    spec: Any = field(default_factory=dict, repr=False)
    diagnostics: Any = field(default_factory=dict, repr=False)
    estimator: str = "bacon_decomposition"

    def __post_init__(self) -> None:
        object.__setattr__(self, "spec", MappingProxyType(dict(self.spec)))
        object.__setattr__(self, "diagnostics", MappingProxyType(dict(self.diagnostics)))

    @property
    def comparisons(self) -> pd.DataFrame:
        return self._comparisons.copy()

    @property
    def by_type(self) -> pd.DataFrame:
        return self._by_type.copy()

    @property
    def forbidden_share(self) -> float:
        """Weight of the comparisons whose control group is already treated
        (``later_vs_earlier``, including always-treated controls)."""
        return float(self._by_type.loc["later_vs_earlier", "weight"])

    def to_frame(self, alpha: float = 0.05) -> pd.DataFrame:
        """Tidy frame: one row per comparison type (``term`` = the type) with its weight,
        then ``term == "TWFE"``. 2x2 estimates carry no standard errors (NaN): the
        decomposition is descriptive."""
        bt = self._by_type
        rows = [{"term": t, "estimate": bt.loc[t, "estimate"], "weight": bt.loc[t, "weight"]}
                for t in BACON_TYPES]
        rows.append({"term": "TWFE", "estimate": self.twfe, "weight": 1.0})
        out = pd.DataFrame(rows)
        out.insert(0, "estimator", self.estimator)
        for c in ("std_error", "statistic", "p_value", "ci_lower", "ci_upper"):
            out[c] = np.nan
        out["ci_kind"] = "none"
        return out[["estimator", "term", "estimate", "std_error", "statistic", "p_value",
                    "ci_lower", "ci_upper", "ci_kind", "weight"]]

    tidy = to_frame

    def summary(self) -> str:
        bt = self._by_type
        lines = [f"twinimpact · Goodman-Bacon decomposition of TWFE = {self.twfe:.6g}",
                 f"{len(self._comparisons)} 2x2 comparisons; observations: {self.nobs:,}"]
        with pd.option_context("display.float_format", lambda v: f"{v:.5g}"):
            lines.append(bt.to_string())
        lines.append(f"Share of weight on already-treated controls (later vs earlier): "
                     f"{self.forbidden_share:.1%}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _did(ybar: np.ndarray, a: int, b: int, window: np.ndarray, post: np.ndarray) -> float:
    """DiD of group-by-period means: group ``a`` minus ``b``, post minus pre in ``window``."""
    pre = window & ~post
    pw = window & post
    da = ybar[a, pw].mean() - ybar[a, pre].mean()
    db = ybar[b, pw].mean() - ybar[b, pre].mean()
    return float(da - db)


def bacon_decomposition(data: pd.DataFrame, *, outcome: str, unit: str, time: str,
                        cohort: str) -> BaconDecomposition:
    """Goodman-Bacon (2021) decomposition of the static TWFE DiD estimate.

    Parameters
    ----------
    data : DataFrame
        Balanced long panel, one row per unit x period.
    outcome, unit, time : str
        Column names (R ``bacon(outcome ~ treated, id_var = unit, time_var = time)``).
    cohort : str
        First treated period; never treated = NaN, 0 or a value after the last period.
        R ``bacondecomp`` takes the 0/1 treatment column instead; ``D = 1[time >= cohort]``.

    Returns
    -------
    BaconDecomposition
        ``twfe``, ``comparisons``, ``by_type`` (see the class); ``comparisons.weight`` sums
        to 1 and ``(weight * estimate).sum() == twfe``.

    Raises
    ------
    InputError
        Unbalanced panel; fewer than two timing groups; no unit switching into treatment
        within the window.

    Examples
    --------
    >>> import numpy as np, pandas as pd, twinimpact as ti
    >>> d = pd.DataFrame({"id": np.repeat(np.arange(30), 8), "t": np.tile(np.arange(8), 30)})
    >>> d["g"] = np.select([d["id"] < 10, d["id"] < 20], [3, 6], np.nan)
    >>> d["y"] = np.sin(d["id"] + d["t"]) + np.where(d["t"] >= d["g"], d["t"] - d["g"] + 1, 0)
    >>> b = ti.bacon_decomposition(d, outcome="y", unit="id", time="t", cohort="g")
    >>> bool(abs((b.comparisons.weight * b.comparisons.estimate).sum() - b.twfe) < 1e-12)
    True
    >>> list(b.by_type.index)
    ['earlier_vs_later', 'later_vs_earlier', 'treated_vs_never']
    """
    pdata = prepare_panel(data, outcome=outcome, unit=unit, time=time, cohort=cohort,
                          estimator="bacon_decomposition")
    f = pdata.frame
    u_codes, t_codes = pdata.unit_codes, pdata.time_codes
    n_units, n_periods = int(u_codes.max()) + 1, int(t_codes.max()) + 1
    if len(f) != n_units * n_periods:
        counts = np.bincount(u_codes, minlength=n_units)
        short = np.flatnonzero(counts < n_periods)
        example = f["unit"].to_numpy()[np.flatnonzero(u_codes == short[0])[0]]
        raise InputError(format_message(
            f"bacon_decomposition needs a balanced panel: {len(short)} of {n_units} units "
            f"are not observed in all {n_periods} periods"
            + (f" ({sum(pdata.dropped.values())} row(s) were dropped for missing values)"
               if pdata.dropped else ""),
            where=f"{unit} = {example!r} ({int(counts[short[0]])} periods)",
            seen={"rows": len(f), "units x periods": n_units * n_periods},
            fix="restrict to a balanced panel (units observed in every period) or to a "
                "window where they are; Goodman-Bacon's Theorem 1 does not hold otherwise "
                "(R bacondecomp does not check and returns weights that do not reproduce "
                "the TWFE coefficient)"))
    periods = np.sort(f["time"].unique())
    t_min = periods[0]
    g = f["cohort"].to_numpy()
    # timing group: first observed period with D == 1 (NaN: never; t_min: always)
    gi = np.full(n_units, np.nan)
    gi[u_codes] = g
    first = np.full(n_units, np.inf)
    has = np.isfinite(gi)
    idx = np.searchsorted(periods, gi[has], side="left")
    first[has] = np.where(idx < n_periods, periods[np.minimum(idx, n_periods - 1)], np.inf)
    # Y-bar[group, period]
    groups = np.unique(first)
    gcode = np.searchsorted(groups, first)
    ucount = np.bincount(gcode, minlength=len(groups)).astype(float)
    y = f["y"].to_numpy()
    tcode = np.searchsorted(periods, f["time"].to_numpy())
    cell = gcode[u_codes] * n_periods + tcode
    ybar = (np.bincount(cell, weights=y, minlength=len(groups) * n_periods)
            / np.repeat(ucount, n_periods)).reshape(len(groups), n_periods)

    def label(v: float) -> Any:
        if np.isinf(v):
            return NEVER
        if v == t_min:
            return ALWAYS
        return int(v) if float(v).is_integer() else float(v)

    timing = [i for i, v in enumerate(groups) if np.isfinite(v) and v != t_min]
    if not timing:
        raise InputError(format_message(
            "bacon_decomposition: no unit switches into treatment inside the panel window",
            seen={"timing groups": [label(v) for v in groups]},
            fix="check the cohort column and the periods; a unit treated from the first "
                "period on is always treated and cannot be a treated group"))
    if len(groups) < 2:
        raise InputError(format_message(
            "bacon_decomposition needs at least two timing groups (e.g. a cohort and the "
            "never treated)", seen={"timing groups": [label(v) for v in groups]},
            fix="add never-treated units or units treated at another time"))
    rows = []
    for k in timing:
        gk = groups[k]
        for j, gl in enumerate(groups):
            if j == k:
                continue
            if np.isinf(gl):
                kind, window = "treated_vs_never", np.ones(n_periods, bool)
                r_kind = kind
            elif gk < gl:
                kind, window = "earlier_vs_later", periods < gl
                r_kind = kind
            else:
                kind, window = "later_vs_earlier", periods >= gl
                r_kind = "later_vs_always" if gl == t_min else kind
            post = periods >= gk
            t_s = int(window.sum())
            d_share = float((window & post).sum()) / t_s
            raw = ucount[k] * ucount[j] * t_s ** 2 * d_share * (1.0 - d_share)
            rows.append({"treated": label(gk), "control": label(gl), "type": kind,
                         "estimate": _did(ybar, k, j, window, post), "weight": raw,
                         "window_start": periods[window][0].item(),
                         "window_end": periods[window][-1].item(),
                         "n_treated": int(ucount[k]), "n_control": int(ucount[j]),
                         "r_type": _R_TYPES[r_kind]})
    comp = pd.DataFrame(rows)
    comp["weight"] = comp["weight"] / comp["weight"].sum()

    # the TWFE coefficient itself, from the package's own estimator (not from the sum)
    from ..estimators.twfe import twfe as _twfe

    frame = pd.DataFrame({"y": y, "u": u_codes, "t": f["time"].to_numpy(),
                          "g": first[u_codes]})
    frame.loc[~np.isfinite(frame["g"]), "g"] = np.nan
    coef = float(_twfe(frame, outcome="y", unit="u", time="t", cohort="g",
                       vcov="iid").params["ATT"])
    wsum = float((comp["weight"] * comp["estimate"]).sum())

    by = []
    for t in BACON_TYPES:
        sub = comp[comp["type"] == t]
        w = float(sub["weight"].sum())
        est = float((sub["weight"] * sub["estimate"]).sum() / w) if w > 0 else np.nan
        by.append({"type": t, "weight": w, "estimate": est, "n_comparisons": len(sub)})
    by_type = pd.DataFrame(by).set_index("type")
    diag = {**pdata.diagnostics(), "n_units": n_units, "n_periods": n_periods,
            "n_timing_groups": len(timing), "n_never_treated": int(ucount[np.isinf(groups)].sum()),
            "n_always_treated": int(ucount[groups == t_min].sum()),
            "weighted_sum": wsum, "identity_gap": wsum - coef}
    spec = {"outcome": outcome, "unit": unit, "time": time, "cohort": cohort}
    return BaconDecomposition(twfe=coef, _comparisons=comp, _by_type=by_type, nobs=len(f),
                              spec=spec, diagnostics=diag)
