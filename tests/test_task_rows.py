"""Deriving flat rows from a task: every message, every annotation, every preference pair.

Checked against hand-made tasks and against every completed task of a simulated account, whose
annotations are found here by a walk of their own that knows nothing of Scale's levels: any
object listed under an `annotations` key, however deep.
"""

from __future__ import annotations

import copy
import itertools
import json
import typing as t

import msgspec
import pytest

from tap_scale import task_rows
from tap_scale.models import (
    DELIVERY_TASK_ANNOTATION,
    DELIVERY_TASK_MESSAGE,
    DELIVERY_TASK_PREFERENCE,
    TASK_ANNOTATION,
    TASK_MESSAGE,
    TASK_PREFERENCE,
)
from tap_scale.testing import ScaleSimulator
from tap_scale.testing.annotations import ANNOTATION_TYPES

if t.TYPE_CHECKING:
    from singer_sdk import typing as th

Row = dict[str, t.Any]


def derive_rows(derive: t.Callable[[Row], t.Iterable[msgspec.Struct]], task: Row) -> list[Row]:
    """A task's rows of one kind, each as a dict of every column (None where it does not apply)."""
    return [msgspec.structs.asdict(row) for row in derive(task)]


@pytest.fixture(scope="module")
def scale_tasks() -> list[Row]:
    """Every completed task of a simulated account, as Scale renders them with every opt."""
    return ScaleSimulator(seed=3, tasks_per_project=120).tasks(status="completed")


