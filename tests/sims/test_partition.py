"""Every partition scenario runs whole in the simulator and the checker
judges it: no acknowledged write lost, no stale read, copies equal, and the
cluster settles afterwards; the cuts are timed against their bounds; and a
sweep of random nemesis schedules keeps every promise too."""

from __future__ import annotations

import statistics

import pytest

from sims.partition import CLASSES, SCENARIOS, Report, explain, run, sweep

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
