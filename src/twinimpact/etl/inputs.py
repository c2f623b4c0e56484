"""How a study's ``[trade]`` section is read: :func:`read_trade_input`.

One decision point above the readers (:mod:`.sources`, :mod:`.layouts`, :mod:`.scan`), so
that none of them imports another in a circle.
"""

from __future__ import annotations

import glob as _glob
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import SpecificationError, format_message
from .scan import scan_trade
from .sources import read_trade

__all__ = ["read_trade_input"]


def read_trade_input(path: Any, *, columns: Mapping[str, str] | None = None,
                     options: Mapping[str, Any] | None = None, format: str | None = None,
                     engine: str | None = None,
                     filters: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """What a study's ``[trade]`` section reads (see :mod:`twinimpact.studies.spec`).

    * ``format`` given: the published layout (``read_trade(path, format=...)``); for BACI
      ``engine`` and ``filters`` go to the out-of-core scan.
    * else ``engine`` given, or ``path`` is a glob or a folder: :func:`scan_trade` with
      the ``columns`` roles (records aggregated out of core; ``filters`` select rows).
    * else one file read by ``read_trade(path, **columns, **options)``.
    """
    columns, options = dict(columns or {}), dict(options or {})
    if format is not None:
        if format != "baci" and (engine is not None or filters):
            raise SpecificationError(format_message(
                f"engine= and filters= apply to BACI and to plain records, not to "
                f"format={format!r}", seen={"engine": engine, "filters": filters},
                fix="drop them from [trade], or filter the frame afterwards (reporters=, "
                    "years=)"))
        extra: dict[str, Any] = {}
        if format == "baci":
            extra = {"engine": engine or "duckdb", **({"filters": filters} if filters else {})}
        return read_trade(path, format=format, **options, **extra)
    s = os.fspath(path)
    if engine is not None or filters or _glob.has_magic(s) or Path(s).is_dir():
        return scan_trade(path, **columns, engine=engine or "duckdb", filters=filters,
                          **options)
    return read_trade(path, **columns, **options)
