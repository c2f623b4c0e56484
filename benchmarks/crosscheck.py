"""Cross-check twinimpact against Python peers on generated messy panels (same specification).

Every check names a panel (built once by the parent with :mod:`panels`, written to parquet,
read by both sides), a twinimpact fit and a peer fit. Each side runs in its own process --
twinimpact with this interpreter and ``PYTHONPATH=src``, peers in ``--peer-python`` (a venv
with pyfixest, diff-diff and wildboottest; never the shared environment) -- and returns a
flat ``{key: number}`` dict: ``est:<term>``, ``se:<term>``, ``nobs``, ``w:<unit>`` (weights)
... with the SAME term names on both sides. The parent compares every common key:

* ``est:`` / ``w:`` / ``p:``-less keys: relative difference <= ``--tol-est`` (1e-6; absolute
  floor 1e-8 on the scale of the largest estimate);
* ``se:`` keys: <= ``--tol-se`` (1e-4);
* ``p:`` keys (bootstrap p-values): <= 3 Monte-Carlo standard errors.

A check may declare a KNOWN convention difference (``known=``): the keys it covers are
reported as ``convention`` with the reason instead of ``DIFFERS`` -- each reason is pinned
by a test in ``tests/test_peer_conventions.py``.

Run (repository root)::

    python benchmarks/crosscheck.py                      # all checks
    python benchmarks/crosscheck.py --only event_study   # checks whose name starts with it
    python benchmarks/crosscheck.py --list

Writes ``benchmarks/crosscheck.jsonl`` (one line per check) and prints the matrix.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
N_STAG = 2e4      # rows of the staggered panels
N_GRAV = 30       # exporters = importers = years of the gravity panels (27 000 rows)
#: peers outside /tmp/venv-peers: moderndid (a port of R did / DRDID) in its own venv
PEER_PYTHON = {"moderndid": "/tmp/venv-moderndid/bin/python",
               "did_multiplegt_dyn": "/tmp/venv-dcdh/bin/python"}


# ============================================================================ panels
def _add_covariate(d):
    """A time-invariant unit covariate (x) correlated with adoption, and a time-varying one."""
    import numpy as np
    codes = d["unit"].astype(str).map(lambda s: sum(map(ord, s)) * 2654435761 % 1000)
    x = (codes.to_numpy() / 1000.0) + 0.3 * (d["cohort"].to_numpy() > 0)
    return d.assign(x=x, y=d["y"] + 0.5 * x,
                    xt=np.sin(d["year"].to_numpy() * 0.7 + codes.to_numpy()))


def _few_treated(n_treated=8):
    import panels
    return panels.staggered_panel(2000, n_periods=10, n_cohorts=3, treated_units=n_treated,
                                  seed=5)


def _sdid_block(kind="balanced"):
    """Block design for synthetic DiD: 10% treated units, all adopt in the same year."""
    import numpy as np
    import panels
    d = panels.staggered_panel(60 * 12, n_periods=12, n_cohorts=1, treated_units=6, seed=7,
                               key="str" if kind == "str" else "int",
                               shuffle=kind == "str")
    g = int(d["year"].min()) + 8
    d["cohort"] = np.where(d["cohort"] > 0, g, 0)
    d["treated"] = ((d["cohort"] > 0) & (d["year"] >= g)).astype(np.int64)
    d["ever"] = (d["cohort"] > 0).astype(np.int64)
    return d


def _with_separation(base):
    """Gravity panel plus pairs whose trade is all zero (separated by the pair FE) and an
    exporter-year with zero exports (separated by exp_year)."""
    d = base.copy()
    pairs = d["pair"].drop_duplicates().iloc[[3, 17, 40]]
    d.loc[d["pair"].isin(pairs), "trade"] = 0.0
    ey = d["exp_year"].iloc[500]
    d.loc[d["exp_year"] == ey, "trade"] = 0.0
    return d


def _messy(seed=3):
    """Unbalanced panel with what real registries have: 15 units observed once (singletons),
    8 always-treated units (cohort before the first year), 6 never-treated units coded by a
    cohort after the last year (2050), a year with few rows; ``rel_time`` follows the API
    (never treated -> -1, fixest's reference)."""
    import numpy as np
    import pandas as pd
    import panels
    rng = np.random.default_rng(seed)
    d = panels.make("unbalanced", N_STAG, seed=seed)
    units = d["unit"].unique()
    pick = rng.choice(units, size=29, replace=False)
    single, always, late = pick[:15], pick[15:23], pick[23:]
    keep = ~d["unit"].isin(single) | ~d.duplicated("unit")
    d = d.loc[keep].copy()
    d.loc[d["unit"].isin(always), "cohort"] = 1999
    d.loc[d["unit"].isin(late), "cohort"] = 2050
    year_few = int(d["year"].max())
    drop_last = d["year"].eq(year_few) & (rng.random(len(d)) < 0.8)
    d = d.loc[~drop_last].copy()
    g = d["cohort"].to_numpy()
    treated_ever = (g > 0) & (g <= d["year"].max())
    d["rel_time"] = np.where(treated_ever, d["year"] - g, -1)
    d["treated"] = (treated_ever & (d["year"] >= g)).astype(np.int64)
    d["w"] = 0.5 + (pd.util.hash_pandas_object(d["unit"], index=False).to_numpy() % 100) / 50
    return d.reset_index(drop=True)


def _ir_separation():
    """Gravity panel with a regressor that separates: ``sep`` > 0 only on zero-trade rows of
    some pairs (pyfixest ``separation_check=['ir']``, ppmlhdfe's ReLU)."""
    import numpy as np
    import panels
    d = panels.gravity_panel(20, 20, 20, zeros=0.3, seed=4)
    rng = np.random.default_rng(4)
    z = (d["trade"].to_numpy() == 0) & (rng.random(len(d)) < 0.1)
    d["sep"] = np.where(z, 1.0, 0.0)
    d["expo"] = np.exp(0.3 * rng.normal(size=len(d)))
    return d


def _panel_builders():
    import numpy as np
    import panels

    mk = panels.make
    gp = panels.gravity_panel
    b = {
        "balanced": lambda: mk("balanced", N_STAG),
        "unbalanced": lambda: mk("unbalanced", N_STAG),
        "gaps": lambda: mk("gaps", N_STAG),
        "entry_exit": lambda: mk("entry_exit", N_STAG),
        "strkey_unbal": lambda: mk("strkey_unbal", N_STAG),
        "cohorts20": lambda: mk("cohorts20", N_STAG),
        "few_treated": lambda: _few_treated(8),
        "balanced_cov": lambda: _add_covariate(mk("balanced", N_STAG)),
        "unbalanced_cov": lambda: _add_covariate(mk("unbalanced", N_STAG)),
        "small_balanced": lambda: mk("balanced", 3000),
        "small_unbalanced": lambda: mk("unbalanced", 3000),
        "small_strkey": lambda: mk("strkey_unbal", 3000),
        "grav_dense": lambda: gp(N_GRAV, N_GRAV, N_GRAV, zeros=0.2),
        "grav_zeros0": lambda: gp(N_GRAV, N_GRAV, N_GRAV, zeros=0.0),
        "grav_zeros50": lambda: gp(N_GRAV, N_GRAV, N_GRAV, zeros=0.5),
        "grav_strkey": lambda: gp(N_GRAV, N_GRAV, N_GRAV, zeros=0.2, key="str"),
        "grav_missing": lambda: gp(N_GRAV, N_GRAV, N_GRAV, zeros=0.2, miss_random=0.1,
                                   late_pairs=0.3, extra_regressor=True),
        "grav_separated": lambda: _with_separation(gp(N_GRAV, N_GRAV, N_GRAV, zeros=0.2)),
        "sdid_block": lambda: _sdid_block("balanced"),
        "sdid_block_str": lambda: _sdid_block("str"),
        "messy": lambda: _messy(3),
        "messy_str": lambda: _messy(4).assign(
            unit=lambda x: "id-" + x["unit"].astype(str)).sample(frac=1.0, random_state=1),
        "cohorts20_bal": lambda: mk("balanced", N_STAG, n_periods=30, n_cohorts=24),
        # a calendar year missing for every unit (2005: cohort 2005 has no period 0)
        "year_gap": lambda: _add_covariate(mk("balanced", N_STAG).query("year != 2005")
                                           .reset_index(drop=True)),
        "grav_ir": _ir_separation,
        "wild": lambda: _wild_panel(0),
        "wild_fe": lambda: _wild_panel(1),
    }
    del np
    return b


def _wild_panel(seed):
    import numpy as np
    import pandas as pd
    rng = np.random.default_rng(11 + seed)
    n, G = 3000, 20
    g = rng.integers(0, G, size=n)
    f = rng.integers(0, 5, size=n)
    x = rng.normal(size=n) + 0.5 * rng.normal(size=G)[g]
    y = 0.04 * x + rng.normal(size=G)[g] + 0.3 * f + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "g": g, "f": f})


