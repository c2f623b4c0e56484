"""``import twinimpact`` is cheap; every public name still resolves (PEP 562 lazy API)."""

from __future__ import annotations

import json
import subprocess
import sys

import twinimpact as ti

HEAVY = ("numba", "statsmodels", "matplotlib", "duckdb", "linearmodels")


def _modules_after(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys\n"
         f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"],
        capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_twinimpact_loads_no_heavy_engine():
    assert _modules_after("import twinimpact") == []


def test_one_estimator_loads_only_what_it_needs():
    assert _modules_after("import twinimpact as ti; ti.synthetic_did; ti.event_study") == []
    loaded = _modules_after("import twinimpact as ti; ti.ppml; ti.etwfe")
    assert not {"matplotlib", "duckdb", "statsmodels"} & set(loaded)


def test_every_public_name_resolves_and_is_listed():
    for name in ti.__all__:
        obj = getattr(ti, name)
        assert obj is not None, name
    assert set(ti.__all__) <= set(dir(ti))
    assert ti.event_study.__module__ == "twinimpact.estimators.twfe"
    assert ti.errors.TwinImpactError.__module__ == "twinimpact.errors"


def test_unknown_name_is_an_attribute_error():
    try:
        ti.not_an_estimator  # noqa: B018
    except AttributeError as e:
        assert "not_an_estimator" in str(e)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_star_import_gives_the_public_api():
    ns: dict = {}
    exec("from twinimpact import *", ns)
    assert {"event_study", "ppml", "table", "run_study"} <= set(ns)


def test_a_result_and_its_p_values_do_not_import_scipy_stats():
    # results.py takes its distribution functions from scipy.special: scipy.stats alone
    # is ~61 MB of resident memory (the synthetic DiD row of benchmarks/RESULTS.md)
    code = (
        "import numpy as np, pandas as pd, sys, json\n"
        "import twinimpact as ti\n"
        "rng = np.random.default_rng(0)\n"
        "d = pd.DataFrame({'unit': np.repeat(np.arange(12), 8), 'year': np.tile(np.arange(8), 12)})\n"
        "d['treated'] = ((d.unit < 2) & (d.year >= 6)).astype(int)\n"
        "d['y'] = rng.normal(size=len(d)) + d.treated\n"
        "r = ti.synthetic_did(d, outcome='y', unit='unit', time='year', treated='treated',\n"
        "                     se='placebo', n_reps=20, seed=0)\n"
        "r.pvalues; r.conf_int(); r.to_frame()\n"
        "print(json.dumps('scipy.stats' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) is False
