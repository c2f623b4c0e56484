"""core.threads: the one-BLAS-thread decorator keeps warnings where users can act on them."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import threadpoolctl

import twinimpact as ti
from twinimpact.core.threads import blas_single_thread
from twinimpact.errors import FewClustersWarning

DATA = Path(__file__).resolve().parents[1] / "data" / "mpdta" / "mpdta.csv"


@blas_single_thread
def _inner(x: float) -> float:
    warnings.warn("about the caller", UserWarning, stacklevel=2)
    return 2 * x


@blas_single_thread
def _raises() -> None:
    warnings.warn("before the error", UserWarning, stacklevel=2)
    raise ValueError("boom")


def test_estimator_warning_points_at_the_callers_line():
    d = pd.read_csv(DATA)
    d["state"] = d["countyreal"] % 7
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ti.event_study(d, outcome="lemp", unit="countyreal", time="year",
                       cohort="first.treat", cluster="state")
    few = [w for w in rec if issubclass(w.category, FewClustersWarning)]
    assert len(few) == 1
    assert Path(few[0].filename).resolve() == Path(__file__).resolve()
    assert "7 clusters" in str(few[0].message)


def test_decorated_function_returns_value_and_reissues_at_caller():
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert _inner(2.0) == 4.0
    assert [str(w.message) for w in rec] == ["about the caller"]
    assert Path(rec[0].filename).resolve() == Path(__file__).resolve()


def test_warnings_survive_an_exception_and_caller_filters_apply():
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="boom"):
            _raises()
    assert [str(w.message) for w in rec] == ["before the error"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="about the caller"):
            _inner(1.0)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("ignore")
        assert _inner(1.0) == 2.0
    assert rec == []


def test_blas_is_one_thread_inside_and_restored_after():
    seen = {}

    @blas_single_thread
    def probe() -> None:
        blas = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        seen["inside"] = [i["num_threads"] for i in blas]

    before = [i["num_threads"] for i in threadpoolctl.threadpool_info()
              if i["user_api"] == "blas"]
    probe()
    after = [i["num_threads"] for i in threadpoolctl.threadpool_info()
             if i["user_api"] == "blas"]
    assert all(n == 1 for n in seen["inside"])
    assert after == before
    assert np.isfinite(np.linalg.norm(np.eye(3)))
