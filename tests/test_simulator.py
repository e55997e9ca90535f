"""The Scale API simulator, checked over real HTTP: it must be as awkward as the real API."""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import typing as t
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tap_scale.testing import ALL_OPTS, DEFAULT_API_KEY, Faults, ScaleSimulator
from tap_scale.testing.annotations import ANNOTATION_TYPES

ROOT = Path(__file__).resolve().parents[1]
TASK_STATUSES = {"pending", "completed", "canceled", "error", "deleted"}


@pytest.fixture(scope="module")
def sim() -> t.Iterator[ScaleSimulator]:
    """One simulator for the tests that only read."""
    with ScaleSimulator(seed=7) as simulator:
        yield simulator


@pytest.fixture
def fresh() -> t.Iterator[ScaleSimulator]:
    """A simulator of its own, for tests that change the world or switch faults on."""
    with ScaleSimulator(seed=11, projects=2, tasks_per_project=40) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def session(sim: ScaleSimulator) -> t.Iterator[requests.Session]:
    with requests.Session() as client:
        client.headers["Authorization"] = f"Bearer {sim.api_key}"
        yield client


def call(simulator: ScaleSimulator, path: str, **params: t.Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {simulator.api_key}"}
    return requests.get(f"{simulator.url}{path}", params=params, headers=headers, timeout=10)


def parse(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def all_pages(
    client: requests.Session, url: str, key: str = "tasks", **params: t.Any
) -> list[list[dict[str, t.Any]]]:
    pages = []
    while True:
        response = client.get(url, params=params, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body[key])
        if "next_token" not in body:
            return pages
        params["next_token"] = body["next_token"]


def walk(node: object) -> t.Iterator[dict[str, t.Any]]:
    """Every JSON object inside a value, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def annotations_of(tasks: list[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
    return [a for node in walk(tasks) for a in node.get("annotations", [])]


# Authentication and errors


def test_requests_without_the_key_get_scales_401_body(sim: ScaleSimulator) -> None:
    for headers in ({}, {"Authorization": "Bearer live_wrong"}, {"Authorization": "Token x"}):
        response = requests.get(f"{sim.url}/projects", headers=headers, timeout=10)
        assert response.status_code == 401
        assert response.headers["Content-Type"] == "application/json"
        assert response.json() == {
            "status_code": 401,
            "error": "Unauthorized: the API key is missing or invalid",
        }


def test_bearer_and_basic_auth_are_both_accepted(sim: ScaleSimulator) -> None:
    assert call(sim, "/projects").status_code == 200
    basic = requests.get(f"{sim.url}/projects", auth=(sim.api_key, ""), timeout=10)
    assert basic.status_code == 200
    assert basic.json() == call(sim, "/projects").json()
    token = base64.b64encode(b"live_other:").decode()
    wrong = requests.get(
        f"{sim.url}/projects", headers={"Authorization": f"Basic {token}"}, timeout=10
    )
    assert wrong.status_code == 401


def test_the_key_is_never_echoed(sim: ScaleSimulator) -> None:
    assert sim.api_key == DEFAULT_API_KEY
    assert sim.api_key.startswith("test_")
    responses = [
        requests.get(f"{sim.url}/projects", headers={"Authorization": "Bearer nope"}, timeout=10),
        call(sim, "/tasks", project_id=sim.api_key),
        call(sim, "/nowhere"),
    ]
    for response in responses:
        assert sim.api_key not in response.text
        assert sim.api_key not in str(response.headers)
    assert sim.api_key not in str(sim.requests)
    assert "[REDACTED]" in responses[1].json()["error"]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"status": "done"}, "status"),
        ({"completed_after": "yesterday"}, "completed_after"),
        ({"completed_before": "2025-13-01T00:00:00Z"}, "completed_before"),
        ({"opts": "everything"}, "opts"),
        ({"expand": "delivery"}, "expand"),
        ({"next_token": "not-a-token"}, "next_token"),
        ({"completedAfter": "2025-01-01"}, "completedAfter"),
    ],
)
def test_bad_parameters_get_a_400_naming_them(
    sim: ScaleSimulator, params: dict[str, str], named: str
) -> None:
    response = call(sim, "/tasks", project_id=sim.projects[0]["id"], **params)
    assert response.status_code == 400
    body = response.json()
    assert body["status_code"] == 400
    assert named in body["error"]


def test_tasks_need_exactly_one_project_or_batch(sim: ScaleSimulator) -> None:
    missing = call(sim, "/tasks")
    assert missing.status_code == 400
    assert "project_id" in missing.json()["error"]
    assert "batch_name" in missing.json()["error"]
    project = sim.projects[0]
    both = call(sim, "/tasks", project_id=project["id"], project_name=project["name"])
    assert both.status_code == 400
    assert "project_id and project_name" in both.json()["error"]


def test_a_token_only_works_with_the_query_it_was_issued_for(
    sim: ScaleSimulator, session: requests.Session
) -> None:
    project_id = sim.projects[0]["id"]
    first = session.get(f"{sim.url}/tasks", params={"project_id": project_id, "limit": 5})
    token = first.json()["next_token"]
    again = {"project_id": project_id, "limit": 5, "next_token": token}
    assert session.get(f"{sim.url}/tasks", params=again).status_code == 200
    for changed in ({"limit": 6}, {"status": "completed"}, {"opts": "submissions"}):
        response = session.get(f"{sim.url}/tasks", params={**again, **changed})
        assert response.status_code == 400
        assert "next_token" in response.json()["error"]
        assert "different query" in response.json()["error"]
    with ScaleSimulator(seed=7) as twin:  # same world, another secret
        response = call(twin, "/tasks", project_id=project_id, limit=5, next_token=token)
    assert response.status_code == 400


def test_unknown_objects_get_a_404_naming_them(sim: ScaleSimulator) -> None:
    cases = [
        ("/tasks", {"project_id": "project_missing"}, "project_missing"),
        ("/tasks", {"project_name": "No Such Project"}, "No Such Project"),
        ("/tasks", {"batch_name": "no-such-batch"}, "no-such-batch"),
        ("/task", {"task_id": "task_missing"}, "task_missing"),
        ("/batch", {"batch_id": "batch_missing"}, "batch_missing"),
        ("/delivery", {"delivery_id": "delivery_missing"}, "delivery_missing"),
        ("/datasets/tasks", {"dataset_id": "dataset_missing"}, "dataset_missing"),
        ("/datasets/delivery", {"delivery_id": "delivery_gone"}, "delivery_gone"),
        ("/v3/tasks", {}, "/v2/v3/tasks"),
    ]
    for path, params, named in cases:
        response = call(sim, path, **params)
        assert response.status_code == 404, path
        assert response.json()["status_code"] == 404
        assert named in response.json()["error"]


# Listing and pagination


def test_pages_of_seven_cover_every_task_exactly_once(
    sim: ScaleSimulator, session: requests.Session
) -> None:
    for project in sim.projects:
        pages = all_pages(session, f"{sim.url}/tasks", project_id=project["id"], limit=7)
        assert all(len(page) == 7 for page in pages[:-1])
        assert 1 <= len(pages[-1]) <= 7
        served = [task["task_id"] for page in pages for task in page]
        assert len(served) == len(set(served))
        truth = sim.tasks(project_id=project["id"], opts=())
        assert [task for page in pages for task in page] == truth


def test_tokens_are_opaque(sim: ScaleSimulator) -> None:
    body = call(sim, "/tasks", project_id=sim.projects[0]["id"], limit=3).json()
    token = body["next_token"]
    assert not token.isdigit()
    assert all(task["task_id"] not in token for task in body["tasks"])
    assert "task_" not in base64.urlsafe_b64decode(token + "==").decode("latin-1")


def test_every_token_is_new_yet_resumes_at_the_same_place(
    sim: ScaleSimulator, session: requests.Session
) -> None:
    params = {"project_id": sim.projects[0]["id"], "limit": 4}
    tokens = [session.get(f"{sim.url}/tasks", params=params).json()["next_token"] for _ in range(5)]
    assert len(set(tokens)) == len(tokens)
    pages = [
        session.get(f"{sim.url}/tasks", params={**params, "next_token": token}).json()
        for token in tokens
    ]
    assert all(page["tasks"] == pages[0]["tasks"] for page in pages)
    assert len({page["next_token"] for page in pages}) == len(pages)


def test_a_tampered_token_is_refused(sim: ScaleSimulator, session: requests.Session) -> None:
    params = {"project_id": sim.projects[0]["id"], "limit": 4}
    token = session.get(f"{sim.url}/tasks", params=params).json()["next_token"]
    raw = bytearray(base64.urlsafe_b64decode(token))
    for position in (1, 20, len(raw) - 20, len(raw) - 1):  # scope, nonce, cursor, signature
        changed = raw.copy()
        changed[position] ^= 1
        forged = base64.urlsafe_b64encode(bytes(changed)).decode().rstrip("=")
        response = session.get(f"{sim.url}/tasks", params={**params, "next_token": forged})
        assert response.status_code == 400, position
        assert "not a token this API issued" in response.json()["error"]


def test_results_are_not_sorted_by_completed_at(sim: ScaleSimulator) -> None:
    tasks = call(sim, "/tasks", project_id=sim.projects[0]["id"], status="completed").json()
    instants = [parse(task["completed_at"]) for task in tasks["tasks"]]
    assert instants != sorted(instants)
    assert instants != sorted(instants, reverse=True)


def test_completed_at_ties_exist_across_page_boundaries(
    sim: ScaleSimulator, session: requests.Session
) -> None:
    project_id = sim.projects[0]["id"]
    pages = all_pages(session, f"{sim.url}/tasks", project_id=project_id, limit=7)
    instants_per_page = [
        {parse(task["completed_at"]) for task in page if "completed_at" in task} for page in pages
    ]
    counts = Counter(
        parse(task["completed_at"]) for page in pages for task in page if "completed_at" in task
    )
    assert max(counts.values()) >= 3
    shared = [a & b for a, b in itertools.pairwise(instants_per_page)]
    assert any(shared)


def test_timestamps_come_with_and_without_a_fraction(sim: ScaleSimulator) -> None:
    stamps = [task["completed_at"] for task in sim.tasks(opts=()) if "completed_at" in task]
    assert any("." in stamp for stamp in stamps)
    assert any("." not in stamp for stamp in stamps)
    assert all(stamp.endswith("Z") for stamp in stamps)


def test_completed_filters_are_strict_and_compare_instants(
    sim: ScaleSimulator, session: requests.Session
) -> None:
    project_id = sim.projects[1]["id"]
    truth = sim.tasks(project_id=project_id, opts=())
    counts = Counter(parse(task["completed_at"]) for task in truth if "completed_at" in task)
    tie = sorted(instant for instant, count in counts.items() if count > 1)[len(counts) // 4]
    for spelling in (
        tie.isoformat(),
        tie.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        tie.astimezone(timezone(timedelta(hours=-5))).isoformat(),
    ):
        checks: tuple[tuple[str, t.Callable[[datetime], bool]], ...] = (
            ("completed_after", lambda instant: instant > tie),
            ("completed_before", lambda instant: instant < tie),
        )
        for name, keep in checks:
            pages = all_pages(
                session, f"{sim.url}/tasks", project_id=project_id, **{name: spelling}
            )
            served = {task["task_id"] for page in pages for task in page}
            expected = {
                task["task_id"]
                for task in truth
                if "completed_at" in task and keep(parse(task["completed_at"]))
            }
            assert served == expected, (name, spelling)
            assert expected


def test_batches_deliveries_and_projects_listings(
    sim: ScaleSimulator, session: requests.Session
) -> None:
    assert call(sim, "/projects").json() == {"projects": sim.projects}
    project = sim.projects[0]
    assert call(sim, "/project", project_name=project["name"]).json() == project
    batches = all_pages(session, f"{sim.url}/batches", "batches", project_id=project["id"], limit=1)
    assert [batch for page in batches for batch in page] == sim.batches(project["id"])
    deliveries = call(sim, "/deliveries", project_name=project["name"]).json()["deliveries"]
    assert deliveries == sim.deliveries(project["id"])
    assert "next_token" not in call(sim, "/deliveries", project_id=project["id"]).json()
    for delivery in deliveries:
        pages = all_pages(session, f"{sim.url}/delivery", delivery_id=delivery["id"], limit=4)
        tasks = [task for page in pages for task in page]
        assert len(tasks) == delivery["task_count"]
        assert tasks == sim.delivery_tasks(delivery["id"], opts=())
        assert all(task["status"] == "completed" for task in tasks)
    by_name = call(
        sim, "/delivery", delivery_name=deliveries[0]["name"], project_id=project["id"]
    ).json()
    assert by_name["delivery"] == deliveries[0]["id"]


def test_datasets(sim: ScaleSimulator, session: requests.Session) -> None:
    assert call(sim, "/datasets").json() == {"datasets": sim.datasets}
    dataset = sim.datasets[0]
    deliveries = call(sim, "/datasets/deliveries", dataset_id=dataset["id"]).json()["deliveries"]
    assert deliveries == sim.dataset_deliveries(dataset["id"])
    for delivery in deliveries:
        pages = all_pages(
            session, f"{sim.url}/datasets/delivery", delivery_id=delivery["id"], limit=9
        )
        tasks = [task for page in pages for task in page]
        assert tasks == sim.dataset_tasks(delivery["id"])
        assert delivery["metadata"]["task_count"] == len(tasks)
        turns = sum(len(task["response"]["turns"]) for task in tasks)
        assert delivery["metadata"]["turn_count"] == turns
    pages = all_pages(session, f"{sim.url}/datasets/tasks", dataset_id=dataset["id"], limit=10)
    assert sum(len(page) for page in pages) == sum(d["metadata"]["task_count"] for d in deliveries)
    expanded = call(
        sim, "/datasets/tasks", delivery_id=deliveries[0]["id"], expand=["dataset", "delivery"]
    ).json()
    assert expanded["tasks"][0]["dataset"] == dataset
    assert expanded["tasks"][0]["delivery"]["id"] == deliveries[0]["id"]


# Rendering, with opts and expand


def test_without_opts_details_are_left_out(sim: ScaleSimulator) -> None:
    body = call(sim, "/tasks", project_id=sim.projects[1]["id"], status="completed").json()
    nodes = list(walk(body["tasks"]))
    assert annotations_of(body["tasks"])
    assert all(set(a) <= {"key", "value"} for a in annotations_of(body["tasks"]))
    attachments = [f for node in nodes for f in node.get("attachments", [])]
    assert attachments
    assert all(set(f) == {"url", "mime_type"} for f in attachments)
    assert not any("model_parameters" in node or "submissions" in node for node in nodes)
    assert (
        body["tasks"]
        == sim.tasks(project_id=sim.projects[1]["id"], status="completed", opts=())[
            : len(body["tasks"])
        ]
    )


def test_every_opt_adds_its_detail(sim: ScaleSimulator) -> None:
    project_id = sim.projects[1]["id"]
    for opt, field in (("model_parameters", "model_parameters"), ("submissions", "submissions")):
        tasks = call(sim, "/tasks", project_id=project_id, status="completed", opts=opt).json()
        assert any(field in node for node in walk(tasks["tasks"]))
    detailed = call(sim, "/tasks", project_id=project_id, opts=list(ALL_OPTS), limit=100).json()
    assert detailed["tasks"] == sim.tasks(project_id=project_id)[:100]
    assert all({"id", "key", "type"} <= set(a) for a in annotations_of(detailed["tasks"]))


# What holds a list of annotations, by the list that holds it, in Scale's own words.
LEVELS = {
    "threads": "thread",
    "turns": "turn",
    "messages": "message",
    "chunks": "chunk",
    "rubric_evaluations": "rubric_evaluation",
    "criteria_evaluations": "criterion_evaluation",
    "criteria_definitions": "criterion_definition",
}


def levels_and_types(node: t.Any, within: str = "") -> t.Iterator[tuple[str, str]]:
    """(level, type) of every annotation, the level named by the list its holder is in."""
    if isinstance(node, list):
        for item in node:
            yield from levels_and_types(item, within)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "annotations":
                yield from ((LEVELS[within], a["type"]) for a in value)
            else:
                yield from levels_and_types(value, key)


def test_every_annotation_type_sits_at_every_level(sim: ScaleSimulator) -> None:
    # Scale's models allow any type wherever annotations sit; an auditor's pass puts each there.
    found = set(levels_and_types(sim.tasks(status="completed")))
    assert found == set(itertools.product(LEVELS.values(), ANNOTATION_TYPES))


def test_the_world_holds_every_model_part(sim: ScaleSimulator) -> None:
    tasks = sim.tasks()
    assert {task["status"] for task in tasks} == TASK_STATUSES
    nodes = list(walk(tasks))
    found = {a["type"] for a in annotations_of(tasks)}
    assert found == set(ANNOTATION_TYPES)
    value_types: dict[str, type | tuple[type, ...]] = {
        "integer": int, "boolean": bool, "text": str, "category": str, "category_multiple": list,
        "ranked_choices": list, "ranked_groups": list, "labeled_text": list, "file": (dict, list),
        "rubric_criteria": dict, "rubric_rating": dict, "workspace_container": dict,
    }  # fmt: skip
    for annotation in annotations_of(tasks):
        if "value" in annotation:
            assert isinstance(annotation["value"], value_types[annotation["type"]])
    skipped = [
        a for a in annotations_of(tasks) if a.get("not_applicable") or a.get("cannot_assess")
    ]
    assert skipped
    assert all("value" not in a for a in skipped)
    roles = {node["role"] for node in nodes if "role" in node and "source_id" in node}
    assert roles == {"system", "user", "assistant", "function"}
    for part in ("reference_texts", "chunks", "reasoning", "rubrics", "rubric_evaluations"):
        assert any(part in node for node in nodes), part
    files = [f for node in nodes for f in node.get("attachments", [])]
    assert any("content" in f for f in files)
    assert any("file_size_in_bytes" in f for f in files)
    assert any("transcript" in f for f in files)
    # Fields no published model lists, standing for what Scale adds next.
    assert any("safety_tier" in node for node in nodes)
    assert any("rater_confidence" in a for a in annotations_of(tasks))


def test_task_shapes_follow_status(sim: ScaleSimulator) -> None:
    tasks = sim.tasks()
    reported = [t for t in tasks if "sensitive_content_reports" in t]
    assert reported
    assert all(t["status"] == "completed" and "threads" not in t for t in reported)
    for task in tasks:
        assert isinstance(task["metadata"], dict)
        if task["status"] == "pending":
            assert task["threads"] == []
            assert "completed_at" not in task
        if task["status"] == "error":
            assert task["errors"]
            assert task["threads"] == []
        if task["status"] == "completed" and task not in reported:
            assert task["threads"]


def test_expand_swaps_ids_for_objects(sim: ScaleSimulator) -> None:
    project = sim.projects[0]
    plain = call(sim, "/tasks", project_id=project["id"], limit=5).json()["tasks"]
    assert all(task["project"] == project["id"] for task in plain)
    expanded = call(
        sim, "/tasks", project_id=project["id"], limit=5, expand=["project", "batch"]
    ).json()["tasks"]
    assert all(task["project"] == project for task in expanded)
    batches = {batch["id"]: batch for batch in sim.batches(project["id"])}
    assert all(
        task["batch"] == batches[plain[n]["batch"]]
        for n, task in enumerate(expanded)
        if "batch" in task
    )
    delivery = sim.deliveries(project["id"])[0]
    body = call(sim, "/delivery", delivery_id=delivery["id"], expand="delivery", limit=1).json()
    assert body["delivery"] == delivery
    task_id = plain[0]["task_id"]
    one = call(sim, "/task", task_id=task_id, expand="project").json()
    assert one["project"] == project
    assert one["task_id"] == task_id


# Changing the world


def test_added_and_completed_tasks_are_served(fresh: ScaleSimulator) -> None:
    project_id = fresh.projects[0]["id"]
    before = len(fresh.tasks(project_id=project_id))
    moment = datetime(2031, 5, 1, 12, 0, 0, 250000, tzinfo=timezone.utc)
    added = fresh.add_tasks(project_id, 3, completed_at=moment)
    completed = fresh.complete_tasks(project_id, 2, completed_at=moment)
    assert len(fresh.tasks(project_id=project_id)) == before + 3
    assert all(task["threads"] for task in added + completed)
    assert {task["completed_at"] for task in added + completed} == {"2031-05-01T12:00:00.250Z"}
    newer = call(fresh, "/tasks", project_id=project_id, completed_after="2031-05-01T00:00:00Z")
    served = {task["task_id"] for task in newer.json()["tasks"]}
    assert served == {task["task_id"] for task in added + completed}
    pending = fresh.add_tasks(project_id, 1, status="pending")
    assert call(fresh, "/task", task_id=pending[0]["task_id"]).json()["threads"] == []
    now = fresh.add_tasks(project_id, 2)
    assert now[0]["completed_at"] == now[1]["completed_at"]


def test_reworked_tasks_are_completed_again_with_new_annotations(fresh: ScaleSimulator) -> None:
    project_id = fresh.projects[0]["id"]
    old = fresh.tasks(project_id=project_id, status="completed")[:2]
    moment = datetime(2031, 6, 1, tzinfo=timezone.utc)
    fresh.rework_tasks(project_id, [task["task_id"] for task in old], completed_at=moment)
    for before in old:
        after = call(fresh, "/task", task_id=before["task_id"], opts=ALL_OPTS).json()
        assert after["completed_at"] == "2031-06-01T00:00:00.000Z"
        now, then = (
            {a["id"] for th in v["threads"] for a in th["annotations"]} for v in (after, before)
        )
        assert now
        assert not now & then
    with pytest.raises(ValueError, match="not a completed task"):
        fresh.rework_tasks(project_id, ["task_unknown"])


def test_tasks_added_mid_pagination_never_repeat(fresh: ScaleSimulator) -> None:
    project_id = fresh.projects[0]["id"]
    served: list[str] = []
    params: dict[str, t.Any] = {"project_id": project_id, "limit": 5}
    while True:
        body = call(fresh, "/tasks", **params).json()
        served += [task["task_id"] for task in body["tasks"]]
        if "next_token" not in body:
            break
        fresh.add_tasks(project_id, 2)
        params["next_token"] = body["next_token"]
    assert len(served) == len(set(served))


def test_deliver_creates_a_delivery(fresh: ScaleSimulator) -> None:
    project = fresh.projects[1]
    done = [t["task_id"] for t in fresh.tasks(project_id=project["id"], status="completed")[:4]]
    delivery = fresh.deliver(project["id"], done, name="Hand-off")
    assert delivery["task_count"] == 4
    assert delivery["name"] == "Hand-off"
    listed = call(fresh, "/deliveries", project_id=project["id"]).json()["deliveries"]
    assert listed[-1] == delivery
    body = call(fresh, "/delivery", delivery_name="Hand-off", project_name=project["name"]).json()
    assert sorted(task["task_id"] for task in body["tasks"]) == sorted(done)


def test_the_same_seed_gives_the_same_world() -> None:
    one = ScaleSimulator(seed=3, projects=1, tasks_per_project=30)
    two = ScaleSimulator(seed=3, projects=1, tasks_per_project=30)
    assert one.tasks() == two.tasks()
    assert one.tasks() != ScaleSimulator(seed=4, projects=1, tasks_per_project=30).tasks()


# Faults


def test_rate_limit_with_and_without_retry_after(fresh: ScaleSimulator) -> None:
    fresh.faults.rate_limit = 1.0
    response = call(fresh, "/projects")
    assert response.status_code == 429
    assert response.json() == {"status_code": 429, "error": "Too many requests"}
    assert response.headers["Retry-After"] == "1"
    fresh.faults.retry_after = "Wed, 21 Oct 2026 07:28:00 GMT"
    assert call(fresh, "/projects").headers["Retry-After"] == "Wed, 21 Oct 2026 07:28:00 GMT"
    fresh.faults.retry_after = None
    assert "Retry-After" not in call(fresh, "/projects").headers
    assert fresh.requests[-1]["fault"] == "rate_limit"


def test_server_errors_alternate_json_and_html(fresh: ScaleSimulator) -> None:
    fresh.faults.server_error = 1.0
    responses = [call(fresh, "/projects") for _ in range(8)]
    assert [r.status_code for r in responses] == [500, 500, 502, 502, 503, 503, 504, 504]
    assert responses[0].json() == {"status_code": 500, "error": "Internal Server Error"}
    assert responses[1].headers["Content-Type"].startswith("text/html")
    assert "<html>" in responses[3].text


def test_dropped_connection_raises(fresh: ScaleSimulator) -> None:
    fresh.faults.dropped_connection = 1.0
    with pytest.raises(requests.ConnectionError):
        call(fresh, "/projects")
    assert fresh.requests[-1]["status"] == 0


def test_truncated_body_raises(fresh: ScaleSimulator) -> None:
    fresh.faults.truncated_body = 1.0
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        call(fresh, "/projects")


def test_invalid_json_bodies(fresh: ScaleSimulator) -> None:
    fresh.faults.invalid_json = 1.0
    cut, page = call(fresh, "/projects"), call(fresh, "/projects")
    for response in (cut, page):
        assert response.status_code == 200
        with pytest.raises(requests.JSONDecodeError):
            response.json()
    assert cut.headers["Content-Type"] == "application/json"
    assert int(cut.headers["Content-Length"]) == len(cut.content)
    assert page.headers["Content-Type"].startswith("text/html")


def test_faults_can_be_kept_to_some_paths_and_are_reproducible(fresh: ScaleSimulator) -> None:
    fresh.faults = Faults(rate_limit=0.5, seed=5, only_paths=("/v2/tasks",))
    project_id = fresh.projects[0]["id"]
    assert all(call(fresh, "/projects").status_code == 200 for _ in range(5))
    first = [call(fresh, "/tasks", project_id=project_id).status_code for _ in range(12)]
    assert set(first) == {200, 429}
    fresh.faults = Faults(rate_limit=0.5, seed=5, only_paths=("/v2/tasks",))
    assert [call(fresh, "/tasks", project_id=project_id).status_code for _ in range(12)] == first


def test_slow_seconds_adds_latency(fresh: ScaleSimulator) -> None:
    fresh.faults.slow_seconds = 0.2
    started = time.monotonic()
    assert call(fresh, "/datasets").status_code == 200
    assert time.monotonic() - started >= 0.2


@pytest.fixture
def fresh_session(fresh: ScaleSimulator) -> t.Iterator[requests.Session]:
    with requests.Session() as client:
        client.headers["Authorization"] = f"Bearer {fresh.api_key}"
        yield client


def test_empty_pages_lose_nothing(fresh: ScaleSimulator, fresh_session: requests.Session) -> None:
    fresh.faults = Faults(empty_page=0.5, seed=3)
    empty_pages = 0
    for project in fresh.projects:
        pages = all_pages(fresh_session, f"{fresh.url}/tasks", project_id=project["id"], limit=7)
        truth = [task["task_id"] for task in fresh.tasks(project_id=project["id"])]
        # Every task once, in listing order, in the pages an unfaulted walk would give.
        assert [[task["task_id"] for task in page] for page in pages if page] == [
            truth[start : start + 7] for start in range(0, len(truth), 7)
        ]
        empty_pages += sum(not page for page in pages)
    assert empty_pages > 0
    faults = [request["fault"] for request in fresh.requests]
    assert faults.count("empty_page") == empty_pages
    assert faults.count(None) == len(faults) - empty_pages > 0


def test_an_empty_page_keeps_the_body_and_resumes_where_it_was_asked(
    fresh: ScaleSimulator, fresh_session: requests.Session
) -> None:
    project = fresh.projects[0]
    delivery = fresh.deliveries(project["id"])[0]
    dataset_delivery = fresh.dataset_deliveries()[0]
    cases = [
        ("/tasks", "tasks", {"project_id": project["id"]}),
        ("/batches", "batches", {"project_id": project["id"]}),
        ("/delivery", "tasks", {"delivery_id": delivery["id"], "expand": "delivery"}),
        ("/datasets/delivery", "tasks", {"delivery_id": dataset_delivery["id"]}),
        ("/datasets/tasks", "tasks", {"delivery_id": dataset_delivery["id"]}),
    ]

    def get(path: str, params: dict[str, t.Any], *, empty: bool = False) -> dict[str, t.Any]:
        fresh.faults.empty_page = 1.0 if empty else 0.0
        response = fresh_session.get(f"{fresh.url}{path}", params=params)
        assert response.status_code == 200, response.text
        body: dict[str, t.Any] = response.json()
        return body

    for path, key, query in cases:
        params = {**query, "limit": 1}
        first = get(path, params)
        after_first = {**params, "next_token": first["next_token"]}
        second = get(path, after_first)
        # A first page (resuming from the start) and a later one (resuming after the first).
        for asked, expected in ((params, first), (after_first, second)):
            empty = get(path, asked, empty=True)
            assert empty[key] == [], path
            assert set(empty) == set(expected) | {"next_token"}, path
            assert empty.get("delivery") == expected.get("delivery"), path
            assert empty["next_token"] not in {asked.get("next_token"), expected.get("next_token")}
            resumed = get(path, {**params, "next_token": empty["next_token"]})
            assert resumed[key] == expected[key], path
    assert {request["fault"] for request in fresh.requests} == {None, "empty_page"}


def test_empty_pages_strike_only_paginated_requests_the_api_accepts(
    fresh: ScaleSimulator,
) -> None:
    fresh.faults.empty_page = 1.0
    project = fresh.projects[0]
    assert call(fresh, "/projects").json() == {"projects": fresh.projects}
    assert call(fresh, "/deliveries", project_id=project["id"]).json()["deliveries"]
    assert call(fresh, "/tasks", project_id=project["id"], limit=0).status_code == 400
    assert call(fresh, "/tasks", project_id="project_missing").status_code == 404
    assert [r["fault"] for r in fresh.requests] == [None] * 4


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "Invalid request: "),
        (401, "Unauthorized: "),
        (402, "Payment required: your account has an outstanding balance"),
        (403, "Forbidden: this API key cannot access this resource"),
        (404, "Not found: "),
        (409, "Conflict: "),
        (429, "Too many requests"),
        (418, "I'm a Teapot"),
        (503, "Service Unavailable"),
        (299, "Request refused with status 299"),
    ],
)
def test_refuse_with_answers_every_request_with_that_status(
    fresh: ScaleSimulator, status: int, message: str
) -> None:
    fresh.faults = Faults(refuse_with=status, only_paths=("/v2/tasks", "/v2/projects"))
    for response in (
        call(fresh, "/tasks", project_id=fresh.projects[0]["id"]),
        requests.get(f"{fresh.url}/projects", timeout=10),  # refused before authentication
    ):
        assert response.status_code == status
        assert response.headers["Content-Type"] == "application/json"
        body = response.json()
        assert set(body) == {"status_code", "error"}
        assert body["status_code"] == status
        assert body["error"].startswith(message)
        assert ("Retry-After" in response.headers) == (status == 429)
    assert call(fresh, "/datasets").status_code == 200
    assert [r["fault"] for r in fresh.requests] == ["refuse_with", "refuse_with", None]


def test_refuse_with_only_takes_statuses_a_response_can_have() -> None:
    for status in (100, 204, 304, 600, -1):
        with pytest.raises(ValueError, match="refuse_with"):
            Faults(refuse_with=status)
    faults = Faults()
    for wrong in (True, 402.0, "402"):
        with pytest.raises(TypeError, match="refuse_with"):
            faults.refuse_with = wrong  # type: ignore[assignment]
    faults.refuse_with = 402
    faults.refuse_with = None


def undrift(task: dict[str, t.Any], truth: dict[str, t.Any]) -> dict[str, t.Any]:
    """A drifted task with its values turned back into the types the models promise."""
    task = json.loads(json.dumps(task))
    assert task.pop("priority") == 3
    assert isinstance(task["metadata"], str)
    task["metadata"] = json.loads(task["metadata"])
    for node in walk(task):
        parameters = node.get("model_parameters", {})
        for name, kind in (("temperature", float), ("max_completion_tokens", int)):
            if name in parameters:
                assert isinstance(parameters[name], str)
                parameters[name] = kind(parameters[name])
    drifted = annotations_of([task])
    for annotation, original in zip(drifted, annotations_of([truth]), strict=True):
        if "labels" in original:
            assert annotation["labels"] == ",".join(original["labels"])
            annotation["labels"] = original["labels"]
    return task


def test_type_drift_is_observable_per_task(
    fresh: ScaleSimulator, fresh_session: requests.Session
) -> None:
    fresh.faults = Faults(type_drift=0.5, seed=2)
    project = fresh.projects[0]
    truth = fresh.tasks(project_id=project["id"])
    pages = all_pages(
        fresh_session, f"{fresh.url}/tasks", project_id=project["id"], opts=list(ALL_OPTS)
    )
    served = [task for page in pages for task in page]
    drifted = [fresh.drifted(task["task_id"]) for task in truth]
    assert 0 < sum(drifted) < len(truth)
    for task, original, hit in zip(served, truth, drifted, strict=True):
        assert (undrift(task, original) if hit else task) == original
    assert any(isinstance(n.get("labels"), str) for n in walk(served))
    assert any(
        isinstance(n.get("model_parameters", {}).get("temperature"), str) for n in walk(served)
    )
    one = next(task for task, hit in zip(truth, drifted, strict=True) if hit)
    assert call(fresh, "/task", task_id=one["task_id"]).json()["priority"] == 3
    assert fresh.requests[0]["fault"] == "type_drift"


def test_type_drift_reaches_deliveries(fresh: ScaleSimulator) -> None:
    fresh.faults = Faults(type_drift=0.5, seed=2)
    project = fresh.projects[0]
    done = [task["task_id"] for task in fresh.tasks(project_id=project["id"], status="completed")]
    for number in range(6):
        fresh.deliver(project["id"], done[number::6])
    truth = fresh.deliveries(project["id"])
    served = call(fresh, "/deliveries", project_id=project["id"]).json()["deliveries"]
    hits = [fresh.drifted(delivery["id"]) for delivery in truth]
    assert 0 < sum(hits) < len(truth)
    for delivery, original, hit in zip(served, truth, hits, strict=True):
        if hit:
            assert delivery["task_count"] == str(original["task_count"])
            delivery["task_count"] = int(delivery["task_count"])
        assert delivery == original
    one = truth[hits.index(True)]
    body = call(fresh, "/delivery", delivery_id=one["id"], expand="delivery", limit=1).json()
    assert body["delivery"]["task_count"] == str(one["task_count"])


def test_missing_fields_are_observable_per_task(
    fresh: ScaleSimulator, fresh_session: requests.Session
) -> None:
    fresh.faults = Faults(missing_fields=0.5, seed=4)
    truth = fresh.tasks(opts=())
    served = [
        task
        for project in fresh.projects
        for page in all_pages(fresh_session, f"{fresh.url}/tasks", project_id=project["id"])
        for task in page
    ]
    hits = [fresh.stripped(task["task_id"]) for task in truth]
    assert 0 < sum(hits) < len(truth)
    optional = {"batch", "metadata", "errors"}
    for task, original, hit in zip(served, truth, hits, strict=True):
        if not hit:
            assert task == original
            continue
        assert not optional & set(task)
        kept = {key: value for key, value in task.items() if key != "threads"}
        assert kept == {
            key: value for key, value in original.items() if key not in {*optional, "threads"}
        }
        for thread, thread_truth in zip(
            task.get("threads", []), original.get("threads", []), strict=True
        ):
            assert "annotations" not in thread
            assert len(thread["turns"]) == len(thread_truth["turns"])
            for turn in thread["turns"]:
                assert "annotations" not in turn
                assert all("source_id" not in message for message in turn["messages"])
    assert any(hit and task["status"] == "error" for task, hit in zip(truth, hits, strict=True))
    assert "missing_fields" in {r["fault"] for r in fresh.requests}


def test_faults_that_strike_together_are_all_named(fresh: ScaleSimulator) -> None:
    fresh.faults = Faults(type_drift=1.0, missing_fields=1.0, empty_page=1.0, truncated_body=1.0)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        call(fresh, "/task", task_id=fresh.tasks()[0]["task_id"])
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        call(fresh, "/tasks", project_id=fresh.projects[0]["id"])
    assert [r["fault"] for r in fresh.requests] == [
        "missing_fields+type_drift+truncated_body",
        "empty_page+truncated_body",
    ]


# HTTP


def test_keep_alive_and_content_length(sim: ScaleSimulator) -> None:
    url = urlsplit(sim.url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        for path in ("/v2/projects", "/v2/datasets", "/v2/nowhere"):
            connection.request("GET", path, headers={"Authorization": f"Bearer {sim.api_key}"})
            response = connection.getresponse()
            body = response.read()
            assert int(response.headers["Content-Length"]) == len(body)
            assert response.headers["Content-Type"] == "application/json"
            assert body == json.dumps(json.loads(body), separators=(",", ":")).encode()
            assert not response.will_close
    finally:
        connection.close()


def test_the_request_log(fresh: ScaleSimulator) -> None:
    fresh.reset_log()
    call(
        fresh,
        "/tasks",
        project_id=fresh.projects[0]["id"],
        opts=["submissions", "model_parameters"],
    )
    assert fresh.requests == [
        {
            "method": "GET",
            "path": "/v2/tasks",
            "params": {
                "project_id": [fresh.projects[0]["id"]],
                "opts": ["submissions", "model_parameters"],
            },
            "status": 200,
            "fault": None,
        }
    ]
    fresh.reset_log()
    assert fresh.requests == []


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_python_dash_m_serves_until_signalled(stop_signal: signal.Signals) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    args = [sys.executable, "-m", "tap_scale.testing", "--seed", "2", "--projects", "1"]
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env) as process:
        try:
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], 20)
            assert ready, "the simulator printed nothing"
            line = process.stdout.readline()
            url, key = (part.split("=", 1)[1] for part in line.split())
            assert line.startswith("url=http://127.0.0.1:")
            assert url.endswith("/v2")
            response = requests.get(
                f"{url}/projects", headers={"Authorization": f"Bearer {key}"}, timeout=10
            )
            assert response.status_code == 200
            assert len(response.json()["projects"]) == 1
            process.send_signal(stop_signal)
            assert process.wait(timeout=10) == 0
            assert process.stdout.read() == ""
        finally:
            process.kill()


def test_a_client_hanging_up_mid_answer_is_no_error_on_the_servers_stderr(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # A killed tap (the benchmark's kill-and-resume leg) leaves its connections closed under
    # the answers being written; a server takes that in its stride, with no traceback.
    with ScaleSimulator(seed=7) as simulator:
        simulator.faults.slow_seconds = 0.3  # the answer is written after the client has gone
        url = urlsplit(simulator.url)
        assert url.hostname is not None
        assert url.port is not None
        client = socket.create_connection((url.hostname, url.port))
        client.sendall(
            f"GET {url.path}/projects HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: Bearer {simulator.api_key}\r\n\r\n".encode()
        )
        # Closed with a reset, as the kernel closes a killed process's sockets with data unread.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        time.sleep(0.6)
        # The simulator goes on answering.
        answer = requests.get(f"{simulator.url}/projects", auth=(simulator.api_key, ""), timeout=10)
        assert answer.ok
    assert "Traceback" not in capfd.readouterr().err
