"""Anti-entropy: a slot's copies are compared and repaired, key by key.

Replication makes a replica apply each write its primary acknowledges, and
resends what a broken link lost; this is the net beneath it, for copies that
differ anyway (a bug, a frame refused at a ring change, a write into one store
directly). A sans-I/O core in the shape of replication's::

    ae.set_ring(version, owners)        # the ring in force (owners: primary first)
    ae.handle_timer(now); ae.get_timer()
    ae.frames_to_send(now, limit) -> list[Outgoing]
    ae.receive_frame(peer, frame, now, wall_ms)

Every ``PERIOD`` seconds a primary starts a *pass* over the slots it leads
that have replicas, a few at a time (``STEP_ENTRIES`` entries per step, one
step every ``STEP_INTERVAL``: the event loop is the failure detector's clock).
Each slot is split into ``parts`` by a hash of the key (more parts for bigger
slots, so that no part lists more than about ``PART_ENTRIES`` keys), and:

1. ``AE_DIGEST`` (primary to replica): per slot, the digest of each part: the
   sum of a 32-bit hash of each entry's key and header (expiry and stamp),
   tombstones included, so it does not depend on order.
2. ``AE_KEYS`` (replica to primary): for each part whose digest differs, the
   replica's (key, stamp, writer) for every entry of that part.
3. ``AE_SYNC`` (primary to replica, then back): the entries the primary holds
   newer (by last-writer-wins), and the keys it wants, of which the replica
   holds the newer entry; the replica merges the first and answers with the
   second. Merged into a slot it leads, they replicate to its other replicas.

Both ends check every frame against their ring (fencing, as for ``REPL``): a
replica answers only its slot's primary, and a primary merges only from its
slot's replicas. A copy that differs is therefore repaired within a pass and
two round trips: ``PERIOD`` plus the pass's own length (entries led /
(``STEP_ENTRIES`` / ``STEP_INTERVAL``) seconds).

Deleted keys stay deleted: a delete is acknowledged only once every in-sync
replica holds its tombstone, and a node that was not in sync comes back with
no copy (it is streamed whole before it counts), so no copy still holds the
live key when the tombstone is collected (``tombstone_grace_ms``, 5 minutes,
far beyond a pass).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from itertools import compress
from typing import Any, Final
from zlib import crc32

import attrs

from keycafe.cluster import frames
from keycafe.cluster.frames import Frame
from keycafe.cluster.handoff import (
    BATCH_BYTES,
    BATCH_ENTRIES,
    ENTRY_OVERHEAD,
    MAX_VERSION,
    MAX_WRITER,
    Outgoing,
    Owners,
    Version,
    batches,
    decode_entries_untrusted,
    encode_entries,
    take_frames,
)
from keycafe.cluster.slot_table import primary_mask
from keycafe.store import entry
from keycafe.store.engine import Exported, Store
from keycafe.store.keyslot import SLOT_COUNT

PERIOD: Final = 10.0  # seconds from one pass's start to the next
STEP_INTERVAL: Final = 0.02  # seconds between steps of a pass
STEP_ENTRIES: Final = 4096  # entries digested per step, about 1-2 ms of CPU
PART_ENTRIES: Final = 2048  # a slot gets a part per this many entries
MAX_PARTS: Final = 1024  # parts per slot a primary digests at most (a power of two)
# A replica splits a part further when its list of keys would not fit one
# frame: parts of a part, as far as this (a power of two).
MAX_REFINED: Final = 1 << 16
# Keys (and values) per AE_KEYS / AE_SYNC frame: about BATCH_BYTES, as the hand-off's.
MAX_GROUPS: Final = 4096  # groups a peer's frame may hold
# Listings of one slot a primary answers per pass and replica: more than a
# replica's honest split of its biggest slot needs (a part per 2048 entries,
# split again per MiB of keys).
MAX_LISTINGS: Final = 2 * MAX_PARTS


@attrs.define(eq=False)
class AntiEntropyCounters:
    passes: int = 0
    slots_compared: int = 0  # slot copies whose digests were compared (replica side)
    parts_differing: int = 0
    entries_pushed: int = 0  # entries sent to repair a copy
    entries_repaired: int = 0  # entries merged here that changed something
    refused: int = 0  # groups from a peer that is not the slot's primary / replica, or unasked
    too_large: int = 0  # entries larger than a frame: not sent (never accepted by a node)
    bad_frames: int = 0


def parts_for(count: int) -> int:
    """How many parts a slot of ``count`` entries is split into (a power of two)."""
    parts = 1
    while parts < MAX_PARTS and parts * PART_ENTRIES < count:
        parts *= 2
    return parts


def _items(store: Store, slot: int) -> list[tuple[bytes, bytes, bool]]:
    """(key, record, tombstone?) for every entry of ``slot``."""
    out = [(k, r, False) for k, r in store.slots[slot].items()]
    out += [(k, r, True) for k, r in store.tombstones[slot].items()]
    return out


def digests(store: Store, slot: int, parts: int) -> list[int]:
    """The digest of each part of ``slot`` (see the module docstring)."""
    sums = [0] * parts
    if not store.slots[slot] and not store.tombstones[slot]:
        return sums  # most slots of an idle or small store: nothing to hash
    mask = parts - 1
    # The writer's id counts too (two writes with one stamp differ by it);
    # records hold a store-local index to it, so its hash is taken per index.
    named = [crc32(w.encode()) for w in store.writers]
    for key, record, tomb in _items(store, slot):
        h = crc32(key)
        # A tombstone and a live entry with the same header must not match.
        x = crc32(record[:16], h) ^ named[entry.writer_of(record)]
        sums[h & mask] += x + (tomb << 32)
    return [s & 0xFFFFFFFFFFFFFFFF for s in sums]


def versions(store: Store, slot: int, parts: int, wanted: set[int]) -> dict[bytes, tuple[int, str]]:
    """(stamp, writer) of each entry of ``slot`` in the ``wanted`` parts."""
    mask, writers = parts - 1, store.writers
    return {
        key: (entry.stamp_of(record), writers[entry.writer_of(record)])
        for key, record, _ in _items(store, slot)
        if crc32(key) & mask in wanted
    }


Versions = dict[bytes, tuple[int, str]]


class AntiEntropy:
    """One node's part in anti-entropy: as primary of some slots, replica of others."""

    def __init__(self, *, node: str, store: Store) -> None:
        self.node = node
        self.store = store
        self.version: Version = (0, 0)
        self.owners: Owners = ((),) * SLOT_COUNT
        self.counters = AntiEntropyCounters()
        self._out: deque[Outgoing] = deque()
        self._pass: deque[int] = deque()  # slots of the pass under way, still to digest
        self._next_pass: float | None = None
        self._next_step: float | None = None
        # Per replica: slot -> the parts its digest was split in; the
        # (slot, parts, part) listings taken, and how many per slot.
        self._asked: dict[str, dict[int, int]] = {}
        self._answered: dict[str, set[tuple[int, int, int]]] = {}
        self._answers: dict[tuple[str, int], int] = {}

    def set_ring(self, version: Version, owners: Owners) -> None:
        self.version, self.owners = version, owners

    # -- primary side ----------------------------------------------------------------------

    def get_timer(self) -> float | None:
        if self._next_pass is None:
            return 0.0  # at once: the first call schedules the first pass
        return self._next_step if self._pass else self._next_pass

    def handle_timer(self, now: float) -> None:
        if self._next_pass is None:
            # The first pass one period after start: a fresh node has nothing to repair.
            self._next_pass = now + PERIOD
            return
        if not self._pass and now >= self._next_pass:
            # Slots led here (those with no replica are skipped as the pass goes).
            led = primary_mask(self.owners, self.node)
            self._pass = deque(compress(range(SLOT_COUNT), led))
            self._next_pass = now + PERIOD
            self._next_step = now
            self._asked.clear()
            self._answered.clear()
            self._answers.clear()
            self.counters.passes += 1
        if self._pass and self._next_step is not None and now >= self._next_step:
            self._step()
            self._next_step = now + STEP_INTERVAL

    def _step(self) -> None:
        """Digest the next slots of the pass, up to ``STEP_ENTRIES`` entries."""
        store, owners, me = self.store, self.owners, self.node
        by_peer: dict[str, list[list[Any]]] = {}
        budget = STEP_ENTRIES
        while self._pass and budget > 0:
            slot = self._pass.popleft()
            o = owners[slot]
            if len(o) < 2 or o[0] != me:
                continue  # the ring changed since the pass began
            count = len(store.slots[slot]) + len(store.tombstones[slot])
            budget -= max(count, 1)
            parts = parts_for(count)
            group = [slot, parts, digests(store, slot, parts)]
            for peer in o[1:]:
                by_peer.setdefault(peer, []).append(group)
                self._asked.setdefault(peer, {})[slot] = parts
        for peer, groups in by_peer.items():
            self._send(peer, frames.AE_DIGEST, groups)

    def frames_to_send(self, now: float, limit: int, busy: Collection[str] = ()) -> list[Outgoing]:
        return take_frames(self._out, limit, busy)

    def link_broken(self, peer: str) -> None:
        """What was queued to ``peer`` is dropped: the next pass compares again."""
        self._out = deque(o for o in self._out if o.peer != peer)

    # -- frames ------------------------------------------------------------------------------

    def receive_frame(self, peer: str, frame: Frame, now: float, wall_ms: int) -> None:
        """Every field of a peer's frame is checked before anything is done
        with it: a malformed frame is counted and changes nothing."""
        body = frame.body
        try:
            if type(body) is not list or len(body) != 3 or not _version_ok(body[0], body[1]):
                raise ValueError("a frame is [term, epoch, groups]")
            groups = _list(body[2])
            if len(groups) > MAX_GROUPS:
                raise ValueError("too many groups")
            if frame.kind == frames.AE_DIGEST:
                self._on_digest(peer, [_digest_group(g) for g in groups])
            elif frame.kind == frames.AE_KEYS:
                self._on_keys(peer, [_keys_group(g) for g in groups])
            elif frame.kind == frames.AE_SYNC:
                self._on_sync(peer, [_sync_group(g) for g in groups], wall_ms)
        except (ValueError, TypeError):
            self.counters.bad_frames += 1

    def _leads(self, slot: int, replica: str) -> bool:
        o = self.owners[slot]
        return bool(o) and o[0] == self.node and replica in o[1:]

    def _follows(self, slot: int, primary: str) -> bool:
        o = self.owners[slot]
        return bool(o) and o[0] == primary and self.node in o[1:]

    def _send(self, peer: str, kind: int, groups: list[Any]) -> None:
        term, epoch = self.version
        self._out.append(Outgoing(peer=peer, kind=kind, body=[term, epoch, groups]))

    def _on_digest(self, peer: str, groups: list[tuple[int, int, list[int]]]) -> None:
        """Replica: list the entries of each part whose digest differs (a part
        too big for a frame is listed as finer parts, each whole)."""
        out: list[list[Any]] = []
        size = 0
        for slot, parts, theirs in groups:
            if not self._follows(slot, peer):
                self.counters.refused += 1
                continue
            self.counters.slots_compared += 1
            ours = digests(self.store, slot, parts)
            differ = {i for i in range(parts) if ours[i] != theirs[i]}
            if not differ:
                continue
            self.counters.parts_differing += len(differ)
            for group, cost in self._listings(slot, parts, differ):
                if out and size + cost > BATCH_BYTES:
                    self._send(peer, frames.AE_KEYS, out)
                    out, size = [], 0
                out.append(group)
                size += cost
        if out:
            self._send(peer, frames.AE_KEYS, out)

    def _listings(self, slot: int, parts: int, differ: set[int]) -> list[tuple[list[Any], int]]:
        """[slot, parts, [part], [[key, stamp, writer], ...]] for each part that
        differs, with its size; parts whose list would not fit a frame are
        split into finer ones (an empty list says "I hold nothing of it")."""
        held = versions(self.store, slot, parts, differ)
        by_part: dict[int, list[bytes]] = {p: [] for p in differ}
        mask = parts - 1
        for key in held:
            by_part[crc32(key) & mask].append(key)
        out: list[tuple[list[Any], int]] = []

        def listing(parts: int, part: int, keys: list[bytes]) -> None:
            cost = sum(len(k) + ENTRY_OVERHEAD for k in keys)
            if cost <= BATCH_BYTES or len(keys) < 2 or parts >= MAX_REFINED:
                out.append(([slot, parts, [part], [[k, *held[k]] for k in keys]], cost))
                return
            # Part ``part`` of ``parts`` is parts ``part`` and ``part + parts``
            # of twice as many (the same hash, one more of its bits).
            fine = parts * 2
            low = [k for k in keys if crc32(k) & (fine - 1) == part]
            high = [k for k in keys if crc32(k) & (fine - 1) != part]
            listing(fine, part, low)
            listing(fine, part + parts, high)

        for part, keys in sorted(by_part.items()):
            listing(parts, part, keys)
        return out

    def _on_keys(self, peer: str, groups: list[tuple[int, int, set[int], Versions]]) -> None:
        """Primary: send the entries we hold newer, ask for those the replica does."""
        store = self.store
        asked = self._asked.get(peer, {})
        answered = self._answered.setdefault(peer, set())
        for slot, parts, differ, theirs in groups:
            fresh = {p for p in differ if (slot, parts, p) not in answered}
            # Listings as asked (parts no coarser than our digest's), each
            # once, and at most MAX_LISTINGS of a slot a pass: every one
            # costs a scan of the slot, and the peer chooses how it splits.
            taken = self._answers.get((peer, slot), 0)
            if (
                parts < asked.get(slot, MAX_REFINED + 1)
                or taken >= MAX_LISTINGS
                or not self._leads(slot, peer)
                or not fresh
            ):
                self.counters.refused += 1
                continue
            self._answers[(peer, slot)] = taken + 1
            answered.update((slot, parts, p) for p in fresh)
            ours = versions(store, slot, parts, fresh)
            mask = parts - 1
            theirs = {k: v for k, v in theirs.items() if crc32(k) & mask in fresh}
            push = [k for k, v in ours.items() if k not in theirs or v > theirs[k]]
            want = [k for k, v in theirs.items() if k not in ours or v > ours[k]]
            self._send_sync(peer, slot, store.export(slot, push), want)

    def _send_sync(self, peer: str, slot: int, items: list[Exported], want: list[bytes]) -> None:
        # batches() closes a batch after the entry that fills it: a full batch
        # (up to BATCH_BYTES, plus ENTRY_OVERHEAD per entry) and one more entry
        # must still fit in a frame.
        room = frames.MAX_FRAME - 2 * BATCH_BYTES
        fits = [e for e in items if len(e.key) + len(e.value or b"") <= room]
        self.counters.too_large += len(items) - len(fits)  # larger than any frame
        for batch in batches(fits):
            self._send(peer, frames.AE_SYNC, [[slot, encode_entries(batch), []]])
            self.counters.entries_pushed += len(batch)
        asked: list[bytes] = []
        size = 0
        for key in want:
            if asked and (len(asked) >= BATCH_ENTRIES or size + len(key) > BATCH_BYTES):
                self._send(peer, frames.AE_SYNC, [[slot, [], asked]])
                asked, size = [], 0
            asked.append(key)
            size += len(key) + ENTRY_OVERHEAD
        if asked:
            self._send(peer, frames.AE_SYNC, [[slot, [], asked]])

    def _on_sync(
        self, peer: str, groups: list[tuple[int, list[Exported], list[bytes]]], wall_ms: int
    ) -> None:
        """Either end: merge the entries; a replica also answers the keys wanted."""
        store = self.store
        for slot, items, want in groups:
            primary_sent = self._follows(slot, peer)
            if not primary_sent and not self._leads(slot, peer):
                self.counters.refused += 1
                continue
            if items:
                self.counters.entries_repaired += store.merge(slot, items, wall_ms)
            if want and primary_sent:
                self._send_sync(peer, slot, store.export(slot, want), [])


