"""Numerical kernels of the Callaway & Sant'Anna (2021) estimator (pure functions).

Everything here takes arrays and returns arrays or frozen dataclasses; validation and
bookkeeping live in :mod:`twinimpact.estimators.callaway_santanna`.

Notation follows Sant'Anna & Zhao (2020, J. Econometrics 219(1)) for the 2x2 cells and
Callaway & Sant'Anna (2021, J. Econometrics 225(2)) for aggregation:

* ``dy``  (n1,)    outcome change ``Y_t - Y_base`` of the units in one (g, t) cell;
* ``D``   (n1,)    1 for the cohort ``g`` (treated), 0 for comparison units;
* ``X``   (n1, k)  covariates with an intercept in the first column (R ``model.matrix``);
* the influence function returned for a cell is already multiplied by ``n / n1`` (R did
  ``compute.att_gt``), so that ``se = sqrt(sum(psi**2)) / n`` over all ``n`` units.

The three 2x2 estimators reproduce R DRDID's ``drdid_panel`` (locally efficient doubly
robust, logit propensity score + OLS outcome regression; the one R did calls for
``est_method = "dr"``), ``std_ipw_did_panel`` (normalised IPW, control units with a
propensity score at or above 0.995 trimmed) and ``reg_did_panel`` (outcome regression),
all with unit weights.

Unbalanced panels (R did ``allow_unbalanced_panel = TRUE``) treat each cell as repeated
cross sections: :func:`cell_closed_form_rc` and :func:`cell_estimate_rc` reproduce DRDID's
``drdid_rc`` (the locally efficient DR estimator of Sant'Anna & Zhao 2020, eq. 3.4, the
one R did calls for ``est_method = "dr"`` when ``panel = FALSE``), ``std_ipw_did_rc`` and
``reg_did_rc`` on the ``n1`` observations (rows) of the cell:

* ``y``    (n1,)    outcome of each observation in its own period;
* ``post`` (n1,)    1 when the observation is from period ``t``, 0 from the base period;
* ``D``, ``X``      as above, ``X`` row-wise (each observation's own covariates).

Their influence function is per observation, scaled by ``n_units / n1``; the caller sums
it within unit (R ``rowsum(.., .rowid)``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.progress import progress

__all__ = [
    "IPW_TRIM",
    "OVERLAP_MAX",
    "PS_CAP",
    "BlockedInfluence",
    "CellFit",
    "LogitFit",
    "cell_closed_form",
    "cell_closed_form_full",
    "cell_closed_form_groups",
    "cell_closed_form_rc",
    "cell_closed_form_rc_groups",
    "cell_estimate",
    "cell_estimate_rc",
    "logit",
    "mammen_bootstrap",
    "quantile_type1",
    "weights_influence",
    "weights_influence_by_cohort",
]

#: DRDID caps fitted propensity scores at ``1 - 1e-6`` to avoid dividing by zero.
PS_CAP = 1.0 - 1e-6
#: DRDID ``std_ipw_did_panel(trim.level = 0.995)``: control units at or above are dropped.
IPW_TRIM = 0.995
#: R did's overlap guard: a (g, t) cell is not computed when max p-score >= 0.999.
OVERLAP_MAX = 0.999
#: Mammen (1993) two-point weights used by R BMisc::multiplier_bootstrap.
_SQRT5 = np.sqrt(5.0)
MAMMEN_LOW = (1.0 - _SQRT5) / 2.0
MAMMEN_HIGH = (1.0 + _SQRT5) / 2.0
MAMMEN_P_LOW = (1.0 + _SQRT5) / (2.0 * _SQRT5)
#: the bit patterns behind :func:`mammen_bootstrap`'s weights: HIGH's, and HIGH's XOR LOW's
_MAMMEN_HIGH_BITS = np.array(MAMMEN_HIGH).view(np.uint64)[()]
_MAMMEN_FLIP = np.uint64(int(_MAMMEN_HIGH_BITS) ^ int(np.array(MAMMEN_LOW).view(np.uint64)))
#: set to ``numpy`` to make the bootstrap's weights with NumPy even when ``_cs_boot.c`` was
#: built, ``nopcg`` to draw the uniforms with NumPy and split them with the kernel (the
#: tests compare the three: the same weights)
KERNEL_ENV = "TWINIMPACT_CSBOOT_KERNEL"
#: uniforms drawn per call of the compiled split: this many, in whole rows (one at least),
#: so that they are still in cache when the kernel reads them
_SPLIT_ELEMS = 1 << 16
#: fewest draws per chunk of the compiled split (its buffer: this many weights per unit)
SPLIT_MIN_DRAWS = 16

_LIB: list = []


def _split_kernel() -> Any:
    """The ctypes library of ``_cs_boot.c`` (``split``: ``ti_mammen_split``; ``pcg``:
    ``ti_mammen_split_pcg``, or None without a 128-bit integer type), or None (not
    built, or :data:`KERNEL_ENV` is ``numpy``)."""
    mode = os.environ.get(KERNEL_ENV, "").strip().lower()
    if mode == "numpy":
        return None
    if not _LIB:
        kernel = None
        try:
            import ctypes
            from types import SimpleNamespace

            from . import _cs_boot  # the built extension module (file located, not called)
            lib = ctypes.CDLL(_cs_boot.__file__)
            p, i64, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
            args = [i64, i64, p, p, p, i64, p, p, i64, i64, p, f64, f64, f64, p]
            for fn in (lib.ti_mammen_split, lib.ti_mammen_split_pcg):
                fn.restype = ctypes.c_int
                fn.argtypes = args
            st = np.zeros(4, dtype=np.uint64)
            has_pcg = lib.ti_mammen_split_pcg(0, 0, st.ctypes.data, None, None, 0, None,
                                              None, 0, 0, None, 0.0, 0.0, 0.0, None) == 0
            kernel = SimpleNamespace(split=lib.ti_mammen_split,
                                     pcg=lib.ti_mammen_split_pcg if has_pcg else None)
        except (ImportError, OSError, AttributeError):
            kernel = None
        _LIB.append(kernel)
    if mode == "nopcg" and _LIB[0] is not None:
        from types import SimpleNamespace

        return SimpleNamespace(split=_LIB[0].split, pcg=None)
    return _LIB[0]


def _pcg64_words(rng: np.random.Generator) -> np.ndarray | None:
    """The state of ``rng``'s bit generator as four uint64 (the state's high and low
    words, then the increment's) when it is NumPy's PCG64, else None."""
    if type(rng.bit_generator) is not np.random.PCG64:
        return None
    v = rng.bit_generator.state["state"]
    m = (1 << 64) - 1
    return np.array([v["state"] >> 64, v["state"] & m, v["inc"] >> 64, v["inc"] & m],
                    dtype=np.uint64)


def _set_pcg64_state(rng: np.random.Generator, words: np.ndarray) -> None:
    """Put the state advanced by the kernel back into ``rng`` (its increment and its
    buffered 32-bit half unchanged: doubles do not touch them)."""
    state = rng.bit_generator.state
    state["state"]["state"] = (int(words[0]) << 64) | int(words[1])
    rng.bit_generator.state = state


@dataclass(frozen=True)
class LogitFit:
    """Logistic regression by Newton-Raphson (= IRLS with the canonical link).

    ``coef`` (k,), ``fitted`` (n,), ``converged`` bool, ``iterations`` int.
    """

    coef: np.ndarray
    fitted: np.ndarray
    converged: bool
    iterations: int


def logit(X: np.ndarray, D: np.ndarray, *, tol: float = 1e-12, max_iter: int = 100) -> LogitFit:
    """Maximum-likelihood logit of ``D`` on ``X`` (no intercept added)."""
    k = X.shape[1]
    beta = np.zeros(k)
    p = np.full(len(D), 0.5)
    converged = False
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - iterations reported
        eta = X @ beta
        p = 1.0 / (1.0 + np.exp(-eta))
        w = p * (1.0 - p)
        grad = X.T @ (D - p)
        hess = (X * w[:, None]).T @ X
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            break
        beta = beta + step
        if not np.all(np.isfinite(beta)):
            break
        if np.max(np.abs(step)) <= tol * (1.0 + np.max(np.abs(beta))):
            converged = True
            break
    p = 1.0 / (1.0 + np.exp(-(X @ beta)))
    return LogitFit(coef=beta, fitted=p, converged=converged, iterations=it)


@dataclass(frozen=True)
class CellFit:
    """One ATT(g, t) cell: estimate and influence function on the cell's units.

    ``att`` float (NaN if not computable), ``inf`` (n1,) influence function already
    multiplied by ``n_total / n1``, ``reason`` why it is NaN (empty if computed).
    """

    att: float
    inf: np.ndarray
    reason: str = ""


def _share_guard(share: float, method: str) -> str | None:
    """R's guards for a 2x2 cell without covariates, from the share of treated units (the
    propensity score is constant): the overlap check ("dr"/"ipw") and IPW trimming of every
    comparison unit. The reason the cell is NaN, or None."""
    if method in ("dr", "ipw") and share >= OVERLAP_MAX:
        return f"overlap condition violated (propensity score {share:.4f} >= {OVERLAP_MAX})"
    if method == "ipw" and share >= IPW_TRIM:
        return f"all comparison units trimmed (propensity score >= {IPW_TRIM})"
    return None


def cell_closed_form(dy: np.ndarray, D: np.ndarray, n_total: int, method: str) -> CellFit:
    """Unconditional 2x2 DiD (no covariates): ``mean(dy | D=1) - mean(dy | D=0)``.

    Without covariates ``drdid_panel``, ``std_ipw_did_panel`` and ``reg_did_panel`` all
    reduce to this difference of means with influence function
    ``n [D (dy - m1) / N1 - (1 - D)(dy - m0) / N0]`` (already scaled by ``n / n1``);
    the exceptions are R's guards: the overlap check (share treated >= 0.999, "dr"/"ipw")
    and IPW trimming of every control unit when the share treated is >= 0.995.
    """
    d = D.astype(bool)
    n1 = len(D)
    N1 = int(d.sum())
    N0 = n1 - N1
    share = N1 / n1
    reason = _share_guard(share, method)
    if reason:
        return CellFit(np.nan, np.full(n1, np.nan), reason)
    m1 = dy[d].mean()
    m0 = dy[~d].mean()
    inf = np.where(d, (dy - m1) * (n_total / N1), (dy - m0) * (-n_total / N0))
    return CellFit(float(m1 - m0), inf)


def _rcond_bad(a: np.ndarray) -> bool:
    """R's ``rcond(a) < .Machine$double.eps`` test (1-norm reciprocal condition)."""
    with np.errstate(all="ignore"):
        c = np.linalg.cond(a, 1)
    return not np.isfinite(c) or 1.0 / c < np.finfo(float).eps


