"""The RESP listener: one task per client connection.

The per-connection loop is the hot path. It works on the stdlib socket in
non-blocking mode and waits through trio's readiness API
(``trio.lowlevel.wait_readable``/``wait_writable``) only when the kernel has
nothing for it: a read that finds data costs one syscall and no scheduling,
where ``trio.SocketStream`` adds checkpoints to every call (about 12% of the CPU
per request in the prototype measurements of issue 2). Each read is parsed once
and its replies go out in one ``send``.

Backpressure: a connection reads again only after its replies are written, and
replies are flushed whenever ``OUTPUT_FLUSH_BYTES`` accumulate, so a client that
never reads holds at most that much (plus one reply) of server memory while
TCP's window stops it from sending more.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from typing import Final

import trio

from keycafe.resp import reply as resp
from keycafe.resp.parser import RequestParser
from keycafe.server.session import Session
from keycafe.server.state import ServerState

log = logging.getLogger("keycafe.server")

# Bytes asked of the kernel per read; Redis reads 16 KB (PROTO_IOBUF_LEN), a
# larger read serves deep pipelines with fewer syscalls. It must not exceed the
# parser's inline limit or every read would take the slow path.
READ_SIZE: Final = 64 * 1024
OUTPUT_FLUSH_BYTES: Final = 1024 * 1024
# Replies are produced this many at a time between checks of the output size,
# so the bound above holds to within one chunk of replies.
REPLY_CHUNK: Final = 32
# Redis's default tcp-backlog.
BACKLOG: Final = 511
MAXCLIENTS_REPLY: Final = b"-ERR max number of clients reached\r\n"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def bind_listener(host: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_clients(
    state: ServerState,
    listener: socket.socket,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept clients on ``listener`` until cancelled; each gets its own task."""
    async with trio.open_nursery() as nursery:
        task_status.started()
        try:
            while True:
                await trio.lowlevel.wait_readable(listener)
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    continue
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE):
                        # Out of descriptors: back off rather than spin.
                        log.warning("accept failed: %s", exc)
                        await trio.sleep(0.1)
                        continue
                    raise
                state.counters.connections_received += 1
                if len(state.clients) >= state.config.maxclients:
                    state.counters.rejected_connections += 1
                    _reject(conn)
                    continue
                nursery.start_soon(_serve_connection, state, conn)
        finally:
            trio.lowlevel.notify_closing(listener)
            listener.close()


def _reject(conn: socket.socket) -> None:
    try:
        conn.setblocking(False)
        conn.send(MAXCLIENTS_REPLY)
    except OSError:
        pass
    conn.close()


def _peer(sock: socket.socket, peer: bool) -> str:
    try:
        addr = sock.getpeername() if peer else sock.getsockname()
    except OSError:
        return "?"
    return f"{addr[0]}:{addr[1]}"


async def _send_all(sock: socket.socket, data: bytes) -> None:
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    if sent == len(data):
        return
    view = memoryview(data)[sent:]
    while view:
        await trio.lowlevel.wait_writable(sock)
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            pass


async def _serve_connection(state: ServerState, sock: socket.socket) -> None:
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    session = Session.open(state, _peer(sock, True), _peer(sock, False))
    log.debug("client %d connected from %s", session.client_id, session.addr)
    try:
        await _connection_loop(state, sock, session)
    except (ConnectionError, TimeoutError) as exc:
        log.debug("client %d: %s", session.client_id, exc)
    except OSError as exc:
        log.info("client %d: socket error: %s", session.client_id, exc)
    finally:
        session.close()
        trio.lowlevel.notify_closing(sock)
        sock.close()
        log.debug("client %d closed", session.client_id)


async def _connection_loop(state: ServerState, sock: socket.socket, session: Session) -> None:
    parser = RequestParser(state.config.limits)
    counters = state.counters
    idle_timeout = state.config.timeout
    recv = sock.recv
    execute = session.execute
    wait_readable = trio.lowlevel.wait_readable
    while True:
        # Wait first, then read: a client that just got its replies has rarely
        # sent more yet, so a speculative recv would mostly fail with EAGAIN.
        # The wait is also this loop's one scheduling point, which keeps a
        # client that pipelines without pause from starving the others.
        if idle_timeout:
            with trio.move_on_after(idle_timeout) as scope:
                await wait_readable(sock)
            if scope.cancelled_caught:
                log.debug("client %d idle for %ss: closing", session.client_id, idle_timeout)
                return
        else:
            await wait_readable(sock)
        try:
            data = recv(READ_SIZE)
        except BlockingIOError:
            continue  # a spurious wake-up
        if not data:
            return
        counters.net_input_bytes += len(data)
        state.now_ms = _now_ms()
        requests = parser.receive_data(data)
        if len(requests) <= REPLY_CHUNK:
            out = [execute(req) for req in requests]
        else:
            out = []
            for i in range(0, len(requests), REPLY_CHUNK):
                out += [execute(req) for req in requests[i : i + REPLY_CHUNK]]
                if sum(map(len, out)) > OUTPUT_FLUSH_BYTES:
                    payload = b"".join(out)
                    counters.net_output_bytes += len(payload)
                    await _send_all(sock, payload)
                    out.clear()
                    state.now_ms = _now_ms()
        counters.commands_processed += len(requests)
        if parser.error is not None and not session.closing:
            counters.protocol_errors += 1
            log.info("client %d (%s): %s", session.client_id, session.addr, parser.error)
            out.append(resp.error(f"ERR {parser.error}"))
            session.closing = True
        if out:
            payload = b"".join(out)
            counters.net_output_bytes += len(payload)
            await _send_all(sock, payload)
        if session.closing:
            return
