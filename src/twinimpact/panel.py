"""The analysis panel: a long frame, its column roles and its provenance manifest.

:class:`Panel` is what :func:`twinimpact.etl.build_panel` returns and what the estimators
consume (``panel.frame`` with ``outcome=panel.outcome, unit=panel.unit, time=panel.time,
cohort=panel.cohort``). ``panel.manifest`` records where the numbers came from: input
hashes, parameters, the package version, row counts after each step and every dropped
or altered row with its reason. :meth:`Panel.to_parquet` writes the frame and a
``manifest.json`` beside it, each atomically (temporary file in the same folder, then
``os.replace``), so a reader never sees a half-written panel.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from ._io import atomic_path
from .provenance import file_sha256, jsonable

__all__ = ["Panel"]


class Panel:
    """An analysis panel with column roles and a manifest.

    Parameters / attributes
    -----------------------
    frame : DataFrame
        One row per unit x year. Columns at least ``unit_id, reporter, partner, year,
        value, cohort, n_twinnings, rel_time`` (see :func:`twinimpact.etl.build_panel`).
        Stored as a private copy; ``panel.frame`` returns a fresh copy on every access, so
        the panel cannot be changed through it.
    manifest : dict
        Provenance (JSON-serialisable); callers may add keys (e.g. a study name).
    outcome, unit, time, cohort : str
        Column roles, for estimator keywords of the same names.

    Examples
    --------
    >>> import pandas as pd
    >>> p = Panel(pd.DataFrame({"unit_id": ["A-B"], "year": [2000], "value": [1.0],
    ...                         "cohort": pd.array([pd.NA], dtype="Int64")}), {})
    >>> p.roles
    {'outcome': 'value', 'unit': 'unit_id', 'time': 'year', 'cohort': 'cohort'}
    """

    __slots__ = ("_frame", "cohort", "manifest", "outcome", "time", "unit")

    def __init__(self, frame: pd.DataFrame, manifest: dict[str, Any] | None = None, *,
                 outcome: str = "value", unit: str = "unit_id", time: str = "year",
                 cohort: str = "cohort") -> None:
        set_ = object.__setattr__
        set_(self, "_frame", frame.copy())
        set_(self, "manifest", manifest if manifest is not None else {})
        set_(self, "outcome", outcome)
        set_(self, "unit", unit)
        set_(self, "time", time)
        set_(self, "cohort", cohort)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Panel is immutable; cannot set {name!r} (build a new Panel)")

    @property
    def frame(self) -> pd.DataFrame:
        """A copy of the panel frame."""
        return self._frame.copy()

    @property
    def roles(self) -> dict[str, str]:
        """Column roles as estimator keywords (``outcome, unit, time, cohort``)."""
        return {"outcome": self.outcome, "unit": self.unit, "time": self.time,
                "cohort": self.cohort}

    def __len__(self) -> int:
        return len(self._frame)

    def __repr__(self) -> str:
        f = self._frame
        n_units = f[self.unit].nunique() if self.unit in f else 0
        treated = (f.groupby(self.unit)[self.cohort].first().notna().sum()
                   if {self.unit, self.cohort} <= set(f.columns) else 0)
        return (f"<Panel {len(f):,} rows, {n_units:,} units ({treated:,} ever treated), "
                f"level={self.manifest.get('parameters', {}).get('level', '?')}>")

    def summary(self) -> str:
        """A few lines for logs: rows, units, cohorts, and the link accounting."""
        lines = [repr(self)]
        links = self.manifest.get("steps", {}).get("links")
        if links:
            lines.append(f"links: {links['n_in']:,} in, {links['n_out']:,} counted; dropped: "
                         + ", ".join(f"{k}: {v:,}" for k, v in links["dropped"].items()))
        return "\n".join(lines)

    def to_parquet(self, path: str | os.PathLike[str]) -> Path:
        """Write the frame to ``path`` and ``manifest.json`` beside it, atomically.

        The manifest written gains an ``output`` entry (file name, sha256 and row count of
        the parquet file). Returns the parquet path.
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        frame = self._frame.copy()
        frame.attrs = {}
        with atomic_path(target) as tmp:
            frame.to_parquet(tmp, index=False)
            digest = file_sha256(tmp)
        manifest = dict(self.manifest)
        manifest["output"] = {"parquet": target.name, "sha256": digest,
                              "rows": len(frame), "columns": list(map(str, frame.columns)),
                              "roles": self.roles}
        text = json.dumps(jsonable(manifest), indent=1, ensure_ascii=False, allow_nan=False)
        with atomic_path(target.with_name("manifest.json")) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")
        return target

    @classmethod
    def read_parquet(cls, path: str | os.PathLike[str]) -> Panel:
        """Read a panel written by :meth:`to_parquet` (frame + manifest + roles)."""
        p = Path(path)
        frame = pd.read_parquet(p)
        mpath = p.with_name("manifest.json")
        manifest = json.loads(mpath.read_text(encoding="utf-8")) if mpath.exists() else {}
        roles = manifest.get("output", {}).get("roles", {})
        return cls(frame, manifest, **roles)
