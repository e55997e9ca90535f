"""Each request ends by its deadline, cut by one watcher thread: real sockets on localhost."""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import sys
import threading
import time
import typing as t

import pytest
import requests

from tap_scale import transport
from tap_scale.reading.throttle import Throttle

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import FrameType

    from requests.adapters import HTTPAdapter

# Loosely: a cut request ends within this long after its deadline, on a slow CI machine too.
SLACK = 2.0
TRICKLE_PAUSE = 0.05
# A server gives up after this long, so a deadline that never cuts fails a test, not hangs it.
GIVE_UP = 20.0


def read_request_head(connection: socket.socket) -> bytes:
    """The request line and headers, or what came before the client hung up."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = connection.recv(4096)
        if not chunk:
            break
        head += chunk
    return head


def trickle_the_body(connection: socket.socket, stop: threading.Event) -> None:
    read_request_head(connection)
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
    give_up = time.monotonic() + GIVE_UP
    while not stop.is_set() and time.monotonic() < give_up:
        connection.sendall(b"x")
        time.sleep(TRICKLE_PAUSE)


def never_send_headers(connection: socket.socket, stop: threading.Event) -> None:
    read_request_head(connection)
    connection.settimeout(0.1)
    give_up = time.monotonic() + GIVE_UP
    while not stop.is_set() and time.monotonic() < give_up:
        with contextlib.suppress(TimeoutError):
            if not connection.recv(4096):
                return


def never_read(_connection: socket.socket, stop: threading.Event) -> None:
    stop.wait(GIVE_UP)


@contextlib.contextmanager
def serving(handle: Callable[[socket.socket, threading.Event], None]) -> Iterator[str]:
    """A server on localhost handling each connection in its own thread; yields its address."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def handle_one(connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):  # the client hung up
            handle(connection, stop)

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                connection, _ = listener.accept()
                connection.settimeout(None)
                threading.Thread(target=handle_one, args=(connection,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v2/tasks"
    finally:
        stop.set()
        acceptor.join()
        listener.close()


def session(throttle: Throttle | None = None) -> requests.Session:
    return transport.mount(requests.Session(), throttle)


def timed_failure(send: Callable[[], object]) -> tuple[float, BaseException]:
    started = time.monotonic()
    with pytest.raises(requests.RequestException) as failure:
        send()
    return time.monotonic() - started, failure.value


@pytest.mark.parametrize("handle", [trickle_the_body, never_send_headers])
def test_a_response_never_finished_is_cut_off_at_the_deadline(
    handle: Callable[[socket.socket, threading.Event], None],
) -> None:
    with serving(handle) as url, session() as client:
        elapsed, error = timed_failure(lambda: client.get(url, timeout=0.5))
    assert isinstance(error, transport.RequestDeadlineExceeded)
    assert isinstance(error, requests.exceptions.Timeout)
    assert str(error) == "the server did not finish answering within 0.5 s"
    assert 0.5 <= elapsed < 0.5 + SLACK


def test_a_server_that_never_reads_the_request_is_cut_off_at_the_deadline() -> None:
    def endless_upload() -> Iterator[bytes]:
        while True:
            yield b"x" * 65536

    with serving(never_read) as url, session() as client:
        elapsed, error = timed_failure(lambda: client.post(url, data=endless_upload(), timeout=0.5))
    assert isinstance(error, transport.RequestDeadlineExceeded)
    assert 0.5 <= elapsed < 0.5 + SLACK


class QuickAnswers(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection, one server thread, for all
    disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_: object) -> None:
        pass


@contextlib.contextmanager
def answering_at_once() -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), QuickAnswers)
    serve = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    serve.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v2/tasks"
    finally:
        server.shutdown()
        serve.join()
        server.server_close()


@contextlib.contextmanager
def threads_started() -> Iterator[list[str]]:
    """The names of the threads started meanwhile, however briefly they lived."""
    started: list[str] = []
    before = threading.gettrace()

    def note(_frame: FrameType, _event: str, _arg: object) -> None:
        started.append(threading.current_thread().name)
        sys.settrace(None)  # runs once, first thing in each new thread: trace nothing more

    threading.settrace(note)
    try:
        yield started
    finally:
        threading.settrace(before)


