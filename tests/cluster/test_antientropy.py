"""Anti-entropy: copies that differ are found by digest and repaired key by key,
in both directions, only between a slot's primary and its replicas."""

from __future__ import annotations

from typing import Any

import pytest

from keycafe.cluster import antientropy, frames
from keycafe.cluster.antientropy import PERIOD, STEP_INTERVAL, AntiEntropy, digests, parts_for
from keycafe.cluster.frames import Frame
from keycafe.cluster.ring import RingConfig
from keycafe.cluster.simulator import ClusterSimulator, SimClient, run_writer
from keycafe.store.engine import REPLICATED, Exported, Store
from keycafe.store.keyslot import SLOT_COUNT, key_slot

A, B, C = "a" * 40, "b" * 40, "c" * 40
WALL = 1_800_000_000_000


class Net:
    """Anti-entropy cores joined by in-order links."""

    def __init__(self, owners: tuple[tuple[str, ...], ...], *names: str) -> None:
        self.now = 0.0
        self.cores = {n: AntiEntropy(node=n, store=Store(n)) for n in names}
        for core in self.cores.values():
            core.set_ring((1, 1), owners)
            core.handle_timer(self.now)  # schedules the first pass
        self.frames = 0

    def run(self, seconds: float) -> None:
        """Timers and frames (delivered at once) for ``seconds`` of virtual time."""
        end = self.now + seconds
        while True:
            self.deliver()
            due = [t for c in self.cores.values() if (t := c.get_timer()) is not None]
            t = min(due, default=end)
            if t > end:
                break
            self.now = max(self.now, t)
            for core in self.cores.values():
                timer = core.get_timer()
                if timer is not None and timer <= self.now:
                    core.handle_timer(self.now)
        self.now = end

    def deliver(self) -> None:
        while True:
            out = [
                (n, o) for n, c in self.cores.items() for o in c.frames_to_send(self.now, 1 << 20)
            ]
            if not out:
                return
            for src, o in out:
                frames.encode_frame(o.kind, o.body)  # raises past the link's frame limit
                self.frames += 1
                self.cores[o.peer].receive_frame(src, Frame(o.kind, o.body), self.now, WALL)


def owners_of(*nodes: str) -> tuple[tuple[str, ...], ...]:
    return (tuple(nodes),) * SLOT_COUNT


def put(store: Store, key: bytes, value: bytes, wall: int = WALL) -> None:
    store.put(key_slot(key), key, value, 0, wall)


def get(store: Store, key: bytes) -> bytes | None:
    record = store.lookup(key_slot(key), key, WALL)
    return None if record is None else record[18:]


def entries(store: Store, slot: int) -> list[Any]:
    """A slot's entries and tombstones as they travel (records hold a
    store-local writer index, so they are not compared as bytes)."""
    return sorted(store.export(slot, store.slot_keys(slot)), key=lambda e: e.key)


def same(a: Store, b: Store) -> bool:
    return all(entries(a, s) == entries(b, s) for s in range(SLOT_COUNT))


def test_digests_do_not_depend_on_order_and_see_every_difference() -> None:
    one, two = Store(A), Store(A)
    keys = [b"{s}k%d" % i for i in range(300)]
    slot = key_slot(keys[0])
    for k in keys:
        put(one, k, b"v", WALL)
    for k in reversed(keys):
        two.merge(slot, one.export(slot, [k]), WALL)
    assert digests(one, slot, 4) == digests(two, slot, 4)
    put(two, keys[5], b"v", WALL + 1)  # same value, newer stamp
    assert digests(one, slot, 4) != digests(two, slot, 4)
    assert (
        sum(a != b for a, b in zip(digests(one, slot, 4), digests(two, slot, 4), strict=True)) == 1
    )
    one.remove(slot, keys[7], WALL + 2)
    assert digests(one, slot, 1) != digests(two, slot, 1)


def test_bigger_slots_get_more_parts_up_to_a_bound() -> None:
    assert parts_for(0) == parts_for(2048) == 1
    assert parts_for(2049) == 2
    assert parts_for(1 << 40) == antientropy.MAX_PARTS


