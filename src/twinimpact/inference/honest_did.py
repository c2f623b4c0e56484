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
  uses the pure conditional test instead.
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
    WarmEta,
    _independent_columns,
    arp_accept_cached,
    arp_accept_lp,
    arp_accept_vertices,
    dual_vertices,
    least_favorable_cv,
    n_supports,
)
from ._honest_flci import optimal_flci

__all__ = [
    "RESTRICTIONS",
    "constraints_relative_magnitudes",
    "honest_did",
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


def relative_magnitudes_cs(betahat: np.ndarray, sigma: np.ndarray, num_pre: int,
                           num_post: int, l_vec: np.ndarray, mbar: float, *,
                           alpha: float = 0.05, hybrid: str = "LF",
                           kappa: float | None = None, grid: np.ndarray,
                           post_moments_only: bool = True, lf_sims: int = 1000,
                           seed: int = 0, engine: str = "auto") -> np.ndarray:
    """Accept/reject of each grid value of ``theta`` under ``Delta^RM(mbar)``.

    Union over ``s`` and the sign of the pieces' ARP (``hybrid="ARP"``) or
    least-favourable hybrid (``hybrid="LF"``) confidence sets. ``engine`` is
    ``"vertices"`` (enumerate dual vertices, vectorised), ``"lp_warm"`` (LPs only for
    optimal bases not met before, conditional test only where ``0 < eta <= lf_cv``; for
    many moments), ``"lp"`` (one LP per grid point and per least-favourable draw, the
    reference implementation) or ``"auto"`` (``"vertices"`` when at most
    ``MAX_VERTEX_SUPPORTS`` candidate supports, else ``"lp_warm"``). Returns a boolean
    array like ``grid``.
    """
    check_literal("engine", engine, ENGINES)
    kappa = alpha / 10 if kappa is None else kappa
    accept = np.zeros(len(grid), dtype=bool)
    for s in range(-(num_pre - 1), 1):
        for sign in (True, False):
            a_mat = constraints_relative_magnitudes(num_pre, num_post, mbar, s, sign)
            y, a_th, x, sig = _arp_setup(betahat, sigma, a_mat, num_pre, num_post, l_vec,
                                         post_moments_only)
            sd = np.sqrt(np.clip(np.diag(sig), 0.0, None))
            keep = sd > 1e-12 * max(sd.max(), 1e-300)
            if not keep.all():  # moments with no sampling variance: deterministic rows
                y, a_th, x, sig, sd = y[keep], a_th[keep], x[keep], sig[np.ix_(keep, keep)], \
                    sd[keep]
            x = _independent_columns(x)
            use = engine
            if engine == "auto":
                small = n_supports(len(y), x.shape[1]) <= MAX_VERTEX_SUPPORTS
                use = "vertices" if small else "lp_warm"
            verts = dual_vertices(sd, x) if use == "vertices" else None
            solver = WarmEta(sd, x) if use == "lp_warm" else None
            lf_cv = np.inf
            if hybrid == "LF":
                lf_cv = least_favorable_cv(verts, sig, kappa, sd=sd, x=x, sims=lf_sims,
                                           seed=seed, solver=solver)
            if use == "vertices":
                res = arp_accept_vertices(y, a_th, sig, verts, grid, alpha=alpha,
                                          hybrid=hybrid, kappa=kappa, lf_cv=lf_cv)
            elif use == "lp_warm":
                res = arp_accept_cached(y, a_th, sig, solver, grid, alpha=alpha,
                                        hybrid=hybrid, kappa=kappa, lf_cv=lf_cv)
            else:
                res = arp_accept_lp(y, a_th, sig, x, grid, alpha=alpha, hybrid=hybrid,
                                    kappa=kappa, lf_cv=lf_cv)
            accept |= res.accept
    return accept


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
    return beta, sig, num_pre, num_post, names


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


# ----------------------------------------------------------------------------- public
@blas_single_thread
def honest_did(result_or_betahat: Any, sigma: Any = None, *, num_pre: int | None = None,
               num_post: int | None = None,
               restriction: Literal["relative_magnitudes", "smoothness"] =
               "relative_magnitudes",
               m_values: Sequence[float] | None = None, l_vec: Sequence[float] | None = None,
               alpha: float = 0.05, method: str | None = None, grid_points: int = 1000,
               grid_lb: float | None = None, grid_ub: float | None = None,
               n_reps: int = 1000, seed: int = 0, lf_sims: int | None = None
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
    alpha : float
        1 - confidence level.
    method : str, optional
        ``"C-LF"`` (default) or ``"Conditional"`` for relative magnitudes; ``"FLCI"`` for
        smoothness.
    grid_points, grid_lb, grid_ub : grid of ``theta`` for test inversion (relative
        magnitudes; R ``gridPoints``, ``grid.lb``, ``grid.ub``). Default as R: 1000 points on
        ``+/- 20`` standard deviations of ``l'betahat_post`` around 0. Reported bounds are
        grid points.
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
        ``num_post`` and the terms used.

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
    names = None
    if hasattr(result_or_betahat, "terms") and hasattr(result_or_betahat, "vcov"):
        if sigma is not None:
            raise SpecificationError(format_message(
                "sigma must not be given together with a result (the result's vcov is used)",
                fix="drop sigma= or pass betahat and sigma instead of the result"))
        beta, sig, num_pre, num_post, names = _from_result(result_or_betahat, num_pre,
                                                           num_post)
    else:
        beta, sig = result_or_betahat, sigma
    beta, sig, num_pre, num_post, lv = _validate_inputs(beta, sig, num_pre, num_post, l_vec)
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
        grid = np.linspace(lo, hi, int(grid_points))
        hybrid = "LF" if method == "C-LF" else "ARP"
        for m in m_arr:
            acc = relative_magnitudes_cs(beta, sig, num_pre, num_post, lv, float(m),
                                         alpha=alpha, hybrid=hybrid, grid=grid,
                                         lf_sims=lf_sims, seed=seed)
            if not acc.any():
                warnings.warn(
                    f"honest_did: the robust confidence set is empty for Mbar={m:g} on the "
                    f"grid [{lo:.4g}, {hi:.4g}] (every value rejected); lb/ub are NaN. "
                    "Widen the grid (grid_lb/grid_ub) or check the event study.",
                    NotComputableWarning, stacklevel=2)
                lb = ub = np.nan
            else:
                lb, ub = float(grid[acc].min()), float(grid[acc].max())
                if acc[0] or acc[-1]:
                    warnings.warn(
                        f"honest_did: the confidence set for Mbar={m:g} reaches the edge of "
                        f"the theta grid [{lo:.4g}, {hi:.4g}]; the bound there is the grid "
                        "edge, not the true bound. Widen the grid with grid_lb/grid_ub.",
                        NotComputableWarning, stacklevel=2)
            rows.append({"m": float(m), "lb": lb, "ub": ub, "method": method})

    frame = pd.DataFrame(rows, columns=["m", "lb", "ub", "method"])
    frame.attrs.update({"restriction": restriction, "l_vec": tuple(lv.tolist()),
                        "alpha": alpha, "num_pre": num_pre, "num_post": num_post,
                        "terms": tuple(names) if names is not None else None,
                        "estimate": est})
    return frame
