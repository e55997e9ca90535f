"""The streams derived from tasks, over real HTTP: whole, incremental, cheap in state, mappable.

Each run is the tap's CLI against the simulator. What a derived stream emits is checked against
the rows derived from the tasks the same run read, and against Scale's truth.
"""

from __future__ import annotations

import typing as t

import jsonschema
import msgspec

from tap_scale import task_rows
from tap_scale.models import utc_timestamp
from tap_scale.tap import TapScale
from tap_scale.testing import ScaleSimulator
from tests.tap_run import run_tap as run_tap_in
from tests.tap_run import select
from tests.test_task_rows import every_annotation

if t.TYPE_CHECKING:
    from pathlib import Path

    from tests.tap_run import TapRun

Row = dict[str, t.Any]
ROW_STREAMS = ("task_messages", "task_annotations", "task_preferences")
DELIVERY_ROW_STREAMS = tuple(f"delivery_{name}" for name in ROW_STREAMS)
DERIVE = {
    "messages": task_rows.message_rows,
    "annotations": task_rows.annotation_rows,
    "preferences": task_rows.preference_rows,
}


def run_tap(directory: Path, config: dict[str, t.Any], **files: t.Any) -> TapRun:
    """One run of the tap, its files in a directory of its own."""
    directory.mkdir(parents=True, exist_ok=True)
    return run_tap_in(directory, config, **files)


def catalog(config: dict[str, t.Any], *streams: str) -> dict[str, t.Any]:
    """The tap's catalog with exactly these streams selected."""
    return select(TapScale(config=config).catalog_dict, *streams)


def derived(tasks: t.Iterable[Row], stream: str) -> list[Row]:
    """The rows a derived stream holds for these task records, in order, as emitted."""
    derive = DERIVE[stream.rsplit("_", 1)[-1]]
    return [msgspec.to_builtins(row) for task in tasks for row in derive(task)]


def sparse(records: t.Iterable[Row]) -> list[Row]:
    """Records without their null fields, which a record may leave out or spell out."""
    return [{k: v for k, v in record.items() if v is not None} for record in records]


def row_key(keys: t.Sequence[str]) -> t.Callable[[Row], tuple[str, ...]]:
    """A sort key of rows by these columns."""
    return lambda row: tuple(str(row[key]) for key in keys)


def schema_message(run: TapRun, stream: str) -> Row:
    return next(m for m in run.messages if m["type"] == "SCHEMA" and m["stream"] == stream)


