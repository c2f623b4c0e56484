"""Benchmark: ti.scan_trade on synthetic customs records in Parquet.

Records look like national customs data at city x partner x HS6 x month, both flows:
``city_id`` (int32), ``partner`` (ISO3 text), ``year`` (int16), ``month`` (int8), ``hs6``
(text), ``flow`` ("X"/"M"), ``value`` (float64). The task: exports (flow = X) summed to
city x partner x year.

Three ways, each in its own process so that peak memory (max RSS) is its own:

* ``scan_trade``  -- ``ti.scan_trade(glob, ..., filters={"flow": "X"})`` (DuckDB engine,
  memory_limit as given, its checks and name normalisation included);
* ``duckdb_sql``  -- DuckDB's own SQL on the same files with the same settings:
  ``SELECT city_id, partner, year, SUM(value), COUNT(*) ... WHERE flow = 'X' GROUP BY``;
* ``pandas``      -- ``pd.read_parquet`` of the needed columns, then ``groupby().sum()``
  (pandas must hold the records; run only at a size it can hold).

Usage::

    python benchmarks/scan_trade.py generate --rows 100000000 --out /tmp/customs
    python benchmarks/scan_trade.py run --data /tmp/customs --method scan_trade
    python benchmarks/scan_trade.py all --rows 100000000 --pandas-rows 10000000

``all`` generates (if missing), runs every method under ``prlimit --as`` and prints a
Markdown table (wall time, peak RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHUNK = 5_000_000
N_CITIES = 500
N_PRODUCTS = 5_000
YEARS = np.arange(2014, 2024, dtype=np.int16)


def generate(rows: int, out: Path, seed: int = 12345) -> None:
    """Write ``rows`` records in files of at most CHUNK rows (pyarrow, in chunks)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pycountry

    out.mkdir(parents=True, exist_ok=True)
    partners = np.array(sorted(c.alpha_3 for c in pycountry.countries))[:150]
    products = np.array([f"{h:06d}" for h in
                         np.random.default_rng(0).choice(999_999, N_PRODUCTS, replace=False)])
    rng = np.random.default_rng(seed)
    done, i = 0, 0
    while done < rows:
        n = min(CHUNK, rows - done)
        table = pa.table({
            "city_id": pa.array(rng.integers(1, N_CITIES + 1, n, dtype=np.int32)),
            "partner": pa.DictionaryArray.from_arrays(
                pa.array(rng.integers(0, len(partners), n, dtype=np.int32)),
                pa.array(partners)),
            "year": pa.array(rng.choice(YEARS, n)),
            "month": pa.array(rng.integers(1, 13, n, dtype=np.int8)),
            "hs6": pa.DictionaryArray.from_arrays(
                pa.array(rng.integers(0, N_PRODUCTS, n, dtype=np.int32)),
                pa.array(products)),
            "flow": pa.DictionaryArray.from_arrays(
                pa.array(rng.integers(0, 2, n, dtype=np.int8)), pa.array(["X", "M"])),
            "value": pa.array(np.round(rng.lognormal(8.0, 2.0, n), 2)),
        })
        pq.write_table(table, out / f"customs-{i:04d}.parquet", row_group_size=1_000_000)
        done += n
        i += 1
    (out / "META.json").write_text(json.dumps({"rows": rows, "files": i, "seed": seed}))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run(method: str, data: Path, memory_limit: str, threads: int, rows: int | None) -> dict:
    files = sorted(data.glob("customs-*.parquet"))
    if rows is not None:  # the first files only (pandas at a size it can hold)
        meta = json.loads((data / "META.json").read_text())
        per = min(CHUNK, meta["rows"])
        files = files[: max(1, rows // per)]
    # imports outside the timed region (twinimpact imports its estimators too)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import duckdb
    import pandas as pd

    import twinimpact as ti

    t0 = time.perf_counter()
    if method == "scan_trade":
        out = ti.scan_trade([str(f) for f in files], reporter="city_id", partner="partner",
                            year="year", value="value", filters={"flow": "X"},
                            reporter_type="city", memory_limit=memory_limit,
                            threads=threads)
        groups, total, n = len(out), float(out["value"].sum()), int(out["n_records"].sum())
    elif method == "duckdb_sql":
        con = duckdb.connect()
        con.execute(f"SET memory_limit = '{memory_limit}'")
        con.execute(f"SET threads = {threads}")
        con.execute("SET preserve_insertion_order = false")
        lst = "[" + ", ".join(f"'{f}'" for f in files) + "]"
        out = con.execute(
            f"SELECT city_id, partner, year, SUM(value) AS value, COUNT(*) AS n_records "
            f"FROM read_parquet({lst}) WHERE flow = 'X' GROUP BY city_id, partner, year"
        ).df()
        groups, total, n = len(out), float(out["value"].sum()), int(out["n_records"].sum())
    elif method == "pandas":
        df = pd.concat([pd.read_parquet(f, columns=["city_id", "partner", "year", "flow",
                                                     "value"]) for f in files],
                       ignore_index=True)
        df = df[df["flow"] == "X"]
        out = df.groupby(["city_id", "partner", "year"], observed=True)["value"].agg(
            ["sum", "size"]).reset_index()
        groups, total, n = len(out), float(out["sum"].sum()), int(out["size"].sum())
    else:
        raise SystemExit(f"unknown method {method}")
    seconds = time.perf_counter() - t0
    del ti
    return {"method": method, "files": len(files), "records_read": n, "groups": groups,
            "value_sum": total, "seconds": round(seconds, 2), "peak_rss_mb": round(_peak_mb())}


def _child(method: str, data: Path, args: argparse.Namespace, rows: int | None,
           cap_bytes: int) -> dict:
    cmd = [sys.executable, __file__, "run", "--data", str(data), "--method", method,
           "--memory-limit", args.memory_limit, "--threads", str(args.threads)]
    if rows is not None:
        cmd += ["--rows", str(rows)]
    if shutil.which("prlimit"):
        cmd = ["prlimit", f"--as={cap_bytes}", *cmd]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"method": method, "error": res.stderr.strip().splitlines()[-1:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["generate", "run", "all"])
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--pandas-rows", type=int, default=10_000_000)
    ap.add_argument("--out", "--data", dest="data", default="/tmp/twinimpact-customs")
    ap.add_argument("--method", default="scan_trade")
    ap.add_argument("--memory-limit", default="600MB")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cap-gb", type=float, default=10.0, help="prlimit --as per process")
    args = ap.parse_args()
    data = Path(args.data)
    if args.what == "generate":
        generate(args.rows or 100_000_000, data)
        return
    if args.what == "run":
        print(json.dumps(run(args.method, data, args.memory_limit, args.threads, args.rows)))
        return
    rows = args.rows or 100_000_000
    if not (data / "META.json").exists() or json.loads(
            (data / "META.json").read_text())["rows"] != rows:
        shutil.rmtree(data, ignore_errors=True)
        t = time.perf_counter()
        generate(rows, data)
        print(f"generated {rows:,} records in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    cap = int(args.cap_gb * 1e9)
    results = [_child("duckdb_sql", data, args, None, cap),
               _child("scan_trade", data, args, None, cap),
               _child("duckdb_sql", data, args, args.pandas_rows, cap),
               _child("scan_trade", data, args, args.pandas_rows, cap),
               _child("pandas", data, args, args.pandas_rows, cap)]
    print("| method | files | records read (flow X) | groups | wall s | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        if "error" in r:
            print(f"| {r['method']} | failed: {r['error']} | | | | |")
            continue
        print(f"| {r['method']} | {r['files']} | {r['records_read']:,} | {r['groups']:,} | "
              f"{r['seconds']} | {r['peak_rss_mb']} |")
    print(json.dumps(results), file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    main()
