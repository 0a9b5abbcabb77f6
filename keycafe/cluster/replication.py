"""Replication: a primary copies each write in its slots to the slots' replicas.

A sans-I/O core in the shape of the hand-off's (``keycafe.cluster.handoff``)::

    rep.set_ring(version, owners, in_sync)     # the ring in force, and who is in sync
    rep.collect()                              # take the store's replog into the outbox
    rep.frames_to_send(now, limit) -> list[Outgoing]
    rep.receive_frame(peer, frame, now, wall_ms)
    rep.link_broken(peer, now)                 # frames queued to peer may be lost
    rep.handle_timer(now); rep.get_timer()
    rep.written, rep.durable                   # write numbers: the last, the last safe

*Primary side.* The store appends each write to a slot this node is primary of
(and that has replicas) to its ``replog`` (the ``REPLICATED`` watch flag, set
here from the ring). Writes are numbered in the order they were collected.
One ``REPL`` frame per replica and collection carries the *entries* (value,
stamp, writer; tombstones too), not the commands, as they are when the frame
is built: applying one twice or after a newer one changes nothing (the store's
last-writer-wins merge). A replica answers each frame with ``REPL_ACK`` and
the frame's number, which settles that frame alone: a frame before it may
have been lost with a broken connection while this one took the next, so a
broken link sends every unacknowledged frame's keys again. ``durable`` is
the highest write number such that every write up to it is held by every
in-sync replica of its slot: the shell answers a client's write only once
``durable`` has reached it.

*Replica side (fencing).* Entries are applied only for slots whose primary,
in the ring this node follows, is the sender, and of which this node is a
replica; the others are named in the acknowledgement as refused, and the
primary offers them again after ``RETRY_PAUSE`` (the two may follow different
rings for a moment). A paused or cut-off old primary therefore gets no
acknowledgement from a replica that follows a newer ring.

Writes wait for the in-sync replicas only (the caller says which: for now
every live owner in the ring in force) and are still sent to the others so
that they catch up. A new replica's copies count once the hand-off confirms
them (``unconfirm``/``confirm``).

*Waiting requests.* ``wait(token, first, last, read=n)`` registers a request
whose writes are numbered ``first``..``last`` and which read a slot whose last
write is numbered ``n`` (``Store.unsettled``); ``released()`` returns the
requests whose writes, and the writes they read, are durable now, each with
its verdict: False if one of those was given up, or, for a read, any write
numbered up to ``n`` that was not durable when the read came (the shell
answers it with an error, not OK). Reads wait too: a primary that answered a read of a write
its replicas do not hold yet, then died or was cut off, would have shown a
value the cluster then loses (a dirty read, as Jepsen calls it). The trio
shell and the simulator both only carry the verdicts out.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Collection, Hashable, Iterable
from typing import Any, Final

import attrs

from keycafe.cluster import frames
from keycafe.cluster.frames import Frame
from keycafe.cluster.handoff import (
    BATCH_BYTES,
    ENTRY_OVERHEAD,
    MAX_VERSION,
    Outgoing,
    Owners,
    Version,
    decode_entries_untrusted,
    encode_entries,
    take_frames,
)
from keycafe.store.engine import REPLICATED, Exported, Store
from keycafe.store.keyslot import SLOT_COUNT

RETRY_PAUSE: Final = 0.5  # seconds before refused entries are offered again
# A frame not acknowledged in this long is sent again: an acknowledgement lost
# with a connection only the replica saw break would hold every later write
# (the hand-off's transfers have the same guard). Applying twice is harmless.
ACK_TIMEOUT: Final = 5.0
FRAME_ENTRIES: Final = 512  # entries per REPL frame, at most
# ... and about BATCH_BYTES of keys and values, as the hand-off's batches.
# Given-up write numbers this far behind ``durable`` are forgotten.
KEEP_ABANDONED: Final = 1 << 20


@attrs.define(eq=False)
class ReplicationCounters:
    frames_sent: int = 0
    entries_sent: int = 0
    entries_applied: int = 0
    entries_refused: int = 0  # not applied here: the sender is not the slot's primary
    resent: int = 0  # writes sent again after a broken link or a refusal
    bad_frames: int = 0


Item = tuple[int, int, bytes]  # (write number, slot, key)


@attrs.define(eq=False)
class _Sent:
    """A REPL frame on its way: its number and the writes it carried."""

    number: int
    items: list[Item]
    sent_at: float = 0.0
    # The lowest write number it carries (``durable`` asks at every step).
    low: int | None = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.low = min((n for n, _, _ in self.items), default=None)

    def keep(self, items: list[Item]) -> None:
        self.items = items
        self.__attrs_post_init__()


class Replication:
    """One node's part in replication, as primary of some slots and replica of others."""

    def __init__(self, *, node: str, store: Store) -> None:
        self.node = node
        self.store = store
        self.version: Version = (0, 0)
        self.owners: Owners = ((),) * SLOT_COUNT
        self.in_sync: frozenset[str] = frozenset()
        self.counters = ReplicationCounters()
        self._written = 0  # number of the last write collected
        self._out: deque[Outgoing] = deque()
        # Per replica: writes to send next, frames sent and not acknowledged,
        # and writes it refused, offered again at a time.
        self._queued: dict[str, list[Item]] = {}
        self._unacked: dict[str, deque[_Sent]] = {}
        self._retry: list[tuple[float, str, list[Item]]] = []
        self._frame_no = 0
        # Writes given up: a ring change made this node no longer their slot's
        # primary (or the peer no longer its replica) before the replica took
        # them. They are not pending, so ``durable`` passes them, but their
        # requests are released with a False verdict (``released``).
        self._abandoned: set[int] = set()
        # Slots whose copies at a replica are not confirmed whole yet (a new
        # replica, until the hand-off's barrier is acknowledged), and the
        # writes to them it acknowledged meanwhile: held back from ``durable``.
        self._unconfirmed: dict[str, set[int]] = {}
        self._held: dict[str, list[Item]] = {}
        # (first, last, read, floor, token); ``floor``: ``settled`` when it came.
        self._waits: list[tuple[int, int, int, int, Hashable]] = []
        # The highest ``durable`` seen by ``released``: a write numbered up to
        # it was held by its in-sync replicas then (a read of it need not wait).
        self.settled = 0
        # False while this node's copies cannot be trusted (a process that
        # restarted under its id, not yet brought back in): it takes no
        # primary's writes, so none counts as durable with it.
        self.accepting = True

    # -- the ring --------------------------------------------------------------------------

    def set_ring(self, version: Version, owners: Owners, in_sync: Iterable[str]) -> None:
        """Follow the ring ``version`` with these slot ``owners`` (primary
        first); ``in_sync`` are the replicas whose acknowledgement a write needs."""
        self.collect()  # what was written under the old ring is numbered first
        self.version, self.owners, self.in_sync = version, owners, frozenset(in_sync)
        me = self.node
        self.store.set_watch(REPLICATED, None)
        self.store.set_watch(
            REPLICATED, (s for s, o in enumerate(owners) if len(o) > 1 and o[0] == me)
        )
        # Writes queued for a node that is no longer a replica of their slot
        # (or of which we are no longer primary) go nowhere now.
        for peer, items in list(self._queued.items()):
            self._queued[peer] = self._still_replicated(peer, items)
        for peer, items in list(self._held.items()):
            self._held[peer] = self._still_replicated(peer, items)
        for peer, slots in list(self._unconfirmed.items()):
            kept = {s for s in slots if self._replicates(peer, s)}
            if kept:
                self._unconfirmed[peer] = kept
            else:
                del self._unconfirmed[peer]
        for peer, sent in self._unacked.items():
            for frame in sent:
                frame.keep(self._still_replicated(peer, frame.items))
        self._retry = [(at, p, self._still_replicated(p, items)) for at, p, items in self._retry]

    def _still_replicated(self, peer: str, items: list[Item]) -> list[Item]:
        """The items ``peer`` still replicates; of the others, those of slots
        this node is no longer primary of are given up (a replica that went
        away from a slot we still lead takes nothing with it: the write is
        here, and no in-sync replica needs it)."""
        keep = []
        for item in items:
            slot = item[1]
            if self._replicates(peer, slot):
                keep.append(item)
            elif self.owners[slot][:1] != (self.node,):
                self._abandoned.add(item[0])
            else:
                # Still ours, with another replica now: it must hold the write
                # before it counts (the stream it got may predate it).
                for other in self.owners[slot][1:]:
                    if other != peer:
                        self._queued.setdefault(other, []).append(item)
        return keep

    def wait(self, token: Hashable, first: int, last: int, read: int = 0) -> None:
        """A request waits for its writes numbered ``first``..``last`` (none if
        ``last`` is 0) and for write ``read``, the last one to a slot it read
        (0: none)."""
        self._waits.append((first, last, read, self.settled, token))

    def waiting(self) -> list[Hashable]:
        """The requests still waiting."""
        return [w[4] for w in self._waits]

    def cancel(self, token: Hashable) -> None:
        """The request ``token`` waits no more (it timed out, or its node is gone)."""
        self._waits = [w for w in self._waits if w[4] != token]

    def released(self) -> list[tuple[Hashable, bool]]:
        """Requests whose writes are durable now, and whether all of them were
        kept (False: one was given up: answer with an error, not OK)."""
        if not self._waits:
            return []  # ``settled`` may lag meanwhile: a read waits, and is released
        durable = self.settle()
        ready: list[tuple[int, int, int, int, Hashable]] = []
        still: list[tuple[int, int, int, int, Hashable]] = []
        for wait in self._waits:
            (ready if wait[1] <= durable and wait[2] <= durable else still).append(wait)
        self._waits = still
        # A write given up is its own request's to report (taken, so that it
        # is reported once); those a request read are looked at, before any
        # writer takes them: every write given up that was not durable when
        # the read came and is no later than the one it waits for. Not only
        # that one: a write to another key of the slot, acknowledged after an
        # earlier one whose frame was lost, is kept while the earlier one,
        # the value read, is given up. Writes to other slots in that range
        # fail the read too: an error, never a value the cluster may lose.
        lost = sorted(self._abandoned) if self._abandoned else []
        # ``floor`` is ``settled`` when the request registered, which a shell
        # may do a moment after it read (the hub hands the connection to its
        # task first): the write it read is looked at whatever the floor.
        lost_reads = [
            read > 0
            and (read in self._abandoned or bisect_right(lost, read) > bisect_right(lost, floor))
            for _, _, read, floor, _ in ready
        ]
        out = [
            (token, not ((last > 0 and self._take_abandoned(first, last)) or lost_read))
            for (first, last, _, _, token), lost_read in zip(ready, lost_reads, strict=True)
        ]
        # A request registers a moment after its writes are numbered (the
        # shell hands the connection to its task first): keep given-up
        # numbers well past that, then forget them.
        if self._abandoned:
            below = durable - KEEP_ABANDONED
            self._abandoned = {n for n in self._abandoned if n >= below}
        return out

    def settle(self) -> int:
        """``settled``, brought up to date (it is otherwise only when
        requests are released)."""
        durable = self.durable
        if durable > self.settled:
            self.settled = durable
        return self.settled

    def _take_abandoned(self, first: int, last: int) -> bool:
        hit = {n for n in self._abandoned if first <= n <= last}
        self._abandoned -= hit
        return bool(hit)

    def _replicates(self, peer: str, slot: int) -> bool:
        o = self.owners[slot]
        return bool(o) and o[0] == self.node and peer in o[1:]

    # -- primary side ------------------------------------------------------------------------

    def collect(self) -> None:
        """Number the writes in the store's replog and queue them per replica."""
        log, self.store.replog = self.store.replog, []
        owners, queued = self.owners, self._queued
        for slot, key in log:
            self._written += 1
            for peer in owners[slot][1:]:
                queued.setdefault(peer, []).append((self._written, slot, key))

    @property
    def written(self) -> int:
        """The number of the last write (writes are numbered as they are collected)."""
        self.collect()
        return self._written

    @property
    def durable(self) -> int:
        """Every write numbered up to this is held by every in-sync replica of its slot."""
        bound = self.written
        for peer in self.in_sync:
            lowest = self._lowest_pending(peer)
            if lowest is not None:
                bound = min(bound, lowest - 1)
        return bound

    def unconfirm(self, peer: str, slots: Iterable[int]) -> None:
        """``peer``'s copies of ``slots`` await confirmation: hold writes to them."""
        self._unconfirmed.setdefault(peer, set()).update(slots)

    def confirm(self, peer: str, slots: Iterable[int]) -> None:
        """``peer``'s copies of ``slots`` are whole: what it took of them counts."""
        done = set(slots)
        left = self._unconfirmed.get(peer, set()) - done
        if left:
            self._unconfirmed[peer] = left
        else:
            self._unconfirmed.pop(peer, None)
        held = [i for i in self._held.pop(peer, []) if i[1] not in done]
        if held:
            self._held[peer] = held

    def _lowest_pending(self, peer: str) -> int | None:
        numbers = [n for n, _, _ in self._queued.get(peer, ())]
        numbers += [n for n, _, _ in self._held.get(peer, ())]
        numbers += [sent.low for sent in self._unacked.get(peer, ()) if sent.low is not None]
        numbers += [n for _, p, items in self._retry if p == peer for n, _, _ in items]
        return min(numbers, default=None)

    def backlogged(self) -> set[str]:
        """Peers with writes not yet handed out as frames: nothing that must
        follow them (a hand-off barrier) may go to those peers yet."""
        self.collect()
        return {p for p, items in self._queued.items() if items} | {o.peer for o in self._out}

    def lag(self) -> dict[str, int]:
        """Per replica, the writes it has not acknowledged yet (queued, in
        flight, to resend, or held until its copies are confirmed)."""
        self.collect()
        peers = {*self._queued, *self._held, *self._unacked, *(p for _, p, _ in self._retry)}
        out = {}
        for peer in sorted(peers):
            n = len(self._queued.get(peer, ())) + len(self._held.get(peer, ()))
            n += sum(len(sent.items) for sent in self._unacked.get(peer, ()))
            n += sum(len(items) for _, p, items in self._retry if p == peer)
            if n:
                out[peer] = n
        return out

    def frames_to_send(self, now: float, limit: int, busy: Collection[str] = ()) -> list[Outgoing]:
        """Up to ``limit`` frames, none for a ``busy`` peer (its writes stay
        queued, and wait, until its link takes frames again)."""
        self.collect()
        # At most ``limit`` frames' worth of writes per peer per call: the
        # rest stay queued for the next (a FLUSHALL of a million keys once
        # built every frame in one 7.5 s step).
        budget = limit * FRAME_ENTRIES
        ready = sum(1 for o in self._out if o.peer not in busy)  # held frames do not count
        for peer in sorted(self._queued):
            if ready >= limit:
                break
            if peer in busy:
                continue
            before = len(self._out)
            items = self._queued.pop(peer)
            if len(items) > budget:
                self._queued[peer] = items[budget:]
                items = items[:budget]
            for i in range(0, len(items), FRAME_ENTRIES):
                self._send(peer, items[i : i + FRAME_ENTRIES], now)
            ready += len(self._out) - before
        return take_frames(self._out, limit, busy)

    def _send(self, peer: str, items: list[Item], now: float) -> None:
        """REPL frames for ``items``, each within ``BATCH_BYTES`` of keys and
        values (plus one entry); a write rides in the frame that carries its
        key's entry, so a frame's acknowledgement settles exactly those."""
        by_slot: dict[int, dict[bytes, list[Item]]] = {}
        for item in items:
            by_slot.setdefault(item[1], {}).setdefault(item[2], []).append(item)
        riders: list[Item] = []
        groups: list[list[Any]] = []
        size = entries = 0
        for slot, keyed in by_slot.items():
            # As the entries are now: a key written twice goes once.
            piece: list[Exported] = []
            for e in self.store.export(slot, keyed):
                cost = len(e.key) + len(e.value or b"") + ENTRY_OVERHEAD
                if (groups or piece) and size + cost > BATCH_BYTES:
                    if piece:
                        groups.append([slot, encode_entries(piece)])
                    self._frame(peer, riders, groups, entries, now)
                    riders, groups, piece, size, entries = [], [], [], 0, 0
                piece.append(e)
                riders += keyed.pop(e.key)
                size += cost
                entries += 1
            if piece:
                groups.append([slot, encode_entries(piece)])
            for rest in keyed.values():  # keys gone altogether: nothing to carry
                riders += rest
        if riders or groups:
            self._frame(peer, riders, groups, entries, now)

    def _frame(
        self, peer: str, items: list[Item], groups: list[list[Any]], entries: int, now: float
    ) -> None:
        self._frame_no += 1
        sent = _Sent(number=self._frame_no, items=items, sent_at=now)
        self._unacked.setdefault(peer, deque()).append(sent)
        term, epoch = self.version
        body = [term, epoch, self._frame_no, groups]
        self._out.append(Outgoing(peer=peer, kind=frames.REPL, body=body))
        self.counters.frames_sent += 1
        self.counters.entries_sent += entries

    def link_broken(self, peer: str, now: float) -> None:
        """Frames to ``peer`` may be lost: send their writes again, as they are
        now, after ``RETRY_PAUSE`` (a peer with no address, or no link, would
        otherwise be sent to again at once, round after round)."""
        self._out = deque(o for o in self._out if o.peer != peer)
        lost = [i for sent in self._unacked.pop(peer, ()) for i in sent.items]
        if lost:
            self._retry.append((now + RETRY_PAUSE, peer, lost))

    # -- replica side ------------------------------------------------------------------------

    def receive_frame(self, peer: str, frame: Frame, now: float, wall_ms: int) -> None:
        if frame.kind == frames.REPL:
            self._on_repl(peer, frame.body, wall_ms)
        elif frame.kind == frames.REPL_ACK:
            self._on_ack(peer, frame.body, now)

    def _on_repl(self, peer: str, body: Any, wall_ms: int) -> None:
        parsed = _parse_repl(body)
        if parsed is None:
            self.counters.bad_frames += 1
            return
        _, number, groups = parsed
        owners, me = self.owners, self.node
        refused = []
        for slot, items in groups:
            o = owners[slot]
            if o and o[0] == peer and me in o[1:] and self.accepting:
                clock = self.store.clock
                before = clock.refused
                self.store.merge(slot, items, wall_ms)
                if clock.refused != before:
                    # Stamped too far ahead of our clock: not held here, so
                    # not acknowledged (offered again; writes wait meanwhile).
                    refused.append(slot)
                    self.counters.entries_refused += clock.refused - before
                    continue
                self.counters.entries_applied += len(items)
            else:
                refused.append(slot)
                self.counters.entries_refused += len(items)
        term, epoch = self.version
        ack = [term, epoch, number, refused]
        self._out.append(Outgoing(peer=peer, kind=frames.REPL_ACK, body=ack))

    def _on_ack(self, peer: str, body: Any, now: float) -> None:
        if (
            type(body) is not list
            or len(body) != 4
            or any(type(x) is not int or not 0 <= x <= MAX_VERSION for x in body[:3])
            or type(body[3]) is not list
            or any(type(s) is not int or not 0 <= s < SLOT_COUNT for s in body[3])
        ):
            self.counters.bad_frames += 1
            return
        number, refused = body[2], set(body[3])
        pending = self._unacked.get(peer)
        # This frame only: an earlier one unacknowledged may have been lost
        # with a connection that broke (a later frame can travel on the next
        # one before we hear of it); it is sent again when we do.
        sent = next((f for f in pending or () if f.number == number), None)
        if pending is None or sent is None:
            return  # a duplicate, or a frame already given up with its link
        pending.remove(sent)
        unconfirmed = self._unconfirmed.get(peer)
        if unconfirmed:
            held = [i for i in sent.items if i[1] in unconfirmed and i[1] not in refused]
            if held:
                self._held.setdefault(peer, []).extend(held)
        again = [i for i in sent.items if i[1] in refused]
        if again:
            self._retry.append((now + RETRY_PAUSE, peer, again))

    # -- timers ------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        times = [at for at, _, _ in self._retry]
        times += [sent[0].sent_at + ACK_TIMEOUT for sent in self._unacked.values() if sent]
        return min(times, default=None)

    def handle_timer(self, now: float) -> None:
        for peer, sent in list(self._unacked.items()):
            if sent and now >= sent[0].sent_at + ACK_TIMEOUT:
                self.link_broken(peer, now)  # as if: send every unacknowledged frame again
        due = [r for r in self._retry if r[0] <= now]
        self._retry = [r for r in self._retry if r[0] > now]
        for _, peer, items in due:
            keep = self._still_replicated(peer, items)
            if keep:
                self.counters.resent += len(keep)
                self._queued[peer] = keep + self._queued.get(peer, [])


