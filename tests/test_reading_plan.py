"""A partition's plan as a unit: its windows under any schedule, any order, any density.

The plan is driven here without threads: `Schedule` plays the readers and the consumer, and
hypothesis chooses, step by step, which reader's page arrives next, when an idle reader asks for
work, and when the consumer catches up. Every schedule it finds must hold the invariants:
every task emitted at least once, the watermark never past a task not yet emitted, the windows
tiling the range, and an end within a bounded number of steps.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tap_scale.reading.plan import (
    GROWTH,
    INITIAL_WINDOWS,
    NARROWEST,
    PartitionPlan,
    State,
    Window,
)
from tests.fake_pages import DAY, ORDERS, FakeWorld, Task, labelled

NOW = 1_800_000_000_000


@dataclass
class Chain:
    """A window being read: its pages as Scale would serve them, and how far it has got."""

    window: Window
    pages: list[list[Task]]
    next: int = 0


@dataclass
class Schedule:
    """Readers and a consumer, played one step at a time."""

    world: FakeWorld
    plan: PartitionPlan
    readers: int
    lo: int | None
    chains: list[Chain] = field(default_factory=list)
    unemitted: list[tuple[Window, list[str]]] = field(default_factory=list)
    emitted: set[str] = field(default_factory=set)
    watermark: int | None = None
    steps: int = 0

    def idle(self) -> int:
        return self.readers - len(self.chains)

    def take(self) -> bool:
        """An idle reader asks for work; whether it got some."""
        if not self.idle():
            return False
        window = self.plan.take()
        if window is None and self.plan.restart_one(self.idle()):
            window = self.plan.take()
        if window is None:
            return False
        hits = self.world.hits("p", window.after, window.hi)
        size = self.world.page_size
        pages = [hits[i : i + size] for i in range(0, max(len(hits), 1), size)]
        self.chains.append(Chain(window, pages))
        return True

    def arrive(self, which: int) -> None:
        """The next page of one chain arrives."""
        chain = self.chains[which]
        page = chain.pages[chain.next]
        chain.next += 1
        more = chain.next < len(chain.pages)
        verdict = self.plan.page(
            chain.window, [task.completed_at for task in page], more=more, idle=self.idle()
        )
        if verdict.emit:
            self.unemitted.append((chain.window, [task.task_id for task in page]))
        if not verdict.read_on:
            self.chains.pop(which)
            if chain.window.state is State.READ:
                self.unemitted.append((chain.window, []))  # its "window read" marker

    def consume(self) -> None:
        """The consumer emits everything queued, in order, and tells the plan."""
        for window, task_ids in self.unemitted:
            self.emitted.update(task_ids)
            if not task_ids and window.state is State.READ:
                moved = self.plan.emitted(window)
                if moved is not None:
                    self.check_watermark(moved)
        self.unemitted.clear()

    def check_watermark(self, moment: int) -> None:
        assert self.watermark is None or moment >= self.watermark, "the watermark went back"
        self.watermark = moment
        passed = [
            task.task_id
            for task in self.world.partitions["p"]
            if (self.lo is None or task.completed_at >= self.lo)
            and task.completed_at < moment
            and task.task_id not in self.emitted
        ]
        assert not passed, f"the watermark {moment} passes {passed[:5]}"

    def check_tiling(self) -> None:
        windows = self.plan.windows
        for earlier, later in itertools.pairwise(windows):
            assert earlier.hi == later.lo, (earlier, later)


def world_of(
    order: str, tasks: list[Task], page_size: int, *, inclusive: bool = False
) -> FakeWorld:
    return FakeWorld({"p": tasks}, order=order, page_size=page_size, inclusive_before=inclusive)


@st.composite
def partitions(draw: st.DrawFn) -> tuple[FakeWorld, int | None, int]:
    rng = random.Random(draw(st.integers(0, 2**32)))
    first = NOW - draw(st.integers(2, 200)) * DAY
    shape = draw(st.sampled_from(["labelled", "instant", "bursts", "spread", "sparse"]))
    count = draw(st.integers(0, 600))
    if shape == "labelled":
        tasks = labelled(rng, count, start=first, days=draw(st.integers(1, 60)))
    elif shape == "instant":
        tasks = [Task(f"t{n}", first + rng.randrange(3), first, 0) for n in range(count)]
    elif shape == "bursts":
        tasks = [
            Task(f"t{n}", first + (n % 3) * 40 * DAY + rng.randrange(600_000), first + n, n % 3)
            for n in range(count)
        ]
    elif shape == "spread":
        tasks = [
            Task(f"t{n}", first + rng.randrange(150 * DAY), first, n % 4) for n in range(count)
        ]
    else:
        tasks = [Task(f"t{n}", first + n * 7 * DAY, first, 0) for n in range(min(count, 25))]
    lo = draw(st.one_of(st.none(), st.just(first - 365 * DAY), st.integers(first - 30 * DAY, NOW)))
    world = world_of(
        draw(st.sampled_from(ORDERS)),
        tasks,
        draw(st.integers(1, 40)),
        inclusive=draw(st.booleans()),
    )
    return world, lo, draw(st.integers(1, 8))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(partitions(), st.data())
def test_under_any_schedule_every_task_is_emitted_and_the_watermark_never_passes_one(
    partition: tuple[FakeWorld, int | None, int], data: st.DataObject
) -> None:
    world, lo, readers = partition
    plan = PartitionPlan(lo, NOW, workers=readers, page_size=world.page_size)
    schedule = Schedule(world, plan, readers, lo)
    # The schedule ends within a bound: every step reads a page or emits, and every window is
    # read once, or cut up (a page), or restarted (its pages so far).
    bound = 50_000
    while not plan.finished:
        schedule.steps += 1
        assert schedule.steps < bound, "the schedule did not end"
        took = schedule.take() if data.draw(st.booleans(), label="ask") else False
        if schedule.chains and (not took or data.draw(st.booleans(), label="arrive")):
            schedule.arrive(data.draw(st.integers(0, len(schedule.chains) - 1), label="which"))
        elif not took and not schedule.unemitted and not schedule.take():
            assert schedule.chains or plan.finished, (
                "nothing to read, nothing being read, and the plan not finished"
            )
        if data.draw(st.booleans(), label="consume") or not schedule.chains:
            schedule.consume()
        schedule.check_tiling()
    schedule.consume()
    expected = {
        task.task_id
        for task in world.partitions["p"]
        if (lo is None or task.completed_at >= lo) and task.completed_at < NOW
    }
    assert expected <= schedule.emitted


def test_the_whole_range_is_cut_into_windows_half_at_the_sample_half_evenly() -> None:
    rng = random.Random(1)
    tasks = labelled(rng, 5000, start=NOW - 40 * DAY, days=28)
    lo = NOW - 365 * DAY
    plan = PartitionPlan(lo, NOW, workers=4, page_size=100)
    whole = plan.take()
    assert whole is not None
    assert whole.whole
    sample = [task.completed_at for task in tasks[:100]]
    verdict = plan.page(whole, sample, more=True, idle=3)
    assert not verdict.emit
    assert not verdict.read_on
    windows = plan.windows
    assert len(windows) == INITIAL_WINDOWS
    assert windows[0].lo == lo
    assert windows[-1].hi == NOW
    # The even half spans the year; the sampled half sits where the sample is.
    inside = [w for w in windows if w.hi is not None and w.hi > min(sample)]
    assert len(inside) >= INITIAL_WINDOWS // 2


def test_a_window_whose_tasks_share_one_instant_is_read_as_one_chain() -> None:
    plan = PartitionPlan(None, NOW, workers=4, page_size=10)
    whole = plan.take()
    assert whole is not None
    verdict = plan.page(whole, [NOW - DAY] * 10, more=True, idle=3)
    assert verdict.emit
    assert verdict.read_on
    assert plan.windows == [whole]


def test_a_window_after_an_empty_stretch_grows_at_most_fourfold() -> None:
    plan = PartitionPlan(NOW - 365 * DAY, NOW, workers=2, page_size=100)
    whole = plan.take()
    assert whole is not None
    plan.page(whole, [NOW - 10 * DAY + n for n in range(100)], more=True, idle=1)
    first = plan.take()
    assert first is not None
    assert first.span is not None
    assert plan.page(first, [], more=False, idle=1).emit
    plan.emitted(first)
    following = plan.take()
    assert following is not None
    assert following.span is not None
    assert following.span <= GROWTH * first.span


def test_the_watermark_is_the_start_of_the_first_window_not_emitted() -> None:
    plan = PartitionPlan(NOW - 10 * DAY, NOW, workers=2, page_size=10)
    whole = plan.take()
    assert whole is not None
    plan.page(whole, [NOW - 5 * DAY + n * 60_000 for n in range(10)], more=True, idle=1)
    first, second = plan.take(), plan.take()
    assert first is not None
    assert second is not None
    plan.page(second, [], more=False, idle=0)
    assert plan.emitted(second) is None  # the first is still being read
    plan.page(first, [], more=False, idle=0)
    assert plan.emitted(first) == plan.windows[0].lo == second.hi


def test_a_restarted_chain_costs_the_pages_it_had_read() -> None:
    plan = PartitionPlan(NOW - 10 * DAY, NOW, workers=4, page_size=10)
    whole = plan.take()
    assert whole is not None
    spread = [NOW - 10 * DAY + n * 3_600_000 for n in range(10)]
    plan.page(whole, spread, more=True, idle=3)
    chains = []
    while (window := plan.take()) is not None:
        chains.append(window)
    long = chains[0]
    assert long.lo is not None
    assert long.span is not None
    inside = [long.lo + n * long.span // 10 for n in range(10)]
    for _ in range(4):
        verdict = plan.page(long, inside, more=True, idle=0)
        assert verdict.read_on
    # Nothing near it has shown anything yet: it is taken to hold twice what it has shown,
    # five pages more, which three idle readers and it would read again sooner.
    assert plan.restart_one(idle=3)
    assert long.abandoned
    assert plan.restarted_pages == long.pages
    # Its page on the way is dropped: its pieces read its tasks again.
    assert plan.page(long, inside, more=True, idle=3).emit is False


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("inclusive", [False, True])
def test_tasks_on_window_edges_are_read_whatever_before_means(
    order: str, *, inclusive: bool
) -> None:
    """Scale's `completed_before` is undocumented at equality: both meanings lose nothing."""
    rng = random.Random(2)
    lo = NOW - 20 * DAY
    plan = PartitionPlan(lo, NOW, workers=3, page_size=7)
    whole = plan.take()
    assert whole is not None
    tasks = labelled(rng, 800, start=NOW - 12 * DAY, days=10)
    plan.page(whole, [task.completed_at for task in tasks[:7]], more=True, idle=2)
    edges = [window.lo for window in plan.windows[1:]]
    assert edges
    on_edges = [
        Task(f"edge{n}", edge, lo, 0) for n, edge in enumerate(edges * 3) if edge is not None
    ]
    world = world_of(order, tasks + on_edges, 7, inclusive=inclusive)
    schedule = Schedule(world, plan, 3, lo)
    while not plan.finished:
        if not schedule.take():
            schedule.arrive(0)
        schedule.consume()
    assert {task.task_id for task in world.partitions["p"]} <= schedule.emitted


def test_narrow_windows_are_not_cut() -> None:
    plan = PartitionPlan(NOW - NARROWEST + 1, NOW, workers=4, page_size=10)
    whole = plan.take()
    assert whole is not None
    assert not whole.splittable
