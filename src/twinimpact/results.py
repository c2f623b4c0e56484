"""The results protocol shared by every estimator.

Every estimator in twinimpact returns an :class:`EstimationResult` (or a subclass). The
object is immutable: numbers are stored as read-only arrays and every property returns a
fresh labelled pandas object, so a caller cannot change a result by editing what it got.

What a result holds
-------------------
``params``        labelled estimates (pandas Series, index = term names)
``vcov``          the full variance-covariance matrix (labelled DataFrame)
``vcov_spec``     how ``vcov`` was computed: kind, cluster variables and counts,
                  small-sample factors, degrees of freedom used for p-values/CIs
``nobs``          observations used
``spec``          every argument the estimator was called with (data excluded)
``diagnostics``   dropped rows and why, convergence, pre-tests, warnings, ...
``term_info``     per term: ``cohort``, ``time`` and/or ``rel_time`` where they apply

and one tidy frame, :meth:`EstimationResult.to_frame`, with the columns
``estimator, term, [cohort, time, rel_time,] estimate, std_error, statistic, p_value,
ci_lower, ci_upper, ci_kind``. Tables and plots consume only that frame.

Inference is part of reporting: :meth:`EstimationResult.conf_int` and ``to_frame`` take
``alpha``; subclasses override :meth:`EstimationResult.critical_value` for uniform bands.
:meth:`EstimationResult.with_vcov` returns a *new* result with another variance where the
stored scores / influence function allow (fixest ``summary(est, vcov=...)``).

Typed fields every result carries
---------------------------------
``pretrend_test``   a :class:`PretrendTest` on every event-study result (TWFE event study,
                    Callaway-Sant'Anna ATT(g,t) and dynamic aggregation, Sun-Abraham,
                    imputation with ``pretrends``, did2s event study, Poisson event study);
                    ``None`` otherwise. One type whatever the estimator.
``att_definition``  an :class:`ATTDefinition` saying what the ``ATT`` row averages (one of
                    :data:`ATT_WEIGHTINGS`); ``None`` when the result has no ``ATT`` row.
``vcov_spec``       the :class:`VcovSpec`; the interval label ``ci_kind`` is derived from it
                    (never free text).

Diagnostics keys
----------------
``diagnostics`` is a read-only mapping. Every estimator result has these keys
(:data:`DIAGNOSTIC_KEYS`), with these meanings:

``n_input_rows``  rows of the caller's frame;
``n_used_rows``   rows used in the estimation (equals ``nobs``);
``dropped_rows``  mapping reason -> number of rows dropped for that reason (empty when none);
``notes``         tuple of plain-language notes (what was adjusted and why).

Estimators add their own keys beside these (convergence, fixed-effect counts, ...);
pre-trend tests are never in ``diagnostics`` but in ``pretrend_test``.

Default variance (one rule for every estimator)
-----------------------------------------------
* Panel estimators -- those called with ``unit`` and ``time`` (``twfe``, ``event_study``,
  ``sun_abraham``, ``callaway_santanna``, ``imputation``, ``did2s``,
  ``poisson_event_study``) -- cluster by ``unit`` unless ``cluster=`` says otherwise:
  CRV1 with fixest's small-sample factors and a t(G-1) reference for the linear
  regressions (fixest ``feols``/``sunab``, R ``did2s``); the unit-level influence function
  with a normal reference for Callaway-Sant'Anna (R ``did``) and imputation (BJS 2024); CRV1
  with a normal reference for the Poisson GLM (fixest ``fepois``).
* ``synthetic_did`` resamples or permutes units (``se="placebo"|"jackknife"|"bootstrap"``,
  R ``synthdid``), so its variance is also at the unit level, normal reference.
* ``ppml`` has no panel unit: iid without ``cluster=``, as fixest >= 0.13 ("the new default
  VCOV is iid for all estimations") and pyfixest; ``vcov="cluster"`` without a cluster
  column clusters by the first fixed-effect set.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from .errors import (
    FewClustersWarning,
    InputError,
    NotComputableWarning,
    SpecificationError,
    check_alpha,
    format_message,
)


def _special():
    """``scipy.special``, imported on first use: the distribution functions below are the
    ones ``scipy.stats`` wraps (``norm.sf(x) = ndtr(-x)``, ``t.sf(x, df) = stdtr(df, -x)``,
    ``t.ppf = stdtrit``, ``f.sf = fdtrc``, ``chi2.sf = chdtrc``: the same numbers, NaN
    for invalid degrees of freedom as there), without importing ``scipy.stats`` (61 MB of
    resident memory and ~0.5 s in every process that builds a result)."""
    from scipy import special

    return special

__all__ = [
    "ATT_WEIGHTINGS",
    "DIAGNOSTIC_KEYS",
    "FEW_CLUSTERS",
    "HONEST_COLUMNS",
    "TIDY_COLUMNS",
    "ATTDefinition",
    "EstimationResult",
    "FactorSVD",
    "PretrendTest",
    "VcovSpec",
    "check_cluster_count",
    "event_pretrend_test",
    "factor_svd",
    "honest_tidy",
    "make_result",
    "result_label",
    "summarize",
    "tidy",
    "wald_pretrend_test",
]

#: Columns of the tidy frame, in order. ``cohort``, ``time`` and ``rel_time`` appear only
#: where the estimator defines them for its terms.
TIDY_COLUMNS = (
    "estimator", "term", "cohort", "time", "rel_time", "estimate", "std_error",
    "statistic", "p_value", "ci_lower", "ci_upper", "ci_kind",
)
KEY_COLUMNS = ("cohort", "time", "rel_time")


def _freeze(obj: Any) -> Any:
    """Read-only view of nested mappings (lists become tuples)."""
    if isinstance(obj, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return tuple(_freeze(v) for v in obj)
    if isinstance(obj, np.ndarray):
        arr = obj.copy()
        arr.setflags(write=False)
        return arr
    return obj


#: Keys every estimator result has in ``diagnostics`` (see the module docstring).
DIAGNOSTIC_KEYS = ("n_input_rows", "n_used_rows", "dropped_rows", "notes")

#: What the ``ATT`` row of a result can average. Keys are the values of
#: :attr:`ATTDefinition.weighting`; values say it in one sentence.
ATT_WEIGHTINGS: Mapping[str, str] = MappingProxyType({
    "regression_coefficient": (
        "the coefficient on the treatment indicator of one regression (an implicitly "
        "variance-weighted average of the cell effects, Goodman-Bacon 2021)"),
    "equal_weighted_post_periods": (
        "the mean of the post-treatment event-time effects (rel_time >= 0), each event time "
        "weighted equally"),
    "cell_size_weighted": (
        "the post-treatment cohort x period cell effects weighted by their number of "
        "observations"),
    "treated_observation_weighted": (
        "the mean of the effects on the treated observations, each treated unit-period "
        "counted once"),
    "cohort_size_weighted": (
        "the post-treatment ATT(g,t) weighted by cohort size (R did aggte 'simple', and the "
        "cohort effects weighted by cohort size for 'group')"),
    "equal_weighted_calendar_periods": (
        "the mean of the calendar-period effects, each period weighted equally"),
    "treated_units_times_post_periods": (
        "per adoption cohort one synthetic DiD effect, the cohorts weighted by treated units "
        "x post-treatment periods (Stata sdid)"),
    "average_total_effect": (
        "the effects of all horizons per unit of treatment change, weighted by the "
        "switchers' treatment changes (de Chaisemartin & D'Haultfoeuille 2024)"),
    "linear_combination": "the user-supplied linear combination of coefficients",
})


@dataclass(frozen=True)
class ATTDefinition:
    """What the ``ATT`` row of a result averages.

    Attributes
    ----------
    weighting : str
        One of :data:`ATT_WEIGHTINGS` (e.g. ``"equal_weighted_post_periods"``).
    detail : str
        Estimator-specific precision (scale, the reference implementation's name for it).
    """

    weighting: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.weighting not in ATT_WEIGHTINGS:
            raise SpecificationError(
                f"internal: ATT weighting must be one of {', '.join(ATT_WEIGHTINGS)}; "
                f"got {self.weighting!r}.")

    @property
    def description(self) -> str:
        """One sentence: the general rule, then the detail."""
        text = ATT_WEIGHTINGS[self.weighting]
        return f"{text}; {self.detail}" if self.detail else text

    def __str__(self) -> str:
        return self.description


PRETREND_KINDS = ("Wald chi2", "F")


@dataclass(frozen=True)
class PretrendTest:
    """Joint test that the pre-treatment coefficients are all zero -- one type for every
    event-study result.

    Attributes
    ----------
    statistic : float
        ``W = b' V^{-1} b`` for ``kind="Wald chi2"``; ``W / df`` for ``kind="F"``. NaN when
        not computable (``note`` says why).
    df : int
        Numerator degrees of freedom (number of restrictions tested).
    p_value : float
        From chi2(df), or F(df, df_denominator).
    kind : {"Wald chi2", "F"}
        The reference distribution.
    n_coefficients : int
        Pre-treatment coefficients entering the test.
    df_denominator : float or None
        Denominator degrees of freedom of an F test (the t degrees of freedom of the
        result's vcov, e.g. G - 1 with clusters); None for chi2.
    rank : int or None
        Rank of the covariance of the tested coefficients (equals ``df`` for a regular
        test; smaller when it is singular). Left for tests restricted to the identified
        directions (pseudo-inverse Wald).
    terms : tuple of str
        The tested terms.
    note : str
        What was tested, or why the statistic is NaN.
    extension : mapping or None
        When the regular statistic is undefined (singular covariance): a test that is not
        in the reference implementation, e.g. the Wald test on the identified directions
        (pseudo-inverse, ``df = rank``; keys ``statistic, df, p_value, rank, kind, label``)
        and a Bonferroni max-|t| test (``bonferroni``).
    """

    statistic: float
    df: int
    p_value: float
    kind: str
    n_coefficients: int
    df_denominator: float | None = None
    rank: int | None = None
    terms: tuple[str, ...] = ()
    note: str = ""
    extension: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in PRETREND_KINDS:
            raise SpecificationError(
                f"internal: pre-trend test kind must be one of {PRETREND_KINDS}; "
                f"got {self.kind!r}.")
        object.__setattr__(self, "statistic", float(self.statistic))
        object.__setattr__(self, "p_value", float(self.p_value))
        object.__setattr__(self, "df", int(self.df))
        object.__setattr__(self, "n_coefficients", int(self.n_coefficients))
        object.__setattr__(self, "terms", tuple(str(t) for t in self.terms))
        if self.df_denominator is not None:
            object.__setattr__(self, "df_denominator", float(self.df_denominator))

    @property
    def computed(self) -> bool:
        """Whether the statistic is a number."""
        return math.isfinite(self.statistic)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (e.g. for JSON)."""
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """One line, e.g. ``Pre-trend test: F(3, 39) = 0.512, p = 0.676 (3 coefficients)``."""
        if not self.computed:
            return (f"Pre-trend test ({self.kind}): not computed"
                    + (f" -- {self.note}" if self.note else ""))
        if self.kind == "F":
            dist = f"F({self.df}, {self.df_denominator:g})"
        else:
            dist = f"chi2({self.df})"
        return (f"Pre-trend test: {dist} = {self.statistic:.4g}, p = {self.p_value:.4g} "
                f"({self.n_coefficients} coefficient{'s' if self.n_coefficients != 1 else ''})")

    __str__ = summary


#: a variance (or eigenvalue) at or below ``ROUNDING_MARGIN x q x eps`` of the largest is
#: rounding of zero (see :func:`wald_pretrend_test`)
ROUNDING_MARGIN = 1e3


def rounding_floor(scale: float | None, q: int) -> float:
    """The variance at or below which a variance of a fit whose largest is ``scale`` is
    rounding of zero (``q``: the size of the block judged); 0 without a scale."""
    if scale is None or not np.isfinite(scale) or scale <= 0:
        return 0.0
    return ROUNDING_MARGIN * max(q, 1) * np.finfo(float).eps * float(scale)


def variance_scale(cov: Any) -> float | None:
    """The largest finite variance on ``cov``'s diagonal (the ``scale`` of
    :func:`wald_pretrend_test`), None when there is none."""
    d = np.diag(np.asarray(cov, dtype=float))
    d = d[np.isfinite(d)]
    return float(d.max()) if len(d) else None


@dataclass(frozen=True)
class FactorSVD:
    """The thin SVD of a factor ``F`` (m, k) of ``V = F'F``, without the left vectors.

    Attributes
    ----------
    values : ndarray, shape (min(m, k),)
        Singular values of ``F``, descending; ``values**2`` are the eigenvalues of ``V``.
    vt : ndarray, shape (min(m, k), k)
        Right singular vectors of ``F`` as rows: the eigenvectors of ``V``.
    """

    values: np.ndarray
    vt: np.ndarray


def factor_svd(factor: np.ndarray) -> FactorSVD:
    """``F``'s singular values and right vectors (:class:`FactorSVD`), made once for every
    user of the decomposition (the rank of a singular pre-test covariance in
    :func:`wald_pretrend_test` and :func:`~twinimpact.inference.wald.wald_identified` on the
    same ``F``; it lives here, on the base floor, so both can read it).

    The numbers are those of ``np.linalg.svd(F, full_matrices=False)``. On a tall ``F``
    (``m >= int(11 k / 6)``, LAPACK dgesdd's own crossover ``MNTHR``) dgesdd first reduces
    ``F`` to the triangular ``R`` of its QR decomposition and decomposes ``R``; that is done
    here explicitly, which skips the m x k left vectors nobody reads (``Q U_R``: 0.29 s
    instead of 0.44 s for 2000 x 980) -- same operations on the same ``R``, so the same values and
    vectors (bit for bit with numpy 2 / OpenBLAS; tests compare to 1e-12). Accuracy is that
    of the SVD of ``F``: ``V``'s condition number is never squared.
    """
    f = np.asarray(factor, dtype=float)
    m, k = f.shape
    if k and m >= int(k * 11 / 6):
        f = np.linalg.qr(f, mode="r")
    _, sv, vt = np.linalg.svd(f, full_matrices=False)
    return FactorSVD(sv, vt)


def wald_pretrend_test(terms: Sequence[str], coef: np.ndarray, cov: np.ndarray, *,
                       df_denominator: float | None = None, what: str = "",
                       estimator: str = "", warn: bool = True,
                       factor: np.ndarray | FactorSVD
                       | Callable[[], np.ndarray | FactorSVD] | None = None,
                       scale: float | None = None) -> PretrendTest:
    """Joint Wald test that ``coef`` (the pre-treatment coefficients) are zero.

    ``W = b' V^{-1} b``; with ``df_denominator`` the F form ``W / q`` against
    ``F(q, df_denominator)`` (fixest ``wald()``), otherwise chi2(q) (R did's pre-test).
    NaN (with a :class:`~twinimpact.errors.NotComputableWarning` when ``warn``) if an
    input is NaN, ``V`` is singular (reciprocal 1-norm condition number <= ``1000 q`` x
    machine epsilon: R ``did``'s rule, eps, widened to numpy ``matrix_rank``'s size
    factor and a margin of three digits above rounding) or ``b' V^-1 b`` is negative; a
    NaN test without warning when there is nothing to test.
    ``factor``: an (m, q) ``F`` with ``V = F'F`` (or a function returning it, called only
    when ``V`` is singular); the rank of a singular ``V`` is then counted from ``F``'s
    singular values by the same rule (``s_i^2 > max s^2 * 1000 q * eps``) -- an SVD of
    m x q instead of q x q. ``factor`` may also be (or return) ``F``'s
    :func:`factor_svd`: its values are read, so a caller that
    needs the decomposition again (the identified-directions Wald test) makes it once.
    ``scale``: the largest variance of the fit the coefficients come from (see
    :func:`variance_scale`); ``V`` is also singular when one of its variances is at or
    below ``1000 q`` x eps of it -- a coefficient fixed by construction, whose variance is
    rounding of zero (6e-32 beside 1e-2) that the relative rule cannot see in a 1 x 1
    ``V``; its rank then counts the eigenvalues above that bound.
    """
    terms = tuple(str(t) for t in terms)
    b = np.asarray(coef, dtype=float).reshape(-1)
    v = np.asarray(cov, dtype=float).reshape(len(b), len(b))
    q = len(b)
    kind = "F" if df_denominator is not None else "Wald chi2"
    base = dict(df=q, kind=kind, n_coefficients=q, df_denominator=df_denominator,
                terms=terms)
    label = f"{estimator}: " if estimator else ""
    if q == 0:
        return PretrendTest(np.nan, p_value=np.nan, rank=0,
                            note="no pre-treatment coefficients to test", **base)
    if not (np.isfinite(b).all() and np.isfinite(v).all()):
        if warn:
            warnings.warn(f"{label}pre-trend test not computed: some pre-treatment "
                          "estimates or variances are NaN.", NotComputableWarning,
                          stacklevel=3)
        return PretrendTest(np.nan, p_value=np.nan,
                            note="not computed: NaN pre-treatment estimates or variances",
                            **base)
    # singular: R did's rule (1-norm rcond <= eps), widened to q * eps -- numpy's
    # matrix_rank tolerance (largest singular value x size x eps) read on the condition
    # number -- and by 1000: a V of rank 1 in rounding (eigenvalues 1.7e-18 and 6.1e-3,
    # rcond just above eps) gave F = 9.6e15, or -9.6e15 under another row order, and
    # the zero eigenvalue of such a V comes out anywhere from 1 to ~10 q x eps of the
    # largest (7.7e-18 on another CPU: rcond 1.3e-15, above q eps): the rule needs a
    # margin above that band, and 1000 leaves a V with rcond 1e-12 -- a statistic still
    # good to about three digits -- computable (inference.wald's rank rule, 1e-10, is
    # looser still, so a V singular here has a rank below q there)
    # ... and a variance at rounding level of the fit's largest (``scale``): a coefficient
    # fixed by construction (did2s: a period whose only rows the first stage fits
    # exactly; its "variance" 6e-32 beside 1e-2 gave F = 0.998 under one row order and
    # 0.852 under another)
    rel = ROUNDING_MARGIN * np.finfo(float).eps
    floor = rounding_floor(scale, q)
    if (1.0 / np.linalg.cond(v, 1) <= q * rel
            or (floor > 0 and bool((np.diag(v) <= floor).any()))):
        if factor is not None:  # the singular values of V are those of F, squared
            f = factor() if callable(factor) else factor
            s2 = (f.values if isinstance(f, FactorSVD) else
                  np.linalg.svd(np.asarray(f, dtype=float), compute_uv=False)) ** 2
            rank = int(np.count_nonzero(s2 > max(s2.max(initial=0.0) * q * rel, floor)))
        else:  # only here: an SVD is costly for big V
            s = np.linalg.svd(v, compute_uv=False)
            rank = int(np.count_nonzero(s > max(s.max(initial=0.0) * q * rel, floor)))
        if warn:
            warnings.warn(f"{label}pre-trend Wald statistic not computed: the covariance of "
                          f"the {q} pre-treatment coefficients has rank {rank} (singular).",
                          NotComputableWarning, stacklevel=3)
        return PretrendTest(np.nan, p_value=np.nan, rank=rank,
                            note="not computed: singular covariance of the pre-treatment "
                                 "coefficients", **base)
    w = float(b @ np.linalg.solve(v, b))
    if w < 0:  # V is a covariance (positive semi-definite): only rounding makes this
        if warn:
            warnings.warn(f"{label}pre-trend Wald statistic not computed: the covariance "
                          f"of the {q} pre-treatment coefficients is not positive definite "
                          "in floating point (b' V^-1 b < 0).", NotComputableWarning,
                          stacklevel=3)
        return PretrendTest(np.nan, p_value=np.nan,
                            note="not computed: covariance of the pre-treatment "
                                 "coefficients not positive definite in floating point",
                            **base)
    if df_denominator is not None:
        stat = w / q
        p = float(_special().fdtrc(q, df_denominator, stat)) if df_denominator > 0 else np.nan
    else:
        stat, p = w, float(_special().chdtrc(q, w))
    note = what or "Wald test that all pre-treatment coefficients are zero"
    return PretrendTest(stat, p_value=p, rank=q, note=note, **base)


@dataclass(frozen=True)
class VcovSpec:
    """How a variance-covariance matrix was computed.

    Attributes
    ----------
    kind : str
        ``"iid"``, ``"hetero"`` (HC1), ``"cluster"`` (CRV1), ``"twoway_cluster"``,
        ``"influence_function"``, ``"bootstrap"``, ``"placebo"``, ``"jackknife"``,
        ``"imputation_conservative"``, ``"two_stage"``, ``"none"``.
    cluster : tuple of str
        Cluster variable(s), empty when not clustered.
    n_clusters : tuple of int
        Number of clusters per cluster variable.
    small_sample : mapping
        The multiplicative small-sample factors applied, by name (e.g.
        ``{"cluster_adj": G/(G-1), "adj": (n-1)/(n-K)}``).
    df : float or None
        Degrees of freedom of the t distribution used for p-values and CIs; ``None``
        means the standard normal.
    description : str
        One line a reader can quote in a methods section.
    interval : {"pointwise", "uniform"}
        ``"uniform"``: intervals are simultaneous (sup-t) bands from bootstrap draws
        (R did ``cband=TRUE``); the critical value comes from the result.
    """

    kind: str
    cluster: tuple[str, ...] = ()
    n_clusters: tuple[int, ...] = ()
    small_sample: Mapping[str, float] = field(default_factory=dict)
    df: float | None = None
    description: str = ""
    interval: str = "pointwise"

    def __post_init__(self) -> None:
        if self.interval not in ("pointwise", "uniform"):
            raise SpecificationError(f"internal: VcovSpec.interval must be 'pointwise' or "
                                     f"'uniform'; got {self.interval!r}.")
        object.__setattr__(self, "cluster", tuple(self.cluster))
        object.__setattr__(self, "n_clusters", tuple(int(g) for g in self.n_clusters))
        object.__setattr__(self, "small_sample", MappingProxyType(dict(self.small_sample)))

    @property
    def ci_kind(self) -> str:
        """Label of the intervals, derived from the spec: ``"normal"``, ``"t(49)"`` or
        ``"uniform (multiplier bootstrap sup-t)"``."""
        if self.interval == "uniform":
            return "uniform (multiplier bootstrap sup-t)"
        if self.df is None:
            return "normal"
        return f"t({self.df:g})"

    def label(self) -> str:
        """Short label for table footers, e.g. ``"cluster (unit: 40)"``."""
        k = self.kind
        if self.cluster:
            k += " (" + ", ".join(f"{c}: {g}" for c, g in
                                  zip(self.cluster, self.n_clusters, strict=False)) + ")"
        return k


@dataclass(frozen=True, eq=False, repr=False)
class EstimationResult:
    """Immutable estimation result (see the module docstring for the protocol).

    Build one with :func:`make_result`; estimators add fields by subclassing.
    """

    estimator: str
    terms: tuple[str, ...]
    coef: np.ndarray
    cov: np.ndarray
    vcov_spec: VcovSpec
    nobs: int
    spec: Mapping[str, Any] = field(default_factory=dict)
    diagnostics: Mapping[str, Any] = field(default_factory=dict)
    term_info: pd.DataFrame | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)
    pretrend_test: PretrendTest | None = None
    att_definition: ATTDefinition | None = None
    vcov_source: Any = field(default=None, repr=False)

    # ------------------------------------------------------------------ construction
    def __post_init__(self) -> None:
        if self.pretrend_test is not None and not isinstance(self.pretrend_test,
                                                             PretrendTest):
            raise SpecificationError(f"internal: pretrend_test must be a PretrendTest; got "
                                     f"{type(self.pretrend_test).__name__}.")
        if self.att_definition is not None and not isinstance(self.att_definition,
                                                              ATTDefinition):
            raise SpecificationError(f"internal: att_definition must be an ATTDefinition; "
                                     f"got {type(self.att_definition).__name__}.")
        for f in dataclasses.fields(self):  # every array a result holds is read-only
            val = getattr(self, f.name)
            if isinstance(val, np.ndarray) and val.flags.writeable:
                view = val.view()
                view.setflags(write=False)
                object.__setattr__(self, f.name, view)
        terms = tuple(str(t) for t in self.terms)
        coef = np.array(self.coef, dtype=float).reshape(-1)
        cov = np.array(self.cov, dtype=float)
        k = len(terms)
        if coef.shape != (k,) or cov.shape != (k, k):
            raise SpecificationError(
                f"internal: result has {k} terms but coef shape {coef.shape} and "
                f"vcov shape {cov.shape}; expected ({k},) and ({k}, {k})."
            )
        if len(set(terms)) != k:
            raise SpecificationError(f"internal: duplicate term names in result: {terms}")
        coef.setflags(write=False)
        cov.setflags(write=False)
        object.__setattr__(self, "terms", terms)
        object.__setattr__(self, "coef", coef)
        object.__setattr__(self, "cov", cov)
        object.__setattr__(self, "spec", _freeze(dict(self.spec)))
        object.__setattr__(self, "diagnostics", _freeze(dict(self.diagnostics)))
        object.__setattr__(self, "extras", MappingProxyType(dict(self.extras)))
        if self.term_info is not None:
            info = self.term_info.copy()
            if tuple(info.index) != terms:  # (labels already the terms, in order: as is)
                info.index = info.index.map(str)
                info = info.reindex(list(terms))
            object.__setattr__(self, "term_info", info)

    def replace(self, **changes: Any) -> EstimationResult:
        """A new result with some fields changed (the original is untouched)."""
        return dataclasses.replace(self, **changes)

    def with_vcov(self, vcov: str, *, cluster: str | Sequence[str] | None = None,
                  data: pd.DataFrame | None = None) -> EstimationResult:
        """A new result with another variance; estimates unchanged (fixest
        ``summary(est, vcov = ...)``, R did's re-clustering from the influence function).

        Parameters
        ----------
        vcov : {"iid", "hetero", "cluster"}
            ``"iid"`` and ``"hetero"`` (HC1) for regression estimators (OLS-type and
            PPML); ``"cluster"`` (CRV1 or the clustered influence function) for every
            estimator that stores its scores or influence function.
        cluster : str or sequence of str, optional
            Cluster column(s) for ``vcov="cluster"``; columns other than those of the fit
            need ``data``.
        data : DataFrame, optional
            The frame the result was fitted on (same rows, same order), to take new
            cluster columns from.

        Raises
        ------
        SpecificationError
            When this result does not store what the new variance needs (the message
            says why), or for an unknown ``vcov``.

        Examples
        --------
        >>> import twinimpact as ti
        >>> from twinimpact.estimators.twfe import _example_panel
        >>> d = _example_panel()
        >>> d["region"] = d["id"] // 6
        >>> r = ti.callaway_santanna(d, outcome="y", unit="id", time="year", cohort="g")
        >>> r2 = r.with_vcov("cluster", cluster="region", data=d)
        >>> r2.vcov_spec.cluster, r2.vcov_spec.n_clusters
        (('region',), (10,))
        """
        src = self.vcov_source
        if src is None or isinstance(src, str):
            why = src if isinstance(src, str) else (
                "it does not store per-observation scores or an influence function")
            raise SpecificationError(format_message(
                f"with_vcov is not available for this result ({self.estimator})",
                where=f"{type(self).__name__}.with_vcov", seen=vcov,
                fix=f"re-estimate with the variance you want ({why})"))
        clus = (cluster,) if isinstance(cluster, str) else tuple(cluster or ())
        cov, vspec = src.vcov(vcov, cluster=clus, data=data)
        cov = np.asarray(cov, dtype=float)
        warn_nan(self.terms, self.coef, cov, f"variance {vcov!r} not computable",
                 self.estimator, vspec.description
                 if vspec.small_sample.get("df_resid", 1) <= 0 else None)
        cov, rounded, zero = rounding_variances(
            self.terms, self.coef, cov, self.estimator,
            effect_terms(self.terms, self.term_info))
        # the few-clusters flag follows the new variance, as a refit would set it; so
        # does the note on variances that are rounding of zero
        diag = {k: v for k, v in self.diagnostics.items()
                if k not in ("few_clusters", ROUNDING_ZERO_KEY)}
        if zero:
            diag[ROUNDING_ZERO_KEY] = zero
        diag["notes"] = [n for n in diag.get("notes", ()) if "cluster-robust p-values and "
                         "intervals are unreliable" not in n
                         and not n.startswith(_ROUNDING_NOTE)]
        if rounded:
            diag["notes"].append(rounded)
        diag = _cluster_diagnostics(self.estimator, vspec, diag)
        changes: dict[str, Any] = {"cov": cov, "vcov_spec": vspec,
                                   "diagnostics": _freeze(diag)}
        if self.pretrend_test is not None:
            # the same rule as at fit time: F(q, df) when the new vcov has a t reference
            changes["pretrend_test"] = _retest(self.pretrend_test, self.terms, self.coef,
                                               cov, vspec.df, self.estimator)
        return self.replace(**changes)

    # ------------------------------------------------------------------ labelled views
    @property
    def params(self) -> pd.Series:
        """Estimates, labelled by term."""
        return pd.Series(self.coef.copy(), index=pd.Index(self.terms, name="term"),
                         name="estimate")

    @property
    def vcov(self) -> pd.DataFrame:
        """Full variance-covariance matrix, labelled by term on both axes."""
        idx = pd.Index(self.terms, name="term")
        return pd.DataFrame(self.cov.copy(), index=idx, columns=idx.rename(None))

    @property
    def std_errors(self) -> pd.Series:
        """Square roots of the diagonal of ``vcov`` (NaN where not computable)."""
        d = np.diag(self.cov).copy()
        with np.errstate(invalid="ignore"):
            se = np.where(d >= 0, np.sqrt(np.where(d >= 0, d, 0.0)), np.nan)
        return pd.Series(se, index=pd.Index(self.terms, name="term"), name="std_error")

    @property
    def tstats(self) -> pd.Series:
        """Estimate / standard error."""
        with np.errstate(divide="ignore", invalid="ignore"):
            t = self.coef / self.std_errors.to_numpy()
        t = np.where(np.isfinite(t), t, np.nan)
        return pd.Series(t, index=pd.Index(self.terms, name="term"), name="statistic")

    @property
    def pvalues(self) -> pd.Series:
        """Two-sided p-values from the reference distribution in ``vcov_spec``."""
        t = np.abs(self.tstats.to_numpy())
        if self.vcov_spec.df is None:
            p = 2 * _special().ndtr(-t)
        else:
            p = 2 * _special().stdtr(self.vcov_spec.df, -t)
        return pd.Series(p, index=pd.Index(self.terms, name="term"), name="p_value")

    def critical_value(self, alpha: float = 0.05) -> float:
        """Critical value for a two-sided (1 - alpha) pointwise interval."""
        check_alpha(alpha)
        if self.vcov_spec.df is None:
            return float(_special().ndtri(1 - alpha / 2))
        return float(_special().stdtrit(self.vcov_spec.df, 1 - alpha / 2))

    @property
    def ci_kind(self) -> str:
        """Label of the interval kind reported in the tidy frame."""
        return self.vcov_spec.ci_kind

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        """Confidence intervals, columns ``lower`` and ``upper``."""
        crit = self.critical_value(alpha)
        se = self.std_errors.to_numpy()
        return pd.DataFrame(
            {"lower": self.coef - crit * se, "upper": self.coef + crit * se},
            index=pd.Index(self.terms, name="term"),
        )

    # ------------------------------------------------------------------ tidy output
    def to_frame(self, alpha: float = 0.05) -> pd.DataFrame:
        """One tidy row per term in the shared schema (see :data:`TIDY_COLUMNS`)."""
        ci = self.conf_int(alpha)
        out = pd.DataFrame({
            "estimator": self.estimator,
            "term": list(self.terms),
            "estimate": self.coef.copy(),
            "std_error": self.std_errors.to_numpy(),
            "statistic": self.tstats.to_numpy(),
            "p_value": self.pvalues.to_numpy(),
            "ci_lower": ci["lower"].to_numpy(),
            "ci_upper": ci["upper"].to_numpy(),
            "ci_kind": self.ci_kind,
        })
        if self.term_info is not None:
            for col in KEY_COLUMNS:
                if col in self.term_info.columns:
                    out[col] = self.term_info[col].to_numpy()
        cols = [c for c in TIDY_COLUMNS if c in out.columns]
        return out[cols]

    tidy = to_frame

    def summary(self, alpha: float = 0.05) -> str:
        """Plain-text summary: header with the estimator, sample and vcov, then the table."""
        frame = self.to_frame(alpha)
        vs = self.vcov_spec
        lines = [f"twinimpact · {self.estimator}"]
        outcome = self.spec.get("outcome")
        head = f"Observations: {self.nobs:,}"
        if outcome:
            head = f"Outcome: {outcome}   " + head
        lines.append(head)
        vc = f"Standard errors: {vs.kind}"
        if vs.cluster:
            vc += " by " + " & ".join(
                f"{c} ({g} clusters)" for c, g in zip(vs.cluster, vs.n_clusters, strict=False)
            )
        lines.append(vc)
        if vs.description:
            lines.append(f"  {vs.description}")
        level = 100 * (1 - alpha)
        show = frame.rename(columns={"ci_lower": f"[{level:g}% lower", "ci_upper": "upper]"})
        show = show.drop(columns=["estimator", "ci_kind"])
        with pd.option_context("display.width", 120, "display.max_rows", 500,
                               "display.float_format", lambda v: f"{v:.6g}"):
            lines.append(show.to_string(index=False))
        lines.append(f"Intervals: {self.ci_kind}")
        if self.att_definition is not None and "ATT" in self.terms:
            lines.append(f"ATT: {self.att_definition.description}")
        if self.pretrend_test is not None:
            lines.append(self.pretrend_test.summary())
        notes = self.diagnostics.get("notes") if self.diagnostics else None
        if notes:
            lines.extend(f"Note: {n}" for n in notes)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.estimator}: {len(self.terms)} term(s), "
                f"nobs={self.nobs}, vcov={self.vcov_spec.kind}>")

    def __str__(self) -> str:
        return self.summary()


