"""A cluster of real node processes: routing by the ring, joins and leaves."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
import time

import redis
import redis.asyncio
from redis.cluster import ClusterNode, RedisCluster

from keycafe.store.keyslot import key_slot
from tests.conftest import NodeProcess, node_process, require_tool, wait_until
from tests.node.helpers import cluster, detection_bound, info, ring_settled

KEYS = 10_000


def client(node: NodeProcess) -> RedisCluster:
    return RedisCluster(host=node.host, port=node.port, decode_responses=True)


def dbsize(node: NodeProcess) -> int:
    r = redis.Redis(host=node.host, port=node.port)
    try:
        return int(r.dbsize())
    finally:
        r.close()


def slots_of(node: NodeProcess) -> int:
    """Slots ``node`` is primary of, by its own CLUSTER NODES line."""
    r = redis.Redis(host=node.host, port=node.port, decode_responses=True)
    try:
        text = str(r.execute_command("CLUSTER", "NODES"))
    finally:
        r.close()
    mine = next(line.split() for line in text.splitlines() if "myself" in line)
    total = 0
    for spec in mine[8:]:
        start, _, end = spec.partition("-")
        total += int(end or start) - int(start) + 1
    return total


def write_keys(rc: RedisCluster, n: int, prefix: str = "key") -> None:
    for start in range(0, n, 500):
        rc.mset_nonatomic({f"{prefix}:{i}": f"v{i}" for i in range(start, min(n, start + 500))})


def test_three_nodes_route_by_one_table_and_real_clients_follow_it() -> None:
    with cluster(3) as nodes:
        wait_until(lambda: ring_settled(nodes, 3), timeout=20)
        views = []
        for node in nodes:
            r = redis.Redis(host=node.host, port=node.port)
            views.append(r.execute_command("CLUSTER", "SLOTS"))
            r.close()
        # One table everywhere, covering every slot, spread over all three.
        assert views[0] == views[1] == views[2]
        assert sum(end - start + 1 for start, end, *_ in views[0]) == 16384
        shares = [slots_of(n) for n in nodes]
        assert sum(shares) == 16384
        assert max(shares) / (16384 / 3) <= 1.10
        # A node redirects a key it does not own to the node that does.
        r = redis.Redis(host=nodes[0].host, port=nodes[0].port)
        moved_slots = []
        for i in range(50):
            try:
                r.set(f"probe:{i}", "x")
            except redis.exceptions.MovedError as exc:
                moved_slots.append((exc.slot_id, key_slot(f"probe:{i}".encode())))
        r.close()
        moved = len(moved_slots)
        assert all(told == actual for told, actual in moved_slots)
        assert 0 < moved < 50

        rc = client(nodes[1])
        write_keys(rc, 600)
        assert rc.get("key:599") == "v599"
        assert rc.mget_nonatomic([f"key:{i}" for i in range(600)]) == [f"v{i}" for i in range(600)]
        rc.close()
        # Every key lives on exactly one node.
        assert sum(dbsize(n) for n in nodes) == 600 + (50 - moved)  # the probes it kept

        async def use_asyncio() -> list[str | None]:
            arc = redis.asyncio.RedisCluster(
                host=nodes[2].host, port=nodes[2].port, decode_responses=True
            )
            try:
                await arc.set("async-key", "a")
                return [await arc.get("async-key"), await arc.get("key:17")]
            finally:
                await arc.aclose()

        assert asyncio.run(use_asyncio()) == ["a", "v17"]

        cli = require_tool("redis-cli")
        for key in ("cli:a", "cli:b", "cli:c"):
            args = [cli, "-c", "-h", nodes[0].host, "-p", str(nodes[0].port)]
            out = subprocess.run([*args, "set", key, "yes"], capture_output=True, text=True)
            assert out.stdout.strip() == "OK"
            out = subprocess.run([*args, "get", key], capture_output=True, text=True)
            assert out.stdout.strip() == "yes"


class Workload(threading.Thread):
    """Reads keys written before and writes new ones, until stopped."""

    def __init__(self, seed: NodeProcess, known: int) -> None:
        super().__init__(daemon=True)
        self.rc = RedisCluster(
            startup_nodes=[ClusterNode(seed.host, seed.port)], decode_responses=True
        )
        self.known = known
        self.stopping = threading.Event()
        self.reads = 0
        self.writes = 0
        self.misses: list[str] = []
        self.errors: list[BaseException] = []

    def run(self) -> None:
        i = 0
        try:
            while not self.stopping.is_set():
                key = f"key:{(i * 7919) % self.known}"
                value = self.rc.get(key)
                if value != f"v{key.split(':')[1]}":
                    self.misses.append(f"{key}={value!r}")
                self.reads += 1
                self.rc.set(f"new:{i}", str(i))
                self.writes += 1
                i += 1
        except Exception as exc:  # anything but a followed redirect is a failure
            self.errors.append(exc)
        finally:
            self.rc.close()


def test_a_join_under_load_moves_a_quarter_of_the_slots_and_loses_nothing() -> None:
    with cluster(3) as nodes:
        wait_until(lambda: ring_settled(nodes, 3), timeout=20)
        rc = client(nodes[0])
        write_keys(rc, KEYS)
        work = Workload(nodes[1], KEYS)
        work.start()
        wait_until(lambda: work.reads > 200, timeout=10)
        seed = f"127.0.0.1:{nodes[0].cluster_port}"
        with node_process("--gossip-profile", "local", "--seed", seed) as fourth:
            everyone = [*nodes, fourth]
            wait_until(lambda: ring_settled(everyone, 4), timeout=30)
            before = work.reads
            wait_until(lambda: work.reads > before + 200 or not work.is_alive(), timeout=10)
            work.stopping.set()
            work.join(timeout=10)
            assert not work.errors, work.errors
            assert not work.misses, work.misses[:10]
            assert work.writes > 400
            share = slots_of(fourth)
            assert 0.2 <= share / 16384 <= 0.3  # about a quarter (1.08 x 1/4 at most)
            assert int(info(fourth)["keycafe_slots_keys_received"]) > 0
            # Everything written is still there, each key once (old owners dropped theirs).
            rc = client(nodes[2])
            old = rc.mget_nonatomic([f"key:{i}" for i in range(KEYS)])
            assert old == [f"v{i}" for i in range(KEYS)]
            new = rc.mget_nonatomic([f"new:{i}" for i in range(work.writes)])
            assert new == [str(i) for i in range(work.writes)]
            rc.close()
            assert sum(dbsize(n) for n in everyone) == KEYS + work.writes
            assert dbsize(fourth) > 0


def test_a_graceful_leave_hands_every_key_over() -> None:
    with cluster(3) as nodes:
        wait_until(lambda: ring_settled(nodes, 3), timeout=20)
        rc = client(nodes[0])
        write_keys(rc, KEYS)
        rc.close()
        leaver = nodes[1]
        held = dbsize(leaver)
        assert held > 0
        started = time.monotonic()
        assert leaver.stop(signal.SIGTERM, timeout=30) == 0
        assert any("left the ring" in line for line in leaver.lines)
        rest = [nodes[0], nodes[2]]
        wait_until(lambda: ring_settled(rest, 2), timeout=20)
        rc = client(nodes[2])
        values = rc.mget_nonatomic([f"key:{i}" for i in range(KEYS)])
        rc.close()
        assert values == [f"v{i}" for i in range(KEYS)]
        assert sum(dbsize(n) for n in rest) == KEYS
        assert time.monotonic() - started < 30


def test_a_killed_node_leaves_the_ring_and_its_slots_are_served_again() -> None:
    with cluster(3) as nodes:
        wait_until(lambda: ring_settled(nodes, 3), timeout=20)
        victim = nodes[2]
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        rest = nodes[:2]
        wait_until(lambda: ring_settled(rest, 2), timeout=detection_bound(3) + 10)
        assert sum(slots_of(n) for n in rest) == 16384
        # Every slot has a live owner again: writes and reads anywhere work
        # (what the victim held is kept by its replicas: tests/node/test_replication.py).
        rc = client(rest[0])
        write_keys(rc, 2000, prefix="after")
        assert rc.mget_nonatomic([f"after:{i}" for i in range(2000)]) == [
            f"v{i}" for i in range(2000)
        ]
        rc.close()
