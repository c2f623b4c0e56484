"""Regenerate moderndid_mpdta_unbalanced.json: Callaway-Sant'Anna on an UNBALANCED panel
(R did ``allow_unbalanced_panel = TRUE``), peer numbers from moderndid (R is unavailable).

Run in a throwaway venv::

    python -m venv /tmp/venv-cs2 && /tmp/venv-cs2/bin/pip install moderndid==0.2.0 pandas
    /tmp/venv-cs2/bin/python make_moderndid_unbalanced_reference.py

Data: tests/data/mpdta/mpdta.csv minus 250 rows (10%) drawn by
``numpy.random.default_rng(20240607).choice(2500, 250, replace=False)`` on the file's row
order; the dropped (countyreal, year) pairs are written into the JSON, so the test rebuilds
the panel from the CSV alone. One county is left with a single observation.

How the peer is called, and why
-------------------------------
* moderndid 0.2.0 ``att_gt(..., allow_unbalanced_panel=True)`` with ``panel=True`` crashes
  on unbalanced data (its config keeps ``panel=True`` while no outcome tensor is built).
  R did's pre-processing sets ``panel <- FALSE`` (keeping ``.rowid = idname``) when the
  panel is unbalanced; ``att_gt(panel=False, allow_unbalanced_panel=True, idname=...)`` is
  that same path in moderndid: every (g, t) cell is estimated by DRDID's repeated
  cross-section estimator (``drdid_rc`` / ``reg_did_rc`` / ``std_ipw_did_rc``) on all rows
  of the cohort and its comparison group observed in the two periods, the influence
  function is scaled by ``n_units / n_rows_in_cell`` and summed within unit (R ``rowsum``
  by ``.rowid``), and ``se = sqrt(sum psi^2) / n_units``.
* The ``balanced_*`` cases run the same call on the full (balanced) mpdta: the RC-path
  numbers a balanced panel gets under ``allow_unbalanced_panel=True`` in twinimpact (and
  in R did < 2.3.0; R did >= 2.3.0 instead switches such a panel back to the panel path).
* Aggregation: moderndid's influence-function rows are the units in sorted-id order
  (``np.unique`` of the ids), but its unit-level cohort vector ``G`` is in first-appearance
  order of its internally sorted data, so the estimated-weights term (R ``wif``) of
  ``aggte`` would pair units with the wrong cohorts. ``G`` is re-aligned to the sorted ids
  before calling ``moderndid.aggte`` (point estimates do not depend on it).
"""

import json
import warnings
from pathlib import Path

import moderndid as md
import numpy as np
import pandas as pd

warnings.simplefilter("ignore")
HERE = Path(__file__).parent
SEED = 20240607
full = pd.read_csv(HERE.parents[1] / "data" / "mpdta" / "mpdta.csv")
rng = np.random.default_rng(SEED)
drop = np.sort(rng.choice(len(full), size=len(full) // 10, replace=False))
dropped_pairs = full.loc[drop, ["countyreal", "year"]].astype(int).values.tolist()
unbal = full.drop(index=drop).reset_index(drop=True)

CASES = {
    "nocov_dr": dict(est_method="dr"),
    "nocov_reg": dict(est_method="reg"),
    "nocov_ipw": dict(est_method="ipw"),
    "lpop_dr": dict(xformla="~lpop", est_method="dr"),
    "lpop_reg": dict(xformla="~lpop", est_method="reg"),
    "lpop_ipw": dict(xformla="~lpop", est_method="ipw"),
    "notyet": dict(control_group="notyettreated"),
    "lpop_dr_notyet": dict(xformla="~lpop", control_group="notyettreated"),
    "universal": dict(base_period="universal"),
}
BALANCED = {"balanced_nocov_dr": dict(est_method="dr"),
            "balanced_lpop_dr": dict(xformla="~lpop", est_method="dr")}


def run(data: pd.DataFrame, kw: dict) -> dict:
    res = md.att_gt(data=data, yname="lemp", tname="year", idname="countyreal",
                    gname="first.treat", boot=False, panel=False,
                    allow_unbalanced_panel=True, **kw)
    ids = np.unique(data["countyreal"].to_numpy())
    g_by_id = data.groupby("countyreal")["first.treat"].first()
    g_sorted = g_by_id.reindex(ids).to_numpy(dtype=float)
    g_sorted[g_sorted == 0] = np.inf  # moderndid's never-treated code
    res = res._replace(G=g_sorted)
    case = {"options": kw, "n_units": int(res.n_units),
            "att_gt": {"group": np.asarray(res.groups, float).tolist(),
                       "time": np.asarray(res.times, float).tolist(),
                       "estimate": np.asarray(res.att_gt, float).tolist(),
                       "std_error": np.asarray(res.se_gt, float).tolist()},
            "aggregate": {}}
    for t in ["simple", "dynamic", "group", "calendar"]:
        a = md.aggte(res, type=t, boot=False)
        entry = {"estimate": float(a.overall_att), "std_error": float(a.overall_se)}
        if t != "simple":
            entry["keys"] = np.asarray(a.event_times, float).tolist()
            entry["estimates"] = np.asarray(a.att_by_event, float).tolist()
            entry["std_errors"] = np.asarray(a.se_by_event, float).tolist()
        case["aggregate"][t] = entry
    return case


out = {
    "provenance": {
        "package": "moderndid",
        "version": getattr(md, "__version__", "0.2.0"),
        "call": "moderndid.att_gt(data=<panel>, yname='lemp', tname='year', "
                "idname='countyreal', gname='first.treat', boot=False, panel=False, "
                "allow_unbalanced_panel=True, **case); res = res._replace(G=<cohort by "
                "sorted countyreal, 0 -> inf>); moderndid.aggte(res, type=..., boot=False)",
        "source": "tests/reference/callaway_santanna/make_moderndid_unbalanced_reference.py "
                  "(see its docstring for why panel=False and the G re-alignment); moderndid "
                  "ports R did / DRDID; peer numbers, R numbers win where given",
        "data": f"tests/data/mpdta/mpdta.csv without the rows in 'dropped_pairs' "
                f"(numpy default_rng({SEED}).choice(2500, 250, replace=False)); the "
                "'balanced_*' cases use the full file",
    },
    "dropped_pairs": dropped_pairs,
    "cases": {},
}
for name, kw in CASES.items():
    out["cases"][name] = run(unbal, kw)
for name, kw in BALANCED.items():
    out["cases"][name] = run(full, kw)
(HERE / "moderndid_mpdta_unbalanced.json").write_text(json.dumps(out, indent=1))
