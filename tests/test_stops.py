"""Every stop is known to the scheduler: signals, a closed or full stdout, each with its exit code.

A scheduler learns how a run ended from its exit code alone, and a target from the messages it
got: a run that was interrupted must not exit 0, and no message may be cut in half.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import termios
import time
import typing as t
from pathlib import Path

import pytest

from tests.tap_run import run_tap, tap_args
from tests.test_resilience import keyed

if t.TYPE_CHECKING:
    from tap_scale.testing import ScaleSimulator

F_GETPIPE_SZ = 1032  # Linux's fcntl for a pipe's capacity


def parsed(output: bytes) -> list[dict[str, t.Any]]:
    """Every message of a run's stdout; fails if a line is cut or not JSON."""
    text = output.decode()
    assert not text or text.endswith("\n"), f"the output ends in a cut message: {text[-200:]!r}"
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
def test_a_signal_mid_sync_writes_the_state_and_exits_with_the_signals_code(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path, signum: int, code: int
) -> None:
    simulator.faults.slow_seconds = 0.02  # slow enough that the signal lands mid-sync
    stderr = tmp_path / "stderr.log"
    with (
        stderr.open("wb") as log,
        subprocess.Popen(tap_args(tmp_path, config), stdout=subprocess.PIPE, stderr=log) as process,
    ):
        assert process.stdout is not None
        head, records = [], 0
        while records < 30:
            head.append(process.stdout.readline())
            records += b'"type":"RECORD"' in head[-1]
        process.send_signal(signum)
        output = b"".join(head) + process.stdout.read()
    messages = parsed(output)

    assert process.returncode == code
    assert messages[-1]["type"] == "STATE", "the state is written last"
    log_text = stderr.read_text()
    assert f"interrupted by {signal.Signals(signum).name} (exit code {code})" in log_text
    assert "Gracefully shutting down" not in log_text
    assert "Traceback" not in log_text

    simulator.faults.slow_seconds = 0
    resumed = run_tap(tmp_path, config, state=messages[-1]["value"])
    emitted = {**keyed(messages), **keyed(resumed.messages)}
    completed = simulator.tasks(status="completed")
    assert {key[1] for key in emitted if key[0] == "tasks"} == {t["task_id"] for t in completed}


def test_a_signal_while_the_target_reads_no_more_waits_for_a_whole_message(
    config: dict[str, t.Any], tmp_path: Path
) -> None:
    """The tap is blocked writing into a full pipe when SIGTERM comes: no message is cut."""
    stderr = tmp_path / "stderr.log"
    with (
        stderr.open("wb") as log,
        subprocess.Popen(tap_args(tmp_path, config), stdout=subprocess.PIPE, stderr=log) as process,
    ):
        assert process.stdout is not None
        _wait_until_blocked(process.stdout.fileno(), process)
        process.send_signal(signal.SIGTERM)
        output = process.stdout.read()
    messages = parsed(output)
    assert process.returncode == 143
    assert messages[-1]["type"] == "STATE"
    assert "interrupted by SIGTERM" in stderr.read_text()


def _wait_until_blocked(pipe: int, process: subprocess.Popen[bytes]) -> None:
    """Wait until the tap's output pipe holds most of its capacity and stops filling."""
    capacity = fcntl.fcntl(pipe, F_GETPIPE_SZ)
    waiting, before, still_since = array.array("i", [0]), -1, time.monotonic()
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "the tap never filled its output pipe"
        assert process.poll() is None, "the tap ended before its output filled a pipe"
        fcntl.ioctl(pipe, termios.FIONREAD, waiting)
        if waiting[0] != before:
            before, still_since = waiting[0], time.monotonic()
        elif waiting[0] > capacity // 2 and time.monotonic() - still_since > 1:
            return  # a tap that writes a record a millisecond has been blocked for a second
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("output", "said"),
    [
        ("closed by its reader", "its output was closed"),
        ("a full disk", "no space left"),
        ("no stdout at all", "no standard output"),
    ],
)
def test_output_that_cannot_be_written_is_one_paragraph_and_exit_1(
    config: dict[str, t.Any], tmp_path: Path, output: str, said: str
) -> None:
    args = tap_args(tmp_path, config)
    if output == "no stdout at all":
        args = ["sh", "-c", 'exec "$@" >&-', "sh", *args]  # file descriptor 1 closed
    with contextlib.ExitStack() as stack:
        stdout = (
            stack.enter_context(Path("/dev/full").open("wb"))
            if output == "a full disk"
            else subprocess.PIPE
        )
        process = stack.enter_context(subprocess.Popen(args, stdout=stdout, stderr=subprocess.PIPE))
        assert process.stderr is not None
        if output == "closed by its reader":
            assert process.stdout is not None
            process.stdout.readline()
            process.stdout.close()  # the target died
        stderr = process.stderr.read().decode()
    assert process.returncode == 1
    stops = [line for line in stderr.splitlines() if "tap-scale stopped" in line]
    assert len(stops) == 1, stderr[-2000:]
    assert said in stops[0]
    assert "Traceback" not in stderr
    assert "Exception ignored" not in stderr