#: the messages of :func:`warn_nan` (for an estimator that warns its own way first)
NAN_WARNING_PATTERN = (r"[^:]*: (\d+ term\(s\) could not be computed and are NaN|the "
                       r"standard error of \d+ estimated term\(s\) is NaN)")


def warn_nan(terms: Sequence[str], coef: np.ndarray, cov: np.ndarray, why: str,
             estimator: str, var_why: str | None = None) -> None:
    """Warn once, naming the terms, when estimates or variances are NaN.

    Terms whose estimate is NaN are reported with ``why``; terms whose estimate is finite
    but whose variance is NaN are reported separately, with ``var_why`` (default ``why``),
    so that a reader is not told that a number they can see "could not be computed"."""
    var = np.diag(cov)
    no_est = [t for t, b in zip(terms, coef, strict=True) if not np.isfinite(b)]
    no_var = [t for t, b, v in zip(terms, coef, var, strict=True)
              if np.isfinite(b) and not np.isfinite(v)]

    def names(ts: list[str]) -> str:
        return f"{', '.join(ts[:8])}{'…' if len(ts) > 8 else ''}"

    if no_est:
        warnings.warn(
            f"{estimator}: {len(no_est)} term(s) could not be computed and are NaN "
            f"({names(no_est)}): {why}",
            NotComputableWarning, stacklevel=3,
        )
    if no_var:
        warnings.warn(
            f"{estimator}: the standard error of {len(no_var)} estimated term(s) is NaN "
            f"({names(no_var)}): {var_why or why}",
            NotComputableWarning, stacklevel=3,
        )


