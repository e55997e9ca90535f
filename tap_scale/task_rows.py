"""A task's flat rows: its messages, its annotations wherever they sit, its rankings as pairs.

Scale nests what raters produce four levels deep (thread, turn, message, content chunk) and
beside the messages in rubrics (a turn's criterion definitions, a message's rubric evaluations
and their criterion evaluations). Analysts count messages, annotations and preferences, so each
becomes one row here, carrying the task's columns (``base``) and where it sits.

Pure functions of one task record: no I/O, nothing kept between tasks. A task arrives as Scale
sent it, so every part may be missing or of an unexpected type; such parts yield no rows instead
of failing the sync (the task itself still carries them whole).
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

Row = dict[str, t.Any]

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
_NOWHERE: Row = dict.fromkeys(PLACE_COLUMNS)

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
_NUMBER_IN_OBJECT = {"rubric_criteria": "weight", "rubric_rating": "score"}
VALUE_COLUMNS = ("value_number", "value_boolean", "value_text", "value_texts")

RANKING_TYPES = frozenset({"ranked_choices", "ranked_groups"})


def _dicts(items: object) -> Iterator[tuple[int, Row]]:
    """The objects of a list with their positions; anything else holds none."""
    if isinstance(items, list):
        for index, item in enumerate(items):
            if isinstance(item, dict):
                yield index, item


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


# --- Messages -----------------------------------------------------------------------------------


def message_rows(task: Row, base: Row) -> Iterator[Row]:
    """One row per message of every turn of every thread of the task."""
    for _, thread in _dicts(task.get("threads")):
        thread_id = thread.get("id")
        for turn_index, turn in _dicts(thread.get("turns")):
            turn_id = turn.get("id")
            for message_index, message in _dicts(turn.get("messages")):
                content = message.get("content")
                parameters = message.get("model_parameters")
                yield {
                    **base,
                    "thread_id": thread_id,
                    "turn_id": turn_id,
                    "turn_index": turn_index,
                    "message_index": message_index,
                    "role": message.get("role"),
                    "source_id": message.get("source_id"),
                    "text": _text(content.get("text")) if isinstance(content, dict) else None,
                    "model": (
                        _text(parameters.get("model")) if isinstance(parameters, dict) else None
                    ),
                    "model_parameters": parameters,
                    "content": content,
                    "rubric_evaluations": message.get("rubric_evaluations"),
                }


# --- Where annotations sit ----------------------------------------------------------------------


def places(task: Row) -> Iterator[tuple[Row, object, str]]:
    """Every list of annotations in the task: (its place columns, the list, its JSON Pointer).

    The pointer (RFC 6901, into the task) names the list's position, for annotations Scale sent
    without an id.
    """
    for thread_index, thread in _dicts(task.get("threads")):
        thread_path = f"/threads/{thread_index}"
        thread_place = {**_NOWHERE, "thread_id": thread.get("id")}
        yield {**thread_place, "level": "thread"}, thread.get("annotations"), thread_path
        for turn_index, turn in _dicts(thread.get("turns")):
            turn_path = f"{thread_path}/turns/{turn_index}"
            turn_place = {**thread_place, "turn_id": turn.get("id"), "turn_index": turn_index}
            yield {**turn_place, "level": "turn"}, turn.get("annotations"), turn_path
            criteria = yield from _criterion_definitions(turn, turn_place, turn_path)
            for message_index, message in _dicts(turn.get("messages")):
                message_path = f"{turn_path}/messages/{message_index}"
                message_place = {
                    **turn_place,
                    "message_index": message_index,
                    "source_id": message.get("source_id"),
                }
                yield (
                    {**message_place, "level": "message"},
                    message.get("annotations"),
                    message_path,
                )
                content = message.get("content")
                if isinstance(content, dict):
                    for chunk_index, chunk in _dicts(content.get("chunks")):
                        yield (
                            {**message_place, "level": "chunk", "chunk_index": chunk_index},
                            chunk.get("annotations"),
                            f"{message_path}/content/chunks/{chunk_index}",
                        )
                yield from _rubric_evaluations(message, message_place, message_path, criteria)


def _criterion_definitions(
    turn: Row, turn_place: Row, turn_path: str
) -> t.Generator[tuple[Row, object, str], None, dict[str, object]]:
    """The annotations of a turn's rubric criteria; returns each criterion's text by its id."""
    criteria: dict[str, object] = {}
    for rubric_index, rubric in _dicts(turn.get("rubrics")):
        for index, definition in _dicts(rubric.get("criteria_definitions")):
            definition_id = definition.get("id")
            criterion = _text(definition.get("criterion"))
            if isinstance(definition_id, str):
                criteria[definition_id] = criterion
            place = {
                **turn_place,
                "level": "criterion_definition",
                "rubric_index": rubric_index,
                "criterion_definition_id": definition_id,
                "criterion": criterion,
            }
            path = f"{turn_path}/rubrics/{rubric_index}/criteria_definitions/{index}"
            yield place, definition.get("annotations"), path
    return criteria


def _rubric_evaluations(
    message: Row, message_place: Row, message_path: str, criteria: Mapping[str, object]
) -> Iterator[tuple[Row, object, str]]:
    for rubric_index, evaluation in _dicts(message.get("rubric_evaluations")):
        path = f"{message_path}/rubric_evaluations/{rubric_index}"
        place = {**message_place, "rubric_index": rubric_index}
        yield {**place, "level": "rubric_evaluation"}, evaluation.get("annotations"), path
        for index, criterion_evaluation in _dicts(evaluation.get("criteria_evaluations")):
            definition_id = criterion_evaluation.get("criterion_definition_id")
            yield (
                {
                    **place,
                    "level": "criterion_evaluation",
                    "criterion_definition_id": definition_id,
                    # The criterion's text, from the turn's rubric that defines it.
                    "criterion": (
                        criteria.get(definition_id) if isinstance(definition_id, str) else None
                    ),
                },
                criterion_evaluation.get("annotations"),
                f"{path}/criteria_evaluations/{index}",
            )


def located_annotations(task: Row) -> Iterator[tuple[Row, str, Row]]:
    """Every annotation of the task: (its place columns, its id, the annotation)."""
    for place, listed, path in places(task):
        for index, annotation in _dicts(listed):
            yield place, annotation_id(annotation, path, index), annotation


def annotation_id(annotation: Row, list_path: str, index: int) -> str:
    """The annotation's own id, or, when Scale sent none, its JSON Pointer in the task.

    Scale omits ids when a task is read without the `annotation_details` opt.
    """
    own = annotation.get("id")
    return own if isinstance(own, str) and own else f"{list_path}/annotations/{index}"


# --- Annotations --------------------------------------------------------------------------------


def typed_value(annotation_type: object, value: object) -> Row:
    """The value in the column its annotation type gives it; the other typed columns null.

    A value of another JSON type than its annotation type promises is left untyped (it stays
    whole in `value`): nothing is converted, so a typed value always equals the raw one. With no
    type (tasks read without `annotation_details`) or a type newer than this release, the value
    is typed by its JSON type alone.
    """
    typed = dict.fromkeys(VALUE_COLUMNS)
    if isinstance(annotation_type, str) and annotation_type in TYPED_COLUMNS:
        column = TYPED_COLUMNS[annotation_type]
        if annotation_type in _NUMBER_IN_OBJECT:
            value = (
                value.get(_NUMBER_IN_OBJECT[annotation_type]) if isinstance(value, dict) else None
            )
        if column is not None and _json_column(value) == column:
            typed[column] = value
    elif (column := _json_column(value)) is not None:
        typed[column] = value
    return typed


def _json_column(value: object) -> str | None:
    """The typed column a JSON value fits, if any."""
    if isinstance(value, bool):
        return "value_boolean"
    if isinstance(value, (int, float)):
        return "value_number"
    if isinstance(value, str):
        return "value_text"
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "value_texts"
    return None


def annotation_row(base: Row, place: Row, identifier: str, annotation: Row) -> Row:
    """The row of one annotation: the task's columns, where it sits, and its fields."""
    value = annotation.get("value")
    annotation_type = annotation.get("type")
    return {
        **base,
        "annotation_id": identifier,
        **place,
        "key": annotation.get("key"),
        "type": annotation_type,
        "title": annotation.get("title"),
        "description": annotation.get("description"),
        "labels": annotation.get("labels"),
        "not_applicable": annotation.get("not_applicable"),
        "cannot_assess": annotation.get("cannot_assess"),
        "justification": annotation.get("justification"),
        "metadata": annotation.get("metadata"),
        "possible_values": annotation.get("possible_values"),
        "value": value,
        **typed_value(annotation_type, value),
    }


