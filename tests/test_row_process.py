"""The RLHF rows derived in a second process: the same rows, every one written, every stop told.

`tap_scale.row_process` writes every message once it runs, so these runs check what a target
gets: the rows the tap derives by itself on one core, whole lines only, the state after the rows
it covers, and the stop of either process as one paragraph and a non-zero exit.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import time
import typing as t
from pathlib import Path

import pytest

from tests.tap_run import tap_args
from tests.test_resilience import keyed
from tests.test_stops import _wait_until_blocked, parsed

if t.TYPE_CHECKING:
    from tap_scale.testing import ScaleSimulator

ROW_STREAMS = ("task_messages", "task_annotations", "task_preferences")
# What the tap logs as it starts the process: its pid, for the tests that stop it.
STARTED = re.compile(r"derived in a second process \(pid (\d+)\)")


def _row_process_pid(stderr: t.IO[bytes]) -> tuple[int, list[str]]:
    """Read the tap's log up to the line that starts the row process: its pid, the lines read."""
    lines = []
    for raw in stderr:
        lines.append(raw.decode())
        if started := STARTED.search(lines[-1]):
            return int(started[1]), lines
    pytest.fail("no row process started: " + "".join(lines)[-2000:])


def _run(args: list[str], *, cores: set[int] | None = None) -> tuple[int, bytes, str]:
    """Run the tap to its end; on these cores only, if given (one: no second process)."""

    def pin() -> None:
        if cores is not None:
            os.sched_setaffinity(0, cores)

    done = subprocess.run(  # noqa: PLW1510 - the exit code is asserted
        args, capture_output=True, timeout=300, preexec_fn=pin
    )
    return done.returncode, done.stdout, done.stderr.decode()


def _comparable(messages: list[dict[str, t.Any]]) -> list[str]:
    """The distinct records and schemas as text, in an order of their own: the two processes
    interleave tasks and rows differently, each message is timed as written, and a task read by
    two windows (on an edge, or in a window cut up while read) is written twice by either."""
    return sorted(
        {
            json.dumps({k: v for k, v in m.items() if k != "time_extracted"}, sort_keys=True)
            for m in messages
            if m["type"] in {"RECORD", "SCHEMA"}
        }
    )


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="a second process needs two cores")
def test_rows_from_the_second_process_are_those_the_tap_derives_itself(
    config: dict[str, t.Any], tmp_path: Path
) -> None:
    args = tap_args(tmp_path, config)  # no catalog: every stream, the row streams too
    code, output, log = _run(args)
    alone_code, alone_output, alone_log = _run(args, cores={0})

    assert code == alone_code == 0, log[-2000:] + alone_log[-2000:]
    assert STARTED.search(log), "with two cores, rows are derived in a second process"
    assert not STARTED.search(alone_log), "on one core, the tap derives rows itself"
    messages, alone = parsed(output), parsed(alone_output)
    assert _comparable(messages) == _comparable(alone)
    assert all(any(m.get("stream") == s for m in messages) for s in ROW_STREAMS)
    # Whoever derived them, the summary counts every row.
    summary = log.strip().splitlines()[-1]
    for stream in ROW_STREAMS:
        count = sum(1 for m in messages if m["type"] == "RECORD" and m["stream"] == stream)
        assert f"{stream} {count:,}" in summary


def _rows_by_task(messages: list[dict[str, t.Any]]) -> dict[str, set[str]]:
    """The annotation ids of each task's rows."""
    rows: dict[str, set[str]] = {}
    for m in messages:
        if m["type"] == "RECORD" and m["stream"] == "task_annotations":
            rows.setdefault(m["record"]["task_id"], set()).add(m["record"]["annotation_id"])
    return rows


def _annotation_ids(simulator: ScaleSimulator) -> dict[str, set[str]]:
    """Every annotation id of every completed task the simulator holds, by task."""
    found: dict[str, set[str]] = {}

    def walk(value: object, into: set[str]) -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                if name == "annotations" and isinstance(item, list):
                    into.update(a["id"] for a in item if isinstance(a, dict) and "id" in a)
                walk(item, into)
        elif isinstance(value, list):
            for item in value:
                walk(item, into)

    for task in simulator.tasks(status="completed"):
        walk(task.get("threads"), found.setdefault(task["task_id"], set()))
    return found


