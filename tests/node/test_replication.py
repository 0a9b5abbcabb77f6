"""Real processes with two copies of every slot: kill -9 under a redis-py write
load, and every acknowledged write reads back."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from keycafe.store.keyslot import key_slot
from tests.conftest import NodeProcess, wait_until
from tests.node.helpers import cluster, detection_bound, ring_settled

COPIES = ("--replicas", "1")  # the primary and one replica (the default, said aloud)


def _writer(nodes: list[NodeProcess], acked: dict[str, str], stop: threading.Event) -> None:
    """Unique keys, one at a time; a key counts only once SET answered OK."""
    startup = [ClusterNode(n.host, n.port) for n in nodes]
    rc = RedisCluster(startup_nodes=startup, decode_responses=True)
    i = 0
    try:
        while not stop.is_set():
            key, value = f"w:{i}", f"v{i}"
            i += 1
            try:
                if rc.set(key, value):
                    acked[key] = value
            except (redis.RedisError, OSError, IndexError):
                # Not acknowledged (the node died under it, or the slot was
                # moving): the write may or may not have happened. redis-py
                # sometimes fails inside its own retry with IndexError while
                # its node list is empty.
                rc.close()
                rc = RedisCluster(startup_nodes=startup, decode_responses=True)
    finally:
        rc.close()


@pytest.mark.parametrize("victim", [0, 2])  # 0: the seed, which founded the ring
def test_kill_9_of_one_node_under_load_loses_no_acknowledged_write(victim: int) -> None:
    with cluster(3, *COPIES) as nodes:
        wait_until(lambda: ring_settled(nodes, 3), timeout=30)
        acked: dict[str, str] = {}
        stop = threading.Event()
        writer = threading.Thread(target=_writer, args=(nodes, acked, stop), daemon=True)
        writer.start()
        wait_until(lambda: len(acked) > 500, timeout=30)
        dead = nodes[victim]
        dead.proc.send_signal(signal.SIGKILL)
        dead.proc.wait()
        before = len(acked)
        rest = [n for n in nodes if n is not dead]
        wait_until(lambda: ring_settled(rest, 2), timeout=detection_bound(3) + 20)
        wait_until(lambda: len(acked) > before + 200, timeout=30)  # writes resumed
        stop.set()
        writer.join(timeout=30)
        startup = [ClusterNode(n.host, n.port) for n in rest]
        rc = RedisCluster(startup_nodes=startup, decode_responses=True)
        try:
            keys = sorted(acked)
            got: list[str | None] = []
            for start in range(0, len(keys), 500):
                got += rc.mget_nonatomic(keys[start : start + 500])
        finally:
            rc.close()
        lost = [k for k, v in zip(keys, got, strict=True) if v != acked[k]]
        assert lost == [], f"{len(lost)} of {len(keys)} acknowledged writes lost: {lost[:5]}"


def _slots_led_by(node: NodeProcess, primary: NodeProcess, replica: NodeProcess) -> set[int]:
    """Slots whose primary is ``primary`` with ``replica`` as its replica, as
    ``node`` shows them in CLUSTER SLOTS."""
    r = redis.Redis(host=node.host, port=node.port)
    try:
        rows = r.execute_command("CLUSTER", "SLOTS")
    finally:
        r.close()
    out: set[int] = set()
    for row in rows:
        start, end, first, *rest = row
        if first[1] == primary.port and any(x[1] == replica.port for x in rest):
            out.update(range(start, end + 1))
    return out


def test_a_primary_acknowledges_nothing_its_paused_replica_lacks() -> None:
    """The replica is stopped (SIGSTOP) briefly and the primary killed
    meanwhile: writes it answered OK would be lost with it, so it must not
    answer any until the replica holds them (they wait, then fail)."""
    with cluster(3, *COPIES) as nodes:
        wait_until(lambda: ring_settled(nodes, 3), timeout=30)
        primary, replica, other = nodes[1], nodes[2], nodes[0]
        slots = _slots_led_by(other, primary, replica)
        assert slots
        keys = [k for k in (f"p:{i}" for i in range(20_000)) if key_slot(k.encode()) in slots]
        acked: dict[str, str] = {}
        stop = threading.Event()

        def write() -> None:
            r = redis.Redis(host=primary.host, port=primary.port, socket_timeout=30)
            try:
                for i, key in enumerate(keys):
                    if stop.is_set():
                        return
                    if r.set(key, f"v{i}"):
                        acked[key] = f"v{i}"
            except (redis.RedisError, OSError):
                pass  # the primary died under it
            finally:
                r.close()

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        wait_until(lambda: len(acked) > 100, timeout=30)
        replica.proc.send_signal(signal.SIGSTOP)
        try:
            # The fault's length, not a wait for something: writes reach the
            # primary meanwhile, and must stay unanswered.
            time.sleep(0.5)
            primary.proc.send_signal(signal.SIGKILL)
            primary.proc.wait()
        finally:
            replica.proc.send_signal(signal.SIGCONT)
        stop.set()
        writer.join(timeout=30)
        rest = [other, replica]
        wait_until(lambda: ring_settled(rest, 2), timeout=detection_bound(3) + 20)
        rc = RedisCluster(
            startup_nodes=[ClusterNode(n.host, n.port) for n in rest], decode_responses=True
        )
        try:
            got = {k: rc.get(k) for k in acked}
        finally:
            rc.close()
        lost = [k for k, v in acked.items() if got[k] != v]
        assert lost == [], f"{len(lost)} of {len(acked)} acknowledged writes lost: {lost[:5]}"
