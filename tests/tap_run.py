"""The tap run as a user runs it: its CLI in a subprocess, its Singer messages parsed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import typing as t
from dataclasses import dataclass, field
from pathlib import Path

from tap_scale.models import parse_timestamp

if t.TYPE_CHECKING:
    from datetime import datetime

# The console script a user types, from the environment running the tests.
TAP = [str(Path(sys.executable).with_name("tap-scale"))]


@dataclass
class TapRun:
    """What one run of the tap printed: its Singer messages, its log and its exit code."""

    returncode: int
    stdout: str
    stderr: str
    messages: list[dict[str, t.Any]] = field(default_factory=list)

    def records(self, stream: str = "tasks") -> list[dict[str, t.Any]]:
        """The records emitted for one stream, in order."""
        return [
            m["record"] for m in self.messages if m["type"] == "RECORD" and m["stream"] == stream
        ]

    @property
    def states(self) -> list[dict[str, t.Any]]:
        """Every STATE message's value, in order."""
        return [m["value"] for m in self.messages if m["type"] == "STATE"]

    @property
    def state(self) -> dict[str, t.Any]:
        """The last state the run emitted (what an orchestrator would save)."""
        return self.states[-1]

    def schema(self, stream: str = "tasks") -> dict[str, t.Any]:
        """The schema the run announced for a stream."""
        return next(
            m["schema"] for m in self.messages if m["type"] == "SCHEMA" and m["stream"] == stream
        )


def tap_args(
    tmp_path: Path,
    config: dict[str, t.Any],
    *,
    state: dict[str, t.Any] | None = None,
    catalog: dict[str, t.Any] | None = None,
) -> list[str]:
    """The command line of a run with these files, as Meltano would write them."""
    args = [*TAP, "--config", _write(tmp_path / "config.json", config)]
    if state is not None:
        args += ["--state", _write(tmp_path / "state.json", state)]
    if catalog is not None:
        args += ["--catalog", _write(tmp_path / "catalog.json", catalog)]
    return args


def run_tap(
    tmp_path: Path,
    config: dict[str, t.Any],
    *,
    state: dict[str, t.Any] | None = None,
    catalog: dict[str, t.Any] | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> TapRun:
    """Run ``tap-scale`` in a subprocess with these files, as Meltano would, and parse stdout."""
    args = tap_args(tmp_path, config, state=state, catalog=catalog)
    environment = {**os.environ, **(env or {})}
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=300, check=False, env=environment
    )
    run = TapRun(done.returncode, done.stdout, done.stderr)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    run.messages = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return run


def _write(path: Path, content: dict[str, t.Any]) -> str:
    path.write_text(json.dumps(content))
    return str(path)


def discover(tmp_path: Path, config: dict[str, t.Any]) -> dict[str, t.Any]:
    """The catalog ``tap-scale --discover`` prints."""
    args = [*TAP, "--config", _write(tmp_path / "config.json", config), "--discover"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True)
    return t.cast("dict[str, t.Any]", json.loads(done.stdout))


def select(catalog: dict[str, t.Any], *streams: str) -> dict[str, t.Any]:
    """The catalog with exactly these streams selected, as a user would mark it."""
    for entry in catalog["streams"]:
        for metadata in entry["metadata"]:
            if not metadata["breadcrumb"]:
                metadata["metadata"]["selected"] = entry["tap_stream_id"] in streams
    return catalog


TIMESTAMP_FIELDS = ("created_at", "completed_at")


def canonical(task: dict[str, t.Any]) -> dict[str, t.Any]:
    """A task with its timestamps as moments, so differently written equal times compare equal."""
    out = {"completed_at": None, **task}  # the tap emits a null where Scale omits it
    for name in TIMESTAMP_FIELDS:
        if out.get(name) is not None:
            out[name] = parse_timestamp(out[name])
    for thread in out.get("threads") or ():
        for submission in thread.get("submissions") or ():
            submission["submitted_at"] = parse_timestamp(submission["submitted_at"])
    return out


def by_id(tasks: t.Iterable[dict[str, t.Any]]) -> dict[str, dict[str, t.Any]]:
    """Tasks by id, in canonical form."""
    return {task["task_id"]: canonical(task) for task in tasks}


def moment(value: str | None) -> datetime | None:
    """A timestamp as the moment it names, whichever way it is written."""
    return None if value is None else parse_timestamp(value)


def run_until_killed(
    tmp_path: Path,
    config: dict[str, t.Any],
    records: int,
    *,
    state: dict[str, t.Any] | None = None,
    catalog: dict[str, t.Any] | None = None,
) -> list[dict[str, t.Any]]:
    """Run the tap, SIGKILL it after this many records, and return every message it got out."""
    command = tap_args(tmp_path, config, state=state, catalog=catalog)
    messages, seen = [], 0
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            messages.append(json.loads(line))
            seen += messages[-1]["type"] == "RECORD"
            if seen == records:
                process.send_signal(signal.SIGKILL)
                break
        # What was written before the kill still reaches the target: read it to the end. A
        # message the kill cut mid-write has no newline; a target never receives it whole.
        messages += [json.loads(line) for line in process.stdout if line.endswith("\n")]
    assert process.returncode == -signal.SIGKILL
    return messages
