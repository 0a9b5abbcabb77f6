"""keycafe's client against real local clusters (sync and trio)."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import keycafe
from keycafe.client.routing import slot_of
from tests.conftest import NodeProcess, node_process, wait_until
from tests.node.helpers import cluster, detection_bound, ring_settled

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def three() -> Iterator[list[NodeProcess]]:
    with cluster(3) as nodes:
        wait_until(lambda: ring_settled(nodes, 3), timeout=20)
        yield nodes


def seed(node: NodeProcess) -> str:
    return f"{node.host}:{node.port}"


def test_every_method_of_the_sync_client(three: list[NodeProcess]) -> None:
    with keycafe.Cluster(seed(three[1])) as kc:
        assert kc.set("sync:a", "1") is True
        assert kc.get("sync:a") == b"1"
        assert kc.get("sync:missing") is None
        assert kc.set("sync:a", "2", nx=True) is None
        assert kc.set("sync:none", "x", xx=True) is None
        assert kc.set("sync:a", "3", xx=True, ex=100) is True
        assert 98 <= kc.ttl("sync:a") <= 100
        assert kc.set("sync:a", "4", keepttl=True) is True
        assert kc.ttl("sync:a") > 0
        assert kc.set("sync:p", "v", px=50_000) is True
        assert 40 <= kc.ttl("sync:p") <= 50
        assert kc.ttl("sync:missing") == -2
        assert kc.incr("sync:n") == 1
        assert kc.incrby("sync:n", 41) == 42
        assert kc.incr("sync:n", -2) == 40
        assert kc.expire("sync:n", 30) is True
        assert kc.expire("sync:missing", 30) is False
        kc.set("sync:s", "abc")
        with pytest.raises(keycafe.ResponseError, match="not an integer"):
            kc.incr("sync:s")
        # Multi-key commands span slots (and so nodes); results keep the order.
        pairs = {f"sync:m{i}": f"v{i}" for i in range(200)}
        assert len({slot_of(k) for k in pairs}) > 100
        assert kc.mset(pairs) is True
        keys = [*pairs, "sync:nothing"]
        assert kc.mget(keys) == [v.encode() for v in pairs.values()] + [None]
        assert kc.exists("sync:m1", "sync:m2", "sync:nothing", "sync:m1") == 3
        assert kc.delete("sync:m1", "sync:m2", "sync:nothing") == 2
        assert kc.delete() == 0
        assert kc.mget([]) == []
        scanned = set(kc.scan_iter(match="sync:m*"))
        assert scanned == {k.encode() for k in pairs} - {b"sync:m1", b"sync:m2"}
        pipe = kc.pipeline()
        pipe.set("sync:q", "x").get("sync:q").incr("sync:qn").mget(["sync:q", "sync:m3"])
        assert pipe.execute() == [True, b"x", 1, [b"x", b"v3"]]
        info = kc.cluster_info()
        assert info["cluster_state"] == "ok"
        assert info["cluster_known_nodes"] == "3"
        nodes = kc.nodes()
        assert len(nodes) == 3
        assert sum(n.slots for n in nodes) == 16384
        assert {n.address for n in nodes} == {seed(n) for n in three}
        assert kc.execute_command("STRLEN", "sync:q") == 1
    with pytest.raises(keycafe.ConnectionError, match="closed"):
        kc.get("sync:q")  # closed clients open no new connections


def test_decode_responses(three: list[NodeProcess]) -> None:
    with keycafe.Cluster([seed(three[0]), seed(three[2])], decode_responses=True) as kc:
        kc.set("dec:k", "héllo")
        assert kc.get("dec:k") == "héllo"
        assert kc.mget(["dec:k", "dec:none"]) == ["héllo", None]
        kc.set(b"dec:raw", b"\xff")
        assert kc.get(b"dec:raw").encode("utf-8", "surrogateescape") == b"\xff"


def test_the_trio_client(three: list[NodeProcess]) -> None:
    async def main() -> None:
        async with keycafe.open_cluster(seed(three[2]), decode_responses=True) as kc:
            assert await kc.set("trio:a", "1", ex=60) is True
            assert await kc.get("trio:a") == "1"
            assert await kc.incrby("trio:n", 5) == 5
            assert await kc.mset({f"trio:{i}": str(i) for i in range(50)}) is True
            assert await kc.mget([f"trio:{i}" for i in range(50)]) == [str(i) for i in range(50)]
            assert await kc.exists("trio:1", "trio:x") == 1
            assert await kc.delete("trio:1") == 1
            assert 0 < await kc.ttl("trio:a") <= 60
            assert await kc.expire("trio:2", 10) is True
            pipe = kc.pipeline()
            pipe.set("trio:p", "v").get("trio:p")
            assert await pipe.execute() == [True, "v"]
            keys = [k async for k in kc.scan_iter(match="trio:*")]
            assert len(keys) == len(set(keys)) == 52
            assert (await kc.cluster_info())["cluster_state"] == "ok"
            assert len(await kc.nodes()) == 3

            # Many tasks share one client.
            results: dict[int, str | None] = {}

            async def worker(w: int) -> None:
                for i in range(50):
                    await kc.set(f"trio:w{w}:{i}", str(i))
                results[w] = await kc.get(f"trio:w{w}:49")

            async with trio.open_nursery() as nursery:
                for w in range(20):
                    nursery.start_soon(worker, w)
            assert results == dict.fromkeys(range(20), "49")

    trio.run(main)


def test_threads_share_one_client(three: list[NodeProcess]) -> None:
    errors: list[BaseException] = []
    with keycafe.Cluster(seed(three[0])) as kc:

        def worker(w: int) -> None:
            try:
                for i in range(200):
                    kc.set(f"thr:{w}:{i}", f"{w}.{i}")
                    assert kc.get(f"thr:{w}:{i}") == f"{w}.{i}".encode()
                assert kc.mget([f"thr:{w}:{i}" for i in range(200)]) == [
                    f"{w}.{i}".encode() for i in range(200)
                ]
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors


def test_bad_seeds_give_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(keycafe.ConnectionError, match=f"127.0.0.1:{dead}"):
        keycafe.Cluster(f"127.0.0.1:{dead}")
    with pytest.raises(keycafe.ConfigError, match="host:port"):
        keycafe.Cluster("localhost")
    with pytest.raises(keycafe.KeycafeError):
        trio.run(_open_trio, f"127.0.0.1:{dead}")


async def _open_trio(seeds: str) -> None:
    async with keycafe.open_cluster(seeds):
        pass


def test_the_readme_example_runs_as_written(three: list[NodeProcess]) -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- client-example -->\n```python\n(.*?)```", readme, re.S)
    assert block is not None
    code = block.group(1).replace("127.0.0.1:9814", seed(three[0]))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.split("\n")[:3] == ["True", "b'bar'", "None"]


class Workload(threading.Thread):
    """Writes and reads ``keys`` in a loop with one client until stopped."""

    def __init__(self, kc: keycafe.Cluster, keys: list[str]) -> None:
        super().__init__(daemon=True)
        self.kc, self.keys = kc, keys
        self.stopping = threading.Event()
        self.rounds = 0
        self.errors: list[BaseException] = []
        # hold() parks the loop between one key's write+read and the next.
        self._hold = threading.Event()
        self._parked = threading.Event()
        self._go = threading.Event()

    def hold(self) -> None:
        self._go.clear()
        self._hold.set()
        assert self._parked.wait(timeout=30), "the workload did not park"

    def resume(self) -> None:
        self._hold.clear()
        self._parked.clear()
        self._go.set()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                for key in self.keys:
                    self.kc.set(key, str(self.rounds))
                    value = self.kc.get(key)
                    assert value == str(self.rounds).encode(), (key, value)
                    if self._hold.is_set():
                        self._parked.set()
                        self._go.wait()
                self.rounds += 1
        except BaseException as exc:
            self.errors.append(exc)


def test_a_join_moves_slots_under_the_client_transparently() -> None:
    with cluster(3) as nodes, contextlib.ExitStack() as stack:
        wait_until(lambda: ring_settled(nodes, 3), timeout=20)
        kc = keycafe.Cluster(seed(nodes[0]))
        stack.callback(kc.close)
        keys = [f"join:{i}" for i in range(300)]
        work = Workload(kc, keys)
        work.start()
        wait_until(lambda: work.rounds >= 1, timeout=20)
        with node_process(
            "--gossip-profile", "local", "--seed", f"127.0.0.1:{nodes[0].cluster_port}"
        ) as fourth:
            wait_until(lambda: ring_settled([*nodes, fourth], 4), timeout=30)
            rounds = work.rounds
            wait_until(lambda: work.rounds >= rounds + 2 or not work.is_alive(), timeout=20)
            work.stopping.set()
            work.join(timeout=20)
            assert not work.errors, work.errors
            # The client learnt the new owner of the slots that moved.
            assert (fourth.host, fourth.port) in kc.slots.primaries()


def test_killing_a_node_mid_workload_surfaces_no_error_once_rerouted() -> None:
    with cluster(3) as nodes, contextlib.ExitStack() as stack:
        wait_until(lambda: ring_settled(nodes, 3), timeout=20)
        victim = nodes[2]
        kc = keycafe.Cluster(seed(nodes[0]), retry_deadline=30)
        stack.callback(kc.close)
        keys = [f"kill:{i}" for i in range(300)]
        # Some keys live on the victim: writing them fails (refused, then
        # CLUSTERDOWN) until the ring drops it, and the client must retry
        # until then. The workload writes before it reads, so the values the
        # victim took with it do not count.
        victims = [k for k in keys if kc.slots.node_for(slot_of(k)) == (victim.host, victim.port)]
        assert 0 < len(victims) < len(keys)
        work = Workload(kc, keys)
        work.start()
        wait_until(lambda: work.rounds >= 1, timeout=20)
        # Kill between two of the client's operations: a write the victim
        # acknowledged just before dying is lost (no replication yet), which is
        # not what this test is about. The client still holds the victim in
        # its map and pool; it must retry through the failover.
        work.hold()
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        work.resume()
        wait_until(lambda: ring_settled(nodes[:2], 2), timeout=detection_bound(3) + 10)
        rounds = work.rounds
        wait_until(lambda: work.rounds >= rounds + 2 or not work.is_alive(), timeout=30)
        work.stopping.set()
        work.join(timeout=30)
        assert not work.errors, work.errors
