"""The replication core: writes reach the in-sync replicas before they count as
durable, replicas take them only from the slot's primary, lost frames are sent
again, and entries (not commands) travel, so order and repeats do not matter."""

from __future__ import annotations

from typing import Any

import pytest

from keycafe.cluster import frames
from keycafe.cluster.frames import Frame
from keycafe.cluster.handoff import Outgoing
from keycafe.cluster.replication import ACK_TIMEOUT, FRAME_ENTRIES, RETRY_PAUSE, Replication
from keycafe.store.engine import Store
from keycafe.store.keyslot import SLOT_COUNT, key_slot

A, B, C = "a" * 40, "b" * 40, "c" * 40
WALL = 1_800_000_000_000


def owners_of(*nodes: str) -> tuple[tuple[str, ...], ...]:
    return (tuple(nodes),) * SLOT_COUNT


class Net:
    """Replication cores joined by in-order links; frames wait on the wire."""

    def __init__(self, *names: str) -> None:
        self.now = 0.0
        self.cores = {n: Replication(node=n, store=Store(n)) for n in names}
        self.wire: list[tuple[str, Outgoing]] = []

    def ring(self, owners: tuple[tuple[str, ...], ...], in_sync: set[str], *names: str) -> None:
        for n in names or self.cores:
            self.cores[n].set_ring((1, 1), owners, in_sync)

    def collect(self) -> None:
        for n, core in self.cores.items():
            self.wire += [(n, o) for o in core.frames_to_send(self.now, limit=10_000)]

    def deliver(self, only: set[str] | None = None) -> int:
        """Deliver what is on the wire (to ``only``), and the answers, until quiet."""
        total = 0
        while True:
            self.collect()
            go = [(s, o) for s, o in self.wire if only is None or o.peer in only]
            if not go:
                return total
            self.wire = [(s, o) for s, o in self.wire if not (only is None or o.peer in only)]
            for src, o in go:
                self.cores[o.peer].receive_frame(src, Frame(o.kind, o.body), self.now, WALL)
            total += len(go)

    def drop(self, to: str) -> None:
        self.collect()
        self.wire = [(s, o) for s, o in self.wire if o.peer != to]

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for core in self.cores.values():
            t = core.get_timer()
            if t is not None and t <= self.now:
                core.handle_timer(self.now)


def put(core: Replication, key: bytes, value: bytes, wall: int = WALL) -> None:
    core.store.put(key_slot(key), key, value, 0, wall)


def value(core: Replication, key: bytes) -> bytes | None:
    record = core.store.lookup(key_slot(key), key, WALL)
    return None if record is None else record


def held(core: Replication, key: bytes, v: bytes) -> bool:
    return (value(core, key) or b"").endswith(v + b"\r\n")


def verdict(core: Replication, first: int, last: int) -> bool | None:
    """How the core answers a request for writes ``first``..``last``: True
    (durable), False (given up), None (still waiting: withdrawn again)."""
    token = object()
    core.wait(token, first, last)
    released = dict(core.released())
    core.cancel(token)
    return released.get(token)


def test_a_write_is_durable_once_the_replica_holds_it() -> None:
    net = Net(A, B)
    net.ring(owners_of(A, B), {B})
    put(net.cores[A], b"k", b"v1")
    assert (net.cores[A].written, net.cores[A].durable) == (1, 0)
    net.collect()  # on the wire, not yet applied
    assert net.cores[A].durable == 0
    assert value(net.cores[B], b"k") is None
    net.deliver()
    assert held(net.cores[B], b"k", b"v1")
    assert net.cores[A].durable == 1


def test_a_round_sends_one_frame_per_replica() -> None:
    net = Net(A, B, C)
    net.ring(owners_of(A, B, C), {B, C})
    for i in range(100):
        put(net.cores[A], b"k%d" % i, b"v")
    out = net.cores[A].frames_to_send(0.0, limit=100)
    assert sorted(o.peer for o in out) == [B, C]
    assert all(o.kind == frames.REPL for o in out)
    assert net.cores[A].counters.entries_sent == 200


