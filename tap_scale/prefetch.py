"""Reading partitions concurrently: network waits overlap with each other and with emitting.

A sync spends most of its time waiting for Scale, and a partition's pages can only be read one
after the other (each page names the next). So up to ``max_concurrency`` partitions are read at
once by background threads, and their records are emitted interleaved, page by page, as they
arrive: each partition's records still come out in the order Scale served them, each partition
keeps its own state, and at most a couple of pages per partition are held, so memory stays flat
however many tasks a sync moves.
"""

from __future__ import annotations

import itertools
import queue
import threading
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence

Record = dict[str, t.Any]
Key = t.TypeVar("Key", bound="Hashable")

# Chunks of records held per partition: the one being emitted and the next, being fetched.
BUFFERED_CHUNKS = 2
# How often a blocked reader checks whether the sync was abandoned.
POLL_SECONDS = 0.5


class _Done:
    """End of a partition's records."""


class _Failed:
    """A partition's reading failed; the error is raised where its records are consumed."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


Item = list[Record] | _Done | _Failed
Chunks = queue.Queue[Item]
# What a reader announces once a chunk is ready to be taken: the partition, and how many
# records the chunk holds (None: the partition is finished, or failed).
Arrival = tuple[t.Any, int | None]


class PartitionPrefetcher:
    """Reads up to ``workers`` partitions at once, in background threads."""

    def __init__(
        self,
        read: Callable[[t.Any], Iterable[Record]],
        contexts: Sequence[t.Any],
        key: Callable[[t.Any], Hashable],
        *,
        workers: int,
        chunk_size: int,
    ) -> None:
        """Start reading ``contexts`` (in order) with ``read(context)``, ``workers`` at a time."""
        self._read = read
        self._key = key
        self._chunk_size = max(1, chunk_size)
        self._queues: dict[Hashable, Chunks] = {
            key(context): queue.Queue(maxsize=BUFFERED_CHUNKS) for context in contexts
        }
        # The readers' own references: the consumer pops its partitions from `_queues`.
        self._filled = dict(self._queues)
        # Bounded by the partitions' queues: a reader announces a chunk only once it is queued.
        self._arrivals: queue.Queue[Arrival] = queue.Queue()
        self._partitions = len(contexts)
        if len(self._queues) != self._partitions:
            # Two readers of one partition would share its queue and never both finish.
            msg = "Each partition can be read only once per sync"
            raise ValueError(msg)
        # A partition holds its slot until it has been consumed, not merely fetched, so no more
        # than `workers` partitions' pages are ever buffered.
        self._slots = threading.Semaphore(max(1, workers))
        self._abandoned = threading.Event()
        # Daemon threads: a sync that stops on an error must not wait for readers to drain.
        threading.Thread(target=self._dispatch, args=(list(contexts),), daemon=True).start()

    def covers(self, context: t.Any) -> bool:  # noqa: ANN401 - the SDK's contexts are dicts
        """Whether this prefetcher reads that partition."""
        return self._key(context) in self._queues

    def records(self, context: t.Any) -> Iterator[Record]:  # noqa: ANN401
        """The partition's records, in the order Scale served them; reading errors raise here."""
        # Each partition is read ahead once: popped, so that a second sync of the same stream
        # (library use) reads it directly instead of waiting on an exhausted queue.
        chunks = self._queues.pop(self._key(context))
        try:
            while True:
                chunk = chunks.get()
                if isinstance(chunk, _Done):
                    return
                if isinstance(chunk, _Failed):
                    raise chunk.error
                yield from chunk
        finally:
            self._slots.release()

    def arrivals(self) -> Iterator[Arrival]:
        """Each partition's chunks as they become ready, across partitions: (context, size).

        A size of None ends a partition (finished, or failed: its records raise the error).
        """
        unfinished = self._partitions
        while unfinished:
            context, size = self._arrivals.get()
            unfinished -= size is None
            yield context, size

    def abandon(self) -> None:
        """Stop every reader (the sync is over or failed)."""
        self._abandoned.set()

    def _dispatch(self, contexts: list[t.Any]) -> None:
        for context in contexts:
            while not self._slots.acquire(timeout=POLL_SECONDS):
                if self._abandoned.is_set():
                    return
            if self._abandoned.is_set():
                return
            try:
                threading.Thread(target=self._fill, args=(context,), daemon=True).start()
            except RuntimeError as error:  # no thread to be had: the partition fails, not hangs
                self._put_quietly(context, self._filled[self._key(context)], _Failed(error))

    def _fill(self, context: t.Any) -> None:  # noqa: ANN401
        chunks = self._filled[self._key(context)]
        try:
            chunk: list[Record] = []
            for record in self._read(context):
                chunk.append(record)
                if len(chunk) >= self._chunk_size:
                    self._put(context, chunks, chunk)
                    chunk = []
            if chunk:
                self._put(context, chunks, chunk)
            self._put(context, chunks, _Done())
        except _Abandoned:
            return
        except BaseException as error:  # noqa: BLE001 - handed to the consuming thread to raise
            self._put_quietly(context, chunks, _Failed(error))

    def _put(self, context: t.Any, chunks: Chunks, item: Item) -> None:  # noqa: ANN401
        # Checked at every page too, so an abandoned reader stops fetching soon.
        if self._abandoned.is_set():
            raise _Abandoned
        while True:
            try:
                chunks.put(item, timeout=POLL_SECONDS)
            except queue.Full:  # noqa: PERF203 - a blocked wait, not a hot loop
                if self._abandoned.is_set():
                    raise _Abandoned from None
            else:
                self._arrivals.put((context, len(item) if isinstance(item, list) else None))
                return

    def _put_quietly(self, context: t.Any, chunks: Chunks, item: Item) -> None:  # noqa: ANN401
        try:
            self._put(context, chunks, item)
        except _Abandoned:
            return


class _Abandoned(Exception):  # noqa: N818 - a signal between threads, not an error
    """The sync no longer wants this partition's records."""


def interleave(
    prefetcher: PartitionPrefetcher,
    syncs: Mapping[Key, Iterator[Record]],
    key: Callable[[t.Any], Key],
) -> Iterator[Record]:
    """Advance each partition's sync as its records arrive, so partitions are emitted together.

    ``syncs`` are lazy per-partition syncs, each taking its records from
    ``prefetcher.records(context)`` and yielding each once it is emitted: advanced by as many
    records as a chunk holds once it is ready, never waiting on a partition that is still being
    read while another has records to emit. A partition's sync is run to its end when the
    partition ends, where it finishes the partition's state.
    """
    for context, size in prefetcher.arrivals():
        sync = syncs[key(context)]
        # Tasks are never dropped by post_process; if a sync did skip one, islice would only
        # make it wait for the next chunk's records here, and nothing would be lost.
        yield from sync if size is None else itertools.islice(sync, size)
