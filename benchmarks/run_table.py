"""One command for the whole speed table: twinimpact against the fastest Python peer.

Every (case, package, panel, size, thread setting) runs in its own child process: the
panel is generated there (deterministic, :mod:`panels`), one untimed warm-up fit (imports,
numba JIT, caches), then ``--repeats`` timed fits (see ``BIG`` and ``SMALL_WARMUP`` for
the large panels: warm-up on a 1e5-row panel in the same process); the child reports the
median wall time, the median CPU time of the process (``time.process_time``: the figure
that survives a loaded machine) and its user / system split (``getrusage``; system time
is mostly the kernel faulting in fresh pages of large temporaries), the peak resident set size (``ru_maxrss``, includes the data and the interpreter) and the RSS
right after the data were made, and the peak RSS from then on (``peak_fit_mb``: the kernel's
peak mark is reset after the panel is made, so ``peak_fit - data`` is the estimator's own
footprint even where the generator's temporaries set ``peak_mb``).
Children run with an address-space cap (``--mem-cap-gb``, RLIMIT_AS) so a runaway case
fails alone instead of pushing the shared machine out of memory; a case that fails or
runs out of memory is reported as such.

Threads: ``--threads 1`` sets ``OPENBLAS/OMP/MKL/NUMBA_NUM_THREADS=1`` in the child;
``--threads default`` removes those variables (what a user gets). ``--threads both`` runs
each case twice.

The claim is the ratio ``peer median / twinimpact median`` measured in the same run (and
``peer peak / twinimpact peak`` for memory), not the absolute times (the machine is shared).

Setup (peers never go into twinimpact's environment)::

    python -m venv /tmp/venv-peers
    /tmp/venv-peers/bin/pip install pyfixest diff-diff wildboottest pyarrow

Run (from the repository root; twinimpact runs in the current interpreter with
``PYTHONPATH=src``, peers in ``--peer-python``)::

    python benchmarks/run_table.py                       # the default table
    # every row of RESULTS.md's top table, 1e5 -> 1e7 rows (hours; --list shows the steps):
    python benchmarks/run_table.py --whole-table --lock /work/bench.lock --run-id WT \
        --jsonl benchmarks/results_wholetable.jsonl --out benchmarks/results_wholetable.md
    python benchmarks/run_table.py --from-jsonl benchmarks/results_wholetable.jsonl --summary
    python benchmarks/run_table.py --cases event_study --sizes 1e5 1e6 --panels unbalanced
    python benchmarks/run_table.py --list                # cases, panels and peers
    # weighted / Driscoll-Kraay / covariate event study, with bytes per row at the peak:
    python benchmarks/run_table.py --cases event_study_w event_study_dk --tracemalloc
    # scaling to 1e8 rows (alone on the machine, one process per size, capped):
    flock /work/bench.lock python benchmarks/run_table.py --cases event_study --big \
        --sizes 1e5 1e6 1e7 1e8 --panels balanced unbalanced --threads 1 --no-peers \
        --mem-cap-gb 20

Runs at >= 1e6 rows on a shared machine: ``--lock /work/bench.lock`` takes that flock(2)
lock around each child of at least ``--lock-from`` rows (default 1e6) and releases it
between children (so every locked hold is one child, and other jobs get the lock in
between; ``--lock-hold S`` keeps it across children for up to S seconds, which saves
queueing for it again on a busy machine); ``lock_wait_s`` records the wait. ``--peer-repeats 1`` times a slow peer once
while twinimpact keeps ``--repeats``. ``--big-repeats N`` times N fits (same child, same panel)
where a twinimpact child times one by default (imputation and did2s from 5e6 rows), so an
exponent up to 1e7 rows rests on medians at every size; every child also keeps each timed
fit's CPU / user / system time (``cpu_times``, ``user_times``, ``sys_times``: the spread) and
the load averages when it started and ended (``loadavg_child``).

Results are appended as JSON lines to ``--jsonl`` and the markdown table is written to
``--out`` (default ``benchmarks/results_table.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


# ----------------------------------------------------------------------------- panels
#: from this many rows on a run is "big": it needs --big, the panel comes from the lean
#: generator (panels.lean_staggered_panel: unit, year, cohort, y only, made in place), the
#: warm-up fit runs on a 1e5-row panel in the same process, and one timed fit follows
BIG_ROWS = 3e7


def _panel(case: str, kind: str, size: float):
    sys.path.insert(0, str(HERE))
    import numpy as np
    import pandas as pd
    import panels

    if case in ("event_study", "imputation", "did2s", "cs", "sun_abraham"):
        return panels.make(kind, size, lean=size >= BIG_ROWS)
    if case in CS_OPTION_CASES or case in SA_OPTION_CASES:
        return _with_covariate(case, panels.make(kind, size))
    if case in ES_OPTION_CASES:
        # the event study with an option: observation weights (uniform 0.5-1.5, one per
        # row), Driscoll-Kraay (same panels), a covariate (normal, trending in the year)
        d = panels.make(kind, size)
        rng = np.random.default_rng(11)
        if case == "event_study_w":
            d["w"] = rng.uniform(0.5, 1.5, len(d))
        if case == "event_study_x":
            d["x"] = rng.normal(size=len(d)) + 0.05 * (d["year"] - d["year"].min())
        return d
    if case in SDID_CASES:
        # size = "N x T" encoded as N*1000+T; "balanced" (issue 13's panel): 10% treated
        # units, treated in the last quarter; other kinds: panels.SDID_KINDS (block designs
        # with interactive factors: 1 / 5 / 10% / 20% treated, half the periods post, noise)
        n_units, t = int(size) // 1000, int(size) % 1000
        if kind in panels.SDID_KINDS:
            return panels.sdid_panel(n_units, t, **panels.SDID_KINDS[kind])
        d = panels.staggered_panel(n_units * t, n_periods=t, n_cohorts=1,
                                   treated_units=max(2, n_units // 10), key="int", seed=1)
        g = int(d["year"].min()) + (3 * t) // 4
        d["cohort"] = np.where(d["cohort"] > 0, g, 0)
        d["treated"] = ((d["cohort"] > 0) & (d["year"] >= g)).astype(np.int64)
        if kind != "balanced":
            raise SystemExit("sdid needs a balanced panel")
        return d
    if case in HONEST_CASES or case in HONEST_LIKE_CASES:
        # one cohort, 5 pre (besides the reference) and 10 post periods; kind: rows missing
        kw = {k: v for k, v in panels.PANEL_KINDS[kind].items()
              if k not in ("n_periods", "n_cohorts")}
        d = panels.staggered_panel(size, n_periods=16, n_cohorts=1, never_share=0.5, seed=2,
                                   **kw)
        g = int(d["year"].min()) + 6
        d["cohort"] = np.where(d["cohort"] > 0, g, 0)
        d["rel_time"] = np.where(d["cohort"] > 0, d["year"] - g, -1)
        d["treated"] = ((d["cohort"] > 0) & (d["year"] >= g)).astype(np.int64)
        return d
    if case in ("wild", "wild_p"):
        # 50 clusters; "balanced": about n/50 rows each; "unequal": cluster sizes
        # proportional to 1/rank (the largest holds 22% of the rows, the smallest 0.4%)
        rng = np.random.default_rng(3)
        n = int(size)
        if kind == "unequal":
            share = 1.0 / np.arange(1, 51)
            g = rng.choice(50, size=n, p=share / share.sum())
        elif kind == "balanced":
            g = rng.integers(0, 50, size=n)
        elif kind == "gaps_str":
            # an unbalanced unit x year panel (panels "gaps": 20% of units with a 2-4-year
            # hole, 2% of rows missing at random; string unit ids), units nested in 50
            # clusters with string ids ("s00".."s49"): cluster sizes vary with the gaps
            p = panels.make("gaps", size, key="str")
            code = pd.factorize(p["unit"])[0]
            g = rng.integers(0, 50, size=code.max() + 1)[code]
            n = len(p)
            x = rng.normal(size=n) + 0.3 * rng.normal(size=50)[g]
            y = p["y"].to_numpy() + 0.05 * x + rng.normal(size=50)[g]
            names = [f"s{k:02d}" for k in range(50)]
            return pd.DataFrame({"y": y, "x": x, "g": panels.str_column(names, g),
                                 "unit": p["unit"], "year": p["year"]})
        else:
            raise SystemExit(f"wild panels: balanced, unequal, gaps_str (got {kind})")
        x = rng.normal(size=n) + 0.3 * rng.normal(size=50)[g]
        y = 0.05 * x + rng.normal(size=50)[g] + rng.normal(size=n)
        return pd.DataFrame({"y": y, "x": x, "g": g})
    if case in ("ppml",):
        # dense gravity, size = rows before removals; cube root countries x years
        c = round(size ** (1 / 3))
        if kind == "lean":  # compact columns, made year by year (for 1e8 rows)
            return panels.gravity_panel_lean(c, c, c, zeros=0.2)
        return panels.gravity_panel(c, c, c, **{"zeros": 0.2, **GRAVITY_KINDS[kind]})
    if case == "etwfe_pois":
        return _etwfe_gravity(kind, size)
    raise SystemExit(f"unknown case {case}")


#: Poisson ETWFE gravity design (issue 10 item 5): a century of annual flows (100 years),
#: exporter x importer dense (countries = sqrt(rows / 100): 100 at 1e6, 316 at 1e7), 30%
#: of pairs treated in 8 adoption waves over the last quarter-century -> 108 cohort x year
#: cells at every size. Variants: no zeros, 20% zeros, 10% of rows missing at random.
ETWFE_POIS_PANELS = {"dense": {"zeros": 0.0}, "zeros20": {"zeros": 0.2},
                     "unbalanced": {"zeros": 0.0, "miss_random": 0.1}}


def _etwfe_gravity(kind: str, size: float):
    import numpy as np
    import panels

    c = round((size / 100) ** 0.5)
    d = panels.gravity_panel(c, c, 100, n_cohorts=8, cohort_from=0.75, treated_pairs=0.3,
                             **ETWFE_POIS_PANELS[kind])
    post = (d["cohort"] > 0) & (d["year"] >= d["cohort"])
    # the saturated cells as one categorical for the peer (0 = untreated reference)
    d["cell"] = np.where(post, d["cohort"] * 10_000 + d["year"], 0)
    return d


#: ppml panel variants: kind -> keyword arguments of panels.gravity_panel (20% zeros unless
#: said otherwise)
GRAVITY_KINDS: dict[str, dict] = {
    "dense": {},
    "zeros0": {"zeros": 0.0},
    "zeros50": {"zeros": 0.5},
    "strkey": {"key": "str"},
    "missing10": {"miss_random": 0.1},
    "late_pairs": {"late_pairs": 0.3},
    "x2": {"extra_regressor": True},
}


#: the TWFE event study with the options that used to build the dense (n, k) design:
#: weights (fixest ``weights = ~w``), Driscoll-Kraay (fixest/pyfixest ``vcov = "DK"``, lag
#: ``DK_LAG`` on both sides) and a covariate; values compared: coefficients and SEs
ES_OPTION_CASES = ("event_study_w", "event_study_dk", "event_study_x")
#: Driscoll-Kraay lags (our default for the panels' 10 periods: floor(4 (10/100)^(2/9)))
DK_LAG = 2

#: Callaway-Sant'Anna with the options the earlier rows did not measure (csopts helper):
#: a time-invariant covariate (R ``xformla = ~x``) under ``method`` dr / ipw / reg (diff-diff
#: ``estimation_method``), not-yet-treated controls with the varying and the universal base
#: period, and the multiplier bootstrap (``CS_BOOT_REPS`` Mammen draws on both sides,
#: diff-diff ``n_bootstrap`` / ``bootstrap_weights="mammen"``); each + the dynamic
#: aggregation (timed); values compared: the simple ATT and its SE
CS_OPTION_CASES = {
    "cs_x_dr": {"covariates": ["x"], "method": "dr"},
    "cs_x_ipw": {"covariates": ["x"], "method": "ipw"},
    "cs_x_reg": {"covariates": ["x"], "method": "reg"},
    "cs_nyt": {"control_group": "not_yet_treated"},
    "cs_nyt_univ": {"control_group": "not_yet_treated", "base_period": "universal"},
    "cs_boot": {"n_reps": 999, "seed": 0},
}
CS_BOOT_REPS = 999
#: Sun-Abraham with a time-varying covariate (fixest ``y ~ x + sunab(cohort, year)``);
#: peers diff-diff ``SunAbraham(covariates=["x"])`` and pyfixest (no ``sunab`` in 0.60: the
#: same saturated cell regression ``y ~ i(cell, ref=0) + x | unit + year``, clustered by
#: unit, and the ATT as the row-count-weighted mean of its post-treatment cells, fixest's
#: ``agg = "ATT"``, with its delta-method SE; the cell column is made before the timing)
SA_OPTION_CASES = ("sa_x",)


def _with_covariate(case: str, d):
    """The panel with a covariate ``x``: for Callaway-Sant'Anna one value per unit (time
    invariant, R did's ``xformla``), shifted by 0.5 for ever-treated units (propensity
    scores 0.04-0.66 in a 7-cohort cell; below 0.01 in some of the 24 small cohorts,
    where diff-diff's default ``pscore_trim=0.01`` clips them and R did does not) and with
    a trend ``0.2 x (year - first year)`` in ``y`` (parallel trends hold given x only); for
    Sun-Abraham time varying (the unit's value + noise each period) with ``0.5 x`` in
    ``y``. Made before the timing; deterministic given the panel."""
    import numpy as np
    import pandas as pd

    codes = pd.factorize(d["unit"])[0]
    rng = np.random.default_rng(5)
    xu = rng.normal(size=int(codes.max()) + 1)[codes]
    ever = (d["cohort"].to_numpy() > 0)
    year0 = d["year"].to_numpy() - d["year"].min()
    if case in SA_OPTION_CASES:
        x = xu + 0.5 * ever + rng.normal(size=len(d))
        d["x"] = x
        d["y"] = d["y"].to_numpy() + 0.5 * x
        post = ever & (d["rel_time"].to_numpy() >= 0)
        # fixest's cell column for the pyfixest peer: 0 = never treated or rel_time -1
        cell = np.where(ever & (d["rel_time"].to_numpy() != -1),
                        d["cohort"].to_numpy() * 1000 + d["rel_time"].to_numpy() + 100, 0)
        d["cell"] = cell
        d["post_cell"] = post
        return d
    if CS_OPTION_CASES[case].get("covariates"):
        d["x"] = xu + 0.5 * ever
        d["y"] = d["y"].to_numpy() + 0.2 * d["x"].to_numpy() * year0
    return d


#: HonestDiD cases (5 pre + 10 post event study, 10 values of M): relative magnitudes with
#: our default (adaptive) grid, with R's grid exactly, and smoothness (optimal FLCI)
HONEST_CASES = ("honest_rm", "honest_rm_r", "honest_sd")
#: HonestDiD relative magnitudes like for like with the Python ports of R HonestDiD's
#: ``computeConditionalCS_DeltaRM`` (moderndid, honestdid): the same betahat / sigma (our
#: event study, passed as arrays to every package), R's grid (1000 points on +/- 20 standard
#: deviations of theta around 0: our ``grid="r"``, the ports' ``grid_lb``/``grid_ub``),
#: Mbar = 0..2 (10 values), theta = first post period; C-LF (R's default, 1000
#: least-favourable draws, seed 0) and the conditional (ARP) test. The ports solve one LP
#: per grid point and per draw (minutes): warm-up on a 20-point grid at one Mbar, then
#: one timed run. Our child also reports our bounds under each port's own draws
#: (``values_draws``; the draws are the only thing that differs, see ``_PORT_DRAWS``).
HONEST_LIKE_CASES = ("honest_rm_like", "honest_rm_cond_like")
#: where each HonestDiD port runs (throwaway venvs; moderndid 0.4.1 needs Python >= 3.12)
PORT_PYTHON = {"moderndid": "/tmp/venv-md12/bin/python",
               "honestdid": "/tmp/venv-hdid/bin/python"}
#: synthetic DiD: placebo SE (issue 13 row) and the unit bootstrap SE; size = units x 1000 + periods
SDID_CASES = ("sdid", "sdid_boot")
HONEST_RM_MBAR = (0.0, 2.0, 10)  # np.linspace arguments; R's default Mbarvec
#: Delta^SD M values: 0 to 1.5 (R's default upper end for the balanced panel is 1.487:
#: the largest upper 95% bound of a pre-period second difference)
HONEST_SD_M = (0.0, 1.5, 10)


# ----------------------------------------------------------------------------- fits
def _fit_fn(case: str, pkg: str, d):
    import numpy as np
    import pandas as pd

    warnings.simplefilter("ignore")
    if pkg == "twinimpact":
        import twinimpact as ti
        kw = dict(outcome="y", unit="unit", time="year", cohort="cohort")
        if case == "event_study":
            return lambda: ti.event_study(d, **kw).params.to_numpy()
        if case in ES_OPTION_CASES:
            opt = {"event_study_w": {"weights": "w"},
                   "event_study_dk": {"vcov": "driscoll_kraay", "bandwidth": DK_LAG},
                   "event_study_x": {"covariates": ["x"]}}[case]

            def f():
                r = ti.event_study(d, **kw, **opt)
                return np.r_[r.params.to_numpy()[:-1], r.std_errors.to_numpy()[:-1]]
            return f
        if case == "imputation":
            return lambda: ti.imputation(d, **kw, horizons=True).params.to_numpy()
        if case == "did2s":
            return lambda: ti.did2s(d, **kw, event_study=True).params.to_numpy()
        if case == "cs":
            # never-treated controls, DR, no covariate, + the dynamic aggregation (timed);
            # R did's unbalanced-panel path only when rows are missing
            unb = _unbalanced(d)
            def f():
                r = ti.callaway_santanna(d, **kw, allow_unbalanced_panel=unb)
                r.aggregate("dynamic")
                return r.aggregate("simple").params.to_numpy()
            return f
        if case == "sun_abraham":
            return lambda: ti.sun_abraham(d, **kw, cluster="unit").aggregate(
                "simple").params.to_numpy()
        if case in CS_OPTION_CASES:
            unb = _unbalanced(d)
            opt = CS_OPTION_CASES[case]

            def f():
                r = ti.callaway_santanna(d, **kw, allow_unbalanced_panel=unb, **opt)
                r.aggregate("dynamic")
                s = r.aggregate("simple")
                return np.r_[s.params.to_numpy(), s.std_errors.to_numpy()]
            return f
        if case in SA_OPTION_CASES:
            def f():
                s = ti.sun_abraham(d, **kw, covariates=["x"], cluster="unit").aggregate(
                    "simple")
                return np.r_[s.params.to_numpy(), s.std_errors.to_numpy()]
            return f
        if case in SDID_CASES:
            se = "bootstrap" if case == "sdid_boot" else "placebo"
            return lambda: np.array([ti.synthetic_did(
                d, outcome="y", unit="unit", time="year", treated="treated", se=se,
                n_reps=200, seed=0).std_errors.iloc[0]])
        if case in HONEST_CASES:
            res = ti.event_study(d, **kw)
            hkw = {"restriction": "smoothness", "m_values": np.linspace(*HONEST_SD_M)} \
                if case == "honest_sd" else {"m_values": np.linspace(*HONEST_RM_MBAR)}
            if case == "honest_rm_r":
                hkw["grid"] = "r"  # R's grid exactly (no re-centring/widening)
            # first post period (R's default l_vec); the "Original" row is dropped
            return lambda: ti.honest_did(res, num_pre=5, num_post=10, **hkw
                                         ).iloc[1:][["lb", "ub"]].to_numpy().ravel()
        if case in HONEST_LIKE_CASES:
            beta, sigma = _honest_inputs(ti.event_study(d, **kw), d)
            meth = "C-LF" if case == "honest_rm_like" else "Conditional"
            return lambda: ti.honest_did(beta, sigma, num_pre=5, num_post=10, grid="r",
                                         m_values=np.linspace(*HONEST_RM_MBAR), method=meth
                                         ).iloc[1:][["lb", "ub"]].to_numpy().ravel()
        if case in ("wild", "wild_p"):
            extra = {"conf_int": False} if case == "wild_p" else {}
            def f():
                r = ti.wild_cluster_bootstrap(d, outcome="y", regressors=["x"], cluster="g",
                                              term="x", n_reps=9999, seed=0, **extra)
                return np.array([r.p_value, *r.conf_int])
            return f
        if case == "etwfe_pois":
            def f():
                r = ti.etwfe(d, outcome="trade", unit="pair", time="year", cohort="cohort",
                             family="poisson", fixed_effects=("exp_year", "imp_year", "pair"),
                             cluster="pair")
                r.aggregate("simple")  # the ATT a user prints (timed, not compared)
                return r.params.to_numpy()
            return f
        if case == "ppml":
            regs = ["treat", "x2"] if "x2" in d else ["treat"]
            return lambda: np.r_[(r := ti.ppml(
                d, outcome="trade", regressors=regs,
                fixed_effects=("exp_year", "imp_year", "pair"), cluster="pair")).params,
                r.std_errors]
    if pkg == "pyfixest":
        import pyfixest as pf
        if case == "event_study":
            return lambda: pf.feols("y ~ i(rel_time, ref=-1) | unit + year", data=d,
                                    vcov={"CRV1": "unit"}).coef().to_numpy()
        if case in ES_OPTION_CASES:
            fml = "y ~ i(rel_time, ref=-1)" + (" + x" if case == "event_study_x" else "")
            opt = {"event_study_w": {"weights": "w", "vcov": {"CRV1": "unit"}},
                   "event_study_dk": {"vcov": "DK", "vcov_kwargs": {
                       "lag": DK_LAG, "time_id": "year", "panel_id": "unit"}},
                   "event_study_x": {"vcov": {"CRV1": "unit"}}}[case]
            # pyfixest 0.60's DK needs a numeric panel id (it subtracts ids): integer codes
            # of the unit, made before the timing; the fixed effect stays the unit column
            dp = d.assign(pid=pd.factorize(d["unit"])[0]) if case == "event_study_dk" else d
            if case == "event_study_dk":
                opt["vcov_kwargs"]["panel_id"] = "pid"
            return lambda: np.r_[(r := pf.feols(fml + " | unit + year", data=dp, **opt)
                                  ).coef().to_numpy(), r.se().to_numpy()]
        if case == "did2s":
            d2 = d.assign(treat=d["treated"].astype(bool))
            return lambda: pf.did2s(d2, yname="y", first_stage="~ 0 | unit + year",
                                    second_stage="~ i(rel_time, ref=-1.0)", treatment="treat",
                                    cluster="unit").coef().to_numpy()
        if case in SA_OPTION_CASES:
            # the cells' row counts among post-treatment rows (made before the timing)
            post = d.loc[d["post_cell"], "cell"].value_counts()

            def f():
                r = pf.feols("y ~ i(cell, ref=0) + x | unit + year", data=d,
                             vcov={"CRV1": "unit"})
                names = [f"cell::{k}" for k in post.index]
                w = post.to_numpy() / post.sum()
                pos = [list(r.coef().index).index(nm) for nm in names]
                v = np.asarray(r._vcov)[np.ix_(pos, pos)]  # the ATT's delta-method SE
                return np.array([r.coef()[names].to_numpy() @ w, np.sqrt(w @ v @ w)])
            return f
        if case == "etwfe_pois":
            return lambda: pf.fepois("trade ~ i(cell, ref=0) | exp_year + imp_year + pair",
                                     data=d, vcov={"CRV1": "pair"}).coef().to_numpy()
        if case == "ppml":
            rhs = "treat + x2" if "x2" in d else "treat"
            return lambda: np.r_[(r := pf.fepois(
                f"trade ~ {rhs} | exp_year + imp_year + pair", data=d,
                vcov={"CRV1": "pair"})).coef(), r.se()]
    if pkg == "diff-diff":
        import diff_diff as dd
        if case == "imputation":
            return lambda: np.array([dd.ImputationDiD(cluster="unit").fit(
                d, outcome="y", unit="unit", time="year", first_treat="cohort",
                aggregate="event_study").overall_att])
        if case == "did2s":
            return lambda: np.array([dd.TwoStageDiD(cluster="unit").fit(
                d, outcome="y", unit="unit", time="year", first_treat="cohort",
                aggregate="event_study").overall_att])
        if case == "cs":
            unb = _unbalanced(d)
            return lambda: np.array([dd.CallawaySantAnna(
                control_group="never_treated", estimation_method="dr",
                allow_unbalanced_panel=unb).fit(
                d, outcome="y", unit="unit", time="year", first_treat="cohort",
                aggregate="event_study").overall_att])
        if case in CS_OPTION_CASES:
            unb = _unbalanced(d)
            opt = CS_OPTION_CASES[case]
            est = dd.CallawaySantAnna(
                control_group=opt.get("control_group", "never_treated"),
                estimation_method=opt.get("method", "dr"),
                base_period=opt.get("base_period", "varying"),
                allow_unbalanced_panel=unb,
                **({"n_bootstrap": opt["n_reps"], "bootstrap_weights": "mammen",
                    "seed": opt["seed"]} if "n_reps" in opt else {}))
            return lambda: np.array([(r := est.fit(
                d, outcome="y", unit="unit", time="year", first_treat="cohort",
                covariates=opt.get("covariates"), aggregate="event_study")).overall_att,
                r.overall_se])
        if case in SA_OPTION_CASES:
            return lambda: np.array([(r := dd.SunAbraham(
                control_group="never_treated", cluster="unit").fit(
                d, outcome="y", unit="unit", time="year", first_treat="cohort",
                covariates=["x"])).overall_att, r.overall_se])
        if case == "sun_abraham":
            return lambda: np.array([dd.SunAbraham(
                control_group="never_treated", cluster="unit").fit(
                d, outcome="y", unit="unit", time="year", first_treat="cohort").overall_att])
        if case in SDID_CASES:
            # sdid_boot: R's bootstrap_se in both packages (units resampled, both weights
            # re-estimated from warm starts); diff-diff's rng.choice(N, N) draws the same
            # units as our rng.integers(0, N, N) (same seed), in draw order where we sort:
            # the same replicates up to rounding
            post = sorted(d.loc[d["treated"] == 1, "year"].unique().tolist())
            d_block = d.assign(ever=(d["cohort"] > 0).astype(int))  # block treatment column
            vm = "bootstrap" if case == "sdid_boot" else "placebo"
            return lambda: np.array([dd.SyntheticDiD(variance_method=vm,
                                                     n_bootstrap=200, seed=0).fit(
                d_block, outcome="y", treatment="ever", unit="unit", time="year",
                post_periods=post).se])
        if case in ("honest_rm", "honest_sd"):
            # diff-diff 3.13 HonestDiD: "smoothness" is the optimal FLCI (same estimand as
            # ours, like for like); "relative_magnitude" is NOT R's C-LF test inversion but
            # the identified set widened by z * se (its ARP hybrid is disabled) -- timed
            # for reference only. fit() per M (no breakdown search); l_vec = first post
            # period as ours. Event study with unit FE, unit clusters and all 10 post
            # periods: betahat and sigma equal ours to 1e-13.
            dd_d = d.assign(tr=(d["cohort"] > 0).astype(int))
            g = int(d["year"].min()) + 6
            res = dd.MultiPeriodDiD(cluster="unit").fit(
                dd_d, outcome="y", treatment="tr", time="year", unit="unit",
                reference_period=g - 1, post_periods=list(range(g, int(d["year"].max()) + 1)),
                absorb=["unit"])
            meth, mv = (("smoothness", np.linspace(*HONEST_SD_M)) if case == "honest_sd"
                        else ("relative_magnitude", np.linspace(*HONEST_RM_MBAR)))
            h = dd.HonestDiD(method=meth, l_vec=np.eye(10)[0])
            return lambda: np.array([b for m in mv for r in [h.fit(res, M=float(m))]
                                     for b in (r.ci_lb, r.ci_ub)])
    if pkg in PORT_PYTHON:
        beta, sigma = (np.load(_honest_path(d))[k] for k in ("beta", "sigma"))
        hyb = "LF" if case == "honest_rm_like" else "ARP"
        sd = float(np.sqrt(sigma[5, 5]))
        lv = np.eye(10)[0]

        def port(mbar: float, points: int) -> tuple[float, float]:
            if pkg == "moderndid":
                from moderndid.didhonest import compute_conditional_cs_rm
                r = compute_conditional_cs_rm(beta, sigma, 5, 10, l_vec=lv, m_bar=mbar,
                                              hybrid_flag=hyb, grid_points=points,
                                              grid_lb=-20 * sd, grid_ub=20 * sd, seed=0)
                grid, acc = np.asarray(r["grid"]), np.asarray(r["accept"])
            else:
                import honestdid
                r = honestdid.computeConditionalCS_DeltaRM(
                    beta, sigma, 5, 10, l_vec=lv, Mbar=mbar, hybrid_flag=hyb,
                    gridPoints=points, grid_lb=-20 * sd, grid_ub=20 * sd, seed=0)
                grid, acc = r["grid"].to_numpy(), r["accept"].to_numpy()
            ok = grid[acc > 0]
            return (float(ok.min()), float(ok.max())) if len(ok) else (np.nan, np.nan)
        port(0.0, 20)  # warm-up (imports, solver set-up) on a 20-point grid
        return lambda: np.array([b for m in np.linspace(*HONEST_RM_MBAR)
                                 for b in port(float(m), 1000)])
    if pkg == "wildboottest":
        import statsmodels.api as sm
        from wildboottest.wildboottest import wildboottest
        model = sm.OLS(d["y"], sm.add_constant(d[["x"]]))
        # wildboottest 0.3.2 rejects a pandas string cluster column (object or "str"
        # dtype: numba TypingError "non-precise type array(pyobject)") but takes a NumPy
        # unicode array: string ids are converted before the timing (conservative), from
        # the distinct labels (d["g"].to_numpy() would make one Python str per row, and
        # that, not the fit, would set the peer's peak memory at 1e7 rows)
        if pd.api.types.is_numeric_dtype(d["g"]):
            g = d["g"]
        else:
            codes, uniq = pd.factorize(d["g"])
            g = np.asarray(uniq, dtype=str)[codes]
        return lambda: np.asarray(wildboottest(model, B=9999, cluster=g, param="x",
                                               seed=0, show=False)["p-value"], dtype=float)
    raise SystemExit(f"no fit for {case} / {pkg}")


def _unbalanced(d) -> bool:
    """True when some unit misses some period (Callaway-Sant'Anna then needs R did's
    ``allow_unbalanced_panel`` path, in both packages)."""
    return len(d) != d["unit"].nunique() * d["year"].nunique()


def _honest_path(d) -> Path:
    """Where the twinimpact child leaves betahat / sigma of the HonestDiD like-for-like
    cases for the ports' children (keyed by the panel's size and a checksum)."""
    import hashlib
    import tempfile
    key = hashlib.sha1(d[["unit", "year", "y"]].to_numpy().tobytes()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"run_table_honest_{len(d)}_{key}.npz"


def _honest_inputs(res, d):
    """betahat (5 pre + 10 post event-study coefficients, reference -1 excluded) and their
    covariance from our event study, saved for the ports' children (they run later, in
    other interpreters, and get the very same arrays)."""
    import numpy as np
    terms = [f"rel_time={e}" for e in range(-6, 10) if e != -1]
    beta = res.params[terms].to_numpy(dtype=float)
    sigma = res.vcov.loc[terms, terms].to_numpy(dtype=float)
    np.savez(_honest_path(d), beta=beta, sigma=sigma)
    return beta, sigma


#: the least-favourable draws of each port, written as ``Z @ F`` with ``Z`` standard
#: normals: moderndid ``np.random.default_rng(seed).multivariate_normal`` (SVD
#: ``u sqrt(s)``), honestdid ``np.random.RandomState(seed).multivariate_normal`` (SVD
#: ``sqrt(s) v``); checked bit for bit against ``multivariate_normal`` in the child
_PORT_DRAWS = {"moderndid": ("default_rng", "u"), "honestdid": ("RandomState", "v")}


def _values_under_port_draws(beta, sigma) -> dict:
    """Our C-LF bounds (same call as the timed one) with each port's least-favourable
    draws in place of ours (the library's ``lf_draws`` swapped in this child only)."""
    import numpy as np

    import twinimpact as ti
    from twinimpact.inference import _honest_arp
    own = _honest_arp.lf_draws
    out = {}
    try:
        for port, (gen, side) in _PORT_DRAWS.items():
            def draws(sig, sims, seed, gen=gen, side=side):
                m = sig.shape[0]
                z = (np.random.default_rng(seed) if gen == "default_rng"
                     else np.random.RandomState(seed)).standard_normal((sims, m))
                u, s, vh = np.linalg.svd(sig)
                xi = z @ ((u * np.sqrt(s)).T if side == "u" else np.sqrt(s)[:, None] * vh)
                ref = getattr(np.random, gen)(seed).multivariate_normal(np.zeros(m), sig,
                                                                        size=sims)
                assert np.array_equal(xi, ref), "port draws not reproduced"
                return xi
            _honest_arp.lf_draws = draws
            out[port] = ti.honest_did(beta, sigma, num_pre=5, num_post=10, grid="r",
                                      m_values=np.linspace(*HONEST_RM_MBAR)
                                      ).iloc[1:][["lb", "ub"]].to_numpy().ravel().tolist()
    finally:
        _honest_arp.lf_draws = own
    return out


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark of this process (``VmHWM``; Linux >= 4.0: write 5
    to ``/proc/self/clear_refs``) so that :func:`_peak_since_reset_mb` gives the peak of
    what follows -- the fits -- and not the panel generation's temporaries before it
    (on Linux this also resets ``ru_maxrss``: ``peak_mb`` is taken as the larger of the
    peak before the reset and the one after). False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_since_reset_mb() -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


#: from this many rows on, the warm-up runs on a 1e5-row panel of the same kind (imports,
#: JIT) in the same process, so the big panel is fitted only ``repeats`` times
BIG = 5e6
#: the two-stage estimators: small-panel warm-up from 1e6 rows, and from ``BIG`` rows one
#: timed fit (a 1e7-row peer fit takes minutes)
SMALL_WARMUP = {"imputation": 1e6, "did2s": 1e6,
                # Poisson ETWFE: a 1e6-row peer fit is minutes of CPU already
                "etwfe_pois": 5e5}


def child(case: str, pkg: str, kind: str, size: float, repeats: int) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    load_start = os.getloadavg()
    if size >= BIG_ROWS or (case in SMALL_WARMUP and size >= BIG):
        repeats = 1  # the big panel is made once and fitted once
        if size < BIG_ROWS and os.environ.get("TI_BENCH_BIG_REPEATS"):
            # --big-repeats N: N timed fits of the same panel in this child instead
            repeats = int(os.environ["TI_BENCH_BIG_REPEATS"])
    port = pkg in PORT_PYTHON  # minutes per call: warm-up inside _fit_fn, one timed run
    if port:
        repeats = 1
    if ((size >= BIG and case in ("ppml", "etwfe_pois", "event_study", *ES_OPTION_CASES,
                                  "cs", "sun_abraham", "wild", "wild_p", *CS_OPTION_CASES,
                                  *SA_OPTION_CASES))
            or size >= BIG_ROWS
            or size >= SMALL_WARMUP.get(case, 1e99)):
        _fit_fn(case, pkg, _panel(case, kind, 1e5))()  # warm-up on a small panel
        first_s, first_cpu = time.perf_counter() - t0, time.process_time() - c0
        d = _panel(case, kind, size)
        rss_data = _rss_mb()
        peak_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        hwm_reset = _reset_peak()
        fit = _fit_fn(case, pkg, d)
    else:
        d = _panel(case, kind, size)
        rss_data = _rss_mb()
        peak_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        hwm_reset = _reset_peak()
        t0, c0 = time.perf_counter(), time.process_time()
        fit = _fit_fn(case, pkg, d)
        if port:  # _fit_fn ran the (small) warm-up
            first_s, first_cpu = time.perf_counter() - t0, time.process_time() - c0
        else:
            t0, c0 = time.perf_counter(), time.process_time()
            out = fit()  # warm-up
            first_s, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    times, cpus, users, syss, flts, majs = [], [], [], [], [], []
    for _ in range(repeats):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0, c0 = time.perf_counter(), time.process_time()
        out = fit()
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        # CPU time split: user (the arithmetic) and system (mostly the kernel faulting in
        # and zeroing fresh pages of large temporaries)
        users.append(r1.ru_utime - r0.ru_utime)
        syss.append(r1.ru_stime - r0.ru_stime)
        flts.append(r1.ru_minflt - r0.ru_minflt)  # minor page faults (fresh pages)
        majs.append(r1.ru_majflt - r0.ru_majflt)  # major faults (read from disk / swap)
    traced = None
    if os.environ.get("TI_BENCH_TRACEMALLOC"):
        # one more call under tracemalloc (after the timed ones, so they are not slowed):
        # the peak of the memory Python and NumPy allocated during the call, per row
        import tracemalloc
        tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fit()
        traced = (tracemalloc.get_traced_memory()[1] - base) / len(d)
        tracemalloc.stop()
    import numpy as np
    out = np.asarray(out, dtype=float).ravel()
    extra = {}
    if case in HONEST_LIKE_CASES:
        extra["all_values"] = out.tolist()
        if pkg == "twinimpact" and case == "honest_rm_like":
            z = np.load(_honest_path(d))
            extra["values_draws"] = _values_under_port_draws(z["beta"], z["sigma"])
    return {**extra, "median_s": statistics.median(times), "times": times,
            "traced_peak_bytes_per_row": traced,
            "cpu_s": statistics.median(cpus), "user_s": statistics.median(users),
            "sys_s": statistics.median(syss), "minflt": statistics.median(flts),
            # every timed fit, for the spread (min / max) beside the medians
            "cpu_times": cpus, "user_times": users, "sys_times": syss, "minflts": flts,
            "majflt": statistics.median(majs),
            # 1-, 5- and 15-minute load averages (as uptime) when the child started / ended
            "loadavg_child": [list(load_start), list(os.getloadavg())],
            "first_s": first_s, "first_cpu_s": first_cpu,
            # the whole child's peak (the reset of the peak mark also resets ru_maxrss)
            "peak_mb": max(peak_data, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            # peak RSS from right after the panel was made to the end (the data plus the
            # fits' own footprint; peak_mb can be the generator's, see peak_before_fit_mb)
            "peak_fit_mb": _peak_since_reset_mb() if hwm_reset else None,
            "data_mb": rss_data, "peak_before_fit_mb": peak_data, "rows": len(d),
            "first": out[:3].tolist(), "values": out.tolist()[:8],
            **({"sdid_loop": _sdid_loop()} if case in SDID_CASES and pkg == "twinimpact" else {})}


def _sdid_loop() -> str:
    """Synthetic DiD's Frank-Wolfe loop in the timed source: "compiled" (_sdid_fw.c
    built) or "numpy" (not built, or a source from before the compiled loop)."""
    import importlib
    m = importlib.import_module("twinimpact.estimators._sdid_solver")
    if hasattr(m, "fw_loop"):
        return m.fw_loop()
    compiled = getattr(m, "_compiled_fw", lambda: None)
    return "numpy" if compiled() is None else "compiled"


# ----------------------------------------------------------------------------- parent
# case -> (peers, default sizes, default panels)
CASES = {
    "event_study": (["pyfixest"], [1e5, 1e6], ["balanced", "unbalanced", "gaps",
                                               "entry_exit", "strkey_unbal", "cohorts20"]),
    "imputation": (["diff-diff"], [1e5, 1e6], ["balanced", "unbalanced"]),
    "did2s": (["diff-diff", "pyfixest"], [1e5, 1e6], ["balanced", "unbalanced"]),
    # Callaway-Sant'Anna (DR, never treated, no covariate) + dynamic aggregation; Sun-Abraham
    "cs": (["diff-diff"], [1e5, 1e6], ["balanced", "unbalanced", "gaps", "entry_exit",
                                       "strkey_unbal", "cohorts20"]),
    "sun_abraham": (["diff-diff"], [1e5, 1e6], ["balanced", "unbalanced"]),
    # the options of the same references no earlier row measured (CS_OPTION_CASES, sa_x)
    **{c: (["diff-diff"], [1e5, 1e6], ["balanced", "unbalanced", "strkey_unbal", "cohorts20"])
       for c in CS_OPTION_CASES},
    "sa_x": (["diff-diff", "pyfixest"], [1e5, 1e6],
             ["balanced", "unbalanced", "strkey_unbal", "cohorts20"]),
    "sdid": (["diff-diff"], [100_040, 1_000_060, 2_000_060],
             ["balanced", "tr1", "tr5", "tr20", "post50_noisy", "strkey"]),
    # the same with the unit bootstrap SE (200 draws, weights re-estimated per draw)
    "sdid_boot": (["diff-diff"], [100_040, 1_000_040],
                  ["balanced", "tr5", "tr20", "post50_noisy"]),
    "honest_rm": (["diff-diff"], [1e4], ["balanced", "unbalanced", "gaps"]),
    "honest_rm_r": ([], [1e4], ["balanced", "unbalanced", "gaps"]),
    "honest_sd": (["diff-diff"], [1e4], ["balanced", "unbalanced", "gaps"]),
    "honest_rm_like": (["moderndid", "honestdid"], [1e4], ["balanced", "unbalanced", "gaps"]),
    "honest_rm_cond_like": (["moderndid", "honestdid"], [1e4],
                            ["balanced", "unbalanced", "gaps"]),
    "event_study_w": (["pyfixest"], [1e5, 1e6], ["balanced", "unbalanced", "strkey_unbal"]),
    "event_study_dk": (["pyfixest"], [1e5, 1e6], ["balanced", "unbalanced", "strkey_unbal"]),
    "event_study_x": (["pyfixest"], [1e5, 1e6], ["balanced", "unbalanced", "strkey_unbal"]),
    "wild": (["wildboottest"], [1e5], ["balanced", "unequal", "gaps_str"]),
    "wild_p": (["wildboottest"], [1e5], ["balanced", "unequal", "gaps_str"]),
    "ppml": (["pyfixest"], [1e6, 1e7], list(GRAVITY_KINDS)),
    "etwfe_pois": (["pyfixest"], [1e6, 1e7], list(ETWFE_POIS_PANELS)),
}


_ALL6 = ["balanced", "unbalanced", "gaps", "entry_exit", "strkey_unbal", "cohorts20"]
_FIVE = ["balanced", "unbalanced", "gaps", "entry_exit", "strkey_unbal"]
#: ``--whole-table``: every row of the table in RESULTS.md's top section, one step after
#: the other (each step: the options it overrides; the rest as given on the command line).
#: Peers that are known not to fit are not run (said in each step's comment). With
#: ``--lock FILE`` each child of >= 1e6 rows holds the lock alone. Wall time on the
#: 2-core machine: about 2.5-3 hours.
WHOLE_TABLE: list[dict] = [
    # 1e5 rows (and the small SDID / HonestDiD sizes)
    {"cases": ["event_study"], "sizes": [1e5], "panels": _ALL6, "threads": "both"},
    {"cases": ["imputation", "cs", "sun_abraham"], "sizes": [1e5], "panels": _ALL6},
    {"cases": ["event_study_w", "event_study_dk", "event_study_x"], "sizes": [1e5]},
    {"cases": ["wild", "wild_p"], "sizes": [1e5]},
    {"cases": ["did2s"], "sizes": [1e5], "panels": _ALL6},
    {"cases": ["honest_sd", "honest_rm", "honest_rm_r"], "sizes": [1e4]},
    {"cases": ["sdid"], "sizes": [100_040]},
    {"cases": ["sdid"], "sizes": [1_000_060, 2_000_060], "panels": ["balanced"], "repeats": 1},
    {"cases": ["sdid", "sdid_boot"], "sizes": [1_000_040, 3_000_040], "panels": ["balanced"],
     "repeats": 1},
    {"cases": ["sdid_boot"], "sizes": [100_040]},
    # honestdid's conditional test: no result in 30 min (not run); its C-LF: balanced only
    {"cases": ["honest_rm_like", "honest_rm_cond_like"], "sizes": [1e4],
     "peers": ["moderndid"]},
    {"cases": ["etwfe_pois"], "sizes": [1e5]},
    {"cases": ["honest_rm_like"], "sizes": [1e4], "panels": ["balanced"],
     "peers": ["honestdid"]},
    # 1e6 rows
    {"cases": ["event_study"], "sizes": [1e6], "panels": _ALL6},
    {"cases": ["event_study"], "sizes": [1e6], "panels": ["balanced", "unbalanced"],
     "threads": "default"},
    {"cases": ["imputation"], "sizes": [1e6], "panels": _FIVE, "peer_repeats": 1},
    {"cases": ["imputation"], "sizes": [1e6], "panels": ["cohorts20"], "repeats": 1},
    {"cases": ["cs"], "sizes": [1e6], "panels": _ALL6},
    # diff-diff's SunAbraham cannot fit 24 cohorts at 1e6 (4.9 GiB cells x rows)
    {"cases": ["sun_abraham"], "sizes": [1e6], "panels": _FIVE, "peer_repeats": 1},
    # did2s: pyfixest fails from 1e5, diff-diff from 1e6 (74.5 GiB): one check, balanced
    {"cases": ["did2s"], "sizes": [1e6], "panels": _ALL6, "no_peers": True},
    {"cases": ["did2s"], "sizes": [1e6], "panels": ["balanced"],
     "peers": ["diff-diff", "pyfixest"]},
    {"cases": ["event_study_w", "event_study_dk", "event_study_x"], "sizes": [1e6],
     "peer_repeats": 1},
    {"cases": ["wild", "wild_p"], "sizes": [1e6]},
    {"cases": ["ppml"], "sizes": [1e6], "peer_repeats": 1},
    {"cases": ["etwfe_pois"], "sizes": [1e6], "panels": ["dense"], "repeats": 1},
    # 1e7 rows, where a peer fits (pyfixest cannot fit the event study on 24 cohorts,
    # diff-diff neither Sun-Abraham nor did2s nor imputation on 24 cohorts in a slot)
    {"cases": ["event_study"], "sizes": [1e7], "panels": _FIVE, "peer_repeats": 1},
    # 16 GB address space: under 10 GB pyfixest with default threads crashes and diff-diff's
    # imputation fails on balanced panels at 1e7 (address space, not RSS: ~4.5 / 8.6 GB)
    {"cases": ["event_study"], "sizes": [1e7], "panels": ["balanced", "unbalanced"],
     "threads": "default", "peer_repeats": 1, "mem_cap_gb": 16.0},
    {"cases": ["imputation"], "sizes": [1e7], "panels": _FIVE, "mem_cap_gb": 16.0},
    {"cases": ["cs"], "sizes": [1e7], "panels": _ALL6, "peer_repeats": 1},
    {"cases": ["wild", "wild_p"], "sizes": [1e7]},
    {"cases": ["ppml"], "sizes": [1e7], "panels": ["dense", "strkey", "missing10"],
     "repeats": 1},
    {"cases": ["event_study", "sun_abraham", "did2s"], "sizes": [1e7],
     "panels": ["balanced", "unbalanced", "strkey_unbal", "cohorts20"], "no_peers": True,
     "repeats": 1},
]


def run_child(args, case, pkg, kind, size, threads) -> dict:
    py = (sys.executable if pkg == "twinimpact"
          else PORT_PYTHON[pkg] if pkg in PORT_PYTHON else args.peer_python)
    env = dict(os.environ)
    for v in THREAD_VARS:
        env.pop(v, None)
        if threads == "1":
            env[v] = "1"
    env["PYTHONPATH"] = args.ti_src if pkg == "twinimpact" else ""
    if args.tracemalloc and pkg == "twinimpact":
        env["TI_BENCH_TRACEMALLOC"] = "1"
    if getattr(args, "big_repeats", None) and pkg == "twinimpact":
        env["TI_BENCH_BIG_REPEATS"] = str(args.big_repeats)
    if args.cold_jit:  # a new user's first call: numba compiles (no on-disk cache yet)
        import tempfile
        env["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="numba-cold-")
    cap = int(args.mem_cap_gb * 2**30)

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    need = bool(args.lock) and _rows(case, size) >= args.lock_from
    if _LOCK["fh"] is not None and not need:
        _release_lock()
    waited = None
    if need and _LOCK["fh"] is None:
        # the shared benchmark lock (the same flock(2) lock as `flock FILE cmd`), held for
        # this child and, with --lock-hold S, for the next ones until S seconds have
        # passed since it was taken; other jobs can take it in between
        import fcntl
        w0 = time.time()
        fh = open(args.lock, "a")
        fcntl.flock(fh, fcntl.LOCK_EX)
        _LOCK.update(fh=fh, since=time.time())
        waited = time.time() - w0
    load = os.getloadavg()[0]
    t0 = time.time()
    try:
        p = subprocess.run([py, __file__, "--child", case, pkg, kind, repr(size),
                            str(args.repeats if pkg == "twinimpact" or args.peer_repeats is None
                                else args.peer_repeats)], capture_output=True, text=True, env=env,
                           preexec_fn=limit, timeout=args.timeout)
        if p.returncode != 0:
            err = (p.stderr.strip().splitlines() or ["?"])[-1][:160]
            res = {"error": err}
        else:
            res = json.loads(p.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        res = {"error": f"timeout after {args.timeout} s"}
    finally:
        if _LOCK["fh"] is not None and time.time() - _LOCK["since"] >= args.lock_hold:
            _release_lock()
    if need:
        res["lock_wait_s"] = round(waited, 1) if waited is not None else 0.0
    res.update({"case": case, "pkg": pkg, "panel": kind, "size": size, "threads": threads,
                "load": f"{load:.1f}-{os.getloadavg()[0]:.1f}", "wall_s": time.time() - t0,
                "utc": time.strftime("%H:%M", time.gmtime(t0)),
                **({"commit": args.commit} if args.commit else {}),
                **({"run": args.run_id} if args.run_id else {})})
    return res


#: the benchmark lock while this parent holds it (``--lock``)
_LOCK: dict = {"fh": None, "since": 0.0}


def _release_lock() -> None:
    _LOCK["fh"].close()  # closing the file releases the flock
    _LOCK["fh"] = None


def _rows(case: str, size: float) -> float:
    """Rows of a case's panel at ``size`` (synthetic DiD encodes units x 1000 + periods)."""
    if case in SDID_CASES:
        return (int(size) // 1000) * (int(size) % 1000)
    return float(size)


def _src_commit(src: str) -> str | None:
    """The commit of the timed source tree (``--ti-src``): HEAD of its repository, with
    "+dirty" when src/ has uncommitted changes (None outside a git checkout)."""
    try:
        git = ["git", "-C", src]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def _fmt_size(case: str, size: float) -> str:
    if case in SDID_CASES:
        return f"{int(size) // 1000} x {int(size) % 1000}"
    return f"{size:.0e}".replace("e+0", "e")


def _num(r, key: str) -> float:
    v = r.get(key)
    return float(v) if isinstance(v, int | float) and v == v else float("nan")


def table(results: list[dict]) -> str:
    """Markdown: one line per (case, panel, size, threads) with ratios vs each peer: wall
    time, CPU time of the child (survives load), peak RSS; first call (warm-up incl.
    imports and JIT) and, when both report their numbers, the largest relative
    difference of the returned values (e.g. coefficients and SEs)."""
    import numpy as np
    import pandas as pd
    df = pd.DataFrame(results)
    lines = ["| case | panel | size | threads | twinimpact s (CPU s) | peak MB | first call s "
             "| peer | peer s (CPU s) | peer peak MB | peer first call s "
             "| speed ratio wall (CPU) | memory ratio (from the panel on) | max rel. diff |", "|" + "---|" * 14]
    for key, grp in df.groupby(["case", "panel", "size", "threads"], sort=False):
        case, kind, size, threads = key
        ours = grp[grp["pkg"] == "twinimpact"]
        if ours.empty:
            continue
        o = ours.iloc[-1]
        o_err = isinstance(o.get("error"), str)
        for _, p in grp[grp["pkg"] != "twinimpact"].iterrows():
            p_err = isinstance(p.get("error"), str)

            def cell(r, err):
                if err:
                    return "fail: " + r["error"], "", ""
                return (f"{r['median_s']:.3g} ({_num(r, 'cpu_s'):.3g})", f"{r['peak_mb']:.0f}",
                        f"{_num(r, 'first_s'):.3g}")
            ot, om, of = cell(o, o_err)
            pt, pm, pf_ = cell(p, p_err)
            sr = mr = dv = ""
            if not (o_err or p_err):
                sr = (f"**{p['median_s'] / o['median_s']:.2f}** "
                      f"({_num(p, 'cpu_s') / _num(o, 'cpu_s'):.2f})")
                mr = f"{p['peak_mb'] / o['peak_mb']:.2f}"
                fo, fp = _num(o, "peak_fit_mb"), _num(p, "peak_fit_mb")
                if np.isfinite(fo) and np.isfinite(fp) and fo > 0:
                    # the whole child's peak can be the panel generator's: also the
                    # ratio of the peaks from the panel on (the fits' own footprint)
                    mr += f" ({fp / fo:.2f} from the panel on)"
                vo, vp = o.get("values"), p.get("values")
                if isinstance(o.get("all_values"), list):  # HonestDiD like for like
                    vo, vp = o.get("all_values"), p.get("all_values")
                    drawn = o.get("values_draws")
                    if isinstance(drawn, dict) and p["pkg"] in drawn:
                        vo = drawn[p["pkg"]]  # ours under the port's own draws
                if isinstance(vo, list) and isinstance(vp, list) and len(vo) == len(vp):
                    vo, vp = np.asarray(vo, float), np.asarray(vp, float)
                    dv = f"{np.max(np.abs(vo - vp) / np.maximum(np.abs(vp), 1e-300)):.1e}"
            lines.append(f"| {case} | {kind} | {_fmt_size(case, size)} | {threads} | {ot} | {om} "
                         f"| {of} | {p['pkg']} | {pt} | {pm} | {pf_} | {sr} | {mr} | {dv} |")
    return "\n".join(lines)


def summary(results: list[dict]) -> str:
    """Markdown, one line per (case, panel, size, threads): twinimpact's CPU s and peak MB
    against the fastest peer that ran (lowest CPU time of the child), the CPU ratio (peer /
    ours), the memory ratio of that same peer (whole child's peak RSS; in brackets from
    the panel on, ``peak_fit_mb``) and whether issue 13's target (CPU ratio >= 2, memory
    ratio >= 1) is met; peers that failed are named. The newest line of each
    (case, package, panel, size, threads) counts."""
    last: dict[tuple, dict] = {}
    for r in results:
        last[(r["case"], r["panel"], r["size"], r["threads"], r["pkg"])] = r
    groups: dict[tuple, dict] = {}
    for (case, kind, size, th, pkg), r in last.items():
        groups.setdefault((case, kind, size, th), {})[pkg] = r
    lines = ["| case | panel | size (rows) | threads | ours CPU s / peak MB | best peer: CPU s / "
             "peak MB | CPU ratio | memory ratio (from the panel on) | met | peers failed |",
             "|" + "---|" * 10]

    def ok(r):
        return r is not None and not isinstance(r.get("error"), str)
    for (case, kind, size, th), pk in groups.items():
        o = pk.get("twinimpact")
        if not ok(o):
            continue
        rows = o.get("rows", size)
        peers = {k: v for k, v in pk.items() if k != "twinimpact"}
        good = {k: v for k, v in peers.items() if ok(v)}
        failed = ", ".join(f"{k} ({v['error'][:60]})" for k, v in peers.items() if not ok(v))
        ours = f"{_num(o, 'cpu_s'):.3g} / {o['peak_mb']:,.0f}"
        if good:
            name, b = min(good.items(), key=lambda kv: _num(kv[1], "cpu_s"))
            cr = _num(b, "cpu_s") / _num(o, "cpu_s")
            mr = b["peak_mb"] / o["peak_mb"]
            fo, fp = _num(o, "peak_fit_mb"), _num(b, "peak_fit_mb")
            mrf = f" ({fp / fo:.2f})" if fo > 0 and fp == fp else ""
            met = "yes" if cr >= 2 and mr >= 1 else "**no**"
            best = f"{name} {_num(b, 'cpu_s'):.3g} / {b['peak_mb']:,.0f}"
            lines.append(f"| {case} | {kind} | {_fmt_size(case, size)} ({rows:,.0f}) | {th} "
                         f"| {ours} | {best} | {cr:.2f} | {mr:.2f}{mrf} | {met} | {failed} |")
        else:
            lines.append(f"| {case} | {kind} | {_fmt_size(case, size)} ({rows:,.0f}) | {th} "
                         f"| {ours} | - | - | - | {'no peer fits' if failed else 'no peer run'} "
                         f"| {failed} |")
    return "\n".join(lines)


def exponents(results: list[dict]) -> str:
    """Markdown: fitted exponent b of time ~ rows^b (least squares on logs) per series."""
    import numpy as np
    import pandas as pd
    df = pd.DataFrame([r for r in results if not isinstance(r.get("error"), str)])
    lines = ["| case | package | panel | threads | sizes (rows) | exponent (time) "
             "| exponent (CPU time) | exponent (peak memory) | top decade: CPU / peak "
             "| exponent (user / system CPU) | user / system CPU s at the largest size "
             "| CPU s at each size | peak MB at each size |", "|" + "---|" * 13]
    for key, grp in df.groupby(["case", "pkg", "panel", "threads"], sort=False):
        grp = (grp.drop_duplicates("size", keep="last").drop_duplicates("rows", keep="last")
               .sort_values("rows"))
        if len(grp) < 2:
            continue
        x = np.log(grp["rows"].to_numpy(float))
        bt = np.polyfit(x, np.log(grp["median_s"].to_numpy(float)), 1)[0]
        bm = np.polyfit(x, np.log(grp["peak_mb"].to_numpy(float)), 1)[0]
        cpu = grp["cpu_s"].to_numpy(float) if "cpu_s" in grp else np.array([np.nan])
        bc = (f"{np.polyfit(x, np.log(cpu), 1)[0]:.2f}" if np.isfinite(cpu).all()
              and len(cpu) == len(x) else "-")
        split, last = [], "-"
        for col in ("user_s", "sys_s"):  # older JSON lines have no split: "-"
            v = grp[col].to_numpy(float) if col in grp else np.array([np.nan])
            split.append(f"{np.polyfit(x, np.log(v), 1)[0]:.2f}" if len(v) == len(x)
                         and np.isfinite(v).all() and (v > 0).all() else "-")
        if "user_s" in grp and "sys_s" in grp and np.isfinite(
                grp[["user_s", "sys_s"]].to_numpy(float)[-1]).all():
            last = f"{grp['user_s'].iloc[-1]:.3g} / {grp['sys_s'].iloc[-1]:.3g}"
        sizes = ", ".join(f"{v:.2g}" for v in grp["rows"])
        cpu_ok = len(cpu) == len(x) and bool(np.isfinite(cpu).all())
        cpus = " / ".join(f"{v:.3g}" for v in cpu) if cpu_ok else "-"
        pk = grp["peak_mb"].to_numpy(float)
        peaks = " / ".join(f"{v:,.0f}" for v in pk)
        # slope over the two largest sizes: the fixed ~200 MB of interpreter and imports
        # in peak RSS flattens the all-sizes memory exponent at the small end
        dx = x[-1] - x[-2]
        top = (f"{np.log(cpu[-1] / cpu[-2]) / dx:.2f}" if cpu_ok else "-") + \
            f" / {np.log(pk[-1] / pk[-2]) / dx:.2f}"
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {sizes} | {bt:.2f} "
                     f"| {bc} | {bm:.2f} | {top} | {' / '.join(split)} | {last} "
                     f"| {cpus} | {peaks} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    ap.add_argument("--sizes", nargs="+", type=float, help="override each case's sizes")
    ap.add_argument("--panels", nargs="+", help="override each case's panel kinds")
    ap.add_argument("--threads", choices=["1", "default", "both"], default="both")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peer-repeats", type=int,
                    help="timed fits of the peers' children (default: --repeats), e.g. 1 "
                         "where a peer's fit takes minutes")
    ap.add_argument("--big-repeats", type=int, metavar="N",
                    help="twinimpact children that time one fit by default (imputation and "
                         f"did2s from {BIG:.0e} rows, below {BIG_ROWS:.0e}): N timed fits of "
                         "the same panel in the child instead (medians; every fit's CPU, user "
                         "and system time is kept for the spread)")
    ap.add_argument("--mem-cap-gb", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--peer-python", default="/tmp/venv-peers/bin/python")
    ap.add_argument("--no-peers", action="store_true", help="time twinimpact only")
    ap.add_argument("--peers", nargs="+", help="override each case's peers")
    ap.add_argument("--big", action="store_true",
                    help=f"allow sizes >= {BIG_ROWS:.0e} rows (1e8: run alone, under "
                         "flock /work/bench.lock, with --mem-cap-gb ~20); peers are not run "
                         "at those sizes")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="twinimpact children: one more call under tracemalloc after the "
                         "timed ones; reports traced_peak_bytes_per_row")
    ap.add_argument("--cold-jit", action="store_true",
                    help="fresh NUMBA_CACHE_DIR per child: 'first call' includes compiling")
    ap.add_argument("--ti-src", default=str(ROOT / "src"),
                    help="twinimpact source tree to time (e.g. a snapshot: git archive)")
    ap.add_argument("--lock", metavar="FILE",
                    help="hold this flock(2) lock (e.g. /work/bench.lock) around each child "
                         "of at least --lock-from rows, released between children")
    ap.add_argument("--lock-hold", type=float, default=0.0, metavar="S",
                    help="keep --lock across children until S seconds have passed since it "
                         "was taken (default 0: one child per hold); a hold ends after the "
                         "first child that ends past S, so keep S + the longest child < 10 min")
    ap.add_argument("--lock-from", type=float, default=1e6,
                    help="rows from which a child takes --lock (default 1e6)")
    ap.add_argument("--run-id", help="a label stored with every JSON line (e.g. a run name)")
    ap.add_argument("--jsonl", default=str(HERE / "results_table.jsonl"))
    ap.add_argument("--out", default=str(HERE / "results_table.md"))
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--from-jsonl", nargs="+",
                    help="render the tables from earlier runs' JSON lines (no fitting)")
    ap.add_argument("--whole-table", action="store_true",
                    help="run every row of RESULTS.md's top table (WHOLE_TABLE: 1e5, 1e6, "
                         "1e7 rows; use with --lock on a shared machine)")
    ap.add_argument("--summary", action="store_true",
                    help="with --from-jsonl: one line per row of the table against the "
                         "fastest peer (CPU ratio, memory ratio, target met)")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        case, pkg, kind, size, reps = a.child
        print(json.dumps(child(case, pkg, kind, float(size), int(reps))))
        return
    if a.from_jsonl:
        res = [json.loads(line) for f in a.from_jsonl for line in open(f) if line.strip()]
        print(summary(res) if a.summary else table(res) + "\n\n" + exponents(res))
        return
    if a.list and a.whole_table:
        for step in WHOLE_TABLE:
            print(step)
        return
    if a.list:
        for c, (peers, sizes, kinds) in CASES.items():
            print(f"{c}: peers {peers}, sizes {sizes}, panels {kinds}")
        return
    a.commit = _src_commit(a.ti_src)
    too_big = [z for z in (a.sizes or []) if z >= BIG_ROWS]
    if too_big and not a.big:
        raise SystemExit(f"sizes {too_big} need --big (see --help)")
    results = []
    for step in WHOLE_TABLE if a.whole_table else [{}]:
        # the whole table is one BLAS thread unless a step says otherwise
        results += _grid(argparse.Namespace(**{**vars(a), **(
            {"threads": "1"} if a.whole_table else {}), **step}))
    head = [f"# Speed table (benchmarks/run_table.py), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
            "", f"Command: `python benchmarks/run_table.py {' '.join(sys.argv[1:])}`", "",
            f"Machine: {platform.platform()}, {os.cpu_count()} CPUs shared with other jobs; "
            f"medians of {a.repeats} after a warm-up, each package in its own process, "
            f"address space capped at {a.mem_cap_gb:g} GB.", ""]
    Path(a.out).write_text("\n".join(head) + table(results) + "\n\n" + summary(results) + "\n")
    print(table(results))


def _grid(a) -> list[dict]:
    """Every (case, panel, size, threads, package) of the options ``a``, one child each."""
    results = []
    threads = ["1", "default"] if a.threads == "both" else [a.threads]
    for case in a.cases:
        peers, sizes, kinds = CASES[case]
        for kind in a.panels or kinds:
            for size in a.sizes or sizes:
                for th in threads:
                    for pkg in ["twinimpact"] + ([] if a.no_peers or size >= BIG_ROWS
                                                 else a.peers or peers):
                        r = run_child(a, case, pkg, kind, size, th)
                        results.append(r)
                        with open(a.jsonl, "a") as fh:
                            fh.write(json.dumps(r) + "\n")
                        print(json.dumps({k: r.get(k) for k in (
                            "case", "pkg", "panel", "size", "threads", "median_s", "cpu_s",
                            "user_s", "sys_s", "peak_mb", "data_mb",
                            "traced_peak_bytes_per_row", "error", "load")}), flush=True)
    return results


if __name__ == "__main__":
    main()