def test_a_key_a_replica_lost_is_sent_to_it_again_within_a_pass() -> None:
    net = Net(owners_of(A, B), A, B)
    a, b = net.cores[A].store, net.cores[B].store
    for i in range(100):
        key = b"k%d" % i
        put(a, key, b"v%d" % i)
        b.merge(key_slot(key), a.export(key_slot(key), [key]), WALL)
    assert same(a, b)
    del b.slots[key_slot(b"k3")][b"k3"]  # lost here, as a missed frame would be
    net.run(PERIOD + 1)
    assert get(b, b"k3") == b"$2\r\nv3\r\n"
    assert same(a, b)
    assert net.cores[B].counters.parts_differing == 1
    assert net.cores[A].counters.entries_pushed == 1


def test_a_newer_entry_on_a_replica_reaches_the_primary_and_a_deleted_one_stays_deleted() -> None:
    net = Net(owners_of(A, B), A, B)
    a, b = net.cores[A].store, net.cores[B].store
    for key in (b"x", b"y"):
        put(a, key, b"old")
        b.merge(key_slot(key), a.export(key_slot(key), [key]), WALL)
    put(b, b"x", b"new", WALL + 5)  # only here (a write the primary never saw)
    a.remove(key_slot(b"y"), b"y", WALL + 5)  # only there: a tombstone
    net.run(PERIOD + 1)
    assert get(a, b"x") == get(b, b"x") == b"$3\r\nnew\r\n"
    assert get(a, b"y") is None
    assert get(b, b"y") is None
    assert b"y" in b.tombstones[key_slot(b"y")]
    assert same(a, b)


def test_copies_that_agree_exchange_digests_only() -> None:
    net = Net(owners_of(A, B, C), A, B, C)
    a = net.cores[A].store
    for i in range(50):
        put(a, b"k%d" % i, b"v")
    for n in (B, C):
        for s in range(SLOT_COUNT):
            net.cores[n].store.merge(s, a.export(s, list(a.slots[s])), WALL)
    net.run(PERIOD + 1)
    assert net.cores[A].counters.passes == 1
    assert net.cores[B].counters.slots_compared == SLOT_COUNT
    assert net.cores[B].counters.parts_differing == net.cores[C].counters.parts_differing == 0
    assert net.cores[A].counters.entries_pushed == 0


def test_a_pass_is_split_into_steps_of_bounded_work() -> None:
    net = Net(owners_of(A, B), A, B)
    a = net.cores[A].store
    for i in range(20_000):
        put(a, b"k%d" % i, b"v")
    core = net.cores[A]
    net.run(PERIOD - 0.001)
    core.handle_timer(PERIOD)
    first = core.frames_to_send(PERIOD, 1 << 20)
    assert len(first) == 1
    digested = len(first[0].body[2])
    assert 0 < digested < SLOT_COUNT  # a step took some slots, not the whole pass
    assert core.get_timer() == pytest.approx(PERIOD + STEP_INTERVAL)


