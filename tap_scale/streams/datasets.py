"""Datasets: Scale's off-the-shelf data, delivered in dataset deliveries of dataset tasks."""

from __future__ import annotations

import math
import sys
import typing as t
from functools import cached_property

from singer_sdk.singerlib.catalog import REPLICATION_INCREMENTAL

from tap_scale.client import TIE_MARGIN, ScaleStream
from tap_scale.models import (
    DATASET,
    DATASET_DELIVERY,
    DATASET_TASK,
    format_timestamp,
    parse_timestamp,
)
from tap_scale.streams.deliveries import DeliveredTasksStream, DeliveryListStream

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context


class DatasetsStream(ScaleStream):
    """The datasets in scope, from ``GET /v2/datasets``."""

    name = "datasets"
    path = "/datasets"
    records_key = "datasets"
    primary_keys = ("id",)
    schema = DATASET.to_dict()

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        # Resolving the selection already listed them: one request serves both.
        yield from map(dict, self.selection.datasets)  # copies: records are post-processed


class DatasetDeliveriesStream(DeliveryListStream):
    """Deliveries of each dataset in scope, from ``GET /v2/datasets/deliveries``."""

    name = "dataset_deliveries"
    path = "/datasets/deliveries"
    partition_key = "dataset"
    id_fields = ("dataset",)
    target_settings = ("dataset_delivery_ids",)
    schema = DATASET_DELIVERY.to_dict()

    @override
    @property
    def partitions(self) -> list[dict[str, t.Any]]:
        return [{"dataset": dataset_id} for dataset_id in self.selection.dataset_ids]

    @override
    def wanted(self) -> frozenset[str] | None:
        return self.selection.dataset_delivery_ids

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        if context is None or (
            self.replication_method == REPLICATION_INCREMENTAL and not self.feeds_children
        ):
            # Only this stream reads the list, and only what is new: its own request.
            yield from super().get_records(context)
            return
        # The whole list, which the sync's selection lists once for every use (copies: records
        # are post-processed).
        yield from map(dict, self.selection.dataset_deliveries(context["dataset"]))

    @override
    def task_count(self, record: dict[str, t.Any]) -> t.Any:
        metadata = record.get("metadata")
        return metadata.get("task_count") if isinstance(metadata, dict) else None


class DatasetTasksStream(DeliveredTasksStream):
    """The tasks of each new dataset delivery, from ``GET /v2/datasets/tasks`` (paginated).

    Each dataset delivery stays its own state partition, read once (or on every run when named
    in `dataset_delivery_ids`), as the parent hands it over. But a page holds tasks of any
    delivery of a dataset, so where a dataset has several deliveries to read, one chain of
    pages over the span of their `delivered_at` (`dataset_id` with `delivered_after` and
    `delivered_before`) can take fewer requests than one chain per delivery (`delivery_id`):
    each chain's last page is usually part-full. The deliveries' own `metadata.task_count` tells
    which is fewer; the first delivery handed over then reads for all of them, tasks of any
    other delivery in the span are skipped, and each of the others is marked read when the
    parent hands it over. A sync interrupted during the span's chain marks none of them.

    A dataset task's `response` is the dataset's own free-form object, kept whole.
    """

    name = "dataset_tasks"
    path = "/datasets/tasks"
    records_key = "tasks"
    parent_stream_type = DatasetDeliveriesStream
    schema = DATASET_TASK.to_dict()
    id_fields = ("dataset", "delivery")

    @cached_property
    def plans(self) -> dict[str, Plan]:
        """Each delivery's plan, made when the first of its dataset's deliveries is read."""
        return {}

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        assert context is not None  # noqa: S101  # always read per delivery
        delivery_id = context["delivery"]
        plan = self.plans.get(delivery_id)
        if plan is not None and plan.read_with != delivery_id:
            if plan.done:
                # Read with another delivery of the span: done, as if read on its own.
                self.get_context_state(context).update(
                    replication_key=self.replication_key,
                    replication_key_value=context["delivered_at"],
                )
            return
        if plan is None and self.needs(delivery_id):
            for planned in self._plan(delivery_id):
                self.plans.update(dict.fromkeys(planned.deliveries, planned))
            # The first delivery of its dataset handed over reads for its whole plan.
            self.plans[delivery_id].read_with = delivery_id
            if (span := self.plans[delivery_id]).task_count is not None:
                label = f"{len(span.deliveries)} deliveries read together"
                self.progress.announce(self.name, context, span.task_count, label)
        yield from super().get_records(context)
        if delivery_id in self.plans:
            self.plans[delivery_id].done = True

    def _plan(self, delivery_id: str) -> list[Plan]:
        """How to read the deliveries of this one's dataset that this sync must read."""
        listed = {
            delivery["id"]: (dataset_id, delivery)
            for dataset_id in self.selection.dataset_ids
            for delivery in self.selection.dataset_deliveries(dataset_id)
        }
        if delivery_id not in listed:
            return [Plan.alone(delivery_id)]
        dataset_id = listed[delivery_id][0]
        everything = [delivery for owner, delivery in listed.values() if owner == dataset_id]
        wanted = self.deliveries.wanted()
        pending = [
            delivery
            for delivery in everything
            if (wanted is None or delivery["id"] in wanted)
            and self.needs(delivery["id"])
            # Not handed over, so never to be read with the others: before `start_date`.
            and (wanted is not None or not self.before_start(delivery.get("delivered_at")))
        ]
        span = Plan.span(dataset_id, pending, everything, self.config.get("page_size", 100))
        return [span] if span is not None else [Plan.alone(d["id"]) for d in pending]

    @override
    def get_url_params(
        self,
        context: Context | None,
        next_page_token: str | None,
    ) -> dict[str, t.Any]:
        assert context is not None  # noqa: S101  # always read per delivery
        plan = self.plans.get(context["delivery"]) or Plan.alone(context["delivery"])
        return {**plan.params, **self.page_params(next_page_token)}

    @override
    def post_process(
        self,
        row: dict[str, t.Any],
        context: Context | None = None,
    ) -> dict[str, t.Any] | None:
        assert context is not None  # noqa: S101  # always read per delivery
        delivery = row.get("delivery")
        delivery_id = delivery.get("id") if isinstance(delivery, dict) else delivery
        plan = self.plans.get(context["delivery"])
        if plan is None or plan.read_with != context["delivery"] or len(plan.deliveries) == 1:
            return super().post_process(row, context)
        if delivery_id not in plan.deliveries:
            return None  # a delivery inside the span that this sync does not read
        row["delivery"] = delivery_id
        row["delivered_at"] = plan.delivered_at[delivery_id]
        return super().post_process(row, context)


