"""Content faults: objects as an evolving API, or a careless one, might send them.

`type_drift` sends values with another JSON type than the models promise, plus a field no model
lists; `missing_fields` leaves optional fields out; `new_fields` adds a top-level field no model
lists to the objects of every endpoint; `timestamp_offset` writes timestamps at another UTC
offset; `lone_surrogate` puts half an emoji in a task's metadata; `latin1_text` a word written in
Latin-1 in a task's first message, `pasted_key` the request's API key there, written in escapes;
`junk_items` puts items that are not objects in an endpoint's lists. All act on a body the API
rendered truthfully, so
`ScaleSimulator.tasks()` and its siblings stay the truth a client should recover. Which objects
are hit is `Faults.strikes_item`: fixed per id, so a task that drifts in one response drifts in
every response, as it would if its data came from a newer model.
"""

from __future__ import annotations

import hashlib
import json
import typing as t
from datetime import timedelta

from tap_scale.testing.api import Reply
from tap_scale.testing.timestamps import from_micros, parse_timestamp

if t.TYPE_CHECKING:
    from tap_scale.testing.faults import Faults

JsonObject = dict[str, t.Any]

# Paths whose bodies hold tasks: a list of them under "tasks", or one task as the whole body.
TASK_PATHS = frozenset({"/v2/tasks", "/v2/task", "/v2/delivery"})
# Paths whose bodies hold deliveries: a list under "deliveries", or one (expanded) as "delivery".
DELIVERY_PATHS = frozenset({"/v2/deliveries", "/v2/delivery"})
_DRIFTED_PARAMETERS = ("temperature", "max_completion_tokens")
# Not in any model: stands for a field a newer API adds, whose type a client cannot know.
NEW_FIELD = ("priority", 3)


# Not in any model: stands for a top-level field Scale adds after this release (`new_fields`).
NEW_TOP_LEVEL_FIELD = ("review_round", 2)
# Where each endpoint's objects are: the keys of its lists, or None for the whole body.
_OBJECTS: dict[str, tuple[str | None, ...]] = {
    "/v2/projects": ("projects",),
    "/v2/project": (None,),
    "/v2/batches": ("batches",),
    "/v2/batch": (None,),
    "/v2/tasks": ("tasks",),
    "/v2/task": (None,),
    "/v2/deliveries": ("deliveries",),
    "/v2/delivery": ("tasks", "delivery"),
    "/v2/delivery/tasks": ("docs",),
    "/v2/schema": ("schema",),
    "/v2/datasets": ("datasets",),
    "/v2/datasets/deliveries": ("deliveries",),
    "/v2/datasets/delivery": ("tasks", "delivery"),
    "/v2/datasets/tasks": ("tasks",),
}


def object_id(item: JsonObject) -> str:
    """The id per-object faults go by: `task_id` (with the delivery's, for a delivered task)."""
    if "task_id" in item and "response" in item and "delivery_id" in item:
        return f"{item['task_id']}/{item['delivery_id']}"
    return str(item.get("task_id") or item.get("id"))


def reshaped(
    faults: Faults, path: str, reply: Reply, api_key: str | None = None
) -> tuple[Reply, list[str]]:
    """The reply with the content faults applied, and the names of those that hit something.

    The body is parsed only when a content fault is on and the path holds what it changes.
    `api_key` is the key the request was made with, for `pasted_key`.
    """
    shares = (
        faults.type_drift,
        faults.missing_fields,
        faults.new_fields,
        faults.lone_surrogate,
        faults.latin1_text,
        faults.pasted_key,
    )
    if max(shares) <= 0 and faults.timestamp_offset is None and faults.junk_items <= 0:
        return reply, []
    if path not in TASK_PATHS | DELIVERY_PATHS | _OBJECTS.keys():
        return reply, []
    body = json.loads(reply.body)
    struck: set[str] = {"new_fields"} if _grow(faults, path, body) else set()
    for task in _tasks(path, body):
        reshape_task(faults, task, struck, api_key)
    for delivery in _deliveries(path, body):
        if faults.strikes_item("type_drift", delivery["id"]):
            delivery["task_count"] = str(delivery["task_count"])
            struck.add("type_drift")
        if faults.timestamp_offset is not None and isinstance(delivery.get("delivered_at"), str):
            delivery["delivered_at"] = at_offset(delivery["delivered_at"], faults.timestamp_offset)
            struck.add("timestamp_offset")
    if add_junk(faults, path, body):
        struck.add("junk_items")
    if not struck:
        return reply, []
    # ASCII escapes: a lone surrogate has no UTF-8 form, only its `\\ud83d` escape.
    ascii_only = "lone_surrogate" in struck
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=ascii_only)
    names = [name for name in _ORDER if name in struck]
    encoded = _written(text.encode(), struck, api_key, ascii_only=ascii_only)
    return Reply(reply.status, encoded, reply.content_type, reply.headers), names


