"""The client's commands, defined once for every client flavour (sans-I/O).

Each method builds a ``Call``: the requests to send, each with its slot (a
multi-key command is split per slot, since a cluster serves one slot per
request), and how to combine their replies into the result. ``Commands`` hands
the call to ``_submit``, which the flavours implement: the plain client runs it
and returns the result, a pipeline queues it, the trio client returns a
coroutine. So ``kc.get(k)``, ``pipe.get(k)`` and ``await kc.get(k)`` share one
definition.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from keycafe.client.routing import (
    ANY_NODE,
    Address,
    RetryPolicy,
    SlotMap,
    parse_seeds,
    slot_of,
)
from keycafe.errors import ResponseError
from keycafe.resp.client import Arg


@attrs.frozen
class Part:
    slot: int
    args: tuple[Arg, ...]


@attrs.frozen
class Call:
    parts: tuple[Part, ...]
    combine: Callable[[list[Any]], Any]


def _first(replies: list[Any]) -> Any:
    return replies[0]


def _ok(replies: list[Any]) -> bool | None:
    # SET answers +OK, or a null reply when NX/XX kept it from writing.
    return True if replies[0] in (b"OK", "OK") else None


def _sum(replies: list[Any]) -> int:
    return sum(int(r) for r in replies)


def _by_slot(keys: Iterable[Arg]) -> dict[int, list[int]]:
    """Positions of ``keys`` grouped by slot, first appearance order kept."""
    groups: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(slot_of(_key(key)), []).append(i)
    return groups


def _key(key: Arg) -> bytes | str:
    if isinstance(key, (bytes, str)):
        return key
    raise TypeError(f"a key must be bytes or str, not {type(key).__name__}")


def _single(
    command: str, key: Arg, *rest: Arg, combine: Callable[[list[Any]], Any] = _first
) -> Call:
    return Call((Part(slot_of(_key(key)), (command, key, *rest)),), combine)


def parse_info(text: Any) -> dict[str, str]:
    text = text.decode() if isinstance(text, bytes) else str(text)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


@attrs.frozen(kw_only=True)
class NodeInfo:
    """One line of ``CLUSTER NODES``."""

    node_id: str
    host: str
    port: int
    flags: tuple[str, ...]
    slots: int  # how many slots it is primary of

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_nodes(text: Any) -> list[NodeInfo]:
    text = text.decode() if isinstance(text, bytes) else str(text)
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        endpoint = fields[1].split("@")[0]
        host, _, port = endpoint.rpartition(":")
        slots = 0
        for spec in fields[8:]:
            if spec.startswith("["):
                continue
            start, _, end = spec.partition("-")
            slots += int(end or start) - int(start) + 1
        out.append(
            NodeInfo(
                node_id=fields[0],
                host=host,
                port=int(port),
                flags=tuple(fields[2].split(",")),
                slots=slots,
            )
        )
    return out


class Commands:
    """Every command, as a call handed to ``_submit``."""

    def _submit(self, call: Call) -> Any:
        raise NotImplementedError

    def get(self, key: Arg) -> Any:
        """The value of ``key``, or None."""
        return self._submit(_single("GET", key))

    def set(
        self,
        key: Arg,
        value: Arg,
        *,
        ex: int | None = None,
        px: int | None = None,
        nx: bool = False,
        xx: bool = False,
        keepttl: bool = False,
    ) -> Any:
        """Store ``value``; True, or None if ``nx``/``xx`` kept it from writing."""
        args: list[Arg] = []
        if ex is not None:
            args += ["EX", int(ex)]
        if px is not None:
            args += ["PX", int(px)]
        if nx:
            args.append("NX")
        if xx:
            args.append("XX")
        if keepttl:
            args.append("KEEPTTL")
        return self._submit(_single("SET", key, value, *args, combine=_ok))

    def delete(self, *keys: Arg) -> Any:
        """Delete ``keys`` (any slots); how many existed."""
        return self._submit(self._per_slot("DEL", keys, _sum))

    def exists(self, *keys: Arg) -> Any:
        """How many of ``keys`` exist (a key named twice counts twice)."""
        return self._submit(self._per_slot("EXISTS", keys, _sum))

    def expire(self, key: Arg, seconds: int) -> Any:
        """Give ``key`` a time to live; False if it does not exist."""
        return self._submit(_single("EXPIRE", key, int(seconds), combine=lambda r: r[0] == 1))

    def ttl(self, key: Arg) -> Any:
        """Seconds left to live; -1 without expiry, -2 if missing."""
        return self._submit(_single("TTL", key))

    def incr(self, key: Arg, amount: int = 1) -> Any:
        return self.incrby(key, amount)

    def incrby(self, key: Arg, amount: int = 1) -> Any:
        """Add ``amount`` to the integer at ``key``; the new value."""
        return self._submit(_single("INCRBY", key, int(amount)))

    def mget(self, keys: Iterable[Arg]) -> Any:
        """Values of ``keys`` in order (None for missing), fetched per slot."""
        keys = list(keys)
        groups = _by_slot(keys)
        order = list(groups.values())

        def combine(replies: list[Any]) -> list[Any]:
            out: list[Any] = [None] * len(keys)
            for positions, values in zip(order, replies, strict=True):
                for i, v in zip(positions, values, strict=True):
                    out[i] = v
            return out

        parts = tuple(
            Part(slot, ("MGET", *(keys[i] for i in positions)))
            for slot, positions in groups.items()
        )
        return self._submit(Call(parts, combine))

    def mset(self, mapping: Mapping[Any, Arg]) -> Any:
        """Store every pair (split per slot: atomic per slot only); True."""
        items = list(mapping.items())
        groups = _by_slot(k for k, _ in items)
        parts = tuple(
            Part(slot, ("MSET", *(x for i in positions for x in items[i])))
            for slot, positions in groups.items()
        )
        return self._submit(Call(parts, lambda replies: True))

    def cluster_info(self) -> Any:
        """``CLUSTER INFO`` of one node, as a dict."""
        return self._submit(
            Call((Part(ANY_NODE, ("CLUSTER", "INFO")),), lambda r: parse_info(r[0]))
        )

    def nodes(self) -> Any:
        """The cluster's nodes (``CLUSTER NODES`` of one node)."""
        return self._submit(
            Call((Part(ANY_NODE, ("CLUSTER", "NODES")),), lambda r: parse_nodes(r[0]))
        )

    def execute_command(self, *args: Arg) -> Any:
        """Any other command: routed by its first argument after the name,
        taken as the key (a keyless command goes to any node)."""
        slot = slot_of(_key(args[1])) if len(args) > 1 else ANY_NODE
        return self._submit(Call((Part(slot, tuple(args)),), _first))

    @staticmethod
    def _per_slot(command: str, keys: tuple[Arg, ...], combine: Callable[[list[Any]], Any]) -> Call:
        groups = _by_slot(keys)
        parts = tuple(
            Part(slot, (command, *(keys[i] for i in positions)))
            for slot, positions in groups.items()
        )
        return Call(parts, combine)


