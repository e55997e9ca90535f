"""A task's flat rows: its messages, its annotations wherever they sit, its rankings as pairs.

Scale nests what raters produce four levels deep (thread, turn, message, content chunk) and
beside the messages in rubrics (a turn's criterion definitions, a message's rubric evaluations
and their criterion evaluations). Analysts count messages, annotations and preferences, so each
becomes one row here: the task's columns, where it sits, and what it holds.

Pure functions of one task record: no I/O, nothing kept between tasks. A task arrives as Scale
sent it, so every part may be missing or of an unexpected type; such parts yield no rows instead
of failing the sync (the task itself still carries them whole).

Rows are msgspec Structs, whose fields are their stream's columns in order: a task has dozens of
rows, and a Struct is built and encoded in half the time of a dict. A field that does not apply
(None) is left out of the row's JSON (`omit_defaults`), which targets store as null.
"""

from __future__ import annotations

import itertools
import typing as t

import msgspec

from tap_scale.models import ANNOTATION, MESSAGE

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

Json = dict[str, t.Any]
_encode = msgspec.json.Encoder().encode

# The fields of Scale's Message and Annotation this release knows.
MESSAGE_FIELDS = frozenset(MESSAGE.to_dict()["properties"])
ANNOTATION_FIELDS = frozenset(ANNOTATION.to_dict()["properties"])

# The JSON type each of their fields that fills a column of its own must have: a row's columns
# are a target's typed columns, which a value of another type would fail to load.
MESSAGE_COLUMN_TYPES: Mapping[str, type] = {
    "role": str,
    "source_id": str,
    "content": dict,
    "model_parameters": dict,
    "rubric_evaluations": list,
}
ANNOTATION_COLUMN_TYPES: Mapping[str, type] = {
    "key": str,
    "type": str,
    "title": str,
    "labels": list,
    "not_applicable": bool,
    "cannot_assess": bool,
    "justification": str,
    "possible_values": list,
}


class Fields:
    """How one of Scale's objects fills a row: its fields for their columns, and the rest."""

    __slots__ = ("_allowed", "_fitting", "_known", "_strings", "names")

    def __init__(
        self, column_types: Mapping[str, type], known: frozenset[str], strings: str | None = None
    ) -> None:
        """The fields with these column types, among those this release knows.

        ``strings`` names a list field whose items must all be strings.
        """
        #: The fields with columns of their own, in the order of those columns.
        self.names = tuple(column_types)
        # Every combination of the types the fields may have (each its own, or null): checking
        # an object is then one lookup of its types, for every message and annotation.
        self._allowed = tuple(frozenset({kind, type(None)}) for kind in column_types.values())
        self._fitting = frozenset(itertools.product(*self._allowed))
        self._known = known
        self._strings = self.names.index(strings) if strings is not None else None

    def split(self, scale_object: Json) -> tuple[tuple[t.Any, ...], Json | None]:
        """The values of the fields' columns (`names`), and what the row keeps aside.

        Kept aside, in `additional_properties`, as sent: fields this release does not know, and
        fields of another type than their column's (whose column is then null).
        """
        values = tuple(map(scale_object.get, self.names))
        if tuple(map(type, values)) in self._fitting and (
            self._strings is None or _all_strings(values[self._strings])
        ):
            if self._known.issuperset(scale_object):
                return values, None
            return values, {name: scale_object[name] for name in scale_object.keys() - self._known}
        misfits = {
            name
            for name, value, allowed in zip(self.names, values, self._allowed, strict=True)
            if type(value) not in allowed
        }
        if self._strings is not None and not _all_strings(values[self._strings]):
            misfits.add(self.names[self._strings])
        aside = misfits | (scale_object.keys() - self._known)
        fitting = tuple(
            None if name in misfits else value
            for name, value in zip(self.names, values, strict=True)
        )
        return fitting, {name: scale_object[name] for name in aside}


def _all_strings(value: object) -> bool:
    """Whether a list holds only strings (anything else is checked elsewhere)."""
    return type(value) is not list or not value or set(map(type, value)) <= {str}


# What the usual case checks field by field (see `message_row` and `annotation_row`).
_STRING, _BOOLEAN, _OBJECT, _LIST = (
    frozenset({kind, type(None)}) for kind in (str, bool, dict, list)
)

