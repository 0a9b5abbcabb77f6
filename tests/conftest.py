"""Shared fixtures: nodes as real processes and as in-process trio services."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import attrs
import pytest
import trio

from keycafe.node.node import NodeConfig, serve_node
from keycafe.server import ServerState

_SERVING = re.compile(r"serving RESP on (\S+):(\d+), gossip on (\S+):(\d+)")


@attrs.define
class NodeProcess:
    """A ``python -m keycafe`` child process and what it printed."""

    proc: subprocess.Popen[str]
    host: str
    port: int
    cluster_port: int
    lines: list[str]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


@contextmanager
def node_process(*args: str, timeout: float = 15) -> Iterator[NodeProcess]:
    """Start a node on a free port; stop it (SIGTERM, then SIGKILL) afterwards."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "keycafe", "--port", "0", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    found: queue.Queue[tuple[str, int, int]] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            m = _SERVING.search(line)
            if m:
                found.put((m.group(1), int(m.group(2)), int(m.group(4))))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        try:
            host, port, cluster_port = found.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("node did not start:\n" + "".join(lines)) from None
        node = NodeProcess(proc=proc, host=host, port=port, cluster_port=cluster_port, lines=lines)
        yield node
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture(scope="module")
def node() -> Iterator[NodeProcess]:
    """One real node process shared by a test module."""
    with node_process() as n:
        yield n


@pytest.fixture
async def trio_node(nursery: trio.Nursery) -> AsyncIterator[ServerState]:
    """A node served inside the test's trio run, on a free loopback port."""
    state: ServerState = await nursery.start(serve_node, NodeConfig(port=0))
    return state


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (make test installs Debian's redis-tools)")
    return path


def wait_until(predicate: object, timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll ``predicate()`` until it is true or fail after ``timeout`` seconds."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


# Keep Hypothesis deterministic and quick in CI unless asked otherwise.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
