"""State shared by every connection of one node: a sans-I/O core.

The trio shell owns one ``ServerState``, sets ``now_ms`` once per batch of
requests (cores never read the clock), and calls ``tick`` from a timer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import attrs

from keycafe.cluster.slot_table import NodeAddr, SlotTable
from keycafe.resp.parser import Limits
from keycafe.store.engine import Store, StoreConfig
from keycafe.store.keyslot import SLOT_COUNT

if TYPE_CHECKING:
    from keycafe.server.session import Session


@attrs.frozen(kw_only=True)
class ServerConfig:
    """What a node's client-facing side is told at start-up."""

    me: NodeAddr
    bind: str = "127.0.0.1"
    # Empty means no password, as Redis's default user with "nopass".
    requirepass: str = ""
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


@attrs.define(eq=False)
class Counters:
    connections_received: int = 0
    rejected_connections: int = 0
    commands_processed: int = 0
    protocol_errors: int = 0
    error_replies: int = 0
    net_input_bytes: int = 0
    net_output_bytes: int = 0


@attrs.define(eq=False)
class ServerState:
    config: ServerConfig
    store: Store
    table: SlotTable
    started_ms: int
    now_ms: int = 0
    counters: Counters = attrs.field(factory=Counters)
    clients: dict[int, Session] = attrs.field(factory=dict)
    # Process figures for INFO ("rss" bytes, "cpu_user"/"cpu_sys" seconds),
    # supplied by the shell: reading them is I/O, which cores do not do.
    process_probe: Callable[[], Mapping[str, float]] | None = None
    # The gossip member table and figures, supplied by the shell when gossip runs.
    members_probe: Callable[[], list[MemberView]] | None = None
    gossip_probe: Callable[[], Mapping[str, int | str]] | None = None
    # 1 for a slot between owners here, whose requests are told to try again
    # (-TRYAGAIN) rather than redirected: one received in a move whose change
    # this node has not heard of yet (redirecting would send the client back to
    # the old owner), or one handed over whose last forwarded writes the new
    # owner has not acknowledged yet (redirecting could read stale data there).
    moving: bytearray = attrs.field(factory=lambda: bytearray(SLOT_COUNT))
    _next_client_id: int = 1

    @classmethod
    def create(cls, config: ServerConfig, now_ms: int) -> ServerState:
        return cls(
            config=config,
            store=Store(config.me.node_id, config.store),
            table=SlotTable.single(config.me),
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
