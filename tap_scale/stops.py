"""How a run stops: one paragraph on stderr, and an exit code that tells a scheduler the truth.

- 0: the sync finished.
- 1: it stopped on an error it names: settings, Scale's answers, the network, its own output.
- 128 + the signal's number: interrupted; 130 for SIGINT (Ctrl-C), 143 for SIGTERM, 129 for
  SIGHUP. The state is written first, at a whole message, so the next run resumes from it; a
  signal that comes before the tap wrote any message writes nothing (`tap_scale.cli` handles
  those that come before the tap exists).

Messages reach stdout through `ScaleMessageWriter`, the one place that writes them: it masks
secrets, turns a closed or full stdout into a stop, and holds a signal that arrives while a
message is half written until the message is whole, so a target never reads a cut line. Where
the RLHF rows are derived in a second process (`tap_scale.row_process`), it hands that process
every message instead, in order, and a run ends once the process has written them all.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import sys
import threading
import traceback
import typing as t
from urllib.parse import urlsplit

import click
import requests
from singer_sdk.contrib.msgspec import MsgSpecWriter, serialize_jsonl
from singer_sdk.exceptions import (
    FatalAPIError,
    MapExpressionError,
    RetriableAPIError,
    StreamMapConfigError,
)

from tap_scale import row_process
from tap_scale.answers import network_failure, repair_strings
from tap_scale.cli import STOP_SIGNALS, interrupted_before_sync
from tap_scale.progress import whereabouts
from tap_scale.redaction import redact_bytes, registered
from tap_scale.transport import RequestDeadlineExceeded

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import FrameType

    from singer_sdk import Tap
    from singer_sdk.singerlib import Message

EXIT_ERROR = 1

_T = t.TypeVar("_T")
#: Hears how many records of a stream another process wrote (`SyncProgress.derived`).
Derived = t.Callable[[str, int], None]


class Interrupted(BaseException):
    """A stop signal arrived. A BaseException, as KeyboardInterrupt: no handler of errors stops it.

    Attributes:
        signum: The signal's number.
        state_written: Whether the state was written before stopping.
        syncing: Whether the tap had written any message; before, there is no state to write.
    """

    def __init__(self, signum: int, *, state_written: bool, syncing: bool = True) -> None:
        """Record which signal stopped the run, and whether the state was written first."""
        super().__init__(signum)
        self.signum = signum
        self.state_written = state_written
        self.syncing = syncing


class OutputFailed(BaseException):
    """Standard output cannot take the tap's messages: closed, or its device full.

    Attributes:
        error: What writing to stdout raised; None when there is no stdout at all.
        messages: Whether Singer messages were being written (a sync), not a catalog.
    """

    def __init__(self, error: OSError | ValueError | None, *, messages: bool = True) -> None:
        """Keep what writing raised."""
        super().__init__(error)
        self.error = error
        self.messages = messages


class ScaleMessageWriter(MsgSpecWriter):
    """The SDK's msgspec writer: secrets masked, stdout failures and signals stopping cleanly."""

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:  # noqa: ANN401 - the SDK's own
        """Start with no message being written and no stop waiting for one."""
        super().__init__(*args, **kwargs)
        #: True while a message is being written: a stop now would cut it.
        self.busy = False
        #: A stop that arrived while a message was being written; runs once it is whole.
        self.pending_stop: Callable[[], None] | None = None
        #: True once a message has been written: from then on, a stop writes the state first.
        self.started = False
        self._rows: row_process.RowProcess | None = None

    @override
    def serialize_message(self, message: Message) -> bytearray:
        try:
            return super().serialize_message(message)
        except UnicodeEncodeError:
            # A lone UTF-16 surrogate, which no UTF-8 output can hold: one a lenient reading
            # kept, or one a JSON string inside a record decoded to. Replaced, and named.
            content = message.to_dict()
            repaired = repair_strings(content)
            logging.getLogger("tap-scale").warning(
                "A %s message held characters no UTF-8 output can hold (lone surrogates), "
                "replaced by U+FFFD at: %s",
                content.get("type", "Singer"),
                ", ".join(".".join(map(str, path)) for path in repaired[:5]),
            )
            return serialize_jsonl(content)

    @override
    def write_message(self, message: Message) -> None:
        self.write_serialized(self.format_message(message))

    def write_serialized(self, data: bytes | bytearray) -> None:
        """Write messages already serialized as JSON lines (the task rows, a task at once)."""
        data = redact_bytes(data)
        self._write(lambda: self._output(data))

    def derive_rows(self, aliases: Mapping[str, str], derived: Derived) -> HandOver | None:
        """Hand tasks' rows to a process of their own (`tap_scale.row_process`), if it can help.

        ``aliases`` are the stream names one task stream's rows go under; ``derived(stream,
        count)`` hears what was written. Returns what hands it a task, or None: then the caller
        derives the rows itself.
        """
        if self._rows is None or not self._rows.writes:
            if not row_process.available():
                return None
            logger = logging.getLogger("tap-scale")
            try:
                self._rows = row_process.RowProcess(registered(), derived)
            except OSError as error:  # no Python to start (a frozen or embedded one)
                logger.debug("The RLHF rows are derived in the tap's own process: %s", error)
                return None
            logger.info(
                "The RLHF rows are derived in a second process (pid %d), on another core; it "
                "writes every message of this sync.",
                self._rows.pid,
            )
        rows = self._rows
        return HandOver(self._write, rows, self._write(lambda: rows.streams(aliases)))

    def drain_rows(self) -> None:
        """Wait until the row process has written everything handed over, rows counted."""
        if self._rows is not None and not self._rows.closing:
            self._write(self._rows.drain)

    def _write(self, write: Callable[[], _T]) -> _T:
        """Write, holding any stop until the write is whole; a failing output stops the run."""
        self.busy = self.started = True
        try:
            written = write()
        except (OSError, ValueError) as error:  # ValueError: stdout was closed
            raise OutputFailed(error) from error
        finally:
            self.busy = False
        if (stop := self.pending_stop) is not None:
            self.pending_stop = None
            stop()
        return written

    def _output(self, data: bytes | bytearray) -> None:
        if self._rows is not None and self._rows.writes:
            # Every message goes through the row process once it runs, keeping their order.
            self._rows.send(row_process.WRITE, data)
            return
        stdout = sys.stdout
        if stdout is None:  # Python's stdout when file descriptor 1 was closed
            raise OutputFailed(None)
        stdout.buffer.write(data)
        stdout.flush()


