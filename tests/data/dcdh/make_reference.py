"""Regenerate the did_multiplegt_dyn reference numbers in this folder (NOT run by the tests).

Oracle: the official Python port of de Chaisemartin & D'Haultfœuille's R/Stata command,
PyPI ``py-did-multiplegt-dyn`` 0.1.9 (import name ``did_multiplegt_dyn``), installed in a
throwaway venv with polars 1.29 (its no-cluster path calls ``pl.count()``, removed in
polars 2)::

    python -m venv /tmp/venv-dcdh
    /tmp/venv-dcdh/bin/pip install py-did-multiplegt-dyn==0.1.9 "polars<1.30"
    /tmp/venv-dcdh/bin/python tests/data/dcdh/make_reference.py

It reproduces the published numbers (Favara-Imbs Effect_1 0.0240393 (SE 0.0184241),
Effect_8 0.0100838, Placebo_1 0.0303785; wagepan Effect_1 0.0409508 (SE 0.0339709)), see
SOURCE.md. Writes ``oracle_results.csv`` (one row per case x term: estimate, SE, N,
switchers; p-values of the joint tests on the case's first row) and ``oracle_cases.json``
(each case's exact call and data recipe, and the oracle's version).
"""

from __future__ import annotations

import json
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
from did_multiplegt_dyn import DidMultiplegtDyn
from recipes import RECIPES, datasets, synthetic

HERE = Path(__file__).parent
FI = dict(outcome="Dl_vloans_b", group="county", time="year", treatment="inter_bra")
WP = dict(outcome="lwage", group="nr", time="year", treatment="union")
SY = dict(outcome="y", group="unit", time="period", treatment="links")

CASES = [
    ("fi_published", "favara_imbs", dict(FI, effects=8, placebo=3, cluster="state_n",
                                         normalized=True, same_switchers=True,
                                         effects_equal=True)),
    ("fi_basic", "favara_imbs", dict(FI, effects=5, placebo=3)),
    ("fi_weight_cluster", "favara_imbs", dict(FI, effects=4, placebo=2, weight="w1",
                                              cluster="state_n")),
    ("fi_never", "favara_imbs", dict(FI, effects=4, placebo=2, only_never_switchers=True)),
    ("fi_in_normalized", "favara_imbs", dict(FI, effects=6, placebo=2, switchers="in",
                                             normalized=True, effects_equal=True)),
    ("fi_trends_np_state", "favara_imbs", dict(FI, effects=3, placebo=1,
                                               trends_nonparam=["state_n"])),
    ("fi_trends_np_size", "favara_imbs_size", dict(FI, effects=4, placebo=2,
                                                   trends_nonparam=["big"],
                                                   cluster="state_n")),
    ("wp_published", "wagepan", dict(WP, effects=5, placebo=2)),
    ("wp_in", "wagepan", dict(WP, effects=4, placebo=2, switchers="in")),
    ("wp_out", "wagepan", dict(WP, effects=4, placebo=2, switchers="out")),
    ("wp_normalized_equal", "wagepan", dict(WP, effects=4, placebo=3, normalized=True,
                                            effects_equal=True)),
    ("wp_same_switchers", "wagepan", dict(WP, effects=4, placebo=2, same_switchers=True)),
    ("wp_never", "wagepan", dict(WP, effects=3, placebo=2, only_never_switchers=True)),
    ("wp_trends_np_weight", "wagepan", dict(WP, effects=3, placebo=2,
                                            trends_nonparam=["black"], weight="hours")),
    ("wp_cluster", "wagepan_cluster", dict(WP, effects=4, placebo=2, cluster="block")),
    ("wp_unbalanced", "wagepan_unbalanced", dict(WP, effects=4, placebo=2)),
    ("wp_trends_lin", "wagepan", dict(WP, effects=3, placebo=2, trends_lin=True)),
    ("fi_trends_lin", "favara_imbs", dict(FI, effects=4, placebo=2, trends_lin=True,
                                          cluster="state_n", normalized=True)),
    ("sy_trends_lin", "synthetic", dict(SY, effects=3, placebo=2, trends_lin=True)),
    ("wp_controls", "wagepan", dict(WP, effects=3, placebo=2, controls=["hours"])),
    ("wp_controls_cluster", "wagepan_cluster", dict(WP, effects=3, placebo=2,
                                                    controls=["hours", "married"],
                                                    cluster="block")),
    ("fi_controls", "favara_imbs", dict(FI, effects=4, placebo=2, controls=["Dl_hpi"],
                                        cluster="state_n", normalized=True)),
    ("sy_controls_missing", "synthetic_x", dict(SY, effects=3, placebo=1,
                                                controls=["x"])),
    ("fi_continuous", "favara_imbs", dict(FI, effects=3, placebo=1, continuous=1,
                                          cluster="state_n")),
    ("sy_continuous2", "synthetic_cont", dict(SY, effects=3, placebo=2, continuous=2,
                                              normalized=True)),
    ("sy_missing_values", "synthetic_na", dict(SY, effects=3, placebo=2, normalized=True,
                                               cluster="region")),
    ("sy_repeated_rows", "synthetic_repeated", dict(SY, effects=2, placebo=1, weight="w")),
    ("sy_basic", "synthetic", dict(SY, effects=4, placebo=2, effects_equal=True)),
    ("sy_normalized_cluster", "synthetic", dict(SY, effects=4, placebo=2, normalized=True,
                                                cluster="region")),
    ("sy_out_same", "synthetic", dict(SY, effects=3, placebo=1, switchers="out",
                                      same_switchers=True)),
]


def main() -> None:
    synthetic().to_csv(HERE / "synthetic.csv", index=False, float_format="%.10g")
    data = datasets()
    out, calls = [], {}
    for name, ds, kw in CASES:
        call = "DidMultiplegtDyn(df, " + ", ".join(f"{k}={v!r}" for k, v in kw.items()) + ")"
        calls[name] = {"data": RECIPES[ds], "dataset": ds, "kwargs": kw,
                       "call": call + ".fit()"}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = DidMultiplegtDyn(pl.from_pandas(data[ds]), **kw).fit()
        except ValueError as exc:  # recorded: twinimpact must refuse these too
            calls[name]["error"] = str(exc)
            continue
        res = m.result["did_multiplegt_dyn"]
        first = True
        for block in ("Effects", "Placebos", "ATE"):
            tab = res.get(block)
            if tab is None:
                continue
            for term, row in tab.iterrows():
                rec = {"case": name, "term": term, "estimate": row["Estimate"],
                       "std_error": row["SE"], "n_obs": row["N"],
                       "n_switchers": row["Switchers"],
                       "n_switchers_w": row["Switchers.w"]}
                if first:
                    for k in ("p_jointeffects", "p_jointplacebo", "p_equality_effects",
                              "delta_D_avg_total"):
                        v = res.get(k)
                        rec[k] = np.nan if v is None else float(v)
                    first = False
                out.append(rec)
    pd.DataFrame(out).to_csv(HERE / "oracle_results.csv", index=False, float_format="%.12g")
    meta = {"oracle": f"py-did-multiplegt-dyn {version('py-did-multiplegt-dyn')}, "
                      f"polars {version('polars')}, numpy {version('numpy')}",
            "placebo default": "the port's default is placebo=1; every call passes it",
            "cases": calls}
    (HERE / "oracle_cases.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
