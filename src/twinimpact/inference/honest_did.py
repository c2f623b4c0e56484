"""HonestDiD: confidence sets robust to violations of parallel trends.

Rambachan, A. & Roth, J. (2023), "A More Credible Approach to Parallel Trends",
*Review of Economic Studies* 90(5), 2555-2591.

The event-study coefficients ``betahat = (beta_pre, beta_post)`` (reference period
excluded) estimate ``beta = tau + delta`` with ``tau_pre = 0``; ``delta`` is the bias from
non-parallel trends. Given a set ``Delta`` of allowed biases, :func:`honest_did` returns
confidence sets for ``theta = l' tau_post`` that are valid for every ``delta`` in ``Delta``:

* ``restriction="relative_magnitudes"`` -- ``Delta^RM(Mbar)``: every post-period
  first difference of ``delta`` is at most ``Mbar`` times the largest pre-period first
  difference. ``Delta^RM`` is a finite union of polyhedra (one per location and sign of
  the largest pre-period difference); the set is the union of the conditional-least-
  favourable hybrid confidence sets ("C-LF", Andrews, Roth & Pakes) for the pieces,
  obtained by test inversion over a grid of ``theta`` (R HonestDiD
  ``computeConditionalCS_DeltaRM`` with ``hybrid_flag = "LF"``). ``method="Conditional"``
  uses the pure conditional test instead. The reported bounds are the smallest and
  largest accepted grid points; :func:`accepted_range` finds them without running the
  conditional test at every grid point (same points as the full scan,
  :func:`relative_magnitudes_cs`).
* ``restriction="smoothness"`` -- ``Delta^SD(M)``: the slope of ``delta`` changes by at
  most ``M`` between consecutive periods; the optimal fixed-length confidence interval
  ("FLCI", R HonestDiD ``findOptimalFLCI``).

Keyword mapping to R HonestDiD: ``num_pre``/``num_post`` = ``numPrePeriods``/
``numPostPeriods``, ``m_values`` = ``Mbarvec`` (relative magnitudes) or ``Mvec``
(smoothness), ``l_vec`` = ``l_vec``, ``grid_points``/``grid_lb``/``grid_ub`` =
``gridPoints``/``grid.lb``/``grid.ub``, ``method`` = ``method``; the ``"Original"`` row is
``constructOriginalCS``.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from ..core.threads import blas_single_thread
from ..errors import (
    InputError,
    NotComputableWarning,
    SpecificationError,
    check_alpha,
    check_literal,
    format_message,
    renamed_keyword,
)
from ._honest_arp import (
    MAX_VERTEX_SUPPORTS,
    ArpProblem,
    WarmEta,
    _independent_columns,
    arp_accept_lp,
    least_favorable_cv,
    n_supports,
)
from ._honest_flci import optimal_flci

__all__ = [
    "RESTRICTIONS",
    "breakdown_value",
    "constraints_relative_magnitudes",
    "honest_did",
    "overall_weights",
    "relative_magnitudes_cs",
]

RESTRICTIONS = ("relative_magnitudes", "smoothness")
ENGINES = ("auto", "vertices", "lp_warm", "lp")
_METHODS = {"relative_magnitudes": ("C-LF", "Conditional"), "smoothness": ("FLCI",)}
_PSD_TOL = 1e-10


# ----------------------------------------------------------------------------- numerics
def constraints_relative_magnitudes(num_pre: int, num_post: int, mbar: float, s: int,
                                    max_positive: bool) -> np.ndarray:
    """``A`` with ``Delta^RM_{s,sign}(Mbar) = {delta : A delta <= 0}``.

    ``delta`` has ``num_pre + num_post`` entries (reference period excluded, where
    ``delta_0 = 0``). ``s`` in ``-(num_pre - 1) .. 0`` indexes the pre-period first
    difference ``delta_s - delta_{s-1}`` assumed to be the largest in absolute value, with
    the sign given by ``max_positive`` (Rambachan & Roth 2023, Lemma 2.2 decomposition).
    Rows: ``|delta_{t+1} - delta_t| <= bound_t * (signed largest pre difference)`` for every
    consecutive pair, ``bound_t = 1`` before and ``Mbar`` after the reference period;
    rows that are identically zero are dropped.
    """
    n = num_pre + num_post
    diff = np.zeros((n, n + 1))
    for r in range(n):
        diff[r, r] = -1.0
        diff[r, r + 1] = 1.0
    vmax = np.zeros(n + 1)
    vmax[num_pre + s - 1] = -1.0
    vmax[num_pre + s] = 1.0
    if not max_positive:
        vmax = -vmax
    bound = np.vstack([np.tile(vmax, (num_pre, 1)), np.tile(mbar * vmax, (num_post, 1))])
    a = np.vstack([diff - bound, -diff - bound])
    a = a[np.einsum("ij,ij->i", a, a) > 1e-10]
    return np.delete(a, num_pre, axis=1)


def _gamma_matrix(l_vec: np.ndarray) -> np.ndarray:
    """Invertible matrix with first row ``l'`` completed by unit vectors (greedy, in order;
    the confidence set does not depend on the completion)."""
    return _gamma_matrix_cached(tuple(float(v) for v in l_vec)).copy()


@functools.lru_cache(maxsize=64)
def _gamma_matrix_cached(l_key: tuple[float, ...]) -> np.ndarray:
    l_vec = np.array(l_key)
    rows = [l_vec]
    t = len(l_vec)
    for j in range(t):
        e = np.zeros(t)
        e[j] = 1.0
        cand = np.vstack([*rows, e])
        if np.linalg.matrix_rank(cand) == len(cand):
            rows.append(e)
        if len(rows) == t:
            break
    return np.vstack(rows)


def _arp_setup(betahat, sigma, a_mat, num_pre, num_post, l_vec, post_moments_only):
    """Moments ``Y - a theta - X tau`` for the hypothesis ``l'tau_post = theta``."""
    if post_moments_only and num_post > 1:
        rows = np.flatnonzero(np.any(a_mat[:, num_pre:] != 0, axis=1))
    else:
        rows = np.arange(a_mat.shape[0])
    a_post = a_mat[:, num_pre:]
    ginv = np.linalg.inv(_gamma_matrix(l_vec))
    agi = a_post @ ginv
    y = a_mat @ betahat
    sig_y = a_mat @ sigma @ a_mat.T
    a_theta = agi[:, 0]
    x = agi[:, 1:]
    return y[rows], a_theta[rows], x[rows], sig_y[np.ix_(rows, rows)]


