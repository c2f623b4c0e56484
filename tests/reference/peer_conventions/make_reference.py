"""Regenerate the peer numbers behind tests/test_peer_conventions.py.

Two steps (the panel is written by the project's own generator, the peers run in a
throwaway venv -- never in the shared environment)::

    # 1. the panel: 80 units x 8 years, 3 cohorts + never treated, a covariate, a count
    #    outcome, 3 units observed once (singletons); shared python, repository root
    python tests/reference/peer_conventions/make_reference.py panel
    # 2. the peer numbers (pyfixest 0.60.0, diff-diff 3.13.0 in /tmp/venv-peers)
    /tmp/venv-peers/bin/python tests/reference/peer_conventions/make_reference.py peers

Each number is what the peer returns for the specification named next to it; the tests
pin twinimpact's number, the peer's number and the reason they differ (found by
benchmarks/crosscheck.py on larger panels).
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
PANEL = ROOT / "tests" / "data" / "peer_conventions" / "panel.csv"
OUT = HERE / "peers.json"


def make_panel() -> None:
    import numpy as np
    import pandas as pd
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import panels

    d = panels.staggered_panel(640, n_periods=8, n_cohorts=3, never_share=0.35, seed=21)
    rng = np.random.default_rng(21)
    x = rng.normal(size=d["unit"].nunique())
    d["x"] = np.round(x[d["unit"].to_numpy()] + 0.8 * (d["cohort"] > 0), 6)
    d["y"] = np.round(d["y"] + 0.7 * d["x"] + 0.4 * d["x"] * (d["year"] - 2001) / 7, 6)
    # three singleton units (one row each), never treated
    extra = d[d["unit"] < 3].groupby("unit").head(1).copy()
    extra["unit"] = extra["unit"] + 1000
    extra[["cohort", "treated"]] = 0
    extra["rel_time"] = -1
    out = pd.concat([d, extra], ignore_index=True)
    out.to_csv(PANEL, index=False, float_format="%.6f")
    print(f"wrote {PANEL} ({len(out)} rows)")


def peers() -> None:
    import warnings

    import diff_diff as dd
    import pandas as pd
    import pyfixest as pf
    warnings.simplefilter("ignore")
    d = pd.read_csv(PANEL)
    ref: dict = {"provenance": {
        "panel": "tests/data/peer_conventions/panel.csv",
        "script": "tests/reference/peer_conventions/make_reference.py peers",
        "versions": {"pyfixest": pf.__version__, "diff-diff": dd.__version__,
                     "pandas": pd.__version__}}}

    # 1. feols singletons: pyfixest default fixef_rm='singleton' vs 'none' (R fixest)
    for rm in ("singleton", "none"):
        f = pf.feols("y ~ treated | unit + year", data=d, vcov="hetero", fixef_rm=rm)
        ref[f"feols_hetero_{rm}"] = {"call": f"pf.feols('y ~ treated | unit + year', "
                                             f"vcov='hetero', fixef_rm='{rm}')",
                                     "estimate": float(f.coef()["treated"]),
                                     "std_error": float(f.se()["treated"]), "nobs": int(f._N)}

    # 2. did2s event study: pyfixest's first stage by alternating projections
    dm = d[d["unit"] < 1000]  # pyfixest did2s fails when its first stage drops singletons
    f = pf.did2s(dm.assign(treat=dm["treated"].astype(bool)), yname="y",
                 first_stage="~ 0 | unit + year", second_stage="~ i(rel_time, ref=-1.0)",
                 treatment="treat", cluster="unit")
    ref["did2s_event"] = {
        "call": "pf.did2s(panel without units >= 1000, yname='y', first_stage='~ 0 | unit "
                "+ year', second_stage='~ i(rel_time, ref=-1.0)', treatment='treated', "
                "cluster='unit')",
        "estimate": {str(int(float(k.split("::")[1]))): float(v)
                     for k, v in f.coef().items()}}

    # 3. Callaway-Sant'Anna DR with a covariate (diff-diff vs R DRDID)
    dc = d[d["unit"] < 1000]
    r = dd.CallawaySantAnna(control_group="never_treated", estimation_method="dr").fit(
        dc, outcome="y", unit="unit", time="year", first_treat="cohort", covariates=["x"])
    ref["cs_dr_x"] = {
        "call": "dd.CallawaySantAnna(control_group='never_treated', estimation_method='dr')"
                ".fit(panel without units >= 1000, outcome='y', unit='unit', time='year', "
                "first_treat='cohort', covariates=['x'])",
        "att_gt": {f"{int(g)},{int(t)}": float(v["effect"])
                   for (g, t), v in r.group_time_effects.items()}}

    # 4. ETWFE Poisson, never-treated controls
    r = dd.WooldridgeDiD(method="poisson", control_group="never_treated",
                         cluster="unit").fit(dc, outcome="y_count", unit="unit",
                                             time="year", cohort="cohort")
    r.aggregate("event")
    ref["etwfe_poisson_never"] = {
        "call": "dd.WooldridgeDiD(method='poisson', control_group='never_treated', "
                "cluster='unit').fit(panel without units >= 1000, outcome='y_count', ...)"
                ".aggregate('event')",
        "event": {str(int(e)): float(v["att"]) for e, v in r.event_study_effects.items()}}
    OUT.write_text(json.dumps(ref, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    {"panel": make_panel, "peers": peers}[sys.argv[1]]()
