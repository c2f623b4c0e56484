"""Poisson fast paths against plain fits and an independent oracle (issue 13, fuzz).

* ``irls_poisson``'s collinearity check: the first IRLS iteration judges the regressors
  on columns swept only to the loose inner tolerance (1e-4), so a regressor absorbed by
  the fixed effects can pass it. Poisson ETWFE always passes such a regressor (the
  treated indicator, absorbed by the cell fixed effect) with ``tol=1e-12``: kept, its
  rounding residue got a coefficient of ~1e15 and fitted noise, the deviance drifted
  below the model's minimum and the cell estimates were off by up to 0.5 (finite
  numbers, under a warning saying they were NaN). Oracle: the same fit without the
  absorbed column; statsmodels' Poisson GLM on dummy variables.
* Poisson ETWFE whose IRLS did not converge reports NaN (as ppml), not the FWL step at
  the last iterate's weights.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinimpact.errors import ConvergenceWarning, EstimationError
from twinimpact.estimators import etwfe as etwfe_mod
from twinimpact.estimators._ppml_kernel import WeightedFE, irls_poisson


def _cell_panel(seed: int):
    """Unit x period panel with staggered adoption: unit, period and cohort x period cell
    codes (the cell of untreated rows is one level), counts, and the treated indicator
    (absorbed by the cell codes)."""
    rng = np.random.default_rng(seed)
    n_units, n_periods = int(rng.integers(8, 30)), int(rng.integers(3, 8))
    u = np.repeat(np.arange(n_units), n_periods)
    t = np.tile(np.arange(n_periods), n_units)
    g = rng.choice([-1, *range(1, n_periods)], n_units)[u]
    treated = (g >= 0) & (t >= g)
    cell = np.unique(np.where(treated, g * n_periods + t, -1), return_inverse=True)[1]
    y = rng.poisson(np.exp(-1.0 + 0.3 * treated + rng.normal(size=n_units)[u]))
    for c in (u, t, cell):  # a positive outcome in every fixed-effect level
        first = np.unique(c, return_index=True)[1]
        y[first] = np.maximum(y[first], 1)
    codes = [u.astype(np.int32), t.astype(np.int32), cell.astype(np.int32)]
    return y.astype(float), treated.astype(float)[:, None], codes, g


def _check_absorbed_column_changes_nothing(seed: int, tol: float) -> None:
    y, x, codes = _cell_panel(seed)[:3]
    ref = irls_poisson(y, np.zeros((len(y), 0)), WeightedFE(codes), tol=1e-13, maxiter=100)
    if not (ref.converged and ref.demean_converged):  # separated / nearly separated
        # draws (no MLE, projections that do not converge): not this test's business
        return
    fit = irls_poisson(y, x, WeightedFE(codes), tol=tol, maxiter=100)
    assert fit.converged
    assert not fit.kept.any()
    assert fit.deviance == pytest.approx(ref.deviance, rel=1e-9)
    np.testing.assert_allclose(fit.mu, ref.mu, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("seed", [32, 126, 164, 172])  # each failed before the fix
def test_absorbed_regressor_is_dropped_before_it_fits_noise(seed):
    _check_absorbed_column_changes_nothing(seed, 1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 100_000), tol=st.sampled_from([1e-8, 1e-12]))
def test_absorbed_regressor_property(seed, tol):
    _check_absorbed_column_changes_nothing(seed, tol)


def _frame(seed: int) -> pd.DataFrame:
    y, _, codes, g = _cell_panel(seed)
    u, t = codes[0], codes[1]
    return pd.DataFrame({"id": u, "year": 2000 + t, "g": np.where(g >= 0, 2000 + g, 0),
                         "y": y})


def _glm_oracle(d: pd.DataFrame, names: list[str]) -> np.ndarray:
    """Cell coefficients of statsmodels' Poisson GLM on cell, unit and year dummies."""
    import statsmodels.api as sm

    g, t = d["g"].to_numpy(float), d["year"].to_numpy(float)
    cols = {}
    for nm in names:  # "ATT(g,t)"
        gg, tt = (float(v) for v in nm[4:-1].split(","))
        cols[nm] = ((g == gg) & (t == tt)).astype(float)
    x = pd.concat([pd.DataFrame(cols), pd.get_dummies(d["id"], prefix="u", dtype=float),
                   pd.get_dummies(d["year"], prefix="t", dtype=float).iloc[:, 1:]], axis=1)
    m = sm.GLM(d["y"].to_numpy(float), x, family=sm.families.Poisson()).fit(
        tol=1e-13, maxiter=500)
    return m.params[names].to_numpy()


@pytest.mark.parametrize("seed", [32, 126, 164, 172])
def test_poisson_etwfe_equals_dummy_glm_and_converges(seed):
    d = _frame(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=".*clusters")
        r = etwfe_mod.etwfe(d, outcome="y", unit="id", time="year", cohort="g",
                            family="poisson")
        shuffled = etwfe_mod.etwfe(d.sample(frac=1.0, random_state=seed), outcome="y",
                                   unit="id", time="year", cohort="g", family="poisson")
    assert r.diagnostics["converged"]
    assert not r.diagnostics["dropped_rows"]
    est = r.params.to_numpy()
    assert np.isfinite(est).all()
    np.testing.assert_allclose(est, _glm_oracle(d, list(r.params.index)), atol=1e-7)
    np.testing.assert_allclose(shuffled.params.to_numpy(), est, rtol=1e-9, atol=1e-12)


def test_poisson_etwfe_not_converged_is_nan(monkeypatch):
    """An IRLS solve stopped by maxiter: NaN cells and variance (ppml's own params are NaN
    and the re-emitted warning says so), a note, and aggregation refused."""
    d = _frame(32)
    monkeypatch.setattr(etwfe_mod, "ppml", functools.partial(etwfe_mod.ppml, maxiter=2))
    with pytest.warns(ConvergenceWarning, match="estimates are NaN"):
        r = etwfe_mod.etwfe(d, outcome="y", unit="id", time="year", cohort="g",
                            family="poisson")
    assert np.isnan(r.params.to_numpy()).all()
    assert np.isnan(np.asarray(r.vcov)).all()
    assert any("did not converge" in n for n in r.diagnostics["notes"])
    with pytest.raises(EstimationError, match="did not converge"):
        r.aggregate("simple")