class HandOver:
    """Hands one task stream's tasks to the row process, through the tap's message writer."""

    def __init__(
        self, write: Callable[[Callable[[], None]], None], rows: row_process.RowProcess, index: int
    ) -> None:
        """Hand over with ``write`` (the writer's); rows go under the names known as ``index``."""
        self._write = write
        self._rows = rows
        self._head = bytes([index])

    def behind(self) -> bool:
        """Whether the process has more to do than it will soon take (`RowProcess.behind`)."""
        return self._rows.behind()

    def __call__(self, task: bytes) -> None:
        """Hand over a task, its JSON: the process derives and writes its rows."""
        self._write(lambda: self._rows.send(row_process.TASK, self._head, task))


def handle_signals(tap: Tap) -> None:
    """Stop on SIGINT, SIGTERM and SIGHUP with the state written and the signal's exit code.

    Installed where the SDK would install its own handlers, as the tap is made
    (`TapScale._setup_signal_handlers`): the SDK's exit 0 after an interruption, and a
    scheduler would take an interrupted sync for a finished one. Until the tap has written its
    first message, a stop writes nothing: the state may not even be loaded yet, and a state
    written then would tell the next run less than the one it started from.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may handle signals (a tap made by library code)

    def stop(signum: int, frame: FrameType | None) -> None:
        del frame
        writer = getattr(tap, "message_writer", None)
        if not isinstance(writer, ScaleMessageWriter) or not writer.started:
            raise Interrupted(signum, state_written=False, syncing=False)
        if writer.busy:
            if writer.pending_stop is None:
                writer.pending_stop = lambda: _stop(tap, signum)
                return
            # Asked twice while a message is still being written (a target that reads no
            # more): stop now, without a state that could not be written whole anyway.
            raise Interrupted(signum, state_written=False)
        _stop(tap, signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)


def _stop(tap: Tap, signum: int) -> None:
    try:
        # The state as it stands is always safe to resume from: a partition's bookmark moves
        # only once all of its records were written.
        tap.state_writer.write_state(tap.state)
    except OutputFailed:
        raise Interrupted(signum, state_written=False) from None
    raise Interrupted(signum, state_written=True)


def run(invoke: Callable[[], None], logger: logging.Logger) -> None:
    """Run the CLI; each way it can stop ends as one paragraph on stderr and its exit code."""
    # Why the row process failed, if it did (a stop while waiting for it leaves it unknown).
    rows: Exception | None = None
    try:
        try:
            invoke()
        finally:
            # However the run ends, what was handed to the row process is written first; but a
            # stop that could not wait for the state (asked twice) does not wait for it either.
            stopping = sys.exc_info()[1]
            rows = row_process.finish_started(
                wait=not (isinstance(stopping, Interrupted) and not stopping.state_written)
            )
        _raise_failure(rows)
    except Interrupted as stop:
        logger.error(  # noqa: TRY400 - the message is the point
            _interrupted(stop.signum, state_written=stop.state_written and rows is None)
            if stop.syncing
            else interrupted_before_sync(stop.signum)
        )
        sys.exit(128 + stop.signum)
    except KeyboardInterrupt:  # Ctrl-C with Python's own handler (a tap made by library code)
        logger.error(_interrupted(signal.SIGINT, state_written=False))  # noqa: TRY400
        sys.exit(128 + signal.SIGINT)
    except OutputFailed as failure:
        _stop_output_failed(failure, logger)
    except click.exceptions.Exit as done:
        if rows is None or done.exit_code != 0:
            raise  # `--test` and the like end so, once done
        _failed(rows, logger)
    except (click.ClickException, click.exceptions.Abort):
        raise  # click shows these itself, as one paragraph (InputError is one)
    except Exception as error:  # noqa: BLE001 - whatever it is: one paragraph, no traceback
        _stop_on_error(error, logger)


def _stop_output_failed(failure: OutputFailed, logger: logging.Logger) -> t.NoReturn:
    _quiet_stdout()
    logger.error("tap-scale stopped: %s", _output_failed(failure.error, messages=failure.messages))
    sys.exit(EXIT_ERROR)


def _stop_on_error(error: Exception, logger: logging.Logger) -> t.NoReturn:
    logger.error("tap-scale stopped%s", _error_paragraph(error))
    logger.debug("The traceback of that error:", exc_info=error)
    sys.exit(EXIT_ERROR)


def _failed(failure: Exception, logger: logging.Logger) -> t.NoReturn:
    """Stop as the row process's failure says, after a run that otherwise ended well."""
    if isinstance(failure, OSError):
        _stop_output_failed(OutputFailed(failure), logger)
    _stop_on_error(failure, logger)


