"""Lifeguard suspicion timeouts (memberlist's suspicion.go, as pure math).

A suspicion starts at ``max = beta * min`` and shrinks toward
``min = alpha * log10(N) * probe_interval`` as independent members confirm it,
so a crash is declared quickly when many agree and slowly when one member
(perhaps the slow one) accuses alone.
"""

from __future__ import annotations

import math

import attrs


def suspicion_timeout(mult: int, n: int, interval: float) -> float:
    """alpha * log10(N) * T, with log10 floored at 1 (memberlist's util.go)."""
    node_scale = max(1.0, math.log10(max(1, n)))
    return mult * node_scale * interval


def remaining(confirmations: int, k: int, elapsed: float, lo: float, hi: float) -> float:
    """Time left after ``confirmations`` of ``k`` expected, ``elapsed`` in."""
    if k < 1:
        return lo - elapsed
    frac = math.log(confirmations + 1.0) / math.log(k + 1.0)
    timeout = max(lo, hi - frac * (hi - lo))
    return timeout - elapsed


@attrs.define
class Suspicion:
    """One open suspicion about a member."""

    started: float
    k: int  # independent confirmations that shrink the timeout to ``lo``
    lo: float
    hi: float
    # Who has accused it, the creator included; only the others count as
    # independent confirmations (memberlist's suspicion.n).
    confirmers: set[str] = attrs.field(factory=set)
    confirmations: int = 0
    deadline: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.deadline = self.started + remaining(0, self.k, 0.0, self.lo, self.hi)

    def confirm(self, from_node: str, now: float) -> bool:
        """Count a confirmation; True if it was new (and the deadline moved)."""
        if self.confirmations >= self.k or from_node in self.confirmers:
            return False
        self.confirmers.add(from_node)
        self.confirmations += 1
        left = remaining(self.confirmations, self.k, now - self.started, self.lo, self.hi)
        self.deadline = now + max(0.0, left)
        return True
