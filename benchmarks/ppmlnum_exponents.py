"""Cost exponents in rows of PPML (``benchmarks/ppmlpages.py`` raw lines), per tree and
panel kind, with their run-to-run spread (section "PPML's numeric keys" of RESULTS.md).

For each (tree, panel) cell: the median CPU (user + system) and user time over every fit
of its children, peak RSS (median of the children), load. Exponent between two sizes =
log(CPU ratio) / log(rows ratio) of those medians; its spread = the smallest and largest
of the same exponent computed from single children (each child's median fit at the one
size against each child's at the other: 3 x 3 pairs with three children a cell).

    python benchmarks/ppmlnum_exponents.py benchmarks/results_ppmlnum.jsonl PN1
"""

from __future__ import annotations

import itertools
import json
import math
import re
import statistics
import sys

KINDS = {"": "strings, shuffled", "s": "strings, sorted by pair", "i": "integers, shuffled",
         "is": "integers, sorted by pair"}


def main(path: str, run_id: str) -> None:
    recs = [r for r in map(json.loads, open(path)) if r["run"] == run_id]
    cells: dict = {}
    for r in recs:
        cells.setdefault((r["tree"], r["panel"]), []).append(r)
    print("| panel | kind | rows used | tree | CPU s | user s | sys s | peak MB | children"
          " x fits | load | coef | se |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    groups: dict = {}
    for (tree, panel), rs in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        fits = [f for r in rs for f in r["fits"]]
        cpu = statistics.median(f["user"] + f["sys"] for f in fits)
        user = statistics.median(f["user"] for f in fits)
        sys_ = statistics.median(f["sys"] for f in fits)
        kind = KINDS[re.sub(r"^g\d+", "", panel.removesuffix(".parquet"))]
        child_cpu = [statistics.median(f["user"] + f["sys"] for f in r["fits"]) for r in rs]
        child_user = [statistics.median(f["user"] for f in r["fits"]) for r in rs]
        groups.setdefault((tree, kind), []).append(
            (rs[0]["rows"], cpu, user, child_cpu, child_user))
        coefs = {(r["coef"], r["se"]) for r in rs}
        print(f"| {panel} | {kind} | {rs[0]['rows']:,} | {tree} | {cpu:.3f} | {user:.3f} | "
              f"{sys_:.3f} | {statistics.median(r['peak_mb'] for r in rs):.0f} | "
              f"{len(rs)} x {len(rs[0]['fits'])} | "
              f"{min(r['load_before'] for r in rs)}-{max(r['load_after'] for r in rs)} | "
              f"{rs[0]['coef']!r} | {rs[0]['se']!r}{'' if len(coefs) == 1 else ' (differ!)'} |")
    # new / base per panel
    print("\n| panel | new / base CPU | new / base user |")
    print("|---|---|---|")
    med = {}
    for (tree, kind), vs in groups.items():
        for v in vs:
            med[(tree, kind, v[0])] = v
    for (tree, kind, rows), v in sorted(med.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        if tree != "new" or ("base", kind, rows) not in med:
            continue
        b = med[("base", kind, rows)]
        print(f"| {kind} {rows:,} | {v[1] / b[1]:.3f} | {v[2] / b[2]:.3f} |")
    print("\n| tree | kind | rows from -> to | CPU exponent [spread] | user exponent [spread] |")
    print("|---|---|---|---|---|")
    for (tree, kind), vs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        vs.sort()
        pairs = list(itertools.pairwise(vs))
        if len(vs) > 2:
            pairs.append((vs[0], vs[-1]))
        for a, b in pairs:
            lr = math.log(b[0] / a[0])
            e_cpu = math.log(b[1] / a[1]) / lr
            e_user = math.log(b[2] / a[2]) / lr
            sc = [math.log(y / x) / lr for x in a[3] for y in b[3]]
            su = [math.log(y / x) / lr for x in a[4] for y in b[4]]
            print(f"| {tree} | {kind} | {a[0]:,} -> {b[0]:,} | {e_cpu:.3f} "
                  f"[{min(sc):.3f}-{max(sc):.3f}] | {e_user:.3f} [{min(su):.3f}-{max(su):.3f}] |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
