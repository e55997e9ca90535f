"""One big project's first sync: read in windows at once, at real latencies, rate-limited, killed.

`benchmarks.bench` runs these legs after its own, each against a pre-rendering simulator of one
project with ~10,000 completed tasks (`--backfill-tasks`):

- **latency sweep** (`--backfill-latencies`, 0, 200 and 1,000 ms by default): tap-scale with
  default settings and with `max_concurrency: 8`, next to the raw single-connection client,
  as ratios of their rates; and tap-scale by default with the RLHF row streams selected too
  (`benchmarks.rlhf_rows`), as the ratio of its rate to tasks alone;
- **rate limit**: a simulator allowing 5 requests a second (a token bucket across connections,
  429 with `Retry-After` beyond it) at 200 ms, tap-scale with `max_concurrency: 8`: the share of
  requests answered 429, and the wall time next to (the listing's pages / 5 per second);
- **kill and resume**: a first sync with default settings killed (SIGKILL) once half of the
  tasks are out, then run again from the last STATE it wrote: the share of the project's tasks
  the resumed run emits, and whether the two runs together hold every task.

The rate-limited and resumed runs write their Singer messages to a file, read back to check
that every task of the project came out.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import typing as t
from dataclasses import dataclass
from pathlib import Path

from benchmarks import bench, rlhf_rows
from tap_scale.testing.data import status_counts

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

TASKS = 10_000
LATENCIES_MS = (0.0, 200.0, 1000.0)
RATE_LIMIT = 5.0
RATE_LIMITED_LATENCY_MS = 200.0
KILL_LATENCY_MS = 200.0
KILL_AT = 0.5


@dataclass(frozen=True)
class Sweep:
    """One latency's runs: tap-scale by default, with max_concurrency 8, and raw.

    And tap-scale by default with the RLHF row streams selected too: what they cost where the
    tap waits on Scale.
    """

    latency_ms: float
    default: bench.Measurement
    most: bench.Measurement
    raw: bench.Measurement
    rows: bench.Measurement


@dataclass(frozen=True)
class RateLimited:
    """tap-scale under a rate limit."""

    run: bench.Measurement
    requests: int
    refused: int
    listing_pages: int
    lost: int


@dataclass(frozen=True)
class Resumed:
    """A first sync killed midway, and its resumption from its last STATE."""

    tasks: int
    before_kill: int
    resumed: int
    lost: int


def task_ids(path: Path) -> set[str]:
    """The task ids of the RECORD messages in a file of Singer messages."""
    ids = set()
    with path.open() as lines:
        for line in lines:
            if line.startswith('{"type":"RECORD","stream":"tasks"'):
                ids.add(json.loads(line)["record"]["task_id"])
    return ids


def one_project(tasks: int, latency_ms: float, seed: int, **knobs: float) -> bench.Simulator:
    """A pre-rendering simulator of one project holding about `tasks` completed tasks."""
    return bench.Simulator(
        tasks_per_project=bench.tasks_per_project(tasks, 1),
        latency_ms=latency_ms,
        seed=seed,
        projects=1,
        **knobs,
    )


def sweep(tasks: int, latency_ms: float, workdir: Path, seed: int) -> Sweep:
    """tap-scale (default, max_concurrency 8) and raw at one latency."""
    expected = _completed(tasks)
    setting = bench.Setting(expected, latency_ms, workdir, _timeout(tasks, latency_ms))
    bench.progress(f"one project, {expected:,} tasks, {latency_ms:g} ms: starting the simulator")
    with one_project(tasks, latency_ms, seed) as simulator:
        project_ids = simulator.project_ids()
        directory = workdir / f"backfill-{setting.label}"
        tap = bench.prepare_tap(directory, simulator.url, simulator.api_key, project_ids)
        runs = [
            bench.measure(
                simulator,
                setting,
                client=client,
                commands=[command],
                expected_tasks=expected,
                stdout=Path(os.devnull),
                windowed=True,
            )
            for client, command in (
                ("tap-scale, one project", tap),
                (
                    f"tap-scale, one project, max_concurrency {bench.MAX_CONCURRENCY}",
                    bench.with_concurrency(tap, bench.MAX_CONCURRENCY),
                ),
                ("tap-scale, one project, tasks + RLHF rows", rlhf_rows.with_rows(tap)),
            )
        ]
        raw = bench.measure(
            simulator,
            setting,
            client="raw, one project",
            commands=[
                [sys.executable, str(bench.HERE / "raw_client.py"), simulator.url, *project_ids]
            ],
            expected_tasks=expected,
        )
    return Sweep(latency_ms, runs[0], runs[1], raw, runs[2])


def rate_limited(tasks: int, workdir: Path, seed: int) -> RateLimited:
    """tap-scale with max_concurrency 8 against a simulator allowing RATE_LIMIT requests/s."""
    expected = _completed(tasks)
    latency = RATE_LIMITED_LATENCY_MS
    timeout = 60 + 2 * math.ceil(expected / bench.PAGE_SIZE) / RATE_LIMIT
    setting = bench.Setting(expected, latency, workdir, timeout)
    bench.progress(f"one project, {expected:,} tasks, {RATE_LIMIT:g} requests/s: starting")
    with one_project(tasks, latency, seed, requests_per_second=RATE_LIMIT) as simulator:
        project_ids = simulator.project_ids()
        tap = bench.prepare_tap(
            workdir / f"rate-limited-{setting.label}", simulator.url, simulator.api_key, project_ids
        )
        output = workdir / "rate-limited.out"
        before = simulator.stats()["statuses"]
        run = bench.measure(
            simulator,
            setting,
            client=f"tap-scale, max_concurrency {bench.MAX_CONCURRENCY}, {RATE_LIMIT:g} requests/s",
            commands=[bench.with_concurrency(tap, bench.MAX_CONCURRENCY)],
            expected_tasks=expected,
            stdout=output,
            windowed=True,
        )
        after = simulator.stats()["statuses"]
    answered = {status: after.get(status, 0) - before.get(status, 0) for status in after}
    lost = expected - len(task_ids(output))
    output.unlink()
    return RateLimited(
        run,
        sum(answered.values()),
        answered.get("429", 0),
        math.ceil(expected / bench.PAGE_SIZE),
        lost,
    )


def killed_and_resumed(tasks: int, workdir: Path, seed: int) -> Resumed:
    """A first sync killed once half the tasks are out, then resumed from its last STATE."""
    expected = _completed(tasks)
    bench.progress(f"one project, {expected:,} tasks: a first sync killed at {KILL_AT:.0%}")
    with one_project(tasks, KILL_LATENCY_MS, seed) as simulator:
        tap = bench.prepare_tap(
            workdir / "killed", simulator.url, simulator.api_key, simulator.project_ids()
        )
        env = bench.child_env(simulator.api_key)
        first, state = _run_until(tap, env, int(expected * KILL_AT))
        state_path = workdir / "killed" / "state.json"
        state_path.write_text(json.dumps(state))
        output = workdir / "resumed.out"
        with output.open("wb") as out:
            subprocess.run(  # noqa: S603 - the tap's own console script
                [*tap, "--state", str(state_path)],
                stdout=out,
                stderr=subprocess.DEVNULL,
                env=env,
                check=True,
                timeout=_timeout(tasks, KILL_LATENCY_MS),
                cwd=bench.ROOT,
            )
        resumed = task_ids(output)
        resumed_count = sum(
            1 for line in output.open() if line.startswith('{"type":"RECORD","stream":"tasks"')
        )
        output.unlink()
    return Resumed(expected, len(first), resumed_count, expected - len(first | resumed))


def _run_until(
    tap: Sequence[str], env: dict[str, str], records: int
) -> tuple[set[str], dict[str, t.Any]]:
    """Run the tap, SIGKILL it after `records` task records; what it got out and its last state."""
    ids: set[str] = set()
    state: dict[str, t.Any] = {}
    with subprocess.Popen(  # noqa: S603 - the tap's own console script
        list(tap), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=bench.ROOT
    ) as process:
        assert process.stdout is not None  # noqa: S101 - stdout=PIPE
        for line in process.stdout:
            if line.startswith(b'{"type":"RECORD","stream":"tasks"'):
                ids.add(json.loads(line)["record"]["task_id"])
                if len(ids) >= records:
                    process.send_signal(signal.SIGKILL)
                    break
            elif line.startswith(b'{"type":"STATE"'):
                state = json.loads(line)["value"]
        # What was written before the kill still reaches a target; a line cut short does not.
        for line in process.stdout:
            if line.endswith(b"\n") and line.startswith(b'{"type":"STATE"'):
                state = json.loads(line)["value"]
            elif line.endswith(b"\n") and line.startswith(b'{"type":"RECORD","stream":"tasks"'):
                ids.add(json.loads(line)["record"]["task_id"])
    return ids, state


def _completed(tasks: int) -> int:
    return status_counts(bench.tasks_per_project(tasks, 1))["completed"]


def _timeout(tasks: int, latency_ms: float) -> float:
    # The raw client's whole read at this latency, twice, and a minute to start.
    return 60 + 2 * math.ceil(tasks / bench.PAGE_SIZE) * (latency_ms / 1000 + 0.05)


def run(
    tasks: int, latencies: Sequence[float], workdir: Path, seed: int
) -> tuple[list[str], list[bench.Measurement]]:
    """Every leg; the report's lines and the measurements (to check they all count)."""
    started = time.monotonic()
    sweeps = [sweep(tasks, latency, workdir, seed) for latency in latencies]
    limited = rate_limited(tasks, workdir, seed)
    resumed = killed_and_resumed(tasks, workdir, seed)
    lines = [
        f"One project's first sync ({time.monotonic() - started:.0f} s in all):",
        "",
        *_sweep_table(sweeps),
        "",
        *_limited_lines(limited),
        *_resumed_lines(resumed),
    ]
    runs = [run for s in sweeps for run in (s.default, s.most, s.raw, s.rows)] + [limited.run]
    return lines, runs


