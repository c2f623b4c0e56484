"""The compiled data-form Frank-Wolfe loop alone: ns per coordinate-step.

A random centred design (``--periods`` x ``--controls``) and ``--problems`` placebo-like
unit-weight problems on it (each with 25 controls masked as pseudo-treated, the target
their mean, uniform start), run side by side for ``--steps`` steps (no stopping rule) in
one call of ``_sdid_solver.fw_gram_sets`` -- the loop a placebo's replicates run
(``ti_fw_data``), without the rest of a fit. Prints CPU seconds, ns per coordinate and
problem step, and a checksum of the weights (equal across trees that compute the same
numbers). Run each variant in a fresh process, alternating, and compare in one run:
absolute times on a shared machine drift by 20-30% over an hour (RESULTS.md, run PB).
``--form screen`` runs the same problems through the screened residual form a placebo
uses since run SP1 (``_sdid_solver.fw_screened``, 16 live problems; its checksum agrees
with the data form's to rounding), ``--kernel`` choosing its screen (2 AVX-512, 1 AVX2 +
FMA, 0 plain C; the best the processor has by default).

    PYTHONPATH=src OPENBLAS_NUM_THREADS=1 python benchmarks/sdid_fw_micro.py --controls 225000
    PYTHONPATH=src OPENBLAS_NUM_THREADS=1 python benchmarks/sdid_fw_micro.py --controls 225000 --form screen
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from twinimpact.estimators import _sdid_solver as S
from twinimpact.estimators._sdid_inference import _omega_problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--controls", type=int, default=225_000)
    ap.add_argument("--periods", type=int, default=30, help="pre-periods (design rows)")
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--form", choices=["data", "screen"], default="data")
    ap.add_argument("--kernel", type=int, default=-1)
    a = ap.parse_args()
    if S.fw_loop() != "compiled":
        raise SystemExit("the compiled extension _sdid_fw is not built "
                         "(python setup.py build_ext --inplace)")
    rng = np.random.default_rng(a.seed)
    m, n, B = a.controls, a.periods, a.problems
    D = rng.normal(size=(n, m))
    D = np.ascontiguousarray(D - D.mean(axis=0))
    tr = np.array([rng.choice(m, 25, replace=False) for _ in range(B)])
    ctrl = np.array([np.setdiff1d(np.arange(m), t) for t in tr])
    x0 = np.zeros((B, m))
    np.put_along_axis(x0, ctrl, 1.0 / ctrl.shape[1], axis=1)
    # the placebo's own problem set (masked pseudo-treated, target their mean)
    P = _omega_problems(D, None, ctrl, tr, x0, S.SDIDOptions(zeta_omega=0.1, zeta_lambda=0.1))
    kernel = S._compiled_fw().screen_kernel(a.kernel)
    t0 = time.process_time()
    if a.form == "screen":
        keep = np.zeros((B, m), dtype=bool)
        np.put_along_axis(keep, ctrl, True, axis=1)
        w, it, _ = S.fw_screened(D, D[:, tr].mean(axis=2).T, keep, x0, 0.1,
                                 min_decrease=1e-30, max_iter=a.steps)
    else:
        with S.row_cache_scope():
            w, it, _ = S.fw_gram_sets([P], min_decrease=1e-30, max_iter=a.steps)[0]
    cpu = time.process_time() - t0
    print(json.dumps({"form": a.form, "kernel": kernel if a.form == "screen" else None,
                      "controls": m, "periods": n, "problems": B, "steps": int(it.max()),
                      "cpu_s": round(cpu, 4),
                      "ns_per_coordinate_step": round(cpu / (B * a.steps * m) * 1e9, 3),
                      "checksum": float((w * np.arange(m)).sum())}))


if __name__ == "__main__":
    main()
