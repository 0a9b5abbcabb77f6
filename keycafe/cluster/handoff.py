"""Slot hand-off: the sans-I/O state machine that moves data when the ring changes.

The coordinator changes the ring in two steps (``keycafe.cluster.coordinator``):
a *proposal* (a ring whose ``pending`` set differs from its ``members``), then
the *change* (the next epoch, with ``members = pending``). This core is one
node's part in both, in the shape of the gossip core::

    core.set_ring(ring, nodes, now)            # a ring adopted (nodes: addresses)
    core.set_down(down, now)                   # ring members known dead
    core.receive_frame(peer, frame, now, wall_ms)
    core.link_broken(peer, now)                # frames queued to peer may be lost
    core.frames_to_send(now, limit) -> list[Outgoing]
    core.handle_timer(now); core.get_timer()
    core.next_event() -> Ready | RoutingChanged | Left | None
    core.update_nodes(nodes)                   # addresses of members learnt late
    core.leave(now)

On a proposal, each member streams the slots it is primary of that the change
gives to another node (``BATCH`` frames, then ``DONE`` with the number of
batches), watches them so every later write to them is forwarded
(``FORWARD``), and reports ``Ready(term, epoch)`` once every transfer is
acknowledged (``ACK`` with the batches received: delivery on a link is at
most once, so a short count or a silence sends the transfer again; merging
is idempotent, last writer wins by stamp). On the change, the old owner keeps
each handed-over slot, answering TRYAGAIN, until the new owner acknowledges a
barrier sent behind the last forwards (frames on a link arrive in order), or
is known dead; never on a timeout. Links lose frames when a connection
breaks, and the sender may learn of it only after the next frames went out on
a new connection: so forwards to a peer are counted in *generations* (this
process's boot id and a number bumped whenever forwards to that peer may
have been lost), every ``FORWARD`` names its generation, every ``DONE``
states its generation and how many forwards of it went before, and a
receiver that got fewer confirms nothing and says so in its ``ACK``; the
sender then starts a new generation and sends every slot it forwards to
that peer again, whole. The new owner answers TRYAGAIN for what it
gained until that barrier comes: neither side serves a slot while the other
may still hold a write it lacks. A receiver's ACK names the slots it did not
keep (it moved on), and the sender sends those whole to their owner.

Every frame about a proposal carries its version (term, epoch). A receiver
keeps what it received for a slot it gains in its ring's ``pending`` set, or
for a proposal newer than any ring it has heard of (the link is faster than
gossip, and a node can skip a ring); everything else not owned is dropped, so
a withdrawn proposal leaves no stale copies behind. Time comes in as ``now``
(seconds, for timers) and ``wall_ms`` (for the store's clock).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from itertools import compress
from typing import Any, Final, Protocol

import attrs

from keycafe.cluster import frames
from keycafe.cluster.frames import Frame
from keycafe.cluster.ring import outgoing, without
from keycafe.cluster.slot_table import NodeAddr, SlotTable, owner_mask, primary_mask
from keycafe.store.engine import MOVING, Exported, Store
from keycafe.store.keyslot import SLOT_COUNT

Owners = tuple[tuple[str, ...], ...]
Version = tuple[int, int]  # (term, epoch) of a ring

BATCH_ENTRIES: Final = 512  # entries per frame (well under the frame limit for small values)
BATCH_BYTES: Final = 1 << 20  # ... or about this many bytes of keys and values
ENTRY_OVERHEAD: Final = 64  # what an entry's fields besides key and value cost, at most
ACK_TIMEOUT: Final = 10.0  # a transfer not acknowledged in this long is sent again
RETRY_PAUSE: Final = 0.5  # seconds before sending a failed transfer again
# A new owner answers TRYAGAIN for a slot it gained until the old owner's
# barrier arrives (the old owner may still be acknowledging writes under the
# ring before), or the old owner is known dead, or at most this long: a
# bound on staleness, not on durability (late writes still arrive as forwards).
AWAIT_TIMEOUT: Final = 10.0
FORWARD_PERIOD: Final = 0.002  # how often writes to moving slots are collected
# Forward generations counted per sender (older ones' DONEs are taken as short)
# and the longest generation name taken (a boot id, a colon, a number).
KEEP_GENERATIONS: Final = 4
MAX_GENERATION: Final = 96
# Largest term or epoch accepted in a frame: far beyond any honest value, and
# small enough that every arithmetic on it stays in msgpack's int64.
MAX_VERSION: Final = (1 << 62) - 1
# Longest writer id accepted in an entry: the store keeps every writer it
# meets in a table, so a peer must not be able to fill it with long strings.
MAX_WRITER: Final = 64
# Transfers in progress towards this node that it keeps count of: peers choose
# transfer ids, so past this the oldest receipt is forgotten (its sender
# repeats the transfer when the count in its ACK comes back short).
MAX_INBOUND: Final = 1024


class RingLike(Protocol):
    """What this core reads of a ring (``keycafe.cluster``'s ring record)."""

    @property
    def epoch(self) -> int: ...
    @property
    def term(self) -> int: ...
    @property
    def members(self) -> tuple[str, ...]: ...
    @property
    def pending(self) -> tuple[str, ...]: ...
    @property
    def down(self) -> tuple[str, ...]: ...
    def newest_copies(self, owners: tuple[str, ...]) -> frozenset[str]: ...


@attrs.frozen(kw_only=True)
class Outgoing:
    peer: str
    kind: int
    body: Any
    # Dropped, not waited for, when the peer's link queue is full.
    droppable: bool = False


def take_frames(queue: deque[Outgoing], limit: int, busy: Collection[str]) -> list[Outgoing]:
    """Up to ``limit`` frames from ``queue``, none for a ``busy`` peer (one whose
    link is not taking frames: they stay queued, in order, for later)."""
    out: list[Outgoing] = []
    if not busy:
        while queue and len(out) < limit:
            out.append(queue.popleft())
        return out
    kept: list[Outgoing] = []
    while queue and len(out) < limit:
        o = queue.popleft()
        (kept if o.peer in busy else out).append(o)
    queue.extendleft(reversed(kept))
    return out


@attrs.frozen(kw_only=True)
class Ready:
    """This node streamed what the proposal ``(term, epoch)`` moves: say so.
    The term matters: a new coordinator may publish another proposal at the
    same epoch, and readiness for the old one must not count for it."""

    term: int
    epoch: int


@attrs.frozen(kw_only=True)
class RoutingChanged:
    """Route clients by ``table``; answer TRYAGAIN where ``moving`` is 1."""

    table: SlotTable
    moving: bytes


@attrs.frozen(kw_only=True)
class Left:
    """A leave is complete: the ring no longer has us and every drain is done."""


@attrs.frozen(kw_only=True)
class Confirmed:
    """Replica ``peer`` acknowledged a barrier behind everything streamed and
    forwarded to it for ``slots`` (we lead them): its copies are whole now."""

    peer: str
    slots: tuple[int, ...]


@attrs.frozen(kw_only=True)
class Unconfirmed:
    """Replica ``peer`` holds copies of ``slots`` (we lead them) that a barrier
    has yet to confirm: writes to them must not count as held by it."""

    peer: str
    slots: tuple[int, ...]


Event = Ready | RoutingChanged | Left | Confirmed | Unconfirmed


@attrs.define(eq=False)
class HandoffCounters:
    keys_sent: int = 0
    keys_received: int = 0
    keys_dropped: int = 0
    transfers_sent: int = 0
    transfers_retried: int = 0
    forwarded: int = 0
    bad_frames: int = 0
    stale_frames: int = 0  # about a slot this node neither owns nor gains


@attrs.define(eq=False)
class _Transfer:
    """Slots on their way to one peer, sent until it acknowledges all of them."""

    peer: str
    slots: list[int]
    version: Version
    # A drain's barrier: no data, it only shows that the forwards sent before
    # it arrived; after a broken link it carries ``slots`` whole (``full``).
    barrier: bool = False
    # A new replica's barrier (we stay the slots' primary): nothing is kept
    # back for it, and its ACK confirms the replica's copies.
    confirm: bool = False
    full: bool = True
    breaks: int = 0  # the peer's link breaks counted when this attempt started
    tid: int = 0
    sent: int = 0  # batches of the current attempt
    batches: Iterator[tuple[int, list[Exported]]] | None = None
    waiting_until: float | None = None  # awaiting the ACK until then
    retry_at: float | None = None  # paused until then before the next attempt
    done: bool = False


@attrs.define(eq=False)
class _Inbound:
    version: Version
    batches: int = 0


def encode_entries(items: list[Exported]) -> list[list[Any]]:
    return [[e.key, e.value, e.expires_ms, e.stamp, e.writer] for e in items]


def decode_entries_untrusted(raw: Any) -> list[Exported]:
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
            or len(writer) > MAX_WRITER  # node ids are 40 characters
            or not 0 <= expires < 1 << 63
            or not 0 <= stamp < 1 << 64
        ):
            raise ValueError("bad entry")
        out.append(Exported(key=key, value=value, expires_ms=expires, stamp=stamp, writer=writer))
    return out


