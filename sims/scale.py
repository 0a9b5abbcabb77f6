"""A cluster of real node processes on this machine: formation, idle cost, and kills.

    python -m sims.scale --nodes 100 [--kills 10] [--seed 1] [--profile lan]

Starts --nodes nodes on loopback (the first, then the others at once through
it, as ``keycafe launch`` does) with the LAN gossip profile and debug logs
written to one file per node, and times formation until every node routes by
one ring of all of them. Measures each node's CPU use while idle. Then kills
--kills nodes one at a time (SIGKILL, victims drawn with --seed) and, for
each, waits until every live node has logged the victim's death and routes by
a ring without it; per kill it reports:

- detection: seconds from the kill until the first, the median and the last
  live member logged the victim ``failed`` (the last is "all members"), and
  the spread from the first to the last;
- settled: seconds from the kill until every live node routes by the same ring
  of the live nodes with no change pending;
- suspicions of live members and false deaths (``suspected`` and ``failed``
  events logged about members that were not killed) since the previous kill;
- the loop: the longest task step of any node and the median node's in the
  last 10 s when the ring settled (``keycafe_loop_recent_longest_step_ms``),
  and the steps over 20 ms all nodes took during the kill.

Prints a table and a summary. Every wait is bounded (--limit); every process
started is killed on exit, error or Ctrl-C. Node logs stay in a temporary
directory (kept with --keep-logs).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from keycafe.tools.status import QUERY_ERRORS, info

HOST = "127.0.0.1"
TICK = os.sysconf("SC_CLK_TCK")
SERVING = re.compile(r"node ([0-9a-f]{40}) serving RESP on \S+:(\d+), gossip on \S+:(\d+)")
# "2026-11-29 18:02:11,416 DEBUG   keycafe.gossip: member 99da16a22430 (127.0.0.1:40001) suspected"
EVENT = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+\s+keycafe\.gossip: member ([0-9a-f]{12}) "
    r"\(\S+\) (suspected|failed)$"
)


class Node:
    """One node process and its log file, read as it grows."""

    def __init__(self, index: int, log_dir: Path, profile: str, seed: int | None) -> None:
        self.index = index
        self.log_path = log_dir / f"node{index:03d}.log"
        self.log = self.log_path.open("wb")
        args = [sys.executable, "-m", "keycafe", "--bind", HOST, "--port", "0"]
        args += ["--gossip-profile", profile, "--log-level", "debug"]
        if seed is not None:
            args += ["--seed", f"{HOST}:{seed}"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log)
        self.node_id = ""
        self.port = self.cluster_port = 0
        self._offset = 0
        self._partial = b""

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def new_lines(self) -> list[str]:
        """Log lines written since the last call."""
        with self.log_path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        data, self._partial = self._partial + data, b""
        lines = data.split(b"\n")
        self._partial = lines.pop()
        return [line.decode(errors="replace") for line in lines]

    def serving(self) -> bool:
        """Whether the node has said where it serves (and learn where)."""
        if not self.port:
            for line in self.new_lines():
                if m := SERVING.search(line):
                    self.node_id, self.port, self.cluster_port = m[1], int(m[2]), int(m[3])
        return bool(self.port)

    def cpu(self) -> float:
        """User + system CPU seconds so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def figures(self) -> dict[str, str]:
        try:
            return info(HOST, self.port, timeout=2.0)
        except QUERY_ERRORS:
            return {}


def events(line: str) -> tuple[float, str, str] | None:
    """(unix time, member id prefix, "suspected" | "failed") of a gossip event line."""
    m = EVENT.match(line)
    if m is None:
        return None
    stamp = datetime.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S").timestamp() + int(m[2]) / 1000
    return stamp, m[3], m[4]


def poll_until(what: str, done: Callable[[], bool], limit: float, every: float = 0.2) -> float:
    """Call ``done()`` until true; seconds it took. RuntimeError after ``limit``."""
    t0 = time.monotonic()
    while not done():
        if time.monotonic() - t0 > limit:
            raise RuntimeError(f"{what}: not within {limit:.0f}s")
        time.sleep(every)
    return time.monotonic() - t0


