"""Every partition scenario runs whole in the simulator and the checker
judges it: no acknowledged write lost, no stale read, copies equal, and the
cluster settles afterwards; the cuts are timed against their bounds; a
sweep of random nemesis schedules keeps every promise too; a seed draws the
schedule it always has, and a schedule played does what each fault says."""

from __future__ import annotations

import random
import statistics

import pytest

from keycafe.gossip.simulator import node_name
from sims.partition import (
    CLASSES,
    FAULTS_FROM,
    SCENARIOS,
    SKEW,
    Fault,
    Report,
    describe,
    draw,
    explain,
    run,
    sweep,
)

CUTS = {"halves", "isolate-primary", "isolate-coordinator", "flapping", "staggered"}


def fault_shows(report: Report) -> bool:
    """Nodes halt, die or are declared down, or the clients feel it (a
    second with fewer than half the operations of the seconds before)."""
    seconds = report.seconds
    states = {(s.live, s.halted, s.coordinators, s.epochs) for s in seconds}
    ok = [sum(o for o, _ in s.ops.values()) for s in seconds]
    calm = statistics.median(ok[:4])
    return len(states) > 1 or min(ok[5:-16]) < calm / 2


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_scenario_keeps_every_promise(scenario: str) -> None:
    lines: list[str] = []
    report = run(scenario, seed=1, duration=40, out=lines.append)
    verdict = report.verdict
    assert fault_shows(report), "\n".join(lines[:40])
    assert verdict.ok, "\n".join(lines[-24:])
    assert report.settled
    assert not report.diverged_at_end
    assert report.acked > 1000


@pytest.mark.parametrize("scenario", sorted(CUTS))
def test_the_cut_off_side_stops_and_the_majority_fails_over_within_their_bounds(
    scenario: str,
) -> None:
    report = run(scenario, seed=2, duration=40, out=lambda _: None)
    assert report.minority_stopped is not None
    assert report.minority_stopped <= report.lease_bound
    if scenario != "flapping":  # its cuts are shorter than a failover
        assert report.majority_resumed is not None
        assert report.majority_resumed <= report.detection_bound
        assert report.majority_never == 0
    assert report.converged_after is not None


def test_explain_lists_a_keys_operations_and_the_faults_in_time_order() -> None:
    report = run("halves", seed=3, duration=30, out=lambda _: None)
    key = report.history[0].key
    lines = explain(report, key)
    times = [float(line.split()[0]) for line in lines]
    assert times == sorted(times)
    assert any("partition" in line for line in lines)
    assert sum(repr(key) in line for line in lines) == sum(op.key == key for op in report.history)


def test_a_sweep_of_random_nemesis_schedules(capsys: pytest.CaptureFixture[str]) -> None:
    """``make test`` runs 50 seeds of the nemesis (a mix of every fault);
    ``python -m sims.partition sweep --seeds 1000`` runs more."""
    results = sweep("nemesis", range(1, 51), duration=30, jobs=2)
    out = capsys.readouterr().out
    assert "nemesis: 50 seeds" in out
    assert sum(r["acked"] for r in results) > 50 * 500
    failed = [(r["seed"], {k: r[k] for k in CLASSES if r[k]}) for r in results if not r["ok"]]
    assert failed == []


