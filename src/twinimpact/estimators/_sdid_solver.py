"""Numerical kernels of synthetic difference-in-differences (pure functions, arrays in).

Arkhangelsky, Athey, Hirshberg, Imbens & Wager (2021), "Synthetic Difference-in-
Differences", *American Economic Review* 111(12), 4088-4118, Algorithm 1; the numerical
choices (Frank-Wolfe with exact line search, the stopping rule, the sparsification
step, the default regularisation) follow the reference R package ``synthdid``
(synth-inference/synthdid, ``R/solver.R`` and ``R/synthdid.R``), so that estimates agree
with it to numerical precision.

Notation (the paper's): ``Y`` is an ``(N, T)`` outcome matrix whose first ``N0`` rows are
control units and whose first ``T0`` columns are pre-treatment periods; ``N1 = N - N0``
treated units, ``T1 = T - T0`` post periods.  ``omega`` (length ``N0``) are unit weights,
``lambda`` (length ``T0``) time weights, both on the unit simplex.  The estimate is

    tau = (-omega, 1/N1 ... 1/N1)' Y (-lambda, 1/T1 ... 1/T1).

The weights solve the ridge-penalised simplex least squares problems

    omega = argmin_{w in simplex} zeta_omega^2 ||w||^2
            + (1/T0) sum_t (omega_0 + sum_i w_i Y_it - mean_{treated} Y_t)^2,
    lambda = argmin_{l in simplex} zeta_lambda^2 ||l||^2
            + (1/N0) sum_i (lambda_0 + sum_t l_t Y_it - mean_{post} Y_i)^2,

the intercepts ``omega_0`` / ``lambda_0`` being profiled out by centring when requested.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "FWResult",
    "SDIDFit",
    "SDIDOptions",
    "collapsed_form",
    "fw_objective",
    "noise_level",
    "sc_weight_fw",
    "sc_weight_fw_batch",
    "sc_weight_fw_reference",
    "sdid_fit",
    "sparsify",
]


@dataclass(frozen=True)
class FWResult:
    """Output of :func:`sc_weight_fw`.

    Attributes
    ----------
    weights : ndarray, shape (k,)
        Solution on the unit simplex.
    values : ndarray, shape (n_iter,)
        Penalised objective after each iteration.
    n_iter : int
        Iterations run.
    converged : bool
        True when the stopping rule (decrease <= ``min_decrease**2``) ended the loop,
        False when ``max_iter`` was reached first.
    """

    weights: np.ndarray
    values: np.ndarray
    n_iter: int
    converged: bool


def fw_objective(Y: np.ndarray, w: np.ndarray, zeta: float, intercept: bool) -> float:
    """Penalised objective ``zeta^2 ||w||^2 + ||A w - b||^2 / n`` of :func:`sc_weight_fw`.

    ``Y`` has shape ``(n, k + 1)``: ``A = Y[:, :k]``, ``b = Y[:, k]`` (both column-centred
    when ``intercept``).
    """
    Y = np.asarray(Y, dtype=float)
    if intercept:
        Y = Y - Y.mean(axis=0)
    err = Y[:, :-1] @ w - Y[:, -1]
    return float(zeta**2 * (w @ w) + (err @ err) / Y.shape[0])


def sc_weight_fw_reference(Y: np.ndarray, zeta: float, *, intercept: bool = True,
                           init: np.ndarray | None = None, min_decrease: float = 1e-3,
                           max_iter: int = 1000) -> FWResult:
    """Frank-Wolfe with exact line search for simplex-constrained ridge regression.

    Minimises ``zeta^2 ||x||^2 + ||A x - b||^2 / n`` over the unit simplex, where
    ``A = Y[:, :k]`` and ``b = Y[:, k]`` (``Y`` of shape ``(n, k + 1)``; columns centred
    first when ``intercept``), as R synthdid's ``sc.weight.fw``: start at ``init``
    (uniform by default); each step moves towards the vertex with the smallest partial
    derivative with the exactly optimal step length; stop after ``max_iter`` steps or
    once an iteration (from the second on) decreases the objective by no more than
    ``min_decrease**2``.

    This is the literal transcription (residuals recomputed every step); the fast path
    :func:`sc_weight_fw` gives the same iterates and is tested against it.
    """
    Y = np.asarray(Y, dtype=float)
    n, k1 = Y.shape
    k = k1 - 1
    if intercept:
        Y = Y - Y.mean(axis=0)
    A = np.ascontiguousarray(Y[:, :k])
    AT = np.ascontiguousarray(A.T)
    b = Y[:, k].copy()
    x = np.full(k, 1.0 / k) if init is None else np.array(init, dtype=float)
    eta = n * zeta**2
    min_dec2 = min_decrease**2
    vals = np.empty(max_iter)
    t = 0
    converged = False
    err = A @ x - b
    while t < max_iter:
        if t >= 2 and not (vals[t - 2] - vals[t - 1] > min_dec2):
            converged = True
            break
        half_grad = AT @ err + eta * x
        i = int(np.argmin(half_grad))
        d_x = -x
        d_x[i] = 1.0 - x[i]
        if np.any(d_x != 0):
            d_err = A[:, i] - b - err          # A[:, i] - A x
            den = float(d_err @ d_err + eta * (d_x @ d_x))
            step = -float(half_grad @ d_x) / den if den > 0 else 0.0
            step = min(1.0, max(0.0, step))
            x = x + step * d_x
        err = A @ x - b
        vals[t] = zeta**2 * float(x @ x) + float(err @ err) / n
        t += 1
    if not converged and t >= 2 and not (vals[t - 2] - vals[t - 1] > min_dec2):
        converged = True
    return FWResult(weights=x, values=vals[:t].copy(), n_iter=t, converged=converged)


def sc_weight_fw(Y: np.ndarray, zeta: float, *, intercept: bool = True,
                 init: np.ndarray | None = None, min_decrease: float = 1e-3,
                 max_iter: int = 1000) -> FWResult:
    """Fast path of :func:`sc_weight_fw_reference` (same problem, same iterates).

    Works in Gram form: with ``G = A'A``, ``q = G x``, ``c = x'Gx``, ``p = x'A'b`` and
    ``|x|^2`` all updated in O(k) per step (a Frank-Wolfe step is the convex combination
    ``x <- (1 - s) x + s e_i``), so no step touches the ``n x k`` data again.
    """
    Y = np.asarray(Y, dtype=float)
    n, k1 = Y.shape
    k = k1 - 1
    if intercept:
        Y = Y - Y.mean(axis=0)
    A = Y[:, :k]
    b = Y[:, k]
    G = A.T @ A
    GT = np.ascontiguousarray(G.T)
    Atb = A.T @ b
    bb = float(b @ b)
    Gd = np.diag(G).tolist()
    Atb_l = Atb.tolist()
    x = np.full(k, 1.0 / k) if init is None else np.array(init, dtype=float)
    eta = n * zeta**2
    z2 = zeta**2
    md2 = min_decrease**2
    q = G @ x
    c = float(x @ q)
    p = float(x @ Atb)
    xx = float(x @ x)
    vals = np.empty(max_iter)
    t = 0
    converged = False
    while t < max_iter:
        if t >= 2 and not (vals[t - 2] - vals[t - 1] > md2):
            converged = True
            break
        hg = q - Atb
        hg += eta * x
        i = int(hg.argmin())
        xi = float(x[i])
        dxx = xx - 2.0 * xi + 1.0                      # |d_x|^2, d_x = e_i - x
        if dxx > 0:
            qi = float(q[i])
            num = float(hg[i]) - float(hg @ x)         # half_grad . d_x
            den = (Gd[i] - 2.0 * qi + c) + eta * dxx   # |A d_x|^2 + eta |d_x|^2
            s = -num / den if den > 0 else 0.0
            s = 1.0 if s > 1.0 else (0.0 if s < 0.0 else s)
            if s > 0.0:
                u = 1.0 - s
                c = u * u * c + 2.0 * s * u * qi + s * s * Gd[i]
                p = u * p + s * Atb_l[i]
                xx = u * u * xx + 2.0 * s * u * xi + s * s
                x *= u
                x[i] += s
                q *= u
                q += s * GT[i]
        vals[t] = z2 * xx + max(c - 2.0 * p + bb, 0.0) / n
        t += 1
    if not converged and t >= 2 and not (vals[t - 2] - vals[t - 1] > md2):
        converged = True
    return FWResult(weights=x, values=vals[:t].copy(), n_iter=t, converged=converged)


def sc_weight_fw_batch(Y: np.ndarray, zeta: float, *, intercept: bool = True,
                       init: np.ndarray | None = None, min_decrease: float = 1e-3,
                       max_iter: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`sc_weight_fw` on a stack of ``B`` same-sized problems at once.

    ``Y`` has shape ``(B, n, k + 1)``, ``init`` ``(B, k)``; returns ``(weights (B, k),
    n_iter (B,), converged (B,))``. Each problem follows exactly its own iterates and
    stopping rule; batching only removes interpreter overhead (placebo replications).
    """
    w, _, n_iter, conv = _fw_gram(np.asarray(Y, dtype=float), zeta, intercept=intercept,
                                  init=init, min_decrease=min_decrease, max_iter=max_iter,
                                  keep_values=False)
    return w, n_iter, conv


