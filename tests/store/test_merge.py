"""Moving entries between stores: last writer wins, in any order."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from keycafe.store import entry
from keycafe.store.engine import Exported, Store, StoreConfig
from keycafe.store.keyslot import key_slot

SLOT = key_slot(b"{t}")
KEYS = [b"{t}a", b"{t}b", b"{t}c"]
WRITERS = ["w1", "w2", "w3"]


def snapshot(store: Store) -> dict[bytes, tuple[bytes | None, int, int, str]]:
    return {
        x.key: (x.value, x.expires_ms, x.stamp, x.writer)
        for x in store.export(SLOT, store.slot_keys(SLOT))
    }


writes = st.lists(
    st.builds(
        Exported,
        key=st.sampled_from(KEYS),
        value=st.none() | st.binary(max_size=8),
        expires_ms=st.just(0),
        stamp=st.integers(1, 50).map(lambda ms: (10_000 + ms) << 16),
        writer=st.sampled_from(WRITERS),
    ),
    max_size=30,
    # One stamp per writer is one write: a replay is the same write.
    unique_by=lambda x: (x.stamp, x.writer),
)


@given(writes=writes, seed=st.integers(0, 1000))
def test_replicas_converge_whatever_the_order(writes: list[Exported], seed: int) -> None:
    rnd = random.Random(seed)
    a, b = Store("a"), Store("b")
    shuffled = writes[:]
    rnd.shuffle(shuffled)
    split = rnd.randint(0, len(writes))
    a.merge(SLOT, writes[:split], now=1)
    b.merge(SLOT, shuffled, now=1)
    # Exchange what each holds, both ways (anti-entropy in miniature).
    a.merge(SLOT, b.export(SLOT, b.slot_keys(SLOT)), now=1)
    b.merge(SLOT, a.export(SLOT, a.slot_keys(SLOT)), now=1)
    assert snapshot(a) == snapshot(b)
    # And what they hold is, per key, the write with the greatest (stamp, writer).
    winners: dict[bytes, Exported] = {}
    for w in writes:
        if w.key not in winners or w.version > winners[w.key].version:
            winners[w.key] = w
    assert snapshot(a) == {
        k: (w.value, w.expires_ms, w.stamp, w.writer) for k, w in winners.items()
    }


@given(writes=writes)
def test_merging_twice_changes_nothing(writes: list[Exported]) -> None:
    store = Store("me")
    store.merge(SLOT, writes, now=1)
    before = snapshot(store)
    assert store.merge(SLOT, writes, now=1) == 0
    assert snapshot(store) == before


def test_an_older_write_cannot_resurrect_a_deleted_key() -> None:
    store = Store("me")
    store.put(SLOT, b"{t}a", b"v", 0, now=1000)
    store.remove(SLOT, b"{t}a", now=2000)
    late = Exported(key=b"{t}a", value=b"old", expires_ms=0, stamp=1500 << 16, writer="other")
    assert store.merge(SLOT, [late], now=3000) == 0
    assert store.lookup(SLOT, b"{t}a", 3000) is None


def test_local_writes_after_a_merge_come_later() -> None:
    store = Store("me")
    future = Exported(
        key=b"{t}a", value=b"remote", expires_ms=0, stamp=(1000 + 200_000) << 16, writer="other"
    )
    # The remote clock is minutes ahead of ours (within the bound).
    assert store.merge(SLOT, [future], now=1000) == 1
    store.put(SLOT, b"{t}a", b"local", 0, now=1000)
    record = store.lookup(SLOT, b"{t}a", 1000)
    assert record is not None
    assert entry.value_of(record) == b"local"
    assert entry.stamp_of(record) > future.stamp


def test_merged_ttls_expire_and_tombstones_are_collected() -> None:
    store = Store("me")
    items = [
        Exported(key=b"{t}a", value=b"v", expires_ms=5000, stamp=1000 << 16, writer="x"),
        Exported(key=b"{t}b", value=None, expires_ms=1000, stamp=1000 << 16, writer="x"),
    ]
    assert store.merge(SLOT, items, now=1000) == 2
    assert store.count_volatile() == 1
    store.active_expire(now=5000, budget=100)
    assert store.lookup(SLOT, b"{t}a", 5000) is None
    store.active_expire(now=1000 + store.config.tombstone_grace_ms, budget=100)
    assert b"{t}b" not in store.tombstones[SLOT]


def test_export_in_batches_from_a_snapshot() -> None:
    store = Store("me")
    for i in range(25):
        store.put(SLOT, b"{t}k%d" % i, b"v%d" % i, 0, now=1000)
    keys = store.slot_keys(SLOT)
    store.remove(SLOT, b"{t}k3", now=1001)  # deleted while streaming: goes as a tombstone
    copy = Store("copy")
    for i in range(0, len(keys), 10):
        copy.merge(SLOT, store.export(SLOT, keys[i : i + 10]), now=1002)
    assert snapshot(copy) == snapshot(store)
    assert copy.lookup(SLOT, b"{t}k3", 1002) is None
    assert copy.count() == 24


def test_an_old_remote_tombstone_is_collected_behind_a_young_local_one() -> None:
    store = Store("me", StoreConfig(tombstone_grace_ms=1000))
    store.put(SLOT, b"{t}young", b"v", 0, now=10_000)
    store.remove(SLOT, b"{t}young", now=10_000)  # due at 11_000
    old = Exported(key=b"{t}old", value=None, expires_ms=1_000, stamp=1_000 << 16, writer="x")
    store.merge(SLOT, [old], now=10_000)  # deleted long ago elsewhere: due at 2_000
    store.active_expire(now=10_500, budget=100)
    assert b"{t}old" not in store.tombstones[SLOT]
    assert b"{t}young" in store.tombstones[SLOT]
    store.active_expire(now=11_000, budget=100)
    assert not store.tombstones[SLOT]
    assert store.stats.tombstones_collected == 2


tombstone_ops = st.lists(
    st.tuples(
        st.sampled_from(["remove", "merge", "rewrite", "collect"]),
        st.sampled_from(KEYS),
        st.integers(0, 3000),  # how long ago a merged tombstone's delete was
    ),
    max_size=40,
)


@given(tombstone_ops)
def test_every_tombstone_is_collected_once_its_grace_is_over(
    ops: list[tuple[str, bytes, int]],
) -> None:
    """Local deletes, remote tombstones of any age, rewrites of tombstoned keys
    and collection in any mix: after each collection exactly the tombstones
    whose grace is over are gone, and a rewritten key is never touched."""
    grace = 1000
    store = Store("me", StoreConfig(tombstone_grace_ms=grace))
    deleted: dict[bytes, int] = {}  # the model: key -> when its delete happened
    now = 10_000
    for i, (op, key, age) in enumerate(ops):
        now += 100
        if op == "remove":
            store.put(SLOT, key, b"v", 0, now)
            store.remove(SLOT, key, now)
            deleted[key] = now
        elif op == "merge":
            tomb = Exported(
                key=key, value=None, expires_ms=now - age, stamp=(now << 16) + i, writer="x"
            )
            assert store.merge(SLOT, [tomb], now) == 1
            deleted[key] = now - age
        elif op == "rewrite":
            store.put(SLOT, key, b"again", 0, now)
            deleted.pop(key, None)
        else:
            store.active_expire(now, budget=1000)
            deleted = {k: t for k, t in deleted.items() if t > now - grace}
            assert set(store.tombstones[SLOT]) == set(deleted)
        assert {k for k in KEYS if store.lookup(SLOT, k, now) is None} >= set(deleted)
    now += grace + 3000
    store.active_expire(now, budget=1000)
    assert not store.tombstones[SLOT]


def test_a_stamp_at_the_top_of_its_range_is_refused_and_writes_go_on() -> None:
    store = Store("me")
    now = 1_700_000_000_000
    top = Exported(key=b"{t}a", value=b"v", expires_ms=0, stamp=2**64 - 1, writer="bad")
    assert store.merge(SLOT, [top], now) == 0
    assert store.clock.refused == 1
    assert store.lookup(SLOT, b"{t}a", now) is None
    store.put(SLOT, b"{t}a", b"local", 0, now)  # raised struct.error when it was adopted
    record = store.lookup(SLOT, b"{t}a", now)
    assert record is not None
    assert entry.stamp_of(record) == now << 16


def test_a_write_up_to_the_skew_bound_ahead_is_merged() -> None:
    store = Store("me", StoreConfig(max_clock_ahead_ms=60_000))
    now = 1_700_000_000_000
    near = Exported(key=b"{t}a", value=b"n", expires_ms=0, stamp=(now + 60_000) << 16, writer="x")
    far = Exported(key=b"{t}b", value=b"f", expires_ms=0, stamp=(now + 60_001) << 16, writer="x")
    assert store.merge(SLOT, [near, far], now) == 1
    assert store.clock.refused == 1
    assert sorted(snapshot(store)) == [b"{t}a"]


@given(
    stamps=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=5),
    now=st.integers(0, 2**48 + 10),
    tombstone=st.booleans(),
)
@settings(max_examples=50)
def test_merging_any_stamp_never_raises_and_local_writes_go_on(
    stamps: list[int], now: int, tombstone: bool
) -> None:
    store = Store("me")
    items = [
        Exported(
            key=KEYS[i % 3], value=None if tombstone else b"r", expires_ms=0, stamp=s, writer="x"
        )
        for i, s in enumerate(stamps)
    ]
    store.merge(SLOT, items, now)
    for key in KEYS:
        store.put(SLOT, key, b"local", 0, now)
        store.set_expiry(SLOT, key, store.slots[SLOT][key], now + 10, now)
        assert store.remove(SLOT, key, now)
    assert store.clock.last <= 2**64 - 1
    # Whatever was refused, what was merged lies within the bound.
    merged = [s for s in stamps if s >> 16 <= now + store.config.max_clock_ahead_ms]
    assert store.clock.refused == len(stamps) - len(merged)
