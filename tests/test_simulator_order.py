"""The simulator's orders of task listings and its world labelled over days, over real HTTP."""

from __future__ import annotations

import base64
import itertools
import typing as t
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
import requests
from scaleapi.api_client.v2 import models as scale

from tap_scale.testing import ALL_OPTS, ScaleSimulator
from tap_scale.testing.__main__ import parse_args
from tap_scale.testing.orders import ORDERS
from tap_scale.testing.pagination import order_key
from tests.scale_models import problems

JsonObject = dict[str, t.Any]
DAYS = 10
HOUR = timedelta(hours=1)


def get(simulator: ScaleSimulator, path: str = "/tasks", **params: t.Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {simulator.api_key}"}
    return requests.get(f"{simulator.url}{path}", params=params, headers=headers, timeout=10)


def pages(
    simulator: ScaleSimulator, path: str = "/tasks", **params: t.Any
) -> list[list[JsonObject]]:
    """Every page of a task listing, following next_token."""
    found = []
    while True:
        response = get(simulator, path, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        found.append(body["tasks"])
        if "next_token" not in body:
            return found
        params["next_token"] = body["next_token"]


def parse(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def check_order(order: str, tasks: list[JsonObject], batches: list[JsonObject]) -> None:
    """Fail unless the tasks are listed in this order."""
    ids = [task["task_id"] for task in tasks]
    if order == "shuffled":
        assert ids == sorted(ids, key=order_key)
    elif order == "newest-first":
        keys = [(-parse(task["created_at"]).timestamp(), task["task_id"]) for task in tasks]
        assert keys == sorted(keys)
    elif order == "oldest-first":
        keys = [(parse(task["created_at"]).timestamp(), task["task_id"]) for task in tasks]
        assert keys == sorted(keys)
    else:
        # One group per batch, the batches in order of creation, the tasks of no batch last;
        # shuffled within each group.
        created = {batch["id"]: (parse(batch["created_at"]), batch["id"]) for batch in batches}
        groups = [
            (batch, [task["task_id"] for task in group])
            for batch, group in itertools.groupby(tasks, key=lambda task: task.get("batch"))
        ]
        named = [batch for batch, _ in groups]
        assert len(named) == len(set(named)), "a batch's tasks are not listed together"
        in_batches = [batch for batch in named if batch is not None]
        assert in_batches == sorted(in_batches, key=created.__getitem__)
        assert None not in named[:-1]
        for _, group in groups:
            assert group == sorted(group, key=order_key)


@pytest.fixture(scope="module", params=ORDERS)
def ordered(request: pytest.FixtureRequest) -> t.Iterator[ScaleSimulator]:
    """A simulator listing tasks in one order, in a world labelled over days, read only."""
    with ScaleSimulator(
        seed=21, projects=2, tasks_per_project=150, order=request.param, labelled_over_days=DAYS
    ) as simulator:
        yield simulator


@pytest.fixture(params=ORDERS)
def changing(request: pytest.FixtureRequest) -> t.Iterator[ScaleSimulator]:
    """A simulator of its own in one order (the default world), for tests that change it."""
    with ScaleSimulator(seed=11, projects=1, tasks_per_project=80, order=request.param) as sim:
        yield sim


# Every order, page by page


def test_small_pages_list_every_completed_task_once_in_the_order(
    ordered: ScaleSimulator,
) -> None:
    for project in ordered.projects:
        found = pages(ordered, project_id=project["id"], status="completed", limit=7)
        assert len(found) > 3
        assert all(len(page) == 7 for page in found[:-1])
        served = [task for page in found for task in page]
        ids = [task["task_id"] for task in served]
        assert len(ids) == len(set(ids))
        truth = ordered.tasks(project_id=project["id"], status="completed", opts=())
        assert served == truth
        check_order(ordered.order, served, ordered.batches(project["id"]))
        # Every status too, and by batch: the same order, filtered.
        every = [t for page in pages(ordered, project_id=project["id"], limit=9) for t in page]
        check_order(ordered.order, every, ordered.batches(project["id"]))
        batch = ordered.batches(project["id"])[0]["id"]
        in_batch = [t for page in pages(ordered, batch_id=batch, limit=9) for t in page]
        assert in_batch == [task for task in every if task.get("batch") == batch]


def test_shuffled_is_the_default_and_every_order_lists_the_same_tasks() -> None:
    listings: dict[str, list[JsonObject]] = {}
    for order in ("default", *ORDERS):
        simulator = (
            ScaleSimulator(seed=3, projects=1, tasks_per_project=90)
            if order == "default"
            else ScaleSimulator(seed=3, projects=1, tasks_per_project=90, order=order)
        )
        with simulator:
            project = simulator.projects[0]["id"]
            tasks = [t for page in pages(simulator, project_id=project, limit=6) for t in page]
            listings[order] = tasks
            check_order(simulator.order, tasks, simulator.batches())
    assert listings["default"] == listings["shuffled"]
    ids = {order: [task["task_id"] for task in tasks] for order, tasks in listings.items()}
    assert all(sorted(listed) == sorted(ids["default"]) for listed in ids.values())
    assert len({tuple(listed) for listed in ids.values()}) == len(ORDERS)
    # The tasks of no batch close the listing by batch.
    assert "batch" not in listings["by-batch"][-1]
    assert "batch" in listings["by-batch"][0]


def test_tasks_added_between_pages_land_where_their_key_falls(changing: ScaleSimulator) -> None:
    project = changing.projects[0]["id"]
    batches = [batch["id"] for batch in changing.batches(project)]
    completed_before = {
        t["task_id"] for t in changing.tasks(project_id=project, status="completed")
    }
    # Created (within the hour before) amid the world's tasks, created 2025-01-07 to 01-10.
    middle = datetime(2025, 1, 8, 18, tzinfo=timezone.utc)
    served: list[str] = []
    added: list[tuple[str, str]] = []  # (task, the last task served before it was added)
    params: dict[str, t.Any] = {"project_id": project, "status": "completed", "limit": 5}
    for number in itertools.count():
        body = get(changing, **params).json()
        served += [task["task_id"] for task in body["tasks"]]
        if "next_token" not in body:
            break
        cursor = served[-1]
        # Created now, and created amid the world's tasks, in either batch.
        new = changing.add_tasks(project, 1) + changing.add_tasks(
            project,
            2,
            completed_at=middle + number * HOUR,
            batch_id=batches[number % len(batches)],
        )
        if number % 3 == 0:
            new += changing.complete_tasks(project, 1, completed_at=middle)
        added += [(task["task_id"], cursor) for task in new]
        params["next_token"] = body["next_token"]
    assert len(served) == len(set(served))
    assert completed_before <= set(served)
    # The pages follow the listing as it ends up, and hold each added task exactly when its
    # place is after the cursor of the moment it was added.
    final = [task["task_id"] for task in changing.tasks(project_id=project, status="completed")]
    place = {task_id: number for number, task_id in enumerate(final)}
    assert [place[task_id] for task_id in served] == sorted(place[task_id] for task_id in served)
    for task_id, last in added:
        assert (task_id in served) == (place[task_id] > place[last]), task_id
    late = [task_id for task_id, _ in added if task_id in served]
    early = [task_id for task_id, _ in added if task_id not in served]
    if changing.order == "oldest-first":
        assert late  # the tasks created now come last
    if changing.order == "newest-first":
        assert early  # and first
    # Some land amid the tasks there were, in every order.
    there = [place[task_id] for task_id in completed_before]
    assert any(min(there) < place[task_id] < max(there) for task_id, _ in added)
    check_order(changing.order, changing.tasks(project_id=project), changing.batches(project))


def test_reworked_tasks_keep_their_place(changing: ScaleSimulator) -> None:
    project = changing.projects[0]["id"]
    before = [t["task_id"] for t in changing.tasks(project_id=project, status="completed")]
    changing.rework_tasks(
        project, before[:3], completed_at=datetime(2031, 1, 1, tzinfo=timezone.utc)
    )
    after = [t["task_id"] for t in changing.tasks(project_id=project, status="completed")]
    assert after == before


@pytest.mark.parametrize("order", ORDERS)
def test_prerendered_pages_follow_the_live_order(order: str) -> None:
    def labelled(*, prerendered: bool) -> ScaleSimulator:
        return ScaleSimulator(
            seed=8,
            projects=1,
            tasks_per_project=120,
            order=order,
            labelled_over_days=5,
            prerendered=prerendered,
        )

    with labelled(prerendered=False) as live, labelled(prerendered=True) as cached:
        cached.prerender_tasks()
        query = {
            "project_id": live.projects[0]["id"],
            "status": "completed",
            "limit": 7,
            "opts": list(ALL_OPTS),
        }
        assert pages(cached, **query) == pages(live, **query)
        assert cached.serving_stats["api"].get("/v2/tasks", 0) == 0
        # A window of the listing, as the tap reads a big project: filtered in place.
        instants = sorted(
            parse(task["completed_at"]) for task in live.tasks(status="completed", opts=())
        )
        window = {
            **query,
            "completed_after": instants[20].isoformat(),
            "completed_before": instants[-20].isoformat(),
        }
        served = pages(cached, **window)
        assert served == pages(live, **window)
        assert sum(map(len, served)) < len(instants) - 30
        assert cached.serving_stats["api"].get("/v2/tasks", 0) == 0


def test_tokens_are_refused_for_another_query_and_by_another_order(
    ordered: ScaleSimulator,
) -> None:
    params = {"project_id": ordered.projects[0]["id"], "limit": 5}
    first = get(ordered, **params).json()
    token = first["next_token"]
    assert all(task["task_id"] not in token for task in first["tasks"])
    assert b"task_" not in base64.urlsafe_b64decode(token + "==")
    assert get(ordered, **params, next_token=token).status_code == 200
    for changed in ({"limit": 6}, {"status": "completed"}, {"opts": "submissions"}):
        response = get(ordered, **{**params, **changed}, next_token=token)
        assert response.status_code == 400
        assert "different query" in response.json()["error"]
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for position in (1, 20, len(raw) - 20, len(raw) - 1):  # scope, nonce, cursor, signature
        tampered = raw.copy()
        tampered[position] ^= 1
        forged = base64.urlsafe_b64encode(bytes(tampered)).decode().rstrip("=")
        response = get(ordered, **params, next_token=forged)
        assert response.status_code == 400
        assert "not a token this API issued" in response.json()["error"]
    other = next(order for order in ORDERS if order != ordered.order)
    with ScaleSimulator(seed=21, projects=2, tasks_per_project=150, order=other) as twin:
        response = get(twin, **params, next_token=token)
    assert response.status_code == 400
    assert "not a token this API issued" in response.json()["error"]


def test_a_deliverys_tasks_follow_the_order(ordered: ScaleSimulator) -> None:
    delivery = ordered.deliveries(ordered.projects[0]["id"])[0]
    found = pages(ordered, "/delivery", delivery_id=delivery["id"], limit=4)
    tasks = [task for page in found for task in page]
    assert tasks == ordered.delivery_tasks(delivery["id"], opts=())
    assert len(tasks) == delivery["task_count"]
    check_order(ordered.order, tasks, ordered.batches())


def test_listed_tasks_pass_scales_models(ordered: ScaleSimulator) -> None:
    for project in ordered.projects:
        params = {"project_id": project["id"], "limit": 40, "opts": list(ALL_OPTS)}
        body = get(ordered, **params).json()
        found = [
            f"tasks[{n}] {problem}"
            for n, task in enumerate(body["tasks"])
            for problem in problems(task, scale.Task)
        ]
        found += problems({**body, "tasks": []}, scale.GetTasksResponse)
        assert not found, "\n".join(found[:20])


# A world labelled over days


def test_labelled_tasks_are_created_over_the_days_and_completed_hours_later(
    ordered: ScaleSimulator,
) -> None:
    for project in ordered.projects:
        tasks = ordered.tasks(project_id=project["id"], opts=())
        created = [parse(task["created_at"]) for task in tasks]
        start = parse(project["created_at"]) + timedelta(days=1)
        assert start <= min(created)
        assert max(created) < start + timedelta(days=DAYS) + HOUR
        assert max(created) - min(created) > timedelta(days=DAYS - 1)
        assert {(moment - start).days for moment in created} >= set(range(DAYS))
        done = [task for task in tasks if "completed_at" in task]
        assert done
        for task in done:
            lag = parse(task["completed_at"]) - parse(task["created_at"])
            assert 2 * HOUR <= lag <= timedelta(days=2), task["task_id"]
        # Ties, and instants with and without a fraction, as in the default world.
        instants = Counter(parse(task["completed_at"]) for task in done)
        assert max(instants.values()) >= 3
        stamps = [task["completed_at"] for task in done]
        assert any("." in stamp for stamp in stamps)
        assert any("." not in stamp for stamp in stamps)
        # The completions follow the creations.
        by_creation = sorted(done, key=lambda task: parse(task["created_at"]))
        halves = by_creation[: len(done) // 2], by_creation[len(done) // 2 :]
        earlier, later = ([parse(task["completed_at"]) for task in half] for half in halves)
        assert sorted(earlier)[len(earlier) // 2] < sorted(later)[len(later) // 2]


def test_newest_first_shows_the_newest_hours_on_the_first_page() -> None:
    with ScaleSimulator(
        seed=2, projects=1, tasks_per_project=600, order="newest-first", labelled_over_days=28
    ) as simulator:
        project = simulator.projects[0]["id"]
        page = get(simulator, project_id=project, status="completed", limit=20).json()["tasks"]
        every = simulator.tasks(project_id=project, status="completed", opts=())
    span = parse(page[0]["created_at"]) - parse(page[-1]["created_at"])
    whole = parse(every[0]["created_at"]) - parse(every[-1]["created_at"])
    assert whole > timedelta(days=27)
    assert span < timedelta(days=2)


def test_the_labelled_world_is_the_same_for_the_same_seed() -> None:
    def world(seed: int, days: int | None = 7) -> list[JsonObject]:
        simulator = ScaleSimulator(seed=seed, projects=1, tasks_per_project=40, order="by-batch")
        labelled = ScaleSimulator(
            seed=seed, projects=1, tasks_per_project=40, labelled_over_days=days
        )
        return simulator.tasks(opts=()) + labelled.tasks(opts=())

    assert world(4) == world(4)
    assert world(4) != world(5)
    assert world(4) != world(4, days=8)


def test_bad_orders_and_days_are_refused() -> None:
    with pytest.raises(ValueError, match="newest-first"):
        ScaleSimulator(order="newest")
    with pytest.raises(ValueError, match="at least 1"):
        ScaleSimulator(labelled_over_days=0)
    args = parse_args(["--order", "by-batch", "--labelled-over-days", "28"])
    assert (args.order, args.labelled_over_days) == ("by-batch", 28)
    defaults = parse_args([])
    assert (defaults.order, defaults.labelled_over_days) == ("shuffled", None)
    for wrong in (["--order", "random"], ["--labelled-over-days", "0"]):
        with pytest.raises(SystemExit):
            parse_args(wrong)
