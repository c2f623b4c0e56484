"""Numerics of Wooldridge's extended TWFE (:mod:`twinimpact.estimators.etwfe`).

Pure functions on arrays: the saturated cohort x period design (with R ``etwfe``'s
covariate interactions) and the delta-method variance of averaged marginal effects
(R ``emfx``) on the link and on the response scale.

Notation (Wooldridge 2021, 2023): ``g`` cohort (first treated period), ``t`` period,
``tau_{gt}`` the coefficient of the cell indicator ``D_{gt} = 1[G_i = g, t]``, ``x_dm``
covariates demeaned within cohort, ``delta_{gt}`` the cell x covariate interactions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

__all__ = ["Design", "SweptDesign", "build_design", "cell_effect_rows", "delta_method_poisson",
           "design_block", "group_demean", "indicator_matrix"]


def group_demean(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``x`` (n, k) minus its mean within the groups ``codes`` (n,) (dense 0..G-1)."""
    x = np.asarray(x, dtype=float).reshape(len(codes), -1)
    g = int(codes.max()) + 1 if len(codes) else 0
    cnt = np.bincount(codes, minlength=g).astype(float)
    out = np.empty_like(x)
    for j in range(x.shape[1]):
        s = np.bincount(codes, weights=x[:, j], minlength=g)
        out[:, j] = x[:, j] - (s / cnt)[codes]
    return out


@dataclass(frozen=True)
class Design:
    """The ETWFE regressors.

    Attributes
    ----------
    names : column names, cells first (``n_cells`` of them), then cell x covariate
        interactions, then covariate main effects and their cohort / period interactions.
    onehot : (n,) int, the cell of each row (-1: no cell) -- the indicator block.
    dense : (n, k - n_cells) the other columns.
    cells : (n_cells, 2) float, (cohort, period) of each cell.
    inter : (n_cells, m) int, column index (in ``names``) of cell c x het. variable j
        (``m`` = covariates + xvar), -1 when absent.
    het : (n, m) the demeaned variables the cell effects vary with.
    """

    names: tuple[str, ...]
    onehot: np.ndarray
    dense: np.ndarray
    cells: np.ndarray
    inter: np.ndarray
    het: np.ndarray

    @property
    def n_cells(self) -> int:
        return len(self.cells)

    def full(self) -> np.ndarray:
        """The whole (n, k) design as a dense array (indicator block first)."""
        n = len(self.onehot)
        x = np.zeros((n, len(self.names)))
        rows = np.flatnonzero(self.onehot >= 0)
        x[rows, self.onehot[rows]] = 1.0
        x[:, self.n_cells:] = self.dense
        return x


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def build_design(g: np.ndarray, t: np.ndarray, in_cell: np.ndarray, *,
                 ctrls: np.ndarray | None, ctrl_names: Sequence[str],
                 ctrls_dm: np.ndarray | None, xvar_dm: np.ndarray | None,
                 xvar_names: Sequence[str] = (), ref_cohort_rows: np.ndarray,
                 tref: float) -> Design:
    """Regressors of R ``etwfe`` (``fe = "feo"``; fixed effects are added by the caller).

    ``in_cell`` (n,) bool marks the rows carrying a cell indicator ``.Dtreat``. Columns:
    cell indicators ``ATT(g,t)``; with covariates ``ctrls`` (raw) and ``ctrls_dm``
    (demeaned within cohort): ``ATT(g,t):c`` = indicator x ``c_dm``, ``c`` itself,
    ``c:cohort=g`` for every cohort but the reference one (rows ``ref_cohort_rows``) and
    ``c:time=t`` for every period but ``tref``; with ``xvar_dm`` (n, m) (a numeric xvar, or
    the dummies of a categorical one, demeaned within cohort x period): ``ATT(g,t):x`` and
    ``x:time=t`` (t != tref) for each of its columns ``xvar_names`` -- the formula of R etwfe 0.6
    (``.Dtreat:i(g, i.t) / (c_dm + x_dm) + c + i(g, c) + i(t, c) + i(t, x_dm)``).
    """
    n = len(t)
    keys = np.stack([np.where(in_cell, g, np.nan), np.where(in_cell, t, np.nan)], axis=1)
    sel = np.flatnonzero(in_cell)
    cells, inv = (np.unique(keys[sel], axis=0, return_inverse=True) if len(sel)
                  else (np.zeros((0, 2)), np.zeros(0, dtype=np.intp)))
    onehot = np.full(n, -1, dtype=np.intp)
    onehot[sel] = np.asarray(inv).reshape(-1)
    names = [f"ATT({_fmt(a)},{_fmt(b)})" for a, b in cells]
    het_names: list[str] = []
    het_cols: list[np.ndarray] = []
    if ctrls_dm is not None:
        for j, c in enumerate(ctrl_names):
            het_names.append(c)
            het_cols.append(ctrls_dm[:, j])
    if xvar_dm is not None:
        for j, xn in enumerate(xvar_names):
            het_names.append(str(xn))
            het_cols.append(xvar_dm[:, j])
    het = np.column_stack(het_cols) if het_cols else np.zeros((n, 0))
    dense: list[np.ndarray] = []
    inter = np.full((len(cells), len(het_names)), -1, dtype=np.intp)
    k0 = len(cells)
    for j, hn in enumerate(het_names):
        for c in range(len(cells)):
            col = np.zeros(n)
            rows = sel[onehot[sel] == c]
            col[rows] = het[rows, j]
            inter[c, j] = k0 + len(dense)
            dense.append(col)
            names.append(f"{names[c]}:{hn}")
    periods = np.unique(t)
    if ctrls is not None:
        cohorts = np.unique(g[~ref_cohort_rows & np.isfinite(g)])
        for j, c in enumerate(ctrl_names):
            dense.append(ctrls[:, j])
            names.append(c)
            for gg in cohorts:
                dense.append(np.where((g == gg) & ~ref_cohort_rows, ctrls[:, j], 0.0))
                names.append(f"{c}:cohort={_fmt(gg)}")
            for tt in periods[periods != tref]:
                dense.append(np.where(t == tt, ctrls[:, j], 0.0))
                names.append(f"{c}:time={_fmt(tt)}")
    if xvar_dm is not None:
        for j, xn in enumerate(xvar_names):
            for tt in periods[periods != tref]:
                dense.append(np.where(t == tt, xvar_dm[:, j], 0.0))
                names.append(f"{xn}:time={_fmt(tt)}")
    dmat = np.column_stack(dense) if dense else np.zeros((n, 0))
    return Design(names=tuple(names), onehot=onehot, dense=dmat, cells=cells, inter=inter,
                  het=het)


