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
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
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

    from tap_scale.throttle import Throttle


class RequestDeadlineExceeded(requests.exceptions.Timeout):
    """The server did not finish answering a request within its deadline."""


class _Deadline:
    """One request's deadline: once it passes, the socket of the request's connection is shut."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._connection: HTTPConnection | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Self:
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _current.deadline = None

    def watch(self, connection: HTTPConnection) -> None:
        """The request now uses this connection (its socket may not exist yet)."""
        with self._lock:
            self._connection = connection
            expired = self.expired
        if expired:  # it passed while connecting
            _shut(connection)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            connection = self._connection
        if connection is not None:
            _shut(connection)


def _shut(connection: HTTPConnection) -> None:
    sock: socket.socket | None = getattr(connection, "sock", None)
    if sock is not None:
        # shutdown, not close: it wakes a read blocked in another thread at once.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


# Each thread makes one request at a time; its deadline is found here by its connection.
_current = threading.local()


def _watch(connection: HTTPConnection) -> None:
    deadline: _Deadline | None = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.watch(connection)


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
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, *args: t.Any, **kwargs: t.Any) -> PoolManager:  # noqa: ANN401
        """The proxy's pool manager, with the same connections."""
        manager: PoolManager = super().proxy_manager_for(*args, **kwargs)
        manager.pool_classes_by_scheme = _POOLS
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
