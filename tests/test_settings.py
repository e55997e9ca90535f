"""Bad input — settings, config, state and catalog files — ends a run as one paragraph, exit 1.

Every run is the tap's command line against the simulator, as Meltano runs it. A problem with
the input is found before the first request (the simulator's log stays empty) or, for the
state, at least before the first record, and never as a traceback.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import typing as t
from datetime import date, timedelta

import pytest

from tap_scale.settings import check_settings
from tap_scale.tap import TapScale
from tests.tap_run import TAP, TapRun, discover, run_tap, select

if t.TYPE_CHECKING:
    from pathlib import Path

    from tap_scale.testing import ScaleSimulator


def run_command(tmp_path: Path, config: dict[str, t.Any] | None, *args: str, **env: str) -> TapRun:
    """The tap run with these arguments (and a config file of ``config``, if given)."""
    command = [*TAP, *args]
    if config is not None:
        path = tmp_path / "config.json"
        path.write_text(json.dumps(config))
        command += ["--config", str(path)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False, env={**os.environ, **env}
    )
    run = TapRun(done.returncode, done.stdout, done.stderr)
    run.messages = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return run


def stopped(run: TapRun) -> str:
    """The run's one-paragraph stop message, after checking it ended the way every stop ends."""
    assert run.returncode == 1, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert "tap-scale stopped: " in last, run.stderr[-2000:]
    assert not [m for m in run.messages if m["type"] == "RECORD"], "a record came out"
    return last


def warnings(run: TapRun) -> list[str]:
    """The WARNING lines of a run's log."""
    return [line for line in run.stderr.splitlines() if "| WARNING " in line]


# --- Config files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "it does not exist"),
        ("", "it is empty"),
        ("  \n", "it is empty"),
        ('{"api_key": "x",', "it is not JSON"),
        ('{"page_size": NaN}', "it is not JSON"),
        ('["api_key"]', "it holds a list (a JSON array), where a JSON object is expected"),
    ],
)
def test_a_config_file_that_cannot_be_read_is_named_with_what_is_wrong(
    simulator: ScaleSimulator, tmp_path: Path, content: str | None, problem: str
) -> None:
    config = tmp_path / "settings.json"
    if content is not None:
        config.write_text(content)
    run = run_command(tmp_path, None, "--config", str(config))
    message = stopped(run)
    assert f"The config file {str(config)!r} cannot be used: {problem}" in message
    assert simulator.requests == []


# --- Settings -----------------------------------------------------------------------------------