def figures(rep: Replication) -> dict[str, int]:
    """Replication figures for CLUSTER INFO and INFO (``repl_<name>``)."""
    c = rep.counters
    return {
        "repl_written": rep.written,
        "repl_durable": rep.durable,
        "repl_lag_entries": sum(rep.lag().values()),
        "repl_frames_sent": c.frames_sent,
        "repl_entries_sent": c.entries_sent,
        "repl_entries_applied": c.entries_applied,
        "repl_entries_refused": c.entries_refused,
        "repl_resent": c.resent,
        "repl_bad_frames": c.bad_frames,
    }


def _parse_repl(body: Any) -> tuple[Version, int, list[tuple[int, list[Exported]]]] | None:
    """A REPL body from a peer, checked: ((term, epoch), number, [(slot, entries)])."""
    if type(body) is not list or len(body) != 4:
        return None
    term, epoch, number, groups = body
    if any(type(x) is not int or not 0 <= x <= MAX_VERSION for x in (term, epoch, number)):
        return None
    if type(groups) is not list:
        return None
    out = []
    for group in groups:
        if type(group) is not list or len(group) != 2:
            return None
        slot, raw = group
        if type(slot) is not int or not 0 <= slot < SLOT_COUNT:
            return None
        try:
            out.append((slot, decode_entries_untrusted(raw)))
        except ValueError:
            return None
    return (term, epoch), number, out
