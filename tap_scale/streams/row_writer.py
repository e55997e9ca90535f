"""Writing the rows derived from tasks as Singer messages: the one place that writes them.

The SDK has no public way for one stream to write another stream's records, so this module, and
only this module, calls two of the SDK's private methods, ``Stream._write_schema_message`` and
``Stream._write_record_message`` (``tests/test_task_rows_streams.py`` fails, naming them, if they
change). Rows of a stream with no stream map and no deselected field (the usual case) are encoded
here instead, a task's rows in one write, byte for byte as the SDK would write them (the same
test compares them): the SDK's path costs about 25 µs a row, more than deriving the row does, and
a task has dozens of rows.
"""

from __future__ import annotations

import sys
import typing as t
from datetime import datetime, timezone

import msgspec
from singer_sdk.mapper import SameRecordTransform

from tap_scale import task_rows

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from tap_scale.streams.task_rows import TaskRowsStream

Row = dict[str, t.Any]

#: The SDK's private methods used here, named once for the guard test.
PRIVATE_SDK_METHODS = ("_write_schema_message", "_write_record_message")

_encode_into = msgspec.json.Encoder().encode_into


class RowOutput:
    """Where one selected stream's rows go: Singer RECORD messages on stdout."""

    def __init__(self, stream: TaskRowsStream) -> None:
        self.stream = stream
        maps = stream.stream_maps
        # Written here when the SDK would write each row unchanged; otherwise by the SDK itself.
        self.direct = (
            len(maps) == 1
            and type(maps[0]) is SameRecordTransform
            and not maps[0].flattening_enabled
            and all(stream.mask.values())
        )
        alias = msgspec.json.encode(maps[0].stream_alias)
        self._prefix = b'{"type":"RECORD","stream":' + alias + b',"record":'
        stream._write_schema_message()  # noqa: SLF001 - see the module's docstring

    def write(self, rows: Iterable[Row], extracted_at: bytes) -> None:
        """Write the rows of one task, extracted at that moment (encoded as JSON)."""
        if not self.direct:
            for row in rows:
                self.stream._write_record_message(row)  # noqa: SLF001 - see the module's docstring
            return
        payload = bytearray()
        suffix = b',"time_extracted":' + extracted_at + b"}\n"
        for row in rows:
            payload += self._prefix
            _encode_into(row, payload, -1)
            payload += suffix
        if payload:
            # As the SDK's writer writes each message: to stdout's buffer, flushed.
            sys.stdout.buffer.write(payload)
            sys.stdout.flush()


class TaskRowsWriter:
    """Writes the rows of each task a task stream reads, for its selected derived streams."""

    def __init__(self, streams: Sequence[TaskRowsStream]) -> None:
        """Announce the selected streams' schemas; rows follow, task by task."""
        outputs = {stream.holds: RowOutput(stream) for stream in streams if stream.selected}
        self._messages = outputs.get("messages")
        self._annotations = outputs.get("annotations")
        self._preferences = outputs.get("preferences")
        self._columns = streams[0].task_columns if streams else ()

    def write(self, task: Row) -> None:
        """Write the task's rows to each selected stream."""
        if not (self._messages or self._annotations or self._preferences):
            return
        base = {name: task.get(name) for name in self._columns}
        # Every row of a task was extracted at once: the moment is encoded once per task.
        extracted_at = msgspec.json.encode(datetime.now(timezone.utc))
        if self._messages:
            self._messages.write(task_rows.message_rows(task, base), extracted_at)
        if not (self._annotations or self._preferences):
            return
        # One walk over the task's annotations serves both streams.
        annotations: list[Row] = []
        preferences: list[Row] = []
        for place, identifier, annotation in task_rows.located_annotations(task):
            if self._annotations:
                annotations.append(task_rows.annotation_row(base, place, identifier, annotation))
            if self._preferences:
                preferences.extend(task_rows.ranking_rows(base, place, identifier, annotation))
        if self._annotations:
            self._annotations.write(annotations, extracted_at)
        if self._preferences:
            self._preferences.write(preferences, extracted_at)