def _fw_gram(Y: np.ndarray, zeta: float, *, intercept: bool, init: np.ndarray | None,
             min_decrease: float, max_iter: int, keep_values: bool):
    B, n, k1 = Y.shape
    k = k1 - 1
    if intercept:
        Y = Y - Y.mean(axis=1, keepdims=True)
    A = Y[:, :, :k]
    b = Y[:, :, k]
    G = np.einsum("bnk,bnl->bkl", A, A)
    GT = np.ascontiguousarray(np.swapaxes(G, 1, 2))   # GT[b, i] = G[b, :, i]
    Atb = np.einsum("bnk,bn->bk", A, b)
    bb = np.einsum("bn,bn->b", b, b)
    Gd = np.einsum("bkk->bk", G).copy()
    x = np.full((B, k), 1.0 / k) if init is None else np.array(init, dtype=float).copy()
    eta = n * zeta**2
    z2 = zeta**2
    md2 = min_decrease**2
    q = np.einsum("bkl,bl->bk", G, x)
    c = np.einsum("bk,bk->b", x, q)
    p = np.einsum("bk,bk->b", x, Atb)
    xx = np.einsum("bk,bk->b", x, x)
    rows = np.arange(B)
    v1 = np.full(B, np.nan)   # objective after the last iteration
    v2 = np.full(B, np.nan)   # ... and the one before
    active = np.ones(B, dtype=bool)
    n_iter = np.zeros(B, dtype=int)
    vals = np.empty(max_iter) if keep_values else None
    t = 0
    while t < max_iter:
        if t >= 2:
            active &= (v2 - v1) > md2
            if not active.any():
                break
        hg = q - Atb + eta * x
        i = hg.argmin(axis=1)
        xi = x[rows, i]
        qi = q[rows, i]
        gdi = Gd[rows, i]
        num = hg[rows, i] - np.einsum("bk,bk->b", hg, x)     # half_grad . d_x, negated
        dxx = xx - 2.0 * xi + 1.0                           # |d_x|^2
        den = (gdi - 2.0 * qi + c) + eta * dxx              # |A d_x|^2 + eta |d_x|^2
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(den > 0, -num / den, 0.0)
        s = np.clip(s, 0.0, 1.0)
        s = np.where(active & (dxx > 0), s, 0.0)
        u = 1.0 - s
        c = u * u * c + 2.0 * s * u * qi + s * s * gdi
        p = u * p + s * Atb[rows, i]
        xx = u * u * xx + 2.0 * s * u * xi + s * s
        x *= u[:, None]
        x[rows, i] += s
        q *= u[:, None]
        q += s[:, None] * GT[rows, i]
        val = z2 * xx + np.maximum(c - 2.0 * p + bb, 0.0) / n
        v2 = np.where(active, v1, v2)
        v1 = np.where(active, val, v1)
        n_iter += active
        if keep_values:
            vals[t] = val[0]
        t += 1
    converged = (n_iter >= 2) & ~((v2 - v1) > md2)
    return x, (vals[:t].copy() if keep_values else None), n_iter, converged