def test_a_played_schedule_does_what_each_fault_says() -> None:
    """Each kind of fault, one after another, at the times it names; the
    nemesis plays them instead of drawing its own, and prints them."""
    calm = run("nemesis", seed=4, duration=30, schedule=[], out=lambda _: None)
    assert calm.schedule == ()
    t0 = calm.start + FAULTS_FROM  # the same seed forms the cluster at the same time
    assert [text for t, text in calm.notes if t > calm.start] == ["partition heals"]
    schedule = [
        Fault(at=t0, kind="halves", length=1.0, nodes=("n0000", "n0001")),
        Fault(
            at=t0 + 1.5,
            kind="bridge",
            length=1.0,
            nodes=("n0000", "n0001"),
            other=("n0003", "n0004"),
        ),
        Fault(at=t0 + 3.0, kind="one-way", length=1.0, nodes=("n0002",)),
        Fault(at=t0 + 4.5, kind="flap", length=4.5, nodes=("n0003", "n0004")),
        Fault(at=t0 + 10.5, kind="lossy", length=1.0, amount=0.2),
        Fault(at=t0 + 12.0, kind="slow", length=1.0, nodes=("n0001",)),
        Fault(at=t0 + 13.5, kind="pause", length=1.0, nodes=("n0002",)),
        Fault(at=t0 + 15.0, kind="skew", length=1.0, nodes=("n0003",), amount=SKEW),
        Fault(at=t0 + 16.5, kind="restart", length=1.0, nodes=("n0004",)),
        Fault(at=t0 + 18.0, kind="crash", length=0.0, nodes=("n0001",)),
    ]
    lines: list[str] = []
    report = run("nemesis", seed=4, duration=30, schedule=schedule, out=lines.append)
    assert report.start == calm.start
    assert lines[1 : len(schedule) + 1] == ["  " + describe(f) for f in schedule]
    expected = [
        (0.0, "partition ['n0000', 'n0001'] | ['n0002', 'n0003', 'n0004']"),
        (1.0, "partition heals"),
        (1.5, "partition ['n0000', 'n0001'] | ['n0003', 'n0004']"),
        (2.5, "partition heals"),
        (3.0, "partition ['n0002'] -> ['n0000', 'n0001', 'n0003', 'n0004']"),
        (4.0, "partition heals"),
        (4.5, "partition ['n0003', 'n0004'] | ['n0000', 'n0001', 'n0002']"),
        (6.5, "partition heals"),  # FLAP_EVERY later
        (9.0, "partition heals"),
        (10.0, "partition heals"),  # the faults' end: QUIET_TAIL before the run's
        (10.5, "20% of packets lost on every link"),
        (11.5, "no more loss"),
        (12.0, "n0001 handles everything 0.1-1 s late"),
        (13.0, "n0001 keeps up again"),
        (13.5, "n0002 is paused"),
        (15.0, "n0003's wall clock is +300 s off"),
        (16.0, "n0003's wall clock is +0 s off"),
        (16.5, "n0004 crashes"),
        (17.5, "n0004 starts, joining through n0000"),
        (18.0, "n0001 crashes"),
    ]
    played = [(round(t - t0, 6), text) for t, text in report.notes if t >= t0]
    assert [note for note in played if note in expected] == expected


def test_a_seed_draws_the_schedule_it_always_has() -> None:
    """The draws are part of what a seed means (the docs and old reports
    cite nemesis seeds): the faults of ``nemesis --seed 19`` (60 s), and of
    two seeds that draw the other kinds, as the nemesis has always drawn them."""
    names = [node_name(i) for i in range(5)]
    drawn = {
        seed: [describe(f) for f in draw(random.Random(seed), names, 5.4, 45.4, replicas=1)]
        for seed in (19, 132, 297)
    }
    assert drawn == {
        19: [
            "   5.400 s  restart for 3.00 s: n0004 crashes, started again empty after it",
            "  11.643 s  one-way for 7.72 s: what n0004 sends is lost",
            "  23.102 s  bridge for 10.14 s: n0000,n0002 cut off from n0003,n0004"
            " (the rest reach both)",
            "  40.249 s  lossy for 5.15 s: 10% of packets lost on every link",
        ],
        132: [
            "   5.400 s  slow for 4.87 s: n0000 handles everything 0.1-1 s late",
            "  17.656 s  halves for 6.69 s: n0004,n0000 cut off from the rest",
            "  27.830 s  pause for 6.11 s: n0003 paused",
            "  36.970 s  crash: n0001 crashes for good",
        ],
        297: [
            "   5.400 s  skew for 7.41 s: n0003's wall clock -300 s off",
            "  19.143 s  isolate for 4.15 s: n0000 cut off from the rest",
            "  26.314 s  slow for 6.50 s: n0003 handles everything 0.1-1 s late",
            "  37.786 s  flap for 7.61 s: n0004,n0002 cut off and healed every 2 s",
        ],
    }
