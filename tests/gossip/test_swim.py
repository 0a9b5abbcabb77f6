"""SWIM + Lifeguard behaviour, in virtual time through the simulator."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import attrs

from keycafe.gossip.config import GossipConfig
from keycafe.gossip.core import EventKind, Gossip
from keycafe.gossip.messages import State, Suspect
from keycafe.gossip.simulator import Link, Simulator, failed_by, node_name
from keycafe.gossip.suspicion import suspicion_timeout


def views_equal(sim: Simulator) -> bool:
    live = sim.live()
    expected = {n.name for n in live}
    for node in live:
        alive = {m.node for m in node.core.member_list() if m.state == State.ALIVE}
        if alive != expected:
            return False
    return True


def test_a_crash_is_detected_by_every_live_member() -> None:
    sim = Simulator.converged(30, seed=11)
    sim.run_for(5)
    sim.crash("n0007")
    t0 = sim.now
    assert sim.run_until_true(lambda: len(failed_by(sim, "n0007")) == 29, limit=60)
    detection = max(failed_by(sim, "n0007").values()) - t0
    lo = suspicion_timeout(4, 30, 1.0)
    assert lo < detection < 6 * lo + 5  # never before the minimum suspicion
    assert all(sim.state_of(n, "n0007") == State.DEAD for n in sim.live())


def test_no_false_deaths_in_a_quiet_cluster() -> None:
    sim = Simulator.converged(20, seed=3)
    sim.run_for(120)
    assert not [e for n in sim.nodes.values() for e in n.events if e.kind == EventKind.FAILED]


def test_a_live_suspect_refutes_with_a_higher_incarnation() -> None:
    sim = Simulator.converged(10, seed=5)
    sim.run_for(2)
    accuser = sim.nodes["n0001"]
    before = accuser.core.members["n0002"].info.incarnation
    accuser.core._on_suspect(Suspect(incarnation=before, node="n0002", source="n0001"), sim.now)
    sim._flush(accuser)
    sim.run_for(30)
    assert sim.nodes["n0002"].core.stats.refutations >= 1
    for node in sim.live():
        m = node.core.members["n0002"].info
        assert m.state == State.ALIVE
        assert m.incarnation > before
    assert not failed_by(sim, "n0002")


def test_a_pause_shorter_than_the_minimum_suspicion_never_kills() -> None:
    sim = Simulator.converged(20, seed=8)
    sim.run_for(3)
    lo = suspicion_timeout(4, 20, 1.0)  # 5.2 s
    sim.pause("n0004", lo - 0.5)
    sim.run_for(60)
    assert not failed_by(sim, "n0004")
    assert views_equal(sim)


def test_a_long_pause_kills_and_the_node_comes_back_by_refuting() -> None:
    sim = Simulator.converged(20, seed=9)
    sim.run_for(3)
    sim.pause("n0004", 40)
    sim.run_for(38)
    assert len(failed_by(sim, "n0004")) == 19
    assert sim.run_until_true(lambda: views_equal(sim), limit=120)


def test_partition_then_heal_converges_to_equal_views() -> None:
    sim = Simulator.converged(20, seed=21)
    names = [node_name(i) for i in range(20)]
    sim.run_for(2)
    sim.partition(names[:8], names[8:])
    sim.run_for(90)  # long enough to declare the other side dead and reap it
    left = sim.nodes[names[0]]
    assert all(sim.state_of(left, x) in (State.DEAD, None) for x in names[8:])
    sim.heal()
    assert sim.run_until_true(lambda: views_equal(sim), limit=300)


def test_one_way_partition_is_survived() -> None:
    sim = Simulator.converged(10, seed=4)
    names = [node_name(i) for i in range(10)]
    sim.run_for(2)
    sim.partition(names[:1], names[1:], one_way=True)  # n0000 cannot send
    sim.run_for(60)
    assert len(failed_by(sim, names[0])) == 9  # nobody hears it
    sim.heal()
    assert sim.run_until_true(lambda: views_equal(sim), limit=300)


def test_mass_join_through_one_seed() -> None:
    sim = Simulator(seed=2, config=GossipConfig.lan())
    seed = sim.add_node(0)
    for i in range(1, 50):
        sim.join(sim.add_node(i), seed)
    assert sim.run_until_true(lambda: views_equal(sim), limit=60)
    assert sim.largest_datagram <= 1400


def test_graceful_leave_is_not_a_failure() -> None:
    sim = Simulator.converged(10, seed=6)
    sim.run_for(2)
    leaver = sim.nodes["n0003"]
    leaver.core.leave(sim.now)
    sim._flush(leaver)
    sim.run_for(2)
    sim.crash("n0003")  # the process exits after announcing
    sim.run_for(30)
    assert not failed_by(sim, "n0003")
    for node in sim.live():
        assert sim.state_of(node, "n0003") in (State.LEFT, None)


def test_dead_members_are_reaped_and_stale_news_cannot_resurrect_them() -> None:
    sim = Simulator.converged(8, seed=12)
    sim.run_for(2)
    stale = sim.nodes["n0005"].core.me
    sim.crash("n0005")
    sim.run_for(90)  # dead, then reaped after gossip_to_the_dead_time
    watcher = sim.nodes["n0000"]
    assert "n0005" not in watcher.core.members
    watcher.core._on_alive(stale, sim.now)  # an old Alive arriving late
    assert "n0005" not in watcher.core.members
    newer = attrs.evolve(stale, incarnation=stale.incarnation + 1)
    watcher.core._on_alive(newer, sim.now)  # a real comeback
    assert watcher.core.members["n0005"].state == State.ALIVE


def test_lossy_network_detects_crashes_without_false_deaths() -> None:
    sim = Simulator.converged(30, seed=14, link=Link(loss=0.05, delay=0.001, jitter=0.004))
    sim.run_for(60)
    sim.crash("n0010")
    assert sim.run_until_true(lambda: len(failed_by(sim, "n0010")) == 29, limit=90)
    false = [
        e
        for n in sim.live()
        for e in n.events
        if e.kind == EventKind.FAILED and e.member.node != "n0010"
    ]
    assert not false


def test_every_datagram_fits_in_1400_bytes_under_churn() -> None:
    sim = Simulator.converged(60, seed=15)
    for i in range(0, 60, 6):
        sim.crash(node_name(i))
    sim.run_for(60)
    assert 0 < sim.largest_datagram <= 1400
    assert all(n.core.stats.largest_datagram <= 1400 for n in sim.nodes.values())


def test_same_seed_same_trace() -> None:
    def run(seed: int) -> tuple[str, int]:
        sim = Simulator.converged(15, seed=seed, link=Link(loss=0.02, jitter=0.003, duplicate=0.01))
        sim.run_for(5)
        sim.crash("n0003")
        sim.starve("n0004", (0.2, 0.8))
        sim.run_for(40)
        return sim.trace_digest, len(sim.trace)

    assert run(7) == run(7)
    assert run(7) != run(8)


def _probes(sim: Simulator) -> list[tuple[float, str, str]]:
    """Record (time, prober, target) of every probe the cluster starts from now on."""
    seen: list[tuple[float, str, str]] = []
    for node in sim.nodes.values():
        core = node.core
        start = core._start_probe

        def probe(now: float, core: Gossip = core, start: Callable[[float], None] = start) -> None:
            before = core.stats.probes
            start(now)
            if core.stats.probes > before and core._probe is not None:
                seen.append((now, core.node, core._probe.target))

        core._start_probe = probe  # type: ignore[method-assign]
    return seen


def test_aligned_probes_cover_every_member_once_a_round() -> None:
    """Each member is probed exactly once per probe interval, and each node
    still walks every other member once in N - 1 rounds (SWIM's bound)."""
    n = 12
    sim = Simulator.converged(n, seed=4)
    seen = _probes(sim)
    sim.run_for(2 * (n - 1) + 1.5)
    per_round: dict[int, list[str]] = {}
    walks: dict[str, list[str]] = {name: [] for name in sim.nodes}
    for at, prober, target in seen:
        per_round.setdefault(math.floor(at), []).append(target)
        if 1 <= at < n:  # n - 1 whole rounds
            walks[prober].append(target)
    for r in range(1, 2 * (n - 1)):
        assert sorted(per_round[r]) == sorted(sim.nodes), f"round {r}: {per_round[r]}"
    for prober, targets in walks.items():
        assert sorted(targets) == sorted(set(sim.nodes) - {prober})


def test_shuffled_probes_leave_some_members_unprobed_for_a_round() -> None:
    """The contrast, memberlist's independent shuffles (aligned_probes=False)."""
    n = 12
    sim = Simulator.converged(
        n, seed=4, config=attrs.evolve(GossipConfig.lan(), aligned_probes=False)
    )
    seen = _probes(sim)
    sim.run_for(2 * (n - 1) + 1.5)
    per_round: dict[int, set[str]] = {}
    for at, _, target in seen:
        per_round.setdefault(math.floor(at), set()).add(target)
    assert any(len(per_round[r]) < n for r in range(1, 2 * (n - 1)))


def test_a_crash_is_first_probed_within_two_intervals() -> None:
    """With probes aligned, no crash waits long for its first failed probe
    (shuffled lists: 1 in 7 crashes waits more than two intervals)."""
    sim = Simulator.converged(40, seed=21)
    sim.run_for(5)
    waits = []
    for _ in range(20):
        victim = sim.rng.choice([x.name for x in sim.live()])
        sim.run_for(sim.rng.uniform(0, 1))
        sim.crash(victim)
        t0 = sim.now
        assert sim.run_until_true(
            lambda v=victim: any(sim.state_of(x, v) == State.SUSPECT for x in sim.live()),
            limit=30,
            step=0.01,
        )
        waits.append(sim.now - t0)
        sim.run_for(30)
    interval = GossipConfig.lan().probe_interval
    # Two intervals to be probed, one for the probe to fail.
    assert max(waits) <= 3 * interval + 0.05, sorted(waits)


def test_a_death_floods_the_cluster_at_once() -> None:
    """Whoever learns of a death passes it on at once, not at its next gossip
    round: nearly every member knows within a few network hops."""
    sim = Simulator.converged(50, seed=12)
    sim.run_for(5)
    sim.crash("n0030")
    assert sim.run_until_true(lambda: bool(failed_by(sim, "n0030")), limit=60, step=0.001)
    first = min(failed_by(sim, "n0030").values())
    sim.run_until(first + 0.02)  # 20 ms: a few hops at 0.5 ms, no gossip tick
    knew = sum(1 for x in sim.live() if sim.state_of(x, "n0030") == State.DEAD)
    assert knew >= 0.8 * len(sim.live()), knew


def test_a_starved_node_still_runs_its_timers() -> None:
    """A starved node handles each timer late, but handles it: the lag is not
    drawn again for every packet that arrives meanwhile."""
    sim = Simulator.converged(30, seed=6)
    node = sim.nodes["n0001"]
    sim.starve("n0001", (0.5, 2.5))
    fired: list[float] = []
    handle = node.core.handle_timer

    def timer(now: float) -> None:
        fired.append(now)
        handle(now)

    node.core.handle_timer = timer  # type: ignore[method-assign]
    sim.run_for(60)
    gaps = [b - a for a, b in itertools.pairwise(fired)]
    assert len(fired) > 20
    assert max(gaps) <= 2.5 + GossipConfig.lan().gossip_interval + 0.01, max(gaps)
