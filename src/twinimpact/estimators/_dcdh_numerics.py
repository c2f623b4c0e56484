"""Numerics of the de Chaisemartin & D'Haultfœuille (2024) event-study DID estimators.

de Chaisemartin, C. and D'Haultfœuille, X. (2024), "Difference-in-Differences Estimators of
Intertemporal Treatment Effects", *Review of Economics and Statistics* (and its web
appendix), as implemented by the R/Stata command ``did_multiplegt_dyn`` (version 2.x:
variance with cohort-demeaned influence functions and degrees-of-freedom corrections).

Notation (the paper's): group ``g``, period ``t``; ``D_{g,1}`` the status-quo treatment
(``d_sq``: the first observed treatment); ``F_g`` the first period where ``D_{g,t} !=
D_{g,1}``; ``S_g`` = 1 for switchers in (treatment ends above its status quo), 0 for
switchers out; ``T_g`` the last period at which some group with the same status quo (and
the same ``trends_nonparam`` cell) has not switched yet; ``L_g = T_g - F_g + 1``.

    DID_{+,l} = (1/N^1_l) sum_{g: S_g=1, F_g-1+l <= T_g} N_{g,F_g-1+l}
        [ (Y_{g,F_g-1+l} - Y_{g,F_g-1})
          - mean over not-yet-switched g' with D_{g',1}=D_{g,1} of (Y_{g',F_g-1+l} - Y_{g',F_g-1}) ]

``DID_{-,l}`` is the same for switchers out with the sign flipped, and ``DID_l`` is their
average weighted by the numbers of switchers. Placebos compare ``Y_{F_g-1-l} - Y_{F_g-1}``
for the same switchers and controls. Normalized effects divide by the average cumulated
treatment change ``delta_l``; the average total effect divides the switcher-weighted sum of
effects by the switcher-weighted sum of the treatment changes at each horizon.

Everything here works on a balanced ``G x T`` grid (rows = groups, columns = periods) of
float arrays where NaN is "missing". Variances are built from per-group influence functions
``U_g`` (the point estimate is ``sum_g U_g / G``); the variance uses ``U_g`` with each
cell's long difference demeaned within its cohort and scaled by ``sqrt(n/(n-1))``
(``n`` = groups or clusters in the cohort), and is ``sum_c (sum_{g in c} U_g)^2 / G^2``.
Every sum ignores missing terms, as the reference implementation does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

__all__ = ["DcdhFit", "Design", "fit_dcdh", "prepare_design"]


# --------------------------------------------------------------------------- helpers
def _codes(*cols: np.ndarray) -> np.ndarray:
    """Integer codes of the rows of the stacked columns (NaN is its own level)."""

    def one(c: np.ndarray) -> np.ndarray:
        a = np.asarray(c, dtype=float)
        return np.unique(np.where(np.isnan(a), np.inf, a), return_inverse=True)[1].reshape(
            a.shape)

    out = one(cols[0])
    for c in cols[1:]:
        k = one(c)
        out = np.unique(out * (int(k.max()) + 1) + k, return_inverse=True)[1].reshape(k.shape)
    return out


def _key_sum(key: np.ndarray, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Sum of ``values`` over rows in ``mask`` sharing ``key``, broadcast back to every row."""
    k = key.ravel()
    v = np.where(mask.ravel(), np.nan_to_num(values.ravel()), 0.0)
    tot = np.bincount(k, weights=v, minlength=k.max() + 1 if k.size else 0)
    return tot[k].reshape(key.shape)


