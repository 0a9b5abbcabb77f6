"""Whole nodes in one process on one virtual clock: the cluster simulator.

Each simulated node runs what a real node runs above its sockets: the gossip
core, the cluster layer (ring keeper, coordinator, hand-off: ``ClusterNode``),
the store and the command layer (``Session``). The gossip simulator
(``keycafe.gossip.simulator``) carries datagrams and gossip streams, with its
partitions, loss, pauses and crashes; this adds the peer links (one ordered
stream per pair and direction, with a delay; a link that breaks, or a peer
that crashed or is cut off, loses what was in flight and both ends are told)
and clients that issue commands to any node and follow ``MOVED``,
``TRYAGAIN`` and ``CLUSTERDOWN`` as a real Redis Cluster client does.

Same seed, same run: everything random comes from the gossip simulator's
seeded generator, and ``trace_digest`` covers the frames too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any, Final

import attrs

from keycafe.cluster import frames
from keycafe.cluster.node import ClusterNode, owners_cache
from keycafe.cluster.ring import RingConfig, without
from keycafe.cluster.ringcast import RingKeeper
from keycafe.cluster.slot_table import NodeAddr, SlotTable
from keycafe.gossip.config import GossipConfig
from keycafe.gossip.simulator import Link, SimNode, Simulator, node_name
from keycafe.server.routing import Routing
from keycafe.server.session import Session
from keycafe.server.state import ServerConfig, ServerState
from keycafe.store.keyslot import key_slot

WALL0: Final = 1_700_000_000_000  # the virtual wall clock's unix ms at time 0
CONNECT_TIMEOUT: Final = 1.0  # a frame to a peer that cannot be reached fails after this


@attrs.define(eq=False)
class Member:
    """A whole simulated node."""

    sim: SimNode
    cluster: ClusterNode
    state: ServerState
    session: Session
    timer_at: float | None = None
    timer_armed: int = 0  # wake-ups armed so far: the last one is the one that counts
    routing_seen: int = 0
    ring_seen: tuple[int, int] | None = None
    events_seen: int = 0
    crashed_at: float | None = None
    left_at: float | None = None


@attrs.define(eq=False)
class _Reply:
    """A client's reply held until its writes are durable."""

    send: Callable[[], None]
    lose: Callable[[], None]


@attrs.define(eq=False)
class _Conn:
    """One direction of a peer link."""

    generation: int = 0
    last_arrival: float = 0.0
    failing: bool = False  # the sender is yet to be told this connection broke