MESSAGE_ROW_FIELDS = Fields(MESSAGE_COLUMN_TYPES, MESSAGE_FIELDS)
ANNOTATION_ROW_FIELDS = Fields(ANNOTATION_COLUMN_TYPES, ANNOTATION_FIELDS, strings="labels")


class TaskColumns(msgspec.Struct, omit_defaults=True):
    """The task's columns that begin every row; the delivery's only for delivered tasks."""

    delivery: str | None = None
    delivered_at: str | None = None
    task_id: str | None = None
    project: str | None = None
    batch: str | None = None
    completed_at: str | None = None


class MessageRow(TaskColumns, omit_defaults=True):
    """One message of one turn of one thread."""

    thread_id: t.Any = None
    turn_id: t.Any = None
    turn_index: int | None = None
    message_index: int | None = None
    role: t.Any = None
    source_id: t.Any = None
    text: str | None = None
    model: str | None = None
    model_parameters: t.Any = None
    content: t.Any = None
    rubric_evaluations: t.Any = None
    additional_properties: Json | None = None


class _Placed(TaskColumns, omit_defaults=True):
    """A row about one annotation: its id, and where it sits (`PLACE_COLUMNS`)."""

    annotation_id: str | None = None
    level: str | None = None
    thread_id: t.Any = None
    turn_id: t.Any = None
    turn_index: int | None = None
    message_index: int | None = None
    source_id: t.Any = None
    chunk_index: int | None = None
    rubric_index: int | None = None
    criterion_definition_id: t.Any = None
    criterion: str | None = None
    key: t.Any = None
    type: t.Any = None


class AnnotationRow(_Placed, omit_defaults=True):
    """One annotation, its value whole (as JSON text) and in the typed column its type gives it."""

    title: t.Any = None
    labels: t.Any = None
    not_applicable: t.Any = None
    cannot_assess: t.Any = None
    justification: t.Any = None
    possible_values: t.Any = None
    value: t.Any = None
    value_number: t.Any = None
    value_boolean: t.Any = None
    value_text: t.Any = None
    value_texts: t.Any = None
    additional_properties: Json | None = None


class PreferenceRow(_Placed, omit_defaults=True):
    """One ordered pair of a ranking: the preferred choice, the rejected one, their ranks."""

    preferred: str | None = None
    rejected: str | None = None
    preferred_rank: int | None = None
    rejected_rank: int | None = None
    tie: bool | None = None
    # Always null: a pair is no object of Scale's; the column is every stream's.
    additional_properties: Json | None = None


Row = MessageRow | AnnotationRow | PreferenceRow
Base = tuple[t.Any, t.Any, t.Any, t.Any, t.Any, t.Any]
# Where a list of annotations sits: the values of `PLACE_COLUMNS`, in order.
Place = tuple[t.Any, t.Any, t.Any, t.Any, t.Any, t.Any, t.Any, t.Any, t.Any, t.Any]
# Where a message sits: thread_id, turn_id, turn_index, message_index, source_id.
MessageAt = tuple[t.Any, t.Any, int, int, t.Any]


def task_columns(record: Json) -> Base:
    """The values of `TaskColumns` for a task record (a delivered task's carries its delivery)."""
    get = record.get
    return (
        get("delivery"),
        get("delivered_at"),
        get("task_id"),
        get("project"),
        get("batch"),
        get("completed_at"),
    )


#: Where an annotation can sit, in Scale's own words.
LEVELS = (
    "thread",
    "turn",
    "message",
    "chunk",
    "rubric_evaluation",
    "criterion_evaluation",
    "criterion_definition",
)

#: The columns that say where an annotation (or a ranking) sits; None where they do not apply.
PLACE_COLUMNS = (
    "level",
    "thread_id",
    "turn_id",
    "turn_index",
    "message_index",
    "source_id",
    "chunk_index",
    "rubric_index",
    "criterion_definition_id",
    "criterion",
)

