"""Datasets: Scale's off-the-shelf data, delivered in dataset deliveries of dataset tasks."""

from __future__ import annotations

import sys
import typing as t

from tap_scale.client import ScaleStream
from tap_scale.models import DATASET, DATASET_DELIVERY, DATASET_TASK
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


class DatasetTasksStream(DeliveredTasksStream):
    """The tasks of each new dataset delivery, from ``GET /v2/datasets/delivery`` (paginated).

    A dataset task's `response` is the dataset's own free-form object, kept whole.
    """

    name = "dataset_tasks"
    path = "/datasets/delivery"
    records_key = "tasks"
    parent_stream_type = DatasetDeliveriesStream
    schema = DATASET_TASK.to_dict()
    id_fields = ("dataset", "delivery")

    @override
    def get_url_params(
        self,
        context: Context | None,
        next_page_token: str | None,
    ) -> dict[str, t.Any]:
        assert context is not None  # noqa: S101  # always read per delivery
        return {"delivery_id": context["delivery"], **self.page_params(next_page_token)}
