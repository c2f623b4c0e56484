"""Study files: one TOML file describes a study completely.

A study names its data (paths and column mappings), how the analysis panel is built
(level, treatment rule, link types, sample window), the outcome and its transformation,
the estimators with their options, the inference settings and the outputs. It is
validated before anything runs; every error names the key and the fix.

Schema (every key, with defaults)::

    [study]
    kind = "panel"                      # "panel" (default), "gravity" or "case_study"
    name = "de_exports"                 # required: folder name for outputs
    title = "..."                       # required: report title
    description = ""                    # one paragraph for the report
    simulated = false                   # true: the report says so on its first line
    caveats = ["...", ...]

    [twinnings]
    path = "data/raw/..."               # CSV/parquet, relative to the study file or repo
    columns = { city = "...", ... }     # ti.read_twinnings keyword mapping
    options = { ... }                   # further read_twinnings keywords
    relations = ["twinning"]            # link types that start treatment
    rule = "first"

    [trade]
    path = "data/raw/..."               # a file, a folder or a glob ("customs/*.parquet")
    columns = { reporter = "...", partner = "...", year = "...", value = "..." }
    options = { ... }                   # further read_trade / scan_trade keywords
    format = "baci"                     # optional: a published layout, read as published
                                        # ("baci", "comtrade", "census_statehs",
                                        # "abs_merch", "hmrc_rts"; twinimpact.etl.layouts)
    engine = "duckdb"                   # optional: aggregate records out of core with
                                        # ti.scan_trade ("duckdb", "spark", "pandas");
                                        # implied for a folder or a glob
    filters = { flow = "X" }            # optional: scan_trade row filters
    reporters = ["DEU"]                 # optional filter
    years = [1871, 2014]                # optional inclusive window

    [panel]
    level = "country_pair"              # or "city_partner"

    [outcome]
    transform = "log"                   # "log" | "level" | "log1p" | "asinh"
    label = "log exports"

    [window]
    leads = 10                          # pre-periods shown in event studies
    lags = 20                           # post-periods

    [inference]
    cluster = "unit_id"                 # default: the panel unit
    alpha = 0.05

    [[estimate]]                        # one block per estimator, in report order
    label = "TWFE"
    estimator = "twfe"                  # any name in twinimpact.studies.spec.ESTIMATORS
    options = { ... }                   # estimator keywords

    [output]
    tables = ["markdown", "xlsx", "html", "latex"]
    figures = ["png", "svg"]
    report = true                       # the self-contained HTML report
    headline = "TWFE event study"       # label of the estimate quoted in the headline
    headline_subject = "German exports to a partner country"

    # kind = "gravity": PPML structural gravity with twinning intensity
    [gravity]
    intensity = "n_twinnings"           # or "log1p_twinnings"
    home = "DEU"                        # the registry's home country
    years = [1986, 1990, 1994, 1998, 2002, 2006]
    options = { ... }                   # ti.gravity_intensity keywords

    # kind = "gravity_etwfe": Poisson ETWFE with exporter-year, importer-year, pair FE
    [gravity_etwfe]
    source = "tradhist"                 # or "gravity_panel" (exporter, importer, year, trade)
    home = "DEU"                        # the registry's country: home -> j, j -> home treated
    years = [1991, 2014]                # inclusive window
    exporters = ["DEU", "FRA"]          # optional filter
    comparisons = true                  # log-linear ETWFE, Callaway-Sant'Anna, imputation
    placebo = true                      # never-treated ETWFE with placebo leads
    country_map = { ROU = "ROM" }       # registry ISO3 -> trade-data code
    unit_label = "GBP"                  # unit of the flows (level effects)

    # kind = "case_study": one or two treated cities vs donor cities (SDID, SC, DID)
    [case]
    series = "my_city_exports.csv"      # user data (format: twinimpact.studies.casestudy);
                                        # omitted: a clearly labelled SIMULATED series
    columns = { city = "city", partner = "partner", year = "year", exports = "exports" }
    treated_city = ["Qingdao", "Jinan"]
    partner = "GBR"
    relations = ["twinning"]            # which links in [twinnings] date the treatment
    treated_from = { Qingdao = 1998 }   # optional override of the registry dates
    transform = "log"
    se = "placebo"
    n_reps = 200
    seed = 1
    simulate = { start = 1975, end = 2014, effect = 0.1 }
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SpecificationError, format_message, suggest

__all__ = ["OUTCOME_TRANSFORMS", "Study", "load_study"]

OUTCOME_TRANSFORMS = ("log", "level", "log1p", "asinh")
TABLE_FORMATS = ("markdown", "xlsx", "html", "latex")
FIGURE_FORMATS = ("png", "svg")
LEVELS = ("country_pair", "city_partner")

_SCHEMA: dict[str, set[str]] = {
    "study": {"name", "title", "description", "simulated", "caveats", "kind"},
    "twinnings": {"path", "columns", "options", "relations", "rule"},
    "trade": {"path", "columns", "options", "reporters", "years", "format", "engine",
              "filters"},
    "panel": {"level"},
    "outcome": {"transform", "label"},
    "window": {"leads", "lags"},
    "inference": {"cluster", "alpha"},
    "estimate": {"label", "estimator", "options"},
    "output": {"tables", "figures", "report", "headline", "headline_subject",
               "headline_term"},
    "gravity": {"intensity", "home", "years", "options"},
    "gravity_etwfe": {"source", "home", "years", "exporters", "comparisons", "placebo",
                      "country_map", "unit_label"},
    "case": {"series", "columns", "treated_city", "partner", "relations", "treated_from",
             "transform", "se", "n_reps", "seed", "honest", "honest_options", "simulate"},
}


@dataclass(frozen=True)
class EstimateSpec:
    label: str
    estimator: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Study:
    """A validated study description (see the module docstring for the schema)."""

    path: Path | None
    name: str
    title: str
    description: str
    simulated: bool
    caveats: tuple[str, ...]
    twinnings: dict[str, Any]
    trade: dict[str, Any]
    level: str
    transform: str
    outcome_label: str
    leads: int | None
    lags: int | None
    cluster: str | None
    alpha: float
    estimates: tuple[EstimateSpec, ...]
    tables: tuple[str, ...]
    figures: tuple[str, ...]
    report: bool
    headline: str | None = None
    headline_subject: str = "The outcome"
    headline_term: str = "ATT"
    kind: str = "panel"
    gravity: dict[str, Any] = field(default_factory=dict)
    case: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def resolve(self, p: str | Path) -> Path:
        """Resolve a data path: absolute; relative to the study file; or to the repository."""
        from .._paths import resolve_data_path

        return resolve_data_path(p, self.path.parent if self.path else None)


def _err(key: str, what: str, seen: Any = None, fix: str | None = None) -> SpecificationError:
    where = f"study key [{key}]"
    return SpecificationError(format_message(what, where=where, seen=seen, fix=fix))


def _check_keys(section: str, got: dict[str, Any]) -> None:
    allowed = _SCHEMA[section]
    for k in got:
        if k not in allowed:
            close = suggest(k, allowed)
            raise _err(f"{section}.{k}", f"unknown key {k!r} in [{section}]", seen=k,
                       fix=(f"did you mean {close[0]!r}? " if close else "")
                       + f"allowed keys: {', '.join(sorted(allowed))}")


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        close = suggest(value, allowed)
        raise _err(key, f"{key}: expected one of {', '.join(map(repr, allowed))}, got "
                   f"{value!r}", seen=value,
                   fix=f"use {close[0]!r}" if close else f"use one of {', '.join(allowed)}")
    return value


def _str_list(key: str, value: Any) -> list[str]:
    """A list of strings; one string counts as a one-element list."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise _err(key, f"{key} must be a string or a list of strings", seen=value,
               fix=f'{key.split(".")[-1]} = ["..."]')


