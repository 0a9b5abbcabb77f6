"""The coordinator role: pure rules, then agreement in the simulator."""

from __future__ import annotations

import attrs

from keycafe.cluster.coordinator import (
    BOOT_KEY,
    EMPTY_BOOT,
    HELD_KEY,
    LEAVING_KEY,
    READY_KEY,
    RESTARTED_KEY,
    RING_KEY,
    TERM_KEY,
    AnnounceRing,
    Assessment,
    ClaimTerm,
    PublishRing,
    PullRing,
    PushRing,
    assess,
    next_ring,
    step,
    stranded,
)
from keycafe.cluster.effects import announce, coordinate
from keycafe.cluster.ring_codec import encode_ring
from keycafe.cluster.ring_record import MAX_EPOCH, MAX_TERM, Ring
from keycafe.cluster.ringcast import RING_DATAGRAM_BUDGET, RingKeeper
from keycafe.gossip.messages import MemberInfo, State
from keycafe.gossip.simulator import SimNode, Simulator, node_name
from keycafe.gossip.suspicion import suspicion_timeout
from keycafe.store.keyslot import SLOT_COUNT


def member(node: str, state: State = State.ALIVE, term: int = 0, **extra: str) -> MemberInfo:
    meta = {TERM_KEY: str(term)} if term else {}
    meta.update(extra)
    return MemberInfo(
        node=node, addr=("h", 1), client_addr=("h", 2), incarnation=1, state=state, meta=meta
    )


def test_the_lowest_live_id_is_elected_and_claims_above_every_term() -> None:
    view = [
        member("c"),
        member("a", State.DEAD),
        member("b", State.SUSPECT),
        member("d", term=4),
        member("e"),
    ]
    a = assess("b", view)
    assert a.coordinator == "b"  # a is dead; a suspect is still live
    assert a.claim == 5
    assert assess("c", view).claim is None  # only the elected member claims


def test_no_majority_no_claim() -> None:
    view = [member("a"), member("b", State.DEAD), member("c", State.DEAD)]
    a = assess("a", view)
    assert a.coordinator == "a"
    assert not a.majority
    assert a.claim is None
    assert not a.established


def test_members_that_left_do_not_vote() -> None:
    view = [member("a"), member("b", State.LEFT), member("c", State.LEFT)]
    assert assess("a", view).majority


def test_an_established_coordinator_does_not_claim_again_but_outbids_a_tie() -> None:
    view = [member("a", term=3), member("b", term=2)]
    a = assess("a", view)
    assert a == Assessment(coordinator="a", term=3, highest_term=3, majority=True, claim=None)
    assert a.established
    tied = [member("a", term=3), member("b", term=3)]
    assert assess("a", tied).claim == 4


def ring(*members: str, epoch: int = 5, pending: tuple[str, ...] = ()) -> Ring:
    return Ring(epoch=epoch, term=1, coordinator=members[0], members=members, pending=pending)


def test_the_first_ring_holds_every_live_member() -> None:
    view = [member("b"), member("a"), member("c", State.DEAD), member("d", State.SUSPECT)]
    first = next_ring(None, view, "a", 3)
    assert first == Ring(epoch=1, term=3, coordinator="a", members=("a", "b", "d"))


