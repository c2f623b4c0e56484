"""Conditional and hybrid moment-inequality tests with nuisance parameters (ARP).

Pure numerical kernels for :mod:`twinimpact.inference.honest_did`; arrays in, arrays out.

The problem (Andrews, Roth & Pakes 2023, "Inference for linear conditional moment
inequalities", Sections 3-5; used by Rambachan & Roth 2023, Section 5.3): with
``Y ~ N(mu, Sigma)`` (``M`` moments) and a known ``M x k`` matrix ``X``, test

    H0: there is a nuisance vector ``tau`` with ``E[Y] - X tau <= 0``.

The statistic is the value of the linear program

    eta = min_{eta, tau} eta   s.t.  Y - X tau <= eta * sigma_diag,

whose dual is ``max_gamma gamma'Y`` over the polytope
``P = {gamma >= 0, sigma_diag'gamma = 1, X'gamma = 0}``. Conditioning on the optimal
vertex ``gamma*`` (which is exactly the event ``V_lo <= gamma*'Y <= V_up``), the statistic
``eta / sqrt(gamma*' Sigma gamma*)`` is a truncated normal; the conditional test rejects
when it exceeds the ``1 - alpha`` quantile (floored at 0). The least-favourable hybrid
("LF") first rejects when ``eta`` exceeds the ``1 - kappa`` quantile of ``eta`` under the
least-favourable null (``mu = 0``), and then runs the conditional test at size
``(alpha - kappa) / (1 - kappa)`` with the upper truncation point capped at that quantile.

Two interchangeable implementations:

* :func:`dual_vertices` + :func:`arp_accept_vertices` -- enumerate the vertices of ``P``
  once, after which ``eta``, ``gamma*``, ``V_lo`` and ``V_up`` are closed-form maxima /
  minima over vertices, vectorised over a whole grid of hypothesised values (fast path);
* :func:`arp_accept_cached` -- for many moments (e.g. many post periods), where the
  number of candidate supports ``C(m, k + 1)`` explodes although the dual optimum is
  supported on very few moments: a :class:`WarmEta` solver solves ``eta`` by HiGHS only
  when no optimal basis seen so far certifies the optimum (a basis ``S`` of ``k + 1``
  tight rows certifies ``y`` when ``W (W_S^{-1} y_S) >= y``, a vectorised check), and
  ``V_lo``, ``V_up`` are the closed-form bounds over the vertices seen so far, each
  confirmed (or a missing vertex found) by one more solve. Only grid points with
  ``0 < eta <= lf_cv`` need the conditional test (``eta <= 0`` never rejects; the LF
  stage rejects ``eta > lf_cv``). Same decisions as the oracle below;
* :func:`arp_accept_lp` -- one HiGHS linear program per grid point plus the Newton /
  bisection search for ``V_lo``, ``V_up`` on the dual value function (ARP Appendix D,
  Algorithm 1); the slow reference implementation (test oracle).

Notation follows R HonestDiD (``y_T``, ``X_T``, ``lf_cv``, ``hybrid_kappa``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

__all__ = [
    "MAX_VERTEX_SUPPORTS",
    "ArpGridResult",
    "WarmEta",
    "arp_accept_cached",
    "arp_accept_lp",
    "arp_accept_vertices",
    "dual_vertices",
    "least_favorable_cv",
    "truncnorm_quantile",
]

#: Enumerate dual vertices only when at most this many candidate supports exist; above
#: it the warm-started LP path is faster (measured crossover ~3,500 supports: 3 pre + 7
#: post; at 3 + 8, 12,870 supports, enumeration takes 0.6 s per Mbar against 0.15 s).
MAX_VERTEX_SUPPORTS = 4_000
_TOL_LAMBDA = 1e-9
_TOL_EQ = 1e-7


@dataclass(frozen=True)
class ArpGridResult:
    """Acceptance of each hypothesised value.

    accept : bool array (n_grid,)
    eta : float array (n_grid,) -- LP value at each grid point
    """

    accept: np.ndarray
    eta: np.ndarray


def truncnorm_quantile(p: float, lo: float, hi: float) -> float:
    """``p`` quantile of a standard normal truncated to ``[lo, hi]`` (stable in the tails)."""
    if not lo < hi:
        return float(lo)
    return float(stats.truncnorm.ppf(p, lo, hi))


def _independent_columns(x: np.ndarray) -> np.ndarray:
    """A column basis of ``x`` (the nuisance parametrisation may be redundant)."""
    if x.shape[1] == 0:
        return x
    _q, r, piv = _qr_pivot(x)
    diag = np.abs(np.diag(r)) if r.size else np.array([])
    rank = int(np.sum(diag > 1e-10 * max(diag.max() if diag.size else 0.0, 1e-300)))
    return x[:, np.sort(piv[:rank])]


def _qr_pivot(x: np.ndarray):
    from scipy.linalg import qr

    return qr(x, mode="economic", pivoting=True)


def n_supports(m: int, k: int) -> int:
    """Number of candidate supports (size ``k + 1``) among ``m`` moments."""
    return math.comb(m, k + 1)


def dual_vertices(sd: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Vertices of ``{gamma >= 0, sd'gamma = 1, X'gamma = 0}``, one per row.

    Parameters
    ----------
    sd : (m,) positive scale of each moment.
    x : (m, k) nuisance design (columns linearly independent).

    Returns
    -------
    (n_vertices, m) array. A vertex is a basic feasible solution: a support ``S`` of
    ``k + 1`` moments with ``W_S = [sd_S, X_S]`` invertible and ``W_S'^{-1} e_1 >= 0``.
    """
    m, k = x.shape
    w = np.column_stack([sd, x])
    rhs = np.zeros(k + 1)
    rhs[0] = 1.0
    out = []
    for supp in itertools.combinations(range(m), k + 1):
        ws = w[list(supp)]
        try:
            lam = np.linalg.solve(ws.T, rhs)
        except np.linalg.LinAlgError:
            continue
        if not np.all(np.isfinite(lam)):
            continue
        if np.linalg.cond(ws) > 1e12:
            continue
        if np.all(lam >= -1e-12):
            g = np.zeros(m)
            g[list(supp)] = np.clip(lam, 0.0, None)
            out.append(g)
    if not out:
        return np.zeros((0, m))
    v = np.unique(np.round(np.array(out), 14), axis=0)
    return v


