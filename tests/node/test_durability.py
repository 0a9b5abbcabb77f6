"""The shell's durability waiters carry out the core's verdicts: a given-up
write is never answered OK, and one nobody can make durable fails after the
deadline instead of hanging."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio

from keycafe.cluster.replication import Replication
from keycafe.node import slots
from keycafe.node.slots import _Durability
from keycafe.store.engine import Store

NODE = "a" * 40


@attrs.define
class FakeCluster:
    replication: Replication


def durability(writes: int) -> tuple[Replication, _Durability]:
    """A core with ``writes`` numbered writes and no replica to wait for."""
    replication = Replication(node=NODE, store=Store(NODE))
    replication.store.replog = [(0, b"k%d" % i) for i in range(writes)]
    return replication, _Durability(FakeCluster(replication))  # type: ignore[arg-type]


async def test_a_write_the_core_gave_up_is_not_answered_ok() -> None:
    replication, d = durability(2)
    replication._abandoned.add(1)
    assert await d.wait(1, 1) is False
    assert await d.wait(2, 2) is True


async def test_a_write_nobody_makes_durable_fails_after_the_deadline(
    autojump_clock: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(slots, "DURABLE_TIMEOUT", 3.0)
    replication, d = durability(0)
    start = trio.current_time()
    assert await d.wait(1, 1) is False
    assert trio.current_time() - start == pytest.approx(3.0)  # the deadline, not later
    assert replication.waiting() == []
