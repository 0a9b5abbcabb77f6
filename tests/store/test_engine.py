"""The store engine, in virtual time (every call takes ``now``)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from keycafe.store import entry
from keycafe.store.engine import MOVING, REPLICATED, Store, StoreConfig
from keycafe.store.keyslot import key_slot

NODE = "a" * 40
NOW = 1_000_000


def put(store: Store, key: bytes, value: bytes, expires: int = 0, now: int = 1000) -> None:
    store.put(key_slot(key), key, value, expires, now)


def get(store: Store, key: bytes, now: int = 1000) -> bytes | None:
    rec = store.lookup(key_slot(key), key, now)
    return None if rec is None else entry.value_of(rec)


def test_entries_are_grouped_by_slot() -> None:
    store = Store(NODE)
    put(store, b"{t}a", b"1")
    put(store, b"{t}b", b"2")
    slot = key_slot(b"t")
    assert store.count_in_slot(slot) == 2
    assert sorted(store.keys_in_slot(slot, 10)) == [b"{t}a", b"{t}b"]
    assert store.count() == 2


def test_each_write_is_stamped_with_an_increasing_hlc() -> None:
    store = Store(NODE)
    put(store, b"k", b"1", now=5000)
    first = store.lookup(key_slot(b"k"), b"k", 5000)
    put(store, b"k", b"2", now=5000)
    second = store.lookup(key_slot(b"k"), b"k", 5000)
    assert first is not None
    assert second is not None
    assert entry.stamp_of(second) > entry.stamp_of(first)
    assert entry.stamp_of(first) >> 16 == 5000
    assert store.writers[entry.writer_of(second)] == NODE


def test_lazy_expiry_on_access() -> None:
    store = Store(NODE)
    put(store, b"k", b"v", expires=2000, now=1000)
    assert get(store, b"k", now=1999) == b"v"
    assert store.count() == 1
    assert get(store, b"k", now=2000) is None
    assert store.count() == 0
    assert store.stats.expired_keys == 1


def test_active_expiry_reclaims_keys_nobody_reads_within_a_budget() -> None:
    store = Store(NODE)
    for i in range(100):
        put(store, b"k%d" % i, b"v", expires=2000 + i, now=1000)
    put(store, b"keep", b"v", now=1000)
    assert store.active_expire(now=2049, budget=30) is True  # more was due
    assert store.count() == 71
    assert store.active_expire(now=2049, budget=100) is False
    assert store.count() == 51
    assert store.count_volatile() == 50
    assert store.next_expiry() == 2050


def test_rewriting_a_key_cancels_its_old_expiry() -> None:
    store = Store(NODE)
    put(store, b"k", b"old", expires=2000)
    put(store, b"k", b"new")  # no TTL now
    store.active_expire(now=5000, budget=100)
    assert get(store, b"k", now=5000) == b"new"
    assert store.count_volatile() == 0


def test_stale_heap_items_are_compacted() -> None:
    store = Store(NODE)
    for i in range(3000):
        put(store, b"k", b"v", expires=10**9 + i)  # one key, 3000 heap items
    store.active_expire(now=1000, budget=10)
    assert len(store._heap) == 1


def test_delete_leaves_a_tombstone_collected_after_the_grace_period() -> None:
    store = Store(NODE, StoreConfig(tombstone_grace_ms=1000))
    put(store, b"k", b"v")
    slot = key_slot(b"k")
    assert store.remove(slot, b"k", 1000) is True
    assert store.remove(slot, b"k", 1000) is False
    tomb = store.tombstones[slot][b"k"]
    assert entry.stamp_of(tomb) > 0
    store.active_expire(now=1999, budget=100)
    assert b"k" in store.tombstones[slot]
    store.active_expire(now=2000, budget=100)
    assert b"k" not in store.tombstones[slot]
    assert store.stats.tombstones_collected == 1


def test_a_write_after_a_delete_clears_the_tombstone() -> None:
    store = Store(NODE)
    put(store, b"k", b"v")
    store.remove(key_slot(b"k"), b"k", 1000)
    put(store, b"k", b"again")
    assert b"k" not in store.tombstones[key_slot(b"k")]
    assert get(store, b"k") == b"again"


def test_flush_forgets_everything() -> None:
    store = Store(NODE)
    put(store, b"a", b"1", expires=5000)
    put(store, b"b", b"2")
    store.remove(key_slot(b"b"), b"b", 1000)
    store.flush()
    assert store.count() == 0
    assert store.count_volatile() == 0
    assert store.next_expiry() is None
    assert not any(store.tombstones)


def scan_all(store: Store, count: int, now: int = 1000) -> list[bytes]:
    cursor, seen = 0, []
    while True:
        cursor, keys = store.scan(cursor, count, now)
        seen += keys
        if cursor == 0:
            return seen


@settings(max_examples=50)
@given(keys=st.sets(st.binary(min_size=1, max_size=12), max_size=300), count=st.integers(1, 50))
def test_scan_returns_every_key_exactly_once_when_nothing_changes(
    keys: set[bytes], count: int
) -> None:
    store = Store(NODE)
    for k in keys:
        put(store, k, b"v")
    seen = scan_all(store, count)
    assert sorted(seen) == sorted(keys)


def test_scan_skips_expired_keys() -> None:
    store = Store(NODE)
    put(store, b"live", b"v")
    put(store, b"dead", b"v", expires=1500)
    assert scan_all(store, 10, now=2000) == [b"live"]


def test_writes_to_watched_slots_are_recorded_for_forwarding() -> None:
    store = Store(NODE)
    slot = key_slot(b"k")
    other = key_slot(b"other")
    assert slot != other
    store.watched[slot] = 1
    store.put(slot, b"k", b"v", 0, NOW)
    store.put(other, b"other", b"v", 0, NOW)
    record = store.lookup(slot, b"k", NOW)
    assert record is not None
    store.set_expiry(slot, b"k", record, NOW + 1000, NOW)
    store.remove(slot, b"k", NOW)
    store.remove(other, b"other", NOW)
    assert store.dirty == [(slot, b"k")] * 3


def test_moving_and_replicated_slots_are_logged_apart_and_cleared_apart() -> None:
    store = Store(NODE)
    a, b = key_slot(b"a"), key_slot(b"b")
    woken: list[int] = []
    store.on_dirty = lambda: woken.append(len(store.dirty) + len(store.replog))
    store.set_watch(MOVING, [a])
    store.set_watch(REPLICATED, [a, b])
    store.put(a, b"a", b"1", 0, NOW)
    store.put(b, b"b", b"1", 0, NOW)
    assert store.dirty == [(a, b"a")]
    assert store.replog == [(a, b"a"), (b, b"b")]
    assert woken == [1, 2]  # once per log that stopped being empty
    store.set_watch(MOVING, None)  # the hand-off's slots settle: replication goes on
    assert (store.watched[a], store.watched[b]) == (REPLICATED, REPLICATED)
    store.set_watch(REPLICATED, None)
    store.set_watch(MOVING, [b])
    store.set_watch(REPLICATED, None)
    assert (store.watched[a], store.watched[b]) == (0, MOVING)


def test_dropping_a_slot_forgets_its_entries_and_tombstones_only() -> None:
    store = Store(NODE)
    slot = key_slot(b"a")
    store.watched[slot] = 1
    store.put(slot, b"a", b"1", NOW + 5000, NOW)
    store.put(slot, b"{a}b", b"2", 0, NOW)
    store.put(slot, b"{a}c", b"3", 0, NOW)
    store.remove(slot, b"{a}c", NOW)
    store.put(key_slot(b"z"), b"z", b"4", NOW + 5000, NOW)
    assert store.drop_slot(slot) == 2
    assert store.count() == 1
    assert store.count_volatile() == 1
    assert store.slot_keys(slot) == []
    assert not store.watched[slot]
    # The dropped key's expiry item is stale: expiring it later changes nothing.
    assert not store.active_expire(NOW + 10_000, 100)
    assert store.count() == 0


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["put", "put_ttl", "remove", "expire", "tick", "watch", "drop"]),
        st.sampled_from([b"a", b"b", b"{a}c", b"d"]),
    ),
    max_size=40,
)


@given(_OPS)
@settings(max_examples=200, deadline=None)
def test_writes_agree_with_a_model_of_values_and_ttls(ops: list[tuple[str, bytes]]) -> None:
    """Whatever mix of plain writes (the fast path), TTL writes, deletes, expiry,
    watching and dropping: every key reads as a dict model says, the volatile
    count is exact, and watched slots record every write."""
    store = Store(NODE, StoreConfig(tombstone_grace_ms=50))
    model: dict[bytes, tuple[bytes, int]] = {}  # key -> (value, expires or 0)
    now = 1000
    for i, (op, key) in enumerate(ops):
        now += 7
        slot = key_slot(key)
        value = b"v%d" % i
        dirty = len(store.dirty)
        if op == "put":
            store.put(slot, key, value, 0, now)
            model[key] = (value, 0)
        elif op == "put_ttl":
            store.put(slot, key, value, now + 20, now)
            model[key] = (value, now + 20)
        elif op == "remove":
            store.remove(slot, key, now)
            model.pop(key, None)
        elif op == "expire":
            store.active_expire(now, budget=100)
        elif op == "tick":
            now += 30
            store.active_expire(now, budget=100)
        elif op == "watch":
            store.watched[slot] = 1
        else:
            store.drop_slot(slot)
            model = {k: v for k, v in model.items() if key_slot(k) != slot}
        if op in ("put", "put_ttl") and store.watched[slot]:
            assert store.dirty[dirty:] == [(slot, key)]
        model = {k: (v, e) for k, (v, e) in model.items() if not e or e > now}
        live = {
            k: (entry.value_of(r), entry.expires_of(r))
            for bucket in store.slots
            for k, r in bucket.items()
            if not entry.expires_of(r) or entry.expires_of(r) > now
        }
        assert live == model
        volatile = sum(1 for b in store.slots for r in b.values() if entry.expires_of(r))
        assert store.count_volatile() == volatile


def test_flush_slots_tombstones_watched_slots_in_bulk_and_clears_the_others() -> None:
    store = Store("n" * 40)
    woken = []
    store.on_dirty = lambda: woken.append(1)
    for slot in (1, 2, 3):
        for i in range(1000):
            store.put(slot, b"%d:%d" % (slot, i), b"v", NOW + 60_000 if i % 2 else 0, NOW)
    store.set_watch(REPLICATED, [1])
    store.set_watch(MOVING, [2])
    assert store.flush_slots([1, 2, 3], NOW + 1) == 3000
    assert store.count() == 0
    assert store.count_volatile() == 0
    assert len(store.tombstones[1]) == len(store.tombstones[2]) == 1000
    assert store.tombstones[3] == {}
    assert len(store.replog) == 1000
    assert {s for s, _ in store.replog} == {1}
    assert len(store.dirty) == 1000
    assert {s for s, _ in store.dirty} == {2}
    assert woken
    # The tombstones carry one stamp newer than every write before, and are
    # collected after the grace period like any other.
    assert store.export(1, [b"1:5"])[0].value is None
    store.active_expire(NOW + 1 + store.config.tombstone_grace_ms + 1, 10_000)
    assert store.tombstones[1] == {}
    assert store.tombstones[2] == {}
