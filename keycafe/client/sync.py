"""The synchronous cluster client: plain sockets, a thread-safe pool per node."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from keycafe.client.commands import (
    Call,
    ClusterBase,
    Part,
    PipelineBase,
    finish,
    finish_all,
    scan_command,
    scan_page,
)
from keycafe.client.routing import Address, Attempt, Done, SlotMap, retryable
from keycafe.errors import ConnectionError, ProtocolError, ResponseError
from keycafe.errors import TimeoutError as KeycafeTimeout
from keycafe.resp.client import NEED_DATA, ReplyParser, encode_command

_NET_ERRORS = (OSError, ConnectionError, ProtocolError)


class Connection:
    """One socket to one node, with its reply parser."""

    def __init__(self, addr: Address, timeout: float, decode: bool, password: str | None) -> None:
        self.addr = addr
        try:
            self.sock = socket.create_connection(addr, timeout=timeout)
        except TimeoutError as exc:
            raise KeycafeTimeout(f"connecting to {addr[0]}:{addr[1]} timed out") from exc
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.parser = ReplyParser(decode)
        if password is not None:
            reply = self.call([encode_command(("AUTH", password))])[0]
            if isinstance(reply, ResponseError):
                self.close()
                raise reply

    def call(self, requests: Sequence[bytes]) -> list[Any]:
        """Send requests in one write; their replies, in order."""
        self.send(requests)
        return self.read(len(requests))

    def send(self, requests: Sequence[bytes]) -> None:
        try:
            self.sock.sendall(b"".join(requests))
        except TimeoutError as exc:
            raise KeycafeTimeout(f"{self.addr[0]}:{self.addr[1]} did not take the request") from exc

    def read(self, count: int) -> list[Any]:
        """The next ``count`` replies."""
        try:
            out: list[Any] = []
            parser = self.parser
            while len(out) < count:
                reply = parser.next_reply()
                if reply is NEED_DATA:
                    data = self.sock.recv(262144)
                    if not data:
                        raise ConnectionError(
                            f"{self.addr[0]}:{self.addr[1]} closed the connection"
                        )
                    parser.feed(data)
                    continue
                out.append(reply)
            return out
        except TimeoutError as exc:
            raise KeycafeTimeout(f"{self.addr[0]}:{self.addr[1]} did not answer in time") from exc

    def close(self) -> None:
        self.sock.close()


class Cluster(ClusterBase):
    """A keycafe (or any Redis Cluster) client; bootstraps from any seed.

    ``seeds`` is ``"host:port"`` or a list of them, tried in turn until one
    answers. Safe to share between threads. Use as a context manager or call
    ``close()``. Options: see ``docs/client.md``.
    """

    def _setup(self) -> None:
        self._idle: dict[Address, list[Connection]] = {}
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self.refresh()

    # -- connections -----------------------------------------------------------------

    def _acquire(self, addr: Address) -> Connection:
        with self._lock:
            idle = self._idle.get(addr)
            if idle:
                return idle.pop()
        if self._closed:
            raise ConnectionError("the client is closed")
        try:
            return Connection(addr, self.socket_timeout, self.decode_responses, self.password)
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {addr[0]}:{addr[1]}: {exc}") from exc

    def _release(self, conn: Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(conn.addr, [])
            if not self._closed and len(idle) < self.max_idle_per_node:
                idle.append(conn)
                return
        conn.close()

    def _call(self, addr: Address, requests: Sequence[bytes]) -> list[Any]:
        conn = self._acquire(addr)
        try:
            replies = conn.call(requests)
        except BaseException:
            conn.close()  # its state is unknown: never reuse it
            raise
        self._release(conn)
        return replies

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the slot map ----------------------------------------------------------------

    def refresh(self) -> None:
        """Fetch the slot map from a known node or, failing that, a seed."""
        with self._refresh_lock:
            problems = []
            for addr in self._refresh_order():
                try:
                    reply = self._call(addr, [encode_command(("CLUSTER", "SLOTS"))])[0]
                except _NET_ERRORS as exc:
                    problems.append(f"{addr[0]}:{addr[1]}: {exc}")
                    continue
                if isinstance(reply, ResponseError):
                    problems.append(f"{addr[0]}:{addr[1]}: {reply}")
                    continue
                self.slots = SlotMap.from_cluster_slots(reply, addr)
                return
            raise ConnectionError("no node answered: " + "; ".join(problems))

    # -- running calls ---------------------------------------------------------------

    def _submit(self, call: Call) -> Any:
        parts = call.parts
        return finish(call, [self._one(parts[0])] if len(parts) == 1 else self._many(parts))

    def _one(self, part: Part) -> Any:
        """One request, through redirects and retries."""
        attempt = Attempt(part.slot, self.policy, time.monotonic(), self._rng)
        request = encode_command(part.args)
        while True:
            addr, asking = attempt.target(self.slots, self._any_node)
            try:
                if asking:
                    reply = self._call(addr, [encode_command(("ASKING",)), request])[1]
                else:
                    reply = self._call(addr, [request])[0]
                outcome = attempt.on_reply(reply, self.slots, time.monotonic())
            except _NET_ERRORS as exc:
                outcome = attempt.on_connection_error(exc, time.monotonic())
            if isinstance(outcome, Done):
                return outcome.value
            if outcome.delay:
                time.sleep(outcome.delay)
            if outcome.refresh:
                try:
                    self.refresh()
                except ConnectionError:
                    pass  # the next try fails and backs off in turn

    def _many(self, parts: Sequence[Part]) -> list[Any]:
        """Several requests: one pipelined write per node, then anything
        redirected or failed again one by one."""
        by_node = self._by_node(parts)
        replies: list[Any] = [None] * len(parts)
        again: list[int] = []
        # Write every node's batch first, then read them: the nodes work at once.
        # A connection leaves ``unread`` only when its replies are all read;
        # whatever is left there on the way out is closed, never reused.
        unread: list[tuple[Connection, list[int]]] = []
        try:
            for addr, positions in by_node.items():
                try:
                    conn = self._acquire(addr)
                except _NET_ERRORS:
                    again.extend(positions)
                    continue
                unread.append((conn, positions))
                try:
                    conn.send([encode_command(parts[i].args) for i in positions])
                except _NET_ERRORS:
                    unread.pop()
                    conn.close()
                    again.extend(positions)
            while unread:
                conn, positions = unread[0]
                try:
                    got = conn.read(len(positions))
                except _NET_ERRORS:
                    unread.pop(0)
                    conn.close()
                    again.extend(positions)
                    continue
                unread.pop(0)
                self._release(conn)
                for i, reply in zip(positions, got, strict=True):
                    if isinstance(reply, ResponseError) and retryable(reply):
                        again.append(i)
                    else:
                        replies[i] = reply
        finally:
            for conn, _ in unread:
                conn.close()
        for i in sorted(again):
            replies[i] = self._one(parts[i])
        return replies

    # -- more than one call at a time --------------------------------------------------

    def pipeline(self) -> Pipeline:
        """Queue commands, then ``execute()`` sends them batched per node."""
        return Pipeline(self)

    def scan_iter(self, match: str | None = None, count: int = 1000) -> Iterator[Any]:
        """Every key of every node (each node's ``SCAN`` walked to the end)."""
        for addr in self.slots.primaries():
            cursor: Any = 0
            while True:
                request = encode_command(scan_command(cursor, match, count))
                cursor, keys = scan_page(self._call(addr, [request])[0])
                yield from keys
                if int(cursor) == 0:
                    break


class Pipeline(PipelineBase):
    """Commands queued on a ``Cluster``; ``execute()`` returns their results."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__()
        self.cluster = cluster

    def execute(self) -> list[Any]:
        """Run every queued command (batched per node); raises the first error
        reply, if any, after all have run."""
        calls, parts = self._take()
        return finish_all(calls, self.cluster._many(parts) if parts else [])

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.calls.clear()