#: a standard error at or below this share of its own (nonzero) estimate is zero by
#: construction, computed to rounding (:func:`rounding_variances`; sqrt(eps), 1.5e-8)
SE_ROUNDING_SHARE = math.sqrt(np.finfo(float).eps)
#: how :func:`rounding_variances`' note begins (a refit's note replaces the old one)
_ROUNDING_NOTE = "no standard error for "
#: an effect's SE at most this share of its estimate (t above 1e4) may be rounding of zero
#: (:func:`rounding_variances`; with the variance at rounding level of the largest effect's)
EFFECT_T_BOUND = 1e-4
#: ``diagnostics`` key naming the terms whose variance :func:`rounding_variances` found
#: to be rounding of zero (reported NaN; a combination of terms may count them as 0)
ROUNDING_ZERO_KEY = "variance_zero_up_to_rounding"


def combine_vcov(a: np.ndarray, coef: np.ndarray, v: np.ndarray,
                 zero: np.ndarray | None = None) -> np.ndarray:
    """``a v a'``: the variance of the combinations ``a`` (one per row) of terms with
    estimates ``coef`` and variance ``v``. A term without an estimate is left out (its
    weight should be 0); a term in ``zero`` counts with variance and covariances 0 (one
    reported as rounding of zero); a combination that puts weight on an estimated term
    whose variance is NaN is NaN, and only that one -- never 0 from a NaN read as 0 (a
    fit without residual degrees of freedom then read "zero up to rounding"), never NaN
    for every combination (one NaN cell made every Poisson aggregate NaN)."""
    zero = np.zeros(len(coef), dtype=bool) if zero is None else np.asarray(zero, bool)
    ok = np.isfinite(coef)
    bad = ok & ~zero & ~np.isfinite(np.diag(v))
    keep = ok & ~zero
    vz = np.where(np.outer(keep, keep) & np.isfinite(v), v, 0.0)
    out = a @ vz @ a.T
    hit = (a[:, bad] != 0).any(axis=1)
    out[hit, :] = np.nan
    out[:, hit] = np.nan
    return out


