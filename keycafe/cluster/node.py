"""A node's cluster layer above gossip, sans-I/O: ring, coordinator, hand-off.

The gossip core knows members; this composes what is built on them, so the
trio shell and the simulator run the very same logic:

- the ring keeper (``ringcast``), the gossip core's delegate, holds the newest
  ring the coordinator published;
- the coordinator step (``coordinator``, carried out by ``effects``) runs after
  every member change and at least once a second;
- the hand-off core (``handoff``) follows each ring the keeper adopts, and its
  readiness and leave go out as gossip metadata.

Drive it with ``after_gossip(changed, now)`` after every gossip step,
``handle_timer``/``get_timer`` for its own deadlines, ``receive_frame`` and
``frames_to_send`` for the peer links. ``routing`` is what clients are routed
by; ``routing_version`` counts its changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from functools import lru_cache
from typing import Final

from keycafe.cluster import coordinator, effects, frames
from keycafe.cluster.antientropy import AntiEntropy
from keycafe.cluster.frames import Frame
from keycafe.cluster.handoff import (
    Confirmed,
    Handoff,
    Left,
    Outgoing,
    Owners,
    Ready,
    RoutingChanged,
    Unconfirmed,
)
from keycafe.cluster.lease import Lease
from keycafe.cluster.replication import Replication
from keycafe.cluster.ring import RingConfig, slot_owners
from keycafe.cluster.ring_record import Ring
from keycafe.cluster.ringcast import RingKeeper
from keycafe.cluster.slot_table import NodeAddr
from keycafe.gossip.core import Gossip
from keycafe.gossip.messages import State
from keycafe.store.engine import Store

# The coordinator looks at the view at least this often (seconds), besides
# after every member change: readiness and metadata raise no member event.
ASSESS_PERIOD: Final = 1.0


def owners_cache(config: RingConfig, size: int = 8) -> Callable[[tuple[str, ...]], Owners]:
    """``slot_owners`` for member sets, remembering the last few (a ring and
    its proposal are asked for again and again)."""

    @lru_cache(maxsize=size)
    def owners(members: tuple[str, ...]) -> Owners:
        return slot_owners(members, config)

    return owners


class ClusterNode:
    """One node's ring, coordinator role and slot hand-off."""

    def __init__(
        self,
        *,
        core: Gossip,
        keeper: RingKeeper,
        me: NodeAddr,
        store: Store,
        owners: Callable[[tuple[str, ...]], Owners],
        joined: bool = True,
        boot: str = "",
    ) -> None:
        self.core = core
        # This process's boot id (coordinator.BOOT_KEY), said in our metadata:
        # back with another one after a crash, we are known to hold nothing.
        self.boot = boot
        self.keeper = keeper
        self.me = me
        self.handoff = Handoff(me=me, store=store, owners=owners, boot=boot)
        self.replication = Replication(node=me.node_id, store=store)
        self.antientropy = AntiEntropy(node=me.node_id, store=store)
        self.lease = Lease(
            node=me.node_id,
            probe_interval=core.config.probe_interval,
            suspicion_mult=core.config.suspicion_mult,
        )
        # A node started with seeds takes no part in elections until it has
        # joined: alone, it would elect itself and found a ring of its own.
        self.joined = joined
        # Started with seeds, this process holds nothing until a change
        # brings it in and streams it its copies. Should it find itself a live
        # owner in a ring that never did (it was restarted under its id before
        # the cluster declared it dead), it serves and acknowledges nothing,
        # and says so (coordinator.RESTARTED_KEY) to be declared down and
        # brought back as a newcomer.
        self.fresh = not joined
        self._said_restarted = False
        self.assessment: coordinator.Assessment | None = None
        self.routing: RoutingChanged | None = None
        self.routing_version = 0
        self.left = False
        # No majority of the ring's members alive in this node's view: it
        # serves no key (``keycafe.server.routing.Routing.halted``).
        self.halted = False
        # Until when the lease holds if no more pongs come (monotonic clock):
        # the shell refuses keyed requests after it even before a timer runs.
        self.lease_until = math.inf
        self._assessed_at = float("-inf")

    @property
    def ring(self) -> Ring | None:
        """The ring the hand-off follows (the keeper's, once adoptable)."""
        ring = self.handoff.ring
        return ring if isinstance(ring, Ring) else None

    # -- driving --------------------------------------------------------------------------

    def after_gossip(self, changed: bool, now: float) -> None:
        """After a gossip step: ``changed`` if a member changed state."""
        if self.boot:
            effects.announce(self.core, coordinator.BOOT_KEY, self.boot, now)  # once: a no-op after
        # The same sum as get_timer's: a difference could fall short by one ulp
        # at the deadline and never be due.
        if self.joined and (changed or now >= self._assessed_at + ASSESS_PERIOD):
            self._assess(now)
        self._follow(now)
        self._check_halted(now)
        if changed:
            ring = self.ring
            # Only for members with no address yet: building every member's
            # address on each gossip change cost a busy node at N=100 a tenth
            # of its CPU.
            if ring is not None and self.handoff.unknown:
                self.handoff.update_nodes(self._nodes(ring))
            self._mark_down(now)

    def get_timer(self) -> float | None:
        timers = (
            self.handoff.get_timer(),
            self.replication.get_timer(),
            self.antientropy.get_timer(),
            self.lease.get_timer(),
        )
        times = [t for t in timers if t is not None]
        t = min(times) if times else None
        if self.joined:
            due = self._assessed_at + ASSESS_PERIOD
            t = due if t is None else min(t, due)
        return t

    def handle_timer(self, now: float) -> None:
        self.handoff.handle_timer(now)
        self.replication.handle_timer(now)
        self.antientropy.handle_timer(now)
        self.lease.handle_timer(now)
        self.after_gossip(False, now)
        self._events(now)

    def receive_frame(self, peer: str, frame: Frame, now: float, wall_ms: int) -> None:
        if frame.kind == frames.HEARTBEAT:
            # Only pongs of recent pings renew the lease: a frame read late
            # (this process was stopped) says nothing of now.
            self.lease.receive(peer, frame.body, now)
            newer = self.lease.take_newer()
            addr = self.addr_of(peer) if newer is not None else None
            if newer is not None and addr is not None:
                self.keeper.pull(newer[0], addr, now, at_once=True)
            self._check_halted(now)
            return
        if frame.kind in (frames.REPL, frames.REPL_ACK):
            self.replication.receive_frame(peer, frame, now, wall_ms)
            return
        if frame.kind in (frames.AE_DIGEST, frames.AE_KEYS, frames.AE_SYNC):
            self.antientropy.receive_frame(peer, frame, now, wall_ms)
            return
        self.handoff.receive_frame(peer, frame, now, wall_ms)
        self._events(now)

    def frames_to_send(
        self, now: float, limit: int = 64, busy: Collection[str] = ()
    ) -> list[Outgoing]:
        """Up to ``limit`` frames (and heartbeats), none for a ``busy`` peer:
        the shell names the peers whose links are not taking frames, and
        nothing more is built for them until they do (backpressure per peer)."""
        # Replication first: a barrier the hand-off sends must follow the
        # writes already replicated to the same peer (links keep order).
        out = self.lease.frames_to_send()  # few and tiny, and droppable
        out += self.replication.frames_to_send(now, limit, busy)
        if len(out) < limit:
            # Not to a peer that replication has more for (left for the next
            # call, or held while the peer is busy): a barrier must follow them.
            behind = {*busy, *self.replication.backlogged()}
            out += self.handoff.frames_to_send(now, limit - len(out), behind)
        if len(out) < limit:
            out += self.antientropy.frames_to_send(now, limit - len(out), busy)
        return out

    def link_broken(self, peer: str, now: float) -> None:
        self.handoff.link_broken(peer, now)
        self.replication.link_broken(peer, now)
        self.antientropy.link_broken(peer)

    @property
    def written(self) -> int:
        """The number of the last write to a replicated slot here."""
        return self.replication.written

    @property
    def durable(self) -> int:
        """Writes numbered up to this are on every in-sync replica, or were
        given up (``replication.released`` says which)."""
        return self.replication.durable

    def leave(self, now: float) -> bool:
        """Ask to leave the ring; False if there is nothing to hand over."""
        if not self.handoff.leave(now):
            return False
        self._announce(coordinator.LEAVING_KEY, 1, now)
        return True

    def addr_of(self, node: str) -> tuple[str, int] | None:
        m = self.core.members.get(node)
        return m.info.addr if m is not None else None

    # -- internals ------------------------------------------------------------------------

    def _assess(self, now: float) -> None:
        self._assessed_at = now
        # The lease of the ring the node follows: a node that does not hear
        # from a majority of it must not coordinate (coordinator.py).
        leased = self.lease.holds(now)
        self.assessment = effects.coordinate(
            self.core, self.keeper, now, self.handoff.owners, leased=leased
        )

    def _check_halted(self, now: float) -> None:
        """Serve no key without a majority of the ring: alive in our gossip
        view, and heard from within the lease (keycafe/cluster/lease.py)."""
        ring = self.ring
        # A node outside the ring (joining) owns nothing to stop serving, and
        # hears no heartbeats until it is in: it is not halted for that. The
        # gossip view's suspicions do not halt a node: a suspected member
        # that still sends frames is reachable (a 2-member ring halted on
        # every brief suspicion), and one that does not loses the lease.
        member = ring is not None and self.me.node_id in ring.members
        self.lease_until = self.lease.expires() if member else math.inf
        if self.unadmitted:
            self.lease_until = -math.inf  # serves no key: its copies are empty
        halted = member and now > self.lease_until
        if halted != self.halted:
            self.halted = halted
            self.routing_version += 1  # the shell builds routing with it

    def _announce(self, key: str, value: object, now: float) -> None:
        effects.announce(self.core, key, value, now)
        if self.joined:
            self._assess(now)  # a change of our own raises no member event
            self._follow(now)

    def _follow(self, now: float) -> None:
        """Hand the keeper's ring to the hand-off once every member is known."""
        ring = self.keeper.ring
        current = self.handoff.ring
        if ring is None or (current is not None and (current.term, current.epoch) >= ring.version):
            return
        self.handoff.set_ring(ring, self._nodes(ring), now)
        # Every live replica in the ring in force is in sync: copies are
        # streamed to new owners before a change makes them owners.
        table = self.handoff.table
        self.replication.set_ring(ring.version, table.owners, set(ring.members) - set(ring.down))
        self.antientropy.set_ring(ring.version, table.owners)
        self.lease.set_ring(ring.version, ring.members, now, down=ring.down)
        self._admit(ring, now)
        self._mark_down(now)
        self._events(now)
        # Say which ring we follow: a coordinator that sees us behind pushes.
        held = self.handoff.ring
        if held is not None and self.joined:
            self._announce(coordinator.HELD_KEY, f"{held.term}.{held.epoch}", now)

    def _admit(self, ring: Ring, now: float) -> None:
        """A fresh process (``fresh``): admitted by a change that brings it
        in, or by founding the ring; a live owner otherwise, unadmitted."""
        if not self.fresh:
            return
        me = self.me.node_id
        owner = me in ring.members and me not in ring.down
        coming = me in ring.pending and not owner
        if coming or (owner and ring.epoch == 1):  # a founder has lost nothing
            self.fresh = False
            self.replication.accepting = True
            if self._said_restarted:
                self._announce(coordinator.RESTARTED_KEY, "", now)
        elif owner:
            self.replication.accepting = False  # an empty copy must not count
            if not self._said_restarted:
                self._said_restarted = True
                self._announce(coordinator.RESTARTED_KEY, self.boot or "?", now)

    @property
    def unadmitted(self) -> bool:
        """A live owner in the ring in force that holds nothing it should."""
        ring = self.handoff.ring
        me = self.me.node_id
        return self.fresh and ring is not None and me in ring.members and me not in ring.down

    def _nodes(self, ring: Ring) -> dict[str, NodeAddr]:
        """Addresses of the ring's members that gossip knows."""
        nodes: dict[str, NodeAddr] = {}
        for node in ring.members:
            m = self.core.members.get(node)
            if m is not None and node != self.me.node_id:
                info = m.info
                nodes[node] = NodeAddr(
                    node_id=node,
                    host=info.client_addr[0],
                    port=info.client_addr[1],
                    cluster_port=info.addr[1],
                )
        return nodes

    def _mark_down(self, now: float) -> None:
        """Ring members this node knows are dead: CLUSTERDOWN for their slots."""
        ring = self.handoff.ring
        if ring is None:
            return
        members = self.core.members
        down = frozenset(
            n for n in ring.members if (m := members.get(n)) is None or m.state == State.DEAD
        )
        self.handoff.set_down(down, now)
        self._events(now)

    def _events(self, now: float) -> None:
        while (ev := self.handoff.next_event()) is not None:
            match ev:
                case RoutingChanged():
                    self.routing = ev
                    self.routing_version += 1
                case Ready():
                    ready = coordinator.ready_value(ev.term, ev.epoch)
                    self._announce(coordinator.READY_KEY, ready, now)
                case Left():
                    self.left = True
                case Unconfirmed():
                    self.replication.unconfirm(ev.peer, ev.slots)
                case Confirmed():
                    self.replication.confirm(ev.peer, ev.slots)
