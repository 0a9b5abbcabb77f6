"""The ring keeper: holds the newest ring and spreads it through gossip (sans-I/O).

It is the gossip core's delegate (keycafe/gossip/delegate.py): a ring comes in
as a broadcast or in a push-pull's state, and goes out the same ways. Members
keep the ring with the greatest (term, epoch) and pass on each one they adopt:

- a ring that fits ``RING_DATAGRAM_BUDGET`` is queued as a gossip broadcast,
  which rides on datagrams like member news;
- a larger one is pushed over TCP (push-pull) to ``gossip_nodes`` random live
  members, who do the same when they adopt it, so it spreads epidemically in
  O(log N) rounds instead of waiting for the periodic push-pull;
- a member that the coordinator's metadata shows to be behind pulls the ring
  from it (``pull``), after a grace period for the epidemic and at most once a
  probe interval.

``ring`` is the current ring and ``changes`` counts adoptions: the node polls
them after each flush.
"""

from __future__ import annotations

from typing import Final

from keycafe.cluster.ring_codec import decode_ring_untrusted, encode_ring
from keycafe.cluster.ring_record import Ring
from keycafe.errors import BadPacket
from keycafe.gossip.core import Gossip
from keycafe.gossip.messages import Address

# A ring piggybacks on datagrams only while its encoding leaves room for the
# rest (about 20 members of 40-hex ids); a larger one travels by push-pull.
RING_DATAGRAM_BUDGET: Final = 900
# Its key in the gossip broadcast queue: a newer ring replaces the older.
BROADCAST_KEY: Final = "ring"


class RingKeeper:
    """The ring as this member knows it, and its part in spreading rings."""

    def __init__(self, core: Gossip) -> None:
        self.core = core
        self.ring: Ring | None = None
        self.changes = 0  # rings adopted so far: the node compares it with its last look
        self.pulls = 0  # state exchanges made because our ring was behind
        self.bad_payloads = 0  # ring payloads from peers that did not decode
        self._encoded = b""
        self._next_pull = float("-inf")
        self._behind: tuple[tuple[int, int], float] | None = None  # (ring version, noticed)
        # Members the coordinator saw behind: node -> (their version, noticed, next push).
        self._laggards: dict[str, tuple[tuple[int, int], float, float]] = {}
        self.pushes = 0  # state exchanges made because a member was behind

    @classmethod
    def attach(cls, core: Gossip) -> RingKeeper:
        """A keeper set as ``core``'s delegate."""
        keeper = cls(core)
        core.delegate = keeper
        return keeper

    # -- the coordinator's side --------------------------------------------------------

    def publish(self, ring: Ring, now: float) -> None:
        """Adopt and spread a ring the coordinator decided on."""
        self._adopt(ring, now)

    def pull(
        self, version: tuple[int, int], addr: Address, now: float, *, at_once: bool = False
    ) -> None:
        """The coordinator at ``addr`` says it holds ring ``version``: if ours is
        older, exchange state with it, once the epidemic has had its chance
        (``at_once``: without waiting for it; a peer's heartbeat says we are
        behind, and our lease counts none of its pongs until we catch up).

        A ring too big for a datagram spreads over TCP from member to member
        and misses a few; this brings them in at once instead of at their next
        periodic push-pull."""
        if self.ring is not None and self.ring.version >= version:
            self._behind = None
            return
        if self._behind is None or self._behind[0] != version:
            self._behind = (version, now)
        # Give the epidemic spread two probe intervals first (~94% of members
        # have it within seconds): only the few it missed pull, rather than
        # every member from the coordinator at once.
        interval = self.core.config.probe_interval
        if (not at_once and now - self._behind[1] < 2 * interval) or now < self._next_pull:
            return
        self._next_pull = now + interval
        self.pulls += 1
        self.core.pull_from(addr, now)

    def push_to(self, node: str, addr: Address, version: tuple[int, int], now: float) -> None:
        """As the coordinator: ``node`` says it holds ring ``version``, older
        than ours. After the same grace as ``pull`` (the epidemic reaches most
        members), exchange state with it, at most once a probe interval."""
        if self.ring is None or version >= self.ring.version:
            self._laggards.pop(node, None)
            return
        seen = self._laggards.get(node)
        if seen is None or seen[0] != version:
            seen = self._laggards[node] = (version, now, now)
        interval = self.core.config.probe_interval
        if now - seen[1] < 2 * interval or now < seen[2]:
            return
        self._laggards[node] = (version, seen[1], now + interval)
        while len(self._laggards) > 4 * len(self.ring.members) + 16:
            del self._laggards[next(iter(self._laggards))]  # the longest-known go first
        self.pushes += 1
        self.core.pull_from(addr, now)

    # -- the gossip core's delegate ----------------------------------------------------

    def notify_msg(self, payload: bytes, now: float) -> None:
        self._receive(payload, now)

    def local_state(self) -> bytes:
        return self._encoded

    def merge_remote_state(self, payload: bytes, now: float) -> None:
        self._receive(payload, now)

    # -- internals ---------------------------------------------------------------------

    def _receive(self, payload: bytes, now: float) -> None:
        try:
            ring = decode_ring_untrusted(payload)
        except BadPacket:
            self.bad_payloads += 1
            return
        self._adopt(ring, now)

    def _adopt(self, ring: Ring, now: float) -> None:
        """Keep the ring with the greatest (term, epoch) and pass it on."""
        if self.ring is not None and ring.version <= self.ring.version:
            return
        self.ring = ring
        self.changes += 1
        self._encoded = encode_ring(ring)
        if len(self._encoded) <= min(RING_DATAGRAM_BUDGET, self.core.broadcast_limit):
            self.core.queue_broadcast(BROADCAST_KEY, self._encoded)
        else:
            self.core.push_state(self.core.config.gossip_nodes, now)
