"""The fixed-weights jackknife of synthetic DiD (Arkhangelsky et al. 2021, Algorithm 3)
in O(N T): :func:`jackknife_pseudovalues` from each unit's contrast ``Y_i' col`` and
leave-one-out updates of the omega-weighted and treated means, against the row-copy refit
it replaced (kept here as the oracle, verbatim but for its progress bar): every
pseudo-value to 1e-10, on fitted designs (SDID / SC / DID, one to three cohorts, a cohort
with a single treated unit, Prop 99, the sdid_quota panel) and on weight vectors built to
hit the edge cases (a control with all the weight, a weight exactly 1, more than half of
the weight on one control, weights not summing to one, all weights zero). With the "projected" covariate
adjustment the left-out projection comes from downdated normal equations: against the
per-unit re-projection and refit on both projection samples (SDID / SC / DID, one or two
covariates), and the refit itself where the covariates are collinear."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

import twinimpact.estimators.synthetic_did as sd_mod
from twinimpact.estimators._sdid_inference import (
    Group,
    aggregate,
    fit_design,
    jackknife_pseudovalues,
    replicate_vcov,
)
from twinimpact.estimators._sdid_solver import sum_normalize
from twinimpact.estimators.synthetic_did import _build_design, synthetic_did

from ..conftest import DATA

TOL = 1e-10


def _row_copy_jackknife(Y, N0, groups, fits):
    """The O(N^2 T) loop of main 074c1f5: copy the block without unit j, refit the
    contrast with lambda fixed and omega renormalised over the remaining controls."""
    N, T = Y.shape
    out = np.full((N, 1 + len(groups)), np.nan)
    all_ctrl = np.arange(N0)
    for j in range(N):
        ctrl = all_ctrl[all_ctrl != j]
        taus = np.full(len(groups), np.nan)
        n1 = np.zeros(len(groups))
        for g, (grp, fit) in enumerate(zip(groups, fits, strict=True)):
            rows = grp.rows[grp.rows != j]
            if len(rows) == 0:
                continue
            omega = sum_normalize(fit.omega[ctrl])
            Yg = Y[np.concatenate([ctrl, rows])]
            row = np.concatenate([-omega, np.full(len(rows), 1.0 / len(rows))])
            col = np.concatenate([-fit.lam, np.full(T - grp.a, 1.0 / (T - grp.a))])
            taus[g] = row @ Yg @ col
            n1[g] = len(rows)
        ok = ~np.isnan(taus)
        t1 = np.array([T - grp.a for grp in groups], dtype=float)
        att, _ = aggregate(taus[ok], n1[ok], t1[ok])
        out[j, 0] = att
        out[j, 1:] = taus
    return out


def _close(got, ref, tol=TOL):
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    ok = ~np.isnan(ref)
    scale = max(1.0, float(np.abs(ref[ok]).max())) if ok.any() else 1.0
    assert np.abs(got[ok] - ref[ok]).max(initial=0.0) <= tol * scale


def _panel(seed, N0, sizes, T=14, adopt=(9, 11, 12)):
    rng = np.random.default_rng(seed)
    N = N0 + sum(sizes)
    f = rng.normal(size=(N, 2)) @ rng.normal(size=(2, T))
    Y = f + rng.normal(scale=0.5, size=(N, T)) + rng.normal(size=(N, 1)) * 3
    groups, start = [], N0
    for k, a in zip(sizes, adopt, strict=False):
        groups.append(Group(a=a, rows=np.arange(start, start + k)))
        start += k
    return Y, N0, groups


DESIGNS = [(seed, N0, sizes) for seed, (N0, sizes) in enumerate(
    [(30, (4,)), (30, (2,)), (25, (3, 5)), (40, (1, 6)), (20, (2, 2, 3)),
     (12, (1, 1, 4)), (50, (10,)), (8, (3, 1))])]


@pytest.mark.parametrize("method", ["sdid", "sc", "did"])
@pytest.mark.parametrize("seed, N0, sizes", DESIGNS)
def test_fitted_designs_match_the_row_copy_refit(seed, N0, sizes, method):
    Y, N0, groups = _panel(seed, N0, sizes)
    fits, _ = fit_design(Y, np.arange(N0), groups, method)
    ref = _row_copy_jackknife(Y, N0, groups, fits)
    got = jackknife_pseudovalues(Y, N0, groups, fits)
    _close(got, ref)
    ok = ~np.isnan(ref).any(axis=0)
    _close(np.sqrt(np.diag(replicate_vcov(got, "jackknife"))),
           np.sqrt(np.diag(replicate_vcov(ref, "jackknife"))))
    assert ok[0]


def _edge_omegas(N0, rng):
    w = rng.dirichlet(np.ones(N0))
    one = np.zeros(N0)
    one[3] = 1.0                                         # one control, weight exactly 1
    heavy = w * 0.1
    heavy[5] += 0.9                                      # > half the weight on one
    near = np.full(N0, 1e-9)
    near[2] = 1.0 - (N0 - 1) * 1e-9                      # nearly all on one control
    two = np.zeros(N0)
    two[[1, 4]] = [0.5, 0.5]                             # two controls, half each
    return {"dirichlet": w, "one": one, "heavy": heavy, "near": near, "two": two,
            "unnormalised": w * 0.7, "zero": np.zeros(N0),
            "uniform": np.full(N0, 1.0 / N0)}


@pytest.mark.parametrize("which", ["dirichlet", "one", "heavy", "near", "two",
                                   "unnormalised", "zero", "uniform"])
@pytest.mark.parametrize("sizes", [(5,), (3, 1), (2, 4, 3)])
def test_edge_weights_match_the_row_copy_refit(sizes, which):
    Y, N0, groups = _panel(7, 15, sizes)
    fits, _ = fit_design(Y, np.arange(N0), groups, "sdid")
    rng = np.random.default_rng(3)
    fits = [dataclasses.replace(f, omega=_edge_omegas(N0, rng)[which]) for f in fits]
    _close(jackknife_pseudovalues(Y, N0, groups, fits),
           _row_copy_jackknife(Y, N0, groups, fits))


def test_large_levels():
    """SC (lambda = 0: the contrasts keep the units' levels, 1e4 here)."""
    Y, N0, groups = _panel(11, 20, (3, 2))
    Y = Y + 1e4
    fits, _ = fit_design(Y, np.arange(N0), groups, "sc")
    _close(jackknife_pseudovalues(Y, N0, groups, fits),
           _row_copy_jackknife(Y, N0, groups, fits))


def _design_fits(df, cols, method="sdid"):
    d = _build_design(df, cols["outcome"], cols["unit"], cols["time"], cols["treated"],
                      None, method)
    Y = d.Y.to_numpy()
    fits, _ = fit_design(Y, np.arange(d.N0), d.groups, method)
    return Y, d.N0, d.groups, fits


@pytest.mark.parametrize("method", ["sdid", "sc", "did"])
def test_reference_panels_match_the_row_copy_refit(method):
    """Prop 99 (one treated unit: every pseudo-value of California's own cohort NaN) and
    the sdid_quota panel (staggered, cohorts of one treated country)."""
    p99 = pd.read_csv(DATA / "synthdid_prop99" / "california_prop99.csv", sep=";")
    quota = pd.read_csv(DATA / "sdid_quota" / "quota_example.csv.gz")
    for df, cols in (
            (p99, dict(outcome="PacksPerCapita", unit="State", time="Year",
                       treated="treated")),
            (quota, dict(outcome="womparl", unit="country", time="year", treated="quota"))):
        Y, N0, groups, fits = _design_fits(df, cols, method)
        ref = _row_copy_jackknife(Y, N0, groups, fits)
        _close(jackknife_pseudovalues(Y, N0, groups, fits), ref)


def test_public_se_equals_the_oracle_variance():
    quota = pd.read_csv(DATA / "sdid_quota" / "quota_example.csv.gz")
    cols = dict(outcome="womparl", unit="country", time="year", treated="quota")
    res = synthetic_did(quota, **cols, se="jackknife")
    Y, N0, groups, fits = _design_fits(quota, cols)
    ref = _row_copy_jackknife(Y, N0, groups, fits)
    se = float(np.sqrt(replicate_vcov(ref, "jackknife")[0, 0]))
    assert float(res.std_errors["ATT"]) == pytest.approx(se, rel=TOL)
    _close(res.replicates, ref)


def test_a_wrong_formula_would_fail():
    """The oracle is sensitive: renormalising omega by sum(omega) instead of the
    remaining controls' sum moves the pseudo-values far beyond the tolerance."""
    Y, N0, groups = _panel(2, 25, (3, 5))
    fits, _ = fit_design(Y, np.arange(N0), groups, "sdid")
    ref = _row_copy_jackknife(Y, N0, groups, fits)
    got = jackknife_pseudovalues(Y, N0, groups, fits)
    wrong = got.copy()
    om = fits[0].omega
    j = int(np.argmax(om))
    cols = np.concatenate([-fits[0].lam, np.full(14 - 9, 1.0 / 5)])
    c = Y[:N0] @ cols
    wrong[j, 1] = ref[j, 1] + (om @ c - om[j] * c[j]) / (1 - om[j]) - (om @ c - om[j] * c[j])
    with pytest.raises(AssertionError):
        _close(wrong, ref)


# ---------------------------------------------------------------------- covariates
def _cov_panel(seed, n=30, T=12):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n):
        a = 7 if u < 3 else (9 if u < 5 else None)
        for t in range(T):
            x = rng.normal() + 0.1 * t * (u % 3)
            x2 = rng.normal()
            y = u % 4 + 0.3 * t + 0.8 * x - 0.5 * x2 + rng.normal(0, 0.3)
            w = int(a is not None and t >= a)
            rows.append((f"c{u:02d}", 2000 + t, y + 1.5 * w, w, x, x2))
    return pd.DataFrame(rows, columns=["city", "year", "y", "w", "x", "x2"])


