"""tap-scale's streams, by domain: tasks, projects, deliveries, responses, datasets, task rows."""

from tap_scale.streams.datasets import DatasetDeliveriesStream, DatasetsStream, DatasetTasksStream
from tap_scale.streams.deliveries import DeliveriesStream, DeliveryTasksStream
from tap_scale.streams.projects import BatchesStream, ProjectsStream
from tap_scale.streams.responses import ResponseSchemasStream, TaskResponsesStream
from tap_scale.streams.task_rows import TASK_ROWS_STREAMS
from tap_scale.streams.tasks import TasksStream

__all__ = [
    "TASK_ROWS_STREAMS",
    "BatchesStream",
    "DatasetDeliveriesStream",
    "DatasetTasksStream",
    "DatasetsStream",
    "DeliveriesStream",
    "DeliveryTasksStream",
    "ProjectsStream",
    "ResponseSchemasStream",
    "TaskResponsesStream",
    "TasksStream",
]
