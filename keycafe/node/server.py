"""The RESP listener: one task per client connection, and a readiness hub.

Every connection has its own task, which owns the socket for its whole life:
it registers the socket, is cancelled with the node, closes the socket and
forgets the session. The hot path does not go through that task, though. One
hub task keeps all idle connections in an epoll set of its own (registered
once per connection, level-triggered) and, when one is readable, does its work
inline: one ``recv``, one parse, the commands, one non-blocking ``send``. Only
what would block is handed to the connection's task: output the kernel would
not take at once (the task waits with ``trio.lowlevel.wait_writable``, then
gives the connection back), and closing.

Replies to replicated writes wait until the replicas hold them, without a
task either: the hub keeps the reply with the connection, registers it with
``state.durability`` (``hold``), asks for one replication round for all the
writes of its cycle (``flush``), and sends the reply when the durability calls
back (``_released``) from the task that read the replicas' acknowledgements.
Handing each such write to its connection's task and back cost more than
twice the CPU: on three nodes with ``--replicas 1``, ``redis-benchmark
--cluster -t set -c 50 -P 1`` ran at 5-6k SET/s that way and at 13-14k held
in the hub (the two builds side by side, 2026-11-30).

Why: waking a task per read through trio's scheduler and epoll registration
costs more than the command itself. Measured with redis-benchmark -c 50
against C Redis in the same run, a task-per-read loop reached 0.39x Redis's
ops/s at -P 1; serving reads inline from the hub, 0.6x.

The hub needs ``select.epoll`` (Linux). Elsewhere, or when asked
(``portable=True``, ``--client-io portable``), each connection's task does
that same work itself after ``trio.lowlevel.wait_readable`` on its socket:
the task-per-read loop above, slower but on every platform trio runs on.

Fairness: the hub handles at most ``HUB_EVENTS`` readable sockets per cycle,
one read each, and yields to trio between cycles. Backpressure: a connection
whose replies the kernel will not take leaves the hub until they are written,
so nothing more is read from it; output is flushed every ``OUTPUT_FLUSH_BYTES``,
so a client that never reads holds about that much server memory.
"""

from __future__ import annotations

import enum
import errno
import logging
import math
import select
import socket
import time
from collections.abc import Hashable
from typing import Final

import attrs
import trio

from keycafe.resp import reply as resp
from keycafe.resp.parser import Request, RequestParser
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
# Readable sockets the hub serves per cycle before it yields to other tasks.
HUB_EVENTS: Final = 256
_GONE: Final = select.EPOLLHUP | select.EPOLLERR if hasattr(select, "EPOLLHUP") else 0
_NO_REQUESTS: Final[list[Request]] = []
_NOT_CONFIRMED: Final = "a write was not confirmed by its replicas (given up or timed out)"


