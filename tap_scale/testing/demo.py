"""``make demo``: the simulated Scale API, ``meltano run tap-scale target-duckdb``, a report.

The pipeline runs twice: a full sync into a local DuckDB file, then, after the simulated Scale has
completed, added and delivered a few tasks, an incremental one that says how many tasks were new.
The report is read from the DuckDB file, as an analyst would. The demo keeps its state in a Meltano
system database of its own (`.demo/meltano.db`), apart from a user's pipelines, and starts afresh
each time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import typing as t
from pathlib import Path

import duckdb

from tap_scale.testing import ScaleSimulator

WAREHOUSE = Path(".demo/warehouse.duckdb")
SYSTEM_DATABASE = WAREHOUSE.with_name("meltano.db")
MELTANO = os.environ.get("MELTANO", ".meltano-venv/bin/meltano")

TASKS_BY_PROJECT_AND_STATUS = """
    SELECT p.name AS project, t.status, count(*) AS tasks
    FROM scale.tasks t LEFT JOIN scale.projects p ON p.id = t.project
    GROUP BY ALL ORDER BY ALL
"""
DELIVERIES = """
    SELECT count(DISTINCT d.id) AS deliveries, count(dt.task_id) AS delivered_tasks
    FROM scale.deliveries d LEFT JOIN scale.delivery_tasks dt ON dt.delivery = d.id
"""
# Every integer annotation on a model's message, averaged per model: unnest the task's threads,
# their turns' messages, and those messages' annotations (JSON columns in DuckDB).
INTEGER_ANNOTATION_MEANS = """
    WITH messages AS (
        SELECT unnest(json_extract(threads, '$[*].turns[*].messages[*]')) AS message
        FROM scale.tasks
    ), annotations AS (
        SELECT message ->> '$.model_parameters.model' AS model,
               unnest(json_extract(message, '$.annotations[*]')) AS annotation
        FROM messages
    )
    SELECT model, annotation ->> '$.key' AS annotation,
           round(avg((annotation ->> '$.value')::DOUBLE), 2) AS mean, count(*) AS rated
    FROM annotations
    WHERE annotation ->> '$.type' = 'integer' AND model IS NOT NULL
    GROUP BY ALL ORDER BY ALL
"""


def meltano_run(simulator: ScaleSimulator) -> None:
    """``meltano run tap-scale target-duckdb`` against the simulator, into the demo's file."""
    command = [MELTANO, "run", "tap-scale", "target-duckdb"]
    env = {
        **os.environ,
        "TAP_SCALE_API_URL": simulator.url,
        "TAP_SCALE_API_KEY": simulator.api_key,
        "TARGET_DUCKDB_FILEPATH": str(WAREHOUSE),
        "MELTANO_DATABASE_URI": f"sqlite:///{SYSTEM_DATABASE.resolve()}",
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    print(f"\n$ meltano {' '.join(command[1:])}", flush=True)
    log = WAREHOUSE.with_suffix(".log")
    with log.open("a") as output:
        done = subprocess.run(command, env=env, stdout=output, stderr=output, check=False)
    if done.returncode != 0:
        sys.exit(f"meltano run failed (exit {done.returncode}); its log is in {log}")


def query(sql: str) -> tuple[list[str], list[tuple[t.Any, ...]]]:
    """Column names and rows of a query on the demo's warehouse, read-only."""
    with duckdb.connect(str(WAREHOUSE), read_only=True) as warehouse:
        result = warehouse.sql(sql)
        return result.columns, result.fetchall()


def table(title: str, sql: str) -> None:
    """Print a query's result as a small aligned table."""
    columns, rows = query(sql)
    cells = [columns, *[[str(value) for value in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    print(f"\n{title}")
    for row in cells:
        print(
            "  " + "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True))
        )


def task_ids() -> set[str]:
    """Every task id in the warehouse."""
    return {row[0] for row in query("SELECT task_id FROM scale.tasks")[1]}


def main() -> None:
    """Run the demo end to end."""
    WAREHOUSE.parent.mkdir(exist_ok=True)
    for leftover in (WAREHOUSE, WAREHOUSE.with_suffix(".log"), SYSTEM_DATABASE):
        leftover.unlink(missing_ok=True)
    with ScaleSimulator(projects=3, tasks_per_project=120) as simulator:
        print(f"Simulated Scale API at {simulator.url}; warehouse {WAREHOUSE}")
        meltano_run(simulator)
        table("Tasks per project and status", TASKS_BY_PROJECT_AND_STATUS)
        table("Deliveries", DELIVERIES)
        table("Mean of each integer annotation, per model", INTEGER_ANNOTATION_MEANS)
        before = task_ids()

        project = simulator.projects[0]
        completed = simulator.complete_tasks(project["id"], 5)
        added = simulator.add_tasks(project["id"], 3)
        delivered = simulator.deliver(project["id"], [t["task_id"] for t in [*completed, *added]])
        print(
            f"\nMeanwhile at Scale: in {project['name']!r}, {len(completed)} pending tasks were "
            f"completed, {len(added)} new tasks were completed, and all {delivered['task_count']} "
            f"were delivered in {delivered['name']!r}."
        )
        meltano_run(simulator)
        new = task_ids() - before
        print(f"\nIncremental run: {len(new)} new tasks in the warehouse ({len(before)} before).")
        table("Deliveries", DELIVERIES)


if __name__ == "__main__":
    main()
