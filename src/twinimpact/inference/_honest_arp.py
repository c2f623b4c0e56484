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

:class:`ArpProblem` holds one such problem along a line ``y(theta) = y0 - a theta``
and tests any set of ``theta`` with one of two interchangeable engines:

* ``"vertices"`` (:func:`dual_vertices`) -- enumerate the vertices of ``P`` once, after
  which ``eta``, ``gamma*``, ``V_lo`` and ``V_up`` are closed-form maxima / minima over
  vertices, vectorised over all hypothesised values at once (:func:`vlo_vup_vertices`);
* ``"lp_warm"`` (:class:`WarmEta`) -- for many moments (e.g. many post periods), where
  the number of candidate supports ``C(m, k + 1)`` explodes although the dual optimum is
  supported on very few moments: ``eta`` is solved by HiGHS only when no optimal basis
  seen so far (on this problem or offered from a sibling, :meth:`WarmEta.seed`)
  certifies the optimum (a basis ``S`` of ``k + 1`` tight rows certifies ``y`` when
  ``W (W_S^{-1} y_S) >= y``, a vectorised check), and ``V_lo``, ``V_up`` are the
  closed-form bounds over the vertices seen so far, each confirmed (or a missing vertex
  found) by one more batched solve (:func:`vlo_vup_warm`).

Only values with ``0 < eta <= lf_cv`` need the conditional test (``eta <= 0`` never
rejects; the LF stage rejects ``eta > lf_cv``), and ``lf_cv`` itself is needed only when
some such ``eta`` lies below :func:`lf_cv_upper`, a bound read off the same draws without
any LP. Same decisions as the oracle,
:func:`arp_accept_lp` -- one HiGHS linear program per grid point plus the Newton /
bisection search for ``V_lo``, ``V_up`` on the dual value function (ARP Appendix D,
Algorithm 1); the slow reference implementation (test oracle).

Notation follows R HonestDiD (``y_T``, ``X_T``, ``lf_cv``, ``hybrid_kappa``).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

__all__ = [
    "MAX_VERTEX_SUPPORTS",
    "ArpGridResult",
    "ArpProblem",
    "WarmEta",
    "arp_accept_lp",
    "dual_vertices",
    "least_favorable_cv",
    "lf_cv_upper",
    "lf_draws",
    "truncnorm_quantile",
    "vlo_vup_vertices",
    "vlo_vup_warm",
]

#: Enumerate dual vertices only when at most this many candidate supports exist; above
#: it the warm-started LP path is faster (measured crossover ~3,500 supports: 3 pre + 7
#: post; at 3 + 8, 12,870 supports, enumeration takes 0.6 s per Mbar against 0.15 s).
MAX_VERTEX_SUPPORTS = 4_000
_TOL_LAMBDA = 1e-9
#: Below this standard deviation of ``gamma*'Y`` the conditional test is degenerate:
#: reject exactly when ``eta > 0``.
_SIGMA_B_MIN = 1e-10
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
                       seed: int = 0, solver: WarmEta | None = None,
                       xi: np.ndarray | None = None) -> float:
    """``1 - kappa`` quantile of ``eta`` when ``Y ~ N(0, sigma)`` (ARP Section 6.2).

    With ``vertices`` the value is ``max_v v'xi`` for every draw at once; with a
    :class:`WarmEta` ``solver`` one LP per optimal basis met; otherwise one LP per draw. R HonestDiD draws 1000 simulations with ``set.seed(0)``; we draw the same
    number from NumPy's generator seeded with ``seed`` (so the value differs from R's by
    Monte Carlo error only); ``xi``: those draws when already made (:func:`lf_draws`).
    """
    if xi is None:
        xi = lf_draws(sigma, sims, seed)
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


def lf_draws(sigma: np.ndarray, sims: int, seed: int) -> np.ndarray:
    """The least-favourable draws ``xi ~ N(0, sigma)``, (sims, m): the same standard
    normals (:func:`_standard_normal`) times a symmetric square root of ``sigma``."""
    return _standard_normal(seed, sims, sigma.shape[0]) @ _psd_sqrt(sigma).T