class Plan:
    """How some deliveries of one dataset are read: each alone, or together over their span."""

    def __init__(self, deliveries: dict[str, str | None], params: dict[str, str]) -> None:
        """Read these deliveries (id -> `delivered_at`, for a span) with these parameters."""
        self.delivered_at = deliveries
        self.deliveries = frozenset(deliveries)
        self.params = params
        #: The delivery whose partition reads for all of them: the first handed over.
        self.read_with = next(iter(deliveries))
        #: Whether that partition has read them all.
        self.done = False
        #: How many tasks Scale says the deliveries hold together, for a span (progress lines).
        self.task_count: int | None = None

    @classmethod
    def alone(cls, delivery_id: str) -> Plan:
        """One delivery, read by its id."""
        return cls({delivery_id: None}, {"delivery_id": delivery_id})

    @classmethod
    def span(
        cls,
        dataset_id: str,
        pending: list[dict[str, t.Any]],
        everything: list[dict[str, t.Any]],
        page_size: int,
    ) -> Plan | None:
        """The pending deliveries read over their span, if that takes fewer requests."""
        if len(pending) < 2:  # noqa: PLR2004 - a span of one delivery is that delivery
            return None
        try:
            moments = {d["id"]: parse_timestamp(d["delivered_at"]) for d in everything}
            counts = {d["id"]: int(d["metadata"]["task_count"]) for d in everything}
        except (KeyError, TypeError, ValueError):
            return None  # without every delivery's time and size, reading each alone is safe
        first = min(moments[d["id"]] for d in pending)
        last = max(moments[d["id"]] for d in pending)
        inside = sum(counts[i] for i, moment in moments.items() if first <= moment <= last)
        alone = sum(max(1, math.ceil(counts[d["id"]] / page_size)) for d in pending)
        if max(1, math.ceil(inside / page_size)) >= alone:
            return None
        plan = cls(
            {d["id"]: format_timestamp(moments[d["id"]]) for d in pending},
            {
                "dataset_id": dataset_id,
                # Scale's bounds are strict: one tie margin outside the span takes its ends in.
                "delivered_after": format_timestamp(first - TIE_MARGIN),
                "delivered_before": format_timestamp(last + TIE_MARGIN),
            },
        )
        plan.task_count = sum(counts[d["id"]] for d in pending)
        return plan
