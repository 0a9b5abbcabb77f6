"""What INFO and CLUSTER INFO/NODES ask of the shell around the server core.

Reading process figures is I/O and the member table belongs to gossip, neither
of which a sans-I/O core touches, so the shell hands the state one
``NodeProbe`` (memberlist's ``Delegate`` turned around: the core asks, the
shell answers). A state on its own, as in the command tests, has ``LoneProbe``.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    replicated slots are numbered as ``Store.replicated_writes`` counts them."""

    async def wait(self, first: int, last: int) -> bool:
        """Return once writes up to ``last`` are durable: True if they are,
        False if a ring change took one of ``first``..``last`` away first (the
        client must not be told OK)."""
        ...
