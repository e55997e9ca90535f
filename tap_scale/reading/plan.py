"""A partition's windows: its `completed_at` range cut into chains of pages, cut again as read.

Each window is one chain of pages; the reads show where the partition's tasks are.

Scale lists tasks in no promised order, so a page's `completed_at`s are a sample of its window only
when Scale's order happens to be unrelated to time. Listed newest-created first (or oldest first,
or batch by batch) they are a slice: the newest few hours of a project labelled over weeks. So the
plan trusts counts, not samples: what a window read to its end held is exact, and what a window
still being read has shown so far is a lower bound; either says how dense its neighbourhood is.
Samples only say where to put the cuts inside a window, always mixed half and half with even cuts
in time, so that a slice misleads at most half of them.

- The partition's first request is its whole range. One page with nothing more: done. Otherwise
  that page is set aside and the range is cut into `INITIAL_WINDOWS` (or two per reader, if more),
  at the quantiles of a mix, half the sample's spread and half even in time. A year of
  `start_date` before the first task, or none at all, costs a few empty windows, a request each.
- A reader takes the earliest window not yet taken, in time order, so the watermark (where the
  first window not yet emitted starts: the partition's bookmark while it is read) follows the
  reads. As it is taken, a window is cut again where the nearest window before it that has
  shown anything says it is too big: its first piece is cut off to hold a target window's tasks
  at that density (or, after an empty stretch, at most `GROWTH` times that window's length), and
  the rest waits, whole, to be sized by what the reads show by then. That costs nothing: none of
  it was asked for yet.
- A window whose first page says more follow is estimated from its neighbourhood (the densest
  of its nearest neighbours that showed anything), or, with none, as twice what its page shows.
  If that is bigger than a chain should be, or readers are idle with nothing else to take, the
  page is set aside and the window cut up, half at its sample's quantiles and half evenly, into
  as many pieces as halfway, on a log scale, between what it surely holds and that estimate: a
  dense neighbour's density over a long window next to it may be far off, and the pieces read
  show the rest.
- When readers are idle and nothing is left to take, the chain with most to gain is cut up and
  restarted, if the estimate says its remaining pages, shared among the idle readers, end sooner
  than the chain alone would. What that costs is the pages it had read, read again (counted in
  `restarted_pages`); its tasks already emitted are emitted again, and targets upsert them.
- A page holding a task outside its window's bounds means a server ignoring them: every window
  would answer the same, so from then on nothing is cut, and the windows already cut are read
  as they are.

Moments are whole milliseconds since the epoch (Scale's precision). A window [lo, hi) holds the
tasks completed at lo or later and before hi; it asks Scale for `completed_after` lo - 1 ms
(`*_after` is strict) and `completed_before` hi, so a task exactly at hi is read by both
neighbours whatever `completed_before` means at equality, and none is read by neither.

Not thread-safe: the reading engine calls it under its lock (`tap_scale.reading.engine`).
"""

from __future__ import annotations

import itertools
import math
import random
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

# Pages a window is sized to hold: more pages per window mean fewer part-full last pages (a
# request each), fewer mean less read again after an interruption and an earlier watermark.
TARGET_PAGES = 4.9
# A window estimated at more than this many target windows is cut again before it is read.
CHAIN_PAGES = 1.5 * TARGET_PAGES
# How much of the whole range's first cut follows its first page's spread, the rest even in
# time: where the page is a fair sample of the range (Scale's order unrelated to time), nearly
# all; where it is a slice (the page lists tasks by creation), half.
SAMPLED = 0.875
SLICED = 0.5
# Windows a partition read with other partitions is first cut into, at least.
MIN_INITIAL_WINDOWS = 4
# Windows the whole range is first cut into, at least: enough that the first windows hold a few
# pages each even in a range of a hundred pages, and that empty stretches are crossed at once.
INITIAL_WINDOWS = 16
# With nothing read near it, a window that says more follow is taken to hold this many times
# what it has shown: an estimate that errs towards cutting up (a request more) rather than one
# long chain.
LOWER_BOUND_FACTOR = 2.0
# A window about to be read is cut only where it is this many times the piece it would keep:
# a little longer than the piece is not worth a request more.
SPLIT_AT = 1.5
# A window cut after a stretch read spans at most this many times the window read before it:
# an empty stretch is crossed in a few requests, and a burst after it is not swallowed whole.
GROWTH = 4
# Neighbours (windows read or being read, nearest first) whose densities estimate a window's.
NEIGHBOURS = 3
# Windows read whole whose counts are kept as neighbours: the most recent ones.
KEPT_COUNTS = 64
# Moments kept per chain being read, a sample of all its pages, for cutting it up.
SAMPLE_SIZE = 256
# Windows narrower than this are not cut up: their tasks share one instant, or nearly.
NARROWEST = 4
# No window is cut narrower than this: two of Scale's milliseconds.
NARROWEST_CUT = 2
# An unbounded range (a first sync without `start_date`) is planned as if it began this many
# times further before its sample's first task than that task is before the range's end.
UNBOUNDED_REACH = 2
DAY = 86_400_000


