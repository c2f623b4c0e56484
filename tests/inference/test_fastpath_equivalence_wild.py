"""Wild cluster bootstrap fast paths against a refit-every-draw oracle (issue 13, fuzz).

The bootstrap never refits: the statistics are linear in the draws (cluster moments
accumulated row block by row block, ``R`` factors by a sequential tall-skinny QR, fixed
effects through one projection of the cluster-wise columns), and cluster labels of any
type (object / Arrow strings, categoricals) are coded by ``core.fe.factorize``. The
oracle refits OLS on every one of the ``2^G`` Rademacher sign vectors (enumerated, so
the draws are the same on both sides): the dummy-variable fixed-effect projection of
each bootstrap outcome, CRV1 with fixest's small-sample factor (fixed effects nested in
the clusters not counted), ``|t*| > |t|``. Panels: 3-8 clusters of unequal size, rows
shuffled, missing regressor values, fixed effects nested in the clusters or not, WCR and
WCU, and row blocks of 7 rows (many blocks, a ragged last one).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinimpact.core import rowblocks
from twinimpact.errors import InputError
from twinimpact.inference import wild_bootstrap as wb


def _panel(seed: int, cluster_kind: str) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = int(rng.integers(3, 9))
    n = int(rng.integers(3 * g, 90))
    cl = rng.integers(0, g, n)
    cl[:g] = np.arange(g)
    d = pd.DataFrame({"c": cl, "x1": rng.normal(size=n), "x2": rng.normal(size=n),
                      "f": rng.integers(0, 4, n), "h": rng.integers(0, 3, n)})
    d["y"] = 0.3 * d["x1"] + rng.normal(size=g)[cl] + rng.normal(size=n)
    if rng.random() < 0.3:
        d.loc[rng.integers(0, n, 3), "x2"] = np.nan
    if rng.random() < 0.3:
        d["f"] = d["c"]  # a fixed effect nested in the clusters
    if cluster_kind == "object":
        d["c"] = d["c"].map(lambda v: f"s{v}").astype(object)
    elif cluster_kind == "arrow":
        d["c"] = d["c"].map(lambda v: f"s{v}").astype("string[pyarrow]")
    elif cluster_kind == "category":
        d["c"] = pd.Categorical(d["c"] * 13 + 7)
    elif cluster_kind == "mixed":  # '1' and 1 are different clusters
        d["c"] = pd.Series([v // 2 if v % 2 else str(v // 2) for v in d["c"]], dtype=object)
    return d.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def _oracle(d: pd.DataFrame, regs: list[str], fes: list[str], null: float,
            impose_null: bool) -> tuple[float, float, np.ndarray, float]:
    sub = d[["y", *regs, "c", *fes]].dropna()
    y0 = sub["y"].to_numpy(float)
    x = sub[regs].to_numpy(float)
    names = list(regs)
    if fes:
        dummies = np.column_stack([pd.get_dummies(sub[f].astype(str), dtype=float).to_numpy()
                                   for f in fes])
        m = np.eye(len(y0)) - dummies @ np.linalg.pinv(dummies)
        x = m @ x
        k_fe = np.linalg.matrix_rank(dummies)
    else:
        x = np.column_stack([np.ones(len(y0)), x])
        names = ["(Intercept)", *names]
        m = np.eye(len(y0))
        k_fe = 0
    # labels of different types are different clusters ('1' is not 1)
    cl = pd.factorize(np.array([f"{type(v).__name__}:{v}" for v in sub["c"]]))[0]
    g = int(cl.max()) + 1
    n, k = x.shape
    j = names.index("x1")
    nested = sum(sub[f].nunique() - 1 for f in fes
                 if (sub.groupby(f, observed=True)["c"].nunique() == 1).all())
    small = g / (g - 1) * (n - 1) / (n - (k + k_fe - nested))

    def fit(yy: np.ndarray) -> tuple[float, float]:
        yy = m @ yy
        b = np.linalg.lstsq(x, yy, rcond=None)[0]
        u = yy - x @ b
        bread = np.linalg.inv(x.T @ x)
        s = np.zeros((g, k))
        np.add.at(s, cl, x * u[:, None])
        v = small * bread @ (s.T @ s) @ bread
        return float(b[j]), float(np.sqrt(v[j, j]))

    est, se = fit(y0)
    if est != 0.0 and se <= np.sqrt(np.finfo(float).eps) * abs(est):
        return est, se, None, None  # a variance zero by construction: nothing to bootstrap
    t = (est - null) / se
    if impose_null:
        others = [c for c in range(k) if c != j]
        yd = m @ y0 - null * x[:, j]
        b_r = np.linalg.lstsq(x[:, others], yd, rcond=None)[0]
        yhat = x[:, others] @ b_r + null * x[:, j]
        centre = null
    else:
        yhat = x @ np.linalg.lstsq(x, m @ y0, rcond=None)[0]
        centre = est
    u = m @ y0 - yhat
    t_boot = []
    for v in wb._enumerate_rademacher(g).T:
        b_s, se_s = fit(yhat + u * v[cl])
        t_boot.append((b_s - centre) / se_s)
    t_boot = np.sort(t_boot)
    p = float(np.mean(np.abs(t_boot) > abs(t) * (1 + 1e-9)))
    return est, se, t_boot, p


def _residual_share(d: pd.DataFrame, regs: list[str], fes: list[str]) -> float:
    """The norm of the outcome's least-squares residual on the regressors and the
    fixed-effect dummies (an intercept without them) over the norm of the outcome
    centred: 0 up to rounding when the design fits every row."""
    sub = d[["y", *regs, "c", *fes]].dropna()
    y = sub["y"].to_numpy(float)
    cols = [sub[regs].to_numpy(float)]
    cols += ([pd.get_dummies(sub[f].astype(str), dtype=float).to_numpy() for f in fes]
             if fes else [np.ones((len(y), 1))])
    z = np.column_stack(cols)
    resid = y - z @ np.linalg.lstsq(z, y, rcond=None)[0]
    return float(np.linalg.norm(resid) / np.linalg.norm(y - y.mean()))


def _check(seed: int, cluster_kind: str, fes: list[str], two_regs: bool, null: float,
           impose_null: bool) -> None:
    d = _panel(seed, cluster_kind)
    regs = ["x1", "x2"] if two_regs else ["x1"]
    if _residual_share(d, regs, fes) < 1e-9:
        # a saturated design (e.g. 6 complete rows, 2 regressors and 4 fixed-effect
        # parameters): no standard error to bootstrap; refused, not a t from rounding
        with pytest.raises(InputError, match="fit the outcome exactly"):
            wb.wild_cluster_bootstrap(d, outcome="y", regressors=regs, cluster="c",
                                      term="x1", null=null, fixed_effects=fes,
                                      n_reps=9999, conf_int=False, impose_null=impose_null)
        return
    est, se, t_boot, p = _oracle(d, regs, fes, null, impose_null)
    if t_boot is None:
        # e.g. fixed effects nested in 2-3 clusters that make every cluster's score sum
        # zero: a standard error of rounding, refused as the estimators refuse it
        with pytest.raises(InputError, match="zero up to rounding"):
            wb.wild_cluster_bootstrap(d, outcome="y", regressors=regs, cluster="c",
                                      term="x1", null=null, fixed_effects=fes,
                                      n_reps=9999, conf_int=False, impose_null=impose_null)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = wb.wild_cluster_bootstrap(d, outcome="y", regressors=regs, cluster="c",
                                      term="x1", null=null, fixed_effects=fes,
                                      n_reps=9999, conf_int=False,
                                      impose_null=impose_null)
    assert r.enumerated
    assert r.estimate == pytest.approx(est, rel=1e-9, abs=1e-12)
    assert r.std_error == pytest.approx(se, rel=1e-9)
    np.testing.assert_allclose(np.sort(r.t_boot), t_boot, rtol=1e-8, atol=1e-10)
    assert r.p_value == p


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6),
       cluster_kind=st.sampled_from(["int", "object", "arrow", "category", "mixed"]),
       fes=st.sampled_from([[], ["f"], ["f", "h"]]), two_regs=st.booleans(),
       null=st.sampled_from([0.0, 0.3]), impose_null=st.booleans())
def test_wild_bootstrap_equals_refit_oracle(seed, cluster_kind, fes, two_regs, null,
                                            impose_null):
    _check(seed, cluster_kind, fes, two_regs, null, impose_null)


def _tiny(seed: int, fes: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 12))
    d = pd.DataFrame({"c": rng.integers(0, 3, n), "x1": rng.normal(size=n),
                      "f": rng.integers(0, 3, n), "h": rng.integers(0, 3, n),
                      "k": rng.integers(0, 3, n), "y": rng.normal(size=n)})
    return d


@pytest.mark.parametrize(("seed", "fes", "match"), [
    # saturated (8 rows, 1 + 7 parameters): was an SE of 2.3e-17 beside 0.21 and p = 0
    (6, ["f", "h", "k"], "no residual degrees of freedom"),
    # saturated, 6 rows: was ZeroDivisionError / "math domain error" from the
    # small-sample factor
    (27, ["f", "h", "k"], "no residual degrees of freedom"),
    (23, ["f", "h", "k"], "no residual degrees of freedom"),
])
def test_designs_without_residual_degrees_of_freedom_are_refused(seed, fes, match):
    d = _tiny(seed, fes)
    with pytest.raises(InputError, match=match) as err:
        wb.wild_cluster_bootstrap(d, outcome="y", regressors=["x1"], cluster="c",
                                  term="x1", fixed_effects=fes, n_reps=99, conf_int=False)
    assert "fit the outcome exactly" in str(err.value) and "Fix:" in str(err.value)


def test_a_standard_error_of_rounding_is_refused():
    """Residual variation left, but the cluster-robust variance is zero by construction
    (found by a scan of tiny designs: the estimate, its SE below 1e-8 of it): refused by
    the estimators' rounding rule instead of a p-value from rounding."""
    found = 0
    for seed in range(400):
        d = _tiny(seed, ["f"])
        if d["c"].nunique() < 2 or _residual_share(d, ["x1"], ["f"]) < 1e-9:
            continue  # (saturated designs: the test above)
        if _oracle(d, ["x1"], ["f"], 0.0, True)[2] is not None:
            continue
        found += 1
        with pytest.raises(InputError, match="zero up to rounding"):
            wb.wild_cluster_bootstrap(d, outcome="y", regressors=["x1"], cluster="c",
                                      term="x1", fixed_effects=["f"], n_reps=99,
                                      conf_int=False)
    assert found >= 3


