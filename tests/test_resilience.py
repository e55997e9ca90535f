"""The real world: rate limits, faults, interruptions, bad settings and refusals, and the secret."""

from __future__ import annotations

import json
import typing as t
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import msgspec
import pytest
import requests

from tap_scale import task_rows
from tap_scale.answers import retry_after_seconds
from tests.tap_run import run_tap, run_until_killed

if t.TYPE_CHECKING:
    from pathlib import Path

    from tap_scale.testing import ScaleSimulator
    from tests.tap_run import TapRun

# Every stream's records by primary key: the measure of "nothing lost, nothing changed".
PRIMARY_KEYS = {
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
    "task_messages": ("task_id", "thread_id", "turn_id", "message_index"),
    "task_annotations": ("task_id", "annotation_id"),
    "task_preferences": ("task_id", "annotation_id", "preferred", "rejected"),
    "delivery_task_messages": ("delivery", "task_id", "thread_id", "turn_id", "message_index"),
    "delivery_task_annotations": ("delivery", "task_id", "annotation_id"),
    "delivery_task_preferences": ("delivery", "task_id", "annotation_id", "preferred", "rejected"),
}


# The streams of rows derived from tasks, by the stream of the tasks they come from.
DERIVED = {
    f"{source}_{rows}": source
    for source in ("task", "delivery_task")
    for rows in ("messages", "annotations", "preferences")
}
ROWS = {
    "messages": task_rows.message_rows,
    "annotations": task_rows.annotation_rows,
    "preferences": task_rows.preference_rows,
}


def rows_of_tasks(run: TapRun) -> list[dict[str, t.Any]]:
    """RECORD messages of the rows derived from the run's own task records."""
    return [
        {"type": "RECORD", "stream": stream, "record": msgspec.to_builtins(row)}
        for stream, source in DERIVED.items()
        for task in run.records(f"{source}s")
        for row in ROWS[stream.rsplit("_", 1)[1]](task)
    ]


def keyed(messages: t.Iterable[dict[str, t.Any]]) -> dict[tuple[str, ...], dict[str, t.Any]]:
    """Every record of a run by (stream, *primary key)."""
    return {
        (m["stream"], *(m["record"][k] for k in PRIMARY_KEYS[m["stream"]])): m["record"]
        for m in messages
        if m["type"] == "RECORD"
    }


