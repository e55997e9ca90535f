"""Windows of `completed_at`: how one task partition is read as several chains of pages at once.

Scale serves a partition's tasks unsorted, as one chain of `next_token` pages, so the only way
to read a big project faster is to ask for several stretches of its `completed_at` range at
once, each a chain of its own: a *window*. `PartitionPlan` plans a partition's windows while
it is read:

- The partition is first read as one window, its whole range. An incremental sync of a few
  new tasks ends there, with one request.
- A window whose first page says more pages follow becomes a *region* when it was that first
  whole-range read, when it was expected to fit in one page (a dense stretch), or when a worker
  is idle and the window still holds several pages. Its first page is set aside (its tasks come
  again in the region's windows) and the region is cut into windows as workers ask for work.
- Each window cut from a region holds about `TARGET_PAGES` pages, by an estimate of how the
  region's tasks spread over time: half evenly over the range, half as the set-aside page's
  own `completed_at`s spread (a sample of the region, as Scale's order is not by time), scaled
  by the tasks counted in the region's windows read so far. Until one is counted, windows are
  small (`SLOW_START_WINDOWS` to a worker). Once what is left fits the workers, it is cut into
  one window a worker, so they finish together.
- The partition's *watermark* is where its first window not yet emitted starts: every task
  completed before it has been emitted, so it is a bookmark to resume from.

Edges never lose a task: Scale's `completed_after` is strict, so each window but the first asks
from one millisecond before its start, and a task exactly on an edge is read by both windows
whatever `completed_before` does at equality (undocumented). Targets upsert that duplicate.
"""

from __future__ import annotations

import typing as t
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

if t.TYPE_CHECKING:
    from collections.abc import Sequence

# Pages a window cut from a region holds: more pages per window mean fewer windows whose last
# page is part-full (a request each), fewer mean less to read again after an interruption
# (the windows being read when a sync stops). A little under whole pages, so a window of an
# estimated 5 pages does not take a sixth for a few tasks. Measured on 10,000 tasks (README,
# Performance): 2.9 pages took 120-129 requests for 100 pages' worth, 4.9 took 113-117, and a
# sync killed at half then resumed emitted 55% and 56% of the tasks again.
TARGET_PAGES = 4.9
# Before a region's windows have counted any tasks, each worker's first window is this small
# a share of the region, so a region of a few hundred tasks is not cut into many windows.
SLOW_START_WINDOWS = 8
# Pages' worth of tasks a region's windows must have counted before their count sizes the next
# windows: one sparse window counted alone once sized the next at 11 pages, where 5 were due,
# and that one window took as long as the rest of the read (10,000 tasks, 8 workers).
TRUSTED_PAGES = 2
# Windows narrower than this are not cut up further: their tasks share one instant or nearly.
NARROWEST = timedelta(milliseconds=4)
# Regions a partition may make from dense windows: each costs a page read and set aside.
MAX_REGIONS = 64
# Scale's timestamps have millisecond precision, and `*_after` is strict.
MILLISECOND = timedelta(milliseconds=1)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(eq=False)
class Window:
    """One chain of pages: the tasks completed after `after` and before `before`.

    `after` and `before` are the bounds asked for (None: unbounded). `start` is where the
    window's own stretch begins, for the watermark: its first moment, or None from the start.
    """

    after: datetime | None
    before: datetime | None
    start: datetime | None
    #: Tasks the plan expects in it (None: unknown), and its share of its region's tasks.
    expected: float | None = None
    share: float = 0.0
    region: Region | None = field(default=None, repr=False)
    #: The partition's first read, its whole range.
    whole: bool = False
    #: Read to its last page (by a reader), and emitted (by the sync).
    read: bool = False
    emitted: bool = False

    @property
    def splittable(self) -> bool:
        """Whether it spans enough time to be cut into windows."""
        return self.before is not None and (
            self.start is None or self.before - self.start >= NARROWEST
        )


