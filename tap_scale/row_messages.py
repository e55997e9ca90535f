"""A task's derived rows as Singer RECORD messages, encoded: one task in, one payload out.

Pure and free of the SDK. The messages are byte for byte those the SDK would write for the same
records (`tests/test_task_rows_streams.py` compares them).
"""

from __future__ import annotations

import typing as t
from datetime import datetime, timezone

import msgspec

from tap_scale import task_rows

if t.TYPE_CHECKING:
    from collections.abc import Mapping

#: What a task stream's derived streams hold, in the order counts are given.
HOLDS = ("messages", "annotations", "preferences")
Holds = t.Literal["messages", "annotations", "preferences"]
#: Rows written per derived stream, in `HOLDS` order.
Counts = tuple[int, int, int]

_encode_into = msgspec.json.Encoder().encode_into


class RowMessages:
    """Encodes each task's rows for the selected derived streams, under their stream names."""

    def __init__(self, aliases: Mapping[Holds, str]) -> None:
        """``aliases``: the stream name each selected kind of row is written under."""
        self._prefixes = {
            holds: b'{"type":"RECORD","stream":' + msgspec.json.encode(alias) + b',"record":'
            for holds, alias in aliases.items()
        }

    def encode(self, task: task_rows.Json) -> tuple[bytearray, Counts]:
        """The task's rows as RECORD messages, one JSON line each, and how many per stream."""
        prefixes = self._prefixes
        # Every row of a task was extracted at once: the moment is encoded once per task.
        suffix = b',"time_extracted":' + msgspec.json.encode(datetime.now(timezone.utc)) + b"}\n"
        payload = bytearray()
        messages: list[task_rows.MessageRow] = []
        annotations: list[task_rows.AnnotationRow] = []
        preferences: list[task_rows.PreferenceRow] = []
        if "messages" in prefixes:
            messages = list(task_rows.message_rows(task))
        if "annotations" in prefixes or "preferences" in prefixes:
            base = task_rows.task_columns(task)
            # One walk over the task's annotations serves both streams.
            for place, listed, path in task_rows.places(task):
                if "annotations" in prefixes:
                    annotations += task_rows.annotation_rows_at(base, place, listed, path)
                if "preferences" in prefixes:
                    preferences += task_rows.preference_rows_at(base, place, listed, path)
        kinds: tuple[tuple[Holds, list[t.Any]], ...] = (
            ("messages", messages),
            ("annotations", annotations),
            ("preferences", preferences),
        )
        for holds, rows in kinds:
            if rows:
                prefix = prefixes[holds]
                for row in rows:
                    payload += prefix
                    _encode_into(row, payload, -1)
                    payload += suffix
        return payload, (len(messages), len(annotations), len(preferences))