def _projected_both_ways(df, kw, monkeypatch):
    """(fast, refit) results: the normal-equation downdate, and the per-unit
    re-projection + refit with fixed weights it replaces (the oracle)."""
    calls = []
    fast_fn = sd_mod.BlockFitter._jackknife_projected

    def counted(self):
        out = fast_fn(self)
        calls.append(out is not None)
        return out

    with monkeypatch.context() as m:
        m.setattr(sd_mod.BlockFitter, "_jackknife_projected", counted)
        fast = synthetic_did(df, se="jackknife", **kw)
    with monkeypatch.context() as m:
        m.setattr(sd_mod.BlockFitter, "_jackknife_projected", lambda self: None)
        ref = synthetic_did(df, se="jackknife", **kw)
    return fast, ref, calls


def _projected_cases():
    quota = dict(outcome="womparl", unit="country", time="year", treated="quota",
                 covariates="lngdp", covariate_method="projected")
    small = dict(outcome="y", unit="city", time="year", treated="w",
                 covariate_method="projected")
    out = []
    for ps in ("never_treated", "not_yet_treated"):
        out.append(pytest.param("quota", {**quota, "projection_sample": ps},
                                id=f"quota-{ps}"))
        for seed, method, covs in ((0, "sdid", ["x", "x2"]), (1, "sc", "x"),
                                   (2, "did", ["x", "x2"]), (3, "sdid", "x")):
            out.append(pytest.param(seed, {**small, "covariates": covs, "method": method,
                                           "projection_sample": ps},
                                    id=f"small{seed}-{method}-{ps}"))
    return out


