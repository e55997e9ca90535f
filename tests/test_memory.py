"""The process's allocator settings, as the tap sets them when it starts."""

from __future__ import annotations

import gc
import platform

import pytest

from tap_scale import memory


def test_the_cycle_collector_waits_for_50000_allocations() -> None:
    before = gc.get_threshold()
    try:
        memory.tune()
        assert gc.get_threshold() == (50_000, 20, 10)
    finally:
        gc.set_threshold(*before)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's")
def test_glibc_takes_the_cap_on_malloc_arenas() -> None:
    # mallopt answers 1 when it took the setting, 0 when it refused it.
    assert memory.limit_malloc_arenas() is True


@pytest.mark.skipif(platform.libc_ver()[0] == "glibc", reason="this C library is glibc")
def test_other_c_libraries_are_left_as_they_are() -> None:
    assert memory.limit_malloc_arenas() is False
