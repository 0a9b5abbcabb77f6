"""Hostile input over real sockets: the node survives, other clients don't notice."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import NodeProcess, node_process, wait_until
from tests.node.helpers import CLIENT_IO


def encode(args: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


valid = st.lists(st.binary(max_size=20), min_size=1, max_size=4).map(encode)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid pipeline, then truncated, corrupted or given absurd headers."""
    data = bytearray(b"".join(draw(st.lists(valid, min_size=1, max_size=4))))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "truncate", "header"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            data[min(pos, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from([b"\r\n", b"*", b"$", b":", b"-1", b"\x00"]))
        elif op == "truncate":
            del data[pos:]
        else:
            data[pos:pos] = draw(
                st.sampled_from(
                    [b"*99999999999\r\n", b"$9999999999\r\n", b"*-5\r\n", b"$-1\r\n", b"*1\r\n"]
                )
            )
    return bytes(data)


hostile = st.one_of(st.binary(max_size=400), mutated())


@pytest.fixture(scope="module", params=CLIENT_IO)
def victim(request: pytest.FixtureRequest) -> Iterator[tuple[NodeProcess, redis.Redis]]:
    with node_process("--client-io", str(request.param)) as node:
        witness = redis.Redis(host=node.host, port=node.port, socket_timeout=10)
        assert witness.set("witness", "alive")
        yield node, witness
        witness.close()


def send_and_close(node: NodeProcess, payload: bytes, chunk: int) -> None:
    with socket.create_connection((node.host, node.port), timeout=10) as s:
        try:
            for i in range(0, len(payload), chunk):
                s.sendall(payload[i : i + chunk])
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass  # drain whatever the node answers until it closes
        except TimeoutError:
            raise  # the node neither answered nor hung up: that is a hang
        except OSError:
            pass  # it hung up after a protocol error, as Redis does (EPIPE, ECONNRESET, ...)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=hostile, chunk=st.integers(1, 64))
def test_hostile_bytes_never_hurt_the_node_or_its_other_clients(
    victim: tuple[NodeProcess, redis.Redis], payload: bytes, chunk: int
) -> None:
    node, witness = victim
    send_and_close(node, payload, chunk)
    assert node.proc.poll() is None, "node died"
    assert witness.get("witness") == b"alive"


def test_after_the_storm_the_node_is_clean(victim: tuple[NodeProcess, redis.Redis]) -> None:
    node, witness = victim
    # Every hostile connection was closed: only the witness is left.
    wait_until(lambda: witness.info("clients")["connected_clients"] == 1, timeout=10)
    log = "".join(node.lines)
    assert "Traceback" not in log
    assert "internal error" not in log


def test_oversized_argument_is_refused_with_a_clear_error() -> None:
    with node_process("--proto-max-bulk-len", "1000") as node:
        with socket.create_connection((node.host, node.port), timeout=10) as s:
            s.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1001\r\n")
            reply = b""
            while chunk := s.recv(1024):
                reply += chunk
        assert reply == b"-ERR Protocol error: invalid bulk length\r\n"
        r = redis.Redis(host=node.host, port=node.port)
        assert r.set("k", "x" * 1000)  # at the limit is fine
        r.close()


def test_inline_limit_is_configurable() -> None:
    with node_process("--proto-inline-max-size", "100") as node:
        with socket.create_connection((node.host, node.port), timeout=10) as s:
            s.sendall(b"SET k " + b"x" * 200)  # no newline: an inline line too long
            reply = b""
            while chunk := s.recv(1024):
                reply += chunk
        assert reply == b"-ERR Protocol error: too big inline request\r\n"