def effect_terms(terms: Sequence[str], term_info: pd.DataFrame | None) -> np.ndarray:
    """Mask of the terms that are treatment effects by event time, cohort or period (a
    finite ``rel_time``, ``cohort`` or ``time`` in ``term_info``): estimates in one unit,
    the outcome's, unlike covariates. The ``ATT`` row beside such terms (their average,
    API.md) counts too: a Poisson event study's ATT over two post cells whose variances
    cancel had variance 2.2e-19 beside 7.6e-3 (rounding of zero) and was blanked by the
    1e-8 own-estimate bound in one row order and kept, SE 4.7e-10 beside -0.006, in
    another (fuzz seed 578292). A per-unit-of-treatment ATT (de Chaisemartin-D'Haultfoeuille)
    differs from the effects by the treatment's scale, far inside both bounds of
    :func:`rounding_variances`."""
    mask = np.zeros(len(terms), dtype=bool)
    if term_info is None or not len(term_info):
        return mask
    info = term_info.reindex(list(terms))
    for col in ("rel_time", "cohort", "time"):
        if col in info.columns:
            with np.errstate(invalid="ignore"):
                mask |= np.isfinite(pd.to_numeric(info[col], errors="coerce")
                                    .to_numpy(dtype=float, na_value=np.nan))
    if mask.any():
        mask |= np.array([t == "ATT" for t in terms], dtype=bool)
    return mask


