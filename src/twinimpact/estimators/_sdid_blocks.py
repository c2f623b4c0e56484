"""Cohort blocks of a (possibly covariate-adjusted) synthetic-DiD design and their
replications, for the covariate and event-study paths.

A *block* is one adoption cohort estimated against the control units: the adjusted
outcome rows ``Yb`` (controls first, then the cohort's treated units; ``Y - X beta`` when
covariates adjust the outcome), the number of controls ``n0``, the first treated column
``a`` and the weights ``omega`` / ``lam``. Every quantity the estimators report is a
linear contrast of a block:

* the cohort ATT ``tau = mean_{t >= a} d_t - sum_{s < a} lam_s d_s`` with the gap
  ``d_t = mean(treated_t) - omega' controls_t``;
* the event-study effect ``l`` periods after adoption (Stata ``sdid_event``'s
  ``Effect_{l+1}``): ``d_{a+l} - sum_s lam_s d_s``;
* the placebo ``l`` periods before adoption (``Placebo_l``): ``d_{a-l} - sum_s lam_s d_s``.

:func:`replicate_blocks` redraws the sample as the placebo (Algorithm 4), bootstrap
(Algorithm 2) or fixed-weights jackknife (Algorithm 3) of Arkhangelsky et al. (2021) and
refits every block through a caller-supplied ``fit_block``, so covariate adjustments are
re-estimated inside every replication (Stata ``sdid`` re-projects and re-optimises in
each bootstrap, placebo and jackknife sample).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._sdid_inference import BootstrapSampler, Group

__all__ = ["Block", "block_gaps", "event_contrasts", "replicate_blocks"]


@dataclass(frozen=True)
class Block:
    """One cohort block: adjusted outcomes ``Yb`` ``(n0 + n1, T)``, weights, sizes."""

    Yb: np.ndarray
    n0: int
    a: int
    omega: np.ndarray
    lam: np.ndarray

    @property
    def n1(self) -> int:
        return self.Yb.shape[0] - self.n0


def block_gaps(b: Block) -> tuple[np.ndarray, float]:
    """Gap series ``d_t`` (treated mean minus omega-weighted controls) and its
    lambda-weighted pre-period baseline."""
    d = b.Yb[b.n0:].mean(axis=0) - b.omega @ b.Yb[:b.n0]
    return d, float(b.lam @ d[:b.a])


def event_contrasts(b: Block, n_effects: int, n_placebo: int) -> np.ndarray:
    """``[tau, effect_0 .. effect_{n_effects-1}, placebo_1 .. placebo_{n_placebo}]`` of a
    block; NaN where the horizon lies outside the block's periods."""
    d, base = block_gaps(b)
    T = len(d)
    out = np.full(1 + n_effects + n_placebo, np.nan)
    out[0] = d[b.a:].mean() - base
    for ell in range(n_effects):
        if b.a + ell < T:
            out[1 + ell] = d[b.a + ell] - base
    for ell in range(1, n_placebo + 1):
        if b.a - ell >= 0:
            out[n_effects + ell] = d[b.a - ell] - base
    return out


#: ``fit_block(ctrl_rows, treated_rows, g, warm)`` -> Block. ``ctrl_rows`` / ``treated_rows``
#: index the full outcome matrix; ``warm`` is ``None`` for the original fit, else the
#: positions of ``ctrl_rows`` among the original controls (for warm starts) together with
#: the replication kind.
FitBlock = Callable[[np.ndarray, np.ndarray, int, "Warm | None"], Block]


@dataclass(frozen=True)
class Warm:
    """Where a replication's controls come from among the original ``N0`` controls."""

    kind: str               # "placebo" | "bootstrap" | "jackknife"
    ctrl_pos: np.ndarray    # positions in 0..N0-1 of the replication's controls


def replicate_blocks(kind: str, N: int, N0: int, groups: list[Group], fit_block: FitBlock,
                     n_reps: int, rng: np.random.Generator | None,
                     max_draws: int | None = None,
                     begin: Callable[[np.ndarray, list], None] | None = None
                     ) -> tuple[list[list[Block | None]], int]:
    """The replications' blocks: one list (one entry per group, None where the group lost
    its treated units, jackknife only) per replication, and the number of rejected
    bootstrap draws.

    placebo: a random permutation of the controls; its last ``N1`` become pseudo-treated
    with the treated groups' sizes and adoption columns. bootstrap: units drawn with
    replacement (sorted), redrawn until every group has a treated unit and a control is
    left. jackknife: each unit left out once. ``begin(ctrl, treated)`` (optional) is
    called before a replication's blocks are fitted, with its control rows and the list
    of ``(rows, a)`` per group (``rows`` empty where a group lost its treated units), so a
    covariate projection can be re-estimated once per replication.
    """
    def start(ctrl: np.ndarray, trs: list[np.ndarray]) -> None:
        if begin is not None:
            begin(ctrl, [(r, groups[g].a) for g, r in enumerate(trs)])

    out: list[list[Block | None]] = []
    rejected = 0
    sizes = [len(g.rows) for g in groups]
    if kind == "placebo":
        n0_new = N0 - sum(sizes)
        for _ in range(n_reps):
            perm = rng.permutation(N0)
            ctrl = perm[:n0_new]
            cuts = np.cumsum([n0_new, *sizes])
            trs = [perm[cuts[g]:cuts[g + 1]] for g in range(len(sizes))]
            start(ctrl, trs)
            out.append([fit_block(ctrl, trs[g], g, Warm(kind, ctrl))
                        for g in range(len(sizes))])
    elif kind == "bootstrap":
        sampler = BootstrapSampler(N, N0, groups, n_reps, rng, max_draws)
        for ctrl, trs in sampler:
            start(ctrl, trs)
            out.append([fit_block(ctrl, trs[g], g, Warm(kind, ctrl))
                        for g in range(len(groups))])
        rejected = sampler.rejected
    elif kind == "jackknife":
        all_ctrl = np.arange(N0)
        for j in range(N):
            ctrl = all_ctrl[all_ctrl != j]
            trs = [grp.rows[grp.rows != j] for grp in groups]
            start(ctrl, trs)
            out.append([None if len(trs[g]) == 0
                        else fit_block(ctrl, trs[g], g, Warm(kind, ctrl))
                        for g in range(len(groups))])
    else:  # pragma: no cover - validated by the caller
        raise ValueError(kind)
    return out, rejected
