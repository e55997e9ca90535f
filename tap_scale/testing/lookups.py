"""Finding the object a request names, or a 404 whose message names what was not found."""

from __future__ import annotations

import typing as t

from tap_scale.testing.params import bad_request, not_found

if t.TYPE_CHECKING:
    from tap_scale.testing.pagination import SortedIndex
    from tap_scale.testing.params import Query
    from tap_scale.testing.records import (
        BatchRecord,
        DatasetDeliveryRecord,
        DatasetRecord,
        DeliveryRecord,
        ProjectRecord,
        ResponseSchemaRecord,
        TaskRecord,
    )
    from tap_scale.testing.store import Store

Named = tuple[str, str]  # (parameter, value), e.g. ("project_name", "SFT Conversations")


class Lookups:
    """Lookups in one store by the identifying parameters Scale's endpoints take."""

    def __init__(self, store: Store) -> None:
        """Look up in this store."""
        self._store = store

    def project(self, named: Named) -> ProjectRecord:
        """The project named by `project_id` or `project_name`."""
        parameter, value = named
        if parameter == "project_name":
            project = self._store.project_named(value)
        else:
            project = self._store.projects.get(value)
        if project is None:
            message = f"Project not found: no project with {parameter} {value!r}."
            raise not_found(message)
        return project

    def batch(self, named: Named) -> BatchRecord:
        """The batch named by `batch_id` or `batch_name`."""
        parameter, value = named
        if parameter == "batch_name":
            batch = self._store.batch_named(value)
        else:
            batch = self._store.batches.get(value)
        if batch is None:
            message = f"Batch not found: no batch with {parameter} {value!r}."
            raise not_found(message)
        return batch

    def task_scope(self, named: Named) -> tuple[str, str | None]:
        """The project whose tasks to list, and the batch to keep them to, if any."""
        if named[0] in {"project_id", "project_name"}:
            return self.project(named).project_id, None
        batch = self.batch(named)
        return batch.project_id, batch.batch_id

    def task(self, task_id: str) -> TaskRecord:
        """The task with this id."""
        task = self._store.tasks.get(task_id)
        if task is None:
            message = f"Task not found: no task with task_id {task_id!r}."
            raise not_found(message)
        return task

    def delivery(self, query: Query) -> DeliveryRecord:
        """The delivery a `/v2/delivery` request names: by id, or by name within a project."""
        parameter, value = query.one_of("delivery_id", "delivery_name")
        project_named = query.at_most_one_of("project_id", "project_name")
        if parameter == "delivery_id":
            if project_named is not None:
                message = (
                    f"Invalid {project_named[0]}: a project identifies a delivery only with "
                    "delivery_name; delivery_id alone is enough."
                )
                raise bad_request(message)
            delivery = self._store.deliveries.get(value)
            if delivery is None:
                message = f"Delivery not found: no delivery with delivery_id {value!r}."
                raise not_found(message)
            return delivery
        if project_named is None:
            message = "Missing parameter: delivery_name needs project_id or project_name."
            raise bad_request(message)
        project = self.project(project_named)
        for delivery in self._store.deliveries_of(project.project_id):
            if delivery.name == value:
                return delivery
        message = f"Delivery not found: project {project.name!r} has no delivery named {value!r}."
        raise not_found(message)

    def delivery_by_id(self, delivery_id: str) -> DeliveryRecord:
        """The delivery with this id."""
        delivery = self._store.deliveries.get(delivery_id)
        if delivery is None:
            message = f"Delivery not found: no delivery with delivery_id {delivery_id!r}."
            raise not_found(message)
        return delivery

    def response_schema(self, schema_id: str) -> ResponseSchemaRecord:
        """The delivery JSON schema with this id."""
        schema = self._store.response_schemas.get(schema_id)
        if schema is None:
            message = f"Schema not found: no delivery JSON schema with schema_id {schema_id!r}."
            raise not_found(message)
        return schema

    def dataset(self, dataset_id: str) -> DatasetRecord:
        """The dataset with this id."""
        dataset = self._store.datasets.get(dataset_id)
        if dataset is None:
            message = f"Dataset not found: no dataset with dataset_id {dataset_id!r}."
            raise not_found(message)
        return dataset

    def dataset_delivery(self, delivery_id: str) -> DatasetDeliveryRecord:
        """The dataset delivery with this id."""
        delivery = self._store.dataset_deliveries.get(delivery_id)
        if delivery is None:
            message = f"Delivery not found: no dataset delivery with delivery_id {delivery_id!r}."
            raise not_found(message)
        return delivery

    def dataset_task_index(self, named: Named) -> SortedIndex:
        """The listing of a dataset's tasks (`dataset_id`) or a dataset delivery's."""
        parameter, value = named
        if parameter == "dataset_id":
            return self._store.tasks_of_dataset[self.dataset(value).dataset_id]
        return self._store.tasks_of_dataset_delivery[self.dataset_delivery(value).delivery_id]