class State(Enum):
    """Where a window is in its life."""

    PENDING = "pending"
    READING = "reading"
    READ = "read"
    EMITTED = "emitted"


@dataclass(eq=False)
class Window:
    """One chain of pages: the tasks completed in [lo, hi) (None: unbounded on that side)."""

    lo: int | None
    hi: int | None
    #: The partition's whole range, its first read.
    whole: bool = False
    state: State = State.PENDING
    #: Pages and tasks read from it so far (its first page not counted if set aside).
    pages: int = 0
    tasks: int = 0
    more: bool = True
    #: Cut up and restarted while read: its reader stops at its next page.
    abandoned: bool = False
    #: May be joined with its neighbours before it is read: not once a read showed it dense.
    joinable: bool = True
    sample: list[int] = field(default_factory=list, repr=False)
    seen: int = field(default=0, repr=False)

    @property
    def after(self) -> int | None:
        """The strict lower bound to ask Scale for (`completed_after`)."""
        return None if self.lo is None else self.lo - 1

    @property
    def span(self) -> int | None:
        """Its length in milliseconds, where it is bounded on both sides."""
        return None if self.lo is None or self.hi is None else self.hi - self.lo

    @property
    def splittable(self) -> bool:
        """Whether it spans enough time to be cut into windows."""
        return self.hi is not None and (self.lo is None or self.hi - self.lo >= NARROWEST)


@dataclass(frozen=True)
class Verdict:
    """What to do with a page just read: emit its records, and read the window's next page."""

    emit: bool
    read_on: bool


