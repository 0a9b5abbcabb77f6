"""Real processes with two copies of every slot: kill -9 under a redis-py write
load, and every acknowledged write reads back."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import warnings

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from keycafe.store.keyslot import key_slot
from tests.conftest import NodeProcess, node_process, wait_until
from tests.node.helpers import cluster, detection_bound, info, ring_settled

COPIES = ("--replicas", "1")  # the primary and one replica (the default, said aloud)


COUNTERS = 50  # keys overwritten again and again, with rising numbers


def _writer(nodes: list[NodeProcess], acked: dict[str, int], stop: threading.Event) -> None:
    """Unique keys and overwritten counters, one write at a time, each value
    a rising number; a write counts only once SET answered OK."""
    startup = [ClusterNode(n.host, n.port) for n in nodes]
    rc = RedisCluster(startup_nodes=startup, decode_responses=True)
    i = 0
    try:
        while not stop.is_set():
            i += 1
            key = f"c:{i % COUNTERS}" if i % 2 else f"w:{i}"
            try:
                if rc.set(key, str(i)):
                    acked[key] = i
            except (redis.RedisError, OSError, IndexError):
                # Not acknowledged (the node died under it, or the slot was
                # moving): the write may or may not have happened. redis-py
                # sometimes fails inside its own retry with IndexError while
                # its node list is empty.
                rc.close()
                rc = RedisCluster(startup_nodes=startup, decode_responses=True)
    finally:
        rc.close()


def _lost(nodes: list[NodeProcess], acked: dict[str, int]) -> list[str]:
    """Acknowledged writes that do not read back with their value or a later one."""
    rc = RedisCluster(startup_nodes=[ClusterNode(n.host, n.port) for n in nodes])
    try:
        keys = sorted(acked)
        got: list[bytes | None] = []
        for start in range(0, len(keys), 500):
            got += rc.mget_nonatomic(keys[start : start + 500])
    finally:
        rc.close()
    return [k for k, v in zip(keys, got, strict=True) if v is None or int(v) < acked[k]]


def _coordinator(nodes: list[NodeProcess]) -> NodeProcess:
    chosen = info(nodes[0])["keycafe_coordinator"]
    for n in nodes:
        r = redis.Redis(host=n.host, port=n.port, decode_responses=True)
        try:
            if r.execute_command("CLUSTER", "MYID") == chosen:
                return n
        finally:
            r.close()
    raise AssertionError(f"no node is the coordinator {chosen}")


def _every_slot_has_a_primary_and_a_replica(node: NodeProcess) -> bool:
    r = redis.Redis(host=node.host, port=node.port)
    try:
        rows = r.execute_command("CLUSTER", "SLOTS")
    finally:
        r.close()
    covered = sum(end - start + 1 for start, end, *owners in rows if len(owners) >= 2)
    return covered == 16384


def _recovers_with_nothing_lost(
    rest: list[NodeProcess],
    acked: dict[str, int],
    stop: threading.Event,
    writer: threading.Thread,
    timeout: float,
) -> None:
    """After a node's death: the survivors settle on a ring of themselves,
    writes resume, every acknowledged write reads back, and every slot has a
    primary and a replica."""
    before = len(acked)
    wait_until(lambda: ring_settled(rest, len(rest)), timeout=timeout)
    wait_until(lambda: len(acked) > before + 200, timeout=30)  # writes resumed
    stop.set()
    writer.join(timeout=30)
    lost = _lost(rest, acked)
    assert lost == [], f"{len(lost)} of {len(acked)} acknowledged writes lost: {lost[:5]}"
    for x in rest:
        assert _every_slot_has_a_primary_and_a_replica(x)


@pytest.mark.parametrize(
    ("n", "victim"),
    [(3, "seed"), (3, "other"), (5, "coordinator")],  # the seed founded the ring
)
def test_kill_9_of_one_node_under_load_loses_no_acknowledged_write(n: int, victim: str) -> None:
    with cluster(n, *COPIES) as nodes:
        wait_until(lambda: ring_settled(nodes, n), timeout=30)
        acked: dict[str, int] = {}
        stop = threading.Event()
        writer = threading.Thread(target=_writer, args=(nodes, acked, stop), daemon=True)
        writer.start()
        wait_until(lambda: len(acked) > 500, timeout=30)
        dead = {"seed": nodes[0], "other": nodes[-1]}.get(victim) or _coordinator(nodes)
        dead.proc.send_signal(signal.SIGKILL)
        dead.proc.wait()
        rest = [x for x in nodes if x is not dead]
        _recovers_with_nothing_lost(rest, acked, stop, writer, detection_bound(n) + 20)


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


def _owners_of(node: NodeProcess, slot: int) -> list[int]:
    """Client ports of ``slot``'s owners, primary first, as ``node``'s CLUSTER SLOTS says."""
    r = redis.Redis(host=node.host, port=node.port)
    try:
        rows = r.execute_command("CLUSTER", "SLOTS")
    finally:
        r.close()
    row = next(row for row in rows if row[0] <= slot <= row[1])
    return [x[1] for x in row[2:]]


def test_replicas_serve_readonly_clients_and_wait_counts_them() -> None:
    with cluster(3, *COPIES) as nodes:
        wait_until(lambda: ring_settled(nodes, 3), timeout=30)
        startup = [ClusterNode(n.host, n.port) for n in nodes]
        rc = RedisCluster(startup_nodes=startup, decode_responses=True)
        try:
            values = {f"r:{i}": f"v{i}" for i in range(300)}
            for key, value in values.items():
                assert rc.set(key, value)
            assert rc.wait(1, 1000) == 1  # redis-py asks its default node
        finally:
            rc.close()
        with warnings.catch_warnings():
            # redis-py 5.3 renamed it (load_balancing_strategy); the old name
            # is what most code in the wild still says.
            warnings.simplefilter("ignore", DeprecationWarning)
            readers = RedisCluster(
                startup_nodes=startup, decode_responses=True, read_from_replicas=True
            )
        try:
            assert {k: readers.get(k) for k in values} == values
        finally:
            readers.close()
        by_port = {n.port: n for n in nodes}
        key = "r:7"
        primary_port, replica_port = _owners_of(nodes[0], key_slot(key.encode()))
        replica = redis.Redis(host="127.0.0.1", port=replica_port, decode_responses=True)
        primary = redis.Redis(host="127.0.0.1", port=primary_port, decode_responses=True)
        try:
            with pytest.raises(redis.exceptions.MovedError):
                replica.get(key)
            assert replica.execute_command("READONLY")
            assert replica.get(key) == "v7"  # a replica's copy, served
            with pytest.raises(redis.exceptions.MovedError):
                replica.set(key, "no")
            assert primary.set(key, "v7b")
            assert primary.execute_command("WAIT", 1, 1000) == 1
            assert replica.get(key) == "v7b"  # held by the replica when SET answered
            stats = info_replication(by_port[primary_port])
            assert stats["connected_slaves"] == "2"  # each other node replicates some slot
            assert int(stats["keycafe_repl_written"]) > 0
            assert int(info_replication(by_port[replica_port])["keycafe_repl_entries_applied"]) > 0
            # keycafe status shows each node's replica share and lag too.
            status = subprocess.run(
                [sys.executable, "-m", "keycafe", "status", "-p", str(primary_port)],
                capture_output=True,
                text=True,
                timeout=30,
            )
            rows = [line.split() for line in status.stdout.splitlines() if "master" in line]
            assert len(rows) == 3, status.stdout
            assert "REPLICA OF" in status.stdout
            assert all(int(row[-3]) > 0 for row in rows), status.stdout  # replica slots
            assert all(row[-2].isdigit() for row in rows), status.stdout  # lag, in writes
        finally:
            replica.close()
            primary.close()


def info_replication(node: NodeProcess) -> dict[str, str]:
    r = redis.Redis(host=node.host, port=node.port, decode_responses=True)
    try:
        text = r.execute_command("INFO", "replication")
    finally:
        r.close()
    if isinstance(text, dict):  # redis-py parses INFO itself
        return {k: str(v) for k, v in text.items()}
    return dict(line.split(":", 1) for line in str(text).splitlines() if ":" in line)


def test_copies_made_to_differ_are_equal_again_within_a_pass() -> None:
    """DEBUG FORGET drops keys from one copy only (no tombstone, nothing
    replicated): from a replica, and from a primary (whose replica then holds
    the only copy). Anti-entropy brings both back within its bound."""
    with cluster(3, *COPIES, "--enable-debug-command", "local") as nodes:
        wait_until(lambda: ring_settled(nodes, 3), timeout=30)
        startup = [ClusterNode(n.host, n.port) for n in nodes]
        rc = RedisCluster(startup_nodes=startup, decode_responses=True)
        try:
            for i in range(200):
                assert rc.set(f"ae:{i}", f"v{i}")
        finally:
            rc.close()
        by_port = {n.port: n for n in nodes}

        def copy_at(port: int, key: str) -> str | None:
            r = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
            try:
                r.execute_command("READONLY")
                value = r.get(key)
                return value if value is None else str(value)
            finally:
                r.close()

        def forget(port: int, key: str) -> None:
            r = redis.Redis(host="127.0.0.1", port=port)
            try:
                assert r.execute_command("DEBUG", "FORGET", key) == 1
            finally:
                r.close()

        on_replica, on_primary = "ae:1", "ae:2"
        _, replica_port = _owners_of(nodes[0], key_slot(on_replica.encode()))
        primary_port, _ = _owners_of(nodes[0], key_slot(on_primary.encode()))
        forget(replica_port, on_replica)
        forget(primary_port, on_primary)
        assert copy_at(replica_port, on_replica) is None
        assert copy_at(primary_port, on_primary) is None
        # Bound: a pass every 10 s (keycafe.cluster.antientropy.PERIOD), two round trips.
        wait_until(lambda: copy_at(replica_port, on_replica) == "v1", timeout=25)
        wait_until(lambda: copy_at(primary_port, on_primary) == "v2", timeout=25)
        figures = info(by_port[primary_port])
        assert int(figures["keycafe_ae_passes"]) >= 1


def test_kill_9_while_a_fourth_node_joins_loses_no_acknowledged_write() -> None:
    with cluster(3, *COPIES) as nodes:
        wait_until(lambda: ring_settled(nodes, 3), timeout=30)
        acked: dict[str, int] = {}
        stop = threading.Event()
        writer = threading.Thread(target=_writer, args=(nodes, acked, stop), daemon=True)
        writer.start()
        wait_until(lambda: len(acked) > 500, timeout=30)
        join = ("--gossip-profile", "local", "--seed", f"127.0.0.1:{nodes[0].cluster_port}")
        with node_process(*join, *COPIES) as fourth:
            # The join is under way (a proposal streams slots to it) ...
            wait_until(lambda: info(nodes[0])["keycafe_ring_pending"] != "0", timeout=30)
            dead = nodes[2]  # ... when a member dies
            dead.proc.send_signal(signal.SIGKILL)
            dead.proc.wait()
            rest = [nodes[0], nodes[1], fourth]
            _recovers_with_nothing_lost(rest, acked, stop, writer, detection_bound(4) + 30)


def test_a_primary_stopped_past_failover_loses_nothing_and_ends_with_equal_copies() -> None:
    """SIGSTOP a primary for longer than the failure detector's bound: its
    replica is promoted meanwhile. On SIGCONT it is fenced (its pending
    writes get no acknowledgement from the promoted replica), comes back
    through a proposal, and every copy of its slots ends equal."""
    with cluster(3, *COPIES) as nodes:
        wait_until(lambda: ring_settled(nodes, 3), timeout=30)
        stopped, other = nodes[1], nodes[0]
        acked: dict[str, int] = {}
        stop = threading.Event()
        writer = threading.Thread(target=_writer, args=(nodes, acked, stop), daemon=True)
        writer.start()
        wait_until(lambda: len(acked) > 300, timeout=30)
        led = _slots_led_by(other, stopped, nodes[2]) | _slots_led_by(other, stopped, other)
        assert led
        stopped.proc.send_signal(signal.SIGSTOP)
        try:
            # Until the others have promoted its replicas: none of its slots
            # is led by it in their CLUSTER SLOTS any more.
            wait_until(
                lambda: (
                    not _slots_led_by(other, stopped, nodes[2])
                    and not _slots_led_by(other, stopped, other)
                ),
                timeout=detection_bound(3) + 20,
            )
        finally:
            stopped.proc.send_signal(signal.SIGCONT)
        wait_until(lambda: ring_settled(nodes, 3), timeout=60)
        before = len(acked)
        wait_until(lambda: len(acked) > before + 200, timeout=30)
        stop.set()
        writer.join(timeout=30)
        lost = _lost(nodes, acked)
        assert lost == [], f"{len(lost)} of {len(acked)} acknowledged writes lost: {lost[:5]}"
        keys = [k for k in acked if key_slot(k.encode()) in led][:200]
        assert keys

        def copies_equal() -> bool:
            for key in keys:
                owners = _owners_of(other, key_slot(key.encode()))
                seen = set()
                for port in owners:
                    r = redis.Redis(host="127.0.0.1", port=port)
                    try:
                        r.execute_command("READONLY")
                        seen.add(r.get(key))
                    finally:
                        r.close()
                if len(seen) != 1:
                    return False
            return True

        # Equal once the returning node's stream (or, at worst, a pass of
        # anti-entropy, 10 s) has reached every copy.
        wait_until(copies_equal, timeout=30)


def test_a_node_that_hears_from_no_majority_stops_serving_and_resumes() -> None:
    """Two of three nodes stopped (SIGSTOP): the third hears from no majority
    and answers every keyed request CLUSTERDOWN within its lease, and says
    cluster_state:fail; it serves again once they are back."""
    with cluster(3, *COPIES) as nodes:
        wait_until(lambda: ring_settled(nodes, 3), timeout=30)
        alone = nodes[0]
        r = redis.Redis(host=alone.host, port=alone.port, decode_responses=True)
        led = _slots_led_by(alone, alone, nodes[1]) | _slots_led_by(alone, alone, nodes[2])
        key = next(f"k{i}" for i in range(10_000) if key_slot(f"k{i}".encode()) in led)

        def refused() -> bool:
            try:
                r.get(key)
            except redis.exceptions.ClusterDownError:
                return True
            except redis.exceptions.ResponseError as exc:
                return "CLUSTERDOWN" in str(exc)
            return False

        try:
            assert not refused()
            for n in nodes[1:]:
                n.proc.send_signal(signal.SIGSTOP)
            try:
                wait_until(refused, timeout=5)
                assert info(alone)["cluster_state"] == "fail"
            finally:
                for n in nodes[1:]:
                    n.proc.send_signal(signal.SIGCONT)
            wait_until(lambda: not refused(), timeout=30)
        finally:
            r.close()
