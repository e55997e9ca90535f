"""Delivered responses and their JSON Schemas: `GET /v2/delivery/tasks` and `GET /v2/schema`.

A delivered response is the task's outcome as Scale hands it over: each thread, turn and message
with its annotations as `{key: value}`. Its shape therefore differs by kind of project, as the
schemas do. Each project's deliveries follow the project's schema; a delivery made later
(`ScaleSimulator.deliver`) follows a new version of it, as when a project's taxonomy changes. A
reported task (sensitive content, no threads) is delivered with no response at all.
"""

from __future__ import annotations

import hashlib
import json
import typing as t

from tap_scale.testing.content import task_threads

if t.TYPE_CHECKING:
    from tap_scale.testing.records import TaskRecord

JsonObject = dict[str, t.Any]

_ANNOTATED = {"type": "object", "description": "Annotation values by annotation key."}


def schema_id(project_id: str, version: int) -> str:
    """The id of a project's response schema of this version: stable, derived, never drawn.

    Derived rather than drawn from the world's Random, so that adding schemas changes no other
    generated object.
    """
    digest = hashlib.sha256(f"{project_id}:{version}".encode()).hexdigest()
    return f"schema_{digest[:24]}"


def schema_json(kind: str, version: int) -> str:
    """The JSON Schema of a kind of project's responses, as the string Scale serves."""
    message = {
        "type": "object",
        "required": ["source_id", "annotations"],
        "properties": {"source_id": {"type": "string"}, "annotations": _ANNOTATED},
    }
    turn = {
        "type": "object",
        "required": ["id", "messages", "annotations"],
        "properties": {
            "id": {"type": "string"},
            "messages": {"type": "array", "items": message},
            "annotations": _ANNOTATED,
        },
    }
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{kind} response, version {version}",
        "type": "object",
        "required": ["threads"],
        "properties": {
            "threads": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "turns": {"type": "array", "items": turn},
                        "annotations": _ANNOTATED,
                    },
                },
            }
        },
    }
    return json.dumps(schema, separators=(",", ":"))


def delivered_response(task: TaskRecord) -> JsonObject | None:
    """The response a delivery carries for a task; None for a task with nothing to deliver."""
    if task.reported or task.completed_at is None:
        return None
    threads = task_threads(task.kind, task.seed, task.completed_at)
    return {
        "threads": [
            {
                "id": thread["id"],
                "turns": [
                    {
                        "id": turn["id"],
                        "messages": [
                            {
                                "source_id": message["source_id"],
                                "annotations": _values(message.get("annotations", [])),
                            }
                            for message in turn["messages"]
                        ],
                        "annotations": _values(turn.get("annotations", [])),
                    }
                    for turn in thread["turns"]
                ],
                "annotations": _values(thread.get("annotations", [])),
            }
            for thread in threads
        ]
    }


def _values(annotations: list[JsonObject]) -> JsonObject:
    # Copies (through JSON) of the cached threads' values, which callers must not share.
    return {
        annotation["key"]: json.loads(json.dumps(annotation["value"]))
        for annotation in annotations
        if "value" in annotation
    }