def _raise_failure(failure: Exception | None) -> None:
    """Raise what stopped the row process: its output's error as any output's, or its own."""
    if isinstance(failure, OSError):
        raise OutputFailed(failure)
    if failure is not None:
        raise failure


def _error_paragraph(error: Exception) -> str:  # noqa: PLR0911 - one return per kind
    """What went wrong and what to do, after "tap-scale stopped"."""
    if isinstance(error, FatalAPIError):
        return f": {error}"
    if isinstance(error, row_process.RowProcessError):
        return (
            f": the process that derives the RLHF rows and writes every message stopped "
            f"({error}), so the target may have got its last message cut. Run the sync again: "
            "it resumes from the last state the target saved. If it recurs, report it to "
            "tap-scale's maintainers."
        )
    if isinstance(error, RetriableAPIError):
        return (
            f": {error}. It kept failing through every try (the `max_tries` setting); run the "
            "sync again later, it resumes from the last state."
        )
    if isinstance(error, requests.RequestException):
        return f": {_request_failed(error)}"
    if isinstance(error, OSError) and error.errno in _OUTPUT_ERRNOS:
        # Only writing fails so: to stdout, the one file the tap writes (`--about`, `--help`).
        _quiet_stdout()
        return f": {_output_failed(error, messages=False)}"
    if isinstance(error, RecursionError):
        return (
            f": a record Scale sent{whereabouts()} nests deeper than the Singer SDK can process "
            "(a few hundred levels; a task's `metadata` perhaps), so it cannot be written. Ask "
            "Scale support to look at that partition's tasks; meanwhile leave its project, batch "
            "or dataset out of the settings (`project_ids`, `batch_ids`, ...) so that the rest "
            "syncs."
        )
    reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    named = isinstance(error, (MapExpressionError, StreamMapConfigError))
    if named or any(
        # The SDK lets an expression's own error through (a division by zero, say).
        frame.f_globals.get("__name__") in _STREAM_MAP_MODULES
        for frame, _ in traceback.walk_tb(error.__traceback__)
    ):
        shown = str(error) if named else reason
        return (
            f": a stream map failed on a record{whereabouts()}: {shown.rstrip('.')}. Fix the "
            "`stream_maps` setting (`meltano config set tap-scale stream_maps '...'`) and run "
            "again."
        )
    return (
        f" on an error it does not know{whereabouts()}: {reason.rstrip('.')}. Run it again: the "
        "next run resumes from the last state the target saved. If it recurs, report it to "
        "tap-scale's maintainers with the log of a run with `TAP_SCALE_LOGLEVEL=DEBUG`, which "
        "holds the traceback."
    )


