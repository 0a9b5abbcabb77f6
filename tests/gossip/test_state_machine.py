"""Hypothesis drives the simulated cluster through arbitrary fault schedules."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from keycafe.gossip.config import GossipConfig
from keycafe.gossip.core import EventKind
from keycafe.gossip.messages import State
from keycafe.gossip.order import order_key
from keycafe.gossip.simulator import Link, Simulator, node_name

LIVE = (State.ALIVE, State.SUSPECT)


class GossipCluster(RuleBasedStateMachine):
    sim: Simulator

    @initialize(n=st.integers(3, 7), seed=st.integers(0, 2**32 - 1))
    def start(self, n: int, seed: int) -> None:
        self.n = n
        self.sim = Simulator.converged(n, seed=seed, config=GossipConfig.local())
        # Highest incarnation each observer (a node in one life) has held per member.
        self.seen: dict[tuple[str, int, str], int] = {}
        self.life: dict[str, int] = {}
        self.seed_of: dict[str, str] = {}  # restarted node -> the seed it joins through

    def live_names(self) -> list[str]:
        return [x.name for x in self.sim.live()]

    def down_names(self) -> list[str]:
        return [x.name for x in self.sim.nodes.values() if not x.up]

    @rule(seconds=st.floats(0.05, 4.0))
    def tick(self, seconds: float) -> None:
        self.sim.run_for(seconds)

    @rule(loss=st.sampled_from([0.0, 0.05, 0.3]), jitter=st.sampled_from([0.0, 0.01]))
    def drop(self, loss: float, jitter: float) -> None:
        self.sim.link = Link(loss=loss, delay=0.001, jitter=jitter)

    @rule(data=st.data(), one_way=st.booleans())
    def partition(self, data: st.DataObject, one_way: bool) -> None:
        names = [node_name(i) for i in range(self.n)]
        side = data.draw(st.sets(st.sampled_from(names), min_size=1, max_size=self.n - 1))
        self.sim.partition(sorted(side), [x for x in names if x not in side], one_way=one_way)

    @rule()
    def heal(self) -> None:
        self.sim.heal()
        self.sim.link = Link()

    @precondition(lambda self: len(self.live_names()) > 2)
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        # Not the seed of a restarted node that has not reached it yet: a node
        # whose only seed is gone knows nobody, and nobody knows its new life,
        # so no protocol could bring it in (the shell keeps retrying the seed).
        waiting = {
            seed
            for name, seed in self.seed_of.items()
            if self.sim.nodes[name].up and len(self.sim.nodes[name].core.members) == 1
        }
        candidates = [x for x in self.live_names() if x not in waiting]
        if candidates:
            self.sim.crash(data.draw(st.sampled_from(candidates)))

    @precondition(lambda self: bool(self.down_names()))
    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self.down_names()))
        seed = self.sim.nodes[data.draw(st.sampled_from(self.live_names()))]
        # A restarted process starts above any incarnation it had (the shell
        # starts from the wall clock); here: above anything anyone saw.
        top = max((inc for (_, _, node), inc in self.seen.items() if node == name), default=0)
        self.sim.restart(int(name[1:]), seed, incarnation=top + 1)
        self.seed_of[name] = seed.name
        self.life[name] = self.life.get(name, 0) + 1

    @invariant()
    def incarnations_never_decrease(self) -> None:
        for node in self.sim.live():
            for m in node.core.member_list():
                key = (node.name, self.life.get(node.name, 0), m.node)
                assert m.incarnation >= self.seen.get(key, 0), (node.name, m.node)
                self.seen[key] = m.incarnation

    @invariant()
    def the_live_order_holds_the_live_members(self) -> None:
        # Kept up to date transition by transition (order.py), never rebuilt.
        for node in self.sim.live():
            live = [m.node for m in node.core.member_list() if m.state in LIVE]
            assert list(node.core._live) == sorted(live, key=order_key)
            assert node.core.alive_count() == len(live)

    @invariant()
    def no_node_declares_itself_dead(self) -> None:
        for node in self.sim.live():
            assert node.core.me.state == State.ALIVE
            assert not any(
                e.kind == EventKind.FAILED and e.member.node == node.name for e in node.events
            )

    @rule()
    def heal_and_quiet_converge(self) -> None:
        self.heal()
        live = set(self.live_names())

        def equal() -> bool:
            for node in self.sim.live():
                alive = {m.node for m in node.core.member_list() if m.state == State.ALIVE}
                if alive != live:
                    return False
            return True

        assert self.sim.run_until_true(equal, limit=300, step=0.5), {
            x.name: sorted(m.node for m in x.core.member_list() if m.state == State.ALIVE)
            for x in self.sim.live()
        }

    def teardown(self) -> None:
        # Every schedule ends healed and quiet; then all views must agree.
        if hasattr(self, "sim"):
            self.heal_and_quiet_converge()


GossipCluster.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestGossipCluster = GossipCluster.TestCase
