"""Scale's v2 read endpoints as pure functions of a request: no sockets, so tests can call them.

`ScaleApi.handle` authenticates, routes, validates the query (400s naming the parameter), looks
objects up (404s naming them), filters, paginates and renders. Every error body has Scale's
shape, `{"status_code": <int>, "error": "<message>"}`, and no body ever contains the API key.

It can also serve a paginated request an empty page (the `empty_page` fault): validated and
looked up like any other, but with no items and a fresh token resuming where the request did.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import typing as t
from dataclasses import dataclass

from tap_scale.testing.data import BATCH_STATUSES, TASK_STATUSES
from tap_scale.testing.lookups import Lookups
from tap_scale.testing.pagination import (
    START,
    PageTokens,
    SortedIndex,
    keyset_page,
    query_scope,
)
from tap_scale.testing.params import ApiError, Query
from tap_scale.testing.render import ALL_OPTS, Renderer

if t.TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from tap_scale.testing.records import (
        BatchRecord,
        DatasetTaskRecord,
        DeliveryRecord,
        TaskRecord,
    )
    from tap_scale.testing.store import Store

JsonObject = dict[str, t.Any]
T = t.TypeVar("T")

UNAUTHORIZED = "Unauthorized: the API key is missing or invalid"
_PAGE = ("limit", "next_token")
_PROJECT = ("project_id", "project_name")
_CREATED = ("created_after", "created_before")
_COMPLETED = ("completed_after", "completed_before")
_DELIVERED = ("delivered_after", "delivered_before")
#: The parameters that name whose tasks `GET /v2/tasks` lists; a request gives one.
TASK_SCOPE = ("project_id", "project_name", "batch_id", "batch_name")
#: The query parameters `GET /v2/tasks` accepts.
TASKS_PARAMETERS = (*TASK_SCOPE, "status", *_COMPLETED, *_PAGE, "expand", "opts")
TASK_EXPANSIONS = ("project", "batch")


@dataclass(frozen=True)
class Reply:
    """An HTTP response: status, body bytes, content type and any extra headers."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def json_reply(status: int, body: object, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """A compact JSON response."""
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return Reply(status, text.encode(), headers=headers)


def error_reply(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """An error in Scale's shape."""
    return json_reply(status, {"status_code": status, "error": message}, headers)


def presented_key(header: str | None) -> str | None:
    """The key an Authorization header carries: a Bearer token or a Basic user name."""
    scheme, _, credentials = (header or "").strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credentials, validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return None
    return credentials if scheme.lower() == "bearer" else None


def authorized(header: str | None, api_key: str) -> bool:
    """Whether an Authorization header carries the key: as a Bearer token or a Basic user name."""
    key = presented_key(header)
    return key is not None and hmac.compare_digest(key.encode(), api_key.encode())


def redact(text: str, api_key: str) -> str:
    """The text with the API key masked, for messages that echo what a client sent.

    A client that pastes its key into a parameter must not see it echoed back, nor find it
    in the request log.
    """
    return text.replace(api_key, "[REDACTED]") if api_key else text


@dataclass(frozen=True)
class _Request:
    query: Query
    scope: bytes
    empty_page: bool = False


