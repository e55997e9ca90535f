"""tap-scale: the settings it takes and the streams it offers."""

from __future__ import annotations

import contextlib
import sys
import typing as t
from functools import cached_property

from singer_sdk import typing as th

from tap_scale import memory, redaction, settings, stops, streams
from tap_scale.answers import ServerClock
from tap_scale.checked_tap import CheckedTap
from tap_scale.client import (
    DEFAULT_API_URL,
    DEFAULT_MAX_RETRY_WAIT,
    DEFAULT_MAX_TRIES,
    DEFAULT_REQUEST_TIMEOUT,
    ScaleStream,
)
from tap_scale.inputs import InputError
from tap_scale.models import TASK_STATUSES
from tap_scale.progress import DEFAULT_INTERVAL, SyncProgress
from tap_scale.reading.throttle import Throttle
from tap_scale.selection import Selection
from tap_scale.streams.tasks import DEFAULT_MAX_CONCURRENCY

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    import click
    from singer_sdk.streams import Stream

# The ranges of numeric settings: beyond them a value is a typo, and some (a lookback of 2e9
# minutes, a timeout of 1e12 seconds) would overflow the tap's own arithmetic.
MAX_LOOKBACK_MINUTES = 525_600  # a year
MAX_TRIES = 100
MAX_REQUEST_TIMEOUT = 3_600
MAX_PROGRESS_INTERVAL = 86_400

OPTS = ("annotation_details", "attachment_details", "model_parameters", "submissions")


def _strings(name: str, description: str) -> th.Property[list[str]]:
    return th.Property(name, th.ArrayType(th.StringType), description=description)


#: The streams, in the order the tap lists them.
STREAM_TYPES: tuple[type[Stream], ...] = (
    streams.ProjectsStream,
    streams.BatchesStream,
    streams.TasksStream,
    streams.DeliveriesStream,
    streams.DeliveryTasksStream,
    streams.TaskResponsesStream,
    streams.ResponseSchemasStream,
    streams.DatasetsStream,
    streams.DatasetDeliveriesStream,
    streams.DatasetTasksStream,
    *streams.TASK_ROWS_STREAMS,
)