def sparsify(v: np.ndarray) -> np.ndarray:
    """R synthdid's ``sparsify_function``: zero weights ``<= max/4``, renormalise."""
    v = np.array(v, dtype=float)
    v[v <= v.max() / 4] = 0.0
    return v / v.sum()


def sum_normalize(x: np.ndarray) -> np.ndarray:
    """``x / sum(x)``, or uniform weights when ``x`` sums to zero (R ``sum_normalize``)."""
    x = np.asarray(x, dtype=float)
    s = x.sum()
    if s != 0:
        return x / s
    return np.full(len(x), 1.0 / len(x))


def collapsed_form(Y: np.ndarray, N0: int, T0: int) -> np.ndarray:
    """``(N0 + 1, T0 + 1)`` matrix: treated rows and post columns replaced by their means."""
    out = np.empty((N0 + 1, T0 + 1))
    out[:N0, :T0] = Y[:N0, :T0]
    out[:N0, T0] = Y[:N0, T0:].mean(axis=1)
    out[N0, :T0] = Y[N0:, :T0].mean(axis=0)
    out[N0, T0] = Y[N0:, T0:].mean()
    return out


def noise_level(Y: np.ndarray, N0: int, T0: int) -> float:
    """Sample standard deviation of the first differences of control pre-period outcomes.

    R: ``sd(apply(Y[1:N0, 1:T0], 1, diff))``; NaN when fewer than two differences exist.
    """
    d = np.diff(Y[:N0, :T0], axis=1).ravel()
    if d.size < 2:
        return float("nan")
    return float(np.std(d, ddof=1))


