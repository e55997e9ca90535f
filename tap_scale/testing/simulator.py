"""`ScaleSimulator`: a simulated Scale account served over HTTP, its truth, and its controls."""

from __future__ import annotations

import collections
import dataclasses
import secrets
import threading
import time
import typing as t
from collections import deque
from datetime import datetime, timedelta, timezone

from tap_scale.testing.api import (
    UNAUTHORIZED,
    ScaleApi,
    authorized,
    error_reply,
    json_reply,
    redact,
)
from tap_scale.testing.data import World
from tap_scale.testing.faults import Faults
from tap_scale.testing.orders import DEFAULT_ORDER
from tap_scale.testing.prerender import STATS_PATH, PrerenderedApi, TaskQuery
from tap_scale.testing.render import ALL_OPTS, Renderer, nest_markers
from tap_scale.testing.server import Outcome, SimulatorHTTPServer, respond_with_faults

if t.TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

    from typing_extensions import Self

    from tap_scale.testing.records import TaskRecord

JsonObject = dict[str, t.Any]

# Looks like a Scale test key (`test_...`), so it can never be mistaken for a live one.
DEFAULT_API_KEY = "test_simulator_key"
REQUEST_LOG_LIMIT = 100_000


class ScaleSimulator:
    """A local, faithful implementation of Scale's v2 read API over a generated account.

    Use it as a context manager (or call `start` and `stop`); point a client at `url` with
    `api_key`. The world is generated from `seed`, so the same arguments give the same tasks.
    The methods named after objects (`projects`, `tasks`, ...) return the truth, rendered as the
    API renders it, for tests to compare against; `add_tasks`, `complete_tasks` and `deliver`
    change the world between runs; `faults` switches failures on; `requests` logs what was asked.

    With `prerendered=True` it answers `GET /v2/tasks` from pages rendered once and kept as
    bytes (`tap_scale.testing.prerender` says which requests), for benchmarks: call
    `prerender_tasks` before measuring, and read `serving_stats` (or `GET /_simulator/stats`).

    `order` is the order listings of tasks follow, in both modes: `shuffled` (the default),
    `newest-first`, `oldest-first` or `by-batch` (`tap_scale.testing.orders`). With
    `labelled_over_days`, each project's tasks are created over that many days and each is
    completed hours to two days after its creation; by default (None) they are created over a
    couple of days and completed within three days unrelated to their creation
    (`tap_scale.testing.data`).
    """

    def __init__(  # noqa: PLR0913 - every knob is keyword-only and has a default
        self,
        *,
        seed: int = 0,
        projects: int = 3,
        batches_per_project: int = 2,
        tasks_per_project: int = 60,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        prerendered: bool = False,
        order: str = DEFAULT_ORDER,
        labelled_over_days: int | None = None,
    ) -> None:
        """Generate the world; nothing is served until `start`.

        Raises:
            ValueError: for an order not in `ORDERS`, or `labelled_over_days` below 1.
        """
        self.api_key = api_key
        self.faults = Faults()
        self._world = World(
            seed=seed,
            projects=projects,
            batches_per_project=batches_per_project,
            tasks_per_project=tasks_per_project,
            order=order,
            labelled_over_days=labelled_over_days,
        )
        self._store = self._world.store
        self._render = Renderer(self._store)
        # A fresh secret per instance: tokens are opaque and useless against another simulator.
        secret = secrets.token_bytes(32)
        self._prerendered = PrerenderedApi(self._store, api_key, secret) if prerendered else None
        self._api = self._prerendered or ScaleApi(self._store, api_key, secret)
        self._address = (host, port)
        self._server: SimulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._log: deque[JsonObject] = deque(maxlen=REQUEST_LOG_LIMIT)
        self._log_lock = threading.Lock()
        # Every answer's status, however long the run (the log keeps only the latest).
        self._statuses: collections.Counter[str] = collections.Counter()

    @property
    def order(self) -> str:
        """The order listings of tasks follow (one of `tap_scale.testing.orders.ORDERS`)."""
        return self._store.order

    # Serving

    @property
    def url(self) -> str:
        """The base URL including `/v2`, e.g. `http://127.0.0.1:41234/v2`."""
        if self._server is None:
            message = "the simulator is not serving; call start() first"
            raise RuntimeError(message)
        host, port = self._server.server_address[:2]
        host_text = host.decode() if isinstance(host, bytes) else host
        if ":" in host_text:
            host_text = f"[{host_text}]"
        return f"http://{host_text}:{port}/v2"

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is None:
            self._server = SimulatorHTTPServer(
                self._address, self._respond, lambda: time.time() + self.faults.clock_skew
            )
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="scale-simulator",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every connection."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        """Start serving."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop serving."""
        self.stop()

    def _respond(
        self, method: str, path: str, params: dict[str, list[str]], authorization: str | None
    ) -> Outcome:
        if path == STATS_PATH and self._prerendered is not None:
            # The benchmark's view of the server, apart from the API: no faults, no log entry.
            if not authorized(authorization, self.api_key):
                return Outcome(error_reply(401, UNAUTHORIZED))
            return Outcome(json_reply(200, self.serving_stats))
        outcome = respond_with_faults(self._api, self.faults, (method, path, params, authorization))
        if outcome.reply is not None and self._store.nested_metadata:
            reply = dataclasses.replace(outcome.reply, body=nest_markers(outcome.reply.body))
            outcome = dataclasses.replace(outcome, reply=reply)
        # The key travels in a header, which is never logged; one pasted into the URL is masked.
        entry = {
            "method": method,
            "path": redact(path, self.api_key),
            "params": {
                redact(name, self.api_key): [redact(value, self.api_key) for value in values]
                for name, values in params.items()
            },
            "status": 0 if outcome.reply is None else outcome.reply.status,
            "fault": outcome.fault,
        }
        with self._log_lock:
            self._log.append(entry)
            self._statuses[str(entry["status"])] += 1
        return outcome

    @property
    def requests(self) -> list[JsonObject]:
        """Handled requests, oldest first: method, path, params, status (0: none sent), fault.

        `fault` names the faults that struck the request, joined by "+" in the order they
        struck (e.g. "empty_page" or "type_drift+truncated_body"), or is None.
        """
        with self._log_lock:
            return list(self._log)

    def reset_log(self) -> None:
        """Forget the requests handled so far."""
        with self._log_lock:
            self._log.clear()

    # Pre-rendered serving

    def prerender_tasks(
        self,
        *,
        status: str | None = "completed",
        limit: int = 100,
        opts: Sequence[str] = ALL_OPTS,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Render now every page of every project's tasks listing; returns how many tasks.

        The listing is `GET /v2/tasks?project_id=...` with this `status`, `limit` and `opts`:
        by default exactly what tap-scale asks for with its default settings. `progress` is
        called after each page with the tasks rendered so far and the total.

        Raises:
            RuntimeError: if the simulator was not made with `prerendered=True`.
        """
        if self._prerendered is None:
            message = "prerender_tasks needs ScaleSimulator(prerendered=True)"
            raise RuntimeError(message)
        pages = self._prerendered.pages
        with self._store.lock:
            project_ids = list(self._store.projects)
        queries = [
            TaskQuery.of_project(project_id, status=status, limit=limit, opts=opts)
            for project_id in project_ids
        ]
        total = sum(len(pages.listing(query).task_ids) for query in queries)
        done = 0

        def rendered(tasks: int) -> None:
            nonlocal done
            done += tasks
            if progress is not None:
                progress(done, total)

        for query in queries:
            pages.prerender(query, rendered)
        return total

    @property
    def serving_stats(self) -> JsonObject:
        """A pre-rendered simulator's counters, and the CPU seconds its process has used.

        `cached` and `served` count the pre-rendered pages, tasks and body bytes held and
        sent; `api` counts requests the API answered itself, by path; `statuses` counts every
        answer by its status ("0": no answer, a dropped connection); `cpu_seconds` is the
        user and system time of the whole process, every thread included.

        Raises:
            RuntimeError: if the simulator was not made with `prerendered=True`.
        """
        if self._prerendered is None:
            message = "serving_stats needs ScaleSimulator(prerendered=True)"
            raise RuntimeError(message)
        with self._log_lock:
            statuses = dict(self._statuses)
        return {
            **self._prerendered.stats(),
            "statuses": statuses,
            "cpu_seconds": time.process_time(),
        }

    # Which objects the per-object faults hit

    def drifted(self, item_id: str) -> bool:
        """Whether the task or delivery with this id is served with drifted types.

        True when `faults.type_drift` hits it (given the current seed and share), on the paths
        the faults apply to; it is then drifted in every response holding it there.
        """
        return self.faults.strikes_item("type_drift", item_id)

    def grown(self, item_id: str) -> bool:
        """Whether the object with this id is served with the `new_fields` fault's new field.

        The id is a task's `task_id` (for a delivered task, `<task_id>/<delivery_id>`), or any
        other object's `id`.
        """
        return self.faults.strikes_item("new_fields", item_id)

    def surrogated(self, task_id: str) -> bool:
        """Whether the task with this id is served with a lone surrogate in its metadata.

        True when `faults.lone_surrogate` hits it (given the current seed and share), on the
        paths the faults apply to.
        """
        return self.faults.strikes_item("lone_surrogate", task_id)

    def latin1_hit(self, task_id: str) -> bool:
        """Whether the task with this id is served with a Latin-1 word in its first message.

        True when `faults.latin1_text` hits it (given the current seed and share), on the
        paths the faults apply to; a task without messages is left as it is.
        """
        return self.faults.strikes_item("latin1_text", task_id)

    def now(self) -> datetime:
        """The server's time: this machine's, moved by `faults.clock_skew`."""
        return datetime.now(timezone.utc) + timedelta(seconds=self.faults.clock_skew)

    def stripped(self, task_id: str) -> bool:
        """Whether the task with this id is served without its optional fields.

        True when `faults.missing_fields` hits it (given the current seed and share), on the
        paths the faults apply to; it then lacks them in every response holding it there.
        """
        return self.faults.strikes_item("missing_fields", task_id)

    # The truth, rendered as the API renders it

    @property
    def projects(self) -> list[JsonObject]:
        """Every Project."""
        with self._store.lock:
            projects = list(self._store.projects.values())
        return [self._render.project(project) for project in projects]

    def batches(self, project_id: str | None = None) -> list[JsonObject]:
        """Every Batch of a project (of every project when None), in listing order."""
        with self._store.lock:
            batches = [
                self._store.batches[batch_id]
                for project in self._project_ids(project_id)
                for batch_id in self._store.batches_of_project[project].ids()
            ]
        return [self._render.batch(batch) for batch in batches]

    def tasks(
        self,
        *,
        project_id: str | None = None,
        batch_id: str | None = None,
        status: str | None = None,
        opts: Sequence[str] = ALL_OPTS,
    ) -> list[JsonObject]:
        """Every matching Task, rendered as `GET /v2/tasks` renders it with `opts`, unexpanded."""
        if batch_id is not None and batch_id not in self._store.batches:
            message = f"unknown batch {batch_id!r}"
            raise ValueError(message)
        with self._store.lock:
            tasks = [
                self._store.tasks[task_id]
                for project in self._project_ids(project_id)
                for task_id in self._store.tasks_of_project[project].ids()
            ]
        return [
            self._render.task(task, opts=opts)
            for task in tasks
            if batch_id in {None, task.batch_id} and status in {None, task.status}
        ]

    def deliveries(self, project_id: str | None = None) -> list[JsonObject]:
        """Every Delivery of a project (of every project when None), oldest first."""
        self._project_ids(project_id)
        return [self._render.delivery(d) for d in self._store.deliveries_of(project_id)]

    def delivery_tasks(self, delivery_id: str, opts: Sequence[str] = ALL_OPTS) -> list[JsonObject]:
        """The Tasks of a delivery, as `GET /v2/delivery` renders them with `opts`."""
        with self._store.lock:
            index = self._store.tasks_of_delivery.get(delivery_id)
            if index is None:
                message = f"unknown delivery {delivery_id!r}"
                raise ValueError(message)
            tasks = [self._store.tasks[task_id] for task_id in index.ids()]
        return [self._render.task(task, opts=opts) for task in tasks]

    def task_responses(self, delivery_id: str) -> list[JsonObject]:
        """What a delivery delivered of each of its tasks, as `GET /v2/delivery/tasks` lists it."""
        with self._store.lock:
            delivery = self._store.deliveries.get(delivery_id)
            if delivery is None:
                message = f"unknown delivery {delivery_id!r}"
                raise ValueError(message)
            tasks = [self._store.tasks[task_id] for task_id in delivery.task_ids]
        return [self._render.delivered_task(task, delivery) for task in tasks]

    @property
    def response_schemas(self) -> list[JsonObject]:
        """Every delivery JSON schema, as `GET /v2/schema` renders it under `schema`."""
        with self._store.lock:
            schemas = list(self._store.response_schemas.values())
        return [self._render.response_schema(schema) for schema in schemas]

    @property
    def datasets(self) -> list[JsonObject]:
        """Every Dataset."""
        with self._store.lock:
            datasets = list(self._store.datasets.values())
        return [self._render.dataset(dataset) for dataset in datasets]

    def dataset_deliveries(self, dataset_id: str | None = None) -> list[JsonObject]:
        """Every DatasetDelivery of a dataset (of every dataset when None), oldest first."""
        if dataset_id is not None and dataset_id not in self._store.datasets:
            message = f"unknown dataset {dataset_id!r}"
            raise ValueError(message)
        with self._store.lock:
            deliveries = sorted(
                self._store.dataset_deliveries.values(), key=lambda delivery: delivery.delivered_at
            )
        return [
            self._render.dataset_delivery(delivery)
            for delivery in deliveries
            if dataset_id in {None, delivery.dataset_id}
        ]

    def dataset_tasks(self, delivery_id: str) -> list[JsonObject]:
        """The DatasetTasks of a dataset delivery, in listing order."""
        with self._store.lock:
            index = self._store.tasks_of_dataset_delivery.get(delivery_id)
            if index is None:
                message = f"unknown dataset delivery {delivery_id!r}"
                raise ValueError(message)
            tasks = [self._store.dataset_tasks[task_id] for task_id in index.ids()]
        return [self._render.dataset_task(task) for task in tasks]

    def _project_ids(self, project_id: str | None) -> list[str]:
        with self._store.lock:
            if project_id is None:
                return list(self._store.projects)
        if project_id not in self._store.projects:
            message = f"unknown project {project_id!r}"
            raise ValueError(message)
        return [project_id]

    # Changing the world between runs

    def add_tasks(
        self,
        project_id: str,
        count: int,
        *,
        status: str = "completed",
        completed_at: datetime | None = None,
        batch_id: str | None = None,
    ) -> list[JsonObject]:
        """Create `count` tasks in a project; returns them as the API renders them (every opt).

        Completed ones all get `completed_at` (an aware datetime, cut to milliseconds) or the
        server's now (`now()`): one instant, a tie. Without `batch_id` they join the project's
        newest batch, created within the hour before their completion (or now). Each lands where
        the simulator's `order` puts it in listings (a pseudo-random place when shuffled), so
        one added mid-pagination may come before the cursor and be missed by that pagination,
        as on a real keyset-paginated API.
        """
        if completed_at is None and self.faults.clock_skew:
            completed_at = self.now()
        tasks = self._world.add_tasks(
            project_id, count, status=status, completed_at=completed_at, batch_id=batch_id
        )
        self._world_changed()
        return self._rendered(tasks)

    def complete_tasks(
        self, project_id: str, count: int, *, completed_at: datetime | None = None
    ) -> list[JsonObject]:
        """Complete `count` pending tasks of a project (oldest first), threads and all.

        They all get `completed_at` (an aware datetime, cut to milliseconds) or now: a tie.
        """
        if completed_at is None and self.faults.clock_skew:
            completed_at = self.now()
        tasks = self._world.complete_tasks(project_id, count, completed_at=completed_at)
        self._world_changed()
        return self._rendered(tasks)

    def nest_metadata(self, task_id: str, levels: int) -> None:
        """Serve this task's `metadata` as objects nested `levels` deep, as a customer may send.

        Written into the response bytes, so any depth can be served, however deep Python's
        own JSON encoder could go.
        """
        with self._store.lock:
            if task_id not in self._store.tasks:
                message = f"unknown task {task_id!r}"
                raise ValueError(message)
            self._store.nested_metadata[task_id] = levels
        self._world_changed()

    def rework_tasks(
        self, project_id: str, task_ids: list[str], *, completed_at: datetime | None = None
    ) -> list[JsonObject]:
        """Rework completed tasks of a project: completed again, later, with new annotations.

        They all get `completed_at` (an aware datetime, cut to milliseconds) or now: a tie.
        """
        tasks = self._world.rework_tasks(project_id, task_ids, completed_at=completed_at)
        self._world_changed()
        return self._rendered(tasks)

    def deliver(self, project_id: str, task_ids: list[str], name: str | None = None) -> JsonObject:
        """Deliver completed tasks of a project now; returns the new Delivery."""
        return self._render.delivery(self._world.deliver(project_id, task_ids, name))

    def _world_changed(self) -> None:
        if self._prerendered is not None:
            self._prerendered.pages.clear()

    def _rendered(self, tasks: list[TaskRecord]) -> list[JsonObject]:
        return [self._render.task(task, opts=ALL_OPTS) for task in tasks]
