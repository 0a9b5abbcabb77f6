"""Peer links: one kept-open TCP connection to each peer, on the cluster port.

Replication, slot streaming and anti-entropy (issue 4 onwards) talk to peers
through these. Each outgoing link has a bounded queue: ``await send(...)`` waits
when it is full (backpressure), ``send_nowait`` raises ``trio.WouldBlock``. A
link task connects, says HELLO, writes queued frames and reads what comes back
on the same connection; on any failure it reconnects with exponential backoff.
Delivery is at most once: a frame being written when the connection breaks is
lost, so callers that need more send acknowledgements of their own.

Incoming links arrive on the cluster port's TCP listener, which the gossip
service shares: a first frame starting with the link marker is handed to
``serve``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any, Final

import attrs
import trio

from keycafe.cluster import frames
from keycafe.cluster.frames import Frame, FrameDecoder
from keycafe.errors import BadPacket
from keycafe.gossip.messages import Address

log = logging.getLogger("keycafe.links")

CONNECT_TIMEOUT: Final = 2.0  # seconds to open a connection and say HELLO
WRITE_TIMEOUT: Final = 5.0  # a peer that takes longer to take a frame is dropped
BACKOFF: Final = (0.1, 5.0)  # first and longest wait between reconnects
QUEUE_FRAMES: Final = 1024  # frames waiting per peer before senders wait

OnFrame = Callable[[str, Frame], None]
OnBroken = Callable[[str], None]


@attrs.define(eq=False)
class LinkCounters:
    frames_sent: int = 0
    frames_received: int = 0
    bad_frames: int = 0
    connects: int = 0
    failures: int = 0


@attrs.define(eq=False)
class _Link:
    peer: str
    addr: Address
    # Frames to write, each with the number of the connection it must go out
    # on: 0 for any, or the one a frame half written straight away began on.
    send: trio.MemorySendChannel[tuple[int, bytes]]
    receive: trio.MemoryReceiveChannel[tuple[int, bytes]]
    connected: bool = False
    established: bool = False  # connected at least once in the current attempt
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    # The connected socket and its number, and the frames put in ``send`` and
    # not yet all written: while none are, a frame may be written at once
    # (``send_nowait``).
    sock: socket.socket | None = None
    connection: int = 0
    unwritten: int = 0


class PeerLinks:
    def __init__(
        self,
        node_id: str,
        *,
        on_frame: OnFrame | None = None,
        queue_frames: int = QUEUE_FRAMES,
        backoff: tuple[float, float] = BACKOFF,
    ) -> None:
        self.node_id = node_id
        self.on_frame = on_frame
        # Told the peer's id when an outgoing link fails: frames written to it
        # may be lost (delivery is at most once), so the sender can repeat them.
        self.on_broken: OnBroken | None = None
        # Called once the frames of one read are all given to ``on_frame``:
        # what they call for (acknowledgements) goes out once per read.
        self.after_frames: Callable[[], None] | None = None
        self.queue_frames = queue_frames
        self.backoff = backoff
        self.counters = LinkCounters()
        self._links: dict[str, _Link] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def connected(self, peer: str) -> bool:
        link = self._links.get(peer)
        return link is not None and link.connected

    def _link(self, peer: str, addr: Address) -> _Link:
        link = self._links.get(peer)
        if link is None:
            assert self._nursery is not None, "PeerLinks.run is not running"
            send, receive = trio.open_memory_channel[tuple[int, bytes]](self.queue_frames)
            link = _Link(peer=peer, addr=addr, send=send, receive=receive)
            self._links[peer] = link
            self._nursery.start_soon(self._run_link, link)
        return link

    def peers(self) -> list[str]:
        return list(self._links)

    def forget(self, peer: str) -> None:
        """Close the link to a peer that is gone (dead or departed): no more
        reconnecting; queued frames are dropped."""
        link = self._links.pop(peer, None)
        if link is not None:
            link.scope.cancel()
            link.send.close()

    async def send(self, peer: str, addr: Address, kind: int, body: Any) -> None:
        """Queue a frame for ``peer``; waits while its queue is full. A frame
        whose link is forgotten meanwhile (the peer died) is dropped with the
        others queued there, not raised into the sender."""
        link = self._link(peer, addr)
        try:
            await link.send.send((0, frames.encode_frame(kind, body)))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return
        link.unwritten += 1

    def send_nowait(self, peer: str, addr: Address, kind: int, body: Any) -> None:
        """Write a frame, or queue it, or raise ``trio.WouldBlock`` if the
        queue is full.

        A connected link with nothing queued takes the frame straight into
        the kernel, in this task: replication's round trips would otherwise
        wake the link's task on both sides for every frame, which cost more
        than the frames themselves. What the kernel does not take is queued
        first, for the link's task to finish on the same connection."""
        link = self._link(peer, addr)
        data = frames.encode_frame(kind, body)
        sock = link.sock
        on = 0
        if sock is not None and not link.unwritten:
            try:
                sent = sock.send(data)
            except OSError:
                sent = 0  # BlockingIOError, or a broken link its task will find
            if sent == len(data):
                self.counters.frames_sent += 1
                return
            if sent:
                # The rest belongs after its head: on another connection it
                # would be read as a frame header (the frame is lost instead).
                data, on = data[sent:], link.connection
        link.send.send_nowait((on, data))
        link.unwritten += 1

    # -- outgoing ----------------------------------------------------------------------

    async def _run_link(self, link: _Link) -> None:
        with link.scope:
            await self._keep_linked(link)

    async def _keep_linked(self, link: _Link) -> None:
        delay = self.backoff[0]
        while True:
            link.established = False
            try:
                await self._connect_and_pump(link)
            except* (OSError, trio.BrokenResourceError, trio.TooSlowError, BadPacket) as group:
                self.counters.failures += 1
                if self.on_broken is not None:
                    self.on_broken(link.peer)
                log.debug(
                    "link to %s (%s:%d) failed: %s", link.peer[:12], *link.addr, group.exceptions[0]
                )
            if link.established:
                delay = self.backoff[0]
            await trio.sleep(delay)
            delay = min(delay * 2, self.backoff[1])

    async def _connect_and_pump(self, link: _Link) -> None:
        with trio.fail_after(CONNECT_TIMEOUT):
            family, _, _, _, sockaddr = (
                await trio.socket.getaddrinfo(*link.addr, type=socket.SOCK_STREAM)
            )[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        # trio wraps this very socket (no copy): ``send_nowait`` writes to it.
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                await stream.socket.connect(sockaddr)
                await stream.send_all(
                    frames.encode_frame(frames.HELLO, [self.node_id, frames.PROTOCOL_VERSION])
                )
            async with trio.open_nursery() as nursery:
                link.connected = link.established = True
                self.counters.connects += 1
                link.connection += 1
                nursery.start_soon(self._read_replies, link, stream, nursery.cancel_scope)
                link.sock = sock
                async for on, data in link.receive:
                    link.unwritten -= 1  # written below, or lost with the link
                    if on and on != link.connection:
                        continue  # the rest of a frame begun on a connection now gone
                    link.sock = None  # ... and until then, nothing may pass it
                    with trio.fail_after(WRITE_TIMEOUT):
                        await stream.send_all(data)
                    self.counters.frames_sent += 1
                    link.sock = sock
        finally:
            link.connected = False
            link.sock = None
            await stream.aclose()

    async def _read_replies(
        self, link: _Link, stream: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        """Frames the peer sends back on our connection; its end ends the link."""
        try:
            await self._read_frames(link.peer, stream, FrameDecoder())
        finally:
            link.sock = None  # nothing more straight in: the connection is ending
            scope.cancel()  # the link task reconnects

    # -- incoming ----------------------------------------------------------------------

    async def serve(self, stream: trio.SocketStream, first_payload: bytes) -> None:
        """Serve an incoming link whose first frame's payload was already read."""
        try:
            hello = frames.decode_payload_untrusted(first_payload)
            if hello.kind != frames.HELLO or type(hello.body) is not list or not hello.body:
                raise BadPacket("a link must start with HELLO")
            peer = str(hello.body[0])
            await self._read_frames(peer, stream, FrameDecoder(), answer=True)
        except BadPacket as exc:
            self.counters.bad_frames += 1
            log.info("dropped a link: %s", exc)
        except (OSError, trio.BrokenResourceError) as exc:
            log.debug("incoming link closed: %s", exc)

    async def _read_frames(
        self, peer: str, stream: trio.SocketStream, decoder: FrameDecoder, answer: bool = False
    ) -> None:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            decoder.receive_data(data)
            while isinstance(frame := decoder.next_frame(), Frame):
                self.counters.frames_received += 1
                if answer and frame.kind == frames.PING:
                    with trio.fail_after(WRITE_TIMEOUT):
                        await stream.send_all(frames.encode_frame(frames.PONG, frame.body))
                elif self.on_frame is not None:
                    self.on_frame(peer, frame)
            if self.after_frames is not None:
                self.after_frames()
