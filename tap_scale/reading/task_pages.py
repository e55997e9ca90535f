"""Pages of tasks parsed for speed: each thread's `turns` kept as the JSON Scale sent.

A page of 100 GenAI tasks is about 1.5 MB of JSON, and 98% of it is `threads`: the turns,
messages and annotations. Parsed into Python objects it is several times that, and building,
encoding and freeing those objects was most of what a sync of tasks alone costs, for values the
tap never looks into: a task's turns go to the target exactly as Scale sent them. So each
thread's `turns` stays a `msgspec.Raw`, the bytes of its JSON, which the message writer copies
out as they are; everything the tap does read (the top-level fields, each thread's own fields
and `submissions`) is parsed as before. The row streams (`tap_scale.task_rows`) parse the turns
when they derive rows from them (`materialised`). Only where the records go as they are to the
message writer (`TaskRecordsStream.writes_tasks_unchanged`): a stream map, flattening and BATCH
files need the turns as objects, and get the page parsed the usual way.

The raw bytes are the page's own, not copies: a queued page holds its 1.5 MB body instead of
its objects. A page this cannot read, for whatever reason, is parsed whole the usual way
(`tap_scale.answers.page_body`), which says what is wrong with it or repairs it, as before.
"""

from __future__ import annotations

import codecs
import json
import typing as t

import msgspec

from tap_scale.models import TASK_FIELDS
from tap_scale.redaction import may_hide_secrets

if t.TYPE_CHECKING:
    from collections.abc import Mapping

Json = dict[str, t.Any]

# Kept unparsed: one thread field, which is nearly all of a task's bytes.
RAW_FIELD = "turns"

_UNSET = msgspec.UNSET
_Thread = dict[str, msgspec.Raw]
# A task of the fields this release knows, read in the same pass as its page. One field more
# (Scale adds them) fails it, and the page is read as `_Fields`: a little slower, as exact.
_Task = msgspec.defstruct(
    "_Task",
    [
        (field.name, list[_Thread] | None | msgspec.UnsetType, _UNSET)
        if field.name == "threads"
        else (field.name, t.Any, _UNSET)
        for field in TASK_FIELDS
    ],
    forbid_unknown_fields=True,
)
_Fields = dict[str, msgspec.Raw]
# Scale's task listings (`/v2/tasks`, a delivery's tasks) answer `tasks` and `next_token`.
_KnownPage = msgspec.defstruct(
    "_KnownPage",
    # mypy takes a struct made by `defstruct` for a variable, not a type.
    [("tasks", list[_Task]), ("next_token", t.Any, None)],  # type: ignore[valid-type]
)
_Page = msgspec.defstruct("_Page", [("tasks", list[_Fields]), ("next_token", t.Any, None)])

_parse = msgspec.json.Decoder().decode
# Typed Any for mypy, which cannot see the fields of a struct made by `defstruct`.
_known_page: t.Callable[[bytes], t.Any] = msgspec.json.Decoder(_KnownPage).decode
_page: t.Callable[[bytes], t.Any] = msgspec.json.Decoder(_Page).decode
_threads = msgspec.json.Decoder(list[_Thread]).decode
_asdict = msgspec.structs.asdict


def decode(content: bytes) -> Json | None:
    """A page's body with each task's turns unparsed; None if it must be parsed the usual way.

    That is, unless it is strict JSON, UTF-8 throughout (raw values are copied out unchecked,
    and skipping a value checks its escapes but not its bytes), whose `tasks` are objects, and
    holds no escape that could spell a secret past the writer's redaction.
    """
    if not content.isascii() and not _utf8(content):
        return None
    if may_hide_secrets(content):
        return None
    try:
        try:
            known = _known_page(content)
        except msgspec.ValidationError:
            # A field this release does not know, or threads that are not a list of objects.
            page = _page(content)
            return {
                "tasks": [_task_fields(task) for task in page.tasks],
                "next_token": page.next_token,
            }
    except (msgspec.DecodeError, RecursionError):
        # Not strict JSON, not an object, or nested deeper than a parser goes (msgspec's
        # ValidationError is a DecodeError): the usual way says which.
        return None
    return {"tasks": [_known_task(task) for task in known.tasks], "next_token": known.next_token}


# Bytes checked at a time: the text each piece decodes to stays under glibc's threshold for a
# mapping of its own (`tap_scale.memory`), so checking a page allocates nothing that faults in
# fresh pages: the whole page decoded at once cost a tenth of a sync's time in page faults.
_UTF8_PIECE = 16 * 1024


def _utf8(content: bytes) -> bool:
    """Whether the bytes are UTF-8 throughout."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(content)
    try:
        for start in range(0, len(view), _UTF8_PIECE):
            decoder.decode(view[start : start + _UTF8_PIECE])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _known_task(task: t.Any) -> Json:  # noqa: ANN401 - a `_Task`
    fields = {name: value for name, value in _asdict(task).items() if value is not _UNSET}
    threads = fields.get("threads")
    if threads:
        fields["threads"] = [_thread(thread) for thread in threads]
    return fields


def _task_fields(fields: Mapping[str, msgspec.Raw]) -> Json:
    return {
        name: _any_threads(value) if name == "threads" else _parse(value)
        for name, value in fields.items()
    }


def _any_threads(threads: msgspec.Raw) -> t.Any:  # noqa: ANN401 - whatever Scale sent
    try:
        return [_thread(thread) for thread in _threads(threads)]
    except msgspec.ValidationError:
        return _parse(threads)  # not a list of objects: kept as sent


def _thread(fields: Mapping[str, msgspec.Raw]) -> Json:
    return {name: value if name == RAW_FIELD else _parse(value) for name, value in fields.items()}


def materialised(task: Json) -> Json:
    """The task with its threads' turns parsed: itself if they are, else a shallow copy."""
    threads = task.get("threads")
    if not isinstance(threads, list) or not any(
        isinstance(thread, dict) and isinstance(thread.get(RAW_FIELD), msgspec.Raw)
        for thread in threads
    ):
        return task
    parsed = [
        {**thread, RAW_FIELD: parse_any(thread[RAW_FIELD])}
        if isinstance(thread, dict) and isinstance(thread.get(RAW_FIELD), msgspec.Raw)
        else thread
        for thread in threads
    ]
    return {**task, "threads": parsed}


def parse_any(content: bytes | msgspec.Raw) -> t.Any:  # noqa: ANN401 - whatever Scale sent
    """JSON already checked (kept-raw turns, a handed-over task) as objects, any numbers.

    Skipping turns checked all but a number's range (`1e309`, 2**64 and more), which msgspec
    refuses: Python's reader takes those, as a lenient page read does.
    """
    try:
        return _parse(content)
    except msgspec.ValidationError:
        return json.loads(bytes(content))
