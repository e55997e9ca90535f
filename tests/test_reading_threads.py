"""Reader threads share nothing by accident: a session of their own, and no SDK bookkeeping.

A sync of the tasks stream in the test's process, against the simulator, with a profiler on
every thread that records each function the SDK defines that runs on a stream object, and in
which thread. Reader threads may call the stream's own checks and parsing (tap-scale's code),
and read its logger and settings; nothing else of the SDK's.
"""

from __future__ import annotations

import io
import sys
import threading
import typing as t
from pathlib import Path

import requests
import singer_sdk
from singer_sdk import Stream

from tap_scale.tap import TapScale
from tests.tap_run import select

if t.TYPE_CHECKING:
    from types import FrameType

    import pytest

    from tap_scale.testing import ScaleSimulator

SDK = str(Path(singer_sdk.__file__).parent)
# What a reader thread may read of the SDK's on a stream: attributes, no state kept.
READ_ONLY = {"logger", "config"}
READER = "tap-scale-reader-"


def test_reader_threads_call_no_sdk_method_and_each_has_its_own_session(
    simulator: ScaleSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = simulator.projects[0]["id"]
    config = {
        "api_url": simulator.url,
        "api_key": simulator.api_key,
        "project_ids": [project],
        "page_size": 5,
        "max_concurrency": 4,
    }
    calls: set[tuple[str, str]] = set()
    sessions: dict[int, set[str]] = {}
    lock = threading.Lock()

    def profile(frame: FrameType, event: str, _: object) -> None:
        if event != "call":
            return
        name = threading.current_thread().name
        if not name.startswith(READER):
            return
        code = frame.f_code
        owner = frame.f_locals.get("self")
        if code.co_filename.startswith(SDK) and isinstance(owner, Stream):
            with lock:
                calls.add((name, code.co_name))

    send = requests.Session.send

    def counted_send(session: requests.Session, *args: t.Any, **kwargs: t.Any) -> t.Any:
        with lock:
            sessions.setdefault(id(session), set()).add(threading.current_thread().name)
        return send(session, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "send", counted_send)
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO()))
    catalog = select(TapScale(config=config).catalog_dict, "tasks", "task_annotations")
    threading.setprofile(profile)
    try:
        TapScale(config=config, catalog=catalog).sync_all()
    finally:
        threading.setprofile(None)

    readers = {name for names in sessions.values() for name in names if name.startswith(READER)}
    assert len(readers) > 1, "the sync was not read by reader threads: this proves nothing"
    shared = [names for names in sessions.values() if len(names) > 1]
    assert not shared, f"a session was used by more than one thread: {shared}"
    unexpected = {name for _, name in calls} - READ_ONLY
    assert not unexpected, f"reader threads ran the SDK's {sorted(unexpected)} on a stream"
