"""The command table: every command's handler and the metadata ``COMMAND`` reports.

Real cluster clients (redis-py's ``RedisCluster``) find a command's keys from the
``COMMAND`` reply (first key, last key, step, ``movablekeys``), and route keyless
ones by its request/response-policy tips, so this metadata is not decoration: it
must say exactly what the handler does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

import attrs

from keycafe.resp.reply import RespSet, Value
from keycafe.server.errors import CommandError

if TYPE_CHECKING:
    from keycafe.server.session import Session

Handler: TypeAlias = "Callable[[Session, list[bytes], int], bytes]"


@attrs.frozen(kw_only=True)
class CommandSpec:
    name: str  # lower case; "cluster|slots" for a subcommand
    handler: Handler
    arity: int  # as Redis: N = exactly N words, -N = at least N
    flags: tuple[str, ...]
    first_key: int = 0
    last_key: int = 0
    step: int = 0
    acl: tuple[str, ...] = ()
    tips: tuple[str, ...] = ()
    group: str = "generic"
    summary: str = ""
    since: str = "1.0.0"
    subcommands: dict[bytes, CommandSpec] = attrs.field(factory=dict, eq=False)
    # Derived once, read on every request: plain fields, not properties.
    single_key: bool = attrs.field(init=False)
    # A read (served by a replica to a READONLY client) and a write (WAIT
    # counts the replicas of the connection's last one).
    reads: bool = attrs.field(init=False)
    writes: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "single_key", 0 < self.first_key == self.last_key)
        object.__setattr__(self, "reads", "readonly" in self.flags)
        object.__setattr__(self, "writes", "write" in self.flags)

    @property
    def keyed(self) -> bool:
        return self.first_key > 0

    @property
    def no_auth(self) -> bool:
        return "no-auth" in self.flags

    def arity_ok(self, n: int) -> bool:
        return n == self.arity if self.arity > 0 else n >= -self.arity

    def info(self) -> list[Value]:
        """This command's entry in the ``COMMAND`` reply (Redis 7 layout)."""
        key_specs: list[Value] = []
        if self.keyed:
            last = self.last_key - self.first_key if self.last_key >= 0 else self.last_key
            key_specs.append(
                {
                    "flags": [f for f in self.flags if f in ("RW", "RO", "OW", "RM")] or ["RW"],
                    "begin_search": {"type": "index", "spec": {"index": self.first_key}},
                    "find_keys": {
                        "type": "range",
                        "spec": {"lastkey": last, "keystep": self.step, "limit": 0},
                    },
                }
            )
        return [
            self.name,
            self.arity,
            RespSet([f for f in self.flags if f not in ("RW", "RO", "OW", "RM")]),
            self.first_key,
            self.last_key,
            self.step,
            RespSet(list(self.acl)),
            list(self.tips),
            key_specs,
            [sub.info() for sub in self.subcommands.values()],
        ]


# Lookup by the request's first word as sent: both cases are stored, so the
# common spellings ("GET", "get") cost one dict probe.
COMMANDS: dict[bytes, CommandSpec] = {}


def _register(spec: CommandSpec) -> None:
    name = spec.name.encode()
    COMMANDS[name] = spec
    COMMANDS[name.upper()] = spec


def command(
    name: str,
    arity: int,
    flags: tuple[str, ...],
    *,
    keys: tuple[int, int, int] = (0, 0, 0),
    acl: tuple[str, ...] = (),
    tips: tuple[str, ...] = (),
    group: str = "generic",
    summary: str = "",
    since: str = "1.0.0",
) -> Callable[[Handler], Handler]:
    """Register a top-level command handler."""

    def deco(handler: Handler) -> Handler:
        _register(
            CommandSpec(
                name=name,
                handler=handler,
                arity=arity,
                flags=flags,
                first_key=keys[0],
                last_key=keys[1],
                step=keys[2],
                acl=acl,
                tips=tips,
                group=group,
                summary=summary,
                since=since,
            )
        )
        return handler

    return deco


def subcommand(
    parent: str,
    name: str,
    arity: int,
    flags: tuple[str, ...],
    *,
    acl: tuple[str, ...] = (),
    tips: tuple[str, ...] = (),
    summary: str = "",
    since: str = "1.0.0",
) -> Callable[[Handler], Handler]:
    """Register ``PARENT NAME``; the parent must be registered with ``container``."""

    def deco(handler: Handler) -> Handler:
        spec = COMMANDS[parent.encode()]
        spec.subcommands[name.encode()] = CommandSpec(
            name=f"{parent}|{name}",
            handler=handler,
            arity=arity,
            flags=flags,
            acl=acl,
            tips=tips,
            group=spec.group,
            summary=summary,
            since=since,
        )
        return handler

    return deco


def container(
    name: str,
    *,
    group: str,
    summary: str,
    since: str,
    flags: tuple[str, ...] = (),
    bare: Handler | None = None,
) -> None:
    """Register a command that dispatches to subcommands (CLUSTER, CLIENT ...).

    ``bare`` handles the command sent with no subcommand (plain ``COMMAND``);
    without it a subcommand is required.
    """

    def dispatch(session: Session, args: list[bytes], slot: int) -> bytes:
        if len(args) == 1 and bare is not None:
            return bare(session, args, slot)
        spec = COMMANDS[name.encode()]
        sub = spec.subcommands.get(args[1].lower())
        if sub is None:
            raise CommandError(
                f"ERR unknown subcommand '{args[1].decode(errors='replace')}'. "
                f"Try {name.upper()} HELP."
            )
        if not sub.arity_ok(len(args)):
            raise CommandError(f"ERR wrong number of arguments for '{sub.name}' command")
        return sub.handler(session, args, slot)

    _register(
        CommandSpec(
            name=name,
            handler=dispatch,
            arity=-1 if bare is not None else -2,
            flags=flags,
            group=group,
            summary=summary,
            since=since,
        )
    )
