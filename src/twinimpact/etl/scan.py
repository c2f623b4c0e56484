"""Out-of-core aggregation of trade records: :func:`scan_trade`.

Customs records (city x partner x product x month, 10^8-10^9 rows) and CEPII BACI
(~10^8 exporter x importer x HS6 rows) do not fit in pandas. :func:`scan_trade` reads
CSV/Parquet files, globs, folders or a table of the engine, keeps the rows a filter
selects and sums them to one row per ``(reporter, partner, year[, by...])`` without
ever holding the records in memory.

One aggregation, three engines
------------------------------
The aggregation is written once, as an :class:`AggregationSpec` (column roles, ``by``,
filters). The spec renders **one SQL text** (:meth:`AggregationSpec.sql`); DuckDB (the
embedded default) and Spark SQL run that same text -- only the identifier quote
character differs (``"x"`` for DuckDB, ```x``` for Spark). The pandas engine reads the
files in chunks and applies the same spec (:meth:`AggregationSpec.pandas_mask`,
:func:`_aggregate_chunk`); it is the slow, obviously correct oracle the tests compare the
SQL engines with. An expression layer (Ibis) was considered and not taken: it would be a
third large dependency for one GROUP BY whose SQL is portable as written.

Every data check happens inside the single scan: per group the query also counts
missing, non-numeric and negative values, so a bad record is found without a second
pass; only when one is found does a small second query locate the file it came from.

DuckDB runs with a memory limit (``memory_limit``, default 1 GB) and a spill folder
(``temp_directory``, default a fresh temporary folder removed when the call returns), so a
GROUP BY larger than memory spills to disk instead of failing.
"""

from __future__ import annotations

import contextlib
import glob as _glob
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..errors import (
    ColumnError,
    DroppedRowsWarning,
    InputError,
    SpecificationError,
    check_literal,
    format_message,
    suggest,
)
from .countries import lookup_country

__all__ = ["AggregationSpec", "resolve_files", "scan_trade"]

Engine = Literal["duckdb", "spark", "pandas"]
_ENGINES = ("duckdb", "spark", "pandas")
_FILE_KINDS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv",
               ".txt": "csv", ".csv.gz": "csv", ".tsv.gz": "csv"}
#: Per-group counts the scan computes (summed when groups merge) besides SUM(value) and
#: MIN(value): missing = n_records - n_present, non-numeric = n_present - n_numeric,
#: negatives exist where min_value < 0. COUNT(x) and MIN(x) cost far less than CASE sums.
_COUNTS = ("n_records", "n_present", "n_numeric")
_RESERVED = ("reporter", "partner", "year", "value", "min_value", "n_missing_value",
             *_COUNTS)


# ---------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class Filter:
    """One row filter: ``column`` ``op`` ``operand`` (op: eq, in, between, prefix)."""

    column: str
    op: str
    operand: Any

    def sql(self, q: Callable[[str], str]) -> str:
        # compare as numbers when the operand is a number and as text otherwise, whatever
        # the column's type in the file (CSV codes are read as text) -- as the pandas mask
        def col(v: Any) -> str:
            return (f"CAST({q(self.column)} AS STRING)" if isinstance(v, str)
                    else f"TRY_CAST({q(self.column)} AS DOUBLE)")

        if self.op == "eq":
            return f"{col(self.operand)} = {_literal(self.operand)}"
        if self.op == "in":
            return " OR ".join(f"{col(v)} = {_literal(v)}" for v in self.operand)
        if self.op == "between":
            lo, hi = self.operand
            return f"{col(lo)} BETWEEN {_literal(lo)} AND {_literal(hi)}"
        c = q(self.column)
        # prefix: compare as text so HS codes stored as numbers work too
        return f"CAST({c} AS STRING) LIKE {_literal(str(self.operand) + '%')}"

    def mask(self, s: pd.Series) -> pd.Series:
        if self.op == "eq":
            return _eq(s, self.operand)
        if self.op == "in":
            m = pd.Series(False, index=s.index)
            for v in self.operand:
                m |= _eq(s, v)
            return m
        if self.op == "between":
            lo, hi = self.operand
            if isinstance(lo, str) or isinstance(hi, str):
                t = s.astype("string")
                return ((t >= str(lo)) & (t <= str(hi))).fillna(False).astype(bool)
            x = pd.to_numeric(s, errors="coerce")
            return ((x >= lo) & (x <= hi)).fillna(False).astype(bool)
        return s.astype("string").str.startswith(str(self.operand)).fillna(False).astype(bool)


def _eq(s: pd.Series, v: Any) -> pd.Series:
    if isinstance(v, str):
        return (s.astype("string") == v).fillna(False).astype(bool)
    x = pd.to_numeric(s, errors="coerce")
    return (x == v).fillna(False).astype(bool)