def test_a_saturated_design_is_refused_not_given_a_p_value_from_rounding():
    """hypothesis seed 4130 found it: 9 rows, 3 of them missing a regressor, leave 6
    rows in 2 clusters for 2 regressors and fixed effects f (nested in the clusters) and
    h: every row is fitted, the CRV1 standard error was 2.7e-15 beside an estimate of
    5.5, the p-value 0.0 and the bootstrap t statistics ratios of rounding."""
    d = _panel(19792, "int")
    assert _residual_share(d, ["x1", "x2"], ["f", "h"]) < 1e-12
    for impose_null in (True, False):
        with pytest.raises(InputError, match="fit the outcome exactly") as err:
            wb.wild_cluster_bootstrap(d, outcome="y", regressors=["x1", "x2"], cluster="c",
                                      term="x1", fixed_effects=["f", "h"], n_reps=999,
                                      impose_null=impose_null)
        assert "6 complete rows" in str(err.value) and "Fix:" in str(err.value)
    # one fixed effect fewer leaves residual variation: fitted as before
    r = wb.wild_cluster_bootstrap(d, outcome="y", regressors=["x1", "x2"], cluster="c",
                                  term="x1", fixed_effects=["f"], n_reps=999,
                                  conf_int=False)
    assert np.isfinite(r.std_error) and r.std_error > 1e-6


@pytest.mark.parametrize("fes", [[], ["f", "h"]])
@pytest.mark.parametrize("cluster_kind", ["arrow", "mixed"])
def test_wild_bootstrap_row_blocks_of_seven_rows(monkeypatch, fes, cluster_kind):
    """Moments and R factors accumulated over many 7-row blocks (a ragged last one)."""
    monkeypatch.setattr(rowblocks, "BLOCK", 7)
    for seed in (3, 11):
        _check(seed, cluster_kind, fes, True, 0.3, True)
