"""Projects, batches, deliveries and datasets over real HTTP: complete, incremental, selectable."""

from __future__ import annotations

import typing as t

import pytest

from tap_scale.models import parse_timestamp
from tap_scale.testing import ScaleSimulator
from tests.tap_run import canonical, discover, moment, run_tap, select

if t.TYPE_CHECKING:
    from pathlib import Path

DELIVERY_STREAMS = ("deliveries", "delivery_tasks")
DATASET_STREAMS = ("datasets", "dataset_deliveries", "dataset_tasks")


def keyed(records: t.Iterable[dict[str, t.Any]], *key: str) -> dict[tuple[str, ...], t.Any]:
    """Records by primary key, failing on a key seen twice."""
    out: dict[tuple[str, ...], t.Any] = {}
    for record in records:
        pk = tuple(record[name] for name in key)
        assert pk not in out, f"{pk} emitted twice"
        out[pk] = record
    return out


def moments(record: dict[str, t.Any], *fields: str) -> dict[str, t.Any]:
    """A record with these timestamp fields parsed, to compare across spellings."""
    return {**record, **{field: moment(record.get(field)) for field in fields}}


def delivered_tasks_truth(
    simulator: ScaleSimulator, deliveries: list[dict[str, t.Any]]
) -> dict[tuple[str, str], dict[str, t.Any]]:
    return {
        (delivery["id"], task["task_id"]): {
            **canonical(task),
            "delivery": delivery["id"],
            "delivered_at": moment(delivery["delivered_at"]),
        }
        for delivery in deliveries
        for task in simulator.delivery_tasks(delivery["id"])
    }


