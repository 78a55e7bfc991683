"""A latest-only, thread-safe slot: the console never queues frames for a slow client.

The robot thread ``put``s every new state/frame; each client's sender ``take``s whatever is there
when it is ready to send. A value that was not taken before the next ``put`` is dropped (and
counted), so a slow browser always sees the newest frame and never falls behind.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._item: T | None = None
        self._full = False
        self.put_count = 0
        self.dropped = 0
        """Values replaced before anyone took them."""

    def put(self, item: T) -> None:
        with self._lock:
            if self._full:
                self.dropped += 1
            self._item, self._full = item, True
            self.put_count += 1

    def take(self) -> T | None:
        """The latest value, or None if nothing new was put since the last take."""
        with self._lock:
            if not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            return item

    def __len__(self) -> int:
        """At most 1: the slot never holds more than the latest value."""
        with self._lock:
            return int(self._full)
