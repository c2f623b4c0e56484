"""Wald tests of ``beta = 0`` that say why when the covariance is singular.

A joint pre-trend test ``W = b' V^-1 b ~ chi2(k)`` is undefined when ``V`` (k x k) is
singular -- typically because there are more pre-treatment cells than independent pieces of
information (an influence-function covariance built from ``n`` clusters has rank at most
``n``). R ``did`` then prints no statistic. :func:`wald_identified` offers the standard
extension (e.g. Andrews 1987; Moore 1977): the Wald statistic on the directions the data
identify, ``W+ = b' V^+ b`` with the Moore-Penrose pseudo-inverse, compared with a
``chi2(r)``, ``r = rank(V)``. Under ``H0: beta = 0`` and ``b ~ N(0, V)``, ``b`` lies in the
column space of ``V`` and ``W+ ~ chi2(r)`` exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from ..results import FactorSVD, factor_svd

__all__ = ["RANK_RTOL", "FactorSVD", "bonferroni_max_t", "factor_svd", "wald_identified"]

#: eigenvalues below RANK_RTOL x the largest count as zero when the rank is determined
RANK_RTOL = 1e-10


def wald_identified(b: np.ndarray, v: np.ndarray | None, *, rtol: float = RANK_RTOL,
                    factor: np.ndarray | FactorSVD | None = None) -> dict[str, Any]:
    """Pseudo-inverse Wald test of ``beta = 0`` on the identified directions.

    ``factor``: an (m, k) matrix ``F`` with ``v = F'F`` (e.g. cluster sums of an influence
    function over n: m = clusters), or its :func:`factor_svd`. The eigenpairs of ``v`` are
    then those of the thin SVD of ``F`` (values ``s^2``, vectors its right singular
    vectors): O(m^2 k) instead of O(k^3), and without squaring ``F``'s condition number;
    ``v`` is not read.

    Returns a dict: ``statistic``, ``df`` (= ``rank``), ``p_value``, ``rank``,
    ``n_coefficients``, ``kind`` ("Wald chi2 (pseudo-inverse, identified directions)"),
    ``outside_share`` (share of ``|b|^2`` outside the column space of ``v``, which the test
    ignores; 0 in exact arithmetic under the null), ``rank_tolerance``.
    """
    b = np.asarray(b, dtype=float).reshape(-1)
    if factor is not None:
        dec = factor if isinstance(factor, FactorSVD) else factor_svd(factor)
        vals, vecs = dec.values ** 2, dec.vt.T
    else:
        v = np.asarray(v, dtype=float)
        v = (v + v.T) / 2
        vals, vecs = np.linalg.eigh(v)
    top = float(vals.max()) if len(vals) else 0.0
    keep = vals > rtol * max(top, 0.0)
    r = int(keep.sum())
    proj = vecs[:, keep].T @ b
    stat = float(np.sum(proj ** 2 / vals[keep])) if r else float("nan")
    outside = float(max(b @ b - proj @ proj, 0.0) / (b @ b)) if b @ b > 0 else 0.0
    return {"statistic": stat, "df": r, "p_value": float(stats.chi2.sf(stat, r)) if r else
            float("nan"), "rank": r, "n_coefficients": len(b),
            "kind": "Wald chi2 (pseudo-inverse, identified directions)",
            "outside_share": outside, "rank_tolerance": rtol}


def bonferroni_max_t(b: np.ndarray, v: np.ndarray) -> dict[str, Any]:
    """Max |t| over the coefficients with a Bonferroni-corrected normal p-value -- a joint
    test of ``beta = 0`` that is valid whatever the rank of ``v`` (conservative)."""
    b = np.asarray(b, dtype=float).reshape(-1)
    se = np.sqrt(np.clip(np.diag(np.asarray(v, dtype=float)), 0, None))
    ok = se > 0
    if not ok.any():
        return {"statistic": float("nan"), "p_value": float("nan"), "n_coefficients": 0,
                "kind": "max |t| with Bonferroni correction (valid whatever the rank)"}
    t = np.abs(b[ok]) / se[ok]
    p_each = 2 * stats.norm.sf(t)
    return {"statistic": float(t.max()), "p_value": float(min(1.0, ok.sum() * p_each.min())),
            "n_coefficients": int(ok.sum()),
            "kind": "max |t| with Bonferroni correction (valid whatever the rank)"}
