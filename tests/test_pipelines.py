"""End to end: real Meltano running tap-scale into a real PostgreSQL and a real DuckDB file.

Each test runs ``meltano run`` twice, with the simulated Scale completing, adding and delivering
tasks in between, and checks the warehouse against the simulator's truth after each run. Meltano
runs in this checkout's project (its installed plugins) with a system database of the test's own,
so tests leave no state and no runs behind in ``.meltano/meltano.db``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import sqlite3
import subprocess
import typing as t
from pathlib import Path

import duckdb
import pytest

from tests import postgres

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tap_scale.testing import ScaleSimulator

PROJECT_DIR = Path(__file__).resolve().parents[1]
MELTANO = Path(os.environ.get("MELTANO", PROJECT_DIR / ".meltano-venv/bin/meltano"))
PROJECT_DATABASE = PROJECT_DIR / ".meltano/meltano.db"

# Tables by primary key, as the targets create them.
PRIMARY_KEYS = {
    "tasks": "task_id",
    "deliveries": "id",
    "delivery_tasks": "delivery, task_id",
    "projects": "id",
    "batches": "id",
}

# One annotation's value, dug out of the nested threads: jsonb in PostgreSQL...
POSTGRES_ANNOTATION = """
    SELECT a ->> 'value' FROM scale.tasks t,
        unnest(t.threads) th,
        jsonb_array_elements(th -> 'turns') tu,
        jsonb_array_elements(tu -> 'messages') m,
        jsonb_array_elements(m -> 'annotations') a
    WHERE t.task_id = %s AND a ->> 'id' = %s
"""
# ...and JSON in DuckDB.
DUCKDB_ANNOTATION = """
    SELECT a ->> '$.value' FROM (
        SELECT unnest(json_extract(threads, '$[*].turns[*].messages[*].annotations[*]')) AS a
        FROM scale.tasks WHERE task_id = ?
    ) WHERE a ->> '$.id' = ?
"""

Query = t.Callable[[str, tuple[t.Any, ...]], list[tuple[t.Any, ...]]]


@pytest.fixture(scope="module")
def meltano() -> Path:
    """Meltano, with the tap and targets of meltano.yml installed (``make test`` does that)."""
    if not MELTANO.exists() or not (PROJECT_DIR / ".meltano/.installed").exists():
        pytest.skip(f"Meltano is not installed at {MELTANO}: run the tests with `make test`")
    return MELTANO


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A database of its own on the local PostgreSQL, dropped afterwards."""
    with postgres.scratch_database() as name:
        yield name


def project_history() -> list[tuple[t.Any, ...]]:
    """The state ids and runs the project's own system database holds."""
    if not PROJECT_DATABASE.exists():
        return []
    with contextlib.closing(sqlite3.connect(PROJECT_DATABASE)) as database:
        return [
            *database.execute("SELECT 'state', state_id FROM state"),
            *database.execute("SELECT 'run', id FROM runs"),
        ]


@pytest.fixture
def system_database(tmp_path: Path) -> Iterator[str]:
    """A Meltano system database of the test's own; the project's is left as it was."""
    before = project_history()
    yield f"sqlite:///{tmp_path / 'meltano.db'}"
    assert project_history() == before, "a test wrote to the project's .meltano/meltano.db"


def meltano_run(
    meltano: Path, loader: str, simulator: ScaleSimulator, system_database: str, **settings: str
) -> None:
    """``meltano run tap-scale <loader>`` against the simulator, with this run's settings."""
    env = {
        **os.environ,
        "TAP_SCALE_API_URL": simulator.url,
        "TAP_SCALE_API_KEY": simulator.api_key,
        "MELTANO_DATABASE_URI": system_database,
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        **settings,
    }
    command = [str(meltano), "run", "tap-scale", loader]
    # Meltano writes a run's discovered catalog into the project's `.meltano/run/`: two runs at
    # once in this project (tests on two pytest-xdist workers) would read each other's half-
    # written file. One run at a time, across processes.
    with (PROJECT_DIR / ".meltano/run.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = subprocess.run(
            command,
            cwd=PROJECT_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-5000:]
    assert "Traceback" not in done.stderr, done.stderr[-5000:]


def change_the_world(simulator: ScaleSimulator) -> None:
    """What happens at Scale between two runs: tasks completed, added, and delivered."""
    project = simulator.projects[0]["id"]
    completed = simulator.complete_tasks(project, 4)
    added = simulator.add_tasks(project, 6)
    simulator.deliver(project, [task["task_id"] for task in [*completed, *added]])