def _written(encoded: bytes, struck: set[str], api_key: str | None, *, ascii_only: bool) -> bytes:
    """The faults that change how a rendered body's text is written, not what it says."""
    if "latin1_text" in struck:
        # The word as written in the JSON text (escaped where the body is ASCII only).
        written = json.dumps(LATIN1_WORD, ensure_ascii=ascii_only)[1:-1].encode()
        encoded = encoded.replace(written, LATIN1_WORD.encode("latin-1"))
    if "pasted_key" in struck and api_key:
        written = json.dumps(f"{PASTED} {api_key}", ensure_ascii=ascii_only)[1:-1].encode()
        escaped = "".join(f"\\u{ord(character):04x}" for character in api_key)
        encoded = encoded.replace(written, f"{PASTED} {escaped}".encode())
    return encoded


def reshape_task(
    faults: Faults, task: JsonObject, struck: set[str], api_key: str | None = None
) -> None:
    """Apply the content faults that hit a rendered task, in place; add their names to `struck`.

    Fields go first, so that drift only retypes what is still there, and the surrogate before
    drift, so that a drifted task carries it inside its metadata's JSON string.
    """
    if faults.strikes_item("missing_fields", task["task_id"]):
        strip_task(task)
        struck.add("missing_fields")
    if faults.strikes_item("lone_surrogate", task["task_id"]):
        metadata = task.get("metadata")
        task["metadata"] = {**(metadata if isinstance(metadata, dict) else {}), **CUT_EMOJI}
        struck.add("lone_surrogate")
    if faults.strikes_item("latin1_text", task["task_id"]) and (content := _first_content(task)):
        content["text"] = f"{content.get('text') or ''} {LATIN1_WORD}"
        struck.add("latin1_text")
    if (
        api_key
        and faults.strikes_item("pasted_key", task["task_id"])
        and (content := _first_content(task))
    ):
        content["text"] = f"{content.get('text') or ''} {PASTED} {api_key}"
        struck.add("pasted_key")
    if faults.strikes_item("type_drift", task["task_id"]):
        drift_task(task)
        struck.add("type_drift")
    if faults.timestamp_offset is not None:
        offset_task(task, faults.timestamp_offset)
        struck.add("timestamp_offset")


def _first_content(task: JsonObject) -> JsonObject | None:
    """The content of the task's first message, if it has one."""
    for thread in task.get("threads") or ():
        for turn in thread.get("turns") or ():
            for message in turn.get("messages") or ():
                if isinstance(message.get("content"), dict):
                    return t.cast("JsonObject", message["content"])
    return None


_ORDER = (
    "new_fields",
    "missing_fields",
    "lone_surrogate",
    "latin1_text",
    "pasted_key",
    "type_drift",
    "timestamp_offset",
    "junk_items",
)
# Half of U+1F600, as a client that cut a string by UTF-16 code units leaves it.
CUT_EMOJI = {"note": "cut \ud83d"}
# Written in Latin-1 where UTF-8 is due (one byte, 0xe9, for the é): a lenient reader makes it
# "caf\ufffd".
LATIN1_WORD = "caf\u00e9"
# What precedes the key `pasted_key` writes into a message.
PASTED = "my key is"
# What an endpoint's list may hold besides its objects, one after each object `junk_items` hits.
JUNK: tuple[object, ...] = (None, "not_an_object", 42, {"note": "an object without its id"})