def _rm_problems(betahat, sigma, num_pre, num_post, l_vec, mbar, *, alpha, hybrid, kappa,
                 post_moments_only, lf_sims, seed, engine, pool=None):
    """The pieces of ``Delta^RM(mbar)`` (one per location and sign of the largest
    pre-period difference) as :class:`ArpProblem` objects for ``engine`` in
    ``"vertices"``, ``"lp_warm"``, ``"auto"``, or, for ``"lp"``, the raw moments.
    Pieces with identical moments (e.g. every piece at ``mbar = 0``) are kept once: their
    tests are the same function of ``theta``. ``pool`` (a list shared across calls)
    collects the warm solvers so that later pieces start from the bases found earlier."""
    out, seen = [], set()
    for s in range(-(num_pre - 1), 1):
        for sign in (True, False):
            a_mat = constraints_relative_magnitudes(num_pre, num_post, mbar, s, sign)
            y, a_th, x, sig = _arp_setup(betahat, sigma, a_mat, num_pre, num_post, l_vec,
                                         post_moments_only)
            sd = np.sqrt(np.clip(np.diag(sig), 0.0, None))
            keep = sd > 1e-12 * max(sd.max(), 1e-300)
            if not keep.all():  # moments with no sampling variance: deterministic rows
                y, a_th, x, sig = y[keep], a_th[keep], x[keep], sig[np.ix_(keep, keep)]
            x = _independent_columns(x)
            key = (y.shape, x.shape, y.tobytes(), a_th.tobytes(), sig.tobytes(), x.tobytes())
            if key in seen:
                continue
            seen.add(key)
            if engine == "lp":
                out.append((y, a_th, sig, x))
                continue
            use = engine
            if engine == "auto":
                small = n_supports(len(y), x.shape[1]) <= MAX_VERTEX_SUPPORTS
                use = "vertices" if small else "lp_warm"
            out.append(ArpProblem(y, a_th, sig, x, engine=use, alpha=alpha, hybrid=hybrid,
                                  kappa=kappa, lf_sims=lf_sims, seed=seed, pool=pool))
    return out


def relative_magnitudes_cs(betahat: np.ndarray, sigma: np.ndarray, num_pre: int,
                           num_post: int, l_vec: np.ndarray, mbar: float, *,
                           alpha: float = 0.05, hybrid: str = "LF",
                           kappa: float | None = None, grid: np.ndarray,
                           post_moments_only: bool = True, lf_sims: int = 1000,
                           seed: int = 0, engine: str = "auto") -> np.ndarray:
    """Accept/reject of each grid value of ``theta`` under ``Delta^RM(mbar)``.

    Union over ``s`` and the sign of the pieces' ARP (``hybrid="ARP"``) or
    least-favourable hybrid (``hybrid="LF"``) confidence sets; every grid point is
    tested (the full scan; :func:`honest_did` only needs the extreme accepted points,
    :func:`accepted_range`). ``engine`` is ``"vertices"`` (enumerate dual vertices,
    vectorised), ``"lp_warm"`` (LPs only for optimal bases not met before, conditional
    test only where ``0 < eta <= lf_cv``; for many moments), ``"lp"`` (one LP per grid
    point and per least-favourable draw, the reference implementation) or ``"auto"``
    (``"vertices"`` when at most ``MAX_VERTEX_SUPPORTS`` candidate supports, else
    ``"lp_warm"``). Returns a boolean array like ``grid``.
    """
    check_literal("engine", engine, ENGINES)
    kappa = alpha / 10 if kappa is None else kappa
    grid = np.asarray(grid, dtype=float)
    accept = np.zeros(len(grid), dtype=bool)
    for prob in _rm_problems(betahat, sigma, num_pre, num_post, l_vec, mbar, alpha=alpha,
                             hybrid=hybrid, kappa=kappa, post_moments_only=post_moments_only,
                             lf_sims=lf_sims, seed=seed, engine=engine):
        if engine == "lp":
            y, a_th, sig, x = prob
            lf_cv = np.inf
            if hybrid == "LF":
                lf_cv = least_favorable_cv(None, sig, kappa, sd=np.sqrt(np.diag(sig)), x=x,
                                           sims=lf_sims, seed=seed)
            accept |= arp_accept_lp(y, a_th, sig, x, grid, alpha=alpha, hybrid=hybrid,
                                    kappa=kappa, lf_cv=lf_cv).accept
        else:
            accept |= prob.accept(grid).accept
    return accept


#: First chunk of grid points tested from each edge when scanning inwards for the extreme
#: accepted points (chunks then double): one conditional-test call costs about as much
#: as testing a few dozen points, and the bound is usually within the first chunk.
_SCAN_CHUNK = 16


