"""The process's allocator settings, as the tap sets them when it starts."""

from __future__ import annotations

import gc
import platform

from tap_scale import memory


def test_the_cycle_collector_waits_for_50000_allocations() -> None:
    before = gc.get_threshold()
    try:
        memory.tune()
        assert gc.get_threshold() == (50_000, 20, 10)
    finally:
        gc.set_threshold(*before)


def test_the_malloc_arenas_are_capped_where_the_c_library_is_glibc() -> None:
    # glibc's mallopt answers 1 when it took the setting; elsewhere nothing is asked of it.
    assert memory.limit_malloc_arenas() is (platform.libc_ver()[0] == "glibc")
