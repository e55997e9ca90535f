"""Projects and their batches."""

from __future__ import annotations

import sys
import typing as t

from tap_scale.client import ScaleStream
from tap_scale.models import BATCH, PROJECT

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
        yield from map(dict, self.selection.projects)  # copies: records are post-processed


class BatchesStream(ScaleStream):
    """The batches of each project in scope, from ``GET /v2/batches`` (paginated)."""

    name = "batches"
    path = "/batches"
    records_key = "batches"
    primary_keys = ("id",)
    schema = BATCH.to_dict()
    id_fields = ("project",)

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
        return {"project_id": context["project"], **self.page_params(next_page_token)}
