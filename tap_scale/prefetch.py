"""Reading partitions concurrently, each in time windows: Scale's latency overlapped, memory flat.

A sync spends most of its time waiting for Scale, and a chain of pages can only be read one page
after the other (each page names the next). So up to ``max_concurrency`` background readers read
chains at once: windows of every partition, as each partition's `PartitionPlan` cuts them
(`tap_scale.windows`), earliest partition and earliest window first. Their pages are emitted
interleaved as they arrive, each partition by the SDK's own sync of that partition, which keeps
the partition's state; a partition's watermark (where its first window not yet emitted starts)
is handed to the sync as its windows are emitted, so an interrupted first sync resumes from
there. Each reader holds at most one parsed page waiting for the sync and one more as the bytes
Scale sent (it parses a page only once there is room to queue it), so memory stays flat however
many tasks a sync moves.
"""

from __future__ import annotations

import itertools
import queue
import threading
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
    from datetime import datetime

    from tap_scale.windows import PartitionPlan, Window

Record = dict[str, t.Any]
Key = t.TypeVar("Key", bound="Hashable")
#: A window's pages: each page's records, and whether more pages follow.
Pages = t.Callable[[t.Any, "Window"], "Iterable[tuple[list[Record], bool]]"]

# Parsed pages queued per reader, beside the one it is fetching: a page is about 6 MB once parsed
# (100 tasks of every opt), so with 8 readers each page more per reader is 50 MB more at the
# peak. The sync emits a page in less time than a reader fetches one, so one is enough to keep
# it busy. A reader waits for room before it parses a page, not after: with 8 readers at no
# latency that took the peak from 145-150 MB to 122-126 MB, in the same time at 200 ms.
BUFFERED_PAGES_PER_READER = 1
# How often a blocked reader checks whether the sync was abandoned.
POLL_SECONDS = 0.5


class _WindowRead:
    """Every record of a window is queued before this."""

    def __init__(self, window: Window) -> None:
        self.window = window


class _Done:
    """End of a partition's records."""


class _Failed:
    """A partition's reading failed; the error is raised where its records are consumed."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


Item = list[Record] | _WindowRead | _Done | _Failed
# What a reader announces once a page is queued: the partition, and how many records the page
# holds (None: the partition is finished, or failed).
Arrival = tuple[t.Any, int | None]


class _Partition:
    """One partition's plan, queue of pages and place in the sync."""

    def __init__(self, context: t.Any, plan: PartitionPlan) -> None:  # noqa: ANN401 - the SDK's contexts
        self.context = context
        self.plan = plan
        self.items: queue.Queue[Item] = queue.Queue()
        # Held while a page is queued and announced, so pages are announced in queue order.
        self.lock = threading.Lock()
        self.ended = False