def test_a_change_is_proposed_first_then_made_once_everyone_involved_is_ready() -> None:
    current = ring("a", "b", "c", "d")
    view = [
        member("a"),
        member("b", State.DEAD),
        member("c", **{LEAVING_KEY: "1"}),
        member("d", State.SUSPECT),  # suspected is not confirmed dead: stays
        member("e"),  # a newcomer
        member("f", State.SUSPECT),  # a suspected newcomer waits
    ]
    # Failover first: the dead member is declared down, nothing else changes.
    failover = next_ring(current, view, "a", 1)
    assert failover is not None
    assert (failover.epoch, failover.members, failover.pending) == (6, current.members, ())
    assert failover.down == ("b",)
    proposal = next_ring(failover, view, "a", 1)
    assert proposal is not None
    assert proposal.epoch == 7
    assert proposal.members == current.members  # nothing moves yet
    assert proposal.pending == ("a", "d", "e")
    assert proposal.down == ("b",)
    # Until every live member of either set has streamed its part, nothing changes.
    ready = {READY_KEY: "1.7"}
    almost = [
        member("a", **ready),
        member("b", State.DEAD),
        member("c", **{LEAVING_KEY: "1"}, **ready),
    ]
    almost += [member("d", **ready), member("e")]
    assert next_ring(proposal, almost, "a", 1) is None
    done = [*almost[:4], member("e", **ready)]  # the dead cannot answer and need not
    change = next_ring(proposal, done, "a", 1)
    assert change == Ring(epoch=8, term=1, coordinator="a", members=("a", "d", "e"))
    # Readiness for an older proposal does not count.
    stale = [member(n, **{READY_KEY: "1.5"}) for n in ("a", "d", "e")]
    assert next_ring(ring("a", "d", pending=("a", "d", "e"), epoch=6), stale, "a", 1) is None
    # Nor does readiness for another term's proposal at the same epoch.
    other_term = [member(n, **{READY_KEY: "2.6"}) for n in ("a", "d", "e")]
    assert next_ring(ring("a", "d", pending=("a", "d", "e"), epoch=6), other_term, "a", 1) is None


def test_a_member_of_a_proposal_that_goes_makes_a_new_proposal() -> None:
    proposal = ring("a", "b", pending=("a", "b", "c", "d"), epoch=6)
    view = [member("a"), member("b"), member("c", State.DEAD), member("d")]
    again = next_ring(proposal, view, "a", 1)
    assert again is not None
    assert (again.epoch, again.members, again.pending) == (7, ("a", "b"), ("a", "b", "d"))
    # The newcomers went away again: the proposal is withdrawn.
    withdrawn = next_ring(proposal, [member("a"), member("b")], "a", 1)
    assert withdrawn is not None
    assert (withdrawn.members, withdrawn.pending) == (("a", "b"), ())


def test_newcomers_wait_for_the_proposal_under_way() -> None:
    proposal = ring("a", "b", pending=("a", "b", "c"), epoch=6)
    ready = {READY_KEY: "1.6"}
    view = [member("a"), member("b"), member("c"), member("d")]
    assert next_ring(proposal, view, "a", 1) is None  # d waits; the proposal goes on
    view = [member("a", **ready), member("b", **ready), member("c", **ready), member("d")]
    change = next_ring(proposal, view, "a", 1)
    assert change is not None
    assert (change.epoch, change.members, change.pending) == (7, ("a", "b", "c"), ())
    following = next_ring(change, view, "a", 1)
    assert following is not None
    assert (following.members, following.pending) == (("a", "b", "c"), ("a", "b", "c", "d"))


def test_a_ring_member_back_from_a_false_death_makes_a_new_proposal() -> None:
    """c was declared dead, so the proposal leaves it out; it refuted and is
    alive again: carrying on would stream its share out, then back."""
    proposal = ring("a", "b", "c", pending=("a", "b"), epoch=6)
    view = [member("a"), member("b"), member("c")]
    again = next_ring(proposal, view, "a", 1)
    assert again is not None
    assert (again.members, again.pending) == (("a", "b", "c"), ())  # withdrawn
    view.append(member("d"))  # ... and with a newcomer too: re-proposed with both
    both = next_ring(proposal, view, "a", 1)
    assert both is not None
    assert both.pending == ("a", "b", "c", "d")


