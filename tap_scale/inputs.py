"""Input a person hands the tap on its command line, and the one way a bad one ends a run.

A problem with the settings, the state or a file ends the run as one paragraph that names it
and says what to do, and exit code 1 (`InputError`), never a traceback. Each check collects
every problem it finds, so that one run reports them all.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import typing as t
from decimal import Decimal
from pathlib import Path

import click
from singer_sdk.typing import DEFAULT_JSONSCHEMA_VALIDATOR

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from jsonschema import ValidationError

TAP_NAME = "tap-scale"

# How each JSON type is named to a person.
JSON_TYPES = {
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list (a JSON array)",
    "object": "an object",
    "null": "null",
}
_SHOWN_LENGTH = 60


class InputError(click.ClickException):
    """Settings, state or a file the tap cannot use: one paragraph, exit code 1, no traceback.

    A ClickException, so that the command line reports it wherever it is raised: while the
    options are read (`--config`, `--state`, `--catalog`), in `--test` and `--discover`, and
    during a sync.
    """

    def __init__(self, summary: str, problems: Sequence[str], advice: str) -> None:
        """``summary`` of what cannot be used, every one of its ``problems``, what to do."""
        if len(problems) == 1:
            text = f"{summary}: {_ended(problems[0])} {advice}"
        else:
            listed = "; ".join(
                f"({n}) {problem.rstrip('.')}" for n, problem in enumerate(problems, 1)
            )
            text = f"{summary} ({len(problems)} problems): {_ended(listed)} {advice}"
        super().__init__(text)
        self.problems = list(problems)

    @override
    def show(self, file: t.IO[t.Any] | None = None) -> None:
        """Log the paragraph as the tap logs every stop, instead of click's bare ``Error:``."""
        del file
        logging.getLogger(TAP_NAME).error("tap-scale stopped: %s", self.format_message())


def _ended(sentence: str) -> str:
    """A sentence with one full stop (or its own question mark) at its end."""
    sentence = sentence.rstrip()
    return sentence if sentence.endswith((".", "?", "!")) else f"{sentence}."


class Findings(t.NamedTuple):
    """What a check found: problems stop the run, warnings do not."""

    problems: list[str]
    warnings: list[str]


def shown(value: object) -> str:
    """A value as a person wrote it in JSON, cut short when long."""
    if isinstance(value, Decimal):
        text = str(value)  # as written: 2E+9 stays 2E+9
    elif isinstance(value, str):
        text = repr(value)
    else:
        text = json.dumps(value, default=str)
    return text if len(text) <= _SHOWN_LENGTH else text[: _SHOWN_LENGTH - 3] + "..."


def type_names(value: object) -> list[str]:
    """The JSON type names of a schema's ``type``, one or several."""
    return [str(name) for name in value] if isinstance(value, list) else [str(value)]


def json_type(value: object) -> str:
    """The JSON type name of a parsed value."""
    names = {
        list: "array",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
        Decimal: "number",  # the SDK reads fractions as Decimals
    }
    return "null" if value is None else names.get(type(value), "object")


def shape_problem(where: str, error: ValidationError) -> str:
    """A JSON Schema error about the shape of a document, as a person reads it."""
    if error.validator == "type":
        expected = " or ".join(JSON_TYPES[name] for name in type_names(error.validator_value))
        found = JSON_TYPES.get(json_type(error.instance), "a value")
        return f"{where} is {found}, where {expected} is expected"
    if error.validator == "required":
        missing = str(error.message).split("'")[1]
        return f"{where} has no `{missing}`"
    if error.validator == "minProperties":
        return f"{where} is empty"
    return f"{where}: {error.message}"


def read_json_object(path: str, what: str) -> tuple[str, dict[str, t.Any]]:
    """A JSON object file's text and content; any reason it cannot be read is an InputError."""
    advice = {
        "config": "Point `--config` at the JSON file of settings Meltano or you wrote.",
        "state": "Point `--state` at a state the tap wrote (its last STATE message's value), "
        "or leave `--state` out to read everything from `start_date`.",
        "catalog": "Point `--catalog` at the catalog `tap-scale --discover` wrote (with your "
        "selections), or leave `--catalog` out to sync every stream.",
    }[what]
    label = f"The {what} file {path!r} cannot be used"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(label, ["it does not exist"], advice) from None
    except UnicodeDecodeError:
        raise InputError(label, ["it is not UTF-8 text"], advice) from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise InputError(label, [f"it cannot be read ({reason})"], advice) from None
    if not text.strip():
        raise InputError(label, ["it is empty"], advice)
    try:
        content = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as error:
        raise InputError(label, [f"it is not JSON ({_json_error(error)})"], advice) from None
    if not isinstance(content, dict):
        kind = JSON_TYPES.get(json_type(content), "a value")
        raise InputError(label, [f"it holds {kind}, where a JSON object is expected"], advice)
    return text, content


