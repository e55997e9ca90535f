"""A sync's progress as a person reads it: a line per stream at a steady pace, a summary at the end.

The SDK logs machine METRIC lines; these lines are for a person watching a long sync: records
so far and their rate for each stream, and where Scale gives a total (a delivery's
`task_count`, a dataset delivery's `metadata.task_count`) how far the partition being read has
got and about how long it has left. The summary at the end gives the records per stream, the
requests made, the retries and the duration.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import typing as t
from dataclasses import dataclass

from singer_sdk import metrics

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from singer_sdk.helpers.types import Context

# Seconds between two progress lines of a stream, unless `progress_interval` says otherwise.
DEFAULT_INTERVAL = 30
LOGGER_NAME = "tap-scale.progress"
_MINUTE, _HOUR = 60, 3600
# Below this many records a second, a rate keeps one decimal: a parent stream whose children
# take the time (`deliveries` while their tasks are read) would otherwise read "0/s", stalled.
_WHOLE_RATE = 10


def duration(seconds: float) -> str:
    """Seconds as a person says them: "4.2 s", "3 min 05 s", "2 h 07 min"."""
    if seconds < _MINUTE:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < _HOUR:
        return f"{whole // _MINUTE} min {whole % _MINUTE:02d} s"
    return f"{whole // _HOUR} h {whole % _HOUR // _MINUTE:02d} min"


def per_second(rate: float) -> str:
    """A rate as a person reads it: "427/s", and "0.3/s" where whole numbers would say 0/s."""
    return f"{rate:,.0f}/s" if rate >= _WHOLE_RATE else f"{rate:.1f}/s"


def _key(context: Mapping[str, t.Any] | None) -> str:
    return json.dumps(dict(context or {}), sort_keys=True, default=str)


@dataclass
class SizedPartition:
    """A partition whose size Scale announced."""

    label: str
    expected: int
    done: int = 0


@dataclass
class _Stream:
    started: float
    last_line: float
    records: int = 0
    # The partition with an announced size that records last came for.
    current: SizedPartition | None = None


class SyncProgress:
    """What one sync has done so far, logged for a person; requests may be counted from threads.

    Records are counted in the thread that emits them, the SDK's; requests and retries in the
    threads that make them.
    """

    def __init__(
        self, interval: float = DEFAULT_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Log a stream's line every ``interval`` seconds at most (0: never)."""
        self.interval = interval
        self._clock = clock
        self._logger = logging.getLogger(LOGGER_NAME)
        self._started = clock()
        self._streams: dict[str, _Stream] = {}
        self._announced: dict[tuple[str, str], SizedPartition] = {}
        self._ended: set[str] = set()
        self._lock = threading.Lock()
        #: Runs just before the summary: what must be counted by then (`tap_scale.row_process`).
        self.before_summary: Callable[[], None] | None = None
        self.requests = 0
        self.retries = 0
        # Where records last flowed: the stream and partition a failure most likely concerns.
        self.position: tuple[str, Mapping[str, t.Any] | None] | None = None
        global _latest  # noqa: PLW0603 - the one sync a command line runs
        _latest = self

    def requested(self) -> None:
        """One more request to Scale (retries not included)."""
        with self._lock:
            self.requests += 1

    def retried(self) -> None:
        """One more retry of a request."""
        with self._lock:
            self.retries += 1

    def announce(self, stream: str, context: Context, expected: int, label: str) -> None:
        """Scale says the partition ``context`` of ``stream`` holds ``expected`` records.

        Announced again, the partition's size and label change, even while it is being read.
        """
        partition = self._announced.setdefault((stream, _key(context)), SizedPartition(label, 0))
        partition.label, partition.expected = label, expected

    def counter(self, stream: str, counter: metrics.Counter) -> metrics.Counter:
        """The SDK's record counter of a stream, counting for this progress too."""
        now = self._clock()
        self._streams.setdefault(stream, _Stream(started=now, last_line=now))
        return _RecordCounter(self, stream, counter)

    def derived(self, stream: str, count: int) -> None:
        """``count`` more records of ``stream``, written beside another stream's records."""
        now = self._clock()
        state = self._streams.setdefault(stream, _Stream(started=now, last_line=now))
        state.records += count
        if 0 < self.interval <= now - state.last_line:
            state.last_line = now
            self._logger.info("%s", self._line(stream, state, now))

    def recorded(
        self,
        stream: str,
        context: Mapping[str, t.Any] | None,
        partition: SizedPartition | None,
        count: int,
    ) -> None:
        """``count`` more records of ``stream`` emitted, in ``partition`` if it has a size."""
        self.position = (stream, context)
        state = self._streams[stream]
        state.records += count
        if partition is not None:
            partition.done += count
            state.current = partition
        if self.interval <= 0:
            return
        now = self._clock()
        if now - state.last_line >= self.interval:
            state.last_line = now
            self._logger.info("%s", self._line(stream, state, now))

    def sized(self, stream: str, context: Mapping[str, t.Any] | None) -> SizedPartition | None:
        """The partition of ``stream`` with this context, if Scale announced its size."""
        return self._announced.get((stream, _key(context)))

    def _line(self, stream: str, state: _Stream, now: float) -> str:
        elapsed = max(now - state.started, 1e-9)
        rate = state.records / elapsed
        line = (
            f"{stream}: {state.records:,} records so far in {duration(elapsed)} "
            f"({per_second(rate)})"
        )
        partition = state.current
        if partition is not None and partition.expected > 0:
            share = min(partition.done / partition.expected, 1.0)
            line += (
                f"; {partition.label}: {partition.done:,} of {partition.expected:,} ({share:.0%})"
            )
            left = partition.expected - partition.done
            if left > 0 and rate > 0:
                seconds = left / rate
                line += f", about {duration(seconds)} left" if seconds >= 1 else ", nearly done"
        return line

    def ended(self, stream: str, streams: int) -> None:
        """``stream`` is done for this run; after the last of ``streams``, the summary."""
        self._ended.add(stream)
        if len(self._ended) == streams:
            self._ended.clear()  # a tap object may sync again (library use): one summary each
            if self.before_summary is not None:
                self.before_summary()
            self._logger.info("%s", self.summary())

    def summary(self) -> str:
        """Records per stream, requests, retries and the duration of the sync so far."""
        counts = {name: state.records for name, state in self._streams.items()}
        per_stream = ", ".join(f"{name} {count:,}" for name, count in sorted(counts.items()))
        total = sum(counts.values())
        with self._lock:
            requests, retries = self.requests, self.retries
        return (
            f"Sync finished in {duration(self._clock() - self._started)}: {total:,} records"
            f"{f' ({per_stream})' if per_stream else ''}, {requests:,} "
            f"request{'s' * (requests != 1)} to Scale, {retries:,} "
            f"retr{'ies' if retries != 1 else 'y'}."
        )


_latest: SyncProgress | None = None


def whereabouts() -> str:
    """Where the latest sync's records last flowed, for a message about a failure, or ""."""
    if _latest is None or _latest.position is None:
        return ""
    stream, context = _latest.position
    partition = f", partition {dict(context)}" if context else ""
    return f" (stream {stream}{partition}, where records last flowed)"


class _RecordCounter(metrics.Counter):
    """The SDK's record counter (its METRIC lines unchanged), also feeding the progress."""

    def __init__(self, progress: SyncProgress, stream: str, counter: metrics.Counter) -> None:
        super().__init__(counter.metric, counter.tags, counter.log_interval)
        self._progress = progress
        self._stream = stream
        self._partition = progress.sized(stream, self.context)

    @override
    def with_context(self, value: Context | None) -> None:
        super().with_context(value)
        self._partition = self._progress.sized(self._stream, value)
        self._progress.position = (self._stream, value)

    @override
    def increment(self, value: int = 1) -> None:
        super().increment(value)
        self._progress.recorded(self._stream, self.context, self._partition, value)