class ScaleApi:
    """The endpoints of one simulated account."""

    def __init__(self, store: Store, api_key: str, token_secret: bytes) -> None:
        """Serve this store to clients holding `api_key`; sign page tokens with the secret."""
        self._store = store
        self._api_key = api_key
        self._render = Renderer(store)
        self._find = Lookups(store)
        self._tokens = PageTokens(token_secret)
        # path -> (endpoint, the parameters it accepts)
        self._routes: dict[str, tuple[Callable[[_Request], JsonObject], tuple[str, ...]]] = {
            "/v2/tasks": (self._tasks, TASKS_PARAMETERS),
            "/v2/task": (self._task, ("task_id", "expand", "opts")),
            "/v2/projects": (self._projects, _CREATED),
            "/v2/project": (self._project, _PROJECT),
            "/v2/batches": (
                self._batches,
                (*_PROJECT, "status", *_CREATED, *_COMPLETED, *_PAGE, "expand"),
            ),
            "/v2/batch": (self._batch, ("batch_id", "batch_name", "expand")),
            "/v2/deliveries": (self._deliveries, (*_PROJECT, *_DELIVERED, "expand")),
            "/v2/delivery": (
                self._delivery,
                ("delivery_id", "delivery_name", *_PROJECT, *_PAGE, "expand", "opts"),
            ),
            "/v2/delivery/tasks": (
                self._delivered_tasks,
                ("delivery_id", *_PROJECT, "status", *_COMPLETED, *_PAGE),
            ),
            "/v2/schema": (self._schema, ("schema_id",)),
            "/v2/datasets": (self._datasets, ()),
            "/v2/datasets/deliveries": (
                self._dataset_deliveries,
                ("dataset_id", *_DELIVERED, "expand"),
            ),
            "/v2/datasets/delivery": (self._dataset_delivery, ("delivery_id", *_PAGE, "expand")),
            "/v2/datasets/tasks": (
                self._dataset_tasks,
                ("dataset_id", "delivery_id", *_DELIVERED, *_PAGE, "expand"),
            ),
        }

    def paginates(self, path: str) -> bool:
        """Whether the endpoint at this path pages its results with `next_token`."""
        route = self._routes.get(path)
        return route is not None and "next_token" in route[1]

    def handle(
        self,
        method: str,
        path: str,
        params: Mapping[str, Sequence[str]],
        authorization: str | None,
        *,
        empty_page: bool = False,
    ) -> Reply:
        """Answer one request; with `empty_page`, a paginated one gets a page of no items.

        The empty page still has every other key of the body and a `next_token` resuming at the
        request's own position (from the start for a first page), so following it loses nothing.
        Errors are answered as usual: a bad query gets its 400 whether or not the page is empty.
        """
        if not authorized(authorization, self._api_key):
            return error_reply(401, UNAUTHORIZED)
        route = self._routes.get(path)
        if route is None:
            message = f"Not found: {path} is not an endpoint of Scale's v2 API."
            return error_reply(404, redact(message, self._api_key))
        if method != "GET":
            return error_reply(
                405, f"Method not allowed: {path} only answers GET.", (("Allow", "GET"),)
            )
        endpoint, accepted = route
        try:
            request = _Request(Query(params, accepted), query_scope(path, params), empty_page)
            return json_reply(200, endpoint(request))
        except ApiError as error:
            return error_reply(error.status, redact(error.message, self._api_key))

    # Tasks

    def _tasks(self, request: _Request) -> JsonObject:
        query = request.query
        scope = query.one_of(*TASK_SCOPE)
        status = query.choice("status", TASK_STATUSES)
        after, before = query.timestamp("completed_after"), query.timestamp("completed_before")
        opts = query.choices("opts", ALL_OPTS)
        expand = query.choices("expand", TASK_EXPANSIONS)
        limit, cursor = query.limit(), self._cursor(request)
        project_id, batch_id = self._find.task_scope(scope)

        def accept(task_id: str) -> TaskRecord | None:
            task = self._store.tasks[task_id]
            if batch_id is not None and task.batch_id != batch_id:
                return None
            if status is not None and task.status != status:
                return None
            return task if _within(task.completed_at, after, before) else None

        tasks, last = self._page(
            request, self._store.tasks_of_project[project_id], cursor, limit, accept
        )
        rendered = [self._render.task(task, opts=opts, expand=expand) for task in tasks]
        return self._with_token({"tasks": rendered}, request, last)

    def _task(self, request: _Request) -> JsonObject:
        query = request.query
        task_id = query.required("task_id")
        opts = query.choices("opts", ALL_OPTS)
        expand = query.choices("expand", ("project", "batch"))
        return self._render.task(self._find.task(task_id), opts=opts, expand=expand)

    # Projects and batches

    def _projects(self, request: _Request) -> JsonObject:
        query = request.query
        after, before = query.timestamp("created_after"), query.timestamp("created_before")
        with self._store.lock:
            projects = list(self._store.projects.values())
        return {
            "projects": [
                self._render.project(project)
                for project in projects
                if _within(project.created_at, after, before)
            ]
        }

    def _project(self, request: _Request) -> JsonObject:
        return self._render.project(self._find.project(request.query.one_of(*_PROJECT)))

    def _batches(self, request: _Request) -> JsonObject:
        query = request.query
        scope = query.one_of(*_PROJECT)
        status = query.choice("status", BATCH_STATUSES)
        created = query.timestamp("created_after"), query.timestamp("created_before")
        completed = query.timestamp("completed_after"), query.timestamp("completed_before")
        expand = query.choices("expand", ("project",))
        limit, cursor = query.limit(), self._cursor(request)
        project = self._find.project(scope)

        def accept(batch_id: str) -> BatchRecord | None:
            batch = self._store.batches[batch_id]
            if status is not None and batch.status != status:
                return None
            if not _within(batch.created_at, *created):
                return None
            return batch if _within(batch.completed_at, *completed) else None

        index = self._store.batches_of_project[project.project_id]
        batches, last = self._page(request, index, cursor, limit, accept)
        rendered = [self._render.batch(batch, expand=expand) for batch in batches]
        return self._with_token({"batches": rendered}, request, last)

    def _batch(self, request: _Request) -> JsonObject:
        query = request.query
        scope = query.one_of("batch_id", "batch_name")
        expand = query.choices("expand", ("project",))
        return self._render.batch(self._find.batch(scope), expand=expand)

    # Deliveries

    def _deliveries(self, request: _Request) -> JsonObject:
        query = request.query
        scope = query.one_of(*_PROJECT)
        after, before = query.timestamp("delivered_after"), query.timestamp("delivered_before")
        expand = query.choices("expand", ("project",))
        project = self._find.project(scope)
        return {
            "deliveries": [
                self._render.delivery(delivery, expand=expand)
                for delivery in self._store.deliveries_of(project.project_id)
                if _within(delivery.delivered_at, after, before)
            ]
        }

    def _delivery(self, request: _Request) -> JsonObject:
        query = request.query
        opts = query.choices("opts", ALL_OPTS)
        expand = query.choices("expand", ("project", "batch", "delivery"))
        limit, cursor = query.limit(), self._cursor(request)
        delivery = self._find.delivery(query)

        def accept(task_id: str) -> TaskRecord | None:
            return self._store.tasks.get(task_id)

        index = self._store.tasks_of_delivery[delivery.delivery_id]
        tasks, last = self._page(request, index, cursor, limit, accept)
        body: JsonObject = {
            "delivery": self._render.delivery(delivery, expand=expand)
            if "delivery" in expand
            else delivery.delivery_id,
            "tasks": [self._render.task(task, opts=opts, expand=expand) for task in tasks],
        }
        return self._with_token(body, request, last)

    def _delivered_tasks(self, request: _Request) -> JsonObject:
        """Tasks with their delivered responses: one doc per delivery of each task.

        By delivery, that delivery's tasks; by project, every task of the project, once for
        each delivery that delivered it (a task delivered twice is listed twice) and once with
        null delivery fields if it was never delivered. Shuffled, whatever the simulator's
        order of tasks (`tap_scale.testing.orders`): each doc has its own key.
        """
        query = request.query
        scope = query.one_of("delivery_id", *_PROJECT)
        status = query.choice("status", TASK_STATUSES)
        after, before = query.timestamp("completed_after"), query.timestamp("completed_before")
        limit, cursor = query.limit(), self._cursor(request)
        with self._store.lock:
            if scope[0] == "delivery_id":
                delivery_id = self._find.delivery_by_id(scope[1]).delivery_id
                pairs = [
                    (task_id, delivery_id)
                    for task_id in self._store.deliveries[delivery_id].task_ids
                ]
            else:
                project_id = self._find.project(scope).project_id
                pairs = [
                    (task_id, delivery_id)
                    for task_id in self._store.tasks_of_project[project_id].ids()
                    for delivery_id in self._store.deliveries_of_task.get(task_id) or [""]
                ]
            # Each doc has its own place in the listing, so a task's docs may fall on two pages.
            index = SortedIndex(f"{task_id}/{delivery_id}" for task_id, delivery_id in pairs)

        def accept(doc_id: str) -> tuple[TaskRecord, DeliveryRecord | None] | None:
            task_id, _, delivery_id = doc_id.partition("/")
            task = self._store.tasks[task_id]
            if status is not None and task.status != status:
                return None
            if not _within(task.completed_at, after, before):
                return None
            return task, self._store.deliveries.get(delivery_id)

        docs, last = self._page(request, index, cursor, limit, accept)
        rendered = [self._render.delivered_task(task, delivery) for task, delivery in docs]
        # `total` counts the docs of this page, as Scale documents it.
        return self._with_token({"docs": rendered, "total": len(rendered)}, request, last)

    def _schema(self, request: _Request) -> JsonObject:
        schema_id = request.query.required("schema_id")
        return {"schema": self._render.response_schema(self._find.response_schema(schema_id))}

    # Datasets

    def _datasets(self, request: _Request) -> JsonObject:
        del request  # the endpoint takes no parameters; Query has refused any
        with self._store.lock:
            datasets = list(self._store.datasets.values())
        return {"datasets": [self._render.dataset(dataset) for dataset in datasets]}

    def _dataset_deliveries(self, request: _Request) -> JsonObject:
        query = request.query
        dataset_id = query.text("dataset_id")
        after, before = query.timestamp("delivered_after"), query.timestamp("delivered_before")
        expand = query.choices("expand", ("dataset",))
        if dataset_id is not None:
            self._find.dataset(dataset_id)
        with self._store.lock:
            deliveries = sorted(
                self._store.dataset_deliveries.values(), key=lambda delivery: delivery.delivered_at
            )
        return {
            "deliveries": [
                self._render.dataset_delivery(delivery, expand=expand)
                for delivery in deliveries
                if dataset_id in {None, delivery.dataset_id}
                and _within(delivery.delivered_at, after, before)
            ]
        }

    def _dataset_delivery(self, request: _Request) -> JsonObject:
        query = request.query
        delivery_id = query.required("delivery_id")
        expand = query.choices("expand", ("dataset", "delivery"))
        limit, cursor = query.limit(), self._cursor(request)
        delivery = self._find.dataset_delivery(delivery_id)
        index = self._store.tasks_of_dataset_delivery[delivery.delivery_id]
        tasks, last = self._page(request, index, cursor, limit, self._store.dataset_tasks.get)
        body: JsonObject = {
            "delivery": self._render.dataset_delivery(delivery, expand=expand)
            if "delivery" in expand
            else delivery.delivery_id,
            "tasks": [self._render.dataset_task(task, expand=expand) for task in tasks],
        }
        return self._with_token(body, request, last)

    def _dataset_tasks(self, request: _Request) -> JsonObject:
        query = request.query
        scope = query.one_of("dataset_id", "delivery_id")
        after, before = query.timestamp("delivered_after"), query.timestamp("delivered_before")
        expand = query.choices("expand", ("dataset", "delivery"))
        limit, cursor = query.limit(), self._cursor(request)
        index = self._find.dataset_task_index(scope)

        def accept(task_id: str) -> DatasetTaskRecord | None:
            task = self._store.dataset_tasks[task_id]
            delivery = self._store.dataset_deliveries[task.delivery_id]
            return task if _within(delivery.delivered_at, after, before) else None

        tasks, last = self._page(request, index, cursor, limit, accept)
        rendered = [self._render.dataset_task(task, expand=expand) for task in tasks]
        return self._with_token({"tasks": rendered}, request, last)

    # Pagination

    def _cursor(self, request: _Request) -> bytes | None:
        token = request.query.text("next_token")
        return None if token is None else self._tokens.resume_after(token, request.scope)

    def _page(
        self,
        request: _Request,
        index: SortedIndex,
        cursor: bytes | None,
        limit: int,
        accept: Callable[[str], T | None],
    ) -> tuple[list[T], bytes | None]:
        if request.empty_page:
            # Nothing served, so the next page starts where this one should have.
            return [], START if cursor is None else cursor
        # Under the lock, so a test adding tasks cannot change the index mid-walk; rendering,
        # the slow part, happens after, on immutable records.
        with self._store.lock:
            return keyset_page(index, cursor, limit, accept)

    def _with_token(self, body: JsonObject, request: _Request, last: bytes | None) -> JsonObject:
        if last is not None:
            body["next_token"] = self._tokens.issue(request.scope, last)
        return body


def _within(moment: int | None, after: int | None, before: int | None) -> bool:
    """Whether an instant is strictly inside (after, before); a missing one is inside no bound."""
    if after is None and before is None:
        return True
    if moment is None:
        return False
    return (after is None or moment > after) and (before is None or moment < before)
