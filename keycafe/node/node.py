"""A node as one trio service: the client listener plus its timers."""

from __future__ import annotations

import logging
import os
import resource
import secrets
import sys
import time
from functools import partial

import attrs
import trio

import keycafe
from keycafe.cluster.frames import MAX_FRAME, MAX_VALUE
from keycafe.cluster.ring import RingConfig
from keycafe.cluster.slot_table import NodeAddr, SlotTable
from keycafe.errors import ConfigError, StartupError
from keycafe.gossip.config import GossipConfig
from keycafe.gossip.messages import MemberInfo, State
from keycafe.node.gossip import GossipService, gossip_figures, members_view, open_cluster_port
from keycafe.node.links import PeerLinks
from keycafe.node.loopwatch import LoopWatch, loop_figures
from keycafe.node.server import bind_listener, have_epoll, serve_clients
from keycafe.node.slots import SlotService, slot_figures
from keycafe.resp.parser import Limits
from keycafe.server import MemberView, Routing, ServerConfig, ServerState

log = logging.getLogger("keycafe.node")

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@attrs.frozen(kw_only=True)
class NodeConfig:
    """Everything a node is started with (the CLI builds one from flags)."""

    bind: str = "127.0.0.1"
    port: int = 9814  # keycafe's client port (design brief, "Running")
    # Gossip/streams port; None means port + 10000, Redis Cluster's convention.
    cluster_port: int | None = None
    # The host clients are told to use (MOVED, CLUSTER SLOTS); default --bind.
    advertise: str | None = None
    node_id: str | None = None  # 40 hex characters; random when not given
    requirepass: str = ""
    enable_debug_command: str = "no"  # Redis's: no, yes or local
    maxclients: int = 10_000
    timeout: int = 0
    # Arguments (so values) at most MAX_VALUE: copies travel in link frames.
    limits: Limits = attrs.field(factory=lambda: Limits(max_bulk_len=MAX_VALUE))
    seeds: tuple[str, ...] = ()  # "host:port" of any members' cluster ports
    gossip: GossipConfig = attrs.field(factory=GossipConfig.lan)
    ring: RingConfig = attrs.field(factory=RingConfig)
    # A graceful leave waits this long for the hand-over before giving up.
    leave_timeout: float = 60.0
    # How idle clients are watched: "epoll" (one hub task, Linux only),
    # "portable" (each connection's task waits on its socket through trio), or
    # "auto", epoll where the platform has it (keycafe/node/server.py).
    client_io: str = "auto"

    def validate(self) -> None:
        if self.node_id is not None and (
            len(self.node_id) != 40 or any(c not in "0123456789abcdef" for c in self.node_id)
        ):
            raise ConfigError("node id must be 40 lower-case hex characters")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range")
        if self.cluster_port is not None and not 0 <= self.cluster_port <= 65535:
            raise ConfigError(f"cluster port {self.cluster_port} is out of range")
        if self.cluster_port is None and self.port > 65535 - 10000:
            raise ConfigError(
                f"port {self.port} leaves no room for the default cluster port (port + 10000):"
                " pass --cluster-port"
            )
        lim = self.limits
        if min(lim.max_bulk_len, lim.max_multibulk_len, lim.max_inline_len) < 1:
            raise ConfigError("protocol limits must be positive")
        if lim.max_bulk_len > MAX_VALUE:
            raise ConfigError(
                f"proto-max-bulk-len is at most {MAX_VALUE} ({MAX_VALUE >> 20} MiB): values are"
                " copied between nodes in frames of at most"
                f" {MAX_FRAME >> 20} MiB"
            )
        if self.maxclients < 1:
            raise ConfigError("maxclients must be at least 1")
        if self.timeout < 0:
            raise ConfigError("timeout must not be negative")
        for seed in self.seeds:
            parse_address(seed)
        if not 1 <= self.ring.vnodes <= 4096:
            raise ConfigError("vnodes must be between 1 and 4096")
        if not 1 <= self.ring.replicas <= 16:
            raise ConfigError("replicas must be between 0 and 15")
        if self.client_io not in ("auto", "epoll", "portable"):
            raise ConfigError(f"client-io must be auto, epoll or portable, not {self.client_io!r}")
        if self.client_io == "epoll" and not have_epoll():
            raise ConfigError("client-io epoll needs Linux; use auto or portable")


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``, else ``ConfigError``."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConfigError(f"bad address {text!r}: expected host:port")
    return host, int(port)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def process_figures() -> dict[str, float]:
    """Resident memory and CPU time of this process, for INFO."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    try:
        with open("/proc/self/statm", "rb") as f:
            rss = int(f.read().split()[1]) * _PAGE
    except OSError:
        # No /proc (macOS, BSD): the peak instead, which macOS gives in bytes
        # and the others in kilobytes.
        rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"rss": rss, "cpu_user": usage.ru_utime, "cpu_sys": usage.ru_stime}


@attrs.frozen
class _Probe:
    """The running node's answers to INFO and CLUSTER INFO/NODES (a ``NodeProbe``)."""

    gossip: GossipService
    slots: SlotService
    loop: LoopWatch

    def process(self) -> dict[str, float]:
        return process_figures()

    def members(self) -> list[MemberView]:
        return members_view(self.gossip)

    def figures(self) -> dict[str, int | str]:
        return {
            **gossip_figures(self.gossip),
            **slot_figures(self.slots),
            **loop_figures(self.loop),
        }

    def replica_lag(self) -> dict[str, int]:
        return self.slots.cluster.replication.lag()


