"""Peer links over real loopback sockets, in-process."""

from __future__ import annotations

import socket
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from keycafe.cluster import frames
from keycafe.cluster.frames import Frame, FrameDecoder
from keycafe.node.links import PeerLinks
from keycafe.node.node import NodeConfig, serve_node
from keycafe.server import ServerState


class Peer:
    """A PeerLinks with a listener of its own, as the cluster port provides."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.got: list[tuple[str, Frame]] = []
        self.links = PeerLinks(
            name,
            on_frame=lambda peer, f: self.got.append((peer, f)),
            queue_frames=8,
            backoff=(0.02, 0.2),
        )
        self.port = 0

    async def start(self, nursery: trio.Nursery, port: int = 0) -> trio.CancelScope:
        scope = trio.CancelScope()

        async def serve(task_status: trio.TaskStatus[None]) -> None:
            with scope:
                listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
                self.port = listeners[0].socket.getsockname()[1]
                async with trio.open_nursery() as inner:
                    await inner.start(self.links.run)

                    async def handle(stream: trio.SocketStream) -> None:
                        header = await stream.receive_some(4)
                        size = int.from_bytes(header, "big")
                        payload = b""
                        while len(payload) < size:
                            payload += await stream.receive_some(size - len(payload))
                        await self.links.serve(stream, payload)

                    task_status.started()
                    await trio.serve_listeners(handle, listeners)

        await nursery.start(serve)
        return scope


async def wait_for(predicate: object, seconds: float = 10) -> None:
    assert callable(predicate)
    with trio.fail_after(seconds):
        while not predicate():  # noqa: ASYNC110 - polling observable state with a deadline
            await trio.sleep(0.01)


async def test_frames_arrive_in_order_and_pings_are_answered(nursery: trio.Nursery) -> None:
    a, b = Peer("a"), Peer("b")
    await a.start(nursery)
    await b.start(nursery)
    for i in range(500):
        await a.links.send("b", ("127.0.0.1", b.port), frames.DATA, [i, b"x" * 100])
    await a.links.send("b", ("127.0.0.1", b.port), frames.PING, 42)
    await wait_for(lambda: len(b.got) == 500 and len(a.got) == 1)
    assert [f.body[0] for _, f in b.got] == list(range(500))
    assert {peer for peer, _ in b.got} == {"a"}  # the HELLO named the sender
    assert a.got == [("b", Frame(frames.PONG, 42))]
    assert a.links.connected("b")


async def test_a_link_reconnects_to_a_restarted_peer(nursery: trio.Nursery) -> None:
    a, b = Peer("a"), Peer("b")
    await a.start(nursery)
    b_scope = await b.start(nursery)
    port = b.port
    await a.links.send("b", ("127.0.0.1", port), frames.DATA, "before")
    await wait_for(lambda: len(b.got) == 1)
    b_scope.cancel()  # the peer goes away
    await wait_for(lambda: not a.links.connected("b"))
    b2 = Peer("b")
    await b2.start(nursery, port=port)  # and comes back on the same port
    await a.links.send("b", ("127.0.0.1", port), frames.DATA, "after")
    await wait_for(lambda: ("a", Frame(frames.DATA, "after")) in b2.got)
    assert a.links.counters.connects >= 2


def unused_port() -> int:
    """A loopback port nothing listens on (bound a moment, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_queues_are_bounded_when_a_peer_is_down(nursery: trio.Nursery) -> None:
    a = Peer("a")
    await a.start(nursery)
    nobody = unused_port()
    accepted = 0
    try:
        for i in range(100):
            a.links.send_nowait("ghost", ("127.0.0.1", nobody), frames.DATA, i)
            accepted += 1
    except trio.WouldBlock:
        pass
    assert 8 <= accepted <= 9  # the queue, plus at most one frame being written
    assert a.links.counters.frames_sent == 0


async def test_forgetting_a_gone_peer_stops_its_reconnects(nursery: trio.Nursery) -> None:
    a = Peer("a")
    await a.start(nursery)
    nobody = unused_port()
    a.links.send_nowait("ghost", ("127.0.0.1", nobody), frames.DATA, 1)
    await wait_for(lambda: a.links.counters.failures >= 2)  # it keeps trying
    assert a.links.peers() == ["ghost"]
    a.links.forget("ghost")
    assert a.links.peers() == []
    failures = a.links.counters.failures
    await trio.sleep(0.5)  # more than two backoff periods (0.2 s at most here)
    assert a.links.counters.failures == failures


async def test_garbage_on_a_link_is_dropped_and_counted(nursery: trio.Nursery) -> None:
    a, b = Peer("a"), Peer("b")
    await a.start(nursery)
    await b.start(nursery)
    bad = await trio.open_tcp_stream("127.0.0.1", b.port)
    payload = bytes([frames.LINK]) + b"\xc1\xc1"
    await bad.send_all(len(payload).to_bytes(4, "big") + payload)
    with trio.fail_after(5):
        assert await bad.receive_some(10) == b""  # hung up
    await bad.aclose()
    assert b.links.counters.bad_frames == 1
    await a.links.send("b", ("127.0.0.1", b.port), frames.DATA, "still fine")
    await wait_for(lambda: len(b.got) == 1)


async def test_a_node_serves_links_on_its_cluster_port(nursery: trio.Nursery) -> None:
    state: ServerState = await nursery.start(serve_node, NodeConfig(port=0))
    a = Peer("a")
    await a.start(nursery)
    addr = ("127.0.0.1", state.config.me.cluster_port)
    await a.links.send(state.config.me.node_id, addr, frames.PING, "hello node")
    await wait_for(lambda: a.got == [(state.config.me.node_id, Frame(frames.PONG, "hello node"))])


async def test_a_sender_waiting_on_a_forgotten_peer_is_let_go(nursery: trio.Nursery) -> None:
    """Frames to a replica that died fill its queue and the sender waits;
    gossip then says it is dead and the link is forgotten. The waiting send
    must return (its frame dropped), not raise ClosedResourceError, which
    would take the node's whole nursery down."""
    a = Peer("a")
    await a.start(nursery)
    nobody = unused_port()
    sent = 0
    scope = trio.CancelScope()

    async def sender() -> None:
        nonlocal sent
        with scope:
            while True:
                await a.links.send("ghost", ("127.0.0.1", nobody), frames.DATA, sent)
                sent += 1

    nursery.start_soon(sender)
    await wait_for(lambda: sent >= 8)
    await trio.testing.wait_all_tasks_blocked()
    blocked_at = sent  # the queue is full: the sender waits
    a.links.forget("ghost")
    await wait_for(lambda: sent > blocked_at)  # the waiting send returned
    scope.cancel()


async def test_frames_written_at_once_never_pass_queued_ones(nursery: trio.Nursery) -> None:
    """``send_nowait`` writes straight into the kernel while nothing is
    queued; once a peer stops reading, frames queue behind the half-written
    one. When it reads again, every frame is there, whole and in order."""
    reading = trio.Event()
    got: list[Frame] = []

    async def slow_peer(stream: trio.SocketStream) -> None:
        await reading.wait()
        decoder = FrameDecoder()
        while data := await stream.receive_some(1 << 20):
            decoder.receive_data(data)
            while isinstance(frame := decoder.next_frame(), Frame):
                got.append(frame)

    listeners = await nursery.start(partial(trio.serve_tcp, slow_peer, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    a = PeerLinks("a", queue_frames=1000)
    await nursery.start(a.run)
    addr = ("127.0.0.1", port)
    a.send_nowait("b", addr, frames.DATA, [0, b""])
    await wait_for(lambda: a.connected("b") and a.counters.frames_sent >= 1)
    big = b"x" * 100_000
    for i in range(1, 200):  # ~20 MB: far more than the kernel buffers
        a.send_nowait("b", addr, frames.DATA, [i, big])
        if i % 20 == 0:
            await trio.sleep(0.01)  # the link's task writes some of the queue meanwhile
    direct = a.counters.frames_sent
    reading.set()
    await wait_for(lambda: len(got) == 201)
    assert got[0] == Frame(frames.HELLO, ["a", frames.PROTOCOL_VERSION])
    assert [f.body[0] for f in got[1:]] == list(range(200))
    assert all(f.body[1] == big for f in got[2:])
    assert direct >= 2  # some went straight to the kernel, the rest through the queue


async def test_a_frame_begun_on_a_connection_that_ended_is_not_finished_on_the_next(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The peer ends a link; before the link's task has noticed, another task
    sends a frame too big for the kernel's buffer. Its tail must not open the
    next connection: the peer would read it as a frame header."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.setblocking(False)

    async def accept() -> socket.socket:
        while True:
            await trio.lowlevel.wait_readable(listener)
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                continue
            conn.setblocking(False)
            return conn

    a = PeerLinks("a", queue_frames=1000)
    await nursery.start(a.run)
    addr = ("127.0.0.1", listener.getsockname()[1])
    sent_late = trio.Event()
    read_replies = PeerLinks._read_replies

    async def reader_then_a_late_frame(self: PeerLinks, *args: Any) -> None:
        try:
            await read_replies(self, *args)
        finally:
            if not sent_late.is_set():  # as a hub flush or an acknowledgement would
                self.send_nowait("b", addr, frames.DATA, [1, b"x" * 4_000_000])
                sent_late.set()

    monkeypatch.setattr(PeerLinks, "_read_replies", reader_then_a_late_frame)
    a.send_nowait("b", addr, frames.DATA, [0, b""])
    first = await accept()
    await wait_for(lambda: a.connected("b") and a.counters.frames_sent >= 1)
    first.shutdown(socket.SHUT_WR)  # the peer ends the link
    await sent_late.wait()
    second = await accept()
    a.send_nowait("b", addr, frames.DATA, [2, b""])
    decoder, got = FrameDecoder(), []
    with trio.fail_after(10):
        while not got or got[-1].body[0] != 2:
            await trio.lowlevel.wait_readable(second)
            decoder.receive_data(second.recv(1 << 20))
            while isinstance(frame := decoder.next_frame(), Frame):  # BadPacket if a tail came
                got.append(frame)
    assert got[0].kind == frames.HELLO
    assert [f.body[0] for f in got[1:]] in ([2], [1, 2])  # the late frame whole, or not at all
    for s in (first, second, listener):
        s.close()
