"""The command line: flags, environment variables and clear start-up errors."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import redis

from keycafe.cluster.frames import MAX_VALUE
from keycafe.errors import ConfigError
from keycafe.node.node import NodeConfig
from keycafe.tools.cli import build_parser, config_from_args
from tests.conftest import node_process, wait_until


def test_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYCAFE_PORT", "9999")
    monkeypatch.setenv("KEYCAFE_REQUIREPASS", "pw")
    args = build_parser().parse_args(["--maxclients", "7"])
    config = config_from_args(args)
    assert (config.port, config.requirepass, config.maxclients) == (9999, "pw", 7)
    args = build_parser().parse_args(["--port", "1234"])
    assert config_from_args(args).port == 1234  # the flag wins


def test_client_io_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config_from_args(build_parser().parse_args([])).client_io == "auto"
    monkeypatch.setenv("KEYCAFE_CLIENT_IO", "portable")
    assert config_from_args(build_parser().parse_args([])).client_io == "portable"
    with pytest.raises(ConfigError, match="client-io must be"):
        NodeConfig(client_io="kqueue").validate()


def test_values_are_bounded_by_what_a_frame_between_nodes_carries() -> None:
    """A value a node accepts must fit a link frame (keycafe.cluster.frames):
    a 9 MB SET once killed the primary that tried to replicate it."""
    config = config_from_args(build_parser().parse_args([]))
    assert config.limits.max_bulk_len == MAX_VALUE
    config.validate()
    args = build_parser().parse_args(["--proto-max-bulk-len", str(MAX_VALUE + 1)])
    with pytest.raises(ConfigError, match="proto-max-bulk-len is at most"):
        config_from_args(args).validate()


def test_bad_settings_exit_with_a_message() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "keycafe", "--node-id", "xyz"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "node id must be 40 lower-case hex characters" in done.stderr


def test_port_in_use_is_reported() -> None:
    with node_process() as first:
        done = subprocess.run(
            [sys.executable, "-m", "keycafe", "--port", str(first.port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 1
        assert "cannot start" in done.stderr
        assert "in use" in done.stderr


def test_requirepass_flag() -> None:
    with node_process("--requirepass", "s3cret") as node:
        anon = redis.Redis(host=node.host, port=node.port)
        with pytest.raises(redis.AuthenticationError):
            anon.get("k")
        anon.close()
        r = redis.Redis(host=node.host, port=node.port, password="s3cret")
        assert r.set("k", "v")
        r.close()


def test_status_prints_the_member_table() -> None:
    with node_process() as node:
        done = subprocess.run(
            [sys.executable, "-m", "keycafe", "status", "-p", str(node.port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0
        assert "1 members (1 alive, 0 suspect, 0 dead)" in done.stdout
        assert "myself,master" in done.stdout
        assert "16384 (100.0%)" in done.stdout  # its share of the slots


def test_status_of_an_unreachable_node_fails_clearly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-m", "keycafe", "status", "-p", str(port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert f"cannot reach 127.0.0.1:{port}" in done.stderr


def test_binding_all_interfaces_without_advertise_warns() -> None:
    with node_process("--bind", "0.0.0.0") as node:
        wait_until(lambda: any("without --advertise" in line for line in node.lines), timeout=5)
