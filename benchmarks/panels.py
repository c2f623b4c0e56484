"""Benchmark panels with the knobs users' data have: balance, gaps, entry and exit, key
type, many cohorts, few treated units, zeros, dense gravity.

Two generators, both deterministic given ``seed``:

* :func:`staggered_panel` -- unit x period panel with staggered adoption. Columns
  ``unit`` (int or string ids), ``year``, ``cohort`` (0 = never treated), ``rel_time``
  (``year - cohort``; -1 for never-treated units, fixest's reference), ``treated``
  (0/1, 1 in treated unit-periods), ``y`` (continuous, unit + year effects + a dynamic
  effect + noise), ``y_count`` (non-negative, with a share ``zeros`` of exact zeros).
* :func:`gravity_panel` -- dense exporter x importer x year panel (all pairs, all years)
  with exporter-year, importer-year and pair effects, a pair-level staggered treatment
  (``cohort`` per pair, 0 = never) and a flow ``trade`` with a share ``zeros`` of zeros.

Knobs of :func:`staggered_panel`:

``n_rows``        target number of rows before rows are removed (units = n_rows / n_periods)
``n_periods``     periods per unit when complete
``n_cohorts``     number of adoption dates (spread over the periods after the first 2)
``never_share``   share of never-treated units; ``treated_units`` (int) instead fixes the
                  number of treated units (few-treated designs)
``miss_random``   share of rows removed at random
``miss_block``    share of units with one contiguous block of 2-4 missing periods
``entry_exit``    share of units that enter late or exit early (each 50/50)
``key``           "int" (int64 unit ids) or "str" (string ids like ``"u000123"``); also
                  (added for the unseen-panel checks, :data:`KEY_KINDS`): "str_long"
                  (city-like names of 10-22 bytes, a third of them non-ASCII, e.g.
                  ``"Zürich 000012"``), "str_mixed" (1-8, 8, 9 and 13+ byte ids side by
                  side: both sides of the 8-byte short-key path), "object" (the "str" ids
                  as a NumPy object column of Python str), "cat" (the "str" ids as a
                  pandas Categorical), "sparse" (distinct int64 ids spread over the whole
                  int64 range, negative ones included); added for the floors run
                  (``benchmarks/floors.py``): "float" (float64 ids ``0.5 * unit``: distinct,
                  not integral), "object_rows" (the "object" ids, but one new Python str
                  per row allocated in row order after any shuffle -- what
                  ``read_parquet(...)["unit"].astype(object)`` gives; "object" shares one
                  str per unit, allocated in unit order and referenced in row order)
``miss_unit``     share of rows whose unit id is missing (None / NaN / a null string / a
                  Categorical's -1; not for "int" / "sparse"), drawn from a generator of
                  its own so the other columns stay those of ``miss_unit=0``
``time``          "int" (consecutive int64 years, default), "float" (the same years as
                  float64), "step2" (every other year: 2001, 2003, ...), "irregular" (gaps
                  of 1-3 years between periods); cohorts are always periods of the panel;
                  ``rel_time`` stays ``year - cohort`` in years for "int" / "float" and is
                  counted in *periods* for "step2" / "irregular" (so -1 is the period
                  before adoption)
``zeros``         share of exact zeros in ``y_count``
``shuffle``       shuffle the row order
``seed``          the random draws (default 0)

The added knobs leave every default draw unchanged (they consume no random numbers unless
set), so every recorded figure stays reproducible.

Command line: ``python benchmarks/panels.py --rows 1e6 --miss-random 0.05 --out p.parquet``.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

__all__ = ["KEY_KINDS", "PANEL_KINDS", "SDID_KINDS", "TIME_KINDS", "gravity_panel",
           "lean_staggered_panel", "make", "sdid_panel", "staggered_panel",
           "str_column", "unit_ids"]


def _design(n_rows: float, n_periods: int, n_cohorts: int, first_year: int,
            time: str = "int"):
    """Units, calendar years and adoption dates (n_cohorts distinct periods among
    years[2:], spread evenly) of a staggered panel of about ``n_rows`` rows."""
    n_units = max(4, round(float(n_rows) / n_periods))
    years = _years(first_year, n_periods, time)
    cand = years[2:]
    n_c = min(n_cohorts, len(cand))
    dates = cand[np.unique(np.linspace(0, len(cand) - 1, n_c).round().astype(int))]
    return n_units, years, dates


#: unit id kinds of :func:`staggered_panel` (``key``)
KEY_KINDS = ("int", "str", "str_long", "str_mixed", "object", "cat", "sparse", "float",
             "object_rows")
#: period kinds of :func:`staggered_panel` (``time``)
TIME_KINDS = ("int", "float", "step2", "irregular")
_CITIES = ("Zürich", "São Paulo", "Kraków", "Reykjavík", "Montréal", "Springfield",
           "Los Angeles", "Düsseldorf", "Ciudad de México", "Bogotá", "İstanbul", "Łódź",
           "Thessaloníki", "Saint-Étienne", "Toronto", "Chicago", "Malmö", "Nagoya",
           "Lagos", "Ōsaka", "Kyiv", "Porto Alegre", "Cork", "Hà Nội")


def _years(first_year: int, n_periods: int, time: str) -> np.ndarray:
    """The panel's calendar periods (int64 for every ``time`` kind; "float" is cast when
    the frame is built)."""
    if time not in TIME_KINDS:
        raise ValueError(f"time must be one of {TIME_KINDS}, not {time!r}")
    if time == "step2":
        return first_year + 2 * np.arange(n_periods, dtype=np.int64)
    if time == "irregular":  # fixed gaps pattern 1, 2, 3, 1, 2, 3, ... (no random draws)
        gaps = np.r_[0, np.resize(np.array([1, 2, 3, 1, 1, 2], dtype=np.int64),
                                  max(0, n_periods - 1))]
        return first_year + np.cumsum(gaps)
    return np.arange(first_year, first_year + n_periods, dtype=np.int64)


def unit_ids(key: str, n_units: int, codes: np.ndarray):
    """The unit id column of ``key`` kind (:data:`KEY_KINDS`) for units ``codes``
    (``0 .. n_units - 1``): int64 codes, Arrow strings, Python-object strings, a pandas
    Categorical or sparse int64 values; distinct units always get distinct ids."""
    if key == "int":
        return codes
    if key == "float":
        return 0.5 * codes
    if key == "sparse":  # a bijection of uint64: distinct, spread over all of int64
        k = np.arange(n_units, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        k ^= k >> np.uint64(29)
        return k.view(np.int64)[codes]
    if key in ("str", "object", "cat"):
        labels = _ids("u", n_units, 7)
    elif key == "str_long":
        k = np.arange(n_units, dtype=np.int64)
        city = np.asarray(_CITIES)[k % len(_CITIES)]
        labels = np.char.add(np.char.add(city, " "),
                             np.char.zfill((k // len(_CITIES)).astype(str), 6))
    elif key == "str_mixed":
        # k % 4: "k" (1-7 bytes), "%08d" (8), "%09d" (9), "unité-k" (>= 8 bytes, UTF-8)
        k = np.arange(n_units, dtype=np.int64)
        ks = k.astype(str)
        labels = np.where(k % 4 == 0, ks, np.where(
            k % 4 == 1, np.char.zfill(ks, 8), np.where(
                k % 4 == 2, np.char.zfill(ks, 9), np.char.add("unité-", ks))))
    else:
        raise ValueError(f"key must be one of {KEY_KINDS}, not {key!r}")
    if key == "object":  # a Series keeps dtype object (pandas 3 would infer "str")
        return pd.Series(np.asarray(labels, dtype=object)[codes], dtype=object, copy=False)
    if key == "cat":
        return pd.Categorical.from_codes(codes, categories=pd.Index(labels, dtype=object))
    return str_column(labels, codes)


def str_column(labels, codes) -> pd.api.extensions.ExtensionArray:
    """``labels[codes]`` as pandas' default string column (dtype ``str``: one Arrow
    large_string chunk, what ``read_parquet`` / ``read_csv`` give), gathered by Arrow from
    the small array of distinct ``labels``: no Python object per row (building 1e7 Python
    str objects used to set the benchmark child's peak memory before any fit started)."""
    import pyarrow as pa

    lab = pa.array(np.asarray(labels, dtype=str), type=pa.large_string())
    out = lab.take(pa.array(np.asarray(codes, dtype=np.int64)))
    return pd.arrays.ArrowStringArray(pa.chunked_array([out]),
                                      dtype=pd.StringDtype("pyarrow", na_value=np.nan))


def _ids(prefix: str, n: int, width: int) -> np.ndarray:
    """``prefix`` + zero-padded ``0 .. n-1`` (NumPy unicode array of ``n`` labels)."""
    return np.char.add(prefix, np.char.zfill(np.arange(n, dtype=np.int64).astype(str), width))


def staggered_panel(n_rows: float, *, n_periods: int = 10, n_cohorts: int = 7,
                    never_share: float = 0.3, treated_units: int | None = None,
                    miss_random: float = 0.0, miss_block: float = 0.0,
                    entry_exit: float = 0.0, key: str = "int", zeros: float = 0.2,
                    shuffle: bool = False, first_year: int = 2001,
                    seed: int = 0, time: str = "int", miss_unit: float = 0.0) -> pd.DataFrame:
    """Staggered-adoption panel (see the module docstring for the knobs)."""
    rng = np.random.default_rng(seed)
    n_units, years, dates = _design(n_rows, n_periods, n_cohorts, first_year, time)
    t = n_periods
    if treated_units is not None:
        g_unit = np.zeros(n_units, dtype=np.int64)
        tr = rng.choice(n_units, size=min(treated_units, n_units), replace=False)
        g_unit[tr] = rng.choice(dates, size=len(tr))
    else:
        never = rng.random(n_units) < never_share
        g_unit = np.where(never, 0, rng.choice(dates, size=n_units)).astype(np.int64)
    unit = np.repeat(np.arange(n_units, dtype=np.int64), t)
    pos = np.tile(np.arange(t, dtype=np.int64), n_units)
    keep = np.ones(len(unit), dtype=bool)
    if entry_exit > 0:
        u_ee = np.flatnonzero(rng.random(n_units) < entry_exit)
        cut = rng.integers(1, max(2, t // 3) + 1, size=len(u_ee))
        late = rng.random(len(u_ee)) < 0.5
        first = np.zeros(n_units, dtype=np.int64)
        last = np.full(n_units, t - 1, dtype=np.int64)
        first[u_ee[late]] = cut[late]
        last[u_ee[~late]] = t - 1 - cut[~late]
        keep &= (pos >= first[unit]) & (pos <= last[unit])
    if miss_block > 0:
        u_b = rng.random(n_units) < miss_block
        blen = rng.integers(2, 5, size=n_units)
        bstart = rng.integers(0, max(1, t - 4), size=n_units)
        keep &= ~(u_b[unit] & (pos >= bstart[unit]) & (pos < bstart[unit] + blen[unit]))
    if miss_random > 0:
        keep &= rng.random(len(unit)) >= miss_random
    unit, pos = unit[keep], pos[keep]
    year = years[pos]
    g = g_unit[unit]
    if time in ("step2", "irregular"):  # relative time and cohorts in periods
        g_pos = np.searchsorted(years, g)
        rel = np.where(g > 0, pos - g_pos, -1)
    else:
        g_pos = g - years[0]
        rel = np.where(g > 0, year - g, -1)
    post = (g > 0) & (year >= g)
    effect = np.where(post, (1.0 + 0.1 * np.maximum(rel, 0)) * (1.0 + 0.02 * g_pos), 0.0)
    a_u = rng.normal(size=n_units)
    l_t = rng.normal(size=t)
    y = a_u[unit] + l_t[pos] + effect + rng.normal(size=len(unit))
    mu = np.exp(0.5 + 0.3 * a_u[unit] + 0.2 * l_t[pos] + 0.1 * post)
    y_count = rng.poisson(mu).astype(float) * (rng.random(len(unit)) >= zeros)
    uid = unit_ids("str" if key == "object_rows" else key, n_units, unit)
    if time == "float":
        year, g = year.astype(np.float64), g.astype(np.float64)
    df = pd.DataFrame({"unit": uid, "year": year, "cohort": g, "rel_time": rel,
                       "treated": post.astype(np.int64), "y": y, "y_count": y_count})
    if shuffle:
        df = df.iloc[rng.permutation(len(df))].reset_index(drop=True)
    if miss_unit > 0:
        df["unit"] = _with_missing(df["unit"], np.random.default_rng([seed, 17]).random(
            len(df)) < miss_unit)
    if key == "object_rows":  # one new str per row, allocated in row order
        df["unit"] = df["unit"].astype(object)
    return df


def _with_missing(s: pd.Series, miss: np.ndarray) -> pd.Series:
    """``s`` with the rows ``miss`` set missing, in its own kind of missing value."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        codes = s.cat.codes.to_numpy().copy()
        codes[miss] = -1
        return pd.Series(pd.Categorical.from_codes(codes, dtype=s.dtype))
    if s.dtype.kind in "iu":
        raise ValueError("miss_unit: integer unit ids cannot be missing")
    if s.dtype == object:
        v = s.to_numpy().copy()
        v[miss] = None
        return pd.Series(v, dtype=object, copy=False)
    if s.dtype.kind == "f":
        return pd.Series(np.where(miss, np.nan, s.to_numpy()))
    import pyarrow as pa
    import pyarrow.compute as pc
    data = s.array._pa_array  # Arrow strings: nulls
    out = pc.if_else(pa.chunked_array([pa.array(miss)]), pa.scalar(None, data.type), data)
    return pd.Series(pd.arrays.ArrowStringArray(out, dtype=s.dtype))


def sdid_panel(n_units: int, n_periods: int, *, treated: float = 0.1, post_share: float = 0.25,
               noise: float = 1.0, factors: int = 2, cohorts: int = 1, key: str = "int",
               seed: int = 1) -> pd.DataFrame:
    """Few-treated block design for synthetic DiD: ``n_units`` x ``n_periods``, balanced.

    ``treated`` is the number (>= 1) or share (< 1) of treated units; they adopt in the
    last ``post_share`` of the periods (``cohorts`` > 1 spreads them over that many
    adoption dates ending there). Outcome: unit and period effects, ``factors``
    interactive factors (so the weights matter), an effect of 1 after adoption, and
    Gaussian noise of sd ``noise``. Columns ``unit, year, cohort (0 = never), treated, y``.
    """
    rng = np.random.default_rng(seed)
    n_tr = int(treated) if treated >= 1 else max(1, round(treated * n_units))
    t0 = n_periods - max(1, round(post_share * n_periods))
    years = np.arange(2001, 2001 + n_periods, dtype=np.int64)
    dates = years[np.linspace(t0, max(t0 - 2 * (cohorts - 1), 2), cohorts).round().astype(int)]
    g_unit = np.zeros(n_units, dtype=np.int64)
    tr = rng.choice(n_units, size=n_tr, replace=False)
    g_unit[tr] = dates[np.arange(n_tr) % cohorts]
    load = rng.normal(size=(n_units, factors))
    fac = np.cumsum(rng.normal(scale=0.3, size=(n_periods, factors)), axis=0)
    y = (rng.normal(size=(n_units, 1)) + rng.normal(size=(1, n_periods)) + load @ fac.T
         + noise * rng.normal(size=(n_units, n_periods)))
    post = (g_unit[:, None] > 0) & (years[None, :] >= g_unit[:, None])
    y = y + post
    unit = np.repeat(np.arange(n_units, dtype=np.int64), n_periods)
    uid = str_column(_ids("u", n_units, 6), unit) if key == "str" else unit
    return pd.DataFrame({"unit": uid, "year": np.tile(years, n_units),
                         "cohort": np.repeat(g_unit, n_periods),
                         "treated": post.ravel().astype(np.int64), "y": y.ravel()})


#: synthetic DiD panel variants used by run_table.py (kind -> sdid_panel keywords)
SDID_KINDS: dict[str, dict] = {
    "tr10": {"treated": 0.1},
    "tr1": {"treated": 1},
    "tr5": {"treated": 5},
    "tr20": {"treated": 0.2},
    "post50_noisy": {"treated": 0.1, "post_share": 0.5, "noise": 3.0},
    "strkey": {"treated": 0.1, "key": "str"},
}


def lean_staggered_panel(n_rows: float, *, n_periods: int = 10, n_cohorts: int = 7,
                         never_share: float = 0.3, miss_random: float = 0.0,
                         first_year: int = 2001, seed: int = 0,
                         chunk_units: int = 1 << 18) -> pd.DataFrame:
    """:func:`staggered_panel` for 1e8 rows: the same design (unit and year effects,
    staggered cohorts, the same dynamic effect, rows missing at random) with only the
    columns ``unit, year, cohort, y`` (int64, int64, int64, float64: 32 bytes a row),
    generated ``chunk_units`` units at a time straight into the final arrays, so that
    making the panel never needs more memory than the panel itself (the frame is built
    without a copy). Not the same random draws as :func:`staggered_panel`."""
    rng = np.random.default_rng(seed)
    n_units, years, dates = _design(n_rows, n_periods, n_cohorts, first_year)
    t = n_periods
    never = rng.random(n_units) < never_share
    g_unit = np.where(never, 0, rng.choice(dates, size=n_units)).astype(np.int64)
    a_u = rng.normal(size=n_units)
    l_t = rng.normal(size=t)
    cap = n_units * t
    cols = {"unit": np.empty(cap, np.int64), "year": np.empty(cap, np.int64),
            "cohort": np.empty(cap, np.int64), "y": np.empty(cap, np.float64)}
    m = 0
    for start in range(0, n_units, chunk_units):
        stop = min(n_units, start + chunk_units)
        crng = np.random.default_rng([seed, start])
        unit = np.repeat(np.arange(start, stop, dtype=np.int64), t)
        pos = np.tile(np.arange(t, dtype=np.int64), stop - start)
        if miss_random > 0:
            keep = crng.random(len(unit)) >= miss_random
            unit, pos = unit[keep], pos[keep]
        year = years[pos]
        g = g_unit[unit]
        rel = np.where(g > 0, year - g, -1)
        post = (g > 0) & (year >= g)
        effect = np.where(post, (1.0 + 0.1 * np.maximum(rel, 0))
                          * (1.0 + 0.02 * (g - years[0])), 0.0)
        k = len(unit)
        cols["unit"][m:m + k] = unit
        cols["year"][m:m + k] = year
        cols["cohort"][m:m + k] = g
        cols["y"][m:m + k] = a_u[unit] + l_t[pos] + effect + crng.normal(size=k)
        m += k
    # views of the first m rows; the untouched tail of each buffer is never paged in
    return pd.DataFrame({c: v[:m] for c, v in cols.items()}, copy=False)


def gravity_panel(n_exp: int, n_imp: int | None = None, n_years: int = 100, *,
                  zeros: float = 0.2, treated_pairs: float = 0.3, n_cohorts: int = 20,
                  key: str = "int", miss_random: float = 0.0, late_pairs: float = 0.0,
                  extra_regressor: bool = False, cohort_from: float | None = None,
                  seed: int = 0) -> pd.DataFrame:
    """Dense gravity panel: every exporter x importer pair (incl. i = j) in every year.

    Columns ``exporter, importer, year, pair, exp_year, imp_year`` (int codes or strings
    with ``key="str"``), ``cohort`` (pair's first treated year, 0 = never), ``treat``
    (0/1), ``trade`` (>= 0, share ``zeros`` of exact zeros), ``dist`` (log distance-like
    pair covariate).

    Unbalanced variants (the defaults give the dense panel, draws unchanged):
    ``miss_random`` removes that share of rows at random; ``late_pairs`` makes that share
    of pairs enter late (their first year drawn uniformly in the first half of the
    years). ``extra_regressor`` adds ``x2``, a time-varying pair covariate that enters
    the mean with coefficient 0.1.

    ``n_cohorts`` adoption years are spread evenly from year index ``cohort_from *
    n_years`` (default ``n_years // 5``) to the second-to-last year; an ETWFE fit has one
    cell per cohort and post-adoption year, so adoptions late in a long panel keep the
    number of cells moderate.
    """
    n_imp = n_exp if n_imp is None else n_imp
    rng = np.random.default_rng(seed)
    n_pair = n_exp * n_imp
    i = np.repeat(np.arange(n_exp), n_imp)
    j = np.tile(np.arange(n_imp), n_exp)
    yrs = np.arange(n_years)
    ii, jj = np.tile(i, n_years), np.tile(j, n_years)
    pp, tt = np.tile(np.arange(n_pair), n_years), np.repeat(yrs, n_pair)
    first = n_years // 5 if cohort_from is None else round(cohort_from * n_years)
    dates = np.unique(np.linspace(first, n_years - 2, n_cohorts).round().astype(int))
    treat_pair = rng.random(n_pair) < treated_pairs
    g_pair = np.where(treat_pair, rng.choice(dates, size=n_pair) + 1, 0)  # 1-based year idx
    g = g_pair[pp]
    d = ((g > 0) & (tt + 1 >= g)).astype(np.int64)
    a_it = rng.normal(0, 1, (n_exp, n_years))[ii, tt]
    b_jt = rng.normal(0, 1, (n_imp, n_years))[jj, tt]
    m_ij = rng.normal(0, 1.0, n_pair)
    eta = 1.0 + a_it + b_jt + m_ij[pp] + 0.2 * d
    trade = rng.poisson(np.exp(eta)) * rng.lognormal(0, 0.2, len(eta))
    trade[rng.random(len(eta)) < zeros] = 0.0
    dist = rng.normal(size=n_pair)[pp]
    extra = {}
    if extra_regressor:
        rng_x = np.random.default_rng(seed + 1)
        x2 = 0.5 * rng_x.normal(size=n_pair)[pp] + rng_x.normal(size=len(eta))
        trade = rng_x.poisson(np.exp(eta + 0.1 * x2)) * rng_x.lognormal(0, 0.2, len(eta))
        trade[rng_x.random(len(eta)) < zeros] = 0.0
        extra["x2"] = x2
    keep = np.ones(len(eta), dtype=bool)
    if late_pairs > 0 or miss_random > 0:
        rng_m = np.random.default_rng(seed + 2)
        if late_pairs > 0:
            entry = np.where(rng_m.random(n_pair) < late_pairs,
                             rng_m.integers(1, max(2, n_years // 2), size=n_pair), 0)
            keep &= tt >= entry[pp]
        if miss_random > 0:
            keep &= rng_m.random(len(eta)) >= miss_random
    year = 1901 + tt
    cohort = np.where(g > 0, 1900 + g, 0)
    if key == "str":
        # labels of the distinct (country, year) and pair values, gathered per row
        ys = (1901 + yrs).astype(str)

        def by_year(prefix: str, n_c: int) -> np.ndarray:  # index c * n_years + t
            c = np.repeat(np.arange(n_c), n_years).astype(str)
            return np.char.add(np.char.add(prefix, c), np.tile(ys, n_c))
        exp_year = str_column(by_year("e", n_exp), ii * n_years + tt)
        imp_year = str_column(by_year("i", n_imp), jj * n_years + tt)
        pair = str_column(np.char.add(np.char.add("p", i.astype(str)),
                                      np.char.add("_", j.astype(str))), pp)
    else:
        exp_year, imp_year, pair = ii * 10_000 + tt, jj * 10_000 + tt, pp
    df = pd.DataFrame({"exporter": ii, "importer": jj, "year": year, "pair": pair,
                       "exp_year": exp_year, "imp_year": imp_year, "cohort": cohort,
                       "treat": d, "trade": trade, "dist": dist, **extra})
    return df if keep.all() else df.loc[keep].reset_index(drop=True)


def gravity_panel_lean(n_exp: int, n_imp: int | None = None, n_years: int = 100, *,
                       zeros: float = 0.2, treated_pairs: float = 0.3, n_cohorts: int = 20,
                       seed: int = 0) -> pd.DataFrame:
    """The dense gravity panel for very large sizes (1e8 rows): the same design and row
    order as :func:`gravity_panel` (other random draws), generated one year at a time
    into compact columns -- ``exp_year, imp_year, pair`` (int32), ``treat`` (int8),
    ``trade`` (float64): 21 bytes a row instead of 80."""
    n_imp = n_exp if n_imp is None else n_imp
    rng = np.random.default_rng(seed)
    n_pair = n_exp * n_imp
    dates = np.unique(np.linspace(n_years // 5, n_years - 2, n_cohorts).round().astype(int))
    treat_pair = rng.random(n_pair) < treated_pairs
    g_pair = np.where(treat_pair, rng.choice(dates, size=n_pair) + 1, 0)
    a_it = rng.normal(0, 1, (n_exp, n_years))
    b_jt = rng.normal(0, 1, (n_imp, n_years))
    m_ij = rng.normal(0, 1.0, n_pair)
    i = np.repeat(np.arange(n_exp, dtype=np.int32), n_imp)
    j = np.tile(np.arange(n_imp, dtype=np.int32), n_exp)
    pair_ids = np.arange(n_pair, dtype=np.int32)
    n = n_pair * n_years
    cols = {"exp_year": np.empty(n, np.int32), "imp_year": np.empty(n, np.int32),
            "pair": np.empty(n, np.int32), "treat": np.empty(n, np.int8),
            "trade": np.empty(n, np.float64)}
    for t in range(n_years):
        sl = slice(t * n_pair, (t + 1) * n_pair)
        d = (g_pair > 0) & (t + 1 >= g_pair)
        cols["exp_year"][sl] = i * n_years + t
        cols["imp_year"][sl] = j * n_years + t
        cols["pair"][sl] = pair_ids
        cols["treat"][sl] = d
        eta = 1.0 + a_it[i, t] + b_jt[j, t] + m_ij + 0.2 * d
        trade = rng.poisson(np.exp(eta)) * rng.lognormal(0, 0.2, n_pair)
        trade[rng.random(n_pair) < zeros] = 0.0
        cols["trade"][sl] = trade
    return pd.DataFrame(cols, copy=False)


# named panel variants used by run_table.py: kind -> keyword arguments of staggered_panel
PANEL_KINDS: dict[str, dict] = {
    "balanced": {},
    "unbalanced": {"miss_random": 0.05},
    "gaps": {"miss_block": 0.2, "miss_random": 0.02},
    "entry_exit": {"entry_exit": 0.3},
    "strkey_unbal": {"miss_random": 0.05, "key": "str", "shuffle": True},
    # the strkey_unbal panel with integer ids (the same rows, values and order)
    "intkey_unbal": {"miss_random": 0.05, "shuffle": True},
    "cohorts20": {"n_periods": 30, "n_cohorts": 24, "miss_random": 0.05},
}


def make(kind: str, n_rows: float, *, lean: bool = False, **kw) -> pd.DataFrame:
    """``staggered_panel(n_rows, **PANEL_KINDS[kind], **kw)``; ``lean=True``:
    :func:`lean_staggered_panel` (the 1e8-row runs; kinds "balanced" and "unbalanced")."""
    if lean:
        if kind not in ("balanced", "unbalanced"):
            raise ValueError(f"lean panels exist for 'balanced' and 'unbalanced', not {kind!r}")
        return lean_staggered_panel(n_rows, **{**PANEL_KINDS[kind], **kw})
    return staggered_panel(n_rows, **{**PANEL_KINDS[kind], **kw})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=float, default=1e5)
    ap.add_argument("--periods", type=int, default=10)
    ap.add_argument("--cohorts", type=int, default=7)
    ap.add_argument("--miss-random", type=float, default=0.0)
    ap.add_argument("--miss-block", type=float, default=0.0)
    ap.add_argument("--entry-exit", type=float, default=0.0)
    ap.add_argument("--key", choices=["int", "str"], default="int")
    ap.add_argument("--zeros", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help=".parquet or .csv path")
    a = ap.parse_args()
    df = staggered_panel(a.rows, n_periods=a.periods, n_cohorts=a.cohorts,
                         miss_random=a.miss_random, miss_block=a.miss_block,
                         entry_exit=a.entry_exit, key=a.key, zeros=a.zeros, seed=a.seed)
    if a.out.endswith(".csv"):
        df.to_csv(a.out, index=False)
    else:
        df.to_parquet(a.out, index=False)


if __name__ == "__main__":
    main()