def cell_closed_form_full(dy: np.ndarray, treat: np.ndarray, ctrl: np.ndarray,
                          n_total: int, method: str, out: np.ndarray) -> CellFit:
    """:func:`cell_closed_form` on full-length vectors, writing the influence function
    into ``out`` (n,) (zero outside the cell) without subsetting the units.

    ``dy`` (n,) outcome change of every unit, ``treat``/``ctrl`` (n,) boolean masks of
    the cohort and the comparison units. Returns ``CellFit`` with an empty ``inf``.
    """
    N1 = int(np.count_nonzero(treat))
    N0 = int(np.count_nonzero(ctrl))
    share = N1 / (N1 + N0)
    empty = np.empty(0)
    reason = _share_guard(share, method)
    if reason:
        return CellFit(np.nan, empty, reason)
    m1 = np.add.reduce(dy, where=treat) / N1
    m0 = np.add.reduce(dy, where=ctrl) / N0
    out[:] = 0.0
    np.multiply(dy - m1, n_total / N1, out=out, where=treat)
    np.multiply(dy - m0, -n_total / N0, out=out, where=ctrl)
    return CellFit(float(m1 - m0), empty)


def cell_closed_form_groups(dy1: np.ndarray, dy0: Sequence[np.ndarray], n_total: int,
                            method: str) -> CellFit:
    """:func:`cell_closed_form` from the outcome changes of the cohort ``dy1`` (N1,) and of
    the comparison units in parts ``dy0`` (one array per comparison group): the influence
    function is written over them in place (``dy1`` becomes the cohort's values, each part
    its units'), the comparison mean summed part by part. Same estimate, influence
    function and guards as :func:`cell_closed_form_full` (to the order of that sum); when
    a guard applies the inputs are left unscaled. Returns ``CellFit`` with an empty
    ``inf``. The cell-by-cell form of ``callaway_santanna._closed_cells`` (which computes
    every cell at once with the same operations: tested bit for bit)."""
    N1, N0 = len(dy1), sum(len(d) for d in dy0)
    share = N1 / (N1 + N0)
    empty = np.empty(0)
    reason = _share_guard(share, method)
    if reason:
        return CellFit(np.nan, empty, reason)
    m1 = np.add.reduce(dy1) / N1
    m0 = sum(float(np.add.reduce(d)) for d in dy0) / N0
    dy1 -= m1
    dy1 *= n_total / N1
    for d in dy0:
        d -= m0
        d *= -n_total / N0
    return CellFit(float(m1 - m0), empty)


def _reg_cell(dy: np.ndarray, D: np.ndarray, X: np.ndarray, n_total: int,
              cache: dict | None = None) -> CellFit:
    """:func:`cell_estimate` with ``method="reg"`` (DRDID ``reg_did_panel``), computed on
    the cell's treated and comparison units apart: the treated units' weights are 1 and
    the comparison units' 0, so ``eta_t`` and ``eta_c`` are means over the treated units,
    the treated units' influence is ``(dy - eta_t) - (out - eta_c)`` and the comparison
    units' is the OLS term ``-e_i x_i' (X_c'X_c / n1)^-1 M1`` only (both over ``mw``).
    The same algebra as the weighted full-length form, in about half its passes over the
    comparison units (with few treated units, nearly all of a cell). ``cache``: a dict
    kept while ``D`` and ``X`` stay the same (the cells of one cohort with time-invariant
    covariates), holding the split, ``X_c`` and ``X_c'X_c``."""
    n1 = len(D)
    nan_inf = np.full(n1, np.nan)
    if cache is not None and "reg_split" in cache:
        it, ic, Xc, Xt, xtx, bad = cache["reg_split"]
    else:
        treat = D.astype(bool)
        it = np.flatnonzero(treat)
        ic = np.flatnonzero(~treat)
        Xc, Xt = X[ic], X[it]
        xtx = Xc.T @ Xc
        bad = _rcond_bad(xtx)
        if cache is not None:
            cache["reg_split"] = (it, ic, Xc, Xt, xtx, bad)
    if bad:
        return CellFit(np.nan, nan_inf, "covariate matrix of the comparison units is "
                       "singular or ill-conditioned")
    dyc = dy[ic]
    beta = np.linalg.solve(xtx, Xc.T @ dyc)
    if not len(it):
        return CellFit(np.nan, nan_inf, "the 2x2 estimate is not finite")
    dyt = dy[it]
    out_t = Xt @ beta
    eta_t = float(np.mean(dyt))
    eta_c = float(np.mean(out_t))
    att = eta_t - eta_c
    if not np.isfinite(att):
        return CellFit(np.nan, nan_inf, "the 2x2 estimate is not finite")
    mw = len(it) / n1
    scale = n_total / n1 / mw
    s = np.linalg.solve(xtx / n1, Xt.sum(axis=0) / n1)  # (X_c'X_c / n1)^-1 M1
    inf = np.empty(n1)
    inf[it] = ((dyt - eta_t) - (out_t - eta_c)) * scale
    e = dyc - Xc @ beta
    e *= Xc @ s
    e *= -scale
    inf[ic] = e
    return CellFit(float(att), inf)


