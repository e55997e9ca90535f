"""Serve a simulated Scale API from a shell: `python -m tap_scale.testing [--port N] ...`.

Prints one line, `url=<base URL> api_key=<key>`, then serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import typing as t

from tap_scale.testing.simulator import DEFAULT_API_KEY, ScaleSimulator

if t.TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line's settings."""
    parser = argparse.ArgumentParser(
        prog="python -m tap_scale.testing", description="Serve a simulated Scale v2 API."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: any free one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated world")
    parser.add_argument("--projects", type=int, default=3, help="number of projects")
    parser.add_argument("--batches-per-project", type=int, default=2, help="batches per project")
    parser.add_argument("--tasks-per-project", type=int, default=60, help="tasks per project")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="the key clients must send")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; returns the exit code."""
    args = parse_args(argv)
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    simulator = ScaleSimulator(
        seed=args.seed,
        projects=args.projects,
        batches_per_project=args.batches_per_project,
        tasks_per_project=args.tasks_per_project,
        api_key=args.api_key,
        host=args.host,
        port=args.port,
    )
    with simulator:
        # One line that scripts can parse; printing the key is the point of this command.
        sys.stdout.write(f"url={simulator.url} api_key={simulator.api_key}\n")
        sys.stdout.flush()
        # A timed wait keeps the main thread responsive to signals on every platform.
        while not stopping.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