def test_each_task_becomes_its_rows_once_as_scale_holds_them(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    run = run_tap(tmp_path, config, catalog=catalog(config, "tasks", *ROW_STREAMS))

    tasks = run.records("tasks")
    for stream in ROW_STREAMS:
        records = run.records(stream)
        assert records == derived(tasks, stream), stream
        schema = schema_message(run, stream)
        keys = [tuple(record[key] for key in schema["key_properties"]) for record in records]
        assert len(keys) == len(set(keys)), f"a primary key of {stream} appears twice"
        # Announced before its first row, with types every row has.
        first_record = next(
            i for i, m in enumerate(run.messages) if m["type"] == "RECORD" and m["stream"] == stream
        )
        assert run.messages.index(schema) < first_record
        validator = jsonschema.Draft7Validator(
            schema["schema"], format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
        )
        for record in records:
            validator.validate(record)

    truth = simulator.tasks(status="completed")
    assert sorted(
        (r["task_id"], r["annotation_id"]) for r in run.records("task_annotations")
    ) == sorted(
        (task["task_id"], annotation["id"])
        for task in truth
        for _, annotation in every_annotation(task)
    )
    assert len(run.records("task_messages")) == sum(
        len(turn["messages"])
        for task in truth
        for thread in task.get("threads") or ()
        for turn in thread["turns"]
    )
    assert run.records("task_preferences"), "the account holds rankings"


def test_selected_alone_they_read_tasks_keep_its_bookmarks_and_follow_it(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    # One reader: how a partition is cut into windows then depends on nothing but the tasks.
    config = {**config, "lookback_minutes": 0, "max_concurrency": 1}
    tasks_alone = run_tap(tmp_path / "tasks", config, catalog=catalog(config, "tasks"))
    requests_for_tasks = len(simulator.requests)
    simulator.reset_log()

    run = run_tap(tmp_path / "rows", config, catalog=catalog(config, "task_annotations"))

    # No request more than for tasks alone; tasks are read, not emitted.
    assert len(simulator.requests) == requests_for_tasks
    assert {m.get("stream") for m in run.messages if m["type"] != "STATE"} == {"task_annotations"}
    # Partitions interleave in the order their pages arrive, which differs from run to run.
    key = row_key(("task_id", "annotation_id"))
    assert sorted(run.records("task_annotations"), key=key) == sorted(
        derived(tasks_alone.records(), "task_annotations"), key=key
    )
    # The task stream's bookmarks, as if it had been selected; nothing more but an empty entry.
    assert run.state["bookmarks"] == {**tasks_alone.state["bookmarks"], "task_annotations": {}}

    again = run_tap(
        tmp_path / "again", config, state=run.state, catalog=catalog(config, "task_annotations")
    )
    # Only the tasks exactly at a bookmark are read again (Scale's `completed_after` is strict).
    bookmarks = {p["replication_key_value"] for p in run.state["bookmarks"]["tasks"]["partitions"]}
    assert {row["completed_at"] for row in again.records("task_annotations")} <= bookmarks

    completed = simulator.complete_tasks(simulator.projects[0]["id"], 3)
    later = run_tap(
        tmp_path / "later", config, state=run.state, catalog=catalog(config, "task_annotations")
    )
    expected = [
        {**row, "completed_at": utc_timestamp(row["completed_at"])}
        for row in derived(completed, "task_annotations")
    ]
    new = {task["task_id"] for task in completed}
    rows = later.records("task_annotations")
    assert sorted((r for r in rows if r["task_id"] in new), key=key) == sorted(expected, key=key)
    assert {r["completed_at"] for r in rows if r["task_id"] not in new} <= bookmarks


def test_delivered_work_only_carries_its_delivery_on_every_row(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    run = run_tap(tmp_path, config, catalog=catalog(config, *DELIVERY_ROW_STREAMS))

    assert {m.get("stream") for m in run.messages if m["type"] != "STATE"} == set(
        DELIVERY_ROW_STREAMS
    )
    for stream in DELIVERY_ROW_STREAMS:
        expected = []
        for delivery in simulator.deliveries():
            tasks = [
                {
                    **task,
                    "delivery": delivery["id"],
                    "delivered_at": utc_timestamp(delivery["delivered_at"]),
                    "completed_at": utc_timestamp(task.get("completed_at")),
                }
                for task in simulator.delivery_tasks(delivery["id"])
            ]
            expected += derived(tasks, stream)
        records = run.records(stream)
        keys = schema_message(run, stream)["key_properties"]
        assert keys[0] == "delivery"
        assert sorted(records, key=row_key(keys)) == sorted(expected, key=row_key(keys)), stream
        assert len({row_key(keys)(record) for record in records}) == len(records)
    # A delivery whose tasks were all read is not read again.
    again = run_tap(
        tmp_path / "again", config, state=run.state, catalog=catalog(config, *DELIVERY_ROW_STREAMS)
    )
    assert not [m for m in again.messages if m["type"] == "RECORD"]


def test_a_reworked_task_brings_its_new_rows_and_the_filter_drops_the_old(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    selected = catalog(config, "tasks", "task_annotations")
    first = run_tap(tmp_path / "first", config, catalog=selected)
    project = simulator.projects[0]["id"]
    reworked = [task["task_id"] for task in first.records() if task["project"] == project][:2]
    simulator.rework_tasks(project, reworked)
    second = run_tap(tmp_path / "second", config, state=first.state, catalog=selected)

    assert second.records("task_annotations") == derived(second.records(), "task_annotations")
    assert {row["task_id"] for row in second.records("task_annotations")} >= set(reworked)

    # A target upserts on the primary key: the old version's annotations stay...
    table: dict[tuple[str, str], Row] = {}
    tasks: dict[str, Row] = {}
    for run in (first, second):
        table |= {(r["task_id"], r["annotation_id"]): r for r in run.records("task_annotations")}
        tasks |= {task["task_id"]: task for task in run.records()}
    truth = derived(
        [
            {**task, "completed_at": utc_timestamp(task["completed_at"])}
            for task in simulator.tasks(status="completed")
        ],
        "task_annotations",
    )
    assert len(table) > len(truth)
    # ...and the README's filter (a row's completed_at is its task's) keeps exactly the current.
    current = [
        row
        for row in table.values()
        if row["completed_at"] == tasks[row["task_id"]]["completed_at"]
    ]
    key = row_key(("task_id", "annotation_id"))
    assert sorted(current, key=key) == sorted(truth, key=key)


def test_stream_maps_and_deselected_fields_apply_to_derived_streams(
    config: dict[str, t.Any], tmp_path: Path
) -> None:
    stream_maps = {
        "task_annotations": {"__filter__": "level == 'message'"},
        "task_messages": {"__alias__": "messages", "content": "__NULL__"},
    }
    config = {**config, "stream_maps": stream_maps}
    selected = catalog(config, "tasks", *ROW_STREAMS)
    for entry in selected["streams"]:
        if entry["tap_stream_id"] == "task_preferences":
            for metadata in entry["metadata"]:
                if metadata["breadcrumb"] == ["properties", "key"]:
                    metadata["metadata"]["selected"] = False
    run = run_tap(tmp_path, config, catalog=selected)

    tasks = run.records("tasks")
    # Mapped rows go through the SDK, which spells out every column, null or not.
    assert run.records("task_messages") == []
    assert sparse(run.records("messages")) == [
        {k: v for k, v in row.items() if k != "content"} for row in derived(tasks, "task_messages")
    ]
    assert "content" not in schema_message(run, "messages")["schema"]["properties"]
    annotations = derived(tasks, "task_annotations")
    assert sparse(run.records("task_annotations")) == [
        row for row in annotations if row["level"] == "message"
    ]
    assert sparse(run.records("task_preferences")) == [
        {k: v for k, v in row.items() if k != "key"} for row in derived(tasks, "task_preferences")
    ]
    assert all("key" not in record for record in run.records("task_preferences"))


def test_rows_are_counted_in_the_summary_and_written_through_the_redacting_writer(
    tmp_path: Path,
) -> None:
    # The tap's one message writer masks secrets, derived rows included: with a key that
    # happens to be an annotation's key, every row naming that annotation shows it masked.
    annotation_key = "instruction_following"
    with ScaleSimulator(api_key=annotation_key) as simulator:
        config = {"api_url": simulator.url, "api_key": annotation_key}
        run = run_tap(tmp_path, config, catalog=catalog(config, "tasks", *ROW_STREAMS))
    assert annotation_key not in run.stdout
    assert any(row["key"] == "[REDACTED]" for row in run.records("task_annotations"))
    summary = run.stderr.strip().splitlines()[-1]
    assert "Sync finished in" in summary
    for stream in ROW_STREAMS:
        assert f"{stream} {len(run.records(stream)):,}" in summary
