"""The shell's durability waiters: a given-up write is never answered OK, and a
write nobody can make durable fails after the deadline instead of hanging."""

from __future__ import annotations

from typing import Any

import attrs
import trio
import trio.testing

from keycafe.cluster.replication import Replication
from keycafe.node import slots
from keycafe.node.slots import _Durability
from keycafe.store.engine import Store


@attrs.define
class FakeCluster:
    replication: Replication
    durable: int = 0


def durability() -> tuple[FakeCluster, _Durability]:
    cluster = FakeCluster(replication=Replication(node="a" * 40, store=Store("a" * 40)))
    d = _Durability(cluster)  # type: ignore[arg-type]
    return cluster, d


async def test_a_released_write_that_was_given_up_is_not_answered_ok() -> None:
    """X (write 1) was given up; it is released, and before its task runs a
    second step releases Y (write 2). X must still learn it was given up."""
    cluster, d = durability()
    cluster.replication._abandoned.add(1)
    results: dict[str, bool] = {}

    async def waiter(name: str, first: int, last: int) -> None:
        results[name] = await d.wait(first, last)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter, "x", 1, 1)
        nursery.start_soon(waiter, "y", 2, 2)
        await trio.testing.wait_all_tasks_blocked()
        cluster.durable = 1
        d.notify()  # releases X; its task has not run yet
        cluster.durable = 2
        d.notify()  # releases Y
    assert results == {"x": False, "y": True}


async def test_a_write_nobody_makes_durable_fails_after_the_deadline(
    autojump_clock: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(slots, "DURABLE_TIMEOUT", 3.0)
    _, d = durability()
    start = trio.current_time()
    assert await d.wait(1, 1) is False
    assert trio.current_time() - start >= 3.0
    assert d._waiting == []
