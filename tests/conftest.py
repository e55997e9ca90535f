"""Fixtures: a live simulated Scale API per test, and settings that point the tap at it."""

from __future__ import annotations

import typing as t

import pytest

from tap_scale.testing import ScaleSimulator


@pytest.fixture
def simulator() -> t.Iterator[ScaleSimulator]:
    """A fresh simulated Scale API with the default world, served over HTTP on loopback."""
    with ScaleSimulator() as sim:
        yield sim


@pytest.fixture
def config(simulator: ScaleSimulator) -> dict[str, t.Any]:
    """Settings pointing the tap at the simulator, with pages small enough to cross often."""
    return {"api_url": simulator.url, "api_key": simulator.api_key, "page_size": 7}
