"""Input checks shared by every public function (validate at the boundary, never assert).

The panel conventions of ``../API.md`` live here, in one place:

* long panels, one row per unit x period, column names passed explicitly;
* ``cohort`` = first treated period; *never treated* is NaN/NA/None, ``0``, or any value
  after the last observed period (R's ``10000`` convention) -- all three are accepted and
  mapped to ``NaN`` internally (``np.inf`` is accepted too);
* the caller's frame is never modified (we work on copies of the columns we need).
"""

from __future__ import annotations

import datetime as _dt
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .._io import as_frame
from ..errors import (
    COUNTS_POINTER,
    ColumnError,
    DataWarning,
    DroppedRowsWarning,
    InputError,
    SpecificationError,
    format_counts,
    format_message,
    suggest,
)
from .rowblocks import pair_sums, row_blocks
from .unitorder import (
    _span_ok,
    code_strings,
    first_rows,
    gather,
    group_fixed,
    group_strings,
    should_order,
    sort_codes,
    sort_values,
    sortable_values,
    ungroup_codes,
    wide_enough,
)

__all__ = [
    "PanelData",
    "RowFilter",
    "as_frame",
    "as_tuple",
    "check_weights",
    "cohort_per_unit",
    "dense_codes",
    "first_in_caller_order",
    "gap_aware_refs",
    "mark_pairs",
    "normalize_cohort",
    "pair_table_fits",
    "prepare_panel",
    "refuse_duplicate_pairs",
    "require_columns",
    "require_frame",
    "warn_dropped_missing",
]


def as_tuple(x: str | Sequence[str] | None) -> tuple[str, ...]:
    """Column names as a tuple: ``None`` -> ``()``, ``"a"`` -> ``("a",)``, a list -> tuple."""
    if x is None:
        return ()
    return (x,) if isinstance(x, str) else tuple(x)


def warn_dropped_missing(estimator: str, counts: dict[str, int], *, stacklevel: int) -> None:
    """One DroppedRowsWarning naming each reason and count (``counts``: reason -> rows).
    ``stacklevel`` as the caller would pass to ``warnings.warn`` itself."""
    warnings.warn(
        f"{estimator}: dropped {sum(counts.values()):,} row(s) with missing values: "
        + format_counts(counts) + f". {COUNTS_POINTER}",
        DroppedRowsWarning, stacklevel=stacklevel + 1)


class RowFilter:
    """The rows kept so far and why the others went: ``dropped`` maps a reason to its row
    count, each row counted once, under the first reason that removed it (so the counts
    add up to the rows dropped). The one place every estimator counts its dropped rows."""

    def __init__(self, n: int) -> None:
        self.keep = np.ones(n, dtype=bool)
        self.dropped: dict[str, int] = {}

    def drop(self, mask: np.ndarray, reason: str) -> None:
        """Drop the rows where ``mask`` is true (those still kept are counted)."""
        m = mask & self.keep
        if m.any():
            self.dropped[reason] = self.dropped.get(reason, 0) + int(m.sum())
            self.keep &= ~m

    def drop_missing(self, values: Any, reason: str) -> None:
        """Drop the rows where ``values`` (float array, Series or object array) is missing."""
        if isinstance(values, np.ndarray) and values.dtype.kind == "f":
            self.drop(np.isnan(values), reason)
        else:
            self.drop(np.asarray(pd.isna(values)), reason)

    def warn_missing(self, estimator: str, *, stacklevel: int) -> None:
        """The shared DroppedRowsWarning for the rows dropped so far for a missing value
        (reasons starting with ``missing``); ``stacklevel`` as for ``warnings.warn``."""
        miss = {k: v for k, v in self.dropped.items() if k.startswith("missing")}
        if miss:
            warn_dropped_missing(estimator, miss, stacklevel=stacklevel + 1)

    def require_rows(self, estimator: str, *, fix: str) -> None:
        """Refuse (InputError) when no row is left."""
        if not self.keep.any():
            raise InputError(format_message(
                f"{estimator}: no rows left after removing missing values",
                seen=self.dropped, fix=fix))


def require_frame(data: Any, *, what: str = "data") -> pd.DataFrame:
    """Check that ``data`` is a non-empty table; return it as a pandas DataFrame."""
    data = as_frame(data, what=what)
    if len(data) == 0:
        raise InputError(format_message(f"{what} is empty (0 rows)",
                                        fix="check the file or the filters applied before"))
    return data


def require_columns(data: pd.DataFrame, columns: Iterable[str | None], *,
                    what: str = "data") -> None:
    """Raise :class:`ColumnError` naming each missing column and the closest existing one."""
    missing = [c for c in columns if c is not None and c not in data.columns]
    if missing:
        hints = []
        for c in missing:
            close = suggest(c, data.columns)
            hints.append(f"{c!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ColumnError(format_message(
            f"{what} has no column {', '.join(hints)}",
            where=f"columns present: {', '.join(map(str, data.columns[:20]))}"
                  + ("…" if len(data.columns) > 20 else ""),
            fix="pass the right column name (e.g. outcome='lemp') or rename the column"))