def least_favorable_cv(vertices: np.ndarray | None, sigma: np.ndarray, kappa: float, *,
                       sd: np.ndarray, x: np.ndarray, sims: int = 1000,
                       seed: int = 0, solver: WarmEta | None = None) -> float:
    """``1 - kappa`` quantile of ``eta`` when ``Y ~ N(0, sigma)`` (ARP Section 6.2).

    With ``vertices`` the value is ``max_v v'xi`` for every draw at once; with a
    :class:`WarmEta` ``solver`` one LP per optimal basis met; otherwise one LP per draw. R HonestDiD draws 1000 simulations with ``set.seed(0)``; we draw the same
    number from NumPy's generator seeded with ``seed`` (so the value differs from R's by
    Monte Carlo error only).
    """
    rng = np.random.default_rng(seed)
    m = sigma.shape[0]
    chol = _psd_sqrt(sigma)
    xi = rng.standard_normal((sims, m)) @ chol.T
    if vertices is not None:
        if len(vertices) == 0:
            return -np.inf
        eta = (xi @ vertices.T).max(axis=1)
    elif solver is not None:
        eta = solver.solve(xi)[0]
        eta = eta[np.isfinite(eta)]
    else:
        eta = np.array([_eta_lp(xi_b, sd, x)[0] for xi_b in xi])
        eta = eta[np.isfinite(eta)]
    return float(np.quantile(eta, 1 - kappa))


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    w, q = np.linalg.eigh((sigma + sigma.T) / 2)
    return q * np.sqrt(np.clip(w, 0.0, None))


