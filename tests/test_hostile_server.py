"""A server that misbehaves the same way on every try: slow, demanding, or sending odd bodies.

None of these may hold the tap forever, crash it, or block a project for good: a request ends
by its deadline, a wait is capped, and a body that parses the same wrong way every time is read
for what it holds rather than retried to exhaustion.
"""

from __future__ import annotations

import typing as t
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
import requests

from tap_scale.answers import retry_after_seconds
from tap_scale.client import MAX_EMPTY_PAGES
from tests.tap_run import run_tap
from tests.test_resilience import keyed

if t.TYPE_CHECKING:
    from pathlib import Path

    from tap_scale.testing import ScaleSimulator


def stopped(stderr: str) -> str:
    """The one paragraph a run that stopped ends with."""
    paragraphs = [line for line in stderr.splitlines() if "tap-scale stopped:" in line]
    assert len(paragraphs) == 1, stderr[-3000:]
    return paragraphs[0]


def test_a_server_trickling_every_answer_is_cut_off_by_the_request_deadline(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    # One byte every 50 ms: each arrives within any read timeout, a page would take half an hour.
    simulator.faults.trickle = 1.0
    simulator.faults.only_paths = ("/v2/tasks",)
    settings = {"request_timeout": 1, "max_tries": 2, "max_retry_wait": 1}
    run = run_tap(tmp_path, {**config, **settings}, check=False)
    assert run.returncode == 1
    assert "GET /v2/tasks failed through every try" in stopped(run.stderr)
    assert "did not finish answering within 1 s" in stopped(run.stderr)
    assert "Retrying GET /v2/tasks" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("retry_after", "asked"),
    [
        ("1e12", "for 1e12 s"),
        ("Fri, 31 Dec 9999 23:59:59 GMT", "to wait until Fri, 31 Dec 9999 23:59:59 GMT"),
    ],
)
def test_a_retry_after_of_hours_or_ages_is_capped_and_named(
    simulator: ScaleSimulator,
    config: dict[str, t.Any],
    tmp_path: Path,
    retry_after: str,
    asked: str,
) -> None:
    simulator.faults.rate_limit = 1.0
    simulator.faults.retry_after = retry_after
    simulator.faults.only_paths = ("/v2/tasks",)
    run = run_tap(tmp_path, {**config, "max_tries": 2, "max_retry_wait": 1}, check=False)
    assert run.returncode == 1
    retries = [line for line in run.stderr.splitlines() if "Retrying GET /v2/tasks" in line]
    assert retries
    for line in retries:
        assert " in 1.0 s " in line
        assert f"Scale asked {asked} (Retry-After), capped by the `max_retry_wait`" in line
    assert f"Retry-After: {retry_after}; tap-scale waits at most 1 s" in stopped(run.stderr)
    assert "Traceback" not in run.stderr


def test_retry_after_is_read_whatever_it_holds() -> None:
    response = requests.Response()
    cases = {
        "7": 7.0,
        "3600": 3600.0,
        "-5": 0.0,
        "1e12": 1e12,
        "1e999": float("inf"),
        "nan": None,
        "soon": None,
        "Fri, 31 Dec 9999 23:59:59 GMT": pytest.approx(
            253402300799 - datetime.now(timezone.utc).timestamp(), abs=5
        ),
        "Mon, 01 Jan 1990 00:00:00 GMT": 0.0,
        "": None,
    }
    for header, seconds in cases.items():
        response.headers["Retry-After"] = header
        assert retry_after_seconds(response) == seconds, header
    # An HTTP date is in Scale's clock: read against its own Date header, not this machine's.
    response.headers["Retry-After"] = "Mon, 01 Jan 2024 00:01:00 GMT"
    assert retry_after_seconds(response, datetime(2024, 1, 1, tzinfo=timezone.utc)) == 60.0
    response.headers["Retry-After"] = format_datetime(
        datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True
    )
    assert 25 < (retry_after_seconds(response) or 0) <= 30


def test_bodies_strict_json_refuses_and_lists_holding_non_tasks_block_nothing(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    clean = keyed(run_tap(tmp_path, config).messages)
    simulator.faults.lone_surrogate = 0.15
    simulator.faults.junk_items = 0.15
    simulator.faults.type_drift = 0.15
    run = run_tap(tmp_path, config)

    got = keyed(run.messages)
    assert got.keys() == clean.keys(), "a task was lost or invented"
    tasks = {key[1]: record for key, record in got.items() if key[0] == "tasks"}
    hit = [task_id for task_id in tasks if simulator.surrogated(task_id)]
    # Some in a strict-JSON-refused body; some, drifted, inside a JSON string within a record.
    assert any(simulator.drifted(task_id) for task_id in hit)
    assert any(not simulator.drifted(task_id) for task_id in hit)
    for task_id in hit:
        assert tasks[task_id]["metadata"]["note"] == "cut \ufffd"
    assert "with a body that is not strict JSON" in run.stderr
    assert "read leniently: unusable characters replaced by U+FFFD in tasks[" in run.stderr
    assert "Skipped item" in run.stderr
    assert "not an object: None" in run.stderr
    assert "an object without its `task_id`" in run.stderr
    assert "of the `projects` list" in run.stderr, "lists the scope is resolved from too"
    assert "Retrying" not in run.stderr, "the same body on every try is not a transient fault"


def test_bodies_that_open_with_a_byte_order_mark_are_read_as_the_json_they_hold(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    clean = keyed(run_tap(tmp_path, config).messages)
    simulator.faults.byte_order_mark = True
    run = run_tap(tmp_path, config)
    assert keyed(run.messages) == clean
    assert all(entry["fault"] == "byte_order_mark" for entry in simulator.requests[-3:])
    assert "Retrying" not in run.stderr, "the same body on every try is not a transient fault"


def test_a_server_answering_only_empty_pages_cannot_hold_the_sync_forever(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    # Each empty page names a fresh next_token, so no token repeats: without a bound, no end.
    simulator.faults.empty_page = 1.0
    simulator.faults.only_paths = ("/v2/tasks",)
    run = run_tap(tmp_path, config, check=False)
    assert run.returncode == 1
    paragraph = stopped(run.stderr)
    assert f"Scale answered {MAX_EMPTY_PAGES} pages in a row of GET /v2/tasks?" in paragraph
    assert "with no records, each naming a next page" in paragraph
    assert "Traceback" not in run.stderr
    pages = [entry for entry in simulator.requests if entry["path"] == "/v2/tasks"]
    # Projects are read concurrently: each stops at its hundredth empty page, or sooner.
    assert len(pages) <= MAX_EMPTY_PAGES * len(simulator.projects)
