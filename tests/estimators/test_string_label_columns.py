"""String label columns (pandas' Arrow-backed ``str`` dtype) are coded on their Arrow data
(core.fe.factorize) in the estimators' cluster and fixed-effect columns: the same codes as
the same labels held as Python objects, or as integers numbered in order of first
appearance -- so the same estimates and standard errors to the bit, with rows dropped
(missing outcomes) and without."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import twinimpact as ti


def _panel(drop: bool) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n_u, n_t = 60, 8
    unit = np.repeat(np.arange(n_u), n_t)
    year = np.tile(np.arange(2000, 2000 + n_t), n_u)
    cohort = np.array([0, 2004, 2006])[unit % 3]
    region = (unit * 7919) % 11  # labels not in sorted order of first appearance
    treated = (cohort > 0) & (year >= cohort)
    mu = np.exp(1.0 + 0.2 * treated + 0.1 * rng.normal(size=n_u)[unit]
                + 0.05 * (year - 2000))
    y = rng.poisson(mu).astype(float)
    if drop:
        y[rng.choice(len(y), 25, replace=False)] = np.nan
    return pd.DataFrame({"unit": unit, "year": year, "cohort": cohort, "y": y,
                         "region_int": region})


def _with_labels(d: pd.DataFrame, kind: str) -> pd.DataFrame:
    d = d.copy()
    labels = np.array([f"r{k:02d}" for k in range(11)], dtype=object)[d["region_int"]]
    if kind == "str":
        d["region"] = pd.Series(labels, dtype="str")
        d["unit_lab"] = pd.Series([f"u{u:03d}" for u in d["unit"]], dtype="str")
    elif kind == "object":
        d["region"] = pd.Series(labels, dtype=object)
        d["unit_lab"] = pd.Series([f"u{u:03d}" for u in d["unit"]], dtype=object)
    else:  # integers numbered by first appearance of the labels
        d["region"] = pd.factorize(labels)[0]
        d["unit_lab"] = d["unit"]
    return d


FITS = {
    "callaway_santanna": lambda d: ti.callaway_santanna(
        d, outcome="y", unit="unit", time="year",
        cohort="cohort", cluster="region"),
    "sun_abraham": lambda d: ti.sun_abraham(d, outcome="y", unit="unit", time="year",
                                            cohort="cohort", cluster="region"),
    "etwfe_poisson": lambda d: ti.etwfe(d, outcome="y", unit="unit", time="year",
                                        cohort="cohort", family="poisson",
                                        fixed_effects=["unit_lab", "year"],
                                        cluster="region"),
}


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("drop", [False, True])
@pytest.mark.parametrize("name", sorted(FITS))
def test_string_columns_code_as_objects_and_first_seen_integers(name, drop):
    base = _panel(drop)
    fits = {k: FITS[name](_with_labels(base, k)) for k in ("str", "object", "int")}
    ref = fits["int"]
    assert np.isfinite(ref.std_errors.to_numpy()).any()
    for k in ("str", "object"):
        np.testing.assert_array_equal(fits[k].params.to_numpy(), ref.params.to_numpy())
        np.testing.assert_array_equal(fits[k].std_errors.to_numpy(),
                                      ref.std_errors.to_numpy())
