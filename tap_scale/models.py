"""Scale's v2 objects, as JSON Schema types: the one definition every stream schema is built from.

Names and fields follow Scale's API reference (shared/scale-api/REFERENCE.md). Two rules hold
throughout, each because Scale's real responses demand it:

- Every object keeps fields it does not know: Scale adds fields over time (rubrics, submissions
  and the ``deleted`` status all came after the first docs), and a tap that drops them loses
  customer data. Nested objects keep them in place (``additionalProperties``); at the top level,
  where each field is a warehouse column, they are kept in one object column,
  ``additional_properties`` (:data:`UNKNOWN_FIELDS`).
- No nested field is required, even those Scale marks "always present": which fields appear
  depends on the ``opts`` a request asks for (Scale's own example of ``/v2/tasks`` shows
  annotations with only ``key`` and ``value``).
"""

from __future__ import annotations

import json
import re
import typing as t
from datetime import datetime, timezone

from singer_sdk import typing as th

# Any JSON value: an annotation's `value` takes a different JSON type for every annotation type
# (int, bool, str, [str], [[str]], objects, files...), and new types appear. Spelled out rather
# than `{}` because the SDK and the targets need a `type` to decide how to store a value.
ANY_JSON = th.CustomType({"type": ["array", "boolean", "null", "number", "object", "string"]})

# Free-form objects whose keys are the customer's own (task metadata) or Scale's to extend.
FREE_FORM = th.ObjectType()


def _obj(*properties: th.Property[t.Any]) -> th.ObjectType:
    return th.ObjectType(*properties, additional_properties=True)


def _array(item: th.JSONTypeHelper[t.Any] | type[th.JSONTypeHelper[t.Any]]) -> th.ArrayType[t.Any]:
    return th.ArrayType(item)


def _str(name: str) -> th.Property[str]:
    return th.Property(name, th.StringType)


# The column that keeps a record's top-level fields this release does not know, by name. Named
# as JSON Schema's `additionalProperties` keyword names such fields, and as Scale's own client
# names the same catch-all (`additional_properties`, in the models OpenAPI Generator made from
# Scale's spec); Airbyte keeps them in `_ab_additional_properties` for the same reason. Not
# `_sdc_...`: Singer reserves that prefix for the metadata columns targets add.
UNKNOWN_FIELDS = "additional_properties"
UNKNOWN_FIELDS_PROPERTY = th.Property(
    UNKNOWN_FIELDS,
    th.ObjectType(additional_properties=True),
    description="Top-level fields Scale sent that this release of tap-scale does not know, by "
    "name, kept as sent. Null when there are none.",
)


def stream_schema(*properties: th.Property[t.Any]) -> th.PropertiesList:
    """A stream's schema: its fields, and the column that keeps the fields it does not know."""
    return th.PropertiesList(*properties, UNKNOWN_FIELDS_PROPERTY)


# --- Annotations --------------------------------------------------------------------------------

ANNOTATION_METADATA = _obj(_str("criteria"))

ANNOTATION = _obj(
    _str("id"),
    _str("key"),
    # integer, boolean, text, category, category_multiple, ranked_choices, ranked_groups,
    # labeled_text, file, rubric_criteria, rubric_rating, workspace_container: kept open (not an
    # enum) so a new annotation type never fails a sync.
    _str("type"),
    _str("title"),
    _str("description"),
    th.Property("labels", _array(th.StringType)),
    th.Property("not_applicable", th.BooleanType),
    th.Property("cannot_assess", th.BooleanType),
    th.Property("metadata", ANNOTATION_METADATA),
    _str("justification"),
    th.Property("value", ANY_JSON),
    th.Property("possible_values", _array(ANY_JSON)),
)
ANNOTATIONS = _array(ANNOTATION)

# --- Files --------------------------------------------------------------------------------------

# Scale's File is one of three shapes (basic, image, audio). One object with the union of their
# fields keeps a single column type for warehouses, and every shape validates against it.
FILE = _obj(
    _str("content"),  # base64, basic files only
    _str("mime_type"),
    _str("scale_url"),
    _str("url"),
    _str("name"),
    th.Property("file_size_in_bytes", th.IntegerType),
    th.Property("duration", th.NumberType),
    _str("transcript"),
    _str("transcript_url"),
    th.Property("transcript_start", th.NumberType),
    th.Property("transcript_end", th.NumberType),
)

