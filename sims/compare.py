"""One scenario in both forms, side by side: the simulator and real processes.

    python -m sims.compare SCENARIO [--runs 20] [--first 1] [--nodes 5]
                           [--duration 40] [--profile local|lan] [--factor 2]
                           [--json FILE]

Runs ``SCENARIO`` for seeds ``first``..``first + runs - 1`` in virtual time
(``sims.partition``) and on a real network of namespaces (``sims.netlab``,
root only), with the same gossip timers, node count, workload and fault
window, and prints a table with both: verdicts, operations, the checker's
classes, when the other side first wrote a slot the cut side led (against
the detection bound), and when the cut side last answered (against its
lease bound). The scenarios are those both forms define alike (``COMMON``).

The two forms *agree* when every run of each has the same verdict and each
timing's medians are within ``--factor`` of each other (a timing under
``FLOOR`` seconds in both counts as equal: both are "at once"). Exit status
0 if they agree, 1 if not, 2 if the real form cannot run here.

What differs, and why the factor is not 1: the simulator's links take
0.5 ms and its nodes take no CPU time, while real processes share this
machine's cores with their clients and a monitor; the cut side's last
answer counts writes only in the simulator, any operation on real
processes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import attrs

from sims import netlab, partition

# Scenarios the two forms define the same way (both cut the two
# smallest-named nodes off, or the primary of the most keys written so far,
# or stop one node picked by the seed for the whole fault window).
COMMON: Final = ("halves", "isolate-primary", "pause")
FLOOR: Final = 0.25  # seconds: timings both under this are equal ("at once")


@attrs.frozen
class Side:
    """One form's runs, reduced to what the table shows."""

    runs: int
    failed: list[int]  # seeds whose verdict failed
    acked: list[int]
    lost: int
    stale: int
    resurrected: int
    resumed: list[float]
    never: int  # runs in which the other side did not write the cut side's slots
    stopped: list[float]
    detection: float
    lease: float


def simulated(scenario: str, seeds: range, *, nodes: int, duration: float, profile: str) -> Side:
    reports = [
        partition.run(
            scenario,
            nodes=nodes,
            seed=s,
            duration=duration,
            profile=profile,
            out=lambda _: None,
        )
        for s in seeds
    ]
    return Side(
        runs=len(reports),
        failed=[r.seed for r in reports if not r.ok],
        acked=[r.acked for r in reports],
        lost=sum(len(r.verdict.lost) for r in reports),
        stale=sum(len(r.verdict.stale_reads) for r in reports),
        resurrected=sum(len(r.verdict.resurrected) for r in reports),
        resumed=[r.majority_resumed for r in reports if r.majority_resumed is not None],
        never=sum(1 for r in reports if r.majority_resumed is None),
        stopped=[r.minority_stopped for r in reports if r.minority_stopped is not None],
        detection=reports[0].detection_bound,
        lease=reports[0].lease_bound,
    )


def real(
    scenario: str,
    seeds: range,
    *,
    nodes: int,
    duration: float,
    profile: str,
    out: Callable[[str], None],
) -> Side:
    results = []
    for k, s in enumerate(seeds):
        plan = netlab.Plan(
            scenario=scenario, nodes=nodes, seed=s, duration=duration, profile=profile
        )
        res = netlab.run(plan, index=k, out=lambda _: None)
        out(f"  real seed {s}: {'ok' if res.verdict.ok else 'FAILED'}")
        results.append(res)
    return Side(
        runs=len(results),
        failed=[x.seed for x in results if not x.verdict.ok],
        acked=[x.acked for x in results],
        lost=sum(1 for op in (o for x in results for o in x.verdict.lost) if op.kind == "write"),
        stale=sum(len(x.verdict.stale_reads) for x in results),
        resurrected=sum(len(x.verdict.resurrected) for x in results),
        resumed=[x.resumed for x in results if x.resumed is not None],
        never=sum(1 for x in results if x.resumed is None),
        stopped=[x.stopped for x in results if x.stopped is not None],
        detection=results[0].detection,
        lease=results[0].lease,
    )


