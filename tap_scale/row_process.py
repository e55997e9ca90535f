"""The RLHF rows derived in a second process, which writes every message of the sync, in order.

Deriving a task's rows (`tap_scale.row_messages`) costs more than reading the task does: about
0.3 ms of CPU against 0.2, so in one interpreter selecting the row streams cut a sync to 0.4 of
the throughput of tasks alone. In a process of its own, on another core, a task's rows are
derived while the tap reads and writes the next tasks.

That process writes every message of the sync, not only the rows: a target must read a STATE
after the records it covers (an interrupted run resumes from it), and one writer keeps that order
by construction. From the moment it starts, the tap's message writer (`stops.ScaleMessageWriter`)
hands it each message it would have written to stdout, and each task whose rows are wanted, in
order, through one pipe; the process writes them to the stdout it shares with the tap. It stops
at the end of that pipe, having written everything the tap handed over, whatever stopped the tap
(an error, a signal, or SIGKILL: a message the tap had only half handed over is dropped whole).
It ignores stop signals itself, in a session of its own: the tap decides when the sync stops.

Each side derives as much as it has time for: a task goes to the process unless three quarters
of a pipe (some fifty tasks) wait for it, and then the tap derives that task's rows itself and
hands them over written, rather than wait with its own core idle. The bytes are the same either
way (the same `RowMessages`).

Only where it can help and stdout is a file descriptor (a pipe to the target, a file), on
POSIX with more than one core; elsewhere the tap derives every row itself. What the process
derived comes back on a second pipe, counted per stream, for the tap's progress lines and
summary; so does why it stopped, if it could not write.

Frames on the pipe: one byte saying what follows, its length (4 bytes, big-endian), then it.
"""

from __future__ import annotations

import array
import atexit
import contextlib
import errno
import json
import os
import select
import signal
import struct
import subprocess
import sys
import time
import typing as t
from pathlib import Path

if os.name == "posix":
    import fcntl
    import termios

if t.TYPE_CHECKING:
    from collections.abc import Callable, Mapping

#: Which frames the tap hands over. `SECRETS` comes first, once.
SECRETS, WRITE, STREAMS, TASK, DRAIN = b"K", b"W", b"D", b"T", b"S"
_HEADER = struct.Struct(">cI")
# Seconds between two reports of what was derived: often enough for progress lines.
_REPORT_EVERY = 0.5
# How the process exits: everything written; an error of its own; stdout failed (reported).
EXIT_WRITTEN, EXIT_FAILED, EXIT_OUTPUT_FAILED = 0, 1, 2


def available() -> bool:
    """Whether a row process can help: POSIX, more than one core, stdout a file descriptor.

    Elsewhere (a test capturing stdout, one core) the tap derives rows itself.
    """
    stdout = sys.__stdout__
    if os.name != "posix" or stdout is None or sys.stdout is not stdout:
        return False
    try:
        stdout.fileno()
    except (OSError, ValueError):
        return False
    return (
        len(os.sched_getaffinity(0)) > 1
        if hasattr(os, "sched_getaffinity")
        else ((os.cpu_count() or 1) > 1)
    )


# Bytes the pipe to the process holds (Linux; 64 KiB by default, and 1 MiB the most an
# unprivileged process may ask for): a few pages of tasks, so that neither side waits for the
# other at each task.
_PIPE_SIZE = 1024 * 1024


