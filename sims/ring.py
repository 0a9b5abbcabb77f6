"""Measure the ring: balance, movement on join/leave, and build cost.

    python -m sims.ring [--output docs/ring.md]

For each vnodes count and load factor (inf = plain consistent hashing) it
builds the slot table for N = 3..100 members and reports the worst max/mean
slots per member, the worst slots moved by one join and by one leave as a
multiple of 1/N, and the time to build a table at N=100. Deterministic.
"""

from __future__ import annotations

import argparse
import datetime
import math
import time
from collections import Counter
from pathlib import Path

from keycafe.cluster.ring import RingConfig, moved, slot_owners
from keycafe.store.keyslot import SLOT_COUNT

ROOT = Path(__file__).resolve().parent.parent
SIZES = (3, 4, 5, 7, 10, 15, 20, 30, 50, 70, 100)


def members(n: int) -> list[str]:
    # Node ids look like keycafe's: 40 hex characters.
    return [f"{i:040x}" for i in range(1, n + 1)]


def evaluate(config: RingConfig) -> tuple[float, float, float, float]:
    worst_balance = worst_join = worst_leave = 0.0
    for n in SIZES:
        base = slot_owners(members(n), config)
        counts = Counter(o[0] for o in base)
        worst_balance = max(worst_balance, max(counts.values()) / (SLOT_COUNT / n))
        joined = slot_owners([*members(n), f"{n + 1000:040x}"], config)
        worst_join = max(worst_join, moved(base, joined) / SLOT_COUNT * (n + 1))
        left = slot_owners(members(n)[1:], config)
        worst_leave = max(worst_leave, moved(base, left) / SLOT_COUNT * n)
    start = time.process_time()
    slot_owners(members(100), config)
    return worst_balance, worst_join, worst_leave, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs/ring.md")
    args = parser.parse_args()
    default = RingConfig()
    rows = []
    for vnodes in (32, 64, 128, 256, 512):
        for factor in (math.inf, 1.05, 1.08, 1.10):
            result = evaluate(RingConfig(vnodes=vnodes, load_factor=factor))
            rows.append((vnodes, factor, *result))
            print(
                f"vnodes {vnodes:3} load factor {factor}: max/mean {result[0]:.3f}, join "
                f"{result[1]:.2f}/N, leave {result[2]:.2f}/N, build {result[3] * 1000:.0f} ms",
                flush=True,
            )
    lines = [
        "# Ring: balance and movement",
        "",
        f"Measured {datetime.date.today()} with `python -m sims.ring` (deterministic). For"
        f" N = {', '.join(map(str, SIZES))} members: the fullest member's slots over the"
        " mean (worst N), and the slots whose primary changes when one member joins or"
        " leaves, as a multiple of 1/N (worst N). *inf* is plain consistent hashing; a"
        " finite load factor caps each member at that times the mean (bounded loads).",
        "",
        "| vnodes | load factor | max/mean | join moves | leave moves | build at N=100 |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for vnodes, factor, bal, join, leave, cost in rows:
        mark = "**" if (vnodes, factor) == (default.vnodes, default.load_factor) else ""
        lines.append(
            f"| {mark}{vnodes}{mark} | {mark}{factor}{mark} | {bal:.3f} | {join:.2f}/N "
            f"| {leave:.2f}/N | {cost * 1000:.0f} ms |"
        )
    lines += [
        "",
        f"Defaults (bold): {default.vnodes} vnodes, load factor {default.load_factor}. Plain"
        " consistent hashing cannot keep the fullest member within 10% of the mean at"
        " these sizes whatever the vnodes (a member's share varies by about"
        " 1/sqrt(vnodes), and counting whole slots adds noise that grows with vnodes);"
        " the cap bounds it, at the price of more movement, which more vnodes win back:"
        " 512 is the fewest measured that keeps a join within 1.2/N with a margin.",
        "",
    ]
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
