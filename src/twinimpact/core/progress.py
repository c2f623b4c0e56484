"""Progress bars for long loops (bootstrap, placebo and permutation draws, big scans).

A bar is drawn on standard error only when it is a terminal (``isatty``) -- never in a
pipe, a log file, a notebook cell's captured output or a test -- and only once the loop
has run for :data:`DELAY` seconds, so quick loops print nothing. ``TWINIMPACT_PROGRESS=0``
switches bars off, ``=1`` forces them on (e.g. for a terminal that does not say it is one).

Twenty lines instead of a dependency (tqdm): one bar style, no nesting, no notebook widget.

>>> with progress(3, "placebo") as bar:   # not a terminal here: silent
...     for _ in range(3):
...         bar.update()
>>> bar.count
3
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

__all__ = ["DELAY", "progress", "track"]

#: seconds a loop runs before its bar appears
DELAY = 1.0
_T = TypeVar("_T")


def _enabled(stream: IO[str]) -> bool:
    flag = os.environ.get("TWINIMPACT_PROGRESS")
    if flag is not None:
        return flag not in ("0", "", "false", "no")
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class progress:
    """Count ``total`` steps of a loop named ``desc``; draw a bar on a terminal."""

    def __init__(self, total: int, desc: str, *, stream: IO[str] | None = None,
                 enabled: bool | None = None) -> None:
        self.total = max(int(total), 0)
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _enabled(self.stream) if enabled is None else enabled
        self.count = 0
        self._t0 = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def __enter__(self) -> progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.count += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._t0 < DELAY or (now - self._last < 0.2 and self.count < self.total):
            return
        self._last = now
        self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = now - self._t0
        frac = self.count / self.total if self.total else 1.0
        width = 24
        bar = "#" * int(width * frac) + "-" * (width - int(width * frac))
        eta = elapsed / frac - elapsed if frac > 0 else float("nan")
        self.stream.write(f"\r{self.desc}: [{bar}] {self.count}/{self.total} "
                          f"{elapsed:.0f}s elapsed, ~{eta:.0f}s left ")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def track(items: Iterable[_T], desc: str, total: int | None = None) -> Iterator[_T]:
    """Iterate over ``items`` with a :class:`progress` bar (``total`` defaults to ``len``)."""
    n = total if total is not None else len(items)  # type: ignore[arg-type]
    with progress(n, desc) as bar:
        for item in items:
            yield item
            bar.update()
