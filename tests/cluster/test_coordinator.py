"""The coordinator role: pure rules, then agreement in the simulator."""

from __future__ import annotations

from keycafe.cluster.coordinator import TERM_KEY, Assessment, assess, step
from keycafe.gossip.messages import MemberInfo, State
from keycafe.gossip.simulator import SimNode, Simulator, node_name
from keycafe.gossip.suspicion import suspicion_timeout


def member(node: str, state: State = State.ALIVE, term: int = 0) -> MemberInfo:
    meta = {TERM_KEY: str(term)} if term else {}
    return MemberInfo(
        node=node, addr=("h", 1), client_addr=("h", 2), incarnation=1, state=state, meta=meta
    )


def test_the_lowest_live_id_is_elected_and_claims_above_every_term() -> None:
    view = [member("c"), member("a", State.DEAD), member("b", State.SUSPECT), member("d", term=4)]
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


def coordinated(n: int, seed: int) -> Simulator:
    sim = Simulator.converged(n, seed=seed)
    sim.after_flush.append(lambda node, now: step(node.core, now))
    return sim


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