# ============================================================================ helpers
def _num(s):
    m = re.search(r"(-?\d+(?:\.\d+)?)\]?\)?$", str(s))
    return None if m is None else float(m.group(1))


def _fmt_e(e):
    return str(round(float(e)))


def _frame_out(res, nobs=True):
    """twinimpact result -> flat dict (est:/se: by term, nobs)."""
    f = res.to_frame()
    out = {}
    for _, r in f.iterrows():
        out[f"est:{r['term']}"] = float(r["estimate"])
        out[f"se:{r['term']}"] = float(r["std_error"])
    if nobs and getattr(res, "nobs", None) is not None:
        out["nobs"] = float(res.nobs)
    return out


def _es_terms(res):
    """Keep only rel_time=e and ATT terms, keyed as rel_time=<int>."""
    out = {}
    for k, v in _frame_out(res).items():
        if k == "nobs" or "ATT" in k:
            out[k] = v
            continue
        kind, term = k.split(":", 1)
        if term.startswith("rel_time="):
            out[f"{kind}:rel_time={_fmt_e(_num(term))}"] = v
    return out


def _pf_out(fit, keyfn=None, requested=()):
    """pyfixest fit -> flat dict. ``requested`` regressors that pyfixest dropped (collinear)
    are NaN, so a finite twinimpact number for them is flagged."""
    out = {f"{kind}:{r}": float("nan") for r in requested for kind in ("est", "se")}
    coef, se = fit.coef(), fit.se()
    for name in coef.index:
        key = keyfn(name) if keyfn else name
        if key is None:
            continue
        out[f"est:{key}"] = float(coef[name])
        out[f"se:{key}"] = float(se[name])
    out["nobs"] = float(fit._N)
    return out


def _pf_rel(name):
    v = _num(name)
    return None if v is None else f"rel_time={_fmt_e(v)}"


def _dd_effects(effects, keyfn):
    out = {}
    for k, v in effects.items():
        key = keyfn(k)
        out[f"est:{key}"] = float(v["effect"] if "effect" in v else v["att"])
        out[f"se:{key}"] = float(v["se"])
    return out


# ============================================================================ checks
# name -> dict(panel, ti, peer, note, known={key-prefix-regex: reason})
CHECKS: dict[str, dict] = {}


def check(name, panel, note="", known=None, peer_name="", peer_bug=None):
    """Register a check. ``known``: {regex on keys: reason} for documented convention
    differences; ``peer_bug``: reason when the peer is known to fail on this panel."""
    def deco(fn_pair):
        ti_fn, peer_fn = fn_pair()
        CHECKS[name] = dict(panel=panel, ti=ti_fn, peer=peer_fn, note=note,
                            known=known or {}, peer_name=peer_name, peer_bug=peer_bug)
        return fn_pair
    return deco


# ---------------------------------------------------------------- event study (pyfixest)
#: R fixest's feols keeps singleton fixed effects (``fixef.rm = "perfect"`` only acts in GLMs);
#: pyfixest >= 0.30 drops them by default -- compare on R's convention
FIXEF_RM = "none"
SINGLETON_REASON = ("pyfixest's default fixef_rm='singleton' drops units observed once; R fixest "
                    "feols (fixef.rm='perfect') and twinimpact keep them: nobs and the "
                    "small-sample factors differ, estimates agree")
ES_PANELS = ["balanced", "unbalanced", "gaps", "entry_exit", "strkey_unbal", "cohorts20",
             "few_treated"]


def _es_pair():
    def ti_fn(d):
        import twinimpact as ti
        r = ti.event_study(d, outcome="y", unit="unit", time="year", cohort="cohort",
                           cluster="unit")
        return {k: v for k, v in _es_terms(r).items() if "ATT" not in k}

    def peer_fn(d):
        import pyfixest as pf
        fit = pf.feols("y ~ i(rel_time, ref=-1) | unit + year", data=d,
                       vcov={"CRV1": "unit"}, fixef_rm=FIXEF_RM)
        return _pf_out(fit, _pf_rel)
    return ti_fn, peer_fn


for _p in ES_PANELS:
    check(f"event_study/{_p}", _p, "feols y ~ i(rel_time, ref=-1) | unit + year, CRV1 unit",
          peer_name="pyfixest")(_es_pair)


# ---------------------------------------------------------------- static TWFE (pyfixest)
def _twfe_pair(vcov, fixef_rm=None):
    def pair():
        def ti_fn(d):
            import twinimpact as ti
            kw = {"cluster": "unit"} if vcov == "CRV1" else {"vcov": vcov}
            r = ti.twfe(d, outcome="y", unit="unit", time="year", treatment="treated", **kw)
            return _frame_out(r)

        def peer_fn(d):
            import pyfixest as pf
            v = {"CRV1": "unit"} if vcov == "CRV1" else vcov
            fit = pf.feols("y ~ treated | unit + year", data=d, vcov=v,
                           fixef_rm=fixef_rm or FIXEF_RM)
            return _pf_out(fit, lambda n: "ATT" if n == "treated" else n)
        return ti_fn, peer_fn
    return pair


for _p in ["balanced", "gaps", "strkey_unbal", "few_treated"]:
    for _v in ["CRV1", "hetero", "iid"]:
        check(f"twfe/{_v}/{_p}", _p, f"feols y ~ treated | unit + year, vcov {_v}",
              peer_name="pyfixest")(_twfe_pair(_v))


# ---------------------------------------------------------------- PPML gravity (pyfixest)
def _ppml_pair(vcov, fes=("exp_year", "imp_year", "pair")):
    def pair():
        def regs(d):
            return ["treat", "x2"] if "x2" in d else ["treat"]

        def ti_fn(d):
            import twinimpact as ti
            kw = {"cluster": "pair"} if vcov == "CRV1" else {"vcov": vcov}
            r = ti.ppml(d, outcome="trade", regressors=regs(d), fixed_effects=fes, **kw)
            return _frame_out(r)

        def peer_fn(d):
            import pyfixest as pf
            v = {"CRV1": "pair"} if vcov == "CRV1" else vcov
            fit = pf.fepois(f"trade ~ {' + '.join(regs(d))} | {' + '.join(fes)}", data=d,
                            vcov=v, iwls_tol=1e-10, iwls_maxiter=100,
                            separation_check=["fe", "ir"])
            return _pf_out(fit, requested=regs(d))
        return ti_fn, peer_fn
    return pair


for _p in ["grav_dense", "grav_zeros0", "grav_zeros50", "grav_strkey", "grav_missing",
           "grav_separated"]:
    check(f"ppml/CRV1/{_p}", _p, "fepois trade ~ treat | exp_year + imp_year + pair, CRV1 pair",
          peer_name="pyfixest")(_ppml_pair("CRV1"))