def annotation_rows(task: Row, base: Row) -> Iterator[Row]:
    """One row per annotation of the task, at every level, with its value typed."""
    for place, identifier, annotation in located_annotations(task):
        yield annotation_row(base, place, identifier, annotation)


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


def ranking_rows(base: Row, place: Row, identifier: str, annotation: Row) -> Iterator[Row]:
    """The preference rows of one annotation: its ordered pairs if it is a ranking, else none."""
    annotation_type = annotation.get("type")
    if not (isinstance(annotation_type, str) and annotation_type in RANKING_TYPES):
        return
    identity = {
        **base,
        "annotation_id": identifier,
        **place,
        "key": annotation.get("key"),
        "type": annotation_type,
    }
    for preferred, rejected, preferred_rank, rejected_rank in pairs(
        annotation_type, annotation.get("value")
    ):
        yield {
            **identity,
            "preferred": preferred,
            "rejected": rejected,
            "preferred_rank": preferred_rank,
            "rejected_rank": rejected_rank,
            "tie": preferred_rank == rejected_rank,
        }


def preference_rows(task: Row, base: Row) -> Iterator[Row]:
    """One row per ordered pair of every ranking annotation of the task, wherever it sits."""
    for place, identifier, annotation in located_annotations(task):
        yield from ranking_rows(base, place, identifier, annotation)
