"""The partition checker on hand-made histories: each check finds what it
names, and does not flag what real time allows (concurrent operations may be
ordered either way)."""

from __future__ import annotations

from keycafe.cluster.ring import RingConfig
from keycafe.cluster.simulator import ClusterSimulator
from sims.checker import Op, check
from sims.partition import Workload

K = b"k"


def w(value: bytes, invoked: float, completed: float | None, outcome: str = "ok") -> Op:
    return Op("c1", "write", K, value, invoked, completed, outcome)  # type: ignore[arg-type]


def d(invoked: float, completed: float | None, outcome: str = "ok") -> Op:
    return Op("c1", "delete", K, None, invoked, completed, outcome)  # type: ignore[arg-type]


def r(value: bytes | None, invoked: float, completed: float, client: str = "c2") -> Op:
    return Op(client, "read", K, value, invoked, completed, "ok")


def final(value: bytes | None, nodes: int = 2) -> dict[str, dict[bytes, bytes | None]]:
    return {f"n{i}": ({K: value} if value is not None else {}) for i in range(nodes)}


def test_an_acknowledged_write_followed_by_an_older_final_value_is_lost() -> None:
    w1, w2 = w(b"1", 0, 1), w(b"2", 2, 3)
    verdict = check([w1, w2], final(b"1"))
    assert verdict.lost == [w2]
    assert not verdict.ok
    assert check([w1, w2], final(b"2")).ok


def test_concurrent_writes_may_end_either_way() -> None:
    w1, w2 = w(b"1", 0, 3), w(b"2", 1, 2)  # overlapping: either order is allowed
    assert check([w1, w2], final(b"1")).ok
    assert check([w1, w2], final(b"2")).ok


def test_a_write_with_no_reply_may_or_may_not_have_happened() -> None:
    w1, w2 = w(b"1", 0, 1), w(b"2", 2, None, "unknown")
    assert check([w1, w2], final(b"2")).ok
    assert check([w1, w2], final(b"1")).ok


def test_a_key_that_vanishes_after_an_acknowledged_write_is_lost() -> None:
    w1 = w(b"1", 0, 1)
    assert check([w1], final(None)).lost == [w1]


def test_a_deleted_key_that_comes_back_is_resurrected() -> None:
    w1, gone = w(b"1", 0, 1), d(2, 3)
    verdict = check([w1, gone], final(b"1"))
    assert verdict.resurrected == [gone]
    assert check([w1, gone], final(None)).ok


def test_a_failed_writes_value_is_a_phantom() -> None:
    w1, failed = w(b"1", 0, 1), w(b"2", 2, 3, "fail")
    verdict = check([w1, failed], final(b"2"))
    assert verdict.phantoms == [(K, b"2")]
    never = check([w1, r(b"zz", 4, 5)], final(b"1"))
    assert never.phantoms == [(K, b"zz")]


def test_a_read_older_than_a_write_acknowledged_before_it_began_is_stale() -> None:
    w1, w2 = w(b"1", 0, 1), w(b"2", 2, 3)
    stale = r(b"1", 4, 5)
    assert check([w1, w2, stale], final(b"2")).stale_reads == [stale]
    during = r(b"1", 2.5, 5)  # began before w2 was acknowledged: may see either
    assert check([w1, w2, during], final(b"2")).ok
    absent = r(None, 4, 5)  # the key absent after an acknowledged write
    assert check([w1, absent], final(b"1")).stale_reads == [absent]


def test_nodes_that_end_with_different_values_have_diverged() -> None:
    w1 = w(b"1", 0, 1)
    verdict = check([w1], {"n0": {K: b"1"}, "n1": {}})
    assert verdict.diverged == [K]
    assert verdict.lost == [w1]  # n1's absent copy is older than the acknowledged write


def test_the_longest_stretch_without_an_acknowledged_op_per_group() -> None:
    ops = [
        Op("a1", "write", b"x", b"1", 0.0, 1.0, "ok"),
        Op("a2", "write", b"y", b"2", 1.0, 9.0, "ok"),
        Op("b1", "write", b"z", b"3", 0.0, 2.0, "ok"),
        Op("b1", "write", b"z", b"4", 2.0, None, "unknown"),
    ]
    groups = {"a1": "majority", "a2": "majority", "b1": "minority"}
    verdict = check(ops, {"n0": {b"x": b"1", b"y": b"2", b"z": b"3"}}, groups=groups, span=(0, 10))
    assert verdict.unavailable == {"majority": 8.0, "minority": 8.0}
    assert "longest stretch without an acknowledged op, minority: 8.00 s" in verdict.summary()