# --- Messages -----------------------------------------------------------------------------------

REFERENCE_TEXT = _obj(_str("content"), _str("category"), _str("url"))
CHUNK = _obj(_str("type"), _str("text"), th.Property("annotations", ANNOTATIONS))
REASONING = _obj(_str("content"))

MESSAGE_CONTENT = _obj(
    _str("text"),
    th.Property("reference_texts", _array(REFERENCE_TEXT)),
    th.Property("attachments", _array(FILE)),
    th.Property("chunks", _array(CHUNK)),
    th.Property("reasoning", _array(REASONING)),
)

MODEL_PARAMETERS = _obj(
    _str("model"),
    th.Property("temperature", th.NumberType),
    th.Property("max_completion_tokens", th.IntegerType),
    th.Property("top_p", th.NumberType),
    th.Property("top_k", th.IntegerType),
)

CRITERION_EVALUATION = _obj(
    _str("criterion_definition_id"),
    th.Property("score", th.NumberType),
    th.Property("annotations", ANNOTATIONS),
)
RUBRIC_EVALUATION = _obj(
    th.Property("criteria_evaluations", _array(CRITERION_EVALUATION)),
    th.Property("annotations", ANNOTATIONS),
    th.Property("total_score", th.NumberType),
    th.Property("percentage", th.NumberType),
)

MESSAGE = _obj(
    _str("role"),  # system, user, assistant, function
    th.Property("content", MESSAGE_CONTENT),
    _str("source_id"),
    th.Property("model_parameters", MODEL_PARAMETERS),
    th.Property("annotations", ANNOTATIONS),
    th.Property("rubric_evaluations", _array(RUBRIC_EVALUATION)),
)

# --- Turns and threads --------------------------------------------------------------------------

CRITERION_DEFINITION = _obj(
    _str("id"),
    _str("criterion"),
    th.Property("weight", th.NumberType),
    th.Property("annotations", ANNOTATIONS),
)
RUBRIC = _obj(
    th.Property("criteria_definitions", _array(CRITERION_DEFINITION)),
    th.Property("max_total_score", th.NumberType),
)

TURN = _obj(
    _str("id"),
    th.Property("messages", _array(MESSAGE)),
    th.Property("annotations", ANNOTATIONS),
    th.Property("rubrics", _array(RUBRIC)),
)

SUBMISSION = _obj(th.Property("submitted_at", th.DateTimeType), _str("contributor_id"))

THREAD = _obj(
    _str("id"),
    th.Property("turns", _array(TURN)),
    th.Property("annotations", ANNOTATIONS),
    th.Property("submissions", _array(SUBMISSION)),
)

# --- Tasks --------------------------------------------------------------------------------------

ERROR_DETAIL = _obj(_str("type"), _str("message"))
REPORT = _obj(_str("type"), _str("message"))

TASK_STATUSES = ("pending", "completed", "canceled", "error", "deleted")

# A task's fields. `project` and `batch` are always ids: the tap never asks Scale to expand them,
# and collapses them to ids if an object arrives anyway.
TASK_FIELDS = (
    th.Property("task_id", th.StringType, required=True),
    _str("project"),
    _str("batch"),
    _str("status"),
    th.Property("created_at", th.DateTimeType),
    th.Property("completed_at", th.DateTimeType),
    th.Property("metadata", FREE_FORM),
    th.Property("threads", _array(THREAD)),
    th.Property("errors", _array(ERROR_DETAIL)),
    th.Property("sensitive_content_reports", _array(REPORT)),
)
TASK = stream_schema(*TASK_FIELDS)

# --- Projects, batches, deliveries --------------------------------------------------------------

PROJECT = stream_schema(
    th.Property("id", th.StringType, required=True),
    _str("name"),
    th.Property("created_at", th.DateTimeType),
    th.Property("types", _array(th.StringType)),
    th.Property("models", _array(th.StringType)),
)

BATCH_STATUSES = ("staging", "in_progress", "completed", "paused", "cancelled")
BATCH = stream_schema(
    th.Property("id", th.StringType, required=True),
    _str("name"),
    _str("project"),
    th.Property("created_at", th.DateTimeType),
    th.Property("completed_at", th.DateTimeType),
    _str("status"),
    _str("callback"),
    th.Property("metadata", FREE_FORM),
)

