"""The slot hand-off core, driven by hand: rings in, frames between cores."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from functools import cache

import attrs
import pytest

from keycafe.cluster import frames
from keycafe.cluster.frames import Frame
from keycafe.cluster.handoff import (
    ACK_TIMEOUT,
    FORWARD_PERIOD,
    RETRY_PAUSE,
    Confirmed,
    Event,
    Handoff,
    Left,
    Outgoing,
    Owners,
    Ready,
    RoutingChanged,
    Unconfirmed,
)
from keycafe.cluster.ring import RingConfig, slot_owners
from keycafe.cluster.slot_table import NodeAddr
from keycafe.store.engine import Store
from keycafe.store.keyslot import SLOT_COUNT, key_slot

A, B, C = "a" * 40, "b" * 40, "c" * 40
WALL = 1_700_000_000_000


@attrs.frozen(kw_only=True)
class R:
    epoch: int
    term: int = 1
    members: tuple[str, ...]
    pending: tuple[str, ...] = ()
    down: tuple[str, ...] = ()


@cache
def owners(members: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    return slot_owners(members, RingConfig(vnodes=32))


def addr(node: str) -> NodeAddr:
    port = 7000 + ord(node[0])
    return NodeAddr(node_id=node, host="127.0.0.1", port=port, cluster_port=port + 10000)


NODES = {n: addr(n) for n in (A, B, C)}


class Cluster:
    """Cores joined by in-order links; frames wait in ``wire`` until delivered."""

    def __init__(self, *names: str, table: Callable[[tuple[str, ...]], Owners] = owners) -> None:
        self.now = 0.0
        self.cores = {n: Handoff(me=addr(n), store=Store(n), owners=table) for n in names}
        self.wire: list[tuple[str, Outgoing]] = []  # (sender, frame) in send order
        self.events: dict[str, list[Event]] = {n: [] for n in names}

    def ring(self, ring: R, *names: str) -> None:
        for n in names or self.cores:
            assert self.cores[n].set_ring(ring, NODES, self.now)
        self.collect()

    def collect(self) -> None:
        for n, core in self.cores.items():
            while (ev := core.next_event()) is not None:
                self.events[n].append(ev)
            self.wire += [(n, o) for o in core.frames_to_send(self.now, limit=10_000)]

    def deliver(self, only: Iterable[str] | None = None, kinds: set[int] | None = None) -> int:
        """Deliver what is on the wire (to ``only`` receivers, of ``kinds``) until quiet."""
        total = 0
        while True:
            keep, go = [], []
            for src, o in self.wire:
                ok = (only is None or o.peer in only) and (kinds is None or o.kind in kinds)
                (go if ok else keep).append((src, o))
            if not go:
                return total
            self.wire = keep
            for src, o in go:
                self.cores[o.peer].receive_frame(src, Frame(o.kind, o.body), self.now, WALL)
            total += len(go)
            self.collect()

    def drop(self, to: str) -> None:
        self.wire = [(s, o) for s, o in self.wire if o.peer != to]

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            due = [t for c in self.cores.values() if (t := c.get_timer()) is not None]
            if not due or min(due) > end:
                break
            self.now = max(self.now, min(due))
            for core in self.cores.values():
                t = core.get_timer()
                if t is not None and t <= self.now:
                    core.handle_timer(self.now)
            self.collect()
        self.now = end

    def routing(self, n: str) -> RoutingChanged:
        return [e for e in self.events[n] if isinstance(e, RoutingChanged)][-1]

    def ready(self, n: str) -> list[int]:
        return [e.epoch for e in self.events[n] if isinstance(e, Ready)]


def streamed(count: int) -> tuple[Cluster, list[bytes]]:
    """A holds ``count`` keys; B joins: the proposal is out and delivered."""
    net = Cluster(A, B)
    keys = fill(net.cores[A].store, count)
    net.ring(R(epoch=1, members=(A,)))
    net.ring(R(epoch=2, members=(A,), pending=(A, B)))
    net.deliver()
    return net, keys


def fill(store: Store, count: int, prefix: bytes = b"k") -> list[bytes]:
    keys = [prefix + b"%d" % i for i in range(count)]
    for k in keys:
        store.put(key_slot(k), k, b"v:" + k, 0, WALL)
    return keys


def holds_new(store: Store, key: bytes) -> bool:
    """``store`` holds the value ``new:<key>`` for ``key``."""
    record = value(store, key)
    return record is not None and record.endswith(b"\r\nnew:%s\r\n" % key)


def value(store: Store, key: bytes) -> bytes | None:
    record = store.lookup(key_slot(key), key, WALL)
    return None if record is None else record


def held_by(store: Store, keys: list[bytes]) -> set[bytes]:
    return {k for k in keys if value(store, k) is not None}


def mine(owners_: tuple[tuple[str, ...], ...], node: str, keys: list[bytes]) -> list[bytes]:
    return [k for k in keys if owners_[key_slot(k)][0] == node]


def test_a_join_streams_the_joiners_share_then_hands_it_over() -> None:
    net = Cluster(A, B)
    keys = fill(net.cores[A].store, 2000)
    net.ring(R(epoch=1, members=(A,)), A)
    net.ring(R(epoch=2, members=(A,), pending=(A, B)))
    net.deliver()
    assert net.ready(A) == [2]
    assert net.ready(B) == [2]
    gained = mine(owners((A, B)), B, keys)
    assert 0 < len(gained) < len(keys)
    assert held_by(net.cores[B].store, keys) == set(gained)
    # B holds the slots it received but does not own them yet: TRYAGAIN there.
    slot = key_slot(gained[0])
    assert net.routing(B).moving[slot] == 1
    net.ring(R(epoch=3, members=(A, B)))
    assert net.routing(A).moving[slot] == 1  # A keeps it until B confirms
    net.deliver()
    assert net.routing(A).moving[slot] == 0
    assert held_by(net.cores[A].store, keys) == set(keys) - set(gained)
    assert held_by(net.cores[B].store, keys) == set(gained)
    assert net.routing(B).moving == bytes(SLOT_COUNT)
    assert net.routing(B).table.mine[slot] == 1


def test_writes_made_while_a_slot_moves_reach_its_new_owner() -> None:
    net = Cluster(A, B)
    keys = fill(net.cores[A].store, 500)
    net.ring(R(epoch=1, members=(A,)), A)
    net.ring(R(epoch=2, members=(A,), pending=(A, B)))
    net.deliver()
    gained = mine(owners((A, B)), B, keys)
    store = net.cores[A].store
    for k in gained[:50]:  # A is still the owner: it serves these writes
        store.put(key_slot(k), k, b"new", 0, WALL + 1)
    store.remove(key_slot(gained[50]), gained[50], WALL + 1)
    net.ring(R(epoch=3, members=(A, B)))  # the change: last forwards, then a barrier
    net.deliver()
    got = net.cores[B].store
    assert all((value(got, k) or b"").endswith(b"new\r\n") for k in gained[:50])
    assert value(got, gained[50]) is None


def test_a_barrier_is_not_acknowledged_behind_lost_forwards() -> None:
    """The forwards of the last writes are lost with a connection the sender
    has not seen break yet, and the barrier behind them goes out on the next
    one: the new owner must not confirm it (the writes would be lost with
    the old owner's copy), but say what it missed; the slots go again whole."""
    net, keys = streamed(500)
    gained = mine(owners((A, B)), B, keys)
    store = net.cores[A].store
    for k in gained[:50]:
        store.put(key_slot(k), k, b"new", 0, WALL + 1)
    net.ring(R(epoch=3, members=(A, B)))
    forwards = [o for _, o in net.wire if o.kind == frames.FORWARD]
    assert forwards
    net.wire = [(s, o) for s, o in net.wire if o.kind != frames.FORWARD]  # lost
    net.deliver()
    slot = key_slot(gained[0])
    assert net.routing(A).moving[slot] == 1  # A keeps the slot: B has not confirmed
    assert net.routing(B).moving[slot] == 1
    net.advance(RETRY_PAUSE)
    net.deliver()
    got = net.cores[B].store
    assert all((value(got, k) or b"").endswith(b"new\r\n") for k in gained[:50])
    assert net.routing(A).moving[slot] == 0
    assert net.routing(B).moving[slot] == 0
    assert net.routing(B).table.mine[slot] == 1


def test_a_moving_slot_wakes_its_old_owner_only_when_written() -> None:
    """Forwards are collected every FORWARD_PERIOD only while a write waits: an
    idle node streaming slots out must not wake 500 times a second (at N=100
    those wake-ups alone overloaded a 2-core machine)."""
    net, keys = streamed(500)
    core = net.cores[A]
    woken: list[int] = []
    core.store.on_dirty = lambda: woken.append(len(core.store.dirty))
    timer = core.get_timer()
    assert timer is None or timer > net.now + 1
    k = mine(owners((A, B)), B, keys)[0]
    core.store.put(key_slot(k), k, b"new", 0, WALL + 1)
    core.store.put(key_slot(k), k, b"newer", 0, WALL + 2)
    assert woken == [1]  # told once, when the first write made it dirty
    timer = core.get_timer()
    assert timer is not None
    assert timer <= net.now + FORWARD_PERIOD
    net.advance(FORWARD_PERIOD)
    net.deliver()
    assert (value(net.cores[B].store, k) or b"").endswith(b"newer\r\n")
    timer = core.get_timer()
    assert timer is None or timer > net.now + 1


def test_routing_is_reported_only_when_it_changed() -> None:
    """The shell builds a routing value per report (16384 slots): a report
    that changes nothing is work for nothing, and at N=100 they came by the
    hundred per second."""
    net, _ = streamed(2000)
    net.ring(R(epoch=3, members=(A, B)))
    net.deliver()
    for n in (A, B):
        routed = [(e.table, e.moving) for e in net.events[n] if isinstance(e, RoutingChanged)]
        assert len(routed) >= 2
        for (t1, m1), (t2, m2) in itertools.pairwise(routed):
            assert t1 is not t2 or m1 != m2


def test_a_withdrawn_proposal_leaves_no_stale_tombstones_either() -> None:
    """A slot that held only deletes reaches the joiner as tombstones; when the
    proposal is withdrawn they must go like any other copy (a stale copy of a
    slot that comes back later could hide a newer write's absence)."""
    net = Cluster(A, B)
    keys = fill(net.cores[A].store, 500)
    net.ring(R(epoch=1, members=(A,)), A)
    slot = key_slot(mine(owners((A, B)), B, keys)[0])
    for k in [k for k in keys if key_slot(k) == slot]:
        assert net.cores[A].store.remove(slot, k, WALL)
    net.ring(R(epoch=2, members=(A,), pending=(A, B)))
    net.deliver()
    got = net.cores[B].store
    assert got.tombstones[slot]
    assert not got.slots[slot]
    net.ring(R(epoch=3, members=(A,)))  # withdrawn
    assert not got.tombstones[slot]
    assert net.cores[A].store.tombstones[slot]  # the owner keeps its own


def test_a_member_declared_down_hands_its_slots_to_their_next_owner_at_once() -> None:
    """Failover: with two copies, B's slots are served by their replica under
    the ring that declares B down, with no proposal and nothing streamed."""

    def two_copies(members: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
        return slot_owners(members, RingConfig(vnodes=32, replicas=2))

    core = Handoff(me=addr(A), store=Store(A), owners=two_copies)
    full = two_copies((A, B, C))
    core.set_ring(R(epoch=1, members=(A, B, C)), NODES, 0.0)
    core.set_ring(R(epoch=2, members=(A, B, C), down=(B,)), NODES, 1.0)
    routed = [e for e in iter(core.next_event, None) if isinstance(e, RoutingChanged)][-1]
    mine = [s for s in range(SLOT_COUNT) if full[s][0] == A or full[s] == (B, A)]
    assert any(full[s] == (B, A) for s in mine)
    assert [s for s in range(SLOT_COUNT) if routed.table.mine[s]] == mine
    to_c = next(s for s in range(SLOT_COUNT) if full[s] == (B, C))
    assert routed.moving[to_c] == 0
    assert not any(routed.moving)  # no barrier to wait for from a member declared down
    assert routed.table.redirect(to_c).startswith(b"-MOVED %d " % to_c)
    assert routed.table.redirect(to_c).endswith(b":%d\r\n" % addr(C).port)
    assert core.frames_to_send(1.0, limit=100) == []


@cache
def two_copies(members: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    return slot_owners(members, RingConfig(vnodes=32, replicas=2))


def test_with_two_copies_a_join_streams_to_new_replicas_as_well_as_new_primaries() -> None:
    net = Cluster(A, B, C, table=two_copies)
    keys = fill(net.cores[A].store, 3000)
    fill(net.cores[B].store, 3000)  # two members, two copies: both hold everything
    net.ring(R(epoch=1, members=(A, B)))
    net.ring(R(epoch=2, members=(A, B), pending=(A, B, C)))
    net.deliver()
    after = two_copies((A, B, C))
    # Meanwhile C answers TRYAGAIN for what it gains as primary; for copies
    # it gains as a replica clients are sent to the primary as usual.
    routed = net.routing(C)
    assert {routed.moving[s] for s in range(SLOT_COUNT) if after[s][0] == C} == {1}
    assert {routed.moving[s] for s in range(SLOT_COUNT) if after[s][1:] == (C,)} == {0}
    net.ring(R(epoch=3, members=(A, B, C)))
    net.deliver()
    for n in (A, B, C):
        held = held_by(net.cores[n].store, keys)
        assert held == {k for k in keys if n in after[key_slot(k)]}, n
        assert not any(net.routing(n).moving)
    as_replica = [k for k in keys if after[key_slot(k)][1:] == (C,)]
    assert as_replica  # C gained copies it is not primary of, and holds them


def test_data_streamed_before_its_ring_arrives_survives_a_ring_that_marks_us_down() -> None:
    """B, back after being declared down, gets the proposal's batches over its
    peer link before gossip brings it the ring that declared it down (links
    and gossip race on real networks: python -m sims.netlab halves, seeds 6
    and 20). Adopting that ring drops B's stale copies; it must not drop what
    was streamed for the proposal, or B serves the slots empty once it leads
    them again (stale reads of writes acknowledged during the partition)."""
    net = Cluster(A, B, table=two_copies)
    keys = fill(net.cores[A].store, 500)
    fill(net.cores[B].store, 500)
    net.ring(R(epoch=1, members=(A, B)))
    net.ring(R(epoch=2, members=(A, B), down=(B,)), A)  # B, cut off, hears nothing
    for k in keys:  # written while B was down: only A has these
        net.cores[A].store.put(key_slot(k), k, b"new:" + k, 0, WALL + 1)
    net.ring(R(epoch=3, members=(A, B), pending=(A, B), down=(B,)), A)
    net.deliver(only={B}, kinds={frames.BATCH})
    assert net.cores[B].counters.keys_received == len(keys)
    net.ring(R(epoch=2, members=(A, B), down=(B,)), B)  # gossip catches up
    net.deliver()  # the DONE, and its ACK
    net.ring(R(epoch=3, members=(A, B), pending=(A, B), down=(B,)), B)
    net.ring(R(epoch=4, members=(A, B)))
    # B owns every slot (two copies, two members): it leads some, and is the
    # replica of the rest, which it would serve alone were A to die.
    assert all(holds_new(net.cores[B].store, k) for k in keys)


def test_data_streamed_back_survives_the_end_of_our_drain_of_the_same_slots() -> None:
    """B, declared down, hands the slots it led to A (a drain) and keeps them
    until A acknowledges; A, bringing B back, streams them to B meanwhile.
    A's acknowledgement of the drain, coming after that stream's batches but
    before its DONE, must not drop what they brought (B would then lead the
    slots empty: python -m sims.netlab halves, seeds 6 and 20)."""
    net = Cluster(A, B, table=two_copies)
    keys = fill(net.cores[A].store, 500)
    fill(net.cores[B].store, 500)
    net.ring(R(epoch=1, members=(A, B)))
    net.ring(R(epoch=2, members=(A, B), down=(B,)))
    assert net.cores[B]._draining  # B hands over the slots it led
    net.deliver(only={A}, kinds={frames.BATCH, frames.DONE})  # A takes them ...
    for k in keys:  # ... and is written to while B is down
        net.cores[A].store.put(key_slot(k), k, b"new:" + k, 0, WALL + 1)
    net.ring(R(epoch=3, members=(A, B), pending=(A, B), down=(B,)), A)
    net.deliver(only={B}, kinds={frames.BATCH})  # A's stream back, before its DONE
    net.deliver()  # A's acknowledgement of the drain, then the DONE
    assert not net.cores[B]._draining
    net.ring(R(epoch=3, members=(A, B), pending=(A, B), down=(B,)), B)
    net.ring(R(epoch=4, members=(A, B)))
    assert all(holds_new(net.cores[B].store, k) for k in keys)


def test_a_new_replica_of_slots_we_keep_is_confirmed_by_a_barrier() -> None:
    net = Cluster(A, B, C, table=two_copies)
    keys = fill(net.cores[A].store, 2000)
    fill(net.cores[B].store, 2000)
    net.ring(R(epoch=1, members=(A, B)))
    net.ring(R(epoch=2, members=(A, B), pending=(A, B, C)))
    net.deliver()
    net.ring(R(epoch=3, members=(A, B, C)), A)
    after, before = two_copies((A, B, C)), two_copies((A, B))
    kept = [s for s in range(SLOT_COUNT) if after[s][0] == A == before[s][0] and C in after[s]]
    assert kept
    unconfirmed = [e for e in net.events[A] if isinstance(e, Unconfirmed)]
    assert [e.peer for e in unconfirmed] == [C]
    assert set(unconfirmed[0].slots) == set(kept)
    assert not [e for e in net.events[A] if isinstance(e, Confirmed)]
    net.ring(R(epoch=3, members=(A, B, C)), B, C)
    net.deliver()
    confirmed = [e for e in net.events[A] if isinstance(e, Confirmed)]
    assert [(e.peer, set(e.slots)) for e in confirmed] == [(C, set(kept))]
    assert held_by(net.cores[C].store, keys) >= {k for k in keys if key_slot(k) in kept}


def test_a_joiner_that_gets_its_data_before_the_proposal_keeps_it() -> None:
    """The link is faster than gossip: B gets BATCH and DONE before it hears
    of the proposal, and the first ring it adopts is that proposal, whose
    members do not include it. It must keep what it acknowledged, and own it
    after the change (it used to drop it and then own the slots empty)."""
    net = Cluster(A, B)
    keys = fill(net.cores[A].store, 1000)
    net.ring(R(epoch=1, members=(A,)), A)
    net.ring(R(epoch=2, members=(A,), pending=(A, B)), A)  # only A has heard
    net.deliver()
    assert net.ready(A) == [2]
    gained = mine(owners((A, B)), B, keys)
    assert held_by(net.cores[B].store, keys) == set(gained)
    net.ring(R(epoch=2, members=(A,), pending=(A, B)), B)
    assert held_by(net.cores[B].store, keys) == set(gained)
    net.ring(R(epoch=3, members=(A, B)))
    net.deliver()
    assert held_by(net.cores[B].store, keys) == set(gained)


def test_a_joiner_that_skips_the_proposal_keeps_its_data() -> None:
    net = Cluster(A, B)
    keys = fill(net.cores[A].store, 1000)
    net.ring(R(epoch=1, members=(A,)), A)
    net.ring(R(epoch=2, members=(A,), pending=(A, B)), A)
    net.deliver()
    net.ring(R(epoch=3, members=(A, B)))  # B's first ring is the change itself
    net.deliver()
    gained = mine(owners((A, B)), B, keys)
    assert held_by(net.cores[B].store, keys) == set(gained)
    assert held_by(net.cores[A].store, keys) == set(keys) - set(gained)


def test_a_withdrawn_proposal_leaves_no_tryagain_and_no_stale_copy() -> None:
    net, keys = streamed(1000)
    assert any(net.routing(B).moving)
    net.ring(R(epoch=3, members=(A,)))  # withdrawn: B is gone from the plan
    assert net.routing(B).moving == bytes(SLOT_COUNT)
    assert held_by(net.cores[B].store, keys) == set()
    assert held_by(net.cores[A].store, keys) == set(keys)
    assert net.cores[A].store.watched == bytearray(SLOT_COUNT)


def test_receipts_of_lost_transfers_are_forgotten() -> None:
    net = Cluster(A, B)
    fill(net.cores[A].store, 1000)
    net.ring(R(epoch=1, members=(A,)))
    net.ring(R(epoch=2, members=(A,), pending=(A, B)))
    net.deliver(kinds={frames.BATCH})
    net.drop(B)  # the DONE is lost
    assert net.cores[B]._inbound
    # A's retry (a new transfer id) completes and clears the abandoned one.
    net.advance(ACK_TIMEOUT + RETRY_PAUSE + 0.1)
    net.deliver()
    assert net.ready(A) == [2]
    assert not net.cores[B]._inbound
    # A receipt left by a proposal that a newer ring replaced goes too.
    net.deliver()
    net.cores[B].receive_frame(A, Frame(frames.BATCH, [999, 1, 2, 0, []]), net.now, WALL)
    assert net.cores[B]._inbound
    net.ring(R(epoch=3, members=(A,), pending=(A, B, C)))
    assert not net.cores[B]._inbound


def test_a_broken_link_during_the_drain_sends_the_slots_again() -> None:
    """Forwards are not acknowledged one by one: if the link breaks after the
    last forwards were sent, the drain must not let go on a barrier alone."""
    net, keys = streamed(500)
    gained = mine(owners((A, B)), B, keys)
    store = net.cores[A].store
    for k in gained[:20]:
        store.put(key_slot(k), k, b"late", 0, WALL + 2)
    net.ring(R(epoch=3, members=(A, B)))
    net.drop(B)  # the forwards and the barrier are lost with the connection
    net.cores[A].link_broken(B, net.now)
    net.advance(RETRY_PAUSE + 0.01)
    net.deliver()
    got = net.cores[B].store
    assert all((value(got, k) or b"").endswith(b"late\r\n") for k in gained[:20])
    assert net.routing(A).moving == bytes(SLOT_COUNT)


def test_an_unacknowledged_transfer_is_sent_again() -> None:
    net = Cluster(A, B)
    keys = fill(net.cores[A].store, 300)
    net.ring(R(epoch=1, members=(A,)))
    net.ring(R(epoch=2, members=(A,), pending=(A, B)))
    net.drop(B)
    net.advance(ACK_TIMEOUT - 0.1)
    assert net.ready(A) == []
    net.advance(RETRY_PAUSE + 0.2)
    net.deliver()
    assert net.ready(A) == [2]
    assert net.cores[A].counters.transfers_retried == 1
    assert held_by(net.cores[B].store, keys) == set(mine(owners((A, B)), B, keys))


def test_a_leave_hands_everything_over_then_reports_left() -> None:
    net = Cluster(A, B)
    keys = [b"k%d" % i for i in range(800)]
    net.ring(R(epoch=1, members=(A, B)))
    # Put the keys where the ring says they live.
    for n in (A, B):
        for k in mine(owners((A, B)), n, keys):
            net.cores[n].store.put(key_slot(k), k, b"v", 0, WALL)
    assert net.cores[B].leave(net.now)
    net.ring(R(epoch=2, members=(A, B), pending=(A,)))
    net.deliver()
    assert net.ready(B) == [2]
    net.ring(R(epoch=3, members=(A,)))
    assert not any(isinstance(e, Left) for e in net.events[B])
    net.deliver()
    assert any(isinstance(e, Left) for e in net.events[B])
    assert held_by(net.cores[A].store, keys) == set(keys)
    assert net.cores[B].store.count() == 0


@pytest.mark.parametrize(
    "frame",
    [
        Frame(frames.BATCH, [1, 1, 2, SLOT_COUNT, []]),
        Frame(frames.BATCH, [1, 1, 2, 0, [[b"k", b"v", 0, 1 << 64, A]]]),
        Frame(frames.BATCH, [1, -1, 2, 0, []]),
        Frame(frames.DONE, [1, 1, 2, 0, "not a list"]),
        Frame(frames.ACK, [1]),
        Frame(frames.FORWARD, None),
        Frame(frames.FORWARD, [1 << 63, 2, 0, []]),
    ],
)
def test_malformed_frames_are_counted_and_dropped(frame: Frame) -> None:
    core = Handoff(me=addr(B), store=Store(B), owners=owners)
    core.receive_frame(A, frame, 0.0, WALL)
    assert core.counters.bad_frames == 1
    assert core.store.count() == 0


def test_data_for_a_slot_this_node_does_not_gain_is_ignored() -> None:
    net = Cluster(A, B)
    net.ring(R(epoch=5, members=(A, B)))
    slot = next(s for s in range(SLOT_COUNT) if owners((A, B))[s][0] == A)
    entry = [b"x", b"v", 0, WALL << 16, A]
    net.cores[B].receive_frame(A, Frame(frames.FORWARD, [1, 4, slot, [entry]]), 0.0, WALL)
    assert net.cores[B].store.count() == 0
    assert net.cores[B].counters.stale_frames == 1


def test_data_for_a_newer_proposal_survives_an_older_ring_heard_late() -> None:
    """B receives its share of proposal 3, then hears of proposal 2 (which
    did not include it) late: it must keep the data for the ring to come."""
    net = Cluster(A, B, C)
    keys = fill(net.cores[A].store, 1000)
    net.ring(R(epoch=1, members=(A,)), A)
    net.ring(R(epoch=2, members=(A,), pending=(A, C)), A)
    net.ring(R(epoch=3, members=(A,), pending=(A, B)), A)
    net.deliver()
    gained = mine(owners((A, B)), B, keys)
    net.ring(R(epoch=2, members=(A,), pending=(A, C)), B)
    assert held_by(net.cores[B].store, keys) == set(gained)
    assert all(net.routing(B).moving[key_slot(k)] for k in gained)
    net.ring(R(epoch=3, members=(A,), pending=(A, B)), B)
    net.ring(R(epoch=4, members=(A, B)))
    net.deliver()
    assert held_by(net.cores[B].store, keys) == set(gained)


def moving_on(keys: list[bytes]) -> tuple[int, bytes]:
    """A slot that goes A -> B when B joins, then B -> C when C does, and one
    of ``keys`` in it."""
    o2, o3 = owners((A, B)), owners((A, B, C))
    slot = next(
        s
        for s in range(SLOT_COUNT)
        if o2[s][0] == B and o3[s][0] == C and any(key_slot(k) == s for k in keys)
    )
    return slot, next(k for k in keys if key_slot(k) == slot)


def test_forwarded_writes_go_on_when_the_slot_moves_again() -> None:
    """A lags a ring and keeps serving a slot that moved A -> B and moves on
    B -> C: A's write reaches B as a forward, and must reach C, not stay
    behind at B (merged data in a watched slot is forwarded like a write)."""
    net = Cluster(A, B, C)
    keys = fill(net.cores[A].store, 3000)
    net.ring(R(epoch=1, members=(A,)))
    net.ring(R(epoch=2, members=(A,), pending=(A, B)))
    net.deliver()
    net.ring(R(epoch=3, members=(A, B)), B, C)  # A misses the change for a while
    net.deliver()
    slot, key = moving_on(keys)
    net.ring(R(epoch=4, members=(A, B), pending=(A, B, C)), B, C)
    net.deliver()
    net.cores[A].store.put(slot, key, b"ACKED-AT-A", 0, WALL + 5)  # A still owns it by its ring
    net.advance(0.01)
    net.deliver()  # the forward reaches B, which is streaming the slot on to C
    net.ring(R(epoch=3, members=(A, B)), A)  # A catches up: B confirms, A lets go
    net.deliver()
    assert value(net.cores[A].store, key) is None
    net.ring(R(epoch=5, members=(A, B, C)), B, C)
    net.deliver()
    net.ring(R(epoch=5, members=(A, B, C)), A)
    net.deliver()
    net.advance(1)
    net.deliver()
    assert (value(net.cores[C].store, key) or b"").endswith(b"ACKED-AT-A\r\n")


def test_forwards_refused_by_a_node_that_moved_on_are_sent_to_the_owner() -> None:
    """B has already handed the slot to C when A's late forwards and barrier
    reach it: B refuses them in its ACK, and A sends them to C itself."""
    net = Cluster(A, B, C)
    keys = fill(net.cores[A].store, 3000)
    net.ring(R(epoch=1, members=(A,)))
    net.ring(R(epoch=2, members=(A,), pending=(A, B)))
    net.deliver()
    slot, key = moving_on(keys)
    net.cores[A].store.put(slot, key, b"LATE", 0, WALL + 5)
    net.ring(R(epoch=3, members=(A, B)), A)  # A's forwards and barrier wait on the wire
    late = [(s, o) for s, o in net.wire if s == A]
    net.wire = [(s, o) for s, o in net.wire if s != A]
    net.ring(R(epoch=3, members=(A, B)), B, C)
    net.ring(R(epoch=4, members=(A, B), pending=(A, B, C)), B, C)
    net.deliver()
    net.ring(R(epoch=5, members=(A, B, C)), B, C)
    net.deliver()
    net.wire += late
    net.deliver()
    assert net.cores[B].counters.stale_frames > 0
    assert value(net.cores[A].store, key) is not None  # not let go on B's word
    net.ring(R(epoch=4, members=(A, B), pending=(A, B, C)), A)
    net.ring(R(epoch=5, members=(A, B, C)), A)
    net.deliver()
    net.advance(RETRY_PAUSE + 0.1)
    net.deliver()
    assert (value(net.cores[C].store, key) or b"").endswith(b"LATE\r\n")
    assert net.routing(A).moving == bytes(SLOT_COUNT)


def test_a_link_broken_after_ready_makes_the_drain_send_everything() -> None:
    net, keys = streamed(500)
    assert net.ready(A) == [2]
    gained = mine(owners((A, B)), B, keys)
    for k in gained[:20]:
        net.cores[A].store.put(key_slot(k), k, b"late", 0, WALL + 2)
    net.advance(0.01)  # the forwards are on the wire ...
    net.drop(B)  # ... and lost with the connection
    net.cores[A].link_broken(B, net.now)
    net.ring(R(epoch=3, members=(A, B)))  # the change comes before any resend
    net.advance(RETRY_PAUSE + 0.1)
    net.deliver()
    got = net.cores[B].store
    assert all((value(got, k) or b"").endswith(b"late\r\n") for k in gained[:20])


def test_a_drain_never_lets_go_while_the_new_owner_is_alive() -> None:
    net, keys = streamed(500)
    gained = mine(owners((A, B)), B, keys)
    net.ring(R(epoch=3, members=(A, B)))
    for _ in range(6):  # a minute with every frame to B lost
        net.drop(B)
        net.advance(ACK_TIMEOUT)
    assert held_by(net.cores[A].store, gained) == set(gained)
    assert net.routing(A).moving[key_slot(gained[0])] == 1
    net.deliver()
    net.advance(RETRY_PAUSE + ACK_TIMEOUT)
    net.deliver()
    assert net.routing(A).moving == bytes(SLOT_COUNT)
    assert held_by(net.cores[B].store, gained) == set(gained)
    # A new owner known dead ends the drain at once.
    other = Cluster(A, B)
    fill(other.cores[A].store, 500)
    other.ring(R(epoch=1, members=(A,)))
    other.ring(R(epoch=2, members=(A,), pending=(A, B)))
    other.deliver()
    other.ring(R(epoch=3, members=(A, B)))
    other.drop(B)
    other.cores[A].set_down(frozenset({B}), other.now)
    other.collect()
    assert other.routing(A).moving == bytes(SLOT_COUNT)


def test_a_new_owner_holds_a_gained_slot_until_the_old_owner_is_done() -> None:
    net, keys = streamed(500)
    gained = mine(owners((A, B)), B, keys)
    slot = key_slot(gained[0])
    net.ring(R(epoch=3, members=(A, B)), B)  # B first: A may still take writes
    assert net.routing(B).table.mine[slot] == 1
    assert net.routing(B).moving[slot] == 1  # TRYAGAIN, not served
    net.ring(R(epoch=3, members=(A, B)), A)
    net.deliver()  # A's barrier
    assert net.routing(B).moving == bytes(SLOT_COUNT)


def test_readiness_names_the_proposals_term() -> None:
    """A new coordinator may publish another proposal at the same epoch:
    readiness for the old one must not stand for it."""
    net = Cluster(A, B, C)
    fill(net.cores[A].store, 500)
    net.ring(R(epoch=1, members=(A,)))
    net.ring(R(epoch=2, term=1, members=(A,), pending=(A, B)))
    net.deliver()
    net.ring(R(epoch=2, term=2, members=(A,), pending=(A, C)))
    net.deliver()
    readies = [(e.term, e.epoch) for e in net.events[A] if isinstance(e, Ready)]
    assert readies == [(1, 2), (2, 2)]


def test_a_ring_member_nobody_knows_is_routed_as_down() -> None:
    core = Handoff(me=addr(B), store=Store(B), owners=owners)
    assert core.set_ring(R(epoch=4, members=(A, B)), {}, 0.0)
    table = core.table
    slot = next(s for s in range(SLOT_COUNT) if table.owners[s][0] == A)
    assert table.redirect(slot).startswith(b"-CLUSTERDOWN")
    core.update_nodes({A: addr(A)})
    assert core.table.redirect(slot).startswith(b"-MOVED")


def test_take_frames_leaves_a_busy_peers_frames_queued_in_order() -> None:
    from collections import deque

    from keycafe.cluster.handoff import Outgoing, take_frames

    queue = deque(Outgoing(peer=p, kind=1, body=i) for i, p in enumerate("abab"))
    assert [o.body for o in take_frames(queue, 10, {"b"})] == [0, 2]
    assert [o.body for o in queue] == [1, 3]
    assert [o.body for o in take_frames(queue, 1, ())] == [1]
    assert [o.body for o in queue] == [3]
