"""Named exceptions and warnings.

Every error raised on purpose by twinimpact derives from :class:`TwinImpactError`;
every warning from :class:`TwinImpactWarning`, so a user can filter all of them at once::

    import warnings, twinimpact as ti
    warnings.simplefilter("ignore", ti.errors.TwinImpactWarning)

Messages follow one pattern: *what* is wrong, *where* (column, row, key), the *value seen*
and the *fix*. Use :func:`format_message` to build them.
"""

from __future__ import annotations

import math
import numbers
import warnings
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
    "TwinImpactDeprecationWarning",
    "TwinImpactError",
    "TwinImpactWarning",
    "check_alpha",
    "check_literal",
    "format_counts",
    "format_message",
    "format_values",
    "renamed_keyword",
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


class TwinImpactDeprecationWarning(TwinImpactWarning, FutureWarning):
    """A keyword or value was renamed; the old name still works for one release.

    Derives from :class:`FutureWarning` (shown by default, like pandas' deprecations) as
    well as from :class:`TwinImpactWarning`.
    """


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
    """Raise :class:`SpecificationError` unless ``value`` is one of ``allowed``.

    The one wording for every option: ``"<name>: expected one of 'a', 'b', got 'x'."``
    (plus a "did you mean" when a choice is close).
    """
    try:
        ok = value in allowed
    except TypeError:                          # unhashable / incomparable value
        ok = False
    if not ok:
        close = suggest(value, allowed)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise SpecificationError(
            f"{name}: expected one of {', '.join(repr(a) for a in allowed)}, got {value!r}."
            + hint)


#: The sentence a warning about dropped rows ends with: where a Python user finds the counts.
#: Reports written for readers cut it (:func:`twinimpact.report.plain.report_warning`).
COUNTS_POINTER = "Counts per reason: result.diagnostics['dropped_rows']."


def _plural(n: int, noun: str) -> str:
    return noun if n == 1 else (noun[:-1] + "ies" if noun.endswith("y") else noun + "s")


def format_counts(counts: object, noun: str = "row") -> str:
    """Counts by reason as words, for messages people read: ``{"missing y": 1459}`` ->
    ``"1,459 rows: missing y"``; several reasons are joined by ``"; "``. Keeps messages
    free of Python reprs (no ``{'...': n}``)."""
    items = list(dict(counts).items()) if counts else []  # type: ignore[call-overload]
    return "; ".join(f"{int(n):,} {_plural(int(n), noun)}: {reason}" for reason, n in items)


def format_values(values: Iterable[object], *, limit: int = 12) -> str:
    """A list of values as words: runs of consecutive integers are ranges (``21-69``),
    others are joined by commas; long lists end with "... (N in all)". No brackets, no
    quotes (``[21, 22, 23]`` -> ``"21-23"``, ``["1994", "1996"]`` -> ``"1994, 1996"``)."""
    vals = list(values)
    ints: list[int] = []
    for v in vals:
        try:
            f = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            ints = []
            break
        if not (math.isfinite(f) and f.is_integer()):
            ints = []
            break
        ints.append(int(f))
    if ints and len(ints) == len(vals):
        ints = sorted(set(ints))
        parts, start, prev = [], ints[0], ints[0]
        for x in [*ints[1:], None]:
            if x is not None and x == prev + 1:
                prev = x
                continue
            parts.append(str(start) if start == prev else
                         f"{start}, {prev}" if prev == start + 1 else f"{start}-{prev}")
            if x is not None:
                start = prev = x
        words = [str(p) for p in parts]
    else:
        words = [str(v) for v in vals]
    if len(words) > limit:
        return ", ".join(words[:limit]) + f", ... ({len(vals)} in all)"
    return ", ".join(words)


def check_alpha(alpha: object, name: str = "alpha") -> float:
    """Validate a significance level and return it as a float.

    The one wording: ``"alpha: expected a number in (0, 1), got 5."``
    """
    ok = (isinstance(alpha, numbers.Real) and not isinstance(alpha, bool)
          and not math.isnan(alpha) and 0 < alpha < 1)
    if not ok:
        raise SpecificationError(
            f"{name}: expected a number in (0, 1), got {alpha!r}. "
            f"Fix: pass e.g. {name}=0.05 for 95% intervals.")
    return float(alpha)


def renamed_keyword(func: str, old: str, new: str, old_value: object, new_value: object,
                    *, new_default: object = None, stacklevel: int = 3) -> object:
    """Resolve a renamed keyword whose old name defaults to ``None``.

    ``old`` still works for one release, with a :class:`TwinImpactDeprecationWarning` that
    names ``new``; passing both (``new`` away from ``new_default``) is an error.
    """
    if old_value is None:
        return new_value
    if new_value is not new_default and new_value != new_default:
        raise SpecificationError(format_message(
            f"{func}: {old}= and {new}= are the same option (old and new name)",
            seen={old: old_value, new: new_value}, fix=f"pass only {new}="))
    warnings.warn(f"{func}: {old}= is deprecated and will be removed in the next release; "
                  f"use {new}= (same meaning).", TwinImpactDeprecationWarning,
                  stacklevel=stacklevel)
    return old_value
