"""The minority side's lease: serve only while a majority of the ring is heard from."""

from __future__ import annotations

import pytest

from keycafe.cluster import frames
from keycafe.cluster.lease import Lease
from keycafe.gossip.config import GossipConfig
from keycafe.gossip.suspicion import suspicion_timeout

LAN = GossipConfig.lan()


def lease(members: str = "abcde", me: str = "a", now: float = 0.0) -> Lease:
    x = Lease(node=me, probe_interval=LAN.probe_interval, suspicion_mult=LAN.suspicion_mult)
    x.set_ring((1, 1), tuple(members), now)
    return x


def test_it_holds_while_a_majority_with_this_node_is_heard_from() -> None:
    x = lease()
    assert x.holds(0.0)  # every member counts as heard when it enters the ring
    t = x.lease + 0.1
    assert not x.holds(t)  # nobody heard since
    x.heard_from("b", t)
    assert not x.holds(t)  # a and b: 2 of 5
    x.heard_from("c", t)
    assert x.holds(t)  # 3 of 5
    assert not x.holds(t + x.lease + 0.01)
    x.heard_from("z", t)  # not a member: counts for nothing
    assert "z" not in x.heard


def test_a_node_outside_the_ring_does_not_count_itself() -> None:
    x = lease("bcd", me="a")
    t = x.lease + 0.1
    x.heard_from("b", t)
    assert not x.holds(t)  # 1 of 3 (a is no member)
    x.heard_from("c", t)
    assert x.holds(t)


def test_a_ring_of_one_always_holds_and_sends_nothing() -> None:
    x = lease("a")
    assert x.holds(1e9)
    assert x.get_timer() is None


def test_heartbeats_go_to_every_other_member_each_period_and_may_be_dropped() -> None:
    x = lease()
    x.handle_timer(0.0)
    out = x.frames_to_send()
    assert sorted(o.peer for o in out) == list("bcde")
    assert all(o.kind == frames.HEARTBEAT and o.droppable for o in out)
    x.handle_timer(x.period / 2)
    assert x.frames_to_send() == []  # not due yet
    x.handle_timer(x.period)
    assert len(x.frames_to_send()) == 4
    assert x.get_timer() == pytest.approx(2 * x.period)


def test_new_members_get_a_lease_of_grace_and_gone_ones_are_forgotten() -> None:
    x = lease("abc")
    t = 100.0
    x.set_ring((1, 2), tuple("abcd"), t)
    assert x.heard["d"] == t  # new: heard now
    assert x.heard["b"] == 0.0  # known: as it was
    x.set_ring((1, 3), tuple("abd"), t)
    assert "c" not in x.heard


@pytest.mark.parametrize("n", [2, 3, 5, 10, 50, 100, 1000])
@pytest.mark.parametrize("profile", [GossipConfig.lan(), GossipConfig.local()])
def test_a_cut_off_node_stops_before_the_shortest_failover(n: int, profile: GossipConfig) -> None:
    """Stopped at most lease + period after its last frame from the other
    side; the majority needs a failed probe and the shortest suspicion."""
    members = [f"m{i}" for i in range(n)]
    x = Lease(
        node="m0", probe_interval=profile.probe_interval, suspicion_mult=profile.suspicion_mult
    )
    x.set_ring((1, 1), members, 0.0)
    shortest = suspicion_timeout(profile.suspicion_mult, n, profile.probe_interval)
    assert x.lease + x.period < shortest + profile.probe_timeout
    assert x.lease >= 3 * x.period * 0.999  # three heartbeats missed before a member is unheard