def _dates_as_years(s: pd.Series, col: str, what: str) -> pd.Series:
    """A date column read as years when every date is 1 January (a year stored as a
    date); any other date is refused -- twinimpact counts time in whole periods. NaT is
    missing (a missing cohort means never treated), never a number."""
    d = pd.to_datetime(s, errors="coerce")
    if getattr(d.dt, "tz", None) is not None:
        d = d.dt.tz_localize(None)
    ok = d.notna()
    inner = ok & ((d.dt.month != 1) | (d.dt.day != 1) | (d.dt.normalize() != d))
    if inner.any():
        i = inner.to_numpy().argmax()
        raise InputError(format_message(
            f"column {col!r} ({what}) holds dates inside a year; twinimpact counts time in "
            "whole periods", where=f"row {s.index[i]!r}", seen=str(s.iloc[i]),
            fix=f"pass a period number: the year (df[{col!r}].dt.year), or e.g. "
                "year * 12 + month for monthly data, and the cohort in the same unit"))
    return d.dt.year.astype("float64").where(ok)


def _numeric(data: pd.DataFrame, col: str, what: str, *,
             allow_inf: bool = False, view_ok: bool = False) -> np.ndarray:
    """Column ``col`` as float (NaN = missing). Dates that are whole years become years;
    other dates, text and infinite values (unless ``allow_inf``) are refused.

    ``view_ok``: a float64 column may come back as a read-only view of the caller's data
    instead of a copy (the caller never writes to it; saves 8 bytes a row)."""
    s = data[col]
    dtype = s.dtype
    arr = None
    if view_ok and isinstance(dtype, np.dtype) and dtype == np.float64:
        arr = s.to_numpy().view()
        arr.flags.writeable = False
    elif pd.api.types.is_datetime64_any_dtype(dtype):
        s = _dates_as_years(s, col, what)
    elif isinstance(dtype, pd.PeriodDtype):
        if dtype.freqstr not in ("Y", "Y-DEC", "A", "A-DEC"):
            raise InputError(format_message(
                f"column {col!r} ({what}) is a {dtype.freqstr} period; only annual periods "
                "are read as numbers", seen=str(dtype),
                fix=f"pass a period number (e.g. df[{col!r}].dt.year * 12 + "
                    f"df[{col!r}].dt.month)"))
        s = s.dt.year.astype("float64").where(s.notna())
    elif pd.api.types.is_timedelta64_dtype(dtype):
        raise InputError(format_message(
            f"column {col!r} ({what}) is a time span (timedelta), not a period",
            seen=str(dtype), fix="pass the period as a number (e.g. a year)"))
    elif pd.api.types.is_bool_dtype(dtype):
        return s.to_numpy(dtype=float, na_value=np.nan)
    elif not pd.api.types.is_numeric_dtype(dtype):
        nonnull = s.dropna()
        if len(nonnull) and all(isinstance(v, _dt.date) for v in nonnull.iloc[:1000]):
            s = _dates_as_years(s, col, what)
        else:
            conv = pd.to_numeric(s, errors="coerce")
            bad = conv.isna() & s.notna()
            if bad.any():
                first = s[bad].iloc[0]
                raise InputError(format_message(
                    f"column {col!r} ({what}) must be numeric", where=f"row {s[bad].index[0]!r}",
                    seen=first, fix=f"convert {col!r} to numbers or fix the non-numeric values"))
            s = conv
    if arr is None:
        arr = s.to_numpy(dtype=float, na_value=np.nan)
    if not allow_inf:
        inf = np.isinf(arr)
        if inf.any():
            i = int(inf.argmax())
            raise InputError(format_message(
                f"column {col!r} ({what}) has {int(inf.sum())} infinite value(s)",
                where=f"row {s.index[i]!r}", seen=float(arr[i]),
                fix="infinite values are not data: fix them upstream (log of 0? division by "
                    "0?) or set them to NaN so the rows are dropped and counted"))
    return arr


def normalize_cohort(values: Any, last_period: float, *, in_place: bool = False
                     ) -> np.ndarray:
    """Map the three 'never treated' conventions (NaN, 0, > last period) to NaN (a new
    float array; a float array is not converted again). ``in_place``: ``values`` is a
    float64 array the caller owns (e.g. just converted), normalised without a copy."""
    if in_place and isinstance(values, np.ndarray) and values.dtype == np.float64:
        g = values
    elif isinstance(values, np.ndarray) and values.dtype.kind == "f":
        g = values.astype(float, copy=True)
    else:
        g = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float,
                                                                       na_value=np.nan)
        g = g.copy()
    with np.errstate(invalid="ignore"):
        np.putmask(g, (g == 0) | (g > last_period) | ~np.isfinite(g), np.nan)
    return g