def add_junk(faults: Faults, path: str, body: JsonObject) -> bool:
    """Put an item that is not an object after each object `junk_items` hits in a list.

    In every list of objects the endpoint's body holds; returns whether any was added.
    """
    added = False
    for key in _OBJECTS.get(path, ()) if faults.junk_items > 0 else ():
        listed = None if key is None else body.get(key)
        if key is None or not isinstance(listed, list):
            continue
        items: list[object] = []
        for item in listed:
            items.append(item)
            item_id = object_id(item)
            if faults.strikes_item("junk_items", item_id):
                digest = hashlib.sha256(item_id.encode()).digest()
                items.append(JUNK[digest[0] % len(JUNK)])
        added |= len(items) > len(listed)
        body[key] = items
    return added


def offset_task(task: JsonObject, offset: str) -> None:
    """Write a rendered task's timestamps at this UTC offset, in place."""
    for name in ("created_at", "completed_at"):
        if isinstance(task.get(name), str):
            task[name] = at_offset(task[name], offset)
    for thread in task.get("threads", []):
        for submission in thread.get("submissions", []):
            if isinstance(submission.get("submitted_at"), str):
                submission["submitted_at"] = at_offset(submission["submitted_at"], offset)


def at_offset(text: str, offset: str) -> str:
    """The instant a UTC timestamp names, written at a UTC offset (`+05:30`), with its fraction."""
    micros = parse_timestamp(text)
    if micros is None:
        return text
    sign = -1 if offset[0] == "-" else 1
    shift = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])) * sign
    local = from_micros(micros) + shift
    fraction = f".{local.microsecond // 1000:03d}" if "." in text else ""
    return f"{local.year:04d}-{local:%m-%dT%H:%M:%S}{fraction}{offset}"


def drift_task(task: JsonObject) -> None:
    """Give a rendered task's values the types a drifting API sends, in place."""
    metadata = task.get("metadata")
    if isinstance(metadata, dict):
        task["metadata"] = json.dumps(metadata)
    name, value = NEW_FIELD
    task[name] = value
    for node in _objects(task.get("threads", [])):
        parameters = node.get("model_parameters")
        if isinstance(parameters, dict):
            for key in _DRIFTED_PARAMETERS:
                if key in parameters:
                    parameters[key] = str(parameters[key])
        for annotation in node.get("annotations", []):
            # `labels` is only there with opts=annotation_details.
            labels = annotation.get("labels")
            if isinstance(labels, list):
                annotation["labels"] = ",".join(labels)


def strip_task(task: JsonObject) -> None:
    """Remove a rendered task's optional fields, in place."""
    for name in ("batch", "metadata", "errors"):
        task.pop(name, None)
    for thread in task.get("threads", []):
        thread.pop("annotations", None)
        for turn in thread.get("turns", []):
            turn.pop("annotations", None)
            for message in turn.get("messages", []):
                message.pop("source_id", None)


def _tasks(path: str, body: JsonObject) -> list[JsonObject]:
    if path == "/v2/task":
        return [body]
    return list(body.get("tasks", [])) if path in TASK_PATHS else []


def _deliveries(path: str, body: JsonObject) -> list[JsonObject]:
    if path == "/v2/deliveries":
        return list(body["deliveries"])
    delivery = body.get("delivery")
    # Without expand=delivery, /v2/delivery names its delivery by id: nothing to retype.
    return [delivery] if path in DELIVERY_PATHS and isinstance(delivery, dict) else []


def _grow(faults: Faults, path: str, body: JsonObject) -> bool:
    """Add the new top-level field to the objects `new_fields` hits; whether it hit any."""
    if faults.new_fields <= 0:
        return False
    grown = False
    for item in _objects_of(path, body):
        if faults.strikes_item("new_fields", object_id(item)):
            name, value = NEW_TOP_LEVEL_FIELD
            item[name] = value
            grown = True
    return grown


def _objects_of(path: str, body: JsonObject) -> t.Iterator[JsonObject]:
    """The objects an endpoint's body holds (an id in place of an object is none)."""
    for key in _OBJECTS.get(path, ()):
        found = body if key is None else body.get(key)
        for item in found if isinstance(found, list) else [found]:
            if isinstance(item, dict):
                yield item


def _objects(node: object) -> t.Iterator[JsonObject]:
    """Every JSON object inside a value, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for item in node:
            yield from _objects(item)