def _first_accepted(prob: ArpProblem, thetas, eta, gam, left, right
                    ) -> tuple[int | None, int | None]:
    """First index of ``left`` and of ``right`` (each in the order given) that ``prob``
    accepts (None when none is): both ends are tested in the same call, in chunks of
    growing size, until each has its first acceptance or is exhausted."""
    found: list[int | None] = [None, None]
    pos = [0, 0]
    cands = (left, right)
    size = _SCAN_CHUNK
    while True:
        parts = [c[p:p + size] if f is None else c[:0]
                 for c, p, f in zip(cands, pos, found, strict=True)]
        if not len(parts[0]) and not len(parts[1]):
            return found[0], found[1]
        idx = np.concatenate(parts)
        acc = prob.decide(thetas[idx], eta[idx], gam[idx])
        for side, part, a in ((0, parts[0], acc[:len(parts[0])]),
                              (1, parts[1], acc[len(parts[0]):])):
            if len(part) and a.any():
                found[side] = int(part[int(a.argmax())])
            pos[side] += len(part)
        size *= 2


def accepted_range(problems: Sequence[ArpProblem], thetas: np.ndarray
                   ) -> tuple[int, int] | None:
    """Indices of the smallest and largest ``theta`` (increasing grid) accepted by at
    least one piece: the bounds of the union confidence set, without testing the points
    between them. ``eta`` is computed at every point (cheap); a point with ``eta <= 0``
    is accepted and one with ``eta`` above the least-favourable critical value rejected
    without the conditional test (and without computing that critical value when ``eta``
    exceeds its draw-only upper bound, :attr:`ArpProblem.lf_cv_bound`); the remaining
    points are tested from the grid edges inwards, only outside the range already known
    to be accepted, and the scan of a piece stops at its first acceptance from each side.
    Same indices as the full scan
    (:func:`relative_magnitudes_cs`): the smallest accepted index of a union is the
    smallest over the pieces of each piece's first acceptance (and the same for the
    largest). None when nothing is accepted."""
    n = len(thetas)
    etas = [p.eta(thetas) for p in problems]
    lo, hi = n, -1
    for eta, _ in etas:
        cheap = np.flatnonzero(~(np.isfinite(eta) & (eta > 0)))
        if len(cheap):
            lo, hi = min(lo, int(cheap[0])), max(hi, int(cheap[-1]))

    def candidates(p, eta, idx):
        idx = idx[np.isfinite(eta[idx]) & (eta[idx] > 0)]
        if p.hybrid == "LF" and len(idx):
            # above an upper bound of lf_cv: rejected by the LF stage, whatever lf_cv is
            idx = idx[eta[idx] <= p.lf_cv_bound]
            if len(idx):
                idx = idx[eta[idx] <= p.lf_cv]
        return idx

    none = np.zeros(0, dtype=int)
    if lo == n:  # no point accepted without the test: the smallest acceptance first
        for p, (eta, gam) in zip(problems, etas, strict=True):
            first, _ = _first_accepted(p, thetas, eta, gam,
                                       candidates(p, eta, np.arange(lo)), none)
            if first is not None:
                lo = first
        if lo == n:
            return None
        hi = lo
    for p, (eta, gam) in zip(problems, etas, strict=True):
        first, last = _first_accepted(p, thetas, eta, gam,
                                      candidates(p, eta, np.arange(lo)),
                                      candidates(p, eta, np.arange(n - 1, hi, -1)))
        if first is not None:
            lo = first
        if last is not None:
            hi = last
    return lo, hi


def _rejects_everywhere(problems: Sequence[ArpProblem], theta: float) -> bool:
    """True when every piece rejects ``theta`` (the union set excludes it): the same
    decision as ``accepted_range(problems, [theta]) is None``, stopping at the first
    piece that accepts -- first on the cheap ``eta <= 0`` acceptances of all pieces, then
    on the tests (a value above a piece's :attr:`ArpProblem.lf_cv_bound` is rejected
    without its critical value)."""
    th = np.array([float(theta)])
    etas = []
    for p in problems:
        eta, gam = p.eta(th)
        if not (np.isfinite(eta[0]) and eta[0] > 0):
            return False
        etas.append((eta, gam))
    for p, (eta, gam) in zip(problems, etas, strict=True):
        if p.hybrid == "LF" and eta[0] > p.lf_cv_bound:
            continue
        if p.decide(th, eta, gam)[0]:
            return False
    return True


def _delta_sd_upper_bound(betahat, sigma, num_pre, alpha):
    """R HonestDiD ``DeltaSD_upperBound_Mpre``: the largest ``|second difference| +
    z_{1-alpha} * se`` over the pre-period second differences (default grid of ``M``)."""
    n = num_pre + 1  # pre coefficients plus the reference (0)
    a = np.zeros((n - 2, num_pre))
    for r in range(n - 2):
        row = np.zeros(n)
        row[r:r + 3] = [1.0, -2.0, 1.0]
        a[r] = row[:num_pre]
    b = a @ betahat[:num_pre]
    se = np.sqrt(np.diag(a @ sigma[:num_pre, :num_pre] @ a.T))
    return float(np.max(np.abs(b) + stats.norm.ppf(1 - alpha) * se))


