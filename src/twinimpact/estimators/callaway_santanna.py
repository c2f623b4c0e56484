"""Callaway & Sant'Anna (2021) group-time ATTs and their aggregations.

Pipeline (R ``did`` 2.5 ``att_gt`` / ``aggte``, faster mode): validate and balance the
panel -> one wide units x periods outcome matrix -> every ATT(g, t) 2x2 cell with its
influence function (``_cs_numerics``) -> analytic or multiplier-bootstrap inference ->
``.aggregate()`` ("simple", "dynamic", "group", "calendar") from the stored influence
function, without refitting.

Reference: Callaway, B. and Sant'Anna, P. H. C. (2021), "Difference-in-Differences with
multiple time periods", Journal of Econometrics 225(2), 200-230; the 2x2 cells are the
estimators of Sant'Anna, P. H. C. and Zhao, J. (2020), "Doubly robust
difference-in-differences estimators", Journal of Econometrics 219(1), 101-122.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from ..core.fe import factorize
from ..core.labels import _arrow_strings, short_string_keys
from ..core.rowblocks import row_blocks
from ..core.threads import blas_single_thread
from ..core.unitorder import (
    code_strings,
    first_rows,
    group_fixed,
    sortable_values,
    ungroup_codes,
)
from ..core.validation import (
    RowFilter,
    _numeric,
    as_frame,
    cohort_per_unit,
    mark_pairs,
    normalize_cohort,
    pair_table_fits,
    refuse_duplicate_pairs,
    require_columns,
    require_frame,
)
from ..errors import (
    ConvergenceWarning,
    DataWarning,
    DroppedRowsWarning,
    EstimationError,
    InputError,
    NotComputableWarning,
    SpecificationError,
    check_alpha,
    check_literal,
    format_message,
    renamed_keyword,
)
from ..inference.wald import FactorSVD, bonferroni_max_t, factor_svd, wald_identified
from ..results import (
    ATTDefinition,
    EstimationResult,
    PretrendTest,
    VcovSpec,
    make_result,
    variance_scale,
    wald_pretrend_test,
)
from . import _cs_numerics as num

__all__ = ["CSAggregateResult", "CallawaySantAnnaResult", "callaway_santanna"]

ESTIMATOR = "callaway_santanna"
CONTROL_GROUPS = ("never_treated", "not_yet_treated")
METHODS = ("dr", "ipw", "reg")
BASE_PERIODS = ("varying", "universal")
AGGREGATIONS = ("simple", "dynamic", "group", "calendar")
#: other names accepted for an aggregation ("cohort" is Sun-Abraham's / fixest's name)
AGGREGATION_SYNONYMS = {"cohort": "group"}
#: R did sets standard errors at or below this to NA ("zero standard error").
SE_ZERO = math.sqrt(np.finfo(float).eps) * 10
#: R did warns when a simultaneous critical value is at least this large.
CRIT_TOO_LARGE = 7.0
_MISSING = object()


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


# ============================================================================ results
@dataclass(frozen=True, eq=False, repr=False)
class _InfluenceResult(EstimationResult):
    """Shared machinery: influence function, clusters, bootstrap draws for bands.

    ``influence_source`` holds the influence function as computed: an (n_units, n_terms)
    array, or (the ATT(g, t) of a fit) a :class:`~._cs_numerics.BlockedInfluence`, its
    nonzero blocks; ``influence`` is the (n_units, n_terms) array, made from the blocks on
    first access and cached (read-only)."""

    influence_source: Any = field(default=None, repr=False)
    cluster_codes: np.ndarray | None = None
    sup_t: np.ndarray | None = None
    band: bool = False

    def critical_value(self, alpha: float = 0.05) -> float:
        """Pointwise normal critical value, or the sup-t bootstrap one for uniform bands."""
        check_alpha(alpha)
        if (self.vcov_spec.interval == "uniform" and self.sup_t is not None
                and len(self.sup_t)):
            return float(num.quantile_type1(self.sup_t, 1 - alpha))
        return float(stats.norm.ppf(1 - alpha / 2))

    @functools.cached_property
    def influence(self) -> np.ndarray | None:
        """The influence function, (n_units, n_terms), read-only, scaled so that
        ``vcov = influence.T @ influence / n**2`` (analytic, unit clusters); the blocked
        form of a fit is made dense here, once (units x cells can be large: the
        estimator itself never needs this array)."""
        src = self.influence_source
        if src is None:
            return None
        return _ro(src.dense() if isinstance(src, num.BlockedInfluence) else src)


@dataclass(frozen=True, eq=False, repr=False)
class CSAggregateResult(_InfluenceResult):
    """Aggregated Callaway-Sant'Anna effects (R did ``aggte``); carries the influence
    function (n_units x n_terms) in ``influence``."""


@dataclass(frozen=True, eq=False, repr=False)
class CallawaySantAnnaResult(_InfluenceResult):
    """ATT(g, t) result of :func:`callaway_santanna`.

    Extra fields: ``influence`` (n_units x n_cells, scaled so that
    ``vcov = influence.T @ influence / n**2``; made on first access from
    ``influence_source``, the nonzero blocks the estimator works with, and cached),
    ``unit_cohort`` (n_units,; NaN = never treated), ``units`` (labels in the row order
    of ``influence``).
    """

    unit_cohort: np.ndarray | None = None
    units: np.ndarray | None = None
    #: the fit's multiplier-bootstrap draws, kept for the aggregations (see _BootDraws)
    boot_draws: Any = field(default=None, repr=False)

    def aggregate(self, type: Literal["simple", "dynamic", "group", "calendar"] = "group", *,
                  min_e: float | None = None, max_e: float | None = None,
                  balance_e: int | None = None, na_rm: bool = False,
                  n_reps: Any = _MISSING, seed: int | Any | None = _MISSING,
                  cband: bool | Any = _MISSING, alpha: float | Any = _MISSING,
                  bootstrap: Any = _MISSING) -> CSAggregateResult:
        """Aggregate the ATT(g, t) into summary parameters (R did ``aggte``).

        Parameters
        ----------
        type : ``"simple"`` (one ``ATT`` row: post-treatment ATT(g, t) weighted by cohort
            size), ``"dynamic"`` (rows per ``rel_time`` = t - g, plus ``ATT`` = mean over
            ``rel_time >= 0``), ``"group"`` (rows per cohort, plus ``ATT`` weighting cohorts
            by size; ``"cohort"``, Sun-Abraham's name, is accepted as a synonym) or ``"calendar"`` (rows per ``time``, plus ``ATT`` = mean over periods).
        min_e, max_e : event-time window (``dynamic``); ``max_e`` also limits the periods
            used by ``simple`` and ``group`` (R ``aggte`` does the same).
        balance_e : keep only cohorts observed for at least ``balance_e`` periods after
            treatment (``dynamic``), so the composition is constant across event times.
        na_rm : drop ATT(g, t) cells that could not be computed (R ``na.rm``); otherwise
            their presence raises :class:`~twinimpact.errors.EstimationError`.
        n_reps, seed, cband, alpha : default to the values of the ATT(g, t) fit
            (``bootstrap=`` is the deprecated old name of ``n_reps``).

        Standard errors come from the aggregated influence function, including the
        estimated-weights term (R ``wif``); with ``n_reps=n`` they are R's IQR-based
        multiplier-bootstrap standard errors and ``cband=True`` gives uniform bands over
        the non-``ATT`` rows. With the fit's ``n_reps`` and integer ``seed`` (the
        defaults) the multiplier weights are the fit's own, so the draws are computed
        from the fit's kept draws instead of drawn again: the same numbers up to the
        order of the sums (R ``aggte`` draws new weights; any other ``n_reps`` or
        ``seed`` draws new ones here too).

        Examples
        --------
        >>> import numpy as np, pandas as pd
        >>> from twinimpact.estimators.callaway_santanna import callaway_santanna
        >>> rng = np.random.default_rng(0)
        >>> units, years = np.arange(60), np.arange(2000, 2006)
        >>> df = pd.DataFrame([(u, t) for u in units for t in years], columns=["id", "year"])
        >>> df["g"] = np.select([df.id < 20, df.id < 40], [2003, 2004], 0)
        >>> df["y"] = rng.normal(size=len(df)) + ((df.g > 0) & (df.year >= df.g))
        >>> res = callaway_santanna(df, outcome="y", unit="id", time="year", cohort="g")
        >>> es = res.aggregate("dynamic")
        >>> list(es.to_frame().term)[:2]
        ['rel_time=-3', 'rel_time=-2']
        """
        if bootstrap is not _MISSING:
            n_reps = renamed_keyword("aggregate", "bootstrap", "n_reps", bootstrap,
                                     n_reps, new_default=_MISSING)
        return _aggregate(self, type, min_e=min_e, max_e=max_e, balance_e=balance_e,
                          na_rm=na_rm, bootstrap=n_reps, seed=seed, cband=cband,
                          alpha=alpha)


# ============================================================================ helpers
def _check_int(name: str, value: Any, *, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise SpecificationError(format_message(
            f"{ESTIMATOR}: {name} must be an integer >= {minimum}"
            + (" or None" if allow_none else ""), seen=value,
            fix=f"pass e.g. {name}={max(minimum, 999) if name == 'n_reps' else minimum}"))


def _factorize_sorted(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """``pd.factorize(values, sort=True)``: codes in sorted label order, -1 for missing.

    Integer labels spanning a range at most a few times the number of rows are coded by a
    counting pass (O(n), no hashing); so are short Arrow string ids whose bytes span few
    values (:func:`~twinimpact.core.unitorder.sortable_values`: the mixed-radix number of
    each id's bytes, first byte most significant, the length last -- byte order, e.g.
    zero-padded ids like "u0001234"); other Arrow strings by
    :func:`~twinimpact.core.unitorder.code_strings` (pandas' codes in order of first appearance; grouped without a
    hash table, or hashed in partitions, when the labels are many), whose labels (one row each) are then sorted as
    :func:`pandas.factorize` sorts its uniques (``argsort``: Arrow's byte order) and the
    codes renumbered -- labels of at most seven bytes, or all of eight, through one
    integer each (:func:`_byte_order_keys`), the others by Arrow; anything else goes to
    :func:`pandas.factorize`.
    """
    dt = values.dtype
    if isinstance(dt, np.dtype) and dt.kind in "iu" and len(values):
        arr = values.to_numpy()
        lo, hi = arr.min().item(), arr.max().item()  # Python ints: no overflow
        if -2**62 < lo and hi < 2**62 and hi - lo <= 4 * len(arr) + 1000:
            small = arr.astype(np.int64)  # a copy: the caller's column is never touched
            if lo:
                small -= lo
            codes, present = _count_codes(small, hi - lo + 1)
            labels = (np.flatnonzero(present) + lo).astype(dt)
            return codes, pd.Index(labels)
    if isinstance(dt, np.dtype):
        sorted_codes = _grouped_sorted(values.to_numpy())
        if sorted_codes is not None:
            return sorted_codes
    dense = sortable_values(values.array) if _few_byte_values(values.array) else None
    if dense is not None:  # short string ids in byte order: codes by counting
        codes, present = _count_codes(*dense)
        k = int(present.sum())
        one = np.empty(k, dtype=np.intp)
        one[codes] = np.arange(len(codes))  # a row of each label (the last)
        return codes, pd.Index(values.array.take(one))
    coded = code_strings(values.array) if len(values) else None
    if coded is not None:
        codes, k = coded
        on = codes >= 0
        every = bool(on.all())
        rows = np.arange(len(codes)) if every else np.flatnonzero(on)
        one = np.empty(k, dtype=np.intp)
        one[codes if every else codes[rows]] = rows  # a row of each label (any)
        del rows
        uniques = values.array.take(one)  # the labels in code order
        keys = _byte_order_keys(uniques)
        if keys is not None:  # one integer per label, in the labels' byte order
            sorter = np.argsort(keys)  # (distinct keys: any sort gives the same order)
        else:
            sorter = np.asarray(uniques.argsort())  # as pandas.factorize(sort=True)
        labels = uniques.take(sorter)
        rank = np.empty(k, dtype=np.intp)
        rank[sorter] = np.arange(k)
        if every:
            out = rank[codes]
        else:
            out = np.full(len(codes), -1, dtype=np.intp)
            out[on] = rank[codes[on]]
        return out, pd.Index(labels)
    return pd.factorize(values, sort=True)


def _grouped_sorted(arr: np.ndarray) -> tuple[np.ndarray, pd.Index] | None:
    """:func:`_factorize_sorted` of many distinct numbers of a wide range (float ids,
    sparse int64 ids), from :func:`~twinimpact.core.unitorder.group_fixed`'s groups (the
    bytes of each value, no hash table): each group's first row gives its label (the one
    ``pandas.factorize`` keeps), the labels are sorted and every row gets its label's
    rank. None where ``group_fixed`` declines (few rows or labels, narrow ranges)."""
    grouped = group_fixed(arr)
    if grouped is None:
        return None
    perm, codes, k = grouped
    uniques = arr[first_rows(perm, codes, k)[0]]
    sorter = np.argsort(uniques)  # (distinct values: any sort gives the same order)
    rank = np.empty(k, dtype=np.intp)
    rank[sorter] = np.arange(k)
    return ungroup_codes(perm, rank[codes], len(arr)), pd.Index(uniques[sorter])


def _count_codes(v: np.ndarray, span: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes of ``v`` (int64 in ``0..span-1``) in value order and which values occur,
    by one pass marking the values present (a one-byte store per row, block by block: a
    table 8x smaller than ``np.bincount``'s counts, no read-modify-write; ``v`` itself is
    returned as the codes when every value occurs)."""
    present = np.zeros(span, dtype=bool)
    for sl in row_blocks(len(v)):
        present[v[sl]] = True
    codes = v if present.all() else (np.cumsum(present) - 1)[v]
    return codes, present


