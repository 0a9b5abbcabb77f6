"""Server introspection: COMMAND, CONFIG and INFO."""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Callable
from typing import Final

import keycafe
from keycafe.cluster.slot_table import owner_mask
from keycafe.resp import reply as resp
from keycafe.resp.reply import Value
from keycafe.server.connection import REDIS_COMPAT_VERSION, help_reply
from keycafe.server.errors import CommandError
from keycafe.server.registry import COMMANDS, CommandSpec, command, container, subcommand
from keycafe.server.session import Session
from keycafe.store.keyslot import key_slot

_SERVER: Final = ("@slow", "@connection")


def _top_level() -> list[CommandSpec]:
    seen: dict[str, CommandSpec] = {}
    for spec in COMMANDS.values():
        seen.setdefault(spec.name, spec)
    return sorted(seen.values(), key=lambda spec: spec.name)


def _command_all(s: Session, a: list[bytes], slot: int) -> bytes:
    return resp.encode([spec.info() for spec in _top_level()], s.proto)


container(
    "command",
    group="server",
    summary="Returns detailed information about all commands.",
    since="2.8.13",
    flags=("loading", "stale"),
    bare=_command_all,
)

_CMD_FLAGS: Final = ("loading", "stale")


@subcommand(
    "command",
    "count",
    2,
    _CMD_FLAGS,
    acl=_SERVER,
    since="2.8.13",
    summary="Returns a count of commands.",
)
def command_count(s: Session, a: list[bytes], slot: int) -> bytes:
    return b":%d\r\n" % len(_top_level())


@subcommand(
    "command",
    "list",
    -2,
    _CMD_FLAGS,
    acl=_SERVER,
    since="7.0.0",
    summary="Returns a list of command names.",
)
def command_list(s: Session, a: list[bytes], slot: int) -> bytes:
    return resp.encode([spec.name for spec in _top_level()], s.proto)


@subcommand(
    "command",
    "info",
    -2,
    _CMD_FLAGS,
    acl=_SERVER,
    since="2.8.13",
    summary="Returns information about one, multiple or all commands.",
)
def command_info(s: Session, a: list[bytes], slot: int) -> bytes:
    if len(a) == 2:
        return _command_all(s, a, slot)
    out: list[Value] = []
    for name in a[2:]:
        spec = COMMANDS.get(name.lower())
        out.append(None if spec is None else spec.info())
    return resp.encode(out, s.proto)


def _docs(spec: CommandSpec) -> dict[str, Value]:
    doc: dict[str, Value] = {"summary": spec.summary, "since": spec.since, "group": spec.group}
    if spec.subcommands:
        doc["subcommands"] = {sub.name: _docs(sub) for sub in spec.subcommands.values()}
    return doc


@subcommand(
    "command",
    "docs",
    -2,
    _CMD_FLAGS,
    acl=_SERVER,
    since="7.0.0",
    summary="Returns documentary information about one, multiple or all commands.",
)
def command_docs(s: Session, a: list[bytes], slot: int) -> bytes:
    specs = (
        _top_level()
        if len(a) == 2
        else [spec for name in a[2:] if (spec := COMMANDS.get(name.lower())) is not None]
    )
    return resp.encode({spec.name: _docs(spec) for spec in specs}, s.proto)


@subcommand(
    "command",
    "getkeys",
    -3,
    _CMD_FLAGS,
    acl=_SERVER,
    since="2.8.13",
    summary="Extracts the key names from an arbitrary command.",
)
def command_getkeys(s: Session, a: list[bytes], slot: int) -> bytes:
    req = a[2:]
    spec = COMMANDS.get(req[0]) or COMMANDS.get(req[0].lower())
    if spec is None:
        raise CommandError("ERR Invalid command specified")
    if not spec.arity_ok(len(req)):
        raise CommandError("ERR Invalid number of arguments specified for command")
    if not spec.keyed:
        raise CommandError("ERR The command has no key arguments")
    last = spec.last_key if spec.last_key >= 0 else len(req) + spec.last_key
    return resp.encode(list(req[spec.first_key : last + 1 : spec.step]), s.proto)


@subcommand(
    "command",
    "help",
    2,
    _CMD_FLAGS,
    acl=_SERVER,
    since="5.0.0",
    summary="Returns helpful text about the different subcommands.",
)
def command_help(s: Session, a: list[bytes], slot: int) -> bytes:
    return help_reply(s, "command")


# -- DEBUG ---------------------------------------------------------------------

# Redis 7's wording: DEBUG is off unless enable-debug-command allows it.
DEBUG_REFUSED: Final = (
    'ERR DEBUG command not allowed. If the enable-debug-command option is set to "local",'
    " you can run it from a local connection, otherwise you need to set this option in the"
    " configuration file, and restart the server."
)

