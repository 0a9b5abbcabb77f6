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

So every member sends every other ring member a ``HEARTBEAT`` *ping* on its
peer link every ``period`` seconds, stamped with its own monotonic clock,
and a member answers each ping at once with a *pong* that echoes the stamp.
A node holds its lease while enough members to make, with itself, a
majority of the ring have echoed a ping it sent within the last ``lease``
seconds. ``lease`` is half the shortest suspicion timeout and ``period`` a
third of it, so a node cut off stops serving at most ``lease`` after the
last ping of its that got through, before the majority can fail over; a
member connected to it echoes a ping at most ``period`` plus a round trip
old.

The stamps are the node's own, so only what it sent recently counts: a
process stopped for a while (SIGSTOP, a long GC) that finds old pongs or
pings in its socket buffers when it wakes does not renew its lease with
them, as it would if it counted whatever frames it reads as news of now
(found by ``python -m sims.partition pause``: a primary paused for 20 s
served three stale reads on waking, renewed by heartbeats sent before its
replica was promoted). The shell checks the lease at each request too
(``expires``), not only when a timer runs.

A pong from a member that follows a newer ring renews nothing: that ring
may have failed this node over (found by ``python -m sims.partition
halves``: on the heal, the old primary heard the majority again and served a
read of the value it had before the cut, before it adopted the ring that had
promoted its replica). Such a heartbeat says this node is behind: ``newer``
names the ring version and the peer, and the node fetches that ring from it
at once, rather than stop serving until the ring's spread reaches it.

A member that enters the ring as this node sees it counts as heard at that
moment: one lease of grace, so that a new ring does not stop a node before
heartbeats flow. A peer of an older version sends two-field heartbeats with
no stamp; each counts as heard when read, as that version did.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Final

from keycafe.cluster import frames
from keycafe.cluster.handoff import MAX_VERSION, Outgoing
from keycafe.gossip.suspicion import suspicion_timeout

LEASE_SHARE: Final = 0.5  # the lease, as a share of the shortest suspicion timeout
HEARTBEATS_PER_LEASE: Final = 3


MAX_STAMP: Final = float(1 << 53)  # ping stamps are echoed exactly: doubles, at most this
# Pings remembered to check pongs against: more than a lease's worth.
KEEP_PINGS: Final = 2 * HEARTBEATS_PER_LEASE + 2


