"""A deterministic cluster simulator: many gossip cores, one process, virtual time.

Everything random comes from one seeded ``random.Random``, events are ordered
by (time, sequence number), and nothing reads a real clock, so the same seed
replays the same run exactly (``Simulator.trace_digest``). The network models
per-link loss, delay and jitter (which also reorders), a latency distribution
with a tail (``Link.spread``), bandwidth (``Link.bandwidth``: a path sends one
thing at a time, so a large transfer delays what follows it), duplication,
symmetric and one-way partitions, crashed nodes, "starved" nodes whose
packets and timers are handled late, paused processes, and nodes that spend
CPU time on each event (``SimNode.cpu``: a busy node falls behind). Stream
jobs (TCP: push-pull, fallback pings) are delivered reliably unless a
partition or a crash is in the way, when they fail after
``stream_timeout``; with ``lossy_tcp`` the path's loss hits them too: a lost
SYN is sent again after 1 s, doubling, a lost segment after the
retransmission timeout (200 ms, doubling), and a segment lost ``RETRIES``
times in a row resets the connection (``tcp_delay``).

The tests and the ``sims/`` scripts share it.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from collections.abc import Callable, Iterable
from typing import Any, Final

import attrs

from keycafe.gossip.config import GossipConfig
from keycafe.gossip.core import EventKind, Gossip, Member, MemberEvent, StreamJob
from keycafe.gossip.delegate import Delegate
from keycafe.gossip.messages import Address, MemberInfo, State
from keycafe.gossip.order import HashedOrder


@attrs.define
class Link:
    """Faults on the path from one node to another."""

    loss: float = 0.0  # probability a datagram (or, with lossy_tcp, a segment) is dropped
    delay: float = 0.0005  # one-way latency, seconds (the median, with ``spread``)
    jitter: float = 0.0  # extra uniform delay in [0, jitter): reorders packets
    duplicate: float = 0.0  # probability a datagram arrives twice
    # The latency's distribution: ``delay`` times a lognormal factor
    # exp(N(0, spread)), a long right tail as measured latencies have
    # (0: every packet takes ``delay``).
    spread: float = 0.0
    bandwidth: float = 0.0  # bytes per second the path carries (0: no limit)


# TCP on a lossy path (RFC 6298, and Linux's defaults).
MSS: Final = 1448  # bytes of payload per segment
RTO_MIN: Final = 0.2  # seconds before a lost segment is sent again, doubling
SYN_RTO: Final = 1.0  # ... and a lost SYN or SYN-ACK
RETRIES: Final = 6  # a segment lost this often in a row resets the connection


@attrs.define(eq=False)
class SimNode:
    name: str
    addr: Address
    core: Gossip
    up: bool = True
    starved: tuple[float, float] | None = None  # extra lag range for its events
    paused_until: float = 0.0  # a stopped process: nothing is handled before this
    timer_at: float | None = None  # when its pending timer wake-up is handled
    timer_due: float | None = None  # the core's deadline that wake-up is for
    events: list[MemberEvent] = attrs.field(factory=list)
    # CPU seconds each event costs it, plus per byte it reads: it handles one
    # at a time, so events arriving faster than it works them wait (None: free).
    cpu: tuple[float, float] | None = None
    busy_until: float = 0.0


def node_name(i: int) -> str:
    return f"n{i:04d}"


def address(i: int) -> Address:
    # Names, not IP addresses: nothing here ever touches a real network.
    return (f"sim-{i}", 7946)


class Simulator:
    def __init__(
        self,
        *,
        seed: int,
        config: GossipConfig | None = None,
        link: Link | None = None,
        stream_timeout: float = 1.0,
        check_datagrams: bool = True,
        delegate: Callable[[Gossip], Delegate] | None = None,
        lossy_tcp: bool = False,
    ) -> None:
        self.rng = random.Random(seed)
        self.config = config or GossipConfig.lan()
        self.link = link or Link()
        self.stream_timeout = stream_timeout
        # The paths' loss hits TCP too (streams here, peer links in
        # keycafe.cluster.simulator), not only datagrams.
        self.lossy_tcp = lossy_tcp
        self._sending: dict[tuple[str, str], float] = {}  # path -> busy until (bandwidth)
        self._streams_started: dict[int, float] = {}  # stream job -> when it was sent
        self.check_datagrams = check_datagrams
        # Makes each new core's delegate (the layer above, e.g. a ring keeper).
        self.delegate = delegate
        self.now = 0.0
        self.nodes: dict[str, SimNode] = {}
        self.by_addr: dict[Address, SimNode] = {}
        self.links: dict[tuple[str, str], Link] = {}
        self.blocked: set[tuple[str, str]] = set()  # (src, dst) pairs cut
        self._queue: list[tuple[float, int, str, Any]] = []
        self._seq = 0
        self._hash = hashlib.sha256()
        self.trace: list[str] = []
        self.datagrams = 0
        self.bytes = 0
        self.dropped = 0
        self.largest_datagram = 0
        self.streams = 0  # TCP exchanges that reached their peer
        self.stream_bytes = 0  # their requests and replies
        self.observers: list[Callable[[SimNode, MemberEvent], None]] = []
        # Run after every time a node's core is driven, as a shell would.
        self.after_flush: list[Callable[[SimNode, float], None]] = []
        self._joins: dict[int, tuple[SimNode, SimNode, float]] = {}  # join job -> retry

    # -- building a cluster --------------------------------------------------------------

    def add_node(self, i: int, *, incarnation: int = 0) -> SimNode:
        name, addr = node_name(i), address(i)
        info = MemberInfo(
            node=name,
            addr=addr,
            client_addr=(addr[0], 9814),
            incarnation=incarnation,
            state=State.ALIVE,
        )
        core = Gossip(
            info, config=self.config, rng=random.Random(self.rng.getrandbits(64)), now=self.now
        )
        if self.delegate is not None:
            core.delegate = self.delegate(core)
        node = SimNode(name=name, addr=addr, core=core)
        self.nodes[name] = node
        self.by_addr[addr] = node
        self._reschedule(node)
        return node

    @classmethod
    def converged(cls, n: int, **kwargs: Any) -> Simulator:
        """``n`` nodes that already know each other (a cluster after convergence)."""
        sim = cls(**kwargs)
        nodes = [sim.add_node(i) for i in range(n)]
        # One record per member and one hashed order, shared by every core
        # (Member is immutable): the same state as merging a push-pull of
        # everyone into each core, in O(N) per core and with no copies.
        everyone = {x.name: Member(x.core.me, sim.now) for x in nodes}
        order = HashedOrder.of(x.name for x in nodes)
        for node in nodes:
            node.core.start_converged(everyone, order)
            node.core._broadcasts._items.clear()  # nothing is news any more
            node.events.clear()
            while node.core.next_event() is not None:
                pass
            sim._reschedule(node)
        return sim

    def join(self, node: SimNode, seed: SimNode, *, wait: float = 0.5) -> None:
        """Join through ``seed``, retrying with backoff until it answers, as the
        shell does with its seeds (keycafe/node/gossip.py)."""
        job = node.core.join_job(seed.addr)
        self._joins[id(job)] = (node, seed, wait)
        self._start_stream(node, job)

    # -- faults ---------------------------------------------------------------------------

    def set_link(self, src: str, dst: str, link: Link) -> None:
        self.links[(src, dst)] = link

    def partition(
        self, side_a: Iterable[str], side_b: Iterable[str], *, one_way: bool = False
    ) -> None:
        """Cut traffic from ``side_a`` to ``side_b`` (and back unless ``one_way``)."""
        b = list(side_b)
        for x in side_a:
            for y in b:
                self.blocked.add((x, y))
                if not one_way:
                    self.blocked.add((y, x))

    def heal(self) -> None:
        self.blocked.clear()

    def crash(self, name: str) -> None:
        node = self.nodes[name]
        node.up = False
        node.timer_at = None
        self._log(f"{self.now:.6f} {name} crash")

    def restart(self, i: int, seed: SimNode, *, incarnation: int) -> SimNode:
        """A crashed node comes back as a new process (same name, higher incarnation)."""
        old = self.nodes[node_name(i)]
        assert not old.up
        del self.by_addr[old.addr]
        node = self.add_node(i, incarnation=incarnation)
        self.join(node, seed)
        return node

    def starve(self, name: str, lag: tuple[float, float] | None) -> None:
        self.nodes[name].starved = lag

    def set_cpu(self, name: str, per_event: float, per_byte: float = 0.0) -> None:
        """Make ``name`` spend CPU time on each event it handles."""
        self.nodes[name].cpu = (per_event, per_byte) if per_event or per_byte else None

    def pause(self, name: str, seconds: float) -> None:
        """Stop a node's process (SIGSTOP, a long GC): its packets wait in the
        socket buffer and everything due is handled when it wakes."""
        self.nodes[name].paused_until = self.now + seconds
        self._log(f"{self.now:.6f} {name} pause {seconds}")

    # -- running --------------------------------------------------------------------------

    def run_until(self, t: float) -> None:
        queue = self._queue
        while queue and queue[0][0] <= t:
            at, _, kind, payload = heapq.heappop(queue)
            if kind == "call" and payload[0] is None:  # not bound to a node
                self.now = at
                payload[1](at)
                continue
            target = self._target(kind, payload)
            hold = max(target.paused_until, target.busy_until)
            if hold > at:
                if kind == "timer":
                    target.timer_at = hold
                self._push(hold, kind, payload)
                continue
            self.now = at
            if target.cpu is not None:
                per_event, per_byte = target.cpu
                size = len(payload[1]) if kind == "datagram" else 0
                if kind == "call":
                    size = payload[2]
                target.busy_until = at + per_event + per_byte * size
            if kind == "timer":
                node = payload
                if node.up and node.timer_at == at:
                    node.timer_at = None
                    node.core.handle_timer(at)
                    self._flush(node)
            elif kind == "datagram":
                node, data, src = payload
                if node.up:
                    self._log_bytes(data)
                    node.core.receive_datagram(data, src, at)
                    self._flush(node)
            elif kind == "call":
                node, fn, _ = payload
                if node.up:
                    fn(at)
            elif kind == "stream":
                self._deliver_stream(*payload)
            elif kind == "join":
                node, seed, wait = payload
                if node.up and node.core is self.nodes[node.name].core:
                    self.join(node, seed, wait=wait)
            elif kind == "stream-reply":
                node, job, reply = payload
                retry = self._joins.pop(id(job), None)
                if retry is not None and reply is None and node.up:
                    _, seed, wait = retry
                    self._push(at + wait, "join", (node, seed, min(wait * 2, 30.0)))
                if node.up:
                    if reply is None:
                        node.core.stream_failed(job, at)
                    else:
                        node.core.receive_stream_reply(job, reply, at)
                    self._flush(node)
        self.now = t

    def call_at(
        self, at: float, node: SimNode | None, fn: Callable[[float], None], size: int = 0
    ) -> None:
        """Run ``fn(at)`` at virtual time ``at``: on ``node``'s behalf (skipped if
        it crashed, late if it is paused or busy; ``size``: the bytes it
        reads, for its CPU cost), or unbound with ``node=None``.
        The layers above gossip (keycafe.cluster.simulator) drive themselves so."""
        self._push(at, "call", (node, fn, size))

    @staticmethod
    def _target(kind: str, payload: Any) -> SimNode:
        if kind == "timer":
            return payload  # type: ignore[no-any-return]
        if kind == "stream":
            return payload[1]  # type: ignore[no-any-return]
        return payload[0]  # type: ignore[no-any-return]

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def run_until_true(
        self, predicate: Callable[[], bool], limit: float, step: float = 0.1
    ) -> bool:
        """Advance in ``step``s until ``predicate()`` or ``limit`` virtual seconds pass."""
        end = self.now + limit
        while self.now < end:
            if predicate():
                return True
            self.run_until(min(end, self.now + step))
        return predicate()

    @property
    def trace_digest(self) -> str:
        return self._hash.hexdigest()

    # -- views ----------------------------------------------------------------------------

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.up]

    def view(self, node: SimNode) -> dict[str, tuple[State, int]]:
        return {m.node: (m.state, m.incarnation) for m in node.core.member_list()}

    def state_of(self, observer: SimNode, name: str) -> State | None:
        m = observer.core.members.get(name)
        return None if m is None else m.state

    # -- internals ------------------------------------------------------------------------

    def _push(self, at: float, kind: str, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, kind, payload))

    def _lag(self, node: SimNode) -> float:
        return self.rng.uniform(*node.starved) if node.starved else 0.0

    def latency(self, link: Link) -> float:
        """One packet's one-way latency on ``link``."""
        delay = link.delay
        if link.spread:
            delay *= self.rng.lognormvariate(0.0, link.spread)
        if link.jitter:
            delay += self.rng.uniform(0, link.jitter)
        return delay

    def sending(self, src: str, dst: str, link: Link, size: int) -> float:
        """Seconds until ``size`` bytes are on the wire from ``src`` to
        ``dst``: behind what the path is still sending, at its bandwidth."""
        if not link.bandwidth:
            return 0.0
        start = max(self.now, self._sending.get((src, dst), 0.0))
        done = start + size / link.bandwidth
        self._sending[(src, dst)] = done
        return done - self.now

    def tcp_delay(self, size: int, loss: float, *, connect: bool = False) -> float | None:
        """Extra seconds TCP's retransmissions add to ``size`` bytes on a path
        losing ``loss`` of its packets (``connect``: a new connection's
        handshake first), or None if a segment is lost ``RETRIES`` times in a
        row and the connection is reset."""
        if not loss:
            return 0.0
        extra = 0.0
        rng = self.rng
        if connect:
            rto = SYN_RTO
            while rng.random() < 1 - (1 - loss) ** 2:  # the SYN or its SYN-ACK
                extra += rto
                rto *= 2
                if rto > SYN_RTO * 2**RETRIES:
                    return None
        for _ in range(max(1, math.ceil(size / MSS))):
            rto = RTO_MIN
            while rng.random() < loss:
                extra += rto
                rto *= 2
                if rto > RTO_MIN * 2**RETRIES:
                    return None
        return extra

    def _reschedule(self, node: SimNode) -> None:
        if not node.up:
            return
        t = node.core.get_timer()
        if t is None:
            return
        t = max(t, self.now)
        pending = node.timer_at is not None and node.timer_at > self.now
        if pending and node.timer_due is not None and t >= node.timer_due:
            # A wake-up for this deadline (or an earlier one) is on its way. A
            # starved node's lag is drawn once per deadline: drawing it again
            # on every packet it handles would put its timers off for ever.
            return
        node.timer_due = t
        node.timer_at = t + self._lag(node)
        self._push(node.timer_at, "timer", node)

    def _flush(self, node: SimNode) -> None:
        core = node.core
        for data, dst in core.datagrams_to_send(self.now):
            self._send_datagram(node, data, dst)
        while (job := core.next_stream_job()) is not None:
            self._start_stream(node, job)
        while (event := core.next_event()) is not None:
            node.events.append(event)
            self._log(f"{event.at:.6f} {node.name} {event.kind.value} {event.member.node}")
            for observe in self.observers:
                observe(node, event)
        if self.after_flush:
            for hook in self.after_flush:
                hook(node, self.now)
            for data, dst in core.datagrams_to_send(self.now):
                self._send_datagram(node, data, dst)
        self._reschedule(node)

    def _send_datagram(self, src: SimNode, data: bytes, dst_addr: Address) -> None:
        if self.check_datagrams and len(data) > self.config.max_datagram:
            raise AssertionError(f"{src.name} sent {len(data)} bytes")
        self.datagrams += 1
        self.bytes += len(data)
        self.largest_datagram = max(self.largest_datagram, len(data))
        dst = self.by_addr.get(dst_addr)
        if dst is None or (src.name, dst.name) in self.blocked:
            self.dropped += 1
            return
        link = self.links.get((src.name, dst.name), self.link)
        copies = 2 if link.duplicate and self.rng.random() < link.duplicate else 1
        for _ in range(copies):
            if link.loss and self.rng.random() < link.loss:
                self.dropped += 1
                continue
            delay = self.latency(link) + self.sending(src.name, dst.name, link, len(data))
            self._push(self.now + delay + self._lag(dst), "datagram", (dst, data, src.addr))

    def _start_stream(self, src: SimNode, job: StreamJob) -> None:
        dst = self.by_addr.get(job.addr)
        ok = (
            dst is not None
            and dst.up
            and (src.name, dst.name) not in self.blocked
            and (dst.name, src.name) not in self.blocked
        )
        if not ok:
            self._push(self.now + self.stream_timeout, "stream-reply", (src, job, None))
            return
        assert dst is not None
        link = self.links.get((src.name, dst.name), self.link)
        delay = self._stream_delay(src, dst, link, len(job.payload), connect=True)
        if delay is None or (self.lossy_tcp and delay > self.stream_timeout):
            # Reset, or stalled past the caller's deadline: it gives up then.
            self._push(self.now + self.stream_timeout, "stream-reply", (src, job, None))
            return
        self._streams_started[id(job)] = self.now
        self._push(self.now + delay + self._lag(dst), "stream", (src, dst, job))

    def _stream_delay(
        self, src: SimNode, dst: SimNode, link: Link, size: int, *, connect: bool = False
    ) -> float | None:
        if not (link.spread or link.jitter or link.bandwidth or self.lossy_tcp):
            return link.delay  # as before the network model: one fixed delay
        tcp = self.tcp_delay(size, link.loss if self.lossy_tcp else 0.0, connect=connect)
        if tcp is None:
            return None
        return self.latency(link) + self.sending(src.name, dst.name, link, size) + tcp

    def _deliver_stream(self, src: SimNode, dst: SimNode, job: StreamJob) -> None:
        if not dst.up:
            self._streams_started.pop(id(job), None)
            self._push(self.now + self.stream_timeout, "stream-reply", (src, job, None))
            return
        reply = dst.core.handle_stream(job.payload, src.addr, self.now)
        self.streams += 1
        self.stream_bytes += len(job.payload) + (len(reply) if reply is not None else 0)
        self._flush(dst)
        link = self.links.get((dst.name, src.name), self.link)
        delay = self._stream_delay(dst, src, link, len(reply) if reply is not None else 0)
        started = self._streams_started.pop(id(job), self.now)
        deadline = started + self.stream_timeout if self.lossy_tcp else math.inf
        if delay is None or self.now + delay > deadline:
            # The reply is lost with a reset, or comes after the caller gave up.
            self._push(max(self.now, deadline), "stream-reply", (src, job, None))
            return
        self._push(self.now + delay + self._lag(src), "stream-reply", (src, job, reply))

    def _log(self, line: str) -> None:
        self.trace.append(line)
        self._hash.update(line.encode())

    def _log_bytes(self, data: bytes) -> None:
        self._hash.update(data)


def failed_by(sim: Simulator, victim: str) -> dict[str, float]:
    """For each node, when it first declared ``victim`` dead (FAILED)."""
    out: dict[str, float] = {}
    for node in sim.nodes.values():
        for ev in node.events:
            if ev.kind == EventKind.FAILED and ev.member.node == victim:
                out.setdefault(node.name, ev.at)
    return out
