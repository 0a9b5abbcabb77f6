"""String and keyspace commands: Redis's replies, options and error wording."""

from __future__ import annotations

import hiredis
import pytest

from keycafe.server import COMMANDS, Session
from keycafe.store.keyslot import key_slot
from tests.server.conftest import Run, make_session


def err(value: object) -> str:
    assert isinstance(value, hiredis.ReplyError), value
    return str(value)


def advance(session: Session, ms: int) -> None:
    session.state.now_ms += ms


def test_get_set_del(run: Run) -> None:
    assert run("GET", "k") is None
    assert run("SET", "k", "v") == b"OK"
    assert run("get", "k") == b"v"  # command names are case-insensitive
    assert run("DEL", "k") == 1
    assert run("DEL", "k") == 0
    assert run("DELETE", "k") == 0  # the original client's name for DEL


def test_set_nx_xx_get(run: Run) -> None:
    assert run("SET", "k", "1", "NX") == b"OK"
    assert run("SET", "k", "2", "NX") is None
    assert run("SET", "k", "2", "NX", "GET") == b"1"  # Redis 7: NX with GET
    assert run("SET", "k", "3", "XX", "GET") == b"1"
    assert run("SET", "missing", "3", "XX") is None
    assert run("GET", "k") == b"3"
    assert run("SET", "fresh", "x", "GET") is None
    assert err(run("SET", "k", "v", "NX", "XX")) == "ERR syntax error"
    assert err(run("SET", "k", "v", "BOGUS")) == "ERR syntax error"


