"""The aligned probe schedule's member order (``GossipConfig.aligned_probes``).

Every member sorts the live members by a hash of their ids, the same list
everywhere once views agree, and in round r probes the one ``1 + r mod (M - 1)``
places after itself (core.py, ``_aligned_target``).

The sorted list is the same on every member of a converged cluster, and one
crash or one join changes it in one place only, so a member keeps it as a
shared, immutable ``HashedOrder`` plus its own few differences (``LiveOrder``):
a simulated cluster of 10,000 cores then holds one copy of the list, not
10,000, and a death costs each core O(1) rather than a sort of N ids.
"""

from __future__ import annotations

import bisect
import math
import zlib
from collections.abc import Iterable, Iterator

import attrs


def order_key(node: str) -> tuple[int, str]:
    """Where ``node`` sits in the hashed order (ties, never seen in practice, by id)."""
    return (zlib.crc32(node.encode()), node)


@attrs.frozen(eq=False)
class HashedOrder:
    """Member ids sorted by ``order_key``; immutable, so many cores share one."""

    names: tuple[str, ...]
    keys: tuple[tuple[int, str], ...]
    position: dict[str, int]  # never changed after construction

    @classmethod
    def of(cls, names: Iterable[str]) -> HashedOrder:
        keys = tuple(sorted(order_key(n) for n in set(names)))
        ordered = tuple(k[1] for k in keys)
        return cls(names=ordered, keys=keys, position={n: i for i, n in enumerate(ordered)})


EMPTY = HashedOrder.of(())


Mark = tuple[int, int, tuple[int, str]]  # (base position, 0 insert / 1 drop, key)


class LiveOrder:
    """One member's live members in the hashed order: a shared ``HashedOrder``
    less the ids it holds that are not live (``dropped``) plus the live ids it
    lacks (``added``). Once the differences outgrow about sqrt(N) the next
    look-up sorts a fresh order of its own, so a look-up costs O(sqrt N) and the
    sorts O(N log N) per sqrt(N) changes."""

    __slots__ = ("_added", "_base", "_dropped", "_marks")

    def __init__(self, base: HashedOrder = EMPTY) -> None:
        self._base = base
        self._dropped: set[str] = set()
        self._added: dict[str, tuple[int, str]] = {}
        # The differences in order: an added id goes before the base id at its
        # position, a dropped one is skipped. None after a change.
        self._marks: list[Mark] | None = []

    @property
    def base(self) -> HashedOrder:
        return self._base

    def add(self, node: str) -> None:
        if node in self._base.position:
            if node in self._dropped:
                self._dropped.discard(node)
                self._marks = None
        elif node not in self._added:
            self._added[node] = order_key(node)
            self._marks = None

    def discard(self, node: str) -> None:
        if node in self._base.position:
            if node not in self._dropped:
                self._dropped.add(node)
                self._marks = None
        elif self._added.pop(node, None) is not None:
            self._marks = None

    def __len__(self) -> int:
        return len(self._base.names) - len(self._dropped) + len(self._added)

    def __contains__(self, node: object) -> bool:
        if node in self._base.position:
            return node not in self._dropped
        return node in self._added

    def __iter__(self) -> Iterator[str]:
        marks = self._prepare()  # first: it may sort a fresh base
        names = self._base.names
        b = 0
        for pos, kind, key in marks:
            yield from names[b:pos]
            if kind == 0:
                yield key[1]
                b = pos
            else:
                b = pos + 1
        yield from names[b:]

    def index(self, node: str) -> int:
        """``node``'s place in the order (it must be in it)."""
        marks = self._prepare()
        base = self._base
        key = self._added.get(node)
        if key is None:
            at = base.position[node]
            key = base.keys[at]
        else:
            at = bisect.bisect_left(base.keys, key)
        # The base ids before it, less the dropped ones, plus the added ones before it.
        shift = 0
        for pos, kind, mark in marks:
            if kind == 1 and pos < at:
                shift -= 1
            elif kind == 0 and mark < key:
                shift += 1
        return at + shift

    def __getitem__(self, i: int) -> str:
        if not 0 <= i < len(self):
            raise IndexError(i)
        marks = self._prepare()  # first: it may sort a fresh base
        names = self._base.names
        seen = 0  # ids of the live order before base position b
        b = 0
        for pos, kind, key in marks:
            if i < seen + pos - b:
                return names[b + i - seen]
            seen += pos - b
            if kind == 0:
                if i == seen:
                    return key[1]
                seen += 1
                b = pos
            else:
                b = pos + 1  # skip the dropped id
        return names[b + i - seen]

    def _prepare(self) -> list[Mark]:
        differences = len(self._dropped) + len(self._added)
        if differences > max(16, math.isqrt(len(self._base.names))):
            live = [n for n in self._base.names if n not in self._dropped]
            self._base = HashedOrder.of(live + list(self._added))
            self._dropped.clear()
            self._added.clear()
            self._marks = []
        if self._marks is None:
            base = self._base
            marks: list[Mark] = [
                (bisect.bisect_left(base.keys, k), 0, k) for k in sorted(self._added.values())
            ]
            marks += [(base.position[n], 1, base.keys[base.position[n]]) for n in self._dropped]
            marks.sort(key=lambda m: (m[0], m[1]))  # stable: inserts stay in key order
            self._marks = marks
        return self._marks
