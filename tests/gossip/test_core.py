"""The core driven by hand: Lifeguard's probe details, the bounds on peers'
numbers, and what it carries for its delegate."""

from __future__ import annotations

import random

import pytest

from keycafe.gossip import codec
from keycafe.gossip.config import GossipConfig
from keycafe.gossip.core import Gossip
from keycafe.gossip.messages import (
    MAX_INCARNATION,
    Address,
    Alive,
    Dead,
    IndirectPing,
    MemberInfo,
    Message,
    Ping,
    PushPull,
    State,
    Suspect,
    UserMsg,
)
from keycafe.gossip.simulator import Simulator, node_name

FORGER: Address = ("forger", 666)


def info(i: int, incarnation: int = 1) -> MemberInfo:
    return MemberInfo(
        node=f"n{i}",
        addr=(f"h{i}", 7946),
        client_addr=(f"h{i}", 9814),
        incarnation=incarnation,
        state=State.ALIVE,
    )


def packet(*msgs: Message) -> bytes:
    return codec.packet([codec.encode_message(m) for m in msgs])


def core_with(others: int) -> Gossip:
    """n0, which has heard of n1..n<others> alive."""
    core = Gossip(info(0), config=GossipConfig.lan(), rng=random.Random(7), now=0.0)
    for i in range(1, others + 1):
        core.receive_datagram(packet(Alive(member=info(i))), (f"h{i}", 7946), 0.0)
    return core


def run(core: Gossip, until: float) -> list[tuple[float, Address, list[Message]]]:
    """Drive ``core``'s timers alone (nobody answers) and decode what it sends."""
    out = []
    while (t := core.get_timer()) is not None and t <= until:
        core.handle_timer(t)
        for data, addr in core.datagrams_to_send(t):
            out.append((t, addr, codec.decode_packet_untrusted(data)))
        while core.next_stream_job() is not None:
            pass  # TCP fallback pings go nowhere
    return out


# -- Lifeguard ---------------------------------------------------------------------------


def test_a_ping_to_a_suspect_carries_the_suspicion() -> None:
    """Buddy system (Lifeguard 4.3): the suspect learns it is suspected from
    the probe itself, not only if gossip happens to reach it."""
    core = core_with(1)
    core.receive_datagram(packet(Suspect(incarnation=1, node="n1", source="n2")), FORGER, 0.1)
    assert core.members["n1"].state == State.SUSPECT
    core._broadcasts._items.clear()  # the suspicion's gossip is lost: only the ping is left
    pings = [msgs for _, addr, msgs in run(core, 3.0) if any(isinstance(m, Ping) for m in msgs)]
    assert pings  # n1 is probed before its suspicion runs out (4 s)
    for msgs in pings:
        assert Suspect(incarnation=1, node="n1", source="n0") in msgs


def test_local_health_stretches_the_probe_interval_and_its_timeout() -> None:
    """Lifeguard 4.1: at score s a probe waits (s+1) x probe_timeout for its ack
    before asking others, and the next probe comes (s+1) x probe_interval later."""
    core = core_with(3)
    core.awareness.score = 3  # multiplier 4
    sent = run(core, 12.0)
    pings = [t for t, _, msgs in sent if any(isinstance(m, Ping) for m in msgs)]
    asks = [t for t, _, msgs in sent if any(isinstance(m, IndirectPing) for m in msgs)]
    first = pings[0]
    assert asks[0] == pytest.approx(first + 4 * 0.5)  # not at first + 0.5
    assert pings[1] == pytest.approx(first + 4 * 1.0)  # not at first + 1.0


# -- bounds on numbers peers can raise (messages.MAX_INCARNATION) ------------------------


@pytest.mark.parametrize(
    "msg",
    [
        Suspect(incarnation=MAX_INCARNATION + 1, node="n1", source="x"),
        Dead(incarnation=MAX_INCARNATION + 1, node="n1", source="x"),
        Alive(member=info(1, MAX_INCARNATION + 1)),
        PushPull(join=False, members=(info(1, MAX_INCARNATION + 1),)),
    ],
)
def test_an_incarnation_above_the_bound_is_a_bad_packet(msg: Message) -> None:
    core = core_with(1)
    core.receive_datagram(packet(msg), FORGER, 0.1)
    assert core.stats.bad_packets == 1
    assert core.members["n1"].info.incarnation == 1


