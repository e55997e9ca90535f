"""The Singer SDK's standard tap tests, run against the simulator."""

from __future__ import annotations

from singer_sdk.testing import get_tap_test_class

from tap_scale.tap import TapScale
from tap_scale.testing import ScaleSimulator

# The SDK builds its test class at import time from a fixed config, so the simulator it talks to
# has to be up by then; it serves from a daemon thread for the rest of the session.
SIMULATOR = ScaleSimulator(seed=7).start()

TestTapScale = get_tap_test_class(
    tap_class=TapScale,
    config={
        "api_url": SIMULATOR.url,
        "api_key": SIMULATOR.api_key,
        "page_size": 25,
        # Every status, so that every field of the schema appears in some record.
        "task_statuses": ["completed", "pending", "canceled", "error", "deleted"],
    },
)