def test_only_a_slots_primary_and_replicas_are_answered_or_merged() -> None:
    net = Net(owners_of(A, B), A, B, C)
    b, c = net.cores[B].store, net.cores[C]
    put(c.store, b"k", b"planted", WALL + 9)
    entry = [[b"k", b"planted", 0, WALL << 16, C]]
    # C is no owner: neither end merges what it sends, nor answers its digests.
    net.cores[B].receive_frame(
        C, Frame(frames.AE_SYNC, [1, 1, [[key_slot(b"k"), entry, []]]]), 0, WALL
    )
    net.cores[A].receive_frame(
        C, Frame(frames.AE_SYNC, [1, 1, [[key_slot(b"k"), entry, []]]]), 0, WALL
    )
    net.cores[B].receive_frame(C, Frame(frames.AE_DIGEST, [1, 1, [[0, 1, [5]]]]), 0, WALL)
    assert get(b, b"k") is None
    assert get(net.cores[A].store, b"k") is None
    assert net.cores[B].frames_to_send(0, 10) == []
    assert net.cores[B].counters.refused == 2
    assert net.cores[A].counters.refused == 1
    # Only a primary asks for keys: a replica asking is not answered (no ping-pong).
    put(net.cores[A].store, b"k", b"mine")
    net.cores[A].receive_frame(
        B, Frame(frames.AE_SYNC, [1, 1, [[key_slot(b"k"), [], [b"k"]]]]), 0, WALL
    )
    assert net.cores[A].frames_to_send(0, 10) == []
    # A replica's digests to its primary are refused too (only primaries start).
    net.cores[A].receive_frame(B, Frame(frames.AE_DIGEST, [1, 1, [[0, 1, [5]]]]), 0, WALL)
    assert net.cores[A].frames_to_send(0, 10) == []


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (frames.AE_DIGEST, None),
        (frames.AE_DIGEST, [1, 1, [[0, 3, [1, 2, 3]]]]),  # parts not a power of two
        (frames.AE_DIGEST, [1, 1, [[SLOT_COUNT, 1, [1]]]]),
        (frames.AE_DIGEST, [1, 1, [[0, 2, [1]]]]),  # one digest for two parts
        (frames.AE_KEYS, [1, 1, [[0, 1, [1], []]]]),  # part out of range
        (frames.AE_KEYS, [1, 1, [[0, 1, [[0]], []]]]),  # a part that is a list
        (frames.AE_KEYS, [1, 1, [[0, 1, [{}], []]]]),
        (frames.AE_DIGEST, [1, 1, [[0, 1, [1]]] * (antientropy.MAX_GROUPS + 1)]),
        (frames.AE_KEYS, [1, 1, [[0, 1, [0], [[b"k", -1, A]]]]]),
        (frames.AE_KEYS, [1, 1, [[0, 1, [0], [[b"k", 1, "w" * 65]]]]]),
        (frames.AE_SYNC, [1, 1, [[0, [[b"k"]], []]]]),
        (frames.AE_SYNC, [1, 1, [[0, [], ["not bytes"]]]]),
        (frames.AE_SYNC, [-1, 1, []]),
        (frames.AE_SYNC, [1 << 63, 1, []]),
    ],
)
def test_malformed_frames_are_counted_and_dropped(kind: int, body: Any) -> None:
    core = AntiEntropy(node=B, store=Store(B))
    core.set_ring((1, 1), owners_of(A, B))
    core.receive_frame(A, Frame(kind, body), 0, WALL)
    assert core.counters.bad_frames == 1
    assert core.frames_to_send(0, 10) == []


def test_whole_nodes_repair_a_replica_that_lost_a_slot_under_load() -> None:
    """Three whole nodes with two copies under a write load: one node's copy
    of a slot it replicates is wiped (and its replicated writes to another
    slot silently dropped); within a pass every copy is equal again."""
    sim = ClusterSimulator(seed=11, ring=RingConfig(vnodes=64, replicas=2))
    first = sim.add_node(0)
    for i in range(1, 3):
        sim.add_node(i, seed=first)
    assert sim.run_until_true(sim.settled, 30)
    client = SimClient(sim)
    run_writer(sim, client, until=sim.now + 3)
    sim.run_for(4)
    members = sorted(sim.members)
    primary = sim.members[members[0]]
    owners = primary.cluster.antientropy.owners
    slot = next(
        s for s in range(SLOT_COUNT) if owners[s][0] == members[0] and primary.state.store.slots[s]
    )
    replica = sim.members[owners[slot][1]]
    assert entries(replica.state.store, slot) == entries(primary.state.store, slot)
    replica.state.store.drop_slot(slot)
    # A write the primary makes with replication switched off for a moment.
    store = primary.state.store
    store.set_watch(REPLICATED, None)
    store.put(slot, b"unreplicated", b"v", 0, sim.wall_ms())
    primary.cluster.replication.set_ring(primary.cluster.replication.version, owners, set(members))
    assert b"unreplicated" not in replica.state.store.slots[slot]
    sim.run_for(PERIOD + 2)
    for m in sim.members.values():
        for s in range(SLOT_COUNT):
            o = owners[s]
            if m.sim.name in o[1:]:
                lead = sim.members[o[0]].state.store
                assert entries(m.state.store, s) == entries(lead, s), f"{s} on {m.sim.name}"
    assert replica.state.store.slots[slot][b"unreplicated"]
    assert replica.cluster.antientropy.counters.entries_repaired >= 2