for _v in ["hetero", "iid"]:
    check(f"ppml/{_v}/grav_dense", "grav_dense", f"fepois 3-way FE, vcov {_v}",
          peer_name="pyfixest")(_ppml_pair(_v))


# ---------------------------------------------------------------- Callaway-Sant'Anna (diff-diff)
def _cs_pair(control, covariate, unbalanced):
    def pair():
        def ti_fn(d):
            import twinimpact as ti
            r = ti.callaway_santanna(
                d, outcome="y", unit="unit", time="year", cohort="cohort",
                control_group=control, covariates=["x"] if covariate else None,
                method="dr", allow_unbalanced_panel=unbalanced)
            out = {k: v for k, v in _frame_out(r, nobs=False).items()}
            for agg in ("dynamic", "group", "simple"):
                a = r.aggregate(agg)
                for k, v in _frame_out(a, nobs=False).items():
                    kind, term = k.split(":", 1)
                    out[f"{kind}:{agg}/{term}"] = v
            return out

        def peer_fn(d):
            import diff_diff as dd
            r = dd.CallawaySantAnna(control_group=control, estimation_method="dr",
                                    allow_unbalanced_panel=unbalanced).fit(
                d, outcome="y", unit="unit", time="year", first_treat="cohort",
                covariates=["x"] if covariate else None, aggregate="all")
            out = _dd_effects(r.group_time_effects,
                              lambda k: f"ATT({int(k[0])},{int(k[1])})")
            out.update(_dd_effects(r.event_study_effects,
                                   lambda e: f"dynamic/rel_time={int(e)}"))
            out.update(_dd_effects(r.group_effects, lambda g: f"group/cohort={int(g)}"))
            out["est:simple/ATT"] = float(r.overall_att)
            out["se:simple/ATT"] = float(r.overall_se)
            return out
        return ti_fn, peer_fn
    return pair


CS_DR_REASON = (
    "diff-diff 3.13's DR ATT(g,t) divides the control augmentation by the number of treated "
    "units (Horvitz-Thompson); R DRDID::drdid_panel / did and moderndid normalise by the "
    "sum of the odds weights (Hajek). twinimpact = moderndid to 1e-12 (cs_md/* checks)")
CS_UNBAL_REASON = (
    "unbalanced panel (R did's repeated-cross-section path): diff-diff's ATT(g,t) SEs are "
    "sqrt(n/(n-1)) larger without covariates and differ by ~3% with them; twinimpact = "
    "moderndid (R did port) to 1e-12 (cs_md/* checks)")
for _p, _unb in [("balanced_cov", False), ("unbalanced_cov", True)]:
    for _c in ["never_treated", "not_yet_treated"]:
        for _x in [False, True]:
            _known = {}
            if _x:
                _known[r"^(est|se):"] = CS_DR_REASON
            if _unb:
                _known[r"^se:"] = CS_UNBAL_REASON
            check(f"cs/{_c}/{'x' if _x else 'nox'}/{_p}", _p,
                  f"CallawaySantAnna dr, {_c}, covariate={_x}", peer_name="diff-diff",
                  known=_known)(_cs_pair(_c, _x, _unb))


# ---------------------------------------------------------------- Sun-Abraham (diff-diff)
def _sa_pair():
    def ti_fn(d):
        import twinimpact as ti
        r = ti.sun_abraham(d, outcome="y", unit="unit", time="year", cohort="cohort",
                           cluster="unit")
        out = _es_terms(r)
        a = r.aggregate("simple")
        out.update({k.replace("ATT", "simple/ATT"): v
                    for k, v in _frame_out(a, nobs=False).items()})
        return out

    def peer_fn(d):
        import diff_diff as dd
        r = dd.SunAbraham(control_group="never_treated", cluster="unit").fit(
            d, outcome="y", unit="unit", time="year", first_treat="cohort")
        out = _dd_effects(r.event_study_effects, lambda e: f"rel_time={int(e)}")
        out["est:simple/ATT"] = float(r.overall_att)
        out["se:simple/ATT"] = float(r.overall_se)
        out["nobs"] = float(r.n_obs)
        return out
    return ti_fn, peer_fn


# gaps / entry_exit: units that lose every own pre-treatment row (kept: fixest's
# always-treated rule is per cohort)
for _p in ["balanced", "unbalanced", "strkey_unbal", "cohorts20", "gaps", "entry_exit"]:
    check(f"sun_abraham/{_p}", _p, "SunAbraham never-treated control, cluster unit",
          peer_name="diff-diff")(_sa_pair)


# ---------------------------------------------------------------- imputation, did2s
def _ti_es_static(est, d, static_key, post_only=False):
    """twinimpact ``est`` event study (rel_time terms) + its static ATT as ``static_key``."""
    import twinimpact as ti
    fn = getattr(ti, est)
    kw = dict(outcome="y", unit="unit", time="year", cohort="cohort", cluster="unit")
    r = fn(d, **kw, **({"horizons": True} if est == "imputation" else {"event_study": True}))
    out = {k: v for k, v in _es_terms(r).items() if "ATT" not in k and k != "nobs"
           and not (post_only and _num(k) < 0)}
    out.update({k.replace("ATT", static_key): v
                for k, v in _frame_out(fn(d, **kw), nobs=False).items()})
    return out


def _dd_es_overall(cls, d, static_key):
    """diff-diff ImputationDiD / TwoStageDiD: post-period event study + overall ATT."""
    import diff_diff as dd
    r = getattr(dd, cls)(cluster="unit").fit(
        d, outcome="y", unit="unit", time="year", first_treat="cohort",
        aggregate="event_study")
    out = _dd_effects({e: v for e, v in r.event_study_effects.items() if e >= 0},
                      lambda e: f"rel_time={int(e)}")
    out[f"est:{static_key}"] = float(r.overall_att)
    out[f"se:{static_key}"] = float(r.overall_se)
    return out


def _imp_pair():
    return (lambda d: _ti_es_static("imputation", d, "simple/ATT"),
            lambda d: _dd_es_overall("ImputationDiD", d, "simple/ATT"))


for _p in ["balanced", "unbalanced", "strkey_unbal", "cohorts20"]:
    check(f"imputation/{_p}", _p, "ImputationDiD cluster unit, event_study + overall",
          peer_name="diff-diff")(_imp_pair)


def _did2s_pf_pair():
    def peer_fn(d):
        import pyfixest as pf
        d2 = d.assign(treat=d["treated"].astype(bool))
        fit = pf.did2s(d2, yname="y", first_stage="~ 0 | unit + year",
                       second_stage="~ i(rel_time, ref=-1.0)", treatment="treat",
                       cluster="unit")
        out = _pf_out(fit, _pf_rel)
        out.pop("nobs", None)
        st = pf.did2s(d2, yname="y", first_stage="~ 0 | unit + year",
                      second_stage="~ treat", treatment="treat", cluster="unit")
        o2 = _pf_out(st, lambda n: "static/ATT" if "treat" in n else None)
        o2.pop("nobs", None)
        out.update(o2)
        return out
    return lambda d: _ti_es_static("did2s", d, "static/ATT"), peer_fn


DID2S_PF_REASON = (
    "pyfixest did2s solves the first stage by alternating projections to ~1e-5 (no "
    "tolerance argument); an exact dense least-squares first stage agrees with twinimpact "
    "to 1e-12 (tests/test_peer_conventions.py)")
DID2S_PF_BUG = ("pyfixest 0.60 did2s raises 'operands could not be broadcast' when its "
                "first stage drops rows (singleton fixed effects: here 2 units with a "
                "single untreated period, 17 rows)")
for _p in ["small_balanced", "small_unbalanced", "small_strkey"]:
    check(f"did2s/pyfixest/{_p}", _p, "pyfixest did2s, i(rel_time, ref=-1) + static",
          peer_name="pyfixest", known={r"^est:": DID2S_PF_REASON},
          peer_bug=DID2S_PF_BUG if _p != "small_balanced" else None)(_did2s_pf_pair)


