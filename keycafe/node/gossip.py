"""The gossip shell: UDP and TCP on the cluster port around the sans-I/O core.

One UDP socket carries SWIM's datagrams; a TCP listener on the same port number
serves streams (push-pull state exchange and fallback pings), each a request
frame answered by a reply frame, both length-prefixed. Time for the core is
``trio.current_time()``; every core call is followed by ``_flush``, which sends
its datagrams, starts its stream jobs, logs its events and calls
``after_flush`` (the cluster layer). The ring rides on the core through a
``RingKeeper``.

For the layer above: ``service.ring`` (the ring this node holds, or None),
``service.announce(key, value)`` (set our gossip metadata and send it),
``service.core.members`` (the member table) and ``after_flush`` (called after
every flush with whether a member changed state).
"""

from __future__ import annotations

import logging
import random
import socket
import struct
import time
from collections.abc import Callable
from typing import Final

import attrs
import trio

from keycafe.cluster import effects, frames
from keycafe.cluster.ring_record import Ring
from keycafe.cluster.ringcast import RingKeeper
from keycafe.errors import BadPacket, StartupError
from keycafe.gossip.config import GossipConfig
from keycafe.gossip.core import EventKind, Gossip, MemberEvent, StreamJob
from keycafe.gossip.messages import Address, MemberInfo, State
from keycafe.node.links import PeerLinks
from keycafe.server.state import MemberView

log = logging.getLogger("keycafe.gossip")

FRAME: Final = struct.Struct(">I")
# A push-pull of 10,000 members is about 1 MB; anything far larger is garbage.
MAX_FRAME: Final = 16 * 1024 * 1024
STREAM_TIMEOUT: Final = 5.0  # seconds for one TCP exchange, connect included
JOIN_BACKOFF: Final = (0.5, 30.0)  # first and longest wait between seed rounds
# Datagrams handled per task step: each costs ~0.1-1 ms (decode, the core, the
# layer above), so a batch holds the loop a few ms at most.
DATAGRAM_BATCH: Final = 16


@attrs.define(eq=False)
class GossipCounters:
    """What only the shell sees (the core counts packets in ``core.stats``)."""

    bad_frames: int = 0
    datagrams_sent: int = 0
    stream_failures: int = 0


async def _read_frame(stream: trio.SocketStream) -> bytes:
    header = await _read_exactly(stream, FRAME.size)
    (size,) = FRAME.unpack(header)
    if size > MAX_FRAME:
        raise BadPacket(f"frame of {size} bytes")
    return await _read_exactly(stream, size)


