"""Tables in, files out.

:func:`as_frame` is the one conversion of input tables at the public boundary (estimators
through :mod:`twinimpact.core.validation`, readers in :mod:`twinimpact.etl`): pandas as
is, polars and pyarrow converted, anything else refused.

Atomic file writes that respect the user's umask: every file the package writes (panel
parquet, manifest, tables, reports, figures, ``summary.json``, xlsx) goes through
:func:`atomic_path`: the content is written to a temporary file in the target folder,
given the mode a plain ``open(path, "w")`` would have (``0o666 & ~umask``: 0644 under the
usual umask 022, 0640 under 027), then moved over the target with ``os.replace``. A reader
never sees a half-written file; a failed write leaves the previous file in place.
(``tempfile.mkstemp`` alone creates 0600 files, which a colleague reading a report on a
shared drive could not open.)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import InputError, format_message

__all__ = ["as_frame", "atomic_path", "atomic_write_bytes", "atomic_write_text", "current_umask",
           "default_file_mode"]


def as_frame(data: Any, *, what: str = "data", also: str | None = None) -> pd.DataFrame:
    """The one conversion at the public boundary: a pandas DataFrame, as is.

    A polars DataFrame / LazyFrame or a pyarrow Table / RecordBatch is converted to pandas
    (dates become ``datetime64`` columns, which the panel checks read as years); polars is
    never imported here, so it is needed only when the caller passes a polars object.
    Anything else (numpy arrays, dicts, lists) is refused with an :class:`InputError`
    (``also`` names what else the caller accepts, e.g. "a path").
    """
    if isinstance(data, pd.DataFrame):
        return data
    top = type(data).__module__.split(".")[0]
    name = type(data).__name__
    if top == "polars" and name in ("DataFrame", "LazyFrame"):
        if name == "LazyFrame":
            data = data.collect()
        return data.to_pandas()
    if top == "pyarrow" and name in ("Table", "RecordBatch"):
        return data.to_pandas(date_as_object=False)
    if isinstance(data, pd.Series):
        fix = "pass a DataFrame: series.to_frame() or series.reset_index()"
    elif isinstance(data, dict):
        fix = "pass pandas.DataFrame(your_dict) (a long panel, one row per unit and period)"
    elif isinstance(data, np.ndarray):
        fix = ("name the columns: pandas.DataFrame(array, columns=[...]); estimators find "
               "the outcome, unit, time and cohort by column name")
    else:
        fix = ("pass a long panel as a pandas DataFrame (pandas.read_csv / read_parquet), "
               "a polars DataFrame or a pyarrow Table")
    raise InputError(format_message(
        f"{what} must be {also + ' or ' if also else ''}a pandas DataFrame (polars "
        "DataFrames and pyarrow Tables are converted)",
        seen=f"{type(data).__module__}.{name}", fix=fix))


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux
    ``/proc/self/status``); elsewhere set and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode a newly created regular file gets: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically,
    with the permissions of a newly created file (:func:`default_file_mode`)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, default_file_mode())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))
