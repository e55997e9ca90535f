"""How fast tap-scale moves tasks, next to the script a user would write and to the raw limit.

    python -m benchmarks.bench            # 10,000 and 100,000 tasks, 0 and 50 ms (make bench)
    python -m benchmarks.bench --quick    # 10,000 tasks only, 0 and 50 ms
    python -m benchmarks.bench --sizes 30000 --latencies 0,20,100
    python -m benchmarks.bench --orders shuffled,newest-first   # the backfill legs' orders

For each size and latency, a simulator is started in its own process (`python -m
tap_scale.testing --prerender`) with that many completed tasks over three projects, every page
of them rendered once before measuring, and `--latency-ms` added to every request. Then, one
after the other, each client runs in its own process on the same tasks:

- **tap-scale**: the console script, `tap-scale --config ... --catalog ...` with only `tasks`
  selected, `task_statuses: ["completed"]`, `page_size: 100` and every opt (the default); its
  Singer messages are written to `/dev/null`, as a target's pipe would take them.
- **naive**: Scale's own example download script applied to `/v2/tasks`
  (`benchmarks/naive_client.py`): `requests.request` per page, every task held in memory, JSONL
  written at the end (to `/dev/null`).
- **raw**: the least work that still fetches the tasks (`benchmarks/raw_client.py`): one
  keep-alive connection, `json.loads` of each page, nothing kept or written.

Each is timed from spawn to exit (interpreter start included) and measured by `os.wait4`: CPU
seconds (user + system) and peak RSS. A run counts only if the simulator served every task from
its pre-rendered pages (its `/_simulator/stats` say so), so the simulator rendered nothing while
a client read. The simulator's own CPU during each run is shown too, and at 0 ms its capacity
is measured with clients that read pages without parsing them, on one and on two connections,
to show it serves faster than the fastest client reads. Every run is bounded by a timeout
(`--run-timeout`); the report is a markdown table on stdout, progress goes to stderr.

Then one project's first sync (`benchmarks.backfill`), in each order the simulator can list tasks
in (`--orders`, all four by default). `--sizes 2000 --latencies 0`, CI's invocation, makes that a
smoke test at 2,000 tasks and 0 ms, where only the first order gets every leg (see there).

To run the tap leg alone, e.g. under a profiler: serve a simulator (`python -m tap_scale.testing
--prerender --tasks-per-project 4504 --port 8765`: 10,002 completed tasks), write the tap's
files with `python -m benchmarks.bench --prepare-tap DIR --url http://127.0.0.1:8765/v2`, and
run the command it prints.
"""

from __future__ import annotations

import argparse
import compileall
import json
import math
import os
import platform
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
import typing as t
import urllib.request
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from benchmarks import rlhf_rows
from tap_scale.testing import DEFAULT_API_KEY
from tap_scale.testing.data import status_counts
from tap_scale.testing.orders import DEFAULT_ORDER, ORDERS

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from types import TracebackType

PROJECTS = 3
BATCHES_PER_PROJECT = 2
PAGE_SIZE = 100
# The most readers tap-scale allows, as a user wanting the fastest sync would set it.
MAX_CONCURRENCY = 8
SIZES = (10_000, 100_000)
LATENCIES_MS = (0.0, 50.0)
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Passes of the capacity clients: enough bytes for a rate worth reading, whatever the size.
CAPACITY_TASKS = 100_000
# Rendering costs the simulator ~0.7 ms per task; this leaves room for a slow machine.
READY_SECONDS_PER_TASK = 0.005
READY_SECONDS = 60.0
STOP_SECONDS = 10.0
POLL_SECONDS = 0.002
MB = 1_000_000
# Everything stays on loopback: no proxy a user's environment names is ever used.
LOOPBACK = "127.0.0.1,localhost,::1"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# ru_maxrss is in kilobytes on Linux, in bytes on macOS.
_RSS_UNIT = 1 if sys.platform == "darwin" else 1024


def tasks_per_project(tasks: int, projects: int = PROJECTS) -> int:
    """The simulator's `--tasks-per-project` giving each project a share of `tasks` completed."""
    share = math.ceil(tasks / projects)
    count = share
    while status_counts(count)["completed"] < share:
        count += 1
    return count


