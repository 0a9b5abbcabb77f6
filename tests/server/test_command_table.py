"""COMMAND must describe each command exactly: cluster clients route by it."""

from __future__ import annotations

import hiredis
import pytest

from keycafe.server import COMMANDS, Session
from keycafe.store.keyslot import key_slot
from tests.server.conftest import Run, run_in

ALL = sorted({spec.name for spec in COMMANDS.values()})
REQUIRED = [
    "get",
    "set",
    "del",
    "delete",
    "exists",
    "expire",
    "pexpire",
    "expireat",
    "ttl",
    "pttl",
    "persist",
    "incr",
    "decr",
    "incrby",
    "decrby",
    "append",
    "strlen",
    "getdel",
    "getex",
    "mget",
    "mset",
    "scan",
    "dbsize",
    "flushall",
    "ping",
    "echo",
    "auth",
    "hello",
    "client",
    "select",
    "command",
    "config",
    "info",
    "readonly",
    "readwrite",
    "asking",
    "quit",
    "cluster",
]


def test_every_required_command_is_registered() -> None:
    assert set(REQUIRED) <= set(ALL)


def test_command_lists_every_command_in_the_redis_7_layout(run: Run) -> None:
    reply = run("COMMAND")
    assert isinstance(reply, list)
    assert sorted(entry[0] for entry in reply) == [n.encode() for n in ALL]
    assert run("COMMAND", "COUNT") == len(ALL)
    for entry in reply:
        assert len(entry) == 10
        name, arity, flags, first, last, step = entry[:6]
        spec = COMMANDS[name]
        assert (arity, first, last, step) == (spec.arity, spec.first_key, spec.last_key, spec.step)
        assert isinstance(flags, list)


@pytest.mark.parametrize(
    ("request_", "keys"),
    [
        (["GET", "a"], ["a"]),
        (["SET", "a", "v", "EX", "10"], ["a"]),
        (["MSET", "a", "1", "b", "2"], ["a", "b"]),
        (["MGET", "a", "b", "c"], ["a", "b", "c"]),
        (["DEL", "a", "b"], ["a", "b"]),
        (["EXPIRE", "a", "10", "NX"], ["a"]),
    ],
)
def test_getkeys_agrees_with_routing(run: Run, request_: list[str], keys: list[str]) -> None:
    assert run("COMMAND", "GETKEYS", *request_) == [k.encode() for k in keys]


def test_getkeys_errors(run: Run) -> None:
    for args, message in [
        (("NOPE", "x"), "ERR Invalid command specified"),
        (("GET",), "ERR Invalid number of arguments specified for command"),
        (("PING", "x"), "ERR The command has no key arguments"),
    ]:
        reply = run("COMMAND", "GETKEYS", *args)
        assert isinstance(reply, hiredis.ReplyError)
        assert str(reply) == message


def test_subcommands_are_listed_with_their_own_arity(run: Run) -> None:
    reply = run("COMMAND", "INFO", "cluster")
    assert isinstance(reply, list)
    subs = {s[0]: s[1] for s in reply[0][9]}
    assert subs[b"cluster|slots"] == 2
    assert subs[b"cluster|keyslot"] == 3
    assert run("COMMAND", "INFO", "nosuch") == [None]


def test_keyless_commands_route_by_policy_tips(run: Run) -> None:
    reply = run("COMMAND", "INFO", "dbsize", "flushall")
    assert isinstance(reply, list)
    assert b"request_policy:all_shards" in reply[0][7]
    assert b"response_policy:agg_sum" in reply[0][7]


def test_redis_py_commands_parser_finds_our_keys(session: Session) -> None:
    # redis-py's cluster client computes keys from the COMMAND reply exactly so.
    from redis._parsers.helpers import parse_command

    parsed = parse_command(run_in(session, "COMMAND"))
    mset = parsed["mset"]
    args = ["mset", "k1", "v1", "k2", "v2"]
    last = len(args) + mset["last_key_pos"] if mset["last_key_pos"] < 0 else mset["last_key_pos"]
    keys = args[mset["first_key_pos"] : last + 1 : mset["step_count"]]
    assert keys == ["k1", "k2"]
    assert "movablekeys" not in parsed["get"]["flags"]
    assert key_slot(b"k1") >= 0