def _no_constant(name: str) -> t.NoReturn:
    msg = f"{name} is not a JSON value"
    raise ValueError(msg)


def _json_error(error: Exception) -> str:
    if isinstance(error, RecursionError):
        return "it nests deeper than Python can read"
    return str(error)


class JsonObjectFile(click.ParamType):  # type: ignore[type-arg]
    """A ``--state`` or ``--catalog`` file, read and parsed as a JSON object as it is given.

    Converted to a text stream for the SDK, which reads it as it would the file.
    """

    name = "file"

    def __init__(self, what: str) -> None:
        """``what`` the file is: "state" or "catalog"."""
        self.what = what

    @override
    def convert(
        self, value: t.Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> io.StringIO:
        """The file's text, once it is known to be a JSON object."""
        text, _ = read_json_object(str(value), self.what)
        return io.StringIO(text)


# A Singer catalog, as far as the SDK reads it.
CATALOG_SCHEMA = {
    "type": "object",
    "properties": {
        "streams": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["tap_stream_id"],
                "properties": {
                    "tap_stream_id": {"type": "string"},
                    "stream": {"type": "string"},
                    "schema": {
                        "type": "object",
                        "required": ["properties"],
                        "properties": {
                            "properties": {
                                "type": "object",
                                "additionalProperties": {"type": ["object", "boolean"]},
                            },
                        },
                    },
                    "key_properties": {"type": ["array", "null"], "items": {"type": "string"}},
                    "replication_key": {"type": ["string", "null"]},
                    "replication_method": {"type": ["string", "null"]},
                    "metadata": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["breadcrumb", "metadata"],
                            "properties": {
                                "breadcrumb": {"type": "array", "items": {"type": "string"}},
                                "metadata": {
                                    "type": "object",
                                    "properties": {
                                        "selected": {"type": "boolean"},
                                        "selected-by-default": {"type": "boolean"},
                                        "inclusion": {
                                            "enum": ["available", "automatic", "unsupported"]
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def check_catalog(
    catalog: Mapping[str, t.Any], own_schemas: Iterable[Mapping[str, t.Any]] = ()
) -> list[str]:
    """What keeps a catalog from being a Singer catalog the SDK can read.

    A stream schema equal to one of ``own_schemas`` (the tap's, as `--discover` writes them,
    the usual case) is not checked against the JSON Schema meta-schema: that check costs a
    third of a second for the tap's catalog, at the start of every run.
    """
    trusted = [json.loads(json.dumps(schema, default=str)) for schema in own_schemas]
    validator = DEFAULT_JSONSCHEMA_VALIDATOR(CATALOG_SCHEMA)
    # Checked as JSON: a catalog built in Python (the SDK's own `catalog_dict`) holds tuples
    # where JSON has lists.
    as_json = json.loads(json.dumps(catalog, default=str))
    problems = [
        shape_problem(location(error.path) or "the catalog", error)
        for error in validator.iter_errors(as_json)
    ]
    if problems:
        return problems
    # Each stream's schema must be a JSON Schema, whose key properties it has.
    meta = DEFAULT_JSONSCHEMA_VALIDATOR(DEFAULT_JSONSCHEMA_VALIDATOR.META_SCHEMA)
    for number, stream in enumerate(as_json.get("streams", [])):
        schema = stream.get("schema", {})
        where = f"streams[{number}].schema"
        if schema not in trusted:
            problems += [
                f"{location([where, *error.path])} is not a JSON Schema: {error.message}"
                for error in meta.iter_errors(schema)
            ]
        problems += [
            f"streams[{number}].key_properties names `{key}`, which its schema does not have"
            for key in stream.get("key_properties") or []
            if key not in schema.get("properties", {})
        ]
    return problems


def location(path: Iterable[str | int]) -> str:
    """A place in a JSON document as a person reads it: streams[2].metadata[0]."""
    parts = (f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)
    return "".join(parts).lstrip(".")
