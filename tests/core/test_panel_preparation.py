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


# ---- the cheaper checks of the preparation (shuf2): each against the exact path or an
# oracle, the same answers and the same messages

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from twinimpact.core import validation as V  # noqa: E402

_ID_KINDS = ["str", "category", "object", "int", "int_sparse"]


def _ids(codes: np.ndarray, kind: str):
    if kind == "int":
        return codes.astype(np.int64)
    if kind == "int_sparse":  # labels with gaps between them: the counting path's remap
        return codes.astype(np.int64) * 7 + 3
    labels = np.array([f"u{c:03d}" for c in codes], dtype=object)
    if kind == "str":
        return pd.array(labels, dtype="str")
    return pd.Categorical(labels) if kind == "category" else labels


@settings(max_examples=120, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3)), min_size=1,
                      max_size=40),
       kind=st.sampled_from(_ID_KINDS))
def test_duplicate_pairs_found_and_named_as_by_pandas(pairs, kind):
    # the presence table decides "no duplicate"; any duplicate is named as before: the
    # rows of every repeated (unit, time) pair counted, the first such row named
    u = np.array([p[0] for p in pairs])
    d = pd.DataFrame({"id": _ids(u, kind), "year": [2000 + p[1] for p in pairs],
                      "y": np.arange(len(pairs), dtype=float)})
    dup = d.duplicated(["id", "year"], keep=False).to_numpy()
    if not dup.any():
        p = prepare_panel(d, outcome="y", unit="id", time="year", estimator="est")
        assert len(p.frame) == len(d)
        return
    i = int(dup.argmax())
    label = d["id"].iloc[i]
    label = label.item() if isinstance(label, np.generic) else label
    want = (f"est: {int(dup.sum())} rows share a id x year pair; a panel needs one row "
            f"per unit and period")
    with pytest.raises(InputError) as err:
        prepare_panel(d, outcome="y", unit="id", time="year", estimator="est")
    msg = str(err.value)
    assert msg.startswith(want)
    assert f"id = {label!r}, year = {2000 + pairs[i][1]:g}" in msg


@pytest.mark.parametrize("kind", _ID_KINDS)
def test_duplicate_message_the_same_on_every_id_kind(kind):
    u = np.array([3, 1, 2, 1, 0, 2])
    d = pd.DataFrame({"id": _ids(u, kind), "year": [1, 1, 5, 1, 2, 5], "y": np.ones(6)})
    label = {"int": 1, "int_sparse": 10}.get(kind, "u001")
    with pytest.raises(InputError, match=rf"est: 4 rows share a id x year pair.*"
                                         rf"id = {label!r}, year = 1"):
        prepare_panel(d, outcome="y", unit="id", time="year", estimator="est")
    with pytest.raises(InputError, match=r"event_study: 4 rows share a id x year pair"):
        ti.event_study(d.assign(g=0), outcome="y", unit="id", time="year", cohort="g")


_cohort_value = st.sampled_from([np.nan, 0.0, -0.0, 3.0, 4.0, -np.inf, np.inf,
                                 np.frombuffer(np.int64(0x7FF8000000000001).tobytes())[0]])


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(-1, 4), _cohort_value), min_size=0, max_size=30),
       extra_units=st.integers(0, 2))
def test_cohort_per_unit_bit_path_equals_the_exact_path(rows, extra_units):
    # NaNs of another bit pattern, -0.0, infinities, rows without a unit: the bit-pattern
    # path answers only when it can; its answer (or refusal) is the exact path's
    codes = np.array([r[0] for r in rows], dtype=np.intp)
    g = np.array([r[1] for r in rows], dtype=float)
    n_units = (int(codes.max()) + 1 if len(codes) else 0) + extra_units
    units = np.array([f"u{c}" for c in codes], dtype=object)

    def run():
        try:
            return cohort_per_unit(codes, n_units, g, raw=pd.Series(g), unit_values=units,
                                   estimator="est", cohort_name="g", unit_name="id")
        except InputError as e:
            return str(e)

    got = run()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(V, "_cohort_per_unit_bits", lambda *a: None)
        want = run()
    if isinstance(want, str):
        assert got == want
        return
    seen = np.unique(codes[codes >= 0])  # (units without rows: unspecified in both)
    np.testing.assert_array_equal(got[seen].view(np.int64), want[seen].view(np.int64))
    assert len(got) == len(want) == n_units


@settings(max_examples=200, deadline=None)
@given(vals=st.lists(st.one_of(st.integers(-5, 30).map(float),
                               st.sampled_from([np.nan, np.inf, -np.inf, -0.0, 0.5, 1e6,
                                                2.0**60])), max_size=40))
def test_finite_levels_equal_np_unique(vals):
    x = np.array(vals, dtype=float)
    got = V._finite_levels(x)
    want = np.unique(x[np.isfinite(x)])
    np.testing.assert_array_equal(got, want)
    # the same signed zero as the hashed path (a message prints it)
    old = np.sort(np.asarray(pd.unique(x))[np.isfinite(np.asarray(pd.unique(x)))])
    np.testing.assert_array_equal(np.signbit(got), np.signbit(old))


@pytest.mark.parametrize("values", [np.arange(5, 25)[::-1], np.array([3, 9, 3, 12, 9]),
                                    np.array([2.0, 4.0, 3.0, 2.0]), np.array([7, 7, 7])])
def test_dense_codes_counting_path_in_label_order(values):
    codes, n = dense_codes(values)
    uniq = np.unique(values)
    assert n == len(uniq) and codes.dtype == np.intp
    np.testing.assert_array_equal(codes, np.searchsorted(uniq, values))
