"""Estimator registry: the names a study file (and ``event_study(method=...)``) may use.

Entries are imported lazily, so a study that uses only TWFE does not import the others.
Adding an estimator means adding one line here; reports need no change.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from ..errors import SpecificationError, format_message, suggest

__all__ = ["ESTIMATORS", "call_with_supported", "check_options", "get_estimator"]

ESTIMATORS: dict[str, str] = {
    "twfe": "twinimpact.estimators.twfe:twfe",
    "event_study": "twinimpact.estimators.twfe:event_study",
    "callaway_santanna": "twinimpact.estimators.callaway_santanna:callaway_santanna",
    "sun_abraham": "twinimpact.estimators.sun_abraham:sun_abraham",
    "imputation": "twinimpact.estimators.imputation:imputation",
    "did2s": "twinimpact.estimators.did2s:did2s",
    "etwfe": "twinimpact.estimators.etwfe:etwfe",
    "did_multiplegt": "twinimpact.estimators.did_multiplegt:did_multiplegt",
    "synthetic_did": "twinimpact.estimators.synthetic_did:synthetic_did",
    "synthetic_did_event": "twinimpact.estimators.synthetic_did_event:synthetic_did_event",
    "ppml": "twinimpact.estimators.ppml:ppml",
    "poisson_event_study": "twinimpact.estimators.poisson_event_study:poisson_event_study",
}


def get_estimator(name: str) -> Callable[..., Any]:
    """The estimator function registered under ``name``."""
    if name not in ESTIMATORS:
        close = suggest(name, ESTIMATORS)
        raise SpecificationError(format_message(
            "unknown estimator", seen=name,
            fix=(f"did you mean {close[0]!r}? " if close else "")
            + f"available: {', '.join(sorted(ESTIMATORS))}"))
    module, attr = ESTIMATORS[name].split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:  # pragma: no cover - packaging error
        raise SpecificationError(f"estimator {name!r} is not available in this install: "
                                 f"{exc}") from exc


def call_with_supported(fn: Callable[..., Any], data: Any, common: dict[str, Any],
                        options: dict[str, Any]) -> Any:
    """Call ``fn(data, **kwargs)`` passing the ``common`` keywords it accepts and all
    ``options`` (options win; an option it does not accept raises its own error)."""
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in common.items() if (k in params or takes_any) and v is not None}
    kwargs.update(options)
    return fn(data, **kwargs)


#: keywords ``event_study(method=...)`` consumes itself for some methods
_METHOD_EXTRAS = {"callaway_santanna": {"na_rm", "balance_e"}, "poisson": {"poisson_method"}}


def _keywords(fn: Callable[..., Any]) -> tuple[set[str], bool]:
    params = inspect.signature(fn).parameters
    names = {k for k, p in params.items()
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                           inspect.Parameter.KEYWORD_ONLY)}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return names - {"data"}, takes_any


def check_options(name: str, options: dict[str, Any], *, where: str,
                  extra: tuple[str, ...] = ()) -> None:
    """Raise :class:`SpecificationError` for an option estimator ``name`` does not take
    (``event_study`` with ``method=`` also takes that method's keywords); ``extra`` are
    keys the caller handles itself (e.g. a study's ``aggregate``)."""
    names, takes_any = _keywords(get_estimator(name))
    method = options.get("method")
    if name == "event_study" and isinstance(method, str) and method != "twfe":
        target = "poisson_event_study" if method == "poisson" else method
        if target in ESTIMATORS:
            names |= _keywords(get_estimator(target))[0] | _METHOD_EXTRAS.get(method, set())
            takes_any = False
    if takes_any:
        return
    allowed = names | set(extra)
    for key in options:
        if key not in allowed:
            close = suggest(key, allowed)
            raise SpecificationError(format_message(
                f"unknown option {key!r} for estimator {name!r}"
                + (f" (method={method!r})" if name == "event_study" and method else ""),
                where=where, seen=key,
                fix=(f"did you mean {close[0]!r}? " if close else "")
                + f"options of {name}: {', '.join(sorted(allowed))}"))