def have_epoll() -> bool:
    """Whether the epoll hub can run here (Linux); elsewhere each connection
    serves itself (``_serve_alone``)."""
    return hasattr(select, "epoll")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _clock(state: ServerState) -> int:
    """Read both clocks for the requests about to run: the wall clock (expiry,
    stamps) and the monotonic one the cluster core's lease is in."""
    state.clock = trio.current_time()
    now = state.now_ms = _now_ms()
    return now


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
    portable: bool = False,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept clients on ``listener`` until cancelled; each gets its own task.

    Idle connections are watched by the epoll hub where there is one, unless
    ``portable``: then each connection's task waits on its own socket.
    """
    hub = ClientHub(state) if have_epoll() and not portable else None
    async with trio.open_nursery() as nursery:
        if hub is not None:
            await nursery.start(hub.run)
        task_status.started()
        try:
            while True:
                await trio.lowlevel.wait_readable(listener)
                try:
                    sock, _ = listener.accept()
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
                    _reject(sock)
                    continue
                conn = Connection.accept(state, sock)
                if hub is not None:
                    nursery.start_soon(_connection_task, hub, conn)
                else:
                    nursery.start_soon(_serve_alone, conn)
        finally:
            trio.lowlevel.notify_closing(listener)
            listener.close()
            if hub is not None:
                hub.close()


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


class _Wake(enum.Enum):
    SLOW = "slow"  # finish writing (and executing) with trio waits, then come back
    CLOSE = "close"
    DURABLE = "durable"  # ``pending`` answers writes that must reach the replicas first


@attrs.define(eq=False)
class Connection:
    """One client connection: its socket, parser, session and unfinished work."""

    sock: socket.socket
    fd: int
    session: Session
    parser: RequestParser
    task: trio.lowlevel.Task | None = None
    in_hub: bool = False
    wake: _Wake | None = None
    pending: bytes = b""  # output the kernel has not taken yet
    requests: list[Request] = attrs.field(factory=list)  # parsed, not all executed
    next_request: int = 0
    last_active_ms: int = 0
    close_reason: str = ""
    # ``pending`` holds replies to writes numbered first..last (Store.
    # replicated_writes) that may go out only once those are durable.
    durable_first: int = 0
    durable_last: int = 0
    durable_read: int = 0  # ... and replies that read write n (Session.read_after)
    # In the hub, waiting for its replies' writes to be durable (``held_ms``
    # since), and unregistered from epoll meanwhile if it became readable.
    holding: bool = False
    held_ms: int = 0
    disarmed: bool = False

    @classmethod
    def accept(cls, state: ServerState, sock: socket.socket) -> Connection:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        session = Session.open(state, _peer(sock, True), _peer(sock, False))
        return cls(
            sock=sock,
            fd=sock.fileno(),
            session=session,
            parser=RequestParser(state.config.limits),
            last_active_ms=state.now_ms,
        )

    def produce(self) -> tuple[bytes, bool]:
        """Run parsed requests until about ``OUTPUT_FLUSH_BYTES`` of replies are
        ready; return them and whether every request has run."""
        reqs = self.requests
        execute = self.session.execute_many
        i = self.next_request
        if i == 0 and len(reqs) <= REPLY_CHUNK:
            out = execute(reqs)  # the common case, one chunk
            i = len(reqs)
        else:
            out = []
            size = 0
            while i < len(reqs) and size <= OUTPUT_FLUSH_BYTES:
                part = execute(reqs[i : i + REPLY_CHUNK])
                out += part
                size += sum(map(len, part))
                i += REPLY_CHUNK
        if i < len(reqs):
            self.next_request = i
            return b"".join(out), False
        state = self.session.state
        state.counters.commands_processed += len(reqs)
        self.requests = _NO_REQUESTS
        self.next_request = 0
        error = self.parser.error
        if error is not None and not self.session.closing:
            state.counters.protocol_errors += 1
            log.info("client %d (%s): %s", self.session.client_id, self.session.addr, error)
            out.append(resp.error(f"ERR {error}"))
            self.session.closing = True
        return b"".join(out), True

    def serve_read(self, now: int) -> _Wake | None:
        """One ``recv``, the requests it completes, one non-blocking ``send``
        of their replies; what must happen next, if more than waiting for the
        next read (``close_reason`` says why a connection must close)."""
        sock = self.sock
        state = self.session.state
        counters = state.counters
        try:
            data = sock.recv(READ_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:
            self.close_reason = f"socket error: {exc}"
            return _Wake.CLOSE
        if not data:
            self.close_reason = "closed by the client"
            return _Wake.CLOSE
        counters.net_input_bytes += len(data)
        self.last_active_ms = now
        self.requests = self.parser.receive_data(data)
        self.next_request = 0
        store = state.store
        done = False
        while not done:
            written = store.replicated_writes
            payload, done = self.produce()
            if _must_wait(self, written):
                # Replies to replicated writes wait until the replicas hold
                # them, and so do replies that read a write they do not hold
                # yet; the connection is read no more meanwhile (replies keep
                # their order).
                self.pending = payload
                return _Wake.DURABLE
            if not payload:
                continue
            try:
                sent = sock.send(payload)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self.close_reason = f"socket error: {exc}"
                return _Wake.CLOSE
            counters.net_output_bytes += sent
            if sent < len(payload):
                self.pending = payload[sent:]
                return _Wake.SLOW
            if not done:
                _clock(state)
        if self.session.closing:
            self.close_reason = "QUIT or protocol error"
            return _Wake.CLOSE
        return None


class ClientHub:
    """Serves idle connections' reads inline from one task (see the module doc)."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self._epoll = select.epoll()
        self._readable = select.EPOLLIN | select.EPOLLRDHUP
        self._conns: dict[int, Connection] = {}
        self._last_sweep_ms = 0
        self._holding = 0  # connections waiting for their writes to be durable
        if state.durability is not None:
            state.durability.on_release = self._released

    def attach(self, conn: Connection) -> None:
        self._epoll.register(conn.fd, self._readable)
        self._conns[conn.fd] = conn
        conn.in_hub = True

    def resume(self, conn: Connection) -> None:
        """A connection's task gives it back once it has nothing pending."""
        self._epoll.modify(conn.fd, self._readable)
        conn.last_active_ms = self.state.now_ms
        conn.in_hub = True

    def detach(self, conn: Connection) -> None:
        if conn.holding:
            self._unhold(conn)
            assert self.state.durability is not None
            self.state.durability.cancel(conn)
        if self._conns.pop(conn.fd, None) is conn:
            try:
                self._epoll.unregister(conn.fd)
            except (OSError, ValueError):
                pass
        conn.in_hub = False

    def close(self) -> None:
        self._epoll.close()

    def _hand_over(self, conn: Connection, wake: _Wake) -> None:
        conn.disarmed = False  # SLOW unwatches it too; resume() watches it again
        conn.in_hub = False
        conn.wake = wake
        if wake is _Wake.SLOW:
            self._epoll.modify(conn.fd, 0)  # read nothing more until it is back
        else:
            self.detach(conn)
        assert conn.task is not None
        trio.lowlevel.reschedule(conn.task)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        state = self.state
        epoll = self._epoll
        timeout = state.config.timeout
        task_status.started()
        while True:
            if timeout or self._holding:
                # Wake at least once a second to close idle clients, and
                # those whose writes wait too long.
                with trio.move_on_after(1):
                    await trio.lowlevel.wait_readable(epoll.fileno())
            else:
                await trio.lowlevel.wait_readable(epoll.fileno())
            now = _clock(state)
            conns = self._conns
            durability = state.durability
            if durability is not None:
                durability.batching = True
            for fd, events in epoll.poll(0, HUB_EVENTS):
                conn = conns.get(fd)
                if conn is None or not conn.in_hub:
                    continue
                if conn.holding:
                    if events & _GONE:
                        # Reset or hung up: nobody to answer. epoll reports
                        # these even unwatched, so it would come back each cycle.
                        self._give_up(conn, "closed by the client")
                        continue
                    # Level-triggered: readable again while its replies wait.
                    # It is read once they are out; until then, unwatched.
                    epoll.modify(fd, 0)
                    conn.disarmed = True
                    continue
                wake = conn.serve_read(now)
                if wake is _Wake.DURABLE:
                    self._hold(conn, now)
                elif wake is not None:
                    self._hand_over(conn, wake)
            if durability is not None:
                durability.batching = False
                durability.flush()  # one round for this cycle's writes
            if (timeout or self._holding) and now - self._last_sweep_ms >= 1000:
                self._sweep(now, timeout * 1000)

    def _sweep(self, now: int, idle_ms: int) -> None:
        """Close idle clients (``idle_ms``, if not 0) and those whose writes
        waited longer than the durability timeout for their replicas."""
        self._last_sweep_ms = now
        durability = self.state.durability
        held_ms = durability.timeout * 1000 if durability is not None else math.inf
        for conn in list(self._conns.values()):
            if not conn.in_hub:
                continue
            if conn.holding:
                if now - conn.held_ms >= held_ms:
                    self._give_up(conn, _NOT_CONFIRMED)
            elif idle_ms and now - conn.last_active_ms >= idle_ms:
                conn.close_reason = f"idle for {idle_ms // 1000}s"
                self._hand_over(conn, _Wake.CLOSE)

    # -- replies that wait for the replicas ---------------------------------------------

    def _hold(self, conn: Connection, now: int) -> None:
        """Keep ``conn``'s replies until their writes are durable: the core
        releases them (``_released``), and no task wakes meanwhile."""
        durability = self.state.durability
        if durability is None or durability.on_release != self._released:
            self._hand_over(conn, _Wake.SLOW)  # its task waits instead
            return
        conn.holding = True
        conn.held_ms = now
        self._holding += 1
        first, last, read = conn.durable_first, conn.durable_last, conn.durable_read
        conn.durable_first = conn.durable_last = conn.durable_read = 0
        durability.hold(conn, first, last, read)

    def _unhold(self, conn: Connection) -> None:
        conn.holding = False
        self._holding -= 1

    def _give_up(self, conn: Connection, reason: str, *, withdraw: bool = True) -> None:
        """Close a held connection without its replies (``withdraw``: its
        hold too, unless the durability already released it)."""
        self._unhold(conn)
        if withdraw:
            assert self.state.durability is not None
            self.state.durability.cancel(conn)
        conn.close_reason = reason
        self._hand_over(conn, _Wake.CLOSE)

    def _released(self, token: Hashable, ok: bool) -> None:
        """The writes ``token`` (a held connection) waited for are durable
        (``ok``), or one was given up: send its replies, or cut it off, as
        ``_send_durable`` does."""
        conn = token
        assert isinstance(conn, Connection)
        if not conn.holding or not conn.in_hub:
            return
        if not ok:
            self._give_up(conn, _NOT_CONFIRMED, withdraw=False)
            return
        self._unhold(conn)
        payload, conn.pending = conn.pending, b""
        try:
            sent = conn.sock.send(payload)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            conn.close_reason = f"socket error: {exc}"
            self._hand_over(conn, _Wake.CLOSE)
            return
        self.state.counters.net_output_bytes += sent
        conn.last_active_ms = _now_ms()  # its wait was not idleness
        if sent < len(payload) or conn.requests:
            # The rest of the output, or of the batch, is the task's to finish.
            conn.pending = payload[sent:]
            self._hand_over(conn, _Wake.SLOW)
        elif conn.session.closing:
            conn.close_reason = "QUIT or protocol error"
            self._hand_over(conn, _Wake.CLOSE)
        elif conn.disarmed:
            conn.disarmed = False
            self._epoll.modify(conn.fd, self._readable)


