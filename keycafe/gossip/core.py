"""SWIM membership with the Lifeguard refinements: the sans-I/O core.

The shape is aioquic's: the shell (or the simulator) hands in datagrams and the
time, and takes out datagrams, stream jobs (TCP), events and the next timer::

    core.receive_datagram(data, addr, now)
    core.handle_timer(now)
    core.datagrams_to_send(now) -> list[(bytes, addr)]
    core.next_stream_job() -> StreamJob | None     # push-pull, fallback ping
    core.handle_stream(data, addr, now) -> bytes   # the TCP server side
    core.receive_stream_reply(job, data, now)      # the TCP client side
    core.get_timer() -> float | None
    core.next_event() -> MemberEvent | None

The layer above (keycafe.cluster) plugs in a ``Delegate`` (delegate.py): the
core carries its broadcasts and its push-pull state without knowing what they
are, as memberlist does for its application.

Nothing here reads a clock, touches a socket or uses the global random: time is
``now`` (seconds), randomness an injected ``random.Random``.

References: Das, Gupta, Motivala, "SWIM", DSN 2002 (probing, ping-req,
suspicion, incarnations, infection-style dissemination); Dadgar, Phillips,
Currey, "Lifeguard", 2018 (local health, nacks, dynamic suspicion timeouts,
buddy system); hashicorp/memberlist for the defaults and details.
"""

from __future__ import annotations

import array
import enum
import math
import random
from collections import deque
from typing import Any

import attrs

from keycafe.errors import BadPacket
from keycafe.gossip import codec
from keycafe.gossip.awareness import Awareness
from keycafe.gossip.broadcast import BroadcastQueue
from keycafe.gossip.config import GossipConfig
from keycafe.gossip.delegate import Delegate, NoDelegate
from keycafe.gossip.messages import (
    MAX_INCARNATION,
    Ack,
    Address,
    Alive,
    Dead,
    IndirectPing,
    MemberInfo,
    Message,
    Nack,
    Ping,
    PushPull,
    State,
    Suspect,
    UserMsg,
)
from keycafe.gossip.order import HashedOrder, LiveOrder
from keycafe.gossip.suspicion import Suspicion, suspicion_timeout

# memberlist's pushPullScaleThreshold: above this many members the push-pull
# interval grows with log2(N) so the cluster-wide TCP load stays flat.
PUSH_PULL_SCALE_THRESHOLD = 32
# Room a datagram keeps besides one application broadcast: a ping-req with two
# 40-character ids and an address is about 150 bytes, a member record about
# 200, and the packet header 6 (so a broadcast fits next to what it rides on).
BROADCAST_ROOM = 300


class EventKind(enum.Enum):
    JOINED = "joined"
    UPDATED = "updated"
    SUSPECTED = "suspected"
    RECOVERED = "recovered"  # a suspect refuted and is alive again
    FAILED = "failed"  # declared dead
    LEFT = "left"  # left gracefully
    REAPED = "reaped"  # forgotten after gossip_to_the_dead_time


@attrs.frozen(kw_only=True)
class MemberEvent:
    kind: EventKind
    member: MemberInfo
    at: float


@attrs.frozen(kw_only=True)
class StreamJob:
    """A TCP exchange the shell should run: send ``payload`` to ``addr``,
    hand the reply to ``receive_stream_reply`` (or report ``stream_failed``)."""

    kind: str  # "push-pull" or "ping"
    addr: Address
    payload: bytes
    seq: int = 0


@attrs.frozen(eq=False)
class Member:
    """A member as one node sees it. Immutable: a change makes a new one, so
    tables can share records (the simulator's converged cores all hold the same
    N records until one of them changes its view of a member)."""

    info: MemberInfo
    state_changed: float
    last_ping: float = 0.0  # we last probed it (CLUSTER NODES' ping-sent)
    last_ack: float = 0.0  # it last answered us (pong-recv)
    # ``info`` as a push-pull carries it (codec.Held): a push-pull joins these,
    # and reads a record equal to one we hold by comparing bytes.
    fields: list[Any] = attrs.field(init=False, repr=False)
    data: bytes = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        record = codec.record(self.info)
        object.__setattr__(self, "fields", record.fields)
        object.__setattr__(self, "data", record.data)

    @property
    def state(self) -> State:
        return self.info.state


