"""State shared by every connection of one node: a sans-I/O core.

The trio shell owns one ``ServerState``, sets ``now_ms`` once per batch of
requests (cores never read the clock), and calls ``tick`` from a timer.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import attrs

from keycafe.cluster.slot_table import NodeAddr, SlotTable
from keycafe.resp.parser import Limits
from keycafe.server.probe import Durability, LoneProbe, NodeProbe
from keycafe.server.probe import MemberView as MemberView  # the gossip shell imports it here
from keycafe.server.routing import Routing
from keycafe.store.engine import Store, StoreConfig

if TYPE_CHECKING:
    from keycafe.server.session import Session


@attrs.frozen(kw_only=True)
class ServerConfig:
    """What a node's client-facing side is told at start-up."""

    me: NodeAddr
    bind: str = "127.0.0.1"
    # Empty means no password, as Redis's default user with "nopass".
    requirepass: str = ""
    # Redis 7's enable-debug-command: "no" (default), "yes", or "local"
    # (loopback clients only). DEBUG changes one node's copy behind the cluster's back.
    enable_debug_command: str = "no"
    # Redis's default maxclients.
    maxclients: int = 10_000
    # Close a client idle this many seconds; 0 never does (Redis's default).
    timeout: int = 0
    limits: Limits = attrs.field(factory=Limits)
    store: StoreConfig = attrs.field(factory=StoreConfig)
    # Active expiry cycles per second; Redis's default hz is 10.
    hz: int = 10
    # Keys (and tombstones) one active expiry cycle may reclaim; past this the
    # cycle reports more work and the shell runs another one soon.
    expire_budget: int = 2_000


@attrs.define(eq=False)
class Counters:
    """Totals for INFO stats. Sessions and the shell hold this object, so it
    is reset in place (CONFIG RESETSTAT), never replaced."""

    connections_received: int = 0
    rejected_connections: int = 0
    commands_processed: int = 0
    protocol_errors: int = 0
    error_replies: int = 0
    net_input_bytes: int = 0
    net_output_bytes: int = 0

    def reset(self) -> None:
        for field in attrs.fields(Counters):
            setattr(self, field.name, 0)


@attrs.define(eq=False)
class ServerState:
    config: ServerConfig
    store: Store
    # Replaced whole by whoever changes the topology, never mutated.
    routing: Routing
    started_ms: int
    now_ms: int = 0
    # The monotonic clock (the cluster core's) as the shell last read it, and
    # until when this node's lease holds on it: after that it serves no key,
    # even before the core's timer has marked the routing halted (a process
    # that was stopped finds requests waiting when it wakes).
    clock: float = 0.0
    lease_until: float = math.inf
    counters: Counters = attrs.field(factory=Counters, on_setattr=attrs.setters.frozen)
    clients: dict[int, Session] = attrs.field(factory=dict)
    # Set once by the shell that runs the node.
    probe: NodeProbe = attrs.field(factory=LoneProbe)
    # Set by the shell that replicates: replies to writes wait on it. None:
    # nothing replicates (a lone state), a write is answered at once.
    durability: Durability | None = None
    _next_client_id: int = 1

    @classmethod
    def create(cls, config: ServerConfig, now_ms: int) -> ServerState:
        return cls(
            config=config,
            store=Store(config.me.node_id, config.store),
            routing=Routing.create(SlotTable.single(config.me)),
            started_ms=now_ms,
            now_ms=now_ms,
        )

    def new_client_id(self) -> int:
        cid = self._next_client_id
        self._next_client_id += 1
        return cid

    def tick(self, now_ms: int) -> bool:
        """One active expiry cycle; True if due work was left for the next one."""
        self.now_ms = now_ms
        return self.store.active_expire(now_ms, self.config.expire_budget)
