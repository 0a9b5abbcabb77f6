"""What a partition run promises about data, judged from its history (Jepsen's method).

A workload records every operation a client issued: what it was, when it was
invoked and when (if ever) it completed, and its outcome: ``ok`` (the cluster
acknowledged it), ``fail`` (an error reply: it did not happen) or
``unknown`` (no reply: a timeout or a closed connection; it may have
happened). After the faults heal, every node is read once more (``final``).
Values are unique per write, so a value read names the write that made it.

Each key is a register: writes set it, deletes clear it (a delete is a write
of "absent", as is a key's state before any write). A set of unique keys,
each written once, is the same check with one write per key.

One operation *precedes* another when it completed before the other was
invoked (real time). The checks:

- **lost**: an acknowledged write or delete after which the key's final
  value is one that precedes it (every write that could have made the final
  value completed before the acknowledged one began). A lost delete is a
  key **resurrected**.
- **stale read**: a read returning a value every maker of which precedes an
  acknowledged write that completed before the read began.
- **phantom**: a value read (or final) that no write which may have happened
  wrote (never written, or only by writes that failed).
- **diverged**: keys whose final value differs between nodes.
- **unavailable**: per group of clients (a side of a partition), the longest
  stretch with no acknowledged operation.

Pure functions over plain values: the simulator's scenarios and the real
network runs feed it the same way (``sims.partition``, issue 11).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Final, Literal

import attrs

Kind = Literal["write", "delete", "read"]
Outcome = Literal["ok", "fail", "unknown"]

INITIAL: Final = float("-inf")  # a key's state before any write: absent


@attrs.frozen
class Op:
    """One operation of one client. ``value``: what a write wrote, or what a
    read returned (None: the key was absent); a delete's is None."""

    client: str
    kind: Kind
    key: bytes
    value: bytes | None
    invoked: float
    completed: float | None
    outcome: Outcome

    def precedes(self, other: Op) -> bool:
        return self.completed is not None and self.completed < other.invoked

    @property
    def mutates(self) -> bool:
        return self.kind != "read"


_ABSENT: Final = Op("", "delete", b"", None, INITIAL, INITIAL, "ok")  # the initial state


@attrs.frozen
class Verdict:
    lost: list[Op]  # acknowledged writes lost (deletes among them: resurrected keys)
    stale_reads: list[Op]
    phantoms: list[tuple[bytes, bytes]]  # (key, value) no write that may have happened made
    diverged: list[bytes]
    unavailable: dict[str, float]  # group -> longest stretch without an acknowledged op

    @property
    def resurrected(self) -> list[Op]:
        return [op for op in self.lost if op.kind == "delete"]

    @property
    def ok(self) -> bool:
        return not (self.lost or self.stale_reads or self.phantoms or self.diverged)

    def summary(self) -> str:
        writes = sum(1 for op in self.lost if op.kind == "write")
        lines = [
            f"acknowledged writes lost: {writes}",
            f"deleted keys resurrected: {len(self.resurrected)}",
            f"stale reads: {len(self.stale_reads)}",
            f"values no write made: {len(self.phantoms)}",
            f"keys whose copies differ: {len(self.diverged)}",
        ]
        for group, gap in sorted(self.unavailable.items()):
            lines.append(f"longest stretch without an acknowledged op, {group}: {gap:.2f} s")
        lines.append("verdict: " + ("ok" if self.ok else "FAILED"))
        return "\n".join(lines)


def check(
    ops: Iterable[Op],
    final: Mapping[str, Mapping[bytes, bytes | None]],
    *,
    groups: Mapping[str, str] | None = None,
    span: tuple[float, float] | None = None,
) -> Verdict:
    """Judge a history. ``final``: per node, each key's value read after
    healing (keys missing there count as absent). ``groups``: client ->
    group for ``unavailable`` (default: each client its own); ``span``: the
    run's start and end, the ends of the first and last stretch."""
    history = list(ops)
    makers = _makers(history)
    lost: list[Op] = []
    phantoms: list[tuple[bytes, bytes]] = []
    keys = {op.key for op in history if op.mutates} | {k for f in final.values() for k in f}
    diverged = sorted(k for k in keys if len({f.get(k) for f in final.values()}) > 1)
    for key in sorted(keys):
        acked = [op for op in history if op.key == key and op.mutates and op.outcome == "ok"]
        for value in {f.get(key) for f in final.values()}:
            made_by = makers.get((key, value), [])
            if not made_by:
                assert value is not None  # absent always has a maker: the initial state
                phantoms.append((key, value))
                continue
            # (A write never precedes itself: the final value's own maker is
            # never among them.)
            lost += [w for w in acked if w not in lost and all(m.precedes(w) for m in made_by)]
    stale: list[Op] = []
    for read in history:
        if read.kind != "read" or read.outcome != "ok":
            continue
        made_by = makers.get((read.key, read.value), [])
        if not made_by:
            assert read.value is not None
            phantoms.append((read.key, read.value))
            continue
        newer = [
            w
            for w in history
            if w.key == read.key and w.mutates and w.outcome == "ok" and w.precedes(read)
        ]
        if any(all(m.precedes(w) for m in made_by) for w in newer):
            stale.append(read)
    return Verdict(
        lost=lost,
        stale_reads=stale,
        phantoms=sorted(set(phantoms)),
        diverged=diverged,
        unavailable=_unavailable(history, groups, span),
    )


def _makers(history: list[Op]) -> dict[tuple[bytes, bytes | None], list[Op]]:
    """Per (key, value): the writes that may have made it (not failed), and
    the initial state for an absent key."""
    out: dict[tuple[bytes, bytes | None], list[Op]] = {}
    for op in history:
        if op.mutates and op.outcome != "fail":
            out.setdefault((op.key, op.value), []).append(op)
    for key in {op.key for op in history}:
        out.setdefault((key, None), []).insert(0, _ABSENT)
    return out


def _unavailable(
    history: list[Op], groups: Mapping[str, str] | None, span: tuple[float, float] | None
) -> dict[str, float]:
    by_group: dict[str, list[float]] = {}
    for op in history:
        group = groups.get(op.client, op.client) if groups is not None else op.client
        times = by_group.setdefault(group, [])
        if op.outcome == "ok" and op.completed is not None:
            times.append(op.completed)
    out = {}
    for group, times in by_group.items():
        marks = sorted(times)
        if span is not None:
            marks = [span[0], *marks, span[1]]
        out[group] = max((b - a for a, b in itertools.pairwise(marks)), default=0.0)
    return out
