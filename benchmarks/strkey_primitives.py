"""CPU time of string-coding primitives on the ``strkey_unbal`` unit column (strid2, issue 13
item 3): ``python benchmarks/strkey_primitives.py SIZE [REPEATS]`` (min of REPEATS
process-time readings each); appends one JSON line to benchmarks/results_strid2_phases.jsonl.
Run from the repository root with PYTHONPATH=src; under ``flock /work/bench.lock`` from 1e6
rows."""

import json
import os
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import panels

from twinimpact.core import labels


def main() -> None:
    size = float(sys.argv[1])
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    s = panels.make("strkey_unbal", size)["unit"]
    ca = s.array._pa_array
    obj = s.to_numpy(dtype=object)
    ints = pd.factorize(s)[0].astype(np.int64)
    srt = pd.Series(np.sort(obj), dtype=s.dtype)
    tests = {
        "pd.factorize(arrow str)": lambda: pd.factorize(s),
        "pa.dictionary_encode": lambda: ca.dictionary_encode(),
        "pd.factorize(object)": lambda: pd.factorize(obj),
        "pd.factorize(int64 codes, same order)": lambda: pd.factorize(ints),
        "pd.factorize(arrow str, rows sorted)": lambda: pd.factorize(srt),
        "np.unique(object, return_inverse)": lambda: np.unique(obj, return_inverse=True),
        "np.unique(int64, return_inverse)": lambda: np.unique(ints, return_inverse=True),
        "ours: labels.string_codes": lambda: labels.string_codes(s.array),
        "ours: partitioned P=16": lambda: labels.partitioned_string_codes(ca, 16),
    }
    if size < 3e6:
        tests["ours: partitioned P=1"] = lambda: labels.partitioned_string_codes(ca, 1)
    out = {"size": size, "rows": len(s), "distinct": int(pd.factorize(s)[1].size),
           "load0": os.getloadavg()[0]}
    for k, f in tests.items():
        ts = []
        for _ in range(reps):
            c = time.process_time()
            f()
            ts.append(time.process_time() - c)
        out[k] = min(ts)
    out["load1"] = os.getloadavg()[0]
    out["script"] = "strkey_primitives"
    print(json.dumps(out))
    with open("benchmarks/results_strid2_phases.jsonl", "a") as fh:
        fh.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
