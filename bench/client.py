"""keycafe's Python client vs redis-py's RedisCluster, against one 3-node keycafe cluster.

    python bench/client.py [--reps 3] [--quick]

Starts a 3-node keycafe cluster on loopback, then times both clients in the same
run, taking turns: single calls (SET, then GET, one at a time from one thread)
and batches of 100 keys (MSET, MGET, and a pipeline of 100 SETs). Reports
operations (keys) per second, medians over --reps runs, and the ratio; writes
the table into docs/benchmarks.md between the client-bench markers. Not part of
the test suite: timings never gate tests.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from redis.cluster import RedisCluster

import keycafe
from keycafe.tools.launcher import stop

sys.path.insert(0, str(Path(__file__).resolve().parent))
import server as bench  # the sibling script's helpers (after the path insert)

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- client-bench -->", "<!-- /client-bench -->"
BATCH = 100


@contextmanager
def keycafe_cluster() -> Iterator[list[int]]:
    ports = [bench.free_port_pair() for _ in range(3)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        bench.start_keycafe(ports, procs)
        bench.wait_keycafe_ring(ports)
        yield ports
    finally:
        stop(procs)


def workloads(n: int) -> dict[str, Callable[[object], int]]:
    """Name -> function(client) running the load and returning how many keys it did."""
    keys = [f"bench:{i}" for i in range(n)]
    batches = [keys[i : i + BATCH] for i in range(0, n, BATCH)]

    def single_set(c: object) -> int:
        for k in keys:
            c.set(k, "v" * 32)  # type: ignore[attr-defined]
        return n

    def single_get(c: object) -> int:
        for k in keys:
            c.get(k)  # type: ignore[attr-defined]
        return n

    def mset(c: object) -> int:
        for b in batches:
            mapping = dict.fromkeys(b, "w" * 32)
            if isinstance(c, RedisCluster):
                c.mset_nonatomic(mapping)
            else:
                c.mset(mapping)  # type: ignore[attr-defined]
        return n

    def mget(c: object) -> int:
        for b in batches:
            if isinstance(c, RedisCluster):
                c.mget_nonatomic(b)
            else:
                c.mget(b)  # type: ignore[attr-defined]
        return n

    def pipeline(c: object) -> int:
        for b in batches:
            pipe = c.pipeline()  # type: ignore[attr-defined]
            for k in b:
                pipe.set(k, "p" * 32)
            pipe.execute()
        return n

    return {
        "single SET": single_set,
        "single GET": single_get,
        f"MSET of {BATCH}": mset,
        f"MGET of {BATCH}": mget,
        f"pipeline of {BATCH} SETs": pipeline,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a fifth of the keys")
    parser.add_argument("--output", type=Path, default=ROOT / "docs/benchmarks.md")
    args = parser.parse_args()
    n = 4000 if args.quick else 20000
    rows = []
    with keycafe_cluster() as ports:
        ours = keycafe.Cluster(f"127.0.0.1:{ports[0]}")
        theirs = RedisCluster(host="127.0.0.1", port=ports[0])
        clients = {"keycafe": ours, "redis-py": theirs}
        for name, load in workloads(n).items():
            runs: dict[str, list[float]] = {"keycafe": [], "redis-py": []}
            for rep in range(args.reps):
                order = ["keycafe", "redis-py"] if rep % 2 == 0 else ["redis-py", "keycafe"]
                for who in order:
                    start = time.perf_counter()
                    done = load(clients[who])
                    runs[who].append(done / (time.perf_counter() - start))
            ops = {who: statistics.median(r) for who, r in runs.items()}
            ratio = ops["keycafe"] / ops["redis-py"]
            rows.append((name, ops["redis-py"], ops["keycafe"], ratio))
            print(
                f"{name:24} redis-py {ops['redis-py']:>10,.0f}/s  "
                f"keycafe {ops['keycafe']:>10,.0f}/s  x{ratio:.2f}",
                flush=True,
            )
        ours.close()
        theirs.close()
    cmd = "python bench/client.py" + (" --quick" if args.quick else "")
    table = [
        BEGIN,
        "## keycafe's Python client vs redis-py's RedisCluster",
        "",
        f"Measured with `{cmd}` on {bench.machine()}: both clients against the same "
        f"3-node keycafe cluster on loopback, {n:,} keys per run, one thread, medians of "
        f"{args.reps} runs taking turns. Batches use redis-py's `mset_nonatomic`/"
        "`mget_nonatomic` and its cluster pipeline. Figures are keys per second.",
        "",
        "| load | redis-py RedisCluster | keycafe.Cluster | keycafe / redis-py |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {a:,.0f} | {b:,.0f} | **{r:.2f}×** |" for name, a, b, r in rows),
        END,
    ]
    text = args.output.read_text() if args.output.exists() else ""
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + "\n".join(table) + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(table) + "\n"
    args.output.write_text(text)
    print("\n".join(table))


if __name__ == "__main__":
    main()