def settled(nodes: list[Node]) -> bool:
    """Every live node routes by one ring of the live nodes, nothing pending."""
    keys = ("keycafe_ring_epoch", "keycafe_ring_members", "keycafe_ring_pending")
    seen = set()
    for node in nodes:
        x = node.figures()
        seen.add(tuple(x.get(k) for k in keys))
        if len(seen) > 1:  # stop at the first that differs: polled often
            return False
    return next(iter(seen))[1:] == (str(len(nodes)), "0")


@contextlib.contextmanager
def cluster(size: int, profile: str, log_dir: Path, wave: int) -> Iterator[list[Node]]:
    """Start ``size`` nodes, ``wave`` at a time (each wave serving before the
    next starts); kill every one of them on the way out."""
    nodes: list[Node] = []

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        nodes.append(Node(0, log_dir, profile, None))
        poll_until("the first node", nodes[0].serving, 30, 0.05)
        seed = nodes[0].cluster_port
        for start in range(1, size, wave):
            batch = [Node(i, log_dir, profile, seed) for i in range(start, min(size, start + wave))]
            nodes += batch
            if start + wave < size:
                poll_until("a wave serving", lambda b=batch: all(n.serving() for n in b), 120, 0.1)
        yield nodes
    finally:
        for node in nodes:
            if node.alive:
                node.proc.kill()
        for node in nodes:
            node.proc.wait()
            node.log.close()
        signal.signal(signal.SIGTERM, previous)


def idle_cpu(nodes: list[Node], seconds: float) -> list[float]:
    """Each node's CPU use (fraction of a core) over ``seconds``."""
    before = [n.cpu() for n in nodes]
    time.sleep(seconds)
    return [(n.cpu() - b) / seconds for n, b in zip(nodes, before, strict=True)]


