"""One big partition read in time windows at once (`tap_scale.reading`): nothing lost at edges,
at any density, when killed, or when Scale rate-limits; over real HTTP against the simulator."""

from __future__ import annotations

import collections
import json
import re
import typing as t
from datetime import datetime, timedelta, timezone

import pytest

from tap_scale.models import parse_timestamp
from tap_scale.tap import TapScale
from tests.tap_run import run_tap, run_until_killed, select

if t.TYPE_CHECKING:
    from pathlib import Path

    from tap_scale.testing import ScaleSimulator
    from tests.tap_run import TapRun

BASE = datetime(2025, 3, 1, tzinfo=timezone.utc)


def one_project(simulator: ScaleSimulator) -> str:
    return str(simulator.projects[0]["id"])


def windowed_config(
    simulator: ScaleSimulator, *, workers: int = 4, page_size: int = 10
) -> dict[str, t.Any]:
    return {
        "api_url": simulator.url,
        "api_key": simulator.api_key,
        "project_ids": [one_project(simulator)],
        "page_size": page_size,
        "max_concurrency": workers,
    }


def chains(simulator: ScaleSimulator) -> list[tuple[str | None, str | None]]:
    """The windows the tap asked for: each chain's (completed_after, completed_before).

    The first page, asked for beside the lookup (`TasksStream.ask_first_pages`), has no upper
    bound.
    """
    return [
        (
            r["params"].get("completed_after", [None])[0],
            r["params"].get("completed_before", [None])[0],
        )
        for r in simulator.requests
        if r["path"] == "/v2/tasks" and "next_token" not in r["params"]
    ]


def assert_every_task_once_but_on_edges(
    simulator: ScaleSimulator, run: TapRun, page_size: int = 10
) -> None:
    """Every completed task of the project is out; one out twice lies exactly on an edge, or
    was read by a chain cut up while read (the log says how many pages were read again), or by
    a first page asked for beside the lookup whose window was then read again, bounded."""
    truth = {
        t["task_id"]: t
        for t in simulator.tasks(project_id=one_project(simulator), status="completed")
    }
    counts = collections.Counter(record["task_id"] for record in run.records())
    assert counts.keys() == truth.keys()
    edges = {parse_timestamp(before) for _, before in chains(simulator) if before is not None}
    again = re.search(r"(\d+) pages? read again", run.stderr)
    assert again, "the log says what the read cost"
    off_edges = sum(
        count - 1
        for task_id, count in counts.items()
        if count > 1 and parse_timestamp(truth[task_id]["completed_at"]) not in edges
    )
    assert off_edges <= (int(again[1]) + 1) * page_size, (off_edges, again[0])


# Over HTTP


@pytest.mark.parametrize("inclusive_before", [False, True])
def test_tasks_exactly_on_a_window_edge_are_read_whatever_before_means(
    simulator: ScaleSimulator, tmp_path: Path, *, inclusive_before: bool
) -> None:
    """Scale's `completed_before` is undocumented at equality: both meanings lose nothing."""
    project = one_project(simulator)
    # Whole seconds shared by many tasks: wherever the windows are cut, ties sit on edges.
    for second in range(0, 3600 * 48, 1800):
        simulator.add_tasks(project, 3, completed_at=BASE + timedelta(seconds=second))
    simulator.faults.inclusive_before = inclusive_before
    run = run_tap(tmp_path, windowed_config(simulator, page_size=7))
    assert_every_task_once_but_on_edges(simulator, run, page_size=7)
    assert len(set(chains(simulator))) > 4, "the partition was not read in windows"


