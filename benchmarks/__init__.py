"""Benchmarks of tap-scale against the simulated Scale API: `python -m benchmarks.bench`."""
