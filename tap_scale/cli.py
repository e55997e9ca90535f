"""The `tap-scale` command, answering a stop signal from its first instant.

Importing the Singer SDK takes most of a second; a scheduler may stop the tap meanwhile, and
Python's defaults would then end it silently (SIGTERM) or with a traceback (Ctrl-C). Until the
tap installs its own handlers (`stops.handle_signals`), a stop signal ends it here, with its
paragraph and exit code: nothing has been read or written yet. This module imports only the
standard library, so that its handlers are in place before anything slow runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import typing as t

if t.TYPE_CHECKING:
    from types import FrameType

# The signals a scheduler, a terminal or a person stops a process with.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def interrupted_before_sync(signum: int) -> str:
    """The paragraph of a run stopped by a signal before it wrote any message."""
    return (
        f"tap-scale stopped: interrupted by {signal.Signals(signum).name} (exit code "
        f"{128 + signum}) before it wrote any record or state: the next run starts from the same "
        "state."
    )


def main() -> None:
    """Run the command line: a sync, `--discover`, `--test`, `--about` and the rest."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop_while_starting)
    from tap_scale.stops import run  # noqa: PLC0415 - slow: the SDK, after the handlers
    from tap_scale.tap import TapScale  # noqa: PLC0415

    # Also around the callbacks click runs before the SDK's `invoke` (`--discover`, `--about`).
    run(TapScale.cli, TapScale.logger)


def _stop_while_starting(signum: int, frame: FrameType | None) -> None:
    del frame
    # Nothing is buffered that must be kept, and nothing may run after: os.write, os._exit.
    with contextlib.suppress(OSError):  # no stderr: the exit code still tells
        os.write(2, (interrupted_before_sync(signum) + "\n").encode())
    os._exit(128 + signum)