def test_a_dead_member_is_declared_down_before_anything_else_changes() -> None:
    proposal = ring("a", "b", "c", pending=("a", "b", "c", "d"), epoch=6)
    view = [member("a"), member("b", State.DEAD), member("c"), member("d")]
    failover = next_ring(proposal, view, "a", 1)
    assert failover is not None
    assert (failover.members, failover.pending, failover.down) == (
        ("a", "b", "c"),
        ("a", "b", "c", "d"),
        ("b",),
    )
    # A member forgotten altogether (reaped) is down too.
    assert next_ring(ring("a", "b", "c"), [member("a"), member("c")], "a", 1) == Ring(
        epoch=6, term=1, coordinator="a", members=("a", "b", "c"), down=("b",), down_epochs=(6,)
    )


def test_a_member_back_from_down_is_streamed_fresh_copies_before_it_counts() -> None:
    """b was declared down and refuted: it holds stale copies, so it comes back
    through a proposal (streamed to like a newcomer), and only the change
    clears it from ``down``."""
    failed = Ring(epoch=6, term=1, coordinator="a", members=("a", "b", "c"), down=("b",))
    assert next_ring(failed, [member("a"), member("b", State.SUSPECT), member("c")], "a", 1) == (
        Ring(
            epoch=7,
            term=1,
            coordinator="a",
            members=("a", "b", "c"),
            pending=("a", "c"),
            down=("b",),
            down_epochs=(0,),  # as the ring said: it had no epochs
        )
    )
    back = [member(n, **{READY_KEY: "1.7"}) for n in ("a", "b", "c")]
    proposal = next_ring(failed, back, "a", 1)
    assert proposal is not None
    assert (proposal.pending, proposal.down) == (("a", "b", "c"), ("b",))
    change = next_ring(proposal, [member(n, **{READY_KEY: "1.7"}) for n in "abc"], "a", 1)
    assert change == Ring(epoch=8, term=1, coordinator="a", members=("a", "b", "c"))


def test_a_member_restarted_under_its_id_is_declared_down_with_no_copies() -> None:
    """b came back as a new process before anyone saw it die: alive, but
    empty. It says so; it is declared down as holding nothing (its return
    releases no slot), then brought back through a proposal."""
    live = ring("a", "b", "c")
    fresh = {BOOT_KEY: "b2", RESTARTED_KEY: "b2"}
    view = [member("a"), member("b", **fresh), member("c")]
    failover = next_ring(live, view, "a", 1)
    assert failover is not None
    assert failover.down == ("b",)
    assert failover.down_boot("b") == EMPTY_BOOT
    proposal = next_ring(failover, view, "a", 1)
    assert proposal is not None
    assert (proposal.pending, proposal.down) == (("a", "b", "c"), ("b",))
    # Only its own boot counts: a claim left over from a former process is not.
    stale = [member("a"), member("b", **{BOOT_KEY: "b3", RESTARTED_KEY: "b2"}), member("c")]
    assert next_ring(live, stale, "a", 1) is None
    # Nor does one withdrawn once it is brought back.
    back = [member("a"), member("b", **{BOOT_KEY: "b2", RESTARTED_KEY: ""}), member("c")]
    assert next_ring(live, back, "a", 1) is None


def test_a_suspected_newcomer_stays_in_the_proposal_it_is_in() -> None:
    proposal = ring("a", "b", pending=("a", "b", "c"), epoch=6)
    view = [member("a"), member("b"), member("c", State.SUSPECT)]
    assert next_ring(proposal, view, "a", 1) is None
    # ... but one not yet in a proposal waits until it is alive again.
    assert next_ring(ring("a", "b"), view, "a", 1) is None


def test_nothing_to_change_and_never_an_empty_ring() -> None:
    assert next_ring(ring("a", "b"), [member("a"), member("b")], "a", 1) is None
    assert next_ring(ring("a"), [member("a", **{LEAVING_KEY: "1"})], "a", 1) is None


