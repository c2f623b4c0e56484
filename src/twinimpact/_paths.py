"""Locate the repository's data folders (``data/raw``, ``data/processed``) and study files.

twinimpact ships its raw data in the repository (``data/raw``), not inside the wheel. We
look for it from the current directory upwards, then from this file upwards (editable
installs), and finally in ``$TWINIMPACT_HOME`` if set; errors name every place searched.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from .errors import InputError, format_message

__all__ = ["find_repo_root", "resolve_data_path"]


def _candidates() -> list[Path]:
    out = []
    env = os.environ.get("TWINIMPACT_HOME")
    if env:
        out.append(Path(env))
    cwd = Path.cwd().resolve()
    out.extend([cwd, *cwd.parents])
    here = Path(__file__).resolve()
    out.extend(here.parents)
    return out


def find_repo_root() -> Path:
    """The first folder (TWINIMPACT_HOME, CWD and parents, package parents) with data/raw."""
    seen = []
    for c in _candidates():
        if (c / "data" / "raw").is_dir():
            return c
        seen.append(str(c))
    raise InputError(format_message(
        "cannot find the twinimpact data folder data/raw",
        where="searched: " + ", ".join(seen[:6]) + ("…" if len(seen) > 6 else ""),
        fix="run from a clone of the repository, or set TWINIMPACT_HOME to it"))


def resolve_data_path(p: str | os.PathLike[str], base: Path | None = None) -> Path:
    """Resolve ``p``: absolute as is; else relative to ``base`` (the study file's folder)
    if it exists there; else relative to the repository root. A glob (``*.csv``) resolves
    to the first of those places where it matches a file."""
    path = Path(p)
    if path.is_absolute():
        tried = [path]
    else:
        tried = []
        if base is not None:
            tried.append(base / path)
        tried.append(Path.cwd() / path)
        try:
            tried.append(find_repo_root() / path)
        except InputError:
            pass
    if glob.has_magic(str(p)):  # a glob: the first base under which it matches something
        for t in tried:
            if glob.glob(str(t), recursive=True):
                return t
        raise InputError(format_message(
            "the glob matches no file", where=", ".join(str(t) for t in tried), seen=str(p),
            fix="check the pattern in the study file (relative patterns are read from the "
                "study file's folder or the repository root)"))
    for t in tried:
        if t.exists():
            return t.resolve()
    raise InputError(format_message(
        "data file not found", where=", ".join(str(t) for t in tried), seen=str(p),
        fix="check the path in the study file (relative paths are read from the study "
            "file's folder or the repository root)"))
