"""Replies to replicated writes wait for the replicas, on real loopback
sockets: the client hub holds them without a task, and its connection's
task does the same on the portable path. The durability here is a fake the
test releases by hand, so each verdict and its timing are the test's to say."""

from __future__ import annotations

import math
import socket
import struct
from collections.abc import AsyncIterator, Callable, Hashable

import attrs
import pytest
import trio

from keycafe.node.server import bind_listener, serve_clients
from keycafe.server import ServerConfig, ServerState
from keycafe.store.engine import REPLICATED
from keycafe.store.keyslot import SLOT_COUNT
from tests.node.helpers import CLIENT_IO
from tests.node.test_server import Client
from tests.server.conftest import ME


@attrs.define(eq=False)
class FakeDurability:
    """Writes are durable when the test says: ``release`` answers the holds
    and waits registered so far, all with one verdict."""

    timeout: float = math.inf
    on_release: Callable[[Hashable, bool], None] | None = None
    batching: bool = False
    held: list[tuple[Hashable, int, int, int]] = attrs.Factory(list)
    settled: int = 0  # the highest write number ``release`` made durable
    flushes: int = 0
    unflushed: int = 0  # holds since the last flush
    held_batching: bool = True  # every hold came while the hub was batching
    _waiters: list[tuple[trio.Event, list[bool]]] = attrs.Factory(list)
    waited: list[tuple[int, int, int]] = attrs.Factory(list)  # every wait's numbers

    def settle(self) -> int:
        return self.settled

    def hold(self, token: Hashable, first: int, last: int, read: int = 0) -> None:
        self.held.append((token, first, last, read))
        self.unflushed += 1
        self.held_batching &= self.batching

    def cancel(self, token: Hashable) -> None:
        self.held = [h for h in self.held if h[0] is not token]

    def flush(self) -> None:
        assert not self.batching  # the cycle is over when it flushes
        self.flushes += 1
        self.unflushed = 0

    async def wait(self, first: int, last: int, read: int = 0) -> bool:
        event, verdict = trio.Event(), []
        self._waiters.append((event, verdict))
        self.waited.append((first, last, read))
        await event.wait()
        return verdict[0]

    def pending(self) -> int:
        return len(self.held) + len(self._waiters)

    def release(self, ok: bool = True) -> None:
        held, self.held = self.held, []
        top = [max(h[2], h[3]) for h in held] + [max(w[1:]) for w in self.waited]
        self.settled = max([self.settled, *top])
        for token, _, _, _ in held:
            assert self.on_release is not None
            self.on_release(token, ok)
        waiters, self._waiters = self._waiters, []
        for event, verdict in waiters:
            verdict.append(ok)
            event.set()


@attrs.define
class Served:
    state: ServerState
    durability: FakeDurability
    port: int
    clients: list[Client] = attrs.Factory(list)

    async def client(self) -> Client:
        self.clients.append(Client(await trio.open_tcp_stream("127.0.0.1", self.port)))
        return self.clients[-1]


