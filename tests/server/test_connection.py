"""Handshake and admin commands: what real clients send on connect."""

from __future__ import annotations

import hiredis

from keycafe.server import Session
from tests.server.conftest import Run, make_session, run_in


def err(value: object) -> str:
    assert isinstance(value, hiredis.ReplyError), value
    return str(value)


def test_ping_echo(run: Run) -> None:
    assert run("PING") == b"PONG"
    assert run("PING", "hi") == b"hi"
    assert err(run("PING", "a", "b")) == "ERR wrong number of arguments for 'ping' command"
    assert run("ECHO", "x y") == b"x y"


def test_hello_switches_protocol(session: Session) -> None:
    reply = run_in(session, "HELLO", "3")
    assert isinstance(reply, dict)
    assert reply[b"proto"] == 3
    assert reply[b"server"] == b"redis"
    assert reply[b"mode"] == b"cluster"
    assert session.proto == 3
    assert session.execute([b"GET", b"missing"]) == b"_\r\n"  # RESP3 null
    assert isinstance(run_in(session, "HELLO", "2"), list)  # a flat map in RESP2
    assert session.execute([b"GET", b"missing"]) == b"$-1\r\n"
    assert err(run_in(session, "HELLO", "4")) == "NOPROTO unsupported protocol version"
    assert err(run_in(session, "HELLO", "x")) == (
        "ERR Protocol version is not an integer or out of range"
    )


def test_auth_when_a_password_is_required() -> None:
    s = make_session(requirepass="sekret")
    assert err(run_in(s, "GET", "k")) == "NOAUTH Authentication required."
    assert run_in(s, "PING") != b"PONG"
    assert err(run_in(s, "AUTH", "wrong")) == (
        "WRONGPASS invalid username-password pair or user is disabled."
    )
    assert err(run_in(s, "AUTH", "bob", "sekret")).startswith("WRONGPASS")
    assert run_in(s, "AUTH", "sekret") == b"OK"
    assert run_in(s, "GET", "k") is None


def test_hello_can_authenticate() -> None:
    s = make_session(requirepass="pw")
    assert err(run_in(s, "HELLO", "3")).startswith("NOAUTH HELLO must be called")
    reply = run_in(s, "HELLO", "3", "AUTH", "default", "pw", "SETNAME", "app")
    assert isinstance(reply, dict)
    assert reply[b"proto"] == 3
    assert s.name == b"app"


def test_auth_without_a_configured_password(run: Run) -> None:
    assert err(run("AUTH", "x")).startswith("ERR AUTH <password> called without any password")
    assert run("AUTH", "default", "anything") == b"OK"  # the nopass default user


def test_client_subcommands(run: Run, session: Session) -> None:
    assert run("CLIENT", "ID") == session.client_id
    assert run("CLIENT", "GETNAME") is None
    assert run("CLIENT", "SETNAME", "worker-1") == b"OK"
    assert run("CLIENT", "GETNAME") == b"worker-1"
    assert err(run("CLIENT", "SETNAME", "has space")) == (
        "ERR Client names cannot contain spaces, newlines or special characters."
    )
    assert run("CLIENT", "SETINFO", "LIB-NAME", "redis-py") == b"OK"
    assert run("CLIENT", "SETINFO", "LIB-VER", "8.1.0") == b"OK"
    assert err(run("CLIENT", "SETINFO", "COLOR", "x")) == "ERR Unrecognized option 'COLOR'"
    info = run("CLIENT", "INFO")
    assert isinstance(info, bytes)
    assert b"name=worker-1" in info
    assert b"lib-name=redis-py" in info
    assert err(run("CLIENT", "NOPE")) == "ERR unknown subcommand 'NOPE'. Try CLIENT HELP."
    assert err(run("CLIENT", "SETNAME")) == (
        "ERR wrong number of arguments for 'client|setname' command"
    )


def test_select_readonly_asking_quit(run: Run, session: Session) -> None:
    assert run("SELECT", "0") == b"OK"
    assert err(run("SELECT", "1")) == "ERR SELECT is not allowed in cluster mode"
    assert run("READONLY") == b"OK"
    assert session.readonly
    assert run("READWRITE") == b"OK"
    assert not session.readonly
    assert run("ASKING") == b"OK"
    assert run("QUIT") == b"OK"
    assert session.closing
    assert session.execute([b"PING"]) == b""  # nothing runs after QUIT


def test_config_get(run: Run) -> None:
    reply = run("CONFIG", "GET", "save")
    assert reply == [b"save", b""]
    reply = run("CONFIG", "GET", "proto-max-*", "port")
    assert isinstance(reply, list)
    got = dict(zip(reply[::2], reply[1::2], strict=True))
    assert got[b"port"] == b"9814"
    assert got[b"proto-max-bulk-len"] == str(512 * 1024 * 1024).encode()
    assert err(run("CONFIG", "SET", "maxmemory", "1")).startswith("ERR Unknown option")


def test_info_sections(run: Run) -> None:
    run("SET", "k", "v")
    text = run("INFO")
    assert isinstance(text, bytes)
    assert b"# Server\r\nredis_version:7.2.0" in text
    assert b"cluster_enabled:1" in text
    assert b"db0:keys=1," in text
    only = run("INFO", "keyspace")
    assert isinstance(only, bytes)
    assert only.startswith(b"# Keyspace")
    assert b"# Server" not in only
