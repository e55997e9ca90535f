"""Task streams: every task of the selected projects or batches, and the shared task handling."""

from __future__ import annotations

import contextlib
import sys
import typing as t
from datetime import datetime, timedelta, timezone
from functools import cached_property

from singer_sdk.singerlib.catalog import REPLICATION_INCREMENTAL

from tap_scale.client import ScaleAPIError, ScaleStream
from tap_scale.models import TASK, format_timestamp, parse_timestamp, utc_timestamp
from tap_scale.reading import task_pages
from tap_scale.reading.engine import Finished, ReadingEngine, Records, Spec, Watermark
from tap_scale.reading.http_pages import TaskPageSource
from tap_scale.selection import Source
from tap_scale.streams.row_writer import TaskRowsWriter, unmapped

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from singer_sdk import metrics
    from singer_sdk.helpers.types import Context
    from typing_extensions import Self

    from tap_scale.stops import ScaleMessageWriter
    from tap_scale.streams.task_rows import TaskRowsStream

# Chains of pages read at once (windows of one partition, or of several): enough to overlap
# Scale's latency with work several times over, few enough to be gentle with Scale, which
# publishes no rate limit; on a 429 the tap reads fewer at once anyway
# (`tap_scale.reading.throttle`).
DEFAULT_MAX_CONCURRENCY = 4

# Only completed tasks carry a `completed_at`; the others are read in full on every run.
INCREMENTAL_STATUS = "completed"

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MILLISECOND = timedelta(milliseconds=1)


class TaskRecordsStream(ScaleStream):
    """Base of the streams whose records are Scale Task objects (tasks, delivery_tasks)."""

    records_key = "tasks"
    id_key = "task_id"

    def task_params(self, next_page_token: str | None) -> dict[str, t.Any]:
        """The page and `opts` parameters every task endpoint takes."""
        return {"opts": self.config.get("opts") or [], **self.page_params(next_page_token)}

    id_fields = ("project", "batch")

    @cached_property
    def writes_tasks_unchanged(self) -> bool:
        """Whether its records go as they are to the message writer, which copies raw JSON out.

        Then their turns may stay the JSON Scale sent (`tap_scale.reading.task_pages`). A stream
        map,
        flattening or BATCH files (written with the standard library's `json`) need objects.
        """
        return unmapped(self) and not self.get_batch_config(self.config)

    @override
    def fast_page_body(self, content: bytes) -> dict[str, t.Any] | None:
        if not self.writes_tasks_unchanged:
            return None
        return task_pages.decode(content)

    @override
    def post_process(
        self,
        row: dict[str, t.Any],
        context: Context | None = None,
    ) -> dict[str, t.Any] | None:
        row = t.cast("dict[str, t.Any]", super().post_process(row, context))
        threads = row.get("threads")
        for thread in threads if isinstance(threads, list) else ():
            submissions = thread.get("submissions") if isinstance(thread, dict) else None
            for submission in submissions if isinstance(submissions, list) else ():
                with contextlib.suppress(TypeError, ValueError, AttributeError):
                    # Nested, so kept as sent when unreadable; rewritten for sorting when not.
                    submission["submitted_at"] = utc_timestamp(submission["submitted_at"])
        return row

    @cached_property
    def rows_writer(self) -> TaskRowsWriter:
        """Writes each task's rows for the selected streams derived from this one."""
        # Every child of a task stream is one of its derived streams (streams/task_rows.py).
        writer = t.cast("ScaleMessageWriter", self.scale_tap.message_writer)
        return TaskRowsWriter(
            t.cast("list[TaskRowsStream]", self.child_streams), writer, self.progress
        )

    @override
    def generate_child_contexts(
        self,
        record: dict[str, t.Any],
        context: Context | None,
    ) -> Iterable[Context | None]:
        """Write the task's derived rows; no child stream is synced per task.

        The SDK calls this once per task, as emitted, in the thread that writes messages. A
        child sync per task would cost a SCHEMA message, a log line and a STATE message each.
        """
        self.rows_writer.write(record)
        if not self.selected and self.replication_method == REPLICATION_INCREMENTAL:
            # Read for derived streams only. The SDK keeps no bookmark for a stream that is not
            # selected, yet this stream's bookmark is what makes the derived ones incremental.
            self.state_manager.increment_state(
                record, context=context, replication_key=t.cast("str", self.replication_key)
            )
        return ()