class Region:
    """A stretch of time cut into windows as workers ask for them."""

    def __init__(
        self,
        window: Window,
        sample: Sequence[datetime],
        *,
        first_share: float,
        workers: int,
        page_size: int,
    ) -> None:
        """Cut `window`'s stretch, whose tasks `sample` are some of.

        Until a window of it is counted, each window is `first_share` of the region.
        """
        assert window.before is not None  # noqa: S101 - only bounded windows are splittable
        self.after = window.after
        self.end = window.before
        inside = sorted(
            moment for moment in sample if window.start is None or moment >= window.start
        )
        # Unbounded below (a first sync without start_date): the spread starts at the sample's
        # first task, and the first window asks for everything before its end.
        low = window.start if window.start is not None else (inside[0] if inside else self.end)
        # A window's first page (not the whole range's) samples it unevenly: Scale lists tasks
        # by something else than time, and at 1 s per request the stretch after such a sample's
        # last task held 4 pages where a few tasks were expected, read after all the others.
        self.spread = Spread(low, self.end, inside, beyond=not window.whole)
        self.frontier = 0.0  # share of the region cut so far
        self.cut_to: datetime | None = window.start  # where the next window starts
        self._first_share = first_share
        self._workers = max(1, workers)
        self._target = TARGET_PAGES * page_size
        self._page_size = page_size
        self._counted_tasks = 0
        self._counted_share = 0.0
        self._tail_share: float | None = None
        self._cuts = 0
        #: Cut from the partition's whole range (not from a window found dense).
        self.whole = False

    @property
    def exhausted(self) -> bool:
        """Whether every window of it has been cut."""
        return self.frontier >= 1.0

    def tasks(self) -> float | None:
        """The tasks the region is estimated to hold, from the windows counted so far."""
        if self._counted_tasks < TRUSTED_PAGES * self._page_size or self._counted_share <= 0:
            # Too little counted yet to scale by: windows stay small until there is.
            return None
        return self._counted_tasks / self._counted_share

    def counted(self, window: Window, tasks: int) -> None:
        """A window of this region was read whole and held this many tasks."""
        self._counted_tasks += tasks
        self._counted_share += window.share

    def cut(self) -> Window:
        """The next window, from where the last one ended."""
        estimate = self.tasks()
        left = 1.0 - self.frontier
        if estimate is None:
            share = self._first_share
        elif self._tail_share is not None or left * estimate <= self._workers * self._target:
            # What is left fits the workers: one window each, so they finish together.
            if self._tail_share is None:
                floor = self._page_size / 2 / estimate
                self._tail_share = max(left / self._workers, floor)
            share = self._tail_share
        else:
            share = self._target / estimate
        # The first window asks from the region's own bound; each later one from its start.
        after = self.after if self._cuts == 0 else _earlier(self.cut_to)
        self._cuts += 1
        end = self.end
        if self.frontier + share < 1.0 - 1e-9:
            edge = _whole_millisecond(self.spread.moment(self.frontier + share))
            if self.cut_to is not None:
                # Never narrower than Scale's precision allows a window to be.
                edge = max(edge, self.cut_to + 2 * MILLISECOND)
            end = min(edge, end)
        share = (self.spread.share(end) if end < self.end else 1.0) - self.frontier
        window = Window(
            after,
            end,
            self.cut_to,
            expected=None if estimate is None else max(share, 0.0) * estimate,
            share=max(share, 0.0),
            region=self,
        )
        self.frontier = 1.0 if end >= self.end else max(self.frontier, self.spread.share(end))
        self.cut_to = end
        return window


class Spread:
    """An estimate of how a region's tasks spread over [low, high]: the share up to a moment.

    Half of the tasks are taken to spread as the sample does, its distribution drawn as
    straight lines between its sorted moments and the range's ends, so that every moment of
    the range gets a share; the other half evenly between the sample's first and last moment,
    where a sample drawn from all of the region's tasks says nearly all of them are. So the
    estimate is right for evenly spread tasks, close for bursty ones, and a long empty stretch
    before or after the tasks (a first sync bounded by today) costs only a window or two.

    A sample that may stop short of the tasks (`beyond`) has its even half reach as far again
    past its last moment as it spans.
    """

    def __init__(
        self, low: datetime, high: datetime, sample: Sequence[datetime], *, beyond: bool = False
    ) -> None:
        """The spread over [low, high] of a region holding `sample` (sorted)."""
        self._low = _seconds(low)
        self._high = max(_seconds(high), self._low + 1e-3)
        inside = [min(max(_seconds(m), self._low), self._high) for m in sample]
        self._points = [self._low, *inside, self._high]
        self._first, self._last = (inside[0], inside[-1]) if inside else (self._low, self._high)
        if beyond and inside:
            self._last = min(self._high, self._last + (self._last - self._first))

    def share(self, moment: datetime) -> float:
        """The estimated share of the tasks completed by `moment`."""
        return self._share(_seconds(moment))

    def moment(self, share: float) -> datetime:
        """The moment by which the estimated share of tasks is `share` (0 to 1)."""
        low, high = self._low, self._high
        for _ in range(64):  # halving the range 64 times reaches a float's precision
            middle = (low + high) / 2
            if self._share(middle) < share:
                low = middle
            else:
                high = middle
        return _EPOCH + timedelta(seconds=high)

    def _share(self, seconds: float) -> float:
        if seconds <= self._low:
            return 0.0
        if seconds >= self._high:
            return 1.0
        if seconds <= self._first:
            even = 0.0
        elif seconds >= self._last:
            even = 1.0
        else:
            even = (seconds - self._first) / (self._last - self._first)
        points = self._points
        index = bisect_right(points, seconds) - 1
        below, above = points[index], points[min(index + 1, len(points) - 1)]
        within = 0.0 if above <= below else (seconds - below) / (above - below)
        sampled = (index + within) / (len(points) - 1)
        return (even + sampled) / 2


