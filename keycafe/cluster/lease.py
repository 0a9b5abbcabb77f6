"""The minority side's lease: a node serves keys only while it hears from a
majority of the ring (sans-I/O).

Failover needs the majority side to declare a member dead: a failed probe,
then a suspicion that lasts at least Lifeguard's shortest timeout,
``alpha * max(1, log10 N) * probe_interval`` (keycafe.gossip.suspicion).
A node cut off from the majority must stop serving before that, or it could
answer reads, stale by then, of slots whose replicas the majority promoted.
Its own failure detector is no help: it suspects slowly, since Lifeguard
slows the probes of a node that sees many failures (measured: the minority
stopped first in 11 of 30 simulated partitions, docs/consistency.md).

So every member sends every other ring member a ``HEARTBEAT`` frame on its
peer link every ``period`` seconds, and a node holds its lease while it has
heard (a heartbeat or any other frame) within ``lease`` seconds from enough
members to make, with itself, a majority of the ring. ``lease`` is half the
shortest suspicion timeout and ``period`` a third of it, so a node cut off
stops serving at most ``lease + period`` (two thirds of that timeout) after
its last frame from the other side, before the majority can fail over; a
member must miss three heartbeats in a row to count as unheard.

A member that enters the ring as this node sees it counts as heard at that
moment: one lease of grace, so that a new ring does not stop a node before
heartbeats flow.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from keycafe.cluster import frames
from keycafe.cluster.handoff import Outgoing
from keycafe.gossip.suspicion import suspicion_timeout

LEASE_SHARE: Final = 0.5  # the lease, as a share of the shortest suspicion timeout
HEARTBEATS_PER_LEASE: Final = 3


class Lease:
    """Whether this node hears from a majority of the ring, and its heartbeats."""

    def __init__(self, *, node: str, probe_interval: float, suspicion_mult: int) -> None:
        self.node = node
        self.probe_interval = probe_interval
        self.suspicion_mult = suspicion_mult
        self.members: tuple[str, ...] = ()
        self.down: frozenset[str] = frozenset()
        self.lease = self.period = 0.0
        self.heard: dict[str, float] = {}
        self._next_send: float | None = None
        self._out: list[Outgoing] = []
        self._version = (0, 0)

    def set_ring(
        self, version: tuple[int, int], members: Iterable[str], now: float, down: Iterable[str] = ()
    ) -> None:
        self._version = version
        self.members = tuple(members)
        self.down = frozenset(down)  # members declared down: sent no heartbeat
        others = [m for m in self.members if m != self.node]
        # New members count as heard now (a lease of grace); gone ones go.
        self.heard = {m: self.heard.get(m, now) for m in others}
        shortest = suspicion_timeout(self.suspicion_mult, len(self.members), self.probe_interval)
        self.lease = LEASE_SHARE * shortest
        self.period = self.lease / HEARTBEATS_PER_LEASE
        if self._next_send is None:
            self._next_send = now

    def heard_from(self, peer: str, now: float) -> None:
        if peer in self.heard:
            self.heard[peer] = now

    def holds(self, now: float) -> bool:
        """Do this node and the members heard within the lease make a majority?"""
        n = len(self.members)
        if n <= 1:
            return True
        heard = sum(1 for t in self.heard.values() if now - t <= self.lease)
        return 2 * (heard + (self.node in self.members)) > n

    def get_timer(self) -> float | None:
        return self._next_send if len(self.members) > 1 else None

    def handle_timer(self, now: float) -> None:
        if self._next_send is None or now < self._next_send or len(self.members) <= 1:
            return
        self._next_send = now + self.period
        term, epoch = self._version
        for peer in self.heard:
            if peer in self.down:
                continue
            # Dropped rather than queued behind a peer whose link is stuck:
            # a late heartbeat says nothing, and the next one is due soon.
            out = Outgoing(peer=peer, kind=frames.HEARTBEAT, body=[term, epoch], droppable=True)
            self._out.append(out)

    def frames_to_send(self) -> list[Outgoing]:
        out, self._out = self._out, []
        return out
