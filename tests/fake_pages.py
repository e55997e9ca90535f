"""Fake page sources for the reading engine's unit tests: no HTTP, no SDK, no subprocess.

A `FakeWorld` holds each partition's tasks (an id and a `completed_at` in milliseconds) in a
listing order, and serves a window's pages as Scale would: the tasks completed in [lo, hi) (or at
hi too, with `inclusive_before`), in that order, `page_size` at a time, each page asking for room
before it is "parsed". It can wait a little per page, fail a window's nth request, or stop a
window short, and it counts what it served.
"""

from __future__ import annotations

import hashlib
import threading
import time
import typing as t
from dataclasses import dataclass, field

from tap_scale.reading.engine import Page

if t.TYPE_CHECKING:
    import random
    from collections.abc import Callable, Hashable, Iterator

    from tap_scale.reading.plan import Window

DAY = 86_400_000
ORDERS = ("shuffled", "newest-first", "oldest-first", "by-batch")


@dataclass(frozen=True)
class Task:
    """One task of a fake partition."""

    task_id: str
    completed_at: int
    created_at: int
    batch: int

    def record(self) -> dict[str, t.Any]:
        """The record a page holds for it."""
        return {
            "task_id": self.task_id,
            "completed_at": self.completed_at,
            "created_at": self.created_at,
        }


def order_key(order: str) -> Callable[[Task], t.Any]:
    """How a listing of that order sorts tasks."""
    digest: Callable[[Task], bytes] = lambda task: hashlib.sha256(task.task_id.encode()).digest()  # noqa: E731
    return {
        "shuffled": digest,
        "newest-first": lambda task: (-task.created_at, task.task_id),
        "oldest-first": lambda task: (task.created_at, task.task_id),
        "by-batch": lambda task: (task.batch, digest(task)),
    }[order]


def labelled(
    rng: random.Random, count: int, *, start: int, days: float, prefix: str = "task"
) -> list[Task]:
    """Tasks created over `days` from `start`, each completed 2 to 48 hours later, some ties."""
    tasks = []
    for number in range(count):
        created = start + rng.randrange(max(1, int(days * DAY)))
        lag = rng.randrange(2 * 3_600_000, 48 * 3_600_000)
        completed = created + lag
        if number % 3 == 0:
            completed -= completed % 1000  # whole seconds: some tasks share an instant
        tasks.append(
            Task(f"{prefix}-{number}", completed, created, int((created - start) // (4 * DAY)))
        )
    return tasks


def moment(record: dict[str, t.Any]) -> int | None:
    """A fake record's `completed_at`."""
    value = record.get("completed_at")
    return value if isinstance(value, int) else None


def created(record: dict[str, t.Any]) -> int | None:
    """A fake record's `created_at`."""
    value = record.get("created_at")
    return value if isinstance(value, int) else None


@dataclass
class FakeWorld:
    """Each partition's tasks, in listing order, served as pages."""

    partitions: dict[Hashable, list[Task]]
    order: str = "shuffled"
    page_size: int = 100
    inclusive_before: bool = False
    seconds_per_page: float = 0.0
    #: (partition, its request number) -> an error to raise on that request of that partition.
    failures: dict[tuple[Hashable, int], BaseException] = field(default_factory=dict)
    #: Windows whose pages stop short (no last page): a broken source.
    stop_short: bool = False
    #: A server that ignores `completed_after` and `completed_before`: every window, all tasks.
    ignore_bounds: bool = False
    requests: int = 0
    per_partition: dict[Hashable, int] = field(default_factory=dict)
    readers: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    threads: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        key = order_key(self.order)
        self.partitions = {k: sorted(v, key=key) for k, v in self.partitions.items()}

    def __repr__(self) -> str:
        """Short, for a failing example: the sizes, not the tasks."""
        sizes = {key: len(tasks) for key, tasks in self.partitions.items()}
        return (
            f"FakeWorld({sizes}, order={self.order!r}, page_size={self.page_size}, "
            f"inclusive_before={self.inclusive_before})"
        )

    def reader(self) -> FakeReader:
        """A reader for the calling thread."""
        with self._lock:
            self.readers += 1
        return FakeReader(self, threading.get_ident())

    def hits(self, key: Hashable, after: int | None, before: int | None) -> list[Task]:
        """The partition's tasks after `after` (strict) and before `before`, in listing order."""
        if self.ignore_bounds:
            return list(self.partitions[key])
        return [
            task
            for task in self.partitions[key]
            if (after is None or task.completed_at > after)
            and (
                before is None
                or task.completed_at < before
                or (self.inclusive_before and task.completed_at == before)
            )
        ]

    def _request(self, key: Hashable) -> None:
        with self._lock:
            self.requests += 1
            self.per_partition[key] = number = self.per_partition.get(key, 0) + 1
        if self.seconds_per_page:
            time.sleep(self.seconds_per_page)
        if (error := self.failures.get((key, number))) is not None:
            raise error


@dataclass
class FakeReader:
    """One reader thread's view of a `FakeWorld`; refuses to be used from another thread."""

    world: FakeWorld
    owner: int
    closed: bool = False

    def _check(self) -> None:
        assert threading.get_ident() == self.owner, "a reader used from another thread"
        assert not self.closed, "a reader used after it was closed"

    def pages(self, context: Hashable, window: Window, room: Callable[[], None]) -> Iterator[Page]:
        """The window's pages, a request each."""
        self._check()
        hits = self.world.hits(context, window.after, window.hi)
        size = self.world.page_size
        for start in range(0, max(len(hits), 1), size):
            self.world._request(context)  # noqa: SLF001 - the world counts for its readers
            room()
            more = start + size < len(hits)
            if self.world.stop_short and more:
                return
            yield Page([task.record() for task in hits[start : start + size]], more)

    def first_page(self, context: Hashable, after: int | None) -> Page:
        """The partition's first page after `after`, with no upper bound."""
        self._check()
        self.world._request(context)  # noqa: SLF001
        hits = self.world.hits(context, after, None)
        return Page(
            [task.record() for task in hits[: self.world.page_size]],
            len(hits) > self.world.page_size,
        )

    def close(self) -> None:
        """Nothing to release but the right to be used."""
        self._check()
        self.closed = True
