"""Network partitions and other faults under a workload, judged by the checker, in virtual time.

    python -m sims.partition SCENARIO [--nodes 5] [--replicas 1] [--seed S] [--duration 60]

Whole nodes run in the cluster simulator (keycafe/cluster/simulator.py:
gossip, ring, coordinator, hand-off, replication, store and command layer,
the same objects a real node runs). Writers set unique values to a set of
keys (and delete one, one time in ten) and readers read them, throughout;
at ``--duration`` the faults are over, the cluster settles, and every key is
read back. The history goes to
``sims.checker``: acknowledged writes lost, stale reads, resurrected keys,
values nobody wrote, and how long the clients could not write.

Scenarios (``SCENARIOS``): ``halves`` (a minority cut off from the
majority), ``isolate-primary`` (the primary of the most keys written so far),
``isolate-coordinator``, ``flapping`` (a minority cut off and healed every
five seconds, longer than its lease), ``pause`` (a node's process stopped
longer than the detection bound), ``cascade`` (as many nodes crash one after
the other as there are replicas), ``rolling-restart`` (each node crashed and
started again, empty, in turn, before it is declared dead), ``crash-during-
join`` (a new node dies half a second into its join). Faults start at 5 s
and end by ``duration - 15`` s.

Prints a timeline, one line per virtual second (live nodes, the coordinator
and term each side sees, ring epochs, client operations ok/failed), the
verdict, and the seed to replay it. Exit status 1 if the verdict fails.

Not yet what issue 11 asks for: clients bound to one side of a partition
(and a client timeout: one waits out a paused node), final reads of every
copy (one view, through the cluster, so copies are compared only by
anti-entropy's own tests), one-way and bridge
partitions, lossy and slow links, clock skew, plots, shrinking, a sweep,
and the same scenarios on real networks.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Final

import attrs

from keycafe.cluster.ring import RingConfig
from keycafe.cluster.simulator import ClusterSimulator, SimClient, bulk_value
from keycafe.store.keyslot import key_slot
from sims.checker import Op, Outcome, Verdict, check

FAULTS_FROM: Final = 5.0  # seconds into the run the faults begin
QUIET_TAIL: Final = 15.0  # and end this long before its end
KEYS: Final = 200  # registers written and read
DELETES: Final = 0.1  # the share of writers' operations that delete their key
PERIOD: Final = 0.02  # seconds between one client's operations


class Workload:
    """Writers and readers on one client, each with one operation in flight."""

    def __init__(self, sim: ClusterSimulator, until: float, writers: int = 4, readers: int = 2):
        self.sim = sim
        self.until = until
        self.client = SimClient(sim)
        self.reads: list[Op] = []
        self.deletes: list[Op] = []
        self._values = iter(range(1 << 62))
        for i in range(writers):
            self._write(i)
        for i in range(readers):
            self._read(i)

    def _write(self, writer: int) -> None:
        sim = self.sim
        if sim.now >= self.until:
            return
        key = b"key:%d" % sim.rng.randrange(KEYS)
        if sim.rng.random() < DELETES:
            self._delete(writer, key)
            return
        value = b"%d:%d" % (writer, next(self._values))
        self.client.set(
            key,
            value,
            lambda w: sim.net.call_at(sim.now + PERIOD, None, lambda at: self._write(writer)),
        )

    def _delete(self, writer: int, key: bytes) -> None:
        sim = self.sim
        invoked = sim.now

        def done(reply: bytes | None, node: str) -> None:
            # An integer: deleted (or already absent); an error: refused; no
            # reply (given up): it may have happened.
            outcome: Outcome = "unknown"
            if reply is not None:
                outcome = "ok" if reply.startswith(b":") else "fail"
            completed = sim.now if reply is not None else None
            self.deletes.append(Op("writers", "delete", key, None, invoked, completed, outcome))
            _at(sim, sim.now + PERIOD, partial(self._write, writer))

        self.client.execute([b"DEL", key], done)

    def _read(self, reader: int) -> None:
        sim = self.sim
        if sim.now >= self.until:
            return
        key = b"key:%d" % sim.rng.randrange(KEYS)
        invoked = sim.now

        def done(reply: bytes | None, node: str) -> None:
            if reply is not None and not reply.startswith(b"-"):
                self.reads.append(
                    Op(f"r{reader}", "read", key, bulk_value(reply), invoked, sim.now, "ok")
                )
            _at(sim, sim.now + PERIOD, partial(self._read, reader))

        self.client.execute([b"GET", key], done)

    def history(self) -> list[Op]:
        writes = [
            Op(
                "writers",
                "write",
                w.key,
                w.value,
                w.issued,
                w.acked,
                "ok" if w.acked is not None else "unknown",  # given up: may have happened
            )
            for w in self.client.writes
        ]
        return writes + self.deletes + self.reads

    def final_reads(self) -> tuple[dict[bytes, bytes | None], list[bytes]]:
        """Every written key read back, and the keys no read could get (an
        error or no answer: not to be taken for an absent key)."""
        keys = sorted({w.key for w in self.client.writes} | {d.key for d in self.deletes})
        out: dict[bytes, bytes | None] = {}
        unread: set[bytes] = set()

        def got(key: bytes, reply: bytes | None, node: str) -> None:
            if reply is None or reply.startswith(b"-"):
                unread.add(key)
            else:
                out[key] = bulk_value(reply)

        for key in keys:
            self.client.execute([b"GET", key], partial(got, key))
        self.sim.run_until_true(lambda: len(out) + len(unread) == len(keys), 60, step=0.01)
        unread |= {k for k in keys if k not in out}
        return {k: v for k, v in out.items() if k not in unread}, sorted(unread)


@attrs.frozen
class Faults:
    """What a scenario schedules its faults in: from ``start`` to ``end``."""

    sim: ClusterSimulator
    start: float
    end: float
    rng: random.Random
    replicas: int
    work: Workload


Scenario = Callable[[Faults], None]


def _at(sim: ClusterSimulator, t: float, fn: Callable[[], None]) -> None:
    sim.net.call_at(t, None, lambda at: fn())


def _minority(sim: ClusterSimulator) -> tuple[list[str], list[str]]:
    names = sorted(m.sim.name for m in sim.live())
    cut = (len(names) - 1) // 2
    return names[:cut], names[cut:]


def _coordinator(sim: ClusterSimulator) -> str | None:
    for m in sim.live():
        a = m.cluster.assessment
        if a is not None and a.coordinator:
            return a.coordinator
    return None


def halves(f: Faults) -> None:
    small, big = _minority(f.sim)
    _at(f.sim, f.start, lambda: f.sim.partition(small, big))
    _at(f.sim, f.end, f.sim.heal)


def _isolate(f: Faults, pick: Callable[[], str]) -> None:
    def cut() -> None:
        node = pick()
        f.sim.partition([node], [n for n in f.sim.members if n != node])

    _at(f.sim, f.start, cut)
    _at(f.sim, f.end, f.sim.heal)


def isolate_primary(f: Faults) -> None:
    def primary() -> str:
        """The primary of the most keys written so far."""
        owners = f.sim.live()[0].state.routing.table.owners
        slots = [key_slot(w.key) for w in f.work.client.writes]
        led = Counter(owners[s][0] for s in slots if owners[s])
        return led.most_common(1)[0][0] if led else sorted(f.sim.members)[0]

    _isolate(f, primary)


def isolate_coordinator(f: Faults) -> None:
    _isolate(f, lambda: _coordinator(f.sim) or sorted(f.sim.members)[0])


FLAP: Final = 5.0  # seconds cut, then healed: longer than the minority's lease


def flapping(f: Faults) -> None:
    small, big = _minority(f.sim)
    t, cut = f.start, True
    while t < f.end:
        _at(f.sim, t, (lambda: f.sim.partition(small, big)) if cut else f.sim.heal)
        t, cut = t + FLAP, not cut
    _at(f.sim, f.end, f.sim.heal)


def pause(f: Faults) -> None:
    victim = f.rng.choice(sorted(f.sim.members))
    _at(f.sim, f.start, lambda: f.sim.net.pause(victim, min(20.0, f.end - f.start)))


def cascade(f: Faults) -> None:
    victims = f.rng.sample(sorted(f.sim.members), k=f.replicas)
    step = (f.end - f.start) / max(1, len(victims))
    for i, victim in enumerate(victims):
        _at(f.sim, f.start + i * step, partial(f.sim.crash, victim))


def rolling_restart(f: Faults) -> None:
    names = sorted(f.sim.members)
    step = (f.end - f.start) / len(names)

    def restart(name: str, seed: str) -> None:
        f.sim.restart(name, seed)

    for i, name in enumerate(names):
        at = f.start + i * step
        _at(f.sim, at, partial(f.sim.crash, name))
        _at(f.sim, at + step / 2, partial(restart, name, names[(i + 1) % len(names)]))


def crash_during_join(f: Faults) -> None:
    def join() -> None:
        seed = f.sim.members[sorted(f.sim.members)[0]]
        m = f.sim.add_node(len(f.sim.members), seed=seed)
        _at(f.sim, f.sim.now + 0.5, partial(f.sim.crash, m.sim.name))

    _at(f.sim, f.start, join)


SCENARIOS: Final[dict[str, Scenario]] = {
    "halves": halves,
    "isolate-primary": isolate_primary,
    "isolate-coordinator": isolate_coordinator,
    "flapping": flapping,
    "pause": pause,
    "cascade": cascade,
    "rolling-restart": rolling_restart,
    "crash-during-join": crash_during_join,
}


def run(
    scenario: str,
    *,
    nodes: int = 5,
    replicas: int = 1,
    seed: int = 1,
    duration: float = 60.0,
    out: Callable[[str], None] = print,
) -> Verdict:
    """Run one scenario and judge it; ``out`` gets the timeline and verdict."""
    sim = ClusterSimulator(seed=seed, ring=RingConfig(vnodes=64, replicas=1 + replicas))
    first = sim.add_node(0)
    for i in range(1, nodes):
        sim.add_node(i, seed=first)
    if not sim.run_until_true(sim.settled, 120):
        raise RuntimeError("the cluster did not form")
    start = sim.now
    end = start + duration
    rng = random.Random(seed)
    work = Workload(sim, until=end)
    SCENARIOS[scenario](Faults(sim, start + FAULTS_FROM, end - QUIET_TAIL, rng, replicas, work))
    done = (0, 0)
    for second in range(int(duration)):
        sim.run_until(start + second + 1)
        now = (work.client.ok, work.client.failed)
        out(_line(sim, second, now[0] - done[0], now[1] - done[1]))
        done = now
    work.client.stopped = True
    sim.run_until_true(lambda: work.client.in_flight == 0, 60, step=0.01)
    settled = sim.run_until_true(sim.settled, 60, step=0.05)
    history = work.history()
    reads, unread = work.final_reads()
    verdict = check(history, {"read through the cluster": reads}, span=(start, end))
    verdict = attrs.evolve(verdict, unread=unread)
    acked = sum(1 for op in history if op.kind == "write" and op.outcome == "ok")
    out(f"operations: {acked} writes acknowledged, {len(work.reads)} reads")
    out(verdict.summary())
    out(f"settled after the run: {'yes' if settled else 'NO'}; replay: --seed {seed}")
    return verdict


def _line(sim: ClusterSimulator, second: int, ok: int, failed: int) -> str:
    live = sim.live()
    views = {
        (m.cluster.assessment.coordinator or "-", m.cluster.assessment.term)
        for m in live
        if m.cluster.assessment is not None
    }
    epochs = sorted({m.cluster.ring.epoch for m in live if m.cluster.ring is not None})
    halted = sum(1 for m in live if m.state.routing.halted)
    coord = " ".join(f"{c}/t{t}" for c, t in sorted(views))
    return (
        f"{second + 1:4d}s live {len(live)} halted {halted} coordinator {coord} "
        f"epochs {','.join(map(str, epochs)) or '-'} ops ok {ok} failed {failed}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=60.0, help="virtual seconds (>= 30)")
    args = parser.parse_args(argv)
    if args.duration < FAULTS_FROM + QUIET_TAIL + 10:
        parser.error("--duration must leave room for the faults: at least 30 s")
    verdict = run(
        args.scenario,
        nodes=args.nodes,
        replicas=args.replicas,
        seed=args.seed,
        duration=args.duration,
    )
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