@pytest.mark.filterwarnings("ignore::twinimpact.errors.NotComputableWarning")
@pytest.mark.filterwarnings("ignore::twinimpact.errors.DroppedRowsWarning")
@pytest.mark.parametrize("data, kw", _projected_cases())
def test_projected_covariates_match_the_per_unit_reprojection(data, kw, monkeypatch):
    df = (pd.read_csv(DATA / "sdid_quota" / "quota_example.csv.gz") if data == "quota"
          else _cov_panel(data))
    fast, ref, calls = _projected_both_ways(df, kw, monkeypatch)
    assert calls == [True]                       # the downdate ran, no fallback
    _close(fast.replicates, ref.replicates)
    _close(fast.std_errors.to_numpy(), ref.std_errors.to_numpy())
    assert float(fast.params["ATT"]) == float(ref.params["ATT"])


@pytest.mark.filterwarnings("ignore::twinimpact.errors.NotComputableWarning")
def test_projected_collinear_covariate_falls_back_to_the_refit(monkeypatch):
    """A time-invariant covariate is collinear with the unit effects: least squares
    takes the minimum-norm solution, the normal equations cannot -- the per-unit refit
    runs instead, and the numbers are the refit's."""
    df = _cov_panel(1)
    df["xc"] = df["city"].str[1:].astype(float)
    kw = dict(outcome="y", unit="city", time="year", treated="w", covariates=["x", "xc"],
              covariate_method="projected")
    fast, ref, calls = _projected_both_ways(df, kw, monkeypatch)
    assert calls == [False]
    _close(fast.replicates, ref.replicates, tol=0.0)