def _conditional_decision(eta: float, gamma: np.ndarray, sigma: np.ndarray, vlo: float,
                          vup: float, alpha: float, hybrid: str, kappa: float,
                          lf_cv: float) -> bool:
    """Reject (True) or not, given the optimal vertex and its truncation points."""
    if hybrid == "LF" and eta > lf_cv:
        return True
    size = (alpha - kappa) / (1 - kappa) if hybrid == "LF" else alpha
    sigma_b = math.sqrt(max(float(gamma @ sigma @ gamma), 0.0))
    if sigma_b < 1e-10:
        return eta > 0
    if hybrid == "LF":
        vup = min(vup, lf_cv)
    stat = eta / sigma_b
    zlo, zup = vlo / sigma_b, vup / sigma_b
    if not (zlo <= stat <= zup):
        return False
    cval = max(0.0, truncnorm_quantile(1 - size, zlo, zup))
    return stat > cval


def _vlo_vup_vertices(gamma: np.ndarray, y: np.ndarray, sigma: np.ndarray,
                      vertices: np.ndarray) -> tuple[float, float]:
    """Interval of ``c`` on which ``gamma`` stays optimal along ``y(c) = s + b c``."""
    sg = sigma @ gamma
    b = sg / float(gamma @ sg)
    s = y - b * float(gamma @ y)
    a_v = vertices @ s
    b_v = vertices @ b
    lo, hi = -np.inf, np.inf
    below = b_v < 1 - 1e-12
    above = b_v > 1 + 1e-12
    if below.any():
        lo = float(np.max(a_v[below] / (1 - b_v[below])))
    if above.any():
        hi = float(np.min(a_v[above] / (1 - b_v[above])))
    return lo, hi


def arp_accept_vertices(y0: np.ndarray, a: np.ndarray, sigma: np.ndarray,
                        vertices: np.ndarray, thetas: np.ndarray, *, alpha: float,
                        hybrid: str, kappa: float, lf_cv: float) -> ArpGridResult:
    """Test ``E[y0 - a theta] - X tau <= 0`` for each ``theta`` (vertex fast path).

    Parameters
    ----------
    y0 : (m,) moments at theta = 0; a : (m,) their derivative in theta.
    sigma : (m, m) covariance of the moments; vertices : (n_v, m) from
        :func:`dual_vertices`.
    hybrid : ``"LF"`` (least-favourable hybrid) or ``"ARP"`` (conditional test).
    """
    thetas = np.asarray(thetas, dtype=float)
    if len(vertices) == 0:  # LP unbounded below: eta = -inf, never reject
        return ArpGridResult(np.ones(len(thetas), bool), np.full(len(thetas), -np.inf))
    y_all = y0[None, :] - thetas[:, None] * a[None, :]
    vals = y_all @ vertices.T
    best = vals.argmax(axis=1)
    eta = vals[np.arange(len(thetas)), best]
    accept = np.ones(len(thetas), dtype=bool)  # eta <= 0 never rejects
    lf_reject = (eta > lf_cv) if hybrid == "LF" else np.zeros(len(thetas), dtype=bool)
    accept[lf_reject] = False
    todo = np.flatnonzero((eta > 0) & ~lf_reject)
    gam = vertices[best[todo]]
    vlo = np.empty(len(todo))
    vup = np.empty(len(todo))
    for j, i in enumerate(todo):
        vlo[j], vup[j] = _vlo_vup_vertices(gam[j], y_all[i], sigma, vertices)
    var_b = np.einsum("ij,jk,ik->i", gam, sigma, gam)
    accept[todo] = ~_conditional_decisions(eta[todo], np.sqrt(np.clip(var_b, 0.0, None)),
                                           vlo, vup, alpha, hybrid, kappa, lf_cv)
    return ArpGridResult(accept, eta)