@dataclass(frozen=True)
class SDIDOptions:
    """Tuning of one weight problem set (what R keeps in ``attr(estimate, 'opts')``).

    ``zeta_*`` are the ridge penalties, ``*_intercept`` whether the weights' regressions
    have an intercept, ``update_*`` whether the weights are estimated (else fixed at the
    initial values), ``min_decrease``/``max_iter`` the Frank-Wolfe stopping rule, and
    ``sparsify``/``max_iter_pre_sparsify`` the two-pass sparsification.
    """

    zeta_omega: float
    zeta_lambda: float
    omega_intercept: bool = True
    lambda_intercept: bool = True
    update_omega: bool = True
    update_lambda: bool = True
    min_decrease: float = 1e-3
    max_iter: int = 10_000
    sparsify: bool = True
    max_iter_pre_sparsify: int = 100


@dataclass(frozen=True)
class SDIDFit:
    """One simultaneous-adoption fit (Algorithm 1).

    Attributes
    ----------
    tau : float
        The estimate.
    omega : ndarray, shape (N0,)
        Unit weights of the control rows.
    lam : ndarray, shape (T0,)
        Time weights of the pre-period columns (all zero for SC).
    N0, T0, N1, T1 : int
        Block sizes.
    options : SDIDOptions
        The options used (reused by placebo / bootstrap / jackknife replications).
    iterations : dict
        Frank-Wolfe iterations and convergence per pass (``omega_pass1``, ...).
    beta : ndarray or None
        Covariate coefficients of the "optimized" covariate adjustment (None without).
    """

    tau: float
    omega: np.ndarray
    lam: np.ndarray
    N0: int
    T0: int
    N1: int
    T1: int
    options: SDIDOptions
    iterations: dict = field(default_factory=dict)
    beta: np.ndarray | None = None


