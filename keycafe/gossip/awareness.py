"""Lifeguard's local health multiplier (LHM).

A node that misses probes, needs to refute suspicions about itself, or gets
fewer nacks than it asked for is probably the slow one; it stretches its own
probe interval and timeout rather than accuse healthy peers (Dadgar et al.,
"Lifeguard: Local Health Awareness for More Accurate Failure Detection", 2018,
section 4.1).
"""

from __future__ import annotations

import attrs


@attrs.define
class Awareness:
    max_multiplier: int
    score: int = 0  # 0 = healthy

    def apply_delta(self, delta: int) -> None:
        self.score = min(max(self.score + delta, 0), self.max_multiplier - 1)

    def scale(self, timeout: float) -> float:
        """``timeout`` stretched by the current health: (score + 1) times."""
        return timeout * (self.score + 1)
