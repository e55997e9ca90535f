"""The simulator's delivered responses and their schemas, over real HTTP, as awkward as Scale."""

from __future__ import annotations

import json
import typing as t
from collections import Counter

import pytest
import requests

from tap_scale.testing import Faults, ScaleSimulator

JsonObject = dict[str, t.Any]


@pytest.fixture
def sim() -> t.Iterator[ScaleSimulator]:
    with ScaleSimulator(seed=11, projects=2, tasks_per_project=40) as simulator:
        yield simulator


def get(sim: ScaleSimulator, path: str, **params: t.Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    return requests.get(f"{sim.url}{path}", params=params, headers=headers, timeout=10)


def docs(sim: ScaleSimulator, **params: t.Any) -> tuple[list[JsonObject], list[str]]:
    """Every doc of GET /v2/delivery/tasks, following tokens, and the tokens seen."""
    found: list[JsonObject] = []
    tokens: list[str] = []
    while True:
        response = get(sim, "/delivery/tasks", **params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["total"] == len(body["docs"])
        found += body["docs"]
        if "next_token" not in body:
            return found, tokens
        tokens.append(body["next_token"])
        params["next_token"] = body["next_token"]


def test_a_delivery_lists_each_task_once_with_its_response_across_opaque_pages(
    sim: ScaleSimulator,
) -> None:
    delivery = sim.deliveries()[0]
    served, tokens = docs(sim, delivery_id=delivery["id"], limit=3)
    assert len(tokens) >= 2
    assert not any(delivery["id"] in token for token in tokens)
    assert Counter(doc["task_id"] for doc in served) == Counter(
        doc["task_id"] for doc in sim.task_responses(delivery["id"])
    )
    assert {doc["task_id"]: doc for doc in served} == {
        doc["task_id"]: doc for doc in sim.task_responses(delivery["id"])
    }
    assert {doc["delivery_id"] for doc in served} == {delivery["id"]}
    # Unsorted: not in the order of the delivery's own task list.
    assert [doc["task_id"] for doc in served] != sorted(doc["task_id"] for doc in served)


def test_a_project_lists_every_task_once_per_delivery_and_undelivered_ones_with_nulls(
    sim: ScaleSimulator,
) -> None:
    project = sim.projects[0]["id"]
    again = sim.deliveries(project)[0]
    twice = sim.delivery_tasks(again["id"])[:2]
    redelivery = sim.deliver(project, [task["task_id"] for task in twice])
    served, _ = docs(sim, project_id=project, status="completed", limit=7)
    per_task = Counter(doc["task_id"] for doc in served)
    assert {per_task[task["task_id"]] for task in twice} == {2}
    completed = {task["task_id"] for task in sim.tasks(project_id=project, status="completed")}
    assert set(per_task) == completed
    undelivered = [doc for doc in served if doc["delivery_id"] is None]
    assert undelivered
    assert all(doc["response"] is None and doc["delivered_at"] is None for doc in undelivered)
    # The redelivery follows a new version of the project's response schema.
    schemas = {
        doc["response_schema_id"] for doc in served if doc["delivery_id"] == redelivery["id"]
    }
    assert schemas.isdisjoint(
        {doc["response_schema_id"] for doc in served if doc["delivery_id"] == again["id"]}
    )


def test_schemas_are_served_as_scales_string_and_unknown_ones_get_404(
    sim: ScaleSimulator,
) -> None:
    schema = sim.response_schemas[0]
    body = get(sim, "/schema", schema_id=schema["id"]).json()
    assert body == {"schema": schema}
    assert isinstance(body["schema"]["json"], str)
    assert json.loads(body["schema"]["json"])["type"] == "object"
    missing = get(sim, "/schema", schema_id="schema_nope")
    assert missing.status_code == 404
    assert "schema_nope" in missing.json()["error"]
    assert get(sim, "/schema").status_code == 400
    assert get(sim, "/delivery/tasks", delivery_id="delivery_nope").status_code == 404
    assert get(sim, "/delivery/tasks").status_code == 400


def test_completed_filters_and_empty_pages_apply_to_delivered_tasks(sim: ScaleSimulator) -> None:
    project = sim.projects[0]["id"]
    everything, _ = docs(sim, project_id=project, status="completed")
    sim.faults.empty_page = 0.5
    with_empty_pages, _ = docs(sim, project_id=project, status="completed", limit=5)
    assert Counter(json.dumps(doc, sort_keys=True) for doc in with_empty_pages) == Counter(
        json.dumps(doc, sort_keys=True) for doc in everything
    )
    assert any(entry["fault"] == "empty_page" for entry in sim.requests)
    sim.faults = Faults()
    none, _ = docs(sim, project_id=project, completed_before="2000-01-01T00:00:00Z")
    assert none == []


def test_new_fields_reach_the_objects_of_every_endpoint_that_grown_names(
    sim: ScaleSimulator,
) -> None:
    sim.faults.new_fields = 0.5
    project = sim.projects[0]["id"]
    delivery = sim.deliveries(project)[0]
    bodies = {
        "projects": get(sim, "/projects").json()["projects"],
        "tasks": get(sim, "/tasks", project_id=project, limit=50).json()["tasks"],
        "docs": get(sim, "/delivery/tasks", delivery_id=delivery["id"]).json()["docs"],
        "deliveries": get(sim, "/deliveries", project_id=project).json()["deliveries"],
        "datasets": get(sim, "/datasets/tasks", dataset_id=sim.datasets[0]["id"]).json()["tasks"],
    }
    for name, objects in bodies.items():
        ids = [
            f"{item['task_id']}/{item['delivery_id']}"
            if name == "docs"
            else item.get("task_id") or item["id"]
            for item in objects
        ]
        hit = [("review_round" in item) for item in objects]
        assert hit == [sim.grown(item_id) for item_id in ids], name
        assert any(hit), name
        assert all(item["review_round"] == 2 for item in objects if "review_round" in item)
