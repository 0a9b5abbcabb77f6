"""The simulated network and hosts: latency with a tail, bandwidth, TCP that
suffers loss, CPU time per event, and clocks that drift. Each is checked
against what it models, in virtual time."""

from __future__ import annotations

import statistics

import pytest

from keycafe.cluster.ring import RingConfig
from keycafe.cluster.simulator import ClusterSimulator, SimClient, run_writer
from keycafe.gossip.simulator import MSS, RTO_MIN, SYN_RTO, Link, Simulator


def test_latency_has_a_lognormal_tail_around_its_median() -> None:
    sim = Simulator(seed=1)
    fixed = Link(delay=0.001)
    assert {sim.latency(fixed) for _ in range(100)} == {0.001}
    tailed = Link(delay=0.001, spread=0.6)
    xs = sorted(sim.latency(tailed) for _ in range(20_000))
    assert statistics.median(xs) == pytest.approx(0.001, rel=0.05)
    # exp(2.326 * 0.6) = 4.0: one packet in a hundred takes 4x the median.
    assert xs[int(0.99 * len(xs))] == pytest.approx(0.004, rel=0.15)


def test_a_path_sends_one_thing_at_a_time_at_its_bandwidth() -> None:
    sim = Simulator(seed=1)
    link = Link(bandwidth=1_000_000)
    assert sim.sending("a", "b", link, 250_000) == pytest.approx(0.25)
    assert sim.sending("a", "b", link, 250_000) == pytest.approx(0.5)  # queued behind
    assert sim.sending("b", "a", link, 1000) == pytest.approx(0.001)  # another path
    assert sim.sending("a", "b", Link(), 10**9) == 0.0  # no limit


def test_tcp_resends_lost_segments_and_resets_after_six_in_a_row() -> None:
    sim = Simulator(seed=1)
    assert sim.tcp_delay(100_000, 0.0, connect=True) == 0.0
    assert sim.tcp_delay(100, 1.0) is None  # every try lost: reset
    # One segment at 20% loss: resent one time in five, after RTO_MIN.
    extras = [sim.tcp_delay(100, 0.2) for _ in range(5000)]
    assert all(x is not None for x in extras)
    late = [x for x in extras if x]
    assert len(late) / len(extras) == pytest.approx(0.2, abs=0.03)
    assert min(late) == pytest.approx(RTO_MIN)
    # Bigger transfers lose more segments: 100 segments at 5% loss.
    big = statistics.mean(sim.tcp_delay(100 * MSS, 0.05) or 0.0 for _ in range(300))
    small = statistics.mean(sim.tcp_delay(MSS, 0.05) or 0.0 for _ in range(300))
    assert big > 20 * small
    # A new connection's lost handshake costs a second.
    handshakes = [sim.tcp_delay(1, 0.3, connect=True) for _ in range(2000)]
    assert any(x is not None and x >= SYN_RTO for x in handshakes)


def test_lossy_tcp_makes_streams_fail_on_a_path_that_drops_everything() -> None:
    for lossy, joined in ((False, True), (True, False)):
        sim = Simulator(seed=2, lossy_tcp=lossy)
        a, b = sim.add_node(0), sim.add_node(1)
        sim.set_link(a.name, b.name, Link(loss=1.0))
        sim.set_link(b.name, a.name, Link(loss=1.0))
        sim.join(b, a)
        sim.run_for(3)
        assert (a.name in b.core.members) is joined


def test_a_busy_node_handles_what_arrives_one_event_at_a_time() -> None:
    sim = Simulator(seed=1)
    node = sim.add_node(0)
    sim.set_cpu(node.name, 0.01)
    handled: list[float] = []
    for _ in range(100):
        sim.call_at(1.0, node, handled.append)
    sim.run_for(5)
    assert len(handled) == 100
    assert handled[0] == pytest.approx(1.0)
    assert handled[-1] == pytest.approx(1.99)  # it fell a second behind
    # ... and per byte it reads.
    sim.set_cpu(node.name, 0.0, 1e-6)
    sim.call_at(10.0, node, handled.append, size=500_000)
    sim.call_at(10.0, node, handled.append)
    sim.run_for(10)
    assert handled[-1] == pytest.approx(10.5)


def test_a_node_busy_with_clients_keeps_its_lease_and_serves() -> None:
    """Its timers run late, not never: a wake-up handled after its time
    still runs (it once was dropped, and every node lost its lease)."""
    sim = ClusterSimulator(
        seed=1, ring=RingConfig(vnodes=64, replicas=2), cpu=(40e-6, 10e-9), lossy_tcp=True
    )
    first = sim.add_node(0)
    for i in range(1, 3):
        sim.add_node(i, seed=first)
    assert sim.run_until_true(sim.settled, 60)
    client = SimClient(sim, beside=first.sim.name, timeout=1.0)  # its requests cost CPU
    run_writer(sim, client, until=sim.now + 10)
    sim.run_for(11)
    assert len(client.writes) > 1000
    assert all(w.acked is not None for w in client.writes)
    assert not any(m.cluster.halted for m in sim.members.values())


def test_a_slot_transfer_takes_time_in_proportion_to_its_bytes() -> None:
    def join_time(bandwidth: float) -> float:
        sim = ClusterSimulator(
            seed=3, ring=RingConfig(vnodes=16, replicas=2), link=Link(bandwidth=bandwidth)
        )
        first = sim.add_node(0)
        sim.add_node(1, seed=first)
        assert sim.run_until_true(sim.settled, 60)
        client = SimClient(sim)
        value = b"x" * 10_000
        writes = [client.set(b"k%d" % i, value) for i in range(400)]  # 4 MB, two copies
        assert sim.run_until_true(lambda: all(w.acked for w in writes), 120)
        start = sim.now
        sim.add_node(2, seed=first)
        assert sim.run_until_true(sim.settled, 300, step=0.05)
        return sim.now - start

    fast, slow = join_time(0.0), join_time(2_000_000)  # unlimited, 2 MB/s
    # The newcomer gets about a third of 4 MB of copies: over 0.5 s at 2 MB/s.
    assert slow > fast + 0.5


def test_a_wall_clock_drifts_until_it_is_stepped() -> None:
    sim = ClusterSimulator(seed=1)
    sim.add_node(0)
    name = "n0000"
    start = sim.wall_ms(node=name)
    sim.set_drift(name, 100.0)  # 100 ppm fast
    sim.run_for(200)
    assert sim.wall_ms(node=name) - sim.wall_ms() == pytest.approx(20, abs=1)
    assert sim.wall_ms() - start == 200_000
    sim.set_skew(name, 0.0)  # NTP steps it right; it drifts on from there
    assert sim.wall_ms(node=name) == sim.wall_ms()
    sim.run_for(200)
    assert sim.wall_ms(node=name) - sim.wall_ms() == pytest.approx(20, abs=1)
