"""Loaded by pytest before anything is collected (the doctests in src/ import numpy).

The suite solves many small dense problems; multithreaded OpenBLAS only adds contention
there and, on a loaded 2-core machine, stalled some SLSQP / FLCI tests 20-fold. Limit BLAS
to one thread unless the caller chose otherwise (``.ci/run`` sets the same default).
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