class PartitionPlan:
    """One partition's windows, in time order, cut and re-cut as its pages are read."""

    def __init__(
        self, lo: int | None, hi: int | None, *, workers: int, page_size: int, partitions: int = 1
    ) -> None:
        """Plan the range [lo, hi) (None: unbounded) to be read first as one window.

        `workers` read this partition and `partitions - 1` others at once.
        """
        self.windows: list[Window] = [Window(lo, hi, whole=True)]
        self._workers = max(1, workers)
        self._partitions = max(1, partitions)
        self._page_size = page_size
        self._per_window = TARGET_PAGES * page_size
        self._counted: deque[tuple[int, int, float]] = deque(maxlen=KEPT_COUNTS)
        # Where an unbounded range is planned from, once its first page is in.
        self._floor = lo
        # Reservoir sampling only picks which moments are kept: any source of randomness will do.
        self._random = random.Random(0)  # noqa: S311 - not cryptography
        #: Windows read to their end; requests set aside (first pages of windows cut up); chains
        #: restarted, and the pages they had read, read again.
        self.windows_read = 0
        self.set_aside = 0
        self.restarts = 0
        self.restarted_pages = 0
        #: A page held tasks outside its window's bounds: a server (or proxy) that ignores
        #: them, whose every window would answer the same. Nothing is cut from then on.
        self.bounds_ignored = False

    # The readers' side

    @property
    def finished(self) -> bool:
        """Whether every window has been read and emitted."""
        return not self.windows

    @property
    def has_pending(self) -> bool:
        """Whether a window waits to be taken."""
        return any(window.state is State.PENDING for window in self.windows)

    @property
    def reading(self) -> int:
        """Windows being read now."""
        return sum(window.state is State.READING for window in self.windows)

    def take(self) -> Window | None:
        """The earliest window not yet taken, cut again first if it proved too big; or None."""
        for index, window in enumerate(self.windows):
            if window.state is State.PENDING:
                self._recut(window)
                taken = self.windows[index]
                taken.state = State.READING
                return taken
        return None

    def page(
        self, window: Window, moments: list[int], *, more: bool, idle: int, by_time: bool = False
    ) -> Verdict:
        """A page of `window` has been read; `moments` are its tasks' `completed_at`s.

        `idle` is how many readers have nothing to read; `by_time`, whether the page lists its
        tasks in the order they were created (then a first page is a slice of its window).
        """
        window.pages += 1
        if window.abandoned:
            # Cut up while this page was on its way: its pieces read its tasks again.
            return Verdict(emit=False, read_on=False)
        if not self.bounds_ignored and _outside(window, moments):
            self.bounds_ignored = True
        if window.pages == 1 and more and self._cut_up(window, moments, idle, by_time=by_time):
            self.set_aside += 1
            return Verdict(emit=False, read_on=False)
        window.tasks += len(moments)
        window.more = more
        self._keep(window, moments)
        if not more:
            window.state = State.READ
            self.windows_read += 1
            if window.lo is not None and window.hi is not None:
                self._counted.append(
                    (window.lo, window.hi, window.tasks / max(window.hi - window.lo, 1))
                )
        return Verdict(emit=True, read_on=more)

    def failed(self, window: Window) -> None:
        """Its reader gave up on it (the sync is ending): nothing more is expected of it."""
        window.abandoned = True

    def restart_one(self, idle: int) -> bool:
        """Readers are idle and nothing is left to take: cut up the chain with most to gain.

        Returns whether a chain was cut up (its pieces wait to be taken; its reader stops).
        """
        if idle < 1 or self.bounds_ignored:
            return False
        shared = idle + 1
        best: tuple[float, Window] | None = None
        for window in self.windows:
            if not (
                window.state is State.READING
                and window.more
                and not window.abandoned
                and window.pages >= 1
                and window.splittable
                and _spread(window.sample) >= NARROWEST
            ):
                continue
            left = self._estimate(window, window.tasks + 1) / self._page_size - window.pages
            # Alone it takes `left` more pages; cut up, everything again shared, plus a round trip.
            gain = left - ((window.pages + left) / shared + 1)
            if left >= window.pages and gain > 1 and (best is None or gain > best[0]):
                best = (gain, window)
        if best is None:
            return False
        window = best[1]
        if not self._replace(window, self._cuts(window, window.sample, shared), joinable=False):
            return False
        window.abandoned = True
        self.restarts += 1
        self.restarted_pages += window.pages
        return True

    # The consumer's side

    def emitted(self, window: Window) -> int | None:
        """Every task of a read window is emitted: the new watermark, if it moved.

        None while it has not moved, and once everything is emitted (then the bookmark is the
        latest task emitted, which the SDK keeps).
        """
        window.state = State.EMITTED
        moved = False
        while self.windows and self.windows[0].state is State.EMITTED:
            self.windows.pop(0)
            moved = True
        if not moved or not self.windows:
            return None
        return self.windows[0].lo

    # Estimates and cuts

    def _neighbourhood(self, window: Window) -> float | None:
        """Tasks per millisecond near `window`, or None where nothing near it has been read.

        The density of its nearest neighbour (a window read whole: exact; one being read: what
        it has shown so far, a lower bound), or the densest of those about as near: within the
        window's own length of it, up to `NEIGHBOURS` of them. So a window next to the end of a
        burst is not taken to be as dense as the burst a few windows back.
        """
        lo, hi = window.lo, window.hi
        if lo is None or hi is None:
            return None
        found: list[tuple[int, float]] = [
            (max(start - hi, lo - end, 0), density) for start, end, density in self._counted
        ]
        for other in self.windows:
            if other is window or other.state is not State.READING or not other.pages:
                continue
            if other.lo is None or other.hi is None or other.abandoned:
                continue
            # What it has shown so far, and one more: a lower bound of its density.
            shown = (other.tasks + (1 if other.more else 0)) / max(other.hi - other.lo, 1)
            found.append((max(other.lo - hi, lo - other.hi, 0), shown))
        if not found:
            return None
        found.sort(key=lambda pair: pair[0])
        nearest = found[0][0]
        near = [d for gap, d in found[:NEIGHBOURS] if gap <= nearest + (hi - lo)]
        return max(near)

    def _estimate(self, window: Window, lower: int) -> float:
        """Tasks `window` holds, knowing it holds at least `lower`.

        As dense as its neighbourhood, where one has been read; with nothing read near it,
        twice what it has shown.
        """
        density = self._neighbourhood(window)
        if density is None or window.span is None:
            return LOWER_BOUND_FACTOR * lower
        return max(float(lower), density * window.span)

    def _recut(self, window: Window) -> None:
        """Cut a window about to be read where what was read just before it says it is too big.

        Only its first piece is cut off, sized by the density of the nearest window before it
        that has shown any: to hold a target window's tasks, or, after an empty stretch, at
        most `GROWTH` times that window's length, so that emptiness is crossed in a few
        requests and a burst after it is not swallowed whole. The rest waits, whole, to be
        sized in turn by what the reads before it show by then.
        """
        if window.span is None or not window.splittable or self.bounds_ignored:
            return
        assert window.lo is not None  # noqa: S101 - it has a span
        below = self._shown_below(window.lo)
        if below is None:
            return
        length, density = below
        piece = self._per_window / density if density > 0 else GROWTH * length
        piece = max(round(min(piece, GROWTH * length)), NARROWEST)
        if window.span > SPLIT_AT * piece:
            self._replace(window, [window.lo + piece])

    def _shown_below(self, moment: int) -> tuple[int, float] | None:
        """The length and density of the nearest window before `moment` that has shown any."""
        best: tuple[int, int, float] | None = None
        for start, end, density in self._counted:
            if end <= moment and (best is None or end > best[0]):
                best = (end, end - start, density)
        for other in self.windows:
            if other.state is not State.READING or not other.pages or other.abandoned:
                continue
            if other.lo is None or other.hi is None or other.hi > moment:
                continue
            if best is None or other.hi > best[0]:
                shown = (other.tasks + (1 if other.more else 0)) / max(other.hi - other.lo, 1)
                best = (other.hi, other.hi - other.lo, shown)
        return None if best is None else (best[1], best[2])

    def _cut_up(self, window: Window, moments: list[int], idle: int, *, by_time: bool) -> bool:
        """A window's first page says more follow: whether it is set aside and the window cut."""
        if not window.splittable or _spread(moments) < NARROWEST or self.bounds_ignored:
            # Its tasks share one instant, or nearly: no window would hold fewer. Or the
            # server ignores bounds: every window would hold them all.
            return False
        if window.whole:
            if window.lo is None:
                first = min(moments)
                assert window.hi is not None  # noqa: S101 - only bounded windows are splittable
                self._floor = first - max((window.hi - first) * UNBOUNDED_REACH, 30 * DAY)
            # Several partitions share the readers, and each window's part-full last page is a
            # request more: the first cut is shared among them too.
            pieces = max(INITIAL_WINDOWS, 2 * self._workers) // self._partitions
            pieces = max(MIN_INITIAL_WINDOWS, pieces)
            # A fair sample of the range says where nearly all of its tasks are: few windows
            # beyond it. A slice says where the newest (or oldest) are: half the windows beyond.
            sampled = SLICED if by_time else SAMPLED
            return self._replace(window, self._cuts(window, moments, pieces, sampled=sampled))
        lower = len(moments) + 1
        estimate = self._estimate(window, lower)
        nothing_else = not self.has_pending
        if estimate <= CHAIN_PAGES * self._page_size and not (idle and nothing_else):
            return False
        # Its neighbourhood's density over all its length may be far off (a dense neighbour
        # next to a stretch of nothing): it is cut into as many pieces as halfway, on a log
        # scale, between what it surely holds and that; the pieces read show the rest.
        halfway = math.sqrt(LOWER_BOUND_FACTOR * lower * estimate)
        pieces = max(2, math.ceil(halfway / self._per_window))
        if idle and nothing_else:
            pieces = max(pieces, idle + 1)
        cuts = self._cuts(window, moments, min(pieces, 4 * self._workers))
        return self._replace(window, cuts, joinable=False)

    def _cuts(
        self, window: Window, sample: list[int], pieces: int, *, sampled: float = SLICED
    ) -> list[int]:
        """Where to cut `window` into `pieces`: half at the sample's quantiles, half evenly."""
        assert window.hi is not None  # noqa: S101 - only bounded windows are splittable
        lo = window.lo if window.lo is not None else self._floor
        if lo is None:
            lo = min(sample)
        hi = window.hi
        share = _Mixture(sorted(sample), lo, hi, sampled=sampled)
        cuts: list[int] = []
        previous = lo
        for number in range(1, pieces):
            cut = math.ceil(share.moment(number / pieces))
            # Never narrower than Scale's precision allows a window to be.
            wide = cut - previous >= NARROWEST_CUT and hi - cut >= NARROWEST_CUT
            if wide and (window.lo is None or cut > window.lo):
                cuts.append(cut)
                previous = cut
        return cuts

    def _replace(self, window: Window, cuts: list[int], *, joinable: bool = True) -> bool:
        if not cuts:
            return False
        edges = [window.lo, *cuts, window.hi]
        index = self.windows.index(window)
        self.windows[index : index + 1] = [
            Window(a, b, joinable=joinable and window.joinable)
            for a, b in itertools.pairwise(edges)
        ]
        return True

    def _keep(self, window: Window, moments: list[int]) -> None:
        """Keep a sample of every page a chain reads (reservoir sampling), for cutting it up."""
        sample = window.sample
        for moment in moments:
            window.seen += 1
            if len(sample) < SAMPLE_SIZE:
                sample.append(moment)
            elif (slot := self._random.randrange(window.seen)) < SAMPLE_SIZE:
                sample[slot] = moment


