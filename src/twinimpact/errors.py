"""Named exceptions and warnings.

Every error raised on purpose by twinimpact derives from :class:`TwinImpactError`;
every warning from :class:`TwinImpactWarning`, so a user can filter all of them at once::

    import warnings, twinimpact as ti
    warnings.simplefilter("ignore", ti.errors.TwinImpactWarning)

Messages follow one pattern: *what* is wrong, *where* (column, row, key), the *value seen*
and the *fix*. Use :func:`format_message` to build them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from difflib import get_close_matches

__all__ = [
    "ColumnError",
    "ConvergenceWarning",
    "DataWarning",
    "DroppedRowsWarning",
    "EstimationError",
    "FetchError",
    "FewClustersWarning",
    "InputError",
    "NotComputableWarning",
    "SpecificationError",
    "TwinImpactError",
    "TwinImpactWarning",
    "format_message",
    "suggest",
]


class TwinImpactError(Exception):
    """Base class of every error twinimpact raises on purpose."""


class InputError(TwinImpactError, ValueError):
    """The data passed in are not usable as they are (bad values, duplicates, empty input)."""


class ColumnError(InputError, KeyError):
    """A required column is missing or has the wrong type."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class SpecificationError(TwinImpactError, ValueError):
    """An option or combination of options is invalid (unknown literal, impossible design)."""


class EstimationError(TwinImpactError, RuntimeError):
    """The estimator cannot produce a result on these data (e.g. no valid comparison group)."""


class FetchError(TwinImpactError, RuntimeError):
    """A download failed (offline, refused key, HTTP error, empty answer); says which."""


class TwinImpactWarning(UserWarning):
    """Base class of every warning twinimpact emits."""


class DataWarning(TwinImpactWarning):
    """Something in the data looks wrong but the computation can continue."""


class DroppedRowsWarning(DataWarning):
    """Rows or units were dropped; the count and reason are in the diagnostics/manifest."""


class FewClustersWarning(TwinImpactWarning):
    """Cluster-robust inference rests on few clusters (see ``FEW_CLUSTERS`` in the panel
    checks); the wild cluster bootstrap is the remedy."""


class NotComputableWarning(TwinImpactWarning):
    """A quantity could not be computed and is reported as NaN."""


class ConvergenceWarning(TwinImpactWarning):
    """An iterative algorithm stopped before its convergence criterion was met."""


def suggest(value: object, choices: Iterable[object], n: int = 1) -> list[str]:
    """Closest matches of ``value`` among ``choices`` (case-insensitive), for 'did you mean'."""
    pool = {str(c).lower(): str(c) for c in choices}
    hits = get_close_matches(str(value).lower(), list(pool), n=n, cutoff=0.5)
    return [pool[h] for h in hits]


def format_message(what: str, *, where: str | None = None, seen: object = None,
                   fix: str | None = None) -> str:
    """Build an error message: what, where, the value seen and the fix."""
    parts = [what.rstrip(".") + "."]
    if where:
        parts.append(f"Where: {where}.")
    if seen is not None:
        parts.append(f"Seen: {seen!r}.")
    if fix:
        parts.append(f"Fix: {fix.rstrip('.')}.")
    return " ".join(parts)


def check_literal(name: str, value: object, allowed: Sequence[object]) -> None:
    """Raise :class:`SpecificationError` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        close = suggest(value, allowed)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise SpecificationError(
            f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}.{hint}"
        )
