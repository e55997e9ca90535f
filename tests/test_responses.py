"""Delivered responses and their schemas over real HTTP: complete, read once, selectable."""

from __future__ import annotations

import json
import typing as t

from tests.tap_run import discover, moment, run_tap, select

if t.TYPE_CHECKING:
    from pathlib import Path

    from tap_scale.testing import ScaleSimulator

RESPONSE_STREAMS = ("task_responses", "response_schemas")


def keyed(records: t.Iterable[dict[str, t.Any]]) -> dict[tuple[str, str], dict[str, t.Any]]:
    """Responses by primary key, failing on a key seen twice."""
    out: dict[tuple[str, str], dict[str, t.Any]] = {}
    for record in records:
        key = (record["delivery_id"], record["task_id"])
        assert key not in out, f"{key} emitted twice"
        out[key] = record
    return out


def canonical(doc: dict[str, t.Any]) -> dict[str, t.Any]:
    """A response with its timestamps as moments, to compare across spellings."""
    return {**doc, **{name: moment(doc[name]) for name in ("created_at", "delivered_at")}}


def truth(simulator: ScaleSimulator, *delivery_ids: str) -> dict[tuple[str, str], t.Any]:
    return {
        (doc["delivery_id"], doc["task_id"]): canonical(doc)
        for delivery_id in delivery_ids or [d["id"] for d in simulator.deliveries()]
        for doc in simulator.task_responses(delivery_id)
    }


def schema_requests(simulator: ScaleSimulator) -> list[str]:
    return [r["params"]["schema_id"][0] for r in simulator.requests if r["path"] == "/v2/schema"]


def test_every_response_and_schema_is_emitted_as_scale_holds_it(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    catalog = select(discover(tmp_path, config), *RESPONSE_STREAMS)
    run = run_tap(tmp_path, config, catalog=catalog)

    responses = keyed(run.records("task_responses"))
    assert {key: canonical(record) for key, record in responses.items()} == truth(simulator)
    # Responses of every shape: each kind of project's, and none (a reported task's).
    assert any(record["response"] is None for record in responses.values())
    shapes = {
        json.dumps(sorted(record["response"]["threads"][0]["turns"][0]["annotations"]))
        for record in responses.values()
        if record["response"]
    }
    assert len(shapes) >= 3

    schemas = {record["id"]: record for record in run.records("response_schemas")}
    named = {record["response_schema_id"] for record in responses.values()} - {None}
    assert schemas.keys() == named
    for schema in simulator.response_schemas:
        if schema["id"] in named:
            # Scale's string, and the schema it encodes.
            assert schemas[schema["id"]]["json"] == schema["json"]
            assert schemas[schema["id"]]["json_schema"] == json.loads(schema["json"])
    # Each schema read once, however many responses name it.
    assert sorted(schema_requests(simulator)) == sorted(named)
    announced = next(
        m for m in run.messages if m["type"] == "SCHEMA" and m["stream"] == "task_responses"
    )
    assert announced["key_properties"] == ["delivery_id", "task_id"]


def test_responses_are_read_once_and_a_redelivery_keeps_both(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    catalog = select(discover(tmp_path, config), *RESPONSE_STREAMS)
    first = run_tap(tmp_path, config, catalog=catalog)
    # A stored schema is marked by its own id, never capped like a moment.
    stored = first.state["bookmarks"]["response_schemas"]["partitions"]
    assert stored
    assert all(p["replication_key_value"] == p["context"]["id"] for p in stored)

    simulator.reset_log()
    second = run_tap(tmp_path, config, catalog=catalog, state=first.state)
    assert second.records("task_responses") == []
    assert second.records("response_schemas") == []
    assert not [r for r in simulator.requests if r["path"] in ("/v2/delivery/tasks", "/v2/schema")]

    # Two tasks delivered again, in a delivery that follows a new version of the schema.
    project = simulator.projects[0]["id"]
    earlier = simulator.deliveries(project)[0]
    again = [task["task_id"] for task in simulator.delivery_tasks(earlier["id"])[:2]]
    redelivery = simulator.deliver(project, again)
    simulator.reset_log()
    third = run_tap(tmp_path, config, catalog=catalog, state=second.state)

    responses = keyed(third.records("task_responses"))
    assert {key: canonical(record) for key, record in responses.items()} == truth(
        simulator, redelivery["id"]
    )
    # Both deliveries of each task are kept, under their own keys.
    kept = keyed([*first.records("task_responses"), *third.records("task_responses")])
    for task_id in again:
        assert (earlier["id"], task_id) in kept
        assert (redelivery["id"], task_id) in kept
    new_schema = {record["response_schema_id"] for record in responses.values()} - {None}
    assert [record["id"] for record in third.records("response_schemas")] == list(new_schema)
    assert schema_requests(simulator) == list(new_schema)


def test_schemas_alone_and_targeted_deliveries(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    catalog = discover(tmp_path, config)
    alone = run_tap(tmp_path, config, catalog=select(catalog, "response_schemas"))
    assert {m["stream"] for m in alone.messages if m["type"] == "RECORD"} == {"response_schemas"}
    assert alone.records("response_schemas")

    delivery = simulator.deliveries()[1]
    targeted = {**config, "delivery_ids": [delivery["id"]]}
    run = run_tap(tmp_path, targeted, catalog=select(catalog, "task_responses"))
    assert keyed(run.records("task_responses")).keys() == truth(simulator, delivery["id"]).keys()
    # Named deliveries are read on every run, whatever the state says.
    again = run_tap(tmp_path, targeted, catalog=select(catalog, "task_responses"), state=run.state)
    assert keyed(again.records("task_responses")).keys() == truth(simulator, delivery["id"]).keys()


def test_delivery_tasks_selected_later_still_read_deliveries_responses_were_read_from(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    # Each child of the deliveries keeps its own "read" marks: one child's do not hide a
    # delivery from the other.
    catalog = discover(tmp_path, config)
    first = run_tap(tmp_path, config, catalog=select(catalog, "task_responses"))
    second = run_tap(
        tmp_path,
        config,
        catalog=select(catalog, "task_responses", "delivery_tasks"),
        state=first.state,
    )
    assert second.records("task_responses") == []
    delivered = {(r["delivery"], r["task_id"]) for r in second.records("delivery_tasks")}
    assert delivered == set(truth(simulator))
