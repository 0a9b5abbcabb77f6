"""Connection and handshake commands that real clients send on connect."""

from __future__ import annotations

import hmac
import re
from typing import Final

import keycafe
from keycafe.resp import reply as resp
from keycafe.server.args import SYNTAX, parse_int
from keycafe.server.errors import CommandError
from keycafe.server.registry import COMMANDS, command, container, subcommand
from keycafe.server.session import Session

# The Redis version keycafe's command set and replies follow; clients such as
# redis-py and redis-cli pick features by it.
REDIS_COMPAT_VERSION: Final = "7.2.0"
CONNECTION: Final = ("@connection",)
WRONGPASS: Final = "WRONGPASS invalid username-password pair or user is disabled."
_NAME_OK = re.compile(rb"[!-~]*")  # Redis: printable ASCII, no spaces


@command(
    "ping",
    -1,
    ("fast", "stale"),
    acl=(*CONNECTION, "@fast"),
    tips=("request_policy:all_shards", "response_policy:all_succeeded"),
    group="connection",
    summary="Returns the server's liveliness response.",
)
def ping(s: Session, a: list[bytes], slot: int) -> bytes:
    if len(a) > 2:
        raise CommandError("ERR wrong number of arguments for 'ping' command")
    return resp.PONG if len(a) == 1 else resp.bulk(a[1])


@command(
    "echo",
    2,
    ("fast", "stale"),
    acl=(*CONNECTION, "@fast"),
    group="connection",
    summary="Returns the given string.",
)
def echo(s: Session, a: list[bytes], slot: int) -> bytes:
    return resp.bulk(a[1])


def check_password(s: Session, user: bytes | None, password: bytes) -> None:
    """Authenticate ``s`` as the default user or raise WRONGPASS."""
    required = s.state.config.requirepass
    if user is not None and user != b"default":
        raise CommandError(WRONGPASS)
    if required and not hmac.compare_digest(password, required.encode()):
        raise CommandError(WRONGPASS)
    s.authenticated = True


@command(
    "auth",
    -2,
    ("noscript", "loading", "stale", "fast", "no-auth", "allow-busy"),
    acl=(*CONNECTION, "@fast"),
    group="connection",
    summary="Authenticates the connection.",
)
def auth(s: Session, a: list[bytes], slot: int) -> bytes:
    if len(a) > 3:
        raise CommandError(SYNTAX)
    if len(a) == 2 and not s.state.config.requirepass:
        raise CommandError(
            "ERR AUTH <password> called without any password configured for the "
            "default user. Are you sure your configuration is correct?"
        )
    check_password(s, a[1] if len(a) == 3 else None, a[-1])
    return resp.OK


@command(
    "hello",
    -1,
    ("noscript", "loading", "stale", "fast", "no-auth", "allow-busy"),
    acl=(*CONNECTION, "@fast"),
    group="connection",
    since="6.0.0",
    summary="Handshakes with the server: protocol version, AUTH, SETNAME.",
)
def hello(s: Session, a: list[bytes], slot: int) -> bytes:
    proto = s.proto
    if len(a) >= 2:
        proto = parse_int(a[1], "ERR Protocol version is not an integer or out of range")
        if proto not in (2, 3):
            raise CommandError("NOPROTO unsupported protocol version")
    name: bytes | None = None
    i = 2
    while i < len(a):
        opt = a[i].upper()
        if opt == b"AUTH" and i + 2 < len(a):
            check_password(s, a[i + 1], a[i + 2])
            i += 3
        elif opt == b"SETNAME" and i + 1 < len(a):
            name = a[i + 1]
            i += 2
        else:
            raise CommandError(f"ERR Syntax error in HELLO option '{opt.decode(errors='replace')}'")
    if not s.authenticated:
        raise CommandError(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise "
            "the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the "
            "client and select the RESP protocol version at the same time"
        )
    if name is not None:
        _set_name(s, name)
    s.proto = proto
    return resp.encode(
        {
            "server": "redis",
            "version": REDIS_COMPAT_VERSION,
            "proto": proto,
            "id": s.client_id,
            "mode": "cluster",
            "role": "master",
            "modules": [],
            "keycafe_version": keycafe.__version__,
        },
        proto,
    )


