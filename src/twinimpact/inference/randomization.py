"""Randomization (permutation) inference for designs with few treated units.

Fisher-style inference that conditions on the observed set of adoption dates: the
treatment timing (each unit's cohort; never treated included) is reassigned across units,
so control units become placebo-treated and treated units placebo controls, and the
estimator is recomputed for every reassignment (cf. MacKinnon & Webb 2020, "Randomization
inference for difference-in-differences with few treated clusters", *J. Econometrics*
218(2); Conley & Taber 2011). Under the sharp null of no effect for any unit and
exchangeable assignment of timing, the statistic's distribution over reassignments is
its exact null distribution.

* Exact: when the number of distinct reassignments (a multinomial coefficient) is at most
  ``n_reps`` all are enumerated (the observed one included) and
  ``p = #{|T_pi| >= |T_obs|} / N_assignments``.
* Monte Carlo: otherwise ``n_reps`` random permutations and
  ``p = (1 + #{|T_b| >= |T_obs|}) / (n_reps + 1)`` -- the ``+1`` counts the observed
  assignment, which keeps the test valid (Phipson & Smyth 2010).

``alternative="greater"``/``"less"`` compare signed statistics instead of absolute values.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..core.fe import demean, factorize, fe_dof
from ..core.progress import progress, track
from ..core.validation import as_frame, prepare_panel
from ..errors import InputError, SpecificationError, check_literal, format_message, renamed_keyword

__all__ = ["RandomizationResult", "randomization_inference"]

_TIE_RTOL = 1e-10


@dataclass(frozen=True)
class RandomizationResult:
    """Result of :func:`randomization_inference` (immutable).

    observed : statistic on the actual assignment; placebo : statistics over the
    reassignments (read-only array); p_value; exact : all reassignments enumerated;
    n_perms : number of statistics in ``placebo``; n_assignments : number of distinct
    reassignments; statistic, alternative, estimator : settings.
    """

    observed: float
    placebo: np.ndarray = field(repr=False)
    p_value: float
    exact: bool
    n_perms: int
    n_assignments: int
    statistic: str
    alternative: str
    estimator: str

    nobs: int = 0

    def __post_init__(self) -> None:
        p = np.array(self.placebo, dtype=float)
        p.setflags(write=False)
        object.__setattr__(self, "placebo", p)

    @property
    def label(self) -> str:
        """Name in tables: ``randomization inference (<estimator>)``."""
        return f"randomization inference ({self.estimator})"

    @property
    def ci_kind(self) -> str:
        """What the p-value is (no interval is computed)."""
        return ("randomization p-value (exact)" if self.exact else
                "randomization p-value (Monte Carlo, +1 corrected)")

    def to_frame(self, alpha: float | None = None) -> pd.DataFrame:
        """One tidy row in the shared schema: ``term="ATT"``, the observed estimate (or t
        statistic, by ``statistic``) and the randomization p-value; the interval and standard
        error columns are NaN (a permutation test of the sharp null gives no interval here).
        Extra columns: ``observed, n_perms, n_assignments, exact``. ``alpha`` is accepted
        for the protocol and not used."""
        est = self.observed if self.statistic == "estimate" else np.nan
        tstat = self.observed if self.statistic == "t" else np.nan
        return pd.DataFrame([{
            "estimator": f"randomization_inference[{self.estimator}]", "term": "ATT",
            "estimate": est, "std_error": np.nan, "statistic": tstat,
            "p_value": self.p_value, "ci_lower": np.nan, "ci_upper": np.nan,
            "ci_kind": self.ci_kind, "observed": self.observed, "n_perms": self.n_perms,
            "n_assignments": self.n_assignments, "exact": self.exact}])

    def summary(self) -> str:
        """Plain-text summary: statistic, p-value, how many reassignments."""
        how = (f"all {self.n_assignments:,} reassignments of the adoption dates (exact)"
               if self.exact else f"{self.n_perms:,} random reassignments of "
               f"{self.n_assignments:,} possible (Monte Carlo, +1 corrected)")
        return "\n".join([
            f"twinimpact · randomization inference ({self.estimator})",
            f"Observations: {self.nobs:,}",
            f"Observed {'estimate' if self.statistic == 'estimate' else 't statistic'}: "
            f"{self.observed:.6g}",
            f"p-value ({self.alternative}): {self.p_value:.4g} over {how}",
        ])


def _n_assignments(counts: list[int]) -> int:
    n = sum(counts)
    out = math.factorial(n)
    for c in counts:
        out //= math.factorial(c)
    return out


def _enumerate(labels: np.ndarray, limit: int) -> list[np.ndarray]:
    """All distinct arrangements of the multiset ``labels`` (codes), via combinations."""
    n = len(labels)
    vals, counts = np.unique(labels, return_counts=True)
    order = np.argsort(counts)  # place rare labels first
    vals, counts = vals[order], counts[order]
    out: list[np.ndarray] = []

    def rec(free: list[int], i: int, cur: np.ndarray) -> None:
        if i == len(vals) - 1:
            nxt = cur.copy()
            nxt[free] = vals[i]
            out.append(nxt)
            return
        for pos in itertools.combinations(free, int(counts[i])):
            nxt = cur.copy()
            nxt[list(pos)] = vals[i]
            rest = [f for f in free if f not in set(pos)]
            rec(rest, i + 1, nxt)
            if len(out) > limit:
                return

    rec(list(range(n)), 0, np.empty(n, dtype=labels.dtype))
    return out


class _TwfeFast:
    """Static TWFE ATT (and CRV1 t by unit) for many placebo assignments at once."""

    def __init__(self, f: pd.DataFrame) -> None:
        self.unit_codes, self.n_units = factorize(f["unit"])
        self.time = f["time"].to_numpy()
        self.fe = [self.unit_codes, factorize(self.time)[0]]
        self.y = demean(f["y"].to_numpy(), self.fe).x
        k_fe, k_nested = fe_dof(self.fe, [self.unit_codes])
        n = len(f)
        g = self.n_units
        self.small = g / (g - 1) * (n - 1) / (n - (1 + k_fe - k_nested))

    def stats(self, cohorts_by_unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``cohorts_by_unit`` is (P, n_units) -> (estimates (P,), t statistics (P,))."""
        g = cohorts_by_unit[:, self.unit_codes]          # (P, n)
        with np.errstate(invalid="ignore"):
            d = (~np.isnan(g) & (self.time[None, :] >= g)).astype(float).T  # (n, P)
        dd = demean(d, self.fe).x
        sxx = np.einsum("ip,ip->p", dd, dd)
        with np.errstate(divide="ignore", invalid="ignore"):
            b = (dd.T @ self.y) / sxx
            e = self.y[:, None] - dd * b[None, :]
            sc = np.zeros((self.n_units, d.shape[1]))
            np.add.at(sc, self.unit_codes, dd * e)
            se = np.sqrt(self.small * np.einsum("gp,gp->p", sc, sc)) / sxx
            t = b / se
        return b, t