def lf_cv_upper(xi: np.ndarray, sd: np.ndarray, kappa: float) -> float:
    """An upper bound of :func:`least_favorable_cv` from the same draws ``xi``, without
    solving for ``eta``: for ``gamma >= 0`` with ``sd'gamma = 1``,
    ``gamma'xi <= max_i xi_i / sd_i``, so every draw's ``eta`` is at most its largest
    standardised moment, and the ``1 - kappa`` quantile of ``eta`` (linear
    interpolation between two order statistics) is at most the upper of those two
    order statistics of the maxima. Inflated by ``1e-9`` relative (+``1e-12``) so that
    the rounding of either side cannot reverse an ``eta > bound`` decision."""
    # per draw; over a contiguous transpose (a maximum is exact in any order)
    u = (np.ascontiguousarray(xi.T) / sd[:, None]).max(axis=0)
    n = len(u)
    h = min(n - 1, math.ceil((n - 1) * (1 - kappa)))
    top = float(np.partition(u, h)[h])
    return top + 1e-9 * abs(top) + 1e-12


@functools.lru_cache(maxsize=16)
def _standard_normal(seed: int, sims: int, m: int) -> np.ndarray:
    """``default_rng(seed).standard_normal((sims, m))``, drawn once per call signature
    (every piece and every ``Mbar`` uses the same draws); read-only."""
    z = np.random.default_rng(seed).standard_normal((sims, m))
    z.flags.writeable = False
    return z


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
    if sigma_b < _SIGMA_B_MIN:
        return eta > 0
    if hybrid == "LF":
        vup = min(vup, lf_cv)
    stat = eta / sigma_b
    zlo, zup = vlo / sigma_b, vup / sigma_b
    if not (zlo <= stat <= zup):
        return False
    cval = max(0.0, truncnorm_quantile(1 - size, zlo, zup))
    return stat > cval


def _line(gam: np.ndarray, y: np.ndarray, sigma: np.ndarray):
    """For each row: the line ``y(c) = s + b c`` through ``y`` along which ``gam'y = c``
    (``b = Sigma gam / gam'Sigma gam``, ``s = y - b gam'y``; ARP Section 5) and
    ``sqrt(gam'Sigma gam)``."""
    sg = gam @ sigma
    var = np.einsum("ij,ij->i", gam, sg)
    b = sg / var[:, None]
    s = y - b * np.einsum("ij,ij->i", gam, y)[:, None]
    return s, b, np.sqrt(np.clip(var, 0.0, None))


def _crossings(s: np.ndarray, b: np.ndarray, vertices: np.ndarray, direction: int
               ) -> np.ndarray:
    """Per row, the nearest ``c`` (above for ``direction=+1``, below for ``-1``) where a
    vertex ``v`` overtakes the line: ``v's + (v'b) c = c``; +/-inf when none does."""
    a_v = s @ vertices.T
    b_v = b @ vertices.T
    sel = b_v > 1 + 1e-12 if direction > 0 else b_v < 1 - 1e-12
    with np.errstate(divide="ignore", invalid="ignore"):
        c_v = np.where(sel, a_v / (1 - b_v), direction * np.inf)
    return c_v.min(axis=1) if direction > 0 else c_v.max(axis=1)


