"""Multivariate normal rectangle probabilities and truncated means (pure numerics).

``rect_prob(mean, cov, lower, upper)`` is ``P(lower <= X <= upper)`` for
``X ~ N(mean, cov)``; ``truncated_mean`` is ``E[X | lower <= X <= upper]``.

Method by dimension ``d``:

* ``d == 1``: the normal CDF (exact).
* ``2 <= d <= EXACT_MAX_DIM`` (3): iterated conditioning -- integrate the density of
  ``X_1`` (then ``X_2`` given ``X_1``) over its interval with Gauss-Legendre rules of
  ``GL_NODES`` nodes on each of ``GL_PANELS`` panels, the innermost coordinate by the
  normal CDF. Deterministic; agrees with adaptive quadrature to about 1e-12 on the
  problems in the tests (pre-test rectangles of +-z standard errors).
* ``d > EXACT_MAX_DIM``: scipy's randomized quasi-Monte-Carlo (Genz) integration,
  ``multivariate_normal.cdf`` with absolute error target ``QMC_ABSEPS`` and a fixed seed,
  so results are reproducible; their error is of the order of ``QMC_ABSEPS`` (1e-5;
  R pretrends uses mvtnorm's default 1e-3).

``truncated_mean`` uses the Tallis (1961) / Manjunath & Wilhelm (2012) moment formula
``E[X] = mu + Sigma F / P`` with ``F_k = f_k(a_k) - f_k(b_k)``, ``f_k(x)`` the density of
``X_k`` at ``x`` times the ``(d-1)``-dimensional rectangle probability of the other
coordinates given ``X_k = x`` (the formula R ``tmvtnorm::mtmvnorm`` implements).
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.special import ndtr

__all__ = ["EXACT_MAX_DIM", "QMC_ABSEPS", "rect_prob", "truncated_mean"]

EXACT_MAX_DIM = 3
GL_NODES = 24
GL_PANELS = 2
QMC_ABSEPS = 1e-5
QMC_MAXPTS = 1_000_000
_SPAN = 9.0  # standard deviations kept on each side of the mean (mass beyond: 2e-19)
_X, _W = np.polynomial.legendre.leggauss(GL_NODES)


def _nodes(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre nodes and weights on [lo, hi] (standard-normal units)."""
    edges = np.linspace(lo, hi, GL_PANELS + 1)
    half = np.diff(edges) / 2
    mid = (edges[:-1] + edges[1:]) / 2
    x = (mid[:, None] + half[:, None] * _X[None, :]).ravel()
    w = (half[:, None] * _W[None, :]).ravel()
    return x, w


