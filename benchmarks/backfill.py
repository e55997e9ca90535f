"""One big project's first sync: read in windows at once, at real latencies, rate-limited, killed.

`benchmarks.bench` runs these legs after its own, each against a pre-rendering simulator of one
project with ~10,000 completed tasks (`--backfill-tasks`) labelled over 28 days, as most real
projects are (each task completed hours to two days after it was created: the simulator's
`--labelled-over-days`), and the tap's `start_date` a year before the project's first task. The
legs run for each order the simulator can list tasks in (`--orders`: `shuffled`, `newest-first`,
`oldest-first` and `by-batch`, all by default; `tap_scale.testing.orders`):

- **latency sweep** (`--backfill-latencies`, 0, 200 and 1,000 ms by default): tap-scale with
  default settings and with `max_concurrency: 8`, next to the raw single-connection client
  (which reads with no bounds), as ratios of their rates; and, in the first order only (to save
  time), tap-scale by default with the RLHF row streams selected too (`benchmarks.rlhf_rows`),
  as the ratio of its rate to tasks alone;
- **rate limit**: a simulator allowing 5 requests a second (a token bucket across connections,
  429 with `Retry-After` beyond it) at 200 ms, tap-scale with `max_concurrency: 8`: the share of
  requests answered 429, and the wall time next to (the listing's pages / 5 per second);
- **kill and resume**: a first sync with default settings killed (SIGKILL) once half of the
  tasks are out, then run again from the last STATE it wrote: the share of the project's tasks
  the resumed run emits (and how many of them were out before the kill), and whether the two
  runs together hold every task.

A smoke run, on a project of fewer than `TASKS` completed tasks (CI's `--sizes 2000 --latencies
0` is one: 2,000 tasks at 0 ms), gives the rate-limited and killed legs to the first order only
and each other order its sweep alone, so that it stays about as short as it was with one order;
`--backfill-tasks 10000` gives every order every leg.

Every run of the tap is bounded by a timeout, so a tap that hangs in some order is reported as a
run that does not count, and the bench goes on. The rate-limited and resumed runs write their
Singer messages to a file, read back to check that every task of the project came out. The
report gives each order's legs, then one table with the orders side by side.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
import typing as t
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from benchmarks import bench, rlhf_rows
from tap_scale.testing.data import World, status_counts
from tap_scale.testing.timestamps import from_micros

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

TASKS = 10_000
LATENCIES_MS = (0.0, 200.0, 1000.0)
LABELLED_OVER_DAYS = 28
START_DATE_BEFORE = timedelta(days=365)
RATE_LIMIT = 5.0
RATE_LIMITED_LATENCY_MS = 200.0
KILL_LATENCY_MS = 200.0
KILL_AT = 0.5
_RECORD = b'{"type":"RECORD","stream":"tasks"'
_STATE = b'{"type":"STATE"'


@dataclass(frozen=True)
class Plan:
    """What the legs run on: the project's completed tasks, the latencies, orders and seed."""

    tasks: int
    latencies: Sequence[float]
    orders: Sequence[str]
    seed: int

    @property
    def smoke(self) -> bool:
        """Whether this is a smoke run: every leg for the first order, the sweep for others."""
        return self.tasks < TASKS


@dataclass(frozen=True)
class Backfill:
    """The one project of the legs, in one order, and the tap's `start_date` for it."""

    tasks: int
    seed: int
    order: str
    start_date: str


@dataclass(frozen=True)
class Sweep:
    """One latency's runs: tap-scale by default, with max_concurrency 8, and raw.

    And tap-scale by default with the RLHF row streams selected too (in one order only): what
    they cost where the tap waits on Scale.
    """

    latency_ms: float
    default: bench.Measurement
    most: bench.Measurement
    raw: bench.Measurement
    rows: bench.Measurement | None


@dataclass(frozen=True)
class RateLimited:
    """tap-scale under a rate limit."""

    run: bench.Measurement
    requests: int
    refused: int
    listing_pages: int
    lost: int

    @property
    def ratio(self) -> float:
        """The run's wall time over the time the limit alone takes to serve the listing."""
        return self.run.usage.wall / (self.listing_pages / RATE_LIMIT)

    @property
    def refused_share(self) -> float:
        """The share of requests answered 429."""
        return self.refused / max(1, self.requests)


