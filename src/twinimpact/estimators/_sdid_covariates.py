"""Synthetic DiD with time-varying covariates (pure functions, arrays in).

Two ways of adjusting the outcome for covariates ``X`` (shape ``(N, T, K)``), both as the
Stata ``sdid`` command (Clarke, Pailañir, Athey & Imbens 2023, *Synthetic difference in
differences estimation*, option ``covariates(varlist, method)``):

``"optimized"`` — Arkhangelsky et al. (2021, footnote 4) as R ``synthdid``'s
    ``sc.weight.fw.covariates``: the coefficients ``beta`` are found jointly with the unit
    and time weights, alternating one Frank-Wolfe step on each weight problem of the
    collapsed outcome ``Y - X beta`` with one gradient step on ``beta`` (step ``1/t``),
    until the penalised objective decreases by no more than ``min_decrease**2``. The
    estimate is the SDID contrast of ``Y - X beta``. Stata standardises each covariate
    (z-score over the estimation sample) first; so do we (``beta`` is reported for the
    standardised covariates, as Stata's ``e(beta)``).
``"projected"`` — Kranz (2022, R ``xsynthdid``): ``beta`` from an OLS regression of the
    outcome on the covariates with unit and period fixed effects on the never-treated
    units' rows (all periods; Stata ``sdid``'s default) or on every untreated unit-period
    (``sdid``'s ``_not_yet``; what ``sdid_event`` does); SDID then runs on ``Y - X beta``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._sdid_solver import SDIDFit, SDIDOptions, collapsed_form

__all__ = [
    "CovariateFitInfo",
    "fw_step",
    "project_beta",
    "sc_weight_fw_covariates",
    "sdid_fit_covariates",
    "standardize",
]


def fw_step(A: np.ndarray, x: np.ndarray, b: np.ndarray, eta: float) -> np.ndarray:
    """One Frank-Wolfe step with exact line search for ``min eta|x|^2 + |Ax - b|^2`` on
    the simplex (R synthdid ``fw.step``)."""
    Ax = A @ x
    half_grad = (Ax - b) @ A + eta * x
    i = int(np.argmin(half_grad))
    d_x = -x.copy()
    d_x[i] = 1.0 - x[i]
    if not np.any(d_x != 0):
        return x
    d_err = A[:, i] - Ax
    den = float(d_err @ d_err + eta * (d_x @ d_x))
    step = -float(half_grad @ d_x) / den if den > 0 else 0.0
    return x + min(1.0, max(0.0, step)) * d_x


@dataclass(frozen=True)
class CovariateFitInfo:
    """Iterations of the joint weights-and-beta descent."""

    iterations: int
    converged: bool
    objective: float


def sc_weight_fw_covariates(Yc: np.ndarray, Xc: np.ndarray, opts: SDIDOptions, *,
                            lam: np.ndarray | None, omega: np.ndarray | None,
                            beta: np.ndarray | None, step_offset: int = 0
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, CovariateFitInfo]:
    """Joint descent on (lambda, omega, beta) of the collapsed problem.

    ``Yc`` is the ``(N0 + 1, T0 + 1)`` collapsed outcome, ``Xc`` the collapsed covariates
    ``(N0 + 1, T0 + 1, K)``. Follows R synthdid ``sc.weight.fw.covariates`` step for step:
    update the weights by one FW step each, then ``beta -= grad / t``, stopping once the
    objective decreases by at most ``min_decrease**2`` (from the second iteration) or after
    ``max_iter`` iterations. ``step_offset=1`` gives the step ``1/(t+1)`` of the Python
    port synthdid.py 0.10 (used only to test against its published numbers).
    """
    N0, T0 = Yc.shape[0] - 1, Yc.shape[1] - 1
    K = Xc.shape[2]
    lam = np.full(T0, 1.0 / T0) if lam is None else np.array(lam, dtype=float)
    omega = np.full(N0, 1.0 / N0) if omega is None else np.array(omega, dtype=float)
    beta = np.zeros(K) if beta is None else np.array(beta, dtype=float)
    zl2, zo2 = opts.zeta_lambda**2, opts.zeta_omega**2
    eta_l, eta_o = N0 * zl2, T0 * zo2
    # Centring is linear, so centre Y and each covariate once: Y_l(beta) = Yl0 - Xl beta.
    # The beta gradient may use centred covariates: the residuals sum to zero.
    Yl0, Yo0 = Yc[:N0, :], Yc[:, :T0].T
    Xl = np.moveaxis(Xc[:N0, :, :], 2, 0)                  # (K, N0, T0 + 1)
    Xo = np.moveaxis(Xc[:, :T0, :], 2, 0).transpose(0, 2, 1)  # (K, T0, N0 + 1)
    if opts.lambda_intercept:
        Yl0 = Yl0 - Yl0.mean(axis=0)
        Xl = Xl - Xl.mean(axis=1, keepdims=True)
    if opts.omega_intercept:
        Yo0 = Yo0 - Yo0.mean(axis=0)
        Xo = Xo - Xo.mean(axis=1, keepdims=True)

    def update(lam: np.ndarray, omega: np.ndarray):
        Yl = Yl0 - np.tensordot(beta, Xl, axes=1)
        if opts.update_lambda:
            lam = fw_step(Yl[:, :T0], lam, Yl[:, T0], eta_l)
        err_l = Yl[:, :T0] @ lam - Yl[:, T0]
        Yo = Yo0 - np.tensordot(beta, Xo, axes=1)
        if opts.update_omega:
            omega = fw_step(Yo[:, :N0], omega, Yo[:, N0], eta_o)
        err_o = Yo[:, :N0] @ omega - Yo[:, N0]
        val = (zo2 * float(omega @ omega) + zl2 * float(lam @ lam)
               + float(err_o @ err_o) / T0 + float(err_l @ err_l) / N0)
        return lam, omega, err_l, err_o, val

    lam, omega, err_l, err_o, _ = update(lam, omega)
    md2 = opts.min_decrease**2
    vals: list[float] = []
    t = 0
    while t < opts.max_iter and (t < 2 or vals[-2] - vals[-1] > md2):
        t += 1
        grad = -((Xl @ np.append(lam, -1.0)) @ err_l / N0
                 + (Xo @ np.append(omega, -1.0)) @ err_o / T0)
        beta = beta - grad / (t + step_offset)
        lam, omega, err_l, err_o, val = update(lam, omega)
        vals.append(val)
    converged = t >= 2 and not (vals[-2] - vals[-1] > md2)
    return lam, omega, beta, CovariateFitInfo(iterations=t, converged=bool(converged),
                                              objective=vals[-1] if vals else float("nan"))


def sdid_fit_covariates(Y: np.ndarray, X: np.ndarray, N0: int, T0: int, opts: SDIDOptions,
                        *, omega: np.ndarray | None = None, lam: np.ndarray | None = None,
                        beta: np.ndarray | None = None, step_offset: int = 0) -> SDIDFit:
    """One treated block with covariates, "optimized" (R ``synthdid_estimate`` with ``X``).

    ``Y`` is ``(N, T)``, ``X`` ``(N, T, K)``; returns an :class:`SDIDFit` whose ``tau`` is
    the SDID contrast of ``Y - X beta`` and whose ``beta`` holds the coefficients.
    """
    N, T = Y.shape
    N1, T1 = N - N0, T - T0
    Yc = collapsed_form(Y, N0, T0)
    Xc = np.stack([collapsed_form(X[:, :, k], N0, T0) for k in range(X.shape[2])], axis=2)
    lam, omega, beta, info = sc_weight_fw_covariates(Yc, Xc, opts, lam=lam, omega=omega,
                                                     beta=beta, step_offset=step_offset)
    Yb = Y - X @ beta
    row = np.concatenate([-omega, np.full(N1, 1.0 / N1)])
    col = np.concatenate([-lam, np.full(T1, 1.0 / T1)])
    return SDIDFit(tau=float(row @ Yb @ col), omega=omega, lam=lam, N0=N0, T0=T0, N1=N1,
                   T1=T1, options=opts,
                   iterations={"joint": {"iterations": info.iterations,
                                         "converged": info.converged},
                               "joint_objective": info.objective},
                   beta=beta)


def project_beta(Y: np.ndarray, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Kranz (2022) projection: OLS of ``Y`` on ``X`` with unit and period fixed effects on
    the unit-periods where ``mask`` (shape ``(N, T)``) is True (Stata ``sdid``: the
    never-treated units' rows; with ``_not_yet`` / in ``sdid_event``: every untreated
    unit-period).

    Frisch-Waugh: unit fixed effects absorbed by demeaning within unit over the masked
    periods, period fixed effects by regressing on the unit-demeaned period dummies (exact
    for unbalanced masks). Returns ``beta`` of shape ``(K,)``.
    """
    mask = np.asarray(mask, dtype=bool)
    rows, cols = np.nonzero(mask)
    N = mask.shape[0]
    cnt = mask.sum(axis=1)

    def unit_demean(v: np.ndarray) -> np.ndarray:
        s = np.bincount(rows, weights=v, minlength=N)
        return v - (s / np.maximum(cnt, 1))[rows]

    y = unit_demean(Y[rows, cols])
    Xk = [unit_demean(X[rows, cols, k]) for k in range(X.shape[2])]
    used_t = np.unique(cols)
    D = np.zeros((len(rows), len(used_t)))
    D[np.arange(len(rows)), np.searchsorted(used_t, cols)] = 1.0
    D = np.column_stack([unit_demean(D[:, j]) for j in range(1, len(used_t))]) \
        if len(used_t) > 1 else np.zeros((len(rows), 0))
    Z = np.column_stack(Xk + ([D] if D.shape[1] else []))
    coef, *_ = np.linalg.lstsq(Z, y, rcond=None)
    return coef[:X.shape[2]]


def standardize(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-scores of each covariate over all unit-periods (sample sd, as Stata ``egen std``).

    Returns ``(Z, mean, sd)``.
    """
    flat = X.reshape(-1, X.shape[2])
    mean = flat.mean(axis=0)
    sd = flat.std(axis=0, ddof=1)
    return (X - mean) / sd, mean, sd
