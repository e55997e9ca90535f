"""An emulated Snowflake for the tests: fakesnow's server, given the user stage it lacks.

Run as ``python -m tests.snowflake_emulator`` with fakesnow installed (``.fakesnow-venv/``, which
the Makefile makes): it serves Snowflake's REST API on a free loopback port and prints
``url=http://127.0.0.1:<port>`` on its first line. Snowflake's own Python connector talks to it
over HTTP, as to Snowflake.

fakesnow (0.12.1) runs Snowflake's SQL on DuckDB, stages included, but not the three statements
target-snowflake loads every batch with, all on the user stage ``@~``:

- ``PUT 'file://...' '@~/target-snowflake/<sync id>'``: fakesnow knows named stages only, and
  only unquoted. Here the user stage is a named stage of fakesnow's own, ``FAKESNOW_USER_STAGE.
  FILES`` in the session's database; the connector uploads the file to it over HTTP.
- ``MERGE INTO t d USING (SELECT $1:col::TYPE AS col, ... FROM '@~/...'(file_format => ...)
  QUALIFY ROW_NUMBER() OVER (PARTITION BY key ORDER BY SEQ8() DESC) = 1) s ON ...``: fakesnow
  cannot select from staged files, has no ``SEQ8()``, and its MERGE cannot take a subquery with
  ``QUALIFY``. Here the target's own subquery runs first, on the staged files (read with DuckDB's
  ``read_json_objects``, ``$1`` their rows, ``SEQ8()`` their order), into a table; then the
  target's own MERGE runs from that table.
- ``REMOVE '@~/...'``: deletes the staged files (and that table).

And one statement of a sink's end: ``DROP FILE FORMAT``, which fakesnow cannot parse, is answered
as done; the file format (one per sink, named by a uuid) stays.

Everything else the target sends (DDL, ``SHOW``, file formats, the MERGE itself) is fakesnow's.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import sys
import threading
import typing as t

import fakesnow.server
import uvicorn
from fakesnow.transforms import stage
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

if t.TYPE_CHECKING:
    from starlette.responses import Response

SCHEMA = "FAKESNOW_USER_STAGE"
STAGE = f"{SCHEMA}.FILES"
USER_STAGE = r"'@~/(?P<path>[^']*?)/?'"
PUT = re.compile(rf"(?is)^\s*put\s+(?P<file>'[^']*')\s+{USER_STAGE}\s*$")
MERGE = re.compile(
    rf"(?is)^\s*merge\s+into\s+(?P<table>\S+)\s+d\s+using\s+"
    rf"\((?P<select>select\s.*?)\s+from\s+{USER_STAGE}\s*\(file_format\s*=>\s*[^)]*\)\s*"
    rf"(?P<qualify>qualify\s.*?)\)\s+s\s+(?P<rest>on\s.*)$"
)
REMOVE = re.compile(rf"(?is)^\s*remove\s+{USER_STAGE}\s*$")
DROP_FILE_FORMAT = re.compile(r"(?is)^\s*drop\s+file\s+format\s+if\s+exists\s+(?P<name>\S+)\s*$")

_ready: set[str] = set()
_ready_lock = threading.Lock()


async def query_request(request: Request) -> Response:
    """fakesnow's query endpoint, with the user stage's statements turned into what it runs."""
    body = json.loads(await _body(request))
    conn = fakesnow.server.to_conn(fakesnow.server.to_token(request))
    sql = body["sqlText"]
    if put := PUT.match(sql):
        await run_in_threadpool(_prepare_stage, conn.database)
        sql = f"put {put['file']} @{conn.database}.{STAGE}/{put['path']}"
    elif merge := MERGE.match(sql):
        source = _source_table(merge["path"])
        staged = _staged_rows(conn.database, merge["path"])
        select = merge["select"].replace("$1:", "_FS_ROW:")
        qualify = merge["qualify"].replace("SEQ8()", "_FS_SEQ")
        create = f"create or replace table {source} as {select} from {staged} {qualify}"
        await run_in_threadpool(_run, conn.database, create)
        if not conn.schema_set:
            # fakesnow's MERGE stages its work in a table of the current schema, and fails
            # without one; Snowflake needs none for a qualified table. Only qualified names follow.
            schema = merge["table"].rpartition(".")[0]
            await run_in_threadpool(lambda: conn.cursor().execute(f"use schema {schema}"))
        source = f"{conn.database}.{SCHEMA}.{source}"
        sql = f"merge into {merge['table']} d using {source} s {merge['rest']}"
    elif remove := REMOVE.match(sql):
        directory = stage.internal_dir(f"{conn.database}.{STAGE}", remove["path"])
        await run_in_threadpool(shutil.rmtree, directory, ignore_errors=True)
        await run_in_threadpool(
            _run, conn.database, f"drop table if exists {_source_table(remove['path'])}"
        )
        sql = f"select '{remove['path']}/' as \"name\", 'removed' as \"result\""
    elif drop := DROP_FILE_FORMAT.match(sql):
        # fakesnow cannot parse DROP FILE FORMAT: answered, the format (one per sink) stays.
        sql = f"select '{drop['name'].replace(chr(39), '')} successfully dropped.' as \"status\""
    body["sqlText"] = sql
    return await fakesnow.server.query_request(_with_body(request, json.dumps(body).encode()))


def _run(database: str, sql: str) -> None:
    """One statement of the emulator's own, in a session of its own on the user stage's schema."""
    with contextlib.closing(fakesnow.server.shared_fs.connect(database, SCHEMA)) as session:
        session.cursor().execute(sql)


def _prepare_stage(database: str) -> None:
    with _ready_lock:
        if database not in _ready:
            _run(database, f"create stage if not exists {STAGE}")
            _ready.add(database)


def _staged_rows(database: str, path: str) -> str:
    """The staged files of a path as rows: each JSON line, in order (as ``$1`` and ``SEQ8()``)."""
    files = f"{stage.internal_dir(f'{database}.{STAGE}', path)}/*"
    return (
        "(select json as _FS_ROW, row_number() over () as _FS_SEQ "  # noqa: S608 - our own path
        f"from read_json_objects('{files}', format = 'newline_delimited'))"
    )


def _source_table(path: str) -> str:
    return '"' + re.sub(r"\W", "_", path).upper() + '"'


async def _body(request: Request) -> bytes:
    body: bytes = await request.body()
    if request.headers.get("Content-Encoding") == "gzip":
        import gzip  # noqa: PLC0415 - only the connector's large requests are compressed

        body = gzip.decompress(body)
    return body


def _with_body(request: Request, body: bytes) -> Request:
    """The same request, with another (uncompressed) body."""
    scope = {
        **request.scope,
        "headers": [(k, v) for k, v in request.scope["headers"] if k != b"content-encoding"],
    }

    async def receive() -> dict[str, t.Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


routes = [
    Route(route.path, query_request, methods=["POST"])
    if getattr(route, "endpoint", None) is fakesnow.server.query_request
    else route
    for route in fakesnow.server.routes
]
app = Starlette(routes=routes)


def main() -> None:
    """Serve on a free loopback port until SIGTERM or Ctrl-C; print the URL first."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while thread.is_alive() and not server.started:
        threading.Event().wait(0.05)
    if not server.started:
        sys.exit("the emulator did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    print(f"url=http://127.0.0.1:{port}", flush=True)  # noqa: T201 - the test reads it
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    server.should_exit = True
    thread.join(timeout=10)


if __name__ == "__main__":
    main()