def child_env(api_key: str) -> dict[str, str]:
    """The clients' environment: the key for the scripts, and no proxy for loopback."""
    return {**os.environ, "SCALE_API_KEY": api_key, "NO_PROXY": LOOPBACK, "no_proxy": LOOPBACK}


def tap_executable() -> str:
    """The `tap-scale` console script of the environment this runs in."""
    beside = Path(sys.executable).with_name("tap-scale")
    found = str(beside) if beside.exists() else shutil.which("tap-scale")
    if found is None:
        message = "tap-scale is not installed: run `make .venv/.synced` first"
        raise SystemExit(message)
    return found


# The simulator


@dataclass(frozen=True)
class Endpoint:
    """A running simulator's base URL (ending in `/v2`) and key."""

    url: str
    api_key: str

    def get(self, url: str) -> t.Any:  # noqa: ANN401 - parsed JSON
        """GET a URL of the simulator with the key, parsed."""
        request = urllib.request.Request(  # noqa: S310 - the simulator's own http URL
            url, headers={"Authorization": f"Bearer {self.api_key}"}
        )
        with _DIRECT.open(request, timeout=60) as response:
            return json.load(response)

    def project_ids(self) -> list[str]:
        """The ids of the simulated projects, in listing order."""
        return [project["id"] for project in self.get(f"{self.url}/projects")["projects"]]

    def stats(self) -> dict[str, t.Any]:
        """The simulator's counters and CPU seconds (`ScaleSimulator.serving_stats`)."""
        stats: dict[str, t.Any] = self.get(self.url.removesuffix("/v2") + "/_simulator/stats")
        return stats


class Simulator:
    """A pre-rendering simulator in a process of its own, stopped on exit."""

    def __init__(  # noqa: PLR0913 - every knob is keyword-only
        self,
        *,
        tasks_per_project: int,
        latency_ms: float,
        seed: int,
        projects: int = PROJECTS,
        batches_per_project: int = BATCHES_PER_PROJECT,
        requests_per_second: float = 0.0,
        order: str = DEFAULT_ORDER,
        labelled_over_days: int | None = None,
    ) -> None:
        """Settings; nothing runs until the context is entered."""
        self.tasks_per_project = tasks_per_project
        self.projects = projects
        self.command = [
            sys.executable,
            "-m",
            "tap_scale.testing",
            "--prerender",
            f"--seed={seed}",
            f"--projects={projects}",
            f"--batches-per-project={batches_per_project}",
            f"--tasks-per-project={tasks_per_project}",
            f"--latency-ms={latency_ms:g}",
            f"--requests-per-second={requests_per_second:g}",
            f"--order={order}",
        ]
        if labelled_over_days is not None:
            self.command.append(f"--labelled-over-days={labelled_over_days}")
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Endpoint:
        """Start it and wait (bounded) for its line saying it is ready; stderr shows progress."""
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            self.command, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        assert self._process.stdout is not None  # noqa: S101 - stdout=PIPE
        timeout = READY_SECONDS + READY_SECONDS_PER_TASK * self.tasks_per_project * self.projects
        ready, _, _ = select.select([self._process.stdout], [], [], timeout)
        line = self._process.stdout.readline() if ready else ""
        if not line.startswith("url="):
            self.__exit__(None, None, None)
            message = f"the simulator was not ready within {timeout:.0f} s: {line!r}"
            raise RuntimeError(message)
        fields = dict(part.split("=", 1) for part in line.split())
        return Endpoint(fields["url"], fields["api_key"])

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop it: SIGTERM, then SIGKILL if it has not stopped in a few seconds."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


# Running clients


@dataclass(frozen=True)
class Usage:
    """What child processes took: wall seconds until the last exited, CPU seconds, peak RSS."""

    wall: float
    cpu: float
    rss_mb: float
    failure: str | None


def run_children(
    commands: Sequence[Sequence[str]],
    outputs: Sequence[tuple[Path, Path]],
    *,
    env: dict[str, str],
    timeout: float,
) -> Usage:
    """Run the commands at once, stdout and stderr to the paired files; measure them.

    Each child is reaped with `os.wait4` for its own resource usage. One still running after
    `timeout` seconds is killed (by its pid, never reaped before) and the run is a failure.
    """
    files = [(stdout.open("wb"), stderr.open("wb")) for stdout, stderr in outputs]
    started = time.perf_counter()
    try:
        processes = [
            subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=ROOT)  # noqa: S603
            for command, (out, err) in zip(commands, files, strict=True)
        ]
    finally:
        for out, err in files:
            out.close()
            err.close()
    pending = {process.pid: process for process in processes}
    try:
        return _reap(pending, started, timeout)
    finally:
        for process in pending.values():  # only on an error or an interrupt here
            process.kill()
            process.wait()