@dataclass(frozen=True)
class Resumed:
    """A first sync killed midway, and its resumption from its last STATE."""

    tasks: int
    before_kill: int
    resumed: int
    re_emitted: int
    lost: int
    #: Why the leg does not count, if it does not.
    problem: str | None = None
    #: Whether the first run got as far as its kill (else nothing was resumed).
    killed: bool = True


@dataclass(frozen=True)
class OrderResult:
    """Every leg run in one order (the rate-limited and killed legs may not have run)."""

    order: str
    sweeps: Sequence[Sweep]
    limited: RateLimited | None
    resumed: Resumed | None

    def measurements(self) -> Iterator[bench.Measurement]:
        """Every measured run."""
        for s in self.sweeps:
            yield from (s.default, s.most, s.raw)
            if s.rows is not None:
                yield s.rows
        if self.limited is not None:
            yield self.limited.run


def task_ids(path: Path) -> set[str]:
    """The task ids of the RECORD messages in a file of Singer messages."""
    ids = set()
    with path.open("rb") as lines:
        for line in lines:
            if line.startswith(_RECORD):
                ids.add(json.loads(line)["record"]["task_id"])
    return ids


def start_date(tasks: int, seed: int) -> str:
    """A year before the first task of the legs' project is created, as the tap's `start_date`.

    The same world as the simulator's, generated here: task skeletons only, in a second or less.
    """
    world = World(
        seed=seed,
        projects=1,
        batches_per_project=bench.BATCHES_PER_PROJECT,
        tasks_per_project=bench.tasks_per_project(tasks, 1),
        labelled_over_days=LABELLED_OVER_DAYS,
    )
    first = min(task.created_at for task in world.store.tasks.values())
    return f"{from_micros(first) - START_DATE_BEFORE:%Y-%m-%dT%H:%M:%SZ}"


def one_project(
    project: Backfill, latency_ms: float, requests_per_second: float = 0.0
) -> bench.Simulator:
    """A pre-rendering simulator of the project, about `tasks` completed, in its order."""
    return bench.Simulator(
        tasks_per_project=bench.tasks_per_project(project.tasks, 1),
        latency_ms=latency_ms,
        seed=project.seed,
        projects=1,
        requests_per_second=requests_per_second,
        order=project.order,
        labelled_over_days=LABELLED_OVER_DAYS,
    )


def sweep(project: Backfill, latency_ms: float, workdir: Path, *, rows: bool) -> Sweep:
    """tap-scale (default, max_concurrency 8, and with `rows` the row streams) and raw."""
    expected = _completed(project.tasks)
    setting = bench.Setting(expected, latency_ms, workdir, _timeout(project.tasks, latency_ms))
    bench.progress(
        f"one project, {expected:,} tasks, {project.order}, {latency_ms:g} ms: "
        "starting the simulator"
    )
    with one_project(project, latency_ms) as simulator:
        project_ids = simulator.project_ids()
        directory = workdir / f"backfill-{project.order}-{setting.label}"
        tap = bench.prepare_tap(
            directory, simulator.url, simulator.api_key, project_ids, project.start_date
        )
        taps = [
            ("tap-scale, one project", tap),
            (
                f"tap-scale, one project, max_concurrency {bench.MAX_CONCURRENCY}",
                bench.with_concurrency(tap, bench.MAX_CONCURRENCY),
            ),
        ]
        if rows:
            taps.append(("tap-scale, one project, tasks + RLHF rows", rlhf_rows.with_rows(tap)))
        runs = [
            bench.measure(
                simulator,
                setting,
                client=f"{client}, {project.order}",
                commands=[command],
                expected_tasks=expected,
                stdout=Path(os.devnull),
                windowed=True,
            )
            for client, command in taps
        ]
        raw = bench.measure(
            simulator,
            setting,
            client=f"raw, one project, {project.order}",
            commands=[
                [sys.executable, str(bench.HERE / "raw_client.py"), simulator.url, *project_ids]
            ],
            expected_tasks=expected,
        )
    return Sweep(latency_ms, runs[0], runs[1], raw, runs[2] if rows else None)