# ----------------------------------------------------------------------------- inputs
def _from_result(result: Any, num_pre: int | None, num_post: int | None):
    spec = dict(result.spec) if result.spec else {}
    if str(getattr(result, "estimator", "")).startswith("imputation"):
        raise SpecificationError(format_message(
            "honest_did cannot use an imputation (Borusyak-Jaravel-Spiess) event study: its "
            "pre-trend coefficients come from a separate regression on untreated "
            "observations (BJS Test 1) relative to the periods before the first lead, not to "
            "period -1, and their covariance with the effect estimates is not computed (NaN "
            "in the result's vcov); Delta^RM / Delta^SD need one reference period and the joint "
            "covariance", where=f"result of {result.estimator}", seen=spec.get("ref"),
            fix="use ti.did2s(..., event_study=True) -- the same imputation estimates of the "
                "post-period effects, with leads relative to -1 and a joint covariance -- or "
                "pass betahat and sigma explicitly"))
    if spec.get("base_period") == "varying":
        raise SpecificationError(format_message(
            "honest_did needs event-study coefficients relative to one common (universal) "
            "base period; this result uses base_period='varying', whose pre-period "
            "coefficients are short differences that Delta^RM / Delta^SD do not describe "
            "(R HonestDiD documentation: use a universal base period)",
            where=f"result of {result.estimator}", seen=spec.get("base_period"),
            fix="re-estimate with base_period='universal' (e.g. "
                "ti.callaway_santanna(..., base_period='universal'))"))
    ref = spec.get("ref")
    if ref is None and str(getattr(result, "estimator", "")).startswith("etwfe"):
        if spec.get("control_group") != "never_treated":
            raise SpecificationError(format_message(
                "an etwfe result with not-yet-treated controls has no pre-treatment "
                "coefficients (every pre-treatment period of a cohort is in its control "
                "group), so there is nothing to bound post-treatment violations with",
                where=f"result of {result.estimator}", seen=spec.get("control_group"),
                fix="re-estimate with ti.etwfe(..., control_group='never_treated') and "
                    ".aggregate('dynamic')"))
        ref = (-1,)  # R etwfe with cgroup = "never": every cohort x period cell but g - 1
    if ref is None and spec.get("base_period") != "universal":
        raise SpecificationError(format_message(
            "cannot tell the reference period of this result (no spec['ref'] or "
            "spec['base_period']); HonestDiD needs coefficients relative to period -1",
            where=f"result of {result.estimator}", seen=sorted(spec)[:10],
            fix="pass betahat and sigma explicitly: ti.honest_did(betahat, sigma, "
                "num_pre=..., num_post=...)"))
    if ref is not None:
        refs = tuple(int(r) for r in (ref if isinstance(ref, Sequence) else (ref,)))
        if refs != (-1,):
            raise SpecificationError(format_message(
                "honest_did needs the single reference period -1 (delta_0 = 0 just before "
                "treatment)", where="result.spec['ref']", seen=refs,
                fix="re-estimate the event study with ref=-1"))
    info = result.term_info
    if info is None or "rel_time" not in info.columns:
        raise SpecificationError(format_message(
            "the result has no event-time terms (term_info['rel_time'])",
            where=f"result of {result.estimator}", fix="pass an event-study result"))
    rel = info["rel_time"].to_numpy(dtype=float)
    terms = np.array(result.terms)
    ok = np.isfinite(rel)
    rel, terms = rel[ok], terms[ok]
    order = np.argsort(rel)
    rel, terms = rel[order].astype(int), terms[order]
    pre_all = [(r, t) for r, t in zip(rel, terms, strict=True) if r < 0]
    post_all = [(r, t) for r, t in zip(rel, terms, strict=True) if r >= 0]
    if any(r == -1 for r, _ in pre_all):
        raise SpecificationError(format_message(
            "the event study estimates rel_time=-1, so -1 is not the reference period",
            where=f"result of {result.estimator}", fix="re-estimate with ref=-1"))
    num_pre = len(pre_all) if num_pre is None else num_pre
    num_post = len(post_all) if num_post is None else num_post
    if num_pre > len(pre_all) or num_post > len(post_all) or num_pre < 1 or num_post < 1:
        raise SpecificationError(format_message(
            "num_pre/num_post do not fit the event study",
            seen={"num_pre": num_pre, "num_post": num_post, "pre terms": len(pre_all),
                  "post terms": len(post_all)},
            fix="need 1 <= num_pre <= #pre-period terms and 1 <= num_post <= #post terms"))
    pre = pre_all[len(pre_all) - num_pre:]
    post = post_all[:num_post]
    want_pre = list(range(-num_pre - 1, -1))
    want_post = list(range(num_post))
    if [r for r, _ in pre] != want_pre or [r for r, _ in post] != want_post:
        raise SpecificationError(format_message(
            "event-time terms are not contiguous around the reference period -1",
            seen={"pre": [r for r, _ in pre], "post": [r for r, _ in post]},
            fix=f"need pre periods {want_pre} and post periods {want_post}; re-estimate "
                "without gaps or pass betahat/sigma explicitly"))
    names = [t for _, t in pre] + [t for _, t in post]
    beta = result.params[names].to_numpy(dtype=float)
    sig = result.vcov.loc[names, names].to_numpy(dtype=float)
    if not np.all(np.isfinite(sig)):
        raise SpecificationError(format_message(
            "the result's covariance of its event-time coefficients has NaN entries (e.g. "
            "pre- and post-period estimates from separate fits); honest_did needs their "
            "joint covariance", where=f"result of {result.estimator}",
            seen=[n for n in names if not np.all(np.isfinite(result.vcov.loc[n, names]))][:6],
            fix="use an estimator that reports the joint covariance or pass betahat/sigma"))
    return beta, sig, num_pre, num_post, names