def _did2s_dd_pair():
    return (lambda d: _ti_es_static("did2s", d, "static/ATT", post_only=True),
            lambda d: _dd_es_overall("TwoStageDiD", d, "static/ATT"))


for _p in ["balanced", "unbalanced"]:
    check(f"did2s/diff-diff/{_p}", _p, "TwoStageDiD cluster unit", peer_name="diff-diff")(
        _did2s_dd_pair)


# ---------------------------------------------------------------- ETWFE (diff-diff)
def _etwfe_pair(control):
    def pair():
        def ti_fn(d):
            import twinimpact as ti
            r = ti.etwfe(d, outcome="y", unit="unit", time="year", cohort="cohort",
                         control_group=control, cluster="unit")
            out = _frame_out(r, nobs=False)
            for agg in ("dynamic", "group", "simple"):
                for k, v in _frame_out(r.aggregate(agg), nobs=False).items():
                    kind, term = k.split(":", 1)
                    out[f"{kind}:{agg}/{term}"] = v
            return out

        def peer_fn(d):
            import diff_diff as dd
            r = dd.WooldridgeDiD(control_group=control, cluster="unit").fit(
                d, outcome="y", unit="unit", time="year", cohort="cohort")
            out = {}
            out.update(_dd_effects(r.group_time_effects,
                                   lambda k: f"ATT({int(k[0])},{int(k[1])})"))
            for agg, key in (("event", "dynamic/rel_time="), ("group", "group/cohort=")):
                r.aggregate(agg)
                eff = r.event_study_effects if agg == "event" else r.group_effects
                out.update(_dd_effects(eff, lambda k, key=key: f"{key}{int(k)}"))
            r.aggregate("simple")
            out["est:simple/ATT"] = float(r.overall_att)
            out["se:simple/ATT"] = float(r.overall_se)
            return out
        return ti_fn, peer_fn
    return pair


for _p in ["balanced", "unbalanced", "strkey_unbal"]:
    for _c in ["not_yet_treated", "never_treated"]:
        check(f"etwfe/{_c}/{_p}", _p, f"WooldridgeDiD ols, {_c}, cluster unit",
              peer_name="diff-diff")(_etwfe_pair(_c))


# ---------------------------------------------------------------- synthetic DiD (diff-diff)
def _sdid_pair():
    def ti_fn(d):
        import twinimpact as ti
        r = ti.synthetic_did(d, outcome="y", unit="unit", time="year", treated="treated",
                             se=None)
        out = {"est:ATT": float(r.params.iloc[0])}
        diag = r.diagnostics
        for key, pre in (("unit_weights", "w:"), ("time_weights", "lambda:")):
            wts = diag.get(key) if hasattr(diag, "get") else None
            if wts is None:
                wts = getattr(r, key, None)
            if wts is not None:
                for k, v in dict(wts).items():
                    out[f"{pre}{k}"] = float(v)
        return out

    def peer_fn(d):
        import diff_diff as dd
        post = sorted(d.loc[d["treated"] == 1, "year"].unique().tolist())
        r = dd.SyntheticDiD(variance_method="placebo", n_bootstrap=50, seed=0).fit(
            d, outcome="y", treatment="ever", unit="unit", time="year", post_periods=post)
        out = {"est:ATT": float(r.att)}
        for k, v in dict(r.unit_weights).items():
            out[f"w:{k}"] = float(v)
        for k, v in dict(r.time_weights).items():
            out[f"lambda:{k}"] = float(v)
        return out
    return ti_fn, peer_fn


for _p in ["sdid_block", "sdid_block_str"]:
    check(f"synthetic_did/{_p}", _p, "SyntheticDiD point estimate and weights",
          peer_name="diff-diff")(_sdid_pair)


# ---------------------------------------------------------------- wild bootstrap (wildboottest)
def _wild_pair(weights, fe):
    def pair():
        def ti_fn(d):
            import twinimpact as ti
            r = ti.wild_cluster_bootstrap(
                d, outcome="y", regressors=["x"], cluster="g", term="x", n_reps=9999,
                seed=1, weight_type=weights, fixed_effects=("f",) if fe else (),
                conf_int=False)
            return {"est:t": float(r.statistic), "p:p_value": float(r.p_value)}

        def peer_fn(d):
            import pandas as pd
            import statsmodels.api as sm
            from wildboottest.wildboottest import wildboottest
            X = d[["x"]]
            if fe:
                X = pd.concat([X, pd.get_dummies(d["f"], prefix="f", drop_first=True)
                               .astype(float)], axis=1)
            model = sm.OLS(d["y"], sm.add_constant(X))
            r = wildboottest(model, B=9999, cluster=d["g"], param="x", seed=1,
                             weights_type="norm" if weights == "normal" else weights,
                             show=False)
            return {"est:t": float(r["statistic"].iloc[0]),
                    "p:p_value": float(r["p-value"].iloc[0])}
        return ti_fn, peer_fn
    return pair


for _w in ["rademacher", "webb", "mammen", "normal"]:
    check(f"wild/{_w}/nofe", "wild", f"WCR, {_w}, B=9999", peer_name="wildboottest")(
        _wild_pair(_w, False))
check("wild/rademacher/fe", "wild_fe", "WCR, rademacher, FE as dummies",
      peer_name="wildboottest")(_wild_pair("rademacher", True))


# ---------------------------------------------------------------- messy panels (pyfixest)
for _p in ["messy", "messy_str"]:
    check(f"event_study/{_p}", _p, "singletons, always-treated, cohort 2050, thin last year",
          peer_name="pyfixest")(_es_pair)
    for _v in ["CRV1", "hetero"]:
        check(f"twfe/{_v}/{_p}", _p, f"feols y ~ treated | unit + year, vcov {_v}",
              peer_name="pyfixest")(_twfe_pair(_v))
check("twfe/hetero/messy/pyfixest_default", "messy",
      "feols with pyfixest's default fixef_rm='singleton'", peer_name="pyfixest",
      known={r"^(nobs|se:)": SINGLETON_REASON})(_twfe_pair("hetero", "singleton"))


def _es_window_pair(binned):
    def pair():
        def ti_fn(d):
            import twinimpact as ti
            r = ti.event_study(d, outcome="y", unit="unit", time="year", cohort="cohort",
                               leads=3, lags=4, bin_endpoints=binned, cluster="unit")
            return {k: v for k, v in _es_terms(r).items() if "ATT" not in k}

        def peer_fn(d):
            import numpy as np
            import pyfixest as pf
            rel = d["rel_time"].to_numpy()
            never = ~((d["cohort"] > 0) & (d["cohort"] <= d["year"].max())).to_numpy()
            if binned:
                d = d.assign(rel_b=np.where(never, -1, np.clip(rel, -3, 4)))
            else:
                d = d.loc[never | ((rel >= -3) & (rel <= 4))].assign(rel_b=lambda x: x["rel_time"])
            fit = pf.feols("y ~ i(rel_b, ref=-1) | unit + year", data=d, vcov={"CRV1": "unit"},
                           fixef_rm=FIXEF_RM)
            return _pf_out(fit, _pf_rel)
        return ti_fn, peer_fn
    return pair


for _p in ["unbalanced", "messy"]:
    for _b in [True, False]:
        check(f"event_study/window_{'bin' if _b else 'drop'}/{_p}", _p,
              f"leads=3 lags=4 bin_endpoints={_b} vs feols on the binned/trimmed rel_time",
              peer_name="pyfixest")(_es_window_pair(_b))


def _twfe_w_pair():
    def ti_fn(d):
        import twinimpact as ti
        return _frame_out(ti.twfe(d, outcome="y", unit="unit", time="year",
                                  treatment="treated", weights="w", cluster="unit"))

    def peer_fn(d):
        import pyfixest as pf
        fit = pf.feols("y ~ treated | unit + year", data=d, weights="w", vcov={"CRV1": "unit"},
                       fixef_rm=FIXEF_RM)
        return _pf_out(fit, lambda n: "ATT" if n == "treated" else n)
    return ti_fn, peer_fn