async def _expiry_timer(state: ServerState) -> None:
    period = 1 / state.config.hz
    while True:
        more = state.tick(_now_ms())
        # With a backlog, come back sooner but still leave the CPU to clients
        # most of the time (Redis caps its active expiry at 25% of a cycle).
        await trio.sleep(period / 4 if more else period)


async def _leave_when(
    asked: trio.Event, slots: SlotService, patience: float, scope: trio.CancelScope
) -> None:
    """A graceful leave: hand the slots over (for up to ``patience`` seconds), then stop."""
    await asked.wait()
    with trio.move_on_after(patience) as waited:
        await slots.leave()
    if waited.cancelled_caught:
        log.warning("the hand-over did not finish within %.0fs; leaving anyway", patience)
    scope.cancel()


async def serve_node(
    config: NodeConfig,
    *,
    leave: trio.Event | None = None,
    task_status: trio.TaskStatus[ServerState] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a node until cancelled, or until ``leave`` is set and the node has
    handed its slots over; ``started`` reports its ``ServerState``."""
    config.validate()
    try:
        listener = bind_listener(config.bind, config.port)
    except OSError as exc:
        raise StartupError(
            f"cannot listen on {config.bind}:{config.port}: {exc.strerror or exc}"
        ) from exc
    port = listener.getsockname()[1]
    cluster_port = config.cluster_port
    if cluster_port is None:
        # Redis Cluster's convention; a node asked for any free client port
        # (0) gets any free cluster port too.
        cluster_port = port + 10000 if config.port else 0
    try:
        udp, stream_listener = await open_cluster_port(config.bind, cluster_port)
    except StartupError:
        listener.close()
        raise
    cluster_port = udp.getsockname()[1]
    if config.advertise is None and config.bind in ("0.0.0.0", "::"):
        log.warning(
            "listening on %s without --advertise: redirects and gossip will tell others to"
            " use %s, which only works on this host; pass --advertise <reachable address>",
            config.bind,
            config.bind,
        )
    me = NodeAddr(
        node_id=config.node_id or secrets.token_hex(20),
        host=config.advertise or config.bind,
        port=port,
        cluster_port=cluster_port,
    )
    server_config = ServerConfig(
        me=me,
        bind=config.bind,
        requirepass=config.requirepass,
        enable_debug_command=config.enable_debug_command,
        maxclients=config.maxclients,
        timeout=config.timeout,
        limits=config.limits,
    )
    state = ServerState.create(server_config, _now_ms())
    if config.seeds:
        # Joining: nothing is ours, and where keys live is unknown until the
        # ring arrives (CLUSTERDOWN meanwhile).
        state.routing = Routing.create(SlotTable.unassigned(me))
    links = PeerLinks(me.node_id)
    gossip = GossipService(
        me=MemberInfo(
            node=me.node_id,
            addr=(me.host, cluster_port),
            client_addr=(me.host, port),
            incarnation=GossipService.initial_incarnation(),
            state=State.ALIVE,
        ),
        config=config.gossip,
        seeds=[parse_address(s) for s in config.seeds],
        links=links,
    )
    slots = SlotService(state, gossip, links, config.ring)
    state.probe = _Probe(gossip, slots, loop := LoopWatch())
    async with trio.open_nursery() as nursery:
        await nursery.start(loop.run)
        await nursery.start(links.run)
        await nursery.start(slots.run)
        await nursery.start(gossip.run, udp, stream_listener)
        if leave is not None:
            scope = nursery.cancel_scope
            nursery.start_soon(_leave_when, leave, slots, config.leave_timeout, scope)
        portable = config.client_io == "portable"
        await nursery.start(partial(serve_clients, state, listener, portable=portable))
        nursery.start_soon(_expiry_timer, state)
        log.info(
            "keycafe %s node %s serving RESP on %s:%d, gossip on %s:%d%s",
            keycafe.__version__,
            me.node_id,
            config.bind,
            port,
            config.bind,
            cluster_port,
            f", seeds {', '.join(config.seeds)}" if config.seeds else " (a cluster of one)",
        )
        task_status.started(state)
