"""Keyspace commands: DEL, EXISTS, the TTL family, SCAN, DBSIZE, FLUSHALL."""

from __future__ import annotations

from typing import Final

from keycafe.resp import reply as resp
from keycafe.server.args import INT64_MAX, SYNTAX, glob_matcher, parse_int
from keycafe.server.errors import CommandError
from keycafe.server.registry import command
from keycafe.server.session import Session
from keycafe.store import entry

KEYSPACE: Final = ("@keyspace",)


def _delete(s: Session, a: list[bytes], slot: int) -> bytes:
    remove = s.state.store.remove
    now = s.state.now_ms
    return b":%d\r\n" % sum(remove(slot, key, now) for key in a[1:])


_DEL_TIPS: Final = ("request_policy:multi_shard", "response_policy:agg_sum")
command(
    "del",
    -2,
    ("write", "RM"),
    keys=(1, -1, 1),
    acl=(*KEYSPACE, "@write", "@slow"),
    tips=_DEL_TIPS,
    summary="Deletes one or more keys.",
)(_delete)
# DELETE is the original keycafe client's name for DEL.
command(
    "delete",
    -2,
    ("write", "RM"),
    keys=(1, -1, 1),
    acl=(*KEYSPACE, "@write", "@slow"),
    tips=_DEL_TIPS,
    summary="Deletes one or more keys (keycafe's alias of DEL).",
)(_delete)


@command(
    "exists",
    -2,
    ("readonly", "fast", "RO"),
    keys=(1, -1, 1),
    acl=(*KEYSPACE, "@read", "@fast"),
    tips=_DEL_TIPS,
    summary="Determines whether one or more keys exist.",
)
def exists(s: Session, a: list[bytes], slot: int) -> bytes:
    lookup = s.state.store.lookup
    now = s.state.now_ms
    return b":%d\r\n" % sum(lookup(slot, key, now) is not None for key in a[1:])


@command(
    "type",
    2,
    ("readonly", "fast", "RO"),
    keys=(1, 1, 1),
    acl=(*KEYSPACE, "@read", "@fast"),
    summary="Determines the type of value stored at a key.",
)
def type_(s: Session, a: list[bytes], slot: int) -> bytes:
    record = s.state.store.lookup(slot, a[1], s.state.now_ms)
    return b"+none\r\n" if record is None else b"+string\r\n"


def _expire(s: Session, a: list[bytes], slot: int, *, unit_ms: int, absolute: bool) -> bytes:
    """EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT with Redis 7's NX/XX/GT/LT."""
    name = a[0].decode(errors="replace").lower()
    now = s.state.now_ms
    when = parse_int(a[2])
    nx = xx = gt = lt = False
    for opt in a[3:]:
        o = opt.upper()
        if o == b"NX":
            nx = True
        elif o == b"XX":
            xx = True
        elif o == b"GT":
            gt = True
        elif o == b"LT":
            lt = True
        else:
            raise CommandError(f"ERR Unsupported option {opt.decode(errors='replace')}")
    if nx and (xx or gt or lt):
        raise CommandError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if gt and lt:
        raise CommandError("ERR GT and LT options at the same time are not compatible")
    if abs(when) > INT64_MAX // unit_ms:
        raise CommandError(f"ERR invalid expire time in '{name}' command")
    when *= unit_ms
    if not absolute:
        when += now
        if when > INT64_MAX:
            raise CommandError(f"ERR invalid expire time in '{name}' command")
    store = s.state.store
    record = store.lookup(slot, a[1], now)
    if record is None:
        return resp.ZERO
    current = entry.expires_of(record)  # 0: none, i.e. infinite
    if (
        (nx and current)
        or (xx and not current)
        or (gt and (not current or when <= current))
        or (lt and current and when >= current)
    ):
        return resp.ZERO
    if when <= now:
        store.remove(slot, a[1], now)
    else:
        store.set_expiry(slot, a[1], record, when, now)
    return resp.ONE


_EXPIRE_FLAGS: Final = ("write", "fast", "RW")
_EXPIRE_ACL: Final = (*KEYSPACE, "@write", "@fast")


@command(
    "expire",
    -3,
    _EXPIRE_FLAGS,
    keys=(1, 1, 1),
    acl=_EXPIRE_ACL,
    summary="Sets the expiration time of a key in seconds.",
)
def expire(s: Session, a: list[bytes], slot: int) -> bytes:
    return _expire(s, a, slot, unit_ms=1000, absolute=False)


@command(
    "pexpire",
    -3,
    _EXPIRE_FLAGS,
    keys=(1, 1, 1),
    acl=_EXPIRE_ACL,
    summary="Sets the expiration time of a key in milliseconds.",
    since="2.6.0",
)
def pexpire(s: Session, a: list[bytes], slot: int) -> bytes:
    return _expire(s, a, slot, unit_ms=1, absolute=False)


@command(
    "expireat",
    -3,
    _EXPIRE_FLAGS,
    keys=(1, 1, 1),
    acl=_EXPIRE_ACL,
    summary="Sets the expiration time of a key to a Unix timestamp.",
    since="1.2.0",
)
def expireat(s: Session, a: list[bytes], slot: int) -> bytes:
    return _expire(s, a, slot, unit_ms=1000, absolute=True)