def test_a_forged_accusation_at_the_bound_cannot_evict_a_live_member() -> None:
    sim = Simulator.converged(5, seed=12)
    sim.run_for(2)
    victim, liar = node_name(2), sim.nodes[node_name(1)]
    # At the bound nobody could refute it: ignored and counted.
    for msg in (
        Dead(incarnation=MAX_INCARNATION, node=victim, source=liar.name),
        Suspect(incarnation=MAX_INCARNATION, node=victim, source=liar.name),
    ):
        liar.core.receive_datagram(packet(msg), FORGER, sim.now)
        sim._flush(liar)
    assert liar.core.stats.unrefutable == 2
    # One below it is believed, and refuted with the bound itself.
    forged = Dead(incarnation=MAX_INCARNATION - 1, node=victim, source=liar.name)
    liar.core.receive_datagram(packet(forged), FORGER, sim.now)
    sim._flush(liar)
    assert sim.state_of(liar, victim) == State.DEAD

    def back() -> bool:
        return all(
            (m := x.core.members[victim].info).state == State.ALIVE
            and m.incarnation == MAX_INCARNATION
            for x in sim.live()
        )

    assert sim.run_until_true(back, limit=60)
    sim.run_for(60)
    assert back()  # and it stays


def test_a_refutation_never_goes_above_the_bound() -> None:
    core = core_with(2)
    # A forged record of ourselves at the bound: we outbid it as far as we can.
    mine = Alive(member=info(0, MAX_INCARNATION))
    core.receive_datagram(packet(mine), FORGER, 0.1)
    assert core.stats.refutations == 1
    assert core.me.incarnation == MAX_INCARNATION
    assert run(core, 3.0)  # and everything we send still decodes (run decodes it)
    # A metadata change at the bound stays there too.
    core.update_meta({"k": "v"}, 3.1)
    assert core.me.incarnation == MAX_INCARNATION
    assert core.me.meta_version <= MAX_INCARNATION
    assert run(core, 6.0)


# -- the delegate's channels -------------------------------------------------------------


class Recorder:
    def __init__(self, state: bytes = b"") -> None:
        self.state = state
        self.messages: list[bytes] = []
        self.merged: list[bytes] = []

    def notify_msg(self, payload: bytes, now: float) -> None:
        self.messages.append(payload)

    def local_state(self) -> bytes:
        return self.state

    def merge_remote_state(self, payload: bytes, now: float) -> None:
        self.merged.append(payload)


def user_messages(sent: list[tuple[float, Address, list[Message]]]) -> set[bytes]:
    return {m.payload for _, _, msgs in sent for m in msgs if isinstance(m, UserMsg)}


def test_broadcasts_ride_on_datagrams_and_a_newer_one_replaces_the_older() -> None:
    core = core_with(3)
    core.queue_broadcast("k", b"old")
    core.queue_broadcast("k", b"new")
    core.queue_broadcast("other", b"too")
    sent = run(core, 3.0)
    assert user_messages(sent) == {b"new", b"too"}
    with pytest.raises(ValueError, match="cannot fit"):
        core.queue_broadcast("k", bytes(core.broadcast_limit + 1))


def test_a_member_named_like_a_broadcast_key_does_not_replace_it() -> None:
    core = core_with(2)
    core.queue_broadcast("n3", b"payload")
    named = MemberInfo(
        node="n3", addr=("h3", 1), client_addr=("h3", 2), incarnation=1, state=State.ALIVE
    )
    core.receive_datagram(packet(Alive(member=named)), FORGER, 0.0)  # queues news about n3
    assert b"payload" in user_messages(run(core, 3.0))


def test_received_broadcasts_and_push_pull_state_reach_the_delegate() -> None:
    a, b = core_with(1), Gossip(info(1), config=GossipConfig.lan(), rng=random.Random(1), now=0)
    a.delegate, b.delegate = Recorder(b"state of a"), Recorder(b"state of b")
    a.receive_datagram(packet(UserMsg(payload=b"hello")), FORGER, 0.1)
    assert a.delegate.messages == [b"hello"]  # type: ignore[attr-defined]
    a.pull_from(("h1", 7946), 0.2)
    job = a.next_stream_job()
    assert job is not None
    reply = b.handle_stream(job.payload, ("h0", 7946), 0.3)
    assert reply is not None
    a.receive_stream_reply(job, reply, 0.4)
    assert b.delegate.merged == [b"state of a"]  # type: ignore[attr-defined]
    assert a.delegate.merged == [b"state of b"]  # type: ignore[attr-defined]


def test_push_state_goes_to_k_live_members() -> None:
    core = core_with(5)
    core.delegate = Recorder(b"big")
    core.push_state(3, 1.0)
    jobs = []
    while (job := core.next_stream_job()) is not None:
        jobs.append(job)
    assert len({j.addr for j in jobs}) == 3
    for j in jobs:
        (pp,) = codec.decode_packet_untrusted(j.payload)
        assert isinstance(pp, PushPull)
        assert pp.user_state == b"big"
