"""The reading engine: reader threads read windows of every partition at once, for one consumer.

`workers` reader threads read, and one consumer, the thread that writes the sync's messages,
takes what they read from one queue. The engine decides which window is read next
(`PartitionPlan.take`, earliest partition first, then earliest window), never the consumer:
whichever partitions or streams are selected, and whatever the consumer does with the records,
readers always have the next window to read, and the consumer always has the next page to
take. It knows nothing of HTTP or of the SDK: a `PageSource` gives each reader thread a
`PageReader` of its own (in the tap, one over HTTP with its own session), and the consumer gets
`Records`, `Watermark` and `Finished` events.
"""

from __future__ import annotations

import itertools
import queue
import threading
import typing as t
from dataclasses import dataclass, field

from tap_scale.reading.plan import PartitionPlan, State, Window

if t.TYPE_CHECKING:
    from collections.abc import Callable, Generator, Hashable, Iterator, Sequence

Record = dict[str, t.Any]
#: Whatever a page source takes to name a partition (in the tap, the SDK's partition context).
Context = t.Any
# How often a reader blocked on a full queue checks whether the engine was closed.
POLL_SECONDS = 0.2
# A page lists tasks by creation where this share of its neighbouring tasks are in that order
# (a hash shuffle puts half of them so), and it has this many pairs to tell by.
BY_TIME = 0.9
MIN_PAIRS = 9


class Page(t.NamedTuple):
    """One page of a window: its records, and whether more pages follow."""

    records: list[Record]
    more: bool


class PageReader(t.Protocol):
    """Reads pages for one reader thread, and only that one (it may hold a session)."""

    def pages(
        self,
        context: Context,
        window: Window,
        room: Callable[[], None],
    ) -> Iterator[Page]:
        """The window's pages, each fetched lazily; `room()` is called before one is parsed."""
        ...

    def first_page(self, context: Context, after: int | None) -> Page:
        """The first page of the partition's tasks after `after`, with no upper bound."""
        ...

    def close(self) -> None:
        """Release what the reader holds (its session)."""
        ...


class PageSource(t.Protocol):
    """Makes a `PageReader` for each reader thread."""

    def reader(self) -> PageReader:
        """A reader for the calling thread alone."""
        ...


@dataclass(frozen=True)
class Spec:
    """A partition to read: its key, its context (for the source), its range [lo, hi)."""

    key: Hashable
    context: Context
    lo: int | None
    hi: int | None


@dataclass(frozen=True)
class Records:
    """A page's records, to be emitted: all of a page, in the order Scale sent them."""

    key: Hashable
    records: list[Record]


@dataclass(frozen=True)
class Watermark:
    """Every task of the partition completed before `moment` has been emitted."""

    key: Hashable
    moment: int


@dataclass(frozen=True)
class Finished:
    """Every task of the partition has been emitted."""

    key: Hashable


Event = Records | Watermark | Finished


@dataclass(frozen=True)
class Costs:
    """What a read cost beyond its pages: for the log, and the README's figures."""

    partitions: int
    windows: int
    set_aside: int
    restarts: int
    restarted_pages: int


@dataclass(eq=False)
class _Partition:
    spec: Spec
    plan: PartitionPlan


@dataclass(eq=False)
class _Prefetch:
    """A partition's whole-range first page, asked for before its range's upper bound is known."""

    context: Context
    after: int | None
    done: threading.Event = field(default_factory=threading.Event)
    page: Page | None = None


class _WindowRead(t.NamedTuple):
    partition: _Partition
    window: Window


class _Failed(t.NamedTuple):
    error: BaseException


class _Closed(Exception):  # noqa: N818 - a signal between threads, not an error
    """The engine was closed: the reader stops."""


class _Slot:
    """A reader's claim on one of the queue's places, taken before a page is parsed."""

    def __init__(self, places: threading.Semaphore, closed: threading.Event) -> None:
        self._places = places
        self._closed = closed
        self.held = False

    def take(self) -> None:
        if self.held:
            return
        while not self._places.acquire(timeout=POLL_SECONDS):
            if self._closed.is_set():
                raise _Closed
        self.held = True

    def hand_over(self) -> None:
        """The page is queued: its place is the consumer's to give back."""
        self.held = False

    def give_back(self) -> None:
        if self.held:
            self.held = False
            self._places.release()


