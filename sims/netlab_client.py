"""What ``sims.netlab`` runs in its namespaces: clients bound to a side, monitor, final reads.

    python -m sims.netlab_client work --name n1 --node HOST:PORT --seed S [--start T0] --until T
    python -m sims.netlab_client monitor n1=HOST:PORT n2=HOST:PORT ...
    python -m sims.netlab_client owners HOST:PORT
    python -m sims.netlab_client final n1=HOST:PORT n2=HOST:PORT ... [--converge 30]

``work`` runs in a node's namespace: a writer and a reader, each with one
operation in flight and ``sims.partition``'s workload (its keys, its share of
deletes, its pause between operations). Each knows only its own node at
first and learns the others from ``CLUSTER SLOTS``, so on one side of a
partition it reaches only that side. ``monitor`` and ``final`` run in the
bridge's namespace, which reaches every node whatever the faults (they drop
traffic between nodes only).

Every command prints JSON lines on stdout. Times are this process's
``time.time()``: the host clock, the same in every namespace (never run
these under faketime).

A request goes to the slot's owner as this client last heard it, follows
``MOVED`` (the node refused it: nothing happened) and is tried once. Its
outcome, as ``sims.checker`` reads it: ``ok``, a reply; ``fail``, an error
reply (``CLUSTERDOWN``, ``TRYAGAIN``) or no connection at all (the request
was never sent); ``unknown``, sent but not answered within the timeout, or
the connection closed (it may have happened). No retries: a retry after a
timeout would make one operation of two attempts.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from keycafe.client.sync import Connection
from keycafe.errors import KeycafeError, RedirectError, ResponseError
from keycafe.resp.client import encode_command
from keycafe.store.keyslot import SLOT_COUNT, key_slot
from sims.partition import DELETES, KEYS, PERIOD

Address = tuple[str, int]
Emit = Callable[[dict[str, Any]], None]

MAX_REDIRECTS: Final = 5  # MOVED replies followed for one operation
CONNECT_TIMEOUT: Final = 0.5  # seconds; a node across a cut never answers a SYN
POLL: Final = 0.5  # seconds between the monitor's looks at each node
READ_TIMEOUT: Final = 2.0  # seconds a final read may take (the clients' default timeout)


def parse_address(text: str) -> Address:
    host, _, port = text.rpartition(":")
    return host, int(port)


def slot_owners(rows: Any) -> list[list[Address]]:
    """Each slot's owners (primary first) from a ``CLUSTER SLOTS`` reply."""
    owners: list[list[Address]] = [[] for _ in range(SLOT_COUNT)]
    for row in rows:
        addrs = [(_text(node[0]), int(node[1])) for node in row[2:]]
        for slot in range(int(row[0]), int(row[1]) + 1):
            owners[slot] = addrs
    return owners


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SideClient:
    """A cluster client that starts from one node and tries each request once."""

    def __init__(self, home: Address, timeout: float) -> None:
        self.home = home
        self.timeout = timeout
        self.route: list[Address] = [home] * SLOT_COUNT  # until CLUSTER SLOTS answers
        self.stale = True  # ask the home node for the slot map before the next request
        self._conns: dict[Address, Connection] = {}

    def _connect(self, addr: Address) -> Connection:
        conn = self._conns.get(addr)
        if conn is None:
            conn = Connection(addr, CONNECT_TIMEOUT, decode=False, password=None)
            conn.sock.settimeout(self.timeout)
            self._conns[addr] = conn
        return conn

    def _drop(self, addr: Address) -> None:
        conn = self._conns.pop(addr, None)
        if conn is not None:
            conn.close()

    def call(self, addr: Address, *args: bytes | str) -> tuple[str, Any]:
        """One request to ``addr``: (outcome, reply or error text)."""
        try:
            conn = self._connect(addr)
        except (OSError, KeycafeError) as exc:
            return "fail", f"no connection: {exc}"  # nothing was sent
        try:
            reply = conn.call([encode_command(args)])[0]
        except (OSError, KeycafeError) as exc:
            self._drop(addr)
            return "unknown", str(exc)
        if isinstance(reply, ResponseError):
            return "fail", reply
        return "ok", reply

    def refresh(self) -> None:
        outcome, rows = self.call(self.home, "CLUSTER", "SLOTS")
        if outcome == "ok":
            owners = slot_owners(rows)
            self.route = [o[0] if o else self.home for o in owners]
            self.stale = False

    def execute(self, *args: bytes) -> tuple[str, Any, Address]:
        """Run a keyed command (key second): (outcome, reply or error text,
        the node that answered or was last tried)."""
        if self.stale:
            self.refresh()
        slot = key_slot(args[1])
        addr = self.route[slot]
        for _ in range(MAX_REDIRECTS):
            outcome, reply = self.call(addr, *args)
            if isinstance(reply, RedirectError) and not reply.ask:
                addr = self.route[slot] = reply.address
                self.stale = True  # the map moved: learn the rest of it too
                continue
            if outcome != "ok":
                self.stale = True
            if isinstance(reply, ResponseError):
                reply = str(reply)
            return outcome, reply, addr
        return "fail", "too many redirects", addr


