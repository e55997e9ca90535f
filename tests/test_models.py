"""The model: timestamps in one form, and schemas that keep what Scale adds."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tap_scale.models import (
    DELIVERY,
    TASK,
    Columns,
    format_timestamp,
    parse_timestamp,
    utc_timestamp,
)


@pytest.mark.parametrize(
    ("scale_sends", "emitted"),
    [
        ("2025-01-02T04:00:39.923Z", "2025-01-02T04:00:39.923000Z"),
        ("2023-11-07T05:31:56Z", "2023-11-07T05:31:56.000000Z"),
        ("2023-11-07T07:31:56+02:00", "2023-11-07T05:31:56.000000Z"),
        ("2023-11-07T05:31:56.1234567Z", "2023-11-07T05:31:56.123456Z"),
        ("2023-11-07T05:31:56.5", "2023-11-07T05:31:56.500000Z"),
    ],
)
def test_every_timestamp_form_becomes_one(scale_sends: str, emitted: str) -> None:
    assert utc_timestamp(scale_sends) == emitted


def test_emitted_timestamps_sort_as_the_moments_they_name() -> None:
    # As Scale writes them, the later moment sorts first ("Z" > "."); as emitted, it does not.
    earlier, later = "2023-11-07T05:31:56Z", "2023-11-07T05:31:56.500Z"
    assert earlier > later
    assert utc_timestamp(earlier) < utc_timestamp(later)  # type: ignore[operator]


def test_naive_datetimes_are_taken_as_utc() -> None:
    moment = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    assert format_timestamp(moment.replace(tzinfo=None)) == format_timestamp(moment)
    assert parse_timestamp("2024-05-01T12:00:00") == moment


@pytest.mark.parametrize("value", ["yesterday", "2025-02-30T00:00:00Z", "2025-13-01T00:00:00.5Z"])
def test_not_a_timestamp_is_rejected(value: str) -> None:
    with pytest.raises(ValueError, match="not an ISO 8601 timestamp"):
        utc_timestamp(value)


def test_columns_repair_the_top_level_losslessly_and_keep_unknown_fields() -> None:
    record = {
        "id": "delivery_1",
        "task_count": "12",
        "delivered_at": "2025-01-02T04:00:39.9Z",
        "added_by_scale_later": {"a": 1},
        # Scale's own field of the column's name is kept inside it, not taken for it.
        "additional_properties": [1],
    }
    columns = Columns(DELIVERY.to_dict())
    changes = columns.conform(record)
    assert record == {
        "id": "delivery_1",
        "task_count": 12,
        "delivered_at": "2025-01-02T04:00:39.900000Z",
        "additional_properties": {"added_by_scale_later": {"a": 1}, "additional_properties": [1]},
    }
    assert changes == ["task_count came as the string '12': emitted as a number"]
    assert list(columns.unknown) == ["added_by_scale_later", "additional_properties"]


def test_columns_follow_a_schema_without_the_unknown_fields_column() -> None:
    # A catalog that overrides the schema decides the columns: without `additional_properties`
    # there is nowhere to keep an unknown field, and the change says so.
    schema = DELIVERY.to_dict()
    del schema["properties"]["additional_properties"]
    record = {"id": "delivery_1", "new": 1}
    left_out = (
        "new is not a field of the catalog's schema, which has no additional_properties column "
        "either: left out"
    )
    assert Columns(schema).conform(record) == [left_out]
    assert record == {"id": "delivery_1"}


def test_columns_null_an_unreadable_timestamp_and_keep_what_cannot_be_repaired() -> None:
    record = {"task_id": "task_1", "completed_at": "soon", "metadata": "not json", "threads": None}
    changes = Columns(TASK.to_dict()).conform(record)
    assert record == {
        "task_id": "task_1",
        "completed_at": None,
        "metadata": "not json",
        "threads": None,
    }
    assert changes == ["completed_at 'soon' is not a timestamp: emitted as null"]


def test_nested_objects_keep_unknown_fields_and_values_take_any_json() -> None:
    schema = TASK.to_dict()
    thread = schema["properties"]["threads"]["items"]
    message = thread["properties"]["turns"]["items"]["properties"]["messages"]["items"]
    annotation = message["properties"]["annotations"]["items"]
    assert thread["additionalProperties"] is True
    assert message["additionalProperties"] is True
    assert annotation["additionalProperties"] is True
    assert set(annotation["properties"]["value"]["type"]) == {
        "array",
        "boolean",
        "null",
        "number",
        "object",
        "string",
    }