def _reap(pending: dict[int, subprocess.Popen[bytes]], started: float, timeout: float) -> Usage:
    """Reap the children as they exit (removing them from `pending`), killing them at timeout."""
    cpu = rss = 0.0
    failures: list[str] = []
    ended = started
    deadline = started + timeout
    while pending:
        for pid, process in list(pending.items()):
            reaped, status, usage = os.wait4(pid, os.WNOHANG)
            if reaped == 0:
                continue
            ended = time.perf_counter()
            del pending[pid]
            process.returncode = os.waitstatus_to_exitcode(status)
            cpu += usage.ru_utime + usage.ru_stime
            rss = max(rss, usage.ru_maxrss * _RSS_UNIT / MB)
            if process.returncode != 0:
                failures.append(f"exit code {process.returncode}")
        if pending and time.perf_counter() > deadline:
            for process in pending.values():
                process.kill()  # not reaped yet, so the pid is still this child's
            failures.append(f"timed out after {timeout:.0f} s")
            deadline = math.inf
        time.sleep(POLL_SECONDS)
    return Usage(ended - started, cpu, rss, "; ".join(failures) or None)


@dataclass(frozen=True)
class Measurement:
    """One client's run against one simulator."""

    client: str
    tasks: int
    usage: Usage
    server_cpu: float
    pages: int
    bytes: int
    problem: str | None

    @property
    def tasks_per_second(self) -> float:
        """Tasks moved per wall-clock second."""
        return self.tasks / self.usage.wall


@dataclass(frozen=True)
class Setting:
    """One simulator's tasks and latency, and where the clients' files go."""

    tasks: int
    latency_ms: float
    workdir: Path
    timeout: float

    @property
    def label(self) -> str:
        """E.g. `10005-0ms`, for file names."""
        return f"{self.tasks}-{self.latency_ms:g}ms"


def measure(  # noqa: PLR0913 - what a run needs, all keyword-only
    simulator: Endpoint,
    setting: Setting,
    *,
    client: str,
    commands: Sequence[Sequence[str]],
    expected_tasks: int,
    stdout: Path | None = None,
    windowed: bool = False,
) -> Measurement:
    """Run a client's processes and check from the simulator's counters that they read all.

    A `windowed` client (tap-scale) reads some tasks twice: those on its windows' edges, and
    those of a first page it set aside to cut a range into windows; it must be served at least
    every task.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", client.lower()).strip("-")
    outputs = [
        (
            stdout or setting.workdir / f"{slug}-{setting.label}-{number}.out",
            setting.workdir / f"{slug}-{setting.label}-{number}.log",
        )
        for number in range(len(commands))
    ]
    env = child_env(simulator.api_key)
    before = simulator.stats()
    usage = run_children(commands, outputs, env=env, timeout=setting.timeout)
    after = simulator.stats()
    served = {name: after["served"][name] - before["served"][name] for name in after["served"]}
    rendered = after["api"].get("/v2/tasks", 0) - before["api"].get("/v2/tasks", 0)
    problems = [usage.failure] if usage.failure else []
    if served["tasks"] < expected_tasks or (not windowed and served["tasks"] > expected_tasks):
        problems.append(f"served {served['tasks']:,} pre-rendered tasks, not {expected_tasks:,}")
    if rendered:
        problems.append(f"{rendered} task pages rendered on the fly")
    if problems:
        problems.append(f"logs: {outputs[0][1]}")
    measurement = Measurement(
        client,
        expected_tasks,
        usage,
        after["cpu_seconds"] - before["cpu_seconds"],
        served["pages"],
        served["bytes"],
        "; ".join(problems) or None,
    )
    note = f" PROBLEM: {measurement.problem}" if measurement.problem else ""
    progress(
        f"  {client}: {usage.wall:.2f} s, {measurement.tasks_per_second:,.0f} tasks/s, "
        f"CPU {usage.cpu:.2f} s, RSS {usage.rss_mb:,.0f} MB{note}"
    )
    return measurement


# The tap's files


def tap_config(
    url: str, api_key: str, project_ids: Sequence[str], start_date: str | None = None
) -> dict[str, t.Any]:
    """Settings for the tap leg: the projects' completed tasks, 100 per page, every opt."""
    config: dict[str, t.Any] = {
        "api_key": api_key,
        "api_url": url,
        "project_ids": list(project_ids),
        "task_statuses": ["completed"],
        "page_size": PAGE_SIZE,
    }
    if start_date is not None:
        config["start_date"] = start_date
    return config