class Emitter:
    """JSON lines on stdout, one writer at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"))
        with self._lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


def _value(v: Any) -> str | None:
    return v.decode("latin-1") if isinstance(v, bytes) else None


def writer(name: str, client: SideClient, rng: random.Random, until: float, emit: Emit) -> None:
    """Sets unique values (``name:n``) and deletes one time in ten, as
    ``sims.partition.Workload``'s writers do."""
    n = 0
    while time.time() < until:
        key = b"key:%d" % rng.randrange(KEYS)
        args: tuple[bytes, ...]
        if rng.random() < DELETES:
            kind, value, args = "delete", None, (b"DEL", key)
        else:
            n += 1
            value = f"{name}:{n}".encode()
            kind, args = "write", (b"SET", key, value)
        t0 = time.time()
        outcome, reply, addr = client.execute(*args)
        t1 = time.time()
        emit(_op(f"{name}.w", kind, key, value, t0, t1, outcome, addr, reply))
        time.sleep(PERIOD)


def reader(name: str, client: SideClient, rng: random.Random, until: float, emit: Emit) -> None:
    while time.time() < until:
        key = b"key:%d" % rng.randrange(KEYS)
        t0 = time.time()
        outcome, reply, addr = client.execute(b"GET", key)
        t1 = time.time()
        value = reply if outcome == "ok" else None
        emit(_op(f"{name}.r", "read", key, value, t0, t1, outcome, addr, reply))
        time.sleep(PERIOD)


def _op(
    client: str,
    kind: str,
    key: bytes,
    value: Any,
    t0: float,
    t1: float,
    outcome: str,
    addr: Address,
    reply: Any,
) -> dict[str, Any]:
    return {
        "c": client,
        "k": kind,
        "key": key.decode(),
        "v": _value(value),
        "t0": t0,
        "t1": t1,
        "o": outcome,
        "at": f"{addr[0]}:{addr[1]}",
        "e": reply if outcome != "ok" else None,
    }


def work(args: argparse.Namespace) -> None:
    emit = Emitter()
    home = parse_address(args.node)
    threads = []
    for fn, role in ((writer, "w"), (reader, "r")):
        client = SideClient(home, args.timeout)
        client.refresh()  # before the start: the first operations go straight to their owner
        rng = random.Random(f"{args.seed}:{args.name}:{role}")
        t = threading.Thread(target=fn, args=(args.name, client, rng, args.until, emit))
        threads.append(t)
    time.sleep(max(0.0, args.start - time.time()))
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# -- the monitor ----------------------------------------------------------------------

