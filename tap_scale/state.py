"""The state a run starts from, checked whole against the shape the tap writes.

Before anything is synced, so that a broken entry stops the run before any stream has emitted
a record, with every problem named by its place in the state and its partition.
"""

from __future__ import annotations

import json
import typing as t
from datetime import datetime, timezone

from singer_sdk.typing import DEFAULT_JSONSCHEMA_VALIDATOR

from tap_scale.inputs import Findings, location, shape_problem, shown
from tap_scale.models import parse_timestamp

if t.TYPE_CHECKING:
    from collections.abc import Mapping

    from jsonschema import ValidationError

# Earliest moment a timestamp setting or bookmark may name: nothing at Scale is older, and the
# tap subtracts lookbacks and margins from it, which must not leave datetime's range.
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
# The latest: no real bookmark comes near it, and a bound at datetime's very end could not be
# moved by a lookback or a margin without overflowing.
LATEST = datetime(9000, 1, 1, tzinfo=timezone.utc)
# What to do about a state that cannot be used, with Meltano.
FIX_STATE = (
    "Fix or delete those entries (`meltano state get <state id>`, edit the JSON, then "
    "`meltano state set --force <state id> '<json>'`), or clear the state to read everything "
    "again from `start_date` (`meltano state clear --force <state id>`). Targets upsert on "
    "primary keys, so records read again are not duplicated."
)


def moment_problem(value: str) -> str | None:
    """Why a timestamp cannot serve as a bound of the tap's requests, if it cannot."""
    try:
        moment = parse_timestamp(value)
    except ValueError:
        return "is not an ISO 8601 timestamp"
    if not EARLIEST <= moment < LATEST:
        return f"is out of range (from {EARLIEST:%Y-%m-%d}, before {LATEST:%Y})"
    return None


# The shape of the state the tap writes: the SDK's bookmarks, per stream and per partition.
# Keys it does not know are let through (the SDK ignores them), so that a state written by a
# later release with more per-partition detail still loads.
_BOOKMARK_KEYS: dict[str, t.Any] = {
    "replication_key": {"type": "string"},
    "replication_key_value": {"type": ["string", "null"]},
    "replication_key_signpost": {"type": ["string", "null"]},
    "starting_replication_value": {"type": ["string", "null"]},
    "progress_markers": {"type": "object"},
}
_PARTITION = {
    "type": "object",
    "required": ["context"],
    "properties": {
        "context": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {"type": "string"},
        },
        **_BOOKMARK_KEYS,
    },
}
STATE_SCHEMA = {
    "type": "object",
    "properties": {
        "bookmarks": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "partitions": {"type": "array", "items": _PARTITION},
                    **_BOOKMARK_KEYS,
                },
            },
        },
    },
}
# The bookmark values that name a moment, read back by the tap as timestamps.
_MOMENT_KEYS = (
    "replication_key_value",
    "replication_key_signpost",
    "starting_replication_value",
)


class ReplicationKey(t.NamedTuple):
    """A stream's replication key, as its bookmarks must hold it."""

    #: The key's name; None for a full-table stream, which keeps no bookmark values.
    name: str | None
    #: Whether its values are timestamps (most are) rather than ids (a response schema's).
    moment: bool = True

    @classmethod
    def of(cls, name: str | None, schema: Mapping[str, t.Any]) -> ReplicationKey:
        """The replication key ``name`` of a stream with this JSON ``schema``."""
        field = schema.get("properties", {}).get(name, {}) if name else {}
        return cls(name, moment=field.get("format") == "date-time")


