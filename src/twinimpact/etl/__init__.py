"""ETL: shipped data, name normalisation, validated readers, the analysis panel.

Raw files → :func:`read_twinnings` / :func:`read_trade` (validated, names → ISO3 codes
and GeoNames city ids) → :func:`build_panel` (treatment timing) →
:class:`~twinimpact.panel.Panel` (frame + roles + manifest, ``to_parquet``).

Modules: :mod:`.sources` (readers and loaders of ``data/raw``), :mod:`.schema` (columns,
link-type vocabulary, dates), :mod:`.names`, :mod:`.countries`, :mod:`.cities`
(crosswalks), :mod:`.build` (the panel),
:mod:`.layouts` (published trade layouts: BACI, Comtrade, Census, ABS, HMRC),
:mod:`.scan` (out-of-core aggregation, :func:`scan_trade`), :mod:`.fetch` (downloads).
"""

from __future__ import annotations

from . import fetch
from .build import DEFAULT_RELATIONS, build_panel
from .cities import Gazetteer, match_cities
from .countries import lookup_country, to_iso3
from .layouts import FORMATS, census_schedule_c
from .scan import scan_trade
from .schema import RELATIONS
from .sources import (
    find_raw_file,
    load_cn_key_pairs,
    load_german_twinnings,
    load_gravity_panel,
    load_tradhist,
    load_wikipedia_twinnings,
    read_table,
    read_trade,
    read_twinnings,
)

__all__ = [
    "DEFAULT_RELATIONS",
    "FORMATS",
    "RELATIONS",
    "Gazetteer",
    "build_panel",
    "census_schedule_c",
    "fetch",
    "find_raw_file",
    "load_cn_key_pairs",
    "load_german_twinnings",
    "load_gravity_panel",
    "load_tradhist",
    "load_wikipedia_twinnings",
    "lookup_country",
    "match_cities",
    "read_table",
    "read_trade",
    "read_twinnings",
    "scan_trade",
    "to_iso3",
]