DELIVERY = stream_schema(
    th.Property("id", th.StringType, required=True),
    _str("name"),
    th.Property("task_count", th.IntegerType),
    th.Property("delivered_at", th.DateTimeType),
    _str("project"),
)

# A delivered task: the whole task, and which delivery brought it when.
DELIVERY_TASK = stream_schema(
    th.Property("delivery", th.StringType, required=True),
    th.Property("delivered_at", th.DateTimeType),
    *TASK_FIELDS,
)

# What one delivery delivered of a task (`GET /v2/delivery/tasks`): the response, free-form
# (its keys are the project's own), and the id of the JSON Schema it follows.
TASK_RESPONSE = stream_schema(
    th.Property("delivery_id", th.StringType, required=True),
    th.Property("task_id", th.StringType, required=True),
    th.Property("delivered_at", th.DateTimeType),
    th.Property("created_at", th.DateTimeType),
    _str("response_schema_id"),
    th.Property("response", FREE_FORM),
)

# A delivery JSON schema (`GET /v2/schema`): Scale's string, and the schema it encodes.
RESPONSE_SCHEMA = stream_schema(
    th.Property("id", th.StringType, required=True),
    th.Property(
        "json", th.StringType, description="The JSON Schema as Scale sends it: a JSON string."
    ),
    th.Property(
        "json_schema",
        FREE_FORM,
        description="The same JSON Schema, parsed (null if Scale's string is not a JSON object).",
    ),
)

# --- Rows derived from tasks (tap_scale.task_rows) ----------------------------------------------

# The task's columns on every row: rows join to their task and carry the version they came from.
_TASK_COLUMNS = (
    th.Property("task_id", th.StringType, required=True),
    _str("project"),
    _str("batch"),
    th.Property("completed_at", th.DateTimeType),
)
# Rows of delivered tasks also say which delivery brought them, and when.
_DELIVERY_COLUMNS = (
    th.Property("delivery", th.StringType, required=True),
    th.Property("delivered_at", th.DateTimeType),
)


def _int(name: str) -> th.Property[int]:
    return th.Property(name, th.IntegerType)


# Where an annotation or a ranking sits (`task_rows.LEVELS`), and the ids and positions (from 0)
# of what it sits on; null where they do not apply.
_PLACE_COLUMNS = (
    _str("level"),
    _str("thread_id"),
    _str("turn_id"),
    _int("turn_index"),
    _int("message_index"),
    _str("source_id"),
    _int("chunk_index"),
    _int("rubric_index"),
    _str("criterion_definition_id"),
    _str("criterion"),
)

_MESSAGE_COLUMNS = (
    _str("thread_id"),
    _str("turn_id"),
    _int("turn_index"),
    _int("message_index"),
    _str("role"),
    _str("source_id"),
    _str("text"),
    _str("model"),
    th.Property("model_parameters", MODEL_PARAMETERS),
    th.Property("content", MESSAGE_CONTENT),
    th.Property("rubric_evaluations", _array(RUBRIC_EVALUATION)),
)

# Any JSON value, written as JSON text. A column of its own cannot hold any JSON value in every
# target: target-duckdb writes a boolean or a string into a JSON column as Python's text for it
# (`True`, unquoted text), which DuckDB then rejects.
JSON_TEXT = th.CustomType({"type": ["string", "null"], "contentMediaType": "application/json"})

# An annotation's value whole (`value`, as JSON text), and typed in the one column its type gives
# it, so that targets make numeric, boolean and text columns that need no cast.
_ANNOTATION_COLUMNS = (
    th.Property("annotation_id", th.StringType, required=True),
    *_PLACE_COLUMNS,
    _str("key"),
    _str("type"),
    _str("title"),
    th.Property("labels", _array(th.StringType)),
    th.Property("not_applicable", th.BooleanType),
    th.Property("cannot_assess", th.BooleanType),
    _str("justification"),
    th.Property("possible_values", _array(ANY_JSON)),
    th.Property("value", JSON_TEXT),
    th.Property("value_number", th.NumberType),
    th.Property("value_boolean", th.BooleanType),
    th.Property("value_text", th.StringType),
    th.Property("value_texts", _array(th.StringType)),
)

