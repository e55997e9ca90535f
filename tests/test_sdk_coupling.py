"""Guards on what tap-scale relies on inside the SDK and backoff beyond their public API.

Every private touch point is named here, and only here, each with the module that uses it:

- `PluginBase._validate_config` (tap_scale/checked_tap.py: the settings checks),
- `Tap.setup_mapper`'s body, redone (tap_scale/checked_tap.py),
- `PluginBase._setup_signal_handlers` (tap_scale/tap.py: tap-scale's stops),
- `Stream._sync_records`, overridden (tap_scale/streams/tasks.py: the reading engine's sync),
  and the order of the SDK's own record loop, which `_Emitter` repeats,
- `Stream._write_record_message`, `Stream._write_state_message` (tap_scale/streams/tasks.py)
  and `Stream._write_schema_message` (tap_scale/streams/row_writer.py),
- `Stream._tap`, read once (`ScaleStream.scale_tap`, tap_scale/client.py),
- the signpost cap of `finalize_state_progress_markers` (`ScaleStream.cap_bookmark`),
- the SDK's and backoff's log lines that tap_scale/sdk_logging.py rewords or quiets.

Each test fails naming the private hook or the library's log line that changed beneath the tap,
so an upgrade that breaks one says where to look.
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import logging
import re
import signal
import sys
import typing as t
from pathlib import Path

import backoff
import msgspec
import pytest
import singer_sdk
from singer_sdk import Stream, Tap
from singer_sdk.helpers._state import SIGNPOST_MARKER, finalize_state_progress_markers
from singer_sdk.plugin_base import PluginBase

from tap_scale import task_rows
from tap_scale.inputs import InputError
from tap_scale.row_messages import RowMessages
from tap_scale.sdk_logging import BACKOFF_HANDLERS, MISLEADING, quiet
from tap_scale.streams.row_writer import PRIVATE_SDK_METHODS, RowOutput
from tap_scale.tap import TapScale

if t.TYPE_CHECKING:
    from tap_scale.streams.task_rows import TaskRowsStream
    from tap_scale.testing import ScaleSimulator


def test_the_sdk_checks_settings_in_its_private_validate_config_hook() -> None:
    """`CheckedTap._validate_config` overrides `PluginBase._validate_config`, which the SDK runs."""
    assert "self._validate_config(" in inspect.getsource(PluginBase.__init__), (
        "PluginBase.__init__ no longer calls _validate_config: tap-scale's settings checks "
        "(tap_scale/settings.py) would not run"
    )
    parameters = inspect.signature(PluginBase._validate_config).parameters  # noqa: SLF001
    assert list(parameters) == ["self", "raise_errors"], "_validate_config's signature changed"
    # And the tap's checks run in it, before anything else, with defaults filled in as the
    # SDK's own check does (through the private `_config` it holds the settings in).
    with pytest.raises(InputError, match="`page_size` is 0"):
        TapScale(config={"api_key": "test_x", "page_size": 0})
    tap = TapScale(config={"api_key": "test_x"})
    assert tap.config["page_size"] == 100
    assert tap.config["opts"]


def test_the_tap_sets_up_its_mapper_as_checked_tap_redoes_it() -> None:
    """`CheckedTap.setup_mapper` redoes `Tap.setup_mapper`, for the selected streams only."""
    body = [
        line.strip()
        for line in inspect.getsource(Tap.setup_mapper).splitlines()
        if line.strip() and not line.strip().startswith(("def ", '"""', "@", "#"))
    ]
    assert body == [
        "super().setup_mapper()",
        "self.mapper.register_raw_streams_from_catalog(self.catalog)",
    ], (
        "Tap.setup_mapper changed: CheckedTap.setup_mapper (tap_scale/checked_tap.py) redoes "
        "it and must do what it now does"
    )


