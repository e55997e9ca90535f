"""End to end: real Meltano running tap-scale into target-snowflake, loading an emulated Snowflake.

The README's Snowflake section runs as written, in a scratch copy of this checkout (a reader's
clone, with its own ``.meltano/``): ``meltano install target-snowflake``, the ``meltano config
set`` lines (a key pair made here for ``rsa_key.p8``), and ``meltano run tap-scale
target-snowflake``, the project's own definition from PyPI. Then Scale completes, adds and delivers
tasks, and the run goes again. After each run every stream's row count must equal Scale's truth,
no primary key may appear twice, and the columns must have Snowflake's types. Then the README's
RLHF queries, and the Snowflake section's own, run in the emulator and must tell the truth.

What is real: Meltano, tap-scale, target-snowflake 0.20.4 with the SDK, snowflake-sqlalchemy and
Snowflake's Python connector as they install; the connector's login (a JWT from the key pair), its
REST calls, the PUT of each batch's gzipped JSON file over HTTP, and every statement the target
writes. What is emulated, and how (tests/snowflake_emulator.py, tests/snowflake_address.py):

- Snowflake itself: fakesnow's server, Snowflake's SQL on DuckDB (``.fakesnow-venv/``). The
  connector reaches it because a module in the target's virtualenv gives every connection the
  emulator's host, port and ``http``: the target has no setting for them.
- The user stage ``@~`` that the target loads through (fakesnow has none): a named stage of
  fakesnow's; the target's MERGE subquery on the staged files runs first, into a table, and its
  MERGE from that table. ``REMOVE`` deletes the files; ``DROP FILE FORMAT`` is answered as done.
- The database ``RAW`` is made at login (Snowflake would refuse a database that does not exist).

Not proven here: authentication (any key is accepted), roles, warehouses, Snowflake's own MERGE
and ``COPY INTO`` engine (only the statements' text and their results on DuckDB), and the load
methods ``append-only`` and ``overwrite`` (COPY INTO from the stage, which the emulator lacks).
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import typing as t
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import snowflake.connector
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tap_scale import task_rows
from tap_scale.tap import TapScale
from tap_scale.testing import ScaleSimulator
from tests import readme
from tests import test_pipelines as pipelines
from tests import test_rlhf_pipelines as rlhf
from tests.postgres import skip_unless_ci

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import msgspec
    from snowflake.connector import SnowflakeConnection

PROJECT_DIR = readme.PROJECT_DIR
EMULATOR_PYTHON = PROJECT_DIR / ".fakesnow-venv/bin/python"
SECTION = ("Snowflake",)
DATABASE = "RAW"  # as the README's `meltano config set target-snowflake database` says
INSTALL = "meltano install target-snowflake"
# The catalog's streams, and what each stream's rows are made of in Scale's raw tasks.
STREAMS = {
    stream.name: stream for stream in TapScale(config={"api_key": "test_x"}).streams.values()
}
ROWS: dict[str, Callable[[dict[str, t.Any]], t.Iterable[msgspec.Struct]]] = {
    "messages": task_rows.message_rows,
    "annotations": task_rows.annotation_rows,
    "preferences": task_rows.preference_rows,
}

meltano = pipelines.meltano


def unavailable(reason: str) -> t.NoReturn:
    """Skip for want of the emulator, or fail where CI promises one."""
    skip_unless_ci(reason, "load the emulated Snowflake")


@pytest.fixture
def emulator() -> Iterator[str]:
    """The emulated Snowflake, serving on loopback for one test; yields its URL."""
    if not EMULATOR_PYTHON.exists():
        unavailable(
            f"fakesnow is not installed at {EMULATOR_PYTHON.parent.parent} (it needs Python 3.11+; "
            "`make test` installs it where there is one)"
        )
    with subprocess.Popen(
        [EMULATOR_PYTHON, "-m", "tests.snowflake_emulator"],
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], 60)
        line = server.stdout.readline() if ready else ""
        if not line.startswith("url="):
            server.kill()
            pytest.fail(f"the emulator did not start: {line}{server.communicate()[1][-3000:]}")
        try:
            yield line.strip().removeprefix("url=")
        finally:
            server.terminate()
            server.communicate(timeout=30)


@pytest.fixture
def scale() -> Iterator[ScaleSimulator]:
    """The account of the RLHF queries' tests: prompts that several raters saw."""
    with ScaleSimulator(seed=0, tasks_per_project=40) as simulator:
        yield simulator


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A reader's clone: this checkout's working tree, and a key pair's private key beside it."""
    clone = readme.copy_checkout(tmp_path / "tap-scale")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (clone / "rsa_key.p8").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return clone