@pytest.mark.parametrize(
    "density",
    ["one second", "spread over years", "bursty", "one moment"],
)
def test_a_big_partition_is_read_in_windows_at_once_and_every_task_comes_out(
    simulator: ScaleSimulator, tmp_path: Path, density: str
) -> None:
    project = one_project(simulator)
    moments = {
        "one second": [BASE + timedelta(milliseconds=7 * i) for i in range(140)],
        "spread over years": [BASE - timedelta(days=13 * i) for i in range(140)],
        "bursty": [BASE + timedelta(seconds=i) for i in range(120)]
        + [BASE - timedelta(days=90 * i) for i in range(1, 21)],
        "one moment": [BASE] * 140,
    }[density]
    for moment, count in collections.Counter(moments).items():
        simulator.add_tasks(project, count, completed_at=moment)
    simulator.faults.slow_seconds = 0.01
    run = run_tap(tmp_path, windowed_config(simulator))
    assert_every_task_once_but_on_edges(simulator, run)
    if density != "one moment":  # tasks of one instant cannot be cut into windows
        assert len(set(chains(simulator))) > 4, "the partition was not read in windows"


@pytest.mark.parametrize("kill_at", [0.3, 0.5, 0.8])
def test_a_first_sync_killed_midway_resumes_from_its_watermark_and_loses_nothing(
    simulator: ScaleSimulator, tmp_path: Path, kill_at: float
) -> None:
    project = one_project(simulator)
    simulator.add_tasks(project, 20, completed_at=BASE)  # a tie, wherever the edges fall
    # Enough tasks that the first cut's windows (16) hold a few percent of them each: a kill at
    # 30% finds some of them emitted, and the watermark past them.
    for hour in range(0, 600 * 3, 3):
        simulator.add_tasks(project, 1, completed_at=BASE + timedelta(hours=hour))
    config = windowed_config(simulator, workers=2)
    tasks_only = select(TapScale(config=config).catalog_dict, "tasks")
    total = len(simulator.tasks(project_id=project, status="completed"))
    simulator.faults.slow_seconds = 0.01
    killed = run_until_killed(tmp_path, config, int(total * kill_at), catalog=tasks_only)
    states = [m["value"] for m in killed if m["type"] == "STATE"]
    bookmarks = [
        p.get("replication_key_value")
        for p in states[-1]["bookmarks"]["tasks"]["partitions"]
        if p["context"]["status"] == "completed"
    ]
    assert bookmarks[0] is not None, "no watermark was written before the kill"
    resumed = run_tap(tmp_path, config, state=states[-1], catalog=tasks_only)
    out = {m["record"]["task_id"] for m in killed if m["type"] == "RECORD"}
    out |= {record["task_id"] for record in resumed.records()}
    assert out == {t["task_id"] for t in simulator.tasks(project_id=project, status="completed")}
    # It resumed part-way: the tasks before the watermark were not read again.
    assert len(resumed.records()) < total


def test_under_a_rate_limit_the_tap_reads_fewer_at_once_and_loses_nothing(
    simulator: ScaleSimulator, tmp_path: Path
) -> None:
    project = one_project(simulator)
    for day in range(300):
        simulator.add_tasks(project, 1, completed_at=BASE + timedelta(hours=5 * day))
    simulator.faults.slow_seconds = 0.1
    simulator.faults.requests_per_second = 10  # what one reader at a time can just use
    run = run_tap(tmp_path, windowed_config(simulator, workers=8))
    assert_every_task_once_but_on_edges(simulator, run)
    answered = [r["status"] for r in simulator.requests if r["path"] == "/v2/tasks"]
    assert 429 in answered, "the limit was never reached: this test proves nothing"
    assert "Scale is rate limiting: " in run.stderr
    # Without the throttle, eight readers at ten requests a second each would meet mostly 429s.
    assert answered.count(429) < 0.25 * len(answered)


def test_a_state_written_mid_partition_reads_back(
    simulator: ScaleSimulator, tmp_path: Path
) -> None:
    project = one_project(simulator)
    for day in range(120):
        simulator.add_tasks(project, 1, completed_at=BASE + timedelta(hours=day))
    run = run_tap(tmp_path, windowed_config(simulator, workers=2))
    mid = [
        state
        for state in run.states
        if any(
            "progress_markers" in p
            for p in state["bookmarks"].get("tasks", {}).get("partitions", ())
        )
    ]
    assert mid, "no STATE was written while the partition was read"
    again = run_tap(tmp_path, windowed_config(simulator, workers=2), state=mid[-1])
    assert again.returncode == 0
    assert json.dumps(again.state)  # a state the tap wrote is one it reads
