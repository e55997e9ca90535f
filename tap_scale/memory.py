"""How the tap's process manages memory: the settings of Python's and the C library's allocators.

Both are set once, as the tap starts, before any reader thread: each page of tasks is thousands
of objects, made by a reader thread and freed by the thread writing messages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys

# glibc's `mallopt` parameter for the most malloc arenas (malloc.h): by default up to eight per
# core, one for each thread that allocates, each holding on to what was freed in it.
_M_ARENA_MAX = -8
# And the size from which an allocation is its own mapping, given back to the system when freed.
_M_MMAP_THRESHOLD = -3
# Two: the thread writing messages and the readers, which share the other. Measured with eight
# readers on 10,000 tasks at 200 ms, three runs each: a peak of 115-120 MB instead of 130 MB, in
# the same time (4.6-5.0 s either way).
MALLOC_ARENAS = 2
# glibc's default, fixed: glibc raises it to the size of each mapped block freed (up to 32 MB),
# after which Scale's 1.5 MB bodies come from the arenas, among small objects that outlive
# them, and the heap only grows. Fixed, with eight readers on 100,000 tasks (three projects, no
# latency): a peak of 89-91 MB instead of 155-163 MB, in the same 21-22 s, once checking a page's
# UTF-8 no longer mapped fresh memory for its text (`tap_scale.reading.task_pages`).
MMAP_THRESHOLD = 128 * 1024


def tune() -> None:
    """Set the collector's threshold, and on glibc the malloc arenas and mapping threshold."""
    # Each page of tasks is thousands of new dicts and lists, freed by reference counting and
    # never in cycles, yet CPython's cycle collector scanned them after every 700 allocations:
    # a quarter of a sync's CPU. It now runs after 50,000 (cycles, which requests and urllib3
    # do make, are still collected).
    gc.set_threshold(50_000, 20, 10)
    limit_malloc_arenas()


def limit_malloc_arenas() -> bool:
    """Cap glibc's malloc arenas at `MALLOC_ARENAS`, fix `MMAP_THRESHOLD`; whether it could.

    Memory freed in a thread's arena stays in that arena, so with a reader thread per
    `max_concurrency` the process held a page's worth per reader more than it needed. False
    off glibc, where neither applies.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    # Not glibc (musl has mallopt, and ignores this parameter): nothing to do, nothing to say.
    if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    arenas = mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
    mapped = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    return bool(arenas and mapped)
