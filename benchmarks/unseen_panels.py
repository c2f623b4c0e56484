"""Issue 13 re-checked on panels no earlier run benchmarked (run U, ``verify`` helper).

A thin layer over :mod:`run_table` (same children, same figures: CPU time, peak RSS, warm-up
then median of ``--repeats``, each package in its own process, address-space cap): it adds
panel kinds of its own and then runs ``run_table.main()`` with them. Nothing of
``run_table.py`` or the recorded panel kinds changes; the children re-enter this script
(so the added kinds exist in the child too).

Added staggered-adoption kinds (``panels.staggered_panel`` keywords, see
:data:`UNSEEN_KINDS`): 5 and 30 periods, 30% of rows missing, long city-like string ids
(> 8 bytes, non-ASCII), mixed-length string ids (both sides of the 8-byte short-key path),
object-dtype and Categorical ids, sparse int64 ids over the whole int64 range, 5 / 20
treated units, 40 cohorts on 45 periods, float years, every-other-year periods, another
seed with holes + entry/exit + long string ids. Complete panels (``bal_*``,
:data:`COMPLETE_KINDS`: every unit in every period, where diff-diff takes its fast
balanced path): 5 / 30 periods, 20 cohorts on 24 periods, 10% / 60% never treated, long
string ids shuffled, 20 treated units, another seed on 12 periods. Also wild-bootstrap panels (12 / 200
clusters, long non-ASCII string cluster ids), gravity (80% zeros, 30% rows missing,
another seed with half the pairs entering late) and synthetic-DiD designs (2 treated units,
10% post periods, 5% treated with little noise).

Run (from the repository root, ``PYTHONPATH=src``; >= 1e6 rows under the lock)::

    python benchmarks/unseen_panels.py --list
    python benchmarks/unseen_panels.py --cases event_study cs --sizes 1e5 --threads 1
    flock /work/bench.lock python benchmarks/unseen_panels.py --cases imputation \\
        --panels strlong coh40 --sizes 1e6 --threads 1
    python benchmarks/unseen_panels.py --from-jsonl benchmarks/results_unseen.jsonl
    python benchmarks/unseen_panels.py --summary benchmarks/results_unseen.jsonl  # RESULTS
    python benchmarks/unseen_panels.py --check-complete 1e4 1e5 1e6  # the bal_* kinds

Every option is ``run_table.py``'s; the defaults of ``--jsonl`` / ``--out`` are
``benchmarks/results_unseen.jsonl`` / ``results_unseen.md`` and the default panels of each
case are the added kinds.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import panels  # noqa: E402
import run_table  # noqa: E402

#: added staggered-adoption kinds: kind -> panels.staggered_panel keywords
UNSEEN_KINDS: dict[str, dict] = {
    "t5": {"n_periods": 5, "n_cohorts": 3, "miss_random": 0.05},
    "t30": {"n_periods": 30, "n_cohorts": 10, "miss_random": 0.05},
    "miss30": {"miss_random": 0.3},
    "strlong": {"miss_random": 0.05, "key": "str_long", "shuffle": True},
    "strmixed": {"miss_random": 0.05, "key": "str_mixed", "shuffle": True},
    "objkey": {"miss_random": 0.05, "key": "object", "shuffle": True},
    "catkey": {"miss_random": 0.05, "key": "cat", "shuffle": True},
    "sparsekey": {"miss_random": 0.05, "key": "sparse", "shuffle": True},
    "few5": {"treated_units": 5, "miss_random": 0.05},
    "few20": {"treated_units": 20, "miss_random": 0.05},
    "coh40": {"n_periods": 45, "n_cohorts": 40, "miss_random": 0.05},
    "tfloat": {"time": "float", "miss_random": 0.05},
    "step2": {"time": "step2", "miss_random": 0.05},
    "mixall": {"miss_random": 0.05, "miss_block": 0.2, "entry_exit": 0.3, "key": "str_long",
               "shuffle": True, "seed": 7},
    # complete panels (no row missing: every unit in every period; run CU, ``csunseen``
    # helper): the kinds above all miss 5-30% of their rows, where diff-diff's
    # Callaway-Sant'Anna takes its slow unbalanced path; on a complete panel it takes its
    # fast one (the multiplier bootstrap was 1.5x there, RESULTS "csopts")
    "bal_t5": {"n_periods": 5, "n_cohorts": 3},
    "bal_t30": {"n_periods": 30, "n_cohorts": 10},
    "bal_coh20": {"n_periods": 24, "n_cohorts": 20},
    "bal_never10": {"never_share": 0.1},
    "bal_never60": {"never_share": 0.6},
    "bal_strlong": {"key": "str_long", "shuffle": True},
    "bal_few20": {"treated_units": 20},
    "bal_seed3": {"n_periods": 12, "n_cohorts": 6, "seed": 3},
}
#: the complete kinds among :data:`UNSEEN_KINDS` (no missing row: ``python
#: benchmarks/unseen_panels.py --check-complete`` checks rows = units x periods, one row per
#: (unit, period), at 1e4-1e6 rows)
COMPLETE_KINDS = tuple(k for k in UNSEEN_KINDS if k.startswith("bal_"))
#: added gravity kinds (run_table.GRAVITY_KINDS entries: panels.gravity_panel keywords)
UNSEEN_GRAVITY: dict[str, dict] = {
    "zeros80": {"zeros": 0.8},
    "missing30": {"miss_random": 0.3},
    "late50_seed5": {"late_pairs": 0.5, "seed": 5},
}
#: added synthetic-DiD designs (panels.SDID_KINDS entries: panels.sdid_panel keywords)
UNSEEN_SDID: dict[str, dict] = {
    "tr2": {"treated": 2},
    "post10": {"treated": 0.1, "post_share": 0.1},
    "tr5pct_seed9": {"treated": 0.05, "noise": 0.3, "seed": 9},
}
#: added wild-bootstrap panels: kind -> (number of clusters, cluster id kind)
UNSEEN_WILD: dict[str, tuple[int, str]] = {
    "g12": (12, "int"),
    "g200": (200, "int"),
    "g50_strlong": (50, "str_long"),
}

_STAGGERED = ("event_study", "imputation", "did2s", "cs", "sun_abraham")
_run_table_panel = run_table._panel
_run_table_fit_fn = run_table._fit_fn


def _fit_fn(case: str, pkg: str, d):
    """run_table's fits; "cs_narm": Callaway-Sant'Anna with ``na_rm=True`` in our
    aggregations (R ``aggte(na.rm = TRUE)``): on few-treated panels some ATT(g,t) have no
    treated row in t or in the base period, and our aggregation refuses them by default as
    R does, where diff-diff drops them silently (its fit is run_table's "cs")."""
    if case == "cs_narm" and pkg == "twinimpact":
        import twinimpact as ti
        kw = dict(outcome="y", unit="unit", time="year", cohort="cohort")
        unb = run_table._unbalanced(d)

        def f():
            r = ti.callaway_santanna(d, **kw, allow_unbalanced_panel=unb)
            r.aggregate("dynamic", na_rm=True)
            return r.aggregate("simple", na_rm=True).params.to_numpy()
        return f
    return _run_table_fit_fn("cs" if case == "cs_narm" else case, pkg, d)


def _panel(case: str, kind: str, size: float):
    if case == "cs_narm":
        case = "cs"
    if case in ("wild", "wild_p") and kind in UNSEEN_WILD:
        import numpy as np
        import pandas as pd
        n_g, gkey = UNSEEN_WILD[kind]
        rng = np.random.default_rng(4)
        n = int(size)
        share = 1.0 / np.sqrt(np.arange(1, n_g + 1))  # unequal cluster sizes
        g = rng.choice(n_g, size=n, p=share / share.sum())
        x = rng.normal(size=n) + 0.3 * rng.normal(size=n_g)[g]
        y = 0.05 * x + rng.normal(size=n_g)[g] + rng.normal(size=n)
        gcol = panels.unit_ids(gkey, n_g, g)
        return pd.DataFrame({"y": y, "x": x, "g": gcol})
    return _run_table_panel(case, kind, size)


def install() -> None:
    """Add the kinds (in this process) and make run_table's children re-enter this file."""
    panels.PANEL_KINDS.update(UNSEEN_KINDS)
    panels.SDID_KINDS.update(UNSEEN_SDID)
    run_table.GRAVITY_KINDS.update(UNSEEN_GRAVITY)
    run_table._panel = _panel
    run_table._fit_fn = _fit_fn
    run_table.__file__ = str(Path(__file__).resolve())
    kinds = list(UNSEEN_KINDS)
    for case in _STAGGERED:
        peers, sizes, _ = run_table.CASES[case]
        run_table.CASES[case] = (peers, sizes, kinds)
    for case in ("honest_rm", "honest_sd", "honest_rm_like"):
        peers, sizes, _ = run_table.CASES[case]
        run_table.CASES[case] = (peers, sizes, ["t30", "miss30", "strlong", "few20"])
    run_table.CASES["cs_narm"] = (["diff-diff"], [1e5, 1e6], ["few5", "few20"])
    run_table.CASES["wild"] = (["wildboottest"], [1e5, 1e6], list(UNSEEN_WILD))
    run_table.CASES["wild_p"] = (["wildboottest"], [1e5, 1e6], list(UNSEEN_WILD))
    run_table.CASES["ppml"] = (["pyfixest"], [1e6], list(UNSEEN_GRAVITY))
    run_table.CASES["sdid"] = (["diff-diff"], [100_040, 1_000_060], list(UNSEEN_SDID))


def summary(paths: list[str]) -> str:
    """Markdown: one line per (case, size, threads, peer) over the panel kinds of the JSON
    lines: the kinds, twinimpact's and the peer's CPU-s and peak-MB ranges, the smallest
    CPU and memory ratios (and where), failures, the largest relative difference of the
    compared values, load and commit. The newest line of each (case, package, panel,
    size, threads) counts."""
    import json

    import numpy as np
    rows = [json.loads(line) for f in paths for line in open(f) if line.strip()]
    last: dict = {}
    for r in rows:
        last[(r["case"], r["pkg"], r["panel"], r["size"], r["threads"])] = r
    groups: dict = {}
    for (case, pkg, kind, size, th), r in last.items():
        if pkg == "twinimpact":
            continue
        o = last.get((case, "twinimpact", kind, size, th))
        if o is not None:
            groups.setdefault((case, size, th, pkg), []).append((kind, o, r))
    out = ["| estimator (case) | rows | threads | panel kinds | twinimpact CPU s, peak MB "
           "| peer: CPU s, peak MB | CPU ratio (peer / ours): min (kind) - max "
           "| memory ratio: min (kind) - max | failures | max rel. diff of compared values "
           "| load | commit, run |", "|" + "---|" * 12]
    for (case, size, th, pkg), items in groups.items():
        ok = [(k, o, r) for k, o, r in items if not o.get("error") and not r.get("error")]
        fails = [f"{k}: {'ours' if o.get('error') else pkg} " + str(o.get("error") or r.get(
            "error"))[:90] for k, o, r in items if o.get("error") or r.get("error")]
        kinds = " / ".join(k for k, _, _ in items)
        if ok:
            cr = [(r["cpu_s"] / o["cpu_s"], k) for k, o, r in ok]
            mr = [(r["peak_mb"] / o["peak_mb"], k) for k, o, r in ok]
            oc = [o["cpu_s"] for _, o, _ in ok]
            om = [o["peak_mb"] for _, o, _ in ok]
            pc = [r["cpu_s"] for _, _, r in ok]
            pm = [r["peak_mb"] for _, _, r in ok]
            diffs = []
            for _, o, r in ok:
                vo, vp = o.get("values"), r.get("values")
                if isinstance(o.get("all_values"), list):  # HonestDiD like for like
                    vo, vp = o["all_values"], r.get("all_values")
                    drawn = o.get("values_draws")
                    if isinstance(drawn, dict) and r["pkg"] in drawn:
                        vo = drawn[r["pkg"]]  # ours under the port's own draws
                if isinstance(vo, list) and isinstance(vp, list) and len(vo) == len(vp):
                    a, b = np.asarray(vo, float), np.asarray(vp, float)
                    diffs.append(float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))))
            cmin, mmin = min(cr), min(mr)
            cells = (f"{min(oc):.3g}-{max(oc):.3g}, {min(om):,.0f}-{max(om):,.0f}",
                     f"{min(pc):.3g}-{max(pc):.3g}, {min(pm):,.0f}-{max(pm):,.0f}",
                     f"{'**' if cmin[0] < 2 else ''}{cmin[0]:.2f}{'**' if cmin[0] < 2 else ''}"
                     f" ({cmin[1]}) - {max(cr)[0]:.1f}",
                     f"{'**' if mmin[0] < 1 else ''}{mmin[0]:.2f}{'**' if mmin[0] < 1 else ''}"
                     f" ({mmin[1]}) - {max(mr)[0]:.2f}",
                     f"{max(diffs):.1e} ({len(diffs)} kinds)" if diffs else "not compared")
        else:
            cells = ("-", "-", "-", "-", "-")
        loads = [x for _, o, r in items for x in (o["load"], r["load"])]
        lo = min(float(x.split("-")[0]) for x in loads)
        hi = max(float(x.split("-")[-1]) for x in loads)
        commits = sorted({str(o.get("commit")) for _, o, _ in items})
        runs = sorted({str(o.get("run")) for _, o, _ in items})
        size_s = run_table._fmt_size(case, size)
        out.append(f"| {case} | {size_s} | {th} | {kinds} | {cells[0]} | {pkg} {cells[1]} "
                   f"| {cells[2]} | {cells[3]} | {'; '.join(fails) or '-'} | {cells[4]} "
                   f"| {lo:.1f}-{hi:.1f} | {', '.join(commits)}, {', '.join(runs)} |")
    return "\n".join(out)