def _sweep_table(sweeps: Sequence[Sweep]) -> Iterator[str]:
    yield (
        "| tasks | latency | tap-scale s | tap-scale, max_concurrency 8 s | raw s "
        "| tap-scale/raw | tap-scale, max_concurrency 8/raw "
        f"| with RLHF rows s | with rows/tasks alone (goal ≥ {rlhf_rows.GOAL}) |"
    )
    yield "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for s in sweeps:
        raw, default = s.raw.usage.wall, s.default.usage.wall
        yield (
            f"| {s.raw.tasks:,} | {s.latency_ms:g} ms | {default:.2f} "
            f"| {s.most.usage.wall:.2f} | {raw:.2f} | {raw / default:.2f}x "
            f"| {raw / s.most.usage.wall:.2f}x | {s.rows.usage.wall:.2f} "
            f"| {default / s.rows.usage.wall:.2f} |"
        )


def _limited_lines(limited: RateLimited) -> Iterator[str]:
    ideal = limited.listing_pages / RATE_LIMIT
    yield (
        f"- Rate limit of {RATE_LIMIT:g} requests/s at {RATE_LIMITED_LATENCY_MS:g} ms, "
        f"max_concurrency 8: {limited.run.usage.wall:.1f} s, {limited.run.usage.wall / ideal:.2f}x "
        f"the listing's {limited.listing_pages} pages at {RATE_LIMIT:g}/s ({ideal:.0f} s); "
        f"{limited.refused} of {limited.requests} requests answered 429 "
        f"({limited.refused / max(1, limited.requests):.1%}); tasks lost: {limited.lost}."
    )


def _resumed_lines(resumed: Resumed) -> Iterator[str]:
    yield (
        f"- A first sync killed after {resumed.before_kill:,} of {resumed.tasks:,} tasks "
        f"({resumed.before_kill / resumed.tasks:.0%}) and resumed from its last STATE: the "
        f"resumed run emitted {resumed.resumed:,} tasks ({resumed.resumed / resumed.tasks:.0%} "
        f"of the project); tasks lost by the two together: {resumed.lost}."
    )
