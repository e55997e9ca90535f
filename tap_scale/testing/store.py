"""The in-memory store: records by id and by name, and the keyset indexes listings page through.

Server threads read while tests change the world, so every read of an index or a lookup that
must be consistent with one happens under `lock`. Records are immutable: a change replaces one.
The indexes of tasks (a project's, a delivery's) follow the store's `order`
(`tap_scale.testing.orders`); every other index is shuffled.
"""

from __future__ import annotations

import threading
import typing as t
from collections import defaultdict

from tap_scale.testing.orders import DEFAULT_ORDER, task_order
from tap_scale.testing.pagination import SortedIndex

if t.TYPE_CHECKING:
    from collections.abc import Iterable

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


class Store:
    """Every record of one simulated Scale account, with the indexes its listings use."""

    def __init__(self, order: str = DEFAULT_ORDER) -> None:
        """An empty account whose listings of tasks follow this order (one of `ORDERS`)."""
        # Re-entrant, so a change can call lookups that take the lock themselves.
        self.lock = threading.RLock()
        self.order = order
        self.projects: dict[str, ProjectRecord] = {}
        self.project_ids_by_name: dict[str, str] = {}
        self.batches: dict[str, BatchRecord] = {}
        self.batch_ids_by_name: dict[str, str] = {}
        self.batches_of_project: dict[str, SortedIndex] = defaultdict(SortedIndex)
        self.tasks: dict[str, TaskRecord] = {}
        # A task's key in listings, from its stored record: index a task once it is stored.
        self.task_key = task_order(order, self.tasks, self.batches)
        self.tasks_of_project: dict[str, SortedIndex] = defaultdict(self.task_index)
        self.deliveries: dict[str, DeliveryRecord] = {}
        self.tasks_of_delivery: dict[str, SortedIndex] = {}
        # task id -> the deliveries that delivered it, oldest first (a task may be re-delivered)
        self.deliveries_of_task: dict[str, list[str]] = defaultdict(list)
        self.response_schemas: dict[str, ResponseSchemaRecord] = {}
        self.datasets: dict[str, DatasetRecord] = {}
        self.dataset_deliveries: dict[str, DatasetDeliveryRecord] = {}
        self.dataset_tasks: dict[str, DatasetTaskRecord] = {}
        self.tasks_of_dataset: dict[str, SortedIndex] = defaultdict(SortedIndex)
        self.tasks_of_dataset_delivery: dict[str, SortedIndex] = {}
        # Tasks whose metadata is served nested this many levels deep (`nested_metadata`).
        self.nested_metadata: dict[str, int] = {}

    def add_project(self, project: ProjectRecord, batches: Iterable[BatchRecord]) -> None:
        """Add a project with its batches."""
        batches = list(batches)
        with self.lock:
            self.projects[project.project_id] = project
            self.project_ids_by_name[project.name] = project.project_id
            for batch in batches:
                self.batches[batch.batch_id] = batch
                self.batch_ids_by_name[batch.name] = batch.batch_id
            self.batches_of_project[project.project_id] = SortedIndex(b.batch_id for b in batches)

    def add_tasks(self, tasks: Iterable[TaskRecord]) -> None:
        """Add new tasks, each landing where its key falls in its project's listing."""
        tasks = list(tasks)
        with self.lock:
            by_project: dict[str, list[str]] = defaultdict(list)
            for task in tasks:
                self.tasks[task.task_id] = task
                by_project[task.project_id].append(task.task_id)
            for project_id, task_ids in by_project.items():
                index = self.tasks_of_project[project_id]
                if len(index) == 0:
                    # Bulk generation: one sort instead of one insertion per task.
                    self.tasks_of_project[project_id] = self.task_index(task_ids)
                else:
                    for task_id in task_ids:
                        index.insert(task_id)

    def task_index(self, task_ids: Iterable[str] = ()) -> SortedIndex:
        """A listing of these stored tasks, in the store's order."""
        return SortedIndex(task_ids, self.task_key)

    def replace_task(self, task: TaskRecord) -> None:
        """Store the new state of an existing task (its place in listings does not change)."""
        with self.lock:
            self.tasks[task.task_id] = task

    def add_delivery(self, delivery: DeliveryRecord) -> None:
        """Add a delivery of a project's tasks."""
        with self.lock:
            self.deliveries[delivery.delivery_id] = delivery
            self.tasks_of_delivery[delivery.delivery_id] = self.task_index(delivery.task_ids)
            for task_id in delivery.task_ids:
                self.deliveries_of_task[task_id].append(delivery.delivery_id)

    def add_response_schema(self, schema: ResponseSchemaRecord) -> None:
        """Add the schema some deliveries' responses follow."""
        with self.lock:
            self.response_schemas[schema.schema_id] = schema

    def add_dataset(
        self,
        dataset: DatasetRecord,
        deliveries: Iterable[DatasetDeliveryRecord],
        tasks: Iterable[DatasetTaskRecord],
    ) -> None:
        """Add a dataset with its deliveries and their tasks."""
        deliveries, tasks = list(deliveries), list(tasks)
        with self.lock:
            self.datasets[dataset.dataset_id] = dataset
            for delivery in deliveries:
                self.dataset_deliveries[delivery.delivery_id] = delivery
                self.tasks_of_dataset_delivery[delivery.delivery_id] = SortedIndex(
                    delivery.task_ids
                )
            for task in tasks:
                self.dataset_tasks[task.task_id] = task
            self.tasks_of_dataset[dataset.dataset_id] = SortedIndex(task.task_id for task in tasks)

    def project_named(self, name: str) -> ProjectRecord | None:
        """The project with this name, if any."""
        with self.lock:
            project_id = self.project_ids_by_name.get(name)
            return None if project_id is None else self.projects[project_id]

    def batch_named(self, name: str) -> BatchRecord | None:
        """The batch with this name, if any."""
        with self.lock:
            batch_id = self.batch_ids_by_name.get(name)
            return None if batch_id is None else self.batches[batch_id]

    def deliveries_of(self, project_id: str | None = None) -> list[DeliveryRecord]:
        """A project's deliveries (every delivery when None), oldest first."""
        with self.lock:
            deliveries = [d for d in self.deliveries.values() if project_id in {None, d.project_id}]
        return sorted(deliveries, key=lambda delivery: delivery.delivered_at)