def figures(ae: AntiEntropy) -> dict[str, int]:
    """Anti-entropy figures for CLUSTER INFO (``ae_<name>``)."""
    return {f"ae_{k}": v for k, v in attrs.asdict(ae.counters).items()}


# -- parsing untrusted frames (ValueError on anything malformed) -------------------------


def _version_ok(term: object, epoch: object) -> bool:
    return all(type(x) is int and 0 <= x <= MAX_VERSION for x in (term, epoch))


def _list(value: Any) -> list[Any]:
    if type(value) is not list:
        raise ValueError("expected a list")
    return value


def _slot_parts(slot: Any, parts: Any, most: int = MAX_PARTS) -> tuple[int, int]:
    if type(slot) is not int or not 0 <= slot < SLOT_COUNT:
        raise ValueError("bad slot")
    if type(parts) is not int or not 1 <= parts <= most or parts & (parts - 1):
        raise ValueError("bad parts")
    return slot, parts


def _digest_group(group: Any) -> tuple[int, int, list[int]]:
    if type(group) is not list or len(group) != 3:
        raise ValueError("a digest group is [slot, parts, digests]")
    slot, parts = _slot_parts(group[0], group[1])
    sums = _list(group[2])
    if len(sums) != parts or any(type(d) is not int for d in sums):
        raise ValueError("bad digests")
    return slot, parts, sums


