"""Shrink a failing nemesis schedule to fewer, shorter faults that still fail the same way.

    python -m sims.partition shrink --seed S [--duration 60] [--runs 60]
                             [--class CLASS] [--schedule FILE] [--out FILE]

First Zeller's delta debugging (``ddmin``: A. Zeller and R. Hildebrandt,
"Simplifying and Isolating Failure-Inducing Input", IEEE TSE 28(2), 2002)
over the schedule's faults, then each remaining fault's length halved while
the run still fails. A candidate is kept only if its run fails the same
verdict class (``sims.partition.CLASSES``) as the original: a schedule
that fails another way shows another bug. Every candidate is a whole run
under the same seed, so the network and the workload are drawn as in the
original and only the faults differ. ``runs`` bounds the runs, the
original's included: a shrink ends, at worst with a schedule smaller than
the original but not 1-minimal. The shrunk schedule is written as JSON, and
``python -m sims.partition nemesis --seed S --schedule FILE`` replays it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

import attrs

from sims.partition import (
    CLASSES,
    Fault,
    Report,
    command,
    describe,
    failures,
    run,
    schedule_to_json,
)

RUNS: Final = 60  # runs a shrink may take, the original's included (~5 s of CPU each at 30 s)
SHORTEST: Final = 0.5  # seconds: a fault is not halved below this

T = TypeVar("T")


def ddmin(
    items: Sequence[T], fails: Callable[[list[T]], bool], *, runs: int
) -> tuple[list[T], int]:
    """A 1-minimal failing subsequence of ``items`` (removing any one of its
    items makes it pass), and how many times ``fails`` was called: at most
    ``runs``; when they run out, the smallest failing subsequence found.
    As in the paper, ``items`` fails and the empty sequence passes; a
    subsequence is never tried twice."""
    tried: dict[tuple[int, ...], bool] = {}

    def test(indices: list[int]) -> bool | None:
        key = tuple(indices)
        if key not in tried:
            if len(tried) >= runs:
                return None
            tried[key] = fails([items[i] for i in key])
        return tried[key]

    current = list(range(len(items)))
    n = 2
    while len(current) >= 2:
        n = min(n, len(current))
        chunks = _split(current, n)
        # Reduce to a subset (start again with halves), else to a complement
        # (one chunk fewer), else split finer; complements of halves are the
        # other halves, already tried.
        subsets = [(c, 2) for c in chunks]
        if n > 2:
            subsets += [([i for i in current if i not in c], max(n - 1, 2)) for c in chunks]
        for subset, granularity in subsets:
            verdict = test(subset)
            if verdict is None:
                return [items[i] for i in current], len(tried)
            if verdict:
                current, n = subset, granularity
                break
        else:
            if n >= len(current):
                break
            n = min(2 * n, len(current))
    return [items[i] for i in current], len(tried)


def _split(seq: list[int], n: int) -> list[list[int]]:
    """``seq`` in ``n`` contiguous chunks whose lengths differ by one at most."""
    size, extra = divmod(len(seq), n)
    chunks, i = [], 0
    for j in range(n):
        k = size + (1 if j < extra else 0)
        chunks.append(seq[i : i + k])
        i += k
    return chunks


@attrs.frozen(kw_only=True)
class Shrunk:
    """A shrink: the class of failure kept, the schedules before and after,
    and what it cost."""

    seed: int
    verdict_class: str
    count: int  # the shrunk schedule's failures of that class
    original: tuple[Fault, ...]
    schedule: tuple[Fault, ...]
    runs: int  # whole runs, the original's included
    cpu: float  # seconds of CPU
    replay: str  # the command line that replays the shrunk schedule


def faulty_seconds(schedule: Sequence[Fault]) -> float:
    """How long the schedule's faults last, added up (a crash for good counts nothing)."""
    return sum(f.length for f in schedule)


def shrink(
    seed: int,
    *,
    duration: float = 60.0,
    nodes: int = 5,
    replicas: int = 1,
    workers: int = 1,
    profile: str = "lan",
    network: str = "realistic",
    schedule: Sequence[Fault] | None = None,
    verdict_class: str | None = None,
    runs: int = RUNS,
    path: str | None = None,
    out: Callable[[str], None] = print,
) -> Shrunk | None:
    """Shrink the nemesis schedule of ``seed`` (or ``schedule``) that fails
    ``verdict_class`` (by default the first in ``CLASSES`` it fails);
    ``path``: where to write the shrunk schedule. None if it does not fail so."""
    started = time.process_time()
    used = 0

    def attempt(candidate: Sequence[Fault] | None) -> Report:
        nonlocal used
        used += 1
        return run(
            "nemesis",
            nodes=nodes,
            replicas=replicas,
            seed=seed,
            duration=duration,
            workers=workers,
            profile=profile,
            network=network,
            schedule=candidate,
            out=lambda _: None,
        )

    first = attempt(schedule)
    counts = failures(first)
    failing = [c for c in CLASSES if counts[c]]
    target = verdict_class or (failing[0] if failing else None)
    if target is None or not counts[target]:
        fails_now = ", ".join(failing) or "nothing"
        out(f"seed {seed} fails {fails_now}: no {target or 'failure'} to shrink")
        return None
    original = first.schedule
    out(f"seed {seed}: {counts[target]} {target}; {_size(original)}:")
    for fault in original:
        out("  " + describe(fault))
    found: dict[tuple[Fault, ...], int] = {original: counts[target]}

    def fails(candidate: list[Fault]) -> bool:
        key = tuple(candidate)
        if key not in found:
            found[key] = failures(attempt(key))[target]
            verdict = f"fails ({found[key]} {target})" if found[key] else "passes"
            out(f"run {used}: {_size(key)}: {verdict}")
        return found[key] > 0

    current, _ = ddmin(original, fails, runs=runs - used)
    for i in range(len(current)):
        # A crash for good has no length to shorten.
        while current[i].kind != "crash" and current[i].length / 2 >= SHORTEST and used < runs:
            shorter = [*current[:i], attrs.evolve(current[i], length=current[i].length / 2)]
            shorter += current[i + 1 :]
            if not fails(shorter):
                break
            current = shorter
    shrunk = tuple(current)
    if path is not None:
        with open(path, "w") as f:
            f.write(schedule_to_json(shrunk))
    replay = command(
        "nemesis",
        seed=seed,
        duration=duration,
        nodes=nodes,
        replicas=replicas,
        workers=workers,
        profile=profile,
        network=network,
        schedule=path or "FILE.json",
    )
    result = Shrunk(
        seed=seed,
        verdict_class=target,
        count=found[shrunk],
        original=original,
        schedule=shrunk,
        runs=used,
        cpu=time.process_time() - started,
        replay=replay,
    )
    for line in summary(result):
        out(line)
    return result


def summary(s: Shrunk) -> list[str]:
    """The shrunk schedule, what it took, and the command that replays it."""
    lines = [
        f"shrunk seed {s.seed} ({s.verdict_class}) from {_size(s.original)} "
        f"to {_size(s.schedule)} in {s.runs} runs, {s.cpu:.0f} s of CPU; "
        f"it fails with {s.count} {s.verdict_class}:",
        *("  " + describe(fault) for fault in s.schedule),
        f"replay: {s.replay}",
    ]
    return lines


def _size(schedule: Sequence[Fault]) -> str:
    n = len(schedule)
    return f"{n} fault{'' if n == 1 else 's'} lasting {faulty_seconds(schedule):.1f} s"
