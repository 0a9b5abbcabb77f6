"""Command line: ``python -m keycafe [flags]`` or ``keycafe [flags]``.

``python -m keycafe status [-H host] [-p port]`` prints the member table;
``python -m keycafe launch [-n N]`` starts N local nodes as one cluster.

Every flag can also come from an environment variable named ``KEYCAFE_`` plus
the flag in upper case with dashes as underscores (``KEYCAFE_PORT=9815``); a flag
on the command line wins.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence

import trio

import keycafe
from keycafe.cluster.frames import MAX_VALUE
from keycafe.cluster.ring import RingConfig
from keycafe.errors import ConfigError, StartupError
from keycafe.gossip.config import GossipConfig
from keycafe.node.node import NodeConfig, serve_node
from keycafe.resp.parser import Limits

log = logging.getLogger("keycafe")


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get("KEYCAFE_" + name.upper().replace("-", "_"), default)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="keycafe",
        description="Start a keycafe node: a Redis Cluster-compatible in-memory store.",
    )
    limits = Limits()

    def add(flag: str, default: str | None, help_: str, **kw: object) -> None:
        p.add_argument(f"--{flag}", default=_env(flag, default), help=help_, **kw)  # type: ignore[arg-type]

    add("bind", "127.0.0.1", "address to listen on for clients (default %(default)s)")
    add("port", "9814", "client (RESP) port; 0 picks a free one (default %(default)s)", type=int)
    add("cluster-port", None, "gossip/stream port (default: port + 10000)", type=int)
    add("advertise", None, "host clients are told to use in redirects (default: --bind)")
    add("node-id", None, "40-hex node id (default: random)")
    add("requirepass", "", "password clients must AUTH with (default: none)")
    add(
        "enable-debug-command",
        "no",
        "allow DEBUG (as Redis 7): no, yes, or local (loopback clients only) (default %(default)s)",
        choices=["no", "yes", "local"],
    )
    add("maxclients", "10000", "most concurrent clients (default %(default)s)", type=int)
    add("timeout", "0", "close clients idle this many seconds; 0 never (default)", type=int)
    p.add_argument(
        "--seed",
        action="append",
        default=[x for x in (_env("seed", "") or "").split(",") if x],
        metavar="HOST:PORT",
        help="a member's cluster port to join through (repeatable; default: start a new cluster)",
    )
    add(
        "gossip-profile",
        "lan",
        "gossip timers: lan (memberlist's defaults) or local (5x faster)",
        choices=["lan", "local"],
    )
    ring = RingConfig()
    add("vnodes", str(ring.vnodes), "ring tokens per node (default %(default)s)", type=int)
    add(
        "replicas",
        "1",
        "copies of each slot besides its primary, as redis-cli's --cluster-replicas"
        " (default %(default)s: two copies; 0: none, a node's death loses its share)",
        type=int,
    )
    add(
        "leave-timeout",
        "60",
        "seconds a graceful shutdown waits for the data hand-over (default %(default)s)",
        type=float,
    )
    add(
        "proto-max-bulk-len",
        str(MAX_VALUE),
        "largest argument, so value, in bytes; at most the default: copies of values"
        " travel between nodes in frames (default %(default)s)",
        type=int,
    )
    add(
        "proto-max-multibulk-len",
        str(limits.max_multibulk_len),
        "most arguments in one request",
        type=int,
    )
    add(
        "proto-inline-max-size",
        str(limits.max_inline_len),
        "longest inline command or header line in bytes",
        type=int,
    )
    add(
        "client-io",
        "auto",
        "how idle clients are watched: epoll (Linux), portable (any platform),"
        " auto: epoll where there is one (default %(default)s)",
        choices=["auto", "epoll", "portable"],
    )
    add(
        "log-level",
        "info",
        "debug, info, warning or error (default %(default)s)",
        choices=["debug", "info", "warning", "error"],
    )
    p.add_argument("--version", action="version", version=f"keycafe {keycafe.__version__}")
    return p


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    return NodeConfig(
        bind=args.bind,
        port=args.port,
        cluster_port=args.cluster_port,
        advertise=args.advertise,
        node_id=args.node_id,
        requirepass=args.requirepass,
        enable_debug_command=args.enable_debug_command,
        maxclients=args.maxclients,
        timeout=args.timeout,
        limits=Limits(
            max_bulk_len=args.proto_max_bulk_len,
            max_multibulk_len=args.proto_max_multibulk_len,
            max_inline_len=args.proto_inline_max_size,
        ),
        seeds=tuple(args.seed),
        gossip=GossipConfig.local() if args.gossip_profile == "local" else GossipConfig.lan(),
        # RingConfig counts every copy, the primary included.
        ring=RingConfig(vnodes=args.vnodes, replicas=args.replicas + 1),
        leave_timeout=args.leave_timeout,
        client_io=args.client_io,
    )


async def _run(config: NodeConfig) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        leave = trio.Event()
        async with trio.open_nursery() as nursery:

            async def node(*, task_status: trio.TaskStatus[object]) -> None:
                await serve_node(config, leave=leave, task_status=task_status)
                nursery.cancel_scope.cancel()  # it has left: stop waiting for signals

            await nursery.start(node)
            # The store's 32768 per-slot dicts live as long as the process:
            # move them (and all start-up objects) out of the collector's
            # sight, or every full collection walks them (measured: ~0.5 us
            # per SET at 16-deep pipelines).
            gc.freeze()
            nursery.start_soon(_on_signals, signals, leave, nursery.cancel_scope)


async def _on_signals(
    signals: AsyncIterator[int], leave: trio.Event, scope: trio.CancelScope
) -> None:
    """The first signal is a graceful leave (hand the slots over, then go);
    a second one stops at once."""
    async for signum in signals:
        name = signal.Signals(signum).name
        if not leave.is_set():
            log.info("received %s: leaving the cluster (again to stop at once)", name)
            leave.set()
        else:
            log.info("received %s again: stopping now", name)
            scope.cancel()
            return


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["status"]:
        from keycafe.tools import status

        return status.main(argv[1:])
    if argv[:1] == ["launch"]:
        from keycafe.tools import launcher

        return launcher.main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Requests die young and rarely form cycles; collecting generation 0 every
    # 50k allocations instead of 700 cut ~0.3 us per command (measured).
    gc.set_threshold(50_000, 20, 100)
    try:
        config = config_from_args(args)
        config.validate()
    except ConfigError as exc:
        print(f"keycafe: {exc}", file=sys.stderr)
        return 2
    failed = False
    try:
        trio.run(_run, config)
    except* StartupError as group:
        for problem in group.exceptions:
            print(f"keycafe: cannot start: {problem}", file=sys.stderr)
        failed = True
    if failed:
        return 1
    log.info("bye")
    return 0