def test_a_key_written_twice_in_a_round_travels_once_at_its_last_value() -> None:
    net = Net(A, B)
    net.ring(owners_of(A, B), {B})
    put(net.cores[A], b"k", b"old")
    put(net.cores[A], b"k", b"new")
    net.deliver()
    assert held(net.cores[B], b"k", b"new")
    assert net.cores[A].counters.entries_sent == 1
    assert net.cores[A].durable == 2


def test_deletes_travel_as_tombstones() -> None:
    net = Net(A, B)
    net.ring(owners_of(A, B), {B})
    put(net.cores[A], b"k", b"v")
    net.deliver()
    assert net.cores[A].store.remove(key_slot(b"k"), b"k", WALL + 1)
    net.deliver()
    assert value(net.cores[B], b"k") is None
    assert b"k" in net.cores[B].store.tombstones[key_slot(b"k")]


def test_writes_wait_for_every_in_sync_replica_and_for_no_other() -> None:
    net = Net(A, B, C)
    net.ring(owners_of(A, B, C), {B})  # C is catching up: not in sync
    put(net.cores[A], b"k", b"v")
    net.deliver(only={C})
    assert held(net.cores[C], b"k", b"v")  # C gets the writes all the same
    assert net.cores[A].durable == 0  # ... but B has not acknowledged
    net.deliver(only={B, A})
    assert net.cores[A].durable == 1


def test_a_replica_refuses_writes_from_a_node_that_is_not_the_primary() -> None:
    """B follows a ring where C is the primary: A (paused, cut off, or behind)
    gets no acknowledgement that would let it answer a client."""
    net = Net(A, B)
    net.ring(owners_of(A, B), {B}, A)
    net.ring(owners_of(C, B), {B}, B)
    put(net.cores[A], b"k", b"stale")
    net.deliver()
    assert value(net.cores[B], b"k") is None
    assert net.cores[B].counters.entries_refused == 1
    assert net.cores[A].durable == 0
    # Offered again later; once B follows A's ring, it takes it.
    net.advance(RETRY_PAUSE)
    net.ring(owners_of(A, B), {B}, B)
    net.deliver()
    assert held(net.cores[B], b"k", b"stale")
    assert net.cores[A].durable == 1


def test_a_node_that_is_not_a_replica_of_the_slot_refuses_too() -> None:
    net = Net(A, B)
    net.ring(owners_of(A, B), {B}, A)
    net.ring(owners_of(A), set(), B)  # B holds no copy in its ring
    put(net.cores[A], b"k", b"v")
    net.deliver()
    assert value(net.cores[B], b"k") is None
    assert net.cores[A].durable == 0


def test_frames_lost_with_a_broken_link_are_sent_again() -> None:
    net = Net(A, B)
    net.ring(owners_of(A, B), {B})
    for i in range(3):
        put(net.cores[A], b"k%d" % i, b"v")
    net.drop(B)
    assert net.cores[A].durable == 0
    net.cores[A].link_broken(B, net.now)
    put(net.cores[A], b"k3", b"v")
    net.deliver()
    assert held(net.cores[B], b"k3", b"v")
    assert net.cores[A].durable == 0  # the lost ones wait a pause, not a spin
    assert net.cores[A].frames_to_send(net.now, limit=10) == []
    net.advance(RETRY_PAUSE)
    net.deliver()
    assert all(held(net.cores[B], b"k%d" % i, b"v") for i in range(4))
    assert net.cores[A].durable == 4
    assert net.cores[A].counters.resent == 3


def test_replicas_hold_the_newest_whatever_the_order_frames_are_applied() -> None:
    """Entries, not commands: an old frame applied after a newer one changes nothing."""
    net = Net(A, B)
    net.ring(owners_of(A, B), {B})
    put(net.cores[A], b"k", b"old", WALL)
    old = net.cores[A].frames_to_send(0.0, limit=10)
    put(net.cores[A], b"k", b"new", WALL + 5)
    new = net.cores[A].frames_to_send(0.0, limit=10)
    replica = net.cores[B]
    for o in (*new, *old, *new):
        replica.receive_frame(A, Frame(o.kind, o.body), 0.0, WALL)
    assert held(replica, b"k", b"new")


