"""The HTTP transport under the client: each request, body included, ends by a deadline.

A timeout given to `requests` bounds each socket operation, not the request: a server (or a
proxy) that sends its headers or body a byte at a time, each byte within the timeout, holds a
client forever. Here a request's timeout is also a deadline for the whole exchange: connecting,
sending, the headers and the body. When it passes, the socket the request uses is shut down,
which ends any blocked read at once, and the request fails as a timeout, which the client
retries like any other.

urllib3 makes the connection objects, so the connection classes of its pools are replaced
(`ConnectionCls`, urllib3's own extension point) by ones that tell the request's deadline which
socket to shut.

Who does what:

- The thread sending a request owns its `_Deadline`: it registers it with the watcher as the
  request starts, keeps it in `_current` (a thread-local) while urllib3 connects and reads, and
  cancels it when the request ends. A session, its adapter and its pools are never shared: each
  reader thread mounts its own session; they share only a `Throttle` and the one watcher.
- One watcher thread per process (`_Watcher`, a daemon started on first use, and started again
  if it ever died, as after a fork) holds every pending deadline in a heap by due time. It sleeps
  until the earliest is due, or until an earlier one is registered, then marks each due deadline
  expired and shuts its socket. No thread is started per request.
- The watcher's one lock (under its condition) guards the heap, the count of cancelled entries
  in it, and each deadline's state (pending, cancelled, expired) and connection. A socket is shut
  while that lock is held, so once a request has cancelled its deadline, nothing shuts its socket
  again (the connection may then serve the session's next request).
- A cancelled deadline stays in the heap until it reaches the top, where it is dropped, or until
  cancelled ones are more than half the heap, which is then rebuilt without them: the heap holds
  at most about twice the requests in flight, however many are sent.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import socket
import sys
import threading
import time
import typing as t

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from typing_extensions import Self
    from urllib3.poolmanager import PoolManager

    from tap_scale.reading.throttle import Throttle


class RequestDeadlineExceeded(requests.exceptions.Timeout):
    """The server did not finish answering a request within its deadline."""


class _Deadline:
    """One request's deadline: once it passes, the socket of the request's connection is shut."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.due = 0.0  # on the monotonic clock, set as the request starts
        # Set by the watcher only; read without its lock by the thread of the request.
        self.expired = False
        # Guarded by the watcher's lock.
        self.cancelled = False
        self.connection: HTTPConnection | None = None

    def __enter__(self) -> Self:
        _current.deadline = self
        _watcher.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _watcher.cancel(self)
        _current.deadline = None


class _Watcher:
    """The one thread that shuts the sockets of requests whose deadline has passed."""

    def __init__(self) -> None:
        self.start_afresh()

    def start_afresh(self) -> None:
        """No deadlines, no thread yet; also in a forked child, whose requests are all its own.

        The child's copy of the lock may be held by a thread that was not forked with it.
        """
        self._changed = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._cancelled = 0  # cancelled deadlines still in the heap
        self._order = itertools.count()  # breaks ties between equal due times
        self._thread: threading.Thread | None = None

    def add(self, deadline: _Deadline) -> None:
        """Start counting down a request's deadline."""
        with self._changed:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="tap-scale-deadlines", daemon=True
                )
                self._thread.start()
            deadline.due = time.monotonic() + deadline.seconds
            heapq.heappush(self._heap, (deadline.due, next(self._order), deadline))
            if self._heap[0][2] is deadline:  # earlier than the one the watcher sleeps until
                self._changed.notify()

    def watch(self, deadline: _Deadline, connection: HTTPConnection) -> None:
        """The request now uses this connection; shut its socket if the deadline has passed."""
        with self._changed:
            deadline.connection = connection
            if deadline.expired:  # it passed while connecting
                _shut(connection)

    def cancel(self, deadline: _Deadline) -> None:
        """The request has ended: its socket is no longer the deadline's to shut."""
        with self._changed:
            if deadline.expired or deadline.cancelled:
                return
            deadline.cancelled = True
            deadline.connection = None
            self._cancelled += 1
            self._drop_cancelled_at_top()
            if 2 * self._cancelled > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def pending(self) -> int:
        """How many deadlines the heap holds, cancelled ones not yet dropped included."""
        with self._changed:
            return len(self._heap)

    def _drop_cancelled_at_top(self) -> None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
            self._cancelled -= 1

    def _run(self) -> None:
        with self._changed:
            while True:
                self._drop_cancelled_at_top()
                if not self._heap:
                    self._changed.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._changed.wait(wait)
                    continue
                deadline = heapq.heappop(self._heap)[2]
                deadline.expired = True
                if deadline.connection is not None:
                    _shut(deadline.connection)