def cell_estimate(dy: np.ndarray, D: np.ndarray, X: np.ndarray, n_total: int, method: str,
                  ps: LogitFit | None = None, cache: dict | None = None) -> CellFit:
    """ATT(g, t) of one cell with covariates, as R DRDID (see the module docstring).

    Parameters
    ----------
    dy, D, X : see the module docstring; ``X[:, 0]`` must be the intercept.
    n_total : number of units in the whole panel (influence-function scaling ``n / n1``).
    method : ``"dr"`` (drdid_panel), ``"ipw"`` (std_ipw_did_panel), ``"reg"`` (reg_did_panel).
    ps : a logit fit of ``D`` on ``X`` on exactly these rows (cache); fitted if None.
    cache : for ``"reg"``, a dict kept while ``D`` and ``X`` are the same (see
        :func:`_reg_cell`); None: nothing kept.

    Notes
    -----
    The estimation-effect terms ``asy.lin.rep %*% M`` of DRDID are evaluated as
    ``r_i * (x_i' A^{-1} M)`` (matrix-vector products), the same algebra without forming
    the (n1, k) matrices.
    """
    if method == "reg":
        return _reg_cell(dy, D, X, n_total, cache)
    n1 = len(D)
    Df = D.astype(float)
    ctrl = ~D.astype(bool)
    nan_inf = np.full(n1, np.nan)
    if method in ("dr", "ipw"):
        if ps is None:
            ps = logit(X, Df)
        if not np.all(np.isfinite(ps.fitted)) or np.max(ps.fitted) >= OVERLAP_MAX:
            return CellFit(np.nan, nan_inf, "overlap condition violated (max propensity "
                           f"score >= {OVERLAP_MAX}) or the logit did not converge")
        p = np.minimum(ps.fitted, PS_CAP)
        W = p * (1.0 - p)
        hess = (X.T * W) @ X / n1  # Hessian.ps = n1 * (X'WX)^-1 = inv(hess)
        try:
            np.linalg.cholesky(hess)
        except np.linalg.LinAlgError:
            return CellFit(np.nan, nan_inf, "singular propensity-score Hessian")
        score_ps = Df - p  # asy.lin.rep.ps = score_ps * x_i' hess^-1
    if method in ("dr", "reg"):
        Xc = X[ctrl]
        xtx = Xc.T @ Xc
        if _rcond_bad(xtx):
            return CellFit(np.nan, nan_inf, "covariate matrix of the comparison units is "
                           "singular or ill-conditioned")
        beta = np.linalg.solve(xtx, Xc.T @ dy[ctrl])
        out = X @ beta
        e_ols = np.where(ctrl, dy - out, 0.0)  # asy.lin.rep.ols = e_i x_i' (X_c'X_c/n1)^-1
        xpx = xtx / n1

        def ols_term(M: np.ndarray) -> np.ndarray:
            return e_ols * (X @ np.linalg.solve(xpx, M))

    if method == "dr":
        w_t = Df
        w_c = p * (1.0 - Df) / (1.0 - p)
        resid = dy - out
        mw_t, mw_c = w_t.mean(), w_c.mean()
        eta_t = np.mean(w_t * resid) / mw_t
        eta_c = np.mean(w_c * resid) / mw_c
        att = eta_t - eta_c
        M1 = X.T @ w_t / n1
        inf_t = (w_t * (resid - eta_t) - ols_term(M1)) / mw_t
        M2 = X.T @ (w_c * (resid - eta_c)) / n1
        M3 = X.T @ w_c / n1
        inf_c = (w_c * (resid - eta_c) + score_ps * (X @ np.linalg.solve(hess, M2))
                 - ols_term(M3)) / mw_c
        inf = inf_t - inf_c
    elif method == "ipw":
        trim = np.where(ctrl, p < IPW_TRIM, True)
        w_t = trim * Df
        w_c = trim * p * (1.0 - Df) / (1.0 - p)
        if np.sum(w_c) == 0:
            return CellFit(np.nan, nan_inf,
                           f"all comparison units trimmed (propensity score >= {IPW_TRIM})")
        mw_t, mw_c = w_t.mean(), w_c.mean()
        eta_t = np.mean(w_t * dy) / mw_t
        eta_c = np.mean(w_c * dy) / mw_c
        att = eta_t - eta_c
        inf_t = w_t * (dy - eta_t) / mw_t
        M2 = X.T @ (w_c * (dy - eta_c)) / n1
        inf_c = (w_c * (dy - eta_c) + score_ps * (X @ np.linalg.solve(hess, M2))) / mw_c
        inf = inf_t - inf_c
    else:  # reg
        w = Df
        mw = w.mean()
        eta_t = np.mean(w * dy) / mw
        eta_c = np.mean(w * out) / mw
        att = eta_t - eta_c
        inf_t = w * (dy - eta_t) / mw
        M1 = X.T @ w / n1
        inf_c = (w * (out - eta_c) + ols_term(M1)) / mw
        inf = inf_t - inf_c
    if not np.isfinite(att):
        return CellFit(np.nan, nan_inf, "the 2x2 estimate is not finite")
    return CellFit(float(att), inf * (n_total / n1))


def _rc_guard(N: list[int], method: str) -> str | None:
    """R's guards of a repeated-cross-section 2x2 without covariates from the four cell
    counts (cohort at t, cohort at base, comparison at t, comparison at base): an empty
    cell; for "dr"/"ipw" the overlap check (share of treated observations >= 0.999) and
    the trimming of every comparison observation when that share is >= 0.995. The reason
    the cell is NaN, or None."""
    if min(N) == 0:
        which = ["cohort in period t", "cohort in the base period",
                 "comparison units in period t", "comparison units in the base period"]
        return "no observations of the " + " / ".join(
            w for w, c in zip(which, N, strict=True) if c == 0)
    share = (N[0] + N[1]) / sum(N)
    if method in ("dr", "ipw") and share >= OVERLAP_MAX:
        return f"overlap condition violated (propensity score {share:.4f} >= {OVERLAP_MAX})"
    if method in ("dr", "ipw") and share >= IPW_TRIM:
        return f"all comparison observations trimmed (propensity score >= {IPW_TRIM})"
    return None


def cell_closed_form_rc(Y: np.ndarray, present: np.ndarray, cur: int, base: int,
                        treat: np.ndarray, ctrl: np.ndarray, n_total: int, method: str,
                        out: np.ndarray) -> CellFit:
    """Repeated-cross-section 2x2 DiD without covariates, on a wide unbalanced panel.

    ``Y`` (n, T) outcomes (anything where absent), ``present`` (n, T) bool, ``cur``/``base``
    the column of period ``t`` and of the base period, ``treat``/``ctrl`` (n,) unit masks.
    Without covariates ``drdid_rc``, ``std_ipw_did_rc`` and ``reg_did_rc`` all reduce to
    the difference of four cell means over the observations present,
    ``ATT = (m_T1 - m_T0) - (m_C1 - m_C0)``, with per-observation influence function
    ``(n1 / N_cell) (y - m_cell)`` signed +, -, -, + (times ``n_total / n1``). Summed
    within unit it is written into ``out`` (n,) (zero for units outside the cell):
    ``psi_i = n_total [T1_i (y_it - m_T1)/N_T1 - T0_i (y_ib - m_T0)/N_T0
    - C1_i (y_it - m_C1)/N_C1 + C0_i (y_ib - m_C0)/N_C0]``.

    R's guards apply: an empty (group, period) cell; for ``"dr"``/``"ipw"`` the overlap
    check (share of treated observations >= 0.999) and the trimming of every comparison
    observation when that share is >= 0.995 (both RC estimators then divide 0 by 0).
    """
    at_t, at_b = present[:, cur], present[:, base]
    masks = (treat & at_t, treat & at_b, ctrl & at_t, ctrl & at_b)
    N = [int(np.count_nonzero(m)) for m in masks]
    empty = np.empty(0)
    reason = _rc_guard(N, method)
    if reason:
        return CellFit(np.nan, empty, reason)
    yt, yb = Y[:, cur], Y[:, base]
    m = [np.add.reduce(v, where=mk) / c
         for v, mk, c in zip((yt, yb, yt, yb), masks, N, strict=True)]
    out[:] = 0.0
    for v, mk, c, mean, sign in zip((yt, yb, yt, yb), masks, N, m, (1.0, -1.0, -1.0, 1.0),
                                    strict=True):
        np.add(out, (v - mean) * (sign * n_total / c), out=out, where=mk)
    return CellFit(float((m[0] - m[1]) - (m[2] - m[3])), empty)


