"""Build of the optional compiled kernel; everything else is in pyproject.toml.

``twinimpact.estimators._sdid_fw`` (C, no dependency beyond the Python headers) runs the
Frank-Wolfe loop of synthetic DiD's weight problems (placebo batch, point fit, bootstrap
refits; SSE2 on x86-64, scalar elsewhere). It is optional: without a C
compiler the install still succeeds and ``_sdid_solver`` uses its NumPy path (same
iterates; the oracle of the compiled loop in the tests). No fused multiply-adds: the loop
must round as NumPy does.

``twinimpact.core._unitorder`` (C, optional likewise) puts a shuffled panel's rows in unit
order at data preparation: a stable counting / two-pass radix sort of the unit codes and
one gather of all the used columns (:mod:`twinimpact.core.unitorder`; NumPy's stable
argsort and take without it, the same bytes).

``twinimpact.estimators._cs_boot`` (C, optional likewise) writes Callaway & Sant'Anna's
Mammen bootstrap weights straight into each block's rows of the blocked influence function
(:func:`twinimpact.estimators._cs_numerics.mammen_bootstrap`; NumPy's ``where`` and
column gathers without it, the same bytes).
"""

import os

from setuptools import Extension, setup

setup(ext_modules=[
    Extension(
        "twinimpact.estimators._sdid_fw", ["src/twinimpact/estimators/_sdid_fw.c"],
        extra_compile_args=[] if os.name == "nt" else ["-ffp-contract=off"],
        optional=True),
    Extension(
        "twinimpact.core._unitorder", ["src/twinimpact/core/_unitorder.c"],
        extra_compile_args=[] if os.name == "nt" else ["-O2"],
        optional=True),
    Extension(
        "twinimpact.estimators._cs_boot", ["src/twinimpact/estimators/_cs_boot.c"],
        extra_compile_args=[] if os.name == "nt" else ["-O2"],
        optional=True),
])
