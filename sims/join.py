"""Time a join and a graceful leave on real local processes, and check no key is lost.

    python -m sims.join [--keys 10000] [--profile local|lan]

Starts 3 nodes on free loopback ports, writes --keys keys with keycafe's own
client, starts a 4th node and times it from process start until every node
routes by the ring of 4, then SIGTERMs it and times the leave until the 3 others
route by the ring of 3 again; after each step reads every key back.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable

import keycafe
from keycafe.tools.status import info, ring_settled

SERVING = re.compile(r"serving RESP on \S+:(\d+), gossip on \S+:(\d+)")


def _discard(lines: Iterable[str]) -> None:
    for _ in lines:
        pass


def start(profile: str, seed: int | None) -> tuple[subprocess.Popen[str], int, int]:
    args = [sys.executable, "-m", "keycafe", "--port", "0", "--gossip-profile", profile]
    if seed is not None:
        args += ["--seed", f"127.0.0.1:{seed}"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        m = SERVING.search(line)
        if m:
            # Keep reading its log, or a full pipe would stall the node.
            threading.Thread(target=_discard, args=(proc.stderr,), daemon=True).start()
            return proc, int(m.group(1)), int(m.group(2))
    raise RuntimeError("the node did not start")


def wait(ports: list[int], members: int, limit: float = 60) -> float:
    t0 = time.monotonic()
    while not ring_settled("127.0.0.1", ports, members):
        if time.monotonic() - t0 > limit:
            raise RuntimeError(f"no agreed ring of {members} within {limit}s")
        time.sleep(0.005)
    return time.monotonic() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--profile", default="local", choices=["local", "lan"])
    args = p.parse_args()
    procs = []
    try:
        first, port, cport = start(args.profile, None)
        procs.append(first)
        ports = [port]
        for _ in range(2):
            proc, port, _ = start(args.profile, cport)
            procs.append(proc)
            ports.append(port)
        wait(ports, 3)
        keys = [f"key:{i}" for i in range(args.keys)]
        with keycafe.Cluster(f"127.0.0.1:{ports[0]}") as kc:
            for i in range(0, len(keys), 1000):
                kc.mset({k: k for k in keys[i : i + 1000]})
            t0 = time.monotonic()
            fourth, port4, _ = start(args.profile, cport)
            procs.append(fourth)
            joined = time.monotonic() - t0 + wait([*ports, port4], 4)
            got = int(info("127.0.0.1", port4)["keycafe_slots_keys_received"])
            share = next(n.slots for n in kc.nodes() if n.port == port4)
            lost = sum(v is None for v in kc.mget(keys))
            print(
                f"join:  {joined:.2f}s from process start to a ring of 4 on every node; "
                f"the new node received {got} keys and owns {share} slots "
                f"({100 * share / 16384:.1f}%); keys missing afterwards: {lost}"
            )
            t0 = time.monotonic()
            fourth.send_signal(signal.SIGTERM)
            code = fourth.wait(timeout=120)
            left = time.monotonic() - t0
            wait(ports, 3)
            lost = sum(v is None for v in kc.mget(keys))
            print(
                f"leave: {left:.2f}s from SIGTERM to exit (status {code}), "
                f"{time.monotonic() - t0:.2f}s until every node routes by the ring of 3; "
                f"keys missing afterwards: {lost}"
            )
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                time.sleep(0.1)
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
