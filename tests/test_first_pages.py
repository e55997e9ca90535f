"""Each configured project's first page is asked for beside the scope's lookup
(`TasksStream.ask_first_pages`): one round trip where there were two, and nothing else changes."""

from __future__ import annotations

import typing as t
from datetime import timedelta

from tests.tap_run import by_id, run_tap

if t.TYPE_CHECKING:
    from pathlib import Path

    from tap_scale.testing import ScaleSimulator


def one_project_config(simulator: ScaleSimulator, config: dict[str, t.Any]) -> dict[str, t.Any]:
    return {**config, "project_ids": [simulator.projects[0]["id"]]}


def test_the_first_page_is_asked_for_while_the_projects_are_looked_up(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    config = one_project_config(simulator, config)
    # The lookup answers two seconds late: a first page asked for after it is logged after it.
    simulator.faults.only_paths = ("/v2/projects",)
    simulator.faults.slow_seconds = 2.0
    run = run_tap(tmp_path, config)

    paths = [request["path"] for request in simulator.requests]
    assert paths.index("/v2/tasks") < paths.index("/v2/projects"), paths
    first = simulator.requests[paths.index("/v2/tasks")]["params"]
    assert "completed_before" not in first, "asked before Scale's clock was known"
    project = config["project_ids"][0]
    assert by_id(run.records()) == by_id(simulator.tasks(project_id=project, status="completed"))


def test_tasks_on_that_page_completed_after_the_syncs_bound_wait_for_the_next_sync(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    config = one_project_config(simulator, config)
    project = config["project_ids"][0]
    first = run_tap(tmp_path, config)
    # Stamped an hour ahead (a clock gone wrong upstream): the page asked for with no upper
    # bound holds them, beside two that completed before this sync.
    later = simulator.add_tasks(project, 2, completed_at=simulator.now() + timedelta(hours=1))
    done = simulator.add_tasks(project, 2, completed_at=simulator.now() - timedelta(minutes=1))
    run = run_tap(tmp_path, config, state=first.state)

    unbounded = [
        request
        for request in simulator.requests
        if request["path"] == "/v2/tasks" and "completed_before" not in request["params"]
    ]
    assert unbounded, "the first page was asked for before the bound was known"
    ids = {record["task_id"] for record in run.records()}
    assert {task["task_id"] for task in done} <= ids
    assert not {task["task_id"] for task in later} & ids
    bookmark = run.state["bookmarks"]["tasks"]["partitions"][0]["replication_key_value"]
    assert all(bookmark < task["completed_at"] for task in later)
