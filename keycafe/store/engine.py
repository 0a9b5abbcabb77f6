"""The store engine: a sans-I/O core holding one node's share of the keyspace.

Entries are grouped per hash slot (one dict per slot), so a slot can be counted,
streamed or dropped as a unit. Time comes in as ``now`` (unix ms) on every call.

Expiry is lazy on access plus active: keys with a TTL also sit in a min-heap by
expiry time, and ``active_expire`` pops what is due with a per-call budget. Like
Redis's sampling cycle, it reclaims memory of keys nobody reads again in bounded
steps off the request path; unlike sampling it finds every due key, costs
O(log n) per TTL write, and needs no randomness. Deletes leave tombstones (stamp
and writer) so a late, older replicated write cannot resurrect a key; they are
collected after ``tombstone_grace_ms``, from a min-heap by delete time: merged
tombstones arrive with any delete time, older than local ones, so a FIFO would
hold an old one back behind every younger head.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Callable, Iterable
from itertools import compress, islice
from typing import Final

import attrs

from keycafe.store import entry
from keycafe.store.hlc import LOGICAL_BITS, MAX_AHEAD_MS, HybridClock
from keycafe.store.keyslot import SLOT_COUNT


@attrs.frozen(kw_only=True)
class StoreConfig:
    # How long a tombstone outlives its delete. Anti-entropy (a later issue)
    # must reconcile replicas within this time; 5 minutes is generous for that.
    tombstone_grace_ms: int = 300_000
    # Rebuild the expiry heap when stale items outnumber live ones this much.
    heap_slack: float = 2.0
    # Remote entries stamped further ahead of our wall clock are refused (see
    # keycafe/store/hlc.py for why 5 minutes).
    max_clock_ahead_ms: int = MAX_AHEAD_MS


@attrs.frozen
class Exported:
    """One entry as it travels between nodes (slot streaming, replication)."""

    key: bytes
    value: bytes | None  # None: a tombstone
    expires_ms: int  # absolute unix ms, 0 for none; for a tombstone, when it was deleted
    stamp: int  # hybrid logical clock
    writer: str  # node id of the writer

    @property
    def version(self) -> tuple[int, str]:
        """What last-writer-wins compares: the stamp, then the writer's id."""
        return (self.stamp, self.writer)


@attrs.define(eq=False)
class Stats:
    expired_keys: int = 0
    tombstones_collected: int = 0


# ``Store.watched`` flags.
MOVING: Final = 1
REPLICATED: Final = 2
# Byte translation tables that clear one flag in every slot at once.
_CLEAR: Final = {f: bytes(b & ~f for b in range(256)) for f in (MOVING, REPLICATED)}

_pack = entry.pack
_NO_EXPIRY = entry.NO_EXPIRY


def _is_expired(record: bytes, now: int) -> bool:
    return not record.startswith(entry.NO_EXPIRY) and entry.expires_of(record) <= now


