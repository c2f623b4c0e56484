"""Gravity study prose: a plain-language sentence for a PPML intensity coefficient."""

from __future__ import annotations

import math

from ..results import EstimationResult

__all__ = ["intensity_sentence"]


def intensity_sentence(result: EstimationResult, term: str = "n_twinnings",
                       alpha: float = 0.05, *, outcome: str = "trade") -> str:
    """Plain-language reading of a PPML intensity coefficient.

    ``n_twinnings``: "each additional twinning is associated with x% higher trade, 95% CI
    [a%, b%]" with ``x = 100 (exp(b) - 1)`` (the CI endpoints transformed the same way).
    ``log1p_twinnings`` (an elasticity): the change for doubling ``1 + n_twinnings``,
    ``100 (2^b - 1)``.
    """
    row = result.to_frame(alpha).set_index("term").loc[term]
    level = f"{100 * (1 - alpha):g}%"
    b, lo, hi = float(row["estimate"]), float(row["ci_lower"]), float(row["ci_upper"])
    if not all(map(math.isfinite, (b, lo, hi))):
        return f"The association of {term} with {outcome} could not be estimated."
    if term.startswith("log1p"):
        f = [100 * (2.0**v - 1) for v in (b, lo, hi)]
        what = "doubling one plus the number of twinnings is"
    else:
        f = [100 * math.expm1(v) for v in (b, lo, hi)]
        what = "each additional twinning is"
    word = "higher" if f[0] >= 0 else "lower"
    nd = 1 if max(abs(v) for v in f) >= 1 else 3  # small per-link effects need more digits
    return (f"{what[0].upper()}{what[1:]} associated with {abs(f[0]):.{nd}f}% {word} "
            f"{outcome}, {level} CI [{f[1]:.{nd}f}%, {f[2]:.{nd}f}%].")
