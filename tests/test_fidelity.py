"""The simulator proven against Scale's own models: every object every endpoint serves is one
the official client's generated v2 models accept, with no field they lack but the named few that
stand for fields Scale adds later (``tests/scale_models.py``)."""

from __future__ import annotations

import itertools
import typing as t

import pytest
import requests
from scaleapi.api_client.v2 import models as scale

from tap_scale.testing import ALL_OPTS, ScaleSimulator
from tap_scale.testing.data import TASK_STATUSES
from tests.scale_models import problems

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from pydantic import BaseModel

JsonObject = dict[str, t.Any]


class Api:
    """GETs against the simulator, following `next_token` through every page."""

    def __init__(self, simulator: ScaleSimulator) -> None:
        self.url = simulator.url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {simulator.api_key}"

    def get(self, path: str, **params: t.Any) -> JsonObject:
        response = self.session.get(f"{self.url}{path}", params=params, timeout=30)
        assert response.status_code == 200, response.text
        return t.cast("JsonObject", response.json())

    def pages(self, path: str, **params: t.Any) -> Iterator[JsonObject]:
        token = None
        while True:
            body = self.get(path, **params, **({"next_token": token} if token else {}))
            yield body
            token = body.get("next_token")
            if not token:
                return


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    # A larger world than the default, so every project kind, task status and annotation type is
    # served (the test below checks that they were).
    with ScaleSimulator(seed=7, projects=6, tasks_per_project=80) as simulator:
        yield Api(simulator)


def check(body: JsonObject, model: type[BaseModel], items: str | None = None) -> None:
    """Fail with every problem Scale's models find, each list item checked on its own."""
    found = []
    if items is not None:
        item_model = _item_model(model, items)
        for index, item in enumerate(body[items]):
            found += [f"{items}[{index}] {p}" for p in problems(item, item_model)]
        body = {**body, items: []}
    found += problems(body, model)
    assert not found, "\n".join(found[:20])


def _item_model(model: type[BaseModel], field: str) -> type[BaseModel]:
    annotation = model.model_fields[field].annotation
    return t.cast("type[BaseModel]", t.get_args(annotation)[0])


def every_task(
    api: Api, opts: t.Sequence[str], statuses: t.Sequence[str] = TASK_STATUSES, projects: int = 99
) -> Iterator[JsonObject]:
    """Every task of the projects in these statuses, with these opts, each page checked whole."""
    for project in api.get("/projects")["projects"][:projects]:
        for status in statuses:
            for body in api.pages(
                "/tasks", project_id=project["id"], status=status, opts=list(opts)
            ):
                check(body, scale.GetTasksResponse, "tasks")
                yield from body["tasks"]


def _walk(node: t.Any) -> Iterator[JsonObject]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def test_tasks_with_every_opt_in_every_status_are_what_scale_serves(api: Api) -> None:
    tasks = list(every_task(api, ALL_OPTS))
    assert {task["status"] for task in tasks} == set(TASK_STATUSES)
    objects = list(_walk(tasks))
    served_types = {node["type"] for node in objects if "key" in node and "type" in node}
    # Every annotation type Scale's models know was served, so every one was checked.
    assert served_types >= {kind.value for kind in scale.AnnotationType}
    roles = {node["role"] for node in objects if "role" in node and "source_id" in node}
    assert roles == {role.value for role in scale.MessageRole}


@pytest.mark.parametrize("left_out", ["attachment_details", "model_parameters", "submissions"])
def test_tasks_without_an_opt_are_what_scale_serves(api: Api, left_out: str) -> None:
    # Only completed tasks have threads, where opts make a difference; the first three projects
    # hold the three kinds of work.
    opts = [opt for opt in ALL_OPTS if opt != left_out]
    assert list(every_task(api, opts, statuses=["completed"], projects=3))


def test_tasks_without_annotation_details_carry_what_scales_example_shows(api: Api) -> None:
    # Without `annotation_details` Scale sends an annotation as its `key` and `value` only, as its
    # own example of GET /v2/tasks shows; the models, which require `id` and `type`, describe the
    # detailed form. So such annotations are held to the example's shape, the rest to the models.
    project = api.get("/projects")["projects"][0]
    opts = [opt for opt in ALL_OPTS if opt != "annotation_details"]
    body = api.get("/tasks", project_id=project["id"], status="completed", opts=opts)
    summaries = [
        annotation
        for node in _walk(body["tasks"])
        for annotation in node.get("annotations", [])
        if isinstance(node.get("annotations"), list)
    ]
    assert summaries
    assert all(set(annotation) <= {"key", "value"} for annotation in summaries)
    detailed = api.get("/tasks", project_id=project["id"], status="completed", opts=list(ALL_OPTS))
    check(detailed, scale.GetTasksResponse, "tasks")