class Store:
    """Live entries per slot, their tombstones, and the expiry schedule."""

    def __init__(self, node_id: str, config: StoreConfig | None = None) -> None:
        self.config = config or StoreConfig()
        self.clock = HybridClock(max_ahead_ms=self.config.max_clock_ahead_ms)
        # Writer index -> node id; index 0 is this node.
        self.writers: list[str] = [node_id]
        self._writer_index: dict[str, int] = {node_id: 0}
        self.slots: list[dict[bytes, bytes]] = [{} for _ in range(SLOT_COUNT)]
        self.tombstones: list[dict[bytes, bytes]] = [{} for _ in range(SLOT_COUNT)]
        self.stats = Stats()
        self._heap: list[tuple[int, int, bytes]] = []  # (expires_ms, slot, key)
        self._volatile = 0  # live entries with an expiry
        # Every tombstone has an item here; items of tombstones since rewritten,
        # replaced or dropped go stale and are skipped when popped.
        self._tomb_heap: list[tuple[int, int, bytes]] = []  # (deleted_ms, slot, key)
        # Slots whose writes must also reach another node, as flags per slot:
        # MOVING (moving to a joiner, or handed off by a leaver: a write
        # appends (slot, key) to ``dirty``) and REPLICATED (this node is the
        # slot's primary and it has replicas: a write appends to ``replog``).
        # The cluster core drains both; ``on_dirty`` is called when either
        # stops being empty, so nobody has to poll them.
        self.watched = bytearray(SLOT_COUNT)
        self.dirty: list[tuple[int, bytes]] = []
        self.replog: list[tuple[int, bytes]] = []
        # Writes appended to ``replog`` so far: the replication core numbers
        # them in the same order, so a request that took this from n to m
        # waits for write m to be durable.
        self.replicated_writes = 0
        # Per slot, the number of its last write appended to ``replog``: a
        # read of the slot must not be answered before that write is durable
        # (it could be lost with its primary, and a value read would vanish).
        # One entry per slot at most; an old number is simply already durable.
        self.unsettled: dict[int, int] = {}
        self.on_dirty: Callable[[], None] | None = None

    # -- reads ---------------------------------------------------------------------

    def lookup(self, slot: int, key: bytes, now: int) -> bytes | None:
        """The live record for ``key``, expiring it first if it is due."""
        record = self.slots[slot].get(key)
        if record is None or record.startswith(entry.NO_EXPIRY):
            return record
        if entry.expires_of(record) <= now:
            self._expire(slot, key, record)
            return None
        return record

    def count(self, only: bytes | None = None) -> int:
        """Keys held, including expired ones not yet reclaimed (as Redis's
        DBSIZE); ``only``: in the slots where it holds 1."""
        if only is None:
            return sum(map(len, self.slots))
        return sum(map(len, compress(self.slots, only)))

    def count_volatile(self) -> int:
        return self._volatile

    def count_in_slot(self, slot: int) -> int:
        return len(self.slots[slot])

    def keys_in_slot(self, slot: int, limit: int) -> list[bytes]:
        keys: list[bytes] = []
        for key in self.slots[slot]:
            if len(keys) >= limit:
                break
            keys.append(key)
        return keys

    def scan(
        self, cursor: int, count: int, now: int, only: bytes | None = None
    ) -> tuple[int, list[bytes]]:
        """Walk the keyspace slot by slot (``only``: the slots where it holds
        1); the cursor packs (slot << 32 | offset).

        A key present for the whole scan is returned at least once, provided
        its slot is not written meanwhile (the offset within a slot is
        positional). Returns (next cursor, keys); cursor 0 means done.
        """
        slot, offset = divmod(cursor, 1 << 32)
        keys: list[bytes] = []
        while slot < SLOT_COUNT and len(keys) < count:
            if only is not None and not only[slot]:
                slot, offset = slot + 1, 0
                continue
            bucket = self.slots[slot]
            if offset < len(bucket):
                batch = list(islice(bucket.items(), offset, offset + count - len(keys)))
                offset += len(batch)
                keys.extend(k for k, r in batch if not _is_expired(r, now))
                if offset < len(bucket):
                    break  # the count filled up inside this slot
            slot += 1
            offset = 0
        if slot >= SLOT_COUNT:
            return 0, keys
        return (slot << 32) | offset, keys

    # -- writes --------------------------------------------------------------------

    def put(self, slot: int, key: bytes, value: bytes, expires_ms: int, now: int) -> None:
        """Write ``value`` (``expires_ms`` absolute unix ms, 0 for none)."""
        # HybridClock.now, inlined: this runs for every write, and the call
        # cost ~120 ns of a ~490 ns put (measured).
        clock = self.clock
        stamp = clock.last + 1
        wall = now << LOGICAL_BITS
        if wall > stamp:
            stamp = wall
        try:
            record = _pack(value, expires_ms, stamp, 0)
        except struct.error:
            # The stamp is past its 64-bit field (wall time past the year
            # 10889): HybridClock.now saturates there. A try costs nothing
            # until it raises, unlike a comparison on every write.
            stamp = clock.now(now)
            record = _pack(value, expires_ms, stamp, 0)
        clock.last = stamp
        if expires_ms or self._volatile or self._tomb_heap or self.watched[slot]:
            self._put_tracked(slot, key, record, expires_ms)
        else:
            # No TTL anywhere (so the old entry had none), no tombstone, nobody
            # watching: one dict store. Worth it: ~120 ns of a pipelined SET.
            self.slots[slot][key] = record

    def _put_tracked(self, slot: int, key: bytes, record: bytes, expires_ms: int) -> None:
        bucket = self.slots[slot]
        old = bucket.get(key)
        bucket[key] = record
        if expires_ms or (old is not None and not old.startswith(_NO_EXPIRY)):
            self._track_expiry(slot, key, old, expires_ms)
        if self._tomb_heap:
            tombs = self.tombstones[slot]
            if tombs:
                tombs.pop(key, None)
        if self.watched[slot]:
            self._mark(slot, key)

    def set_expiry(self, slot: int, key: bytes, record: bytes, expires_ms: int, now: int) -> None:
        """Give an existing live key a new expiry (0 removes it)."""
        stamp = self.clock.now(now)
        self.slots[slot][key] = entry.restamp(record, expires_ms, stamp, 0)
        self._track_expiry(slot, key, record, expires_ms)
        if self.watched[slot]:
            self._mark(slot, key)

    def remove(self, slot: int, key: bytes, now: int) -> bool:
        """Delete ``key`` if it is live, leaving a tombstone. True if it was."""
        record = self.lookup(slot, key, now)
        if record is None:
            return False
        del self.slots[slot][key]
        if not record.startswith(entry.NO_EXPIRY):
            self._volatile -= 1
        stamp = self.clock.now(now)
        self.tombstones[slot][key] = entry.pack(b"", now, stamp, 0)
        heapq.heappush(self._tomb_heap, (now, slot, key))
        if self.watched[slot]:
            self._mark(slot, key)
        return True

    def _mark(self, slot: int, key: bytes) -> None:
        flags = self.watched[slot]
        if flags & REPLICATED:
            self.replicated_writes += 1
            self.replog.append((slot, key))
            self.unsettled[slot] = self.replicated_writes
            if len(self.replog) == 1 and self.on_dirty is not None:
                self.on_dirty()
        if flags & MOVING:
            self.dirty.append((slot, key))
            if len(self.dirty) == 1 and self.on_dirty is not None:
                self.on_dirty()

    def set_watch(self, flag: int, slots: Iterable[int] | None) -> None:
        """Set ``flag`` on ``slots`` (None: clear it on every slot)."""
        watched = self.watched
        if slots is None:
            watched[:] = watched.translate(_CLEAR[flag])
            return
        for slot in slots:
            watched[slot] |= flag

    def flush(self) -> None:
        """Drop everything (FLUSHALL): no tombstones, as Redis keeps no trace."""
        for bucket in self.slots:
            bucket.clear()
        for tombs in self.tombstones:
            tombs.clear()
        self._heap.clear()
        self._tomb_heap.clear()
        self._volatile = 0

    def forget(self, slot: int, key: bytes) -> bool:
        """Drop ``key``'s entry or tombstone here only, leaving no trace and
        telling no one (DEBUG FORGET). True if there was one."""
        record = self.slots[slot].pop(key, None)
        if record is not None and not record.startswith(_NO_EXPIRY):
            self._volatile -= 1
        tomb = self.tombstones[slot].pop(key, None)
        return record is not None or tomb is not None

    def flush_slots(self, slots: Iterable[int], now: int) -> int:
        """FLUSHALL of ``slots`` (those a node leads): a slot copied elsewhere
        (replicated or moving) has each key deleted with a tombstone, which
        travels as every delete does, so its copies empty too and no copy can
        bring the keys back; any other is cleared with no trace, as Redis
        does. Returns how many live keys went."""
        gone = 0
        # One stamp and one tombstone record serve every key (a tombstone
        # holds no key), and the dicts and heap are filled in bulk: a delete
        # per key took 4.5 s for a million keys, a step no event loop affords.
        stamp = self.clock.now(now)
        tomb = entry.pack(b"", now, stamp, 0)
        grew = False
        for slot in slots:
            bucket = self.slots[slot]
            if not bucket:
                continue
            flags = self.watched[slot]
            if flags:
                self._volatile -= sum(1 for r in bucket.values() if not r.startswith(_NO_EXPIRY))
                gone += len(bucket)
                self.tombstones[slot].update(dict.fromkeys(bucket, tomb))
                self._tomb_heap.extend((now, slot, key) for key in bucket)
                grew = True
                if flags & REPLICATED:
                    self.replicated_writes += len(bucket)
                    self.replog.extend((slot, key) for key in bucket)
                    self.unsettled[slot] = self.replicated_writes
                if flags & MOVING:
                    self.dirty.extend((slot, key) for key in bucket)
                bucket.clear()
            else:
                gone += len(bucket)
                self._volatile -= sum(1 for r in bucket.values() if not r.startswith(_NO_EXPIRY))
                bucket.clear()
                self.tombstones[slot].clear()
        if grew:
            heapq.heapify(self._tomb_heap)
            if self.on_dirty is not None and (self.replog or self.dirty):
                self.on_dirty()
        return gone

    # -- moving entries between nodes --------------------------------------------

    def slot_keys(self, slot: int) -> list[bytes]:
        """A snapshot of the keys of ``slot``, tombstoned ones included, to export
        in batches (writes made meanwhile travel separately)."""
        return [*self.slots[slot], *self.tombstones[slot]]

    def drop_slot(self, slot: int) -> int:
        """Forget a slot this node no longer owns (entries and tombstones);
        returns how many live keys went. Its heap items go stale and are skipped."""
        bucket = self.slots[slot]
        dropped = len(bucket)
        self._volatile -= sum(1 for r in bucket.values() if not r.startswith(entry.NO_EXPIRY))
        bucket.clear()
        self.tombstones[slot].clear()
        self.watched[slot] = 0
        return dropped

    def export(self, slot: int, keys: Iterable[bytes]) -> list[Exported]:
        """The current entries (or tombstones) of ``keys``; keys gone are skipped."""
        live, tombs, writers = self.slots[slot], self.tombstones[slot], self.writers
        out = []
        for key in keys:
            record = live.get(key)
            value: bytes | None = None
            if record is not None:
                value = entry.value_of(record)
            else:
                record = tombs.get(key)
                if record is None:
                    continue
            out.append(
                Exported(
                    key=key,
                    value=value,
                    expires_ms=entry.expires_of(record),
                    stamp=entry.stamp_of(record),
                    writer=writers[entry.writer_of(record)],
                )
            )
        return out

    def merge(self, slot: int, items: Iterable[Exported], now: int) -> int:
        """Apply remote entries: last writer wins by (stamp, writer id), so every
        replica that has seen the same writes holds the same entries, whatever
        the order they came in. Returns how many changed something. In a
        watched slot, what changed is recorded like a local write.

        An entry stamped further ahead of ``now`` than the clock admits is
        refused: not merged, counted in ``clock.refused``. Merged, it would win
        every last-writer-wins comparison for its key until wall time caught up
        (newer writes would be dropped) and drag our clock, and every clock
        that hears from us, as far ahead.
        """
        live, tombs = self.slots[slot], self.tombstones[slot]
        watched = self.watched[slot]
        admit = self.clock.admit
        applied = 0
        newest = 0
        for item in items:
            if not admit(item.stamp, now):
                continue
            current = live.get(item.key)
            if current is None:
                current = tombs.get(item.key)
            if current is not None:
                ours = (entry.stamp_of(current), self.writers[entry.writer_of(current)])
                if item.version <= ours:
                    continue  # older or the same write: nothing to do
            writer = self._writer(item.writer)
            old = live.pop(item.key, None)
            if item.value is None:
                if old is not None and not old.startswith(entry.NO_EXPIRY):
                    self._volatile -= 1
                tombs[item.key] = entry.pack(b"", item.expires_ms, item.stamp, writer)
                heapq.heappush(self._tomb_heap, (item.expires_ms, slot, item.key))
            else:
                tombs.pop(item.key, None)
                live[item.key] = entry.pack(item.value, item.expires_ms, item.stamp, writer)
                self._track_expiry(slot, item.key, old, item.expires_ms)
            if watched:
                # A slot moving on from here: what arrived goes on too.
                self._mark(slot, item.key)
            applied += 1
            newest = max(newest, item.stamp)
        if newest:
            self.clock.observe(newest, now)  # our next writes come after what we saw
        return applied

    def _writer(self, node_id: str) -> int:
        index = self._writer_index.get(node_id)
        if index is None:
            index = len(self.writers)
            if index > 0xFFFF:
                raise ValueError("more than 65536 distinct writers")
            self.writers.append(node_id)
            self._writer_index[node_id] = index
        return index

    # -- expiry --------------------------------------------------------------------

    def _track_expiry(self, slot: int, key: bytes, old: bytes | None, expires_ms: int) -> None:
        if old is not None and not old.startswith(entry.NO_EXPIRY):
            self._volatile -= 1
        if expires_ms:
            self._volatile += 1
            heapq.heappush(self._heap, (expires_ms, slot, key))

    def _expire(self, slot: int, key: bytes, record: bytes) -> None:
        # Expiry times are absolute, so every replica expires a key by itself at
        # the same moment: no tombstone is needed.
        del self.slots[slot][key]
        self._volatile -= 1
        self.stats.expired_keys += 1

    def next_expiry(self) -> int | None:
        """Earliest scheduled expiry (unix ms), if any; may be a stale item."""
        return self._heap[0][0] if self._heap else None

    def active_expire(self, now: int, budget: int) -> bool:
        """Reclaim up to ``budget`` due keys and old tombstones.

        Returns True if more work was due than the budget allowed.
        """
        heap = self._heap
        slots = self.slots
        while heap and heap[0][0] <= now:
            if budget <= 0:
                return True
            expires_ms, slot, key = heapq.heappop(heap)
            budget -= 1
            record = slots[slot].get(key)
            # Skip stale items: the key was deleted, rewritten or given a new TTL.
            if record is not None and entry.expires_of(record) == expires_ms:
                self._expire(slot, key, record)
        if len(heap) > 1024 and len(heap) > self.config.heap_slack * (self._volatile + 1):
            self._rebuild_heap()
        return self._collect_tombstones(now, budget)

    def _rebuild_heap(self) -> None:
        heap = [
            (entry.expires_of(record), slot, key)
            for slot, bucket in enumerate(self.slots)
            for key, record in bucket.items()
            if not record.startswith(entry.NO_EXPIRY)
        ]
        heapq.heapify(heap)
        self._heap = heap

    def _collect_tombstones(self, now: int, budget: int) -> bool:
        heap = self._tomb_heap
        horizon = now - self.config.tombstone_grace_ms
        while heap and heap[0][0] <= horizon:
            if budget <= 0:
                return True
            deleted_ms, slot, key = heapq.heappop(heap)
            budget -= 1
            tomb = self.tombstones[slot].get(key)
            if tomb is not None and entry.expires_of(tomb) == deleted_ms:
                del self.tombstones[slot][key]
                self.stats.tombstones_collected += 1
        return False
