"""kill -9 trials on real local processes under a redis-py write load.

    python -m sims.failover [--nodes 5] [--trials 20] [--profile local|lan]
                            [--writers 3] [--json FILE]

Starts ``--nodes`` nodes (two copies of every slot, the default) on free
loopback ports and runs writer threads throughout: each writes unique keys and
overwrites counters of its own with rising numbers, and records every write
answered OK. Each trial then kills one node with SIGKILL (every fourth trial
the elected coordinator), and measures:

- *time to resume*: from the kill until a write to a slot the victim led
  (a prober retries one, redis-py with short timeouts) is answered OK;
- *waits on a dead replica*: the longest a write answered OK took, among
  writes to slots the victim was a replica of, issued after the kill;
- *failed writes* to slots the victim held no copy of (they should not fail);

waits until every survivor routes by one ring without the victim, starts a
new node in its place, waits for the ring of ``--nodes`` again, and reads
every acknowledged write back: each key must hold its last acknowledged value
or a later one. Prints one line per trial and the totals; exits 1 if any
acknowledged write was lost.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import subprocess
import threading
import time
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster

from keycafe.store.keyslot import key_slot
from keycafe.tools.status import info, query, ring_settled
from sims.join import start

COUNTERS = 64  # counter keys per writer, overwritten with rising numbers


class Writer(threading.Thread):
    """Writes until stopped; records what was acknowledged, and when."""

    def __init__(self, wid: int, ports: list[int], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.wid, self.ports, self.stop = wid, ports, stop
        self.acked: dict[str, int] = {}  # key -> last acknowledged number
        self.log: list[tuple[float, float, int, bool]] = []  # (invoked, done, slot, ok)
        self.lock = threading.Lock()

    def _client(self) -> RedisCluster:
        startup = [ClusterNode("127.0.0.1", p) for p in self.ports]
        return RedisCluster(startup_nodes=startup, socket_timeout=2, socket_connect_timeout=1)

    def run(self) -> None:
        rc = self._client()
        n = 0
        while not self.stop.is_set():
            n += 1
            key = f"c:{self.wid}:{n % COUNTERS}" if n % 2 else f"u:{self.wid}:{n}"
            t0 = time.monotonic()
            ok = False
            try:
                ok = bool(rc.set(key, n))
            except (redis.RedisError, OSError, IndexError, KeyError):
                rc.close()
                try:
                    rc = self._client()
                except (redis.RedisError, OSError, IndexError):
                    time.sleep(0.05)
            with self.lock:
                self.log.append((t0, time.monotonic(), key_slot(key.encode()), ok))
                if ok:
                    self.acked[key] = n
        rc.close()


def slot_owners(port: int) -> dict[int, list[int]]:
    """Client ports of each slot's owners (primary first), from CLUSTER SLOTS."""
    rows: Any = query("127.0.0.1", port, "CLUSTER", "SLOTS")
    out: dict[int, list[int]] = {}
    for row in rows:
        owners = [int(x[1]) for x in row[2:]]
        for s in range(int(row[0]), int(row[1]) + 1):
            out[s] = owners
    return out


def coordinator_port(ports: list[int]) -> int:
    coordinator = info("127.0.0.1", ports[0])["keycafe_coordinator"]
    for p in ports:
        if query("127.0.0.1", p, "CLUSTER", "MYID") in (coordinator, coordinator.encode()):
            return p
    raise RuntimeError("no node is the coordinator")


def wait_ring(ports: list[int], members: int, limit: float = 90) -> float:
    t0 = time.monotonic()
    while True:
        try:
            if ring_settled("127.0.0.1", ports, members):
                return time.monotonic() - t0
        except OSError:
            pass
        if time.monotonic() - t0 > limit:
            raise RuntimeError(f"no agreed ring of {members} within {limit}s")
        time.sleep(0.05)


def probe_resume(port: int, slot_key: str, killed_at: float, limit: float = 60) -> float:
    """Seconds from the kill until a write to ``slot_key`` is answered OK."""
    rc = RedisCluster(
        startup_nodes=[ClusterNode("127.0.0.1", port)], socket_timeout=1, socket_connect_timeout=0.5
    )
    try:
        while time.monotonic() - killed_at < limit:
            try:
                if rc.set(slot_key, "probe"):
                    return time.monotonic() - killed_at
            except (redis.RedisError, OSError, IndexError, KeyError):
                rc.close()
                rc = RedisCluster(
                    startup_nodes=[ClusterNode("127.0.0.1", port)],
                    socket_timeout=1,
                    socket_connect_timeout=0.5,
                )
            time.sleep(0.01)
    finally:
        rc.close()
    raise RuntimeError(f"writes to the dead node's slots did not resume within {limit}s")


