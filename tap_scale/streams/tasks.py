"""Task streams: every task of the selected projects or batches, and the shared task handling."""

from __future__ import annotations

import contextlib
import sys
import typing as t
from datetime import datetime, timedelta, timezone
from functools import cached_property

from singer_sdk.singerlib.catalog import REPLICATION_INCREMENTAL

from tap_scale import task_pages
from tap_scale.client import ScaleAPIError, ScaleStream
from tap_scale.first_pages import FirstPages
from tap_scale.models import TASK, format_timestamp, parse_timestamp, utc_timestamp
from tap_scale.prefetch import PartitionPrefetcher, interleave
from tap_scale.selection import Source
from tap_scale.streams.row_writer import TaskRowsWriter, unmapped
from tap_scale.windows import MILLISECOND, PartitionPlan, Window

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from singer_sdk.helpers.types import Context

    from tap_scale.stops import ScaleMessageWriter
    from tap_scale.streams.task_rows import TaskRowsStream
    from tap_scale.tap import TapScale

# Chains of pages read at once (windows of one partition, or of several): enough to overlap
# Scale's latency with work several times over, few enough to be gentle with Scale, which
# publishes no rate limit; on a 429 the tap reads fewer at once anyway (`tap_scale.throttle`).
DEFAULT_MAX_CONCURRENCY = 4