#: rows whose bytes :func:`_few_byte_values` looks at
_BYTE_SAMPLE = 1 << 16


def _few_byte_values(values: Any) -> bool:
    """False when :func:`~twinimpact.core.unitorder.sortable_values` would decline the
    ids, seen from their first :data:`_BYTE_SAMPLE` rows: these rows have no
    :func:`~twinimpact.core.labels.short_string_keys` (then the whole column has none), or
    their keys' byte ranges already span more values than it accepts (``R <= 4 n +
    1000``; its mixed-radix span is the product of the same ranges over every row), e.g.
    random hex ids: it would read every row for nothing. True otherwise (it decides)."""
    n = len(values)
    if n == 0:
        return False
    data = _arrow_strings(values)
    keys = None if data is None else short_string_keys(data.slice(0, _BYTE_SAMPLE))
    if keys is None:  # (then no row-wide key either: sortable_values would decline)
        return False
    b = keys.view(np.uint8).reshape(len(keys), 8)
    ranges = b.max(axis=0).astype(np.int64) - b.min(axis=0) + 1
    return math.prod(int(r) for r in ranges) <= 4 * n + 1000


def _byte_order_keys(values: Any) -> np.ndarray | None:
    """One uint64 per row of an Arrow string array (pandas ``str`` / ``string[pyarrow]``)
    ordered as the strings in byte order (UTF-8 byte order = Python's code point order)
    and equal exactly when they are: :func:`~twinimpact.core.labels.short_string_keys`
    byte-swapped (the bytes big-endian, the length of a string shorter than eight bytes
    in the low byte, so NUL bytes and prefixes sort right). None when it gives none (a
    missing row, a string longer than eight bytes, eight-byte strings beside shorter
    ones) or the array is not Arrow strings."""
    data = _arrow_strings(values)
    keys = None if data is None else short_string_keys(data)
    return None if keys is None else keys.byteswap()


def _time_codes(tt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(np.unique(tt), np.searchsorted(np.unique(tt), tt))`` for finite ``tt``, by a
    counting pass when the periods are integers in a range at most a few times ``len(tt)``."""
    if len(tt):
        lo, hi = float(tt.min()), float(tt.max())
        if lo.is_integer() and abs(lo) < 2**52 and hi - lo <= 4 * len(tt) + 1000:
            diff = tt - lo
            small = diff.astype(np.intp)
            if np.array_equal(small, diff):  # integral periods only
                present = np.bincount(small, minlength=int(hi - lo) + 1) > 0
                periods = np.flatnonzero(present) + lo
                if present.all():
                    return periods, small
                return periods, (np.cumsum(present) - 1)[small]
    periods = np.unique(tt)
    return periods, np.searchsorted(periods, tt)


def _complete_sorted(ucodes: np.ndarray, tt: np.ndarray, n_units: int
                     ) -> np.ndarray | None:
    """The periods (``_time_codes(tt)[0]``) when the rows are every unit in every period,
    sorted by unit (codes 0, 1, ...) and then by time (``n_units * T`` rows, row
    ``u * T + t`` is unit ``u`` in period ``t``, so the time codes are ``row % T``, not
    made); ``None`` otherwise (no duplicate can hide in such rows). Each unit's periods
    are then the first unit's, strictly increasing: one pass over the unit codes and one
    over the periods instead of counting and coding them."""
    n = len(ucodes)
    if n == 0 or n_units == 0 or n % n_units:
        return None
    T = n // n_units
    if not (ucodes.reshape(n_units, T) == np.arange(n_units)[:, None]).all():
        return None
    t2 = tt.reshape(n_units, T)
    periods = t2[0].copy()
    if not (np.all(np.isfinite(periods)) and np.all(periods[1:] > periods[:-1])
            and (t2 == periods).all()):
        return None
    return periods


def _pairs_increasing(uc: np.ndarray, tc: np.ndarray, T: int) -> bool:
    """Whether the rows' unit x period keys ``uc * T + tc`` strictly increase (rows sorted
    by unit, then time: no duplicate pair), block by block, stopping at the first block
    where they do not (shuffled rows: after one block, with no n-row temporary)."""
    last = -1
    for sl in row_blocks(len(uc)):
        key = uc[sl].astype(np.int64)
        key *= T
        key += tc[sl]
        if key[0] <= last or not (key[1:] > key[:-1]).all():
            return False
        last = int(key[-1])
    return True


def _pairs_seen(uc: np.ndarray, tc: np.ndarray, n_units: int, T: int) -> np.ndarray | None:
    """The unit x period cells holding a row, one byte each, period-major (cell ``t *
    n_units + u``: row ``t`` of ``.reshape(T, n_units)`` is period ``t``); None when the
    table would be larger than :func:`refuse_duplicate_pairs`'s. The rows hold no
    duplicate pair exactly when as many cells are seen as there are rows."""
    if not pair_table_fits(n_units * T, len(uc)):
        return None
    return mark_pairs(tc, uc, n_units, n_units * T)


def _first_per_unit(codes: np.ndarray, values: np.ndarray, n_units: int) -> np.ndarray:
    out = np.empty(n_units, dtype=values.dtype)
    out[codes[::-1]] = values[::-1]  # last write wins -> first occurrence
    return out


class _LabelRows:
    """Row-aligned unit labels without building them: ``obj[i]`` is row ``i``'s label."""

    def __init__(self, codes: np.ndarray, labels: Any) -> None:
        self.codes, self.labels = codes, labels

    def __getitem__(self, i: int) -> Any:
        return self.labels[self.codes[i]]


@dataclass
class _Panel:
    Y: np.ndarray                 # (n, T)
    X: list[np.ndarray]           # per covariate (n, T)
    cohort: np.ndarray            # (n,) NaN never treated
    periods: np.ndarray           # (T,)
    units: np.ndarray             # (n,) labels
    cluster: np.ndarray | None    # (n,) codes
    n_clusters: int
    dropped_rows: dict[str, int]
    dropped_units: dict[str, int]
    n_input: int
    glist: np.ndarray
    present: np.ndarray | None = None  # (n, T) observed cells; None = balanced panel path
    n_obs: int = 0                     # rows used
    balanced: bool = True              # every unit observed in every period


