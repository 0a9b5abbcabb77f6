"""Slot ownership on a node: the ring's table for routing, and slot streaming.

The gossip core holds the ring the coordinator published; this service turns
it into the slot table clients are routed by, and moves data when the ring's
members change (``keycafe.cluster.coordinator`` has the two-step protocol):

- On a proposal (a ring with ``pending`` members) every member involved streams
  the slots it holds that the change gives to another node, in batches over the
  peer links, and from then on also forwards every write it makes to those
  slots (the store's ``watched`` slots). When every transfer is acknowledged it
  announces ``READY_KEY`` for that epoch. A joiner has nothing to send and is
  ready at once; a leaver sends everything.
- On the change itself (new ``members``) each node routes by the new table;
  a previous owner queues the last forwards, then drops the slots it no longer
  owns. A new owner that hears of the change late answers ``-TRYAGAIN`` for a
  slot it has received but does not own yet, rather than redirecting back.

Delivery on a link is at most once; a transfer is complete only when the
receiver acknowledges it with the number of batches it got, so a broken
connection makes the sender repeat it (merging is idempotent: last writer
wins by stamp). Forwards are not acknowledged one by one: a leaver waits for a
final empty transfer's acknowledgement, which follows them on the same link.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Iterable
from functools import partial
from typing import Any, Final

import attrs
import trio
import trio.lowlevel

from keycafe.cluster import coordinator, frames
from keycafe.cluster.frames import Frame
from keycafe.cluster.ring import RingConfig, outgoing, slot_owners
from keycafe.cluster.ring_record import Ring
from keycafe.cluster.slot_table import NodeAddr, SlotTable
from keycafe.gossip.messages import Address, MemberInfo, State
from keycafe.node.gossip import GossipService
from keycafe.node.links import PeerLinks
from keycafe.server.routing import Routing
from keycafe.server.state import ServerState
from keycafe.store.engine import Exported
from keycafe.store.keyslot import SLOT_COUNT

log = logging.getLogger("keycafe.slots")

BATCH_ENTRIES: Final = 512  # entries per frame (well under the frame limit for small values)
BATCH_BYTES: Final = 1 << 20  # ... or about this many bytes of keys and values
ACK_TIMEOUT: Final = 10.0  # a transfer not acknowledged in this long is sent again
# A slot handed over waits at most this long for the new owner to acknowledge
# its last forwards (a dead new owner never will; the next ring drops it).
DRAIN_TIMEOUT: Final = 10.0
RETRY_PAUSE: Final = 0.5  # seconds before sending a failed transfer again
FORWARD_PERIOD: Final = 0.002  # how often writes to moving slots are collected


@attrs.define(eq=False)
class SlotCounters:
    keys_sent: int = 0
    keys_received: int = 0
    keys_dropped: int = 0
    transfers_sent: int = 0
    transfers_retried: int = 0
    forwarded: int = 0


@attrs.define(eq=False)
class _Waiting:
    """A transfer waiting for its acknowledgement."""

    done: trio.Event = attrs.field(factory=trio.Event)
    got: int = -1  # batches the receiver says it got


def _encode(items: list[Exported]) -> list[list[Any]]:
    return [[e.key, e.value, e.expires_ms, e.stamp, e.writer] for e in items]


def _decode(raw: Any) -> list[Exported]:
    """Entries of an untrusted frame body; ``ValueError`` if malformed."""
    if type(raw) is not list:
        raise ValueError("entries must be a list")
    out = []
    for e in raw:
        if type(e) is not list or len(e) != 5:
            raise ValueError("an entry has five fields")
        key, value, expires, stamp, writer = e
        if (
            type(key) is not bytes
            or (value is not None and type(value) is not bytes)
            or type(expires) is not int
            or type(stamp) is not int
            or type(writer) is not str
            or expires < 0
            or stamp < 0
        ):
            raise ValueError("bad entry")
        out.append(Exported(key=key, value=value, expires_ms=expires, stamp=stamp, writer=writer))
    return out


def _batches(items: list[Exported]) -> Iterable[list[Exported]]:
    batch: list[Exported] = []
    size = 0
    for item in items:
        batch.append(item)
        size += len(item.key) + len(item.value or b"")
        if len(batch) >= BATCH_ENTRIES or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class SlotService:
    """Routing table and slot streaming for one node."""

    def __init__(
        self,
        state: ServerState,
        gossip: GossipService,
        links: PeerLinks,
        ring_config: RingConfig | None = None,
    ) -> None:
        self.state = state
        self.store = state.store
        self.gossip = gossip
        self.links = links
        self.ring_config = ring_config or RingConfig()
        self.me = state.config.me.node_id
        self.counters = SlotCounters()
        self.ring: Ring | None = None  # the last ring acted on
        self._owners: dict[tuple[str, ...], tuple[tuple[str, ...], ...]] = {}
        # Outgoing: who receives the writes to each watched slot.
        self.subscribers: dict[int, set[str]] = {}
        self._outbox: deque[tuple[str, int, Any]] = deque()
        self._outbox_ready = trio.Event()
        self._sending = False  # the outbox task holds a popped frame
        self._outbox_empty = trio.Event()  # set each time the outbox is sent in full
        self._ids = itertools.count(1)
        self._acks: dict[int, _Waiting] = {}
        # Incoming transfers: batches received so far, by (sender, transfer id).
        self._inbound: dict[tuple[str, int], int] = {}
        self._push_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._changed = trio.Event()
        self._moving = trio.Event()  # set when slots start moving out
        # Slots handed over, kept (answering TRYAGAIN) until the new owner has
        # acknowledged the writes forwarded for them; ``_drained_some`` is set
        # each time some are let go.
        self._draining: set[int] = set()
        self._drained_some = trio.Event()
        links.on_frame = self.on_frame
        gossip.after_flush = self.check

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._send_outbox)
            nursery.start_soon(self._forward_loop)
            task_status.started()
            self.check()
            await trio.sleep_forever()

    # -- following the ring ------------------------------------------------------------

    def owners(self, members: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
        owners = self._owners.get(members)
        if owners is None:
            if len(self._owners) > 8:
                self._owners.clear()
            owners = self._owners[members] = slot_owners(members, self.ring_config)
        return owners

    def _member(self, node: str) -> MemberInfo | None:
        m = self.gossip.core.members.get(node)
        return m.info if m is not None else None

    def _addr(self, node: str) -> Address | None:
        m = self._member(node)
        return m.addr if m is not None else None

    def check(self, members_changed: bool = True) -> None:
        """Act on a ring the gossip core adopted since the last look (and on
        members that died, when ``members_changed``)."""
        ring = self.gossip.ring
        if ring is not None and ring is self.ring:
            if members_changed:
                self._mark_down(ring)
                self._forget_departed()
            return
        if ring is None or self._nursery is None:
            return
        previous = self.ring
        if (previous is None or previous.members != ring.members) and not self._adopt(ring):
            return  # a member we know nothing about yet: look again later
        log.debug(
            "ring %d.%d: %d members, %d pending",
            ring.term,
            ring.epoch,
            len(ring.members),
            len(ring.pending),
        )
        self._forget_departed()
        self._mark_down(ring)
        self.ring = ring
        self._changed.set()
        self._changed = trio.Event()
        if self._push_scope is not None:
            self._push_scope.cancel()
            self._push_scope = None
        if ring.pending and self.me in (*ring.members, *ring.pending):
            self._push_scope = trio.CancelScope()
            self._nursery.start_soon(self._carry_out, ring, self._push_scope)

    def _forget_departed(self) -> None:
        """Stop reconnecting to peers that died or left (or were reaped)."""
        members = self.gossip.core.members
        for peer in self.links.peers():
            m = members.get(peer)
            if m is None or m.info.state in (State.DEAD, State.LEFT):
                self.links.forget(peer)

    def _mark_down(self, ring: Ring) -> None:
        """Members of the ring this node knows are dead get CLUSTERDOWN for
        their slots instead of redirects, until the ring drops them."""
        members = self.gossip.core.members
        down = frozenset(
            n for n in ring.members if (m := members.get(n)) is None or m.info.state == State.DEAD
        )
        routing = self.state.routing
        if down != routing.table.down:
            self.state.routing = routing.with_table(attrs.evolve(routing.table, down=down))

    def _adopt(self, ring: Ring) -> bool:
        """Route by ``ring``'s members; drop the slots handed over."""
        me = self.state.config.me
        nodes: dict[str, NodeAddr] = {me.node_id: me}
        for node in ring.members:
            if node == me.node_id:
                continue
            m = self._member(node)
            if m is None:
                return False
            nodes[node] = NodeAddr(
                node_id=node,
                host=m.client_addr[0],
                port=m.client_addr[1],
                cluster_port=m.addr[1],
            )
        table = SlotTable(
            epoch=ring.epoch, my_id=self.me, nodes=nodes, owners=self.owners(ring.members)
        )
        # What was written to moving slots until now goes out first. Those
        # slots (the ones with a destination) stay here, answering TRYAGAIN,
        # until their new owner has acknowledged it all: a client redirected
        # there at once could otherwise miss a write it just made here.
        self._collect_forwards()
        handing: dict[str, list[int]] = {}
        for slot, dests in self.subscribers.items():
            if not table.mine[slot]:
                for dest in dests:
                    handing.setdefault(dest, []).append(slot)
        self._draining.update(slot for slots in handing.values() for slot in slots)
        # Every other slot not ours now goes: those of a proposal that was
        # replaced before it took effect, say (a stale copy could resurrect
        # deleted keys if the slot came back after its tombstones were collected).
        dropped = 0
        store = self.store
        for slot in range(SLOT_COUNT):
            if (
                not table.mine[slot]
                and slot not in self._draining
                and (store.slots[slot] or store.tombstones[slot])
            ):
                dropped += store.drop_slot(slot)
        self._unwatch()
        self.state.routing = Routing.create(table, moving=self._draining)
        self.counters.keys_dropped += dropped
        if handing and self._nursery is not None:
            self._nursery.start_soon(self._drain, handing)
        log.info(
            "ring epoch %d: %d members, %d slots here%s",
            ring.epoch,
            len(ring.members),
            sum(table.mine),
            f", dropped {dropped} keys it no longer owns" if dropped else "",
        )
        return True

    # -- a proposal: stream out what it moves ----------------------------------------------

    async def _carry_out(self, ring: Ring, scope: trio.CancelScope) -> None:
        with scope:
            plan = outgoing(self.owners(ring.members), self.owners(ring.pending), self.me)
            self._unwatch()
            for dest, slots in plan.items():
                for slot in slots:
                    self.subscribers.setdefault(slot, set()).add(dest)
                    self.store.watched[slot] = 1
            self.store.dirty.clear()  # what was written before is in the transfer
            self._moving.set()
            async with trio.open_nursery() as nursery:
                for dest, slots in plan.items():
                    nursery.start_soon(self._transfer, dest, slots)
            if self.ring is not ring:
                # Replaced meanwhile. With nothing to send there was no
                # checkpoint for the cancellation to land on, and announcing
                # now would overwrite the newer proposal's readiness with this
                # epoch's, leaving the coordinator waiting for ever.
                return
            self.gossip.announce(coordinator.READY_KEY, ring.epoch)
            log.debug("epoch %d: ready (streamed what the proposal moves)", ring.epoch)
            if plan:
                sent = sum(map(len, plan.values()))
                log.info("epoch %d: handed %d slots to %d nodes", ring.epoch, sent, len(plan))

    async def _transfer(self, dest: str, slots: list[int], *, barrier: bool = False) -> None:
        """Send ``slots`` to ``dest`` until it acknowledges all of them (with
        ``barrier``, an empty transfer that only shows earlier frames arrived)."""
        while True:
            addr = self._addr(dest)
            if addr is None and barrier:
                return  # it is gone: nothing to wait for
            if addr is None:
                # Not heard of yet (a newcomer whose news has not reached us) or
                # reaped: wait. If it is gone, the coordinator's next proposal
                # cancels this; never report ready without its acknowledgement.
                await trio.sleep(RETRY_PAUSE)
                continue
            tid = next(self._ids)
            waiting = self._acks[tid] = _Waiting()
            sent_batches = 0
            try:
                for slot in slots:
                    keys = self.store.slot_keys(slot)
                    for batch in _batches(self.store.export(slot, keys)):
                        await self.links.send(dest, addr, frames.BATCH, [tid, slot, _encode(batch)])
                        sent_batches += 1
                        self.counters.keys_sent += len(batch)
                    await trio.lowlevel.checkpoint()  # exporting is synchronous: let clients in
                await self.links.send(dest, addr, frames.DONE, [tid, sent_batches, slots])
                self.counters.transfers_sent += 1
                with trio.move_on_after(ACK_TIMEOUT):
                    await waiting.done.wait()
            finally:
                self._acks.pop(tid, None)
            if waiting.got == sent_batches:
                return
            self.counters.transfers_retried += 1
            log.info("transfer to %s incomplete; sending it again", dest[:12])
            await trio.sleep(RETRY_PAUSE)

    # -- forwarding writes to moving slots --------------------------------------------

    def _unwatch(self) -> None:
        """No slot is moving out any more (a new plan sets its own)."""
        self.store.watched[:] = bytes(SLOT_COUNT)
        self.subscribers.clear()

    async def _drain(self, handing: dict[str, list[int]]) -> None:
        """Let go of handed-over slots once each new owner has acknowledged an
        empty transfer sent behind their last forwards (frames on a link
        arrive in order), or after ``DRAIN_TIMEOUT``."""
        await self._outbox_sent()
        with trio.move_on_after(DRAIN_TIMEOUT) as waited:
            async with trio.open_nursery() as nursery:
                for dest in handing:
                    nursery.start_soon(partial(self._transfer, dest, [], barrier=True))
        if waited.cancelled_caught:
            log.warning("new owners did not confirm the last forwarded writes; letting go")
        table = self.state.routing.table
        for slots in handing.values():
            self.state.routing = self.state.routing.without_moving(slots)
            for slot in slots:
                self._draining.discard(slot)
                if not table.mine[slot]:  # a later ring may have given it back
                    self.counters.keys_dropped += self.store.drop_slot(slot)
        self._drained_some.set()
        self._drained_some = trio.Event()

    async def _outbox_sent(self) -> None:
        """Wait until every frame queued so far is handed to the links."""
        while self._outbox or self._sending:
            self._outbox_empty = trio.Event()
            self._outbox_ready.set()
            await self._outbox_empty.wait()

    def _collect_forwards(self) -> None:
        dirty, self.store.dirty = self.store.dirty, []
        if not dirty:
            return
        by_slot: dict[int, set[bytes]] = {}
        for slot, key in dirty:
            by_slot.setdefault(slot, set()).add(key)
        for slot, keys in by_slot.items():
            subs = self.subscribers.get(slot)
            if not subs:
                continue
            items = self.store.export(slot, keys)
            for batch in _batches(items):
                body = [slot, _encode(batch)]
                for dest in subs:
                    self._outbox.append((dest, frames.FORWARD, body))
                    self.counters.forwarded += len(batch)
        self._outbox_ready.set()

    async def _forward_loop(self) -> None:
        while True:
            if not self.subscribers:
                # Nothing is moving: sleep until something is (no idle wake-ups).
                self._moving = trio.Event()
                await self._moving.wait()
            await trio.sleep(FORWARD_PERIOD)
            if self.store.dirty:
                self._collect_forwards()

    async def _send_outbox(self) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready = trio.Event()
            while self._outbox:
                dest, kind, body = self._outbox.popleft()
                addr = self._addr(dest)
                if addr is not None:
                    self._sending = True
                    try:
                        await self.links.send(dest, addr, kind, body)
                    finally:
                        self._sending = False
            self._outbox_empty.set()

    # -- frames from peers -----------------------------------------------------------

    def on_frame(self, peer: str, frame: Frame) -> None:
        try:
            self._on_frame(peer, frame)
        except (ValueError, TypeError, IndexError) as exc:
            self.links.counters.bad_frames += 1
            log.debug("bad %d frame from %s: %s", frame.kind, peer[:12], exc)

    def _on_frame(self, peer: str, frame: Frame) -> None:
        body = frame.body
        now = self.state.now_ms
        if frame.kind == frames.BATCH:
            tid, slot, raw = body
            self._check_slot(slot)
            items = _decode(raw)
            self.store.merge(slot, items, now)
            self.counters.keys_received += len(items)
            key = (peer, int(tid))
            self._inbound[key] = self._inbound.get(key, 0) + 1
        elif frame.kind == frames.DONE:
            tid, batches, slots = body
            got = self._inbound.pop((peer, int(tid)), 0)
            if got == batches:
                for slot in slots:
                    self._check_slot(slot)
                self.state.routing = self.state.routing.with_moving(slots)
            self._outbox.append((peer, frames.ACK, [tid, got]))
            self._outbox_ready.set()
        elif frame.kind == frames.ACK:
            tid, got = body
            waiting = self._acks.get(int(tid))
            if waiting is not None:
                waiting.got = int(got)
                waiting.done.set()
        elif frame.kind == frames.FORWARD:
            slot, raw = body
            self._check_slot(slot)
            self.store.merge(slot, _decode(raw), now)

    @staticmethod
    def _check_slot(slot: object) -> None:
        if type(slot) is not int or not 0 <= slot < SLOT_COUNT:
            raise ValueError(f"bad slot {slot!r}")

    # -- a graceful leave ----------------------------------------------------------------

    async def leave(self) -> None:
        """Ask to leave the ring, wait until the change that hands our slots
        over is in force, then until the last forwards are delivered."""
        ring = self.ring
        if ring is None or self.me not in ring.members or len(ring.members) == 1:
            return
        log.info("leaving: handing this node's slots over")
        self.gossip.announce(coordinator.LEAVING_KEY, 1)
        while self.ring is None or self.me in self.ring.members:
            await self._changed.wait()
        while self._draining:  # the new owners confirm our last forwards
            await self._drained_some.wait()
        log.info("left the ring; slots handed over")


def slot_figures(service: SlotService) -> dict[str, int | str]:
    """Figures for CLUSTER INFO (``keycafe_<name>``)."""
    c = service.counters
    ring = service.ring
    return {
        "ring_pending": len(ring.pending) if ring is not None else 0,
        "slots_keys_sent": c.keys_sent,
        "slots_keys_received": c.keys_received,
        "slots_keys_dropped": c.keys_dropped,
        "slots_transfers_sent": c.transfers_sent,
        "slots_transfers_retried": c.transfers_retried,
        "slots_writes_forwarded": c.forwarded,
    }
