"""The reading engine as a unit, over fake page sources: every order, density, selection, size.

Its invariants, each a test:
- every task of every partition is emitted at least once, whatever the order, density, number of
  partitions and readers;
- a partition's watermark never passes a task not yet emitted, and it is finished only once
  every task is out;
- no schedule waits forever: every read ends (or fails) within a deadline;
- readers share nothing by accident: each reader is made, used and closed by one thread;
- what is queued for the consumer stays within a page per reader, however slow it is.
"""

from __future__ import annotations

import random
import threading
import time
import typing as t

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tap_scale.reading.engine import Finished, ReadingEngine, Records, Spec, Watermark
from tap_scale.reading.plan import PartitionPlan
from tests.fake_pages import DAY, ORDERS, FakeWorld, Task, created, labelled, moment

if t.TYPE_CHECKING:
    from collections.abc import Hashable

NOW = 1_800_000_000_000
# Far longer than any read here takes: a read still going then is a read that waits forever.
DEADLINE_SECONDS = 60


class Outcome(t.NamedTuple):
    emitted: dict[Hashable, list[str]]
    error: BaseException | None


def consume(
    engine: ReadingEngine,
    world: FakeWorld,
    specs: list[Spec],
    *,
    slow: float = 0.0,
    emit: bool = True,
) -> Outcome:
    """Read to the end in a thread, checking each event's promise as it comes."""
    emitted: dict[Hashable, list[str]] = {spec.key: [] for spec in specs}
    finished: set[Hashable] = set()
    by_spec = {spec.key: spec for spec in specs}
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            for event in engine.read(specs):
                if isinstance(event, Records):
                    assert event.key not in finished
                    if emit:
                        emitted[event.key] += [record["task_id"] for record in event.records]
                    if slow:
                        time.sleep(slow)
                elif isinstance(event, Watermark) and emit:
                    spec = by_spec[event.key]
                    assert spec.lo is None or event.moment >= spec.lo
                    out = set(emitted[event.key])
                    missing = [
                        task.task_id
                        for task in in_range(world, spec)
                        if task.completed_at < event.moment and task.task_id not in out
                    ]
                    assert not missing, f"watermark {event.moment} passes {missing[:5]}"
                elif isinstance(event, Finished):
                    finished.add(event.key)
            result.append(None)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            result.append(error)
        finally:
            engine.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(DEADLINE_SECONDS)
    assert not thread.is_alive(), "the read waited forever"
    return Outcome(emitted, result[0])


def in_range(world: FakeWorld, spec: Spec) -> list[Task]:
    return [
        task
        for task in world.partitions[spec.key]
        if (spec.lo is None or task.completed_at >= spec.lo)
        and (spec.hi is None or task.completed_at < spec.hi)
    ]


def assert_every_task_out(world: FakeWorld, specs: list[Spec], outcome: Outcome) -> None:
    assert outcome.error is None, outcome.error
    for spec in specs:
        expected = {task.task_id for task in in_range(world, spec)}
        got = set(outcome.emitted[spec.key])
        assert expected <= got, f"{spec.key}: {len(expected - got)} tasks never emitted"
        # Nothing from outside the range: the range's bounds hold.
        assert got <= {task.task_id for task in world.partitions[spec.key]}


@st.composite
def worlds(draw: st.DrawFn) -> tuple[FakeWorld, list[Spec], int]:
    """A world of 1 to 4 partitions, each with its own shape, in one listing order."""
    order = draw(st.sampled_from(ORDERS))
    rng = random.Random(draw(st.integers(0, 2**32)))
    partitions: dict[Hashable, list[Task]] = {}
    specs = []
    for number in range(draw(st.integers(1, 4))):
        shape = draw(st.sampled_from(["labelled", "one instant", "empty", "two bursts", "spread"]))
        count = draw(st.integers(0, 400))
        first = NOW - draw(st.integers(2, 300)) * DAY
        if shape == "labelled":
            tasks = labelled(
                rng, count, start=first, days=draw(st.integers(1, 40)), prefix=f"p{number}"
            )
        elif shape == "one instant":
            tasks = [Task(f"p{number}-{n}", first, first - n, 0) for n in range(count)]
        elif shape == "empty":
            tasks = []
        elif shape == "two bursts":
            tasks = [
                Task(
                    f"p{number}-{n}",
                    first + (n % 2) * 90 * DAY + rng.randrange(60_000),
                    first,
                    n % 2,
                )
                for n in range(count)
            ]
        else:
            tasks = [
                Task(f"p{number}-{n}", first + rng.randrange(200 * DAY), first, n % 5)
                for n in range(count)
            ]
        key = f"p{number}"
        partitions[key] = tasks
        lo = draw(
            st.one_of(
                st.none(),
                st.just(first - 365 * DAY),
                st.just(min((task.completed_at for task in tasks), default=first)),
                st.integers(first - 400 * DAY, NOW),
            )
        )
        specs.append(Spec(key, key, lo, NOW))
    world = FakeWorld(
        partitions,
        order=order,
        page_size=draw(st.integers(1, 25)),
        inclusive_before=draw(st.booleans()),
        seconds_per_page=draw(st.sampled_from([0.0, 0.0, 0.0005])),
    )
    return world, specs, draw(st.integers(1, 8))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_every_task_is_emitted_and_no_watermark_passes_one_not_yet_emitted(
    case: tuple[FakeWorld, list[Spec], int],
) -> None:
    world, specs, workers = case
    engine = ReadingEngine(
        world, workers=workers, page_size=world.page_size, moment=moment, created=created
    )
    outcome = consume(engine, world, specs)
    assert_every_task_out(world, specs, outcome)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), st.booleans())
