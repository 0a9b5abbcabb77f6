"""ddmin finds a 1-minimal failing subset within its budget; a nemesis
schedule is data that round-trips through JSON and replays the run it was
drawn for exactly; and a real failure (a bug injected by monkeypatch) shrinks
to a smaller schedule that still fails the same way."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from keycafe.cluster.replication import Replication
from keycafe.gossip.simulator import node_name
from sims.partition import (
    KINDS,
    describe,
    draw,
    failures,
    run,
    schedule_from_json,
    schedule_to_json,
)
from sims.shrink import ddmin, shrink

NAMES = [node_name(i) for i in range(5)]


def one_minimal(result: list[int], fails: Callable[[list[int]], bool]) -> bool:
    return all(not fails(result[:i] + result[i + 1 :]) for i in range(len(result)))


@pytest.mark.parametrize(
    "needed",
    [
        lambda s: {3, 7} <= s,
        lambda s: {2, 5} <= s or 8 in s,
        lambda s: {0, 1, 2, 9, 15} <= s,
        lambda s: 19 in s,
    ],
)
def test_ddmin_finds_a_1_minimal_failing_subset(needed: Callable[[set[int]], bool]) -> None:
    calls: list[tuple[int, ...]] = []

    def fails(xs: list[int]) -> bool:
        calls.append(tuple(xs))
        return needed(set(xs))

    result, runs = ddmin(list(range(20)), fails, runs=1000)
    assert runs == len(calls) == len(set(calls))  # never the same subset twice
    assert fails(result)
    assert one_minimal(result, fails)


def test_ddmin_keeps_everything_when_nothing_can_go() -> None:
    items = list("abcdefg")
    result, runs = ddmin(items, lambda xs: len(xs) == len(items), runs=1000)
    assert result == items
    assert 0 < runs < 2 * len(items) ** 2


def test_ddmin_stops_at_its_budget_with_the_smallest_failure_found() -> None:
    calls = 0

    def fails(xs: list[int]) -> bool:
        nonlocal calls
        calls += 1
        return {3, 11, 12, 17} <= set(xs)

    # Halves and quarters all pass; the 8th run, the first to fail, leaves
    # out 5-9, and the 9th is not run.
    result, runs = ddmin(list(range(20)), fails, runs=8)
    assert calls == runs == 8
    assert result == [*range(5), *range(10, 20)]


def test_every_kind_of_fault_round_trips_through_json() -> None:
    kinds = set()
    for seed in range(1, 40):
        schedule = draw(random.Random(seed), NAMES, 17.3, 62.3, replicas=1)
        kinds |= {f.kind for f in schedule}
        assert schedule_from_json(schedule_to_json(schedule)) == schedule
        assert len({describe(f) for f in schedule}) == len(schedule)
    assert kinds == set(KINDS)
    with pytest.raises(ValueError, match="unknown kind"):
        schedule_from_json('[{"at": 1.0, "kind": "meteor", "length": 2.0}]')


def test_a_replayed_schedule_gives_the_history_drawing_it_gave() -> None:
    lines: list[str] = []
    drawn = run("nemesis", seed=4, duration=30, out=lines.append)
    assert drawn.schedule
    for fault in drawn.schedule:  # printed before the timeline
        assert "  " + describe(fault) in lines[: len(drawn.schedule) + 1]
    schedule = schedule_from_json(schedule_to_json(drawn.schedule))
    replayed = run("nemesis", seed=4, duration=30, schedule=schedule, out=lambda _: None)
    assert replayed.schedule == drawn.schedule
    assert replayed.notes == drawn.notes
    assert replayed.history == drawn.history


def test_a_failing_seed_shrinks_to_a_smaller_schedule_that_fails_the_same_way(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A primary that acknowledges writes before its replicas hold them
    (asynchronous replication) serves stale reads: nemesis seed 19 of 30 s
    shows it, a node restarted then a one-way cut; the cut alone does."""
    monkeypatch.setattr(Replication, "durable", property(lambda self: self.written))
    path = tmp_path / "shrunk.json"
    lines: list[str] = []
    shrunk = shrink(19, duration=30, runs=8, path=str(path), out=lines.append)
    assert shrunk is not None, "\n".join(lines)
    assert shrunk.verdict_class == "stale_reads"
    assert len(shrunk.schedule) < len(shrunk.original), "\n".join(lines)
    assert shrunk.runs <= 8
    assert lines[-1].endswith(f"nemesis --seed 19 --duration 30 --schedule {path}")
    schedule = schedule_from_json(path.read_text())
    assert tuple(schedule) == shrunk.schedule
    replayed = run("nemesis", seed=19, duration=30, schedule=schedule, out=lambda _: None)
    assert failures(replayed)["stale_reads"] == shrunk.count > 0
