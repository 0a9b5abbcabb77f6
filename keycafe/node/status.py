"""``python -m keycafe status``: members, coordinator, ring, slots and keys per node."""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence

import hiredis

STATES = {"fail?": "suspect", "fail": "dead"}


def query(host: str, port: int, *args: str, timeout: float = 5.0) -> object:
    """One RESP command over a fresh connection; the decoded reply."""
    request = b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args
    )
    reader = hiredis.Reader(encoding="utf-8")
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        while (reply := reader.gets()) is False:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed before the reply")
            reader.feed(data)
    return reply


def slot_count(specs: list[str]) -> int:
    """Slots in CLUSTER NODES slot fields ("0-99", "7"; "[..]" migration marks skipped)."""
    total = 0
    for spec in specs:
        if spec.startswith("["):
            continue
        start, _, end = spec.partition("-")
        total += int(end or start) - int(start) + 1
    return total


def render(nodes_text: str, info_text: str, target: str, keys: dict[str, str] | None = None) -> str:
    """The status view; ``keys`` maps a node's client address to its key count."""
    info = dict(line.split(":", 1) for line in info_text.splitlines() if ":" in line)
    rows = [line.split() for line in nodes_text.splitlines() if line.strip()]
    keys = keys or {}
    pending = info.get("keycafe_ring_pending", "0")
    out = [
        f"keycafe at {target}: cluster_state {info.get('cluster_state', '?')}, "
        f"{info.get('cluster_known_nodes', '?')} members "
        f"({info.get('keycafe_gossip_members_alive', '?')} alive, "
        f"{info.get('keycafe_gossip_members_suspect', '?')} suspect, "
        f"{info.get('keycafe_gossip_members_dead', '?')} dead), "
        f"coordinator {info.get('keycafe_coordinator', '?')[:12] or 'none'} "
        f"(term {info.get('keycafe_coordinator_term', '?')}), "
        f"ring epoch {info.get('keycafe_ring_epoch', '?')} "
        f"({info.get('keycafe_ring_members', '?')} members"
        f"{f', moving to {pending}' if pending not in ('0', '?') else ''}), "
        f"local health score {info.get('keycafe_gossip_health_score', '?')}",
        "",
        f"{'NODE':14}{'CLIENT ADDRESS':22}{'CLUSTER PORT':14}{'STATE':9}{'FLAGS':22}"
        f"{'SLOTS':>14}{'KEYS':>10}",
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
        out.append(
            f"{node_id[:12]:14}{client:22}{cport.split(',')[0]:14}{state:9}{flags:22}"
            f"{slots:>14}{keys.get(client, '?'):>10}"
        )
    return "\n".join(out)


def key_counts(nodes_text: str) -> dict[str, str]:
    """DBSIZE of every member that answers, by client address."""
    counts = {}
    for line in nodes_text.splitlines():
        fields = line.split()
        if len(fields) < 3 or "fail" in fields[2].split(","):
            continue
        client = fields[1].partition("@")[0]
        host, _, port = client.rpartition(":")
        try:
            counts[client] = str(query(host, int(port), "DBSIZE", timeout=1.0))
        except (OSError, ValueError):
            counts[client] = "?"
    return counts


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="keycafe status", description=__doc__)
    p.add_argument("-H", "--host", default="127.0.0.1")
    p.add_argument("-p", "--port", type=int, default=9814)
    args = p.parse_args(argv)
    target = f"{args.host}:{args.port}"
    try:
        nodes = query(args.host, args.port, "CLUSTER", "NODES")
        info = query(args.host, args.port, "CLUSTER", "INFO")
    except OSError as exc:
        print(f"keycafe status: cannot reach {target}: {exc}", file=sys.stderr)
        return 1
    print(render(str(nodes), str(info), target, key_counts(str(nodes))))
    return 0
