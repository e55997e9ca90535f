"""A task's derived rows as Singer RECORD messages, encoded: one task in, one payload out.

Pure and free of the SDK. The messages are those the SDK would write for the same records
(`tests/test_task_rows_streams.py` compares them), but for the order of an annotation's columns:
the columns its list of annotations shares (the task's, and where the list sits) are encoded
once per list and written first in each of its rows, then each annotation's own. A task has a
few dozen annotations in a handful of lists, and the shared columns are half of each row.
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

_encoder = msgspec.json.Encoder()
_encode, _encode_into = _encoder.encode, _encoder.encode_into
_COMMA = ord(",")

#: The columns an annotation's row shares with the others of its list: the task's, and where
#: the list sits (`task_rows.Place`), in the row's order.
PlaceColumns = msgspec.defstruct(
    "PlaceColumns",
    [(name, t.Any, None) for name in task_rows.PLACE_COLUMNS],
    bases=(task_rows.TaskColumns,),
    omit_defaults=True,
)


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
        preferences: list[task_rows.PreferenceRow] = []
        annotations = 0
        if "messages" in prefixes:
            messages = list(task_rows.message_rows(task))
        if "annotations" in prefixes or "preferences" in prefixes:
            annotations = self._annotations(task, payload, suffix, preferences)
        kinds: tuple[tuple[Holds, list[t.Any]], ...] = (
            ("messages", messages),
            ("preferences", preferences),
        )
        for holds, rows in kinds:
            if rows:
                prefix = prefixes[holds]
                for row in rows:
                    payload += prefix
                    _encode_into(row, payload, -1)
                    payload += suffix
        return payload, (len(messages), annotations, len(preferences))

    def _annotations(
        self,
        task: task_rows.Json,
        payload: bytearray,
        suffix: bytes,
        preferences: list[task_rows.PreferenceRow],
    ) -> int:
        """Write the task's annotation rows into ``payload``; collect its preference rows.

        One walk over the task's annotations serves both streams. Returns the rows written.
        """
        prefix = self._prefixes.get("annotations")
        pairs = "preferences" in self._prefixes
        base = task_rows.task_columns(task)
        written = 0
        for place, listed, path in task_rows.places(task):
            if prefix is not None:
                # The shared columns' object, left open for each annotation's own columns (it is
                # never empty: every place names its level).
                head = prefix + _encode(PlaceColumns(*base, *place))[:-1]
            for index, annotation in enumerate(listed):
                if not isinstance(annotation, dict):
                    continue
                identifier = task_rows.annotation_id(annotation, path, index)
                if prefix is not None:
                    payload += head
                    at = len(payload)
                    own = task_rows.annotation_columns(identifier, annotation)
                    _encode_into(own, payload, -1)
                    payload[at] = _COMMA  # the own columns' `{` continues the shared ones
                    payload += suffix
                    written += 1
                # Compared, not looked up in a set: a malformed type may be unhashable.
                kind = annotation.get("type")
                if pairs and (kind == "ranked_choices" or kind == "ranked_groups"):  # noqa: PLR1714
                    preferences += task_rows.ranking_rows(base, place, identifier, annotation)
        return written
