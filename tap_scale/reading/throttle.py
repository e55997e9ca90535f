"""How many requests are sent to Scale at once: up to `max_concurrency`, fewer while it says 429.

Scale publishes no rate limit, so the tap learns it: every request waits for a free slot, and
the number of slots is halved when Scale answers 429 Too Many Requests and grows back by one
after a long enough run of answers without one, never above `max_concurrency` (additive
increase, multiplicative decrease, as TCP finds a link's capacity). A limit of R requests per
second is then used close to its full rate, with few 429s, however many windows are waiting.
The request that got the 429 is retried as any other (after its `Retry-After`).
"""

from __future__ import annotations

import contextlib
import threading
import typing as t

if t.TYPE_CHECKING:
    import logging
    from collections.abc import Iterator

TOO_MANY_REQUESTS = 429
# Answers without a 429, per slot, before one more slot is tried: enough that under a steady
# limit the probe for more (which costs a 429) is a small share of all requests.
ANSWERS_PER_SLOT_BEFORE_GROWING = 16


class Throttle:
    """The slots of requests in flight, shared by every stream and thread of a sync."""

    def __init__(self, ceiling: int, logger: logging.Logger | None = None) -> None:
        """Start with `ceiling` slots, the most there will ever be."""
        self.ceiling = max(1, ceiling)
        self.limit = self.ceiling
        self._logger = logger
        self._in_flight = 0
        # Each halving starts a new epoch: 429s to requests sent before it are the same burst.
        self._epoch = 0
        self._answers = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def slot(self) -> Iterator[int]:
        """Hold a slot while a request is sent and answered; yields the epoch it was sent in."""
        with self._changed:
            while self._in_flight >= self.limit:
                self._changed.wait()
            self._in_flight += 1
            epoch = self._epoch
        try:
            yield epoch
        finally:
            with self._changed:
                self._in_flight -= 1
                self._changed.notify_all()

    def answered(self, epoch: int, status: int) -> None:
        """A request sent in `epoch` was answered with this status."""
        with self._changed:
            if status == TOO_MANY_REQUESTS:
                if epoch != self._epoch:
                    return  # sent before the last halving: already counted
                was, self.limit = self.limit, max(1, self.limit // 2)
                self._epoch += 1
                self._answers = 0
                if was != self.limit:
                    self._log(
                        "Scale is rate limiting: %d requests at once from now on, not %d", was
                    )
                return
            self._answers += 1
            if (
                self.limit < self.ceiling
                and self._answers >= ANSWERS_PER_SLOT_BEFORE_GROWING * self.limit
            ):
                was, self.limit = self.limit, self.limit + 1
                self._answers = 0
                self._changed.notify_all()
                self._log("No 429 for a while: %d requests at once from now on, not %d", was)

    def _log(self, message: str, was: int) -> None:
        if self._logger is not None:
            self._logger.info(message, self.limit, was)