def cell_closed_form_rc_groups(Ys: list[np.ndarray], Ps: list[np.ndarray], cur: int,
                               base: int, n_total: int, method: str,
                               outs: list[np.ndarray]) -> CellFit:
    """:func:`cell_closed_form_rc` on the cell's units only, given by groups: ``Ys[0]``,
    ``Ps[0]`` (N_0, T) the outcomes and presence of the cohort's units, ``Ys[j]``,
    ``Ps[j]`` (j >= 1) those of the comparison groups (each unit in one group). The
    influence function of group ``j``'s units is written into ``outs[j]`` (N_j,); the
    estimate, the per-unit influence values and the guards are those of
    :func:`cell_closed_form_rc` (the four cell means are summed group by group), and
    nothing is written when a guard applies. The work is O(units of the cell), not
    O(n).
    """
    pt = [P[:, cur] for P in Ps]
    pb = [P[:, base] for P in Ps]
    yt = [Y[:, cur] for Y in Ys]
    yb = [Y[:, base] for Y in Ys]
    N = [int(np.count_nonzero(pt[0])), int(np.count_nonzero(pb[0])),
         sum(int(np.count_nonzero(m)) for m in pt[1:]),
         sum(int(np.count_nonzero(m)) for m in pb[1:])]
    empty = np.empty(0)
    reason = _rc_guard(N, method)
    if reason:
        return CellFit(np.nan, empty, reason)
    m_t1 = np.add.reduce(yt[0], where=pt[0]) / N[0]
    m_t0 = np.add.reduce(yb[0], where=pb[0]) / N[1]
    m_c1 = sum(np.add.reduce(v, where=m) for v, m in zip(yt[1:], pt[1:], strict=True)) / N[2]
    m_c0 = sum(np.add.reduce(v, where=m) for v, m in zip(yb[1:], pb[1:], strict=True)) / N[3]
    with np.errstate(invalid="ignore"):  # (absent observations are NaN, not selected)
        for j, out in enumerate(outs):
            (m1, c1, s1), (m0, c0, s0) = (((m_t1, N[0], 1.0), (m_t0, N[1], -1.0)) if j == 0
                                          else ((m_c1, N[2], -1.0), (m_c0, N[3], 1.0)))
            np.add(np.where(pt[j], (yt[j] - m1) * (s1 * n_total / c1), 0.0),
                   np.where(pb[j], (yb[j] - m0) * (s0 * n_total / c0), 0.0), out=out)
    return CellFit(float((m_t1 - m_t0) - (m_c1 - m_c0)), empty)


def _ols_rep(X: np.ndarray, y: np.ndarray, sel: np.ndarray, n1: int):
    """OLS of ``y`` on ``X`` over rows ``sel``: fitted values on every row and a function
    ``M -> r_i x_i' (X_s'X_s / n1)^{-1} M`` (the ``asy.lin.rep %*% M`` of DRDID)."""
    Xs = X[sel]
    xpx = Xs.T @ Xs / n1
    if _rcond_bad(xpx):
        return None
    beta = np.linalg.solve(xpx, Xs.T @ y[sel] / n1)
    fit = X @ beta
    r = np.where(sel, y - fit, 0.0)

    def rep(M: np.ndarray) -> np.ndarray:
        return r * (X @ np.linalg.solve(xpx, M))

    return fit, rep


def cell_estimate_rc(y: np.ndarray, post: np.ndarray, D: np.ndarray, X: np.ndarray,
                     n_total: int, method: str, ps: LogitFit | None = None) -> CellFit:
    """ATT(g, t) of one cell from repeated cross sections, as R DRDID (module docstring).

    Parameters
    ----------
    y, post, D, X : (n1,), (n1,), (n1,), (n1, k) observations of the cell, ``X[:, 0]``
        the intercept.
    n_total : number of units in the panel (influence-function scaling ``n / n1``).
    method : ``"dr"`` (``drdid_rc``, locally efficient, Sant'Anna & Zhao 2020 eq. 3.4),
        ``"ipw"`` (``std_ipw_did_rc``, trimming at 0.995) or ``"reg"`` (``reg_did_rc``).
    ps : a logit fit of ``D`` on ``X`` on exactly these rows; fitted if None.

    Returns
    -------
    CellFit with ``inf`` (n1,) per observation (sum it within unit).
    """
    n1 = len(D)
    Df = D.astype(float)
    pf = post.astype(float)
    nan_inf = np.full(n1, np.nan)
    d1, d0 = Df == 1, Df == 0
    p1, p0 = pf == 1, pf == 0
    if method in ("dr", "ipw"):
        if ps is None:
            ps = logit(X, Df)
        if not np.all(np.isfinite(ps.fitted)) or np.max(ps.fitted) >= OVERLAP_MAX:
            return CellFit(np.nan, nan_inf, "overlap condition violated (max propensity "
                           f"score >= {OVERLAP_MAX}) or the logit did not converge")
        p = np.minimum(ps.fitted, PS_CAP)
        W = p * (1.0 - p)
        xwx = (X.T * W) @ X
        if _rcond_bad(xwx):
            return CellFit(np.nan, nan_inf, "singular propensity-score Hessian")
        score = Df - p

        def ps_term(M: np.ndarray) -> np.ndarray:  # asy.lin.rep.ps %*% M
            return score * (X @ np.linalg.solve(xwx / n1, M))

        trim = np.where(d0, p < IPW_TRIM, True).astype(float)
        odds = p / (1.0 - p)
    if method in ("dr", "reg"):
        if _rcond_bad(X[d0].T @ X[d0]):
            return CellFit(np.nan, nan_inf, "covariate matrix of the comparison units is "
                           "singular or ill-conditioned")
        fits = {}
        for key, sel in (("c0", d0 & p0), ("c1", d0 & p1), ("t0", d1 & p0), ("t1", d1 & p1)):
            if key[0] == "t" and method == "reg":
                continue
            f = _ols_rep(X, y, sel, n1)
            if f is None:
                return CellFit(np.nan, nan_inf, f"singular regression design ({key} cell)")
            fits[key] = f
    mean = np.mean

    def lead(w: np.ndarray, v: np.ndarray) -> tuple[float, np.ndarray]:
        """Hajek mean ``a = mean(w v)/mean(w)`` and its leading influence term."""
        mw = mean(w)
        a = mean(w * v) / mw
        return a, w * (v - a) / mw

    if method == "dr":
        (mu_c0, rep_c0), (mu_c1, rep_c1) = fits["c0"], fits["c1"]
        (mu_t0, rep_t0), (mu_t1, rep_t1) = fits["t0"], fits["t1"]
        mu_c = np.where(p1, mu_c1, mu_c0)
        res = y - mu_c
        w_t0, w_t1 = trim * Df * (1 - pf), trim * Df * pf
        w_c0, w_c1 = trim * odds * (1 - Df) * (1 - pf), trim * odds * (1 - Df) * pf
        w_d = trim * Df
        if mean(w_c0) == 0 or mean(w_c1) == 0:
            return CellFit(np.nan, nan_inf, "all comparison observations trimmed "
                           f"(propensity score >= {IPW_TRIM})")
        a_t0, i_t0 = lead(w_t0, res)
        a_t1, i_t1 = lead(w_t1, res)
        a_c0, i_c0 = lead(w_c0, res)
        a_c1, i_c1 = lead(w_c1, res)
        gap1, gap0 = mu_t1 - mu_c1, mu_t0 - mu_c0
        a_d1, i_d1 = lead(w_d, gap1)
        a_dt1, i_dt1 = lead(w_t1, gap1)
        a_d0, i_d0 = lead(w_d, gap0)
        a_dt0, i_dt0 = lead(w_t0, gap0)
        att = (a_t1 - a_t0) - (a_c1 - a_c0) + (a_d1 - a_dt1) - (a_d0 - a_dt0)
        # estimation effects (M vectors of DRDID, k-vectors)
        M1_1 = -X.T @ (w_t1 * pf) / n1 / mean(w_t1)
        M1_0 = -X.T @ (w_t0 * (1 - pf)) / n1 / mean(w_t0)
        M2_0 = X.T @ (w_c0 * (res - a_c0)) / n1 / mean(w_c0)
        M2_1 = X.T @ (w_c1 * (res - a_c1)) / n1 / mean(w_c1)
        M3_1 = -X.T @ (w_c1 * pf) / n1 / mean(w_c1)
        M3_0 = -X.T @ (w_c0 * (1 - pf)) / n1 / mean(w_c0)
        mom1 = X.T @ (w_d / mean(w_d) - w_t1 / mean(w_t1)) / n1
        mom0 = X.T @ (w_d / mean(w_d) - w_t0 / mean(w_t0)) / n1
        inf_treat = i_t1 - i_t0 + rep_c1(M1_1) + rep_c0(M1_0)
        inf_cont = (i_c1 - i_c0 + ps_term(M2_1 - M2_0) + rep_c1(M3_1) + rep_c0(M3_0))
        inf_eff = (i_d1 - i_dt1) - (i_d0 - i_dt0)
        inf_or = (rep_t1(mom1) - rep_c1(mom1)) - (rep_t0(mom0) - rep_c0(mom0))
        inf = inf_treat - inf_cont + inf_eff + inf_or
    elif method == "ipw":
        w_t0, w_t1 = trim * Df * (1 - pf), trim * Df * pf
        w_c0, w_c1 = trim * odds * (1 - Df) * (1 - pf), trim * odds * (1 - Df) * pf
        if mean(w_c0) == 0 or mean(w_c1) == 0:
            return CellFit(np.nan, nan_inf, "all comparison observations trimmed "
                           f"(propensity score >= {IPW_TRIM})")
        a_t0, i_t0 = lead(w_t0, y)
        a_t1, i_t1 = lead(w_t1, y)
        a_c0, i_c0 = lead(w_c0, y)
        a_c1, i_c1 = lead(w_c1, y)
        att = (a_t1 - a_t0) - (a_c1 - a_c0)
        M2_0 = X.T @ (w_c0 * (y - a_c0)) / n1 / mean(w_c0)
        M2_1 = X.T @ (w_c1 * (y - a_c1)) / n1 / mean(w_c1)
        inf = (i_t1 - i_t0) - (i_c1 - i_c0 + ps_term(M2_1 - M2_0))
    else:  # reg
        (mu_c0, rep_c0), (mu_c1, rep_c1) = fits["c0"], fits["c1"]
        w_t0, w_t1 = Df * (1 - pf), Df * pf
        a_t0, i_t0 = lead(w_t0, y)
        a_t1, i_t1 = lead(w_t1, y)
        a_c, i_c = lead(Df, mu_c1 - mu_c0)
        att = (a_t1 - a_t0) - a_c
        M1 = X.T @ Df / n1
        inf = (i_t1 - i_t0) - (i_c + (rep_c1(M1) - rep_c0(M1)) / mean(Df))
    if not np.isfinite(att):
        return CellFit(np.nan, nan_inf, "the 2x2 estimate is not finite")
    return CellFit(float(att), inf * (n_total / n1))


