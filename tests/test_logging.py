"""The log reads like a progress report to a person, and none of its lines misleads."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import typing as t

import pytest

from tests import readme
from tests.tap_run import TAP, TapRun, run_tap

if t.TYPE_CHECKING:
    from pathlib import Path

    from tap_scale.testing import ScaleSimulator

PROGRESS = re.compile(
    r"\| tap-scale\.progress +\| (?P<stream>\w+): (?P<records>[\d,]+) records so far in "
    r"[\d.]+ s \((?P<rate>[\d,]+|\d\.\d)/s\)"
    r"(?:; (?P<label>.+): (?P<done>[\d,]+) of (?P<expected>[\d,]+) "
    r"\((?P<share>\d+)%\)(?:, about [\d.]+ s left|, nearly done)?)?$"
)
SUMMARY = re.compile(
    r"Sync finished in [\d.]+ s: (?P<total>[\d,]+) records \((?P<streams>[^)]*)\), "
    r"(?P<requests>[\d,]+) requests to Scale, (?P<retries>[\d,]+) retr(?:y|ies)\.$"
)
# Lines the SDK and backoff log that misled readers (see tap_scale/sdk_logging.py).
MISLEADING = (
    "Stream is assumed to be unsorted",
    "An unhandled error occurred while syncing",
    "Backing off",
    "Giving up",
)


def number(text: str) -> int:
    return int(text.replace(",", ""))


def test_a_long_sync_logs_progress_per_stream_with_totals_where_scale_gives_them(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    # Slow enough pages that several progress lines fall within each stream's sync.
    simulator.faults.slow_seconds = 0.1
    simulator.faults.only_paths = ("/v2/tasks", "/v2/delivery", "/v2/datasets/tasks")
    run = run_tap(tmp_path, {**config, "page_size": 4, "progress_interval": 1})

    lines = [match for line in run.stderr.splitlines() if (match := PROGRESS.search(line))]
    streams = {match["stream"] for match in lines}
    assert {"tasks", "delivery_tasks", "dataset_tasks"} <= streams
    # A delivery's `task_count` and a dataset delivery's `metadata.task_count` are totals.
    sizes = {d["name"]: d["task_count"] for d in simulator.deliveries()}
    sizes |= {d["name"]: d["metadata"]["task_count"] for d in simulator.dataset_deliveries()}
    # Deliveries of a dataset read together in one span (a first run reads them all) add up.
    spans = {
        (len(group), sum(d["metadata"]["task_count"] for d in group))
        for dataset in simulator.datasets
        if (group := simulator.dataset_deliveries(dataset["id"]))
    }
    sized = [match for match in lines if match["stream"] in {"delivery_tasks", "dataset_tasks"}]
    assert {match["stream"] for match in sized} == {"delivery_tasks", "dataset_tasks"}
    for match in sized:
        expected, done = number(match["expected"]), number(match["done"])
        if match["label"].startswith("delivery '"):
            assert expected == sizes[match["label"][len("delivery '") : -1]]
        else:
            together = int(match["label"].removesuffix(" deliveries read together"))
            assert (together, expected) in spans
        assert 0 < done <= expected
        assert int(match["share"]) == round(100 * done / expected)
    # Counts only grow, and never pass what was emitted.
    for stream in streams:
        counts = [number(match["records"]) for match in lines if match["stream"] == stream]
        assert counts == sorted(counts)
        assert counts[-1] <= len(run.records(stream))
    assert not [match for match in lines if match["stream"] == "tasks" and match["label"]]
    # A parent read while its children take the time moves slowly, and says so, not "0/s".
    assert "deliveries" in streams
    assert all(float(match["rate"].replace(",", "")) > 0 for match in lines)


def test_the_summary_counts_records_per_stream_requests_and_retries(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    simulator.faults.rate_limit = 0.15
    simulator.faults.retry_after = "0"
    run = run_tap(tmp_path, {**config, "max_tries": 10})

    summary = SUMMARY.search(run.stderr.strip().splitlines()[-1])
    assert summary, run.stderr[-500:]
    per_stream = dict(item.rsplit(" ", 1) for item in summary["streams"].split(", "))
    emitted: dict[str, int] = {}
    for message in run.messages:
        if message["type"] == "RECORD":
            emitted[message["stream"]] = emitted.get(message["stream"], 0) + 1
    assert {name: number(count) for name, count in per_stream.items()} == emitted
    assert number(summary["total"]) == sum(emitted.values())
    retried = [request for request in simulator.requests if request["fault"]]
    assert retried
    assert number(summary["retries"]) == len(retried)
    assert number(summary["requests"]) == len(simulator.requests) - len(retried)


def test_each_retry_is_one_line_and_no_misleading_line_is_logged(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    simulator.faults.rate_limit = 0.2
    simulator.faults.retry_after = "0"
    run = run_tap(tmp_path, config)

    retries = [line for line in run.stderr.splitlines() if "Retrying GET /v2/" in line]
    assert len(retries) == len([r for r in simulator.requests if r["fault"]]) > 0
    assert all(
        re.search(r"in 0\.0 s \(try \d+ of 8 failed\): .*HTTP 429", line) for line in retries
    )
    for text in MISLEADING:
        assert text not in run.stderr, text
    assert "| ERROR " not in run.stderr


def test_a_request_that_got_no_answer_says_why_in_its_retry_line_and_final_stop(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    # Before, each such line ended in the bare class name `ConnectionError`, whatever happened.
    simulator.faults.dropped_connection = 0.2
    run = run_tap(tmp_path, {**config, "max_tries": 10})
    retries = [line for line in run.stderr.splitlines() if "Retrying GET /v2/" in line]
    assert len(retries) == len([r for r in simulator.requests if r["fault"]]) > 0
    assert all(
        line.endswith("): ConnectionError (Remote end closed connection without response)")
        for line in retries
    ), retries[:3]

    # A port nothing listens on: the cause is in every retry line and in the final stop.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    refused = {**config, "api_url": f"http://127.0.0.1:{port}/v2", "max_tries": 2}
    failed = run_tap(tmp_path, {**refused, "max_retry_wait": 0}, check=False)
    assert failed.returncode == 1
    lines = failed.stderr.strip().splitlines()
    assert next(line for line in lines if "Retrying" in line).endswith(
        "(try 1 of 2 failed): ConnectionError (Connection refused)"
    )
    assert "failed through every try (the `max_tries` setting) with ConnectionError " in lines[-1]
    assert "(Connection refused)" in lines[-1]


def test_a_connection_test_logs_no_error_when_it_passes_and_one_paragraph_when_not(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    passed = run_cli(tmp_path, config, "--test")
    assert passed.returncode == 0
    assert "| ERROR " not in passed.stderr
    assert "| WARNING " not in passed.stderr

    failed = run_cli(tmp_path, {**config, "api_key": "live_wrong_key"}, "--test")
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    errors = [line for line in failed.stderr.splitlines() if "| ERROR " in line]
    assert len(errors) == 1
    assert "tap-scale stopped: Scale answered GET /v2/projects with HTTP 401" in errors[0]
    assert "live_wrong_key" not in failed.stderr
    assert len(simulator.requests) > 1


def test_a_host_name_that_does_not_resolve_stops_at_once_without_retries(
    config: dict[str, t.Any], tmp_path: Path
) -> None:
    # `.invalid` never resolves (RFC 6761).
    settings = {**config, "api_url": "https://api.scale-typo.invalid/v2"}
    run = run_tap(tmp_path, settings, check=False)
    assert run.returncode == 1
    assert "Retrying" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert "tap-scale stopped: The `api_url` setting cannot be used: its host name" in last
    assert "'api.scale-typo.invalid' does not resolve" in last
    assert not [m for m in run.messages if m["type"] == "RECORD"]


@pytest.mark.readme("Logging")
def test_logging_is_quieted_or_raised_as_the_readme_says(
    config: dict[str, t.Any], tmp_path: Path
) -> None:
    """Each command of the README's Logging section, run against the simulator."""
    (yaml,) = [b for b in readme.blocks() if b.heading == "Logging" and b.language == "yaml"]
    (tmp_path / "logging.yaml").write_text(yaml.text)
    (tmp_path / "config.json").write_text(json.dumps(config))
    (shell,) = readme.owned_blocks("Logging", readme.claims())
    commands = [line for line in shell.text.splitlines() if line.strip()]
    assert len(commands) == 2
    synced = len(run_tap(tmp_path, config).records("tasks"))

    warnings_only = _shell(tmp_path, commands[0])
    assert warnings_only.returncode == 0
    assert warnings_only.stderr == ""
    assert _tasks_in(tmp_path / "messages.jsonl") == synced

    no_metrics = _shell(tmp_path, commands[1])
    assert no_metrics.returncode == 0
    assert "METRIC" not in no_metrics.stderr
    assert "Sync finished in" in no_metrics.stderr
    assert _tasks_in(tmp_path / "messages.jsonl") == synced

    silent = run_tap(tmp_path, {**config, "progress_interval": 0, "page_size": 2})
    assert "records so far" not in silent.stderr
    assert "Sync finished in" in silent.stderr


def run_cli(tmp_path: Path, config: dict[str, t.Any], *args: str) -> TapRun:
    """The tap's command line with these settings and arguments."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    done = subprocess.run(
        [*TAP, "--config", str(path), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return TapRun(done.returncode, done.stdout, done.stderr)


def _tasks_in(messages: Path) -> int:
    lines = messages.read_text().splitlines()
    return sum(
        1 for line in lines if json.loads(line).get("stream") == "tasks" and '"RECORD"' in line
    )


def _shell(tmp_path: Path, command: str) -> subprocess.CompletedProcess[str]:
    # The README's `tap-scale` is the one installed beside the tests' Python.
    command = command.replace("tap-scale ", f"{TAP[0]} ", 1)
    return subprocess.run(
        ["sh", "-c", command],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
