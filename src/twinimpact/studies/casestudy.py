"""One-treated-city case study: did a twinning change one city's exports to one partner?

The template compares the twinned city with a pool of *donor* cities (cities exporting to
the same partner that were not twinned with it) using synthetic difference-in-differences,
synthetic control and plain DiD (:func:`twinimpact.estimators.synthetic_did.synthetic_did`)
with placebo inference, and optionally a HonestDiD sensitivity analysis of a TWFE event
study of the treated city against the donors.

Input format (``series``)
-------------------------
A long table, one row per city x partner x year:

========== =========================================================================
``city``     exporting city (one of them is the treated city; the others are donors)
``partner``  partner (e.g. ISO3 country code ``"GBR"`` or a partner-city id); optional
             when the table holds one partner only
``year``     calendar year (integer)
``exports``  export value (same currency and units in every row, e.g. USD); must be > 0
             for ``transform="log"``
========== =========================================================================

plus the twinning date, passed as ``treated_from`` (first year counted as treated, i.e.
the year the twinning was signed or the year after, as the study decides). Column names
can be changed with the ``unit=`` (city), ``partner_col=``, ``time=`` (year) and
``outcome=`` (exports) keywords.
Every donor must be observed in every year (a balanced panel). One or two treated cities
are supported; two cities with different twinning years are estimated cohort by cohort.

A clearly labelled simulated example ships with the package
(:func:`simulated_city_exports`; every row says ``SIMULATED — not real data``), so the
template runs without private data::

    import twinimpact as ti
    from twinimpact.studies.casestudy import case_study, simulated_city_exports
    series = simulated_city_exports()
    cs = case_study(series, treated_city="Qingdao", partner="GBR", treated_from=2011)
    print(cs.summary())
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..core.validation import as_frame, require_columns, require_frame
from ..errors import (
    InputError,
    SpecificationError,
    check_literal,
    format_message,
    renamed_keyword,
    suggest,
)
from ..estimators.synthetic_did import SyntheticDIDResult, synthetic_did

__all__ = [
    "SIMULATED_NOTE",
    "CaseStudyResult",
    "case_study",
    "simulated_city_exports",
]

#: label carried by every row of the simulated example series
SIMULATED_NOTE = "SIMULATED — not real data"

_DONORS = ("Dalian", "Tianjin", "Ningbo", "Xiamen", "Yantai", "Lianyungang", "Fuzhou",
           "Shantou", "Zhanjiang", "Weihai", "Rizhao", "Nantong", "Wenzhou", "Quanzhou",
           "Zhuhai", "Beihai", "Qinhuangdao", "Yingkou")


def simulated_city_exports(seed: int = 2024, *, treated_city: str = "Qingdao",
                           partner: str = "GBR", n_donors: int = 14, start: int = 2000,
                           end: int = 2019, twinning_year: int = 2011,
                           effect: float = 0.15) -> pd.DataFrame:
    """A SIMULATED city -> partner export panel for trying the case-study template.

    **Not real data.** Log exports follow an interactive fixed-effects model
    ``log y_it = a_i + b_t + l_i f_t + e_it`` (city level, common growth, a city-specific
    loading on a common cycle, AR(1) noise); the treated city's exports rise by
    ``effect`` log points (``exp(effect) - 1`` in percent) from ``twinning_year`` on.
    City names are used as labels only; every row carries ``note`` =
    :data:`SIMULATED_NOTE` and ``source`` = ``"twinimpact.studies.casestudy.simulated_city_exports
    (seed=...)"``, and ``DataFrame.attrs["note"]`` says the same.

    Returns
    -------
    DataFrame
        Columns ``city, partner, year, exports, note, source``; ``exports`` in
        simulated US dollars.

    Examples
    --------
    >>> from twinimpact.studies.casestudy import simulated_city_exports
    >>> s = simulated_city_exports()
    >>> s["note"].unique().tolist()
    ['SIMULATED — not real data']
    """
    if not 1 <= n_donors <= len(_DONORS):
        raise SpecificationError(format_message(
            f"n_donors must be between 1 and {len(_DONORS)}", seen=n_donors))
    if not start < twinning_year <= end:
        raise SpecificationError(format_message(
            "twinning_year must lie after start and not after end",
            seen=(start, twinning_year, end)))
    rng = np.random.default_rng(seed)
    years = np.arange(start, end + 1)
    T = len(years)
    cities = [treated_city, *_DONORS[:n_donors]]
    level = rng.normal(18.0, 0.6, size=len(cities))
    growth = np.cumsum(rng.normal(0.06, 0.03, size=T))
    cycle = np.sin(np.linspace(0, 3 * np.pi, T)) * 0.15 + np.cumsum(rng.normal(0, 0.04, T))
    loading = rng.normal(1.0, 0.4, size=len(cities))
    loading[0] = np.clip(loading[0], 0.7, 1.3)
    rows = []
    for i, c in enumerate(cities):
        e = 0.0
        for t, y in enumerate(years):
            e = 0.5 * e + rng.normal(0, 0.04)
            log_y = level[i] + growth[t] + loading[i] * cycle[t] + e
            if i == 0 and y >= twinning_year:
                log_y += effect
            rows.append((c, partner, int(y), float(np.exp(log_y))))
    out = pd.DataFrame(rows, columns=["city", "partner", "year", "exports"])
    out["note"] = SIMULATED_NOTE
    out["source"] = f"twinimpact.studies.casestudy.simulated_city_exports(seed={seed})"
    out.attrs["note"] = (f"{SIMULATED_NOTE}: simulated {treated_city}->{partner} exports, "
                         f"twinning effect {effect} log points from {twinning_year}")
    return out


@dataclass(frozen=True)
class CaseStudyResult:
    """Results of :func:`case_study`.

    Attributes
    ----------
    sdid, sc, did : SyntheticDIDResult
        The three estimates (same data, same inference).
    table : DataFrame
        One row per method: the tidy columns (``estimate, std_error, ..., ci_upper``) plus
        ``pre_rmse`` (root mean squared pre-twinning gap between the city and its
        comparison; for SDID after the lambda-weighted level shift) and, for
        ``transform="log"``, ``effect_pct = 100 (exp(estimate) - 1)`` with its interval.
    weights : DataFrame
        Donor weights (``sdid``, ``sc``), largest SDID weight first.
    effect_curves : DataFrame
        Year-by-year effects after the twinning (``sdid``, ``sc``, ``did``).
    honest : DataFrame or None
        HonestDiD robust confidence sets (rows ``m, lb, ub, method``) when computed.
    event_study : EstimationResult or None
        The TWFE event study HonestDiD was computed from.
    spec, notes
        The arguments and plain-language notes (what was skipped and why).
    """

    sdid: SyntheticDIDResult
    sc: SyntheticDIDResult
    did: SyntheticDIDResult
    table: pd.DataFrame
    weights: pd.DataFrame
    effect_curves: pd.DataFrame
    panel: pd.DataFrame
    honest: pd.DataFrame | None = None
    event_study: Any = None
    spec: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    #: Name in tables and the tidy frame.
    estimator = "case_study"

    @property
    def results(self) -> dict[str, SyntheticDIDResult]:
        """The three results keyed ``"sdid"``, ``"sc"``, ``"did"`` (``ti.table`` shows one
        column per result)."""
        return {"sdid": self.sdid, "sc": self.sc, "did": self.did}

    @property
    def nobs(self) -> int:
        """City-years used (the same panel for the three methods)."""
        return int(self.sdid.nobs)

    def to_frame(self, alpha: float = 0.05) -> pd.DataFrame:
        """The tidy frames of the three results stacked (``estimator`` tells them apart)."""
        return pd.concat([r.to_frame(alpha) for r in self.results.values()],
                         ignore_index=True)

    def summary(self) -> str:
        """Plain-text report: the comparison table, top donors, notes."""
        s = self.spec
        cities = ", ".join(map(str, s["treated_city"]))
        since = ", ".join(f"{c} from {y}" for c, y in s["treated_from"].items())
        lines = [f"twinimpact · case study: {cities} -> {s['partner']} (twinned: {since})",
                 f"Outcome: {s['outcome_label']}; {len(self.weights)} donor cities; "
                 f"inference: {s['se']} ({s['n_reps']} replications)"]
        show = self.table.drop(columns=["estimator", "ci_kind", "term"], errors="ignore")
        with pd.option_context("display.width", 120, "display.float_format",
                               lambda v: f"{v:.4g}"):
            lines.append(show.to_string())
            top = self.weights[self.weights["sdid"] > 0].head(8)
            lines.append("Largest SDID donor weights:")
            lines.append(top.to_string())
            if self.honest is not None:
                lines.append("HonestDiD robust confidence sets:")
                lines.append(self.honest.to_string(index=False))
        lines.extend(f"Note: {n}" for n in self.notes)
        return "\n".join(lines)

    def plot(self, axes: Any = None) -> Any:
        """SDID and SC trajectory plots side by side (matplotlib); returns the Axes
        (:func:`twinimpact.report.synthetic.plot_case_study`)."""
        from ..report.synthetic import plot_case_study

        return plot_case_study(self, axes)


def _as_cities(treated_city: str | Sequence[str]) -> list[str]:
    if isinstance(treated_city, str):
        return [treated_city]
    cities = list(treated_city)
    if not 1 <= len(cities) <= 2 or not all(isinstance(c, str) for c in cities):
        raise SpecificationError(format_message(
            "treated_city must be one city name or a list of two", seen=treated_city,
            fix="pass e.g. treated_city='Qingdao' or treated_city=['Qingdao', 'Dalian']"))
    return cities


def case_study(series: pd.DataFrame, *, treated_city: str | Sequence[str],
               treated_from: int | Mapping[str, int], partner: str | None = None,
               unit: str = "city", partner_col: str = "partner", time: str = "year",
               outcome: str = "exports", transform: Literal["log", "level"] = "log",
               se: Literal["placebo", "jackknife", "bootstrap"] | None = "placebo",
               n_reps: int = 200, seed: int | None = None, alpha: float = 0.05,
               honest: bool | Literal["auto"] = False, honest_pre_periods: int = 3,
               honest_options: Mapping[str, Any] | None = None, city: str | None = None,
               year: str | None = None, exports: str | None = None) -> CaseStudyResult:
    """Run the one-(or two-)treated-city case study: SDID, SC and DID with placebo SEs.

    Parameters
    ----------
    series : DataFrame
        Long export series in the format of the module docstring (not modified).
    treated_city : str or list of two str
        The twinned city (or cities); every other city is a donor.
    treated_from : int or mapping city -> int
        First treated year (one year for all treated cities, or one per city).
    partner : str, optional
        Keep only rows for this partner (required when ``series`` has several).
    unit, partner_col, time, outcome : str
        Column names: the city, the partner country, the year and the exports (the
        package-wide ``unit``/``time``/``outcome``; ``city=``, ``year=`` and
        ``exports=`` are their deprecated old names).
    transform : {"log", "level"}
        Estimate on log exports (effects in log points; ``effect_pct`` in the table) or
        levels.
    se, n_reps, seed, alpha
        Inference, as :func:`~twinimpact.estimators.synthetic_did.synthetic_did`
        (placebo is the only standard error defined with one treated city).
    honest : bool or "auto"
        Optional step (off by default): a HonestDiD sensitivity analysis (Rambachan &
        Roth 2023) of a TWFE event study of the treated city vs the donors, via
        ``twinimpact.inference.honest_did.honest_did``. ``True`` requires that module,
        ``"auto"`` runs it when installed and adds a note otherwise. Relative-magnitudes
        sets are expensive with many periods: see ``honest_options``.
    honest_pre_periods : int
        Pre-twinning event-time coefficients in that event study (the years before
        ``treated_from - honest_pre_periods - 1`` are left out; -1 is the reference).
    honest_options : mapping, optional
        Extra keywords for ``honest_did`` (e.g. ``restriction="smoothness"``,
        ``m_values=[0, 0.5, 1]``, ``grid_points=100``).

    Returns
    -------
    CaseStudyResult

    Examples
    --------
    >>> from twinimpact.studies.casestudy import case_study, simulated_city_exports
    >>> cs = case_study(simulated_city_exports(), treated_city="Qingdao", partner="GBR",
    ...                 treated_from=2011, n_reps=20, seed=1)
    >>> list(cs.table.index)
    ['sdid', 'sc', 'did']
    """
    series = as_frame(series, what="case_study: series")
    series = require_frame(series, what="series")
    city = renamed_keyword("case_study", "city", "unit", city, unit, new_default="city")
    year = renamed_keyword("case_study", "year", "time", year, time, new_default="year")
    exports = renamed_keyword("case_study", "exports", "outcome", exports, outcome,
                              new_default="exports")
    check_literal("transform", transform, ("log", "level"))
    check_literal("honest", honest, (True, False, "auto"))
    cities = _as_cities(treated_city)
    cols = [city, year, exports] + ([partner_col] if partner_col in series.columns else [])
    require_columns(series, [city, year, exports], what="series")
    df = series[cols].copy()
    # ------------------------------------------------------------ partner filter
    if partner_col in df.columns:
        partners = pd.unique(df[partner_col].dropna())
        if partner is not None:
            if partner not in set(partners):
                close = suggest(partner, partners)
                raise InputError(format_message(
                    f"partner {partner!r} not found in column {partner_col!r}",
                    seen=sorted(map(str, partners))[:10],
                    fix=(f"did you mean {close[0]!r}?" if close else "check the partner code")))
            df = df[df[partner_col] == partner]
        elif len(partners) > 1:
            raise InputError(format_message(
                f"series holds {len(partners)} partners; the case study compares cities "
                "exporting to one partner", seen=sorted(map(str, partners))[:10],
                fix="pass partner='<code>' (e.g. partner='GBR')"))
        else:
            partner = str(partners[0]) if len(partners) else None
    # ------------------------------------------------------------ treated cities
    present = set(df[city].dropna())
    for c in cities:
        if c not in present:
            close = suggest(c, present)
            raise InputError(format_message(
                f"treated city {c!r} has no rows" + (f" for partner {partner!r}"
                                                      if partner else ""),
                seen=sorted(map(str, present))[:10],
                fix=(f"did you mean {close[0]!r}?" if close else "check the city name")))
    if isinstance(treated_from, Mapping):
        missing = [c for c in cities if c not in treated_from]
        if missing:
            raise SpecificationError(format_message(
                "treated_from has no year for some treated cities", seen=missing,
                fix="give one year per treated city, e.g. {'Qingdao': 2011}"))
        start = {c: treated_from[c] for c in cities}
    else:
        start = dict.fromkeys(cities, treated_from)
    for c, y0 in start.items():
        if isinstance(y0, bool) or not isinstance(y0, int | np.integer | float) or (
                isinstance(y0, float) and not y0.is_integer()):
            raise SpecificationError(format_message(
                "treated_from must be a year (integer)", where=f"city {c!r}", seen=y0))
    # ------------------------------------------------------------ outcome
    y = pd.to_numeric(df[exports], errors="coerce")
    if transform == "log":
        bad = ~(y > 0) & y.notna()
        if bad.any():
            r = df.loc[bad].iloc[0]
            raise InputError(format_message(
                f"transform='log' needs positive exports; {int(bad.sum())} row(s) are <= 0",
                where=f"{city} = {r[city]!r}, {year} = {r[year]!r}", seen=r[exports],
                fix="use transform='level', or drop cities with zero flows from the donor "
                    "pool"))
        df["_y"] = np.log(y)
        outcome_label = f"log({exports})"
    else:
        df["_y"] = y
        outcome_label = exports
    df["_g"] = df[city].map(start).astype(float)
    df["_d"] = ((df["_g"].notna()) & (pd.to_numeric(df[year], errors="coerce")
                                       >= df["_g"])).astype(int)
    panel = df[[city, year, "_y", "_d", "_g"]].rename(
        columns={"_y": "outcome", "_d": "treated", "_g": "cohort"}).reset_index(drop=True)
    # ------------------------------------------------------------ estimates
    common = {"outcome": "outcome", "unit": city, "time": year, "treated": "treated",
              "se": se, "n_reps": n_reps, "alpha": alpha}
    ss = np.random.SeedSequence(seed)
    seeds = [np.random.default_rng(s) for s in ss.spawn(3)]
    res = {m: synthetic_did(panel, method=m, seed=seeds[k], **common)
           for k, m in enumerate(("sdid", "sc", "did"))}
    table = _table(res, alpha, transform)
    w = pd.DataFrame({"sdid": res["sdid"].unit_weights, "sc": res["sc"].unit_weights})
    w = w.sort_values(["sdid", "sc"], ascending=False)
    curves = pd.DataFrame({m: r.effect_curve() for m, r in res.items()})
    notes: list[str] = []
    if "note" in series.columns and (series["note"] == SIMULATED_NOTE).any():
        notes.append(f"Data: {SIMULATED_NOTE} (made by twinimpact's city-export simulator); "
                     "the numbers illustrate the template and say nothing about real trade.")
    if len(cities) == 1 and se == "placebo":
        notes.append("One treated city: standard errors come from placebo re-assignments "
                     "of the twinning to donor cities (Arkhangelsky et al. 2021, "
                     "Algorithm 4); they assume the donors are exchangeable with it.")
    # ------------------------------------------------------------ HonestDiD
    hd, es = None, None
    if honest is not False:
        if isinstance(honest_pre_periods, bool) or not isinstance(
                honest_pre_periods, int) or honest_pre_periods < 1:
            raise SpecificationError(format_message(
                "honest_pre_periods must be an integer >= 1", seen=honest_pre_periods,
                fix="pass e.g. honest_pre_periods=3"))
        first = min(start.values())
        window = panel[pd.to_numeric(panel[year]) >= first - honest_pre_periods - 1]
        hd, es, note = _honest_step(window, city, year, alpha, honest_options or {},
                                    required=honest is True)
        if note:
            notes.append(note)
    spec = {"treated_city": tuple(cities), "treated_from": dict(start), "partner": partner,
            "transform": transform, "outcome_label": outcome_label, "se": se,
            "n_reps": n_reps, "seed": seed, "alpha": alpha, "honest": honest,
            "honest_pre_periods": honest_pre_periods,
            "columns": {"city": city, "partner": partner_col, "year": year,
                        "exports": exports}}
    return CaseStudyResult(sdid=res["sdid"], sc=res["sc"], did=res["did"], table=table,
                           weights=w, effect_curves=curves, panel=panel, honest=hd,
                           event_study=es, spec=spec, notes=tuple(notes))


def _table(res: Mapping[str, SyntheticDIDResult], alpha: float, transform: str
           ) -> pd.DataFrame:
    rows = []
    for m, r in res.items():
        f = r.to_frame(alpha)
        row = f[f["term"] == "ATT"].iloc[0].to_dict()
        tr = r.trajectories()
        T0 = r.cohort_fits[0].fit.T0
        comp = tr["synthetic_shifted"] if m != "sc" else tr["synthetic"]
        gap = (tr["treated"] - comp).to_numpy()[:T0]
        row["pre_rmse"] = float(np.sqrt(np.mean(gap**2)))
        if transform == "log":
            for k in ("estimate", "ci_lower", "ci_upper"):
                v = row[k]
                row[f"{k}_pct" if k != "estimate" else "effect_pct"] = (
                    100 * math.expm1(v) if np.isfinite(v) else np.nan)
        rows.append(pd.Series(row, name=m))
    return pd.DataFrame(rows).drop(columns=["term", "cohort"], errors="ignore")


def _honest_step(panel: pd.DataFrame, city: str, year: str, alpha: float,
                 options: Mapping[str, Any], *, required: bool
                 ) -> tuple[pd.DataFrame | None, Any, str | None]:
    """HonestDiD on a TWFE event study of the treated city vs the donors (hook).

    ``panel`` is already restricted to the event-study window. Uses
    ``twinimpact.inference.honest_did.honest_did(betahat, sigma, *, num_pre, num_post,
    ...)`` when it is installed; otherwise returns a note (or raises when ``required``).
    """
    try:
        mod = importlib.import_module("twinimpact.inference.honest_did")
        honest_did = mod.honest_did
    except (ImportError, AttributeError):
        msg = ("HonestDiD sensitivity skipped: twinimpact.inference.honest_did is not "
               "available in this install")
        if required:
            raise SpecificationError(format_message(
                msg, fix="install a twinimpact version with honest_did, or pass "
                         "honest=False")) from None
        return None, None, msg
    from ..estimators.twfe import event_study

    es = event_study(panel, outcome="outcome", unit=city, time=year, cohort="cohort",
                     ref=-1, alpha=alpha)
    f = es.to_frame(alpha)
    f = f[f["rel_time"].notna()].sort_values("rel_time")
    terms = list(f["term"])
    betahat = es.params[terms].to_numpy()
    sigma = es.vcov.loc[terms, terms].to_numpy()
    num_pre = int((f["rel_time"] < 0).sum())
    num_post = int((f["rel_time"] >= 0).sum())
    opts = {"alpha": alpha, **options}
    hd = honest_did(betahat, sigma, num_pre=num_pre, num_post=num_post, **opts)
    n_treated = int(panel.loc[panel["cohort"].notna(), city].nunique())
    which = "one treated city" if n_treated == 1 else f"{n_treated} treated cities"
    note = (f"HonestDiD uses a TWFE event study with {which}: its clustered standard "
            "errors rest on few treated clusters, read the bounds as indicative.")
    return hd, es, note
