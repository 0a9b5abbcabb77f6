"""Partitions of whole nodes with two copies: the minority side serves no key
(and stops before the majority fails over),
and slots whose every copy sits on the minority side are neither handed,
empty, to new owners on the majority side nor dropped when the sides heal."""

from __future__ import annotations

import pytest

from keycafe.cluster import frames
from keycafe.cluster.coordinator import TERM_KEY
from keycafe.cluster.frames import Frame
from keycafe.cluster.ring import RingConfig
from keycafe.cluster.ring_record import Ring
from keycafe.cluster.simulator import ClusterSimulator, SimClient, check, run_writer
from keycafe.server.routing import CLUSTER_IS_DOWN
from keycafe.store.keyslot import key_slot

RING0 = Ring(epoch=0, term=0, coordinator="", members=())


def _cluster(seed: int, n: int) -> ClusterSimulator:
    sim = ClusterSimulator(seed=seed, ring=RingConfig(vnodes=64, replicas=2))
    first = sim.add_node(0)
    for i in range(1, n):
        sim.add_node(i, seed=first)
    assert sim.run_until_true(sim.settled, 60)
    return sim


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_the_minority_side_halts_and_the_majority_side_does_not(seed: int) -> None:
    sim = _cluster(seed, 5)
    names = sorted(sim.members)
    minority, majority = names[:2], names[2:]
    version = sim.members[names[0]].cluster.ring.version  # type: ignore[union-attr]
    cut = sim.now
    sim.partition(minority, majority)
    halted_at: dict[str, float] = {}
    failover_at: list[float] = []

    def watch() -> bool:
        for n in names:  # the routing follows the node's view at once
            m = sim.members[n]
            assert m.state.routing.halted == m.cluster.halted, (n, sim.now)
        for n in minority:
            if sim.members[n].state.routing.halted:
                halted_at.setdefault(n, sim.now)
        ring = sim.members[majority[0]].cluster.ring
        if not failover_at and ring is not None and ring.version > version and ring.down:
            failover_at.append(sim.now)
        return len(halted_at) == len(minority) and bool(failover_at)

    assert sim.run_until_true(watch, 60, step=0.01)
    # The lease: at most lease + period after the cut, before the majority
    # can have promoted anything (keycafe/cluster/lease.py).
    lease = sim.members[minority[0]].cluster.lease
    assert max(halted_at.values()) - cut <= lease.lease + lease.period + 0.05
    assert max(halted_at.values()) < failover_at[0]
    assert not any(sim.members[n].state.routing.halted for n in majority)
    # A minority node refuses keyed requests, writes and reads alike.
    m = sim.members[minority[0]]
    for req in ([b"SET", b"k", b"v"], [b"GET", b"k"]):
        assert m.session.execute(req) == CLUSTER_IS_DOWN
    assert m.session.execute([b"PING"]) == b"+PONG\r\n"
    sim.heal()
    assert sim.run_until_true(
        lambda: not any(sim.members[n].state.routing.halted for n in names), 60
    )


def test_a_cluster_losing_one_node_of_three_keeps_serving() -> None:
    sim = _cluster(7, 3)
    names = sorted(sim.members)
    sim.crash(names[2])
    client = SimClient(sim)
    done: list[bytes | None] = []
    sim.run_for(0.5)
    for i in range(50):
        client.execute([b"SET", b"k%d" % i, b"v"], lambda reply, node: done.append(reply))
    sim.run_for(30)
    assert done.count(b"+OK\r\n") == 50
    assert not any(sim.members[n].state.routing.halted for n in names[:2])


@pytest.mark.parametrize("seed", [1, 2])
def test_a_partition_of_two_from_three_loses_no_acknowledged_write(seed: int) -> None:
    """Some slots have both copies on the two-node side. The majority must
    not rebalance them to itself (it would serve them empty, and the two
    nodes would drop their copies on rejoining): they answer CLUSTERDOWN
    there until the partition heals, and nothing acknowledged is lost."""
    sim = _cluster(seed, 5)
    names = sorted(sim.members)
    client = SimClient(sim)
    run_writer(sim, client, until=sim.now + 45)
    sim.run_for(3)
    sim.partition(names[:2], names[2:])
    sim.run_for(30)
    majority_ring = sim.members[names[2]].cluster.ring
    assert majority_ring is not None
    assert set(majority_ring.down) == set(names[:2])  # held in the ring, as down
    sim.heal()
    healed = sim.now
    sim.run_for(10)
    verdict = check(sim, client, last_change=healed, excuse_crashes=False)
    assert verdict.writes_acked > 500
    assert verdict.lost == []
    assert verdict.settled_after is not None