def check_state(
    state: Mapping[str, t.Any], replication_keys: Mapping[str, ReplicationKey]
) -> Findings:
    """Check a whole state against the shape the tap writes, before anything is synced.

    ``replication_keys`` gives each stream's replication key. Bookmarks must be values the tap
    can read back (timestamps in range, where the key is a timestamp), under the stream's own
    replication key; a partition may appear once per stream. Streams the tap does not have are
    warned about and ignored, as the SDK ignores them.
    """
    validator = DEFAULT_JSONSCHEMA_VALIDATOR(STATE_SCHEMA)
    problems = [_state_shape_problem(error, state) for error in validator.iter_errors(state)]
    warnings = []
    if "singer_state" in state:
        # What `meltano state get` prints: the tap would find no bookmarks in it, and read
        # everything again.
        problems.append(
            "it is Meltano's wrapper around a state (`singer_state`); pass the value of its "
            "`singer_state` key, or let `meltano run` pass the state"
        )
    elif unknown := sorted(set(state) - {"bookmarks"}):
        warnings.append(
            f"the state has keys tap-scale does not write ({', '.join(unknown)}); they are ignored"
        )
    bookmarks = state.get("bookmarks")
    for stream, stream_state in bookmarks.items() if isinstance(bookmarks, dict) else ():
        if stream not in replication_keys:
            warnings.append(
                f"the state has bookmarks for a stream `{stream}` that tap-scale does not have "
                f"({', '.join(sorted(replication_keys))}); they are ignored"
            )
        elif isinstance(stream_state, dict):
            problems += _stream_bookmark_problems(stream, stream_state, replication_keys[stream])
    return Findings(problems, warnings)


def _stream_bookmark_problems(
    stream: str, stream_state: Mapping[str, t.Any], replication_key: ReplicationKey
) -> list[str]:
    """The values in one stream's part of the state the tap could not read back."""
    problems = _bookmark_problems(f"bookmarks.{stream}", stream_state, replication_key)
    partitions = stream_state.get("partitions")
    seen: dict[str, int] = {}
    for number, partition in enumerate(partitions if isinstance(partitions, list) else ()):
        context = partition.get("context") if isinstance(partition, dict) else None
        if not isinstance(context, dict):
            continue  # a shape problem, reported as such
        where = f"bookmarks.{stream}.partitions[{number}] ({_context(context)})"
        problems += _bookmark_problems(where, partition, replication_key)
        # The SDK finds a partition's bookmark by its context, and stops on two.
        key = json.dumps(context, sort_keys=True, default=str)
        if key in seen:
            problems.append(f"{where} repeats bookmarks.{stream}.partitions[{seen[key]}]")
        seen.setdefault(key, number)
    return problems


def _context(context: Mapping[str, t.Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in context.items())


def _state_shape_problem(error: ValidationError, state: Mapping[str, t.Any]) -> str:
    where = _state_location(list(error.path), state)
    if error.validator == "required":
        return f"{where} has no `context` (the partition it bookmarks)"
    return shape_problem(where, error)


def _state_location(path: list[str | int], state: Mapping[str, t.Any]) -> str:
    """A place in the state as a person reads it, with the partition it is in, if any."""
    node, partition = t.cast("t.Any", state), ""
    for part in path:
        node = node[part]
        context = node.get("context") if isinstance(node, dict) and isinstance(part, int) else None
        if isinstance(context, dict):
            partition = f" ({_context(context)})"
    return (location(path) or "the state") + partition


def _bookmark_problems(
    where: str, bookmark: Mapping[str, t.Any], replication_key: ReplicationKey
) -> list[str]:
    problems = []
    key, expected = bookmark.get("replication_key"), replication_key.name
    if isinstance(key, str) and key != expected:
        wanted = f"`{expected}`" if expected else "none (a full-table stream)"
        problems.append(f"{where} bookmarks `{key}`, but the stream's replication key is {wanted}")
    if not replication_key.moment:
        return problems  # an id: any string serves (its type is checked with the shape)
    for name in _MOMENT_KEYS:
        value = bookmark.get(name)
        if not isinstance(value, str):
            continue  # null, or a shape problem reported as such
        # Any moment the tap can read back is let through, however far off: the tap itself may
        # have written it (a partition whose only task is stamped in year 999), and the streams
        # read a partition again from the start rather than never (`ScaleStream.lower_bound`).
        try:
            parse_timestamp(value)
        except ValueError:
            problems.append(f"{where}: {name} {shown(value)} is not an ISO 8601 timestamp")
    return problems