def batches(items: Iterable[Exported]) -> Iterator[list[Exported]]:
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


def _slot(value: object) -> int:
    if type(value) is not int or not 0 <= value < SLOT_COUNT:
        raise ValueError(f"bad slot {value!r}")
    return value


def _generation(value: object) -> str:
    if type(value) is not str or len(value) > MAX_GENERATION:
        raise ValueError("bad forward generation")
    return value


def _count(value: object) -> int:
    if type(value) is not int or not 0 <= value <= MAX_VERSION:
        raise ValueError(f"bad number {value!r}")
    return value


def _version(term: object, epoch: object) -> Version:
    return (_count(term), _count(epoch))


class Handoff:
    """One node's slot hand-off: routing table, transfers, forwards, drains."""

    def __init__(
        self,
        *,
        me: NodeAddr,
        store: Store,
        owners: Callable[[tuple[str, ...]], Owners],
        boot: str = "",
    ) -> None:
        self.me = me
        self.boot = boot  # this process's: a restart counts forwards anew
        self.node = me.node_id
        self.store = store
        self.owners = owners  # the ring's slot table for a member set (cached by the caller)
        self.counters = HandoffCounters()
        self.ring: RingLike | None = None
        self.table = SlotTable.unassigned(me)
        self._pending_mine = bytes(SLOT_COUNT)  # 1: primary in the ring's pending set
        # 1 where this node holds a copy (primary or replica): in the ring in
        # force, and in its pending set.
        self._held = bytes(SLOT_COUNT)
        self._pending_held = bytes(SLOT_COUNT)
        self._down: frozenset[str] = frozenset()
        self._unknown: frozenset[str] = frozenset()  # ring members with no address
        self._ids = itertools.count(1)
        self._transfers: list[_Transfer] = []  # the proposal's and the drains' transfers
        self._ready_for: Version | None = None  # the proposal Ready was reported for
        # Outgoing: who receives the writes to each watched slot.
        self._subscribers: dict[int, set[str]] = {}
        self._routed: tuple[SlotTable, bytes] | None = None  # the last RoutingChanged
        self._forward_at: float | None = None
        # Handed-over slots kept (TRYAGAIN) until their new owner confirms:
        # never let go on a timeout, only on an acknowledgement or a death.
        self._draining: dict[int, str] = {}
        # Links that broke since a whole transfer to that peer was last
        # acknowledged: forwards may be missing there, so its drain sends
        # everything again instead of a bare barrier.
        self._breaks: dict[str, int] = {}
        self._whole: dict[str, int] = {}
        # Slots gained in the change, awaiting the old owner's barrier: slot ->
        # (old owner, deadline). Slots whose barrier came: slot -> its version.
        self._awaiting: dict[int, tuple[str, float]] = {}
        self._confirmed: dict[int, Version] = {}
        # Data from a peer for slots this node does not keep: reported in the
        # next ACK to it, so it does not let go of them.
        self._refused: dict[str, set[int]] = {}
        # Incoming: batches received per (sender, transfer id); slots whose
        # transfer completed, with the proposal version it belonged to.
        self._inbound: dict[tuple[str, int], _Inbound] = {}
        self._received: dict[int, Version] = {}
        # Slots with data merged from a transfer whose DONE has not come yet,
        # and the newest proposal it was for: kept through ring changes until
        # then (see ``_drop``).
        self._incoming: dict[int, Version] = {}
        self._out: deque[Outgoing] = deque()
        # Per peer: the generation of forwards to it, and how many of that
        # generation were sent; from it: how many of each of its last few
        # generations came. A DONE states the first, its receiver compares.
        self._generation: dict[str, int] = {}
        self._forwards_sent: dict[str, int] = {}
        self._forwards_got: dict[str, dict[str, int]] = {}
        self._events: deque[Event] = deque()
        self.leaving = False
        self._left = False

    # -- inputs ---------------------------------------------------------------------------

    def set_ring(self, ring: RingLike, nodes: Mapping[str, NodeAddr], now: float) -> bool:
        """Adopt ``ring`` (the caller hands only rings newer than the last);
        ``nodes`` has the address of each member gossip knows. A member it does
        not (dead and forgotten, or news not here yet) is routed as down until
        ``update_nodes`` brings its address: waiting for it instead could wait
        for ever, and hold up the whole cluster's next change."""
        previous = self.ring
        self.ring = ring
        if previous is None or (previous.members, previous.down) != (ring.members, ring.down):
            self._adopt_members(ring, previous, nodes, now)
        pending = self.owners(ring.pending) if ring.pending else None
        self._pending_mine = (
            primary_mask(pending, self.node) if pending is not None else bytes(SLOT_COUNT)
        )
        self._pending_held = (
            owner_mask(pending, self.node) if pending is not None else bytes(SLOT_COUNT)
        )
        # Receipts of proposals this ring supersedes are history now.
        version = (ring.term, ring.epoch)
        self._inbound = {k: v for k, v in self._inbound.items() if v.version >= version}
        self._drop_unowned()
        self._plan(ring, pending, now)
        self._route()
        self._check_left()
        return True

    def set_down(self, down: frozenset[str], now: float) -> None:
        """Ring members this node knows are dead: their slots get CLUSTERDOWN
        rather than a redirect, and drains waiting on them end."""
        if down == self._down:
            return
        self._down = down
        for peer in down:
            if peer in self._draining.values():
                self._release(peer, set())
        for slot, (owner, _) in list(self._awaiting.items()):
            if owner in down:
                del self._awaiting[slot]
        self._route()

    def link_broken(self, peer: str, now: float) -> None:
        """Frames to ``peer`` may have been lost (forwards are not acknowledged
        one by one): send its transfers again, whole, and the slots it was
        given by a transfer that already finished too."""
        self._out = deque(o for o in self._out if o.peer != peer)
        self._forwards_lost(peer, now)

    def _forwards_lost(self, peer: str, now: float) -> None:
        """Forwards to ``peer`` went missing: every slot it is sent, or was
        given and still hears of, goes again whole (its entries as they are
        now carry every write a lost forward did), and the forwards after
        this are counted as a new generation."""
        self._generation[peer] = self._generation.get(peer, 0) + 1
        self._forwards_sent[peer] = 0
        self._breaks[peer] = self._breaks.get(peer, 0) + 1
        active = set()
        for t in self._transfers:
            if t.peer == peer and not t.done:
                t.full = True
                active.update(t.slots)
                self._restart(t, now)
        subscribed = self._subscribers.items()
        again = sorted(s for s, subs in subscribed if peer in subs and s not in active)
        if again and self.ring is not None:
            t = _Transfer(peer=peer, slots=again, version=(self.ring.term, self.ring.epoch))
            self._transfers.append(t)
            self._restart(t, now)

    def leave(self, now: float) -> bool:
        """Start a graceful leave; False if there is nothing to hand over."""
        ring = self.ring
        if ring is None or self.node not in ring.members or len(ring.members) == 1:
            return False
        self.leaving = True
        return True

    def receive_frame(self, peer: str, frame: Frame, now: float, wall_ms: int) -> None:
        """A frame from a peer link; a malformed one is counted and dropped."""
        try:
            self._on_frame(peer, frame, now, wall_ms)
        except (ValueError, TypeError, IndexError):
            self.counters.bad_frames += 1

    # -- outputs --------------------------------------------------------------------------

    def frames_to_send(
        self, now: float, limit: int = 64, busy: Collection[str] = ()
    ) -> list[Outgoing]:
        """Up to ``limit`` frames, none for a ``busy`` peer; slot data is
        exported lazily, a batch at a time, as the peer's link takes it."""
        out = take_frames(self._out, limit, busy)
        for t in self._transfers:
            if t.peer in busy:
                continue
            while len(out) < limit and t.batches is not None:
                item = next(t.batches, None)
                if item is None:
                    t.batches = None
                    t.waiting_until = now + ACK_TIMEOUT
                    # Every forward to this peer is ahead of it: ``_out`` goes first.
                    forwards = self._forwards_sent.get(t.peer, 0)
                    generation = self._generation_of(t.peer)
                    body = [t.tid, t.version[0], t.version[1], t.sent, t.slots]
                    body += [forwards, generation]
                    out.append(Outgoing(peer=t.peer, kind=frames.DONE, body=body))
                    self.counters.transfers_sent += 1
                    break
                slot, batch = item
                body = [t.tid, t.version[0], t.version[1], slot, encode_entries(batch)]
                out.append(Outgoing(peer=t.peer, kind=frames.BATCH, body=body))
                t.sent += 1
                self.counters.keys_sent += len(batch)
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        times = [t.retry_at for t in self._transfers if t.retry_at is not None]
        times += [t.waiting_until for t in self._transfers if t.waiting_until is not None]
        times += [deadline for _, deadline in self._awaiting.values()]
        if self._forward_at is not None and self.store.dirty:
            # Only when a write is waiting: an idle node moving slots must not
            # wake every FORWARD_PERIOD (the store's on_dirty wakes the shell).
            times.append(self._forward_at)
        return min(times, default=None)

    def handle_timer(self, now: float) -> None:
        if self._forward_at is not None and now >= self._forward_at and self.store.dirty:
            self.collect_forwards()
            self._forward_at = now + FORWARD_PERIOD if self._subscribers else None
        for t in self._transfers:
            if t.done:
                continue
            if t.retry_at is not None and now >= t.retry_at:
                self._start(t)
            elif t.waiting_until is not None and now >= t.waiting_until:
                self.counters.transfers_retried += 1
                t.full = True  # whatever went before it may be lost too
                self._restart(t, now)
        due = [s for s, (_, deadline) in self._awaiting.items() if now >= deadline]
        for slot in due:
            del self._awaiting[slot]
        if due:
            self._route()

    def collect_forwards(self) -> None:
        """Queue the writes made to watched slots since the last collection."""
        store = self.store
        dirty, store.dirty = store.dirty, []
        if not dirty or self.ring is None:
            return
        by_slot: dict[int, set[bytes]] = {}
        for slot, key in dirty:
            by_slot.setdefault(slot, set()).add(key)
        term, epoch = self.ring.term, self.ring.epoch
        for slot, keys in by_slot.items():
            subs = self._subscribers.get(slot)
            if not subs:
                continue
            for batch in batches(store.export(slot, keys)):
                entries = encode_entries(batch)
                for dest in sorted(subs):
                    body = [term, epoch, slot, entries, self._generation_of(dest)]
                    self._out.append(Outgoing(peer=dest, kind=frames.FORWARD, body=body))
                    self._forwards_sent[dest] = self._forwards_sent.get(dest, 0) + 1
                    self.counters.forwarded += len(batch)

    def _generation_of(self, peer: str) -> str:
        return f"{self.boot}:{self._generation.get(peer, 0)}"

    # -- following the ring ---------------------------------------------------------------

    def _adopt_members(
        self,
        ring: RingLike,
        previous: RingLike | None,
        nodes: Mapping[str, NodeAddr],
        now: float,
    ) -> None:
        """Route by the new members; keep handed-over slots until drained."""
        self.table = self._table(ring, nodes)
        self._held = owner_mask(self.table.owners, self.node)
        if self.node in ring.down:
            # Slots with no live copy (every owner down) of which we were the
            # owner declared down last keep our copy, the newest there is: it
            # is served again once we are back. Our other copies are stale:
            # they go, and come back streamed.
            full = self.owners(ring.members)
            stranded = set(self._newest_copies(ring, full))
            if stranded:
                keep = bytes(o in stranded for o in full)
                both = int.from_bytes(self._held, "big") | int.from_bytes(keep, "big")
                self._held = both.to_bytes(SLOT_COUNT, "big")
        # What was written to moving slots until now goes out first, then a
        # barrier each new owner acknowledges once it has it all. Each slot goes
        # to its owner in this ring (a node that skipped a proposal may hold an
        # older plan): whole if that is not who had the proposal's transfer, or
        # if the link to it broke since it last acknowledged a whole transfer.
        self.collect_forwards()
        mine, owners = self.table.mine, self.table.owners
        version = (ring.term, ring.epoch)
        before = self._acting(previous) if previous is not None else None
        drains: dict[tuple[str, bool], set[int]] = {}
        for slot, dests in self._subscribers.items():
            owner = owners[slot][0] if owners[slot] else None
            if mine[slot] or owner is None:
                continue
            whole = owner not in dests or self._unsure(owner)
            drains.setdefault((owner, whole), set()).add(slot)
        if before is not None:
            # A replica that becomes the primary has its copy, so nothing was
            # streamed to it; it still waits for our barrier behind the last
            # writes we sent it (TRYAGAIN meanwhile), as a streamed-to one does.
            for slot in compress(range(SLOT_COUNT), primary_mask(before, self.node)):
                o = owners[slot]
                promoted = bool(o) and o[0] != self.node and o[0] in before[slot]
                if promoted and slot not in self._subscribers and slot not in self._draining:
                    drains.setdefault((o[0], False), set()).add(slot)
        if before is not None:
            # New replicas of slots we still lead: a barrier behind what we
            # streamed and forwarded them (all of it again if their link broke
            # or they were not in the plan), and their copies count only once
            # they acknowledge it.
            confirms: dict[tuple[str, bool], set[int]] = {}
            for slot, dests in self._subscribers.items():
                o = owners[slot]
                if not o or o[0] != self.node:
                    continue
                for peer in o[1:]:
                    if peer != self.node and peer not in before[slot]:
                        whole = peer not in dests or self._unsure(peer)
                        confirms.setdefault((peer, whole), set()).add(slot)
            for (peer, whole), slots in confirms.items():
                t = _Transfer(
                    peer=peer, slots=sorted(slots), version=version, confirm=True, full=whole
                )
                self._transfers.append(t)
                self._start(t)
                self._events.append(Unconfirmed(peer=peer, slots=tuple(t.slots)))
        # Slots still draining from an earlier change whose owner changed since.
        for slot, dest in list(self._draining.items()):
            owner = owners[slot][0] if owners[slot] else None
            if owner == self.node:
                del self._draining[slot]  # ours again
            elif owner is not None and owner != dest:
                drains.setdefault((owner, True), set()).add(slot)
        self._unwatch()
        for (dest, whole), slots in drains.items():
            self._drain(dest, slots, version, whole)
        # Slots we gain wait for their old owner's barrier (TRYAGAIN meanwhile).
        self._awaiting = {s: v for s, v in self._awaiting.items() if mine[s]}
        if previous is not None and before is not None:
            since = (previous.term, previous.epoch)
            for slot in compress(range(SLOT_COUNT), mine):  # ours only, found in C
                if not before[slot] or slot in self._awaiting:
                    continue
                old = before[slot][0]
                if old == self.node or old in self._down or old in ring.down:
                    continue  # nobody to wait for (a member declared down sends nothing)
                if self._confirmed.get(slot, since) > since:
                    continue  # its barrier came before we heard of the change
                self._awaiting[slot] = (old, now + AWAIT_TIMEOUT)

    def _unsure(self, peer: str) -> bool:
        """The link to ``peer`` broke since it last acknowledged a whole transfer."""
        return self._breaks.get(peer, 0) > self._whole.get(peer, 0)

    def _drain(self, dest: str, slots: set[int], version: Version, whole: bool) -> None:
        for slot in slots:
            self._draining[slot] = dest
        if dest in self._down:
            self._release(dest, set())
            return
        barrier = _Transfer(
            peer=dest, slots=sorted(slots), version=version, barrier=True, full=whole
        )
        self._transfers.append(barrier)
        self._start(barrier)

    def _drop_unowned(self) -> None:
        """Forget every slot this node neither owns, gains in the pending set,
        holds for a newer proposal, nor is draining: a stale copy could bring
        back deleted keys if the slot returned after their tombstones went."""
        ring = self.ring
        assert ring is not None
        version = (ring.term, ring.epoch)
        mine, gaining = self._held, self._pending_held
        for slot, got in list(self._received.items()):
            if got <= version and (mine[slot] or not gaining[slot]):
                del self._received[slot]  # held now, or the proposal was withdrawn
        # Data merged for this proposal or a newer one whose DONE has not come
        # yet stays: the batches travel on peer links and may come before
        # gossip brings the ring, so a member back from down may read first
        # the ring that declared it down (which drops its stale copies: not
        # these). Data for a proposal older than this ring is judged as any.
        for slot, got in list(self._incoming.items()):
            if got < version:
                del self._incoming[slot]
        if self.node in ring.down:
            # Back from down (maybe straight into the proposal that brings it
            # back): its old copies are stale, deletes made meanwhile may have
            # been collected. They go; what is streamed for the proposal stays.
            gaining = bytes(SLOT_COUNT)
        store = self.store
        live, tombs = store.slots, store.tombstones
        # Slots holding anything, neither owned nor gained: found with masks
        # in C (a Python test of all 16384 slots took ~5 ms of every ring
        # change at N=100). Masks are 0/1 per byte, so & ~ clears bytewise.
        held = _mask(map(bool, live)) | _mask(map(bool, tombs))
        kept = _mask(mine) | _mask(gaining)
        others = (held & ~kept).to_bytes(SLOT_COUNT, "big")
        dropped = 0
        for slot in compress(range(SLOT_COUNT), others):
            if slot not in self._draining and not self._streaming_in(slot):
                dropped += store.drop_slot(slot)
        self.counters.keys_dropped += dropped

    def _plan(self, ring: RingLike, pending: Owners | None, now: float) -> None:
        """Stream out what a proposal moves (a new proposal replaces the old plan)."""
        self._transfers = [t for t in self._transfers if (t.barrier or t.confirm) and not t.done]
        self._unwatch()
        if pending is None or self.node not in (*ring.members, *ring.pending):
            return
        plan = outgoing(self._sources(ring), pending, self.node)
        version = (ring.term, ring.epoch)
        for dest, slots in plan.items():
            for slot in slots:
                self._subscribers.setdefault(slot, set()).add(dest)
                self.store.watched[slot] |= MOVING
            transfer = _Transfer(peer=dest, slots=slots, version=version)
            self._transfers.append(transfer)
            self._start(transfer)
        self.store.dirty.clear()  # what was written before is in the transfers
        if self._subscribers:
            self._forward_at = now + FORWARD_PERIOD
        self._check_ready()

    def _unwatch(self) -> None:
        self.store.set_watch(MOVING, None)
        self._subscribers.clear()
        self._forward_at = None

    def _route(self) -> None:
        moving = bytearray(SLOT_COUNT)
        for slot in self._draining:
            moving[slot] = 1
        current = (self.ring.term, self.ring.epoch) if self.ring is not None else (0, 0)
        for slot, got in self._received.items():
            # Received for a proposal that makes us its primary, or one not
            # heard of yet: TRYAGAIN until the change (a copy received as a
            # replica under a known proposal is routed as usual).
            if not self.table.mine[slot] and (self._pending_mine[slot] or got > current):
                moving[slot] = 1
        for slot in self._awaiting:
            moving[slot] = 1
        table = self.table
        down = self._down | self._unknown
        if table.down != down:
            table = self.table = table.with_down(down)
        last, settled = self._routed, bytes(moving)
        if last is not None and last[0] is table and last[1] == settled:
            return  # nothing changed: no new routing for the shell to build
        self._routed = (table, settled)
        self._events.append(RoutingChanged(table=table, moving=settled))

    def _table(self, ring: RingLike, nodes: Mapping[str, NodeAddr]) -> SlotTable:
        known = {self.node: self.me, **{n: nodes[n] for n in ring.members if n in nodes}}
        self._unknown = frozenset(n for n in ring.members if n not in known)
        return SlotTable(
            epoch=ring.epoch,
            my_id=self.node,
            nodes=known,
            owners=self._acting(ring),
            down=self._down | self._unknown,
        )

    def _sources(self, ring: RingLike) -> Owners:
        """Who streams each slot for a proposal: its acting owners; for a slot
        with none (every owner down), this node if it holds one of its copies
        (it is back, with the only copy there is: it must hand it on, not
        leave the slot's new owners empty)."""
        acting = self._acting(ring)
        me = self.node
        if me not in ring.down:
            return acting
        full = self.owners(ring.members)
        # The only source: its other owners' copies are stale (they went down
        # earlier and have dropped them), so each is streamed to as well.
        mine = {o: (me,) for o in self._newest_copies(ring, full)}
        if not mine:
            return acting
        return tuple(mine.get(f, a) for f, a in zip(full, acting, strict=True))

    def _newest_copies(self, ring: RingLike, full: Owners) -> list[tuple[str, ...]]:
        """Owner lists of slots whose every owner is down and of which this
        node was among those declared down last (``Ring.newest_copies``): it
        holds their newest copy."""
        me, down = self.node, set(ring.down)
        return [o for o in set(full) if me in o and down >= set(o) and me in ring.newest_copies(o)]

    def _acting(self, ring: RingLike) -> Owners:
        """Each slot's owners under ``ring``: the members', less those it
        declared down (a slot whose primary is down is served by its replica)."""
        return without(self.owners(ring.members), frozenset(ring.down))

    @property
    def unknown(self) -> frozenset[str]:
        """Ring members whose address this core lacks (``update_nodes`` is for them)."""
        return self._unknown

    def update_nodes(self, nodes: Mapping[str, NodeAddr]) -> None:
        """Addresses of ring members that were unknown when the ring came."""
        if self.ring is None or not any(n in nodes for n in self._unknown):
            return
        self.table = self._table(self.ring, nodes)
        self._route()

    # -- transfers ------------------------------------------------------------------------

    def _start(self, t: _Transfer) -> None:
        t.tid = next(self._ids)
        t.breaks = self._breaks.get(t.peer, 0)
        t.sent = 0
        t.retry_at = None
        t.waiting_until = None
        t.batches = self._export(t.slots if t.full else [])

    def _export(self, slots: list[int]) -> Iterator[tuple[int, list[Exported]]]:
        store = self.store
        for slot in slots:
            keys = store.slot_keys(slot)  # a snapshot; later writes are forwarded
            for batch in batches(store.export(slot, keys)):
                yield slot, batch

    def _restart(self, t: _Transfer, now: float) -> None:
        t.batches = None
        t.waiting_until = None
        t.retry_at = now + RETRY_PAUSE

    def _acknowledged(
        self, t: _Transfer, got: int, refused: set[int], now: float, lost: bool = False
    ) -> None:
        if t.batches is not None or t.waiting_until is None:
            return  # an answer to an attempt we have given up on
        if lost:
            # Forwards before it are missing there, for these slots or others
            # it is sent: all of them go again whole, as after a broken link.
            self.counters.transfers_retried += 1
            self._forwards_lost(t.peer, now)
            return
        refused &= set(t.slots)
        if got != t.sent or (refused and not t.barrier):
            # Short, or the receiver does not take some slots (its ring is
            # newer than our plan): again, until a newer ring replaces the plan.
            self.counters.transfers_retried += 1
            self._restart(t, now)
            return
        t.done = True
        t.waiting_until = None
        if (
            t.full
            and not refused
            and not any(
                x is not t and x.peer == t.peer and x.full and not x.done for x in self._transfers
            )
        ):
            # Only once no other whole transfer to it is under way: each
            # carries other slots whose lost forwards it makes good.
            self._whole[t.peer] = max(self._whole.get(t.peer, 0), t.breaks)
        if t.barrier:
            self._release(t.peer, refused, t.slots)
            if refused:
                self._redrain(t, refused, now)
        if t.confirm:
            self._events.append(Confirmed(peer=t.peer, slots=tuple(t.slots)))
        self._transfers = [x for x in self._transfers if not x.done]
        self._check_ready()

    def _redrain(self, t: _Transfer, refused: set[int], now: float) -> None:
        """The receiver of a drain did not keep ``refused``: send them whole to
        their owner by our table (again to the same peer, after a pause, while
        our table still names it: one of us is behind on rings)."""
        owners = self.table.owners
        by_owner: dict[str, set[int]] = {}
        for slot in refused:
            owner = owners[slot][0] if owners[slot] else None
            if owner == self.node or owner is None:
                self._draining.pop(slot, None)
            else:
                by_owner.setdefault(owner, set()).add(slot)
        for owner, slots in by_owner.items():
            if owner != t.peer:
                self._drain(owner, slots, t.version, True)
                continue
            again = _Transfer(
                peer=owner, slots=sorted(slots), version=t.version, barrier=True, full=True
            )
            self._transfers.append(again)
            self._restart(again, now)
        self._route()

    def _check_ready(self) -> None:
        ring = self.ring
        if ring is None or not ring.pending or self._ready_for == (ring.term, ring.epoch):
            return
        if self.node not in (*ring.members, *ring.pending):
            return
        # Confirmations (a new replica's copies, after the last change) are
        # not part of this proposal: one to a replica that died must not hold
        # our readiness, and the proposal, for ever.
        if any(not t.barrier and not t.confirm for t in self._transfers):
            return
        self._ready_for = (ring.term, ring.epoch)
        self._events.append(Ready(term=ring.term, epoch=ring.epoch))

    def _release(self, peer: str, refused: set[int], slots: Iterable[int] | None = None) -> None:
        """Let go of the slots drained to ``peer`` (``slots`` only, if given) but
        ``refused``: it confirmed having them, or it is dead."""
        if slots is None:
            for t in self._transfers:
                if t.barrier and t.peer == peer:
                    t.done = True
            self._transfers = [t for t in self._transfers if not t.done]
        only = None if slots is None else set(slots)
        for slot in [s for s, dest in self._draining.items() if dest == peer]:
            if slot in refused or (only is not None and slot not in only):
                continue
            del self._draining[slot]
            kept = self._held[slot] or self._pending_held[slot] or self._streaming_in(slot)
            if not kept:
                self.counters.keys_dropped += self.store.drop_slot(slot)
        self._route()
        self._check_left()

    def _check_left(self) -> None:
        ring = self.ring
        if (
            self.leaving
            and not self._left
            and ring is not None
            and self.node not in ring.members
            and not self._draining
        ):
            self._left = True
            self._events.append(Left())

    # -- frames from peers ----------------------------------------------------------------

    def _streaming_in(self, slot: int) -> bool:
        """A transfer brought ``slot`` for a proposal not carried out yet:
        whole (``_received``) or, its DONE still to come, in part
        (``_incoming``). Its data stays whatever else this node knows of the
        slot: the transfer travels on a peer link, and may come before gossip
        brings the ring it is for, or before our own drain of the slot ends."""
        return slot in self._received or slot in self._incoming

    def _gains(self, slot: int, version: Version) -> bool:
        """Whether data for ``slot`` about proposal ``version`` is ours to keep."""
        ring = self.ring
        if ring is None or version > (ring.term, ring.epoch):
            return True  # a proposal we have not heard of yet: keep it until we do
        return bool(self._held[slot] or self._pending_held[slot])

    def _on_frame(self, peer: str, frame: Frame, now: float, wall_ms: int) -> None:
        body = frame.body
        if frame.kind == frames.BATCH:
            tid, term, epoch, slot, raw = body
            version, slot = _version(term, epoch), _slot(slot)
            items = decode_entries_untrusted(raw)
            key = (peer, _count(tid))
            inbound = self._inbound.get(key)
            if inbound is None:
                if len(self._inbound) >= MAX_INBOUND:
                    del self._inbound[next(iter(self._inbound))]
                inbound = self._inbound[key] = _Inbound(version=version)
            inbound.batches += 1
            if not self._gains(slot, version):
                self._refuse(peer, slot)
                return
            self.store.merge(slot, items, wall_ms)
            self._incoming[slot] = max(version, self._incoming.get(slot, version))
            self.counters.keys_received += len(items)
        elif frame.kind == frames.DONE:
            if type(body) is not list or len(body) not in (5, 7):
                raise ValueError("DONE has five or seven fields")
            tid, term, epoch, batches, slots = body[:5]
            version, tid = _version(term, epoch), _count(tid)
            if type(slots) is not list:
                raise ValueError("slots must be a list")
            slots = [_slot(s) for s in slots]
            entry = self._inbound.pop((peer, tid), None)
            got = entry.batches if entry is not None else 0
            # A forward of its generation before this DONE was lost: nothing
            # it covers is whole here. (Link protocol 2 said no count.)
            lost = False
            if len(body) == 7:
                forwards, generation = _count(body[5]), _generation(body[6])
                lost = self._forwards_got.get(peer, {}).get(generation, 0) != forwards
            # Earlier transfers from this peer were given up by it: forget them.
            for k in [k for k in self._inbound if k[0] == peer and k[1] < tid]:
                del self._inbound[k]
            # Slots of this transfer we do not keep, or whose data we refused:
            # the sender must not let go of them on our word.
            stale = self._refused.get(peer, set())
            not_kept = sorted({s for s in slots if s in stale or not self._gains(s, version)})
            stale.difference_update(slots)
            for slot in slots:  # whole now (``_received``), or refused
                if self._incoming.get(slot, version) <= version:
                    self._incoming.pop(slot, None)
            if got == batches and not lost:
                taken = [s for s in slots if s not in not_kept]
                for slot in taken:
                    self._received[slot] = max(version, self._received.get(slot, version))
                    self._confirmed[slot] = max(version, self._confirmed.get(slot, version))
                    self._awaiting.pop(slot, None)
                if taken:
                    self._route()
            ack = [tid, got, not_kept, int(lost)]
            self._out.append(Outgoing(peer=peer, kind=frames.ACK, body=ack))
        elif frame.kind == frames.ACK:
            tid, got = _count(body[0]), _count(body[1])
            if len(body) > 2 and type(body[2]) is not list:
                raise ValueError("refused slots must be a list")
            refused = {_slot(s) for s in body[2]} if len(body) > 2 else set()
            lost = len(body) > 3 and body[3] == 1
            for t in self._transfers:
                if t.peer == peer and t.tid == tid and not t.done:
                    self._acknowledged(t, got, refused, now, lost)
                    break
        elif frame.kind == frames.FORWARD:
            if type(body) is not list or len(body) not in (4, 5):
                raise ValueError("FORWARD has four or five fields")
            if len(body) == 5:
                self._count_forward(peer, _generation(body[4]))
            term, epoch, slot, raw = body[:4]
            version, slot = _version(term, epoch), _slot(slot)
            items = decode_entries_untrusted(raw)
            if not self._gains(slot, version):
                self._refuse(peer, slot)
                return
            self.store.merge(slot, items, wall_ms)

    def _count_forward(self, peer: str, generation: str) -> None:
        counts = self._forwards_got.setdefault(peer, {})
        counts[generation] = counts.pop(generation, 0) + 1  # the newest last
        if len(counts) > KEEP_GENERATIONS:
            del counts[next(iter(counts))]  # a DONE of that one is short: sent again

    def _refuse(self, peer: str, slot: int) -> None:
        self.counters.stale_frames += 1
        self._refused.setdefault(peer, set()).add(slot)


def figures(core: Handoff) -> dict[str, int | str]:
    """Figures for CLUSTER INFO (``keycafe_<name>``)."""
    c = core.counters
    ring = core.ring
    return {
        "ring_pending": len(ring.pending) if ring is not None else 0,
        "slots_keys_sent": c.keys_sent,
        "slots_keys_received": c.keys_received,
        "slots_keys_dropped": c.keys_dropped,
        "slots_transfers_sent": c.transfers_sent,
        "slots_transfers_retried": c.transfers_retried,
        "slots_writes_forwarded": c.forwarded,
        "slots_bad_frames": c.bad_frames,
        "slots_stale_frames": c.stale_frames,
    }


def _mask(flags: Iterable[int]) -> int:
    """A 0/1 value per slot as one int, for bytewise & and | in C."""
    return int.from_bytes(bytes(flags), "big")