def test_step_returns_decisions_and_changes_nothing() -> None:
    view = [member("a"), member("b"), member("c")]
    a, decisions = step("a", view, None)
    # Elected with no term yet: claim one, and (as the view will be once the
    # claim is out) publish the first ring and say so.
    first = Ring(epoch=1, term=1, coordinator="a", members=("a", "b", "c"))
    assert decisions == [
        ClaimTerm(term=1),
        PublishRing(ring=first),
        AnnounceRing(version=(1, 1)),
    ]
    assert a.established
    assert a.term == 1
    assert view == [member("a"), member("b"), member("c")]  # the view is left alone
    # A follower whose ring is behind the coordinator's pulls it from there.
    ahead = [member("a", term=1, **{RING_KEY: "1.2"}), member("b"), member("c")]
    _, decisions = step("b", ahead, first)
    assert decisions == [PullRing(version=(1, 2), addr=("h", 1))]
    assert step("b", ahead, attrs.evolve(first, epoch=2))[1] == []


def test_without_its_lease_an_elected_member_neither_claims_nor_publishes() -> None:
    # Its view counts a majority, but it hears from no majority on its links
    # (keycafe/cluster/lease.py): such a view may be wrong (coordinator.py).
    current = ring("a", "b", "c", "d", "e")
    view = [member("a", State.DEAD, term=1), member("b"), member("c"), member("d"), member("e")]
    a, decisions = step("b", view, current, leased=False)
    assert a.coordinator == "b"
    assert a.majority
    assert decisions == []
    assert [type(d) for d in step("b", view, current)[1]][:2] == [ClaimTerm, PublishRing]
    # Established already, it publishes nothing either (here: a's failover).
    view[1] = member("b", term=2)
    assert step("b", view, current, leased=False)[1] == []
    assert [type(d) for d in step("b", view, current)[1]] == [PublishRing, AnnounceRing]


def test_claims_and_rings_stop_at_the_bound() -> None:
    # A term claim above MAX_TERM is no claim; at MAX_TERM nobody outbids it.
    assert assess("a", [member("a"), member("b", term=MAX_TERM + 1)]).claim == 1
    for forged in (str(2**64), "1" * 40, "\u00b2"):
        assert assess("a", [member("a"), member("b", **{TERM_KEY: forged})]).claim == 1
    assert assess("a", [member("a"), member("b", term=MAX_TERM)]).claim is None
    last = Ring(epoch=MAX_EPOCH, term=1, coordinator="a", members=("a", "b"))
    assert next_ring(last, [member("a")], "a", 1) is None  # never an epoch above the bound


def coordinated(n: int, seed: int) -> Simulator:
    sim = Simulator.converged(n, seed=seed, delegate=RingKeeper.attach)
    sim.after_flush.append(lambda node, now: (ready_at_once(node, now), drive(node, now)))
    return sim


def keeper(x: SimNode) -> RingKeeper:
    assert isinstance(x.core.delegate, RingKeeper)
    return x.core.delegate


def drive(x: SimNode, now: float) -> Assessment:
    return coordinate(x.core, keeper(x), now)


def ready_at_once(x: SimNode, now: float) -> None:
    """Members hold no data here: each is ready for a proposal at once."""
    ring = keeper(x).ring
    if ring is not None and ring.pending:
        announce(x.core, READY_KEY, f"{ring.term}.{ring.epoch}", now)


def view(x: SimNode) -> Assessment:
    return assess(x.name, x.core.known_members())


def views(sim: Simulator) -> dict[str, Assessment]:
    return {x.name: view(x) for x in sim.live()}


def agreed(sim: Simulator, expected: str) -> bool:
    return all(a.coordinator == expected and a.established for a in views(sim).values())


def test_a_cluster_agrees_on_one_established_coordinator() -> None:
    sim = coordinated(10, seed=1)
    assert sim.run_until_true(lambda: agreed(sim, node_name(0)), limit=30)
    assert {a.term for a in views(sim).values()} == {1}


