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

Why an index: hashing and sorting N * vnodes tokens costs ~0.25 s at N=100, and
a node builds a table on every ring change. Tokens never change, so each
member's are hashed once per process into a ring that stays sorted between
calls (one short sorted run per slot), and a table only walks it: a few ms at
N=100, tens at N=1000 (docs/ring.md). The index may also hold members that
left; the walk skips them, so the table is the one of the member set alone.
"""

from __future__ import annotations

import hashlib
import math
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from itertools import accumulate, compress, repeat
from operator import add, eq, itemgetter
from typing import Final

import attrs

from keycafe.cluster.slot_table import NodeAddr, SlotTable, primary_mask
from keycafe.store.keyslot import SLOT_COUNT

_RING: Final = 1 << 64
# Each slot's point: the middle of its 1/16384th of the ring.
_POINTS: Final = tuple(((2 * s + 1) * _RING // 2) // SLOT_COUNT for s in range(SLOT_COUNT))
# The points are (2s + 1) << _HALF_SHIFT, so the number of points at or below a
# token t, i.e. its run in the index, is (t + (1 << _HALF_SHIFT)) >> (_HALF_SHIFT + 1).
_HALF_SHIFT: Final = 64 - SLOT_COUNT.bit_length()
assert all(p == (2 * s + 1) << _HALF_SHIFT for s, p in enumerate(_POINTS[:3]))
# Slots are placed in a fixed pseudo-random order, so that which slots meet a
# full member is spread over the ring rather than piled at its end.
_ORDER: Final = tuple(
    sorted(range(SLOT_COUNT), key=lambda s: hashlib.blake2b(b"slot:%d" % s, digest_size=8).digest())
)
# From values by slot to values in placement order, and back (in C: a table at
# N=100 notices a Python loop over the slots).
_IN_ORDER: Final = itemgetter(*_ORDER)
_BY_SLOT: Final = itemgetter(*sorted(range(SLOT_COUNT), key=_ORDER.__getitem__))


@attrs.frozen(kw_only=True)
class RingConfig:
    # Tokens per member: with the cap below, 512 is the fewest of those measured
    # (32..512, sims/ring.py, docs/ring.md) that keeps both max/mean <= 1.10 and
    # a join's movement <= 1.2/N with a margin.
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


def tokens(node_id: str, count: int) -> list[int]:
    """``token(node_id, i)`` for i < count, hashed in one go."""
    prefix = hashlib.blake2b(f"{node_id}/".encode(), digest_size=8)
    out = []
    for i in range(count):
        h = prefix.copy()
        h.update(b"%d" % i)
        out.append(int.from_bytes(h.digest(), "big"))
    return out


def _runs(typecode: str) -> list[array[int]]:
    return [array(typecode) for _ in range(SLOT_COUNT + 1)]


@attrs.define(eq=False)
class TokenIndex:
    """Every known member's tokens, in ring order, for one vnodes count.

    Run ``k`` holds the tokens with exactly ``k`` slot points at or below them
    (run 0: those before the first point), sorted by (token, member id): short
    sorted lists a member's tokens are inserted into. Members get small numbers
    in order of arrival, which only name them inside the index: order and ties
    go by token and member id, so the ring is the same whatever the arrivals.
    """

    vnodes: int
    # Rebuilt without the members that left once it knows this many more than
    # a table asks for (the walk skips their tokens, at a cost).
    slack: int = 64
    names: list[str] = attrs.Factory(list)
    numbers: dict[str, int] = attrs.Factory(dict)
    # Arrays rather than lists: 2 * 16385 fewer objects for the garbage
    # collector to go through (a full collection cost 20-40 ms with lists),
    # and a quarter of the memory.
    run_tokens: list[array[int]] = attrs.Factory(lambda: _runs("Q"))
    run_holders: list[array[int]] = attrs.Factory(lambda: _runs("L"))
    _ring: _Ring | None = None

    def add(self, node_id: str) -> None:
        """Place ``node_id``'s tokens (once: a known member is left as it is)."""
        if node_id in self.numbers:
            return
        number = self.numbers[node_id] = len(self.names)
        self.names.append(node_id)
        self._ring = None
        names = self.names
        for t in tokens(node_id, self.vnodes):
            k = (t + (1 << _HALF_SHIFT)) >> (_HALF_SHIFT + 1)
            run, holders = self.run_tokens[k], self.run_holders[k]
            i = bisect_left(run, t)
            # Equal tokens (a 64-bit collision) go by member id, as in the
            # sorted (token, member) ring this index stands for.
            while i < len(run) and run[i] == t and names[holders[i]] < node_id:
                i += 1
            run.insert(i, t)
            holders.insert(i, number)

    def forget_all_but(self, members: Iterable[str]) -> None:
        """Drop every member not in ``members`` (the others keep their tokens)."""
        keep = set(members)
        kept = [m for m in self.names if m in keep]
        renumber = {self.numbers[m]: i for i, m in enumerate(kept)}
        for k, (run, holders) in enumerate(zip(self.run_tokens, self.run_holders, strict=True)):
            pairs = [(t, renumber[h]) for t, h in zip(run, holders, strict=True) if h in renumber]
            self.run_tokens[k] = array("Q", [t for t, _ in pairs])
            self.run_holders[k] = array("L", [h for _, h in pairs])
        self.names = kept
        self.numbers = {m: i for i, m in enumerate(kept)}
        self._ring = None

    def ring(self) -> _Ring:
        """The ring of every member the index knows (kept until one joins)."""
        if self._ring is None:
            self._ring = _Ring.of(self.run_holders)
        return self._ring


