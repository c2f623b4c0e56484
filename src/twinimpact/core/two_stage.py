"""The two-stage kernel shared by the imputation (Borusyak, Jaravel & Spiess 2024) and
two-stage DiD (Gardner 2022) estimators.

The first stage fits fixed effects and covariates on untreated rows by an exact
Schur-complement solve of the normal equations (the largest fixed-effect set is eliminated in
closed form, the rest solved as a small dense system), so that imputed values and the
variance weights are exact to floating-point precision rather than to an iteration
tolerance: :func:`build_normal_system`, :func:`solve_normal`, :func:`predict`,
:func:`fit_untreated`. :func:`two_stage_rows` derives the row arrays of a prepared panel
and runs the checks both estimators share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import sparse

from ..errors import EstimationError, InputError, format_message

__all__ = [
    "NormalSystem",
    "TwoStageRows",
    "UntreatedFit",
    "build_normal_system",
    "fit_untreated",
    "predict",
    "solve_normal",
    "system_rhs",
    "two_stage_rows",
]

#: relative eigenvalue below which a direction of the (Jacobi-scaled) Schur complement is
#: treated as the redundancy between fixed-effect sets (exactly 0 in exact arithmetic)
_EIG_TOL = 1e-10
#: largest dense Schur complement we are willing to form (levels of the smaller FE sets)
_MAX_DENSE = 20_000


# ----------------------------------------------------------------------------- kernel
@dataclass(frozen=True)
class NormalSystem:
    """Normal equations ``Z_0' W_0 Z_0 b = r`` of a fixed-effect design on a row subset.

    ``Z = [D | M]``: ``D`` is the one-hot matrix of the largest fixed-effect set (eliminated
    in closed form), ``M`` the one-hots of the other sets and the covariates. Only the rows
    flagged in ``fit_rows`` (with weights ``w``) enter ``Z_0' W_0 Z_0``.

    Attributes
    ----------
    code_d : (n,) int codes of the eliminated fixed-effect set (all rows)
    m : sparse (n, m) matrix, the other columns for all rows
    s : (G_D,) weighted counts of fit rows per level of ``D`` (0 = level not identified)
    c : (G_D, m) dense ``D_0' W_0 M_0``
    s_inv : (m, m) pseudo-inverse of the Schur complement ``M_0'W_0M_0 - C' diag(1/s) C``
    row_ok : (n,) bool, rows whose every fixed-effect level is present among the fit rows
    """

    code_d: np.ndarray
    n_d: int
    m: Any
    s: np.ndarray
    c: np.ndarray
    s_inv: np.ndarray
    row_ok: np.ndarray


def build_normal_system(fe_codes: Sequence[np.ndarray], covariates: np.ndarray | None,
                        fit_rows: np.ndarray, weights: np.ndarray | None = None
                        ) -> NormalSystem:
    """Assemble and factor the normal equations of FE (+ covariates) on ``fit_rows``.

    Parameters
    ----------
    fe_codes : sequence of (n,) int arrays (dense codes over all n rows), at least one.
    covariates : (n, p) array or None.
    fit_rows : (n,) bool, the rows the model is fitted on (untreated observations).
    weights : (n,) array or None (observation weights).
    """
    n = len(fit_rows)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    w0 = np.where(fit_rows, w, 0.0)
    sizes = [int(c.max()) + 1 for c in fe_codes]
    j = int(np.argmax(sizes))
    code_d, n_d = np.asarray(fe_codes[j], dtype=np.intp), sizes[j]
    blocks, row_ok = [], np.ones(n, dtype=bool)
    cnt_d = np.bincount(code_d[fit_rows], minlength=n_d)
    row_ok &= cnt_d[code_d] > 0
    for i, codes in enumerate(fe_codes):
        if i == j:
            continue
        codes = np.asarray(codes, dtype=np.intp)
        blocks.append(sparse.csr_matrix((np.ones(n), (np.arange(n), codes)),
                                        shape=(n, sizes[i])))
        cnt = np.bincount(codes[fit_rows], minlength=sizes[i])
        row_ok &= cnt[codes] > 0
    if covariates is not None and covariates.size:
        blocks.append(sparse.csr_matrix(np.asarray(covariates, dtype=float)))
    m_cols = sum(b.shape[1] for b in blocks)
    if m_cols > _MAX_DENSE:
        raise EstimationError(format_message(
            "the first stage has too many fixed-effect levels outside the largest set for "
            "the exact solver", seen=m_cols,
            fix="put the fixed effect with most levels first or use fewer/coarser sets"))
    m = sparse.hstack(blocks, format="csr") if blocks else sparse.csr_matrix((n, 0))
    s = np.bincount(code_d, weights=w0, minlength=n_d)
    dw0 = sparse.csr_matrix((w0, (code_d, np.arange(n))), shape=(n_d, n))
    c = np.asarray((dw0 @ m).toarray()) if m_cols else np.zeros((n_d, 0))
    mtwm = np.asarray((m.T @ sparse.diags(w0) @ m).toarray()) if m_cols else np.zeros((0, 0))
    inv_s = np.divide(1.0, s, out=np.zeros_like(s), where=s > 0)
    schur = mtwm - c.T @ (c * inv_s[:, None])
    return NormalSystem(code_d=code_d, n_d=n_d, m=m, s=s, c=c, s_inv=_pinv_psd(schur),
                        row_ok=row_ok)


def _pinv_psd(a: np.ndarray) -> np.ndarray:
    """Pseudo-inverse of a PSD matrix after Jacobi scaling (drops the FE redundancies)."""
    if a.size == 0:
        return a.copy()
    a = (a + a.T) / 2
    d = np.sqrt(np.clip(np.diag(a), 0, None))
    d[d == 0] = 1.0
    sc = a / d[:, None] / d[None, :]
    lam, vec = np.linalg.eigh(sc)
    keep = lam > _EIG_TOL * max(lam.max(), 1e-300)
    inv = (vec[:, keep] / lam[keep]) @ vec[:, keep].T
    return inv / d[:, None] / d[None, :]


def system_rhs(system: NormalSystem, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``Z' u`` split into its ``D`` and ``M`` parts; ``u`` is (n, k) (zero where unused)."""
    u = np.asarray(u, dtype=float).reshape(len(system.code_d), -1)
    n = len(system.code_d)
    dmat = sparse.csr_matrix((np.ones(n), (system.code_d, np.arange(n))),
                             shape=(system.n_d, n))
    return np.asarray(dmat @ u), np.asarray(system.m.T @ u)


