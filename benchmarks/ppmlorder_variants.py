"""IRLS time (user / sys) of the gravity fit under other row orders: the inputs of
``irls_poisson`` captured from one ``ti.ppml`` call (main's path: run it with
``TWINIMPACT_PPML_ORDER=never`` on a tree that orders), reordered here (by pair, with or
without the other sets renumbered by first appearance, a second level, another set) and
fitted again, twice each. Used for "PPML's rows in pair order" in RESULTS.md:

    TWINIMPACT_PPML_ORDER=never flock /work/bench.lock env OPENBLAS_NUM_THREADS=1 \
        NUMBA_NUM_THREADS=1 python benchmarks/ppmlorder_variants.py /tmp/mygrav/g710.parquet
"""

import resource
import sys
import warnings

import numpy as np
import pandas as pd

import twinimpact as ti
from twinimpact.estimators import _ppml_kernel as K
from twinimpact.estimators import ppml as P

warnings.simplefilter("ignore")
cap = {}
orig = P.irls_poisson


def grab(y, x, fe, **kw):
    cap.update(y=y.copy(), x=x.copy(), codes=fe.code_array.copy(), kw=kw)
    return orig(y, x, fe, **kw)


P.irls_poisson = grab
d = pd.read_parquet(sys.argv[1])
ti.ppml(
    d,
    outcome="trade",
    regressors=["rta"],
    fixed_effects=["exp_year", "imp_year", "pair"],
    cluster="pair",
    separation="fe",
)
del d
y, x, codes, kw = cap["y"], cap["x"], cap["codes"], cap["kw"]
n = len(y)


def ru():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def first_app(c):
    _, idx, inv = np.unique(c, return_index=True, return_inverse=True)
    rank = np.empty(len(idx), np.int64)
    rank[np.argsort(idx, kind="stable")] = np.arange(len(idx))
    return rank[inv].astype(np.int32)


variants = {}
variants["none"] = None
p = np.argsort(codes[2], kind="stable")
variants["pair"] = (p, False)
variants["pair+renum"] = (p, True)
# second level: within pair by (renumbered) ey code
c0 = first_app(codes[0][p])
q = np.lexsort((c0, codes[2][p]))
variants["pair,ey+renum"] = (p[q], True)
c1 = first_app(codes[1][p])
q = np.lexsort((c1, codes[2][p]))
variants["pair,iy+renum"] = (p[q], True)
p2 = np.argsort(codes[0], kind="stable")
variants["ey+renum"] = (p2, True)
names = sys.argv[2].split(",") if len(sys.argv) > 2 else list(variants)
for _rep in range(2):
    for name in names:
        v = variants[name]
        if v is None:
            yy, xx, cc = y, x, codes
        else:
            pp, ren = v
            yy, xx = y[pp], np.asfortranarray(x[pp])
            cc = np.ascontiguousarray(codes[:, pp])
            if ren:
                for k in range(3):
                    cc[k] = first_app(cc[k])
        fe = K.WeightedFE(cc)
        u0, s0 = ru()
        f = orig(yy, xx, fe, **kw)
        u1, s1 = ru()
        print(
            f"{name:16s} n={n} user {u1 - u0:.3f} sys {s1 - s0:.3f} coef {f.coef[0]!r} it {f.iterations} sweeps {f.demean_sweeps} runs {fe.runs}",
            flush=True,
        )