def _solve(Yw: np.ndarray, zeta: float, intercept: bool, init: np.ndarray | None,
           opts: SDIDOptions, tag: str, info: dict) -> np.ndarray:
    first_iter = opts.max_iter_pre_sparsify if opts.sparsify else opts.max_iter
    fw = sc_weight_fw(Yw, zeta, intercept=intercept, init=init,
                      min_decrease=opts.min_decrease, max_iter=first_iter)
    info[f"{tag}_pass1"] = {"iterations": fw.n_iter, "converged": fw.converged}
    if opts.sparsify:
        fw = sc_weight_fw(Yw, zeta, intercept=intercept, init=sparsify(fw.weights),
                          min_decrease=opts.min_decrease, max_iter=opts.max_iter)
        info[f"{tag}_pass2"] = {"iterations": fw.n_iter, "converged": fw.converged}
    info[f"{tag}_objective"] = float(fw.values[-1]) if fw.n_iter else float("nan")
    return fw.weights


def sdid_fit(Y: np.ndarray, N0: int, T0: int, opts: SDIDOptions, *,
             omega: np.ndarray | None = None, lam: np.ndarray | None = None) -> SDIDFit:
    """Weights and estimate for one treated block (R ``synthdid_estimate`` without X).

    ``omega``/``lam`` are initial values when the corresponding ``update_*`` option is
    True, and the fixed weights otherwise (then they are required).
    """
    Y = np.asarray(Y, dtype=float)
    N, T = Y.shape
    N1, T1 = N - N0, T - T0
    info: dict = {}
    Yc = collapsed_form(Y, N0, T0)
    if opts.update_lambda:
        lam = _solve(Yc[:N0, :], opts.zeta_lambda, opts.lambda_intercept, lam, opts,
                     "lambda", info)
    if opts.update_omega:
        omega = _solve(Yc[:, :T0].T, opts.zeta_omega, opts.omega_intercept, omega, opts,
                       "omega", info)
    if omega is None or lam is None:  # pragma: no cover - internal misuse
        raise ValueError("fixed weights must be given when update_* is False")
    omega = np.asarray(omega, dtype=float)
    lam = np.asarray(lam, dtype=float)
    row = np.concatenate([-omega, np.full(N1, 1.0 / N1)])
    col = np.concatenate([-lam, np.full(T1, 1.0 / T1)])
    tau = float(row @ Y @ col)
    return SDIDFit(tau=tau, omega=omega, lam=lam, N0=N0, T0=T0, N1=N1, T1=T1,
                   options=opts, iterations=info)


def default_options(method: str, Y: np.ndarray, N0: int, T0: int) -> tuple[SDIDOptions, dict]:
    """synthdid's defaults for ``method`` in {"sdid", "sc", "did"}; returns (options, info).

    sdid: ``sigma`` = :func:`noise_level`, ``eta_omega = (N1 T1)^(1/4)``,
    ``zeta_omega = eta_omega sigma``, ``zeta_lambda = 1e-6 sigma``,
    ``min_decrease = 1e-5 sigma``, intercepts on both weights.  sc (``sc_estimate``):
    ``eta_omega = 1e-6``, no omega intercept, lambda fixed at zero.  did
    (``did_estimate``): uniform weights, nothing estimated.
    """
    N, T = Y.shape
    N1, T1 = N - N0, T - T0
    sigma = noise_level(Y, N0, T0)
    eta_omega = 1e-6 if method == "sc" else float((N1 * T1) ** 0.25)
    eta_lambda = 1e-6
    opts = SDIDOptions(
        zeta_omega=eta_omega * sigma, zeta_lambda=eta_lambda * sigma,
        omega_intercept=method != "sc", lambda_intercept=True,
        update_omega=method != "did", update_lambda=method == "sdid",
        min_decrease=1e-5 * sigma, max_iter=10_000,
    )
    return opts, {"noise_level": sigma, "eta_omega": eta_omega, "eta_lambda": eta_lambda}


