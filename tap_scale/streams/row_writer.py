"""Writing the rows derived from tasks as Singer messages: the one place that writes them.

The SDK has no public way for one stream to write another stream's records, so this module, and
only this module, calls two of the SDK's private methods, ``Stream._write_schema_message`` and
``Stream._write_record_message`` (``tests/test_task_rows_streams.py`` fails, naming them, if they
change). Rows of a stream with no stream map and no deselected field (the usual case) are encoded
here instead, a task's rows in one write, byte for byte as the SDK would write the same record
(the same test compares them): the SDK's path costs about 25 µs a row, more than deriving the
row does, and a task has dozens of rows.
"""

from __future__ import annotations

import typing as t
from datetime import datetime, timezone

import msgspec
from singer_sdk.mapper import SameRecordTransform

from tap_scale import task_rows

if t.TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from tap_scale.progress import SyncProgress
    from tap_scale.streams.task_rows import TaskRowsStream

    #: Writes serialized Singer messages (`stops.ScaleMessageWriter.write_serialized`).
    Write = Callable[[bytes | bytearray], None]

#: The SDK's private methods used here, named once for the guard test.
PRIVATE_SDK_METHODS = ("_write_schema_message", "_write_record_message")

_encode_into = msgspec.json.Encoder().encode_into


class RowOutput:
    """One selected stream's rows, as Singer RECORD messages."""

    def __init__(self, stream: TaskRowsStream, progress: SyncProgress) -> None:
        """Choose how the stream's rows are written, and announce its schema."""
        self.stream = stream
        self._progress = progress
        # What a stream map sees: every column, null where the row leaves it out.
        self._columns = dict.fromkeys(stream.schema["properties"])
        maps = stream.stream_maps
        # Encoded here when the SDK would write each row unchanged; otherwise by the SDK itself.
        self.direct = (
            len(maps) == 1
            and type(maps[0]) is SameRecordTransform
            and not maps[0].flattening_enabled
            and all(stream.mask.values())
        )
        alias = msgspec.json.encode(maps[0].stream_alias)
        self._prefix = b'{"type":"RECORD","stream":' + alias + b',"record":'
        stream._write_schema_message()  # noqa: SLF001 - see the module's docstring

    def add(self, rows: Sequence[task_rows.Row], suffix: bytes, payload: bytearray) -> None:
        """Append the rows' messages to ``payload`` (the SDK writes them at once if it must).

        ``suffix`` ends each message: the moment the rows were extracted, and a newline.
        """
        if rows:
            self._progress.derived(self.stream.name, len(rows))
        if not self.direct:
            for row in rows:
                record = {**self._columns, **msgspec.to_builtins(row)}
                self.stream._write_record_message(record)  # noqa: SLF001 - see the module's docstring
            return
        for row in rows:
            payload += self._prefix
            _encode_into(row, payload, -1)
            payload += suffix


class TaskRowsWriter:
    """Writes the rows of each task a task stream reads, for its selected derived streams."""

    def __init__(
        self, streams: Sequence[TaskRowsStream], write: Write, progress: SyncProgress
    ) -> None:
        """Announce the selected streams' schemas; rows follow, task by task, through ``write``.

        ``write`` is the tap's message writer, the one place messages reach stdout: it masks
        secrets, and stops cleanly on a closed stdout or a signal.
        """
        self._write = write
        outputs = {
            stream.holds: RowOutput(stream, progress) for stream in streams if stream.selected
        }
        self._messages = outputs.get("messages")
        self._annotations = outputs.get("annotations")
        self._preferences = outputs.get("preferences")

    def write(self, task: task_rows.Json) -> None:
        """Write the task's rows to each selected stream: one write to stdout for them all.

        One write, not one per message as the SDK makes, because each write lets the threads
        reading pages ahead take the interpreter, and taking it back costs more than the write.
        """
        if not (self._messages or self._annotations or self._preferences):
            return
        base = task_rows.task_columns(task)
        # Every row of a task was extracted at once: the moment is encoded once per task.
        suffix = b',"time_extracted":' + msgspec.json.encode(datetime.now(timezone.utc)) + b"}\n"
        payload = bytearray()
        if self._messages:
            self._messages.add(list(task_rows.message_rows(task)), suffix, payload)
        if self._annotations or self._preferences:
            # One walk over the task's annotations serves both streams.
            annotations: list[task_rows.AnnotationRow] = []
            preferences: list[task_rows.PreferenceRow] = []
            for place, listed, path in task_rows.places(task):
                if self._annotations:
                    annotations += task_rows.annotation_rows_at(base, place, listed, path)
                if self._preferences:
                    preferences += task_rows.preference_rows_at(base, place, listed, path)
            if self._annotations:
                self._annotations.add(annotations, suffix, payload)
            if self._preferences:
                self._preferences.add(preferences, suffix, payload)
        if payload:
            self._write(payload)
