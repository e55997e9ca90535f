"""What a sync covers: the configured projects, batches, deliveries and datasets, as Scale's ids.

Each part is resolved once, on first use, so a typo in a name fails at once with the name in the
message, and state is keyed by ids, which (unlike names) Scale never changes. Parts no selected
stream needs are never looked up.
"""

from __future__ import annotations

import logging
import typing as t
from dataclasses import dataclass
from functools import cached_property
from http import HTTPStatus

from tap_scale.answers import ScaleAPIError, usable_records

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    Fetch = Callable[[str, dict[str, t.Any]], dict[str, t.Any]]


_warn = logging.getLogger("tap-scale").warning


@dataclass(frozen=True)
class Source:
    """One project or batch whose tasks are synced."""

    kind: t.Literal["project", "batch"]
    id: str

    @property
    def query(self) -> dict[str, str]:
        """The ``/v2/tasks`` query parameter that selects this source."""
        return {f"{self.kind}_id": self.id}


# Batches listed per project when a configured one is unknown: one page of Scale's.
BATCHES_LISTED = 100


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _not_found(what: str, setting: str, visible: Iterable[str]) -> ScaleAPIError:
    listed = ", ".join(visible) or "none"
    return ScaleAPIError(
        f"Scale has no {what} that this API key can see. Check the `{setting}` setting. "
        f"Those the key can see: {listed}."
    )