@pytest.fixture(params=CLIENT_IO)
async def served(nursery: trio.Nursery, request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    """A node's client side whose every slot replicates (each write waits)."""
    state = ServerState.create(ServerConfig(me=ME), 1_700_000_000_000)
    state.store.set_watch(REPLICATED, range(SLOT_COUNT))
    durability = FakeDurability()
    state.durability = durability
    listener = bind_listener("127.0.0.1", 0)
    port = listener.getsockname()[1]
    await nursery.start(
        lambda task_status: serve_clients(
            state, listener, portable=request.param == "portable", task_status=task_status
        )
    )
    served = Served(state, durability, port)
    yield served
    for client in served.clients:
        await client.stream.aclose()


async def until(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(10):
        while not predicate():  # noqa: ASYNC110 - polling observable state with a deadline
            await trio.sleep(0.005)


async def nothing_within(client: Client, seconds: float) -> bool:
    """True if no byte comes from the server for ``seconds``."""
    with trio.move_on_after(seconds):
        data = await client.stream.receive_some(65536)
        client.reader.feed(data)
        return False
    return True


async def test_a_write_is_answered_only_once_durable_and_others_are_served_meanwhile(
    served: Served,
) -> None:
    writer, reader = await served.client(), await served.client()
    await writer.stream.send_all(b"SET k v\r\n")
    await until(lambda: served.durability.pending() == 1)
    assert await nothing_within(writer, 0.2)
    assert await reader.call("PING") == b"PONG"  # the node is not stuck meanwhile
    served.durability.release()
    assert await writer.replies(1) == [b"OK"]
    assert await writer.call("GET", "k") == b"v"  # and the connection reads again


class HubSteps(trio.abc.Instrument):
    """Counts the client hub's turns in trio's scheduler."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("ClientHub.run"):
            self.steps += 1


async def test_requests_sent_while_a_reply_is_held_are_answered_after_it_in_order(
    served: Served,
) -> None:
    client = await served.client()
    await client.stream.send_all(b"SET k 1\r\n")
    await until(lambda: served.durability.pending() == 1)
    # Readable while held: nothing more is read (nor answered) until released,
    # and the hub does not spin on the readable socket meanwhile.
    hub = HubSteps()
    trio.lowlevel.add_instrument(hub)
    await client.stream.send_all(b"INCR k\r\nGET k\r\n")
    assert await nothing_within(client, 0.2)
    trio.lowlevel.remove_instrument(hub)
    assert hub.steps < 20
    assert served.state.store.replicated_writes == 1
    served.durability.release()
    assert await client.replies(1) == [b"OK"]
    await until(lambda: served.durability.pending() == 1)  # the INCR's turn
    served.durability.release()
    assert await client.replies(2) == [2, b"2"]


async def test_the_hub_sends_its_cycles_writes_when_the_cycle_ends(served: Served) -> None:
    if not served.durability.on_release:
        pytest.skip("the portable path has no hub")
    clients = [await served.client() for _ in range(5)]
    for i, c in enumerate(clients):
        await c.stream.send_all(b"SET k%d v\r\n" % i)
    await until(lambda: served.durability.pending() == 5)
    # Writes held within a cycle, and sent once it ends: none left unsent.
    assert served.durability.held_batching
    assert served.durability.unflushed == 0
    assert served.durability.flushes >= 1
    served.durability.release()
    for c in clients:
        assert await c.replies(1) == [b"OK"]


async def test_a_write_given_up_is_never_answered_ok(served: Served) -> None:
    client = await served.client()
    await client.stream.send_all(b"SET k v\r\nGET k\r\n")
    await until(lambda: served.durability.pending() == 1)
    served.durability.release(ok=False)
    assert await client.closed_by_server()
    assert client.reader.gets() is False  # not one reply


async def test_a_write_held_past_the_timeout_closes_its_connection(served: Served) -> None:
    served.durability.timeout = 0.5
    if not served.durability.on_release:
        pytest.skip("the portable path's task times out in _Durability.wait")
    client = await served.client()
    await client.stream.send_all(b"SET k v\r\n")
    await until(lambda: served.durability.pending() == 1)
    assert await client.closed_by_server()  # within the hub's one-second sweep
    assert client.reader.gets() is False
    assert served.durability.held == []  # and the hold was withdrawn


async def test_a_client_that_resets_while_held_is_let_go_at_once(served: Served) -> None:
    if not served.durability.on_release:
        pytest.skip("the portable path's task waits on the durability, not on the socket")
    raw = socket.socket()
    raw.connect(("127.0.0.1", served.port))
    raw.sendall(b"SET k v\r\n")
    await until(lambda: served.durability.pending() == 1)
    hub = HubSteps()
    trio.lowlevel.add_instrument(hub)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()  # a reset: epoll reports it even for an unwatched socket
    await until(lambda: served.durability.pending() == 0)  # the hold is withdrawn
    await until(lambda: not served.state.clients)  # and the connection closed
    trio.lowlevel.remove_instrument(hub)
    assert hub.steps < 20  # without spinning on the reset meanwhile


async def test_the_idle_timeout_counts_from_the_reply_not_from_the_write(
    nursery: trio.Nursery,
) -> None:
    state = ServerState.create(ServerConfig(me=ME, timeout=2), 1_700_000_000_000)
    state.store.set_watch(REPLICATED, range(SLOT_COUNT))
    durability = FakeDurability()
    state.durability = durability
    listener = bind_listener("127.0.0.1", 0)
    await nursery.start(lambda task_status: serve_clients(state, listener, task_status=task_status))
    client = Client(await trio.open_tcp_stream("127.0.0.1", listener.getsockname()[1]))
    try:
        await client.stream.send_all(b"SET k v\r\n")
        await until(lambda: durability.pending() == 1)
        await trio.sleep(2.5)  # the replicas are slow: longer than the idle timeout
        durability.release()
        assert await client.replies(1) == [b"OK"]
        await trio.sleep(1.0)  # idle, but for less than the timeout
        assert await client.call("GET", "k") == b"v"
    finally:
        await client.stream.aclose()


async def test_a_read_of_a_write_not_yet_durable_waits_for_it(served: Served) -> None:
    """A dirty read: were the reader answered before the replicas hold the
    write, the primary's death could take away a value clients had read."""
    writer, reader, other = [await served.client() for _ in range(3)]
    await writer.stream.send_all(b"SET k v\r\n")
    await until(lambda: served.durability.pending() == 1)
    await reader.stream.send_all(b"GET k\r\n")
    await until(lambda: served.durability.pending() == 2)
    assert await nothing_within(reader, 0.2)
    # A key of another slot, never written, is read at once meanwhile.
    assert await other.call("GET", "elsewhere") is None
    served.durability.release()
    assert await writer.replies(1) == [b"OK"]
    assert await reader.replies(1) == [b"v"]
    # Durable now: the next read of it does not wait.
    assert await reader.call("GET", "k") == b"v"
    assert served.durability.pending() == 0


async def test_a_write_that_writes_nothing_waits_for_the_write_it_reveals(served: Served) -> None:
    """SET NX of a key just set, or DEL of one just deleted, changes nothing
    but tells what is there: answered at once, a client could learn of a
    write the cluster then loses (found by ``python -m sims.partition
    staggered --seed 2``: a DEL retried after a timeout got 0 at once)."""
    writer, revealer = await served.client(), await served.client()
    for command, reply in ((b"SET k w NX\r\n", None), (b"GETEX k\r\n", b"v")):
        await writer.stream.send_all(b"SET k v\r\n")  # not durable yet
        await until(lambda: served.durability.pending() == 1)
        await revealer.stream.send_all(command)
        await until(lambda: served.durability.pending() == 2)
        assert await nothing_within(revealer, 0.2)
        served.durability.release()
        assert await writer.replies(1) == [b"OK"]
        assert await revealer.replies(1) == [reply]


async def test_a_read_of_a_write_given_up_is_never_answered(served: Served) -> None:
    writer, reader = await served.client(), await served.client()
    await writer.stream.send_all(b"SET k v\r\n")
    await until(lambda: served.durability.pending() == 1)
    await reader.stream.send_all(b"GET k\r\n")
    await until(lambda: served.durability.pending() == 2)
    served.durability.release(ok=False)
    assert await reader.closed_by_server()
    assert reader.reader.gets() is False  # the value it would have read never went out