def rounding_variances(terms: Sequence[str], coef: np.ndarray, cov: np.ndarray,
                       estimator: str, effect: np.ndarray | None = None
                       ) -> tuple[np.ndarray, str, tuple[str, ...]]:
    """``cov`` with NaN for the terms whose standard error is rounding of zero, a
    plain-language note naming them ("" when there are none; then ``cov`` itself) and
    those terms' names.

    A standard error at or below ``sqrt(eps)`` (1.5e-8) of the term's own estimate (a
    t-statistic above 6.7e7, which no sample of real data reaches) is a variance that is
    zero by construction, computed to rounding, never a measured precision: one treated
    observation per cohort and period under the imputation estimator's conservative
    variance (SE 1.3e-15 beside an ATT of 1.14 gave p = 0); Driscoll-Kraay or clusters by
    period over two periods with period effects (each period's score sum is zero: 1.8e-16
    beside 0.65, or 4.3e-11 after the cancellations of a covariate's scores). Each term
    is judged on its own estimate, so coefficients in other units (a covariate in
    dollars) do not move the bound; an estimate near zero is not judged by this rule.

    Among the ``effect`` terms (:func:`effect_terms`: all in the outcome's unit), a
    variance at or below :func:`rounding_floor` of the largest effect variance (a
    standard error below 4.7e-7 of the largest effect's) is rounding of zero too, also
    beside a small estimate: Driscoll-Kraay with period effects gave rel_time=3 an SE of
    1.05e-9 beside -0.050 (2.1e-8 of it, above the first bound) under one row order and
    below the bound under another (variance 6.7e-17 of the largest, 0.128^2) -- when
    its SE is also at most :data:`EFFECT_T_BOUND` (1e-4) of its own estimate (a
    t-statistic above 1e4). Both, because effects of one outcome may differ in scale by
    more than the first bound allows (response-scale trade effects of small and large
    exporters: an SE of 10 beside one of 1e8), never in their t-statistics. The own bound
    was 1e-6 (t above 1e6): a rounding residue's SE is ~sqrt(eps) of the largest effect's,
    so its t is its estimate over the largest effect's SE times ~7e7, and a small estimate
    sat at that bound with the verdict following the rounding -- a Poisson event-study
    cell of -0.0013 had SE 1.7e-9 (variance 2.7e-16 of the largest, t 7.9e5) in one row
    order and was blanked in another (seed 267237; with the ATT below, 8 row-order
    disagreements in 21,018 shuffled fuzz panels, none in 23,181 since). A term fixed at
    exactly 0 with exactly 0 variance (a normalised reference period) is kept."""
    b = np.asarray(coef, dtype=float)
    var = np.diag(cov)
    bound = SE_ROUNDING_SHARE * np.abs(b)
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(b) & np.isfinite(var)
        mask = finite & (b != 0.0) & (var <= bound * bound)
        if effect is not None and effect.any():
            ev = var[effect & finite]
            floor = rounding_floor(float(ev.max()) if len(ev) else None, 1)
            own = EFFECT_T_BOUND * np.abs(b)
            mask |= effect & finite & (b != 0.0) & (var <= floor) & (var <= own * own)
    if not mask.any():
        return cov, "", ()
    cov = cov.copy()
    cov[mask, :] = cov[:, mask] = np.nan
    names = tuple(t for t, m in zip(terms, mask, strict=True) if m)
    shown = f"{', '.join(names[:8])}{'…' if len(names) > 8 else ''}"
    note = (f"{_ROUNDING_NOTE}{shown}: the variance is zero up to rounding (a "
            "standard error below 1e-8 of the estimate, or, for an effect, below 1e-4 of "
            "the estimate and 5e-7 of the largest effect's), so it is zero by construction in "
            "these data, not a measured precision -- for example one treated observation "
            "per cohort and period, or period sums of scores that period effects make zero")
    warnings.warn(f"{estimator}: {note}.", NotComputableWarning, stacklevel=4)
    return cov, note, names