def _prepare(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
             covariates: Sequence[str], cluster: str | None, control_group: str,
             anticipation: int, allow_unbalanced: bool = False) -> _Panel:
    """Validate, drop (counted) and pivot to a wide panel, as R did's ``pre_process_did2``:
    balanced by dropping incomplete units (``allow_unbalanced_panel = FALSE``) or kept
    unbalanced with a presence mask (``TRUE``: every observation stays, units observed
    once included)."""
    data = require_frame(data)
    for name, val in (("outcome", outcome), ("unit", unit), ("time", time),
                      ("cohort", cohort)):
        if not isinstance(val, str):
            raise SpecificationError(format_message(
                f"{ESTIMATOR}: {name}= must be a column name (str)", seen=val,
                fix=f"pass {name}='<column>'"))
    require_columns(data, [outcome, unit, time, cohort, *covariates, cluster])
    n_input = len(data)
    y = _numeric(data, outcome, "outcome", view_ok=True)  # (only read; copied when wide)
    tt = _numeric(data, time, "time")
    graw = _numeric(data, cohort, "cohort", allow_inf=True)  # inf: never treated (API)
    xs = [_numeric(data, c, "covariate") for c in covariates]
    uvals = data[unit]
    ucodes, ulabels = _factorize_sorted(uvals)
    rows = RowFilter(n_input)
    rows.drop(ucodes < 0, f"missing unit ({unit})")
    rows.drop_missing(tt, f"missing time ({time})")
    keep = rows.keep
    if not keep.any():
        raise InputError(format_message(f"{ESTIMATOR}: no rows with a unit and a time",
                                        fix="check the unit and time columns"))
    last = np.max(tt[keep]) if not keep.all() else np.max(tt)
    g = normalize_cohort(graw, last)
    del graw  # (n floats: not held through the rest)
    # cohort constant within unit (checked on all rows with a unit, as prepare_panel)
    n_u = len(ulabels)
    # a complete panel sorted by unit, then time (every unit in every period, in order):
    # the per-unit cohort is the first column of the reshaped cohorts, checked constant
    # by rows in one pass; anything else (or a varying cohort, for its error) is read by
    # cohort_per_unit
    complete = _complete_sorted(ucodes, tt, n_u) if keep.all() else None
    first = None
    if complete is not None:
        g2 = g.reshape(n_u, -1).view(np.int64)  # bit patterns: equal values or NaNs
        if (g2 == g2[:, :1]).all():  # (else cohort_per_unit decides, e.g. -0.0 / NaNs)
            first = g[::g2.shape[1]].copy()
    if first is None:
        first = cohort_per_unit(ucodes, n_u, g, raw=data[cohort], unit_values=_LabelRows(
            ucodes, ulabels), estimator=ESTIMATOR, cohort_name=cohort, unit_name=unit)
    rows.drop_missing(y, f"missing outcome ({outcome})")
    for c, x in zip(covariates, xs, strict=True):
        rows.drop_missing(x, f"missing {c}")
    clu_raw = None
    if cluster is not None:
        clu_raw = data[cluster]
        rows.drop_missing(clu_raw, f"missing {cluster}")
    dropped_rows = rows.dropped
    rows.warn_missing(ESTIMATOR, stacklevel=3)
    rows.require_rows(ESTIMATOR, fix="check the outcome, covariate and key columns")
    all_rows = bool(keep.all())
    if all_rows:
        uc = ucodes
        ccodes = None if clu_raw is None else factorize(clu_raw)[0]
    else:
        idx = np.flatnonzero(keep)
        uc, y, tt, g = ucodes[idx], y[idx], tt[idx], g[idx]
        xs = [x[idx] for x in xs]
        ccodes = None
        if clu_raw is not None:
            ccodes = factorize(clu_raw.array.take(idx))[0]
    if all_rows and complete is not None:  # (the same rows: no recount)
        # time codes row % T, not made: a complete sorted panel either keeps every row
        # (the reshape below) or drops some, and every drop re-codes the periods
        periods, tc = complete, None
        T = len(periods)
        sorted_rows = True
    else:
        periods, tc = _time_codes(tt)
        T = len(periods)
        # duplicates unit x time (rows sorted by unit, then time: none, no counting needed)
        sorted_rows = _pairs_increasing(uc, tc, T)
    seen = None  # (the unit x period cells of the rows, while no row is dropped)
    if not sorted_rows:
        seen = _pairs_seen(uc, tc, n_u, T)
        if seen is None or np.count_nonzero(seen) != len(uc):
            seen = None  # (refused below unless it was too large to make)
            refuse_duplicate_pairs(uc, tc, n_u, T, label_row=lambda i: (ulabels[uc[i]],
                                                                        periods[tc[i]]),
                                   estimator=ESTIMATOR, unit_name=unit, time_name=time)
        seen_rows = len(uc)
    dropped_units: dict[str, int] = {}
    rows_out: dict[str, int] = {}

    def drop_rows(mask_keep: np.ndarray, reason: str, units_count: int) -> None:
        nonlocal uc, y, tt, g, xs, ccodes, tc
        n_drop = int((~mask_keep).sum())
        if n_drop == 0:
            return
        rows_out[reason] = rows_out.get(reason, 0) + n_drop
        if units_count:
            dropped_units[reason] = dropped_units.get(reason, 0) + units_count
        uc, y, tt, g = uc[mask_keep], y[mask_keep], tt[mask_keep], g[mask_keep]
        tc = None if tc is None else tc[mask_keep]
        xs = [x[mask_keep] for x in xs]
        if ccodes is not None:
            ccodes = ccodes[mask_keep]

    if all_rows:  # every unit keeps its rows: cohorts from the per-unit values
        fin_u = first[np.isfinite(first)]
        glist, has_never = np.unique(fin_u), len(fin_u) < n_u
    else:
        finite = np.isfinite(g)
        glist, has_never = np.unique(g[finite]), bool((~finite).any())
    if not has_never:
        if control_group == "never_treated":
            raise EstimationError(format_message(
                f"{ESTIMATOR}: there are no never-treated units, so control_group="
                "'never_treated' has no comparison group",
                where=f"column {cohort!r}", seen=f"cohorts {[_fmt(v) for v in glist[:8]]}",
                fix="use control_group='not_yet_treated' (the last cohort then serves only "
                    "as a comparison group), or code never-treated units as 0/NaN"))
        if len(glist) == 0:
            raise EstimationError(f"{ESTIMATOR}: no units in the panel.")
        latest = glist.max()
        cutoff = latest - anticipation
        keep_t = tt < cutoff
        n_before = len(uc)
        drop_rows(keep_t, f"periods at or after {_fmt(cutoff)} (no not-yet-treated "
                  "comparison units remain)", 0)
        if len(uc) < n_before:
            warnings.warn(
                f"{ESTIMATOR}: no never-treated units; dropped {n_before - len(uc)} row(s) in "
                f"periods >= {_fmt(cutoff)} (the last cohort's start minus anticipation), "
                f"where no not-yet-treated comparison units remain; cohort {_fmt(latest)} "
                "only serves as a comparison group (as R did).", DroppedRowsWarning,
                stacklevel=3)
        glist = glist[glist < latest]
        periods = np.unique(tt)
        tc = np.searchsorted(periods, tt)
    if len(periods) < 2:
        raise EstimationError(format_message(
            f"{ESTIMATOR}: at least two periods are needed", seen=[_fmt(p) for p in periods],
            fix="check the time column"))
    first_period = periods[0]
    glist = glist[glist > first_period + anticipation]
    treated_first = np.isfinite(g) & (g <= first_period)
    if treated_first.any():
        n_first = len(np.unique(uc[treated_first]))
        keep_first = ~np.isfinite(g) | np.isin(g, glist)
        n_other = len(np.unique(uc[~keep_first & ~treated_first]))
        drop_rows(~treated_first, f"units already treated in the first period "
                  f"({_fmt(first_period)})", n_first)
        keep_first = ~np.isfinite(g) | np.isin(g, glist)
        if n_other:
            drop_rows(keep_first, "cohorts treated within the anticipation window of the "
                      "first period", n_other)
        msg = (f"{ESTIMATOR}: dropped {n_first} unit(s) already treated in the first period "
               f"({_fmt(first_period)}), as R did does; their ATT(g,t) have no pre-period.")
        warnings.warn(msg, DroppedRowsWarning, stacklevel=3)
        if len(uc) == 0:
            raise EstimationError(format_message(
                f"{ESTIMATOR}: all units are treated in the first period "
                f"({_fmt(first_period)})", fix="an ATT(g,t) needs a pre-treatment period; "
                "add earlier periods to the panel"))
        periods = np.unique(tt)
        tc = np.searchsorted(periods, tt)
        first_period = periods[0]
        glist = glist[glist > first_period + anticipation]
    if len(glist) == 0:
        raise EstimationError(format_message(
            f"{ESTIMATOR}: no cohort has a pre-treatment period (and is not just a comparison "
            "group)", seen=f"first period {_fmt(first_period)}, anticipation {anticipation}",
            fix=f"{cohort!r} must be the first treated period (0/NaN for never treated) and "
                "some cohort must start after the first period + anticipation"))
    T = len(periods)
    if all_rows and sorted_rows and not rows_out and len(uc) == n_u * T:
        # complete panel sorted by unit, then time (unit x time keys 0..n*T-1 in order):
        # the wide matrices are reshapes (copied, Fortran order: contiguous columns)
        Y = np.array(y.reshape(n_u, T), order="F")
        Xw = [np.array(x.reshape(n_u, T), order="F") for x in xs]
        return _finish_panel(Y, Xw, g[::T].copy(), uc, ccodes, n_u, np.ones(n_u, bool),
                             ulabels, periods=periods, cluster=cluster, unit=unit,
                             dropped_rows=dropped_rows, dropped_units=dropped_units,
                             n_input=n_input, glist=glist, obs_mask=None, n_obs=len(uc),
                             balanced=True)
    # balance the panel (R: allow_unbalanced_panel = FALSE)
    if seen is not None and len(uc) == seen_rows and seen.size == n_u * T:
        # no row dropped since: each row is one cell seen (no duplicates), so the units'
        # row counts are the cells seen per unit, summed over the periods' rows of the
        # table (streamed, no scatter of the rows into per-unit counts)
        n_per_unit = seen.reshape(T, n_u).sum(axis=0)
    else:
        n_per_unit = np.bincount(uc, minlength=n_u)
    del seen
    incomplete = (n_per_unit > 0) & (n_per_unit < T)
    balanced = not incomplete.any()
    counted = len(uc)
    if incomplete.any() and not allow_unbalanced:
        n_inc = int(incomplete.sum())
        before = len(uc)
        drop_rows(~incomplete[uc], "units not observed in every period (balanced panel)",
                  n_inc)
        warnings.warn(
            f"{ESTIMATOR}: dropped {n_inc} unit(s) ({before - len(uc)} rows) not observed in "
            f"all {T} periods, to balance the panel as R did does "
            "(allow_unbalanced_panel = FALSE). Counts are in result.diagnostics. To keep "
            "them, pass allow_unbalanced_panel=True (every observation is used; each "
            "ATT(g,t) is then estimated as from repeated cross sections, as R did).",
            DroppedRowsWarning, stacklevel=3)
        if len(uc) == 0:
            raise EstimationError(format_message(
                f"{ESTIMATOR}: no unit is observed in every period", seen=f"{T} periods",
                fix="balance the panel or restrict it to periods where units are observed"))
    # (the units' row counts still hold when balancing dropped nothing)
    present = (n_per_unit if len(uc) == counted else np.bincount(uc, minlength=n_u)) > 0
    n = int(present.sum())
    u2 = uc if n == n_u else (np.cumsum(present) - 1)[uc]  # (codes kept when all present)
    # allow_unbalanced: the repeated-cross-section path only when the panel really is
    # unbalanced; on a balanced panel R did >= 2.3.0 resets allow_unbalanced_panel to
    # FALSE and uses the panel estimators (did NEWS 2.3.0), and so do we
    allow_unbalanced = allow_unbalanced and not balanced
    fill = np.nan if allow_unbalanced else None

    def wide(v: np.ndarray) -> np.ndarray:
        m = (np.empty((n, T), order="F") if fill is None  # column access is contiguous
             else np.full((n, T), fill, order="F"))
        flat = m.reshape(-1, order="F")  # (a view: cell (u, t) at t * n + u)
        for sl in row_blocks(len(v)):
            k = tc[sl] * n
            k += u2[sl]
            flat[k] = v[sl]
        return m

    Y = wide(y)
    obs_mask = None
    if allow_unbalanced:  # the observed cells: no kept row has a missing outcome, so the
        # cells left NaN are exactly the unobserved ones (one pass, not a second scatter)
        obs_mask = np.isnan(Y)
        np.logical_not(obs_mask, out=obs_mask)
    Xw = [wide(x) for x in xs]
    # the kept units' cohorts: their per-unit values (the cohort is the same in every
    # row of a unit, checked above on all rows, so no scatter of the rows is needed)
    coh = first[present] if n < n_u else first.copy()
    dropped_rows.update(rows_out)
    return _finish_panel(Y, Xw, coh, u2, ccodes, n, present, ulabels, periods=periods,
                         cluster=cluster, unit=unit, dropped_rows=dropped_rows,
                         dropped_units=dropped_units, n_input=n_input, glist=glist,
                         obs_mask=obs_mask, n_obs=len(uc), balanced=balanced)


def _finish_panel(Y: np.ndarray, Xw: list[np.ndarray], coh: np.ndarray, u2: np.ndarray,
                  ccodes: np.ndarray | None, n: int, present: np.ndarray, ulabels: Any, *,
                  periods: np.ndarray, cluster: str | None, unit: str,
                  dropped_rows: dict[str, int], dropped_units: dict[str, int], n_input: int,
                  glist: np.ndarray, obs_mask: np.ndarray | None, n_obs: int,
                  balanced: bool) -> _Panel:
    """Cluster codes per unit (checked constant within unit) and the :class:`_Panel`."""
    clu, G = None, 0
    if ccodes is not None:
        first_c = _first_per_unit(u2, ccodes, n)
        if (ccodes != first_c[u2]).any():
            bad_u = ulabels[np.flatnonzero(present)[u2[ccodes != first_c[u2]][0]]]
            raise SpecificationError(format_message(
                f"{ESTIMATOR}: cluster={cluster!r} varies within unit; clusters must be at "
                "or above the unit level", where=f"{unit} = {bad_u!r}",
                fix="cluster by a unit-level (time-invariant) variable, e.g. a region, or "
                    "leave cluster=None to cluster by unit"))
        clu, uniq_c = pd.factorize(first_c)
        G = len(uniq_c)
    return _Panel(Y=Y, X=Xw, cohort=coh, periods=periods, units=np.asarray(ulabels)[present],
                  cluster=clu, n_clusters=G, dropped_rows=dropped_rows,
                  dropped_units=dropped_units, n_input=n_input, glist=glist,
                  present=obs_mask, n_obs=n_obs, balanced=balanced)


# ============================================================================ cells
@dataclass
class _Cells:
    att: np.ndarray
    inf: num.BlockedInfluence
    group: np.ndarray
    time: np.ndarray
    base: np.ndarray
    normalized: np.ndarray
    reasons: dict[str, str]


