"""Where a keyed request goes: served here, or the reply sending it elsewhere.

A ``Routing`` is a value. Whoever changes the topology (the slot service)
builds a new one and assigns ``ServerState.routing`` whole, so a batch of
requests routes by one consistent view: the slot table and the slots between
owners are never seen half updated.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import attrs

from keycafe.cluster.slot_table import SlotTable, owner_mask
from keycafe.store.keyslot import SLOT_COUNT

# The slot is between owners here (``Routing.moving``): clients retry shortly.
TRYAGAIN: Final = b"-TRYAGAIN Slot is moving; try again shortly\r\n"
# This node sees no majority of the ring alive (``Routing.halted``): Redis's
# reply on a master cut off on the minority side.
CLUSTER_IS_DOWN: Final = b"-CLUSTERDOWN The cluster is down\r\n"

_SETTLED: Final = bytes(SLOT_COUNT)


@attrs.frozen(kw_only=True)
class Routing:
    """The slot table plus the slots in a move here.

    A request on ``slot`` is served when ``mine[slot]``; otherwise its reply
    is ``refusal(slot)``. The session reads ``mine`` itself: one index per
    request is all the hot path pays.
    """

    table: SlotTable
    # 1 for a slot between owners here, whose requests are told to try again
    # (-TRYAGAIN) rather than redirected: one received in a move whose change
    # this node has not heard of yet (redirecting would send the client back to
    # the old owner), or one handed over whose last forwarded writes the new
    # owner has not acknowledged yet (redirecting could read stale data there).
    moving: bytes = _SETTLED
    # This node sees no majority of the ring's members alive: it may be on the
    # minority side of a partition, where the majority may be promoting
    # replicas of its slots. It serves no key, read or write, until it does.
    halted: bool = False
    # Derived: 1 where this node serves the slot: ``table.mine`` less the
    # moving slots (a new owner holds a slot it gained back, with TRYAGAIN,
    # until the old owner's last writes have reached it).
    mine: bytes = attrs.field(init=False)
    # Derived when first asked: 1 where this node holds a copy it may serve
    # reads of to a READONLY client (a replica's, or the primary's).
    _copies: bytes | None = attrs.field(init=False, default=None, eq=False)

    def __attrs_post_init__(self) -> None:
        if len(self.moving) != SLOT_COUNT:
            raise ValueError(f"moving needs {SLOT_COUNT} entries, got {len(self.moving)}")
        if self.moving.translate(None, b"\x00\x01"):
            raise ValueError("moving holds 0 or 1 per slot")  # the masks below need it
        mine = self.table.mine
        if self.halted:
            mine = _SETTLED
        elif self.moving != _SETTLED:
            # Both are 0/1 per byte: m & ~h bytewise, done on whole ints (in C;
            # a Python loop over 16384 slots cost ~1 ms per routing change).
            both = int.from_bytes(mine, "big") & ~int.from_bytes(self.moving, "big")
            mine = both.to_bytes(SLOT_COUNT, "big")
        object.__setattr__(self, "mine", mine)

    def readable(self, slot: int) -> bool:
        """May a READONLY client read ``slot`` here? Where this node holds a
        copy, as Redis lets a replica serve them: possibly a little stale."""
        if self.halted or self.moving[slot]:
            return False  # a slot between owners here: TRYAGAIN, as for anyone
        if self._copies is None:
            object.__setattr__(self, "_copies", owner_mask(self.table.owners, self.table.my_id))
        assert self._copies is not None
        return bool(self._copies[slot])

    @classmethod
    def create(cls, table: SlotTable, moving: Iterable[int] = ()) -> Routing:
        """Route by ``table``, with the slots ``moving`` between owners here."""
        return cls(table=table, moving=_marked(_SETTLED, moving, 1))

    def with_table(self, table: SlotTable) -> Routing:
        """The same slots moving, routed by ``table``."""
        return Routing(table=table, moving=self.moving, halted=self.halted)

    def with_moving(self, slots: Iterable[int]) -> Routing:
        """``slots`` between owners here, as well as those already."""
        return Routing(table=self.table, moving=_marked(self.moving, slots, 1), halted=self.halted)

    def without_moving(self, slots: Iterable[int]) -> Routing:
        """``slots`` no longer between owners here."""
        return Routing(table=self.table, moving=_marked(self.moving, slots, 0), halted=self.halted)

    def refusal(self, slot: int) -> bytes:
        """The reply for a request on a slot this node does not serve:
        TRYAGAIN while it moves, else MOVED to its owner (or CLUSTERDOWN)."""
        if self.halted:
            return CLUSTER_IS_DOWN
        return TRYAGAIN if self.moving[slot] else self.table.redirect(slot)


def _marked(moving: bytes, slots: Iterable[int], value: int) -> bytes:
    out = bytearray(moving)
    for slot in slots:
        out[slot] = value
    return bytes(out)
