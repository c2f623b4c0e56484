"""Regenerate moderndid_mpdta.json (peer cross-check; R itself is unavailable here).

Run in a throwaway venv:  python -m venv /tmp/venv-cs && /tmp/venv-cs/bin/pip install
moderndid==0.2.0 pandas  &&  /tmp/venv-cs/bin/python make_moderndid_reference.py
moderndid ports R did / DRDID (att_gt, aggte); analytic SEs (boot=False).
"""

import json
import warnings
from pathlib import Path

import moderndid as md
import numpy as np
import pandas as pd

warnings.simplefilter("ignore")
HERE = Path(__file__).parent
df = pd.read_csv(HERE.parents[1] / "data" / "mpdta" / "mpdta.csv")
CASES = {
    "lpop_dr": dict(xformla="~lpop", est_method="dr"),
    "lpop_ipw": dict(xformla="~lpop", est_method="ipw"),
    "lpop_reg": dict(xformla="~lpop", est_method="reg"),
    "notyet": dict(control_group="notyettreated"),
    "lpop_dr_notyet": dict(xformla="~lpop", control_group="notyettreated"),
    "universal": dict(base_period="universal"),
    "anticipation1": dict(anticipation=1),
    "lpop_dr_universal_notyet": dict(xformla="~lpop", base_period="universal",
                                     control_group="notyettreated"),
}
DYNAMIC = {"window_m2_2": dict(min_e=-2, max_e=2), "balance_e1": dict(balance_e=1),
           "max_e1": dict(max_e=1)}
out = {"provenance": {
    "package": "moderndid", "version": md.__version__ if hasattr(md, "__version__") else "0.2.0",
    "call": "moderndid.att_gt(data=mpdta, yname='lemp', tname='year', idname='countyreal', "
            "gname='first.treat', boot=False, **case); moderndid.aggte(res, type=..., "
            "boot=False, **dynamic_options)",
    "source": "tests/reference/callaway_santanna/make_moderndid_reference.py; moderndid is a "
              "Python port of R did 2.x / DRDID; peer numbers, R numbers win where given"},
    "cases": {}}
for name, kw in CASES.items():
    res = md.att_gt(data=df, yname="lemp", tname="year", idname="countyreal",
                    gname="first.treat", boot=False, **kw)
    case = {"options": kw,
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
    if name in ("notyet", "lpop_dr"):
        for dn, dkw in DYNAMIC.items():
            a = md.aggte(res, type="dynamic", boot=False, **dkw)
            case["aggregate"][f"dynamic_{dn}"] = {
                "options": dkw, "estimate": float(a.overall_att),
                "std_error": float(a.overall_se),
                "keys": np.asarray(a.event_times, float).tolist(),
                "estimates": np.asarray(a.att_by_event, float).tolist(),
                "std_errors": np.asarray(a.se_by_event, float).tolist()}
    out["cases"][name] = case
(HERE / "moderndid_mpdta.json").write_text(json.dumps(out, indent=1))
