"""The registry of study kinds: ``[study] kind = "<name>"`` picks one.

Each kind module defines ``KIND``, a :class:`~twinimpact.studies.base.StudyKind` (its
pipeline, step count, required inputs and own validation). A new kind is a new module here
and one line in :data:`KINDS`.
"""

from __future__ import annotations

from ...errors import SpecificationError, format_message, suggest
from ..base import StudyKind
from . import case_study, gravity, gravity_etwfe, panel

__all__ = ["KINDS", "get_kind"]

#: study kinds by name, in documentation order
KINDS: dict[str, StudyKind] = {k.name: k for k in (panel.KIND, gravity.KIND, case_study.KIND,
                                              gravity_etwfe.KIND)}


def get_kind(name: str) -> StudyKind:
    """The registered study kind ``name``."""
    try:
        return KINDS[name]
    except KeyError:
        close = suggest(name, KINDS)
        raise SpecificationError(format_message(
            f"unknown study kind {name!r}", where="study key [study.kind]", seen=name,
            fix=(f"did you mean {close[0]!r}? " if close else "")
            + f"kinds: {', '.join(KINDS)}")) from None
