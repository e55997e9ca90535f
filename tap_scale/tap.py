"""tap-scale: the settings it takes and the streams it offers."""

from __future__ import annotations

import gc
import sys
import typing as t
from functools import cached_property
from urllib.parse import urlparse

import requests
from singer_sdk import Tap
from singer_sdk import typing as th
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.exceptions import ConfigValidationError, FatalAPIError, RetriableAPIError

from tap_scale import streams
from tap_scale.client import (
    DEFAULT_API_URL,
    DEFAULT_MAX_TRIES,
    DEFAULT_REQUEST_TIMEOUT,
    ScaleStream,
)
from tap_scale.models import TASK_STATUSES, parse_timestamp
from tap_scale.selection import Selection
from tap_scale.streams.tasks import DEFAULT_MAX_CONCURRENCY

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from singer_sdk.streams import Stream

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

OPTS = ("annotation_details", "attachment_details", "model_parameters", "submissions")


def _strings(name: str, description: str) -> th.Property[list[str]]:
    return th.Property(name, th.ArrayType(th.StringType), description=description)


def settings_errors(config: t.Mapping[str, t.Any]) -> list[str]:
    """What is wrong with settings that pass their JSON Schema: one sentence for each."""
    errors = []
    api_key = str(config.get("api_key", ""))
    # A key pasted with a newline or a space would be refused by the HTTP library with the key
    # in its message; say so without echoing it.
    if api_key != api_key.strip() or not api_key.isprintable() or not api_key.isascii():
        errors.append(
            "api_key has leading or trailing whitespace, or characters that cannot be sent in "
            "an HTTP header; paste the key again exactly as Scale's dashboard shows it."
        )
    api_url = urlparse(str(config.get("api_url", DEFAULT_API_URL)))
    # The key travels in a header: over plain HTTP anyone on the path could read it.
    if api_url.scheme != "https" and not (
        api_url.scheme == "http" and api_url.hostname in LOCAL_HOSTS
    ):
        errors.append(
            f"api_url {api_url.geturl()!r} must be an https:// URL (plain http:// is accepted "
            "only for localhost, e.g. a simulator): the API key would otherwise travel readable."
        )
    if start_date := config.get("start_date"):
        try:
            parse_timestamp(str(start_date))
        except ValueError:
            errors.append(
                f"start_date {start_date!r} is not an ISO 8601 timestamp; "
                "write it like 2025-01-31T00:00:00Z."
            )
    return errors


class TapScale(Tap):
    """Singer tap for Scale AI's v2 data API."""

    name = "tap-scale"
    # The SDK's msgspec writer encodes Singer messages several times faster than json.
    message_writer_class = MsgSpecWriter

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
            "Sync exactly these deliveries (deliveries, delivery_tasks, task_responses), by id.",
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
            "max_tries",
            th.IntegerType(minimum=1),
            default=DEFAULT_MAX_TRIES,
            description="Tries per request before giving up on 429s, 5xx, dropped connections, "
            "timeouts and unreadable bodies. Waits honour Retry-After, else back off "
            "exponentially (with jitter, at most a minute).",
        ),
        th.Property(
            "request_timeout",
            th.IntegerType(minimum=1),
            default=DEFAULT_REQUEST_TIMEOUT,
            description="Seconds to wait for Scale to answer a request before trying again.",
        ),
        th.Property(
            "max_concurrency",
            th.IntegerType(minimum=1, maximum=8),
            default=DEFAULT_MAX_CONCURRENCY,
            description="Task partitions (project or batch, status) read at once, their records "
            "emitted interleaved page by page. Each partition's records keep their order and "
            "state.",
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
    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Load and check the settings; what JSON Schema cannot say is checked here."""
        super().__init__(*args, **kwargs)
        if kwargs.get("validate_config", True) and (errors := settings_errors(self.config)):
            summary = "Config validation failed"
            raise ConfigValidationError(summary, errors=errors)

    @override
    def discover_streams(self) -> list[Stream]:
        return [
            streams.ProjectsStream(self),
            streams.BatchesStream(self),
            streams.TasksStream(self),
            streams.DeliveriesStream(self),
            streams.DeliveryTasksStream(self),
            streams.TaskResponsesStream(self),
            streams.ResponseSchemasStream(self),
            streams.DatasetsStream(self),
            streams.DatasetDeliveriesStream(self),
            streams.DatasetTasksStream(self),
            *(stream_type(self) for stream_type in streams.TASK_ROWS_STREAMS),
        ]

    @cached_property
    def selection(self) -> Selection:
        """What this sync covers, resolved once and shared by every stream."""
        # Any stream can make the lookups: they all share the config, the client and retries.
        client = t.cast("ScaleStream", self.streams["projects"])
        selection = Selection(self.config, client.fetch)
        # Resolve at once every part a selected stream needs, whichever stream asks first: a
        # typo in any name then stops the sync before its first record.
        selected = {
            name
            for name, stream in self.streams.items()
            if stream.selected or stream.has_selected_descendents
        }
        delivered = {"deliveries", "delivery_tasks", "task_responses", "response_schemas"}
        if selected & {"projects", "batches", "tasks", *delivered}:
            _ = selection.projects
        if "tasks" in selected:
            _ = selection.task_sources
        if selected & delivered:
            _ = selection.delivery_ids
        if selected & {"datasets", "dataset_deliveries", "dataset_tasks"}:
            _ = selection.datasets, selection.dataset_delivery_ids
        return selection

    @override
    @classmethod
    def invoke(cls, **kwargs: t.Any) -> None:
        """Run the CLI; a failure the user can act on ends as one clear paragraph and exit 1."""
        # Each page of tasks is thousands of new dicts and lists, freed by reference counting
        # and never in cycles, yet CPython's cycle collector scanned them after every 700
        # allocations: a quarter of a sync's CPU. It now runs after 50,000 (cycles, which
        # requests and urllib3 do make, are still collected).
        gc.set_threshold(50_000, 20, 10)
        try:
            super().invoke(**kwargs)
        except FatalAPIError as error:
            cls.logger.error("tap-scale stopped: %s", error)  # noqa: TRY400 - the message is the point
            sys.exit(1)
        except RetriableAPIError as error:
            cls.logger.error(  # noqa: TRY400
                "tap-scale stopped: %s. It kept failing through every try (the `max_tries` "
                "setting); run the sync again later, it resumes from the last state.",
                error,
            )
            sys.exit(1)
        except requests.RequestException as error:
            request = error.request
            endpoint = f"{request.method} {urlparse(str(request.url)).path}" if request else "Scale"
            cls.logger.error(  # noqa: TRY400
                "tap-scale stopped: %s failed through every try (the `max_tries` setting) with "
                "%s. Check the `api_url` setting and the network, then run the sync again; it "
                "resumes from the last state.",
                endpoint,
                type(error).__name__,
            )
            sys.exit(1)