async def _park(conn: Connection) -> _Wake:
    """Sleep until the hub hands this connection back to its task."""
    conn.wake = None

    def cancelled(_: object) -> trio.lowlevel.Abort:
        # The task wakes with Cancelled, maybe in the very batch in which the
        # hub finds its socket readable: the hub must not wake it a second time.
        conn.in_hub = False
        return trio.lowlevel.Abort.SUCCEEDED

    await trio.lowlevel.wait_task_rescheduled(cancelled)
    assert conn.wake is not None
    return conn.wake


async def _finish_slowly(conn: Connection) -> None:
    """Write what the kernel would not take, or what waits for its writes to
    be durable, and run the rest of the batch, with waits."""
    state = conn.session.state
    store = state.store
    if conn.pending:
        await _send_durable(conn, conn.pending)
        conn.pending = b""
    while conn.requests:
        _clock(state)
        written = store.replicated_writes
        payload, _ = conn.produce()
        _must_wait(conn, written)
        await _send_durable(conn, payload)


async def _send_durable(conn: Connection, payload: bytes) -> None:
    """Send ``payload`` once the writes it answers are durable. If a ring
    change took one away first, the connection closes instead: the client
    must not read OK, and a reset is what a crashed primary gives it too."""
    state = conn.session.state
    if (conn.durable_last or conn.durable_read) and state.durability is not None:
        first, last, read = conn.durable_first, conn.durable_last, conn.durable_read
        conn.durable_first = conn.durable_last = conn.durable_read = 0
        if not await state.durability.wait(first, last, read):
            conn.session.closing = True
            conn.requests = _NO_REQUESTS
            raise _WriteGivenUp
    await _send_all(conn.sock, payload)
    state.counters.net_output_bytes += len(payload)