def test_large_rounds_are_split_into_frames() -> None:
    net = Net(A, B)
    net.ring(owners_of(A, B), {B})
    count = FRAME_ENTRIES * 2 + 1
    for i in range(count):
        put(net.cores[A], b"k%d" % i, b"v")
    out = net.cores[A].frames_to_send(0.0, limit=100)
    assert len(out) == 3
    for o in out:
        net.cores[B].receive_frame(A, Frame(o.kind, o.body), 0.0, WALL)
    net.deliver()
    assert net.cores[A].durable == count


def test_only_slots_this_node_is_primary_of_with_replicas_are_logged() -> None:
    net = Net(A, B)
    half = tuple((A, B) if s < SLOT_COUNT // 2 else (B, A) for s in range(SLOT_COUNT))
    net.ring(half, {A, B})
    mine = next(k for k in (b"k%d" % i for i in range(100)) if key_slot(k) < SLOT_COUNT // 2)
    theirs = next(k for k in (b"k%d" % i for i in range(100)) if key_slot(k) >= SLOT_COUNT // 2)
    put(net.cores[A], mine, b"v")
    put(net.cores[A], theirs, b"v")  # not A's to replicate (the shell would redirect it)
    assert net.cores[A].durable == 0
    assert net.cores[A].written == 1
    net.ring(owners_of(A), set())  # no replicas: nothing to log
    put(net.cores[A], mine, b"v2")
    assert net.cores[A].written == 1


BAD: list[Any] = [
    None,
    [1, 1, 1],
    [1, 1, -1, []],
    [1, 1, 1 << 63, []],
    [1, 1, 1, [[SLOT_COUNT, []]]],
    [1, 1, 1, [[0, [[b"k", b"v", 0, 1]]]]],
    [1, 1, 1, [[0, [[b"k", b"v", 0, -1, A]]]]],
    [1, 1, 1, [[0, [["k", b"v", 0, 1, A]]]]],
    [1, 1, 1, [[0, [[b"k", b"v", 0, 1, "w" * 65]]]]],  # a writer id no node has
]


@pytest.mark.parametrize("body", BAD)
def test_malformed_frames_are_counted_and_dropped(body: Any) -> None:
    net = Net(A, B)
    net.ring(owners_of(A, B), {B})
    net.cores[B].receive_frame(A, Frame(frames.REPL, body), 0.0, WALL)
    net.cores[A].receive_frame(B, Frame(frames.REPL_ACK, body), 0.0, WALL)
    assert net.cores[B].counters.bad_frames == 1
    assert net.cores[A].counters.bad_frames == 1
    assert not any(net.cores[B].store.slots)


def test_writes_queued_for_a_node_that_stopped_being_a_replica_are_not_sent_to_it() -> None:
    """The old replica, no longer one, must not be sent writes it would refuse
    for ever; they go to the slot's new replica instead."""
    net = Net(A, B, C)
    net.ring(owners_of(A, B), {B}, A)
    put(net.cores[A], b"k", b"v")
    assert net.cores[A].written == 1  # collected, queued for B
    net.ring(owners_of(A, C), {C}, A)
    out = net.cores[A].frames_to_send(0.0, limit=10)
    assert [o.peer for o in out] == [C]


def test_an_ack_settles_its_own_frame_not_the_ones_before_it() -> None:
    """Frame 1 is lost with a connection that broke; frame 2 travels on the
    next one before the primary hears of the break. Its acknowledgement must
    not count for frame 1 (a whole-node simulation lost a write that way)."""
    net = Net(A, B)
    net.ring(owners_of(A, B), {B})
    put(net.cores[A], b"k1", b"v")
    net.drop(B)  # frame 1: lost
    put(net.cores[A], b"k2", b"v")
    net.deliver()  # frame 2 and its acknowledgement
    assert held(net.cores[B], b"k2", b"v")
    assert value(net.cores[B], b"k1") is None
    assert net.cores[A].durable == 0  # write 1 is not on the replica
    net.cores[A].link_broken(B, net.now)
    net.advance(RETRY_PAUSE)
    net.deliver()
    assert held(net.cores[B], b"k1", b"v")
    assert net.cores[A].durable == 2


def test_a_write_the_ring_took_away_before_it_was_replicated_is_given_up() -> None:
    """A primary cut off from the others while they fail over: its replica
    refuses its writes; once A hears it is no longer the primary they are
    not pending any more, and must be answered with an error, not OK."""
    net = Net(A, B)
    net.ring(owners_of(A, B), {B}, A)
    net.ring(owners_of(B), set(), B)  # B took over: A was declared down
    put(net.cores[A], b"k", b"lost")
    net.cores[A].wait("request", 1, 1)
    net.deliver()
    assert net.cores[A].durable == 0  # refused, offered again later
    assert net.cores[A].released() == []
    net.cores[A].set_ring((1, 2), owners_of(B), set())
    assert net.cores[A].durable == 1  # nothing pending at once ...
    assert net.cores[A].released() == [("request", False)]  # ... because it was given up
    net.advance(RETRY_PAUSE)
    assert verdict(net.cores[A], 1, 1) is True  # told once
    assert net.cores[A].frames_to_send(net.now, limit=10) == []  # nothing offered again
    assert value(net.cores[B], b"k") is None


@pytest.mark.parametrize("reader_first", [False, True])
def test_a_read_of_a_write_given_up_is_failed_and_so_is_the_write(reader_first: bool) -> None:
    """A read waits for the write it read (``Store.unsettled``): given up,
    both the write's request and the read's fail, whichever registered first
    (the read only looks at the verdict; the write takes it)."""
    net = Net(A, B)
    net.ring(owners_of(A, B), {B}, A)
    net.ring(owners_of(B), set(), B)
    a = net.cores[A]
    put(a, b"k", b"lost")
    assert a.store.unsettled == {key_slot(b"k"): 1}
    waits = [("write", 1, 1, 0), ("read", 0, 0, 1)]
    for token, first, last, read in reversed(waits) if reader_first else waits:
        a.wait(token, first, last, read)
    net.deliver()
    assert a.released() == []  # both wait: the replica refused the write
    a.set_ring((1, 2), owners_of(B), set())
    assert sorted(a.released()) == [("read", False), ("write", False)]


def test_a_read_fails_if_an_earlier_write_to_its_slot_is_given_up() -> None:
    """Two keys of one slot: the first write's frame is lost with a broken
    link, the second is acknowledged, then a ring change takes the slot away
    before the first is sent again. A read of the first key waits for the
    slot's last write, which was kept; the value it read was not."""
    net = Net(A, B)
    net.ring(owners_of(A, B), {B}, A)
    net.ring(owners_of(B), set(), B)  # B takes nothing from A: it is not A's replica
    a = net.cores[A]
    put(a, b"{s}first", b"lost")
    net.drop(B)
    a.link_broken(B, net.now)  # sent again after RETRY_PAUSE
    net.ring(owners_of(A, B), {B}, B)
    put(a, b"{s}second", b"kept")
    net.deliver()
    assert a.store.unsettled == {key_slot(b"{s}first"): 2}
    a.wait("read", 0, 0, 2)  # GET {s}first: the slot's last write is number 2
    assert a.released() == []  # write 1 is not durable yet
    a.set_ring((1, 2), owners_of(B), set())  # write 1, still to resend: given up
    assert a.released() == [("read", False)]


def test_a_read_registered_after_its_write_was_given_up_fails() -> None:
    """The shell may register a read a moment after it was served: by then
    the write it read may be given up and ``settled`` past it (a review)."""
    net = Net(A, B)
    net.ring(owners_of(A, B), {B}, A)
    net.ring(owners_of(B), set(), B)  # B refuses: A is not the primary it follows
    a = net.cores[A]
    put(a, b"k", b"lost")
    net.deliver()
    a.set_ring((1, 2), owners_of(B), set())  # write 1 given up
    a.wait("other", 0, 0, 0)
    assert a.released() == [("other", True)]
    assert a.settled >= 1  # past the given-up write
    a.wait("read", 0, 0, 1)  # registered only now: its floor is past write 1
    assert a.released() == [("read", False)]


def test_a_read_waits_for_the_write_it_read_and_no_longer() -> None:
    net = Net(A, B)
    net.ring(owners_of(A, B), {B})
    a = net.cores[A]
    put(a, b"k", b"v")
    a.wait("read", 0, 0, 1)
    assert a.released() == []
    assert a.settled == 0
    net.deliver()
    assert a.released() == [("read", True)]
    assert a.settled == 1  # a later read of it need not wait


def test_writes_replicated_in_time_are_not_given_up() -> None:
    net = Net(A, B)
    net.ring(owners_of(A, B), {B})
    put(net.cores[A], b"k", b"v")
    net.deliver()
    net.ring(owners_of(B), set())
    assert net.cores[A].durable == 1
    assert verdict(net.cores[A], 1, 1) is True


def test_writes_waiting_on_a_replica_that_went_away_are_kept_by_the_primary() -> None:
    """B dies and is declared down; A still leads the slot, alone: its writes
    waiting on B are safe here (no in-sync replica needs them), not given up."""
    net = Net(A, B)
    net.ring(owners_of(A, B), {B}, A)
    put(net.cores[A], b"k", b"v")
    net.drop(B)
    assert net.cores[A].durable == 0
    net.cores[A].set_ring((1, 2), owners_of(A), set())
    assert net.cores[A].durable == 1
    assert verdict(net.cores[A], 1, 1) is True
    assert held(net.cores[A], b"k", b"v")


def test_a_frame_whose_acknowledgement_never_comes_is_sent_again() -> None:
    """The ack was lost with a connection only the replica saw break: without
    a timeout every later write would wait for ever."""
    net = Net(A, B)
    net.ring(owners_of(A, B), {B})
    put(net.cores[A], b"k", b"v")
    net.collect()
    frame = [(s, o) for s, o in net.wire if o.peer == B]
    net.wire = []
    src, o = frame[0]
    net.cores[B].receive_frame(src, Frame(o.kind, o.body), net.now, WALL)
    net.cores[B].frames_to_send(net.now, limit=10)  # the ack: lost
    assert net.cores[A].durable == 0
    timer = net.cores[A].get_timer()
    assert timer is not None
    assert timer <= net.now + ACK_TIMEOUT
    net.advance(ACK_TIMEOUT)
    net.advance(RETRY_PAUSE)
    net.deliver()
    assert net.cores[A].durable == 1


def test_a_write_waiting_on_a_replica_that_was_swapped_waits_on_the_new_one() -> None:
    """A keeps the slot; its replica changes from B to C before B took the
    write. C's copy may predate the write: it must hold it before it counts."""
    net = Net(A, B, C)
    net.ring(owners_of(A, B), {B})
    put(net.cores[A], b"k", b"v")
    net.drop(B)
    net.ring(owners_of(A, C), {C})
    assert net.cores[A].durable == 0
    assert verdict(net.cores[A], 1, 1) is None  # waiting, not given up
    net.deliver()
    assert held(net.cores[C], b"k", b"v")
    assert net.cores[A].durable == 1


def test_entries_the_replicas_clock_refuses_are_not_acknowledged() -> None:
    """A primary whose clock runs far ahead (beyond the store's bound): the
    replica does not take its entries, so they must not count as held."""
    net = Net(A, B)
    net.ring(owners_of(A, B), {B})
    ahead = WALL + 3_600_000  # an hour ahead of B's wall clock
    put(net.cores[A], b"k", b"v", wall=ahead)
    net.deliver()
    assert value(net.cores[B], b"k") is None
    assert net.cores[B].counters.entries_refused == 1
    assert net.cores[A].durable == 0


def test_writes_a_new_replica_took_wait_until_its_copies_are_confirmed() -> None:
    """C just became a replica; what was streamed to it may be incomplete
    until the hand-off's barrier is acknowledged: its acks do not count yet."""
    net = Net(A, C)
    net.ring(owners_of(A, C), {C})
    net.cores[A].unconfirm(C, range(SLOT_COUNT))
    put(net.cores[A], b"k", b"v")
    net.deliver()
    assert held(net.cores[C], b"k", b"v")
    assert net.cores[A].durable == 0  # C took it, but its copy is not confirmed
    net.cores[A].confirm(C, range(SLOT_COUNT))
    assert net.cores[A].durable == 1


def test_frames_stay_within_the_link_limit_whatever_the_value_sizes() -> None:
    """Writes of values up to a node's largest (frames.MAX_VALUE) travel in
    REPL frames the link accepts; each write rides with its own entry."""
    net = Net(A, B)
    net.ring(owners_of(A, B), {B})
    a = net.cores[A]
    big = b"x" * frames.MAX_VALUE
    for i in range(3):
        put(a, b"big%d" % i, big)
    for i in range(100):
        put(a, b"small%d" % i, b"v")
    out = a.frames_to_send(0.0, limit=10_000)
    assert len(out) >= 3
    for o in out:
        frames.encode_frame(o.kind, o.body)  # raises past MAX_FRAME
    net.wire += [(A, o) for o in out]
    net.deliver()
    assert all(held(net.cores[B], b"big%d" % i, big) for i in range(3))
    assert a.durable == a.written == 103


def test_a_huge_backlog_is_framed_a_few_frames_at_a_time() -> None:
    net = Net(A, B)
    net.ring(owners_of(A, B), {B})
    a = net.cores[A]
    for i in range(20 * FRAME_ENTRIES):
        put(a, b"k%d" % i, b"v")
    first = a.frames_to_send(0.0, limit=4)
    assert len(first) == 4
    assert a.counters.frames_sent == 4  # no more built than asked for
    assert a.lag()[B] == 20 * FRAME_ENTRIES  # the rest still queued, and counted
    rest = []
    while out := a.frames_to_send(0.0, limit=4):
        rest += out
    assert len(first) + len(rest) == 20


def test_nothing_is_built_for_a_busy_peer_and_its_writes_wait() -> None:
    """The shell names peers whose links take no frames (busy): their writes
    stay queued, in order, and frames to the others flow."""
    net = Net(A, B, C)
    owners = tuple((A, B) if s % 2 else (A, C) for s in range(SLOT_COUNT))
    net.ring(owners, {B, C})
    a = net.cores[A]
    to_b = [k for k in (b"k%d" % i for i in range(100)) if key_slot(k) % 2][:10]
    to_c = [k for k in (b"k%d" % i for i in range(100)) if not key_slot(k) % 2][:10]
    for k in to_b + to_c:
        put(a, k, b"v")
    out = a.frames_to_send(0.0, limit=100, busy={C})
    assert {o.peer for o in out} == {B}
    assert a.counters.frames_sent == 1  # none built for C, to wait in memory
    assert a.lag()[C] == 10
    out2 = a.frames_to_send(0.0, limit=100)
    assert {o.peer for o in out2} == {C}


def test_settled_lags_until_asked_when_nothing_waits() -> None:
    """Released requests bring ``settled`` up; with none waiting (an expiry's
    delete, say) it lags, and ``settle`` brings it up for a read to check."""
    net = Net(A, B)
    net.ring(owners_of(A, B), {B})
    a = net.cores[A]
    put(a, b"k", b"v")
    net.deliver()
    assert a.released() == []
    assert a.settled == 0
    assert a.settle() == 1
    assert a.settled == 1


def test_a_replica_whose_copies_cannot_be_trusted_takes_no_writes() -> None:
    """A process restarted under its id, not yet brought back in: its copy
    is empty, so no write may count as durable with it."""
    net = Net(A, B)
    net.ring(owners_of(A, B), {B})
    net.cores[B].accepting = False
    put(net.cores[A], b"k", b"v")
    net.deliver()
    assert value(net.cores[B], b"k") is None
    assert net.cores[A].durable == 0
    net.cores[B].accepting = True
    net.advance(RETRY_PAUSE)
    net.deliver()
    assert held(net.cores[B], b"k", b"v")
    assert net.cores[A].durable == 1
