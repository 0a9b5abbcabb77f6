"""The cluster layer's trio shell: a pump around ``keycafe.cluster.node.ClusterNode``.

Every decision about rings, the coordinator role and slot hand-off is made in
the sans-I/O ``ClusterNode`` (the simulator runs the same object); this file
only moves things in and out of it:

- after every gossip flush, one cluster step (``after_gossip``);
- frames from peer links in, frames out to them (awaiting each link's bounded
  queue: backpressure), broken links reported;
- its timers;
- the routing it computes, swapped whole into ``ServerState.routing``;
- a graceful leave, awaited until the node has handed everything over.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Final

import attrs
import trio

from keycafe.cluster.antientropy import figures as antientropy_figures
from keycafe.cluster.frames import Frame
from keycafe.cluster.handoff import Outgoing
from keycafe.cluster.handoff import figures as handoff_figures
from keycafe.cluster.node import ClusterNode, owners_cache
from keycafe.cluster.replication import figures as replication_figures
from keycafe.cluster.ring import RingConfig
from keycafe.cluster.ring_record import Ring
from keycafe.gossip.messages import Address, State
from keycafe.node.gossip import GossipService
from keycafe.node.links import PeerLinks
from keycafe.server.routing import Routing
from keycafe.server.state import ServerState

log = logging.getLogger("keycafe.slots")

SEND_CHUNK: Final = 64  # frames taken from the core per turn (a batch is <= 512 entries)
# Longest a reply waits for its write to reach the replicas: past the LAN
# detection bound (docs/gossip.md: ~10 s at N=100), by when a dead replica is
# declared down and the write answered; a write still waiting then has no
# majority to rescue it, and its connection is closed instead.
DURABLE_TIMEOUT: Final = 30.0


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class SlotService:
    """Runs a node's ``ClusterNode`` on the gossip shell and the peer links."""

    def __init__(
        self,
        state: ServerState,
        gossip: GossipService,
        links: PeerLinks,
        ring_config: RingConfig | None = None,
    ) -> None:
        self.state = state
        self.gossip = gossip
        self.links = links
        self.cluster = ClusterNode(
            core=gossip.core,
            keeper=gossip.keeper,
            me=state.config.me,
            store=state.store,
            owners=owners_cache(ring_config or RingConfig()),
            joined=gossip.joined,
            boot=secrets.token_hex(8),
        )
        self._routing_seen = 0
        self._logged: tuple[str | None, int, bool] | None = None
        self._epoch_logged = 0
        self._wake_timer = trio.Event()  # the core may have a new deadline
        self._wake_sender = trio.Event()  # ... or frames to send
        self._left = trio.Event()
        self._in_flush = False
        self._sending = False
        # Frames for a peer whose link queue is full wait here, in order, for
        # a task of that peer's own: one stuck peer (dead, not yet declared
        # so; cut off) must not hold up frames to all the others.
        self._overflow: dict[str, deque[Outgoing]] = {}
        self._nursery: trio.Nursery | None = None
        links.on_frame = self._on_frame
        links.on_broken = self._on_broken
        links.after_frames = self._send_now
        # A write to a moving slot (the core has a forward deadline now) or to
        # a replicated one (frames to send: one round per peer for what the
        # clients wrote in this turn of the loop).
        state.store.on_dirty = self._on_dirty
        self._flush_due = False  # written during a hub cycle: ``_flush_batch`` sends
        self.durability = _Durability(self.cluster, self._flush_batch)
        state.durability = self.durability
        gossip.after_flush = self._after_gossip

    @property
    def ring(self) -> Ring | None:
        """The ring this node follows."""
        return self.cluster.ring

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._timers)
            nursery.start_soon(self._send_frames)
            task_status.started()
            self._step(lambda now: self.cluster.after_gossip(True, now))

    # -- in ---------------------------------------------------------------------------------

    def _after_gossip(self, changed: bool) -> None:
        self.cluster.joined = self.gossip.joined
        self._in_flush = True
        try:
            self._step(lambda now: self.cluster.after_gossip(changed, now))
        finally:
            self._in_flush = False
        if changed:
            self._forget_departed()

    def _on_frame(self, peer: str, frame: Frame) -> None:
        # Frames come by the thousand during a transfer: flush gossip only when
        # one changed our metadata (readiness), not after every frame.
        self._step(lambda now: self.cluster.receive_frame(peer, frame, now, _wall_ms()), frame=True)

    def _on_dirty(self) -> None:
        self._wake_timer.set()
        if self.durability.batching:
            self._flush_due = True  # the client hub flushes when its cycle ends
        else:
            self._wake_sender.set()

    def _flush_batch(self) -> None:
        if self._flush_due:
            self._flush_due = False
            self._send_now()

    def _on_broken(self, peer: str) -> None:
        waiting = self._overflow.get(peer)
        if waiting is not None:
            waiting.clear()  # the core sends again what they carried, in order
        self._step(lambda now: self.cluster.link_broken(peer, now))

    async def _timers(self) -> None:
        while True:
            deadline = self.cluster.get_timer()
            self._wake_timer = trio.Event()
            with trio.move_on_at(deadline if deadline is not None else trio.current_time() + 1):
                await self._wake_timer.wait()
            now = trio.current_time()
            if deadline is not None and now >= deadline:
                self._step(self.cluster.handle_timer)

    # -- out --------------------------------------------------------------------------------

    def _step(self, fn: Callable[[float], object], *, frame: bool = False) -> None:
        """Run one input through the core, then carry out what it decided."""
        incarnation = self.gossip.core.me.incarnation
        fn(trio.current_time())
        cluster = self.cluster
        self.state.lease_until = cluster.lease_until
        if cluster.routing is not None and cluster.routing_version != self._routing_seen:
            self._routing_seen = cluster.routing_version
            r = cluster.routing
            if cluster.halted != self.state.routing.halted:
                log.warning(
                    "%s",
                    "no majority of the ring's members alive: serving no key"
                    if cluster.halted
                    else "a majority of the ring's members is alive again: serving keys",
                )
            self.state.routing = Routing(table=r.table, moving=r.moving, halted=cluster.halted)
        self._log_ring()  # a proposal changes no routing, and is logged too
        if cluster.left:
            self._left.set()
        self._log_assessment()
        changed_meta = self.gossip.core.me.incarnation != incarnation
        if not self._in_flush and (changed_meta or not frame):
            self.gossip.flush()  # our metadata (readiness, leaving) goes out now
        self._wake_timer.set()
        if frame:
            return  # the links send (and notify) once per read: ``after_frames``
        if self._sending:
            self.durability.notify()  # acknowledgements came, or a ring change
            self._wake_sender.set()
        else:
            self._send_now()  # ... and notifies

    def _send_now(self) -> None:
        """Send what the core has to send now, in the caller's task: a
        replica's acknowledgement goes out as its frame is read, and a
        primary's writes as the client hub ends its cycle, each without
        waking another task (``PeerLinks.send_nowait``). A step taken while
        sending (a broken link found) leaves the rest to the sender task."""
        if self._sending or self._send_some():
            self._wake_sender.set()

    async def _send_frames(self) -> None:
        while True:
            if self._send_some():
                await trio.lowlevel.checkpoint()  # exporting is synchronous: let clients in
                continue
            self._wake_sender = trio.Event()
            await self._wake_sender.wait()

    def _send_some(self) -> bool:
        """Hand up to ``SEND_CHUNK`` frames to the links; True if that many
        went (there may be more)."""
        self._sending = True
        try:
            out = self.cluster.frames_to_send(trio.current_time(), SEND_CHUNK, self._overflow)
            self.durability.notify()  # writes with no replica to wait for
            for o in out:
                addr = self.cluster.addr_of(o.peer)
                if addr is None:
                    if not o.droppable:
                        self._on_broken(o.peer)  # not heard of yet, or reaped: try again later
                    continue
                waiting = self._overflow.get(o.peer)
                if waiting is not None:
                    if not o.droppable:
                        waiting.append(o)
                    continue
                try:
                    self.links.send_nowait(o.peer, addr, o.kind, o.body)
                except trio.WouldBlock:
                    if not o.droppable:
                        self._overflow[o.peer] = deque([o])
                        assert self._nursery is not None
                        self._nursery.start_soon(self._drain, o.peer, addr)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    pass  # the link was forgotten (the peer died): dropped, as queued ones
            return len(out) >= SEND_CHUNK
        finally:
            self._sending = False

    async def _drain(self, peer: str, addr: Address) -> None:
        """Send ``peer``'s waiting frames as its link takes them."""
        waiting = self._overflow[peer]
        try:
            while waiting:
                o = waiting.popleft()
                await self.links.send(peer, addr, o.kind, o.body)
        finally:
            del self._overflow[peer]
            self._wake_sender.set()  # its frames held back in the core may go now

    def _forget_departed(self) -> None:
        """Stop reconnecting to peers that died or left (or were reaped)."""
        members = self.gossip.core.members
        for peer in self.links.peers():
            m = members.get(peer)
            if m is None or m.info.state in (State.DEAD, State.LEFT):
                self.links.forget(peer)
                waiting = self._overflow.get(peer)
                if waiting is not None:
                    waiting.clear()  # its task sends what it holds, to a closed link

    # -- a graceful leave -------------------------------------------------------------------

    async def leave(self) -> None:
        """Ask to leave the ring and wait until this node has handed over."""
        started: list[bool] = []
        self._step(lambda now: started.append(self.cluster.leave(now)))
        if not started[0]:
            return
        log.info("leaving: handing this node's slots over")
        await self._left.wait()
        log.info("left the ring; slots handed over")

    # -- logs -------------------------------------------------------------------------------

    def _log_ring(self) -> None:
        ring = self.cluster.ring
        if ring is None or ring.epoch == self._epoch_logged:
            return
        self._epoch_logged = ring.epoch
        table = self.state.routing.table
        log.info(
            "ring epoch %d: %d members%s, %d slots here",
            ring.epoch,
            len(ring.members),
            f", {len(ring.pending)} pending" if ring.pending else "",
            sum(table.mine),
        )

    def _log_assessment(self) -> None:
        a = self.cluster.assessment
        if a is None:
            return
        key = (a.coordinator, a.term, a.majority)
        if key == self._logged:
            return
        self._logged = key
        log.info(
            "coordinator: %s (term %d%s)",
            a.coordinator[:12] if a.coordinator else "none",
            a.term,
            "" if a.majority else "; no majority of members alive, it may not act",
        )


