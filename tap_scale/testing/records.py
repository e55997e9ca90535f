"""The simulator's stored objects: immutable records, replaced (never edited) on change.

Immutability lets server threads render a record outside the store's lock while a test moves
the world on: a reader holds either the old record or the new one, never half of each. Instants
are microseconds since the epoch; `precise` says whether Scale renders them with milliseconds.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

if t.TYPE_CHECKING:
    import random
    from collections.abc import Mapping


def new_id(rng: random.Random, prefix: str) -> str:
    """A Scale-style id: the object's prefix and 24 hex digits."""
    return f"{prefix}_{rng.getrandbits(96):024x}"


@dataclass(frozen=True, slots=True)
class ProjectRecord:
    """A project, and which kind of work (`content.KINDS`) its tasks hold."""

    project_id: str
    name: str
    created_at: int
    precise: bool
    kind: str
    types: tuple[str, ...]
    models: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """A batch of tasks in a project."""

    batch_id: str
    name: str
    project_id: str
    status: str
    created_at: int
    completed_at: int | None
    precise: bool
    callback: str | None
    metadata: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A task; its metadata and threads are generated from `seed` when rendered.

    `reported` marks a completed task with sensitive content reports, which carries no threads.
    """

    task_id: str
    project_id: str
    batch_id: str | None
    status: str
    created_at: int
    completed_at: int | None
    precise: bool
    reported: bool
    kind: str
    seed: int


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A delivery of completed tasks of one project, whose responses follow one schema."""

    delivery_id: str
    name: str
    project_id: str
    delivered_at: int
    precise: bool
    task_ids: tuple[str, ...]
    response_schema_id: str


@dataclass(frozen=True, slots=True)
class ResponseSchemaRecord:
    """The JSON Schema (as Scale's string) that a project's delivered responses follow."""

    schema_id: str
    project_id: str
    json: str


@dataclass(frozen=True, slots=True)
class DatasetRecord:
    """A Scale dataset (data Scale produces and sells, outside any customer project)."""

    dataset_id: str
    name: str


@dataclass(frozen=True, slots=True)
class DatasetDeliveryRecord:
    """A delivery of a dataset's tasks; `turn_count` sums the turns of its responses."""

    delivery_id: str
    name: str
    dataset_id: str
    delivered_at: int
    precise: bool
    task_ids: tuple[str, ...]
    turn_count: int


@dataclass(frozen=True, slots=True)
class DatasetTaskRecord:
    """A dataset task: a free-form `response` object delivered in one dataset delivery."""

    task_id: str
    dataset_id: str
    delivery_id: str
    response: Mapping[str, object]
