"""Hashes and JSON-safe values for manifests (pure helpers)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["file_sha256", "frame_sha256", "jsonable"]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def frame_sha256(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's canonical CSV bytes.

    Canonical: columns in their order, index dropped, ``\\n`` line ends, floats written
    with ``repr`` precision (``float_format=None``), missing values as empty fields. Two
    frames with the same values in the same row order hash the same whatever their
    index or dtype backend.
    """
    text = frame.reset_index(drop=True).to_csv(index=False, lineterminator="\n",
                                               na_rep="")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def jsonable(o: Any) -> Any:
    """Recursively convert numpy/pandas scalars and containers to JSON-safe values."""
    if isinstance(o, Mapping):
        return {str(k): jsonable(v) for k, v in o.items()}
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return {f.name: jsonable(getattr(o, f.name)) for f in dataclasses.fields(o)}
    if isinstance(o, list | tuple | set | frozenset):
        return [jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return [jsonable(v) for v in o.tolist()]
    if o is None or o is pd.NA or o is pd.NaT:
        return None
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating | float):
        f = float(o)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, pd.Timestamp):
        return o.isoformat()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, str | int | bool):
        return o
    return str(o)
