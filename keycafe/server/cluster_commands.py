"""The CLUSTER family, generated from the node's current slot table.

SLOTS, SHARDS and NODES are three views of one ``SlotTable``, so node ids,
addresses and ranges always agree with each other and with ``-MOVED`` replies.
"""

from __future__ import annotations

from typing import Final

from keycafe.cluster.slot_table import NodeAddr, SlotTable
from keycafe.resp import reply as resp
from keycafe.resp.reply import Value
from keycafe.server.args import parse_int
from keycafe.server.connection import help_reply
from keycafe.server.errors import CommandError
from keycafe.server.probe import MemberView
from keycafe.server.registry import container, subcommand
from keycafe.server.session import Session
from keycafe.store.keyslot import SLOT_COUNT, key_slot

container(
    "cluster", group="cluster", summary="A container for Redis Cluster commands.", since="3.0.0"
)

_FLAGS: Final = ("stale",)
_ACL: Final = ("@slow",)
_ALL_SHARDS: Final = ("nondeterministic_output",)


def _slot_arg(raw: bytes) -> int:
    slot = parse_int(raw, "ERR Invalid slot")
    if not 0 <= slot < SLOT_COUNT:
        raise CommandError("ERR Invalid slot")
    return slot


@subcommand(
    "cluster",
    "info",
    2,
    _FLAGS,
    acl=_ACL,
    tips=_ALL_SHARDS,
    since="3.0.0",
    summary="Returns information about the state of a node.",
)
def cluster_info(s: Session, a: list[bytes], slot: int) -> bytes:
    table = s.state.routing.table
    assigned = table.slots_assigned()
    probe = s.state.probe
    members = probe.members()
    figures = probe.figures()
    known = set(table.nodes) | {m.node_id for m in members if m.state != "left"}
    # As Redis counts them: a slot whose primary is known dead is failed (we
    # answer CLUSTERDOWN for it), one whose primary is suspected is pfail.
    suspect = frozenset(m.node_id for m in members if m.state == "suspect") - table.down
    led = table.primary_counts()
    failed = sum(n for node, n in led.items() if node in table.down)
    pfailed = sum(n for node, n in led.items() if node in suspect)
    # A node that sees no majority of the ring alive says so, as a Redis
    # Cluster master on the minority side does (a lone state has no shell to
    # ask, and is a cluster of one).
    majority = int(figures.get("coordinator_majority", 1)) == 1 and not s.state.routing.halted
    ok = assigned == SLOT_COUNT and not failed and majority
    lines = [
        f"cluster_state:{'ok' if ok else 'fail'}",
        f"cluster_slots_assigned:{assigned}",
        f"cluster_slots_ok:{assigned - failed - pfailed}",
        f"cluster_slots_pfail:{pfailed}",
        f"cluster_slots_fail:{failed}",
        f"cluster_known_nodes:{len(known)}",
        f"cluster_size:{len({o[0] for o in table.owners if o})}",
        f"cluster_current_epoch:{table.epoch}",
        f"cluster_my_epoch:{table.epoch}",
    ]
    # The slot table's epoch unless the shell knows the ring's own.
    shown = {"ring_epoch": table.epoch, **figures}
    lines += [f"keycafe_{k}:{v}" for k, v in shown.items()]
    return resp.encode(resp.Verbatim("\r\n".join(lines) + "\r\n"), s.proto)


@subcommand(
    "cluster", "myid", 2, _FLAGS, acl=_ACL, since="3.0.0", summary="Returns the ID of a node."
)
def cluster_myid(s: Session, a: list[bytes], slot: int) -> bytes:
    return resp.bulk(s.state.routing.table.my_id.encode())


@subcommand(
    "cluster",
    "myshardid",
    2,
    _FLAGS,
    acl=_ACL,
    since="7.2.0",
    summary="Returns the shard ID of a node.",
)
def cluster_myshardid(s: Session, a: list[bytes], slot: int) -> bytes:
    return resp.bulk(s.state.routing.table.my_id.encode())


@subcommand(
    "cluster",
    "keyslot",
    3,
    _FLAGS,
    acl=_ACL,
    since="3.0.0",
    summary="Returns the hash slot for a key.",
)
def cluster_keyslot(s: Session, a: list[bytes], slot: int) -> bytes:
    return b":%d\r\n" % key_slot(a[2])


@subcommand(
    "cluster",
    "countkeysinslot",
    3,
    _FLAGS,
    acl=_ACL,
    since="3.0.0",
    summary="Returns the number of keys in a hash slot.",
)
def cluster_countkeysinslot(s: Session, a: list[bytes], slot: int) -> bytes:
    return b":%d\r\n" % s.state.store.count_in_slot(_slot_arg(a[2]))


@subcommand(
    "cluster",
    "getkeysinslot",
    4,
    _FLAGS,
    acl=_ACL,
    since="3.0.0",
    summary="Returns the key names in a hash slot.",
)
def cluster_getkeysinslot(s: Session, a: list[bytes], slot: int) -> bytes:
    which = _slot_arg(a[2])
    count = parse_int(a[3], "ERR Invalid slot or number of keys")
    if count < 0:
        raise CommandError("ERR Invalid slot or number of keys")
    return resp.encode(s.state.store.keys_in_slot(which, count), s.proto)


