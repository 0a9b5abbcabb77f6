"""The ring keeper: which ring it keeps, how it spreads one, when it pulls."""

from __future__ import annotations

import random

from keycafe.cluster.ring_codec import encode_ring
from keycafe.cluster.ring_record import MAX_TERM, Ring
from keycafe.cluster.ringcast import RingKeeper
from keycafe.gossip import codec
from keycafe.gossip.config import GossipConfig
from keycafe.gossip.core import Gossip, StreamJob
from keycafe.gossip.messages import Alive, MemberInfo, PushPull, State, UserMsg


def info(i: int) -> MemberInfo:
    return MemberInfo(
        node=f"n{i}", addr=(f"h{i}", 1), client_addr=(f"h{i}", 2), incarnation=1, state=State.ALIVE
    )


def keeper_with(others: int) -> RingKeeper:
    core = Gossip(info(0), config=GossipConfig.lan(), rng=random.Random(3), now=0.0)
    for i in range(1, others + 1):
        alive = codec.packet([codec.encode_message(Alive(member=info(i)))])
        core.receive_datagram(alive, info(i).addr, 0.0)
    return RingKeeper.attach(core)


def ring(epoch: int, term: int = 1, members: int = 3) -> Ring:
    return Ring(
        epoch=epoch, term=term, coordinator="n0", members=tuple(f"n{i}" for i in range(members))
    )


def jobs(core: Gossip) -> list[StreamJob]:
    out = []
    while (job := core.next_stream_job()) is not None:
        out.append(job)
    return out


def test_it_keeps_the_greatest_term_then_epoch() -> None:
    k = keeper_with(2)
    k.notify_msg(encode_ring(ring(5)), 1.0)
    k.notify_msg(encode_ring(ring(4)), 1.0)  # older epoch
    k.notify_msg(encode_ring(ring(50, term=0)), 1.0)  # older term, whatever its epoch
    assert k.ring == ring(5)
    k.merge_remote_state(encode_ring(ring(1, term=2)), 1.0)
    assert k.ring == ring(1, term=2)
    assert k.changes == 2


def test_a_bad_or_out_of_range_ring_changes_nothing() -> None:
    k = keeper_with(2)
    k.publish(ring(5), 1.0)
    too_high = encode_ring(ring(6, term=MAX_TERM + 1))
    for payload in (too_high, b"\xc1", b"junk"):
        k.notify_msg(payload, 1.0)
        k.merge_remote_state(payload, 1.0)
    assert k.ring == ring(5)
    assert k.bad_payloads == 6


def test_a_small_ring_is_broadcast_and_a_big_one_pushed_to_a_few() -> None:
    k = keeper_with(6)
    k.publish(ring(1), 1.0)
    assert jobs(k.core) == []
    k.core.handle_timer(k.core.get_timer() or 0.0)  # a gossip round
    sent = [
        m
        for data, _ in k.core.datagrams_to_send(1.0)
        for m in codec.decode_packet_untrusted(data)
        if isinstance(m, UserMsg)
    ]
    assert sent
    assert {m.payload for m in sent} == {encode_ring(ring(1))}
    big = ring(2, members=400)
    k.publish(big, 2.0)
    pushed = jobs(k.core)
    assert len({j.addr for j in pushed}) == k.core.config.gossip_nodes
    for job in pushed:
        (pp,) = codec.decode_packet_untrusted(job.payload)
        assert isinstance(pp, PushPull)
        assert pp.user_state == encode_ring(big)


def test_a_member_behind_pulls_after_a_grace_period_and_not_too_often() -> None:
    k = keeper_with(2)
    interval = k.core.config.probe_interval
    coordinator = info(1).addr
    k.pull((1, 3), coordinator, 10.0)
    k.pull((1, 3), coordinator, 10.0 + 1.9 * interval)
    assert jobs(k.core) == []  # the epidemic gets two probe intervals first
    k.pull((1, 3), coordinator, 10.0 + 2 * interval)
    assert [j.addr for j in jobs(k.core)] == [coordinator]
    k.pull((1, 3), coordinator, 10.0 + 2.5 * interval)
    assert jobs(k.core) == []  # at most once a probe interval
    k.pull((1, 3), coordinator, 10.0 + 3 * interval)
    assert len(jobs(k.core)) == 1
    assert k.pulls == 2
    k.publish(ring(3), 20.0)
    k.pull((1, 3), coordinator, 30.0)
    assert not [j for j in jobs(k.core) if j.addr == coordinator]  # caught up


def test_the_coordinator_pushes_to_a_member_left_behind_after_a_grace() -> None:
    k = keeper_with(2)
    k.publish(ring(5), 0.0)
    jobs(k.core)
    interval = k.core.config.probe_interval
    lagging = info(2).addr
    k.push_to("n2", lagging, (1, 4), 10.0)
    k.push_to("n2", lagging, (1, 4), 10.0 + 1.9 * interval)
    assert jobs(k.core) == []  # the epidemic gets two probe intervals first
    k.push_to("n2", lagging, (1, 4), 10.0 + 2 * interval)
    assert [j.addr for j in jobs(k.core)] == [lagging]
    k.push_to("n2", lagging, (1, 4), 10.0 + 2.5 * interval)
    assert jobs(k.core) == []  # at most once a probe interval
    k.push_to("n2", lagging, (1, 5), 20.0)
    assert jobs(k.core) == []  # caught up
    assert k.pushes == 1