class ClusterSimulator:
    """Whole nodes over the gossip simulator's network."""

    def __init__(
        self,
        *,
        seed: int,
        gossip: GossipConfig | None = None,
        ring: RingConfig | None = None,
        link: Link | None = None,
        lossy_tcp: bool = False,
        cpu: tuple[float, float] | None = None,
    ) -> None:
        self.net = Simulator(
            seed=seed, config=gossip or GossipConfig.lan(), link=link, lossy_tcp=lossy_tcp
        )
        # CPU seconds each node spends per event and per byte (SimNode.cpu),
        # for every process started, restarts included.
        self.cpu = cpu
        self.rng = self.net.rng
        # Slot tables are a pure function of the member set: one cache for all.
        self.owners = owners_cache(ring or RingConfig(), size=64)
        self.members: dict[str, Member] = {}
        self._conns: dict[tuple[str, str], _Conn] = {}
        self._boots = 0  # processes started so far
        self.frames_sent = 0
        self.frames_lost = 0
        # (term, epoch) -> (members, pending) as each node adopted it.
        # ring version: (members, pending, down) as first adopted
        self.rings: dict[tuple[int, int], tuple[tuple[str, ...], ...]] = {}
        self.adopted: dict[tuple[int, int], set[str]] = {}  # ring version: who adopted it
        self.ring_conflicts: list[str] = []
        self.owned_by: dict[str, set[int]] = {}  # slots each node was ever primary of
        self.log: list[tuple[float, str]] = []
        self.skew: dict[str, float] = {}  # node -> seconds its wall clock is off
        self.drift: dict[str, tuple[float, float]] = {}  # node -> (rate, since when)
        # The share of TCP segments lost on peer links (each costs a
        # retransmission timeout); the gossip links' own ``loss`` is UDP's.
        self.tcp_loss = 0.0
        # Pairs whose peer links are cut while their datagrams get through
        # (``cut_links``): a firewall closing the TCP port, a full conntrack table.
        self.links_cut: set[tuple[str, str]] = set()
        self.net.after_flush.append(self._after_gossip)

    @property
    def now(self) -> float:
        return self.net.now

    def wall_ms(self, at: float | None = None, node: str | None = None) -> int:
        """The wall clock in unix ms, as ``node`` reads it (``skew``, ``drift``)."""
        t = self.now if at is None else at
        if node is not None and self.skew:
            t += self.skew.get(node, 0.0)
        if node is not None and self.drift:
            rate, since = self.drift.get(node, (0.0, 0.0))
            t += rate * (t - since)
        return WALL0 + int(t * 1000)

    def set_drift(self, node: str, ppm: float) -> None:
        """``node``'s wall clock runs ``ppm`` millionths fast (slow, if
        negative) from now on, until NTP steps it (``set_skew``)."""
        self.drift[node] = (ppm * 1e-6, self.now)
        self._note(f"{node}'s wall clock drifts {ppm:+.0f} ppm")

    def set_skew(self, node: str, seconds: float) -> None:
        """``node``'s wall clock is ``seconds`` off from now on (a clock set
        wrong, or stepped by NTP). Its monotonic clock, which the timers use,
        is not: only stamps and expiry read the wall clock."""
        self.skew[node] = seconds
        if node in self.drift:  # stepped: its drift starts over from here
            self.drift[node] = (self.drift[node][0], self.now)
        self._note(f"{node}'s wall clock is {seconds:+.0f} s off")

    # -- building ---------------------------------------------------------------------------

    def add_node(self, i: int, *, seed: Member | None = None) -> Member:
        """Start node ``i``: a cluster of one, or joining through ``seed``."""
        return self._start(self.net.add_node(i), seed)

    def restart(self, name: str, seed: str) -> Member:
        """Start a crashed node again as a new process with the same name: an
        empty store, a new boot id, joining through ``seed``."""
        old = self.members[name]
        assert not old.sim.up, "restart a crashed node"
        i = int(name.lstrip("n"))
        sim = self.net.restart(
            i, self.members[seed].sim, incarnation=old.sim.core.me.incarnation + 1
        )
        for key in list(self._conns):
            if name in key:
                self._conns[key].generation += 1
        return self._start(sim, self.members[seed], joining=False)

    def _start(self, sim: SimNode, seed: Member | None, *, joining: bool = True) -> Member:
        name = sim.name
        sim.cpu = self.cpu
        self._boots += 1
        me = NodeAddr(node_id=name, host=sim.addr[0], port=9814, cluster_port=sim.addr[1])
        state = ServerState.create(ServerConfig(me=me), self.wall_ms(node=name))
        keeper = RingKeeper.attach(sim.core)
        cluster = ClusterNode(
            core=sim.core,
            keeper=keeper,
            me=me,
            store=state.store,
            owners=self.owners,
            joined=seed is None,
            boot=f"{name}.{self._boots}",  # new for each process started
        )
        member = Member(sim=sim, cluster=cluster, state=state, session=Session.open(state))
        self.members[name] = member
        state.store.on_dirty = lambda: self._arm(member)
        if seed is not None:
            state.routing = Routing.create(SlotTable.unassigned(me))
            if joining:
                self.net.join(sim, seed.sim)
        self._note(f"{name} starts" + (f", joining through {seed.sim.name}" if seed else ""))
        self._drive(member, lambda: cluster.after_gossip(True, self.now))
        return member

    def by_client_addr(self, host: str) -> Member | None:
        for m in self.members.values():
            if m.sim.addr[0] == host:
                return m
        return None

    # -- faults -----------------------------------------------------------------------------

    def crash(self, name: str) -> None:
        m = self.members[name]
        self.net.crash(name)
        m.crashed_at = self.now
        m.timer_at = None
        self._note(f"{name} crashes")
        for waiting in m.cluster.replication.waiting():
            m.cluster.replication.cancel(waiting)
            assert isinstance(waiting, _Reply)
            waiting.lose()  # the connection resets: those writes were never acknowledged
        for key in list(self._conns):
            if name in key:
                self._break(*key)

    def leave(self, name: str) -> bool:
        """Start a graceful leave; the node stops once it has handed over."""
        m = self.members[name]
        self._note(f"{name} asks to leave")
        started = self._drive(m, lambda: m.cluster.leave(self.now))
        if not started:
            self._stop(m)
        return bool(started)

    def break_link(self, a: str, b: str) -> None:
        """Break the peer links between ``a`` and ``b`` (both directions)."""
        self._note(f"link {a}-{b} breaks")
        self._break(a, b)
        self._break(b, a)

    def cut_links(self, a: str, b: str, *, restore: bool = False) -> None:
        """Cut the peer links between ``a`` and ``b`` and keep them cut
        (``restore``: let them connect again); gossip is left alone."""
        self._note(f"links {a}-{b} {'restored' if restore else 'cut'}")
        if restore:
            self.links_cut -= {(a, b), (b, a)}
            return
        self.links_cut |= {(a, b), (b, a)}
        self._break(a, b)
        self._break(b, a)

    def partition(self, side_a: list[str], side_b: list[str], *, one_way: bool = False) -> None:
        """Cut the network between the sides (``one_way``: only what
        ``side_a`` sends to ``side_b``). A peer link is a TCP connection,
        which needs both ways: either cut breaks it."""
        self.net.partition(side_a, side_b, one_way=one_way)
        self._note(f"partition {side_a} {'->' if one_way else '|'} {side_b}")
        for a in side_a:
            for b in side_b:
                self._break(a, b)
                self._break(b, a)

    def heal(self, pairs: list[tuple[str, str]] | None = None) -> None:
        """Heal every cut, or only those between the given pairs (both ways)."""
        if pairs is None:
            self.net.heal()
            self._note("partition heals")
            return
        for a, b in pairs:
            self.net.blocked.discard((a, b))
            self.net.blocked.discard((b, a))
        self._note(f"heals {', '.join(f'{a}-{b}' for a, b in pairs)}")

    # -- running ----------------------------------------------------------------------------

    def run_until(self, t: float) -> None:
        self.net.run_until(t)

    def run_for(self, seconds: float) -> None:
        self.net.run_until(self.now + seconds)

    def run_until_true(
        self, predicate: Callable[[], bool], limit: float, step: float = 0.1
    ) -> bool:
        return self.net.run_until_true(predicate, limit, step)

    def live(self) -> list[Member]:
        return [m for m in self.members.values() if m.sim.up]

    def settled(self) -> bool:
        """Every live node holds the same ring, with no change pending, whose
        members are exactly the live nodes, and nothing is moving."""
        live = self.live()
        if not live:
            return False
        rings = {m.cluster.ring for m in live}
        if len(rings) != 1:
            return False
        ring = rings.pop()
        if ring is None or ring.pending or set(ring.members) != {m.sim.name for m in live}:
            return False
        return all(
            m.cluster.routing is not None and not any(m.cluster.routing.moving) for m in live
        )

    @property
    def trace_digest(self) -> str:
        return self.net.trace_digest

    # -- internals --------------------------------------------------------------------------

    def _note(self, text: str) -> None:
        self.log.append((self.now, text))
        self.net._log(f"{self.now:.6f} {text}")

    def _after_gossip(self, sim: SimNode, now: float) -> None:
        m = self.members.get(sim.name)
        if m is None or m.cluster.core is not sim.core:
            return
        changed = len(sim.events) != m.events_seen
        m.events_seen = len(sim.events)
        if not m.cluster.joined and len(sim.core.members) > 1:
            m.cluster.joined = True
        self._settle(m, lambda: m.cluster.after_gossip(changed, now))

    def _drive(self, m: Member, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on ``m``'s cluster layer, then send what it queued."""
        result = self._settle(m, fn)
        core = m.sim.core
        for data, dst in core.datagrams_to_send(self.now):
            self.net._send_datagram(m.sim, data, dst)
        while (job := core.next_stream_job()) is not None:
            self.net._start_stream(m.sim, job)
        self.net._reschedule(m.sim)
        return result

    def _settle(self, m: Member, fn: Callable[[], Any]) -> Any:
        result = fn()
        cluster = m.cluster
        m.state.lease_until = cluster.lease_until
        if cluster.routing_version != m.routing_seen and cluster.routing is not None:
            m.routing_seen = cluster.routing_version
            r = cluster.routing
            m.state.routing = Routing(table=r.table, moving=r.moving, halted=cluster.halted)
        # Every ring adopted is checked, a proposal too (it changes no routing).
        if cluster.ring is not None and cluster.ring.version != m.ring_seen:
            m.ring_seen = cluster.ring.version
            self._record_ring(m)
        for out in cluster.frames_to_send(self.now, limit=1 << 30):
            self._send_frame(m, out.peer, out.kind, out.body)
        if cluster.left and m.left_at is None:
            self._stop(m)
        self._release(m)
        self._arm(m)
        return result

    def _release(self, m: Member) -> None:
        """Carry out the core's verdicts on the replies it releases: sent, or
        (a write given up) failed."""
        for reply, ok in m.cluster.replication.released():
            assert isinstance(reply, _Reply)
            (reply.send if ok else reply.lose)()

    def _record_ring(self, m: Member) -> None:
        ring = m.cluster.ring
        if ring is None:
            return
        self.adopted.setdefault(ring.version, set()).add(m.sim.name)
        held = (ring.members, ring.pending, ring.down)
        seen = self.rings.setdefault(ring.version, held)
        if seen != held:
            self.ring_conflicts.append(f"{m.sim.name}: {ring.version} is {ring} but was {seen}")
        name = m.sim.name
        for members, down in ((ring.members, ring.down), (ring.pending, ())):
            if name in members and name not in down:
                owners = without(self.owners(tuple(sorted(members))), set(down))
                mine = self.owned_by.setdefault(name, set())
                mine.update(s for s, o in enumerate(owners) if o and o[0] == name)

    def _stop(self, m: Member) -> None:
        m.left_at = self.now
        self._note(f"{m.sim.name} has handed over and leaves")
        core = m.sim.core
        core.leave(self.now)
        for data, dst in core.datagrams_to_send(self.now):
            self.net._send_datagram(m.sim, data, dst)
        # The process exits a moment later.
        self.net.call_at(self.now + 0.2, m.sim, lambda at: self._exit(m))

    def _exit(self, m: Member) -> None:
        self.net.crash(m.sim.name)
        for key in list(self._conns):
            if m.sim.name in key:
                self._break(*key)

    def _arm(self, m: Member) -> None:
        t = m.cluster.get_timer()
        if t is None or not m.sim.up:
            return
        t = max(t, self.now)
        if m.timer_at is not None and self.now < m.timer_at <= t:
            return  # an earlier wake-up is on its way
        m.timer_at = t
        m.timer_armed += 1
        armed = m.timer_armed
        self.net.call_at(t, m.sim, lambda at: self._timer(m, armed, at))

    def _timer(self, m: Member, armed: int, at: float) -> None:
        # Not by time: a wake-up handled late (the node was paused or busy)
        # runs at a later ``at`` than it was armed for, and must still run.
        if m.timer_armed != armed:
            return  # another wake-up replaced this one
        m.timer_at = None
        self._drive(m, lambda: m.cluster.handle_timer(at))

    # -- peer links -------------------------------------------------------------------------

    def _conn(self, src: str, dst: str) -> _Conn:
        conn = self._conns.get((src, dst))
        if conn is None:
            conn = self._conns[(src, dst)] = _Conn()
        return conn

    def _break(self, src: str, dst: str) -> None:
        """Whatever is in flight from ``src`` to ``dst`` is lost; ``src`` learns
        of it when its connection fails."""
        conn = self._conn(src, dst)
        conn.generation += 1
        sender = self.members.get(src)
        if sender is not None and sender.sim.up and not conn.failing:
            # One failure per connection: frames sent before the sender hears
            # of it are lost with it, as on a real socket.
            conn.failing = True
            self.net.call_at(
                self.now + CONNECT_TIMEOUT, sender.sim, lambda at: self._broken(sender, dst, at)
            )

    def _broken(self, m: Member, peer: str, at: float) -> None:
        self._conn(m.sim.name, peer).failing = False
        self._drive(m, lambda: m.cluster.link_broken(peer, at))

    def _send_frame(self, m: Member, peer: str, kind: int, body: Any) -> None:
        src = m.sim.name
        dst = self.members.get(peer)
        self.frames_sent += 1
        blocked = self.net.blocked
        cut = (src, peer) in blocked or (peer, src) in blocked or (src, peer) in self.links_cut
        if dst is None or not dst.sim.up or cut:
            self.frames_lost += 1
            self._break(src, peer)
            return
        data = frames.encode_frame(kind, body)
        conn = self._conn(src, peer)
        net = self.net
        link = net.links.get((src, peer), net.link)
        delay = net.latency(link)
        # TCP resends a lost segment after its retransmission timeout (at
        # least 200 ms on Linux, doubling each time: RFC 6298).
        loss = self.tcp_loss or (link.loss if net.lossy_tcp else 0.0)
        resent = net.tcp_delay(len(data), loss)
        if resent is None:
            # Retransmitted this often, the connection is as good as dead.
            self.frames_lost += 1
            self._break(src, peer)
            return
        delay += resent + net.sending(src, peer, link, len(data))
        delay += net._lag(dst.sim)  # a starved node reads its socket late
        # One TCP stream per direction: in order, whatever the jitter.
        arrival = max(self.now + delay, conn.last_arrival)
        conn.last_arrival = arrival
        generation = conn.generation
        self.net.call_at(
            arrival, dst.sim, lambda at: self._deliver(m, dst, generation, data, at), len(data)
        )

    def _deliver(self, src: Member, dst: Member, generation: int, data: bytes, at: float) -> None:
        if self._conn(src.sim.name, dst.sim.name).generation != generation:
            self.frames_lost += 1
            return  # the connection it travelled on broke
        self.net._log_bytes(data)
        frame = frames.decode_payload_untrusted(data[frames.HEADER.size :])
        self._drive(
            dst,
            lambda: dst.cluster.receive_frame(
                src.sim.name, frame, at, self.wall_ms(at, dst.sim.name)
            ),
        )


@attrs.define(eq=False)
class Write:
    key: bytes
    value: bytes
    issued: float
    acked: float | None = None
    failed: bool = False  # gave up: it may or may not have happened
    served_by: str = ""


@attrs.define(eq=False)
class _Op:
    args: list[bytes]
    done: Callable[[bytes | None, str], None]
    started: float
    attempts: int = 0
    target: str | None = None
    finished: bool = False
    downs: int = 0  # CLUSTERDOWN replies so far
    reached: int = 0  # the last attempt a node carried out
    # An attempt was carried out and never answered (timed out, or its
    # connection was reset): whatever error ends the operation, it may
    # have happened.
    doubtful: bool = False


class SimClient:
    """A Redis Cluster client on the simulated network: it keeps a slot map,
    follows MOVED at once, waits and retries on TRYAGAIN, CLUSTERDOWN (after
    forgetting the slot's node, as redis-py refreshes its map) and connection
    failures, and gives up after ``max_attempts`` or ``give_up_after`` seconds.

    ``beside``: the node whose host the client runs on. Such a client reaches
    a node only if the network between their hosts is not cut (a partition
    puts it on its node's side); a node it cannot reach, or that does not
    answer (cut off, paused), costs it ``timeout`` seconds, after which it
    tries again elsewhere. Without ``beside`` it reaches every node whatever
    the partitions (and, without ``timeout``, waits for a paused one)."""

    RETRY: Final = 0.05  # seconds before retrying TRYAGAIN / CLUSTERDOWN
    DELAY: Final = 0.0005  # one way, client <-> node
    REFUSED: Final = 0.1  # seconds before trying again after a connection refused or reset
    # A client beside a node gives CLUSTERDOWN up after this many retries,
    # this far apart (redis-py's cluster_error_retry_attempts, and its pause).
    DOWN_RETRIES: Final = 3
    DOWN_PAUSE: Final = 0.25

    def __init__(
        self,
        sim: ClusterSimulator,
        *,
        max_attempts: int = 40,
        beside: str | None = None,
        timeout: float | None = None,
        give_up_after: float = math.inf,
    ) -> None:
        self.sim = sim
        self.max_attempts = max_attempts
        self.beside = beside
        if beside is not None and timeout is None:
            timeout = 2.0  # a client across a cut must stop waiting some time
        self.timeout = timeout
        self.give_up_after = give_up_after
        self.slots: dict[int, str] = {}
        # A client beside a node keeps the slot table of the last node it
        # asked (CLUSTER SLOTS), as redis-py does, and asks again after a
        # timeout, a refused connection or CLUSTERDOWN (``_forget``).
        self.table: tuple[tuple[str, ...], ...] | None = None
        self.table_down: frozenset[str] = frozenset()  # members it lists as down
        self.writes: list[Write] = []
        self.ok = 0
        self.failed = 0
        self.timeouts = 0
        self.per_second: dict[int, list[int]] = {}  # second -> [ok, failed]
        self.stopped = False  # writers started by run_writer issue no more writes
        self.in_flight = 0

    def execute(self, args: list[bytes], done: Callable[[bytes | None, str], None]) -> None:
        """Run ``args``; ``done(reply, node)`` at the end. ``reply`` is None
        when the outcome is unknown: given up, or an error after an earlier
        attempt that a node carried out and never answered (a DEL whose reply
        was lost, then CLUSTERDOWN on a retry, may still have deleted)."""
        self.in_flight += 1
        self._attempt(_Op(args=args, done=done, started=self.sim.now))

    def set(self, key: bytes, value: bytes, then: Callable[[Write], None] | None = None) -> Write:
        """SET ``key`` (recorded in ``writes``); ``then(write)`` once it is
        acknowledged or given up."""
        w = Write(key=key, value=value, issued=self.sim.now)
        self.writes.append(w)

        def done(reply: bytes | None, node: str) -> None:
            if reply == b"+OK\r\n":
                w.acked, w.served_by = self.sim.now, node
            else:
                w.failed = True
            if then is not None:
                then(w)

        self.execute([b"SET", key, value], done)
        return w

    def reaches(self, name: str) -> bool:
        """Whether the network lets this client talk to node ``name``."""
        at = self.beside
        if at is None or at == name:
            return True
        blocked = self.sim.net.blocked
        return (at, name) not in blocked and (name, at) not in blocked

    def _pick(self, slot: int) -> Member | None:
        name = self.slots.get(slot)
        if name is None and self.table is not None:
            # CLUSTER SLOTS names a slot's first owner not down.
            name = next((o for o in self.table[slot] if o not in self.table_down), None)
        if name is not None:
            m = self.sim.members.get(name)
            if m is not None:
                return m
        if self.beside is None:
            live = [m for m in self.sim.members.values() if m.sim.up]
        else:
            # A client knows its startup nodes, not who is alive.
            live = [m for m in self.sim.members.values() if m.left_at is None]
        return live[self.sim.rng.randrange(len(live))] if live else None

    def _uncovered(self, slot: int) -> bool:
        """The table this client holds names no live owner of ``slot``."""
        if self.table is None or slot in self.slots:
            return False
        return all(o in self.table_down for o in self.table[slot])

    def _later(self, seconds: float, fn: Callable[[], None]) -> None:
        self.sim.net.call_at(self.sim.now + seconds, None, lambda at: fn())

    def _attempt(self, op: _Op) -> None:
        if op.finished:
            return
        op.attempts += 1
        if op.attempts > self.max_attempts or self.sim.now - op.started > self.give_up_after:
            self._finish(op, None, "")
            return
        slot = key_slot(op.args[1]) if len(op.args) > 1 else 0
        if op.target is None and self._uncovered(slot):
            # Its table serves the slot nowhere (every copy is down): as
            # redis-py, ask again for the table, then give the slot up.
            op.downs += 1
            if op.downs > self.DOWN_RETRIES:
                self._finish(op, b"-CLUSTERDOWN Hash slot not served\r\n", "")
                return
            self._forget(slot)
            self._later(self.DOWN_PAUSE, partial(self._attempt, op))
            return
        m = self._pick(slot) if op.target is None else self.sim.members.get(op.target)
        op.target = None
        if m is None:
            self._later(self.RETRY, partial(self._attempt, op))
            return
        attempt = op.attempts
        if self.beside is not None and not self.reaches(m.sim.name):
            # The connection hangs: nothing reaches the node.
            self._later(self.timeout or 1.0, partial(self._timed_out, op, attempt, slot))
            return
        if self.timeout is not None:
            self._later(self.timeout, partial(self._timed_out, op, attempt, slot))
        if self.beside is None:
            self._later(self.DELAY, partial(self._arrive, op, attempt, m, slot))
        elif not m.sim.up:
            self._later(2 * self.DELAY, partial(self._refused, op, attempt, slot))
        else:
            # Bound to the node: handled late if it is paused, never if it crashes.
            sim = m.sim
            self.sim.net.call_at(
                self.sim.now + self.DELAY, sim, lambda at: self._arrive(op, attempt, m, slot)
            )

    def _forget(self, slot: int) -> None:
        """The node ``slot`` went to failed us: forget it, and (beside a
        node) take the slot table of a node this client reaches that answers."""
        self.slots.pop(slot, None)
        if self.beside is None:
            return
        now = self.sim.now
        asked = [
            m
            for m in self.sim.members.values()
            if m.sim.up and m.sim.paused_until <= now and self.reaches(m.sim.name)
        ]
        if asked:
            m = asked[self.sim.rng.randrange(len(asked))]
            table = m.state.routing.table
            self.table, self.table_down = table.owners, table.down
            self.slots.clear()

    def _timed_out(self, op: _Op, attempt: int, slot: int) -> None:
        if op.finished or op.attempts != attempt:
            return  # answered, or tried again already
        if op.reached == attempt:
            op.doubtful = True
        self.timeouts += 1
        self._forget(slot)
        self._attempt(op)

    def _refused(self, op: _Op, attempt: int, slot: int) -> None:
        if op.finished or op.attempts != attempt:
            return
        self._forget(slot)
        self._later(self.REFUSED, partial(self._attempt, op))

    def _arrive(self, op: _Op, attempt: int, m: Member, slot: int) -> None:
        if self.beside is None and (not m.sim.up or m.sim.paused_until > self.sim.now):
            # Connection refused or no answer: try elsewhere after a timeout.
            self.slots.pop(slot, None)
            wait = 0.5 if not m.sim.up else m.sim.paused_until - self.sim.now
            self._later(wait, partial(self._attempt, op))
            return
        m.state.now_ms = self.sim.wall_ms(node=m.sim.name)
        m.state.clock = self.sim.now
        before = m.cluster.written
        reply = m.session.execute(op.args)
        op.reached = attempt

        def send() -> None:
            if self.reaches(m.sim.name):  # else lost on the way: the client times out
                self._later(self.DELAY, lambda: self._reply(op, attempt, m, slot, reply))

        written = m.cluster.written
        rep = m.cluster.replication
        read, m.session.read_after = m.session.read_after, 0
        if read <= rep.settled or read <= rep.settle():
            read = 0
        if written == before and not read:
            send()
            return

        # A write to a replicated slot: answered once every in-sync replica
        # holds it (a crash first resets the connection: retried elsewhere).
        def lose() -> None:
            op.doubtful = True
            if self.beside is None:
                self.slots.pop(slot, None)
                self._later(0.5, partial(self._attempt, op))
            elif self.reaches(m.sim.name):
                self._refused(op, attempt, slot)

        if written == before:
            rep.wait(_Reply(send=send, lose=lose), 0, 0, read)
        else:
            rep.wait(_Reply(send=send, lose=lose), before + 1, written, read)
        self.sim._settle(m, lambda: None)  # the replication frames go out now

    def _reply(self, op: _Op, attempt: int, m: Member, slot: int, reply: bytes) -> None:
        if op.finished or op.attempts != attempt:
            return  # this attempt timed out: the client no longer listens
        if reply.startswith(b"-MOVED "):
            host = reply.split()[2].rsplit(b":", 1)[0].decode()
            target = self.sim.by_client_addr(host)
            if target is not None:
                self.slots[slot] = target.sim.name
                op.target = target.sim.name
            self._attempt(op)
        elif reply.startswith(b"-TRYAGAIN"):
            self._later(self.RETRY, partial(self._attempt, op))
        elif reply.startswith(b"-CLUSTERDOWN"):
            self._forget(slot)  # redis-py reinitialises its slot map
            op.downs += 1
            if self.beside is not None and op.downs > self.DOWN_RETRIES:
                self._finish(op, reply, m.sim.name)  # the error reaches the caller
                return
            self._later(self.DOWN_PAUSE if self.beside else self.RETRY, partial(self._attempt, op))
        else:
            self.slots[slot] = m.sim.name
            self._finish(op, reply, m.sim.name)

    def _finish(self, op: _Op, reply: bytes | None, node: str) -> None:
        op.finished = True
        self.in_flight -= 1
        ok = reply is not None and not reply.startswith(b"-")
        if not ok and op.doubtful:
            reply = None  # it may have happened: no definite answer
        second = self.per_second.setdefault(int(self.sim.now), [0, 0])
        second[0 if ok else 1] += 1
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        op.done(reply, node)


def run_writer(
    sim: ClusterSimulator,
    client: SimClient,
    *,
    until: float,
    keys: int = 2000,
    period: float = 0.01,
    concurrency: int = 4,
) -> None:
    """``concurrency`` writers, each a loop of SETs (one outstanding at a time,
    ``period`` apart) of keys drawn from ``keys``, each value unique, until
    ``until``."""
    counter = iter(range(1 << 62))

    def loop(writer: int) -> None:
        if sim.now >= until or client.stopped:
            return
        key = b"key:%d" % sim.rng.randrange(keys)
        value = b"%d:%d" % (writer, next(counter))
        client.set(
            key, value, lambda w: sim.net.call_at(sim.now + period, None, lambda at: loop(writer))
        )

    for i in range(concurrency):
        sim.net.call_at(sim.now + i * period / concurrency, None, partial(_start, loop, i))


def _start(loop: Callable[[int], None], writer: int, at: float) -> None:
    loop(writer)


@attrs.frozen(kw_only=True)
class Verdict:
    writes_acked: int
    writes_failed: int
    lost: list[str]  # acknowledged writes not readable, not excused by a crash
    excused: int  # acknowledged writes to slots a crashed node owned
    ring_conflicts: list[str]
    settled_after: float | None  # virtual seconds from the last change to settled

    @property
    def ok(self) -> bool:
        return not self.lost and not self.ring_conflicts and self.settled_after is not None


def check(
    sim: ClusterSimulator,
    client: SimClient,
    *,
    last_change: float,
    settle_limit: float = 60.0,
    excuse_crashes: bool = True,
) -> Verdict:
    """Stop the writers, let the cluster settle, read every written key back,
    and judge. Without replicas a crash takes its slots' writes with it, and
    those are excused; with them (``excuse_crashes=False``) nothing is."""
    client.stopped = True
    sim.run_until_true(lambda: client.in_flight == 0, 60.0, step=0.01)
    settled = sim.run_until_true(sim.settled, settle_limit, step=0.05)
    settled_after = sim.now - last_change if settled else None
    crashed = [m.sim.name for m in sim.members.values() if m.crashed_at is not None]
    excused_slots: set[int] = set()
    for name in crashed if excuse_crashes else ():
        excused_slots |= sim.owned_by.get(name, set())
    latest: dict[bytes, list[Write]] = {}
    for w in client.writes:
        latest.setdefault(w.key, []).append(w)
    reads: dict[bytes, bytes | None] = {}
    for key in latest:

        def got(reply: bytes | None, node: str, key: bytes = key) -> None:
            reads[key] = reply

        client.execute([b"GET", key], got)
    sim.run_until_true(lambda: len(reads) == len(latest), 30.0, step=0.01)
    lost: list[str] = []
    excused = 0
    for key, writes in latest.items():
        acked = [w for w in writes if w.acked is not None]
        if not acked:
            continue
        last = max(acked, key=lambda w: w.acked or 0.0)
        # An acknowledged write is superseded only by one issued after its
        # acknowledgement; writes that overlapped in time may land in either
        # order (last writer wins by the stamp each got where it was served).
        # A write never acknowledged may have happened, at any time.
        newest = max(w.issued for w in acked)
        allowed = {w.value for w in acked if (w.acked or 0.0) >= newest}
        allowed |= {w.value for w in writes if w.acked is None}
        reply = reads.get(key)
        value = bulk_value(reply)
        if value in allowed:
            continue
        if key_slot(key) in excused_slots:
            excused += 1
            continue
        lost.append(
            f"{key!r}: acked {last.value!r} at {last.acked:.3f} by {last.served_by}, read {reply!r}"
        )
    return Verdict(
        writes_acked=sum(1 for w in client.writes if w.acked is not None),
        writes_failed=sum(1 for w in client.writes if w.failed),
        lost=lost,
        excused=excused,
        ring_conflicts=list(sim.ring_conflicts),
        settled_after=settled_after,
    )


def bulk_value(reply: bytes | None) -> bytes | None:
    """A GET reply's value; None for nil, an error or no reply."""
    if reply is None or not reply.startswith(b"$") or reply.startswith(b"$-1"):
        return None
    header, _, rest = reply.partition(b"\r\n")
    return rest[: int(header[1:])]


__all__ = [
    "ClusterSimulator",
    "Member",
    "SimClient",
    "Verdict",
    "bulk_value",
    "check",
    "node_name",
    "run_writer",
]
