"""String commands: GET, SET and friends, with Redis's reply shapes and errors."""

from __future__ import annotations

from typing import Final

from keycafe.resp import reply as resp
from keycafe.server.args import (
    INT64_MAX,
    INT64_MIN,
    SYNTAX,
    expiry_from_option,
    parse_int,
)
from keycafe.server.errors import CommandError
from keycafe.server.registry import command
from keycafe.server.session import Session
from keycafe.store import entry
from keycafe.store.entry import HEADER_SIZE, NO_EXPIRY

OK: Final = resp.OK
STRING: Final = ("@string",)


@command(
    "get",
    2,
    ("readonly", "fast", "RO"),
    keys=(1, 1, 1),
    acl=("@read", *STRING, "@fast"),
    group="string",
    summary="Returns the string value of a key.",
)
def get(s: Session, a: list[bytes], slot: int) -> bytes:
    record = s.store.slots[slot].get(a[1])
    if record is not None and not record.startswith(NO_EXPIRY):
        record = s.store.lookup(slot, a[1], s.state.now_ms)  # expires it if due
    if record is None:
        return resp.NULL3 if s.proto == 3 else resp.NULL2
    return record[HEADER_SIZE:]


@command(
    "set",
    -3,
    ("write", "denyoom", "RW"),
    keys=(1, 1, 1),
    acl=("@write", *STRING, "@slow"),
    group="string",
    summary="Sets the string value of a key, ignoring its type.",
)
def set_(s: Session, a: list[bytes], slot: int) -> bytes:
    store = s.store
    now = s.state.now_ms
    if len(a) == 3:  # the common case, no options
        store.put(slot, a[1], a[2], 0, now)
        return OK
    nx = xx = get_old = keepttl = False
    expires = 0
    i = 3
    while i < len(a):
        opt = a[i].upper()
        if opt == b"NX" and not xx:
            nx = True
        elif opt == b"XX" and not nx:
            xx = True
        elif opt == b"GET":
            get_old = True
        elif opt == b"KEEPTTL" and not expires:
            keepttl = True
        elif opt in (b"EX", b"PX", b"EXAT", b"PXAT") and not expires and not keepttl:
            if i + 1 >= len(a):
                raise CommandError(SYNTAX)
            i += 1
            expires = expiry_from_option(opt, a[i], now, "set")
        else:
            raise CommandError(SYNTAX)
        i += 1
    old = store.lookup(slot, a[1], now)
    if (nx and old is not None) or (xx and old is None):
        if get_old and old is not None:
            return old[entry.HEADER_SIZE :]
        return resp.null(s.proto)
    if keepttl and old is not None:
        expires = entry.expires_of(old)
    if expires and expires <= now:
        # An absolute time already past: Redis sets and at once expires the key.
        store.remove(slot, a[1], now)
    else:
        store.put(slot, a[1], a[2], expires, now)
    if get_old:
        return resp.null(s.proto) if old is None else old[entry.HEADER_SIZE :]
    return OK


@command(
    "getdel",
    2,
    ("write", "fast", "RW"),
    keys=(1, 1, 1),
    acl=("@write", *STRING, "@fast"),
    group="string",
    summary="Returns the string value of a key after deleting the key.",
    since="6.2.0",
)
def getdel(s: Session, a: list[bytes], slot: int) -> bytes:
    store = s.state.store
    record = store.lookup(slot, a[1], s.state.now_ms)
    if record is None:
        return resp.null(s.proto)
    store.remove(slot, a[1], s.state.now_ms)
    return record[entry.HEADER_SIZE :]


@command(
    "getex",
    -2,
    ("write", "fast", "RW"),
    keys=(1, 1, 1),
    acl=("@write", *STRING, "@fast"),
    group="string",
    summary="Returns the string value of a key after setting its expiration time.",
    since="6.2.0",
)
def getex(s: Session, a: list[bytes], slot: int) -> bytes:
    now = s.state.now_ms
    expires = -1  # -1: leave the TTL alone
    if len(a) > 2:
        opt = a[2].upper()
        if opt == b"PERSIST" and len(a) == 3:
            expires = 0
        elif opt in (b"EX", b"PX", b"EXAT", b"PXAT") and len(a) == 4:
            expires = expiry_from_option(opt, a[3], now, "getex")
        else:
            raise CommandError(SYNTAX)
    store = s.state.store
    record = store.lookup(slot, a[1], now)
    if record is None:
        return resp.null(s.proto)
    if expires > 0 and expires <= now:
        store.remove(slot, a[1], now)
    elif expires > 0 or (expires == 0 and entry.expires_of(record)):
        store.set_expiry(slot, a[1], record, expires, now)
    return record[entry.HEADER_SIZE :]