async def _read_exactly(stream: trio.SocketStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.receive_some(min(65536, n - len(buf)))
        if not chunk:
            raise BadPacket("stream closed inside a frame")
        buf += chunk
    return bytes(buf)


def frame(payload: bytes) -> bytes:
    return FRAME.pack(len(payload)) + payload


class GossipService:
    """Runs a ``Gossip`` core on real sockets; one per node."""

    def __init__(
        self,
        *,
        me: MemberInfo,
        config: GossipConfig,
        seeds: list[Address],
        links: PeerLinks | None = None,
    ) -> None:
        self.links = links
        self.seeds = seeds
        self.counters = GossipCounters()
        now = trio.current_time()
        # The core numbers probe rounds by the wall clock, so that nodes on
        # different hosts (NTP-synchronised) share them; trio's clock is per process.
        self.core = Gossip(
            me, config=config, rng=random.Random(), now=now, wall_offset=time.time() - now
        )
        self.keeper = RingKeeper.attach(self.core)
        self._udp: socket.socket | None = None
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        # A node started with seeds takes no part in elections until it has
        # joined: alone, it would elect itself and found a ring of its own.
        self.joined = not seeds
        # Called after every flush with whether a member changed state: the
        # cluster layer (keycafe/node/slots.py) runs its step there.
        self.after_flush: Callable[[bool], None] | None = None

    @property
    def ring(self) -> Ring | None:
        """The ring this node holds: the newest the coordinator published that
        reached it."""
        return self.keeper.ring

    def announce(self, key: str, value: object) -> None:
        """Set ``key`` to ``value`` in our gossip metadata and send it."""
        effects.announce(self.core, key, value, trio.current_time())
        self.flush()

    @staticmethod
    def initial_incarnation() -> int:
        """Start above any incarnation an earlier process with our id can have had."""
        return int(time.time())

    async def run(
        self,
        udp: socket.socket,
        listener: trio.SocketListener,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self._udp = udp
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._receive_datagrams, udp)
                nursery.start_soon(self._serve_streams, listener)
                nursery.start_soon(self._timers)
                if self.seeds:
                    nursery.start_soon(self._join)
                self._flush()
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    # Shutdown is a graceful leave: tell the others before the
                    # socket goes (sends are synchronous, nothing to await).
                    self._leave()
        finally:
            self._udp = None
            trio.lowlevel.notify_closing(udp)
            udp.close()

    # -- the loops ---------------------------------------------------------------------

    async def _receive_datagrams(self, udp: socket.socket) -> None:
        while True:
            await trio.lowlevel.wait_readable(udp)
            # At most a batch per task step (wait_readable parks the task until
            # the next I/O poll, so the others run in between): a socket that
            # never runs dry (100 members gossiping to a busy node) held one
            # node's loop for 28 s, and every member suspected it.
            for _ in range(DATAGRAM_BATCH):
                try:
                    data, addr = udp.recvfrom(65536)
                except BlockingIOError:
                    break
                except OSError as exc:  # e.g. an ICMP error surfacing on Linux
                    log.debug("udp receive error: %s", exc)
                    continue
                self._datagram(data, addr)

    def _datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        self.core.receive_datagram(data, (addr[0], addr[1]), trio.current_time())
        self._flush()

    async def _timers(self) -> None:
        while True:
            deadline = self.core.get_timer()
            self._wake = trio.Event()
            with trio.move_on_at(deadline if deadline is not None else trio.current_time() + 1):
                await self._wake.wait()
            now = trio.current_time()
            if deadline is not None and now >= deadline:
                self.core.handle_timer(now)
                self._flush()

    async def _serve_streams(self, listener: trio.SocketListener) -> None:
        async with listener:
            while True:
                stream = await listener.accept()
                assert self._nursery is not None
                self._nursery.start_soon(self._serve_stream, stream)

    async def _serve_stream(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                with trio.fail_after(STREAM_TIMEOUT):
                    request = await _read_frame(stream)
                if request[:1] == bytes([frames.LINK]) and self.links is not None:
                    await self.links.serve(stream, request)  # a long-lived peer link
                    return
                with trio.fail_after(STREAM_TIMEOUT):
                    peer = stream.socket.getpeername()
                    reply = self.core.handle_stream(
                        request, (peer[0], peer[1]), trio.current_time()
                    )
                    self._flush()
                    if reply is not None:
                        await stream.send_all(frame(reply))
            except (BadPacket, trio.TooSlowError, trio.BrokenResourceError, OSError) as exc:
                self.counters.bad_frames += 1
                log.debug("stream from a peer failed: %s", exc)

    async def _exchange(self, job: StreamJob) -> bytes | None:
        """Run one stream job; the reply frame, or None if it failed."""
        try:
            with trio.fail_after(STREAM_TIMEOUT):
                stream = await trio.open_tcp_stream(*job.addr)
                async with stream:
                    await stream.send_all(frame(job.payload))
                    return await _read_frame(stream)
        except (BadPacket, trio.TooSlowError, trio.BrokenResourceError, OSError) as exc:
            self.counters.stream_failures += 1
            log.debug("%s with %s:%s failed: %s", job.kind, job.addr[0], job.addr[1], exc)
            return None

    async def _run_job(self, job: StreamJob) -> None:
        reply = await self._exchange(job)
        now = trio.current_time()
        if reply is None:
            self.core.stream_failed(job, now)
        else:
            self.core.receive_stream_reply(job, reply, now)
        self._flush()

    async def _join(self) -> None:
        """Try every seed, with growing pauses, until one answers a push-pull."""
        wait = JOIN_BACKOFF[0]
        while True:
            for seed in self.seeds:
                job = self.core.join_job(seed)
                reply = await self._exchange(job)
                if reply is not None:
                    self.core.receive_stream_reply(job, reply, trio.current_time())
                    self.joined = True
                    self._flush()
                    log.info("joined the cluster through seed %s:%d", *seed)
                    return
            log.warning("no seed answered (%s); retrying in %.1fs", self._seed_text(), wait)
            await trio.sleep(wait)
            wait = min(wait * 2, JOIN_BACKOFF[1])

    def _seed_text(self) -> str:
        return ", ".join(f"{h}:{p}" for h, p in self.seeds)

    def _leave(self) -> None:
        self.core.leave(trio.current_time())
        self._flush()  # datagrams go out synchronously
        log.info("announced a graceful leave")

    # -- output ------------------------------------------------------------------------

    def flush(self) -> None:
        """Send what the core has queued after a change made from outside (our
        own metadata)."""
        self._flush()

    def _flush(self) -> None:
        self._send_out()
        changed = False
        while (event := self.core.next_event()) is not None:
            changed = True
            self._log_event(event)
        if self.after_flush is not None:
            self.after_flush(changed)
            self._send_out()  # what the layer above queued (its metadata)
        self._wake.set()

    def _send_out(self) -> None:
        core = self.core
        udp = self._udp
        for data, addr in core.datagrams_to_send(trio.current_time()):
            if udp is None:
                break
            try:
                # A datagram socket never blocks for long; a full buffer drops
                # the packet, which SWIM tolerates like any other loss.
                udp.sendto(data, addr)
                self.counters.datagrams_sent += 1
            except OSError as exc:
                log.debug("udp send to %s:%s failed: %s", addr[0], addr[1], exc)
        while (job := core.next_stream_job()) is not None:
            if self._nursery is not None:
                self._nursery.start_soon(self._run_job, job)

    def _log_event(self, event: MemberEvent) -> None:
        m = event.member
        level = logging.INFO
        if event.kind in (EventKind.SUSPECTED, EventKind.REAPED):
            level = logging.DEBUG
        elif event.kind == EventKind.FAILED:
            level = logging.WARNING
        log.log(level, "member %s (%s:%d) %s", m.node[:12], m.addr[0], m.addr[1], event.kind.value)


async def open_cluster_port(host: str, port: int) -> tuple[socket.socket, trio.SocketListener]:
    """UDP and TCP bound to the same port number (port 0: a free one for both)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(20):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            udp.bind((host, port))
            udp.setblocking(False)
            bound = udp.getsockname()[1]
            listeners = await trio.open_tcp_listeners(bound, host=host)
        except OSError as exc:
            udp.close()
            if port:
                raise StartupError(
                    f"cannot use cluster port {host}:{port}: {exc.strerror or exc}"
                ) from exc
            continue  # port 0: the UDP port was free but its TCP twin was not; retry
        return udp, listeners[0]
    raise StartupError(f"no free cluster port on {host}")


def members_view(service: GossipService) -> list[MemberView]:
    """The member table for CLUSTER NODES, times converted to unix ms."""
    now_mono, now_wall = trio.current_time(), time.time()

    def wall_ms(t: float) -> int:
        return int((now_wall - (now_mono - t)) * 1000) if t else 0

    return [
        MemberView(
            node_id=m.info.node,
            host=m.info.client_addr[0],
            port=m.info.client_addr[1],
            cluster_port=m.info.addr[1],
            state=m.info.state.name.lower(),
            ping_sent_ms=wall_ms(m.last_ping),
            pong_recv_ms=wall_ms(m.last_ack),
        )
        for m in service.core.members.values()
    ]


def gossip_figures(service: GossipService) -> dict[str, int | str]:
    """Figures for CLUSTER INFO, which prints each as ``keycafe_<name>``."""
    states = [m.state for m in service.core.members.values()]
    return {
        "gossip_members_alive": states.count(State.ALIVE),
        "gossip_members_suspect": states.count(State.SUSPECT),
        "gossip_members_dead": states.count(State.DEAD),
        "gossip_health_score": service.core.awareness.score,
        "gossip_incarnation": service.core.me.incarnation,
        "gossip_datagrams_sent": service.counters.datagrams_sent,
        "gossip_datagrams_received": service.core.stats.datagrams_received,
        "gossip_bad_packets": service.core.stats.bad_packets,
        "gossip_bad_frames": service.counters.bad_frames,
        "gossip_unrefutable": service.core.stats.unrefutable,
        "gossip_ring_pulls": service.keeper.pulls,
        "gossip_bad_ring_payloads": service.keeper.bad_payloads,
        "gossip_stream_failures": service.counters.stream_failures,
    }
