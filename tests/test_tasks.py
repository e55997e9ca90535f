"""The tasks stream over real HTTP: completeness, ties, incremental state, selection, errors."""

from __future__ import annotations

import collections
import itertools
import json
import threading
import typing as t
from datetime import timedelta

import jsonschema

from tap_scale.models import format_timestamp, parse_timestamp
from tap_scale.tap import TapScale
from tests.tap_run import TIMESTAMP_FIELDS, by_id, run_tap

if t.TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from tap_scale.testing import ScaleSimulator
    from tests.tap_run import TapRun


def test_every_completed_task_is_emitted_exactly_once_as_scale_holds_it(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    run = run_tap(tmp_path, config)

    records = run.records()
    truth = by_id(simulator.tasks(status="completed"))
    ids = [record["task_id"] for record in records]
    assert len(ids) == len(set(ids)), "a task was emitted twice in one run"
    assert by_id(records) == truth

    # The data really has what this test claims to cover: ties and many pages per partition.
    ties = collections.Counter(task["completed_at"] for task in truth.values())
    assert max(ties.values()) > 1
    assert sum("next_token" in request["params"] for request in simulator.requests) > len(
        simulator.projects
    )


def test_records_are_valid_against_the_discovered_schema(
    config: dict[str, t.Any], tmp_path: Path
) -> None:
    run = run_tap(tmp_path, {**config, "task_statuses": ["completed", "pending", "error"]})
    validator = jsonschema.Draft7Validator(
        run.schema(), format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )
    records = run.records()
    assert records
    for record in records:
        validator.validate(record)
        assert isinstance(record["project"], str)
        for name in TIMESTAMP_FIELDS:
            if record.get(name) is not None:
                # One fixed-width UTC form, so that bookmarks compare as the moments they are.
                assert record[name] == format_timestamp(parse_timestamp(record[name]))


def test_unknown_nested_fields_and_every_annotation_type_are_kept(
    config: dict[str, t.Any], tmp_path: Path
) -> None:
    records = run_tap(tmp_path, config).records()
    annotations = list(annotations_in(records))
    types = {annotation.get("type") for annotation in annotations}
    assert {"integer", "boolean", "text", "ranked_groups", "rubric_rating", "file"} <= types
    value_types = {type(annotation.get("value")).__name__ for annotation in annotations}
    assert {"int", "bool", "str", "list", "dict"} <= value_types
    # Fields no model of ours names, which Scale may add at any time, arrive untouched.
    assert any("rater_confidence" in annotation for annotation in annotations)


def annotations_in(value: t.Any) -> t.Iterator[dict[str, t.Any]]:
    """Every annotation anywhere in a nest of records, threads, turns, messages and rubrics."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "annotations":
                yield from item
            yield from annotations_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from annotations_in(item)


def test_statuses_without_completed_at_are_read_in_full(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    statuses = ["pending", "canceled", "error"]
    config = {**config, "task_statuses": statuses}
    first = run_tap(tmp_path, config)
    second = run_tap(tmp_path, config, state=first.state)

    truth = by_id(task for status in statuses for task in simulator.tasks(status=status))
    assert truth
    assert by_id(first.records()) == truth
    assert by_id(second.records()) == truth


def test_a_second_run_emits_what_completed_since(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    project = simulator.projects[0]["id"]
    first = run_tap(tmp_path, config)

    newly_completed = simulator.complete_tasks(project, 3)
    added = simulator.add_tasks(project, 4)
    simulator.reset_log()
    second = run_tap(tmp_path, config, state=first.state)

    emitted = {record["task_id"]: record for record in second.records()}
    assert {task["task_id"] for task in [*newly_completed, *added]} <= set(emitted)
    # Besides those, only the overlap: tasks completed within the lookback of their bookmark.
    bookmarks = {
        partition["context"]["project"]: parse_timestamp(partition["replication_key_value"])
        for partition in first.state["bookmarks"]["tasks"]["partitions"]
    }
    lookback = timedelta(minutes=5)
    for record in emitted.values():
        assert parse_timestamp(record["completed_at"]) >= bookmarks[record["project"]] - lookback
    task_requests = [r for r in simulator.requests if r["path"] == "/v2/tasks"]
    assert all("completed_after" in r["params"] for r in task_requests)


def test_late_tasks_within_the_lookback_and_ties_at_the_bookmark_are_caught(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    project = simulator.projects[0]["id"]
    first = run_tap(tmp_path, config)
    bookmark = max(
        parse_timestamp(r["completed_at"]) for r in first.records() if r["project"] == project
    )

    late = simulator.add_tasks(project, 2, completed_at=bookmark - timedelta(minutes=3))
    tied = simulator.add_tasks(project, 2, completed_at=bookmark)
    second = run_tap(tmp_path, {**config, "lookback_minutes": 5}, state=first.state)
    emitted = {record["task_id"] for record in second.records()}
    assert {task["task_id"] for task in [*late, *tied]} <= emitted

    # Even with no lookback at all, a task completed at exactly the bookmark is not missed.
    tied_again = simulator.add_tasks(project, 1, completed_at=bookmark)
    third = run_tap(tmp_path, {**config, "lookback_minutes": 0}, state=first.state)
    assert tied_again[0]["task_id"] in {record["task_id"] for record in third.records()}


def test_a_project_added_later_starts_from_start_date(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    first_project, second_project = (project["id"] for project in simulator.projects[:2])
    completed = sorted(
        parse_timestamp(task["completed_at"])
        for task in simulator.tasks(project_id=second_project, status="completed")
    )
    start_date = completed[len(completed) // 2]
    config = {**config, "start_date": format_timestamp(start_date)}

    first = run_tap(tmp_path, {**config, "project_ids": [first_project]})
    second = run_tap(
        tmp_path, {**config, "project_ids": [first_project, second_project]}, state=first.state
    )

    emitted = by_id(second.records())
    expected = by_id(
        task
        for task in simulator.tasks(project_id=second_project, status="completed")
        if parse_timestamp(task["completed_at"]) >= start_date
    )
    # The second project is read from start_date, ties at start_date included...
    assert {k: v for k, v in emitted.items() if v["project"] == second_project} == expected
    # ...while the first has nothing new: only its tasks at the bookmark, re-read by the margin.
    first_seen = [parse_timestamp(r["completed_at"]) for r in first.records()]
    first_again = [v for v in emitted.values() if v["project"] == first_project]
    assert all(
        task["completed_at"] >= max(first_seen) - timedelta(minutes=5) for task in first_again
    )
    partitions = second.state["bookmarks"]["tasks"]["partitions"]
    assert {p["context"]["project"] for p in partitions} == {first_project, second_project}


def test_projects_by_name_and_batches(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    project = simulator.projects[1]
    by_name = run_tap(tmp_path, {**config, "project_names": [project["name"]]})
    assert by_id(by_name.records()) == by_id(
        simulator.tasks(project_id=project["id"], status="completed")
    )

    batch = simulator.batches(project["id"])[0]
    by_batch = run_tap(tmp_path, {**config, "batch_names": [batch["name"]]})
    assert by_id(by_batch.records()) == by_id(
        simulator.tasks(batch_id=batch["id"], status="completed")
    )
    contexts = [p["context"] for p in by_batch.state["bookmarks"]["tasks"]["partitions"]]
    assert contexts == [{"batch": batch["id"], "status": "completed"}]


def test_a_rejected_key_is_a_clear_error_that_never_shows_the_key(
    config: dict[str, t.Any], tmp_path: Path
) -> None:
    wrong_key = "live_not_a_real_key_4242"
    run = run_tap(tmp_path, {**config, "api_key": wrong_key}, check=False)
    assert run.returncode == 1
    assert "401" in run.stderr
    assert "api_key" in run.stderr
    assert "Traceback" not in run.stderr
    assert wrong_key not in run.stderr + run.stdout


def test_a_repeated_next_token_is_a_clear_error_not_an_endless_loop(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    simulator.faults.repeated_token = True
    run = run_tap(tmp_path, config, check=False)
    assert run.returncode == 1
    assert "next_token it had already returned" in run.stderr
    assert "Traceback" not in run.stderr
    # It stopped at the first repeat: one page fetched with the token, no more.
    assert sum("next_token" in r["params"] for r in simulator.requests) == 1


def test_partitions_read_concurrently_hold_the_same_tasks_and_state(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    config = {**config, "task_statuses": ["completed", "pending"]}
    one_at_a_time = run_tap(tmp_path, {**config, "max_concurrency": 1})

    simulator.faults.slow_seconds = 0.02
    simulator.reset_log()
    concurrent = run_tap(tmp_path, {**config, "max_concurrency": 4})

    def per_partition(run: TapRun) -> dict[tuple[str, str], list[str]]:
        order: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
        for record in run.records():
            order[record["project"], record["status"]].append(record["task_id"])
        return {partition: sorted(ids) for partition, ids in order.items()}

    assert per_partition(concurrent) == per_partition(one_at_a_time)
    assert concurrent.state == one_at_a_time.state
    # The reads really overlapped: a chain of pages (a query, its bounds included) was started
    # before another one had been read to its end.
    chains = [
        json.dumps({k: v for k, v in r["params"].items() if k != "next_token"}, sort_keys=True)
        for r in simulator.requests
        if r["path"] == "/v2/tasks"
    ]
    first_seen = {chain: chains.index(chain) for chain in chains}
    last_seen = {chain: len(chains) - 1 - chains[::-1].index(chain) for chain in chains}
    ordered = sorted(first_seen, key=first_seen.get)  # type: ignore[arg-type]
    assert any(first_seen[b] < last_seen[a] for a, b in itertools.pairwise(ordered))


def test_no_state_names_a_bookmark_before_every_task_completed_before_it_is_out(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    """The watermark: a bookmark written while its partition is read has nothing unread below.

    Each project is read in several windows at once (pages of 7), so its bookmark moves while
    it is read; a sync resumed from any STATE it wrote would miss nothing.
    """
    simulator.faults.slow_seconds = 0.02
    run = run_tap(tmp_path, {**config, "max_concurrency": 3})
    truth = simulator.tasks(status="completed")
    emitted: set[str] = set()
    mid_partition = 0
    for message in run.messages:
        if message["type"] == "RECORD" and message["stream"] == "tasks":
            emitted.add(message["record"]["task_id"])
        elif message["type"] == "STATE":
            tasks = message["value"]["bookmarks"].get("tasks", {})
            for partition in tasks.get("partitions", ()):
                bookmark = partition.get("replication_key_value")
                if bookmark is None:
                    continue
                below = {
                    task["task_id"]
                    for task in truth
                    if task["project"] == partition["context"]["project"]
                    and parse_timestamp(task["completed_at"]) < parse_timestamp(bookmark)
                }
                assert below <= emitted, f"{partition} named before all below it were out"
                mid_partition += "progress_markers" in partition
    assert mid_partition, "no bookmark moved while its partition was being read"
    assert emitted == {task["task_id"] for task in truth}


def test_the_same_stream_object_can_read_its_partitions_twice(simulator: ScaleSimulator) -> None:
    # Library use: the first read goes through the read-ahead, the second directly.
    stream = TapScale(config={"api_url": simulator.url, "api_key": simulator.api_key}).streams[
        "tasks"
    ]

    def read_all() -> list[str]:
        records = (r for c in stream.partitions or () for r in stream.get_records(c))
        return sorted(str(t.cast("dict[str, t.Any]", r)["task_id"]) for r in records)

    reads = [read_all(), read_all()]
    assert reads[0] == reads[1] == sorted(t["task_id"] for t in simulator.tasks(status="completed"))


def test_the_same_tap_object_can_sync_twice(
    simulator: ScaleSimulator, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    # Library use: each sync reads its partitions afresh, the second from the first's state.
    tap = TapScale(config={"api_url": simulator.url, "api_key": simulator.api_key})
    completed = {t["task_id"] for t in simulator.tasks(status="completed")}
    synced: list[set[str]] = []
    for _ in range(2):
        worker = threading.Thread(target=tap.sync_all, daemon=True)
        worker.start()
        worker.join(timeout=60)
        assert not worker.is_alive(), "the sync hung"
        messages = [json.loads(line) for line in capsysbinary.readouterr().out.splitlines()]
        synced.append(
            {
                m["record"]["task_id"]
                for m in messages
                if m["type"] == "RECORD" and m["stream"] == "tasks"
            }
        )
    assert synced[0] == completed
    # The default 5-minute lookback re-reads the last tasks of each project, nothing else.
    assert synced[1]
    assert synced[1] < completed
