"""Helpers for tests that run clusters of real node processes on loopback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis

from keycafe.gossip.config import GossipConfig
from keycafe.gossip.suspicion import suspicion_timeout
from keycafe.node.server import have_epoll
from tests.conftest import NodeProcess, node_process

LOCAL = GossipConfig.local()
# The ways a node can watch its clients (--client-io): the real-socket tests run
# against each one this platform has.
CLIENT_IO = ("epoll", "portable") if have_epoll() else ("portable",)


def cluster_nodes(node: NodeProcess) -> dict[str, list[str]]:
    r = redis.Redis(host=node.host, port=node.port, decode_responses=True)
    try:
        text = r.execute_command("CLUSTER", "NODES")
    finally:
        r.close()
    rows = [line.split() for line in str(text).splitlines() if line.strip()]
    return {row[1].split("@")[0]: row for row in rows}


def info(node: NodeProcess) -> dict[str, str]:
    r = redis.Redis(host=node.host, port=node.port, decode_responses=True)
    try:
        text = str(r.execute_command("CLUSTER", "INFO"))
    finally:
        r.close()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


@contextlib.contextmanager
def cluster(n: int, *args: str) -> Iterator[list[NodeProcess]]:
    """``n`` nodes (LOCAL gossip profile, ``args`` added to each command line)."""
    with contextlib.ExitStack() as stack:
        seed = stack.enter_context(node_process("--gossip-profile", "local", *args))
        nodes = [seed]
        for _ in range(n - 1):
            join = ("--seed", f"127.0.0.1:{seed.cluster_port}")
            nodes.append(
                stack.enter_context(node_process("--gossip-profile", "local", *join, *args))
            )
        yield nodes


def detection_bound(n: int) -> float:
    """The LOCAL profile's worst case: a full round-robin before anyone probes
    the victim, one probe interval, the longest suspicion, and a second for the
    news to spread and for polling."""
    lo = suspicion_timeout(LOCAL.suspicion_mult, n, LOCAL.probe_interval)
    return n * LOCAL.probe_interval + LOCAL.suspicion_max_timeout_mult * lo + 1.0


def ring_settled(nodes: list[NodeProcess], members: int) -> bool:
    """Every node routes by the same ring of ``members`` with no change pending."""
    seen = {
        (x["keycafe_ring_epoch"], x["keycafe_ring_members"], x["keycafe_ring_pending"])
        for x in map(info, nodes)
    }
    return len(seen) == 1 and seen.pop()[1:] == (str(members), "0")
