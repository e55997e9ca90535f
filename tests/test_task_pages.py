"""Task pages parsed for speed (`tap_scale.reading.task_pages`): each thread's turns go out as
Scale sent them, every other value as before, and a page that is not clean strict JSON is read
the usual way.
How fast it is `make bench` measures; these prove that nothing changes on the way.
"""

from __future__ import annotations

import json
import typing as t

from tap_scale.reading import task_pages
from tap_scale.testing.reshape import LATIN1_WORD, PASTED
from tests.tap_run import by_id, discover, run_tap, select
from tests.test_resilience import keyed

if t.TYPE_CHECKING:
    from pathlib import Path

    from tap_scale.testing import ScaleSimulator

# Completed tasks are read in windows of time, the others whole: both ways parse pages.
STATUSES = ["completed", "pending", "error"]


def tasks_config(config: dict[str, t.Any]) -> dict[str, t.Any]:
    return {**config, "task_statuses": STATUSES}


def test_tasks_whose_turns_are_copied_out_unparsed_are_exactly_what_scale_serves(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    config = tasks_config(config)
    catalog = select(discover(tmp_path, config), "tasks")
    run = run_tap(tmp_path, config, catalog=catalog)

    # Submission times, inside threads but parsed, are written in the one emitted form.
    submitted = [
        submission["submitted_at"]
        for record in run.records()
        for thread in record.get("threads") or ()
        for submission in thread.get("submissions") or ()
    ]
    assert submitted
    assert all(len(moment) == len("2025-01-01T00:00:00.000000Z") for moment in submitted)
    truth = [task for status in STATUSES for task in simulator.tasks(status=status)]
    assert any(thread.get("turns") for task in truth for thread in task.get("threads") or ())
    assert by_id(run.records()) == by_id(truth), "every task, each exactly as Scale serves it"


def test_pages_that_are_not_clean_strict_json_are_read_the_usual_way(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    config = tasks_config(config)
    catalog = select(discover(tmp_path, config), "tasks")
    clean = keyed(run_tap(tmp_path, config, catalog=catalog).messages)
    # Bytes that are not UTF-8 deep in a task's turns, where nothing parses them on the fast
    # path; fields this release does not know and values of other types beside them.
    simulator.faults.latin1_text = 0.2
    simulator.faults.new_fields = 0.3
    simulator.faults.type_drift = 0.2
    run = run_tap(tmp_path, config, catalog=catalog)

    got = keyed(run.messages)  # run_tap decodes stdout as UTF-8: one bad byte would fail it
    assert got.keys() == clean.keys(), "a task was lost or invented"
    texts = {key: first_text(record) for key, record in got.items()}
    hit = [key for key, text in texts.items() if text is not None and simulator.latin1_hit(key[1])]
    assert hit
    for key, text in texts.items():
        assert LATIN1_WORD not in json.dumps(got[key], ensure_ascii=False)
        assert (key in hit) == (text is not None and text.endswith(" caf\ufffd")), text
    assert "read leniently" in run.stderr
    assert any(simulator.grown(key[1]) for key in got)
    assert any(simulator.drifted(key[1]) for key in got)


def first_text(task: dict[str, t.Any]) -> str | None:
    """The text of the task's first message, where the simulator's `latin1_text` writes."""
    for thread in task.get("threads") or ():
        for turn in thread.get("turns") or ():
            for message in turn.get("messages") or ():
                if isinstance(message.get("content"), dict):
                    return t.cast("str", message["content"].get("text") or "")
    return None


def test_flattened_and_mapped_tasks_see_their_turns_as_objects(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    # Flattening writes a list as its JSON text with the standard library, and a stream map's
    # expression reads values: neither can take turns left as raw JSON.
    config = {
        **tasks_config(config),
        "flattening_enabled": True,
        "flattening_max_depth": 1,
        "stream_maps": {"tasks": {"threads_json": "json.dumps(record.get('threads'))"}},
    }
    catalog = select(discover(tmp_path, config), "tasks")
    run = run_tap(tmp_path, config, catalog=catalog)

    truth = {
        task["task_id"]: task for status in STATUSES for task in simulator.tasks(status=status)
    }
    records = run.records()
    assert {record["task_id"] for record in records} == truth.keys()
    for record in records:
        threads = truth[record["task_id"]].get("threads") or []
        for written in (record["threads_json"], record.get("threads") or "null"):
            parsed = json.loads(written) or []
            assert [thread["turns"] for thread in parsed] == [t["turns"] for t in threads]


def test_a_key_pasted_into_a_turn_in_escapes_is_masked_like_any_other(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    # Raw JSON is masked as bytes; a key spelled in `\u` escapes would pass as bytes and be
    # read whole by the target, so such a page is parsed and written anew.
    config = tasks_config(config)
    catalog = select(discover(tmp_path, config), "tasks")
    simulator.faults.pasted_key = 0.3
    run = run_tap(tmp_path, config, catalog=catalog)

    texts = [first_text(record) for record in run.records()]
    pasted = [text for text in texts if text and text.endswith(f"{PASTED} [REDACTED]")]
    assert pasted
    assert simulator.api_key not in json.dumps(run.messages)
    assert simulator.api_key not in run.stderr


def test_a_number_out_of_range_in_a_turn_is_read_as_pythons_reader_reads_it() -> None:
    # Skipping a value checks all but a number's range, which msgspec refuses when the row
    # streams parse the turns: Python's reader takes it, as a lenient page read does.
    for number, value in (
        (b"1e309", float("inf")),
        (b"123456789012345678901234", 123456789012345678901234),
    ):
        turns = b'[{"messages":[{"content":{"score":' + number + b"}}]}]"
        page = b'{"tasks":[{"task_id":"t","threads":[{"id":"a","turns":' + turns + b"}]}]}"
        body = task_pages.decode(page)
        assert body is not None
        task = task_pages.materialised(body["tasks"][0])
        assert task["threads"][0]["turns"][0]["messages"][0]["content"]["score"] == value
