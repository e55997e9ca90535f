"""The simulated account: generated deterministically from a seed, then changed by tests.

Only each task's skeleton (ids, status, timestamps, a content seed) is generated up front; its
threads are generated from the seed when it is first rendered, so a world of 100,000 tasks is
built in about a second.

Completed tasks finish on a coarse grid of instants, a few tasks per instant, so that many of
them share `completed_at` (ties) within a project and across page boundaries. Some instants are
whole seconds and some records are rendered without a fraction: the same instant may then read
`...:39Z` on one task and `...:39.000Z` on another, and `...:39Z` sorts after `...:39.500Z` as a
string although it is earlier. A client must compare parsed datetimes.

By default a project's tasks are created over a couple of days and completed days later, within
three days, in no relation to their creation. With `labelled_over_days` they are labelled as
most real projects are: created over that many days, each completed some hours to two days after
it was created (`_MIN_LAG` to `_MAX_LAG`), a few tasks created close together completed at one
instant (the ties), some instants whole seconds and some with milliseconds.
"""

from __future__ import annotations

import re
import typing as t
from dataclasses import replace
from datetime import datetime, timezone

from tap_scale.testing.content import MODELS
from tap_scale.testing.datasets import build_datasets
from tap_scale.testing.orders import DEFAULT_ORDER
from tap_scale.testing.records import (
    BatchRecord,
    DeliveryRecord,
    ProjectRecord,
    ResponseSchemaRecord,
    TaskRecord,
    new_id,
)
from tap_scale.testing.responses import schema_id, schema_json
from tap_scale.testing.seeds import chance, seeded
from tap_scale.testing.store import Store
from tap_scale.testing.timestamps import (
    MICROS_PER_MILLI,
    MICROS_PER_SECOND,
    format_timestamp,
    instant,
    now_micros,
    to_micros,
)

if t.TYPE_CHECKING:
    import random
    from collections.abc import Sequence

TASK_STATUSES = ("pending", "completed", "canceled", "error", "deleted")
BATCH_STATUSES = ("staging", "in_progress", "completed", "paused", "cancelled")

HOUR = 3600 * MICROS_PER_SECOND
DAY = 24 * HOUR
WORLD_START = to_micros(datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc))
_COMPLETION_WINDOW_SECONDS = 3 * 86_400
_TASKS_PER_INSTANT = 4
# With `labelled_over_days`: how long after its creation a task is completed, and how far apart
# the creations of tasks completed at one instant may be.
_MIN_LAG = 2 * HOUR
_MAX_LAG = 2 * DAY
_TIE_SPAN = 6 * HOUR
_PRECISE_SHARE = 0.85
_NO_BATCH_SHARE = 0.03
_REPORTED_SHARE = 0.03
_DELIVERED_SHARE = 0.8
# Projects with fewer completed tasks get no reported task and a single delivery.
_FEW = 10
# Shares of the statuses other than completed; completed tasks are the rest.
_STATUS_SHARES = {"pending": 0.12, "error": 0.06, "canceled": 0.05, "deleted": 0.03}
_BATCH_STATUS_CYCLE = ("completed", "in_progress", "paused", "staging", "cancelled")
_BLUEPRINTS = (
    ("RLHF Preference Ranking", "preference", ("chat", "preference_ranking")),
    ("SFT Conversations", "conversation", ("chat", "sft")),
    ("Rubric Ratings", "rubric", ("chat", "rubric_evaluation")),
    ("Red Team Safety Review", "preference", ("chat", "red_teaming")),
    ("Agentic Tool Use", "conversation", ("chat", "tool_use")),
    ("Multilingual Rubric Ratings", "rubric", ("chat", "rubric_evaluation", "multilingual")),
)


