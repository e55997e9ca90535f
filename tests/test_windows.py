"""One big partition read in time windows at once: nothing lost at edges, at any density, when
killed, or when Scale rate-limits; over real HTTP against the simulator."""

from __future__ import annotations

import collections
import inspect
import itertools
import json
import typing as t
from datetime import datetime, timedelta, timezone

import pytest
from singer_sdk import Stream
from singer_sdk.streams.rest import RESTStream

from tap_scale.models import parse_timestamp
from tap_scale.tap import TapScale
from tap_scale.windows import MILLISECOND, PartitionPlan, Region, Spread, Window
from tests.tap_run import run_tap, run_until_killed, select

if t.TYPE_CHECKING:
    from pathlib import Path

    from tap_scale.testing import ScaleSimulator

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

    The first page, asked for beside the lookup (`tap_scale.first_pages`), has no upper bound.
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
    simulator: ScaleSimulator, records: list[dict[str, t.Any]]
) -> None:
    """Every completed task of the project is out; one out twice lies exactly on an edge."""
    truth = {
        t["task_id"]: t
        for t in simulator.tasks(project_id=one_project(simulator), status="completed")
    }
    counts = collections.Counter(record["task_id"] for record in records)
    assert counts.keys() == truth.keys()
    edges = {parse_timestamp(before) for _, before in chains(simulator) if before is not None}
    for task_id, count in counts.items():
        if count > 1:
            assert parse_timestamp(truth[task_id]["completed_at"]) in edges, task_id


# The plan itself


def test_windows_cut_from_a_region_cover_it_without_a_gap() -> None:
    end = BASE + timedelta(days=30)
    sample = sorted(BASE + timedelta(hours=h) for h in range(0, 720, 7))
    region = Region(
        Window(BASE - MILLISECOND, end, BASE), sample, first_share=0.1, workers=4, page_size=10
    )
    windows = []
    while not region.exhausted:
        windows.append(region.cut())
        region.counted(windows[-1], 25)
    assert windows[0].after == BASE - MILLISECOND
    assert windows[-1].before == end
    for earlier, later in itertools.pairwise(windows):
        # Each asks from just before the last one's end: `after` is strict.
        assert later.start == earlier.before
        assert later.after == earlier.before - MILLISECOND  # type: ignore[operator]
        assert later.before > later.start  # type: ignore[operator]


def test_the_spread_follows_a_burst_in_the_sample() -> None:
    burst = [BASE + timedelta(days=100, seconds=s) for s in range(90)]
    stragglers = [BASE + timedelta(days=d) for d in range(0, 365, 37)]
    spread = Spread(BASE, BASE + timedelta(days=365), sorted(burst + stragglers))
    # The half of the estimate that follows the sample puts nearly all of its share in the
    # burst's 90 seconds of a year (the even half, next to none).
    inside = spread.share(BASE + timedelta(days=100, seconds=90)) - spread.share(
        BASE + timedelta(days=100)
    )
    assert inside > 0.4


def test_the_watermark_is_the_start_of_the_first_window_not_emitted() -> None:
    whole = Window(BASE - MILLISECOND, BASE + timedelta(days=1), BASE, whole=True)
    plan = PartitionPlan(whole, workers=2, page_size=10)
    assert plan.take() is whole
    sample = [BASE + timedelta(hours=h) for h in range(10)]
    assert plan.first_page(whole, sample, more=True, idle=1)
    first, second, third = plan.take(), plan.take(), plan.take()
    assert first is not None
    assert second is not None
    assert third is not None
    assert not plan.read(second, 10)
    assert plan.emitted(second) is None  # the first is still being read
    plan.read(first, 10)
    assert plan.emitted(first) == third.start  # both before it are out


def test_a_window_whose_tasks_share_one_moment_is_not_cut_up() -> None:
    whole = Window(None, BASE + timedelta(days=1), None, whole=True)
    plan = PartitionPlan(whole, workers=4, page_size=10)
    assert plan.take() is whole
    assert not plan.first_page(whole, [BASE] * 10, more=True, idle=3)


