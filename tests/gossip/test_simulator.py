"""The simulator's own shortcuts must not change a run: a converged start is a
full merge, done once for everyone."""

from __future__ import annotations

import pytest

from keycafe.gossip import codec
from keycafe.gossip.core import Gossip
from keycafe.gossip.messages import PushPull
from keycafe.gossip.simulator import Link, Simulator, node_name


def merged(n: int, seed: int) -> Simulator:
    """A converged cluster made the long way: a push-pull of everyone merged
    into each core, one member at a time."""
    sim = Simulator(seed=seed, link=Link(loss=0.05, delay=0.001, jitter=0.002))
    nodes = [sim.add_node(i) for i in range(n)]
    everyone = PushPull(join=False, members=tuple(x.core.me for x in nodes))
    for node in nodes:
        node.core._merge(everyone, sim.now)
        node.core._broadcasts._items.clear()
        while node.core.next_event() is not None:
            pass
        sim._reschedule(node)
    return sim


def test_a_converged_start_is_a_full_merge() -> None:
    fast = Simulator.converged(40, seed=3, link=Link(loss=0.05, delay=0.001, jitter=0.002))
    slow = merged(40, seed=3)
    for name, x in fast.nodes.items():
        y = slow.nodes[name].core
        assert [(m.info, m.state_changed) for m in x.core.members.values()] == [
            (m.info, m.state_changed) for m in y.members.values()
        ]
        assert x.core._probe_order == y._probe_order
        assert x.core.rng.getstate() == y.rng.getstate()
        assert list(x.core._live) == list(y._live)
    fast.crash(node_name(9))
    slow.crash(node_name(9))
    fast.run_for(30)
    slow.run_for(30)
    assert fast.trace_digest == slow.trace_digest


def test_converged_cores_share_member_records_and_order() -> None:
    sim = Simulator.converged(300, seed=1)
    a, b = sim.nodes[node_name(0)].core, sim.nodes[node_name(1)].core
    others = [node_name(i) for i in range(2, 300)]
    assert all(a.members[n] is b.members[n] for n in others)
    assert a._live.base is b._live.base
    sim.crash(node_name(5))
    sim.run_for(35)  # probes, push-pulls, a death: records change one at a time
    assert all(x.core.members[node_name(5)].state.name == "DEAD" for x in sim.live())
    shared = sum(a.members[n] is b.members[n] for n in others)
    assert shared > 200  # those neither probed (nor heard news of)
    # The death is one difference from the shared order, not a copy of it.
    assert all(x.core._live.base is a._live.base for x in sim.live())


def test_a_push_pull_between_agreeing_members_merges_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim = Simulator.converged(50, seed=2)
    a, b = sim.nodes[node_name(0)].core, sim.nodes[node_name(1)].core
    request = a._state_packet(join=False)
    (pp,) = codec.decode_packet_untrusted(request, b.members.get)
    assert isinstance(pp, PushPull)
    # The records b holds come back as b's own objects, not as new ones...
    assert all(info is b.members[info.node].info for info in pp.members)
    # ...so merging them does nothing, without going through the transitions.
    calls: list[str] = []
    monkeypatch.setattr(Gossip, "_on_alive", lambda self, info, now: calls.append(info.node))
    assert b.handle_stream(request, a.me.addr, sim.now) is not None
    assert calls == []


def test_a_push_pull_decodes_like_one_without_known_records() -> None:
    sim = Simulator.converged(20, seed=4)
    a, b = sim.nodes[node_name(0)].core, sim.nodes[node_name(1)].core
    sim.crash(node_name(7))
    sim.run_for(30)  # n0007 is dead in a's table, and a's own record moved on
    data = a._state_packet(join=False)
    (pp,) = codec.decode_packet_untrusted(data, b.members.get)
    assert [pp] == codec.decode_packet_untrusted(data)
    assert isinstance(pp, PushPull)
    assert list(pp.members) == [m.info for m in a.members.values()]
