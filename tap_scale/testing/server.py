"""The HTTP side: a threaded HTTP/1.1 server with keep-alive, and the faults applied to it."""

from __future__ import annotations

import codecs
import contextlib
import io
import math
import socket
import sys
import threading
import time
import typing as t
from dataclasses import dataclass, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from tap_scale.testing.api import presented_key
from tap_scale.testing.faults import (
    TIME_FILTERS,
    echoing,
    including_before,
    invalid_json,
    rate_limited,
    refusal,
    repeated_token,
    server_error,
)
from tap_scale.testing.reshape import reshaped

if t.TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from tap_scale.testing.api import Reply, ScaleApi
    from tap_scale.testing.faults import Faults


@dataclass(frozen=True)
class Outcome:
    """What to send for one request.

    Attributes:
        reply: The response, or None to close the connection without one.
        cut_at: When set, send only this many bytes of the body, then close the connection.
        fault: The faults that shaped the outcome, joined by "+" in the order they struck
            (e.g. "type_drift+truncated_body"), or None (for the request log).
        trickle_pause: When set, send the response one byte at a time, this many seconds apart.
    """

    reply: Reply | None
    cut_at: int | None = None
    fault: str | None = None
    trickle_pause: float | None = None


def respond_with_faults(
    api: ScaleApi,
    faults: Faults,
    request: tuple[str, str, Mapping[str, Sequence[str]], str | None],
) -> Outcome:
    """Answer a request through the API, letting the configured faults spoil it."""
    method, path, params, authorization = request
    if not faults.applies_to(path):
        return Outcome(api.handle(method, path, params, authorization))
    outcome = _respond(api, faults, request)
    reply = outcome.reply
    if faults.echo_credentials and reply is not None and reply.status >= HTTPStatus.BAD_REQUEST:
        fault = "+".join(filter(None, (outcome.fault, "echo_credentials")))
        return replace(outcome, reply=echoing(reply, authorization), fault=fault)
    return outcome


def _respond(
    api: ScaleApi,
    faults: Faults,
    request: tuple[str, str, Mapping[str, Sequence[str]], str | None],
) -> Outcome:
    method, path, params, authorization = request
    wait = faults.rate_limited_for()
    if wait is not None:
        # As a rate limiter answers: at once, in whole seconds (RFC 9110's delay-seconds).
        return Outcome(rate_limited(str(max(1, math.ceil(wait)))), fault="requests_per_second")
    if faults.slow_seconds > 0:
        time.sleep(faults.slow_seconds)
    # A rate limiter or a load balancer sits in front of the API: these faults come before
    # authentication, as a 429 or a 502 would.
    refused = _refusal(faults)
    if refused is not None:
        return refused
    ignored = faults.ignore_time_filters and not TIME_FILTERS.isdisjoint(params)
    if ignored:
        params = {name: values for name, values in params.items() if name not in TIME_FILTERS}
    if faults.inclusive_before:
        params = including_before(params)
    # Drawn before handling, since the API builds the empty page (and its token) itself; a
    # path that does not paginate draws nothing, leaving the other faults' sequence alone.
    empty = api.paginates(path) and faults.draw_empty_page()
    reply = api.handle(method, path, params, authorization, empty_page=empty)
    if reply.status != HTTPStatus.OK:  # only successful bodies are reshaped or spoiled
        return Outcome(reply)
    struck = ["ignore_time_filters"] if ignored else []
    struck += ["empty_page"] if empty else []
    if faults.repeated_token and params.get("next_token"):
        repeated = repeated_token(reply, params["next_token"][0])
        if repeated is not None:
            reply = repeated
            struck.append("repeated_token")
    reply, reshaping = reshaped(faults, path, reply, presented_key(authorization))
    if faults.byte_order_mark:
        reply = replace(reply, body=codecs.BOM_UTF8 + reply.body)
        reshaping.append("byte_order_mark")
    return _spoiled(faults, reply, struck + reshaping)


def _refusal(faults: Faults) -> Outcome | None:
    if faults.refuse_with is not None:
        return Outcome(refusal(faults.refuse_with, faults.retry_after), fault="refuse_with")
    strike = faults.draw_before_handling()
    if strike is None:
        return None
    if strike.name == "dropped_connection":
        return Outcome(None, fault=strike.name)
    if strike.name == "rate_limit":
        return Outcome(rate_limited(faults.retry_after), fault=strike.name)
    return Outcome(server_error(strike.turn), fault=strike.name)