INFO_FIELDS: Final = {
    "cluster_state": "state",
    "cluster_slots_assigned": "assigned",
    "cluster_slots_fail": "slots_fail",
    "keycafe_coordinator": "coord",
    "keycafe_coordinator_term": "term",
    "keycafe_coordinator_majority": "majority",
    "keycafe_ring_epoch": "epoch",
    "keycafe_ring_members": "members",
    "keycafe_ring_pending": "pending",
    "keycafe_gossip_members_alive": "alive",
    "keycafe_gossip_members_dead": "dead",
    "keycafe_repl_entries_refused": "refused",
}


def look(conn: SideClient, addr: Address) -> dict[str, Any] | None:
    """What a node says of itself: a few CLUSTER INFO fields, its id, and its
    wall clock (the newest ping or pong time it shows in CLUSTER NODES)."""
    outcome, text = conn.call(addr, "CLUSTER", "INFO")
    if outcome != "ok":
        return None
    fields = dict(line.split(":", 1) for line in _text(text).splitlines() if ":" in line)
    out: dict[str, Any] = {v: fields.get(k) for k, v in INFO_FIELDS.items()}
    outcome, nodes = conn.call(addr, "CLUSTER", "NODES")
    if outcome == "ok":
        rows = [line.split() for line in _text(nodes).splitlines() if line.strip()]
        out["id"] = next((r[0] for r in rows if "myself" in r[2]), None)
        # Times of the last ping sent / pong received, in the node's own wall
        # clock: the newest is a few probe intervals old at most.
        out["clock_ms"] = max((max(int(r[4]), int(r[5])) for r in rows if len(r) > 5), default=0)
    return out


def _watch(name: str, addr: Address, emit: Emit) -> None:
    conn = SideClient(addr, timeout=POLL)
    while True:
        t0 = time.time()
        try:
            seen = look(conn, addr)
        except (ValueError, IndexError):  # a reply cut short: ask again
            seen = None
        t1 = time.time()
        record: dict[str, Any] = {"node": name, "t": t1, "up": seen is not None}
        if seen is not None:
            clock_ms = seen.pop("clock_ms", 0)
            record |= seen
            record["skew"] = round(clock_ms / 1000 - t1, 3) if clock_ms else None
        emit(record)
        time.sleep(max(0.0, POLL - (t1 - t0)))


def monitor(args: argparse.Namespace) -> None:
    emit = Emitter()
    nodes = dict(_named(args.nodes))
    for name, addr in nodes.items():
        threading.Thread(target=_watch, args=(name, addr, emit), daemon=True).start()
    threading.Event().wait()  # until killed


def _named(specs: list[str]) -> list[tuple[str, Address]]:
    out = []
    for spec in specs:
        name, _, addr = spec.partition("=")
        out.append((name, parse_address(addr)))
    return out


# -- slot owners and final reads --------------------------------------------------------


def owners(args: argparse.Namespace) -> None:
    """Each key's owners (primary first), as the node at ``addr`` routes."""
    addr = parse_address(args.node)
    outcome, rows = SideClient(addr, timeout=5).call(addr, "CLUSTER", "SLOTS")
    if outcome != "ok":
        raise SystemExit(f"CLUSTER SLOTS failed: {rows}")
    table = slot_owners(rows)
    keys = [b"key:%d" % i for i in range(KEYS)]
    print(json.dumps({k.decode(): [f"{h}:{p}" for h, p in table[key_slot(k)]] for k in keys}))