class Reader:
    """Runs the README's Snowflake commands in the clone, against the simulator and the emulator."""

    def __init__(self, clone: Path, scale: ScaleSimulator, emulator: str) -> None:
        self.clone = clone
        inherited = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(
                ("MELTANO_", "TAP_SCALE_", "TARGET_", "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")
            )
        }
        self.env = {
            **inherited,
            "PATH": os.pathsep.join([str(pipelines.MELTANO.parent), inherited["PATH"]]),
            "TAP_SCALE_API_URL": scale.url,
            "TAP_SCALE_API_KEY": scale.api_key,
            "SNOWFLAKE_EMULATOR_URL": emulator,
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            "UV_PYTHON_DOWNLOADS": "never",
        }

    def run(self, script: str) -> subprocess.CompletedProcess[str]:
        return readme.run_script(script, script, cwd=self.clone, env=self.env)

    def dial_the_emulator(self) -> None:
        """The one change to the installed target: its connector dials the emulator."""
        python = self.clone / ".meltano/loaders/target-snowflake/venv/bin/python"
        purelib = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        shutil.copy(
            PROJECT_DIR / "tests/snowflake_address.py", Path(purelib) / "snowflake_address.py"
        )
        (Path(purelib) / "snowflake_address.pth").write_text("import snowflake_address\n")


def readme_commands() -> tuple[str, str]:
    """The README's Snowflake block: up to the target's install, and after it."""
    (block,) = readme.owned_blocks("Snowflake", readme.claims())
    head, install, tail = block.text.partition(INSTALL)
    assert install, f"the README's Snowflake block no longer runs `{INSTALL}`"
    return head + install, tail


