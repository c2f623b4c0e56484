"""Peak memory from the panel on of one fit on ``strkey_unbal`` (shuf2): ``TAG=name python
benchmarks/prefit_peak.py SIZE ESTIMATOR`` prints the resident data and the peak resident
size (VmHWM) after resetting it (``/proc/self/clear_refs``, Linux) once the panel is built,
so that the generator's own peak is left out. Under ``flock /work/bench.lock`` from 1e6
rows."""

import gc
import json
import os
import sys

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import panels  # noqa: E402

import twinimpact as ti  # noqa: E402


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def main() -> None:
    size, est = float(sys.argv[1]), sys.argv[2]
    d = panels.make("strkey_unbal", size)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # the peak resident size starts again from the current one
    data_mb = _status_mb("VmRSS")
    kw = dict(outcome="y", unit="unit", time="year", cohort="cohort")
    if est == "imputation":
        kw["horizons"] = True
    getattr(ti, est)(d, **kw)
    peak = _status_mb("VmHWM")
    print(json.dumps({"tag": os.environ.get("TAG", ""), "est": est, "rows": len(d),
                      "rss_data_mb": round(data_mb), "peak_from_panel_mb": round(peak),
                      "footprint_mb": round(peak - data_mb)}))


if __name__ == "__main__":
    main()