def test_killing_the_coordinator_elects_the_next_with_a_higher_term() -> None:
    sim = coordinated(10, seed=2)
    assert sim.run_until_true(lambda: agreed(sim, node_name(0)), limit=30)
    sim.crash(node_name(0))
    t0 = sim.now
    bound = 6 * suspicion_timeout(4, 10, 1.0) + 10 * 1.0 + 5  # detection, then a few rounds
    assert sim.run_until_true(lambda: agreed(sim, node_name(1)), limit=bound)
    assert sim.now - t0 <= bound
    assert {a.term for a in views(sim).values()} == {2}


def test_a_minority_side_cannot_claim_the_role() -> None:
    sim = coordinated(9, seed=3)
    names = [node_name(i) for i in range(9)]
    assert sim.run_until_true(lambda: agreed(sim, names[0]), limit=30)
    sim.partition(names[:3], names[3:])
    majority_side: list[SimNode] = [sim.nodes[x] for x in names[3:]]
    minority_side: list[SimNode] = [sim.nodes[x] for x in names[:3]]

    def majority_moved_on() -> bool:
        return all(view(x).coordinator == names[3] and view(x).established for x in majority_side)

    def minority_sees_the_cut() -> bool:
        return all(not view(x).majority for x in minority_side)

    assert sim.run_until_true(majority_moved_on, limit=120)
    assert sim.run_until_true(minority_sees_the_cut, limit=60)
    sim.run_for(120)  # long past reaping: forgetting the dead must not restore a quorum
    for x in minority_side:
        a = view(x)
        assert not a.majority  # it sees 3 of 9 alive: it may not act
        assert not a.established
        assert a.highest_term == 1  # and it never claimed a term
    sim.heal()
    # After the heal the lowest id is elected again, above every term seen.
    assert sim.run_until_true(lambda: agreed(sim, names[0]), limit=300)
    assert {a.term for a in views(sim).values()} == {3}


def rings(sim: Simulator) -> set[tuple[int, int, tuple[str, ...]] | None]:
    held = [keeper(x).ring for x in sim.live()]
    return {None if r is None else (r.term, r.epoch, r.members) for r in held}


def ring_is(sim: Simulator, members: list[str]) -> bool:
    seen = rings(sim)
    return len(seen) == 1 and None not in seen and next(iter(seen))[2] == tuple(members)  # type: ignore[index]


def test_the_coordinator_publishes_the_ring_and_everyone_adopts_it() -> None:
    sim = coordinated(10, seed=4)
    names = [node_name(i) for i in range(10)]
    assert sim.run_until_true(lambda: ring_is(sim, names), limit=30)


def test_a_crash_and_a_join_each_make_a_new_epoch() -> None:
    sim = coordinated(8, seed=5)
    names = [node_name(i) for i in range(8)]
    assert sim.run_until_true(lambda: ring_is(sim, names), limit=30)
    epoch0 = next(iter(rings(sim)))[1]  # type: ignore[index]
    sim.crash(names[5])
    without = [x for x in names if x != names[5]]
    assert sim.run_until_true(lambda: ring_is(sim, without), limit=90)
    epoch1 = next(iter(rings(sim)))[1]  # type: ignore[index]
    assert epoch1 > epoch0
    newcomer = sim.add_node(8)
    sim.join(newcomer, sim.nodes[names[0]])
    assert sim.run_until_true(lambda: ring_is(sim, sorted([*without, newcomer.name])), limit=60)
    assert next(iter(rings(sim)))[1] > epoch1  # type: ignore[index]