def test_set_expiry_options(run: Run, session: Session) -> None:
    now = session.state.now_ms
    assert run("SET", "a", "v", "EX", "10") == b"OK"
    assert run("PTTL", "a") == 10_000
    assert run("SET", "b", "v", "PX", "1500") == b"OK"
    assert run("TTL", "b") == 2  # rounded as Redis does
    assert run("SET", "c", "v", "EXAT", str(now // 1000 + 100)) == b"OK"
    assert 99 <= run("TTL", "c") <= 100
    assert run("SET", "d", "v", "PXAT", str(now + 5000)) == b"OK"
    assert run("PTTL", "d") == 5000
    assert run("SET", "d", "w", "KEEPTTL") == b"OK"
    assert run("PTTL", "d") == 5000
    assert run("SET", "d", "w") == b"OK"
    assert run("TTL", "d") == -1  # plain SET clears the TTL
    assert run("SET", "e", "v", "PXAT", str(now - 1)) == b"OK"  # already past
    assert run("GET", "e") is None
    for bad in ("0", "-1"):
        assert err(run("SET", "k", "v", "EX", bad)) == "ERR invalid expire time in 'set' command"
    assert err(run("SET", "k", "v", "EX", "x")) == "ERR value is not an integer or out of range"
    assert err(run("SET", "k", "v", "EX", "1", "PX", "1")) == "ERR syntax error"
    assert err(run("SET", "k", "v", "EX", "1", "KEEPTTL")) == "ERR syntax error"
    assert err(run("SET", "k", "v", "EX")) == "ERR syntax error"
    big = str(2**63 // 1000 + 1)
    assert err(run("SET", "k", "v", "EX", big)) == "ERR invalid expire time in 'set' command"


def test_keys_expire_in_virtual_time(run: Run, session: Session) -> None:
    run("SET", "s", "v", "EX", "1")
    advance(session, 999)
    assert run("GET", "s") == b"v"
    advance(session, 1)
    assert run("GET", "s") is None
    assert run("TTL", "s") == -2


def test_expire_family_and_flags(run: Run, session: Session) -> None:
    assert run("EXPIRE", "nokey", "10") == 0
    run("SET", "k", "v")
    assert run("TTL", "k") == -1
    assert run("EXPIRE", "k", "100", "XX") == 0  # no TTL yet
    assert run("EXPIRE", "k", "100", "NX") == 1
    assert run("EXPIRE", "k", "50", "NX") == 0
    assert run("EXPIRE", "k", "50", "GT") == 0
    assert run("EXPIRE", "k", "200", "GT") == 1
    assert run("EXPIRE", "k", "10", "LT") == 1
    assert run("TTL", "k") == 10
    assert run("PEXPIRE", "k", "1500") == 1
    assert run("PTTL", "k") == 1500
    now = session.state.now_ms
    assert run("PEXPIREAT", "k", str(now + 3000)) == 1
    assert run("PTTL", "k") == 3000
    assert run("EXPIREAT", "k", str(now // 1000 + 60)) == 1
    assert run("PERSIST", "k") == 1
    assert run("PERSIST", "k") == 0
    assert run("TTL", "k") == -1
    assert run("EXPIRE", "k", "0") == 1  # a time already past deletes
    assert run("GET", "k") is None
    run("SET", "k", "v")
    assert (
        err(run("EXPIRE", "k", "1", "NX", "XX"))
        == "ERR NX and XX, GT or LT options at the same time are not compatible"
    )
    assert (
        err(run("EXPIRE", "k", "1", "GT", "LT"))
        == "ERR GT and LT options at the same time are not compatible"
    )
    assert err(run("EXPIRE", "k", "1", "XY")) == "ERR Unsupported option XY"
    assert err(run("EXPIRE", "k", str(2**62))) == "ERR invalid expire time in 'expire' command"


def test_incr_family(run: Run) -> None:
    assert run("INCR", "n") == 1
    assert run("INCRBY", "n", "10") == 11
    assert run("DECR", "n") == 10
    assert run("DECRBY", "n", "-5") == 15
    assert run("GET", "n") == b"15"
    run("SET", "s", "abc")
    assert err(run("INCR", "s")) == "ERR value is not an integer or out of range"
    run("SET", "lead", "01")
    assert err(run("INCR", "lead")) == "ERR value is not an integer or out of range"
    run("SET", "max", str(2**63 - 1))
    assert err(run("INCR", "max")) == "ERR increment or decrement would overflow"
    assert err(run("DECRBY", "n", str(-(2**63)))) == "ERR decrement would overflow"
    assert err(run("INCRBY", "n", "1.5")) == "ERR value is not an integer or out of range"


def test_incr_keeps_the_ttl(run: Run) -> None:
    run("SET", "n", "1", "EX", "100")
    run("INCR", "n")
    assert run("TTL", "n") == 100


def test_append_strlen_getdel_getex(run: Run) -> None:
    assert run("APPEND", "a", "Hello") == 5
    assert run("APPEND", "a", " World") == 11
    assert run("STRLEN", "a") == 11
    assert run("STRLEN", "none") == 0
    assert run("GETEX", "a", "EX", "100") == b"Hello World"
    assert run("TTL", "a") == 100
    assert run("GETEX", "a", "PERSIST") == b"Hello World"
    assert run("TTL", "a") == -1
    assert run("GETEX", "a") == b"Hello World"
    assert err(run("GETEX", "a", "EX")) == "ERR syntax error"
    assert run("GETDEL", "a") == b"Hello World"
    assert run("GETDEL", "a") is None
    assert run("GETEX", "a") is None


def test_mget_mset_same_slot(run: Run) -> None:
    assert run("MSET", "{u}a", "1", "{u}b", "2") == b"OK"
    assert run("MGET", "{u}a", "{u}b", "{u}c") == [b"1", b"2", None]
    assert err(run("MSET", "{u}a", "1", "{u}b")) == (
        "ERR wrong number of arguments for 'mset' command"
    )
    assert run("EXISTS", "{u}a", "{u}b", "{u}c", "{u}a") == 3
    assert run("DEL", "{u}a", "{u}b", "{u}c") == 2


def test_crossslot(run: Run) -> None:
    assert err(run("MGET", "a", "b")) == "CROSSSLOT Keys in request don't hash to the same slot"
    assert err(run("MSET", "a", "1", "b", "2")) == (
        "CROSSSLOT Keys in request don't hash to the same slot"
    )
    assert err(run("DEL", "a", "b")).startswith("CROSSSLOT")


def test_type_dbsize_flushall(run: Run) -> None:
    run("SET", "a", "1")
    run("SET", "b", "2")
    assert run("TYPE", "a") == b"string"
    assert run("TYPE", "zz") == b"none"
    assert run("DBSIZE") == 2
    assert run("FLUSHALL") == b"OK"
    assert run("DBSIZE") == 0
    assert err(run("FLUSHALL", "NOW")) == "ERR syntax error"


def test_scan_with_match_count_type(run: Run) -> None:
    for i in range(50):
        run("SET", f"user:{i}", "x")
        run("SET", f"item:{i}", "x")
    cursor, seen = b"0", []
    while True:
        reply = run("SCAN", cursor, "MATCH", "user:*", "COUNT", "7")
        assert isinstance(reply, list)
        cursor, keys = reply
        seen += keys
        if cursor == b"0":
            break
    assert sorted(seen) == sorted(f"user:{i}".encode() for i in range(50))
    assert run("SCAN", "0", "TYPE", "hash", "COUNT", "1000") == [b"0", []]
    assert err(run("SCAN", "x")) == "ERR invalid cursor"
    assert err(run("SCAN", "0", "COUNT", "0")) == "ERR syntax error"


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("h?llo", ["hello", "hallo"], ["hllo", "heello"]),
        ("h*llo", ["hllo", "heeeello"], ["hell"]),
        ("h[ae]llo", ["hello", "hallo"], ["hillo"]),
        ("h[^e]llo", ["hallo"], ["hello"]),
        ("h[a-b]llo", ["hallo", "hbllo"], ["hcllo"]),
        ("h\\*llo", ["h*llo"], ["hello"]),
    ],
)
def test_scan_match_follows_redis_globs(
    run: Run, pattern: str, yes: list[str], no: list[str]
) -> None:
    for k in yes + no:
        run("SET", k, "1")
    reply = run("SCAN", "0", "MATCH", pattern, "COUNT", "1000")
    assert isinstance(reply, list)
    assert sorted(reply[1]) == sorted(k.encode() for k in yes)


def test_errors_for_unknown_and_wrong_arity(run: Run) -> None:
    assert err(run("NOPE", "a", "b")) == (
        "ERR unknown command 'NOPE', with args beginning with: 'a' 'b' "
    )
    assert err(run("GET")) == "ERR wrong number of arguments for 'get' command"
    assert err(run("GET", "a", "b")) == "ERR wrong number of arguments for 'get' command"


def test_a_pipelined_batch_matches_one_request_at_a_time(session: Session) -> None:
    """execute_many serves plain GET and SET without their handlers: its replies
    must equal what the handlers say, request by request, TTLs, RESP3, QUIT included."""
    batch = [
        [b"SET", b"k", b"v"],
        [b"get", b"k"],
        [b"SET", b"t", b"w", b"PX", b"5"],
        [b"GET", b"t"],  # has a TTL: goes through the handler
        [b"GET", b"missing"],
        [b"SET", b"k"],  # wrong arity
        [b"HELLO", b"3"],
        [b"GET", b"missing"],  # RESP3 null now
        [b"SET", b"k", b"v2"],
        [b"GET", b"k"],
        [b"QUIT"],
        [b"SET", b"k", b"after-quit"],
    ]
    one_by_one = make_session(now=session.state.now_ms)

    def by_handler(req: list[bytes]) -> bytes:
        spec = COMMANDS[req[0].lower()]
        if spec.name in ("get", "set") and spec.arity_ok(len(req)):
            return spec.handler(one_by_one, req, key_slot(req[1]))
        return one_by_one.execute(req)

    expected = [r for r in map(by_handler, batch) if r][:-1]  # the last one is after QUIT
    got = session.execute_many(batch)
    assert got == expected
    assert len(got) == len(batch) - 1  # nothing after QUIT runs
    assert b"_\r\n" in got
    assert b"$-1\r\n" in got
    later = make_session(now=session.state.now_ms + 10)
    later.state.store = later.store = session.store  # same data, 10 ms on
    assert later.execute_many([[b"GET", b"t"], [b"GET", b"k"]]) == [b"$-1\r\n", b"$2\r\nv2\r\n"]
