"""The trio cluster client: ``async with keycafe.open_cluster(seeds) as kc``.

The same commands as ``keycafe.Cluster`` (one definition, ``commands.py``), the
same routing and retry rules (``routing.py``); connections are trio streams,
pooled per node, one request batch at a time each, so any number of tasks can
share the client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

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

_NET_ERRORS = (OSError, trio.BrokenResourceError, ConnectionError, ProtocolError)


class TrioConnection:
    def __init__(self, addr: Address, stream: trio.SocketStream, decode: bool) -> None:
        self.addr = addr
        self.stream = stream
        self.parser = ReplyParser(decode)

    @classmethod
    async def open(
        cls, addr: Address, limit: float, decode: bool, password: str | None
    ) -> TrioConnection:
        try:
            with trio.fail_after(limit):
                stream = await trio.open_tcp_stream(*addr)
        except trio.TooSlowError as exc:
            raise KeycafeTimeout(f"connecting to {addr[0]}:{addr[1]} timed out") from exc
        conn = cls(addr, stream, decode)
        if password is not None:
            reply = (await conn.call([encode_command(("AUTH", password))], limit))[0]
            if isinstance(reply, ResponseError):
                await conn.aclose()
                raise reply
        return conn

    async def call(self, requests: Sequence[bytes], limit: float) -> list[Any]:
        """Send requests in one write; their replies, within ``limit`` seconds."""
        try:
            with trio.fail_after(limit):
                await self.stream.send_all(b"".join(requests))
                out: list[Any] = []
                while len(out) < len(requests):
                    reply = self.parser.next_reply()
                    if reply is NEED_DATA:
                        data = await self.stream.receive_some(262144)
                        if not data:
                            raise ConnectionError(
                                f"{self.addr[0]}:{self.addr[1]} closed the connection"
                            )
                        self.parser.feed(data)
                        continue
                    out.append(reply)
                return out
        except trio.TooSlowError as exc:
            raise KeycafeTimeout(f"{self.addr[0]}:{self.addr[1]} did not answer in time") from exc

    async def aclose(self) -> None:
        await self.stream.aclose()


class TrioCluster(ClusterBase):
    """The trio client; made by ``open_cluster``. Every command is awaited."""

    def _setup(self) -> None:
        self._idle: dict[Address, list[TrioConnection]] = {}
        self._refresh_lock = trio.Lock()

    async def _acquire(self, addr: Address) -> TrioConnection:
        idle = self._idle.get(addr)
        if idle:
            return idle.pop()
        if self._closed:
            raise ConnectionError("the client is closed")
        try:
            return await TrioConnection.open(
                addr, self.socket_timeout, self.decode_responses, self.password
            )
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {addr[0]}:{addr[1]}: {exc}") from exc

    async def _call(self, addr: Address, requests: Sequence[bytes]) -> list[Any]:
        conn = await self._acquire(addr)
        try:
            replies = await conn.call(requests, self.socket_timeout)
        except BaseException:
            conn.stream.socket.close()  # state unknown: never reuse (closing cannot block)
            raise
        idle = self._idle.setdefault(addr, [])
        if not self._closed and len(idle) < self.max_idle_per_node:
            idle.append(conn)
        else:
            await conn.aclose()
        return replies

    async def aclose(self) -> None:
        self._closed = True
        conns = [c for idle in self._idle.values() for c in idle]
        self._idle.clear()
        for conn in conns:
            await conn.aclose()

    async def refresh(self) -> None:
        """Fetch the slot map from a known node or, failing that, a seed."""
        async with self._refresh_lock:
            problems = []
            for addr in self._refresh_order():
                try:
                    reply = (await self._call(addr, [encode_command(("CLUSTER", "SLOTS"))]))[0]
                except _NET_ERRORS as exc:
                    problems.append(f"{addr[0]}:{addr[1]}: {exc}")
                    continue
                if isinstance(reply, ResponseError):
                    problems.append(f"{addr[0]}:{addr[1]}: {reply}")
                    continue
                self.slots = SlotMap.from_cluster_slots(reply, addr)
                return
            raise ConnectionError("no node answered: " + "; ".join(problems))

    async def _submit(self, call: Call) -> Any:
        parts = call.parts
        return finish(
            call, [await self._one(parts[0])] if len(parts) == 1 else await self._many(parts)
        )

    async def _one(self, part: Part) -> Any:
        attempt = Attempt(part.slot, self.policy, trio.current_time(), self._rng)
        request = encode_command(part.args)
        while True:
            addr, asking = attempt.target(self.slots, self._any_node)
            try:
                if asking:
                    reply = (await self._call(addr, [encode_command(("ASKING",)), request]))[1]
                else:
                    reply = (await self._call(addr, [request]))[0]
                outcome = attempt.on_reply(reply, self.slots, trio.current_time())
            except _NET_ERRORS as exc:
                outcome = attempt.on_connection_error(exc, trio.current_time())
            if isinstance(outcome, Done):
                return outcome.value
            if outcome.delay:
                await trio.sleep(outcome.delay)
            if outcome.refresh:
                try:
                    await self.refresh()
                except ConnectionError:
                    pass  # the next try fails and backs off in turn

    async def _many(self, parts: Sequence[Part]) -> list[Any]:
        by_node = self._by_node(parts)
        replies: list[Any] = [None] * len(parts)
        again: list[int] = []

        async def batch(addr: Address, positions: list[int]) -> None:
            try:
                got = await self._call(addr, [encode_command(parts[i].args) for i in positions])
            except _NET_ERRORS:
                again.extend(positions)
                return
            for i, reply in zip(positions, got, strict=True):
                if isinstance(reply, ResponseError) and retryable(reply):
                    again.append(i)
                else:
                    replies[i] = reply

        async with trio.open_nursery() as nursery:
            for addr, positions in by_node.items():
                nursery.start_soon(batch, addr, positions)
        for i in sorted(again):
            replies[i] = await self._one(parts[i])
        return replies

    def pipeline(self) -> TrioPipeline:
        return TrioPipeline(self)

    async def scan_iter(self, match: str | None = None, count: int = 1000) -> AsyncIterator[Any]:
        """Every key of every node (each node's ``SCAN`` walked to the end)."""
        for addr in self.slots.primaries():
            cursor: Any = 0
            while True:
                request = encode_command(scan_command(cursor, match, count))
                cursor, keys = scan_page((await self._call(addr, [request]))[0])
                for key in keys:
                    yield key
                if int(cursor) == 0:
                    break


class TrioPipeline(PipelineBase):
    """Commands queued on a ``TrioCluster``; ``await execute()`` returns their results."""

    def __init__(self, cluster: TrioCluster) -> None:
        super().__init__()
        self.cluster = cluster

    async def execute(self) -> list[Any]:
        calls, parts = self._take()
        return finish_all(calls, await self.cluster._many(parts) if parts else [])


@asynccontextmanager
async def open_cluster(
    seeds: str | Sequence[str],
    *,
    decode_responses: bool = False,
    socket_timeout: float = 5.0,
    retry_deadline: float = 10.0,
    password: str | None = None,
    max_idle_per_node: int = 32,
) -> AsyncIterator[TrioCluster]:
    """A trio client bootstrapped from ``seeds``; closed on exit."""
    kc = TrioCluster(
        seeds,
        decode_responses=decode_responses,
        socket_timeout=socket_timeout,
        retry_deadline=retry_deadline,
        password=password,
        max_idle_per_node=max_idle_per_node,
    )
    try:
        await kc.refresh()
        yield kc
    finally:
        await kc.aclose()
