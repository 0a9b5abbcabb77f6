"""Gossip between real node processes on loopback."""

from __future__ import annotations

import signal
import socket

import redis

from tests.conftest import NodeProcess, node_process, wait_until
from tests.node.helpers import cluster, cluster_nodes, detection_bound, info


def test_five_nodes_join_through_one_seed_and_detect_a_kill() -> None:
    with cluster(5) as nodes:
        for node in nodes:
            wait_until(lambda node=node: len(cluster_nodes(node)) == 5, timeout=15)
            assert info(node)["cluster_known_nodes"] == "5"
        victim = nodes[2]
        victim_addr = f"{victim.host}:{victim.port}"
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        bound = detection_bound(5)
        for node in nodes[:2] + nodes[3:]:
            # The node shows the victim as failed (Redis's "fail" flag).
            wait_until(
                lambda node=node: "fail" in cluster_nodes(node)[victim_addr][2].split(","),
                timeout=bound,
            )
        for node in nodes[:2] + nodes[3:]:
            assert "disconnected" in cluster_nodes(node)[victim_addr]


def test_sigterm_is_a_graceful_leave() -> None:
    with cluster(3) as nodes:
        for node in nodes:
            wait_until(lambda node=node: len(cluster_nodes(node)) == 3, timeout=15)
        leaver = nodes[1]
        assert leaver.stop(signal.SIGTERM) == 0
        for node in (nodes[0], nodes[2]):
            wait_until(lambda node=node: info(node)["cluster_known_nodes"] == "2", timeout=5)
        assert any("announced a graceful leave" in line for line in leaver.lines)
        assert not any("failed" in line for line in nodes[0].lines)


def test_garbage_on_the_cluster_port_is_dropped_and_counted() -> None:
    with node_process("--gossip-profile", "local") as node:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for payload in (b"", b"\x01\xc1", b"\x02hello", b"\x01" + bytes(range(200))):
                udp.sendto(payload, (node.host, node.cluster_port))
        with socket.create_connection((node.host, node.cluster_port), timeout=5) as tcp:
            tcp.sendall(b"\xff\xff\xff\xff")  # a frame header claiming 4 GB
            tcp.settimeout(5)
            assert tcp.recv(10) == b""  # the node hangs up
        wait_until(lambda: int(info(node)["keycafe_gossip_bad_packets"]) >= 3, timeout=5)
        wait_until(lambda: int(info(node)["keycafe_gossip_bad_frames"]) >= 1, timeout=5)
        r = redis.Redis(host=node.host, port=node.port)
        assert r.ping()
        r.close()


def test_a_seed_that_is_not_up_yet_is_retried_until_it_answers() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        later_port = s.getsockname()[1]
    args = ["--gossip-profile", "local", "--seed", f"127.0.0.1:{later_port}"]
    with node_process(*args) as early:
        wait_until(lambda: any("no seed answered" in line for line in early.lines), timeout=10)
        with node_process("--gossip-profile", "local", "--cluster-port", str(later_port)):
            wait_until(lambda: len(cluster_nodes(early)) == 2, timeout=20)
        assert any("joined the cluster through seed" in line for line in early.lines)


def test_killing_the_coordinator_elects_another() -> None:
    with cluster(3) as nodes:
        for node in nodes:
            wait_until(lambda node=node: len(cluster_nodes(node)) == 3, timeout=15)
        ids = {node.port: cluster_nodes(node)[f"{node.host}:{node.port}"][0] for node in nodes}
        first = min(ids.values())

        def agreed_term(group: list[NodeProcess], who: str) -> int | None:
            """The term all of ``group`` agree ``who`` holds, if they agree."""
            seen = [info(n) for n in group]
            if any(x["keycafe_coordinator"] != who for x in seen):
                return None
            terms = {int(x["keycafe_coordinator_term"]) for x in seen}
            return terms.pop() if len(terms) == 1 else None

        # Kill only once every node holds the ring of all three: a node still
        # on a two-member ring would rightly see no majority once one is dead.
        wait_until(lambda: all(info(n)["keycafe_ring_members"] == "3" for n in nodes), timeout=15)
        wait_until(lambda: agreed_term(nodes, first) is not None, timeout=15)
        before = agreed_term(nodes, first)
        assert before is not None
        assert before >= 1
        victim = next(n for n in nodes if ids[n.port] == first)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        rest = [n for n in nodes if n is not victim]
        second = min(ids[n.port] for n in rest)
        wait_until(
            lambda: (agreed_term(rest, second) or 0) > before, timeout=detection_bound(3) + 5
        )
        assert all(info(n)["keycafe_coordinator_majority"] == "1" for n in rest)


def test_the_ring_follows_membership() -> None:
    with cluster(3) as nodes:

        def ring(group: list[NodeProcess]) -> tuple[int, int] | None:
            """(epoch, members) if the whole group agrees on one ring."""
            seen = {(info(n)["keycafe_ring_epoch"], info(n)["keycafe_ring_members"]) for n in group}
            if len(seen) != 1:
                return None
            epoch, members = seen.pop()
            return int(epoch), int(members)

        wait_until(lambda: (ring(nodes) or (0, 0))[1] == 3, timeout=15)
        first = ring(nodes)
        assert first is not None
        victim = nodes[1]
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        rest = [nodes[0], nodes[2]]
        wait_until(lambda: (ring(rest) or (0, 0))[1] == 2, timeout=detection_bound(3) + 5)
        after = ring(rest)
        assert after is not None
        assert after[0] > first[0]
