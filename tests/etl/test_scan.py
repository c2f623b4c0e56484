"""scan_trade: DuckDB (and Spark) against the chunked pandas engine and a plain groupby.

The oracle is ``pandas.DataFrame.groupby(...).sum()`` on the records held in memory; the
engines must give the same frame (values to 1e-9 relative: summation order differs).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import twinimpact as ti
from twinimpact.errors import ColumnError, InputError, SpecificationError

#: Sums of up to a few thousand doubles in a different order agree to this relative error.
RTOL = 1e-9
KW = dict(reporter="city", partner="dest", year="yr", value="usd")


def _records(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "city": rng.choice(["Hamburg", "Bremen", "Kiel"], n),
        "dest": rng.choice(["CHN", "USA", "FRA", "ROM", "ROU", "Frankreich"], n),
        "yr": rng.integers(2000, 2004, n),
        "usd": np.round(rng.gamma(1.0, 100.0, n), 2),
        "flow": rng.choice(["X", "M"], n),
        "hs4": rng.choice(["0101", "8401", "8502", "8471"], n),
    })


def _oracle(df: pd.DataFrame, by=(), mask=None) -> pd.DataFrame:
    d = df if mask is None else df[mask]
    d = d.assign(dest=d["dest"].map({"CHN": "CHN", "USA": "USA", "FRA": "FRA",
                                     "Frankreich": "FRA", "ROM": "ROU", "ROU": "ROU"}))
    keys = ["city", "dest", "yr", *by]
    g = d.groupby(keys).agg(value=("usd", "sum"), n_records=("usd", "size")).reset_index()
    g = g.rename(columns={"city": "reporter", "dest": "partner", "yr": "year"})
    return g.sort_values(["reporter", "partner", "year", *by]).reset_index(drop=True)


def _same(got: pd.DataFrame, want: pd.DataFrame, by=()) -> None:
    cols = ["reporter", "partner", "year", *by]
    assert got[cols].astype(str).values.tolist() == want[cols].astype(str).values.tolist()
    np.testing.assert_allclose(got["value"], want["value"], rtol=RTOL)
    assert got["n_records"].tolist() == want["n_records"].tolist()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("scan")
    df = _records()
    for i, part in enumerate(df.iloc[j:j + 1000] for j in range(0, len(df), 1000)):
        part.to_parquet(root / f"part-{i}.parquet", index=False)
        (root / "csv").mkdir(exist_ok=True)
        part.to_csv(root / "csv" / f"part-{i}.csv", index=False)
    return root, df


@pytest.mark.parametrize("engine", ["duckdb", "pandas"])
@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_engines_match_the_in_memory_groupby(files, engine, kind):
    root, df = files
    source = str(root / "*.parquet") if kind == "parquet" else root / "csv"
    got = ti.scan_trade(source, **KW, by="hs4", filters={"flow": "X", "hs4": "84*"},
                        engine=engine, reporter_type="city")
    mask = (df.flow == "X") & df.hs4.str.startswith("84")
    _same(got, _oracle(df, ("hs4",), mask), ("hs4",))
    assert got.attrs["n_records"] == int(mask.sum())
    # ROM and ROU, FRA and Frankreich are one country after normalisation
    assert set(got.attrs["merged_codes"]) == {"ROU", "FRA"}
    assert got["hs4"].str.len().eq(4).all()  # codes keep their leading zeros as text


def test_filters_list_range_and_the_sql_is_recorded(files):
    root, df = files
    got = ti.scan_trade(str(root / "*.parquet"), **KW, reporter_type="city",
                        filters={"flow": ["X", "M"], "yr": slice(2001, 2002)})
    _same(got, _oracle(df, mask=df.yr.between(2001, 2002)))
    assert "GROUP BY" in got.attrs["sql"] and got.attrs["source"]["n_files"] == 3


def test_tables_of_the_engine_and_caller_frame_unchanged(files):
    import duckdb
    import pyarrow as pa

    _, df = files
    before = df.copy()
    want = _oracle(df)
    for table in (df, pa.Table.from_pandas(df), duckdb.from_df(df)):
        got = ti.scan_trade(table, **KW, reporter_type="city")
        _same(got, want)
    pd.testing.assert_frame_equal(df, before)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(1, 400),
       flow=st.sampled_from(["X", "M"]))
def test_duckdb_equals_pandas_engine_property(seed, n, flow):
    df = _records(n, seed)
    a = ti.scan_trade(df, **KW, by="hs4", filters={"flow": flow}, reporter_type="city")
    b = ti.scan_trade(df, **KW, by="hs4", filters={"flow": flow}, reporter_type="city",
                      engine="pandas")
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True),
                                  check_dtype=False, rtol=RTOL)
    # permuting the records changes nothing
    c = ti.scan_trade(df.sample(frac=1.0, random_state=seed), **KW, by="hs4",
                      filters={"flow": flow}, reporter_type="city")
    pd.testing.assert_frame_equal(a, c, rtol=RTOL)


def test_missing_values_are_counted_not_dropped(tmp_path):
    df = pd.DataFrame({"city": ["A", "A", "B"], "dest": ["CHN"] * 3, "yr": [2000] * 3,
                       "usd": [1.0, None, None]})
    p = tmp_path / "m.csv"
    df.to_csv(p, index=False)
    with pytest.warns(ti.errors.DroppedRowsWarning, match="only missing values"):
        got = ti.scan_trade(p, **KW, reporter_type="city")
    assert got["n_records"].tolist() == [2, 1]
    assert got["n_missing_value"].tolist() == [1, 1]
    assert got["value"].iloc[0] == 1.0 and np.isnan(got["value"].iloc[1])
    assert got.attrs["n_missing_value"] == 2


# ---------------------------------------------------------------------------- bad input
def test_glob_matching_nothing_and_empty_folder(tmp_path):
    with pytest.raises(InputError, match="the glob matches no file"):
        ti.scan_trade(str(tmp_path / "*.parquet"), **KW)
    with pytest.raises(InputError, match="holds no CSV or Parquet"):
        ti.scan_trade(tmp_path, **KW)
    with pytest.raises(InputError, match="trade file not found"):
        ti.scan_trade(tmp_path / "nope.csv", **KW)


def test_files_whose_columns_differ_name_file_and_column(files, tmp_path):
    root, df = files
    for f in root.glob("*.parquet"):
        shutil.copy(f, tmp_path)
    df.head(5).rename(columns={"usd": "value_usd"}).to_parquet(tmp_path / "z-odd.parquet")
    with pytest.raises(ColumnError, match=r"no column 'usd'.*z-odd.parquet.*value_usd"):
        ti.scan_trade(str(tmp_path / "*.parquet"), **KW)
    with pytest.raises(ColumnError, match="no column 'flw'"):
        ti.scan_trade(str(root / "*.parquet"), **KW, filters={"flw": "X"})


def test_mixed_kinds_and_unsupported_type(files, tmp_path):
    root, _ = files
    with pytest.raises(InputError, match="CSV and Parquet files are mixed"):
        ti.scan_trade(root, **KW)
    (tmp_path / "a.xlsx").write_text("x")
    with pytest.raises(InputError, match="unsupported trade file type"):
        ti.scan_trade(tmp_path / "a.xlsx", **KW)


@pytest.mark.parametrize("engine", ["duckdb", "pandas"])
def test_non_numeric_and_negative_values_name_the_file(tmp_path, engine):
    good = pd.DataFrame({"city": ["A"], "dest": ["CHN"], "yr": [2000], "usd": ["1.5"]})
    good.to_csv(tmp_path / "a.csv", index=False)
    good.assign(usd="n/a").to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(InputError, match=r"not a number \(1 record.*column 'usd' in file .*b.csv"):
        ti.scan_trade(tmp_path, **KW, engine=engine, reporter_type="city")
    (tmp_path / "b.csv").unlink()
    good.assign(usd="-3").to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(InputError, match=r"negative trade values \(1 group.*file .*c.csv"):
        ti.scan_trade(tmp_path, **KW, engine=engine, reporter_type="city")


def test_missing_key_bad_year_unknown_country(tmp_path):
    base = pd.DataFrame({"city": ["A", "B"], "dest": ["CHN", "USA"], "yr": [2000, 2001],
                         "usd": [1.0, 2.0]})
    with pytest.raises(InputError, match="missing partner in 1 trade record"):
        ti.scan_trade(base.assign(dest=["CHN", None]), **KW, reporter_type="city")
    with pytest.raises(InputError, match="year must be a whole number"):
        ti.scan_trade(base.assign(yr=[2000.5, 2001]), **KW, reporter_type="city")
    with pytest.raises(InputError, match="unknown country"):
        ti.scan_trade(base.assign(dest=["CHN", "Atlantis"]), **KW, reporter_type="city")


def test_bad_options():
    df = _records(10)
    with pytest.raises(SpecificationError, match="engine: expected one of"):
        ti.scan_trade(df, **KW, engine="polars")
    with pytest.raises(SpecificationError, match="by= repeats a role"):
        ti.scan_trade(df, **KW, by="city")
    with pytest.raises(SpecificationError, match="a range is slice"):
        ti.scan_trade(df, **KW, filters={"yr": slice(2000, None)})
    with pytest.raises(SpecificationError, match="strings or numbers"):
        ti.scan_trade(df, **KW, filters={"yr": {"a": 1}})


@pytest.mark.parametrize("engine", ["duckdb", "pandas"])
def test_default_spill_folder_is_removed_and_a_given_one_kept(tmp_path, monkeypatch, engine):
    # every call used to leave a twinimpact-duckdb-* folder in the temporary directory
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    df = _records(50)
    got = ti.scan_trade(df, **KW, engine=engine, reporter_type="city")
    assert got["n_records"].sum() == 50
    bad = df.assign(usd=df["usd"].astype(object))
    bad.loc[3, "usd"] = "n/a"
    with pytest.raises(InputError, match="not a number"):
        ti.scan_trade(bad, **KW, engine=engine, reporter_type="city")
    assert list(scratch.iterdir()) == []
    spill = tmp_path / "spill"
    spill.mkdir()
    ti.scan_trade(df, **KW, engine=engine, reporter_type="city", temp_directory=spill)
    assert spill.is_dir()


@pytest.mark.slow
def test_duckdb_spills_under_a_small_memory_limit(tmp_path):
    rng = np.random.default_rng(1)
    n = 1_500_000
    df = pd.DataFrame({"city": rng.integers(0, 200_000, n).astype(str), "dest": "CHN",
                       "yr": 2000, "usd": 1.0})
    df.to_parquet(tmp_path / "big.parquet")
    got = ti.scan_trade(tmp_path / "big.parquet", **KW, reporter_type="city",
                        memory_limit="100MB", temp_directory=tmp_path / "spill", threads=1)
    assert got["n_records"].sum() == n and got["value"].sum() == n
    assert len(got) == df["city"].nunique()


# ---------------------------------------------------------------------------- Spark
@pytest.fixture(scope="module")
def spark():
    pyspark = pytest.importorskip("pyspark", reason="the [spark] extra is not installed")
    import shutil as _sh

    if _sh.which("java") is None:
        pytest.skip("no Java runtime (install openjdk-17-jre-headless)")
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").appName("twinimpact-tests")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "2").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    assert pyspark
    yield session
    session.stop()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
def test_spark_gives_the_same_frame_as_duckdb(files, spark):
    root, df = files
    kw = dict(**KW, by="hs4", filters={"flow": "X", "yr": slice(2001, 2003)},
              reporter_type="city")
    for source in (str(root / "*.parquet"), root / "csv"):
        a = ti.scan_trade(source, engine="duckdb", **kw)
        b = ti.scan_trade(source, engine="spark", spark=spark, **kw)
        pd.testing.assert_frame_equal(a, b, check_dtype=False, rtol=RTOL)
    # a Spark DataFrame as the source, and a bad value named with its file
    c = ti.scan_trade(spark.createDataFrame(df), engine="spark", spark=spark, **kw)
    pd.testing.assert_frame_equal(a, c, check_dtype=False, rtol=RTOL)
    bad = root / "bad"
    bad.mkdir(exist_ok=True)
    df.head(3).assign(usd="x").to_csv(bad / "oops.csv", index=False)
    with pytest.raises(InputError, match=r"not a number.*oops.csv"):
        ti.scan_trade(bad, engine="spark", spark=spark, **KW, reporter_type="city")