# ----------------------------------------------------------------------------- LP path
def _eta_lp(y: np.ndarray, sd: np.ndarray, x: np.ndarray) -> tuple[float, np.ndarray]:
    """LP value ``eta`` and the dual vertex ``gamma`` (HiGHS)."""
    m, k = x.shape
    c = np.zeros(k + 1)
    c[0] = 1.0
    a_ub = -np.column_stack([sd, x])
    res = optimize.linprog(c, A_ub=a_ub, b_ub=-y, bounds=[(None, None)] * (k + 1),
                           method="highs")
    if res.status != 0:
        return -np.inf, np.zeros(m)
    gamma = -np.asarray(res.ineqlin.marginals, dtype=float)
    gamma = np.clip(gamma, 0.0, None)
    return float(res.fun), gamma


def _dual_value(cval: float, s: np.ndarray, b: np.ndarray, sd: np.ndarray,
                x: np.ndarray) -> tuple[float, np.ndarray]:
    """``max_gamma (s + b c)'gamma`` over the dual polytope, and its maximiser."""
    m, k = x.shape
    w = np.column_stack([sd, x])
    beq = np.zeros(k + 1)
    beq[0] = 1.0
    res = optimize.linprog(-(s + b * cval), A_eq=w.T, b_eq=beq, bounds=[(0, None)] * m,
                           method="highs")
    if res.status != 0:
        return np.inf, np.zeros(m)
    return float(-res.fun), np.asarray(res.x)


