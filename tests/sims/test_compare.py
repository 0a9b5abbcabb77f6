"""sims.compare: the simulator's side of a comparison, and the rule by
which the two forms agree (the real side is sims.netlab's, tested there)."""

from __future__ import annotations

from sims.compare import Side, agree, simulated, table


def side(**kw: object) -> Side:
    base: dict[str, object] = {
        "runs": 2,
        "failed": [],
        "acked": [100, 120],
        "lost": 0,
        "stale": 0,
        "resurrected": 0,
        "resumed": [3.0, 4.0],
        "never": 0,
        "stopped": [0.5, 0.6],
        "detection": 6.8,
        "lease": 0.53,
    }
    base.update(kw)
    return Side(**base)  # type: ignore[arg-type]


def test_timings_agree_within_the_factor_and_at_once_is_equal() -> None:
    assert agree([1.0, 2.0, 3.0], [3.0, 4.0, 5.0], 2.0)  # medians 2 and 4
    assert not agree([1.0, 2.0, 3.0], [5.0, 5.0, 5.0], 2.0)  # 2 and 5
    assert agree([0.01], [0.2], 2.0)  # both "at once", whatever the ratio
    assert not agree([0.01], [0.6], 2.0)
    assert agree([], [1.0], 2.0) is None
    assert agree([], [], 2.0) is True


def test_the_forms_disagree_on_a_verdict_or_a_timing() -> None:
    lines, ok = table(side(), side(resumed=[4.0, 5.0]), 2.0)
    assert ok
    assert lines[0].startswith("| | simulator | real processes")
    assert any("agree" in line for line in lines)
    _, ok = table(side(), side(failed=[7]), 2.0)
    assert not ok
    lines, ok = table(side(), side(resumed=[20.0, 30.0]), 2.0)
    assert not ok
    assert any("DIFFER" in line for line in lines)


def test_the_simulated_side_runs_each_seed_with_the_profile_asked() -> None:
    local = simulated("halves", range(1, 3), nodes=5, duration=30, profile="local")
    assert local.runs == 2
    assert local.failed == []
    assert local.lost == 0
    assert len(local.resumed) == 2
    # LOCAL timers are 5x LAN's: the bound and the failover with it.
    assert local.detection < 10
    assert max(local.resumed) <= local.detection