def partition_key(context: Context) -> tuple[tuple[str, t.Any], ...]:
    """A partition's context as a hashable key."""
    return tuple(sorted(context.items()))


def to_millis(moment: datetime) -> int:
    """A moment as the whole milliseconds since the epoch it falls in (Scale's precision)."""
    return (moment - _EPOCH) // _MILLISECOND


def from_millis(millis: int) -> datetime:
    """Whole milliseconds since the epoch as a moment."""
    return _EPOCH + millis * _MILLISECOND


class TasksStream(TaskRecordsStream):
    """Every task of the selected projects or batches, from ``GET /v2/tasks``.

    One partition per (project or batch, status), so each keeps its own bookmark and a project
    added later starts from ``start_date`` without replaying the others. The partitions are read
    by the reading engine (`tap_scale.reading`): windows of every partition at once, in reader
    threads; this stream's own sync, in the thread that writes messages, emits what they read.
    """

    name = "tasks"
    path = "/tasks"
    primary_keys = ("task_id",)
    replication_key = "completed_at"
    is_sorted = False
    schema = TASK.to_dict()
    # The engine of the next sync, made early where first pages are asked for beside the lookup.
    _engine: ReadingEngine | None = None
    # Whether the sync running writes messages (not in BATCH mode), for the bookmarks it moves.
    _writing = True

    def ask_first_pages(self) -> None:
        """Ask, now, for the first page of each configured project's completed tasks.

        Called as the sync's scope is about to be looked up, so that the two round trips are
        one: a partition's first page is needed whatever Scale's clock (which bounds the sync)
        turns out to be, as the sample its windows are cut from or, in an incremental sync of a
        few new tasks, as all there is. It is asked for with no upper bound; the engine keeps
        only its tasks completed before the bound, and where more pages follow and the window is
        not cut up, reads it again bounded. Only where the settings alone name the partitions
        (`project_ids`, no names, no batches) and the sync reads them with the engine.
        """
        config = self.config
        statuses = config.get("task_statuses") or [INCREMENTAL_STATUS]
        named = [config.get(name) for name in ("project_names", "batch_ids", "batch_names")]
        read = self.selected or self.has_selected_descendents
        if (
            any(named)
            or not read
            or INCREMENTAL_STATUS not in statuses
            or self.ABORT_AT_RECORD_COUNT is not None
            or self.replication_method != REPLICATION_INCREMENTAL
        ):
            return
        now = datetime.now(timezone.utc)
        projects = list(dict.fromkeys(config.get("project_ids") or []))
        contexts = [{"project": project, "status": INCREMENTAL_STATUS} for project in projects]
        try:
            asks = [(context, self._completed_after(context, now=now)) for context in contexts]
        except ScaleAPIError:
            return  # a bookmark that cannot be read: the sync itself says so
        engine = self._engine = self._new_engine()
        for context, after in asks[: self._workers]:
            engine.prefetch(
                partition_key(context), context, None if after is None else to_millis(after)
            )

    @property
    def _workers(self) -> int:
        return int(self.config.get("max_concurrency", DEFAULT_MAX_CONCURRENCY))

    def _new_engine(self) -> ReadingEngine:
        # The page source resolves, here in the sync's own thread, all its readers need.
        return ReadingEngine(
            TaskPageSource(self),
            workers=self._workers,
            page_size=int(self.config.get("page_size", 100)),
            moment=completed_millis,
            created=created_millis,
        )

    @override
    @property
    def partitions(self) -> list[dict[str, t.Any]]:
        # A status named twice is still one partition.
        statuses = dict.fromkeys(self.config.get("task_statuses") or [INCREMENTAL_STATUS])
        # Keys named as the task's own fields (`project`, `batch`, `status`), because the SDK
        # copies partition keys into each record that lacks them.
        return [
            {source.kind: source.id, "status": status}
            for source in self.selection.task_sources
            for status in statuses
        ]

    def window_query(
        self, context: Context, after: int | None, before: int | None, token: str | None
    ) -> dict[str, t.Any]:
        """The query of one request of a partition's window (bounds in milliseconds)."""
        params = {**self._source_query(context), **self.task_params(token)}
        if after is not None:
            params["completed_after"] = format_timestamp(from_millis(after))
        if before is not None:
            params["completed_before"] = format_timestamp(from_millis(before))
        return params

    @staticmethod
    def _source_query(context: Context) -> dict[str, t.Any]:
        source = (
            Source("batch", context["batch"])
            if "batch" in context
            else Source("project", context["project"])
        )
        return {**source.query, "status": context["status"]}

    def _spec(self, context: Context) -> Spec:
        """A partition's range: from its bound to the sync's start, by Scale's clock.

        Statuses without `completed_at` cannot be bounded nor cut: one window, unbounded.
        """
        key = partition_key(context)
        if context["status"] != INCREMENTAL_STATUS:
            return Spec(key, context, None, None)
        after = self._completed_after(context)
        lo = None if after is None else to_millis(after) + 1
        return Spec(key, context, lo, to_millis(self.sync_started_at))

    def _advance_bookmark(self, context: Context, watermark: datetime) -> None:
        """Every task of the partition completed before ``watermark`` is emitted: keep it.

        The partition is still being read, so the bookmark is where a sync interrupted now
        should resume; a STATE message says so at once. When the partition is finished, the
        SDK moves the bookmark on to the latest task emitted, as for any partition.
        """
        state = self.get_context_state(context)
        state["replication_key"] = self.replication_key
        state["replication_key_value"] = format_timestamp(watermark)
        if self._writing:
            self.state_manager.is_flushed = False
            self._write_state_message()

    def _completed_after(self, context: Context, now: datetime | None = None) -> datetime | None:
        lookback = timedelta(minutes=self.config.get("lookback_minutes", 0))
        return self.lower_bound(context, lookback, now=now)

    @override
    def _sync_records(
        self,
        context: Context | None = None,
        *,
        write_messages: bool = True,
    ) -> t.Generator[dict[str, t.Any], t.Any, t.Any]:
        """Sync every partition at once: the engine reads, this loop emits.

        The SDK syncs partitions one after the other, each with its own loop over its records,
        so a sync would last as long as every partition's chain of pages end to end. Here the
        reading engine reads windows of every partition at once and hands this thread each page
        as it arrives, and `_Emitter` does for each record what the SDK's loop does: the same
        public hooks (`post_process`, `generate_child_contexts`), the same state, the same
        messages. The SDK has no public hook for a stream's sync, hence this one override of a
        private method; `tests/test_sdk_coupling.py` guards it and the two private writers the
        loop calls.
        """
        contexts = self.partitions if context is None else None
        # A dry run (`--test`) stops at a number of records per stream, counted by the SDK's
        # loop over all partitions: it keeps that loop.
        read = self.selected or self.has_selected_descendents
        engine, self._engine = self._engine, None
        if not contexts or not read or self.ABORT_AT_RECORD_COUNT is not None:
            if engine is not None:
                engine.close()
            yield from super()._sync_records(context, write_messages=write_messages)
            return
        # Fixed here, in this thread, once per sync: every window is bounded by it.
        self.__dict__.pop("sync_started_at", None)
        for partition in contexts:
            # The state lists partitions in the order they were first seen: the SDK's order
            # still, whichever partition's first page arrives first.
            self.get_context_state(partition)
            self.cap_bookmark(partition)
        specs = [self._spec(partition) for partition in contexts]
        by_key = {spec.key: spec.context for spec in specs}
        self._writing = write_messages
        engine = engine or self._new_engine()
        emitter = _Emitter(self, write_messages=write_messages)
        try:
            with emitter:
                for event in engine.read(specs):
                    partition = by_key[event.key]
                    if isinstance(event, Records):
                        yield from emitter.emit(partition, event.records)
                    elif isinstance(event, Watermark):
                        self._advance_bookmark(partition, from_millis(event.moment))
                    elif isinstance(event, Finished):
                        self.state_manager.finalize_state(self.get_context_state(partition))
        finally:
            # Readers stop first (a failed or interrupted sync leaves nothing reading).
            engine.close()
        costs = engine.costs()
        self.logger.info(
            "Read %d partition%s in %d window%s, %d at once: %d first page%s set aside where a "
            "window was cut up, %d page%s read again (%d chain%s cut up while read).",
            costs.partitions,
            "s" * (costs.partitions != 1),
            costs.windows,
            "s" * (costs.windows != 1),
            self._workers,
            costs.set_aside,
            "s" * (costs.set_aside != 1),
            costs.restarted_pages,
            "s" * (costs.restarted_pages != 1),
            costs.restarts,
            "s" * (costs.restarts != 1),
        )
        # As the SDK's loop ends a sync of every partition: the stream's own markers (the
        # signpost) are finished, and the final state written only where messages are (in
        # BATCH mode the SDK writes it after the BATCH holding the records).
        self.state_manager.finalize_state(self.stream_state)
        if write_messages:
            self._write_state_message()

    @override
    def get_url_params(
        self,
        context: Context | None,
        next_page_token: str | None,
    ) -> dict[str, t.Any]:
        # Read by the SDK's own loop (a dry run, library use): a partition's whole range.
        assert context is not None  # noqa: S101  # tasks are always read per partition
        spec = self._spec(context)
        return self.window_query(
            context, None if spec.lo is None else spec.lo - 1, spec.hi, next_page_token
        )