def lost_writes(ports: list[int], writers: list[Writer]) -> list[str]:
    acked: dict[str, int] = {}
    for w in writers:
        with w.lock:
            acked.update(w.acked)
    rc = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in ports])
    try:
        keys = sorted(acked)
        lost = []
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            for key, value in zip(chunk, rc.mget_nonatomic(chunk), strict=True):
                if value is None or int(value) < acked[key]:
                    lost.append(key)
        return lost
    finally:
        rc.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--profile", default="local", choices=["local", "lan"])
    p.add_argument("--writers", type=int, default=3)
    p.add_argument("--seed", type=int, default=1, help="which node each trial kills")
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args()
    rng = random.Random(args.seed)
    procs: dict[int, subprocess.Popen[str]] = {}  # by client port
    cports: dict[int, int] = {}  # client port -> cluster port
    results: list[dict[str, Any]] = []
    stop = threading.Event()
    try:
        first, port, cport = start(args.profile, None)
        procs[port], cports[port] = first, cport
        for _ in range(args.nodes - 1):
            proc, port, c = start(args.profile, cport)
            procs[port], cports[port] = proc, c
        wait_ring(list(procs), args.nodes)
        writers = [Writer(i, list(procs), stop) for i in range(args.writers)]
        for w in writers:
            w.start()
        # The load is under way: every writer has had writes acknowledged.
        deadline = time.monotonic() + 30
        while not all(w.acked for w in writers):
            if time.monotonic() > deadline:
                raise RuntimeError("the writers had no write acknowledged within 30 s")
            time.sleep(0.01)
        for trial in range(1, args.trials + 1):
            ports = list(procs)
            victim = coordinator_port(ports) if trial % 4 == 0 else rng.choice(ports)
            owners = slot_owners(next(p for p in ports if p != victim))
            led = {s for s, o in owners.items() if o[0] == victim}
            replica_of = {s for s, o in owners.items() if victim in o[1:]}
            probe_key = next(
                k for i in range(100_000) if key_slot((k := f"probe:{i}").encode()) in led
            )
            survivors = [p for p in ports if p != victim]
            killed_at = time.monotonic()
            procs[victim].send_signal(signal.SIGKILL)
            procs.pop(victim).wait()
            resume = probe_resume(survivors[0], probe_key, killed_at)
            settled = wait_ring(survivors, args.nodes - 1)
            window_end = time.monotonic()
            waits, failed_elsewhere, writes_elsewhere = [], 0, 0
            for w in writers:
                with w.lock:
                    for t0, t1, slot, ok in w.log:
                        if t0 < killed_at or t0 > window_end:
                            continue
                        if slot in replica_of and ok:
                            waits.append(t1 - t0)
                        elif slot not in led and slot not in replica_of:
                            writes_elsewhere += 1
                            failed_elsewhere += not ok
            proc, port, cport = start(args.profile, cports[survivors[0]])
            procs[port], cports[port] = proc, cport
            for w in writers:
                w.ports = list(procs)
            wait_ring(list(procs), args.nodes)
            lost = lost_writes(list(procs), writers)
            acked = sum(len(w.acked) for w in writers)
            row = {
                "trial": trial,
                "victim_was_coordinator": trial % 4 == 0,
                "resume_s": round(resume, 3),
                "ring_settled_s": round(settled + resume, 3),
                "replica_wait_max_s": round(max(waits, default=0.0), 3),
                "failed_elsewhere": failed_elsewhere,
                "writes_elsewhere": writes_elsewhere,
                "keys_acked": acked,
                "lost": len(lost),
            }
            results.append(row)
            who = "the coordinator" if row["victim_was_coordinator"] else "a node"
            print(
                f"trial {trial:2d}: killed {who}; writes resumed after {resume:.2f}s, "
                f"ring settled after {row['ring_settled_s']:.2f}s; writes waiting on the "
                f"dead replica: max {row['replica_wait_max_s']:.2f}s; failed writes elsewhere "
                f"{failed_elsewhere}/{writes_elsewhere}; acknowledged keys {acked}, "
                f"lost {len(lost)}" + (f" e.g. {lost[:3]}" if lost else ""),
                flush=True,
            )
    finally:
        stop.set()
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
    if not results:
        raise SystemExit(1)
    resumes = sorted(r["resume_s"] for r in results)
    total_lost = sum(r["lost"] for r in results)
    p99 = resumes[min(len(resumes) - 1, int(0.99 * len(resumes)))]
    summary = {
        "nodes": args.nodes,
        "profile": args.profile,
        "trials": len(results),
        "lost": total_lost,
        "resume_p50_s": statistics.median(resumes),
        "resume_p99_s": p99,
        "resume_max_s": resumes[-1],
        "replica_wait_max_s": max(r["replica_wait_max_s"] for r in results),
        "failed_elsewhere": sum(r["failed_elsewhere"] for r in results),
        "writes_elsewhere": sum(r["writes_elsewhere"] for r in results),
    }
    print(json.dumps(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "trials": results}, f, indent=1)
    raise SystemExit(1 if total_lost else 0)


if __name__ == "__main__":
    main()
