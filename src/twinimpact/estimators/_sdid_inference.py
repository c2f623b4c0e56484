"""Fitting a (possibly staggered) synthetic-DiD design and its variance estimators.

A *design* is an outcome matrix ``Y`` of shape ``(N, T)`` whose first ``N0`` rows are the
never-treated (control) units, plus one *group* per adoption date: ``(a, rows)`` with
``a`` the column index of the first treated period (``T0 = a`` pre-periods) and ``rows``
the treated units' row indices.  Each group is estimated as a simultaneous-adoption
block against all controls (Arkhangelsky et al. 2021, Algorithm 1) and the overall ATT
is the average of the group estimates weighted by their number of treated unit-periods,
``N1_g * T1_g`` (Clarke, Pailañir, Athey & Imbens 2023, the Stata ``sdid`` command).

Variance estimators (Arkhangelsky et al. 2021, Section 5), as in R synthdid's
``vcov.R``:

* placebo (Algorithm 4): controls only; a random permutation makes the last
  ``N1`` of them pseudo-treated (with the treated units' adoption dates); the weights are
  re-estimated (warm-started at the original ones) with the original tuning; variance =
  ``(B-1)/B`` times the sample variance of the replicates.  Needs ``N0 > N1``.
* bootstrap (Algorithm 2): resample units with replacement, redraw until every group
  has a treated unit and there is a control; weights re-estimated (warm start).
  Undefined (NaN) with one treated unit, as in R.
* jackknife (Algorithm 3, fixed weights): leave one unit out, keep lambda, renormalise
  omega; variance ``(n-1)/n * sum (u_i - mean u)^2``.  Undefined with one treated unit or
  when a group's omega has a single non-zero entry, as in R.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import numpy as np

from ..core.progress import progress, track
from . import _sdid_solver
from ._sdid_solver import (
    _MASKED,
    DataProblems,
    DrawGram,
    GramProblems,
    SDIDFit,
    SDIDOptions,
    collapsed_form,
    control_design,
    control_gram,
    default_options,
    fixed_weights,
    gram_blocks,
    gram_fits,
    row_cache_scope,
    sdid_fit,
    solve_gram_sets,
    sparsify_rows,
    sum_normalize,
    weight_problem,
)

__all__ = [
    "BootstrapSampler",
    "Group",
    "aggregate",
    "aggregate_rows",
    "bootstrap_forms",
    "bootstrap_replicates",
    "contrast_columns",
    "fit_design",
    "jackknife_pseudovalues",
    "loo_contrasts",
    "placebo_replicates",
    "replicate_vcov",
]


@dataclass(frozen=True)
class Group:
    """One adoption cohort: first treated column ``a`` and treated row indices ``rows``."""

    a: int
    rows: np.ndarray


def _method_opts(method: str, Yg: np.ndarray, N0: int, T0: int) -> tuple[SDIDOptions, dict]:
    return default_options(method, Yg, N0, T0)


def fit_design(Y: np.ndarray, ctrl: np.ndarray, groups: list[Group], method: str, *,
               opts: list[SDIDOptions] | None = None,
               init: list[tuple[np.ndarray | None, np.ndarray | None]] | None = None
               ) -> tuple[list[SDIDFit], list[dict]]:
    """Fit every group against the controls ``ctrl`` (row indices of ``Y``).

    ``opts`` (one per group) default to synthdid's defaults for ``method`` computed on
    each group's block; ``init`` gives per-group (omega, lambda) initial values (or the
    fixed weights when the method does not estimate them).  Returns the fits and, per
    group, the tuning information (noise level, eta) when ``opts`` were computed here.
    """
    fits: list[SDIDFit] = []
    infos: list[dict] = []
    N0 = len(ctrl)
    for g, grp in enumerate(groups):
        Yg = Y[np.concatenate([ctrl, grp.rows])]
        if opts is None:
            o, info = _method_opts(method, Yg, N0, grp.a)
        else:
            o, info = opts[g], {}
        om0, la0 = fixed_weights(method, N0, grp.a)
        if init is not None:
            om_i, la_i = init[g]
            om0 = om_i if om_i is not None else om0
            la0 = la_i if la_i is not None else la0
        fits.append(sdid_fit(Yg, N0, grp.a, o, omega=om0, lam=la0))
        infos.append(info)
    return fits, infos


def aggregate(taus: np.ndarray, n1: np.ndarray, t1: np.ndarray) -> tuple[float, np.ndarray]:
    """ATT = sum_g w_g tau_g with w_g = N1_g T1_g / sum_h N1_h T1_h; returns (ATT, w)."""
    cells = np.asarray(n1, dtype=float) * np.asarray(t1, dtype=float)
    w = cells / cells.sum()
    return float(np.dot(w, taus)), w


#: working memory of one batch of placebo weight problems, in float64 numbers: the
#: per-replicate state of the Frank-Wolfe solver (about 10 vectors of length N0 for the
#: unit weights, 6 of length T0 for the time weights) and the time-weight Gram blocks
#: ((T0 + 1)^2 each); more replicates go in chunks (each problem follows its own
#: iterates: chunking changes nothing but the rounding of BLAS products of other shapes)
_BATCH_ELEMS = 2**19
#: placebo unit-weight problems in data form solved in one compiled call at least (the
#: chunks of :data:`_BATCH_ELEMS` grouped up to it; their states are computed chunk by
#: chunk, as before, so the same numbers): the compiled loop computes the Gram rows of up
#: to four problems in one pass over the design (``_sdid_fw.c`` ``ti_fw_data_side``), so a
#: call needs four problems or more to fill its passes (at 20,000 units a chunk holds two
#: or three replicates, at 40,000 one). Costs the states of the grouped chunks (at most
#: ``_SIDE_REPS`` chunks of :data:`_BATCH_ELEMS` numbers: 16 MB)
_SIDE_REPS = 4
#: ... sixteen for a design (pre-periods x controls) of
#: :data:`._sdid_solver.WIDE_ELEMS` numbers or more, where the compiled loop computes up
#: to sixteen rows in one pass, and for the screened form (``_sdid_solver.fw_screened``,
#: sixteen problems a pass over the design). Costs the states of up to sixteen chunks
#: (128 MB at most; at 250,000 units x 40 the peak is unchanged)
_SIDE_REPS_WIDE = 16
#: ... and of one gather of the replicates' control rows (time-weight Gram blocks)
_GATHER_ELEMS = 2**16
#: the bootstrap's unit-weight problems, per group (:func:`bootstrap_forms`), in the
#: cheapest of three forms, all giving the same numbers to rounding (tested):
#: (1) *kept*: the controls' Gram matrix (N0 x N0, one per cohort) built once and every
#: draw's gathered from it, while all of them plus the one draw buffer fit in
#: ``_GRAM_KEEP_ELEMS`` float64 numbers (32 MB: up to ~1,450 controls with one cohort;
#: measured fastest there: the draw's k x k matrix stays in the processor's cache);
#: (2) *control design* (with the compiled loop; the NumPy loop has no row cache): the
#: draw's problem in data form on the centred design of ALL
#: controls (:class:`._sdid_solver.ControlDesign`), each Gram row computed when a draw
#: first needs it and kept for every later draw in a row cache of
#: ``_ROW_CACHE_ELEMS / cohorts`` numbers -- no k x k object, no per-draw k^2 T0 build;
#: two draws solved in alternation, each prefetching the other's next cached row;
#: while ``cohorts x N0^2 <= _DESIGN_ELEMS`` (one cohort: up to 4,096 controls, i.e. while
#: the cache holds at least half of the rows: a bootstrap's draws return to the same
#: controls, 96% of the rows read came from the cache at 3,600 controls);
#: (3) *per draw* beyond: each draw's own problem (:func:`._sdid_solver.weight_problem`:
#: its ``A.T @ A`` in a reused buffer within the Gram budget, else the data form on its
#: distinct controls with a row cache for that draw, which then covers more of its rows
#: than (2)'s can). Issue 13's panel, 40 periods, 20 draws, CPU s (RESULTS.md, run SW):
#: (2) against the old choice 0.54 / 0.91 / 1.29 s against 0.60 / 1.16 / 1.36-1.48 at
#: 2,000 / 3,000 / 4,000 units, 2.08 against 1.89-1.99 at 5,000; (1) 0.36-0.41 against
#: (2) 0.43-0.46 at 1,500
_GRAM_KEEP_ELEMS = 2**22
_DESIGN_ELEMS = 2**24
#: bootstrap draws solved together in the control-design form (2: in alternation; 1: one
#: by one -- the same numbers). Four with their missed rows computed in one pass
#: (``ti_fw_data_side``) was measured no faster: the draws find 82-96% of their rows in
#: the cache (run RP, RESULTS.md "sdidrows": 0.744 against 0.720 s at 4,000 units)
_PAIR_DRAWS = 2


def _design_form_ok() -> bool:
    """The control-design form needs the compiled loop's row cache (the NumPy loop
    recomputes a row at every step: there the old forms are faster)."""
    return _sdid_solver.fw_loop() == "compiled"


def bootstrap_forms(N0: int, groups: list[Group], fits: list[SDIDFit]) -> list[str]:
    """Form of each group's bootstrap unit-weight problems: ``"kept"``, ``"design"``,
    ``"draw"`` (see :data:`_GRAM_KEEP_ELEMS`), or ``"none"`` when omega is not estimated."""
    upd = [fit.options.update_omega for fit in fits]
    n_upd = sum(upd)
    keep = [u and gram_fits(N0, grp.a) for grp, u in zip(groups, upd, strict=True)]
    if (sum(keep) + 1) * N0 * N0 <= _GRAM_KEEP_ELEMS and any(keep):
        return ["kept" if k else ("draw" if u else "none")
                for k, u in zip(keep, upd, strict=True)]
    if n_upd * N0 * N0 <= _DESIGN_ELEMS and _design_form_ok():
        return ["design" if u else "none" for u in upd]
    return ["draw" if u else "none" for u in upd]


def _rep_chunks(n_reps: int, per_rep: int, budget: int | None = None) -> list[slice]:
    """Slices of about equal length covering ``range(n_reps)``, each within ``budget``
    (default :data:`_BATCH_ELEMS`) numbers at ``per_rep`` numbers per replicate."""
    step = max(1, int((budget or _BATCH_ELEMS) // max(per_rep, 1)))
    n_chunks = -(-n_reps // step)
    edges = np.linspace(0, n_reps, n_chunks + 1).round().astype(int)
    return [slice(int(lo), int(hi)) for lo, hi in itertools.pairwise(edges)]


def _lambda_problems(Z: np.ndarray, ctrl: np.ndarray, lam: np.ndarray,
                     opts: SDIDOptions) -> GramProblems:
    """Time-weight problems of placebo replicates with controls ``ctrl[b]``: synthdid's
    on the rows ``Z[ctrl[b]]`` (pre-period outcomes, then the post-period mean), one Gram
    block each, warm start ``lam``."""
    B, n0 = ctrl.shape
    k = Z.shape[1] - 1
    bank = np.empty((B * k, k))
    Atb = np.empty((B, k))
    bb = np.empty(B)
    for sub in _rep_chunks(B, n0 * (k + 1), _GATHER_ELEMS):  # gathers of the controls
        bk, _, Atb[sub], bb[sub] = gram_blocks(Z[ctrl[sub]], opts.zeta_lambda,
                                               opts.lambda_intercept)
        bank[sub.start * k:sub.stop * k] = bk
    return GramProblems(bank, np.arange(B) * k, Atb, bb, np.broadcast_to(lam, (B, k)),
                        n0, opts.zeta_lambda)


def _omega_problems(A: np.ndarray, bank: np.ndarray | None, ctrl: np.ndarray,
                    tr: np.ndarray, x0: np.ndarray, opts: SDIDOptions
                    ) -> GramProblems | DataProblems:
    """Unit-weight problems of placebo replicates in the coordinates of all ``N0``
    controls: regress the pseudo-treated units' mean of the columns of ``A`` (pre-period
    series, one column per control, centred per unit when ``omega_intercept``) on those
    of the controls ``ctrl[b]``. Centring is per unit, so every replicate's Gram matrix is
    a principal submatrix of ``bank`` (``A'A + T0 zeta^2 I``, built once): a replicate
    masks the units it leaves out. ``bank`` None: in data form on ``A`` itself (no
    ``N0 x N0`` matrix; :func:`._sdid_solver.gram_fits`)."""
    b = A[:, tr].mean(axis=2)                            # (T0, B) pseudo-treated means
    Atb = (A.T @ b).T
    keep = np.zeros(Atb.shape, dtype=bool)
    np.put_along_axis(keep, ctrl, True, axis=1)
    Atb[~keep] = _MASKED
    if bank is None:
        return DataProblems(A, None, Atb, np.einsum("tb,tb->b", b, b), x0, A.shape[0],
                            opts.zeta_omega)
    return GramProblems(bank, 0, Atb, np.einsum("tb,tb->b", b, b), x0, A.shape[0],
                        opts.zeta_omega)


def _placebo_taus(Y0: np.ndarray, ctrl: np.ndarray, tr: np.ndarray, fit: SDIDFit,
                  stats: dict | None = None) -> np.ndarray:
    """Estimates of the placebo replicates of one block: controls ``ctrl[b]`` against
    pseudo-treated ``tr[b]`` (rows of the control outcomes ``Y0``), weights re-estimated
    from the original fit's weights with its tuning (R synthdid ``placebo_se``). The
    unit- and time-weight problems of all replicates are solved together
    (:func:`solve_gram_sets`), in chunks of at most :data:`_BATCH_ELEMS` numbers.
    ``stats`` (optional) counts the weight problems solved and those that stopped at
    ``max_iter`` instead of the decrease criterion (as R synthdid, not an error)."""
    opts, T0 = fit.options, fit.T0
    N0, T = Y0.shape
    B, n1 = tr.shape
    if opts.update_omega:
        A = Y0[:, :T0].T                                 # (T0, N0): one column per unit
        if opts.omega_intercept:
            A = A - A.mean(axis=0)
        if gram_fits(N0, T0):
            bank = A.T @ A
            bank[np.diag_indices(N0)] += T0 * opts.zeta_omega**2
        else:                                            # data form: no N0 x N0 bank
            A = np.ascontiguousarray(A)
            bank = None
    if opts.update_lambda:
        Z = np.empty((N0, T0 + 1))
        Z[:, :T0] = Y0[:, :T0]
        Z[:, T0] = Y0[:, T0:].mean(axis=1)
    per_rep = 4 * N0 + (6 * N0 if opts.update_omega else 0) + \
        ((T0 + 1) ** 2 + 6 * T0 if opts.update_lambda else 0)
    taus = np.empty(B)
    chunks = _rep_chunks(B, per_rep)
    side = (opts.update_omega and bank is None
            and _sdid_solver.fw_loop() == "compiled")
    # unit weights in the screened residual form (fw_screened) from SCREEN_MIN_ELEMS
    screen = side and N0 * T0 >= _sdid_solver.SCREEN_MIN_ELEMS
    side_reps = _SIDE_REPS_WIDE if N0 * T0 >= _sdid_solver.WIDE_ELEMS or screen \
        else _SIDE_REPS
    for group in _chunk_groups(chunks, side_reps if side else 1):
        sets, starts = [], []
        for sl in group:
            c = ctrl[sl]
            omega = np.zeros((len(c), N0))
            src = fit.omega[c]
            tot = src.sum(axis=1, keepdims=True)
            src = np.where(tot != 0, src / np.where(tot != 0, tot, 1.0), 1.0 / c.shape[1])
            np.put_along_axis(omega, c, src, axis=1)         # sum_normalize(omega[ctrl])
            lam = np.array(np.broadcast_to(fit.lam, (len(c), T0)))
            starts.append((lam, omega))
            if opts.update_lambda:
                sets.append(_lambda_problems(Z, c, fit.lam, opts))
            if opts.update_omega and not screen:
                sets.append(_omega_problems(A, bank, c, tr[sl], omega, opts))
        # one call for the group: its chunks' unit-weight problems in data form share
        # the compiled loop's passes over the design (the same numbers as chunk by chunk)
        w, conv = solve_gram_sets(sets, opts) if sets else ([], [])
        if screen:                      # the group's unit weights in one screened call
            rows = np.concatenate([np.arange(sl.start, sl.stop) for sl in group])
            keep = np.zeros((len(rows), N0), dtype=bool)
            np.put_along_axis(keep, ctrl[rows], True, axis=1)
            omega_w, omega_c = _sdid_solver.solve_screened(
                A, A[:, tr[rows]].mean(axis=2).T, keep,
                np.concatenate([om for _, om in starts]), opts)
            conv = [*conv, omega_c]
            edges = np.cumsum([0, *(sl.stop - sl.start for sl in group)])
            w_it = iter(w)
            w = []
            for lo, hi in itertools.pairwise(edges):
                if opts.update_lambda:
                    w.append(next(w_it))
                w.append(omega_w[lo:hi])
        if stats is not None:
            for c_ in conv:
                stats["problems"] = stats.get("problems", 0) + len(c_)
                stats["stopped_at_max_iter"] = (stats.get("stopped_at_max_iter", 0)
                                                + int((~c_).sum()))
        for sl, (lam, omega) in zip(group, starts, strict=True):
            if opts.update_lambda:
                lam = w.pop(0)
            if opts.update_omega:
                omega = w.pop(0)
            col = np.empty((sl.stop - sl.start, T))
            col[:, :T0] = -lam
            col[:, T0:] = 1.0 / (T - T0)
            np.negative(omega, out=omega)
            np.put_along_axis(omega, tr[sl], 1.0 / n1, axis=1)   # row contrast of Y0
            taus[sl] = np.einsum("bj,jt,bt->b", omega, Y0, col, optimize=True)
    return taus


def _chunk_groups(chunks: list[slice], reps: int) -> list[list[slice]]:
    """Consecutive chunks in groups of at least ``reps`` replicates (the last group
    possibly fewer); ``reps`` 1: one chunk a group."""
    groups: list[list[slice]] = []
    cur: list[slice] = []
    n = 0
    for sl in chunks:
        cur.append(sl)
        n += sl.stop - sl.start
        if n >= reps:
            groups.append(cur)
            cur, n = [], 0
    if cur:
        groups.append(cur)
    return groups


def placebo_replicates(Y: np.ndarray, N0: int, groups: list[Group], fits: list[SDIDFit],
                       n_reps: int, rng: np.random.Generator, stats: dict | None = None
                       ) -> np.ndarray:
    """Placebo replicates, shape ``(n_reps, 1 + G)``: column 0 the ATT, then per group.

    Each cohort's replicates are solved together (:func:`_placebo_taus`), in chunks of
    at most :data:`_BATCH_ELEMS` numbers of working memory.
    """
    T = Y.shape[1]
    sizes = [len(g.rows) for g in groups]
    n1_tot = sum(sizes)
    n0_new = N0 - n1_tot
    perms = np.array([rng.permutation(N0) for _ in range(n_reps)])   # (B, N0)
    ctrl = perms[:, :n0_new]
    out = np.empty((n_reps, 1 + len(groups)))
    start = n0_new
    with row_cache_scope():          # one row-cache buffer for every chunk (data form)
        for g, fit in enumerate(track(fits, "synthetic_did placebo (cohorts)")):
            out[:, 1 + g] = _placebo_taus(Y[:N0], ctrl, perms[:, start:start + sizes[g]],
                                          fit, stats)
            start += sizes[g]
    t1 = np.array([T - grp.a for grp in groups])
    cells = np.array(sizes, dtype=float) * t1
    out[:, 0] = out[:, 1:] @ (cells / cells.sum())
    return out


class BootstrapSampler:
    """The unit bootstrap's samples (Algorithm 2): units drawn with replacement (sorted),
    redrawn until every group keeps a treated unit and a control is left.

    Iterating yields ``(ctrl, treated)`` -- control rows and one array of treated rows per
    group -- for ``n_reps`` accepted draws; ``rejected`` counts the redraws. Raises
    RuntimeError after ``max_draws`` draws in all (default ``100 n_reps``).
    """

    def __init__(self, N: int, N0: int, groups: list[Group], n_reps: int,
                 rng: np.random.Generator, max_draws: int | None = None) -> None:
        self.N, self.N0, self.n_reps, self.rng = N, N0, n_reps, rng
        self.group_of = np.full(N, -1)
        for g, grp in enumerate(groups):
            self.group_of[grp.rows] = g
        self.n_groups = len(groups)
        self.max_draws = max_draws or 100 * n_reps
        self.rejected = 0

    def __iter__(self):
        accepted = 0
        while accepted < self.n_reps:
            if accepted + self.rejected >= self.max_draws:
                raise RuntimeError("bootstrap: too many draws without both treated and "
                                   "control units")
            ind = np.sort(self.rng.integers(0, self.N, size=self.N))
            ctrl = ind[ind < self.N0]
            tr = [ind[self.group_of[ind] == g] for g in range(self.n_groups)]
            if len(ctrl) == 0 or any(len(r) == 0 for r in tr):
                self.rejected += 1
                continue
            accepted += 1
            yield ctrl, tr


def bootstrap_replicates(Y: np.ndarray, N0: int, groups: list[Group], fits: list[SDIDFit],
                         n_reps: int, rng: np.random.Generator,
                         max_draws: int | None = None) -> tuple[np.ndarray, int]:
    """Unit bootstrap replicates ``(n_reps, 1 + G)`` and the number of rejected draws."""
    N, T = Y.shape
    out = np.empty((n_reps, 1 + len(groups)))
    sampler = BootstrapSampler(N, N0, groups, n_reps, rng, max_draws)
    # per group (bootstrap_forms): the controls' Gram matrix kept and each draw's
    # gathered from it; or the controls' design with a row cache shared by the draws; or
    # each draw's own problem (its A.T @ A in one buffer reused by every draw and group,
    # DrawGram, or beyond gram_fits' budget the data form on its distinct controls)
    forms = bootstrap_forms(N0, groups, fits)
    n_design = max(1, forms.count("design"))
    per_draw = DrawGram()
    grams = [control_gram(Y, N0, grp.a, fit.options.omega_intercept) if f == "kept" else
             control_design(Y, N0, grp.a, fit.options.omega_intercept,
                            _sdid_solver._ROW_CACHE_ELEMS // n_design) if f == "design"
             else per_draw
             for grp, fit, f in zip(groups, fits, forms, strict=True)]
    bar = progress(n_reps, "synthetic_did bootstrap")
    # the control-design form solves two draws' unit-weight problems in one compiled
    # call, in alternation (the same numbers as one by one: tested)
    pair = _PAIR_DRAWS if "design" in forms else 1
    count = 0
    with row_cache_scope():          # one row-cache buffer for every draw (data form)
        for draws in _batches(sampler, pair):
            taus = np.empty((len(draws), len(groups)))
            for g, (grp, fit) in enumerate(zip(groups, fits, strict=True)):
                if forms[g] == "design" and len(draws) > 1:
                    taus[:, g] = _design_draw_taus(Y, draws, g, grp.a, fit, grams[g])
                    continue
                for d, (ctrl, tr) in enumerate(draws):
                    Yg = Y[np.concatenate([ctrl, tr[g]])]
                    taus[d, g] = sdid_fit(Yg, len(ctrl), grp.a, fit.options,
                                          omega=sum_normalize(fit.omega[ctrl]), lam=fit.lam,
                                          omega_gram=(grams[g], ctrl)).tau
            for d, (_, tr) in enumerate(draws):
                att, _ = aggregate(taus[d], [len(r) for r in tr],
                                   [T - grp.a for grp in groups])
                out[count, 0] = att
                out[count, 1:] = taus[d]
                count += 1
                bar.update()
    bar.close()
    return out, sampler.rejected


def _batches(it, n: int):
    """Lists of ``n`` consecutive items of ``it`` (the last possibly shorter)."""
    it = iter(it)
    while batch := list(itertools.islice(it, n)):
        yield batch


def _design_draw_taus(Y: np.ndarray, draws: list, g: int, a: int, fit: SDIDFit,
                      design) -> np.ndarray:
    """:func:`sdid_fit`'s estimate for each of several bootstrap draws of group ``g``
    (its phases: :func:`._sdid_solver.time_weights`, the unit weights' two passes,
    :func:`._sdid_solver.contrast`), the draws' unit-weight problems solved together on
    the control design ``design`` (:func:`._sdid_solver.fw_gram_sets`: two in
    alternation) instead of one :func:`._sdid_solver.sdid_fit` per draw."""
    opts = fit.options
    blocks, probs, lams = [], [], []
    for ctrl, tr in draws:
        Yg = Y[np.concatenate([ctrl, tr[g]])]
        N0 = len(ctrl)
        Yc = collapsed_form(Yg, N0, a)
        lam = _sdid_solver.time_weights(Yc, N0, opts, fit.lam, {})
        blocks.append((Yg, N0))
        lams.append(np.asarray(lam, dtype=float))
        probs.append(weight_problem(Yc[:, :a].T, opts.zeta_omega, opts.omega_intercept,
                                    sum_normalize(fit.omega[ctrl]), (design, ctrl)))
    first = opts.max_iter_pre_sparsify if opts.sparsify else opts.max_iter
    res = _sdid_solver.fw_gram_sets(probs, min_decrease=opts.min_decrease, max_iter=first)
    if opts.sparsify:
        probs = [dataclasses.replace(P, x0=sparsify_rows(r[0]))
                 for P, r in zip(probs, res, strict=True)]
        res = _sdid_solver.fw_gram_sets(probs, min_decrease=opts.min_decrease,
                                        max_iter=opts.max_iter)
    return np.array([_sdid_solver.contrast(Yg, N0, a, np.asarray(r[0][0], dtype=float), lam)
                     for (Yg, N0), lam, r in zip(blocks, lams, res, strict=True)])


def loo_contrasts(C: np.ndarray, N0: int, groups: list[Group], fits: list[SDIDFit]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-unit-out group estimates with fixed weights, from unit contrasts.

    ``C`` is ``(N, G, m)``: unit ``i``'s contrast ``Y_i' col_g`` for group ``g`` of ``m``
    outcome series (``col_g`` = ``-lambda`` on the pre-periods, ``1/T1`` after; with
    lambda fixed the estimate is linear in them). Returns ``(taus, n1)``: ``taus[j, g]``
    ``(m,)`` = treated mean of ``C`` minus the omega-weighted control mean with unit
    ``j`` left out (NaN where ``j`` was the group's only treated unit), ``n1[j, g]`` the
    group's treated units left.

    Leaving out control ``j`` renormalises omega over the others, ``(S - omega_j c_j) /
    (W - omega_j)`` with ``S = omega' c_ctrl``, ``W = sum(omega)`` (R ``sum_normalize``:
    uniform weights when the others sum to zero); a control holding more than half of
    the weight is summed over the others directly (no cancellation in ``W - omega_j``; at
    most one per group). Leaving out treated unit ``i`` takes it out of its group's mean.
    O(N G m) after the contrasts.
    """
    N, G, m = C.shape
    taus = np.empty((N, G, m))
    n1 = np.empty((N, G))
    for g, (grp, fit) in enumerate(zip(groups, fits, strict=True)):
        cc = C[:N0, g]                                     # (N0, m)
        om = np.asarray(fit.omega, dtype=float)
        W = om.sum()
        S = om @ cc
        full = S / W if W != 0 else cc.mean(axis=0)      # omega over every control
        ct = C[grp.rows, g]
        k = len(ct)
        mt = ct.mean(axis=0)
        den = W - om
        with np.errstate(divide="ignore", invalid="ignore"):
            synth = (S - om[:, None] * cc) / den[:, None]
        if N0 > 1:
            flat = np.flatnonzero(den == 0)              # the others weigh nothing
            synth[flat] = (cc.sum(axis=0) - cc[flat]) / (N0 - 1)
        big = np.flatnonzero(om > 0.5 * W) if W > 0 else np.arange(0)
        for j in big:                                    # direct: no cancellation
            rest = np.delete(np.arange(N0), j)
            synth[j] = sum_normalize(om[rest]) @ cc[rest] if len(rest) else 0.0
        taus[:N0, g] = mt - synth
        taus[N0:, g] = mt - full
        if k > 1:
            taus[grp.rows, g] = (ct.sum(axis=0) - ct) / (k - 1) - full
        else:
            taus[grp.rows, g] = np.nan
        n1[:, g] = k
        n1[grp.rows, g] = k - 1
    return taus, n1


def aggregate_rows(taus: np.ndarray, n1: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """:func:`aggregate` of every row of ``taus`` ``(n, G)`` (NaN groups left out, as the
    replicates do; 0, the empty weighted sum, when no group is left)."""
    ok = ~np.isnan(taus)
    cells = np.where(ok, n1 * np.asarray(t1, dtype=float), 0.0)
    tot = cells.sum(axis=1)
    num = (cells * np.where(ok, taus, 0.0)).sum(axis=1)
    return np.divide(num, tot, out=np.zeros(len(taus)), where=tot > 0)


def contrast_columns(T: int, groups: list[Group], fits: list[SDIDFit]) -> np.ndarray:
    """``(T, G)``: group ``g``'s period contrast, ``-lambda`` before ``a``, ``1/T1`` from
    ``a`` on (its estimate is ``row' Y col``)."""
    cols = np.zeros((T, len(groups)))
    for g, (grp, fit) in enumerate(zip(groups, fits, strict=True)):
        cols[:grp.a, g] = -fit.lam
        cols[grp.a:, g] = 1.0 / (T - grp.a)
    return cols


def jackknife_pseudovalues(Y: np.ndarray, N0: int, groups: list[Group],
                           fits: list[SDIDFit]) -> np.ndarray:
    """Leave-one-unit-out estimates with fixed weights, shape ``(N, 1 + G)``.

    Group columns are NaN where the left-out unit was the group's only treated unit.

    O(N T G), not a refit per unit: with lambda fixed a group's estimate is linear in the
    units' contrasts ``c_i = Y_i' col`` (one ``(N, T) x (T, G)`` product), and each
    leave-one-out estimate follows from them in O(1) (:func:`loo_contrasts`).
    """
    N, T = Y.shape
    G = len(groups)
    out = np.full((N, 1 + G), np.nan)
    if G == 0:
        return out
    c = Y @ contrast_columns(T, groups, fits)             # (N, G) unit contrasts
    taus, n1 = loo_contrasts(c[:, :, None], N0, groups, fits)
    out[:, 1:] = taus[:, :, 0]
    out[:, 0] = aggregate_rows(out[:, 1:], n1, [T - grp.a for grp in groups])
    return out


def replicate_vcov(reps: np.ndarray, kind: str) -> np.ndarray:
    """Covariance of replicate columns: ``(B-1)/B`` x sample covariance for placebo and
    bootstrap (R: ``sqrt((B-1)/B) * sd``), ``(n-1)/n * sum`` of outer products of centred
    pseudo-values for the jackknife. Columns containing NaN give NaN rows/columns."""
    k = reps.shape[1]
    cov = np.full((k, k), np.nan)
    good = ~np.isnan(reps).any(axis=0)
    if good.any():
        r = reps[:, good]
        n = r.shape[0]
        d = r - r.mean(axis=0)
        c = d.T @ d / n
        if kind == "jackknife":
            c = c * (n - 1)
        idx = np.flatnonzero(good)
        cov[np.ix_(idx, idx)] = c
    return cov