def rate_limited(project: Backfill, workdir: Path) -> RateLimited:
    """tap-scale with max_concurrency 8 against a simulator allowing RATE_LIMIT requests/s."""
    expected = _completed(project.tasks)
    latency = RATE_LIMITED_LATENCY_MS
    timeout = 60 + 2 * math.ceil(expected / bench.PAGE_SIZE) / RATE_LIMIT
    setting = bench.Setting(expected, latency, workdir, timeout)
    bench.progress(
        f"one project, {expected:,} tasks, {project.order}, {RATE_LIMIT:g} requests/s: starting"
    )
    with one_project(project, latency, requests_per_second=RATE_LIMIT) as simulator:
        tap = bench.prepare_tap(
            workdir / f"rate-limited-{project.order}-{setting.label}",
            simulator.url,
            simulator.api_key,
            simulator.project_ids(),
            project.start_date,
        )
        output = workdir / f"rate-limited-{project.order}.out"
        before = simulator.stats()["statuses"]
        run = bench.measure(
            simulator,
            setting,
            client=f"tap-scale, max_concurrency {bench.MAX_CONCURRENCY}, {RATE_LIMIT:g} "
            f"requests/s, {project.order}",
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


def killed_and_resumed(project: Backfill, workdir: Path) -> Resumed:
    """A first sync killed once half the tasks are out, then resumed from its last STATE.

    Each run is bounded by a timeout; a first run that does not get as far as the kill (it
    timed out, failed, or ended by itself) is not resumed, and the leg does not count.
    """
    expected = _completed(project.tasks)
    timeout = _timeout(project.tasks, KILL_LATENCY_MS)
    bench.progress(
        f"one project, {expected:,} tasks, {project.order}: a first sync killed at {KILL_AT:.0%}"
    )
    directory = workdir / f"killed-{project.order}"
    with one_project(project, KILL_LATENCY_MS) as simulator:
        tap = bench.prepare_tap(
            directory,
            simulator.url,
            simulator.api_key,
            simulator.project_ids(),
            project.start_date,
        )
        env = bench.child_env(simulator.api_key)
        first, state, problem = _run_until(
            tap, env, int(expected * KILL_AT), timeout, directory / "first.log"
        )
        if problem is not None:
            lost = expected - len(first)
            return Resumed(expected, len(first), 0, 0, lost, problem, killed=False)
        state_path = directory / "state.json"
        state_path.write_text(json.dumps(state))
        output = workdir / f"resumed-{project.order}.out"
        log = directory / "resumed.log"
        with output.open("wb") as out, log.open("wb") as err:
            try:
                finished = subprocess.run(  # noqa: S603 - the tap's own console script
                    [*tap, "--state", str(state_path)],
                    stdout=out,
                    stderr=err,
                    env=env,
                    check=False,
                    timeout=timeout,
                    cwd=bench.ROOT,
                )
            except subprocess.TimeoutExpired:
                problem = f"the resumed run timed out after {timeout:.0f} s; logs: {log}"
            else:
                if finished.returncode != 0:
                    problem = f"the resumed run exited with code {finished.returncode}; logs: {log}"
        resumed = task_ids(output)
        with output.open("rb") as lines:
            resumed_count = sum(1 for line in lines if line.startswith(_RECORD))
        output.unlink()
    lost = expected - len(first | resumed)
    return Resumed(expected, len(first), resumed_count, len(first & resumed), lost, problem)


def _run_until(
    tap: Sequence[str], env: dict[str, str], records: int, timeout: float, log: Path
) -> tuple[set[str], dict[str, t.Any], str | None]:
    """Run the tap, SIGKILL it after `records` task records (or after `timeout` seconds).

    Returns the task ids it got out, its last state, and why the run does not count, if it
    does not: it timed out or ended before the kill.
    """
    expired = threading.Event()
    with (
        log.open("wb") as err,
        subprocess.Popen(  # noqa: S603 - the tap's own console script
            list(tap), stdout=subprocess.PIPE, stderr=err, env=env, cwd=bench.ROOT
        ) as process,
    ):

        def expire() -> None:
            expired.set()
            process.kill()

        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            assert process.stdout is not None  # noqa: S101 - stdout=PIPE
            ids, state = _read_until(process.stdout, records, process.kill)
            process.wait()
        finally:
            timer.cancel()
    if expired.is_set():
        return ids, state, f"the first run timed out after {timeout:.0f} s; logs: {log}"
    if len(ids) < records:
        ended = f"ended by itself (exit code {process.returncode})"
        return ids, state, f"the first run {ended} after {len(ids):,} tasks; logs: {log}"
    return ids, state, None


def _read_until(
    stdout: t.IO[bytes], records: int, kill: Callable[[], None]
) -> tuple[set[str], dict[str, t.Any]]:
    """The task ids and the last state a tap writes, calling `kill` after `records` tasks."""
    ids: set[str] = set()
    state: dict[str, t.Any] = {}
    for line in stdout:
        if line.startswith(_RECORD):
            ids.add(json.loads(line)["record"]["task_id"])
            if len(ids) >= records:
                kill()
                break
        elif line.startswith(_STATE):
            state = json.loads(line)["value"]
    # What was written before the kill still reaches a target; a line cut short does not.
    for line in stdout:
        if line.endswith(b"\n") and line.startswith(_STATE):
            state = json.loads(line)["value"]
        elif line.endswith(b"\n") and line.startswith(_RECORD):
            ids.add(json.loads(line)["record"]["task_id"])
    return ids, state


def _completed(tasks: int) -> int:
    return status_counts(bench.tasks_per_project(tasks, 1))["completed"]


def _timeout(tasks: int, latency_ms: float) -> float:
    # The raw client's whole read at this latency, twice, and a minute to start.
    return 60 + 2 * math.ceil(tasks / bench.PAGE_SIZE) * (latency_ms / 1000 + 0.05)


def run(plan: Plan, workdir: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Every leg in every order; the report's lines, and the runs that do not count, and why."""
    started = time.monotonic()
    since = start_date(plan.tasks, plan.seed)
    results = []
    for number, order in enumerate(plan.orders):
        project = Backfill(plan.tasks, plan.seed, order, since)
        every_leg = number == 0 or not plan.smoke
        results.append(
            OrderResult(
                order,
                [sweep(project, latency, workdir, rows=number == 0) for latency in plan.latencies],
                rate_limited(project, workdir) if every_leg else None,
                killed_and_resumed(project, workdir) if every_leg else None,
            )
        )
    heading = (
        f"One project's first sync ({time.monotonic() - started:.0f} s in all): "
        f"{_completed(plan.tasks):,} completed tasks labelled over {LABELLED_OVER_DAYS} days, "
        f"the tap's start_date {since}, a year before the first task; RLHF rows measured in "
        f"{plan.orders[0]} only."
    )
    lines = [heading]
    if plan.smoke and len(plan.orders) > 1:
        lines.append(
            f"A smoke run (fewer than {TASKS:,} tasks): the rate-limited and killed legs in "
            f"{plan.orders[0]} only."
        )
    for result in results:
        lines += ["", f"#### {result.order}", "", *_sweep_table(result.sweeps)]
        if result.limited is not None:
            lines += ["", *_limited_lines(result.limited)]
        if result.resumed is not None:
            lines += _resumed_lines(result.resumed)
    lines += ["", "Orders side by side:", "", *_side_by_side(results)]
    failures = [
        (run.client, run.problem)
        for result in results
        for run in result.measurements()
        if run.problem
    ]
    failures += [
        (f"killed and resumed, {result.order}", result.resumed.problem)
        for result in results
        if result.resumed is not None and result.resumed.problem
    ]
    return lines, failures


def _sweep_table(sweeps: Sequence[Sweep]) -> Iterator[str]:
    yield (
        "| tasks | latency | tap-scale s | tap-scale, max_concurrency 8 s | raw s "
        "| tap-scale/raw | tap-scale, max_concurrency 8/raw "
        f"| with RLHF rows s | with rows/tasks alone (goal ≥ {rlhf_rows.GOAL}) |"
    )
    yield "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for s in sweeps:
        raw, default = s.raw.usage.wall, s.default.usage.wall
        rows = "— | —"
        if s.rows is not None:
            rows = f"{s.rows.usage.wall:.2f}{_flag(s.rows)} | {default / s.rows.usage.wall:.2f}"
        yield (
            f"| {s.raw.tasks:,} | {s.latency_ms:g} ms | {default:.2f}{_flag(s.default)} "
            f"| {s.most.usage.wall:.2f}{_flag(s.most)} | {raw:.2f}{_flag(s.raw)} "
            f"| {raw / default:.2f}x | {raw / s.most.usage.wall:.2f}x | {rows} |"
        )


def _limited_lines(limited: RateLimited) -> Iterator[str]:
    ideal = limited.listing_pages / RATE_LIMIT
    yield (
        f"- Rate limit of {RATE_LIMIT:g} requests/s at {RATE_LIMITED_LATENCY_MS:g} ms, "
        f"max_concurrency 8: {limited.run.usage.wall:.1f} s{_flag(limited.run)}, "
        f"{limited.ratio:.2f}x the listing's {limited.listing_pages} pages at {RATE_LIMIT:g}/s "
        f"({ideal:.0f} s); {limited.refused} of {limited.requests} requests answered 429 "
        f"({limited.refused_share:.1%}); tasks lost: {limited.lost}."
    )


def _resumed_lines(resumed: Resumed) -> Iterator[str]:
    if not resumed.killed:
        yield (
            f"- A first sync to be killed after half of {resumed.tasks:,} tasks did not count "
            f"({resumed.problem}); it emitted {resumed.before_kill:,}."
        )
        return
    flag = " ⚠" if resumed.problem else ""
    yield (
        f"- A first sync killed after {resumed.before_kill:,} of {resumed.tasks:,} tasks "
        f"({resumed.before_kill / resumed.tasks:.0%}) and resumed from its last STATE: the "
        f"resumed run emitted {resumed.resumed:,} tasks ({resumed.resumed / resumed.tasks:.0%} "
        f"of the project; {resumed.re_emitted:,} of them, "
        f"{resumed.re_emitted / resumed.tasks:.0%}, out before the kill){flag}; tasks lost by "
        f"the two together: {resumed.lost}."
    )


def _side_by_side(results: Sequence[OrderResult]) -> Iterator[str]:
    """One row per figure, one column per order; ⚠ marks a run that does not count."""
    yield "| | " + " | ".join(result.order for result in results) + " |"
    yield "|---|" + "---:|" * len(results)
    latencies = list(dict.fromkeys(s.latency_ms for result in results for s in result.sweeps))
    for latency in latencies:
        at = [next((s for s in r.sweeps if s.latency_ms == latency), None) for r in results]
        yield _row(
            f"{latency:g} ms: tap-scale / raw",
            [None if s is None else _ratio(s.raw, s.default) for s in at],
        )
        yield _row(
            f"{latency:g} ms: max_concurrency {bench.MAX_CONCURRENCY} / raw",
            [None if s is None else _ratio(s.raw, s.most) for s in at],
        )
    limited = [result.limited for result in results]
    yield _row(
        f"{RATE_LIMIT:g} requests/s: time / (pages / {RATE_LIMIT:g} s)",
        [None if r is None else f"{r.ratio:.2f}x{_flag(r.run)}" for r in limited],
    )
    yield _row(
        f"{RATE_LIMIT:g} requests/s: answered 429",
        [None if r is None else f"{r.refused_share:.1%}" for r in limited],
    )
    resumed = [result.resumed for result in results]
    yield _row(
        "killed at half, resumed: share of the project emitted",
        [None if r is None else _share(r, r.resumed) for r in resumed],
    )
    yield _row(
        "killed at half, resumed: share re-emitted (out before the kill)",
        [None if r is None else _share(r, r.re_emitted) for r in resumed],
    )
    yield _row(
        "killed at half, resumed: tasks lost",
        [None if r is None else f"{r.lost:,}{' ⚠' if r.problem else ''}" for r in resumed],
    )


def _row(name: str, cells: Sequence[str | None]) -> str:
    return f"| {name} | " + " | ".join("—" if cell is None else cell for cell in cells) + " |"


def _ratio(raw: bench.Measurement, tap: bench.Measurement) -> str:
    return f"{raw.usage.wall / tap.usage.wall:.2f}x{_flag(tap)}"


def _share(resumed: Resumed, count: int) -> str:
    if not resumed.killed:
        return "failed ⚠"
    return f"{count / resumed.tasks:.0%}{' ⚠' if resumed.problem else ''}"


def _flag(run: bench.Measurement) -> str:
    return " ⚠" if run.problem else ""