@pytest.mark.parametrize("stop", ["SIGKILL of the tap", "Ctrl-C in a terminal"])
def test_a_stopped_sync_loses_no_row_and_cuts_no_line(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path, stop: str
) -> None:
    """Stopped mid-sync, then resumed from its last state: every annotation lands, whole."""
    simulator.faults.slow_seconds = 0.02  # slow enough that the stop lands mid-sync
    # A session of its own, so that the "terminal's" Ctrl-C reaches the tap's group only.
    with subprocess.Popen(
        tap_args(tmp_path, config),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    ) as process:
        assert process.stdout is not None
        head, records = [], 0
        while records < 200:
            head.append(process.stdout.readline())
            records += b'"type":"RECORD"' in head[-1]
        if stop == "SIGKILL of the tap":
            process.kill()  # the row process writes what it was handed, then ends
        else:
            os.killpg(process.pid, signal.SIGINT)  # as a terminal signals its foreground group
        output = b"".join(head) + process.stdout.read()
    # A message the kill cut while the tap handed it over is never written: every line is whole.
    text = output.decode()
    messages = [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]
    assert text.endswith("\n") or stop == "SIGKILL of the tap"
    if stop == "Ctrl-C in a terminal":
        assert process.returncode == 128 + signal.SIGINT
        assert messages[-1]["type"] == "STATE", "the state is written last, after the rows"
    else:
        assert process.returncode == -signal.SIGKILL
    states = [m["value"] for m in messages if m["type"] == "STATE"]
    assert states, "the sync had written a state before it stopped"
    # Every task written before the stop has its rows (they come first).
    rows = _rows_by_task(messages)
    expected = _annotation_ids(simulator)
    for task_id in {m["record"]["task_id"] for m in messages if m.get("stream") == "tasks"}:
        assert rows.get(task_id, set()) == expected[task_id]

    simulator.faults.slow_seconds = 0
    code, resumed, log = _run(tap_args(tmp_path, config, state=states[-1]))
    assert code == 0, log[-2000:]
    resumed_messages = parsed(resumed)
    emitted = {**keyed(messages), **keyed(resumed_messages)}
    everything = {
        (task_id, annotation_id)
        for task_id, annotations in expected.items()
        for annotation_id in annotations
    }
    landed = {(key[1], key[2]) for key in emitted if key[0] == "task_annotations"}
    assert landed == everything


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="a second process needs two cores")
def test_a_row_process_that_dies_stops_the_sync_with_one_paragraph_and_exit_1(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    simulator.faults.slow_seconds = 0.02
    with subprocess.Popen(
        tap_args(tmp_path, config), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        # Read as a target does, all along: a tap whose stdout fills up waits for its reader.
        with concurrent.futures.ThreadPoolExecutor(1) as reader:
            output = reader.submit(process.stdout.read)
            pid, lines = _row_process_pid(process.stderr)
            time.sleep(0.5)  # mid-sync
            os.kill(pid, signal.SIGKILL)
            log = "".join(lines) + process.stderr.read().decode()
            written = output.result(timeout=60)
    parsed(written)  # whole lines only
    assert process.returncode == 1
    stops = [line for line in log.splitlines() if "tap-scale stopped" in line]
    assert len(stops) == 1, log[-2000:]
    assert "derives the RLHF rows" in stops[0]
    assert "stopped by SIGKILL" in stops[0]
    assert "Traceback" not in log


def test_a_second_signal_stops_at_once_while_the_target_reads_no_more(
    config: dict[str, t.Any], tmp_path: Path
) -> None:
    """Blocked on a target that reads no more, the tap waits for neither the target nor the
    row process on a second signal: it exits, and the process writes what it has."""
    stderr = tmp_path / "stderr.log"
    with (
        stderr.open("wb") as log,
        subprocess.Popen(tap_args(tmp_path, config), stdout=subprocess.PIPE, stderr=log) as process,
    ):
        assert process.stdout is not None
        _wait_until_blocked(process.stdout.fileno(), process)
        process.send_signal(signal.SIGTERM)  # held: the tap is mid-message
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)  # while nothing reads its output
        output = process.stdout.read()
    assert code == 128 + signal.SIGTERM
    parsed(output)  # every line whole: what was handed over, then nothing cut
    log_text = stderr.read_text()
    assert "interrupted by SIGTERM" in log_text
    assert "could not write the state first" in log_text
    assert "Traceback" not in log_text


def test_the_row_process_environment_holds_no_secret(
    simulator: ScaleSimulator, tmp_path: Path
) -> None:
    """A key given in `TAP_SCALE_API_KEY` stays out of the row process's environment."""
    simulator.faults.slow_seconds = 0.02
    config = {"api_url": simulator.url, "page_size": 7}
    environment = {**os.environ, "TAP_SCALE_API_KEY": simulator.api_key}
    with subprocess.Popen(
        [*tap_args(tmp_path, config), "--config", "ENV"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=environment,
    ) as process:
        assert process.stderr is not None
        pid, _ = _row_process_pid(process.stderr)
        held = Path(f"/proc/{pid}/environ").read_bytes()
        process.stderr.read()
    assert process.returncode == 0
    assert simulator.api_key.encode() not in held
    assert b"TAP_SCALE_API_KEY" not in held