def vlo_vup_vertices(gam: np.ndarray, y: np.ndarray, sigma: np.ndarray,
                     vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Truncation points ``V_lo``, ``V_up`` for many rows at once: the interval of ``c``
    on which the optimal vertex ``gam`` stays optimal along its line, over the complete
    vertex list."""
    s, b, _ = _line(gam, y, sigma)
    return _crossings(s, b, vertices, -1), _crossings(s, b, vertices, +1)


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
    """Same test as :meth:`ArpProblem.accept`, one linear program per ``theta``."""
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
    n_seeded : number of cached bases that came from :meth:`seed` (the first ones).
    vertices : (n_v, m) every dual vertex returned so far.
    """

    def __init__(self, sd: np.ndarray, x: np.ndarray) -> None:
        self.sd = np.asarray(sd, dtype=float)
        self.x = np.asarray(x, dtype=float)
        self.w = np.column_stack([self.sd, self.x])
        m = self.w.shape[0]
        self._supp = np.zeros((0, self.w.shape[1]), dtype=int)
        self._winv = np.zeros((0, self.w.shape[1], self.w.shape[1]))
        self._check: list[np.ndarray] = []
        self._bgamma = np.zeros((0, m))
        self.vertices = np.zeros((0, m))
        self.unbounded = False
        self.n_lp = 0
        self.n_seeded = 0

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
        self._store(np.array(rows), winv, g)

    def seed(self, supports: np.ndarray) -> int:
        """Offer bases found on other problems with the same shape (e.g. another piece of
        Delta^RM, another Mbar): a support ``S`` is kept when ``W_S`` is well conditioned
        and dual feasible (``W_S^{-T} e_1 >= 0``) -- then it is optimal for every ``y``
        it certifies, whichever problem it came from. Returns the number kept.

        The offered supports are screened together (one stacked condition number and one
        stacked inverse; LAPACK runs on each matrix as it does alone) and kept in the
        order offered: the same bases as :meth:`_seed_loop`, one support at a time."""
        m, k1 = self.w.shape
        have = {tuple(r) for r in self._supp.tolist()}
        keys: list[tuple[int, ...]] = []
        for rows in np.asarray(supports, dtype=int).reshape(-1, k1):
            key = tuple(int(r) for r in rows)
            if key in have or rows.max() >= m or len(set(key)) < k1:
                continue
            have.add(key)  # a repeated offer gets the decision of its first occurrence
            keys.append(key)
        kept = 0
        if keys:
            idx = np.array(keys, dtype=int)
            ws = self.w[idx]  # (c, k + 1, k + 1)
            well = np.linalg.cond(ws) <= 1e10
            idx, ws = idx[well], ws[well]
        if keys and len(idx):
            winv = np.linalg.inv(ws)
            g_s = winv[:, 0, :]  # W_S^{-T} e_1, one row per support
            tol = -1e-12 * np.maximum(1.0, np.abs(g_s).max(axis=1))
            feas = ~np.any(g_s < tol[:, None], axis=1)
            idx, winv, g_s = idx[feas], winv[feas], g_s[feas]
            kept = len(idx)
            if kept:
                g = np.zeros((kept, m))
                np.put_along_axis(g, idx, np.clip(g_s, 0.0, None), axis=1)
                self._store_many(idx, winv, g)
                for gi in g:
                    self._add_vertex(gi)
        self.n_seeded = len(self._supp)
        return kept

    def _seed_loop(self, supports: np.ndarray) -> int:
        """:meth:`seed`, one support at a time (test oracle of the stacked screening)."""
        m, k1 = self.w.shape
        have = {tuple(r) for r in self._supp.tolist()}
        kept = 0
        for rows in np.asarray(supports, dtype=int).reshape(-1, k1):
            key = tuple(int(r) for r in rows)
            if key in have or rows.max() >= m or len(set(key)) < k1:
                continue
            ws = self.w[list(key)]
            if np.linalg.cond(ws) > 1e10:
                continue
            winv = np.linalg.inv(ws)
            g_s = winv[0]  # W_S^{-T} e_1
            if np.any(g_s < -1e-12 * max(1.0, float(np.abs(g_s).max()))):
                continue
            g = np.zeros(m)
            g[list(key)] = np.clip(g_s, 0.0, None)
            self._store(np.array(key), winv, g)
            self._add_vertex(g)
            have.add(key)
            kept += 1
        self.n_seeded = len(self._supp)
        return kept

    @property
    def supports(self) -> np.ndarray:
        """(n_bases, k + 1) moment indices of every cached optimal basis."""
        return self._supp.copy()

    def _store(self, rows: np.ndarray, winv: np.ndarray, g: np.ndarray) -> None:
        self._store_many(np.asarray(rows)[None, :], winv[None], g[None, :])

    def _store_many(self, rows: np.ndarray, winv: np.ndarray, g: np.ndarray) -> None:
        """Append bases ``rows`` (c, k + 1) with inverses ``winv`` (c, k + 1, k + 1) and
        dual vertices ``g`` (c, m). One check matrix per basis: columns 0..m-1 give the
        slack ``y - W z``, column m gives ``eta = z_0``, with ``z = W_S^{-1} y_S``, so a
        basis is checked on many ``y`` with one product."""
        m, k1 = self.w.shape
        self._supp = np.vstack([self._supp, rows])
        self._winv = np.concatenate([self._winv, winv], axis=0)
        self._bgamma = np.vstack([self._bgamma, g])
        eye = np.eye(m)
        for r, wi in zip(rows, winv, strict=True):
            zmap = np.zeros((k1, m))  # z = zmap @ y
            zmap[:, r] = wi
            self._check.append(np.vstack([eye - self.w @ zmap, zmap[:1]]).T)

    def _certify(self, ys: np.ndarray, bases: slice) -> tuple[np.ndarray, np.ndarray]:
        """First cached basis (in ``bases``) certifying each row of ``ys`` (-1 if none),
        and the certified ``eta``. Bases are tried in order on the rows not yet
        certified, so a row costs one check per basis tried before its own."""
        first = range(len(self._supp))[bases]
        n = len(ys)
        hit = np.full(n, -1)
        eta = np.full(n, np.nan)
        if n == 0:
            return hit, eta
        # largest |y| per row, reduced over a contiguous copy of the transpose (a maximum
        # is exact in any order; numpy's reduction along a short last axis is slow)
        thr = _TOL_CERT * (1.0 + np.abs(np.ascontiguousarray(ys.T)).max(axis=0))
        rest = np.arange(n)
        for j, bi in enumerate(first):
            if not len(rest):
                break
            yr = ys if len(rest) == n else ys[rest]
            out = yr @ self._check[bi]  # (r, m + 1): slacks y - W z, then z_0
            ok = np.ascontiguousarray(out.T[:-1]).max(axis=0) <= thr[rest]
            hit[rest[ok]] = j
            eta[rest[ok]] = out[ok, -1]
            rest = rest[~ok]
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


def vlo_vup_warm(gam: np.ndarray, eta: np.ndarray, y: np.ndarray, sigma: np.ndarray,
                 solver: WarmEta) -> tuple[np.ndarray, np.ndarray]:
    """``V_lo``, ``V_up`` as in :func:`vlo_vup_vertices`, over the vertices found so far,
    for many rows at once; each row's bound is confirmed by a solve at it (a solve that
    exceeds the line returns a vertex that tightens the bound; ``g(c) - c`` is convex,
    so ``{g(c) = c}`` is the interval ``[V_lo, V_up]``). Infinite bounds are declared as
    in :func:`_vlo_vup_lp`: when the line is still optimal ``max(100, 20 sd)`` away from
    ``eta``. Rows still unconfirmed when a round finds no new vertex go to the LP oracle.
    """
    s, b, scale = _line(gam, y, sigma)
    out = []
    for direction in (+1, -1):
        far = eta + direction * np.maximum(100.0, 20 * scale)
        bound = np.full(len(eta), np.nan)
        pending = np.arange(len(eta))
        for _ in range(200):
            if not len(pending):
                break
            cand = far[pending].copy()
            if len(solver.vertices):
                c_best = _crossings(s[pending], b[pending], solver.vertices, direction)
                closer = direction * (c_best - cand) < 0
                cand[closer] = c_best[closer]
            n_v = len(solver.vertices)
            val, g = solver.solve(s[pending] + b[pending] * cand[:, None])
            ok = np.abs(val - cand) <= _TOL_EQ * np.maximum(1.0, np.abs(cand))
            bound[pending[ok]] = np.where(cand[ok] == far[pending[ok]], direction * np.inf,
                                          cand[ok])
            for gi in g[~ok]:
                solver._add_vertex(gi)
            pending = pending[~ok]
            if len(solver.vertices) == n_v:  # no new vertex: the oracle decides
                break
        for i in pending:
            lo, hi = _vlo_vup_lp(gam[i], float(eta[i]), y[i], sigma, solver.sd, solver.x)
            bound[i] = hi if direction > 0 else lo
        out.append(bound)
    vup, vlo = out
    return vlo, vup


class ArpProblem:
    """The test of ``E[y0 - a theta] - X tau <= 0`` at any ``theta``, state kept.

    Holds what does not depend on ``theta`` -- the dual vertices (``engine="vertices"``)
    or a :class:`WarmEta` cache (``engine="lp_warm"``), and the least-favourable
    critical value (computed on first use) -- so that many grids, and any subset of a
    grid, are tested without recomputing it.

    Parameters
    ----------
    y0 : (m,) moments at theta = 0; a : (m,) their derivative in theta;
    sigma : (m, m) covariance (positive diagonal); x : (m, k) nuisance design
        (independent columns).
    hybrid : ``"LF"`` (least-favourable hybrid) or ``"ARP"`` (conditional test).
    pool : optional list of :class:`WarmEta` solvers shared between problems of the
        same shape (``engine="lp_warm"``): on first use the problem's solver is offered
        their optimal bases (:meth:`WarmEta.seed`) and joins the pool.
    """

    def __init__(self, y0: np.ndarray, a: np.ndarray, sigma: np.ndarray, x: np.ndarray, *,
                 engine: str, alpha: float, hybrid: str, kappa: float, lf_sims: int,
                 seed: int, pool: list[WarmEta] | None = None) -> None:
        self.y0, self.a, self.sigma, self.x = y0, a, sigma, x
        self.sd = np.sqrt(np.diag(sigma))
        self.alpha, self.hybrid, self.kappa = alpha, hybrid, kappa
        self.lf_sims, self.seed = lf_sims, seed
        self.vertices = dual_vertices(self.sd, x) if engine == "vertices" else None
        self._solver = WarmEta(self.sd, x) if engine == "lp_warm" else None
        self._pool = pool
        self._lf_cv: float | None = None
        self._lf_xi: np.ndarray | None = None
        self._lf_ub: float | None = None

    @property
    def solver(self) -> WarmEta | None:
        """The warm LP cache (``engine="lp_warm"``), seeded from the pool on first use."""
        if self._solver is not None and self._pool is not None:
            shape = self._solver.w.shape
            sup = [s.supports[s.n_seeded:] for s in self._pool if s.w.shape == shape]
            if sup:
                rows = np.vstack(sup)
                self._solver.seed(np.array(list(dict.fromkeys(map(tuple, rows.tolist()))),
                                           dtype=int).reshape(-1, shape[1]))
            self._pool.append(self._solver)
            self._pool = None
        return self._solver

    @property
    def lf_cv(self) -> float:
        """Least-favourable critical value (``inf`` for the conditional test)."""
        if self._lf_cv is None:
            self._lf_cv = np.inf if self.hybrid != "LF" else least_favorable_cv(
                self.vertices, self.sigma, self.kappa, sd=self.sd, x=self.x,
                sims=self.lf_sims, seed=self.seed, solver=self.solver, xi=self._xi())
        return self._lf_cv

    def _xi(self) -> np.ndarray:
        if self._lf_xi is None:
            self._lf_xi = lf_draws(self.sigma, self.lf_sims, self.seed)
        return self._lf_xi

    @property
    def lf_cv_bound(self) -> float:
        """An upper bound of :attr:`lf_cv` that needs no ``eta`` of the draws
        (:func:`lf_cv_upper`; ``inf`` for the conditional test): a value with ``eta``
        above it is rejected by the least-favourable stage whatever :attr:`lf_cv` is,
        so :attr:`lf_cv` is computed only when some ``eta`` to be tested lies below."""
        if self._lf_cv is not None:
            return self._lf_cv
        if self._lf_ub is None:
            self._lf_ub = np.inf if self.hybrid != "LF" else lf_cv_upper(
                self._xi(), self.sd, self.kappa)
        return self._lf_ub

    def moments(self, thetas: np.ndarray) -> np.ndarray:
        return self.y0[None, :] - np.asarray(thetas, dtype=float)[:, None] * self.a[None, :]

    def eta(self, thetas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """LP value ``eta`` (n,) and an optimal dual vertex (n, m) at each ``theta``
        (``eta = -inf`` when the dual polytope is empty: never rejected)."""
        y = self.moments(thetas)
        if self.solver is not None:
            return self.solver.solve(y)
        v = self.vertices
        if len(v) == 0:
            return np.full(len(y), -np.inf), np.zeros_like(y)
        vals = y @ v.T
        best = vals.argmax(axis=1)
        return vals[np.arange(len(y)), best], v[best]

    def decide(self, thetas: np.ndarray, eta: np.ndarray, gam: np.ndarray) -> np.ndarray:
        """Accept (True) or reject each ``theta`` given its ``eta`` and optimal vertex."""
        accept = np.ones(len(eta), dtype=bool)  # eta <= 0 (or -inf) never rejects
        todo = np.isfinite(eta) & (eta > 0)
        if not todo.any():
            return accept
        lf_cv = self.lf_cv
        if self.hybrid == "LF":
            lf_reject = eta > lf_cv
            accept[lf_reject] = False
            todo &= ~lf_reject
        idx = np.flatnonzero(todo)
        if not len(idx):
            return accept
        y = self.moments(np.asarray(thetas, dtype=float)[idx])
        sigma_b = np.sqrt(np.clip(np.einsum("ij,jk,ik->i", gam[idx], self.sigma, gam[idx]),
                                  0.0, None))
        # V_lo, V_up only where the statistic has variance (else the decision is eta > 0)
        nd = sigma_b >= _SIGMA_B_MIN
        vlo = np.full(len(idx), np.nan)
        vup = np.full(len(idx), np.nan)
        if nd.any():
            if self.solver is not None:
                vlo[nd], vup[nd] = vlo_vup_warm(gam[idx[nd]], eta[idx[nd]], y[nd],
                                                self.sigma, self.solver)
            else:
                vlo[nd], vup[nd] = vlo_vup_vertices(gam[idx[nd]], y[nd], self.sigma,
                                                    self.vertices)
        accept[idx] = ~_conditional_decisions(eta[idx], sigma_b, vlo, vup, self.alpha,
                                              self.hybrid, self.kappa, lf_cv)
        return accept

    def accept(self, thetas: np.ndarray) -> ArpGridResult:
        """Test every ``theta``."""
        eta, gam = self.eta(thetas)
        return ArpGridResult(self.decide(thetas, eta, gam), eta)


def _conditional_decisions(eta: np.ndarray, sigma_b: np.ndarray, vlo: np.ndarray,
                           vup: np.ndarray, alpha: float, hybrid: str, kappa: float,
                           lf_cv: float) -> np.ndarray:
    """:func:`_conditional_decision` for many grid points at once (one vectorised
    truncated-normal quantile call); rows with ``eta > lf_cv`` must be removed first."""
    size = (alpha - kappa) / (1 - kappa) if hybrid == "LF" else alpha
    reject = np.zeros(len(eta), dtype=bool)
    degenerate = sigma_b < _SIGMA_B_MIN
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