@attrs.define(eq=False)
class _Ring:
    # Holders of all tokens clockwise from 0, twice round, so that a walk of
    # up to one turn needs no wrapping.
    holders: array[int]
    # Where the walk of the j-th slot placed (in _ORDER) starts: its point's
    # first token at or after it; and that token's holder.
    firsts: list[int]
    first_holders: list[int]
    # After firsts[j], the first token of another member, and its holder.
    _seconds: tuple[list[int], list[int]] | None = None

    @classmethod
    def of(cls, runs: list[array[int]]) -> _Ring:
        # Built with C loops (bytes.join, accumulate, itemgetter): it is done
        # again whenever a member joins.
        once = b"".join(runs)
        holders = array("L")
        holders.frombytes(once + once)
        # Slot s's walk starts at run s + 1: after the tokens of runs 0..s.
        starts = list(accumulate(map(len, runs[:SLOT_COUNT])))
        firsts = list(_IN_ORDER(starts))
        return cls(holders=holders, firsts=firsts, first_holders=list(itemgetter(*firsts)(holders)))

    def seconds(self) -> tuple[list[int], list[int]]:
        if self._seconds is None:
            h = self.holders
            # Mostly the very next token: another member's unless N is small.
            seconds = list(map(add, self.firsts, repeat(1)))
            holders = list(itemgetter(*seconds)(h))
            for j in compress(range(SLOT_COUNT), map(eq, holders, self.first_holders)):
                seconds[j] = _next_other(h, self.firsts[j])
                holders[j] = h[seconds[j]]
            self._seconds = (seconds, holders)
        return self._seconds


def _next_other(holders: array[int], i: int) -> int:
    """The first token after ``i`` of another member than ``holders[i]``'s
    (the last token if none, for a ring of one member)."""
    n, last = holders[i], len(holders) - 1
    i += 1
    while holders[i] == n and i < last:
        i += 1
    return i


# One index per vnodes count for the process: a member's tokens are hashed the
# first time a table includes it.
_INDEXES: dict[int, TokenIndex] = {}


def slot_owners(
    members: Iterable[str], config: RingConfig | None = None, *, index: TokenIndex | None = None
) -> tuple[tuple[str, ...], ...]:
    """Owners of every slot (``owners[0]`` the primary), for this member set.

    ``index`` (default: the process's own for ``config.vnodes``) changes the
    cost, never the result.
    """
    config = config or RingConfig()
    names = sorted(set(members))
    if not names:
        return ((),) * SLOT_COUNT
    if index is None:
        index = _INDEXES.get(config.vnodes)
        if index is None:
            index = _INDEXES[config.vnodes] = TokenIndex(config.vnodes)
    if index.vnodes != config.vnodes:
        raise ValueError(f"an index of {index.vnodes} vnodes for a ring of {config.vnodes}")
    for m in names:
        index.add(m)
    if len(index.names) > 2 * len(names) + index.slack:
        index.forget_all_but(names)
    copies = min(config.replicas, len(names))
    cap = (
        SLOT_COUNT  # math.inf: plain consistent hashing, no cap
        if math.isinf(config.load_factor)
        else math.ceil(config.load_factor * SLOT_COUNT / len(names))
    )
    loads = []
    for _ in range(copies):
        # Members the index knows outside this set start over any cap, so no
        # walk stops at their tokens.
        load = [_OUTSIDE] * len(index.names)
        for m in names:
            load[index.numbers[m]] = 0
        loads.append(load)
    ring = index.ring()
    if copies == 1:
        single = [(m,) for m in index.names]
        return itemgetter(*_BY_SLOT(_primaries(ring, loads[0], cap)))(single)  # type: ignore[no-any-return]
    owners = _pairs(ring, loads[0], loads[1], cap) if copies == 2 else _walk(ring, loads, cap)
    known = index.names.__getitem__
    return _BY_SLOT(list(zip(*(map(known, o) for o in owners), strict=True)))  # type: ignore[no-any-return]