def test_sequential_requests_start_no_thread_and_leave_no_deadline_behind() -> None:
    threads_before = set(threading.enumerate())
    with answering_at_once() as url, session() as client:
        client.get(url, timeout=60).raise_for_status()  # the watcher is running from here on
        with threads_started() as started:
            for _ in range(200):
                # Deadlines far off: each one is cancelled, none expires to leave the heap.
                assert client.get(url, timeout=60).json() == {}
        assert transport.pending_deadlines() == 0
    assert started == []
    new = set(threading.enumerate()) - threads_before
    assert len(new) <= 1  # the watcher, if no earlier test started it
    assert all(thread.daemon for thread in new)


def test_concurrent_sessions_sharing_a_throttle_are_each_cut_at_their_own_deadline() -> None:
    deadlines = [0.4, 0.8, 1.2, 1.6, 2.0]
    throttle = Throttle(len(deadlines))
    results: dict[float, tuple[float, BaseException]] = {}
    ready = threading.Barrier(len(deadlines))

    def read(url: str, deadline: float) -> None:
        with session(throttle) as client:  # one session per reader thread, never shared
            ready.wait()
            results[deadline] = timed_failure(lambda: client.get(url, timeout=deadline))

    with serving(trickle_the_body) as url:
        readers = [threading.Thread(target=read, args=(url, d)) for d in deadlines]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()

    assert sorted(results) == deadlines
    for deadline, (elapsed, error) in results.items():
        assert isinstance(error, transport.RequestDeadlineExceeded), deadline
        assert str(error) == f"the server did not finish answering within {deadline:g} s"
        assert deadline <= elapsed < deadline + SLACK, (deadline, elapsed)
    assert transport.pending_deadlines() == 0


def test_a_deadline_passed_while_connecting_shuts_the_socket_once_it_exists() -> None:
    received: list[bytes] = []

    def note_the_request(connection: socket.socket, _stop: threading.Event) -> None:
        received.append(read_request_head(connection))

    with serving(note_the_request) as url, session() as client:
        # Through urllib3's own extension point, as the transport itself: connections whose
        # connecting takes 0.6 s, as behind a slow DNS server.
        adapter = t.cast("HTTPAdapter", client.get_adapter(url))
        pools = adapter.poolmanager.pool_classes_by_scheme
        watched_pool = pools["http"]
        watched = watched_pool.ConnectionCls

        def slow_to_resolve(connection: t.Any) -> socket.socket:
            time.sleep(0.6)
            sock: socket.socket = watched._new_conn(connection)  # noqa: SLF001
            return sock

        slow = type("SlowToResolve", (watched,), {"_new_conn": slow_to_resolve})
        slow_pool = type("SlowPool", (watched_pool,), {"ConnectionCls": slow})
        adapter.poolmanager.pool_classes_by_scheme = {**pools, "http": slow_pool}

        elapsed, error = timed_failure(lambda: client.get(url, timeout=0.2))
        deadline_passed_at = time.monotonic()
        while not received and time.monotonic() < deadline_passed_at + SLACK:
            time.sleep(0.01)
    assert isinstance(error, transport.RequestDeadlineExceeded)
    assert 0.6 <= elapsed < 0.6 + SLACK
    # Shut as soon as it was connected, before a byte of the request was sent.
    assert received == [b""]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_forked_child_gets_its_own_watcher() -> None:
    with serving(trickle_the_body) as url:
        with session() as client, contextlib.suppress(requests.RequestException):
            client.get(url, timeout=0.1)  # the parent's watcher is running
        child = os.fork()
        if child == 0:  # pragma: no cover - the child reports by its exit status only
            code = 1
            try:
                with session() as client:
                    elapsed, error = timed_failure(lambda: client.get(url, timeout=0.5))
                if isinstance(error, transport.RequestDeadlineExceeded) and elapsed < 0.5 + SLACK:
                    code = 0
            finally:
                os._exit(code)
        waited = time.monotonic()
        status = 0
        while time.monotonic() < waited + 10:
            pid, status = os.waitpid(child, os.WNOHANG)
            if pid:
                break
            time.sleep(0.05)
        else:
            os.kill(child, 9)
            os.waitpid(child, 0)
            pytest.fail("the forked child's request was never cut off")
    assert os.waitstatus_to_exitcode(status) == 0