#: Scale's twelve annotation types, by the typed column their value lands in (None: `value` only).
#: Rubric ratings and criteria are objects: their `score` and `weight` are the numbers.
TYPED_COLUMNS: Mapping[str, str | None] = {
    "integer": "value_number",
    "boolean": "value_boolean",
    "text": "value_text",
    "category": "value_text",
    "category_multiple": "value_texts",
    "ranked_choices": "value_texts",
    "ranked_groups": None,  # tiers of choices: see `preference_rows`
    "labeled_text": None,
    "file": None,
    "rubric_criteria": "value_number",  # its `weight`
    "rubric_rating": "value_number",  # its `score`
    "workspace_container": None,
}
VALUE_COLUMNS = ("value_number", "value_boolean", "value_text", "value_texts")


def _dicts(items: object) -> list[tuple[int, Json]]:
    """The objects of a list with their positions; anything else holds none."""
    if not isinstance(items, list):
        return []
    return [(index, item) for index, item in enumerate(items) if isinstance(item, dict)]


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _id(value: object) -> str | None:
    """An id as a string column takes it: Scale's ids are strings, anything else is written out.

    Ids key rows, so one of another type is kept, as its JSON text, rather than left out.
    """
    return value if value is None or isinstance(value, str) else _encode(value).decode()


# --- Messages -----------------------------------------------------------------------------------


def message_rows(task: Json) -> Iterator[MessageRow]:
    """One row per message of every turn of every thread of the task."""
    base = task_columns(task)
    for _, thread in _dicts(task.get("threads")):
        thread_id = _id(thread.get("id"))
        for turn_index, turn in _dicts(thread.get("turns")):
            turn_id = _id(turn.get("id"))
            for message_index, message in _dicts(turn.get("messages")):
                yield message_row(base, (thread_id, turn_id, turn_index, message_index), message)


def message_row(base: Base, at: tuple[t.Any, t.Any, int, int], message: Json) -> MessageRow:
    """The row of one message: the task's columns, where it sits, and its fields.

    ``at`` is where: thread_id, turn_id, turn_index, message_index. A field this release does
    not know, or of another type than its column's, is kept as sent in `additional_properties`.
    """
    get = message.get
    role, source_id, content = get("role"), get("source_id"), get("content")
    parameters, evaluations = get("model_parameters"), get("rubric_evaluations")
    # `MESSAGE_ROW_FIELDS.split`, spelled out for the usual case, as for annotations.
    if (
        type(role) in _STRING
        and type(source_id) in _STRING
        and type(content) in _OBJECT
        and type(parameters) in _OBJECT
        and type(evaluations) in _LIST
    ):
        # Fields this release does not know (Scale adds some), kept as sent.
        fields = message.keys()
        unknown = None if fields <= MESSAGE_FIELDS else fields - MESSAGE_FIELDS
        additional = None if unknown is None else {name: message[name] for name in unknown}
    else:
        columns, additional = MESSAGE_ROW_FIELDS.split(message)
        role, source_id, content, parameters, evaluations = columns
    return MessageRow(
        *base,
        *at,
        role,
        source_id,
        _text(content.get("text")) if content is not None else None,
        _text(parameters.get("model")) if parameters is not None else None,
        parameters,
        content,
        evaluations,
        additional,
    )


# --- Where annotations sit ----------------------------------------------------------------------


def places(task: Json) -> Iterator[tuple[Place, list[t.Any], str]]:
    """Every list of annotations in the task: (its `Place`, the list, its JSON Pointer).

    The pointer (RFC 6901, into the task) names the list's position, for annotations Scale sent
    without an id. Empty lists, the most common, are passed over.
    """
    for thread_index, thread in _dicts(task.get("threads")):
        thread_id = _id(thread.get("id"))
        thread_path = f"/threads/{thread_index}"
        if listed := _annotations(thread):
            place: Place = ("thread", thread_id, None, None, None, None, None, None, None, None)
            yield place, listed, thread_path
        for turn_index, turn in _dicts(thread.get("turns")):
            turn_id = _id(turn.get("id"))
            turn_path = f"{thread_path}/turns/{turn_index}"
            if listed := _annotations(turn):
                place = ("turn", thread_id, turn_id, turn_index, None, None, None, None, None, None)
                yield place, listed, turn_path
            criteria = yield from _criterion_definitions(turn, thread_id, turn_index, turn_path)
            for message_index, message in _dicts(turn.get("messages")):
                # Where the message sits: a place's columns up to `source_id`.
                at = (
                    thread_id,
                    turn_id,
                    turn_index,
                    message_index,
                    _text(message.get("source_id")),
                )
                message_path = f"{turn_path}/messages/{message_index}"
                yield from _message_places(message, at, message_path, criteria)


