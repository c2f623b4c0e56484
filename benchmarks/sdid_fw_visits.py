"""How many distinct vertices one synthetic DiD placebo replicate's unit-weight problem
visits, and how concentrated the visits are: could a cache of rows (``A' a_j`` for the
visited controls ``j``) serve the Frank-Wolfe steps of the data form?

The problem is the placebo's (R synthdid ``placebo_se``): on ``panels.sdid_panel(N, 40)``
(10% treated, the last 10 periods post), a random draw of N1 controls are pseudo-treated;
the other controls' pre-period series are the columns, the pseudo-treated mean the target,
columns centred (``omega.intercept``), zeta = (N1 T1)^(1/4) x the noise level of the
controls' pre-period differences (the original fit's, which the placebo reuses), 100 steps
from uniform weights, sparsified, then up to 10,000 steps (min_decrease 1e-5 x noise).
It runs :func:`twinimpact.estimators._sdid_solver.sc_weight_fw_reference`, the literal
transcription (every step's vertex recorded), so it takes seconds per problem. For each
pair of replicates it also counts the controls both visit and how many steps apart.

    PYTHONPATH=src OPENBLAS_NUM_THREADS=1 python benchmarks/sdid_fw_visits.py --units 2500 10000 25000
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import panels

from twinimpact.estimators._sdid_solver import noise_level, sc_weight_fw_reference, sparsify


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, nargs="+", default=[2500, 10000, 25000])
    ap.add_argument("--replicates", type=int, default=2)
    ap.add_argument("--periods", type=int, default=40)
    a = ap.parse_args()
    for n in a.units:
        d = panels.sdid_panel(n, a.periods)
        y = d["y"].to_numpy().reshape(n, a.periods)
        never = d["cohort"].to_numpy().reshape(n, a.periods)[:, 0] == 0
        yc = y[never]
        n0, n1 = len(yc), int((~never).sum())
        t1 = max(1, round(0.25 * a.periods))
        t0 = a.periods - t1
        sigma = noise_level(yc, n0, t0)
        zeta = (n1 * t1) ** 0.25 * sigma
        md = 1e-5 * sigma
        rng = np.random.default_rng(0)
        runs: list[dict[int, int]] = []  # per replicate: control -> step of its first visit
        for rep in range(a.replicates):
            perm = rng.permutation(n0)
            pseudo, ctrl = perm[:n1], perm[n1:]
            yw = np.column_stack([yc[ctrl, :t0].T, yc[pseudo, :t0].mean(axis=0)])
            k = len(ctrl)
            visits: list[int] = []
            t = time.process_time()
            first = sc_weight_fw_reference(yw, zeta, min_decrease=md, max_iter=100,
                                           visits=visits)
            second = sc_weight_fw_reference(yw, zeta, init=sparsify(first.weights),
                                            min_decrease=md, max_iter=10_000, visits=visits)
            v = np.asarray(visits)
            runs.append({c: i for i, c in reversed(list(enumerate(ctrl[v].tolist())))})
            _, counts = np.unique(v, return_counts=True)
            share = np.cumsum(np.sort(counts)[::-1]) / counts.sum()

            def top(m: int, share=share) -> str:
                return f"{share[min(m, len(share)) - 1]:.0%}"
            print(f"units {n:>7,} controls {k:>7,} replicate {rep}: steps "
                  f"{first.n_iter} + {second.n_iter}, distinct vertices {len(counts):,} "
                  f"({len(counts) / k:.1%} of the controls); the most visited 100 / 1,000 "
                  f"take {top(100)} / {top(1000)} of the steps; "
                  f"{time.process_time() - t:.1f} s CPU", flush=True)
        for i in range(len(runs)):  # could another replicate's stored rows serve these?
            for j in range(i + 1, len(runs)):
                common = runs[i].keys() & runs[j].keys()
                apart = [abs(runs[i][c] - runs[j][c]) for c in common]
                print(f"  replicates {i}, {j}: {len(common):,} controls visited by both, "
                      f"first visits a median {np.median(apart) if apart else 0:.0f} steps "
                      "apart", flush=True)


if __name__ == "__main__":
    main()