@command(
    "select",
    2,
    ("loading", "stale", "fast"),
    acl=(*CONNECTION, "@fast"),
    group="connection",
    summary="Changes the selected database (only 0 in cluster mode).",
)
def select(s: Session, a: list[bytes], slot: int) -> bytes:
    if parse_int(a[1]) != 0:
        raise CommandError("ERR SELECT is not allowed in cluster mode")
    return resp.OK


@command(
    "quit",
    -1,
    ("noscript", "loading", "stale", "fast", "no-auth", "allow-busy"),
    acl=(*CONNECTION, "@fast"),
    group="connection",
    summary="Closes the connection.",
)
def quit_(s: Session, a: list[bytes], slot: int) -> bytes:
    s.closing = True
    return resp.OK


@command(
    "readonly",
    1,
    ("loading", "stale", "fast"),
    acl=(*CONNECTION, "@fast"),
    group="cluster",
    since="3.0.0",
    summary="Enables read-only queries for a connection to a replica node.",
)
def readonly(s: Session, a: list[bytes], slot: int) -> bytes:
    s.readonly = True
    return resp.OK


@command(
    "readwrite",
    1,
    ("loading", "stale", "fast"),
    acl=(*CONNECTION, "@fast"),
    group="cluster",
    since="3.0.0",
    summary="Enables read-write queries for a connection to a replica node.",
)
def readwrite(s: Session, a: list[bytes], slot: int) -> bytes:
    s.readonly = False
    return resp.OK


@command(
    "wait",
    3,
    ("noscript",),
    acl=("@slow", "@connection"),
    tips=("request_policy:all_shards", "response_policy:agg_min"),
    group="generic",
    since="3.0.0",
    summary="Blocks until the replicas of this connection's writes acknowledge them.",
)
def wait(s: Session, a: list[bytes], slot: int) -> bytes:
    """WAIT numreplicas timeout: how many replicas hold this connection's last
    write. A write here is answered only once every in-sync replica of its
    slot holds it, so that is already true when WAIT runs: it never blocks."""
    parse_int(a[1])  # any number: the reply does not depend on it
    if parse_int(a[2], "ERR timeout is not an integer or out of range") < 0:
        raise CommandError("ERR timeout is negative")
    return resp.integer(replicas_holding(s))


def replicas_holding(s: Session) -> int:
    """Live replicas of the slot of ``s``'s last write; with no write yet, the
    fewest live replicas of any slot this node is primary of (Redis counts
    every connected replica: all hold the nothing written)."""
    table = s.state.routing.table
    me, down = table.my_id, table.down
    if s.wrote >= 0:
        return sum(1 for n in table.owners[s.wrote] if n != me and n not in down)
    counts = [sum(1 for n in o[1:] if n not in down) for o in set(table.owners) if o[:1] == (me,)]
    return min(counts, default=0)


@command(
    "asking",
    1,
    ("fast",),
    acl=(*CONNECTION, "@fast"),
    group="cluster",
    since="3.0.0",
    summary="Signals that a cluster client is following an -ASK redirect.",
)
def asking(s: Session, a: list[bytes], slot: int) -> bytes:
    # Accepted and ignored (docs/protocol.md). In Redis, ASKING lets the next
    # command be served by the node importing a slot, after an -ASK from its
    # old owner. keycafe never sends -ASK: a node that has received a slot
    # answers -TRYAGAIN for it until it routes by the ring that gives it the
    # slot, because until then the old owner still accepts writes and only
    # forwards them later. Serving the slot on ASKING would expose that copy.
    return resp.OK


# -- CLIENT --------------------------------------------------------------------

container(
    "client",
    group="connection",
    summary="A container for client connection commands.",
    since="2.4.0",
)
_CLIENT_FLAGS: Final = ("noscript", "loading", "stale")


def client_line(c: Session, now_ms: int) -> str:
    """One line of CLIENT LIST / CLIENT INFO, in Redis's field order."""
    age = (now_ms - c.created_ms) // 1000
    name, lib_name, lib_ver = (x.decode(errors="replace") for x in (c.name, c.lib_name, c.lib_ver))
    flags = "r" if c.readonly else "N"
    return (
        f"id={c.client_id} addr={c.addr} laddr={c.laddr} fd=-1 name={name} age={age} "
        f"idle=0 flags={flags} db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 "
        f"argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r "
        f"cmd= user=default redir=-1 resp={c.proto} lib-name={lib_name} lib-ver={lib_ver}"
    )