def check_complete(sizes=(1e4, 1e5, 1e6)) -> str:
    """One line per complete kind and size: rows, units, periods, cohorts (treated units),
    never-treated share, and whether every (unit, period) occurs exactly once; raises if
    one does not."""
    lines = []
    for kind in COMPLETE_KINDS:
        for size in sizes:
            d = panels.make(kind, size)
            n_u, n_t = d["unit"].nunique(), d["year"].nunique()
            dup = int(d.duplicated(["unit", "year"]).sum())
            g = d.drop_duplicates("unit")["cohort"]
            ok = len(d) == n_u * n_t and dup == 0 and not run_table._unbalanced(d)
            lines.append(f"{kind:12s} {size:8.0e} rows {len(d):>9,} units {n_u:>7,} periods "
                         f"{n_t:>2} cohorts {g[g > 0].nunique():>2} treated units "
                         f"{int((g > 0).sum()):>7,} never share {float((g == 0).mean()):.3f} "
                         f"{'complete' if ok else 'NOT COMPLETE'}")
            if not ok:
                raise SystemExit("\n".join(lines))
    return "\n".join(lines)


def main() -> None:
    install()
    argv = sys.argv[1:]
    if argv[:1] == ["--check-complete"]:
        print(check_complete(tuple(float(a) for a in argv[1:]) or (1e4, 1e5, 1e6)))
        return
    if argv[:1] == ["--summary"]:
        print(summary(argv[1:] or [str(HERE / "results_unseen.jsonl")]))
        return
    if "--child" not in argv:
        if "--jsonl" not in argv:
            argv += ["--jsonl", str(HERE / "results_unseen.jsonl")]
        if "--out" not in argv:
            argv += ["--out", str(HERE / "results_unseen.md")]
        if "--cases" not in argv and "--from-jsonl" not in argv and "--list" not in argv:
            argv += ["--cases", *_STAGGERED]
    sys.argv = [sys.argv[0], *argv]
    run_table.main()


if __name__ == "__main__":
    main()
