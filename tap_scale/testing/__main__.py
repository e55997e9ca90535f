"""Serve a simulated Scale API from a shell: `python -m tap_scale.testing [--port N] ...`.

Prints one line, `url=<base URL> api_key=<key>`, then serves until SIGINT or SIGTERM.

`--prerender` is the benchmarks' mode: before that line, every page of every project's
completed tasks (`limit=100`, every opt: what tap-scale asks for by default) is rendered once,
with progress on stderr, then served as stored bytes (see `tap_scale.testing.prerender`).
`--latency-ms` delays every request, as a distant API would; `--requests-per-second` puts a
rate limiter in front of it. `--order` chooses how listings of tasks are ordered (shuffled by
default) and `--labelled-over-days N` a world whose tasks are completed hours after their creation,
over N days (see `ScaleSimulator`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
import typing as t

from tap_scale.testing.orders import DEFAULT_ORDER, ORDERS
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
    parser.add_argument(
        "--order",
        choices=ORDERS,
        default=DEFAULT_ORDER,
        help=f"the order of task listings (default: {DEFAULT_ORDER}, by a hash of each id)",
    )
    parser.add_argument(
        "--labelled-over-days",
        type=_days,
        metavar="N",
        help="create each project's tasks over N days, each completed a few hours to two days "
        "after its creation (default: created over a couple of days, completed in three)",
    )
    parser.add_argument(
        "--prerender",
        action="store_true",
        help="render every page of each project's completed tasks (limit=100, every opt) "
        "before serving, and serve task pages as stored bytes: for benchmarks",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="milliseconds added to every request (default: none)",
    )
    parser.add_argument(
        "--requests-per-second",
        type=float,
        default=0.0,
        help="a rate limiter in front of the API: at most this many requests a second across "
        "all connections, 429 with Retry-After beyond it (default: none)",
    )
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
        prerendered=args.prerender,
        order=args.order,
        labelled_over_days=args.labelled_over_days,
    )
    simulator.faults.slow_seconds = args.latency_ms / 1000
    simulator.faults.requests_per_second = args.requests_per_second
    with simulator:
        if args.prerender and not prerender(simulator, stopping):
            return 0  # stopped before it was ready
        # One line that scripts can parse; printing the key is the point of this command.
        sys.stdout.write(f"url={simulator.url} api_key={simulator.api_key}\n")
        sys.stdout.flush()
        # A timed wait keeps the main thread responsive to signals on every platform.
        while not stopping.wait(0.5):
            pass
    return 0


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        days = 0
    if days < 1:
        message = f"not a whole number of days, at least 1: {text!r}"
        raise argparse.ArgumentTypeError(message)
    return days


class _StoppedError(Exception):
    """A signal arrived while pages were being rendered."""


def prerender(simulator: ScaleSimulator, stopping: threading.Event) -> bool:
    """Render the task pages ahead, telling stderr how far it got about once a second.

    Returns False when a signal stopped it before the end.
    """
    started = last = time.monotonic()

    def progress(done: int, total: int) -> None:
        nonlocal last
        if stopping.is_set():
            raise _StoppedError
        now = time.monotonic()
        if now - last >= 1 or done == total:
            last = now
            sys.stderr.write(f"prerendered {done:,}/{total:,} tasks in {now - started:.1f} s\n")
            sys.stderr.flush()

    try:
        simulator.prerender_tasks(progress=progress)
    except _StoppedError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