def finish(call: Call, replies: list[Any]) -> Any:
    """A call's result from its parts' replies; an error reply is raised."""
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return call.combine(replies)


def finish_all(calls: list[Call], replies: list[Any]) -> list[Any]:
    """A pipeline's results, in order (raising the first error reply)."""
    out = []
    i = 0
    for call in calls:
        out.append(finish(call, replies[i : i + len(call.parts)]))
        i += len(call.parts)
    return out


def scan_command(cursor: Any, match: str | None, count: int) -> tuple[Arg, ...]:
    return ("SCAN", cursor, "COUNT", count, *(("MATCH", match) if match else ()))


def scan_page(reply: Any) -> tuple[Any, list[Any]]:
    """A SCAN reply as (next cursor, keys); an error reply is raised."""
    if isinstance(reply, ResponseError):
        raise reply
    cursor, keys = reply
    return cursor, keys


class PipelineBase(Commands):
    """Commands queued for one batched ``execute()`` (both flavours)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def _submit(self, call: Call) -> Any:
        self.calls.append(call)
        return self  # chainable: pipe.set(a, 1).get(a)

    def _take(self) -> tuple[list[Call], list[Part]]:
        """The queued calls (the queue is emptied) and all their parts."""
        calls, self.calls = self.calls, []
        return calls, [p for c in calls for p in c.parts]


class ClusterBase(Commands):
    """What both client flavours hold: options, seeds, the slot map."""

    def __init__(
        self,
        seeds: str | Sequence[str],
        *,
        decode_responses: bool = False,
        socket_timeout: float = 5.0,
        retry_deadline: float = 10.0,
        password: str | None = None,
        max_idle_per_node: int = 32,
    ) -> None:
        self.seeds = parse_seeds(seeds)
        self.decode_responses = decode_responses
        self.socket_timeout = socket_timeout
        self.policy = RetryPolicy(deadline=retry_deadline)
        self.password = password
        self.max_idle_per_node = max_idle_per_node
        self.slots = SlotMap()
        self._rng = random.Random()
        self._closed = False
        self._setup()

    def _setup(self) -> None:
        """The flavour's own state (pool, locks), made at the end of ``__init__``."""

    def _any_node(self) -> Address:
        primaries = self.slots.primaries()
        return self._rng.choice(primaries) if primaries else self.seeds[0]

    def _refresh_order(self) -> list[Address]:
        """Whom to ask for the slot map: known nodes first, then the seeds."""
        return [*self.slots.primaries(), *self.seeds]

    def _by_node(self, parts: Sequence[Part]) -> dict[Address, list[int]]:
        """Positions of ``parts`` grouped by the node each goes to."""
        by_node: dict[Address, list[int]] = {}
        for i, part in enumerate(parts):
            addr = self.slots.owner[part.slot] if part.slot != ANY_NODE else None
            by_node.setdefault(addr or self._any_node(), []).append(i)
        return by_node
