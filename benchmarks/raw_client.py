"""The raw limit: the least work that still fetches every task.

Each project's completed tasks are paged through on one keep-alive connection (`http.client`)
and each page is parsed with `json.loads`; nothing is kept or written::

    python benchmarks/raw_client.py URL PROJECT_ID [PROJECT_ID ...] [--no-parse] [--passes N]

with the key in `--api-key` or `SCALE_API_KEY`. `--no-parse` reads each body without parsing
it, finding the next token with a byte search instead: what is left is the server's own speed
(`--passes` reads everything that many times, for a measurement long enough to trust).
One line of counts goes to stdout: tasks (not counted with `--no-parse`), pages and body bytes.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sys
import typing as t
from urllib.parse import urlencode, urlsplit

if t.TYPE_CHECKING:
    from collections.abc import Sequence

ALL_OPTS = ("annotation_details", "attachment_details", "model_parameters", "submissions")
TIMEOUT_SECONDS = 120
# The token is the body's last key (the simulator renders it there); tokens are base64url.
_NEXT_TOKEN = re.compile(rb'"next_token":"([A-Za-z0-9_-]+)"\}$')
_TAIL_BYTES = 512  # room for the token at the end of a body


class Counts(t.NamedTuple):
    """What one project's pages held."""

    tasks: int
    pages: int
    bytes: int


def read_project(
    connection: http.client.HTTPConnection,
    path: str,
    query: dict[str, t.Any],
    headers: dict[str, str],
    *,
    parse: bool,
) -> Counts:
    """Page through one project's tasks on an open connection."""
    tasks = pages = size = 0
    params = dict(query)
    while True:
        connection.request("GET", f"{path}?{urlencode(params, doseq=True)}", headers=headers)
        response = connection.getresponse()
        body = response.read()
        if response.status != http.client.OK:
            message = f"HTTP {response.status}: {body[:500]!r}"
            raise RuntimeError(message)
        pages += 1
        size += len(body)
        if parse:
            page = json.loads(body)
            tasks += len(page["tasks"])
            token = page.get("next_token")
        else:
            match = _NEXT_TOKEN.search(body[-_TAIL_BYTES:])
            token = match.group(1).decode() if match else None
        if not token:
            return Counts(tasks, pages, size)
        params["next_token"] = token


def main(argv: Sequence[str] | None = None) -> int:
    """Read every project's completed tasks on one connection; print the counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the API's base URL, ending in /v2 (http only)")
    parser.add_argument("project_ids", nargs="+", metavar="PROJECT_ID")
    parser.add_argument("--api-key", default=os.environ.get("SCALE_API_KEY"))
    parser.add_argument("--opts", nargs="*", default=list(ALL_OPTS), choices=ALL_OPTS)
    parser.add_argument("--no-parse", action="store_true", help="read bodies without parsing")
    parser.add_argument("--passes", type=int, default=1, help="read everything this many times")
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("give --api-key or set SCALE_API_KEY")
    url = urlsplit(args.url)
    if url.scheme != "http" or url.hostname is None:
        parser.error("the raw client speaks plain http to a local simulator only")

    headers = {"Accept": "application/json", "Authorization": f"Bearer {args.api_key}"}
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT_SECONDS)
    total = Counts(0, 0, 0)
    try:
        for project_id in args.project_ids * max(1, args.passes):
            query = {"project_id": project_id, "status": "completed", "limit": 100}
            query["opts"] = list(args.opts)
            counts = read_project(
                connection, f"{url.path}/tasks", query, headers, parse=not args.no_parse
            )
            total = Counts(*(a + b for a, b in zip(total, counts, strict=True)))
    finally:
        connection.close()
    sys.stdout.write(json.dumps(total._asdict()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