def _message_places(
    message: Json, at: MessageAt, message_path: str, criteria: Mapping[str, str | None]
) -> Iterator[tuple[Place, list[t.Any], str]]:
    """The lists of annotations on a message, its content's chunks and its rubric evaluations."""
    if listed := _annotations(message):
        yield ("message", *at, None, None, None, None), listed, message_path
    content = message.get("content")
    if isinstance(content, dict):
        for chunk_index, chunk in _dicts(content.get("chunks")):
            if listed := _annotations(chunk):
                path = f"{message_path}/content/chunks/{chunk_index}"
                yield ("chunk", *at, chunk_index, None, None, None), listed, path
    for rubric_index, evaluation in _dicts(message.get("rubric_evaluations")):
        path = f"{message_path}/rubric_evaluations/{rubric_index}"
        if listed := _annotations(evaluation):
            yield ("rubric_evaluation", *at, None, rubric_index, None, None), listed, path
        for index, criterion_evaluation in _dicts(evaluation.get("criteria_evaluations")):
            if listed := _annotations(criterion_evaluation):
                definition_id = _id(criterion_evaluation.get("criterion_definition_id"))
                # The criterion's text, from the turn's rubric that defines it.
                criterion = criteria.get(definition_id) if isinstance(definition_id, str) else None
                yield (
                    ("criterion_evaluation", *at, None, rubric_index, definition_id, criterion),
                    listed,
                    f"{path}/criteria_evaluations/{index}",
                )


def _annotations(holder: Json) -> list[t.Any]:
    """The annotations listed on a thread, turn, message, chunk or rubric part; maybe none."""
    listed = holder.get("annotations")
    return listed if isinstance(listed, list) else []


def _criterion_definitions(
    turn: Json, thread_id: object, turn_index: int, turn_path: str
) -> t.Generator[tuple[Place, list[t.Any], str], None, dict[str, str | None]]:
    """The annotations of a turn's rubric criteria; returns each criterion's text by its id."""
    criteria: dict[str, str | None] = {}
    turn_id = _id(turn.get("id"))
    for rubric_index, rubric in _dicts(turn.get("rubrics")):
        for index, definition in _dicts(rubric.get("criteria_definitions")):
            definition_id = _id(definition.get("id"))
            criterion = _text(definition.get("criterion"))
            if isinstance(definition_id, str):
                criteria[definition_id] = criterion
            if listed := _annotations(definition):
                place = (
                    "criterion_definition",
                    thread_id,
                    turn_id,
                    turn_index,
                    None,
                    None,
                    None,
                    rubric_index,
                    definition_id,
                    criterion,
                )
                path = f"{turn_path}/rubrics/{rubric_index}/criteria_definitions/{index}"
                yield place, listed, path
    return criteria


def located_annotations(task: Json) -> Iterator[tuple[Place, str, Json]]:
    """Every annotation of the task: (its `Place`, its id, the annotation)."""
    for place, listed, path in places(task):
        for index, annotation in enumerate(listed):
            if isinstance(annotation, dict):
                yield place, annotation_id(annotation, path, index), annotation


def annotation_id(annotation: Json, list_path: str, index: int) -> str:
    """The annotation's own id, or, when Scale sent none, its JSON Pointer in the task.

    Scale omits ids when a task is read without the `annotation_details` opt.
    """
    own = annotation.get("id")
    return own if isinstance(own, str) and own else f"{list_path}/annotations/{index}"


# --- Annotations --------------------------------------------------------------------------------


TypedValue = tuple[object, object, object, object]
_UNTYPED: TypedValue = (None, None, None, None)
# Exact types: JSON gives no subclasses, and a boolean is not a number here.
_NUMBERS = frozenset({int, float})


def _number(value: object) -> TypedValue:
    return (value, None, None, None) if type(value) in _NUMBERS else _UNTYPED


def _boolean(value: object) -> TypedValue:
    return (None, value, None, None) if type(value) is bool else _UNTYPED