ATT_TERM = "ATT"
_WEIGHT_TOL = 1e-8  # l'beta and l'Sigma l must reproduce the result's ATT to this (relative)


def overall_weights(result: Any, post_terms: Sequence[str]) -> np.ndarray:
    """``l_vec`` over ``post_terms`` that reproduces the result's own overall ATT.

    A result may declare them (``result.extras["att_weights"]``: a mapping term ->
    weight; the hook for estimators whose ATT is not in their vcov, e.g. etwfe's dynamic
    aggregation). Otherwise they are recovered from the covariance: if
    ``ATT = l' beta_post`` then ``Cov(beta_post, ATT) = Sigma_post l``, so
    ``l = Sigma_post^-1 Cov(beta_post, ATT)``. Either way the weights are checked to
    reproduce the ATT estimate and its variance (relative ``1e-8``); this recovers the
    equal weights of a TWFE event study and of Callaway-Sant'Anna's dynamic aggregation
    (R ``did::aggte(type = "dynamic")``'s overall ATT) and the cell-size weights of
    Sun-Abraham (fixest ``agg = "att"``), and refuses an ATT that is not a combination of
    the post-period coefficients used (e.g. when ``num_post`` drops some of them). An
    etwfe dynamic aggregation with never-treated controls (reference period ``g - 1``, as
    R etwfe) gets R ``emfx``'s cell-size weights the same way.
    """
    post_terms = list(post_terms)
    if not post_terms:
        raise SpecificationError(format_message(
            "target='overall' needs post-period event-time coefficients; none were given",
            where=f"result of {getattr(result, 'estimator', '?')}",
            fix="pass l_vec= explicitly, or use an event-study result"))
    declared = (getattr(result, "extras", None) or {}).get("att_weights")
    params, vcov = result.params, result.vcov
    if ATT_TERM not in params.index:
        raise SpecificationError(format_message(
            "target='overall' needs the result's overall ATT row to take its weights from",
            where=f"result of {result.estimator}", seen=list(params.index)[-5:],
            fix="pass l_vec= explicitly, or target=<relative period>"))
    bp = params[post_terms].to_numpy(dtype=float)
    sp = vcov.loc[post_terms, post_terms].to_numpy(dtype=float)
    att = float(params[ATT_TERM])
    var_att = float(vcov.loc[ATT_TERM, ATT_TERM])
    if declared is not None:
        lv = np.array([float(declared.get(t, 0.0)) for t in post_terms])
    else:
        c = vcov.loc[post_terms, ATT_TERM].to_numpy(dtype=float)
        if not (np.all(np.isfinite(c)) and np.all(np.isfinite(sp))):
            raise SpecificationError(format_message(
                "the covariance between the ATT and the post-period coefficients is not "
                "available, so its aggregation weights cannot be recovered",
                where=f"result of {result.estimator}", fix="pass l_vec= explicitly"))
        lv = np.linalg.lstsq(sp, c, rcond=None)[0]
        lv[np.abs(lv) < 1e-12] = 0.0
    scale = max(abs(att), float(np.abs(bp).max()), 1e-300)
    ok = (abs(lv @ bp - att) <= _WEIGHT_TOL * scale
          and abs(lv @ sp @ lv - var_att) <= _WEIGHT_TOL * max(var_att, 1e-300) * 10)
    if not ok:
        raise SpecificationError(format_message(
            "the result's ATT is not a weighted sum of the post-period coefficients passed "
            "to honest_did (it averages other periods or cells too)",
            where=f"result of {result.estimator}",
            seen={"ATT": att, "l'beta": float(lv @ bp)},
            fix="use all post periods (drop num_post=) or pass l_vec= explicitly"))
    return lv


def _validate_inputs(betahat, sigma, num_pre, num_post, l_vec):
    b = np.asarray(betahat, dtype=float).reshape(-1)
    if sigma is None:
        raise SpecificationError(format_message(
            "sigma is required when betahat is an array",
            fix="pass the covariance matrix of betahat: ti.honest_did(betahat, sigma, ...)"))
    s = np.asarray(sigma, dtype=float)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise InputError(format_message("sigma must be a square matrix", seen=s.shape,
                                        fix="pass the (k x k) covariance of betahat"))
    if num_pre is None or num_post is None:
        raise SpecificationError(format_message(
            "num_pre and num_post are required with an array betahat",
            fix="pass e.g. num_pre=5, num_post=2"))
    if int(num_pre) < 1 or int(num_post) < 1:
        raise SpecificationError(format_message(
            "num_pre and num_post must be at least 1",
            seen={"num_pre": num_pre, "num_post": num_post}))
    if num_pre + num_post != len(b):
        raise InputError(format_message(
            "num_pre + num_post must equal len(betahat)",
            seen={"num_pre": num_pre, "num_post": num_post, "len(betahat)": len(b)},
            fix="betahat holds the pre-period then the post-period coefficients, the "
                "reference period excluded"))
    if s.shape[0] != len(b):
        raise InputError(format_message("sigma does not match betahat",
                                        seen={"sigma": s.shape, "betahat": len(b)}))
    if not (np.all(np.isfinite(b)) and np.all(np.isfinite(s))):
        raise InputError(format_message("betahat and sigma must be finite",
                                        fix="drop terms with NaN estimates or variances"))
    if not np.allclose(s, s.T, rtol=1e-8, atol=1e-14 * max(np.abs(s).max(), 1e-300)):
        raise InputError(format_message("sigma is not symmetric",
                                        fix="pass a covariance matrix"))
    eig = np.linalg.eigvalsh((s + s.T) / 2)
    if eig.min() < -_PSD_TOL * max(eig.max(), 1e-300):
        raise InputError(format_message(
            "sigma is not positive semi-definite", seen=f"smallest eigenvalue {eig.min():.3g}",
            fix="pass a valid covariance matrix"))
    if l_vec is None:
        lv = np.zeros(num_post)
        lv[0] = 1.0
    else:
        lv = np.asarray(l_vec, dtype=float).reshape(-1)
        if len(lv) != num_post or not np.all(np.isfinite(lv)) or not np.any(lv != 0):
            raise InputError(format_message(
                "l_vec must have num_post finite entries, not all zero",
                seen={"len(l_vec)": len(lv), "num_post": num_post},
                fix="e.g. l_vec=[0.5, 0.5] for the average of two post periods"))
    return b, (s + s.T) / 2, int(num_pre), int(num_post), lv


