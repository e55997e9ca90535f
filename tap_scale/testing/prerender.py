"""Pre-rendered pages of `GET /v2/tasks`, so that the simulator is never a benchmark's bottleneck.

Rendering a task costs the simulator about half a millisecond, more than a fast client spends
reading it: a benchmark against the rendering API would measure the simulator. In pre-rendered
mode (`ScaleSimulator(prerendered=True)`, `python -m tap_scale.testing --prerender`) each page of
a task listing is rendered once, kept as the bytes of its body, and sent as they are to every
later request for it. `ScaleSimulator.prerender_tasks` renders listings ahead, while the server
starts; any other listing is cached page by page as its pages are first asked for.

What is served from the cache, and what is not:

- Only valid, authorized `GET /v2/tasks` requests. Everything else (other endpoints, requests the
  API refuses, pages the `empty_page` fault empties) is answered by the API as usual, and the
  other faults (latency, refusals, reshaping, spoiling) apply to cached pages as to any other.
- A page is cached per canonical query and place in the listing. The canonical query is the
  scope (`project_id`, `project_name`, `batch_id` or `batch_name`), `status`, `limit`, `opts` and
  `expand` (repeated values in any order); `completed_after` and `completed_before` are left out.
  A request whose bounds exclude none of the listing's tasks (every one of them completed
  strictly inside the bounds) is served from the cache whatever their values: tap-scale's first
  sync, bounded by the moment it started, is.
- A request whose bounds do exclude tasks (a time window of a partition, as tap-scale reads a big
  project in several windows at once) is a listing of its own: the same listing filtered as the
  API filters, its pages put together from each task's body rendered once and kept, without
  rendering anything anew, and not kept themselves (they would double the memory).
- Tokens are stable: a page carries the same `next_token` every time it is served, where the API
  issues a new one each time. As with the API's, a token is bound to its query: sent with another
  one it gets the API's 400. A cached listing's token sent with bounds that exclude a task goes
  to the API, which refuses it as a token it did not issue.
- Pages list tasks in the simulator's order (`tap_scale.testing.orders`), as the API's do: a
  listing is its project's index of tasks, filtered.
- The world is meant to stay still while it is served: `ScaleSimulator.add_tasks` and
  `complete_tasks` drop every cached page and token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import typing as t
from collections import Counter
from dataclasses import astuple, dataclass

from tap_scale.testing.api import (
    TASK_EXPANSIONS,
    TASK_SCOPE,
    TASKS_PARAMETERS,
    Reply,
    ScaleApi,
    authorized,
    error_reply,
    json_reply,
)
from tap_scale.testing.data import TASK_STATUSES
from tap_scale.testing.lookups import Lookups
from tap_scale.testing.pagination import ISSUED_FOR_ANOTHER_QUERY
from tap_scale.testing.params import ApiError, Query
from tap_scale.testing.render import ALL_OPTS, Renderer

if t.TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from tap_scale.testing.store import Store

TASKS_PATH = "/v2/tasks"
#: Counters of a pre-rendered simulator, for benchmarks; not an endpoint of Scale's API.
STATS_PATH = "/_simulator/stats"
_TOKEN_BYTES = 18  # a multiple of 3: base64 without padding


@dataclass(frozen=True)
class TaskQuery:
    """A `GET /v2/tasks` query in canonical form: what decides its pages, bounds aside."""

    scope: tuple[str, str]
    status: str | None = None
    limit: int = 100
    opts: tuple[str, ...] = ()
    expand: tuple[str, ...] = ()

    @classmethod
    def of_project(
        cls,
        project_id: str,
        *,
        status: str | None = "completed",
        limit: int = 100,
        opts: Sequence[str] = ALL_OPTS,
    ) -> TaskQuery:
        """A project's tasks of one status, by `project_id`, as tap-scale asks for them."""
        return cls(("project_id", project_id), status, limit, tuple(sorted(set(opts))))

    def params(self) -> dict[str, list[str]]:
        """The query string's parameters, as a server parses them."""
        params = {self.scope[0]: [self.scope[1]], "limit": [str(self.limit)]}
        if self.status is not None:
            params["status"] = [self.status]
        if self.opts:
            params["opts"] = list(self.opts)
        if self.expand:
            params["expand"] = list(self.expand)
        return params