class PartitionPrefetcher:
    """Reads the windows of several partitions at once, in ``workers`` background threads."""

    def __init__(  # noqa: PLR0913 - what reading needs, all but the first two keyword-only
        self,
        pages: Pages,
        plans: Sequence[tuple[t.Any, PartitionPlan]],
        key: Callable[[t.Any], Hashable],
        *,
        workers: int,
        moment: Callable[[Record], datetime | None],
        on_watermark: Callable[[t.Any, datetime], None] | None = None,
    ) -> None:
        """Start reading each (context, plan) with ``pages(context, window)``.

        ``moment`` reads a record's ``completed_at``, for the plans; ``on_watermark`` is told,
        in the consuming thread, where a partition's watermark has moved to.
        """
        self._pages = pages
        self._key = key
        self._moment = moment
        self._on_watermark = on_watermark
        self._workers = max(1, workers)
        self._partitions = [_Partition(context, plan) for context, plan in plans]
        self._by_key = {key(p.context): p for p in self._partitions}
        if len(self._by_key) != len(self._partitions):
            # Two readers of one partition would share its queue and never both finish.
            msg = "Each partition can be read only once per sync"
            raise ValueError(msg)
        self._unconsumed = dict(self._by_key)
        self._arrivals: queue.Queue[Arrival] = queue.Queue()
        # Pages queued and not yet taken by the sync: memory stays flat however fast Scale is.
        self._slots = threading.Semaphore(BUFFERED_PAGES_PER_READER * self._workers)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._busy = 0
        self._abandoned = threading.Event()
        # Per reader: whether it holds a slot for the page it is parsing (`make_room`).
        self._local = threading.local()
        # Daemon threads: a sync that stops on an error must not wait for readers to drain.
        for _ in range(self._workers):
            threading.Thread(target=self._work, daemon=True).start()

    def covers(self, context: t.Any) -> bool:  # noqa: ANN401 - the SDK's contexts are dicts
        """Whether this prefetcher reads that partition (and it has not been consumed yet)."""
        return self._key(context) in self._unconsumed

    def records(self, context: t.Any) -> Iterator[Record]:  # noqa: ANN401
        """The partition's records as its pages arrive; reading errors raise here."""
        # Each partition is read ahead once: popped, so that a second sync of the same stream
        # (library use) reads it directly instead of waiting on an exhausted queue.
        partition = self._unconsumed.pop(self._key(context))
        while True:
            item = partition.items.get()
            if isinstance(item, list):
                self._slots.release()
                yield from item
            elif isinstance(item, _WindowRead):
                with self._lock:
                    watermark = partition.plan.emitted(item.window)
                if watermark is not None and self._on_watermark is not None:
                    self._on_watermark(context, watermark)
            elif isinstance(item, _Failed):
                raise item.error
            else:
                return

    def arrivals(self) -> Iterator[Arrival]:
        """Each partition's pages as they become ready, across partitions: (context, size).

        A size of None ends a partition (finished, or failed: its records raise the error).
        """
        unfinished = len(self._partitions)
        while unfinished:
            context, size = self._arrivals.get()
            unfinished -= size is None
            yield context, size

    def abandon(self) -> None:
        """Stop every reader (the sync is over or failed)."""
        self._abandoned.set()
        with self._lock:
            self._changed.notify_all()

    # The readers

    def make_room(self) -> None:
        """In a reader, before a page is parsed: wait for room to queue it.

        A page waits for room as the bytes Scale sent (1.6 MB for 100 tasks), not as the
        objects they parse into (about 6 MB): while the sync is slower than its readers, each
        reader holds one page's bytes rather than one page's objects. Other threads (the
        sync's own lookups) pass straight through.
        """
        local = self._local
        if getattr(local, "reader", False) and not local.room:
            self._acquire_slot()
            local.room = True

    def _release_room(self) -> None:
        """Give back the slot a reader took for a page it did not queue (set aside, empty)."""
        if self._local.room:
            self._local.room = False
            self._slots.release()

    def _work(self) -> None:
        self._local.reader = True
        self._local.room = False
        while (job := self._take()) is not None:
            partition, window = job
            try:
                self._read(partition, window)
            except _Abandoned:
                return
            except BaseException as error:  # noqa: BLE001 - handed to the consuming thread to raise
                self._end(partition, _Failed(error))
            finally:
                with self._lock:
                    self._busy -= 1
                    self._changed.notify_all()

    def _take(self) -> tuple[_Partition, Window] | None:
        """The next window to read, waiting while others may still make more; None: all read."""
        with self._lock:
            while not self._abandoned.is_set():
                for partition in self._partitions:
                    window = None if partition.ended else partition.plan.take()
                    if window is not None:
                        self._busy += 1
                        return partition, window
                if self._busy == 0:
                    return None  # nothing left to cut, and no reader that could make more
                self._changed.wait(POLL_SECONDS)
        return None

    def _read(self, partition: _Partition, window: Window) -> None:
        tasks = 0
        pages = iter(self._pages(partition.context, window))
        try:
            for number, (records, more) in enumerate(pages):
                if number == 0 and self._cut_up(partition, window, records, more=more):
                    return  # its tasks come again in the windows it was cut into
                if records:
                    tasks += len(records)
                    self._put(partition, records)
                self._release_room()
                if self._abandoned.is_set():
                    raise _Abandoned
        finally:
            self._release_room()
            close = getattr(pages, "close", None)
            if close is not None:
                close()
        partition.items.put(_WindowRead(window))
        with self._lock:
            if partition.plan.read(window, tasks):
                self._end(partition, _Done())
            self._changed.notify_all()

    def _cut_up(
        self, partition: _Partition, window: Window, records: list[Record], *, more: bool
    ) -> bool:
        sample = [moment for record in records if (moment := self._moment(record)) is not None]
        with self._lock:
            idle = self._workers - self._busy
            cut = partition.plan.first_page(window, sample, more=more, idle=idle)
            if cut:
                self._changed.notify_all()
        return cut

    def _acquire_slot(self) -> None:
        while not self._slots.acquire(timeout=POLL_SECONDS):
            if self._abandoned.is_set():
                raise _Abandoned

    def _put(self, partition: _Partition, records: list[Record]) -> None:
        if self._local.room:
            self._local.room = False  # the slot taken before parsing is the page's now
        else:
            self._acquire_slot()
        with partition.lock:
            partition.items.put(records)
            self._arrivals.put((partition.context, len(records)))

    def _end(self, partition: _Partition, item: _Done | _Failed) -> None:
        with partition.lock:
            if partition.ended:
                return
            partition.ended = True
            partition.items.put(item)
            self._arrivals.put((partition.context, None))


class _Abandoned(Exception):  # noqa: N818 - a signal between threads, not an error
    """The sync no longer wants this partition's records."""


def interleave(
    prefetcher: PartitionPrefetcher,
    syncs: Mapping[Key, Iterator[Record]],
    key: Callable[[t.Any], Key],
) -> Iterator[Record]:
    """Advance each partition's sync as its pages arrive, so partitions are emitted together.

    ``syncs`` are lazy per-partition syncs, each taking its records from
    ``prefetcher.records(context)`` and yielding each once it is emitted: advanced by as many
    records as a page holds once it is ready, never waiting on a partition that is still being
    read while another has records to emit. A partition's sync is run to its end when the
    partition ends, where it finishes the partition's state.
    """
    for context, size in prefetcher.arrivals():
        sync = syncs[key(context)]
        # Tasks are never dropped by post_process; if a sync did skip one, islice would only
        # make it wait for the next page's records here, and nothing would be lost.
        yield from sync if size is None else itertools.islice(sync, size)