class PartitionPlan:
    """A partition's windows in time order, cut and finished as it is read.

    Not thread-safe: its reader threads and the sync share it under one lock (the prefetcher's).
    """

    def __init__(self, first: Window, *, workers: int, page_size: int) -> None:
        """Plan a partition to be read first as the one window `first`."""
        self._pieces: list[Window | Region] = [first]
        self._pending: list[Window] = [first]
        self._workers = workers
        self._page_size = page_size
        self._regions = 0

    def take(self) -> Window | None:
        """The next window to read, if one is ready: a pending one, or a cut from a region."""
        if self._pending:
            return self._pending.pop(0)
        for index, piece in enumerate(self._pieces):
            if isinstance(piece, Region) and not piece.exhausted:
                window = piece.cut()
                self._pieces.insert(index, window)
                if piece.exhausted:
                    self._pieces.remove(piece)
                return window
        return None

    @property
    def has_work(self) -> bool:
        """Whether `take` would give a window now."""
        return bool(self._pending) or any(isinstance(piece, Region) for piece in self._pieces)

    def first_page(
        self, window: Window, sample: Sequence[datetime], *, more: bool, idle: int
    ) -> bool:
        """A window's first page has arrived: whether to set it aside and cut the window up."""
        dense = window.expected is not None and window.expected < self._page_size
        costly = window.expected is None or window.expected > 2 * self._page_size
        if not (more and sample and window.splittable and self._regions < MAX_REGIONS):
            return False
        if max(sample) - min(sample) < NARROWEST:
            return False  # its tasks share one moment, or nearly: no window would hold fewer
        # A region's last window runs to its end, past the last task its sample or count
        # shows: where the estimate has least to go by. Measured, it held 7 pages where 1 or 2
        # were expected, read one after the other while the other workers idled.
        # Once: the last window of a region cut from a window (a dense one, or such a last
        # one) is found dense, if it is, by the rule above.
        last = (
            self._workers > 1
            and window.region is not None
            and window.region.whole
            and window.before == window.region.end
        )
        if not (window.whole or dense or last or (idle > 0 and costly)):
            return False
        self._regions += 1
        # The whole range starts small until its tasks are counted; a window found dense is
        # shared at once among itself and the idle workers (at least halved), or among every
        # worker where nothing else is left to cut: they all finish their windows soon, and
        # a share too big for them would be found dense again, one round trip later.
        if window.whole:
            first_share = 1.0 / (SLOW_START_WINDOWS * self._workers)
        elif not self.has_work:
            first_share = 1.0 / self._workers
        else:
            first_share = 1.0 / max(2, min(idle + 1, self._workers))
        region = Region(
            window,
            sample,
            first_share=first_share,
            workers=self._workers,
            page_size=self._page_size,
        )
        region.whole = window.whole
        self._pieces[self._pieces.index(window)] = region
        return True

    def read(self, window: Window, tasks: int) -> bool:
        """A window was read to its end with this many tasks; whether the whole plan is read."""
        window.read = True
        if window.region is not None:
            window.region.counted(window, tasks)
        return not self.has_work and all(
            isinstance(piece, Window) and piece.read for piece in self._pieces
        )

    def emitted(self, window: Window) -> datetime | None:
        """A read window's tasks are all emitted: the new watermark, if it moved."""
        window.emitted = True
        moved = False
        while self._pieces and isinstance(self._pieces[0], Window) and self._pieces[0].emitted:
            self._pieces.pop(0)
            moved = True
        if not moved or not self._pieces:
            # Once all is emitted the SDK moves the bookmark, to the latest task it emitted.
            return None
        head = self._pieces[0]
        return head.start if isinstance(head, Window) else head.cut_to


def _seconds(moment: datetime) -> float:
    return (moment - _EPOCH).total_seconds()


def _earlier(moment: datetime | None) -> datetime | None:
    """The strict `*_after` bound that includes `moment`."""
    return None if moment is None else moment - MILLISECOND


def _whole_millisecond(moment: datetime) -> datetime:
    """The moment rounded up to a whole millisecond, Scale's precision."""
    micros = moment.microsecond
    rounded = moment.replace(microsecond=micros - micros % 1000)
    return rounded if rounded == moment else rounded + MILLISECOND
