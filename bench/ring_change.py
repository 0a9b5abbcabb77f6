"""What one ring change costs a node's event loop: CPU time of the hand-off core.

    python bench/ring_change.py [--nodes 10 100 300] [--keys 100000] [--trials 5]

A node of an N-member ring holding ``--keys`` keys in the slots it owns
follows what a crash makes the coordinator publish: the victim known down,
the proposal without it, then the change. Each phase is one call into the
core plus the frames and events it queues, as the node's trio shell runs it
in one task step, so its CPU time is how long the loop is held (and probes
wait). Victims differ per trial; the token index is warm, as on a running
node.
Prints median / max over the trials, in ms.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from collections.abc import Callable

from keycafe.cluster.handoff import Handoff
from keycafe.cluster.node import owners_cache
from keycafe.cluster.ring import RingConfig
from keycafe.cluster.ring_record import Ring
from keycafe.cluster.slot_table import NodeAddr
from keycafe.store.engine import Store
from keycafe.store.keyslot import SLOT_COUNT, key_slot

WALL = 1_800_000_000_000


def _tags() -> list[bytes]:
    """A hash tag for every slot (keys ``{tag}:...`` land in its slot)."""
    tags: list[bytes | None] = [None] * SLOT_COUNT
    left, i = SLOT_COUNT, 0
    while left:
        tag = b"t%d" % i
        slot = key_slot(tag)
        if tags[slot] is None:
            tags[slot] = tag
            left -= 1
        i += 1
    return [t for t in tags if t is not None]


TAGS = _tags()


def cpu(fn: Callable[[], object]) -> float:
    t0 = time.process_time()
    fn()
    return (time.process_time() - t0) * 1000


def trial(n: int, keys: int, victim_index: int) -> dict[str, float]:
    ids = sorted(hashlib.sha1(b"%d" % i).hexdigest() for i in range(n))
    nodes = {
        node: NodeAddr(node_id=node, host="127.0.0.1", port=7000 + i, cluster_port=17000 + i)
        for i, node in enumerate(ids)
    }
    me, victim = ids[0], ids[victim_index]
    owners = owners_cache(RingConfig())
    core = Handoff(me=nodes[me], store=Store(me), owners=owners)
    full = Ring(epoch=1, term=1, coordinator=me, members=tuple(ids))
    core.set_ring(full, nodes, 0.0)
    mine = [s for s in range(SLOT_COUNT) if core.table.mine[s]]
    store = core.store
    for i in range(keys):
        slot = mine[i % len(mine)]
        key = b"{%b}:%d" % (TAGS[slot], i)
        store.put(slot, key, b"v" * 32, 0, WALL)
    while core.next_event() is not None:
        pass
    rest = tuple(x for x in ids if x != victim)
    proposal = Ring(epoch=2, term=1, coordinator=me, members=tuple(ids), pending=rest)
    change = Ring(epoch=3, term=1, coordinator=me, members=rest)
    out: dict[str, float] = {}

    def phase(name: str, fn: Callable[[], object], now: float) -> None:
        def run() -> None:
            fn()
            core.frames_to_send(now, 1 << 30)
            while core.next_event() is not None:
                pass

        out[name] = cpu(run)

    phase("down", lambda: core.set_down(frozenset({victim}), 1.0), 1.0)
    phase("proposal", lambda: core.set_ring(proposal, nodes, 1.5), 1.5)
    phase("change", lambda: core.set_ring(change, nodes, 2.0), 2.0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[10, 100, 300])
    p.add_argument("--keys", type=int, default=100_000, help="keys the node holds")
    p.add_argument("--trials", type=int, default=5)
    args = p.parse_args()
    print(f"CPU ms per phase, median / max of {args.trials} victims")
    print(f"{'N':>5} {'down':>13} {'proposal':>13} {'change':>13}")
    for n in args.nodes:
        rows = [trial(n, args.keys, 1 + (k * 7919) % (n - 1)) for k in range(args.trials)]
        cells = []
        for name in ("down", "proposal", "change"):
            values = [r[name] for r in rows]
            cells.append(f"{statistics.median(values):6.1f} /{max(values):6.1f}")
        print(f"{n:>5} " + " ".join(f"{c:>13}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
