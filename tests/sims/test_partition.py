"""Every partition scenario runs whole in the simulator and the checker
judges it: no acknowledged write lost, no stale read, copies equal, and the
cluster settles afterwards."""

from __future__ import annotations

import attrs
import pytest

from sims.partition import SCENARIOS, run

# docs/consistency.md, "Known holes": a node restarted under the same id
# before it is declared dead serves its slots from an empty store until
# anti-entropy refills them; a rolling restart with short gaps does that to
# every node in turn. Stale reads, nothing lost: that and only that, until fixed.
KNOWN_STALE_READS = {"rolling-restart"}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_scenario_keeps_every_promise(scenario: str) -> None:
    lines: list[str] = []
    verdict = run(scenario, seed=1, duration=40, out=lines.append)
    if scenario in KNOWN_STALE_READS:
        assert verdict.stale_reads
        verdict = attrs.evolve(verdict, stale_reads=[])
    timeline = lines[:40]  # a line per virtual second, then the verdict
    # The fault shows: nodes halt, die or are declared down (the state part
    # of the line, before the clients' figures, does not stay the same).
    states = {line.split(" ops ")[0].split(maxsplit=1)[1] for line in timeline}
    assert len(states) > 1
    assert verdict.ok, "\n".join(lines[-12:])
    assert lines[-1].startswith("settled after the run: yes")