def _rows_f(m: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``np.asfortranarray(m[rows])`` (rows of a 2-d array, Fortran order): for a small
    result exactly that (the row gather and one transposing copy: a column-by-column
    gather costs a call per column), else gathered column by column into the result
    (one copy, no C-order temporary)."""
    if len(rows) * m.shape[1] <= _ROWS_F_SMALL:
        return np.asfortranarray(m[rows])
    out = np.empty((len(rows), m.shape[1]), dtype=m.dtype, order="F")
    for j in range(m.shape[1]):
        np.take(m[:, j], rows, out=out[:, j])
    return out


#: :func:`_rows_f`: largest result (entries) gathered by rows with a C-order temporary
_ROWS_F_SMALL = 1 << 16


class _RowGroups:
    """The units split by cohort (ascending, the never-treated last): the row groups of
    the blocked influence function. Cell ``k`` is nonzero only on the group of its cohort
    and the groups of its comparison units, so each group stores the (its units x the
    cells it takes part in) block, allocated once the cells' groups are known."""

    def __init__(self, coh_key: np.ndarray) -> None:
        # ``np.unique(coh_key, return_inverse=True)`` without sorting the units: the few
        # distinct cohorts hashed, sorted, and each unit's found among them
        self.values = np.sort(pd.unique(coh_key))
        self.unit_group = np.searchsorted(self.values, coh_key)
        ng = len(self.values)
        self.n_groups = ng
        # sorted units within group: a stable sort of small integers (radix, linear)
        order = self.order_by_group(self.unit_group)
        bounds = np.concatenate([[0], np.cumsum(np.bincount(self.unit_group,
                                                            minlength=ng))])
        self.rows = [order[bounds[j]:bounds[j + 1]] for j in range(ng)]

    def index(self, value: float) -> int | None:
        """The group of the units with cohort ``value``; None when no unit of the panel
        has it (a cohort of the data whose units were all dropped)."""
        j = int(np.searchsorted(self.values, value))
        return j if j < self.n_groups and self.values[j] == value else None

    def allocate(self, part: np.ndarray) -> None:
        """``part`` (n_groups, K) bool: group ``j`` takes part in cell ``k``."""
        K = part.shape[1]
        self.cols = [np.flatnonzero(part[j]) for j in range(self.n_groups)]
        self.local = np.full((self.n_groups, K), -1, dtype=np.intp)
        self.blocks = []
        for j, c in enumerate(self.cols):
            self.local[j, c] = np.arange(len(c))
            self.blocks.append(np.zeros((len(self.rows[j]), len(c)), order="F"))

    def column(self, j: int, k: int) -> np.ndarray:
        """Group ``j``'s (contiguous) column of cell ``k``, written in place."""
        loc = self.local[j, k]
        if loc < 0:  # pragma: no cover - the cells' groups are planned before
            raise RuntimeError(f"internal: group {j} does not take part in cell {k}")
        return self.blocks[j][:, loc]

    def plan(self, units: np.ndarray) -> tuple[int | None, np.ndarray, np.ndarray]:
        """How :meth:`put` scatters values on the sorted units ``units``: the one group
        they make up (or None), else the order that groups them and the counts."""
        g = self.unit_group[units]
        if len(g) and g[0] == g[-1] and len(g) == len(self.rows[g[0]]):
            return int(g[0]), np.empty(0, np.intp), np.empty(0, np.intp)
        return None, self.order_by_group(g), np.bincount(g, minlength=self.n_groups)

    def put(self, k: int, units: np.ndarray, vals: np.ndarray,
            plan: tuple[int | None, np.ndarray, np.ndarray] | None = None) -> None:
        """Write cell ``k``'s values ``vals`` on the sorted units ``units`` (whole groups)
        into the blocks; ``plan``: :meth:`plan` of ``units``, if made before."""
        whole, perm, cnt = self.plan(units) if plan is None else plan
        if whole is not None:
            self.column(whole, k)[:] = vals
            return
        start = 0
        for j in np.flatnonzero(cnt):
            stop = start + cnt[j]
            self.column(int(j), k)[:] = vals[perm[start:stop]]
            start = stop

    def order_by_group(self, g: np.ndarray) -> np.ndarray:
        """``np.argsort(g, kind="stable")`` for group numbers ``g``: as small unsigned
        integers (a radix sort, linear; the same permutation)."""
        ng = self.n_groups
        small = np.uint8 if ng <= 2**8 else np.uint16 if ng <= 2**16 else np.intp
        return np.argsort(g.astype(small), kind="stable")

    def member(self, groups: Sequence[int]) -> np.ndarray:
        """(n units,) bool: the unit is in one of ``groups`` (``np.isin(unit_group,
        groups)`` by one lookup per unit)."""
        sel = np.zeros(self.n_groups, dtype=bool)
        sel[list(groups)] = True
        return sel[self.unit_group]

    def clear(self, k: int) -> None:
        for j in np.flatnonzero(self.local[:, k] >= 0):
            self.blocks[j][:, self.local[j, k]] = 0.0

    #: per group, each cell's coefficients on the outcome's periods (enable_affine)
    M: list[np.ndarray] | None = None
    #: per group whose block is wide, a factor of its units' double-centred
    #: outcomes (set_factor)
    R: dict[int, np.ndarray] | None = None

    def enable_affine(self, T: int) -> None:
        """Record each 2x2 cell without covariates as ``a (Y_cur - Y_b) + c`` on each of
        its groups (the caller fills :attr:`M`, and :meth:`set_factor` for the groups
        :meth:`wants_factor`), so that the influence function's blocks carry their
        affine form (:attr:`BlockedInfluence.affine`)."""
        self._T = T
        self.M = [np.zeros((T, len(c))) for c in self.cols]
        self.R = {}

    def wants_factor(self, j: int) -> bool:
        """Group ``j``'s block is wide enough for its affine form (worth its factor from
        about three cells per period) and has more units than the factor's rows (else
        the block is its own smaller factor: :meth:`BlockedInfluence.gram`)."""
        return (len(self.cols[j]) >= AFFINE_MIN_CELLS_PER_PERIOD * self._T
                and len(self.rows[j]) > self._T + 1)

    def set_factor(self, j: int, Yj: np.ndarray) -> None:
        """Group ``j``'s outcomes (units x periods; overwritten: double-centred in place)
        -> the factor ``R`` of the affine form, ``R' R = Yc' Yc``: from the (periods x
        periods) Gram's eigendecomposition (``sqrt(w) Q'``; the Gram is singular, as
        ``Yc`` 1 = 0, so no Cholesky), one pass over the units where a QR of ``Yc`` is
        several times dearer."""
        Yc = _double_centred(Yj)
        w, q = np.linalg.eigh(Yc.T @ Yc)
        self.R[j] = np.sqrt(np.clip(w, 0.0, None))[:, None] * q.T

    def influence(self, n: int, nan_cols: np.ndarray) -> num.BlockedInfluence:
        keep = [j for j in range(self.n_groups) if len(self.cols[j]) and len(self.rows[j])]
        affine = None
        if self.R is not None:
            affine = tuple((self.R[j], self.M[j]) if j in self.R else None for j in keep)
        return num.BlockedInfluence(
            n, len(nan_cols), tuple(self.rows[j] for j in keep),
            tuple(self.cols[j] for j in keep), tuple(self.blocks[j] for j in keep),
            nan_cols, affine).freeze()


#: a block carries its affine form when it has at least this many cells per period
AFFINE_MIN_CELLS_PER_PERIOD = 3


def _double_centred(Y: np.ndarray) -> np.ndarray:
    """``Y`` less its row means and its column means, plus the grand mean (in place on
    the copy given): differences of periods are unchanged, and with the units' levels
    removed they do not cancel in ``Yc' Yc``."""
    Y -= Y.mean(axis=1, keepdims=True)
    Y -= Y.mean(axis=0)
    return Y


def _compute_cells(p: _Panel, *, control_group: str, method: str, base_period: str,
                   anticipation: int) -> _Cells:
    """All ATT(g, t) as R did ``compute.att_gt2`` (cells ordered by g, then t), with the
    influence function stored in blocks (:class:`_RowGroups`): each cell writes only its
    cohort's and its comparison units' values."""
    Y, periods, coh = p.Y, p.periods, p.cohort
    n, T = Y.shape
    tfac = 1 if base_period == "varying" else 0
    ncell_t = T - tfac
    glist = p.glist
    K = len(glist) * ncell_t
    att = np.full(K, np.nan)
    nan_cols = np.zeros(K, dtype=bool)
    grp = np.repeat(glist, ncell_t)
    tim = np.tile(periods[tfac:], len(glist))
    base = np.full(K, np.nan)
    normalized = np.zeros(K, dtype=bool)
    reasons: dict[str, str] = {}
    never = ~np.isfinite(coh)
    coh_key = np.where(never, np.inf, coh)
    rg = _RowGroups(coh_key)
    never_j = rg.n_groups - 1 if never.any() else None
    # plan: each cell's periods (current, base) and the groups that take part in it
    # (its cohort; the never-treated, or the cohorts not yet treated)
    plan: list[tuple[int, int | None]] = []
    part = np.zeros((rg.n_groups, K), dtype=bool)
    last = np.empty(K, dtype=np.intp)  # the later of the cell's two periods
    for gi, gval in enumerate(glist):
        pre_idx = np.flatnonzero(periods + anticipation < gval)
        pret_g = int(pre_idx[-1]) if len(pre_idx) else None
        tj = rg.index(gval)
        if tj is not None:
            part[tj, gi * ncell_t:(gi + 1) * ncell_t] = True
        for ti in range(ncell_t):
            cur = ti + tfac
            b = pret_g if base_period == "universal" else ti
            if gval <= periods[cur]:
                b = pret_g
            plan.append((cur, b))
            last[gi * ncell_t + ti] = max(cur, cur if b is None else b)
    if control_group == "not_yet_treated":  # the cohorts not yet treated in either period
        vals = rg.values[:, None]
        part |= (vals > periods[last] + anticipation) & (vals != grp)
    elif never_j is not None:
        part[never_j] = True
    rg.allocate(part)
    time_invariant = all(np.all(x == x[:, :1]) for x in p.X)
    X_static = (np.column_stack([np.ones(n)] + [x[:, 0] for x in p.X])
                if p.X and time_invariant else None)
    ps_cache: dict[tuple, num.LogitFit] = {}
    unit_cache: dict[str, Any] = {}
    conv_issue = False
    # balanced panel without covariates (never-treated or not-yet-treated comparisons):
    # every 2x2 cell at once from each group's outcomes (contiguous columns), written
    # into the blocks in place (_closed_cells)
    closed = not p.X and p.present is None
    rc_closed = not p.X and p.present is not None
    if rc_closed:  # unbalanced without covariates: every group's outcomes and presence
        Yg = [_rows_f(Y, r) for r in rg.rows]
        Pg = [_rows_f(p.present, r) for r in rg.rows]
    if closed:
        rg.enable_affine(T)  # (for the Gram of the analytic vcov)
        _closed_cells(rg, Y, plan, part, glist, periods, n, method, base_period, att,
                      nan_cols, base, normalized, reasons)
        return _Cells(att=att, inf=rg.influence(n, nan_cols), group=grp, time=tim,
                      base=base, normalized=normalized, reasons=reasons)
    for gi, gval in enumerate(glist):
        treat = coh_key == gval
        tj = rg.index(gval)
        for ti in range(ncell_t):
            k = gi * ncell_t + ti
            cur, b = plan[k]
            label = f"ATT({_fmt(gval)},{_fmt(periods[cur])})"
            if b is None:
                reasons[label] = "no pre-treatment period"
                nan_cols[k] = True
                continue
            base[k] = periods[b]
            if base_period == "universal" and b == cur:
                att[k] = 0.0
                normalized[k] = True
                continue
            ctrl_j = [int(j) for j in np.flatnonzero(part[:, k]) if j != tj]
            if tj is None or not sum(len(rg.rows[j]) for j in ctrl_j):
                reasons[label] = "no treated or no comparison units"
                nan_cols[k] = True
                continue
            if rc_closed:  # unbalanced: repeated cross sections (R RC path)
                fit = num.cell_closed_form_rc_groups(
                    [Yg[j] for j in (tj, *ctrl_j)], [Pg[j] for j in (tj, *ctrl_j)],
                    cur, b, n, method, [rg.column(j, k) for j in (tj, *ctrl_j)])
            else:
                # the comparison units: those of the groups planned for the cell
                ctrl = rg.member(ctrl_j)
                if p.present is not None:  # unbalanced with covariates (R RC path)
                    fit, units, vals = _rc_cell(p, cur, b, treat, ctrl, method)
                    conv_issue |= fit.reason == "logit did not converge"
                    put_plan = None
                else:
                    # the cell's units, their treatment dummy and (time-invariant)
                    # covariates depend only on the cohort and the comparison groups: made
                    # once for consecutive cells with the same ones (every cell of a
                    # cohort with never-treated comparisons)
                    ukey = (gi, tuple(ctrl_j))
                    if unit_cache.get("key") != ukey:
                        units = np.flatnonzero(treat | ctrl)
                        unit_cache.clear()
                        unit_cache.update(key=ukey, units=units, D=treat[units],
                                          X=X_static[units] if time_invariant else None)
                    units, D = unit_cache["units"], unit_cache["D"]
                    dy = Y[units, cur] - Y[units, b]
                    cov_t = min(b, cur)
                    if time_invariant:
                        X = unit_cache["X"]
                    else:
                        X = np.column_stack([np.ones(len(units))]
                                            + [x[units, cov_t] for x in p.X])
                    ps = None
                    if method in ("dr", "ipw"):
                        ckey = (gi, control_group == "never_treated" or tuple(ctrl_j),
                                0 if time_invariant else cov_t)
                        if ckey not in ps_cache:
                            ps_cache[ckey] = num.logit(X, D.astype(float))
                        ps = ps_cache[ckey]
                        conv_issue |= not ps.converged
                    # (reg: the cohort's comparison split and X_c'X_c kept with its
                    # units while the covariates are time invariant)
                    fit = num.cell_estimate(dy, D, X, n, method, ps=ps,
                                            cache=unit_cache if time_invariant else None)
                    vals = fit.inf
                    if "plan" not in unit_cache:
                        unit_cache["plan"] = rg.plan(units)
                    put_plan = unit_cache["plan"]
                if np.isfinite(fit.att):
                    rg.put(k, units, vals, put_plan)
            att[k] = fit.att
            if np.isnan(fit.att):
                reasons[label] = fit.reason or "the 2x2 estimate is not finite"
                nan_cols[k] = True
                rg.clear(k)  # (scratch left unscaled)
    if conv_issue:
        warnings.warn(f"{ESTIMATOR}: a propensity-score logit did not converge in 100 "
                      "Newton iterations; check overlap and covariate scaling.",
                      ConvergenceWarning, stacklevel=3)
    return _Cells(att=att, inf=rg.influence(n, nan_cols), group=grp, time=tim, base=base,
                  normalized=normalized, reasons=reasons)


def _closed_cells(rg: _RowGroups, Y: np.ndarray, plan: list[tuple[int, int | None]],
                  part: np.ndarray, glist: np.ndarray, periods: np.ndarray, n: int,
                  method: str, base_period: str, att: np.ndarray, nan_cols: np.ndarray,
                  base: np.ndarray, normalized: np.ndarray, reasons: dict[str, str]) -> None:
    """Every ATT(g, t) of a complete panel without covariates at once (filling ``att``,
    ``nan_cols``, ``base``, ``normalized``, ``reasons`` and ``rg``'s blocks and affine
    form): a cell is ``mean(dy | cohort) - mean(dy | comparison groups)`` with ``dy =
    Y_cur - Y_b`` (:func:`~._cs_numerics.cell_closed_form_groups`), so each group's block
    is its outcome changes over all its cells (one product of its outcomes), their
    column sums give every cell's means, and the block is centred and scaled by row
    vectors. The same operations on each value as the cell-by-cell form: the changes, the
    (pairwise) column sums, the comparison groups' sums added in ascending group order,
    the divisions, the centring and the scaling."""
    K = len(plan)
    ncell_t = K // len(glist)
    sizes = np.array([len(r) for r in rg.rows], dtype=np.int64)
    cur = np.array([c for c, _ in plan], dtype=np.intp)
    bb = np.array([-1 if b is None else b for _, b in plan], dtype=np.intp)
    tj = np.repeat([-1 if (j := rg.index(g)) is None else j for g in glist], ncell_t)
    has_t = tj >= 0
    ctrl = part.copy()
    ctrl[tj[has_t], np.flatnonzero(has_t)] = False
    n1 = np.where(has_t, sizes[np.maximum(tj, 0)], 0)
    n0 = sizes @ ctrl
    pre = bb >= 0
    base[pre] = periods[bb[pre]]
    norm = pre & (cur == bb) if base_period == "universal" else np.zeros(K, dtype=bool)
    att[norm] = 0.0
    normalized[norm] = True
    empty = pre & ~norm & ((n1 == 0) | (n0 == 0))
    run = pre & ~norm & ~empty
    why: dict[int, str] = {int(k): "no pre-treatment period" for k in np.flatnonzero(~pre)}
    why.update((int(k), "no treated or no comparison units") for k in np.flatnonzero(empty))
    share = np.divide(n1, n1 + n0, out=np.zeros(K), where=run)
    for k in np.flatnonzero(run & (share >= min(num.OVERLAP_MAX, num.IPW_TRIM))):
        reason = num._share_guard(float(share[k]), method)
        if reason:
            why[int(k)] = reason
            run[k] = False
    # pass 1: each group's outcome changes in its cells (in its block) and their sums
    S = np.zeros((rg.n_groups, K))
    work = []
    for j, cj in enumerate(rg.cols):
        act = run[cj]
        if not len(cj) or not act.any():
            continue
        # every column of the block: those of cells not computed get zeros (no +1/-1
        # in the product, m and a 0 below), so the block is written in place
        cols, tgt = cj, rg.blocks[j]
        on = np.flatnonzero(act)
        Yj = _rows_f(Y, rg.rows[j])  # (the group's outcomes: one group at a time)
        if len(Yj) * max(Yj.shape[1] - 9, 0) <= _DIFF_GEMM_MAX:
            # the changes Y_cur - Y_b as a product with a (periods x cells) matrix of one
            # +1 and one -1 per column: the same two-term difference in every entry (the
            # zeros add nothing); for few units it beats a call per column
            pm = np.zeros((Yj.shape[1], len(cols)))
            pm[cur[cols[on]], on] = 1.0
            pm[bb[cols[on]], on] = -1.0
            np.matmul(Yj, pm, out=tgt)
        else:  # (the product's periods-fold multiply-adds cost more than the calls)
            for i in on:
                k = cols[i]
                np.subtract(Yj[:, cur[k]], Yj[:, bb[k]], out=tgt[:, i])
        S[j, cols] = tgt.sum(axis=0)
        if rg.wants_factor(j):
            rg.set_factor(j, Yj)
        work.append((j, cols, tgt))
    m1 = np.zeros(K)
    m1[run] = S[tj[run], np.flatnonzero(run)] / n1[run]
    acc = np.zeros(K)
    for j in range(rg.n_groups):  # (ascending, as the cell-by-cell sum)
        if ctrl[j].any():
            acc += np.where(ctrl[j], S[j], 0.0)
    m0 = np.divide(acc, n0, out=np.zeros(K), where=run)
    est = m1 - m0
    att[run] = est[run]
    a1 = np.divide(n, n1, out=np.zeros(K), where=run)
    a0 = np.divide(-n, n0, out=np.zeros(K), where=run)
    # pass 2: centre and scale; a cell whose estimate is NaN keeps zeros, and only
    # finite cells record their affine form (as the cell-by-cell form)
    isnan = run & np.isnan(est)
    fin = run & np.isfinite(est)
    for j, cols, tgt in work:  # (m1, m0, a1, a0 are 0 where no cell is computed)
        is_t = tj[cols] == j
        tgt -= np.where(is_t, m1[cols], m0[cols])
        a = np.where(is_t, a1[cols], a0[cols])
        tgt *= a
        bad = np.flatnonzero(isnan[cols])
        if len(bad):
            tgt[:, bad] = 0.0
        f = np.flatnonzero(fin[cols])
        rg.M[j][cur[cols[f]], f] = a[f]
        rg.M[j][bb[cols[f]], f] = -a[f]
    why.update((int(k), "the 2x2 estimate is not finite") for k in np.flatnonzero(isnan))
    for k in sorted(why):
        g, t = glist[k // ncell_t], periods[cur[k]]
        reasons[f"ATT({_fmt(g)},{_fmt(t)})"] = why[k]
        nan_cols[k] = True


#: :func:`_aggregate`: the aggregated columns are made in the blocks' unit order when
#: there are more blocks than the units / this (a column operation on a block's rows
#: costs about as much as putting this many units' values back in order)
BLOCK_ORDER_UNITS = 1000


#: :func:`_closed_cells`: a group's outcome changes by one product (periods-fold
#: multiply-adds, ~0.045 ns each here) rather than one subtraction per cell (~700 ns a
#: call + 0.4 ns an entry) while ``units * (periods - 9)`` is at most this
_DIFF_GEMM_MAX = 15_000


def _rc_cell(p: _Panel, cur: int, b: int, treat: np.ndarray, ctrl: np.ndarray,
             method: str) -> tuple[num.CellFit, np.ndarray, np.ndarray]:
    """One ATT(g, t) with covariates on an unbalanced panel as R did
    (``allow_unbalanced_panel = TRUE``): every observation of the cohort and of the
    comparison group in period ``cur`` or in the base period ``b`` is a repeated cross
    section (DRDID ``*_rc``); the influence function, scaled by ``n_units /
    n_observations``, is summed within unit. Returns the fit, the units of the cell
    (sorted) and their influence values."""
    n = p.Y.shape[0]
    sel = treat | ctrl
    cell_units = np.flatnonzero(sel)
    none = np.empty(0)
    it = np.flatnonzero(sel & p.present[:, cur])
    ib = np.flatnonzero(sel & p.present[:, b])
    counts = (np.count_nonzero(treat[it]), np.count_nonzero(treat[ib]),
              np.count_nonzero(ctrl[it]), np.count_nonzero(ctrl[ib]))
    if min(counts) == 0:
        return (num.CellFit(np.nan, none, "no observations of the cohort or of the "
                            "comparison group in period t or in the base period"),
                cell_units, none)
    units = np.concatenate([it, ib])
    y = np.concatenate([p.Y[it, cur], p.Y[ib, b]])
    post = np.concatenate([np.ones(len(it)), np.zeros(len(ib))])
    D = treat[units]
    X = np.column_stack([np.ones(len(units))]
                        + [np.concatenate([x[it, cur], x[ib, b]]) for x in p.X])
    ps = None
    if method in ("dr", "ipw"):
        ps = num.logit(X, D.astype(float))
    fit = num.cell_estimate_rc(y, post, D, X, n, method, ps=ps)
    vals = none
    if np.isfinite(fit.att):
        vals = np.bincount(units, weights=fit.inf, minlength=n)[cell_units]
        if ps is not None and not ps.converged:
            return (num.CellFit(fit.att, none, "logit did not converge"), cell_units,
                    vals)
    return fit, cell_units, vals


# ============================================================================ inference
def _cluster_sums(inf: np.ndarray | num.BlockedInfluence, codes: np.ndarray | None, G: int,
                  *, nan_to_zero: bool = False) -> np.ndarray:
    """(G, K) sums of the influence function within clusters (the (n, K) matrix itself
    when ``codes`` is None); ``nan_to_zero``: NaNs read as 0 (``np.nan_to_num``)."""
    if isinstance(inf, num.BlockedInfluence):
        if codes is None:
            d = inf.dense()
            return np.nan_to_num(d) if nan_to_zero else d
        return inf.cluster_sums(codes, G, nan_to_zero=nan_to_zero)
    if nan_to_zero:
        inf = np.nan_to_num(inf)
    if codes is None:
        return inf
    from scipy import sparse

    agg = sparse.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))),
                            shape=(G, len(codes)))
    return np.asarray(agg @ inf)