_PREFERENCE_COLUMNS = (
    th.Property("annotation_id", th.StringType, required=True),
    *_PLACE_COLUMNS,
    _str("key"),
    _str("type"),
    th.Property("preferred", th.StringType, required=True),
    th.Property("rejected", th.StringType, required=True),
    _int("preferred_rank"),
    _int("rejected_rank"),
    th.Property("tie", th.BooleanType),
)

# Each row's `additional_properties` keeps the fields of its message or annotation that this
# release does not know, as every stream's keeps its record's.
TASK_MESSAGE = stream_schema(*_TASK_COLUMNS, *_MESSAGE_COLUMNS)
TASK_ANNOTATION = stream_schema(*_TASK_COLUMNS, *_ANNOTATION_COLUMNS)
TASK_PREFERENCE = stream_schema(*_TASK_COLUMNS, *_PREFERENCE_COLUMNS)
DELIVERY_TASK_MESSAGE = stream_schema(*_DELIVERY_COLUMNS, *_TASK_COLUMNS, *_MESSAGE_COLUMNS)
DELIVERY_TASK_ANNOTATION = stream_schema(*_DELIVERY_COLUMNS, *_TASK_COLUMNS, *_ANNOTATION_COLUMNS)
DELIVERY_TASK_PREFERENCE = stream_schema(*_DELIVERY_COLUMNS, *_TASK_COLUMNS, *_PREFERENCE_COLUMNS)

# --- Datasets -----------------------------------------------------------------------------------

DATASET = stream_schema(th.Property("id", th.StringType, required=True), _str("name"))

DATASET_DELIVERY = stream_schema(
    th.Property("id", th.StringType, required=True),
    _str("name"),
    th.Property("delivered_at", th.DateTimeType),
    _str("dataset"),
    th.Property(
        "metadata",
        _obj(th.Property("task_count", th.IntegerType), th.Property("turn_count", th.IntegerType)),
    ),
)

# A dataset task's `response` is free-form: its keys are the dataset's own.
DATASET_TASK = stream_schema(
    th.Property("task_id", th.StringType, required=True),
    th.Property("delivery", th.StringType, required=True),
    th.Property("delivered_at", th.DateTimeType),
    _str("dataset"),
    th.Property("response", FREE_FORM),
)

# --- Timestamps ---------------------------------------------------------------------------------

_ISO_8601 = re.compile(
    r"(?P<second>\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d)?)(?:\.(?P<fraction>\d+))?"
    r"(?P<offset>Z|[+-]\d\d:?\d\d)?",
    re.IGNORECASE,
)


def parse_timestamp(value: str) -> datetime:
    """Parse any ISO 8601 timestamp Scale sends into an aware UTC datetime.

    Written out because ``datetime.fromisoformat`` on Python 3.10 rejects ``Z`` and fractions
    that are not 3 or 6 digits long, both of which Scale sends.

    Raises:
        ValueError: If the value is not an ISO 8601 timestamp.
    """
    match = _ISO_8601.fullmatch(value.strip())
    if match is None:
        msg = f"{value!r} is not an ISO 8601 timestamp"
        raise ValueError(msg)
    offset = (match["offset"] or "+00:00").upper().replace("Z", "+00:00")
    if ":" not in offset:
        offset = f"{offset[:3]}:{offset[3:]}"
    fraction = (match["fraction"] or "0")[:6].ljust(6, "0")
    parsed = datetime.fromisoformat(f"{match['second'].replace(' ', 'T')}.{fraction}{offset}")
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01T00:00+01:00 is a moment of year 0, which Python has not
        msg = f"{value!r} lies outside the years 1 to 9999 in UTC"
        raise ValueError(msg) from None


def format_timestamp(moment: datetime) -> str:
    """Render a datetime in the single form the tap emits and keeps in state.

    Fixed width with microseconds and ``Z``, so that these strings sort as the moments they name
    (Scale mixes ``...:56Z`` and ``...:56.923Z``, which do not). The year always has four
    digits: ``strftime`` writes the year 999 as ``999``, which sorts after ``2025``.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    moment = moment.astimezone(timezone.utc)
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S.%f}Z"


# The form Scale sends nearly always: UTC with "Z", milliseconds or none.
_UTC_ISO_8601 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?Z")


def utc_timestamp(value: str | None) -> str | None:
    """Normalise one of Scale's timestamps to the emitted form; ``None`` stays ``None``.

    Raises:
        ValueError: If the value is not an ISO 8601 timestamp.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        msg = f"{value!r} is not an ISO 8601 timestamp"
        raise TypeError(msg)
    utc = _UTC_ISO_8601.fullmatch(value)
    if utc is None:
        return format_timestamp(parse_timestamp(value))
    # Already UTC: only the fraction needs padding, which is a quarter of the cost of a full
    # parse and format, paid several times per task. fromisoformat still rejects a day that
    # does not exist.
    try:
        datetime.fromisoformat(utc[1])
    except ValueError:
        msg = f"{value!r} is not an ISO 8601 timestamp"
        raise ValueError(msg) from None
    return f"{utc[1]}.{(utc[2] or '').ljust(6, '0')}Z"