def tasks_only(catalog: dict[str, t.Any]) -> dict[str, t.Any]:
    """The discovered catalog with only the `tasks` stream selected."""
    for stream in catalog["streams"]:
        for entry in stream["metadata"]:
            if entry["breadcrumb"] == []:
                entry["metadata"]["selected"] = stream["tap_stream_id"] == "tasks"
    return catalog


def with_concurrency(tap: Sequence[str], workers: int) -> list[str]:
    """The tap's command with its config's `max_concurrency` set (a config file beside it)."""
    command = list(tap)
    config_path = Path(command[command.index("--config") + 1])
    config = {**json.loads(config_path.read_text()), "max_concurrency": workers}
    written = config_path.with_name(f"config-{workers}.json")
    written.write_text(json.dumps(config, indent=2) + "\n")
    command[command.index("--config") + 1] = str(written)
    return command


def prepare_tap(
    directory: Path,
    url: str,
    api_key: str,
    project_ids: Sequence[str],
    start_date: str | None = None,
) -> list[str]:
    """Write config.json and catalog.json (from `--discover`) there; returns the tap's command."""
    directory.mkdir(parents=True, exist_ok=True)
    config, catalog = directory / "config.json", directory / "catalog.json"
    settings = tap_config(url, api_key, project_ids, start_date)
    config.write_text(json.dumps(settings, indent=2) + "\n")
    discovered = subprocess.run(  # noqa: S603 - the tap's own console script
        [tap_executable(), "--config", str(config), "--discover"],
        capture_output=True,
        check=True,
        timeout=120,
        cwd=ROOT,
        env=child_env(api_key),
    )
    catalog.write_text(json.dumps(tasks_only(json.loads(discovered.stdout)), indent=2) + "\n")
    return [tap_executable(), "--config", str(config), "--catalog", str(catalog)]


# The benchmark


@dataclass(frozen=True)
class Capacity:
    """The simulator's serving rate: clients reading without parsing, on 1 and 2 connections."""

    tasks: int
    runs: tuple[Measurement, ...]
    raw: Measurement


def bench_setting(
    simulator: Endpoint, setting: Setting
) -> tuple[list[Measurement], Capacity | None]:
    """Every client against one simulator; the simulator's capacity too at no latency."""
    project_ids = simulator.project_ids()
    tap = prepare_tap(
        setting.workdir / setting.label, simulator.url, simulator.api_key, project_ids
    )
    client_args = [simulator.url, *project_ids]
    python = sys.executable
    runs = [
        measure(
            simulator,
            setting,
            client="tap-scale",
            commands=[tap],
            expected_tasks=setting.tasks,
            stdout=Path(os.devnull),
            windowed=True,
        ),
        measure(
            simulator,
            setting,
            client="naive (Scale's example script)",
            commands=[[python, str(HERE / "naive_client.py"), *client_args]],
            expected_tasks=setting.tasks,
        ),
        measure(
            simulator,
            setting,
            client="raw (keep-alive + json.loads)",
            commands=[[python, str(HERE / "raw_client.py"), *client_args]],
            expected_tasks=setting.tasks,
        ),
        rlhf_rows.measure_rows(
            tap, partial(measure, simulator, setting, expected_tasks=setting.tasks, windowed=True)
        ),
        measure(
            simulator,
            setting,
            client=f"tap-scale, max_concurrency {MAX_CONCURRENCY}",
            commands=[with_concurrency(tap, MAX_CONCURRENCY)],
            expected_tasks=setting.tasks,
            stdout=Path(os.devnull),
            windowed=True,
        ),
    ]
    if setting.latency_ms > 0:
        return runs, None
    passes = max(1, round(CAPACITY_TASKS / setting.tasks))
    reader = [python, str(HERE / "raw_client.py"), *client_args, "--no-parse", f"--passes={passes}"]
    capacity = tuple(
        measure(
            simulator,
            setting,
            client=f"server ({connections} connection{'s' * (connections > 1)}, no parsing)",
            commands=[reader] * connections,
            expected_tasks=setting.tasks * passes * connections,
        )
        for connections in (1, 2)
    )
    return runs, Capacity(setting.tasks, capacity, runs[2])


