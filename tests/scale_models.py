"""Checking a JSON body against Scale's own v2 models, from its official client (``scaleapi``).

The client's models are generated from Scale's OpenAPI spec, so they are the closest thing to
Scale's contract that can be run. Two checks make one verdict:

- the client's own parsing (``Model.from_dict``) accepts the object: required fields, types,
  enums, the ``oneOf`` choices (annotation types, ids or expanded objects);
- the object has no field the models lack, except the few the simulator adds on purpose to stand
  for fields Scale adds later (:data:`FUTURE_FIELDS`): the client's parsing ignores unknown
  fields, so without this check an invented field would pass unnoticed.
"""

from __future__ import annotations

import copy
import typing as t

from pydantic import BaseModel, ValidationError
from scaleapi.api_client.v2 import models as scale

JsonObject = dict[str, t.Any]

# Fields the simulator serves that no model of scaleapi 2.18 lists, by the model they appear in.
# Each stands for a field Scale adds after this release, so that the tap's handling of unknown
# fields is tested on every sync: nothing else may be invented.
FUTURE_FIELDS: dict[str, frozenset[str]] = {
    # A rater's confidence in an annotation (tap_scale.testing.annotations).
    **{
        name: frozenset({"rater_confidence"})
        for name in dir(scale)
        if name.startswith("Annotation") and not name.endswith("Properties")
    },
    # A safety tier on assistant messages (tap_scale.testing.content).
    "Message": frozenset({"safety_tier"}),
}

# Two parts of a task the generated client cannot parse, whatever they hold, are taken out of the
# object before the client parses it, and checked on their own:
#
# - Files. Scale's File is one of three models whose fields are all optional, and the client's
#   parsing ignores fields a model lacks: any file matches BasicFile, ImageFile and AudioFile at
#   once, and `DetailedFile.from_dict` raises "Multiple matches" for every file there is. So each
#   file is checked against the three variants one by one: it is valid when at least one variant
#   accepts it and each of its fields belongs to a variant that does.
# - A workspace container's `last_code_run_event`: the model types it as a free-form object, but
#   `WorkspaceContainerValue.from_dict` parses it with `WorkspaceExecutionData`, a name that module
#   never imports (NameError). It is checked against WorkspaceExecutionData, as the client means to.
FILE_VARIANTS: tuple[type[BaseModel], ...] = (scale.BasicFile, scale.ImageFile, scale.AudioFile)


def problems(body: t.Any, model: type[BaseModel]) -> list[str]:
    """What Scale's models find wrong with a body its endpoint answered; empty when none."""
    found: list[str] = []
    stripped = copy.deepcopy(body)
    for where, part, check in _take_out(stripped, "$"):
        found += check(part, where)
    try:
        parsed = model.from_dict(stripped)  # type: ignore[attr-defined]
    except (ValidationError, ValueError) as error:
        return [*found, f"{model.__name__} rejects it: {error}"]
    found += _unknown_fields(stripped, parsed, "$")
    return found


Check = t.Callable[[t.Any, str], list[str]]


def _take_out(node: t.Any, where: str) -> t.Iterator[tuple[str, t.Any, Check]]:
    """Remove the parts the client cannot parse (see above), yielding each with its check."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from _take_out(item, f"{where}[{index}]")
        return
    if not isinstance(node, dict):
        return
    if where.endswith(".content") and isinstance(node.get("attachments"), list):
        for index, file in enumerate(node.pop("attachments")):
            yield f"{where}.attachments[{index}]", file, _file_problems
    if node.get("type") == "file" and isinstance(node.get("value"), dict):
        # One file; a list of files is `List[BasicFile]`, which the client parses fine.
        yield f"{where}.value", node.pop("value"), _file_problems
    value = node.get("value")
    if node.get("type") == "workspace_container" and isinstance(value, dict) and value:
        event = value.pop("last_code_run_event", None)
        if event is not None:
            yield f"{where}.value.last_code_run_event", event, _execution_problems
    for key, item in node.items():
        yield from _take_out(item, f"{where}.{key}")


def _execution_problems(event: t.Any, where: str) -> list[str]:
    return [f"{where}: {problem}" for problem in problems(event, scale.WorkspaceExecutionData)]


def _file_problems(file: t.Any, where: str) -> list[str]:
    if not isinstance(file, dict):
        return [f"{where}: a File must be an object, not {type(file).__name__}"]
    accepted: list[type[BaseModel]] = []
    errors = []
    for variant in FILE_VARIANTS:  # one by one: see above
        error = _rejection(variant, file)
        if error is None:
            accepted.append(variant)
        else:
            errors.append(f"{variant.__name__}: {error}")
    if not accepted:
        return [f"{where}: no File model accepts it: {'; '.join(errors)}"]
    known = set().union(*(_field_names(variant) for variant in accepted))
    unknown = sorted(file.keys() - known)
    return [f"{where}: fields no File model has: {unknown}"] if unknown else []


def _rejection(model: type[BaseModel], value: JsonObject) -> str | None:
    try:
        model.from_dict(value)  # type: ignore[attr-defined]
    except (ValidationError, ValueError) as error:
        return str(error)
    return None


def _field_names(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def _unknown_fields(raw: t.Any, parsed: t.Any, where: str) -> list[str]:
    """Fields of the raw object that the parsed model has no place for, walking both at once."""
    if isinstance(parsed, BaseModel) and "actual_instance" in type(parsed).model_fields:
        # A `oneOf` wrapper: the model is whichever choice the client picked.
        return _unknown_fields(raw, getattr(parsed, "actual_instance", None), where)
    if isinstance(parsed, list) and isinstance(raw, list):
        return [
            problem
            for index, (raw_item, item) in enumerate(zip(raw, parsed, strict=True))
            for problem in _unknown_fields(raw_item, item, f"{where}[{index}]")
        ]
    if not isinstance(parsed, BaseModel) or not isinstance(raw, dict):
        return []
    model = type(parsed)
    fields = {
        field.alias or name: name
        for name, field in model.model_fields.items()
        if name != "additional_properties"
    }
    found = []
    if "additional_properties" not in model.model_fields:  # models that allow any field
        unknown = sorted(raw.keys() - fields.keys() - FUTURE_FIELDS.get(model.__name__, set()))
        if unknown:
            found.append(f"{where}: fields {model.__name__} does not have: {unknown}")
    for alias, name in fields.items():
        if alias in raw:
            found += _unknown_fields(raw[alias], getattr(parsed, name), f"{where}.{alias}")
    return found