def test_a_change_waits_for_every_live_member_to_have_streamed_its_part() -> None:
    sim = Simulator.converged(6, seed=11, delegate=RingKeeper.attach)
    names = [node_name(i) for i in range(6)]
    slow = {names[3]}  # streams "slowly": ready only when the test says so

    def hook(node: SimNode, now: float) -> None:
        if node.name not in slow:
            ready_at_once(node, now)
        drive(node, now)

    sim.after_flush.append(hook)
    assert sim.run_until_true(lambda: ring_is(sim, names), limit=30)
    sim.crash(names[5])

    def proposed() -> bool:
        seen = {keeper(x).ring for x in sim.live()}
        return len(seen) == 1 and all(r is not None and r.pending for r in seen)

    assert sim.run_until_true(proposed, limit=120)
    sim.run_for(30)  # long enough for gossip, but names[3] has not streamed its part
    held = [keeper(x).ring for x in sim.live()]
    assert all(r is not None and r.members == tuple(names) for r in held)
    slow.clear()
    assert sim.run_until_true(lambda: ring_is(sim, names[:5]), limit=30)


def test_a_ring_from_an_older_term_is_ignored() -> None:
    sim = coordinated(5, seed=6)
    assert sim.run_until_true(lambda: ring_is(sim, [node_name(i) for i in range(5)]), limit=30)
    node = sim.nodes[node_name(3)]
    current = keeper(node).ring
    assert current is not None
    stale = Ring(
        epoch=current.epoch + 100, term=current.term - 1, coordinator="old", members=("x",)
    )
    keeper(node).notify_msg(encode_ring(stale), sim.now)
    assert keeper(node).ring == current


def test_a_minority_cannot_ratchet_the_ring_down_to_itself() -> None:
    sim = coordinated(9, seed=7)
    names = [node_name(i) for i in range(9)]
    assert sim.run_until_true(lambda: ring_is(sim, names), limit=30)
    # Every assessment a cut-off member makes while it sees fewer than five of
    # the nine alive (the rest suspected or dead) must deny it a majority.
    wrongly_acting: list[tuple[float, str]] = []

    def watch(x: SimNode, now: float) -> None:
        if x.name in names[:3]:
            a, _ = step(x.name, x.core.known_members(), keeper(x).ring)  # what it just did
            alive = [m for m in x.core.member_list() if m.state == State.ALIVE]
            if len(alive) < 5 and a.majority:
                wrongly_acting.append((now, x.name))

    sim.after_flush.append(watch)
    sim.partition(names[:3], names[3:])
    sim.run_for(150)
    assert not wrongly_acting
    minority = {keeper(sim.nodes[x]).ring for x in names[:3]}
    majority = {keeper(sim.nodes[x]).ring for x in names[3:]}
    assert len(majority) == 1
    (theirs,) = majority
    assert theirs is not None
    assert theirs.members == tuple(names[3:])  # the majority dropped the cut-off three
    for ours in minority:
        assert ours is not None
        # Right after the cut the minority may still see a majority and drop a
        # member it already declared dead, but it can never shrink the ring to
        # itself: each change needs more than half of the ring alive.
        assert set(ours.members) - set(names[:3])
        assert ours.term < theirs.term  # and the majority's decisions outrank it
    sim.heal()
    assert sim.run_until_true(lambda: ring_is(sim, names), limit=300)


def test_a_ring_too_big_for_a_datagram_still_spreads_quickly() -> None:
    sim = coordinated(160, seed=8)  # 160 members of 5-character ids: over the budget
    names = [node_name(i) for i in range(160)]
    big = Ring(epoch=1, term=1, coordinator=names[0], members=tuple(names))
    assert len(encode_ring(big)) > RING_DATAGRAM_BUDGET
    # Forwarding once to 3 members reaches ~94% of members within seconds (the
    # fixed point of x = 1 - e^(-3x)); periodic push-pull brings the rest.
    published: list[float] = []

    def adopted() -> float:
        if not published and any(keeper(x).ring is not None for x in sim.live()):
            published.append(sim.now)
        held = [keeper(x).ring for x in sim.live()]
        full = [r for r in held if r is not None and len(r.members) == 160]
        return len(full) / len(held)

    assert sim.run_until_true(lambda: adopted() >= 0.85, limit=20, step=0.05)
    assert sim.now - published[0] < 5.0
    # The few it missed see the coordinator's ring version in its metadata and
    # pull the ring from it after a grace period, instead of waiting for their
    # periodic push-pull (30 s and up: 21-30 s here without the pull).
    assert sim.run_until_true(lambda: ring_is(sim, names), limit=10, step=0.05)
    assert sim.now - published[0] < 5.0
    pulls = sum(keeper(x).pulls for x in sim.live())
    assert 0 < pulls < 160 // 4  # only laggards pull, not everyone at once