def kill_one(
    victim: Node, live: list[Node], limit: float, ids: dict[str, Node]
) -> dict[str, float | int]:
    """Kill ``victim``, wait for its detection and the ring without it; the figures."""
    over_before = {n.index: int(n.figures().get("keycafe_loop_steps_over_20ms", 0)) for n in live}
    # Events since the previous kill (suspicions of live members included).
    suspected = failed = 0
    for node in live:
        for line in node.new_lines():
            if (e := events(line)) is not None and e[1] in ids:
                suspected += e[2] == "suspected"
                failed += e[2] == "failed"
    victim.proc.send_signal(signal.SIGKILL)
    killed = time.time()
    victim.proc.wait()
    short = victim.node_id[:12]
    learned: dict[int, float] = {}

    def everyone_knows() -> bool:
        nonlocal suspected, failed
        for node in live:
            for line in node.new_lines():
                e = events(line)
                if e is None:
                    continue
                stamp, who, kind = e
                if who == short:
                    if kind == "failed" and node.index not in learned:
                        learned[node.index] = stamp - killed
                elif who in ids:
                    suspected += kind == "suspected"
                    failed += kind == "failed"
        return len(learned) == len(live)

    poll_until(f"detection of node {victim.index}", everyone_knows, limit, 0.2)
    poll_until(f"a ring without node {victim.index}", lambda: settled(live), limit, 0.2)
    settled_at = time.time() - killed
    everyone_knows()  # the events logged while the ring settled
    figures = [n.figures() for n in live]
    recent = sorted(int(x.get("keycafe_loop_recent_longest_step_ms", 0)) for x in figures)
    over = sum(
        int(x.get("keycafe_loop_steps_over_20ms", 0)) - over_before[n.index]
        for n, x in zip(live, figures, strict=True)
    )
    times = sorted(learned.values())
    return {
        "victim": victim.index,
        "first": times[0],
        "median": statistics.median(times),
        "all": times[-1],
        "spread": times[-1] - times[0],
        "settled": settled_at,
        "suspected": suspected,
        "false_deaths": failed,
        "loop_max_ms": recent[-1],
        "loop_median_ms": recent[len(recent) // 2],
        "steps_over_20ms": over,
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=20)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--seed", type=int, default=1, help="which nodes are killed (default 1)")
    p.add_argument("--profile", default="lan", choices=["lan", "local"])
    p.add_argument("--limit", type=float, default=120.0, help="seconds any one wait may take")
    p.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measured")
    p.add_argument("--keep-logs", action="store_true")
    p.add_argument(
        "--wave", type=int, default=0, help="start nodes this many at a time (default: all at once)"
    )
    args = p.parse_args(argv)
    if args.kills >= args.nodes - 1:
        p.error("--kills must leave at least two nodes")
    log_dir = Path(tempfile.mkdtemp(prefix="keycafe-scale-"))
    load = os.getloadavg()
    print(f"{args.nodes} nodes, profile {args.profile}, load average before {load[0]:.2f}")
    try:
        with cluster(args.nodes, args.profile, log_dir, args.wave or args.nodes) as nodes:
            t0 = time.monotonic()
            poll_until("every node serving", lambda: all(n.serving() for n in nodes), args.limit)
            started = time.monotonic() - t0
            formed = started + poll_until("formation", lambda: settled(nodes), args.limit, 0.5)
            print(
                f"formation: every node serving after {started:.1f}s, one ring after {formed:.1f}s"
            )
            cpu = idle_cpu(nodes, args.idle)
            print(
                f"idle CPU per node over {args.idle:.0f}s: median"
                f" {100 * statistics.median(cpu):.1f}%, max {100 * max(cpu):.1f}% of a core"
                f" (all nodes: {100 * sum(cpu):.0f}%)"
            )
            ids = {n.node_id[:12]: n for n in nodes}
            for n in nodes:
                n.new_lines()  # formation's events are not the kills'
            live = list(nodes)
            victims = random.Random(args.seed).sample(nodes, args.kills)
            rows = []
            header = (
                f"{'kill':>4} {'node':>4} {'first':>6} {'median':>6} {'all':>6} {'spread':>6} "
                f"{'settled':>7} {'susp':>5} {'false':>5} {'loop max':>8} {'loop med':>8} "
                f"{'>20ms':>6}"
            )
            print("\nper kill: seconds from the kill; loop in ms\n" + header, flush=True)
            for k, victim in enumerate(victims, 1):
                live.remove(victim)
                ids.pop(victim.node_id[:12])
                row = kill_one(victim, live, args.limit, ids)
                rows.append(row)
                print(
                    f"{k:>4} {row['victim']:>4} {row['first']:>6.2f} {row['median']:>6.2f} "
                    f"{row['all']:>6.2f} {row['spread']:>6.2f} {row['settled']:>7.2f} "
                    f"{row['suspected']:>5} {row['false_deaths']:>5} {row['loop_max_ms']:>8} "
                    f"{row['loop_median_ms']:>8} {row['steps_over_20ms']:>6}",
                    flush=True,
                )
            alls = [float(r["all"]) for r in rows]
            spreads = [float(r["spread"]) for r in rows]
            settles = [float(r["settled"]) for r in rows]
            print(
                f"\ndetection by all members over {len(rows)} kills: p50 {pct(alls, 0.5):.2f}s, "
                f"p99 {pct(alls, 0.99):.2f}s, max {max(alls):.2f}s; spread first-to-last "
                f"p50 {pct(spreads, 0.5):.2f}s, max {max(spreads):.2f}s"
                f"\nring settled without the victim: p50 {pct(settles, 0.5):.2f}s, "
                f"max {max(settles):.2f}s"
                f"\nsuspicions of live members {sum(int(r['suspected']) for r in rows)}, "
                f"false deaths {sum(int(r['false_deaths']) for r in rows)}; longest loop step "
                f"during a ring change {max(int(r['loop_max_ms']) for r in rows)} ms"
                f"\nload average after {os.getloadavg()[0]:.2f}"
            )
        return 0
    except (RuntimeError, KeyboardInterrupt) as exc:
        print(f"sims.scale stopped: {exc or 'interrupted'} (logs in {log_dir})", file=sys.stderr)
        args.keep_logs = True
        return 1
    finally:
        if args.keep_logs:
            print(f"node logs: {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