def randomization_inference(data: pd.DataFrame, *, outcome: str, unit: str, time: str,
                            cohort: str, estimator: str | Callable[..., Any] = "twfe",
                            n_reps: int = 999, seed: int | None = None,
                            statistic: Literal["estimate", "t"] = "estimate",
                            alternative: Literal["two-sided", "greater", "less"] =
                            "two-sided", n_perms: int | None = None
                            ) -> RandomizationResult:
    """Permutation test of the sharp null of no effect by reassigning treatment timing.

    Parameters
    ----------
    data : DataFrame
        Long panel (one row per unit x period). Never treated: cohort NaN, 0 or after the
        last period.
    outcome, unit, time, cohort : str
        Column names.
    estimator : "twfe" or callable
        ``"twfe"`` (default): the static TWFE ATT with unit and time fixed effects,
        vectorised over reassignments (``t`` uses CRV1 by unit, fixest defaults). A
        callable receives a copy of ``data`` whose ``cohort`` column holds the placebo
        timing and returns a float, or an EstimationResult (its ``"ATT"`` term is used).
    n_reps : int
        Monte Carlo permutations; if the number of distinct reassignments is at most
        ``n_reps`` they are all enumerated instead (exact test). ``n_perms=`` is its
        deprecated old name.
    seed : int, optional
        Seed for the Monte Carlo permutations.
    statistic : {"estimate", "t"}
        Permute the estimate or its t statistic.
    alternative : {"two-sided", "greater", "less"}
        Two-sided compares absolute values.

    Returns
    -------
    RandomizationResult

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from twinimpact.inference.randomization import randomization_inference
    >>> rng = np.random.default_rng(0)
    >>> d = pd.DataFrame({"u": np.repeat(np.arange(12), 6), "t": np.tile(np.arange(6), 12)})
    >>> d["g"] = np.where(d["u"] == 0, 3, 0)
    >>> d["y"] = rng.normal(size=len(d)) + 2.0 * ((d["u"] == 0) & (d["t"] >= 3))
    >>> r = randomization_inference(d, outcome="y", unit="u", time="t", cohort="g")
    >>> r.exact, r.n_assignments
    (True, 12)
    """
    data = as_frame(data, what="randomization_inference: data")
    check_literal("statistic", statistic, ("estimate", "t"))
    check_literal("alternative", alternative, ("two-sided", "greater", "less"))
    if not (isinstance(estimator, str) or callable(estimator)):
        raise SpecificationError(format_message("estimator must be 'twfe' or a callable",
                                                seen=type(estimator).__name__))
    if isinstance(estimator, str):
        check_literal("estimator", estimator, ("twfe",))
    n_perms = renamed_keyword("randomization_inference", "n_perms", "n_reps", n_perms, n_reps,
                              new_default=999)
    if not isinstance(n_perms, int | np.integer) or n_perms < 1:
        raise SpecificationError(f"n_reps must be a positive integer; got {n_perms!r}.")
    pdata = prepare_panel(data, outcome=outcome, unit=unit, time=time, cohort=cohort,
                          estimator="randomization_inference")
    f = pdata.frame
    units = pd.unique(f["unit"])
    coh = f.groupby("unit", sort=False)["cohort"].first().reindex(units).to_numpy(float)
    treated = ~np.isnan(coh)
    if not treated.any() or treated.all():
        raise InputError(format_message(
            "randomization inference needs treated and never/later-treated units to swap",
            seen={"treated units": int(treated.sum()), "units": len(units)},
            fix="check the cohort column"))
    labels = np.where(np.isnan(coh), -np.inf, coh)
    _, counts = np.unique(labels, return_counts=True)
    n_assign = _n_assignments(list(counts))
    exact = n_assign <= n_perms
    if exact:
        perms = np.array(_enumerate(labels, n_assign))
    else:
        rng = np.random.default_rng(seed)
        perms = np.array([rng.permutation(labels) for _ in range(int(n_perms))])
    perms = np.where(np.isinf(perms), np.nan, perms)

    name = estimator if isinstance(estimator, str) else getattr(estimator, "__name__",
                                                                 "custom")
    if estimator == "twfe":
        fast = _TwfeFast(f)
        ob, ot = fast.stats(coh[None, :])
        observed = float(ob[0] if statistic == "estimate" else ot[0])
        out = []
        with progress(len(perms), "randomization inference (permutations)") as bar:
            for start in range(0, len(perms), 2000):
                b, t = fast.stats(perms[start:start + 2000])
                out.append(b if statistic == "estimate" else t)
                bar.update(len(b))
        placebo = np.concatenate(out)
    else:
        base = data.copy()

        def run(cvec: np.ndarray) -> float:
            d = base.copy()
            m = {u: cvec[i] for i, u in enumerate(units)}
            d[cohort] = d[unit].map(m).astype(float)
            res = estimator(d)
            if hasattr(res, "params"):
                return float(res.params["ATT"] if statistic == "estimate"
                             else res.tstats["ATT"])
            if statistic == "t":
                raise SpecificationError("statistic='t' needs the callable to return a "
                                         "result with an 'ATT' term.")
            return float(res)

        observed = run(coh)
        placebo = np.array([run(p) for p in track(perms, "randomization inference "
                                                 "(permutations)")])

    fin = np.isfinite(placebo)
    if not fin.all():
        placebo = placebo[fin]
    if alternative == "two-sided":
        extreme = np.abs(placebo) >= abs(observed) * (1 - _TIE_RTOL)
    elif alternative == "greater":
        extreme = placebo >= observed - _TIE_RTOL * abs(observed)
    else:
        extreme = placebo <= observed + _TIE_RTOL * abs(observed)
    if exact:
        p = float(extreme.mean())
    else:
        p = float((1 + extreme.sum()) / (len(placebo) + 1))
    placebo = placebo.copy()
    placebo.setflags(write=False)
    return RandomizationResult(observed=observed, placebo=placebo, p_value=p, exact=exact,
                               n_perms=len(placebo), n_assignments=n_assign,
                               statistic=statistic, alternative=alternative,
                               estimator=str(name), nobs=len(f))
