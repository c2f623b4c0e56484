"""Unit ids that differ only after an embedded NUL character ("a", "a\\x00", "\\x00", "")
are distinct units. pandas before 3.1 merged them in factorize / unique / groupby on object
columns (pandas-dev/pandas#34551, fixed in 3.1.0; pyproject asks pandas>=3.1): on 2.2.3,
2.3.3 and 3.0.6 every estimator below refused the panel ("25 rows share a countyreal x year
pair") or, where no pair collided, would have fitted two units as one."""

import warnings

import numpy as np
import pandas as pd
import pytest

import twinimpact as ti

NUL_IDS = ["a", "a\x00", "\x00", "", "a\x00\x00"]
KW = {"outcome": "lemp", "unit": "countyreal", "time": "year", "cohort": "first.treat"}
CALLS = {
    "twfe": ti.twfe,
    "event_study": ti.event_study,
    "callaway_santanna": ti.callaway_santanna,
    "imputation": lambda d, **kw: ti.event_study(d, **kw, method="imputation"),
}


@pytest.fixture(scope="module")
def panels():
    mp = pd.read_csv("tests/data/mpdta/mpdta.csv")
    first = mp.groupby("countyreal")["first.treat"].first()
    df = mp[mp["countyreal"].isin(first.groupby(first).head(10).index)].reset_index(drop=True)
    counties = np.unique(df["countyreal"])
    labels = NUL_IDS + [f"x{i}" for i in range(len(counties) - len(NUL_IDS))]
    named = df.assign(countyreal=df["countyreal"].map(dict(zip(counties, labels,
                                                                 strict=True))).astype(object))
    return df, named


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("kind", ["object", "str", "shuffled_object"])
def test_ids_differing_after_a_nul_are_distinct_units(panels, name, kind):
    ints, named = panels
    if kind == "str":
        named = named.astype({"countyreal": "str"})
    elif kind == "shuffled_object":
        named = named.sample(frac=1, random_state=7).reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = CALLS[name](ints, **KW)
        got = CALLS[name](named, **KW)
    assert got.nobs == want.nobs == len(ints)
    np.testing.assert_allclose(got.coef, want.coef, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got.cov, want.cov, rtol=1e-10, atol=1e-16)