check("twfe/weights/messy", "messy", "feols with analytic weights w, CRV1 unit",
      peer_name="pyfixest")(_twfe_w_pair)


def _ppml_extra_pair(kind):
    def pair():
        def ti_fn(d):
            import twinimpact as ti
            kw = dict(outcome="trade", regressors=["treat", "sep"] if kind == "ir" else ["treat"],
                      fixed_effects=("exp_year", "imp_year", "pair"), cluster="pair")
            if kind == "offset":
                kw = {**kw, "offset": "lexpo"}
                d = d.assign(lexpo=__import__("numpy").log(d["expo"]))
            if kind == "weights":
                kw = {**kw, "weights": "expo"}
            if kind == "twoway":
                kw = {**kw, "fixed_effects": ("exporter", "importer")}
            return _frame_out(ti.ppml(d, **kw))

        def peer_fn(d):
            import numpy as np
            import pyfixest as pf
            rhs = "treat + sep" if kind == "ir" else "treat"
            fe = "exporter + importer" if kind == "twoway" else "exp_year + imp_year + pair"
            kw = {}
            if kind == "offset":
                d = d.assign(lexpo=np.log(d["expo"]))
                kw["offset"] = "lexpo"
            if kind == "weights":
                kw["weights"] = "expo"
            fit = pf.fepois(f"trade ~ {rhs} | {fe}", data=d, vcov={"CRV1": "pair"},
                            iwls_tol=1e-10, iwls_maxiter=100, separation_check=["fe", "ir"],
                            **kw)
            return _pf_out(fit, requested=rhs.split(" + "))
        return ti_fn, peer_fn
    return pair


for _k in ["ir", "offset", "weights", "twoway"]:
    check(f"ppml/{_k}/grav_ir", "grav_ir", f"fepois 3-way FE, {_k}", peer_name="pyfixest")(
        _ppml_extra_pair(_k))


# ---------------------------------------------------------------- CS options (moderndid, R did port)
def _cs_md_pair(control, covariate, unbalanced, method="dr", base="varying", antic=0):
    def pair():
        def ti_fn(d):
            import twinimpact as ti
            r = ti.callaway_santanna(
                d, outcome="y", unit="unit", time="year", cohort="cohort",
                control_group=control, covariates=["x"] if covariate else None,
                method=method, base_period=base, anticipation=antic,
                allow_unbalanced_panel=unbalanced)
            out = {k: v for k, v in _frame_out(r, nobs=False).items()}
            for agg in ("dynamic", "group", "simple", "calendar"):
                for k, v in _frame_out(r.aggregate(agg), nobs=False).items():
                    kind, term = k.split(":", 1)
                    out[f"{kind}:{agg}/{term}"] = v
            return out

        def peer_fn(d):
            import moderndid as md
            import numpy as np
            res = md.att_gt(data=d, yname="y", tname="year", idname="unit", gname="cohort",
                            boot=False, panel=not unbalanced,
                            allow_unbalanced_panel=unbalanced,
                            control_group={"never_treated": "nevertreated",
                                           "not_yet_treated": "notyettreated"}[control],
                            xformla="~x" if covariate else None, est_method=method,
                            base_period=base, anticipation=antic)
            out = {}
            for g, t, a, s in zip(res.groups, res.times, res.att_gt, res.se_gt, strict=True):
                out[f"est:ATT({int(g)},{int(t)})"] = float(a)
                out[f"se:ATT({int(g)},{int(t)})"] = float(s)
            if unbalanced:  # moderndid's cohort vector is not in sorted-id order (see
                # tests/reference/callaway_santanna/make_moderndid_unbalanced_reference.py)
                ids = np.unique(d["unit"].to_numpy())
                g_by = d.groupby("unit")["cohort"].first().reindex(ids).to_numpy(float)
                g_by[g_by == 0] = np.inf
                res = res._replace(G=g_by)
            for agg, key in (("dynamic", "rel_time="), ("group", "cohort="),
                             ("calendar", "time="), ("simple", None)):
                a = md.aggte(res, type=agg, boot=False)
                if key is None:
                    out["est:simple/ATT"] = float(a.overall_att)
                    out["se:simple/ATT"] = float(a.overall_se)
                    continue
                out[f"est:{agg}/ATT"] = float(a.overall_att)
                out[f"se:{agg}/ATT"] = float(a.overall_se)
                for e, v, s in zip(a.event_times, a.att_by_event, a.se_by_event, strict=True):
                    out[f"est:{agg}/{key}{int(e)}"] = float(v)
                    out[f"se:{agg}/{key}{int(e)}"] = float(s)
            return out
        return ti_fn, peer_fn
    return pair


for _p, _unb in [("balanced_cov", False), ("unbalanced_cov", True)]:
    for _c in ["never_treated", "not_yet_treated"]:
        for _m in ["dr", "reg", "ipw"]:
            check(f"cs_md/{_c}/{_m}/{_p}", _p, f"moderndid att_gt {_m}, {_c}, ~x",
                  peer_name="moderndid")(_cs_md_pair(_c, True, _unb, _m))
    check(f"cs_md/universal/{_p}", _p, "moderndid att_gt, base_period universal, no x",
          peer_name="moderndid", known={
              r"^se:ATT\(": "universal base: the normalised cell ATT(g, g-1) = 0 is reported "
              "with SE 0 and listed in diagnostics['normalized_cells']; R did prints NA "
              "(se <= 1e-7 -> NA)"})(_cs_md_pair("never_treated", False, _unb, base="universal"))
    check(f"cs_md/anticipation1/{_p}", _p, "moderndid att_gt, anticipation=1, not-yet, ~x",
          peer_name="moderndid")(_cs_md_pair("not_yet_treated", True, _unb, antic=1))
check("cs_md/never_treated/nox/cohorts20_bal", "cohorts20_bal", "moderndid att_gt, 24 cohorts",
      peer_name="moderndid")(_cs_md_pair("never_treated", False, False))


# ---------------------------------------------------------------- SA with a covariate, SDID jackknife
def _sa_cov_pair():
    def ti_fn(d):
        import twinimpact as ti
        r = ti.sun_abraham(d, outcome="y", unit="unit", time="year", cohort="cohort",
                           covariates=["xt"], cluster="unit")
        return {k: v for k, v in _es_terms(r).items() if "ATT" not in k}

    def peer_fn(d):
        import diff_diff as dd
        r = dd.SunAbraham(control_group="never_treated", cluster="unit").fit(
            d, outcome="y", unit="unit", time="year", first_treat="cohort", covariates=["xt"])
        out = _dd_effects(r.event_study_effects, lambda e: f"rel_time={int(e)}")
        out["nobs"] = float(r.n_obs)
        return out
    return ti_fn, peer_fn


check("sun_abraham/covariate/unbalanced_cov", "unbalanced_cov",
      "SunAbraham with a time-varying covariate", peer_name="diff-diff")(_sa_cov_pair)


def _sdid_jk_pair():
    def ti_fn(d):
        import twinimpact as ti
        r = ti.synthetic_did(d, outcome="y", unit="unit", time="year", treated="treated",
                             se="jackknife")
        return {"est:ATT": float(r.params.iloc[0]), "se:ATT": float(r.std_errors.iloc[0])}

    def peer_fn(d):
        import diff_diff as dd
        post = sorted(d.loc[d["treated"] == 1, "year"].unique().tolist())
        r = dd.SyntheticDiD(variance_method="jackknife").fit(
            d, outcome="y", treatment="ever", unit="unit", time="year", post_periods=post)
        return {"est:ATT": float(r.att), "se:ATT": float(r.se)}
    return ti_fn, peer_fn