def _keys_group(group: Any) -> tuple[int, int, set[int], Versions]:
    if type(group) is not list or len(group) != 4:
        raise ValueError("a keys group is [slot, parts, [part...], [[key, stamp, writer]...]]")
    slot, parts = _slot_parts(group[0], group[1], MAX_REFINED)
    listed = _list(group[2])
    if len(listed) > parts or any(type(p) is not int or not 0 <= p < parts for p in listed):
        raise ValueError("bad part")
    differ = set(listed)
    held: dict[bytes, tuple[int, str]] = {}
    for item in _list(group[3]):
        if type(item) is not list or len(item) != 3:
            raise ValueError("a version is [key, stamp, writer]")
        key, stamp, writer = item
        if (
            type(key) is not bytes
            or type(stamp) is not int
            or not 0 <= stamp < 1 << 64
            or type(writer) is not str
            or len(writer) > MAX_WRITER
        ):
            raise ValueError("bad version")
        held[key] = (stamp, writer)
    return slot, parts, differ, held


def _sync_group(group: Any) -> tuple[int, list[Exported], list[bytes]]:
    if type(group) is not list or len(group) != 3:
        raise ValueError("a sync group is [slot, [entry...], [key wanted...]]")
    slot = group[0]
    if type(slot) is not int or not 0 <= slot < SLOT_COUNT:
        raise ValueError("bad slot")
    items = decode_entries_untrusted(group[1])
    want = _list(group[2])
    if any(type(k) is not bytes for k in want):
        raise ValueError("bad key")
    return slot, items, want