def test_expanded_tasks_single_tasks_projects_and_batches_are_what_scale_serves(api: Api) -> None:
    projects = api.get("/projects")
    check(projects, scale.GetProjectsResponse, "projects")
    for project in projects["projects"]:
        check(api.get("/project", project_id=project["id"]), scale.Project)
        for expand in ([], ["project"]):
            for body in api.pages("/batches", project_id=project["id"], expand=expand, limit=1):
                check(body, scale.GetBatchesResponse, "batches")
                for batch in body["batches"]:
                    check(api.get("/batch", batch_id=batch["id"], expand=expand), scale.Batch)
    project = projects["projects"][0]
    for status in TASK_STATUSES:
        body = api.get(
            "/tasks",
            project_id=project["id"],
            status=status,
            expand=["project", "batch"],
            opts=list(ALL_OPTS),
        )
        check(body, scale.GetTasksResponse, "tasks")
        for task in body["tasks"][:2]:
            single = api.get(
                "/task", task_id=task["task_id"], opts=list(ALL_OPTS), expand=["project", "batch"]
            )
            check(single, scale.Task)


def test_deliveries_and_delivered_tasks_are_what_scale_serves(api: Api) -> None:
    delivered = 0
    for project in api.get("/projects")["projects"]:
        for expand in ([], ["project"]):
            deliveries = api.get("/deliveries", project_id=project["id"], expand=expand)
            check(deliveries, scale.GetDeliveriesResponse, "deliveries")
        # Expanded once per project: expansion changes only the ids, not the tasks.
        for delivery, expand in [
            *((delivery, []) for delivery in deliveries["deliveries"]),
            (deliveries["deliveries"][0], ["project", "batch", "delivery"]),
        ]:
            for body in api.pages(
                "/delivery", delivery_id=delivery["id"], opts=list(ALL_OPTS), expand=expand
            ):
                check(body, scale.GetDeliveredTasksResponse, "tasks")
                delivered += len(body["tasks"])
    assert delivered


def test_datasets_their_deliveries_and_tasks_are_what_scale_serves(api: Api) -> None:
    datasets = api.get("/datasets")
    check(datasets, scale.GetDatasetsResponse, "datasets")
    for expand in ([], ["dataset"]):
        check(
            api.get("/datasets/deliveries", expand=expand),
            scale.GetDatasetDeliveriesResponse,
            "deliveries",
        )
    for dataset in datasets["datasets"]:
        deliveries = api.get("/datasets/deliveries", dataset_id=dataset["id"])["deliveries"]
        for delivery, expand in itertools.product(deliveries, ([], ["dataset", "delivery"])):
            for body in api.pages("/datasets/delivery", delivery_id=delivery["id"], expand=expand):
                check(body, scale.GetDatasetDeliveryResponse, "tasks")
        for expand in ([], ["dataset", "delivery"]):
            for body in api.pages("/datasets/tasks", dataset_id=dataset["id"], expand=expand):
                check(body, scale.GetDatasetTasksResponse, "tasks")


def test_the_check_finds_what_scales_models_reject_and_fields_they_lack() -> None:
    message = {"role": "system", "content": {"text": "Be brief."}, "source_id": "system"}
    assert any("annotations" in p for p in problems(message, scale.Message))
    invented = {**message, "annotations": [], "mood": "calm"}
    assert problems(invented, scale.Message) == ["$: fields Message does not have: ['mood']"]
    # Files are checked variant by variant: an image passes, a file with a stray field does not.
    image = {"mime_type": "image/png", "url": "https://x.test/a.png", "file_size_in_bytes": 3}
    content: JsonObject = {"text": "", "attachments": [image]}
    assert problems({**message, "annotations": [], "content": content}, scale.Message) == []
    content["attachments"] = [{**image, "pixels": 9}]
    assert problems({**message, "annotations": [], "content": content}, scale.Message) == [
        "$.content.attachments[0]: fields no File model has: ['pixels']"
    ]


def test_delivered_responses_and_their_schemas_are_what_scale_serves(api: Api) -> None:
    schema_ids: set[str] = set()
    shapes = set()
    for project in api.get("/projects")["projects"]:
        deliveries = api.get("/deliveries", project_id=project["id"])["deliveries"]
        listings = [{"delivery_id": delivery["id"]} for delivery in deliveries]
        listings.append({"project_id": project["id"], "status": "completed"})
        for params in listings:
            for body in api.pages("/delivery/tasks", **params):
                check(body, scale.GetDeliveryTasksResponse, "docs")
                assert body["total"] == len(body["docs"])
                for doc in body["docs"]:
                    shapes.add((doc["delivery_id"] is None, doc["response"] is None))
                    if doc["response_schema_id"]:
                        schema_ids.add(doc["response_schema_id"])
    # Delivered with a response, delivered with none, and never delivered.
    assert shapes == {(False, False), (False, True), (True, True)}
    for schema_id in schema_ids:
        check(api.get("/schema", schema_id=schema_id), scale.GetSchemaResponse)
