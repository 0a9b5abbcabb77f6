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
    t = 1.0
    x.heard_from("b", t)
    x.set_ring((1, 2), tuple("abcd"), t)
    assert x.heard["d"] == t  # new: heard as of the lease held (b's, now)
    assert x.heard["c"] == 0.0  # known: as it was
    x.set_ring((1, 3), tuple("abd"), t)
    assert "c" not in x.heard


def test_a_ring_read_after_the_lease_lapsed_gives_no_new_one() -> None:
    """A process stopped for a while may read a ring adding members from its
    socket buffer on waking: their grace must not renew its lapsed lease."""
    x = lease("abc")
    late = 100.0
    assert not x.holds(late)
    x.set_ring((1, 2), tuple("abcde"), late)
    assert not x.holds(late)
    assert x.heard["d"] <= 0.0


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


def pinged(x: Lease, now: float) -> list[list[object]]:
    """Send this period's pings at ``now``; their bodies."""
    x.handle_timer(now)
    return [o.body for o in x.frames_to_send()]


def test_a_ping_is_answered_at_once_with_its_stamp() -> None:
    x = lease()
    assert x.receive("b", [1, 1, 12.5, None], 20.0)
    (pong,) = x.frames_to_send()
    assert (pong.peer, pong.kind, pong.body) == ("b", frames.HEARTBEAT, [1, 1, None, 12.5])
    assert pong.droppable


def test_a_pong_renews_as_of_the_ping_it_echoes_not_as_of_its_arrival() -> None:
    """Read late (this process was stopped), a pong says nothing of now."""
    x = lease()
    t = x.lease + 1.0
    pings = pinged(x, t)
    stamp = pings[0][2]
    assert stamp == t
    x.receive("b", [1, 1, None, stamp], t + 0.01)
    x.receive("c", [1, 1, None, stamp], t + 0.01)
    assert x.holds(t + 0.01)
    assert x.expires() == pytest.approx(t + x.lease)
    # The same pongs read after a long stop renew nothing past the ping's time.
    late = t + 20.0
    x.receive("d", [1, 1, None, stamp], late)
    assert not x.holds(late)


def test_a_pong_of_a_ping_never_sent_is_dropped_and_counted() -> None:
    x = lease()
    pinged(x, 5.0)
    assert not x.receive("b", [1, 1, None, 4.0], 5.1)
    assert x.bad == 1
    assert x.heard["b"] == 0.0  # as it entered the ring


def test_a_pong_from_a_peer_on_a_newer_ring_renews_nothing() -> None:
    """It may have failed this node over: not until this node follows it."""
    x = lease()
    t = x.lease + 1.0
    stamp = pinged(x, t)[0][2]
    for peer in "bcd":
        x.receive(peer, [1, 2, None, stamp], t)
    assert not x.holds(t)
    for peer in "bcd":
        x.receive(peer, [1, 1, None, stamp], t)  # the same ring: it counts
    assert x.holds(t)


def test_a_heartbeat_from_a_peer_on_a_newer_ring_says_this_node_is_behind() -> None:
    x = lease()
    t = x.lease + 1.0
    stamp = pinged(x, t)[0][2]
    assert x.take_newer() is None
    x.receive("b", [1, 2, None, stamp], t)
    x.receive("c", [1, 3, 7.0, None], t)  # a ping says it too
    x.receive("d", [1, 2, None, stamp], t)  # older than the newest heard of
    assert x.take_newer() == ((1, 3), "c")
    assert x.take_newer() is None  # once
    x.receive("b", [1, 2, None, stamp], t)
    x.set_ring((1, 2), "abcde", t)  # adopted meanwhile: nothing to fetch
    assert x.take_newer() is None


def test_a_heartbeat_carrying_a_ping_and_a_stale_pong_renews_nothing() -> None:
    """A peer on a newer ring cannot renew the lease by also pinging."""
    x = lease()
    t = x.lease + 1.0
    stamp = pinged(x, t)[0][2]
    for peer in "bcd":
        x.receive(peer, [1, 2, 3.0, stamp], t)
    assert not x.holds(t)


def test_a_two_field_heartbeat_from_an_older_peer_counts_when_read() -> None:
    x = lease()
    t = x.lease + 1.0
    x.receive("b", [1, 1], t)
    x.receive("c", [1, 1], t)
    assert x.holds(t)


@pytest.mark.parametrize(
    "body",
    [
        None,
        [1],
        [1, 1, 2.0],
        [1, 1, 2.0, None, 5],
        [-1, 1, 2.0, None],
        [1, 1 << 64, 2.0, None],
        [1, 1, float("nan"), None],
        [1, 1, float("inf"), None],
        [1, 1, -2.0, None],
        [1, 1, 2.0**60, None],
        [1, 1, True, None],
        [1, 1, b"x", None],
        [1, 1, None, [2.0]],
    ],
)
def test_malformed_heartbeats_are_dropped_and_counted(body: object) -> None:
    x = lease()
    assert not x.receive("b", body, 1.0)
    assert x.bad == 1
    assert x.frames_to_send() == []  # no pong for a bad ping


def test_members_declared_down_are_pinged_and_their_pongs_count() -> None:
    """In a ring of two whose other member restarted and is being streamed
    back (declared down meanwhile), it is the only one that can answer."""
    x = Lease(node="a", probe_interval=LAN.probe_interval, suspicion_mult=LAN.suspicion_mult)
    x.set_ring((1, 5), ("a", "b"), 0.0, down=("b",))
    t = x.lease + 1.0
    (ping,) = pinged(x, t)
    assert ping[2] == t
    x.receive("b", [1, 5, None, t], t + 0.01)
    assert x.holds(t + 0.01)


def test_an_older_peers_heartbeat_must_name_a_ring_version() -> None:
    x = lease()
    assert not x.receive("b", ["x", "y"], 1.0)
    assert not x.receive("b", [1, -1], 1.0)
    assert x.bad == 2