def cell_effect_rows(design: Design, rows: np.ndarray) -> sparse.csr_matrix:
    """``dx_i = x_i(D=1) - x_i(D=0)`` for the given rows: sparse (len(rows), k).

    The change of the regressors when row ``i``'s cell indicator is switched off: 1 in its
    cell column and ``het_ij`` in its cell x variable columns (zero elsewhere), so its
    link-scale effect is ``dx_i' b = tau_c + sum_j delta_cj het_ij``. Sparse: a row has
    ``1 + m`` entries (``m`` heterogeneity variables), whatever the number of cells.
    """
    k = len(design.names)
    m = len(rows)
    c = design.onehot[rows]
    cols = [c] + [design.inter[c, j] for j in range(design.inter.shape[1])]
    vals = [np.ones(m)] + [design.het[rows, j] for j in range(design.inter.shape[1])]
    r = np.tile(np.arange(m), len(cols))
    out = sparse.csr_matrix((np.concatenate(vals), (r, np.concatenate(cols))), shape=(m, k))
    out.sum_duplicates()
    return out


def design_block(design: Design, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Columns ``cols`` (indices into ``design.names``) of the full design on ``rows``,
    dense (len(rows), len(cols)) -- a slice of :meth:`Design.full` without forming it."""
    cols = np.asarray(cols, dtype=np.intp)
    out = np.zeros((len(rows), len(cols)))
    onehot = design.onehot[rows]
    cell = cols < design.n_cells
    if cell.any():
        pos = np.full(design.n_cells, -1, dtype=np.intp)
        pos[cols[cell]] = np.flatnonzero(cell)
        hit = np.flatnonzero(onehot >= 0)
        dest = pos[onehot[hit]]
        ok = dest >= 0
        out[hit[ok], dest[ok]] = 1.0
    if (~cell).any():
        out[:, ~cell] = design.dense[np.ix_(rows, cols[~cell] - design.n_cells)]
    return out


def indicator_matrix(codes: np.ndarray, n_groups: int) -> sparse.csr_matrix:
    """(n_groups, n) 0/1 matrix with a 1 at (codes[i], i) for every ``codes[i] >= 0``:
    left-multiplying sums rows by group (the layout of ``core.vcov.meat_cluster``)."""
    rows = np.flatnonzero(codes >= 0)
    return sparse.csr_matrix((np.ones(len(rows)), (codes[rows], rows)),
                             shape=(n_groups, len(codes)))


@dataclass(frozen=True)
class SweptDesign:
    """The ETWFE regressors with the fixed effects swept out (W-weighted), ``X~``.

    Held as an (n, k_kept) array ``x_tilde`` when it fits in memory; otherwise implicitly
    (``x_tilde`` None), through the two products the delta method needs, each exact in
    exact arithmetic because the W-weighted projection is symmetric in the W inner
    product (``X~'W v~ = X'W v~`` for any swept ``v~``, and ``X~ b = (Xb)~``):

    * :meth:`xtw` -- ``X~'W v~`` for swept columns ``v~`` (n, q): ``X'W v~`` with the
      sparse indicator block, no residualization;
    * :meth:`times` -- ``X~ b`` (b (k_kept, q)): one residualization of the q columns
      ``X b`` instead of k.
    """

    design: Design
    rows: np.ndarray
    kept: np.ndarray
    mu: np.ndarray
    sweep: Callable[[np.ndarray], np.ndarray]
    x_tilde: np.ndarray | None = None

    def _kept_cols(self) -> np.ndarray:
        return np.flatnonzero(self.kept)

    def xtw(self, v_t: np.ndarray) -> np.ndarray:
        if self.x_tilde is not None:
            return (self.x_tilde * self.mu[:, None]).T @ v_t
        wv = v_t * self.mu[:, None]
        d = self.design
        full = np.zeros((len(d.names), v_t.shape[1]))
        full[:d.n_cells] = indicator_matrix(d.onehot[self.rows], d.n_cells) @ wv
        if d.dense.shape[1]:
            full[d.n_cells:] = d.dense[self.rows].T @ wv
        return full[self.kept]

    def times(self, b: np.ndarray) -> np.ndarray:
        if self.x_tilde is not None:
            return self.x_tilde @ b
        d = self.design
        full = np.zeros((len(d.names), b.shape[1]))
        full[self.kept] = b
        onehot = d.onehot[self.rows]
        xb = np.where((onehot >= 0)[:, None], full[:d.n_cells][np.maximum(onehot, 0)], 0.0)
        if d.dense.shape[1]:
            xb += d.dense[self.rows] @ full[d.n_cells:]
        return self.sweep(xb)


def delta_method_poisson(c: np.ndarray, r: np.ndarray, *, mu: np.ndarray,
                         swept: SweptDesign, bread: np.ndarray,
                         sweep: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Per-observation influence weights of smooth functions of a Poisson FE fit.

    A quantity ``Q(theta)`` of the coefficients ``theta = (b, a)`` (slopes ``b`` on the
    kept regressors ``X``, fixed effects ``a`` on the dummies ``D``, ``Z = [X, D]``) whose
    gradient can be written ``dQ/dtheta = Z' c + [r; 0]`` (``c`` (n, q) a weight per
    observation, ``r`` (k, q) a slope-only part) has the delta-method variance
    ``grad' V grad`` with ``V = (Z'WZ)^- M (Z'WZ)^-`` the *full* sandwich (fixed effects
    included, ``W = diag(mu)``). Writing ``grad' (Z'WZ)^- Z' s = sum_i a_i s_i`` gives
    the weights

        ``a = P_Z (c / mu) + X~ (X~'WX~)^{-1} r``

    with ``P_Z`` the W-weighted projection on the columns of ``Z`` and ``X~`` the regressors
    with the fixed effects swept out (W-weighted). Block inversion of ``Z'WZ`` (the
    Schur complement of the fixed-effect block is ``X~'WX~``) gives the second term; the
    first is the fitted value of the W-weighted regression of ``c / mu`` on ``Z``.
    ``grad' V grad = sum over clusters (sum_i a_i u_i)^2`` (``u = y - mu``) times the
    small-sample factors. ``sweep`` maps an (n, q) array to its fixed-effect residual
    (W-weighted); ``swept`` gives ``X~'W v~`` and ``X~ b`` (:class:`SweptDesign`).
    Returns ``a`` (n, q).
    """
    v = c / mu[:, None]
    v_t = sweep(v)
    has_x = bool(swept.kept.any())
    rhs = swept.xtw(v_t) + r if has_x else None
    a = v - v_t
    if rhs is not None:
        a = a + swept.times(bread @ rhs)
    return a
