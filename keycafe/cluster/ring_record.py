"""The ring record: the member set the coordinator published (a value).

The ring's slot math is ``keycafe.cluster.ring``; how a ring spreads is
``ringcast``; its wire format ``ring_codec``.
"""

from __future__ import annotations

from typing import Final

import attrs

# The largest term and epoch anyone issues or accepts. Terms grow by one per
# election and epochs by one per ring change, so no honest cluster comes near
# 2^62 (at one a second, 10^11 years); a ring above it is a bad packet and a
# term claim above it is no claim. At the bound itself nothing can outbid the
# ring: the cluster keeps it and changes it no more, which only forged values
# can bring about (docs/protocol.md, "Gossip wire format").
MAX_TERM: Final = 2**62
MAX_EPOCH: Final = 2**62


@attrs.frozen(kw_only=True)
class Ring:
    """The ring's member set as the coordinator published it.

    Members keep the ring with the greatest (term, epoch): a higher term wins
    whatever its epoch, which fences a stale coordinator's decisions.

    ``pending``, when not empty, is the member set the coordinator means to
    move to next: every member moves the slots it hands over in that change,
    says so in its metadata, and only then does the change take effect (as the
    next epoch, with ``members = pending``).

    ``down`` lists members declared dead: their slots fail over to the next
    owner in the ring's order without waiting for a change."""

    epoch: int
    term: int
    coordinator: str
    members: tuple[str, ...]
    pending: tuple[str, ...] = ()
    # Members the coordinator declared dead: still in ``members`` (the slot
    # table stays the members' own), but taken out of every slot's owners, so
    # each slot is served by its first live owner, an in-sync replica, at once
    # (failover first). A later change removes them and streams new copies.
    down: tuple[str, ...] = ()
    # The epoch each member of ``down`` was declared down in (aligned with
    # it; empty: all in one). Of a slot whose owners are all down, those
    # declared last hold its newest copy: the others went down first.
    down_epochs: tuple[int, ...] = ()
    # The boot id (coordinator.BOOT_KEY) each member of ``down`` had when it
    # was declared down (aligned with it; empty: none known). One back with
    # another boot id is a new process, with none of the old copies.
    down_boots: tuple[str, ...] = ()

    @property
    def version(self) -> tuple[int, int]:
        return (self.term, self.epoch)

    def down_since(self, node: str) -> int:
        """The epoch ``node`` (in ``down``) was declared down in."""
        if not self.down_epochs:
            return 0
        return self.down_epochs[self.down.index(node)]

    def down_boot(self, node: str) -> str:
        """The boot id ``node`` (in ``down``) had when declared down ("": unknown)."""
        if not self.down_boots:
            return ""
        return self.down_boots[self.down.index(node)]

    def newest_copies(self, owners: tuple[str, ...]) -> frozenset[str]:
        """Of a slot's ``owners``, all in ``down``, those declared down last."""
        latest = max(self.down_since(n) for n in owners)
        return frozenset(n for n in owners if self.down_since(n) == latest)