container(
    "debug",
    group="server",
    summary="A container for debugging commands (off unless --enable-debug-command).",
    since="1.0.0",
    flags=("admin", "noscript", "loading", "stale"),
)


def _debug_allowed(s: Session) -> None:
    allowed = s.state.config.enable_debug_command
    if allowed == "yes" or (allowed == "local" and _loopback(s.addr)):
        return
    raise CommandError(DEBUG_REFUSED)


def _loopback(addr: str) -> bool:
    """Is ``host:port`` (as the shell records a client) a loopback address?"""
    try:
        return ipaddress.ip_address(addr.rsplit(":", 1)[0].strip("[]")).is_loopback
    except ValueError:
        return False


@subcommand(
    "debug",
    "forget",
    3,
    ("admin", "noscript", "loading", "stale"),
    acl=("@admin", "@slow", "@dangerous"),
    summary="Drops a key from this node's copy only: no tombstone, not replicated"
    " (to make copies differ, for tests of anti-entropy).",
)
def debug_forget(s: Session, a: list[bytes], slot: int) -> bytes:
    _debug_allowed(s)
    return resp.integer(s.store.forget(key_slot(a[2]), a[2]))


@subcommand(
    "debug",
    "help",
    2,
    ("loading", "stale"),
    acl=("@slow",),
    summary="Returns helpful text about the different subcommands.",
)
def debug_help(s: Session, a: list[bytes], slot: int) -> bytes:
    _debug_allowed(s)
    return help_reply(s, "debug")


# -- CONFIG --------------------------------------------------------------------

container(
    "config",
    group="server",
    summary="A container for server configuration commands.",
    since="2.0.0",
)


def _config_values(s: Session) -> dict[str, str]:
    cfg = s.state.config
    return {
        "bind": cfg.bind,
        "port": str(cfg.me.port),
        "cluster-port": str(cfg.me.cluster_port),
        "cluster-enabled": "yes",
        "databases": "1",
        "maxclients": str(cfg.maxclients),
        "timeout": str(cfg.timeout),
        "hz": str(cfg.hz),
        "requirepass": cfg.requirepass,
        "enable-debug-command": cfg.enable_debug_command,
        "proto-max-bulk-len": str(cfg.limits.max_bulk_len),
        "proto-max-multibulk-len": str(cfg.limits.max_multibulk_len),
        "proto-inline-max-size": str(cfg.limits.max_inline_len),
        # keycafe keeps data in memory only and replicates it instead of
        # writing it to disk: no RDB snapshots, no AOF.
        "save": "",
        "appendonly": "no",
        "maxmemory": "0",
        "maxmemory-policy": "noeviction",
    }


@subcommand(
    "config",
    "get",
    -3,
    ("admin", "noscript", "loading", "stale"),
    acl=("@admin", "@slow", "@dangerous"),
    since="2.0.0",
    summary="Returns the effective values of configuration parameters.",
)
def config_get(s: Session, a: list[bytes], slot: int) -> bytes:
    values = _config_values(s)
    out: dict[str, Value] = {}
    for raw in a[2:]:
        pattern = raw.decode(errors="replace").lower()
        for name, value in values.items():
            if fnmatch.fnmatchcase(name, pattern):
                out[name] = value
    return resp.encode(out, s.proto)


@subcommand(
    "config",
    "set",
    -4,
    ("admin", "noscript", "loading", "stale"),
    acl=("@admin", "@slow", "@dangerous"),
    since="2.0.0",
    summary="Sets configuration parameters (none can change at run time yet).",
)
def config_set(s: Session, a: list[bytes], slot: int) -> bytes:
    name = a[2].decode(errors="replace")
    raise CommandError(f"ERR Unknown option or number of arguments for CONFIG SET - '{name}'")


@subcommand(
    "config",
    "resetstat",
    2,
    ("admin", "noscript", "loading", "stale"),
    acl=("@admin", "@slow", "@dangerous"),
    since="2.0.0",
    summary="Resets the server's statistics.",
)
def config_resetstat(s: Session, a: list[bytes], slot: int) -> bytes:
    s.state.counters.reset()
    return resp.OK


@subcommand(
    "config",
    "help",
    2,
    ("loading", "stale"),
    acl=("@slow",),
    since="5.0.0",
    summary="Returns helpful text about the different subcommands.",
)
def config_help(s: Session, a: list[bytes], slot: int) -> bytes:
    return help_reply(s, "config")


# -- INFO ----------------------------------------------------------------------