def _set_name(s: Session, name: bytes) -> None:
    if not _NAME_OK.fullmatch(name):
        raise CommandError(
            "ERR Client names cannot contain spaces, newlines or special characters."
        )
    s.name = name


@subcommand(
    "client",
    "id",
    2,
    _CLIENT_FLAGS,
    acl=(*CONNECTION, "@slow"),
    summary="Returns the unique client ID of the connection.",
    since="5.0.0",
)
def client_id(s: Session, a: list[bytes], slot: int) -> bytes:
    return b":%d\r\n" % s.client_id


@subcommand(
    "client",
    "setname",
    3,
    _CLIENT_FLAGS,
    acl=(*CONNECTION, "@slow"),
    summary="Sets the connection name.",
    since="2.6.9",
)
def client_setname(s: Session, a: list[bytes], slot: int) -> bytes:
    _set_name(s, a[2])
    return resp.OK


@subcommand(
    "client",
    "getname",
    2,
    _CLIENT_FLAGS,
    acl=(*CONNECTION, "@slow"),
    summary="Returns the name of the connection.",
    since="2.6.9",
)
def client_getname(s: Session, a: list[bytes], slot: int) -> bytes:
    return resp.bulk(s.name) if s.name else resp.null(s.proto)


@subcommand(
    "client",
    "setinfo",
    4,
    _CLIENT_FLAGS,
    acl=(*CONNECTION, "@slow"),
    summary="Sets information specific to the client or connection.",
    since="7.2.0",
)
def client_setinfo(s: Session, a: list[bytes], slot: int) -> bytes:
    attr = a[2].upper()
    if not _NAME_OK.fullmatch(a[3]):
        raise CommandError(
            f"ERR {attr.decode(errors='replace')} cannot contain spaces, newlines or special "
            "characters."
        )
    if attr == b"LIB-NAME":
        s.lib_name = a[3]
    elif attr == b"LIB-VER":
        s.lib_ver = a[3]
    else:
        raise CommandError(f"ERR Unrecognized option '{a[2].decode(errors='replace')}'")
    return resp.OK


@subcommand(
    "client",
    "info",
    2,
    _CLIENT_FLAGS,
    acl=(*CONNECTION, "@slow"),
    summary="Returns information about the connection.",
    since="6.2.0",
)
def client_info(s: Session, a: list[bytes], slot: int) -> bytes:
    return resp.encode(resp.Verbatim(client_line(s, s.state.now_ms) + "\n"), s.proto)


@subcommand(
    "client",
    "list",
    -2,
    _CLIENT_FLAGS,
    acl=("@admin", "@slow", "@dangerous", *CONNECTION),
    summary="Lists open connections.",
    since="2.4.0",
)
def client_list(s: Session, a: list[bytes], slot: int) -> bytes:
    now = s.state.now_ms
    text = "".join(client_line(c, now) + "\n" for c in s.state.clients.values())
    return resp.encode(resp.Verbatim(text), s.proto)


@subcommand(
    "client",
    "no-evict",
    3,
    _CLIENT_FLAGS,
    acl=("@admin", "@slow", *CONNECTION),
    summary="Sets the client eviction mode of the connection (accepted, no effect).",
    since="7.0.0",
)
def client_no_evict(s: Session, a: list[bytes], slot: int) -> bytes:
    if a[2].upper() not in (b"ON", b"OFF"):
        raise CommandError(SYNTAX)
    return resp.OK


@subcommand(
    "client",
    "help",
    2,
    ("loading", "stale"),
    acl=(*CONNECTION, "@slow"),
    summary="Returns helpful text about the different subcommands.",
    since="5.0.0",
)
def client_help(s: Session, a: list[bytes], slot: int) -> bytes:
    return help_reply(s, "client")


def help_reply(s: Session, parent: str) -> bytes:
    """``<PARENT> HELP``: the subcommands and what each does."""
    spec = COMMANDS[parent.encode()]
    lines = [f"{parent.upper()} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"]
    for name, sub in sorted(spec.subcommands.items()):
        lines += [name.decode().upper(), f"    {sub.summary}"]
    return resp.encode([resp.Simple(line) for line in lines], s.proto)
