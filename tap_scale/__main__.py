"""Run tap-scale with ``python -m tap_scale``."""

from tap_scale.cli import main

main()