def assert_warehouse_holds_the_truth(
    simulator: ScaleSimulator, query: Query, annotation_sql: str
) -> None:
    """Row counts equal Scale's, no primary key twice, and nested annotations are queryable."""
    truth = {
        "tasks": len(simulator.tasks(status="completed")),
        "deliveries": len(simulator.deliveries()),
        "delivery_tasks": sum(
            len(simulator.delivery_tasks(d["id"])) for d in simulator.deliveries()
        ),
        "projects": len(simulator.projects),
        "batches": len(simulator.batches()),
    }
    for table, expected in truth.items():
        assert query(f"SELECT count(*) FROM scale.{table}", ())[0][0] == expected, table  # noqa: S608
        key = PRIMARY_KEYS[table]
        twice = f"SELECT {key} FROM scale.{table} GROUP BY {key} HAVING count(*) > 1"  # noqa: S608
        assert query(twice, ()) == [], f"a primary key of {table} appears twice"

    task, annotation = _an_integer_annotation(simulator)
    assert query(annotation_sql, (task["task_id"], annotation["id"])) == [
        (str(annotation["value"]),)
    ]


def _an_integer_annotation(simulator: ScaleSimulator) -> tuple[dict[str, t.Any], dict[str, t.Any]]:
    for task in simulator.tasks(status="completed"):
        for thread in task.get("threads") or ():
            for turn in thread["turns"]:
                for message in turn["messages"]:
                    for annotation in message.get("annotations", ()):
                        if annotation.get("type") == "integer" and "value" in annotation:
                            return task, annotation
    pytest.fail("the simulator holds no integer annotation on a message")


def postgres_query(database: str) -> Query:
    return lambda statement, params: postgres.query(database, statement, params)


def duckdb_query(path: Path) -> Query:
    def query(statement: str, params: tuple[t.Any, ...]) -> list[tuple[t.Any, ...]]:
        with duckdb.connect(str(path), read_only=True) as connection:
            return connection.execute(statement, list(params)).fetchall()

    return query


def test_meltano_into_postgres_twice_matches_scale(
    meltano: Path, simulator: ScaleSimulator, postgres_database: str, system_database: str
) -> None:
    # No password: meltano.yml's own defaults load a server that trusts local connections.
    settings = {"TARGET_POSTGRES_DATABASE": postgres_database}
    query = postgres_query(postgres_database)

    meltano_run(meltano, "target-postgres", simulator, system_database, **settings)
    assert_warehouse_holds_the_truth(simulator, query, POSTGRES_ANNOTATION)

    change_the_world(simulator)
    meltano_run(meltano, "target-postgres", simulator, system_database, **settings)
    assert_warehouse_holds_the_truth(simulator, query, POSTGRES_ANNOTATION)


def test_meltano_into_duckdb_twice_matches_scale_to_the_last_row(
    meltano: Path, simulator: ScaleSimulator, system_database: str, tmp_path: Path
) -> None:
    # Every row counted: target-duckdb with a duckdb >= 1.3 would lose each batch's first row.
    warehouse = tmp_path / "warehouse.duckdb"
    settings = {"TARGET_DUCKDB_FILEPATH": str(warehouse)}
    query = duckdb_query(warehouse)

    meltano_run(meltano, "target-duckdb", simulator, system_database, **settings)
    assert_warehouse_holds_the_truth(simulator, query, DUCKDB_ANNOTATION)

    change_the_world(simulator)
    meltano_run(meltano, "target-duckdb", simulator, system_database, **settings)
    assert_warehouse_holds_the_truth(simulator, query, DUCKDB_ANNOTATION)


def test_stream_maps_and_flattening_from_meltano_config_reach_postgres(
    meltano: Path, simulator: ScaleSimulator, postgres_database: str, system_database: str
) -> None:
    stream_maps = {
        "tasks": {"sensitive_content_reports": "__NULL__", "task_url": "'scale:' + task_id"},
    }
    meltano_run(
        meltano,
        "target-postgres",
        simulator,
        system_database,
        TARGET_POSTGRES_DATABASE=postgres_database,
        TAP_SCALE_STREAM_MAPS=json.dumps(stream_maps),
        TAP_SCALE_FLATTENING_ENABLED="true",
        TAP_SCALE_FLATTENING_MAX_DEPTH="1",
    )
    query = postgres_query(postgres_database)
    columns: Callable[[str], set[str]] = lambda table: {  # noqa: E731
        row[0]
        for row in query(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'scale' AND table_name = %s",
            (table,),
        )
    }
    assert "task_url" in columns("tasks")
    assert "sensitive_content_reports" not in columns("tasks")
    # A nested object with known fields became one column per field.
    assert {"metadata__task_count", "metadata__turn_count"} <= columns("dataset_deliveries")
    task_id = simulator.tasks(status="completed")[0]["task_id"]
    assert query("SELECT task_url FROM scale.tasks WHERE task_id = %s", (task_id,)) == [
        (f"scale:{task_id}",)
    ]


def test_postgres_tests_fail_under_ci_and_skip_elsewhere_without_a_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nowhere = "host=127.0.0.1 port=1 user=postgres connect_timeout=5"  # nothing listens on port 1
    monkeypatch.setenv("CI", "true")
    with (
        pytest.raises(pytest.fail.Exception, match="CI must load a real PostgreSQL"),
        postgres.scratch_database(nowhere),
    ):
        pass
    monkeypatch.delenv("CI")
    with (
        pytest.raises(
            pytest.skip.Exception, match=re.escape(f"no PostgreSQL reachable as '{nowhere}'")
        ),
        postgres.scratch_database(nowhere),
    ):
        pass
