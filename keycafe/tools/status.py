"""``python -m keycafe status``: members, coordinator, ring, slots and keys per node."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from keycafe.client.commands import parse_info
from keycafe.client.sync import Connection
from keycafe.errors import KeycafeError
from keycafe.resp.client import encode_command

STATES = {"fail?": "suspect", "fail": "dead"}
# What a status query can fail with: the socket's errors, or the client's.
QUERY_ERRORS = (OSError, KeycafeError)


def query(host: str, port: int, *args: str, timeout: float = 5.0) -> object:
    """One command to the node at ``host:port`` itself (no redirects followed);
    the decoded reply."""
    conn = Connection((host, port), timeout, decode=True, password=None)
    try:
        return conn.call([encode_command(args)])[0]
    finally:
        conn.close()


def info(host: str, port: int, timeout: float = 5.0) -> dict[str, str]:
    """``CLUSTER INFO`` of that node, as a dict."""
    return parse_info(query(host, port, "CLUSTER", "INFO", timeout=timeout))


def ring_settled(host: str, ports: Sequence[int], members: int, timeout: float = 1.0) -> bool:
    """Every node on ``ports`` routes by the same ring of ``members``, with no
    change pending (False if one does not answer)."""
    keys = ("keycafe_ring_epoch", "keycafe_ring_members", "keycafe_ring_pending")
    try:
        seen = {tuple(info(host, port, timeout).get(k) for k in keys) for port in ports}
    except QUERY_ERRORS:
        return False
    return len(seen) == 1 and seen.pop()[1:] == (str(members), "0")


def slot_count(specs: list[str]) -> int:
    """Slots in CLUSTER NODES slot fields ("0-99", "7"; "[..]" migration marks skipped)."""
    total = 0
    for spec in specs:
        if spec.startswith("["):
            continue
        start, _, end = spec.partition("-")
        total += int(end or start) - int(start) + 1
    return total


def render(
    nodes_text: str,
    info_text: str,
    target: str,
    keys: dict[str, str] | None = None,
    replication: dict[str, dict[str, str]] | None = None,
) -> str:
    """The status view; ``keys`` maps a node's client address to its key
    count, ``replication`` to its ``INFO replication`` fields."""
    ci = parse_info(info_text)
    rows = [line.split() for line in nodes_text.splitlines() if line.strip()]
    keys = keys or {}
    replication = replication or {}
    pending = ci.get("keycafe_ring_pending", "0")
    out = [
        f"keycafe at {target}: cluster_state {ci.get('cluster_state', '?')}, "
        f"{ci.get('cluster_known_nodes', '?')} members "
        f"({ci.get('keycafe_gossip_members_alive', '?')} alive, "
        f"{ci.get('keycafe_gossip_members_suspect', '?')} suspect, "
        f"{ci.get('keycafe_gossip_members_dead', '?')} dead), "
        f"coordinator {ci.get('keycafe_coordinator', '?')[:12] or 'none'} "
        f"(term {ci.get('keycafe_coordinator_term', '?')}), "
        f"ring epoch {ci.get('keycafe_ring_epoch', '?')} "
        f"({ci.get('keycafe_ring_members', '?')} members"
        f"{f', moving to {pending}' if pending not in ('0', '?') else ''}), "
        f"local health score {ci.get('keycafe_gossip_health_score', '?')}",
        "",
        f"{'NODE':14}{'CLIENT ADDRESS':22}{'CLUSTER PORT':14}{'STATE':9}{'FLAGS':22}"
        f"{'SLOTS':>14}{'REPLICA OF':>12}{'LAG':>8}{'KEYS':>10}",
    ]
    for row in rows:
        node_id, addr, flags = row[0], row[1], row[2]
        client, _, cport = addr.partition("@")
        state = "alive"
        for flag, name in STATES.items():
            if flag in flags.split(","):
                state = name
        count = slot_count(row[8:])
        slots = f"{count} ({100 * count / 16384:.1f}%)" if count else "-"
        repl = replication.get(client, {})
        # Slots it holds as a replica, and writes its replicas have not
        # acknowledged yet (INFO replication).
        held = repl.get("keycafe_replica_slots", "?")
        lag = repl.get("keycafe_repl_lag_entries", "?")
        out.append(
            f"{node_id[:12]:14}{client:22}{cport.split(',')[0]:14}{state:9}{flags:22}"
            f"{slots:>14}{held:>12}{lag:>8}{keys.get(client, '?'):>10}"
        )
    return "\n".join(out)


def per_node(nodes_text: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """DBSIZE and INFO replication of every member that answers, by client address."""
    counts: dict[str, str] = {}
    replication: dict[str, dict[str, str]] = {}
    for line in nodes_text.splitlines():
        fields = line.split()
        if len(fields) < 3 or "fail" in fields[2].split(","):
            continue
        client = fields[1].partition("@")[0]
        host, _, port = client.rpartition(":")
        try:
            counts[client] = str(query(host, int(port), "DBSIZE", timeout=1.0))
            text = query(host, int(port), "INFO", "replication", timeout=1.0)
            replication[client] = parse_info(text)
        except (*QUERY_ERRORS, ValueError):
            counts.setdefault(client, "?")
    return counts, replication


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="keycafe status", description=__doc__)
    p.add_argument("-H", "--host", default="127.0.0.1")
    p.add_argument("-p", "--port", type=int, default=9814)
    args = p.parse_args(argv)
    target = f"{args.host}:{args.port}"
    try:
        nodes = query(args.host, args.port, "CLUSTER", "NODES")
        info = query(args.host, args.port, "CLUSTER", "INFO")
    except QUERY_ERRORS as exc:
        print(f"keycafe status: cannot reach {target}: {exc}", file=sys.stderr)
        return 1
    print(render(str(nodes), str(info), target, *per_node(str(nodes))))
    return 0
