"""What the bridge does when the site says "not now", in one place.

Two kinds of waiting, never mixed up:

* **The site's pause** — a ``429`` or ``503`` with ``Retry-After``: nothing is asked of
  the site, for any category, until it has passed. :func:`retry_after` reads the header
  (seconds or an HTTP date), clamped to :data:`MAX_PAUSE`, so that a site asking for
  decades (or a broken header) cannot silence the bridge for ever. A :class:`Pause` is
  where it is kept: this process's memory (:class:`LocalPause`), or the store, shared by
  every process (``feedbridge.store.SharedPause``, falling back to memory while the
  store fails).
  A pause is not a category's failure: it counts toward no category's back-off and shows
  in ``/status`` as the site's own ``paused_until``.
* **A category's back-off** — its own fetches failed: :class:`Backoff` says how long it
  waits before the next try (exponential, jittered, capped at :data:`MAX_PAUSE`, never
  shorter than the site's pause when the failure came with one).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Protocol

log = logging.getLogger(__name__)
MAX_PAUSE = 1800.0  # seconds: the longest any wait lasts, the site's or our own


def retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` as seconds, from either of its forms, at most :data:`MAX_PAUSE`;
    None when absent or unreadable."""
    if not value:
        return None
    seconds_text = value.strip()
    if seconds_text.isascii() and seconds_text.isdigit():  # not "²", which float() refuses
        seconds = float(seconds_text)
    else:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - now()
    return min(max(0.0, seconds), MAX_PAUSE)


@dataclass(frozen=True)
class Backoff:
    """Delay before retrying after ``count`` consecutive failures: base·2ⁿ⁻¹, jittered."""

    base: float = 30.0
    cap: float = MAX_PAUSE
    jitter: Callable[[], float] = random.random  # uniform in [0, 1)

    def delay(self, count: int, retry_after: float | None = None) -> float:
        exponential = min(self.cap, self.base * 2.0 ** min(count - 1, 32))
        jittered = exponential * (0.5 + 0.5 * self.jitter())
        return max(jittered, min(retry_after or 0.0, self.cap))


class Pause(Protocol):
    """Where the site's own "come back later" is remembered."""

    def paused_for(self) -> float:
        """Seconds until the site may be asked again; 0 when it may be now."""
        ...

    def pause(self, seconds: float) -> None:
        """Ask the site nothing for ``seconds`` from now (never shortens a pause)."""
        ...


class LocalPause:
    """The site's pause as this process heard it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until = 0.0

    def paused_for(self) -> float:
        return max(0.0, self._until - self._clock())

    def pause(self, seconds: float) -> None:
        self._until = max(self._until, self._clock() + seconds)