for _p in ["sdid_block", "sdid_block_str"]:
    check(f"synthetic_did/jackknife/{_p}", _p, "SyntheticDiD jackknife SE (deterministic)",
          peer_name="diff-diff")(_sdid_jk_pair)


def _imp_pre_pair():
    def ti_fn(d):
        import twinimpact as ti
        r = ti.imputation(d, outcome="y", unit="unit", time="year", cohort="cohort",
                          horizons=True, pretrends=True, cluster="unit")
        return {k: v for k, v in _es_terms(r).items() if "ATT" not in k and k != "nobs"}

    def peer_fn(d):
        import diff_diff as dd
        r = dd.ImputationDiD(cluster="unit", pretrends=True).fit(
            d, outcome="y", unit="unit", time="year", first_treat="cohort",
            aggregate="event_study")
        return _dd_effects({e: v for e, v in r.event_study_effects.items()
                            if v.get("n_obs", 1) != 0 and e != -1},
                           lambda e: f"rel_time={int(e)}")
    return ti_fn, peer_fn


for _p in ["balanced", "unbalanced"]:
    check(f"imputation/pretrends/{_p}", _p, "ImputationDiD pretrends=True", peer_name="diff-diff")(
        _imp_pre_pair)


def _etwfe_pois_pair(control):
    def pair():
        def ti_fn(d):
            import twinimpact as ti
            # R etwfe / jwdid method(poisson): cohort and period FE (the pooled form);
            # cells are log-points in twinimpact, so compare the response-scale averages
            r = ti.etwfe(d, outcome="y_count", unit="unit", time="year", cohort="cohort",
                         control_group=control, family="poisson", cluster="unit",
                         fixed_effects=("cohort", "year"))
            out = {}
            for agg in ("dynamic", "simple"):
                for k, v in _frame_out(r.aggregate(agg), nobs=False).items():
                    kind, term = k.split(":", 1)
                    out[f"{kind}:{agg}/{term}"] = v
            return out

        def peer_fn(d):
            import diff_diff as dd
            r = dd.WooldridgeDiD(method="poisson", control_group=control, cluster="unit").fit(
                d, outcome="y_count", unit="unit", time="year", cohort="cohort")
            r.aggregate("event")
            out = _dd_effects(r.event_study_effects, lambda e: f"dynamic/rel_time={int(e)}")
            r.aggregate("simple")
            out["est:simple/ATT"] = float(r.overall_att)
            out["se:simple/ATT"] = float(r.overall_se)
            return out
        return ti_fn, peer_fn
    return pair


ETWFE_POIS_NEVER = (
    "diff-diff 3.13 adds pre-treatment cells under never_treated only for method='ols'; R "
    "etwfe(cgroup='never') and twinimpact saturate every cell t != g-1 for Poisson too "
    "(twinimpact = a dummy-variable Poisson GLM oracle to 1e-12, tests/test_peer_conventions.py)")
for _c in ["not_yet_treated", "never_treated"]:
    check(f"etwfe/poisson/{_c}/small_balanced", "small_balanced",
          f"WooldridgeDiD poisson, {_c}", peer_name="diff-diff",
          known={} if _c == "not_yet_treated" else
          {r"^(est|se):": ETWFE_POIS_NEVER})(_etwfe_pois_pair(_c))


# ---------------------------------------------------------------- batch 2: more options
def _feols_pair(ti_call, fml, vcov, rename=None, vcov_kwargs=None):
    """A twinimpact TWFE-type fit vs pyfixest feols on the same formula."""
    def pair():
        def ti_fn(d):
            import twinimpact as ti
            r = ti_call(ti, d)
            out = _es_terms(r) if "rel_time" in fml else _frame_out(r)
            return {k: v for k, v in out.items() if not k.endswith(":ATT")
                    or "rel_time" not in fml}

        def peer_fn(d):
            import pyfixest as pf
            fit = pf.feols(fml, data=d, vcov=vcov, fixef_rm=FIXEF_RM,
                           **({"vcov_kwargs": vcov_kwargs} if vcov_kwargs else {}))
            return _pf_out(fit, rename or (lambda n: _pf_rel(n) if "rel_time" in n else
                                           ("ATT" if n == "treated" else n)))
        return ti_fn, peer_fn
    return pair


for _p in ["messy", "strkey_unbal"]:
    check(f"twfe/twoway_cluster/{_p}", _p, "feols y ~ treated | unit + year, CRV1 unit+year",
          peer_name="pyfixest")(_feols_pair(
              lambda ti, d: ti.twfe(d, outcome="y", unit="unit", time="year",
                                    treatment="treated", cluster=("unit", "year")),
              "y ~ treated | unit + year", {"CRV1": "unit+year"}))
check("event_study/covariate/unbalanced_cov", "unbalanced_cov",
      "feols y ~ i(rel_time, ref=-1) + xt | unit + year, CRV1 unit", peer_name="pyfixest")(
    _feols_pair(lambda ti, d: ti.event_study(d, outcome="y", unit="unit", time="year",
                                             cohort="cohort", covariates=["xt"],
                                             cluster="unit"),
                "y ~ i(rel_time, ref=-1) + xt | unit + year", {"CRV1": "unit"},
                rename=lambda n: "xt" if n == "xt" else _pf_rel(n)))
def _two_refs_pair():
    """ref=[-1, -5]; pyfixest 0.60's i() takes one reference, so the peer gets explicit
    dummies for every other relative period (same design)."""
    def ti_fn(d):
        import twinimpact as ti
        r = ti.event_study(d, outcome="y", unit="unit", time="year", cohort="cohort",
                           ref=[-1, -5], cluster="unit")
        return {k: v for k, v in _es_terms(r).items() if not k.endswith(":ATT")}

    def peer_fn(d):
        import pyfixest as pf
        levels = sorted(set(d["rel_time"].astype(int)) - {-1, -5})
        dum = {f"e{'m' if e < 0 else 'p'}{abs(e)}": (d["rel_time"] == e).astype(float)
               for e in levels}
        fit = pf.feols(f"y ~ {' + '.join(dum)} | unit + year", data=d.assign(**dum),
                       vcov={"CRV1": "unit"}, fixef_rm=FIXEF_RM)
        return _pf_out(fit, lambda n: f"rel_time={'-' if n[1] == 'm' else ''}{n[2:]}")
    return ti_fn, peer_fn


check("event_study/two_refs/unbalanced", "unbalanced",
      "ref=[-1, -5] vs feols with explicit dummies", peer_name="pyfixest")(_two_refs_pair)


def _ppml_more_pair(kind):
    def pair():
        def ti_fn(d):
            import twinimpact as ti
            if kind == "twoway_cluster":
                r = ti.ppml(d, outcome="trade", regressors=["treat"],
                            fixed_effects=("exp_year", "imp_year", "pair"),
                            cluster=("exporter", "importer"))
            elif kind == "collinear":
                r = ti.ppml(d, outcome="trade", regressors=["treat", "dist"],
                            fixed_effects=("exp_year", "imp_year", "pair"), cluster="pair")
            else:  # FE given as interactions of columns
                r = ti.ppml(d, outcome="trade", regressors=["treat", "dist"],
                            fixed_effects=(("exporter", "year"), ("importer", "year")),
                            cluster="pair")
            return _frame_out(r)

        def peer_fn(d):
            import pyfixest as pf
            kw = dict(iwls_tol=1e-10, iwls_maxiter=100, separation_check=["fe", "ir"])
            if kind == "twoway_cluster":
                fit = pf.fepois("trade ~ treat | exp_year + imp_year + pair", data=d,
                                vcov={"CRV1": "exporter+importer"}, **kw)
            elif kind == "collinear":
                fit = pf.fepois("trade ~ treat + dist | exp_year + imp_year + pair", data=d,
                                vcov={"CRV1": "pair"}, **kw)
            else:
                fit = pf.fepois("trade ~ treat + dist | exporter^year + importer^year",
                                data=d, vcov={"CRV1": "pair"}, **kw)
            return _pf_out(fit, requested=["treat"] if kind == "twoway_cluster"
                           else ["treat", "dist"])
        return ti_fn, peer_fn
    return pair


