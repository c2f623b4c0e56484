"""did_multiplegt: de Chaisemartin & D'Haultfœuille (2024) against published numbers, the
official Python port of did_multiplegt_dyn (30 option combinations, tests/data/dcdh), a
slow brute-force oracle written from the paper's formulas, invariances and bad input."""

from __future__ import annotations

import importlib.util
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import twinimpact as ti
from twinimpact.errors import EstimationError, InputError, SpecificationError

from ..conftest import DATA

DCDH = DATA / "dcdh"
#: the oracle prints 6 decimals; we store its full doubles and agree to ~1e-13, so a
#: tolerance of 1e-9 still fails on any change of sample, weight or cohort definition
TOL = 1e-9
#: printed precision of the published numbers (7 significant decimals)
PRINTED = 5e-8

pytestmark = pytest.mark.filterwarnings("ignore::twinimpact.errors.TwinImpactWarning")


def _recipes():
    """tests/data/dcdh/recipes.py: the same frames make_reference.py gave the oracle."""
    spec = importlib.util.spec_from_file_location("dcdh_recipes", DCDH / "recipes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def datasets() -> dict[str, pd.DataFrame]:
    return _recipes().datasets(DCDH)


CASES = json.loads((DCDH / "oracle_cases.json").read_text())["cases"]
ORACLE = pd.read_csv(DCDH / "oracle_results.csv")


def _run(data: pd.DataFrame, kwargs: dict) -> ti.results.EstimationResult:
    kw = dict(kwargs)
    kw["unit"] = kw.pop("group")
    return ti.did_multiplegt(data, **kw)


# ----------------------------------------------------------------- published numbers
def test_favara_imbs_published(datasets):
    r = ti.did_multiplegt(datasets["favara_imbs"], outcome="Dl_vloans_b", unit="county",
                          time="year", treatment="inter_bra", effects=8, placebo=3,
                          cluster="state_n", normalized=True, same_switchers=True)
    f = r.to_frame().set_index("term")
    assert abs(f.loc["Effect_1", "estimate"] - 0.0240393) < PRINTED
    assert abs(f.loc["Effect_1", "std_error"] - 0.0184241) < PRINTED
    assert abs(f.loc["Effect_8", "estimate"] - 0.0100838) < PRINTED
    assert abs(f.loc["Placebo_1", "estimate"] - 0.0303785) < PRINTED
    assert f.loc["Placebo_1", "rel_time"] == -1 and f.loc["Effect_8", "rel_time"] == 8
    assert r.vcov_spec.n_clusters[0] == datasets["favara_imbs"]["state_n"].nunique()


def test_wagepan_published(datasets):
    r = ti.did_multiplegt(datasets["wagepan"], outcome="lwage", unit="nr", time="year",
                          treatment="union", effects=5, placebo=2)
    f = r.to_frame().set_index("term")
    assert abs(f.loc["Effect_1", "estimate"] - 0.0409508) < PRINTED
    assert abs(f.loc["Effect_1", "std_error"] - 0.0339709) < PRINTED
    assert list(f.index) == ["Effect_1", "Effect_2", "Effect_3", "Effect_4", "Effect_5",
                             "Placebo_1", "Placebo_2", "ATT"]


# ----------------------------------------------------------------- the official port
@pytest.mark.parametrize("case", list(CASES))
def test_matches_official_port(case, datasets):
    spec = CASES[case]
    data = datasets[spec["dataset"]]
    if "error" in spec:                     # the reference refuses: so do we, by name
        with pytest.raises(EstimationError, match="no treatment effect can be estimated"):
            _run(data, spec["kwargs"])
        return
    r = _run(data, spec["kwargs"])
    f = r.to_frame().set_index("term")
    ref = ORACLE[ORACLE["case"] == case].copy()
    ref["term"] = ref["term"].replace({"Average_Total_Effect": "ATT"})
    ref = ref.set_index("term")
    assert list(f.index) == list(ref.index)
    np.testing.assert_allclose(f["estimate"], ref["estimate"], rtol=0, atol=TOL)
    np.testing.assert_allclose(f["std_error"], ref["std_error"], rtol=0, atol=TOL)
    has = ref["n_obs"].notna()
    info = r.term_info.loc[ref.index[has]]
    np.testing.assert_array_equal(info["n_obs"], ref.loc[has, "n_obs"])
    np.testing.assert_allclose(info["n_switchers_weighted"], ref.loc[has, "n_switchers_w"],
                               rtol=1e-10)
    if not spec["kwargs"].get("trends_lin"):
        # with trends_lin the port's unweighted "Switchers" column keeps the count of a
        # later re-estimation (horizons re-run with more effects); its "Switchers.w"
        # (checked above) is the count used for the estimate, which we report for both
        np.testing.assert_array_equal(info["n_switchers"], ref.loc[has, "n_switchers"])
    first = ref.iloc[0]
    for col, key in (("p_jointeffects", "effects_joint_test"),
                     ("p_jointplacebo", "placebo_test"),
                     ("p_equality_effects", "effects_equal_test")):
        got = r.diagnostics[key]
        if np.isnan(first[col]):
            assert got is None or np.isnan(got["p_value"])
        else:
            assert abs(got["p_value"] - first[col]) < TOL, col
    acc = r.diagnostics["avg_periods_effect_accumulated"]
    if np.isnan(first["delta_D_avg_total"]):
        assert np.isnan(acc)
    else:
        assert acc == pytest.approx(first["delta_D_avg_total"], abs=TOL)


# ----------------------------------------------------------------- brute-force oracle
def _panel(seed: int, n: int = 30, t: int = 8) -> pd.DataFrame:
    """Balanced panel: status quo 0 or 2; some switch up, some down (only from 2), some
    twice in the same direction, some never; no unit goes both above and below."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n):
        base = 0 if g < n // 2 else 2
        kind = g % 5
        f1 = int(rng.integers(2, t))
        path = np.full(t, base, dtype=float)
        if kind in (1, 2):
            path[f1 - 1:] = base + 1
            if kind == 2 and f1 + 2 <= t:
                path[f1 + 1:] = base + 3
        elif kind == 3 and base == 2:
            path[f1 - 1:] = 1.0
        a = rng.normal()
        for k in range(t):
            y = a + 0.3 * k + 0.7 * path[k] + rng.normal(scale=0.4)
            rows.append((f"g{g:02d}", 1990 + k, path[k], y))
    return pd.DataFrame(rows, columns=["unit", "year", "d", "y"])


def _brute_force(df: pd.DataFrame, effects: int, placebo: int, normalized: bool):
    """The paper's DID_l, placebos and average total effect with explicit loops over groups
    and periods (balanced panel, no missing values, weights 1)."""
    units = sorted(df["unit"].unique())
    years = sorted(df["year"].unique())
    T = len(years)
    Y = {(u, k + 1): v for u, k, v in zip(df["unit"], df["year"].map(years.index), df["y"],
                                          strict=True)}
    D = {(u, k + 1): v for u, k, v in zip(df["unit"], df["year"].map(years.index), df["d"],
                                          strict=True)}
    d1 = {u: D[u, 1] for u in units}
    F = {}
    for u in units:
        F[u] = next((t for t in range(2, T + 1) if D[u, t] != d1[u]), T + 1)
    # periods at which some unit with the same status quo has not switched yet
    Tg = {u: min(T, max(F[v] for v in units if d1[v] == d1[u]) - 1) for u in units}
    S = {}
    for u in units:
        if F[u] <= T:
            post = [D[u, t] for t in range(F[u], Tg[u] + 1)]
            S[u] = 1 if np.mean(post) > d1[u] else -1

    def did_g(u, ell, pl):
        t_end = F[u] - 1 + ell
        base = F[u] - 1
        other = F[u] - 1 - ell if pl else t_end
        ctrl = [v for v in units if d1[v] == d1[u] and F[v] > t_end]
        own = Y[u, other] - Y[u, base]
        return own - np.mean([Y[v, other] - Y[v, base] for v in ctrl])

    out = {}
    num_ate = den_ate = 0.0
    for kind, count in (("Effect", effects), ("Placebo", placebo)):
        for ell in range(1, count + 1):
            terms, dl = [], []
            for u in units:
                if u not in S or F[u] - 1 + ell > Tg[u]:
                    continue
                if kind == "Placebo" and F[u] - 1 - ell < 1:
                    continue
                terms.append(S[u] * did_g(u, ell, kind == "Placebo"))
                dl.append(S[u] * sum(D[u, F[u] + k] - d1[u] for k in range(ell)))
                if kind == "Effect":
                    num_ate += terms[-1]
                    den_ate += S[u] * (D[u, F[u] - 1 + ell] - d1[u])
            est = np.mean(terms)
            out[f"{kind}_{ell}"] = est / np.mean(dl) if normalized else est
    out["ATT"] = num_ate / den_ate
    return out


@pytest.mark.parametrize("seed,normalized", [(1, False), (2, True), (3, False)])
def test_brute_force_oracle(seed, normalized):
    df = _panel(seed)
    r = ti.did_multiplegt(df, outcome="y", unit="unit", time="year", treatment="d",
                          effects=3, placebo=2, normalized=normalized)
    want = _brute_force(df, 3, 2, normalized)
    got = r.params
    for term, v in want.items():
        assert got[term] == pytest.approx(v, abs=1e-12), term


# ----------------------------------------------------------------- invariances
@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), shift=st.integers(-50, 50),
       c=st.floats(-5, 5), scale=st.floats(0.5, 3))
def test_invariances(seed, shift, c, scale):
    df = _panel(seed % 7, n=20, t=6)
    kw = dict(outcome="y", unit="unit", time="year", treatment="d", effects=2, placebo=1)
    base = ti.did_multiplegt(df, **kw)
    rng = np.random.default_rng(seed)
    moved = df.sample(frac=1.0, random_state=seed).assign(
        year=lambda x: x["year"] + shift, y=lambda x: scale * x["y"] + c,
        unit=lambda x: "id-" + x["unit"].str[::-1])
    other = ti.did_multiplegt(moved, **kw)
    np.testing.assert_allclose(other.params, scale * base.params, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(other.std_errors, scale * base.std_errors, rtol=1e-9,
                               atol=1e-10)
    assert rng is not None


@pytest.mark.parametrize("normalized", [False, True])
def test_mirrored_treatment_flips_the_signs(normalized):
    """D -> 5 - D turns switchers in into switchers out: every estimate changes sign (out
    is signed as the effect of the treatment), standard errors and counts do not."""
    df = _panel(8)
    kw = dict(outcome="y", unit="unit", time="year", effects=3, placebo=2,
              normalized=normalized)
    a = ti.did_multiplegt(df, treatment="d", **kw)
    b = ti.did_multiplegt(df.assign(d=5 - df["d"]), treatment="d", **kw)
    np.testing.assert_allclose(b.params, -a.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.std_errors, a.std_errors, rtol=1e-10)
    pd.testing.assert_frame_equal(a.term_info, b.term_info)


def test_caller_frame_untouched_and_result_immutable():
    df = _panel(4)
    before = df.copy(deep=True)
    r = ti.did_multiplegt(df, outcome="y", unit="unit", time="year", treatment="d",
                          effects=2, placebo=1)
    pd.testing.assert_frame_equal(df, before)
    with pytest.raises((AttributeError, TypeError)):
        r.nobs = 1  # type: ignore[misc]
    assert r.diagnostics["n_groups"] == 30
    assert "did_multiplegt" in r.summary()


# ----------------------------------------------------------------- bad input
def test_constant_treatment_is_a_named_error():
    df = _panel(5).assign(d=1.0)
    with pytest.raises(EstimationError, match="never changes within any 'unit'"):
        ti.did_multiplegt(df, outcome="y", unit="unit", time="year", treatment="d")


def test_only_never_switchers_without_never_switchers():
    df = _panel(5)
    first = df.groupby("unit")["d"].transform("first")
    changers = df.loc[df["d"] != first, "unit"].unique()
    df = df[df["unit"].isin(changers)]
    with pytest.raises(EstimationError, match="only_never_switchers=True needs units"):
        ti.did_multiplegt(df, outcome="y", unit="unit", time="year", treatment="d",
                          only_never_switchers=True)
    # the default (not-yet-switchers as controls) still works on the same data
    r = ti.did_multiplegt(df, outcome="y", unit="unit", time="year", treatment="d")
    assert np.isfinite(r.params["Effect_1"])


def test_only_never_switchers_needs_them_in_the_same_status_quo():
    df = _panel(5)
    first = df.groupby("unit")["d"].transform("first")
    changes = df.groupby("unit")["d"].transform(lambda s: (s != s.iloc[0]).any())
    # never-switchers only with status quo 2, switchers only with status quo 0
    sub = df[(changes & (first == 0)) | (~changes & (first == 2))]
    with pytest.raises(EstimationError, match="starts from the same value"):
        ti.did_multiplegt(sub, outcome="y", unit="unit", time="year", treatment="d",
                          only_never_switchers=True)
    # some switchers (status quo 2) lack never-switchers: warned and not used
    part = df[changes | (first == 0)]
    with pytest.warns(ti.errors.DataWarning, match="have no never-switcher"):
        r = ti.did_multiplegt(part, outcome="y", unit="unit", time="year", treatment="d",
                              only_never_switchers=True)
    assert np.isfinite(r.params["Effect_1"])


def test_missing_cluster_rows_are_dropped_and_counted():
    df = _panel(6).assign(region=lambda x: x["unit"].str[-1])
    df.loc[df.index[:3], "region"] = None
    with pytest.warns(ti.errors.DroppedRowsWarning, match="missing cluster"):
        r = ti.did_multiplegt(df, outcome="y", unit="unit", time="year", treatment="d",
                              cluster="region")
    assert r.diagnostics["dropped_rows"]["missing cluster (region)"] == 3


def test_bad_options_and_columns():
    df = _panel(6)
    kw = dict(outcome="y", unit="unit", time="year", treatment="d")
    with pytest.raises(SpecificationError, match="switchers"):
        ti.did_multiplegt(df, **kw, switchers="both")
    with pytest.raises(SpecificationError, match="effects must be an integer"):
        ti.did_multiplegt(df, **kw, effects=0)
    with pytest.raises(ti.errors.ColumnError, match="did you mean 'year'"):
        ti.did_multiplegt(df, outcome="y", unit="unit", time="yeer", treatment="d")
    with pytest.raises(InputError, match="treatment column 'd' must be numeric"):
        ti.did_multiplegt(df.assign(d=df["d"].astype(str) + "x"), **kw)
    bad = df.assign(region=np.where(df["year"] > 1993, "A", "B"))
    with pytest.raises(InputError, match="nested in clusters"):
        ti.did_multiplegt(bad, **kw, cluster="region")


def test_too_many_effects_warns_and_truncates():
    df = _panel(7, t=6)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        r = ti.did_multiplegt(df, outcome="y", unit="unit", time="year", treatment="d",
                              effects=9, placebo=9)
    assert r.diagnostics["n_effects"] < 9
    assert any("effect(s) can be estimated" in str(w.message) for w in rec)


def test_missing_controls_are_dropped_and_counted(datasets):
    df = datasets["synthetic_x"]
    n_miss = int(df["x"].isna().sum())
    assert n_miss > 0
    with pytest.warns(ti.errors.DroppedRowsWarning, match=r"missing control \(x\)"):
        r = ti.did_multiplegt(df, outcome="y", unit="unit", time="period", treatment="links",
                              effects=2, controls=["x"])
    assert r.diagnostics["dropped_rows"]["missing control (x)"] == n_miss
    with pytest.raises(InputError, match="control column 'region' must be numeric"):
        ti.did_multiplegt(df, outcome="y", unit="unit", time="period", treatment="links",
                          controls="region")