def _literal(v: Any) -> str:
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        if not np.isfinite(v):
            raise SpecificationError(format_message(
                "filter values must be finite numbers or strings", seen=v,
                fix="drop the NaN/inf from the filter"))
        return repr(float(v))
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    raise SpecificationError(format_message(
        "filter values must be strings or numbers", seen=type(v).__name__,
        fix="use e.g. filters={'flow': 'X', 'hs6': slice('840000', '859999')}"))


def _parse_filters(filters: Mapping[str, Any] | None) -> tuple[Filter, ...]:
    if filters is None:
        return ()
    if not isinstance(filters, Mapping):
        raise SpecificationError(format_message(
            "filters must be a mapping {column: value}", seen=type(filters).__name__,
            fix="e.g. filters={'flowCode': 'X', 'cmdCode': slice('8400', '8599')}"))
    out = []
    for col, v in filters.items():
        if not isinstance(col, str):
            raise SpecificationError(format_message(
                "filter keys must be column names", seen=col, fix="use strings as keys"))
        if isinstance(v, slice):
            if v.step is not None or v.start is None or v.stop is None:
                raise SpecificationError(format_message(
                    f"filter on {col!r}: a range is slice(low, high), both inclusive",
                    seen=v, fix=f"use slice(low, high) for {col!r}"))
            _literal(v.start), _literal(v.stop)
            out.append(Filter(col, "between", (v.start, v.stop)))
        elif isinstance(v, str) and v.endswith("*") and len(v) > 1:
            out.append(Filter(col, "prefix", v[:-1]))
        elif isinstance(v, list | tuple | set | frozenset):
            vals = sorted(v, key=str) if isinstance(v, set | frozenset) else list(v)
            if not vals:
                raise SpecificationError(format_message(
                    f"filter on {col!r} lists no value", fix="give at least one value"))
            for x in vals:
                _literal(x)
            out.append(Filter(col, "in", tuple(vals)))
        else:
            _literal(v)
            out.append(Filter(col, "eq", v))
    return tuple(out)


@dataclass(frozen=True)
class AggregationSpec:
    """What :func:`scan_trade` computes, independent of the engine.

    ``SELECT reporter, partner, year, by..., SUM(value), COUNT(*), <checks> FROM src
    WHERE <filters> GROUP BY reporter, partner, year, by...``
    """

    reporter: str
    partner: str
    year: str
    value: str
    by: tuple[str, ...] = ()
    filters: tuple[Filter, ...] = ()

    @property
    def key_columns(self) -> tuple[str, ...]:
        return (self.reporter, self.partner, self.year, *self.by)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every source column the aggregation reads (no duplicates, in order)."""
        seen: dict[str, None] = {}
        for c in (*self.key_columns, self.value, *(f.column for f in self.filters)):
            seen.setdefault(c, None)
        return tuple(seen)

    def where_sql(self, q: Callable[[str], str]) -> str:
        return " AND ".join(f"({f.sql(q)})" for f in self.filters) or "TRUE"

    def sql(self, relation: str, q: Callable[[str], str]) -> str:
        """The aggregation as one SQL text (DuckDB and Spark SQL both run it)."""
        v = q(self.value)
        num = f"TRY_CAST({v} AS DOUBLE)"
        keys = [f"{q(self.reporter)} AS reporter", f"{q(self.partner)} AS partner",
                f"{q(self.year)} AS year", *(f"{q(b)} AS {q(b)}" for b in self.by)]
        group = ", ".join(q(c) for c in self.key_columns)
        return (
            f"SELECT {', '.join(keys)}, SUM({num}) AS value, COUNT(*) AS n_records, "
            f"COUNT({v}) AS n_present, COUNT({num}) AS n_numeric, MIN({num}) AS min_value "
            f"FROM {relation} WHERE {self.where_sql(q)} GROUP BY {group}")

    def pandas_mask(self, df: pd.DataFrame) -> pd.Series:
        m = pd.Series(True, index=df.index)
        for f in self.filters:
            m &= f.mask(df[f.column])
        return m


def _aggregate_chunk(spec: AggregationSpec, df: pd.DataFrame) -> pd.DataFrame:
    """The spec's aggregation of one in-memory chunk (pandas engine and oracle)."""
    df = df.loc[spec.pandas_mask(df), list(spec.columns)]
    raw = df[spec.value]
    num = pd.to_numeric(raw, errors="coerce")
    missing = raw.isna()
    keys = pd.DataFrame({"reporter": df[spec.reporter], "partner": df[spec.partner],
                         "year": df[spec.year]})
    for b in spec.by:
        keys[b] = df[b]
    work = keys.assign(value=num, min_value=num, n_records=1,
                       n_present=(~missing).astype("int64"),
                       n_numeric=num.notna().astype("int64"))
    return _group(work, list(keys.columns))