# --- Records as emitted -------------------------------------------------------------------------


class Columns:
    """One stream's top-level fields, which become warehouse columns, read once from its schema.

    The schema is the stream's effective one: the catalog's where the catalog overrides it, as
    the SCHEMA message the target receives does. A value of the wrong type in a column fails a
    load, so :meth:`conform` brings each record's top level to the schema; nested values live in
    JSON columns and are left as Scale sent them.
    """

    def __init__(self, schema: dict[str, t.Any]) -> None:
        """Note which fields need which repair, so a record costs a few lookups, not a walk."""
        properties: dict[str, dict[str, t.Any]] = schema["properties"]
        # Where fields the schema does not name are kept, unless a catalog took the column out.
        self.keeps_unknown = UNKNOWN_FIELDS in properties
        self.names = frozenset(properties) - {UNKNOWN_FIELDS}
        #: The unknown top-level fields seen so far, in the order first seen.
        self.unknown: dict[str, None] = {}
        self.timestamps = tuple(
            name for name, field in properties.items() if field.get("format") == "date-time"
        )
        types = {name: set(field.get("type", ())) for name, field in properties.items()}
        self.numbers = {
            name: "integer" in kinds
            for name, kinds in types.items()
            if kinds & {"integer", "number"}
        }
        self.objects = tuple(
            name for name, kinds in types.items() if "object" in kinds and name != UNKNOWN_FIELDS
        )

    def conform(self, record: dict[str, t.Any]) -> list[str]:
        """Bring a record's top-level values to the schema's types; say what changed.

        A field the schema does not name has no column of its own: it is moved, as sent, into
        the ``additional_properties`` object (a field Scale itself names so included), and
        noted in :attr:`unknown`. Only lossless repairs are made: a timestamp is rewritten in
        the one emitted form, a number sent as a string becomes the number, an object sent as a
        JSON string becomes the object. A timestamp that cannot be read is set to null (it would
        otherwise corrupt bookmarks). Anything else is kept as sent.
        """
        changes = []
        if unknown := record.keys() - self.names:
            changes += self._keep_unknown(record, unknown)
        for name in self.timestamps:
            value = record.get(name)
            if value is None:
                continue
            try:
                record[name] = utc_timestamp(value)
            except (TypeError, ValueError):
                record[name] = None
                changes.append(f"{name} {value!r} is not a timestamp: emitted as null")
        for name, integer in self.numbers.items():
            value = record.get(name)
            if isinstance(value, str) and (number := _number(value, integer=integer)) is not None:
                record[name] = number
                changes.append(f"{name} came as the string {value!r}: emitted as a number")
        for name in self.objects:
            value = record.get(name)
            if isinstance(value, str) and (decoded := _json_object(value)) is not None:
                record[name] = decoded
                changes.append(f"{name} came as a JSON string: emitted as the object it encodes")
        return changes

    def _keep_unknown(self, record: dict[str, t.Any], names: t.Collection[str]) -> list[str]:
        kept = {name: record.pop(name) for name in sorted(names)}
        self.unknown.update(dict.fromkeys(kept))
        if self.keeps_unknown:
            record[UNKNOWN_FIELDS] = kept
            return []
        # The catalog's schema has no column for them: the target could not load them.
        return [
            f"{name} is not a field of the catalog's schema, which has no {UNKNOWN_FIELDS} "
            "column either: left out"
            for name in kept
        ]


def _number(text: str, *, integer: bool) -> int | float | None:
    try:
        return int(text) if integer else float(text)
    except ValueError:
        return None


def _json_object(text: str) -> dict[str, t.Any] | None:
    try:
        decoded = json.loads(text)
    except ValueError:
        return None
    return decoded if isinstance(decoded, dict) else None