def test_a_consumer_that_emits_nothing_still_gets_to_the_end(
    case: tuple[FakeWorld, list[Spec], int],
    prefetch: bool,  # noqa: FBT001 - hypothesis gives it by position
) -> None:
    """What the consumer does with records (a stream not selected) changes no schedule."""
    world, specs, workers = case
    engine = ReadingEngine(
        world, workers=workers, page_size=world.page_size, moment=moment, created=created
    )
    if prefetch:
        for spec in specs:
            engine.prefetch(spec.key, spec.context, None if spec.lo is None else spec.lo - 1)
    outcome = consume(engine, world, specs, emit=False)
    assert outcome.error is None


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("partitions", [1, 3, 150])
def test_any_number_of_partitions_in_any_order_is_read_whole(order: str, partitions: int) -> None:
    rng = random.Random(partitions)
    world = FakeWorld(
        {
            f"p{n}": labelled(
                rng,
                rng.randrange(0, 3000 // partitions + 2),
                start=NOW - 60 * DAY,
                days=28,
                prefix=f"p{n}",
            )
            for n in range(partitions)
        },
        order=order,
        page_size=20,
    )
    specs = [Spec(key, key, NOW - 400 * DAY, NOW) for key in world.partitions]
    engine = ReadingEngine(world, workers=4, page_size=20, moment=moment, created=created)
    assert_every_task_out(world, specs, consume(engine, world, specs))


def test_each_reader_is_made_used_and_closed_by_one_thread() -> None:
    rng = random.Random(3)
    world = FakeWorld({"p": labelled(rng, 2000, start=NOW - 40 * DAY, days=28)}, page_size=10)
    specs = [Spec("p", "p", NOW - 365 * DAY, NOW)]
    engine = ReadingEngine(world, workers=6, page_size=10, moment=moment, created=created)
    # FakeReader asserts that only the thread that made it uses it, and not once closed.
    assert_every_task_out(world, specs, consume(engine, world, specs))
    assert world.readers == 6


def test_the_queue_holds_a_page_per_reader_however_slow_the_consumer() -> None:
    rng = random.Random(4)
    world = FakeWorld({"p": labelled(rng, 3000, start=NOW - 40 * DAY, days=28)}, page_size=10)
    workers = 4
    engine = ReadingEngine(world, workers=workers, page_size=10, moment=moment, created=created)
    queued: list[int] = []
    original = engine._output.put  # noqa: SLF001 - the queue itself is what is measured

    def put(item: t.Any) -> None:
        original(item)
        queued.append(sum(isinstance(i, Records) for i in list(engine._output.queue)))  # noqa: SLF001

    engine._output.put = put  # type: ignore[method-assign,assignment]  # noqa: SLF001
    specs = [Spec("p", "p", NOW - 365 * DAY, NOW)]
    assert_every_task_out(world, specs, consume(engine, world, specs, slow=0.002))
    assert max(queued) <= workers


def test_a_failing_request_reaches_the_consumer_and_nothing_waits_forever() -> None:
    rng = random.Random(5)
    world = FakeWorld(
        {
            f"p{n}": labelled(rng, 500, start=NOW - 40 * DAY, days=28, prefix=f"p{n}")
            for n in range(3)
        },
        page_size=10,
        failures={("p1", 25): LookupError("Scale said no")},
    )
    specs = [Spec(key, key, NOW - 365 * DAY, NOW) for key in world.partitions]
    outcome = consume(
        ReadingEngine(world, workers=3, page_size=10, moment=moment, created=created), world, specs
    )
    assert isinstance(outcome.error, LookupError)


def test_a_source_that_stops_a_window_short_is_an_error_not_a_wait() -> None:
    rng = random.Random(6)
    world = FakeWorld(
        {"p": labelled(rng, 500, start=NOW - 40 * DAY, days=28)}, page_size=10, stop_short=True
    )
    specs = [Spec("p", "p", NOW - 365 * DAY, NOW)]
    outcome = consume(
        ReadingEngine(world, workers=2, page_size=10, moment=moment, created=created), world, specs
    )
    assert isinstance(outcome.error, RuntimeError)
    assert "without a last page" in str(outcome.error)


def test_closing_the_engine_stops_its_readers() -> None:
    rng = random.Random(7)
    world = FakeWorld(
        {"p": labelled(rng, 5000, start=NOW - 40 * DAY, days=28)},
        page_size=10,
        seconds_per_page=0.002,
    )
    engine = ReadingEngine(world, workers=4, page_size=10, moment=moment, created=created)
    events = engine.read([Spec("p", "p", NOW - 365 * DAY, NOW)])
    next(events)
    before = threading.active_count()
    engine.close()
    events.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > before - 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() <= before - 4
    served = world.requests
    time.sleep(0.05)
    assert world.requests == served


def test_a_partition_is_read_once_per_engine() -> None:
    world = FakeWorld({"p": []})
    engine = ReadingEngine(world, workers=1, page_size=10, moment=moment, created=created)
    with pytest.raises(ValueError, match="only once"):
        list(engine.read([Spec("p", "p", None, NOW), Spec("p", "p", None, NOW)]))


def test_a_prefetched_first_page_is_used_and_bounded() -> None:
    """The first page asked for before the bound is known: tasks at or after it wait."""
    rng = random.Random(8)
    tasks = labelled(rng, 30, start=NOW - 10 * DAY, days=5)
    late = [Task(f"late-{n}", NOW + n, NOW, 0) for n in range(5)]
    world = FakeWorld({"p": tasks + late}, page_size=100)
    engine = ReadingEngine(world, workers=2, page_size=100, moment=moment, created=created)
    engine.prefetch("p", "p", None)
    spec = Spec("p", "p", None, NOW)
    outcome = consume(engine, world, [spec])
    assert_every_task_out(world, [spec], outcome)
    assert not any(task_id.startswith("late") for task_id in outcome.emitted["p"])
    assert world.requests == 1  # the prefetched page was all there was


@pytest.mark.parametrize("order", ORDERS)
def test_a_server_that_ignores_the_bounds_is_read_to_the_end(order: str) -> None:
    """Every window answers every task: cutting would never end, so nothing more is cut."""
    rng = random.Random(9)
    world = FakeWorld(
        {"p": labelled(rng, 800, start=NOW - 40 * DAY, days=28)},
        order=order,
        page_size=20,
        ignore_bounds=True,
    )
    specs = [Spec("p", "p", NOW - 365 * DAY, NOW)]
    outcome = consume(
        ReadingEngine(world, workers=4, page_size=20, moment=moment, created=created), world, specs
    )
    assert_every_task_out(world, specs, outcome)
    assert world.requests < 40 * 40


@pytest.mark.parametrize(
    ("order", "by_time"), [("shuffled", False), ("newest-first", True), ("oldest-first", True)]
)
def test_a_first_page_listed_by_creation_is_planned_as_a_slice(
    order: str, *, by_time: bool
) -> None:
    rng = random.Random(10)
    world = FakeWorld(
        {"p": labelled(rng, 2000, start=NOW - 40 * DAY, days=28)}, order=order, page_size=50
    )
    engine = ReadingEngine(world, workers=2, page_size=50, moment=moment, created=created)
    told: list[bool] = []
    page = PartitionPlan.page

    def spy(plan: PartitionPlan, window: t.Any, moments: list[int], **kwargs: t.Any) -> t.Any:
        if window.whole:
            told.append(kwargs["by_time"])
        return page(plan, window, moments, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PartitionPlan, "page", spy)
        specs = [Spec("p", "p", NOW - 365 * DAY, NOW)]
        assert_every_task_out(world, specs, consume(engine, world, specs))
    assert told == [by_time]