def _key_count(key: np.ndarray, mask: np.ndarray, cluster: np.ndarray | None) -> np.ndarray:
    """Number of rows in ``mask`` (or distinct clusters among them) sharing ``key``."""
    k = key.ravel()
    m = mask.ravel()
    if cluster is None:
        cnt = np.bincount(k, weights=m.astype(float), minlength=k.max() + 1 if k.size else 0)
        return cnt[k].reshape(key.shape)
    c = np.unique(cluster.ravel(), return_inverse=True)[1].reshape(-1)
    pairs = np.unique(k[m].astype(np.int64) * (int(c.max()) + 1) + c[m])
    cnt = np.bincount(pairs // (int(c.max()) + 1), minlength=k.max() + 1 if k.size else 0)
    return cnt[k].astype(float).reshape(key.shape)


def _lag(a: np.ndarray, k: int) -> np.ndarray:
    """``a`` shifted ``k`` columns to the right (a lead when ``k < 0``; NaN where the
    shifted column does not exist)."""
    out = np.full_like(a, np.nan)
    n = a.shape[1]
    if 0 <= k < n:
        out[:, k:] = a[:, : n - k]
    elif -n < k < 0:
        out[:, :k] = a[:, -k:]
    return out


def _row_diff(a: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Difference with the group's previous observed row (``trends_lin``), NaN for the
    first; cells without a row are left as they are."""
    out = a.copy()
    for g in range(a.shape[0]):
        idx = np.flatnonzero(present[g])
        prev = np.full(idx.size, np.nan)
        prev[1:] = a[g, idx[:-1]]
        out[g, idx] = a[g, idx] - prev
    return out


def _true(x: np.ndarray) -> np.ndarray:
    """Boolean array that is False where ``x`` is NaN (SQL/Kleene 'when' semantics)."""
    return np.nan_to_num(np.asarray(x, dtype=float), nan=0.0) != 0


def _ge(x: np.ndarray, v: float) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return ~np.isnan(x) & (np.nan_to_num(x, nan=-np.inf) >= v)


# --------------------------------------------------------------------------- design
@dataclass(frozen=True)
class Design:
    """The sample after the reference's preparation, on a balanced grid.

    Arrays are ``(G, T)`` unless noted; NaN means missing.
    """

    y: np.ndarray            # outcome (after trends_lin differencing when asked)
    d: np.ndarray            # treatment
    n: np.ndarray            # cell weight N_{g,t}: 0 where y or d is missing
    t: np.ndarray            # (T,) period index of each column (1 = first period)
    cell: np.ndarray         # status-quo x trends_nonparam cell of each row (int codes)
    cluster: np.ndarray | None  # cluster codes per row, None = groups are the clusters
    d_sq: np.ndarray         # (G,) status quo defining the comparison cells (0: continuous)
    f_g: np.ndarray          # (G,) first switch (T_max + 1 for never switchers)
    t_g: np.ndarray          # last period with a not-yet-switched group in the cell (row)
    l_g: np.ndarray          # T_g - F_g + 1 (row)
    l_g_pl: np.ndarray       # min(L_g, F_g - 2) when F_g >= 3 (row)
    s_g: np.ndarray          # (G,) 1 switcher in, 0 switcher out, NaN never switcher
    d_fg: np.ndarray         # (G,) treatment at F_g
    n_groups: int            # G of the paper (groups kept by the sample restrictions)
    t_max: int
    group_labels: np.ndarray  # (G,) original group labels
    dropped: dict[str, int] = field(default_factory=dict)
    x: tuple[np.ndarray, ...] = ()   # controls (after trends_lin differencing)
    w: np.ndarray | None = None      # the user's weight per cell (NaN where no row)
    ever: np.ndarray | None = None   # 1 once the group's treatment changed, NaN: no row
    d_sq_orig: np.ndarray | None = None  # (G,) the status-quo treatment itself


def prepare_design(group: np.ndarray, time: np.ndarray, y: np.ndarray, d: np.ndarray,
                   weight: np.ndarray | None, cluster: np.ndarray | None,
                   trends: list[np.ndarray], *, trends_lin: bool = False,
                   controls: tuple[np.ndarray, ...] = (), continuous: int = 0) -> Design:
    """Sample restrictions and the balanced grid, as ``did_multiplegt_dyn`` builds them.

    Inputs are one row per (group, period) (rows with a missing group or period, cluster or
    control already removed by the caller). Returns the :class:`Design`; the counts of what
    was dropped (rows and groups) are in ``Design.dropped``.
    """
    dropped: dict[str, int] = {}
    # groups whose treatment or outcome is never observed (before periods are ranked)
    gu, ginv = np.unique(group, return_inverse=True)
    seen_d = np.bincount(ginv, weights=~np.isnan(d), minlength=len(gu)) > 0
    seen_y = np.bincount(ginv, weights=~np.isnan(y), minlength=len(gu)) > 0
    ok_rows = (seen_d & seen_y)[ginv]
    if not ok_rows.all():
        dropped["groups_treatment_or_outcome_all_missing"] = int((~(seen_d & seen_y)).sum())
        group, time, y, d = group[ok_rows], time[ok_rows], y[ok_rows], d[ok_rows]
        weight = None if weight is None else weight[ok_rows]
        cluster = None if cluster is None else cluster[ok_rows]
        trends = [x[ok_rows] for x in trends]
        controls = tuple(x[ok_rows] for x in controls)
    if len(group) == 0:
        raise _NoEffect("no group has both an observed treatment and an observed outcome")
    glab, gi = np.unique(group, return_inverse=True)
    tlab, ti = np.unique(time, return_inverse=True)
    n_g, n_t = len(glab), len(tlab)
    tv = np.arange(1, n_t + 1, dtype=float)          # dense period index
    full = np.full((n_g, n_t), np.nan)

    def grid(v: np.ndarray) -> np.ndarray:
        m = full.copy()
        m[gi, ti] = v
        return m

    P = np.zeros((n_g, n_t), dtype=bool)
    P[gi, ti] = True
    Y, D = grid(y), grid(d)
    W = grid(np.ones(len(gi)) if weight is None else np.nan_to_num(weight, nan=0.0))
    CL = None if cluster is None else grid(cluster)
    TR = [grid(x) for x in trends]
    XS = [grid(x) for x in controls]
    T = np.broadcast_to(tv, (n_g, n_t))

    dnn = P & ~np.isnan(D)
    big = n_t + 10.0
    min_d = np.where(dnn, T, big).min(axis=1)
    max_d = np.where(dnn, T, -big).max(axis=1)
    has = P.any(axis=1)
    d_sq = np.full(n_g, np.nan)
    ok = has & (min_d < big)
    d_sq[ok] = D[np.flatnonzero(ok), (min_d[ok] - 1).astype(int)]

    # Design restriction 2: drop periods after a group has been both above and below D_{g,1}
    diff = D - d_sq[:, None]
    inc = np.maximum.accumulate(dnn & (diff > 0), axis=1)
    dec = np.maximum.accumulate(dnn & (diff < 0), axis=1)
    both = P & inc & dec
    if both.any():
        dropped["rows_after_treatment_above_and_below_status_quo"] = int(both.sum())
        P &= ~both
    changed = P & ~np.isnan(D) & (np.abs(diff) > 0)
    ever = np.maximum.accumulate(changed, axis=1) & P
    f_g = np.where(changed.any(axis=1), np.where(changed, T, big).min(axis=1), 0.0)

    # groups in status-quo (x trends) cells where nobody's F_g differs: nothing to compare
    d_sq_orig = d_sq.copy()
    if continuous:
        # continuous status quo: one comparison cell; polynomials of D_{g,1} x period
        # become controls below, and the treatment becomes the switch indicator
        d_sq = np.zeros(n_g)
    cell0 = _codes(np.broadcast_to(d_sq[:, None], (n_g, n_t)), *TR)
    fg_rows = np.broadcast_to(f_g[:, None], (n_g, n_t))
    keep = np.zeros_like(P)
    for c in np.unique(cell0[P]):
        m = P & (cell0 == c)
        vals = fg_rows[m]
        sd = np.std(vals, ddof=1) if vals.size > 1 else np.nan
        if np.isfinite(sd) and round(float(sd), 3) > 0:
            keep |= m
    if (P & ~keep).any():
        dropped["rows_in_status_quo_cells_without_variation_in_first_switch"] = int(
            (P & ~keep).sum())
        P &= keep
    if not P.any():
        raise _NoEffect("no group's treatment differs from the others with the same "
                        "status quo (Design Restriction 1)")
    n_groups = int(P.any(axis=1).sum())

    # periods x status-quo cells where every group has already switched
    cellt = _codes(np.broadcast_to(d_sq[:, None], (n_g, n_t)), *TR, T)
    nc = P & ~ever
    has_ctrl = _key_sum(cellt, nc.astype(float), P) > 0
    if (P & ~has_ctrl).any():
        dropped["rows_in_periods_without_not_yet_switched_groups"] = int((P & ~has_ctrl).sum())
        P &= has_ctrl
    t_max = int(T[P].max())
    f_g = np.where(f_g == 0, t_max + 1.0, f_g)
    F = f_g[:, None]

    # unbalanced panels: missing treatments and the periods they make ambiguous
    before = P & (T < F) & ~np.isnan(D)
    last_obs = np.where(before.any(axis=1), np.where(before, T, -big).max(axis=1), np.nan)
    LO = last_obs[:, None]
    Y = np.where(T < min_d[:, None], np.nan, Y)
    switcher = F < t_max + 1
    fill = P & switcher & np.isnan(D) & (T < LO) & (T > min_d[:, None])
    D = np.where(fill, d_sq[:, None], D)
    amb = P & switcher & (T > LO) & (LO < F - 1)
    Y = np.where(amb, np.nan, Y)
    trunc_sw = (f_g < t_max + 1) & (last_obs < f_g - 1)
    f_g = np.where(trunc_sw, t_max + 1.0, f_g)
    F = f_g[:, None]
    at_f = P & (T == F) & ~np.isnan(D)
    d_f = np.where(at_f.any(axis=1), np.nansum(np.where(at_f, D, 0.0), axis=1)
                   / np.maximum(at_f.sum(axis=1), 1), np.nan)
    post = P & (F < t_max + 1) & np.isnan(D) & (T > F) & (LO == F - 1)
    D = np.where(post, d_f[:, None], D)
    never = f_g == t_max + 1
    fill_nc = P & never[:, None] & np.isnan(D) & (T > min_d[:, None]) & (T < max_d[:, None])
    D = np.where(fill_nc, d_sq[:, None], D)
    Y = np.where(P & never[:, None] & (T > max_d[:, None]), np.nan, Y)
    trunc = np.where(never, max_d + 1.0, np.where(trunc_sw, last_obs + 1.0, np.nan))

    if trends_lin:
        # Y_{g,t} - Y_{g,t-1} (row lag) and drop groups switching at period 2 and period 1
        keep_g = f_g != 2
        P &= keep_g[:, None]
        Y, *XS = (_row_diff(v, P) for v in (Y, *XS))
        P &= T != 1

    # balance: every kept group x every kept period
    rows = P.any(axis=1)
    cols = P.any(axis=0)
    sel = np.ix_(rows, cols)
    P, Y, D, W = P[sel], Y[sel], D[sel], W[sel]
    Y = np.where(P, Y, np.nan)
    D = np.where(P, D, np.nan)
    TR = [np.where(P, x[sel], np.nan) for x in TR]
    CL = None if CL is None else np.where(P, CL[sel], np.nan)
    XS = [np.where(P, x[sel], np.nan) for x in XS]
    EV = np.where(P, ever[sel].astype(float), np.nan)
    W = np.where(P, W, np.nan)
    tv = tv[cols]
    d_sq, f_g, trunc = d_sq[rows], f_g[rows], trunc[rows]
    d_sq_orig = d_sq_orig[rows]
    glab = glab[rows]
    n_g, n_t = P.shape
    T = np.broadcast_to(tv, (n_g, n_t))
    F = f_g[:, None]
    N = np.where(np.isnan(Y) | np.isnan(D), 0.0, np.nan_to_num(W))
    TC = np.where(P, trunc[:, None], np.nan)
    f_tr = np.where(np.isnan(TC), F, np.minimum(F, TC))
    cell = _codes(np.broadcast_to(d_sq[:, None], (n_g, n_t)), *TR)
    t_g = np.zeros((n_g, n_t))
    for c in np.unique(cell):
        m = cell == c
        t_g[m] = f_tr[m].max() - 1

    # switchers whose post-switch treatment averages to the status quo; direction S_g
    win = (T >= F) & (T <= t_g) & ~np.isnan(D)
    cnt = win.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        avg_post = np.where(win, D, 0.0).sum(axis=1) / cnt
    drop = (avg_post[:, None] == d_sq_orig[:, None]) & (F != t_g + 1)
    s_g = np.where(f_g == t_max + 1, np.nan, (avg_post > d_sq_orig).astype(float))
    if drop.any():
        # the reference removes these rows; here they become empty cells of the grid
        dropped["rows_of_switchers_back_at_status_quo_on_average"] = int((drop & P).sum())
        N = np.where(drop, 0.0, N)
        Y = np.where(drop, np.nan, Y)
        D = np.where(drop, np.nan, D)
        s_g = np.where(drop.all(axis=1), np.nan, s_g)
    d_cell = D
    if continuous:
        s_het = np.where(s_g == 0, -1.0, s_g)
        d_cell = np.where(np.isnan(s_het)[:, None], np.nan, (F <= T) * s_het[:, None])
        for tt in range(2, int(tv.max()) + 1):
            for pw in range(1, continuous + 1):
                XS.append(np.where(P, (T >= tt) * d_sq_orig[:, None] ** pw, np.nan))
    at_f = (T == F) & ~np.isnan(d_cell)
    d_fg = np.where(at_f.any(axis=1), np.where(at_f, d_cell, 0.0).sum(axis=1)
                    / np.maximum(at_f.sum(axis=1), 1), np.nan)
    d_fg = np.where(np.isnan(d_fg) & (f_g == t_max + 1), d_sq, d_fg)
    l_g = np.where(drop, np.nan, t_g - F + 1)
    l_g_pl = np.where(F >= 3, np.minimum(l_g, F - 2), np.nan)

    if CL is not None:
        cmin = np.nanmin(np.where(np.isnan(CL), np.inf, CL), axis=1)
        CL = np.where(np.isnan(CL), cmin[:, None], CL)
        if np.any(np.nanmax(CL, axis=1) != np.nanmin(CL, axis=1)):
            raise _NotNested("a group belongs to more than one cluster")
    return Design(y=Y, d=D, n=N, t=tv, cell=cell, cluster=CL, d_sq=d_sq, f_g=f_g, t_g=t_g,
                  l_g=l_g, l_g_pl=l_g_pl, s_g=s_g, d_fg=d_fg, n_groups=n_groups,
                  t_max=t_max, group_labels=glab, dropped=dropped,
                  x=tuple(XS), w=W, ever=EV, d_sq_orig=d_sq_orig)


class _NoEffect(Exception):
    """Design Restriction 1 fails: no effect can be estimated (message says why)."""


class _NotNested(Exception):
    """The groups are not nested in the clusters."""


# --------------------------------------------------------------------------- controls
@dataclass(frozen=True)
class ControlLevel:
    """Residualization of one status-quo level (web appendix, Section on covariates).

    ``theta``: (K,) within period x cell WLS coefficients of the first-differenced outcome on
    the first-differenced controls among not-yet-switched cells; ``inv_den``: (K, K) its
    scaled inverse design matrix; ``in_sum``: (G, K) each group's contribution to the
    estimation error of ``theta`` (its influence on the effects' variance)."""

    d_sq: float
    theta: np.ndarray
    inv_den: np.ndarray
    in_sum: np.ndarray


def control_setup(ds: Design) -> tuple[list[ControlLevel], list[str]]:
    """Per status-quo level: coefficients and influence pieces of the control adjustment."""
    notes: list[str] = []
    Y, N, T = ds.y, ds.n, np.broadcast_to(ds.t, ds.y.shape)
    F = ds.f_g[:, None]
    G = ds.n_groups
    K = len(ds.x)
    dy = Y - _lag(Y, 1)
    dx = [x - _lag(x, 1) for x in ds.x]
    fd_all = np.all([~np.isnan(a) for a in dx], axis=0)
    mask = (ds.ever == 0) & ~np.isnan(dy) & fd_all
    cellt = _codes(ds.cell, T)
    sw = _key_sum(cellt, N, mask)
    sqn = np.sqrt(N)
    resid = []
    for a in dx:
        with np.errstate(invalid="ignore", divide="ignore"):
            avg = _key_sum(cellt, N * a, mask) / sw
        resid.append(np.where(mask, np.nan_to_num(sqn * (a - avg)), 0.0))
    prod = [r * sqn for r in resid]
    dsq_rows = np.broadcast_to(ds.d_sq[:, None], ds.y.shape)
    rmax = float(ds.f_g.max())
    rsum = float(np.sum(np.where((T >= 2) & (T <= rmax - 1) & (T < F) & ~np.isnan(dy), N,
                                 0.0)))
    cl = ds.cluster
    out = []
    for lev in np.unique(ds.d_sq[~np.isnan(ds.d_sq)]):
        lrow = dsq_rows == lev
        if np.unique(ds.f_g[ds.d_sq == lev]).size <= 1:
            continue
        rows = mask & lrow
        yx = np.column_stack([(sqn * dy)[rows], *[r[rows] for r in resid],
                              np.ones(int(rows.sum()))])
        overall = yx.T @ yx
        Mx = overall[1:1 + K, 1:1 + K]
        theta = np.linalg.pinv(Mx) @ overall[1:1 + K, 0]
        if abs(np.linalg.det(Mx)) <= 1e-16:
            notes.append(f"controls are collinear (or do not vary) among the groups with "
                         f"status quo {lev:g}; some are not taken into account for them")
        inv_den = np.linalg.pinv(Mx) * rsum * G
        # fitted first differences: WLS of dY on dX and period dummies (not-yet-switched)
        reg = lrow & (F > T) & ~np.isnan(dy) & fd_all
        w = np.nan_to_num(ds.w[reg])
        tcodes = np.unique(T[reg], return_inverse=True)[1]
        Xd = np.column_stack([*[a[reg] for a in dx],
                              np.eye(int(tcodes.max()) + 1)[tcodes]])
        sw_ = np.sqrt(w)
        beta = np.linalg.lstsq(Xd * sw_[:, None], dy[reg] * sw_, rcond=None)[0]
        ey_int = np.full(ds.y.shape, np.nan)
        ey_int[reg] = Xd @ beta
        dummy = ~np.isnan(dy) & (F > T) & lrow
        if cl is None:
            e_den = np.where(lrow, np.broadcast_to(dummy.sum(axis=0), ds.y.shape), np.nan)
        else:
            # the reference counts distinct clusters per period with the non-selected rows
            # as one more value (polars n_unique counts the missing value)
            e_den = np.full(ds.y.shape, np.nan)
            for j in range(ds.y.shape[1]):
                col = dummy[:, j]
                n_u = np.unique(cl[col, j]).size + (1 if (~col).any() else 0)
                e_den[col, j] = n_u
        big = _ge(e_den, 2)
        ey = np.where(np.isnan(e_den), np.nan, ey_int * big)
        with np.errstate(invalid="ignore", divide="ignore"):
            adj = np.where(np.isnan(ey), np.nan,
                           np.where(_true(e_den > 1), np.sqrt(e_den / (e_den - 1)) - 1, 0.0))
        t_d = float(ds.f_g[ds.d_sq == lev].max()) - 1
        n_c = float(np.sum(np.where(lrow & (T >= 2) & (T <= t_d) & (T < F) & ~np.isnan(dy),
                                    N, 0.0)))
        in_sum = np.column_stack([
            np.nansum(pk * (1 + big * adj) * (dy - ey) * ((T >= 2) & (T <= F - 1)) / n_c,
                      axis=1) for pk in prod])
        out.append(ControlLevel(float(lev), theta, inv_den, in_sum))
    return out, notes


def _control_adjust(ds: Design, levels: list[ControlLevel], ell: int, placebo: bool,
                    diff: np.ndarray, dist: np.ndarray, ratio_ok: np.ndarray,
                    n_sw: float) -> tuple[np.ndarray, np.ndarray]:
    """Residualized long differences and the variance correction ``part2`` (G,)."""
    Y = ds.y
    T = np.broadcast_to(ds.t, Y.shape)
    G = ds.n_groups
    if placebo:
        dxl = [_lag(x, 2 * ell) - _lag(x, ell) for x in ds.x]
    else:
        dxl = [x - _lag(x, ell) for x in ds.x]
    dsq_rows = np.broadcast_to(ds.d_sq[:, None], Y.shape)
    window = (T >= ell + 1) & (T <= ds.t_g)
    part2 = np.zeros(Y.shape[0])
    out = diff.copy()
    for lev in levels:
        lrow = dsq_rows == lev.d_sq
        for k, a in enumerate(dxl):
            out = np.where(lrow, out - lev.theta[k] * a, out)
        keep = (ell <= ds.t_g - 2) & lrow & window
        m = [np.nansum(np.where(keep, (G / n_sw) * ratio_ok * ds.n * a, np.nan)) / G
             for a in dxl]
        grp = (ds.d_sq == lev.d_sq) & (ds.f_g >= 3)
        combined = np.zeros(Y.shape[0])
        for j in range(len(dxl)):
            br = (lev.in_sum * grp[:, None]) @ lev.inv_den[j] - lev.theta[j]
            combined += m[j] * br
        part2 += np.where(ds.d_sq == lev.d_sq, combined, 0.0) if placebo else combined
    return out, part2


# --------------------------------------------------------------------------- one side
@dataclass(frozen=True)
class SideHorizon:
    """One horizon (effect or placebo) for switchers in or out."""

    u: np.ndarray           # (G,) influence function of the point estimate (sum/G = DID)
    u_var: np.ndarray       # (G,) cohort-demeaned version used for the variance
    n_sw: float             # N^1_l or N^0_l: weighted number of switchers
    n_sw_dw: float          # unweighted number of switchers
    delta_norm: float       # mean cumulated treatment change (normalized denominator)
    delta_ate: float        # mean treatment change at this horizon (ATE denominator)
    count: np.ndarray       # (G, T) weights of the cells used (for the N column)
    change: np.ndarray | None = None  # (G, T) switchers' |D - D_{g,1}| at this horizon


def _keys(ds: Design) -> tuple[np.ndarray, np.ndarray]:
    """Cohort keys of every cell: (status quo x trends cell, period) for controls and
    (cell, first switch, treatment at the switch) for switchers."""
    shape = ds.y.shape
    return (_codes(ds.cell, np.broadcast_to(ds.t, shape)),
            _codes(ds.cell, np.broadcast_to(ds.f_g[:, None], shape),
                   np.broadcast_to(ds.d_fg[:, None], shape)))


def _controls(ds: Design, cellt: np.ndarray, ell: int, only_never_switchers: bool
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Long differences ``Y_t - Y_{t-l}``, where they exist, the not-yet-switched (or
    never-switcher) indicator and the weighted number of such controls per cell x period."""
    Y, N, T, F = ds.y, ds.n, np.broadcast_to(ds.t, ds.y.shape), ds.f_g[:, None]
    diff = Y - _lag(Y, ell)
    valid = ~np.isnan(diff)
    never = np.where(valid, (F > T).astype(float), np.nan)
    if only_never_switchers:
        never = np.where(valid & (F > T) & (F < ds.t_max + 1), 0.0, never)
    return diff, valid, never, _key_sum(cellt, never * N, valid)


def _side_horizon(ds: Design, ell: int, side: int, *, placebo: bool, n_effects: int,
                  only_never_switchers: bool, same_switchers: bool,
                  same_switchers_pl: int = 0,
                  controls: list[ControlLevel] | None = None,
                  keys: tuple[np.ndarray, np.ndarray] | None = None) -> SideHorizon:
    """Influence functions of one effect (or placebo) ``ell`` for switchers in (``side``
    1) or out (0). ``same_switchers``: only switchers observed (with controls) for all of
    ``n_effects`` horizons; ``same_switchers_pl`` > 0: placebos only for switchers observed
    for that many pre-periods (the reference uses it with ``trends_lin``)."""
    Y, N, T = ds.y, ds.n, np.broadcast_to(ds.t, ds.y.shape)
    G = ds.n_groups
    F = ds.f_g[:, None]
    S = ds.s_g[:, None]
    cellt, skey = keys if keys is not None else _keys(ds)
    diff, valid, never, n_ctrl = _controls(ds, cellt, ell, only_never_switchers)
    target = T == F - 1 + ell
    cond = target & _ge(ds.l_g, ell) & (S == side) & (n_ctrl > 0)
    if same_switchers:
        check = np.zeros(ds.y.shape[0])
        for j in range(1, n_effects + 1):
            _, vj, _, cj = _controls(ds, cellt, j, only_never_switchers)
            check += np.any((T == F - 1 + j) & (cj > 0) & vj, axis=1)
        still = ((ds.f_g[:, None] - 1 + n_effects) <= ds.t_g) & (check[:, None] == n_effects)
        cond &= still
    dist = np.where(valid, cond.astype(float), np.nan)
    if placebo:
        diff = _lag(Y, 2 * ell) - _lag(Y, ell)
        vpl = ~np.isnan(diff)
        never = np.where(np.isnan(never), np.nan, never * vpl)
        n_ctrl = _key_sum(cellt, never * N, ~np.isnan(never))
        dist = np.where(np.isnan(dist) | ~vpl, np.nan, dist * (vpl & (n_ctrl > 0)))
        valid = vpl
        if same_switchers_pl:
            check = np.zeros(ds.y.shape[0])
            for j in range(1, same_switchers_pl + 1):
                dj = Y - _lag(Y, -j)
                vj = ~np.isnan(dj)
                nj = np.where(vj, (F > T).astype(float), np.nan)
                if only_never_switchers:
                    nj = np.where(vj & (F > T) & (F < ds.t_max + 1), 0.0, nj)
                cj = _key_sum(cellt, nj * N, vj)
                check += np.any((T == F - 1 - j) & (cj > 0) & vj, axis=1)
            dist = dist * (check[:, None] == same_switchers_pl)
    n_t = np.nansum(dist * N, axis=0)                  # switchers per period
    n_sw = float(n_t.sum())
    n_sw_dw = float(np.nansum(dist))
    n_t_g = _key_sum(cellt, dist * N, ~np.isnan(dist))
    G_arr = ds.y.shape
    if n_sw == 0:
        z = np.zeros(G_arr[0])
        return SideHorizon(z, z, 0.0, n_sw_dw, np.nan, np.nan, np.zeros(G_arr))
    dummy = (ell <= ds.t_g - 1).astype(float)
    window = ((T >= ell + 1) & (T <= ds.t_g)).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(_true(n_ctrl), n_t_g / n_ctrl * never, 0.0)
        ratio_ok = np.where(_true(n_ctrl), dist - n_t_g / n_ctrl * never, np.nan)
    part2 = np.zeros(Y.shape[0])
    if controls:
        diff, part2 = _control_adjust(ds, controls, ell, placebo, diff, dist, ratio_ok, n_sw)
        valid = ~np.isnan(diff)
    w = dummy * (G / n_sw) * window * N * (dist - ratio)
    contrib = w * diff
    u = np.nansum(contrib, axis=1)
    cnt_mask = ((~np.isnan(contrib)) & (contrib != 0)) | (
        (contrib == 0) & (diff == 0) & (_true(dist) | (_true(n_t_g) & _true(never))))
    count = np.where(cnt_mask, N, 0.0)

    # variance: demean each long difference within its cohort, with dof corrections
    yn = diff * N
    dof_ns = (N != 0) & valid & (never == 1) & (n_t[None, :] > 0)
    dof_s = (N != 0) & (dist == 1)
    cl = ds.cluster
    cnt_ns = np.where(dof_ns, _key_sum(cellt, N, dof_ns), np.nan)
    tot_ns = np.where(dof_ns, _key_sum(cellt, yn, dof_ns), np.nan)
    mean_ns = tot_ns / cnt_ns
    n_ns = np.where(dof_ns, _key_count(cellt, dof_ns, cl), np.nan)
    cnt_s = np.where(dof_s, _key_sum(skey, N, dof_s), np.nan)
    tot_s = np.where(dof_s, _key_sum(skey, yn, dof_s), np.nan)
    mean_s = tot_s / cnt_s
    n_s = np.where(dof_s, _key_count(skey, dof_s, cl), np.nan)
    union = dof_s | dof_ns
    cnt_u = np.where(union, _key_sum(cellt, N, union), np.nan)
    tot_u = np.where(union, _key_sum(cellt, yn, union), np.nan)
    mean_u = tot_u / cnt_u
    n_u = np.where(union, _key_count(cellt, union, cl), np.nan)

    pre = T < F
    s9, ns9 = np.nan_to_num(n_s, nan=9999.0), np.nan_to_num(n_ns, nan=9999.0)
    e_hat = np.where(pre | target, 0.0, np.nan)
    e_hat = np.where(pre & (ns9 >= 2), mean_ns, e_hat)
    e_hat = np.where(np.isnan(mean_ns), np.nan, e_hat)
    e_hat = np.where(target & (s9 >= 2), mean_s, e_hat)
    cond_d = _ge(n_u, 2) & ((target & (s9 == 1)) | (pre & (ns9 == 1)))
    e_hat = np.where(cond_d, mean_u, e_hat)
    e_hat = np.where(np.isnan(mean_u), np.nan, e_hat)
    with np.errstate(invalid="ignore", divide="ignore"):
        dof = np.where(pre | target, 1.0, np.nan)
        dof = np.where(target & (s9 > 1), np.sqrt(n_s / (n_s - 1)), dof)
        dof = np.where(np.isnan(n_s), np.nan, dof)
        dof = np.where(pre & (ns9 > 1), np.sqrt(n_ns / (n_ns - 1)), dof)
        cond_dd = (np.nan_to_num(n_u, nan=9999.0) >= 2) & (
            (target & (n_s == 1)) | (pre & (n_ns == 1)))
        dof = np.where(cond_dd, np.sqrt(n_u / (n_u - 1)), dof)
        dof = np.where(np.isnan(n_u), np.nan, dof)
    u_var = np.nansum(w * dof * (diff - e_hat), axis=1) - part2

    # treatment changes of the switchers used at this horizon
    Dm = ds.d
    sgn = np.where(S == 1, 1.0, -1.0)
    sw_rows = dist == 1
    in_win = (T >= F) & (T <= F - 1 + ell) & (S == side)
    d1 = (ds.d_sq if ds.d_sq_orig is None else ds.d_sq_orig)[:, None]
    cum = np.nansum(np.where(in_win, Dm - d1, np.nan), axis=1)[:, None]
    delta_norm = float(np.nansum(np.where(sw_rows, N / n_sw * sgn * cum, np.nan)))
    cur = np.where(sw_rows, N / n_sw * sgn * (Dm - d1), np.nan)
    delta_ate = float(np.nansum(cur))
    if side == 0:  # switchers out: the control-minus-switcher difference
        u, u_var = -u, -u_var
    change = np.where(sw_rows & (N != 0), sgn * (Dm - d1), np.nan)
    return SideHorizon(u, u_var, n_sw, n_sw_dw, delta_norm, delta_ate, count, change)


# --------------------------------------------------------------------------- full fit
@dataclass(frozen=True)
class DcdhFit:
    """Point estimates, influence functions and tests (arrays documented per field)."""

    names: tuple[str, ...]          # Effect_1..Effect_L, Placebo_1..Placebo_K, ATE (last)
    rel_time: tuple[float, ...]     # 1..L, -1..-K, NaN for the ATE
    estimate: np.ndarray            # (k,)
    vcov: np.ndarray                # (k, k)
    n_switchers: np.ndarray         # (k,) weighted switchers used
    n_switchers_dw: np.ndarray      # (k,) unweighted
    n_obs: np.ndarray               # (k,) cells used (weighted)
    n_obs_dw: np.ndarray            # (k,) cells used (count)
    delta: np.ndarray               # (k,) normalizing denominators (NaN if not normalized)
    n_effects: int
    n_placebos: int
    n_clusters: int
    tests: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    avg_accumulation: float = np.nan  # periods over which a change's effect accumulates


def _wald(b: np.ndarray, V: np.ndarray, kind: str) -> dict:
    k = len(b)
    if k == 0 or not (np.all(np.isfinite(b)) and np.all(np.isfinite(V))):
        return {"statistic": np.nan, "df": k, "p_value": np.nan, "kind": kind,
                "n_coefficients": k}
    stat = float(b @ np.linalg.pinv(V) @ b)
    return {"statistic": stat, "df": k, "p_value": float(stats.chi2.sf(stat, k)),
            "kind": kind, "n_coefficients": k}


def _accumulate(hs: list[SideHorizon]) -> SideHorizon:
    """``trends_lin``: the effect at horizon l of a first-differenced outcome is the sum of
    the horizon-1..l estimators (same switchers); counts are the last horizon's. As the
    reference, no sum when a horizon has no switcher."""
    last = hs[-1]
    if min(int(h.n_sw) for h in hs) == 0:
        return last
    return SideHorizon(sum(h.u for h in hs), sum(h.u_var for h in hs), last.n_sw,
                       last.n_sw_dw, last.delta_norm, last.delta_ate, last.count)


def fit_dcdh(ds: Design, *, effects: int, placebo: int, normalized: bool,
             switchers: str | None, only_never_switchers: bool, same_switchers: bool,
             effects_equal: bool, trends_lin: bool = False) -> DcdhFit:
    """Effects, placebos, the average total effect, their vcov and the joint tests."""
    notes: list[str] = []
    S = ds.s_g[:, None]
    rows_in = np.broadcast_to(S == 1, ds.y.shape)
    rows_out = np.broadcast_to(S == 0, ds.y.shape)
    use_in = switchers in (None, "in")
    use_out = switchers in (None, "out")

    def mx(a: np.ndarray, m: np.ndarray) -> float:
        v = a[m & ~np.isnan(a)]
        return float(v.max()) if v.size else 0.0

    L_u = mx(ds.l_g, rows_in) if use_in else 0.0
    L_a = mx(ds.l_g, rows_out) if use_out else 0.0
    Lp_u = max(mx(ds.l_g_pl, rows_in), 0.0) - trends_lin if use_in else 0.0
    Lp_a = max(mx(ds.l_g_pl, rows_out), 0.0) - trends_lin if use_out else 0.0
    if (switchers == "in" and L_u <= 0) or (switchers == "out" and L_a <= 0) or (
            switchers is None and L_u <= 0 and L_a <= 0):
        raise _NoEffect("no switcher has a not-yet-switched group with the same status quo "
                        "to compare with at any horizon (Design Restriction 1)")
    n_eff = int(min(max(L_u, L_a), effects))
    n_pl = int(min(max(Lp_u, Lp_a), placebo, effects)) if placebo else 0
    if n_eff < effects:
        notes.append(f"only {n_eff} effect(s) can be estimated (requested {effects})")
    if placebo and n_pl < placebo:
        notes.append(f"only {n_pl} placebo(s) can be estimated (requested {placebo})")

    sides = [(1, use_in, int(min(L_u, n_eff)), int(min(Lp_u, n_pl))),
             (0, use_out, int(min(L_a, n_eff)), int(min(Lp_a, n_pl)))]
    G = ds.n_groups
    ng = ds.y.shape[0]
    res: dict[tuple[str, int, int], SideHorizon] = {}
    zero = SideHorizon(np.zeros(ng), np.zeros(ng), 0.0, 0.0, np.nan, np.nan,
                       np.zeros(ds.y.shape))
    onv = only_never_switchers
    keys = _keys(ds)
    ctl = None
    if ds.x:
        ctl, cnotes = control_setup(ds)
        notes.extend(cnotes)
    for side, used, le, lp in sides:
        for ell in range(1, n_eff + 1):
            if not (used and ell <= le):
                res["e", side, ell] = zero
            elif trends_lin:
                res["e", side, ell] = _accumulate([_side_horizon(
                    ds, k, side, placebo=False, n_effects=ell, only_never_switchers=onv,
                    same_switchers=True, controls=ctl, keys=keys) for k in range(1, ell + 1)])
            else:
                res["e", side, ell] = _side_horizon(
                    ds, ell, side, placebo=False, n_effects=n_eff, only_never_switchers=onv,
                    same_switchers=same_switchers, controls=ctl, keys=keys)
        for ell in range(1, n_pl + 1):
            if not (used and ell <= lp):
                res["p", side, ell] = zero
            elif trends_lin:
                res["p", side, ell] = _accumulate([_side_horizon(
                    ds, k, side, placebo=True, n_effects=ell, only_never_switchers=onv,
                    same_switchers=True, same_switchers_pl=ell, controls=ctl, keys=keys)
                    for k in range(1, ell + 1)])
            else:
                res["p", side, ell] = _side_horizon(
                    ds, ell, side, placebo=True, n_effects=n_eff, only_never_switchers=onv,
                    same_switchers=same_switchers, controls=ctl, keys=keys)

    if ds.cluster is None:
        cl_codes = np.arange(ng)
    else:
        cl_codes = np.unique(ds.cluster[:, 0], return_inverse=True)[1]
    n_cl = int(cl_codes.max() + 1)

    def clus(u: np.ndarray) -> np.ndarray:
        return np.bincount(cl_codes, weights=np.nan_to_num(u), minlength=n_cl)

    names, rels, est, cols = [], [], [], []
    nsw, nsw_dw, nobs, nobs_dw, deltas = [], [], [], [], []
    for kind, count in (("e", n_eff), ("p", n_pl)):
        for ell in range(1, count + 1):
            a, b = res[kind, 1, ell], res[kind, 0, ell]
            n1, n0 = a.n_sw, b.n_sw
            names.append(f"Effect_{ell}" if kind == "e" else f"Placebo_{ell}")
            rels.append(float(ell if kind == "e" else -ell))
            if n1 + n0 == 0:
                est.append(np.nan)
                cols.append(np.full(n_cl, np.nan))
                deltas.append(np.nan)
            else:
                u = (n1 * a.u + n0 * b.u) / (n1 + n0)
                uv = (n1 * a.u_var + n0 * b.u_var) / (n1 + n0)
                dl = 1.0
                if normalized:
                    dl = (n1 * np.nan_to_num(a.delta_norm) + n0 * np.nan_to_num(b.delta_norm)
                          ) / (n1 + n0)
                est.append(u.sum() / G / dl)
                cols.append(clus(uv) / dl)
                deltas.append(dl if normalized else np.nan)
            nsw.append(n1 + n0)
            nsw_dw.append(a.n_sw_dw + b.n_sw_dw)
            cg = np.maximum(a.count, b.count)
            nobs.append(float(cg.sum()))
            nobs_dw.append(float((cg > 0).sum()))
    # average total effect: sum_l N_l DID_l / sum_l N_l delta_l (in and out pooled)
    num_u = np.zeros(ng)
    num_v = np.zeros(ng)
    den = 0.0
    cnt_all = np.zeros(ds.y.shape)
    sw_tot = 0.0
    sw_tot_dw = 0.0
    for ell in range(1, n_eff + 1):
        for side in (1, 0):
            h = res["e", side, ell]
            if h.n_sw == 0:
                continue
            num_u += h.n_sw * h.u
            num_v += h.n_sw * h.u_var
            den += h.n_sw * h.delta_ate
        a, b = res["e", 1, ell], res["e", 0, ell]
        cnt_all = np.maximum(cnt_all, np.maximum(a.count, b.count))
        sw_tot += a.n_sw + b.n_sw
        sw_tot_dw += a.n_sw_dw + b.n_sw_dw
    names.append("ATE")
    rels.append(np.nan)
    if trends_lin:
        notes.append("the average total effect is not computed with trends_lin (as in the "
                     "reference)")
        den = 0.0
    if den != 0:
        est.append(num_u.sum() / den / G)
        cols.append(clus(num_v / den))
    else:
        est.append(np.nan)
        cols.append(np.full(n_cl, np.nan))
    nsw.append(sw_tot)
    nsw_dw.append(sw_tot_dw)
    nobs.append(float(cnt_all.sum()))
    nobs_dw.append(float((cnt_all > 0).sum()))
    deltas.append(np.nan)

    U = np.column_stack(cols)
    V = (U.T @ U) / G ** 2
    bad = ~np.isfinite(np.asarray(est))
    V[bad, :] = np.nan
    V[:, bad] = np.nan
    est_a = np.asarray(est, dtype=float)

    tests: dict = {}
    ie = np.arange(n_eff)
    ip = np.arange(n_eff, n_eff + n_pl)
    if n_eff > 1:
        tests["effects_joint"] = _wald(est_a[ie], V[np.ix_(ie, ie)], "Wald chi2")
    if n_pl > 1:
        tests["placebo_joint"] = _wald(est_a[ip], V[np.ix_(ip, ip)], "Wald chi2")
    if effects_equal and n_eff > 1:
        Dm = np.eye(n_eff)[:-1] - 1.0 / n_eff
        b = Dm @ est_a[ie]
        Vt = Dm @ V[np.ix_(ie, ie)] @ Dm.T
        t = _wald(b, (Vt + Vt.T) / 2, "Wald chi2")
        tests["effects_equal"] = t
    # average number of periods over which the effect of a treatment change accumulates
    # (printed by the reference under the average total effect): sum over switchers and
    # horizons l of |D_{g,F_g-1+l} - D_{g,1}| x (min(L, L_g) - (l - 1)), over the same sum
    # without the factor
    acc_num = acc_den = 0.0
    m_g = np.minimum(n_eff, ds.t_g - ds.f_g[:, None] + 1)
    if not trends_lin:
        for ell in range(1, n_eff + 1):
            for side in (1, 0):
                ch = res["e", side, ell].change
                if ch is None:
                    continue
                acc_num += float(np.nansum(ch * (m_g - (ell - 1))))
                acc_den += float(np.nansum(ch))
    avg_acc = acc_num / acc_den if acc_den else np.nan
    return DcdhFit(names=tuple(names), rel_time=tuple(rels), estimate=est_a, vcov=V,
                   n_switchers=np.asarray(nsw), n_switchers_dw=np.asarray(nsw_dw),
                   n_obs=np.asarray(nobs), n_obs_dw=np.asarray(nobs_dw),
                   delta=np.asarray(deltas), n_effects=n_eff, n_placebos=n_pl,
                   n_clusters=n_cl, tests=tests, notes=tuple(notes),
                   avg_accumulation=avg_acc)