def _spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} / {max(xs):.2f} s" if xs else "-"


def agree(a: list[float], b: list[float], factor: float) -> bool | None:
    """Medians within ``factor`` of each other (None: one has no runs)."""
    if not a or not b:
        return None if (a or b) else True
    x, y = statistics.median(a), statistics.median(b)
    if x < FLOOR and y < FLOOR:
        return True
    low, high = sorted((max(x, 1e-9), max(y, 1e-9)))
    return high / low <= factor


def table(sim: Side, lab: Side, factor: float) -> tuple[list[str], bool]:
    """The side-by-side table, and whether the two forms agree."""
    verdicts = not sim.failed and not lab.failed
    resumed = agree(sim.resumed, lab.resumed, factor)
    stopped = agree(sim.stopped, lab.stopped, factor)
    rows = [
        ("runs", str(sim.runs), str(lab.runs), ""),
        (
            "verdicts failed",
            f"{len(sim.failed)} {sim.failed or ''}",
            f"{len(lab.failed)} {lab.failed or ''}",
            "same" if verdicts else "DIFFER" if bool(sim.failed) != bool(lab.failed) else "",
        ),
        (
            "writes acknowledged per run (mean)",
            f"{statistics.mean(sim.acked):,.0f}",
            f"{statistics.mean(lab.acked):,.0f}",
            "",
        ),
        ("writes lost", str(sim.lost), str(lab.lost), ""),
        ("stale reads", str(sim.stale), str(lab.stale), ""),
        ("deleted keys back", str(sim.resurrected), str(lab.resurrected), ""),
        (
            f"other side writes the cut side's slots (p50 / max; bound {sim.detection:.1f} s)",
            _spread(sim.resumed) + (f", never in {sim.never}" if sim.never else ""),
            _spread(lab.resumed) + (f", never in {lab.never}" if lab.never else ""),
            {True: "agree", False: "DIFFER", None: "-"}[resumed],
        ),
        (
            f"cut side's last answer (p50 / max; bound {sim.lease:.2f} s)",
            _spread(sim.stopped),
            _spread(lab.stopped),
            {True: "agree", False: "DIFFER", None: "-"}[stopped],
        ),
    ]
    lines = [
        "| | simulator | real processes | |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
    ]
    ok = bool(sim.failed) == bool(lab.failed) and resumed is not False and stopped is not False
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=COMMON)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--first", type=int, default=1, help="the first seed")
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--duration", type=float, default=40.0)
    parser.add_argument("--profile", choices=["local", "lan"], default="local")
    parser.add_argument("--factor", type=float, default=2.0, help="timings agree within this")
    parser.add_argument("--json", type=Path, help="write both sides' figures here")
    args = parser.parse_args(argv)
    why = netlab.missing(args.scenario)
    if why is not None:
        print(f"sims.compare: the real form cannot run: sims.netlab {why}", file=sys.stderr)
        return 2
    seeds = range(args.first, args.first + args.runs)
    common = {"nodes": args.nodes, "duration": args.duration, "profile": args.profile}
    print(f"{args.scenario}: simulating seeds {seeds.start}-{seeds.stop - 1}", flush=True)
    sim = simulated(args.scenario, seeds, **common)
    print(f"{args.scenario}: real processes, seeds {seeds.start}-{seeds.stop - 1}", flush=True)
    lab = real(args.scenario, seeds, out=lambda s: print(s, flush=True), **common)
    lines, ok = table(sim, lab, args.factor)
    print("\n".join(lines))
    print(f"the two forms {'agree' if ok else 'DISAGREE'} (timings within {args.factor}x)")
    if args.json:
        figures: dict[str, Any] = {
            "scenario": args.scenario,
            **common,
            "seeds": [seeds.start, seeds.stop - 1],
            "simulator": attrs.asdict(sim),
            "real": attrs.asdict(lab),
            "agree": ok,
        }
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