def _string(value: object) -> TypedValue:
    return (None, None, value, None) if type(value) is str else _UNTYPED


def _strings(value: object) -> TypedValue:
    if type(value) is list and all(type(item) is str for item in value):
        return (None, None, None, value)
    return _UNTYPED


def _number_in(name: str) -> t.Callable[[object], TypedValue]:
    return lambda value: _number(value.get(name)) if type(value) is dict else _UNTYPED


def _untyped(_: object) -> TypedValue:
    return _UNTYPED


def _by_json_type(value: object) -> TypedValue:
    """For a type this release does not know, or none: the column the JSON value fits."""
    for typed in (_number, _boolean, _string, _strings):
        if (result := typed(value)) is not _UNTYPED:
            return result
    return _UNTYPED


# How each of the twelve types is typed; the keys are those of `TYPED_COLUMNS`.
_TYPERS: Mapping[str, t.Callable[[object], TypedValue]] = {
    "integer": _number,
    "boolean": _boolean,
    "text": _string,
    "category": _string,
    "category_multiple": _strings,
    "ranked_choices": _strings,
    "ranked_groups": _untyped,
    "labeled_text": _untyped,
    "file": _untyped,
    "rubric_criteria": _number_in("weight"),
    "rubric_rating": _number_in("score"),
    "workspace_container": _untyped,
}


def typed_value(annotation_type: object, value: object) -> TypedValue:
    """The value in the column its annotation type gives it (`VALUE_COLUMNS` order), else None.

    A value of another JSON type than its annotation type promises is left untyped (it stays
    whole in `value`): nothing is converted, so a typed value always equals the raw one. With no
    type (tasks read without `annotation_details`) or a type newer than this release, the value
    is typed by its JSON type alone.
    """
    typer = _TYPERS.get(annotation_type) if type(annotation_type) is str else None
    return (typer or _by_json_type)(value)


#: The columns of an annotation's row that are its own, in the row's order: all but the task's
#: and where it sits.
ANNOTATION_OWN_COLUMNS = tuple(
    name
    for name in AnnotationRow.__struct_fields__
    if name not in TaskColumns.__struct_fields__ and name not in PLACE_COLUMNS
)
#: An annotation's own columns: what its row adds to those it shares with its list.
AnnotationColumns: type[msgspec.Struct] = msgspec.defstruct(
    "AnnotationColumns",
    [(name, t.Any, None) for name in ANNOTATION_OWN_COLUMNS],
    omit_defaults=True,
)


def annotation_columns(identifier: str, annotation: Json) -> msgspec.Struct:
    """An annotation's own columns (`ANNOTATION_OWN_COLUMNS`, an `AnnotationColumns`).

    A field this release does not know, or of another type than its column's, is kept as sent
    in `additional_properties`.
    """
    get = annotation.get
    key, kind, title, labels = get("key"), get("type"), get("title"), get("labels")
    not_applicable, cannot_assess = get("not_applicable"), get("cannot_assess")
    justification, choices, value = get("justification"), get("possible_values"), get("value")
    # `ANNOTATION_ROW_FIELDS.split`, spelled out for the usual case (every field as expected):
    # this runs for every annotation, and a loop over the fields costs twice as much.
    if (
        type(key) in _STRING
        and type(kind) in _STRING
        and type(title) in _STRING
        and type(labels) in _LIST
        and type(not_applicable) in _BOOLEAN
        and type(cannot_assess) in _BOOLEAN
        and type(justification) in _STRING
        and type(choices) in _LIST
        and _all_strings(labels)
    ):
        # Fields this release does not know (Scale adds some), kept as sent.
        fields = annotation.keys()
        unknown = None if fields <= ANNOTATION_FIELDS else fields - ANNOTATION_FIELDS
        additional = None if unknown is None else {name: annotation[name] for name in unknown}
    else:
        columns, additional = ANNOTATION_ROW_FIELDS.split(annotation)
        key, kind, title, labels, not_applicable, cannot_assess, justification, choices = columns
    return AnnotationColumns(
        identifier,
        key,
        kind,
        title,
        labels,
        not_applicable,
        cannot_assess,
        justification,
        choices,
        None if value is None else _encode(value).decode(),
        # `typed_value`, spelled out: it too runs for every annotation.
        *((_TYPERS.get(kind) if type(kind) is str else None) or _by_json_type)(value),
        additional,
    )


