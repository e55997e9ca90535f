"""tap-scale: the settings it takes and the streams it offers."""

from __future__ import annotations

import sys
import typing as t
from functools import cached_property

import requests
from singer_sdk import Tap
from singer_sdk import typing as th
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError

from tap_scale import streams
from tap_scale.client import DEFAULT_API_URL, ScaleStream
from tap_scale.models import TASK_STATUSES
from tap_scale.selection import Selection

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from singer_sdk.streams import Stream

OPTS = ("annotation_details", "attachment_details", "model_parameters", "submissions")


def _strings(name: str, description: str) -> th.Property[list[str]]:
    return th.Property(name, th.ArrayType(th.StringType), description=description)


class TapScale(Tap):
    """Singer tap for Scale AI's v2 data API."""

    name = "tap-scale"

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_key",
            th.StringType(min_length=1),
            required=True,
            secret=True,
            description="Scale API key (live_... or test_...), sent as a Bearer token.",
        ),
        th.Property(
            "api_url",
            th.StringType,
            default=DEFAULT_API_URL,
            description="Base URL of Scale's v2 API. Change it only to point at a simulator.",
        ),
        _strings(
            "project_ids",
            "Projects to sync, by id. With neither project_ids nor project_names, every project "
            "the API key can see is synced.",
        ),
        _strings("project_names", "Projects to sync, by name (resolved to ids as a sync starts)."),
        _strings("batch_ids", "Sync the tasks of these batches (by id) instead of whole projects."),
        _strings("batch_names", "Sync the tasks of these batches (by name) instead of projects."),
        _strings(
            "delivery_ids",
            "Sync exactly these deliveries (deliveries and delivery_tasks), by id.",
        ),
        _strings(
            "delivery_names",
            "Sync exactly these deliveries, by name, looked up within the configured projects.",
        ),
        _strings("dataset_ids", "Datasets to sync (default: every dataset the key can see)."),
        _strings("dataset_delivery_ids", "Sync exactly these dataset deliveries, by id."),
        th.Property(
            "task_statuses",
            th.ArrayType(th.StringType(allowed_values=list(TASK_STATUSES))),
            default=["completed"],
            description="Task statuses to sync. Completed tasks are read incrementally on "
            "completed_at; the others carry no completed_at and are read in full on every run.",
        ),
        th.Property(
            "start_date",
            th.DateTimeType,
            description="Earliest completed_at (tasks) or delivered_at (deliveries) to sync on a "
            "first run (ISO 8601). Without it, a first run reads everything.",
        ),
        th.Property(
            "lookback_minutes",
            th.IntegerType(minimum=0),
            default=5,
            description="Minutes re-read behind each bookmark, to catch tasks whose completion "
            "reaches the API late. Re-read tasks are emitted again; targets upsert them.",
        ),
        th.Property(
            "page_size",
            th.IntegerType(minimum=1, maximum=100),
            default=100,
            description="Tasks per request (Scale's `limit`, 1 to 100).",
        ),
        th.Property(
            "opts",
            th.ArrayType(th.StringType(allowed_values=list(OPTS))),
            default=list(OPTS),
            description="Optional task properties Scale includes: annotation_details, "
            "attachment_details, model_parameters, submissions. All by default.",
        ),
    ).to_dict()

    @override
    def discover_streams(self) -> list[Stream]:
        return [
            streams.ProjectsStream(self),
            streams.BatchesStream(self),
            streams.TasksStream(self),
            streams.DeliveriesStream(self),
            streams.DeliveryTasksStream(self),
            streams.DatasetsStream(self),
            streams.DatasetDeliveriesStream(self),
            streams.DatasetTasksStream(self),
        ]

    @cached_property
    def selection(self) -> Selection:
        """What this sync covers, resolved once and shared by every stream."""
        # Any stream can make the lookups: they all share the config, the client and retries.
        client = t.cast("ScaleStream", self.streams["projects"])
        return Selection(self.config, client.fetch)

    @override
    @classmethod
    def invoke(cls, **kwargs: t.Any) -> None:
        """Run the CLI; a failure the user can act on ends as one clear paragraph and exit 1."""
        try:
            super().invoke(**kwargs)
        except FatalAPIError as error:
            cls.logger.error("tap-scale stopped: %s", error)  # noqa: TRY400 - the message is the point
            sys.exit(1)
        except RetriableAPIError as error:
            cls.logger.error(  # noqa: TRY400
                "tap-scale stopped after retrying: %s. Scale or the network kept failing; "
                "run the sync again later (it resumes from the last state).",
                error,
            )
            sys.exit(1)
        except requests.RequestException as error:
            cls.logger.error(  # noqa: TRY400
                "tap-scale could not reach Scale: %s. Check the `api_url` setting and the "
                "network; run the sync again (it resumes from the last state).",
                type(error).__name__,
            )
            sys.exit(1)