def _retest(pt: PretrendTest, terms: Sequence[str], coef: np.ndarray, cov: np.ndarray,
            df: float | None, estimator: str) -> PretrendTest | None:
    """The pre-trend test ``pt`` again on ``cov`` (the rule it was made by: F(q, df) under
    a t reference, chi2 without), None when its terms are not all among ``terms``."""
    if not (pt.terms and set(pt.terms) <= set(terms)):
        return None
    idx = [list(terms).index(t) for t in pt.terms]
    return wald_pretrend_test(pt.terms, coef[idx], cov[np.ix_(idx, idx)],
                              df_denominator=df, what=pt.note, estimator=estimator,
                              scale=variance_scale(cov))


def make_result(estimator: str, params: pd.Series | Mapping[str, float], vcov: Any,
                vcov_spec: VcovSpec, nobs: int, *, spec: Mapping[str, Any] | None = None,
                diagnostics: Mapping[str, Any] | None = None,
                term_info: pd.DataFrame | None = None,
                extras: Mapping[str, Any] | None = None,
                cls: type[EstimationResult] = EstimationResult,
                nan_reason: str = "not identified in these data",
                **fields: Any) -> EstimationResult:
    """Build a result from labelled estimates and a vcov (array or DataFrame).

    Warns with :class:`~twinimpact.errors.NotComputableWarning` when an estimate or a
    variance is NaN, naming the terms and ``nan_reason``.
    """
    params = pd.Series(params, dtype=float)
    terms = tuple(str(t) for t in params.index)
    if isinstance(vcov, pd.DataFrame):
        vcov = vcov.loc[list(params.index), list(params.index)].to_numpy(dtype=float)
    cov = np.asarray(vcov, dtype=float)
    if cov.ndim == 1:  # variances only
        cov = np.diag(cov)
    if cov.shape != (len(terms), len(terms)):
        raise SpecificationError(
            f"internal: {estimator} result has {len(terms)} terms but a vcov of shape "
            f"{cov.shape}; expected ({len(terms)}, {len(terms)}).")
    var_why = (vcov_spec.description
               if vcov_spec.small_sample.get("df_resid", 1) <= 0 else None)
    warn_nan(terms, params.to_numpy(), cov, nan_reason, estimator, var_why)
    coef = params.to_numpy()
    cov, rounded, zero = rounding_variances(terms, coef, cov, estimator,
                                            effect_terms(terms, term_info))
    pt = fields.get("pretrend_test")
    if pt is not None and set(pt.terms) & set(zero):
        # made by the estimator on those variances: made again on the reported ones (the
        # test's variances are then NaN, so it is not computed, and says so)
        fields["pretrend_test"] = (_retest(pt, terms, coef, cov, pt.df_denominator, estimator)
                                   or dataclasses.replace(
                                       pt, statistic=np.nan, p_value=np.nan,
                                       note="not computed: some pre-treatment variances are "
                                            "zero up to rounding"))
    diag = dict(diagnostics or {})
    notes = diag.get("notes") or ()
    diag["notes"] = (((notes,) if isinstance(notes, str) else tuple(notes))
                     + ((rounded,) if rounded else ()))
    if zero:  # which ones, for callers that combine the terms (their variance is ~0)
        diag[ROUNDING_ZERO_KEY] = zero
    diag = _cluster_diagnostics(estimator, vcov_spec, diag,
                                aggregated="aggregation" in (spec or {})
                                or "[" in estimator)
    # rows used = nobs, also when the estimator dropped rows after the preparation
    # (always-treated cohorts, rows outside the window, unpredictable Y(0)): those are
    # counted in dropped_rows, and the preparation's count would include them
    diag["n_used_rows"] = int(nobs)
    diag.setdefault("dropped_rows", {})
    return cls(estimator=estimator, terms=terms, coef=coef, cov=cov,
               vcov_spec=vcov_spec, nobs=int(nobs), spec=dict(spec or {}),
               diagnostics=diag, term_info=term_info,
               extras=dict(extras or {}), **fields)


