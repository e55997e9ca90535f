"""Run tap-scale with ``python -m tap_scale``."""

from tap_scale.tap import TapScale

TapScale.cli()