def solve_normal(system: NormalSystem, r_d: np.ndarray, r_m: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Solve ``Z_0'W_0Z_0 b = r`` (one solution; fitted values ``Z b`` are unique on rows
    whose levels are all identified). Levels of ``D`` absent from the fit rows get NaN."""
    inv_s = np.divide(1.0, system.s, out=np.full_like(system.s, np.nan), where=system.s > 0)
    b_m = system.s_inv @ (r_m - system.c.T @ (r_d * np.nan_to_num(inv_s)[:, None]))
    b_d = (r_d - system.c @ b_m) * inv_s[:, None]
    return b_d, b_m


def predict(system: NormalSystem, b_d: np.ndarray, b_m: np.ndarray) -> np.ndarray:
    """Fitted values ``Z b`` for every row, (n, k); NaN on rows not identified."""
    out = b_d[system.code_d] + np.asarray(system.m @ b_m)
    out[~system.row_ok] = np.nan
    return out


@dataclass(frozen=True)
class UntreatedFit:
    """First stage: the model for ``Y(0)`` fitted on untreated rows.

    ``y0_hat`` (n,) imputed untreated outcome for every row (NaN where a fixed-effect level
    has no untreated observation); ``beta`` (p,) covariate coefficients; ``system`` the
    factored normal equations (reused for the variance weights).
    """

    y0_hat: np.ndarray
    beta: np.ndarray
    system: NormalSystem


def fit_untreated(y: np.ndarray, fe_codes: Sequence[np.ndarray], untreated: np.ndarray,
                  covariates: np.ndarray | None = None,
                  weights: np.ndarray | None = None) -> UntreatedFit:
    """OLS/WLS of ``y`` on fixed effects (and covariates) over the untreated rows, and
    the fitted values for all rows (BJS 2024 Theorem 1 step 1; Gardner 2022 stage 1)."""
    system = build_normal_system(fe_codes, covariates, untreated, weights)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)
    u = np.where(untreated, w * y, 0.0)[:, None]
    b_d, b_m = solve_normal(system, *system_rhs(system, u))
    p = 0 if covariates is None else covariates.shape[1]
    beta = b_m[b_m.shape[0] - p:, 0] if p else np.zeros(0)
    return UntreatedFit(y0_hat=predict(system, b_d, b_m)[:, 0], beta=beta, system=system)


class TwoStageRows(NamedTuple):
    """Row arrays shared by the two-stage estimators (``never``: never-treated rows;
    ``treated``: ``time >= cohort``; ``w``: weights or None)."""

    y: np.ndarray
    t: np.ndarray
    g: np.ndarray
    never: np.ndarray
    treated: np.ndarray
    w: np.ndarray | None


def two_stage_rows(frame: pd.DataFrame, cohort: str, weights: str | None,
                   estimator: str) -> TwoStageRows:
    """Arrays of a prepared panel (columns ``y``, ``time``, ``cohort``) and the shared checks
    of the two-stage estimators (imputation, did2s): some treated and some untreated
    observations, non-negative weights."""
    y = frame["y"].to_numpy()
    t = frame["time"].to_numpy()
    g = frame["cohort"].to_numpy()
    never = np.isnan(g)
    treated = ~never & (t >= g)
    if not treated.any():
        raise InputError(format_message(
            f"{estimator}: no treated observation (time >= cohort)", seen=cohort,
            fix="check the cohort column: it is the first treated period"))
    if treated.all():
        raise EstimationError(format_message(
            f"{estimator}: no untreated observations for the first stage (the model of Y(0))",
            fix="the first stage needs never-treated or not-yet-treated rows"))
    w = frame[weights].to_numpy(dtype=float) if weights else None
    if w is not None and (w < 0).any():
        raise InputError(format_message("weights must be non-negative", seen=float(w.min()),
                                        fix=f"check the column {weights!r}"))
    return TwoStageRows(y, t, g, never, treated, w)