@dataclass(frozen=True)
class Listing:
    """The tasks a query lists, in listing order, and the span of their `completed_at`.

    `span` is (earliest, latest), or None when the listing is empty or a task has no
    `completed_at` (a bound then excludes it).
    """

    task_ids: tuple[str, ...]
    limit: int
    span: tuple[int, int] | None
    #: Each task's `completed_at` (microseconds), in listing order; empty for a window's listing.
    instants: tuple[int | None, ...] = ()

    @property
    def pages(self) -> int:
        """How many pages the listing takes; an empty one still takes one, with no tasks."""
        return max(1, -(-len(self.task_ids) // self.limit))

    def page(self, number: int) -> tuple[str, ...]:
        """The ids on one page."""
        return self.task_ids[number * self.limit : (number + 1) * self.limit]

    def holds_all(self, after: int | None, before: int | None) -> bool:
        """Whether bounds (strict, in microseconds) exclude none of the listed tasks."""
        if not self.task_ids or (after is None and before is None):
            return True
        if self.span is None:
            return False
        earliest, latest = self.span
        return (after is None or earliest > after) and (before is None or latest < before)


@dataclass(frozen=True)
class Page:
    """One rendered page: its body, and how many tasks it holds."""

    body: bytes
    tasks: int


class PrerenderedPages:
    """The cache of rendered task pages of one store, and what it has served."""

    def __init__(self, store: Store, token_secret: bytes) -> None:
        """Render this store's tasks; sign tokens with the secret."""
        self._store = store
        self._render = Renderer(store)
        self._find = Lookups(store)
        self._secret = token_secret
        self._lock = threading.Lock()
        # Bumped by `clear`, so that a page rendered from the old world is not kept.
        self._generation = 0
        self._listings: dict[TaskQuery, Listing] = {}
        self._pages: dict[tuple[TaskQuery, int], Page] = {}
        # Listings filtered by a request's bounds, and each task's body, for windowed pages.
        self._windows: dict[tuple[TaskQuery, int | None, int | None], Listing] = {}
        self._bodies: dict[tuple[str, tuple[str, ...], tuple[str, ...]], bytes] = {}
        # Each token names its listing (query and bounds, None for the whole) and page number.
        self._tokens: dict[str, tuple[TaskQuery, tuple[int | None, int | None] | None, int]] = {}
        self._cached: Counter[str] = Counter()
        self._served: Counter[str] = Counter()

    def answer(self, params: Mapping[str, Sequence[str]]) -> Reply | None:
        """The cached page an authorized `GET /v2/tasks` asks for, or None: the API answers it.

        None for an invalid request (the API refuses it with the same error), for bounds that
        exclude a task, and for a token this cache did not issue.
        """
        try:
            query = Query(params, TASKS_PARAMETERS)
            key = TaskQuery(
                scope=query.one_of(*TASK_SCOPE),
                status=query.choice("status", TASK_STATUSES),
                limit=query.limit(),
                opts=tuple(sorted(query.choices("opts", ALL_OPTS))),
                expand=tuple(sorted(query.choices("expand", TASK_EXPANSIONS))),
            )
            after, before = query.timestamp("completed_after"), query.timestamp("completed_before")
            token = query.text("next_token")
            listing = self.listing(key)
        except ApiError:
            return None
        bounds = None if listing.holds_all(after, before) else (after, before)
        number = 0
        if token is not None:
            issued = self._tokens.get(token)
            if issued is None:
                return None
            if issued[:2] != (key, bounds):
                return error_reply(400, ISSUED_FOR_ANOTHER_QUERY)
            number = issued[2]
        if bounds is None:
            page = self.page(key, listing, number)
        else:
            page = self.window_page(key, bounds, self.window(key, listing, *bounds), number)
        with self._lock:
            self._served.update(pages=1, tasks=page.tasks, bytes=len(page.body))
        return Reply(200, page.body)

    def listing(self, key: TaskQuery) -> Listing:
        """The tasks a query lists (cached).

        Raises:
            ApiError: 404 for a project or batch that does not exist.
        """
        cached = self._listings.get(key)
        if cached is not None:
            return cached
        generation = self._generation
        project_id, batch_id = self._find.task_scope(key.scope)
        with self._store.lock:
            tasks = [self._store.tasks[i] for i in self._store.tasks_of_project[project_id].ids()]
        listed = [
            task
            for task in tasks
            if batch_id in {None, task.batch_id} and key.status in {None, task.status}
        ]
        instants = [task.completed_at for task in listed]
        dated = [moment for moment in instants if moment is not None]
        span = (min(dated), max(dated)) if dated and len(dated) == len(instants) else None
        listing = Listing(tuple(task.task_id for task in listed), key.limit, span, tuple(instants))
        with self._lock:
            if generation == self._generation:
                self._listings[key] = listing
        return listing

    def page(self, key: TaskQuery, listing: Listing, number: int) -> Page:
        """Page `number` of a listing, rendered on first use."""
        cached = self._pages.get((key, number))
        if cached is not None:
            return cached
        generation = self._generation
        page, token = self._assemble(key, None, listing, number)
        with self._lock:
            if generation == self._generation and (key, number) not in self._pages:
                self._pages[key, number] = page
                self._cached.update(pages=1, tasks=page.tasks, bytes=len(page.body))
                if token is not None:
                    self._tokens[token] = (key, None, number + 1)
        return page

    def window(
        self, key: TaskQuery, listing: Listing, after: int | None, before: int | None
    ) -> Listing:
        """The listing's tasks completed strictly inside (after, before), as the API filters."""
        cached = self._windows.get((key, after, before))
        if cached is not None:
            return cached
        generation = self._generation
        inside = tuple(
            task_id
            for task_id, moment in zip(listing.task_ids, listing.instants, strict=True)
            if moment is not None
            and (after is None or moment > after)
            and (before is None or moment < before)
        )
        window = Listing(inside, key.limit, None)
        with self._lock:
            if generation == self._generation:
                self._windows[key, after, before] = window
        return window

    def window_page(
        self,
        key: TaskQuery,
        bounds: tuple[int | None, int | None],
        window: Listing,
        number: int,
    ) -> Page:
        """Page `number` of a window's listing, put together from the tasks' kept bodies."""
        generation = self._generation
        page, token = self._assemble(key, bounds, window, number)
        if token is not None:
            with self._lock:
                if generation == self._generation:
                    self._tokens[token] = (key, bounds, number + 1)
        return page

    def _assemble(
        self,
        key: TaskQuery,
        bounds: tuple[int | None, int | None] | None,
        listing: Listing,
        number: int,
    ) -> tuple[Page, str | None]:
        """A page's body, from each task's body (rendered on first use), and its next token."""
        bodies = [self._body(key, task_id) for task_id in listing.page(number)]
        token = None
        tail = b"]}"
        if number + 1 < listing.pages:
            token = self._token(key, bounds, number + 1)
            tail = b'],"next_token":' + json.dumps(token).encode() + b"}"
        return Page(b'{"tasks":[' + b",".join(bodies) + tail, len(bodies)), token

    def _body(self, key: TaskQuery, task_id: str) -> bytes:
        """A task as this query renders it, kept for every page that holds it."""
        cached = self._bodies.get((task_id, key.opts, key.expand))
        if cached is not None:
            return cached
        generation = self._generation
        task = self._render.task(self._store.tasks[task_id], opts=key.opts, expand=key.expand)
        body = json_reply(200, task).body
        with self._lock:
            if generation == self._generation:
                self._bodies[task_id, key.opts, key.expand] = body
        return body

    def prerender(self, key: TaskQuery, progress: Callable[[int], None] | None = None) -> Listing:
        """Render every page of a listing now; `progress` is told each page's task count.

        Raises:
            ApiError: 404 for a project or batch that does not exist.
        """
        listing = self.listing(key)
        for number in range(listing.pages):
            page = self.page(key, listing, number)
            if progress is not None:
                progress(page.tasks)
        return listing

    def clear(self) -> None:
        """Forget every listing, page and token: the world has changed."""
        with self._lock:
            self._generation += 1
            self._listings.clear()
            self._pages.clear()
            self._windows.clear()
            self._bodies.clear()
            self._tokens.clear()
            self._cached.clear()

    def stats(self) -> dict[str, dict[str, int]]:
        """What is cached and what was served from the cache: pages, tasks and body bytes."""
        names = ("pages", "tasks", "bytes")
        with self._lock:
            return {
                "cached": {name: self._cached[name] for name in names},
                "served": {name: self._served[name] for name in names},
            }

    def _token(
        self, key: TaskQuery, bounds: tuple[int | None, int | None] | None, number: int
    ) -> str:
        text = json.dumps([astuple(key), bounds, number])
        digest = hmac.new(self._secret, text.encode(), hashlib.sha256).digest()[:_TOKEN_BYTES]
        return base64.urlsafe_b64encode(digest).decode("ascii")


class PrerenderedApi(ScaleApi):
    """The API, answering `GET /v2/tasks` from `pages` whenever it can (see the module)."""

    def __init__(self, store: Store, api_key: str, token_secret: bytes) -> None:
        """Serve this store to clients holding `api_key`; sign page tokens with the secret."""
        super().__init__(store, api_key, token_secret)
        self.pages = PrerenderedPages(store, token_secret)
        self._answered: Counter[str] = Counter()
        self._answered_lock = threading.Lock()

    def handle(
        self,
        method: str,
        path: str,
        params: Mapping[str, Sequence[str]],
        authorization: str | None,
        *,
        empty_page: bool = False,
    ) -> Reply:
        """Answer from the cache when it holds the page, else as the API does."""
        if (
            path == TASKS_PATH
            and method == "GET"
            and not empty_page
            and authorized(authorization, self._api_key)
        ):
            reply = self.pages.answer(params)
            if reply is not None:
                return reply
        with self._answered_lock:
            self._answered[path] += 1
        return super().handle(method, path, params, authorization, empty_page=empty_page)

    def stats(self) -> dict[str, t.Any]:
        """The cache's counters, and how many requests the API answered itself, by path.

        A benchmark checks that `api["/v2/tasks"]` did not move while a client read: every
        page then came from the cache.
        """
        with self._answered_lock:
            answered = dict(self._answered)
        return {**self.pages.stats(), "api": answered}