def _spoiled(faults: Faults, reply: Reply, struck: list[str]) -> Outcome:
    strike = faults.draw_after_handling()
    if strike is None:
        return Outcome(reply, fault="+".join(struck) or None)
    fault = "+".join([*struck, strike.name])
    if strike.name == "truncated_body":
        return Outcome(reply, cut_at=len(reply.body) // 2, fault=fault)
    if strike.name == "trickle":
        return Outcome(reply, fault=fault, trickle_pause=faults.trickle_pause)
    return Outcome(invalid_json(reply, strike.turn), fault=fault)


# (method, path, query parameters, Authorization header) -> what to send
Respond = t.Callable[[str, str, dict[str, list[str]], "str | None"], Outcome]


class SimulatorHTTPServer(ThreadingHTTPServer):
    """A threaded server that can also close the keep-alive connections it holds open."""

    daemon_threads = True
    # Idle keep-alive connections would make server_close() wait; stop() closes them instead.
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        respond: Respond,
        clock: t.Callable[[], float] = time.time,
    ) -> None:
        """Bind to `address` (port 0 picks a free port); answer with `respond`, date by `clock`."""
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.respond = respond
        self.clock = clock
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: t.Any, client_address: t.Any) -> None:  # noqa: ANN401 - socketserver's own signature
        """Remember the connection, then serve it in its own thread."""
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: t.Any) -> None:  # noqa: ANN401 - socketserver's own signature
        """Forget the connection and close it."""
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: t.Any, client_address: t.Any) -> None:  # noqa: ANN401 - socketserver's own signature
        """Print what went wrong serving a request, unless the client had only hung up.

        A client killed or gone on a timeout leaves its connection closed under the answer being
        written: a server takes that in its stride, and a traceback would read as its failure.
        """
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Close every open connection, so that no thread goes on serving after a stop."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections as with the real API
    server_version = "ScaleSimulator/1.0"
    timeout = 120  # close idle keep-alive connections, as a load balancer does
    # Headers and body go out in two writes; with Nagle's algorithm the second waits for the
    # client's delayed ACK, adding ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True
    server: SimulatorHTTPServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def version_string(self) -> str:
        """The Server header: the simulator's name, not Python's version."""
        return self.server_version

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header, by the server's clock (which `Faults.clock_skew` sets)."""
        return super().date_time_string(self.server.clock() if timestamp is None else timestamp)

    def log_message(self, format: str, *args: t.Any) -> None:  # noqa: A002, ANN401 - overridden signature
        """Log nothing: tests read `ScaleSimulator.requests` instead of stderr."""

    def _serve(self) -> None:
        # Read any request body so the next request on this connection starts where it should.
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            self.rfile.read(length)
        url = urlsplit(self.path)
        params = parse_qs(url.query, keep_blank_values=True)
        outcome = self.server.respond(
            self.command, url.path, params, self.headers.get("Authorization")
        )
        if outcome.reply is None:
            self.close_connection = True  # no byte sent: the client sees the socket close
            return
        reply = outcome.reply
        if outcome.trickle_pause is not None:
            # Headers are buffered until end_headers; kept back, they go out with the body.
            self.wfile, whole = io.BytesIO(), self.wfile
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        if outcome.trickle_pause is not None:
            head, self.wfile = t.cast("io.BytesIO", self.wfile).getvalue(), whole
            self._trickle(head + reply.body, outcome.trickle_pause)
            return
        if outcome.cut_at is None:
            self.wfile.write(reply.body)
            return
        self.wfile.write(reply.body[: outcome.cut_at])
        self.close_connection = True

    def _trickle(self, data: bytes, pause: float) -> None:
        """Send the whole response a byte at a time; stop when the client hangs up."""
        self.close_connection = True  # a client that gave up would find the rest on reuse
        for index in range(len(data)):
            try:
                self.wfile.write(data[index : index + 1])
                self.wfile.flush()
            except OSError:
                return
            time.sleep(pause)
