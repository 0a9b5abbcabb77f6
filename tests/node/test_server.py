"""The trio shell on real loopback sockets (port 0), in-process."""

from __future__ import annotations

import select
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import hiredis
import pytest
import trio
import trio.lowlevel

from keycafe.errors import ConfigError
from keycafe.node.node import NodeConfig, serve_node
from keycafe.server import ServerState
from tests.node.helpers import CLIENT_IO


def cmd(*args: bytes | str) -> bytes:
    parts = [a if isinstance(a, bytes) else a.encode() for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


class Client:
    """A raw RESP client over a trio stream, decoding replies with hiredis."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.reader = hiredis.Reader()

    async def replies(self, n: int) -> list[object]:
        out: list[object] = []
        with trio.fail_after(10):
            while len(out) < n:
                item = self.reader.gets()
                if item is not False:
                    out.append(item)
                    continue
                data = await self.stream.receive_some(65536)
                if not data:
                    raise EOFError(f"closed after {len(out)} replies")
                self.reader.feed(data)
        return out

    async def call(self, *args: bytes | str) -> object:
        await self.stream.send_all(cmd(*args))
        return (await self.replies(1))[0]

    async def closed_by_server(self) -> bool:
        with trio.fail_after(10):
            while True:
                data = await self.stream.receive_some(65536)
                if not data:
                    return True
                self.reader.feed(data)


Connect = Callable[[ServerState], Awaitable[Client]]


@pytest.fixture(params=CLIENT_IO)
def client_io(request: pytest.FixtureRequest) -> str:
    """Every test here runs against the epoll hub and the portable path."""
    return str(request.param)


@pytest.fixture
async def trio_node(nursery: trio.Nursery, client_io: str) -> ServerState:
    state: ServerState = await nursery.start(serve_node, NodeConfig(port=0, client_io=client_io))
    return state


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Open clients to a node; all are closed when the test ends."""
    opened: list[Client] = []

    async def open_client(state: ServerState) -> Client:
        client = Client(await trio.open_tcp_stream("127.0.0.1", state.config.me.port))
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.stream.aclose()


async def test_pipelined_requests_are_answered_in_order(
    trio_node: ServerState, connect: Connect
) -> None:
    c = await connect(trio_node)
    batch = b"".join(cmd("SET", f"k{i}", f"v{i}") for i in range(500))
    batch += b"".join(cmd("GET", f"k{i}") for i in range(500))
    await c.stream.send_all(batch)
    replies = await c.replies(1000)
    assert replies[:500] == [b"OK"] * 500
    assert replies[500:] == [f"v{i}".encode() for i in range(500)]


async def test_inline_commands_over_the_wire(trio_node: ServerState, connect: Connect) -> None:
    c = await connect(trio_node)
    await c.stream.send_all(b'PING\r\nSET greeting "hello world"\r\nGET greeting\r\n')
    assert await c.replies(3) == [b"PONG", b"OK", b"hello world"]


async def test_requests_split_across_packets(trio_node: ServerState, connect: Connect) -> None:
    c = await connect(trio_node)
    data = cmd("SET", "split", "x" * 5000) + cmd("GET", "split")
    for i in range(0, len(data), 7):
        await c.stream.send_all(data[i : i + 7])
    assert await c.replies(2) == [b"OK", b"x" * 5000]


async def test_a_large_value_round_trips(trio_node: ServerState, connect: Connect) -> None:
    c = await connect(trio_node)
    value = bytes(range(256)) * 16384  # 4 MiB
    assert await c.call("SET", "big", value) == b"OK"
    assert await c.call("GET", "big") == value


async def test_protocol_error_closes_only_that_connection(
    trio_node: ServerState, connect: Connect
) -> None:
    good = await connect(trio_node)
    bad = await connect(trio_node)
    await bad.stream.send_all(cmd("SET", "a", "1") + b"*1\r\n$-7\r\n")
    replies = await bad.replies(2)
    assert replies[0] == b"OK"
    assert isinstance(replies[1], hiredis.ReplyError)
    assert str(replies[1]) == "ERR Protocol error: invalid bulk length"
    assert await bad.closed_by_server()
    assert await good.call("GET", "a") == b"1"
    assert trio_node.counters.protocol_errors == 1


async def test_quit_replies_then_closes(trio_node: ServerState, connect: Connect) -> None:
    c = await connect(trio_node)
    await c.stream.send_all(cmd("QUIT") + cmd("SET", "after", "quit"))
    assert await c.replies(1) == [b"OK"]
    assert await c.closed_by_server()
    other = await connect(trio_node)
    assert await other.call("GET", "after") is None


async def test_a_client_that_never_reads_cannot_grow_server_memory(
    trio_node: ServerState, connect: Connect
) -> None:
    await (await connect(trio_node)).call("SET", "v", b"x" * 100_000)
    hog = socket.create_connection(("127.0.0.1", trio_node.config.me.port))
    hog.setblocking(False)
    request = cmd("GET", "v") * 100
    sent = 0
    stalled = False
    # Each GET asks for 100 kB of reply. If the server kept reading without
    # writing, it would accept requests for gigabytes; it must stop reading
    # once the socket buffers fill, so our sends stall.
    with trio.fail_after(20):
        while sent < 200_000_000:
            try:
                sent += hog.send(request)
            except BlockingIOError:
                # Stalled for good only if the socket stays unwritable for a
                # whole second: a server that still read (however slowly)
                # would make room within that.
                with trio.move_on_after(1.0) as waited:
                    await trio.lowlevel.wait_writable(hog)
                if waited.cancelled_caught:
                    stalled = True
                    break
    assert stalled, f"server kept reading: {sent} bytes of requests accepted"
    assert sent < 50_000_000
    other = await connect(trio_node)
    assert await other.call("PING") == b"PONG"  # the hog blocks nobody else
    hog.close()


async def test_idle_clients_are_closed_after_timeout(
    nursery: trio.Nursery, connect: Connect, client_io: str
) -> None:
    config = NodeConfig(port=0, timeout=1, client_io=client_io)
    state: ServerState = await nursery.start(serve_node, config)
    idle = await connect(state)
    busy = await connect(state)
    pongs = 0

    async def keep_busy() -> None:
        nonlocal pongs
        while True:
            assert await busy.call("PING") == b"PONG"
            pongs += 1
            await trio.sleep(0.2)

    async with trio.open_nursery() as inner:
        inner.start_soon(keep_busy)
        assert await idle.closed_by_server()
        inner.cancel_scope.cancel()
    assert pongs >= 4  # busy kept talking for the whole second and was kept
    assert await busy.call("PING") == b"PONG"


async def test_maxclients(nursery: trio.Nursery, connect: Connect, client_io: str) -> None:
    config = NodeConfig(port=0, maxclients=2, client_io=client_io)
    state: ServerState = await nursery.start(serve_node, config)
    a = await connect(state)
    b = await connect(state)
    assert await a.call("PING") == b"PONG"
    assert await b.call("PING") == b"PONG"
    c = await connect(state)
    reply = (await c.replies(1))[0]
    assert isinstance(reply, hiredis.ReplyError)
    assert str(reply) == "ERR max number of clients reached"
    assert state.counters.rejected_connections == 1


async def test_slow_partial_request_does_not_block_others(
    trio_node: ServerState, connect: Connect
) -> None:
    slow = await connect(trio_node)
    await slow.stream.send_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk")  # and then nothing
    fast = await connect(trio_node)
    for _ in range(20):
        assert await fast.call("PING") == b"PONG"
    await slow.stream.send_all(b"\r\n$1\r\nv\r\n")
    assert await slow.replies(1) == [b"OK"]


async def test_active_expiry_runs_on_its_timer(trio_node: ServerState, connect: Connect) -> None:
    c = await connect(trio_node)
    await c.stream.send_all(b"".join(cmd("SET", f"t{i}", "v", "PX", "50") for i in range(100)))
    assert await c.replies(100) == [b"OK"] * 100
    # Polled with a deadline: the expiry timer has no event to wait on.
    with trio.fail_after(10):
        while trio_node.store.count():  # noqa: ASYNC110
            await trio.sleep(0.02)
    assert trio_node.store.stats.expired_keys == 100


@pytest.mark.parametrize("chunk", [1, 3])
async def test_hello3_over_the_wire(trio_node: ServerState, chunk: int, connect: Connect) -> None:
    c = await connect(trio_node)
    data = cmd("HELLO", "3") + cmd("GET", "missing")
    for i in range(0, len(data), chunk):
        await c.stream.send_all(data[i : i + chunk])
    hello, missing = await c.replies(2)
    assert isinstance(hello, dict)
    assert hello[b"proto"] == 3
    assert missing is None


def info_stats(reply: object) -> dict[str, str]:
    assert isinstance(reply, bytes)
    return dict(line.split(":", 1) for line in reply.decode().splitlines() if ":" in line)


async def test_resetstat_is_seen_by_connections_already_open(
    trio_node: ServerState, connect: Connect
) -> None:
    c = await connect(trio_node)
    assert await c.call("SET", "k", "v") == b"OK"
    assert isinstance(await c.call("NOSUCHCOMMAND"), hiredis.ReplyError)
    # RESETSTAT and an error reply in one read: the error is counted after the reset.
    await c.stream.send_all(cmd("CONFIG", "RESETSTAT") + cmd("MGET", "a", "b"))
    ok, crossslot = await c.replies(2)
    assert ok == b"OK"
    assert isinstance(crossslot, hiredis.ReplyError)
    assert await c.call("GET", "k") == b"v"
    figures = info_stats(await c.call("INFO", "stats"))
    assert figures["total_error_replies"] == "1"
    # CONFIG RESETSTAT, MGET and GET (INFO counts once its batch has run).
    assert figures["total_commands_processed"] == "3"
    assert figures["total_connections_received"] == "0"


async def test_without_epoll_the_portable_path_serves(
    nursery: trio.Nursery, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a platform without epoll (macOS, the BSDs) "auto" takes the
    portable path, and asking for epoll is a configuration error."""
    monkeypatch.delattr(select, "epoll", raising=False)
    with pytest.raises(ConfigError, match="epoll needs Linux"):
        NodeConfig(client_io="epoll").validate()
    state: ServerState = await nursery.start(serve_node, NodeConfig(port=0))
    assert not hub_running()
    c = await connect(state)
    await c.stream.send_all(cmd("SET", "k", "v") + cmd("GET", "k"))
    assert await c.replies(2) == [b"OK", b"v"]


def hub_running() -> bool:
    """Whether an epoll hub task runs anywhere in this trio run."""
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task.name.endswith("ClientHub.run"):
            return True
        for child in task.child_nurseries:
            todo.extend(child.child_tasks)
    return False


async def test_the_client_io_asked_for_is_the_one_running(
    trio_node: ServerState, client_io: str
) -> None:
    assert hub_running() == (client_io == "epoll")
