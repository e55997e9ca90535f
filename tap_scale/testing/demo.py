"""``make demo``: the simulator, tap-scale run against it twice into local files, and a summary.

The first run is a full sync; then the simulated Scale completes and adds a few tasks, and the
second run, given the first run's state, emits only those.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import typing as t
from pathlib import Path

from tap_scale.testing import ScaleSimulator

WORKDIR = Path(".demo")
TAP = str(Path(sys.executable).with_name("tap-scale"))
SHOWN_PARTITIONS = 6


def sync(
    name: str, config: Path, state: dict[str, t.Any] | None, project_names: dict[str, str]
) -> dict[str, t.Any]:
    """Run tap-scale into ``.demo/<name>.singer.jsonl``, print a summary, return its last state."""
    output = WORKDIR / f"{name}.singer.jsonl"
    args = [TAP, "--config", str(config)]
    if state is not None:
        state_file = WORKDIR / f"{name}.state-in.json"
        state_file.write_text(json.dumps(state))
        args += ["--state", str(state_file)]
    with output.open("w") as stdout, (WORKDIR / f"{name}.log").open("w") as stderr:
        subprocess.run(args, stdout=stdout, stderr=stderr, check=True)

    per_stream, per_partition, final_state = read_messages(output)
    print(f"\n== {name}: {sum(per_stream.values())} records -> {output}")
    for stream, count in sorted(per_stream.items()):
        print(f"   {stream:<20} {count:>6} records")
    print("   tasks per project and status:")
    for (project, status), count in sorted(per_partition.items()):
        print(f"     {project_names.get(project, project):<26} {status:<10} {count:>6}")
    print("   final state, one partition a line:")
    for stream, bookmarks in final_state.get("bookmarks", {}).items():
        partitions = bookmarks.get("partitions", [bookmarks])
        for partition in partitions[:SHOWN_PARTITIONS]:
            print(f"     {stream}: {json.dumps(partition)}")
        if len(partitions) > SHOWN_PARTITIONS:
            print(f"     {stream}: ... {len(partitions) - SHOWN_PARTITIONS} more partitions")
    return final_state


def read_messages(
    output: Path,
) -> tuple[collections.Counter[str], collections.Counter[tuple[str, str]], dict[str, t.Any]]:
    """Records per stream, tasks per (project, status), and the last state of a run's output."""
    per_stream: collections.Counter[str] = collections.Counter()
    per_partition: collections.Counter[tuple[str, str]] = collections.Counter()
    final_state: dict[str, t.Any] = {}
    with output.open() as messages:
        for line in messages:
            message = json.loads(line)
            if message["type"] == "RECORD":
                per_stream[message["stream"]] += 1
                if message["stream"] == "tasks":
                    record = message["record"]
                    per_partition[record["project"], record["status"]] += 1
            elif message["type"] == "STATE":
                final_state = message["value"]

    return per_stream, per_partition, final_state


def main() -> None:
    """Run the demo end to end."""
    WORKDIR.mkdir(exist_ok=True)
    with ScaleSimulator(projects=3, tasks_per_project=120) as simulator:
        print(f"Simulated Scale API at {simulator.url} (key {simulator.api_key})")
        config = WORKDIR / "config.json"
        config.write_text(
            json.dumps(
                {
                    "api_url": simulator.url,
                    "api_key": simulator.api_key,
                    "task_statuses": ["completed", "pending"],
                }
            )
        )
        names = {project["id"]: project["name"] for project in simulator.projects}
        state = sync("run-1-full", config, None, names)

        project = simulator.projects[0]["id"]
        completed = simulator.complete_tasks(project, 5)
        added = simulator.add_tasks(project, 3)
        delivery = simulator.deliver(project, [task["task_id"] for task in [*completed, *added]])
        print(
            f"\nMeanwhile at Scale: {len(completed)} pending tasks of {names[project]!r} were "
            f"completed and {len(added)} new completed tasks added, all delivered in "
            f"{delivery['name']!r}. The second run reads "
            "completed tasks from each bookmark (less the lookback, ties included) and pending "
            "tasks, which have no completed_at, in full."
        )
        sync("run-2-incremental", config, state, names)


if __name__ == "__main__":
    main()
