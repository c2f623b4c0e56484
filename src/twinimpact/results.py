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
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .errors import (
    FewClustersWarning,
    InputError,
    NotComputableWarning,
    SpecificationError,
    check_alpha,
    format_message,
)

__all__ = [
    "FEW_CLUSTERS",
    "TIDY_COLUMNS",
    "EstimationResult",
    "VcovSpec",
    "check_cluster_count",
    "make_result",
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
    """

    kind: str
    cluster: tuple[str, ...] = ()
    n_clusters: tuple[int, ...] = ()
    small_sample: Mapping[str, float] = field(default_factory=dict)
    df: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "cluster", tuple(self.cluster))
        object.__setattr__(self, "n_clusters", tuple(int(g) for g in self.n_clusters))
        object.__setattr__(self, "small_sample", MappingProxyType(dict(self.small_sample)))

    @property
    def ci_kind(self) -> str:
        """Label of the reference distribution, e.g. ``"normal"`` or ``"t(49)"``."""
        if self.df is None:
            return "normal"
        return f"t({self.df:g})"


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

    # ------------------------------------------------------------------ construction
    def __post_init__(self) -> None:
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
            info.index = info.index.map(str)
            info = info.reindex(list(terms))
            object.__setattr__(self, "term_info", info)

    def replace(self, **changes: Any) -> EstimationResult:
        """A new result with some fields changed (the original is untouched)."""
        return dataclasses.replace(self, **changes)

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
            p = 2 * stats.norm.sf(t)
        else:
            p = 2 * stats.t.sf(t, self.vcov_spec.df)
        return pd.Series(p, index=pd.Index(self.terms, name="term"), name="p_value")

    def critical_value(self, alpha: float = 0.05) -> float:
        """Critical value for a two-sided (1 - alpha) pointwise interval."""
        check_alpha(alpha)
        if self.vcov_spec.df is None:
            return float(stats.norm.ppf(1 - alpha / 2))
        return float(stats.t.ppf(1 - alpha / 2, self.vcov_spec.df))

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
        notes = self.diagnostics.get("notes") if self.diagnostics else None
        if notes:
            lines.extend(f"Note: {n}" for n in notes)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.estimator}: {len(self.terms)} term(s), "
                f"nobs={self.nobs}, vcov={self.vcov_spec.kind}>")

    def __str__(self) -> str:
        return self.summary()


def warn_nan(terms: Sequence[str], coef: np.ndarray, cov: np.ndarray, why: str,
             estimator: str) -> None:
    """Warn once, naming the terms, when estimates or variances are NaN."""
    bad = [t for t, b, v in zip(terms, coef, np.diag(cov), strict=True)
           if not (np.isfinite(b) and np.isfinite(v))]
    if bad:
        warnings.warn(
            f"{estimator}: {len(bad)} term(s) could not be computed and are NaN "
            f"({', '.join(bad[:8])}{'…' if len(bad) > 8 else ''}): {why}",
            NotComputableWarning, stacklevel=3,
        )


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
    warn_nan(terms, params.to_numpy(), cov, nan_reason, estimator)
    diagnostics = _cluster_diagnostics(estimator, vcov_spec, dict(diagnostics or {}),
                                       aggregated="aggregation" in (spec or {})
                                       or "[" in estimator)
    return cls(estimator=estimator, terms=terms, coef=params.to_numpy(), cov=cov,
               vcov_spec=vcov_spec, nobs=int(nobs), spec=dict(spec or {}),
               diagnostics=diagnostics, term_info=term_info,
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
