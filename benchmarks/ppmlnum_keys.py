"""CPU of coding PPML's fixed-effect keys alone (``ppml.fe_codes``: exporter-year,
importer-year, pair, the interaction ``("exporter", "year")``, exporter, year), median of 3
in one process a tree, one JSON line per panel and tree (section "PPML's numeric keys"):

    for p in /tmp/mygrav/g710.parquet /tmp/ppmlnum/g710i.parquet; do for t in <base>/src src; do
        flock /work/bench.lock env PYTHONPATH=$t python benchmarks/ppmlnum_keys.py $p PN2 >> out.jsonl
    done; done
"""

from __future__ import annotations

import json
import os
import sys
import time

import pandas as pd

import twinimpact
from twinimpact.estimators.ppml import fe_codes

SPECS = [("exp_year",), ("imp_year",), ("pair",), ("exporter", "year"), ("exporter",),
         ("year",)]


def main(path: str, run_id: str) -> None:
    d = pd.read_parquet(path)
    fe_codes(d, "exp_year")  # first touch of the process' memory, not timed
    out = {}
    for spec in SPECS:
        f = spec[0] if len(spec) == 1 else spec
        ts = []
        for _ in range(3):
            t0 = time.process_time()
            c = fe_codes(d, f)
            ts.append(time.process_time() - t0)
        out["^".join(spec)] = {"cpu_s": round(sorted(ts)[1], 4), "levels": int(c.max()) + 1,
                               "first_codes_sum": int(c[:1000].sum())}
    print(json.dumps({"run": run_id, "src": twinimpact.__file__,
                      "panel": os.path.basename(path), "rows": len(d),
                      "load": round(os.getloadavg()[0], 2),
                      "utc": time.strftime("%H:%M:%S", time.gmtime()), "keys": out}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