def test_a_stranded_owner_that_returns_serves_again_while_the_other_stays_dead() -> None:
    """Both copies of some slots sit on the cut-off pair, and one of the pair
    dies before the partition heals. The survivor comes back: the proposal
    that brings it back must not wait for streams to the dead one, and the
    ring then settles without it, losing nothing acknowledged."""
    sim = _cluster(1, 5)
    names = sorted(sim.members)
    a, b = names[:2]
    client = SimClient(sim)
    run_writer(sim, client, until=sim.now + 60)
    sim.run_for(3)
    sim.partition([a, b], names[2:])
    sim.run_for(30)
    sim.crash(b)
    sim.heal()
    healed = sim.now
    assert sim.run_until_true(sim.settled, 90)
    ring = sim.members[names[2]].cluster.ring
    assert ring is not None
    assert b not in ring.members
    assert a in ring.members
    assert not ring.down
    assert sum(sim.members[a].state.routing.table.mine) > 0
    verdict = check(sim, client, last_change=healed, excuse_crashes=False)
    assert verdict.lost == []


def test_keys_deleted_during_a_long_partition_do_not_come_back_with_the_minority() -> None:
    """The majority deletes keys whose other copy is on the cut-off pair, and
    collects their tombstones (5 minutes); the pair's stale copies must not
    bring them back when it returns."""
    sim = _cluster(1, 5)
    names = sorted(sim.members)
    a, b = names[:2]
    owners = sim.members[names[2]].cluster.handoff.table.owners
    keys = [
        k
        for k in (b"k%d" % i for i in range(20_000))
        if owners[key_slot(k)][0] in names[2:] and a in owners[key_slot(k)]
    ][:30]
    assert len(keys) == 30
    client = SimClient(sim)
    replies: list[bytes | None] = []
    for k in keys:
        client.execute([b"SET", k, b"old"], lambda r, n: replies.append(r))
    sim.run_for(3)
    assert replies.count(b"+OK\r\n") == len(keys)
    sim.partition([a, b], names[2:])
    sim.run_for(30)
    replies.clear()
    for k in keys:
        client.execute([b"DEL", k], lambda r, n: replies.append(r))
    sim.run_for(5)
    assert replies.count(b":1\r\n") == len(keys)
    sim.run_for(330)  # past the tombstones' grace
    for n in names[2:]:
        sim.members[n].state.store.active_expire(sim.wall_ms(), 10**7)
    sim.heal()
    assert sim.run_until_true(sim.settled, 120)
    sim.run_for(30)
    got: list[bytes | None] = []
    for k in keys:
        client.execute([b"GET", k], lambda r, n: got.append(r))
    sim.run_for(5)
    assert got == [b"$-1\r\n"] * len(keys)


def test_a_two_member_ring_does_not_halt_on_a_brief_pause() -> None:
    """A pause shorter than the lease (a suspicion, at most) stops nobody."""
    sim = _cluster(2, 2)
    names = sorted(sim.members)
    healthy = sim.members[names[0]]
    lease = healthy.cluster.lease
    sim.net.pause(names[1], lease.lease * 0.75)
    halted = []
    end = sim.now + 10
    while sim.now < end:
        sim.run_for(0.05)
        halted.append(healthy.state.routing.halted)
    assert not any(halted)


def _ring_at(sim: ClusterSimulator, name: str) -> Ring:
    return sim.members[name].cluster.ring or RING0


def _keys_held_by(sim: ClusterSimulator, owners: set[str], n: int = 20) -> list[bytes]:
    """``n`` keys of slots whose owners, in the ring of every member, are ``owners``."""
    table = sim.owners(tuple(sorted(sim.members)))
    keys = (b"ab:%d" % i for i in range(20_000))
    return [k for k in keys if set(table[key_slot(k)]) == owners][:n]


def _cut_alone(sim: ClusterSimulator, name: str) -> None:
    sim.partition([name], [n for n in sim.members if n != name])


def _heal_only(sim: ClusterSimulator, name: str, keep: str) -> None:
    """Heal every cut involving ``name`` except the one to/from ``keep``."""
    sim.net.blocked = {
        (x, y)
        for (x, y) in sim.net.blocked
        if not ((x == name and y != keep) or (y == name and x != keep))
    }


