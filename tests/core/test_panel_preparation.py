"""The shared panel preparation pieces of core.validation (RowFilter, cohort_per_unit,
refuse_duplicate_pairs) and their use by prepare_panel and synthetic_did."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import twinimpact as ti
from twinimpact.core.validation import (
    RowFilter,
    cohort_per_unit,
    dense_codes,
    normalize_cohort,
    prepare_panel,
    refuse_duplicate_pairs,
)
from twinimpact.errors import DroppedRowsWarning, InputError


def test_row_filter_counts_each_row_once_under_its_first_reason():
    rows = RowFilter(5)
    rows.drop_missing(np.array([np.nan, np.nan, 1.0, 2.0, 3.0]), "missing a")
    rows.drop_missing(pd.Series([None, "x", None, "y", "z"]), "missing b")
    rows.drop(np.array([True, False, False, False, True]), "zero weight")
    assert rows.dropped == {"missing a": 2, "missing b": 1, "zero weight": 1}
    assert rows.keep.tolist() == [False, False, False, True, False]
    with pytest.warns(DroppedRowsWarning,
                      match=r"dropped 3 row\(s\).*2 rows: missing a; 1 row: missing b"):
        rows.warn_missing("est", stacklevel=1)


def test_prepare_panel_row_missing_unit_and_time_counted_once():
    d = pd.DataFrame({"i": [1, 1, 2, 2, None], "t": [1, 2, 1, 2, None],
                      "y": [1.0, 2.0, 3.0, 4.0, 5.0]})
    with pytest.warns(DroppedRowsWarning, match=r"dropped 1 row\(s\)"):
        p = prepare_panel(d, outcome="y", unit="i", time="t")
    assert p.dropped == {"missing unit (i)": 1}
    assert len(p.frame) == 4 and p.n_input == 5


def test_cohort_per_unit_conventions_and_refusal():
    units = np.array(["a", "a", "b", "b", "c", "c"], dtype=object)
    codes, n = dense_codes(units)
    g = normalize_cohort(np.array([0.0, 0.0, 3.0, 3.0, 99.0, 99.0]), last_period=5)
    per_unit = cohort_per_unit(codes, n, g, raw=pd.Series(g), unit_values=units,
                               estimator="est", cohort_name="g", unit_name="id")
    assert np.isnan(per_unit[0]) and per_unit[1] == 3 and np.isnan(per_unit[2])
    g_bad = g.copy()
    g_bad[3] = 4.0
    with pytest.raises(InputError, match=r"varies within unit \(1 unit\(s\)\).*id = 'b'"):
        cohort_per_unit(codes, n, g_bad, raw=pd.Series(g_bad), unit_values=units,
                        estimator="est", cohort_name="g", unit_name="id")


@pytest.mark.parametrize("n_units", [3, 10**7])  # dense count and hashed path
def test_refuse_duplicate_pairs_both_paths(n_units):
    u = np.array([0, 1, 2, 2, n_units - 1])
    t = np.array([0, 0, 1, 1, 0])
    with pytest.raises(InputError, match=r"2 rows share a id x year pair.*id = 2, year = 1"):
        refuse_duplicate_pairs(u, t, n_units, 2, label_row=lambda i: (int(u[i]), float(t[i])),
                               estimator="est", unit_name="id", time_name="year")
    refuse_duplicate_pairs(u[:3], t[:3], n_units, 2, label_row=None, estimator="est",
                           unit_name="id", time_name="year")  # no duplicate: no error


def test_synthetic_did_cohort_goes_through_the_shared_checks():
    rng = np.random.default_rng(0)
    d = pd.DataFrame({"i": np.repeat(np.arange(6), 6), "t": np.tile(np.arange(2000, 2006), 6)})
    d["y"] = rng.normal(size=len(d))
    d["g"] = np.where(d["i"] == 0, 2003, 0)
    text = d.assign(g=d["g"].astype(str).where(d["i"] != 0, "soon"))
    with pytest.raises(InputError, match="must be numeric"):
        ti.synthetic_did(text, outcome="y", unit="i", time="t", cohort="g")
    varies = d.assign(g=np.where((d["i"] == 0) & (d["t"] == 2005), 2004, d["g"]))
    with pytest.raises(InputError, match="varies within unit"):
        ti.synthetic_did(varies, outcome="y", unit="i", time="t", cohort="g")
    dup = pd.concat([d, d.iloc[[7]]])
    with pytest.raises(InputError, match="2 rows share a i x t pair"):
        ti.synthetic_did(dup, outcome="y", unit="i", time="t", cohort="g")