def test_a_delete_a_replica_missed_reaches_it_before_the_tombstone_is_collected() -> None:
    """The replica missed a delete (it still holds the key live). Anti-entropy
    gives it the tombstone well within the grace period, so when both collect
    it, no copy is left to bring the key back."""
    net = Net(owners_of(A, B), A, B)
    a, b = net.cores[A].store, net.cores[B].store
    slot = key_slot(b"gone")
    put(a, b"gone", b"v")
    b.merge(slot, a.export(slot, [b"gone"]), WALL)
    a.remove(slot, b"gone", WALL + 1)  # its REPL frame to B was lost
    assert get(b, b"gone") is not None
    net.run(PERIOD + 1)
    assert get(b, b"gone") is None
    grace = a.config.tombstone_grace_ms
    for store in (a, b):
        store.active_expire(WALL + grace + 10, 1000)
        assert b"gone" not in store.tombstones[slot]
    net.run(PERIOD * 2)
    assert get(a, b"gone") is None
    assert get(b, b"gone") is None


def test_a_slot_too_big_for_one_frame_is_listed_in_finer_parts() -> None:
    """The primary lost a big slot (its digest is of nothing, one part): the
    replica's list of it is split into finer parts, each within a frame,
    and the primary gets every entry back."""
    net = Net(owners_of(A, B), A, B)
    a, b = net.cores[A].store, net.cores[B].store
    keys = [b"{big}%06d:" % i + b"k" * 700 for i in range(12_000)]  # ~9 MB of keys
    slot = key_slot(keys[0])
    for k in keys:
        put(b, k, b"v")
    assert a.slots[slot] == {}
    net.run(PERIOD + 1)  # Net.deliver encodes every frame: none is over the limit
    assert len(a.slots[slot]) == len(keys)
    assert same(a, b)


def test_keys_listings_are_answered_only_when_asked_and_once() -> None:
    net = Net(owners_of(A, B), A, B)
    b = net.cores[B].store
    for i in range(100):
        put(b, b"{s}k%d" % i, b"v")
    slot = key_slot(b"{s}k0")
    listed = [[k, *v] for k, v in antientropy.versions(b, slot, 1, {0}).items()]
    group = [slot, 1, [0], listed]
    core = net.cores[A]
    core.receive_frame(B, Frame(frames.AE_KEYS, [1, 1, [group]]), 0, WALL)
    assert core.frames_to_send(0, 100) == []  # no digest was sent: not asked
    assert core.counters.refused == 1
    core._asked[B] = {slot: 1}  # as a pass's digest to B does
    core.receive_frame(B, Frame(frames.AE_KEYS, [1, 1, [group] * 20]), 0, WALL)
    sent = core.frames_to_send(0, 100)
    assert len(sent) == 1  # the slot listed twenty times is answered once
    assert len(sent[0].body[2][0][2]) == 100  # and asks for the 100 keys it lacks


def test_copies_that_differ_only_by_writer_are_repaired() -> None:
    """Two writes with one stamp from different writers (possible around a
    failover): the digests tell them apart and last-writer-wins settles it."""
    net = Net(owners_of(A, B), A, B)
    a, b = net.cores[A].store, net.cores[B].store
    slot = key_slot(b"tie")
    stamp = WALL << 16
    a.merge(slot, [Exported(b"tie", b"from-a", 0, stamp, A)], WALL)
    b.merge(slot, [Exported(b"tie", b"from-c", 0, stamp, C)], WALL)
    assert digests(a, slot, 1) != digests(b, slot, 1)
    net.run(PERIOD + 1)
    assert get(a, b"tie") == get(b, b"tie") == b"$6\r\nfrom-c\r\n"  # C > A


def test_a_replica_cannot_make_its_primary_scan_a_slot_without_bound() -> None:
    """Each listing costs the primary a scan of the slot, and the replica
    chooses the split: coarser than the digest asked is refused, and so is
    any past MAX_LISTINGS a slot a pass."""
    net = Net(owners_of(A, B), A, B)
    b = net.cores[B].store
    put(b, b"{s}k", b"v")
    slot = key_slot(b"{s}k")
    core = net.cores[A]
    core._asked[B] = {slot: 4}
    coarse = [slot, 2, [0], []]
    core.receive_frame(B, Frame(frames.AE_KEYS, [1, 1, [coarse]]), 0, WALL)
    assert core.counters.refused == 1
    fine = [[slot, 1 << 12, [p], []] for p in range(antientropy.MAX_LISTINGS + 5)]
    for i in range(0, len(fine), 1000):
        core.receive_frame(B, Frame(frames.AE_KEYS, [1, 1, fine[i : i + 1000]]), 0, WALL)
    assert core.counters.refused == 1 + 5