# Only completed tasks carry a `completed_at`; the others are read in full on every run.
INCREMENTAL_STATUS = "completed"


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

        Then their turns may stay the JSON Scale sent (`tap_scale.task_pages`). A stream map,
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
        tap = t.cast("TapScale", self._tap)
        writer = t.cast("ScaleMessageWriter", tap.message_writer)
        return TaskRowsWriter(
            t.cast("list[TaskRowsStream]", self.child_streams), writer, tap.progress
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


class TasksStream(TaskRecordsStream):
    """Every task of the selected projects or batches, from ``GET /v2/tasks``.

    One partition per (project or batch, status), so each keeps its own bookmark and a project
    added later starts from ``start_date`` without replaying the others. Scale returns tasks in no
    particular order, so a partition's bookmark only moves once all its pages are read.
    """

    name = "tasks"
    path = "/tasks"
    primary_keys = ("task_id",)
    replication_key = "completed_at"
    is_sorted = False
    schema = TASK.to_dict()
    completed_after: dict[tuple[tuple[str, t.Any], ...], datetime | None] = {}  # noqa: RUF012 - replaced per instance
    # The partitions' readers while an interleaved sync runs, and whether it writes messages.
    _prefetcher: PartitionPrefetcher | None = None
    _writing = True
    # First pages asked for beside the scope's lookup, for the next interleaved sync.
    _first_pages: FirstPages | None = None

    def ask_first_pages(self) -> None:
        """Ask, now, for the first page of each configured project's completed tasks.

        Called as the sync's scope is about to be looked up, so that the two round trips are
        one (`tap_scale.first_pages`). Only where the settings alone name the partitions
        (`project_ids`, no names, no batches) and the sync reads them interleaved.
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
        workers = config.get("max_concurrency", DEFAULT_MAX_CONCURRENCY)
        try:
            asks = [(context, self._completed_after(context, now=now)) for context in contexts]
        except ScaleAPIError:
            return  # a bookmark that cannot be read: the sync itself says so
        self._first_pages = FirstPages(asks[:workers], self._unbounded_first_page, partition_key)

    def _unbounded_first_page(
        self, context: Context, after: datetime | None
    ) -> Iterable[tuple[list[dict[str, t.Any]], bool]]:
        bounds = {"completed_after": None if after is None else format_timestamp(after)}
        # No upper bound yet: Scale's clock is not known (the sync filters the page by it).
        return self.pages({**context, **bounds, "completed_before": None})

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

    def _read_ahead(self, contexts: list[dict[str, t.Any]]) -> PartitionPrefetcher:
        """Start reading the partitions' windows in ``max_concurrency`` background threads."""
        # Fixed here, in the SDK's thread: the readers must see one upper bound and must not
        # touch the state, which the SDK writes while they run. Each sync has its own bound.
        self.__dict__.pop("sync_started_at", None)
        _ = self.sync_started_at
        self.completed_after = {
            partition_key(context): self._completed_after(context)
            for context in contexts
            if context["status"] == INCREMENTAL_STATUS
        }
        workers = self.config.get("max_concurrency", DEFAULT_MAX_CONCURRENCY)
        page_size = self.config.get("page_size", 100)
        plans = [
            (context, PartitionPlan(self._whole(context), workers=workers, page_size=page_size))
            for context in contexts
        ]
        return PartitionPrefetcher(
            self._window_pages,
            plans,
            key=partition_key,
            workers=workers,
            moment=_completed_at,
            on_watermark=self._advance_bookmark,
        )

    def _whole(self, context: Context) -> Window:
        """A partition's whole range as one window: what it is first read as."""
        key = partition_key(context)
        if key not in self.completed_after:  # no completed_at to bound or cut it by
            return Window(None, None, None)
        after = self.completed_after[key]
        start = None if after is None else after + MILLISECOND
        return Window(after, self.sync_started_at, start, whole=True)

    def _window_pages(
        self, context: Context, window: Window
    ) -> Iterable[tuple[list[dict[str, t.Any]], bool]]:
        """A window's pages: the partition's query, bounded by the window."""
        bounds = {
            name: format_timestamp(moment)
            for name, moment in (
                ("completed_after", window.after),
                ("completed_before", window.before),
            )
            if moment is not None
        }
        first = None
        if window.whole and self._first_pages is not None:
            first = self._first_pages.take(context, window.after)
        if first is not None:
            return self._from_first_page(first, {**context, **bounds}, window.before)
        return self.pages({**context, **bounds})

    def _from_first_page(
        self,
        first: tuple[list[dict[str, t.Any]], bool],
        query: Context,
        before: datetime | None,
    ) -> Iterator[tuple[list[dict[str, t.Any]], bool]]:
        """A whole-range window read from the first page asked for beside the lookup.

        Its tasks completed at or after the bound are the next sync's, as a bounded request
        would have left them out. Where more pages follow, the window (unless cut up after this
        page) is read again bounded from its start: the page's token is for the unbounded query.
        """
        records, more = first
        if before is not None:
            records = [
                record
                for record in records
                if (moment := _completed_at(record)) is None or moment < before
            ]
        yield records, more
        if more:
            yield from self.pages(query)

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
        """Sync the partitions together, each by the SDK's own loop for one partition.

        The SDK syncs partitions one after the other, so a sync would last as long as every
        partition's chain of pages end to end. Here the SDK's sync of each partition is a lazy
        generator, advanced whenever that partition's next page has arrived: the SDK still
        writes every record and keeps each partition's state (finished, with a STATE message,
        when its last page is emitted); only the order across partitions changes. The SDK has
        no public hook for this, hence this one override of a private method, kept to choosing
        the order of its own per-partition syncs.
        """
        contexts = self.partitions if context is None else None
        # A dry run (`--test`) stops at a number of records per stream, counted by the SDK's
        # loop over all partitions: it keeps that loop.
        read = self.selected or self.has_selected_descendents
        if not contexts or not read or self.ABORT_AT_RECORD_COUNT is not None:
            yield from super()._sync_records(context, write_messages=write_messages)
            return
        for partition in contexts:
            # The state lists partitions in the order they were first seen: the SDK's order
            # still, whichever partition's first page arrives first.
            self.get_context_state(partition)
        syncs = {
            partition_key(partition): super(TasksStream, self)._sync_records(
                partition, write_messages=write_messages
            )
            for partition in contexts
        }
        self._writing = write_messages
        self._prefetcher = self._read_ahead(contexts)
        try:
            yield from interleave(self._prefetcher, syncs, partition_key)
        finally:
            # Readers stop first, then the syncs of partitions left unfinished by an error.
            self._prefetcher.abandon()
            self._first_pages = None
            for sync in syncs.values():
                sync.close()
            # Whatever reads this stream's partitions next (another sync, a library call)
            # reads them afresh.
            self._prefetcher = None
            self.completed_after = {}
        # As the SDK's loop ends a sync of every partition: the stream's own markers (the
        # signpost) are finished, and the final state written only where messages are (in
        # BATCH mode the SDK writes it after the BATCH holding the records).
        self._finalize_state(self.stream_state)
        if write_messages:
            self._write_state_message()

    @override
    def before_parsing(self) -> None:
        if (prefetcher := self._prefetcher) is not None:
            prefetcher.make_room()

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        prefetcher = self._prefetcher
        if prefetcher is None or context is None or not prefetcher.covers(context):
            # Outside the interleaved sync (a dry run, library use): read directly.
            yield from super().get_records(context)
            return
        self.cap_bookmark(context)
        yield from prefetcher.records(context)

    @override
    def get_url_params(
        self,
        context: Context | None,
        next_page_token: str | None,
    ) -> dict[str, t.Any]:
        assert context is not None  # noqa: S101  # tasks are always read per partition
        source = (
            Source("batch", context["batch"])
            if "batch" in context
            else Source("project", context["project"])
        )
        params = {**source.query, "status": context["status"], **self.task_params(next_page_token)}
        if "completed_before" in context:
            # A window of the partition (`_window_pages`), bounded as it says.
            bounds = ("completed_after", "completed_before")
            params.update({name: context[name] for name in bounds if context.get(name) is not None})
        elif context["status"] == INCREMENTAL_STATUS:
            key = partition_key(context)
            after = (
                self.completed_after[key]
                if key in self.completed_after
                else self._completed_after(context)
            )
            if after is not None:
                params["completed_after"] = format_timestamp(after)
            params["completed_before"] = format_timestamp(self.sync_started_at)
        return params


def _completed_at(record: dict[str, t.Any]) -> datetime | None:
    """A task's ``completed_at`` as Scale sent it, as a moment; None if it has none readable."""
    value = record.get("completed_at")
    if not isinstance(value, str):
        return None
    try:
        return parse_timestamp(value)
    except (ValueError, OverflowError):
        return None