@command(
    "pexpireat",
    -3,
    _EXPIRE_FLAGS,
    keys=(1, 1, 1),
    acl=_EXPIRE_ACL,
    summary="Sets the expiration time of a key to a Unix milliseconds timestamp.",
    since="2.6.0",
)
def pexpireat(s: Session, a: list[bytes], slot: int) -> bytes:
    return _expire(s, a, slot, unit_ms=1, absolute=True)


def _ttl(s: Session, a: list[bytes], slot: int, *, seconds: bool) -> bytes:
    now = s.state.now_ms
    record = s.state.store.lookup(slot, a[1], now)
    if record is None:
        return b":-2\r\n"
    expires = entry.expires_of(record)
    if not expires:
        return b":-1\r\n"
    left = max(expires - now, 0)
    return b":%d\r\n" % ((left + 500) // 1000 if seconds else left)


_TTL_FLAGS: Final = ("readonly", "fast", "RO")
_TTL_ACL: Final = (*KEYSPACE, "@read", "@fast")


@command(
    "ttl",
    2,
    _TTL_FLAGS,
    keys=(1, 1, 1),
    acl=_TTL_ACL,
    summary="Returns the expiration time in seconds of a key.",
)
def ttl(s: Session, a: list[bytes], slot: int) -> bytes:
    return _ttl(s, a, slot, seconds=True)


@command(
    "pttl",
    2,
    _TTL_FLAGS,
    keys=(1, 1, 1),
    acl=_TTL_ACL,
    summary="Returns the expiration time in milliseconds of a key.",
    since="2.6.0",
)
def pttl(s: Session, a: list[bytes], slot: int) -> bytes:
    return _ttl(s, a, slot, seconds=False)


@command(
    "persist",
    2,
    _EXPIRE_FLAGS,
    keys=(1, 1, 1),
    acl=_EXPIRE_ACL,
    summary="Removes the expiration time of a key.",
    since="2.2.0",
)
def persist(s: Session, a: list[bytes], slot: int) -> bytes:
    now = s.state.now_ms
    store = s.state.store
    record = store.lookup(slot, a[1], now)
    if record is None or not entry.expires_of(record):
        return resp.ZERO
    store.set_expiry(slot, a[1], record, 0, now)
    return resp.ONE


@command(
    "scan",
    -2,
    ("readonly",),
    acl=(*KEYSPACE, "@read", "@slow"),
    tips=("nondeterministic_output", "request_policy:special", "response_policy:special"),
    summary="Iterates over the key names in this node's part of the keyspace.",
    since="2.8.0",
)
def scan(s: Session, a: list[bytes], slot: int) -> bytes:
    cursor = parse_int(a[1], "ERR invalid cursor") if a[1] != b"0" else 0
    if cursor < 0:
        raise CommandError("ERR invalid cursor")
    count = 10  # Redis's default COUNT
    match: bytes | None = None
    kind: bytes | None = None
    i = 2
    while i < len(a):
        if i + 1 >= len(a):
            raise CommandError(SYNTAX)
        opt = a[i].upper()
        if opt == b"COUNT":
            count = parse_int(a[i + 1])
            if count < 1:
                raise CommandError(SYNTAX)
        elif opt == b"MATCH":
            match = a[i + 1]
        elif opt == b"TYPE":
            kind = a[i + 1].lower()
        else:
            raise CommandError(SYNTAX)
        i += 2
    # The slots this node is primary of: it holds replicas' copies too, and
    # a client scanning every primary must see each key once.
    mine = s.state.routing.table.mine
    cursor, keys = s.state.store.scan(cursor, count, s.state.now_ms, only=mine)
    if match is not None and match != b"*":
        fullmatch = glob_matcher(match).fullmatch
        keys = [k for k in keys if fullmatch(k)]
    if kind is not None and kind != b"string":
        keys = []
    return resp.encode([str(cursor).encode(), keys], s.proto)


@command(
    "dbsize",
    1,
    ("readonly", "fast"),
    acl=(*KEYSPACE, "@read", "@fast"),
    tips=("request_policy:all_shards", "response_policy:agg_sum"),
    summary="Returns the number of keys in the slots this node is primary of.",
)
def dbsize(s: Session, a: list[bytes], slot: int) -> bytes:
    # Copies held as a replica are not counted: summed over the primaries
    # (redis-py's dbsize()), each key counts once.
    return b":%d\r\n" % s.state.store.count(only=s.state.routing.table.mine)


def _flush(s: Session, a: list[bytes], slot: int) -> bytes:
    if len(a) > 2 or (len(a) == 2 and a[1].upper() not in (b"ASYNC", b"SYNC")):
        raise CommandError(SYNTAX)
    # The slots this node leads only: its replica copies belong to other
    # primaries (Redis Cluster's FLUSHALL empties a master and its replicas).
    mine = s.state.routing.table.mine
    s.state.store.flush_slots((i for i, m in enumerate(mine) if m), s.state.now_ms)
    return resp.OK


_FLUSH_TIPS: Final = ("request_policy:all_shards", "response_policy:all_succeeded")
command(
    "flushall",
    -1,
    ("write",),
    acl=(*KEYSPACE, "@write", "@slow", "@dangerous"),
    tips=_FLUSH_TIPS,
    summary="Removes all keys of the slots this node is primary of, and their copies.",
)(_flush)
command(
    "flushdb",
    -1,
    ("write",),
    acl=(*KEYSPACE, "@write", "@slow", "@dangerous"),
    tips=_FLUSH_TIPS,
    summary="Removes all keys of the slots this node is primary of (one database).",
)(_flush)