def progress(text: str) -> None:
    """A line of progress on stderr."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def rows(results: Sequence[tuple[Setting, list[Measurement]]]) -> Iterator[str]:
    """The markdown tables of the results."""
    yield "| tasks | latency | client | wall s | tasks/s | CPU s | peak RSS MB | simulator CPU s |"
    yield "|---:|---:|---|---:|---:|---:|---:|---:|"
    for setting, runs in results:
        for run in runs:
            flag = " ⚠" if run.problem else ""
            yield (
                f"| {setting.tasks:,} | {setting.latency_ms:g} ms | {run.client}{flag} "
                f"| {run.usage.wall:.2f} | {run.tasks_per_second:,.0f} | {run.usage.cpu:.2f} "
                f"| {run.usage.rss_mb:,.0f} | {run.server_cpu:.2f} |"
            )
    yield ""
    yield (
        "| tasks | latency | tap/naive (tasks/s) | tap/raw (tasks/s) "
        f"| tap, max_concurrency {MAX_CONCURRENCY}/raw |"
    )
    yield "|---:|---:|---:|---:|---:|"
    for setting, runs in results:
        tap, naive, raw = (run.tasks_per_second for run in runs[:3])
        most = runs[-1].tasks_per_second
        ratios = f"{tap / naive:.2f} | {tap / raw:.2f} | {most / raw:.2f}"
        yield f"| {setting.tasks:,} | {setting.latency_ms:g} ms | {ratios} |"


def capacity_lines(capacities: Sequence[Capacity]) -> Iterator[str]:
    """One line per size on how fast the simulator serves, next to the raw client's reading."""
    for capacity in capacities:
        one, two = (
            f"{run.bytes / MB / run.usage.wall:,.0f} MB/s, {run.pages / run.usage.wall:,.0f} "
            f"pages/s (its CPU {run.server_cpu / run.usage.wall:.0%} of a core)"
            for run in capacity.runs
        )
        raw = capacity.raw
        yield (
            f"- {capacity.tasks:,} tasks: simulator serves {one} on one connection, {two} on "
            f"two; the raw client reads {raw.pages / raw.usage.wall:,.0f} pages/s "
            f"({raw.bytes / MB / raw.usage.wall:,.0f} MB/s)."
        )


def parse_list(text: str, kind: type[float | int]) -> list[t.Any]:
    """A comma-separated list of numbers (`10000,100_000`, `0,50`)."""
    try:
        return [kind(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError as error:
        message = f"not a comma-separated list of numbers: {text!r}"
        raise argparse.ArgumentTypeError(message) from error


def parse_orders(text: str) -> list[str]:
    """A comma-separated list of the simulator's orders (`shuffled,newest-first`)."""
    orders = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [order for order in orders if order not in ORDERS]
    if unknown or not orders:
        message = f"not a comma-separated list of {', '.join(ORDERS)}: {text!r}"
        raise argparse.ArgumentTypeError(message)
    return list(dict.fromkeys(orders))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line's settings."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="10,000 tasks only, at 0 and 50 ms; the backfill legs at 200 ms (in every order of "
        "--orders)",
    )
    parser.add_argument(
        "--sizes",
        type=lambda text: parse_list(text, int),
        help="completed tasks to sync, comma-separated (default: 10000,100000)",
    )
    parser.add_argument(
        "--latencies",
        type=lambda text: parse_list(text, float),
        help="milliseconds added to every request, comma-separated (default: 0,50)",
    )
    parser.add_argument(
        "--backfill-tasks",
        type=int,
        help="completed tasks of the one project of the backfill legs (default: 10000, or the "
        "smallest of --sizes)",
    )
    parser.add_argument(
        "--backfill-latencies",
        type=lambda text: parse_list(text, float),
        help="latencies of the backfill legs' sweep (default: 0,200,1000; --quick: 200; or "
        "--latencies)",
    )
    parser.add_argument(
        "--orders",
        type=parse_orders,
        default=list(ORDERS),
        help="the orders the simulator lists tasks in for the backfill legs, comma-separated "
        f"(default: {','.join(ORDERS)})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated world")
    parser.add_argument(
        "--run-timeout",
        type=float,
        help="seconds after which a client is killed (default: 60 + 5 ms per task)",
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep the clients' files and logs here (default: a temp dir)"
    )
    parser.add_argument(
        "--prepare-tap",
        type=Path,
        metavar="DIR",
        help="only write the tap leg's config and catalog for the simulator at --url, "
        "and print its command",
    )
    parser.add_argument("--url", help="with --prepare-tap: the simulator's URL, ending in /v2")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="with --prepare-tap")
    args = parser.parse_args(argv)
    if args.prepare_tap is not None and not args.url:
        parser.error("--prepare-tap needs --url")
    return args


