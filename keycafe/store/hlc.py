"""Hybrid logical clock (Kulkarni et al., "Logical Physical Clocks", 2014).

A stamp is one integer: wall milliseconds in the high bits, a logical counter in
the low 16. Stamps from one clock strictly increase, stay close to wall time, and
order causally related events across nodes. Pure: the caller passes the time.
"""

from __future__ import annotations

from typing import Final

import attrs

LOGICAL_BITS: Final = 16


def stamp_ms(stamp: int) -> int:
    """The wall-clock milliseconds part of a stamp."""
    return stamp >> LOGICAL_BITS


@attrs.define
class HybridClock:
    """The local HLC; ``last`` is the greatest stamp issued or observed."""

    last: int = 0

    def now(self, wall_ms: int) -> int:
        """Stamp a local event at ``wall_ms``.

        If wall time has moved past the last stamp, take it with counter 0;
        otherwise bump the counter (a counter overflow carries into the
        milliseconds, which keeps stamps unique and increasing).
        """
        self.last = max(self.last + 1, wall_ms << LOGICAL_BITS)
        return self.last

    def observe(self, remote: int, wall_ms: int) -> int:
        """Merge a stamp received from another node; return the new local stamp."""
        self.last = max(self.last + 1, remote + 1, wall_ms << LOGICAL_BITS)
        return self.last
