"""Produce yotov_pyfixest.json: pyfixest ``fepois`` on the Advanced Guide RTA application.

Run with a throwaway venv (pyfixest is not a twinimpact dependency):

    python -m venv /tmp/venv-ppml && /tmp/venv-ppml/bin/pip install pyfixest pandas pyarrow
    /tmp/venv-ppml/bin/python tests/reference/ppml/make_pyfixest_reference.py

Data preparation follows tradepolicy's Chapter 1 Application 3 (pachadotdev/tradepolicy,
01-traditional-gravity.qmd): years 1986, 1990, ..., 2006; ``pair_id_2`` puts every
domestic pair (exporter == importer) in ONE level ("0-intra"); the pair-FE samples keep
pairs with positive total trade; ``intl_border_YYYY`` = international pair x year YYYY.
"""

import json
import pathlib
import sys

import numpy as np
import pandas as pd
import pyfixest as pf

HERE = pathlib.Path(__file__).resolve().parent
DATA = HERE.parents[1] / "data" / "gravity_yotov" / "agtpa_applications.parquet"


def app3_frame() -> pd.DataFrame:
    d = pd.read_parquet(DATA)
    d = d[d["year"].isin(range(1986, 2007, 4))].copy()
    d["year"] = d["year"].astype(int)
    d["exp_year"] = d["exporter"] + d["year"].astype(str)
    d["imp_year"] = d["importer"] + d["year"].astype(str)
    d["log_dist"] = np.log(d["dist"])
    intra = d["exporter"] == d["importer"]
    d["pair_id_2"] = np.where(intra, "0-intra", d["pair_id"].astype(int).astype(str))
    d["intl_brdr"] = np.where(intra, d["pair_id"].astype(int).astype(str), "inter")
    for y in range(1986, 2007, 4):
        d[f"intl_border_{y}"] = ((~intra) & (d["year"] == y)).astype(float)
    d["sum_trade"] = d.groupby("pair_id")["trade"].transform("sum")
    return d.reset_index(drop=True)


SPECS = {
    "ppml_international": dict(
        fml="trade ~ log_dist + cntg + lang + clny + rta | exp_year + imp_year",
        sample="exporter != importer"),
    "trade_diversion": dict(
        fml="trade ~ log_dist + cntg + lang + clny + rta | exp_year + imp_year + intl_brdr",
        sample="all"),
    "endogeneity": dict(fml="trade ~ rta | exp_year + imp_year + pair_id_2",
                        sample="sum_trade > 0"),
    "reverse_causality": dict(fml="trade ~ rta + rta_lead4 | exp_year + imp_year + pair_id_2",
                              sample="sum_trade > 0"),
    "phasing_in": dict(
        fml="trade ~ rta + rta_lag4 + rta_lag8 + rta_lag12 | exp_year + imp_year + pair_id_2",
        sample="sum_trade > 0"),
    "globalization": dict(
        fml="trade ~ rta + rta_lag4 + rta_lag8 + rta_lag12 + intl_border_1986 + "
            "intl_border_1990 + intl_border_1994 + intl_border_1998 + intl_border_2002 | "
            "exp_year + imp_year + pair_id_2",
        sample="sum_trade > 0"),
}
VCOVS = {"cluster_pair": {"CRV1": "pair_id"}}
EXTRA_VCOVS = {"iid": "iid", "hetero": "hetero",
               "twoway_exporter_importer": {"CRV1": "exporter+importer"},
               # fixest's default before 0.13 (fixest >= 0.13 and pyfixest 0.60: iid)
               "cluster_first_fe": {"CRV1": "exp_year"}}
OPTS = dict(iwls_tol=1e-12, iwls_maxiter=100, fixef_tol=1e-12, fixef_maxiter=100_000)


def sample(d: pd.DataFrame, s: str) -> pd.DataFrame:
    if s == "all":
        return d
    return d.query(s).reset_index(drop=True)


def main() -> None:
    d = app3_frame()
    out = {"provenance": {
        "package": "pyfixest", "version": pf.__version__,
        "python": sys.version.split()[0],
        "call": "pyfixest.fepois(fml, data=sample, vcov=..., " + ", ".join(
            f"{k}={v!r}" for k, v in OPTS.items()) + ") (fixef_rm default 'singleton', "
            "ssc default)",
        "script": "tests/reference/ppml/make_pyfixest_reference.py",
        "data": "tests/data/gravity_yotov/agtpa_applications.parquet",
    }, "models": {}}
    for name, s in SPECS.items():
        sub = sample(d, s["sample"])
        vc = dict(VCOVS)
        if name == "ppml_international":
            vc.update(EXTRA_VCOVS)
        entry = {"formula": s["fml"], "sample": s["sample"], "vcov": {}}
        for vname, v in vc.items():
            fit = pf.fepois(s["fml"], data=sub, vcov=v, **OPTS)
            tidy = fit.tidy()
            entry["nobs"] = int(fit._N)
            entry["coef"] = {k: float(x) for k, x in tidy["Estimate"].items()}
            entry["vcov"][vname] = {
                "spec": v, "se": {k: float(x) for k, x in tidy["Std. Error"].items()},
                "vcov": np.asarray(fit._vcov).tolist()}
            entry["deviance"] = float(np.asarray(fit.deviance).reshape(-1)[0])
        out["models"][name] = entry
        print(name, entry["nobs"], entry["coef"])
    (HERE / "yotov_pyfixest.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
