"""The simulator's pre-rendered mode: the API's pages, served as stored bytes, for benchmarks."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import typing as t
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests

from benchmarks import naive_client, raw_client
from tap_scale.testing import ALL_OPTS, ScaleSimulator
from tap_scale.testing.prerender import Listing

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime.now(timezone.utc).isoformat()


@pytest.fixture
def prerendered() -> t.Iterator[ScaleSimulator]:
    with ScaleSimulator(seed=5, projects=2, tasks_per_project=45, prerendered=True) as simulator:
        yield simulator


@pytest.fixture
def rendering() -> t.Iterator[ScaleSimulator]:
    """The same world, rendered on every request."""
    with ScaleSimulator(seed=5, projects=2, tasks_per_project=45) as simulator:
        yield simulator


def get(simulator: ScaleSimulator, path: str = "/tasks", **params: t.Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {simulator.api_key}"}
    return requests.get(f"{simulator.url}{path}", params=params, headers=headers, timeout=10)


def walk(simulator: ScaleSimulator, **params: t.Any) -> list[requests.Response]:
    """Every page of a listing, following next_token."""
    responses = []
    while True:
        response = get(simulator, **params)
        assert response.status_code == 200, response.text
        responses.append(response)
        token = response.json().get("next_token")
        if token is None:
            return responses
        params["next_token"] = token


def tasks_api(simulator: ScaleSimulator) -> int:
    """How many /v2/tasks requests the API answered itself, rendering."""
    return int(simulator.serving_stats["api"].get("/v2/tasks", 0))


def first_project(simulator: ScaleSimulator) -> str:
    return str(simulator.projects[0]["id"])


def test_pages_are_the_apis_pages(prerendered: ScaleSimulator, rendering: ScaleSimulator) -> None:
    project = first_project(prerendered)
    query = {"project_id": project, "status": "completed", "limit": 7, "opts": list(ALL_OPTS)}
    cached = [r.json()["tasks"] for r in walk(prerendered, **query)]
    rendered = [r.json()["tasks"] for r in walk(rendering, **query)]
    assert len(cached) > 2
    assert cached == rendered
    assert tasks_api(prerendered) == 0
    served = prerendered.serving_stats["served"]
    assert served["pages"] == len(cached)
    assert served["tasks"] == sum(len(page) for page in cached)


def test_the_taps_bounds_are_served_from_the_cache_and_pages_are_stable(
    prerendered: ScaleSimulator,
) -> None:
    project = first_project(prerendered)
    query = {"project_id": project, "status": "completed", "limit": 10, "opts": list(ALL_OPTS)}
    first = [r.content for r in walk(prerendered, **query)]
    # As tap-scale asks: opts in another order, bounded by the moment its sync started.
    bounded = {**query, "opts": list(reversed(ALL_OPTS)), "completed_before": NOW}
    second = [r.content for r in walk(prerendered, **bounded)]
    assert first == second  # same bytes, tokens included
    assert tasks_api(prerendered) == 0
    assert prerendered.serving_stats["cached"]["pages"] == len(first)


def parse(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def test_a_window_that_excludes_tasks_is_served_from_kept_bodies_as_the_api_filters(
    prerendered: ScaleSimulator, rendering: ScaleSimulator
) -> None:
    project = first_project(prerendered)
    listing: dict[str, t.Any] = {"project_id": project, "status": "completed", "limit": 10}
    every = [task for r in walk(prerendered, **listing) for task in r.json()["tasks"]]
    instants = sorted(parse(task["completed_at"]) for task in every)
    # A window of the listing, both ends on a task: strict at both ends, as the API is.
    after, before = instants[len(every) // 4], instants[3 * len(every) // 4]
    bounded = {
        **listing,
        "completed_after": after.isoformat(),
        "completed_before": before.isoformat(),
    }
    pages = walk(prerendered, **bounded)
    window = [task for r in pages for task in r.json()["tasks"]]
    assert 0 < len(window) < len(every)
    assert all(after < parse(task["completed_at"]) < before for task in window)
    assert window == [task for r in walk(rendering, **bounded) for task in r.json()["tasks"]]
    assert len(pages) > 1  # its tokens are followed
    assert tasks_api(prerendered) == 0  # nothing rendered anew
    # A token of the window is bound to it: sent without the window's bounds it is refused.
    token = pages[0].json()["next_token"]
    assert get(prerendered, **listing, next_token=token).status_code == 400


def test_listing_bounds() -> None:
    listing = Listing(("a", "b"), 100, (10, 20))
    assert listing.holds_all(None, None)
    assert listing.holds_all(9, 21)
    assert not listing.holds_all(10, None)
    assert not listing.holds_all(None, 20)
    undated = Listing(("a",), 100, None)
    assert undated.holds_all(None, None)
    assert not undated.holds_all(None, 21)
    assert Listing((), 100, None).holds_all(0, 1)
    assert Listing((), 100, None).pages == 1


def test_tokens_are_bound_to_their_query(prerendered: ScaleSimulator) -> None:
    project = first_project(prerendered)
    token = get(prerendered, project_id=project, limit=5).json()["next_token"]
    assert get(prerendered, project_id=project, limit=5, next_token=token).status_code == 200
    other = get(prerendered, project_id=project, limit=6, next_token=token)
    assert other.status_code == 400
    assert "issued for a different query" in other.json()["error"]
    stranger = "bm90IG91cnM"
    forged = get(prerendered, project_id=project, limit=5, next_token=stranger)
    assert forged.status_code == 400
    assert "not a token this API issued" in forged.json()["error"]


def test_refusals_are_the_apis(prerendered: ScaleSimulator, rendering: ScaleSimulator) -> None:
    project = first_project(prerendered)
    for params in ({"project_id": project, "limit": 101}, {"project_id": "project_nope"}, {}):
        assert get(prerendered, **params).json() == get(rendering, **params).json()
    response = requests.get(f"{prerendered.url}/tasks", params={"project_id": project}, timeout=10)
    assert response.status_code == 401


def test_faults_still_apply(prerendered: ScaleSimulator) -> None:
    project = first_project(prerendered)
    prerendered.faults.rate_limit = 1.0
    assert get(prerendered, project_id=project).status_code == 429
    prerendered.faults.rate_limit = 0.0
    prerendered.faults.slow_seconds = 0.2
    started = time.monotonic()
    assert get(prerendered, project_id=project).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_a_changed_world_is_rendered_again(prerendered: ScaleSimulator) -> None:
    project = first_project(prerendered)
    before = [
        t["task_id"] for r in walk(prerendered, project_id=project) for t in r.json()["tasks"]
    ]
    added = prerendered.add_tasks(
        project, 3, completed_at=datetime(2025, 3, 1, tzinfo=timezone.utc)
    )
    after = [t["task_id"] for r in walk(prerendered, project_id=project) for t in r.json()["tasks"]]
    assert sorted(after) == sorted(before + [task["task_id"] for task in added])


def test_prerender_tasks_renders_every_page_ahead(prerendered: ScaleSimulator) -> None:
    reports: list[tuple[int, int]] = []
    total = prerendered.prerender_tasks(limit=10, progress=lambda *report: reports.append(report))
    expected = len(prerendered.tasks(status="completed"))
    assert total == expected
    assert reports[-1] == (expected, expected)
    cached = prerendered.serving_stats["cached"]
    assert cached["tasks"] == expected
    assert cached["pages"] == len(reports)
    project = first_project(prerendered)
    walk(prerendered, project_id=project, status="completed", limit=10, opts=list(ALL_OPTS))
    assert prerendered.serving_stats["cached"]["pages"] == len(reports)  # nothing new rendered


def test_stats_over_http(prerendered: ScaleSimulator) -> None:
    base = prerendered.url.removesuffix("/v2")
    assert requests.get(f"{base}/_simulator/stats", timeout=10).status_code == 401
    headers = {"Authorization": f"Bearer {prerendered.api_key}"}
    stats = requests.get(f"{base}/_simulator/stats", headers=headers, timeout=10)
    assert stats.status_code == 200
    assert set(stats.json()) == {"cached", "served", "api", "statuses", "cpu_seconds"}
    assert prerendered.requests == []  # not an API request: not logged, no faults


def test_only_in_prerendered_mode(rendering: ScaleSimulator) -> None:
    base = rendering.url.removesuffix("/v2")
    headers = {"Authorization": f"Bearer {rendering.api_key}"}
    assert requests.get(f"{base}/_simulator/stats", headers=headers, timeout=10).status_code == 404
    with pytest.raises(RuntimeError, match="prerendered=True"):
        rendering.prerender_tasks()


def test_the_benchmark_clients_read_every_task(
    prerendered: ScaleSimulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SCALE_API_KEY", prerendered.api_key)
    projects = [project["id"] for project in prerendered.projects]
    expected = len(prerendered.tasks(status="completed"))
    prerendered.prerender_tasks()
    assert naive_client.main([prerendered.url, *projects]) == 0
    assert json.loads(capsys.readouterr().out)["tasks"] == expected
    assert raw_client.main([prerendered.url, *projects]) == 0
    assert json.loads(capsys.readouterr().out)["tasks"] == expected
    assert tasks_api(prerendered) == 0
    assert prerendered.serving_stats["served"]["tasks"] == 2 * expected


def test_python_dash_m_prerenders_then_serves_with_latency() -> None:
    args = [
        sys.executable,
        "-m",
        "tap_scale.testing",
        "--prerender",
        "--projects=1",
        "--tasks-per-project=30",
        "--latency-ms=100",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        try:
            assert process.stdout is not None
            assert process.stderr is not None
            ready, _, _ = select.select([process.stdout], [], [], 20)
            assert ready, "the simulator printed nothing"
            url, key = (part.split("=", 1)[1] for part in process.stdout.readline().split())
            headers = {"Authorization": f"Bearer {key}"}
            stats = requests.get(
                url.removesuffix("/v2") + "/_simulator/stats", headers=headers, timeout=10
            ).json()
            assert stats["cached"]["tasks"] > 0
            started = time.monotonic()
            response = requests.get(f"{url}/projects", headers=headers, timeout=10)
            assert response.status_code == 200
            assert time.monotonic() - started >= 0.1
            process.terminate()
            assert process.wait(timeout=10) == 0
            assert "prerendered" in process.stderr.read()
        finally:
            process.kill()