class Selection:
    """The configured scope of a sync, resolved lazily through Scale's list endpoints."""

    def __init__(self, config: Mapping[str, t.Any], fetch: Fetch) -> None:
        """Resolve ``config``'s selection settings with ``fetch(path, params) -> body``."""
        self._config = config
        self._fetch = fetch

    def _listed(self, path: str, params: dict[str, t.Any], key: str) -> list[dict[str, t.Any]]:
        """The objects with an id in a list Scale answers with; the rest skipped with a warning."""
        items = self._fetch(path, params).get(key)
        where = f"the `{key}` list of Scale's answer to GET /v2{path}"
        return list(usable_records(items if isinstance(items, list) else [], "id", where, _warn))

    def _setting(self, name: str) -> list[str]:
        return list(self._config.get(name) or [])

    @cached_property
    def projects(self) -> list[dict[str, t.Any]]:
        """The configured projects, or every project the key can see; unknown ones are errors."""
        visible = self._listed("/projects", {}, "projects")
        ids, names = self._setting("project_ids"), self._setting("project_names")
        if not ids and not names:
            return list(visible)
        by_id = {project["id"]: project for project in visible}
        by_name = {project.get("name"): project for project in visible}
        for setting, wanted, index in (
            ("project_ids", ids, by_id),
            ("project_names", names, by_name),
        ):
            unknown = [value for value in wanted if value not in index]
            if unknown:
                raise _not_found(
                    f"project with {setting[:-1].replace('_', ' ')} "
                    + " or ".join(map(repr, unknown)),
                    setting,
                    (f"{p.get('name')!r} ({p['id']})" for p in visible),
                )
        chosen = _unique([*ids, *(by_name[name]["id"] for name in names)])
        return [by_id[project_id] for project_id in chosen]

    @cached_property
    def project_ids(self) -> list[str]:
        """Ids of the projects in scope."""
        return [project["id"] for project in self.projects]

    @cached_property
    def task_sources(self) -> list[Source]:
        """Where tasks come from: the configured batches, else the projects in scope."""
        batch_ids, batch_names = self._setting("batch_ids"), self._setting("batch_names")
        if batch_ids or batch_names:
            ids = [self._batch_id("batch_id", value) for value in batch_ids]
            ids += [self._batch_id("batch_name", value) for value in batch_names]
            return [Source("batch", batch_id) for batch_id in _unique(ids)]
        return [Source("project", project_id) for project_id in self.project_ids]

    def _batch_id(self, parameter: str, value: str) -> str:
        try:
            batch = self._fetch("/batch", {parameter: value})
        except ScaleAPIError as error:
            if error.status_code != HTTPStatus.NOT_FOUND:
                raise
            setting = "batch_ids" if parameter == "batch_id" else "batch_names"
            what = f"batch with {parameter} {value!r}"
            raise _not_found(what, setting, self._visible_batches()) from None
        if not isinstance(batch.get("id"), str):
            msg = f"Scale answered GET /v2/batch for {parameter} {value!r} without the batch's id."
            raise ScaleAPIError(msg)
        return str(batch["id"])

    def _visible_batches(self) -> list[str]:
        """Batches of the projects in scope, as a person would pick one: a first page of each."""
        visible: list[str] = []
        for project in self.projects:
            body = self._fetch("/batches", {"project_id": project["id"], "limit": BATCHES_LISTED})
            batches = body.get("batches") or []
            visible += [
                f"{batch.get('name')!r} ({batch.get('id')})"
                for batch in batches
                if isinstance(batch, dict)
            ]
            if body.get("next_token"):
                visible.append(f"more in project {project.get('name')!r}")
        return visible

    @cached_property
    def delivery_ids(self) -> frozenset[str] | None:
        """The configured deliveries (by id or by name within the projects), or None for all."""
        ids, names = self._setting("delivery_ids"), self._setting("delivery_names")
        if not ids and not names:
            return None
        deliveries = [
            delivery
            for project_id in self.project_ids
            for delivery in self._listed("/deliveries", {"project_id": project_id}, "deliveries")
        ]
        visible = [f"{d.get('name')!r} ({d['id']})" for d in deliveries]
        known_ids = {delivery["id"] for delivery in deliveries}
        if unknown := [value for value in ids if value not in known_ids]:
            what = "delivery with id " + " or ".join(map(repr, unknown)) + " in these projects"
            raise _not_found(what, "delivery_ids", visible)
        chosen = set(ids)
        for name in names:
            matches = {d["id"] for d in deliveries if d.get("name") == name}
            if not matches:
                what = f"delivery named {name!r} in these projects"
                raise _not_found(what, "delivery_names", visible)
            if len(matches) > 1:
                msg = (
                    f"Several deliveries are named {name!r} ({', '.join(sorted(matches))}) in the "
                    "configured projects. Name one project in `project_ids` or `project_names`, "
                    "or use `delivery_ids`."
                )
                raise ScaleAPIError(msg)
            chosen |= matches
        return frozenset(chosen)

    @cached_property
    def datasets(self) -> list[dict[str, t.Any]]:
        """The configured datasets, or every dataset the key can see; unknown ones are errors."""
        visible = self._listed("/datasets", {}, "datasets")
        wanted = self._setting("dataset_ids")
        if not wanted:
            return list(visible)
        by_id = {dataset["id"]: dataset for dataset in visible}
        if unknown := [value for value in wanted if value not in by_id]:
            raise _not_found(
                "dataset with id " + " or ".join(map(repr, unknown)),
                "dataset_ids",
                (f"{d.get('name')!r} ({d['id']})" for d in visible),
            )
        return [by_id[dataset_id] for dataset_id in _unique(wanted)]

    @cached_property
    def dataset_ids(self) -> list[str]:
        """Ids of the datasets in scope."""
        return [dataset["id"] for dataset in self.datasets]

    def dataset_deliveries(self, dataset_id: str) -> list[dict[str, t.Any]]:
        """Every delivery of a dataset, listed once per sync (`GET /v2/datasets/deliveries`).

        One listing serves the targeted deliveries' check, the `dataset_deliveries` stream and
        the plan of how `dataset_tasks` reads them. Callers must not change what it returns.
        """
        listed = self._dataset_deliveries.get(dataset_id)
        if listed is None:
            params = {"dataset_id": dataset_id}
            listed = self._listed("/datasets/deliveries", params, "deliveries")
            self._dataset_deliveries[dataset_id] = listed
        return listed

    @cached_property
    def _dataset_deliveries(self) -> dict[str, list[dict[str, t.Any]]]:
        return {}

    @cached_property
    def dataset_delivery_ids(self) -> frozenset[str] | None:
        """The configured dataset deliveries, or None for all; unknown ones are errors."""
        wanted = self._setting("dataset_delivery_ids")
        if not wanted:
            return None
        deliveries = [
            delivery
            for dataset_id in self.dataset_ids
            for delivery in self.dataset_deliveries(dataset_id)
        ]
        known = {delivery["id"] for delivery in deliveries}
        if unknown := [value for value in wanted if value not in known]:
            raise _not_found(
                "dataset delivery with id " + " or ".join(map(repr, unknown)),
                "dataset_delivery_ids",
                (f"{d.get('name')!r} ({d['id']})" for d in deliveries),
            )
        return frozenset(wanted)