class ReadingEngine:
    """Reads windows of partitions at once in `workers` reader threads; see the module docstring.

    Threads and what they own:

    - Each reader thread owns its `PageReader` (made, used and closed in that thread) and the
      window it is reading; it calls the plans only under the lock.
    - The consumer (the thread that iterates `read`) owns the output: it alone takes from the
      queue, gives queue places back, and tells plans what was emitted (under the lock).

    One lock (`_lock`, with its condition `_changed`) guards every plan, the jobs waiting
    (`_prefetches`), the partitions, and `_busy`. The queue (`_output`) and the semaphore of its
    places (`_places`: `workers` pages queued or being parsed, at most) are thread-safe.
    """

    def __init__(
        self,
        source: PageSource,
        *,
        workers: int,
        page_size: int,
        moment: Callable[[Record], int | None],
        created: Callable[[Record], int | None] = lambda _: None,
    ) -> None:
        """Read with `workers` readers from `source`.

        `moment` reads a record's `completed_at`, `created` its `created_at` (to tell whether a
        listing follows the order tasks were created in), both in milliseconds.
        """
        self._source = source
        self._workers = max(1, workers)
        self._page_size = page_size
        self._moment = moment
        self._created = created
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._output: queue.Queue[Records | _WindowRead | _Failed] = queue.Queue()
        self._places = threading.Semaphore(self._workers)
        self._closed = threading.Event()
        self._busy = 0
        self._partitions: list[_Partition] | None = None
        self._prefetches: list[tuple[Hashable, _Prefetch]] = []
        self._prefetched: dict[Hashable, _Prefetch] = {}
        self._threads: list[threading.Thread] = []

    # The consumer's side

    def prefetch(self, key: Hashable, context: Context, after: int | None) -> None:
        """Ask now for a partition's first page, before `read` knows its upper bound."""
        asked = _Prefetch(context, after)
        with self._lock:
            self._prefetched[key] = asked
            self._prefetches.append((key, asked))
            self._changed.notify_all()
        self._start()

    def read(self, specs: Sequence[Spec]) -> Generator[Event, None, None]:
        """Read the partitions; yields their events as pages arrive. Reading errors raise here.

        Each `Records` is emitted by the caller before it asks for the next event: a partition's
        `Watermark` and `Finished` come only after every record they cover was yielded.
        """
        partitions = [
            _Partition(
                spec,
                PartitionPlan(
                    spec.lo,
                    spec.hi,
                    workers=self._workers,
                    page_size=self._page_size,
                    partitions=len(specs),
                ),
            )
            for spec in specs
        ]
        if len({p.spec.key for p in partitions}) != len(partitions):
            msg = "Each partition can be read only once per engine"
            raise ValueError(msg)
        with self._lock:
            self._partitions = partitions
            self._changed.notify_all()
        self._start()
        unfinished = len(partitions)
        while unfinished:
            item = self._output.get()
            if isinstance(item, Records):
                self._places.release()
                yield item
            elif isinstance(item, _WindowRead):
                partition = item.partition
                with self._lock:
                    watermark = partition.plan.emitted(item.window)
                    finished = partition.plan.finished
                if watermark is not None:
                    yield Watermark(partition.spec.key, watermark)
                if finished:
                    unfinished -= 1
                    yield Finished(partition.spec.key)
            else:
                raise item.error

    def costs(self) -> Costs:
        """What the read has cost so far beyond its pages."""
        with self._lock:
            plans = [partition.plan for partition in self._partitions or ()]
            return Costs(
                partitions=len(plans),
                windows=sum(plan.windows_read for plan in plans),
                set_aside=sum(plan.set_aside for plan in plans),
                restarts=sum(plan.restarts for plan in plans),
                restarted_pages=sum(plan.restarted_pages for plan in plans),
            )

    def close(self) -> None:
        """Stop every reader (the sync is over, or failed); returns at once."""
        self._closed.set()
        with self._lock:
            self._changed.notify_all()

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed.is_set()

    # The readers

    def _start(self) -> None:
        with self._lock:
            if self._threads:
                return
            # Daemon threads: a sync that stops on an error must not wait for a request to end.
            self._threads = [
                threading.Thread(target=self._work, name=f"tap-scale-reader-{n}", daemon=True)
                for n in range(self._workers)
            ]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        try:
            reader = self._source.reader()
        except BaseException as error:  # noqa: BLE001 - handed to the consumer to raise
            self._output.put(_Failed(error))
            return
        try:
            while (job := self._next_job()) is not None and self._run(reader, job):
                pass
        finally:
            reader.close()

    def _run(self, reader: PageReader, job: _Prefetch | _WindowRead) -> bool:
        """Do one job; whether the reader goes on to the next."""
        try:
            if isinstance(job, _Prefetch):
                self._prefetch(reader, job)
            else:
                self._read_window(reader, *job)
        except _Closed:
            return False
        except BaseException as error:  # noqa: BLE001 - handed to the consumer to raise
            if isinstance(job, _WindowRead):
                with self._lock:
                    job.partition.plan.failed(job.window)
            self._output.put(_Failed(error))
            return False
        finally:
            with self._lock:
                self._busy -= 1
                self._changed.notify_all()
        return True

    def _next_job(self) -> _Prefetch | _WindowRead | None:
        """The next thing to read, waiting while others may still make more; None: all read."""
        with self._lock:
            while not self._closed.is_set():
                if self._prefetches:
                    self._busy += 1
                    return self._prefetches.pop(0)[1]
                partitions = self._partitions
                if partitions is not None:
                    if (job := self._take(partitions)) is not None:
                        self._busy += 1
                        return job
                    if self._busy == 0 and not any(p.plan.reading for p in partitions):
                        return None  # nothing to take, and no reader that could make more
                self._changed.wait()
        return None

    def _take(self, partitions: list[_Partition]) -> _WindowRead | None:
        for partition in partitions:
            if (window := partition.plan.take()) is not None:
                return _WindowRead(partition, window)
        idle = self._workers - self._busy
        for partition in partitions:
            if partition.plan.restart_one(idle) and (window := partition.plan.take()):
                return _WindowRead(partition, window)
        return None

    def _prefetch(self, reader: PageReader, asked: _Prefetch) -> None:
        try:
            asked.page = reader.first_page(asked.context, asked.after)
        except Exception:  # noqa: BLE001 - the window asks again itself, and says what is wrong
            asked.page = None
        finally:
            asked.done.set()

    def _first_pages(
        self, reader: PageReader, partition: _Partition, window: Window, slot: _Slot
    ) -> Generator[Page, None, None]:
        """The window's pages, the first one from a prefetch where one was asked for it."""
        key = partition.spec.key
        with self._lock:
            asked = self._prefetched.pop(key, None) if window.whole else None
        if asked is not None and asked.after == window.after:
            while not asked.done.wait(POLL_SECONDS):
                if self._closed.is_set():
                    raise _Closed
            if asked.page is not None:
                records, more = asked.page
                if window.hi is not None:
                    # Completed at or after the bound: the next sync's, as a bounded request
                    # would have left them out.
                    records = [
                        r for r in records if (m := self._moment(r)) is None or m < window.hi
                    ]
                yield Page(records, more)
                if more:
                    # The page's token is for the unbounded query: read the window again, bounded.
                    yield from reader.pages(partition.spec.context, window, slot.take)
                return
        yield from reader.pages(partition.spec.context, window, slot.take)

    def _listed_by_time(self, records: list[Record]) -> bool:
        """Whether a page lists its tasks in the order they were created, either way."""
        created = [c for record in records if (c := self._created(record)) is not None]
        pairs = list(itertools.pairwise(created))
        if len(pairs) < MIN_PAIRS:
            return False
        rising = sum(a <= b for a, b in pairs)
        falling = sum(a >= b for a, b in pairs)
        return max(rising, falling) >= BY_TIME * len(pairs)

    def _read_window(self, reader: PageReader, partition: _Partition, window: Window) -> None:
        slot = _Slot(self._places, self._closed)
        pages = self._first_pages(reader, partition, window, slot)
        read_on = True
        try:
            for page in pages:
                moments = [m for record in page.records if (m := self._moment(record)) is not None]
                by_time = window.whole and not window.pages and self._listed_by_time(page.records)
                with self._lock:
                    idle = self._workers - self._busy
                    verdict = partition.plan.page(
                        window, moments, more=page.more, idle=idle, by_time=by_time
                    )
                    self._changed.notify_all()
                if verdict.emit and page.records:
                    slot.take()  # a prefetched page was parsed without one
                    self._output.put(Records(partition.spec.key, page.records))
                    slot.hand_over()
                slot.give_back()
                if self._closed.is_set():
                    raise _Closed
                read_on = verdict.read_on
                if not read_on:
                    break
        finally:
            slot.give_back()
            pages.close()
        if read_on:
            # Every window ends with a page that says no more follow, or is set aside: a source
            # that stops short would leave the partition waiting for the rest forever.
            msg = f"The pages of a window ended without a last page: {window}"
            raise RuntimeError(msg)
        if window.state is State.READ:
            self._output.put(_WindowRead(partition, window))