@pytest.fixture(scope="module")
def sdk_strings() -> set[str]:
    """Every string constant in the SDK's source (implicitly joined pieces joined)."""
    strings = set()
    for path in Path(singer_sdk.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.add(node.value)
    return strings


@pytest.mark.parametrize("template", sorted(MISLEADING))
def test_each_misleading_line_is_still_logged_by_the_sdk_as_the_filter_expects(
    template: str, sdk_strings: set[str]
) -> None:
    assert template in sdk_strings, (
        f"The SDK no longer logs {template!r} with this template: update tap_scale/sdk_logging.py"
    )


def test_backoffs_own_retry_lines_are_demoted_to_debug(caplog: pytest.LogCaptureFixture) -> None:
    from backoff import _common  # noqa: PLC0415 - the private module the handlers live in

    assert all(hasattr(_common, name) for name in BACKOFF_HANDLERS), (
        f"backoff no longer logs retries from {sorted(BACKOFF_HANDLERS)}: "
        "update tap_scale/sdk_logging.py"
    )
    logger = logging.getLogger("tap-scale.test-stream")
    quiet(logger)
    tries = []

    # As the SDK decorates each request: backoff logs to the stream's logger.
    @backoff.on_exception(backoff.constant, LookupError, max_tries=2, interval=0, logger=logger)
    def failing() -> None:
        tries.append(1)
        raise LookupError

    with caplog.at_level(logging.INFO), pytest.raises(LookupError):
        failing()
    assert len(tries) == 2
    assert not [r for r in caplog.records if r.levelno >= logging.INFO], caplog.text
    with caplog.at_level(logging.DEBUG), pytest.raises(LookupError):
        failing()
    assert [r for r in caplog.records if r.funcName in BACKOFF_HANDLERS], "kept for debugging"


def test_no_traceback_leaves_the_tap_for_input_errors_in_process(
    simulator: ScaleSimulator,
) -> None:
    """Library use gets the same error as the command line: an InputError naming the setting."""
    with pytest.raises(InputError, match="did you mean `project_names`"):
        TapScale(
            config={"api_key": simulator.api_key, "api_url": simulator.url, "projcet_names": []}
        )
    assert simulator.requests == []


def test_the_tasks_stream_owns_the_sdk_hook_that_syncs_a_stream() -> None:
    """`TasksStream._sync_records` replaces the SDK's loop over partitions with the engine's."""
    assert list(inspect.signature(Stream._sync_records).parameters) == [  # noqa: SLF001
        "self",
        "context",
        "write_messages",
    ], "Stream._sync_records changed its signature: TasksStream._sync_records overrides it"
    assert "self._sync_records(context=context)" in inspect.getsource(Stream.sync), (
        "Stream.sync no longer syncs through _sync_records: TasksStream._sync_records "
        "(tap_scale/streams/tasks.py) would never run"
    )
    assert "self._sync_records(context, write_messages=False)" in inspect.getsource(
        Stream.get_batches
    ), "Stream.get_batches no longer reads through _sync_records: BATCH mode would bypass it"


def test_the_record_loop_repeats_the_sdks_own_in_its_order() -> None:
    """`_Emitter` (tap_scale/streams/tasks.py) does for each record what the SDK's loop does."""
    loop = inspect.getsource(Stream._sync_records)  # noqa: SLF001
    steps = [
        "self.post_process(record, current_context)",
        "self._process_record(",
        "self._write_record_message(record)",
        "self._increment_stream_state(record, context=current_context)",
        "self.STATE_MSG_FREQUENCY",
        "record_counter.increment()",
    ]
    at = [loop.find(step) for step in steps]
    changed = (
        "Stream._sync_records' loop over records changed: _Emitter "
        f"(tap_scale/streams/tasks.py) repeats it as {steps}"
    )
    assert -1 not in at, changed
    assert at == sorted(at), changed
    process = inspect.getsource(Stream._process_record)  # noqa: SLF001
    assert "record[key] = val" in process, "Stream._process_record no longer copies the keys"
    assert "self.generate_child_contexts(" in process, (
        "Stream._process_record no longer calls generate_child_contexts, which writes the rows"
    )
    increment = inspect.getsource(Stream._increment_stream_state)  # noqa: SLF001
    assert "self.state_manager.increment_state(" in increment, (
        "Stream._increment_stream_state no longer goes through the state manager, as _Emitter does"
    )


def test_the_private_writers_of_state_and_records_write_as_the_tap_expects() -> None:
    assert list(inspect.signature(Stream._write_state_message).parameters) == ["self"], (  # noqa: SLF001
        "Stream._write_state_message changed: TasksStream writes STATE with it"
    )
    assert "self._tap.state_writer.write_state(self.tap_state)" in inspect.getsource(
        Stream._write_state_message  # noqa: SLF001
    ), "Stream._write_state_message changed: TasksStream._advance_bookmark writes STATE with it"
    assert "self._tap.write_message(record_message)" in inspect.getsource(
        Stream._write_record_message  # noqa: SLF001
    ), "Stream._write_record_message no longer writes through the tap's message writer"


def test_a_stream_still_keeps_its_tap_as_the_private_tap_attribute() -> None:
    tap = TapScale(config={"api_key": "test_key", "api_url": "http://localhost:1/v2"})
    stream = tap.streams["tasks"]
    assert stream._tap is tap, "Stream._tap is gone: ScaleStream.scale_tap reads it"  # noqa: SLF001
    assert stream.scale_tap is tap  # type: ignore[attr-defined]


def test_the_sdk_still_does_what_tap_scale_relies_on() -> None:
    """Two SDK behaviours with no public promise; if the SDK changes, this test says which.

    - `singer_sdk.plugin_base.PluginBase._setup_signal_handlers` is called as a tap is made, to
      install the SDK's handlers (which exit 0); `TapScale` overrides it to install its own.
    - `singer_sdk.helpers._state.finalize_state_progress_markers` caps a bookmark at the
      partition's `replication_key_signpost`, which `ScaleStream.cap_bookmark` writes.
    """
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        TapScale(config={"api_key": "test_key", "api_url": "http://localhost:1/v2"})
        for signum in saved:
            handler = signal.getsignal(signum)
            assert getattr(handler, "__module__", "") == "tap_scale.stops", (
                f"{signal.Signals(signum).name} is handled by {handler!r}: the SDK no longer "
                "installs signal handlers in PluginBase._setup_signal_handlers"
            )
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)

    partition = {
        SIGNPOST_MARKER: "2025-01-01T00:00:00.000000Z",
        "progress_markers": {
            "replication_key": "completed_at",
            "replication_key_value": "2999-01-01T00:00:00.000000Z",
        },
    }
    finalize_state_progress_markers(partition)
    assert partition["replication_key_value"] == "2025-01-01T00:00:00.000000Z", (
        "the SDK no longer caps a bookmark at its signpost (finalize_state_progress_markers)"
    )