def read_copies(
    client: SideClient, table: list[list[Address]], keys: list[bytes], ranks: int
) -> tuple[dict[int, dict[bytes, bytes | None]], set[bytes]]:
    """Each key read from each of its copies (``READONLY`` then ``GET`` on
    the owner itself, no redirects): per copy rank, key -> value; and the
    keys some copy could not be read of."""
    views: dict[int, dict[bytes, bytes | None]] = {r: {} for r in range(ranks)}
    unread: set[bytes] = set()
    ready: set[Address] = set()
    for key in keys:
        copies = table[key_slot(key)]
        for rank in range(ranks):
            addr = copies[min(rank, len(copies) - 1)] if copies else None
            if addr is None:
                unread.add(key)
                continue
            if addr not in ready:
                outcome, _ = client.call(addr, "READONLY")
                if outcome != "ok":
                    unread.add(key)
                    continue
                ready.add(addr)
            outcome, reply = client.call(addr, "GET", key)
            if outcome != "ok":
                ready.discard(addr)  # a dropped connection forgets READONLY
                unread.add(key)
            else:
                views[rank][key] = reply
    return views, unread


def final(args: argparse.Namespace) -> None:
    """Every key from every copy, once the cluster has settled; keys whose
    copies differ, or that could not be read, are read again until they agree
    or ``--converge`` seconds have passed since the first pass (anti-entropy
    repairs within a pass)."""
    nodes = _named(args.nodes)
    client = SideClient(nodes[0][1], timeout=READ_TIMEOUT)
    tables = {}
    for name, addr in nodes:
        outcome, rows = client.call(addr, "CLUSTER", "SLOTS")
        if outcome == "ok":
            tables[name] = slot_owners(rows)
    if not tables:
        raise SystemExit("no node answered CLUSTER SLOTS")
    table = next(iter(tables.values()))
    agree = all(t == table for t in tables.values())
    ranks = max(len(o) for o in table)
    keys = [b"key:%d" % i for i in range(KEYS)]
    t0 = time.time()
    views, unread = read_copies(client, table, keys, ranks)
    differ = _differing(views, keys)
    first_differ = len(differ)
    # From the end of the first pass, which reads that hang (a node that
    # holds reads back) can make long.
    deadline = time.time() + args.converge
    while (differ or unread) and time.time() < deadline:
        time.sleep(1.0)
        again, unread = read_copies(client, table, sorted(differ | unread), ranks)
        for rank, view in again.items():
            views[rank].update(view)
        differ = _differing(views, keys)
    names = {addr: name for name, addr in nodes}
    print(
        json.dumps(
            {
                "views": {
                    f"copy {rank + 1}": {k.decode(): _value(v) for k, v in view.items()}
                    for rank, view in views.items()
                },
                "unread": sorted(k.decode() for k in unread),
                "owners": {
                    k.decode(): [names.get(a, f"{a[0]}:{a[1]}") for a in table[key_slot(k)]]
                    for k in keys
                },
                "tables_agree": agree,
                "differed_at_first": first_differ,
                # None: some copies still differ, or could not be read.
                "converged_after": (
                    None
                    if differ or unread
                    else round(time.time() - t0, 2)
                    if first_differ
                    else 0.0
                ),
            }
        )
    )


def _differing(views: dict[int, dict[bytes, bytes | None]], keys: list[bytes]) -> set[bytes]:
    return {k for k in keys if len({view.get(k, b"\0unread") for view in views.values()}) > 1}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("work", help="a writer and a reader through one node")
    p.add_argument("--name", required=True)
    p.add_argument("--node", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--start", type=float, default=0.0, help="unix time to start at")
    p.add_argument("--until", type=float, required=True, help="unix time to stop at")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds a request may take")
    p.set_defaults(fn=work)
    p = sub.add_parser("monitor", help="each node's CLUSTER INFO, twice a second")
    p.add_argument("nodes", nargs="+", metavar="NAME=HOST:PORT")
    p.set_defaults(fn=monitor)
    p = sub.add_parser("owners", help="each key's owners as one node routes")
    p.add_argument("node")
    p.set_defaults(fn=owners)
    p = sub.add_parser("final", help="every key from each of its copies")
    p.add_argument("nodes", nargs="+", metavar="NAME=HOST:PORT")
    p.add_argument("--converge", type=float, default=30.0)
    p.set_defaults(fn=final)
    args = parser.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