def cohort_per_unit(unit_codes: np.ndarray, n_units: int, cohort: np.ndarray, *,
                    raw: pd.Series, unit_values: Any, estimator: str, cohort_name: str,
                    unit_name: str) -> np.ndarray:
    """The cohort of each unit (``(n_units,)``, NaN = never treated, the value of the
    unit's first row), refusing a cohort that varies within a unit (NaN counts as a value).

    ``unit_codes``: dense codes of the rows (-1 = missing unit, ignored); ``cohort``: the
    normalised cohorts of the rows; ``raw``: the caller's cohort column and
    ``unit_values`` the row-aligned unit labels, both only read to name the first
    offending unit in the :class:`InputError`.
    """
    fast = _cohort_per_unit_bits(unit_codes, n_units, cohort)
    if fast is not None:
        return fast
    first = np.empty(max(n_units, 1))
    blocks = list(row_blocks(len(unit_codes)))

    def block(sl: slice) -> tuple[np.ndarray, np.ndarray]:  # codes and keys of the rows
        c, g = unit_codes[sl], cohort[sl]
        k = np.where(np.isnan(g), -np.inf, g)
        on = c >= 0
        return (c, k) if on.all() else (c[on], k[on])

    # row blocks, in reverse row order: the last write wins -> each unit's first row
    for sl in reversed(blocks):
        c, k = block(sl)
        first[c[::-1]] = k[::-1]
    if any(bool((k != first[c]).any()) for c, k in map(block, blocks)):
        key = np.where(np.isnan(cohort), -np.inf, cohort)
        has_u = unit_codes >= 0
        codes, k = unit_codes[has_u], key[has_u]
        bad = k != first[codes]
        bad_codes = np.unique(codes[bad])
        rows = np.flatnonzero(has_u)[codes == bad_codes[0]] if not has_u.all() \
            else np.flatnonzero(codes == bad_codes[0])
        u = _plain(unit_values[rows[0]])
        vals = sorted(set(raw.iloc[rows].tolist()), key=str)
        raise InputError(format_message(
            f"{estimator}: cohort column {cohort_name!r} varies within unit "
            f"({len(bad_codes)} unit(s))", where=f"{unit_name} = {u!r}", seen=vals,
            fix="the cohort is the first treated period and must be the same in every "
                "row of a unit; recompute it per unit (e.g. groupby(unit)[cohort].transform('min'))"))
    first = first[:n_units]
    first[first == -np.inf] = np.nan
    return first


def _cohort_per_unit_bits(unit_codes: np.ndarray, n_units: int, cohort: np.ndarray
                          ) -> np.ndarray | None:
    """:func:`cohort_per_unit`'s answer when every row has a unit and the cohort's bit
    patterns are constant within each unit (None otherwise: the exact path then decides,
    NaNs of other bit patterns and -0.0 included, and names the offending unit). One
    store of every row's bits into a per-unit table (the last write wins: any row's value
    will do, since all are checked) and one comparison of every row with its unit's
    entry; no n-row temporaries and no NaN mapping (``normalize_cohort`` writes one NaN)."""
    if not (isinstance(cohort, np.ndarray) and cohort.dtype == np.float64):
        return None
    n = len(unit_codes)
    blocks = list(row_blocks(n))
    if n and int(unit_codes.min()) < 0:
        return None
    bits = cohort.view(np.int64) if cohort.flags.c_contiguous else None
    if bits is None:
        return None
    table = np.empty(max(n_units, 1), dtype=np.int64)
    for sl in blocks:
        table[unit_codes[sl]] = bits[sl]
    for sl in blocks:
        if (table[unit_codes[sl]] != bits[sl]).any():
            return None
    first = table.view(np.float64)[:n_units]
    # the exact path's values: NaN (never treated) as the one NaN, a -inf key as NaN
    first[np.isnan(first) | (first == -np.inf)] = np.nan
    return first


def refuse_duplicate_pairs(unit_codes: np.ndarray, time_codes: np.ndarray, n_units: int,
                           n_periods: int, *, label_row: Any, estimator: str, unit_name: str,
                           time_name: str) -> None:
    """Refuse (InputError) two rows with the same unit x period (dense codes, O(n));
    ``label_row(i)`` gives ``(unit label, period)`` of row ``i`` for the message."""
    n = len(unit_codes)
    if pair_table_fits(n_units * n_periods, n):
        # the pairs present, marked block by block in one byte a pair (no n-row pair-code
        # array; a store, not np.add.at's read-modify-write into a 4-byte count): n rows
        # with n distinct pairs hold no duplicate
        seen = mark_pairs(unit_codes, time_codes, n_periods, n_units * n_periods)
        if int(np.count_nonzero(seen)) == n:
            return
        del seen
        # rows per unit x period, counted block by block into one int32 table (a block
        # adds at most BLOCK to a cell: no overflow), for the rows the message names
        counts = pair_sums(unit_codes, n_units, time_codes, n_periods, None)
        key = unit_codes.astype(np.int64) * n_periods + time_codes
        dup = counts.ravel()[key] > 1
    else:
        key = unit_codes.astype(np.int64) * n_periods + time_codes
        dup = pd.Series(key).duplicated(keep=False).to_numpy()
        if not dup.any():
            return
    u, t = label_row(int(dup.argmax()))
    raise InputError(format_message(
        f"{estimator}: {int(dup.sum())} rows share a {unit_name} x {time_name} pair; a panel "
        "needs one row per unit and period", where=f"{unit_name} = {_plain(u)!r}, "
                                                   f"{time_name} = {t:g}",
        fix="aggregate duplicates first (e.g. groupby([unit, time]).sum()) or pick the "
            "right unit column"))


def pair_table_fits(n_cells: int, n_rows: int) -> bool:
    """Whether a one-byte table of ``n_cells`` unit x period cells is small enough beside
    ``n_rows`` rows to mark the pairs in (:func:`mark_pairs`)."""
    return n_cells <= 4 * n_rows + 1_000_000