def _analytic_vcov(inf: np.ndarray | num.BlockedInfluence, codes: np.ndarray | None,
                   G: int) -> np.ndarray:
    """``sum_c s_c s_c' / n^2`` with ``s_c`` the cluster (or unit) sum of the influence
    function; for unit clusters this is R did's ``V / n = IF'IF / n^2`` (from the blocks'
    ``V_j' V_j`` when the influence function is blocked)."""
    n = inf.shape[0]
    if codes is None and isinstance(inf, num.BlockedInfluence):
        v = inf.gram() / n**2
    else:
        s = _cluster_sums(inf, codes, G)
        v = s.T @ s / n**2
    # a column holding a NaN (a cell not computed) makes its own row and column of
    # s's cross-product NaN, and only those: the rest is that of the clean columns
    bad = np.isnan(np.diag(v))
    v[bad, :] = np.nan
    v[:, bad] = np.nan
    return v


@dataclass
class _Boot:
    se: np.ndarray
    draws: np.ndarray
    n_eff: int
    #: the draws before unusable columns are set to NaN, and the same weights' sums per
    #: cohort (with ``cohort_codes``; see :class:`_BootDraws`)
    raw: np.ndarray | None = None
    cohort: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class _BootDraws:
    """The multiplier-bootstrap draws of a fit, for its aggregations.

    R did's ``aggte`` draws new weights; with an integer ``seed`` an aggregation draws
    (``default_rng(seed)``) exactly the fit's weights ``v`` again, so its draws are
    ``v @ psi_agg / sqrt(n)`` with ``psi_agg`` a linear function of the cells' influence
    function and of cohort indicators (the estimated-weights term depends on a unit only
    through its cohort): ``cells @ A + cohort @ C``. Kept: ``cells`` (n_reps, K), the
    draws of every ATT(g, t) column (NaN cells as 0), and ``cohort`` (n_reps, m), the
    weights summed over the units of each cohort value ``cohort_values`` (m,; NaN = never
    treated), both over ``sqrt(n)`` (cluster means and ``sqrt(G)`` when clustered, as
    R ``mboot``). The same numbers as new draws, up to rounding (summation order)."""

    n_reps: int
    seed: int
    cluster_codes: np.ndarray | None
    cells: np.ndarray
    cohort: np.ndarray
    cohort_values: np.ndarray

    def usable(self, res: CallawaySantAnnaResult, n_reps: Any, seed: Any) -> bool:
        """The aggregation would draw these very weights: same ``n_reps``, the same
        integer seed, the same clusters (the fit's array itself)."""
        return (n_reps == self.n_reps and _replayable(seed) and seed == self.seed
                and res.cluster_codes is self.cluster_codes)


def _replayable(seed: Any) -> bool:
    """``np.random.default_rng(seed)`` gives the same stream every time it is called."""
    return isinstance(seed, numbers.Integral) and not isinstance(seed, bool)


def _block_cohorts(inf: num.BlockedInfluence, cohort_codes: np.ndarray) -> np.ndarray | None:
    """Each block's cohort code when the blocks' rows cover every unit once and each
    block's units share one cohort (a fit's blocks are its cohorts' row groups), else
    None."""
    if sum(len(r) for r in inf.rows) != inf.n:
        return None
    cat = np.empty(len(inf.rows), dtype=np.intp)
    for j, r in enumerate(inf.rows):
        c = cohort_codes[r]
        if not len(c) or c.min() != c.max():
            return None
        cat[j] = c[0]
    return cat


def _bootstrap(inf: np.ndarray | num.BlockedInfluence, codes: np.ndarray | None, G: int,
               n_draws: int, rng: np.random.Generator | None, *,
               cohort_codes: np.ndarray | None = None, n_cohorts: int = 0,
               draws: np.ndarray | None = None) -> _Boot:
    """R did ``mboot``: multiplier bootstrap of the influence function (cluster means of
    it when clustered), IQR-based standard errors ``(q75 - q25)/(z75 - z25)/sqrt(n)``.
    ``cohort_codes`` (n units,): also sum the weights per cohort (kept with the raw draws,
    :class:`_BootDraws`); ``draws``: the draws, already made (an aggregation's from its
    fit's, :meth:`_BootDraws.usable`), used instead of new weights."""
    blocked = isinstance(inf, num.BlockedInfluence)
    if codes is None:
        psi, n_eff = (inf if blocked else np.nan_to_num(inf)), inf.shape[0]
    else:
        sums = _cluster_sums(inf, codes, G, nan_to_zero=True)
        size = np.bincount(codes, minlength=G).astype(float)
        psi, n_eff = sums / size[:, None], G
    raw = coh = None
    if draws is not None:
        bres = draws
    elif cohort_codes is not None:
        n = inf.shape[0]
        cat = _block_cohorts(psi, cohort_codes) if codes is None and blocked else None
        if cat is not None:  # the blocks are the cohorts: sums from the products' gathers
            bres, coh = num.mammen_bootstrap(psi, n_draws, rng, block_cat=cat,
                                             n_cat=n_cohorts)
        else:
            from scipy import sparse

            # the cohort indicators as the influence function is bootstrapped: per unit,
            # or their cluster means
            ind = (sparse.csr_matrix((np.ones(n), (np.arange(n), cohort_codes)),
                                     shape=(n, n_cohorts)) if codes is None else
                   sparse.csr_matrix((1.0 / size[codes], (codes, cohort_codes)),
                                     shape=(G, n_cohorts)))
            bres, coh = num.mammen_bootstrap(psi, n_draws, rng, extra=ind)
        raw = bres.copy()
    else:
        bres = num.mammen_bootstrap(psi, n_draws, rng)
    has_nan = inf.nan_mask() if blocked else np.isnan(inf).any(axis=0)
    bad = has_nan | ~(np.sum(bres**2, axis=0) > SE_ZERO)
    q = num.quantile_type1(bres, 0.75) - num.quantile_type1(bres, 0.25)
    sigma = q / (stats.norm.ppf(0.75) - stats.norm.ppf(0.25))
    se = sigma / math.sqrt(n_eff)
    se[bad] = np.nan
    bres[:, bad] = np.nan
    return _Boot(se=se, draws=bres, n_eff=n_eff, raw=raw, cohort=coh)


def _sup_t(draws: np.ndarray) -> np.ndarray:
    """Per-draw ``max_k |b_k / sigma_k|`` with IQR-based ``sigma`` (R ``mboot``/``att_gt``)."""
    q = num.quantile_type1(draws, 0.75) - num.quantile_type1(draws, 0.25)
    sigma = q / (stats.norm.ppf(0.75) - stats.norm.ppf(0.25))
    sigma = np.where(sigma <= SE_ZERO, np.nan, sigma)
    ok = np.isfinite(sigma)
    if not ok.any():
        return np.empty(0)
    bt = np.nanmax(np.abs(draws[:, ok] / sigma[ok]), axis=1)
    return bt[np.isfinite(bt)]