# Over HTTP


@pytest.mark.parametrize("inclusive_before", [False, True])
def test_tasks_exactly_on_a_window_edge_are_read_whatever_before_means(
    simulator: ScaleSimulator, *, inclusive_before: bool
) -> None:
    """Scale's `completed_before` is undocumented at equality: both meanings lose nothing."""
    project = one_project(simulator)
    end = BASE + timedelta(days=2)
    region = Region(
        Window(BASE - MILLISECOND, end, BASE),
        [BASE + timedelta(hours=h) for h in range(48)],
        first_share=0.5,
        workers=2,
        page_size=10,
    )
    left, right = region.cut(), region.cut()
    edge = left.before
    assert edge is not None
    assert right.start == edge
    on_edge = {t["task_id"] for t in simulator.add_tasks(project, 25, completed_at=edge)}
    simulator.faults.inclusive_before = inclusive_before
    tap = TapScale(config={"api_url": simulator.url, "api_key": simulator.api_key, "page_size": 7})
    stream = tap.streams["tasks"]
    context = {"project": project, "status": "completed"}
    read = {
        record["task_id"]
        for window in (left, right)
        for page, _ in stream._window_pages(context, window)  # type: ignore[attr-defined]  # noqa: SLF001
        for record in page
    }
    assert on_edge <= read


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
    assert_every_task_once_but_on_edges(simulator, run.records())
    if density != "one moment":  # tasks of one instant cannot be cut into windows
        assert len(set(chains(simulator))) > 4, "the partition was not read in windows"


@pytest.mark.parametrize("kill_at", [0.3, 0.5, 0.8])
def test_a_first_sync_killed_midway_resumes_from_its_watermark_and_loses_nothing(
    simulator: ScaleSimulator, tmp_path: Path, kill_at: float
) -> None:
    project = one_project(simulator)
    simulator.add_tasks(project, 20, completed_at=BASE)  # a tie, wherever the edges fall
    for day in range(280):
        simulator.add_tasks(project, 1, completed_at=BASE + timedelta(hours=7 * day))
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
    assert_every_task_once_but_on_edges(simulator, run.records())
    answered = [r["status"] for r in simulator.requests if r["path"] == "/v2/tasks"]
    assert 429 in answered, "the limit was never reached: this test proves nothing"
    assert "Scale is rate limiting: " in run.stderr
    # Without the throttle, eight readers at ten requests a second each would meet mostly 429s.
    assert answered.count(429) < 0.25 * len(answered)


def test_the_private_sdk_hooks_tasks_relies_on_are_still_there() -> None:
    """`TasksStream` drives the SDK's per-partition sync and state through private hooks."""
    sync = inspect.signature(Stream._sync_records)  # noqa: SLF001
    assert list(sync.parameters) == ["self", "context", "write_messages"], (
        "Stream._sync_records changed its signature: TasksStream._sync_records "
        "(tap_scale/streams/tasks.py) runs it once per partition"
    )
    body = inspect.getsource(Stream._sync_records)  # noqa: SLF001
    assert "self.state_manager.finalize_state(state)" in inspect.getsource(
        Stream._finalize_state  # noqa: SLF001
    ), "Stream._finalize_state changed: TasksStream._sync_records ends its sync with it"
    for call in ("self.get_records(current_context)", "self._finalize_state(state)"):
        assert call in body, (
            f"Stream._sync_records no longer calls {call}: TasksStream relies on it reading each "
            "partition through get_records and finishing the partition's state"
        )
    assert "self._tap.state_writer.write_state(self.tap_state)" in inspect.getsource(
        Stream._write_state_message  # noqa: SLF001
    ), "Stream._write_state_message changed: TasksStream._advance_bookmark writes STATE with it"
    request = inspect.signature(RESTStream._request)  # noqa: SLF001
    assert list(request.parameters) == ["self", "prepared_request", "context"], (
        "RESTStream._request changed: ScaleStream.pages and fetch (tap_scale/client.py) send "
        "requests through it"
    )


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