def mark_pairs(major: np.ndarray, minor: np.ndarray, n_minor: int, n_cells: int
               ) -> np.ndarray:
    """One byte per cell ``major * n_minor + minor`` (codes >= 0, below ``n_cells``), True
    where a row holds that pair, marked block by block (no n-row pair-code array). As
    many cells marked as rows: no two rows share a pair."""
    seen = np.zeros(n_cells, dtype=bool)
    for sl in row_blocks(len(major)):
        key = major[sl].astype(np.intp)
        key *= n_minor
        key += minor[sl]
        seen[key] = True
    return seen


def _labels(s: pd.Series) -> Any:
    """A key column's values: the numpy array, or the pandas extension array itself (a
    string column of pandas >= 3 is Arrow-backed: turning it into Python objects would
    cost ~65 bytes a row and a minute at 1e8 rows; :func:`dense_codes` codes it directly)."""
    return s.array if not isinstance(s.dtype, np.dtype) else s.to_numpy()


def dense_codes(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense integer codes ``0..G-1`` of a label array; missing labels get ``-1``.

    Integer (or integral float) labels spanning at most a few times the length are mapped
    by a counting pass (codes in label order); anything else is hashed with :func:`pandas.factorize`
    (codes in order of first appearance). Either way equal labels share a code.
    """
    if isinstance(values, pd.api.extensions.ExtensionArray):
        if not pd.api.types.is_numeric_dtype(values.dtype):
            # Arrow strings: many labels in no order grouped without a hash table
            # (core.unitorder.code_strings), else hashed, in cache-sized partitions when
            # the labels are many (core.labels); pandas.factorize's codes every way
            coded = code_strings(values)
            if coded is not None:
                return coded
            codes, uniques = pd.factorize(values)
            return codes.astype(np.intp, copy=False), len(uniques)
    arr = np.asarray(values)
    n = len(arr)
    if arr.dtype.kind in "iuf" and n:
        lo, hi = arr.min().item(), arr.max().item()  # Python numbers: no overflow
        if np.isfinite(lo) and np.isfinite(hi) and hi - lo <= 4 * n + 1000:
            # row blocks into one code array, recoded in place (no n-row temporaries)
            # (the values present marked one byte each, not counted: a store instead of
            # bincount's 8-byte read-modify-write, a table 8x smaller for the cache)
            span = int(hi - lo) + 1
            present = np.zeros(span, dtype=bool)
            small = np.empty(n, dtype=np.intp)
            for sl in row_blocks(n):
                shifted = arr[sl] - lo
                part = shifted.astype(np.intp, copy=False)
                if arr.dtype.kind == "f" and not np.array_equal(part, shifted):
                    break  # integral values only
                small[sl] = part
                present[part] = True
            else:
                if present.all():  # every value of lo..hi: the shifted values are the codes
                    return small, span
                remap = np.cumsum(present, dtype=np.int32 if span < 2**31 else np.intp)
                remap -= 1
                for sl in row_blocks(n):
                    small[sl] = remap[small[sl]]
                return small, int(remap[-1]) + 1
    # a small size hint: the hash table grows with the labels seen instead of starting at
    # one slot per row (pandas' default; 3x the memory with 10 rows per unit)
    codes, uniques = pd.factorize(arr, size_hint=min(n, 1 << 16))
    return codes.astype(np.intp, copy=False), len(uniques)


def _compress_codes(codes: np.ndarray, n_levels: int) -> tuple[np.ndarray, int]:
    """Renumber non-negative codes so that the levels present are ``0..G-1``."""
    present = np.bincount(codes, minlength=n_levels) > 0
    if present.all():
        return codes, n_levels
    remap = np.cumsum(present) - 1
    return remap[codes], int(present.sum())


@dataclass
class PanelData:
    """Validated copy of the columns an estimator needs.

    ``frame`` has columns ``y`` (float), ``unit`` (original labels), ``time`` (float),
    ``cohort`` (float, NaN = never treated) and the extra columns requested, rows with a
    missing value in any of them removed (counted in ``dropped``). ``unit_codes`` and
    ``time_codes`` (int arrays aligned with ``frame``) are dense codes ``0..G-1`` of the
    units and periods, computed once during validation for estimators to reuse (None
    when the panel was not built by :func:`prepare_panel`). ``rows`` are the positions of
    the kept rows in the caller's frame (for ``result.with_vcov(..., data=frame)``).
    """

    frame: pd.DataFrame
    names: dict[str, str]
    dropped: dict[str, int] = field(default_factory=dict)
    n_input: int = 0
    unit_codes: np.ndarray | None = None
    time_codes: np.ndarray | None = None
    rows: np.ndarray | None = None

    def diagnostics(self) -> dict[str, Any]:
        return {"n_input_rows": self.n_input, "n_used_rows": len(self.frame),
                "dropped_rows": dict(self.dropped)}


def prepare_panel(data: Any, *, outcome: str, unit: str, time: str, cohort: str | None = None,
                  extra: Sequence[str] = (), numeric_extra: Sequence[str] = (),
                  estimator: str = "estimator", allow_duplicates: bool = False,
                  order_by_unit: bool = False) -> PanelData:
    """Validate a long panel and return a clean copy (see :class:`PanelData`).

    Checks: DataFrame and non-empty; columns exist; outcome/time/cohort numeric; cohort
    constant within unit; no duplicated unit x time rows. Rows with missing outcome,
    time or extras are dropped, counted and announced with a :class:`DroppedRowsWarning`.

    ``order_by_unit``: when the rows come in no order and the units are many
    (:func:`~twinimpact.core.unitorder.should_order`), the returned panel holds the rows
    grouped by unit (stable: each unit's rows in the caller's order) and ``rows`` says
    where each came from, so that every later pass over the rows streams through the
    per-unit tables (:mod:`~twinimpact.core.unitorder`). For estimators whose numbers do
    not depend on the row order (beyond rounding) and that return nothing per row. The
    errors are the same as without it (they are recomputed in the caller's row order).
    """
    data = require_frame(data)
    cols = [outcome, unit, time, cohort, *extra, *numeric_extra]
    for name, val in (("outcome", outcome), ("unit", unit), ("time", time)):
        if not isinstance(val, str):
            raise SpecificationError(format_message(
                f"{estimator}: {name}= must be a column name (str)", seen=val,
                fix=f"pass {name}='<column>'"))
    require_columns(data, cols)
    n_input = len(data)
    # the columns as numpy arrays (read-only views of the caller's data where no
    # conversion is needed), filtered once and wrapped in one frame without a copy
    arrs: dict[str, Any] = {"y": _numeric(data, outcome, "outcome", view_ok=True),
                            "unit": _labels(data[unit]),
                            "time": _numeric(data, time, "time")}
    for c in numeric_extra:
        arrs[c] = _numeric(data, c, "covariate", view_ok=True)
    for c in extra:
        if c not in arrs:
            arrs[c] = data[c].to_numpy()
    rows = RowFilter(n_input)
    rows.drop_missing(arrs["unit"], f"missing unit ({unit})")
    rows.drop_missing(arrs["time"], f"missing time ({time})")
    keep = rows.keep
    raw_g = (None if cohort is None else
             # a float64 column comes back as a read-only view of the caller's data
             # (copied by normalize_cohort); any other type as a new array, normalised
             # in place
             _numeric(data, cohort, "cohort", allow_inf=True, view_ok=True))
    perm = None
    caller_units = arrs["unit"]
    unit_codes = None
    grouped = None
    order = order_by_unit and n_input < 2**31 and should_order(caller_units)
    sortable = sortable_values(caller_units) if order else None
    if sortable is not None:
        if wide_enough(sortable[1]):
            # the units coded from the sorted ids (no hashing)
            scratch = np.empty(n_input)  # the sort's scratch, then a column's buffer
            grouped = (*sort_values(*sortable, scratch), scratch)
    elif order:
        # any other labels (long or mixed strings, object, float, Categorical, missing
        # labels, a wide integer range): their codes as without ordering (first
        # appearance), the rows grouped by them (Arrow strings without a hash table);
        # the rows of a missing unit are left out (dropped and counted above)
        scratch = np.empty(n_input)
        grouped = _group_units(caller_units, scratch,
                               rows.dropped.get(f"missing unit ({unit})", 0))
        if not wide_enough(grouped[2]):
            unit_codes, n_unit_levels = _ungroup(*grouped[:3], n_input)
            grouped = None
    del sortable
    if grouped is not None:
        # rows sorted by unit from here on; the caller's labels kept for the messages
        owned = {c for c, src in (("time", time), *((c, c) for c in numeric_extra))
                 if _converted(data, src, arrs[c])}
        if cohort is not None and _converted(data, cohort, raw_g):
            owned.add(_RAW_COHORT)
        perm, arrs, unit_codes, n_unit_levels, raw_g = _order_rows(arrs, grouped, raw_g,
                                                                   owned)
        # the rows kept so far are perm's rows when they are as many (the rows of a
        # missing unit, the only ones perm leaves out, are dropped already): no gather
        rows.keep = keep = (np.ones(len(perm), dtype=bool)
                            if np.count_nonzero(rows.keep) == len(perm) else rows.keep[perm])
    elif unit_codes is None:
        unit_codes, n_unit_levels = dense_codes(caller_units)
    del grouped
    if cohort is not None and raw_g is not None:
        tv = arrs["time"]
        last = (np.nanmax(tv) if keep.all() else np.nanmax(tv[keep]) if keep.any()
                else np.inf)
        arrs["cohort"] = normalize_cohort(raw_g, last, in_place=raw_g.flags.writeable)
        del raw_g
        try:
            cohort_per_unit(unit_codes, n_unit_levels, arrs["cohort"],
                            raw=data[cohort], unit_values=arrs["unit"],
                            estimator=estimator, cohort_name=cohort, unit_name=unit)
        except InputError:
            if perm is None:
                raise
            # the caller's row order names the same unit and values as without ordering
            caller_codes, caller_levels = dense_codes(caller_units)
            cohort_per_unit(caller_codes, caller_levels,
                            _unpermute(arrs["cohort"], perm, n_input), raw=data[cohort],
                            unit_values=caller_units, estimator=estimator,
                            cohort_name=cohort, unit_name=unit)
            raise
    rows.drop_missing(arrs["y"], f"missing outcome ({outcome})")
    for c in [*extra, *numeric_extra]:
        rows.drop_missing(arrs[c], f"missing {c}")
    keep_arr = rows.keep
    every = bool(keep_arr.all())
    if not every:
        arrs = {c: v[keep_arr] for c, v in arrs.items()}
        unit_codes = unit_codes[keep_arr]
    dropped = rows.dropped
    rows.warn_missing(estimator, stacklevel=3)
    rows.require_rows(estimator, fix="check the outcome and key columns")
    # every row kept: each label has a row, the codes are dense already (no recount)
    unit_codes, n_units = ((unit_codes, n_unit_levels) if every
                           else _compress_codes(unit_codes, n_unit_levels))
    time_codes, n_periods = dense_codes(arrs["time"])
    if not allow_duplicates:
        uv, tv = arrs["unit"], arrs["time"]
        try:
            refuse_duplicate_pairs(unit_codes, time_codes, n_units, n_periods,
                                   label_row=lambda i: (uv[i], tv[i]), estimator=estimator,
                                   unit_name=unit, time_name=time)
        except InputError:
            if perm is None:
                raise
            # the first duplicate in the caller's row order, as without ordering
            kept = perm if every else perm[keep_arr]
            order = np.argsort(kept, kind="stable")
            uo, to = uv[order], tv[order]
            refuse_duplicate_pairs(unit_codes[order], time_codes[order], n_units, n_periods,
                                   label_row=lambda i: (uo[i], to[i]), estimator=estimator,
                                   unit_name=unit, time_name=time)
            raise
    out = pd.DataFrame(arrs, copy=False)
    positions = (_positions(keep_arr) if perm is None else perm if every
                 else perm[keep_arr])
    return PanelData(frame=out,
                     names={"outcome": outcome, "unit": unit, "time": time,
                            "cohort": cohort or ""},
                     dropped=dropped, n_input=n_input, unit_codes=unit_codes,
                     time_codes=time_codes, rows=positions)


def _group_units(labels: Any, scratch: np.ndarray, n_missing: int = 0
                 ) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """The rows that have a unit grouped by unit, each unit's rows in their order, the
    units in order of first appearance (their :func:`dense_codes`; a Categorical's in
    the order of its categories, from its codes, without hashing): ``(perm, codes, G,
    scratch)`` as :func:`~.unitorder.sort_codes` gives (``scratch``: its n-row scratch,
    handed on to :func:`_order_rows`). An object column of str is grouped as Arrow
    strings (:func:`_object_strings`; ``n_missing``: its rows that ``pandas.isna``
    finds missing)."""
    grouped = group_strings(labels, scratch)
    if grouped is None and isinstance(labels, np.ndarray) and labels.dtype == object:
        as_arrow = _object_strings(labels, n_missing)
        if as_arrow is not None:
            grouped = group_strings(as_arrow, scratch)
            del as_arrow
    if grouped is None:
        # numbers of a wide range, many of them (float ids, sparse int64 ids), as bytes
        grouped = group_fixed(labels, scratch)
    if grouped is None:
        if isinstance(labels, pd.Categorical) and _span_ok(len(labels.categories),
                                                           len(labels)):
            # a Categorical's own codes (-1 = missing): its units in category order
            codes, n_levels = labels.codes.astype(np.int64), len(labels.categories)
        else:
            codes, n_levels = dense_codes(labels)
        grouped = sort_codes(codes, n_levels, scratch)
    return (*grouped, scratch)


def _object_strings(labels: np.ndarray, n_missing: int) -> Any | None:
    """An object column holding only str (and missing values) as pandas Arrow strings
    (one ``pyarrow.array`` pass: each row's str read once, in row order), so that
    :func:`~.unitorder.group_strings` groups it without a hash table; None for anything
    else (another object among the rows, a str Arrow cannot encode, or missing values
    Arrow does not read as null: its nulls must be exactly the ``n_missing`` rows
    ``pandas.isna`` found -- Arrow's nulls (None, NaN, pd.NA) are among those, so equal
    counts are equal rows). Codes from it are ``pandas.factorize``'s of the objects (str
    are equal exactly when their UTF-8 bytes are). ``pandas.factorize`` of ~1e6 distinct
    Python str in shuffled rows probes a hash table that has left the caches: 2.4 s at
    9.5e6 rows (0.05 s at 9.5e5), against 0.2 s (0.02 s) for the conversion
    (``benchmarks/floors.py``, run FL1)."""
    import pyarrow as pa

    try:
        # the type inferred, not imposed: str beside bytes is binary (refused), where a
        # string type would read the bytes as text and merge b"x" with "x"
        arr = pa.array(labels, from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError, OverflowError, UnicodeError):
        return None
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)) \
            or arr.null_count != n_missing:
        return None
    if isinstance(arr, pa.ChunkedArray):  # pragma: no cover - > 2 GB of strings
        arr = pa.chunked_array([c.cast(pa.large_string()) for c in arr.chunks])
    else:
        arr = pa.chunked_array([arr])
    # (the default dtype, string[pyarrow]: StringDtype's na_value exists from pandas 2.3
    # on, and group_strings reads only the Arrow buffers)
    return pd.arrays.ArrowStringArray(arr)


def _ungroup(perm: np.ndarray, codes: np.ndarray, n_levels: int, n: int
             ) -> tuple[np.ndarray, int]:
    """:func:`dense_codes` of the caller's ``n`` rows back from :func:`_group_units`
    (-1 at the rows left out: a missing unit)."""
    return ungroup_codes(perm, codes, n), n_levels


def _unpermute(a: np.ndarray, perm: np.ndarray, n: int) -> np.ndarray:
    """The rows of ``a`` (float; the caller's rows ``perm``, in that order) back at their
    places among the caller's ``n`` rows (NaN at the rows left out: a missing unit)."""
    out = np.full(n, np.nan, dtype=a.dtype)
    out[perm] = a
    return out


#: the raw cohort column's key among :func:`_order_rows`' columns (no column name)
_RAW_COHORT = ("raw cohort",)


def _order_rows(arrs: dict[str, Any], grouped: tuple, raw_g: np.ndarray | None,
                owned: set[Any]
                ) -> tuple[np.ndarray, dict[str, Any], np.ndarray, int, np.ndarray | None]:
    """The rows sorted by unit (``grouped``: ``(perm, codes, G, scratch)``, the rows
    grouped by unit (:func:`~.unitorder.sort_values` of the unit labels'
    :func:`~.unitorder.sortable_values`, or :func:`_group_units`; stable; the rows of a
    missing unit left out), their codes and number, and the float64 n-row scratch of the
    sort): the permutation, the columns gathered (the unit labels of an extension or
    object array as a Categorical of the same labels, its categories the labels in code
    order), the dense unit codes in that order and their number, the raw cohorts (None
    stays None; :data:`_RAW_COHORT` in ``owned``).

    ``owned``: the columns converted here (new arrays, no caller's memory): once gathered,
    their old buffers receive the next columns (n-row arrays are fresh mappings whose
    pages the kernel faults in: one new buffer for the sort's scratch and the first
    column, then recycled ones)."""
    labels = arrs["unit"]
    by_label = not isinstance(labels, np.ndarray) or labels.dtype == object
    # integer ids: a code names one label, so the labels in unit order are each code's
    # label repeated (its first row's: n_units random reads, not n)
    by_code = not by_label and labels.dtype.kind in "iu"
    cols: dict[Any, Any] = {c: a for c, a in arrs.items()
                            if c != "unit" or not (by_label or by_code)}
    if raw_g is not None:
        cols[_RAW_COHORT] = raw_g
    perm, codes, n_units, scratch = grouped
    del grouped
    m = len(perm)
    pool = [scratch]
    new: dict[str, Any] = {}
    for c in sorted(cols, key=lambda c: c not in owned):  # converted columns first
        a = cols[c]
        out = None
        if (pool and isinstance(a, np.ndarray) and a.ndim == 1 and a.dtype.itemsize == 8
                and a.dtype.kind in "iuf"):
            out = pool.pop().view(a.dtype)[:m]
        new[c] = gather(perm, [a], [out])[0]
        if c in owned:
            pool.append(a)
    del pool
    if isinstance(labels, pd.Categorical):
        new["unit"] = labels.take(perm)
    elif by_label or by_code:
        # each code's label read at its first row (n_units reads, not n)
        first, counts = first_rows(perm, codes, n_units)
        if by_code:
            new["unit"] = np.repeat(labels[first], counts)
        else:
            firsts = labels.take(first)
            cats = (pd.Index(firsts, dtype=object) if isinstance(labels, np.ndarray)
                    else pd.Index(firsts))
            new["unit"] = pd.Categorical.from_codes(codes, dtype=_distinct_dtype(cats),
                                                    validate=False)
    g = new.pop(_RAW_COHORT, None)
    return perm, {c: new[c] for c in arrs}, codes, n_units, g


def _distinct_dtype(cats: pd.Index) -> pd.CategoricalDtype:
    """The CategoricalDtype of categories known to be distinct (one label per unit
    code): pandas' fast path, without the hashing of every category that checks it
    (0.3 s for 1e6 string labels); the checked constructor where that path is missing."""
    fast = getattr(pd.CategoricalDtype, "_from_fastpath", None)
    if fast is not None:
        try:
            dtype = fast(cats, False)
        except TypeError:  # pragma: no cover - another pandas signature
            dtype = None
        if isinstance(dtype, pd.CategoricalDtype) and dtype.categories is not None:
            return dtype
    return pd.CategoricalDtype(cats)  # pragma: no cover - pandas without the fast path


def _converted(data: pd.DataFrame, col: str, arr: Any) -> bool:
    """Whether ``arr`` (float64, from :func:`_numeric`) is a new array converted from the
    caller's numpy integer or boolean column ``col`` (so none of the caller's memory)."""
    dtype = data[col].dtype
    return (isinstance(arr, np.ndarray) and arr.dtype == np.float64 and arr.flags.owndata
            and arr.flags.writeable and isinstance(dtype, np.dtype) and dtype.kind in "iub")


def _positions(keep: np.ndarray) -> np.ndarray:
    """Positions of the true entries of ``keep``, as int32 when they fit (half the memory
    of the default integer: 0.4 GB saved at 1e8 rows)."""
    small = len(keep) < 2**31
    if keep.all():
        return np.arange(len(keep), dtype=np.int32 if small else np.intp)
    pos = np.flatnonzero(keep)
    return pos.astype(np.int32) if small else pos


def _finite_levels(x: np.ndarray) -> np.ndarray:
    """The sorted distinct finite values of ``x`` (``np.unique`` of the finite entries):
    integral values in a range of at most a few times ``len(x)`` are marked in a table of
    one byte per value, row block by row block; anything else is hashed (O(n) either way
    and no n-sized copy, where ``np.unique`` sorts all n values)."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    if n:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # (all NaN: no range)
            lo, hi = float(np.fmin.reduce(x)), float(np.fmax.reduce(x))
        if (np.isfinite(lo) and np.isfinite(hi) and lo.is_integer() and abs(lo) < 2**52
                and hi - lo <= 4 * n + 1000):
            present = np.zeros(int(hi - lo) + 1, dtype=bool)
            for sl in row_blocks(n):
                v = x[sl] - lo
                nan = np.isnan(v)
                if nan.any():
                    v = v[~nan]
                iv = v.astype(np.intp)
                if not np.array_equal(iv, v):
                    break  # integral values only
                present[iv] = True
            else:
                zero = -lo  # (a -0.0 among the rows: hashed, as before, for its sign)
                if not (0 <= zero < len(present) and present[int(zero)]
                        and np.signbit(x[x == 0]).any()):
                    return np.flatnonzero(present) + lo
    levels = np.asarray(pd.unique(x))
    return np.sort(levels[np.isfinite(levels)])


def gap_aware_refs(refs: tuple[int, ...], time: np.ndarray, cohort: np.ndarray, *,
                   estimator: str, time_name: str = "time") -> tuple[tuple[int, ...], str | None]:
    """Reference period(s) of an event study on a calendar that may have gaps.

    ``refs`` are relative periods ``t - g``. When ``t = g + ref`` is a calendar period that
    the panel skips (biennial data, a 4-yearly gravity panel) for some treated cohort, the
    omitted coefficient would not exist and the normalisation would silently change. Then:

    * the default ``ref=(-1,)`` becomes the last observed pre-treatment period when that is
      the same relative period for every cohort (e.g. -2 on even years with even cohorts),
      with a note returned for ``diagnostics``;
    * anything else is refused, naming the cohort and the missing period.
    """
    periods = _finite_levels(time)
    if len(periods) == 0:
        return refs, None
    tmin, tmax = periods[0], periods[-1]
    have = set(periods.tolist())
    cohorts = _finite_levels(cohort)
    cohorts = cohorts[(cohorts > tmin) & (cohorts <= tmax)]
    missing = [(int(r), float(c)) for r in refs for c in cohorts
               if tmin <= c + r <= tmax and (c + r) not in have]
    if not missing:
        return refs, None
    last_pre = {float(c): float(periods[periods < c].max() - c) for c in cohorts}
    shared = set(last_pre.values())
    if tuple(refs) == (-1,) and len(shared) == 1:
        new = shared.pop()
        if new == int(new):
            note = (f"{time_name} skips periods (observed: {_fmt_periods(periods)}): the "
                    f"period before treatment (rel_time -1) does not exist, so the reference "
                    f"period is rel_time {int(new)}, the last observed pre-treatment period "
                    "of every cohort")
            warnings.warn(f"{estimator}: {note}. Pass ref= to choose another.",
                          DataWarning, stacklevel=3)
            return (int(new),), note
    r, c = missing[0]
    raise InputError(format_message(
        f"{estimator}: the reference period rel_time {r} is not in the data for "
        f"{len({m[1] for m in missing})} cohort(s): the panel has no period {c + r:g}",
        where=f"cohort {c:g} ({time_name} observed: {_fmt_periods(periods)})",
        seen={"ref": list(refs), "last observed pre-period by cohort":
              {f"{k:g}": int(v) if v == int(v) else v for k, v in list(last_pre.items())[:8]}},
        fix="pass ref= a relative period every cohort has (e.g. its last observed "
            "pre-period), or put time and cohorts on the same grid (e.g. map each cohort to "
            "the first observed period at or after it)"))


def _fmt_periods(periods: np.ndarray) -> str:
    p = [f"{v:g}" for v in periods]
    return ", ".join(p) if len(p) <= 8 else ", ".join(p[:4]) + ", …, " + ", ".join(p[-2:])


def first_in_caller_order(mask: np.ndarray, rows: np.ndarray | None) -> int:
    """Index of the true entry of ``mask`` that comes first in the caller's frame
    (``rows``: the prepared panel's positions there, which need not increase when the
    rows were put in unit order; None: the first true entry)."""
    if rows is None:
        return int(mask.argmax())
    hits = np.flatnonzero(mask)
    return int(hits[np.argmin(rows[hits])])


def check_weights(w: np.ndarray, frame: pd.DataFrame, *, column: str, estimator: str,
                  unit: str = "unit", time: str = "time",
                  rows: np.ndarray | None = None) -> None:
    """Observation weights must be non-negative with a positive sum (``frame`` is the
    prepared panel aligned with ``w``; its unit and time name the first bad row in the
    caller's order, ``rows`` the panel's positions in the caller's frame)."""
    neg = w < 0
    if neg.any():
        i = first_in_caller_order(neg, rows)
        raise InputError(format_message(
            f"{estimator}: weights {column!r} must be non-negative ({int(neg.sum())} "
            "negative)", where=f"{unit} = {_plain(frame['unit'].iloc[i])!r}, "
                               f"{time} = {frame['time'].iloc[i]:g}",
            seen=float(w[i]), fix="weights are population or sample sizes (>= 0); fix the "
                                  "column or drop those rows"))
    if not w.sum() > 0:
        raise InputError(format_message(
            f"{estimator}: weights {column!r} are all zero", seen=0.0,
            fix="pass positive weights for the observations to use"))


def _plain(v: Any) -> Any:
    """A numpy scalar as the Python value (messages show 8001, not np.int64(8001))."""
    return v.item() if isinstance(v, np.generic) else v
