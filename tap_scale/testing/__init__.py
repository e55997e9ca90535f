"""A local simulator of Scale's v2 data API, for tap-scale's tests, demo and benchmarks.

Like `singer_sdk.testing`, it ships with the package but is used only to test it::

    with ScaleSimulator(seed=1) as scale:
        requests.get(f"{scale.url}/projects", headers={"Authorization": f"Bearer {scale.api_key}"})

Run `python -m tap_scale.testing` to serve one from a shell.
"""

from tap_scale.testing.faults import Faults
from tap_scale.testing.render import ALL_OPTS
from tap_scale.testing.simulator import DEFAULT_API_KEY, ScaleSimulator

__all__ = ["ALL_OPTS", "DEFAULT_API_KEY", "Faults", "ScaleSimulator"]