def every_annotation(node: object, path: str = "") -> t.Iterator[tuple[str, Row]]:
    """(JSON Pointer, annotation) of every object in a list under an `annotations` key."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "annotations" and isinstance(value, list):
                for index, item in enumerate(value):
                    if isinstance(item, dict):
                        yield f"{path}/annotations/{index}", item
            yield from every_annotation(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from every_annotation(item, f"{path}/{index}")


def test_every_annotation_of_every_task_is_one_row(scale_tasks: list[Row]) -> None:
    levels: set[tuple[str, str]] = set()
    for task in scale_tasks:
        rows = list(derive_rows(task_rows.annotation_rows, task))
        expected = {annotation["id"]: annotation for _, annotation in every_annotation(task)}
        assert sorted(row["annotation_id"] for row in rows) == sorted(expected)
        for row in rows:
            annotation = expected[row["annotation_id"]]
            # Whole, as JSON text: every target can store it.
            if "value" in annotation:
                assert json.loads(row["value"]) == annotation["value"]
            else:
                assert row["value"] is None
            assert (row["key"], row["type"]) == (annotation["key"], annotation["type"])
            assert_typed_as_raw(row, annotation)
            levels.add((row["level"], row["type"]))
    # The simulated account has every annotation type at every level, as Scale's models allow.
    assert levels == set(itertools.product(task_rows.LEVELS, ANNOTATION_TYPES))


def assert_typed_as_raw(row: Row, annotation: Row) -> None:
    """The typed column its type names holds the raw value (or its number); the others null."""
    value = annotation.get("value")
    column = task_rows.TYPED_COLUMNS[annotation["type"]]
    if isinstance(value, dict):  # rubric ratings and criteria: their number
        value = value.get(
            {"rubric_rating": "score", "rubric_criteria": "weight"}.get(annotation["type"], "")
        )
    typed = {name: row[name] for name in task_rows.VALUE_COLUMNS if row[name] is not None}
    if column is None or value is None:
        assert typed == {}, annotation
    else:
        assert typed == {column: value}, annotation
        assert type(typed[column]) is type(value)


def test_every_message_of_every_task_is_one_row(scale_tasks: list[Row]) -> None:
    for task in scale_tasks:
        rows = list(derive_rows(task_rows.message_rows, task))
        messages = [
            (thread["id"], turn["id"], index, message)
            for thread in task.get("threads") or ()
            for turn in thread["turns"]
            for index, message in enumerate(turn["messages"])
        ]
        assert [(r["thread_id"], r["turn_id"], r["message_index"]) for r in rows] == [
            m[:3] for m in messages
        ]
        for row, (*_, message) in zip(rows, messages, strict=True):
            assert row["content"] == message["content"]
            assert row["text"] == message["content"]["text"]
            assert row["model"] == (message.get("model_parameters") or {}).get("model")
            assert (row["role"], row["source_id"]) == (message["role"], message["source_id"])


@pytest.mark.parametrize(
    ("row_type", "schema", "delivered"),
    [
        (task_rows.MessageRow, TASK_MESSAGE, DELIVERY_TASK_MESSAGE),
        (task_rows.AnnotationRow, TASK_ANNOTATION, DELIVERY_TASK_ANNOTATION),
        (task_rows.PreferenceRow, TASK_PREFERENCE, DELIVERY_TASK_PREFERENCE),
    ],
)
def test_rows_have_exactly_the_columns_of_their_schemas(
    row_type: type[msgspec.Struct], schema: th.PropertiesList, delivered: th.PropertiesList
) -> None:
    fields = list(row_type.__struct_fields__)
    assert fields == list(delivered.to_dict()["properties"])
    # Rows of `tasks` leave the delivery's columns out (they are None).
    assert [f for f in fields if f not in {"delivery", "delivered_at"}] == list(
        schema.to_dict()["properties"]
    )
    assert row_type.__struct_config__.omit_defaults


def test_rows_hold_what_their_task_holds_in_their_columns(scale_tasks: list[Row]) -> None:
    task = next(t for t in scale_tasks if derive_rows(task_rows.preference_rows, t))
    for derive in (task_rows.message_rows, task_rows.annotation_rows, task_rows.preference_rows):
        for row in derive_rows(derive, task):
            assert (row["task_id"], row["project"]) == (task["task_id"], task["project"])
            assert (row["batch"], row["completed_at"]) == (task["batch"], task["completed_at"])
            assert (row["delivery"], row["delivered_at"]) == (None, None)
    delivered = {**task, "delivery": "delivery_1", "delivered_at": "2025-02-03T04:05:06Z"}
    for derive in (task_rows.message_rows, task_rows.annotation_rows, task_rows.preference_rows):
        for row in derive_rows(derive, delivered):
            assert (row["delivery"], row["delivered_at"]) == ("delivery_1", "2025-02-03T04:05:06Z")


def ranking(annotation_type: str, value: object, annotation_id: str = "an_1") -> Row:
    """A task whose one thread carries one ranking annotation."""
    annotation = {"id": annotation_id, "key": "rank", "type": annotation_type, "value": value}
    return {"threads": [{"id": "th", "turns": [], "annotations": [annotation]}]}


def pairs(task: Row) -> list[tuple[str, str, int, int, bool]]:
    return [
        (r["preferred"], r["rejected"], r["preferred_rank"], r["rejected_rank"], r["tie"])
        for r in derive_rows(task_rows.preference_rows, task)
    ]


@pytest.mark.parametrize(
    ("choices", "expected"),
    [
        (["a", "b"], [("a", "b", 1, 2, False)]),
        (
            ["b", "c", "a"],
            [("b", "c", 1, 2, False), ("b", "a", 1, 3, False), ("c", "a", 2, 3, False)],
        ),
        (
            ["d", "a", "c", "b"],
            [
                ("d", "a", 1, 2, False),
                ("d", "c", 1, 3, False),
                ("d", "b", 1, 4, False),
                ("a", "c", 2, 3, False),
                ("a", "b", 2, 4, False),
                ("c", "b", 3, 4, False),
            ],
        ),
    ],
)
def test_ranked_choices_become_every_ordered_pair(
    choices: list[str], expected: list[tuple[str, str, int, int, bool]]
) -> None:
    assert pairs(ranking("ranked_choices", choices)) == expected


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ([["a", "b"]], [("a", "b", 1, 1, True)]),
        (
            [["a"], ["b", "c"]],
            [("a", "b", 1, 2, False), ("a", "c", 1, 2, False), ("b", "c", 2, 2, True)],
        ),
        (
            [["b", "a"], ["d"], ["c", "e"]],
            [
                ("b", "a", 1, 1, True),
                ("b", "d", 1, 2, False),
                ("b", "c", 1, 3, False),
                ("b", "e", 1, 3, False),
                ("a", "d", 1, 2, False),
                ("a", "c", 1, 3, False),
                ("a", "e", 1, 3, False),
                ("d", "c", 2, 3, False),
                ("d", "e", 2, 3, False),
                ("c", "e", 3, 3, True),
            ],
        ),
    ],
)
def test_ranked_groups_become_pairs_with_ties_within_a_group(
    groups: list[list[str]], expected: list[tuple[str, str, int, int, bool]]
) -> None:
    assert pairs(ranking("ranked_groups", groups)) == expected


@pytest.mark.parametrize(
    ("annotation_type", "value", "expected"),
    [
        ("ranked_choices", [], []),
        ("ranked_choices", ["a"], []),
        ("ranked_choices", "a", []),  # not a list: no pairs
        ("ranked_choices", ["a", 7, "b", "a"], [("a", "b", 1, 3, False)]),  # 7 passed over
        ("ranked_groups", [["a"], "b", [], ["c"]], [("a", "c", 1, 4, False)]),
        ("category_multiple", ["a", "b"], []),  # a selection, not a ranking
    ],
)
def test_odd_rankings_give_the_pairs_they_can(
    annotation_type: str, value: object, expected: list[tuple[str, str, int, int, bool]]
) -> None:
    assert pairs(ranking(annotation_type, value)) == expected


def test_a_ranking_row_says_where_it_sits() -> None:
    task = {
        "threads": [
            {
                "id": "th",
                "turns": [
                    {
                        "id": "tu",
                        "messages": [
                            {"role": "user", "content": {"text": "hi"}, "source_id": "user"},
                            {
                                "role": "assistant",
                                "content": {"text": "hello"},
                                "source_id": "model_a",
                                "annotations": [
                                    {
                                        "id": "an_m",
                                        "key": "k",
                                        "type": "ranked_choices",
                                        "value": ["x", "y"],
                                    }
                                ],
                            },
                        ],
                        "annotations": [],
                    }
                ],
                "annotations": [],
            }
        ]
    }
    (row,) = derive_rows(task_rows.preference_rows, task)
    assert {
        k: row[k]
        for k in ("level", "thread_id", "turn_id", "turn_index", "message_index", "source_id")
    } == {
        "level": "message",
        "thread_id": "th",
        "turn_id": "tu",
        "turn_index": 0,
        "message_index": 1,
        "source_id": "model_a",
    }


@pytest.mark.parametrize(
    ("annotation_type", "value", "typed"),
    [
        ("integer", 4, {"value_number": 4}),
        ("integer", "4", {}),  # another JSON type than its type promises: untyped, kept in `value`
        ("integer", True, {}),  # a boolean is not a number
        ("boolean", False, {"value_boolean": False}),
        ("boolean", 0, {}),
        ("text", "fine", {"value_text": "fine"}),
        ("category", "en", {"value_text": "en"}),
        ("category", ["en"], {}),
        ("category_multiple", ["a", "b"], {"value_texts": ["a", "b"]}),
        ("category_multiple", [], {"value_texts": []}),
        ("category_multiple", ["a", 1], {}),
        ("ranked_choices", ["b", "a"], {"value_texts": ["b", "a"]}),
        ("ranked_groups", [["a", "b"], ["c"]], {}),
        ("labeled_text", [{"label": "claim", "text": "x"}], {}),
        ("file", {"url": "https://x"}, {}),
        ("rubric_criteria", {"weight": 3, "criterion": "c"}, {"value_number": 3}),
        ("rubric_rating", {"score": 2.5, "color": "red"}, {"value_number": 2.5}),
        ("rubric_rating", {"color": "red"}, {}),
        ("rubric_rating", 3, {}),
        ("workspace_container", {"workspace_id": "ws"}, {}),
        ("integer", None, {}),  # not applicable: no value
        # No type (read without annotation_details) or one newer than this release: by JSON type.
        (None, 3.5, {"value_number": 3.5}),
        (None, True, {"value_boolean": True}),
        ("star_rating", 5, {"value_number": 5}),
        ("star_rating", ["a"], {"value_texts": ["a"]}),
        ("star_rating", {"stars": 5}, {}),
    ],
)
def test_a_value_is_typed_by_its_annotation_type(
    annotation_type: str | None, value: object, typed: Row
) -> None:
    columns = zip(
        task_rows.VALUE_COLUMNS, task_rows.typed_value(annotation_type, value), strict=True
    )
    assert {column: v for column, v in columns if v is not None} == typed


def test_every_annotation_type_has_its_typed_column() -> None:
    assert set(task_rows.TYPED_COLUMNS) == set(ANNOTATION_TYPES)


def test_annotations_without_ids_are_named_by_their_place(scale_tasks: list[Row]) -> None:
    task = copy.deepcopy(scale_tasks[0])
    pointers = []
    for pointer, annotation in every_annotation(task):
        del annotation["id"]
        pointers.append(pointer)
    ids = [row["annotation_id"] for row in derive_rows(task_rows.annotation_rows, task)]
    assert sorted(ids) == sorted(pointers)


@pytest.mark.parametrize(
    "task",
    [
        {},
        {"threads": None},
        {"threads": "x"},
        {"threads": [None, 3, {"turns": "x", "annotations": {"id": "a"}}]},
        {
            "threads": [
                {"turns": [{"messages": [None, {"content": "text", "model_parameters": 3}]}]}
            ]
        },
        {
            "threads": [
                {
                    "turns": [
                        {"rubrics": [{"criteria_definitions": [{"id": {}, "annotations": [{}]}]}]}
                    ]
                }
            ]
        },
        {
            "threads": [
                {
                    "turns": [
                        {
                            "messages": [
                                {
                                    "rubric_evaluations": [
                                        {"criteria_evaluations": [{"criterion_definition_id": []}]}
                                    ]
                                }
                            ]
                        }
                    ]
                }
            ]
        },
        {
            "threads": [
                {"annotations": [{"type": {}, "value": []}, {"type": "ranked_groups", "value": {}}]}
            ]
        },
    ],
)
def test_a_malformed_task_yields_the_rows_it_can_and_never_fails(task: Row) -> None:
    list(derive_rows(task_rows.message_rows, task))
    list(derive_rows(task_rows.annotation_rows, task))
    list(derive_rows(task_rows.preference_rows, task))


def test_a_message_with_odd_parts_keeps_them_whole() -> None:
    message = {"role": "assistant", "content": {"text": 3}, "model_parameters": {"model": 7}}
    task = {"threads": [{"id": "th", "turns": [{"id": "tu", "messages": [message]}]}]}
    (row,) = derive_rows(task_rows.message_rows, task)
    assert (row["text"], row["model"]) == (None, None)
    assert (row["content"], row["model_parameters"]) == (
        message["content"],
        message["model_parameters"],
    )


def test_rubric_rows_name_their_criterion() -> None:
    definition = {
        "id": "c1",
        "criterion": "Cites a source",
        "annotations": [
            {"id": "d", "key": "criterion", "type": "rubric_criteria", "value": {"weight": 2}}
        ],
    }
    evaluation = {
        "criteria_evaluations": [
            {
                "criterion_definition_id": "c1",
                "annotations": [
                    {"id": "e", "key": "rating", "type": "rubric_rating", "value": {"score": 1}}
                ],
            }
        ],
        "annotations": [{"id": "s", "key": "summary", "type": "text", "value": "ok"}],
    }
    message = {
        "role": "assistant",
        "source_id": "m",
        "content": {},
        "rubric_evaluations": [evaluation],
    }
    turn = {"id": "tu", "messages": [message], "rubrics": [{"criteria_definitions": [definition]}]}
    task = {"threads": [{"id": "th", "turns": [turn]}]}
    rows = {row["annotation_id"]: row for row in derive_rows(task_rows.annotation_rows, task)}
    assert {
        k: (
            r["level"],
            r["criterion_definition_id"],
            r["criterion"],
            r["rubric_index"],
            r["message_index"],
        )
        for k, r in rows.items()
    } == {
        "d": ("criterion_definition", "c1", "Cites a source", 0, None),
        "e": ("criterion_evaluation", "c1", "Cites a source", 0, 0),
        "s": ("rubric_evaluation", None, None, 0, 0),
    }
    assert (rows["d"]["value_number"], rows["e"]["value_number"]) == (2, 1)


def test_fields_this_release_does_not_know_are_kept_on_their_row(scale_tasks: list[Row]) -> None:
    kept: set[str] = set()
    for task in scale_tasks:
        annotations = {a["id"]: a for _, a in every_annotation(task)}
        for row in derive_rows(task_rows.annotation_rows, task):
            annotation = annotations[row["annotation_id"]]
            unknown = {k: v for k, v in annotation.items() if k not in task_rows.ANNOTATION_FIELDS}
            assert row["additional_properties"] == (unknown or None)
            kept |= unknown.keys()
        messages = [
            message
            for thread in task.get("threads") or ()
            for turn in thread["turns"]
            for message in turn["messages"]
        ]
        for row, message in zip(derive_rows(task_rows.message_rows, task), messages, strict=True):
            unknown = {k: v for k, v in message.items() if k not in task_rows.MESSAGE_FIELDS}
            assert row["additional_properties"] == (unknown or None)
            kept |= unknown.keys()
    # The simulator's stand-ins for fields Scale adds later, on annotations and on messages.
    assert kept == {"rater_confidence", "safety_tier"}


def test_a_field_of_another_type_than_its_column_is_kept_aside_not_loaded() -> None:
    # A typed column given a value of another type would fail the whole load in a target.
    annotation = {
        "id": "an",
        "key": "k",
        "type": "category",
        "title": 3,
        "labels": "a,b",  # a list, joined
        "not_applicable": "no",
        "possible_values": ["a", "b"],
        "value": "a",
        "rater_confidence": 0.7,
    }
    message = {"role": "assistant", "content": "hello", "source_id": 7, "annotations": [annotation]}
    task = {"threads": [{"id": 5, "turns": [{"id": "tu", "messages": [message]}]}]}
    (row,) = derive_rows(task_rows.annotation_rows, task)
    # An id keys rows: written out, not left out. A source_id only describes: left out.
    assert (row["thread_id"], row["source_id"]) == ("5", None)
    assert (row["title"], row["labels"], row["not_applicable"]) == (None, None, None)
    assert row["additional_properties"] == {
        "title": 3,
        "labels": "a,b",
        "not_applicable": "no",
        "rater_confidence": 0.7,
    }
    assert (row["key"], row["possible_values"], row["value_text"]) == ("k", ["a", "b"], "a")
    (row,) = derive_rows(task_rows.message_rows, task)
    assert (row["content"], row["text"], row["source_id"]) == (None, None, None)
    assert row["additional_properties"] == {"content": "hello", "source_id": 7}
    labelled = {**annotation, "title": "t", "labels": ["a", 1], "not_applicable": False}
    (row,) = derive_rows(task_rows.annotation_rows, {"threads": [{"annotations": [labelled]}]})
    assert row["labels"] is None
    assert row["additional_properties"] == {"labels": ["a", 1], "rater_confidence": 0.7}


@pytest.mark.parametrize("name", list(task_rows.ANNOTATION_COLUMN_TYPES))
def test_every_column_of_an_annotation_is_checked_for_its_type(name: str) -> None:
    # The usual case is checked field by field for speed: each field must be among them.
    annotation = {"id": "an", "key": "k", "type": "text", "value": "v", name: 3.5}
    (row,) = derive_rows(task_rows.annotation_rows, {"threads": [{"annotations": [annotation]}]})
    assert row[name] is None
    assert row["additional_properties"] == {name: 3.5}