def _group(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Merge groups: counts and value summed (NaN if all missing), min_value min."""
    g = df.groupby(keys, dropna=False, sort=False)
    return (g[list(_COUNTS)].sum().join(g[["value"]].sum(min_count=1))
            .join(g[["min_value"]].min()).reset_index())


# ---------------------------------------------------------------------------- sources
@dataclass
class _Files:
    paths: list[Path]
    kind: str  # "csv" | "parquet"
    pattern: str
    sep: str = ","
    columns: dict[Path, list[str]] = field(default_factory=dict)


def _kind(p: Path) -> str | None:
    name = p.name.lower()
    for suf, k in sorted(_FILE_KINDS.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suf):
            return k
    return None


def resolve_files(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
                  ) -> tuple[list[Path], str]:
    """The data files a source names (file, folder, glob or list of those) and their kind.

    Raises :class:`~twinimpact.errors.InputError` when nothing matches, when a file is of
    an unsupported type, or when CSV and Parquet files are mixed.
    """
    items = [source] if isinstance(source, str | os.PathLike) else list(source)
    if not items:
        raise InputError(format_message("no trade files given", fix="pass a path or a glob"))
    paths: list[Path] = []
    for item in items:
        s = os.fspath(item)
        p = Path(s)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and _kind(q))
            if not found:
                raise InputError(format_message(
                    "the folder holds no CSV or Parquet file", where=str(p.resolve()),
                    fix="point to the folder with the .csv/.parquet files or pass a glob"))
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        elif _glob.has_magic(s):
            found = sorted(Path(x) for x in _glob.glob(s, recursive=True) if Path(x).is_file())
            if not found:
                raise InputError(format_message(
                    "the glob matches no file", where=s,
                    fix="check the pattern (relative globs are read from "
                        f"{Path.cwd()}); '**' needs a folder part such as 'data/**/*.csv'"))
            paths.extend(found)
        else:
            raise InputError(format_message(
                "trade file not found", where=str(p.resolve()),
                fix="check the path; pass a file, a folder or a glob such as 'data/*.parquet'"))
    kinds = {q: _kind(q) for q in paths}
    bad = [q for q, k in kinds.items() if k is None]
    if bad:
        raise InputError(format_message(
            "unsupported trade file type", where=str(bad[0]), seen=bad[0].suffix,
            fix="use .csv, .tsv or .parquet files"))
    if len(set(kinds.values())) > 1:
        ex = {k: q for q, k in kinds.items()}
        raise InputError(format_message(
            "CSV and Parquet files are mixed in one source",
            where=f"{ex['csv']} and {ex['parquet']}",
            fix="scan the CSV and the Parquet files separately (or convert one kind)"))
    return list(dict.fromkeys(paths)), next(iter(kinds.values()))


def _csv_header(path: Path, sep: str) -> list[str]:
    import csv
    import gzip

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
        try:
            return next(csv.reader(fh, delimiter=sep))
        except StopIteration:
            return []


def _file_columns(path: Path, kind: str, sep: str) -> list[str]:
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except Exception as exc:  # corrupt or not parquet
            raise InputError(format_message(
                "cannot read the Parquet file's schema", where=str(path), seen=str(exc),
                fix="check that the file is a complete Parquet file")) from exc
    return _csv_header(path, sep)


def _check_columns(files: _Files, spec: AggregationSpec) -> None:
    """Every file has every column the spec reads (error names the file and column)."""
    first: list[str] | None = None
    for p in files.paths:
        cols = _file_columns(p, files.kind, files.sep)
        files.columns[p] = cols
        if first is None:
            first = cols
        for c in spec.columns:
            if c not in cols:
                close = suggest(c, cols)
                hint = f"did you mean {close[0]!r}? " if close else ""
                differ = ("" if cols == first or first is None else
                          f" (the files' columns differ: {files.paths[0].name} has "
                          f"{', '.join(first[:12])})")
                raise ColumnError(format_message(
                    f"trade file has no column {c!r}{differ}",
                    where=f"{p}; columns present: {', '.join(cols[:25])}",
                    fix=hint + "map the role to the file's column name (reporter=, partner=, "
                        "year=, value=, by=, filters=) or leave the file out"))


# ---------------------------------------------------------------------------- engines
def _quote_duckdb(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_spark(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _duckdb_connect(memory_limit: str | None, temp_directory: str | os.PathLike | None,
                    threads: int | None, stack: contextlib.ExitStack):
    """A DuckDB connection closed by ``stack``; its default spill folder is removed then."""
    try:
        import duckdb
    except ImportError as exc:  # pragma: no cover - duckdb is a core dependency
        raise SpecificationError(format_message(
            "engine='duckdb' needs the duckdb package", fix="pip install duckdb")) from exc
    # the folder is entered first so that it is removed after the connection is closed
    tmp = os.fspath(temp_directory) if temp_directory else stack.enter_context(
        tempfile.TemporaryDirectory(prefix="twinimpact-duckdb-", ignore_cleanup_errors=True))
    con = duckdb.connect(":memory:")
    stack.callback(con.close)
    if memory_limit:
        con.execute(f"SET memory_limit = {_literal(str(memory_limit))}")
    con.execute(f"SET temp_directory = {_literal(tmp)}")
    con.execute("SET preserve_insertion_order = false")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def _duckdb_relation(files: _Files, text_columns: Sequence[str] = (),
                     with_filename: bool = False) -> str:
    lst = "[" + ", ".join(_literal(str(p)) for p in files.paths) + "]"
    fn = ", filename = true" if with_filename else ""
    if files.kind == "parquet":
        return f"read_parquet({lst}, union_by_name = true{fn})"
    # codes stay text ("0101" is an HS heading, not 101); values are cast by the query
    types = ", ".join(f"{_literal(c)}: 'VARCHAR'" for c in text_columns)
    return (f"read_csv({lst}, header = true, delim = {_literal(files.sep)}, "
            f"union_by_name = true, types = {{{types}}}{fn})")


def _run_duckdb(spec: AggregationSpec, source: Any, files: _Files | None,
                options: dict[str, Any]) -> tuple[Any, Callable[..., Any]]:
    import duckdb

    con = _duckdb_connect(options["memory_limit"], options["temp_directory"],
                          options["threads"], options["stack"])
    relation = None
    text = [c for c in spec.columns if c != spec.year]
    if files is not None:
        rel = _duckdb_relation(files, text)
    elif type(source).__module__.startswith("duckdb"):
        relation, rel = source, "twinimpact_source"
    else:
        con.register("twinimpact_source", source)
        rel = "twinimpact_source"
    sql = spec.sql(rel, _quote_duckdb)
    try:
        if relation is not None:  # a relation lives in its own connection
            con.register("twinimpact_agg_in", relation.query(rel, sql).arrow())
            con.execute("CREATE TEMP TABLE twinimpact_agg AS SELECT * FROM twinimpact_agg_in")
        else:
            con.execute(f"CREATE TEMP TABLE twinimpact_agg AS {sql}")
        out = (con, "twinimpact_agg")
    except duckdb.Error as exc:
        where = files.pattern if files is not None else "the in-memory table"
        raise InputError(format_message(
            "DuckDB could not read the trade records", where=where, seen=str(exc)[:400],
            fix="check the named file/line/column (a value that does not fit the column's "
                "type, a ragged CSV row)")) from exc

    def locate(kind: str, cond: str) -> Any:
        if files is None:
            return None
        q = (f"SELECT filename FROM {_duckdb_relation(files, text, True)} "
             f"WHERE ({spec.where_sql(_quote_duckdb)}) AND ({cond}) LIMIT 1")
        r = _one(con, q)
        return r[0] if r else None

    locate.quote = _quote_duckdb  # type: ignore[attr-defined]
    return out, locate


def _local_spark():
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise SpecificationError(format_message(
            "engine='spark' needs pyspark", fix="pip install 'twinimpact[spark]' (and Java "
            "17, e.g. Debian's openjdk-17-jre-headless), or pass spark=<SparkSession>")
        ) from exc
    return (SparkSession.builder.master("local[2]").appName("twinimpact")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "4")
            .getOrCreate())


def _run_spark(spec: AggregationSpec, source: Any, files: _Files | None,
               options: dict[str, Any]) -> tuple[pd.DataFrame, Callable[[str], Any]]:
    spark = options.get("spark") or _local_spark()
    view = "twinimpact_source"
    if files is not None:
        paths = [str(p) for p in files.paths]
        if files.kind == "parquet":
            df = spark.read.option("mergeSchema", "true").parquet(*paths)
        else:
            headers = {tuple(files.columns[p]) for p in files.paths}
            reader = spark.read.option("header", "true").option("sep", files.sep)
            if len(headers) == 1:
                df = reader.csv(paths)
            else:  # Spark maps CSV columns by position: read each file, union by name
                df = None
                for p in paths:
                    part = reader.csv(p)
                    df = part if df is None else df.unionByName(part,
                                                                allowMissingColumns=True)
        df.createOrReplaceTempView(view)
    elif isinstance(source, str):
        view = ".".join(_quote_spark(x) for x in source.split("."))
    else:
        source.createOrReplaceTempView(view)
    sql = spec.sql(view, _quote_spark)
    out = spark.sql(sql).toPandas()

    def locate(kind: str, cond: str) -> Any:
        if files is None:
            return None
        q = (f"SELECT input_file_name() AS f FROM {view} "
             f"WHERE ({spec.where_sql(_quote_spark)}) AND ({cond}) LIMIT 1")
        rows = spark.sql(q).collect()
        return rows[0]["f"] if rows else None

    locate.quote = _quote_spark  # type: ignore[attr-defined]
    return out, locate


def _iter_chunks(files: _Files, columns: Sequence[str], chunksize: int
                 ) -> Iterator[tuple[Path, pd.DataFrame]]:
    for p in files.paths:
        if files.kind == "parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(p)
            for batch in pf.iter_batches(batch_size=chunksize, columns=list(columns)):
                yield p, batch.to_pandas()
        else:
            # keep_default_na=False: "NA" is Namibia's ISO2 code, not a missing value
            for chunk in pd.read_csv(p, sep=files.sep, usecols=list(columns),
                                     chunksize=chunksize, keep_default_na=False,
                                     na_values=[""], dtype=str, encoding="utf-8-sig"):
                yield p, chunk


def _run_pandas(spec: AggregationSpec, source: Any, files: _Files | None,
                options: dict[str, Any]) -> tuple[pd.DataFrame, Callable[[str], Any]]:
    parts: list[pd.DataFrame] = []
    first_bad: dict[str, Any] = {}
    if files is None:
        chunks: Iterable[tuple[Any, pd.DataFrame]] = [(None, source)]
    else:
        chunks = _iter_chunks(files, spec.columns, options["chunksize"])
    for path, chunk in chunks:
        agg = _aggregate_chunk(spec, chunk)
        for c, bad in (("n_nonnumeric", (agg["n_present"] > agg["n_numeric"]).any()),
                       ("n_negative", (agg["min_value"] < 0).any())):
            if c not in first_bad and bad:
                first_bad[c] = path
        for role in ("reporter", "partner", "year"):
            if f"missing:{role}" not in first_bad and agg[role].isna().any():
                first_bad[f"missing:{role}"] = path
        parts.append(agg)
        # re-aggregate as we go so memory holds groups, not records
        if len(parts) >= 8:
            parts = [_combine(spec, parts)]
    out = _combine(spec, parts) if parts else pd.DataFrame(
        columns=["reporter", "partner", "year", *spec.by, "value", "min_value", *_COUNTS])

    def locate(kind: str, cond: str) -> Any:
        return first_bad.get(kind)

    locate.quote = None  # type: ignore[attr-defined]
    return out, locate


def _combine(spec: AggregationSpec, parts: list[pd.DataFrame]) -> pd.DataFrame:
    df = pd.concat(parts, ignore_index=True)
    return _group(df, ["reporter", "partner", "year", *spec.by])


# ---------------------------------------------------------------------------- public
def scan_trade(source: Any, *, reporter: str, partner: str, year: str, value: str,
               by: str | Sequence[str] | None = None,
               filters: Mapping[str, Any] | None = None,
               engine: Engine = "duckdb", spark: Any = None,
               reporter_type: Literal["country", "city"] = "country",
               normalize: bool = True,
               country_aliases: Mapping[str, str] | None = None,
               unit: str | None = None, sep: str | None = None,
               memory_limit: str | None = "1GB",
               temp_directory: str | os.PathLike[str] | None = None,
               threads: int | None = None, chunksize: int = 1_000_000) -> pd.DataFrame:
    """Aggregate trade records larger than memory to a canonical trade frame.

    Parameters
    ----------
    source : path, glob, folder, list of paths, or a table
        CSV/TSV (optionally ``.gz``) or Parquet files: one file, a folder (every
        ``.csv``/``.parquet`` below it), a glob (``"customs/2019-*.parquet"``,
        ``"baci/**/*.csv"``) or a list of those. Or a table of the engine: a pandas
        DataFrame or pyarrow Table (any engine), a DuckDB relation (``engine="duckdb"``),
        a Spark DataFrame or the name of a table in the session's catalog
        (``engine="spark"``).
    reporter, partner, year, value : str
        Source column names of the reporter (exporter, or a city id with
        ``reporter_type="city"``), the partner, the calendar year and the value to sum.
    by : str or sequence of str, optional
        Further key columns kept in the result (e.g. ``"hs2"``, ``"flow"``).
    filters : mapping, optional
        ``{column: condition}``, all of which a row must meet: a value (``"X"``), a list
        of values (``["X", "RX"]``), ``slice(low, high)`` for an inclusive range
        (``slice("840000", "859999")``) or a ``"prefix*"`` string (``"84*"``). Columns
        are checked against every file.
    engine : {"duckdb", "spark", "pandas"}
        ``"duckdb"`` (default, embedded, spills to disk), ``"spark"`` (a Spark session:
        ``spark=`` or a local one), ``"pandas"`` (chunked, slow; the reference).
    reporter_type : {"country", "city"}
        ``"country"`` normalises reporter names/codes to ISO3 as :func:`read_trade` does;
        ``"city"`` keeps reporters as they are. Partners are always normalised.
    normalize : bool
        ``False`` keeps reporter and partner codes exactly as read (e.g. BACI's numeric
        codes, to be mapped with its country file).
    memory_limit, temp_directory, threads
        DuckDB settings: memory cap (``"1GB"``), spill folder (by default a fresh temporary
        folder, removed when the call returns), worker threads (all cores by default).
    chunksize : int
        Rows per chunk for ``engine="pandas"``.

    Returns
    -------
    DataFrame
        One row per ``(reporter, partner, year, by...)``: ``value`` (sum; NaN where
        every record of the group is missing), ``n_records`` (records summed),
        ``n_missing_value``. ``attrs`` holds the source (files, engine, SQL), the spec,
        ``n_records`` (records read after the filters), ``n_missing_value``, ``dropped``
        (rows dropped and why: none unless countries merge) and ``unit``.

    Raises
    ------
    InputError
        No file matches; unsupported or mixed file types; a non-numeric or negative
        value (naming the file and column); a missing reporter/partner/year; a
        non-integer year; an unknown country code.
    ColumnError
        A file lacks a column the aggregation reads (naming the file and column).
    SpecificationError
        Unknown engine; a bad filter; ``by`` repeats a role or uses a reserved name.

    Examples
    --------
    >>> import pandas as pd
    >>> rec = pd.DataFrame({"city": ["Hamburg", "Hamburg", "Bremen"],
    ...                     "dest": ["CHN", "China", "USA"], "yr": [2019, 2019, 2019],
    ...                     "usd": [1.0, 2.5, 4.0], "flow": ["X", "X", "X"]})
    >>> t = scan_trade(rec, reporter="city", partner="dest", year="yr", value="usd",
    ...                filters={"flow": "X"}, reporter_type="city")
    >>> t[["reporter", "partner", "value", "n_records"]].to_dict("records")[0]
    {'reporter': 'Bremen', 'partner': 'USA', 'value': 4.0, 'n_records': 1}
    """
    check_literal("engine", engine, _ENGINES)
    check_literal("reporter_type", reporter_type, ("country", "city"))
    by_t: tuple[str, ...] = (by,) if isinstance(by, str) else tuple(by or ())
    for role, name in (("reporter", reporter), ("partner", partner), ("year", year),
                       ("value", value)):
        if not isinstance(name, str) or not name:
            raise SpecificationError(format_message(
                f"{role}= must name a column", seen=name, fix=f"pass {role}='<column>'"))
    roles = (reporter, partner, year, value)
    for b in by_t:
        if b in roles or b in _RESERVED:
            raise SpecificationError(format_message(
                "by= repeats a role column or uses a reserved output name", seen=b,
                fix="by= lists further key columns (e.g. a product or flow column), not "
                    f"{', '.join(_RESERVED)}"))
    if len(set(by_t)) != len(by_t):
        raise SpecificationError(format_message("by= lists a column twice", seen=by_t))
    spec = AggregationSpec(reporter, partner, year, value, by_t, _parse_filters(filters))

    files: _Files | None = None
    table: Any = None
    if _is_table(source, engine, spark):
        table = source
        _check_table_columns(table, spec, engine)
        where = f"a {type(source).__name__}" if not isinstance(source, str) else source
        src_meta: dict[str, Any] = {"kind": "table", "table": where}
    else:
        paths, kind = resolve_files(source)
        if sep is None:
            sep = "\t" if any(p.name.lower().endswith((".tsv", ".tsv.gz")) for p in paths) \
                else ","
        files = _Files(paths, kind, _pattern(source), sep)
        _check_columns(files, spec)
        src_meta = {"kind": "files", "format": kind, "pattern": files.pattern,
                    "n_files": len(paths), "files": [str(p) for p in paths[:50]]}
    if engine == "pandas" and table is not None and not isinstance(table, pd.DataFrame):
        table = _to_pandas(table)
    runner = {"duckdb": _run_duckdb, "spark": _run_spark, "pandas": _run_pandas}[engine]
    # the DuckDB connections and their default spill folders live only for this call
    with contextlib.ExitStack() as stack:
        options = {"spark": spark, "memory_limit": memory_limit,
                   "temp_directory": temp_directory, "threads": threads,
                   "chunksize": int(chunksize), "stack": stack}
        raw, locate = runner(spec, table, files, options)
        if isinstance(raw, pd.DataFrame):  # spark / pandas: finish the small result in DuckDB
            con = _duckdb_connect(memory_limit, temp_directory, threads, stack)
            con.register("twinimpact_agg", raw)
            raw = (con, "twinimpact_agg")
        out, meta = _finish(*raw, spec, locate, reporter_type if normalize else "raw",
                            country_aliases)
    q = _quote_spark if engine == "spark" else _quote_duckdb
    out.attrs = {"kind": "trade", "source": {**src_meta, "engine": engine},
                 "unit": unit, "reporter_type": reporter_type,
                 "spec": {"reporter": reporter, "partner": partner, "year": year,
                          "value": value, "by": list(by_t),
                          "filters": {f.column: [f.op, _jsonish(f.operand)]
                                      for f in spec.filters}},
                 "sql": spec.sql("<source>", q) if engine != "pandas" else None,
                 "columns": {"reporter": reporter, "partner": partner, "year": year,
                             "value": value},
                 **meta}
    return out


def _jsonish(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _pattern(source: Any) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    items = [os.fspath(s) for s in source]
    return items[0] if len(items) == 1 else f"{items[0]} (+{len(items) - 1} more)"


def _is_table(source: Any, engine: str, spark: Any) -> bool:
    if isinstance(source, pd.DataFrame):
        return True
    mod = type(source).__module__
    if mod.startswith(("pyarrow", "duckdb", "pyspark")):
        return True
    if engine == "spark" and isinstance(source, str) and not Path(source).exists() \
            and not _glob.has_magic(source) and re.fullmatch(r"[\w.]+", source):
        sess = spark or _local_spark()
        return bool(sess.catalog.tableExists(source))
    return False


def _to_pandas(table: Any) -> pd.DataFrame:
    if hasattr(table, "to_pandas"):
        return table.to_pandas()
    if hasattr(table, "df"):
        return table.df()
    return table.toPandas()


def _table_columns(table: Any) -> list[str]:
    if isinstance(table, pd.DataFrame):
        return [str(c) for c in table.columns]
    if hasattr(table, "column_names"):
        return list(table.column_names)
    return list(table.columns)


def _check_table_columns(table: Any, spec: AggregationSpec, engine: str) -> None:
    if isinstance(table, str):
        return  # a catalog table: Spark names a missing column itself
    cols = _table_columns(table)
    for c in spec.columns:
        if c not in cols:
            close = suggest(c, cols)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ColumnError(format_message(
                f"trade table has no column {c!r}",
                where="columns present: " + ", ".join(cols[:25]),
                fix=hint + "map the role to the table's column name"))


def _one(con: Any, sql: str) -> Any:
    """First row of a query (a fully fetched result: DuckDB 2 forbids open ones)."""
    rows = con.sql(sql).fetchall()
    return rows[0] if rows else None


def _finish(con: Any, table: str, spec: AggregationSpec, locate: Callable[..., Any],
            reporter_type: str, aliases: Mapping[str, str] | None
            ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Check the per-group counts, normalise names and merge groups -- in DuckDB.

    ``table`` (in ``con``) holds the engine's aggregation (one row per raw key). The
    checks read it once; names are looked up once per distinct code; the final GROUP BY
    merges keys that normalise to the same code (ROM and ROU) and sorts.
    """
    qe = getattr(locate, "quote", None) or _quote_duckdb
    v = qe(spec.value)
    (n_groups, n_nonnumeric, n_negative, miss_r, miss_p, miss_y) = _one(con,
        "SELECT COUNT(*), COALESCE(SUM(n_present - n_numeric), 0), "
        "COALESCE(SUM(CASE WHEN min_value < 0 THEN 1 ELSE 0 END), 0), "
        + ", ".join(f"COALESCE(SUM(CASE WHEN {k} IS NULL THEN n_records ELSE 0 END), 0)"
                    for k in ("reporter", "partner", "year"))
        + f" FROM {table}")
    for count, n, unit, cond, what, fix in (
            ("n_nonnumeric", n_nonnumeric, "record(s)",
             f"{v} IS NOT NULL AND TRY_CAST({v} AS DOUBLE) IS NULL",
             "trade value is not a number", "convert the values to numbers (a thousands "
             "separator or a footnote mark in the column?)"),
            ("n_negative", n_negative, "group(s) hold one or more",
             f"TRY_CAST({v} AS DOUBLE) < 0",
             "negative trade values", "trade flows are >= 0; check the sign or the column "
             "(net trade is not a flow)")):
        if n:
            file = locate(count, cond)
            where = f"column {spec.value!r}"
            if file is not None:
                where += f" in file {file}"
            raise InputError(format_message(f"{what} ({int(n)} {unit})", where=where,
                                            fix=fix))
    for role, col, n in (("reporter", spec.reporter, miss_r),
                         ("partner", spec.partner, miss_p), ("year", spec.year, miss_y)):
        if n:
            file = locate(f"missing:{role}", f"{qe(col)} IS NULL")
            where = f"column {col!r}" + (f" in file {file}" if file is not None else "")
            raise InputError(format_message(
                f"missing {role} in {int(n)} trade record(s)", where=where,
                fix=f"fill in the {role} or exclude those rows with filters="))
    yd = "TRY_CAST(year AS DOUBLE)"
    bad = _one(con, f"SELECT CAST(year AS VARCHAR) FROM {table} WHERE {yd} IS NULL OR "
                    f"{yd} <> ROUND({yd}) LIMIT 1")
    if bad:
        raise InputError(format_message(
            "year must be a whole number", where=f"column {spec.year!r}", seen=bad[0],
            fix="use calendar years such as 1990 (derive the year from a date column "
                "before scanning)"))
    merged: dict[str, list[str]] = {}
    for role in ("reporter", "partner"):
        uniq = [r[0] for r in con.sql(
            f"SELECT DISTINCT CAST({role} AS VARCHAR) FROM {table}").fetchall()]
        if reporter_type == "raw" or (role == "reporter" and reporter_type == "city"):
            labels = list(uniq)
        else:
            col = spec.reporter if role == "reporter" else spec.partner
            labels, back = [], {}
            for u in uniq:
                hit = lookup_country(u, aliases)
                if hit is None:
                    from .countries import _unknown_error

                    raise _unknown_error(u, col, None)
                labels.append(hit)
                back.setdefault(hit, []).append(u)
            merged.update({iso: sorted(ks) for iso, ks in back.items() if len(ks) > 1})
        con.register(f"twinimpact_map_{role}",
                     pd.DataFrame({"raw": pd.Series(uniq, dtype=object),
                                   "label": pd.Series(labels, dtype=object)}))
    by = [_quote_duckdb(b) for b in spec.by]
    keys = ["reporter", "partner", "year", *by]
    year_int = _one(con, f"SELECT typeof(year) FROM {table} LIMIT 1")
    identity = not merged and (year_int is None or year_int[0] in (
        "BIGINT", "INTEGER", "SMALLINT", "TINYINT", "UBIGINT", "UINTEGER", "USMALLINT",
        "UTINYINT", "HUGEINT"))
    if identity:
        identity = all(_one(con, f"SELECT bool_and(raw = label) FROM twinimpact_map_{r}"
                            )[0] in (True, None)
                       for r in ("reporter", "partner"))
    if identity:  # codes are final already: no join, no second GROUP BY
        query = ("SELECT CAST(reporter AS VARCHAR) AS reporter, "
                 "CAST(partner AS VARCHAR) AS partner, CAST(year AS BIGINT) AS year"
                 + "".join(f", {b}" for b in by)
                 + f", value, n_records, n_records - n_present AS n_missing_value "
                   f"FROM {table}")
    else:
        sel = ", ".join(["mr.label AS reporter", "mp.label AS partner",
                         f"CAST({yd} AS BIGINT) AS year", *(f"a.{b} AS {b}" for b in by)])
        query = (f"SELECT {sel}, SUM(a.value) AS value, SUM(a.n_records) AS n_records, "
                 f"SUM(a.n_records - a.n_present) AS n_missing_value FROM {table} a "
                 f"JOIN twinimpact_map_reporter mr ON CAST(a.reporter AS VARCHAR) = mr.raw "
                 f"JOIN twinimpact_map_partner mp ON CAST(a.partner AS VARCHAR) = mp.raw "
                 f"GROUP BY {', '.join(str(i + 1) for i in range(len(keys)))}")
    # Arrow out of DuckDB (several times faster than .df()); sort on factorized codes
    # (few distinct reporters/partners: integer lexsort beats a string sort 5-10x)
    out = con.sql(query).to_arrow_table().to_pandas()
    sort_keys = ["reporter", "partner", "year", *spec.by]
    order = np.lexsort([pd.factorize(out[k], sort=True)[0] for k in reversed(sort_keys)])
    out = out.take(order).reset_index(drop=True)
    out["reporter"] = out["reporter"].astype("string")
    out["partner"] = out["partner"].astype("string")
    out["value"] = out["value"].astype(float)
    for c in ("year", "n_records", "n_missing_value"):
        out[c] = out[c].astype("int64")
    all_missing = int(out["value"].isna().sum())
    if all_missing:
        warnings.warn(format_message(
            f"{all_missing} group(s) have only missing values; their value is NaN",
            where=f"column {spec.value!r}", fix="check the source; the counts are in "
            "n_missing_value"), DroppedRowsWarning, stacklevel=3)
    meta = {"n_records": int(out["n_records"].sum()),
            "n_missing_value": int(out["n_missing_value"].sum()),
            "n_groups": len(out), "n_groups_before_normalising": int(n_groups),
            "dropped": {}, "merged_codes": merged}
    return out, meta
