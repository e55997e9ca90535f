"""Scale's pages of tasks over HTTP, for the reading engine's reader threads.

A `TaskPageSource` is built in the sync's own thread, from the stream, with everything a reader
needs resolved there: the URL, the headers (the key among them), how to build each window's
query, and the stream's one way to retry, check and parse an answer
(`ScaleStream.request_decorator`, `check_answer`, `read_body`, `parse_response`), none of which
keeps any state but the thread-safe clock and counters every stream shares. Each reader thread
then makes a `HttpPageReader` of its own, with its own `requests.Session` (requests does not
promise a session is thread-safe), which it alone uses and closes. The sessions share only the
`Throttle` of requests in flight and the transport's one deadline watcher (`tap_scale.transport`).
"""

from __future__ import annotations

import typing as t

import requests

from tap_scale import transport
from tap_scale.client import NextTokenPaginator
from tap_scale.reading.engine import Context, Page

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from tap_scale.reading.plan import Window
    from tap_scale.streams.tasks import TasksStream

Record = dict[str, t.Any]
#: (context, after, before, next_token) -> the query of one request of a window.
Query = t.Callable[[t.Any, "int | None", "int | None", "str | None"], "Mapping[str, t.Any]"]
#: What the stream's retries wrap: one try of a request, by the reader sending it.
Retried = t.Callable[
    ["HttpPageReader", requests.PreparedRequest, t.Callable[[], None]], requests.Response
]


class TaskPageSource:
    """Pages of a task stream's partitions, read by each reader thread with its own session."""

    def __init__(self, stream: TasksStream) -> None:
        """Resolve, in the calling thread, everything the readers need of `stream`."""
        self.url = f"{stream.url_base}{stream.path}"
        self.headers = dict(stream.request_headers())
        self.query: Query = stream.window_query
        # The stream's retries, made here: around a function any reader calls with itself. The
        # SDK types what they wrap as (request, context); they pass any arguments on.
        decorate = t.cast("Callable[[Retried], Retried]", stream.request_decorator)
        self.send = decorate(_send_once)
        # Worked out once, here: whether pages keep each thread's turns as Scale sent them asks
        # the SDK about stream maps and BATCH files.
        _ = stream.writes_tasks_unchanged
        self.check = stream.check_answer
        self.read_body = stream.read_body
        self.parse = stream.parse_response
        self.timeout = stream.timeout
        self.progress = stream.progress
        self.throttle = stream.throttle

    def reader(self) -> HttpPageReader:
        """A reader for the calling thread alone."""
        return HttpPageReader(self)


class HttpPageReader:
    """One reader thread's pages: its own session, sent through the stream's retries."""

    def __init__(self, source: TaskPageSource) -> None:
        """Open a session of this reader's own, its requests held to the shared throttle."""
        self._source = source
        self._session = transport.mount(requests.Session(), source.throttle)

    def pages(self, context: Context, window: Window, room: Callable[[], None]) -> Iterator[Page]:
        """The window's pages, a request each, following Scale's `next_token`s."""
        yield from self._pages(context, window.after, window.hi, room, first_only=False)

    def first_page(self, context: Context, after: int | None) -> Page:
        """The partition's first page after `after`, with no upper bound yet."""
        return next(self._pages(context, after, None, lambda: None, first_only=True))

    def close(self) -> None:
        """Close this reader's session and its connections."""
        self._session.close()

    def _pages(
        self,
        context: Context,
        after: int | None,
        before: int | None,
        room: Callable[[], None],
        *,
        first_only: bool,
    ) -> Iterator[Page]:
        source = self._source
        paginator = NextTokenPaginator()
        while not paginator.finished:
            params = source.query(context, after, before, paginator.current_value)
            request = requests.Request("GET", source.url, params=params, headers=source.headers)
            prepared = self._session.prepare_request(request)
            source.progress.requested()  # once a request, however many tries it takes
            response = source.send(self, prepared, room)
            records = list(source.parse(response))
            if not records and not paginator.continue_if_empty(response):
                yield Page(records, more=False)  # as the SDK's loop, an empty last page ends it
                return
            paginator.advance(response)
            # The body is not kept while its records wait to be emitted: 1.6 MB a page.
            del response
            yield Page(records, more=not paginator.finished)
            if first_only:
                return

    def send_once(
        self, prepared: requests.PreparedRequest, room: Callable[[], None]
    ) -> requests.Response:
        """Send once, check the answer, wait for room, then parse: all inside the retries."""
        response = self._session.send(prepared, timeout=self._source.timeout)
        self._source.check(response)
        # Wait for room in the engine's queue before parsing: while the consumer is slower than
        # the readers, each holds the 1.6 MB Scale sent rather than the 6 MB it parses into.
        room()
        # Parsed here, inside the retried call, a 200 whose body is cut short is a retry.
        self._source.read_body(response)
        return response


def _send_once(
    reader: HttpPageReader, prepared: requests.PreparedRequest, room: Callable[[], None]
) -> requests.Response:
    return reader.send_once(prepared, room)
