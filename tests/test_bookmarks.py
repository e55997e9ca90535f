"""Nothing lost, no partition blocked for good: bookmarks a server, a clock or a state can't poison.

Each test stages over real HTTP what a misbehaving server or clock does, then runs the tap again
from the state the first run left, as a scheduler would, and checks what the second run reads.
"""

from __future__ import annotations

import re
import typing as t
from datetime import datetime, timedelta, timezone

import pytest

from tap_scale.models import parse_timestamp as moment
from tests.tap_run import discover, run_tap, select

if t.TYPE_CHECKING:
    from pathlib import Path

    from tap_scale.testing import ScaleSimulator

# The one form every timestamp is emitted and kept in: four-digit year, microseconds, UTC.
EMITTED_FORM = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def bookmark(state: dict[str, t.Any], project_id: str) -> str:
    """The `completed_at` bookmark of a project's completed tasks in a state."""
    partitions = state["bookmarks"]["tasks"]["partitions"]
    context = {"project": project_id, "status": "completed"}
    return str(next(p for p in partitions if p["context"] == context)["replication_key_value"])


def with_bookmark(state: dict[str, t.Any], project_id: str, value: str) -> dict[str, t.Any]:
    """The state with one project's bookmark replaced, as an older tap or a person left it."""
    for partition in state["bookmarks"]["tasks"]["partitions"]:
        if partition["context"] == {"project": project_id, "status": "completed"}:
            partition["replication_key_value"] = value
    return state


def task_ids(records: t.Iterable[dict[str, t.Any]]) -> set[str]:
    return {record["task_id"] for record in records}


