"""Whole nodes in virtual time: formation, joins, a leave and a crash under writes.

    python -m sims.cluster --nodes 8 --seed 7

Runs ``--nodes`` whole nodes (gossip, ring, coordinator, hand-off, store,
command layer) in the cluster simulator (keycafe/cluster/simulator.py): all
but two form a cluster, the last two join one after the other, one member
leaves gracefully and another crashes, while a client writes throughout.
Prints a timeline (one line per virtual second, and each change as it
happens) and a verdict:

- every write acknowledged to a slot no crashed node ever owned is readable,
  with its value or a later write's, once the cluster settles;
- every node that adopted a ring epoch saw the same member sets for it, so each
  epoch has exactly one primary per slot;
- the cluster settles (one ring, no change pending, members = live nodes,
  nothing moving) within ``--settle-limit`` virtual seconds of the last change.

The same seed gives the same run (the trace digest is printed). Exit status
1 if the verdict fails.
"""

from __future__ import annotations

import argparse
import sys
import time

from keycafe.cluster.simulator import ClusterSimulator, Member, SimClient, check, run_writer


def _epochs(sim: ClusterSimulator) -> str:
    live = sim.live()
    epochs = sorted({m.cluster.ring.epoch for m in live if m.cluster.ring is not None})
    if not epochs:
        return "-"
    return str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}..{epochs[-1]}"


def _coordinator(sim: ClusterSimulator) -> str:
    votes = {
        (m.cluster.assessment.coordinator, m.cluster.assessment.term)
        for m in sim.live()
        if m.cluster.assessment is not None and m.cluster.assessment.coordinator
    }
    return ", ".join(f"{c} (term {t})" for c, t in sorted(votes, key=str)) or "-"


def _moving(sim: ClusterSimulator) -> int:
    return sum(sum(m.cluster.routing.moving) for m in sim.live() if m.cluster.routing is not None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=8, help="nodes in all (at least 4)")
    parser.add_argument("--seed", type=int, default=7, help="the run's seed (default 7)")
    parser.add_argument(
        "--settle-limit",
        type=float,
        default=30.0,
        help="virtual seconds the cluster may take to settle after the last change (30)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="keep writing until this virtual second once settled (default: stop at once)",
    )
    parser.add_argument("--quiet", action="store_true", help="print the verdict only")
    args = parser.parse_args(argv)
    if args.nodes < 4:
        parser.error("--nodes must be at least 4")
    started = time.process_time()
    sim = ClusterSimulator(seed=args.seed)
    client = SimClient(sim)
    shown = 0
    second = -1

    def show_until(t: float) -> None:
        nonlocal shown, second
        while sim.now < t:
            sim.run_until(min(t, sim.now + 0.1))
            for at, text in sim.log[shown:]:
                if not args.quiet:
                    print(f"{at:8.3f}  {text}")
            shown = len(sim.log)
            if int(sim.now) != second:
                second = int(sim.now)
                ok, failed = client.per_second.get(second - 1, [0, 0])
                if not args.quiet:
                    print(
                        f"{second:6d} s  live {len(sim.live()):2d}  epoch {_epochs(sim):>7}"
                        f"  moving {_moving(sim):5d}  ops ok/failed {ok:4d}/{failed:<3d}"
                        f"  coordinator {_coordinator(sim)}"
                    )

    founders = args.nodes - 2
    first: Member = sim.add_node(0)
    for i in range(1, founders):
        sim.add_node(i, seed=first)
    if not sim.run_until_true(sim.settled, 30.0):
        print("the founders never formed a ring", file=sys.stderr)
        return 1
    formed = sim.now
    run_writer(sim, client, until=float("inf"))
    show_until(sim.now + 3)
    sim.add_node(founders, seed=first)
    show_until(sim.now + 8)
    sim.add_node(founders + 1, seed=first)
    show_until(sim.now + 8)
    names = sorted(sim.members)
    sim.leave(names[2])
    show_until(sim.now + 8)
    sim.crash(names[3])
    last_change = sim.now
    end = last_change + args.settle_limit
    while sim.now < end and not sim.settled():
        show_until(sim.now + 0.1)
    settled_at = sim.now if sim.settled() else None
    show_until(max(sim.now + 2, args.duration))
    issued = len(client.writes)
    verdict = check(sim, client, last_change=last_change, settle_limit=1.0)
    cpu = time.process_time() - started
    settled_after = None if settled_at is None else settled_at - last_change
    print()
    print(f"formed in {formed:.2f} s; {issued} writes issued")
    print(
        f"writes acknowledged {verdict.writes_acked}, failed {verdict.writes_failed},"
        f" lost {len(verdict.lost)}, excused by the crash {verdict.excused}"
    )
    print(f"ring epochs seen {len(sim.rings)}, conflicting epochs {len(verdict.ring_conflicts)}")
    print(
        "settled "
        + (f"{settled_after:.2f} s after the last change" if settled_after is not None else "never")
        + f" (limit {args.settle_limit:.0f} s)"
    )
    print(f"frames {sim.frames_sent} ({sim.frames_lost} lost with broken links)")
    print(f"{sim.now:.1f} virtual s in {cpu:.1f} s of CPU; trace {sim.trace_digest[:16]}")
    for line in verdict.lost[:10] + verdict.ring_conflicts[:10]:
        print("  " + line)
    # Settled within the limit after the last change, as measured above (the
    # checker's own wait starts later).
    good = verdict.ok and settled_after is not None
    print("verdict:", "PASS" if good else "FAIL")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