@command(
    "mget",
    -2,
    ("readonly", "fast", "RO"),
    keys=(1, -1, 1),
    acl=("@read", *STRING, "@fast"),
    tips=("request_policy:multi_shard",),
    group="string",
    summary="Atomically returns the string values of one or more keys.",
)
def mget(s: Session, a: list[bytes], slot: int) -> bytes:
    lookup = s.state.store.lookup
    now = s.state.now_ms
    nil = resp.null(s.proto)
    out = [b"*%d\r\n" % (len(a) - 1)]
    for key in a[1:]:
        record = lookup(slot, key, now)
        out.append(nil if record is None else record[entry.HEADER_SIZE :])
    return b"".join(out)


@command(
    "mset",
    -3,
    ("write", "denyoom", "OW"),
    keys=(1, -1, 2),
    acl=("@write", *STRING, "@slow"),
    tips=("request_policy:multi_shard", "response_policy:all_succeeded"),
    group="string",
    summary="Atomically creates or modifies the string values of one or more keys.",
)
def mset(s: Session, a: list[bytes], slot: int) -> bytes:
    if len(a) % 2 == 0:
        raise CommandError("ERR wrong number of arguments for 'mset' command")
    put = s.state.store.put
    now = s.state.now_ms
    for i in range(1, len(a), 2):
        put(slot, a[i], a[i + 1], 0, now)
    return OK


def _incr(s: Session, key: bytes, slot: int, delta: int) -> bytes:
    store = s.state.store
    now = s.state.now_ms
    record = store.lookup(slot, key, now)
    if record is None:
        value, expires = 0, 0
    else:
        value = parse_int(entry.value_of(record))
        expires = entry.expires_of(record)  # INCR keeps the TTL, as in Redis
    new = value + delta
    if not INT64_MIN <= new <= INT64_MAX:
        raise CommandError("ERR increment or decrement would overflow")
    store.put(slot, key, b"%d" % new, expires, now)
    return b":%d\r\n" % new


_INCR_FLAGS: Final = ("write", "denyoom", "fast", "RW")
_INCR_ACL: Final = ("@write", *STRING, "@fast")


@command(
    "incr",
    2,
    _INCR_FLAGS,
    keys=(1, 1, 1),
    acl=_INCR_ACL,
    group="string",
    summary="Increments the integer value of a key by one.",
)
def incr(s: Session, a: list[bytes], slot: int) -> bytes:
    return _incr(s, a[1], slot, 1)


@command(
    "decr",
    2,
    _INCR_FLAGS,
    keys=(1, 1, 1),
    acl=_INCR_ACL,
    group="string",
    summary="Decrements the integer value of a key by one.",
)
def decr(s: Session, a: list[bytes], slot: int) -> bytes:
    return _incr(s, a[1], slot, -1)


@command(
    "incrby",
    3,
    _INCR_FLAGS,
    keys=(1, 1, 1),
    acl=_INCR_ACL,
    group="string",
    summary="Increments the integer value of a key by a number.",
)
def incrby(s: Session, a: list[bytes], slot: int) -> bytes:
    return _incr(s, a[1], slot, parse_int(a[2]))


@command(
    "decrby",
    3,
    _INCR_FLAGS,
    keys=(1, 1, 1),
    acl=_INCR_ACL,
    group="string",
    summary="Decrements a number from the integer value of a key.",
)
def decrby(s: Session, a: list[bytes], slot: int) -> bytes:
    delta = parse_int(a[2])
    if delta == INT64_MIN:
        raise CommandError("ERR decrement would overflow")
    return _incr(s, a[1], slot, -delta)


@command(
    "append",
    3,
    ("write", "denyoom", "RW"),
    keys=(1, 1, 1),
    acl=("@write", *STRING, "@fast"),
    group="string",
    summary="Appends a string to the value of a key. Creates the key if it doesn't exist.",
    since="2.0.0",
)
def append(s: Session, a: list[bytes], slot: int) -> bytes:
    store = s.state.store
    now = s.state.now_ms
    record = store.lookup(slot, a[1], now)
    if record is None:
        value, expires = a[2], 0
    else:
        value, expires = entry.value_of(record) + a[2], entry.expires_of(record)
        if len(value) > s.state.config.limits.max_bulk_len:
            raise CommandError("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
    store.put(slot, a[1], value, expires, now)
    return b":%d\r\n" % len(value)


@command(
    "strlen",
    2,
    ("readonly", "fast", "RO"),
    keys=(1, 1, 1),
    acl=("@read", *STRING, "@fast"),
    group="string",
    summary="Returns the length of a string value.",
    since="2.2.0",
)
def strlen(s: Session, a: list[bytes], slot: int) -> bytes:
    record = s.state.store.lookup(slot, a[1], s.state.now_ms)
    return b":%d\r\n" % (0 if record is None else entry.value_len(record))