def _widen(pipe: int) -> int:
    """Let the pipe hold `_PIPE_SIZE` bytes, where the system allows; the bytes it holds."""
    with contextlib.suppress(OSError, AttributeError):
        return fcntl.fcntl(pipe, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    return 64 * 1024  # POSIX's least


def _queued(pipe: int) -> int:
    """The bytes waiting in a pipe for its reader (Linux answers this of either end)."""
    waiting = array.array("i", [0])
    try:
        fcntl.ioctl(pipe, termios.FIONREAD, waiting)
    except OSError:
        return 0
    return waiting[0]


# The process runs this module from the same installation as the tap (`-m` would put the
# working directory first on its path, where another checkout of tap-scale may lie).
_ROOT = str(Path(__file__).resolve().parent.parent)
_MAIN = "import sys; sys.path.insert(0, {root!r}); from tap_scale.row_process import main; main()"

_started: list[RowProcess] = []


def finish_started(*, wait: bool = True) -> Exception | None:
    """Finish every row process started (`RowProcess.finish`); the first failure, if any.

    Each is taken off the list before it is waited for: a stop while waiting ends the wait,
    and a later call does not wait again (a second signal stops the tap at once).
    """
    failures = []
    while _started:
        failures.append(_started.pop(0).finish(wait=wait))
    return next((failure for failure in failures if failure is not None), None)


class RowProcessError(RuntimeError):
    """The row process stopped on an error of its own (not its output's): what it said."""


class RowProcess:
    """The tap's side: starts the process, hands it frames, reads back what it derived."""

    def __init__(self, secrets: tuple[str, ...], derived: Callable[[str, int], None]) -> None:
        """Start it writing to the tap's stdout; ``derived(stream, count)`` hears its counts.

        The secrets travel in the pipe, never in its command line or environment: variables
        holding one (`TAP_SCALE_API_KEY`) are left out of its environment.
        """
        self._reports, reports_out = os.pipe()
        try:
            self._process = subprocess.Popen(  # noqa: S603 - this package's own module
                [sys.executable, "-c", _MAIN.format(root=_ROOT), str(reports_out)],
                stdin=subprocess.PIPE,
                # Unbuffered: a frame cut by a stop leaves nothing behind that closing the pipe
                # would have to write first, into a pipe that may not take it.
                bufsize=0,
                stdout=sys.__stdout__.fileno() if sys.__stdout__ is not None else None,
                pass_fds=(reports_out,),
                start_new_session=True,
                env={
                    name: value
                    for name, value in os.environ.items()
                    if not any(secret in value for secret in secrets)
                },
            )
        except BaseException:
            os.close(self._reports)
            raise
        finally:
            os.close(reports_out)
        #: The process's id, as the tap logs it.
        self.pid = self._process.pid
        os.set_blocking(self._reports, False)
        assert self._process.stdin is not None  # noqa: S101 - asked for above
        self._pipe = self._process.stdin
        self._pipe_fd = self._pipe.fileno()
        # Tasks waiting beyond this many bytes: the process is behind (`behind`). Not sooner:
        # rows the tap derives take the interpreter from its threads reading pages ahead
        # (measured: from half a pipe on, 100,000 tasks took 10% longer).
        self._behind = _widen(self._pipe_fd) * 3 // 4
        self._pending = b""
        self._derived = derived
        self._totals: dict[str, int] = {}
        self._said: dict[str, t.Any] = {}
        self._streams = 0
        #: Set as the tap stops handing frames over: nothing may be written then, by anyone,
        #: until the process has exited (its writes and the tap's would interleave).
        self.closing = False
        #: Set once it has exited, and why it failed, if it did (`failure`).
        self.finished = False
        self._failure: Exception | None = None
        atexit.register(self.finish)  # a tap made by library code, outside `stops.run`
        _started.append(self)
        self.send(SECRETS, json.dumps(secrets).encode())

    @property
    def writes(self) -> bool:
        """Whether messages go through the process: until it has exited whole.

        And after a failure: then nothing may go straight to stdout, where a state would cover
        rows lost with the process.
        """
        return not self.finished or self._failure is not None

    def send(self, kind: bytes, *body: bytes | bytearray) -> None:
        """Hand one frame over; raise why the process stopped, if it did."""
        if self.closing:
            # The pipe is closed (a stop as the run ends): no frame can follow.
            raise OSError(errno.EPIPE, "the row process takes no more messages")
        try:
            _send_all(self._pipe_fd, [_HEADER.pack(kind, sum(map(len, body))), *body])
        except BrokenPipeError as error:  # it has exited
            self._process.wait()
            raise self.failure() or error from None
        if kind == TASK:
            self._read_reports()

    def behind(self) -> bool:
        """Whether the process has more waiting than it will soon take: then the tap derives.

        The tap waits for the process otherwise, with a core of its own idle: so each side
        derives as much as it has time for, and a sync waits for neither.
        """
        return self.closing or _queued(self._pipe_fd) > self._behind

    def streams(self, aliases: Mapping[str, str]) -> int:
        """Announce the stream names one task stream's rows go under; returns their number."""
        self.send(STREAMS, json.dumps(aliases).encode())
        self._streams += 1
        return self._streams - 1

    def drain(self) -> None:
        """Wait until everything handed over is written, and its rows counted."""
        self.send(DRAIN)
        while True:
            select.select([self._reports], [], [])
            drained = self._read_reports()
            if drained is None:  # it stopped
                self._process.wait()
                raise self.failure() or RowProcessError("it ended before writing everything")
            if drained:
                return

    def finish(self, *, wait: bool = True) -> Exception | None:
        """Close the pipe, wait for the process to write what it has; why it failed, if it did.

        Without ``wait`` (a stop that must not wait for a target reading no more), the process
        is left to write what it has on its own, and to end.
        """
        if self.closing:
            return None
        self.closing = True
        with contextlib.suppress(OSError, ValueError):
            self._pipe.close()
        if not wait:
            return None
        # Its reports are read as it finishes (it must not wait on a full pipe to the tap): they
        # end as it exits.
        while self._read_reports() is not None:
            select.select([self._reports], [], [])
        self._process.wait()
        failure = self.failure()
        self.finished = True
        os.close(self._reports)
        return failure

    def failure(self) -> Exception | None:
        """Why the process stopped, once it has: its output's error, or its own; else None."""
        if self.finished or self._process.returncode is None:
            return self._failure
        # It has exited: its reports end here.
        while self._read_reports() is not None:
            pass
        code = self._process.returncode
        if code == EXIT_WRITTEN:
            return None
        if code == EXIT_OUTPUT_FAILED and "output_failed" in self._said:
            number = self._said["output_failed"]
            self._failure = OSError(number, os.strerror(number))
        elif "error" in self._said:
            self._failure = RowProcessError(self._said["error"])
        elif code < 0:
            self._failure = RowProcessError(f"it was stopped by {_signal_name(-code)}")
        else:
            self._failure = RowProcessError(f"it exited with code {code}")
        return self._failure

    def _read_reports(self) -> bool | None:
        """Take in the reports that came; whether one said it drained; None at their end."""
        try:
            chunk = os.read(self._reports, 65536)
        except BlockingIOError:
            return False
        if not chunk:
            return None
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        drained = False
        for line in lines:
            report = json.loads(line)
            drained = drained or report.pop("drained", False)
            for stream, total in report.pop("totals").items():
                more = total - self._totals.get(stream, 0)
                if more:
                    self._totals[stream] = total
                    self._derived(stream, more)
            self._said.update(report)
        return drained


# --- The process's side -------------------------------------------------------------------------


def main() -> None:
    """Write what the tap hands over until the pipe ends; derive the rows of each task."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    reports = int(sys.argv[-1])
    # Never blocked by the tap: a report is skipped when the pipe is full, unless it must come.
    os.set_blocking(reports, False)
    tap_gone = False

    def report(*, needed: bool = True, **fields: t.Any) -> None:  # noqa: ANN401 - JSON
        """Tell the tap the totals so far, and ``fields``; ``needed``: wait for room to."""
        nonlocal tap_gone
        # One line, under the size a pipe takes whole (PIPE_BUF): never half written.
        line = json.dumps({"totals": totals, **fields}).encode() + b"\n"
        while not tap_gone:
            try:
                os.write(reports, line)
            except BlockingIOError:  # noqa: PERF203 - a report every half second at most
                if not needed:
                    return  # the totals are cumulative: the next report has these too
                select.select([], [reports], [])
            except OSError:
                # The tap has ended (killed): what it handed over is still written.
                tap_gone = True
            else:
                return

    totals: dict[str, int] = {}
    try:
        _write_all(report, totals)
    except OSError as error:
        # Writing to stdout failed (closed by the target, a full disk): the tap says so.
        report(output_failed=error.errno or errno.EIO)
        with contextlib.suppress(OSError):
            # Python's own flush at exit would fail again, with a traceback.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_OUTPUT_FAILED)
    except Exception as error:  # noqa: BLE001 - whatever it is: the tap says it, in one paragraph
        from tap_scale.redaction import redact  # noqa: PLC0415

        report(error=redact(f"{type(error).__name__}: {error}"))
        sys.exit(EXIT_FAILED)
    report()


def _write_all(report: Callable[..., None], totals: dict[str, int]) -> None:  # noqa: C901
    """The process's loop: each frame written or derived and written, in order."""
    # Imported once the signals are set: they take a moment.
    from tap_scale import memory, redaction  # noqa: PLC0415
    from tap_scale.reading import task_pages  # noqa: PLC0415
    from tap_scale.row_messages import HOLDS, RowMessages  # noqa: PLC0415

    memory.tune()  # as the tap's: the same objects made and freed
    frames = sys.stdin.buffer
    out = sys.stdout.buffer
    derivers: list[tuple[RowMessages, tuple[str | None, ...]]] = []
    reported = time.monotonic()
    while (frame := _read_frame(frames)) is not None:
        kind, body = frame
        if kind == WRITE:
            out.write(body)
            out.flush()
        elif kind == TASK:
            messages, names = derivers[body[0]]
            payload, counts = messages.encode(task_pages.parse_any(body[1:]))
            if payload:
                out.write(redaction.redact_bytes(payload))
                out.flush()
            for name, count in zip(names, counts, strict=True):
                if count and name is not None:
                    totals[name] = totals.get(name, 0) + count
            if time.monotonic() - reported >= _REPORT_EVERY:
                reported = time.monotonic()
                report(needed=False)
        elif kind == STREAMS:
            aliases = json.loads(body)
            derivers.append((RowMessages(aliases), tuple(aliases.get(holds) for holds in HOLDS)))
        elif kind == DRAIN:
            report(drained=True)
        elif kind == SECRETS:
            redaction.adopt(json.loads(body))


def _send_all(pipe: int, parts: list[bytes | bytearray]) -> None:
    """Write the parts into the pipe, in one system call where it takes them all at once.

    One call, not one per part: each write wakes the process, and a frame's header is five
    bytes. A pipe may take only part of a write; the rest follows.
    """
    views = [memoryview(part) for part in parts if part]
    while views:
        written = os.writev(pipe, views)
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if views:
            views[0] = views[0][written:]


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:  # a real-time signal, which has no name of its own
        return f"signal {signum}"


def _read_frame(frames: t.BinaryIO) -> tuple[bytes, bytes] | None:
    """The next frame, or None at the end of the pipe (a frame cut short is dropped)."""
    header = frames.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    kind, length = _HEADER.unpack(header)
    body = frames.read(length)
    return (kind, body) if len(body) == length else None
