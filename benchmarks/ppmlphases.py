"""Per-phase user / system CPU of ``ti.ppml`` on a gravity spot-check panel (one fit after a
warm-up; ``getrusage`` around each wrapped step; steps missing from an older tree are
skipped). Used for "PPML's rows in pair order" in RESULTS.md:

    flock /work/bench.lock env OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 PYTHONPATH=<tree>/src \
        python benchmarks/ppmlphases.py /tmp/mygrav/g710.parquet [fe|all|fe+relu]
"""

import functools
import resource
import sys
import warnings

import pandas as pd

import twinimpact as ti
from twinimpact.estimators import _ppml_kernel as K
from twinimpact.estimators import ppml as P

warnings.simplefilter("ignore")
acc = {}


def ru():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt


def wrap(mod, name, label):
    f = getattr(mod, name, None)
    if f is None:
        return

    @functools.wraps(f)
    def g(*a, **k):
        u0, s0, m0 = ru()
        try:
            return f(*a, **k)
        finally:
            u1, s1, m1 = ru()
            t = acc.setdefault(label, [0, 0, 0, 0])
            t[0] += u1 - u0
            t[1] += s1 - s0
            t[2] += m1 - m0
            t[3] += 1

    setattr(mod, name, g)


wrap(P, "fe_codes", "fe_codes")
wrap(P, "find_separation", "separation")
wrap(P, "_recode", "recode")
wrap(P, "irls_poisson", "irls")
wrap(K.WeightedFE, "set_weights", " irls.set_weights")
wrap(K.WeightedFE, "residualize_inplace", " irls.residualize")
wrap(K, "_collinear", " irls.collinear")
wrap(P.SandwichVcov, "vcov", "vcov")
wrap(P, "fe_dof", "fe_dof")
wrap(P, "fit_order", "fit_order")
wrap(P, "permute_rows", "permute_rows")
wrap(P, "WeightedFE", "WeightedFE")
d = pd.read_parquet(sys.argv[1])
sep = sys.argv[2] if len(sys.argv) > 2 else "fe"
def fit():
    return ti.ppml(
    d,
    outcome="trade",
    regressors=["rta"],
    fixed_effects=["exp_year", "imp_year", "pair"],
    cluster="pair",
    separation=True if sep == "all" else sep,
)
fit()
acc.clear()
u0, s0, m0 = ru()
r = fit()
u1, s1, m1 = ru()
out = {"total": [u1 - u0, s1 - s0, m1 - m0, 1]}
out.update(acc)
for k, v in out.items():
    print(f"{k:20s} user {v[0]:7.3f} sys {v[1]:7.3f} minflt {v[2]:10d} calls {v[3]}")
print(
    r.params["rta"],
    r.std_errors["rta"],
    r.diagnostics["iterations"],
    r.diagnostics["demean_sweeps"],
)
