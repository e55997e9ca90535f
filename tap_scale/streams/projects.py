"""Projects and their batches."""

from __future__ import annotations

import sys
import typing as t

from tap_scale.client import ScaleStream
from tap_scale.models import BATCH, PROJECT, utc_timestamp

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context


class ProjectsStream(ScaleStream):
    """The projects in scope, from ``GET /v2/projects`` (not paginated)."""

    name = "projects"
    path = "/projects"
    records_key = "projects"
    primary_keys = ("id",)
    schema = PROJECT.to_dict()

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        # Resolving the selection already listed them: one request serves both.
        for project in self.selection.projects:
            yield {**project, "created_at": utc_timestamp(project.get("created_at"))}


class BatchesStream(ScaleStream):
    """The batches of each project in scope, from ``GET /v2/batches`` (paginated)."""

    name = "batches"
    path = "/batches"
    records_key = "batches"
    primary_keys = ("id",)
    schema = BATCH.to_dict()

    @override
    @property
    def partitions(self) -> list[dict[str, t.Any]]:
        return [{"project": project_id} for project_id in self.selection.project_ids]

    @override
    def get_url_params(
        self,
        context: Context | None,
        next_page_token: str | None,
    ) -> dict[str, t.Any]:
        assert context is not None  # noqa: S101  # always read per project
        return {
            "project_id": context["project"],
            "limit": self.config.get("page_size", 100),
            "next_token": next_page_token,
        }

    @override
    def post_process(
        self,
        row: dict[str, t.Any],
        context: Context | None = None,
    ) -> dict[str, t.Any] | None:
        if isinstance(row.get("project"), dict):
            row["project"] = row["project"].get("id")
        for field in ("created_at", "completed_at"):
            row[field] = utc_timestamp(row.get(field))
        return row