def test_an_owner_declared_down_first_does_not_release_its_slots_with_a_stale_copy() -> None:
    """B is cut off and declared down; A serves the {A, B} slots alone and
    acknowledges new values; then A is cut off too. B comes back first: its
    copy is stale, so the slots stay held until A, declared down last, is
    back; nothing A acknowledged alone is lost or undone."""
    sim = _cluster(1, 5)
    names = sorted(sim.members)
    a, b = names[:2]
    keys = _keys_held_by(sim, {a, b})
    client = SimClient(sim)
    for k in keys:
        client.set(k, b"old")
    sim.run_for(2)
    _cut_alone(sim, b)
    assert sim.run_until_true(lambda: b in _ring_at(sim, a).down, 60, 0.01)
    # Hold up the rebalance that would remove B (it needs every live member).
    sim.net.pause(names[4], 3.0)
    new = [client.set(k, b"new") for k in keys]
    sim.run_for(1)
    assert any(w.acked for w in new)  # by A alone: B is down
    sim.partition([a], [n for n in names if n not in (a, b)])
    assert sim.run_until_true(lambda: {a, b} <= set(_ring_at(sim, names[2]).down), 60)
    _heal_only(sim, b, a)  # B is back; A is still cut off
    sim.run_for(40)
    assert b in _ring_at(sim, names[2]).members  # still held
    sim.heal()
    healed = sim.now
    verdict = check(sim, client, last_change=healed, excuse_crashes=False)
    assert verdict.lost == []
    assert verdict.settled_after is not None


def test_a_new_member_that_dies_right_after_joining_does_not_freeze_the_ring() -> None:
    """Its primaries were still confirming its new copies when it died: that
    must not hold their readiness for the change that removes it."""
    sim = _cluster(1, 5)
    names = sorted(sim.members)
    client = SimClient(sim)
    run_writer(sim, client, until=sim.now + 30)
    sim.run_for(3)
    new = sim.add_node(5, seed=sim.members[names[0]]).sim.name

    def joined() -> bool:
        ring = sim.members[names[0]].cluster.ring
        return ring is not None and new in ring.members and not ring.pending

    assert sim.run_until_true(joined, 60, 0.001)
    sim.crash(new)
    crashed = sim.now
    verdict = check(sim, client, last_change=crashed, excuse_crashes=False)
    ring = sim.members[names[0]].cluster.ring
    assert ring is not None
    assert new not in ring.members
    assert verdict.settled_after is not None
    assert verdict.lost == []


def test_an_owner_restarted_empty_does_not_release_its_slots() -> None:
    """A and B, both owners of some slots, are cut off and declared down
    together; A is then killed and started again with the same name (an
    empty process, a new boot id) while B stays cut off. A holds none of
    those slots' data: they stay held until B is back, and nothing is lost."""
    sim = _cluster(1, 5)
    names = sorted(sim.members)
    a, b = names[:2]
    keys = _keys_held_by(sim, {a, b})
    client = SimClient(sim)
    writes = [client.set(k, b"v1") for k in keys]
    run_writer(sim, client, until=sim.now + 60)
    sim.run_for(3)
    assert all(w.acked for w in writes)
    _cut_alone(sim, a)
    _cut_alone(sim, b)
    assert sim.run_until_true(lambda: {a, b} <= set(_ring_at(sim, names[2]).down), 60)
    sim.run_for(5)
    sim.crash(a)
    sim.run_for(2)
    _heal_only(sim, a, b)
    sim.restart(a, seed=names[2])
    sim.run_for(30)
    ring = sim.members[names[2]].cluster.ring
    assert ring is not None
    assert b in ring.members  # held: the restarted A has nothing to offer
    sim.heal()
    healed = sim.now
    verdict = check(sim, client, last_change=healed, excuse_crashes=False)
    assert verdict.lost == []
    assert verdict.settled_after is not None


def test_a_client_beside_a_node_reaches_only_its_side() -> None:
    """sims.partition's clients: one beside a cut-off node gets nothing from
    the other side (it times out, then gives up: outcome unknown), while one
    beside a majority node is served; and a slot its table names no live
    owner of is given up at once with CLUSTERDOWN, not waited on."""
    sim = ClusterSimulator(seed=3, ring=RingConfig(vnodes=64, replicas=2))
    first = sim.add_node(0)
    for i in range(1, 5):
        sim.add_node(i, seed=first)
    assert sim.run_until_true(sim.settled, 60)
    names = sorted(sim.members)
    owners = sim.members[names[0]].state.routing.table.owners
    # A key whose every copy is on the majority side.
    key = next(
        b"k%d" % i for i in range(10_000) if not {names[0]} & set(owners[key_slot(b"k%d" % i)])
    )
    alone = SimClient(sim, beside=names[0], timeout=1.0, give_up_after=3.0)
    crowd = SimClient(sim, beside=names[1], timeout=1.0, give_up_after=3.0)
    sim.partition([names[0]], names[1:])
    lonely, served = alone.set(key, b"a"), crowd.set(key, b"b")
    sim.run_for(5)
    assert served.acked is not None
    assert lonely.acked is None
    assert lonely.failed
    assert alone.timeouts >= 2
    # Nothing it sent crossed the cut: the majority's primary never saw "a".
    primary = sim.members[owners[key_slot(key)][0]]
    assert primary.session.execute([b"GET", key]) == b"$1\r\nb\r\n"
    # The table says every copy is down: CLUSTERDOWN after a few asks, fast.
    crowd.table, crowd.table_down = owners, frozenset(names)
    crowd.slots.clear()
    replies: list[bytes | None] = []
    started = sim.now
    # (re-asking refreshes the table from a node it reaches: it reaches none)
    crowd.reaches = lambda name: False  # type: ignore[method-assign]
    crowd.execute([b"GET", key], lambda reply, node: replies.append(reply))
    sim.run_for(2)
    assert replies == [b"-CLUSTERDOWN Hash slot not served\r\n"]
    assert sim.now - started <= 2