def _vcov_spec(kind: str, cluster: str | None, G: int, n: int, n_draws: int | None,
               band: bool) -> VcovSpec:
    if kind == "bootstrap":
        desc = (f"multiplier bootstrap ({n_draws} Mammen draws) of the influence function; "
                "SE = IQR/(z.75 - z.25)/sqrt(n) as R did mboot; correlations from the draws"
                + ("; uniform (sup-t) bands" if band else ""))
    else:
        desc = ("influence-function variance sum_i psi_i psi_i' / n^2 (R did analytic SEs)"
                if cluster is None else
                f"influence function summed within {G} clusters of {cluster}: "
                "sum_c s_c s_c' / n^2")
    return VcovSpec(kind, cluster=(cluster,) if cluster else (),
                    n_clusters=(G,) if cluster else (), df=None, description=desc,
                    interval="uniform" if band else "pointwise")


@dataclass(frozen=True)
class _InfluenceVcov:
    """Re-clustering from the stored influence function (``result.with_vcov``): the
    analytic variance ``sum_c s_c s_c' / n^2`` with the influence function summed within
    the new clusters, as :func:`callaway_santanna` with ``cluster=`` computes it."""

    influence: np.ndarray | num.BlockedInfluence
    units: np.ndarray
    unit: str

    def vcov(self, kind: str, *, cluster: tuple[str, ...], data: pd.DataFrame | None
             ) -> tuple[np.ndarray, VcovSpec]:
        if kind != "cluster":
            raise SpecificationError(format_message(
                f"{ESTIMATOR}: the variance comes from the unit-level influence function; "
                "only vcov='cluster' (by the unit or a unit-level column) can be derived "
                "from it", seen=kind, fix="pass vcov='cluster', cluster='<column>'"))
        if len(cluster) > 1:
            raise SpecificationError(format_message(
                f"{ESTIMATOR}: one cluster variable (R did clustervars)", seen=cluster,
                fix="pass one column"))
        name = cluster[0] if cluster else self.unit
        n = self.influence.shape[0]
        if name == self.unit:
            return (_analytic_vcov(self.influence, None, 0),
                    _vcov_spec("influence_function", None, 0, n, None, False))
        if data is None or name not in data.columns or self.unit not in data.columns:
            raise SpecificationError(format_message(
                f"{ESTIMATOR}: re-clustering by {name!r} needs the data the result was "
                "fitted on", seen=None if data is None else list(data.columns)[:8],
                fix=f"pass data=<the frame> with columns {self.unit!r} and {name!r}"))
        per_unit = data[[self.unit, name]].dropna().drop_duplicates()
        if per_unit[self.unit].duplicated().any():
            bad = per_unit.loc[per_unit[self.unit].duplicated(), self.unit].iloc[0]
            raise SpecificationError(format_message(
                f"{ESTIMATOR}: cluster={name!r} varies within unit; clusters must be at or "
                "above the unit level", where=f"{self.unit} = {bad!r}",
                fix="cluster by a unit-level (time-invariant) variable"))
        lab = pd.Series(per_unit[name].to_numpy(), index=per_unit[self.unit].to_numpy())
        vals = lab.reindex(self.units)
        if vals.isna().any():
            raise SpecificationError(format_message(
                f"{ESTIMATOR}: no {name!r} value for some units of the fit",
                seen=list(vals.index[vals.isna()][:5]),
                fix="pass the frame the result was fitted on"))
        codes, uniq = pd.factorize(vals.to_numpy())
        g = len(uniq)
        return (_analytic_vcov(self.influence, codes, g),
                _vcov_spec("influence_function", name, g, n, None, False))


def _inference(inf: np.ndarray | num.BlockedInfluence, *, codes: np.ndarray | None, G: int,
               bootstrap: int | None, seed: Any, cband: bool,
               normalized: np.ndarray | None = None, band_mask: np.ndarray | None = None,
               cohort_codes: np.ndarray | None = None, n_cohorts: int = 0,
               draws: np.ndarray | None = None):
    """Vcov (analytic or bootstrap-scaled), sup-t draws, the kind, the analytic vcov and
    the bootstrap (:class:`_Boot`, or None) for a set of terms; ``cohort_codes``,
    ``n_cohorts``, ``draws``: see :func:`_bootstrap`."""
    v = _analytic_vcov(inf, codes, G)
    va = v.copy()
    se = np.sqrt(np.clip(np.diag(v), 0, None))
    zero = se <= SE_ZERO
    if normalized is not None:
        zero &= ~normalized
    sup = None
    kind = "influence_function"
    b = None
    if bootstrap:
        rng = None if draws is not None else np.random.default_rng(seed)
        b = _bootstrap(inf, codes, G, bootstrap, rng, cohort_codes=cohort_codes,
                       n_cohorts=n_cohorts, draws=draws)
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.sqrt(np.clip(np.diag(v), 0, None))
            corr = v / np.outer(d, d)
        keep_a = zero | np.isnan(b.se)
        bse = np.where(keep_a, se, b.se)
        corr = np.where(np.isfinite(corr), corr, 0.0)
        np.fill_diagonal(corr, 1.0)
        v = corr * np.outer(bse, bse)
        se = bse
        kind = "bootstrap"
        if cband:
            draws = b.draws if band_mask is None else b.draws[:, band_mask]
            sup = _sup_t(draws)
    for i in np.flatnonzero(zero | np.isnan(se)):
        if normalized is not None and normalized[i]:
            continue
        v[i, :] = np.nan
        v[:, i] = np.nan
    if normalized is not None:
        v[normalized, :] = 0.0
        v[:, normalized] = 0.0
    return v, sup, kind, va, b


