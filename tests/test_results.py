"""The results protocol: immutability, labelled views, tidy schema, NaN handling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from twinimpact.errors import NotComputableWarning, SpecificationError
from twinimpact.results import TIDY_COLUMNS, VcovSpec, make_result


def _result(df=None):
    params = pd.Series({"ATT": 1.0, "x": -2.0})
    v = np.array([[0.25, 0.01], [0.01, 1.0]])
    return make_result("demo", params, v, VcovSpec("cluster", ("id",), (30,), df=df), 100,
                       spec={"outcome": "y", "covariates": ["x"]},
                       diagnostics={"dropped_rows": {"missing y": 2}})


def test_labelled_views_and_inference():
    r = _result()
    assert list(r.params.index) == ["ATT", "x"]
    assert r.std_errors["ATT"] == pytest.approx(0.5)
    assert r.tstats["x"] == pytest.approx(-2.0)
    assert r.pvalues["ATT"] == pytest.approx(2 * stats.norm.sf(2.0))
    ci = r.conf_int(0.10)
    assert ci.loc["ATT", "lower"] == pytest.approx(1 - stats.norm.ppf(0.95) * 0.5)


def test_t_reference_distribution():
    r = _result(df=29)
    assert r.pvalues["ATT"] == pytest.approx(2 * stats.t.sf(2.0, 29))
    assert r.to_frame()["ci_kind"].iloc[0] == "t(29)"


def test_immutable():
    r = _result()
    p = r.params
    p["ATT"] = 99.0
    assert r.params["ATT"] == 1.0
    with pytest.raises((AttributeError, TypeError)):
        r.nobs = 5  # type: ignore[misc]
    with pytest.raises(ValueError):
        r.coef[0] = 3.0
    with pytest.raises(TypeError):
        r.diagnostics["new"] = 1  # type: ignore[index]
    r2 = r.replace(nobs=5)
    assert r2.nobs == 5 and r.nobs == 100


def test_tidy_schema():
    f = _result().to_frame()
    assert list(f.columns) == [c for c in TIDY_COLUMNS if c in f.columns]
    for c in ("estimator", "term", "estimate", "std_error", "statistic", "p_value",
              "ci_lower", "ci_upper", "ci_kind"):
        assert c in f.columns


def test_nan_is_warned_not_zero():
    with pytest.warns(NotComputableWarning, match="b"):
        r = make_result("demo", pd.Series({"a": 1.0, "b": np.nan}),
                        np.diag([1.0, np.nan]), VcovSpec("iid"), 10)
    assert np.isnan(r.params["b"]) and np.isnan(r.std_errors["b"])


def test_bad_alpha_and_shapes():
    with pytest.raises(SpecificationError, match="alpha"):
        _result().conf_int(alpha=1.5)
    with pytest.raises(SpecificationError):
        make_result("demo", pd.Series({"a": 1.0}), np.eye(2), VcovSpec("iid"), 10)


def test_summary_mentions_vcov_and_terms():
    s = _result().summary()
    assert "cluster by id (30 clusters)" in s and "ATT" in s and "Observations: 100" in s
