"""Records rendered as Scale's JSON objects, honouring `opts` and `expand`.

`opts` adds detail the API leaves out by default:
- without `annotation_details` an annotation is only its `key` and `value`;
- without `attachment_details` an attachment is only its `url` and `mime_type`;
- without `model_parameters` messages have no `model_parameters`;
- without `submissions` threads have no `submissions`.

`expand` swaps an id (`project`, `batch`, `delivery`, `dataset`) for the object it names.
Everything returned is a fresh structure the caller may keep or change.
"""

from __future__ import annotations

import re
import typing as t

from tap_scale.testing.content import task_errors, task_metadata, task_reports, task_threads
from tap_scale.testing.responses import delivered_response
from tap_scale.testing.timestamps import format_timestamp

if t.TYPE_CHECKING:
    from collections.abc import Collection

    from tap_scale.testing.records import (
        BatchRecord,
        DatasetDeliveryRecord,
        DatasetRecord,
        DatasetTaskRecord,
        DeliveryRecord,
        ProjectRecord,
        ResponseSchemaRecord,
        TaskRecord,
    )
    from tap_scale.testing.store import Store

JsonObject = dict[str, t.Any]

# Metadata nested deeper than Python's JSON encoder can write is rendered as this marker, and
# written out as nested objects in the response's bytes (`nest_markers`).
_NESTED = re.compile(rb'"__nested_metadata_(\d+)__"')


def _nested_marker(levels: int) -> str:
    return f"__nested_metadata_{levels}__"


def nest_markers(body: bytes) -> bytes:
    """A response body with each nested-metadata marker written out as that many levels."""
    if b"__nested_metadata_" not in body:
        return body

    def nested(match: re.Match[bytes]) -> bytes:
        levels = int(match[1])
        return b'{"level":' * levels + b"0" + b"}" * levels

    return _NESTED.sub(nested, body)


ALL_OPTS = ("annotation_details", "attachment_details", "model_parameters", "submissions")
_FIELDS_BEHIND_OPTS = {"model_parameters": "model_parameters", "submissions": "submissions"}
_ATTACHMENT_SUMMARY = ("url", "mime_type")


