"""Forwards lost without a broken link being reported (a connection replaced
before its sender heard it break) must never let a barrier be confirmed, nor
the old owner let go of a slot whose new owner lacks a write. Cases found by
a review of the forward generations (keycafe/cluster/handoff.py)."""

from __future__ import annotations

from keycafe.cluster import frames
from keycafe.cluster.frames import Frame
from keycafe.cluster.handoff import ACK_TIMEOUT, RETRY_PAUSE
from keycafe.store.keyslot import SLOT_COUNT, key_slot
from tests.cluster.test_handoff import WALL, A, B, C, Cluster, R, fill, two_copies, value


def late(store_value: bytes | None) -> bool:
    return (store_value or b"").endswith(b"late\r\n")


def joined_with_two_copies() -> tuple[Cluster, bytes]:
    """C joins A and B (two copies); a key of A's that moves to C, of a slot
    A keeps no copy of."""
    net = Cluster(A, B, C, table=two_copies)
    keys = fill(net.cores[A].store, 3000)
    fill(net.cores[B].store, 3000)
    net.ring(R(epoch=1, members=(A, B)))
    net.ring(R(epoch=2, members=(A, B), pending=(A, B, C)))
    net.deliver()
    after, before = two_copies((A, B, C)), two_copies((A, B))
    moved = [
        k
        for k in keys
        if before[key_slot(k)][0] == A
        and after[key_slot(k)][0] == C
        and A not in after[key_slot(k)]
    ]
    assert moved
    return net, moved[0]


def lose_forwards(net: Cluster, src: str, dest: str) -> None:
    lost = [(s, o) for s, o in net.wire if s == src and o.peer == dest and o.kind == frames.FORWARD]
    assert lost
    net.wire = [x for x in net.wire if x not in lost]


def test_a_second_done_behind_a_lost_forward_is_not_confirmed_either() -> None:
    """At the change A sends C two transfers back to back (a confirm for the
    slots it now replicates there, a barrier for those C gains). The forward
    of a late write is lost: neither DONE may be confirmed, the first's
    report must not make the second's count agree."""
    net, k = joined_with_two_copies()
    s = key_slot(k)
    net.cores[A].store.put(s, k, b"late", 0, WALL + 5)
    net.ring(R(epoch=3, members=(A, B, C)))
    lose_forwards(net, A, C)
    net.deliver()
    routed = net.routing(C)
    assert routed.moving[s] == 1 or late(value(net.cores[C].store, k))
    net.advance(RETRY_PAUSE + 0.01)
    net.deliver()
    assert late(value(net.cores[C].store, k))
    assert net.routing(C).moving[s] == 0
    assert net.routing(A).moving[s] == 0


def test_losing_the_ack_that_reported_the_gap_loses_no_write() -> None:
    net, k = joined_with_two_copies()
    s = key_slot(k)
    net.cores[A].store.put(s, k, b"late", 0, WALL + 5)
    net.ring(R(epoch=3, members=(A, B, C)))
    lose_forwards(net, A, C)
    net.deliver(only={C, B})
    gap = [(s_, o) for s_, o in net.wire if s_ == C and o.kind == frames.ACK and o.body[3] == 1]
    net.wire = [x for x in net.wire if x not in gap]  # the report is lost too
    net.deliver()
    for _ in range(4):
        net.advance(ACK_TIMEOUT + 1)
        net.deliver()
    assert late(value(net.cores[C].store, k))


def test_a_restarted_sender_counts_its_forwards_anew() -> None:
    """B counted one forward from A's previous process; A's new one sends a
    forward that is lost, then a DONE stating one: B must see the gap."""
    net = Cluster(A, B)
    b = net.cores[B]
    b.receive_frame(A, Frame(frames.FORWARD, [1, 1, 0, [], "old-boot:0"]), 0.0, WALL)
    b.receive_frame(A, Frame(frames.DONE, [1, 1, 2, 0, [], 1, "new-boot:0"]), 0.0, WALL)
    ack = [o for o in b.frames_to_send(0.0, 100) if o.kind == frames.ACK][-1]
    assert ack.body[3] == 1
    assert b.counters.bad_frames == 0


def test_a_done_without_a_count_is_taken_as_before() -> None:
    """Link protocol 2's DONE (five fields) still completes a transfer."""
    net = Cluster(A, B)
    b = net.cores[B]
    b.receive_frame(A, Frame(frames.DONE, [1, 1, 2, 0, []]), 0.0, WALL)
    ack = [o for o in b.frames_to_send(0.0, 100) if o.kind == frames.ACK][-1]
    assert b.counters.bad_frames == 0
    assert ack.body[:2] == [1, 0]
    assert ack.body[3] == 0


def _table(members: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """One copy: B takes slots 0-99 when it joins A, and 0-199 when C joins."""
    if members == (A,):
        return ((A,),) * SLOT_COUNT
    top = {(A, B): 100, (A, B, C): 200}[members]
    return tuple((B,) if s < top else (A,) for s in range(SLOT_COUNT))


def test_a_whole_transfer_counts_only_for_its_own_slots() -> None:
    """A small whole transfer acknowledged while a large one (for other slots
    whose forwards were lost) is still streaming must not mark the peer's
    copies whole: the change then drops the large one, and its drain must
    carry those slots whole, not as a bare barrier."""
    net = Cluster(A, B, C, table=_table)
    a, b = net.cores[A], net.cores[B]
    keys, few, i = [], 0, 0
    while len(keys) < 3000:
        k = b"x%d" % i
        i += 1
        s = key_slot(k)
        if (s < 100 and few < 5) or 100 <= s < 200:
            few += s < 100
            keys.append(k)
            a.store.put(s, k, b"v", 0, WALL)
    net.ring(R(epoch=1, members=(A,)))
    net.ring(R(epoch=2, members=(A,), pending=(A, B)))
    net.deliver()
    net.ring(R(epoch=3, members=(A, B)))
    net.deliver(only={B})
    net.wire = [x for x in net.wire if x[1].peer != A]  # the barrier's ACK is lost
    net.ring(R(epoch=4, members=(A, B), pending=(A, B, C)))
    net.deliver()
    assert 4 in net.ready(A)
    k = next(q for q in keys if 100 <= key_slot(q) < 200)
    s = key_slot(k)
    a.store.put(s, k, b"late", 0, WALL + 5)
    net.advance(0.01)
    lose_forwards(net, A, B)
    net.advance(ACK_TIMEOUT + RETRY_PAUSE + 0.1)  # the barrier again, whole: B sees the gap
    net.deliver()
    # Both restart; the small one is streamed and acknowledged first.
    net.now += RETRY_PAUSE + 0.01
    a.handle_timer(net.now)
    for o in a.frames_to_send(net.now, limit=8):
        b.receive_frame(A, Frame(o.kind, o.body), net.now, WALL)
    for o in b.frames_to_send(net.now, 100):
        a.receive_frame(B, Frame(o.kind, o.body), net.now, WALL)
    net.ring(R(epoch=5, members=(A, B, C)))  # the change, before the large one is done
    net.deliver()
    for _ in range(3):
        net.advance(ACK_TIMEOUT + 1)
        net.deliver()
    assert late(value(b.store, k))