def _inputs(result_or_betahat, sigma, num_pre, num_post, l_vec, target):
    """betahat, sigma, num_pre, num_post, l_vec and term names from either input form."""
    names = None
    is_result = hasattr(result_or_betahat, "terms") and hasattr(result_or_betahat, "vcov")
    if target is not None and l_vec is not None:
        raise SpecificationError(format_message(
            "pass either target= or l_vec=, not both", seen={"target": target},
            fix="target='overall' / target=2, or l_vec=[...]"))
    if is_result:
        if sigma is not None:
            raise SpecificationError(format_message(
                "sigma must not be given together with a result (the result's vcov is used)",
                fix="drop sigma= or pass betahat and sigma instead of the result"))
        beta, sig, num_pre, num_post, names = _from_result(result_or_betahat, num_pre,
                                                           num_post)
    else:
        beta, sig = result_or_betahat, sigma
    if target is not None:
        if isinstance(target, str):
            check_literal("target", target, ("overall",))
            if not is_result:
                raise SpecificationError(format_message(
                    "target='overall' needs a result (its ATT weights are read from it)",
                    fix="pass the event-study result, or l_vec= with arrays"))
            l_vec = overall_weights(result_or_betahat, names[num_pre:])
        else:
            e = int(target)
            if e != target or not 0 <= e < int(num_post or 0):
                raise SpecificationError(format_message(
                    "target must be 'overall' or a post-treatment relative period "
                    "0 .. num_post-1", seen=target,
                    fix=f"e.g. target=0 (num_post={num_post})"))
            l_vec = np.zeros(int(num_post))
            l_vec[e] = 1.0
    beta, sig, num_pre, num_post, lv = _validate_inputs(beta, sig, num_pre, num_post, l_vec)
    return beta, sig, num_pre, num_post, lv, names


_MAX_DOUBLINGS = 10


def _adapt_grid(problems, est, half, points):
    """Grid of theta centred on the estimate, doubled until the set is strictly inside."""
    theta_grid = rng = None
    for _ in range(_MAX_DOUBLINGS + 1):
        theta_grid = np.linspace(est - half, est + half, points)
        rng = accepted_range(problems, theta_grid)
        if rng is not None and rng[0] > 0 and rng[1] < points - 1:
            break
        half *= 2.0
    return theta_grid, rng


def breakdown_value(result_or_betahat: Any, sigma: Any = None, *,
                    num_pre: int | None = None, num_post: int | None = None,
                    restriction: Literal["relative_magnitudes", "smoothness"] =
                    "relative_magnitudes", l_vec: Sequence[float] | None = None,
                    target: Any = None, alpha: float = 0.05, n_reps: int = 1000,
                    seed: int = 0, rtol: float = 1e-4) -> float:
    """Breakdown value: the largest ``Mbar`` (relative magnitudes) or ``M`` (smoothness) at
    which the robust confidence set still excludes zero.

    Found by bisection on ``m`` of the test of ``theta = 0`` itself (C-LF for relative
    magnitudes, the optimal FLCI for smoothness), not on a grid of ``theta``: the set
    excludes zero exactly when ``theta = 0`` is rejected, and the sets grow with ``m``.
    The upper end is found by doubling (from 1 for ``Mbar``, from the largest pre-period
    second-difference bound for ``M``). The value returned is the largest ``m`` checked
    to exclude zero, within ``rtol`` (relative) of the breakdown point. Inputs as
    :func:`honest_did` (``n_reps``: least-favourable simulations).

    Returns
    -------
    float
        NaN (with a :class:`~twinimpact.errors.NotComputableWarning`) when the set already
        contains zero at ``m = 0``; ``inf`` (with a warning) when it still excludes zero at
        ``2^40`` times the starting value.

    Examples
    --------
    >>> import numpy as np
    >>> from twinimpact.inference.honest_did import breakdown_value
    >>> beta = np.array([0.0, 0.0, 0.0, 0.5, 0.5])
    >>> round(breakdown_value(beta, np.eye(5) * 0.01, num_pre=3, num_post=2,
    ...                       restriction="smoothness"), 3)
    0.267
    """
    check_literal("restriction", restriction, RESTRICTIONS)
    beta, sig, num_pre, num_post, lv, _ = _inputs(result_or_betahat, sigma, num_pre,
                                                  num_post, l_vec, target)
    if restriction == "relative_magnitudes":
        pool: list[WarmEta] = []  # optimal bases shared across the values of m tried

        def excludes(m: float) -> bool:
            problems = _rm_problems(beta, sig, num_pre, num_post, lv, m, alpha=alpha,
                                    hybrid="LF", kappa=alpha / 10, post_moments_only=True,
                                    lf_sims=n_reps, seed=seed, engine="auto", pool=pool)
            return _rejects_everywhere(problems, 0.0)
        start = 1.0
    else:
        def excludes(m: float) -> bool:
            f = optimal_flci(beta, sig, num_pre, num_post, lv, m, alpha)
            return f.lb > 0 or f.ub < 0
        start = (_delta_sd_upper_bound(beta, sig, num_pre, 0.05) if num_pre > 1
                 else math.sqrt(sig[0, 0]))
        start = max(start, 1e-12)
    if not excludes(0.0):
        warnings.warn(
            "breakdown_value: the robust confidence set contains zero already at m = 0 "
            "(no violation of parallel trends allowed beyond the pre-period pattern): there "
            "is no breakdown value; NaN returned", NotComputableWarning, stacklevel=2)
        return float("nan")
    lo, hi = 0.0, start
    doublings = 0
    while excludes(hi):
        lo, hi = hi, 2.0 * hi
        doublings += 1
        if doublings > 40:
            warnings.warn(f"breakdown_value: the set still excludes zero at m = {lo:.4g}; "
                          "returning inf", NotComputableWarning, stacklevel=2)
            return float("inf")
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        if excludes(mid):
            lo = mid
        else:
            hi = mid
    return float(lo)