def test_the_coordinator_pushes_its_ring_to_members_that_hold_an_older_one() -> None:
    current = Ring(epoch=7, term=2, coordinator="a", members=("a", "b", "c"))
    view = [
        member("a", term=2),
        member("b", **{HELD_KEY: "2.6"}),  # missed the last ring
        member("c", **{HELD_KEY: "2.7"}),
    ]
    _, decisions = step("a", view, current)
    assert [d for d in decisions if isinstance(d, PushRing)] == [
        PushRing(node="b", addr=("h", 1), version=(2, 6))
    ]
    _, others = step("b", view, current)  # only the coordinator pushes
    assert not [d for d in others if isinstance(d, PushRing)]


def test_a_ring_version_beyond_the_bounds_is_not_chased() -> None:
    current = Ring(epoch=7, term=2, coordinator="a", members=("a", "b"))
    for text in (f"{MAX_TERM + 1}.1", f"2.{MAX_EPOCH + 1}"):
        view = [member("a", term=2, **{RING_KEY: text}), member("b")]
        _, decisions = step("b", view, current)
        assert not [d for d in decisions if isinstance(d, PullRing)]
    view = [member("a", term=2, **{RING_KEY: "2.8"}), member("b")]
    _, decisions = step("b", view, current)
    assert [d for d in decisions if isinstance(d, PullRing)]


def _pairs(members: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """A toy slot table: slot i owned by consecutive members (two copies)."""
    names = sorted(members)
    n = len(names)
    return tuple((names[i % n], names[(i + 1) % n]) for i in range(SLOT_COUNT))


def test_slots_with_no_live_copy_hold_the_ring_until_an_owner_returns() -> None:
    """a and b are down and slot 0's only copies are theirs: removing them
    would hand slot 0, empty, to new owners. The ring holds instead (slot 0
    answers CLUSTERDOWN), a newcomer waits and a rebalance under way is
    withdrawn; once b is back, the usual change proceeds without a (b keeps
    its copy, and the hand-off streams it on)."""
    failed = Ring(
        epoch=6, term=1, coordinator="c", members=("a", "b", "c", "d", "e"), down=("a", "b")
    )
    assert stranded(failed, _pairs) == {"a", "b"}
    view = [member("a", State.DEAD), member("b", State.DEAD), *map(member, "cdef")]
    assert next_ring(failed, view, "c", 1, _pairs) is None
    under_way = attrs.evolve(failed, pending=("c", "d", "e", "f"))
    withdrawn = next_ring(under_way, view, "c", 1, _pairs)
    assert withdrawn is not None
    assert (withdrawn.members, withdrawn.pending, withdrawn.down) == (
        failed.members,
        (),
        ("a", "b"),
    )
    without_table = next_ring(failed, view, "c", 1)  # blind to slots: removes them
    assert without_table is not None
    assert without_table.pending == ("c", "d", "e", "f")
    back = [member("a", State.DEAD), member("b"), *map(member, "cde")]
    assert stranded(failed, _pairs, {"a"}) == frozenset()
    proposal = next_ring(failed, back, "c", 1, _pairs)
    assert proposal is not None
    assert (proposal.members, proposal.pending, proposal.down) == (
        failed.members,
        ("b", "c", "d", "e"),
        ("a", "b"),
    )