class World:
    """The account's records (in `store`), built from a seed, and the changes tests make to it."""

    def __init__(  # noqa: PLR0913 - every argument is keyword-only
        self,
        *,
        seed: int,
        projects: int,
        batches_per_project: int,
        tasks_per_project: int,
        order: str = DEFAULT_ORDER,
        labelled_over_days: int | None = None,
    ) -> None:
        """Generate the account; the same arguments always give the same world.

        `order` is how listings order tasks (`tap_scale.testing.orders`); `labelled_over_days`,
        when given, has each project's tasks created over that many days and each completed
        hours after its creation (see the module).

        Raises:
            ValueError: for an unknown order, or fewer than one day of labelling.
        """
        if labelled_over_days is not None and labelled_over_days < 1:
            message = f"labelled_over_days must be at least 1, not {labelled_over_days}"
            raise ValueError(message)
        self._labelled_over_days = labelled_over_days
        self.store = Store(order)
        rng = seeded(seed)
        for index in range(projects):
            self._build_project(rng, index, batches_per_project, tasks_per_project)
        build_datasets(self.store, rng, WORLD_START + 30 * DAY)
        # Changes draw from their own Random so that they do not depend on how much the
        # generation above consumed.
        self._rng = seeded(f"changes-{seed}")

    def _build_project(
        self, rng: random.Random, index: int, batch_count: int, task_count: int
    ) -> None:
        name, kind, types = _BLUEPRINTS[index % len(_BLUEPRINTS)]
        if index >= len(_BLUEPRINTS):
            name = f"{name} {index // len(_BLUEPRINTS) + 1}"
        precise = chance(rng, _PRECISE_SHARE)
        created_at = instant(
            WORLD_START + index * 2 * DAY + rng.randrange(8 * HOUR), precise=precise
        )
        project = ProjectRecord(
            new_id(rng, "project"),
            name,
            created_at,
            precise,
            kind,
            types,
            tuple(MODELS[kind].values()),
        )
        batches = [self._batch(rng, project, number, batch_count) for number in range(batch_count)]
        self.store.add_project(project, batches)
        if self._labelled_over_days is None:
            done_from = instant(created_at + (batch_count + 3) * DAY, precise=False)
            tasks = self._tasks(rng, project, batches, task_count, done_from)
        else:
            tasks = self._labelled_tasks(rng, project, batches, task_count)
        self.store.add_tasks(tasks)
        self._deliveries(rng, project, tasks)

    def _batch(
        self, rng: random.Random, project: ProjectRecord, number: int, count: int
    ) -> BatchRecord:
        slug = re.sub(r"[^a-z0-9]+", "-", project.name.lower()).strip("-")
        status = _BATCH_STATUS_CYCLE[number % len(_BATCH_STATUS_CYCLE)]
        precise = chance(rng, _PRECISE_SHARE)
        if self._labelled_over_days is None:
            created_from = project.created_at + (number + 1) * DAY
            completed_from = project.created_at + (count + 7) * DAY
        else:
            # One after the other over the days of labelling, each done once its tasks are.
            span = self._labelled_over_days * DAY // count
            created_from = project.created_at + DAY + number * span
            completed_from = created_from + span + HOUR + _MAX_LAG
        created_at = instant(created_from + rng.randrange(HOUR), precise=precise)
        completed_at = None
        if status == "completed":
            completed_at = instant(completed_from + rng.randrange(DAY), precise=precise)
        return BatchRecord(
            batch_id=new_id(rng, "batch"),
            name=f"{slug}-batch-{number + 1:03d}",
            project_id=project.project_id,
            status=status,
            created_at=created_at,
            completed_at=completed_at,
            precise=precise,
            callback=f"https://hooks.example.com/scale/{slug}" if chance(rng, 0.6) else None,
            metadata={
                "campaign": f"2025-q1-{slug}",
                "owner": rng.choice(("ml-evals", "data-ops", "safety")),
                "priority": rng.choice(("high", "normal", "low")),
            },
        )

    def _tasks(
        self,
        rng: random.Random,
        project: ProjectRecord,
        batches: Sequence[BatchRecord],
        count: int,
        done_from: int,
    ) -> list[TaskRecord]:
        statuses = _status_mix(rng, count)
        reported = _reported(rng, statuses)
        slots = _completion_instants(rng, done_from, max(2, count // _TASKS_PER_INSTANT))
        whole_slots = [slot for slot in slots if slot % MICROS_PER_SECOND == 0]
        tasks = []
        for number, status in enumerate(statuses):
            precise = chance(rng, _PRECISE_SHARE)
            batch = rng.choice(batches) if batches and not chance(rng, _NO_BATCH_SHARE) else None
            created_from = batch.created_at if batch else project.created_at + DAY
            completed_at = None
            if status == "completed" or (status == "deleted" and chance(rng, 0.5)):
                completed_at = rng.choice(slots if precise else whole_slots)
            tasks.append(
                TaskRecord(
                    task_id=new_id(rng, "task"),
                    project_id=project.project_id,
                    batch_id=batch.batch_id if batch else None,
                    status=status,
                    created_at=instant(created_from + rng.randrange(2 * DAY), precise=precise),
                    completed_at=completed_at,
                    precise=precise,
                    reported=number in reported,
                    kind=project.kind,
                    seed=rng.getrandbits(63),
                )
            )
        return tasks

    def _labelled_tasks(
        self,
        rng: random.Random,
        project: ProjectRecord,
        batches: Sequence[BatchRecord],
        count: int,
    ) -> list[TaskRecord]:
        """Tasks created over the days of labelling, each completed hours after its creation.

        A batch's tasks are created from its creation over its share of the days; tasks of no
        batch over all of them.
        """
        days = self._labelled_over_days or 1
        statuses = _status_mix(rng, count)
        reported = _reported(rng, statuses)
        labelling_from = project.created_at + DAY
        batch_span = days * DAY // max(1, len(batches))
        precise: list[bool] = []
        batch_ids: list[str | None] = []
        created: list[int] = []
        finished: list[bool] = []
        for status in statuses:
            precise.append(chance(rng, _PRECISE_SHARE))
            batch = rng.choice(batches) if batches and not chance(rng, _NO_BATCH_SHARE) else None
            batch_ids.append(batch.batch_id if batch else None)
            moment = (
                batch.created_at + rng.randrange(batch_span)
                if batch
                else labelling_from + rng.randrange(days * DAY)
            )
            created.append(instant(moment, precise=precise[-1]))
            finished.append(status == "completed" or (status == "deleted" and chance(rng, 0.5)))
        completed_at = _labelled_completions(rng, created, finished, precise)
        return [
            TaskRecord(
                task_id=new_id(rng, "task"),
                project_id=project.project_id,
                batch_id=batch_ids[number],
                status=status,
                created_at=created[number],
                completed_at=completed_at[number],
                precise=precise[number],
                reported=number in reported,
                kind=project.kind,
                seed=rng.getrandbits(63),
            )
            for number, status in enumerate(statuses)
        ]

    def _deliveries(
        self, rng: random.Random, project: ProjectRecord, tasks: list[TaskRecord]
    ) -> None:
        # Scale delivers what was completed up to a point; the latest completions are undelivered.
        done = sorted(
            (task for task in tasks if task.status == "completed"),
            key=lambda task: task.completed_at or 0,
        )
        done = done[: int(len(done) * _DELIVERED_SHARE)]
        count = min(3, max(1, len(done) // _FEW)) if done else 0
        start = 0
        for number in range(count):
            end = len(done) if number == count - 1 else (number + 1) * len(done) // count
            # Tasks finished at the same instant go out together.
            while 0 < end < len(done) and done[end].completed_at == done[end - 1].completed_at:
                end += 1
            chunk, start = done[start:end], max(start, end)
            if chunk:
                when = (chunk[-1].completed_at or 0) + rng.randrange(HOUR, 12 * HOUR)
                self._add_delivery(rng, project, [task.task_id for task in chunk], when, None)

    def _add_delivery(  # noqa: PLR0913 - the schema version is keyword-only, with a default
        self,
        rng: random.Random,
        project: ProjectRecord,
        task_ids: list[str],
        when: int,
        name: str | None,
        *,
        schema_version: int = 1,
    ) -> DeliveryRecord:
        """Add a delivery; its responses follow this version of the project's response schema."""
        precise = chance(rng, _PRECISE_SHARE)
        delivered_at = instant(when, precise=precise)
        with self.store.lock:
            taken = {delivery.name for delivery in self.store.deliveries_of(project.project_id)}
            if name in taken:
                message = f"project {project.project_id} already has a delivery named {name!r}"
                raise ValueError(message)
            # Scale's examples name deliveries after their day; a second one that day gets a suffix.
            base = name or f"{project.name} - {format_timestamp(delivered_at)[:10]}"
            unique, suffix = base, 2
            while unique in taken:
                unique, suffix = f"{base} ({suffix})", suffix + 1
            schema = ResponseSchemaRecord(
                schema_id(project.project_id, schema_version),
                project.project_id,
                schema_json(project.kind, schema_version),
            )
            self.store.add_response_schema(schema)
            delivery = DeliveryRecord(
                delivery_id=new_id(rng, "delivery"),
                name=unique,
                project_id=project.project_id,
                delivered_at=delivered_at,
                precise=precise,
                task_ids=tuple(task_ids),
                response_schema_id=schema.schema_id,
            )
            self.store.add_delivery(delivery)
        return delivery

    # Changes tests make between runs.

    def add_tasks(
        self,
        project_id: str,
        count: int,
        *,
        status: str,
        completed_at: datetime | None,
        batch_id: str | None,
    ) -> list[TaskRecord]:
        """Create tasks; completed ones all finish at `completed_at` (default: now), a tie.

        Without `batch_id` the tasks join the project's newest batch, as tasks created through
        Scale's batch workflow do.

        Raises:
            ValueError: for an unknown project, a batch of another project, or a bad status.
        """
        if status not in TASK_STATUSES:
            message = f"status must be one of {', '.join(TASK_STATUSES)}, not {status!r}"
            raise ValueError(message)
        with self.store.lock:
            project = self._project(project_id)
            batch_id = batch_id or self._newest_batch_id(project_id)
            if batch_id is not None and self.store.batches.get(batch_id, None) is None:
                message = f"unknown batch {batch_id!r}"
                raise ValueError(message)
            if batch_id is not None and self.store.batches[batch_id].project_id != project_id:
                message = f"batch {batch_id!r} belongs to another project"
                raise ValueError(message)
            finished = _finish_time(completed_at) if status == "completed" else None
            created_at = min(now_micros(), finished or now_micros()) - self._rng.randrange(HOUR)
            tasks = [
                TaskRecord(
                    task_id=self._unused_id("task"),
                    project_id=project_id,
                    batch_id=batch_id,
                    status=status,
                    created_at=instant(created_at, precise=True),
                    completed_at=finished,
                    precise=True,
                    reported=False,
                    kind=project.kind,
                    seed=self._rng.getrandbits(63),
                )
                for _ in range(count)
            ]
            self.store.add_tasks(tasks)
        return tasks

    def complete_tasks(
        self, project_id: str, count: int, *, completed_at: datetime | None
    ) -> list[TaskRecord]:
        """Complete `count` of the project's pending tasks (oldest first), all at one instant.

        Raises:
            ValueError: for an unknown project or when fewer tasks are pending.
        """
        finished = _finish_time(completed_at)
        with self.store.lock:
            self._project(project_id)
            pending = sorted(
                (
                    task
                    for task in self.store.tasks.values()
                    if task.project_id == project_id and task.status == "pending"
                ),
                key=lambda task: (task.created_at, task.task_id),
            )
            if len(pending) < count:
                message = f"project {project_id} has {len(pending)} pending tasks, not {count}"
                raise ValueError(message)
            done = [
                replace(task, status="completed", completed_at=finished, precise=True)
                for task in pending[:count]
            ]
            for task in done:
                self.store.replace_task(task)
        return done

    def rework_tasks(
        self, project_id: str, task_ids: Sequence[str], *, completed_at: datetime | None
    ) -> list[TaskRecord]:
        """Send completed tasks back to raters and complete them again, all at one instant.

        A reworked task keeps its id and is completed later, its threads done afresh: other
        turns, messages and annotations, so that what the old version held is gone.

        Raises:
            ValueError: for an unknown project, or a task not completed in that project.
        """
        finished = _finish_time(completed_at)
        with self.store.lock:
            self._project(project_id)
            tasks = [self.store.tasks.get(task_id) for task_id in task_ids]
            for task_id, task in zip(task_ids, tasks, strict=True):
                if task is None or task.project_id != project_id or task.status != "completed":
                    message = f"task {task_id!r} is not a completed task of project {project_id}"
                    raise ValueError(message)
            redone = [
                replace(
                    t.cast("TaskRecord", task),
                    completed_at=finished,
                    precise=True,
                    reported=False,
                    seed=self._rng.getrandbits(63),
                )
                for task in tasks
            ]
            for task in redone:
                self.store.replace_task(task)
        return redone

    def deliver(self, project_id: str, task_ids: Sequence[str], name: str | None) -> DeliveryRecord:
        """Deliver some of a project's completed tasks now.

        Raises:
            ValueError: for an unknown project, or a task not completed in that project.
        """
        with self.store.lock:
            project = self._project(project_id)
            for task_id in task_ids:
                task = self.store.tasks.get(task_id)
                if task is None or task.project_id != project_id or task.status != "completed":
                    message = f"{task_id!r} is not a completed task of project {project_id}"
                    raise ValueError(message)
            # A delivery made later follows a new version of the project's response schema, as
            # when a project's taxonomy changes: the generated deliveries all follow version 1.
            versions = sum(
                schema.project_id == project_id for schema in self.store.response_schemas.values()
            )
            return self._add_delivery(
                self._rng, project, list(task_ids), now_micros(), name, schema_version=versions + 1
            )

    def _project(self, project_id: str) -> ProjectRecord:
        project = self.store.projects.get(project_id)
        if project is None:
            message = f"unknown project {project_id!r}"
            raise ValueError(message)
        return project

    def _newest_batch_id(self, project_id: str) -> str | None:
        batches = [b for b in self.store.batches.values() if b.project_id == project_id]
        return max(batches, key=lambda batch: batch.created_at).batch_id if batches else None

    def _unused_id(self, prefix: str) -> str:
        while (candidate := new_id(self._rng, prefix)) in self.store.tasks:
            pass  # pragma: no cover - 96 random bits do not collide in practice
        return candidate


def _finish_time(completed_at: datetime | None) -> int:
    return now_micros() if completed_at is None else instant(to_micros(completed_at), precise=True)


def status_counts(count: int) -> dict[str, int]:
    """How many of a project's `count` generated tasks have each status, completed first.

    Every status is present once there are enough tasks. Benchmarks use it to size a world
    for a number of completed tasks.
    """
    others = {status: int(count * share) for status, share in _STATUS_SHARES.items()}
    if count >= 2 * len(TASK_STATUSES):
        others = {status: max(1, number) for status, number in others.items()}
    return {"completed": count - sum(others.values()), **others}


def _status_mix(rng: random.Random, count: int) -> list[str]:
    """Task statuses in a shuffled order, every status present once there are enough tasks."""
    statuses: list[str] = []
    for status, number in status_counts(count).items():
        statuses += [status] * number
    rng.shuffle(statuses)
    return statuses


def _reported(rng: random.Random, statuses: Sequence[str]) -> set[int]:
    """Which completed tasks (by number) carry sensitive content reports: a few, or none."""
    completed = [n for n, status in enumerate(statuses) if status == "completed"]
    reported_count = int(len(completed) * _REPORTED_SHARE)
    reported_count = reported_count or (1 if len(completed) >= _FEW else 0)
    return set(rng.sample(completed, reported_count))


def _labelled_completions(
    rng: random.Random, created: Sequence[int], finished: Sequence[bool], precise: Sequence[bool]
) -> list[int | None]:
    """Each finished task's `completed_at`: its `created_at` and a lag; None for the others.

    Finished tasks are taken in order of creation, a few at a time (about `_TASKS_PER_INSTANT`,
    created at most `_TIE_SPAN` apart), each few completed at one instant `_MIN_LAG` to
    `_MAX_LAG` after every one's creation. An instant is whole seconds when a task of its few is
    rendered without a fraction (so that its text names the instant), else half of the time.
    """
    completed_at: list[int | None] = [None] * len(created)
    done = sorted((n for n, yes in enumerate(finished) if yes), key=lambda n: (created[n], n))
    few: list[int] = []
    size = 0
    for number in [*done, None]:
        if few and (
            number is None or len(few) == size or created[number] - created[few[0]] > _TIE_SPAN
        ):
            # At least _MIN_LAG after the last creation (a second more: cut to whole seconds),
            # less than _MAX_LAG after the first.
            first, last = created[few[0]], created[few[-1]]
            spread = _MAX_LAG - (last - first) - _MIN_LAG - MICROS_PER_SECOND
            moment = last + _MIN_LAG + MICROS_PER_SECOND + rng.randrange(spread)
            whole = not all(precise[n] for n in few) or chance(rng, 0.5)
            moment = instant(moment, precise=not whole)
            for n in few:
                completed_at[n] = moment
            few = []
        if number is not None:
            if not few:
                size = 1 + rng.randrange(2 * _TASKS_PER_INSTANT - 1)
            few.append(number)
    return completed_at


def _completion_instants(rng: random.Random, start: int, count: int) -> list[int]:
    """`count` distinct instants in a window of days; half on whole seconds, half with ms."""
    count = min(count, _COMPLETION_WINDOW_SECONDS)
    seconds = rng.sample(range(_COMPLETION_WINDOW_SECONDS), count)
    return [
        start
        + second * MICROS_PER_SECOND
        + (0 if number % 2 == 0 else rng.randrange(1, 1000) * MICROS_PER_MILLI)
        for number, second in enumerate(seconds)
    ]