class TapScale(CheckedTap):
    """Singer tap for Scale AI's v2 data API.

    Streams: projects, batches, tasks, deliveries, delivery_tasks, task_responses,
    response_schemas, datasets, dataset_deliveries, dataset_tasks, and the rows of tasks and of
    delivered tasks: task_messages, task_annotations, task_preferences, delivery_task_messages,
    delivery_task_annotations, delivery_task_preferences.
    """

    name = "tap-scale"
    # The SDK's msgspec writer encodes Singer messages several times faster than json; this one
    # also masks secrets and stops cleanly on signals and a closed stdout.
    message_writer_class = stops.ScaleMessageWriter

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
            "first run: an ISO 8601 timestamp, or a date (midnight UTC). Without it, a first run "
            "reads everything.",
        ),
        th.Property(
            "lookback_minutes",
            th.IntegerType(minimum=0, maximum=MAX_LOOKBACK_MINUTES),
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
            th.IntegerType(minimum=1, maximum=MAX_TRIES),
            default=DEFAULT_MAX_TRIES,
            description="Tries per request before giving up on 429s, 5xx, dropped connections, "
            "timeouts and unreadable bodies. Waits honour Retry-After (up to max_retry_wait), "
            "else back off exponentially (with jitter, at most a minute).",
        ),
        th.Property(
            "request_timeout",
            th.IntegerType(minimum=1, maximum=MAX_REQUEST_TIMEOUT),
            default=DEFAULT_REQUEST_TIMEOUT,
            description="Seconds Scale has to answer a request, body included, before it is "
            "tried again.",
        ),
        th.Property(
            "max_retry_wait",
            th.IntegerType(minimum=0, maximum=86_400),
            default=DEFAULT_MAX_RETRY_WAIT,
            description="The longest wait between two tries of a request, in seconds, whatever "
            "Scale's Retry-After asks for.",
        ),
        th.Property(
            "max_concurrency",
            th.IntegerType(minimum=1, maximum=8),
            default=DEFAULT_MAX_CONCURRENCY,
            description="Chains of task pages read at once: time windows of one big project, "
            "or of several partitions (project or batch, status), their records emitted "
            "interleaved page by page, each partition keeping its state. Fewer while Scale "
            "answers 429.",
        ),
        th.Property(
            "opts",
            th.ArrayType(th.StringType(allowed_values=list(OPTS))),
            default=list(OPTS),
            description="Optional task properties Scale includes: annotation_details, "
            "attachment_details, model_parameters, submissions. All by default.",
        ),
        th.Property(
            "progress_interval",
            th.IntegerType(minimum=0, maximum=MAX_PROGRESS_INTERVAL),
            default=DEFAULT_INTERVAL,
            description="Seconds between a stream's progress lines in the log (records so far, "
            "rate, and for deliveries the share read and the time left); 0 for none.",
        ),
    ).to_dict()

    @override
    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Load and check the settings, the catalog and the state (see `CheckedTap`)."""
        redaction.install()
        try:
            super().__init__(*args, **kwargs)
        finally:
            # Before anything can quote a setting: a validation error quotes the values it
            # refuses. (No config at all when reading the files failed.)
            with contextlib.suppress(AttributeError):
                redaction.register_settings(self.config, self.config_jsonschema)
        self.progress = SyncProgress(self.config.get("progress_interval", DEFAULT_INTERVAL))
        if isinstance(self.message_writer, stops.ScaleMessageWriter):
            # Rows a second process writes are counted once written: all before the summary.
            self.progress.before_summary = self.message_writer.drain_rows

    @override
    def _setup_signal_handlers(self) -> None:
        """tap-scale's stops instead of the SDK's, which exit 0 (the SDK's hook for this)."""
        stops.handle_signals(self)

    @override
    def run_discovery(self) -> str:
        """Write the catalog to stdout; an output that cannot take it stops as a sync's does."""
        catalog_text = self.catalog_json_text
        stops.write_stdout(catalog_text + "\n")
        return catalog_text

    @override
    def discover_streams(self) -> list[Stream]:
        return [stream_type(self) for stream_type in STREAM_TYPES]

    @override
    @classmethod
    def own_schemas(cls) -> Iterable[Mapping[str, t.Any]]:
        # Each stream class sets `schema` as a plain dict, over the SDK's property.
        return [t.cast("Mapping[str, t.Any]", stream_type.schema) for stream_type in STREAM_TYPES]

    @cached_property
    def throttle(self) -> Throttle:
        """The slots of requests in flight, fewer while Scale answers 429 (`reading.throttle`)."""
        return Throttle(self.config.get("max_concurrency", DEFAULT_MAX_CONCURRENCY), self.logger)

    @cached_property
    def server_clock(self) -> ServerClock:
        """Scale's clock, read from its responses, which every stream's bounds are taken from."""
        return ServerClock(self.logger)

    @cached_property
    def selection(self) -> Selection:
        """What this sync covers, resolved once and shared by every stream."""
        # Before the first request: a mistyped host would otherwise be retried for minutes, as
        # any connection failure is, before the same error.
        api_url = str(self.config.get("api_url", DEFAULT_API_URL))
        if unresolvable := settings.unresolvable_host(api_url):
            msg = "The `api_url` setting cannot be used"
            host, reason = unresolvable
            problem = f"its host name {host!r} does not resolve ({reason})"
            advice = (
                f"Check it for a typo (Scale's API is at {DEFAULT_API_URL}) and this machine's "
                "DNS settings, then run the sync again; nothing was synced."
            )
            raise InputError(msg, [problem], advice)
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
        if "tasks" in selected:
            # In flight while the lookups below are (`tap_scale.first_pages`).
            t.cast("streams.TasksStream", self.streams["tasks"]).ask_first_pages()
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
        memory.tune()  # before any reader thread starts
        stops.run(lambda: super(TapScale, cls).invoke(**kwargs), cls.logger)

    @override
    @classmethod
    def cb_test(cls, ctx: click.Context, param: click.Option, value: str) -> None:
        """Run `--test`, stopping as a sync stops: the SDK runs it in this callback, not invoke."""
        stops.run(lambda: super(TapScale, cls).cb_test(ctx, param, value), cls.logger)