def test_a_simulated_partition_run_judged_from_its_history() -> None:
    """The checker on a real history: whole nodes in the simulator, two of
    five cut off for 30 s under sims.partition's writers, then healed, and
    every key read back. Nothing is flagged, and forgetting the
    newest value of one key in the final reads is."""
    sim = ClusterSimulator(seed=1, ring=RingConfig(vnodes=64, replicas=2))
    first = sim.add_node(0)
    for i in range(1, 5):
        sim.add_node(i, seed=first)
    assert sim.run_until_true(sim.settled, 60)
    names = sorted(sim.members)
    start = sim.now
    work = Workload(sim, until=start + 40)
    sim.run_for(3)
    sim.partition(names[:2], names[2:])
    sim.run_for(30)
    sim.heal()
    sim.run_until(start + 45)
    assert sim.run_until_true(lambda: work.in_flight == 0, 60, step=0.01)
    assert sim.run_until_true(sim.settled, 60, step=0.05)
    ops = [op for op in work.history() if op.kind != "read"]  # the writes' history alone
    reads, unread = work.final_reads()
    assert unread == []
    verdict = check(ops, {"through the cluster": reads}, span=(start, sim.now))
    assert sum(op.outcome == "ok" for op in ops) > 500
    assert verdict.ok, verdict.summary()
    # The newest acknowledged write of a key, forgotten: the checker says so.
    acked = [op for op in ops if op.kind == "write" and op.outcome == "ok"]
    newest = max(acked, key=lambda op: op.invoked)
    older = [op for op in ops if op.key == newest.key and op.precedes(newest)]
    forgotten = dict(reads)
    forgotten[newest.key] = older[-1].value if older else None
    assert newest in check(ops, {"through the cluster": forgotten}).lost


# Cases a review found the first version missed (or flagged wrongly).


def test_a_read_of_absent_is_not_excused_by_a_delete_that_came_later() -> None:
    w1, read, later = w(b"1", 0, 1), r(None, 2, 3), d(5, 6)
    assert check([w1, read, later], final(None)).stale_reads == [read]


def test_a_read_cannot_see_a_write_invoked_after_it_ended() -> None:
    early = r(b"1", 0, 1)
    assert (K, b"1") in check([early, w(b"1", 2, 3)], final(b"1")).phantoms


def test_a_read_older_than_one_seen_before_it_is_stale() -> None:
    """A newer value read, then an older one: the write in flight had taken
    effect by the first read's end (non-monotonic reads)."""
    w1, w2 = w(b"1", 0, 1), w(b"2", 2, 20)
    saw_new, saw_old = r(b"2", 3, 4), r(b"1", 5, 6)
    assert check([w1, w2, saw_new, saw_old], final(b"2")).stale_reads == [saw_old]


def test_values_read_back_and_forth_between_two_concurrent_writes_are_flagged() -> None:
    wa, wb = w(b"a", 0, 10), w(b"b", 0, 10)
    reads = [r(b"a", 1, 2), r(b"b", 3, 4), r(b"a", 5, 6)]
    verdict = check([wa, wb, *reads], final(b"b"))
    assert verdict.nonlinear
    assert not verdict.ok


def test_a_write_a_read_saw_happened_even_with_no_reply() -> None:
    maybe, seen = w(b"1", 0, None, "unknown"), r(b"1", 1, 2)
    assert check([maybe, seen], final(None)).lost == [maybe]
    assert check([maybe, seen], final(b"1")).ok


def test_a_write_seen_before_a_later_write_began_is_not_ordered_after_it() -> None:
    slow, seen, newer = w(b"f", 0, 10), r(b"f", 3, 4), w(b"3", 5, 6)
    assert check([slow, seen, newer], final(b"f")).lost == [newer]


def test_a_write_with_no_reply_may_land_late_even_with_a_give_up_time() -> None:
    maybe, acked = w(b"x", 0, 1, "unknown"), w(b"y", 2, 3)
    assert check([maybe, acked], final(b"x")).ok


def test_a_value_written_twice_is_reported() -> None:
    verdict = check([w(b"1", 0, 1), w(b"1", 2, 3)], final(b"1"))
    assert verdict.duplicates == [(K, b"1")]
    assert not verdict.ok


def test_a_key_only_in_the_final_reads_is_judged_not_crashed_on() -> None:
    verdict = check([], {"n0": {K: b"z"}, "n1": {}})
    assert verdict.phantoms == [(K, b"z")]
    assert verdict.diverged == [K]


def test_unavailability_is_clamped_to_the_span_and_whole_without_any_ack() -> None:
    ops = [
        Op("a", "write", b"x", b"1", 0.0, 70.0, "ok"),
        Op("b", "write", b"y", b"2", 0.0, None, "unknown"),
    ]
    assert check(ops, {"n0": {b"x": b"1"}}, span=(0, 10)).unavailable == {"a": 10.0, "b": 10.0}
