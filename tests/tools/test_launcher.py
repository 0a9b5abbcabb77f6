"""``python -m keycafe launch`` and ``status`` against a launched cluster."""

from __future__ import annotations

import random
import re
import signal
import socket
import subprocess
import sys

from tests.conftest import require_tool, wait_until

KEYCAFE = [sys.executable, "-m", "keycafe"]


def free_run(count: int, avoid: range = range(0)) -> int:
    """A base port such that base..base+count-1 are free for TCP and UDP (and
    outside ``avoid``, a run already handed out)."""
    for _ in range(200):
        base = random.randrange(20_000, 30_000)
        if base + count > avoid.start and base < avoid.stop:
            continue
        try:
            for port in range(base, base + count):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no run of free ports")


def test_launch_starts_a_cluster_that_redis_benchmark_cluster_uses() -> None:
    port = free_run(3)
    cluster_port = free_run(3, avoid=range(port, port + 3))
    launcher = subprocess.Popen(
        [*KEYCAFE, "launch", "-n", "3", "-p", str(port), "--cluster-port", str(cluster_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert launcher.stdout is not None
        lines = []
        for line in launcher.stdout:
            lines.append(line)
            if "nodes up" in line:
                break
        text = "".join(lines)
        assert "3 nodes up" in text, text
        # The status view: every node, its share of the slots, all slots covered.
        shares = [int(m) for m in re.findall(r"(\d+) \(\d+\.\d%\)", text)]
        assert len(shares) == 3, text
        assert sum(shares) == 16384, text

        bench = require_tool("redis-benchmark")
        out = subprocess.run(
            [bench, "--cluster", "-p", str(port), "-t", "set,get", "-n", "100000", "-q"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert "Cluster has 3 master nodes" in out.stdout
        assert re.search(r"SET: [\d.]+ requests per second", out.stdout), out.stdout
        assert re.search(r"GET: [\d.]+ requests per second", out.stdout), out.stdout
        assert "error" not in (out.stdout + out.stderr).lower()

        status = subprocess.run(
            [sys.executable, "-m", "keycafe", "status", "-p", str(port + 1)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        rows = [line for line in status.stdout.splitlines() if "master" in line]
        assert len(rows) == 3
        # redis-benchmark --cluster writes one key per node: each is the
        # primary of one (KEYS counts those; replicas' copies are not shown).
        assert [row.split()[-1] for row in rows] == ["1", "1", "1"]
    finally:
        launcher.send_signal(signal.SIGINT)
        code = launcher.wait(timeout=30)
        assert launcher.stdout is not None
        launcher.stdout.close()
    assert code == 0
    # Every node is gone with it.
    for p in range(port, port + 3):
        wait_until(lambda p=p: refused(p), timeout=5)


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0
