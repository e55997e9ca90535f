"""The streams tap-scale emits, each a declaration over the Scale client and the model."""

from __future__ import annotations

import logging
import sys
import typing as t
from datetime import datetime, timedelta, timezone
from functools import cached_property

from tap_scale.client import ScaleStream
from tap_scale.models import TASK, format_timestamp, parse_timestamp, utc_timestamp
from tap_scale.selection import Source, resolve_sources

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context

# Only completed tasks carry a `completed_at`; the others are read in full on every run.
INCREMENTAL_STATUS = "completed"

# Scale's `completed_after` is strict and its timestamps have millisecond precision: asking for
# tasks after (lower bound - 1 ms) includes every task completed exactly at the lower bound.
TIE_MARGIN = timedelta(milliseconds=1)


class _NoBookmarkForOpenTasks(logging.Filter):
    """Drop the SDK's per-record warning about a null replication value.

    Tasks that are not completed have no `completed_at` by design, and their partitions are read
    in full each run, so the warning would only repeat once for every such task.
    """

    @override
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "New replication value is null"


logging.getLogger("singer_sdk").addFilter(_NoBookmarkForOpenTasks())


class TasksStream(ScaleStream):
    """Every task of the selected projects or batches, from ``GET /v2/tasks``.

    One partition per (project or batch, status), so each keeps its own bookmark and a project
    added later starts from ``start_date`` without replaying the others. Scale returns tasks in no
    particular order, so a partition's bookmark only moves once all its pages are read.
    """

    name = "tasks"
    path = "/tasks"
    records_key = "tasks"
    primary_keys = ("task_id",)
    replication_key = "completed_at"
    is_sorted = False
    schema = TASK.to_dict()

    @cached_property
    def sources(self) -> list[Source]:
        """The projects or batches this sync reads, resolved once."""
        return resolve_sources(self.config, self.fetch)

    @override
    @property
    def partitions(self) -> list[dict[str, t.Any]]:
        statuses = self.config.get("task_statuses") or [INCREMENTAL_STATUS]
        # Keys named as the task's own fields (`project`, `batch`, `status`), because the SDK
        # copies partition keys into each record that lacks them.
        return [
            {source.kind: source.id, "status": status}
            for source in self.sources
            for status in statuses
        ]

    @cached_property
    def sync_started_at(self) -> datetime:
        """Upper bound of every request: tasks completing during the sync are the next run's."""
        return datetime.now(timezone.utc)

    def completed_after(self, context: Context) -> datetime | None:
        """Lower bound for a completed partition: its bookmark less the lookback, or start_date."""
        bounds = []
        if bookmark := self.get_context_state(context).get("replication_key_value"):
            lookback = timedelta(minutes=self.config.get("lookback_minutes", 0))
            bounds.append(parse_timestamp(bookmark) - lookback)
        if start_date := self.config.get("start_date"):
            bounds.append(parse_timestamp(start_date))
        return max(bounds) - TIE_MARGIN if bounds else None

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
        params: dict[str, t.Any] = {
            **source.query,
            "status": context["status"],
            "limit": self.config.get("page_size", 100),
            "opts": self.config.get("opts") or [],
            "next_token": next_page_token,
        }
        if context["status"] == INCREMENTAL_STATUS:
            if (after := self.completed_after(context)) is not None:
                params["completed_after"] = format_timestamp(after)
            params["completed_before"] = format_timestamp(self.sync_started_at)
        return params

    @override
    def post_process(
        self,
        row: dict[str, t.Any],
        context: Context | None = None,
    ) -> dict[str, t.Any] | None:
        for field in ("project", "batch"):
            # An expanded object where an id is expected (never asked for, but cheap to undo).
            if isinstance(row.get(field), dict):
                row[field] = row[field].get("id")
        # Always present, if null: the SDK reads the replication key from every record, and tasks
        # that are not completed come without a `completed_at`.
        for field in ("created_at", "completed_at"):
            row[field] = utc_timestamp(row.get(field))
        for thread in row.get("threads") or ():
            for submission in thread.get("submissions") or ():
                if "submitted_at" in submission:
                    submission["submitted_at"] = utc_timestamp(submission["submitted_at"])
        return row
