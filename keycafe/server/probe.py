"""What INFO and CLUSTER INFO/NODES ask of the shell around the server core.

Reading process figures is I/O and the member table belongs to gossip, neither
of which a sans-I/O core touches, so the shell hands the state one
``NodeProbe`` (memberlist's ``Delegate`` turned around: the core asks, the
shell answers). A state on its own, as in the command tests, has ``LoneProbe``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Protocol

import attrs


@attrs.frozen(kw_only=True)
class MemberView:
    """One gossip member as CLUSTER NODES shows it."""

    node_id: str
    host: str
    port: int  # client port
    cluster_port: int
    state: str  # alive, suspect, dead, left
    ping_sent_ms: int = 0
    pong_recv_ms: int = 0


class NodeProbe(Protocol):
    """The shell's answers for INFO and CLUSTER INFO/NODES."""

    def process(self) -> Mapping[str, float]:
        """``rss`` bytes and ``cpu_user``/``cpu_sys`` seconds of this process."""
        ...

    def members(self) -> list[MemberView]:
        """The gossip member table."""
        ...

    def figures(self) -> Mapping[str, int | str]:
        """Cluster figures, each shown by CLUSTER INFO as ``keycafe_<name>``."""
        ...

    def replica_lag(self) -> Mapping[str, int]:
        """Per replica of this node's slots, the writes it has not acknowledged."""
        ...


class LoneProbe:
    """A state with no shell around it: no process figures, no gossip."""

    def process(self) -> Mapping[str, float]:
        return {}

    def members(self) -> list[MemberView]:
        return []

    def figures(self) -> Mapping[str, int | str]:
        return {}

    def replica_lag(self) -> Mapping[str, int]:
        return {}


class Durability(Protocol):
    """The shell's answer to "is this write on its replicas yet?" Writes to
    replicated slots are numbered as ``Store.replicated_writes`` counts them.

    Two ways to wait: a task awaits ``wait``; the client hub, which has no
    task to spare per write, ``hold``s a token and is called back through
    ``on_release`` (set once, by the hub) with the token and the verdict."""

    on_release: Callable[[Hashable, bool], None] | None
    timeout: float  # seconds a write waits for its replicas before its client is cut off
    # Set by the client hub during a cycle: it calls ``flush`` when the cycle
    # ends, so a write meanwhile need not wake anyone to send it.
    batching: bool

    @property
    def settled(self) -> int:
        """Writes numbered up to this were durable when last looked (a read
        of a slot whose last write is older need not wait)."""
        ...

    def settle(self) -> int:
        """``settled`` brought up to date (it may lag: the cheap check first)."""
        ...

    def hold(self, token: Hashable, first: int, last: int, read: int = 0) -> None:
        """Call ``on_release(token, ok)`` once writes up to ``last`` and
        ``read`` are durable (``ok`` as ``wait`` returns it)."""
        ...

    def cancel(self, token: Hashable) -> None:
        """``token`` waits no more (timed out, or its connection closed)."""
        ...

    def flush(self) -> None:
        """Send the replicas what was written while ``batching`` (the hub
        calls this at the end of each cycle: one round for all its writes)."""
        ...

    async def wait(self, first: int, last: int, read: int = 0) -> bool:
        """Return once writes up to ``last`` are durable: True if they are,
        False if a ring change took one of ``first``..``last`` (or ``read``,
        a write the request read) away first (the client must not be told OK).
        ``last`` 0: the request wrote nothing."""
        ...
