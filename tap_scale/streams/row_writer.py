"""Writing the rows derived from tasks as Singer messages: the one place that writes them.

The SDK has no public way for one stream to write another stream's records, so this module, and
only this module, calls two of the SDK's private methods, ``Stream._write_schema_message`` and
``Stream._write_record_message`` (``tests/test_task_rows_streams.py`` fails, naming them, if they
change). Rows of a stream with no stream map and no deselected field (the usual case) are
encoded by `tap_scale.row_messages` instead, a task's rows in one write, the messages the SDK
would write for the same records (the same test compares them; an annotation's columns come in
another order): the SDK's path costs about 25 µs a row, more than deriving the row does, and a
task has dozens of rows.
"""

from __future__ import annotations

import typing as t

import msgspec
from singer_sdk.mapper import SameRecordTransform

from tap_scale import task_rows
from tap_scale.reading import task_pages
from tap_scale.row_messages import HOLDS, RowMessages

if t.TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from singer_sdk import Stream

    from tap_scale.progress import SyncProgress
    from tap_scale.row_messages import Counts, Holds
    from tap_scale.stops import ScaleMessageWriter
    from tap_scale.streams.task_rows import TaskRowsStream

_encode = msgspec.json.Encoder().encode

#: The SDK's private methods used here, named once for the guard test.
PRIVATE_SDK_METHODS = ("_write_schema_message", "_write_record_message")


def unmapped(stream: Stream) -> bool:
    """Whether the stream's records are written as they are: no stream map, no flattening."""
    maps = stream.stream_maps
    return (
        len(maps) == 1 and type(maps[0]) is SameRecordTransform and not maps[0].flattening_enabled
    )


class RowOutput:
    """One selected stream's rows, as Singer RECORD messages."""

    def __init__(self, stream: TaskRowsStream, progress: SyncProgress) -> None:
        """Choose how the stream's rows are written, and announce its schema."""
        self.stream = stream
        self._progress = progress
        # What a stream map sees: every column, null where the row leaves it out.
        self._columns = dict.fromkeys(stream.schema["properties"])
        # Encoded by `RowMessages` when the SDK would write each row unchanged; otherwise by
        # the SDK itself.
        self.direct = unmapped(stream) and all(stream.mask.values())
        #: The stream name its records are written under.
        self.alias = stream.stream_maps[0].stream_alias
        stream._write_schema_message()  # noqa: SLF001 - see the module's docstring

    def add(self, rows: Sequence[task_rows.Row]) -> None:
        """Write the rows through the SDK, its stream maps and selection applied."""
        if rows:
            self._progress.derived(self.stream.name, len(rows))
        for row in rows:
            record = {**self._columns, **msgspec.to_builtins(row)}
            self.stream._write_record_message(record)  # noqa: SLF001 - see the module's docstring


class TaskRowsWriter:
    """Writes the rows of each task a task stream reads, for its selected derived streams."""

    def __init__(
        self,
        streams: Sequence[TaskRowsStream],
        writer: ScaleMessageWriter,
        progress: SyncProgress,
    ) -> None:
        """Announce the selected streams' schemas; rows follow, task by task, through ``writer``.

        ``writer`` is the tap's message writer, the one place messages reach stdout: it masks
        secrets, and stops cleanly on a closed stdout or a signal.
        """
        self._write = writer.write_serialized
        self._progress = progress
        self._outputs: dict[Holds, RowOutput] = {
            stream.holds: RowOutput(stream, progress) for stream in streams if stream.selected
        }
        self._names = {holds: output.stream.name for holds, output in self._outputs.items()}
        direct = bool(self._outputs) and all(o.direct for o in self._outputs.values())
        aliases = {holds: output.alias for holds, output in self._outputs.items()}
        #: Encodes a task's rows, unless a stream needs the SDK to write them.
        self._messages = RowMessages(aliases) if direct else None
        #: Hands a task to the process deriving rows, where one can (`tap_scale.row_process`).
        self._hand_over = (
            writer.derive_rows(t.cast("Mapping[str, str]", aliases), progress.derived)
            if direct
            else None
        )

    def write(self, task: task_rows.Json) -> None:
        """Write the task's rows to each selected stream."""
        if not self._outputs:
            return
        if self._hand_over is not None and not self._hand_over.behind():
            try:
                body = _encode(task)
            except UnicodeEncodeError:
                pass  # a lone surrogate, which only the writer's repair can write: derived here
            else:
                self._hand_over(body)
                return
        task = task_pages.materialised(task)
        if self._messages is not None:
            # One write, not one per message as the SDK makes, because each write lets the
            # threads reading pages ahead take the interpreter, and taking it back costs more
            # than the write.
            payload, counts = self._messages.encode(task)
            self._count(counts)
            if payload:
                self._write(payload)
            return
        self._write_through_sdk(task)

    def _count(self, counts: Counts) -> None:
        for holds, count in zip(HOLDS, counts, strict=True):
            if count:
                self._progress.derived(self._names[t.cast("Holds", holds)], count)

    def _write_through_sdk(self, task: task_rows.Json) -> None:
        messages = self._outputs.get("messages")
        annotations = self._outputs.get("annotations")
        preferences = self._outputs.get("preferences")
        if messages is not None:
            messages.add(list(task_rows.message_rows(task)))
        if annotations is None and preferences is None:
            return
        base = task_rows.task_columns(task)
        # One walk over the task's annotations serves both streams.
        annotation_rows: list[task_rows.AnnotationRow] = []
        preference_rows: list[task_rows.PreferenceRow] = []
        for place, listed, path in task_rows.places(task):
            if annotations is not None:
                annotation_rows += task_rows.annotation_rows_at(base, place, listed, path)
            if preferences is not None:
                preference_rows += task_rows.preference_rows_at(base, place, listed, path)
        if annotations is not None:
            annotations.add(annotation_rows)
        if preferences is not None:
            preferences.add(preference_rows)
