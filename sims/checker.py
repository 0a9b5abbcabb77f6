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

A write has surely taken effect by its acknowledgement, or by the end of
the first read that saw its value (a write with no reply that a read saw did
happen); an operation with no reply may take effect at any time. The checks:

- **lost**: a write that surely took effect (acknowledged or seen), after
  which the key's final value is one whose every possible maker had taken
  effect before it began. A lost delete is a key **resurrected**.
- **stale read**: a read returning a value every possible maker of which had
  taken effect before some other write that surely took effect before the
  read began (acknowledged, or seen by an earlier read: non-monotonic reads
  count).
- **phantom**: a value read (or final) that no write which may have happened
  wrote, or none invoked before the read ended.
- **nonlinear**: two values of a key that no order of its writes and reads
  explains (Gibbons and Korach's zones, for the values written once; a
  catch-all behind the two checks above).
- **duplicates**: values written twice (the checks need them unique).
- **diverged**: keys whose final value differs between nodes.
- **unavailable**: per group of clients (a side of a partition), the longest
  stretch with no acknowledged operation.

Pure functions over plain values: the simulator's scenarios and the real
network runs feed it the same way (``sims.partition``, issue 11).
"""

from __future__ import annotations

import bisect
import itertools
import math
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
        """Completed (acknowledged or refused) before ``other`` began; an
        operation with no reply may take effect at any time."""
        return (
            self.outcome != "unknown"
            and self.completed is not None
            and (self.completed < other.invoked)
        )

    @property
    def mutates(self) -> bool:
        return self.kind != "read"


_ABSENT: Final = Op("", "delete", b"", None, INITIAL, INITIAL, "ok")  # the initial state


@attrs.frozen
class Verdict:
    # Writes lost: acknowledged, or seen by a read (deletes: resurrected keys).
    lost: list[Op]
    stale_reads: list[Op]
    phantoms: list[tuple[bytes, bytes]]  # (key, value) no write that may have happened made
    diverged: list[bytes]
    unavailable: dict[str, float]  # group -> longest stretch without an acknowledged op
    # Pairs of values of a key that no order of its writes and reads explains.
    nonlinear: list[tuple[bytes, bytes, bytes]] = attrs.Factory(list)
    # Values written more than once (the checks assume each value is unique).
    duplicates: list[tuple[bytes, bytes]] = attrs.Factory(list)
    unread: list[bytes] = attrs.Factory(list)  # keys the final reads could not read

    @property
    def resurrected(self) -> list[Op]:
        return [op for op in self.lost if op.kind == "delete"]

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.stale_reads
            or self.phantoms
            or self.diverged
            or self.nonlinear
            or self.duplicates
            or self.unread
        )

    def summary(self) -> str:
        writes = sum(1 for op in self.lost if op.kind == "write")
        lines = [
            f"writes lost (acknowledged, or seen by a read): {writes}",
            f"deleted keys resurrected: {len(self.resurrected)}",
            f"stale reads: {len(self.stale_reads)}",
            f"values no write made: {len(self.phantoms)}",
            f"keys whose copies differ: {len(self.diverged)}",
            f"values no order of operations explains: {len(self.nonlinear)}",
            f"values written twice (the checks need them unique): {len(self.duplicates)}",
            f"keys the final reads could not read: {len(self.unread)}",
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
    by_key: dict[bytes, list[Op]] = {}
    for op in history:
        by_key.setdefault(op.key, []).append(op)
    for view in final.values():
        for key in view:
            by_key.setdefault(key, [])
    lost: list[Op] = []
    stale: list[Op] = []
    phantoms: set[tuple[bytes, bytes]] = set()
    duplicates: set[tuple[bytes, bytes]] = set()
    nonlinear: list[tuple[bytes, bytes, bytes]] = []
    diverged = sorted(k for k in by_key if len({view.get(k) for view in final.values()}) > 1)
    for key, key_ops in sorted(by_key.items()):
        judged = _Key(key, key_ops)
        duplicates |= {(key, v) for v in judged.duplicated}
        finals = {view.get(key) for view in final.values()}
        lost += judged.lost(finals)
        phantoms |= {(key, v) for v in finals if v is not None and not judged.makers_of(v)}
        for read in judged.reads:
            makers = judged.makers_of(read.value, before=read.completed)
            if not makers:
                phantoms.add((key, read.value or b""))  # never written, or not yet
            elif judged.stale(read, makers):
                stale.append(read)
        nonlinear += [(key, a, b) for a, b in judged.zone_conflicts(finals)]
    return Verdict(
        lost=lost,
        stale_reads=stale,
        phantoms=sorted(phantoms),
        diverged=diverged,
        unavailable=_unavailable(history, groups, span),
        nonlinear=nonlinear,
        duplicates=sorted(duplicates),
    )


class _Key:
    """One key's operations, and what they prove about each other."""

    def __init__(self, key: bytes, ops: list[Op]) -> None:
        self.key = key
        self.mutations = [op for op in ops if op.mutates and op.outcome != "fail"]
        self.reads = [op for op in ops if op.kind == "read" and op.outcome == "ok"]
        self._by_value: dict[bytes | None, list[Op]] = {None: [_ABSENT]}
        for op in self.mutations:
            self._by_value.setdefault(op.value, []).append(op)
        self.duplicated = [v for v, w in self._by_value.items() if v is not None and len(w) > 1]
        # When each write had surely taken effect: its acknowledgement, or the
        # end of the first read that saw its value (values are unique; a
        # write with no reply that a read saw did happen).
        self._settled: dict[int, float] = {}
        self._invoked: list[float] | None = None  # ``_by_invocation``
        self._earliest: list[float] = []
        for op in self.mutations:
            if op.outcome == "ok" and op.completed is not None:
                self._settled[id(op)] = op.completed
        for read in self.reads:
            if read.value is not None and read.value not in self.duplicated:
                for w in self._by_value.get(read.value, []):
                    at = self._settled.get(id(w), math.inf)
                    self._settled[id(w)] = min(at, read.completed or math.inf)

    def makers_of(self, value: bytes | None, before: float | None = None) -> list[Op]:
        """The writes that may have made ``value`` (the initial state for
        absent), invoked before ``before`` if given."""
        makers = self._by_value.get(value, [])
        if before is None:
            return makers
        return [m for m in makers if m.invoked < before]

    def settled(self, op: Op) -> float:
        return -math.inf if op is _ABSENT else self._settled.get(id(op), math.inf)

    def precedes(self, a: Op, b: Op) -> bool:
        """``a`` had surely taken effect before ``b`` was invoked."""
        return self.settled(a) < b.invoked

    def committed(self) -> list[Op]:
        """Writes known to have taken effect (acknowledged, or seen)."""
        return [w for w in self.mutations if self.settled(w) < math.inf]

    def lost(self, finals: set[bytes | None]) -> list[Op]:
        out: list[Op] = []
        for value in finals:
            makers = self.makers_of(value)
            if not makers:
                continue  # a phantom, reported as such
            out += [
                w
                for w in self.committed()
                if w not in out and all(self.precedes(m, w) for m in makers)
            ]
        return out

    def stale(self, read: Op, makers: list[Op]) -> bool:
        """A write that had surely taken effect before ``read`` began, after
        every write that could have made what it returned: one invoked after
        the last of the makers took effect (so not a maker), which took
        effect before the read began. With the committed writes in order of
        invocation and the earliest time any from each on took effect, that
        is one search per read (each read against each write was quadratic:
        a third of a run's time)."""
        after = max(self.settled(m) for m in makers)
        if after == math.inf:
            return False  # a maker may take effect at any time: nothing is surely after it
        invoked, earliest = self._by_invocation()
        i = bisect.bisect_right(invoked, after)
        return i < len(earliest) and earliest[i] < read.invoked

    def _by_invocation(self) -> tuple[list[float], list[float]]:
        """The committed writes' invocation times, ascending, and for each
        position the earliest time a write from there on took effect."""
        if self._invoked is None:
            committed = sorted(self.committed(), key=lambda w: w.invoked)
            self._invoked = [w.invoked for w in committed]
            earliest = [self.settled(w) for w in committed]
            for i in range(len(earliest) - 2, -1, -1):
                earliest[i] = min(earliest[i], earliest[i + 1])
            self._earliest = earliest
        return self._invoked, self._earliest

    def zone_conflicts(self, finals: set[bytes | None]) -> list[tuple[bytes, bytes]]:
        """Values whose zones rule out any order (Gibbons and Korach's test
        for a register with unique values): each written value's cluster is
        its write and its reads (the final reads count as reads after
        everything); a cluster that ended before it began spans a forward
        zone, and no two forward zones may overlap, nor a backward zone lie
        inside a forward one. Absent values (deletes) are left out."""
        end = max((op.completed or op.invoked for op in [*self.mutations, *self.reads]), default=0)
        end = max(end, 0.0) + 1.0
        zones: list[tuple[float, float, bool, bytes]] = []
        for value, writes in self._by_value.items():
            if value is None or len(writes) != 1:
                continue
            write = writes[0]
            reads = [r for r in self.reads if r.value == value]
            seen_last = value in finals
            if not reads and not seen_last and write.outcome != "ok":
                continue  # may never have happened: it has no place to take
            ends = [
                write.completed if write.outcome == "ok" else None,
                *(r.completed for r in reads),
            ]
            first_end = min((e for e in ends if e is not None), default=math.inf)
            last_start = max([write.invoked, *(r.invoked for r in reads)])
            if seen_last:
                first_end, last_start = min(first_end, end), max(last_start, end)
            forward = first_end < last_start
            lo, hi = (first_end, last_start) if forward else (last_start, first_end)
            zones.append((lo, hi, forward, value))
        out = []
        forwards = sorted(z for z in zones if z[2])
        for a, b in itertools.pairwise(forwards):
            if b[0] < a[1]:
                out.append((a[3], b[3]))
        for lo, hi, forward, value in zones:
            if forward:
                continue
            for f_lo, f_hi, _, f_value in forwards:
                if f_lo < lo and hi < f_hi:
                    out.append((f_value, value))
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
            marks = [span[0], *(min(max(t, span[0]), span[1]) for t in marks), span[1]]
        elif not marks:
            out[group] = math.inf  # never acknowledged anything
            continue
        out[group] = max((b - a for a, b in itertools.pairwise(marks)), default=0.0)
    return out