# What writing to a closed pipe or a full disk raises.
_OUTPUT_ERRNOS = frozenset({errno.EPIPE, errno.ENOSPC, errno.EDQUOT})
# Modules whose frames mark an error raised while a stream map was applied to a record.
_STREAM_MAP_MODULES = frozenset({"singer_sdk.mapper", "simpleeval"})


def write_stdout(text: str) -> None:
    """Write text that is no Singer message (the catalog) to stdout, stopping if it cannot."""
    try:
        if sys.stdout is None:
            raise OutputFailed(None)
        sys.stdout.write(text)
        sys.stdout.flush()
    except (OSError, ValueError) as error:
        raise OutputFailed(error, messages=False) from error


def _interrupted(signum: int, *, state_written: bool) -> str:
    name = signal.Signals(signum).name
    resume = (
        "It wrote the state first: the next run resumes from it and reads again only what "
        "was not finished."
        if state_written
        else "It could not write the state first: the next run resumes from the last state "
        "the target saved, and reads again what was not finished."
    )
    return f"tap-scale stopped: interrupted by {name} (exit code {128 + signum}). {resume}"


def _output_failed(error: OSError | ValueError | None, *, messages: bool = True) -> str:
    resume = (
        " The next run resumes from the last state the target saved, and reads again what "
        "came after it."
        if messages
        else " Run it again once its output can be written."
    )
    if error is None:
        return (
            "it has no standard output to write its messages to (stdout is closed). Run it "
            "with its output connected to a target or a file." + resume
        )
    code = error.errno if isinstance(error, OSError) else None
    if code == errno.EPIPE:
        return (
            "its output was closed: whatever reads tap-scale's messages (the target) stopped "
            "reading. See the target's own log for why." + resume
        )
    if code in {errno.ENOSPC, errno.EDQUOT}:
        return (
            "its output could not be written: no space left on the device its messages go to. "
            "Free some space." + resume
        )
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return f"its output could not be written: {reason}." + resume


def _request_failed(error: requests.RequestException) -> str:
    request = error.request
    endpoint = f"{request.method} {urlsplit(str(request.url)).path}" if request else "Scale"
    if isinstance(error, RequestDeadlineExceeded):
        return (
            f"{endpoint} failed through every try (the `max_tries` setting): {error}, the "
            "`request_timeout` setting, which bounds each whole request, body included. A "
            "server or proxy that slow is overloaded or throttling: run the sync again later "
            "(it resumes from the last state), or raise `request_timeout`."
        )
    return (
        f"{endpoint} failed through every try (the `max_tries` setting) with "
        f"{network_failure(error)}. Check the `api_url` setting and the network, then run the "
        "sync again; it resumes from the last state."
    )


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that Python's own flush at exit does not fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