# ============================================================================ public
@blas_single_thread
def callaway_santanna(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
                      covariates: Sequence[str] | None = None,
                      control_group: Literal["never_treated", "not_yet_treated"] =
                      "never_treated",
                      method: Literal["dr", "ipw", "reg"] = "dr",
                      base_period: Literal["varying", "universal"] = "varying",
                      anticipation: int = 0, n_reps: int | None = None,
                      seed: int | None = None, cluster: str | None = None,
                      cband: bool = True, alpha: float = 0.05,
                      allow_unbalanced_panel: bool = False,
                      bootstrap: int | None = None) -> CallawaySantAnnaResult:
    """Group-time average treatment effects ATT(g, t) of Callaway & Sant'Anna (2021).

    Each ATT(g, t) compares the outcome change of cohort ``g`` (units first treated in
    ``g``) between a base period and ``t`` with that of a comparison group, by the
    doubly robust, IPW or outcome-regression 2x2 DiD of Sant'Anna & Zhao (2020). The
    result carries the influence function, so :meth:`CallawaySantAnnaResult.aggregate`,
    bootstrap, re-clustering and HonestDiD need no refit.

    Parameters
    ----------
    data : long panel, one row per unit and period (never modified).
    outcome, unit, time : column names (R ``yname``, ``idname``, ``tname``).
    cohort : first treated period (R ``gname``); never treated = 0, NaN or any value
        after the last period.
    covariates : time-invariant covariates (R ``xformla = ~ x1 + x2``), taken in the
        earlier of the two periods of each cell as R did does; an intercept is added.
    control_group : ``"never_treated"`` or ``"not_yet_treated"`` (R ``"nevertreated"`` /
        ``"notyettreated"``: never treated plus units treated after ``max(t, base) +
        anticipation``).
    method : ``"dr"`` (R ``est_method="dr"``, DRDID ``drdid_panel``), ``"ipw"``
        (``std_ipw_did_panel``, normalised IPW with trimming at 0.995) or ``"reg"``
        (``reg_did_panel``).
    base_period : ``"varying"`` (pre-period cells compare t with t - 1) or
        ``"universal"`` (every cell compares with g - 1 - anticipation; the cell
        t = g - 1 - anticipation is the normalisation, 0 with zero variance).
    anticipation : periods of anticipation (R ``anticipation``).
    n_reps : ``None`` for analytic influence-function SEs (R ``bstrap=FALSE``) or the
        number of multiplier-bootstrap draws (R ``bstrap=TRUE, biters=n``), Mammen weights.
        ``bootstrap=`` is its deprecated old name (still accepted, with a warning). With
        an integer ``seed`` the draws are kept (n_reps x cells, and x cohorts) for the
        aggregations, which would draw the same weights again.
    seed : seed of the bootstrap draws (``numpy.random.default_rng(seed)``).
    cluster : a unit-level column to cluster by (R ``clustervars``); must be constant
        within unit. Analytic SEs sum the influence function within clusters; the
        bootstrap follows R ``mboot`` (cluster means, ``sqrt(G)`` scaling).
    cband : with ``bootstrap``, report uniform (sup-t) confidence bands (R ``cband``).
    alpha : significance level of the intervals (R ``alp``).
    allow_unbalanced_panel : R's ``allow_unbalanced_panel``. ``False`` (default): units not
        observed in every period are dropped (counted, warning) and the panel estimators
        are used. ``True``: every observation is kept (also units observed only once) and
        each ATT(g, t) is estimated as from repeated cross sections (DRDID ``drdid_rc``,
        ``std_ipw_did_rc``, ``reg_did_rc``) on all observations of the cohort and of the
        comparison group in period ``t`` or in the base period; the influence function is
        summed within unit, so standard errors, clustering, the bootstrap and
        ``.aggregate()`` remain at the unit level (R did's unbalanced-panel path).

    Returns
    -------
    CallawaySantAnnaResult
        Terms ``"ATT(g,t)"`` with ``term_info`` columns ``cohort``, ``time``,
        ``rel_time`` and ``base``; ``spec["base_period"]``; ``pretrend_test``, the
        pre-test of parallel trends (a :class:`~twinimpact.results.PretrendTest`: Wald
        chi2 statistic that every pre-treatment ATT(g, t) is zero, as R); ``diagnostics``
        with ``dropped_rows``, ``dropped_units``, cells not computed and cohort sizes.
        ``with_vcov("cluster", cluster=col, data=frame)`` re-clusters from the influence
        function.

    Notes
    -----
    Unbalanced panels are balanced by dropping units not observed in every period
    (R's default ``allow_unbalanced_panel = FALSE``); the dropped units are counted.
    With ``allow_unbalanced_panel=True`` an unbalanced panel is kept whole and each
    ATT(g, t) is estimated as from repeated cross sections (DRDID ``drdid_rc``,
    ``reg_did_rc``, ``std_ipw_did_rc``) with the influence function summed within unit; on
    unbalanced panels units seen in only one of the two periods enter through their
    levels. On a panel that turns out to be balanced the panel estimators are used, as R
    did >= 2.3.0 does (it resets ``allow_unbalanced_panel`` to ``FALSE``; did NEWS 2.3.0),
    so R 2.5's numbers are reproduced either way; ``diagnostics["notes"]`` says so.
    Units already treated in the first period are dropped (counted, warning), as R.
    Without never-treated units ``control_group="never_treated"`` is an error (R 2.5
    instead recodes the last cohort as never treated); with ``"not_yet_treated"`` the
    periods from the last cohort's start on are dropped and that cohort only serves as
    a comparison group, as R.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from twinimpact.estimators.callaway_santanna import callaway_santanna
    >>> rng = np.random.default_rng(1)
    >>> df = pd.DataFrame([(u, t) for u in range(90) for t in range(2001, 2007)],
    ...                   columns=["city", "year"])
    >>> df["first_twinned"] = np.select([df.city < 30, df.city < 60], [2004, 2005], 0)
    >>> df["exports"] = rng.normal(size=len(df)) + 2.0 * (
    ...     (df.first_twinned > 0) & (df.year >= df.first_twinned))
    >>> res = callaway_santanna(df, outcome="exports", unit="city", time="year",
    ...                         cohort="first_twinned")
    >>> res.terms[0]
    'ATT(2004,2002)'
    >>> bool(abs(res.aggregate("simple").params["ATT"] - 2.0) < 0.5)
    True
    """
    data = as_frame(data, what="callaway_santanna: data")
    covariates = list(covariates or [])
    check_literal("control_group", control_group, CONTROL_GROUPS)
    check_literal("method", method, METHODS)
    check_literal("base_period", base_period, BASE_PERIODS)
    _check_int("anticipation", anticipation, minimum=0)
    bootstrap = renamed_keyword(ESTIMATOR, "bootstrap", "n_reps", bootstrap, n_reps)
    _check_int("n_reps", bootstrap, minimum=1, allow_none=True)
    check_alpha(alpha)
    if not isinstance(cband, bool):
        raise SpecificationError(f"cband must be True or False; got {cband!r}.")
    if cluster is not None and not isinstance(cluster, str):
        raise SpecificationError(format_message(
            f"{ESTIMATOR}: cluster= must be one column name (R did supports one cluster "
            "variable besides the unit)", seen=cluster, fix="pass cluster='<column>'"))
    if cluster == unit:
        cluster = None  # clustering by unit is the default (R drops idname too)
    if len(set(covariates)) != len(covariates):
        raise SpecificationError(f"covariates contains duplicates: {covariates}.")

    if not isinstance(allow_unbalanced_panel, bool | np.bool_):
        raise SpecificationError(format_message(
            f"{ESTIMATOR}: allow_unbalanced_panel must be True or False",
            seen=allow_unbalanced_panel, fix="pass allow_unbalanced_panel=True or False"))
    allow_unbalanced_panel = bool(allow_unbalanced_panel)

    p = _prepare(data, outcome=outcome, unit=unit, time=time, cohort=cohort,
                 covariates=covariates, cluster=cluster, control_group=control_group,
                 anticipation=int(anticipation), allow_unbalanced=allow_unbalanced_panel)
    n, T = p.Y.shape
    # small cohorts (R: fewer than length(covariates) + 5 units; on the unbalanced path
    # R counts observations / number of periods)
    req = len(covariates) + 5
    coh_key = np.where(np.isfinite(p.cohort), p.cohort, np.inf)
    gvals, gcounts = np.unique(coh_key, return_counts=True)
    sizes = {("never" if not np.isfinite(gv) else _fmt(gv)): int(c)
             for gv, c in zip(gvals, gcounts, strict=True)}
    if p.present is not None:
        obs_per_unit = p.present.sum(axis=1)
        rows_g = np.bincount(np.searchsorted(gvals, coh_key), weights=obs_per_unit,
                             minlength=len(gvals))
        size_check = {k: float(r) / T for k, r in zip(sizes, rows_g, strict=True)}
    else:
        size_check = sizes
    small = {k: sizes[k] for k, v in size_check.items() if v < req}
    if small:
        if "never" in small and control_group == "never_treated":
            raise EstimationError(format_message(
                f"{ESTIMATOR}: the never-treated group is too small ({small['never']} units; "
                f"R did requires at least number of covariates + 5 = {req})",
                fix="try control_group='not_yet_treated'"))
        listed = ", ".join(f"{k} ({v:g} unit{'' if v == 1 else 's'})"
                           for k, v in small.items())
        warnings.warn(
            f"{ESTIMATOR}: some cohorts are small (fewer than {req} units = number of "
            f"covariates + 5, R did's threshold): {listed}. Their ATT(g,t) may be imprecise "
            "or not computable.", DataWarning, stacklevel=2)

    cells = _compute_cells(p, control_group=control_group, method=method,
                           base_period=base_period, anticipation=int(anticipation))
    K = len(cells.att)
    labels = [f"ATT({_fmt(g)},{_fmt(t)})" for g, t in zip(cells.group, cells.time,
                                                          strict=True)]
    if cells.reasons:
        warnings.warn(
            f"{ESTIMATOR}: {len(cells.reasons):,} ATT(g,t) could not be computed and are NaN: "
            + "; ".join(f"{k}: {v}" for k, v in list(cells.reasons.items())[:6])
            + ("…" if len(cells.reasons) > 6 else "")
            + ". Aggregate with na_rm=True to drop them.", NotComputableWarning, stacklevel=2)
    # with an integer seed the aggregations would draw the fit's weights again: their
    # draws are kept instead (_BootDraws), with the weights' sums per cohort
    keep_draws = bool(bootstrap) and _replayable(seed)
    coh_values, coh_codes = (np.unique(p.cohort, return_inverse=True) if keep_draws
                             else (None, None))
    codes_ro = None if p.cluster is None else _ro(p.cluster)
    v, sup, kind, va, boot = _inference(
        cells.inf, codes=p.cluster, G=p.n_clusters, bootstrap=bootstrap, seed=seed,
        cband=cband, normalized=cells.normalized, cohort_codes=coh_codes,
        n_cohorts=0 if coh_values is None else len(coh_values))
    boot_draws = (_BootDraws(bootstrap, seed, codes_ro, _ro(boot.raw), _ro(boot.cohort),
                             _ro(coh_values)) if keep_draws else None)

    # pre-test (R att_gt): Wald test that all pre-treatment ATT(g,t) are zero, analytic V
    se_a = np.sqrt(np.clip(np.diag(va), 0, None))
    pre = np.flatnonzero((cells.group > cells.time) & ~(se_a <= SE_ZERO) & ~np.isnan(se_a))
    pre = pre[~cells.normalized[pre]]
    # V_pre = F'F with F the (cluster) sums of the pre columns of the influence function
    # over n: a singular V_pre's rank and identified directions come from F's thin SVD
    # (made only then: a (clusters x pre-cells) copy no regular fit needs), made once for
    # both (with 40 cohorts, F = 2000 x 980, the two SVDs were 0.61 s of a 0.89 s fit)
    # (per unit: F's triangular factor from the blocks, without the (units x pre-cells)
    # dense copy; R' R = F' F, so the same singular values and right vectors)
    @functools.cache
    def factor() -> FactorSVD:
        s = (cells.inf.r_factor(pre) if p.cluster is None
             else cells.inf.cluster_sums(p.cluster, p.n_clusters)[:, pre])
        return factor_svd(s / cells.inf.shape[0])

    pretest = wald_pretrend_test(
        [labels[i] for i in pre], cells.att[pre], va[np.ix_(pre, pre)],
        what="Wald test that all pre-treatment ATT(g,t) are zero (chi2, analytic "
             "influence-function vcov, as R did)", estimator=ESTIMATOR, factor=factor,
        scale=variance_scale(va))
    if not pretest.computed and "singular" in pretest.note:
        pretest = _singular_pretest(pretest, cells.att[pre], va[np.ix_(pre, pre)],
                                    int(p.n_clusters or n),
                                    "clusters" if p.n_clusters else "units",
                                    factor=factor())
    term_info = pd.DataFrame({"cohort": cells.group, "time": cells.time,
                              "rel_time": cells.time - cells.group, "base": cells.base},
                             index=labels)
    spec = dict(outcome=outcome, unit=unit, time=time, cohort=cohort,
                covariates=tuple(covariates), control_group=control_group, method=method,
                base_period=base_period, anticipation=int(anticipation),
                n_reps=bootstrap, seed=seed, cluster=cluster, cband=cband, alpha=alpha,
                allow_unbalanced_panel=allow_unbalanced_panel)
    diagnostics = {
        "dropped_rows": dict(p.dropped_rows), "dropped_units": dict(p.dropped_units),
        "n_input_rows": p.n_input, "n_units": n, "n_periods": T,
        "periods": tuple(float(x) for x in p.periods),
        "cohorts": tuple(float(x) for x in p.glist), "cohort_sizes": sizes,
        "cells_not_computed": dict(cells.reasons),
        "normalized_cells": tuple(lab for lab, z in zip(labels, cells.normalized,
                                                        strict=True) if z),
        "n_used_rows": p.n_obs, "balanced_panel": p.balanced,
        "estimation_path": ("repeated_cross_sections" if p.present is not None
                            else "panel"),
    }
    if allow_unbalanced_panel and p.balanced:
        diagnostics["notes"] = (
            "allow_unbalanced_panel=True on a balanced panel: the panel estimators are used, "
            "as R did >= 2.3.0 does (it resets allow_unbalanced_panel to FALSE).",)
    if p.present is not None:
        per_unit = p.present.sum(axis=1)
        k_obs, k_units = np.unique(per_unit, return_counts=True)
        diagnostics["units_by_periods_observed"] = {int(a): int(c) for a, c in zip(
            k_obs, k_units, strict=True)}
        diagnostics["n_units_observed_once"] = int(np.count_nonzero(per_unit == 1))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotComputableWarning)  # announced above
        res = make_result(
            ESTIMATOR, pd.Series(cells.att, index=labels), v,
            _vcov_spec(kind, cluster, p.n_clusters, n, bootstrap, sup is not None),
            nobs=p.n_obs, spec=spec, diagnostics=diagnostics, term_info=term_info,
            cls=CallawaySantAnnaResult, influence_source=cells.inf,
            cluster_codes=codes_ro, boot_draws=boot_draws,
            sup_t=None if sup is None else _ro(sup), band=sup is not None,
            unit_cohort=_ro(p.cohort), units=_ro(p.units), pretrend_test=pretest,
            vcov_source=_InfluenceVcov(cells.inf, _ro(p.units), unit))
    del K
    return res  # type: ignore[return-value]


def _singular_pretest(pretest: PretrendTest, att: np.ndarray, pv: np.ndarray, n_cl: int,
                      what: str, factor: np.ndarray | FactorSVD | None = None
                      ) -> PretrendTest:
    """R did leaves the pre-test undefined when the covariance of the pre-treatment
    ATT(g,t) is singular; say why and attach, as an extension, the Wald test on the
    identified directions (pseudo-inverse, df = rank) and a Bonferroni max-|t| test.
    ``factor``: ``F`` with ``pv = F'F``, or its :func:`factor_svd` (see
    :func:`wald_identified`)."""
    ext = wald_identified(att, pv, factor=factor)
    k = len(att)
    extension = {
        **ext, "label": "extension, not in R did: Wald test on the identified directions "
                        "(Moore-Penrose pseudo-inverse), chi2 with df = rank; the chi2 "
                        "approximation needs the rank to be well below the number of "
                        f"{what} ({ext['rank']} vs {n_cl}) and ignores the part of the "
                        "estimates outside those directions "
                        f"({ext['outside_share']:.0%} of their squared length)",
        "n_clusters": n_cl,
        "bonferroni": bonferroni_max_t(att, pv)}
    note = (f"not computed (as R did): the {k} pre-treatment ATT(g,t) carry only "
            f"{ext['rank']} independent pieces of information (their covariance is singular: "
            f"rank {ext['rank']} < {k}, with {n_cl} {what} behind them), so the joint Wald "
            "statistic, which needs the inverse of that covariance, is undefined; "
            "pretrend_test.extension holds the Wald test on the identified directions and "
            "a Bonferroni max-|t| test")
    return dataclasses.replace(pretest, rank=ext["rank"], note=note, extension=extension)


def _axpy(x: np.ndarray, y: np.ndarray, a: float) -> None:
    """``y += a * x`` in place (BLAS daxpy on contiguous float64 columns)."""
    from scipy.linalg import blas

    if blas.daxpy(x, y, a=a) is not y:  # pragma: no cover - y was not updated in place
        raise RuntimeError("internal: daxpy did not update its output in place")