def fixed_weights(method: str, N0: int, T0: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Initial/fixed (omega, lambda) of ``method``: did uniform, sc lambda = 0."""
    if method == "did":
        return np.full(N0, 1.0 / N0), np.full(T0, 1.0 / T0)
    if method == "sc":
        return None, np.zeros(T0)
    return None, None


def collapsed_form_batch(Y: np.ndarray, N0: int, T0: int) -> np.ndarray:
    """:func:`collapsed_form` of a stack ``(B, N, T)`` -> ``(B, N0 + 1, T0 + 1)``."""
    B = Y.shape[0]
    out = np.empty((B, N0 + 1, T0 + 1))
    out[:, :N0, :T0] = Y[:, :N0, :T0]
    out[:, :N0, T0] = Y[:, :N0, T0:].mean(axis=2)
    out[:, N0, :T0] = Y[:, N0:, :T0].mean(axis=1)
    out[:, N0, T0] = Y[:, N0:, T0:].mean(axis=(1, 2))
    return out


def _solve_batch(Yw: np.ndarray, zeta: float, intercept: bool, init: np.ndarray | None,
                 opts: SDIDOptions) -> np.ndarray:
    first_iter = opts.max_iter_pre_sparsify if opts.sparsify else opts.max_iter
    w, _, _ = sc_weight_fw_batch(Yw, zeta, intercept=intercept, init=init,
                                 min_decrease=opts.min_decrease, max_iter=first_iter)
    if opts.sparsify:
        w = np.array([sparsify(row) for row in w])
        w, _, _ = sc_weight_fw_batch(Yw, zeta, intercept=intercept, init=w,
                                     min_decrease=opts.min_decrease, max_iter=opts.max_iter)
    return w


def sdid_fit_batch(Y: np.ndarray, N0: int, T0: int, opts: SDIDOptions, *,
                   omega: np.ndarray | None = None, lam: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`sdid_fit` for a stack ``Y`` of shape ``(B, N, T)`` sharing ``N0``, ``T0``
    and ``opts``; ``omega`` ``(B, N0)`` / ``lam`` ``(B, T0)`` are initial or fixed weights.

    Returns ``(tau (B,), omega (B, N0), lam (B, T0))``.
    """
    Y = np.asarray(Y, dtype=float)
    B, N, T = Y.shape
    N1, T1 = N - N0, T - T0
    Yc = collapsed_form_batch(Y, N0, T0)
    if opts.update_lambda:
        lam = _solve_batch(Yc[:, :N0, :], opts.zeta_lambda, opts.lambda_intercept, lam, opts)
    if opts.update_omega:
        omega = _solve_batch(np.swapaxes(Yc[:, :, :T0], 1, 2), opts.zeta_omega,
                             opts.omega_intercept, omega, opts)
    if omega is None or lam is None:  # pragma: no cover - internal misuse
        raise ValueError("fixed weights must be given when update_* is False")
    omega = np.broadcast_to(np.asarray(omega, dtype=float), (B, N0))
    lam = np.broadcast_to(np.asarray(lam, dtype=float), (B, T0))
    row = np.concatenate([-omega, np.full((B, N1), 1.0 / N1)], axis=1)
    col = np.concatenate([-lam, np.full((B, T1), 1.0 / T1)], axis=1)
    tau = np.einsum("bn,bnt,bt->b", row, Y, col)
    return tau, np.array(omega), np.array(lam)