def slot_figures(service: SlotService) -> dict[str, int | str]:
    """Figures for CLUSTER INFO (``keycafe_<name>``): the ring, the coordinator
    as this node sees it, and the hand-off's counters."""
    cluster = service.cluster
    ring = cluster.ring
    a = cluster.assessment
    return {
        "ring_epoch": ring.epoch if ring else 0,
        "ring_term": ring.term if ring else 0,
        "ring_members": len(ring.members) if ring else 0,
        "coordinator": (a.coordinator or "") if a else "",
        "coordinator_term": a.term if a else 0,
        "coordinator_majority": int(a.majority) if a else 0,
        **handoff_figures(cluster.handoff),
        **replication_figures(cluster.replication),
        **antientropy_figures(cluster.antientropy),
    }


class _Durability:
    """Replies to replicated writes wait here (``keycafe.server.probe.
    Durability``); which are released, and with what verdict, is the cluster
    core's to say (``Replication.released``): this only wakes their tasks.
    The slot service calls ``notify`` after anything that may advance it."""

    def __init__(self, cluster: ClusterNode, send: Callable[[], None] = lambda: None) -> None:
        self.replication = cluster.replication
        self._send = send
        self.on_release: Callable[[Hashable, bool], None] | None = None
        self.timeout = DURABLE_TIMEOUT
        self.batching = False

    @property
    def settled(self) -> int:
        return self.replication.settled

    def settle(self) -> int:
        return self.replication.settle()

    def hold(self, token: Hashable, first: int, last: int, read: int = 0) -> None:
        self.replication.wait(token, first, last, read)

    def cancel(self, token: Hashable) -> None:
        self.replication.cancel(token)

    def flush(self) -> None:
        self._send()

    async def wait(self, first: int, last: int, read: int = 0) -> bool:
        waiter = _Waiter()
        self.replication.wait(waiter, first, last, read)
        self.notify()
        # A deadline, so that a write nobody can make durable (no majority
        # left to declare its replica dead) fails rather than hangs.
        with trio.move_on_after(self.timeout):
            await waiter.event.wait()
        if not waiter.event.is_set():
            self.replication.cancel(waiter)
            return False
        return waiter.ok

    def notify(self) -> None:
        for token, ok in self.replication.released():
            if type(token) is _Waiter:
                token.ok = ok
                token.event.set()
            else:
                assert self.on_release is not None
                self.on_release(token, ok)


@attrs.define(eq=False)
class _Waiter:
    ok: bool = True
    event: trio.Event = attrs.Factory(trio.Event)


__all__ = ["SlotService", "slot_figures"]
