"""The client a user would write without tap-scale: Scale's own example script, on `/v2/tasks`.

Scale's documentation downloads a delivery with a `requests.request` loop on `next_token` (a
new connection per request, no Session), every task kept in a list, and JSONL written once all
are in. This is that script, unchanged in what it does, applied to each project's completed
tasks::

    python benchmarks/naive_client.py URL PROJECT_ID [PROJECT_ID ...] [--opts ...] [--output F]

with the key in `--api-key` or `SCALE_API_KEY`. The JSONL goes to `--output` (`/dev/null` by
default, as in the benchmark); one line of counts goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing as t

import requests

if t.TYPE_CHECKING:
    from collections.abc import Sequence

ALL_OPTS = ("annotation_details", "attachment_details", "model_parameters", "submissions")
# The script sets none; the benchmark's own bound, so that a stuck server cannot hang it.
TIMEOUT_SECONDS = 120


def get_tasks_by_project(
    url: str, api_key: str, project_id: str, opts: Sequence[str]
) -> tuple[list[dict[str, t.Any]], int]:
    """Every completed task of a project, and the number of requests it took."""
    tasks: list[dict[str, t.Any]] = []
    params: dict[str, t.Any] = {
        "project_id": project_id,
        "status": "completed",
        "limit": 100,
        "opts": list(opts),
    }
    requests_made = 0

    should_fetch = True

    while should_fetch:
        response = requests.request(
            "GET",
            url=f"{url}/tasks",
            params=params,
            headers={
                "Accept": "application/json",
                "Authorization": f"Bearer {api_key}",
            },
            timeout=TIMEOUT_SECONDS,
        )
        requests_made += 1
        json_resp = response.json()

        next_token = json_resp.get("next_token")
        if next_token:
            params["next_token"] = next_token
        else:
            should_fetch = False

        tasks.extend(json_resp["tasks"])

    return tasks, requests_made


def main(argv: Sequence[str] | None = None) -> int:
    """Download every project's completed tasks, then write them as JSONL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the API's base URL, ending in /v2")
    parser.add_argument("project_ids", nargs="+", metavar="PROJECT_ID")
    parser.add_argument("--api-key", default=os.environ.get("SCALE_API_KEY"))
    parser.add_argument("--opts", nargs="*", default=list(ALL_OPTS), choices=ALL_OPTS)
    parser.add_argument("--output", default=os.devnull, help="the JSONL file to write")
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("give --api-key or set SCALE_API_KEY")

    tasks: list[dict[str, t.Any]] = []
    pages = 0
    for project_id in args.project_ids:
        project_tasks, project_pages = get_tasks_by_project(
            args.url, args.api_key, project_id, args.opts
        )
        tasks.extend(project_tasks)
        pages += project_pages

    with open(args.output, "w+") as f:  # noqa: PTH123 - as the script has it
        for task in tasks:
            json.dump(task, f)
            f.write("\n")

    sys.stdout.write(json.dumps({"tasks": len(tasks), "pages": pages}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