def _node_entry(node: NodeAddr) -> list[Value]:
    meta: dict[str, Value] = {"hostname": node.hostname} if node.hostname else {}
    return [node.host, node.port, node.node_id, meta]


def slots_view(table: SlotTable) -> list[Value]:
    """CLUSTER SLOTS: [start, end, primary, replicas...] per range."""
    return [
        [r.start, r.end, *(_node_entry(table.nodes[o]) for o in r.owners)] for r in table.ranges()
    ]


@subcommand(
    "cluster",
    "slots",
    2,
    _FLAGS,
    acl=_ACL,
    tips=("nondeterministic_output",),
    since="3.0.0",
    summary="Returns the mapping of cluster slots to nodes.",
)
def cluster_slots(s: Session, a: list[bytes], slot: int) -> bytes:
    return resp.encode(slots_view(s.state.routing.table), s.proto)


def shards_view(table: SlotTable) -> list[Value]:
    """CLUSTER SHARDS: one shard per primary, with its ranges and its nodes."""
    primaries: dict[str, list[int]] = {}
    replicas: dict[str, list[str]] = {}
    for r in table.ranges():
        primaries.setdefault(r.owners[0], []).extend((r.start, r.end))
        reps = replicas.setdefault(r.owners[0], [])
        reps.extend(o for o in r.owners[1:] if o not in reps)
    shards: list[Value] = []
    for primary, ranges in primaries.items():
        nodes: list[Value] = []
        for node_id, role in [(primary, "master")] + [(x, "replica") for x in replicas[primary]]:
            node = table.nodes[node_id]
            fields: dict[str, Value] = {
                "id": node.node_id,
                "port": node.port,
                "ip": node.host,
                "endpoint": node.host,
            }
            if node.hostname:
                fields["hostname"] = node.hostname
            fields |= {"role": role, "replication-offset": 0, "health": "online"}
            nodes.append(fields)
        shards.append({"slots": list(ranges), "nodes": nodes})
    return shards


@subcommand(
    "cluster",
    "shards",
    2,
    _FLAGS,
    acl=_ACL,
    tips=("nondeterministic_output",),
    since="7.0.0",
    summary="Returns the mapping of cluster slots to shards.",
)
def cluster_shards(s: Session, a: list[bytes], slot: int) -> bytes:
    return resp.encode(shards_view(s.state.routing.table), s.proto)


_FAIL_FLAGS = {"suspect": ",fail?", "dead": ",fail"}


def nodes_view(table: SlotTable, members: list[MemberView] | None = None) -> str:
    """CLUSTER NODES, in Redis's line format: the slot table's nodes with their
    slots, then gossip members that own none. A suspect is ``fail?``, a dead
    member ``fail`` (Redis's PFAIL and FAIL); members that left are omitted."""
    primary_ranges: dict[str, list[str]] = {node_id: [] for node_id in table.nodes}
    for r in table.ranges():
        text = str(r.start) if r.start == r.end else f"{r.start}-{r.end}"
        primary_ranges[r.owners[0]].append(text)
    by_id = {m.node_id: m for m in members or []}
    rows = [
        (node_id, node.host, node.port, node.cluster_port, "alive", primary_ranges[node_id])
        for node_id, node in table.nodes.items()
    ]
    for m in members or []:
        if m.node_id not in table.nodes and m.state != "left":
            rows.append((m.node_id, m.host, m.port, m.cluster_port, m.state, []))
    lines = []
    for node_id, host, port, cport, state, ranges in rows:
        member = by_id.get(node_id)
        ping = pong = 0
        if node_id == table.my_id:
            flags = "myself,master"
        else:
            if member is not None:
                state, ping, pong = member.state, member.ping_sent_ms, member.pong_recv_ms
            flags = "master" + _FAIL_FLAGS.get(state, "")
        link = "connected" if state in ("alive", "suspect") else "disconnected"
        fields = [
            node_id,
            f"{host}:{port}@{cport}",
            flags,
            "-",
            str(ping),
            str(pong),
            str(table.epoch),
            link,
        ]
        lines.append(" ".join(fields + ranges))
    return "\n".join(lines) + "\n"


@subcommand(
    "cluster",
    "nodes",
    2,
    _FLAGS,
    acl=_ACL,
    tips=("nondeterministic_output",),
    since="3.0.0",
    summary="Returns the cluster configuration for a node.",
)
def cluster_nodes(s: Session, a: list[bytes], slot: int) -> bytes:
    members = s.state.probe.members()
    return resp.encode(resp.Verbatim(nodes_view(s.state.routing.table, members)), s.proto)


@subcommand(
    "cluster",
    "help",
    2,
    ("loading", "stale"),
    acl=_ACL,
    since="5.0.0",
    summary="Returns helpful text about the different subcommands.",
)
def cluster_help(s: Session, a: list[bytes], slot: int) -> bytes:
    return help_reply(s, "cluster")
