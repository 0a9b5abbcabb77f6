"""Hybrid logical clock (Kulkarni et al., "Logical Physical Clocks", 2014).

A stamp is one integer: wall milliseconds in the high bits, a logical counter in
the low 16. Stamps from one clock strictly increase, stay close to wall time, and
order causally related events across nodes. Pure: the caller passes the time.

The paper's bounds assume clocks within some skew of each other; a remote stamp
further ahead of our wall clock than ``max_ahead_ms`` comes from a broken clock
(or a broken peer) and is refused, never adopted: adopting it would drag every
clock that hears of it as far ahead, past the 64-bit stamp field if it is near
the top. Stamps never exceed ``MAX_STAMP``; at that limit they saturate.
"""

from __future__ import annotations

from typing import Final

import attrs

LOGICAL_BITS: Final = 16
# The entry header holds a stamp in 64 bits (keycafe/store/entry.py).
MAX_STAMP: Final = (1 << 64) - 1
# The clock skew tolerated between nodes: 5 minutes, Kerberos's default
# clockskew. NTP keeps servers within milliseconds; a peer minutes ahead has a
# broken clock, and its stamps are refused rather than let it win every
# last-writer-wins comparison until real time catches up.
MAX_AHEAD_MS: Final = 300_000


def stamp_ms(stamp: int) -> int:
    """The wall-clock milliseconds part of a stamp."""
    return stamp >> LOGICAL_BITS


@attrs.define
class HybridClock:
    """The local HLC; ``last`` is the greatest stamp issued or adopted."""

    last: int = 0
    max_ahead_ms: int = MAX_AHEAD_MS
    refused: int = 0  # remote stamps refused by ``admit`` (and so ``observe``)

    def now(self, wall_ms: int) -> int:
        """Stamp a local event at ``wall_ms``.

        If wall time has moved past the last stamp, take it with counter 0;
        otherwise bump the counter (a counter overflow carries into the
        milliseconds, which keeps stamps unique and increasing). At
        ``MAX_STAMP`` (wall time past 2**48 ms, the year 10889) stamps stay
        there: equal stamps are ordered by writer id.
        """
        self.last = min(max(self.last + 1, wall_ms << LOGICAL_BITS), MAX_STAMP)
        return self.last

    def horizon(self, wall_ms: int) -> int:
        """The greatest remote stamp ``admit`` accepts at ``wall_ms``."""
        return min(((wall_ms + self.max_ahead_ms + 1) << LOGICAL_BITS) - 1, MAX_STAMP)

    def admit(self, remote: int, wall_ms: int) -> bool:
        """Whether a remote stamp may be adopted: at most ``max_ahead_ms``
        ahead of ``wall_ms``. A refusal is counted in ``refused``."""
        if remote <= self.horizon(wall_ms):
            return True
        self.refused += 1
        return False

    def observe(self, remote: int, wall_ms: int) -> int:
        """Merge a stamp received from another node; return the new local stamp.

        A stamp ``admit`` refuses is counted and ignored: the result is then a
        local stamp, as from ``now``.
        """
        if not self.admit(remote, wall_ms):
            return self.now(wall_ms)
        self.last = min(max(self.last + 1, remote + 1, wall_ms << LOGICAL_BITS), MAX_STAMP)
        return self.last
