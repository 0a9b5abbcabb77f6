"""Form a small cluster on real local processes again and again; time each.

    python -m sims.formation [--rounds 200] [--nodes 3] [--limit 15]

Each round starts one node, then the others at once through its seed (as
``keycafe launch`` does), and times from the first start until every node
routes by one ring of all of them with no change pending. A round that has not
settled within --limit seconds is a failure: it prints each node's ring and
membership and the run exits 1. Rare races in forming a cluster show up here
(one launch in ~200 once hung for good), not in a test run once.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import time

from keycafe.tools.launcher import ring_view
from sims.join import start, wait


def one_round(nodes: int, limit: float) -> float | None:
    """Seconds until the ring settled, or None (after printing why) if it did not."""
    procs: list[subprocess.Popen[str]] = []
    try:
        t0 = time.monotonic()
        first, port, cport = start("local", None)
        procs.append(first)
        ports = [port]
        for _ in range(nodes - 1):
            proc, port, _ = start("local", cport)
            procs.append(proc)
            ports.append(port)
        try:
            wait(ports, nodes, limit)
        except RuntimeError as exc:
            print(f"did not settle: {exc}")
            for port in ports:
                print(f"  {ring_view('127.0.0.1', port)}")
            return None
        return time.monotonic() - t0
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--limit", type=float, default=15.0, help="seconds a round may take")
    args = p.parse_args()
    times: list[float] = []
    failed = 0
    for _ in range(args.rounds):
        took = one_round(args.nodes, args.limit)
        if took is None:
            failed += 1
        else:
            times.append(took)
    if times:
        times.sort()
        print(
            f"{args.rounds} rounds of {args.nodes} nodes: settled in median "
            f"{statistics.median(times):.2f}s, p99 {times[int(0.99 * (len(times) - 1))]:.2f}s, "
            f"max {times[-1]:.2f}s; {failed} did not settle within {args.limit:.0f}s"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