def test_the_private_sdk_methods_relied_on_still_write_what_rows_are_written_as(
    config: dict[str, t.Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in PRIVATE_SDK_METHODS:
        method = getattr(Stream, name, None)
        assert callable(method), (
            f"singer_sdk.Stream.{name} is gone: tap_scale/streams/row_writer.py uses it"
        )
    assert list(inspect.signature(Stream._write_schema_message).parameters) == ["self"], (  # noqa: SLF001
        "singer_sdk.Stream._write_schema_message changed: tap_scale/streams/row_writer.py calls it"
    )
    assert list(inspect.signature(Stream._write_record_message).parameters) == ["self", "record"], (  # noqa: SLF001
        "singer_sdk.Stream._write_record_message changed: tap_scale/streams/row_writer.py calls it"
    )

    task = {
        "task_id": "task_1",
        "project": "project_1",
        "batch": None,
        "completed_at": "2025-01-02T03:04:05.000000Z",
        "threads": [
            {
                "id": "th",
                "turns": [],
                "annotations": [{"id": "an", "key": "é", "type": "integer", "value": 3}],
            }
        ],
    }
    (row,) = task_rows.annotation_rows(task)
    record = msgspec.to_builtins(row)
    written = io.BytesIO()
    stdout = io.TextIOWrapper(written)
    monkeypatch.setattr(sys, "stdout", stdout)
    tap = TapScale(config=config)
    stream = t.cast("TaskRowsStream", tap.streams["task_annotations"])
    output = RowOutput(stream, tap.progress)  # writes the SCHEMA message through the SDK
    assert output.direct
    stream._write_record_message(dict(record))  # noqa: SLF001
    payload, counts = RowMessages({"annotations": output.alias}).encode(task)
    assert counts == (0, 1, 0)
    stdout.flush()
    written.write(payload)
    stdout.flush()
    schema_line, sdk_line, direct_line = written.getvalue().splitlines()

    assert json.loads(schema_line)["type"] == "SCHEMA", (
        "singer_sdk.Stream._write_schema_message no longer writes a SCHEMA message"
    )
    moment = re.compile(rb'"time_extracted":"[^"]+"')
    sdk_time = moment.search(sdk_line)
    assert sdk_time is not None
    assert re.fullmatch(rb'"time_extracted":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"', sdk_time[0])
    # The same message, the same keys in the same order, but for the time and the order of the
    # record's columns (row_messages writes those an annotation shares with its list first).
    sdk_message, direct_message = json.loads(sdk_line), json.loads(direct_line)
    assert list(sdk_message) == list(direct_message)
    del sdk_message["time_extracted"], direct_message["time_extracted"]
    assert sdk_message == direct_message, (
        "singer_sdk.Stream._write_record_message writes records differently from "
        "tap_scale/row_messages.py, which encodes the rows of streams without stream maps"
    )
    assert direct_message["record"] == record
