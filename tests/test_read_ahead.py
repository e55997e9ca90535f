"""Reading ahead while the sync is slower than its readers: memory stays one page per reader.

Over real HTTP against the simulator, in the tap's own process, so that each parse of a page can
be counted (the real parse, wrapped, not replaced).
"""

from __future__ import annotations

import io
import json
import threading
import time
import typing as t
from datetime import timedelta
from urllib.parse import urlsplit

from tap_scale import client
from tap_scale.tap import TapScale
from tests.tap_run import select
from tests.test_windows import BASE, windowed_config

if t.TYPE_CHECKING:
    import pytest
    import requests

    from tap_scale.testing import ScaleSimulator


class StalledOutput(io.RawIOBase):
    """Standard output whose reader stops reading at the first record, until released."""

    def __init__(self) -> None:
        super().__init__()
        self.stalled = threading.Event()
        self.release = threading.Event()
        self.task_ids: set[str] = set()

    def writable(self) -> bool:
        return True

    def write(self, data: t.Any) -> int:
        messages = [json.loads(line) for line in bytes(data).splitlines() if line.strip()]
        records = [m["record"] for m in messages if m["type"] == "RECORD"]
        if records:
            self.stalled.set()
            self.release.wait()
        self.task_ids.update(record["task_id"] for record in records)
        return len(data)


def served_pages(simulator: ScaleSimulator) -> int:
    return sum(1 for r in simulator.requests if r["path"] == "/v2/tasks")


def test_readers_wait_for_room_holding_scales_bytes_not_the_parsed_page(
    simulator: ScaleSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    workers = 4
    config = {**windowed_config(simulator, workers=workers), "task_statuses": ["completed"]}
    project = config["project_ids"][0]
    for hour in range(300):
        simulator.add_tasks(project, 1, completed_at=BASE + timedelta(hours=hour))
    completed = simulator.tasks(project_id=project, status="completed")
    assert len(completed) > 20 * config["page_size"]  # many more pages than the readers can hold

    parses = 0
    parse = client.page_body

    def counted_parse(
        response: requests.Response, warn: t.Any = None, fast: t.Any = None
    ) -> dict[str, t.Any]:
        nonlocal parses
        # Each response is parsed once; later calls return what that parse made.
        parsed_before = "_scale_body" in response.__dict__
        parses += not parsed_before and urlsplit(response.url).path.endswith("/v2/tasks")
        return parse(response, warn, fast)

    monkeypatch.setattr(client, "page_body", counted_parse)
    output = StalledOutput()
    monkeypatch.setattr("sys.stdout", io.TextIOWrapper(io.BufferedWriter(output, 1)))
    catalog = select(TapScale(config=config).catalog_dict, "tasks")
    tap = TapScale(config=config, catalog=catalog)
    sync = threading.Thread(target=tap.sync_all)
    sync.start()
    try:
        assert output.stalled.wait(30)
        # Until the readers have all stopped: each with a page it cannot queue.
        served, steady_since = served_pages(simulator), time.monotonic()
        while time.monotonic() - steady_since < 1:
            time.sleep(0.05)
            if (now := served_pages(simulator)) != served:
                served, steady_since = now, time.monotonic()
        parsed = parses
    finally:
        output.release.set()
        sync.join(60)

    # The sync took a page and stalled on its first record; the queue is full (a page per
    # reader). Every reader has fetched one more page and waits for room with it as Scale sent
    # it: unparsed. (Parsed, it would be 0 here.)
    assert served - parsed == workers, (served, parsed)
    # Released, the sync goes on to the end: nothing was lost to the waiting.
    assert not sync.is_alive()
    assert output.task_ids == {task["task_id"] for task in completed}