@attrs.define(eq=False)
class _Probe:
    seq: int
    target: str
    sent: float
    ack_deadline: float
    end: float
    indirect: bool = False
    acked: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@attrs.define(eq=False)
class _Relay:
    requester: Address
    requester_seq: int
    deadline: float
    nack: bool


@attrs.define(eq=False)
class GossipStats:
    datagrams_sent: int = 0
    bytes_sent: int = 0
    datagrams_received: int = 0
    bad_packets: int = 0
    probes: int = 0
    failed_probes: int = 0
    refutations: int = 0
    largest_datagram: int = 0
    # Accusations (suspect, dead) at MAX_INCARNATION from peers: nobody could
    # refute them, so they are ignored (messages.py).
    unrefutable: int = 0


def push_pull_scale(interval: float, n: int) -> float:
    """memberlist's pushPullScale: interval * (ceil(log2 N - log2 32) + 1) above 32."""
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval
    multiplier = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1
    return interval * multiplier


class Gossip:
    """One member's view of the cluster and its part in the protocol."""

    def __init__(
        self,
        me: MemberInfo,
        *,
        config: GossipConfig,
        rng: random.Random,
        now: float,
        wall_offset: float = 0.0,
    ) -> None:
        self.config = config
        # now + wall_offset is about the wall clock, the same on every node
        # (the simulator's nodes share one clock: 0): it numbers probe rounds.
        self.wall_offset = wall_offset
        self.rng = rng
        self.node = me.node
        me = attrs.evolve(me, state=State.ALIVE)
        self.members: dict[str, Member] = {me.node: Member(me, now)}
        self.stats = GossipStats()
        self.awareness = Awareness(config.awareness_max_multiplier)
        self.leaving = False
        # The layer above: its broadcasts in, its push-pull state both ways.
        self.delegate: Delegate = NoDelegate()
        self._broadcasts = BroadcastQueue(config.retransmit_mult)
        self._suspicions: dict[str, Suspicion] = {}
        self._probe_order: list[str] = []
        self._probe_index = 0
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        # Members forgotten after gossip_to_the_dead_time, with when: stale news
        # cannot bring them back, and push-pull still reports them as dead.
        self._reaped: dict[str, tuple[MemberInfo, float]] = {}
        # Dead or left members and when they became so: what _reap looks at.
        self._buried: dict[str, float] = {}
        # Live (alive or suspect) members, ourselves included, in the hashed
        # order every member shares: the aligned probe schedule, and N (every
        # datagram needs N for its retransmit limit).
        self._live = LiveOrder()
        self._live.add(me.node)
        self._seq = 0
        self._out: list[tuple[bytes, Address]] = []
        self._jobs: deque[StreamJob] = deque()
        self._events: deque[MemberEvent] = deque()
        # Stagger the periodic work so a cluster started at once does not beat
        # in lockstep.
        self._next_probe = now + rng.uniform(0, config.probe_interval)
        self._next_gossip = now + rng.uniform(0, config.gossip_interval)
        self._next_push_pull = now + rng.uniform(0.5, 1.0) * config.push_pull_interval
        self._next_reap = now + 1.0
        self._queue_alive(me)

    # -- views ---------------------------------------------------------------------

    @property
    def me(self) -> MemberInfo:
        return self.members[self.node].info

    def member_list(self) -> list[MemberInfo]:
        return [m.info for m in self.members.values()]

    def known_members(self) -> list[MemberInfo]:
        """Members plus the reaped ones (as dead): who must be counted when a
        majority matters, since forgetting the dead must not shrink the quorum."""
        return self.member_list() + [info for info, _ in self._reaped.values()]

    def alive_count(self) -> int:
        """Members alive or suspect, ourselves included (unless we are leaving)."""
        return len(self._live)

    def _liveness_changed(self, node: str) -> None:
        """``node``'s state changed: keep the live order (and so N) up to date."""
        m = self.members.get(node)
        if m is not None and m.state in (State.ALIVE, State.SUSPECT):
            self._live.add(node)
        else:
            self._live.discard(node)

    def _estimated_n(self) -> int:
        return max(1, len(self._live))

    def _set_info(self, m: Member, info: MemberInfo, state_changed: float | None = None) -> Member:
        """Replace ``m``'s record with ``info`` (and when its state changed)."""
        changed = m.state_changed if state_changed is None else state_changed
        new = Member(info, changed, m.last_ping, m.last_ack)
        self.members[info.node] = new
        return new

    def start_converged(self, members: dict[str, Member], order: HashedOrder) -> None:
        """Know ``members`` (every member by id, ourselves among them, all
        alive) as if we had merged a push-pull of them in that order: how a
        simulated cluster starts converged without N full merges. ``members``
        and ``order`` (their hashed order) are shared with other cores and
        never changed; the caller clears the news and events such a merge leaves.

        The random places in the probe list are drawn exactly as that merge
        draws them (``_on_alive``: ``randint(0, len)`` for each new member), so
        the run that follows is the same."""
        assert len(self.members) == 1, "a fresh core only"
        mine = self.members[self.node]
        self.members = {self.node: mine}
        self.members.update(members)
        self.members[self.node] = mine
        names = list(members)
        # Built as 2-byte indexes, not 8-byte pointers: N inserts into a list
        # of N move O(N^2) bytes, the bulk of a converged start at N=10,000.
        index = array.array("H" if len(names) <= 1 << 16 else "L")
        getrandbits = self.rng.getrandbits
        for i, node in enumerate(names):
            if node == self.node:
                continue
            # random.Random.randint(0, k) is _randbelow(k + 1): rejection
            # sampling over getrandbits of (k + 1).bit_length() bits.
            width = len(index) + 1
            bits = width.bit_length()
            at = getrandbits(bits)
            while at >= width:
                at = getrandbits(bits)
            index.insert(at, i)
        self._probe_order = list(map(names.__getitem__, index))
        self._live = LiveOrder(order)

    # -- the API the shell drives ------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.stats.datagrams_received += 1
        for msg in self._decode(data):
            self._handle(msg, addr, now)

    def _decode(self, data: bytes) -> list[Message]:
        """Messages of an untrusted packet; none (and counted) if it is garbage."""
        try:
            return codec.decode_packet_untrusted(data, self.members.get)
        except BadPacket:
            self.stats.bad_packets += 1
            return []

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def next_stream_job(self) -> StreamJob | None:
        return self._jobs.popleft() if self._jobs else None

    def next_event(self) -> MemberEvent | None:
        return self._events.popleft() if self._events else None

    def handle_stream(self, data: bytes, addr: Address, now: float) -> bytes | None:
        """Serve one TCP request: a push-pull (reply with our state) or a ping."""
        reply: bytes | None = None
        for msg in self._decode(data):
            if isinstance(msg, PushPull):
                self._merge(msg, now)
                reply = self._state_packet(join=False)
            elif isinstance(msg, Ping) and msg.target == self.node:
                reply = codec.packet([codec.encode_message(Ack(seq=msg.seq, source=self.node))])
            else:
                self._handle(msg, addr, now)
        return reply

    def receive_stream_reply(self, job: StreamJob, data: bytes, now: float) -> None:
        for msg in self._decode(data):
            self._handle(msg, job.addr, now)

    def stream_failed(self, job: StreamJob, now: float) -> None:
        """A TCP exchange failed; nothing to undo (probes time out by themselves)."""

    def join(self, seed: Address, now: float) -> None:
        """Exchange full state with ``seed`` (over TCP, by the shell)."""
        self._jobs.append(self.join_job(seed))

    def join_job(self, seed: Address) -> StreamJob:
        """The push-pull that joins through ``seed``, for a shell that retries it."""
        return StreamJob(kind="push-pull", addr=seed, payload=self._state_packet(join=True))

    def queue_broadcast(self, key: str, payload: bytes) -> None:
        """Piggyback ``payload`` on datagrams, like member news, until it has
        been sent the retransmit limit; a newer payload under the same ``key``
        replaces the older. Receivers hand it to their delegate's ``notify_msg``
        (and do not pass it on themselves: the delegate decides)."""
        if len(payload) > self.broadcast_limit:
            raise ValueError(f"a broadcast of {len(payload)} bytes cannot fit a datagram")
        self._broadcasts.queue(("user", key), codec.encode_message(UserMsg(payload=payload)))

    @property
    def broadcast_limit(self) -> int:
        """The largest payload ``queue_broadcast`` takes."""
        return self.config.max_datagram - BROADCAST_ROOM

    def push_state(self, k: int, now: float) -> None:
        """Push-pull with up to ``k`` random live members: how a delegate state
        too large for a datagram spreads (each member that takes it up pushes
        it on in turn, so it reaches most members in O(log N) rounds)."""
        payload = self._state_packet(join=False)
        for target in self._random_members(k, lambda m: m.state == State.ALIVE):
            self._jobs.append(StreamJob(kind="push-pull", addr=target.info.addr, payload=payload))

    def pull_from(self, addr: Address, now: float) -> None:
        """Push-pull with ``addr`` now (the layer above knows it is behind it)."""
        self._jobs.append(
            StreamJob(kind="push-pull", addr=addr, payload=self._state_packet(join=False))
        )

    def leave(self, now: float) -> None:
        """Announce a graceful leave; the shell keeps running a little to send it."""
        self.leaving = True
        me = self.members[self.node]
        dead = Dead(incarnation=me.info.incarnation, node=self.node, source=self.node)
        self._set_info(me, attrs.evolve(me.info, state=State.LEFT), now)
        self._liveness_changed(self.node)
        self._broadcasts.queue(("member", self.node), codec.encode_message(dead))
        # Tell a few members straight away rather than wait for a gossip round.
        for target in self._random_members(self.config.gossip_nodes, lambda m: True):
            self._send(target.info.addr, [], now)

    def update_meta(self, meta: dict[str, str], now: float) -> None:
        """Change our metadata; a higher incarnation carries it to everyone."""
        me = self.members[self.node]
        me = self._set_info(
            me,
            attrs.evolve(
                me.info,
                meta=dict(meta),
                # At the bound the change stays local (messages.py, MAX_INCARNATION).
                meta_version=min(me.info.meta_version + 1, MAX_INCARNATION),
                incarnation=min(me.info.incarnation + 1, MAX_INCARNATION),
            ),
        )
        self._queue_alive(me.info)

    def get_timer(self) -> float | None:
        deadlines = [self._next_probe, self._next_gossip, self._next_push_pull, self._next_reap]
        probe = self._probe
        if probe is not None:
            deadlines.append(probe.end)
            if not probe.indirect and not probe.acked:
                deadlines.append(probe.ack_deadline)
        deadlines.extend(s.deadline for s in self._suspicions.values())
        deadlines.extend(r.deadline for r in self._relays.values())
        return min(deadlines)

    def handle_timer(self, now: float) -> None:
        probe = self._probe
        if probe is not None:
            if not probe.acked and not probe.indirect and now >= probe.ack_deadline:
                self._probe_indirectly(probe, now)
            if now >= probe.end:
                self._finish_probe(probe, now)
        if now >= self._next_probe and self._probe is None:
            self._start_probe(now)
        for node in [n for n, s in self._suspicions.items() if now >= s.deadline]:
            self._suspicion_expired(node, now)
        for seq in [s for s, r in self._relays.items() if now >= r.deadline]:
            relay = self._relays.pop(seq)
            if relay.nack:
                self._send(relay.requester, [Nack(seq=relay.requester_seq, source=self.node)], now)
        if now >= self._next_gossip:
            self._gossip(now)
            self._next_gossip = now + self.config.gossip_interval
        if now >= self._next_push_pull:
            self._push_pull(now)
            interval = push_pull_scale(self.config.push_pull_interval, self._estimated_n())
            self._next_push_pull = now + interval
        if now >= self._next_reap:
            self._reap(now)
            self._next_reap = now + 1.0

    # -- sending -----------------------------------------------------------------------

    def _send(self, addr: Address, msgs: list[Message], now: float) -> None:
        """One datagram to ``addr``: ``msgs``, then as much news as fits."""
        encoded = [codec.encode_message(m) for m in msgs]
        used = codec.PACKET_OVERHEAD + sum(map(len, encoded))
        encoded += self._broadcasts.take(self.config.max_datagram - used, self._estimated_n())
        if not encoded:
            return
        data = codec.packet(encoded)
        if len(data) > self.config.max_datagram:  # one oversized message: never
            raise AssertionError(f"datagram of {len(data)} bytes")
        self._out.append((data, addr))
        self.stats.datagrams_sent += 1
        self.stats.bytes_sent += len(data)
        self.stats.largest_datagram = max(self.stats.largest_datagram, len(data))

    def _queue_alive(self, info: MemberInfo) -> None:
        self._broadcasts.queue(("member", info.node), codec.encode_message(Alive(member=info)))

    def _queue_accusation(self, msg: Suspect | Dead) -> None:
        # One at MAX_INCARNATION acts here only: peers ignore it (messages.py).
        if msg.incarnation < MAX_INCARNATION:
            self._broadcasts.queue(("member", msg.node), codec.encode_message(msg))

    def _state_packet(self, join: bool) -> bytes:
        """A push-pull: our member table and the delegate's state."""
        # Reaped members go along as dead: a member buried during a partition
        # learns it, refutes with a higher incarnation, and comes back.
        records = [m.data for m in self.members.values()]
        records += [codec.record(info).data for info, _ in self._reaped.values()]
        body = codec.encode_push_pull(join, records, len(records), self.delegate.local_state())
        return codec.packet([body])

    def _random_members(self, k: int, accept: object) -> list[Member]:
        """Up to ``k`` distinct random other members for which ``accept`` holds
        (memberlist's kRandomNodes: bounded tries, no full scan)."""
        assert callable(accept)
        order = self._probe_order
        chosen: dict[str, Member] = {}
        for _ in range(3 * len(order)):
            if len(chosen) >= k:
                break
            node = order[self.rng.randrange(len(order))]
            m = self.members.get(node)
            if m is not None and node not in chosen and accept(m):
                chosen[node] = m
        return list(chosen.values())

    # -- probing (SWIM section 3, Lifeguard section 4) ---------------------------------

    def _next_target(self) -> Member | None:
        order = self._probe_order
        for _ in range(len(order)):
            if self._probe_index >= len(order):
                self.rng.shuffle(order)  # a fresh round-robin order each pass
                self._probe_index = 0
            node = order[self._probe_index]
            self._probe_index += 1
            m = self.members.get(node)
            if m is not None and m.state in (State.ALIVE, State.SUSPECT):
                return m
        return None

    def _aligned_target(self, now: float) -> Member | None:
        """The member this node probes in the current round.

        Every member sorts the live members by a hash of their ids (the same
        list everywhere once views agree) and, in round r, probes the one
        ``1 + r mod (M - 1)`` places after itself. For one r that shift maps
        members one-to-one onto the others, so each is probed exactly once a
        round, instead of a Poisson number of times (memberlist), and over M - 1
        rounds each node still probes every member once (SWIM's round-robin
        bound). Views that disagree for a while only make the cover uneven.
        """
        order = self._live
        size = len(order)
        if size < 2 or self.node not in order:  # alone, or leaving
            return None
        rounds = math.floor((now + self.wall_offset) / self.config.probe_interval)
        shift = 1 + rounds % (size - 1)
        return self.members[order[(order.index(self.node) + shift) % size]]

    def _start_probe(self, now: float) -> None:
        cfg = self.config
        interval = self.awareness.scale(cfg.probe_interval)
        self._next_probe = now + interval
        target = self._aligned_target(now) if cfg.aligned_probes else self._next_target()
        if target is None:
            return
        self._seq += 1
        self.stats.probes += 1
        msgs: list[Message] = [Ping(seq=self._seq, target=target.info.node, source=self.node)]
        if (
            cfg.lifeguard
            and target.state == State.SUSPECT
            and target.info.incarnation < MAX_INCARNATION  # peers ignore it
        ):
            # Buddy system: tell the suspect directly, so it can refute at once.
            msgs.append(
                Suspect(
                    incarnation=target.info.incarnation, node=target.info.node, source=self.node
                )
            )
        self.members[target.info.node] = attrs.evolve(target, last_ping=now)
        self._send(target.info.addr, msgs, now)
        self._probe = _Probe(
            seq=self._seq,
            target=target.info.node,
            sent=now,
            ack_deadline=now + self.awareness.scale(cfg.probe_timeout),
            end=now + interval,
        )

    def _probe_indirectly(self, probe: _Probe, now: float) -> None:
        probe.indirect = True
        target = self.members.get(probe.target)
        if target is None:
            return
        helpers = self._random_members(
            self.config.indirect_checks,
            lambda m: m.state == State.ALIVE and m.info.node != probe.target,
        )
        nack = self.config.lifeguard
        for helper in helpers:
            req = IndirectPing(
                seq=probe.seq,
                target=probe.target,
                target_addr=target.info.addr,
                source=self.node,
                nack=nack,
            )
            self._send(helper.info.addr, [req], now)
        probe.expected_nacks = len(helpers) if nack else 0
        # Also try TCP: a network that drops UDP may still carry a stream.
        ping = Ping(seq=probe.seq, target=probe.target, source=self.node)
        payload = codec.packet([codec.encode_message(ping)])
        self._jobs.append(
            StreamJob(kind="ping", addr=target.info.addr, payload=payload, seq=probe.seq)
        )

    def _finish_probe(self, probe: _Probe, now: float) -> None:
        self._probe = None
        if probe.acked:
            return
        self.stats.failed_probes += 1
        if self.config.lifeguard:
            # Lifeguard: with helpers, missing nacks (not the failed probe) say
            # we are the slow one; without helpers any failure counts.
            if probe.expected_nacks:
                self.awareness.apply_delta(probe.expected_nacks - probe.nacks)
            else:
                self.awareness.apply_delta(1)
        target = self.members.get(probe.target)
        if target is not None and target.state in (State.ALIVE, State.SUSPECT):
            # On a suspect this is an independent confirmation (Lifeguard).
            self._on_suspect(
                Suspect(incarnation=target.info.incarnation, node=probe.target, source=self.node),
                now,
            )

    def _on_ack(self, ack: Ack, now: float) -> None:
        probe = self._probe
        if probe is not None and ack.seq == probe.seq and not probe.acked:
            probe.acked = True
            target = self.members.get(probe.target)
            if target is not None:
                self.members[probe.target] = attrs.evolve(target, last_ack=now)
            if not probe.indirect and self.config.lifeguard:
                self.awareness.apply_delta(-1)
            return
        relay = self._relays.pop(ack.seq, None)
        if relay is not None:
            self._send(relay.requester, [Ack(seq=relay.requester_seq, source=self.node)], now)

    def _on_indirect_ping(self, req: IndirectPing, addr: Address, now: float) -> None:
        self._seq += 1
        self._relays[self._seq] = _Relay(
            requester=addr,
            requester_seq=req.seq,
            deadline=now + self.config.probe_timeout,
            nack=req.nack,
        )
        self._send(req.target_addr, [Ping(seq=self._seq, target=req.target, source=self.node)], now)

    # -- dissemination and anti-entropy ---------------------------------------------

    def _gossip(self, now: float) -> None:
        if not self._broadcasts:
            return
        dead_horizon = now - self.config.gossip_to_the_dead_time

        def accept(m: Member) -> bool:
            if m.state in (State.ALIVE, State.SUSPECT):
                return True
            return m.state_changed >= dead_horizon  # tell the dead they are dead

        for target in self._random_members(self.config.gossip_nodes, accept):
            self._send(target.info.addr, [], now)

    def _gossip_soon(self, now: float) -> None:
        """Gossip now rather than at the next tick, for news that starts a race:
        a new suspicion (every member's timer then starts together, and the
        suspect itself hears at once, so a live one refutes in time), our own
        refutation, and a death. Each member forwards such news once as it
        learns it, so it crosses the cluster in a few network hops rather than
        a few gossip intervals; the retransmit budget is the same."""
        self._next_gossip = min(self._next_gossip, now)

    def _push_pull(self, now: float) -> None:
        """Anti-entropy with one random live member, and one failed one.

        The second exchange is how partitions heal: after a long partition each
        side has buried the other, and nothing but a direct attempt (serf calls
        it reconnect) would make them talk again.
        """
        payload = self._state_packet(join=False)
        for target in self._random_members(1, lambda m: m.state == State.ALIVE):
            self._jobs.append(StreamJob(kind="push-pull", addr=target.info.addr, payload=payload))
        failed = []
        # Every dead member is buried: look at the whole table only if one is.
        if any(
            (m := self.members.get(n)) is not None and m.state == State.DEAD for n in self._buried
        ):
            failed = [m.info for m in self.members.values() if m.state == State.DEAD]
        failed += [info for info, _ in self._reaped.values() if info.state == State.DEAD]
        if failed:
            target_info = failed[self.rng.randrange(len(failed))]
            self._jobs.append(StreamJob(kind="push-pull", addr=target_info.addr, payload=payload))

    def _merge(self, pp: PushPull, now: float) -> None:
        """memberlist's mergeState: remote views feed the same transitions;
        the peer's delegate state goes to ours."""
        members = self.members
        alive = State.ALIVE
        for info in pp.members:
            if info.state == alive:
                m = members.get(info.node)
                if m is not None and m.info is info:
                    continue  # the record we hold (codec's ``known``): nothing to do
                self._contest_burial(info, now)
                self._on_alive(info, now)
            elif info.state == State.LEFT:
                self._on_dead(
                    Dead(incarnation=info.incarnation, node=info.node, source=info.node),
                    now,
                    remote=True,
                )
            else:
                # A remote "dead" only makes us suspect: we check for ourselves.
                self._on_suspect(
                    Suspect(incarnation=info.incarnation, node=info.node, source=self.node),
                    now,
                    remote=True,
                )
        if pp.user_state:
            self.delegate.merge_remote_state(pp.user_state, now)

    def _contest_burial(self, info: MemberInfo, now: float) -> None:
        """A peer reports alive a member we hold dead at no lower incarnation.

        Neither view can prove the other wrong, so ask the member itself: send
        it its death notice. If it is alive it refutes with a higher
        incarnation, which then spreads to both sides (this is what heals
        partitions during which each side buried the other)."""
        if info.node == self.node:
            return
        m = self.members.get(info.node)
        ours = m.info if m is not None else self._reaped.get(info.node, (None, 0.0))[0]
        if ours is not None and ours.state == State.DEAD and info.incarnation <= ours.incarnation:
            notice = Dead(incarnation=ours.incarnation, node=info.node, source=self.node)
            self._send(info.addr, [notice], now)

    def _reap(self, now: float) -> None:
        horizon = now - self.config.gossip_to_the_dead_time
        for node, since in list(self._buried.items()):
            m = self.members.get(node)
            if m is None or m.state not in (State.DEAD, State.LEFT):
                del self._buried[node]  # it came back
            elif since < horizon:
                del self._buried[node]
                del self.members[node]
                self._reaped[node] = (m.info, now)
                if node in self._probe_order:
                    self._probe_order.remove(node)
                    self._probe_index = min(self._probe_index, len(self._probe_order))
                self._events.append(MemberEvent(kind=EventKind.REAPED, member=m.info, at=now))
        forget = now - self.config.reaped_memory
        for node in [n for n, (_, at) in self._reaped.items() if at < forget]:
            del self._reaped[node]

    # -- transitions (SWIM section 4.2; memberlist's aliveNode/suspectNode/deadNode) --

    def _handle(self, msg: Message, addr: Address, now: float) -> None:
        match msg:
            case Ping():
                if msg.target == self.node:
                    self._send(addr, [Ack(seq=msg.seq, source=self.node)], now)
            case Ack():
                self._on_ack(msg, now)
            case Nack():
                probe = self._probe
                if probe is not None and msg.seq == probe.seq:
                    probe.nacks += 1
            case IndirectPing():
                self._on_indirect_ping(msg, addr, now)
            case Alive():
                self._on_alive(msg.member, now)
            case Suspect():
                self._on_suspect(msg, now, remote=True)
            case Dead():
                self._on_dead(msg, now, remote=True)
            case PushPull():
                self._merge(msg, now)
            case UserMsg():
                self.delegate.notify_msg(msg.payload, now)

    def _refute(self, incarnation: int, now: float) -> None:
        """Someone suspects or buried us: outbid them (SWIM 4.2; Lifeguard counts it)."""
        me = self.members[self.node]
        # Never above MAX_INCARNATION: accusations from peers stop one below
        # it (_accusation_applies), so the bound still outbids every one.
        outbid = min(max(me.info.incarnation, incarnation) + 1, MAX_INCARNATION)
        me = self._set_info(me, attrs.evolve(me.info, incarnation=outbid))
        self._queue_alive(me.info)
        self._gossip_soon(now)
        self.stats.refutations += 1
        if self.config.lifeguard:
            self.awareness.apply_delta(1)

    def _on_alive(self, info: MemberInfo, now: float) -> None:
        reaped = self._reaped.get(info.node)
        if reaped is not None:
            if info.incarnation <= reaped[0].incarnation:
                return  # stale news about a member we buried: never resurrect it
            del self._reaped[info.node]
        if info.node == self.node:
            if info.incarnation > self.me.incarnation and not self.leaving:
                self._refute(info.incarnation, now)
            return
        m = self.members.get(info.node)
        if m is None:
            self.members[info.node] = Member(info, now)
            self._liveness_changed(info.node)
            self._probe_order.insert(self.rng.randint(0, len(self._probe_order)), info.node)
            self._queue_alive(info)
            self._events.append(MemberEvent(kind=EventKind.JOINED, member=info, at=now))
            return
        old = m.info
        if info.incarnation <= old.incarnation:
            return  # old or already known news
        self._set_info(m, info, now if old.state != State.ALIVE else None)
        if old.state in (State.DEAD, State.LEFT):
            self._liveness_changed(info.node)  # live again
        self._suspicions.pop(info.node, None)
        self._queue_alive(info)
        if old.state in (State.DEAD, State.LEFT):
            kind = EventKind.JOINED
        elif old.state == State.SUSPECT:
            kind = EventKind.RECOVERED
        elif old.meta_version != info.meta_version or old.addr != info.addr:
            kind = EventKind.UPDATED
        else:
            return
        self._events.append(MemberEvent(kind=kind, member=info, at=now))

    def _accusation_applies(
        self, node: str, incarnation: int, now: float, remote: bool
    ) -> Member | None:
        """SWIM's rule for "node is suspect/dead at incarnation": ignore it for
        unknown or buried members and older incarnations; about ourselves, refute
        it (a node never declares itself dead). Else return the member.

        A peer's accusation at MAX_INCARNATION is ignored: no refutation could
        outbid it, so acting on it would bury a live member for good. Our own
        (a probe of a member at the bound failed) acts here and is not sent."""
        if remote and incarnation >= MAX_INCARNATION:
            self.stats.unrefutable += 1
            return None
        m = self.members.get(node)
        if m is None or incarnation < m.info.incarnation or m.state in (State.DEAD, State.LEFT):
            return None
        if node == self.node:
            if not self.leaving:
                self._refute(incarnation, now)
            return None
        return m

    def _on_suspect(self, s: Suspect, now: float, remote: bool = False) -> None:
        m = self._accusation_applies(s.node, s.incarnation, now, remote)
        if m is None:
            return
        suspicion = self._suspicions.get(s.node)
        if (
            m.state == State.SUSPECT
            and suspicion is not None
            and s.incarnation == m.info.incarnation
        ):
            # Lifeguard: each independent confirmation shortens the timeout.
            if suspicion.confirm(s.source, now):
                self._queue_accusation(s)
                self._gossip_soon(now)  # at most k times a suspicion
            return
        # A new suspicion, or one about a later incarnation (the member refuted
        # and was suspected again): the old timer must not kill it for an
        # incarnation it has already refuted, so start afresh.
        cfg = self.config
        n = self._estimated_n()
        lo = suspicion_timeout(cfg.suspicion_mult, n, cfg.probe_interval)
        if cfg.lifeguard:
            # Expect suspicion_mult - 2 confirmations (memberlist), none if too few members.
            k = cfg.suspicion_mult - 2
            if n - 2 < k:
                k = 0
            hi = cfg.suspicion_max_timeout_mult * lo
        else:
            k, hi = 0, lo
        m = self._set_info(
            m, attrs.evolve(m.info, state=State.SUSPECT, incarnation=s.incarnation), now
        )
        self._suspicions[s.node] = Suspicion(started=now, k=k, lo=lo, hi=hi, confirmers={s.source})
        self._queue_accusation(s)
        self._gossip_soon(now)
        self._events.append(MemberEvent(kind=EventKind.SUSPECTED, member=m.info, at=now))

    def _suspicion_expired(self, node: str, now: float) -> None:
        self._suspicions.pop(node, None)
        m = self.members.get(node)
        if m is not None and m.state == State.SUSPECT:
            self._on_dead(Dead(incarnation=m.info.incarnation, node=node, source=self.node), now)

    def _on_dead(self, d: Dead, now: float, remote: bool = False) -> None:
        m = self._accusation_applies(d.node, d.incarnation, now, remote)
        if m is None:
            return
        left = d.source == d.node
        m = self._set_info(
            m,
            attrs.evolve(
                m.info, state=State.LEFT if left else State.DEAD, incarnation=d.incarnation
            ),
            now,
        )
        self._buried[d.node] = now
        self._liveness_changed(d.node)
        self._suspicions.pop(d.node, None)
        self._queue_accusation(d)
        self._gossip_soon(now)
        kind = EventKind.LEFT if left else EventKind.FAILED
        self._events.append(MemberEvent(kind=kind, member=m.info, at=now))