class Renderer:
    """Renders the store's records; expansion looks the named objects up in the store."""

    def __init__(self, store: Store) -> None:
        """Render records of this store."""
        self._store = store

    def project(self, project: ProjectRecord) -> JsonObject:
        """A Project."""
        return {
            "id": project.project_id,
            "name": project.name,
            "created_at": format_timestamp(project.created_at, fraction=project.precise),
            "types": list(project.types),
            "models": list(project.models),
        }

    def batch(self, batch: BatchRecord, *, expand: Collection[str] = ()) -> JsonObject:
        """A Batch; its project is expanded when `expand` names it."""
        body: JsonObject = {
            "id": batch.batch_id,
            "name": batch.name,
            "project": self._project_field(batch.project_id, expand),
            "created_at": format_timestamp(batch.created_at, fraction=batch.precise),
        }
        if batch.completed_at is not None:
            body["completed_at"] = format_timestamp(batch.completed_at, fraction=batch.precise)
        body["status"] = batch.status
        if batch.callback is not None:
            body["callback"] = batch.callback
        body["metadata"] = _copy(batch.metadata)
        return body

    def task(
        self, task: TaskRecord, *, opts: Collection[str] = (), expand: Collection[str] = ()
    ) -> JsonObject:
        """A Task as `GET /v2/tasks` renders it with these `opts` and `expand` values."""
        body: JsonObject = {
            "task_id": task.task_id,
            "project": self._project_field(task.project_id, expand),
        }
        if task.batch_id is not None:
            batch = self._store.batches[task.batch_id]
            body["batch"] = self.batch(batch) if "batch" in expand else task.batch_id
        body["status"] = task.status
        body["created_at"] = format_timestamp(task.created_at, fraction=task.precise)
        if task.completed_at is not None:
            body["completed_at"] = format_timestamp(task.completed_at, fraction=task.precise)
        levels = self._store.nested_metadata.get(task.task_id)
        body["metadata"] = task_metadata(task.seed) if levels is None else _nested_marker(levels)
        if task.status == "completed" and task.reported:
            # A reported task carries its reports instead of threads: no `threads` key at all.
            body["sensitive_content_reports"] = task_reports(task.seed)
            return body
        if task.status == "completed" and task.completed_at is not None:
            threads = task_threads(task.kind, task.seed, task.completed_at)
            body["threads"] = [_strip(thread, frozenset(opts)) for thread in threads]
        else:
            body["threads"] = []
        if task.status == "error":
            body["errors"] = task_errors(task.seed)
        return body

    def delivery(self, delivery: DeliveryRecord, *, expand: Collection[str] = ()) -> JsonObject:
        """A Delivery; its project is expanded when `expand` names it."""
        return {
            "id": delivery.delivery_id,
            "name": delivery.name,
            "task_count": len(delivery.task_ids),
            "delivered_at": format_timestamp(delivery.delivered_at, fraction=delivery.precise),
            "project": self._project_field(delivery.project_id, expand),
        }

    def delivered_task(self, task: TaskRecord, delivery: DeliveryRecord | None) -> JsonObject:
        """A task with what one delivery delivered of it (`GET /v2/delivery/tasks`).

        Without a delivery (the task was never delivered) the delivery's fields and the
        response are null, as Scale documents.
        """
        body: JsonObject = {
            "task_id": task.task_id,
            "created_at": format_timestamp(task.created_at, fraction=task.precise),
            "delivery_id": None,
            "delivered_at": None,
            "response_schema_id": None,
            "response": None,
        }
        if delivery is not None:
            response = delivered_response(task)
            body["delivery_id"] = delivery.delivery_id
            body["delivered_at"] = format_timestamp(
                delivery.delivered_at, fraction=delivery.precise
            )
            body["response_schema_id"] = None if response is None else delivery.response_schema_id
            body["response"] = response
        return body

    def response_schema(self, schema: ResponseSchemaRecord) -> JsonObject:
        """A delivery JSON schema, its definition as the string Scale sends."""
        return {"id": schema.schema_id, "json": schema.json}

    def dataset(self, dataset: DatasetRecord) -> JsonObject:
        """A Dataset."""
        return {"id": dataset.dataset_id, "name": dataset.name}

    def dataset_delivery(
        self, delivery: DatasetDeliveryRecord, *, expand: Collection[str] = ()
    ) -> JsonObject:
        """A DatasetDelivery; its dataset is expanded when `expand` names it."""
        dataset = self._store.datasets[delivery.dataset_id]
        return {
            "id": delivery.delivery_id,
            "name": delivery.name,
            "delivered_at": format_timestamp(delivery.delivered_at, fraction=delivery.precise),
            "metadata": {"task_count": len(delivery.task_ids), "turn_count": delivery.turn_count},
            "dataset": self.dataset(dataset) if "dataset" in expand else dataset.dataset_id,
        }

    def dataset_task(self, task: DatasetTaskRecord, *, expand: Collection[str] = ()) -> JsonObject:
        """A DatasetTask; its dataset and delivery are expanded when `expand` names them."""
        delivery = self._store.dataset_deliveries[task.delivery_id]
        dataset = self._store.datasets[task.dataset_id]
        return {
            "task_id": task.task_id,
            "delivery": self.dataset_delivery(delivery, expand=expand)
            if "delivery" in expand
            else delivery.delivery_id,
            "dataset": self.dataset(dataset) if "dataset" in expand else dataset.dataset_id,
            "response": _copy(task.response),
        }

    def _project_field(self, project_id: str, expand: Collection[str]) -> object:
        if "project" in expand:
            return self.project(self._store.projects[project_id])
        return project_id


def _strip(node: object, opts: frozenset[str]) -> t.Any:  # noqa: ANN401 - any JSON value
    """A copy of thread content with what the client did not ask for (`opts`) left out."""
    if isinstance(node, list):
        return [_strip(item, opts) for item in node]
    if not isinstance(node, dict):
        return node
    copy: JsonObject = {}
    for key, value in node.items():
        if key in _FIELDS_BEHIND_OPTS and _FIELDS_BEHIND_OPTS[key] not in opts:
            continue
        if key == "annotations" and "annotation_details" not in opts:
            copy[key] = [_summary(annotation) for annotation in value]
        elif key == "attachments" and "attachment_details" not in opts:
            copy[key] = [
                {name: file[name] for name in _ATTACHMENT_SUMMARY if name in file} for file in value
            ]
        else:
            copy[key] = _strip(value, opts)
    return copy


def _summary(annotation: JsonObject) -> JsonObject:
    # Without details Scale sends only the key and the value (doc example 002); an annotation
    # marked not applicable has no value to send.
    summary: JsonObject = {"key": annotation["key"]}
    if "value" in annotation:
        summary["value"] = _copy(annotation["value"])
    return summary


def _copy(value: object) -> t.Any:  # noqa: ANN401 - any JSON value
    """A deep copy of a JSON value."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(item) for item in value]
    return value
