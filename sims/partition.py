"""Network partitions and other faults under a workload, judged by the checker, in virtual time.

    python -m sims.partition SCENARIO [--nodes 5] [--replicas 1] [--seed S]
                             [--duration 60] [--workers 1] [--plot FILE.png]
                             [--profile lan|local] [--network realistic|ideal]
                             [--schedule FILE.json]
    python -m sims.partition sweep [--of S] [--seeds 1000] [--first 1] [--jobs N] [--duration 60]
                                   [--shrink [N]]
    python -m sims.partition shrink --seed S [--duration 60] [--runs 60] [--class C]

Whole nodes run in the cluster simulator (keycafe/cluster/simulator.py:
gossip, ring, coordinator, hand-off, replication, store and command layer,
the same objects a real node runs). Clients run beside every node, on its
side of any partition: each has ``--workers`` writers, which set unique
values to 200 keys (and delete one, one time in ten), and as many readers,
each with one operation in flight, 20 ms apart; an operation not answered
within a second is tried again elsewhere, and given up (outcome unknown)
after five. At ``--duration`` the writes stop, the cluster settles, and
every copy of every key is read back. The history goes to
``sims.checker``: acknowledged writes lost, stale reads, resurrected keys,
values nobody wrote, copies that differ, and how long each client could not
write or read.

Scenarios (``SCENARIOS``); faults start at 5 s and end by ``duration - 15``:

- ``halves``: the two smallest-named nodes cut off from the rest;
- ``isolate-primary``: the primary of the most keys written so far, alone;
- ``isolate-coordinator``: the elected coordinator, alone;
- ``staggered``: a cut that spreads: two nodes lose the other three one at
  a time, 2.5 s apart, the coordinator first;
- ``bridge``: two sides that cannot reach each other, and one node that
  reaches both;
- ``one-way``: one node's outgoing traffic dropped (it hears the others,
  they do not hear it);
- ``flapping``: a minority cut off and healed every five seconds (longer
  than its lease);
- ``lossy``: 10-30% of packets lost on every link (gossip datagrams are
  dropped; peer-link frames wait for TCP's retransmissions);
- ``slow-node``: one node handles everything 0.1-1 s late (overloaded);
- ``pause``: a node's process stopped longer than the detection bound;
- ``clock-skew``: one node's wall clock 300 s fast, another's 300 s slow,
  then the fast one stepped back to true time (an NTP step);
- ``cascade``: as many nodes crash one after the other as there are replicas;
- ``rolling-restart``: each node crashed and started again, empty, in turn,
  before it is declared dead;
- ``crash-during-join``: a new node dies half a second into its join.

For the cuts it also measures when the cut-off side last acknowledged a
write and when the majority side first acknowledged one to a slot whose
primary was cut off, against their bounds (the lease, and the detection
bound plus a second).

``nemesis`` draws a random schedule from the seed (``draw``: a mix of all
the faults above, one after another), prints it, and plays it; with
``--schedule FILE.json`` it plays that one instead (``schedule_to_json``),
the seed still drawing the network and the workload. ``sweep`` runs a
scenario, by default the nemesis, over many seeds, in ``--jobs`` processes,
and prints the totals per verdict class and the seeds that failed, each
replayable with ``python -m sims.partition nemesis --seed S``; ``--shrink``
shrinks the first few failing seeds' schedules. ``shrink`` shrinks one
(``sims.shrink``): the fewest, shortest faults that still fail the same way,
written as JSON to replay.

Prints a timeline, one line per virtual second (live and halted nodes, the
coordinator and term each side sees, ring epochs, operations ok/failed per
client host), the verdict, and the seed to replay it. Exit status 1 if the
verdict fails.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import Any, Final

import attrs

from keycafe.cluster.lease import Lease
from keycafe.cluster.ring import RingConfig
from keycafe.cluster.simulator import ClusterSimulator, SimClient, Write, bulk_value
from keycafe.gossip.config import GossipConfig
from keycafe.gossip.simulator import Link
from keycafe.gossip.suspicion import suspicion_timeout
from keycafe.server.session import Session
from keycafe.store.keyslot import key_slot
from sims.checker import Op, Outcome, Verdict, check

FAULTS_FROM: Final = 5.0  # seconds into the run the faults begin
QUIET_TAIL: Final = 15.0  # and end this long before its end
KEYS: Final = 200  # registers written and read
DELETES: Final = 0.1  # the share of writers' operations that delete their key
PERIOD: Final = 0.02  # seconds between one worker's operations
CLIENT_TIMEOUT: Final = 1.0  # seconds a client waits for a reply before trying elsewhere
GIVE_UP: Final = 5.0  # seconds after which an operation is abandoned (outcome unknown)
PROFILES: Final = {"lan": GossipConfig.lan, "local": GossipConfig.local}


@attrs.frozen
class Network:
    """The simulated network and hosts a run uses (``--network``)."""

    link: Link
    lossy_tcp: bool  # the links' loss hits peer links and gossip streams too
    cpu: tuple[float, float] | None  # each node's CPU seconds per event, and per byte
    drift_ppm: float  # each node's wall clock drifts up to this, either way


NETWORKS: Final = {
    # One data centre: 0.25 ms median one way with a lognormal tail (1 in
    # 100 packets takes over 1 ms), 1 Gbit/s per path, TCP that suffers what
    # datagrams do, 40 us of CPU per event and 10 ns per byte read (a
    # Python process: a 1 MB slot transfer costs 10 ms), clocks off by up to
    # 50 ppm.
    "realistic": Network(
        link=Link(delay=0.00025, spread=0.6, bandwidth=125e6),
        lossy_tcp=True,
        cpu=(40e-6, 10e-9),
        drift_ppm=50.0,
    ),
    # What the simulator had before: 0.5 ms every time, free CPU, TCP never
    # loses, perfect clocks.
    "ideal": Network(link=Link(), lossy_tcp=False, cpu=None, drift_ppm=0.0),
}


class Workload:
    """Writers and readers beside every node, each with one operation in flight."""

    def __init__(self, sim: ClusterSimulator, until: float, workers: int = 1) -> None:
        self.sim = sim
        self.until = until
        self.clients = {
            host: SimClient(sim, beside=host, timeout=CLIENT_TIMEOUT, give_up_after=GIVE_UP)
            for host in sorted(sim.members)
        }
        self.reads: list[Op] = []
        self.deletes: list[Op] = []
        self._writers: dict[int, str] = {}  # writer number -> its host
        self._values = iter(range(1 << 62))
        for n, host in enumerate(self.clients):
            for i in range(workers):
                self._write(host, n * workers + i)
                self._read(host, n * workers + i)

    @property
    def in_flight(self) -> int:
        return sum(c.in_flight for c in self.clients.values())

    def stop(self) -> None:
        self.until = -math.inf

    def writes(self) -> list[tuple[str, Write]]:
        return [(host, w) for host, c in self.clients.items() for w in c.writes]

    def _next(self, fn: Callable[[], None]) -> None:
        self.sim.net.call_at(self.sim.now + PERIOD, None, lambda at: fn())

    def _write(self, host: str, writer: int) -> None:
        sim = self.sim
        if sim.now >= self.until:
            return
        key = b"key:%d" % sim.rng.randrange(KEYS)
        if sim.rng.random() < DELETES:
            self._delete(host, writer, key)
            return
        value = b"%d:%d" % (writer, next(self._values))
        self.clients[host].set(key, value, lambda w: self._next(partial(self._write, host, writer)))

    def _delete(self, host: str, writer: int, key: bytes) -> None:
        sim = self.sim
        invoked = sim.now

        def done(reply: bytes | None, node: str) -> None:
            # An integer: deleted (or already absent); an error: refused; no
            # reply (given up): it may have happened.
            outcome: Outcome = "unknown"
            if reply is not None:
                outcome = "ok" if reply.startswith(b":") else "fail"
            completed = sim.now if reply is not None else None
            self.deletes.append(
                Op(f"writes@{host}", "delete", key, None, invoked, completed, outcome)
            )
            self._next(partial(self._write, host, writer))

        self.clients[host].execute([b"DEL", key], done)

    def _read(self, host: str, reader: int) -> None:
        sim = self.sim
        if sim.now >= self.until:
            return
        key = b"key:%d" % sim.rng.randrange(KEYS)
        invoked = sim.now

        def done(reply: bytes | None, node: str) -> None:
            if reply is not None and not reply.startswith(b"-"):
                value = bulk_value(reply)
                self.reads.append(Op(f"reads@{host}", "read", key, value, invoked, sim.now, "ok"))
            self._next(partial(self._read, host, reader))

        self.clients[host].execute([b"GET", key], done)

    def history(self) -> list[Op]:
        writes = [
            Op(
                f"writes@{host}",
                "write",
                w.key,
                w.value,
                w.issued,
                w.acked,
                "ok" if w.acked is not None else "unknown",  # given up: may have happened
            )
            for host, w in self.writes()
        ]
        return writes + self.deletes + self.reads

    def keys(self) -> list[bytes]:
        return sorted({w.key for _, w in self.writes()} | {d.key for d in self.deletes})

    def final_reads(self) -> tuple[dict[bytes, bytes | None], list[bytes]]:
        """Every written key read back through the cluster by a client that
        reaches every node, and the keys no read could get (an error or no
        answer: not to be taken for an absent key)."""
        keys = self.keys()
        client = SimClient(self.sim)
        out: dict[bytes, bytes | None] = {}
        unread: set[bytes] = set()

        def got(key: bytes, reply: bytes | None, node: str) -> None:
            if reply is None or reply.startswith(b"-"):
                unread.add(key)
            else:
                out[key] = bulk_value(reply)

        for key in keys:
            client.execute([b"GET", key], partial(got, key))
        self.sim.run_until_true(lambda: len(out) + len(unread) == len(keys), 60, step=0.01)
        unread |= {k for k in keys if k not in out}
        return {k: v for k, v in out.items() if k not in unread}, sorted(unread)


def copies(sim: ClusterSimulator, keys: list[bytes]) -> dict[str, dict[bytes, bytes | None]]:
    """Every copy of every key, read on the node that holds it (``READONLY``
    for a replica's): one view per rank, the primary's, the first replica's..."""
    owners = _owners(sim)
    if owners is None:
        return {}
    sessions: dict[str, Session] = {}
    views: dict[str, dict[bytes, bytes | None]] = {}
    for key in keys:
        for rank, name in enumerate(owners[key_slot(key)]):
            m = sim.members[name]
            if not m.sim.up:
                continue
            session = sessions.get(name)
            if session is None:
                session = sessions[name] = Session.open(m.state)
                session.execute([b"READONLY"])
            m.state.now_ms = sim.wall_ms(node=name)
            m.state.clock = sim.now
            view = "primary" if rank == 0 else f"replica {rank}"
            views.setdefault(view, {})[key] = bulk_value(session.execute([b"GET", key]))
            session.read_after = 0
    for session in sessions.values():
        session.close()
    return views


def _owners(sim: ClusterSimulator) -> tuple[tuple[str, ...], ...] | None:
    """Each slot's owners in the newest ring a live node routes by."""
    live = [m for m in sim.live() if m.cluster.ring is not None]
    if not live:
        return None
    newest = max(live, key=lambda m: m.cluster.ring.version if m.cluster.ring else (0, 0))
    return newest.state.routing.table.owners


def differing(sim: ClusterSimulator, keys: list[bytes]) -> list[bytes]:
    """Keys whose copies differ, not counting those with a write on its way
    to the replicas (not durable at their primary yet)."""
    out: list[bytes] = []
    owners = _owners(sim)
    if owners is None:
        return out
    views = copies(sim, keys)
    for key in keys:
        slot = key_slot(key)
        held = {v[key] for v in views.values() if key in v}
        if len(held) <= 1:
            continue
        primary = sim.members[owners[slot][0]]
        in_flight = primary.state.store.unsettled.get(slot, 0)
        if in_flight > primary.cluster.replication.settled:
            continue
        out.append(key)
    return out


# -- faults ------------------------------------------------------------------------------


@attrs.define
class Cut:
    """A side cut off at ``at``, and the slots' primaries then."""

    at: float
    minority: list[str]
    majority: list[str]
    primaries: dict[int, str]
    healed: float | None = None


@attrs.define
class Faults:
    """What a scenario schedules its faults in: from ``start`` to ``end``."""

    sim: ClusterSimulator
    start: float
    end: float
    rng: random.Random
    replicas: int
    work: Workload
    cuts: list[Cut] = attrs.Factory(list)
    heals: list[float] = attrs.Factory(list)

    def at(self, t: float, fn: Callable[[], None]) -> None:
        self.sim.net.call_at(t, None, lambda at: fn())

    def cut(self, minority: list[str], majority: list[str], *, one_way: bool = False) -> None:
        owners = self.sim.live()[0].state.routing.table.owners
        primaries = {s: o[0] for s, o in enumerate(owners) if o}
        self.cuts.append(Cut(self.sim.now, list(minority), list(majority), primaries))
        self.sim.partition(minority, majority, one_way=one_way)

    def heal(self) -> None:
        for cut in self.cuts:
            if cut.healed is None:
                cut.healed = self.sim.now
        self.heals.append(self.sim.now)
        self.sim.heal()


Scenario = Callable[[Faults], None]


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
    f.at(f.start, lambda: f.cut(small, big))
    f.at(f.end, f.heal)


def _isolate(f: Faults, pick: Callable[[], str]) -> None:
    def cut() -> None:
        node = pick()
        f.cut([node], [n for n in sorted(f.sim.members) if n != node])

    f.at(f.start, cut)
    f.at(f.end, f.heal)


def _most_written_primary(f: Faults) -> str:
    owners = f.sim.live()[0].state.routing.table.owners
    slots = [key_slot(w.key) for _, w in f.work.writes()]
    led = Counter(owners[s][0] for s in slots if owners[s])
    return led.most_common(1)[0][0] if led else sorted(f.sim.members)[0]


def isolate_primary(f: Faults) -> None:
    _isolate(f, partial(_most_written_primary, f))


def isolate_coordinator(f: Faults) -> None:
    _isolate(f, lambda: _coordinator(f.sim) or sorted(f.sim.members)[0])


STAGGER: Final = 2.5  # seconds between the cuts of a spreading partition


def staggered(f: Faults) -> None:
    """A cut that spreads: two nodes (the coordinator not among them) lose
    the others one at a time, ``STAGGER`` seconds apart, the coordinator
    first. For a while the pair still sees a member of the majority alive
    while its failure detector has declared the rest dead: it counts a
    majority in its gossip view that it cannot reach (found on real networks
    by ``python -m sims.netlab halves``)."""

    def begin() -> None:
        names = sorted(f.sim.members)
        lead = _coordinator(f.sim) or names[0]
        small = [n for n in names if n != lead][-2:]
        big = [lead] + [n for n in names if n not in small and n != lead]
        owners = f.sim.live()[0].state.routing.table.owners
        primaries = {s: o[0] for s, o in enumerate(owners) if o}
        for i, node in enumerate(big):
            f.at(f.sim.now + i * STAGGER, partial(f.sim.partition, small, [node]))
        # Timed from the last cut, when the pair is cut off whole: until
        # then it may rightly go on writing through the rest.
        last = Cut(f.sim.now + (len(big) - 1) * STAGGER, small, big, primaries)
        f.at(last.at, partial(f.cuts.append, last))

    f.at(f.start, begin)
    f.at(f.end, f.heal)


def bridge(f: Faults) -> None:
    """Two sides that cannot reach each other, and one node that reaches both."""
    names = sorted(f.sim.members)
    middle = len(names) // 2  # names[middle] is the bridge: nothing cuts it
    left, right = names[:middle], names[middle + 1 :]
    f.at(f.start, lambda: f.cut(left, right))
    f.at(f.end, f.heal)


def one_way(f: Faults) -> None:
    """What one node sends is lost; what it is sent arrives."""

    def cut() -> None:
        node = _most_written_primary(f)
        f.cut([node], [n for n in sorted(f.sim.members) if n != node], one_way=True)

    f.at(f.start, cut)
    f.at(f.end, f.heal)


FLAP: Final = 5.0  # seconds cut, then healed: longer than the minority's lease


def flapping(f: Faults) -> None:
    small, big = _minority(f.sim)
    t, cut = f.start, True
    while t < f.end:
        f.at(t, (lambda: f.cut(small, big)) if cut else f.heal)
        t, cut = t + FLAP, not cut
    f.at(f.end, f.heal)


def lossy(f: Faults) -> None:
    _lose(f, f.rng.uniform(0.1, 0.3), f.start, f.end)


def _lose(f: Faults, loss: float, start: float, end: float) -> None:
    before = f.sim.net.link

    def begin() -> None:
        f.sim.net.link = attrs.evolve(before, loss=loss)
        f.sim.tcp_loss = loss
        f.sim._note(f"{loss:.0%} of packets lost on every link")

    def stop() -> None:
        f.sim.net.link = before
        f.sim.tcp_loss = 0.0
        f.sim._note("no more loss")

    f.at(start, begin)
    f.at(end, stop)


def slow_node(f: Faults) -> None:
    _starve(f, f.rng.choice(sorted(f.sim.members)), f.start, f.end)


def _starve(f: Faults, victim: str, start: float, end: float) -> None:
    def begin() -> None:
        f.sim.net.starve(victim, (0.1, 1.0))
        f.sim._note(f"{victim} handles everything 0.1-1 s late")

    def stop() -> None:
        f.sim.net.starve(victim, None)
        f.sim._note(f"{victim} keeps up again")

    f.at(start, begin)
    f.at(end, stop)


def pause(f: Faults) -> None:
    victim = f.rng.choice(sorted(f.sim.members))

    def stop() -> None:
        f.sim.net.pause(victim, min(20.0, f.end - f.start))
        f.sim._note(f"{victim} is paused")

    f.at(f.start, stop)


SKEW: Final = 300.0  # seconds a skewed wall clock is off


def clock_skew(f: Faults) -> None:
    fast, slow = f.rng.sample(sorted(f.sim.members), k=2)
    f.at(f.start, partial(f.sim.set_skew, fast, SKEW))
    f.at(f.start, partial(f.sim.set_skew, slow, -SKEW))
    middle = (f.start + f.end) / 2
    f.at(middle, partial(f.sim.set_skew, fast, 0.0))  # stepped back 300 s at once
    f.at(f.end, partial(f.sim.set_skew, slow, 0.0))


def cascade(f: Faults) -> None:
    victims = f.rng.sample(sorted(f.sim.members), k=f.replicas)
    step = (f.end - f.start) / max(1, len(victims))
    for i, victim in enumerate(victims):
        f.at(f.start + i * step, partial(f.sim.crash, victim))


def rolling_restart(f: Faults) -> None:
    names = sorted(f.sim.members)
    step = (f.end - f.start) / len(names)

    def restart(name: str, seed: str) -> None:
        f.sim.restart(name, seed)

    for i, name in enumerate(names):
        at = f.start + i * step
        f.at(at, partial(f.sim.crash, name))
        f.at(at + step / 2, partial(restart, name, names[(i + 1) % len(names)]))


def crash_during_join(f: Faults) -> None:
    def join() -> None:
        seed = f.sim.members[sorted(f.sim.members)[0]]
        m = f.sim.add_node(len(f.sim.members), seed=seed)
        f.at(f.sim.now + 0.5, partial(f.sim.crash, m.sim.name))

    f.at(f.start, join)


def nemesis(f: Faults) -> None:
    """A random schedule (``draw``), played."""
    play(f, draw(f.rng, sorted(f.sim.members), f.start, f.end, f.replicas))


def _cut_live(
    f: Faults, side: list[str], other: list[str] | None = None, *, one_way: bool = False
) -> None:
    if f.sim.net.blocked:
        f.heal()  # one cut at a time
    rest = other if other is not None else [n for n in sorted(f.sim.members) if n not in side]
    f.cut(side, rest, one_way=one_way)


def _pause_live(f: Faults, victim: str, seconds: float) -> None:
    if f.sim.members[victim].sim.up:
        f.sim.net.pause(victim, seconds)
        f.sim._note(f"{victim} is paused")


def _crash_live(f: Faults, victim: str) -> None:
    if f.sim.members[victim].sim.up:
        f.sim.crash(victim)


def _restart_dead(f: Faults, victim: str) -> None:
    live = [m.sim.name for m in f.sim.live()]
    if not f.sim.members[victim].sim.up and live:
        f.sim.restart(victim, live[0])


# -- the nemesis's schedule --------------------------------------------------------------

# The order is part of the draws: changing it changes every seed's schedule.
KINDS: Final = (
    "halves", "isolate", "bridge", "one-way", "flap", "lossy", "slow", "pause",
    "skew", "crash", "restart",
)  # fmt: skip
FLAP_EVERY: Final = 2.0  # seconds between a flap's cuts and heals
RESTART_AFTER: Final = 3.0  # the longest a restarted node stays down (shorter than detection)


@attrs.frozen(kw_only=True)
class Fault:
    """One fault of a nemesis schedule: ``kind`` at ``at`` for ``length``
    seconds. ``at`` is virtual time, as the simulator's clock and
    ``explain`` read it: an offset from the run's start would not always
    land on the time drawn (``start + (t - start)`` is not always ``t`` in
    floating point), and a replay would then not be the run drawn.

    ``halves``, ``isolate``: ``nodes`` cut off from the rest; ``flap``: the
    same, cut and healed every ``FLAP_EVERY`` s; ``bridge``: ``nodes`` cut
    off from ``other``, a node in neither reaching both; ``one-way``: what
    ``nodes`` send is lost; ``lossy``: ``amount`` of the packets on every
    link; ``slow``: ``nodes`` handle everything 0.1-1 s late; ``pause``:
    ``nodes`` stopped; ``skew``: their wall clocks ``amount`` seconds off;
    ``crash``: crashed for good (``length`` unused); ``restart``: crashed,
    and started again empty ``length`` seconds later."""

    at: float
    kind: str
    length: float
    nodes: tuple[str, ...] = ()
    other: tuple[str, ...] = ()
    amount: float = 0.0


def draw(
    rng: random.Random, names: list[str], start: float, end: float, replicas: int
) -> list[Fault]:
    """The nemesis's faults from ``start`` to ``end`` (virtual time), drawn
    from ``rng``: every kind, one after another, each lasting 3-15 s, with
    2-8 s of calm between, at most ``replicas`` nodes crashed for good."""
    faults: list[Fault] = []
    t = start
    crashed = 0
    while t < end - 3:
        kind = rng.choice(KINDS)
        drawn = min(rng.uniform(3, 15), end - t)
        fault = Fault(at=t, kind=kind, length=drawn)
        if kind in ("halves", "flap"):
            side = rng.sample(names, k=(len(names) - 1) // 2)
            faults.append(attrs.evolve(fault, nodes=tuple(side)))
        elif kind == "bridge":
            order = rng.sample(names, k=len(names))
            middle = len(order) // 2  # order[middle] is the bridge: nothing cuts it
            left, right = tuple(order[:middle]), tuple(order[middle + 1 :])
            faults.append(attrs.evolve(fault, nodes=left, other=right))
        elif kind == "lossy":
            faults.append(attrs.evolve(fault, amount=rng.uniform(0.1, 0.3)))
        elif kind in ("isolate", "one-way", "slow", "pause"):
            faults.append(attrs.evolve(fault, nodes=(rng.choice(names),)))
        elif kind == "skew":
            victim = rng.choice(names)
            faults.append(attrs.evolve(fault, nodes=(victim,), amount=rng.choice((-SKEW, SKEW))))
        elif kind == "crash" and crashed < replicas:
            crashed += 1
            faults.append(attrs.evolve(fault, nodes=(rng.choice(names),), length=0.0))
        elif kind == "restart":
            victim = rng.choice(names)
            faults.append(attrs.evolve(fault, nodes=(victim,), length=min(drawn, RESTART_AFTER)))
        t += drawn + rng.uniform(2, 8)
    return faults


def play(f: Faults, schedule: Sequence[Fault]) -> None:
    """Schedule ``schedule``'s faults in ``f``, and a heal at ``f.end``. A
    cut first heals the one before: one at a time."""
    for fault in schedule:
        t = fault.at
        if t < f.sim.now:
            raise ValueError(f"a fault at {t:.3f} s, before the run is at {f.sim.now:.3f} s")
        unknown = sorted(set(fault.nodes + fault.other) - set(f.sim.members))
        if unknown:
            raise ValueError(f"no such nodes: {', '.join(unknown)} (they are n0000, n0001...)")
        end = t + fault.length
        nodes = list(fault.nodes)
        kind = fault.kind
        if kind in ("halves", "isolate", "bridge", "one-way"):
            other = list(fault.other) if kind == "bridge" else None
            f.at(t, partial(_cut_live, f, nodes, other, one_way=kind == "one-way"))
            f.at(end, f.heal)
        elif kind == "flap":
            for i in range(int(fault.length // FLAP_EVERY)):
                at = t + FLAP_EVERY * i
                f.at(at, partial(_cut_live, f, nodes) if i % 2 == 0 else f.heal)
            f.at(end, f.heal)
        elif kind == "lossy":
            _lose(f, fault.amount, t, end)
        elif kind == "slow":
            for node in nodes:
                _starve(f, node, t, end)
        elif kind == "pause":
            for node in nodes:
                f.at(t, partial(_pause_live, f, node, fault.length))
        elif kind == "skew":
            for node in nodes:
                f.at(t, partial(f.sim.set_skew, node, fault.amount))
                f.at(end, partial(f.sim.set_skew, node, 0.0))
        elif kind in ("crash", "restart"):
            for node in nodes:
                f.at(t, partial(_crash_live, f, node))
                if kind == "restart":
                    f.at(end, partial(_restart_dead, f, node))
        else:
            raise ValueError(f"unknown kind of fault {kind!r}")
    f.at(f.end, f.heal)


def describe(fault: Fault) -> str:
    """One line: when (virtual time), what, on which nodes, for how long."""
    nodes = ",".join(fault.nodes)
    what = {
        "halves": f"{nodes} cut off from the rest",
        "isolate": f"{nodes} cut off from the rest",
        "bridge": f"{nodes} cut off from {','.join(fault.other)} (the rest reach both)",
        "one-way": f"what {nodes} sends is lost",
        "flap": f"{nodes} cut off and healed every {FLAP_EVERY:g} s",
        "lossy": f"{fault.amount:.0%} of packets lost on every link",
        "slow": f"{nodes} handles everything 0.1-1 s late",
        "pause": f"{nodes} paused",
        "skew": f"{nodes}'s wall clock {fault.amount:+.0f} s off",
        "crash": f"{nodes} crashes for good",
        "restart": f"{nodes} crashes, started again empty after it",
    }[fault.kind]
    length = "" if fault.kind == "crash" else f" for {fault.length:.2f} s"
    return f"{fault.at:8.3f} s  {fault.kind}{length}: {what}"


def schedule_to_json(schedule: Sequence[Fault]) -> str:
    """A schedule as JSON, one fault a line; its floats read back exactly."""
    rows = [
        json.dumps({k: v for k, v in attrs.asdict(fault).items() if v or k in ("at", "length")})
        for fault in schedule
    ]
    return "[\n" + ",\n".join(f"  {row}" for row in rows) + "\n]\n"


def schedule_from_json(text: str) -> list[Fault]:
    """A schedule written by ``schedule_to_json`` (or by hand): a list of
    faults; raises ``ValueError`` for anything else."""
    rows = json.loads(text)
    if not isinstance(rows, list):
        raise ValueError("a schedule is a JSON list of faults")
    out: list[Fault] = []
    for row in rows:
        try:
            fault = Fault(
                at=float(row["at"]),
                kind=str(row["kind"]),
                length=float(row["length"]),
                nodes=tuple(str(n) for n in row.get("nodes", ())),
                other=tuple(str(n) for n in row.get("other", ())),
                amount=float(row.get("amount", 0.0)),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"not a fault: {row!r}") from e
        if fault.kind not in KINDS:
            raise ValueError(f"unknown kind of fault {fault.kind!r} (known: {', '.join(KINDS)})")
        out.append(fault)
    return out


SCENARIOS: Final[dict[str, Scenario]] = {
    "halves": halves,
    "isolate-primary": isolate_primary,
    "isolate-coordinator": isolate_coordinator,
    "staggered": staggered,
    "bridge": bridge,
    "one-way": one_way,
    "flapping": flapping,
    "lossy": lossy,
    "slow-node": slow_node,
    "pause": pause,
    "clock-skew": clock_skew,
    "cascade": cascade,
    "rolling-restart": rolling_restart,
    "crash-during-join": crash_during_join,
    "nemesis": nemesis,
}


# -- a run -------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Second:
    """One second of the timeline."""

    t: int
    live: int
    halted: int
    coordinators: tuple[tuple[str, int], ...]
    epochs: tuple[int, ...]
    ops: dict[str, tuple[int, int]]  # client host -> (ok, failed)
    faults: tuple[str, ...]  # what the cluster simulator noted in this second


@attrs.frozen(kw_only=True)
class Report:
    """A run: its verdict, its timeline, and the timings of its cuts."""

    scenario: str
    seed: int
    verdict: Verdict
    seconds: list[Second]
    acked: int
    reads: int
    settled: bool
    minority_stopped: float | None  # longest, over the cuts: cut -> last write acked there
    majority_resumed: float | None  # longest: cut -> first write acked there to a cut-off slot
    majority_never: int  # cuts after which the majority never wrote a cut-off slot
    lease_bound: float
    detection_bound: float
    converged_after: float | None  # last heal -> copies equal
    diverged_at_end: list[bytes]
    history: list[Op]  # to look into a failure (``explain``)
    notes: list[tuple[float, str]]  # the faults and what the cluster simulator noted
    schedule: tuple[Fault, ...] = ()  # the nemesis's faults (``play``)
    start: float  # virtual time of the timeline's 0 (the faults begin FAULTS_FROM later)

    @property
    def ok(self) -> bool:
        return self.verdict.ok and self.settled


def bounds(config: GossipConfig, nodes: int) -> tuple[float, float]:
    """The minority's bound to stop (lease + heartbeat period: keycafe/cluster/
    lease.py), and the detection bound plus a second (a full round-robin, a
    probe interval, the longest suspicion, and a second for the news)."""
    shortest = suspicion_timeout(config.suspicion_mult, nodes, config.probe_interval)
    lease = Lease(
        node="", probe_interval=config.probe_interval, suspicion_mult=config.suspicion_mult
    )
    lease.set_ring((0, 0), [str(i) for i in range(nodes)], 0.0)
    detection = nodes * config.probe_interval + config.suspicion_max_timeout_mult * shortest + 1.0
    return lease.lease + lease.period, detection + 1.0


def run(
    scenario: str,
    *,
    nodes: int = 5,
    replicas: int = 1,
    seed: int = 1,
    duration: float = 60.0,
    workers: int = 1,
    profile: str = "lan",
    schedule: Sequence[Fault] | None = None,
    schedule_file: str = "FILE.json",
    network: str = "realistic",
    out: Callable[[str], None] = print,
) -> Report:
    """Run one scenario and judge it; ``out`` gets the timeline and verdict.
    ``profile``: the gossip timers, ``lan`` (memberlist's) or ``local`` (5x
    faster, what ``sims.netlab`` runs by default); ``network``: ``NETWORKS``. ``schedule``: the
    nemesis plays these faults instead of drawing its own from ``seed``
    (which still drives the network and the workload); ``schedule_file``:
    where the replay line says they are."""
    if schedule is not None and scenario != "nemesis":
        raise ValueError("only the nemesis plays a given schedule")
    given = schedule is not None
    config = PROFILES[profile]()
    net = NETWORKS[network]
    sim = ClusterSimulator(
        seed=seed,
        gossip=config,
        ring=RingConfig(vnodes=64, replicas=1 + replicas),
        link=net.link,
        lossy_tcp=net.lossy_tcp,
        cpu=net.cpu,
    )
    first = sim.add_node(0)
    for i in range(1, nodes):
        sim.add_node(i, seed=first)
    clocks = random.Random(seed)
    for name in sorted(sim.members):
        if net.drift_ppm:
            sim.set_drift(name, clocks.uniform(-net.drift_ppm, net.drift_ppm))
    if not sim.run_until_true(sim.settled, 120):
        raise RuntimeError("the cluster did not form")
    start = sim.now
    end = start + duration
    rng = random.Random(seed)
    work = Workload(sim, until=end, workers=workers)
    faults = Faults(sim, start + FAULTS_FROM, end - QUIET_TAIL, rng, replicas, work)
    if scenario == "nemesis":
        if schedule is None:
            schedule = draw(rng, sorted(sim.members), faults.start, faults.end, replicas)
        play(faults, schedule)
        n = len(schedule)
        out(f"schedule: {n} fault{'s' * (n != 1)}; virtual time, the timeline's 0 is {start:.3f}")
        for fault in schedule:
            out("  " + describe(fault))
    else:
        SCENARIOS[scenario](faults)
    seconds: list[Second] = []
    done = {h: (0, 0) for h in work.clients}
    noted = len(sim.log)
    converged: float | None = None
    for second in range(int(duration)):
        sim.run_until(start + second + 1)
        now = {h: (c.ok, c.failed) for h, c in work.clients.items()}
        ops = {h: (now[h][0] - done[h][0], now[h][1] - done[h][1]) for h in now}
        done = now
        notes = tuple(text for _, text in sim.log[noted:])
        noted = len(sim.log)
        line = _second(sim, second + 1, ops, notes)
        seconds.append(line)
        out(_line(line))
        healed = max(faults.heals, default=None)
        after_heal = sim.now >= faults.end and healed is not None and converged is None
        if after_heal and healed is not None and not differing(sim, work.keys()):
            converged = sim.now - healed
    work.stop()
    sim.run_until_true(lambda: work.in_flight == 0, 60, step=0.01)
    settled = sim.run_until_true(sim.settled, 60, step=0.05)
    healed = max(faults.heals, default=None)
    if converged is None and healed is not None:
        keys = work.keys()
        if sim.run_until_true(lambda: not differing(sim, keys), 60, step=0.5):
            converged = sim.now - healed
    history = work.history()
    keys = work.keys()
    reads, unread = work.final_reads()
    views = {"read through the cluster": reads, **copies(sim, keys)}
    verdict = check(history, views, span=(start, end))
    verdict = attrs.evolve(verdict, unread=unread)
    acked = sum(1 for op in history if op.kind == "write" and op.outcome == "ok")
    lease_bound, detection_bound = bounds(config, nodes)
    stopped, resumed, never = _cut_timings(faults, work)
    report = Report(
        scenario=scenario,
        seed=seed,
        verdict=verdict,
        seconds=seconds,
        acked=acked,
        reads=len(work.reads),
        settled=settled,
        minority_stopped=stopped,
        majority_resumed=resumed,
        majority_never=never,
        lease_bound=lease_bound,
        detection_bound=detection_bound,
        converged_after=converged,
        diverged_at_end=differing(sim, keys),
        history=history,
        notes=list(sim.log),
        schedule=tuple(schedule or ()),
        start=start,
    )
    out(f"operations: {acked} writes acknowledged, {len(work.reads)} reads")
    out(verdict.summary())
    for text in _timing_lines(report):
        out(text)
    replay = command(
        scenario,
        seed=seed,
        duration=duration,
        nodes=nodes,
        replicas=replicas,
        workers=workers,
        profile=profile,
        network=network,
        schedule=schedule_file if given else None,
    )
    out(f"settled after the run: {'yes' if settled else 'NO'}; replay: {replay}")
    return report


def command(
    scenario: str,
    *,
    seed: int,
    duration: float = 60.0,
    nodes: int = 5,
    replicas: int = 1,
    workers: int = 1,
    profile: str = "lan",
    network: str = "realistic",
    schedule: str | None = None,
) -> str:
    """The command line that replays a run (the options that are not the defaults)."""
    words = ["python -m sims.partition", scenario, f"--seed {seed}"]
    options = [
        ("--duration", f"{duration:g}", "60"),
        ("--nodes", str(nodes), "5"),
        ("--replicas", str(replicas), "1"),
        ("--workers", str(workers), "1"),
        ("--profile", profile, "lan"),
        ("--network", network, "realistic"),
    ]
    words += [f"{name} {value}" for name, value, default in options if value != default]
    if schedule is not None:
        words.append(f"--schedule {schedule}")
    return " ".join(words)


def failures(report: Report) -> dict[str, int]:
    """How many failures of each verdict class (``CLASSES``) a run had."""
    v = report.verdict
    counts = {
        "lost": len(v.lost),
        "resurrected": len(v.resurrected),
        "stale_reads": len(v.stale_reads),
        "phantoms": len(v.phantoms),
        "nonlinear": len(v.nonlinear),
        "diverged": len(v.diverged),
        "unread": len(v.unread),
        "unsettled": 0 if report.settled else 1,
    }
    assert tuple(counts) == CLASSES
    return counts


def explain(report: Report, key: bytes) -> list[str]:
    """Every operation on ``key`` and every note, in time order: what to read
    when the checker names it."""
    rows = [(op.invoked, repr(op)) for op in report.history if op.key == key]
    rows += [(t, f"-- {text}") for t, text in report.notes]
    return [f"{t:9.3f} {text}" for t, text in sorted(rows)]


def _cut_timings(faults: Faults, work: Workload) -> tuple[float | None, float | None, int]:
    """Over the cuts: the longest the cut-off side went on acknowledging
    writes, the longest the other side took to write a slot whose primary
    was cut off, and how many cuts it never did within."""
    stopped: list[float] = []
    resumed: list[float] = []
    never = 0
    writes = [w for _, w in work.writes() if w.acked is not None]
    for cut in faults.cuts:
        end = cut.healed if cut.healed is not None else math.inf
        minority, majority = set(cut.minority), set(cut.majority)
        during = [w for w in writes if w.acked is not None and cut.at <= w.acked < end]
        there = [w.acked for w in during if w.served_by in minority and w.acked is not None]
        stopped.append(max(there, default=cut.at) - cut.at)
        lost_primary = {s for s, p in cut.primaries.items() if p in minority}
        back = [
            w.acked
            for w in during
            if w.served_by in majority and w.acked is not None and key_slot(w.key) in lost_primary
        ]
        if back:
            resumed.append(min(back) - cut.at)
        elif end - cut.at > 0:
            never += 1
    return max(stopped, default=None), max(resumed, default=None), never


def _timing_lines(r: Report) -> list[str]:
    out = []
    if r.minority_stopped is not None:
        out.append(
            f"cut-off side's last acknowledged write: {r.minority_stopped:.2f} s after the cut "
            f"(bound {r.lease_bound:.2f} s)"
        )
    if r.majority_resumed is not None or r.majority_never:
        resumed = "-" if r.majority_resumed is None else f"{r.majority_resumed:.2f} s"
        out.append(
            f"majority side's first write to a cut-off primary's slot: {resumed} after the cut "
            f"(bound {r.detection_bound:.2f} s); cuts it never wrote within: {r.majority_never}"
        )
    if r.converged_after is not None:
        out.append(f"copies equal {r.converged_after:.1f} s after the last heal")
    if r.diverged_at_end:
        out.append(f"copies still differing at the end: {len(r.diverged_at_end)}")
    return out


def _second(
    sim: ClusterSimulator, t: int, ops: dict[str, tuple[int, int]], notes: tuple[str, ...]
) -> Second:
    live = sim.live()
    views = {
        (m.cluster.assessment.coordinator or "-", m.cluster.assessment.term)
        for m in live
        if m.cluster.assessment is not None
    }
    return Second(
        t=t,
        live=len(live),
        halted=sum(1 for m in live if m.state.routing.halted),
        coordinators=tuple(sorted(views)),
        epochs=tuple(sorted({m.cluster.ring.epoch for m in live if m.cluster.ring is not None})),
        ops=ops,
        faults=notes,
    )


def _line(s: Second) -> str:
    coord = " ".join(f"{c}/t{t}" for c, t in s.coordinators)
    ops = " ".join(f"{ok}/{failed}" for ok, failed in s.ops.values())
    text = (
        f"{s.t:4d}s live {s.live} halted {s.halted} coordinator {coord} "
        f"epochs {','.join(map(str, s.epochs)) or '-'} ops ok/failed by host {ops}"
    )
    return text + ("  | " + "; ".join(s.faults) if s.faults else "")


def plot(report: Report, path: str) -> None:
    """Draw the timeline: operations per client host, halted nodes, ring
    epochs and the faults (needs matplotlib: ``pip install -e '.[sims]'``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = report.seconds
    xs = [s.t for s in seconds]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    hosts = list(seconds[0].ops) if seconds else []
    for host in hosts:
        ax1.plot(xs, [s.ops[host][0] for s in seconds], label=f"ok beside {host}")
    ax1.plot(xs, [sum(f for _, f in s.ops.values()) for s in seconds], "k--", label="failed")
    ax1.set_ylabel("operations / s")
    ax1.legend(fontsize="small", ncol=3)
    ax2.step(xs, [s.halted for s in seconds], where="post", label="halted nodes")
    ax2.step(xs, [s.live for s in seconds], where="post", label="live nodes")
    ax2.step(xs, [max(s.epochs, default=0) for s in seconds], where="post", label="ring epoch")
    ax2.set_xlabel("virtual seconds")
    ax2.legend(fontsize="small")
    for s in seconds:
        for note in s.faults:
            if "partition" in note or "heals" in note or "crash" in note or "paused" in note:
                for ax in (ax1, ax2):
                    ax.axvline(s.t, color="grey", alpha=0.3)
    v = report.verdict
    fig.suptitle(
        f"{report.scenario}, seed {report.seed}: {'ok' if report.ok else 'FAILS'} "
        f"({report.acked} writes acknowledged, {len(v.lost)} lost, "
        f"{len(v.stale_reads)} stale reads)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- sweeps ------------------------------------------------------------------------------


def _one(args: tuple[str, int, int, int, float, str, str]) -> dict[str, Any]:
    scenario, seed, nodes, replicas, duration, profile, network = args
    r = run(
        scenario,
        nodes=nodes,
        replicas=replicas,
        seed=seed,
        duration=duration,
        profile=profile,
        network=network,
        out=_quiet,
    )
    return {
        "seed": seed,
        "ok": r.ok,
        "acked": r.acked,
        "reads": r.reads,
        **failures(r),
        "minority_stopped": r.minority_stopped,
        "majority_resumed": r.majority_resumed,
        "converged_after": r.converged_after,
    }


def _quiet(_: str) -> None:
    pass


CLASSES: Final = (
    "lost",
    "resurrected",
    "stale_reads",
    "phantoms",
    "nonlinear",
    "diverged",
    "unread",
    "unsettled",
)


def sweep(
    scenario: str,
    seeds: range,
    *,
    nodes: int = 5,
    replicas: int = 1,
    duration: float = 60.0,
    jobs: int = 1,
    profile: str = "lan",
    network: str = "realistic",
    out: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run ``scenario`` once per seed; print the totals per verdict class."""
    tasks = [(scenario, s, nodes, replicas, duration, profile, network) for s in seeds]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            results = list(pool.map(_one, tasks))
    else:
        results = [_one(t) for t in tasks]
    failed = [r for r in results if not r["ok"]]
    out(f"{scenario}: {len(results)} seeds, {len(failed)} failed")
    acked, reads = sum(r["acked"] for r in results), sum(r["reads"] for r in results)
    out(f"writes acknowledged: {acked}, reads: {reads}")
    for name in CLASSES:
        hit = [r["seed"] for r in results if r[name]]
        total = sum(r[name] for r in results)
        out(f"  {name}: {total} in {len(hit)} seeds" + (f" (seeds {hit[:10]})" if hit else ""))
    for name in ("minority_stopped", "majority_resumed", "converged_after"):
        xs = [r[name] for r in results if r[name] is not None]
        if xs:
            out(
                f"  {name}: p50 {statistics.median(xs):.2f} s, max {max(xs):.2f} s ({len(xs)} runs)"
            )
    return results


SHRINK_SEEDS: Final = 3  # failing seeds ``sweep --shrink`` shrinks by default


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=[*sorted(SCENARIOS), "sweep", "shrink"])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=60.0, help="virtual seconds (>= 30)")
    parser.add_argument("--workers", type=int, default=1, help="writers and readers per node")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the timeline (needs matplotlib)")
    parser.add_argument(
        "--profile", choices=sorted(PROFILES), default="lan", help="gossip timers (default: lan)"
    )
    parser.add_argument(
        "--network",
        choices=sorted(NETWORKS),
        default="realistic",
        help="the simulated network and hosts (default: realistic)",
    )
    parser.add_argument(
        "--schedule",
        metavar="FILE.json",
        help="nemesis, shrink: play this schedule instead of the seed's own",
    )
    parser.add_argument(
        "--of", default="nemesis", choices=sorted(SCENARIOS), help="sweep: scenario"
    )
    parser.add_argument("--seeds", type=int, default=100, help="sweep: how many seeds")
    parser.add_argument("--first", type=int, default=1, help="sweep: the first seed")
    parser.add_argument("--jobs", type=int, default=1, help="sweep: processes")
    parser.add_argument(
        "--shrink",
        nargs="?",
        type=int,
        const=SHRINK_SEEDS,
        default=0,
        metavar="N",
        help=f"sweep: shrink the first N failing seeds' schedules (default {SHRINK_SEEDS}), "
        "each written to nemesis-SEED-shrunk.json",
    )
    parser.add_argument(  # sims.shrink.RUNS
        "--runs", type=int, default=60, help="shrink: the most runs to take (default 60)"
    )
    parser.add_argument(
        "--class", dest="verdict_class", choices=CLASSES, help="shrink: the failure to keep"
    )
    parser.add_argument(
        "--out",
        metavar="FILE.json",
        help="shrink: where to write the shrunk schedule (default nemesis-SEED-shrunk.json)",
    )
    args = parser.parse_args(argv)
    if args.duration < FAULTS_FROM + QUIET_TAIL + 10:
        parser.error("--duration must leave room for the faults: at least 30 s")
    if args.schedule and args.scenario not in ("nemesis", "shrink"):
        parser.error("--schedule is for the nemesis (and shrink)")
    if args.shrink and args.of != "nemesis":
        parser.error("sweep --shrink shrinks nemesis schedules")
    schedule = None
    if args.schedule:
        with open(args.schedule) as f:
            schedule = schedule_from_json(f.read())
    setup = {
        "nodes": args.nodes,
        "replicas": args.replicas,
        "duration": args.duration,
        "profile": args.profile,
        "network": args.network,
    }
    if args.scenario == "sweep":
        seeds = range(args.first, args.first + args.seeds)
        results = sweep(args.of, seeds, jobs=args.jobs, **setup)
        failed = [r["seed"] for r in results if not r["ok"]]
        if args.shrink:
            from sims.shrink import shrink, summary  # it runs this module's nemesis

            for seed in failed[: args.shrink]:
                path = f"nemesis-{seed}-shrunk.json"
                shrunk = shrink(seed, runs=args.runs, path=path, out=_quiet, **setup)
                for line in summary(shrunk) if shrunk else [f"seed {seed}: no longer fails"]:
                    print(line)
        return 0 if not failed else 1
    if args.scenario == "shrink":
        from sims.shrink import shrink

        shrunk = shrink(
            args.seed,
            workers=args.workers,
            schedule=schedule,
            verdict_class=args.verdict_class,
            runs=args.runs,
            path=args.out or f"nemesis-{args.seed}-shrunk.json",
            **setup,
        )
        return 0 if shrunk is None else 1
    report = run(
        args.scenario,
        seed=args.seed,
        workers=args.workers,
        schedule=schedule,
        schedule_file=args.schedule or "FILE.json",
        **setup,
    )
    if args.plot:
        plot(report, args.plot)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