def test_a_sync_through_rate_limits_and_failures_emits_exactly_a_clean_syncs_records(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    clean = keyed(run_tap(tmp_path, config).messages)

    simulator.faults.rate_limit = 0.10
    simulator.faults.retry_after = "0"
    simulator.faults.server_error = 0.05
    simulator.faults.dropped_connection = 0.02
    simulator.faults.truncated_body = 0.02
    simulator.faults.invalid_json = 0.02
    simulator.reset_log()
    faulty = run_tap(tmp_path, {**config, "max_tries": 10})

    struck = [r["fault"] for r in simulator.requests if r["fault"]]
    assert {"rate_limit", "server_error", "dropped_connection"} <= set(struck)
    assert keyed(faulty.messages) == clean
    assert "Retrying GET /v2/" in faulty.stderr


def test_retry_after_is_honoured_in_seconds_and_as_an_http_date() -> None:
    response = requests.Response()
    response.headers["Retry-After"] = "7"
    assert retry_after_seconds(response) == 7
    response.headers["Retry-After"] = format_datetime(
        datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True
    )
    assert 25 < (retry_after_seconds(response) or 0) <= 30
    response.headers["Retry-After"] = "soon"
    assert retry_after_seconds(response) is None


def test_a_rate_limited_sync_waits_as_long_as_scale_asks(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    simulator.faults.rate_limit = 0.3
    simulator.faults.retry_after = "1"
    simulator.faults.only_paths = ("/v2/tasks",)
    run = run_tap(tmp_path, {**config, "project_ids": [simulator.projects[0]["id"]]})
    waits = [line for line in run.stderr.splitlines() if "Retrying GET /v2/tasks" in line]
    assert waits
    assert all(" in 1.0 s " in line and "HTTP 429" in line for line in waits)


def test_giving_up_names_the_endpoint_the_status_and_scales_error(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    simulator.faults.server_error = 1.0
    run = run_tap(tmp_path, {**config, "max_tries": 2}, check=False)
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert "GET /v2/projects" in last
    assert "HTTP 500" in last
    assert "Internal Server Error" in last
    assert "max_tries" in last
    assert len(simulator.requests) == 2
    assert "Traceback" not in run.stderr


def test_dropped_connections_without_end_are_a_clear_error(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    simulator.faults.dropped_connection = 1.0
    run = run_tap(tmp_path, {**config, "max_tries": 2}, check=False)
    assert run.returncode == 1
    assert "GET /v2/projects failed through every try" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("status", "advice"),
    [
        (400, "Scale rejected the request's parameters"),
        (401, "Check the `api_key` setting"),
        (402, "billing"),
        (403, "Check the `api_key` setting"),
        # Every request refused 404, the first (`/v2/projects`) included, which takes no ids.
        (404, "does not point at Scale's v2 API"),
    ],
)
def test_a_fatal_status_stops_at_once_with_what_to_do(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path, status: int, advice: str
) -> None:
    simulator.faults.refuse_with = status
    run = run_tap(tmp_path, config, check=False)
    assert run.returncode == 1
    assert f"HTTP {status}" in run.stderr
    assert advice in run.stderr
    assert "Traceback" not in run.stderr
    assert len(simulator.requests) == 1, "a fatal status is not retried"


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("api_url", "http://api.example.com/v2", "must be an https:// URL"),
        ("start_date", "last tuesday", "is not an ISO 8601 date or timestamp"),
        ("page_size", 0, "less than the minimum of 1"),
        ("page_size", 101, "greater than the maximum of 100"),
        ("task_statuses", ["done"], "'done' is not one of"),
        ("opts", ["everything"], "'everything' is not one of"),
        ("max_tries", 0, "less than the minimum of 1"),
        ("project_names", "RLHF", "is not of type 'array'"),
        ("api_key", "live_pasted_with_a_newline\n", "leading or trailing whitespace"),
    ],
)
def test_a_bad_setting_is_named_before_any_request(
    simulator: ScaleSimulator,
    config: dict[str, t.Any],
    tmp_path: Path,
    setting: str,
    value: t.Any,
    message: str,
) -> None:
    run = run_tap(tmp_path, {**config, setting: value}, check=False)
    assert run.returncode == 1
    assert message in run.stderr
    assert setting in run.stderr
    assert simulator.requests == []
    assert "live_pasted_with_a_newline" not in run.stderr, "the key is never echoed"


def test_a_broken_bookmark_in_a_hand_edited_state_is_a_clear_error(
    config: dict[str, t.Any], tmp_path: Path
) -> None:
    first = run_tap(tmp_path, config)
    state = json.loads(json.dumps(first.state))
    state["bookmarks"]["tasks"]["partitions"][0]["replication_key_value"] = "last week"
    run = run_tap(tmp_path, config, state=state, check=False)
    assert run.returncode == 1
    assert "'last week'" in run.stderr
    assert "is not an ISO 8601 timestamp" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("kill_after_records", [5, 60, 200, 330])
def test_a_sync_killed_at_any_point_and_resumed_from_its_last_state_loses_nothing(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path, kill_after_records: int
) -> None:
    everything = keyed(run_tap(tmp_path, config).messages)
    assert len(everything) > kill_after_records

    # Slow enough that the kill lands mid-sync, wherever the count falls.
    simulator.faults.slow_seconds = 0.01
    killed = run_until_killed(tmp_path, config, kill_after_records)
    states = [m["value"] for m in killed if m["type"] == "STATE"]
    simulator.faults.slow_seconds = 0
    resumed = run_tap(tmp_path, config, state=states[-1] if states else None)

    emitted = {**keyed(killed), **keyed(resumed.messages)}
    assert emitted.keys() >= everything.keys()


def test_the_api_key_never_appears_in_any_output_even_with_debug_logging(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    log_config = tmp_path / "logging.json"
    log_config.write_text(
        json.dumps(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "handlers": {"console": {"class": "logging.StreamHandler", "level": "DEBUG"}},
                "root": {"level": "DEBUG", "handlers": ["console"]},
            }
        )
    )
    debug = {"LOGLEVEL": "DEBUG", "SINGER_SDK_LOG_CONFIG": str(log_config)}
    simulator.faults.rate_limit = 0.1
    simulator.faults.retry_after = "0"
    good = run_tap(tmp_path, config, env=debug)
    # Debug logging really was on, the HTTP library's included.
    assert "Starting new HTTP connection" in good.stderr
    assert simulator.api_key not in good.stdout + good.stderr

    simulator.faults.rate_limit = 0
    wrong_key = "live_wrong_8d2f6c1e"
    bad = run_tap(tmp_path, {**config, "api_key": wrong_key}, env=debug, check=False)
    assert bad.returncode == 1
    assert wrong_key not in bad.stdout + bad.stderr


def test_unexpected_data_is_synced_whole_with_a_warning_where_it_is_changed(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    clean = keyed(run_tap(tmp_path, config).messages)

    simulator.faults.empty_page = 0.2
    simulator.faults.type_drift = 0.1
    simulator.faults.missing_fields = 0.1
    run = run_tap(tmp_path, config)

    got = keyed(run.messages)
    read = {key for key in got if key[0] not in DERIVED}
    assert read == {key for key in clean if key[0] not in DERIVED}, "a record was lost or invented"
    # Rows of tasks follow the tasks as Scale sent them this time: a task stripped of its
    # turns' annotations has fewer.
    assert got.keys() - read == keyed(rows_of_tasks(run)).keys()
    # A drifted annotation's labels (a joined string, not a list) stay out of their typed
    # column, which a target would refuse, and are kept as sent beside it.
    aside = [
        record["additional_properties"]["labels"]
        for key, record in got.items()
        if key[0] == "task_annotations" and "labels" in (record.get("additional_properties") or {})
    ]
    assert aside
    assert all(isinstance(labels, str) for labels in aside)
    assert any(r["fault"] and "empty_page" in r["fault"] for r in simulator.requests)
    tasks = {key[1]: record for key, record in got.items() if key[0] == "tasks"}
    drifted = [task_id for task_id in tasks if simulator.drifted(task_id)]
    stripped = [task_id for task_id in tasks if simulator.stripped(task_id)]
    assert drifted
    assert stripped
    for task_id in set(drifted) - set(stripped):
        # A column that came as a JSON string is the object again, and says so in the log.
        assert tasks[task_id]["metadata"] == clean[("tasks", task_id)]["metadata"]
    assert "Unexpected data in tasks record" in run.stderr
    assert "metadata came as a JSON string" in run.stderr
    for task_id in stripped:
        assert "batch" not in tasks[task_id] or tasks[task_id]["batch"] is None
