"""BATCH mode, as `--about` and the Hub definition advertise it: files of records, then the state.

With `batch_config` set, the SDK writes each stream's records to files and emits a BATCH message
naming them. A target may load a batch only when its BATCH message arrives, so a STATE message
must never carry a bookmark before the BATCH that holds the records behind it: a target that
commits that STATE, and a run that dies before the BATCH, would lose those records for good.
"""

from __future__ import annotations

import gzip
import json
import typing as t
from urllib.parse import urlparse

import pytest

from tests.tap_run import TapRun, discover, run_tap, select
from tests.test_pipelines import (  # noqa: F401 - fixtures used by name
    meltano,
    meltano_run,
    postgres_database,
    postgres_query,
    system_database,
)

if t.TYPE_CHECKING:
    from pathlib import Path

    from tap_scale.testing import ScaleSimulator

# The streams whose records the SDK batches; the six streams of rows derived from tasks are
# written beside their task, as RECORD messages, in either mode (README: Settings).
BATCHED = {
    "projects",
    "batches",
    "tasks",
    "deliveries",
    "delivery_tasks",
    "task_responses",
    "response_schemas",
    "datasets",
    "dataset_deliveries",
    "dataset_tasks",
}


def batch_config(tmp_path: Path) -> dict[str, t.Any]:
    root = tmp_path / "batches"
    root.mkdir(exist_ok=True)
    return {
        "encoding": {"format": "jsonl", "compression": "gzip"},
        "storage": {"root": root.as_uri(), "prefix": "scale-"},
    }


def batched_records(run: TapRun) -> dict[str, list[dict[str, t.Any]]]:
    """Every record of the run's BATCH files, by stream, in order."""
    found: dict[str, list[dict[str, t.Any]]] = {}
    for message in run.messages:
        if message["type"] != "BATCH":
            continue
        assert message["encoding"] == {"format": "jsonl", "compression": "gzip"}
        for url in message["manifest"]:
            with gzip.open(urlparse(url).path, "rt") as file:
                records = [json.loads(line) for line in file if line.strip()]
            found.setdefault(message["stream"], []).extend(records)
    return found


def same(these: list[dict[str, t.Any]], those: list[dict[str, t.Any]]) -> bool:
    """The same records, in whatever order."""
    return sorted(map(json.dumps, these)) == sorted(map(json.dumps, those))


def bookmarked(state: dict[str, t.Any], stream: str) -> bool:
    """Whether the state holds a finished bookmark of ``stream`` (of any of its partitions)."""
    entry = state.get("bookmarks", {}).get(stream, {})
    return "replication_key_value" in entry or any(
        "replication_key_value" in partition for partition in entry.get("partitions", [])
    )


@pytest.fixture
def both_modes(config: dict[str, t.Any], tmp_path: Path) -> tuple[TapRun, TapRun, dict[str, t.Any]]:
    """A run of every stream in RECORD mode, and the same run in BATCH mode."""
    catalog = select(discover(tmp_path, config), *BATCHED, "task_messages")
    records = run_tap(tmp_path, config, catalog=catalog)
    batches = run_tap(tmp_path, {**config, "batch_config": batch_config(tmp_path)}, catalog=catalog)
    return records, batches, catalog


def test_batch_mode_writes_every_record_to_files_and_ends_with_the_state(
    both_modes: tuple[TapRun, TapRun, dict[str, t.Any]],
) -> None:
    records, batches, _ = both_modes
    batched = batched_records(batches)
    assert set(batched) == BATCHED
    for stream in BATCHED:
        # The same records; across partitions read at once, not always in the same order.
        assert same(batched[stream], records.records(stream)), stream
    assert not [m for m in batches.messages if m["type"] == "RECORD" and m["stream"] in BATCHED]
    # Rows derived from tasks come as records, as many as in RECORD mode.
    assert same(batches.records("task_messages"), records.records("task_messages"))
    # The run ends with the same state, after every BATCH.
    last_batch = max(i for i, m in enumerate(batches.messages) if m["type"] == "BATCH")
    assert batches.messages[-1]["type"] == "STATE"
    assert last_batch < len(batches.messages) - 1
    assert batches.state == records.state


def test_no_state_carries_a_bookmark_before_the_batch_with_its_records(
    both_modes: tuple[TapRun, TapRun, dict[str, t.Any]],
) -> None:
    _, batches, _ = both_modes
    early = []
    # A parent's partition finished before its children's batches are written shows in their
    # STATE messages, before the parent's one BATCH at its end (the SDK's order). Harmless for
    # `deliveries` and `dataset_deliveries`: while their tasks' stream is selected, their list
    # is read whole on every run, whatever their bookmark (README: Incremental sync and state).
    for stream in BATCHED - {"deliveries", "dataset_deliveries"}:
        first_batch = next(
            i
            for i, m in enumerate(batches.messages)
            if m["type"] == "BATCH" and m["stream"] == stream
        )
        for message in batches.messages[:first_batch]:
            if message["type"] == "STATE" and bookmarked(message["value"], stream):
                early.append(stream)
                break
    assert early == []


def test_batch_mode_loads_postgresql_through_meltano(
    meltano: Path,  # noqa: F811 - the fixture
    simulator: ScaleSimulator,
    postgres_database: str,  # noqa: F811 - the fixture
    system_database: str,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    meltano_run(
        meltano,
        "target-postgres",
        simulator,
        system_database,
        TAP_SCALE_BATCH_CONFIG=json.dumps(batch_config(tmp_path)),
        TARGET_POSTGRES_DATABASE=postgres_database,
    )
    assert list((tmp_path / "batches").iterdir()), "no BATCH files were written"
    query = postgres_query(postgres_database)
    completed = {task["task_id"] for task in simulator.tasks(status="completed")}
    assert {row[0] for row in query("SELECT task_id FROM scale.tasks", ())} == completed
    delivered = sum(len(simulator.delivery_tasks(d["id"])) for d in simulator.deliveries())
    assert query("SELECT count(*) FROM scale.delivery_tasks", ()) == [(delivered,)]
