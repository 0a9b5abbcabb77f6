"""Slots to owners: consistent hashing with virtual nodes and bounded loads.

A pure function of the ring's member set, so every node that agrees on the
members agrees on every slot's owners. Each member places ``vnodes`` tokens on a
64-bit ring (a stable hash of its id and the token's index); each of the 16384
slots has a point on the ring, evenly spaced. A slot's primary is the first
member clockwise from its point that still has room, where "room" is a cap of
``ceil(load_factor * 16384 / N)`` slots per member: consistent hashing with
bounded loads (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with
Bounded Loads", SODA 2018). Replicas are the next distinct members clockwise,
placed the same way with a cap per replica rank.

Why bounded loads: with random tokens a member's share varies by about
1/sqrt(vnodes), and counting whole slots adds more noise, so plain consistent
hashing cannot keep the fullest member within 10% of the mean for N up to 100
(1.18 at best, with 512 vnodes; sims/ring.py). The cap keeps it at most
``load_factor``; the price is a little more movement on a join or a leave than
the 1/N of plain consistent hashing (1.10/N and 1.15/N at the defaults; all
figures in docs/ring.md).
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Final

import attrs

from keycafe.cluster.slot_table import NodeAddr, SlotTable
from keycafe.store.keyslot import SLOT_COUNT

_RING: Final = 1 << 64
# Each slot's point: the middle of its 1/16384th of the ring.
_POINTS: Final = tuple(((2 * s + 1) * _RING // 2) // SLOT_COUNT for s in range(SLOT_COUNT))
# Slots are placed in a fixed pseudo-random order, so that which slots meet a
# full member is spread over the ring rather than piled at its end.
_ORDER: Final = tuple(
    sorted(range(SLOT_COUNT), key=lambda s: hashlib.blake2b(b"slot:%d" % s, digest_size=8).digest())
)


@attrs.frozen(kw_only=True)
class RingConfig:
    # Tokens per member: with the cap below, 512 is the fewest of those measured
    # (32..512, sims/ring.py, docs/ring.md) that keeps both max/mean <= 1.10 and
    # a join's movement <= 1.2/N with a margin; a table costs ~0.1 s at N=100.
    vnodes: int = 512
    # Copies of each slot (primary included); replication itself comes later.
    replicas: int = 1
    # A member holds at most this times the mean number of slots per rank
    # (math.inf: plain consistent hashing).
    load_factor: float = 1.08


def token(node_id: str, index: int) -> int:
    """A member's ``index``-th position on the ring (stable across versions)."""
    digest = hashlib.blake2b(f"{node_id}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def slot_owners(
    members: Iterable[str], config: RingConfig | None = None
) -> tuple[tuple[str, ...], ...]:
    """Owners of every slot (``owners[0]`` the primary), for this member set."""
    config = config or RingConfig()
    names = sorted(set(members))
    if not names:
        return ((),) * SLOT_COUNT
    ring = sorted((token(m, i), m) for m in names for i in range(config.vnodes))
    tokens = [t for t, _ in ring]
    holders = [m for _, m in ring]
    size = len(ring)
    copies = min(config.replicas, len(names))
    cap = (
        SLOT_COUNT  # math.inf: plain consistent hashing, no cap
        if math.isinf(config.load_factor)
        else math.ceil(config.load_factor * SLOT_COUNT / len(names))
    )
    loads = [dict.fromkeys(names, 0) for _ in range(copies)]
    owners: list[tuple[str, ...]] = [()] * SLOT_COUNT
    for slot in _ORDER:
        start = bisect_left(tokens, _POINTS[slot]) % size
        chosen: list[str] = []
        for rank in range(copies):
            load = loads[rank]
            i = start
            # Every member has room at some rank-r position, so this ends.
            while True:
                m = holders[i]
                if m not in chosen and load[m] < cap:
                    break
                i = (i + 1) % size
            chosen.append(m)
            load[m] += 1
            start = i
        owners[slot] = tuple(chosen)
    return tuple(owners)


def build_table(
    nodes: Mapping[str, NodeAddr], my_id: str, epoch: int, config: RingConfig | None = None
) -> SlotTable:
    """The slot table of ring epoch ``epoch`` for ring members ``nodes``."""
    return SlotTable(
        epoch=epoch,
        my_id=my_id,
        nodes=dict(nodes),
        owners=slot_owners(nodes, config),
    )


def moved(before: tuple[tuple[str, ...], ...], after: tuple[tuple[str, ...], ...]) -> int:
    """Slots whose primary differs between two tables."""
    return sum(1 for a, b in zip(before, after, strict=True) if (a[:1] != b[:1]))


def outgoing(
    before: tuple[tuple[str, ...], ...], after: tuple[tuple[str, ...], ...], me: str
) -> dict[str, list[int]]:
    """Slots ``me`` is primary of in ``before`` and hands over in ``after``, by new primary."""
    out: dict[str, list[int]] = {}
    for slot, (a, b) in enumerate(zip(before, after, strict=True)):
        if a[:1] == (me,) and b and b[0] != me:
            out.setdefault(b[0], []).append(slot)
    return out
