"""Any selection of streams finishes with every record, whatever Scale's order; over real HTTP.

The tap's CLI against the simulator at the default `max_concurrency`, three projects (three
partitions), a project labelled over four weeks with `start_date` a year early, and pages small
enough that each partition is read in many windows. Each run must end (a timeout says it did
not) with every completed task, or every row derived from one, out at least once.
"""

from __future__ import annotations

import contextlib
import random
import typing as t

import msgspec
import pytest

from tap_scale import task_rows
from tap_scale.tap import TapScale
from tap_scale.testing import ScaleSimulator
from tests.tap_run import run_tap, select

if t.TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

ORDERS = ("shuffled", "newest-first", "oldest-first", "by-batch")
ALL_STREAMS = tuple(TapScale(config={"api_key": "test_key"}).streams)
# The primary key of each row stream, and how its rows are derived from a task.
ROWS = {
    "task_messages": (
        ("task_id", "thread_id", "turn_id", "message_index"),
        task_rows.message_rows,
    ),
    "task_annotations": (("task_id", "annotation_id"), task_rows.annotation_rows),
    "task_preferences": (
        ("task_id", "annotation_id", "preferred", "rejected"),
        task_rows.preference_rows,
    ),
}
# Every combination of the streams cannot be run over HTTP; these, and a few drawn at random,
# are the ones the engine's scheduling could tell apart (its unit tests prove none can).
SELECTIONS = {
    "task_annotations alone": ("task_annotations",),
    "task_messages and task_preferences": ("task_messages", "task_preferences"),
    "tasks alone": ("tasks",),
    "tasks and its rows": ("tasks", *ROWS),
    "every stream": ALL_STREAMS,
    **{
        f"drawn {seed}": tuple(
            sorted(random.Random(seed).sample(ALL_STREAMS, random.Random(seed).randint(1, 8)))
        )
        for seed in range(3)
    },
}


# Each selection in two orders, every order as often: all sixteen pairs would add little.
CASES = [
    (selection, ORDERS[(number + shift) % len(ORDERS)])
    for number, selection in enumerate(SELECTIONS)
    for shift in (0, 1)
]


@pytest.fixture(scope="module")
def worlds() -> Iterator[dict[str, ScaleSimulator]]:
    """Three projects labelled over four weeks, one simulator per order, started as needed."""
    with contextlib.ExitStack() as stack:
        started: dict[str, ScaleSimulator] = {}

        class Worlds(dict[str, ScaleSimulator]):
            def __missing__(self, order: str) -> ScaleSimulator:
                simulator = ScaleSimulator(
                    projects=3, tasks_per_project=150, order=order, labelled_over_days=28
                )
                self[order] = stack.enter_context(simulator)
                return self[order]

        yield Worlds(started)


def truth(simulator: ScaleSimulator) -> list[dict[str, t.Any]]:
    return [
        task
        for project in simulator.projects
        for task in simulator.tasks(project_id=project["id"], status="completed")
    ]


def keys(rows: t.Iterable[dict[str, t.Any]], columns: tuple[str, ...]) -> set[tuple[str, ...]]:
    return {tuple(str(row[column]) for column in columns) for row in rows}


@pytest.mark.parametrize(("selection", "order"), CASES, ids=[f"{s}, {o}" for s, o in CASES])
def test_any_selection_finishes_with_every_record(
    worlds: dict[str, ScaleSimulator], tmp_path: Path, selection: str, order: str
) -> None:
    world = worlds[order]
    streams = SELECTIONS[selection]
    served = len(world.requests)
    config = {
        "api_url": world.url,
        "api_key": world.api_key,
        "page_size": 10,
        "start_date": "2024-01-01",
    }
    catalog = select(TapScale(config=config).catalog_dict, *streams)
    run = run_tap(tmp_path, config, catalog=catalog)
    assert run.returncode == 0, run.stderr[-3000:]
    tasks = truth(world)
    if "tasks" in streams:
        assert {task["task_id"] for task in tasks} <= {r["task_id"] for r in run.records()}
    for stream, (columns, derive) in ROWS.items():
        if stream in streams:
            expected = keys(
                (msgspec.to_builtins(row) for task in tasks for row in derive(task)), columns
            )
            assert expected, f"the world holds no {stream}: this test proves nothing"
            assert expected <= keys(run.records(stream), columns), stream
    # Read in windows: more requests of tasks than one chain of pages per partition would take.
    if {"tasks", *ROWS} & set(streams):
        windows = [
            r
            for r in list(world.requests)[served:]
            if r["path"] == "/v2/tasks" and "next_token" not in r["params"]
        ]
        assert len(windows) > 3 * 2
