"""``python -m keycafe launch``: N local nodes in one go (like Redis's create-cluster).

Node i listens on ``port + i`` for clients and ``cluster_port + i`` for gossip;
the first starts the cluster and the others join through it. The launcher
waits until every node routes by the same ring, prints the status view, and
keeps the nodes running until Ctrl-C (or SIGTERM), which stops them all.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from keycafe.tools import status


def node_args(i: int, args: argparse.Namespace) -> list[str]:
    out = [
        sys.executable,
        "-m",
        "keycafe",
        "--bind",
        args.bind,
        "--port",
        str(args.port + i),
        "--cluster-port",
        str(args.cluster_port + i),
        "--gossip-profile",
        args.gossip_profile,
        "--log-level",
        args.log_level,
    ]
    if i:
        out += ["--seed", f"{args.bind}:{args.cluster_port}"]
    return out


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop every node now: the whole cluster goes, so no hand-over is wanted
    (a node's second SIGTERM skips it)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _answers(host: str, port: int) -> bool:
    try:
        return status.query(host, port, "PING", timeout=1.0) == "PONG"
    except status.QUERY_ERRORS:
        return False


def ring_view(host: str, port: int) -> str:
    """One node's ring and membership in a line, for a launch that did not settle."""
    try:
        ci = status.info(host, port, timeout=1.0)
    except status.QUERY_ERRORS as exc:
        return f"{host}:{port}: no answer ({exc})"
    fields = (
        "cluster_state",
        "keycafe_ring_epoch",
        "keycafe_ring_members",
        "keycafe_ring_pending",
        "keycafe_coordinator",
        "keycafe_gossip_members_alive",
        "keycafe_gossip_members_suspect",
        "keycafe_gossip_members_dead",
    )
    shown = " ".join(f"{f.removeprefix('keycafe_')}={ci.get(f)}" for f in fields)
    return f"{host}:{port}: {shown}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="keycafe launch", description=__doc__)
    p.add_argument("-n", "--nodes", type=int, default=3, help="how many nodes (default 3)")
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("-p", "--port", type=int, default=9814, help="first client port")
    p.add_argument("--cluster-port", type=int, help="first cluster port (default: port + 10000)")
    p.add_argument("--gossip-profile", default="local", choices=["lan", "local"])
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for the cluster to form"
    )
    args = p.parse_args(argv)
    if args.cluster_port is None:
        args.cluster_port = args.port + 10000
    if not 1 <= args.nodes <= 100:
        p.error("--nodes must be between 1 and 100")
    ports = [args.port + i for i in range(args.nodes)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        deadline = time.monotonic() + args.wait
        procs.append(subprocess.Popen(node_args(0, args)))
        # The others join through the first: start them once it answers
        # (they would retry their seed anyway, but only after a backoff).
        while not _answers(args.bind, ports[0]) and procs[0].poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for i in range(1, args.nodes):
            procs.append(subprocess.Popen(node_args(i, args)))
        while not status.ring_settled(args.bind, ports, args.nodes):
            if any(proc.poll() is not None for proc in procs):
                print("keycafe launch: a node exited; see its log above", file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                print(f"keycafe launch: no agreed ring after {args.wait:.0f}s", file=sys.stderr)
                for port in ports:
                    print(f"  {ring_view(args.bind, port)}", file=sys.stderr)
                return 1
            time.sleep(0.1)
        status.main(["-H", args.bind, "-p", str(ports[0])])
        print(
            f"\n{args.nodes} nodes up. Try: redis-cli -c -p {ports[0]} set hello world"
            f"\nStatus: python -m keycafe status -p {ports[0]}    Stop: Ctrl-C",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            signal.signal(signal.SIGTERM, _interrupt)
            while all(proc.poll() is None for proc in procs):
                time.sleep(0.5)
            print("keycafe launch: a node exited; stopping the others", file=sys.stderr)
            return 1
        return 0
    finally:
        stop(procs)
