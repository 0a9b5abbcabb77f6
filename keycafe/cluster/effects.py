"""Carrying out the coordinator's decisions on a gossip core and a ring keeper.

The coordinator (coordinator.py) only decides; this is the one place that turns
its decisions into metadata changes and ring broadcasts, for the node's shell
(keycafe/node/gossip.py) and the simulators alike. Sans-I/O: time is ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable

from keycafe.cluster.coordinator import (
    RING_KEY,
    TERM_KEY,
    AnnounceRing,
    Assessment,
    ClaimTerm,
    Decision,
    OwnersOf,
    PublishRing,
    PullRing,
    PushRing,
    step,
)
from keycafe.cluster.ringcast import RingKeeper
from keycafe.gossip.core import Gossip


def announce(core: Gossip, key: str, value: object, now: float) -> None:
    """Set ``key`` to ``value`` in our gossip metadata (a no-op if it is already)."""
    if core.me.meta.get(key) != str(value):
        core.update_meta({**core.me.meta, key: str(value)}, now)


def apply_decisions(
    decisions: Iterable[Decision], core: Gossip, keeper: RingKeeper, now: float
) -> None:
    for d in decisions:
        match d:
            case ClaimTerm():
                announce(core, TERM_KEY, d.term, now)
            case PublishRing():
                keeper.publish(d.ring, now)
            case AnnounceRing():
                announce(core, RING_KEY, f"{d.version[0]}.{d.version[1]}", now)
            case PullRing():
                keeper.pull(d.version, d.addr, now)
            case PushRing():
                keeper.push_to(d.node, d.addr, d.version, now)


def coordinate(
    core: Gossip,
    keeper: RingKeeper,
    now: float,
    owners: OwnersOf | None = None,
    *,
    leased: bool = True,
) -> Assessment:
    """One coordinator step on ``core``'s view, its decisions carried out
    (``leased``: the node holds its lease, coordinator.step)."""
    assessment, decisions = step(
        core.node, core.known_members(), keeper.ring, owners, leased=leased
    )
    apply_decisions(decisions, core, keeper, now)
    return assessment
