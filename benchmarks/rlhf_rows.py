"""What selecting the RLHF row streams costs: tap-scale with them, next to tasks alone.

`benchmarks.bench` runs this after its own clients, on the same simulator: the tap leg again,
its catalog also selecting the three streams derived from tasks (`task_messages`,
`task_annotations`, `task_preferences`), every message to `/dev/null`. The report gives both
rates and their ratio (the goal: at least 0.6).
"""

from __future__ import annotations

import json
import os
import typing as t
from pathlib import Path

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

ROW_STREAMS = ("task_messages", "task_annotations", "task_preferences")
TASKS_ALONE = "tap-scale"
WITH_ROWS = "tap-scale, tasks + RLHF rows"
GOAL = 0.6


class Run(t.Protocol):
    """What this reads of one of `benchmarks.bench`'s measurements."""

    @property
    def client(self) -> str:
        """Who was measured."""
        ...

    @property
    def problem(self) -> str | None:
        """Why the run does not count, if it does not."""
        ...

    @property
    def tasks_per_second(self) -> float:
        """Tasks moved per wall-clock second."""
        ...


class Setting(t.Protocol):
    """What this reads of one of `benchmarks.bench`'s settings."""

    @property
    def tasks(self) -> int:
        """Completed tasks synced."""
        ...

    @property
    def latency_ms(self) -> float:
        """Milliseconds added to every request."""
        ...


R = t.TypeVar("R", bound=Run)


def with_rows(command: Sequence[str]) -> list[str]:
    """The tap leg's command, its catalog (written beside it) also selecting the row streams."""
    position = list(command).index("--catalog") + 1
    catalog_path = Path(command[position])
    catalog = json.loads(catalog_path.read_text())
    for stream in catalog["streams"]:
        for entry in stream["metadata"]:
            if entry["breadcrumb"] == [] and stream["tap_stream_id"] in ROW_STREAMS:
                entry["metadata"]["selected"] = True
    rows_path = catalog_path.with_name("catalog-rlhf-rows.json")
    rows_path.write_text(json.dumps(catalog, indent=2) + "\n")
    return [*command[:position], str(rows_path), *command[position + 1 :]]


def measure_rows(tap_command: Sequence[str], measure: Callable[..., R]) -> R:
    """Measure the tap leg with the row streams selected, as `measure` measures a client."""
    return measure(client=WITH_ROWS, commands=[with_rows(tap_command)], stdout=Path(os.devnull))


def report(results: Sequence[tuple[Setting, Sequence[Run]]]) -> Iterator[str]:
    """A markdown table of tasks alone next to tasks with the row streams, per setting."""
    yield (
        "| tasks | latency | tasks alone, tasks/s | with RLHF rows, tasks/s "
        f"| ratio (goal ≥ {GOAL}) |"
    )
    yield "|---:|---:|---:|---:|---:|"
    for setting, runs in results:
        by_client = {run.client: run for run in runs}
        alone, rows = by_client.get(TASKS_ALONE), by_client.get(WITH_ROWS)
        if alone is None or rows is None:
            continue
        flag = " ⚠" if alone.problem or rows.problem else ""
        yield (
            f"| {setting.tasks:,} | {setting.latency_ms:g} ms | {alone.tasks_per_second:,.0f} "
            f"| {rows.tasks_per_second:,.0f}{flag} "
            f"| {rows.tasks_per_second / alone.tasks_per_second:.2f} |"
        )
