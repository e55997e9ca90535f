"""Content faults: objects as an evolving API might send them.

`type_drift` sends values with another JSON type than the models promise, plus a field no model
lists; `missing_fields` leaves optional fields out; `new_fields` adds a top-level field no model
lists to the objects of every endpoint. Both act on a body the API rendered
truthfully, so `ScaleSimulator.tasks()` and its siblings stay the truth a client should recover.
Which objects are hit is `Faults.strikes_item`: fixed per id, so a task that drifts in one
response drifts in every response, as it would if its data came from a newer model.
"""

from __future__ import annotations

import json
import typing as t

from tap_scale.testing.api import Reply, json_reply

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


def reshaped(faults: Faults, path: str, reply: Reply) -> tuple[Reply, list[str]]:
    """The reply with the content faults applied, and the names of those that hit something.

    The body is parsed only when a content fault is on and the path holds what it changes.
    """
    if faults.type_drift <= 0 and faults.missing_fields <= 0 and faults.new_fields <= 0:
        return reply, []
    if path not in TASK_PATHS | DELIVERY_PATHS | _OBJECTS.keys():
        return reply, []
    body = json.loads(reply.body)
    struck: set[str] = {"new_fields"} if _grow(faults, path, body) else set()
    for task in _tasks(path, body):
        # Fields go first, so that drift only retypes what is still there.
        if faults.strikes_item("missing_fields", task["task_id"]):
            strip_task(task)
            struck.add("missing_fields")
        if faults.strikes_item("type_drift", task["task_id"]):
            drift_task(task)
            struck.add("type_drift")
    for delivery in _deliveries(path, body):
        if faults.strikes_item("type_drift", delivery["id"]):
            delivery["task_count"] = str(delivery["task_count"])
            struck.add("type_drift")
    if not struck:
        return reply, []
    names: list[str] = [
        name for name in ("new_fields", "missing_fields", "type_drift") if name in struck
    ]
    return json_reply(reply.status, body, reply.headers), names


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
