"""Instrumentation (sdidlazy): how many distinct Frank-Wolfe vertices does a bootstrap
draw's unit-weight problem touch? Wraps _sdid_solver.fw_gram_sets; for every one-problem
set of the draw size it replays the Frank-Wolfe iterates (NumPy, _fw_one_numpy's steps)
and records the start's support and the set of vertices chosen.

    PYTHONPATH=src python benchmarks/sdid_vertex_count.py 1000 40 [n_reps]
"""
from __future__ import annotations

import sys
import time

import numpy as np

sys.path.insert(0, "benchmarks")


def replay(P, md2, max_iter):
    """Vertices chosen by the Frank-Wolfe loop on one GramProblems (set of one)."""
    from twinimpact.estimators._sdid_solver import _STEP_MAX, _Set
    st = _Set(P)
    h, y, Atb = st.h[0], st.y[0], st.Atb[0]
    bank, gd = st.bank, st.gd
    cp, xx, p = float(st.cp[0]), float(st.xx[0]), float(st.p[0])
    bb = float(np.asarray(P.bb, dtype=float).ravel()[0])
    eta = P.n * P.zeta**2
    md2n = md2 * P.n
    sigma, vprev, t = 1.0, float("inf"), 0
    seen = []
    while True:
        i = int(h.argmin())
        seen.append(i)
        hv = float(h[i]) * sigma
        xi = float(y[i]) * sigma
        a = float(Atb[i])
        g = float(gd[i])
        q = hv + a
        pa = (p + a) * 0.5
        den = cp - 2.0 * q + g
        s = (cp - p - hv)
        s = min(max(s / den, 0.0), _STEP_MAX) if den > 0 else 0.0
        u = 1.0 - s
        cp = u * (u * cp + 2 * s * q) + s * s * g
        xx = u * (u * xx + 2 * s * xi) + s * s
        p = u * (u * p + 2 * s * pa) + s * s * a
        sigma *= u
        c = s / sigma
        y[i] += c
        h += (bank[i] - Atb) * c
        e = eta * xx
        val = max(cp - e - 2 * p + bb, 0.0) + e
        t += 1
        if sigma < 1e-100:
            y *= sigma
            h *= sigma
            sigma = 1.0
        if (t >= 2 and not (vprev - val > md2n)) or t >= max_iter:
            break
        vprev = val
    return seen, t


def main():
    import run_table

    import twinimpact as ti
    from twinimpact.estimators import _sdid_inference, _sdid_solver

    n_units, T = int(sys.argv[1]), int(sys.argv[2])
    n_reps = int(sys.argv[3]) if len(sys.argv) > 3 else 50
    d = run_table._panel("sdid_boot", "balanced", n_units * 1000 + T)
    rec = []
    orig = _sdid_solver.fw_gram_sets
    state = {"draw": False}

    def wrapped(sets, *, min_decrease, max_iter):
        if state["draw"] and len(sets) == 1 and sets[0].x0.shape[0] == 1 \
                and sets[0].bank.shape[1] > 200:
            P = sets[0]
            seen, t = replay(P, min_decrease**2, max_iter)
            res = orig(sets, min_decrease=min_decrease, max_iter=max_iter)
            ku = len(np.unique(P.bank[:, 0]))
            kv = len(np.unique(P.bank[sorted(set(seen)), 0]))
            rec.append((P.bank.shape[1], int((P.x0[0] != 0).sum()), len(set(seen)), t,
                        int(res[0][1][0]), ku, int((res[0][0][0] != 0).sum()), kv))
            return res
        return orig(sets, min_decrease=min_decrease, max_iter=max_iter)

    _sdid_solver.fw_gram_sets = wrapped
    orig_boot = _sdid_inference.bootstrap_replicates

    def boot(*a, **k):
        state["draw"] = True
        try:
            return orig_boot(*a, **k)
        finally:
            state["draw"] = False

    import twinimpact.estimators.synthetic_did as sd
    sd.bootstrap_replicates = boot
    t0 = time.process_time()
    r = ti.synthetic_did(d, outcome="y", unit="unit", time="year", treated="treated",
                         se="bootstrap", n_reps=n_reps, seed=0)
    print("fit cpu", round(time.process_time() - t0, 2), "se", r.std_errors.iloc[0])
    om = r.unit_weights.to_numpy()
    print("full-sample omega: N0", len(om), "nonzero", int((om != 0).sum()))
    a = np.array(rec)
    for name, sel in (("pass1", slice(0, None, 2)), ("pass2", slice(1, None, 2))):
        b = a[sel]
        print(f"{name}: draws {len(b)} k mean {b[:, 0].mean():.0f}; start support "
              f"mean {b[:, 1].mean():.1f} max {b[:, 1].max()}; distinct vertices mean "
              f"{b[:, 2].mean():.1f} max {b[:, 2].max()}; iterations mean {b[:, 3].mean():.1f}"
              f" max {b[:, 3].max()}; compiled loop's iterations mean {b[:, 4].mean():.1f}; "
              f"distinct controls (rows) mean {b[:, 5].mean():.1f}; final support mean "
              f"{b[:, 6].mean():.1f}; distinct controls visited mean {b[:, 7].mean():.1f}")


if __name__ == "__main__":
    main()