def annotation_row(base: Base, place: Place, identifier: str, annotation: Json) -> AnnotationRow:
    """The row of one annotation: the task's columns, where it sits, and its own columns."""
    own = msgspec.structs.astuple(annotation_columns(identifier, annotation))
    # Positional, in the order of the fields: the fastest way to build a Struct.
    return AnnotationRow(*base, own[0], *place, *own[1:])


def annotation_rows_at(
    base: Base, place: Place, listed: list[t.Any], path: str
) -> list[AnnotationRow]:
    """The rows of the annotations of one list (`places`)."""
    return [
        annotation_row(base, place, annotation_id(annotation, path, index), annotation)
        for index, annotation in enumerate(listed)
        if isinstance(annotation, dict)
    ]


def annotation_rows(task: Json) -> Iterator[AnnotationRow]:
    """One row per annotation of the task, at every level, with its value typed."""
    base = task_columns(task)
    for place, listed, path in places(task):
        yield from annotation_rows_at(base, place, listed, path)


# --- Preferences --------------------------------------------------------------------------------


def ranks(annotation_type: object, value: object) -> list[tuple[str, int]]:
    """A ranking's choices, best first, each with its rank (1 is best; a group shares one).

    `ranked_choices` lists choices best first; `ranked_groups` lists groups best first, the
    choices of one group tied. A choice listed twice keeps its first (best) rank; anything that
    is not a choice's name is passed over.
    """
    if not isinstance(value, list):
        return []
    if annotation_type == "ranked_choices":
        groups: list[object] = [[choice] for choice in value]
    elif annotation_type == "ranked_groups":
        groups = value
    else:
        return []
    ranked: dict[str, int] = {}
    for rank, group in enumerate(groups, start=1):
        for choice in group if isinstance(group, list) else ():
            if isinstance(choice, str):
                ranked.setdefault(choice, rank)
    return list(ranked.items())


def pairs(annotation_type: object, value: object) -> Iterator[tuple[str, str, int, int]]:
    """Every ordered pair of a ranking: (preferred, rejected, their ranks); n(n-1)/2 of them.

    Choices of one group are a tie: listed in the group's order, with equal ranks.
    """
    ranked = ranks(annotation_type, value)
    for position, (preferred, preferred_rank) in enumerate(ranked):
        for rejected, rejected_rank in ranked[position + 1 :]:
            yield preferred, rejected, preferred_rank, rejected_rank


_RANKINGS = ("ranked_choices", "ranked_groups")


def ranking_rows(
    base: Base, place: Place, identifier: str, annotation: Json
) -> list[PreferenceRow]:
    """The preference rows of one annotation: its ordered pairs if it is a ranking, else none."""
    annotation_type = annotation.get("type")
    # Compared, not looked up in a set: a malformed type may be unhashable.
    if annotation_type != "ranked_choices" and annotation_type != "ranked_groups":  # noqa: PLR1714
        return []
    key = _text(annotation.get("key"))
    return [
        PreferenceRow(
            *base,
            identifier,
            *place,
            key,
            annotation_type,
            preferred,
            rejected,
            preferred_rank,
            rejected_rank,
            preferred_rank == rejected_rank,
        )
        for preferred, rejected, preferred_rank, rejected_rank in pairs(
            annotation_type, annotation.get("value")
        )
    ]


def preference_rows_at(
    base: Base, place: Place, listed: list[t.Any], path: str
) -> list[PreferenceRow]:
    """The preference rows of the rankings in one list of annotations (`places`)."""
    return [
        row
        for index, annotation in enumerate(listed)
        # A tuple, not a set: a malformed type may be unhashable.
        if isinstance(annotation, dict) and annotation.get("type") in _RANKINGS
        for row in ranking_rows(base, place, annotation_id(annotation, path, index), annotation)
    ]


def preference_rows(task: Json) -> Iterator[PreferenceRow]:
    """One row per ordered pair of every ranking annotation of the task, wherever it sits."""
    base = task_columns(task)
    for place, listed, path in places(task):
        yield from preference_rows_at(base, place, listed, path)