def _section_server(s: Session) -> list[str]:
    st = s.state
    uptime = max(0, st.now_ms - st.started_ms) // 1000
    return [
        f"redis_version:{REDIS_COMPAT_VERSION}",
        f"keycafe_version:{keycafe.__version__}",
        "redis_mode:cluster",
        f"run_id:{st.config.me.node_id}",
        f"tcp_port:{st.config.me.port}",
        f"uptime_in_seconds:{uptime}",
        f"uptime_in_days:{uptime // 86400}",
        f"hz:{st.config.hz}",
    ]


def _section_clients(s: Session) -> list[str]:
    return [f"connected_clients:{len(s.state.clients)}", f"maxclients:{s.state.config.maxclients}"]


def _section_memory(s: Session) -> list[str]:
    rss = int(s.state.probe.process().get("rss", 0))
    # Python has no cheap count of live heap bytes; the resident set is the
    # honest figure, so both fields report it.
    return [
        f"used_memory:{rss}",
        f"used_memory_rss:{rss}",
        "maxmemory:0",
        "maxmemory_policy:noeviction",
    ]


def _section_stats(s: Session) -> list[str]:
    c = s.state.counters
    st = s.state.store.stats
    return [
        f"total_connections_received:{c.connections_received}",
        f"total_commands_processed:{c.commands_processed}",
        f"total_net_input_bytes:{c.net_input_bytes}",
        f"total_net_output_bytes:{c.net_output_bytes}",
        f"rejected_connections:{c.rejected_connections}",
        f"expired_keys:{st.expired_keys}",
        f"total_error_replies:{c.error_replies}",
        f"protocol_errors:{c.protocol_errors}",
        f"tombstones_collected:{st.tombstones_collected}",
    ]


def _section_cpu(s: Session) -> list[str]:
    p = s.state.probe.process()
    return [
        f"used_cpu_sys:{p.get('cpu_sys', 0.0):.6f}",
        f"used_cpu_user:{p.get('cpu_user', 0.0):.6f}",
    ]


def _section_replication(s: Session) -> list[str]:
    # Every node is a primary of some slots and a replica of others: Redis's
    # fields describe the first role, keycafe_* ones both.
    table = s.state.routing.table
    me, down = table.my_id, table.down
    led = table.mine.count(1)
    held = owner_mask(table.owners, me).count(1)
    replicas = sorted(
        {n for o in set(table.owners) if o[:1] == (me,) for n in o[1:] if n not in down}
    )
    probe = s.state.probe
    figures = probe.figures()
    lag = probe.replica_lag()
    written = figures.get("repl_written", 0)
    lines = ["role:master", f"connected_slaves:{len(replicas)}"]
    for i, node in enumerate(replicas):
        addr = table.nodes.get(node)
        host, port = (addr.host, addr.port) if addr else ("", 0)
        behind = lag.get(node, 0)
        lines.append(f"slave{i}:ip={host},port={port},state=online,id={node},lag_entries={behind}")
    lines += [
        f"master_replid:{me}",
        f"master_repl_offset:{written}",
        f"keycafe_primary_slots:{led}",
        f"keycafe_replica_slots:{held - led}",
    ]
    lines += [f"keycafe_{k}:{v}" for k, v in figures.items() if k.startswith("repl_")]
    return lines


def _section_cluster(s: Session) -> list[str]:
    return ["cluster_enabled:1"]


def _section_keyspace(s: Session) -> list[str]:
    store = s.state.store
    keys = store.count()
    if not keys:
        return []
    return [f"db0:keys={keys},expires={store.count_volatile()},avg_ttl=0"]


_SECTIONS: Final[dict[str, Callable[[Session], list[str]]]] = {
    "server": _section_server,
    "clients": _section_clients,
    "memory": _section_memory,
    "stats": _section_stats,
    "replication": _section_replication,
    "cpu": _section_cpu,
    "cluster": _section_cluster,
    "keyspace": _section_keyspace,
}


def info_text(s: Session, names: list[str]) -> str:
    wanted = set(names) or {"default"}
    if wanted & {"all", "default", "everything"}:
        wanted = set(_SECTIONS)
    parts = []
    for name, section in _SECTIONS.items():
        if name in wanted:
            parts.append("\r\n".join([f"# {name.capitalize()}", *section(s)]) + "\r\n")
    return "\r\n".join(parts)


@command(
    "info",
    -1,
    ("loading", "stale"),
    acl=("@slow", "@dangerous"),
    tips=("nondeterministic_output", "request_policy:all_shards", "response_policy:special"),
    group="server",
    summary="Returns information and statistics about the server.",
)
def info(s: Session, a: list[bytes], slot: int) -> bytes:
    names = [x.decode(errors="replace").lower() for x in a[1:]]
    return resp.encode(resp.Verbatim(info_text(s, names)), s.proto)