def _signal_when(
    args: list[str],
    signum: int,
    ready: t.Callable[[str], bool],
    env: dict[str, str] | None = None,
    after: float = 0.0,
) -> tuple[int, bytes, str]:
    """Run the tap, signal it ``after`` seconds after a line of its stderr is ``ready``."""
    environment = {**os.environ, **(env or {})}
    with subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        lines = []
        for raw in process.stderr:
            lines.append(raw.decode())
            if ready(lines[-1]):
                time.sleep(after)
                process.send_signal(signum)
                break
        else:
            pytest.fail("the tap ended before the moment to signal it: " + "".join(lines)[-2000:])
        stderr = "".join(lines) + process.stderr.read().decode()
        output = process.stdout.read()
    return process.returncode, output, stderr


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
def test_a_signal_while_the_tap_starts_is_one_paragraph_and_the_signals_code(
    config: dict[str, t.Any], tmp_path: Path, signum: int, code: int
) -> None:
    """Signalled while Python imports the SDK, before the tap could install its handlers."""
    # Python names each module on stderr as its import ends: the SDK is half imported.
    returncode, output, stderr = _signal_when(
        tap_args(tmp_path, config),
        signum,
        lambda line: "singer_sdk." in line,
        env={"PYTHONPROFILEIMPORTTIME": "1"},
    )
    assert returncode == code, stderr[-2000:]
    assert output == b""
    name = signal.Signals(signum).name
    said = f"tap-scale stopped: interrupted by {name} (exit code {code}) before it wrote any"
    assert said in stderr
    assert "Traceback" not in stderr
    assert "KeyboardInterrupt" not in stderr


def test_a_signal_while_the_state_is_checked_writes_nothing_and_exits_non_zero(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    """Signalled as the tap is made, where the SDK's own handler exited 0 with an empty state."""
    # A state large enough that checking and loading it takes a while, as a big project's does.
    partitions = [
        {
            "context": {"project": f"project_{number:024x}", "status": "completed"},
            "replication_key": "completed_at",
            "replication_key_value": "2025-01-01T00:00:00.000000Z",
        }
        for number in range(60_000)
    ]
    state = {"bookmarks": {"tasks": {"partitions": partitions}}}
    # Logged as the settings are checked; half a second later the tap is reading the state.
    last_child = "Added 'delivery_task_preferences' as child stream"
    returncode, output, stderr = _signal_when(
        tap_args(tmp_path, config, state=state),
        signal.SIGTERM,
        lambda line: last_child in line,
        after=0.5,
    )
    assert returncode == 143, stderr[-2000:]
    assert output == b"", "a state written now would lose the state the run started from"
    assert "before it wrote any record or state: the next run starts from the same" in stderr
    assert "Gracefully shutting down" not in stderr
    assert "Traceback" not in stderr
    assert simulator.requests == []


def test_a_catalog_that_cannot_be_written_is_one_paragraph_and_exit_1(
    config: dict[str, t.Any], tmp_path: Path
) -> None:
    args = [*tap_args(tmp_path, config), "--discover"]
    with Path("/dev/full").open("wb") as full:
        done = subprocess.run(args, stdout=full, stderr=subprocess.PIPE, check=False, text=True)
    assert done.returncode == 1
    stops = [line for line in done.stderr.splitlines() if "tap-scale stopped" in line]
    assert len(stops) == 1, done.stderr[-2000:]
    assert "no space left on the device" in stops[0]
    assert "Traceback" not in done.stderr


def test_an_error_nothing_else_names_is_still_one_paragraph_and_exit_1(
    config: dict[str, t.Any], tmp_path: Path
) -> None:
    # The SDK lets a stream map expression's own errors through, as they are.
    maps = {"tasks": {"__filter__": "1 / 0"}}
    run = run_tap(tmp_path, {**config, "stream_maps": maps}, check=False)
    assert run.returncode == 1
    stops = [line for line in run.stderr.splitlines() if "tap-scale stopped" in line]
    assert len(stops) == 1, run.stderr[-2000:]
    assert "a stream map failed on a record (stream tasks" in stops[0]
    assert "ZeroDivisionError: division by zero" in stops[0]
    assert "Fix the `stream_maps` setting" in stops[0]
    assert "Traceback" not in run.stderr
