"""Optimal fixed-length confidence interval (FLCI) under smoothness restrictions.

Pure numerical kernel for :mod:`twinimpact.inference.honest_did`.

Rambachan & Roth (2023, Section 4.1), following Armstrong & Kolesár (2018): for
``Delta^SD(M) = {delta : |(delta_{t+1} - delta_t) - (delta_t - delta_{t-1})| <= M}`` and the
target ``theta = l' tau_post``, consider affine estimators ``a + v'betahat`` with
``v = (v_pre, l)``. Writing the pre-period weights through cumulative sums
``w`` (``v_pre = D w`` with ``D`` the first-difference matrix), the worst-case bias over
``Delta^SD(M)`` is ``M * (sum_s |W_s| + c(l))`` with ``W = cumsum(w)`` and a constant
``c(l)``, provided ``sum(w) = sum_t t l_t`` (otherwise a linear trend makes the bias
infinite). The FLCI is ``v'betahat +/- chi`` with half-length
``chi = h * cv_alpha(bias / h)``, ``h`` the standard deviation and ``cv_alpha(b)`` the
``1 - alpha`` quantile of ``|N(b, 1)|``; it is minimised over ``h`` on
``[h_min, h_0]`` where for each ``h`` the bias is minimised subject to ``sd <= h``.

Differences from R HonestDiD ``findOptimalFLCI`` (same estimand): the folded-normal
quantile is computed exactly by root finding (R simulates 10^6 draws), the inner
problem is solved with SLSQP and the outer one by bounded Brent search (R: ECOS and a
bisection on numerical derivatives). At ``M = 0`` the FLCI is the minimum-variance
linear-trend-robust estimator (``h = h_min``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

__all__ = ["FlciResult", "folded_normal_quantile", "optimal_flci"]


@dataclass(frozen=True)
class FlciResult:
    """Optimal FLCI for one ``M``.

    lb, ub : interval; center : ``v'betahat``; half_length : ``chi``;
    v : (num_pre + num_post,) weights on betahat; h : sd of the estimator;
    max_bias : worst-case bias over Delta^SD(M).
    """

    lb: float
    ub: float
    center: float
    half_length: float
    v: np.ndarray
    h: float
    max_bias: float


def folded_normal_quantile(p: float, mu: float) -> float:
    """``p`` quantile of ``|N(mu, 1)|`` (exact, by root finding)."""
    mu = abs(float(mu))

    def f(c: float) -> float:
        return stats.norm.cdf(c - mu) - stats.norm.cdf(-c - mu) - p

    hi = mu + 10.0
    return float(optimize.brentq(f, 0.0, hi, xtol=1e-14, rtol=1e-14))


def _matrices(sigma: np.ndarray, num_pre: int, l_vec: np.ndarray):
    """Variance of the estimator as ``w'Qw + q'w + q0``; ``D`` maps w to v_pre."""
    d = np.eye(num_pre)
    for i in range(1, num_pre):
        d[i, i - 1] = -1.0
    s_pre = sigma[:num_pre, :num_pre]
    s_pp = sigma[:num_pre, num_pre:]
    s_post = sigma[num_pre:, num_pre:]
    q = d.T @ s_pre @ d
    lin = 2 * d.T @ s_pp @ l_vec
    const = float(l_vec @ s_post @ l_vec)
    return d, q, lin, const


def _bias_constant(l_vec: np.ndarray) -> float:
    t = len(l_vec)
    tot = 0.0
    for s in range(1, t + 1):
        tot += abs(float(np.arange(1, s + 1) @ l_vec[t - s:]))
    return tot - float(np.arange(1, t + 1) @ l_vec)


def optimal_flci(betahat: np.ndarray, sigma: np.ndarray, num_pre: int, num_post: int,
                 l_vec: np.ndarray, m: float, alpha: float) -> FlciResult:
    """Optimal FLCI for ``theta = l'tau_post`` under ``Delta^SD(m)``.

    Parameters
    ----------
    betahat : (num_pre + num_post,) event-study coefficients (reference period excluded).
    sigma : (num_pre + num_post, num_pre + num_post) their covariance.
    l_vec : (num_post,) weights defining theta.
    """
    l_vec = np.asarray(l_vec, dtype=float)
    d, q, lin, const = _matrices(sigma, num_pre, l_vec)
    total = float(np.arange(1, num_post + 1) @ l_vec)  # sum(w) must equal this
    bias_c = _bias_constant(l_vec)
    lower = np.tril(np.ones((num_pre, num_pre)))

    def var(w: np.ndarray) -> float:
        return float(w @ q @ w + lin @ w + const)

    # minimum-variance w subject to sum(w) = total (KKT system)
    kkt = np.zeros((num_pre + 1, num_pre + 1))
    kkt[:num_pre, :num_pre] = 2 * q
    kkt[:num_pre, num_pre] = 1.0
    kkt[num_pre, :num_pre] = 1.0
    rhs = np.concatenate([-lin, [total]])
    w_min = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:num_pre]
    h_min = np.sqrt(max(var(w_min), 0.0))
    # minimum-bias w: all weight on the last cumulative sum
    w_0 = np.zeros(num_pre)
    w_0[-1] = total
    h_0 = np.sqrt(max(var(w_0), 0.0))

    def bias_of(w: np.ndarray) -> float:
        return float(np.abs(lower @ w).sum() + bias_c)

    crit_norm = float(stats.norm.ppf(1 - alpha / 2))
    if m == 0 or h_0 <= h_min * (1 + 1e-12):
        w_best = w_min if m == 0 else w_0
        h_best = np.sqrt(max(var(w_best), 0.0))
        b_best = bias_of(w_best)
        chi = h_best * (crit_norm if m == 0 else folded_normal_quantile(1 - alpha,
                                                                         m * b_best / h_best))
        return _finish(betahat, d, w_best, l_vec, chi, h_best, m * b_best)

    cache: dict[float, tuple[float, np.ndarray]] = {}

    def min_bias(h: float) -> tuple[float, np.ndarray]:
        """min sum|L w| s.t. sum(w) = total, var(w) <= h^2 (variables z = (u, w))."""
        if h in cache:
            return cache[h]
        n = num_pre
        x0 = np.concatenate([np.abs(lower @ w_min) + 1e-9, w_min])
        # start from a feasible blend of w_min and w_0
        lam = 0.0
        for cand in np.linspace(1.0, 0.0, 21):
            wc = cand * w_0 + (1 - cand) * w_min
            if var(wc) <= h**2:
                lam = cand
                break
        wc = lam * w_0 + (1 - lam) * w_min
        x0 = np.concatenate([np.abs(lower @ wc) + 1e-12, wc])
        cons = [
            {"type": "eq", "fun": lambda z: np.array([z[n:].sum() - total]),
             "jac": lambda z: np.concatenate([np.zeros(n), np.ones(n)])[None, :]},
            {"type": "ineq", "fun": lambda z: np.concatenate([z[:n] - lower @ z[n:],
                                                               z[:n] + lower @ z[n:]]),
             "jac": lambda z: np.block([[np.eye(n), -lower], [np.eye(n), lower]])},
            {"type": "ineq", "fun": lambda z: np.array([1.0 - var(z[n:]) / h**2]),
             "jac": lambda z: np.concatenate([np.zeros(n),
                                              -(2 * q @ z[n:] + lin) / h**2])[None, :]},
        ]
        obj = np.concatenate([np.ones(n), np.zeros(n)])
        res = optimize.minimize(lambda z: float(obj @ z), x0, jac=lambda z: obj,
                                constraints=cons, method="SLSQP",
                                options={"ftol": 1e-13, "maxiter": 500})
        w = res.x[n:]
        if var(w) > h**2 * (1 + 1e-6):  # infeasible answer: keep the feasible start
            w = wc
        out = (bias_of(w), w)
        cache[h] = out
        return out

    def half_length(h: float) -> float:
        b, _ = min_bias(h)
        return h * folded_normal_quantile(1 - alpha, m * b / h)

    res = optimize.minimize_scalar(half_length, bounds=(h_min, h_0), method="bounded",
                                   options={"xatol": 1e-10 * max(h_0, 1e-300)})
    cands = [(half_length(h), h) for h in (res.x, h_0)]
    chi, h_best = min(cands)
    b_best, w_best = min_bias(h_best)
    return _finish(betahat, d, w_best, l_vec, chi, h_best, m * b_best)


def _finish(betahat, d, w, l_vec, chi, h, bias) -> FlciResult:
    v = np.concatenate([d @ w, l_vec])
    center = float(v @ betahat)
    return FlciResult(lb=center - chi, ub=center + chi, center=center, half_length=float(chi),
                      v=v, h=float(h), max_bias=float(bias))
