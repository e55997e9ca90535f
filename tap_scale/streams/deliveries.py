"""Deliveries: what Scale delivered to each project, and the tasks of each delivery.

The two base classes here serve datasets too: a list of deliveries read incrementally on
`delivered_at`, and the tasks of one delivery, read once per delivery.
"""

from __future__ import annotations

import contextlib
import sys
import typing as t
from datetime import timedelta
from functools import cached_property

from singer_sdk.singerlib.catalog import REPLICATION_FULL_TABLE, REPLICATION_INCREMENTAL

from tap_scale.client import ScaleStream
from tap_scale.models import DELIVERY, DELIVERY_TASK, format_timestamp
from tap_scale.streams.tasks import TaskRecordsStream

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context


class DeliveredTasksStream(ScaleStream):
    """The tasks of one delivery per context; a delivery whose tasks were all read is not re-read.

    Each delivery is its own state partition, finished (with a bookmark) only once all of its
    pages are read. The parent stream hands a delivery over while one of its children
    :meth:`needs` it, so a delivery is read once even when the parent's own records are not
    selected, and a sync interrupted inside a delivery reads that delivery again.
    """

    primary_keys = ("delivery", "task_id")
    id_key = "task_id"
    replication_key = "delivered_at"
    # Every task of a delivery carries the same `delivered_at`: unsorted, so that the partition's
    # bookmark (its "done" mark) is only set once the last page is read.
    is_sorted = False
    #: The record field naming the delivery that brought the task.
    delivery_field: t.ClassVar[str] = "delivery"

    @cached_property
    def deliveries(self) -> DeliveryListStream:
        """The stream that lists the deliveries (the SDK keeps no link from child to parent)."""
        return next(
            t.cast("DeliveryListStream", stream)
            for stream in self._tap.streams.values()
            if self.parent_stream_type is not None and isinstance(stream, self.parent_stream_type)
        )

    def needs(self, delivery_id: str) -> bool:
        """Whether this sync must read a delivery: named in the settings, or not read before."""
        return self.deliveries.wanted() is not None or delivery_id not in self.synced_deliveries

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        # The parent hands a delivery over while any of its children needs it: another child
        # may need it where this one read it before.
        if context is not None and not self.needs(context["delivery"]):
            return
        yield from super().get_records(context)

    @override
    def post_process(
        self,
        row: dict[str, t.Any],
        context: Context | None = None,
    ) -> dict[str, t.Any] | None:
        assert context is not None  # noqa: S101  # always read per delivery
        # Which delivery brought the task, and when (also the partition's bookmark), where
        # Scale's record does not say itself.
        if row.get(self.delivery_field) is None:
            row[self.delivery_field] = context["delivery"]
        if row.get("delivered_at") is None:
            row["delivered_at"] = context["delivered_at"]
        return super().post_process(row, context)

    @cached_property
    def synced_deliveries(self) -> frozenset[str]:
        """Deliveries whose every task an earlier run read (their partitions carry a bookmark).

        Taken once, as the sync starts: a delivery is listed once per run, so deliveries this
        run finishes need no checking, and one set spares scanning the state per delivery.
        """
        return frozenset(
            partition["context"]["delivery"]
            for partition in self.stream_state.get("partitions", [])
            if partition.get("replication_key_value") and "delivery" in partition.get("context", {})
        )