def _vlo_vup_lp(gamma: np.ndarray, eta: float, y: np.ndarray, sigma: np.ndarray,
                sd: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    """ARP Appendix D: the interval around ``eta`` where ``g(c) = c`` (Newton steps on the
    convex piecewise-linear dual value ``g``, bisection as a fallback)."""
    sg = sigma @ gamma
    b = sg / float(gamma @ sg)
    s = y - b * float(gamma @ y)
    scale = math.sqrt(float(gamma @ sg))

    def is_sol(cv: float) -> tuple[bool, np.ndarray]:
        val, lam = _dual_value(cv, s, b, sd, x)
        return abs(val - cv) <= _TOL_EQ * max(1.0, abs(cv)), lam

    out = []
    for direction in (+1, -1):
        far = eta + direction * max(100.0, 20 * scale)
        ok, lam = is_sol(far)
        if ok:
            out.append(direction * np.inf)
            continue
        cv = far
        found = False
        for _ in range(50):
            denom = 1 - float(lam @ b)
            if abs(denom) < 1e-14:
                break
            cv = float(lam @ s) / denom
            ok, lam = is_sol(cv)
            if ok:
                found = True
                break
        if not found:  # bisection between eta (a solution) and far (not a solution)
            lo_c, hi_c = eta, far
            for _ in range(200):
                mid = (lo_c + hi_c) / 2
                if is_sol(mid)[0]:
                    lo_c = mid
                else:
                    hi_c = mid
                if abs(hi_c - lo_c) < 1e-9 * max(1.0, abs(eta)):
                    break
            cv = lo_c
        out.append(cv)
    vup, vlo = out
    return float(vlo), float(vup)


def arp_accept_lp(y0: np.ndarray, a: np.ndarray, sigma: np.ndarray, x: np.ndarray,
                  thetas: np.ndarray, *, alpha: float, hybrid: str, kappa: float,
                  lf_cv: float) -> ArpGridResult:
    """Same test as :func:`arp_accept_vertices`, one linear program per ``theta``."""
    sd = np.sqrt(np.diag(sigma))
    thetas = np.asarray(thetas, dtype=float)
    accept = np.empty(len(thetas), dtype=bool)
    etas = np.empty(len(thetas))
    for i, th in enumerate(thetas):
        y = y0 - a * th
        eta, gamma = _eta_lp(y, sd, x)
        etas[i] = eta
        if not np.isfinite(eta):
            accept[i] = True
            continue
        if hybrid == "LF" and eta > lf_cv:
            accept[i] = False
            continue
        if gamma.sum() <= _TOL_LAMBDA:
            accept[i] = True
            continue
        vlo, vup = _vlo_vup_lp(gamma, eta, y, sigma, sd, x)
        accept[i] = not _conditional_decision(eta, gamma, sigma, vlo, vup, alpha, hybrid,
                                              kappa, lf_cv)
    return ArpGridResult(accept, etas)


# ------------------------------------------------------------------ warm-started LP path
#: Certificate slack: a basis certifies ``y`` when ``W z >= y - _TOL_CERT * scale``.
_TOL_CERT = 1e-10
#: Rows checked against the cached bases at once (memory ~ rows * bases * m floats).
_CERT_CHUNK = 256


class WarmEta:
    """``eta(y) = max_{gamma in P} gamma'y`` for many ``y``, HiGHS only on cache misses.

    Every LP solved leaves an optimal basis: ``k + 1`` tight primal rows ``S`` (the dual
    support completed by tight rows) with ``W_S`` invertible, ``W = [sd, X]``. By
    complementary slackness the basis is optimal for any ``y`` with
    ``W (W_S^{-1} y_S) >= y`` (primal feasible; its dual ``W_S^{-T} e_1 >= 0`` does not
    depend on ``y``), and then ``eta = (W_S^{-1} y_S)_0``. In the relative-magnitudes
    problems the dual optimum sits on one or two moments, so a handful of bases cover
    thousands of ``y``.

    Parameters
    ----------
    sd : (m,) positive scale of each moment; x : (m, k) nuisance design (independent
        columns).

    Attributes
    ----------
    n_lp : number of linear programs solved so far.
    vertices : (n_v, m) every dual vertex returned so far.
    """

    def __init__(self, sd: np.ndarray, x: np.ndarray) -> None:
        self.sd = np.asarray(sd, dtype=float)
        self.x = np.asarray(x, dtype=float)
        self.w = np.column_stack([self.sd, self.x])
        m = self.w.shape[0]
        self._supp = np.zeros((0, self.w.shape[1]), dtype=int)
        self._winv = np.zeros((0, self.w.shape[1], self.w.shape[1]))
        self._bgamma = np.zeros((0, m))
        self.vertices = np.zeros((0, m))
        self.unbounded = False
        self.n_lp = 0

    # -- cache
    def _add_vertex(self, gamma: np.ndarray) -> None:
        if len(self.vertices) and np.min(np.abs(self.vertices - gamma).max(axis=1)) < 1e-12:
            return
        self.vertices = np.vstack([self.vertices, gamma])

    def _add_basis(self, y: np.ndarray, gamma: np.ndarray, slack: np.ndarray) -> None:
        k1 = self.w.shape[1]
        supp = list(np.flatnonzero(gamma > _TOL_LAMBDA))
        if len(supp) > k1:
            return
        tight = np.argsort(slack, kind="stable")
        rows = list(supp)
        for r in tight:  # complete the dual support by tight rows, keeping rank
            if len(rows) == k1:
                break
            if r in rows:
                continue
            if np.linalg.matrix_rank(self.w[[*rows, r]]) == len(rows) + 1:
                rows.append(int(r))
        if len(rows) < k1:
            return
        ws = self.w[rows]
        if np.linalg.cond(ws) > 1e10:
            return
        winv = np.linalg.inv(ws)
        g_s = winv.T @ np.eye(k1)[0]
        if np.any(g_s < -1e-9):
            return
        g = np.zeros(self.w.shape[0])
        g[rows] = np.clip(g_s, 0.0, None)
        z = winv @ y[rows]
        scale = 1.0 + np.abs(y).max()
        if np.max(y - self.w @ z) > _TOL_CERT * scale:  # not a certificate for its own y
            return
        self._supp = np.vstack([self._supp, np.array(rows)[None, :]])
        self._winv = np.concatenate([self._winv, winv[None]], axis=0)
        self._bgamma = np.vstack([self._bgamma, g])

    def _certify(self, ys: np.ndarray, bases: slice) -> tuple[np.ndarray, np.ndarray]:
        """First cached basis (in ``bases``) certifying each row of ``ys`` (-1 if none),
        and the certified ``eta``."""
        supp, winv = self._supp[bases], self._winv[bases]
        n = len(ys)
        hit = np.full(n, -1)
        eta = np.full(n, np.nan)
        if len(supp) == 0 or n == 0:
            return hit, eta
        for lo in range(0, n, _CERT_CHUNK):
            yc = ys[lo:lo + _CERT_CHUNK]
            z = np.einsum("bij,rbj->rbi", winv, yc[:, supp])  # (r, b, k+1)
            viol = (yc[:, None, :] - z @ self.w.T).max(axis=2)  # (r, b)
            scale = 1.0 + np.abs(yc).max(axis=1, keepdims=True)
            ok = viol <= _TOL_CERT * scale
            any_ok = ok.any(axis=1)
            first = ok.argmax(axis=1)
            rows = np.flatnonzero(any_ok)
            hit[lo + rows] = first[rows]
            eta[lo + rows] = z[rows, first[rows], 0]
        return hit, eta

    # -- solve
    def _lp(self, y: np.ndarray) -> tuple[float, np.ndarray]:
        m, k1 = self.w.shape
        c = np.zeros(k1)
        c[0] = 1.0
        self.n_lp += 1
        res = optimize.linprog(c, A_ub=-self.w, b_ub=-y, bounds=[(None, None)] * k1,
                               method="highs")
        if res.status == 3:  # dual polytope empty: unbounded for every y
            self.unbounded = True
            return -np.inf, np.zeros(m)
        if res.status != 0:
            return -np.inf, np.zeros(m)
        gamma = np.clip(-np.asarray(res.ineqlin.marginals, dtype=float), 0.0, None)
        self._add_vertex(gamma)
        self._add_basis(y, gamma, np.asarray(res.ineqlin.residual, dtype=float))
        return float(res.fun), gamma

    def solve(self, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``eta`` (n,) and an optimal dual vertex (n, m) for each row of ``ys`` (n, m)."""
        ys = np.atleast_2d(np.asarray(ys, dtype=float))
        n, m = ys.shape
        eta = np.full(n, -np.inf)
        gam = np.zeros((n, m))
        if self.unbounded:
            return eta, gam
        hit, e = self._certify(ys, slice(None))
        done = hit >= 0
        eta[done], gam[done] = e[done], self._bgamma[hit[done]]
        pending = np.flatnonzero(~done)
        while len(pending):
            i = pending[0]
            n_before = len(self._supp)
            eta[i], gam[i] = self._lp(ys[i])
            if self.unbounded:
                eta[:] = -np.inf
                gam[:] = 0.0
                return eta, gam
            rest = pending[1:]
            if len(self._supp) > n_before and len(rest):
                h, e = self._certify(ys[rest], slice(n_before, None))
                ok = h >= 0
                eta[rest[ok]] = e[ok]
                gam[rest[ok]] = self._bgamma[n_before + h[ok]]
                rest = rest[~ok]
            pending = rest
        return eta, gam

    def solve_one(self, y: np.ndarray) -> tuple[float, np.ndarray]:
        eta, gam = self.solve(y[None, :])
        return float(eta[0]), gam[0]


def _vlo_vup_warm(gamma: np.ndarray, eta: float, y: np.ndarray, sigma: np.ndarray,
                  solver: WarmEta) -> tuple[float, float]:
    """``V_lo``, ``V_up`` as in :func:`_vlo_vup_vertices`, over the vertices found so far,
    each bound confirmed by one solve at it (a solve that exceeds the line returns a new
    vertex that tightens the bound; ``g(c) - c`` is convex, so ``{g(c) = c}`` is the
    interval ``[V_lo, V_up]``). Infinite bounds are declared as in :func:`_vlo_vup_lp`:
    when the line is still optimal ``max(100, 20 sd)`` away from ``eta``."""
    sg = sigma @ gamma
    b = sg / float(gamma @ sg)
    s = y - b * float(gamma @ y)
    scale = math.sqrt(float(gamma @ sg))
    out = []
    for direction in (+1, -1):
        far = eta + direction * max(100.0, 20 * scale)
        bound = None
        for _ in range(200):
            a_v = solver.vertices @ s
            b_v = solver.vertices @ b
            sel = b_v > 1 + 1e-12 if direction > 0 else b_v < 1 - 1e-12
            cand = far
            if sel.any():
                c_v = a_v[sel] / (1 - b_v[sel])
                c_best = float(c_v.min() if direction > 0 else c_v.max())
                if direction * (c_best - far) < 0:
                    cand = c_best
            n_v = len(solver.vertices)
            val, _g = solver.solve_one(s + b * cand)
            if abs(val - cand) <= _TOL_EQ * max(1.0, abs(cand)):
                bound = direction * np.inf if cand == far else cand
                break
            if len(solver.vertices) == n_v:  # no new vertex: fall back to the oracle
                break
        if bound is None:
            vlo, vup = _vlo_vup_lp(gamma, eta, y, sigma, solver.sd, solver.x)
            bound = vup if direction > 0 else vlo
        out.append(float(bound))
    vup, vlo = out
    return vlo, vup


def arp_accept_cached(y0: np.ndarray, a: np.ndarray, sigma: np.ndarray,
                      solver: WarmEta, thetas: np.ndarray, *, alpha: float, hybrid: str,
                      kappa: float, lf_cv: float) -> ArpGridResult:
    """Same test as :func:`arp_accept_lp` with the warm-started :class:`WarmEta` solver
    (built on the same ``sd = sqrt(diag(sigma))`` and ``X``; reuse the one that computed
    the least-favourable critical value). ``eta`` on the whole grid costs one LP per
    optimal basis met; the conditional test runs only where ``0 < eta <= lf_cv``."""
    thetas = np.asarray(thetas, dtype=float)
    y_all = y0[None, :] - thetas[:, None] * a[None, :]
    eta, gam = solver.solve(y_all)
    accept = np.ones(len(thetas), dtype=bool)
    lf_reject = (eta > lf_cv) if hybrid == "LF" else np.zeros(len(thetas), dtype=bool)
    accept[lf_reject] = False
    todo = np.flatnonzero(np.isfinite(eta) & (eta > 0) & ~lf_reject)
    vlo = np.empty(len(todo))
    vup = np.empty(len(todo))
    for j, i in enumerate(todo):
        vlo[j], vup[j] = _vlo_vup_warm(gam[i], float(eta[i]), y_all[i], sigma, solver)
    var_b = np.einsum("ij,jk,ik->i", gam[todo], sigma, gam[todo])
    accept[todo] = ~_conditional_decisions(eta[todo], np.sqrt(np.clip(var_b, 0.0, None)),
                                           vlo, vup, alpha, hybrid, kappa, lf_cv)
    return ArpGridResult(accept, eta)


def _conditional_decisions(eta: np.ndarray, sigma_b: np.ndarray, vlo: np.ndarray,
                           vup: np.ndarray, alpha: float, hybrid: str, kappa: float,
                           lf_cv: float) -> np.ndarray:
    """:func:`_conditional_decision` for many grid points at once (one vectorised
    truncated-normal quantile call); rows with ``eta > lf_cv`` must be removed first."""
    size = (alpha - kappa) / (1 - kappa) if hybrid == "LF" else alpha
    reject = np.zeros(len(eta), dtype=bool)
    degenerate = sigma_b < 1e-10
    reject[degenerate] = eta[degenerate] > 0
    ok = ~degenerate
    if hybrid == "LF":
        vup = np.minimum(vup, lf_cv)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = eta / sigma_b
        zlo, zup = vlo / sigma_b, vup / sigma_b
    inside = ok & (zlo <= stat) & (stat <= zup)
    q = zlo.copy()  # truncnorm_quantile returns lo when the interval is empty
    proper = inside & (zlo < zup)
    if proper.any():
        q[proper] = stats.truncnorm.ppf(1 - size, zlo[proper], zup[proper])
    cval = np.maximum(0.0, q)
    reject[inside] = stat[inside] > cval[inside]
    return reject
