"""Streams of flat rows derived from tasks: messages, annotations and preference pairs.

They read nothing from Scale. Each is a child of a task stream (``tasks`` or
``delivery_tasks``): selecting one makes the SDK read its task stream, which hands every task it
reads to a :class:`~tap_scale.streams.row_writer.TaskRowsWriter` that writes the task's rows
(``tap_scale.task_rows`` derives them). The SDK's own way for a child, ``child.sync()`` once per
parent record, would write a SCHEMA message, a log line and a STATE message for every task and
leave a state partition per task behind; here a task costs only its rows. These streams keep no
state of their own: they are read exactly when their task is, so incrementally, and again with
it on a lookback or a rework.
"""

from __future__ import annotations

import sys
import typing as t

from singer_sdk import Stream
from singer_sdk.helpers.conform import TypeConformanceLevel

from tap_scale.models import (
    DELIVERY_TASK_ANNOTATION,
    DELIVERY_TASK_MESSAGE,
    DELIVERY_TASK_PREFERENCE,
    TASK_ANNOTATION,
    TASK_MESSAGE,
    TASK_PREFERENCE,
)
from tap_scale.streams.deliveries import DeliveryTasksStream
from tap_scale.streams.tasks import TasksStream

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from collections.abc import Iterable

    from singer_sdk.helpers.types import Context

    from tap_scale.tap import TapScale

Row = dict[str, t.Any]


class TaskRowsStream(Stream):
    """Rows derived from each task its task stream reads; never read from Scale by itself."""

    #: Which rows of a task this stream holds.
    holds: t.ClassVar[t.Literal["messages", "annotations", "preferences"]]
    replication_key = "completed_at"
    is_sorted = False
    # Rows are built from the task as emitted, every value of the schema's type already.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    @override
    def log_sync_costs(self) -> None:
        # The SDK calls this once per stream as the sync ends; the last call logs the summary.
        super().log_sync_costs()
        progress = t.cast("TapScale", self._tap).progress
        progress.ended(self.name, streams=len(self._tap.streams))

    @override
    def get_records(self, context: Context | None) -> Iterable[Row]:
        # The SDK never syncs a child by itself, and the task stream starts no child sync
        # (TaskRecordsStream.generate_child_contexts): the rows are written as tasks are read.
        return ()


class _DeliveredTaskRows(TaskRowsStream):
    """Rows of delivered tasks: which delivery brought them, and when, on every row."""

    replication_key = "delivered_at"


class TaskMessagesStream(TaskRowsStream):
    """One row per message of every task in ``tasks``."""

    name = "task_messages"
    holds = "messages"
    parent_stream_type = TasksStream
    primary_keys = ("task_id", "thread_id", "turn_id", "message_index")
    schema = TASK_MESSAGE.to_dict()


class TaskAnnotationsStream(TaskRowsStream):
    """One row per annotation of every task in ``tasks``, wherever it sits."""

    name = "task_annotations"
    holds = "annotations"
    parent_stream_type = TasksStream
    primary_keys = ("task_id", "annotation_id")
    schema = TASK_ANNOTATION.to_dict()


class TaskPreferencesStream(TaskRowsStream):
    """One row per ordered pair of every ranking in ``tasks``."""

    name = "task_preferences"
    holds = "preferences"
    parent_stream_type = TasksStream
    primary_keys = ("task_id", "annotation_id", "preferred", "rejected")
    schema = TASK_PREFERENCE.to_dict()


class DeliveryTaskMessagesStream(_DeliveredTaskRows):
    """One row per message of every task in ``delivery_tasks``."""

    name = "delivery_task_messages"
    holds = "messages"
    parent_stream_type = DeliveryTasksStream
    primary_keys = ("delivery", "task_id", "thread_id", "turn_id", "message_index")
    schema = DELIVERY_TASK_MESSAGE.to_dict()


class DeliveryTaskAnnotationsStream(_DeliveredTaskRows):
    """One row per annotation of every task in ``delivery_tasks``, wherever it sits."""

    name = "delivery_task_annotations"
    holds = "annotations"
    parent_stream_type = DeliveryTasksStream
    primary_keys = ("delivery", "task_id", "annotation_id")
    schema = DELIVERY_TASK_ANNOTATION.to_dict()


class DeliveryTaskPreferencesStream(_DeliveredTaskRows):
    """One row per ordered pair of every ranking in ``delivery_tasks``."""

    name = "delivery_task_preferences"
    holds = "preferences"
    parent_stream_type = DeliveryTasksStream
    primary_keys = ("delivery", "task_id", "annotation_id", "preferred", "rejected")
    schema = DELIVERY_TASK_PREFERENCE.to_dict()


#: The derived streams, in the order the tap lists them.
TASK_ROWS_STREAMS: tuple[type[TaskRowsStream], ...] = (
    TaskMessagesStream,
    TaskAnnotationsStream,
    TaskPreferencesStream,
    DeliveryTaskMessagesStream,
    DeliveryTaskAnnotationsStream,
    DeliveryTaskPreferencesStream,
)