def _ro(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    a.setflags(write=False)
    return a


# ============================================================================ aggregation
def _aggregate(res: CallawaySantAnnaResult, type: str, *, min_e, max_e, balance_e, na_rm,
               bootstrap, seed, cband, alpha) -> CSAggregateResult:
    type = AGGREGATION_SYNONYMS.get(type, type)
    check_literal("type", type, (*AGGREGATIONS, *AGGREGATION_SYNONYMS))
    spec = dict(res.spec)
    bootstrap = spec.get("n_reps") if bootstrap is _MISSING else bootstrap
    seed = spec.get("seed") if seed is _MISSING else seed
    cband = spec.get("cband", True) if cband is _MISSING else cband
    alpha = spec.get("alpha", 0.05) if alpha is _MISSING else alpha
    _check_int("n_reps", bootstrap, minimum=1, allow_none=True)
    check_alpha(alpha)
    _check_int("balance_e", balance_e, minimum=0, allow_none=True)
    for name, val in (("min_e", min_e), ("max_e", max_e)):
        if val is not None and (isinstance(val, bool) or not isinstance(val, numbers.Real)):
            raise SpecificationError(f"{name} must be a number or None; got {val!r}.")
    min_e = -np.inf if min_e is None else float(min_e)
    max_e = np.inf if max_e is None else float(max_e)

    info = res.term_info
    att = res.coef.copy()
    group = info["cohort"].to_numpy(dtype=float)
    t = info["time"].to_numpy(dtype=float)
    inf = res.influence_source
    if not isinstance(inf, num.BlockedInfluence):
        inf = num.BlockedInfluence.from_dense(np.asarray(inf))
    cell_col = np.arange(len(att))  # each kept cell's column of the influence function
    G = np.asarray(res.unit_cohort)
    n = inf.shape[0]
    missing = np.isnan(att)
    if missing.any():
        if not na_rm:
            bad = [res.terms[i] for i in np.flatnonzero(missing)][:6]
            raise EstimationError(format_message(
                f"{ESTIMATOR}: some ATT(g,t) are NaN and would enter the aggregate",
                seen=bad, fix="pass na_rm=True to drop them (R aggte(na.rm = TRUE)) or see "
                "result.diagnostics['cells_not_computed']"))
        keep = ~missing
        if type == "group":
            ok_g = {g for g in np.unique(group[keep])
                    if not np.isnan(att[keep & (group == g) & (g <= t)]).any()
                    and (keep & (group == g) & (g <= t)).any()}
            keep &= np.isin(group, list(ok_g))
        att, group, t, cell_col = att[keep], group[keep], t[keep], cell_col[keep]
    glist = np.unique(group)
    # recoded periods (R orig2t): position among the cells' periods and the cohorts
    gt_list = np.unique(np.concatenate([t, glist]))
    tr = np.searchsorted(gt_list, t).astype(float)
    gr = np.searchsorted(gt_list, group).astype(float)
    gpos = np.searchsorted(glist, G)
    gpos_c = np.minimum(gpos, len(glist) - 1)
    unit_gidx = np.where(glist[gpos_c] == G, gpos_c, -1)  # -1: never treated / not kept
    # the same index for the per-cohort gathers: -1 -> len(glist), the appended last
    # value, so that np.take needs no negative-index or bounds handling
    take_idx = np.where(unit_gidx < 0, len(glist), unit_gidx).astype(np.intp)
    # with many blocks for their units, the aggregated columns are made with the units in
    # the influence function's block order (each block's rows one slice: no row gather
    # and scatter, a few microseconds, per block and column) and put back in unit order
    # once at the end (a few nanoseconds per unit and column)
    permuted = len(inf.rows) * BLOCK_ORDER_UNITS > n
    if permuted:
        order = inf.block_order()
        take_idx = take_idx[order]
    pg_group = np.bincount(unit_gidx[unit_gidx >= 0], minlength=len(glist)) / len(G)
    cell_gidx = np.searchsorted(glist, group)
    pg = pg_group[cell_gidx]

    # the aggregated influence functions are written column by column into one
    # Fortran-order (n, rows) matrix: each is a weighted sum of the cells' columns
    # (BLAS axpy on the blocks' contiguous columns, over the rows of each block only)
    # plus the estimated-weights term, which depends on a unit only through its cohort
    # (one gather)
    rows: list[tuple[str, dict, float, int]] = []
    psi_all = np.empty((n, 0))
    # with the fit's bootstrap draws reusable (_BootDraws), each column is also kept as
    # its coefficients on the cells' columns (a_cell) and on the cohort indicators
    # (a_coh: take_idx's categories), so its draws need no new weights
    reuse = res.boot_draws if (bootstrap and res.boot_draws is not None
                               and res.boot_draws.usable(res, bootstrap, seed)) else None
    a_cell = a_coh = np.empty((0, 0))
    pending: list[tuple[int, np.ndarray, np.ndarray]] = []

    def alloc(n_terms: int) -> np.ndarray:
        nonlocal psi_all, a_cell, a_coh
        psi_all = np.empty((n, n_terms), order="F")
        if reuse is not None:
            a_cell = np.zeros((len(res.coef), n_terms))
            a_coh = np.zeros((len(glist) + 1, n_terms))
        return psi_all

    def combo(which: np.ndarray, weights: np.ndarray, with_wif: bool, col: int) -> float:
        est = float(att[which] @ weights)
        out = psi_all[:, col]
        if with_wif:
            vals = num.weights_influence_by_cohort(len(glist), cell_gidx[which], pg[which],
                                                   att[which])
            np.take(vals, take_idx, out=out, mode="clip")  # (indices all in range)
            if reuse is not None:
                a_coh[:, col] = vals
        else:
            out[:] = 0.0
        if permuted:
            pending.append((col, cell_col[which], weights))  # (added by flush)
        else:  # (at once, while the column is in cache)
            inf.add_columns(cell_col[which], weights, out)
        if reuse is not None:
            a_cell[cell_col[which], col] = weights
        return est

    def flush() -> None:
        """In the block order, add the cells' columns of every column made so far (one
        pass per block)."""
        if pending:
            inf.add_columns_many(pending, psi_all)
            pending.clear()

    def mean_of(cols: list[int], col: int) -> None:
        flush()
        out = psi_all[:, col]
        out[:] = psi_all[:, cols[0]]
        for c in cols[1:]:
            out += psi_all[:, c]
        out /= len(cols)
        if reuse is not None:
            a_cell[:, col] = a_cell[:, cols].sum(axis=1) / len(cols)
            a_coh[:, col] = a_coh[:, cols].sum(axis=1) / len(cols)

    overall_est = np.nan
    overall_col = None
    spec_extra: dict[str, Any] = {}
    if type == "simple":
        keepers = np.flatnonzero((gr <= tr) & (tr <= gr + max_e))
        alloc(1)
        overall_col = 0
        overall_est = combo(keepers, pg[keepers] / pg[keepers].sum(), True, overall_col)
    elif type == "group":
        att_g, cols_g = [], []
        alloc(len(glist) + 1)
        for g in glist:
            w = np.flatnonzero((group == g) & (g <= t) & (tr <= gr + max_e))
            col = len(rows)
            if len(w) == 0:
                att_g.append(np.nan)
                cols_g.append(None)
                continue
            e = combo(w, pg[w] / pg[w].sum(), False, col)
            att_g.append(e)
            cols_g.append(col)
            rows.append((f"cohort={_fmt(g)}", {"cohort": g}, e, col))
        att_g = np.array(att_g)
        overall_col = len(rows)
        # estimated cohort shares enter the overall weights (R wif over the cohorts;
        # reproduces R did 2.5's group SE on mpdta to 1e-12)
        share = pg_group / pg_group.sum()
        overall_est = float(att_g @ share)
        flush()
        out = psi_all[:, overall_col]
        vals = num.weights_influence_by_cohort(len(glist), np.arange(len(glist)),
                                               pg_group, att_g)
        np.take(vals, take_idx, out=out, mode="clip")
        if reuse is not None:
            a_coh[:, overall_col] = vals
        for c, w in zip(cols_g, share, strict=True):
            if c is None:  # a cohort without post cells: NaN, as its column would be
                out[:] = np.nan
            else:
                _axpy(psi_all[:, c], out, float(w))
                if reuse is not None:
                    a_cell[:, overall_col] += float(w) * a_cell[:, c]
                    a_coh[:, overall_col] += float(w) * a_coh[:, c]
    elif type == "dynamic":
        e_all = t - group
        include = np.ones(len(att), dtype=bool)
        eseq = np.unique(e_all)
        if balance_e is not None:
            tmax, tmin = gt_list[int(tr.max())], gt_list[int(tr.min())]
            include = (tmax - group) >= balance_e
            eseq = np.unique(e_all[include])
            eseq = eseq[(eseq <= balance_e) & (eseq >= balance_e - tmax + tmin)]
        eseq = eseq[(eseq >= min_e) & (eseq <= max_e)]
        if len(eseq) == 0:
            raise EstimationError(format_message(
                f"{ESTIMATOR}: no event time left in the requested window",
                seen={"min_e": min_e, "max_e": max_e, "balance_e": balance_e},
                fix="widen min_e/max_e or lower balance_e"))
        if spec.get("base_period") == "universal":
            # the reference period -1 - anticipation is a normalisation (0 by construction,
            # zero variance); omitted like every event study's reference, kept in spec
            ref = -1 - int(spec.get("anticipation", 0))
            eseq = eseq[eseq != ref]
            spec_extra["ref"] = (ref,)
        att_e, cols_e = [], []
        alloc(len(eseq) + 1)
        for e in eseq:
            w = np.flatnonzero((e_all == e) & include)
            col = len(rows)
            est = combo(w, pg[w] / pg[w].sum(), True, col)
            att_e.append(est)
            cols_e.append(col)
            rows.append((f"rel_time={_fmt(e)}", {"rel_time": e}, est, col))
        pos = eseq >= 0
        if pos.any():
            overall_est = float(np.mean(np.array(att_e)[pos]))
            overall_col = len(rows)
            mean_of([c for c, p_ in zip(cols_e, pos, strict=True) if p_], overall_col)
        spec_extra.update({"min_e": None if np.isinf(min_e) else min_e,
                           "max_e": None if np.isinf(max_e) else max_e,
                           "balance_e": balance_e})
    else:  # calendar
        tcal = np.unique(t[t >= group.min()])
        att_t, cols_t = [], []
        alloc(len(tcal) + 1)
        for t1 in tcal:
            w = np.flatnonzero((t == t1) & (group <= t))
            if len(w) == 0:
                continue
            col = len(rows)
            est = combo(w, pg[w] / pg[w].sum(), True, col)
            att_t.append(est)
            cols_t.append(col)
            rows.append((f"time={_fmt(t1)}", {"time": t1}, est, col))
        overall_est = float(np.mean(att_t))
        overall_col = len(rows)
        mean_of(cols_t, overall_col)
    flush()
    if overall_col is None:  # no post-treatment event time: the overall row is NaN-free 0
        overall_col = len(rows)
        psi_all[:, overall_col] = 0.0
    rows.append(("ATT", {}, overall_est, overall_col))

    if permuted:  # back in unit order, column by column
        inv = np.empty(n, dtype=np.intp)
        inv[order] = np.arange(n)
        for c in range(len(rows)):
            psi_all[:, c] = psi_all[inv, c]
    terms = [r[0] for r in rows]
    est = np.array([r[2] for r in rows])
    if overall_col != len(rows) - 1:  # pragma: no cover - columns follow the rows
        raise RuntimeError("internal: aggregated influence columns out of order")
    psi = psi_all if psi_all.shape[1] == len(rows) else np.array(
        psi_all[:, :len(rows)], order="F")  # (a cohort or period without cells)
    band_mask = np.array([r[0] != "ATT" for r in rows])
    codes = None if res.cluster_codes is None else np.asarray(res.cluster_codes)
    Gc = res.vcov_spec.n_clusters[0] if res.vcov_spec.n_clusters else 0
    do_band = bool(cband and bootstrap and band_mask.any())
    draws = None
    if reuse is not None:
        m = len(rows)
        # each fit cohort value's category among take_idx's (len(glist): none kept)
        cv = reuse.cohort_values
        pos = np.minimum(np.searchsorted(glist, cv), max(len(glist) - 1, 0))
        cat = (np.where(glist[pos] == cv, pos, len(glist)) if len(glist)
               else np.zeros(len(cv), dtype=np.intp))
        by_cat = np.zeros((reuse.cohort.shape[0], len(glist) + 1))
        for j, c in enumerate(cat):
            by_cat[:, c] += reuse.cohort[:, j]
        draws = reuse.cells @ a_cell[:, :m] + by_cat @ a_coh[:, :m]
    v, sup, kind, va, _ = _inference(psi, codes=codes, G=Gc, bootstrap=bootstrap,
                                     seed=seed, cband=do_band, band_mask=band_mask,
                                     draws=draws)
    if sup is not None:
        crit = float(num.quantile_type1(sup, 1 - alpha)) if len(sup) else np.nan
        if not np.isfinite(crit) or crit < stats.norm.ppf(1 - alpha / 2):
            warnings.warn(f"{ESTIMATOR}: the simultaneous critical value is not usable or "
                          "smaller than the pointwise one; reporting pointwise intervals "
                          "(as R did).", NotComputableWarning, stacklevel=3)
            sup = None
        elif crit >= CRIT_TOO_LARGE:
            warnings.warn(f"{ESTIMATOR}: the simultaneous critical value {crit:.2f} is "
                          "arguably too large to be reliable (few units per cohort?).",
                          DataWarning, stacklevel=3)
    keep_col = {"dynamic": "rel_time", "group": "cohort", "calendar": "time"}.get(type)
    tinfo = None if keep_col is None else pd.DataFrame(
        {keep_col: np.array([float(r[1].get(keep_col, np.nan)) for r in rows])},
        index=terms)
    aspec = {**spec, "aggregation": type, "na_rm": na_rm, "n_reps": bootstrap,
             "seed": seed, "cband": cband, "alpha": alpha, **spec_extra}
    diagnostics = {"dropped_rows": dict(res.diagnostics.get("dropped_rows", {})),
                   "n_input_rows": res.diagnostics.get("n_input_rows"),
                   "n_used_rows": res.nobs, "n_units": n,
                   "cells_dropped_na": int(missing.sum())}
    pretest = None
    if type == "dynamic":  # its own pre-period event-time coefficients, analytic vcov
        pre = [i for i, r in enumerate(rows) if r[1].get("rel_time", 0) < 0]
        pretest = wald_pretrend_test(
            [terms[i] for i in pre], est[pre], va[np.ix_(pre, pre)],
            what="Wald test that all pre-treatment event-time effects are zero (chi2, "
                 "analytic influence-function vcov)", estimator=ESTIMATOR,
            scale=variance_scale(va))
    att_def = {
        "simple": ATTDefinition("cohort_size_weighted", "R did aggte(type = 'simple')"),
        "group": ATTDefinition("cohort_size_weighted",
                               "mean of the cohort effects weighted by cohort size, R did "
                               "aggte(type = 'group')"),
        "dynamic": ATTDefinition("equal_weighted_post_periods",
                                 "R did aggte(type = 'dynamic') overall effect"),
        "calendar": ATTDefinition("equal_weighted_calendar_periods",
                                  "R did aggte(type = 'calendar') overall effect"),
    }[type]
    return make_result(  # type: ignore[return-value]
        ESTIMATOR, pd.Series(est, index=terms), v,
        _vcov_spec(kind, spec.get("cluster"), Gc, n, bootstrap, sup is not None),
        nobs=res.nobs, spec=aspec, diagnostics=diagnostics, term_info=tinfo,
        cls=CSAggregateResult, nan_reason="no ATT(g,t) (or zero variance) for this row",
        influence_source=_ro(psi), cluster_codes=res.cluster_codes,
        sup_t=None if sup is None else _ro(sup), band=sup is not None,
        pretrend_test=pretest, att_definition=att_def,
        vcov_source=(None if res.vcov_source is None else
                     _InfluenceVcov(_ro(psi), res.vcov_source.units, res.vcov_source.unit)))
