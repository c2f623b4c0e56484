"""One BLAS thread inside the numerical hot paths.

The estimators' matrix products are small or tall-and-skinny (k x k normal equations,
(G x k)' (G x k) meats, (N x T) @ (T x p) score pieces). With OpenBLAS's default thread
pool such products stall on a busy machine: threads spin waiting for cores held by other
work, and a 0.1 ms product took 56 ms (measured on this project's 2-core machine; the
balanced TWFE event study ran 7-8x slower with default threads than with
``OPENBLAS_NUM_THREADS=1``). :func:`single_blas_thread` caps the BLAS pool at one thread
for the duration of an estimator call and restores the caller's setting afterwards
(``threadpoolctl``); the hot paths are memory-bound group sums and gathers, which BLAS
threads do not speed up anyway.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

__all__ = ["blas_single_thread", "single_blas_thread"]

F = TypeVar("F", bound=Callable[..., Any])
_CONTROLLER: Any = None


def single_blas_thread() -> AbstractContextManager:
    """Context manager limiting BLAS to one thread (no-op without threadpoolctl)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - declared dependency
            _CONTROLLER = False
        else:
            _CONTROLLER = ThreadpoolController()  # scans the loaded libraries once
    if _CONTROLLER is False:
        return nullcontext()
    return _CONTROLLER.limit(limits=1, user_api="blas")


def blas_single_thread(fn: F) -> F:
    """Decorator: run ``fn`` under :func:`single_blas_thread`.

    Warnings raised inside ``fn`` are recorded and re-issued once it has returned (or
    raised), with the caller's warning filters back in force: a warning whose
    ``stacklevel`` named the estimator's caller then points at the caller's line instead
    of at this wrapper, and one located deeper keeps its file and line.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as rec:
                warnings.simplefilter("always")
                try:
                    with single_blas_thread():
                        return fn(*args, **kwargs)
                finally:
                    caught = list(rec)
        finally:
            for w in caught:
                if w.filename == __file__:
                    warnings.warn(w.message, w.category, stacklevel=2)
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno,
                                           source=w.source)

    return wrapper  # type: ignore[return-value]