class DeliveryListStream(ScaleStream):
    """Deliveries per partition, incremental on `delivered_at` (`delivered_after`)."""

    primary_keys = ("id",)
    replication_key = "delivered_at"
    # Scale does not sort deliveries: the bookmark moves only once a partition is read.
    is_sorted = False
    records_key = "deliveries"

    #: The key of the partition, and of the query parameter `<key>_id` that selects it.
    partition_key: t.ClassVar[str]
    #: The settings that target chosen deliveries.
    target_settings: t.ClassVar[tuple[str, ...]]

    def wanted(self) -> frozenset[str] | None:
        """The configured delivery ids, or None for every delivery."""
        raise NotImplementedError

    def task_count(self, record: dict[str, t.Any]) -> t.Any:  # noqa: ANN401 - as Scale sent it
        """How many tasks Scale says the delivery holds (for progress lines), as sent."""
        return record.get("task_count")

    @override
    @property
    def replication_method(self) -> str:
        # A targeted sync lists every delivery and keeps no bookmark: a bookmark moved by a
        # chosen few would hide older deliveries from later, untargeted runs. Their tasks are
        # still read once only: that is the child stream's own state.
        if any(self.config.get(setting) for setting in self.target_settings):
            return REPLICATION_FULL_TABLE
        return super().replication_method

    @override
    def get_url_params(
        self,
        context: Context | None,
        next_page_token: str | None,
    ) -> dict[str, t.Any]:
        assert context is not None  # noqa: S101  # always read per partition
        params = {f"{self.partition_key}_id": context[self.partition_key]}
        if self.replication_method != REPLICATION_INCREMENTAL:
            return params
        # With a tasks child selected the list is read whole since `start_date` (one small
        # page): a bookmark moved while the child was not selected would otherwise hide older
        # deliveries from it for good. The child's own state still reads each delivery's tasks
        # once.
        if self.feeds_children:
            after = self.start_bound()
        else:
            lookback = timedelta(minutes=self.config.get("lookback_minutes", 0))
            after = self.lower_bound(context, lookback)
        if after is not None:
            params["delivered_after"] = format_timestamp(after)
        params["delivered_before"] = format_timestamp(self.sync_started_at)
        return params

    @property
    def feeds_children(self) -> bool:
        """Whether a stream of the deliveries' tasks (or of what they lead to) is selected."""
        return any(child.selected or child.has_selected_descendents for child in self.child_streams)

    @override
    def post_process(
        self,
        row: dict[str, t.Any],
        context: Context | None = None,
    ) -> dict[str, t.Any] | None:
        wanted = self.wanted()
        if wanted is not None and row["id"] not in wanted:
            return None
        processed = super().post_process(row, context)
        # Named deliveries are synced whatever their date: naming one is asking for it. Others
        # start at `start_date`, also where Scale sent older ones all the same.
        if processed and wanted is None and self.before_start(processed.get("delivered_at")):
            return None
        return processed

    @override
    def generate_child_contexts(
        self,
        record: dict[str, t.Any],
        context: Context | None,
    ) -> t.Iterable[Context | None]:
        # Deliveries named in the settings are read whatever the state says: that is the point
        # of naming them. Others are handed over (yielding nothing otherwise: None is logged by
        # the SDK) while a child that is synced has not read all their tasks yet.
        if any(
            child.needs(record["id"])
            for child in self.child_streams
            if isinstance(child, DeliveredTasksStream)
            and (child.selected or child.has_selected_descendents)
        ):
            child_context = {"delivery": record["id"], "delivered_at": record["delivered_at"]}
            self._announce(record, child_context)
            yield child_context

    def _announce(self, record: dict[str, t.Any], child_context: Context) -> None:
        """Tell the progress how many tasks Scale says the delivery holds, if it says."""
        with contextlib.suppress(TypeError, ValueError):  # a count Scale did not send
            count = int(self.task_count(record))
            label = f"delivery {record.get('name') or record['id']!r}"
            for child in self.child_streams:
                self.progress.announce(child.name, child_context, count, label)


class DeliveriesStream(DeliveryListStream):
    """Deliveries of the selected projects, from ``GET /v2/deliveries`` (one page per project)."""

    name = "deliveries"
    path = "/deliveries"
    partition_key = "project"
    id_fields = ("project",)
    target_settings = ("delivery_ids", "delivery_names")
    schema = DELIVERY.to_dict()

    @override
    @property
    def partitions(self) -> list[dict[str, t.Any]]:
        return [{"project": project_id} for project_id in self.selection.project_ids]

    @override
    def wanted(self) -> frozenset[str] | None:
        return self.selection.delivery_ids


class DeliveryTasksStream(DeliveredTasksStream, TaskRecordsStream):
    """The full tasks of each new delivery, from ``GET /v2/delivery`` (paginated)."""

    name = "delivery_tasks"
    path = "/delivery"
    parent_stream_type = DeliveriesStream
    schema = DELIVERY_TASK.to_dict()

    @override
    def get_url_params(
        self,
        context: Context | None,
        next_page_token: str | None,
    ) -> dict[str, t.Any]:
        assert context is not None  # noqa: S101  # always read per delivery
        return {"delivery_id": context["delivery"], **self.task_params(next_page_token)}