def _check_inputs(doc: dict[str, Any]) -> dict[str, Any]:
    """[twinnings] / [trade]: reader options exist (checked against ti.read_twinnings /
    ti.read_trade), ``years`` is two years, ``reporters`` a code or a list of codes."""
    import inspect

    from ..etl import read_trade, read_twinnings

    for sec, reader in (("twinnings", read_twinnings), ("trade", read_trade)):
        part = doc.get(sec, {})
        params = set(inspect.signature(reader).parameters) - {"path_or_frame", "layout"}
        if sec == "trade":  # a layout reader's or scan_trade's keywords (format=, engine=)
            from ..etl import layouts, scan_trade

            fmt = part.get("format")
            if fmt in layouts.FORMATS:
                params |= set(inspect.signature(getattr(layouts, f"read_{fmt}")).parameters)
                params -= {"path", "scan_options"}
            elif "engine" in part:
                params |= set(inspect.signature(scan_trade).parameters) - {"source"}
        for key in ("columns", "options"):
            opts = part.get(key, {})
            if not isinstance(opts, dict):
                raise _err(f"{sec}.{key}", f"[{sec}.{key}] must be a table", seen=opts,
                           fix=f"write [{sec}.{key}] with one key = value per line")
            for k in opts:
                if k not in params:
                    close = suggest(k, params)
                    raise _err(f"{sec}.{key}.{k}", f"unknown option {k!r} for "
                               f"ti.{reader.__name__}", seen=k,
                               fix=(f"did you mean {close[0]!r}? " if close else "")
                               + f"options: {', '.join(sorted(params))}")
    trade = dict(doc.get("trade", {}))  # the caller's document is not changed
    if "reporters" in trade:
        trade["reporters"] = _str_list("trade.reporters", trade["reporters"])
    if "years" in trade:
        y = trade["years"]
        if not (isinstance(y, list) and len(y) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in y)
                and y[0] <= y[1]):
            raise _err("trade.years", "years must be two years [first, last] (inclusive)",
                       seen=y, fix="years = [1980, 2010]")
    return trade