@contextlib.contextmanager
def connected(emulator: str) -> Iterator[SnowflakeConnection]:
    """Snowflake's connector, on the emulator, in the loaded database."""
    address = urlsplit(emulator)
    connection = snowflake.connector.connect(
        user="READER",
        password="-",  # noqa: S106 - the emulator takes any
        account="xy12345",
        host=address.hostname,
        port=address.port,
        protocol=address.scheme,
        database=DATABASE,
        session_parameters={"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
    )
    try:
        yield connection
    finally:
        connection.close()


def snowflake_query(connection: SnowflakeConnection) -> rlhf.Query:
    def query(statement: str, params: tuple[t.Any, ...]) -> list[tuple[t.Any, ...]]:
        cursor = connection.cursor()
        cursor.execute(statement, params or None)
        return [tuple(row) for row in cursor.fetchall()]

    return query


def truth(scale: ScaleSimulator) -> dict[str, int]:
    """Rows per stream, by Scale's raw objects (flat rows as the tap makes them of each task)."""
    tasks = scale.tasks(status="completed")
    deliveries = scale.deliveries()
    delivered = [task for d in deliveries for task in scale.delivery_tasks(d["id"])]
    dataset_deliveries = scale.dataset_deliveries()
    counts = {
        "projects": len(scale.projects),
        "batches": len(scale.batches()),
        "tasks": len(tasks),
        "deliveries": len(deliveries),
        "delivery_tasks": len(delivered),
        "task_responses": sum(len(scale.task_responses(d["id"])) for d in deliveries),
        "response_schemas": len(scale.response_schemas),
        "datasets": len(scale.datasets),
        "dataset_deliveries": len(dataset_deliveries),
        "dataset_tasks": sum(len(scale.dataset_tasks(d["id"])) for d in dataset_deliveries),
    }
    for kind, rows in ROWS.items():
        counts[f"task_{kind}"] = sum(1 for task in tasks for _ in rows(task))
        counts[f"delivery_task_{kind}"] = sum(1 for task in delivered for _ in rows(task))
    assert counts.keys() == STREAMS.keys()
    return counts


def assert_warehouse_holds_the_truth(scale: ScaleSimulator, query: rlhf.Query) -> dict[str, int]:
    """Every stream's rows, each once; returns the counts."""
    expected = truth(scale)
    loaded = {stream: query(f"SELECT count(*) FROM scale.{stream}", ())[0][0] for stream in STREAMS}  # noqa: S608
    assert loaded == expected
    for name, stream in STREAMS.items():
        key = ", ".join(stream.primary_keys or ())
        twice = f"SELECT {key} FROM scale.{name} GROUP BY {key} HAVING count(*) > 1"  # noqa: S608
        assert query(twice, ()) == [], f"a primary key of {name} appears twice"
    return loaded


def assert_snowflake_types(query: rlhf.Query) -> None:
    """Nested objects and lists as VARIANT; the annotations' typed values as number, bool, text."""
    types = {
        (table.lower(), column.lower()): kind
        for table, column, kind in query(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'SCALE'",
            (),
        )
    }
    nested = {
        (name, column)
        for name, stream in STREAMS.items()
        for column, schema in stream.schema["properties"].items()
        if {"object", "array"} & set(_types(schema))
    }
    assert nested
    assert {key: types[key] for key in nested} == dict.fromkeys(nested, "VARIANT")
    for table in ("task_annotations", "delivery_task_annotations"):
        assert types[table, "value_number"] in {"FLOAT", "NUMBER"}
        assert types[table, "value_boolean"] == "BOOLEAN"
        assert types[table, "value_text"] == "TEXT"
        assert types[table, "value_texts"] == "VARIANT"


def _types(schema: dict[str, t.Any]) -> list[str]:
    kind = schema.get("type", [])
    found = [kind] if isinstance(kind, str) else list(kind)
    for option in schema.get("anyOf", ()):
        found += _types(option)
    return found


def section_queries() -> dict[str, str]:
    """The Snowflake section's own queries, by the line of a comment that names each."""
    return {
        block.text.splitlines()[0].removeprefix("-- ").strip(): block.text
        for block in readme.blocks()
        if block.language == "sql" and block.heading == "Snowflake"
    }


def integer_ratings(tasks: list[dict[str, t.Any]]) -> dict[tuple[t.Any, ...], tuple[float, ...]]:
    """Mean and count of the integer annotations on messages, per key, from Scale's raw tasks."""
    groups: dict[str, list[float]] = {}
    for task in tasks:
        for thread in task.get("threads") or ():
            for turn in thread["turns"]:
                for message in turn["messages"]:
                    for annotation in message.get("annotations") or ():
                        value = annotation.get("value")
                        if annotation["type"] == "integer" and type(value) in {int, float}:
                            groups.setdefault(annotation["key"], []).append(float(value))
    return {(key,): (sum(v) / len(v), len(v)) for key, v in groups.items()}


@pytest.mark.readme(*SECTION)
def test_meltano_into_snowflake_twice_matches_scale_and_the_queries_run_there(
    meltano: Path, scale: ScaleSimulator, emulator: str, clone: Path
) -> None:
    del meltano  # installed: the clone's own Meltano installs come from the same uv cache
    reader = Reader(clone, scale, emulator)
    until_install, after_install = readme_commands()
    reader.run(until_install)
    reader.dial_the_emulator()
    reader.run(after_install)
    with connected(emulator) as connection:
        query = snowflake_query(connection)
        first = assert_warehouse_holds_the_truth(scale, query)
        assert_snowflake_types(query)

    pipelines.change_the_world(scale)
    reader.run("meltano run tap-scale target-snowflake")
    with connected(emulator) as connection:
        query = snowflake_query(connection)
        second = assert_warehouse_holds_the_truth(scale, query)
        assert second["tasks"] > first["tasks"]
        assert second["delivery_tasks"] > first["delivery_tasks"]

        tasks = scale.tasks(status="completed")
        facts = rlhf.Truth(tasks)
        queries = rlhf.QUERIES
        means = rlhf.rows_by_key(query(queries["Mean rating per model and criterion"], ()), 3)
        rlhf.assert_close(means, facts.mean_ratings())
        rlhf.assert_close(rlhf.rows_by_key(query(queries["Win rate"], ()), 3), facts.win_rates())
        spreads = rlhf.rows_by_key(query(queries["Inter-rater spread"], ()), 4)
        rlhf.assert_close(spreads, facts.spreads())
        flagged = {(row[0], row[1]) for row in query(queries["Flagged content"], ())}
        assert flagged == facts.flagged()
        assert means
        assert spreads
        assert flagged

        own = section_queries()
        expected = integer_ratings(tasks)
        assert expected
        for name in ("From the nested threads", "From the flat annotations"):
            rlhf.assert_close(rlhf.rows_by_key(query(own[name], ()), 1), expected)
        labelled = query(own["A label in value_texts"], ())[0][0]
        assert labelled > 0


def test_snowflake_tests_fail_under_ci_and_skip_elsewhere_without_the_emulator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must load the emulated Snowflake"):
        unavailable("no fakesnow")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no fakesnow"):
        unavailable("no fakesnow")