def _must_wait(conn: Connection, written: int) -> bool:
    """Whether the replies just produced must wait for writes to be durable:
    their own (numbered after ``written``), or one they read (and which
    ``conn``'s ``durable_*`` fields then name)."""
    session = conn.session
    state = session.state
    now = state.store.replicated_writes
    read, session.read_after = session.read_after, 0
    durability = state.durability
    if durability is None:
        return False
    if read and read > durability.settled and read > durability.settle():
        conn.durable_read = read
    elif now == written:
        return False
    if now != written:
        conn.durable_first, conn.durable_last = written + 1, now
    return True


class _WriteGivenUp(Exception):
    """A write a ring change took away before its replicas held it."""


async def _connection_task(hub: ClientHub, conn: Connection) -> None:
    """A connection the hub serves: this task only writes what would block."""
    conn.task = trio.lowlevel.current_task()
    session = conn.session
    log.debug("client %d connected from %s", session.client_id, session.addr)
    hub.attach(conn)
    try:
        while True:
            if await _park(conn) is _Wake.CLOSE:
                return
            await _finish_slowly(conn)
            if session.closing:
                conn.close_reason = "QUIT or protocol error"
                return
            hub.resume(conn)
    except _WriteGivenUp:
        conn.close_reason = _NOT_CONFIRMED
    except OSError as exc:
        conn.close_reason = f"socket error: {exc}"
    finally:
        hub.detach(conn)
        _forget(conn)


async def _serve_alone(conn: Connection) -> None:
    """A connection served by its own task: the portable path (module doc)."""
    session = conn.session
    state = session.state
    log.debug("client %d connected from %s", session.client_id, session.addr)
    idle = state.config.timeout or math.inf
    try:
        while True:
            with trio.move_on_after(idle) as waited:
                await trio.lowlevel.wait_readable(conn.sock)
            if waited.cancelled_caught:
                conn.close_reason = f"idle for {state.config.timeout}s"
                return
            now = _clock(state)
            wake = conn.serve_read(now)
            if wake is _Wake.CLOSE:
                return
            if wake is _Wake.SLOW or wake is _Wake.DURABLE:
                await _finish_slowly(conn)
                if session.closing:
                    conn.close_reason = "QUIT or protocol error"
                    return
    except _WriteGivenUp:
        conn.close_reason = _NOT_CONFIRMED
    except OSError as exc:
        conn.close_reason = f"socket error: {exc}"
    finally:
        _forget(conn)


def _forget(conn: Connection) -> None:
    session = conn.session
    session.close()
    trio.lowlevel.notify_closing(conn.sock)
    conn.sock.close()
    log.debug("client %d closed: %s", session.client_id, conn.close_reason or "shutdown")
