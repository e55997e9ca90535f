"""The order of a task's rows and the states after it, over real HTTP against the simulator.

No STATE message may say a task was read before all of that task's rows are out: a sync
stopped there would resume after the task, and its rows would be lost for good. (Rows are
written as each task is emitted; this guards any change that would write them later, such as
deriving them elsewhere.)
"""

from __future__ import annotations

import typing as t

import msgspec

from tap_scale import task_rows
from tap_scale.streams.task_rows import (
    TaskAnnotationsStream,
    TaskMessagesStream,
    TaskPreferencesStream,
)
from tap_scale.tap import TapScale
from tests.tap_run import run_tap, select

if t.TYPE_CHECKING:
    from pathlib import Path

Message = dict[str, t.Any]
ROW_STREAMS = {
    stream.name: (stream.primary_keys, derive)
    for stream, derive in (
        (TaskMessagesStream, task_rows.message_rows),
        (TaskAnnotationsStream, task_rows.annotation_rows),
        (TaskPreferencesStream, task_rows.preference_rows),
    )
}


def row_key(stream: str, row: dict[str, t.Any]) -> tuple[t.Any, ...]:
    """A row's primary key, with its stream's name."""
    keys, _ = ROW_STREAMS[stream]
    return (stream, *(row.get(key) for key in keys))


def expected_rows(task: dict[str, t.Any]) -> set[tuple[t.Any, ...]]:
    """The keys of every row the task's record derives, in every row stream."""
    return {
        row_key(stream, msgspec.to_builtins(row))
        for stream, (_, derive) in ROW_STREAMS.items()
        for row in derive(task)
    }


def states_never_pass_rows(messages: list[Message]) -> int:
    """Check that each STATE follows every row of every task before it; the STATEs checked."""
    expected: dict[str, set[tuple[t.Any, ...]]] = {}
    written: dict[str, set[tuple[t.Any, ...]]] = {}
    states = 0
    for message in messages:
        if message["type"] == "RECORD" and message["stream"] == "tasks":
            task = message["record"]
            expected.setdefault(task["task_id"], set()).update(expected_rows(task))
        elif message["type"] == "RECORD" and message["stream"] in ROW_STREAMS:
            row = message["record"]
            written.setdefault(row["task_id"], set()).add(row_key(message["stream"], row))
        elif message["type"] == "STATE":
            states += 1
            missing = {
                task_id: len(keys - written.get(task_id, set()))
                for task_id, keys in expected.items()
                if keys - written.get(task_id, set())
            }
            assert not missing, f"a STATE came before rows of these tasks (rows missing): {missing}"
    return states


def rows_catalog(config: dict[str, t.Any]) -> dict[str, t.Any]:
    return select(TapScale(config=config).catalog_dict, "tasks", *ROW_STREAMS)


def test_no_state_comes_before_the_rows_of_the_tasks_it_covers(
    tmp_path: Path, config: dict[str, t.Any]
) -> None:
    run = run_tap(tmp_path, config, catalog=rows_catalog(config))

    assert states_never_pass_rows(run.messages) > 3  # windows' watermarks, partitions' ends
    tasks = run.records("tasks")
    assert tasks
    every_row = set().union(*(expected_rows(task) for task in tasks))
    written = {
        row_key(m["stream"], m["record"])
        for m in run.messages
        if m["type"] == "RECORD" and m["stream"] in ROW_STREAMS
    }
    assert written == every_row
    # The summary counts them.
    assert f"task_annotations {sum(k[0] == 'task_annotations' for k in every_row):,}" in run.stderr
