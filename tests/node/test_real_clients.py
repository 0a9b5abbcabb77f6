"""Clients nobody on this project wrote, against a real node process."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio
from redis.cluster import RedisCluster

from tests.conftest import NodeProcess, node_process, require_tool, wait_until
from tests.node.helpers import CLIENT_IO


@pytest.fixture(scope="module", params=CLIENT_IO)
def client_io(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def node(client_io: str) -> Iterator[NodeProcess]:
    """One node process per way of watching clients, shared by the module."""
    with node_process("--client-io", client_io) as n:
        yield n


def cli(node: NodeProcess, *args: str, stdin: str | None = None) -> str:
    exe = require_tool("redis-cli")
    done = subprocess.run(
        [exe, "-h", node.host, "-p", str(node.port), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.strip()


def test_redis_cli_basic_session(node: NodeProcess) -> None:
    assert cli(node, "set", "k", "v") == "OK"
    assert cli(node, "get", "k") == "v"
    assert cli(node, "del", "k") == "1"
    assert cli(node, "get", "k") == ""
    assert cli(node, "set", "s", "v", "EX", "1") == "OK"
    r = redis.Redis(host=node.host, port=node.port)
    wait_until(lambda: r.get("s") is None, timeout=5)
    assert cli(node, "get", "s") == ""
    r.close()


def test_redis_cli_cluster_mode_and_inline_pipe(node: NodeProcess) -> None:
    assert cli(node, "-c", "set", "{x}a", "1") == "OK"
    assert cli(node, "-c", "--no-raw", "mget", "{x}a", "{x}b") == '1) "1"\n2) (nil)'
    assert cli(node, "cluster", "keyslot", "123456789") == "12739"
    out = cli(node, stdin="PING\nSET piped yes\nGET piped\n")
    assert out.split("\n") == ["PONG", "OK", "yes"]


def test_redis_py_sync_client(node: NodeProcess) -> None:
    for protocol in (2, 3):
        r = redis.Redis(host=node.host, port=node.port, protocol=protocol, decode_responses=True)
        assert r.ping()
        assert r.set("py", "1", ex=100)
        assert r.get("py") == "1"
        assert r.ttl("py") == 100
        assert r.incr("py") == 2
        assert r.mset({"{t}a": "1", "{t}b": "2"})
        assert r.mget("{t}a", "{t}b", "{t}c") == ["1", "2", None]
        assert r.delete("py") == 1
        with pytest.raises(redis.ResponseError, match="hash to the same slot"):
            r.mget("a", "b")
        r.close()


def test_redis_py_cluster_client(node: NodeProcess) -> None:
    rc = RedisCluster(host=node.host, port=node.port, decode_responses=True)
    try:
        assert rc.set("cluster:key", "v")
        assert rc.get("cluster:key") == "v"
        assert rc.mset_nonatomic({"{user:1}name": "ada", "{user:1}lang": "en"}) is not None
        assert rc.mget("{user:1}name", "{user:1}lang") == ["ada", "en"]
        assert rc.mget_nonatomic("cluster:key", "{user:1}name") == ["v", "ada"]
        assert rc.exists("cluster:key") == 1
        assert rc.expire("cluster:key", 30)
        assert rc.ttl("cluster:key") == 30
        assert rc.dbsize() >= 3
        keys = set(rc.scan_iter(match="{user:1}*"))
        assert keys == {"{user:1}name", "{user:1}lang"}
        node_ids = {n.name for n in rc.get_nodes()}
        assert node_ids == {f"{node.host}:{node.port}"}
    finally:
        rc.close()


def test_redis_py_asyncio_clients(node: NodeProcess) -> None:
    async def main() -> None:
        r = redis.asyncio.Redis(host=node.host, port=node.port, decode_responses=True)
        assert await r.set("aio", "x")
        assert await r.get("aio") == "x"
        await r.aclose()
        rc = redis.asyncio.RedisCluster(host=node.host, port=node.port, decode_responses=True)
        try:
            assert await rc.set("{aio}1", "a")
            assert await rc.mget("{aio}1", "{aio}2") == ["a", None]
            results = await asyncio.gather(*(rc.incr("aio:counter") for _ in range(50)))
            assert sorted(results) == list(range(1, 51))
        finally:
            await rc.aclose()

    asyncio.run(main())


def test_redis_benchmark_sees_no_errors(node: NodeProcess, client_io: str) -> None:
    exe = require_tool("redis-benchmark")
    tests = "ping_inline,ping_mbulk,set,get,incr,mset"
    # The full run on the fast path; a fifth of it is enough to load the
    # portable one with redis-benchmark's 50 clients.
    requests = "100000" if client_io == "epoll" else "20000"
    r = redis.Redis(host=node.host, port=node.port)
    errors_before = int(r.info("stats")["total_error_replies"])
    done = subprocess.run(
        # The acceptance run of issue 2, as a user would type it.
        [exe, "-h", node.host, "-p", str(node.port), "-t", tests, "-n", requests, "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = done.stdout.replace("\r", "\n")
    assert "ERR" not in lines
    assert "Error" not in lines
    for name in ("PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "MSET"):
        assert f"{name}" in lines
    assert int(r.info("stats")["total_error_replies"]) == errors_before
    r.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_shut_down_cleanly(sig: signal.Signals) -> None:
    with node_process() as n:
        r = redis.Redis(host=n.host, port=n.port)
        assert r.ping()
        r.close()
        assert n.stop(sig) == 0
        wait_until(lambda: any("bye" in line for line in n.lines), timeout=5)
        assert any(f"received {sig.name}" in line for line in n.lines)


def test_redis_py_cluster_client_over_resp3(node: NodeProcess) -> None:
    rc = RedisCluster(host=node.host, port=node.port, protocol=3, decode_responses=True)
    try:
        assert rc.set("{r3}a", "1", px=50_000)
        assert rc.mget("{r3}a", "{r3}b") == ["1", None]
        assert 0 < rc.pttl("{r3}a") <= 50_000
        assert rc.cluster_keyslot("123456789") == 12739
        shards = rc.execute_command("CLUSTER SHARDS")
        assert shards
    finally:
        rc.close()

    async def main() -> None:
        arc = redis.asyncio.RedisCluster(host=node.host, port=node.port, protocol=3)
        try:
            assert await arc.set("{r3}c", "3")
            assert await arc.get("{r3}c") == b"3"
        finally:
            await arc.aclose()

    asyncio.run(main())