class _Emitter:
    """For each record the engine read, what the SDK's own loop does, in the same order.

    `post_process`, the partition's keys copied into the record, `generate_child_contexts`
    (which writes the task's derived rows), then, for a selected stream, the RECORD message,
    the partition's state, a STATE message every `STATE_MSG_FREQUENCY` records, and the
    record count.
    """

    def __init__(self, stream: TasksStream, *, write_messages: bool) -> None:
        self._stream = stream
        self._write = write_messages
        self._selected = stream.selected
        self._incremental = stream.replication_method == REPLICATION_INCREMENTAL
        self._counter: metrics.Counter = stream.get_record_counter()
        self._timer = stream.get_sync_timer()
        self._emitted = 0

    def __enter__(self) -> Self:
        self._counter.__enter__()
        self._timer.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.__exit__(*exc)  # type: ignore[arg-type]
        self._counter.__exit__(*exc)  # type: ignore[arg-type]

    def emit(
        self, context: Mapping[str, t.Any], records: list[dict[str, t.Any]]
    ) -> Iterator[dict[str, t.Any]]:
        """Emit a page's records for a partition; yields those of a selected stream."""
        stream = self._stream
        replication_key = str(stream.replication_key)
        partition = dict(context)
        self._counter.with_context(partition)
        self._timer.with_context(partition)
        for raw in records:
            record = stream.post_process(raw, partition)
            if record is None:
                continue
            for key, value in partition.items():
                record.setdefault(key, value)
            for _ in stream.generate_child_contexts(record, partition):
                pass  # the rows are written as the task is: no child is synced per task
            if not self._selected:
                continue
            if self._write:
                stream._write_record_message(record)  # noqa: SLF001 - see `_sync_records`
            if self._incremental:
                stream.state_manager.increment_state(
                    record, context=partition, replication_key=replication_key
                )
            self._emitted += 1
            if self._write and self._emitted % stream.STATE_MSG_FREQUENCY == 0:
                stream._write_state_message()  # noqa: SLF001
            self._counter.increment()
            yield record


def completed_millis(record: dict[str, t.Any]) -> int | None:
    """A task's ``completed_at`` as Scale sent it, in milliseconds; None if it has none readable."""
    return _millis(record, "completed_at")


def created_millis(record: dict[str, t.Any]) -> int | None:
    """A task's ``created_at`` as Scale sent it, in milliseconds; None if it has none readable."""
    return _millis(record, "created_at")


def _millis(record: dict[str, t.Any], field: str) -> int | None:
    value = record.get(field)
    if not isinstance(value, str):
        return None
    try:
        return to_millis(parse_timestamp(value))
    except (ValueError, OverflowError):
        return None
