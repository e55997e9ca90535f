"""How a run stops: one paragraph on stderr, and an exit code that tells a scheduler the truth.

- 0: the sync finished.
- 1: it stopped on an error it names: settings, Scale's answers, the network, its own output.
- 128 + the signal's number: interrupted; 130 for SIGINT (Ctrl-C), 143 for SIGTERM, 129 for
  SIGHUP. The state is written first, at a whole message, so the next run resumes from it.

Messages reach stdout through `ScaleMessageWriter`, the one place that writes them: it masks
secrets, turns a closed or full stdout into a stop, and holds a signal that arrives while a
message is half written until the message is whole, so a target never reads a cut line.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import sys
import threading
import typing as t
from urllib.parse import urlsplit

import requests
from singer_sdk.contrib.msgspec import MsgSpecWriter, serialize_jsonl
from singer_sdk.exceptions import (
    FatalAPIError,
    MapExpressionError,
    RetriableAPIError,
    StreamMapConfigError,
)

from tap_scale.answers import network_failure, repair_strings
from tap_scale.progress import whereabouts
from tap_scale.redaction import redact_bytes
from tap_scale.transport import RequestDeadlineExceeded

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

    from singer_sdk import Tap
    from singer_sdk.singerlib import Message

EXIT_ERROR = 1
# The signals a scheduler, a terminal or a person stops a process with.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Interrupted(BaseException):
    """A stop signal arrived. A BaseException, as KeyboardInterrupt: no handler of errors stops it.

    Attributes:
        signum: The signal's number.
        state_written: Whether the state was written before stopping.
    """

    def __init__(self, signum: int, *, state_written: bool) -> None:
        """Record which signal stopped the run, and whether the state was written first."""
        super().__init__(signum)
        self.signum = signum
        self.state_written = state_written


class OutputFailed(BaseException):
    """Standard output cannot take the tap's messages: closed, or its device full.

    Attributes:
        error: What writing to stdout raised; None when there is no stdout at all.
    """

    def __init__(self, error: OSError | ValueError | None) -> None:
        """Keep what writing raised."""
        super().__init__(error)
        self.error = error


class ScaleMessageWriter(MsgSpecWriter):
    """The SDK's msgspec writer: secrets masked, stdout failures and signals stopping cleanly."""

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:  # noqa: ANN401 - the SDK's own
        """Start with no message being written and no stop waiting for one."""
        super().__init__(*args, **kwargs)
        #: True while a message is being written: a stop now would cut it.
        self.busy = False
        #: A stop that arrived while a message was being written; runs once it is whole.
        self.pending_stop: Callable[[], None] | None = None

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
        stdout = sys.stdout
        self.busy = True
        try:
            if stdout is None:  # Python's stdout when file descriptor 1 was closed
                raise OutputFailed(None)
            stdout.buffer.write(data)
            stdout.flush()
        except (OSError, ValueError) as error:  # ValueError: stdout was closed
            raise OutputFailed(error) from error
        finally:
            self.busy = False
        if (stop := self.pending_stop) is not None:
            self.pending_stop = None
            stop()


def handle_signals(tap: Tap) -> None:
    """Stop on SIGINT, SIGTERM and SIGHUP with the state written and the signal's exit code.

    Replaces the SDK's handlers, installed as the tap is made, which exit 0 after an
    interruption: a scheduler would take an interrupted sync for a finished one.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may handle signals (a tap made by library code)

    def stop(signum: int, frame: FrameType | None) -> None:
        del frame
        writer = tap.message_writer
        if isinstance(writer, ScaleMessageWriter) and writer.busy:
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
    try:
        invoke()
    except Interrupted as stop:
        logger.error(_interrupted(stop.signum, state_written=stop.state_written))  # noqa: TRY400 - the message is the point
        sys.exit(128 + stop.signum)
    except KeyboardInterrupt:  # Ctrl-C before the tap's handlers were installed
        logger.error(_interrupted(signal.SIGINT, state_written=False))  # noqa: TRY400
        sys.exit(128 + signal.SIGINT)
    except OutputFailed as failure:
        _quiet_stdout()
        logger.error("tap-scale stopped: %s", _output_failed(failure.error))  # noqa: TRY400
        sys.exit(EXIT_ERROR)
    except FatalAPIError as error:
        logger.error("tap-scale stopped: %s", error)  # noqa: TRY400
        sys.exit(EXIT_ERROR)
    except RetriableAPIError as error:
        logger.error(  # noqa: TRY400
            "tap-scale stopped: %s. It kept failing through every try (the `max_tries` "
            "setting); run the sync again later, it resumes from the last state.",
            error,
        )
        sys.exit(EXIT_ERROR)
    except requests.RequestException as error:
        logger.error("tap-scale stopped: %s", _request_failed(error))  # noqa: TRY400
        sys.exit(EXIT_ERROR)
    except RecursionError:
        logger.error(  # noqa: TRY400
            "tap-scale stopped: a record Scale sent%s nests deeper than the Singer SDK can "
            "process (a few hundred levels; a task's `metadata` perhaps), so it cannot be "
            "written. Ask Scale support to look at that partition's tasks; meanwhile leave its "
            "project, batch or dataset out of the settings (`project_ids`, `batch_ids`, ...) "
            "so that the rest syncs.",
            whereabouts(),
        )
        sys.exit(EXIT_ERROR)
    except (MapExpressionError, StreamMapConfigError) as error:
        logger.error(  # noqa: TRY400
            "tap-scale stopped: a stream map failed on a record: %s. Fix the `stream_maps` "
            "setting (`meltano config set tap-scale stream_maps '...'`) and run again.",
            str(error).rstrip("."),
        )
        sys.exit(EXIT_ERROR)


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


def _output_failed(error: OSError | ValueError | None) -> str:
    resume = (
        " The next run resumes from the last state the target saved, and reads again what "
        "came after it."
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
