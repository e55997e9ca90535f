"""Nothing dropped: a top-level field Scale adds later is kept, in every stream, into PostgreSQL."""

from __future__ import annotations

import typing as t

from tap_scale.testing.reshape import NEW_TOP_LEVEL_FIELD
from tests.tap_run import discover, run_tap
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

NAME, VALUE = NEW_TOP_LEVEL_FIELD
ROWS = ("messages", "annotations", "preferences")
# Every stream, and the fields that key its records.
KEYS = {
    "projects": ("id",),
    "batches": ("id",),
    "tasks": ("task_id",),
    "deliveries": ("id",),
    "delivery_tasks": ("delivery", "task_id"),
    "task_responses": ("delivery_id", "task_id"),
    "response_schemas": ("id",),
    "datasets": ("id",),
    "dataset_deliveries": ("id",),
    "dataset_tasks": ("delivery", "task_id"),
}


def everything(catalog: dict[str, t.Any]) -> dict[str, t.Any]:
    for entry in catalog["streams"]:
        for metadata in entry["metadata"]:
            if not metadata["breadcrumb"]:
                metadata["metadata"]["selected"] = True
    return catalog


def by_key(records: list[dict[str, t.Any]], stream: str) -> dict[tuple[str, ...], t.Any]:
    return {tuple(record[name] for name in KEYS[stream]): record for record in records}


def test_every_stream_keeps_a_field_scale_adds_in_additional_properties(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    catalog = everything(discover(tmp_path, config))
    clean = run_tap(tmp_path, config, catalog=catalog)
    # The rows derived from tasks keep the unknown fields of their message or annotation
    # (tests/test_task_rows.py), not those of the task, which its own record keeps.
    derived = {f"{source}_{rows}" for source in ("task", "delivery_task") for rows in ROWS}
    assert {m["stream"] for m in clean.messages if m["type"] == "RECORD"} - derived == set(KEYS)

    simulator.faults.new_fields = 1.0
    grown = run_tap(tmp_path, config, catalog=catalog)
    for stream in KEYS:
        before, after = by_key(clean.records(stream), stream), by_key(grown.records(stream), stream)
        assert after.keys() == before.keys(), stream
        for key, record in after.items():
            # Kept, as sent, in the one column for fields the schema does not know; the rest
            # of the record is what it was.
            assert record.pop("additional_properties") == {NAME: VALUE}, (stream, key)
            assert record == before[key], (stream, key)
    assert f"top-level field this release of tap-scale does not know ({NAME})" in grown.stderr
    assert "Unexpected data" not in grown.stderr


def test_a_catalog_that_overrides_the_schema_decides_the_columns(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    simulator.faults.new_fields = 1.0
    catalog = discover(tmp_path, config)
    for entry in catalog["streams"]:
        properties = entry["schema"]["properties"]
        if entry["tap_stream_id"] == "deliveries":
            # The user knows the new field: it is a column of its own, its type conformed.
            properties[NAME] = {"type": ["string", "null"]}
        if entry["tap_stream_id"] == "projects":
            # The user took the catch-all column out: nowhere to keep the field; said so.
            del properties["additional_properties"]
    run = run_tap(tmp_path, config, catalog=catalog)

    deliveries = run.records("deliveries")
    assert deliveries
    assert all(record[NAME] == VALUE for record in deliveries)
    assert all("additional_properties" not in record for record in deliveries)
    projects = run.records("projects")
    assert projects
    assert all(
        NAME not in record and "additional_properties" not in record
        for r in [0]
        for record in projects
    )
    assert f"{NAME} is not a field of the catalog's schema" in run.stderr


def test_a_field_scale_adds_reaches_postgresql(
    meltano: Path,  # noqa: F811 - the fixture
    simulator: ScaleSimulator,
    postgres_database: str,  # noqa: F811 - the fixture
    system_database: str,  # noqa: F811 - the fixture
) -> None:
    simulator.faults.new_fields = 1.0
    meltano_run(
        meltano,
        "target-postgres",
        simulator,
        system_database,
        TARGET_POSTGRES_DATABASE=postgres_database,
    )
    query = postgres_query(postgres_database)
    for table in KEYS:
        kept = query(
            f"SELECT additional_properties ->> %s, count(*) FROM scale.{table} GROUP BY 1",  # noqa: S608
            (NAME,),
        )
        assert kept == [(str(VALUE), query(f"SELECT count(*) FROM scale.{table}", ())[0][0])], table  # noqa: S608