for _k, _p in [("twoway_cluster", "grav_dense"), ("collinear", "grav_dense"),
               ("fe_interactions", "grav_strkey")]:
    check(f"ppml/{_k}/{_p}", _p, f"fepois 3-way FE, {_k}", peer_name="pyfixest")(
        _ppml_more_pair(_k))


def _did2s_state_pair():
    def ti_fn(d):
        import twinimpact as ti
        r = ti.did2s(d.assign(state=d["unit"].astype(str).str[-1]), outcome="y", unit="unit",
                     time="year", cohort="cohort", first_stage=("state", "year"),
                     cluster="unit")
        return {k.replace("ATT", "static/ATT"): v for k, v in _frame_out(r, nobs=False).items()}

    def peer_fn(d):
        import pyfixest as pf
        d2 = d.assign(treat=d["treated"].astype(bool), state=d["unit"].astype(str).str[-1])
        st = pf.did2s(d2, yname="y", first_stage="~ 0 | state + year",
                      second_stage="~ treat", treatment="treat", cluster="unit")
        return {k: v for k, v in _pf_out(st, lambda n: "static/ATT" if "treat" in n else None)
                .items() if k != "nobs"}
    return ti_fn, peer_fn


check("did2s/first_stage_state/small_balanced", "small_balanced",
      "pyfixest did2s first_stage '~ 0 | state + year'", peer_name="pyfixest",
      known={r"^est:": DID2S_PF_REASON})(_did2s_state_pair)


def _bacon_pair():
    def ti_fn(d):
        import twinimpact as ti
        b = ti.bacon_decomposition(d, outcome="y", unit="unit", time="year", cohort="cohort")
        out = {"est:twfe": float(b.twfe)}
        for typ, row in b.by_type.iterrows():
            out[f"w:{typ}"] = float(row["weight"])
            out[f"est:{typ}"] = float(row["estimate"])
        return out

    def peer_fn(d):
        import diff_diff as dd
        r = dd.bacon_decompose(d, outcome="y", unit="unit", time="year", first_treat="cohort")
        out = {"est:twfe": float(r.twfe_estimate)}
        names = {"earlier_vs_later": "earlier_vs_later", "later_vs_earlier": "later_vs_earlier",
                 "treated_vs_never": "treated_vs_never"}
        for c in r.comparisons:
            typ = names.get(c.comparison_type, c.comparison_type)
            out.setdefault(f"w:{typ}", 0.0)
            out.setdefault(f"_s:{typ}", 0.0)
            out[f"w:{typ}"] += float(c.weight)
            out[f"_s:{typ}"] += float(c.weight) * float(c.estimate)
        for k in [k for k in out if k.startswith("_s:")]:
            typ = k[3:]
            out[f"est:{typ}"] = out.pop(k) / out[f"w:{typ}"]
        return out
    return ti_fn, peer_fn


for _p in ["balanced", "cohorts20_bal"]:
    check(f"bacon/{_p}", _p, "diff-diff bacon_decompose (exact weights)",
          peer_name="diff-diff")(_bacon_pair)


def _dcdh_pair(effects, placebo):
    def pair():
        def ti_fn(d):
            import twinimpact as ti
            r = ti.did_multiplegt(d, outcome="y", unit="unit", time="year",
                                  treatment="treated", effects=effects, placebo=placebo)
            f = r.to_frame()
            out = {}
            for _, row in f.iterrows():
                key = "ATT" if row["term"] == "ATT" else f"rel_time={int(row['rel_time'])}"
                out[f"est:{key}"] = float(row["estimate"])
                out[f"se:{key}"] = float(row["std_error"])
            return out

        def peer_fn(d):
            import polars as pl
            from did_multiplegt_dyn import DidMultiplegtDyn
            m = DidMultiplegtDyn(pl.from_pandas(d[["unit", "year", "treated", "y"]]),
                                 outcome="y", group="unit", time="year", treatment="treated",
                                 effects=effects, placebo=placebo).fit()
            res = m.result["did_multiplegt_dyn"]
            out = {}
            for block, sign in (("Effects", 1), ("Placebos", -1)):
                tab = res.get(block)
                for i, (_, row) in enumerate(tab.iterrows(), start=1):
                    out[f"est:rel_time={sign * i}"] = float(row["Estimate"])
                    out[f"se:rel_time={sign * i}"] = float(row["SE"])
            ate = res.get("ATE")
            if ate is not None:
                out["est:ATT"] = float(ate.iloc[0]["Estimate"])
                out["se:ATT"] = float(ate.iloc[0]["SE"])
            return out
        return ti_fn, peer_fn
    return pair


for _p in ["small_balanced", "small_unbalanced", "small_strkey"]:
    check(f"did_multiplegt/{_p}", _p, "py did_multiplegt_dyn 0.1.9, effects=4 placebo=2",
          peer_name="did_multiplegt_dyn")(_dcdh_pair(4, 2))


def _wild_wcu_pair():
    def ti_fn(d):
        import twinimpact as ti
        r = ti.wild_cluster_bootstrap(d, outcome="y", regressors=["x"], cluster="g", term="x",
                                      n_reps=9999, seed=1, impose_null=False, conf_int=False)
        return {"est:t": float(r.statistic), "p:p_value": float(r.p_value)}

    def peer_fn(d):
        import statsmodels.api as sm
        from wildboottest.wildboottest import wildboottest
        model = sm.OLS(d["y"], sm.add_constant(d[["x"]]))
        r = wildboottest(model, B=9999, cluster=d["g"], param="x", seed=1, impose_null=False,
                         show=False)
        return {"est:t": float(r["statistic"].iloc[0]), "p:p_value": float(r["p-value"].iloc[0])}
    return ti_fn, peer_fn


check("wild/WCU/nofe", "wild", "WCU (impose_null=False), rademacher, B=9999",
      peer_name="wildboottest")(_wild_wcu_pair)


# ---------------------------------------------------------------- a year missing for everyone
check("event_study/year_gap", "year_gap", "feols i(rel_time, ref=-1), year 2005 absent",
      peer_name="pyfixest")(_es_pair)
check("cs_md/never_treated/dr/year_gap", "year_gap",
      "moderndid att_gt dr ~x, year 2005 absent (varying base = previous observed year)",
      peer_name="moderndid")(_cs_md_pair("never_treated", True, False))
check("cs_md/not_yet_treated/reg/year_gap", "year_gap",
      "moderndid att_gt reg ~x, not-yet, year 2005 absent", peer_name="moderndid")(
    _cs_md_pair("not_yet_treated", True, False, "reg"))


# ============================================================================ sides
def run_side(side: str, names: list[str], panel_dir: Path, out: Path) -> None:
    import pandas as pd
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(HERE))
    res = {}
    for name in names:
        c = CHECKS[name]
        d = pd.read_parquet(panel_dir / f"{c['panel']}.parquet")
        t0 = time.process_time()
        try:
            vals = c[side](d)
            res[name] = {"ok": True, "values": vals, "cpu_s": time.process_time() - t0}
        except Exception as e:  # reported in the matrix
            res[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:400],
                         "tb": traceback.format_exc()[-1500:]}
        out.write_text(json.dumps(res))


