"""Seeded randomness: everything the simulator makes up must be reproducible, never secret."""

from __future__ import annotations

import random
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Sequence

T = t.TypeVar("T")


def seeded(seed: int | str) -> random.Random:
    """A Random that always draws the same sequence for the same seed."""
    return random.Random(seed)  # noqa: S311 - reproducible test data, not secrets


def chance(rng: random.Random, probability: float) -> bool:
    """True with this probability."""
    return rng.random() < probability


def pick(rng: random.Random, options: Sequence[T]) -> T:
    """One of the options, uniformly.

    `Random.choice` is exact for any length but three times slower; a world of 100,000 tasks
    makes millions of picks from short tuples, where the float's bias is far below noticing.
    """
    return options[int(rng.random() * len(options))]
