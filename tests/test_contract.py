"""One contract over every public result type (the registry is tests/contract_cases.py).

Checks: tables in every format with the frame round trip, event-study plot (or a clear
error), summary text, vcov symmetric / PSD with ``std_errors == sqrt(diag(vcov))``, the
typed fields (``pretrend_test``, ``att_definition``, ``ci_kind`` from ``vcov_spec``), the
fixed diagnostics keys, identical results when fitted twice, immutability, the caller's
frame untouched and the true effect covered.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import warnings

import numpy as np
import pandas as pd
import pytest

import twinimpact as ti
from twinimpact.errors import SpecificationError
from twinimpact.estimators.registry import ESTIMATORS
from twinimpact.results import (
    DIAGNOSTIC_KEYS,
    ATTDefinition,
    EstimationResult,
    PretrendTest,
    summarize,
    tidy,
)

from .contract_cases import CASES, EFFECT, NOT_RESULTS, PUBLIC_RESULTS, panel

pytestmark = pytest.mark.filterwarnings("ignore::twinimpact.errors.TwinImpactWarning")

#: |V - V'| allowed, relative to max |V|: vcovs are built as A M A' in floating point.
SYMMETRY_RTOL = 1e-10
#: Smallest eigenvalue allowed, relative to the largest: rounding of a PSD matrix.
PSD_RTOL = 1e-9
#: std_errors vs sqrt(diag(vcov)): the same numbers, computed once more.
SE_RTOL = 1e-12
#: Python reprs that must not leak into summaries.
REPR_PATTERNS = ("mappingproxy", "object at 0x", "array(", "np.float", "<twinimpact",
                 "Series([", "dtype:", "{'", "Name: ")

BY_NAME = {c.name: c for c in CASES}
IDS = sorted(BY_NAME)


@functools.cache
def fitted(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return BY_NAME[name].fit(panel())


def components(obj) -> list:
    """Containers (case study) are checked through their component results too."""
    comps = getattr(obj, "results", None)
    if isinstance(comps, dict) and not isinstance(obj, pd.DataFrame):
        return list(comps.values())
    return [obj]


def estimation_results(obj) -> list[EstimationResult]:
    out = [r for r in components(obj) if isinstance(r, EstimationResult)]
    inner = getattr(obj, "result", None)
    if isinstance(inner, EstimationResult):
        out.append(inner)
    return out


def finite_blocks(a: np.ndarray) -> list[np.ndarray]:
    """Index sets of the finite diagonal blocks of a vcov. A covariance that is not
    computed (NaN, e.g. imputation's pre-trend x post-treatment block) separates blocks;
    within a block every entry must be finite."""
    ok = np.flatnonzero(np.isfinite(np.diag(a)))
    left, blocks = set(ok.tolist()), []
    while left:
        stack, comp = [left.pop()], set()
        while stack:
            i = stack.pop()
            comp.add(i)
            nxt = {j for j in left if np.isfinite(a[i, j])}
            left -= nxt
            stack.extend(nxt)
        idx = np.array(sorted(comp))
        assert np.isfinite(a[np.ix_(idx, idx)]).all(), "partly computed covariance block"
        blocks.append(idx)
    return blocks


def test_registry_names_are_unique():
    assert len(BY_NAME) == len(CASES)


def test_every_public_result_is_covered():
    """Each function of ``ti.__all__`` either returns a result object covered by a case
    here (so ti.table / ti.plot_event_study are checked on it) or is listed as returning
    none; a new public function fails until it is placed."""
    import inspect

    funcs = {n for n in ti.__all__ if callable(getattr(ti, n))
             and not inspect.isclass(getattr(ti, n)) and not inspect.ismodule(getattr(ti, n))}
    assert funcs == set(PUBLIC_RESULTS) | set(NOT_RESULTS), (
        funcs ^ (set(PUBLIC_RESULTS) | set(NOT_RESULTS)))
    assert not set(PUBLIC_RESULTS) & set(NOT_RESULTS)
    for fn, names in PUBLIC_RESULTS.items():
        assert names and set(names) <= set(BY_NAME), (fn, set(names) - set(BY_NAME))


def test_every_registered_estimator_is_covered():
    covered = {c.estimator for c in CASES if c.estimator}
    assert set(ESTIMATORS) <= covered, set(ESTIMATORS) - covered


@pytest.mark.parametrize("name", IDS)
def test_table_every_format_and_round_trip(name, tmp_path):
    obj = fitted(name)
    for fmt in ("markdown", "html", "latex"):
        text = ti.table({name: obj}, fmt)
        assert isinstance(text, str) and len(text) > 20
    wide = ti.table({name: obj}, "xlsx", path=tmp_path / "t.xlsx")
    assert (tmp_path / "t.xlsx").stat().st_size > 0
    frame = ti.table({name: obj}, "frame")
    pd.testing.assert_frame_equal(wide, frame)
    comps = components(obj)
    cols = [name] if len(comps) == 1 else [f"{name}: {k}" for k in obj.results]
    for col, comp in zip(cols, comps, strict=True):
        t = tidy(comp).set_index("term")
        got = frame[col].loc[t.index]
        for stat in ("estimate", "std_error", "p_value", "ci_lower", "ci_upper"):
            np.testing.assert_array_equal(got[stat].to_numpy(dtype=float),
                                          t[stat].to_numpy(dtype=float), err_msg=stat)
        # rows of other models only: nothing of this model
        assert got.shape[0] == frame[col].dropna(how="all").shape[0]


@pytest.mark.parametrize("name", IDS)
def test_plot_event_study_or_clear_error(name):
    import matplotlib.pyplot as plt

    obj = fitted(name)
    if BY_NAME[name].event_time:
        ax = ti.plot_event_study({name: obj})
        assert len(ax.lines) + len(ax.collections) > 0
        plt.close(ax.figure)
    else:
        with pytest.raises(SpecificationError, match="event-time") as info:
            ti.plot_event_study(obj)
        assert type(obj).__name__ in str(info.value)


@pytest.mark.parametrize("name", IDS)
def test_summary_is_plain_text(name):
    obj = fitted(name)
    text = summarize(obj)
    assert isinstance(text, str) and text.strip()
    if not isinstance(obj, pd.DataFrame):
        assert obj.summary() == text
    for pat in REPR_PATTERNS:
        assert pat not in text, (pat, text)


@pytest.mark.parametrize("name", IDS)
def test_vcov_symmetric_psd_and_std_errors(name):
    for r in estimation_results(fitted(name)):
        v = r.vcov
        k = len(r.params)
        assert v.shape == (k, k)
        assert list(v.index) == list(r.params.index) == list(v.columns)
        a = v.to_numpy()
        np.testing.assert_array_equal(np.isnan(a), np.isnan(a).T)
        for block in finite_blocks(a):
            sub = a[np.ix_(block, block)]
            scale = np.abs(sub).max()
            np.testing.assert_allclose(sub, sub.T, rtol=0, atol=SYMMETRY_RTOL * scale)
            w = np.linalg.eigvalsh((sub + sub.T) / 2)
            assert w.min() >= -PSD_RTOL * max(w.max(), scale), w.min()
        se = r.std_errors.to_numpy()
        np.testing.assert_allclose(se, np.sqrt(np.diag(r.vcov.to_numpy())), rtol=SE_RTOL)
        f = r.to_frame()
        assert (f["ci_kind"] == r.vcov_spec.ci_kind).all()


@pytest.mark.parametrize("name", IDS)
def test_typed_fields_and_diagnostics(name):
    case = BY_NAME[name]
    for r in estimation_results(fitted(name)):
        assert r.pretrend_test is None or isinstance(r.pretrend_test, PretrendTest)
        if "ATT" in r.terms:
            assert isinstance(r.att_definition, ATTDefinition), r.estimator
        for key in DIAGNOSTIC_KEYS:
            assert key in r.diagnostics, (r.estimator, key)
        assert r.diagnostics["n_used_rows"] == r.nobs
        assert all(isinstance(v, int | np.integer) and v >= 0
                   for v in r.diagnostics["dropped_rows"].values())
        assert isinstance(r.diagnostics["notes"], tuple)
        assert not {"pretest", "pretrend", "pre_test", "n_obs"} & set(r.diagnostics)
    if case.pretrend:
        pt = fitted(name).pretrend_test
        assert isinstance(pt, PretrendTest)
        assert pt.kind in ("Wald chi2", "F") and pt.n_coefficients > 0
        assert 0 <= pt.p_value <= 1 and pt.statistic >= 0
        assert pt.rank is None or pt.rank <= pt.df


@pytest.mark.parametrize("name", IDS)
def test_refit_identical_and_caller_frame_untouched(name):
    d = panel()
    before = d.copy(deep=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = BY_NAME[name].fit(d)
    pd.testing.assert_frame_equal(d, before)
    first = fitted(name)
    for a, b in zip(components(first), components(again), strict=True):
        pd.testing.assert_frame_equal(tidy(a), tidy(b))
    for a, b in zip(estimation_results(first), estimation_results(again), strict=True):
        np.testing.assert_array_equal(a.cov, b.cov)


@pytest.mark.parametrize("name", IDS)
def test_immutable(name):
    obj = fitted(name)
    if isinstance(obj, pd.DataFrame):
        return  # HonestDiD frames are plain pandas frames
    objs = [obj, *(c for c in components(obj) if c is not obj), *estimation_results(obj)]
    for o in objs:
        assert dataclasses.is_dataclass(o)
        first = dataclasses.fields(o)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(o, first, getattr(o, first))
        for f in dataclasses.fields(o):
            val = getattr(o, f.name)
            if isinstance(val, np.ndarray):
                assert not val.flags.writeable, (type(o).__name__, f.name)
    for r in estimation_results(obj):
        p = r.params
        p.iloc[0] = 1e9
        assert r.params.iloc[0] != 1e9


@pytest.mark.parametrize("name", [c.name for c in CASES if c.truth])
def test_known_effect_is_covered(name):
    f = tidy(fitted(name)).set_index("term")
    term = BY_NAME[name].effect_term
    lo, hi = f.loc[term, ["ci_lower", "ci_upper"]]
    assert lo <= EFFECT <= hi, (name, f.loc[term].to_dict())


def test_summary_of_event_study_names_typed_fields():
    r = fitted("event_study")
    text = r.summary()
    assert re.search(r"Pre-trend test: F\(\d+, 39\)", text)
    assert "ATT: the mean of the post-treatment event-time effects" in text


@pytest.mark.parametrize("method", ["twfe", "callaway_santanna", "sun_abraham", "imputation",
                                    "did2s", "poisson"])
def test_event_study_methods_share_one_call(method):
    d = panel()
    kw = {"outcome": "counts"} if method == "poisson" else {"outcome": "y"}
    r = ti.event_study(d, **kw, unit="unit", time="year", cohort="g", leads=3, lags=3,
                       method=method)
    f = r.to_frame()
    rel = f["rel_time"].dropna()
    assert len(rel) >= 4 and rel.min() >= -3 and rel.max() <= 3
    post = f[(f["rel_time"] >= 0)]
    truth = EFFECT
    assert ((post["ci_lower"] <= truth) & (truth <= post["ci_upper"])).mean() >= 0.75
    assert isinstance(r.pretrend_test, PretrendTest)
    ax = ti.plot_event_study({method: r})
    assert ax is not None