# ----------------------------------------------------------------------------- public
@blas_single_thread
def honest_did(result_or_betahat: Any, sigma: Any = None, *, num_pre: int | None = None,
               num_post: int | None = None,
               restriction: Literal["relative_magnitudes", "smoothness"] =
               "relative_magnitudes",
               m_values: Sequence[float] | None = None, l_vec: Sequence[float] | None = None,
               alpha: float = 0.05, method: str | None = None, grid_points: int = 1000,
               grid_lb: float | None = None, grid_ub: float | None = None,
               n_reps: int = 1000, seed: int = 0, lf_sims: int | None = None,
               target: Any = None, grid: Literal["adaptive", "r"] = "adaptive"
               ) -> pd.DataFrame:
    """Sensitivity of an event study to violations of parallel trends (Rambachan & Roth).

    Parameters
    ----------
    result_or_betahat : EstimationResult or array-like
        An event-study result (terms ``rel_time=e``, reference period -1, as returned by
        ``ti.event_study``; a Callaway-Sant'Anna result needs ``base_period="universal"``)
        or the vector ``betahat``: ``num_pre`` pre-period then ``num_post`` post-period
        coefficients, the reference period excluded (R: ``betahat``).
    sigma : array-like, optional
        Covariance of ``betahat`` (required with an array; R: ``sigma``).
    num_pre, num_post : int
        Numbers of pre- and post-period coefficients (R: ``numPrePeriods``,
        ``numPostPeriods``). Inferred from a result (all contiguous pre/post terms); when
        given with a result, the ``num_pre`` latest pre periods and the ``num_post``
        first post periods are used.
    restriction : {"relative_magnitudes", "smoothness"}
        ``Delta^RM(Mbar)`` (R ``createSensitivityResults_relativeMagnitudes``) or
        ``Delta^SD(M)`` (R ``createSensitivityResults``).
    m_values : sequence of float, optional
        Values of ``Mbar`` / ``M`` (R ``Mbarvec`` / ``Mvec``). Defaults as in R: ten values
        from 0 to 2 (relative magnitudes); ten values from 0 to the largest upper 95%
        bound of the pre-period second differences (smoothness).
    l_vec : sequence of float, optional
        ``theta = l_vec' tau_post``; default the first post period (R ``l_vec``).
    target : ``"overall"`` or int, optional
        With a result instead of ``l_vec``: ``"overall"`` takes the weights of the result's
        own overall ``ATT`` (:func:`overall_weights`: equal weights over post periods for
        a TWFE event study and Callaway-Sant'Anna's dynamic aggregation, cell sizes for
        Sun-Abraham, treated-observation shares for did2s); an integer ``e`` targets the
        effect at relative period ``e``.
    alpha : float
        1 - confidence level.
    method : str, optional
        ``"C-LF"`` (default) or ``"Conditional"`` for relative magnitudes; ``"FLCI"`` for
        smoothness.
    grid_points, grid_lb, grid_ub : grid of ``theta`` for test inversion (relative
        magnitudes; R ``gridPoints``, ``grid.lb``, ``grid.ub``). Default as R: 1000 points on
        ``+/- 20`` standard deviations of ``l'betahat_post`` around 0. Reported bounds are
        grid points.
    grid : {"adaptive", "r"}
        Without ``grid_lb``/``grid_ub``: ``"adaptive"`` (default) starts from R's grid and,
        when the robust set is empty on it or reaches its edge (R then returns NaN or the
        grid edge with a warning -- e.g. every ``Mbar`` when the estimate is more than 20
        standard errors from zero), re-centres the grid on the estimate and doubles its
        half-width until the set lies inside (up to 2^10 times R's width). ``"r"`` keeps
        R's grid exactly. ``frame.attrs["grids"]`` records the grid used per ``m``.
    n_reps, seed : simulations and seed for the least-favourable critical value
        (``lf_sims=`` is the deprecated old name of ``n_reps``)
        (R: 1000 draws with ``set.seed(0)``; our draws differ, so C-LF bounds can differ
        from R's by Monte Carlo error).

    Returns
    -------
    pandas.DataFrame
        Columns ``m, lb, ub, method``: first the non-robust interval (``method ==
        "Original"``, ``m`` NaN; R ``constructOriginalCS``), then one row per value of
        ``m``. ``frame.attrs`` records the restriction, ``l_vec``, ``alpha``, ``num_pre``,
        ``num_post``, the terms used, ``target`` and the grids. See
        :func:`breakdown_value` for the largest ``m`` at which the set excludes zero.

    Examples
    --------
    >>> import numpy as np, twinimpact as ti
    >>> from twinimpact.inference.honest_did import honest_did
    >>> beta = np.array([0.0, 0.0, 0.0, 0.5, 0.5])
    >>> sig = np.eye(5) * 0.01
    >>> out = honest_did(beta, sig, num_pre=3, num_post=2, restriction="smoothness",
    ...                  m_values=[0.0, 0.1])
    >>> list(out["method"])
    ['Original', 'FLCI', 'FLCI']
    """
    check_literal("restriction", restriction, RESTRICTIONS)
    check_alpha(alpha)
    lf_sims = renamed_keyword("honest_did", "lf_sims", "n_reps", lf_sims, n_reps,
                              new_default=1000)
    check_literal("grid", grid, ("adaptive", "r"))
    beta, sig, num_pre, num_post, lv, names = _inputs(result_or_betahat, sigma, num_pre,
                                                      num_post, l_vec, target)
    method = _METHODS[restriction][0] if method is None else method
    check_literal("method", method, _METHODS[restriction])

    if m_values is None:
        if restriction == "relative_magnitudes":
            m_values = np.linspace(0.0, 2.0, 10)
        elif num_pre == 1:
            m_values = np.linspace(0.0, math.sqrt(sig[0, 0]), 10)
        else:
            m_values = np.linspace(0.0, _delta_sd_upper_bound(beta, sig, num_pre, 0.05), 10)
    m_arr = np.asarray(m_values, dtype=float).reshape(-1)
    if len(m_arr) == 0 or not np.all(np.isfinite(m_arr)) or np.any(m_arr < 0):
        raise SpecificationError(format_message(
            "m_values must be finite and non-negative", seen=list(m_arr)[:10],
            fix="e.g. m_values=[0.5, 1, 1.5, 2]"))

    post = slice(num_pre, num_pre + num_post)
    est = float(lv @ beta[post])
    sd_theta = float(np.sqrt(lv @ sig[post, post] @ lv))
    z = float(stats.norm.ppf(1 - alpha / 2))
    grids: list[tuple[float, float, float]] = []
    rows: list[dict[str, Any]] = [{"m": np.nan, "lb": est - z * sd_theta,
                                   "ub": est + z * sd_theta, "method": "Original"}]

    if restriction == "smoothness":
        for m in m_arr:
            f = optimal_flci(beta, sig, num_pre, num_post, lv, float(m), alpha)
            rows.append({"m": float(m), "lb": f.lb, "ub": f.ub, "method": method})
    else:
        if not isinstance(grid_points, int | np.integer) or grid_points < 2:
            raise SpecificationError(f"grid_points must be an integer >= 2; got {grid_points!r}.")
        lo = -20 * sd_theta if grid_lb is None else float(grid_lb)
        hi = 20 * sd_theta if grid_ub is None else float(grid_ub)
        if not lo < hi:
            raise SpecificationError(format_message("grid_lb must be below grid_ub",
                                                    seen={"grid_lb": lo, "grid_ub": hi}))
        adapt = grid == "adaptive" and grid_lb is None and grid_ub is None
        hybrid = "LF" if method == "C-LF" else "ARP"
        pool: list[WarmEta] = []  # warm solvers: later pieces start from their bases
        n_pts = int(grid_points)
        for m in m_arr:
            problems = _rm_problems(beta, sig, num_pre, num_post, lv, float(m), alpha=alpha,
                                    hybrid=hybrid, kappa=alpha / 10, post_moments_only=True,
                                    lf_sims=lf_sims, seed=seed, engine="auto", pool=pool)
            theta_grid = np.linspace(lo, hi, n_pts)
            rng = accepted_range(problems, theta_grid)
            if adapt and (rng is None or rng[0] == 0 or rng[1] == n_pts - 1):
                theta_grid, rng = _adapt_grid(problems, est, 20 * sd_theta, n_pts)
            grids.append((float(m), float(theta_grid[0]), float(theta_grid[-1])))
            if rng is None:
                warnings.warn(
                    f"honest_did: the robust confidence set is empty for Mbar={m:g} on the "
                    f"grid [{theta_grid[0]:.4g}, {theta_grid[-1]:.4g}] (every value "
                    "rejected); lb/ub are NaN. "
                    "Widen the grid (grid_lb/grid_ub) or check the event study.",
                    NotComputableWarning, stacklevel=2)
                lb = ub = np.nan
            else:
                lb, ub = float(theta_grid[rng[0]]), float(theta_grid[rng[1]])
                if rng[0] == 0 or rng[1] == n_pts - 1:
                    warnings.warn(
                        f"honest_did: the confidence set for Mbar={m:g} reaches the edge of "
                        f"the theta grid [{theta_grid[0]:.4g}, {theta_grid[-1]:.4g}]; the "
                        "bound there is the grid "
                        "edge, not the true bound. Widen the grid with grid_lb/grid_ub.",
                        NotComputableWarning, stacklevel=2)
            rows.append({"m": float(m), "lb": lb, "ub": ub, "method": method})

    frame = pd.DataFrame(rows, columns=["m", "lb", "ub", "method"])
    frame.attrs.update({"restriction": restriction, "l_vec": tuple(lv.tolist()),
                        "alpha": alpha, "num_pre": num_pre, "num_post": num_post,
                        "terms": tuple(names) if names is not None else None,
                        "estimate": est, "std_error": sd_theta, "method": method,
                        "target": target, "grids": tuple(grids)})
    return frame