#: Variance kinds that are cluster-robust sums of scores / influence functions (the
#: placebo, jackknife and bootstrap variances of synthetic DiD resample units instead).
CLUSTER_ROBUST_KINDS = ("cluster", "twoway_cluster", "imputation_conservative", "two_stage",
                        "influence_function", "bootstrap")


def _cluster_diagnostics(estimator: str, vspec: VcovSpec, diagnostics: dict[str, Any], *,
                         aggregated: bool = False) -> dict[str, Any]:
    """Every result with a cluster-robust variance passes here: fewer than two clusters
    is refused, few clusters are flagged in ``diagnostics["few_clusters"]`` and a note
    (warned once per estimation: an aggregation of a result -- ``spec["aggregation"]``
    or ``estimator[type]`` -- is flagged but stays silent)."""
    if not vspec.cluster or vspec.kind not in CLUSTER_ROBUST_KINDS \
            or estimator.startswith("synthetic_did"):
        return diagnostics
    if "few_clusters" in diagnostics:
        return diagnostics
    info = check_cluster_count(vspec.cluster, vspec.n_clusters,
                               estimator=estimator.split("/")[0], stacklevel=4,
                               warn=not aggregated)
    if info is not None:
        diagnostics["few_clusters"] = info
        notes = list(diagnostics.get("notes") or [])
        notes.append(f"only {info['n_clusters']} clusters ({info['cluster']}): cluster-robust "
                     "p-values and intervals are unreliable below "
                     f"{info['threshold']}; use ti.wild_cluster_bootstrap")
        diagnostics["notes"] = notes
    return diagnostics


#: Below this many clusters a cluster-robust (CRV1) variance is flagged as unreliable.
#: Cameron, Gelbach & Miller (2008, REStat) find CRV t tests rejecting 10-15% at a nominal 5%
#: with 5-10 clusters; Cameron & Miller (2015, JHR, sec. VI) put "few" at roughly 20-50
#: clusters; MacKinnon & Webb (2017, JAE) show over-rejection persists up to 50 with unequal
#: cluster sizes and recommend the wild cluster bootstrap. 30 is the middle of that range.
FEW_CLUSTERS = 30


