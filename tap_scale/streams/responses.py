"""Delivered responses: what each delivery delivered of each task, and the schemas they follow."""

from __future__ import annotations

import json
import sys
import typing as t
from functools import cached_property
from http import HTTPStatus

from tap_scale.client import ScaleAPIError, ScaleStream, page_body
from tap_scale.models import RESPONSE_SCHEMA, TASK_RESPONSE
from tap_scale.streams.deliveries import DeliveredTasksStream, DeliveriesStream

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    import requests
    from singer_sdk.helpers.types import Context


class TaskResponsesStream(DeliveredTasksStream):
    """The response each new delivery delivered for each of its tasks (``GET /v2/delivery/tasks``).

    Read per delivery, each delivery once, like `delivery_tasks`: a delivery is the only filter
    that finds a response delivered after its task completed, and every record names its
    delivery, so a task delivered twice keeps both responses (`delivery_id`, `task_id`).
    """

    name = "task_responses"
    path = "/delivery/tasks"
    records_key = "docs"
    parent_stream_type = DeliveriesStream
    primary_keys = ("delivery_id", "task_id")
    delivery_field = "delivery_id"
    schema = TASK_RESPONSE.to_dict()

    @override
    def get_url_params(
        self,
        context: Context | None,
        next_page_token: str | None,
    ) -> dict[str, t.Any]:
        assert context is not None  # noqa: S101  # always read per delivery
        return {"delivery_id": context["delivery"], **self.page_params(next_page_token)}

    @override
    def generate_child_contexts(
        self,
        record: dict[str, t.Any],
        context: Context | None,
    ) -> t.Iterable[Context | None]:
        # The SDK copies the partition's keys into each record that lacks them, just before
        # asking for child contexts: `delivery` is the partition's name for what Scale's record
        # calls `delivery_id`, so it is taken out again (it has no column).
        if record.get("delivery") == record.get(self.delivery_field):
            record.pop("delivery", None)
        schema_id = record.get("response_schema_id")
        for child in self.child_streams:
            if isinstance(child, ResponseSchemasStream) and schema_id and child.wants(schema_id):
                child.requested.add(schema_id)
                # Keyed as the schema's own field: the SDK copies partition keys into records.
                yield {"id": schema_id}


class ResponseSchemasStream(ScaleStream):
    """The JSON schema of each delivered response, from ``GET /v2/schema``, each read once.

    A schema is read the first time a response names it, once per sync, and never again once a
    run has stored it: each schema id is its own state partition, whose bookmark (the id)
    marks it stored. A schema never changes under its id (a changed one gets a new id).
    """

    name = "response_schemas"
    path = "/schema"
    primary_keys = ("id",)
    replication_key = "id"
    is_sorted = False
    parent_stream_type = TaskResponsesStream
    schema = RESPONSE_SCHEMA.to_dict()

    @cached_property
    def requested(self) -> set[str]:
        """Schema ids this sync has asked for already."""
        return set()

    @cached_property
    def stored(self) -> frozenset[str]:
        """Schema ids an earlier run read (their partitions carry a bookmark)."""
        return frozenset(
            partition["context"]["id"]
            for partition in self.stream_state.get("partitions", [])
            if partition.get("replication_key_value") and "id" in partition.get("context", {})
        )

    def wants(self, schema_id: str) -> bool:
        """Whether this sync has yet to read this schema."""
        return schema_id not in self.stored and schema_id not in self.requested

    @override
    def get_url_params(
        self,
        context: Context | None,
        next_page_token: str | None,
    ) -> dict[str, t.Any]:
        assert context is not None  # noqa: S101  # always read per schema
        return {"schema_id": context["id"]}

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        try:
            yield from super().get_records(context)
        except ScaleAPIError as error:
            if error.status_code != HTTPStatus.NOT_FOUND or context is None:
                raise
            # A response names a schema Scale no longer serves: the responses are still
            # synced; the schema is asked for again when a new delivery names it.
            self.logger.warning(
                "Scale has no schema %s, which delivered responses name (Scale said: %s); "
                "response_schemas has no record for it.",
                context["id"],
                error.scale_text,
            )

    @override
    def parse_response(self, response: requests.Response) -> t.Iterable[dict[str, t.Any]]:
        schema = page_body(response).get("schema")
        if not isinstance(schema, dict):
            msg = (
                f"Scale answered GET {self.path} without a `schema` object. The API may have "
                "changed; report this to tap-scale's maintainers."
            )
            raise ScaleAPIError(msg)
        yield schema

    @override
    def post_process(
        self,
        row: dict[str, t.Any],
        context: Context | None = None,
    ) -> dict[str, t.Any] | None:
        row = t.cast("dict[str, t.Any]", super().post_process(row, context))
        # Scale sends the schema as a string; it is kept so, and parsed beside it.
        text = row.get("json")
        try:
            parsed = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            parsed = None
        row["json_schema"] = parsed if isinstance(parsed, dict) else None
        return row