def parse_study(doc: dict[str, Any], path: Path | None = None) -> Study:
    """Validate a parsed TOML document and return a :class:`Study`."""
    from ..estimators.registry import ESTIMATORS, check_options
    from .kinds import KINDS

    unknown = set(doc) - set(_SCHEMA)
    if unknown:
        k = sorted(unknown)[0]
        close = suggest(k, _SCHEMA)
        raise _err(k, f"unknown section [{k}]", seen=k,
                   fix=(f"did you mean [{close[0]}]? " if close else "")
                   + f"sections: {', '.join(sorted(_SCHEMA))}")
    for sec in _SCHEMA:
        val = doc.get(sec, {} if sec != "estimate" else [])
        if sec == "estimate":
            if not isinstance(val, list):
                raise _err("estimate", "estimate must be an array of tables ([[estimate]])",
                           seen=type(val).__name__, fix="write each estimator as [[estimate]]")
            for e in val:
                _check_keys("estimate", e)
        else:
            if not isinstance(val, dict):
                raise _err(sec, f"[{sec}] must be a table", seen=val)
            _check_keys(sec, val)
    st = doc.get("study", {})
    for req in ("name", "title"):
        if not st.get(req):
            raise _err(f"study.{req}", f"study.{req} is required", fix=f"add {req} = \"...\"")
    name = str(st["name"])
    if not name.replace("_", "").replace("-", "").isalnum():
        raise _err("study.name", "study.name must be letters, digits, '-' or '_' (it names "
                   "the output folders)", seen=name, fix="e.g. name = \"de_exports\"")
    kind = _choice("study.kind", st.get("kind", "panel"), tuple(KINDS))
    for sec in KINDS[kind].paths:
        if "path" not in doc.get(sec, {}):
            raise _err(f"{sec}.path", f"[{sec}] needs a path", fix="path = \"data/raw/...\"")
    if KINDS[kind].check is not None:
        KINDS[kind].check(doc)
    trade = _check_inputs(doc)
    if "format" in trade:
        from ..etl.layouts import FORMATS

        _choice("trade.format", trade["format"], FORMATS)
    if "engine" in trade:
        _choice("trade.engine", trade["engine"], ("duckdb", "spark", "pandas"))
    if "filters" in trade and not isinstance(trade["filters"], dict):
        raise _err("trade.filters", "filters must be a table {column = value}",
                   seen=trade["filters"], fix='filters = { flow = "X" }')
    level = _choice("panel.level", doc.get("panel", {}).get("level", "country_pair"), LEVELS)
    outcome = doc.get("outcome", {})
    transform = _choice("outcome.transform", outcome.get("transform", "log"), OUTCOME_TRANSFORMS)
    window = doc.get("window", {})
    for k in ("leads", "lags"):
        v = window.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise _err(f"window.{k}", f"window.{k} must be a non-negative integer", seen=v,
                       fix=f"{k} = 10 (a number of periods; true/false are not numbers)")
    inf = doc.get("inference", {})
    if inf.get("cluster") is not None and not isinstance(inf["cluster"], str):
        raise _err("inference.cluster", "cluster must be one column name", seen=inf["cluster"],
                   fix='cluster = "unit_id" (a column of the analysis panel)')
    alpha = inf.get("alpha", 0.05)
    if not isinstance(alpha, float | int) or isinstance(alpha, bool) or not 0 < alpha < 1:
        raise _err("inference.alpha", f"inference.alpha: expected a number in (0, 1), got "
                   f"{alpha!r}", fix="alpha = 0.05")
    estimates = []
    labels = set()
    for i, e in enumerate(doc.get("estimate", [])):
        est = e.get("estimator")
        if est not in ESTIMATORS:
            close = suggest(est, ESTIMATORS)
            raise _err(f"estimate[{i}].estimator", "unknown estimator", seen=est,
                       fix=(f"did you mean {close[0]!r}? " if close else "")
                       + f"available: {', '.join(sorted(ESTIMATORS))}")
        label = str(e.get("label", est))
        if label in labels:
            raise _err(f"estimate[{i}].label", "duplicate estimate label", seen=label,
                       fix="give each [[estimate]] a distinct label")
        labels.add(label)
        opts = e.get("options", {})
        if not isinstance(opts, dict):
            raise _err(f"estimate[{i}].options", "options must be a table", seen=opts)
        check_options(est, opts, where=f"study key [estimate[{i}].options] ({label!r})",
                      extra=("aggregate",))
        estimates.append(EstimateSpec(label, est, dict(opts)))
    if not estimates and kind == "panel":
        raise _err("estimate", "a study needs at least one [[estimate]]",
                   fix="add [[estimate]] with estimator = \"twfe\"")
    out = doc.get("output", {})
    if kind == "panel" and out.get("headline") is not None and out["headline"] not in labels:
        raise _err("output.headline", "headline must be the label of an [[estimate]]",
                   seen=out["headline"], fix=f"use one of {', '.join(sorted(labels))}")
    tables = tuple(_choice("output.tables", t, TABLE_FORMATS)
                   for t in _str_list("output.tables", out.get("tables", ["markdown", "xlsx"])))
    figures = tuple(_choice("output.figures", f, FIGURE_FORMATS)
                    for f in _str_list("output.figures", out.get("figures", ["png", "svg"])))
    caveats = _str_list("study.caveats", st.get("caveats", []))
    return Study(
        path=path, name=name, title=str(st["title"]),
        description=str(st.get("description", "")), simulated=bool(st.get("simulated", False)),
        caveats=tuple(str(c) for c in caveats), twinnings=dict(doc["twinnings"]),
        trade=trade, level=level, transform=transform,
        outcome_label=str(outcome.get("label", transform + " trade value")),
        leads=window.get("leads"), lags=window.get("lags"), cluster=inf.get("cluster"),
        alpha=float(alpha), estimates=tuple(estimates), tables=tables, figures=figures,
        report=bool(out.get("report", True)), headline=out.get("headline"),
        headline_subject=str(out.get("headline_subject", "The outcome")), kind=kind,
        headline_term=str(out.get("headline_term", "ATT")),
        gravity=dict(doc.get("gravity", {})), case=dict(doc.get("case", {})), raw=doc,
    )


def load_study(path: str | Path) -> Study:
    """Read and validate a study TOML file."""
    p = Path(path)
    if not p.is_file():
        raise SpecificationError(format_message(
            "study file not found", where=str(p.resolve()),
            fix="pass the path of a .toml study file, or run `twinimpact list`"))
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SpecificationError(format_message(
            f"study file is not valid TOML: {exc}", where=str(p),
            fix="check quotes, brackets and commas on that line")) from exc
    return parse_study(doc, p.resolve())