def test_a_task_stamped_after_the_bound_cannot_move_the_bookmark_past_tasks_not_yet_read(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    project = simulator.projects[0]["id"]
    config = {**config, "project_ids": [project]}
    # A server that ignores `completed_before` hands over a task stamped a year from now.
    simulator.faults.ignore_time_filters = True
    future = simulator.add_tasks(
        project, 1, completed_at=datetime.now(timezone.utc) + timedelta(days=365)
    )
    first = run_tap(tmp_path, config)
    assert task_ids(first.records()) >= task_ids(future), "the task itself is synced"
    assert moment(bookmark(first.state, project)) <= datetime.now(timezone.utc)

    simulator.faults.ignore_time_filters = False
    later = simulator.add_tasks(project, 3)
    second = run_tap(tmp_path, config, state=first.state)
    assert task_ids(second.records()) >= task_ids(later)


def test_timestamps_keep_four_digit_years_so_the_next_run_reads_its_bookmark(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    project = simulator.projects[0]["id"]
    config = {**config, "project_ids": [project]}
    # Written at an offset, a timestamp takes the slow path through parsing and formatting,
    # where the year 999 once came out as "999-...", which sorts after "2025-...".
    simulator.faults.timestamp_offset = "+01:00"
    ancient = simulator.add_tasks(project, 1, completed_at=datetime(999, 6, 1, tzinfo=timezone.utc))
    first = run_tap(tmp_path, config)

    emitted = {record["task_id"]: record for record in first.records()}
    assert emitted[ancient[0]["task_id"]]["completed_at"] == "0999-06-01T00:00:00.000000Z"
    for record in emitted.values():
        for name in ("created_at", "completed_at"):
            assert EMITTED_FORM.fullmatch(record[name]), (name, record[name])
    assert EMITTED_FORM.fullmatch(bookmark(first.state, project))
    assert not bookmark(first.state, project).startswith("0999")

    later = simulator.add_tasks(project, 2)
    second = run_tap(tmp_path, config, state=first.state)
    assert task_ids(second.records()) >= task_ids(later)


@pytest.mark.parametrize(
    ("stored", "warned"),
    [
        # The earliest moment Python has: less the lookback, it would overflow.
        ("0001-01-01T00:00:00.000000Z", False),
        # Poisoned by an older tap-scale that followed a task stamped in the future.
        ("2999-01-01T00:00:00.000000Z", True),
    ],
)
def test_an_extreme_bookmark_in_the_state_reads_the_partition_again_rather_never(
    simulator: ScaleSimulator,
    config: dict[str, t.Any],
    tmp_path: Path,
    stored: str,
    warned: bool,  # noqa: FBT001
) -> None:
    project = simulator.projects[0]["id"]
    config = {**config, "project_ids": [project]}
    first = run_tap(tmp_path, config)
    run = run_tap(tmp_path, config, state=with_bookmark(first.state, project, stored))
    assert task_ids(run.records()) == task_ids(first.records())
    assert ("lies after Scale's current time" in run.stderr) is warned
    assert moment(bookmark(run.state, project)) <= datetime.now(timezone.utc)


def test_a_server_clock_behind_by_more_than_the_lookback_loses_no_task(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    """The sync's upper bound is Scale's time (its Date header), not this machine's.

    Scale's clock is an hour behind. Y completes during the first run, 20 minutes on by Scale's
    clock, and is read by it if the bound is this machine's time; X completed 10 minutes on, on
    a page that run had already read. The next run starts from Y less the 5-minute lookback,
    and would never see X.
    """
    project = simulator.projects[0]["id"]
    config = {**config, "project_ids": [project]}
    simulator.faults.clock_skew = -3600.0
    started = simulator.now()
    y = simulator.add_tasks(project, 1, completed_at=started + timedelta(minutes=20))
    first = run_tap(tmp_path, config)
    # The first page, asked for beside the lookup, has no upper bound
    # (`TasksStream.ask_first_pages`).
    bounds = {
        r["params"]["completed_before"][0]
        for r in simulator.requests
        if r["path"] == "/v2/tasks" and "completed_before" in r["params"]
    }
    assert all(moment(bound) < started + timedelta(minutes=1) for bound in bounds), bounds
    # A Date has whole seconds: the skew is known to within one.
    assert re.search(r"Scale's clock is 360[01] s behind this machine's", first.stderr)

    x = simulator.add_tasks(project, 1, completed_at=started + timedelta(minutes=10))
    simulator.faults.clock_skew += 30 * 60  # half an hour passes on Scale's clock
    second = run_tap(tmp_path, config, state=first.state)
    read = task_ids(first.records()) | task_ids(second.records())
    assert read >= task_ids(x) | task_ids(y)


@pytest.mark.parametrize(
    "server_filters", [True, False], ids=["server filters", "server ignores filters"]
)
def test_start_date_holds_for_deliveries_and_their_tasks(
    simulator: ScaleSimulator,
    config: dict[str, t.Any],
    tmp_path: Path,
    server_filters: bool,  # noqa: FBT001
) -> None:
    deliveries = simulator.deliveries()
    dataset_deliveries = simulator.dataset_deliveries()
    # A start between the deliveries: the later half of each kind is synced, the rest is not.
    everything = sorted(moment(d["delivered_at"]) for d in [*deliveries, *dataset_deliveries])
    start = everything[len(everything) // 2]
    simulator.faults.ignore_time_filters = not server_filters
    catalog = select(
        discover(tmp_path, config),
        "deliveries",
        "delivery_tasks",
        "dataset_deliveries",
        "dataset_tasks",
    )
    run = run_tap(tmp_path, {**config, "start_date": start.isoformat()}, catalog=catalog)

    def since(items: list[dict[str, t.Any]]) -> set[str]:
        return {d["id"] for d in items if moment(d["delivered_at"]) >= start}

    assert {r["id"] for r in run.records("deliveries")} == since(deliveries)
    assert {r["delivery"] for r in run.records("delivery_tasks")} == since(deliveries)
    assert {r["id"] for r in run.records("dataset_deliveries")} == since(dataset_deliveries)
    assert {r["delivery"] for r in run.records("dataset_tasks")} == since(dataset_deliveries)
    assert since(deliveries) != {d["id"] for d in deliveries}, "the start is between them"


def test_a_named_delivery_is_synced_whatever_the_start_date(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    oldest = min(simulator.deliveries(), key=lambda d: moment(d["delivered_at"]))
    config = {**config, "delivery_ids": [oldest["id"]], "start_date": "2100-01-01T00:00:00Z"}
    catalog = select(discover(tmp_path, config), "deliveries", "delivery_tasks")
    run = run_tap(tmp_path, config, catalog=catalog)
    assert {r["id"] for r in run.records("deliveries")} == {oldest["id"]}
    assert {r["task_id"] for r in run.records("delivery_tasks")} == {
        task["task_id"] for task in simulator.delivery_tasks(oldest["id"])
    }
