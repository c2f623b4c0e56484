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

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["RANK_RTOL", "FactorSVD", "bonferroni_max_t", "factor_svd", "wald_identified"]

#: eigenvalues below RANK_RTOL x the largest count as zero when the rank is determined
RANK_RTOL = 1e-10


@dataclass(frozen=True)
class FactorSVD:
    """The thin SVD of a factor ``F`` (m, k) of ``V = F'F``, without the left vectors.

    Attributes
    ----------
    values : ndarray, shape (min(m, k),)
        Singular values of ``F``, descending; ``values**2`` are the eigenvalues of ``V``.
    vt : ndarray, shape (min(m, k), k)
        Right singular vectors of ``F`` as rows: the eigenvectors of ``V``.
    """

    values: np.ndarray
    vt: np.ndarray


def factor_svd(factor: np.ndarray) -> FactorSVD:
    """``F``'s singular values and right vectors (:class:`FactorSVD`), made once for every
    user of the decomposition (the rank of a singular pre-test covariance and
    :func:`wald_identified` on the same ``F``).

    The numbers are those of ``np.linalg.svd(F, full_matrices=False)``. On a tall ``F``
    (``m >= int(11 k / 6)``, LAPACK dgesdd's own crossover ``MNTHR``) dgesdd first reduces
    ``F`` to the triangular ``R`` of its QR decomposition and decomposes ``R``; that is done
    here explicitly, which skips the m x k left vectors nobody reads (``Q U_R``: 2/3 of the
    time for 2000 x 980) -- same operations on the same ``R``, so the same values and
    vectors (bit for bit with numpy 2 / OpenBLAS; tests compare to 1e-12). Accuracy is that
    of the SVD of ``F``: ``V``'s condition number is never squared.
    """
    f = np.asarray(factor, dtype=float)
    m, k = f.shape
    if k and m >= int(k * 11 / 6):
        f = np.linalg.qr(f, mode="r")
    _, sv, vt = np.linalg.svd(f, full_matrices=False)
    return FactorSVD(sv, vt)


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
    from scipy import stats  # on first use: results.py imports FactorSVD from here

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
    from scipy import stats

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