def compare(ti_vals: dict, peer_vals: dict, tol_est: float, tol_se: float,
            known: dict) -> dict:
    common = sorted(set(ti_vals) & set(peer_vals))
    scale = max([abs(v) for k, v in peer_vals.items() if k.startswith("est:")
                 and math.isfinite(v)] or [1.0])
    worst = {"est": 0.0, "se": 0.0, "other": 0.0}
    bad, conv = [], []
    for k in common:
        a, b = ti_vals[k], peer_vals[k]
        if not (math.isfinite(a) and math.isfinite(b)):
            if math.isfinite(a) != math.isfinite(b):
                reason = next((r for pat, r in known.items() if re.search(pat, k)), None)
                (conv if reason else bad).append((k, a, b) + ((reason,) if reason else ()))
            continue
        if k.startswith("p:"):
            # Monte-Carlo error of a bootstrap p-value with B = 9999: sd = sqrt(p(1-p)/B)
            sd = math.sqrt(max(b * (1 - b), 1e-4) / 9999)
            rel = abs(a - b) / (sd * math.sqrt(2))
            tol, kind = 3.0, "other"
        elif k.startswith("se:"):
            rel = abs(a - b) / max(abs(b), 1e-12)
            tol, kind = tol_se, "se"
        elif k == "nobs":
            rel, tol, kind = abs(a - b), 0.5, "other"
        else:
            rel = abs(a - b) / max(abs(b), 1e-8 * scale, 1e-12)
            tol, kind = tol_est, "est"
        worst[kind] = max(worst[kind], rel)
        if rel > tol:
            reason = next((r for pat, r in known.items() if re.search(pat, k)), None)
            (conv if reason else bad).append((k, a, b) + ((reason,) if reason else ()))
    only_ti = sorted(set(ti_vals) - set(peer_vals))
    only_peer = sorted(set(peer_vals) - set(ti_vals))
    pvals = {k: [ti_vals[k], peer_vals[k]] for k in common if k.startswith("p:")}
    return {"n_common": len(common), "worst": worst, "p_values": pvals, "bad": bad, "convention": conv,
            "only_ti": only_ti, "only_peer": only_peer}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, help="check-name prefixes")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--peer-python", default="/tmp/venv-peers/bin/python")
    ap.add_argument("--ti-src", default=str(ROOT / "src"))
    ap.add_argument("--tol-est", type=float, default=1e-6)
    ap.add_argument("--tol-se", type=float, default=1e-4)
    ap.add_argument("--jsonl", default=str(HERE / "crosscheck.jsonl"))
    ap.add_argument("--side", choices=["ti", "peer"], help=argparse.SUPPRESS)
    ap.add_argument("--panel-dir", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--names", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--verbose", "-v", action="store_true")
    ap.add_argument("--md", help="also write the matrix as a markdown table to this path")
    a = ap.parse_args()
    if a.side:
        run_side(a.side, a.names, Path(a.panel_dir), Path(a.out))
        return
    names = [n for n in CHECKS if a.only is None or any(n.startswith(p) for p in a.only)]
    if a.list:
        for n in names:
            print(f"{n:45s} {CHECKS[n]['peer_name']:12s} {CHECKS[n]['note']}")
        return
    sys.path.insert(0, str(HERE))
    builders = _panel_builders()
    with tempfile.TemporaryDirectory(prefix="crosscheck-") as tmp:
        tmp = Path(tmp)
        for p in sorted({CHECKS[n]["panel"] for n in names}):
            builders[p]().to_parquet(tmp / f"{p}.parquet", index=False)
        outs = {}
        procs = []
        jobs = [("ti", "ti", sys.executable, a.ti_src, names)]
        by_py: dict[str, list[str]] = {}
        for n in names:
            py = PEER_PYTHON.get(CHECKS[n]["peer_name"], a.peer_python)
            by_py.setdefault(py, []).append(n)
        jobs += [(f"peer{i}", "peer", py, "", ns) for i, (py, ns) in enumerate(by_py.items())]
        for tag, side, py, src, ns in jobs:
            env = {**os.environ, "PYTHONPATH": src, "OPENBLAS_NUM_THREADS": "1",
                   "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
            outs[tag] = tmp / f"{tag}.json"
            procs.append(subprocess.Popen(
                [py, str(Path(__file__).resolve()), "--side", side, "--panel-dir", str(tmp),
                 "--out", str(outs[tag]), "--names", *ns], env=env))
        for p in procs:
            p.wait()
        res = {"ti": {}, "peer": {}}
        for tag, side, *_ in jobs:
            if outs[tag].exists():
                res[side].update(json.loads(outs[tag].read_text()))
    rows = []
    with open(a.jsonl, "a") as fh:
        for n in names:
            c = CHECKS[n]
            t, p = res["ti"].get(n), res["peer"].get(n)
            row = {"check": n, "peer": c["peer_name"], "panel": c["panel"],
                   "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            if t and t["ok"] and (not p or not p["ok"]) and c.get("peer_bug"):
                row["status"] = "peer-bug"
                row["peer_error"] = (p or {}).get("error")
                row["reason"] = c["peer_bug"]
            elif not t or not t["ok"] or not p or not p["ok"]:
                row["status"] = "error"
                row["ti_error"] = (t or {}).get("error")
                row["peer_error"] = (p or {}).get("error")
                if a.verbose:
                    row["ti_tb"] = (t or {}).get("tb")
                    row["peer_tb"] = (p or {}).get("tb")
            else:
                cmp_ = compare(t["values"], p["values"], a.tol_est, a.tol_se, c["known"])
                row.update(cmp_)
                row["status"] = ("DIFFERS" if cmp_["bad"] else
                                 "convention" if cmp_["convention"] else
                                 "agree" if cmp_["n_common"] else "nothing-compared")
            rows.append(row)
            fh.write(json.dumps(row, default=str) + "\n")
    for r in rows:
        w = r.get("worst", {})
        print(f"{r['check']:42s} {r['peer']:12s} {r['status']:10s} "
              f"n={r.get('n_common', 0):3d} est={w.get('est', 0):.1e} se={w.get('se', 0):.1e}"
              f" oth={w.get('other', 0):.1e}")
        if r["status"] == "peer-bug":
            print("    peer:", r.get("peer_error"), "--", r["reason"])
        if r["status"] == "error":
            print("    ti:", r.get("ti_error"), "| peer:", r.get("peer_error"))
            if a.verbose:
                print(r.get("ti_tb") or "", r.get("peer_tb") or "")
        diffs = r.get("bad", []) + r.get("convention", [])
        for k, x, y, *_ in diffs[:3]:
            print(f"    {k:36s} ti={x:.10g} peer={y:.10g}")
        reasons = sorted({why[0] for *_, why in ((d[:3], d[3:]) for d in diffs) if why})
        for why in reasons:
            print(f"    ({len(diffs)} keys) {why}")
        for k, (x, y) in r.get("p_values", {}).items():
            print(f"    {k:36s} ti={x:.5f} peer={y:.5f} "
                  f"(Monte-Carlo sd {((y * (1 - y)) / 9999) ** .5:.5f})")
        if a.verbose and (r.get("only_ti") or r.get("only_peer")):
            print(f"    only ti: {r.get('only_ti', [])[:8]} only peer: "
                  f"{r.get('only_peer', [])[:8]}")
    if a.md:
        write_md(rows, Path(a.md))


def write_md(rows: list[dict], path: Path) -> None:
    """The check matrix as markdown (estimator x panel x peer: status, worst differences,
    reason)."""
    lines = ["| check | peer | status | keys | worst est (rel) | worst SE (rel) | note |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        w = r.get("worst", {})
        diffs = r.get("convention", [])
        note = "; ".join(sorted({d[3] for d in diffs if len(d) > 3}))
        if r["status"] == "peer-bug":
            note = r["reason"]
        elif r["status"] == "error":
            note = f"ti: {r.get('ti_error')} / peer: {r.get('peer_error')}"
        elif r.get("p_values"):
            note = ", ".join(f"p ti={x:.4f} peer={y:.4f}" for x, y in r["p_values"].values())
        lines.append(f"| {r['check']} | {r['peer']} | {r['status']} | {r.get('n_common', 0)} "
                     f"| {w.get('est', 0):.1e} | {w.get('se', 0):.1e} | {note} |")
    path.write_text("\n".join(lines) + "\n")

if __name__ == "__main__":
    main()
