"""Scale datasets: data Scale produces and delivers outside any project, as free-form responses.

Each dataset has a few deliveries; each delivery's `metadata.turn_count` is the number of turns
in its tasks' responses, as Scale reports it.
"""

from __future__ import annotations

import typing as t

from tap_scale.testing.records import (
    DatasetDeliveryRecord,
    DatasetRecord,
    DatasetTaskRecord,
    new_id,
)
from tap_scale.testing.seeds import chance
from tap_scale.testing.texts import Writer
from tap_scale.testing.timestamps import MICROS_PER_SECOND, format_timestamp, instant

if t.TYPE_CHECKING:
    import random

    from tap_scale.testing.store import Store

JsonObject = dict[str, t.Any]

DATASET_NAMES = ("Multilingual Preference Pairs", "Code Reasoning Traces")
_DELIVERIES_PER_DATASET = 3
_TASKS_PER_DELIVERY = (20, 30)
_DAY = 86_400 * MICROS_PER_SECOND
_LANGUAGES = ("en", "fr", "es", "de", "ja")


def build_datasets(store: Store, rng: random.Random, start: int) -> None:
    """Generate every dataset, its deliveries and their tasks into the store."""
    for number, name in enumerate(DATASET_NAMES):
        dataset = DatasetRecord(new_id(rng, "dataset"), name)
        deliveries: list[DatasetDeliveryRecord] = []
        tasks: list[DatasetTaskRecord] = []
        for week in range(_DELIVERIES_PER_DATASET):
            delivery_id = new_id(rng, "delivery")
            respond = _preference_pair if number % 2 == 0 else _code_trace
            responses = [respond(rng) for _ in range(rng.randint(*_TASKS_PER_DELIVERY))]
            batch = [
                DatasetTaskRecord(new_id(rng, "task"), dataset.dataset_id, delivery_id, response)
                for response in responses
            ]
            precise = chance(rng, 0.5)
            delivered_at = instant(
                start + (number * 14 + week * 7) * _DAY + rng.randrange(_DAY), precise=precise
            )
            deliveries.append(
                DatasetDeliveryRecord(
                    delivery_id=delivery_id,
                    name=f"{name} - {format_timestamp(delivered_at)[:10]}",
                    dataset_id=dataset.dataset_id,
                    delivered_at=delivered_at,
                    precise=precise,
                    task_ids=tuple(task.task_id for task in batch),
                    turn_count=sum(len(response["turns"]) for response in responses),
                )
            )
            tasks += batch
        store.add_dataset(dataset, deliveries, tasks)


def _preference_pair(rng: random.Random) -> JsonObject:
    writer = Writer(rng)
    turns = [
        {"user": writer.prompt(), "assistant": writer.paragraph((1, 3))}
        for _ in range(rng.randint(1, 3))
    ]
    return {
        "language": rng.choice(_LANGUAGES),
        "prompt": turns[0]["user"],
        "chosen": writer.paragraph(),
        "rejected": writer.paragraph(),
        "preference_strength": rng.choice(("slight", "clear", "strong")),
        "turns": turns,
    }


def _code_trace(rng: random.Random) -> JsonObject:
    writer = Writer(rng)
    passed = rng.randint(0, 5)
    return {
        "problem": f"Write a function that checks a claim about {writer.topic}.",
        "reasoning": [writer.sentence() for _ in range(rng.randint(2, 4))],
        "solution": "def check(claim: str) -> bool:\n    return bool(claim.strip())\n",
        "language": "python",
        "tests": {"passed": passed, "failed": 5 - passed},
        "turns": [{"user": writer.prompt(), "assistant": writer.paragraph((1, 2))}],
    }
