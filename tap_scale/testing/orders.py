"""The orders a simulator can list a project's tasks in (`ScaleSimulator(order=...)`, `--order`).

Scale promises no order for `GET /v2/tasks`, so a client must not depend on one; these orders let
a test or a benchmark see how a client fares in each that Scale might in fact serve:

- `shuffled` (the default): by a hash of each id, so the listing looks shuffled;
- `newest-first`: by `created_at` descending, ties by id;
- `oldest-first`: by `created_at` ascending, ties by id;
- `by-batch`: grouped by batch, the batches in order of creation (ties by id), each batch's tasks
  shuffled within it as in `shuffled`; the tasks of no batch last, as one group.

The order is a key per task, computed once when the task is indexed (`SortedIndex`) from what
never changes about it (its id, `created_at` and batch), so completing or reworking a task leaves
it in place, and a task added mid-pagination lands where its key falls, as on a real
keyset-paginated API: in `newest-first`, a task created now lands first, before any cursor.
Keys are fixed-width bytes that name no id in clear (a token carries one), unique by the id.

The order applies to `GET /v2/tasks` and to the tasks of `GET /v2/delivery`, both in the live and
the pre-rendered mode. `GET /v2/delivery/tasks` lists one doc per task and delivery and stays
shuffled, as do the listings of batches and of datasets' tasks.
"""

from __future__ import annotations

import typing as t

from tap_scale.testing.pagination import order_key

if t.TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from tap_scale.testing.records import BatchRecord, TaskRecord

ORDERS = ("shuffled", "newest-first", "oldest-first", "by-batch")
DEFAULT_ORDER = "shuffled"

_MOMENT_BYTES = 8
_LATEST = 2 ** (8 * _MOMENT_BYTES) - 1
_ID_BYTES = 12  # `records.new_id`: 24 hex digits
# The batch part of a task of no batch: after every batch's (a moment never reaches it).
_NO_BATCH = b"\xff" * (_MOMENT_BYTES + _ID_BYTES)


def check_order(order: str) -> str:
    """The order, if it is one of `ORDERS`.

    Raises:
        ValueError: naming the orders there are.
    """
    if order not in ORDERS:
        message = f"order must be one of {', '.join(ORDERS)}, not {order!r}"
        raise ValueError(message)
    return order


def task_order(
    order: str, tasks: Mapping[str, TaskRecord], batches: Mapping[str, BatchRecord]
) -> Callable[[str], bytes]:
    """The key of a task id in this order, reading the task (and its batch) from these records.

    Raises:
        ValueError: for an order not in `ORDERS`.
    """
    check_order(order)
    if order == "shuffled":
        return order_key

    def newest_first(task_id: str) -> bytes:
        return _moment(_LATEST - tasks[task_id].created_at) + _id_bytes(task_id)

    def oldest_first(task_id: str) -> bytes:
        return _moment(tasks[task_id].created_at) + _id_bytes(task_id)

    # Each batch's place, once: a batch never changes.
    places: dict[str, bytes] = {}

    def by_batch(task_id: str) -> bytes:
        batch_id = tasks[task_id].batch_id
        if batch_id is None:
            return _NO_BATCH + order_key(task_id)
        place = places.get(batch_id)
        if place is None:
            place = places[batch_id] = _moment(batches[batch_id].created_at) + _id_bytes(batch_id)
        return place + order_key(task_id)

    keys = {"newest-first": newest_first, "oldest-first": oldest_first, "by-batch": by_batch}
    return keys[order]


def _moment(micros: int) -> bytes:
    """An instant (or its complement) as bytes that sort as the numbers do."""
    return micros.to_bytes(_MOMENT_BYTES, "big")


def _id_bytes(item_id: str) -> bytes:
    """The 24 hex digits of a simulated id (`task_...`, `batch_...`) as the 12 bytes they spell.

    Ids of one kind share their prefix, so these bytes sort as the ids do; a token that carries
    them does not spell the id.
    """
    return bytes.fromhex(item_id.rpartition("_")[2])