def check_cluster_count(names: Sequence[str], counts: Sequence[int], *,
                        estimator: str, stacklevel: int = 2,
                        warn: bool = True) -> dict[str, Any] | None:
    """Refuse cluster-robust variance with fewer than two clusters; flag few clusters.

    Returns ``None`` or the ``diagnostics["few_clusters"]`` entry, and warns with
    :class:`~twinimpact.errors.FewClustersWarning` pointing to the wild cluster bootstrap.
    """
    if not counts:
        return None
    g = min(int(c) for c in counts)
    name = names[list(counts).index(g)] if len(names) == len(counts) else ", ".join(names)
    if g < 2:
        raise InputError(format_message(
            f"{estimator}: cluster-robust standard errors need at least two clusters",
            where=f"cluster={name!r}", seen=f"{g} cluster(s)",
            fix="cluster by a variable with several values (e.g. the unit), or drop "
                "cluster= for heteroskedasticity-robust / iid standard errors"))
    if g >= FEW_CLUSTERS:
        return None
    info = {"cluster": str(name), "n_clusters": g, "threshold": FEW_CLUSTERS,
            "advice": "use ti.wild_cluster_bootstrap for tests and intervals"}
    if not warn:
        return info
    warnings.warn(format_message(
        f"{estimator}: only {g} clusters in {name!r}; cluster-robust standard errors and "
        f"p-values are unreliable with fewer than {FEW_CLUSTERS} clusters (Cameron, Gelbach "
        "& Miller 2008; MacKinnon & Webb 2017)",
        fix="test with ti.wild_cluster_bootstrap(data, outcome=..., regressors=..., "
            "cluster=..., term=...) (Webb weights below about 12 clusters); see "
            "result.diagnostics['few_clusters']"),
        FewClustersWarning, stacklevel=stacklevel + 1)
    return info


# ============================================================================ protocol adapters
# Tables and plots take *every* object the package returns. Estimation results, bootstrap
# and randomization results, case and gravity studies follow the protocol themselves
# (``estimator``, ``nobs``, ``to_frame(alpha)``, ``summary()``); HonestDiD sensitivity
# frames are pandas DataFrames and are read here.

#: Columns of a HonestDiD frame (``ti.honest_did``).
HONEST_COLUMNS = ("m", "lb", "ub", "method")


def is_honest_frame(obj: Any) -> bool:
    """Whether ``obj`` is a HonestDiD sensitivity frame (columns ``m, lb, ub, method``)."""
    return isinstance(obj, pd.DataFrame) and set(HONEST_COLUMNS) <= set(obj.columns)


def honest_tidy(frame: pd.DataFrame, alpha: float | None = None) -> pd.DataFrame:
    """The tidy frame of a HonestDiD sensitivity frame: one row per ``m``.

    ``term`` is ``"Mbar=<m>"`` (relative magnitudes) or ``"M=<m>"`` (smoothness);
    ``estimate`` is the point estimate of the target (``frame.attrs["estimate"]``, NaN when
    absent); ``ci_lower``/``ci_upper`` are the robust bounds; there is no standard error or
    p-value (NaN). ``alpha`` must equal the level the sets were computed at, if given.
    """
    attrs = frame.attrs or {}
    level = attrs.get("alpha")
    if alpha is not None and level is not None and not math.isclose(alpha, level):
        raise SpecificationError(format_message(
            "HonestDiD confidence sets exist only at the level they were computed at",
            where="honest_did frame", seen={"alpha asked": alpha, "alpha computed": level},
            fix=f"pass alpha={level} or rerun ti.honest_did(..., alpha={alpha})"))
    name = "Mbar" if attrs.get("restriction", "relative_magnitudes") == "relative_magnitudes" \
        else "M"
    m = pd.to_numeric(frame["m"], errors="coerce").to_numpy(dtype=float)
    terms = [f"{name}={v:g}" if np.isfinite(v) else str(meth)
             for v, meth in zip(m, frame["method"], strict=True)]
    est = attrs.get("estimate")
    est = np.nan if est is None else float(est)
    return pd.DataFrame({
        "estimator": "honest_did", "term": terms, "estimate": est,
        "std_error": np.nan, "statistic": np.nan, "p_value": np.nan,
        "ci_lower": frame["lb"].to_numpy(dtype=float),
        "ci_upper": frame["ub"].to_numpy(dtype=float),
        "ci_kind": [f"HonestDiD robust set ({meth}, {attrs.get('restriction', '?')})"
                    for meth in frame["method"]],
    })


def honest_summary(frame: pd.DataFrame) -> str:
    """Plain-text summary of a HonestDiD sensitivity frame."""
    a = frame.attrs or {}
    lines = ["twinimpact · honest_did (Rambachan & Roth robust confidence sets)",
             f"Restriction: {a.get('restriction', 'unknown')}; level "
             f"{100 * (1 - float(a.get('alpha', 0.05))):g}%; pre periods {a.get('num_pre')}, "
             f"post periods {a.get('num_post')}"]
    if a.get("estimate") is not None:
        lines.append(f"Point estimate of the target: {float(a['estimate']):.6g}")
    show = frame[list(HONEST_COLUMNS)]
    with pd.option_context("display.float_format", lambda v: f"{v:.6g}"):
        lines.append(show.to_string(index=False))
    return "\n".join(lines)


def _reject(obj: Any, what: str) -> SpecificationError:
    return SpecificationError(format_message(
        f"{what} takes objects returned by twinimpact (estimation results, bootstrap / "
        "randomization results, case or gravity studies, HonestDiD frames)",
        seen=type(obj).__name__,
        fix="pass e.g. the result of ti.event_study(...), ti.wild_cluster_bootstrap(...) or "
            "ti.honest_did(...)"))


def tidy(obj: Any, alpha: float | None = None) -> pd.DataFrame:
    """The tidy frame of any object the package returns (``obj.to_frame(alpha)``; HonestDiD
    frames through :func:`honest_tidy`). ``alpha=None`` uses the object's own level."""
    if isinstance(obj, pd.DataFrame):
        if is_honest_frame(obj):
            return honest_tidy(obj, alpha)
        raise _reject(obj, "this function")
    if isinstance(obj, pd.Series) or not callable(getattr(obj, "to_frame", None)):
        raise _reject(obj, "this function")
    return obj.to_frame() if alpha is None else obj.to_frame(alpha)


def result_label(obj: Any, default: str = "model") -> str:
    """Column label of an object in tables and legends."""
    if is_honest_frame(obj):
        return "honest_did"
    label = getattr(obj, "label", None)
    if isinstance(label, str) and label:
        return label
    est = getattr(obj, "estimator", None)
    return est if isinstance(est, str) and est else default


def summarize(obj: Any) -> str:
    """``obj.summary()`` for every object the package returns (HonestDiD frames too)."""
    if is_honest_frame(obj):
        return honest_summary(obj)
    fn = getattr(obj, "summary", None)
    if not callable(fn) or isinstance(obj, pd.DataFrame | pd.Series):
        raise _reject(obj, "summary")
    return fn()


def event_pretrend_test(terms: Sequence[str], coef: Any, cov: Any, rel_time: Any,
                        vcov_spec: VcovSpec, *, estimator: str = "",
                        what: str = "") -> PretrendTest:
    """The pre-trend test of an event-study result: :func:`wald_pretrend_test` over the
    terms with a finite ``rel_time < 0`` (the reference period is not a term), F form when
    the result's reference distribution is t(df) (fixest ``wald()``), chi2 when normal."""
    rel = np.asarray(rel_time, dtype=float)
    b = np.asarray(coef, dtype=float)
    v = np.asarray(cov, dtype=float)
    idx = np.flatnonzero(np.isfinite(rel) & (rel < 0))
    return wald_pretrend_test(
        [str(terms[i]) for i in idx], b[idx], v[np.ix_(idx, idx)],
        df_denominator=vcov_spec.df, estimator=estimator, scale=variance_scale(v),
        what=what or ("Wald test that all pre-treatment event-time coefficients are zero "
                      "(F form as fixest wald() under a t reference, else chi2)"))