def test_every_bad_setting_is_reported_at_once_naming_the_setting_and_what_it_takes(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    bad = {
        **config,
        "page_size": 0,
        "max_tries": 0,
        "start_date": "last tuesday",
        "task_statuses": ["done"],
        "project_names": "RLHF Preference Ranking",
        "projects": ["RLHF Preference Ranking"],
    }
    message = stopped(run_tap(tmp_path, bad, check=False))
    assert "The settings cannot be used (6 problems)" in message
    for expected in (
        "`page_size` is 0, less than the minimum of 1 (it takes 1 to 100)",
        "`max_tries` is 0, less than the minimum of 1 (it takes 1 to 100)",
        "`start_date` 'last tuesday' is not an ISO 8601 date or timestamp",
        "`task_statuses` item 1: 'done' is not one of the values it takes",
        "`project_names` is 'RLHF Preference Ranking', which is not of type 'array'",
        'write ["RLHF Preference Ranking"]',
        "`projects` is not a tap-scale setting; did you mean `project_ids` or `project_names`?",
        "meltano config set tap-scale",
    ):
        assert expected in message
    assert simulator.requests == []


@pytest.mark.parametrize(
    ("setting", "value", "problem"),
    [
        (
            "start_date",
            "0001-01-01T00:00:00Z",
            "`start_date` '0001-01-01T00:00:00Z' is out of range",
        ),
        ("lookback_minutes", 2_000_000_000, "greater than the maximum of 525600"),
        # A fraction, which the SDK reads as a Decimal: no whole number, however large.
        ("lookback_minutes", 2e9, "is 2000000000.0, which is not of type 'integer'"),
        ("request_timeout", 10**12, "greater than the maximum of 3600"),
        ("max_tries", 10**6, "greater than the maximum of 100"),
        ("progress_interval", -1, "less than the minimum of 0"),
        ("api_url", "http://[::1/v2", "is not a URL (Invalid IPv6 URL)"),
        ("api_url", "https://api.scale.com:99999/v2", "is not a URL (Port out of range"),
        ("api_url", "https:///v2", "names no host"),
        # The HTTP library's host check raised, with a traceback, at the first request.
        ("api_url", f"https://{'a' * 64}.scale.com/v2", "names no host a URL can hold"),
        ("api_url", "https://api..scale.com/v2", "names no host a URL can hold"),
        ("api_url", "ftp://api.scale.com/v2", "must be an https:// URL"),
        ("api_url", "", "`api_url` is empty"),
        ("api_url", "https://api.scale.com/v2?team=ml", "carries a query or fragment"),
        ("api_key", "", "`api_key` is empty"),
        ("task_statuses", [], "`task_statuses` is empty"),
        # The SDK's own settings, which its schema leaves without ranges or checks.
        ("flattening_max_depth", -1, "less than the minimum of 0 (it takes 0 to 100)"),
        ("flattening_max_depth", 10**9, "greater than the maximum of 100"),
        ("flattening_enabled", True, "but `flattening_max_depth` is not set"),
        ("stream_maps", {"tasks": "drop"}, "`stream_maps.tasks` is 'drop', which is none of"),
        ("batch_config", {"encoding": {"format": "xml"}}, "`batch_config.encoding.format`: 'xml'"),
    ],
)
def test_a_setting_out_of_any_sane_range_is_refused_before_any_request(
    simulator: ScaleSimulator,
    config: dict[str, t.Any],
    tmp_path: Path,
    setting: str,
    value: t.Any,
    problem: str,
) -> None:
    message = stopped(run_tap(tmp_path, {**config, setting: value}, check=False))
    assert f"`{setting}" in message
    assert problem in message
    assert simulator.requests == []


def test_secrets_are_never_quoted_whatever_is_wrong_with_them(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    key = "live_0123456789abcdef"
    bad = {**config, "api_key": [key], "api_url": f"https://{key}:@api.scale.com/v2"}
    message = stopped(run_tap(tmp_path, bad, check=False))
    assert "`api_key` is a list (a JSON array), which is not of type 'string'" in message
    assert "'https://api.scale.com/v2' carries a user name or password" in message
    assert key not in message
    assert simulator.requests == []


def test_a_setting_misspelt_is_refused_but_a_custom_one_only_warned_about(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    misspelt = {**config, "limit": 50, "lookback_minute": 3}
    message = stopped(run_tap(tmp_path, misspelt, check=False))
    assert "`limit` is not a tap-scale setting; did you mean `page_size`?" in message
    assert (
        "`lookback_minute` is not a tap-scale setting; did you mean `lookback_minutes`?" in message
    )
    assert simulator.requests == []

    # Meltano passes a project's custom settings on; `_`-prefixed names are an orchestrator's.
    custom = {**config, "warehouse_owner": "ml-evals", "_meltano_extra": 1}
    run = run_tap(tmp_path, custom)
    assert any(
        "`warehouse_owner` is not a tap-scale setting, and is ignored" in w for w in warnings(run)
    )
    assert not any("_meltano_extra" in w for w in warnings(run))
    assert run.records("tasks")


# Settings Meltano or the SDK hand every tap beside its own (`_`-names are an orchestrator's).
SDK_SETTINGS = {
    "stream_maps": {},
    "stream_map_config": {},
    "faker_config": {"seed": 1},
    "flattening_enabled": False,
    "flattening_max_depth": 1,
    "flattening_max_key_length": 255,
    "flattening_separator": "__",
    "emit_activate_version_messages": False,
    "user_agent": "tap-scale-tests",
    "_sdc_extra": 1,
}


def test_settings_meltano_and_the_sdk_pass_are_neither_refused_nor_warned_about(
    config: dict[str, t.Any], tmp_path: Path
) -> None:
    run = run_tap(tmp_path, {**config, **SDK_SETTINGS})
    assert not warnings(run)
    assert run.records("tasks")
    # `batch_config` too, which a run cannot carry here without writing BATCH files instead.
    schema = copy.deepcopy(TapScale.config_jsonschema)
    TapScale.append_builtin_config(schema)
    batch = {"encoding": {"format": "jsonl"}, "storage": {"root": str(tmp_path)}}
    findings = check_settings({**config, **SDK_SETTINGS, "batch_config": batch}, schema)
    assert findings == ([], [])


def test_start_date_as_a_plain_date_is_midnight_utc(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    project = simulator.projects[0]["id"]
    completed = sorted(
        task["completed_at"] for task in simulator.tasks(project_id=project, status="completed")
    )
    day = completed[len(completed) // 2][:10]  # a day some of the tasks completed after
    run = run_tap(tmp_path, {**config, "project_ids": [project], "start_date": day})
    asked = {
        value
        for request in simulator.requests
        if request["path"] == "/v2/tasks"
        for value in request["params"].get("completed_after", [])
    }
    # One millisecond before, so that a task completed exactly at midnight is read too; the
    # windows the range may be cut into all lie after it.
    before = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
    assert min(asked) == f"{before}T23:59:59.999000Z"
    synced = run.records("tasks")
    assert synced
    assert {task["task_id"] for task in synced} == {
        task["task_id"]
        for task in simulator.tasks(project_id=project, status="completed")
        if task["completed_at"][:10] >= day
    }


def test_settings_in_the_environment_are_checked_and_their_need_for_config_env_said(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    settings = {"TAP_SCALE_API_URL": config["api_url"], "TAP_SCALE_API_KEY": config["api_key"]}
    unreadable = {**settings, "TAP_SCALE_PAGE_SIZE": "fifty"}
    message = stopped(run_command(tmp_path, None, "--config", "ENV", **unreadable))
    assert "TAP_SCALE_PAGE_SIZE is 'fifty', where a whole number is expected" in message

    # Without `--config ENV` the variables are not read: say so rather than "api_key missing".
    message = stopped(run_command(tmp_path, {"api_url": config["api_url"]}, **settings))
    assert "`api_key` is missing" in message
    assert "TAP_SCALE_API_KEY is set in the environment" in message
    assert "`--config ENV`" in message
    assert simulator.requests == []


def test_a_stream_map_that_does_not_parse_is_named(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    maps = {**config, "stream_maps": {"tasks": {"score": "1 +"}}}
    message = stopped(run_tap(tmp_path, maps, check=False))
    assert "The `stream_maps` setting cannot be used" in message
    assert "1 +" in message
    assert simulator.requests == []


def test_a_stream_map_naming_no_stream_or_field_is_refused_where_it_is_one_misspelt(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    # The SDK applies a map of a name that is no stream to nothing: every record went out
    # unmapped, with exit code 0. So with a field it drops that the stream does not have.
    misspelt = {"task": {"metadata": "__NULL__"}, "tasks": {"metdata": "__NULL__"}}
    message = stopped(run_tap(tmp_path, {**config, "stream_maps": misspelt}, check=False))
    assert "The `stream_maps` setting cannot be used (2 problems)" in message
    assert "`stream_maps` maps `task`, which is not a stream of tap-scale" in message
    assert "did you mean `tasks`?" in message
    assert "`stream_maps.tasks` drops `metdata`, which is not a field of `tasks`" in message
    assert "did you mean `metadata`?" in message
    assert simulator.requests == []

    # Names close to none are warned about; patterns, aliases and the SDK's keys are maps.
    maps = {
        "warehouse_audit": {"note": "1"},
        "tasks": {"legacy_field": "__NULL__", "task_url": "'scale:' + task_id"},
        "task_*": {"__key_properties__": ["task_id"]},
        "tasks_copy": {"__source__": "tasks"},
        "__else__": "__NULL__",
    }
    run = run_tap(tmp_path, {**config, "stream_maps": maps})
    said = warnings(run)
    assert len(said) == 2, said
    assert "`stream_maps` maps `warehouse_audit`, which is not a stream of tap-scale" in said[0]
    assert "`stream_maps.tasks` drops `legacy_field`, which is not a field of `tasks`" in said[1]
    assert all(record["task_url"].startswith("scale:") for record in run.records("tasks"))
    assert run.records("tasks_copy")


# A map of `tasks` naming `task_id`, as the README's "Stream maps and flattening" sets it.
TASK_URL = {"tasks": {"sensitive_content_reports": "__NULL__", "task_url": "'scale:' + task_id"}}


@pytest.mark.parametrize(
    "stream_maps",
    [
        # singer-sdk 0.54 checked this map against the empty schema of the unselected `tasks`:
        # a traceback before anything was read.
        TASK_URL,
        # With `__else__` null, the unselected parent `deliveries` was mapped away, and with it
        # every delivery's tasks: rc 0 and nothing synced.
        {"delivery_tasks": {"task_url": "'scale:' + task_id"}, "__else__": None},
    ],
)
def test_a_stream_map_of_a_stream_not_selected_is_not_applied(
    simulator: ScaleSimulator,
    config: dict[str, t.Any],
    tmp_path: Path,
    stream_maps: dict[str, t.Any],
) -> None:
    settings = {**config, "stream_maps": stream_maps}
    catalog = select(discover(tmp_path, settings), "delivery_tasks")
    run = run_tap(tmp_path, settings, catalog=catalog)
    delivered = {
        task["task_id"]
        for delivery in simulator.deliveries()
        for task in simulator.delivery_tasks(delivery["id"])
    }
    synced = run.records("delivery_tasks")
    assert {task["task_id"] for task in synced} == delivered
    assert {m["stream"] for m in run.messages if m["type"] == "RECORD"} == {"delivery_tasks"}
    # The selected stream's own map is applied.
    mapped = "task_url" in stream_maps.get("delivery_tasks", {})
    assert all(("task_url" in task) == mapped for task in synced)
    assert "| WARNING " not in run.stderr


@pytest.mark.parametrize("path", ["/v3", ""])
def test_an_api_url_with_the_wrong_path_is_named_as_the_cause_of_a_404(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path, path: str
) -> None:
    api_url = config["api_url"].removesuffix("/v2") + path
    message = stopped(run_tap(tmp_path, {**config, "api_url": api_url}, check=False))
    assert "HTTP 404" in message
    assert f"The `api_url` setting {api_url!r} does not end in /v2" in message
    assert "project, batch or delivery" not in message
    assert ".." not in message, "Scale's text ends a sentence the message ends again"
    assert len(simulator.requests) == 1, "a 404 is not retried"


def test_an_unknown_batch_name_lists_the_batches_the_key_can_see(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    project = simulator.projects[0]
    settings = {**config, "project_ids": [project["id"]], "batch_names": ["no-such-batch"]}
    message = stopped(run_tap(tmp_path, settings, check=False))
    assert "Scale has no batch with batch_name 'no-such-batch'" in message
    assert "Check the `batch_names` setting" in message
    for batch in simulator.batches(project["id"]):
        assert f"{batch['name']!r} ({batch['id']})" in message


# --- Catalog ------------------------------------------------------------------------------------


def test_a_catalog_that_selects_nothing_warns_that_nothing_is_synced(
    config: dict[str, t.Any], tmp_path: Path
) -> None:
    catalog = select(discover(tmp_path, config))
    catalog["streams"].append(
        {"tap_stream_id": "taks", "schema": {"properties": {}}, "metadata": []}
    )
    run = run_tap(tmp_path, config, catalog=catalog)
    assert not [m for m in run.messages if m["type"] == "RECORD"]
    logged = "\n".join(warnings(run))
    assert "The catalog selects no stream: this run syncs nothing" in logged
    assert "The catalog names streams tap-scale does not have, which are ignored: taks" in logged


def test_a_catalog_that_is_no_singer_catalog_is_named(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    catalog = {"streams": [{"tap_stream_id": "tasks", "metadata": "selected"}, {"stream": "x"}]}
    message = stopped(run_tap(tmp_path, config, catalog=catalog, check=False))
    assert "The catalog cannot be used (2 problems)" in message
    assert "streams[0].metadata is a string, where a list (a JSON array) is expected" in message
    assert "streams[1] has no `tap_stream_id`" in message
    assert simulator.requests == []


PROJECTS = {"type": "object", "properties": {"id": {"type": "string"}}}


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"schema": {}}, "streams[0].schema has no `properties`"),
        (
            {"schema": {"properties": ["id"]}},
            "streams[0].schema.properties is a list (a JSON array), where an object",
        ),
        (
            {"schema": {"properties": {"id": "string"}}},
            "streams[0].schema.properties.id is a string, where an object or true or false",
        ),
        (
            {"schema": {"properties": {"id": {"type": "text"}}}},
            "streams[0].schema.properties.id.type is not a JSON Schema",
        ),
        (
            {"schema": PROJECTS, "key_properties": ["project_id"]},
            "streams[0].key_properties names `project_id`, which its schema does not have",
        ),
        (
            {
                "schema": PROJECTS,
                "metadata": [{"breadcrumb": [], "metadata": {"selected": "yes"}}],
            },
            "streams[0].metadata[0].metadata.selected is a string, where true or false",
        ),
    ],
)
def test_a_catalog_stream_the_sdk_could_not_read_is_named(
    simulator: ScaleSimulator,
    config: dict[str, t.Any],
    tmp_path: Path,
    entry: dict[str, t.Any],
    problem: str,
) -> None:
    catalog = {"streams": [{"tap_stream_id": "projects", "metadata": [], **entry}]}
    message = stopped(run_tap(tmp_path, config, catalog=catalog, check=False))
    assert "The catalog cannot be used" in message
    assert problem in message
    assert simulator.requests == []


# --- State --------------------------------------------------------------------------------------

TASKS = {"project": "project_0", "status": "completed"}
BOOKMARK = {"replication_key": "completed_at", "replication_key_value": "2025-01-02T00:00:00Z"}


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        ({"bookmarks": []}, "bookmarks is a list (a JSON array), where an object is expected"),
        ({"bookmarks": {"tasks": "done"}}, "bookmarks.tasks is a string, where an object is"),
        (
            {"bookmarks": {"tasks": {"partitions": {"0": {}}}}},
            "bookmarks.tasks.partitions is an object, where a list (a JSON array) is expected",
        ),
        (
            {"bookmarks": {"tasks": {"partitions": [BOOKMARK]}}},
            "bookmarks.tasks.partitions[0] has no `context`",
        ),
        (
            {"bookmarks": {"tasks": {"partitions": [{"context": "project_0", **BOOKMARK}]}}},
            "bookmarks.tasks.partitions[0].context is a string, where an object is expected",
        ),
        (
            {"bookmarks": {"tasks": {"partitions": [{"context": TASKS, **BOOKMARK}] * 2}}},
            (
                "bookmarks.tasks.partitions[1] (project project_0, status completed) repeats "
                "bookmarks.tasks.partitions[0]"
            ),
        ),
        (
            {
                "bookmarks": {
                    "tasks": {
                        "partitions": [{"context": TASKS, **BOOKMARK, "replication_key": "id"}]
                    }
                }
            },
            "bookmarks `id`, but the stream's replication key is `completed_at`",
        ),
        (
            {
                "bookmarks": {
                    "tasks": {
                        "partitions": [
                            {"context": TASKS, **BOOKMARK, "replication_key_value": "0001-01-01"}
                        ]
                    }
                }
            },
            "(project project_0, status completed): replication_key_value '0001-01-01' is not an",
        ),
        (
            {"bookmarks": {"tasks": {"partitions": [None]}}},
            "bookmarks.tasks.partitions[0] is null, where an object is expected",
        ),
        (
            {"bookmarks": {"tasks": {"progress_markers": "done"}}},
            "bookmarks.tasks.progress_markers is a string, where an object is expected",
        ),
        (
            # `meltano state get` prints the state inside this wrapper.
            {"singer_state": {"bookmarks": {"tasks": {"partitions": []}}}},
            "it is Meltano's wrapper around a state (`singer_state`)",
        ),
        (
            {"bookmarks": {"batches": {"partitions": [{"context": {"project": 7}}]}}},
            (
                "bookmarks.batches.partitions[0].context.project (project 7) is a whole number, "
                "where a string is expected"
            ),
        ),
    ],
)
def test_a_state_of_the_wrong_shape_stops_the_run_before_any_request(
    simulator: ScaleSimulator,
    config: dict[str, t.Any],
    tmp_path: Path,
    state: dict[str, t.Any],
    problem: str,
) -> None:
    message = stopped(run_tap(tmp_path, config, state=state, check=False))
    assert "The state cannot be used" in message
    assert problem in message
    assert "meltano state clear --force" in message
    assert simulator.requests == []


@pytest.mark.parametrize("content", ["", "[]", "{"])
def test_a_state_file_that_is_no_json_object_is_named(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path, content: str
) -> None:
    state = tmp_path / "state.json"
    state.write_text(content)
    run = run_command(tmp_path, config, "--state", str(state))
    assert f"The state file {str(state)!r} cannot be used" in stopped(run)
    assert simulator.requests == []


def test_every_problem_of_a_state_is_named_at_once_and_unknown_streams_only_warned_about(
    config: dict[str, t.Any], tmp_path: Path
) -> None:
    first = run_tap(tmp_path, config)
    state = json.loads(json.dumps(first.state))
    partitions = state["bookmarks"]["tasks"]["partitions"]
    partitions[0]["replication_key_value"] = "last week"
    partitions[1]["context"] = ["project"]
    state["bookmarks"]["taks"] = {}
    run = run_tap(tmp_path, config, state=state, check=False)
    message = stopped(run)
    assert "The state cannot be used (2 problems)" in message
    assert "replication_key_value 'last week' is not an ISO 8601 timestamp" in message
    assert "bookmarks.tasks.partitions[1].context is a list" in message
    assert any("bookmarks for a stream `taks`" in line for line in warnings(run))

    # The state the tap wrote itself is read back as it is.
    again = run_tap(tmp_path, config, state=first.state)
    assert not warnings(again)


# --- Data nested deeper than Python can handle --------------------------------------------------


@pytest.mark.parametrize(
    ("levels", "problem"),
    [(600, "deeper than the Singer SDK"), (5000, "nested deeper than Python can read")],
)
def test_metadata_nested_too_deep_to_process_is_named_with_its_partition(
    simulator: ScaleSimulator,
    config: dict[str, t.Any],
    tmp_path: Path,
    levels: int,
    problem: str,
) -> None:
    project = simulator.projects[1]["id"]
    task = simulator.tasks(project_id=project, status="completed")[0]
    simulator.nest_metadata(task["task_id"], levels)
    settings = {**config, "project_ids": [project], "page_size": 100}
    catalog = select(discover(tmp_path, settings), "tasks")
    run = run_tap(tmp_path, settings, catalog=catalog, check=False)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    message = run.stderr.strip().splitlines()[-1]
    assert "tap-scale stopped: " in message
    assert problem in message
    # The partition, named by its request (GET /v2/tasks?project_id=...) or as the SDK's context.
    assert project in message
    assert "completed" in message