# A load no walk stops at, even one that gave up on the cap.
_OUTSIDE: Final = 2 * SLOT_COUNT + 1

# _walk is the rule; _primaries and _pairs are it for one and two copies, with
# the first candidates looked up ahead (one step per slot, in most slots).


def _primaries(ring: _Ring, load: list[int], cap: int) -> list[int]:
    """Each slot's first member clockwise with room, in placement order.

    One turn finds one: the members' caps add up to more than all slots."""
    holders = ring.holders
    owners: list[int] = []
    append = owners.append
    for i, n in zip(ring.firsts, ring.first_holders, strict=True):
        if load[n] >= cap:
            i += 1
            n = holders[i]
            while load[n] >= cap:
                i += 1
                n = holders[i]
        load[n] += 1
        append(n)
    return owners


def _pairs(
    ring: _Ring, first: list[int], second: list[int], cap: int
) -> tuple[list[int], list[int]]:
    """Each slot's primary and next other member with room, in placement order."""
    holders = ring.holders
    size = len(holders) // 2
    primaries: list[int] = []
    replicas: list[int] = []
    add_primary, add_replica = primaries.append, replicas.append
    seconds, second_holders = ring.seconds()
    for i, n, k, m in zip(ring.firsts, ring.first_holders, seconds, second_holders, strict=True):
        if first[n] < cap:
            first[n] += 1
            if second[m] < cap:
                # Most slots: both first candidates have room.
                second[m] += 1
                add_primary(n)
                add_replica(m)
                continue
        else:
            i += 1
            n = holders[i]
            while first[n] >= cap:
                i += 1
                n = holders[i]
            first[n] += 1
            if i >= size:
                i -= size
            k = i + 1
            m = holders[k]
        if k >= size:
            k -= size
        room, stop = cap, k + size
        while m == n or second[m] >= room:
            k += 1
            if k == stop:
                # As in _walk: a whole turn found no room.
                k, room = k - size, _OUTSIDE
            m = holders[k]
        second[m] += 1
        add_primary(n)
        add_replica(m)
    return primaries, replicas


def _walk(ring: _Ring, loads: list[list[int]], cap: int) -> list[list[int]]:
    """Each slot's owners, rank by rank, in placement order: walking clockwise
    from the slot's point, the first member not yet chosen with room at the
    rank."""
    holders = ring.holders
    size = len(holders) // 2
    owners: list[list[int]] = [[] for _ in loads]
    for i in ring.firsts:
        chosen: list[int] = []
        for load, out in zip(loads, owners, strict=True):
            # Rank r resumes where rank r - 1 stopped (that member is now
            # chosen, so the walk moves past it).
            if i >= size:
                i -= size
            room, stop = cap, i + size
            n = holders[i]
            while load[n] >= room or n in chosen:
                i += 1
                if i == stop:
                    # A whole turn: every member not yet chosen is full at
                    # this rank (possible when replicas is close to N), so
                    # the next one clockwise takes the copy over the cap.
                    i, room = i - size, _OUTSIDE
                n = holders[i]
            chosen.append(n)
            load[n] += 1
            out.append(n)
    return owners


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
    """Slots ``me`` is primary of in ``before`` that an owner in ``after`` holds
    no copy of yet, by that owner: a new primary, or a new replica (a replica
    that becomes primary has its copy already)."""
    if len(before) != len(after):
        raise ValueError("tables of different sizes")
    out: dict[str, list[int]] = {}
    for slot in compress(range(len(before)), primary_mask(before, me)):
        had = before[slot]
        for owner in after[slot]:
            if owner not in had:
                out.setdefault(owner, []).append(slot)
    return out


def without(
    owners: tuple[tuple[str, ...], ...], gone: frozenset[str] | set[str]
) -> tuple[tuple[str, ...], ...]:
    """``owners`` with the members in ``gone`` taken out of every slot's list,
    the others keeping their order (so a slot's first live replica becomes
    its primary). A table holds few distinct lists: each is filtered once."""
    if not gone:
        return owners
    kept = {o: tuple(n for n in o if n not in gone) for o in set(owners)}
    return tuple(map(kept.__getitem__, owners))