def _rect_exact(mean: np.ndarray, cov: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Iterated conditioning for d <= EXACT_MAX_DIM (vectorised over the outer nodes)."""
    d = len(mean)
    s1 = np.sqrt(cov[0, 0])
    lo = max((a[0] - mean[0]) / s1, -_SPAN)
    hi = min((b[0] - mean[0]) / s1, _SPAN)
    if d == 1:
        return float(ndtr((b[0] - mean[0]) / s1) - ndtr((a[0] - mean[0]) / s1))
    if hi <= lo:
        return 0.0
    z, w = _nodes(lo, hi)
    dens = w * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    beta = cov[1:, 0] / cov[0, 0]
    c_cov = cov[1:, 1:] - np.outer(cov[1:, 0], cov[1:, 0]) / cov[0, 0]
    x1 = mean[0] + s1 * z
    c_mean = mean[1:][None, :] + (x1 - mean[0])[:, None] * beta[None, :]
    if d == 2:
        sd = np.sqrt(max(c_cov[0, 0], 0.0))
        if sd == 0.0:
            inner = ((c_mean[:, 0] >= a[1]) & (c_mean[:, 0] <= b[1])).astype(float)
        else:
            inner = ndtr((b[1] - c_mean[:, 0]) / sd) - ndtr((a[1] - c_mean[:, 0]) / sd)
        return float(np.clip(dens @ inner, 0.0, 1.0))
    # d == 3: one more level, vectorised over (outer node, inner node)
    s2 = np.sqrt(c_cov[0, 0])
    beta2 = c_cov[1, 0] / c_cov[0, 0]
    sd3 = np.sqrt(max(c_cov[1, 1] - c_cov[1, 0] ** 2 / c_cov[0, 0], 0.0))
    m2, m3 = c_mean[:, 0], c_mean[:, 1]
    lo2 = np.maximum((a[1] - m2) / s2, -_SPAN)
    hi2 = np.minimum((b[1] - m2) / s2, _SPAN)
    live = hi2 > lo2
    if not live.any():
        return 0.0
    lo2, hi2, m3, dens = lo2[live], hi2[live], m3[live], dens[live]
    # composite Gauss-Legendre per outer node: rows = outer nodes
    frac = (np.arange(GL_PANELS)[:, None] + (_X[None, :] + 1) / 2).ravel() / GL_PANELS
    width = hi2 - lo2
    z2 = lo2[:, None] + width[:, None] * frac[None, :]
    w2 = (width / (2 * GL_PANELS))[:, None] * np.tile(_W, GL_PANELS)[None, :]
    dens2 = w2 * np.exp(-0.5 * z2 * z2) / np.sqrt(2 * np.pi)
    m3c = m3[:, None] + beta2 * s2 * z2
    if sd3 == 0.0:
        inner = ((m3c >= a[2]) & (m3c <= b[2])).astype(float)
    else:
        inner = ndtr((b[2] - m3c) / sd3) - ndtr((a[2] - m3c) / sd3)
    total = float(dens @ np.einsum("ij,ij->i", dens2, inner))
    return float(np.clip(total, 0.0, 1.0))


def rect_prob(mean, cov, lower, upper, *, seed: int = 0) -> float:
    """``P(lower <= X <= upper)``, ``X ~ N(mean, cov)`` (see the module docstring)."""
    mean = np.asarray(mean, dtype=float).reshape(-1)
    cov = np.asarray(cov, dtype=float).reshape(len(mean), len(mean))
    a = np.asarray(lower, dtype=float).reshape(-1)
    b = np.asarray(upper, dtype=float).reshape(-1)
    if len(mean) <= EXACT_MAX_DIM:
        return _rect_exact(mean, cov, a, b)
    # scipy's cdf is integrated with zero mean; infinite limits are allowed
    p = stats.multivariate_normal.cdf(
        b, mean=mean, cov=cov, allow_singular=True, lower_limit=a, abseps=QMC_ABSEPS,
        releps=0.0, maxpts=QMC_MAXPTS, rng=np.random.default_rng(seed))
    return float(np.clip(p, 0.0, 1.0))


def truncated_mean(mean, cov, lower, upper, *, seed: int = 0) -> np.ndarray:
    """``E[X | lower <= X <= upper]`` for ``X ~ N(mean, cov)`` (Tallis' formula)."""
    mu = np.asarray(mean, dtype=float).reshape(-1)
    cov = np.asarray(cov, dtype=float).reshape(len(mu), len(mu))
    a = np.asarray(lower, dtype=float).reshape(-1)
    b = np.asarray(upper, dtype=float).reshape(-1)
    d = len(mu)
    p = rect_prob(mu, cov, a, b, seed=seed)
    if p <= 0.0:
        return np.full(d, np.nan)
    f = np.zeros(d)
    for k in range(d):
        sk = np.sqrt(cov[k, k])
        rest = [j for j in range(d) if j != k]
        beta = cov[rest, k] / cov[k, k]
        c_cov = cov[np.ix_(rest, rest)] - np.outer(cov[rest, k], cov[rest, k]) / cov[k, k]
        for x, sign in ((a[k], 1.0), (b[k], -1.0)):
            if not np.isfinite(x):
                continue
            dens = stats.norm.pdf(x, mu[k], sk)
            if d == 1:
                f[k] += sign * dens
                continue
            c_mean = mu[rest] + beta * (x - mu[k])
            f[k] += sign * dens * rect_prob(c_mean, c_cov, a[rest], b[rest], seed=seed)
    return mu + cov @ f / p