def weights_influence(unit_gidx: np.ndarray, n_groups: int, keep_gidx: np.ndarray,
                      keep_pg: np.ndarray, keep_att: np.ndarray) -> np.ndarray:
    """Estimated-weights term of an aggregated influence function (R did ``wif``).

    For weights ``pg_k / sum(pg)`` with ``pg_k = P(G = g_k)`` estimated by sample shares,
    returns ``wif @ att`` (n,) where ``wif = if1 - if2`` of Callaway & Sant'Anna (2021,
    Appendix), computed per unit from per-cohort sums instead of the (n, m) matrix.

    Parameters
    ----------
    unit_gidx : (n,) index of each unit's cohort in ``range(n_groups)``, -1 if none.
    keep_gidx, keep_pg, keep_att : (m,) cohort index, weight ``pg`` and estimate of the
        ATT(g, t) entering the aggregate.
    """
    return weights_influence_by_cohort(n_groups, keep_gidx, keep_pg, keep_att)[unit_gidx]


def weights_influence_by_cohort(n_groups: int, keep_gidx: np.ndarray, keep_pg: np.ndarray,
                                keep_att: np.ndarray) -> np.ndarray:
    """The values of :func:`weights_influence` per cohort, ``(n_groups + 1,)``: the term
    depends on a unit only through its cohort, so it is ``values[unit_gidx]`` (the last
    entry, index -1, is for units in no kept cohort)."""
    s = keep_pg.sum()
    pa = float(keep_pg @ keep_att)
    a = np.append(np.bincount(keep_gidx, weights=keep_att, minlength=n_groups), 0.0)
    c = np.append(np.bincount(keep_gidx, minlength=n_groups).astype(float), 0.0)
    return (a - pa) / s - (c - s) * (pa / s**2)


def quantile_type1(x: np.ndarray, q: float, axis: int = 0) -> np.ndarray:
    """R ``quantile(type = 1)``: the inverse of the empirical distribution function."""
    return np.quantile(x, q, axis=axis, method="inverted_cdf")