class Lease:
    """Whether this node hears from a majority of the ring, and its heartbeats."""

    def __init__(self, *, node: str, probe_interval: float, suspicion_mult: int) -> None:
        self.node = node
        self.probe_interval = probe_interval
        self.suspicion_mult = suspicion_mult
        self.members: tuple[str, ...] = ()
        self.down: frozenset[str] = frozenset()
        self.lease = self.period = 0.0
        # Per member: the stamp of the newest ping of ours it echoed (our clock).
        self.heard: dict[str, float] = {}
        self.bad = 0  # heartbeats malformed, or echoing a ping we never sent
        self._pings: deque[float] = deque(maxlen=KEEP_PINGS)
        self._next_send: float | None = None
        self._out: list[Outgoing] = []
        self._version = (0, 0)
        # The newest ring version a peer's heartbeat named above ours, and that
        # peer (``take_newer``): this node is behind it.
        self.newer: tuple[tuple[int, int], str] | None = None

    def set_ring(
        self, version: tuple[int, int], members: Iterable[str], now: float, down: Iterable[str] = ()
    ) -> None:
        # New members count as heard as of the lease this node already has (a
        # lease of grace, never a new one: a ring read late, after a stop,
        # must not renew a lapsed lease); in the first ring, as of now.
        if not self.members:
            grace = now
        else:
            held = self.expires()
            grace = now if held == math.inf else min(now, held - self.lease)
        self._version = version
        self.members = tuple(members)
        self.down = frozenset(down)  # members declared down (pinged all the same)
        others = [m for m in self.members if m != self.node]
        self.heard = {m: self.heard.get(m, grace) for m in others}
        shortest = suspicion_timeout(self.suspicion_mult, len(self.members), self.probe_interval)
        self.lease = LEASE_SHARE * shortest
        self.period = self.lease / HEARTBEATS_PER_LEASE
        if self._next_send is None:
            self._next_send = now

    def heard_from(self, peer: str, now: float) -> None:
        """``peer`` is known to hear us as of ``now``."""
        if peer in self.heard and now > self.heard[peer]:
            self.heard[peer] = now

    def receive(self, peer: str, body: object, now: float) -> bool:
        """A ``HEARTBEAT`` from ``peer``: answer its ping, take its pong.
        False if it was malformed or echoed no ping of ours (dropped)."""
        if type(body) is not list or len(body) not in (2, 4):
            self.bad += 1
            return False
        if len(body) == 2:
            # An older peer's heartbeat: counted as of when it is read, as
            # that version did (so a cluster mixing versions lacks the two
            # guarantees of stamps: upgrade every node).
            if not (_version(body[0]) and _version(body[1])):
                self.bad += 1
                return False
            self.heard_from(peer, now)
            return True
        term, epoch, ping, pong = body
        if not (_version(term) and _version(epoch) and _stamp(ping) and _stamp(pong)):
            self.bad += 1
            return False
        if (term, epoch) > self._version and (self.newer is None or (term, epoch) > self.newer[0]):
            self.newer = ((term, epoch), peer)
        if ping is not None:
            ours_term, ours_epoch = self._version
            body = [ours_term, ours_epoch, None, ping]
            self._out.append(Outgoing(peer=peer, kind=frames.HEARTBEAT, body=body, droppable=True))
        if pong is not None:
            if pong not in self._pings:
                self.bad += 1  # not ours, or too old to matter
                return False
            # A peer that follows a newer ring may have failed this node over
            # (it was cut off, say, and the cut just healed): until this node
            # follows that ring too, its pongs renew nothing.
            if (term, epoch) <= self._version:
                self.heard_from(peer, pong)
        return True

    def take_newer(self) -> tuple[tuple[int, int], str] | None:
        """A ring version newer than ours a peer follows, and that peer, once."""
        newer, self.newer = self.newer, None
        if newer is not None and newer[0] <= self._version:
            return None  # adopted meanwhile
        return newer

    def expires(self) -> float:
        """When the lease lapses unless more pongs come (``inf``: a ring of
        one, or outside the ring with nobody to hear; ``-inf``: lapsed)."""
        n = len(self.members)
        need = n // 2 + 1 - (self.node in self.members)  # others for a majority
        if n <= 1 or need <= 0:
            return math.inf
        if need > len(self.heard):
            return -math.inf
        return sorted(self.heard.values(), reverse=True)[need - 1] + self.lease

    def holds(self, now: float) -> bool:
        """Do this node and the members heard within the lease make a majority?"""
        return now <= self.expires()

    def get_timer(self) -> float | None:
        return self._next_send if len(self.members) > 1 else None

    def handle_timer(self, now: float) -> None:
        if self._next_send is None or now < self._next_send or len(self.members) <= 1:
            return
        self._next_send = now + self.period
        term, epoch = self._version
        self._pings.append(now)
        for peer in self.heard:
            # Members declared down too: one alive (restarted, being streamed
            # back) answers, and in a ring of two it is the only one to.
            # Dropped rather than queued behind a peer whose link is stuck:
            # a late heartbeat says nothing, and the next one is due soon.
            body = [term, epoch, now, None]
            self._out.append(Outgoing(peer=peer, kind=frames.HEARTBEAT, body=body, droppable=True))

    def frames_to_send(self) -> list[Outgoing]:
        out, self._out = self._out, []
        return out


def _version(x: object) -> bool:
    return type(x) is int and 0 <= x <= MAX_VERSION


def _stamp(x: object) -> bool:
    """A stamp as a peer may send it: none, or a number from 0 to ``MAX_STAMP``."""
    if x is None:
        return True
    return (type(x) is float or type(x) is int) and 0 <= x <= MAX_STAMP