class _Mixture:
    """A share of a window's tasks up to a moment: part as the sample spreads, the rest evenly."""

    def __init__(self, sample: list[int], lo: int, hi: int, *, sampled: float) -> None:
        self._lo, self._hi = lo, max(hi, lo + 1)
        self._sampled = sampled
        # The sample's distribution drawn as straight lines between its sorted moments and the
        # window's ends, so that every moment of the window gets a share.
        self._points = [lo, *(min(max(moment, lo), hi) for moment in sample), hi]

    def share(self, moment: float) -> float:
        if moment <= self._lo:
            return 0.0
        if moment >= self._hi:
            return 1.0
        points = self._points
        index = bisect_right(points, moment) - 1
        below, above = points[index], points[min(index + 1, len(points) - 1)]
        within = 0.0 if above <= below else (moment - below) / (above - below)
        sampled = (index + within) / (len(points) - 1)
        even = (moment - self._lo) / (self._hi - self._lo)
        return self._sampled * sampled + (1 - self._sampled) * even

    def moment(self, share: float) -> float:
        low, high = float(self._lo), float(self._hi)
        for _ in range(64):  # halving the range 64 times reaches a float's precision
            middle = (low + high) / 2
            if self.share(middle) < share:
                low = middle
            else:
                high = middle
        return high


def _outside(window: Window, moments: list[int]) -> bool:
    """Whether a page holds a task its window did not ask for.

    A task exactly at the window's end is not outside: Scale does not say whether
    `completed_before` includes its own moment.
    """
    lo, hi = window.lo, window.hi
    return any((lo is not None and m < lo) or (hi is not None and m > hi) for m in moments)


def _spread(moments: list[int]) -> int:
    return max(moments) - min(moments) if moments else 0