class _CompiledSplit:
    """The weights of a chunk of draws written by ``_cs_boot.c`` straight into each
    block's rows of one buffer: block ``j`` holds ``b`` rows of ``len(rows[j])`` weights
    from ``b * cum[j]`` on. With NumPy's PCG64 the kernel draws the uniforms itself from
    the generator's state (and puts the advanced state back); otherwise NumPy draws them
    into a small buffer of whole rows that the kernel then splits."""

    def __init__(self, kernel: Any, blocked: BlockedInfluence, step: int,
                 rng: np.random.Generator, *, with_sums: bool) -> None:
        n = blocked.n
        self.n = n
        self.blk = np.full(n, -1, dtype=np.int32)  # -1: a unit in no block
        self.loc = np.empty(n, dtype=np.int32)
        self.nj = np.array([len(r) for r in blocked.rows], dtype=np.int64)
        self.cum = np.concatenate([[0], np.cumsum(self.nj)[:-1]]).astype(np.int64)
        for j, r in enumerate(blocked.rows):
            self.blk[r] = j
            self.loc[r] = np.arange(len(r), dtype=np.int32)
        self.buf = np.empty(step * int(self.nj.sum()))
        # the low weights counted per block and draw: the weights' sums
        self.lows = np.empty((step, len(self.nj)), dtype=np.int64) if with_sums else None
        self.words = _pcg64_words(rng) if kernel.pcg is not None else None
        if self.words is None:
            self.fn = kernel.split
            self.u = np.empty((max(1, min(step, _SPLIT_ELEMS // n)), n))
            src = self.u
        else:
            self.fn = kernel.pcg
            src = self.words
        # the arrays' addresses, fixed: (uniforms or state, blk, loc), (cum, nj), buf, lows
        self._ptrs = (src.ctypes.data, self.blk.ctypes.data, self.loc.ctypes.data,
                      self.cum.ctypes.data, self.nj.ctypes.data, self.buf.ctypes.data,
                      None if self.lows is None else self.lows.ctypes.data)

    def fill(self, b: int, rng: np.random.Generator) -> None:
        """The next ``b`` draws' weights (and their low counts) into the buffer."""
        p = self._ptrs
        rows = b if self.words is not None else len(self.u)
        for r0 in range(0, b, rows):
            s = min(rows, b - r0)
            if self.words is None:
                rng.random(out=self.u[:s])
            if self.fn(s, self.n, p[0], p[1], p[2], len(self.nj), p[3], p[4], b, r0, p[5],
                       MAMMEN_P_LOW, MAMMEN_LOW, MAMMEN_HIGH, p[6]):
                raise MemoryError("callaway_santanna bootstrap: no memory for the blocks' "
                                  "offsets")
        if self.words is not None:
            _set_pcg64_state(rng, self.words)

    def part(self, b: int, j: int) -> np.ndarray:
        """Block ``j``'s (b, len(rows[j])) weights."""
        a = b * int(self.cum[j])
        return self.buf[a:a + b * int(self.nj[j])].reshape(b, int(self.nj[j]))

    def sums(self, b: int, out: np.ndarray) -> None:
        """(b, blocks) sums of each block's weights: high for each unit, less (high -
        low) for each low one (exact counts; equal to a sum of the doubles up to
        rounding)."""
        np.multiply(self.lows[:b], MAMMEN_LOW - MAMMEN_HIGH, out=out)
        out += MAMMEN_HIGH * self.nj


def mammen_bootstrap(psi: np.ndarray | BlockedInfluence, n_draws: int,
                     rng: np.random.Generator, chunk_elems: int = 4_000_000,
                     extra: Any = None, block_cat: np.ndarray | None = None,
                     n_cat: int = 0) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Multiplier bootstrap draws ``sqrt(n) * mean_i(psi_i * v_i)`` with Mammen weights.

    As R ``BMisc::multiplier_bootstrap`` (used by did's ``mboot``): ``v`` takes
    ``(1 - sqrt 5)/2`` with probability ``(1 + sqrt 5)/(2 sqrt 5)`` and ``(1 + sqrt 5)/2``
    otherwise (mean 0, variance 1). ``psi`` is (n, k); returns (n_draws, k). Draws are
    generated in chunks so memory stays O(n * chunk) rather than O(n * n_draws). A
    :class:`BlockedInfluence` is multiplied block by block, its NaNs read as 0 (as
    ``np.nan_to_num``). ``extra``: a scipy sparse (n, m) matrix multiplied by the same
    weights; then ``(draws, v @ extra / sqrt(n))`` is returned (the draws of any
    ``psi @ a + extra @ c`` are ``draws @ a + that @ c``, up to rounding). ``block_cat``
    (a blocked ``psi`` whose blocks' rows cover every unit once): instead of ``extra``,
    the weights summed over the rows of the blocks of each category ``block_cat[i]``
    (``n_cat`` of them), taken from the products' own gathers.

    A blocked ``psi`` without ``extra`` is multiplied by the compiled split of
    ``_cs_boot.c`` when it was built (the weights written straight into each block's
    rows, the uniforms drawn there from a PCG64 generator's state: the same weights, the
    generator left as ``rng.random`` leaves it) and through :meth:`BlockedInfluence.low_rank`
    factors of its blocks: the same draws up to the order of the sums.
    """
    n, k = psi.shape
    sums = None
    kernel = (_split_kernel() if isinstance(psi, BlockedInfluence) and extra is None
              and 0 < n < 2**31 else None)
    # draws per chunk; with the compiled split at least SPLIT_MIN_DRAWS (on ~1e6 units
    # a chunk of 4 draws would read every block once per 4 draws)
    step = max(1, min(n_draws, max(chunk_elems // max(n, 1),
                                   0 if kernel is None else SPLIT_MIN_DRAWS)))
    if isinstance(psi, BlockedInfluence):
        # blocks with a NaN or an infinity made finite once (np.nan_to_num), not per chunk
        blocked = psi.nan_to_num()
        factors = blocked.low_rank() if n_draws >= LOW_RANK_MIN_DRAWS else None
        if block_cat is not None:
            sums = np.empty((step, len(blocked.rows)))

        def mul(v: np.ndarray) -> np.ndarray:
            r = blocked.left_matmul(v, block_sums=None if sums is None else sums[:len(v)],
                                    factors=factors)
            r[:, blocked.nan_cols] = 0.0
            return r
    else:
        def mul(v: np.ndarray) -> np.ndarray:
            return v @ psi
    out = np.empty((n_draws, k))
    n_ext = n_cat if block_cat is not None else (0 if extra is None else extra.shape[1])
    ext = None if extra is None and block_cat is None else np.empty((n_draws, n_ext))
    extra_t = None if extra is None else extra.T.tocsr()
    split = None if kernel is None else _CompiledSplit(kernel, blocked, step, rng,
                                                       with_sums=sums is not None)
    if split is None:
        # one set of chunk buffers, reused: the uniforms of a chunk are written in place
        # (the same stream as ``rng.random((b, n))``, row after row) and the weights over
        # them, bit for bit ``np.where(low, MAMMEN_LOW, MAMMEN_HIGH)`` without its masked
        # select: HIGH's bits, flipped to LOW's where low (XOR of the two bit patterns
        # times 0 / 1)
        u = np.empty((step, n))
        low = np.empty((step, n), dtype=bool)
        bits = u.view(np.uint64)
    with progress(n_draws, "callaway_santanna multiplier bootstrap") as bar:
        for start in range(0, n_draws, step):
            b = min(step, n_draws - start)
            if split is not None:
                split.fill(b, rng)
                r = blocked.parts_matmul(b, lambda j, b=b: split.part(b, j), factors=factors)
                if sums is not None:
                    split.sums(b, sums[:b])
                r[:, blocked.nan_cols] = 0.0
                out[start:start + b] = r / np.sqrt(n)
            else:
                ub, lb, vb = u[:b], low[:b], bits[:b]
                rng.random(out=ub)
                np.less(ub, MAMMEN_P_LOW, out=lb)
                np.multiply(lb.view(np.uint8), _MAMMEN_FLIP, out=vb)
                np.bitwise_xor(vb, _MAMMEN_HIGH_BITS, out=vb)
                out[start:start + b] = mul(ub) / np.sqrt(n)
            if sums is not None:
                e = ext[start:start + b]
                e[:] = 0.0
                for i, c in enumerate(block_cat):
                    e[:, c] += sums[:b, i]
                e /= np.sqrt(n)
            elif extra_t is not None:
                ext[start:start + b] = (extra_t @ ub.T).T / np.sqrt(n)
            bar.update(b)
    return out if ext is None else (out, ext)


#: :meth:`BlockedInfluence.low_rank`: blocks with fewer columns are multiplied as they are
LOW_RANK_MIN_COLS = 16
#: largest entry of ``V - Q B`` accepted, relative to the largest ``|V|``
LOW_RANK_TOL = 1e-13
#: entries of :func:`_low_rank_factor`'s check temporary (4 MB)
_CHECK_ELEMS = 1 << 19
#: fewest bootstrap draws for which :func:`mammen_bootstrap` looks for low-rank blocks
LOW_RANK_MIN_DRAWS = 50


def _low_rank_factor(V: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray] | None:
    """``(Q, B)``, ``V ~ Q B`` (see :meth:`BlockedInfluence.low_rank`), or None.

    Columns are chosen greedily as by a pivoted Cholesky of ``V' V`` (each time the
    column with the largest part outside the span of those chosen; stop when every such
    part is below 1e-6 of the largest column's norm); ``Q`` is the orthonormal basis of
    the chosen columns (Householder QR of ``V[:, S]``, not of the Gram matrix) and ``B =
    Q' V``. The tolerance is then checked on ``V - Q B`` itself, row block by row block,
    so that the Gram matrix's squared condition only decides which columns are tried."""
    n, k = V.shape
    G = V.T @ V
    d = np.diag(G).copy()
    top = float(d.max()) if k else 0.0
    if not top > 0.0:
        return None
    r_max = k // 2
    L = np.zeros((k, r_max + 1))
    chosen: list[int] = []
    live = np.ones(k, dtype=bool)
    for m in range(r_max + 1):
        p = int(np.argmax(np.where(live, d, -np.inf)))
        if not d[p] > 1e-12 * top:
            break
        if m == r_max:
            return None
        col = (G[:, p] - L[:, :m] @ L[p, :m]) / np.sqrt(d[p])
        L[:, m] = col
        d -= col**2
        live[p] = False
        chosen.append(p)
    Q = np.linalg.qr(V[:, np.sort(chosen)])[0]
    B = Q.T @ V
    bound = tol * max(float(V.max()), -float(V.min()))  # (no |V| temporary)
    rows = max(64, _CHECK_ELEMS // k)  # the check's temporary: about _CHECK_ELEMS entries
    for a in range(0, n, rows):
        e = Q[a:a + rows] @ B
        np.subtract(V[a:a + rows], e, out=e)
        if not np.abs(e, out=e).max() <= bound:
            return None
    return Q, B


#: :meth:`BlockedInfluence.gram`: a block of at most this many rows (and more columns) is
#: stacked as it is into the factor whose Gram is taken once
GRAM_STACK_ROWS = 32
#: :meth:`BlockedInfluence.gram`: a factor of ``r`` rows for ``c`` of the ``K`` columns is
#: stacked while ``r K^2 <= GRAM_STACK_RATIO c^2`` (else its ``c x c`` product scattered)
GRAM_STACK_RATIO = 200


#: :meth:`BlockedInfluence.r_factor`: entries of each slice of a block's rows (256 KB)
R_FACTOR_ELEMS = 1 << 15


#: :func:`_affine_factor`: largest relative difference of its columns' sums of squares
#: from the block's accepted
AFFINE_DIAG_RTOL = 1e-12


def _affine_factor(V: np.ndarray, R: np.ndarray, M: np.ndarray) -> np.ndarray | None:
    """A factor ``F`` ((periods + 1) x cols) with ``F' F = V' V`` for a block ``V = Yc M
    + 1 e'`` (``e`` = ``V``'s column means, ``Yc`` the block's units' outcomes centred by
    row and by column, so ``1' Yc = 0``; ``R`` (periods x periods) a factor of ``Yc' Yc
    = R' R``): ``V' V = M' (Yc' Yc) M + rows e e'``, so ``F`` stacks ``R M`` over
    ``sqrt(rows) e'``; for blocks with more columns than periods. Checked: ``F``'s column
    sums of squares must equal ``V``'s to :data:`AFFINE_DIAG_RTOL` (the double centring
    keeps the differences of periods from cancelling; a block it does not fit falls
    back), else None."""
    n, k = V.shape
    if k <= M.shape[0] or not n:
        return None
    f = np.empty((R.shape[0] + 1, k))
    np.matmul(R, M, out=f[:-1])
    f[-1] = math.sqrt(n) * V.mean(axis=0)
    d = np.einsum("ij,ij->j", V, V)
    fd = np.einsum("ij,ij->j", f, f)
    if not np.all(np.abs(fd - d) <= AFFINE_DIAG_RTOL * d + 1e-15 * d.max()):
        return None
    return f


@dataclass(frozen=True, eq=False)
class BlockedInfluence:
    """An (n, K) influence function stored in its nonzero blocks.

    Cell ``k`` of Callaway & Sant'Anna is nonzero only on the units of its cohort and of
    its comparison group, so the units are split into row groups (the cohorts, and the
    never-treated) and group ``j`` stores ``values[j]`` (``len(rows[j])`` x
    ``len(cols[j])``, Fortran order): its units ``rows[j]`` (sorted unit indices, the
    groups disjoint) in the cells ``cols[j]`` (sorted) where it is the cohort or the
    comparison group. Every other entry is 0, except the columns ``nan_cols`` (K,) bool
    (cells not computed), which are NaN for every unit. Memory is the number of nonzeros,
    not ``n * K``; :meth:`dense` is the (n, K) matrix.
    """

    n: int
    K: int
    rows: tuple[np.ndarray, ...]
    cols: tuple[np.ndarray, ...]
    values: tuple[np.ndarray, ...]
    nan_cols: np.ndarray
    #: per block None, or ``(R, M)`` with the block equal to ``Yc M + 1 e'`` (``e`` its
    #: column means, ``Yc`` (rows, periods) the block's units' outcomes centred by row and
    #: by column): ``R`` (periods, periods) a factor of ``Yc' Yc = R' R``, ``M`` (periods,
    #: cols) each cell's coefficients on the outcomes (a 2x2 cell
    #: without covariates is ``a (Y_t - Y_b) + c`` on each of its groups); used by
    #: :meth:`gram` (see :func:`_affine_factor`)
    affine: tuple | None = None

    @classmethod
    def from_dense(cls, inf: np.ndarray) -> BlockedInfluence:
        """One block holding a dense (n, K) matrix (NaNs kept in the values)."""
        n, K = inf.shape
        return cls(n, K, (np.arange(n),), (np.arange(K),), (np.asfortranarray(inf),),
                   np.zeros(K, dtype=bool))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.K)

    @property
    def nbytes(self) -> int:
        return int(sum(v.nbytes + r.nbytes for v, r in zip(self.values, self.rows,
                                                           strict=True)))

    def nan_mask(self) -> np.ndarray:
        """(K,) columns holding a NaN (``np.isnan(dense).any(axis=0)``)."""
        bad = self.nan_cols.copy()
        for c, v in zip(self.cols, self.values, strict=True):
            if len(c) and v.size:
                bad[c] |= np.isnan(v).any(axis=0)
        return bad

    def dense(self, cols: np.ndarray | None = None) -> np.ndarray:
        """The (n, K) matrix (or its columns ``cols``), Fortran order."""
        K = self.K
        sel = np.arange(K) if cols is None else np.asarray(cols, dtype=np.intp)
        where = np.full(K, -1, dtype=np.intp)
        where[sel] = np.arange(len(sel))
        out = np.zeros((self.n, len(sel)), order="F")
        for r, c, v in zip(self.rows, self.cols, self.values, strict=True):
            loc = where[c]
            for i in np.flatnonzero(loc >= 0):
                out[r, loc[i]] = v[:, i]
        out[:, self.nan_cols[sel]] = np.nan
        return out

    def gram(self) -> np.ndarray:
        """``dense().T @ dense()`` (K, K), summed over the blocks (``V_j' V_j``); the rows
        and columns of a column holding a NaN are NaN. A block with its affine form
        (:attr:`affine`) gives a factor of (periods + 1) rows (:func:`_affine_factor`),
        and a block of at most :data:`GRAM_STACK_ROWS` rows (fewer than its columns) is
        its own factor: the factors of blocks with enough of the K columns
        (:data:`GRAM_STACK_RATIO`) are placed in their columns, stacked and multiplied
        once (no per-block product of its cells, and no scattering of it into the (K, K)
        sum); the other blocks' ``V' V`` (or factor's ``F' F``) are added in their
        columns."""
        K = self.K
        v = np.zeros((K, K))
        affine = self.affine or (None,) * len(self.values)
        factors = []
        for c, V, af in zip(self.cols, self.values, affine, strict=True):
            if not len(c):
                continue
            f = None if af is None else _affine_factor(V, *af)
            if f is None and V.shape[0] <= GRAM_STACK_ROWS and len(c) > V.shape[0]:
                f = V  # (a block of few rows is its own factor: no scatter of V' V)
            # stacked, a factor costs its rows x K^2 multiply-adds (~0.025 ns each);
            # its own product scattered costs ~5 ns per entry of its (cols x cols)
            if f is not None and f.shape[0] * K * K <= GRAM_STACK_RATIO * len(c) ** 2:
                factors.append((c, f))
                continue
            g = V.T @ V if f is None else f.T @ f
            if c[-1] - c[0] + 1 == len(c):  # contiguous cells
                sl = slice(int(c[0]), int(c[-1]) + 1)
                v[sl, sl] += g
            else:
                v[np.ix_(c, c)] += g
        if factors:
            F = np.zeros((sum(f.shape[0] for _, f in factors), K))
            top = 0
            for c, f in factors:
                F[top:top + f.shape[0], c] = f
                top += f.shape[0]
            v += F.T @ F
        v[self.nan_cols, :] = np.nan
        v[:, self.nan_cols] = np.nan
        return v

    def r_factor(self, cols: np.ndarray) -> np.ndarray:
        """The triangular factor ``R`` of a QR decomposition of ``dense()[:, cols]``
        (``R' R`` = that matrix's ``X' X``; the same singular values and right singular
        vectors, up to rounding): a QR of each block's rows in slices of
        :data:`R_FACTOR_ELEMS` entries (which stay in cache), their ``R``s placed in the
        selected columns and stacked, then one QR of the stack (TSQR). Without the (n,
        len(cols)) dense copy, whose QR is bound by memory."""
        cols = np.asarray(cols, dtype=np.intp)
        k = len(cols)
        where = np.full(self.K, -1, dtype=np.intp)
        where[cols] = np.arange(k)
        pieces = []
        for c, V in zip(self.cols, self.values, strict=True):
            loc = where[c]
            sel = np.flatnonzero(loc >= 0)
            if not len(sel) or not V.shape[0]:
                continue
            sub = V if len(sel) == V.shape[1] else V[:, sel]
            rows = max(4 * len(sel), R_FACTOR_ELEMS // len(sel))
            for a in range(0, V.shape[0], rows):
                r = np.linalg.qr(sub[a:a + rows], mode="r")
                piece = np.zeros((r.shape[0], k))
                piece[:, loc[sel]] = r
                pieces.append(piece)
        if not pieces:
            return np.zeros((0, k))
        stack = np.vstack(pieces)
        return np.linalg.qr(stack, mode="r") if len(pieces) > 1 else stack

    def cluster_sums(self, codes: np.ndarray, G: int, *, nan_to_zero: bool = False
                     ) -> np.ndarray:
        """(G, K) sums of the influence function within clusters ``codes`` (n,);
        ``nan_to_zero``: as for ``np.nan_to_num(dense())``."""
        from scipy import sparse

        s = np.zeros((G, self.K))
        for r, c, V in zip(self.rows, self.cols, self.values, strict=True):
            if not len(c) or not len(r):
                continue
            if nan_to_zero:
                V = np.nan_to_num(V)
            agg = sparse.csr_matrix((np.ones(len(r)), (codes[r], np.arange(len(r)))),
                                    shape=(G, len(r)))
            s[:, c] += np.asarray(agg @ V)
        s[:, self.nan_cols] = 0.0 if nan_to_zero else np.nan
        return s

    def nan_to_num(self) -> BlockedInfluence:
        """The same blocks with ``np.nan_to_num`` applied to those holding a NaN or an
        infinity (copies of those only); ``nan_cols`` unchanged."""
        vals = tuple(np.nan_to_num(V) if V.size and not np.isfinite(V).all() else V
                     for V in self.values)
        return BlockedInfluence(self.n, self.K, self.rows, self.cols, vals, self.nan_cols,
                                self.affine)

    def left_matmul(self, w: np.ndarray, *, nan_to_zero: bool = False,
                    block_sums: np.ndarray | None = None,
                    factors: Sequence[tuple[np.ndarray, np.ndarray] | None] | None = None
                    ) -> np.ndarray:
        """``w @ dense()`` for ``w`` (b, n), (b, K), block by block (``w[:, rows_j] @
        V_j``); ``nan_to_zero`` as in :meth:`cluster_sums`. ``block_sums`` (b, blocks):
        filled with ``w[:, rows_j].sum(axis=1)``, block by block; ``factors`` as in
        :meth:`parts_matmul`."""
        return self.parts_matmul(
            w.shape[0], lambda j: w if len(self.rows[j]) == self.n else w[:, self.rows[j]],
            nan_to_zero=nan_to_zero, block_sums=block_sums, factors=factors)

    def parts_matmul(self, b: int, part: Callable[[int], np.ndarray], *,
                     nan_to_zero: bool = False,
                     block_sums: np.ndarray | None = None,
                     factors: Sequence[tuple[np.ndarray, np.ndarray] | None] | None = None
                     ) -> np.ndarray:
        """:meth:`left_matmul` of weights given per block: ``part(j)`` is the (b,
        ``len(rows[j])``) weights of block ``j``'s units (``w[:, rows[j]]``), asked for
        only when needed. ``factors``: per block None or ``(Q, B)`` of :meth:`low_rank`
        (finite blocks), the block's product taken as ``(w Q) B``."""
        out = np.zeros((b, self.K))
        for j, (r, c, V) in enumerate(zip(self.rows, self.cols, self.values, strict=True)):
            if block_sums is not None:
                block_sums[:, j] = 0.0
            if not len(r) or (not len(c) and block_sums is None):
                continue
            wr = part(j)
            if block_sums is not None:
                block_sums[:, j] = wr.sum(axis=1)
            if not len(c):
                continue
            f = None if factors is None else factors[j]
            if f is not None:
                out[:, c] += (wr @ f[0]) @ f[1]
                continue
            if nan_to_zero:
                V = np.nan_to_num(V)
            out[:, c] += wr @ V
        out[:, self.nan_cols] = 0.0 if nan_to_zero else np.nan
        return out

    def low_rank(self, *, min_cols: int = LOW_RANK_MIN_COLS,
                 tol: float = LOW_RANK_TOL) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """Per block, ``(Q, B)`` with ``Q`` (rows, r) orthonormal and ``B = Q' V`` (r,
        cols) when the block ``V`` has ``r <= cols / 2`` columns that span all of it:
        every entry of ``V - Q B`` within ``tol`` of the largest ``|V|``, checked on the
        whole block; else None (blocks with fewer than ``min_cols`` columns, or not
        finite, are not tried). A cell's influence function on the never-treated units
        is a combination of their outcomes in the periods and a constant (without
        covariates), so that block's rank is about the number of periods while its
        columns are the cells: the multiplier bootstrap then multiplies its weights by
        ``r`` columns instead of all cells."""
        return [(_low_rank_factor(V, tol) if V.ndim == 2 and V.shape[1] >= min_cols
                 and V.shape[0] >= 2 * V.shape[1] and np.isfinite(V).all() else None)
                for V in self.values]

    def add_columns(self, ks: np.ndarray, ws: np.ndarray, out: np.ndarray) -> None:
        """``out += sum_i ws[i] * dense()[:, ks[i]]`` (n,), in place, the columns added
        one after another in the given order (BLAS axpy on each block's rows)."""
        from scipy.linalg import blas

        ks = np.asarray(ks, dtype=np.intp)
        for r, c, V in zip(self.rows, self.cols, self.values, strict=True):
            if not len(c) or not len(r):
                continue
            where = np.full(self.K, -1, dtype=np.intp)
            where[c] = np.arange(len(c))
            loc = where[ks]
            sel = np.flatnonzero(loc >= 0)
            if not len(sel):
                continue
            whole = len(r) == self.n
            seg = out if whole else out[r]
            for i in sel:
                if blas.daxpy(V[:, loc[i]], seg, a=float(ws[i])) is not seg:
                    raise RuntimeError("internal: daxpy did not update in place")
            if not whole:
                out[r] = seg
        if self.nan_cols[ks].any():
            out[:] = np.nan

    def block_order(self) -> np.ndarray:
        """(n,) the units in block order: block 0's rows, block 1's, ..., then the units
        in no block (ascending). :meth:`add_columns_many` reads and writes ``out`` in
        this order."""
        seen = np.zeros(self.n, dtype=bool)
        for r in self.rows:
            seen[r] = True
        return np.concatenate([*self.rows, np.flatnonzero(~seen)]).astype(np.intp)

    def add_columns_many(self, jobs: Sequence[tuple[int, np.ndarray, np.ndarray]],
                         out: np.ndarray) -> None:
        """:meth:`add_columns` for several columns at once, on ``out`` (n, m) whose rows
        are the units in :meth:`block_order` (so each block's rows are one slice: no
        gather and scatter of its rows): for each job ``(col, ks, ws)``, ``out[:, col] +=
        sum_i ws[i] * dense()[order, ks[i]]``, in place. Per block, one product of its
        (jobs x cells) weights, a CSR matrix, by the block's transpose (scipy: for each
        job the block's columns added in turn, in C); no Python step per cell. A zero
        weight adds nothing (as BLAS axpy skips a zero multiple), and a job selecting a
        column of ``nan_cols`` is NaN."""
        from scipy import sparse

        if not jobs:
            return
        m = out.shape[1]
        col = np.concatenate([np.full(len(ks), c, dtype=np.intp) for c, ks, _ in jobs])
        ks = np.concatenate([np.asarray(k, dtype=np.intp) for _, k, _ in jobs])
        ws = np.concatenate([np.asarray(w, dtype=float) for _, _, w in jobs])
        nz = ws != 0
        col, ks, ws = col[nz], ks[nz], ws[nz]
        where = np.full(self.K, -1, dtype=np.intp)
        top = 0
        for r, c, V in zip(self.rows, self.cols, self.values, strict=True):
            start, top = top, top + len(r)
            if not len(c) or not len(r):
                continue
            where[c] = np.arange(len(c))
            loc = where[ks]
            where[c] = -1
            sel = loc >= 0
            if not sel.any():
                continue
            jc, lc, wc = col[sel], loc[sel], ws[sel]
            key = jc * len(c) + lc
            if len(key) > 1 and not (key[1:] > key[:-1]).all():  # (CSR order: by job,
                o = np.argsort(key, kind="stable")              # then cell)
                jc, lc, wc = jc[o], lc[o], wc[o]
            # the jobs touching the block (rows of its weights), ascending
            touched = jc[np.r_[True, jc[1:] != jc[:-1]]]
            indptr = np.searchsorted(jc, np.r_[touched, m])
            wt = sparse.csr_matrix((wc, lc, indptr), shape=(len(touched), len(c)))
            prod = (wt @ V.T).T  # (rows, touched): V.T is C-ordered (V in Fortran order)
            if len(touched) == m:
                out[start:top] += prod
            else:
                for i, jcol in enumerate(touched):
                    out[start:top, jcol] += prod[:, i]
        bad = [c for c, k, _ in jobs if self.nan_cols[np.asarray(k, dtype=np.intp)].any()]
        if bad:
            out[:, bad] = np.nan

    def freeze(self) -> BlockedInfluence:
        """Make every stored array read-only (results are immutable); returns self."""
        affine = [x for af in (self.affine or ()) if af is not None for x in af]
        for a in (*self.rows, *self.cols, *self.values, self.nan_cols, *affine):
            a.setflags(write=False)
        return self