def test_an_elected_node_without_its_lease_neither_claims_a_term_nor_publishes() -> None:
    # Its gossip view counts a majority (datagrams get through), but its peer
    # links do not: it hears from no majority. Coordinating on that view is
    # how a node cut off by a partition that spread, or whose own traffic
    # was lost, once claimed a term above the majority's and published a
    # ring marking it down (sims.netlab halves; sims.partition nemesis).
    sim = _cluster(3, 5)
    names = sorted(sim.members)
    lead, heir = names[0], names[1]
    before = _ring_at(sim, names[2]).version
    for other in names[2:]:
        sim.cut_links(heir, other)
    sim.crash(lead)

    def elected() -> bool:
        a = sim.members[heir].cluster.assessment
        return a is not None and a.coordinator == heir and a.majority

    assert sim.run_until_true(elected, 60, step=0.05)
    heir_node = sim.members[heir].cluster
    assert not heir_node.lease.holds(sim.now)
    sim.run_for(10)
    assert heir_node.core.me.meta.get(TERM_KEY, "") == ""  # no claim
    assert all(_ring_at(sim, n).version == before for n in names[1:])  # nothing published
    # Its links back, it holds its lease, claims, and fails the dead one over.
    for other in names[2:]:
        sim.cut_links(heir, other, restore=True)

    def failed_over() -> bool:
        ring = sim.members[names[2]].cluster.ring
        return ring is not None and ring.term == 2 and lead in ring.down

    assert sim.run_until_true(failed_over, 30, step=0.05)
    assert heir_node.core.me.meta.get(TERM_KEY) == "2"


def test_an_error_after_an_attempt_left_unanswered_is_no_definite_failure() -> None:
    """A client's DEL was carried out, then its reply held (the replica out
    of reach) past the client's timeout; the retries end in CLUSTERDOWN.
    The DEL happened all the same: sims.partition's checker must read the
    outcome as unknown (None), not as a failure."""
    sim = _cluster(3, 3)
    names = sorted(sim.members)
    owners = sim.members[names[0]].state.routing.table.owners
    key = next(b"k%d" % i for i in range(10_000) if owners[key_slot(b"k%d" % i)][0] == names[0])
    assert sim.members[names[0]].session.execute([b"SET", key, b"v"]) == b"+OK\r\n"
    sim.run_for(1)
    for other in names[1:]:
        sim.cut_links(names[0], other)  # its replica hears nothing, its lease lapses
    client = SimClient(sim, beside=names[0], timeout=1.0, give_up_after=30.0)
    replies: list[bytes | None] = []
    client.execute([b"DEL", key], lambda reply, node: replies.append(reply))
    assert sim.run_until_true(lambda: bool(replies), 30, step=0.05)
    assert client.timeouts >= 1
    assert replies == [None]
    assert client.failed == 1
    primary = sim.members[names[0]].state.store
    assert primary.lookup(key_slot(key), key, 0) is None  # deleted there


def test_a_heartbeat_from_a_newer_ring_makes_a_node_fetch_it_at_once() -> None:
    """Its lease counts no pong from a member on a newer ring: a node the
    ring's spread missed would stop serving until its next periodic
    push-pull, instead of fetching the ring from that member at once."""
    sim = _cluster(3, 3)
    names = sorted(sim.members)
    x = sim.members[names[0]].cluster
    ring = x.ring
    assert ring is not None
    stamp = x.lease._pings[-1]
    pulls = x.keeper.pulls
    body = [ring.term, ring.epoch + 1, None, stamp]
    x.receive_frame(names[1], Frame(frames.HEARTBEAT, body), sim.now, 0)
    assert x.keeper.pulls == pulls + 1
    # Of the same ring, a heartbeat fetches nothing.
    x.receive_frame(
        names[2], Frame(frames.HEARTBEAT, [ring.term, ring.epoch, None, stamp]), sim.now, 0
    )
    assert x.keeper.pulls == pulls + 1