def test_every_stream_emits_every_record_scale_holds(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    run = run_tap(tmp_path, config)

    assert {r["id"] for r in run.records("projects")} == {p["id"] for p in simulator.projects}
    assert keyed(run.records("batches"), "id").keys() == {(b["id"],) for b in simulator.batches()}
    assert {
        k: moments(v, "delivered_at") for k, v in keyed(run.records("deliveries"), "id").items()
    } == {(d["id"],): moments(d, "delivered_at") for d in simulator.deliveries()}
    delivered = keyed(run.records("delivery_tasks"), "delivery", "task_id")
    assert {k: canonical(moments(v, "delivered_at")) for k, v in delivered.items()} == (
        delivered_tasks_truth(simulator, simulator.deliveries())
    )

    assert run.records("datasets") == simulator.datasets
    dataset_deliveries = [
        d for ds in simulator.datasets for d in simulator.dataset_deliveries(ds["id"])
    ]
    assert keyed(run.records("dataset_deliveries"), "id").keys() == {
        (d["id"],) for d in dataset_deliveries
    }
    dataset_tasks = keyed(run.records("dataset_tasks"), "delivery", "task_id")
    truth = {
        (task["delivery"], task["task_id"]): task
        for delivery in dataset_deliveries
        for task in simulator.dataset_tasks(delivery["id"])
    }
    assert dataset_tasks.keys() == truth.keys()
    for pk, task in truth.items():
        # The dataset's free-form response is kept whole.
        assert dataset_tasks[pk]["response"] == task["response"]


def test_a_delivery_read_once_is_not_read_again_and_new_ones_are(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    catalog = select(discover(tmp_path, config), *DELIVERY_STREAMS)
    first = run_tap(tmp_path, config, catalog=catalog)
    assert first.records("delivery_tasks")

    simulator.reset_log()
    second = run_tap(tmp_path, config, catalog=catalog, state=first.state)
    assert second.records("delivery_tasks") == []
    assert not [r for r in simulator.requests if r["path"] == "/v2/delivery"]
    # Deliveries listed again are those at the bookmark only (a tie margin), never older ones.
    assert {r["id"] for r in second.records("deliveries")} <= {
        r["id"] for r in first.records("deliveries")
    }

    project = simulator.projects[0]["id"]
    new_tasks = simulator.add_tasks(project, 5)
    delivery = simulator.deliver(
        project, [task["task_id"] for task in new_tasks], name="Late batch"
    )
    third = run_tap(tmp_path, config, catalog=catalog, state=second.state)
    assert {r["id"] for r in third.records("deliveries")} >= {delivery["id"]}
    assert keyed(third.records("delivery_tasks"), "delivery", "task_id").keys() == {
        (delivery["id"], task["task_id"]) for task in new_tasks
    }


def test_only_delivered_tasks_selected_reads_deliveries_without_emitting_them(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    catalog = select(discover(tmp_path, config), "delivery_tasks")
    first = run_tap(tmp_path, config, catalog=catalog)

    assert {m["stream"] for m in first.messages if m["type"] in ("RECORD", "SCHEMA")} == {
        "delivery_tasks"
    }
    delivered = keyed(first.records("delivery_tasks"), "delivery", "task_id")
    assert delivered.keys() == delivered_tasks_truth(simulator, simulator.deliveries()).keys()
    assert not [r for r in simulator.requests if r["path"] == "/v2/tasks"]

    # The deliveries stream is not selected, so it keeps no bookmark: a delivery is still read once.
    simulator.reset_log()
    second = run_tap(tmp_path, config, catalog=catalog, state=first.state)
    assert second.records("delivery_tasks") == []
    assert not [r for r in simulator.requests if r["path"] == "/v2/delivery"]


def test_deliveries_by_id_and_name_sync_exactly_those(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    project = simulator.projects[1]
    by_id_, by_name = simulator.deliveries(project["id"])[:2]
    catalog = select(discover(tmp_path, config), *DELIVERY_STREAMS)
    run = run_tap(
        tmp_path,
        {
            **config,
            "project_ids": [project["id"]],
            "delivery_ids": [by_id_["id"]],
            "delivery_names": [by_name["name"]],
        },
        catalog=catalog,
    )
    assert {r["id"] for r in run.records("deliveries")} == {by_id_["id"], by_name["id"]}
    assert {r["delivery"] for r in run.records("delivery_tasks")} == {by_id_["id"], by_name["id"]}


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("project_names", "No Such Project"),
        ("project_ids", "project_nope"),
        ("batch_ids", "batch_nope"),
        ("batch_names", "no-such-batch"),
        ("delivery_ids", "delivery_nope"),
        ("delivery_names", "No Such Delivery"),
        ("dataset_ids", "dataset_nope"),
        ("dataset_delivery_ids", "delivery_nope"),
    ],
)
def test_an_unknown_name_or_id_stops_the_sync_before_any_record(
    config: dict[str, t.Any], tmp_path: Path, setting: str, value: str
) -> None:
    run = run_tap(tmp_path, {**config, setting: [value]}, check=False)
    assert run.returncode == 1
    assert value in run.stderr
    assert setting in run.stderr
    assert "Traceback" not in run.stderr
    assert not [m for m in run.messages if m["type"] == "RECORD"]


def test_dataset_settings_restrict_and_dataset_deliveries_are_incremental(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    dataset = simulator.datasets[1]
    # The newest delivery: what a bookmark moved by the targeted run would hide is older.
    delivery = max(simulator.dataset_deliveries(dataset["id"]), key=lambda d: d["delivered_at"])
    catalog = select(discover(tmp_path, config), *DATASET_STREAMS)
    config = {**config, "dataset_ids": [dataset["id"]]}

    first = run_tap(tmp_path, {**config, "dataset_delivery_ids": [delivery["id"]]}, catalog=catalog)
    assert [r["id"] for r in first.records("datasets")] == [dataset["id"]]
    assert [r["id"] for r in first.records("dataset_deliveries")] == [delivery["id"]]
    assert {r["delivery"] for r in first.records("dataset_tasks")} == {delivery["id"]}
    assert len(first.records("dataset_tasks")) == len(simulator.dataset_tasks(delivery["id"]))

    # Without the restriction the dataset's other deliveries come, older ones too (a targeted
    # sync keeps no bookmark); the one read before is not read again.
    second = run_tap(tmp_path, config, catalog=catalog, state=first.state)
    others = {d["id"] for d in simulator.dataset_deliveries(dataset["id"])} - {delivery["id"]}
    assert others
    assert {r["delivery"] for r in second.records("dataset_tasks")} == others

    # Then it is incremental: nothing new, no delivery read again, though the list is read
    # whole while its tasks are selected (a bookmark must never hide a delivery from them).
    simulator.reset_log()
    third = run_tap(tmp_path, config, catalog=catalog, state=second.state)
    assert third.records("dataset_tasks") == []
    assert not [r for r in simulator.requests if r["path"] == "/v2/datasets/delivery"]
    listed = [r for r in simulator.requests if r["path"] == "/v2/datasets/deliveries"]
    assert listed
    assert not any("delivered_after" in r["params"] for r in listed)

    # Without its tasks selected, the list itself is read incrementally.
    simulator.reset_log()
    run_tap(tmp_path, config, catalog=select(catalog, "dataset_deliveries"), state=third.state)
    listed = [r for r in simulator.requests if r["path"] == "/v2/datasets/deliveries"]
    assert all("delivered_after" in r["params"] for r in listed)


def test_a_key_that_sees_no_projects_syncs_what_there_is_without_error(tmp_path: Path) -> None:
    with ScaleSimulator(projects=0) as empty:
        run = run_tap(tmp_path, {"api_url": empty.url, "api_key": empty.api_key})
        assert run.records("tasks") == []
        assert run.records("deliveries") == []
        assert len(run.records("datasets")) == len(empty.datasets)


def test_tasks_selected_after_their_deliveries_still_get_every_older_delivery(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    catalog = discover(tmp_path, config)
    first = run_tap(tmp_path, config, catalog=select(catalog, "deliveries"))
    assert first.records("deliveries")
    assert first.records("delivery_tasks") == []

    # The deliveries' bookmark has moved; their tasks, selected now, must not be hidden by it.
    second = run_tap(
        tmp_path, config, catalog=select(catalog, *DELIVERY_STREAMS), state=first.state
    )
    delivered = keyed(second.records("delivery_tasks"), "delivery", "task_id")
    assert delivered.keys() == delivered_tasks_truth(simulator, simulator.deliveries()).keys()


def test_a_named_delivery_is_pulled_again_on_every_run(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    delivery = simulator.deliveries()[0]
    config = {**config, "delivery_ids": [delivery["id"]]}
    catalog = select(discover(tmp_path, config), *DELIVERY_STREAMS)
    first = run_tap(tmp_path, config, catalog=catalog)
    second = run_tap(tmp_path, config, catalog=catalog, state=first.state)
    expected = {
        (delivery["id"], task["task_id"]) for task in simulator.delivery_tasks(delivery["id"])
    }
    assert keyed(second.records("delivery_tasks"), "delivery", "task_id").keys() == expected


def dataset_task_reads(simulator: ScaleSimulator) -> list[dict[str, t.Any]]:
    return [r for r in simulator.requests if r["path"] == "/v2/datasets/tasks"]


def test_dataset_tasks_are_read_over_a_span_where_that_takes_fewer_requests(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    dataset = simulator.datasets[0]
    first, middle, last = sorted(
        simulator.dataset_deliveries(dataset["id"]),
        key=lambda d: parse_timestamp(d["delivered_at"]),
    )
    config = {**config, "page_size": 100, "dataset_ids": [dataset["id"]]}
    catalog = select(discover(tmp_path, config), "dataset_tasks")

    # The middle delivery first, alone: one chain of one page.
    targeted = run_tap(
        tmp_path, {**config, "dataset_delivery_ids": [middle["id"]]}, catalog=catalog
    )
    assert {r["delivery"] for r in targeted.records("dataset_tasks")} == {middle["id"]}
    assert [r["params"].get("delivery_id") for r in dataset_task_reads(simulator)] == [
        [middle["id"]]
    ]

    # Then the two others: one chain over their span, which holds the middle one too (skipped:
    # already read), instead of one chain each.
    simulator.reset_log()
    rest = run_tap(tmp_path, config, catalog=catalog, state=targeted.state)
    reads = dataset_task_reads(simulator)
    assert len(reads) == 1
    assert reads[0]["params"]["dataset_id"] == [dataset["id"]]
    emitted = keyed(rest.records("dataset_tasks"), "delivery", "task_id")
    assert emitted.keys() == {
        (delivery["id"], task["task_id"])
        for delivery in (first, last)
        for task in simulator.dataset_tasks(delivery["id"])
    }
    for (delivery_id, _), record in emitted.items():
        delivery = first if delivery_id == first["id"] else last
        assert moment(record["delivered_at"]) == moment(delivery["delivered_at"])

    # Each of them is marked read: nothing is read again.
    simulator.reset_log()
    again = run_tap(tmp_path, config, catalog=catalog, state=rest.state)
    assert again.records("dataset_tasks") == []
    assert dataset_task_reads(simulator) == []


def test_a_span_read_interrupted_marks_none_of_its_deliveries(
    simulator: ScaleSimulator, config: dict[str, t.Any], tmp_path: Path
) -> None:
    dataset = simulator.datasets[1]
    config = {**config, "page_size": 10, "dataset_ids": [dataset["id"]], "max_tries": 1}
    catalog = select(discover(tmp_path, config), "dataset_tasks")
    everything = {
        (delivery["id"], task["task_id"])
        for delivery in simulator.dataset_deliveries(dataset["id"])
        for task in simulator.dataset_tasks(delivery["id"])
    }
    # The span's chain breaks on its third page.
    simulator.faults.only_paths = ("/v2/datasets/tasks",)
    simulator.faults.refuse_with = None
    broken = _fail_after(simulator, pages=2)
    interrupted = run_tap(tmp_path, config, catalog=catalog, check=False)
    assert interrupted.returncode == 1
    broken.stop()
    # It was a span's chain, broken after some of its records were emitted.
    spans = [r for r in dataset_task_reads(simulator) if "dataset_id" in r["params"]]
    assert [r["status"] for r in spans[:3]] == [200, 200, 500]
    assert 0 < len(interrupted.records("dataset_tasks")) < len(everything)
    state = interrupted.states[-1] if interrupted.states else {}
    resumed = run_tap(tmp_path, config, catalog=catalog, state=state)
    got = {(r["delivery"], r["task_id"]) for r in resumed.records("dataset_tasks")}
    assert got == everything


class _fail_after:  # noqa: N801 - reads as what it does
    """Answer the faulted paths with 500s after this many pages, until stopped."""

    def __init__(self, simulator: ScaleSimulator, pages: int) -> None:
        self._simulator = simulator
        self._pages = pages
        self._original = simulator._respond  # noqa: SLF001 - a test's own interposer
        self._served = 0

        def respond(method: str, path: str, params: t.Any, authorization: t.Any) -> t.Any:
            if path == "/v2/datasets/tasks":
                self._served += 1
                if self._served > self._pages:
                    simulator.faults.refuse_with = 500
            return self._original(method, path, params, authorization)

        simulator._server.respond = respond  # type: ignore[union-attr]  # noqa: SLF001

    def stop(self) -> None:
        self._simulator.faults.refuse_with = None
        self._simulator._server.respond = self._original  # type: ignore[union-attr]  # noqa: SLF001
