"""Poisson pseudo-maximum likelihood (PPML) with high-dimensional fixed effects.

``ppml`` estimates ``E[y | x, d] = exp(offset + x'b + d'a)`` by the Poisson quasi-likelihood
(Santos Silva & Tenreyro 2006), the workhorse of structural gravity: zeros are kept, the
fixed effects (exporter-year, importer-year, pair, ...) are swept out by weighted alternating
projections inside IRLS (Correia, Guimarães & Zylkin 2020), separated observations are
detected and removed first (Correia, Guimarães & Zylkin 2021). Numerics live in
:mod:`twinimpact.estimators._ppml_kernel`; this module validates and orchestrates.

Keyword mapping
---------------
=================== ======================================= ================================
twinimpact           R fixest ``fepois``                     Stata ``ppmlhdfe``
=================== ======================================= ================================
``outcome``          left-hand side                          depvar
``regressors``       right-hand side variables               indepvars
``fixed_effects``    ``| fe1 + fe2 + fe1^fe3``                ``absorb(fe1 fe2 fe1#fe3)``
``cluster``          ``cluster = ~a`` / ``~a + b``            ``vce(cluster a [b])``
``vcov``             ``vcov = "iid" / "hetero" / "cluster"``  ``vce(...)``
``weights``          ``weights = ~w``                        ``[pw=w]``
``offset``           ``offset = ~o``                         ``offset(o)``
``tol``, ``maxiter`` ``glm.tol``, ``glm.iter``               ``tolerance()``, ``maxiterations()``
``separation``       ``fixef.rm = "perfect"``                 ``separation(fe simplex relu)``
``drop_singletons``  ``fixef.rm = "singleton"``              default (``keepsingletons`` off)
``ssc_adj``          ``ssc(adj = TRUE/FALSE)``               --
=================== ======================================= ================================
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import special

from ..core.fe import SandwichVcov, factorize, fe_dof
from ..core.rowblocks import row_blocks
from ..core.threads import blas_single_thread
from ..core.validation import (
    RowFilter,
    _numeric,
    as_frame,
    as_tuple,
    require_columns,
    require_frame,
)
from ..errors import (
    COUNTS_POINTER,
    ConvergenceWarning,
    DroppedRowsWarning,
    EstimationError,
    InputError,
    SpecificationError,
    check_alpha,
    check_literal,
    format_message,
)
from ..results import EstimationResult, VcovSpec, make_result
from ._ppml_kernel import (
    WeightedFE,
    find_separation,
    fit_order,
    irls_poisson,
    permute_rows,
)

#: name of the constant fitted when there is no fixed effect (fixest's label)
INTERCEPT = "(Intercept)"

__all__ = ["PPMLResult", "fe_codes", "lincom", "ppml"]

VcovKind = Literal["iid", "hetero", "cluster"]
#: separation checks (ppmlhdfe ``separation(fe simplex relu)``, its default = True)
SEPARATION_METHODS = ("fe", "simplex", "relu")
FixedEffect = str | Sequence[str]


def lincom(result: EstimationResult, terms: Sequence[str], weights: Sequence[float] | None = None,
           *, name: str | None = None) -> EstimationResult:
    """A linear combination ``sum_j c_j b_j`` of a result's coefficients, delta method.

    Returns a one-row result (same vcov kind / reference distribution) whose term is
    ``name`` (default ``"b1 + b2 + ..."``). Equivalent to Stata ``lincom`` or R
    ``msm::deltamethod(~x1 + x2, coef, vcov)``; e.g. the *total* RTA effect of the
    Advanced Guide is ``lincom(r, ["rta", "rta_lag4", "rta_lag8", "rta_lag12"])``.
    """
    terms = [str(t) for t in terms]
    missing = [t for t in terms if t not in result.terms]
    if missing:
        raise SpecificationError(format_message(
            "lincom: term(s) not in the result", seen=missing,
            fix=f"choose among {', '.join(result.terms)}"))
    c = np.ones(len(terms)) if weights is None else np.asarray(weights, dtype=float)
    if c.shape != (len(terms),):
        raise SpecificationError(format_message(
            "lincom: weights must have one number per term", seen=list(c),
            fix=f"pass {len(terms)} weights"))
    idx = [result.terms.index(t) for t in terms]
    est = float(c @ result.coef[idx])
    var = float(c @ result.cov[np.ix_(idx, idx)] @ c)
    label = name or " + ".join(terms if weights is None else
                               [f"{w:g}*{t}" for w, t in zip(c, terms, strict=True)])
    return make_result(f"{result.estimator}/lincom", {label: est}, np.array([[var]]),
                       result.vcov_spec, result.nobs,
                       spec={**dict(result.spec), "lincom_terms": tuple(terms),
                             "lincom_weights": tuple(float(v) for v in c)},
                       diagnostics=dict(result.diagnostics))


def _glm_finish(v: np.ndarray, vspec: VcovSpec, k_total: int, *, n: int,
                adj: bool) -> tuple[np.ndarray, VcovSpec]:
    """The Poisson GLM's variance spec (fixest): iid = bread x (n-1)/(n-K) with the
    dispersion fixed at 1; every kind with a normal reference (z statistics)."""
    if vspec.kind == "iid":
        iid_factor = (n - 1) / (n - k_total) if adj else 1.0
        return v, VcovSpec("iid", small_sample={"adj": iid_factor, "K": k_total},
                           description=f"iid Poisson: (X'WX)^-1 x (n-1)/(n-K) = "
                                       f"{iid_factor:.6g} (dispersion 1), n={n}, K={k_total}")
    return v, dataclasses.replace(vspec, df=None,
                                  small_sample={"K": k_total, **vspec.small_sample},
                                  description=vspec.description.split(", t(")[0]
                                  + ", normal reference (GLM z statistics, as fixest)")


@dataclass(frozen=True, eq=False, repr=False)
class PPMLResult(EstimationResult):
    """PPML result: the shared protocol plus :meth:`lincom` and :meth:`proportional`."""

    def lincom(self, terms: Sequence[str], weights: Sequence[float] | None = None, *,
               name: str | None = None) -> EstimationResult:
        """Delta-method linear combination of coefficients (see :func:`lincom`)."""
        return lincom(self, terms, weights, name=name)

    def proportional(self, alpha: float = 0.05) -> pd.DataFrame:
        """Coefficients as proportional changes: ``exp(b) - 1`` with the CI endpoints
        transformed the same way (columns ``term, effect, ci_lower, ci_upper``)."""
        f = self.to_frame(alpha)
        return pd.DataFrame({"term": f["term"], "effect": np.expm1(f["estimate"]),
                             "ci_lower": np.expm1(f["ci_lower"]),
                             "ci_upper": np.expm1(f["ci_upper"])})


def _fe_name(spec: FixedEffect) -> str:
    return spec if isinstance(spec, str) else "^".join(spec)


def _fe_columns(spec: FixedEffect) -> list[str]:
    return [spec] if isinstance(spec, str) else list(spec)


#: largest product of label counts combined into one int64 before it is coded down
_COMBINED_MAX = 2**62


def fe_codes(frame: pd.DataFrame, spec: FixedEffect) -> np.ndarray:
    """Dense codes for one fixed-effect set: a column, or the interaction of several
    columns given as a tuple (``("exporter", "year")`` = fixest ``exporter^year``)."""
    cols = _fe_columns(spec)
    if len(cols) == 1:
        return factorize(frame[cols[0]])[0]
    # the columns' codes combined in place into one integer in a narrow range (the product
    # of the label counts), which core.fe.factorize codes through a direct table (in
    # order of first appearance, as before); coded down again whenever the product could
    # leave int64 (the same final codes: a one-to-one map of the combinations)
    codes = np.zeros(len(frame), dtype=np.int64)
    size = 1
    for c in cols:
        cc, g = factorize(frame[c])
        if size * g > _COMBINED_MAX:
            codes, size = factorize(codes)
            codes = codes.astype(np.int64, copy=False)
        codes *= g
        codes += cc
        size *= g
    return factorize(codes)[0]


def _narrow(codes: np.ndarray) -> np.ndarray:
    """Dense codes as int32 when they fit (half the memory of the factorized int64)."""
    return codes.astype(np.int32) if len(codes) and codes.max() < 2**31 - 1 else codes


def _recode(codes: np.ndarray, sub: np.ndarray, out: np.ndarray | None = None
            ) -> np.ndarray:
    """Dense codes 0..G'-1 of ``codes[sub]`` (levels keep their order; ``codes`` are dense
    0..G-1). A counting pass, no hashing; the same array when nothing is dropped and no
    ``out`` is given. ``out`` (length ``sub.sum()``, an integer dtype that holds the
    codes): written there and returned. Block by block (:mod:`..core.rowblocks`): the
    row selection, the levels seen and the renumbering make no n-row temporary (three
    per set before, fresh mappings above 32 MB: the gathered codes, their intp copy in
    ``bincount`` and the renumbered codes)."""
    if sub.all():
        if out is None:
            return codes
        out[...] = codes
        return out
    if out is None:
        out = np.empty(int(np.count_nonzero(sub)), dtype=codes.dtype)
    at = 0
    for sl in row_blocks(len(codes)):
        piece = codes[sl][sub[sl]]
        out[at:at + len(piece)] = piece
        at += len(piece)
    present = np.zeros(int(codes.max()) + 1, dtype=bool)
    for sl in row_blocks(len(out)):
        present[out[sl]] = True
    if not present.all():
        remap = (np.cumsum(present) - 1).astype(out.dtype)
        for sl in row_blocks(len(out)):
            block = out[sl]
            np.take(remap, block, out=block, mode="clip")  # codes < G: clip never clips
    return out


def _resolve_vcov(vcov: str | None, cluster: tuple[str, ...], has_fe: bool
                  ) -> tuple[str, bool]:
    """(vcov kind, cluster by the first fixed effect?). As fixest >= 0.13 and pyfixest
    0.60: iid unless a cluster is given; ``vcov="cluster"`` without ``cluster=`` clusters
    by the first fixed-effect set."""
    if vcov is None:
        vcov = "cluster" if cluster else "iid"
    check_literal("vcov", vcov, ("iid", "hetero", "cluster"))
    if vcov == "cluster" and not cluster:
        if has_fe:
            return vcov, True
        raise SpecificationError(format_message(
            "vcov='cluster' needs cluster= (one or two column names) or a fixed effect "
            "to cluster by", fix="pass e.g. cluster='pair_id' or "
                                 "cluster=('exporter', 'importer')"))
    if vcov != "cluster" and cluster:
        raise SpecificationError(format_message(
            f"vcov={vcov!r} conflicts with cluster={cluster!r}",
            fix="drop cluster= or use vcov='cluster'"))
    if len(cluster) > 2:
        raise SpecificationError(format_message(
            "at most two cluster variables are supported", seen=cluster,
            fix="pass one or two column names"))
    return vcov, False


def _check_options(tol: float, maxiter: int, separation: Any, alpha: float) -> None:
    if not (isinstance(tol, int | float) and 0 < tol < 1):
        raise SpecificationError(format_message("tol must be a number in (0, 1)", seen=tol,
                                                fix="pass e.g. tol=1e-8"))
    if not (isinstance(maxiter, int | np.integer) and maxiter >= 1):
        raise SpecificationError(format_message("maxiter must be a positive integer",
                                                seen=maxiter, fix="pass e.g. maxiter=100"))
    _separation_methods(separation)
    check_alpha(alpha)


def _separation_methods(separation: Any) -> tuple[str, ...]:
    """``True`` -> all three checks, ``False`` -> none, ``"fe+relu"`` etc. -> those."""
    if separation is True:
        return SEPARATION_METHODS
    if separation is False:
        return ()
    parts = separation.split("+") if isinstance(separation, str) else [None]
    if not all(p in SEPARATION_METHODS for p in parts) or len(set(parts)) != len(parts):
        raise SpecificationError(format_message(
            "separation must be True (fixed-effect, simplex and ReLU checks), False, or "
            "checks joined by '+' among 'fe', 'simplex', 'relu'", seen=separation,
            fix="pass separation=True or e.g. separation='fe+relu'"))
    return tuple(parts)


@blas_single_thread
def ppml(data: pd.DataFrame, *, outcome: str, regressors: Sequence[str],
         fixed_effects: Sequence[FixedEffect] = (), cluster: str | Sequence[str] | None = None,
         vcov: VcovKind | None = None, weights: str | None = None, offset: str | None = None,
         tol: float = 1e-8, maxiter: int = 100, separation: bool | str = True,
         drop_singletons: bool = True, ssc_adj: bool = True, fe_tol: float = 1e-10,
         alpha: float = 0.05) -> PPMLResult:
    """Poisson pseudo-maximum likelihood with any number of high-dimensional fixed effects.

    Model: ``E[y_i | x_i] = exp(o_i + x_i'b + a_{1,f1(i)} + ... + a_{K,fK(i)})``, estimated
    by IRLS with the fixed effects swept out by weighted alternating projections
    (Correia, Guimarães & Zylkin 2020, *Stata Journal* 20(1); Santos Silva & Tenreyro 2006,
    *REStat* 88(4)). Zero outcomes are kept unless separated.

    Parameters
    ----------
    data : DataFrame
        One row per observation (e.g. exporter x importer x year). Not modified.
    outcome : str
        Non-negative outcome (trade flow in levels, counts). Negative values are an error.
    regressors : sequence of str
        Numeric columns. Interactions and transformations (``log(dist)``, ``rta x year``)
        are built by the caller as columns.
    fixed_effects : sequence of str or tuples of str
        Fixed-effect sets; a tuple is the interaction of its columns, e.g.
        ``[("exporter", "year"), ("importer", "year"), "pair_id"]`` (fixest
        ``exporter^year + importer^year + pair_id``). Any number of sets and levels.
        With none, a constant is fitted and reported as ``"(Intercept)"`` (as fixest).
    cluster : str or pair of str, optional
        Cluster variable(s); two names give two-way clustering (Cameron, Gelbach &
        Miller 2011, negative eigenvalues set to zero as fixest does).
    vcov : {"iid", "hetero", "cluster"}, optional
        Default ``"cluster"`` when ``cluster`` is given, else ``"iid"`` -- the defaults of
        fixest >= 0.13 (its NEWS: "the new default VCOV is iid for all estimations") and
        pyfixest 0.60 ``fepois``. ``vcov="cluster"`` without ``cluster`` clusters by the
        first fixed-effect set, as fixest did by default before 0.13 (for
        ``("exporter", "year")`` the exporter-year cells; the vcov spec names it). Gravity
        studies usually cluster by pair: pass ``cluster="pair_id"``.
    weights : str, optional
        Non-negative observation weights (rows with weight 0 are dropped and counted).
    offset : str, optional
        Column added to the linear predictor with coefficient 1 (e.g. log exposure).
    tol : float
        Convergence criterion on the deviance: stop when
        ``|dev - dev_old| / (0.1 + |dev|) < tol`` (fixest ``glm.tol``, default 1e-8).
    maxiter : int
        Maximum IRLS iterations (default 100). Not converging (IRLS or the fixed-effect
        projections) raises a :class:`~twinimpact.errors.ConvergenceWarning` naming the
        criterion and its value, and the estimates are NaN (the last iterate is kept in
        ``diagnostics["last_iterate"]``; ``iterations``, ``crit``, ``converged``,
        ``demean_sweeps`` and ``demean_converged`` report how the solve ended).
    separation : True, False, or checks joined by "+" among "fe", "simplex", "relu"
        Separated observations (zero outcome perfectly predicted: the MLE does not exist
        with them) are detected and removed before estimation, in ppmlhdfe's order
        (Correia, Guimarães & Zylkin 2021): ``"fe"`` iteratively drops observations in a
        fixed-effect level whose outcomes are all zero (fixest ``fixef.rm = "perfect"``);
        ``"simplex"`` finds separation by combinations of regressors given the fixed
        effects (a linear program on the regressors' null space over the ``y > 0`` rows);
        ``"relu"`` is their iterative rectifier, which also finds separation by
        combinations of fixed effects. ``True`` = all three (ppmlhdfe's default
        ``separation(fe simplex relu)``, with its tolerances). Each check's count is in
        ``diagnostics["dropped_rows"]``; ``relu_iterations`` / ``relu_converged`` report
        the ReLU loop (a check that does not finish warns and drops nothing).
    drop_singletons : bool
        Drop observations alone in a fixed-effect level, iteratively (default True, as
        ppmlhdfe and pyfixest; fixest keeps them by default). Singletons do not change
        the estimates but inflate the observation count; they are counted in
        ``diagnostics["dropped_rows"]["singleton"]``.
    ssc_adj : bool
        Apply fixest's ``(n - 1) / (n - K)`` small-sample factor (default True). With
        False the clustered vcov carries only ``G / (G - 1)``, which reproduces the
        standard errors printed in Yotov et al. (2016) (Stata ``ppml``/``ppmlhdfe``).
    fe_tol : float
        Tolerance of the alternating projections (relative to each column's scale).
    alpha : float
        Default level of intervals in ``summary`` / ``to_frame``.

    Returns
    -------
    PPMLResult
        Terms = regressor names (NaN with a warning when collinear with the fixed
        effects). Variance, small-sample factors exactly (fixest ``ssc()`` defaults):

        * ``"iid"``: ``(X~'WX~)^{-1} * (n-1)/(n-K)`` (Poisson dispersion fixed at 1);
        * ``"hetero"``: ``n/(n-K) * B M B`` with ``M = sum s_i s_i'``;
        * ``"cluster"``: ``(n-1)/(n-K) * G/(G-1) * B M_G B``; two-way: inclusion-exclusion
          of the two one-way and the intersection meats, each with ``G_min/(G_min-1)``;

        with ``s_i = X~_i w_i (y_i - mu_i)`` (``X~`` = regressors with the fixed effects
        swept out under the IRLS weights ``w mu``), ``B = (X~'WX~)^{-1}``, ``K`` =
        slopes + fixed-effect levels minus redundancies, fixed effects nested in a cluster
        variable not counted (fixest ``fixef.K = "nested"``). Intervals use the normal
        distribution (fixest's ``z value`` for GLMs). ``diagnostics`` holds
        ``dropped_rows`` (missing / singleton / separated counts), ``iterations``,
        ``deviance``, ``converged``, ``crit`` and the fixed-effect sizes.

    Notes
    -----
    Estimates are log-points: ``exp(b) - 1`` is the proportional change in the conditional
    mean for a one-unit change of the regressor (:meth:`PPMLResult.proportional`).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from twinimpact.estimators.ppml import ppml
    >>> rng = np.random.default_rng(1)
    >>> d = pd.DataFrame({"i": np.repeat(np.arange(50), 8), "t": np.tile(np.arange(8), 50)})
    >>> d["x"] = rng.normal(size=len(d))
    >>> d["y"] = rng.poisson(np.exp(2 + 0.5 * d["x"] + 0.1 * (d["i"] % 3)))
    >>> r = ppml(d, outcome="y", regressors=["x"], fixed_effects=["i", "t"], cluster="i")
    >>> round(float(r.params["x"]), 1)
    0.5
    """
    data = as_frame(data, what="ppml: data")
    data = require_frame(data)
    if not isinstance(outcome, str):
        raise SpecificationError(format_message("outcome= must be a column name", seen=outcome,
                                                fix="pass outcome='trade'"))
    regressors = [regressors] if isinstance(regressors, str) else list(regressors)
    if not regressors:
        raise SpecificationError(format_message(
            "ppml needs at least one regressor", fix="pass regressors=['rta', ...]"))
    fixed_effects = [fixed_effects] if isinstance(fixed_effects, str) else list(fixed_effects)
    clus = as_tuple(cluster)
    vcov, cluster_by_fe = _resolve_vcov(vcov, clus, bool(fixed_effects))
    _check_options(tol, maxiter, separation, alpha)
    fe_cols = [c for f in fixed_effects for c in _fe_columns(f)]
    require_columns(data, [outcome, *regressors, *fe_cols, *clus, weights, offset])
    if len(set(regressors)) != len(regressors):
        raise SpecificationError(format_message("duplicated regressor names", seen=regressors,
                                                fix="list each regressor once"))

    n_input = len(data)
    y = _numeric(data, outcome, "outcome")
    x = np.column_stack([_numeric(data, c, "regressor") for c in regressors])
    w = _numeric(data, weights, "weights") if weights else None
    off = _numeric(data, offset, "offset") if offset else None
    rows = RowFilter(n_input)
    rows.drop_missing(y, f"missing outcome ({outcome})")
    for j, c in enumerate(regressors):
        rows.drop_missing(x[:, j], f"missing {c}")
    if not fixed_effects:
        # no fixed effect to carry the level: fit a constant, as fixest `fepois`, ppmlhdfe
        # and glm do (a Poisson model through the origin is another model)
        x = np.column_stack([np.ones(len(x)), x])
        regressors = [INTERCEPT, *regressors]
    for c in dict.fromkeys([*fe_cols, *clus]):
        rows.drop_missing(data[c], f"missing {c}")
    if w is not None:
        rows.drop_missing(w, f"missing {weights}")
    if off is not None:
        rows.drop_missing(off, f"missing {offset}")
    keep = rows.keep
    neg = keep & (y < 0)
    if neg.any():
        i = int(np.flatnonzero(neg)[0])
        raise InputError(format_message(
            f"ppml: the outcome {outcome!r} must be non-negative ({int(neg.sum())} negative "
            "value(s))", where=f"row {data.index[i]!r}", seen=float(y[i]),
            fix="PPML models a non-negative mean (trade flows, counts); check the sign or "
                "the column"))
    if w is not None:
        negw = keep & (w < 0)
        if negw.any():
            i = int(np.flatnonzero(negw)[0])
            raise InputError(format_message(
                f"ppml: weights {weights!r} must be non-negative", where=f"row {data.index[i]!r}",
                seen=float(w[i]), fix="pass non-negative weights"))
        rows.drop(w == 0, f"zero weight ({weights})")
    rows.warn_missing("ppml", stacklevel=2)
    rows.require_rows("ppml", fix="check the columns passed")
    dropped = rows.dropped

    # the caller's frame is only read (no copy when no row is dropped)
    all_rows = bool(keep.all())
    frame = data if all_rows else \
        data.loc[keep, list(dict.fromkeys([*fe_cols, *clus]))].reset_index(drop=True)
    if not all_rows:
        y, x = y[keep], x[keep]
        w = None if w is None else w[keep]
        off = None if off is None else off[keep]

    methods = _separation_methods(separation)
    codes = [_narrow(fe_codes(frame, f)) for f in fixed_effects]
    check = find_separation(y, x, codes, singletons=drop_singletons, methods=methods)
    sub = check.keep
    n_single = check.counts["singleton"]
    labels = {"fe": "separated (fixed effect with all-zero outcomes)",
              "simplex": "separated (simplex check)", "relu": "separated (ReLU check)",
              "lp": "separated (linear program, ReLU did not finish)"}
    names = {"fe": "fixed-effect", "simplex": "simplex", "relu": "ReLU",
             "lp": "linear-program"}
    relu_info: dict[str, Any] = {}
    if check.relu is not None:
        relu_info = {"relu_iterations": check.relu.iterations,
                     "relu_converged": check.relu.converged, "relu_stop": check.relu.stop,
                     "relu_rounds": check.relu_rounds}
        if not check.relu.converged:
            warnings.warn(format_message(
                "ppml: the ReLU separation check did not finish; no observation was dropped "
                "by it, so separation by combinations of fixed effects and regressors may "
                "remain", where=f"iteration {check.relu.iterations}", seen=check.relu.stop,
                fix="check the estimates for coefficients drifting to +-infinity"),
                ConvergenceWarning, stacklevel=2)
    if not check.simplex_ok:
        warnings.warn("ppml: the simplex separation check failed (linear program not "
                      "solved); no observation was dropped by it.", ConvergenceWarning,
                      stacklevel=2)
    if n_single:
        dropped["singleton"] = n_single
    n_sep = 0
    for key, label in labels.items():
        if check.counts[key]:
            dropped[label] = check.counts[key]
            n_sep += check.counts[key]
    if n_sep:
        detail = ", ".join(f"{check.counts[k]} by the {names[k]} check"
                           for k in labels if check.counts[k])
        warnings.warn(
            f"ppml: dropped {n_sep:,} separated observation(s) ({detail}; zero outcome "
            "perfectly predicted, their conditional mean is 0 at the estimate). "
            f"{COUNTS_POINTER}", DroppedRowsWarning, stacklevel=2)
    if not sub.any() or not (y[sub] > 0).any():
        raise EstimationError(format_message(
            "ppml: no observation with a positive outcome is left after removing separated "
            "and singleton observations", seen=dropped,
            fix="check the outcome column and the fixed effects"))
    fe_names = {_fe_name(f) for f in fixed_effects}
    clus_values = {c: frame[c].to_numpy() for c in clus if c not in fe_names}
    del frame
    if not sub.all():
        y, x = y[sub], x[sub]
        w = None if w is None else w[sub]
        off = None if off is None else off[sub]
        clus_values = {c: v[sub] for c, v in clus_values.items()}
    n = len(y)
    # all sets in one (K, n) array shared with the projector (no second copy)
    code_array = np.empty((len(codes), n), dtype=np.result_type(np.int32, *codes))
    for j in range(len(codes)):
        _recode(codes[j], sub, out=code_array[j])
        codes[j] = code_array[j]

    # shuffled rows and a set of many levels (pairs): the fit reads its rows sorted by
    # that set (fit_order); what it gives back row by row (the fitted means) is put back
    # in the caller's order below; the variance's sources stay in the fit's order, with
    # fit_rows their positions in the caller's frame
    order = fit_order(code_array) if codes else None
    perm = None if order is None else order[0]
    if order is not None:
        xo = np.empty((x.shape[1], n))  # x in the fit's order: (n, k), columns contiguous
        extra = [a for a in (w, off) if a is not None]
        cols = [np.empty(n), *xo, *(np.empty(n) for _ in extra)]
        code_array = permute_rows(order, code_array, [y, *x.T, *extra], cols)
        codes = list(code_array)
        y, x = cols[0], xo.T
        w = None if w is None else cols[1 + len(xo)]
        off = None if off is None else cols[-1]
        clus_values = {c: v[perm] for c, v in clus_values.items()}
        del order, cols, xo, extra
    fe = WeightedFE(code_array) if codes else None
    fit = irls_poisson(y, x, fe, weights=w, offset=off, tol=tol, maxiter=maxiter,
                       fe_tol=fe_tol)
    solved = fit.converged and fit.demean_converged
    if not solved:
        what = (f"ppml did not converge in {maxiter} IRLS iterations" if not fit.converged
                else "ppml: the fixed-effect projections did not converge "
                     f"({fit.demean_sweeps} sweeps)")
        warnings.warn(format_message(
            what + "; the estimates are NaN (the last iterate is in "
            "diagnostics['last_iterate'])",
            where="criterion |dev - dev_old| / (0.1 + |dev|)",
            seen=f"{fit.crit:.3g} (tol={tol:g})",
            fix="raise maxiter=, loosen tol=, or check for separation / extreme regressors"),
            ConvergenceWarning, stacklevel=2)

    # ---- diagnostics (before the variance: the ordered fit's outcome buffer is then free)
    # log-likelihoods of the fit and of the constant-only model, in two n-row buffers
    # (the same operations as the expressions w (y log mu - mu - log y!), without their
    # eight temporaries: each a fresh mapping above glibc's 32 MB mmap ceiling)
    t, lgy = np.empty(n), np.empty(n)
    special.gammaln(np.add(y, 1, out=lgy), out=lgy)              # log y!
    np.copyto(t, fit.mu)
    np.copyto(t, 1.0, where=~(y > 0))
    np.log(t, out=t)
    t *= y
    t -= fit.mu
    t -= lgy
    if w is not None:
        t *= w
    ll = float(np.sum(t))
    wts = t if w is None else w
    if w is None:
        t.fill(1.0)
    ybar = float(wts @ y / wts.sum())
    np.multiply(y, np.log(ybar), out=t)
    t -= ybar
    t -= lgy
    if w is not None:
        t *= w
    ll0 = float(np.sum(t))
    del t, lgy, wts
    n_zero = int((y == 0).sum())
    # positions in the caller's frame, made after the fit (one n-row int64 less held
    # through the IRLS, whose buffers set the call's peak)
    rows = np.flatnonzero(keep)
    if not sub.all():
        rows = rows[sub]
    fitted, fit_rows = fit.mu, rows
    if perm is not None:
        # the fitted means in the caller's order, written into the fit's own copy of the
        # outcome (not needed any more); the variance source keeps the fit's order, its
        # rows as positions in the caller's frame (int32 when they fit: the result holds
        # both)
        fitted = y
        fitted[perm] = fit.mu
        fit_rows = rows.astype(np.int32 if n_input < 2**31 else np.intp)[perm]
        del perm
    del y

    # ---- variance (the same object serves result.with_vcov)
    if cluster_by_fe:  # fixest: cluster = first fixed-effect set (an interaction counts)
        clus = (_fe_name(fixed_effects[0]),)
    stored = {_fe_name(f): c for f, c in zip(fixed_effects, codes, strict=True)}
    stored.update({c: v for c, v in clus_values.items() if c not in stored})
    source = SandwichVcov(
        "ppml", bread=fit.bread, kept=np.asarray(fit.kept), n=n, fe_codes=tuple(codes),
        rows=fit_rows, n_input=n_input, columns=stored, scores=fit.scores, glm=True,
        adj=ssc_adj, finish=partial(_glm_finish, n=n, adj=ssc_adj))
    cl_codes = [source._codes(c, None) for c in clus] if vcov == "cluster" else []
    if codes:
        k_fe, k_nested = fe_dof(codes, cl_codes, n_obs=n, n_slopes=int(fit.kept.sum()))
    else:
        k_fe, k_nested = 0, 0
    k_total = int(fit.kept.sum()) + k_fe
    if n <= k_total:
        raise EstimationError(format_message(
            "ppml: as many parameters as observations", seen={"n": n, "K": k_total},
            fix="use fewer fixed effects or more data"))
    v, vspec = source.vcov(vcov, cluster=clus if vcov == "cluster" else ())

    collinear = [c for c, kp in zip(regressors, fit.kept, strict=True) if not kp]
    notes = []
    if collinear:
        notes.append(f"collinear with the fixed effects or other regressors: {collinear}")
    if n_single:
        notes.append(f"{n_single} singleton observation(s) dropped")
    spec = {"outcome": outcome, "regressors": tuple(regressors),
            "fixed_effects": tuple(_fe_name(f) for f in fixed_effects), "cluster": clus,
            "vcov": vcov, "weights": weights, "offset": offset, "tol": tol,
            "maxiter": maxiter, "separation": separation, "drop_singletons": drop_singletons,
            "ssc_adj": ssc_adj, "fe_tol": fe_tol, "alpha": alpha}
    diag = {"n_input_rows": n_input, "n_used_rows": n, "dropped_rows": dropped,
            "iterations": fit.iterations, "converged": fit.converged, "crit": fit.crit,
            "deviance": fit.deviance, "log_likelihood": ll,
            "pseudo_r2": 1 - ll / ll0 if ll0 != 0 else float("nan"),
            "n_fe_levels": {_fe_name(f): int(c.max()) + 1
                            for f, c in zip(fixed_effects, codes, strict=True)},
            "k_fe": k_fe, "k_fe_nested_in_cluster": k_nested, "collinear": collinear,
            "demean_sweeps": fit.demean_sweeps, "demean_converged": fit.demean_converged,
            "n_zero_outcome": n_zero, **relu_info, "notes": notes}
    coef = fit.coef
    if not solved:  # a solve that did not converge is not an estimate
        diag["last_iterate"] = dict(zip(regressors, fit.coef.tolist(), strict=True))
        coef = np.full_like(fit.coef, np.nan)
        v = np.full_like(v, np.nan)
    return make_result("ppml", pd.Series(coef, index=regressors), v, vspec, n,
                       spec=spec, diagnostics=diag, cls=PPMLResult,
                       nan_reason=("collinear with the fixed effects or other regressors"
                                   if solved else "the IRLS solve did not converge"),
                       extras={"rows_used": rows, "fitted": fitted}, vcov_source=source)
