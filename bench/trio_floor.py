"""A bare trio responder: the least a trio server can do per request.

    python bench/trio_floor.py PORT

It parses nothing and stores nothing: each read gets "+OK" per request in it
(counted by the "*" that starts each redis-benchmark request), through one
``wait_readable``, one ``recv`` and one ``send`` per read, as keycafe's hub
does. bench/server.py runs it next to Redis at ``-c 1``, where every request
costs one pass through trio's scheduler, to show the floor that pass sets on
keycafe's CPU per operation.
"""

from __future__ import annotations

import socket
import sys

import trio


async def serve(port: int) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    listener.setblocking(False)
    async with trio.open_nursery() as nursery:
        while True:
            await trio.lowlevel.wait_readable(listener)
            conn, _ = listener.accept()
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(respond, conn)


async def respond(conn: socket.socket) -> None:
    with conn:
        while True:
            await trio.lowlevel.wait_readable(conn)
            try:
                data = conn.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                return
            conn.send(b"+OK\r\n" * data.count(b"*"))


if __name__ == "__main__":
    trio.run(serve, int(sys.argv[1]))
