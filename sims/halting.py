"""When a minority side stops serving, against when the majority fails over.

    python -m sims.halting [--seeds 30] [--nodes 5] [--cut 2]

Whole nodes in the cluster simulator (LAN gossip timers, two copies):
cuts ``--cut`` nodes off from the rest and measures, per seed, the virtual
seconds until every cut-off node serves no key (it sees no majority alive)
and until the majority side publishes a ring marking them down (failover).
Prints the medians and maxima, and in how many runs the minority stopped
first (docs/consistency.md, guarantee 4).
"""

from __future__ import annotations

import argparse
import statistics

from keycafe.cluster.ring import RingConfig
from keycafe.cluster.simulator import ClusterSimulator


def one(seed: int, nodes: int, cut: int) -> tuple[float, float]:
    sim = ClusterSimulator(seed=seed, ring=RingConfig(vnodes=64, replicas=2))
    first = sim.add_node(0)
    for i in range(1, nodes):
        sim.add_node(i, seed=first)
    if not sim.run_until_true(sim.settled, 60):
        raise RuntimeError(f"seed {seed}: the cluster did not form")
    names = sorted(sim.members)
    minority, majority = names[:cut], names[cut:]
    ring = sim.members[majority[0]].cluster.ring
    assert ring is not None
    version, start = ring.version, sim.now
    sim.partition(minority, majority)
    halted: dict[str, float] = {}
    failover: list[float] = []

    def watch() -> bool:
        for n in minority:
            if sim.members[n].state.routing.halted:
                halted.setdefault(n, sim.now - start)
        r = sim.members[majority[0]].cluster.ring
        if not failover and r is not None and r.version > version and r.down:
            failover.append(sim.now - start)
        return len(halted) == len(minority) and bool(failover)

    if not sim.run_until_true(watch, 120, step=0.01):
        raise RuntimeError(f"seed {seed}: no halt or no failover within 120 s")
    return max(halted.values()), failover[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=30)
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--cut", type=int, default=2, help="nodes on the minority side")
    args = p.parse_args()
    runs = [one(seed, args.nodes, args.cut) for seed in range(1, args.seeds + 1)]
    halts, fails = [h for h, _ in runs], [f for _, f in runs]
    first = sum(h < f for h, f in runs)
    print(
        f"minority stops serving after {statistics.median(halts):.2f} s (p50), "
        f"{max(halts):.2f} s (max); majority fails over after "
        f"{statistics.median(fails):.2f} s (p50), {max(fails):.2f} s (max); "
        f"the minority stopped first in {first} of {len(runs)} runs"
    )


if __name__ == "__main__":
    main()
