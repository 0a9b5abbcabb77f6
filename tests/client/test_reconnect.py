"""Both client shells retry lost connections until the deadline, then raise.

Against a one-node "cluster" on loopback port 0 that answers CLUSTER SLOTS and
drops the connection on any other request: the request must be tried again
(after a refresh of the slot map) until the retry deadline, not given up on the
first loss.
"""

from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Iterator
from functools import partial

import pytest
import trio

import keycafe
from keycafe.resp import reply
from keycafe.resp.parser import RequestParser

DEADLINE = 0.3  # seconds: the retry deadline the clients get


class Dropper:
    """What the fake node does with each read: counts the requests it drops."""

    def __init__(self) -> None:
        self.port = 0
        self.dropped = 0
        self.lock = threading.Lock()

    def answer(self, parser: RequestParser, data: bytes) -> bytes | None:
        """The replies to ``data``, or None to drop the connection."""
        out = []
        for request in parser.receive_data(data):
            if [a.upper() for a in request] != [b"CLUSTER", b"SLOTS"]:
                with self.lock:
                    self.dropped += 1
                return None
            slots = [[0, 16383, [b"127.0.0.1", self.port, b"id"]]]
            out.append(reply.encode(slots, 2))
        return b"".join(out)


@pytest.fixture
def dropper() -> Iterator[Dropper]:
    node = Dropper()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            parser = RequestParser()
            while data := self.request.recv(65536):
                answer = node.answer(parser, data)
                if answer is None:
                    return  # socketserver closes the connection
                self.request.sendall(answer)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    node.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield node
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_sync_client_retries_a_lost_connection_until_the_deadline(dropper: Dropper) -> None:
    with keycafe.Cluster(f"127.0.0.1:{dropper.port}", retry_deadline=DEADLINE) as kc:
        start = time.monotonic()
        with pytest.raises(keycafe.ConnectionError, match="closed the connection"):
            kc.get("k")
        elapsed = time.monotonic() - start
    # Without retries: one request dropped and an error at once.
    assert dropper.dropped >= 2
    assert elapsed >= DEADLINE


async def test_the_trio_client_retries_a_lost_connection_until_the_deadline() -> None:
    node = Dropper()

    async def handler(stream: trio.SocketStream) -> None:
        parser = RequestParser()
        async with stream:
            while data := await stream.receive_some(65536):
                answer = node.answer(parser, data)
                if answer is None:
                    return
                await stream.send_all(answer)

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        node.port = listener.socket.getsockname()[1]
        async with keycafe.open_cluster(f"127.0.0.1:{node.port}", retry_deadline=DEADLINE) as kc:
            start = trio.current_time()
            with pytest.raises(keycafe.ConnectionError, match="closed the connection"):
                await kc.get("k")
            elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    assert node.dropped >= 2
    assert elapsed >= DEADLINE