def run(args: argparse.Namespace, workdir: Path) -> bool:
    """Every setting, then the report on stdout; whether every run counted."""
    sizes = args.sizes or ([SIZES[0]] if args.quick else list(SIZES))
    # As an installed package would be: each client's start is then the same however the
    # environment sets PYTHONDONTWRITEBYTECODE (the venv's packages are compiled by `make`).
    for package in ("tap_scale", "benchmarks"):
        compileall.compile_dir(ROOT / package, quiet=1)
    latencies = args.latencies or list(LATENCIES_MS)
    started = time.monotonic()
    results: list[tuple[Setting, list[Measurement]]] = []
    capacities: list[Capacity] = []
    for size in sizes:
        per_project = tasks_per_project(size)
        tasks = status_counts(per_project)["completed"] * PROJECTS
        for latency in latencies:
            timeout = args.run_timeout or 60 + 0.005 * tasks
            setting = Setting(tasks, latency, workdir, timeout)
            progress(f"{tasks:,} tasks, {latency:g} ms: starting the simulator")
            with Simulator(
                tasks_per_project=per_project, latency_ms=latency, seed=args.seed
            ) as simulator:
                runs, capacity = bench_setting(simulator, setting)
            results.append((setting, runs))
            if capacity is not None:
                capacities.append(capacity)
    from benchmarks import backfill  # noqa: PLC0415 - it builds on this module

    backfill_tasks = args.backfill_tasks or (min(args.sizes) if args.sizes else backfill.TASKS)
    backfill_latencies = args.backfill_latencies or (
        args.latencies or ([200.0] if args.quick else list(backfill.LATENCIES_MS))
    )
    backfill_lines, backfill_failures = backfill.run(
        backfill.Plan(backfill_tasks, backfill_latencies, args.orders, args.seed), workdir
    )
    elapsed = time.monotonic() - started
    heading = (
        f"tap-scale benchmark: {PROJECTS} projects, completed tasks, {PAGE_SIZE} per page, "
        f"every opt; {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()}; {elapsed / 60:.1f} min in all."
    )
    report = [
        heading,
        "",
        *rows(results),
        "",
        *capacity_lines(capacities),
        "",
        *rlhf_rows.report(results),
        "",
        *backfill_lines,
    ]
    failed = [run for _, runs in results for run in runs if run.problem]
    failed += [run for capacity in capacities for run in capacity.runs if run.problem]
    failures = [(run.client, run.problem) for run in failed] + backfill_failures
    if failures:
        report += ["", "⚠ Runs that do not count:"]
        report += [f"- {client}: {problem}" for client, problem in failures]
    sys.stdout.write("\n".join(report) + "\n")
    return not failures


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or only prepare the tap leg's files); returns the exit code."""
    args = parse_args(argv)
    if args.prepare_tap is not None:
        endpoint = Endpoint(args.url, args.api_key)
        command = prepare_tap(args.prepare_tap, args.url, args.api_key, endpoint.project_ids())
        sys.stdout.write(" ".join(command) + " > /dev/null\n")
        return 0
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return 0 if run(args, args.workdir.resolve()) else 1
    with tempfile.TemporaryDirectory(prefix="tap-scale-bench-") as workdir:
        return 0 if run(args, Path(workdir)) else 1


if __name__ == "__main__":
    sys.exit(main())
