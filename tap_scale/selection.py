"""What a sync covers: the configured projects or batches, resolved to Scale's ids up front.

Resolving before the first task request means a typo in a name fails at once with the name in
the message, and state is keyed by ids, which (unlike names) Scale never changes.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass
from http import HTTPStatus

from tap_scale.client import ScaleAPIError

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    Fetch = Callable[[str, dict[str, t.Any]], dict[str, t.Any]]


@dataclass(frozen=True)
class Source:
    """One project or batch whose tasks are synced: the ``/v2/tasks`` parameter that selects it."""

    kind: t.Literal["project", "batch"]
    id: str

    @property
    def query(self) -> dict[str, str]:
        """The ``/v2/tasks`` query parameter that selects this source."""
        return {f"{self.kind}_id": self.id}


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def resolve_sources(config: Mapping[str, t.Any], fetch: Fetch) -> list[Source]:
    """The sources of a sync: the configured batches, else the configured projects, else all."""
    batch_ids, batch_names = config.get("batch_ids") or [], config.get("batch_names") or []
    if batch_ids or batch_names:
        ids = [_batch_id(fetch, "batch_id", value) for value in batch_ids]
        ids += [_batch_id(fetch, "batch_name", value) for value in batch_names]
        return [Source("batch", batch_id) for batch_id in _unique(ids)]
    return [Source("project", project_id) for project_id in resolve_project_ids(config, fetch)]


def resolve_project_ids(config: Mapping[str, t.Any], fetch: Fetch) -> list[str]:
    """Ids of the configured projects (by id or name), or of every project the key can see."""
    projects = fetch("/projects", {}).get("projects") or []
    names_to_ids = {project["name"]: project["id"] for project in projects}
    wanted_ids = config.get("project_ids") or []
    wanted_names = config.get("project_names") or []
    if not wanted_ids and not wanted_names:
        return _unique(project["id"] for project in projects)

    unknown = [
        f"project id {value!r}" for value in wanted_ids if value not in names_to_ids.values()
    ]
    unknown += [f"project name {value!r}" for value in wanted_names if value not in names_to_ids]
    if unknown:
        visible = ", ".join(f"{name!r} ({pid})" for name, pid in names_to_ids.items()) or "none"
        msg = (
            f"Scale has no {' and no '.join(unknown)} that this API key can see. Check the "
            f"`project_ids` and `project_names` settings. Projects the key can see: {visible}."
        )
        raise ScaleAPIError(msg)
    return _unique([*wanted_ids, *(names_to_ids[name] for name in wanted_names)])


def _batch_id(fetch: Fetch, parameter: str, value: str) -> str:
    try:
        batch = fetch("/batch", {parameter: value})
    except ScaleAPIError as error:
        if error.status_code != HTTPStatus.NOT_FOUND:
            raise
        setting = "batch_ids" if parameter == "batch_id" else "batch_names"
        msg = (
            f"Scale has no batch with {parameter} {value!r} that this API key can see. "
            f"Check the `{setting}` setting. (Scale said: {error.scale_text})"
        )
        raise ScaleAPIError(msg) from None
    return str(batch["id"])