def _shut(connection: HTTPConnection) -> None:
    sock: socket.socket | None = getattr(connection, "sock", None)
    if sock is not None:
        # shutdown, not close: it wakes a read blocked in another thread at once.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


_watcher = _Watcher()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_watcher.start_afresh)


def pending_deadlines() -> int:
    """How many deadlines the watcher holds, cancelled ones not yet dropped included (for tests)."""
    return _watcher.pending()


# Each thread makes one request at a time; its deadline is found here by its connection.
_current = threading.local()


def _watch(connection: HTTPConnection) -> None:
    deadline: _Deadline | None = getattr(_current, "deadline", None)
    if deadline is not None:
        _watcher.watch(deadline, connection)


class _CutByTheDeadline(logging.Filter):
    """Drop urllib3's warning, with a traceback, about headers a passed deadline cut short.

    The request fails as a timeout, which is retried and logged as one; the warning would only
    describe what the deadline itself did.
    """

    @override
    def filter(self, record: logging.LogRecord) -> bool:
        deadline: _Deadline | None = getattr(_current, "deadline", None)
        return not (
            deadline is not None
            and deadline.expired
            and str(record.msg).startswith("Failed to parse headers")
        )


logging.getLogger("urllib3.connection").addFilter(_CutByTheDeadline())


class _WatchedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        _watch(self)
        super().connect()
        _watch(self)  # the socket exists now: shut it if the deadline passed meanwhile

    def request(self, *args: t.Any, **kwargs: t.Any) -> None:  # noqa: ANN401 - urllib3's own signature
        _watch(self)  # a kept-alive connection, reused: no connect
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        _watch(self)
        super().connect()
        _watch(self)

    def request(self, *args: t.Any, **kwargs: t.Any) -> None:  # noqa: ANN401
        _watch(self)
        super().request(*args, **kwargs)


class _WatchedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _WatchedHTTPConnectionPool, "https": _WatchedHTTPSConnectionPool}


class DeadlineAdapter(HTTPAdapter):
    """An adapter whose requests, body included, end by their timeout, taken as a deadline.

    With a `Throttle`, each request first waits for one of its slots (not counted against the
    deadline) and tells it how Scale answered.
    """

    def __init__(self, throttle: Throttle | None = None) -> None:
        """An adapter whose requests hold a slot of `throttle`, if given."""
        super().__init__()
        self.throttle = throttle

    def init_poolmanager(self, *args: t.Any, **kwargs: t.Any) -> None:  # noqa: ANN401
        """Make the pool manager, with connections that tell their deadline their socket."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)  # its own: changes stay in it

    def proxy_manager_for(self, *args: t.Any, **kwargs: t.Any) -> PoolManager:  # noqa: ANN401
        """The proxy's pool manager, with the same connections."""
        manager: PoolManager = super().proxy_manager_for(*args, **kwargs)
        manager.pool_classes_by_scheme = dict(_POOLS)
        return manager

    def send(
        self,
        request: requests.PreparedRequest,
        *args: t.Any,  # noqa: ANN401
        **kwargs: t.Any,  # noqa: ANN401
    ) -> requests.Response:
        """Send the request and read its body, all before its timeout has passed."""
        if self.throttle is None:
            return self._send(request, *args, **kwargs)
        with self.throttle.slot() as epoch:
            response = self._send(request, *args, **kwargs)
            self.throttle.answered(epoch, response.status_code)
            return response

    def _send(
        self,
        request: requests.PreparedRequest,
        *args: t.Any,  # noqa: ANN401
        **kwargs: t.Any,  # noqa: ANN401
    ) -> requests.Response:
        timeout = kwargs.get("timeout")
        # A (connect, read) pair bounds single operations as chosen; a number is the deadline.
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            return super().send(request, *args, **kwargs)
        with _Deadline(float(timeout)) as deadline:
            try:
                response = super().send(request, *args, **kwargs)
                if not kwargs.get("stream"):
                    _ = response.content  # the body is read here, under the deadline
            except (requests.RequestException, OSError) as error:
                if deadline.expired:
                    raise _exceeded(request, deadline.seconds) from error
                raise
        if deadline.expired:  # the socket was shut as the body ended: it may be cut short
            raise _exceeded(request, deadline.seconds)
        return response


def _exceeded(request: requests.PreparedRequest, seconds: float) -> RequestDeadlineExceeded:
    return RequestDeadlineExceeded(
        f"the server did not finish answering within {seconds:g} s", request=request
    )


def mount(session: requests.Session, throttle: Throttle | None = None) -> requests.Session:
    """Give a session's requests their deadlines (and `throttle`'s slots); returns the session."""
    if not isinstance(session.get_adapter("https://"), DeadlineAdapter):
        adapter = DeadlineAdapter(throttle)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
    return session
